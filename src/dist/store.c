/*
 * dist/store.c: what the chunked stages read and write box by box: the affinities of a box
 * (from a whole tensor or from a volume on disk, quantized as vox_seg_quantize does), the
 * label store between stages (whole in memory, or a file), windows of labels for stages b and
 * c, and the per-level statistics.
 *
 * Files are chunk-blocked (struct dist_bfile): every chunk's record is contiguous, so writing
 * a chunk is one pwrite and reading a box (a chunk plus a margin) one pread per chunk it
 * meets and channel, of the byte range that holds the part wanted (a whole chunk's box: its
 * record, read in place). Any thread may use them; memory stays at one box. A file store
 * never holds a whole volume in memory; its reads may map fragment labels to basins per chunk
 * (struct dist_store's cmap), and then a chunk whose fragment labels all fit in 16 bits is
 * written as runs along x (DIST_REC_RUNS, store_runs: about a quarter of the u16 bytes for
 * watershed fragments, 14 runs a 128-voxel row) or, where runs would not be smaller, as u16;
 * one with more fragments (a 256^3 chunk has ~200 K) as wide runs (DIST_REC_RUNS32, 8 bytes
 * a run) where those are smaller than u32; the slot keeps room for u32. Fewer bytes matter more
 * than they seem: a page of a file written for the first time costs far more than a copy (on the
 * 2-vCPU VMs here, 0.4 GB/s for fresh page-cache pages against 6-20 GB/s for pages written before).
 * Reads of a source volume go through vox/io.h, which is not thread-safe: they hold the io lock,
 * except those of a volume read in place (vox_volume_box_direct: a .npy), which run side by side.
 *
 * Also the workers' scratch (struct dist_scratch): buffers a chunk task reuses from chunk to
 * chunk, since a block freshly mapped for each would be faulted in and zeroed every time.
 */
#include "dist_internal.h"
#include "dist/diff.h"
#include "vox/io.h"
#include "seg/seg_internal.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

/* How a label store's chunk records are read: values through cmap[chunk] (NULL: as they
 * are), then through `then` (NULL: none), chunk i's record encoded as narrow[i] says (enum
 * dist_rec; narrow NULL: all u32). */
struct bfile_map {
    uint32_t *const *cmap;
    const uint8_t *narrow;
    const uint32_t *then;
};

/* v through map, then through then (either NULL: none). */
static inline uint32_t lm_val(const uint32_t *map, const uint32_t *then, uint32_t v)
{
    v = map ? map[v] : v;
    return then ? then[v] : v;
}

static enum vox_status bfile_read(struct vox_ctx *ctx, const struct dist_bfile *f,
                                  const struct dist_box *b, uint8_t *dst, struct dist_io *io,
                                  struct dist_scratch *sc, const struct bfile_map *lm);
static enum vox_status bfile_write(struct vox_ctx *ctx, const struct dist_bfile *f,
                                   const struct dist_box *b, const uint8_t *src, size_t bytes,
                                   struct dist_io *io);

/* A contiguous (3, box) u8 tensor over data: a view when data is a scratch slot. */
static void q_view(struct vox_tensor *t, void *data, const int64_t shape[4])
{
    *t = (struct vox_tensor){.dtype = VOX_U8, .rank = 4, .data = data};
    for (int a = 3, st = 1; a >= 0; st *= (int)shape[a], a--) {
        t->shape[a] = shape[a];
        t->strides[a] = st;
    }
}

static enum vox_status qfile_read(struct vox_ctx *ctx, const struct dist_vol *v,
                                  const int64_t lo[3], const int64_t hi[3], struct dist_scratch *sc,
                                  struct vox_tensor *q_out)
{
    struct dist_box b;
    int64_t shape[4] = {3, 0, 0, 0};
    for (int a = 0; a < 3; a++) {
        b.lo[a] = lo[a];
        b.hi[a] = hi[a];
        shape[a + 1] = hi[a] - lo[a];
    }
    struct vox_tensor t = {0};
    enum vox_status s = VOX_OK;
    if (sc) {
        void *p = dist_scratch_get(ctx, sc, DIST_SC_Q,
                                   (size_t)(shape[0] * shape[1] * shape[2] * shape[3]));
        if (!p)
            return VOX_OUT_OF_MEMORY;
        q_view(&t, p, shape);
    } else {
        s = vox_tensor_alloc(ctx, &t, VOX_U8, 4, shape);
    }
    if (s == VOX_OK)
        s = bfile_read(ctx, v->qf, &b, t.data, v->io, sc, NULL);
    if (s != VOX_OK) {
        vox_tensor_free(ctx, &t);
        return s;
    }
    *q_out = t;
    return VOX_OK;
}

enum vox_status dist_qfile_write(struct vox_ctx *ctx, const struct dist_vol *v,
                                 const struct dist_box *b, const uint8_t *q)
{
    size_t n = (size_t)((b->hi[0] - b->lo[0]) * (b->hi[1] - b->lo[1]) * (b->hi[2] - b->lo[2]));
    return bfile_write(ctx, v->qf, b, q, n * (size_t)v->qf->nch * v->qf->esz, v->io);
}

