/*
 * fast_train.c: the training graph's convolution kernels (struct vox_nn_kernels) as JIT loop
 * nests (vox/loop.h) on the graph's plain (N, C, Z, Y, X) tensors.
 *
 * Each kernel is one nest per batch item:
 *   conv        out[o,p] = act(b[o] + sum_{i,t} w[o,i,t] in[i, p + t*d])  (direct convolution,
 *               vectorised along x; same padding: the input copied into a zero-bordered buffer)
 *   backward    gin[i,p] += sum_{o,t'} w[o,i,K-1-t'] gpad[o, p + t'*d]: the "full" convolution
 *   data        of the zero-bordered output gradient gpad[q] = gout[q - (K-1)d + pad] with the
 *               flipped, transposed weights (B read with negative strides: no copy)
 *   backward    gw[o,i,t] += sum_p gout[o,p] in[i, p + t*d], vectorised along the output
 *   weights     channels o on a channels-last copy of gout, a slab of z planes at a time
 *   deconv      (stride = kernel) a 1x1x1 conv to O * taps channels, then depth-to-space; its
 *               adjoints are the 1x1x1 conv's on space-to-depth(gout).
 * Register tiles follow src/loop/conv.c's NCDHW schedule (x vectors times output channels).
 * The JIT splits work over an outer loop that indexes C, so each element is reduced by one
 * thread in the loop order: the same bits for any thread count (ZNN 7.1 item 9). Kernels are
 * compiled once per shape and cached (a short list, compared with vox_nest_equal).
 */
#include "fast.h"
#include "internal.h"
#include "vox/loop.h"
#include "vox/train.h"

#include <stdlib.h>
#include <string.h>

struct cached {
    struct vox_nest nest;
    struct vox_kernel *k;
};

/* A Winograd conv (fast_wino.c) for one shape, or (bw) its weight gradient (fast_wino_bw.c);
 * the weights are set at every call. */
struct cached_wino {
    struct vox_nn_fast_conv c;
    int64_t lo[3];
    bool bw;
    struct vox_nn_wino *w;
    struct vox_nn_wino_bw *g;
};

/* The scratch buffers, shared by every kernel (grown, never shrunk, so each one's size is held
 * for the whole run: slots no kernel uses at the same time share one, RSUNet's peak 2774 ->
 * 2688 B/voxel). */
enum scratch_slot {
    SC_IN,   /* the bordered or packed input (or band), or a deconv's T: its kernels border or
                pack nothing */
    SC_BIG,  /* the direct backward-weights' gout^T slab, or Winograd's transformed weights, or
                the Winograd backward-weights' partial sums */
    SC_WT,   /* the direct backward-weights' gw^T */
    SC_WORK, /* Winograd's per-thread blocks */
    SC_FFT0, /* the FFT convs' kernel spectra, a group's input and output spectra, and the
                weight gradient's per-thread blocks (vox_nn_fft_bind: every FFT conv's) */
    SC_FFT1,
    SC_FFT2,
    SC_FFT3,
    SC_PT, /* the view a phase conv writes out (phase_bind) and its folded weights */
    SC_PW,
    SC_COUNT
};

/* An FFT conv (fast_fft.c) for one shape and input offset: the layer's forward (bd false;
 * also its weight gradient) or backward-data; the weights are set at every call. f NULL: the
 * shape runs another algorithm (the model's answer, kept). */
struct cached_fft {
    struct vox_nn_fast_conv c;
    int64_t lo[3];
    bool bd;
    struct vox_nn_fft *f;
};

struct vox_nn_train_fast {
    struct vox_ctx *ctx;
    struct vox_nn_kernels table;
    struct cached *cache;
    int n_cache, cap_cache;
    struct cached_wino *wino;
    int n_wino, cap_wino;
    struct cached_fft *fft;
    int n_fft, cap_fft;
    int fft_mode;             /* vox_nn_train_fast_set_fft */
    int64_t fft_group;        /* vox_nn_train_fast_set_fft_group */
    bool no_wino;             /* VOX_TRAIN_WINO=0: direct nests only */
    int phase_mode;           /* vox_nn_train_fast_set_phase */
    float *scratch[SC_COUNT]; /* see enum scratch_slot */
    int64_t scratch_n[SC_COUNT];
    int64_t n_fast, n_fallback;
    int64_t n_phase;     /* convs run on phase views (vox_nn_train_fast_phase_count) */
    int64_t slab_floats; /* vox_nn_train_fast_set_slab */
    int64_t band_bytes;  /* vox_nn_train_fast_set_band */
};

