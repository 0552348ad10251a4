/*
 * dist/segment.c: vox_segment chunk by chunk: (a) the chunked watershed writes the basins
 * into a label store, (b) the chunked size merge reads them back box by box (with a one-voxel
 * window) and gives the basin → segment map, (c) the chunked agglomeration reads the same
 * store through that map, and (d) every chunk's final labels (store through the map) go to
 * the caller's sink, or into one whole tensor when there is none.
 *
 * Each stage is bitwise equal to its whole-volume counterpart for any chunking (the proofs
 * are at the top of dist.c, size_merge.c and agg.c), and vox_segment composes the same three
 * steps (its agglomeration runs on the contracted basin graph, which equals the graph of the
 * relabelled volume: vox_rag_contract), so the composition is equal too.
 *
 * Memory: a chunk holds its box of affinities plus a 2-voxel margin (quantized) and a few
 * bytes per voxel of work arrays, only while it runs; the label store is a file when there
 * is a sink. The summaries are held whole (see vox/dist.h).
 */
#include "dist_internal.h"
#include "vox/io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct sg_run {
    struct vox_ctx *ctx;
    struct dist_store *store;
    struct dist_vol *vol;
    struct dist_io *io;
    const struct vox_dist_sink *sink;
    const uint32_t *map;
    int64_t dims[3], chunk[3], grid[3];
    enum vox_status *st;
    struct dist_scratch *sc; /* per worker */
    bool *done;              /* per chunk: taken from its record (ingest) */
    const uint8_t *need;     /* ingest on a rank other than 0: the chunks it reads, or NULL */
    struct dist_share *share; /* (d): the other ranks' chunks (rank 0), or NULL */
    int share_rank;           /* (d) on another rank: its rank */
};

static enum vox_status sg_check_source(struct vox_ctx *ctx, const struct vox_dist_source *src,
                                       int64_t dims[3])
{
    if (!src || !src->aff == !src->vol)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "chunked segmentation: give exactly one of a "
                        "tensor and a volume as the source");
    enum vox_dtype dt = src->aff ? src->aff->dtype : vox_volume_info(src->vol)->dtype;
    int rank = src->aff ? src->aff->rank : vox_volume_info(src->vol)->rank;
    const int64_t *sh = src->aff ? src->aff->shape : vox_volume_info(src->vol)->shape;
    /* a volume may hold more channels (long-range affinities): its boxes read the first 3 */
    if (rank != 4 || (src->aff ? sh[0] != 3 : sh[0] < 3) || (dt != VOX_U8 && dt != VOX_F32))
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "chunked segmentation: %s%s affinities must be "
                        "u8 or f32 (3, Z, Y, X)",
                        src->vol ? vox_volume_name(src->vol) : "the", src->vol ? ":" : "");
    int64_t n = 1;
    for (int a = 0; a < 3; a++) {
        if (sh[a + 1] <= 0)
            return vox_fail(ctx, VOX_INVALID_ARG, "chunked segmentation: empty volume");
        dims[a] = sh[a + 1];
        n *= dims[a];
    }
    if (n >= (int64_t)UINT32_MAX)
        return vox_fail(ctx, VOX_UNSUPPORTED,
                        "chunked segmentation: %lld voxels, at most "
                        "2^32 - 2 (u32 labels)",
                        (long long)n);
    return VOX_OK;
}

/* A comm vox_dist_segment can use (NULL is one: no comm). */
static bool sg_comm_ok(const struct vox_dist_comm *c)
{
    return !c || (c->size >= 1 && c->rank >= 0 && c->rank < c->size && c->send && c->recv);
}

static enum vox_status sg_check(struct vox_ctx *ctx, const struct vox_dist_source *src,
                                const struct vox_seg_params *p, const struct vox_dist_options *o,
                                int64_t dims[3])
{
    enum vox_status s = vox_seg_params_check(ctx, p);
    if (s == VOX_OK)
        s = sg_check_source(ctx, src, dims);
    if (s != VOX_OK)
        return s;
    if (!o || o->chunk[0] < 1 || o->chunk[1] < 1 || o->chunk[2] < 1)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "chunk shape (%lld, %lld, %lld): every side must be >= 1",
                        o ? (long long)o->chunk[0] : 0ll, o ? (long long)o->chunk[1] : 0ll,
                        o ? (long long)o->chunk[2] : 0ll);
    const struct vox_dist_comm *c = o->comm;
    if (!sg_comm_ok(c))
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "chunked segmentation: a comm needs 0 <= rank "
                        "(%d) < size (%d) and both send and recv",
                        c->rank, c->size);
    /* (another rank of a comm writes nothing itself: encode will do there) */
    bool rank0 = !c || c->rank == 0;
    if (o->sink && (!o->sink->ready || (!o->sink->write && (rank0 || !o->sink->encode))))
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "chunked segmentation: the sink needs both "
                        "ready and write%s",
                        rank0 ? "" : " (or encode)");
    return VOX_OK;
}

/* File k of n bytes: with a journal, vox-dist-NAME in workdir (kept, and with resume not
 * truncated); else an anonymous temporary file, or one in workdir unlinked at once. */
static enum vox_status sg_file(struct vox_ctx *ctx, const struct vox_dist_options *o, bool journal,
                               const char *name, int k, int64_t n, int *fd_out)
{
    char path[4200];
    int fd;
    if (journal) {
        snprintf(path, sizeof path, "%s/vox-dist-%s", o->workdir, name);
        fd = open(path, O_RDWR | O_CREAT | (o->resume ? 0 : O_TRUNC), 0600);
    } else if (o->workdir) {
        /* a new name (O_EXCL): MPI ranks on other hosts may share the directory and a PID */
        fd = -1;
        for (int t = 0; fd < 0 && t < 1000; t++) {
            snprintf(path, sizeof path, "%s/vox-dist-%s-%ld-%d-%d", o->workdir, name,
                     (long)getpid(), k, t);
            fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
            if (fd < 0 && errno != EEXIST)
                break;
        }
        if (fd >= 0)
            unlink(path);
    } else {
        FILE *f = tmpfile();
        fd = f ? dup(fileno(f)) : -1;
        if (f)
            fclose(f);
        snprintf(path, sizeof path, "(a temporary file)");
    }
    if (fd < 0)
        return vox_fail(ctx, VOX_IO, "chunked segmentation: cannot create the %s file %s", name,
                        path);
    /* (a file of size 0 is left alone: ext4 writes a file truncated to 0 out to the disk
     * when it is closed, 0.1 s for the face records) */
    if (n > 0 && ftruncate(fd, (off_t)n) != 0) {
        close(fd);
        return vox_fail(ctx, VOX_IO,
                        "chunked segmentation: cannot size the %s file %s to %lld "
                        "bytes",
                        name, path, (long long)n);
    }
    *fd_out = fd;
    return VOX_OK;
}

