/*
 * spec.c: the network spec parser (the grammar is in docs/nets.md).
 *
 * One statement per line: KIND NAME [INPUT...] [-> CHANNELS] [key=value...], '#' starts a
 * comment. A statement defines one tensor, named like the layer; a name must be defined
 * before it is read, so the statements come out in a topological order and the graph cannot
 * have cycles. The parser keeps the line and column of every token and latches the first
 * error as "SOURCE:LINE:COL: message" (VOX_FORMAT). Vectors are z,y,x: "1x3x3" (or "3" for
 * "3x3x3").
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_TOKENS = 32 };

struct token {
    char *s;
    int col;
};

struct parser {
    struct vox_ctx *ctx;
    struct vox_net *net;
    int line;
    int last_line;      /* the last line with a statement */
    enum vox_status st; /* the first error, latched */
    int cap;
};

static const char *const kind_names[VOX_NN_KIND_COUNT] = {
    "input", "conv", "deconv", "pool",   "maxfilter", "upsample", "crop",
    "add",   "concat", "act",  "output", "mpf",       "interleave"};
static const char *const act_names[VOX_ACT_COUNT] = {"linear",  "relu", "elu",
                                                     "sigmoid", "tanh", "softmax"};

const char *vox_nn_kind_str(enum vox_nn_kind k)
{
    return (unsigned)k < VOX_NN_KIND_COUNT ? kind_names[k] : "?";
}

const char *vox_nn_act_str(enum vox_nn_act a)
{
    return (unsigned)a < VOX_ACT_COUNT ? act_names[a] : "?";
}

/* Which keys each kind takes, and how many inputs (min, max) and whether "-> C" is required. */
enum key {
    K_CHANNELS,
    K_KERNEL,
    K_WINDOW,
    K_FACTOR,
    K_DILATION,
    K_PAD,
    K_ACT,
    K_BIAS,
    K_BN,
    K_EPS,
    K_TO,
    K_MARGIN,
    K_FN,
    K_COUNT
};
static const char *const key_names[K_COUNT] = {"channels", "kernel", "window", "factor", "dilation",
                                               "pad",      "act",    "bias",   "bn",     "eps",
                                               "to",       "margin", "fn"};
#define B(k) (1u << (k))
static const struct {
    unsigned keys, required;
    int min_in, max_in;
    bool arrow;
} rules[VOX_NN_KIND_COUNT] = {
    [VOX_NN_INPUT] = {B(K_CHANNELS), B(K_CHANNELS), 0, 0, false},
    [VOX_NN_CONV] = {B(K_KERNEL) | B(K_DILATION) | B(K_PAD) | B(K_ACT) | B(K_BIAS) | B(K_BN) |
                         B(K_EPS),
                     B(K_KERNEL), 1, 1, true},
    [VOX_NN_DECONV] = {B(K_KERNEL) | B(K_ACT) | B(K_BIAS), B(K_KERNEL), 1, 1, true},
    [VOX_NN_POOL] = {B(K_WINDOW), B(K_WINDOW), 1, 1, false},
    [VOX_NN_MAXFILTER] = {B(K_WINDOW) | B(K_DILATION), B(K_WINDOW), 1, 1, false},
    [VOX_NN_UPSAMPLE] = {B(K_FACTOR), B(K_FACTOR), 1, 1, false},
    [VOX_NN_CROP] = {B(K_TO) | B(K_MARGIN), 0, 1, 1, false},
    [VOX_NN_ADD] = {B(K_ACT), 0, 2, VOX_NN_MAX_IN, false},
    [VOX_NN_CONCAT] = {0, 0, 2, VOX_NN_MAX_IN, false},
    [VOX_NN_ACT] = {B(K_FN), B(K_FN), 1, 1, false},
    [VOX_NN_OUTPUT] = {B(K_ACT), 0, 1, 1, false},
    [VOX_NN_MPF] = {B(K_WINDOW), B(K_WINDOW), 1, 1, false},
    [VOX_NN_INTERLEAVE] = {0, 0, 1, 1, false},
};

static void perr(struct parser *p, int col, const char *fmt, ...) VOX_PRINTF(3, 4);
static void perr(struct parser *p, int col, const char *fmt, ...)
{
    if (p->st != VOX_OK)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    p->st = vox_fail(p->ctx, VOX_FORMAT, "%s:%d:%d: %s", p->net->source, p->line, col, msg);
}

