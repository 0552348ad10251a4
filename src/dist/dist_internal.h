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

#include <pthread.h>
#include <string.h>

struct dist_par; /* below, with the tree */

enum {
    DIST_TREE_LEVELS = 40
}; /* the octree's levels at most: a grid of up to 2^39 nodes per axis */

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
    struct dist_pair *uni; /* (fragment, fragment) joined at this node */
    int64_t nuni;
};

/* Work buffers of one worker thread, reused from chunk to chunk of a stage and freed when
 * it ends: a large block freshly allocated for every chunk comes as new pages, faulted in
 * and zeroed each time (see sys_alloc in core/ctx.c), which cost as much as the work. */
enum {
    DIST_SC_Q,   /* a box of quantized affinities (dist_read_q) */
    DIST_SC_TMP, /* one channel of a chunk record (the blocked file reads) */
    DIST_SC_WIN, /* a window of labels (dist_win_load) */
    DIST_SC_LAB, /* a chunk's labels */
    DIST_SC_M,   /* the chunk watershed's arrays */
    DIST_SC_DIR,
    DIST_SC_PB,
    DIST_SC_FL,
    DIST_SC_UF,
    DIST_SC_S0, /* dist_sort_sc's */
    DIST_SC_S1,
    DIST_SC_S2,
    DIST_SC_W0, /* a stage's own work arrays */
    DIST_SC_W1,
    DIST_SC_W2,
    DIST_SC_W3,
    DIST_SC_W4,
    DIST_SC_W5,
    DIST_SC_W6,
    DIST_SC_W7,
    DIST_SC_SLOTS
};

struct dist_scratch {
    void *p[DIST_SC_SLOTS];
    size_t cap[DIST_SC_SLOTS];
};

/* Slot `slot` of sc with room for `bytes` (its old contents are lost when it grows), or NULL
 * when memory is short. */
void *dist_scratch_get(struct vox_ctx *ctx, struct dist_scratch *sc, int slot, size_t bytes);
/* As dist_scratch_get, keeping the slot's first `keep` bytes when it grows (by half again at
 * least, so that growing by pushes stays linear). */
void *dist_scratch_grow(struct vox_ctx *ctx, struct dist_scratch *sc, int slot, size_t bytes,
                        size_t keep);
/* Appends x (`size` bytes) to the array *arr of *n elements that lives in slot `slot`. The
 * common case (room left) inline: the chunk watershed pushes its links, faces and face
 * record entries one by one. */
bool dist_scratch_push_grow(struct vox_ctx *ctx, struct dist_scratch *sc, int slot, void **arr,
                            int64_t *n, const void *x, size_t size);
static inline bool dist_scratch_push(struct vox_ctx *ctx, struct dist_scratch *sc, int slot,
                                     void **arr, int64_t *n, const void *x, size_t size)
{
    if (!sc->p[slot] || sc->cap[slot] < (size_t)(*n + 1) * size)
        return dist_scratch_push_grow(ctx, sc, slot, arr, n, x, size);
    *arr = sc->p[slot];
    memcpy((char *)sc->p[slot] + (size_t)*n * size, x, size);
    (*n)++;
    return true;
}
/* One scratch per worker of the context's pool (NULL when memory is short); freed with
 * dist_scratch_free. */
struct dist_scratch *dist_scratch_new(struct vox_ctx *ctx);
/* Frees every worker's buffers (between phases that need different ones), keeps sc. */
void dist_scratch_release(struct vox_ctx *ctx, struct dist_scratch *sc);
/* Frees one worker's buffers (sc: that worker's). */
void dist_scratch_release_one(struct vox_ctx *ctx, struct dist_scratch *sc);
void dist_scratch_free(struct vox_ctx *ctx, struct dist_scratch *sc);

/* Files a blocked store may spread over: the kernel writes one file at a time (its inode
 * lock), so chunks written side by side go to different files. */
#define DIST_BFILE_FILES 8

/* A chunk-blocked store: the box of atomic chunk i (C order over the grid) is one record of
 * nch channels of its (z, y, x) elements of esz bytes, contiguous, in file i % nfd at byte
 * (i / nfd) * slot (slot: a full chunk's record). A chunk's record is written with one call;
 * a box read takes one call per chunk it meets and channel. */
struct dist_bfile {
    int fd[DIST_BFILE_FILES];
    int nfd;
    int nch;
    size_t esz, slot;
    int64_t dims[3], chunk[3], grid[3];
};

/* Sets up bf (fds unset) for the volume dims cut into chunks, over nfd files (1 to
 * DIST_BFILE_FILES, at most one per chunk: *nfd_io is lowered to that); each file's size in
 * bytes. */
int64_t dist_bfile_init(struct dist_bfile *bf, const int64_t dims[3], const int64_t chunk[3],
                        int nch, size_t esz, int *nfd_io);
/* Closes bf's open files. */
void dist_bfile_close(struct dist_bfile *bf);

/* ---- restart records (dist/journal.c) ---------------------------------------------- */

enum { DJ_CONFIG = 1, DJ_INGEST, DJ_WS, DJ_RELABEL, DJ_STAGE_B, DJ_STAGE_C };

struct dist_jrec {
    uint32_t magic, kind;
    int64_t index;
    uint64_t sum;     /* hash of the block it vouches for (or the settings: DJ_CONFIG) */
    int64_t off, len; /* its blob in the blobs file */
    uint64_t blob_sum;
    uint64_t self; /* hash of the fields above */
};

struct dist_journal {
    int fd, bfd;
    struct dist_jrec *rec; /* the whole records found at open, in order */
    int64_t nrec, jend, bend;
    int64_t added, die_after; /* test hook: _exit(3) after die_after task records */
    int64_t reused, ran;      /* chunk tasks taken from the records / run (under mu) */
    pthread_mutex_t mu;
};

