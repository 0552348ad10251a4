/*
 * metrics_internal.h: what contingency.c, metrics.c and metrics_history.c share: the hash map
 * from a pair of 64-bit keys to a nonzero int64, the compensated sum, and the sums that every
 * score is computed from.
 */
#ifndef VOX_SEG_METRICS_INTERNAL_H
#define VOX_SEG_METRICS_INTERNAL_H

#include "vox/metrics.h"

#include <math.h>

/* Open addressing with linear probing; a slot whose value is 0 is empty, so stored values are
 * never 0. Deletion shifts the following run back, so no tombstones are needed. */
struct vox_cmap_slot {
    uint64_t k0, k1;
    int64_t v;
};

struct vox_cmap {
    struct vox_cmap_slot *slots;
    int64_t cap; /* a power of two, or 0 before the first insertion */
    int64_t len;
};

void vox_cmap_fini(struct vox_ctx *ctx, struct vox_cmap *m);
/* Makes room for `n` keys in all, so that many insertions cannot fail. */
enum vox_status vox_cmap_reserve(struct vox_ctx *ctx, struct vox_cmap *m, int64_t n);
/* The value of (k0, k1), or NULL if absent. */
int64_t *vox_cmap_find(const struct vox_cmap *m, uint64_t k0, uint64_t k1);
/* Adds delta to the value of (k0, k1), inserting it with value delta if absent. The result
 * must not be 0. */
enum vox_status vox_cmap_add(struct vox_ctx *ctx, struct vox_cmap *m, uint64_t k0, uint64_t k1,
                             int64_t delta);
void vox_cmap_del(struct vox_cmap *m, uint64_t k0, uint64_t k1);

/* Neumaier's compensated sum. */
struct vox_ksum {
    double s, c;
};

static inline void vox_ksum_add(struct vox_ksum *k, double x)
{
    double t = k->s + x;
    if (fabs(k->s) >= fabs(x))
        k->c += (k->s - t) + x;
    else
        k->c += (x - t) + k->s;
    k->s = t;
}

static inline double vox_ksum_value(const struct vox_ksum *k) { return k->s + k->c; }

/* x log2 x for a count (0 for 0 and 1). */
double vox_metrics_xlogx(int64_t x);

/* Everything the scores come from: voxel count, label counts, exact sums of squares and
 * compensated sums of x log2 x over cells (n), segments (s) and gt labels (t). */
struct vox_metrics_sums {
    int64_t voxels, n_seg, n_gt;
    unsigned __int128 snn, sss, stt;
    struct vox_ksum fn, fs, ft;
};

/* The cells of t that opt counts, sorted by (seg, gt). Seg-0 cells are kept for
 * VOX_SEG0_SINGLETONS (their voxels are singletons) and dropped for VOX_SEG0_IGNORE. */
enum vox_status vox_metrics_cells(struct vox_ctx *ctx, const struct vox_contingency *t,
                                  const struct vox_metrics_options *opt,
                                  struct vox_contingency_entry **cells_out, int64_t *n_out);
/* The sums of cells sorted by (seg, gt); reorders the cells (by (gt, seg)) on the way. */
void vox_metrics_sums_of(struct vox_contingency_entry *cells, int64_t n,
                         const struct vox_metrics_options *opt, struct vox_metrics_sums *s);
void vox_metrics_finish(const struct vox_metrics_sums *s, const struct vox_metrics_options *opt,
                        struct vox_metrics *m);
void vox_metrics_sort_seg(struct vox_contingency_entry *cells, int64_t n);
void vox_metrics_sort_gt(struct vox_contingency_entry *cells, int64_t n);

#endif
