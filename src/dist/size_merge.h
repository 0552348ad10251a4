/*
 * dist/size_merge.h: the chunked size merge's summaries, shared by size_merge.c (the tree)
 * and size_merge_ranks.c (its atomic chunks and level-1 nodes on other ranks). Private.
 */
#ifndef VOX_DIST_SIZE_MERGE_H
#define VOX_DIST_SIZE_MERGE_H

#include "dist_internal.h"

struct sm_basin {
    uint32_t id;
    uint8_t touch; /* bit 2 * axis + side: touches that face of the node's box */
};

/* A chunk's or node's carried state, and the merges it made final. */
struct sm_sum {
    struct dist_box box;
    struct sm_basin *basin; /* sorted by id */
    int64_t nbasin;
    struct sm_edge *edge; /* sorted by (a, b) while deciding; carried up in decision order */
    int64_t nedge;
    struct sm_edge *fin; /* final merges */
    int64_t nfin;
};

struct sm_run {
    struct vox_ctx *ctx;
    const struct vox_seg_params *p;
    const struct dist_vol *vol;
    const struct dist_labels *basins;
    struct vox_dist_stats *stats;
    const int64_t *sizes;
    int64_t dims[3], lim[256];
    int64_t chunk[3];
    struct dist_tree tree;
    struct sm_sum *sum[DIST_TREE_LEVELS];  /* per level and node */
    struct sm_fin *lfin[DIST_TREE_LEVELS]; /* per level and node: its final merges */
    int64_t lv[DIST_TREE_LEVELS][2];       /* per level: basins and edges carried up */
    struct dist_scratch *sc;               /* per worker */
    struct sm_fin *fin;                    /* every node's final merges, in (level, node) order */
    int64_t nfin, capfin;
    struct dist_share *share; /* rank 0: the other ranks' atomic chunks (or NULL) */
};

void sm_sum_fini(struct vox_ctx *ctx, struct sm_sum *s);
/* The box of node i of `level` (0: atomic chunk i). */
void sm_box(const struct sm_run *r, int level, int64_t i, struct dist_box *b);
/* Atomic chunk i's summary s (its box set) from its voxels (sc: the worker's scratch). */
enum vox_status sm_chunk(const struct sm_run *r, struct sm_sum *s, int64_t i,
                         struct dist_scratch *sc);
/* A node's summary s (its box set) from its nk children's. */
enum vox_status sm_node(const struct sm_run *r, const struct sm_sum *kids, int nk,
                        struct sm_sum *s);

/* Rank 0's side of struct dist_share (size_merge_ranks.c): chunk i's message for its rank,
 * chunk i's summary and level-1 node j's from their rank, into r's slots. */
enum vox_status sm_give(void *arg, int64_t i, void **blob, int64_t *len);
enum vox_status sm_take(void *arg, int64_t i, const uint8_t *blob, int64_t len);
enum vox_status sm_take_node(void *arg, int level, int64_t j, const uint8_t *blob, int64_t len);

#endif
