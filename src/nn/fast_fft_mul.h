/*
 * nn/fast_fft_mul.h: the body of the FFT convolution's spectral products, compiled once per
 * ISA (fast_fft_mul.c, fast_fft_mul_avx2.c, fast_fft_mul_avx512.c define FFT_L, the lanes of
 * a vector, MUL_TT x MUL_KT, the register tile (2 or 3), and FFT_MUL, the function's name,
 * then include this file).
 *
 * For one block of VOX_NN_FFT_FB frequencies, summed over input channels c in order,
 *     y[t][k] = sum_c x[t][c] * w[k][c]        (complex, per frequency lane)
 * for every tile t and output channel k: a complex matrix product per frequency, vectorised
 * along the frequencies (split real and imaginary lanes, so one complex multiply-add is four
 * FMAs with no shuffles). Blocks are [re FB][im FB] floats. A register tile of MUL_TT tiles x
 * MUL_KT outputs keeps 2 x TT x KT accumulators; per c it loads KT weight pairs and TT input
 * pairs for 4 x TT x KT FMAs. The weights of one output run contiguously along c (w is
 * [k][c]): KT sequential streams, which the prefetchers follow (they come from memory: a
 * block's weights are used once per group of tiles).
 */
#include "fast.h"

#include <string.h>

/* ISO C mode compiles a * b + c as two roundings; these products want FMAs. */
#pragma GCC optimize("fp-contract=fast")

typedef float vf __attribute__((vector_size(4 * FFT_L)));

#define INLINE static inline __attribute__((always_inline))
#define LD(v, p) memcpy(&(v), (p), sizeof(vf))
#define ST(p, v) memcpy((p), &(v), sizeof(vf))

enum { BL = 2 * VOX_NN_FFT_FB }; /* floats per complex block */
/* Tiles per pass over the outputs: their x blocks (16 x cin x 128 bytes) stay in L2 while
 * every output's weights stream past (64 tiles at once re-read x from L3: 111 against 153
 * GFLOP/s per core at 80 channels). */
enum { CHUNK = 16 };

/* Tiles t0 .. t0+tt, outputs k0 .. k0+kt, lanes h .. h+FFT_L of each block (tt and kt are
 * constants where this is inlined: the unrolled loops keep the accumulators in registers). */
INLINE void tile(const float *x, const float *w, float *y, int64_t cin, int64_t cout, int64_t t0,
                 int64_t k0, int64_t h, const int tt, const int kt)
{
    vf ar[MUL_TT][MUL_KT], ai[MUL_TT][MUL_KT];
#pragma GCC unroll 4
    for (int i = 0; i < tt; i++)
#pragma GCC unroll 4
        for (int j = 0; j < kt; j++)
            ar[i][j] = ai[i][j] = (vf){0};
    for (int64_t c = 0; c < cin; c++) {
        vf wr[MUL_KT], wi[MUL_KT];
        const float *wc = w + (k0 * cin + c) * BL + h;
#pragma GCC unroll 4
        for (int j = 0; j < kt; j++) {
            LD(wr[j], wc + j * cin * BL);
            LD(wi[j], wc + j * cin * BL + VOX_NN_FFT_FB);
        }
#pragma GCC unroll 4
        for (int i = 0; i < tt; i++) {
            vf xr, xi;
            const float *xc = x + ((t0 + i) * cin + c) * BL + h;
            LD(xr, xc);
            LD(xi, xc + VOX_NN_FFT_FB);
#pragma GCC unroll 4
            for (int j = 0; j < kt; j++) { /* one FMA per statement (contracted) */
                ar[i][j] += xr * wr[j];
                ar[i][j] -= xi * wi[j];
                ai[i][j] += xr * wi[j];
                ai[i][j] += xi * wr[j];
            }
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < tt; i++)
#pragma GCC unroll 4
        for (int j = 0; j < kt; j++) {
            float *yc = y + ((t0 + i) * cout + k0 + j) * BL + h;
            ST(yc, ar[i][j]);
            ST(yc + VOX_NN_FFT_FB, ai[i][j]);
        }
}

#if MUL_TT > 3 || MUL_KT > 3
#error "fast_fft_mul.h: register tiles of at most 3 x 3"
#endif
#define CASE(a, b)                                                                                 \
    case (a)*4 + (b):                                                                              \
        tile(x, w, y, cin, cout, t0, k0, h, a, b);                                                 \
        break;

void FFT_MUL(const float *x, const float *w, float *y, int64_t tiles, int64_t cin, int64_t cout)
{
    for (int64_t t1 = 0; t1 < tiles; t1 += CHUNK) {
        const int64_t t2 = tiles - t1 < CHUNK ? tiles : t1 + CHUNK;
        for (int64_t h = 0; h < VOX_NN_FFT_FB; h += FFT_L)
            for (int64_t k0 = 0; k0 < cout; k0 += MUL_KT) {
                const int kt = (int)(cout - k0 < MUL_KT ? cout - k0 : MUL_KT);
                for (int64_t t0 = t1; t0 < t2; t0 += MUL_TT) {
                    const int tt = (int)(t2 - t0 < MUL_TT ? t2 - t0 : MUL_TT);
                    switch (tt * 4 + kt) {
                        CASE(1, 1)
                        CASE(1, 2)
                        CASE(2, 1)
                        CASE(2, 2)
#if MUL_KT == 3
                        CASE(1, 3)
                        CASE(2, 3)
#endif
#if MUL_TT == 3
                        CASE(3, 1)
                        CASE(3, 2)
#endif
#if MUL_TT == 3 && MUL_KT == 3
                        CASE(3, 3)
#endif
                    default:
                        break;
                    }
                }
            }
    }
}