/* The blocked store bf of the volume dims in chunks (nch channels of esz bytes): one file
 * with a journal (its records name it), else DIST_BFILE_FILES (chunks written side by side
 * then go to different files, which the kernel writes at the same time). */
static enum vox_status sg_bfile(struct vox_ctx *ctx, const struct vox_dist_options *o, bool journal,
                                const char *name, const int64_t dims[3], int nch, size_t esz,
                                struct dist_bfile *bf)
{
    int nfd = journal ? 1 : DIST_BFILE_FILES;
    int64_t n = dist_bfile_init(bf, dims, o->chunk, nch, esz, &nfd);
    enum vox_status s = VOX_OK;
    for (int k = 0; k < nfd && s == VOX_OK; k++) {
        s = sg_file(ctx, o, journal, name, k, n, &bf->fd[k]);
        bf->nfd += s == VOX_OK;
    }
    return s;
}

static void sg_box(const struct sg_run *r, int64_t i, struct dist_box *b)
{
    int64_t c[3] = {i / (r->grid[1] * r->grid[2]), (i / r->grid[2]) % r->grid[1], i % r->grid[2]};
    for (int a = 0; a < 3; a++) {
        b->lo[a] = c[a] * r->chunk[a];
        b->hi[a] = b->lo[a] + r->chunk[a] < r->dims[a] ? b->lo[a] + r->chunk[a] : r->dims[a];
    }
}

static int64_t sg_grid(struct sg_run *r, const int64_t dims[3], const int64_t chunk[3])
{
    int64_t n = 1;
    for (int a = 0; a < 3; a++) {
        r->dims[a] = dims[a];
        r->chunk[a] = chunk[a] < dims[a] ? chunk[a] : dims[a];
        r->grid[a] = (dims[a] + r->chunk[a] - 1) / r->chunk[a];
        n *= r->grid[a];
    }
    return n;
}

/* Chunk i's record still whole in the affinity cache (with records, resumed). */
static bool sg_ingested(struct sg_run *r, int64_t i)
{
    struct dist_journal *jr = r->vol->jr;
    const struct dist_jrec *rec = jr ? dist_journal_find(jr, DJ_INGEST, i) : NULL;
    uint64_t h = 0;
    if (rec)
        r->st[i] = dist_bfile_hash(r->ctx, r->vol->qf, i, &h);
    if (jr && r->st[i] == VOX_OK)
        dist_journal_count(jr, rec && h == rec->sum);
    return r->st[i] != VOX_OK || (rec && h == rec->sum);
}

/* Chunk i's box, out of q (3, Z, Y, X: a box holding it, from o), into the cache, via buf. */
static enum vox_status sg_ingest_chunk(struct sg_run *r, int64_t i, const struct vox_tensor *q,
                                       const int64_t o[3], uint8_t *buf)
{
    struct dist_box b;
    sg_box(r, i, &b);
    const int64_t n[3] = {b.hi[0] - b.lo[0], b.hi[1] - b.lo[1], b.hi[2] - b.lo[2]};
    const int64_t X = q->shape[3], plane = q->shape[1] * q->shape[2] * X;
    const uint8_t *src = q->data;
    uint8_t *d = buf;
    for (int64_t c = 0; c < 3; c++)
        for (int64_t z = 0; z < n[0]; z++)
            for (int64_t y = 0; y < n[1]; y++, d += n[2])
                memcpy(d,
                       src + c * plane +
                           ((b.lo[0] - o[0] + z) * q->shape[2] + b.lo[1] - o[1] + y) * X + b.lo[2] -
                           o[2],
                       (size_t)n[2]);
    enum vox_status s = dist_qfile_write(r->ctx, r->vol, &b, buf);
    if (s == VOX_OK && r->vol->jr)
        s = dist_journal_add(r->ctx, r->vol->jr, DJ_INGEST, i, dist_hash(buf, (size_t)(d - buf), 0),
                             NULL, 0);
    return s;
}

/* Source bytes one ingest read may take: a run of chunks along x that fits (one at least). */
#define SG_INGEST_BYTES ((size_t)32 << 20)

/* Chunks per ingest run along x. */
static int64_t sg_run_len(const struct sg_run *r)
{
    size_t box = (size_t)(3 * r->chunk[0] * r->chunk[1] * r->chunk[2]) *
                 vox_dtype_size(vox_volume_info(r->vol->src)->dtype);
    int64_t k = (int64_t)(SG_INGEST_BYTES / box);
    return k < 1 ? 1 : k < r->grid[2] ? k : r->grid[2];
}

/* The box one ingest read takes for chunks [i0, i1) (a run along x): theirs, grown to the
 * source's chunk boundaries where the source decodes whole chunks on the threads (each read
 * then decodes every chunk it meets once and in parallel, where libhdf5 would decode the
 * chunks a box cuts on one thread, again for every box that meets them). */
static void sg_run_box(const struct sg_run *r, int64_t i0, int64_t i1, int64_t lo[3], int64_t hi[3])
{
    struct dist_box b0, b1;
    sg_box(r, i0, &b0);
    sg_box(r, i1 - 1, &b1);
    for (int a = 0; a < 3; a++) {
        lo[a] = b0.lo[a];
        hi[a] = a == 2 ? b1.hi[a] : b0.hi[a];
    }
    struct vox_volume *v = r->vol->src;
    int64_t c[4], l4[4] = {0}, h4[4] = {3};
    if (!v || !vox_volume_chunk_shape(v, c) || vox_volume_info(v)->rank != 4)
        return;
    for (int a = 0; a < 3; a++) {
        l4[a + 1] = lo[a] / c[a + 1] * c[a + 1];
        h4[a + 1] = (hi[a] + c[a + 1] - 1) / c[a + 1] * c[a + 1];
        h4[a + 1] = h4[a + 1] < r->dims[a] ? h4[a + 1] : r->dims[a];
    }
    if (!vox_volume_read_parallel(v, l4, h4))
        return;
    for (int a = 0; a < 3; a++)
        lo[a] = l4[a + 1], hi[a] = h4[a + 1];
}

/* Quantizes one run of chunks along x of the source volume into the affinity cache, with one
 * read of the run's box: a volume file is then read in rows of the run's width (a chunk box
 * at a time, it would be read one short row per call). */
