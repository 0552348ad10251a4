/*
 * blur.c: the separable Gaussian blur of the synthetic raw image and of degraded affinities,
 * and the exp() that makes its weights.
 *
 * The weights come from an own exp (halve the argument until it is small, a Taylor series,
 * square back), so they are the same bits on every machine: libm's exp may pick an FMA or a
 * non-FMA variant at run time, and a last-bit difference could flip a rounded uint8.
 *
 * Each axis is one pass over the volume seen as (outer, n, inner): lines along n are gathered
 * in chunks of up to CHUNK adjacent lines (contiguous in `inner`), convolved with mirrored
 * edges and written back. Every output value is one fixed sum, so threads do not matter.
 */
#include "synth/internal.h"

#include <string.h>

#define CHUNK 64

double synth_exp_neg(double x)
{
    if (!(x < 0))
        return 1;
    if (x < -700)
        return 0;
    int halvings = 0;
    while (x < -0.125) {
        x *= 0.5;
        halvings++;
    }
    double term = 1, sum = 1;
    for (int i = 1; i <= 12; i++) {
        term *= x / i;
        sum += term;
    }
    for (int i = 0; i < halvings; i++)
        sum *= sum;
    return sum;
}

struct blur_pass {
    float *v;
    int64_t outer, n, inner;
    const float *w; /* 2r+1 weights */
    int64_t r;
    float *scratch; /* per thread: 2 * n * CHUNK floats */
};

static int64_t mirror(int64_t i, int64_t n)
{
    while (i < 0 || i >= n) {
        if (i < 0)
            i = -i - 1;
        if (i >= n)
            i = 2 * n - 1 - i;
    }
    return i;
}

static void blur_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct blur_pass *b = arg;
    int64_t n = b->n;
    float *in = b->scratch + (size_t)tid * 2 * (size_t)(n * CHUNK), *out = in + n * CHUNK;
    for (int64_t o = lo[0]; o < hi[0]; o++) {
        for (int64_t c = lo[1]; c < hi[1]; c++) {
            int64_t i0 = c * CHUNK, w = b->inner - i0 < CHUNK ? b->inner - i0 : CHUNK;
            float *base = b->v + (o * n) * b->inner + i0;
            for (int64_t j = 0; j < n; j++)
                memcpy(in + j * w, base + j * b->inner, (size_t)w * sizeof(float));
            for (int64_t j = 0; j < n; j++) {
                float *dst = out + j * w;
                for (int64_t i = 0; i < w; i++)
                    dst[i] = 0;
                for (int64_t k = -b->r; k <= b->r; k++) {
                    const float *src = in + mirror(j + k, n) * w;
                    float wk = b->w[k + b->r];
                    for (int64_t i = 0; i < w; i++)
                        dst[i] += wk * src[i];
                }
            }
            for (int64_t j = 0; j < n; j++)
                memcpy(base + j * b->inner, out + j * w, (size_t)w * sizeof(float));
        }
    }
}

enum vox_status synth_blur(struct vox_ctx *ctx, float *v, const int64_t shape[3],
                           const double sigma[3])
{
    int threads = vox_ctx_threads(ctx);
    for (int axis = 0; axis < 3; axis++) {
        if (!(sigma[axis] > 0) || shape[axis] < 2)
            continue;
        int64_t r = (int64_t)(3 * sigma[axis] + 0.999);
        float w[2 * 64 + 1];
        if (r > 64)
            r = 64;
        double sum = 0, wd[2 * 64 + 1];
        for (int64_t k = -r; k <= r; k++) {
            wd[k + r] = synth_exp_neg(-(double)(k * k) / (2 * sigma[axis] * sigma[axis]));
            sum += wd[k + r];
        }
        for (int64_t k = 0; k <= 2 * r; k++)
            w[k] = (float)(wd[k] / sum);
        struct blur_pass b = {.v = v, .n = shape[axis], .w = w, .r = r};
        b.outer = axis == 0 ? 1 : axis == 1 ? shape[0] : shape[0] * shape[1];
        b.inner = axis == 0 ? shape[1] * shape[2] : axis == 1 ? shape[2] : 1;
        b.scratch = vox_alloc(ctx, (size_t)threads * 2 * (size_t)(b.n * CHUNK) * sizeof(float));
        if (!b.scratch)
            return VOX_OUT_OF_MEMORY;
        int64_t chunks = (b.inner + CHUNK - 1) / CHUNK;
        int64_t range[3] = {b.outer, chunks, 1};
        int64_t tile[3] = {b.inner == 1 ? 64 : 1, b.inner == 1 ? 1 : 4, 1};
        vox_pool_for(vox_ctx_pool(ctx), range, tile, VOX_SCHED_STATIC, blur_task, &b);
        vox_free(ctx, b.scratch);
    }
    return VOX_OK;
}
