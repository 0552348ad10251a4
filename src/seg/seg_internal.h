/*
 * seg/seg_internal.h: helpers shared by the files of src/seg (private).
 *
 * The shape of a volume, validation of the quantized affinity tensor, and an LSD radix sort
 * of 64-bit keys with a 32-bit payload (the region graph sorts its pairs with it: O(n) per
 * 8-bit digit, digits that are equal in every key are skipped).
 */
#ifndef VOX_SEG_INTERNAL_H
#define VOX_SEG_INTERNAL_H

#include "vox/seg.h"

#include <string.h>

/* A (Z, Y, X) volume: n = Z * Y * X voxels, plane = Y * X. */
struct seg_dims {
    int64_t z, y, x, n, plane;
};

/* Fills *d from a contiguous (3, Z, Y, X) u8 tensor; `what` names it in the message. */
enum vox_status seg_dims_from_q(struct vox_ctx *ctx, const struct vox_tensor *q,
                                struct seg_dims *d);
/* Fills *d from a contiguous (Z, Y, X) u32 tensor. */
enum vox_status seg_dims_from_labels(struct vox_ctx *ctx, const struct vox_tensor *labels,
                                     struct seg_dims *d);

struct seg_kv {
    uint64_t key;
    uint64_t val;
};

/* Sorts kv[0..n) by key, stably, using tmp[0..n) as scratch. */
void seg_radix_sort(struct seg_kv *kv, struct seg_kv *tmp, int64_t n);

/* The first x in [x, nx) where la[x] != lb[x] (or nx), four labels at a time: most faces of
 * a volume lie inside one segment. */
static inline int64_t seg_skip_equal(const uint32_t *la, const uint32_t *lb, int64_t x, int64_t nx)
{
    for (; x + 4 <= nx; x += 4) {
        uint64_t a[2], b[2];
        memcpy(a, la + x, sizeof a);
        memcpy(b, lb + x, sizeof b);
        if ((a[0] ^ b[0]) | (a[1] ^ b[1]))
            break;
    }
    while (x < nx && la[x] == lb[x])
        x++;
    return x;
}

/* Union-find root with path halving over parent[] (uint32 indices). */
static inline uint32_t seg_find(uint32_t *parent, uint32_t x)
{
    while (parent[x] != x) {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    return x;
}

/* Returns the whole pages inside p[0..bytes) to the system (their contents become zeros); for
 * buffers about to be freed whose memory the allocator would otherwise keep resident. */
void seg_release_pages(void *p, size_t bytes);

/* Appends one merge, growing the array. */
enum vox_status seg_history_push(struct vox_ctx *ctx, struct vox_merge_history *h, int64_t a,
                                 int64_t b, int64_t survivor, double score);

/* Basin ids the packed basin graph holds: 1..SEG_PACKED_MAX_ID. */
#define SEG_PACKED_MAX_ID ((1ll << 28) - 1)

/* The basin graph with each pair's largest face affinity, packed a << 36 | b << 8 | max
 * (a < b, labels <= SEG_PACKED_MAX_ID), in descending max, ties in ascending (a, b): a new
 * vox_alloc'd array *edges_out of *n_out edges (basin_graph.c). */
enum vox_status seg_basin_edges(struct vox_ctx *ctx, const struct vox_tensor *labels,
                                const struct vox_tensor *q, uint64_t **edges_out, int64_t *n_out);

/* vox_seg_single_linkage over seg_basin_edges' packed edges (linkage.c). Consumes e (freed
 * before the merge history is allocated) and uses sizes (nbasins + 1 basin sizes) as scratch. */
enum vox_status seg_single_linkage_packed(struct vox_ctx *ctx, int64_t nbasins, uint64_t *e,
                                          int64_t ne, int64_t *sizes,
                                          const struct vox_seg_params *p, uint32_t **map_out,
                                          int64_t *nseg_out, int64_t **seg_sizes_out,
                                          struct vox_merge_history *dend_out);

/* vox_seg_agglomerate that frees the graph (vox_rag_fini) as soon as it is copied, before
 * the heap is built: a lower peak for the pipeline (agglomerate.c). */
enum vox_status seg_agglomerate_owned(struct vox_ctx *ctx, struct vox_rag *rag,
                                      const struct vox_seg_params *p,
                                      struct vox_merge_history *hist_out);

#endif
