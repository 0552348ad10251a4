/*
 * dist/diff_avx2.c: dist_diff (dist/diff.h), 8 labels a compare.
 */
#include "dist/diff.h"

#include <immintrin.h>

int64_t dist_diff_avx2(const uint32_t *a, const uint32_t *b, int64_t n, uint32_t *idx, bool nonzero)
{
    const __m256i zero = _mm256_setzero_si256();
    int64_t k = 0, j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256i va = _mm256_loadu_si256((const __m256i *)(const void *)(a + j));
        const __m256i vb = _mm256_loadu_si256((const __m256i *)(const void *)(b + j));
        /* lanes equal (or, with nonzero, either zero): all ones */
        __m256i skip = _mm256_cmpeq_epi32(va, vb);
        if (nonzero)
            skip = _mm256_or_si256(
                skip, _mm256_or_si256(_mm256_cmpeq_epi32(va, zero), _mm256_cmpeq_epi32(vb, zero)));
        unsigned m = ~(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(skip)) & 0xffu;
        while (m) {
            idx[k++] = (uint32_t)(j + __builtin_ctz(m));
            m &= m - 1;
        }
    }
    for (; j < n; j++)
        if (a[j] != b[j] && (!nonzero || (a[j] && b[j])))
            idx[k++] = (uint32_t)j;
    return k;
}
