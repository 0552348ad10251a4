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

/* The chunked size-dependent single linkage and dust over watershed basins (u32 (Z, Y, X),
 * canonical ids 1..nbasins, sizes[0..nbasins] as vox_seg_watershed gives them), with the same
 * outputs as vox_seg_single_linkage over the basins' region graph, bitwise, for any chunk
 * shape and thread count: *map_out (nbasins + 1), *nseg_out, *seg_sizes_out (nseg + 1) and,
 * when dend_out != NULL, the merges made. Only frozen clusters (those touching a node face or
 * waiting on an undecided edge) travel up the octree (dist/size_merge.c has the proof). */
enum vox_status vox_dist_size_merge(struct vox_ctx *ctx, const struct vox_tensor *basins,
                                    int64_t nbasins, const int64_t *sizes,
                                    const struct vox_tensor *aff, const int64_t chunk[3],
                                    const struct vox_seg_params *p, uint32_t **map_out,
                                    int64_t *nseg_out, int64_t **seg_sizes_out,
                                    struct vox_merge_history *dend_out);

/* The chunked agglomeration of base segments (labels: u32 (Z, Y, X), ids 0..nseg as
 * vox_segment's res.labels) over affinities aff (as above): the same merge history as
 * vox_seg_agglomerate over vox_rag_build(labels), bitwise (ids, survivors, scores, order), for
 * any chunk shape and thread count. Each chunk builds its part of the region graph (exact
 * integer statistics), nodes decide the merges that provably happen in the global process
 * and contract them, the root finishes, and the merge forest is replayed in the global
 * order (dist/agg.c has the proof). */
enum vox_status vox_dist_agglomerate(struct vox_ctx *ctx, const struct vox_tensor *labels,
                                     int64_t nseg, const struct vox_tensor *aff,
                                     const int64_t chunk[3], const struct vox_seg_params *p,
                                     struct vox_merge_history *hist_out);

/* ---- the whole pipeline, chunk by chunk ------------------------------------------------ */

struct vox_volume;

/* VOX_DIST_INGEST: a volume source read and quantized into the affinity file, once. */
enum vox_dist_stage {
    VOX_DIST_WATERSHED,
    VOX_DIST_SIZE_MERGE,
    VOX_DIST_AGGLOMERATE,
    VOX_DIST_INGEST
};

/* One octree level of one stage (level 0: the atomic chunks). */
struct vox_dist_level {
    enum vox_dist_stage stage;
    int64_t level;
    int64_t nodes;   /* chunks or nodes at this level */
    int64_t frozen;  /* items carried up: fragments (a), frozen basins (b), vertices (c) */
    int64_t edges;   /* residual links / undecided edges carried up */
    int64_t bytes;   /* bytes of the summaries passed up from this level */
    double seconds;  /* its tasks' time summed over the threads (a node starts as soon as
                      * its children are done, so levels overlap in time); (c)'s level 0
                      * includes the replay of (b)'s merge record, which runs beside its chunks
                      * when vox_dist_segment keeps no records */
};

#define VOX_DIST_LEVELS_MAX 96

struct vox_dist_stats {
    int n;
    struct vox_dist_level lv[VOX_DIST_LEVELS_MAX];
    int64_t bytes_read, bytes_written; /* through the source, the sink and the label store */
    int64_t tasks_reused, tasks_run;   /* with records: chunk tasks taken from them / run */
    /* atomic chunks whose watershed left face records for the size merge and agglomeration
     * (this process's; the rest were scanned: see docs/segmentation.md), and their bytes */
    int64_t face_records, face_record_bytes;
};

/* Where the affinities come from: exactly one of a whole tensor (u8 or f32 (3, Z, Y, X), any
 * strides) and an opened volume of that type and shape, read box by box when a chunk runs. */
struct vox_dist_source {
    const struct vox_tensor *aff;
    struct vox_volume *vol;
};

/* Where the final labels go, box by box: write(arg, lo, labels) with labels a contiguous u32
 * (z, y, x) box at offset lo (z, y, x). ready(arg, res) comes first, once, with res complete
 * except its labels (so a sink can cut the merges). Both are called one at a time, under the
 * lock that also guards the reads of the source volume: a sink may call vox/io.h. A sink that
 * sets `concurrent` takes its writes on several threads at once, outside the lock (its boxes
 * are disjoint; it must not use vox/io.h on the source's file); ready still comes alone. */
struct vox_dist_sink {
    enum vox_status (*ready)(void *arg, const struct vox_seg_result *res);
    enum vox_status (*write)(void *arg, const int64_t lo[3], const struct vox_tensor *labels);
    void *arg;
    bool concurrent;
    /* Optional, for a comm that shares the stages (vox_dist_comm.send_to): with both set, the
     * other ranks write their own chunks' labels as bytes, encode(arg, lo, labels, &blob,
     * &len) (a blob from vox_alloc on the run's context; one chunk at a time per rank), and
     * rank 0 stores those bytes, store(arg, lo, blob, len), by the rules of write. On the
     * other ranks ready comes first too, with rank 0's res less its labels and dend (nseg,
     * nbasins and the merges: enough to cut them); write and store never come there. NULL:
     * rank 0 writes every chunk. */
    enum vox_status (*encode)(void *arg, const int64_t lo[3], const struct vox_tensor *labels,
                              void **blob, int64_t *len);
    enum vox_status (*store)(void *arg, const int64_t lo[3], const void *blob, int64_t len);
};

