/*
 * dist/ranks.c: the atomic chunks of stages (b) and (c) shared with the other ranks of a comm
 * that can send both ways (vox_dist_comm.send_to / recv_root).
 *
 * Rank 0 holds the label store, so it hands each chunk out: a rank gets one chunk at a time
 * (its labels over the box and a one-voxel margin, struct dist_win's layout), computes the
 * chunk's summary and sends it back; when rank 0 takes a summary it gives that rank its next
 * chunk, or the end. Rank r's chunks are r, r + size, ... (as in stage (a)). Rank 0 takes
 * summaries between its own chunks (dist_share_step, from its level-0 tasks on worker 0, the
 * thread that may use the comm) and the rest after them (dist_share_end); every send is
 * awaited by a receive that comes without waiting on the sender, so blocking sends cannot
 * deadlock, and the ranks compute while rank 0 does. Where a summary goes is its chunk
 * index, so the result does not depend on timing. Messages: key -2 the stage's setup, key i
 * chunk i, key -1 the end.
 */
#include "dist_internal.h"

#include <string.h>

enum { SHARE_END = -1, SHARE_SETUP = -2 };

bool dist_share_on(const struct vox_dist_comm *c)
{
    return c && c->size > 1 && c->send_to && c->recv_root;
}

/* Hands rank `to` chunk i (or the end when i is past the last). */
static enum vox_status share_give(struct vox_ctx *ctx, struct dist_share *s, int to, int64_t i)
{
    const struct vox_dist_comm *c = s->c;
    if (i >= s->nchunks)
        return c->send_to(c->arg, ctx, to, SHARE_END, "", 0);
    void *b = NULL;
    int64_t len = 0;
    enum vox_status st = s->give(s->arg, i, &b, &len);
    if (st == VOX_OK)
        st = c->send_to(c->arg, ctx, to, i, b, len);
    vox_free(ctx, b);
    return st;
}

enum vox_status dist_share_begin(struct vox_ctx *ctx, struct dist_share *s, const void *setup,
                                 int64_t setup_len)
{
    const struct vox_dist_comm *c = s->c;
    s->remote = s->nchunks - (s->nchunks + c->size - 1) / c->size;
    s->taken = 0;
    enum vox_status st = VOX_OK;
    for (int to = 1; to < c->size && st == VOX_OK; to++) {
        st = c->send_to(c->arg, ctx, to, SHARE_SETUP, setup, setup_len);
        if (st == VOX_OK)
            st = share_give(ctx, s, to, to);
    }
    return st;
}

enum vox_status dist_share_step(struct vox_ctx *ctx, struct dist_share *s)
{
    const struct vox_dist_comm *c = s->c;
    if (s->taken >= s->remote)
        return VOX_OK;
    int64_t i = -1, len = 0;
    uint8_t *b = NULL;
    enum vox_status st = c->recv(c->arg, ctx, &i, (void **)&b, &len);
    if (st != VOX_OK)
        return st;
    s->taken++;
    if (i <= 0 || i >= s->nchunks || i % c->size == 0)
        st = vox_fail(ctx, VOX_IO,
                      "chunked segmentation: a summary for chunk %lld from another "
                      "rank (of %lld chunks)",
                      (long long)i, (long long)s->nchunks);
    if (st == VOX_OK)
        st = s->take(s->arg, i, b, len);
    vox_free(ctx, b);
    if (st == VOX_OK) /* that rank waits for its next chunk */
        st = share_give(ctx, s, (int)(i % c->size), i + c->size);
    return st;
}

enum vox_status dist_share_end(struct vox_ctx *ctx, struct dist_share *s)
{
    enum vox_status st = VOX_OK;
    while (st == VOX_OK && s->taken < s->remote)
        st = dist_share_step(ctx, s);
    /* a rank with no chunk at all got the end with its setup */
    return st;
}

enum vox_status dist_share_serve(struct vox_ctx *ctx, const struct vox_dist_comm *c,
                                 dist_share_setup_fn setup, dist_share_work_fn work, void *arg)
{
    int64_t key = 0, len = 0;
    uint8_t *b = NULL;
    enum vox_status st = c->recv_root(c->arg, ctx, &key, (void **)&b, &len);
    if (st == VOX_OK && key != SHARE_SETUP)
        st = vox_fail(ctx, VOX_IO,
                      "chunked segmentation: rank %d expected a stage's setup from "
                      "rank 0, got message %lld",
                      c->rank, (long long)key);
    if (st == VOX_OK)
        st = setup(arg, b, len);
    vox_free(ctx, b);
    while (st == VOX_OK) {
        b = NULL;
        st = c->recv_root(c->arg, ctx, &key, (void **)&b, &len);
        if (st == VOX_OK && key == SHARE_END) {
            vox_free(ctx, b);
            break;
        }
        void *out = NULL;
        int64_t olen = 0;
        if (st == VOX_OK && (key < 0 || key % c->size != c->rank))
            st = vox_fail(ctx, VOX_IO, "chunked segmentation: rank %d was given chunk %lld",
                          c->rank, (long long)key);
        if (st == VOX_OK)
            st = work(arg, key, b, len, &out, &olen);
        vox_free(ctx, b);
        if (st == VOX_OK)
            st = c->send(c->arg, ctx, key, out, olen);
        vox_free(ctx, out);
    }
    return st;
}

