/*
 * fast_fft.c: FFT convolution for the fast forward pass (large kernels, 5^3 and 7^3), through
 * FFTW's single-precision real transforms.
 *
 * Key idea (ZNNi, reference note znn.md sections 2.2-2.3): a convolution is a pointwise product
 * of spectra. With transform sizes N >= the (padded) input extent the circular convolution of
 * the input with the flipped kernel equals the linear one on the valid region, so
 *     out[k][p] = act(bias[k] + c2r(sum_c X_c * W_kc)[p + ke - 1])
 * where X_c = r2c(input channel c), W_kc = r2c(flipped, dilated kernel) / N (computed once at
 * plan time and cached) and ke = (k - 1) * dilation + 1 is the kernel's extent. A same-padded
 * input is placed at its padding offset in the zeroed transform buffer: no padded copy.
 *
 * Run: (1) threads over input channels, each gathers its channel from the blocked layout into a
 * zeroed real buffer and transforms it; (2) threads over chunks of frequencies multiply and
 * accumulate the spectra of every output channel over the input channels in a fixed order (a
 * chunk of the input spectra stays in cache across the output channels: the products are
 * memory-bound, and this reads each cached spectrum once per run); (3) threads over output
 * channels transform back, crop the valid region and write bias + act into their lane of the
 * blocked output. Every output value
 * has one writer and a fixed order of sums; FFTW plans made with FFTW_ESTIMATE are chosen
 * without timing (the same plan for the same sizes in every process) and a fixed plan executed
 * on equally aligned arrays is deterministic, so results are bitwise identical for any thread
 * count and across runs. (FFTW_MEASURE would pick plans by timing: results could differ by
 * rounding between processes.) Transform sizes are rounded up to 2^a 3^b 5^c 7^d.
 *
 * FFTW's planner is process-global and not thread-safe: plan creation and destruction are
 * serialised by one mutex here; executing plans (fftwf_execute_dft_*) is thread-safe.
 * Memory: the cached kernel spectra (cin * cout complex volumes), the input and output spectra
 * (cin + cout) and per thread one real volume (vox_nn_fft_bytes).
 */
#include "fast.h"

#include <fftw3.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

static pthread_mutex_t planner_lock = PTHREAD_MUTEX_INITIALIZER;

struct vox_nn_fft {
    struct vox_nn_fast_conv cv;
    int64_t lo[3], n[3], ke[3];
    int64_t nreal, ncplx; /* floats per real volume, complex numbers per spectrum (padded) */
    int64_t rstride;      /* floats between the threads' real volumes (64-byte multiples) */
    int threads;
    fftwf_plan fwd, inv;
    fftwf_complex *xs, *ws; /* input spectra (cin), kernel spectra (cout x cin) */
    float *rbuf;            /* per thread: a real volume */
    fftwf_complex *acc;     /* output spectra (cout) */
    float *bias;            /* cout */
};

static int64_t good_size(int64_t n)
{
    for (int64_t m = n;; m++) {
        int64_t r = m;
        static const int64_t f[4] = {2, 3, 5, 7};
        for (int k = 0; k < 4; k++)
            while (r % f[k] == 0)
                r /= f[k];
        if (r == 1 && (m % 2 == 0 || m == 1))
            return m;
    }
}

/* Sizes of the transforms and of the buffers. */
static void geometry(const struct vox_nn_fast_conv *c, int64_t n[3], int64_t *nreal,
                     int64_t *ncplx)
{
    for (int a = 0; a < 3; a++)
        n[a] = good_size(c->in[a]);
    *nreal = n[0] * n[1] * n[2];
    *ncplx = (n[0] * n[1] * (n[2] / 2 + 1) + 7) / 8 * 8; /* 64-byte aligned spectra */
}

double vox_nn_fft_flops(const struct vox_nn_fast_conv *c)
{
    int64_t n[3], nr, nc;
    geometry(c, n, &nr, &nc);
    double fft = 2.5 * (double)nr * log2((double)nr); /* one real transform */
    return (double)(c->cin + c->cout) * fft + 8.0 * (double)(c->cin * c->cout) * (double)nc;
}

/* Every thread's real volume starts 64-byte aligned, as the one the plans were made on:
 * FFTW may only execute a plan on arrays aligned like its planning arrays. */
static int64_t real_stride(int64_t nreal)
{
    return (nreal + 15) / 16 * 16;
}

size_t vox_nn_fft_bytes(const struct vox_nn_fast_conv *c, int threads)
{
    int64_t n[3], nr, nc;
    geometry(c, n, &nr, &nc);
    return ((size_t)(c->cin * c->cout + c->cin + c->cout) * (size_t)nc * 2 +
            (size_t)(threads * real_stride(nr)) + (size_t)c->cout) * sizeof(float);
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
    pthread_mutex_unlock(&planner_lock);
    vox_free(ctx, f->xs);
    vox_free(ctx, f->ws);
    vox_free(ctx, f->rbuf);
    vox_free(ctx, f->acc);
    vox_free(ctx, f->bias);
    vox_free(ctx, f);
}

