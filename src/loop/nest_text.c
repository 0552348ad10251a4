/*
 * loop/nest_text.c: the one-line text form of a loop nest, printer and parser.
 *
 *   dims m=64 n=48 k=32; order m:16 n:16 k:1 m:1 n:1; C[m:48,n:1] += A[m:32,k:1] * B[k:48,n:1];
 *   post bias[n:1] relu
 *
 * (the grammar is in include/vox/loop.h). Key idea: the printer is canonical (strides in
 * dimension order, zero strides left out, floats with 9 significant digits, which is enough to
 * round-trip any float32), so print -> parse -> print is the identity on strings and print ->
 * parse the identity on nests. The parser is a hand-written recursive descent over the bytes,
 * with no tokenizer and no allocation; its first error latches and carries the column (from 1)
 * and what was expected there, in the style of MIR's text reader (MIR_scan_string).
 */
#include "vox/loop.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STR_(x) #x
#define STR(x) STR_(x)

/* ---- printer --------------------------------------------------------------------------- */

struct writer {
    char *buf;
    size_t cap, len; /* len counts everything written, even what did not fit */
};

static void put(struct writer *w, const char *fmt, ...) VOX_PRINTF(2, 3);
static void put(struct writer *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = w->len < w->cap ? w->cap - w->len : 0;
    int n = vsnprintf(room ? w->buf + w->len : NULL, room, fmt, ap);
    va_end(ap);
    w->len += n > 0 ? (size_t)n : 0;
}

static void put_access(struct writer *w, const struct vox_nest *nest, const int64_t *strides)
{
    const char *sep = "";
    put(w, "[");
    for (int d = 0; d < nest->ndims; d++) {
        if (strides[d] == 0)
            continue;
        put(w, "%s%s:%lld", sep, nest->dims[d].name, (long long)strides[d]);
        sep = ",";
    }
    put(w, "]");
}

static void put_ops(struct writer *w, const struct vox_nest *nest, const char *what,
                    const struct vox_nest_eltwise *ops, int n)
{
    if (n == 0)
        return;
    put(w, "; %s", what);
    for (int i = 0; i < n; i++) {
        const struct vox_nest_eltwise_info *info = vox_nest_eltwise_info(ops[i].kind);
        put(w, " %s", info->name);
        if (info->has_tensor)
            put_access(w, nest, ops[i].strides);
        if (info->has_param)
            put(w, "(%.9g)", (double)ops[i].param);
    }
}

enum vox_status vox_nest_print(struct vox_ctx *ctx, const struct vox_nest *nest, char *buf,
                               size_t buf_len, size_t *len_out)
{
    if (len_out)
        *len_out = 0;
    if (buf && buf_len > 0)
        buf[0] = '\0';
    enum vox_status s = vox_nest_validate(ctx, nest);
    if (s)
        return s;
    struct writer w = {buf, buf ? buf_len : 0, 0};
    put(&w, "dims");
    for (int d = 0; d < nest->ndims; d++)
        put(&w, " %s=%lld", nest->dims[d].name, (long long)nest->dims[d].size);
    put(&w, "; order");
    for (int p = 0; p < nest->norder; p++)
        put(&w, " %s:%lld", nest->dims[nest->order[p].dim].name, (long long)nest->order[p].step);
    const struct vox_nest_compute_info *op = vox_nest_compute_info(nest->compute);
    put(&w, "; C");
    put_access(&w, nest, nest->strides[VOX_NEST_C]);
    put(&w, " %s A", op->reduce);
    put_access(&w, nest, nest->strides[VOX_NEST_A]);
    put(&w, " %s B", op->combine);
    put_access(&w, nest, nest->strides[VOX_NEST_B]);
    put_ops(&w, nest, "pre", nest->pre, nest->npre);
    put_ops(&w, nest, "post", nest->post, nest->npost);
    if (nest->accumulate)
        put(&w, "; accumulate");
    if (len_out)
        *len_out = w.len;
    if (buf && w.len >= w.cap)
        return vox_fail(ctx, VOX_INVALID_ARG, "print nest: buffer of %zu bytes, needs %zu",
                        buf_len, w.len + 1);
    return VOX_OK;
}