enum vox_status dist_read_q(struct vox_ctx *ctx, const struct dist_vol *v, const int64_t lo[3],
                            const int64_t hi[3], struct dist_scratch *sc, struct vox_tensor *q_out)
{
    int64_t l4[4] = {0, lo[0], lo[1], lo[2]}, h4[4] = {3, hi[0], hi[1], hi[2]};
    struct vox_tensor t = {0};
    enum vox_status s;
    if (v->qf)
        return qfile_read(ctx, v, lo, hi, sc, q_out);
    if (v->aff) {
        s = vox_tensor_view_box(ctx, v->aff, l4, h4, &t);
        return s == VOX_OK ? vox_seg_quantize(ctx, &t, q_out) : s;
    }
    int64_t shape[4] = {3, hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]};
    enum vox_dtype dt = vox_volume_info(v->src)->dtype;
    if (sc && dt == VOX_U8) { /* read as it is into the scratch */
        void *p = dist_scratch_get(ctx, sc, DIST_SC_Q,
                                   (size_t)(shape[0] * shape[1] * shape[2] * shape[3]));
        if (!p)
            return VOX_OUT_OF_MEMORY;
        q_view(&t, p, shape);
    } else {
        s = vox_tensor_alloc(ctx, &t, dt, 4, shape);
        if (s != VOX_OK)
            return s;
    }
    bool lock = !vox_volume_box_direct(v->src); /* a .npy is read side by side */
    if (lock)
        pthread_mutex_lock(&v->io->mu);
    s = vox_volume_read(ctx, v->src, l4, h4, &t);
    if (!lock)
        pthread_mutex_lock(&v->io->mu);
    v->io->bytes_read += (int64_t)vox_tensor_nbytes(&t);
    pthread_mutex_unlock(&v->io->mu);
    if (s == VOX_OK && t.dtype == VOX_U8) {
        *q_out = t;
        return VOX_OK;
    }
    if (s == VOX_OK)
        s = vox_seg_quantize(ctx, &t, q_out);
    vox_tensor_free(ctx, &t);
    return s;
}

int64_t dist_bfile_init(struct dist_bfile *bf, const int64_t dims[3], const int64_t chunk[3],
                        int nch, size_t esz, int *nfd_io)
{
    int64_t n = 1, cv = 1;
    for (int a = 0; a < 3; a++) {
        bf->dims[a] = dims[a];
        bf->chunk[a] = chunk[a] < dims[a] ? chunk[a] : dims[a];
        bf->grid[a] = (dims[a] + bf->chunk[a] - 1) / bf->chunk[a];
        n *= bf->grid[a];
        cv *= bf->chunk[a];
    }
    int k = *nfd_io < 1 ? 1 : *nfd_io > DIST_BFILE_FILES ? DIST_BFILE_FILES : *nfd_io;
    *nfd_io = n < k ? (int)n : k;
    for (int f = 0; f < DIST_BFILE_FILES; f++)
        bf->fd[f] = -1;
    bf->nfd = 0; /* the caller opens *nfd_io files */
    bf->nch = nch;
    bf->esz = esz;
    bf->slot = (size_t)(nch * cv) * esz;
    return (n + *nfd_io - 1) / *nfd_io * (int64_t)bf->slot;
}

void dist_bfile_close(struct dist_bfile *bf)
{
    for (int f = 0; f < bf->nfd; f++)
        if (bf->fd[f] >= 0)
            close(bf->fd[f]);
    bf->nfd = 0;
}

/* Chunk g's box, and its index. */
static int64_t bfile_chunk(const struct dist_bfile *f, const int64_t g[3], struct dist_box *cb)
{
    for (int a = 0; a < 3; a++) {
        cb->lo[a] = g[a] * f->chunk[a];
        cb->hi[a] = cb->lo[a] + f->chunk[a] < f->dims[a] ? cb->lo[a] + f->chunk[a] : f->dims[a];
    }
    return (g[0] * f->grid[1] + g[1]) * f->grid[2] + g[2];
}

/* The file (*fd_out) and byte offset of chunk i's record. */
static off_t bfile_at(const struct dist_bfile *f, int64_t i, int *fd_out)
{
    *fd_out = f->fd[i % f->nfd];
    return (off_t)(i / f->nfd * (int64_t)f->slot);
}

static enum vox_status bfile_fail(struct vox_ctx *ctx, const struct dist_bfile *f, bool wr,
                                  size_t n, off_t off, ssize_t got)
{
    return vox_fail(ctx, VOX_IO, "chunked segmentation: %s file: %s of %zu bytes at %lld: %s",
                    f->esz == 1 ? "affinity" : "label", wr ? "write" : "read", n, (long long)off,
                    got < 0 ? strerror(errno) : "short transfer");
}

static void bfile_count(struct dist_io *io, bool wr, int64_t n)
{
    if (!io)
        return;
    pthread_mutex_lock(&io->mu);
    *(wr ? &io->bytes_written : &io->bytes_read) += n;
    pthread_mutex_unlock(&io->mu);
}