static int64_t cdiv(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

/* Room for one more of the n elements of `size` bytes in *arr (capacity *cap, doubled when
 * full); false when memory is short. */
static bool cache_room(struct vox_ctx *ctx, void **arr, int n, int *cap, size_t size)
{
    if (n < *cap)
        return true;
    int c = *cap ? 2 * *cap : 16;
    void *a = vox_alloc(ctx, (size_t)c * size);
    if (!a)
        return false;
    if (n)
        memcpy(a, *arr, (size_t)n * size);
    vox_free(ctx, *arr);
    *arr = a;
    *cap = c;
    return true;
}

/* The compiled kernel for nest, from the cache or compiled now; NULL on failure. */
static const struct vox_kernel *kernel_for(struct vox_nn_train_fast *f, const struct vox_nest *n)
{
    for (int i = 0; i < f->n_cache; i++)
        if (vox_nest_equal(&f->cache[i].nest, n))
            return f->cache[i].k;
    if (!cache_room(f->ctx, (void **)&f->cache, f->n_cache, &f->cap_cache, sizeof *f->cache))
        return NULL;
    struct vox_kernel *k = NULL;
    if (vox_nest_compile(f->ctx, n, NULL, &k) != VOX_OK)
        return NULL;
    f->cache[f->n_cache].nest = *n;
    f->cache[f->n_cache++].k = k;
    return k;
}

/* Scratch buffer `slot` of at least n floats (grown, never shrunk); NULL on failure. */
static float *scratch(struct vox_nn_train_fast *f, int slot, int64_t n)
{
    if (n > f->scratch_n[slot]) {
        vox_free(f->ctx, f->scratch[slot]);
        f->scratch_n[slot] = 0;
        if (!(f->scratch[slot] = vox_alloc(f->ctx, (size_t)n * sizeof(float))))
            return NULL;
        f->scratch_n[slot] = n;
    }
    return f->scratch[slot];
}

/* dst (C, P) = src (C, S) shifted: dst[c, q] = src[c, q - lo] where inside src, else 0. */
struct border_job {
    float *dst;
    const float *src;
    const int64_t *P, *S, *lo;
};

/* Planes (c, z) in [lo[0], hi[0]) of a border copy: threads write disjoint planes. */
static void border_planes(void *arg, const int64_t lo_[3], const int64_t hi_[3], int tid)
{
    (void)tid;
    const struct border_job *j = arg;
    const int64_t *P = j->P, *S = j->S, *lo = j->lo;
    for (int64_t cz = lo_[0]; cz < hi_[0]; cz++) {
        const int64_t c = cz / P[0], z = cz % P[0], sz = z - lo[0];
        for (int64_t y = 0; y < P[1]; y++) {
            float *d = j->dst + (cz * P[1] + y) * P[2];
            int64_t sy = y - lo[1];
            if (sz < 0 || sz >= S[0] || sy < 0 || sy >= S[1]) {
                memset(d, 0, (size_t)P[2] * sizeof *d);
                continue;
            }
            /* x in [x0, x1) reads s[x - lo[2]]; zeros left and right of that run */
            const float *s = j->src + ((c * S[0] + sz) * S[1] + sy) * S[2];
            int64_t x0 = lo[2] > 0 ? lo[2] : 0, x1 = S[2] + lo[2];
            x1 = x1 < P[2] ? (x1 > 0 ? x1 : 0) : P[2];
            x0 = x0 < x1 ? x0 : x1;
            memset(d, 0, (size_t)x0 * sizeof *d);
            if (x1 > x0)
                memcpy(d + x0, s + x0 - lo[2], (size_t)(x1 - x0) * sizeof *d);
            memset(d + x1, 0, (size_t)(P[2] - x1) * sizeof *d);
        }
    }
}

static void border_copy(struct vox_pool *pool, float *dst, const int64_t P[3], const float *src,
                        const int64_t S[3], const int64_t lo[3], int64_t C)
{
    struct border_job j = {dst, src, P, S, lo};
    const int64_t n[3] = {C * P[0], 1, 1}, tile[3] = {1, 1, 1};
    vox_pool_for(pool, n, tile, VOX_SCHED_AFFINE, border_planes, &j);
}

static int dim4(struct vox_nest *n, const char *name, int64_t size, int64_t sc, int64_t sa,
                int64_t sb)
{
    int d = vox_nest_dim_add(n, name, size);
    n->strides[VOX_NEST_C][d] = sc;
    n->strides[VOX_NEST_A][d] = sa;
    n->strides[VOX_NEST_B][d] = sb;
    return d;
}

static void loops(struct vox_nest *n, const int64_t (*l)[2], int count)
{
    for (int k = 0; k < count; k++)
        vox_nest_loop_add(n, (int)l[k][0], l[k][1]);
}

/* The register tile of src/loop/conv.c's NCDHW schedule: xv x-vectors times kt channels, from
 * the registers left after `reserved` (the post-ops' temporaries, as in fast_conv.c). */
static void tile_of(struct vox_ctx *ctx, int64_t channels, int64_t width, int64_t reserved,
                    int64_t *kt, int64_t *xw)
{
    const bool z = vox_ctx_cpu(ctx)->isa == VOX_ISA_AVX512;
    const int64_t lanes = z ? 16 : 8, regs = (z ? 32 : 16) - reserved;
    int64_t xv = cdiv(width, lanes) < 3 ? cdiv(width, lanes) : (z ? 3 : 2);
    int64_t cap = (regs - xv - 1) / xv;
    *kt = cdiv(channels, cdiv(channels, cap));
    *xw = xv * lanes;
}

/* Bias (indexed by dimension `o`) and activation post-ops; softmax is left to the caller. */
static void post_ops(struct vox_nest *n, int o, bool bias, enum vox_nn_act act)
{
    if (bias) {
        n->post[n->npost].kind = VOX_NEST_BIAS;
        n->post[n->npost++].strides[o] = 1;
    }
    static const int kind[VOX_ACT_COUNT] = {
        -1, VOX_NEST_RELU, VOX_NEST_ELU, VOX_NEST_SIGMOID, VOX_NEST_TANH, -1};
    if (kind[act] >= 0)
        n->post[n->npost++].kind = (enum vox_nest_eltwise_kind)kind[act];
}

/* The direct-convolution nest shared by conv and its backward-data: C (CO, Q) over output
 * positions Q, A (CI, P) with P = Q + (K - 1) d, B with strides bo, bi per C / A channel and
 * tap strides ws (possibly negative). */
struct conv_shape {
    int64_t co, ci, q[3], p[3], k[3], d[3];
    int64_t bo, bi, ws[3];
    int64_t post_regs; /* vector registers the post-ops keep (post_ops) */
};

static void conv_nest(struct vox_ctx *ctx, const struct conv_shape *s, struct vox_nest *n)
{
    const int64_t *q = s->q, *p = s->p, *d = s->d;
    vox_nest_init(n);
    int z = dim4(n, "z", q[0], q[1] * q[2], p[1] * p[2], 0);
    int y = dim4(n, "y", q[1], q[2], p[2], 0);
    int x = dim4(n, "x", q[2], 1, 1, 0);
    int o = dim4(n, "o", s->co, q[0] * q[1] * q[2], 0, s->bo);
    int i = dim4(n, "i", s->ci, 0, p[0] * p[1] * p[2], s->bi);
    int a = dim4(n, "a", s->k[0], 0, d[0] * p[1] * p[2], s->ws[0]);
    int b = dim4(n, "b", s->k[1], 0, d[1] * p[2], s->ws[1]);
    int c = dim4(n, "c", s->k[2], 0, d[2], s->ws[2]);
    int64_t kt, xw;
    tile_of(ctx, s->co, q[2], s->post_regs, &kt, &xw);
    /* as the inference path's planar nest (src/nn/fast_conv.c, planar_nest): over ib input
     * channels, ib and one kz per pass over the output row (L2 set aliasing of power-of-two
     * planes); fewer than 8 planes: y outermost, so that threads share a thin patch. ib is 12
     * (the inference path's) with AVX-512 and 4 with AVX2, where an x run is one line per
     * input row: VD2D3D's dilated convs on Zen 3 (1 thread, layer times, one run each of
     * 12 / 6 / 4) forward 0.419 / 0.395 / 0.376 s, backward 0.794 / 0.788 / 0.730 s a step. */
    const int64_t ib = vox_ctx_cpu(ctx)->isa == VOX_ISA_AVX512 ? 12 : 4;
    const bool split = s->ci > 12, thin = q[0] < 8 && q[1] > q[0];
    const int64_t l[][2] = {{thin ? y : z, 1},
                            {thin ? z : y, 1},
                            {o, kt},
                            {i, ib},
                            {split ? a : x, split ? 1 : xw},
                            {split ? x : i, split ? xw : 1},
                            {split ? i : a, 1},
                            {b, 1},
                            {c, 1},
                            {o, 1},
                            {x, 1}};
    loops(n, l, (int)(sizeof l / sizeof l[0]));
}

static int64_t vol3(const int64_t *s)
{
    return s[0] * s[1] * s[2];
}

/* The Winograd object for conv c with the input at padlo (bw: its weight gradient's), from the
 * cache or created now (their big buffers lent at each call); NULL on failure. */
static struct cached_wino *wino_for(struct vox_nn_train_fast *f, const struct vox_nn_fast_conv *c,
                                    const int64_t lo[3], bool bw)
{
    for (int i = 0; i < f->n_wino; i++)
        if (memcmp(&f->wino[i].c, c, sizeof *c) == 0 &&
            memcmp(f->wino[i].lo, lo, sizeof f->wino[i].lo) == 0 && f->wino[i].bw == bw)
            return &f->wino[i];
    if (!cache_room(f->ctx, (void **)&f->wino, f->n_wino, &f->cap_wino, sizeof *f->wino))
        return NULL;
    struct vox_nn_wino *wn = NULL;
    struct vox_nn_wino_bw *gn = NULL;
    if (bw ? vox_nn_wino_bw_create(f->ctx, c, lo, &gn) != VOX_OK
           : vox_nn_wino_create(f->ctx, c, lo, NULL, NULL, &wn) != VOX_OK)
        return NULL;
    struct cached_wino *e = &f->wino[f->n_wino++];
    memset(e, 0, sizeof *e);
    e->c = *c;
    memcpy(e->lo, lo, sizeof e->lo);
    e->bw = bw;
    e->w = wn;
    e->g = gn;
    return e;
}

/* c = the Winograd conv (fast_wino.c) from cin channels to out's with kernel w, dilation dil,
 * the input at lo inside the padded extent, no act or bias; false when it does not qualify:
 * fewer channels than a block in or out (the transforms and products run on mostly empty
 * lanes: measured 20x256x256, 3x3x3 -> 16 channels, from 1 input channel 29.5 ms against the
 * direct nest's 3.8, from 8 38 against 26, from 16 40 against 49), or VOX_TRAIN_WINO=0. */
static bool wino_desc(const struct vox_nn_train_fast *f, int64_t cin, const struct vox_tensor *out,
                      const struct vox_tensor *w, const int64_t dil[3], const int64_t lo[3],
                      struct vox_nn_fast_conv *c)
{
    const int64_t L = vox_ctx_cpu(f->ctx)->isa == VOX_ISA_AVX512 ? 16 : 8;
    if (f->no_wino || cin < L || out->shape[1] < L)
        return false;
    memset(c, 0, sizeof *c); /* compared whole (wino_for) */
    c->n = 1;
    c->cin = cin;
    c->cout = out->shape[1];
    c->bin = c->b = L;
    for (int a = 0; a < 3; a++) {
        c->k[a] = w->shape[2 + a];
        c->dil[a] = dil[a];
        c->out[a] = out->shape[2 + a];
        c->in[a] = c->out[a] + c->k[a] - 1;
        if (lo[a] < 0 || lo[a] > c->k[a] - 1)
            return false;
    }
    return vox_nn_wino_ok(c);
}

/* bt = the box [lo, hi) of batch item b of the planar in, packed into blocks of bt->blk
 * channels (bt: data, n, c and blk set; its extents set here). */
static void band_pack(struct vox_pool *pool, int isa, const struct vox_tensor *in, int64_t b,
                      const int64_t lo[3], const int64_t hi[3], struct vox_nn_bt *bt, bool stream)
{
    struct vox_tensor src = *in;
    src.data = (float *)in->data + b * in->strides[0] + lo[0] * in->strides[2] +
               lo[1] * in->strides[3] + lo[2] * in->strides[4];
    src.shape[0] = 1;
    for (int a = 0; a < 3; a++)
        src.shape[2 + a] = bt->s[a] = hi[a] - lo[a];
    if (bt->s[0] > 0 && bt->s[1] > 0 && bt->s[2] > 0)
        (stream ? vox_nn_bt_pack_stream : vox_nn_bt_pack)(pool, isa, &src, bt);
}

/* out = act(conv(in) + bias) (or, with `bwd`, gin += the backward-data conv of gout = in with
 * the flipped, transposed weights; gin = without `add`) by Winograd (fast_wino.c: 3x3x3 as
 * F(2x4x4), 1x3x3 as F(4x4), ~2.5x fewer cycles than the direct nest on 16-64 channels) for kernels
 * of extents 1 and 3 (two 3s at least), dilation 1: the input packed into blocks of L channels (in
 * the scratch the bordered copy would use; the transforms read zeros outside the input, so no
 * border), the output written planar by the output transform (add: added into gin there).
 * The weights are transformed at every call (they change every step). false: the conv does
 * not qualify or memory is short, and the caller runs the direct nest. Each output is one
 * tile's, with a fixed order of sums: the same bits for any thread count. */
static bool wino_conv_from(struct vox_nn_train_fast *f, struct vox_pool *pool,
                           const struct vox_tensor *in, const struct vox_nn_phase *ph,
                           const float *full, const struct vox_tensor *w,
                           const struct vox_tensor *bias, const int64_t dil[3], const int64_t lo[3],
                           enum vox_nn_act act, struct vox_tensor *out, bool bwd, bool add)
{
    const int isa = (int)vox_ctx_cpu(f->ctx)->isa;
    const int64_t L = isa == VOX_ISA_AVX512 ? 16 : 8;
    struct vox_nn_fast_conv c;
    if (act == VOX_ACT_SOFTMAX || !wino_desc(f, in->shape[1], out, w, dil, lo, &c))
        return false;
    c.bias = bias != NULL;
    c.act = act;
    struct cached_wino *e = wino_for(f, &c, lo, false);
    struct vox_nn_wino *wn = e ? e->w : NULL;
    int64_t nu = 0, nw = 0;
    if (wn)
        vox_nn_wino_lent_floats(wn, &nu, &nw);
    float *u = wn ? scratch(f, SC_BIG, nu) : NULL, *work = u ? scratch(f, SC_WORK, nw) : NULL;
    bool ok = work != NULL;
    if (ok) {
        vox_nn_wino_bind(wn, u, work);
        vox_nn_wino_set_weights(f->ctx, wn, w->data, bias ? bias->data : NULL, bwd, &ok);
    }
    const int64_t ov = vol3(out->shape + 2), *is = in->shape + 2;
    const int64_t nbands = ok ? vox_nn_wino_bands(wn, is, f->band_bytes) : 0;
    int64_t most = 0, t0, t1, blo[3], bhi[3];
    for (int64_t k = 0; k < nbands; k++) {
        vox_nn_wino_band(wn, is, f->band_bytes, k, &t0, &t1, blo, bhi);
        const int64_t v = (bhi[0] - blo[0]) * (bhi[1] - blo[1]) * (bhi[2] - blo[2]);
        most = v > most ? v : most;
    }
    float *buf = ok ? scratch(f, SC_IN, cdiv(c.cin, L) * L * (most > 0 ? most : 1)) : NULL;
    if (!buf)
        return false;
    for (int64_t b = 0; b < in->shape[0]; b++) {
        struct vox_nn_bt ob = {
            .data = (float *)out->data + b * c.cout * ov, .n = 1, .c = c.cout, .blk = 1};
        for (int a = 0; a < 3; a++)
            ob.s[a] = out->shape[2 + a];
        /* band by band (a row or plane of tiles and the input slab it reads): the packed slab
         * stays in the caches for its tiles instead of a packed copy of the whole input going
         * to memory and back */
        for (int64_t k = 0; k < nbands; k++) {
            vox_nn_wino_band(wn, is, f->band_bytes, k, &t0, &t1, blo, bhi);
            struct vox_nn_bt bt = {.data = buf, .n = 1, .c = c.cin, .blk = L};
            if (ph)
                vox_nn_phase_pack(pool, isa, ph, full, b, blo, bhi, &bt);
            else
                band_pack(pool, isa, in, b, blo, bhi, &bt, false);
            vox_nn_wino_run_tiles(wn, pool, &bt, blo, t0, t1, add ? &ob : NULL, &ob);
        }
    }
    f->n_fast++;
    return true;
}

static bool wino_conv(struct vox_nn_train_fast *f, struct vox_pool *pool,
                      const struct vox_tensor *in, const struct vox_tensor *w,
                      const struct vox_tensor *bias, const int64_t dil[3], const int64_t lo[3],
                      enum vox_nn_act act, struct vox_tensor *out, bool bwd, bool add)
{
    return wino_conv_from(f, pool, in, NULL, NULL, w, bias, dil, lo, act, out, bwd, add);
}

/* A conv that Winograd does not take as it is, a dilated one or one of z taps other than 1
 * and 3, runs its forward and backward-data as a Winograd conv on its phase view
 * (fast_phase.c): the input's y and x residue classes side by side along z with the z taps
 * folded into channels, packed band by band from the full tensor, a 1x3x3 conv of dilation 1
 * from fold * ci channels (the weights reordered to match), and the output's view merged
 * back (a pass over the output). VD2D3D's 1x3x3 convs at dilation 2 and 4 and its 2x3x3 ones
 * at 1x8x8 ran as direct nests at 34-40 % of the core's peak; its step is 31 % shorter on
 * one thread (Zen 3). The weight gradient stays with the direct nest: on the views (by
 * fast_wino_bw.c) VD2D3D's backward was 20 % slower. */
struct phase_conv {
    struct vox_nn_phase in, out; /* the input's view (z taps folded) and the output's */
    int64_t lo[3];               /* the input view's offset inside the 1x3x3 conv's extent */
    struct vox_tensor t, o, w;   /* the views and the folded weights as tensors (no data) */
};

/* pc = the phase conv of the conv from in (N, ci, ...) to out (N, co, q) with weights w,
 * dilation dil and padding pad; false when it does not apply (see above: y and x taps 3, pads
 * a multiple of their dilation) or Winograd would not take the sub-conv. */
static bool phase_plan(const struct vox_nn_train_fast *f, const struct vox_tensor *in,
                       const struct vox_tensor *w, const int64_t dil[3], const int64_t pad[3],
                       const struct vox_tensor *out, struct phase_conv *pc)
{
    const int64_t *k = w->shape + 2;
    const bool plain = dil[0] == 1 && dil[1] == 1 && dil[2] == 1 && (k[0] == 1 || k[0] == 3);
    if (f->phase_mode < 0 || plain || k[1] != 3 || k[2] != 3 || w->shape[1] != in->shape[1])
        return false;
    /* small convs stay direct: the view's copies and the bands' pool rounds cost about what
     * Winograd saves there (nets/synth_aff.net's 1x3x3 at 1x2x2, 16 -> 16 channels at
     * 8x58x58, 12 MFLOP: a step equal on 1 thread, 4 % slower on 2) */
    const double flops = 2.0 * (double)out->shape[0] * (double)out->shape[1] *
                         (double)in->shape[1] * (double)vol3(k) * (double)vol3(out->shape + 2);
    if (flops < 64e6 && f->phase_mode == 0)
        return false;
    memset(pc, 0, sizeof *pc);
    for (int a = 1; a < 3; a++) {
        if (pad[a] % dil[a] != 0 || dil[a] > 64) /* fast_phase.c merges 64 phases at most */
            return false;
        pc->lo[a] = pad[a] / dil[a];
    }
    const int64_t N = in->shape[0], C = in->shape[1], CO = out->shape[1];
    struct vox_nn_phase *pi = &pc->in, *po = &pc->out;
    *pi = (struct vox_nn_phase){
        .n = N, .c = C, .d = {dil[1], dil[2]}, .fold = k[0], .dz = dil[0], .pz = pad[0]};
    *po = (struct vox_nn_phase){.n = N, .c = CO, .d = {dil[1], dil[2]}, .fold = 1, .dz = 1};
    /* a phase's rows and columns: whole tiles of F(4x4) (4 outputs, 6 inputs), so that with
     * valid convs every tile is inside the views, none gathered with zeros (the tiles of a
     * plane of VD2D3D's 1x8x8 phases, 10 x 10 outputs, are mostly at a border) */
    for (int a = 0; a < 3; a++) {
        pi->full[a] = in->shape[2 + a];
        po->full[a] = out->shape[2 + a];
        po->sub[a] = a ? 4 * cdiv(cdiv(po->full[a], dil[a]), 4) : po->full[0];
        const int64_t reach = po->sub[a] + 2 - pc->lo[a], all = cdiv(pi->full[a], dil[a]);
        pi->sub[a] = a ? (reach > all ? reach : all) : po->full[0];
    }
    const int64_t P = dil[1] * dil[2];
    vox_nn_tensor_view(&pc->t, NULL,
                       (const int64_t[5]){N, k[0] * C, P * pi->sub[0], pi->sub[1], pi->sub[2]});
    vox_nn_tensor_view(&pc->o, NULL,
                       (const int64_t[5]){N, CO, P * po->sub[0], po->sub[1], po->sub[2]});
    vox_nn_tensor_view(&pc->w, NULL, (const int64_t[5]){CO, k[0] * C, 1, 3, 3});
    const int64_t one[3] = {1, 1, 1};
    struct vox_nn_fast_conv c;
    return wino_desc(f, k[0] * C, &pc->o, &pc->w, one, pc->lo, &c);
}

/* Scratch for the view a phase conv writes out (the output's, or with bd the input
 * gradient's: the view it reads is packed from the full tensor band by band) and for the
 * folded weights where z taps fold; false when memory is short. */
static bool phase_bind(struct vox_nn_train_fast *f, struct phase_conv *pc, bool bd)
{
    struct vox_tensor *v = bd ? &pc->t : &pc->o;
    v->data = scratch(f, SC_PT, vox_tensor_numel(v));
    pc->w.data = pc->in.fold > 1 ? scratch(f, SC_PW, vox_tensor_numel(&pc->w)) : NULL;
    return v->data && (pc->in.fold == 1 || pc->w.data);
}

/* pc's folded weights (co, fold ci, 1, 3, 3) from w (co, ci, fold, 3, 3); w itself where
 * nothing folds. */
static void phase_weights(struct phase_conv *pc, const struct vox_tensor *w)
{
    const int64_t CO = pc->w.shape[0], C = pc->in.c, F = pc->in.fold;
    if (F == 1) {
        pc->w.data = w->data;
        return;
    }
    const float *a = w->data;
    float *b = pc->w.data;
    for (int64_t o = 0; o < CO; o++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t j = 0; j < F; j++)
                memcpy(b + ((o * F + j) * C + c) * 9, a + ((o * C + c) * F + j) * 9, 9 * sizeof *b);
}

static bool phase_fwd(struct vox_nn_train_fast *f, struct vox_pool *pool,
                      const struct vox_tensor *in, const struct vox_tensor *w,
                      const struct vox_tensor *bias, const int64_t dil[3], const int64_t pad[3],
                      enum vox_nn_act act, struct vox_tensor *out)
{
    struct phase_conv pc;
    if (act == VOX_ACT_SOFTMAX || !phase_plan(f, in, w, dil, pad, out, &pc) ||
        !phase_bind(f, &pc, false))
        return false;
    phase_weights(&pc, w);
    const int64_t one[3] = {1, 1, 1};
    if (!wino_conv_from(f, pool, &pc.t, &pc.in, in->data, &pc.w, bias, one, pc.lo, act, &pc.o,
                        false, false))
        return false;
    vox_nn_phase_scatter(pool, &pc.out, pc.o.data, out->data, false);
    f->n_phase++;
    return true;
}

/* gin (+)= the backward-data conv of gout as phase_fwd's adjoint */
static bool phase_bd(struct vox_nn_train_fast *f, struct vox_pool *pool,
                     const struct vox_tensor *gout, const struct vox_tensor *w,
                     const int64_t dil[3], const int64_t pad[3], struct vox_tensor *gin, bool add)
{
    struct phase_conv pc;
    if (!phase_plan(f, gin, w, dil, pad, gout, &pc) || !phase_bind(f, &pc, true))
        return false;
    phase_weights(&pc, w);
    const int64_t one[3] = {1, 1, 1}, lo[3] = {0, 2 - pc.lo[1], 2 - pc.lo[2]};
    if (!wino_conv_from(f, pool, &pc.o, &pc.out, gout->data, &pc.w, NULL, one, lo, VOX_ACT_LINEAR,
                        &pc.t, true, false))
        return false;
    vox_nn_phase_scatter(pool, &pc.in, pc.t.data, gin->data, add);
    f->n_phase++;
    return true;
}

/* The FFT conv of a layer with weights w (co, ci, k), dilation dil, input (N, ci, in) at pad
 * inside its padded extent and output (N, co, q): its forward (bd false) or its backward-data
 * (the adjoint: the output gradient, at ke - 1 - pad inside an extent of in + ke - 1, to the
 * input's gradient), from the cache or planned now; NULL when f's mode or the cost model
 * rules FFT out, or memory is short. */
static struct vox_nn_fft *fft_for(struct vox_nn_train_fast *f, const struct vox_tensor *in,
                                  const struct vox_tensor *w, const int64_t dil[3],
                                  const int64_t pad[3], const struct vox_tensor *out,
                                  enum vox_nn_act act, bool bd)
{
    if (f->fft_mode < 0 || act == VOX_ACT_SOFTMAX)
        return NULL;
    /* (keyed with a bias, zeros when the layer has none, and no act, given at each run: the
     * weight gradient takes the forward's object, whatever the layer's bias and act) */
    struct vox_nn_fast_conv c;
    memset(&c, 0, sizeof c); /* compared whole, padding included (the cache) */
    c.n = in->shape[0];
    c.cin = bd ? out->shape[1] : in->shape[1];
    c.cout = bd ? in->shape[1] : out->shape[1];
    c.bin = c.b = 1;
    c.bias = true;
    c.act = VOX_ACT_LINEAR;
    c.fft_group = f->fft_group;
    int64_t lo[3];
    for (int a = 0; a < 3; a++) {
        const int64_t ke = (w->shape[2 + a] - 1) * dil[a] + 1;
        c.k[a] = w->shape[2 + a];
        c.dil[a] = dil[a];
        c.out[a] = bd ? in->shape[2 + a] : out->shape[2 + a];
        c.in[a] = c.out[a] + ke - 1;
        lo[a] = bd ? ke - 1 - pad[a] : pad[a];
    }
    for (int i = 0; i < f->n_fft; i++)
        if (memcmp(&f->fft[i].c, &c, sizeof c) == 0 && memcmp(f->fft[i].lo, lo, sizeof lo) == 0 &&
            f->fft[i].bd == bd)
            return f->fft[i].f;
    bool fft = true;
    if (f->fft_mode == 0) {
        /* The inference planner's model on the layer's forward conv (its adjoint then goes the
         * same way): FFT at under half the time of the direct nest and of Winograd, its
         * spectra and buffers (forward and adjoint) within 8x the layer's activations. */
        struct vox_nn_fast_conv m = c;
        m.b = m.bin = vox_ctx_cpu(f->ctx)->isa == VOX_ISA_AVX512 ? 16 : 8;
        m.cin = in->shape[1];
        m.cout = out->shape[1];
        for (int a = 0; a < 3; a++) {
            m.out[a] = out->shape[2 + a];
            m.in[a] = m.out[a] + (m.k[a] - 1) * m.dil[a];
        }
        double t[VOX_NN_ALGOS];
        vox_nn_conv_model(&m, t);
        const double act_bytes =
            (double)(c.n * (c.cin * vol3(c.in) + c.cout * vol3(c.out))) * sizeof(float);
        fft = 2 * t[1] < t[0] && 2 * t[1] < t[2] &&
              (double)vox_nn_fft_bytes(&c, vox_ctx_threads(f->ctx)) <= 8 * act_bytes + (2 << 20);
    }
    /* the answer is cached either way (the model costs ~0.08 ms, a small net's step 0.2 s) */
    if (!cache_room(f->ctx, (void **)&f->fft, f->n_fft, &f->cap_fft, sizeof *f->fft))
        return NULL;
    struct vox_nn_fft *ff = NULL;
    if (fft && vox_nn_fft_create_lent(f->ctx, &c, lo, &ff) != VOX_OK)
        ff = NULL;
    struct cached_fft *e = &f->fft[f->n_fft++];
    memset(e, 0, sizeof *e);
    e->c = c;
    memcpy(e->lo, lo, sizeof lo);
    e->bd = bd;
    e->f = ff;
    return ff;
}

/* ff (from fft_for) with the shared buffers bound; NULL when memory is short (the caller runs
 * another algorithm). One set for all the FFT convs, as one for the Winograd ones: they run
 * one at a time, so only the largest conv's are held. */
static struct vox_nn_fft *fft_bound(struct vox_nn_train_fast *f, struct vox_nn_fft *ff)
{
    if (!ff)
        return NULL;
    int64_t n[4];
    vox_nn_fft_lent_floats(ff, n);
    float *p[4];
    for (int k = 0; k < 4; k++)
        if (!(p[k] = scratch(f, SC_FFT0 + k, n[k])))
            return NULL;
    vox_nn_fft_bind(ff, p[0], p[1], p[2], p[3]);
    return ff;
}

/* A tensor (N, C, Z, Y, X) as the FFT conv's planar layout (blocks of one channel). */
static struct vox_nn_bt planar_bt(const struct vox_tensor *t)
{
    return (struct vox_nn_bt){.data = t->data,
                              .n = t->shape[0],
                              .c = t->shape[1],
                              .blk = 1,
                              .s = {t->shape[2], t->shape[3], t->shape[4]}};
}

static void fast_conv(void *self, struct vox_pool *pool, const struct vox_tensor *in,
                      const struct vox_tensor *w, const struct vox_tensor *bias,
                      const int64_t dil[3], const int64_t pad[3], enum vox_nn_act act,
                      struct vox_tensor *out)
{
    struct vox_nn_train_fast *f = self;
    struct vox_nn_fft *ff = fft_bound(f, fft_for(f, in, w, dil, pad, out, act, false));
    if (ff) {
        const struct vox_nn_bt bi = planar_bt(in);
        struct vox_nn_bt bo = planar_bt(out);
        vox_nn_fft_set_weights(ff, pool, w->data, bias ? bias->data : NULL, false);
        vox_nn_fft_run_add(ff, pool, &bi, &bo, act, false);
        f->n_fast++;
        return;
    }
    if (wino_conv(f, pool, in, w, bias, dil, pad, act, out, false, false) ||
        phase_fwd(f, pool, in, w, bias, dil, pad, act, out))
        return;
    struct conv_shape s = {.co = out->shape[1], .ci = in->shape[1]};
    bool bordered = false;
    for (int a = 0; a < 3; a++) {
        s.q[a] = out->shape[2 + a];
        s.k[a] = w->shape[2 + a];
        s.d[a] = dil[a];
        s.p[a] = s.q[a] + (s.k[a] - 1) * dil[a];
        bordered |= pad[a] != 0 || s.p[a] != in->shape[2 + a];
    }
    s.bo = s.ci * vol3(s.k);
    s.bi = vol3(s.k);
    s.ws[0] = s.k[1] * s.k[2], s.ws[1] = s.k[2], s.ws[2] = 1;
    /* src/loop/codegen.c keeps a temporary for the bias or an exp, two more for the exp */
    const bool exp = act == VOX_ACT_ELU || act == VOX_ACT_SIGMOID || act == VOX_ACT_TANH;
    s.post_regs = exp ? 3 : bias ? 1 : 0;
    struct vox_nest n;
    conv_nest(f->ctx, &s, &n);
    post_ops(&n, vox_nest_dim_find(&n, "o"), bias != NULL, act);
    const struct vox_kernel *k = kernel_for(f, &n);
    float *buf = bordered ? scratch(f, SC_IN, s.ci * vol3(s.p)) : NULL;
    if (!k || (bordered && !buf)) {
        f->n_fallback++;
        vox_nn_ref_conv(pool, in, w, bias, dil, pad, act, out);
        return;
    }
    f->n_fast++;
    const int64_t is = s.ci * vol3(in->shape + 2), os = s.co * vol3(s.q);
    const float *extra[1] = {bias ? bias->data : NULL};
    for (int64_t b = 0; b < in->shape[0]; b++) {
        const float *src = (const float *)in->data + b * is;
        if (bordered) {
            border_copy(pool, buf, s.p, src, in->shape + 2, pad, s.ci);
            src = buf;
        }
        vox_kernel_run(k, (float *)out->data + b * os, src, w->data, extra);
    }
    if (act == VOX_ACT_SOFTMAX)
        vox_nn_ref_act(out, act, out);
}

/* gin += (add) or = the backward-data conv of gout */
static void conv_bd(struct vox_nn_train_fast *f, struct vox_pool *pool,
                    const struct vox_tensor *gout, const struct vox_tensor *w, const int64_t dil[3],
                    const int64_t pad[3], struct vox_tensor *gin, bool add)
{
    struct conv_shape s = {.co = gin->shape[1], .ci = gout->shape[1]};
    int64_t lo[3];
    for (int a = 0; a < 3; a++) {
        s.q[a] = gin->shape[2 + a];
        s.k[a] = w->shape[2 + a];
        s.d[a] = dil[a];
        s.p[a] = s.q[a] + (s.k[a] - 1) * dil[a];
        lo[a] = (s.k[a] - 1) * dil[a] - pad[a];
    }
    struct vox_nn_fft *ff = fft_bound(f, fft_for(f, gin, w, dil, pad, gout, VOX_ACT_LINEAR, true));
    if (ff) {
        const struct vox_nn_bt bi = planar_bt(gout);
        struct vox_nn_bt bo = planar_bt(gin);
        vox_nn_fft_set_weights(ff, pool, w->data, NULL, true);
        vox_nn_fft_run_add(ff, pool, &bi, &bo, VOX_ACT_LINEAR, add);
        f->n_fast++;
        return;
    }
    if (wino_conv(f, pool, gout, w, NULL, dil, lo, VOX_ACT_LINEAR, gin, true, add) ||
        phase_bd(f, pool, gout, w, dil, pad, gin, add))
        return;
    if (!add) /* the nest adds */
        vox_pool_zero(pool, gin->data, vox_tensor_nbytes(gin));
    const int64_t taps = vol3(s.k);
    s.bo = taps;
    s.bi = s.co * taps;
    s.ws[0] = -s.k[1] * s.k[2], s.ws[1] = -s.k[2], s.ws[2] = -1;
    struct vox_nest n;
    conv_nest(f->ctx, &s, &n);
    n.accumulate = true;
    const struct vox_kernel *k = kernel_for(f, &n);
    float *buf = scratch(f, SC_IN, s.ci * vol3(s.p));
    if (!k || !buf) {
        f->n_fallback++;
        vox_nn_ref_conv_backward_data(pool, gout, w, dil, pad, gin);
        return;
    }
    f->n_fast++;
    const int64_t os = s.ci * vol3(gout->shape + 2), is = s.co * vol3(s.q);
    for (int64_t b = 0; b < gout->shape[0]; b++) {
        border_copy(pool, buf, s.p, (const float *)gout->data + b * os, gout->shape + 2, lo, s.ci);
        vox_kernel_run(k, (float *)gin->data + b * is, buf, (const float *)w->data + taps - 1,
                       NULL);
    }
}

static void fast_conv_bd(void *self, struct vox_pool *pool, const struct vox_tensor *gout,
                         const struct vox_tensor *w, const int64_t dil[3], const int64_t pad[3],
                         struct vox_tensor *gin)
{
    conv_bd(self, pool, gout, w, dil, pad, gin, true);
}

static void fast_conv_bd_set(void *self, struct vox_pool *pool, const struct vox_tensor *gout,
                             const struct vox_tensor *w, const int64_t dil[3], const int64_t pad[3],
                             struct vox_tensor *gin)
{
    conv_bd(self, pool, gout, w, dil, pad, gin, false);
}

/* gb[o] += sum over (n, positions) of gout[n, o], in double, in four interleaved partial sums
 * combined in a fixed order; channels over the pool, each summed by one thread. */
struct bias_job {
    const struct vox_tensor *gout;
    float *g;
};

static void bias_channels(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    const struct bias_job *j = arg;
    const int64_t C = j->gout->shape[1], S = vol3(j->gout->shape + 2);
    for (int64_t o = lo[0]; o < hi[0]; o++) {
        double acc[4] = {0, 0, 0, 0}; /* four chains: the adds' latency overlaps */
        for (int64_t b = 0; b < j->gout->shape[0]; b++) {
            const float *p = (const float *)j->gout->data + (b * C + o) * S;
            int64_t e = 0;
            for (; e + 4 <= S; e += 4)
                for (int k = 0; k < 4; k++)
                    acc[k] += p[e + k];
            for (; e < S; e++)
                acc[e & 3] += p[e];
        }
        j->g[o] = (float)(j->g[o] + ((acc[0] + acc[1]) + (acc[2] + acc[3])));
    }
}

static void bias_grad(struct vox_pool *pool, const struct vox_tensor *gout, struct vox_tensor *gb)
{
    struct bias_job j = {gout, gb->data};
    const int64_t n[3] = {gout->shape[1], 1, 1}, tile[3] = {1, 1, 1};
    vox_pool_for(pool, n, tile, VOX_SCHED_AFFINE, bias_channels, &j);
}

/* Backward-weights in the shape of the forward conv's register tile: vectors along the output
 * channels. gout is first transposed channels-last by blocks of L channels within each row
 * (goutT (Z, Y, W / L, X, L), W = the channels padded to L lanes), then gwT[i, a, b, c, o] =
 * sum_{z,y,x} in[i, z + a dz, ...] * goutT[z, y, x, o]: per position one goutT vector per output
 * block and one broadcast per x tap feed OT x CT FMAs (the earlier nest reduced each weight alone
 * and was load-bound, 60 % of a step), and gwT is added into gw. The positions are the reduction,
 * in loop order, slab of z planes after slab (fast_conv_bw): the same bits for any thread count. */
static void weights_nest(struct vox_ctx *ctx, const struct conv_shape *s, int64_t L,
                         struct vox_nest *n)
{
    const int64_t *q = s->q, *p = s->p, *d = s->d, *k = s->k;
    const int64_t ob = cdiv(s->co, L), W = ob * L, taps = vol3(k);
    const int64_t regs = vox_ctx_cpu(ctx)->isa == VOX_ISA_AVX512 ? 32 : 16;
    vox_nest_init(n);
    int i = dim4(n, "i", s->ci, taps * W, vol3(p), 0);
    int a = dim4(n, "a", k[0], k[1] * k[2] * W, d[0] * p[1] * p[2], 0);
    int b = dim4(n, "b", k[1], k[2] * W, d[1] * p[2], 0);
    int c = dim4(n, "c", k[2], W, d[2], 0);
    int o = dim4(n, "ob", ob, L, 0, q[2] * L);
    int bo = dim4(n, "bo", L, 1, 0, 1);
    int z = dim4(n, "z", q[0], 0, p[1] * p[2], q[1] * q[2] * W);
    int y = dim4(n, "y", q[1], 0, p[2], q[2] * W);
    int x = dim4(n, "x", q[2], 0, 1, L);
    int64_t ct = k[2] < regs / 4 ? k[2] : regs / 4, ot = (regs - 1) / (ct + 1);
    ot = cdiv(ob, cdiv(ob, ot));
    /* few output blocks: y taps join the tile, so enough accumulators hide the FMA latency */
    int64_t bt = 1;
    while (ot * bt * ct < 12 && bt < k[1] && ot * (bt + 1) * ct + ot + 1 <= regs)
        bt++;
    /* Rows of positions outside the weight loops, so one row of goutT (x * W floats) stays in
     * cache while every weight it meets is updated; the threads split loop 0 (blocks of input
     * channels, or of z taps for a one-channel input), and each block sweeps the positions
     * once. */
    int first = s->ci == 1 && k[0] > 1 ? a : i, second = first == i ? a : i;
    const int64_t nf = first == i ? s->ci : k[0];
    /* A one-channel input with one z tap (the RSUNet's 1x5x5 embedding: one block, one
     * thread) splits the y tap tiles instead. */
    const bool by_b = nf == 1 && k[1] > bt;
    /* four blocks at most (not one per thread: the nest, and so its sums, must not depend on
     * the thread count) */
    const int64_t l[][2] = {{by_b ? b : first, by_b ? bt : cdiv(nf, 4)},
                            {z, 1},
                            {y, 1},
                            {first, 1},
                            {second, 1},
                            {b, bt},
                            {o, ot},
                            {c, ct},
                            {x, 1},
                            {b, 1},
                            {o, 1},
                            {c, 1},
                            {bo, 1}};
    loops(n, l, (int)(sizeof l / sizeof l[0]));
    n->accumulate = true; /* partial sums revisited per row, and over the slabs */
}

/* The mirror of weights_nest for convs with few output channels (mirror_bw; the RSUNet's
 * 16 -> 3 output conv used 3 of 16 lanes there): vectors along the input channels. The
 * input's slab of planes, with the z taps' halo, is transposed channels-last as goutT is
 * (inT (Z', Y', Wi / L, X', L), Wi = the input channels padded to L); then gwT[o, a, b, c, i]
 * = sum_{z,y,x} gout[o, z, y, x] * inT[z + a dz, y + b dy, x + c dx, i]: per position one
 * broadcast of gout per output channel (all of them in the tile) and one inT vector per x
 * tap feed CO x CT FMAs. The threads split the y taps (one block each: the nest must not
 * depend on the thread count); sums in loop order, slab after slab. Q: gout's channel stride
 * (s->q[0] is the slab's planes). */
static void weights_nest_t(struct vox_ctx *ctx, const struct conv_shape *s, int64_t L, int64_t Q,
                           struct vox_nest *n)
{
    const int64_t *q = s->q, *p = s->p, *d = s->d, *k = s->k;
    const int64_t ib = cdiv(s->ci, L), Wi = ib * L, taps = vol3(k);
    const int64_t regs = vox_ctx_cpu(ctx)->isa == VOX_ISA_AVX512 ? 32 : 16;
    vox_nest_init(n);
    int o = dim4(n, "o", s->co, taps * Wi, Q, 0);
    int a = dim4(n, "a", k[0], k[1] * k[2] * Wi, 0, d[0] * p[1] * p[2] * Wi);
    int b = dim4(n, "b", k[1], k[2] * Wi, 0, d[1] * p[2] * Wi);
    int c = dim4(n, "c", k[2], Wi, 0, d[2] * L);
    int ibd = dim4(n, "ib", ib, L, 0, p[2] * L);
    int bi = dim4(n, "bi", L, 1, 0, 1);
    int z = dim4(n, "z", q[0], 0, q[1] * q[2], p[1] * p[2] * Wi);
    int y = dim4(n, "y", q[1], 0, q[2], p[2] * Wi);
    int x = dim4(n, "x", q[2], 0, 1, L);
    const int64_t most = (regs - 1 - s->co) / s->co; /* co x ct sums, co broadcasts, a load */
    const int64_t ct = cdiv(k[2], cdiv(k[2], most));
    const int64_t l[][2] = {{b, 1},  {z, 1}, {y, 1}, {a, 1}, {ibd, 1}, {o, s->co},
                            {c, ct}, {x, 1}, {o, 1}, {c, 1}, {bi, 1}};
    loops(n, l, (int)(sizeof l / sizeof l[0]));
    n->accumulate = true;
}

/* Whether the backward-weights of shape s runs mirrored (weights_nest_t): the output
 * channels fill at most a quarter of the lanes, the input channels at least half, all output
 * channels with a few x taps fit the registers, and there are 3 y taps at least for the
 * threads to split (a choice by shape only: the two nests sum in different orders). */
static bool mirror_bw(struct vox_ctx *ctx, const struct conv_shape *s, int64_t L)
{
    const int64_t regs = vox_ctx_cpu(ctx)->isa == VOX_ISA_AVX512 ? 32 : 16;
    return 4 * s->co <= L && 2 * s->ci >= L && (regs - 1 - s->co) / s->co >= 2 && s->k[1] >= 3;
}

/* goutT = gout (C, P) transposed by rows of X positions: row r holds, block of L channels
 * after block, goutT[r, ob, x, l] = gout[ob L + l, r X + x] (0 for channels >= C), by the
 * blocked layout's register transposes (fast_pack.h; their width is L on every ISA). Rows
 * over the pool. */
struct transpose_job {
    const float *src;
    float *dst;
    const struct vox_nn_pack_fns *pk;
    int64_t C, W, P, X;
};

static void transpose_rows(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    const struct transpose_job *j = arg;
    const int64_t L = j->pk->lanes;
    const float *rows[16];
    for (int64_t r = lo[0]; r < hi[0]; r++) {
        const int64_t p0 = r * j->X;
        for (int64_t c0 = 0; c0 < j->W; c0 += L) {
            for (int64_t l = 0; l < L; l++)
                rows[l] = c0 + l < j->C ? j->src + (c0 + l) * j->P + p0 : NULL;
            j->pk->pack(rows, j->dst + p0 * j->W + c0 * j->X, j->X);
        }
    }
}

/* Planes of output positions per backward-weights slab: goutT is held one slab at a time
 * (at most ~32 MB, not a whole transposed copy of gout). */
static int64_t slab_planes(const struct vox_nn_train_fast *f, const struct conv_shape *s, int64_t W)
{
    int64_t per = s->q[1] * s->q[2] * W, n = f->slab_floats / (per > 0 ? per : 1);
    return n < 1 ? 1 : n > s->q[0] ? s->q[0] : n;
}

/* wt (ci * taps, W) = the backward-weights of one batch item (s: its shape; src: the input,
 * bordered when the conv pads; gout: (co, Q)), zeroed first; false when a kernel or scratch
 * buffer is missing (the caller falls back to the reference). */
static bool bw_item(struct vox_nn_train_fast *f, struct vox_pool *pool, const struct conv_shape *s,
                    const float *src, const float *gout, float **wt_out)
{
    const int64_t L = vox_ctx_cpu(f->ctx)->isa == VOX_ISA_AVX512 ? 16 : 8;
    const int64_t W = cdiv(s->co, L) * L, taps = vol3(s->k), Q = vol3(s->q);
    const int64_t plane = s->q[1] * s->q[2], S = slab_planes(f, s, W), tail = s->q[0] % S;
    const struct vox_kernel *k[2] = {NULL, NULL};
    struct conv_shape sl = *s;
    for (int t = 0; t < (tail ? 2 : 1); t++) {
        struct vox_nest n;
        sl.q[0] = t ? tail : S;
        weights_nest(f->ctx, &sl, L, &n);
        k[t] = kernel_for(f, &n);
    }
    float *gt = scratch(f, SC_BIG, S * plane * W), *wt = scratch(f, SC_WT, s->ci * taps * W);
    if (!k[0] || (tail && !k[1]) || !gt || !wt)
        return false;
    memset(wt, 0, (size_t)(s->ci * taps * W) * sizeof *wt);
    for (int64_t z0 = 0; z0 < s->q[0]; z0 += S) {
        const int64_t nz = z0 + S <= s->q[0] ? S : tail;
        struct transpose_job tj = {gout + z0 * plane,
                                   gt,
                                   vox_nn_pack_fns_for(vox_ctx_cpu(f->ctx)->isa),
                                   s->co,
                                   W,
                                   Q,
                                   s->q[2]};
        const int64_t rows[3] = {nz * s->q[1], 1, 1}, tile[3] = {1, 1, 1};
        vox_pool_for(pool, rows, tile, VOX_SCHED_AFFINE, transpose_rows, &tj);
        vox_kernel_run(k[nz != S], wt, src + z0 * s->p[1] * s->p[2], gt, NULL);
    }
    *wt_out = wt;
    return true;
}

/* wt (co * taps, Wi) = bw_item mirrored (weights_nest_t): the input's slabs of planes (with
 * the z taps' halo) transposed channels-last, gout read planar. */
static bool bw_item_t(struct vox_nn_train_fast *f, struct vox_pool *pool,
                      const struct conv_shape *s, const float *src, const float *gout,
                      float **wt_out)
{
    const int64_t L = vox_ctx_cpu(f->ctx)->isa == VOX_ISA_AVX512 ? 16 : 8;
    const int64_t Wi = cdiv(s->ci, L) * L, taps = vol3(s->k), pplane = s->p[1] * s->p[2];
    const int64_t halo = (s->k[0] - 1) * s->d[0];
    int64_t S = f->slab_floats / (pplane * Wi) - halo;
    S = S < 1 ? 1 : S > s->q[0] ? s->q[0] : S;
    const int64_t tail = s->q[0] % S;
    const struct vox_kernel *k[2] = {NULL, NULL};
    struct conv_shape sl = *s;
    for (int t = 0; t < (tail ? 2 : 1); t++) {
        struct vox_nest n;
        sl.q[0] = t ? tail : S;
        weights_nest_t(f->ctx, &sl, L, vol3(s->q), &n);
        k[t] = kernel_for(f, &n);
    }
    float *it = scratch(f, SC_BIG, (S + halo) * pplane * Wi);
    float *wt = scratch(f, SC_WT, s->co * taps * Wi);
    if (!k[0] || (tail && !k[1]) || !it || !wt)
        return false;
    memset(wt, 0, (size_t)(s->co * taps * Wi) * sizeof *wt);
    for (int64_t z0 = 0; z0 < s->q[0]; z0 += S) {
        const int64_t nz = z0 + S <= s->q[0] ? S : tail;
        struct transpose_job tj = {
            src + z0 * pplane, it,     vox_nn_pack_fns_for(vox_ctx_cpu(f->ctx)->isa), s->ci, Wi,
            vol3(s->p),        s->p[2]};
        const int64_t rows[3] = {(nz + halo) * s->p[1], 1, 1}, tile[3] = {1, 1, 1};
        vox_pool_for(pool, rows, tile, VOX_SCHED_AFFINE, transpose_rows, &tj);
        vox_kernel_run(k[nz != S], wt, gout + z0 * s->q[1] * s->q[2], it, NULL);
    }
    *wt_out = wt;
    return true;
}

/* gw += the weight gradient by Winograd (fast_wino_bw.c) for the convs wino_conv runs, and gb
 * (NULL: none) += the bias's: the input packed into blocks as there, gout read planar by the
 * gradient transform, the partial sums in SC_BIG. false: the conv does not qualify or
 * memory is short. */
static bool wino_bw(struct vox_nn_train_fast *f, struct vox_pool *pool, const struct vox_tensor *in,
                    const struct vox_tensor *gout, const int64_t dil[3], const int64_t lo[3],
                    struct vox_tensor *gw, struct vox_tensor *gb)
{
    const int isa = (int)vox_ctx_cpu(f->ctx)->isa;
    const int64_t L = isa == VOX_ISA_AVX512 ? 16 : 8;
    struct vox_nn_fast_conv c;
    if (!wino_desc(f, in->shape[1], gout, gw, dil, lo, &c))
        return false;
    struct cached_wino *e = wino_for(f, &c, lo, true);
    if (!e)
        return false;
    int64_t nw = 0, ns = 0;
    vox_nn_wino_bw_lent_floats(e->g, &nw, &ns);
    const int64_t ov = vol3(gout->shape + 2), *is = in->shape + 2;
    const int64_t zero[3] = {0, 0, 0};
    /* each thread packs the bands of the input its tiles read (they stay in the caches), or,
     * where the threads share each block (128 channels), the whole input is packed first:
     * stored past the cache where it does not fit half the L3 (no read of the buffer's lines
     * before they are written) */
    const int64_t band = vox_nn_wino_bw_band_floats(e->g, is, f->band_bytes);
    float *work = scratch(f, SC_WORK, nw), *sums = work ? scratch(f, SC_BIG, ns) : NULL;
    float *buf = sums ? scratch(f, SC_IN, band ? band : cdiv(c.cin, L) * L * vol3(is)) : NULL;
    if (!buf)
        return false;
    const int64_t l3 = vox_ctx_cpu(f->ctx)->l3_bytes > 0 ? vox_ctx_cpu(f->ctx)->l3_bytes : 8 << 20;
    const bool stream = (int64_t)sizeof(float) * cdiv(c.cin, L) * L * vol3(is) > l3 / 2;
    for (int64_t b = 0; b < in->shape[0]; b++) {
        struct vox_nn_bt bt = {.data = buf, .n = 1, .c = c.cin, .blk = L};
        struct vox_nn_bt gt = {
            .data = (float *)gout->data + b * c.cout * ov, .n = 1, .c = c.cout, .blk = 1};
        for (int a = 0; a < 3; a++)
            gt.s[a] = gout->shape[2 + a];
        if (band) {
            struct vox_tensor item = *in;
            item.data = (float *)in->data + b * in->strides[0];
            item.shape[0] = 1;
            vox_nn_wino_bw_run_bands(e->g, pool, isa, &item, buf, f->band_bytes, &gt, work, sums,
                                     b == 0);
            continue;
        }
        band_pack(pool, isa, in, b, zero, is, &bt, stream);
        vox_nn_wino_bw_run(e->g, pool, &bt, &gt, work, sums, b == 0);
    }
    vox_nn_wino_bw_finish(e->g, pool, sums, work, gw->data, gb ? gb->data : NULL);
    return true;
}

static void fast_conv_bw(void *self, struct vox_pool *pool, const struct vox_tensor *in,
                         const struct vox_tensor *gout, const int64_t dil[3], const int64_t pad[3],
                         struct vox_tensor *gw, struct vox_tensor *gb)
{
    struct vox_nn_train_fast *f = self;
    struct vox_nn_fft *ff = fft_bound(f, fft_for(f, in, gw, dil, pad, gout, VOX_ACT_LINEAR, false));
    if (ff) { /* the forward's object (its kernel spectra are the next forward's to set) */
        const struct vox_nn_bt bi = planar_bt(in), bg = planar_bt(gout);
        vox_nn_fft_weights_grad(ff, pool, &bi, &bg, gw->data);
        if (gb)
            bias_grad(pool, gout, gb);
        f->n_fast++;
        return;
    }
    if (wino_bw(f, pool, in, gout, dil, pad, gw, gb)) {
        f->n_fast++;
        return;
    }
    struct conv_shape s = {.co = gout->shape[1], .ci = in->shape[1]};
    bool bordered = false;
    for (int a = 0; a < 3; a++) {
        s.q[a] = gout->shape[2 + a];
        s.k[a] = gw->shape[2 + a];
        s.d[a] = dil[a];
        s.p[a] = s.q[a] + (s.k[a] - 1) * dil[a];
        bordered |= pad[a] != 0 || s.p[a] != in->shape[2 + a];
    }
    const int64_t L = vox_ctx_cpu(f->ctx)->isa == VOX_ISA_AVX512 ? 16 : 8;
    const bool mirror = mirror_bw(f->ctx, &s, L);
    const int64_t W = cdiv(mirror ? s.ci : s.co, L) * L, taps = vol3(s.k);
    const int64_t is = s.ci * vol3(in->shape + 2), os = s.co * vol3(s.q);
    float *buf = bordered ? scratch(f, SC_IN, s.ci * vol3(s.p)) : NULL, *wt = NULL, *g = gw->data;
    for (int64_t b = 0; b < in->shape[0]; b++) {
        const float *src = (const float *)in->data + b * is;
        if (bordered && buf) {
            border_copy(pool, buf, s.p, src, in->shape + 2, pad, s.ci);
            src = buf;
        }
        const float *go = (const float *)gout->data + b * os;
        if ((bordered && !buf) ||
            !(mirror ? bw_item_t(f, pool, &s, src, go, &wt) : bw_item(f, pool, &s, src, go, &wt))) {
            /* only the first item can fail: the kernels and buffers are kept after it */
            f->n_fallback++;
            vox_nn_ref_conv_backward_weights(pool, in, gout, dil, pad, gw, gb);
            return;
        }
        for (int64_t o = 0; mirror && o < s.co; o++) /* wt (co, taps, Wi) */
            for (int64_t i = 0; i < s.ci; i++)
                for (int64_t t = 0; t < taps; t++)
                    g[(o * s.ci + i) * taps + t] += wt[(o * taps + t) * W + i];
        for (int64_t o = 0; !mirror && o < s.co; o++) /* wt (ci, taps, W) */
            for (int64_t e = 0; e < s.ci * taps; e++)
                g[o * s.ci * taps + e] += wt[e * W + o];
    }
    f->n_fast++;
    if (gb)
        bias_grad(pool, gout, gb);
}

/* Depth-to-space after the deconv's 1x1x1 conv: out[o, z KZ + a, y KY + b, x KX + c] =
 * T[o taps + t, z, y, x] + bias[o] with t = (a KY + b) KX + c; with to_depth the other way
 * (T from out, no bias), for the adjoints. Rows (o, z) over the pool. */
struct shuffle_job {
    float *t, *out;
    const float *bias;
    int64_t s[3], k[3];
    bool to_depth;
};

/* One output row of an x factor of 2 from its two taps' rows (or, to_depth, the reverse):
 * q[2x] = u0[x] + b, q[2x + 1] = u1[x] + b, 4 x at a time through vector interleaves (the
 * strided scalar stores of the general loop took 3 % of an RSUNet step). */
static void interleave_row(float *q, float *u0, float *u1, float b, int64_t n, bool to_depth)
{
    typedef float v4 __attribute__((vector_size(16))); /* SSE: the baseline build's unpacks */
    int64_t x = 0;
    for (; x + 4 <= n; x += 4) {
        v4 a, c, lo, hi;
        if (to_depth) {
            memcpy(&lo, q + 2 * x, sizeof lo);
            memcpy(&hi, q + 2 * x + 4, sizeof hi);
            a = __builtin_shufflevector(lo, hi, 0, 2, 4, 6);
            c = __builtin_shufflevector(lo, hi, 1, 3, 5, 7);
            memcpy(u0 + x, &a, sizeof a);
            memcpy(u1 + x, &c, sizeof c);
            continue;
        }
        memcpy(&a, u0 + x, sizeof a);
        memcpy(&c, u1 + x, sizeof c);
        a += b;
        c += b;
        lo = __builtin_shufflevector(a, c, 0, 4, 1, 5);
        hi = __builtin_shufflevector(a, c, 2, 6, 3, 7);
        memcpy(q + 2 * x, &lo, sizeof lo);
        memcpy(q + 2 * x + 4, &hi, sizeof hi);
    }
    for (; x < n; x++) {
        if (to_depth) {
            u0[x] = q[2 * x];
            u1[x] = q[2 * x + 1];
        } else {
            q[2 * x] = u0[x] + b;
            q[2 * x + 1] = u1[x] + b;
        }
    }
}

static void shuffle_rows(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    const struct shuffle_job *j = arg;
    const int64_t *s = j->s, *k = j->k, taps = vol3(k);
    const int64_t oy = s[1] * k[1], ox = s[2] * k[2];
    for (int64_t r = lo[0]; r < hi[0] && k[2] == 2; r++) { /* RSUNet's 1x2x2 */
        const int64_t o = r / s[0], z = r % s[0];
        const float b = j->bias ? j->bias[o] : 0.0f;
        const int64_t plane = s[0] * s[1] * s[2]; /* from tap t's plane to tap t + 1's */
        for (int64_t t = 0; t < taps; t += 2) {
            const int64_t a = t / (k[1] * k[2]), bb = t / k[2] % k[1];
            float *tp = j->t + ((o * taps + t) * s[0] + z) * s[1] * s[2];
            float *op = j->out + ((o * s[0] * k[0] + z * k[0] + a) * oy + bb) * ox;
            for (int64_t y = 0; y < s[1]; y++)
                interleave_row(op + y * k[1] * ox, tp + y * s[2], tp + plane + y * s[2], b, s[2],
                               j->to_depth);
        }
    }
    for (int64_t r = lo[0]; r < hi[0] && k[2] != 2; r++) {
        const int64_t o = r / s[0], z = r % s[0];
        const float b = j->bias ? j->bias[o] : 0.0f;
        for (int64_t t = 0; t < taps; t++) {
            const int64_t a = t / (k[1] * k[2]), bb = t / k[2] % k[1], c = t % k[2];
            float *tp = j->t + ((o * taps + t) * s[0] + z) * s[1] * s[2];
            float *op = j->out + ((o * s[0] * k[0] + z * k[0] + a) * oy + bb) * ox + c;
            for (int64_t y = 0; y < s[1]; y++)
                for (int64_t x = 0; x < s[2]; x++) {
                    float *q = op + y * k[1] * ox + x * k[2], *u = tp + y * s[2] + x;
                    if (j->to_depth)
                        *u = *q;
                    else
                        *q = *u + b;
                }
        }
    }
}

static void shuffle(struct vox_pool *pool, float *t, float *out, const float *bias, int64_t O,
                    const int64_t s[3], const int64_t k[3], bool to_depth)
{
    struct shuffle_job j = {t, out, bias, {s[0], s[1], s[2]}, {k[0], k[1], k[2]}, to_depth};
    const int64_t rows[3] = {O * s[0], 1, 1}, tile[3] = {1, 1, 1};
    vox_pool_for(pool, rows, tile, VOX_SCHED_AFFINE, shuffle_rows, &j);
}

/* A deconv with stride = kernel is a 1x1x1 conv to O * taps channels (the conv nest: vectors
 * along x, a register tile over channels) followed by depth-to-space; the nest written over
 * the interleaved output had C stride KX along x and ran scalar (half of an RSUNet step). */
static void fast_deconv(void *self, struct vox_pool *pool, const struct vox_tensor *in,
                        const struct vox_tensor *w, const struct vox_tensor *bias,
                        enum vox_nn_act act, struct vox_tensor *out)
{
    struct vox_nn_train_fast *f = self;
    const int64_t I = in->shape[1], O = out->shape[1], taps = vol3(w->shape + 2);
    struct conv_shape s = {.co = O * taps, .ci = I, .bo = 1, .bi = O * taps};
    for (int a = 0; a < 3; a++)
        s.q[a] = s.p[a] = in->shape[2 + a], s.k[a] = s.d[a] = 1;
    struct vox_nest n;
    conv_nest(f->ctx, &s, &n);
    const struct vox_kernel *k = kernel_for(f, &n);
    float *t = scratch(f, SC_IN, s.co * vol3(s.q));
    if (!k || !t) {
        f->n_fallback++;
        vox_nn_ref_deconv(pool, in, w, bias, act, out);
        return;
    }
    f->n_fast++;
    const int64_t is = I * vol3(in->shape + 2), os = O * vol3(out->shape + 2);
    for (int64_t b = 0; b < in->shape[0]; b++) {
        vox_kernel_run(k, t, (const float *)in->data + b * is, w->data, NULL);
        shuffle(pool, t, (float *)out->data + b * os, bias ? bias->data : NULL, O, s.q,
                w->shape + 2, false);
    }
    if (act != VOX_ACT_LINEAR)
        vox_nn_ref_act(out, act, out);
}

/* The deconv's adjoints on G = space-to-depth(gout), G[o taps + t] (the layout of the forward's
 * T): backward-data is the 1x1x1 conv gin[i] += sum_o' w[i, o'] G[o'], backward-weights the
 * 1x1x1 conv's, gw[i, o'] += sum_p in[i, p] G[o', p]. */
static float *to_depth(struct vox_nn_train_fast *f, struct vox_pool *pool,
                       const struct vox_tensor *gout, int64_t b, const int64_t s[3],
                       const int64_t k[3])
{
    const int64_t O = gout->shape[1], n = O * vol3(k) * vol3(s);
    float *g = scratch(f, SC_IN, n);
    if (g)
        shuffle(pool, g, (float *)gout->data + b * n, NULL, O, s, k, true);
    return g;
}

static void fast_deconv_bd(void *self, struct vox_pool *pool, const struct vox_tensor *gout,
                           const struct vox_tensor *w, struct vox_tensor *gin)
{
    struct vox_nn_train_fast *f = self;
    const int64_t I = gin->shape[1], O = gout->shape[1], taps = vol3(w->shape + 2);
    struct conv_shape s = {.co = I, .ci = O * taps, .bo = O * taps, .bi = 1};
    for (int a = 0; a < 3; a++)
        s.q[a] = s.p[a] = gin->shape[2 + a], s.k[a] = s.d[a] = 1;
    struct vox_nest n;
    conv_nest(f->ctx, &s, &n);
    n.accumulate = true;
    const struct vox_kernel *k = kernel_for(f, &n);
    const int64_t is = I * vol3(s.q);
    for (int64_t b = 0; b < gin->shape[0]; b++) {
        const float *g = k ? to_depth(f, pool, gout, b, s.q, w->shape + 2) : NULL;
        if (!g) { /* only the first item can fail */
            f->n_fallback++;
            vox_nn_ref_deconv_backward_data(pool, gout, w, gin);
            return;
        }
        vox_kernel_run(k, (float *)gin->data + b * is, g, w->data, NULL);
    }
    f->n_fast++;
}

static void fast_deconv_bw(void *self, struct vox_pool *pool, const struct vox_tensor *in,
                           const struct vox_tensor *gout, struct vox_tensor *gw,
                           struct vox_tensor *gb)
{
    struct vox_nn_train_fast *f = self;
    const int64_t I = in->shape[1], O = gout->shape[1], taps = vol3(gw->shape + 2);
    struct conv_shape s = {.co = O * taps, .ci = I};
    for (int a = 0; a < 3; a++)
        s.q[a] = s.p[a] = in->shape[2 + a], s.k[a] = s.d[a] = 1;
    const int64_t L = vox_ctx_cpu(f->ctx)->isa == VOX_ISA_AVX512 ? 16 : 8;
    const int64_t W = cdiv(s.co, L) * L, is = I * vol3(s.q);
    float *wt = NULL, *gp = gw->data;
    for (int64_t b = 0; b < in->shape[0]; b++) {
        const float *g = to_depth(f, pool, gout, b, s.q, gw->shape + 2);
        if (!g || !bw_item(f, pool, &s, (const float *)in->data + b * is, g, &wt)) {
            f->n_fallback++; /* only the first item can fail */
            vox_nn_ref_deconv_backward_weights(pool, in, gout, gw, gb);
            return;
        }
        for (int64_t i = 0; i < I; i++)
            for (int64_t o = 0; o < s.co; o++)
                gp[i * s.co + o] += wt[i * W + o];
    }
    f->n_fast++;
    if (gb)
        bias_grad(pool, gout, gb);
}

/* The pointwise act of add, act and output layers on vectors (fast_vact.h: the JIT's method,
 * as the conv nests' fused act computes it, within 4e-7 relative of libm). */
static void fast_act(void *self, enum vox_nn_act act, float *x, int64_t n)
{
    struct vox_nn_train_fast *f = self;
    vox_nn_pack_fns_for(vox_ctx_cpu(f->ctx)->isa)->act(act, x, n);
}

/* The pointwise act's backward from the layer's output, on vectors (fast_pack.h, in f32: the
 * reference's slope is in double, so the two agree to f32 rounding). */
static void fast_act_backward(void *self, enum vox_nn_act act, const float *y, const float *gy,
                              float *gx, int64_t n)
{
    struct vox_nn_train_fast *f = self;
    vox_nn_pack_fns_for(vox_ctx_cpu(f->ctx)->isa)->act_backward(act, y, gy, gx, n);
}

enum vox_status vox_nn_train_fast_create(struct vox_ctx *ctx, struct vox_nn_train_fast **f_out)
{
    *f_out = NULL;
    struct vox_nn_train_fast *f = vox_calloc(ctx, 1, sizeof *f);
    if (!f)
        return VOX_OUT_OF_MEMORY;
    f->ctx = ctx;
    f->slab_floats = INT64_C(8) << 20;
    f->band_bytes = INT64_C(4) << 20;
    const char *e = getenv("VOX_TRAIN_WINO");
    f->no_wino = e && strcmp(e, "0") == 0;
    e = getenv("VOX_TRAIN_PHASE");
    f->phase_mode = e && strcmp(e, "0") == 0 ? -1 : e && strcmp(e, "1") == 0 ? 1 : 0;
    e = getenv("VOX_TRAIN_FFT"); /* 0: never, 1: every conv it can run (A/B runs) */
    f->fft_mode = e && strcmp(e, "0") == 0 ? -1 : e && strcmp(e, "1") == 0 ? 1 : 0;
    f->table = (struct vox_nn_kernels){f,
                                       fast_conv,
                                       fast_conv_bd,
                                       fast_conv_bw,
                                       fast_deconv,
                                       fast_deconv_bd,
                                       fast_deconv_bw,
                                       fast_act,
                                       fast_act_backward,
                                       fast_conv_bd_set};
    *f_out = f;
    return VOX_OK;
}

void vox_nn_train_fast_destroy(struct vox_nn_train_fast *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->n_cache; i++)
        vox_kernel_destroy(f->cache[i].k);
    vox_free(f->ctx, f->cache);
    for (int i = 0; i < f->n_wino; i++) {
        vox_nn_wino_destroy(f->ctx, f->wino[i].w);
        vox_nn_wino_bw_destroy(f->ctx, f->wino[i].g);
    }
    vox_free(f->ctx, f->wino);
    for (int i = 0; i < f->n_fft; i++)
        vox_nn_fft_destroy(f->ctx, f->fft[i].f);
    vox_free(f->ctx, f->fft);
    for (int i = 0; i < SC_COUNT; i++)
        vox_free(f->ctx, f->scratch[i]);
    vox_free(f->ctx, f);
}