uint64_t dist_hash(const void *p, size_t n, uint64_t h);
/* Opens (resume: keeps) the journal in dir; settings: the hash `config` of the run's. */
enum vox_status dist_journal_open(struct vox_ctx *ctx, const char *dir, bool resume,
                                  uint64_t config, struct dist_journal *j);
void dist_journal_close(struct vox_ctx *ctx, struct dist_journal *j);
/* The latest whole record of the task (kind, index) from before this run, or NULL. */
const struct dist_jrec *dist_journal_find(const struct dist_journal *j, int kind, int64_t index);
/* Appends a record (after its blob); any thread. */
enum vox_status dist_journal_add(struct vox_ctx *ctx, struct dist_journal *j, int kind,
                                 int64_t index, uint64_t sum, const void *blob, int64_t len);
/* r's blob, or *blob_out = NULL when it is damaged. */
enum vox_status dist_journal_blob(struct vox_ctx *ctx, const struct dist_journal *j,
                                  const struct dist_jrec *r, void **blob_out);
/* Counts a chunk task as reused or run. */
void dist_journal_count(struct dist_journal *j, bool reused);
/* Removes the files of a finished run from dir. */
void dist_journal_remove(const char *dir);

/* The affinities: a whole tensor, or a volume read box by box (io calls under io->mu), or
 * the quantized copy of the volume in a blocked file (qf set: 3 channels, 1 byte). */
struct dist_vol {
    const struct vox_tensor *aff; /* (3, Z, Y, X) u8 or f32, or NULL */
    struct vox_volume *src;       /* used when aff and qf are NULL */
    struct dist_bfile *qf;
    struct dist_journal *jr; /* restart records, or NULL */
    struct dist_io *io;
    const struct vox_dist_comm *comm; /* the ranks sharing stage (a)'s chunks, or NULL */
    /* Rank 0 of a sharing comm, resumed: per chunk, 1 where another rank's chunk is taken
     * from rank 0's records; rank 0 runs its later stages too, and that rank none (NULL:
     * none; set by dist_ws_run). */
    const uint8_t *kept;
    struct dist_pairs *pairs; /* (a)'s records for (b) and (c), or NULL */
    int64_t dims[3];
};

/* The io lock and what moves through it (for the statistics). */
struct dist_io {
    pthread_mutex_t mu;
    int64_t bytes_read, bytes_written;
    struct vox_progress *bar; /* the run's progress bar, one step per task (NULL: none) */
};

/* The box [lo, hi) of the affinities (all three channels), quantized, contiguous; with a
 * scratch (or NULL) that the cache or a u8 volume is read into (q_out a view of its
 * DIST_SC_Q slot, valid until the slot is used again; vox_tensor_free leaves it alone). */
enum vox_status dist_read_q(struct vox_ctx *ctx, const struct dist_vol *v, const int64_t lo[3],
                            const int64_t hi[3], struct dist_scratch *sc, struct vox_tensor *q_out);

/* Writes box b of the quantized affinities q (u8 (3, box) contiguous) into v->qf. */
enum vox_status dist_qfile_write(struct vox_ctx *ctx, const struct dist_vol *v,
                                 const struct dist_box *b, const uint8_t *q);

/* The hash of chunk i's record in bf as it is on disk (*h_out = 0 when unreadable). */
enum vox_status dist_bfile_hash(struct vox_ctx *ctx, const struct dist_bfile *bf, int64_t i,
                                uint64_t *h_out);

/* How a label store's chunk record is encoded (dist_store's narrow[]): store.c. */
enum dist_rec { DIST_REC_U32, DIST_REC_U16, DIST_REC_RUNS, DIST_REC_RUNS32 };

/* A u32 volume of shape dims kept whole in memory (mem) or in a blocked file (f.nfd > 0:
 * written chunk box by chunk box), read and written box by box from any thread (boxes
 * written concurrently must not overlap). */
struct dist_store {
    uint32_t *mem;
    struct dist_bfile f;
    int64_t dims[3];
    struct dist_io *io; /* counts the file traffic when set */
    /* A file store may keep the watershed's fragment labels as they were written and give
     * basins through cmap[chunk][fragment] (fragment 0: background): reads map each chunk's
     * part, so the volume is not written a second time to relabel it. NULL: values as is. */
    uint32_t **cmap;
    int64_t ncmap;
    /* Set (one byte per chunk) for a file store read through cmap: each chunk's record
     * encoding (enum dist_rec: a chunk whose values all fit in 16 bits as runs along x or as
     * u16, others as wide runs or u32); NULL: u32 records. */
    uint8_t *narrow;
    int64_t *cmap_n;          /* cmap[i]'s length (fragments + 1), where cmap is set */
    /* Rank 0 of a comm keeping records (its records are relabelled to basins): the chunks'
     * fragment → basin maps all the same, for the ranks that write their chunks' output;
     * never applied to reads. Lengths in cmap_n. */
    uint32_t **fmap;
    struct dist_faces *faces; /* rank 0 of a sharing comm: every chunk's six fragment faces */
    int64_t absent;           /* chunks of other ranks that sent their faces only (no record) */
};

/* Frees st->cmap, st->fmap and st->narrow. */
void dist_store_fini(struct vox_ctx *ctx, struct dist_store *st);

/* src/dst are contiguous over the box; sc: a scratch for the file reads, or NULL. */
enum vox_status dist_store_read(struct vox_ctx *ctx, struct dist_store *st,
                                const struct dist_box *b, uint32_t *dst, struct dist_scratch *sc);
/* dist_store_read whose values then go through `then` too (NULL: none). */
enum vox_status dist_store_read_map(struct vox_ctx *ctx, struct dist_store *st,
                                    const struct dist_box *b, uint32_t *dst,
                                    struct dist_scratch *sc, const uint32_t *then);
