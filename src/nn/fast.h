/*
 * nn/fast.h: what the files of the fast forward pass share: the blocked tensor, the conv
 * description its nests are built from, and the blocked data passes (fast_ops.c).
 */
#ifndef VOX_NN_FAST_H
#define VOX_NN_FAST_H

#include "internal.h"
#include "vox/loop.h"

/* A tensor in the blocked layout (n, ceil(c / blk), z, y, x, blk); lanes past c hold 0 (or any
 * finite value: convolutions multiply them by zero weights). n > 1 only for the fragments of
 * max-pooling fragments (mpf): block cb of entry e is block e * ceil(c / blk) + cb of the
 * whole, so the per-block passes run over n * ceil(c / blk) blocks unchanged. */
struct vox_nn_bt {
    float *data;
    int64_t n, c, blk;
    int64_t s[3]; /* z, y, x */
};

static inline int64_t vox_nn_bt_blocks(const struct vox_nn_bt *t)
{
    return (t->c + t->blk - 1) / t->blk;
}
static inline int64_t vox_nn_bt_vol(const struct vox_nn_bt *t)
{
    return t->s[0] * t->s[1] * t->s[2];
}
/* Floats of one batch entry. */
static inline int64_t vox_nn_bt_elems(const struct vox_nn_bt *t)
{
    return vox_nn_bt_blocks(t) * vox_nn_bt_vol(t) * t->blk;
}
/* Batch entry e of t, as a tensor of its own. */
/* Tile t of a grid of nt[0] x nt[1] x nt[2] tiles per batch entry, numbered over the batch
 * entry, z, y, x: its tile index per axis in idx; returns its batch entry. */
static inline int64_t vox_nn_tile_decode(const int64_t nt[3], int64_t t, int64_t idx[3])
{
    idx[2] = t % nt[2];
    t /= nt[2];
    idx[1] = t % nt[1];
    t /= nt[1];
    idx[0] = t % nt[0];
    return t / nt[0];
}

static inline struct vox_nn_bt vox_nn_bt_entry(const struct vox_nn_bt *t, int64_t e)
{
    struct vox_nn_bt v = *t;
    v.data = t->data + e * vox_nn_bt_elems(t);
    v.n = 1;
    return v;
}

/* One conv or transposed conv: in/out spatial extents (conv: `in` is the padded input),
 * channels, the blocks of the input (bin) and output (b), kernel, dilation, fused ops. */
struct vox_nn_fast_conv {
    int64_t n; /* batch entries (mpf fragments), each convolved alike */
    int64_t cin, cout, bin, b;
    int64_t in[3], out[3], k[3], dil[3];
    bool bias;
    enum vox_nn_act act; /* not softmax */
    bool lanes_free;     /* only output layers read the result: its lanes past cout may be
                            left unwritten (the narrow-output nest, fast_conv.c) */
    bool residual;       /* a tensor laid out as the output is added after the bias, before
                            the activation (a fused add layer; the nest's next tensor operand) */
    int64_t fft_n[3];    /* FFT: this transform size per axis (0: chosen by the cost model;
                            the planner's timing slab keeps the whole layer's tiles) */
    int64_t fft_group;   /* FFT: at most this many tiles per group (0: from the memory cap) */
};

/* The nests (A = input, B = packed weights, C = output, extra[0] = packed bias if bias). */
void vox_nn_fast_conv_nest(const struct vox_nn_fast_conv *c, int isa, struct vox_nest *n);
void vox_nn_fast_deconv_nest(const struct vox_nn_fast_conv *c, int isa, struct vox_nest *n);
/* Floats of the packed weights; the packed bias has ceil(cout / b) * b floats. */
int64_t vox_nn_fast_pack_elems(const struct vox_nn_fast_conv *c);
/* Repacks PyTorch weights (conv (out, in, k..), deconv (in, out, k..)) and the bias (NULL:
 * zeros) for the nests. */
void vox_nn_fast_pack(const struct vox_nn_fast_conv *c, bool deconv, const float *w,
                      const float *bias, float *w_out, float *bias_out);

/* ---- FFT convolution (fast_fft.c) ---- */

struct vox_nn_fft;
/* Frequencies per block of the spectra's layout ([re FB][im FB] floats). */
#define VOX_NN_FFT_FB 16
/* Estimated work (transforms + complex multiply-adds, in flops; *products_out: the latter)
 * and bytes held with `threads` workers; the planner's cost model. */