static bool parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    if (!*s || !(*s >= '0' && *s <= '9'))
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* "KZxKYxKX", "KZ,KY,KX" or "K" (all three). */
static bool parse_vec(const char *s, int64_t lo, int64_t hi, int64_t out[3])
{
    char buf[64];
    if (strlen(s) >= sizeof buf)
        return false;
    strcpy(buf, s);
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, "x,", &save); t; t = strtok_r(NULL, "x,", &save)) {
        if (n == 3 || !parse_int(t, lo, hi, &out[n]))
            return false;
        n++;
    }
    if (n == 1)
        out[1] = out[2] = out[0];
    return (n == 1 || n == 3) && s[strlen(s) - 1] != 'x' && s[strlen(s) - 1] != ',' && s[0] != 'x';
}

static bool valid_name(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
        return false;
    for (const char *c = s; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '_' || *c == '.' || *c == '-'))
            return false;
    return strlen(s) < VOX_NN_NAME_MAX;
}

static bool parse_act(const char *s, enum vox_nn_act *out)
{
    for (int a = 0; a < VOX_ACT_COUNT; a++)
        if (strcmp(s, act_names[a]) == 0) {
            *out = (enum vox_nn_act)a;
            return true;
        }
    return false;
}

static bool parse_bool(const char *s, bool *out)
{
    if (strcmp(s, "yes") == 0 || strcmp(s, "true") == 0 || strcmp(s, "1") == 0)
        return (*out = true);
    if (strcmp(s, "no") == 0 || strcmp(s, "false") == 0 || strcmp(s, "0") == 0)
        return !(*out = false);
    return false;
}

/* A tensor name read by layer l. */
static void add_input(struct parser *p, struct vox_nn_layer *l, const struct token *t)
{
    int j = vox_net_find(p->net, t->s);
    if (j < 0)
        return perr(p, t->col, "%s '%s' input '%s' is not defined", kind_names[l->kind], l->name,
                    t->s);
    if (p->net->layers[j].kind == VOX_NN_OUTPUT)
        return perr(p, t->col, "%s '%s' reads output '%s'; read the tensor before the output",
                    kind_names[l->kind], l->name, t->s);
    if (l->n_in == VOX_NN_MAX_IN)
        return perr(p, t->col, "%s '%s' has more than %d inputs", kind_names[l->kind], l->name,
                    VOX_NN_MAX_IN);
    l->in[l->n_in++] = j;
}

static void parse_key(struct parser *p, struct vox_nn_layer *l, const struct token *t,
                      unsigned *seen)
{
    char *eq = strchr(t->s, '=');
    *eq = '\0';
    const char *v = eq + 1;
    int vcol = t->col + (int)(v - t->s);
    int k = 0;
    while (k < K_COUNT && strcmp(t->s, key_names[k]) != 0)
        k++;
    if (k == K_COUNT || !(rules[l->kind].keys & B(k)))
        return perr(p, t->col, "unknown parameter '%s' for %s", t->s, kind_names[l->kind]);
    if (*seen & B(k))
        return perr(p, t->col, "parameter '%s' is given twice", t->s);
    *seen |= B(k);
    bool ok = true;
    const char *want = "";
    switch ((enum key)k) {
    case K_CHANNELS:
        ok = parse_int(v, 1, 1 << 20, &l->channels), want = "a whole number 1..1048576";
        break;
    case K_KERNEL:
    case K_WINDOW:
    case K_FACTOR:
        ok = parse_vec(v, 1, 1024, l->kernel), want = "ZxYxX, whole numbers 1..1024";
        break;
    case K_DILATION:
        ok = parse_vec(v, 1, 1024, l->dilation), want = "ZxYxX, whole numbers 1..1024";
        break;
    case K_MARGIN:
        ok = parse_vec(v, 0, 1 << 20, l->margin), want = "ZxYxX, whole numbers >= 0";
        break;
    case K_PAD:
        ok = strcmp(v, "same") == 0 || strcmp(v, "valid") == 0, want = "valid or same";
        l->same = strcmp(v, "same") == 0;
        break;
    case K_ACT:
    case K_FN:
        if (k == K_FN || l->kind == VOX_NN_OUTPUT)
            want = "linear, relu, elu, sigmoid, tanh or softmax";
        else
            want = "linear, relu, elu, sigmoid or tanh (softmax: use an act layer)";
        ok = parse_act(v, &l->act);
        ok = ok && (k == K_FN || l->kind == VOX_NN_OUTPUT || l->act != VOX_ACT_SOFTMAX);
        break;
    case K_BIAS:
    case K_BN:
        ok = parse_bool(v, k == K_BIAS ? &l->bias : &l->bn), want = "yes or no";
        break;
    case K_EPS: {
        char *end;
        l->bn_eps = strtod(v, &end);
        ok = *v && !*end && l->bn_eps > 0 && l->bn_eps < 1, want = "a number in (0, 1)";
        break;
    }
    case K_TO:
        ok = (l->crop_to = vox_net_find(p->net, v)) >= 0;
        if (!ok)
            return perr(p, vcol, "crop '%s' reference '%s' is not defined", l->name, v);
        break;
    case K_COUNT:
        break;
    }
    if (!ok)
        perr(p, vcol, "%s '%s': bad value '%s' for %s (expected %s)", kind_names[l->kind], l->name,
             v, t->s, want);
}