enum vox_status dist_store_write(struct vox_ctx *ctx, struct dist_store *st,
                                 const struct dist_box *b, const uint32_t *src,
                                 struct dist_scratch *sc);

/* Where stages b and c take their labels from: a whole tensor, or a store whose values go
 * through map (NULL: as they are). */
struct dist_labels {
    const struct vox_tensor *t;
    struct dist_store *st;
    const uint32_t *map;
    const struct dist_win *given; /* a rank's chunk: the window rank 0 sent (dist/ranks.c) */
    const uint32_t *given_fm;     /* ... and the chunk's fragment map that came with it */
    int64_t given_nf;             /* (its fragments) */
};

/* A window of labels over a box (a view of the whole tensor, or a copy). */
struct dist_win {
    const uint32_t *p;
    uint32_t *own;
    int64_t lo[3], n[3];
};

/* The labels over box b grown by one voxel on every side (clamped to dims); with a scratch,
 * in its DIST_SC_WIN slot (and DIST_SC_TMP), else allocated. */
enum vox_status dist_win_load(struct vox_ctx *ctx, const struct dist_labels *l,
                              const int64_t dims[3], const struct dist_box *b,
                              struct dist_scratch *sc, struct dist_win *w);
void dist_win_fini(struct vox_ctx *ctx, struct dist_win *w);

static inline uint32_t dist_win_at(const struct dist_win *w, int64_t z, int64_t y, int64_t x)
{
    return w->p[((z - w->lo[0]) * w->n[1] + y - w->lo[1]) * w->n[2] + x - w->lo[2]];
}

/* Row (z, y) of the window, indexed by x - x0 (x0 - 1 included when it is in the window). */
static inline const uint32_t *dist_win_row(const struct dist_win *w, int64_t z, int64_t y,
                                           int64_t x0)
{
    return w->p + ((z - w->lo[0]) * w->n[1] + y - w->lo[1]) * w->n[2] + x0 - w->lo[2];
}

/* Per-level statistics of one stage (NULL: none kept). */
void dist_stats_level(struct vox_dist_stats *st, int stage, int64_t level, int64_t nodes,
                      int64_t frozen, int64_t edges, int64_t bytes, double seconds);

/* A basin-graph edge of the size merge (dist/size_merge.c): its ends, its max, its state
 * there; and one node's final merges, in the global order. */
struct sm_edge {
    uint32_t a, b; /* basin ids, a < b */
    uint8_t w, state;
};
struct sm_fin {
    struct sm_edge *e;
    int64_t n;
};

/* The size merge's record (dend: the merges with the ids at merge time) needs the final
 * merges replayed one by one in the global order; the map does not (clusters do not depend
 * on the order). So dist_sm_run hands the merges over and the replay runs later, beside the
 * agglomeration's atomic chunks (one serial task fewer on the critical path). */
struct dist_dend {
    struct sm_fin *fin; /* size_merge.c's runs of final merges, owned */
    int64_t nfin, nbasins;
    struct vox_merge_history dend;
    enum vox_status st;
    bool done;
};
void dist_dend_run(struct vox_ctx *ctx, struct dist_dend *d); /* dist/dend.c */
void dist_dend_fini(struct vox_ctx *ctx, struct dist_dend *d);

/* The three stages over a dist_vol, as the public calls (which wrap them) describe. */
/* dist_ws_run: *kept_out (rank 0 of a sharing comm; else NULL) the other ranks' chunks taken
 * from records (vox_free), which they were told to skip (dist_ws_send). */
enum vox_status dist_ws_run(struct vox_ctx *ctx, const struct dist_vol *vol, const int64_t chunk[3],
                            const struct vox_seg_params *p, struct dist_store *out,
                            int64_t *nbasins_out, int64_t **sizes_out, struct vox_dist_stats *stats,
                            uint8_t **kept_out);
enum vox_status dist_sm_run(struct vox_ctx *ctx, const struct dist_vol *vol,
                            const struct dist_labels *basins, int64_t nbasins, const int64_t *sizes,
                            const int64_t chunk[3], const struct vox_seg_params *p,
                            uint32_t **map_out, int64_t *nseg_out, int64_t **seg_sizes_out,
                            struct dist_dend *dend_out, struct vox_dist_stats *stats);
/* side (NULL: none): a record job run as one task after the atomic chunks. */
/* A rank other than 0 of a sharing comm (dist_share_on): stage (b)'s atomic chunks rank 0
 * hands it, until the end. */
enum vox_status dist_sm_serve(struct vox_ctx *ctx, const struct dist_vol *vol,
                              const int64_t chunk[3], const struct vox_seg_params *p,
                              struct dist_store *own);
/* The same for stage (c). */
enum vox_status dist_ag_serve(struct vox_ctx *ctx, const struct dist_vol *vol,
                              const int64_t chunk[3], const struct vox_seg_params *p,
                              struct dist_store *own);
enum vox_status dist_ag_run(struct vox_ctx *ctx, const struct dist_vol *vol,
                            const struct dist_labels *labels, int64_t nseg, const int64_t chunk[3],
                            const struct vox_seg_params *p, struct vox_merge_history *hist_out,
                            struct vox_dist_stats *stats, struct dist_dend *side);

/* A rank other than 0 of vol->comm: the watershed of its atomic chunks (dist_chunk_rank), each
 * chunk's summary and fragment labels sent to rank 0, or with faces_only only the labels of its six
 * faces (the rank keeps the labels in `own` and writes the chunk's output itself). With `own` (a
 * sharing comm) rank 0 first tells the rank which of its chunks it takes from its records
 * (resumed): the rank skips them in every stage. die_after > 0: _exit(3) after that many chunks
 * sent (tests). */