double vox_nn_fft_flops(const struct vox_nn_fast_conv *c, double *products_out);
size_t vox_nn_fft_bytes(const struct vox_nn_fast_conv *c, int threads);
/* The cost model's time for c (vox_nn_conv_model's units). */
double vox_nn_fft_time(const struct vox_nn_fast_conv *c);
/* The transform size per axis the cost model picks for c (tiles of n - extent + 1 outputs). */
void vox_nn_fft_size(const struct vox_nn_fast_conv *c, int64_t n_out[3]);
/* A conv (not deconv) with PyTorch weights w (out, in, k..) and bias (NULL: zeros); the input
 * tensor sits at padlo inside the extent c->in (same padding; 0 for valid). Plans the
 * transforms and caches the kernel spectra. */
enum vox_status vox_nn_fft_create(struct vox_ctx *ctx, const struct vox_nn_fast_conv *c,
                                  const int64_t padlo[3], const float *w, const float *bias,
                                  struct vox_nn_fft **fft_out);
void vox_nn_fft_destroy(struct vox_ctx *ctx, struct vox_nn_fft *f);
/* out = act(conv(in) + bias) for every batch entry; pool may be NULL. Bitwise identical for
 * any thread count. */
void vox_nn_fft_run(struct vox_nn_fft *f, struct vox_pool *pool, const struct vox_nn_bt *in,
                    struct vox_nn_bt *out);
/* For training (fast_train.c): vox_nn_fft_run with activation act (for this run and the
 * next), adding into out (add) or writing it; new
 * weights w (and bias) for the next runs (create may then take w NULL), or (transposed) the
 * adjoint's: kernel (k, c) is w's (c, k) flipped on every axis (the backward-data conv of the
 * layer whose weights w are, run on the output gradient); and gw (cout, cin, k) += the
 * weight gradient of the conv f computes, from its input in and output gradient gout (one
 * correlation per tile and channel pair, summed over the tiles in their order, in frequency;
 * f's kernel spectra are overwritten: set the weights again before a run). */
void vox_nn_fft_run_add(struct vox_nn_fft *f, struct vox_pool *pool, const struct vox_nn_bt *in,
                        struct vox_nn_bt *out, enum vox_nn_act act, bool add);
void vox_nn_fft_set_weights(struct vox_nn_fft *f, struct vox_pool *pool, const float *w,
                            const float *bias, bool transposed);
/* An FFT conv whose big buffers (kernel spectra, a group's input and output spectra, the
 * weight gradient's per-thread block) are lent at each use: their floats (n[0..3]) and
 * vox_nn_fft_bind, before vox_nn_fft_set_weights (training's convs share one set). */
enum vox_status vox_nn_fft_create_lent(struct vox_ctx *ctx, const struct vox_nn_fast_conv *c,
                                       const int64_t padlo[3], struct vox_nn_fft **fft_out);
void vox_nn_fft_lent_floats(const struct vox_nn_fft *f, int64_t n_out[4]);
void vox_nn_fft_bind(struct vox_nn_fft *f, float *w, float *xs, float *ys, float *wtmp);
void vox_nn_fft_weights_grad(struct vox_nn_fft *f, struct vox_pool *pool,
                             const struct vox_nn_bt *in, const struct vox_nn_bt *gout, float *gw);
/* The spectral products of one frequency block (fast_fft_mul.h), per ISA: y [t][k] =
 * sum over c of x [t][c] * w [k][c], complex blocks of VOX_NN_FFT_FB lanes. */
typedef void vox_nn_fft_mul_fn(const float *x, const float *w, float *y, int64_t tiles, int64_t cin,
                               int64_t cout);
vox_nn_fft_mul_fn vox_nn_fft_mul_ref, vox_nn_fft_mul_avx2, vox_nn_fft_mul_avx512;

/* ---- Winograd convolution F(2,3) per axis (fast_wino.c) ---- */

struct vox_nn_wino;
/* A conv it applies to: dilation 1, every kernel extent 1 or 3, at least two of them 3, its
 * tensors not planar (blocks of 1; a 1-channel input may be). */
bool vox_nn_wino_ok(const struct vox_nn_fast_conv *c);
/* Work: returns the flops of the products of the transformed tiles (output lanes padded to
 * the block), *transforms_out the floats the transforms read and write; and the bytes held
 * with `threads` workers (transformed weights, per-thread blocks). The planner's cost model. */
double vox_nn_wino_flops(const struct vox_nn_fast_conv *c, double *transforms_out);
size_t vox_nn_wino_bytes(const struct vox_nn_fast_conv *c, int threads);
/* The bytes of V and M in one block of tiles on a core with l2_bytes of L2 (3/4 of it, within
 * fixed bounds). An output's sums do not depend on it. */