void vox_nn_train_fast_set_slab(struct vox_nn_train_fast *f, int64_t floats)
{
    f->slab_floats = floats > 0 ? floats : 1;
}

void vox_nn_train_fast_set_band(struct vox_nn_train_fast *f, int64_t bytes)
{
    f->band_bytes = bytes > 0 ? bytes : 1;
}

void vox_nn_train_fast_set_phase(struct vox_nn_train_fast *f, int mode)
{
    f->phase_mode = mode < 0 ? -1 : mode > 0 ? 1 : 0;
}

void vox_nn_train_fast_set_fft(struct vox_nn_train_fast *f, int mode)
{
    f->fft_mode = mode < 0 ? -1 : mode > 0 ? 1 : 0;
}

void vox_nn_train_fast_set_fft_group(struct vox_nn_train_fast *f, int64_t tiles)
{
    f->fft_group = tiles > 0 ? tiles : 0;
}

int vox_nn_train_fast_fft_count(const struct vox_nn_train_fast *f)
{
    int n = 0;
    for (int i = 0; i < f->n_fft; i++)
        n += f->fft[i].f != NULL;
    return n;
}

const struct vox_nn_kernels *vox_nn_train_fast_kernels(const struct vox_nn_train_fast *f)
{
    return &f->table;
}

int64_t vox_nn_train_fast_phase_count(const struct vox_nn_train_fast *f)
{
    return f->n_phase;
}

void vox_nn_train_fast_counts(const struct vox_nn_train_fast *f, int64_t *fast_out,
                              int64_t *fallback_out)
{
    *fast_out = f->n_fast;
    *fallback_out = f->n_fallback;
}
