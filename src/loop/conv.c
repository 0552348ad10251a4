/*
 * loop/conv.c: direct 3D convolution (batch 1, stride 1, valid padding) as one loop nest, with
 * a default schedule, the weight repacking it needs, and the one-call vox_conv3d.
 *
 * Key idea (LoopNest's conv nests, and the direct-convolution kernels of Zlateski et al.):
 * a convolution is a contraction whose input has the same stride along an output dimension
 * and its kernel dimension (in[x + kx]), so no im2col is needed. The schedule makes it look
 * like a matmul to the code generator:
 *   blocked (channels innermost, b lanes per block): vectors along the output-channel lane
 *     `bo`, a register tile of XT output voxels along x times OT output blocks; per input
 *     lane one broadcast of the input and OT weight vectors feed XT*OT FMAs;
 *       z:1 y:1 ob:OT x:XT ib:1 kz:1 ky:1 kx:1 bi:1 ob:1 x:1 bo:1
 *   NCDHW: vectors along x, a tile of XV x-vectors times KT output channels; the weight is
 *     broadcast, the input loaded (unaligned) along x;
 *       z:1 y:1 k:KT x:XV c:1 kz:1 ky:1 kx:1 k:1 x:1
 * The tile sizes come from the register count: accumulators + operand vectors + 1 broadcast.
 */
#include "vox/loop.h"

#include <string.h>

static int64_t ceil_div(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

static int64_t lanes_of(struct vox_ctx *ctx)
{
    return vox_ctx_cpu(ctx)->isa == VOX_ISA_AVX512 ? 16 : 8;
}

/* The default block on AVX-512: the one of 16, 8, 24, 32, 48 channels needing the fewest
 * vector FMAs per (input lane, tap), padded input channels x output vectors, where a block of
 * 8 takes ymm vectors (ymm16-31 through EVEX) and wider blocks zmm ones, the last one masked:
 * 24 -> 24 gets 24 (a zmm and a half), 1 -> 24 gets 8, 48 -> 48 keeps 16. A ymm FMA costs
 * as much issue as a zmm one (measured: Zen 5 runs 8-channel blocks at half the zmm rate). */
static int64_t default_block(struct vox_ctx *ctx, int64_t c, int64_t k)
{
    int64_t w = lanes_of(ctx);
    if (w != 16)
        return w;
    static const int64_t cand[] = {16, 8, 24, 32, 48};
    int64_t best = 16, best_cost = INT64_MAX;
    for (size_t i = 0; i < sizeof cand / sizeof cand[0]; i++) {
        int64_t b = cand[i], cost = ceil_div(c, b) * b * ceil_div(k, b) * ceil_div(b, 16);
        if (cost < best_cost) {
            best = b;
            best_cost = cost;
        }
    }
    return best;
}

enum vox_status vox_conv3d_sizes(struct vox_ctx *ctx, const struct vox_conv3d_desc *desc,
                                 int64_t *block_out, int64_t *in_elems_out,
                                 int64_t *out_elems_out, int64_t *weight_elems_out)
{
    const int64_t sz[8] = {desc->c, desc->k, desc->d, desc->h, desc->w,
                           desc->kd, desc->kh, desc->kw};
    static const char *const names[8] = {"c", "k", "d", "h", "w", "kd", "kh", "kw"};
    for (int i = 0; i < 8; i++)
        if (sz[i] < 1 || sz[i] > (1 << 20))
            return vox_fail(ctx, VOX_INVALID_ARG, "conv3d: %s = %lld: expected 1 to %d",
                            names[i], (long long)sz[i], 1 << 20);
    if (desc->kd > desc->d || desc->kh > desc->h || desc->kw > desc->w)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "conv3d: kernel %lldx%lldx%lld exceeds the input %lldx%lldx%lld",
                        (long long)desc->kd, (long long)desc->kh, (long long)desc->kw,
                        (long long)desc->d, (long long)desc->h, (long long)desc->w);
    if (desc->layout != VOX_CONV_NCDHW && desc->layout != VOX_CONV_BLOCKED)
        return vox_fail(ctx, VOX_INVALID_ARG, "conv3d: layout %d: expected NCDHW or BLOCKED",
                        (int)desc->layout);
    int64_t b = 1;
    if (desc->layout == VOX_CONV_BLOCKED) {
        b = desc->block ? desc->block : default_block(ctx, desc->c, desc->k);
        if (b < 1 || b > 64)
            return vox_fail(ctx, VOX_INVALID_ARG, "conv3d: block %lld: expected 0 to 64",
                            (long long)desc->block);
    }
    int64_t od = desc->d - desc->kd + 1, oh = desc->h - desc->kh + 1, ow = desc->w - desc->kw + 1;
    int64_t taps = desc->kd * desc->kh * desc->kw;
    if (block_out)
        *block_out = b;
    if (in_elems_out)
        *in_elems_out = ceil_div(desc->c, b) * b * desc->d * desc->h * desc->w;
    if (out_elems_out)
        *out_elems_out = ceil_div(desc->k, b) * b * od * oh * ow;
    if (weight_elems_out)
        *weight_elems_out = ceil_div(desc->k, b) * b * ceil_div(desc->c, b) * b * taps;
    return VOX_OK;
}