static void sg_ingest_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    struct sg_run *r = arg;
    struct dist_vol src = *r->vol;
    src.qf = NULL;
    const int64_t k = sg_run_len(r), nrun = (r->grid[2] + k - 1) / k;
    for (int64_t t = lo[0]; t < hi[0]; t++) {
        const int64_t i0 = t / nrun * r->grid[2] + t % nrun * k;
        const int64_t i1 =
            i0 + k < (t / nrun + 1) * r->grid[2] ? i0 + k : (t / nrun + 1) * r->grid[2];
        bool todo = false;
        for (int64_t i = i0; i < i1; i++) {
            r->done[i] = (r->need && !r->need[i]) || sg_ingested(r, i);
            todo |= !r->done[i];
        }
        if (!todo) {
            vox_progress_add(r->vol->io->bar, i1 - i0);
            continue;
        }
        int64_t rlo[3], rhi[3];
        sg_run_box(r, i0, i1, rlo, rhi);
        struct vox_tensor q = {0};
        enum vox_status s = dist_read_q(r->ctx, &src, rlo, rhi, &r->sc[tid], &q);
        size_t cb = (size_t)(3 * r->chunk[0] * r->chunk[1] * r->chunk[2]);
        uint8_t *buf = s == VOX_OK ? dist_scratch_get(r->ctx, &r->sc[tid], DIST_SC_TMP, cb) : NULL;
        if (s == VOX_OK && !buf)
            s = VOX_OUT_OF_MEMORY;
        for (int64_t i = i0; i < i1; i++)
            if (!r->done[i])
                r->st[i] = s != VOX_OK ? s : sg_ingest_chunk(r, i, &q, rlo, buf);
        vox_tensor_free(r->ctx, &q);
        vox_progress_add(r->vol->io->bar, i1 - i0);
    }
}

/* Runs task over ntask items (chunks, or rows of chunks) on the pool (serial: one after
 * another on this thread, each free to use the pool), with a status and a done flag per
 * chunk (n) and a scratch per worker; the first failure. */
static enum vox_status sg_each(struct sg_run *r, int64_t n, int64_t ntask, bool serial,
                               void (*task)(void *, const int64_t *, const int64_t *, int))
{
    r->st = vox_calloc(r->ctx, (size_t)n, sizeof *r->st);
    r->done = vox_calloc(r->ctx, (size_t)n, sizeof *r->done);
    r->sc = dist_scratch_new(r->ctx);
    enum vox_status s = r->st && r->done && r->sc ? VOX_OK : VOX_OUT_OF_MEMORY;
    for (int64_t t = 0; s == VOX_OK && serial && t < ntask; t++)
        task(r, (int64_t[3]){t, 0, 0}, (int64_t[3]){t + 1, 1, 1}, 0);
    if (s == VOX_OK && !serial)
        vox_pool_for(vox_ctx_pool(r->ctx), (int64_t[3]){ntask, 1, 1}, (int64_t[3]){1, 1, 1},
                     VOX_SCHED_DYNAMIC, task, r);
    for (int64_t i = 0; i < n && s == VOX_OK; i++)
        s = r->st[i];
    vox_free(r->ctx, r->st);
    vox_free(r->ctx, r->done);
    dist_scratch_free(r->ctx, r->sc);
    r->st = NULL;
    r->done = NULL;
    r->sc = NULL;
    return s;
}

/* Whether the stages read their boxes from the source volume itself: a u8 volume whose box
 * reads cost their bytes (vox_volume_box_direct) needs no copy, unless the run keeps records
 * (they vouch for the copy's chunks). */
static bool sg_direct(struct vox_volume *src, bool journal)
{
    return !journal && vox_volume_info(src)->dtype == VOX_U8 && vox_volume_box_direct(src);
}

/* Else the volume is read once, chunk box by chunk box, into the quantized affinity file
 * (3 bytes per voxel), which the three stages then read instead; on a rank other than 0,
 * only the chunks `need` marks (NULL: all). */
static enum vox_status sg_ingest(struct vox_ctx *ctx, struct dist_vol *vol,
                                 const struct vox_dist_options *o, const uint8_t *need,
                                 struct dist_bfile *qf)
{
    enum vox_status s = sg_bfile(ctx, o, vol->jr != NULL, "affinities", vol->dims, 3, 1, qf);
    if (s != VOX_OK)
        return s;
    vol->qf = qf;
    struct sg_run r = {.ctx = ctx, .vol = vol, .need = need};
    double t0 = vox_time_now();
    int64_t w0 = vol->io->bytes_written, nchunks = sg_grid(&r, vol->dims, o->chunk);
    int64_t k = sg_run_len(&r), runs = r.grid[0] * r.grid[1] * ((r.grid[2] + k - 1) / k);
    /* a source whose run boxes decode on the threads (deflated HDF5 chunks the runs cover
     * whole) is read one run after another: read from several threads, the runs would take
     * turns for the io lock and decode one at a time */
    int64_t lo[3], hi[3];
    sg_run_box(&r, 0, k < r.grid[2] ? k : r.grid[2], lo, hi);
    const int64_t l4[4] = {0, lo[0], lo[1], lo[2]}, h4[4] = {3, hi[0], hi[1], hi[2]};
    s = sg_each(&r, nchunks, runs, vox_volume_read_parallel(vol->src, l4, h4), sg_ingest_task);
    dist_stats_level(o->stats, VOX_DIST_INGEST, 0, nchunks, 0, 0, vol->io->bytes_written - w0,
                     vox_time_now() - t0);
    return s;
}

/* A rank other than 0 reads the boxes of its own atomic chunks (dist_chunk_rank) with their
 * margins (2 voxels in stage (a), 1 on the + sides in (b) and (c)): they lie in its chunks and
 * their 26 neighbours, which it ingests. */
static enum vox_status sg_rank_ingest(struct vox_ctx *ctx, struct dist_vol *vol,
                                      const struct vox_dist_options *o, struct dist_bfile *qf)
{
    struct sg_run r = {.ctx = ctx, .vol = vol};
    const int64_t n = sg_grid(&r, vol->dims, o->chunk), *g = r.grid;
    uint8_t *need = vox_calloc(ctx, (size_t)n, 1);
    if (!need)
        return VOX_OUT_OF_MEMORY;
    for (int64_t i = 0; i < n; i++) {
        if (dist_chunk_rank(g, i, vol->comm->size) != vol->comm->rank)
            continue;
        const int64_t c[3] = {i / (g[1] * g[2]), i / g[2] % g[1], i % g[2]};
        for (int64_t dz = -1; dz <= 1; dz++)
            for (int64_t dy = -1; dy <= 1; dy++)
                for (int64_t dx = -1; dx <= 1; dx++) {
                    const int64_t z = c[0] + dz, y = c[1] + dy, x = c[2] + dx;
                    if (z >= 0 && z < g[0] && y >= 0 && y < g[1] && x >= 0 && x < g[2])
                        need[(z * g[1] + y) * g[2] + x] = 1;
                }
    }
    enum vox_status s = sg_ingest(ctx, vol, o, need, qf);
    vox_free(ctx, need);
    return s;
}

