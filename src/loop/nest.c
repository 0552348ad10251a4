/*
 * loop/nest.c: the loop-nest description: operation tables, validation, equality, the schedule
 * transforms a tuner uses (swap, split, merge) with their cheap legality queries, and cost
 * estimates (points, flops, bytes).
 *
 * Key idea: a nest is a fixed-size plain value (no pointers, no allocation), so a tuner can try
 * a transform on a copy on the stack, and validation can never read outside the struct, even
 * when it is filled with garbage. The order rules are those of LoopNest's check_representation
 * (steps of a dimension non-increasing outside-in, innermost step 1, every dimension present);
 * unlike LoopNest, an illegal schedule is a status and a message, never an exception, and the
 * legality of one transform is answered in O(order length) without trying it (LoopStack
 * reference, section 6.1 point 5).
 */
#include "vox/loop.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- tables ---------------------------------------------------------------------------- */

static float reduce_add(float c, float v) { return c + v; }
static float reduce_max(float c, float v) { return v > c ? v : c; }
static float reduce_min(float c, float v) { return v < c ? v : c; }
static float combine_mul(float a, float b) { return a * b; }
static float combine_add(float a, float b) { return a + b; }

static const struct vox_nest_compute_info compute_table[VOX_NEST_COMPUTE_COUNT] = {
    [VOX_NEST_PLUS_MUL] = {"plus_mul", "+=", "*", 0.0f, reduce_add, combine_mul},
    [VOX_NEST_MAX_MUL] = {"max_mul", "max=", "*", -INFINITY, reduce_max, combine_mul},
    [VOX_NEST_MAX_PLUS] = {"max_plus", "max=", "+", -INFINITY, reduce_max, combine_add},
    [VOX_NEST_MIN_MUL] = {"min_mul", "min=", "*", INFINITY, reduce_min, combine_mul},
};

static float op_relu(float x, float t, float p) { return x > 0.0f ? x : 0.0f; }
static float op_elu(float x, float t, float p) { return x > 0.0f ? x : expm1f(x); }
static float op_sigmoid(float x, float t, float p) { return 1.0f / (1.0f + expf(-x)); }
static float op_tanh(float x, float t, float p) { return tanhf(x); }
static float op_scale(float x, float t, float p) { return x * p; }
static float op_bias(float x, float t, float p) { return x + t; }
static float op_mul(float x, float t, float p) { return x * t; }

static const struct vox_nest_eltwise_info eltwise_table[VOX_NEST_ELTWISE_COUNT] = {
    [VOX_NEST_RELU] = {"relu", false, false, op_relu},
    [VOX_NEST_ELU] = {"elu", false, false, op_elu},
    [VOX_NEST_SIGMOID] = {"sigmoid", false, false, op_sigmoid},
    [VOX_NEST_TANH] = {"tanh", false, false, op_tanh},
    [VOX_NEST_SCALE] = {"scale", false, true, op_scale},
    [VOX_NEST_BIAS] = {"bias", true, false, op_bias},
    [VOX_NEST_MUL] = {"mul", true, false, op_mul},
};

const struct vox_nest_compute_info *vox_nest_compute_info(enum vox_nest_compute c)
{
    return (unsigned)c < VOX_NEST_COMPUTE_COUNT ? &compute_table[c] : NULL;
}

const struct vox_nest_eltwise_info *vox_nest_eltwise_info(enum vox_nest_eltwise_kind k)
{
    return (unsigned)k < VOX_NEST_ELTWISE_COUNT ? &eltwise_table[k] : NULL;
}

static const char *const tensor_names[VOX_NEST_TENSORS] = {"C", "A", "B"};

/* ---- building -------------------------------------------------------------------------- */

void vox_nest_init(struct vox_nest *nest) { memset(nest, 0, sizeof *nest); }