/* Adds a dimension and its strides in C (out), A (in), B (weights). */
static int dim3(struct vox_nest *n, const char *name, int64_t size, int64_t sc, int64_t sa,
                int64_t sb)
{
    int d = vox_nest_dim_add(n, name, size);
    n->strides[VOX_NEST_C][d] = sc;
    n->strides[VOX_NEST_A][d] = sa;
    n->strides[VOX_NEST_B][d] = sb;
    return d;
}

/* Splits `total` into equal-ish blocks of at most `cap`. */
static int64_t balanced(int64_t total, int64_t cap)
{
    return ceil_div(total, ceil_div(total, cap));
}

static void build_blocked(struct vox_ctx *ctx, const struct vox_conv3d_desc *c, int64_t b,
                          struct vox_nest *n)
{
    const int64_t od = c->d - c->kd + 1, oh = c->h - c->kh + 1, ow = c->w - c->kw + 1;
    const int64_t ib = ceil_div(c->c, b), ob = ceil_div(c->k, b), taps = c->kd * c->kh * c->kw;
    const int64_t ws = b * b; /* one (ib, tap) block of weights: bi x bo */
    int z = dim3(n, "z", od, oh * ow * b, c->h * c->w * b, 0);
    int y = dim3(n, "y", oh, ow * b, c->w * b, 0);
    int x = dim3(n, "x", ow, b, b, 0);
    int o = dim3(n, "ob", ob, od * oh * ow * b, 0, ib * taps * ws);
    int bo = dim3(n, "bo", b, 1, 0, 1);
    int i = dim3(n, "ib", ib, 0, c->d * c->h * c->w * b, taps * ws);
    int bi = dim3(n, "bi", b, 0, 1, b);
    int kz = dim3(n, "kz", c->kd, 0, c->h * c->w * b, c->kh * c->kw * ws);
    int ky = dim3(n, "ky", c->kh, 0, c->w * b, c->kw * ws);
    int kx = dim3(n, "kx", c->kw, 0, b, ws);
    const int64_t lanes = lanes_of(ctx), regs = vox_ctx_cpu(ctx)->isa == VOX_ISA_AVX512 ? 32 : 16;
    const int64_t vecs = ceil_div(b, lanes);
    int64_t ot = ob >= 2 && vecs == 1 ? 2 : 1;
    int64_t xt = balanced(ow, (regs - ot * vecs - 1) / (ot * vecs));
    int64_t loops[][2] = {{z, 1},  {y, 1},  {o, ot},  {x, xt}, {i, 1},  {kz, 1},
                          {ky, 1}, {kx, 1}, {bi, 1},  {o, 1},  {x, 1},  {bo, 1}};
    for (size_t k = 0; k < sizeof loops / sizeof loops[0]; k++)
        vox_nest_loop_add(n, (int)loops[k][0], loops[k][1]);
}

static void build_ncdhw(struct vox_ctx *ctx, const struct vox_conv3d_desc *c, struct vox_nest *n)
{
    const int64_t od = c->d - c->kd + 1, oh = c->h - c->kh + 1, ow = c->w - c->kw + 1;
    const int64_t taps = c->kd * c->kh * c->kw;
    int z = dim3(n, "z", od, oh * ow, c->h * c->w, 0);
    int y = dim3(n, "y", oh, ow, c->w, 0);
    int x = dim3(n, "x", ow, 1, 1, 0);
    int k = dim3(n, "k", c->k, od * oh * ow, 0, c->c * taps);
    int ci = dim3(n, "c", c->c, 0, c->d * c->h * c->w, taps);
    int kz = dim3(n, "kz", c->kd, 0, c->h * c->w, c->kh * c->kw);
    int ky = dim3(n, "ky", c->kh, 0, c->w, c->kw);
    int kx = dim3(n, "kx", c->kw, 0, 1, 1);
    const int64_t lanes = lanes_of(ctx), regs = vox_ctx_cpu(ctx)->isa == VOX_ISA_AVX512 ? 32 : 16;
    int64_t xv = ceil_div(ow, lanes) < 3 ? ceil_div(ow, lanes) : (regs == 32 ? 3 : 2);
    int64_t kt = balanced(c->k, (regs - xv - 1) / xv);
    int64_t loops[][2] = {{z, 1},  {y, 1},  {k, kt}, {x, xv * lanes}, {ci, 1},
                          {kz, 1}, {ky, 1}, {kx, 1}, {k, 1},          {x, 1}};
    for (size_t j = 0; j < sizeof loops / sizeof loops[0]; j++)
        vox_nest_loop_add(n, (int)loops[j][0], loops[j][1]);
}

