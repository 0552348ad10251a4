/*
 * dist/dist_internal.h: the chunk summaries shared by the files of src/dist (private).
 *
 * Every id is a global voxel index (C order of the whole volume). A fragment is a connected
 * set of voxels of one atomic chunk joined by watershed links (pointer or plateau edges) that
 * stay inside the chunk; its id is its first voxel. Basins are the connected components of
 * fragments joined by the links that cross chunk faces and by the plateau links decided above
 * the atomic level.
 */
#ifndef VOX_DIST_INTERNAL_H
#define VOX_DIST_INTERNAL_H

#include "vox/dist.h"

/* The box [lo, hi) of the volume of shape dims, all (z, y, x). */
struct dist_box {
    int64_t lo[3], hi[3];
};

struct dist_frag {
    int64_t id, size;
};

/* A pair: (fragment, voxel) for a link still to resolve; (fragment, fragment) for a union. */
struct dist_pair {
    int64_t a, b;
};

/* A voxel on a chunk face, and its fragment. */
struct dist_face {
    int64_t idx, frag;
};

/* A voxel of a plateau that touches a face: its plateau bits (bit d: neighbour d of
 * -z, -y, -x, +x, +y, +z is on the same plateau), whether it is a BFS seed (it has an exit). */
struct dist_plat {
    int64_t idx, frag;
    uint8_t bits, seed;
};

/* What a chunk or an octree node passes up (and, for a node, the unions it decided). */
struct dist_sum {
    struct dist_box box;
    struct dist_frag *frag; /* atomic chunks only: its fragments, in id order */
    int64_t nfrag;
    struct dist_pair *link; /* (fragment, target voxel outside the box) */
    int64_t nlink;
    struct dist_face *face; /* voxels on the box faces that have a neighbour in the volume */
    int64_t nface;
    struct dist_plat *plat; /* plateau voxels whose plateau reaches outside the box */
    int64_t nplat;
    struct dist_pair *uni;  /* (fragment, fragment) joined at this node */
    int64_t nuni;
};

struct dist_vol {
    const struct vox_tensor *aff; /* (3, Z, Y, X) u8 or f32 */
    int64_t dims[3];
};

void dist_sum_fini(struct vox_ctx *ctx, struct dist_sum *s);

/* Global neighbour offsets in direction order -z, -y, -x, +x, +y, +z. */
void dist_offsets(const int64_t dims[3], int64_t off[6]);
/* Whether the neighbour of voxel idx in direction d lies inside box b. */
bool dist_in_box(const struct dist_box *b, const int64_t dims[3], int64_t idx, int d);

/* Watershed of one atomic chunk: its summary, and (when lab != NULL, contiguous over the
 * box) each voxel's fragment as 1 + its position in s->frag (0: background). */
enum vox_status dist_chunk_ws(struct vox_ctx *ctx, const struct dist_vol *v,
                              const struct dist_box *box, const struct vox_seg_params *p,
                              struct dist_sum *s, uint32_t *lab);

/* Merges the summaries of an octree node's children into the node's summary. */
enum vox_status dist_node_ws(struct vox_ctx *ctx, const int64_t dims[3],
                             const struct dist_box *box, const struct dist_sum *kids, int nkids,
                             struct dist_sum *out);

/* Appends one element of `size` bytes to a growable array. */
bool dist_push(struct vox_ctx *ctx, void **arr, int64_t *n, int64_t *cap, const void *x,
               size_t size);

#endif