/* Which mpf fragments layer l (not yet counted in the net) carries: its inputs' (they must
 * agree), a new level for mpf, none after an interleave (which needs some) or at an output. */
static void check_fragments(struct parser *p, struct vox_nn_layer *l, int col)
{
    const struct vox_nn_layer *ls = p->net->layers, *a = &ls[l->in[0]];
    l->frag = a->frag;
    for (int i = 1; i < l->n_in; i++)
        if (ls[l->in[i]].frag != a->frag)
            return perr(p, col,
                        "%s '%s': '%s' and '%s' carry fragments of different mpf layers (%s, %s)",
                        kind_names[l->kind], l->name, a->name, ls[l->in[i]].name,
                        a->frag >= 0 ? ls[a->frag].name : "none",
                        ls[l->in[i]].frag >= 0 ? ls[ls[l->in[i]].frag].name : "none");
    int64_t win[VOX_NN_MPF_MAX][3];
    if (l->kind == VOX_NN_MPF && vox_net_mpf_levels(p->net, l->in[0], win) == VOX_NN_MPF_MAX)
        return perr(p, col, "mpf '%s': more than %d mpf layers before an interleave", l->name,
                    VOX_NN_MPF_MAX);
    if (l->kind == VOX_NN_MPF)
        l->frag = p->net->n_layers;
    if (l->kind == VOX_NN_INTERLEAVE && a->frag < 0)
        return perr(p, col, "interleave '%s': input '%s' carries no fragments (no mpf before it)",
                    l->name, a->name);
    if (l->kind == VOX_NN_INTERLEAVE)
        l->frag = -1;
    if (l->kind == VOX_NN_OUTPUT && a->frag >= 0)
        return perr(p, col,
                    "output '%s': '%s' carries the fragments of mpf '%s'; interleave them first",
                    l->name, a->name, ls[a->frag].name);
}

/* Checks what a statement needs once all its tokens are read. */
static void check_layer(struct parser *p, struct vox_nn_layer *l, unsigned seen, int col)
{
    unsigned missing = rules[l->kind].required & ~seen;
    if (l->kind == VOX_NN_CROP && !(seen & (B(K_TO) | B(K_MARGIN))))
        return perr(p, col, "crop '%s' needs to=TENSOR or margin=ZxYxX", l->name);
    if (l->kind == VOX_NN_CROP && (seen & B(K_TO)) && (seen & B(K_MARGIN)))
        return perr(p, col, "crop '%s' takes to= or margin=, not both", l->name);
    for (int k = 0; k < K_COUNT; k++)
        if (missing & B(k))
            return perr(p, col, "%s '%s' needs %s=", kind_names[l->kind], l->name, key_names[k]);
    if (l->n_in < rules[l->kind].min_in)
        return perr(p, col, "%s '%s' needs %d input%s, got %d", kind_names[l->kind], l->name,
                    rules[l->kind].min_in, rules[l->kind].min_in > 1 ? "s" : "", l->n_in);
    if (l->n_in > rules[l->kind].max_in)
        return perr(p, col, "%s '%s' takes %d input, got %d", kind_names[l->kind], l->name,
                    rules[l->kind].max_in, l->n_in);
    if (l->kind == VOX_NN_CONCAT)
        for (int i = 0; i < l->n_in; i++)
            l->channels += p->net->layers[l->in[i]].channels;
    else if (l->kind != VOX_NN_INPUT && l->kind != VOX_NN_CONV && l->kind != VOX_NN_DECONV)
        l->channels = p->net->layers[l->in[0]].channels;
    if (l->kind == VOX_NN_ADD)
        for (int i = 1; i < l->n_in; i++)
            if (p->net->layers[l->in[i]].channels != l->channels)
                return perr(p, col, "add '%s': '%s' has %lld channels, '%s' has %lld", l->name,
                            p->net->layers[l->in[0]].name, (long long)l->channels,
                            p->net->layers[l->in[i]].name,
                            (long long)p->net->layers[l->in[i]].channels);
    if (l->kind != VOX_NN_INPUT)
        check_fragments(p, l, col);
}

