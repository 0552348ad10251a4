/*
 * vox/dist.h: chunked (distributed-ready) segmentation that reproduces the whole-volume
 * result exactly.
 *
 * The volume is cut into atomic chunks of a user-given size (the last chunk per axis may be
 * smaller). Each chunk is processed alone from its affinities plus a ghost margin, and
 * produces a summary (fragments, links that leave the chunk, its face voxels, and the plateau
 * voxels whose fate depends on other chunks). An octree merges 2x2x2 summaries per level
 * until one node covers the volume; a decision that depends on data outside a node is carried
 * up to the level where it becomes interior (ABISS's delayed decision, reference note §3).
 * Only summaries travel between chunks, so the scheme maps onto separate processes.
 *
 * Ids are global voxel indices (C order of the whole volume), renumbered canonically at the
 * end, so results do not depend on the chunk size, the schedule or the thread count.
 */
#ifndef VOX_DIST_H
#define VOX_DIST_H

#include "vox/core.h"
#include "vox/seg.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The chunked watershed: the same outputs as vox_seg_watershed (labels, basin count, sizes),
 * bitwise, for any chunk shape chunk[3] = (z, y, x) >= 1. aff: (3, Z, Y, X) u8 or f32, any
 * strides (each chunk's box is quantized on its own, as vox_seg_quantize does). */
enum vox_status vox_dist_watershed(struct vox_ctx *ctx, const struct vox_tensor *aff,
                                   const int64_t chunk[3], const struct vox_seg_params *p,
                                   struct vox_tensor *labels_out, int64_t *nbasins_out,
                                   int64_t **sizes_out);

#ifdef __cplusplus
}
#endif
#endif