/* n labels of a record (u16 when narrow, else u32) into o, through map and then. */
static void bfile_map_row(uint32_t *o, const uint8_t *in, int64_t n, const uint32_t *map,
                          const uint32_t *then, bool narrow)
{
    if (narrow) {
        const uint16_t *s = (const uint16_t *)(const void *)in;
        for (int64_t k = 0; map && !then && k < n; k++)
            o[k] = map[s[k]];
        for (int64_t k = 0; !map && !then && k < n; k++)
            o[k] = s[k];
        for (int64_t k = 0; then && k < n; k++)
            o[k] = lm_val(map, then, s[k]);
    } else {
        const uint32_t *s = (const uint32_t *)(const void *)in;
        for (int64_t k = 0; k < n; k++)
            o[k] = lm_val(map, then, s[k]);
    }
}

/* The part i (global box) of chunk record cb at off, every channel, into dst (box b); map and
 * then: u32 labels through them, narrow: the record holds them as u16. */
static enum vox_status bfile_part(struct vox_ctx *ctx, const struct dist_bfile *f, int fd,
                                  off_t off, const struct dist_box *cb, const struct dist_box *i,
                                  const struct dist_box *b, uint8_t *dst, uint8_t *tmp,
                                  const uint32_t *map, const uint32_t *then, bool narrow,
                                  int64_t *nread)
{
    const int64_t cs[3] = {cb->hi[0] - cb->lo[0], cb->hi[1] - cb->lo[1], cb->hi[2] - cb->lo[2]};
    const int64_t bs[3] = {b->hi[0] - b->lo[0], b->hi[1] - b->lo[1], b->hi[2] - b->lo[2]};
    const size_t e = narrow ? 2 : f->esz, row = (size_t)(i->hi[2] - i->lo[2]) * e;
    const int64_t first =
        ((i->lo[0] - cb->lo[0]) * cs[1] + i->lo[1] - cb->lo[1]) * cs[2] + i->lo[2] - cb->lo[2];
    const int64_t last = ((i->hi[0] - 1 - cb->lo[0]) * cs[1] + i->hi[1] - 1 - cb->lo[1]) * cs[2] +
                         i->hi[2] - cb->lo[2];
    const size_t n = (size_t)(last - first) * e;
    for (int c = 0; c < f->nch; c++) {
        off_t at = off + (off_t)((size_t)(c * cs[0] * cs[1] * cs[2] + first) * e);
        ssize_t got = pread(fd, tmp, n, at);
        if (got != (ssize_t)n)
            return bfile_fail(ctx, f, false, n, at, got);
        *nread += (int64_t)n;
        uint8_t *d = dst + (size_t)(c * bs[0] * bs[1] * bs[2]) * f->esz;
        for (int64_t z = i->lo[0]; z < i->hi[0]; z++)
            for (int64_t y = i->lo[1]; y < i->hi[1]; y++) {
                int64_t s = ((z - cb->lo[0]) * cs[1] + y - cb->lo[1]) * cs[2] + i->lo[2] -
                            cb->lo[2] - first;
                int64_t t = ((z - b->lo[0]) * bs[1] + y - b->lo[1]) * bs[2] + i->lo[2] - b->lo[2];
                if (map || then || narrow) /* u32 labels (through the chunk's map) */
                    bfile_map_row((uint32_t *)(void *)d + t, tmp + (size_t)s * e,
                                  i->hi[2] - i->lo[2], map, then, narrow);
                else
                    memcpy(d + (size_t)t * e, tmp + (size_t)s * e, row);
            }
    }
    return VOX_OK;
}

/* The part i of the narrow label record cb at off (encoded as enc), when it is the record's
 * first or last column along x: from the copy of that column the record keeps (store_narrow,
 * store_runs), through map, into dst (box b). VOX_UNSUPPORTED (nothing read, no message) for
 * other parts. */
static enum vox_status bfile_column(struct vox_ctx *ctx, const struct dist_bfile *f, int fd,
                                    off_t off, const struct dist_box *cb, const struct dist_box *i,
                                    const struct dist_box *b, uint32_t *dst, uint8_t *tmp,
                                    const uint32_t *map, const uint32_t *then, int enc,
                                    int64_t *nread)
{
    const int64_t cs[3] = {cb->hi[0] - cb->lo[0], cb->hi[1] - cb->lo[1], cb->hi[2] - cb->lo[2]};
    const int64_t bs[3] = {b->hi[0] - b->lo[0], b->hi[1] - b->lo[1], b->hi[2] - b->lo[2]};
    const bool lo = i->lo[2] == cb->lo[2];
    if (cs[2] < 2 || i->hi[2] - i->lo[2] != 1 || (!lo && i->lo[2] != cb->hi[2] - 1))
        return VOX_UNSUPPORTED;
    const int64_t nr = cs[0] * cs[1], first = (i->lo[0] - cb->lo[0]) * cs[1] + i->lo[1] - cb->lo[1];
    const int64_t last = (i->hi[0] - 1 - cb->lo[0]) * cs[1] + i->hi[1] - cb->lo[1];
    const int64_t es = enc == DIST_REC_RUNS32 ? 4 : 2; /* a column value's bytes */
    const size_t n = (size_t)((last - first) * es);
    const int64_t col0 = enc == DIST_REC_U16 ? nr * cs[2] : 0; /* in values */
    const off_t at = off + (off_t)((col0 + (lo ? 0 : nr) + first) * es);
    ssize_t got = pread(fd, tmp, n, at);
    if (got != (ssize_t)n)
        return bfile_fail(ctx, f, false, n, at, got);
    *nread += (int64_t)n;
    const uint16_t *col = (const uint16_t *)(const void *)tmp;
    const uint32_t *col32 = (const uint32_t *)(const void *)tmp;
    for (int64_t z = i->lo[0]; z < i->hi[0]; z++)
        for (int64_t y = i->lo[1]; y < i->hi[1]; y++) {
            const int64_t k = (z - cb->lo[0]) * cs[1] + y - cb->lo[1] - first;
            const uint32_t v = es == 4 ? col32[k] : col[k];
            dst[((z - b->lo[0]) * bs[1] + y - b->lo[1]) * bs[2] + i->lo[2] - b->lo[2]] =
                lm_val(map, then, v);
        }
    return VOX_OK;
}

