/*
 * vox/seg.h: segmentation of an affinity graph.
 *
 *   affinities (3, Z, Y, X) u8 | f32          boundary map (Z, Y, X)
 *        │ vox_seg_quantize                        │ vox_seg_boundary_to_aff
 *        ▼                                         ▼
 *   quantized affinities (3, Z, Y, X) u8, q = round(255 a)
 *        │ vox_seg_watershed      steepest ascent, T_high plateaus, T_low background
 *        ▼
 *   basins (Z, Y, X) u32 + sizes
 *        │ vox_rag_build          max / sum / count / histogram per pair of basins
 *        │ vox_seg_single_linkage size-dependent merge, then dust → 0
 *        ▼
 *   base segments (u32) + region graph
 *        │ vox_seg_agglomerate    mean | quantile | max | smoothed mean, exact integers
 *        ▼
 *   merge history (a, b, survivor, score) ── vox_merge_history_cut(threshold) → labels
 *
 * vox_segment runs the whole pipeline (what `vox segment` uses).
 *
 * Conventions (after Zlateski & Seung, arXiv 1505.00249, and the reference note
 * shared/reference/segmentation.md):
 * - Channel c at voxel v is the affinity between v and v - e_c, e = (z, y, x): channel 0 = z.
 *   Index 0 along axis c of channel c links to nothing and is never read.
 * - Every comparison is exact integer arithmetic in the 8-bit quantized domain: a float
 *   affinity a in [0, 1] becomes q = floor(255 a + 0.5). uint8 input is used as is, so a u8
 *   volume and the float volume a / 255.0f give bitwise identical results. Floats outside
 *   [-1e-6, 1 + 1e-6] or NaN are VOX_INVALID_ARG (the message names the first bad index);
 *   values in the tolerance band are clamped.
 * - Label 0 is background. Labels are canonical: numbered 1, 2, ... in C order of each
 *   segment's first voxel, so they do not depend on the processing order or thread count.
 * - Volumes must have fewer than 2^32 - 1 voxels (labels and voxel links are uint32).
 * - Results are bitwise identical for any thread count.
 */
#ifndef VOX_SEG_H
#define VOX_SEG_H

#include "vox/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- parameters ------------------------------------------------------------------------ */

/* The agglomeration score of an edge between two segments, over the affinities of all the
 * voxel faces they share (in quantized units, divided by 255 where reported as a double). */
enum vox_seg_score {
    VOX_SEG_SCORE_MEAN,     /* sum / count */
    VOX_SEG_SCORE_QUANTILE, /* the k-th smallest face, k = floor(quantile * (count - 1)) */
    VOX_SEG_SCORE_MAX,      /* the largest face */
    VOX_SEG_SCORE_SMOOTHED, /* sum / (smooth_k + count) (Agglomeration.jl's prior) */
    VOX_SEG_SCORE_COUNT
};

const char *vox_seg_score_str(enum vox_seg_score s);

/* One point of the size table tau^-1: below `aff` (quantized) nothing merges; between two
 * points the size limit is interpolated linearly (integer, rounded down); above the last point
 * it stays at the last size. */
struct vox_seg_size_point {
    int aff;      /* quantized affinity, 0..255, strictly increasing along the table */
    int64_t size; /* voxels, >= 0 */
};

#define VOX_SEG_SIZE_POINTS_MAX 16

struct vox_seg_params {
    int low;   /* quantized T_low: edges <= low are removed, voxels with none above are 0 */
    int high;  /* quantized T_high: edges >= high join plateaus (seeds); low < high <= 255 */
    int nsize; /* points in `size` (0: no size merge) */
    struct vox_seg_size_point size[VOX_SEG_SIZE_POINTS_MAX];
    int64_t dust;             /* after the size merge, segments below this size become 0 */
    enum vox_seg_score score; /* agglomeration score */
    double quantile;          /* for VOX_SEG_SCORE_QUANTILE, in [0, 1] */
    int64_t smooth_k;         /* for VOX_SEG_SCORE_SMOOTHED, >= 0 */
    /* The agglomeration stops before the first merge that a cut at `max_threshold` would
     * not apply (see vox_merge_history_cut); 1.0 records every merge with a score > 0. */
    double max_threshold;
};

/* ABISS/seuron's defaults: high 0.99 (252), low 0.01 (3), size 200 from low up, dust 200,
 * mean score, median quantile, smooth_k 25, max_threshold 1. */
void vox_seg_params_defaults(struct vox_seg_params *p);
/* Checks ranges and the size table; the message names the field. */
enum vox_status vox_seg_params_check(struct vox_ctx *ctx, const struct vox_seg_params *p);
/* The size merge's limit tau^-1(w) for every quantized affinity w: 0 at or below low and below
 * the table's first point, linear (floor division) between points, constant after the last.
 * The whole-volume and the chunked size merge both use it, so they decide alike. */
void vox_seg_size_limits(const struct vox_seg_params *p, int64_t lim[256]);

/* ---- input ----------------------------------------------------------------------------- */