static bool is_identifier(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    if (n == 0 || n == cap)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

int vox_nest_dim_find(const struct vox_nest *nest, const char *name)
{
    for (int d = 0; d < nest->ndims && d < VOX_NEST_MAX_DIMS; d++)
        if (strncmp(nest->dims[d].name, name, VOX_NEST_NAME_MAX) == 0)
            return d;
    return -1;
}

int vox_nest_dim_add(struct vox_nest *nest, const char *name, int64_t size)
{
    if (nest->ndims >= VOX_NEST_MAX_DIMS || !is_identifier(name, VOX_NEST_NAME_MAX) ||
        vox_nest_dim_find(nest, name) >= 0)
        return -1;
    int d = nest->ndims++;
    memset(nest->dims[d].name, 0, VOX_NEST_NAME_MAX);
    strcpy(nest->dims[d].name, name);
    nest->dims[d].size = size;
    return d;
}

bool vox_nest_loop_add(struct vox_nest *nest, int dim, int64_t step)
{
    if (nest->norder >= VOX_NEST_MAX_ORDER)
        return false;
    nest->order[nest->norder++] = (struct vox_nest_loop){dim, step};
    return true;
}

bool vox_nest_is_reduction(const struct vox_nest *nest, int dim)
{
    return nest->strides[VOX_NEST_C][dim] == 0;
}

/* ---- the order rules, shared by validation and the legality queries ---------------------- */

enum order_rule {
    ORDER_OK,
    ORDER_BAD_DIM,    /* entry names no dimension */
    ORDER_BAD_STEP,   /* step < 1 */
    ORDER_STEP_GROWS, /* step larger than the enclosing loop over the same dimension */
    ORDER_LAST_STEP,  /* a dimension's innermost loop has step > 1 */
    ORDER_MISSING,    /* a dimension never appears (*where is the dimension) */
};

static const char *const order_reasons[] = {
    [ORDER_OK] = "legal",
    [ORDER_BAD_DIM] = "a loop names no dimension",
    [ORDER_BAD_STEP] = "a step is below 1",
    [ORDER_STEP_GROWS] = "a loop's step would exceed its enclosing split's step",
    [ORDER_LAST_STEP] = "a dimension's innermost loop would not have step 1",
    [ORDER_MISSING] = "a dimension would never appear in the order",
};

static enum order_rule order_check(int ndims, const struct vox_nest_loop *order, int n,
                                   int *where)
{
    int64_t prev[VOX_NEST_MAX_DIMS];
    int last[VOX_NEST_MAX_DIMS];
    for (int d = 0; d < ndims; d++)
        last[d] = -1;
    for (int p = 0; p < n; p++) {
        int d = order[p].dim;
        *where = p;
        if (d < 0 || d >= ndims)
            return ORDER_BAD_DIM;
        if (order[p].step < 1)
            return ORDER_BAD_STEP;
        if (last[d] >= 0 && order[p].step > prev[d])
            return ORDER_STEP_GROWS;
        prev[d] = order[p].step;
        last[d] = p;
    }
    for (int d = 0; d < ndims; d++) {
        *where = d;
        if (last[d] < 0)
            return ORDER_MISSING;
        *where = last[d];
        if (prev[d] != 1)
            return ORDER_LAST_STEP;
    }
    return ORDER_OK;
}

/* The step of the closest loop over order[i].dim outside loop i, or 0 if there is none. */
static int64_t enclosing_step(const struct vox_nest *nest, int i)
{
    for (int p = i - 1; p >= 0; p--)
        if (nest->order[p].dim == nest->order[i].dim)
            return nest->order[p].step;
    return 0;
}

/* ---- validation ------------------------------------------------------------------------ */

static enum vox_status validate_counts(struct vox_ctx *ctx, const struct vox_nest *nest)
{
    if (nest->ndims < 1 || nest->ndims > VOX_NEST_MAX_DIMS)
        return vox_fail(ctx, VOX_INVALID_ARG, "nest: %d dimensions, expected 1 to %d",
                        nest->ndims, VOX_NEST_MAX_DIMS);
    if (nest->norder < 1 || nest->norder > VOX_NEST_MAX_ORDER)
        return vox_fail(ctx, VOX_INVALID_ARG, "nest: %d loops in the order, expected 1 to %d",
                        nest->norder, VOX_NEST_MAX_ORDER);
    if (nest->npre < 0 || nest->npre > VOX_NEST_MAX_OPS || nest->npost < 0 ||
        nest->npost > VOX_NEST_MAX_OPS)
        return vox_fail(ctx, VOX_INVALID_ARG, "nest: %d pre-ops and %d post-ops, at most %d each",
                        nest->npre, nest->npost, VOX_NEST_MAX_OPS);
    if (!vox_nest_compute_info(nest->compute))
        return vox_fail(ctx, VOX_INVALID_ARG, "nest: compute %d is not one of the %d pairs",
                        (int)nest->compute, VOX_NEST_COMPUTE_COUNT);
    return VOX_OK;
}

static enum vox_status validate_dims(struct vox_ctx *ctx, const struct vox_nest *nest)
{
    for (int d = 0; d < nest->ndims; d++) {
        const struct vox_nest_dim *dim = &nest->dims[d];
        if (!is_identifier(dim->name, VOX_NEST_NAME_MAX))
            return vox_fail(ctx, VOX_INVALID_ARG,
                            "dimension %d: name is not an identifier of 1 to %d characters", d,
                            VOX_NEST_NAME_MAX - 1);
        if (vox_nest_dim_find(nest, dim->name) != d)
            return vox_fail(ctx, VOX_INVALID_ARG, "dimension %d: name '%s' is used twice", d,
                            dim->name);
        if (dim->size < 1 || dim->size > VOX_NEST_MAX_SIZE)
            return vox_fail(ctx, VOX_INVALID_ARG,
                            "dimension '%s': size %lld, expected 1 to %lld", dim->name,
                            (long long)dim->size, (long long)VOX_NEST_MAX_SIZE);
    }
    return VOX_OK;
}

static enum vox_status validate_order(struct vox_ctx *ctx, const struct vox_nest *nest)
{
    int w = 0;
    enum order_rule r = order_check(nest->ndims, nest->order, nest->norder, &w);
    const struct vox_nest_loop *l = &nest->order[w];
    switch (r) {
    case ORDER_OK:
        return VOX_OK;
    case ORDER_BAD_DIM:
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "order entry %d: dimension index %d, expected 0 to %d", w, l->dim,
                        nest->ndims - 1);
    case ORDER_BAD_STEP:
        return vox_fail(ctx, VOX_INVALID_ARG, "order entry %d: dimension '%s' has step %lld, "
                        "expected >= 1", w, nest->dims[l->dim].name, (long long)l->step);
    case ORDER_STEP_GROWS:
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "order entry %d: dimension '%s' has step %lld but its enclosing split "
                        "has step %lld", w, nest->dims[l->dim].name, (long long)l->step,
                        (long long)enclosing_step(nest, w));
    case ORDER_LAST_STEP:
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "order entry %d: dimension '%s' has step %lld in its innermost loop, "
                        "expected 1", w, nest->dims[l->dim].name, (long long)l->step);
    case ORDER_MISSING:
        return vox_fail(ctx, VOX_INVALID_ARG, "dimension '%s' never appears in the order",
                        nest->dims[w].name);
    }
    return vox_fail(ctx, VOX_INTERNAL, "order check: unknown rule %d", (int)r);
}

