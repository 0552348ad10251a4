/*
 * dist/diff.c: dist_diff's scalar version (dist/diff.h), the vector versions' twin: runs of
 * equal labels skipped four at a time (seg_skip_equal); and the choice of version.
 */
#include "dist/diff.h"
#include "seg/seg_internal.h"

int64_t dist_diff_ref(const uint32_t *a, const uint32_t *b, int64_t n, uint32_t *idx, bool nonzero)
{
    int64_t k = 0;
    for (int64_t j = seg_skip_equal(a, b, 0, n); j < n; j = seg_skip_equal(a, b, j + 1, n))
        if (!nonzero || (a[j] && b[j]))
            idx[k++] = (uint32_t)j;
    return k;
}

dist_diff_fn dist_diff_pick(struct vox_ctx *ctx)
{
    const enum vox_isa isa = vox_ctx_cpu(ctx)->isa;
    return isa == VOX_ISA_AVX512 ? dist_diff_avx512
           : isa == VOX_ISA_AVX2 ? dist_diff_avx2
                                 : dist_diff_ref;
}