/* d[x, e) = v, 8 at a time while [x, x + 8) is before x1: it may write past e, where the
 * row's next runs (decoded after, in order) write again, so a run of up to 8 voxels is one
 * store and no loop (runs are ~9 voxels long: a per-voxel loop mispredicts at every end). */
static inline void runs_fill(uint32_t *d, int64_t x, int64_t e, int64_t x1, uint32_t v)
{
    typedef uint32_t v8 __attribute__((vector_size(32)));
    const v8 b = {v, v, v, v, v, v, v, v};
    for (; x < e && x + 8 <= x1; x += 8)
        memcpy(d + x, &b, sizeof b);
    for (; x < e; x++)
        d[x] = v;
}

/* The part i of the run-length label record cb at off (store_runs; wide: DIST_REC_RUNS32),
 * through map and then, into dst (box b): the index entries of the rows i spans, then their
 * runs, two reads. */
static enum vox_status bfile_runs_part(struct vox_ctx *ctx, const struct dist_bfile *f, int fd,
                                       off_t off, const struct dist_box *cb,
                                       const struct dist_box *i, const struct dist_box *b,
                                       uint32_t *dst, uint8_t *tmp, const uint32_t *map,
                                       const uint32_t *then, bool wide, int64_t *nread)
{
    const int64_t cs[3] = {cb->hi[0] - cb->lo[0], cb->hi[1] - cb->lo[1], cb->hi[2] - cb->lo[2]};
    const int64_t bs[3] = {b->hi[0] - b->lo[0], b->hi[1] - b->lo[1], b->hi[2] - b->lo[2]};
    const int64_t nr = cs[0] * cs[1];
    const int64_t r0 = (i->lo[0] - cb->lo[0]) * cs[1] + i->lo[1] - cb->lo[1];
    const int64_t r1 = (i->hi[0] - 1 - cb->lo[0]) * cs[1] + i->hi[1] - cb->lo[1];
    const int64_t cols = nr * (wide ? 8 : 4), rb = wide ? 8 : 4; /* column bytes, run bytes */
    const off_t idx_at = off + (off_t)(cols + r0 * 4), runs_at = off + (off_t)(cols + nr * 4 + 4);
    uint32_t *idx = (uint32_t *)(void *)tmp;
    size_t n = (size_t)(r1 - r0 + 1) * 4;
    ssize_t got = pread(fd, idx, n, idx_at);
    if (got != (ssize_t)n)
        return bfile_fail(ctx, f, false, n, idx_at, got);
    *nread += (int64_t)n;
    const uint32_t first = idx[0], *run = idx + (r1 - r0 + 1);
    if (idx[r1 - r0] < first ||
        (size_t)((idx[r1 - r0] - first) * rb) + n > f->slot / (size_t)f->nch)
        return vox_fail(ctx, VOX_IO, "chunked segmentation: label file: a damaged record index");
    n = (size_t)((idx[r1 - r0] - first) * rb);
    got = n ? pread(fd, (void *)run, n, runs_at + (off_t)first * rb) : 0;
    if (got != (ssize_t)n)
        return bfile_fail(ctx, f, false, n, runs_at + (off_t)first * rb, got);
    *nread += (int64_t)n;
    const int64_t x0 = i->lo[2] - cb->lo[2], x1 = i->hi[2] - cb->lo[2];
    for (int64_t z = i->lo[0]; z < i->hi[0]; z++)
        for (int64_t y = i->lo[1]; y < i->hi[1]; y++) {
            const int64_t r = (z - cb->lo[0]) * cs[1] + y - cb->lo[1] - r0;
            if (idx[r + 1] < idx[r] || idx[r + 1] > idx[r1 - r0])
                return vox_fail(ctx, VOX_IO, "chunked segmentation: label file: a damaged row");
            uint32_t *d =
                dst + ((z - b->lo[0]) * bs[1] + y - b->lo[1]) * bs[2] + i->lo[2] - b->lo[2] - x0;
            int64_t x = 0;
            for (uint32_t k = idx[r] - first; k < idx[r + 1] - first && x < x1; k++) {
                const int64_t e = wide ? run[2 * k + 1] : run[k] >> 16;
                const uint32_t v = lm_val(map, then, wide ? run[2 * k] : run[k] & 0xffff);
                if (e <= x || e > cs[2])
                    return vox_fail(ctx, VOX_IO, "chunked segmentation: label file: a damaged run");
                runs_fill(d, x < x0 ? x0 : x, e < x1 ? e : x1, x1, v);
                x = e;
            }
            if (x < x1)
                return vox_fail(ctx, VOX_IO, "chunked segmentation: label file: a short row");
        }
    return VOX_OK;
}

