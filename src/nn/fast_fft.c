/*
 * fast_fft.c: FFT convolution for the fast forward pass (large kernels, 5^3 and up), through
 * FFTW's single-precision real transforms, tiled by overlap-save.
 *
 * Key idea (ZNNi, reference note znn.md sections 2.2-2.3): a convolution is a pointwise product
 * of spectra. A transform of n >= m + ke - 1 points per axis (ke = (k - 1) * dilation + 1, the
 * kernel's extent) turns the circular convolution of an input tile with the flipped kernel into
 * the linear one on m valid outputs (overlap-save), so per tile t and output channel k
 *     out[k][t][p] = act(bias[k] + c2r(sum_c X_tc * W_kc)[p + ke - 1]),   0 <= p < m,
 * with X_tc = r2c(input tile t of channel c) and W_kc = r2c(flipped, dilated kernel) / N,
 * computed once at create. One tile covering the layer is the classic whole-volume FFT; the
 * kernel spectra then cost cin * cout spectra of the whole volume (n537's 80 -> 80 5^3 layer
 * on 112^3: 36 GB), so the transform size is chosen per layer by a cost model (transforms,
 * products, bytes moved) under a memory cap: smaller tiles mean fewer bytes of spectra, more
 * overlap (ke - 1 recomputed planes per tile) and more, smaller transforms.
 *
 * The products, summed over input channels, are per frequency a complex matrix product of
 * (tiles x cin) by (cin x cout): with many tiles they are compute-bound, run by the per-ISA
 * kernel of fast_fft_mul.h on blocks of VOX_NN_FFT_FB frequencies ([re FB][im FB] floats):
 * X is [fb][t][c], W [fb][c][k], Y [fb][t][k] blocks.
 *
 * Run, per group of tiles (the group bounds the spectra held, each group re-reads W):
 * (1) threads over (tile, input channel): gather the tile from the blocked layout into a
 * zeroed real buffer (zeros outside the input: same padding and tails need no padded copy),
 * r2c, scatter the spectrum into X's blocks; (2) threads over frequency blocks: Y = X W;
 * (3) threads over (tile, output channel): gather Y's blocks, c2r, write bias + act of the
 * valid region into the tile's outputs. Every output value has one writer and a fixed order of
 * sums, the groups do not depend on the thread count, and FFTW plans made with FFTW_ESTIMATE
 * are chosen without timing (the same plan for the same sizes in every process; a fixed plan
 * executed on equally aligned arrays is deterministic), so results are bitwise identical for
 * any thread count and across runs. Transform sizes are even products of 2, 3, 5 and 7.
 *
 * Training (fast_train.c) uses the same object three ways: the forward with the weights set
 * at every step (vox_nn_fft_set_weights); the backward-data as the conv of the output gradient
 * with the transposed, flipped kernels (an object of its own, outputs added into the input's
 * gradient); and the weight gradient (vox_nn_fft_weights_grad) on the forward's object: per
 * tile, the spectra of the input tile X and of the tile's output gradient G (its m outputs at
 * the origin, zeros after: the correlation sum_q g[q] x[q + s] does not wrap for s < ke), and
 * per frequency W[k][c] += sum_t conj(G[t][k]) X[t][c] by the same product kernel with the
 * tiles as its reduction, then one c2r per (k, c) read at the taps' offsets t * dilation.
 *
 * FFTW's planner is process-global and not thread-safe: plan creation and destruction are
 * serialised by one mutex here; executing plans (fftwf_execute_dft_*) is thread-safe.
 * Memory (vox_nn_fft_bytes): the kernel spectra, one group's X and Y, per thread a real
 * volume and a spectrum of one tile.
 */
#include "fast.h"

#include <fftw3.h>
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>

static pthread_mutex_t planner_lock = PTHREAD_MUTEX_INITIALIZER;

enum { BL = 2 * VOX_NN_FFT_FB }; /* floats per complex block */

/* The tiling of one conv. */
struct geom {
    int64_t n[3], m[3], nt[3], ke[3]; /* transform size, outputs per tile, tiles, extent */
    int64_t tiles;                    /* per batch entry */
    int64_t ncplx, fb;                /* complex numbers per spectrum, frequency blocks */
    int64_t group;                    /* tiles per group (over all batch entries) */
    int64_t lanes;                    /* channels per task of the transforms */
};

struct vox_nn_fft {
    struct vox_nn_fast_conv cv;
    struct geom g;
    int64_t lo[3];
    int threads;
    int64_t rstride, cstride; /* floats between real volumes, between spectra */
    fftwf_plan fwd, inv;
    fftwf_plan kx, ky, kz; /* the kernels' pruned transform, axis by axis (plan_pruned) */
    bool add;              /* vox_nn_fft_run_add: the outputs are added into out */
    int64_t wgroup;        /* weights_grad's tiles per group: the cost model's, not widened
                              for the threads (its sums then do not depend on them) */
    float *wtmp;           /* weights_grad: per thread, one frequency block's products */
    bool lent;             /* w, xs, ys and wtmp are the caller's (vox_nn_fft_bind) */
    vox_nn_fft_mul_fn *mul;
    float *w;    /* kernel spectra [fb][cout][cin] blocks */
    float *xs;   /* one group's input spectra [fb][t][cin] blocks */
    float *ys;   /* one group's output spectra [fb][t][cout] blocks */
    float *rbuf; /* per thread: g.lanes real volumes */
    float *cbuf; /* per thread: g.lanes spectra, interleaved complex */
    float *bias; /* cout */
};