/* W_kc = r2c(kernel (k, c) flipped and dilated, at the origin) / N, for every k and c. */
static void kernel_spectra(struct vox_nn_fft *f, const float *w)
{
    const struct vox_nn_fast_conv *c = &f->cv;
    const int64_t *k = c->k, *d = c->dil, *n = f->n, taps = k[0] * k[1] * k[2];
    const float scale = 1.0f / (float)f->nreal;
    for (int64_t o = 0; o < c->cout; o++)
        for (int64_t i = 0; i < c->cin; i++) {
            memset(f->rbuf, 0, (size_t)f->nreal * sizeof(float));
            const float *src = w + (o * c->cin + i) * taps;
            for (int64_t a = 0; a < k[0]; a++)
                for (int64_t b = 0; b < k[1]; b++)
                    for (int64_t e = 0; e < k[2]; e++) {
                        int64_t z = f->ke[0] - 1 - a * d[0], y = f->ke[1] - 1 - b * d[1],
                                x = f->ke[2] - 1 - e * d[2];
                        f->rbuf[(z * n[1] + y) * n[2] + x] = src[(a * k[1] + b) * k[2] + e];
                    }
            fftwf_complex *dst = f->ws + (o * c->cin + i) * f->ncplx;
            fftwf_execute_dft_r2c(f->fwd, f->rbuf, dst);
            for (int64_t q = 0; q < f->ncplx; q++)
                dst[q][0] *= scale, dst[q][1] *= scale;
        }
}

enum vox_status vox_nn_fft_create(struct vox_ctx *ctx, const struct vox_nn_fast_conv *c,
                                  const int64_t padlo[3], const float *w, const float *bias,
                                  struct vox_nn_fft **fft_out)
{
    *fft_out = NULL;
    struct vox_nn_fft *f = vox_calloc(ctx, 1, sizeof *f);
    if (!f)
        return VOX_OUT_OF_MEMORY;
    f->cv = *c;
    f->threads = vox_ctx_threads(ctx) > 0 ? vox_ctx_threads(ctx) : 1;
    geometry(c, f->n, &f->nreal, &f->ncplx);
    f->rstride = real_stride(f->nreal);
    for (int a = 0; a < 3; a++) {
        f->lo[a] = padlo[a];
        f->ke[a] = (c->k[a] - 1) * c->dil[a] + 1;
    }
    size_t cb = (size_t)f->ncplx * sizeof(fftwf_complex);
    f->xs = vox_alloc(ctx, (size_t)c->cin * cb);
    f->ws = vox_alloc(ctx, (size_t)(c->cin * c->cout) * cb);
    f->acc = vox_alloc(ctx, (size_t)c->cout * cb);
    f->rbuf = vox_alloc(ctx, (size_t)(f->threads * f->rstride) * sizeof(float));
    f->bias = vox_alloc(ctx, (size_t)c->cout * sizeof(float));
    if (!f->xs || !f->ws || !f->acc || !f->rbuf || !f->bias) {
        vox_nn_fft_destroy(ctx, f);
        return VOX_OUT_OF_MEMORY;
    }
    for (int64_t o = 0; o < c->cout; o++)
        f->bias[o] = bias && c->bias ? bias[o] : 0.0f;
    int n[3] = {(int)f->n[0], (int)f->n[1], (int)f->n[2]};
    pthread_mutex_lock(&planner_lock);
    f->fwd = fftwf_plan_dft_r2c(3, n, f->rbuf, f->acc, FFTW_ESTIMATE);
    f->inv = fftwf_plan_dft_c2r(3, n, f->acc, f->rbuf, FFTW_ESTIMATE);
    pthread_mutex_unlock(&planner_lock);
    if (!f->fwd || !f->inv) {
        vox_nn_fft_destroy(ctx, f);
        return vox_fail(ctx, VOX_OUT_OF_MEMORY, "FFTW could not plan a %lldx%lldx%lld transform",
                        (long long)f->n[0], (long long)f->n[1], (long long)f->n[2]);
    }
    kernel_spectra(f, w);
    *fft_out = f;
    return VOX_OK;
}

struct fft_job {
    struct vox_nn_fft *f;
    const struct vox_nn_bt *in;
    struct vox_nn_bt *out;
};