static enum vox_status bfile_read(struct vox_ctx *ctx, const struct dist_bfile *f,
                                  const struct dist_box *b, uint8_t *dst, struct dist_io *io,
                                  struct dist_scratch *sc, const struct bfile_map *lm)
{
    int64_t g0[3], g1[3], g[3], nread = 0;
    for (int a = 0; a < 3; a++) {
        g0[a] = b->lo[a] / f->chunk[a];
        g1[a] = (b->hi[a] - 1) / f->chunk[a] + 1;
    }
    struct dist_box one;
    int fd0;
    const int64_t i0 = bfile_chunk(f, g0, &one);
    const off_t at = bfile_at(f, i0, &fd0);
    const uint32_t *map0 = lm && lm->cmap ? lm->cmap[i0] : NULL;
    const int enc0 = lm && lm->narrow ? lm->narrow[i0] : DIST_REC_U32;
    if (memcmp(&one, b, sizeof one) == 0 &&
        enc0 == DIST_REC_U32) { /* one whole chunk: its record as is */
        size_t n =
            (size_t)((one.hi[0] - one.lo[0]) * (one.hi[1] - one.lo[1]) * (one.hi[2] - one.lo[2])) *
            (size_t)f->nch * f->esz;
        ssize_t got = pread(fd0, dst, n, at);
        if (got != (ssize_t)n)
            return bfile_fail(ctx, f, false, n, at, got);
        bfile_count(io, false, (int64_t)n);
        uint32_t *l = (uint32_t *)(void *)dst;
        const uint32_t *then = lm ? lm->then : NULL;
        for (size_t k = 0; (map0 || then) && k < n / 4; k++)
            l[k] = lm_val(map0, then, l[k]);
        return VOX_OK;
    }
    size_t tn = f->slot / (size_t)f->nch;
    uint8_t *tmp = sc ? dist_scratch_get(ctx, sc, DIST_SC_TMP, tn) : vox_alloc(ctx, tn);
    if (!tmp)
        return VOX_OUT_OF_MEMORY;
    enum vox_status s = VOX_OK;
    for (g[0] = g0[0]; g[0] < g1[0] && s == VOX_OK; g[0]++)
        for (g[1] = g0[1]; g[1] < g1[1] && s == VOX_OK; g[1]++)
            for (g[2] = g0[2]; g[2] < g1[2] && s == VOX_OK; g[2]++) {
                struct dist_box cb, i;
                int fd;
                const int64_t ci = bfile_chunk(f, g, &cb);
                const off_t off = bfile_at(f, ci, &fd);
                const uint32_t *map = lm && lm->cmap ? lm->cmap[ci] : NULL;
                const uint32_t *then = lm ? lm->then : NULL;
                const int enc = lm && lm->narrow ? lm->narrow[ci] : DIST_REC_U32;
                for (int a = 0; a < 3; a++) {
                    i.lo[a] = cb.lo[a] > b->lo[a] ? cb.lo[a] : b->lo[a];
                    i.hi[a] = cb.hi[a] < b->hi[a] ? cb.hi[a] : b->hi[a];
                }
                if (enc != DIST_REC_U32) { /* a neighbour's column along x: its copy */
                    s = bfile_column(ctx, f, fd, off, &cb, &i, b, (uint32_t *)(void *)dst, tmp, map,
                                     then, enc, &nread);
                    if (s != VOX_UNSUPPORTED)
                        continue;
                    s = VOX_OK;
                }
                if (enc == DIST_REC_RUNS || enc == DIST_REC_RUNS32) {
                    s = bfile_runs_part(ctx, f, fd, off, &cb, &i, b, (uint32_t *)(void *)dst, tmp,
                                        map, then, enc == DIST_REC_RUNS32, &nread);
                    continue;
                }
                const bool narrow = enc == DIST_REC_U16;
                /* A thin slab in y (a -y/+y neighbour's rows): plane by plane, so as not to
                 * read the planes' other rows. */
                bool thin = 2 * (i.hi[1] - i.lo[1]) < cb.hi[1] - cb.lo[1];
                struct dist_box p = i;
                for (p.lo[0] = i.lo[0]; thin && p.lo[0] < i.hi[0] && s == VOX_OK; p.lo[0]++) {
                    p.hi[0] = p.lo[0] + 1;
                    s = bfile_part(ctx, f, fd, off, &cb, &p, b, dst, tmp, map, then, narrow,
                                   &nread);
                }
                if (!thin)
                    s = bfile_part(ctx, f, fd, off, &cb, &i, b, dst, tmp, map, then, narrow,
                                   &nread);
            }
    if (!sc)
        vox_free(ctx, tmp);
    bfile_count(io, false, nread);
    return s;
}