int64_t vox_nn_wino_block_bytes(int64_t l2_bytes);
/* A conv with vox_nn_wino_ok, c->b the context ISA's lanes, PyTorch weights w (out, in, k..)
 * and bias (NULL: zeros); the input tensor sits at padlo inside the extent c->in (same
 * padding; 0 for valid). Transforms the weights and compiles the products' nest. */
enum vox_status vox_nn_wino_create(struct vox_ctx *ctx, const struct vox_nn_fast_conv *c,
                                   const int64_t padlo[3], const float *w, const float *bias,
                                   struct vox_nn_wino **wino_out);
void vox_nn_wino_destroy(struct vox_ctx *ctx, struct vox_nn_wino *f);
/* With w NULL, vox_nn_wino_create transforms no weights and allocates neither the transformed
 * weights nor the per-thread blocks: the caller lends them (u_out and work_out floats) with
 * vox_nn_wino_bind before vox_nn_wino_set_weights and each run, so that convs run one after
 * the other share them (training: the weights change every step anyway). */
void vox_nn_wino_lent_floats(const struct vox_nn_wino *f, int64_t *u_out, int64_t *work_out);
void vox_nn_wino_bind(struct vox_nn_wino *f, float *u, float *work);
/* New weights and bias (NULL: zeros) for f, transformed in f32 axis by axis (training: every
 * step): w as at create, or with `flip` the weights (c->cout, c->cin, k..) of the conv whose
 * backward-data f computes (U from w'[o][i][t] = w[i][o][K - 1 - t]). *ok_out: false when
 * memory is short (f unchanged then). */
void vox_nn_wino_set_weights(struct vox_ctx *ctx, struct vox_nn_wino *f, const float *w,
                             const float *bias, bool flip, bool *ok_out);
/* out = act(conv(in) + bias [+ res]) for every batch entry (in->n == c->n); res: NULL or a
 * tensor shaped as out (a residual add fused into the output transform); pool may be NULL.
 * Bitwise identical for any thread count. */
void vox_nn_wino_run(struct vox_nn_wino *f, struct vox_pool *pool, const struct vox_nn_bt *in,
                     const struct vox_nn_bt *res, struct vox_nn_bt *out);
/* The bands of f's tiles (fast_wino.h vox_nn_wino_geom_band: rows or planes of tiles whose
 * packed input is about `bytes`, a band's tiles [t0, t1) and the box [lo, hi) of the input
 * extent s it reads). */
int64_t vox_nn_wino_bands(const struct vox_nn_wino *f, const int64_t s[3], int64_t bytes);
void vox_nn_wino_band(const struct vox_nn_wino *f, const int64_t s[3], int64_t bytes, int64_t b,
                      int64_t *t0, int64_t *t1, int64_t lo[3], int64_t hi[3]);
/* vox_nn_wino_run over tiles [t0, t1) only, with `in` the part of the input whose origin in
 * the whole input is off (a band's box), so that only that part need be packed. */
void vox_nn_wino_run_tiles(struct vox_nn_wino *f, struct vox_pool *pool, const struct vox_nn_bt *in,
                           const int64_t off[3], int64_t t0, int64_t t1,
                           const struct vox_nn_bt *res, struct vox_nn_bt *out);

/* The weight gradient of such a conv by Winograd (fast_wino_bw.c):
 *     gw[o][i][t] += sum over positions q of gout[o][q] in[i][q + t]
 * with the roles of F(m, 3) transposed: per tile of m outputs, the input tile's transform
 * V = B^T d B (the forward's), the gradient tile's W = A g A^T, and per transform position p
 * D[p][i][o] = sum over tiles of V[p][i] W[p][o]; once at the end gw = G^T D G. c: as for
 * vox_nn_wino_create (act and bias unused), c->n == 1. The buffers are lent: `work` (per-thread
 * blocks) and `sums` (fixed partial sums: the same bits for any thread count). */
struct vox_nn_wino_bw;
enum vox_status vox_nn_wino_bw_create(struct vox_ctx *ctx, const struct vox_nn_fast_conv *c,
                                      const int64_t padlo[3], struct vox_nn_wino_bw **bw_out);
void vox_nn_wino_bw_destroy(struct vox_ctx *ctx, struct vox_nn_wino_bw *f);
void vox_nn_wino_bw_lent_floats(const struct vox_nn_wino_bw *f, int64_t *work_out,
                                int64_t *sums_out);
/* Adds one batch item's products into sums (zeroed first when `first`): in blocked (blocks of
 * the ISA's lanes), gout planar, both one batch entry. pool may be NULL. */