/* ---- a chunk's labels window as a message ------------------------------------------------ */

enum vox_status dist_win_pack(struct vox_ctx *ctx, const struct dist_labels *l,
                              const int64_t dims[3], const struct dist_box *b, void **blob,
                              int64_t *len)
{
    struct dist_win w;
    enum vox_status st = dist_win_load(ctx, l, dims, b, NULL, &w);
    if (st != VOX_OK)
        return st;
    int64_t n = w.n[0] * w.n[1] * w.n[2];
    *len = 6 * (int64_t)sizeof(int64_t) + n * (int64_t)sizeof(uint32_t);
    uint8_t *p = *blob = vox_alloc(ctx, (size_t)*len);
    if (p) {
        memcpy(p, w.lo, sizeof w.lo);
        memcpy(p + sizeof w.lo, w.n, sizeof w.n);
        memcpy(p + sizeof w.lo + sizeof w.n, w.p, (size_t)n * sizeof(uint32_t));
    }
    dist_win_fini(ctx, &w);
    return p ? VOX_OK : VOX_OUT_OF_MEMORY;
}

bool dist_win_given(const uint8_t *blob, int64_t len, const int64_t dims[3],
                    const struct dist_box *b, struct dist_win *w)
{
    memset(w, 0, sizeof *w);
    if (len < 6 * (int64_t)sizeof(int64_t))
        return false;
    memcpy(w->lo, blob, sizeof w->lo);
    memcpy(w->n, blob + sizeof w->lo, sizeof w->n);
    int64_t n = 1;
    for (int a = 0; a < 3; a++) { /* the window dist_win_load gives for box b */
        int64_t lo = b->lo[a] > 0 ? b->lo[a] - 1 : 0,
                hi = b->hi[a] < dims[a] ? b->hi[a] + 1 : dims[a];
        if (w->lo[a] != lo || w->n[a] != hi - lo)
            return false;
        n *= w->n[a];
    }
    if (len != 6 * (int64_t)sizeof(int64_t) + n * (int64_t)sizeof(uint32_t))
        return false;
    w->p = (const uint32_t *)(blob + 6 * sizeof(int64_t)); /* 8-byte aligned: vox_alloc */
    return true;
}

/* ---- chunk summaries as messages ----------------------------------------------------------- */

enum vox_status dist_pack(struct vox_ctx *ctx, const struct dist_box *b, int n,
                          const int64_t *count, const size_t *size, const void *const *arr,
                          void **blob, int64_t *len)
{
    int64_t hd[6 + DIST_PACK_MAX];
    memcpy(hd, b->lo, sizeof b->lo);
    memcpy(hd + 3, b->hi, sizeof b->hi);
    size_t total = (size_t)(6 + n) * sizeof *hd;
    for (int k = 0; k < n; k++) {
        hd[6 + k] = count[k];
        total += (size_t)count[k] * size[k];
    }
    uint8_t *p = *blob = vox_alloc(ctx, total);
    if (!p)
        return VOX_OUT_OF_MEMORY;
    memcpy(p, hd, (size_t)(6 + n) * sizeof *hd);
    p += (size_t)(6 + n) * sizeof *hd;
    for (int k = 0; k < n; k++) {
        if (count[k])
            memcpy(p, arr[k], (size_t)count[k] * size[k]);
        p += (size_t)count[k] * size[k];
    }
    *len = (int64_t)total;
    return VOX_OK;
}

enum vox_status dist_unpack(struct vox_ctx *ctx, const uint8_t *blob, int64_t len,
                            const struct dist_box *b, int n, const size_t *size, int64_t *count,
                            void **arr)
{
    int64_t hd[6 + DIST_PACK_MAX], need = (6 + n) * (int64_t)sizeof *hd;
    bool ok = len >= need;
    if (ok)
        memcpy(hd, blob, (size_t)need);
    for (int a = 0; ok && a < 3; a++)
        ok = hd[a] == b->lo[a] && hd[3 + a] == b->hi[a];
    for (int k = 0; ok && k < n; k++) {
        ok = hd[6 + k] >= 0 && hd[6 + k] <= len;
        need += ok ? hd[6 + k] * (int64_t)size[k] : 0;
    }
    if (!ok || len != need)
        return VOX_FORMAT;
    const uint8_t *p = blob + (6 + n) * sizeof *hd;
    for (int k = 0; k < n; k++) {
        count[k] = hd[6 + k];
        if (!(arr[k] = vox_alloc(ctx, (size_t)(count[k] + 1) * size[k])))
            return VOX_OUT_OF_MEMORY; /* the caller frees what was allocated */
        memcpy(arr[k], p, (size_t)count[k] * size[k]);
        p += (size_t)count[k] * size[k];
    }
    return VOX_OK;
}

void dist_serve_geometry(const struct dist_vol *vol, const int64_t chunk[3], int64_t dims[3],
                         int64_t chunk_out[3], struct dist_tree *tree)
{
    int64_t grid[3];
    for (int a = 0; a < 3; a++) {
        dims[a] = vol->dims[a];
        chunk_out[a] = chunk[a] < dims[a] ? chunk[a] : dims[a];
        grid[a] = (dims[a] + chunk_out[a] - 1) / chunk_out[a];
    }
    dist_tree_init(tree, grid);
}