enum vox_status dist_bfile_hash(struct vox_ctx *ctx, const struct dist_bfile *bf, int64_t i,
                                uint64_t *h_out)
{
    int64_t g[3] = {i / (bf->grid[1] * bf->grid[2]), (i / bf->grid[2]) % bf->grid[1],
                    i % bf->grid[2]};
    struct dist_box cb;
    int fd;
    off_t off = bfile_at(bf, bfile_chunk(bf, g, &cb), &fd);
    size_t n = (size_t)((cb.hi[0] - cb.lo[0]) * (cb.hi[1] - cb.lo[1]) * (cb.hi[2] - cb.lo[2])) *
               (size_t)bf->nch * bf->esz;
    uint8_t *b = vox_alloc(ctx, n);
    if (!b)
        return VOX_OUT_OF_MEMORY;
    *h_out = pread(fd, b, n, off) == (ssize_t)n ? dist_hash(b, n, 0) : 0;
    vox_free(ctx, b);
    return VOX_OK;
}

/* Writes the record of the chunk whose box is b: `bytes` (at most a slot) from src. */
static enum vox_status bfile_write(struct vox_ctx *ctx, const struct dist_bfile *f,
                                   const struct dist_box *b, const uint8_t *src, size_t bytes,
                                   struct dist_io *io)
{
    int64_t g[3];
    for (int a = 0; a < 3; a++)
        g[a] = b->lo[a] / f->chunk[a];
    struct dist_box cb;
    int fd;
    off_t off = bfile_at(f, bfile_chunk(f, g, &cb), &fd);
    if (memcmp(&cb, b, sizeof cb) != 0)
        return vox_fail(ctx, VOX_INTERNAL,
                        "chunked segmentation: a write to a blocked file "
                        "that is not one chunk's box");
    size_t n = bytes;
    ssize_t got = pwrite(fd, src, n, off);
    if (got != (ssize_t)n)
        return bfile_fail(ctx, f, true, n, off, got);
    bfile_count(io, true, (int64_t)n);
    return VOX_OK;
}

static void mem_rows(struct dist_store *st, const struct dist_box *b, uint32_t *buf, bool wr)
{
    const int64_t nx = b->hi[2] - b->lo[2];
    int64_t k = 0;
    for (int64_t z = b->lo[0]; z < b->hi[0]; z++)
        for (int64_t y = b->lo[1]; y < b->hi[1]; y++, k += nx) {
            uint32_t *m = st->mem + (z * st->dims[1] + y) * st->dims[2] + b->lo[2];
            memcpy(wr ? m : buf + k, wr ? buf + k : m, (size_t)nx * sizeof *buf);
        }
}

enum vox_status dist_store_read_map(struct vox_ctx *ctx, struct dist_store *st,
                                    const struct dist_box *b, uint32_t *dst,
                                    struct dist_scratch *sc, const uint32_t *then)
{
    if (st->mem) {
        mem_rows(st, b, dst, false);
        const int64_t n = (b->hi[0] - b->lo[0]) * (b->hi[1] - b->lo[1]) * (b->hi[2] - b->lo[2]);
        for (int64_t k = 0; then && k < n; k++)
            dst[k] = then[dst[k]];
        return VOX_OK;
    }
    const struct bfile_map lm = {st->cmap, st->narrow, then};
    return bfile_read(ctx, &st->f, b, (uint8_t *)dst, st->io, sc, &lm);
}

enum vox_status dist_store_read(struct vox_ctx *ctx, struct dist_store *st,
                                const struct dist_box *b, uint32_t *dst, struct dist_scratch *sc)
{
    return dist_store_read_map(ctx, st, b, dst, sc, NULL);
}

/* Run-length record of box b (nr rows of nx, nx < 2^16, values < 2^16), DIST_REC_RUNS:
 *   u16 col[2 nr]    the first and the last column along x, in (z, y) order (window reads of
 *                    a neighbour take these instead of the record);
 *   u32 idx[nr + 1]  row r's runs are run[idx[r] .. idx[r + 1]);
 *   u32 run[]        value | end << 16, end the x after the run.
 * wide (DIST_REC_RUNS32, any values and rows): u32 col[2 nr], u32 idx[nr + 1], then a run is
 * two u32, value and end. Written into p (room for `cap` bytes); its length, or 0 when a
 * value does not fit or the record would take `cap` bytes or more. */
static size_t store_runs(const struct dist_box *b, const uint32_t *src, uint8_t *p, size_t cap,
                         bool wide, dist_diff_fn diff, uint32_t *ends)
{
    const int64_t nx = b->hi[2] - b->lo[2], nr = (b->hi[0] - b->lo[0]) * (b->hi[1] - b->lo[1]);
    const size_t cols = (size_t)nr * (wide ? 8 : 4), head = cols + (size_t)nr * 4 + 4;
    const size_t rw = wide ? 2 : 1; /* u32 words a run */
    const uint32_t top = wide ? UINT32_MAX : UINT16_MAX;
    if ((!wide && nx >= 1 << 16) || nx > UINT32_MAX || cap <= head)
        return 0;
    uint16_t *col = (uint16_t *)(void *)p;
    uint32_t *col32 = (uint32_t *)(void *)p;
    uint32_t *idx = (uint32_t *)(void *)(p + cols), *run = idx + nr + 1;
    const size_t room = (cap - head) / (4 * rw);
    size_t k = 0;
    for (int64_t r = 0; r < nr; r++) {
        const uint32_t *l = src + r * nx;
        idx[r] = (uint32_t)k;
        if (wide) {
            col32[r] = l[0];
            col32[nr + r] = l[nx - 1];
        } else if ((l[0] | l[nx - 1]) > UINT16_MAX) {
            return 0;
        } else {
            col[r] = (uint16_t)l[0];
            col[nr + r] = (uint16_t)l[nx - 1];
        }
        const int64_t nd = diff(l, l + 1, nx - 1, ends, false); /* a run ends after each */
        if (k + (size_t)nd + 1 > room)
            return 0;
        for (int64_t d = 0, x = 0; d <= nd; d++) {
            const int64_t e = d < nd ? (int64_t)ends[d] + 1 : nx;
            if (l[x] > top)
                return 0;
            if (wide) {
                run[2 * k] = l[x];
                run[2 * k + 1] = (uint32_t)e;
            } else {
                run[k] = l[x] | (uint32_t)e << 16;
            }
            k++;
            x = e;
        }
    }
    idx[nr] = (uint32_t)k;
    return head + k * 4 * rw;
}