static struct vox_nn_layer *new_layer(struct parser *p)
{
    struct vox_net *net = p->net;
    if (net->n_layers == p->cap) {
        int cap = p->cap ? 2 * p->cap : 16;
        void *m = vox_realloc(p->ctx, net->layers, (size_t)p->cap * sizeof *net->layers,
                              (size_t)cap * sizeof *net->layers);
        if (!m) {
            p->st = VOX_OUT_OF_MEMORY;
            return NULL;
        }
        net->layers = m;
        p->cap = cap;
    }
    struct vox_nn_layer *l = &net->layers[net->n_layers];
    *l = (struct vox_nn_layer){
        .bias = true, .bn_eps = 1e-5, .crop_to = -1, .frag = -1, .line = p->line};
    for (int a = 0; a < 3; a++)
        l->kernel[a] = l->dilation[a] = 1;
    return l;
}

static void parse_statement(struct parser *p, struct token *t, int n)
{
    int kind = 0;
    while (kind < VOX_NN_KIND_COUNT && strcmp(t[0].s, kind_names[kind]) != 0)
        kind++;
    if (strcmp(t[0].s, "softmax") == 0)
        kind = VOX_NN_ACT;
    if (kind == VOX_NN_KIND_COUNT)
        return perr(p, t[0].col, "unknown layer type '%s'", t[0].s);
    if (n < 2)
        return perr(p, t[0].col, "%s needs a name", t[0].s);
    if (!valid_name(t[1].s))
        return perr(p, t[1].col, "bad name '%s' (letters, digits, '_', '.', '-'; at most %d)",
                    t[1].s, VOX_NN_NAME_MAX - 1);
    int prev = vox_net_find(p->net, t[1].s);
    if (prev >= 0)
        return perr(p, t[1].col, "'%s' is already defined at line %d", t[1].s,
                    p->net->layers[prev].line);
    struct vox_nn_layer *l = new_layer(p);
    if (!l)
        return;
    l->kind = (enum vox_nn_kind)kind;
    strcpy(l->name, t[1].s);
    if (strcmp(t[0].s, "softmax") == 0)
        l->act = VOX_ACT_SOFTMAX;
    unsigned seen = strcmp(t[0].s, "softmax") == 0 ? B(K_FN) : 0;
    bool arrow = false, keys = false;
    for (int i = 2; i < n && p->st == VOX_OK; i++) {
        if (strcmp(t[i].s, "->") == 0) {
            if (!rules[kind].arrow || arrow)
                return perr(p, t[i].col, "unexpected '->' in %s '%s'", t[0].s, l->name);
            if (i + 1 >= n || !parse_int(t[i + 1].s, 1, 1 << 20, &l->channels))
                return perr(p, i + 1 < n ? t[i + 1].col : t[i].col + 2,
                            "%s '%s': expected the output channels after '->'", t[0].s, l->name);
            arrow = true;
            i++;
        } else if (strchr(t[i].s, '=')) {
            parse_key(p, l, &t[i], &seen);
            keys = true;
        } else if (arrow || keys) {
            return perr(p, t[i].col, "%s '%s': input '%s' after the parameters", t[0].s, l->name,
                        t[i].s);
        } else {
            add_input(p, l, &t[i]);
        }
    }
    if (p->st == VOX_OK && rules[kind].arrow && !arrow)
        return perr(p, t[0].col, "%s '%s' needs '-> CHANNELS'", t[0].s, l->name);
    if (p->st == VOX_OK)
        check_layer(p, l, seen, t[0].col);
    if (p->st == VOX_OK && l->kind == VOX_NN_CROP && l->crop_to >= 0)
        l->in[l->n_in++] = l->crop_to;
    if (p->st == VOX_OK) {
        p->net->n_layers++;
        p->net->n_inputs += kind == VOX_NN_INPUT;
        p->net->n_outputs += kind == VOX_NN_OUTPUT;
    }
}

/* Splits one line (comment stripped) into tokens, in place. Returns the count. */
static int tokenize(struct parser *p, char *line, struct token *t)
{
    char *hash = strchr(line, '#');
    if (hash)
        *hash = '\0';
    int n = 0;
    char *c = line;
    while (*c) {
        while (*c == ' ' || *c == '\t' || *c == '\r')
            c++;
        if (!*c)
            break;
        if (n == MAX_TOKENS) {
            perr(p, (int)(c - line) + 1, "more than %d words in one statement", MAX_TOKENS);
            return 0;
        }
        t[n].s = c;
        t[n].col = (int)(c - line) + 1;
        n++;
        while (*c && *c != ' ' && *c != '\t' && *c != '\r')
            c++;
        if (*c)
            *c++ = '\0';
    }
    return n;
}