enum vox_status dist_ws_send(struct vox_ctx *ctx, const struct dist_vol *vol,
                             const int64_t chunk[3], const struct vox_seg_params *p,
                             struct dist_store *own, bool faces_only, int64_t die_after);

void dist_sum_fini(struct vox_ctx *ctx, struct dist_sum *s);

/* Global neighbour offsets in direction order -z, -y, -x, +x, +y, +z. */
void dist_offsets(const int64_t dims[3], int64_t off[6]);
/* Whether the neighbour of voxel idx in direction d lies inside box b. */
bool dist_in_box(const struct dist_box *b, const int64_t dims[3], int64_t idx, int d);

/* An entry of a chunk's face record: cnt faces (u, u + e_a) between fragments key >> 32 <
 * (uint32_t)key, their affinities summing to sum, the largest w; with histograms (a quantile
 * score) every face of an entry has affinity w. cnt < 2^16 keeps sum < 2^24. */
struct dist_pf {
    uint64_t key;
    uint32_t sum;
    uint16_t cnt;
    uint8_t w;
};

/* What stages (b) and (c) need of an atomic chunk's voxels, taken by stage (a) while the
 * chunk's affinities and fragment labels are at hand (dist/pairs.c). Kept in a file of the
 * run's (a temporary one), one record per chunk; a chunk without one (taken from the
 * journal on resume, or too many entries) is scanned as before. With MPI each rank keeps its
 * own chunks' records (see dist_pairs_chunk). */
struct dist_pairs {
    /* a file per worker (tid % nfd): a file takes one write at a time (its inode lock) */
    int fd[DIST_BFILE_FILES];
    int nfd;
    double per_voxel; /* a chunk with more entries a voxel has no record (< 0: no limit) */
    int64_t end[DIST_BFILE_FILES]; /* bytes written per file (atomic) */
    bool off_disk;    /* set when a write failed (a full disk): no more records */
    int64_t n;        /* atomic chunks */
    int64_t dims[3], chunk[3], grid[3];
    int64_t *off;         /* per chunk: its record (-1: none) */
    uint8_t *file;        /* per chunk: the file that holds it */
    int64_t *npf, *nfrag; /* per chunk: entries, fragments */
    uint32_t **fmap;      /* per chunk: fragment -> basin (set after (a); see fmap_own) */
    bool fmap_own;
};

/* Chunk i's record as read: its entries, and the affinities of the faces that cross its
 * box's faces: plane[a][0] channel a at lo[a], plane[a][1] at hi[a] (NULL where that face is
 * the volume's), each over the box's other two axes in order. */
struct dist_chunk_pf {
    const struct dist_pf *pf;
    int64_t npf;
    const uint8_t *plane[3][2];
};

/* Takes the nfd files fd (1 to DIST_BFILE_FILES, one a worker; closed by dist_pairs_fini). */
enum vox_status dist_pairs_init(struct vox_ctx *ctx, struct dist_pairs *pp, const int *fd, int nfd,
                                const int64_t dims[3], const int64_t chunk[3], double per_voxel);
void dist_pairs_fini(struct vox_ctx *ctx, struct dist_pairs *pp);

/* dist_chunk_ws's record for stages (b) and (c), in sc's slots W4 (pf), W5 (planes) and W6
 * (the box's six faces of fragment labels, dist_faces_extract's). */
struct dist_chunk_rec {
    struct dist_pf *pf;
    int64_t npf;
    uint8_t *planes;
    int64_t nplanes;
    uint32_t *faces;
};

/* Writes chunk i's record (worker tid's file); a failed write (a full disk) only stops the
 * records. */
enum vox_status dist_pairs_put(struct vox_ctx *ctx, struct dist_pairs *pp, int64_t i, int64_t nfrag,
                               const struct dist_chunk_rec *rec, struct dist_io *io, int tid);

/* What atomic chunk i (box b) of stage (b) or (c) (labels l) reads: its face record (rec:
 * entries and planes; fm maps its fragments to l's values, nf of them, then after fm where
 * set) and its window w (its shell at least), or without a record its affinities q over the
 * box + 1 on the + sides (hi) and its window, for the scan. A chunk another rank serves
 * (l->given) and rank 0's of a comm take only the entries from the record: their windows
 * come as before. */
struct dist_chunk_in {
    bool rec;
    struct dist_chunk_pf pf;
    const uint32_t *fm, *then;
    int64_t nf;
    struct vox_tensor q;
    struct dist_win w;
    int64_t hi[3];
};
enum vox_status dist_chunk_in_load(struct vox_ctx *ctx, const struct dist_vol *vol,
                                   const struct dist_labels *l, const struct dist_box *b, int64_t i,
                                   struct dist_scratch *sc, struct dist_chunk_in *in);
void dist_chunk_in_fini(struct vox_ctx *ctx, struct dist_chunk_in *in);

/* Plane (a, side)'s bytes for box b, 0 where there is none. */
int64_t dist_planes_size(const struct dist_box *b, const int64_t dims[3], int a, int side);

/* Watershed of one atomic chunk (work arrays in the scratch sc): its summary, and in *lab
 * (contiguous over the box; sc's DIST_SC_UF slot, valid until its next use) each voxel's
 * fragment as 1 + its position in s->frag (0: background). */
enum vox_status dist_chunk_ws(struct vox_ctx *ctx, const struct dist_vol *v,
                              const struct dist_box *box, const struct vox_seg_params *p,
                              struct dist_scratch *sc, struct dist_sum *s, uint32_t **lab,
                              struct dist_chunk_rec *rec);

/* Merges the summaries of an octree node's children into the node's summary (par: who
 * shares its lookups, or NULL). */