static void sg_out_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    struct sg_run *r = arg;
    for (int64_t i = lo[0]; i < hi[0]; i++) {
        if (dist_share_remote(r->share, i)) { /* another rank's: sg_take */
            r->st[i] = tid == 0 ? dist_share_poll(r->ctx, r->share) : VOX_OK;
            continue;
        }
        struct dist_box b;
        sg_box(r, i, &b);
        int64_t shape[3] = {b.hi[0] - b.lo[0], b.hi[1] - b.lo[1], b.hi[2] - b.lo[2]};
        struct vox_tensor t = {.dtype = VOX_U32, .rank = 3}; /* a view of the scratch */
        for (int a = 2, st = 1; a >= 0; st *= (int)shape[a], a--) {
            t.shape[a] = shape[a];
            t.strides[a] = st;
        }
        t.data = dist_scratch_get(r->ctx, &r->sc[tid], DIST_SC_LAB,
                                  (size_t)(shape[0] * shape[1] * shape[2]) * sizeof(uint32_t));
        enum vox_status s = t.data ? VOX_OK : VOX_OUT_OF_MEMORY;
        if (s == VOX_OK) /* (the segment map applied per run as the record decodes) */
            s = dist_store_read_map(r->ctx, r->store, &b, t.data, &r->sc[tid], r->map);
        if (s == VOX_OK && r->sink->concurrent) { /* the sink takes writes side by side */
            s = r->sink->write(r->sink->arg, b.lo, &t);
            pthread_mutex_lock(&r->io->mu);
            r->io->bytes_written += (int64_t)vox_tensor_nbytes(&t);
            pthread_mutex_unlock(&r->io->mu);
        } else if (s == VOX_OK) {
            pthread_mutex_lock(&r->io->mu);
            s = r->sink->write(r->sink->arg, b.lo, &t);
            r->io->bytes_written += (int64_t)vox_tensor_nbytes(&t);
            pthread_mutex_unlock(&r->io->mu);
        }
        r->st[i] = s;
        vox_progress_add(r->io->bar, 1);
    }
}

/* ---- (d) shared: the other ranks encode their own chunks' labels ---------------------------
 * Rank 0 sends every rank the result (its sink's ready cuts the merges) and, for each of the
 * rank's chunks, the map from the chunk's fragments (which the rank kept from stage (a)) to
 * segments; the rank maps its labels, encodes them (sink->encode) and sends the bytes back,
 * which rank 0 stores (sink->store) where that chunk goes. */

/* The result as (d)'s setup: int64 nbasins, nseg, merges.nseg, merges.n, then the merges. */
static enum vox_status sg_res_pack(struct vox_ctx *ctx, const struct vox_seg_result *res,
                                   void **blob, int64_t *len)
{
    const int64_t hd[4] = {res->nbasins, res->nseg, res->merges.nseg, res->merges.n};
    size_t m = (size_t)res->merges.n * sizeof *res->merges.m;
    uint8_t *p = *blob = vox_alloc(ctx, sizeof hd + m);
    if (!p)
        return VOX_OUT_OF_MEMORY;
    memcpy(p, hd, sizeof hd);
    if (m)
        memcpy(p + sizeof hd, res->merges.m, m);
    *len = (int64_t)(sizeof hd + m);
    return VOX_OK;
}

static enum vox_status sg_res_unpack(struct vox_ctx *ctx, const uint8_t *blob, int64_t len,
                                     struct vox_seg_result *res)
{
    int64_t hd[4];
    const int64_t msz = (int64_t)sizeof *res->merges.m;
    if (len < (int64_t)sizeof hd)
        return VOX_FORMAT;
    memcpy(hd, blob, sizeof hd);
    if (hd[3] < 0 || hd[3] > (len - (int64_t)sizeof hd) / msz ||
        len != (int64_t)sizeof hd + hd[3] * msz)
        return VOX_FORMAT;
    memset(res, 0, sizeof *res);
    res->nbasins = hd[0];
    res->nseg = hd[1];
    res->merges = (struct vox_merge_history){.nseg = hd[2], .n = hd[3], .cap = hd[3]};
    res->merges.m = vox_alloc(ctx, (size_t)(hd[3] + 1) * sizeof *res->merges.m);
    if (!res->merges.m)
        return VOX_OUT_OF_MEMORY;
    if (hd[3])
        memcpy(res->merges.m, blob + sizeof hd, (size_t)(hd[3] * msz));
    return VOX_OK;
}

/* Rank 0: chunk i's fragment → segment map for its rank (int64 count, then u32s). */
static enum vox_status sg_give(void *arg, int64_t i, void **blob, int64_t *len)
{
    struct sg_run *r = arg;
    const struct dist_store *st = r->store;
    const int64_t n = st->cmap_n[i];
    uint8_t *p = *blob = vox_alloc(r->ctx, sizeof n + (size_t)n * sizeof(uint32_t));
    if (!p)
        return VOX_OUT_OF_MEMORY;
    memcpy(p, &n, sizeof n);
    uint32_t *m = (uint32_t *)(p + sizeof n);
    const uint32_t *fm = st->cmap ? st->cmap[i] : st->fmap[i];
    for (int64_t k = 0; k < n; k++)
        m[k] = r->map[fm[k]];
    *len = (int64_t)(sizeof n + (size_t)n * sizeof(uint32_t));
    return VOX_OK;
}

/* Rank 0: chunk i's encoded labels from its rank, stored. */
static enum vox_status sg_take(void *arg, int64_t i, const uint8_t *blob, int64_t len)
{
    struct sg_run *r = arg;
    struct dist_box b;
    sg_box(r, i, &b);
    const int64_t nv = (b.hi[0] - b.lo[0]) * (b.hi[1] - b.lo[1]) * (b.hi[2] - b.lo[2]);
    if (!r->sink->concurrent)
        pthread_mutex_lock(&r->io->mu);
    enum vox_status s = r->sink->store(r->sink->arg, b.lo, blob, len);
    if (r->sink->concurrent)
        pthread_mutex_lock(&r->io->mu);
    r->io->bytes_written += nv * (int64_t)sizeof(uint32_t); /* (as sg_out_task counts) */
    pthread_mutex_unlock(&r->io->mu);
    vox_progress_add(r->io->bar, 1);
    return s;
}

/* Another rank: the result, given to the sink's ready; then its chunks. */
struct sg_served {
    struct sg_run r;
    struct dist_store *own; /* this rank's fragment labels */
    struct vox_seg_result res;
};

static enum vox_status sg_serve_setup(void *arg, const uint8_t *blob, int64_t len)
{
    struct sg_served *v = arg;
    enum vox_status s = sg_res_unpack(v->r.ctx, blob, len, &v->res);
    if (s == VOX_FORMAT)
        return vox_fail(v->r.ctx, VOX_IO, "chunked segmentation: a malformed result from rank 0");
    if (s == VOX_OK && v->r.sink && v->r.sink->encode)
        s = v->r.sink->ready(v->r.sink->arg, &v->res);
    return s;
}

