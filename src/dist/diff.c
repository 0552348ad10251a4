/*
 * dist/diff.c: dist_diff's scalar version (dist/diff.h), the vector versions' twin: runs of
 * equal labels skipped four at a time (seg_skip_equal).
 */
#include "dist/diff.h"
#include "seg/seg_internal.h"

int64_t dist_diff_ref(const uint32_t *a, const uint32_t *b, int64_t n, uint32_t *idx)
{
    int64_t k = 0;
    for (int64_t j = seg_skip_equal(a, b, 0, n); j < n; j = seg_skip_equal(a, b, j + 1, n))
        if (a[j] && b[j])
            idx[k++] = (uint32_t)j;
    return k;
}
