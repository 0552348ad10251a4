/*
 * fast.c: the fast forward pass: plan a net for a patch shape once (layouts, algorithms,
 * compiled kernels, packed weights, buffers by liveness), then run it with no allocation.
 *
 * Tensors live in the blocked channel layout (ceil(C/b), Z, Y, X, b), b = the vector width of
 * the context's ISA (PZnet, reference note znn.md section 3). A network input of fewer
 * channels than b that only convolutions read is stored channels-last (b = C), so the input
 * layer runs its own narrow nest instead of padding 1 channel to 16; a tensor whose channel
 * count fills blocks badly (24 or 36 of 16 lanes, 8) is planar, b = 1, where its producer and
 * readers allow (plan_blocks), and its convs run the planar nest (vectors along x).
 *
 * Algorithms, per layer:
 *   conv, deconv  one JIT loop nest (fast_conv.c) with bias and activation fused; same padding
 *                 runs the nest on a zero-bordered copy of the input (one scratch buffer);
 *   large convs   FFT convolution by overlap-save tiles (fast_fft.c) where the cost model says
 *                 it is cheaper: the direct nest's flops (output lanes padded to the block) at
 *                 35 % of peak against the FFT's transforms, spectral products and kernel
 *                 spectra streamed per group of tiles (its own model, fast_fft.c), and only
 *                 while its spectra and buffers stay within 8x the layer's input and output
 *                 (ZNNi's choice, note znn.md 2.5/7.2, by a closed-form model instead of
 *                 exhaustive measurement);
 *   3x3x3, 1x3x3  Winograd (fast_wino.c) where the model says it is cheaper: its
 *                 products' flops at the direct nest's rate plus the floats its transforms
 *                 move at 5 % of peak (same machine); where two algorithms' model times lie
 *                 within 4x, a measurement on a slab of the layer decides (fast_tune.c);
 *   the rest      blocked C passes (fast_ops.c); inputs are packed from (1, C, Z, Y, X), outputs
 *                 unpacked into plan-owned (1, C, Z, Y, X) tensors.
 * Max-pooling fragments (mpf, ZNNi) make a tensor's batch N > 1: the passes treat the entries
 * as more channel blocks, the conv nests get an N dimension, FFT and Winograd convs number
 * their tiles over the entries.
 * Buffers: a tensor's buffer is free again once the last layer reading it has run; a new tensor
 * takes the smallest free buffer that fits, else grows the largest free one (as forward.c).
 * The same placement is computed without allocating by vox_nn_fast_estimate, which is what
 * the patch planner of vox infer sizes patches with.
 */
#include "fast.h"

#include <limits.h>
#include <math.h>
#include <string.h>

/* Per layer: how it runs. */
struct fast_layer {
    struct vox_nn_fast_conv cv;
    struct vox_kernel *kern;  /* conv, deconv */
    struct vox_nn_fft *fft;   /* a conv run by FFT instead */
    struct vox_nn_wino *wino; /* or by Winograd */
    float *wp, *bp;           /* packed weights and bias, owned */
    bool pad;                 /* same conv: run on the padded scratch copy */
    int64_t padlo[3];
    double seconds; /* in the last forward pass */
};

/* The placement: per layer its block and buffer, the buffers' sizes, the scratch size. */
struct layout {
    int64_t *blk;
    int *where;
    unsigned char *algo; /* per conv: VOX_NN_CONV_DIRECT, _FFT or _WINOGRAD */
    enum vox_nn_algo_source *src;
    double (*ms)[VOX_NN_ALGOS]; /* measured direct, FFT, Winograd ms (0: not measured) */
    size_t *buf_bytes;
    int *fuse; /* a conv: the add layer fused into its output stage, or the pool layer it runs
                * slab by slab (else -1); that add layer: -2 (it runs nothing and shares the
                * conv's buffer); that pool layer: -3 (it runs nothing; the conv has no
                * buffer, where = -1) */
    int n_buf;
    int64_t scratch_elems;
    int64_t slab_elems; /* per thread: a conv's slab before its fused pool */
    int threads;
    size_t weight_bytes, out_bytes;
};

struct vox_nn_fast {
    struct vox_ctx *ctx;
    const struct vox_net *net;
    struct vox_nn_dims *dims;
    struct layout lay;
    struct vox_nn_bt *t;
    struct fast_layer *fl;
    void **buf;
    float *scratch;
    float *slab;            /* lay.threads slabs of lay.slab_elems */
    struct vox_tensor *out; /* per output, (1, C, Z, Y, X) */
    int isa;
};