/* The relative cost of the parts, in the planner's units (vox_nn_conv_model: the direct
 * nest's flops / 0.35), fitted to 2-thread runs on a Zen 5 EPYC (n537's 80 -> 80 5^3 layer on
 * 112^3 in 32^3 tiles: transforms with their gathers and scatters 0.6 s, products 0.23 s;
 * 8 -> 8 5^3 on 36x132x132: 0.04 s): transforms at 1.8 % of the nest's rate (FFTW runs at
 * 15-30 GFLOP/s, and the tiles' spectra move through memory twice), products at 20 %, and a
 * byte of kernel spectra streamed from memory, once per group of tiles, 25 flops. */
static const double TR_RATE = 0.018, MUL_RATE = 0.2, BYTE_COST = 25.0;

/* Bytes of real volumes and spectra per thread at most (a task transforms up to a block of
 * channels of one tile at once, so it reads the blocked layout's lines once, not once per
 * channel, and writes the spectra's blocks of adjacent channels together). */
enum { LANE_BYTES = 4 << 20 };

static int64_t cdiv(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

/* The smallest size >= n that FFTW transforms fast with plans made without timing: 1, 2^a
 * or 3 * 2^a (even) (measured on Zen 5: 32^3 and 64^3 run at 26-31 GFLOP/s, 24^3 and 48^3 at 12-17,
 * but 40^3 at 8.6 and 30^3 at 5.9). */
static int64_t good_size(int64_t n)
{
    if (n <= 1)
        return 1;
    for (int64_t p = 2;; p *= 2) { /* 2, 4, 6, 8, 12, 16, 24, ... */
        if (p >= n)
            return p;
        if (p >= 4 && 3 * p / 2 >= n)
            return 3 * p / 2;
    }
}

static size_t spectra_bytes(const struct vox_nn_fast_conv *c, const struct geom *g)
{
    return (size_t)(c->cin * c->cout * g->fb * BL) * sizeof(float);
}

/* The tiling with transform sizes n; a group's spectra take at most the kernel spectra's bytes
 * or 32 MiB (at least one tile, balanced over the groups; a small layer's kernel spectra are
 * read once per group: 8 -> 8 5^3 ran 9 % faster than with 4 MiB). */
static void geom_of(const struct vox_nn_fast_conv *c, const int64_t n[3], struct geom *g)
{
    g->tiles = 1;
    for (int a = 0; a < 3; a++) {
        g->n[a] = n[a];
        g->ke[a] = (c->k[a] - 1) * c->dil[a] + 1;
        g->m[a] = n[a] - g->ke[a] + 1;
        g->nt[a] = cdiv(c->out[a], g->m[a]);
        g->tiles *= g->nt[a];
    }
    g->ncplx = n[0] * n[1] * (n[2] / 2 + 1);
    g->fb = cdiv(g->ncplx, VOX_NN_FFT_FB);
    double per_tile = (double)((c->cin + c->cout) * g->fb * BL) * sizeof(float);
    double budget = fmax((double)spectra_bytes(c, g), 32.0 * (1 << 20));
    int64_t all = c->n * g->tiles, most = (int64_t)fmax(1.0, floor(budget / per_tile));
    most = c->fft_group > 0 && c->fft_group < most ? c->fft_group : most;
    g->group = cdiv(all, cdiv(all, most));
    int64_t vol = n[0] * n[1] * n[2], blk = c->bin > c->b ? c->bin : c->b;
    int64_t lane = (vol + 2 * g->ncplx) * (int64_t)sizeof(float); /* a volume and a spectrum */
    for (g->lanes = 1; 2 * g->lanes <= blk && 2 * g->lanes * lane <= (int64_t)LANE_BYTES;)
        g->lanes *= 2;
}

/* Model time, transform and product flops of the tiling g. */
static double cost(const struct vox_nn_fast_conv *c, const struct geom *g, double *tr_out,
                   double *mul_out)
{
    double vol = (double)(g->n[0] * g->n[1] * g->n[2]), tiles = (double)(c->n * g->tiles);
    double fft = vol > 1 ? 2.5 * vol * log2(vol) : 1.0;
    for (int a = 0; a < 3; a++)
        fft *= g->n[a] % 3 == 0 ? 1.3 : 1.0; /* the factor-3 sizes run at about half the rate */
    *tr_out = (double)(c->cin + c->cout) * fft * tiles;
    *mul_out = 8.0 * (double)(c->cin * c->cout) * (double)(g->fb * VOX_NN_FFT_FB) * tiles;
    double bytes = (double)spectra_bytes(c, g) * ceil(tiles / (double)g->group);
    return *tr_out / TR_RATE + *mul_out / MUL_RATE + bytes * BYTE_COST;
}

/* The candidate sizes of axis a: per tile count, the smallest transform that covers it, down
 * to tiles of about the kernel's extent; c->fft_n[a] alone where given. */
static int candidates(const struct vox_nn_fast_conv *c, int a, int64_t out[64])
{
    if (c->fft_n[a] > 0) {
        out[0] = c->fft_n[a];
        return 1;
    }
    int64_t ke = (c->k[a] - 1) * c->dil[a] + 1;
    int count = 0;
    for (int64_t nt = 1; count < 64 && nt <= c->out[a]; nt++) {
        int64_t n = good_size(cdiv(c->out[a], nt) + ke - 1);
        if (count > 0 && n - ke + 1 < ke)
            break; /* tiles smaller than the kernel: mostly overlap */
        if (count == 0 || n < out[count - 1])
            out[count++] = n;
    }
    return count;
}

/* The cheapest tiling whose kernel spectra stay within twice the layer's activations or 4 MiB
 * (the tiling with the fewest bytes of spectra where none does). */
static void choose(const struct vox_nn_fast_conv *c, struct geom *best)
{
    int64_t cand[3][64];
    int nc[3];
    for (int a = 0; a < 3; a++)
        nc[a] = candidates(c, a, cand[a]);
    double act = 2.0 *
                 (double)((cdiv(c->cin, c->bin) * c->bin + cdiv(c->cout, c->b) * c->b) * c->n *
                          c->in[0] * c->in[1] * c->in[2]) *
                 sizeof(float);
    double best_t = HUGE_VAL, best_bytes = HUGE_VAL, tr, mul;
    bool fits = false;
    for (int i = 0; i < nc[0]; i++)
        for (int j = 0; j < nc[1]; j++)
            for (int k = 0; k < nc[2]; k++) {
                struct geom g;
                geom_of(c, (int64_t[]){cand[0][i], cand[1][j], cand[2][k]}, &g);
                double bytes = (double)spectra_bytes(c, &g), t = cost(c, &g, &tr, &mul);
                bool ok = bytes <= fmax(act, (double)(4 << 20));
                if ((ok && (!fits || t < best_t)) || (!ok && !fits && bytes < best_bytes)) {
                    *best = g;
                    best_t = t;
                    best_bytes = bytes;
                    fits = ok;
                }
            }
}

void vox_nn_fft_size(const struct vox_nn_fast_conv *c, int64_t n_out[3])
{
    struct geom g;
    choose(c, &g);
    memcpy(n_out, g.n, sizeof g.n);
}

double vox_nn_fft_flops(const struct vox_nn_fast_conv *c, double *products_out)
{
    struct geom g;
    double tr, mul;
    choose(c, &g);
    cost(c, &g, &tr, &mul);
    if (products_out)
        *products_out = mul;
    return tr + mul;
}

double vox_nn_fft_time(const struct vox_nn_fast_conv *c)
{
    struct geom g;
    double tr, mul;
    choose(c, &g);
    return cost(c, &g, &tr, &mul);
}

/* Every thread's buffers start 64-byte aligned, as the ones the plans were made on: FFTW may
 * only execute a plan on arrays aligned like its planning arrays. */
static int64_t round16(int64_t n)
{
    return cdiv(n, 16) * 16;
}

/* A stride between a thread's buffers: 64-byte multiples, and an odd count of cache lines so
 * the same position in every lane's buffer does not fall into one cache set. */
static int64_t pad_stride(int64_t n)
{
    return (round16(n) / 16 | 1) * 16;
}

/* At least 4 tiles per thread in a group (unless c->fft_group says otherwise), whatever the
 * memory cap gave: a group's transform stages have a task per tile and block of channels, and
 * groups of 3 tiles of an 8-channel layer left one of 2 threads idle a third of the time. The
 * grouping does not change a bit of the result (each tile's sums are its own). */
static void widen_group(const struct vox_nn_fast_conv *c, struct geom *g, int threads)
{
    const int64_t all = c->n * g->tiles, want = 4 * (int64_t)threads;
    if (c->fft_group == 0 && g->group < want)
        g->group = cdiv(all, cdiv(all, want < all ? want : all));
}

size_t vox_nn_fft_bytes(const struct vox_nn_fast_conv *c, int threads)
{
    struct geom g;
    choose(c, &g);
    widen_group(c, &g, threads);
    int64_t vol = g.n[0] * g.n[1] * g.n[2];
    size_t group = (size_t)(g.group * (c->cin + c->cout) * g.fb * BL) * sizeof(float);
    return spectra_bytes(c, &g) + group +
           (size_t)(threads * g.lanes * (pad_stride(vol) + pad_stride(2 * g.ncplx)) + c->cout +
                    threads * c->cin * c->cout * BL) *
               sizeof(float);
}

void vox_nn_fft_destroy(struct vox_ctx *ctx, struct vox_nn_fft *f)
{
    if (!f)
        return;
    pthread_mutex_lock(&planner_lock);
    if (f->fwd)
        fftwf_destroy_plan(f->fwd);
    if (f->inv)
        fftwf_destroy_plan(f->inv);
    fftwf_plan p[3] = {f->kx, f->ky, f->kz};
    for (int a = 0; a < 3; a++)
        if (p[a])
            fftwf_destroy_plan(p[a]);
    pthread_mutex_unlock(&planner_lock);
    if (!f->lent) {
        vox_free(ctx, f->w);
        vox_free(ctx, f->xs);
        vox_free(ctx, f->ys);
        vox_free(ctx, f->wtmp);
    }
    vox_free(ctx, f->rbuf);
    vox_free(ctx, f->cbuf);
    vox_free(ctx, f->bias);
    vox_free(ctx, f);
}

/* The `lanes` spectra at s (interleaved, g->ncplx numbers, cstride floats apart) into the
 * blocks at dst (channel l's at dst + l * BL, frequency blocks `stride` floats apart; lanes
 * past the spectrum: 0), scaled by `scale`. Block by block over the lanes: the adjacent
 * channels' blocks are one run of memory (one page, not `lanes`). */
static void scatter(const struct geom *g, const float *restrict s, int64_t cstride, int64_t lanes,
                    float *restrict dst, int64_t stride, float scale)
{
    enum { FB = VOX_NN_FFT_FB };
    for (int64_t b = 0; b < g->fb; b++) {
        int64_t e = g->ncplx - b * FB < FB ? g->ncplx - b * FB : FB;
        for (int64_t i = 0; b + 2 < g->fb && i < lanes * BL; i += 16)
            __builtin_prefetch(dst + (b + 2) * stride + i, 1);
        for (int64_t l = 0; l < lanes; l++) {
            float *restrict d = dst + b * stride + l * BL;
            const float *restrict q = s + l * cstride + 2 * b * FB;
            if (e == FB) { /* a constant count: vectorised */
                for (int64_t i = 0; i < FB; i++) {
                    d[i] = q[2 * i] * scale;
                    d[FB + i] = q[2 * i + 1] * scale;
                }
                continue;
            }
            for (int64_t i = 0; i < FB; i++) {
                d[i] = i < e ? q[2 * i] * scale : 0.0f;
                d[FB + i] = i < e ? q[2 * i + 1] * scale : 0.0f;
            }
        }
    }
}

/* The inverse of scatter (scale 1). */
static void gather(const struct geom *g, const float *restrict src, int64_t stride, int64_t lanes,
                   float *restrict s, int64_t cstride)
{
    enum { FB = VOX_NN_FFT_FB };
    for (int64_t b = 0; b < g->fb; b++) {
        int64_t e = g->ncplx - b * FB < FB ? g->ncplx - b * FB : FB;
        for (int64_t i = 0; b + 2 < g->fb && i < lanes * BL; i += 16)
            __builtin_prefetch(src + (b + 2) * stride + i); /* 2 blocks ahead: the stride
                                                               defeats the prefetchers */
        for (int64_t l = 0; l < lanes; l++) {
            const float *restrict d = src + b * stride + l * BL;
            float *restrict q = s + l * cstride + 2 * b * FB;
            if (e == FB) { /* a constant count: vectorised */
                for (int64_t i = 0; i < FB; i++) {
                    q[2 * i] = d[i];
                    q[2 * i + 1] = d[FB + i];
                }
                continue;
            }
            for (int64_t i = 0; i < e; i++) {
                q[2 * i] = d[i];
                q[2 * i + 1] = d[FB + i];
            }
        }
    }
}

struct fft_job {
    struct vox_nn_fft *f;
    bool wgrad;      /* weights_grad: spectra [fb][channel][tile] (one channel a task), gout's
                        conjugated */
    const float *w;  /* set_weights: the PyTorch weights */
    bool transposed; /* ... read as those of the adjoint (vox_nn_fft_set_weights) */
    const struct vox_nn_bt *in;
    struct vox_nn_bt *out;
    const struct vox_nn_bt *gout; /* weights_grad: the output gradient */
    float *gw;                    /* weights_grad: (cout, cin, k) += */
    int64_t g0, count;            /* run: the group's first tile and its tiles */
    int64_t lanes;                /* channels per task (stage 1 or 3) */
};

/* The pruned forward transform of a kernel (ZNNi's pruned FFT, note znn.md 2.2): the kernel
 * fills only ke[0] x ke[1] of the n[0] x n[1] rows of its volume, so the r2c along x runs on
 * those rows, the c2c along y on the ke[0] planes they lie in, and only the c2c along z on
 * every column: FFTW's 3D r2c, axis by axis, minus the transforms of zero lines (n537's 5^3
 * kernels in 32^3 tiles: 25 of 1024 rows, 5 of 32 planes). */
static enum vox_status plan_pruned(struct vox_nn_fft *f)
{
    const int64_t *n = f->g.n, *ke = f->g.ke, nxc = n[2] / 2 + 1;
    const fftwf_iodim row = {(int)n[2], 1, 1}, col_y = {(int)n[1], (int)nxc, (int)nxc},
                      col_z = {(int)n[0], (int)(n[1] * nxc), (int)(n[1] * nxc)};
    const fftwf_iodim rows[2] = {{(int)ke[0], (int)(n[1] * n[2]), (int)(n[1] * nxc)},
                                 {(int)ke[1], (int)n[2], (int)nxc}};
    const fftwf_iodim cols_y[2] = {{(int)ke[0], (int)(n[1] * nxc), (int)(n[1] * nxc)},
                                   {(int)nxc, 1, 1}};
    const fftwf_iodim cols_z = {(int)(n[1] * nxc), 1, 1};
    fftwf_complex *s = (fftwf_complex *)f->cbuf;
    pthread_mutex_lock(&planner_lock);
    f->kx = fftwf_plan_guru_dft_r2c(1, &row, 2, rows, f->rbuf, s, FFTW_ESTIMATE);
    f->ky = fftwf_plan_guru_dft(1, &col_y, 2, cols_y, s, s, FFTW_FORWARD, FFTW_ESTIMATE);
    f->kz = fftwf_plan_guru_dft(1, &col_z, 1, &cols_z, s, s, FFTW_FORWARD, FFTW_ESTIMATE);
    pthread_mutex_unlock(&planner_lock);
    return f->kx && f->ky && f->kz ? VOX_OK : VOX_OUT_OF_MEMORY;
}

/* Pairs [lo, hi) of (k, c): W_kc = r2c(kernel (k, c) flipped and dilated, at the origin) / N,
 * by the pruned transform (transposed: kernel (k, c) is the weights' (c, k) flipped). */
static void kernel_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct fft_job *j = arg;
    struct vox_nn_fft *f = j->f;
    const struct vox_nn_fast_conv *c = &f->cv;
    const struct geom *g = &f->g;
    const int64_t *k = c->k, *d = c->dil, *n = g->n, taps = k[0] * k[1] * k[2];
    float *r = f->rbuf + tid * g->lanes * f->rstride, *s = f->cbuf + tid * g->lanes * f->cstride;
    const float scale = 1.0f / (float)(n[0] * n[1] * n[2]);
    for (int64_t p = lo[0]; p < hi[0]; p++) {
        int64_t o = p / c->cin, i = p % c->cin;
        for (int64_t z = 0; z < g->ke[0]; z++)
            memset(r + z * n[1] * n[2], 0, (size_t)(g->ke[1] * n[2]) * sizeof(float));
        memset(s, 0, (size_t)(2 * g->ncplx) * sizeof(float));
        const float *src = j->w + (j->transposed ? i * c->cout + o : p) * taps;
        for (int64_t a = 0; a < k[0]; a++)
            for (int64_t b = 0; b < k[1]; b++)
                for (int64_t e = 0; e < k[2]; e++) {
                    int64_t z = g->ke[0] - 1 - a * d[0], y = g->ke[1] - 1 - b * d[1],
                            x = g->ke[2] - 1 - e * d[2];
                    int64_t t = (a * k[1] + b) * k[2] + e;
                    r[(z * n[1] + y) * n[2] + x] = src[j->transposed ? taps - 1 - t : t];
                }
        fftwf_execute_dft_r2c(f->kx, r, (fftwf_complex *)s);
        fftwf_execute_dft(f->ky, (fftwf_complex *)s, (fftwf_complex *)s);
        fftwf_execute_dft(f->kz, (fftwf_complex *)s, (fftwf_complex *)s);
        scatter(g, s, f->cstride, 1, f->w + (o * c->cin + i) * BL, c->cin * c->cout * BL, scale);
    }
}