void vox_nn_wino_bw_run(const struct vox_nn_wino_bw *f, struct vox_pool *pool,
                        const struct vox_nn_bt *in, const struct vox_nn_bt *gout, float *work,
                        float *sums, bool first);
/* vox_nn_wino_bw_run with the input planar (one batch entry: shape (1, cin, s)), which each
 * thread packs band by band (about `bytes` each, its rows stay in the caches for its tiles) into
 * its part of `bands` (vox_nn_wino_bw_band_floats for all threads; 0 where f cannot: its
 * threads share each block, pack the whole input for vox_nn_wino_bw_run). */
int64_t vox_nn_wino_bw_band_floats(const struct vox_nn_wino_bw *f, const int64_t s[3],
                                   int64_t bytes);
void vox_nn_wino_bw_run_bands(const struct vox_nn_wino_bw *f, struct vox_pool *pool, int isa,
                              const struct vox_tensor *in, float *bands, int64_t bytes,
                              const struct vox_nn_bt *gout, float *work, float *sums, bool first);
/* gw (cout, cin, k..) += G^T D G of the sums of every run since the first (work: as at run);
 * gb (NULL: none) += the sums of gout (taken from the gradient transform: one position of each
 * tile's holds the tile's sum). */
void vox_nn_wino_bw_finish(const struct vox_nn_wino_bw *f, struct vox_pool *pool, const float *sums,
                           float *work, float *gw, float *gb);

/* ---- the planner's conv algorithm: cost model (fast.c), measurement and cache (fast_tune.c) */

/* The conv algorithms, as indices: 0 direct, 1 FFT, 2 Winograd (VOX_NN_CONV_DIRECT + index). */
#define VOX_NN_ALGOS 3

/* The cost model's times of the direct nest, the FFT and Winograd (HUGE_VAL where it does not
 * apply), in seconds at 1 flop/s (relative). */
void vox_nn_conv_model(const struct vox_nn_fast_conv *c, double t_out[VOX_NN_ALGOS]);
/* The whole layer's times in ms of the algorithms in mask (bit i: index i; 0 for the others),
 * from t's cache or else timed on a slab of c (padlo: the same padding, 0 for valid);
 * *source_out is CACHED or MEASURED. */
enum vox_status vox_nn_tune_times(struct vox_nn_tune *t, struct vox_ctx *ctx,
                                  const struct vox_nn_fast_conv *c, const int64_t padlo[3],
                                  unsigned mask, double ms_out[VOX_NN_ALGOS],
                                  enum vox_nn_algo_source *source_out);

/* ---- blocked passes (fast_ops.c); pool may be NULL; results do not depend on threads ---- */

/* (1, C, Z, Y, X) f32 of any strides -> blocked (pad lanes 0), and back (first C channels). */
/* The row transposes of packing and unpacking (fast_pack.h), per ISA, for blocks of `lanes`:
 * pack: dst[x * lanes + l] = src[l][x] (src[l] NULL: 0); unpack: dst[l][x] = src[x * lanes +
 * l] (dst[l] NULL: skipped); x < n. */
struct vox_nn_pack_fns {
    int lanes;
    void (*pack)(const float *const *src, float *dst, int64_t n);
    void (*unpack)(const float *src, float *const *dst, int64_t n);
    /* x[i] = act(x[i]), i < n, in vector form (fast_vact.h: the JIT's method, within 4e-7
     * relative of libm's) */
    void (*act)(enum vox_nn_act act, float *x, int64_t n);
    /* gx[i] = gy[i] * act'(y[i]) from the act's output y, i < n (gx may be gy) */
    void (*act_backward)(enum vox_nn_act act, const float *y, const float *gy, float *gx,
                         int64_t n);
    /* pack with non-temporal stores (dst aligned to L floats), for a packed tensor larger
     * than the cache that is read back only after it is all written */
    void (*pack_stream)(const float *const *src, float *dst, int64_t n);
};
extern const struct vox_nn_pack_fns vox_nn_pack_ref, vox_nn_pack_avx2, vox_nn_pack_avx512;
/* The table for isa (an enum vox_isa). */
const struct vox_nn_pack_fns *vox_nn_pack_fns_for(int isa);
/* Packs src (1, C, Z, Y, X) into dst (the row transposes of isa's table where the block is
 * its width and x is contiguous). */
void vox_nn_bt_pack(struct vox_pool *pool, int isa, const struct vox_tensor *src,
                    struct vox_nn_bt *dst);
