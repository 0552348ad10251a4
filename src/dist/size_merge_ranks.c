/*
 * dist/size_merge_ranks.c: stage (b) on several ranks (dist/ranks.c): the messages that hand
 * a rank its atomic chunks and bring back their summaries, and a rank's level-1 nodes (the
 * parents of the subtrees it owns), computed there by the same functions as on rank 0.
 */
#include "size_merge.h"
#include "seg/seg_internal.h"

#include <string.h>

/* A chunk's summary as a message (dist_pack): its basins, edges and final merges. */
static enum vox_status sm_pack(struct vox_ctx *ctx, const struct sm_sum *s, void **blob,
                               int64_t *len)
{
    const int64_t count[3] = {s->nbasin, s->nedge, s->nfin};
    const size_t size[3] = {sizeof *s->basin, sizeof *s->edge, sizeof *s->fin};
    const void *const arr[3] = {s->basin, s->edge, s->fin};
    return dist_pack(ctx, &s->box, 3, count, size, arr, blob, len);
}

enum vox_status sm_give(void *arg, int64_t i, void **blob, int64_t *len)
{
    struct sm_run *r = arg;
    struct dist_box b;
    sm_box(r, 0, i, &b);
    return dist_shell_pack(r->ctx, r->basins->st, NULL, i, &b, blob, len);
}

/* Node i of `level`'s summary s (its box set) from a message of its rank's (sm_pack's, or
 * with `extra` arrays after the three: sm_up's), its final merges in *fin; the caller frees
 * what s, fin and extra hold, also on failure. */
static enum vox_status sm_unpack(const struct sm_run *r, int level, int64_t i, const uint8_t *blob,
                                 int64_t len, struct sm_sum *s, struct sm_fin *fin, int extra,
                                 const size_t *xsize, int64_t *xcount, void **xarr)
{
    size_t size[DIST_PACK_MAX] = {sizeof *s->basin, sizeof *s->edge, sizeof *s->fin};
    int64_t count[DIST_PACK_MAX];
    void *arr[DIST_PACK_MAX] = {0};
    for (int k = 0; k < extra; k++)
        size[3 + k] = xsize[k];
    enum vox_status st = dist_unpack(r->ctx, blob, len, &s->box, 3 + extra, size, count, arr);
    s->basin = arr[0];
    s->edge = arr[1];
    *fin = (struct sm_fin){arr[2], st == VOX_OK ? count[2] : 0};
    for (int k = 0; k < extra; k++) {
        xarr[k] = arr[3 + k];
        xcount[k] = count[3 + k];
    }
    if (st == VOX_FORMAT)
        return vox_fail(r->ctx, VOX_IO,
                        "chunked size merge: a malformed summary of %lld bytes "
                        "for %s %lld from another rank",
                        (long long)len, level ? "octree node" : "chunk", (long long)i);
    if (st != VOX_OK)
        return st;
    s->nbasin = count[0];
    s->nedge = count[1];
    return VOX_OK;
}

/* Rank 0: chunk i's summary from its rank, into the slots its own task would have filled. */
enum vox_status sm_take(void *arg, int64_t i, const uint8_t *blob, int64_t len)
{
    struct sm_run *r = arg;
    struct sm_sum *s = &r->sum[0][i];
    sm_box(r, 0, i, &s->box);
    /* (what s holds is freed with the run's sums, also on failure) */
    enum vox_status st = sm_unpack(r, 0, i, blob, len, s, &r->lfin[0][i], 0, NULL, NULL, NULL);
    if (st != VOX_OK)
        return st;
    __atomic_fetch_add(&r->lv[0][0], s->nbasin, __ATOMIC_RELAXED);
    __atomic_fetch_add(&r->lv[0][1], s->nedge, __ATOMIC_RELAXED);
    return VOX_OK;
}

/* Node j of `level` that a rank computed (sm_up): its final merges and statistics, at level
 * 1 its chunks' too (their final merges in one array, split by the counts), and where rank
 * 0 computes its parent, its summary; into the slots rank 0's own tasks would have filled. */