static int64_t cdiv(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

static int64_t lanes_of(int isa)
{
    return isa == VOX_ISA_AVX512 ? 16 : 8;
}

static void layout_free(struct vox_ctx *ctx, struct layout *l)
{
    vox_free(ctx, l->blk);
    vox_free(ctx, l->where);
    vox_free(ctx, l->algo);
    vox_free(ctx, l->src);
    vox_free(ctx, l->ms);
    vox_free(ctx, l->fuse);
    vox_free(ctx, l->buf_bytes);
    memset(l, 0, sizeof *l);
}

/* A channel count that fills blocks of `lanes` badly: over 1/9 of the lanes idle. */
static bool fills_badly(int64_t c, int64_t lanes)
{
    return cdiv(c, lanes) * lanes * 8 > c * 9;
}

/* The block of input layer i's tensor when only convs read it: 1 (planar) where its channels
 * fill blocks badly and, for a narrow input (under a block), where a conv reading it writes a
 * channel count that fills blocks badly (the planar nest needs a planar input); else C for a
 * narrow input (channels last); else the vector width. */
static int64_t block_of(const struct vox_net *net, int i, int64_t lanes)
{
    const struct vox_nn_layer *l = &net->layers[i];
    const int64_t c = l->channels;
    if (l->kind != VOX_NN_INPUT || (c >= lanes && !fills_badly(c, lanes)))
        return lanes;
    bool planar = c == 1 || c >= lanes;
    for (int j = i + 1; j < net->n_layers; j++)
        for (int k = 0; k < net->layers[j].n_in; k++) {
            const struct vox_nn_layer *r = &net->layers[j];
            if (r->in[k] != i)
                continue;
            if (r->kind != VOX_NN_CONV && r->kind != VOX_NN_DECONV)
                return lanes;
            planar = planar || (r->kind == VOX_NN_CONV && fills_badly(r->channels, lanes));
        }
    return planar ? 1 : c;
}

/* The passes whose output keeps its input's block, lane for lane, and which may run on planar
 * tensors (blocks of 1); mpf, interleave and upsample also keep the block but stay blocked. */
static bool keeps_block(enum vox_nn_kind k)
{
    return k == VOX_NN_POOL || k == VOX_NN_MAXFILTER || k == VOX_NN_CROP || k == VOX_NN_ADD ||
           k == VOX_NN_ACT || k == VOX_NN_OUTPUT || k == VOX_NN_MPF || k == VOX_NN_INTERLEAVE ||
           k == VOX_NN_UPSAMPLE;
}
static bool planar_ok(enum vox_nn_kind k)
{
    return keeps_block(k) && k != VOX_NN_MPF && k != VOX_NN_INTERLEAVE && k != VOX_NN_UPSAMPLE;
}

/* An output layer with a pointwise act is fused into the final unpacking: its tensor is its
 * input's (same buffer, held to the end), and no pass runs for it. */
static bool fused_output(const struct vox_nn_layer *l)
{
    return l->kind == VOX_NN_OUTPUT && l->act != VOX_ACT_SOFTMAX;
}

/* An output that is a view of its input's planar tensor: a fused output with no activation of
 * a planar tensor of one batch entry is already (C, Z, Y, X), so nothing is unpacked. */
static bool output_view(const struct vox_net *net, const struct vox_nn_dims *dims,
                        const int64_t *blk, int i)
{
    const struct vox_nn_layer *l = &net->layers[i];
    return fused_output(l) && l->act == VOX_ACT_LINEAR && blk[l->in[0]] == 1 && dims[i].batch == 1;
}

static int pick_buffer(struct layout *lay, const int *free_after, size_t need, int i)
{
    int fit = -1, big = -1;
    for (int b = 0; b < lay->n_buf; b++) {
        if (free_after[b] >= i)
            continue;
        if (lay->buf_bytes[b] >= need && (fit < 0 || lay->buf_bytes[b] < lay->buf_bytes[fit]))
            fit = b;
        if (big < 0 || lay->buf_bytes[b] > lay->buf_bytes[big])
            big = b;
    }
    int b = fit >= 0 ? fit : big >= 0 ? big : lay->n_buf++;
    if (lay->buf_bytes[b] < need)
        lay->buf_bytes[b] = need;
    return b;
}

static size_t bt_bytes(const struct vox_nn_dims *d, int64_t blk)
{
    return (size_t)(d->batch * cdiv(d->shape[0], blk) * blk * d->shape[1] * d->shape[2] *
                    d->shape[3]) *
           sizeof(float);
}

/* Whether only output statements read tensor i (its padding lanes and its layout
 * concern nobody else). */
static bool read_by_outputs_only(const struct vox_net *net, int i)
{
    for (int j = 0; j < net->n_layers; j++)
        for (int k = 0; k < net->layers[j].n_in; k++)
            if (net->layers[j].in[k] == i && net->layers[j].kind != VOX_NN_OUTPUT)
                return false;
    return true;
}

/* Weight floats a layer packs into (0 for layers without parameters). */
static int64_t conv_desc(const struct vox_net *net, const struct vox_nn_dims *dims,
                         const struct layout *lay, int i, struct vox_nn_fast_conv *cv)
{
    const struct vox_nn_layer *l = &net->layers[i];
    memset(cv, 0, sizeof *cv);
    if (l->kind != VOX_NN_CONV && l->kind != VOX_NN_DECONV)
        return 0;
    const int src = l->in[0];
    cv->n = dims[i].batch;
    cv->cin = dims[src].shape[0];
    cv->cout = l->channels;
    cv->bin = lay->blk[src];
    cv->b = lay->blk[i];
    cv->bias = l->bias || l->bn;
    cv->act = l->act;
    cv->lanes_free = read_by_outputs_only(net, i); /* an output unpacks its first lanes */
    for (int a = 0; a < 3; a++) {
        cv->k[a] = l->kernel[a];
        cv->dil[a] = l->kind == VOX_NN_CONV ? l->dilation[a] : 1;
        cv->out[a] = dims[i].shape[1 + a];
        cv->in[a] = dims[src].shape[1 + a];
        if (l->kind == VOX_NN_CONV && l->same)
            cv->in[a] += (l->kernel[a] - 1) * l->dilation[a];
    }
    return vox_nn_fast_pack_elems(cv);
}

/* Winograd's products run at about the direct nest's rate (they are the same kind of nest);
 * its transforms are memory-bound passes over cache-resident blocks (floats per second,
 * relative to the direct nest's flops per second), measured on a 2-core AVX-512 EPYC. */
static const double WINO_GEMM_RATE = 0.35, WINO_TR_RATE = 0.05;

void vox_nn_conv_model(const struct vox_nn_fast_conv *cv, double t_out[VOX_NN_ALGOS])
{
    double vol = (double)(cv->n * cv->out[0] * cv->out[1] * cv->out[2]);
    double direct = 2.0 * (double)(cdiv(cv->cout, cv->b) * cv->b * cv->cin) *
                    (double)(cv->k[0] * cv->k[1] * cv->k[2]) * vol;
    t_out[0] = direct / 0.35;
    t_out[1] = vox_nn_fft_time(cv);
    t_out[2] = HUGE_VAL;
    if (cv->b && vox_nn_wino_ok(cv)) {
        double tr, gemm = vox_nn_wino_flops(cv, &tr);
        t_out[2] = gemm / WINO_GEMM_RATE + tr / WINO_TR_RATE;
    }
}

/* How the planner decides a conv (see the file comment): forced, or the model where the best
 * time is more than MEASURE_BAND times below the others' (FFT: only while it would not hold
 * too much), else a measurement decides among the algorithms within the band. */
enum { MEASURE_BAND = 4 };

struct choice {
    int model;     /* the model's pick, an index: 0 direct, 1 FFT, 2 Winograd */
    unsigned mask; /* the algorithms to measure (bit i: index i); 0: none */
};

static struct choice conv_choice(const struct vox_nn_fast_conv *cv, int threads)
{
    struct choice c = {0};
    double t[VOX_NN_ALGOS];
    vox_nn_conv_model(cv, t);
    int64_t n = cv->in[0] * cv->in[1] * cv->in[2];
    double act = (double)((cdiv(cv->cin, cv->bin) * cv->bin + cdiv(cv->cout, cv->b) * cv->b) * n) *
                 sizeof(float);
    if ((double)vox_nn_fft_bytes(cv, threads) > 8.0 * act + (double)(2 << 20))
        t[1] = HUGE_VAL; /* FFT's cached spectra and buffers within 8x the activations (and
                            2 MiB: the per-thread transform buffers of a small layer) */
    for (int a = 1; a < VOX_NN_ALGOS; a++)
        if (t[a] < t[c.model])
            c.model = a;
    for (int a = 0; a < VOX_NN_ALGOS; a++)
        if (t[a] < MEASURE_BAND * t[c.model])
            c.mask |= 1u << a;
    if ((c.mask & (c.mask - 1)) == 0)
        c.mask = 0;
    return c;
}

/* Sets lay->algo[i] and its source for conv layer i; with a tune, measures undecided layers;
 * *both: the algorithms (bit i: index i) whose memory the estimate should hold, besides the
 * chosen one. */
static enum vox_status pick_algo(struct vox_ctx *ctx, const struct vox_nn_layer *l,
                                 const struct vox_nn_fast_conv *cv, enum vox_nn_conv_algo algo,
                                 struct vox_nn_tune *tune, struct layout *lay, int i,
                                 unsigned *both)
{
    int threads = vox_ctx_threads(ctx) > 0 ? vox_ctx_threads(ctx) : 1;
    *both = 0;
    if (l->kind != VOX_NN_CONV) {
        lay->src[i] = l->kind == VOX_NN_DECONV ? VOX_NN_ALGO_MODEL : VOX_NN_ALGO_NONE;
        return VOX_OK;
    }
    if (algo != VOX_NN_CONV_AUTO) {
        bool wino = algo == VOX_NN_CONV_WINOGRAD;
        lay->algo[i] = (unsigned char)(wino && !vox_nn_wino_ok(cv) ? VOX_NN_CONV_DIRECT : algo);
        lay->src[i] = VOX_NN_ALGO_FORCED;
        return VOX_OK;
    }
    struct choice c = conv_choice(cv, threads);
    lay->algo[i] = (unsigned char)(VOX_NN_CONV_DIRECT + c.model);
    lay->src[i] = VOX_NN_ALGO_MODEL;
    *both = c.mask;
    if (!c.mask || !tune || vox_ctx_cpu(ctx)->isa == VOX_ISA_REF)
        return VOX_OK; /* the interpreter is no JIT nest to time */
    int64_t padlo[3];
    for (int a = 0; a < 3; a++)
        padlo[a] = l->same ? (l->kernel[a] - 1) * l->dilation[a] / 2 : 0;
    enum vox_status s = vox_nn_tune_times(tune, ctx, cv, padlo, c.mask, lay->ms[i], &lay->src[i]);
    if (s != VOX_OK)
        return s;
    int best = -1;
    for (int a = 0; a < VOX_NN_ALGOS; a++)
        if ((c.mask >> a & 1) && (best < 0 || lay->ms[i][a] < lay->ms[i][best]))
            best = a;
    lay->algo[i] = (unsigned char)(VOX_NN_CONV_DIRECT + best);
    return VOX_OK;
}

/* Adds conv layer i's weights (or spectra, or transformed weights) and scratch for the
 * algorithms in mask (bit i: index i): the most any of them holds. */
static void count_conv(const struct vox_nn_layer *l, const struct vox_nn_fast_conv *cv, int64_t wn,
                       int threads, unsigned mask, struct layout *lay)
{
    bool direct = mask & 1;
    size_t wd =
        direct ? (size_t)(wn + cdiv(cv->cout, cv->b ? cv->b : 1) * cv->b) * sizeof(float) : 0;
    size_t wf = mask & 2 ? vox_nn_fft_bytes(cv, threads) : 0;
    size_t ww = mask & 4 ? vox_nn_wino_bytes(cv, threads) : 0;
    wd = wd > wf ? wd : wf;
    lay->weight_bytes += wd > ww ? wd : ww;
    if (l->kind == VOX_NN_CONV && l->same && direct) {
        int64_t e = cv->n * cdiv(cv->cin, cv->bin) * cv->bin * cv->in[0] * cv->in[1] * cv->in[2];
        lay->scratch_elems = e > lay->scratch_elems ? e : lay->scratch_elems;
    }
}

/* The block a planar tensor i takes instead: C for a narrow input, else the vector width. */
static int64_t unplanar(const struct vox_net *net, const struct vox_nn_dims *dims, int64_t lanes,
                        int i)
{
    const int64_t c = dims[i].shape[0];
    return net->layers[i].kind == VOX_NN_INPUT && c < lanes ? c : lanes;
}

/* Whether conv i, its input planar, should rather run by Winograd with its input and output in
 * blocks (a 1-channel input stays planar: Winograd reads it as it is): the model's Winograd
 * time there below the best it has with the planar input: the planar nest or the FFT when its
 * output is planar too (out_planar), else the blocked nest reading the planar input, or the
 * FFT. (24 -> 24 3x3x3 on 20x256x256, 2 threads: Winograd on blocks 82 ms, the planar nest
 * 92 ms; Winograd gathering from a planar input, lane by lane, 250 ms.) */
static bool wino_beats_planar(const struct vox_net *net, const struct vox_nn_dims *dims,
                              int64_t lanes, int64_t *blk, int i, bool out_planar)
{
    const int src = net->layers[i].in[0];
    const int64_t keep = blk[i], keep_src = blk[src];
    struct layout lay = {.blk = blk};
    struct vox_nn_fast_conv cv;
    double planar[VOX_NN_ALGOS], blocked[VOX_NN_ALGOS];
    blk[i] = out_planar ? 1 : lanes;
    conv_desc(net, dims, &lay, i, &cv);
    vox_nn_conv_model(&cv, planar);
    blk[i] = lanes;
    if (dims[src].shape[0] > 1)
        blk[src] = unplanar(net, dims, lanes, src);
    conv_desc(net, dims, &lay, i, &cv);
    vox_nn_conv_model(&cv, blocked);
    blk[i] = keep;
    blk[src] = keep_src;
    return blocked[2] < fmin(planar[0], planar[1]);
}

/* Every tensor's block: the vector width, C for a narrow input (block_of), or 1 (planar,
 * (C, Z, Y, X)) for a conv's output of a channel count that fills blocks badly (24 or 36 of 16
 * lanes) when its input is planar too (a 1-channel input is), and for a pass of planar inputs.
 * The planar nest (fast_conv.c) keeps every lane busy where blocks would leave a third idle.
 * Then, until nothing changes, a planar tensor read by a pass that keeps blocks but is not
 * planar goes back to blocks (an add of a planar and a blocked tensor, an mpf), and so does a
 * planar tensor computed from a blocked one. A conv that the model would rather run by
 * Winograd on blocks (wino_beats_planar) writes blocks and takes its input in blocks, unless
 * its output would be planar and more layers read it: they would turn to blocks too, and the
 * model of one conv does not see their cost (VD2D3D at 10x200x200: Winograd on the 24 -> 24
 * 1x3x3 conv1b, 6.7 against 10.8 ms by the planar nest, took blocks down the next six
 * layers: 284 -> 341 ms for the net). Winograd
 * forced everywhere it applies (it takes blocked tensors): none is planar but a 1-channel
 * input. */
static void plan_blocks(const struct vox_net *net, const struct vox_nn_dims *dims, int64_t lanes,
                        enum vox_nn_conv_algo algo, int64_t *blk)
{
    const bool planar = algo != VOX_NN_CONV_WINOGRAD;
    const int n = net->n_layers;
    for (int i = 0; i < n; i++) {
        const struct vox_nn_layer *l = &net->layers[i];
        blk[i] = block_of(net, i, lanes);
        if (!planar && blk[i] == 1 && l->channels > 1)
            blk[i] = unplanar(net, dims, lanes, i);
        if (!planar)
            continue;
        if (l->kind == VOX_NN_CONV) {
            const int src = l->in[0];
            blk[i] = blk[src] == 1 && fills_badly(dims[i].shape[0], lanes) ? 1 : lanes;
            if (blk[src] == 1 && algo == VOX_NN_CONV_AUTO &&
                (blk[i] != 1 || read_by_outputs_only(net, i)) &&
                wino_beats_planar(net, dims, lanes, blk, i, blk[i] == 1)) {
                blk[i] = lanes;
                if (dims[src].shape[0] > 1)
                    blk[src] = unplanar(net, dims, lanes, src);
            }
        } else if (planar_ok(l->kind)) {
            bool all = true;
            for (int k = 0; k < l->n_in; k++)
                all = all && blk[l->in[k]] == 1;
            blk[i] = all ? 1 : lanes;
        }
    }
    for (bool changed = true; changed;) {
        changed = false;
        for (int j = 0; j < n; j++) {
            const struct vox_nn_layer *l = &net->layers[j];
            for (int k = 0; k < l->n_in; k++) {
                const int t = l->in[k];
                if (blk[j] == 1 && blk[t] != 1 && l->kind != VOX_NN_INPUT) {
                    blk[j] = lanes; /* a planar tensor needs planar inputs */
                    changed = true;
                }
                if (keeps_block(l->kind) && blk[j] != 1 && blk[t] == 1 &&
                    net->layers[t].kind != VOX_NN_INPUT) {
                    blk[t] = lanes; /* a blocked pass needs blocked inputs */
                    changed = true;
                }
            }
        }
    }
}

/* The conv or deconv whose output stage can take add layer i (an add of two tensors): it runs
 * as a JIT nest or by Winograd (not FFT), has no activation, the add is its only reader, and
 * the add's other input is computed before it, so its output stage (the nest's post-ops, the
 * Winograd output transform) adds that input and applies the add's activation (a pass over
 * the tensor saved: the adds were 12 % of an RSUNet forward). -1 if none. */
static int fusable_add(const struct vox_net *net, const struct vox_nn_dims *dims,
                       const struct layout *lay, int i)
{
    const struct vox_nn_layer *l = &net->layers[i];
    if (l->kind != VOX_NN_ADD || l->n_in != 2 || l->act == VOX_ACT_SOFTMAX || l->in[0] == l->in[1])
        return -1;
    for (int k = 0; k < 2; k++) {
        const int c = l->in[k], o = l->in[1 - k];
        const struct vox_nn_layer *cl = &net->layers[c];
        const bool nest_or_wino = cl->kind == VOX_NN_DECONV ||
                                  (cl->kind == VOX_NN_CONV && lay->algo[c] != VOX_NN_CONV_FFT);
        if (!nest_or_wino || cl->act != VOX_ACT_LINEAR || o > c || lay->blk[o] != lay->blk[c] ||
            dims[o].batch != dims[c].batch)
            continue;
        int readers = 0;
        for (int j = c + 1; j < net->n_layers; j++)
            for (int q = 0; q < net->layers[j].n_in; q++)
                readers += net->layers[j].in[q] == c;
        if (readers == 1)
            return c;
    }
    return -1;
}

/* The pool layer conv i can take (a max-pool, stride = window, its only reader, dividing its
 * output exactly) when conv i runs as a direct nest that no measurement may replace: the conv
 * then runs window[0] output planes at a time into a per-thread slab and pools each slab into
 * its plane, so its output is never whole (n537's first conv: 3.6 GB written and read back).
 * -1 if none. */
static int fusable_pool(const struct vox_net *net, const struct vox_nn_dims *dims,
                        const struct layout *lay, int i, unsigned measured)
{
    const struct vox_nn_layer *l = &net->layers[i];
    if (l->kind != VOX_NN_CONV || lay->algo[i] != VOX_NN_CONV_DIRECT || (measured & ~1u) ||
        dims[i].batch != 1)
        return -1;
    int reader = -1, readers = 0;
    for (int j = i + 1; j < net->n_layers; j++)
        for (int q = 0; q < net->layers[j].n_in; q++)
            if (net->layers[j].in[q] == i)
                readers++, reader = j;
    if (readers != 1 || net->layers[reader].kind != VOX_NN_POOL)
        return -1;
    for (int a = 0; a < 3; a++)
        if (dims[reader].shape[1 + a] * net->layers[reader].kernel[a] != dims[i].shape[1 + a])
            return -1;
    return reader;
}

static enum vox_status layout_make(struct vox_ctx *ctx, const struct vox_net *net,
                                   const struct vox_nn_dims *dims, int isa,
                                   enum vox_nn_conv_algo algo, struct vox_nn_tune *tune,
                                   struct layout *lay)
{
    const int n = net->n_layers;
    memset(lay, 0, sizeof *lay);
    int *last = vox_alloc(ctx, (size_t)n * sizeof *last);
    int *free_after = vox_alloc(ctx, (size_t)n * sizeof *free_after);
    lay->blk = vox_alloc(ctx, (size_t)n * sizeof *lay->blk);
    lay->where = vox_alloc(ctx, (size_t)n * sizeof *lay->where);
    lay->algo = vox_calloc(ctx, (size_t)n, sizeof *lay->algo);
    lay->buf_bytes = vox_calloc(ctx, (size_t)n, sizeof *lay->buf_bytes);
    lay->src = vox_calloc(ctx, (size_t)n, sizeof *lay->src);
    lay->ms = vox_calloc(ctx, (size_t)n, sizeof *lay->ms);
    lay->fuse = vox_alloc(ctx, (size_t)n * sizeof *lay->fuse);
    enum vox_status s = VOX_OUT_OF_MEMORY;
    if (!last || !free_after || !lay->blk || !lay->where || !lay->algo || !lay->buf_bytes ||
        !lay->src || !lay->ms || !lay->fuse)
        goto done;
    for (int i = 0; i < n; i++)
        lay->fuse[i] = -1;
    for (int i = 0; i < n; i++) {
        last[i] = net->layers[i].kind == VOX_NN_OUTPUT ? INT_MAX : i;
        for (int k = 0; k < net->layers[i].n_in; k++)
            last[net->layers[i].in[k]] = i;
    }
    plan_blocks(net, dims, lanes_of(isa), algo, lay->blk);
    lay->threads = vox_ctx_threads(ctx) > 0 ? vox_ctx_threads(ctx) : 1;
    for (int i = 0; i < n; i++) {
        const struct vox_nn_layer *l = &net->layers[i];
        struct vox_nn_fast_conv cv;
        int64_t wn = conv_desc(net, dims, lay, i, &cv);
        unsigned both;
        if ((s = pick_algo(ctx, l, &cv, algo, tune, lay, i, &both)) != VOX_OK)
            goto done;
        s = VOX_OUT_OF_MEMORY;
        int chosen = lay->algo[i] ? lay->algo[i] - VOX_NN_CONV_DIRECT : 0;
        count_conv(l, &cv, wn, lay->threads, both | 1u << chosen, lay);
        int fc = fusable_add(net, dims, lay, i), fp = fusable_pool(net, dims, lay, i, both);
        if (fp >= 0) {
            const int64_t *sh = dims[i].shape;
            const int64_t *w = net->layers[fp].kernel; /* a slab: w[0] x w[1] output rows */
            int64_t slab = cdiv(sh[0], lay->blk[i]) * lay->blk[i] * w[0] * w[1] * sh[3];
            lay->fuse[i] = fp, lay->fuse[fp] = -3, lay->where[i] = -1;
            for (int k = 0; k < l->n_in; k++) /* read until the pool's output is written */
                if (lay->where[l->in[k]] >= 0 && free_after[lay->where[l->in[k]]] < fp)
                    free_after[lay->where[l->in[k]]] = fp;
            lay->slab_elems = slab > lay->slab_elems ? slab : lay->slab_elems;
        } else if (fc >= 0) {
            lay->fuse[fc] = i, lay->fuse[i] = -2;
            lay->blk[i] = lay->blk[fc], lay->where[i] = lay->where[fc];
        } else if (fused_output(l))
            lay->blk[i] = lay->blk[l->in[0]], lay->where[i] = lay->where[l->in[0]];
        else
            lay->where[i] = pick_buffer(lay, free_after, bt_bytes(&dims[i], lay->blk[i]), i);
        if (lay->where[i] >= 0)
            free_after[lay->where[i]] = last[i]; /* INT_MAX for outputs */
        if (l->kind == VOX_NN_OUTPUT && !output_view(net, dims, lay->blk, i))
            lay->out_bytes += (size_t)(dims[i].shape[0] * dims[i].shape[1] * dims[i].shape[2] *
                                       dims[i].shape[3]) *
                              sizeof(float);
    }
    s = VOX_OK;
done:
    vox_free(ctx, last);
    vox_free(ctx, free_after);
    if (s != VOX_OK)
        layout_free(ctx, lay);
    return s;
}

static size_t layout_total(const struct layout *lay)
{
    size_t sum = lay->weight_bytes + lay->out_bytes +
                 (size_t)(lay->scratch_elems + lay->threads * lay->slab_elems) * sizeof(float);
    for (int b = 0; b < lay->n_buf; b++)
        sum += lay->buf_bytes[b];
    return sum;
}

enum vox_status vox_nn_fast_estimate(struct vox_ctx *ctx, const struct vox_net *net,
                                     const int64_t patch[3], size_t *bytes_out)
{
    return vox_nn_fast_estimate_algo(ctx, net, patch, VOX_NN_CONV_AUTO, bytes_out);
}

enum vox_status vox_nn_fast_estimate_algo(struct vox_ctx *ctx, const struct vox_net *net,
                                          const int64_t patch[3], enum vox_nn_conv_algo algo,
                                          size_t *bytes_out)
{
    struct vox_nn_dims *dims = vox_calloc(ctx, (size_t)net->n_layers, sizeof *dims);
    if (!dims)
        return VOX_OUT_OF_MEMORY;
    struct layout lay;
    enum vox_status s = vox_net_shapes(ctx, net, patch, dims);
    if (s == VOX_OK &&
        (s = layout_make(ctx, net, dims, (int)vox_ctx_cpu(ctx)->isa, algo, NULL, &lay)) == VOX_OK) {
        *bytes_out = layout_total(&lay);
        layout_free(ctx, &lay);
    }
    vox_free(ctx, dims);
    return s;
}

void vox_nn_fast_destroy(struct vox_nn_fast *f)
{
    if (!f)
        return;
    struct vox_ctx *ctx = f->ctx;
    for (int i = 0; f->fl && i < f->net->n_layers; i++) {
        vox_kernel_destroy(f->fl[i].kern);
        vox_nn_fft_destroy(ctx, f->fl[i].fft);
        vox_nn_wino_destroy(ctx, f->fl[i].wino);
        vox_free(ctx, f->fl[i].wp);
        vox_free(ctx, f->fl[i].bp);
    }
    for (int b = 0; f->buf && b < f->lay.n_buf; b++)
        vox_free(ctx, f->buf[b]);
    for (int k = 0; f->out && k < f->net->n_outputs; k++)
        vox_tensor_free(ctx, &f->out[k]);
    vox_free(ctx, f->out);
    vox_free(ctx, f->buf);
    vox_free(ctx, f->scratch);
    vox_free(ctx, f->slab);
    vox_free(ctx, f->fl);
    vox_free(ctx, f->t);
    vox_free(ctx, f->dims);
    layout_free(ctx, &f->lay);
    vox_free(ctx, f);
}

/* Packs layer i's folded weights and compiles its nest. */
static enum vox_status prepare_conv(struct vox_nn_fast *f, const struct vox_nn_plan *ref, int i)
{
    struct fast_layer *fl = &f->fl[i];
    const struct vox_nn_layer *l = &f->net->layers[i];
    struct vox_ctx *ctx = f->ctx;
    int64_t wn = conv_desc(f->net, f->dims, &f->lay, i, &fl->cv);
    const bool pooled = f->lay.fuse[i] >= 0 && f->net->layers[f->lay.fuse[i]].kind == VOX_NN_POOL;
    if (f->lay.fuse[i] >= 0 && !pooled) { /* the fused add: its other input, then its act */
        fl->cv.act = f->net->layers[f->lay.fuse[i]].act;
        fl->cv.residual = true;
    }
    const struct vox_tensor *w, *b;
    vox_nn_plan_params(ref, i, &w, &b);
    fl->pad = l->kind == VOX_NN_CONV && l->same;
    for (int a = 0; a < 3; a++)
        fl->padlo[a] = fl->pad ? (l->kernel[a] - 1) * l->dilation[a] / 2 : 0;
    if (f->lay.algo[i] == VOX_NN_CONV_FFT || f->lay.algo[i] == VOX_NN_CONV_WINOGRAD) {
        const float *bd = b ? b->data : NULL;
        enum vox_status s =
            f->lay.algo[i] == VOX_NN_CONV_FFT
                ? vox_nn_fft_create(ctx, &fl->cv, fl->padlo, w->data, bd, &fl->fft)
                : vox_nn_wino_create(ctx, &fl->cv, fl->padlo, w->data, bd, &fl->wino);
        if (s != VOX_OK)
            vox_ctx_error_prefix(ctx, "layer '%s'", l->name);
        return s;
    }
    fl->wp = vox_alloc(ctx, (size_t)wn * sizeof(float));
    fl->bp = vox_alloc(ctx, (size_t)(cdiv(fl->cv.cout, fl->cv.b) * fl->cv.b) * sizeof(float));
    if (!fl->wp || !fl->bp)
        return VOX_OUT_OF_MEMORY;
    bool deconv = l->kind == VOX_NN_DECONV;
    vox_nn_fast_pack(&fl->cv, deconv, w->data, b ? b->data : NULL, fl->wp, fl->bp);
    struct vox_nest nest;
    struct vox_nn_fast_conv cv = fl->cv; /* pooled: a slab of the pool window's z and y rows,
                                            the input's strides kept; threads split the slabs */
    for (int a = 0; a < 2 && pooled; a++)
        cv.out[a] = f->net->layers[f->lay.fuse[i]].kernel[a];
    const struct vox_kernel_options one = {.threads = 1};
    if (deconv)
        vox_nn_fast_deconv_nest(&cv, f->isa, &nest);
    else
        vox_nn_fast_conv_nest(&cv, f->isa, &nest);
    enum vox_status s = vox_nest_compile(ctx, &nest, pooled ? &one : NULL, &fl->kern);
    if (s != VOX_OK)
        vox_ctx_error_prefix(ctx, "layer '%s'", l->name);
    return s;
}

static enum vox_status alloc_tensors(struct vox_nn_fast *f)
{
    struct vox_ctx *ctx = f->ctx;
    const struct vox_net *net = f->net;
    f->buf = vox_calloc(ctx, (size_t)f->lay.n_buf, sizeof *f->buf);
    f->out = vox_calloc(ctx, (size_t)net->n_outputs, sizeof *f->out);
    if (!f->buf || !f->out)
        return VOX_OUT_OF_MEMORY;
    for (int b = 0; b < f->lay.n_buf; b++)
        if (!(f->buf[b] = vox_alloc(ctx, f->lay.buf_bytes[b])))
            return VOX_OUT_OF_MEMORY;
    if (f->lay.scratch_elems &&
        !(f->scratch = vox_alloc(ctx, (size_t)f->lay.scratch_elems * sizeof(float))))
        return VOX_OUT_OF_MEMORY;
    if (f->lay.slab_elems &&
        !(f->slab = vox_alloc(ctx, (size_t)(f->lay.threads * f->lay.slab_elems) * sizeof(float))))
        return VOX_OUT_OF_MEMORY;
    for (int i = 0; i < net->n_layers; i++) {
        const int64_t *sh = f->dims[i].shape;
        f->t[i] = (struct vox_nn_bt){.data = f->lay.where[i] >= 0 ? f->buf[f->lay.where[i]] : NULL,
                                     .n = f->dims[i].batch,
                                     .c = sh[0],
                                     .blk = f->lay.blk[i],
                                     .s = {sh[1], sh[2], sh[3]}};
    }
    for (int k = 0; k < net->n_outputs; k++) {
        const int o = vox_net_output(net, k);
        const int64_t *sh = f->dims[o].shape;
        int64_t shape[5] = {1, sh[0], sh[1], sh[2], sh[3]};
        if (output_view(net, f->dims, f->lay.blk, o)) { /* a view of the held tensor */
            struct vox_tensor *t = &f->out[k];
            *t = (struct vox_tensor){.dtype = VOX_F32, .rank = 5, .data = f->t[o].data};
            for (int a = 4; a >= 0; a--) {
                t->shape[a] = shape[a];
                t->strides[a] = a == 4 ? 1 : t->strides[a + 1] * shape[a + 1];
            }
            continue;
        }
        enum vox_status s = vox_tensor_alloc(ctx, &f->out[k], VOX_F32, 5, shape);
        if (s != VOX_OK)
            return s;
    }
    return VOX_OK;
}

/* Whether input k can be read in place instead of packed: planar, one batch entry, C order,
 * and no output is a view of it (a fused output shares its input's tensor). */
static bool input_in_place(const struct vox_nn_fast *f, int k, const struct vox_tensor *u)
{
    const int i = vox_net_input(f->net, k);
    if (f->t[i].blk != 1 || f->t[i].n != 1 || u->strides[4] != 1)
        return false;
    for (int a = 3; a >= 1; a--)
        if (u->strides[a] != u->strides[a + 1] * u->shape[a + 1])
            return false;
    for (int j = 0; j < f->net->n_outputs; j++)
        if (f->net->layers[vox_net_output(f->net, j)].in[0] == i)
            return false;
    return true;
}

enum vox_status vox_nn_fast_create(struct vox_ctx *ctx, const struct vox_net *net,
                                   const struct vox_nn_weights *w, const int64_t patch[3],
                                   struct vox_nn_fast **fast_out)
{
    return vox_nn_fast_create_algo(ctx, net, w, patch, VOX_NN_CONV_AUTO, fast_out);
}

enum vox_status vox_nn_fast_create_algo(struct vox_ctx *ctx, const struct vox_net *net,
                                        const struct vox_nn_weights *w, const int64_t patch[3],
                                        enum vox_nn_conv_algo algo, struct vox_nn_fast **fast_out)
{
    const struct vox_nn_fast_options opt = {.algo = algo};
    return vox_nn_fast_create_opts(ctx, net, w, patch, &opt, fast_out);
}

enum vox_status vox_nn_fast_create_opts(struct vox_ctx *ctx, const struct vox_net *net,
                                        const struct vox_nn_weights *w, const int64_t patch[3],
                                        const struct vox_nn_fast_options *opt,
                                        struct vox_nn_fast **fast_out)
{
    *fast_out = NULL;
    const struct vox_nn_fast_options none = {.algo = VOX_NN_CONV_AUTO};
    if (!opt)
        opt = &none;
    struct vox_nn_fast *f = vox_calloc(ctx, 1, sizeof *f);
    struct vox_nn_plan *ref = NULL;
    if (!f)
        return VOX_OUT_OF_MEMORY;
    f->ctx = ctx;
    f->net = net;
    f->isa = (int)vox_ctx_cpu(ctx)->isa;
    enum vox_status s = VOX_OUT_OF_MEMORY;
    size_t n = (size_t)net->n_layers;
    if (!(f->dims = vox_calloc(ctx, n, sizeof *f->dims)) ||
        !(f->t = vox_calloc(ctx, n, sizeof *f->t)) || !(f->fl = vox_calloc(ctx, n, sizeof *f->fl)))
        goto fail;
    /* the reference plan for a 1-voxel-output patch folds batch norm; its tensors are tiny */
    if ((s = vox_net_shapes(ctx, net, patch, f->dims)) != VOX_OK ||
        (s = layout_make(ctx, net, f->dims, f->isa, opt->algo, opt->tune, &f->lay)) != VOX_OK ||
        (s = vox_nn_plan_params_only(ctx, net, w, &ref)) != VOX_OK)
        goto fail;
    for (int i = 0; i < net->n_layers; i++) {
        enum vox_nn_kind k = net->layers[i].kind;
        if ((k == VOX_NN_CONV || k == VOX_NN_DECONV) && (s = prepare_conv(f, ref, i)) != VOX_OK)
            goto fail;
    }
    if ((s = alloc_tensors(f)) != VOX_OK)
        goto fail;
    vox_nn_plan_destroy(ref);
    *fast_out = f;
    return VOX_OK;
fail:
    vox_nn_plan_destroy(ref);
    vox_nn_fast_destroy(f);
    return s;
}

struct slab_job {
    struct vox_nn_fast *f;
    int i;
    const float *src;
};

/* Slabs [lo, hi) of a conv fused with its pool (a slab: the pool window's z and y extent of
 * output rows, small enough to stay in L2): the nest into the thread's slab, then the pool of
 * each channel block into its row of the pool's output. */
static void slab_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct slab_job *j = arg;
    const struct vox_nn_fast *f = j->f;
    const struct fast_layer *fl = &f->fl[j->i];
    const struct vox_nn_layer *p = &f->net->layers[f->lay.fuse[j->i]];
    const struct vox_nn_bt *out = &f->t[f->lay.fuse[j->i]];
    const int64_t *in = fl->cv.in, *w = p->kernel, x = fl->cv.out[2], b = fl->cv.b;
    float *slab = f->slab + tid * f->lay.slab_elems;
    const float *extra[1] = {fl->bp};
    for (int64_t r = lo[0]; r < hi[0]; r++) { /* r: a row (z, y) of the pool's output */
        const int64_t z = r / out->s[1], y = r % out->s[1];
        vox_kernel_run(fl->kern, slab, j->src + (z * w[0] * in[1] + y * w[1]) * in[2] * fl->cv.bin,
                       fl->wp, extra);
        for (int64_t cb = 0; cb < vox_nn_bt_blocks(out); cb++) {
            struct vox_nn_bt si = {.data = slab + cb * w[0] * w[1] * x * b,
                                   .n = 1,
                                   .c = b,
                                   .blk = b,
                                   .s = {w[0], w[1], x}};
            struct vox_nn_bt so = {.data =
                                       out->data + (cb * vox_nn_bt_vol(out) + r * out->s[2]) * b,
                                   .n = 1,
                                   .c = b,
                                   .blk = b,
                                   .s = {1, 1, out->s[2]}};
            vox_nn_bt_max(NULL, &si, w, NULL, true, &so);
        }
    }
}