enum vox_status vox_nest_to_string(struct vox_ctx *ctx, const struct vox_nest *nest,
                                   char **str_out)
{
    size_t len;
    *str_out = NULL;
    enum vox_status s = vox_nest_print(ctx, nest, NULL, 0, &len);
    if (s)
        return s;
    char *str = vox_alloc(ctx, len + 1);
    if (!str)
        return VOX_OUT_OF_MEMORY;
    if ((s = vox_nest_print(ctx, nest, str, len + 1, NULL))) {
        vox_free(ctx, str);
        return s;
    }
    *str_out = str;
    return VOX_OK;
}

/* ---- parser ---------------------------------------------------------------------------- */

struct parser {
    struct vox_ctx *ctx;
    const char *text;
    size_t pos;
    enum vox_status status; /* the first error, latched */
};

static void skip_blanks(struct parser *p)
{
    while (isspace((unsigned char)p->text[p->pos]))
        p->pos++;
}

/* Records "column N: expected X, found 'Y'" unless an error is already latched. */
static bool syntax_error(struct parser *p, size_t at, const char *expected)
{
    if (p->status)
        return false;
    const char *t = p->text + at;
    int n = 0;
    while (n < 12 && t[n] && !isspace((unsigned char)t[n]))
        n++;
    if (*t == '\0')
        vox_fail(p->ctx, VOX_FORMAT, "column %zu: expected %s, found the end of the text",
                 at + 1, expected);
    else
        vox_fail(p->ctx, VOX_FORMAT, "column %zu: expected %s, found '%.*s'", at + 1, expected,
                 n, t);
    p->status = VOX_FORMAT;
    return false;
}

/* Consumes `lit` after optional blanks, or fails naming `expected`. */
static bool expect(struct parser *p, const char *lit, const char *expected)
{
    skip_blanks(p);
    size_t n = strlen(lit);
    if (strncmp(p->text + p->pos, lit, n) != 0)
        return syntax_error(p, p->pos, expected);
    p->pos += n;
    return true;
}

/* True (and consumed) if the next non-blank character is c. */
static bool accept(struct parser *p, char c)
{
    skip_blanks(p);
    if (p->text[p->pos] != c)
        return false;
    p->pos++;
    return true;
}

static bool parse_name(struct parser *p, char name[VOX_NEST_NAME_MAX], const char *expected)
{
    skip_blanks(p);
    const char *t = p->text + p->pos;
    size_t n = 0;
    if (isalpha((unsigned char)t[0]) || t[0] == '_')
        while (isalnum((unsigned char)t[n]) || t[n] == '_')
            n++;
    if (n == 0 || n >= VOX_NEST_NAME_MAX)
        return syntax_error(p, p->pos, expected);
    memset(name, 0, VOX_NEST_NAME_MAX);
    memcpy(name, t, n);
    p->pos += n;
    return true;
}

/* A known dimension's name; *dim_out is its index. */
static bool parse_dim_ref(struct parser *p, const struct vox_nest *nest, int *dim_out)
{
    char name[VOX_NEST_NAME_MAX];
    skip_blanks(p);
    size_t at = p->pos;
    if (!parse_name(p, name, "a dimension name"))
        return false;
    *dim_out = vox_nest_dim_find(nest, name);
    return *dim_out >= 0 || syntax_error(p, at, "a dimension declared after 'dims'");
}

static bool parse_int(struct parser *p, int64_t *v_out)
{
    skip_blanks(p);
    const char *t = p->text + p->pos;
    size_t n = t[0] == '-';
    if (!isdigit((unsigned char)t[n]))
        return syntax_error(p, p->pos, "an integer");
    uint64_t v = 0, limit = t[0] == '-' ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; isdigit((unsigned char)t[n]); n++) {
        uint64_t digit = (uint64_t)(t[n] - '0');
        if (v > (limit - digit) / 10)
            return syntax_error(p, p->pos, "an integer that fits in 64 bits");
        v = v * 10 + digit;
    }
    *v_out = t[0] == '-' ? (int64_t)(0 - v) : (int64_t)v;
    p->pos += n;
    return true;
}