/* Offsets [lo, hi] reached by `strides`; false if they do not fit in int64. */
static bool span_checked(const struct vox_nest *nest, const int64_t *strides, int64_t *lo,
                         int64_t *hi)
{
    int64_t width;
    *lo = *hi = 0;
    for (int d = 0; d < nest->ndims; d++) {
        int64_t reach;
        if (strides[d] == INT64_MIN ||
            __builtin_mul_overflow(strides[d], nest->dims[d].size - 1, &reach))
            return false;
        if (__builtin_add_overflow(reach < 0 ? *lo : *hi, reach, reach < 0 ? lo : hi))
            return false;
    }
    return !__builtin_sub_overflow(*hi, *lo, &width) && width < INT64_MAX;
}

void vox_nest_span(const struct vox_nest *nest, const int64_t *strides, int64_t *lo_out,
                   int64_t *hi_out)
{
    span_checked(nest, strides, lo_out, hi_out);
}

static enum vox_status validate_strides(struct vox_ctx *ctx, const struct vox_nest *nest)
{
    int64_t lo, hi;
    for (int t = 0; t < VOX_NEST_TENSORS; t++)
        if (!span_checked(nest, nest->strides[t], &lo, &hi))
            return vox_fail(ctx, VOX_INVALID_ARG, "tensor %s: its offsets overflow int64",
                            tensor_names[t]);
    for (int d = 0; d < nest->ndims; d++) {
        bool used = false;
        for (int t = 0; t < VOX_NEST_TENSORS; t++)
            used |= nest->strides[t][d] != 0;
        if (!used)
            return vox_fail(ctx, VOX_INVALID_ARG,
                            "dimension '%s' indexes no tensor: C, A and B have stride 0 along it",
                            nest->dims[d].name);
    }
    return VOX_OK;
}

