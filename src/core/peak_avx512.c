/*
 * peak_avx512.c: the FMA throughput loop on 512-bit registers (built with -mavx512f).
 * Twelve independent accumulator chains hide the FMA latency (4-5 cycles) on two ports.
 */
#include "core/peak.h"

#include <immintrin.h>

double vox_peak_loop_avx512(int64_t iters)
{
    __m512 a[12];
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++)
        a[i] = _mm512_set1_ps((float)i);
    for (int64_t k = 0; k < iters; k++)
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++)
            a[i] = _mm512_fmadd_ps(a[i], m, c);
    __m512 s = a[0];
    for (int i = 1; i < 12; i++)
        s = _mm512_add_ps(s, a[i]);
    float out[16];
    _mm512_storeu_ps(out, s);
    return (double)out[0] + (double)out[15];
}