enum vox_status sm_take_node(void *arg, int level, int64_t j, const uint8_t *blob, int64_t len)
{
    struct sm_run *r = arg;
    struct sm_sum *s = &r->sum[level][j];
    sm_box(r, level, j, &s->box);
    const size_t xsize[2] = {sizeof(struct sm_edge), sizeof(int64_t)};
    int64_t xcount[2] = {0, 0}, c[3], kid[8];
    void *x[2] = {NULL, NULL};
    const int nk = dist_node_children(r->tree.grid[level - 1], j, c, kid), kids = level == 1;
    enum vox_status st =
        sm_unpack(r, level, j, blob, len, s, &r->lfin[level][j], 2, xsize, xcount, x);
    const struct sm_edge *kf = x[0];
    const int64_t *meta = x[1]; /* the node's basins and edges, then per chunk: basins, edges,
                                   final merges */
    int64_t at = 0;
    for (int k = 0; st == VOX_OK && kids && k < nk && xcount[1] == 2 + 3 * nk; k++)
        at += meta[2 + 3 * k + 2];
    if (st == VOX_OK && (xcount[1] != 2 + 3 * nk * kids || at != xcount[0]))
        st = vox_fail(r->ctx, VOX_IO,
                      "chunked size merge: a malformed summary of %lld bytes for octree node "
                      "%lld of level %d from another rank",
                      (long long)len, (long long)j, level);
    at = 0;
    for (int k = 0; st == VOX_OK && kids && k < nk; k++) {
        const int64_t n = meta[2 + 3 * k + 2];
        struct sm_edge *e = vox_alloc(r->ctx, (size_t)(n + 1) * sizeof *e);
        if (!e) {
            st = VOX_OUT_OF_MEMORY;
            break;
        }
        if (n)
            memcpy(e, kf + at, (size_t)n * sizeof *e);
        at += n;
        r->lfin[0][kid[k]] = (struct sm_fin){e, n};
        __atomic_fetch_add(&r->lv[0][0], meta[2 + 3 * k], __ATOMIC_RELAXED);
        __atomic_fetch_add(&r->lv[0][1], meta[2 + 3 * k + 1], __ATOMIC_RELAXED);
    }
    if (st == VOX_OK) {
        __atomic_fetch_add(&r->lv[level][0], meta[0], __ATOMIC_RELAXED);
        __atomic_fetch_add(&r->lv[level][1], meta[1], __ATOMIC_RELAXED);
    }
    vox_free(r->ctx, x[0]);
    vox_free(r->ctx, x[1]);
    return st;
}

/* Another rank: the run's geometry and parameters, the basin sizes from rank 0's setup. */
struct sm_served {
    struct sm_run r;
    int64_t *sizes;
    struct dist_store *own; /* this rank's fragment labels */
};

static enum vox_status sm_setup(void *arg, const uint8_t *blob, int64_t len)
{
    struct sm_served *v = arg;
    int64_t n = len / (int64_t)sizeof(int64_t);
    if (len % (int64_t)sizeof(int64_t) != 0 || n < 1)
        return vox_fail(v->r.ctx, VOX_IO, "chunked size merge: a malformed setup from rank 0");
    if (!(v->sizes = vox_alloc(v->r.ctx, (size_t)len)))
        return VOX_OUT_OF_MEMORY;
    memcpy(v->sizes, blob, (size_t)len);
    v->r.sizes = v->sizes;
    return VOX_OK;
}

static enum vox_status sm_work(void *arg, int64_t i, const uint8_t *blob, int64_t len, void **out,
                               int64_t *out_len, int tid)
{
    const struct sm_served *v = arg;
    struct sm_run rr = v->r; /* this thread's: the window is the chunk's */
    struct sm_run *r = &rr;
    struct dist_win w;
    struct dist_labels given;
    struct sm_sum s = {0};
    sm_box(r, 0, i, &s.box);
    enum vox_status st = dist_shell_labels(r->ctx, v->own, r->dims, &s.box, blob, len, &w, &given);
    if (st != VOX_OK)
        return st;
    r->basins = &given;
    st = sm_chunk(r, &s, i, &r->sc[tid]);
    dist_win_fini(r->ctx, &w);
    if (st == VOX_OK)
        st = sm_pack(r->ctx, &s, out, out_len);
    sm_sum_fini(r->ctx, &s);
    return st;
}