static enum vox_status sg_serve_work(void *arg, int64_t i, const uint8_t *blob, int64_t len,
                                     void **out, int64_t *out_len, int tid)
{
    (void)tid; /* one chunk at a time (the sink's encode is itself parallel) */
    struct sg_served *v = arg;
    struct sg_run *r = &v->r;
    struct dist_box b;
    sg_box(r, i, &b);
    int64_t ncm = -1;
    if (len >= (int64_t)sizeof ncm)
        memcpy(&ncm, blob, sizeof ncm);
    if (!r->sink || !r->sink->encode)
        return vox_fail(r->ctx, VOX_INVALID_ARG,
                        "chunked segmentation: rank 0's sink stores chunks the other ranks "
                        "encode, rank %d's cannot encode",
                        r->share_rank);
    if (ncm < 1 || len != (int64_t)sizeof ncm + ncm * (int64_t)sizeof(uint32_t))
        return vox_fail(r->ctx, VOX_IO,
                        "chunked segmentation: rank 0 sent a malformed map for the chunk "
                        "at (%lld, %lld, %lld)",
                        (long long)b.lo[0], (long long)b.lo[1], (long long)b.lo[2]);
    const uint32_t *cm = (const uint32_t *)(blob + sizeof ncm);
    struct vox_tensor t = {.dtype = VOX_U32, .rank = 3};
    for (int a = 2, st = 1; a >= 0; st *= (int)(b.hi[a] - b.lo[a]), a--) {
        t.shape[a] = b.hi[a] - b.lo[a];
        t.strides[a] = st;
    }
    const int64_t nv = t.shape[0] * t.shape[1] * t.shape[2];
    uint32_t *l = t.data = dist_scratch_get(r->ctx, r->sc, DIST_SC_LAB, (size_t)nv * sizeof *l);
    enum vox_status s = l ? dist_store_read(r->ctx, v->own, &b, l, r->sc) : VOX_OUT_OF_MEMORY;
    for (int64_t k = 0; s == VOX_OK && k < nv; k++) {
        if (l[k] >= (uint64_t)ncm)
            return vox_fail(r->ctx, VOX_IO,
                            "chunked segmentation: rank 0's map for the chunk at (%lld, "
                            "%lld, %lld) misses fragment %u",
                            (long long)b.lo[0], (long long)b.lo[1], (long long)b.lo[2], l[k]);
        l[k] = cm[l[k]];
    }
    return s == VOX_OK ? r->sink->encode(r->sink->arg, b.lo, &t, out, out_len) : s;
}

/* Another rank of a sharing comm: (d) for its own chunks (nothing when rank 0 keeps them). */
static enum vox_status sg_serve(struct vox_ctx *ctx, const struct dist_vol *vol,
                                const struct vox_dist_options *o, struct dist_store *own)
{
    struct sg_served v = {.r = {.ctx = ctx, .sink = o->sink, .share_rank = vol->comm->rank},
                          .own = own};
    sg_grid(&v.r, vol->dims, o->chunk);
    v.r.sc = dist_scratch_new(ctx);
    enum vox_status s = v.r.sc ? dist_share_serve(ctx, vol->comm, v.r.grid, sg_serve_setup,
                                                  sg_serve_work, NULL, &v, false)
                               : VOX_OUT_OF_MEMORY;
    dist_scratch_free(ctx, v.r.sc);
    vox_seg_result_fini(ctx, &v.res);
    return s;
}

/* Rank 0 keeping (d): the ranks get the setup and the end. */
static enum vox_status sg_keep_out(struct vox_ctx *ctx, const struct vox_seg_result *res,
                                   const struct vox_dist_comm *comm)
{
    struct dist_share share = {.c = comm};
    void *setup = NULL;
    int64_t len = 0;
    enum vox_status s = sg_res_pack(ctx, res, &setup, &len);
    s = s ? s : dist_share_begin(ctx, &share, setup, len);
    vox_free(ctx, setup);
    return s;
}

/* (d) with a sink: ready, then every chunk's labels (with a sharing comm, the other ranks'
 * chunks encoded there when the sink can store their bytes). */
static enum vox_status sg_emit(struct sg_run *r, const struct vox_seg_result *res,
                               const int64_t chunk[3], const struct vox_dist_comm *comm,
                               const uint8_t *kept)
{
    pthread_mutex_lock(&r->io->mu);
    enum vox_status s = r->sink->ready(r->sink->arg, res);
    pthread_mutex_unlock(&r->io->mu);
    int64_t n = sg_grid(r, r->dims, chunk);
    struct dist_share share = {.c = comm,
                               .grid = {r->grid[0], r->grid[1], r->grid[2]},
                               .nchunks = n,
                               .take = sg_take,
                               .arg = r,
                               .keep = kept};
    if (s == VOX_OK && dist_share_on(comm)) {
        void *setup = NULL;
        int64_t len = 0;
        const struct dist_store *st = r->store;
        bool remote = r->sink->encode && r->sink->store && (st->cmap || st->fmap);
        share.give = remote ? sg_give : NULL;
        r->share = remote ? &share : NULL;
        s = sg_res_pack(r->ctx, res, &setup, &len);
        s = s ? s : dist_share_begin(r->ctx, &share, setup, len);
        vox_free(r->ctx, setup);
        if (s == VOX_OK && !remote && st->absent) /* (the ranks have their end: they return) */
            return vox_fail(r->ctx, VOX_INVALID_ARG,
                            "chunked segmentation: the other ranks' sinks encode their chunks' "
                            "output, rank 0's cannot store it (give both encode and store)");
    }
    s = s ? s : sg_each(r, n, n, false, sg_out_task);
    if (r->share) {
        enum vox_status e = dist_share_end(r->ctx, r->share);
        s = s ? s : e;
        r->share = NULL;
    }
    return s;
}

/* Concatenates n parts into one blob. */
static uint8_t *sg_pack(struct vox_ctx *ctx, int n, const void *const *src, const size_t *len,
                        int64_t *size_out)
{
    size_t t = 0;
    for (int k = 0; k < n; k++)
        t += len[k];
    uint8_t *b = vox_alloc(ctx, t + 1), *p = b;
    for (int k = 0; b && k < n; p += len[k], k++)
        if (len[k])
            memcpy(p, src[k], len[k]);
    *size_out = (int64_t)t;
    return b;
}

/* The stage record kind's blob, when whole: hd (nh int64) and the rest in *rest_out. */
static uint8_t *sg_stage_blob(struct vox_ctx *ctx, struct dist_journal *j, int kind, int64_t *hd,
                              int nh, const uint8_t **rest_out, int64_t *rest_len)
{
    const struct dist_jrec *r = j ? dist_journal_find(j, kind, 0) : NULL;
    uint8_t *b = NULL;
    if (!r || r->len < nh * 8 || dist_journal_blob(ctx, j, r, (void **)&b) != VOX_OK || !b)
        return NULL;
    memcpy(hd, b, (size_t)nh * 8);
    *rest_out = b + nh * 8;
    *rest_len = r->len - nh * 8;
    return b;
}

