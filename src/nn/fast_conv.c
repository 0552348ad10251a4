/*
 * fast_conv.c: convolution and transposed convolution of the fast forward pass as loop nests
 * for the JIT (vox/loop.h), in the blocked channel layout, with the bias and the activation
 * fused as post-ops, and the weight repacking they need.
 *
 * Layout (PZnet, reference note znn.md section 3): a tensor of C channels is
 * (ceil(C/b), Z, Y, X, b), channel c at block c / b, lane c % b. Outputs use b = the vector
 * width (8 lanes AVX2, 16 AVX-512). An input may use its own block `bin`: a narrow input
 * (1-8 channels, the raw image) is stored channels-last with bin = C, so the input layer does
 * not pay for zero lanes; the nest only changes the input's strides.
 *
 * The conv nest is the direct convolution of src/loop/conv.c generalised to dilation and to
 * the input's own block: the input's stride along an output axis equals its stride along the
 * kernel axis divided by the dilation (in[z + a*dz]), so no im2col is needed. Schedule:
 *     z:1 y:1 ob:OT x:XT ib:1 kz:1 ky:1 kx:1 bi:1 ob:1 x:1 bo:1
 * vectors along the output lanes bo, a register tile of XT voxels x OT output blocks; per input
 * lane one broadcast and OT weight vectors feed XT*OT FMAs. Same padding is handled by the
 * caller (it runs the nest on a zero-bordered copy of the input).
 *
 * Planar tensors (blocks of 1, (C, Z, Y, X): channel counts that fill blocks badly, fast.c
 * plan_blocks) take their own nest with vectors along x (planar_nest).
 *
 * Transposed conv with stride = kernel (U-Net upsampling): out[z*KZ + a] = sum in[z] * w[a];
 * the output's stride along z is KZ times its stride along a, which the nest states directly.
 *
 * Batch entries (the fragments of max-pooling fragments) add one dimension "n" over whole
 * entries of the input and the output; each entry is convolved exactly as alone.
 */
#include "fast.h"

#include <string.h>