/* The labels of box b (n) as a narrow record in sc's DIST_SC_TMP slot (or allocated: *own):
 * runs (store_runs) where smaller, else u16 values, then, when the box is 2 voxels wide or
 * more, copies of its first and last columns along x ((z, y) order), which window reads of a
 * neighbour take instead of reading across the whole record; with a value past 16 bits, wide
 * runs where smaller than u32. NULL when none of these is smaller than u32 or memory is
 * short; *len_out: its bytes, *enc_out its encoding. */
static void *store_narrow(struct vox_ctx *ctx, const struct dist_box *b, const uint32_t *src,
                          struct dist_scratch *sc, uint16_t **own, size_t *len_out, int *enc_out)
{
    const int64_t nx = b->hi[2] - b->lo[2], nr = (b->hi[0] - b->lo[0]) * (b->hi[1] - b->lo[1]);
    const int64_t n = nr * nx, len = n + (nx > 1 ? 2 * nr : 0);
    /* room for u16 values and columns, or for wide runs smaller than u32 */
    const size_t room = (size_t)(len > 2 * n ? len : 2 * n) * sizeof(uint16_t);
    *own = NULL;
    uint16_t *p = sc ? dist_scratch_get(ctx, sc, DIST_SC_TMP, room) : (*own = vox_alloc(ctx, room));
    /* the positions where a row's runs end (dist_diff) */
    const size_t eb = (size_t)(nx + 16) * sizeof(uint32_t);
    uint32_t *ends = sc ? dist_scratch_get(ctx, sc, DIST_SC_S2, eb) : vox_alloc(ctx, eb);
    if (!p || !ends) {
        if (!sc)
            vox_free(ctx, ends);
        return NULL;
    }
    const dist_diff_fn diff = dist_diff_pick(ctx);
    size_t runs = store_runs(b, src, (uint8_t *)p, (size_t)len * sizeof *p, false, diff, ends);
    int enc = DIST_REC_RUNS;
    uint32_t top = 0;
    if (!runs) {
        for (int64_t k = 0; k < n; k++)
            top |= src[k];
        if (top > UINT16_MAX) {
            runs = store_runs(b, src, (uint8_t *)p, (size_t)n * 4, true, diff, ends);
            enc = DIST_REC_RUNS32;
        }
    }
    if (!sc)
        vox_free(ctx, ends);
    if (runs) {
        *len_out = runs;
        *enc_out = enc;
        return p;
    }
    if (top > UINT16_MAX)
        return NULL;
    for (int64_t k = 0; k < n; k++)
        p[k] = (uint16_t)src[k];
    for (int64_t r = 0; len > n && r < nr; r++) {
        p[n + r] = p[r * nx];
        p[n + nr + r] = p[r * nx + nx - 1];
    }
    *len_out = (size_t)len * sizeof *p;
    *enc_out = DIST_REC_U16;
    return p;
}

enum vox_status dist_store_write(struct vox_ctx *ctx, struct dist_store *st,
                                 const struct dist_box *b, const uint32_t *src,
                                 struct dist_scratch *sc)
{
    if (st->mem) {
        mem_rows(st, b, (uint32_t *)src, true);
        return VOX_OK;
    }
    int64_t g[3], n = 1;
    for (int a = 0; a < 3; a++) {
        g[a] = b->lo[a] / st->f.chunk[a];
        n *= b->hi[a] - b->lo[a];
    }
    size_t len = (size_t)n * st->f.esz;
    int enc = DIST_REC_U32;
    uint16_t *own = NULL;
    void *p = st->narrow ? store_narrow(ctx, b, src, sc, &own, &len, &enc) : NULL;
    enum vox_status s =
        bfile_write(ctx, &st->f, b, p ? (const uint8_t *)p : (const uint8_t *)src, len, st->io);
    if (s == VOX_OK && st->narrow)
        st->narrow[(g[0] * st->f.grid[1] + g[1]) * st->f.grid[2] + g[2]] = (uint8_t)enc;
    vox_free(ctx, own);
    return s;
}

