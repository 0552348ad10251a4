/*
 * peak_avx2.c: the FMA throughput loop on 256-bit registers (built with -mavx2 -mfma).
 * Twelve independent accumulator chains hide the FMA latency (4-5 cycles) on two ports.
 */
#include "core/peak.h"

#include <immintrin.h>

double vox_peak_loop_avx2(int64_t iters)
{
    __m256 a[12];
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++)
        a[i] = _mm256_set1_ps((float)i);
    for (int64_t k = 0; k < iters; k++)
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++)
            a[i] = _mm256_fmadd_ps(a[i], m, c);
    __m256 s = a[0];
    for (int i = 1; i < 12; i++)
        s = _mm256_add_ps(s, a[i]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return (double)out[0] + (double)out[7];
}