/* Quantizes affinities (3, Z, Y, X), u8 or f32, any strides, into a new contiguous u8
 * tensor *q_out (the caller frees it with vox_tensor_free). */
enum vox_status vox_seg_quantize(struct vox_ctx *ctx, const struct vox_tensor *aff,
                                 struct vox_tensor *q_out);
/* The same for a box of them (u8 or f32, rank 4, any strides) into q, a u8 tensor of the
 * box's shape with contiguous rows (a view of the whole quantized tensor, so a volume is
 * read and quantized a slab at a time); a bad value is named by its index in the volume,
 * the box's index plus origin (the box's first index; NULL: none). */
enum vox_status vox_seg_quantize_box(struct vox_ctx *ctx, const struct vox_tensor *aff,
                                     const int64_t origin[4], struct vox_tensor *q);

/* Affinities from a boundary map p (Z, Y, X), u8 or f32 in [0, 1]: quantized as above, then
 * q(u, v) = 255 - max(p_u, p_v); with `inside` p is the probability of being inside and
 * q(u, v) = min(p_u, p_v). Writes a new contiguous u8 (3, Z, Y, X) tensor. */
enum vox_status vox_seg_boundary_to_aff(struct vox_ctx *ctx, const struct vox_tensor *p,
                                        bool inside, struct vox_tensor *q_out);

/* ---- watershed ------------------------------------------------------------------------- */

/* Watershed of quantized affinities q (u8, contiguous (3, Z, Y, X)).
 * 1. Each voxel points along its steepest edges (value = its max m) and along every edge
 *    >= high; m <= low makes it background 0.
 * 2. A voxel with an edge to a neighbour of larger max keeps one such edge: the one to the
 *    neighbour of lowest linear index (the paper's rule). Non-maximal plateaus are split by
 *    one breadth-first search seeded with those exit voxels in C order, neighbours visited
 *    in order of linear index: each plateau voxel points to the voxel that reached it.
 * 3. Regional-maximum plateaus (including every component of >= high edges) become basins;
 *    each voxel gets the basin its pointers lead to, numbered canonically.
 * Outputs: *labels_out, a new u32 (Z, Y, X) tensor; *nbasins_out; *sizes_out, a vox_alloc'd
 * array of nbasins + 1 voxel counts (index 0: background), freed with vox_free. Memory: the
 * labels plus one byte per voxel. */
enum vox_status vox_seg_watershed(struct vox_ctx *ctx, const struct vox_tensor *q,
                                  const struct vox_seg_params *p, struct vox_tensor *labels_out,
                                  int64_t *nbasins_out, int64_t **sizes_out);

/* ---- region graph ---------------------------------------------------------------------- */

/* The statistics of the contact between two segments a < b, over the voxel faces (u, v)
 * with labels {a, b}, in quantized units. Faces touching label 0 are not counted. */
struct vox_rag_edge {
    uint32_t a, b;
    uint8_t max;    /* largest face affinity */
    int32_t nbins;  /* nonzero histogram bins, at hist..hist+nbins of the rag's arrays */
    int64_t hist;
    uint64_t sum;   /* sum of face affinities */
    uint64_t count; /* faces: the contact area */
};

/* The region graph: edges sorted by (a, b); histograms (sorted by bin) only when built with
 * `histograms`. */
struct vox_rag {
    int64_t nseg; /* segments are 1..nseg */
    int64_t n;    /* edges */
    struct vox_rag_edge *e;
    int64_t nhist;
    uint8_t *hist_bin;
    uint64_t *hist_count;
};

/* Builds the graph of `labels` (u32 contiguous (Z, Y, X), values <= nseg) over q. */
enum vox_status vox_rag_build(struct vox_ctx *ctx, const struct vox_tensor *labels, int64_t nseg,
                              const struct vox_tensor *q, bool histograms,
                              struct vox_rag *rag_out);
void vox_rag_fini(struct vox_ctx *ctx, struct vox_rag *rag);
/* The graph of the labelling map[labels] (map: rag->nseg + 1 entries into 0..nseg): edges
 * whose ends map to the same segment or to 0 vanish, parallel edges add exactly. Equal to
 * vox_rag_build on the relabelled volume, without touching voxels. */
enum vox_status vox_rag_contract(struct vox_ctx *ctx, const struct vox_rag *rag,
                                 const uint32_t *map, int64_t nseg, struct vox_rag *out);

/* ---- merges ---------------------------------------------------------------------------- */

/* One merge: segments a and b (the current ids of their roots) became `survivor` = min(a, b),
 * with `score` in affinity units (quantized score / 255). */
struct vox_seg_merge {
    int64_t a, b, survivor;
    double score;
};

struct vox_merge_history {
    int64_t nseg; /* the base segments are 1..nseg */
    int64_t n, cap;
    struct vox_seg_merge *m;
};

void vox_merge_history_fini(struct vox_ctx *ctx, struct vox_merge_history *h);