static void run_conv(struct vox_nn_fast *f, int i, struct vox_pool *pool)
{
    struct fast_layer *fl = &f->fl[i];
    const struct vox_nn_bt *in = &f->t[f->net->layers[i].in[0]];
    const float *src = in->data;
    const struct vox_nn_layer *fused = f->lay.fuse[i] >= 0 ? &f->net->layers[f->lay.fuse[i]] : NULL;
    const struct vox_nn_layer *add = fused && fused->kind == VOX_NN_ADD ? fused : NULL;
    const struct vox_nn_bt *res = add ? &f->t[add->in[0] == i ? add->in[1] : add->in[0]] : NULL;
    if (fl->wino) {
        vox_nn_wino_run(fl->wino, pool, in, res, &f->t[i]);
        return;
    }
    if (fl->fft) {
        vox_nn_fft_run(fl->fft, pool, in, &f->t[i]);
        return;
    }
    if (fl->pad) {
        struct vox_nn_bt p = {.data = f->scratch,
                              .n = in->n,
                              .c = in->c,
                              .blk = in->blk,
                              .s = {fl->cv.in[0], fl->cv.in[1], fl->cv.in[2]}};
        vox_nn_bt_pad(pool, in, fl->padlo, &p);
        src = f->scratch;
    }
    if (fused && fused->kind == VOX_NN_POOL) {
        struct slab_job j = {f, i, src};
        if (pool && vox_pool_threads(pool) > f->lay.threads)
            pool = NULL; /* a pool wider than the slabs: run on the caller's thread */
        const struct vox_nn_bt *po = &f->t[fused - f->net->layers];
        vox_pool_for(pool, (int64_t[]){po->s[0] * po->s[1], 1, 1}, (int64_t[]){16, 1, 1},
                     VOX_SCHED_DYNAMIC, slab_task, &j);
        return;
    }
    const float *extra[2] = {fl->bp, NULL}; /* the tensor operands in post-op order */
    if (res)
        extra[fl->cv.bias ? 1 : 0] = res->data;
    vox_kernel_run(fl->kern, f->t[i].data, src, fl->wp, extra);
}