enum vox_status dist_node_ws(struct vox_ctx *ctx, const int64_t dims[3], const struct dist_box *box,
                             const struct dist_sum *kids, int nkids, struct dist_sum *out,
                             const struct dist_par *par);

/* Sorts n elements of `size` bytes stably by (key_hi(x), key(x)) (key_hi NULL: key alone),
 * the order cmp gives (cmp is used instead when scratch memory is short). */
void dist_sort(struct vox_ctx *ctx, void *base, int64_t n, size_t size,
               uint64_t (*key)(const void *), uint64_t (*key_hi)(const void *),
               int (*cmp)(const void *, const void *));

/* dist_sort with its scratch memory from sc's sort slots (sc NULL: allocated). */
void dist_sort_sc(struct vox_ctx *ctx, struct dist_scratch *sc, void *base, int64_t n, size_t size,
                  uint64_t (*key)(const void *), uint64_t (*key_hi)(const void *),
                  int (*cmp)(const void *, const void *));

/* Sorts n 64-bit keys stably by their bits from `from` up (the byte holding bit `from`
 * included; LSD radix in 11-bit digits from the lowest bit in which keys differ); tmp:
 * scratch of n keys. */
void dist_sort_u64(uint64_t *k, uint64_t *tmp, int64_t n, int from);

/* dist_sort_u64 shared through p (the same result): each byte pass counts and scatters
 * parts of the keys in parallel. */
void dist_sort_u64_par(const struct dist_par *p, uint64_t *k, uint64_t *tmp, int64_t n, int from);

/* Appends one element of `size` bytes to a growable array. */
bool dist_push(struct vox_ctx *ctx, void **arr, int64_t *n, int64_t *cap, const void *x,
               size_t size);

/* The face bits of the voxels of row (z, y) of box b in a volume of shape dims: bit 2a (2a +
 * 1) when the row lies on the low (high) face of axis a = z, y and a neighbour lies beyond it;
 * x's bits 4 (5) belong to the row's first (last) voxel only: *x_lo, *x_hi. */
static inline uint8_t dist_row_faces(const struct dist_box *b, const int64_t dims[3], int64_t z,
                                     int64_t y, uint8_t *x_lo, uint8_t *x_hi)
{
    const int64_t c[2] = {z, y};
    uint8_t t = 0;
    for (int a = 0; a < 2; a++) {
        t |= (uint8_t)((c[a] == b->lo[a] && c[a] > 0) << (2 * a));
        t |= (uint8_t)((c[a] + 1 == b->hi[a] && c[a] + 1 < dims[a]) << (2 * a + 1));
    }
    *x_lo = (uint8_t)((b->lo[2] > 0) << 4);
    *x_hi = (uint8_t)((b->hi[2] < dims[2]) << 5);
    return t;
}

/* The children of octree node i on the parent grid of child grid `pg`: the node's coordinates
 * (c_out) and the linear indices in the child grid of its 1 to 8 children (returned count), in
 * the fixed order z, y, x of the 2x2x2 block. */
static inline int dist_node_children(const int64_t pg[3], int64_t i, int64_t c_out[3],
                                     int64_t kids_out[8])
{
    const int64_t ng[3] = {(pg[0] + 1) / 2, (pg[1] + 1) / 2, (pg[2] + 1) / 2};
    c_out[0] = i / (ng[1] * ng[2]), c_out[1] = (i / ng[2]) % ng[1], c_out[2] = i % ng[2];
    int nk = 0;
    for (int k = 0; k < 8; k++) {
        int64_t g[3] = {2 * c_out[0] + (k >> 2), 2 * c_out[1] + (k >> 1 & 1),
                        2 * c_out[2] + (k & 1)};
        if (g[0] < pg[0] && g[1] < pg[1] && g[2] < pg[2])
            kids_out[nk++] = (g[0] * pg[1] + g[1]) * pg[2] + g[2];
    }
    return nk;
}

/* The octree's grid at `level` over the chunk grid g (ceil(g / 2^level) per axis) and its
 * node count. */
static inline int64_t dist_level_grid(const int64_t g[3], int level, int64_t out[3])
{
    for (int a = 0; a < 3; a++)
        out[a] = (g[a] + ((int64_t)1 << level) - 1) >> level;
    return out[0] * out[1] * out[2];
}

/* Node j of `level`'s ancestor at level `up` (>= level) over chunk grid g. */
static inline int64_t dist_node_ancestor(const int64_t g[3], int level, int64_t j, int up)
{
    int64_t h[3], a[3];
    dist_level_grid(g, level, h);
    dist_level_grid(g, up, a);
    const int64_t z = j / (h[1] * h[2]), y = j / h[2] % h[1], x = j % h[2], d = up - level;
    return ((z >> d) * a[1] + (y >> d)) * a[2] + (x >> d);
}

/* The level-1 node above atomic chunk i of grid g. */
static inline int64_t dist_chunk_parent(const int64_t g[3], int64_t i)
{
    return dist_node_ancestor(g, 0, i, 1);
}

/* The level whose subtrees the ranks of a comm of `size` own (dist_chunk_rank): the deepest
 * one with at least 4 nodes a rank (the ranks' shares of chunks then differ by a quarter at
 * most), else level 1 where it has a node a rank at least; 0 (chunk by chunk) where level 1
 * has fewer nodes than there are ranks. Never the root. */
static inline int dist_own_level(const int64_t g[3], int size)
{
    int64_t h[3];
    if (size <= 1 || dist_level_grid(g, 1, h) < size)
        return 0;
    int L = 1;
    while (L + 1 < DIST_TREE_LEVELS && dist_level_grid(g, L + 1, h) >= 4 * (int64_t)size)
        L++;
    return L;
}