/* Size-dependent single linkage over a basin graph (its max statistic), then dust removal.
 * Edges are taken in descending max (ties: ascending (a, b)); an edge with max > low merges
 * its two clusters when the smaller holds fewer voxels than tau^-1(max). Then every cluster
 * below p->dust voxels becomes 0 (the reference convention: dust is background). *map_out
 * (vox_alloc'd, nseg + 1 entries, map[0] = 0) gives each basin its segment, numbered
 * canonically 1..*nseg_out; *seg_sizes_out (nseg_out + 1 entries, [0] = background voxels)
 * their sizes. *dend_out (may be NULL) receives the merges made (the MST of the merges) in
 * basin ids with score = max / 255. */
enum vox_status vox_seg_single_linkage(struct vox_ctx *ctx, const struct vox_rag *rag,
                                       const int64_t *sizes, const struct vox_seg_params *p,
                                       uint32_t **map_out, int64_t *nseg_out,
                                       int64_t **seg_sizes_out,
                                       struct vox_merge_history *dend_out);

/* Rewrites u32 labels through map (labels[v] = map[labels[v]]), in parallel. */
void vox_seg_relabel(struct vox_ctx *ctx, struct vox_tensor *labels, const uint32_t *map);

/* Greedy agglomeration of the region graph (built with histograms for the quantile score):
 * repeatedly merges the edge of best score (ties: smaller a, then smaller b), combining the
 * statistics of parallel edges exactly (sums and histograms add). Stops per
 * p->max_threshold. Writes the merges in order to *hist_out. */
enum vox_status vox_seg_agglomerate(struct vox_ctx *ctx, const struct vox_rag *rag,
                                    const struct vox_seg_params *p,
                                    struct vox_merge_history *hist_out);

/* True when a cut at `threshold` applies a merge of this score: 1 - score < threshold.
 * A cut applies the history's merges in order up to the first one it does not apply, so cuts
 * at increasing thresholds nest. */
bool vox_merge_applies(double score, double threshold);

/* Cuts the history at `threshold`: *map_out (vox_alloc'd, nseg + 1) maps each base segment
 * to its final label, numbered canonically 1..*nfinal_out (0 stays 0). */
enum vox_status vox_merge_history_map(struct vox_ctx *ctx, const struct vox_merge_history *h,
                                      double threshold, uint32_t **map_out,
                                      int64_t *nfinal_out);

/* Writes the cut of `base` (u32 (Z, Y, X)) at `threshold` into out (u32 or u64, same shape;
 * may be `base` itself). */
enum vox_status vox_merge_history_cut(struct vox_ctx *ctx, const struct vox_merge_history *h,
                                      const struct vox_tensor *base, double threshold,
                                      struct vox_tensor *out, int64_t *nfinal_out);

/* ---- the whole pipeline ---------------------------------------------------------------- */

struct vox_seg_result {
    struct vox_tensor labels;        /* u32 (Z, Y, X): segments after size merge and dust */
    int64_t nseg;                    /* labels are 0..nseg */
    int64_t nbasins;                 /* watershed basins before the size merge */
    struct vox_merge_history dend;   /* size merges, in basin ids */
    struct vox_merge_history merges; /* agglomeration, in ids of `labels` */
    /* vox_segment's time per stage: the watershed; the basin graph, size merge, dust and the
     * segments' region graph; the agglomeration (seconds; 0 where not measured). */
    double seconds[3];
};

/* Quantize (unless aff is contiguous u8) → watershed → size merge + dust → region graph →
 * agglomeration. Cut the result with vox_merge_history_cut(&res->merges, &res->labels, ...). */
enum vox_status vox_segment(struct vox_ctx *ctx, const struct vox_tensor *aff,
                            const struct vox_seg_params *p, struct vox_seg_result *res_out);
/* vox_segment that takes the affinities over: *aff is freed (vox_tensor_free, left zeroed) as
 * soon as the region graph is built, or on failure, so the agglomeration and a cut run without
 * it (3 B/voxel less at the peak for u8 input, 12 for f32). */
enum vox_status vox_segment_consume(struct vox_ctx *ctx, struct vox_tensor *aff,
                                    const struct vox_seg_params *p,
                                    struct vox_seg_result *res_out);
/* Told after each stage of vox_segment: 0 the watershed (res->labels are the basins,
 * res->nbasins set), 1 the size merge, dust and the segments' region graph (labels are the
 * base segments, res->nseg set), 2 the agglomeration (res->merges set); seconds: the stage's
 * time. For progress on long runs; res is read-only and only valid during the call. */
struct vox_seg_observer {
    void (*stage_done)(void *arg, int stage, const struct vox_seg_result *res, double seconds);
    void *arg;
};
/* vox_segment_consume that tells `obs` (or nobody, NULL) each stage as it ends. */
enum vox_status vox_segment_observed(struct vox_ctx *ctx, struct vox_tensor *aff,
                                     const struct vox_seg_params *p,
                                     const struct vox_seg_observer *obs,
                                     struct vox_seg_result *res_out);
void vox_seg_result_fini(struct vox_ctx *ctx, struct vox_seg_result *res);

#ifdef __cplusplus
}
#endif
#endif