/* Processes sharing a run (e.g. MPI ranks; libvox_dist_mpi gives one over an MPI
 * communicator): the atomic watershed chunks of stage (a) are cut among the ranks by
 * subtrees of the octree (the chunks under node j of level L, in C order over that level's
 * grid, to rank j mod size; L the deepest level with 4 nodes a rank, else 1; chunk i, in C
 * order over the chunk grid, to rank i mod size where level 1 has fewer nodes than ranks),
 * each reading its own chunks' boxes
 * from the source; every other rank sends each chunk's summary and fragment labels to rank 0
 * (send), which takes them in any order (recv: a blob of *len_out bytes from
 * vox_alloc(ctx, ...), the caller's to free) and runs the rest.
 * With send_to and recv_root too, the atomic chunks of stages (b) and (c) are shared the same
 * way: the ranks keep their chunks' stage-(a) labels, and rank 0 sends a rank each of its
 * chunks' label maps and one-voxel margin when it is ready for one (send_to(arg, ctx, to,
 * key, blob, len)); the rank takes them in the order sent (recv_root) and sends back the
 * chunk's summary (send); and where the sink can encode and store (vox_dist_sink), the
 * output (d) too: the rank maps its chunks' labels through the segment maps rank 0 sends and
 * sends back their encoded bytes (such a rank sends rank 0 its chunks' face labels in stage
 * (a), not all their labels). With send_to, send and send_to must return without waiting
 * for the receiver to take the message (a copy queued or sent asynchronously, as
 * libvox_dist_mpi does); receives wait. NULL: only stage (a) is shared, and blocking sends
 * are fine. Without a sink (labels whole in memory) rank 0 keeps stages (b), (c) and (d).
 * With send_to, rank 0's first message to each rank (key -2) lists the rank's chunks that
 * a resumed run takes from rank 0's records (empty otherwise): the rank skips them in every
 * stage. A rank whose run fails sends one last message, key -3 (send, or send_to from rank
 * 0 to every other rank), so that the others fail too ("rank R failed ...") instead of
 * waiting for it; a comm may also end every process on a failure, as mpirun does.
 * Optional, ready(arg, ctx) on rank 0: whether a message is waiting, so that recv would
 * return at once (MPI_Iprobe): rank 0 then takes the other ranks' stage (a) messages
 * between its own chunks only when they are there (NULL: it takes about one per other
 * rank's chunk it passes, waiting for it). */
struct vox_dist_comm {
    int rank, size;
    enum vox_status (*send)(void *arg, struct vox_ctx *ctx, int64_t chunk, const void *blob,
                            int64_t len);
    enum vox_status (*recv)(void *arg, struct vox_ctx *ctx, int64_t *chunk_out,
                            void **blob_out, int64_t *len_out);
    enum vox_status (*send_to)(void *arg, struct vox_ctx *ctx, int to, int64_t key,
                               const void *blob, int64_t len);
    enum vox_status (*recv_root)(void *arg, struct vox_ctx *ctx, int64_t *key_out, void **blob_out,
                                 int64_t *len_out);
    void *arg;
    bool (*ready)(void *arg, struct vox_ctx *ctx);
};

struct vox_dist_options {
    int64_t chunk[3];               /* atomic chunk shape (z, y, x), each >= 1 */
    const struct vox_dist_sink *sink; /* NULL: res->labels is filled, whole */
    /* With a sink, the intermediate labels (u32 per voxel) live in a file, and with a volume
     * source its quantized affinities (3 bytes per voxel, read from the source once; not for
     * a u8 .npy source without records, whose boxes the stages read from it directly): in
     * `workdir` (vox-dist-labels-PID-..., vox-dist-affinities-PID-..., unlinked at once), else
     * anonymous temporary files. */
    const char *workdir;
    struct vox_dist_stats *stats; /* NULL: none */
    /* With a workdir and a sink, every finished chunk task (reading a chunk, its watershed,
     * its relabel) and stage (size merge, agglomeration) leaves a checksummed record there
     * (vox-dist-journal, vox-dist-blobs, next to vox-dist-affinities and vox-dist-labels;
     * all removed when the run succeeds). resume: a run killed or failed before, with the
     * same settings and source, goes on from its records: a task whose record is whole and
     * whose data still match it is not run again; a torn, truncated or damaged one is. */
    bool resume;
    /* test hook: > 0 ends the process (_exit(3)) after that many records (on a rank other
     * than 0 of a comm: after that many chunk summaries sent) */
    int64_t die_after;
    /* NULL: one process. Else ranks other than 0 return from vox_dist_segment once their
     * chunks are sent (*res_out zeroed, the sink never called); rank 0 gives the result.
     * With a workdir, rank 0 keeps the records (the other ranks send it their chunks' labels
     * then); a resumed run takes from them what they hold, with any number of ranks (with
     * send_to, the other ranks are told to skip those chunks: rank 0 runs all their stages). */
    const struct vox_dist_comm *comm;
    /* A progress bar on stderr over the run's tasks (vox_progress: only on a terminal). */
    bool progress;
};

/* vox_segment, chunk by chunk: the same result (labels, nseg, nbasins, dend, merges),
 * bitwise, for any chunk shape and thread count, resumed or not. Runs (a) → (b) → (c) above; with a volume
 * source and a sink, neither the affinities nor the labels are ever whole in memory: a chunk
 * reads its box plus a margin of 2 voxels and drops it when done, and the labels between the
 * stages go to a file. What is held whole are the summaries: the fragment table of (a) and its
 * union-find (16 bytes per fragment), per-basin sizes and maps (b, 8-16 bytes per basin), the
 * carried region-graph parts (c: at the root, the region graph of every base segment not
 * decided below, which is most of them), and the merge histories. */
enum vox_status vox_dist_segment(struct vox_ctx *ctx, const struct vox_dist_source *src,
                                 const struct vox_seg_params *p,
                                 const struct vox_dist_options *opt,
                                 struct vox_seg_result *res_out);

#ifdef __cplusplus
}
#endif
#endif