/* The same with non-temporal stores (dst->data aligned to 64 bytes): for a packed tensor
 * larger than the cache, read back only after it is all written. */
void vox_nn_bt_pack_stream(struct vox_pool *pool, int isa, const struct vox_tensor *src,
                           struct vox_nn_bt *dst);

/* The phase view of a conv (fast_phase.c): the full tensor (n, c, full) as a view (n, fold c,
 * sub[0] P, sub[1], sub[2]) of its d[0] x d[1] residue classes in y and x (P of them, plane
 * z P + r holding phase r of plane z) with `fold` copies of the channels, copy j shifted by
 * j dz - pz planes. */
struct vox_nn_phase {
    int64_t n, c, full[3];
    int64_t d[2];   /* the y and x dilation: phases */
    int64_t fold;   /* z taps folded into channels (1: none) */
    int64_t dz, pz; /* their z dilation and the conv's z padding */
    int64_t sub[3]; /* a phase's extents: planes, rows, columns */
};
/* dst (c, blk set; its extents set here) = the box [lo, hi) of batch entry n of the view of
 * full, packed as vox_nn_bt_pack packs (0 where the view's position is outside full). */
void vox_nn_phase_pack(struct vox_pool *pool, int isa, const struct vox_nn_phase *ph,
                       const float *full, int64_t n, const int64_t lo[3], const int64_t hi[3],
                       struct vox_nn_bt *dst);
/* full = (or += with `add`) the adjoint of the view, from the view written out planar (sub):
 * each position the sum of the view's values taken from it, copies in ascending order. */
void vox_nn_phase_scatter(struct vox_pool *pool, const struct vox_nn_phase *ph, const float *sub,
                          float *full, bool add);

/* Unpacks act(src) (a pointwise act, not softmax): an output layer fused into the unpacking. */
void vox_nn_bt_unpack_act(struct vox_pool *pool, int isa, const struct vox_nn_bt *src,
                          enum vox_nn_act act, struct vox_tensor *dst);
/* dst = src with zero borders: dst voxel p + lo holds src voxel p. */
void vox_nn_bt_pad(struct vox_pool *pool, const struct vox_nn_bt *src, const int64_t lo[3],
                   struct vox_nn_bt *dst);
/* Max over a window: pooling (stride = window, dilation 1) or filtering (stride 1). */
void vox_nn_bt_max(struct vox_pool *pool, const struct vox_nn_bt *in, const int64_t window[3],
                   const int64_t dilation[3], bool pool_stride, struct vox_nn_bt *out);
/* Max-pooling fragments: entry e * F + f of out is entry e of in pooled at offset f (the
 * index formula of vox_nn_ref_mpf). */
void vox_nn_bt_mpf(struct vox_pool *pool, const struct vox_nn_bt *in, const int64_t window[3],
                   struct vox_nn_bt *out);
/* The dense tensor from the fragments of `levels` mpf layers (vox_nn_ref_interleave). */
void vox_nn_bt_interleave(struct vox_pool *pool, const struct vox_nn_bt *in, int levels,
                          const int64_t (*win)[3], struct vox_nn_bt *out);
void vox_nn_bt_upsample(struct vox_pool *pool, const struct vox_nn_bt *in, const int64_t f[3],
                        struct vox_nn_bt *out);
void vox_nn_bt_crop(struct vox_pool *pool, const struct vox_nn_bt *in, const int64_t lo[3],
                    struct vox_nn_bt *out);
void vox_nn_bt_add(struct vox_pool *pool, const struct vox_nn_bt *const *in, int n,
                   enum vox_nn_act act, struct vox_nn_bt *out);
void vox_nn_bt_concat(struct vox_pool *pool, const struct vox_nn_bt *const *in, int n,
                      struct vox_nn_bt *out);
/* out = act(in), softmax over channels; in may equal out. */
void vox_nn_bt_act(struct vox_pool *pool, const struct vox_nn_bt *in, enum vox_nn_act act,
                   struct vox_nn_bt *out);

/* A pointwise activation in float, for the C passes of the fast path (FFT output, blocked
 * ops); softmax is done by its own pass. */
static inline float vox_nn_act1f(enum vox_nn_act a, float v)
{
    switch (a) {
    case VOX_ACT_RELU:
        return v > 0 ? v : 0;
    case VOX_ACT_ELU:
        return v > 0 ? v : expm1f(v);
    case VOX_ACT_SIGMOID:
        return 1.0f / (1.0f + expf(-v));
    case VOX_ACT_TANH:
        return tanhf(v);
    default:
        return v;
    }
}

#endif