static char *dup_str(struct vox_ctx *ctx, const char *s)
{
    char *d = vox_alloc(ctx, strlen(s) + 1);
    if (d)
        strcpy(d, s);
    return d;
}

enum vox_status vox_net_parse(struct vox_ctx *ctx, const char *text, const char *source,
                              struct vox_net **net_out)
{
    *net_out = NULL;
    struct vox_net *net = vox_calloc(ctx, 1, sizeof *net);
    char *copy = net ? dup_str(ctx, text) : NULL;
    if (!copy || !(net->source = dup_str(ctx, source ? source : "<spec>"))) {
        vox_free(ctx, copy);
        vox_free(ctx, net);
        return VOX_OUT_OF_MEMORY;
    }
    net->ctx = ctx;
    struct parser p = {.ctx = ctx, .net = net};
    struct token tok[MAX_TOKENS];
    char *line = copy;
    for (char *nl; line && p.st == VOX_OK; line = nl) {
        nl = strchr(line, '\n');
        if (nl)
            *nl++ = '\0';
        p.line++;
        int n = tokenize(&p, line, tok);
        if (n > 0 && p.st == VOX_OK) {
            p.last_line = p.line;
            parse_statement(&p, tok, n);
        }
    }
    vox_free(ctx, copy);
    if (p.st == VOX_OK && (net->n_inputs == 0 || net->n_outputs == 0))
        p.st = vox_fail(ctx, VOX_FORMAT, "%s:%d:1: the net has no %s statement", net->source,
                        p.last_line ? p.last_line : 1, net->n_inputs == 0 ? "input" : "output");
    if (p.st != VOX_OK) {
        vox_net_destroy(net);
        return p.st;
    }
    *net_out = net;
    return VOX_OK;
}

enum vox_status vox_net_load(struct vox_ctx *ctx, const char *path, struct vox_net **net_out)
{
    *net_out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return vox_fail(ctx, VOX_IO, "cannot open the net '%s': %s", path, strerror(errno));
    enum { MAX_SPEC = 1 << 20 };
    char *text = vox_alloc(ctx, MAX_SPEC + 1);
    if (!text) {
        fclose(f);
        return VOX_OUT_OF_MEMORY;
    }
    size_t n = fread(text, 1, MAX_SPEC + 1, f);
    bool err = ferror(f);
    fclose(f);
    enum vox_status s = VOX_OK;
    if (err)
        s = vox_fail(ctx, VOX_IO, "cannot read the net '%s'", path);
    else if (n > MAX_SPEC)
        s = vox_fail(ctx, VOX_FORMAT, "the net '%s' is larger than 1 MiB", path);
    else if (memchr(text, '\0', n))
        s = vox_fail(ctx, VOX_FORMAT, "the net '%s' is not a text file (it has a NUL byte)", path);
    if (s == VOX_OK) {
        text[n] = '\0';
        s = vox_net_parse(ctx, text, path, net_out);
    }
    vox_free(ctx, text);
    return s;
}

void vox_net_destroy(struct vox_net *net)
{
    if (!net)
        return;
    vox_free(net->ctx, net->layers);
    vox_free(net->ctx, net->source);
    vox_free(net->ctx, net);
}

int vox_net_find(const struct vox_net *net, const char *name)
{
    for (int i = 0; i < net->n_layers; i++)
        if (strcmp(net->layers[i].name, name) == 0)
            return i;
    return -1;
}

static int nth_of_kind(const struct vox_net *net, enum vox_nn_kind k, int i)
{
    for (int j = 0; j < net->n_layers; j++)
        if (net->layers[j].kind == k && i-- == 0)
            return j;
    return -1;
}

int vox_net_input(const struct vox_net *net, int i)
{
    return nth_of_kind(net, VOX_NN_INPUT, i);
}

int vox_net_output(const struct vox_net *net, int i)
{
    return nth_of_kind(net, VOX_NN_OUTPUT, i);
}

int vox_net_mpf_levels(const struct vox_net *net, int layer, int64_t (*win)[3])
{
    int n = 0;
    for (int f = net->layers[layer].frag; f >= 0; f = net->layers[net->layers[f].in[0]].frag)
        n++;
    int k = n;
    for (int f = net->layers[layer].frag; f >= 0; f = net->layers[net->layers[f].in[0]].frag)
        memcpy(win[--k], net->layers[f].kernel, sizeof win[0]);
    return n;
}