/* The rank that owns node j of `level` (0: atomic chunk j) of the octree over chunk grid g:
 * its level-L subtree's (L = dist_own_level; node k of level L to rank k % size), so that a
 * rank holds every child of the nodes up to level L and computes them; chunk by chunk
 * (j % size) where L is 0, the nodes above the chunks then rank 0's. Nodes above level L are
 * rank 0's. Chunk 0 is rank 0's either way. */
static inline int dist_node_rank(const int64_t g[3], int level, int64_t j, int size)
{
    const int L = dist_own_level(g, size);
    if (L == 0)
        return level == 0 ? (int)(j % (size > 1 ? size : 1)) : 0;
    return level > L ? 0 : (int)(dist_node_ancestor(g, level, j, L) % size);
}

static inline int dist_chunk_rank(const int64_t g[3], int64_t i, int size)
{
    return dist_node_rank(g, 0, i, size);
}

/* Where the nodes of levels 1 to L of the octree over chunk grid g go in an array of a
 * value per node, level after level: off[l] level l's first; off[L + 1] (returned) them all. */
static inline int64_t dist_up_layout(const int64_t g[3], int L, int64_t off[DIST_TREE_LEVELS + 1])
{
    int64_t h[3], n = 0;
    for (int l = 1; l <= L; l++) {
        off[l] = n;
        n += dist_level_grid(g, l, h);
    }
    off[L + 1] = n;
    return n;
}

/* In up (dist_up_layout's order over levels 1 to L), 1 for each node that rank `rank` owns
 * (dist_node_rank; rank < 0: any rank but 0) and under which no chunk is marked (mark: a
 * byte per chunk, or NULL), else 0: the nodes a rank computes itself. Their count, or -1
 * when memory is short (dist/ranks.c). */
int64_t dist_up_nodes(struct vox_ctx *ctx, const int64_t g[3], int L, int size, int rank,
                      const uint8_t *mark, const int64_t off[DIST_TREE_LEVELS + 1], uint8_t *up);

/* The atomic chunks of grid g that rank `rank` of `size` owns (dist_chunk_rank), a subtree's
 * together (its nodes in order, depth first in dist_node_children's order), into list (room
 * for every chunk): their count. */
int64_t dist_rank_chunks(const int64_t g[3], int rank, int size, int64_t *list);

/* ---- the octree's schedule (dist/tree.c) -------------------------------------------- */

/* The octree over a grid of atomic chunks: nodes per axis and in all at each level (level 0:
 * the chunks, nlev - 1: the root), and each level's task time summed over the workers in the
 * last dist_tree_run (side jobs' with the first level run; levels overlap in time, so
 * their spans would not add up). */
struct dist_tree {
    int nlev;
    int64_t grid[DIST_TREE_LEVELS][3];
    int64_t n[DIST_TREE_LEVELS];
    double busy[DIST_TREE_LEVELS];
    struct tree_run *run; /* while dist_tree_run runs: where dist_par_for posts its loops */
    struct vox_progress *bar; /* a node done: one step (NULL: none) */
};

void dist_tree_init(struct dist_tree *t, const int64_t grid0[3]);

/* A task: node i of `level` (0: atomic chunk i; -1: side job i), on worker tid. */
typedef enum vox_status (*dist_tree_fn)(void *arg, int level, int64_t i, int tid);

/* The order dist_tree_run hands out level `from`'s nodes in (t->n[from] of them): depth first
 * under the nodes of level to - 1, then the last child of each of the last `workers` parents
 * moved to the end (see tree.c). */
void dist_tree_order(const struct dist_tree *t, int from, int to, int workers, int64_t *order);

/* Runs every node of levels [from, to) on the context's pool, each as soon as its children
 * are done (levels below `from` count as done), and nside side jobs: ready nodes first, the
 * highest level first, then level `from`'s nodes in the tree's depth-first order, then the
 * side jobs. idle (or NULL) is called once per worker when level `from` has no task
 * left to hand out (a worker's level-0 scratch can go then). After a task fails no new task
 * starts; returns the first failure. */
enum vox_status dist_tree_run(struct vox_ctx *ctx, struct dist_tree *t, int from, int to,
                              int64_t nside, dist_tree_fn fn, void (*idle)(void *, int), void *arg);
/* From a task of level `from` (inside dist_tree_run; else nothing): node i has done what its
 * parent reads and goes on with work nothing in the tree waits for (writing its labels), so
 * its parent may start now. */
void dist_tree_early(struct dist_tree *t, int level, int64_t i);

/* Stage (b) or (c)'s atomic chunks shared with the other ranks of a comm (dist/ranks.c).
 * Rank 0: give(arg, i, &blob, &len) makes the message handing chunk i to its rank (a
 * vox_alloc'd blob), take(arg, i, blob, len) takes chunk i's summary. With take_node too,
 * where the ranks own whole subtrees (dist_own_level > 0), a rank computes the nodes of its
 * subtrees (those with no chunk rank 0 keeps), and rank 0 gets an empty message per such
 * chunk and take_node(arg, level, j, blob, len) per such node: what rank 0 keeps of it
 * (final merges, statistics; at level 1 its chunks' too) and, where rank 0 computes its
 * parent, its summary. */
