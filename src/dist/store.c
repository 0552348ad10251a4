/*
 * dist/store.c: what the chunked stages read and write box by box: the affinities of a box
 * (from a whole tensor or from a volume on disk, quantized as vox_seg_quantize does), the
 * label store between stages (whole in memory, or a file of u32 in C order read and written
 * with pread/pwrite, so any thread can use it and memory stays at one box), windows of
 * labels for stages b and c, and the per-level statistics.
 *
 * A file store never holds a whole volume in memory; only the box at hand is. Reads of a
 * source volume go through vox/io.h, which is not thread-safe: they hold the io lock.
 */
#include "dist_internal.h"
#include "vox/io.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

enum vox_status dist_read_q(struct vox_ctx *ctx, const struct dist_vol *v, const int64_t lo[3],
                            const int64_t hi[3], struct vox_tensor *q_out)
{
    int64_t l4[4] = {0, lo[0], lo[1], lo[2]}, h4[4] = {3, hi[0], hi[1], hi[2]};
    struct vox_tensor t = {0};
    enum vox_status s;
    if (v->aff) {
        s = vox_tensor_view_box(ctx, v->aff, l4, h4, &t);
        return s == VOX_OK ? vox_seg_quantize(ctx, &t, q_out) : s;
    }
    int64_t shape[4] = {3, hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]};
    s = vox_tensor_alloc(ctx, &t, vox_volume_info(v->src)->dtype, 4, shape);
    if (s != VOX_OK)
        return s;
    pthread_mutex_lock(&v->io->mu);
    s = vox_volume_read(ctx, v->src, l4, h4, &t);
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

/* pread/pwrite of every row of box b; rows are X-runs of the C-order file. */
static enum vox_status store_rows(struct vox_ctx *ctx, struct dist_store *st,
                                  const struct dist_box *b, uint32_t *buf, bool wr)
{
    const int64_t nx = b->hi[2] - b->lo[2];
    const size_t row = (size_t)nx * sizeof *buf;
    int64_t k = 0;
    for (int64_t z = b->lo[0]; z < b->hi[0]; z++)
        for (int64_t y = b->lo[1]; y < b->hi[1]; y++, k += nx) {
            off_t off = (off_t)(((z * st->dims[1] + y) * st->dims[2] + b->lo[2]) * 4);
            ssize_t n = wr ? pwrite(st->fd, buf + k, row, off) : pread(st->fd, buf + k, row, off);
            if (n != (ssize_t)row)
                return vox_fail(ctx, VOX_IO,
                                "chunked segmentation: label store: %s of "
                                "%zu bytes at %lld: %s",
                                wr ? "write" : "read", row, (long long)off,
                                n < 0 ? strerror(errno) : "short transfer");
        }
    if (st->io) {
        pthread_mutex_lock(&st->io->mu);
        *(wr ? &st->io->bytes_written : &st->io->bytes_read) += k * 4;
        pthread_mutex_unlock(&st->io->mu);
    }
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

enum vox_status dist_store_read(struct vox_ctx *ctx, struct dist_store *st,
                                const struct dist_box *b, uint32_t *dst)
{
    if (st->mem) {
        mem_rows(st, b, dst, false);
        return VOX_OK;
    }
    return store_rows(ctx, st, b, dst, false);
}

enum vox_status dist_store_write(struct vox_ctx *ctx, struct dist_store *st,
                                 const struct dist_box *b, const uint32_t *src)
{
    if (st->mem) {
        mem_rows(st, b, (uint32_t *)src, true);
        return VOX_OK;
    }
    return store_rows(ctx, st, b, (uint32_t *)src, true);
}

enum vox_status dist_win_load(struct vox_ctx *ctx, const struct dist_labels *l,
                              const int64_t dims[3], const struct dist_box *b, struct dist_win *w)
{
    memset(w, 0, sizeof *w);
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
    w->own = vox_alloc(ctx, (size_t)n * sizeof *w->own);
    if (!w->own)
        return VOX_OUT_OF_MEMORY;
    w->p = w->own;
    enum vox_status s = dist_store_read(ctx, l->st, &g, w->own);
    for (int64_t i = 0; s == VOX_OK && l->map && i < n; i++)
        w->own[i] = l->map[w->own[i]];
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