/* Stage 1: X_c = r2c(input channel c at its padding offset). */
static void forward_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct fft_job *j = arg;
    struct vox_nn_fft *f = j->f;
    const struct vox_nn_bt *in = j->in;
    float *r = f->rbuf + (int64_t)tid * f->rstride;
    const int64_t *n = f->n, *s = in->s;
    for (int64_t c = lo[0]; c < hi[0]; c++) {
        memset(r, 0, (size_t)f->nreal * sizeof(float));
        const float *src = in->data + (c / in->blk) * vox_nn_bt_vol(in) * in->blk + c % in->blk;
        for (int64_t z = 0; z < s[0]; z++)
            for (int64_t y = 0; y < s[1]; y++) {
                float *dst = r + ((z + f->lo[0]) * n[1] + y + f->lo[1]) * n[2] + f->lo[2];
                const float *row = src + (z * s[1] + y) * s[2] * in->blk;
                for (int64_t x = 0; x < s[2]; x++)
                    dst[x] = row[x * in->blk];
            }
        fftwf_execute_dft_r2c(f->fwd, r, f->xs + c * f->ncplx);
    }
}

enum { CHUNK = 512 }; /* complex numbers per task of the products */

/* Stage 2: for the frequencies of chunks [lo, hi) and every output channel k,
 * A_k = sum over c, in order, of X_c * W_kc (complex, as interleaved floats). */
static void products_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    const struct fft_job *j = arg;
    const struct vox_nn_fft *f = j->f;
    int64_t q0 = 2 * lo[0] * CHUNK, q1 = 2 * hi[0] * CHUNK;
    q1 = q1 < 2 * f->ncplx ? q1 : 2 * f->ncplx;
    for (int64_t k = 0; k < f->cv.cout; k++) {
        float *restrict acc = (float *)(f->acc + k * f->ncplx);
        for (int64_t c = 0; c < f->cv.cin; c++) {
            const float *restrict x = (const float *)(f->xs + c * f->ncplx);
            const float *restrict w = (const float *)(f->ws + (k * f->cv.cin + c) * f->ncplx);
            if (c == 0) {
                for (int64_t q = q0; q < q1; q += 2) {
                    acc[q] = x[q] * w[q] - x[q + 1] * w[q + 1];
                    acc[q + 1] = x[q] * w[q + 1] + x[q + 1] * w[q];
                }
                continue;
            }
            for (int64_t q = q0; q < q1; q += 2) {
                acc[q] += x[q] * w[q] - x[q + 1] * w[q + 1];
                acc[q + 1] += x[q] * w[q + 1] + x[q + 1] * w[q];
            }
        }
    }
}

/* Stage 3: output channel k (lanes past cout are written 0). */
static void inverse_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct fft_job *j = arg;
    struct vox_nn_fft *f = j->f;
    struct vox_nn_bt *out = j->out;
    float *r = f->rbuf + (int64_t)tid * f->rstride;
    const int64_t *n = f->n, *s = out->s, *ke = f->ke;
    for (int64_t k = lo[0]; k < hi[0]; k++) {
        float *dst = out->data + (k / out->blk) * vox_nn_bt_vol(out) * out->blk + k % out->blk;
        if (k >= f->cv.cout) {
            for (int64_t v = 0; v < vox_nn_bt_vol(out); v++)
                dst[v * out->blk] = 0.0f;
            continue;
        }
        fftwf_execute_dft_c2r(f->inv, f->acc + k * f->ncplx, r);
        const float b = f->bias[k];
        for (int64_t z = 0; z < s[0]; z++)
            for (int64_t y = 0; y < s[1]; y++) {
                const float *row = r + ((z + ke[0] - 1) * n[1] + y + ke[1] - 1) * n[2] + ke[2] - 1;
                float *o = dst + (z * s[1] + y) * s[2] * out->blk;
                for (int64_t x = 0; x < s[2]; x++)
                    o[x * out->blk] = vox_nn_act1f(f->cv.act, row[x] + b);
            }
    }
}

void vox_nn_fft_run(struct vox_nn_fft *f, struct vox_pool *pool, const struct vox_nn_bt *in,
                    struct vox_nn_bt *out)
{
    struct fft_job j = {f, in, out};
    if (pool && vox_pool_threads(pool) > f->threads)
        pool = NULL; /* a pool wider than the per-thread buffers: run on the caller's thread */
    const int64_t one[3] = {1, 1, 1};
    vox_pool_for(pool, (int64_t[]){f->cv.cin, 1, 1}, one, VOX_SCHED_DYNAMIC, forward_task, &j);
    int64_t chunks = (f->ncplx + CHUNK - 1) / CHUNK;
    vox_pool_for(pool, (int64_t[]){chunks, 1, 1}, (int64_t[]){16, 1, 1}, VOX_SCHED_DYNAMIC,
                 products_task, &j);
    int64_t lanes = vox_nn_bt_blocks(out) * out->blk;
    vox_pool_for(pool, (int64_t[]){lanes, 1, 1}, one, VOX_SCHED_DYNAMIC, inverse_task, &j);
}