/* Pool width: a pool wider than the per-thread buffers runs on the caller's thread. */
static struct vox_pool *usable(const struct vox_nn_fft *f, struct vox_pool *pool)
{
    return pool && vox_pool_threads(pool) > f->threads ? NULL : pool;
}

static enum vox_status alloc_all(struct vox_ctx *ctx, struct vox_nn_fft *f)
{
    const struct vox_nn_fast_conv *c = &f->cv;
    const struct geom *g = &f->g;
    f->rstride = pad_stride(g->n[0] * g->n[1] * g->n[2]);
    f->cstride = pad_stride(2 * g->ncplx);
    f->rbuf = vox_alloc(ctx, (size_t)(f->threads * g->lanes * f->rstride) * sizeof(float));
    f->cbuf = vox_alloc(ctx, (size_t)(f->threads * g->lanes * f->cstride) * sizeof(float));
    f->bias = vox_alloc(ctx, (size_t)c->cout * sizeof(float));
    if (!f->rbuf || !f->cbuf || !f->bias)
        return VOX_OUT_OF_MEMORY;
    if (f->lent)
        return VOX_OK;
    int64_t n[4];
    vox_nn_fft_lent_floats(f, n);
    f->w = vox_alloc(ctx, (size_t)n[0] * sizeof(float));
    f->xs = vox_alloc(ctx, (size_t)n[1] * sizeof(float));
    f->ys = vox_alloc(ctx, (size_t)n[2] * sizeof(float));
    f->wtmp = vox_alloc(ctx, (size_t)n[3] * sizeof(float));
    return f->w && f->xs && f->ys && f->wtmp ? VOX_OK : VOX_OUT_OF_MEMORY;
}