/* Fills h (nseg, n from hd) with n merges from p; false if they do not fit. */
static bool sg_hist(struct vox_ctx *ctx, struct vox_merge_history *h, int64_t nseg, int64_t n,
                    const uint8_t *p, int64_t len)
{
    if (n < 0 || len != n * (int64_t)sizeof *h->m)
        return false;
    h->m = vox_alloc(ctx, (size_t)(n + 1) * sizeof *h->m);
    if (!h->m)
        return false;
    if (n)
        memcpy(h->m, p, (size_t)len);
    h->nseg = nseg;
    h->n = h->cap = n;
    return true;
}

/* (b) from its record: the map, nseg and the size merges. */
static bool sg_b_load(struct vox_ctx *ctx, struct dist_journal *j, int64_t nbasins,
                      struct vox_seg_result *res, uint32_t **map_out)
{
    int64_t hd[4], len;
    const uint8_t *p;
    uint8_t *b = sg_stage_blob(ctx, j, DJ_STAGE_B, hd, 4, &p, &len);
    int64_t mb = (nbasins + 1) * (int64_t)sizeof **map_out;
    bool ok = b && hd[0] == nbasins && len >= mb;
    uint32_t *map = ok ? vox_alloc(ctx, (size_t)mb) : NULL;
    ok = map && sg_hist(ctx, &res->dend, hd[2], hd[3], p + mb, len - mb);
    if (ok) {
        memcpy(map, p, (size_t)mb);
        res->nseg = hd[1];
        *map_out = map;
    } else {
        vox_free(ctx, map);
    }
    vox_free(ctx, b);
    return ok;
}

static enum vox_status sg_b_save(struct vox_ctx *ctx, struct dist_journal *j,
                                 const struct vox_seg_result *res, const uint32_t *map)
{
    const int64_t hd[4] = {res->nbasins, res->nseg, res->dend.nseg, res->dend.n};
    const void *src[3] = {hd, map, res->dend.m};
    const size_t len[3] = {sizeof hd, (size_t)(res->nbasins + 1) * sizeof *map,
                           (size_t)res->dend.n * sizeof *res->dend.m};
    int64_t n;
    uint8_t *b = sg_pack(ctx, 3, src, len, &n);
    enum vox_status s = b ? dist_journal_add(ctx, j, DJ_STAGE_B, 0, 0, b, n) : VOX_OUT_OF_MEMORY;
    vox_free(ctx, b);
    return s;
}

static bool sg_c_load(struct vox_ctx *ctx, struct dist_journal *j, struct vox_seg_result *res)
{
    int64_t hd[2], len;
    const uint8_t *p;
    uint8_t *b = sg_stage_blob(ctx, j, DJ_STAGE_C, hd, 2, &p, &len);
    bool ok = b && hd[0] == res->nseg && sg_hist(ctx, &res->merges, hd[0], hd[1], p, len);
    vox_free(ctx, b);
    return ok;
}

static enum vox_status sg_c_save(struct vox_ctx *ctx, struct dist_journal *j,
                                 const struct vox_merge_history *h)
{
    const int64_t hd[2] = {h->nseg, h->n};
    const void *src[2] = {hd, h->m};
    const size_t len[2] = {sizeof hd, (size_t)h->n * sizeof *h->m};
    int64_t n;
    uint8_t *b = sg_pack(ctx, 2, src, len, &n);
    enum vox_status s = b ? dist_journal_add(ctx, j, DJ_STAGE_C, 0, 0, b, n) : VOX_OUT_OF_MEMORY;
    vox_free(ctx, b);
    return s;
}

/* The size merge's record into res, replayed first if it was not yet. */
static enum vox_status sg_take_dend(struct vox_ctx *ctx, struct dist_dend *d,
                                    struct vox_seg_result *res)
{
    if (!d->done)
        dist_dend_run(ctx, d);
    if (d->st == VOX_OK) {
        vox_merge_history_fini(ctx, &res->dend);
        res->dend = d->dend;
        d->dend = (struct vox_merge_history){0};
    }
    return d->st;
}

/* (a) → (b) → (c) into res (labels: the store's contents, still basins); with records, (b)
 * and (c) are taken from theirs when whole. */
/* A stage taken from its record while other ranks wait for it: they get a setup (one
 * int64, which both stages' setups accept) and the end at once. */
static enum vox_status sg_skip_stage(struct vox_ctx *ctx, const struct vox_dist_comm *comm)
{
    if (!dist_share_on(comm))
        return VOX_OK;
    struct dist_share share = {.c = comm};
    const int64_t zero = 0;
    return dist_share_begin(ctx, &share, &zero, sizeof zero);
}

static enum vox_status sg_stages(struct vox_ctx *ctx, struct dist_vol *vol,
                                 struct dist_store *store, const struct vox_seg_params *p,
                                 const struct vox_dist_options *o, struct vox_seg_result *res,
                                 uint32_t **map_out)
{
    int64_t *sizes = NULL, *seg_sizes = NULL;
    struct dist_journal *j = vol->jr;
    struct dist_dend dend = {.done = true};
    bool replay = false;
    uint8_t *kept = NULL;
    enum vox_status s =
        dist_ws_run(ctx, vol, o->chunk, p, store, &res->nbasins, &sizes, o->stats, &kept);
    vol->kept = kept; /* (freed by vox_dist_segment) */
    struct dist_labels basins = {.st = store};
    bool loaded = false;
    if (s == VOX_OK && j && sg_b_load(ctx, j, res->nbasins, res, map_out)) {
        loaded = true;
        s = sg_skip_stage(ctx, vol->comm);
    }
    if (s == VOX_OK && !loaded) {
        vox_merge_history_fini(ctx, &res->dend);
        s = dist_sm_run(ctx, vol, &basins, res->nbasins, sizes, o->chunk, p, map_out, &res->nseg,
                        &seg_sizes, &dend, o->stats);
        replay = s == VOX_OK;
        if (s == VOX_OK && j) { /* its record holds the merge record: replayed now */
            s = sg_take_dend(ctx, &dend, res);
            replay = false;
        }
        if (s == VOX_OK && j)
            s = sg_b_save(ctx, j, res, *map_out);
    }
    struct dist_labels segs = {.st = store, .map = s == VOX_OK ? *map_out : NULL};
    loaded = false;
    if (s == VOX_OK && j && sg_c_load(ctx, j, res)) {
        loaded = true;
        s = sg_skip_stage(ctx, vol->comm);
    }
    if (s == VOX_OK && !loaded) {
        vox_merge_history_fini(ctx, &res->merges);
        s = dist_ag_run(ctx, vol, &segs, res->nseg, o->chunk, p, &res->merges, o->stats, &dend);
        if (s == VOX_OK && j)
            s = sg_c_save(ctx, j, &res->merges);
    }
    if (s == VOX_OK && replay) /* in (c)'s tree after its chunks, or now if (c) was recorded */
        s = sg_take_dend(ctx, &dend, res);
    dist_dend_fini(ctx, &dend);
    vox_free(ctx, sizes);
    vox_free(ctx, seg_sizes);
    return s;
}