enum vox_status dist_win_load(struct vox_ctx *ctx, const struct dist_labels *l,
                              const int64_t dims[3], const struct dist_box *b,
                              struct dist_scratch *sc, struct dist_win *w)
{
    memset(w, 0, sizeof *w);
    if (l->given) { /* the window of the box rank 0 sent (dist/ranks.c) */
        *w = *l->given;
        w->own = NULL;
        return VOX_OK;
    }
    if (l->st && l->st->faces && l->st->cmap) /* rank 0 of a sharing comm: margins from faces */
        return dist_faces_window(ctx, l, dims, b, w);
    if (l->t) {
        w->p = l->t->data;
        memcpy(w->n, dims, sizeof w->n);
        return VOX_OK;
    }
    struct dist_box g;
    int64_t n = 1;
    for (int a = 0; a < 3; a++) {
        g.lo[a] = b->lo[a] > 0 ? b->lo[a] - 1 : 0;
        g.hi[a] = b->hi[a] < dims[a] ? b->hi[a] + 1 : dims[a];
        w->lo[a] = g.lo[a];
        w->n[a] = g.hi[a] - g.lo[a];
        n *= w->n[a];
    }
    uint32_t *p = sc ? dist_scratch_get(ctx, sc, DIST_SC_WIN, (size_t)n * sizeof *p)
                     : vox_alloc(ctx, (size_t)n * sizeof *p);
    if (!p)
        return VOX_OUT_OF_MEMORY;
    w->own = sc ? NULL : p;
    w->p = p;
    /* l->map applied as the records are decoded: once per run, not in a pass of its own */
    enum vox_status s = dist_store_read_map(ctx, l->st, &g, p, sc, l->map);
    if (s != VOX_OK)
        dist_win_fini(ctx, w);
    return s;
}

void dist_win_fini(struct vox_ctx *ctx, struct dist_win *w)
{
    vox_free(ctx, w->own);
    memset(w, 0, sizeof *w);
}

void dist_stats_level(struct vox_dist_stats *st, int stage, int64_t level, int64_t nodes,
                      int64_t frozen, int64_t edges, int64_t bytes, double seconds)
{
    if (!st || st->n == VOX_DIST_LEVELS_MAX)
        return;
    st->lv[st->n++] = (struct vox_dist_level){.stage = (enum vox_dist_stage)stage,
                                              .level = level,
                                              .nodes = nodes,
                                              .frozen = frozen,
                                              .edges = edges,
                                              .bytes = bytes,
                                              .seconds = seconds};
}

void dist_store_fini(struct vox_ctx *ctx, struct dist_store *st)
{
    vox_free(ctx, st->narrow);
    st->narrow = NULL;
    for (int64_t i = 0; st->cmap && i < st->ncmap; i++)
        vox_free(ctx, st->cmap[i]);
    for (int64_t i = 0; st->fmap && i < st->ncmap; i++)
        vox_free(ctx, st->fmap[i]);
    vox_free(ctx, st->cmap);
    vox_free(ctx, st->fmap);
    vox_free(ctx, st->cmap_n);
    st->cmap = st->fmap = NULL;
    st->cmap_n = NULL;
    st->ncmap = 0;
}

void *dist_scratch_get(struct vox_ctx *ctx, struct dist_scratch *sc, int slot, size_t bytes)
{
    if (sc->cap[slot] < bytes || !sc->p[slot]) {
        vox_free(ctx, sc->p[slot]);
        sc->cap[slot] = 0;
        sc->p[slot] = vox_alloc(ctx, bytes + 1);
        if (sc->p[slot])
            sc->cap[slot] = bytes;
    }
    return sc->p[slot];
}

void *dist_scratch_grow(struct vox_ctx *ctx, struct dist_scratch *sc, int slot, size_t bytes,
                        size_t keep)
{
    if (sc->p[slot] && sc->cap[slot] >= bytes)
        return sc->p[slot];
    size_t cap = sc->cap[slot] + sc->cap[slot] / 2;
    cap = cap > bytes ? cap : bytes;
    void *p = vox_alloc(ctx, cap + 1);
    if (!p)
        return NULL;
    if (keep && sc->p[slot])
        memcpy(p, sc->p[slot], keep);
    vox_free(ctx, sc->p[slot]);
    sc->p[slot] = p;
    sc->cap[slot] = cap;
    return p;
}

bool dist_scratch_push_grow(struct vox_ctx *ctx, struct dist_scratch *sc, int slot, void **arr,
                            int64_t *n, const void *x, size_t size)
{
    void *p = dist_scratch_grow(ctx, sc, slot, (size_t)(*n + 1) * size, (size_t)*n * size);
    if (!p)
        return false;
    *arr = p;
    memcpy((char *)p + (size_t)*n * size, x, size);
    (*n)++;
    return true;
}

struct dist_scratch *dist_scratch_new(struct vox_ctx *ctx)
{
    return vox_calloc(ctx, (size_t)vox_ctx_threads(ctx), sizeof(struct dist_scratch));
}

void dist_scratch_release_one(struct vox_ctx *ctx, struct dist_scratch *sc)
{
    for (int k = 0; k < DIST_SC_SLOTS; k++) {
        vox_free(ctx, sc->p[k]);
        sc->p[k] = NULL;
        sc->cap[k] = 0;
    }
}

void dist_scratch_release(struct vox_ctx *ctx, struct dist_scratch *sc)
{
    for (int t = 0; sc && t < vox_ctx_threads(ctx); t++)
        dist_scratch_release_one(ctx, &sc[t]);
}

void dist_scratch_free(struct vox_ctx *ctx, struct dist_scratch *sc)
{
    dist_scratch_release(ctx, sc);
    vox_free(ctx, sc);
}