void vox_nn_fft_lent_floats(const struct vox_nn_fft *f, int64_t n_out[4])
{
    const struct vox_nn_fast_conv *c = &f->cv;
    const struct geom *g = &f->g;
    n_out[0] = c->cin * c->cout * g->fb * BL;
    n_out[1] = g->group * c->cin * g->fb * BL;
    n_out[2] = g->group * c->cout * g->fb * BL;
    n_out[3] = f->threads * c->cin * c->cout * BL; /* one block of spectra a thread */
}

void vox_nn_fft_bind(struct vox_nn_fft *f, float *w, float *xs, float *ys, float *wtmp)
{
    f->w = w;
    f->xs = xs;
    f->ys = ys;
    f->wtmp = wtmp;
}

static enum vox_status fft_create(struct vox_ctx *ctx, const struct vox_nn_fast_conv *c,
                                  const int64_t padlo[3], const float *w, const float *bias,
                                  bool lent, struct vox_nn_fft **fft_out);

enum vox_status vox_nn_fft_create(struct vox_ctx *ctx, const struct vox_nn_fast_conv *c,
                                  const int64_t padlo[3], const float *w, const float *bias,
                                  struct vox_nn_fft **fft_out)
{
    return fft_create(ctx, c, padlo, w, bias, false, fft_out);
}