static enum vox_status validate_ops(struct vox_ctx *ctx, const struct vox_nest *nest, bool post)
{
    const struct vox_nest_eltwise *ops = post ? nest->post : nest->pre;
    const char *what = post ? "post" : "pre";
    for (int i = 0; i < (post ? nest->npost : nest->npre); i++) {
        const struct vox_nest_eltwise_info *info = vox_nest_eltwise_info(ops[i].kind);
        if (!info)
            return vox_fail(ctx, VOX_INVALID_ARG, "%s op %d: kind %d is not one of the %d ops",
                            what, i, (int)ops[i].kind, VOX_NEST_ELTWISE_COUNT);
        if (info->has_param && !isfinite(ops[i].param))
            return vox_fail(ctx, VOX_INVALID_ARG, "%s op %d (%s): constant is not finite", what,
                            i, info->name);
        if (!info->has_tensor)
            continue;
        int64_t lo, hi;
        if (!span_checked(nest, ops[i].strides, &lo, &hi))
            return vox_fail(ctx, VOX_INVALID_ARG, "%s op %d (%s): its offsets overflow int64",
                            what, i, info->name);
        for (int d = 0; post && d < nest->ndims; d++)
            if (vox_nest_is_reduction(nest, d) && ops[i].strides[d] != 0)
                return vox_fail(ctx, VOX_INVALID_ARG,
                                "post op %d (%s): stride %lld along reduction dimension '%s', "
                                "expected 0", i, info->name, (long long)ops[i].strides[d],
                                nest->dims[d].name);
    }
    return VOX_OK;
}

static int compare_abs_stride(const void *pa, const void *pb)
{
    int64_t a = llabs(((const int64_t *)pa)[0]), b = llabs(((const int64_t *)pb)[0]);
    return (a > b) - (a < b);
}

/* Sorted by |stride|, each output dimension must step past everything the smaller ones reach:
 * then distinct output points have distinct offsets. Conservative, O(d log d). */
static enum vox_status validate_alias(struct vox_ctx *ctx, const struct vox_nest *nest)
{
    int64_t s[VOX_NEST_MAX_DIMS][2];
    int n = 0;
    for (int d = 0; d < nest->ndims; d++)
        if (!vox_nest_is_reduction(nest, d) && nest->dims[d].size > 1)
            s[n][0] = nest->strides[VOX_NEST_C][d], s[n++][1] = d;
    qsort(s, (size_t)n, sizeof s[0], compare_abs_stride);
    int64_t reach = 0; /* the span of the dimensions so far; fits: validate_strides ran */
    for (int i = 0; i < n; i++) {
        int d = (int)s[i][1];
        if (llabs(s[i][0]) <= reach)
            return vox_fail(ctx, VOX_INVALID_ARG,
                            "C's strides alias two output elements: dimension '%s' has stride "
                            "%lld, within the %lld elements the smaller strides span",
                            nest->dims[d].name, (long long)s[i][0], (long long)reach + 1);
        reach += llabs(s[i][0]) * (nest->dims[d].size - 1);
    }
    return VOX_OK;
}