static int64_t cdiv(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

/* Adds a dimension with its strides in C, A, B. */
static int dim3(struct vox_nest *n, const char *name, int64_t size, int64_t sc, int64_t sa,
                int64_t sb)
{
    int d = vox_nest_dim_add(n, name, size);
    n->strides[VOX_NEST_C][d] = sc;
    n->strides[VOX_NEST_A][d] = sa;
    n->strides[VOX_NEST_B][d] = sb;
    return d;
}

/* Adds the loops in order; with batch entries (c->n > 1) an "n" dimension (strides: the
 * entries of C and A) goes first when there are more entries than planes (the threads split
 * the outermost loop), else just inside the first loop. A conv nest (rows > 0: the extent of
 * its second loop, y) of fewer than 8 planes and more rows runs y outermost, so that 2
 * threads share a thin slab (the planner's timing slabs are 1 plane thick: the direct nest
 * was timed on one thread). */
static void add_loops(struct vox_nest *n, const struct vox_nn_fast_conv *c, int64_t out_entry,
                      int64_t in_entry, int64_t planes, int64_t rows, const int64_t (*loops)[2],
                      int count)
{
    int64_t order[16][2];
    memcpy(order, loops, (size_t)count * sizeof *order);
    if (planes < 8 && rows > planes) {
        memcpy(order[0], loops[1], sizeof order[0]);
        memcpy(order[1], loops[0], sizeof order[1]);
        planes = rows;
    }
    int d = c->n > 1 ? dim3(n, "n", c->n, out_entry, in_entry, 0) : -1;
    if (d >= 0 && c->n > planes)
        vox_nest_loop_add(n, d, 1);
    for (int k = 0; k < count; k++) {
        vox_nest_loop_add(n, (int)order[k][0], order[k][1]);
        if (k == 0 && d >= 0 && c->n <= planes)
            vox_nest_loop_add(n, d, 1);
    }
}

/* Vector registers the code generator keeps for c's post-ops (src/loop/codegen.c,
 * plan_registers): a temporary for a tensor operand (the bias) or an exp-based activation, two
 * more for the exp; a tile that does not fit what is left is accumulated in memory, several
 * times slower (an ELU layer of 29 accumulators ran 8x slower than without its ELU). */
static int64_t post_regs(const struct vox_nn_fast_conv *c)
{
    const bool exp = c->act == VOX_ACT_ELU || c->act == VOX_ACT_SIGMOID || c->act == VOX_ACT_TANH;
    return exp ? 3 : c->bias || c->residual ? 1 : 0;
}

/* The register tile: OT output blocks x XT voxels, from the registers the post-ops leave. */
static void tile_of(int isa, const struct vox_nn_fast_conv *c, int64_t ob, int64_t ow, int64_t *ot,
                    int64_t *xt)
{
    const int64_t regs = (isa == VOX_ISA_AVX512 ? 32 : 16) - post_regs(c);
    const int64_t most = isa == VOX_ISA_AVX512 ? 3 : 2;
    *ot = ob <= most ? ob : ob % most == 0 ? most : ob % 2 == 0 ? 2 : most;
    int64_t cap = (regs - *ot - 1) / *ot;
    *xt = cdiv(ow, cdiv(ow, cap));
}

/* Bias (per output channel), residual (a tensor with the output's strides) and activation
 * post-ops; the channel is block `ch` (stride b) and lane `lane` (stride 1; -1: b is 1). */
static void add_post(struct vox_nest *n, int ch, int lane, int64_t b, bool bias, bool residual,
                     enum vox_nn_act act)
{
    if (bias) {
        struct vox_nest_eltwise *e = &n->post[n->npost++];
        e->kind = VOX_NEST_BIAS;
        e->strides[ch] = b;
        if (lane >= 0)
            e->strides[lane] = 1;
    }
    if (residual) {
        struct vox_nest_eltwise *e = &n->post[n->npost++];
        e->kind = VOX_NEST_BIAS;
        memcpy(e->strides, n->strides[VOX_NEST_C], sizeof e->strides);
    }
    static const int kind[VOX_ACT_COUNT] = {
        -1, VOX_NEST_RELU, VOX_NEST_ELU, VOX_NEST_SIGMOID, VOX_NEST_TANH, -1};
    if (kind[act] >= 0)
        n->post[n->npost++].kind = (enum vox_nest_eltwise_kind)kind[act];
}

/* Input channels per pass of the planar nest over an output row. With all of them, a tile's
 * reduction reads channels x kz x ky input rows at plane strides, which are multiples of
 * 64 KiB for power-of-two patches and fall into the same L2 sets: 24 -> 24 3x3x3 on
 * 20x256x256 ran at 62 % of peak (2 threads). A wider input goes 12 channels and one kz at a
 * time (the partial sums through the output row, in L1): 78-86 %. Narrower ones read every
 * row in one pass (8 -> 8 5x5x5: 82 % so, 72 % by kz). */
enum { PLANAR_CHANNELS = 12 };

/* Planar tensors (blocks of 1: (C, Z, Y, X), for channel counts that fill vector blocks
 * badly, 24 or 36 of 16 lanes): vectors along x, a register tile of XV x-vectors times KT
 * output channels; per input channel and tap, XV (unaligned) input vectors and KT weight
 * broadcasts feed XV*KT FMAs, so every lane does useful work whatever the channel count:
 *     z:1 y:1 k:KT c:12 x:XV*lanes c:1 kz:1 ky:1 kx:1 k:1 x:1
 * The weights keep PyTorch's layout (k, c, taps). */
static void planar_nest(const struct vox_nn_fast_conv *c, int isa, struct vox_nest *n)
{
    const int64_t K = c->cout, C = c->cin, taps = c->k[0] * c->k[1] * c->k[2];
    const int64_t *in = c->in, *out = c->out, *d = c->dil;
    const int64_t ivol = in[0] * in[1] * in[2], ovol = out[0] * out[1] * out[2];
    vox_nest_init(n);
    int z = dim3(n, "z", out[0], out[1] * out[2], in[1] * in[2], 0);
    int y = dim3(n, "y", out[1], out[2], in[2], 0);
    int x = dim3(n, "x", out[2], 1, 1, 0);
    int o = dim3(n, "k", K, ovol, 0, C * taps);
    int i = dim3(n, "c", C, 0, ivol, taps);
    int kz = dim3(n, "kz", c->k[0], 0, d[0] * in[1] * in[2], c->k[1] * c->k[2]);
    int ky = dim3(n, "ky", c->k[1], 0, d[1] * in[2], c->k[2]);
    int kx = dim3(n, "kx", c->k[2], 0, d[2], 1);
    const int64_t lanes = isa == VOX_ISA_AVX512 ? 16 : 8;
    const int64_t regs = (isa == VOX_ISA_AVX512 ? 32 : 16) - post_regs(c);
    const int64_t most = isa == VOX_ISA_AVX512 ? 3 : 2, xv_all = cdiv(out[2], lanes);
    const int64_t xv = xv_all < most ? xv_all : most;
    const int64_t kt = cdiv(K, cdiv(K, (regs - xv - 1) / xv));
    /* over 12 input channels: z:1 y:1 k:KT c:12 kz:1 x:XV*lanes c:1 ky:1 kx:1 k:1 x:1 */
    const bool split = C > PLANAR_CHANNELS;
    const int64_t loops[][2] = {{z, 1},
                                {y, 1},
                                {o, kt},
                                {i, PLANAR_CHANNELS},
                                {split ? kz : x, split ? 1 : xv * lanes},
                                {split ? x : i, split ? xv * lanes : 1},
                                {split ? i : kz, 1},
                                {ky, 1},
                                {kx, 1},
                                {o, 1},
                                {x, 1}};
    add_loops(n, c, K * ovol, C * ivol, out[0], out[1], loops,
              (int)(sizeof loops / sizeof loops[0]));
    add_post(n, o, -1, 1, c->bias, c->residual, c->act);
}

/* A conv to at most 4 channels (an affinity output layer) would fill 3 of 16 output lanes:
 * instead the vectors run along the input lanes bi, a reduction (lane partial sums, added
 * across the lanes at the end), and the register tile is XT voxels x all output channels. The
 * weights are packed (ib, co, taps, bi) and only the output's first cout lanes are written,
 * so only where nothing but output layers read it (lanes_free): a conv reading the others
 * would multiply whatever they hold, NaN included, by its zero weights. */
static bool narrow_out(const struct vox_nn_fast_conv *c)
{
    return c->lanes_free && !c->residual && c->cout <= 4 && c->n == 1 && c->bin == c->b && c->b > 1;
}

static void narrow_out_nest(const struct vox_nn_fast_conv *c, struct vox_nest *n)
{
    const int64_t b = c->b, bin = c->bin, K = c->cout, ib = cdiv(c->cin, bin);
    const int64_t taps = c->k[0] * c->k[1] * c->k[2];
    const int64_t *in = c->in, *out = c->out, *d = c->dil;
    vox_nest_init(n);
    int z = dim3(n, "z", out[0], out[1] * out[2] * b, in[1] * in[2] * bin, 0);
    int y = dim3(n, "y", out[1], out[2] * b, in[2] * bin, 0);
    int x = dim3(n, "x", out[2], b, bin, 0);
    int o = dim3(n, "co", K, 1, 0, taps * bin);
    int i = dim3(n, "ib", ib, 0, in[0] * in[1] * in[2] * bin, K * taps * bin);
    int bi = dim3(n, "bi", bin, 0, 1, 1);
    int kz = dim3(n, "kz", c->k[0], 0, d[0] * in[1] * in[2] * bin, c->k[1] * c->k[2] * bin);
    int ky = dim3(n, "ky", c->k[1], 0, d[1] * in[2] * bin, c->k[2] * bin);
    int kx = dim3(n, "kx", c->k[2], 0, d[2] * bin, bin);
    const int64_t xt = cdiv(out[2], cdiv(out[2], 24 / K));
    const int64_t loops[][2] = {{z, 1},  {y, 1},  {x, xt}, {o, K}, {i, 1}, {kz, 1},
                                {ky, 1}, {kx, 1}, {x, 1},  {o, 1}, {bi, 1}};
    for (size_t k = 0; k < sizeof loops / sizeof loops[0]; k++)
        vox_nest_loop_add(n, (int)loops[k][0], loops[k][1]);
    add_post(n, o, -1, 1, c->bias, false, c->act);
}

void vox_nn_fast_conv_nest(const struct vox_nn_fast_conv *c, int isa, struct vox_nest *n)
{
    if (narrow_out(c))
        return narrow_out_nest(c, n);
    if (c->b == 1 && c->bin == 1)
        return planar_nest(c, isa, n);
    const int64_t b = c->b, bin = c->bin;
    const int64_t ib = cdiv(c->cin, bin), ob = cdiv(c->cout, b);
    const int64_t taps = c->k[0] * c->k[1] * c->k[2], ws = bin * b;
    const int64_t *in = c->in, *out = c->out, *d = c->dil;
    vox_nest_init(n);
    int z = dim3(n, "z", out[0], out[1] * out[2] * b, in[1] * in[2] * bin, 0);
    int y = dim3(n, "y", out[1], out[2] * b, in[2] * bin, 0);
    int x = dim3(n, "x", out[2], b, bin, 0);
    int o = dim3(n, "ob", ob, out[0] * out[1] * out[2] * b, 0, ib * taps * ws);
    int bo = dim3(n, "bo", b, 1, 0, 1);
    int i = dim3(n, "ib", ib, 0, in[0] * in[1] * in[2] * bin, taps * ws);
    int bi = dim3(n, "bi", bin, 0, 1, b);
    int kz = dim3(n, "kz", c->k[0], 0, d[0] * in[1] * in[2] * bin, c->k[1] * c->k[2] * ws);
    int ky = dim3(n, "ky", c->k[1], 0, d[1] * in[2] * bin, c->k[2] * ws);
    int kx = dim3(n, "kx", c->k[2], 0, d[2] * bin, ws);
    int64_t ot, xt;
    tile_of(isa, c, ob, out[2], &ot, &xt);
    const int64_t loops[][2] = {{z, 1},  {y, 1},  {o, ot}, {x, xt}, {i, 1}, {kz, 1},
                                {ky, 1}, {kx, 1}, {bi, 1}, {o, 1},  {x, 1}, {bo, 1}};
    add_loops(n, c, ob * out[0] * out[1] * out[2] * b, ib * in[0] * in[1] * in[2] * bin, out[0],
              out[1], loops, (int)(sizeof loops / sizeof loops[0]));
    add_post(n, o, bo, b, c->bias, c->residual, c->act);
}

void vox_nn_fast_deconv_nest(const struct vox_nn_fast_conv *c, int isa, struct vox_nest *n)
{
    const int64_t b = c->b, bin = c->bin;
    const int64_t ib = cdiv(c->cin, bin), ob = cdiv(c->cout, b);
    const int64_t taps = c->k[0] * c->k[1] * c->k[2], ws = bin * b;
    const int64_t *in = c->in, *k = c->k;
    const int64_t oy = in[1] * k[1], ox = in[2] * k[2], ovol = in[0] * k[0] * oy * ox;
    vox_nest_init(n);
    int z = dim3(n, "z", in[0], k[0] * oy * ox * b, in[1] * in[2] * bin, 0);
    int a = dim3(n, "a", k[0], oy * ox * b, 0, k[1] * k[2] * ws);
    int y = dim3(n, "y", in[1], k[1] * ox * b, in[2] * bin, 0);
    int bb = dim3(n, "b", k[1], ox * b, 0, k[2] * ws);
    int x = dim3(n, "x", in[2], k[2] * b, bin, 0);
    int cc = dim3(n, "c", k[2], b, 0, ws);
    int o = dim3(n, "ob", ob, ovol * b, 0, ib * taps * ws);
    int bo = dim3(n, "bo", b, 1, 0, 1);
    int i = dim3(n, "ib", ib, 0, in[0] * in[1] * in[2] * bin, taps * ws);
    int bi = dim3(n, "bi", bin, 0, 1, b);
    int64_t ot, xt;
    tile_of(isa, c, ob, in[2], &ot, &xt);
    const int64_t loops[][2] = {{z, 1},  {a, 1}, {y, 1},  {bb, 1}, {cc, 1}, {o, ot},
                                {x, xt}, {i, 1}, {bi, 1}, {o, 1},  {x, 1},  {bo, 1}};
    add_loops(n, c, ob * ovol * b, ib * in[0] * in[1] * in[2] * bin, in[0], 0, loops,
              (int)(sizeof loops / sizeof loops[0]));
    add_post(n, o, bo, b, c->bias, c->residual, c->act);
}

void vox_nn_fast_pack(const struct vox_nn_fast_conv *c, bool deconv, const float *w,
                      const float *bias, float *w_out, float *bias_out)
{
    const int64_t b = c->b, bin = c->bin, K = c->cout, C = c->cin;
    const int64_t ib = cdiv(C, bin), ob = cdiv(K, b), taps = c->k[0] * c->k[1] * c->k[2];
    const bool narrow = !deconv && narrow_out(c);
    memset(w_out, 0, (size_t)vox_nn_fast_pack_elems(c) * sizeof *w_out);
    for (int64_t k = 0; k < K; k++)
        for (int64_t ci = 0; ci < C; ci++)
            for (int64_t t = 0; t < taps; t++) {
                int64_t o = narrow ? (((ci / bin) * K + k) * taps + t) * bin + ci % bin
                                   : (((k / b) * ib + ci / bin) * taps + t) * bin * b +
                                         (ci % bin) * b + k % b;
                /* conv weights are (out, in, taps), deconv weights (in, out, taps) */
                w_out[o] = deconv ? w[(ci * K + k) * taps + t] : w[(k * C + ci) * taps + t];
            }
    for (int64_t k = 0; k < ob * b; k++)
        bias_out[k] = bias && k < K ? bias[k] : 0.0f;
}

int64_t vox_nn_fast_pack_elems(const struct vox_nn_fast_conv *c)
{
    return cdiv(c->cout, c->b) * cdiv(c->cin, c->bin) * c->k[0] * c->k[1] * c->k[2] * c->bin * c->b;
}
