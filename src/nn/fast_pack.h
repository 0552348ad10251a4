/*
 * nn/fast_pack.h: the body of the blocked layout's row transposes, compiled once per ISA
 * (fast_pack.c, fast_pack_avx2.c, fast_pack_avx512.c define PACK_L, the lanes of a channel
 * block, and PACK_FN, the table's name, then include this file).
 *
 * Packing a row turns L channel rows (x contiguous) into x-major blocks of L lanes: an L x L
 * transpose per run of L voxels, in registers (fast_vtr.h). Unpacking is the same transpose
 * the other way. GCC vector types give each ISA file its own width without
 * intrinsics; the tail (fewer than L voxels) is copied element by element.
 */
#include "fast.h"

#include <immintrin.h>
#include <string.h>

typedef float vf __attribute__((vector_size(4 * PACK_L)));
typedef int32_t vi __attribute__((vector_size(4 * PACK_L)));

#define INLINE static inline __attribute__((always_inline))
#define LD(v, p) memcpy(&(v), (p), sizeof(vf))
#define ST(p, v) memcpy((p), &(v), sizeof(vf))

#include "fast_vact.h"
#include "fast_vtr.h"

/* A non-temporal store of v at p (aligned to a vector). */
INLINE void stream_vec(float *p, vf v)
{
#if PACK_L == 16 && defined(__AVX512F__)
    _mm512_stream_ps(p, (__m512)v);
#elif PACK_L == 8 && defined(__AVX__)
    _mm256_stream_ps(p, (__m256)v);
#else
    for (int k = 0; k < PACK_L; k += 4) {
        __m128 h;
        memcpy(&h, (const float *)&v + k, sizeof h);
        _mm_stream_ps(p + k, h);
    }
#endif
}

/* dst[x * L + l] = src[l][x] for x < n (src[l] NULL: 0); with `stream`, dst aligned to a
 * vector, non-temporal stores (no read of dst's lines before they are written). */
INLINE void pack_body(const float *const *src, float *dst, int64_t n, bool stream)
{
    int64_t x = 0;
    for (; x + PACK_L <= n; x += PACK_L) {
        vf r[PACK_L];
#pragma GCC unroll 16
        for (int l = 0; l < PACK_L; l++) {
            if (src[l])
                LD(r[l], src[l] + x);
            else
                r[l] = (vf){0};
        }
        vtranspose(r);
#pragma GCC unroll 16
        for (int l = 0; l < PACK_L; l++) {
            if (stream)
                stream_vec(dst + (x + l) * PACK_L, r[l]);
            else
                ST(dst + (x + l) * PACK_L, r[l]);
        }
    }
    for (; x < n; x++)
        for (int l = 0; l < PACK_L; l++)
            dst[x * PACK_L + l] = src[l] ? src[l][x] : 0.0f;
}

static void pack(const float *const *src, float *dst, int64_t n)
{
    pack_body(src, dst, n, false);
}

static void pack_stream(const float *const *src, float *dst, int64_t n)
{
    pack_body(src, dst, n, true);
}

/* dst[l][x] = src[x * L + l] for x < n and every l with dst[l] not NULL. */
static void unpack(const float *src, float *const *dst, int64_t n)
{
    int64_t x = 0;
    for (; x + PACK_L <= n; x += PACK_L) {
        vf r[PACK_L];
#pragma GCC unroll 16
        for (int l = 0; l < PACK_L; l++)
            LD(r[l], src + (x + l) * PACK_L);
        vtranspose(r);
#pragma GCC unroll 16
        for (int l = 0; l < PACK_L; l++)
            if (dst[l])
                ST(dst[l] + x, r[l]);
    }
    for (; x < n; x++)
        for (int l = 0; l < PACK_L; l++)
            if (dst[l])
                dst[l][x] = src[x * PACK_L + l];
}

/* x[i] = act(x[i]) for i < n, a vector at a time (the tail through a zero-padded one). */
static void act_row(enum vox_nn_act act, float *x, int64_t n)
{
    int64_t i = 0;
    vf v;
    for (; i + PACK_L <= n; i += PACK_L) {
        LD(v, x + i);
        act_vec(act, &v);
        ST(x + i, v);
    }
    if (i < n) {
        v = (vf){0};
        memcpy(&v, x + i, (size_t)(n - i) * sizeof *x);
        act_vec(act, &v);
        memcpy(x + i, &v, (size_t)(n - i) * sizeof *x);
    }
}

/* The act's slope from its output y, as the reference computes it (src/nn/internal.h
 * vox_nn_act_slope, in f32 here): relu 1 or 0, elu 1 or y + 1, sigmoid y (1 - y), tanh 1 - y^2. */
INLINE void slope_vec(enum vox_nn_act act, const vf *y, vf *out)
{
    const vf one = (vf){0} + 1.0f;
    const vi pos = *y > (vf){0};
    switch (act) {
    case VOX_ACT_RELU:
        *out = (vf)(pos & (vi)one);
        break;
    case VOX_ACT_ELU:
        *out = (vf)((pos & (vi)one) | (~pos & (vi)(*y + 1.0f)));
        break;
    case VOX_ACT_SIGMOID:
        *out = *y * (one - *y);
        break;
    case VOX_ACT_TANH:
        *out = one - *y * *y;
        break;
    default:
        *out = one;
        break;
    }
}

/* gx[i] = gy[i] * slope(y[i]) for i < n, a vector at a time (the tail through zero-padded
 * ones). */
static void act_backward_row(enum vox_nn_act act, const float *y, const float *gy, float *gx,
                             int64_t n)
{
    int64_t i = 0;
    vf v, g;
    for (; i + PACK_L <= n; i += PACK_L) {
        LD(v, y + i);
        LD(g, gy + i);
        slope_vec(act, &v, &v);
        g *= v;
        ST(gx + i, g);
    }
    if (i < n) {
        v = g = (vf){0};
        memcpy(&v, y + i, (size_t)(n - i) * sizeof *y);
        memcpy(&g, gy + i, (size_t)(n - i) * sizeof *gy);
        slope_vec(act, &v, &v);
        g *= v;
        memcpy(gx + i, &g, (size_t)(n - i) * sizeof *gx);
    }
}

const struct vox_nn_pack_fns PACK_FN = {PACK_L,           pack,       unpack, act_row,
                                        act_backward_row, pack_stream};
