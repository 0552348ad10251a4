/*
 * dist/diff_avx512.c: dist_diff (dist/diff.h), 16 labels a compare. The positions of a mask's
 * set bits are packed in a register (vpcompressd) and stored whole: the form of vpcompressd
 * that stores to memory is microcoded and slow on AMD's Zen 4.
 */
#include "dist/diff.h"

#include <immintrin.h>

int64_t dist_diff_avx512(const uint32_t *a, const uint32_t *b, int64_t n, uint32_t *idx,
                         bool nonzero)
{
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    int64_t k = 0;
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 in = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1);
        const __m512i va = _mm512_maskz_loadu_epi32(in, a + j);
        const __m512i vb = _mm512_maskz_loadu_epi32(in, b + j);
        /* lanes outside the row load zeros in both: equal */
        const __mmask16 m = _mm512_mask_cmpneq_epi32_mask(
            nonzero ? _mm512_test_epi32_mask(va, va) & _mm512_test_epi32_mask(vb, vb) : in, va, vb);
        const __m512i at = _mm512_add_epi32(iota, _mm512_set1_epi32((int)j));
        _mm512_storeu_si512((void *)(idx + k), _mm512_maskz_compress_epi32(m, at));
        k += __builtin_popcount(m);
    }
    return k;
}