/* The hash of what a resumed run must share with the first: shape, chunks, parameters and
 * the source (its name and type, or a tensor's type). */
static uint64_t sg_config(const struct vox_dist_source *src, const struct dist_vol *vol,
                          const struct vox_seg_params *p, const int64_t chunk[3])
{
    int64_t v[16 + 2 * VOX_SEG_SIZE_POINTS_MAX] = {0};
    int k = 0;
    for (int a = 0; a < 3; a++) {
        v[k++] = vol->dims[a];
        v[k++] = chunk[a] < vol->dims[a] ? chunk[a] : vol->dims[a];
    }
    v[k++] = p->low, v[k++] = p->high, v[k++] = p->nsize, v[k++] = p->dust;
    v[k++] = p->score, v[k++] = p->smooth_k;
    memcpy(&v[k++], &p->quantile, 8);
    memcpy(&v[k++], &p->max_threshold, 8);
    for (int i = 0; i < p->nsize; i++)
        v[k++] = p->size[i].aff, v[k++] = p->size[i].size;
    v[k++] = src->vol ? vox_volume_info(src->vol)->dtype : src->aff->dtype;
    const char *name = src->vol ? vox_volume_name(src->vol) : "tensor";
    return dist_hash(name, strlen(name), dist_hash(v, (size_t)k * sizeof *v, 0));
}

/* The run's progress bar: a step per task (reading a chunk into the affinity file, a node of
 * each stage's octree, writing a chunk's labels). */
static struct vox_progress *sg_progress(struct vox_ctx *ctx, const struct dist_vol *vol,
                                        const struct vox_dist_options *opt, bool ingest)
{
    struct dist_tree t;
    int64_t grid[3], nodes = 0;
    for (int a = 0; a < 3; a++) {
        int64_t c = opt->chunk[a] < vol->dims[a] ? opt->chunk[a] : vol->dims[a];
        grid[a] = (vol->dims[a] + c - 1) / c;
    }
    dist_tree_init(&t, grid);
    for (int l = 0; l < t.nlev; l++)
        nodes += t.n[l];
    return vox_progress_start(ctx, "segment",
                              (ingest ? t.n[0] : 0) + 3 * nodes + (opt->sink ? t.n[0] : 0), "tasks",
                              false);
}

/* The work directory: created when missing (its parent must exist), with a marker file in
 * it, so that rank 0 (or a run without ranks) removes it again when the run succeeds, whichever
 * rank made it, and also after a resumed run; a resumed run needs it to exist. */
#define SG_MADE "vox-dist-made"

static enum vox_status sg_workdir(struct vox_ctx *ctx, const struct vox_dist_options *o)
{
    struct stat st;
    if (!o->workdir)
        return VOX_OK;
    if (stat(o->workdir, &st) == 0)
        return S_ISDIR(st.st_mode) ? VOX_OK
                                   : vox_fail(ctx, VOX_INVALID_ARG,
                                              "chunked segmentation: work directory '%s' is "
                                              "not a directory",
                                              o->workdir);
    if (errno == ENOENT && o->resume && (!o->comm || o->comm->rank == 0))
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "chunked segmentation: resume: work directory '%s' does not exist (no "
                        "records to resume from)",
                        o->workdir);
    if (mkdir(o->workdir, 0777) == 0) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", o->workdir, SG_MADE);
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0)
            close(fd);
        return VOX_OK;
    }
    if (errno == EEXIST) /* another rank made it */
        return VOX_OK;
    return vox_fail(ctx, VOX_IO, "chunked segmentation: cannot create work directory '%s': %s",
                    o->workdir, strerror(errno));
}

/* After a successful run (rank 0): the work directory removed if a run made it. */
static void sg_workdir_done(const struct vox_dist_options *o)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", o->workdir, SG_MADE);
    if (unlink(path) == 0)
        rmdir(o->workdir);
}

/* Stage (a) leaves face records for (b) and (c) (struct dist_pairs) where they cost less
 * than the scans they save: up to 0.25 entries a voxel (the 512^3 bench: 0.08). For
 * comparisons and tests, VOX_DIST_PAIRS=0: none (every chunk scanned); =2: for every
 * chunk. Returns the limit (< 0: none), or 0 for no records. */
static double sg_pairs_limit(void)
{
    const char *e = getenv("VOX_DIST_PAIRS");
    return e && !strcmp(e, "0") ? 0 : e && !strcmp(e, "2") ? -1 : 0.25;
}

/* The face records' file for vol (vol->pairs), unless they are off. */
static enum vox_status sg_pairs(struct vox_ctx *ctx, const struct vox_dist_options *opt,
                                struct dist_vol *vol, struct dist_pairs *pairs)
{
    const double limit = sg_pairs_limit();
    if (limit == 0)
        return VOX_OK;
    int fd[DIST_BFILE_FILES], nfd = 0, want = vox_ctx_threads(ctx);
    const int rank = vol->comm ? vol->comm->rank : 0;
    enum vox_status s = VOX_OK;
    want = want < DIST_BFILE_FILES ? want : DIST_BFILE_FILES;
    for (; s == VOX_OK && nfd < want; nfd += s == VOX_OK)
        s = sg_file(ctx, opt, false, "faces", rank * DIST_BFILE_FILES + nfd, 0, &fd[nfd]);
    if (s == VOX_OK) /* (takes the files, failing too) */
        s = dist_pairs_init(ctx, pairs, fd, nfd, vol->dims, opt->chunk, limit);
    else
        for (int f = 0; f < nfd; f++)
            close(fd[f]);
    vol->pairs = s == VOX_OK ? pairs : NULL;
    return s;
}