/* Another rank: node j of `level` from its children's summaries (sm_work's at level 1, this
 * function's `keep` above), as rank 0's sm_task would compute it. The message for rank 0
 * (dist_pack): the node's basins and edges where rank 0 computes its parent (keep NULL),
 * else none; its final merges; at level 1 its chunks' final merges one after another; the
 * node's basin and edge counts, at level 1 then per chunk its basins, edges and final merges.
 * keep: the node's summary without its final merges, for its parent here. */
static enum vox_status sm_up(void *arg, int level, int64_t j, const uint8_t *const *blob,
                             const int64_t *len, int nk, void **out, int64_t *out_len, void **keep,
                             int64_t *keep_len, int tid)
{
    const struct sm_served *v = arg;
    const struct sm_run *r = &v->r;
    (void)tid;
    int64_t c[3], kid[8], meta[2 + 24], nf = 0;
    struct sm_sum kids[8] = {0}, s = {0};
    struct sm_fin kf[8] = {0};
    dist_node_children(r->tree.grid[level - 1], j, c, kid);
    enum vox_status st = VOX_OK;
    for (int k = 0; k < nk && st == VOX_OK; k++) {
        sm_box(r, level - 1, kid[k], &kids[k].box);
        st =
            sm_unpack(r, level - 1, kid[k], blob[k], len[k], &kids[k], &kf[k], 0, NULL, NULL, NULL);
        meta[2 + 3 * k] = kids[k].nbasin, meta[2 + 3 * k + 1] = kids[k].nedge;
        meta[2 + 3 * k + 2] = kf[k].n;
        nf += kf[k].n; /* (none above level 1: a node's went to rank 0 with it) */
    }
    struct sm_edge *all = st == VOX_OK ? vox_alloc(r->ctx, (size_t)(nf + 1) * sizeof *all) : NULL;
    if (st == VOX_OK && !all)
        st = VOX_OUT_OF_MEMORY;
    for (int k = 0, at = 0; st == VOX_OK && k < nk; at += (int)kf[k].n, k++)
        if (kf[k].n)
            memcpy(all + at, kf[k].e, (size_t)kf[k].n * sizeof *all);
    sm_box(r, level, j, &s.box);
    if (st == VOX_OK)
        st = sm_node(r, kids, nk, &s);
    meta[0] = s.nbasin, meta[1] = s.nedge;
    const size_t size[5] = {sizeof *s.basin, sizeof *s.edge, sizeof *s.fin, sizeof *all,
                            sizeof *meta};
    if (st == VOX_OK) {
        const bool top = keep == NULL;
        const int64_t count[5] = {top ? s.nbasin : 0, top ? s.nedge : 0, s.nfin,
                                  level == 1 ? nf : 0, 2 + (level == 1 ? 3 * (int64_t)nk : 0)};
        const void *const arr[5] = {s.basin, s.edge, s.fin, all, meta};
        st = dist_pack(r->ctx, &s.box, 5, count, size, arr, out, out_len);
    }
    if (st == VOX_OK && keep) {
        const int64_t count[3] = {s.nbasin, s.nedge, 0};
        const void *const arr[3] = {s.basin, s.edge, s.fin};
        st = dist_pack(r->ctx, &s.box, 3, count, size, arr, keep, keep_len);
    }
    for (int k = 0; k < nk; k++) {
        sm_sum_fini(r->ctx, &kids[k]);
        vox_free(r->ctx, kf[k].e);
    }
    sm_sum_fini(r->ctx, &s);
    vox_free(r->ctx, all);
    return st;
}

enum vox_status dist_sm_serve(struct vox_ctx *ctx, const struct dist_vol *vol,
                              const int64_t chunk[3], const struct vox_seg_params *p,
                              struct dist_store *own)
{
    struct sm_served v = {.r = {.ctx = ctx, .p = p, .vol = vol}, .own = own};
    dist_serve_geometry(vol, chunk, v.r.dims, v.r.chunk, &v.r.tree);
    vox_seg_size_limits(p, v.r.lim);
    v.r.sc = dist_scratch_new(ctx);
    enum vox_status s = v.r.sc ? dist_share_serve(ctx, vol->comm, v.r.tree.grid[0], sm_setup,
                                                  sm_work, sm_up, &v, true)
                               : VOX_OUT_OF_MEMORY;
    dist_scratch_free(ctx, v.r.sc);
    vox_free(ctx, v.sizes);
    return s;
}