enum vox_status vox_nn_fft_create_lent(struct vox_ctx *ctx, const struct vox_nn_fast_conv *c,
                                       const int64_t padlo[3], struct vox_nn_fft **fft_out)
{
    return fft_create(ctx, c, padlo, NULL, NULL, true, fft_out);
}

static enum vox_status fft_create(struct vox_ctx *ctx, const struct vox_nn_fast_conv *c,
                                  const int64_t padlo[3], const float *w, const float *bias,
                                  bool lent, struct vox_nn_fft **fft_out)
{
    *fft_out = NULL;
    struct vox_nn_fft *f = vox_calloc(ctx, 1, sizeof *f);
    if (!f)
        return VOX_OUT_OF_MEMORY;
    f->lent = lent;
    f->cv = *c;
    f->threads = vox_ctx_threads(ctx) > 0 ? vox_ctx_threads(ctx) : 1;
    const int isa = (int)vox_ctx_cpu(ctx)->isa;
    f->mul = isa == VOX_ISA_AVX512 ? vox_nn_fft_mul_avx512
             : isa == VOX_ISA_AVX2 ? vox_nn_fft_mul_avx2
                                   : vox_nn_fft_mul_ref;
    choose(c, &f->g);
    f->wgroup = f->g.group;
    widen_group(c, &f->g, f->threads);
    memcpy(f->lo, padlo, sizeof f->lo);
    if (alloc_all(ctx, f) != VOX_OK) {
        vox_nn_fft_destroy(ctx, f);
        return VOX_OUT_OF_MEMORY;
    }
    int n[3] = {(int)f->g.n[0], (int)f->g.n[1], (int)f->g.n[2]};
    pthread_mutex_lock(&planner_lock);
    f->fwd = fftwf_plan_dft_r2c(3, n, f->rbuf, (fftwf_complex *)f->cbuf, FFTW_ESTIMATE);
    f->inv = fftwf_plan_dft_c2r(3, n, (fftwf_complex *)f->cbuf, f->rbuf, FFTW_ESTIMATE);
    pthread_mutex_unlock(&planner_lock);
    if (!f->fwd || !f->inv) {
        vox_nn_fft_destroy(ctx, f);
        return vox_fail(ctx, VOX_OUT_OF_MEMORY, "FFTW could not plan a %dx%dx%d transform", n[0],
                        n[1], n[2]);
    }
    if (plan_pruned(f) != VOX_OK) {
        vox_nn_fft_destroy(ctx, f);
        return vox_fail(ctx, VOX_OUT_OF_MEMORY, "FFTW could not plan a %dx%dx%d transform", n[0],
                        n[1], n[2]);
    }
    if (w)
        vox_nn_fft_set_weights(f, vox_ctx_pool(ctx), w, bias, false);
    *fft_out = f;
    return VOX_OK;
}