enum vox_status vox_nest_conv3d(struct vox_ctx *ctx, const struct vox_conv3d_desc *desc,
                                struct vox_nest *nest_out)
{
    int64_t b;
    enum vox_status s = vox_conv3d_sizes(ctx, desc, &b, NULL, NULL, NULL);
    if (s)
        return s;
    struct vox_nest n;
    vox_nest_init(&n);
    if (desc->layout == VOX_CONV_BLOCKED)
        build_blocked(ctx, desc, b, &n);
    else
        build_ncdhw(ctx, desc, &n);
    if (desc->bias) {
        n.post[n.npost].kind = VOX_NEST_BIAS;
        for (int d = 0; d < n.ndims; d++) {
            const char *nm = n.dims[d].name;
            bool is_k = strcmp(nm, "k") == 0 || strcmp(nm, "bo") == 0;
            n.post[n.npost].strides[d] = is_k ? 1 : strcmp(nm, "ob") == 0 ? b : 0;
        }
        n.npost++;
    }
    if (desc->relu)
        n.post[n.npost++].kind = VOX_NEST_RELU;
    if ((s = vox_nest_validate(ctx, &n)))
        return s;
    *nest_out = n;
    return VOX_OK;
}

enum vox_status vox_conv3d_pack(struct vox_ctx *ctx, const struct vox_conv3d_desc *desc,
                                const float *w, const float *bias, float *w_out,
                                float *bias_out)
{
    int64_t b, wn;
    enum vox_status s = vox_conv3d_sizes(ctx, desc, &b, NULL, NULL, &wn);
    if (s)
        return s;
    const int64_t taps = desc->kd * desc->kh * desc->kw, C = desc->c, K = desc->k;
    const int64_t ib = ceil_div(C, b), ob = ceil_div(K, b);
    if (desc->layout == VOX_CONV_NCDHW) {
        memcpy(w_out, w, (size_t)wn * sizeof *w);
    } else {
        memset(w_out, 0, (size_t)wn * sizeof *w_out);
        for (int64_t k = 0; k < K; k++)
            for (int64_t c = 0; c < C; c++)
                for (int64_t t = 0; t < taps; t++) {
                    int64_t o = (((k / b) * ib + c / b) * taps + t) * b * b + (c % b) * b + k % b;
                    w_out[o] = w[(k * C + c) * taps + t];
                }
    }
    if (bias_out)
        for (int64_t k = 0; k < ob * b; k++)
            bias_out[k] = bias && k < K ? bias[k] : 0.0f;
    return VOX_OK;
}

enum vox_status vox_conv3d(struct vox_ctx *ctx, const struct vox_conv3d_desc *desc, float *out,
                           const float *in, const float *w, const float *bias)
{
    int64_t b, wn;
    struct vox_nest nest;
    enum vox_status s = vox_conv3d_sizes(ctx, desc, &b, NULL, NULL, &wn);
    if (s || (s = vox_nest_conv3d(ctx, desc, &nest)))
        return s;
    if (!out || !in || !w || (desc->bias && !bias))
        return vox_fail(ctx, VOX_INVALID_ARG, "conv3d: a NULL tensor pointer");
    const int64_t kpad = ceil_div(desc->k, b) * b;
    struct vox_kernel *kern = NULL;
    float *wp = vox_alloc(ctx, (size_t)(wn + kpad) * sizeof *wp);
    if (!wp)
        return VOX_OUT_OF_MEMORY;
    if ((s = vox_conv3d_pack(ctx, desc, w, bias, wp, wp + wn)) ||
        (s = vox_nest_compile(ctx, &nest, NULL, &kern)))
        goto done;
    const float *extra[1] = {wp + wn};
    vox_kernel_run(kern, out, in, wp, extra);
    vox_kernel_destroy(kern);
done:
    vox_free(ctx, wp);
    return s;
}