enum vox_status vox_nest_validate(struct vox_ctx *ctx, const struct vox_nest *nest)
{
    enum vox_status s;
    if (!nest)
        return vox_fail(ctx, VOX_INVALID_ARG, "nest: NULL");
    if ((s = validate_counts(ctx, nest)) || (s = validate_dims(ctx, nest)) ||
        (s = validate_order(ctx, nest)) || (s = validate_strides(ctx, nest)) ||
        (s = validate_ops(ctx, nest, false)) || (s = validate_ops(ctx, nest, true)) ||
        (s = validate_alias(ctx, nest)))
        return s;
    return VOX_OK;
}

/* ---- equality -------------------------------------------------------------------------- */

static bool ops_equal(const struct vox_nest *a, const struct vox_nest_eltwise *x,
                      const struct vox_nest_eltwise *y)
{
    if (x->kind != y->kind)
        return false;
    const struct vox_nest_eltwise_info *info = vox_nest_eltwise_info(x->kind);
    if (!info)
        return true;
    if (info->has_param && memcmp(&x->param, &y->param, sizeof x->param) != 0)
        return false;
    return !info->has_tensor ||
           memcmp(x->strides, y->strides, (size_t)a->ndims * sizeof x->strides[0]) == 0;
}

bool vox_nest_equal(const struct vox_nest *a, const struct vox_nest *b)
{
    if (a->ndims != b->ndims || a->norder != b->norder || a->compute != b->compute ||
        a->accumulate != b->accumulate || a->npre != b->npre || a->npost != b->npost ||
        a->ndims < 0 || a->ndims > VOX_NEST_MAX_DIMS || a->norder < 0 ||
        a->norder > VOX_NEST_MAX_ORDER || a->npre < 0 || a->npre > VOX_NEST_MAX_OPS ||
        a->npost < 0 || a->npost > VOX_NEST_MAX_OPS)
        return false;
    for (int d = 0; d < a->ndims; d++) {
        if (strncmp(a->dims[d].name, b->dims[d].name, VOX_NEST_NAME_MAX) != 0 ||
            a->dims[d].size != b->dims[d].size)
            return false;
        for (int t = 0; t < VOX_NEST_TENSORS; t++)
            if (a->strides[t][d] != b->strides[t][d])
                return false;
    }
    for (int p = 0; p < a->norder; p++)
        if (a->order[p].dim != b->order[p].dim || a->order[p].step != b->order[p].step)
            return false;
    for (int i = 0; i < a->npre; i++)
        if (!ops_equal(a, &a->pre[i], &b->pre[i]))
            return false;
    for (int i = 0; i < a->npost; i++)
        if (!ops_equal(a, &a->post[i], &b->post[i]))
            return false;
    return true;
}

/* ---- transforms ------------------------------------------------------------------------ */

static bool refuse(const char **why_out, const char *why)
{
    if (why_out)
        *why_out = why;
    return false;
}

bool vox_nest_can_swap(const struct vox_nest *nest, int i, int j, const char **why_out)
{
    if (i < 0 || j < 0 || i >= nest->norder || j >= nest->norder)
        return refuse(why_out, "loop index out of range");
    struct vox_nest_loop order[VOX_NEST_MAX_ORDER];
    memcpy(order, nest->order, (size_t)nest->norder * sizeof order[0]);
    order[i] = nest->order[j];
    order[j] = nest->order[i];
    int w;
    enum order_rule r = order_check(nest->ndims, order, nest->norder, &w);
    return r == ORDER_OK || refuse(why_out, order_reasons[r]);
}

bool vox_nest_can_split(const struct vox_nest *nest, int i, int64_t step, const char **why_out)
{
    if (i < 0 || i >= nest->norder)
        return refuse(why_out, "loop index out of range");
    if (nest->norder >= VOX_NEST_MAX_ORDER)
        return refuse(why_out, "the order is full");
    if (step <= nest->order[i].step)
        return refuse(why_out, "the new outer step must exceed the loop's step");
    int64_t outer = enclosing_step(nest, i);
    if (outer > 0 && step > outer)
        return refuse(why_out, order_reasons[ORDER_STEP_GROWS]);
    return true;
}