void vox_nn_fft_set_weights(struct vox_nn_fft *f, struct vox_pool *pool, const float *w,
                            const float *bias, bool transposed)
{
    const struct vox_nn_fast_conv *c = &f->cv;
    for (int64_t o = 0; o < c->cout; o++)
        f->bias[o] = bias && c->bias ? bias[o] : 0.0f;
    struct fft_job j = {.f = f, .w = w, .transposed = transposed};
    vox_pool_for(usable(f, pool), (int64_t[]){c->cin * c->cout, 1, 1}, (int64_t[]){1, 1, 1},
                 VOX_SCHED_DYNAMIC, kernel_task, &j);
}

/* Stage 1, pairs [lo, hi) of (tile of the group, group of j->lanes input channels): X_tc. */
static void forward_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct fft_job *j = arg;
    struct vox_nn_fft *f = j->f;
    const struct geom *g = &f->g;
    const int64_t *n = g->n, cin = f->cv.cin, L = j->lanes, groups = cdiv(cin, L);
    float *r = f->rbuf + tid * g->lanes * f->rstride, *s = f->cbuf + tid * g->lanes * f->cstride;
    for (int64_t p = lo[0]; p < hi[0]; p++) {
        int64_t tl = p / groups, c0 = p % groups * L, t[3];
        int64_t lanes = cin - c0 < L ? cin - c0 : L;
        const struct vox_nn_bt in =
            vox_nn_bt_entry(j->in, vox_nn_tile_decode(g->nt, j->g0 + tl, t));
        int64_t o[3], a0[3], a1[3]; /* the tile's origin in the input; its rows inside */
        for (int a = 0; a < 3; a++) {
            o[a] = t[a] * g->m[a] - f->lo[a];
            a0[a] = o[a] < 0 ? -o[a] : 0;
            a1[a] = in.s[a] - o[a] < n[a] ? in.s[a] - o[a] : n[a];
        }
        bool inside = true; /* the tile covers only input: every value is written below */
        for (int a = 0; a < 3; a++)
            inside = inside && a0[a] == 0 && a1[a] == n[a];
        for (int64_t l = 0; l < lanes && !inside; l++)
            memset(r + l * f->rstride, 0, (size_t)(n[0] * n[1] * n[2]) * sizeof(float));
        const float *src = in.data + (c0 / in.blk) * vox_nn_bt_vol(&in) * in.blk + c0 % in.blk;
        for (int64_t z = a0[0]; z < a1[0]; z++)
            for (int64_t y = a0[1]; y < a1[1]; y++) {
                int64_t at = (z * n[1] + y) * n[2];
                const float *row =
                    src + (((z + o[0]) * in.s[1] + y + o[1]) * in.s[2] + o[2]) * in.blk;
                for (int64_t l = 0; l < lanes; l++) /* the row's lines stay in L1 */
                    for (int64_t x = a0[2]; x < a1[2]; x++)
                        r[l * f->rstride + at + x] = row[x * in.blk + l];
            }
        for (int64_t l = 0; l < lanes; l++)
            fftwf_execute_dft_r2c(f->fwd, r + l * f->rstride,
                                  (fftwf_complex *)(s + l * f->cstride));
        float *dst = j->wgrad ? f->xs + (c0 * j->count + tl) * BL : f->xs + (tl * cin + c0) * BL;
        scatter(g, s, f->cstride, lanes, dst, j->count * cin * BL, 1.0f);
    }
}

/* Stage 2, frequency blocks [lo, hi): Y = X W. */
static void products_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    const struct fft_job *j = arg;
    const struct vox_nn_fft *f = j->f;
    const int64_t cin = f->cv.cin, cout = f->cv.cout, t = j->count;
    for (int64_t b = lo[0]; b < hi[0]; b++)
        f->mul(f->xs + b * t * cin * BL, f->w + b * cin * cout * BL, f->ys + b * t * cout * BL, t,
               cin, cout);
}

/* v[x] = act(v[x] + b) for x < n (one loop per activation; the plain ones in runs of 16, a
 * constant count that the compiler vectorises at -O2). */
