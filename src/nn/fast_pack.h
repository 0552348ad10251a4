/*
 * nn/fast_pack.h: the body of the blocked layout's row transposes, compiled once per ISA
 * (fast_pack.c, fast_pack_avx2.c, fast_pack_avx512.c define PACK_L, the lanes of a channel
 * block, and PACK_FN, the table's name, then include this file).
 *
 * Packing a row turns L channel rows (x contiguous) into x-major blocks of L lanes: an L x L
 * transpose per run of L voxels, done in registers as log2(L) rounds of "zip" (interleave
 * the low, then the high halves of rows i and i + L/2): each round moves one bit of the row
 * index into the column index, so after log2(L) rounds row i holds column i. Unpacking is the
 * same transpose the other way. GCC vector types give each ISA file its own width without
 * intrinsics; the tail (fewer than L voxels) is copied element by element.
 */
#include "fast.h"

#include <string.h>

typedef float vf __attribute__((vector_size(4 * PACK_L)));
typedef int32_t vi __attribute__((vector_size(4 * PACK_L)));

#define INLINE static inline __attribute__((always_inline))
#define LD(v, p) memcpy(&(v), (p), sizeof(vf))
#define ST(p, v) memcpy((p), &(v), sizeof(vf))

#include "fast_vact.h"

/* Transposes the L x L matrix in r (row i: r[i]) in place (unrolled: the rows stay in
 * registers). */
INLINE void transpose(vf r[PACK_L])
{
    vi lo, hi;
#pragma GCC unroll 16
    for (int k = 0; k < PACK_L / 2; k++) {
        lo[2 * k] = k, lo[2 * k + 1] = PACK_L + k;
        hi[2 * k] = PACK_L / 2 + k, hi[2 * k + 1] = PACK_L + PACK_L / 2 + k;
    }
#pragma GCC unroll 4
    for (int round = 1; round < PACK_L; round *= 2) {
        vf t[PACK_L];
#pragma GCC unroll 16
        for (int i = 0; i < PACK_L / 2; i++) {
            t[2 * i] = __builtin_shuffle(r[i], r[i + PACK_L / 2], lo);
            t[2 * i + 1] = __builtin_shuffle(r[i], r[i + PACK_L / 2], hi);
        }
#pragma GCC unroll 16
        for (int i = 0; i < PACK_L; i++)
            r[i] = t[i];
    }
}

/* dst[x * L + l] = src[l][x] for x < n (src[l] NULL: 0). */
static void pack(const float *const *src, float *dst, int64_t n)
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
        transpose(r);
#pragma GCC unroll 16
        for (int l = 0; l < PACK_L; l++)
            ST(dst + (x + l) * PACK_L, r[l]);
    }
    for (; x < n; x++)
        for (int l = 0; l < PACK_L; l++)
            dst[x * PACK_L + l] = src[l] ? src[l][x] : 0.0f;
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
        transpose(r);
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

const struct vox_nn_pack_fns PACK_FN = {PACK_L, pack, unpack, act_row};
