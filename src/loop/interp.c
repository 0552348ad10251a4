/*
 * loop/interp.c: the scalar interpreter of a loop nest, the oracle for the JIT.
 *
 * Key idea: keep it obviously right. Each dimension carries a current range [lo, hi); loop p
 * over dimension d walks d's current range in steps of its step and narrows the range to one
 * step (shorter at a tail) for the loops inside. Since every dimension's innermost loop has
 * step 1, all ranges have width 1 at the bottom of the recursion, and the body reduces one
 * combined value into C there, in exactly the order the nest's loops give. Overwrite mode first
 * sets every output element to the reduction's identity; post-ops run in a separate pass over
 * the output elements once the whole reduction is done. Both passes walk the output dimensions
 * with an odometer, which is valid because validation ensures C's strides do not alias.
 *
 * The cost is O(points * dims) with a function call per point: fine for an oracle.
 */
#include "vox/loop.h"

struct interp {
    const struct vox_nest *nest;
    const struct vox_nest_compute_info *op;
    float *C;
    const float *A, *B;
    const float *pre_t[VOX_NEST_MAX_OPS];  /* the pre-ops' tensor operands (or NULL) */
    const float *post_t[VOX_NEST_MAX_OPS]; /* the post-ops' tensor operands (or NULL) */
};

static int64_t offset(const struct vox_nest *nest, const int64_t *strides, const int64_t *idx)
{
    int64_t off = 0;
    for (int d = 0; d < nest->ndims; d++)
        off += idx[d] * strides[d];
    return off;
}

static float apply_ops(const struct vox_nest *nest, const struct vox_nest_eltwise *ops, int n,
                       const float *const *tensors, const int64_t *idx, float x)
{
    for (int i = 0; i < n; i++) {
        const struct vox_nest_eltwise_info *info = vox_nest_eltwise_info(ops[i].kind);
        float t = info->has_tensor ? tensors[i][offset(nest, ops[i].strides, idx)] : 0.0f;
        x = info->fn(x, t, ops[i].param);
    }
    return x;
}

static void body(const struct interp *r, const int64_t *idx)
{
    const struct vox_nest *nest = r->nest;
    float a = r->A[offset(nest, nest->strides[VOX_NEST_A], idx)];
    a = apply_ops(nest, nest->pre, nest->npre, r->pre_t, idx, a);
    float b = r->B[offset(nest, nest->strides[VOX_NEST_B], idx)];
    float *c = &r->C[offset(nest, nest->strides[VOX_NEST_C], idx)];
    *c = r->op->reduce_fn(*c, r->op->combine_fn(a, b));
}

static void run_loop(const struct interp *r, int p, int64_t *lo, int64_t *hi)
{
    if (p == r->nest->norder) {
        body(r, lo);
        return;
    }
    int d = r->nest->order[p].dim;
    int64_t step = r->nest->order[p].step, outer_lo = lo[d], outer_hi = hi[d];
    for (int64_t i = outer_lo; i < outer_hi; i += step) {
        lo[d] = i;
        hi[d] = outer_hi - i < step ? outer_hi : i + step;
        run_loop(r, p + 1, lo, hi);
    }
    lo[d] = outer_lo;
    hi[d] = outer_hi;
}

/* Calls the init (post = false) or post-op pass on every output element. */
static void output_pass(const struct interp *r, bool post)
{
    const struct vox_nest *nest = r->nest;
    int64_t idx[VOX_NEST_MAX_DIMS] = {0};
    for (;;) {
        float *c = &r->C[offset(nest, nest->strides[VOX_NEST_C], idx)];
        *c = post ? apply_ops(nest, nest->post, nest->npost, r->post_t, idx, *c)
                  : r->op->identity;
        int d = nest->ndims - 1;
        for (; d >= 0; d--) {
            if (vox_nest_is_reduction(nest, d))
                continue;
            if (++idx[d] < nest->dims[d].size)
                break;
            idx[d] = 0;
        }
        if (d < 0)
            return;
    }
}

/* Deals the extra pointers to the ops that take a tensor, in order: pre-ops, then post-ops. */
static enum vox_status bind_extra(struct vox_ctx *ctx, struct interp *r,
                                  const float *const *extra)
{
    const struct vox_nest *nest = r->nest;
    int k = 0;
    for (int pass = 0; pass < 2; pass++) {
        const struct vox_nest_eltwise *ops = pass ? nest->post : nest->pre;
        const float **slot = pass ? r->post_t : r->pre_t;
        for (int i = 0; i < (pass ? nest->npost : nest->npre); i++) {
            slot[i] = NULL;
            if (!vox_nest_eltwise_info(ops[i].kind)->has_tensor)
                continue;
            if (!extra || !extra[k])
                return vox_fail(ctx, VOX_INVALID_ARG,
                                "interpret: extra[%d] (the tensor of %s op %d) is NULL", k,
                                pass ? "post" : "pre", i);
            slot[i] = extra[k++];
        }
    }
    return VOX_OK;
}

enum vox_status vox_nest_interpret(struct vox_ctx *ctx, const struct vox_nest *nest, float *C,
                                   const float *A, const float *B, const float *const *extra)
{
    enum vox_status s = vox_nest_validate(ctx, nest);
    if (s)
        return s;
    if (!C || !A || !B)
        return vox_fail(ctx, VOX_INVALID_ARG, "interpret: tensor %s is NULL",
                        !C ? "C" : !A ? "A" : "B");
    struct interp r = {.nest = nest, .op = vox_nest_compute_info(nest->compute), .C = C, .A = A,
                       .B = B};
    if ((s = bind_extra(ctx, &r, extra)))
        return s;
    if (!nest->accumulate)
        output_pass(&r, false);
    int64_t lo[VOX_NEST_MAX_DIMS], hi[VOX_NEST_MAX_DIMS];
    for (int d = 0; d < nest->ndims; d++) {
        lo[d] = 0;
        hi[d] = nest->dims[d].size;
    }
    run_loop(&r, 0, lo, hi);
    if (nest->npost > 0)
        output_pass(&r, true);
    return VOX_OK;
}