static void act_row(enum vox_nn_act act, float b, float *restrict v, int64_t n)
{
    int64_t x = 0;
    for (; act == VOX_ACT_RELU && x + 16 <= n; x += 16)
        for (int i = 0; i < 16; i++)
            v[x + i] = v[x + i] + b > 0.0f ? v[x + i] + b : 0.0f;
    for (; act == VOX_ACT_LINEAR && x + 16 <= n; x += 16)
        for (int i = 0; i < 16; i++)
            v[x + i] += b;
    for (; x < n; x++)
        v[x] = vox_nn_act1f(act, v[x] + b);
}

/* Stage 3, pairs [lo, hi) of (tile of the group, group of j->lanes output channels): c2r,
 * bias, act, store. */
static void inverse_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct fft_job *j = arg;
    struct vox_nn_fft *f = j->f;
    const struct geom *g = &f->g;
    const int64_t *n = g->n, *ke = g->ke, cout = f->cv.cout, L = j->lanes, groups = cdiv(cout, L);
    float *r = f->rbuf + tid * g->lanes * f->rstride, *s = f->cbuf + tid * g->lanes * f->cstride;
    for (int64_t p = lo[0]; p < hi[0]; p++) {
        int64_t tl = p / groups, k0 = p % groups * L, t[3], o[3], e[3];
        int64_t lanes = cout - k0 < L ? cout - k0 : L;
        const struct vox_nn_bt out =
            vox_nn_bt_entry(j->out, vox_nn_tile_decode(g->nt, j->g0 + tl, t));
        for (int a = 0; a < 3; a++) {
            o[a] = t[a] * g->m[a];
            e[a] = out.s[a] - o[a] < g->m[a] ? out.s[a] - o[a] : g->m[a];
        }
        gather(g, f->ys + (tl * cout + k0) * BL, j->count * cout * BL, lanes, s, f->cstride);
        for (int64_t l = 0; l < lanes; l++)
            fftwf_execute_dft_c2r(f->inv, (fftwf_complex *)(s + l * f->cstride),
                                  r + l * f->rstride);
        /* the block's lanes past cout are written 0 with the last channels */
        int64_t zero = k0 + lanes == cout ? out.blk - (k0 % out.blk + lanes) : 0;
        float *dst = out.data + (k0 / out.blk) * vox_nn_bt_vol(&out) * out.blk + k0 % out.blk;
        for (int64_t z = 0; z < e[0]; z++)
            for (int64_t y = 0; y < e[1]; y++) {
                int64_t at = ((z + ke[0] - 1) * n[1] + y + ke[1] - 1) * n[2] + ke[2] - 1;
                float *d = dst + (((z + o[0]) * out.s[1] + y + o[1]) * out.s[2] + o[2]) * out.blk;
                for (int64_t l = 0; l < lanes; l++) { /* the row's lines stay in L1 */
                    float *v = r + l * f->rstride + at;
                    act_row(f->cv.act, f->bias[k0 + l], v, e[2]);
                    if (f->add)
                        for (int64_t x = 0; x < e[2]; x++)
                            d[x * out.blk + l] += v[x];
                    else
                        for (int64_t x = 0; x < e[2]; x++)
                            d[x * out.blk + l] = v[x];
                }
                for (int64_t x = 0; x < e[2] && zero > 0; x++)
                    memset(d + x * out.blk + lanes, 0, (size_t)zero * sizeof(float));
            }
    }
}

void vox_nn_fft_run(struct vox_nn_fft *f, struct vox_pool *pool, const struct vox_nn_bt *in,
                    struct vox_nn_bt *out)
{
    vox_nn_fft_run_add(f, pool, in, out, f->cv.act, false);
}

void vox_nn_fft_run_add(struct vox_nn_fft *f, struct vox_pool *pool, const struct vox_nn_bt *in,
                        struct vox_nn_bt *out, enum vox_nn_act act, bool add)
{
    f->add = add;
    f->cv.act = act;
    pool = usable(f, pool);
    const int64_t one[3] = {1, 1, 1}, all = in->n * f->g.tiles;
    const int64_t li = f->g.lanes < in->blk ? f->g.lanes : in->blk,
                  lo = f->g.lanes < out->blk ? f->g.lanes : out->blk;
    const int64_t grain = cdiv(4096, f->cv.cin * f->cv.cout * f->g.group);
    for (int64_t g0 = 0; g0 < all; g0 += f->g.group) {
        struct fft_job j = {.f = f,
                            .in = in,
                            .out = out,
                            .g0 = g0,
                            .count = all - g0 < f->g.group ? all - g0 : f->g.group,
                            .lanes = li};
        vox_pool_for(pool, (int64_t[]){j.count * cdiv(f->cv.cin, li), 1, 1}, one, VOX_SCHED_DYNAMIC,
                     forward_task, &j);
        vox_pool_for(pool, (int64_t[]){f->g.fb, 1, 1}, (int64_t[]){grain, 1, 1}, VOX_SCHED_DYNAMIC,
                     products_task, &j);
        j.lanes = lo;
        vox_pool_for(pool, (int64_t[]){j.count * cdiv(f->cv.cout, lo), 1, 1}, one,
                     VOX_SCHED_DYNAMIC, inverse_task, &j);
    }
}

/* ---- the weight gradient ---------------------------------------------------------------- */

/* Stage 1 of the gradient, pairs [lo, hi) of (tile of the group, output channel): G_to =
 * r2c(the tile's m outputs of gout channel o at the origin, zeros after). */
