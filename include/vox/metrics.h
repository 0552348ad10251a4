/*
 * vox/metrics.h: scoring a segmentation against a ground truth: the contingency table, Rand
 * split/merge and the adapted Rand error, the variation of information (VOI) split/merge in
 * bits, the largest split and merge errors, and the scores along a whole merge history.
 *
 * The contingency table n_ij counts the voxels with segment label i and ground-truth label j.
 * It is accumulated block by block (vox_contingency_add) and tables of different blocks merge
 * exactly, in any order (vox_contingency_merge), so a volume larger than RAM, or one scored by
 * many workers, gives the same table as the whole volume at once. The table itself keeps every
 * voxel, labels 0 included; the label-0 conventions are applied when it is scored.
 *
 * Definitions (s_i = sum_j n_ij segment sizes, t_j = sum_i n_ij gt sizes, N = sum n_ij, over
 * the voxels that the conventions count):
 *   rand_split  = sum n_ij(n_ij-1) / sum t_j(t_j-1)    (pairs of voxels together in the gt
 *                                                       that the segmentation keeps together)
 *   rand_merge  = sum n_ij(n_ij-1) / sum s_i(s_i-1)    (pairs together in the segmentation
 *                                                       that are together in the gt)
 *   adapted_rand_error = 1 - 2 sum n(n-1) / (sum s(s-1) + sum t(t-1))   (SNEMI3D, skimage)
 *   voi_split = H(S|T), voi_merge = H(T|S), in bits (log2).
 * A ratio whose denominator is 0 (no pairs at all) is 1; with no voxel counted every error is 0.
 *
 * Conventions (struct vox_metrics_options; a zeroed struct or NULL is the default, which is
 * scikit-image's adapted_rand_error and variation_of_information(ignore_labels=(0,))):
 *   gt label 0   ignored by default: voxels where gt == 0 are not counted (skimage, CREMI,
 *                waterz, SNEMI3D). keep_gt0: gt 0 is an ordinary label.
 *   seg label 0  VOX_SEG0_LABEL (default): an ordinary segment (skimage, waterz, zwatershed).
 *                VOX_SEG0_SINGLETONS: every seg-0 voxel is a segment of its own (segascorus
 *                split0, Agglomeration.jl; CREMI's adapted Rand is close to this).
 *                VOX_SEG0_IGNORE: voxels where seg == 0 are not counted (ABISS evaluate).
 *   pairs        rand_squares: use sum n^2 instead of sum n(n-1) (self-pairs counted, as
 *                waterz and zwatershed do). VOI is unaffected.
 *
 * Numerics: all counts and sums of squares are exact integers (128-bit); entropies are
 * sum n log2 n in double, compensated, summed in label order, so results are deterministic and
 * independent of block order or thread count.
 */
#ifndef VOX_METRICS_H
#define VOX_METRICS_H

#include "vox/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- contingency table ------------------------------------------------------------------ */

struct vox_contingency;

/* One cell of the table. */
struct vox_contingency_entry {
    uint64_t seg, gt;
    int64_t count;
};

/* An empty table. It keeps `ctx` (borrowed; must outlive the table) for its memory. */
enum vox_status vox_contingency_create(struct vox_ctx *ctx, struct vox_contingency **t_out);
void vox_contingency_destroy(struct vox_contingency *t);

/* Counts the voxels of one block: seg and gt are (Z, Y, X) tensors of the same shape, any
 * strides, each of dtype u8, u16, u32, u64 or i32 (i32 labels must not be negative). On a
 * failure after the checks (out of memory, a negative label) the table holds part of the
 * block: discard it. */
enum vox_status vox_contingency_add(struct vox_ctx *ctx, struct vox_contingency *t,
                                    const struct vox_tensor *seg, const struct vox_tensor *gt);
/* Adds every count of src into dst (exact; merging in any order gives the same table). */
enum vox_status vox_contingency_merge(struct vox_ctx *ctx, struct vox_contingency *dst,
                                      const struct vox_contingency *src);