static bool parse_float(struct parser *p, float *v_out)
{
    skip_blanks(p);
    const char *t = p->text + p->pos;
    char *end;
    if (!(isdigit((unsigned char)t[0]) || t[0] == '-' || t[0] == '+' || t[0] == '.'))
        return syntax_error(p, p->pos, "a number");
    *v_out = strtof(t, &end);
    if (end == t)
        return syntax_error(p, p->pos, "a number");
    p->pos += (size_t)(end - t);
    return true;
}

/* "[" [NAME ":" INT ("," NAME ":" INT)*] "]" into strides (zeroed first). */
static bool parse_access(struct parser *p, const struct vox_nest *nest, int64_t *strides)
{
    bool seen[VOX_NEST_MAX_DIMS] = {false};
    memset(strides, 0, VOX_NEST_MAX_DIMS * sizeof strides[0]);
    if (!expect(p, "[", "'['"))
        return false;
    if (accept(p, ']'))
        return true;
    do {
        int d;
        skip_blanks(p);
        size_t at = p->pos;
        if (!parse_dim_ref(p, nest, &d))
            return false;
        if (seen[d])
            return syntax_error(p, at, "each dimension at most once in a tensor's strides");
        seen[d] = true;
        if (!expect(p, ":", "':' and a stride") || !parse_int(p, &strides[d]))
            return false;
    } while (accept(p, ','));
    return expect(p, "]", "',' or ']'");
}

static bool at_clause_end(struct parser *p)
{
    skip_blanks(p);
    return p->text[p->pos] == ';' || p->text[p->pos] == '\0';
}

static bool parse_dims(struct parser *p, struct vox_nest *nest)
{
    if (!expect(p, "dims", "'dims'"))
        return false;
    do {
        char name[VOX_NEST_NAME_MAX];
        int64_t size;
        skip_blanks(p);
        size_t at = p->pos;
        if (!parse_name(p, name, "a dimension name"))
            return false;
        if (vox_nest_dim_find(nest, name) >= 0)
            return syntax_error(p, at, "a dimension name not declared before");
        if (nest->ndims == VOX_NEST_MAX_DIMS)
            return syntax_error(p, at, "';' (at most " STR(VOX_NEST_MAX_DIMS) " dims)");
        if (!expect(p, "=", "'=' and a size") || !parse_int(p, &size))
            return false;
        vox_nest_dim_add(nest, name, size);
    } while (!at_clause_end(p));
    return expect(p, ";", "';'");
}

static bool parse_order(struct parser *p, struct vox_nest *nest)
{
    if (!expect(p, "order", "'order'"))
        return false;
    do {
        int d;
        int64_t step;
        skip_blanks(p);
        if (nest->norder == VOX_NEST_MAX_ORDER)
            return syntax_error(p, p->pos, "';' (at most " STR(VOX_NEST_MAX_ORDER) " loops)");
        if (!parse_dim_ref(p, nest, &d) || !expect(p, ":", "':' and a step") ||
            !parse_int(p, &step))
            return false;
        vox_nest_loop_add(nest, d, step);
    } while (!at_clause_end(p));
    return expect(p, ";", "';'");
}

/* The reduction token: "+=", "max=" or "min=". */
static bool parse_reduce(struct parser *p, const char **tok_out)
{
    skip_blanks(p);
    for (int c = 0; c < VOX_NEST_COMPUTE_COUNT; c++) {
        const char *tok = vox_nest_compute_info((enum vox_nest_compute)c)->reduce;
        if (strncmp(p->text + p->pos, tok, strlen(tok)) == 0) {
            p->pos += strlen(tok);
            *tok_out = tok;
            return true;
        }
    }
    return syntax_error(p, p->pos, "a reduction '+=', 'max=' or 'min='");
}