bool vox_nest_can_merge(const struct vox_nest *nest, int i, const char **why_out)
{
    if (i < 0 || i >= nest->norder)
        return refuse(why_out, "loop index out of range");
    for (int p = i + 1; p < nest->norder; p++)
        if (nest->order[p].dim == nest->order[i].dim)
            return true;
    return refuse(why_out, "no inner loop over the same dimension to merge into");
}

enum vox_status vox_nest_swap(struct vox_ctx *ctx, struct vox_nest *nest, int i, int j)
{
    const char *why;
    if (!vox_nest_can_swap(nest, i, j, &why))
        return vox_fail(ctx, VOX_INVALID_ARG, "swap loops %d and %d: %s", i, j, why);
    struct vox_nest_loop t = nest->order[i];
    nest->order[i] = nest->order[j];
    nest->order[j] = t;
    return VOX_OK;
}

enum vox_status vox_nest_split(struct vox_ctx *ctx, struct vox_nest *nest, int i, int64_t step)
{
    const char *why;
    if (!vox_nest_can_split(nest, i, step, &why))
        return vox_fail(ctx, VOX_INVALID_ARG, "split loop %d by %lld: %s", i, (long long)step,
                        why);
    memmove(&nest->order[i + 1], &nest->order[i],
            (size_t)(nest->norder - i) * sizeof nest->order[0]);
    nest->order[i].step = step;
    nest->norder++;
    return VOX_OK;
}

enum vox_status vox_nest_merge(struct vox_ctx *ctx, struct vox_nest *nest, int i)
{
    const char *why;
    if (!vox_nest_can_merge(nest, i, &why))
        return vox_fail(ctx, VOX_INVALID_ARG, "merge loop %d: %s", i, why);
    memmove(&nest->order[i], &nest->order[i + 1],
            (size_t)(nest->norder - i - 1) * sizeof nest->order[0]);
    nest->norder--;
    return VOX_OK;
}

/* ---- estimates ------------------------------------------------------------------------- */

int vox_nest_extra_count(const struct vox_nest *nest)
{
    int n = 0;
    for (int i = 0; i < nest->npre; i++)
        n += eltwise_table[nest->pre[i].kind].has_tensor;
    for (int i = 0; i < nest->npost; i++)
        n += eltwise_table[nest->post[i].kind].has_tensor;
    return n;
}

double vox_nest_points(const struct vox_nest *nest)
{
    double p = 1.0;
    for (int d = 0; d < nest->ndims; d++)
        p *= (double)nest->dims[d].size;
    return p;
}

/* The smaller of a stride vector's span and the product of the sizes it depends on. */
static double footprint(const struct vox_nest *nest, const int64_t *strides)
{
    double prod = 1.0;
    int64_t lo, hi;
    for (int d = 0; d < nest->ndims; d++)
        if (strides[d] != 0)
            prod *= (double)nest->dims[d].size;
    vox_nest_span(nest, strides, &lo, &hi);
    double span = (double)hi - (double)lo + 1.0;
    return span < prod ? span : prod;
}

double vox_nest_flops(const struct vox_nest *nest)
{
    double outputs = footprint(nest, nest->strides[VOX_NEST_C]);
    return vox_nest_points(nest) * (2.0 + nest->npre) + outputs * nest->npost;
}

double vox_nest_bytes(const struct vox_nest *nest)
{
    double elems = footprint(nest, nest->strides[VOX_NEST_A]) +
                   footprint(nest, nest->strides[VOX_NEST_B]) +
                   footprint(nest, nest->strides[VOX_NEST_C]) * (nest->accumulate ? 2.0 : 1.0);
    for (int i = 0; i < nest->npre; i++)
        if (eltwise_table[nest->pre[i].kind].has_tensor)
            elems += footprint(nest, nest->pre[i].strides);
    for (int i = 0; i < nest->npost; i++)
        if (eltwise_table[nest->post[i].kind].has_tensor)
            elems += footprint(nest, nest->post[i].strides);
    return elems * (double)sizeof(float);
}