/* Adds `count` voxels of (seg, gt): for tables read back from disk and for tests. */
enum vox_status vox_contingency_add_count(struct vox_ctx *ctx, struct vox_contingency *t,
                                          uint64_t seg, uint64_t gt, int64_t count);

int64_t vox_contingency_voxels(const struct vox_contingency *t);  /* all voxels added */
int64_t vox_contingency_cells(const struct vox_contingency *t);   /* nonzero cells */
int64_t vox_contingency_get(const struct vox_contingency *t, uint64_t seg, uint64_t gt);
/* The nonzero cells sorted by (seg, gt), in a new array (free it with vox_free). */
enum vox_status vox_contingency_export(struct vox_ctx *ctx, const struct vox_contingency *t,
                                       struct vox_contingency_entry **cells_out,
                                       int64_t *n_out);

/* ---- scores ----------------------------------------------------------------------------- */

enum vox_seg0 { VOX_SEG0_LABEL = 0, VOX_SEG0_SINGLETONS, VOX_SEG0_IGNORE };

struct vox_metrics_options {
    bool keep_gt0;       /* false: voxels with gt == 0 are not counted */
    enum vox_seg0 seg0;  /* what seg label 0 means */
    bool rand_squares;   /* Rand scores from sum n^2 rather than sum n(n-1) */
};

struct vox_metrics {
    int64_t voxels;             /* N: the voxels counted under the conventions */
    int64_t n_seg, n_gt;        /* segments / gt labels with counted voxels (singletons each) */
    double rand_split, rand_merge, adapted_rand_error;
    double voi_split, voi_merge; /* bits */
};

/* One of the largest errors: a gt label split into `pieces` segments (split list) or a segment
 * spanning `pieces` gt labels (merge list); `voi` is its share of voi_split / voi_merge (bits;
 * the shares of all labels sum to the total). */
struct vox_metrics_error {
    uint64_t label;
    int64_t voxels;
    int64_t pieces;
    double voi;
};

/* Scores a table. opt NULL: the defaults above. */
enum vox_status vox_metrics_compute(struct vox_ctx *ctx, const struct vox_contingency *t,
                                    const struct vox_metrics_options *opt,
                                    struct vox_metrics *m_out);

/* The k gt labels with the largest VOI split share and the k segments with the largest VOI
 * merge share, largest first (ties: smaller label first). splits_out and merges_out hold k
 * elements each (either may be NULL); *n_splits_out / *n_merges_out get how many were filled
 * (fewer when fewer labels have a nonzero share). Singleton seg-0 voxels are never listed. */
enum vox_status vox_metrics_top_errors(struct vox_ctx *ctx, const struct vox_contingency *t,
                                       const struct vox_metrics_options *opt, int64_t k,
                                       struct vox_metrics_error *splits_out,
                                       int64_t *n_splits_out,
                                       struct vox_metrics_error *merges_out,
                                       int64_t *n_merges_out);

/* Scores a whole merge history in one pass, updating the table as segments merge.
 *
 * base: the table of the base segmentation against the gt. Merge i joins the segments that
 * contain ids a[i] and b[i] (union-find: an id names the segment it was merged into, so both
 * "representative" histories and MST edge lists work; the merged segment keeps the name a[i]
 * for the metrics, which do not depend on names). A merge of two ids already together changes
 * nothing; an id absent from the table is an empty segment. Ids must be >= 0, and not 0 unless
 * opt->seg0 is VOX_SEG0_LABEL.
 *
 * thresholds NULL: m_out gets n + 1 results, before any merge and after each (score may be
 * NULL). Otherwise m_out gets n_thresholds results: for threshold th, the result after the
 * merges that precede the first merge with score < th (higher scores merge first, as with
 * affinities; negate distances). Cost O(cells log cells) once plus O(smaller row) per merge. */
enum vox_status vox_metrics_history(struct vox_ctx *ctx, const struct vox_contingency *base,
                                    const struct vox_metrics_options *opt, int64_t n,
                                    const int64_t *a, const int64_t *b, const double *score,
                                    int64_t n_thresholds, const double *thresholds,
                                    struct vox_metrics *m_out);

#ifdef __cplusplus
}
#endif
#endif