static bool parse_compute(struct parser *p, struct vox_nest *nest)
{
    const char *reduce;
    if (!expect(p, "C", "'C'") || !parse_access(p, nest, nest->strides[VOX_NEST_C]) ||
        !parse_reduce(p, &reduce) || !expect(p, "A", "'A'") ||
        !parse_access(p, nest, nest->strides[VOX_NEST_A]))
        return false;
    skip_blanks(p);
    size_t at = p->pos;
    char combine = p->text[p->pos];
    if (combine != '*' && combine != '+')
        return syntax_error(p, at, "'*' or '+'");
    p->pos++;
    for (int c = 0; c < VOX_NEST_COMPUTE_COUNT; c++) {
        const struct vox_nest_compute_info *info = vox_nest_compute_info((enum vox_nest_compute)c);
        if (strcmp(info->reduce, reduce) == 0 && info->combine[0] == combine)
            nest->compute = (enum vox_nest_compute)c;
    }
    if (strcmp(vox_nest_compute_info(nest->compute)->reduce, reduce) != 0 ||
        vox_nest_compute_info(nest->compute)->combine[0] != combine)
        return syntax_error(p, at, "a combine that pairs with the reduction");
    return expect(p, "B", "'B'") && parse_access(p, nest, nest->strides[VOX_NEST_B]);
}

static bool parse_op(struct parser *p, struct vox_nest *nest, struct vox_nest_eltwise *op)
{
    char name[VOX_NEST_NAME_MAX];
    skip_blanks(p);
    size_t at = p->pos;
    if (!parse_name(p, name, "an element-wise op"))
        return false;
    memset(op, 0, sizeof *op);
    int k = 0;
    while (k < VOX_NEST_ELTWISE_COUNT &&
           strcmp(vox_nest_eltwise_info((enum vox_nest_eltwise_kind)k)->name, name) != 0)
        k++;
    if (k == VOX_NEST_ELTWISE_COUNT)
        return syntax_error(p, at, "an element-wise op (relu elu sigmoid tanh scale bias mul)");
    op->kind = (enum vox_nest_eltwise_kind)k;
    const struct vox_nest_eltwise_info *info = vox_nest_eltwise_info(op->kind);
    if (info->has_tensor && !parse_access(p, nest, op->strides))
        return false;
    if (info->has_param)
        return expect(p, "(", "'(' and the op's constant") && parse_float(p, &op->param) &&
               expect(p, ")", "')'");
    return true;
}

static bool parse_ops(struct parser *p, struct vox_nest *nest, bool post)
{
    int *n = post ? &nest->npost : &nest->npre;
    struct vox_nest_eltwise *ops = post ? nest->post : nest->pre;
    do {
        skip_blanks(p);
        if (*n == VOX_NEST_MAX_OPS)
            return syntax_error(p, p->pos, "';' (at most " STR(VOX_NEST_MAX_OPS) " ops)");
        if (!parse_op(p, nest, &ops[*n]))
            return false;
        ++*n;
    } while (!at_clause_end(p));
    return true;
}

/* [";" "pre" op+] [";" "post" op+] [";" "accumulate"], in this order, then the end. */
static bool parse_clauses(struct parser *p, struct vox_nest *nest)
{
    static const char *const words[] = {"pre", "post", "accumulate"};
    static const char *const expected[] = {"'pre', 'post' or 'accumulate'",
                                           "'post' or 'accumulate'", "'accumulate'",
                                           "the end of the text"};
    int next = 0;
    while (accept(p, ';')) {
        char word[VOX_NEST_NAME_MAX];
        skip_blanks(p);
        size_t at = p->pos;
        if (!parse_name(p, word, "'pre', 'post' or 'accumulate'"))
            return false;
        int w = next;
        while (w < 3 && strcmp(word, words[w]) != 0)
            w++;
        if (w == 3)
            return syntax_error(p, at, expected[next]);
        next = w + 1;
        if (w == 2)
            nest->accumulate = true;
        else if (!parse_ops(p, nest, w == 1))
            return false;
    }
    skip_blanks(p);
    return p->text[p->pos] == '\0' || syntax_error(p, p->pos, "';' or the end of the text");
}

enum vox_status vox_nest_parse(struct vox_ctx *ctx, const char *text, struct vox_nest *nest_out)
{
    if (!text)
        return vox_fail(ctx, VOX_INVALID_ARG, "parse nest: text is NULL");
    struct parser p = {ctx, text, 0, VOX_OK};
    struct vox_nest nest;
    vox_nest_init(&nest);
    if (!parse_dims(&p, &nest) || !parse_order(&p, &nest) || !parse_compute(&p, &nest) ||
        !parse_clauses(&p, &nest))
        return p.status;
    enum vox_status s = vox_nest_validate(ctx, &nest);
    if (s)
        return s;
    *nest_out = nest;
    return VOX_OK;
}