static void run_layer(struct vox_nn_fast *f, int i, struct vox_pool *pool)
{
    const struct vox_nn_layer *l = &f->net->layers[i];
    struct vox_nn_bt *out = &f->t[i];
    const struct vox_nn_bt *ins[VOX_NN_MAX_IN];
    for (int k = 0; k < l->n_in; k++)
        ins[k] = &f->t[l->in[k]];
    int64_t v[3];
    switch (l->kind) {
    case VOX_NN_CONV:
    case VOX_NN_DECONV:
        run_conv(f, i, pool);
        break;
    case VOX_NN_POOL:
        if (f->lay.fuse[i] != -3) /* else done by the conv it reads */
            vox_nn_bt_max(pool, ins[0], l->kernel, NULL, true, out);
        break;
    case VOX_NN_MAXFILTER:
        vox_nn_bt_max(pool, ins[0], l->kernel, l->dilation, false, out);
        break;
    case VOX_NN_MPF:
        vox_nn_bt_mpf(pool, ins[0], l->kernel, out);
        break;
    case VOX_NN_INTERLEAVE: {
        int64_t win[VOX_NN_MPF_MAX][3];
        vox_nn_bt_interleave(pool, ins[0], vox_net_mpf_levels(f->net, l->in[0], win), win, out);
        break;
    }
    case VOX_NN_UPSAMPLE:
        vox_nn_bt_upsample(pool, ins[0], l->kernel, out);
        break;
    case VOX_NN_CROP:
        vox_nn_crop_lo(l, ins[0]->s, out->s, v);
        vox_nn_bt_crop(pool, ins[0], v, out);
        break;
    case VOX_NN_ADD:
        if (f->lay.fuse[i] != -2) /* else done by the conv it reads */
            vox_nn_bt_add(pool, ins, l->n_in, l->act, out);
        break;
    case VOX_NN_CONCAT:
        vox_nn_bt_concat(pool, ins, l->n_in, out);
        break;
    case VOX_NN_ACT:
    case VOX_NN_OUTPUT:
        if (!fused_output(l))
            vox_nn_bt_act(pool, ins[0], l->act, out);
        break;
    default:
        break;
    }
}