struct dist_share {
    const struct vox_dist_comm *c;
    int64_t grid[3]; /* the atomic chunks' grid (dist_chunk_rank) */
    int64_t nchunks;
    enum vox_status (*give)(void *arg, int64_t i, void **blob, int64_t *len);
    enum vox_status (*take)(void *arg, int64_t i, const uint8_t *blob, int64_t len);
    enum vox_status (*take_node)(void *arg, int level, int64_t j, const uint8_t *blob, int64_t len);
    void *arg;
    /* Per node of levels 1 to uplev (level l's from upoff[l]): 1 where its rank computes it
     * (dist_share_begin's); nup in all (0: none computed there). */
    uint8_t *up;
    int64_t nup, upoff[DIST_TREE_LEVELS + 1];
    int uplev;
    int64_t remote, taken;
    int64_t *order; /* the chunks of rank 1, 2, ... (dist_rank_chunks), after rank 0's */
    int64_t *start; /* per rank: its first in order; start[size]: the end */
    int64_t *next;  /* per rank: its next chunk's place in order (-1: ended) */
    bool stopped;  /* a rank said it failed: nothing more comes (dist_comm_stop) */
    const uint8_t *keep; /* other ranks' chunks rank 0 runs itself (dist_vol.kept), or NULL */
};
/* Whether atomic chunk i is another rank's, handed out through s (s NULL: none is). */
static inline bool dist_share_remote(const struct dist_share *s, int64_t i)
{
    return s && dist_chunk_rank(s->grid, i, s->c->size) != 0 && !(s->keep && s->keep[i]);
}
/* Whether node j of `level` comes from another rank (s NULL: none does). */
static inline bool dist_share_up(const struct dist_share *s, int level, int64_t j)
{
    return s && level >= 1 && level <= s->uplev && s->up[s->upoff[level] + j];
}
/* Whether c shares stages (b) and (c): more than one rank, and messages both ways. */
bool dist_share_on(const struct vox_dist_comm *c);

/* A process of comm c that fails (s != VOX_OK) tells those that may wait for it, so that they
 * fail too instead of waiting forever (as with a comm whose processes do not end together,
 * unlike mpirun's: threads, an embedder's): rank 0 tells every other rank, another rank tells
 * rank 0. Returns s, the context's message kept. No-op for s == VOX_OK or no comm. */
enum vox_status dist_comm_stop(struct vox_ctx *ctx, const struct vox_dist_comm *c,
                               enum vox_status s);
/* The failure a receiver reports on such a message (blob: the sender's rank). */
enum vox_status dist_comm_stopped(struct vox_ctx *ctx, const struct vox_dist_comm *c,
                                  const void *blob, int64_t len);
/* The keys of those messages, and of a stage's setup (dist_share_begin; also stage (a)'s list
 * of chunks to skip, ws_tell_skips). */
enum { DIST_COMM_STOP = -3, DIST_SHARE_SETUP = -2 };
/* Rank 0: sends every rank the stage's setup and its first chunk (give NULL: the end; rank 0
 * keeps every chunk). */
enum vox_status dist_share_begin(struct vox_ctx *ctx, struct dist_share *s, const void *setup,
                                 int64_t setup_len);
/* Rank 0: takes one summary (waiting for one) and gives its rank the next chunk or the end;
 * nothing once all are taken. Call it from the thread that may use the comm. */
enum vox_status dist_share_step(struct vox_ctx *ctx, struct dist_share *s);
/* Rank 0, between its own chunks: with the comm's `ready`, takes the summaries that are
 * waiting (and gives their ranks their next chunks), else one (dist_share_step). */
enum vox_status dist_share_poll(struct vox_ctx *ctx, struct dist_share *s);
/* Rank 0: takes the summaries not taken yet. */
enum vox_status dist_share_end(struct vox_ctx *ctx, struct dist_share *s);
/* Rank 0, after the stage's tree (which asks dist_share_up): frees s->up. */
void dist_share_fini(struct vox_ctx *ctx, struct dist_share *s);
/* Another rank: setup(arg, blob, len) with the stage's setup, then work(arg, i, blob, len,
 * &out, &out_len, tid) for each chunk given (checked: one of this rank's, below nchunks), its
 * summary (a vox_alloc'd out) sent to rank 0, until the end. parallel: the chunks run on the
 * context's threads at once (tid: the worker, for its scratch; the comm is used by the
 * calling thread only), else one at a time on the calling thread (tid 0). */
typedef enum vox_status (*dist_share_setup_fn)(void *arg, const uint8_t *blob, int64_t len);
typedef enum vox_status (*dist_share_work_fn)(void *arg, int64_t i, const uint8_t *blob,
                                              int64_t len, void **out, int64_t *out_len, int tid);
/* Node j of `level` the rank computes (rank 0's take_node set): from its nk children's
 * summaries (blob[k], len[k]: child k of dist_node_children's order; at level 1 as work made
 * them, above as this function's `keep`) the message for take_node (a vox_alloc'd out) and,
 * with keep set (its parent is computed here too), the summary its parent takes. NULL: the
 * stage has none. */
typedef enum vox_status (*dist_share_node_fn)(void *arg, int level, int64_t j,
                                              const uint8_t *const *blob, const int64_t *len,
                                              int nk, void **out, int64_t *out_len, void **keep,
                                              int64_t *keep_len, int tid);
enum vox_status dist_share_serve(struct vox_ctx *ctx, const struct vox_dist_comm *c,
                                 const int64_t grid[3], dist_share_setup_fn setup,
                                 dist_share_work_fn work, dist_share_node_fn node, void *arg,
                                 bool parallel);
/* Another rank, stage (a): work(arg, list[k], NULL, 0, &out, &out_len, tid) for each of the n
 * chunks of grid `grid`, on the context's threads, each summary sent to rank 0 (by the
 * calling thread) as it comes, but those of a level-1 node j with up set (up: NULL, or a
 * byte per node of levels 1 to uplev, as struct dist_share's): once all its children are
 * done, node(...) makes the node's message (key: chunks + its place among the levels'
 * nodes), and so on up its subtree; die_after > 0: _exit(3) once that many are
 * sent (a test hook). */