enum vox_status vox_dist_segment(struct vox_ctx *ctx, const struct vox_dist_source *src,
                                 const struct vox_seg_params *p, const struct vox_dist_options *opt,
                                 struct vox_seg_result *res_out)
{
    struct dist_vol vol = {0};
    enum vox_status s = sg_check(ctx, src, p, opt, vol.dims);
    if (s == VOX_OK)
        s = sg_workdir(ctx, opt);
    if (s != VOX_OK) /* the other ranks may have found nothing wrong: they would wait */
        return opt && opt->comm && opt->comm->size > 1 && sg_comm_ok(opt->comm)
                   ? dist_comm_stop(ctx, opt->comm, s)
                   : s;
    struct dist_io io = {.mu = PTHREAD_MUTEX_INITIALIZER};
    vol.aff = src->aff;
    vol.src = src->vol;
    vol.io = &io;
    vol.comm = opt->comm && opt->comm->size > 1 ? opt->comm : NULL;
    if (vol.comm && vol.comm->rank != 0) { /* this rank's share of the atomic chunks */
        memset(res_out, 0, sizeof *res_out);
        struct dist_store own = {.io = &io}; /* this rank's fragment labels */
        memcpy(own.dims, vol.dims, sizeof own.dims);
        bool share = dist_share_on(vol.comm);
        if (share) { /* records encoded as they fit (runs, u16, u32): only this rank reads them */
            s = sg_bfile(ctx, opt, false, "labels", vol.dims, 1, 4, &own.f);
            own.narrow =
                s == VOX_OK
                    ? vox_calloc(ctx, (size_t)(own.f.grid[0] * own.f.grid[1] * own.f.grid[2]), 1)
                    : NULL;
            s = s == VOX_OK && !own.narrow ? VOX_OUT_OF_MEMORY : s;
        }
        /* a source read through a decoder (HDF5: every box decodes the chunks it meets) is
         * copied once, as on rank 0, but only the chunks this rank's boxes read */
        struct dist_bfile qf = {.nfd = 0};
        if (s == VOX_OK && src->vol && !sg_direct(src->vol, false))
            s = sg_rank_ingest(ctx, &vol, opt, &qf);
        struct dist_pairs pairs = {.nfd = 0}; /* for this rank's chunks of (b) and (c) */
        if (s == VOX_OK && share)
            s = sg_pairs(ctx, opt, &vol, &pairs);
        /* a rank that encodes its chunks' output keeps their labels to itself, unless rank 0
         * keeps records (a workdir): they vouch for every chunk's labels */
        bool faces_only = share && opt->sink && opt->sink->encode && !opt->workdir;
        s = s ? s
              : dist_ws_send(ctx, &vol, opt->chunk, p, share ? &own : NULL, faces_only,
                             opt->die_after);
        if (s == VOX_OK && share)
            s = dist_sm_serve(ctx, &vol, opt->chunk, p, &own);
        if (s == VOX_OK && share)
            s = dist_ag_serve(ctx, &vol, opt->chunk, p, &own);
        if (s == VOX_OK && share)
            s = sg_serve(ctx, &vol, opt, &own);
        dist_pairs_fini(ctx, &pairs);
        dist_bfile_close(&own.f);
        dist_bfile_close(&qf);
        dist_store_fini(ctx, &own);
        return dist_comm_stop(ctx, vol.comm, s); /* rank 0 may wait for this rank */
    }
    struct vox_seg_result res = {0};
    struct dist_store store = {.io = &io};
    struct dist_faces faces = {0};
    memcpy(store.dims, vol.dims, sizeof store.dims);
    uint32_t *map = NULL;
    struct dist_bfile qf = {.nfd = 0};
    struct dist_journal jr = {.fd = -1, .bfd = -1};
    /* (with a comm, rank 0 keeps the records: the other ranks send it their chunks' labels) */
    bool journal = opt->workdir && opt->sink;
    if (journal) {
        s = dist_journal_open(ctx, opt->workdir, opt->resume, sg_config(src, &vol, p, opt->chunk),
                              &jr);
        jr.die_after = opt->die_after;
        vol.jr = &jr;
    }
    bool ingest = src->vol && !sg_direct(src->vol, journal);
    if (s == VOX_OK && opt->progress)
        io.bar = sg_progress(ctx, &vol, opt, ingest);
    if (s == VOX_OK && ingest)
        s = sg_ingest(ctx, &vol, opt, NULL, &qf);
    if (s == VOX_OK && opt->sink) {
        s = sg_bfile(ctx, opt, journal, "labels", vol.dims, 1, 4, &store.f);
        /* without records, the store is read through the watershed's chunk maps: narrow
         * records allowed (records vouch for u32 ones) */
        store.narrow =
            s == VOX_OK && !journal
                ? vox_calloc(ctx, (size_t)(store.f.grid[0] * store.f.grid[1] * store.f.grid[2]), 1)
                : NULL;
        s = s == VOX_OK && !journal && !store.narrow ? VOX_OUT_OF_MEMORY : s;
        if (s == VOX_OK && dist_share_on(vol.comm) && !journal) { /* for the ranks' windows */
            s = dist_faces_init(ctx, &faces, vol.dims, opt->chunk);
            store.faces = s == VOX_OK ? &faces : NULL;
        }
    } else if (s == VOX_OK) {
        s = vox_tensor_alloc(ctx, &res.labels, VOX_U32, 3, vol.dims);
        store.mem = res.labels.data;
    }
    struct dist_pairs pairs = {.nfd = 0};
    if (s == VOX_OK)
        s = sg_pairs(ctx, opt, &vol, &pairs);
    if (s == VOX_OK)
        s = sg_stages(ctx, &vol, &store, p, opt, &res, &map);
    int64_t nrec = 0;
    for (int64_t i = 0; vol.pairs && i < pairs.n; i++)
        nrec += pairs.off[i] >= 0;
    int64_t rec_bytes = 0;
    for (int f = 0; vol.pairs && f < pairs.nfd; f++)
        rec_bytes += pairs.end[f];
    dist_pairs_fini(ctx, &pairs);
    if (s == VOX_OK && !opt->sink) {
        vox_seg_relabel(ctx, &res.labels, map);
        if (dist_share_on(vol.comm)) /* the ranks wait for (d): rank 0 keeps it */
            s = sg_keep_out(ctx, &res, vol.comm);
    } else if (s == VOX_OK) {
        struct sg_run r = {.ctx = ctx, .store = &store, .io = &io, .sink = opt->sink, .map = map};
        memcpy(r.dims, vol.dims, sizeof r.dims);
        s = sg_emit(&r, &res, opt->chunk, vol.comm, vol.kept);
    }
    if (s == VOX_OK)
        vox_progress_finish(io.bar);
    else
        vox_progress_drop(io.bar);
    dist_bfile_close(&store.f);
    dist_store_fini(ctx, &store);
    dist_faces_fini(ctx, &faces);
    dist_bfile_close(&qf);
    vox_free(ctx, map);
    vox_free(ctx, (void *)vol.kept);
    if (opt->stats) {
        opt->stats->bytes_read = io.bytes_read;
        opt->stats->bytes_written = io.bytes_written;
        opt->stats->tasks_reused = jr.reused;
        opt->stats->tasks_run = jr.ran;
        opt->stats->face_records = nrec;
        opt->stats->face_record_bytes = rec_bytes;
    }
    if (journal)
        dist_journal_close(ctx, &jr);
    if (journal && s == VOX_OK)
        dist_journal_remove(opt->workdir);
    if (opt->workdir && s == VOX_OK)
        sg_workdir_done(opt);
    s = dist_comm_stop(ctx, vol.comm, s); /* the other ranks may wait for rank 0 */
    if (s != VOX_OK) {
        vox_seg_result_fini(ctx, &res);
        return s;
    }
    *res_out = res;
    return VOX_OK;
}