enum vox_status vox_nn_fast_forward(struct vox_ctx *ctx, struct vox_nn_fast *f,
                                    const struct vox_tensor *inputs)
{
    const struct vox_net *net = f->net;
    struct vox_pool *pool = vox_ctx_pool(ctx);
    for (int k = 0; k < net->n_inputs; k++) {
        int i = vox_net_input(net, k);
        const struct vox_tensor *u = &inputs[k];
        const int64_t *sh = f->dims[i].shape;
        bool ok = u->dtype == VOX_F32 && u->rank == 5 && u->shape[0] == 1;
        for (int a = 0; ok && a < 4; a++)
            ok = u->shape[1 + a] == sh[a];
        if (!ok)
            return vox_fail(ctx, VOX_INVALID_ARG,
                            "input %d ('%s') must be float32 (1, %lld, %lld, %lld, %lld)", k,
                            net->layers[i].name, (long long)sh[0], (long long)sh[1],
                            (long long)sh[2], (long long)sh[3]);
    }
    float *packed[VOX_NN_MAX_IN] = {0}; /* inputs read in place: their planned buffers */
    for (int k = 0; k < net->n_inputs; k++) {
        const int i = vox_net_input(net, k);
        double t0 = vox_time_now();
        if (k < VOX_NN_MAX_IN && input_in_place(f, k, &inputs[k])) {
            packed[k] = f->t[i].data;
            f->t[i].data = inputs[k].data; /* only read: no layer writes an input's tensor */
        } else
            vox_nn_bt_pack(pool, f->isa, &inputs[k], &f->t[i]);
        f->fl[i].seconds = vox_time_now() - t0;
    }
    for (int i = 0; i < net->n_layers; i++)
        if (net->layers[i].kind != VOX_NN_INPUT) {
            double t0 = vox_time_now();
            run_layer(f, i, pool);
            f->fl[i].seconds = vox_time_now() - t0;
        }
    for (int k = 0; k < net->n_inputs && k < VOX_NN_MAX_IN; k++)
        if (packed[k])
            f->t[vox_net_input(net, k)].data = packed[k];
    for (int k = 0; k < net->n_outputs; k++) {
        int o = vox_net_output(net, k);
        if (output_view(net, f->dims, f->lay.blk, o))
            continue; /* f->out[k] is the tensor itself */
        double t0 = vox_time_now();
        vox_nn_bt_unpack_act(pool, f->isa, &f->t[o],
                             fused_output(&net->layers[o]) ? net->layers[o].act : VOX_ACT_LINEAR,
                             &f->out[k]);
        f->fl[o].seconds += vox_time_now() - t0;
    }
    return VOX_OK;
}