static void gout_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct fft_job *j = arg;
    struct vox_nn_fft *f = j->f;
    const struct geom *g = &f->g;
    const int64_t *n = g->n, cout = f->cv.cout;
    float *r = f->rbuf + tid * g->lanes * f->rstride, *s = f->cbuf + tid * g->lanes * f->cstride;
    for (int64_t p = lo[0]; p < hi[0]; p++) {
        int64_t tl = p / cout, o = p % cout, t[3], e[3];
        const struct vox_nn_bt go =
            vox_nn_bt_entry(j->gout, vox_nn_tile_decode(g->nt, j->g0 + tl, t));
        for (int a = 0; a < 3; a++)
            e[a] = go.s[a] - t[a] * g->m[a] < g->m[a] ? go.s[a] - t[a] * g->m[a] : g->m[a];
        memset(r, 0, (size_t)(n[0] * n[1] * n[2]) * sizeof(float));
        const float *src = go.data + (o / go.blk) * vox_nn_bt_vol(&go) * go.blk + o % go.blk;
        for (int64_t z = 0; z < e[0]; z++)
            for (int64_t y = 0; y < e[1]; y++) {
                const float *row =
                    src + (((z + t[0] * g->m[0]) * go.s[1] + y + t[1] * g->m[1]) * go.s[2] +
                           t[2] * g->m[2]) *
                              go.blk;
                for (int64_t x = 0; x < e[2]; x++)
                    r[(z * n[1] + y) * n[2] + x] = row[x * go.blk];
            }
        fftwf_execute_dft_r2c(f->fwd, r, (fftwf_complex *)s);
        for (int64_t q = 0; q < g->ncplx; q++) /* conj(G) */
            s[2 * q + 1] = -s[2 * q + 1];
        scatter(g, s, f->cstride, 1, f->ys + (o * j->count + tl) * BL, j->count * cout * BL, 1.0f);
    }
}

/* Stage 2 of the gradient, frequency blocks [lo, hi): W[k][c] += sum over the group's tiles of
 * conj(G[t][k]) X[t][c], the cross-correlation's spectrum: the spectral product kernel with
 * the tiles as its reduction (G' [k][t] by X' [c][t]), then added in (one writer per block;
 * the kernel's order of sums, groups in order: the same bits for any thread count). */
static void wgrad_products_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct fft_job *j = arg;
    const struct vox_nn_fft *f = j->f;
    const int64_t cin = f->cv.cin, cout = f->cv.cout, nt = j->count, n = cin * cout * BL;
    float *tmp = f->wtmp + tid * n;
    for (int64_t b = lo[0]; b < hi[0]; b++) {
        f->mul(f->ys + b * nt * cout * BL, f->xs + b * nt * cin * BL, tmp, cout, nt, cin);
        float *restrict w = f->w + b * n;
        for (int64_t e = 0; e < n; e++)
            w[e] += tmp[e];
    }
}

/* Stage 3 of the gradient, pairs [lo, hi) of (k, c): c2r of W_kc / N; tap t of the kernel is
 * the correlation at its offset t * dilation. */
static void wgrad_out_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct fft_job *j = arg;
    struct vox_nn_fft *f = j->f;
    const struct vox_nn_fast_conv *c = &f->cv;
    const struct geom *g = &f->g;
    const int64_t *n = g->n, *k = c->k, *d = c->dil, taps = k[0] * k[1] * k[2];
    float *r = f->rbuf + tid * g->lanes * f->rstride, *s = f->cbuf + tid * g->lanes * f->cstride;
    const double scale = 1.0 / (double)(n[0] * n[1] * n[2]);
    for (int64_t p = lo[0]; p < hi[0]; p++) {
        gather(g, f->w + p * BL, c->cin * c->cout * BL, 1, s, f->cstride);
        fftwf_execute_dft_c2r(f->inv, (fftwf_complex *)s, r);
        float *dst = j->gw + p * taps;
        for (int64_t a = 0; a < k[0]; a++)
            for (int64_t b = 0; b < k[1]; b++)
                for (int64_t e = 0; e < k[2]; e++)
                    dst[(a * k[1] + b) * k[2] + e] +=
                        (float)(r[((a * d[0]) * n[1] + b * d[1]) * n[2] + e * d[2]] * scale);
    }
}

void vox_nn_fft_weights_grad(struct vox_nn_fft *f, struct vox_pool *pool,
                             const struct vox_nn_bt *in, const struct vox_nn_bt *gout, float *gw)
{
    pool = usable(f, pool);
    const struct vox_nn_fast_conv *c = &f->cv;
    const int64_t one[3] = {1, 1, 1}, all = in->n * f->g.tiles, G = f->wgroup;
    const int64_t grain = cdiv(4096, c->cin * c->cout * G);
    memset(f->w, 0, (size_t)(c->cin * c->cout * f->g.fb * BL) * sizeof(float));
    for (int64_t g0 = 0; g0 < all; g0 += G) {
        struct fft_job j = {.f = f,
                            .wgrad = true,
                            .in = in,
                            .gout = gout,
                            .g0 = g0,
                            .count = all - g0 < G ? all - g0 : G,
                            .lanes = 1};
        vox_pool_for(pool, (int64_t[]){j.count * c->cin, 1, 1}, one, VOX_SCHED_DYNAMIC,
                     forward_task, &j);
        vox_pool_for(pool, (int64_t[]){j.count * c->cout, 1, 1}, one, VOX_SCHED_DYNAMIC, gout_task,
                     &j);
        vox_pool_for(pool, (int64_t[]){f->g.fb, 1, 1}, (int64_t[]){grain, 1, 1}, VOX_SCHED_DYNAMIC,
                     wgrad_products_task, &j);
    }
    struct fft_job j = {.f = f, .gw = gw};
    vox_pool_for(pool, (int64_t[]){c->cin * c->cout, 1, 1}, one, VOX_SCHED_DYNAMIC, wgrad_out_task,
                 &j);
}