enum vox_status dist_share_send_all(struct vox_ctx *ctx, const struct vox_dist_comm *c,
                                    const int64_t grid[3], const int64_t *list, int64_t n,
                                    dist_share_work_fn work, dist_share_node_fn node,
                                    const uint8_t *up, int uplev, void *arg, int64_t die_after);
/* A chunk's summary as a message: box b, n counts, then n arrays (count[k] elements of
 * size[k] bytes); and back: dist_unpack checks the box and the lengths (VOX_FORMAT, no
 * message, when they do not match) and copies each array into a new vox_alloc'd one (room
 * for one element more); on failure the caller frees what arr holds. */
#define DIST_PACK_MAX 7
enum vox_status dist_pack(struct vox_ctx *ctx, const struct dist_box *b, int n,
                          const int64_t *count, const size_t *size, const void *const *arr,
                          void **blob, int64_t *len);
enum vox_status dist_unpack(struct vox_ctx *ctx, const uint8_t *blob, int64_t len,
                            const struct dist_box *b, int n, const size_t *size, int64_t *count,
                            void **arr);
/* Rank 0 of a sharing comm: each chunk's six boundary faces of its watershed fragment labels
 * (-z, +z, -y, +y, -x, +x), kept as the chunks' labels come, so that a chunk's window for
 * another rank needs only the chunk's fragment map and its one-voxel shell from the faces of
 * its neighbours: ~0.7 MB for a 128^3 chunk instead of 8.8 (the rank has the interior's
 * fragment labels from stage (a)). Memory: 24 bytes per face voxel pair of each chunk. */
struct dist_faces {
    int64_t nchunks, dims[3], chunk[3], grid[3];
    uint32_t **f;
};
enum vox_status dist_faces_init(struct vox_ctx *ctx, struct dist_faces *fc, const int64_t dims[3],
                                const int64_t chunk[3]);
void dist_faces_fini(struct vox_ctx *ctx, struct dist_faces *fc);
/* The u32 values of chunk i's six faces (chunks of `chunk` over dims). */
int64_t dist_faces_len(const int64_t dims[3], const int64_t chunk[3], int64_t i);
/* Box b's six faces (that many values) out of lab (its fragment labels, C order). */
void dist_faces_extract(const struct dist_box *b, const uint32_t *lab, uint32_t *f);
/* Keeps chunk i's faces: from src, its box's fragment labels (C order), or with `faces` the
 * faces themselves (dist_faces_extract's, dist_faces_len values). */
enum vox_status dist_faces_put(struct vox_ctx *ctx, struct dist_faces *fc, int64_t i,
                               const uint32_t *src, bool faces);
/* Whether rank 0 can hand its chunks to the ranks (dist_shell_pack): faces and the chunks'
 * maps, or (keeping records) every chunk's basins and the fragment maps aside. */
static inline bool dist_store_shells(const struct dist_store *st)
{
    return (st->faces && st->cmap) || st->fmap;
}
/* The message that hands chunk i (box b) to a rank: its fragment map through `map` (NULL:
 * basins; else the segments map[basin]) and its shell's values, in the window's C order. */
enum vox_status dist_shell_pack(struct vox_ctx *ctx, const struct dist_store *st,
                                const uint32_t *map, int64_t i, const struct dist_box *b,
                                void **blob, int64_t *len);
/* The rank's side: the window of box b (w->own allocated) from its own fragment labels (in
 * `own`) and the message; VOX_IO with a message when the message does not fit the box. */
enum vox_status dist_shell_window(struct vox_ctx *ctx, struct dist_store *own,
                                  const int64_t dims[3], const struct dist_box *b,
                                  const uint8_t *blob, int64_t len, struct dist_win *w);

/* dist_shell_window, and the labels a chunk's stage reads through it: the window and the
 * message's fragment map (for the chunk's face record); w and blob must outlive *given. */
enum vox_status dist_shell_labels(struct vox_ctx *ctx, struct dist_store *own,
                                  const int64_t dims[3], const struct dist_box *b,
                                  const uint8_t *blob, int64_t len, struct dist_win *w,
                                  struct dist_labels *given);

/* Rank 0's window of one of its atomic chunks (box b) when the store keeps faces: its
 * record's fragment labels through l's maps, and the one-voxel margin from the neighbours'
 * faces (the other ranks' chunks have no record on rank 0: they sent their faces only). */
enum vox_status dist_faces_window(struct vox_ctx *ctx, const struct dist_labels *l,
                                  const int64_t dims[3], const struct dist_box *b,
                                  struct dist_win *w);

/* A serving rank's run geometry: dims, clamped chunk shape and octree, as rank 0's. */
void dist_serve_geometry(const struct dist_vol *vol, const int64_t chunk[3], int64_t dims[3],
                         int64_t chunk_out[3], struct dist_tree *tree);
/* Who shares a parallel loop. Inside a task of a tree run: the run's workers that have no
 * task to take (they take the loop's items before new tasks: the caller, a node, is on the
 * critical path), one loop at a time (a second caller meanwhile runs its items alone).
 * Outside a tree run: the context's pool. A NULL dist_par: the caller alone. The items
 * must not depend on which worker runs them or in which order. */
struct dist_par {
    struct vox_ctx *ctx;
    const struct dist_tree *tree; /* or NULL */
};

void dist_par_for(const struct dist_par *p, int64_t n, void (*fn)(void *arg, int64_t i), void *arg);

/* The parts to cut a loop shared through p into: four per thread (parts take unequal times;
 * two a thread left the 512^3 bench's 2-thread run about 2 % slower: interleaved A/B of 6 and
 * 8 pairs, medians 3.273 -> 3.240 and 3.495 -> 3.420 s), DIST_PAR_PARTS at most; 1 for the
 * caller alone (p NULL). */
enum { DIST_PAR_PARTS = 16 };
int dist_par_parts(const struct dist_par *p);

#endif
