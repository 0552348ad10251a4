/*
 * dist/diff.h: where two rows of labels differ: the faces between two fragments that a
 * chunk's face record sums (dist/chunk_ws.c: both labels non-zero), and the ends of the runs
 * of a label row (dist/store.c: a row against itself shifted by one). Private to src/dist.
 *
 * About one face in five differs on the bench volume, so the scalar loop (dist_diff_ref, the
 * twin the vector versions are tested against) spends most of its time deciding, face by
 * face, to go on. The vector versions compare 8 (diff_avx2.c) or 16 (diff_avx512.c) labels
 * at once into a bit mask and write out the positions of its set bits.
 */
#ifndef VOX_DIST_DIFF_H
#define VOX_DIST_DIFF_H

#include "vox/core.h"

#include <stdbool.h>
#include <stdint.h>

/* The positions j in [0, n) where a[j] != b[j] (and, with nonzero, a[j] != 0 and b[j] != 0),
 * in increasing order, into idx (room for n + 16: the vector versions may write up to 16
 * past the last); their number. */
typedef int64_t (*dist_diff_fn)(const uint32_t *a, const uint32_t *b, int64_t n, uint32_t *idx,
                                bool nonzero);
int64_t dist_diff_ref(const uint32_t *a, const uint32_t *b, int64_t n, uint32_t *idx, bool nonzero);
int64_t dist_diff_avx2(const uint32_t *a, const uint32_t *b, int64_t n, uint32_t *idx,
                       bool nonzero);
int64_t dist_diff_avx512(const uint32_t *a, const uint32_t *b, int64_t n, uint32_t *idx,
                         bool nonzero);

/* The version for the context's ISA. */
dist_diff_fn dist_diff_pick(struct vox_ctx *ctx);

#endif