const struct vox_tensor *vox_nn_fast_output(const struct vox_nn_fast *f, int i)
{
    return i >= 0 && i < f->net->n_outputs ? &f->out[i] : NULL;
}

const struct vox_nn_dims *vox_nn_fast_dims(const struct vox_nn_fast *f)
{
    return f->dims;
}

size_t vox_nn_fast_bytes(const struct vox_nn_fast *f)
{
    return layout_total(&f->lay);
}

void vox_nn_fast_layer_info(const struct vox_nn_fast *f, int layer,
                            struct vox_nn_fast_layer *info_out)
{
    const struct vox_nn_layer *l = &f->net->layers[layer];
    const struct fast_layer *fl = &f->fl[layer];
    const int fz = f->lay.fuse[layer];
    struct vox_nn_fast_layer info = {.algo = fz == -2 || fz == -3 ? "fused" : "pass",
                                     .block = f->lay.blk[layer]};
    if (l->kind == VOX_NN_INPUT)
        info.algo = "pack";
    if (fused_output(l))
        info.algo = "unpack";
    if (fl->kern) {
        const struct vox_kernel_info *ki = vox_kernel_info(fl->kern);
        const bool pooled = fz >= 0 && f->net->layers[fz].kind == VOX_NN_POOL;
        info.algo = !ki->jit  ? (pooled ? "interp+pool" : "interp")
                    : pooled  ? (fl->pad ? "jit+pad+pool" : "jit+pool")
                    : fl->pad ? "jit+pad"
                              : "jit";
        info.jit = ki->jit;
    }
    if (fl->fft)
        info.algo = "fft";
    if (fl->wino)
        info.algo = "winograd";
    info.source = f->lay.src[layer];
    info.ms_direct = f->lay.ms[layer][0];
    info.ms_fft = f->lay.ms[layer][1];
    info.ms_wino = f->lay.ms[layer][2];
    info.seconds = fl->seconds;
    info.flops = vox_nn_layer_flops(f->net, f->dims, layer);
    double tr = 0, gemm = fl->wino ? vox_nn_wino_flops(&fl->cv, &tr) : 0;
    info.work = fl->fft ? vox_nn_fft_flops(&fl->cv, NULL) : fl->wino ? gemm + tr : info.flops;
    /* a conv run into its pool writes the pool's output, not its own; the fused layer moves
     * nothing of its own */
    const int written = fz >= 0 && f->net->layers[fz].kind == VOX_NN_POOL ? fz : layer;
    info.bytes = (double)bt_bytes(&f->dims[written], f->lay.blk[written]);
    for (int k = 0; k < l->n_in; k++)
        info.bytes += (double)bt_bytes(&f->dims[l->in[k]], f->lay.blk[l->in[k]]);
    if (fz == -2 || fz == -3)
        info.bytes = 0;
    *info_out = info;
}
