/*
 * dist/dist.c: the chunked watershed driver: atomic chunks, the octree, the final relabel.
 *
 *   level 0   every atomic chunk (in parallel on the pool): dist_chunk_ws → summary, and its
 *             fragment labels written into its box of the output
 *   level k   every node of 2x2x2 children (in parallel): dist_node_ws → summary + joins;
 *             the joins are then applied, in node order, to one union-find over all
 *             fragments (sorted by id = first voxel); repeat until one node covers the volume
 *   relabel   basins are the union-find's components, numbered in order of their smallest
 *             fragment id (= their first voxel in C order, as vox_seg_watershed numbers
 *             them); each chunk rewrites its box through that map (in parallel), or, for a
 *             file store without records, the store keeps the fragment labels and the maps
 *             (struct dist_store's cmap), which its reads apply: the volume is written once
 *
 * Union-find is insensitive to the order of joins, and every join is a fact of the
 * whole-volume watershed, so the result is the same for any chunk shape and thread count.
 */
#include "dist_internal.h"

#include <unistd.h>

#include <stdlib.h>
#include <string.h>

/* A node's unions, kept after its summary is freed (they are applied when the tree is done). */
struct dist_joins {
    struct dist_pair *p;
    int64_t n;
};

struct dist_run {
    struct vox_ctx *ctx;
    const struct vox_seg_params *p;
    struct dist_vol vol;
    int64_t chunk[3];
    struct dist_tree tree;
    struct dist_sum *sum[DIST_TREE_LEVELS];  /* per level and node: its summary */
    struct dist_joins *jn[DIST_TREE_LEVELS]; /* per level and node: the unions it decided */
    int64_t lv[DIST_TREE_LEVELS][3];         /* per level: items, links and bytes carried up */
    struct dist_frag **fr;                   /* per atomic chunk: its fragments */
    int64_t *nfr;
    enum vox_status *st;
    struct dist_store *labels;
    struct vox_dist_stats *stats;
    struct dist_frag *all; /* every fragment, chunk by chunk (each chunk's sorted by id) */
    int64_t *off;          /* per chunk: its first fragment's position in all */
    int64_t nall;
    int64_t *uf;
    uint32_t *basin;         /* per position in `all` */
    struct dist_scratch *sc; /* per worker */
    uint32_t **maps;         /* per atomic chunk: fragment -> basin */
    int64_t received;        /* rank 0 of a comm: the other ranks' chunks taken so far */
    int64_t remote;          /* ... of those it takes (ws_remote) */
    int64_t seen;            /* ... of those whose level-0 task ran (atomic_chunk) */
    uint8_t *reused;         /* rank 0 of a comm, resumed: other ranks' chunks from records */
    /* Rank 0 of a sharing comm: per node of levels 1 to uplev (level l's from upoff[l]): 2
     * where its rank computed it (ws_up; its message taken), 1 where that message is still
     * to come (a child's said so: `pending` of them) */
    uint8_t *upn;
    int64_t nupn, upoff[DIST_TREE_LEVELS + 1], pending;
    int uplev;
    bool skipped; /* ... which their ranks skip (a sharing comm): no copy of them comes */
};

/* The box of node i of `level` (0: atomic chunk i). */
static void node_box(const struct dist_run *r, int level, int64_t i, struct dist_box *b)
{
    const int64_t *g = r->tree.grid[level];
    int64_t c[3] = {i / (g[1] * g[2]), (i / g[2]) % g[1], i % g[2]};
    for (int a = 0; a < 3; a++) {
        int64_t span = r->chunk[a] << level;
        b->lo[a] = c[a] * span;
        b->hi[a] = b->lo[a] + span < r->vol.dims[a] ? b->lo[a] + span : r->vol.dims[a];
    }
}

/* Adds what summary s of `level` carries up to the level's statistics (any thread). */
static void sum_stats(struct dist_run *r, int level, const struct dist_sum *c)
{
    int64_t add[3] = {c->nface + c->nplat, c->nlink,
                      c->nface * (int64_t)sizeof *c->face + c->nplat * (int64_t)sizeof *c->plat +
                          c->nlink * (int64_t)sizeof *c->link + c->nuni * (int64_t)sizeof *c->uni};
    for (int k = 0; k < 3; k++)
        __atomic_fetch_add(&r->lv[level][k], add[k], __ATOMIC_RELAXED);
}

/* Chunk i's summary s (fragments, links, faces, plateau voxels) as a blob with `extra`
 * trailing bytes (left for the caller to fill): *blob_out (NULL when memory is short). */
static int64_t ws_pack(struct vox_ctx *ctx, const struct dist_sum *s, size_t extra,
                       uint8_t **blob_out)
{
    const int64_t hd[4] = {s->nfrag, s->nlink, s->nface, s->nplat};
    const size_t part[4] = {(size_t)s->nfrag * sizeof *s->frag, (size_t)s->nlink * sizeof *s->link,
                            (size_t)s->nface * sizeof *s->face, (size_t)s->nplat * sizeof *s->plat};
    const void *src[4] = {s->frag, s->link, s->face, s->plat};
    size_t n = sizeof hd + part[0] + part[1] + part[2] + part[3];
    uint8_t *b = vox_alloc(ctx, n + extra + 1), *p = b + sizeof hd;
    *blob_out = b;
    if (!b)
        return 0;
    memcpy(b, hd, sizeof hd);
    for (int k = 0; k < 4; p += part[k], k++)
        if (part[k])
            memcpy(p, src[k], part[k]);
    return (int64_t)n;
}

/* The record of chunk i: its summary as a blob, vouching for its label block (hash h). */
static enum vox_status ws_record(struct dist_run *r, int64_t i, uint64_t h)
{
    uint8_t *b;
    int64_t n = ws_pack(r->ctx, &r->sum[0][i], 0, &b);
    if (!b)
        return VOX_OUT_OF_MEMORY;
    enum vox_status st = dist_journal_add(r->ctx, r->vol.jr, DJ_WS, i, h, b, n);
    vox_free(r->ctx, b);
    return st;
}

/* A summary s (fragments, links, faces, plateau voxels; its box left alone) from a blob of
 * ws_pack of at least len bytes: the bytes it took, or -1 when the blob is malformed or
 * memory is short (s unchanged). */
static int64_t ws_parse(struct vox_ctx *ctx, const uint8_t *b, int64_t len, struct dist_sum *s)
{
    int64_t hd[4];
    if (len < (int64_t)sizeof hd)
        return -1;
    memcpy(hd, b, sizeof hd);
    bool ok = hd[0] >= 0 && hd[1] >= 0 && hd[2] >= 0 && hd[3] >= 0 && hd[0] <= len &&
              hd[1] <= len && hd[2] <= len && hd[3] <= len;
    size_t part[4] = {(size_t)hd[0] * sizeof *s->frag, (size_t)hd[1] * sizeof *s->link,
                      (size_t)hd[2] * sizeof *s->face, (size_t)hd[3] * sizeof *s->plat};
    int64_t n = (int64_t)(sizeof hd + part[0] + part[1] + part[2] + part[3]);
    ok = ok && n <= len;
    void *dst[4] = {NULL, NULL, NULL, NULL};
    const uint8_t *p = b + sizeof hd;
    for (int k = 0; k < 4 && ok; p += part[k], k++) {
        dst[k] = vox_alloc(ctx, part[k] + 1);
        ok = dst[k] != NULL;
        if (ok && part[k])
            memcpy(dst[k], p, part[k]);
    }
    if (!ok) {
        for (int k = 0; k < 4; k++)
            vox_free(ctx, dst[k]);
        return -1;
    }
    s->frag = dst[0], s->nfrag = hd[0];
    s->link = dst[1], s->nlink = hd[1];
    s->face = dst[2], s->nface = hd[2];
    s->plat = dst[3], s->nplat = hd[3];
    return n;
}

/* Chunk i's summary from a blob of ws_pack (ws_parse), its fragments in r->fr[i]. */
static int64_t ws_unpack(struct dist_run *r, int64_t i, const uint8_t *b, int64_t len)
{
    struct dist_sum *s = &r->sum[0][i];
    int64_t n = ws_parse(r->ctx, b, len, s);
    if (n < 0)
        return n;
    node_box(r, 0, i, &s->box);
    r->fr[i] = s->frag, r->nfr[i] = s->nfrag;
    s->frag = NULL;
    return n;
}

/* Chunk i from its record, when the record is whole and its label block is what the record
 * (or a later relabel record) vouches for. */
static bool ws_reuse(struct dist_run *r, int64_t i)
{
    const struct dist_jrec *w = dist_journal_find(r->vol.jr, DJ_WS, i);
    const struct dist_jrec *l = dist_journal_find(r->vol.jr, DJ_RELABEL, i);
    uint64_t h = 0;
    uint8_t *b = NULL;
    if (!w || dist_bfile_hash(r->ctx, &r->labels->f, i, &h) != VOX_OK ||
        (h != w->sum && (!l || h != l->sum)) ||
        dist_journal_blob(r->ctx, r->vol.jr, w, (void **)&b) != VOX_OK || !b)
        return false;
    bool ok = ws_unpack(r, i, b, w->len) == w->len;
    vox_free(r->ctx, b);
    return ok;
}

/* Atomic chunk i: its watershed, labels and summary (or its record's). */
static enum vox_status ws_receive_one(struct dist_run *r, int64_t nchunks);
static enum vox_status ws_take_node(struct dist_run *r, int level, int64_t j, const uint8_t *b,
                                    int64_t len);

/* Chunk i's fragments kept aside (its summary s no longer holds them) and its statistics. */
static void chunk_kept(struct dist_run *r, int64_t i, struct dist_sum *s)
{
    r->fr[i] = s->frag;
    r->nfr[i] = s->nfrag;
    s->frag = NULL;
    sum_stats(r, 0, s);
}

static enum vox_status atomic_chunk(struct dist_run *r, int64_t i, int tid)
{
    struct dist_scratch *sc = &r->sc[tid];
    struct dist_box b;
    node_box(r, 0, i, &b);
    if (r->vol.comm && dist_chunk_rank(r->tree.grid[0], i, r->vol.comm->size) != 0) {
        /* Another rank's. The caller's thread (worker 0, the one that may call the comm)
         * takes one of theirs here, between its own chunks: a rank's send returns only once
         * rank 0 takes it, so taking them all after rank 0's own chunks made the ranks wait
         * (2 ranks ran as fast as 1). The rest: ws_receive. */
        if (r->skipped && r->reused[i])
            return VOX_OK; /* (its record's, taken before) */
        /* With c->ready, those waiting; else one, but not past the chunks whose tasks ran (a
         * message can bring a level-1 node's chunks, and waiting for the next one would
         * leave rank 0's own chunks waiting). */
        const struct vox_dist_comm *c = r->vol.comm;
        int64_t seen = __atomic_add_fetch(&r->seen, 1, __ATOMIC_RELAXED);
        enum vox_status st = VOX_OK;
        if (tid == 0 && c->ready)
            while (st == VOX_OK && (r->received < r->remote || r->pending > 0) &&
                   c->ready(c->arg, r->ctx))
                st = ws_receive_one(r, r->tree.n[0]);
        else if (tid == 0 && r->received < r->remote && r->received < seen)
            st = ws_receive_one(r, r->tree.n[0]);
        return st;
    }
    if (r->vol.jr && ws_reuse(r, i)) {
        dist_journal_count(r->vol.jr, true);
        sum_stats(r, 0, &r->sum[0][i]);
        return VOX_OK;
    }
    struct dist_sum *s = &r->sum[0][i];
    int64_t n = (b.hi[0] - b.lo[0]) * (b.hi[1] - b.lo[1]) * (b.hi[2] - b.lo[2]);
    uint32_t *lab = NULL;
    struct dist_chunk_rec rec;
    struct dist_pairs *pp = r->vol.pairs;
    enum vox_status st = dist_chunk_ws(r->ctx, &r->vol, &b, r->p, sc, s, &lab, pp ? &rec : NULL);
    if (st != VOX_OK)
        return st;
    const int64_t nfrag = s->nfrag;
    /* The summary is all the parent reads: it may run (and free it) while this worker writes
     * the labels and the face record (a 256^3 chunk's ~70 ms of fresh page-cache pages; the
     * last chunk's parent, the root, waited for them). With records the summary goes into the
     * chunk's record after the writes, so the parent waits. */
    const bool early = !r->vol.jr;
    if (early) {
        chunk_kept(r, i, s);
        dist_tree_early(&r->tree, 0, i);
    }
    if (pp && rec.npf >= 0)
        st = dist_pairs_put(r->ctx, pp, i, nfrag, &rec, r->vol.io, tid);
    if (st == VOX_OK)
        st = dist_store_write(r->ctx, r->labels, &b, lab, sc);
    if (st == VOX_OK && r->labels->faces)
        st = dist_faces_put(r->ctx, r->labels->faces, i, lab, false);
    if (st == VOX_OK && r->vol.jr) {
        dist_journal_count(r->vol.jr, false);
        st = ws_record(r, i, dist_hash(lab, (size_t)n * sizeof *lab, 0));
    }
    if (st == VOX_OK && !early)
        chunk_kept(r, i, s);
    return st;
}

/* Rank 0 of a comm: one summary and fragment labels of another rank's chunk (whichever comes
 * first), written into its chunk's slot, so the order they arrive in does not matter. */
static enum vox_status ws_receive_one(struct dist_run *r, int64_t nchunks)
{
    const struct vox_dist_comm *c = r->vol.comm;
    int64_t i = -1, len = 0;
    uint8_t *b = NULL;
    enum vox_status s = c->recv(c->arg, r->ctx, &i, (void **)&b, &len);
    if (s == VOX_OK && i == DIST_COMM_STOP)
        s = dist_comm_stopped(r->ctx, c, b, len);
    if (s != VOX_OK) {
        vox_free(r->ctx, b);
        return s;
    }
    if (r->upn && i >= nchunks && i - nchunks < r->nupn) {
        int level = 1;
        while (level < r->uplev && i - nchunks >= r->upoff[level + 1])
            level++;
        s = ws_take_node(r, level, i - nchunks - r->upoff[level], b, len);
        vox_free(r->ctx, b);
        return s;
    }
    r->received++;
    struct dist_box box;
    int64_t n = -1, nv = 0, nf = -1;
    struct dist_faces *fc = r->labels->faces;
    const bool theirs = i > 0 && i < nchunks && dist_chunk_rank(r->tree.grid[0], i, c->size) != 0;
    if (theirs && r->reused && r->reused[i]) {
        vox_free(r->ctx, b); /* taken from its record (resumed): the same summary */
        return VOX_OK;
    }
    if (theirs && !r->fr[i] && !r->sum[0][i].link) {
        node_box(r, 0, i, &box);
        nv = (box.hi[0] - box.lo[0]) * (box.hi[1] - box.lo[1]) * (box.hi[2] - box.lo[2]);
        nf = fc ? dist_faces_len(fc->dims, fc->chunk, i) : -1;
        n = ws_unpack(r, i, b, len);
    }
    /* the chunk's labels, or (a rank that writes its own output) its faces only */
    const bool faces = n >= 0 && len - n == nf * (int64_t)sizeof(uint32_t);
    if (n < 0 || (!faces && len - n != nv * (int64_t)sizeof(uint32_t)))
        s = vox_fail(r->ctx, VOX_IO,
                     "chunked watershed: a malformed summary of "
                     "%lld bytes for chunk %lld from another rank",
                     (long long)len, (long long)i);
    else if (faces)
        r->labels->absent++;
    else
        s = dist_store_write(r->ctx, r->labels, &box, (const uint32_t *)(b + n), NULL);
    if (s == VOX_OK && fc)
        s = dist_faces_put(r->ctx, fc, i, (const uint32_t *)(b + n), faces);
    if (s == VOX_OK && r->vol.jr && !faces) { /* recorded as rank 0's own chunks are */
        struct dist_sum *sum = &r->sum[0][i];
        sum->frag = r->fr[i]; /* (ws_unpack put the fragments there) */
        dist_journal_count(r->vol.jr, false);
        s = ws_record(r, i, dist_hash(b + n, (size_t)nv * sizeof(uint32_t), 0));
        sum->frag = NULL;
    }
    if (s == VOX_OK)
        sum_stats(r, 0, &r->sum[0][i]);
    vox_free(r->ctx, b);
    return s;
}

/* Rank 0: node j of `level` from its rank (ws_up): its unions (still fragment ids:
 * join_locations follows in node_task) and, where rank 0 computes its parent, its summary;
 * what it carried up; at level 1 its children's fragments, faces and statistics, as
 * ws_receive_one takes a chunk whose rank writes its own output. Where the rank computes the
 * parent too, the parent's message is to come (r->pending). */
static enum vox_status ws_take_node(struct dist_run *r, int level, int64_t j, const uint8_t *b,
                                    int64_t len)
{
    struct vox_ctx *ctx = r->ctx;
    struct dist_sum *s = &r->sum[level][j];
    struct dist_faces *fc = r->labels->faces;
    int64_t c[3], kid[8], count[7], nf = 0, nx = 0;
    const int nk = dist_node_children(r->tree.grid[level - 1], j, c, kid), kids = level == 1;
    const size_t size[7] = {sizeof *s->link, sizeof *s->face,          sizeof *s->plat,
                            sizeof *s->uni,  sizeof(struct dist_frag), sizeof(uint32_t),
                            sizeof(int64_t)};
    void *arr[7] = {0};
    struct dist_box box;
    node_box(r, level, j, &box);
    enum vox_status st = dist_unpack(ctx, b, len, &box, 7, size, count, arr);
    const struct dist_frag *fr = arr[4];
    const uint32_t *fx = arr[5];
    /* the node: its parent's summary wanted here (1) or not, carried, links, bytes; at level
       1 then per child: fragments, carried, links, bytes */
    const int64_t *meta = arr[6];
    const int64_t at = r->upoff[level] + j;
    bool ok = st == VOX_OK && fc && !s->link && !s->face && !s->uni && r->upn[at] != 2 &&
              count[6] == 4 + 4 * nk * kids &&
              dist_node_rank(r->tree.grid[0], level, j, r->vol.comm->size) != 0 &&
              (meta[0] == 1 || level < r->uplev);
    for (int k = 0; ok && kids && k < nk; k++) {
        const int64_t *m = meta + 4 + 4 * k;
        ok = !r->fr[kid[k]] && !(r->reused && r->reused[kid[k]]) && m[0] >= 0;
        nf += ok ? m[0] : 0;
        nx += dist_faces_len(fc->dims, fc->chunk, kid[k]);
    }
    ok = ok && nf == count[4] && nx == count[5];
    if (st == VOX_FORMAT || (st == VOX_OK && !ok))
        st = vox_fail(ctx, VOX_IO,
                      "chunked watershed: a malformed summary of %lld bytes for octree node "
                      "%lld of level %d from another rank",
                      (long long)len, (long long)j, level);
    for (int k = 0, f = 0, x = 0; st == VOX_OK && kids && k < nk; k++) {
        const int64_t *m = meta + 4 + 4 * k, n = m[0];
        struct dist_frag *mine = vox_alloc(ctx, (size_t)(n + 1) * sizeof *mine);
        if (!mine) {
            st = VOX_OUT_OF_MEMORY;
            break;
        }
        if (n)
            memcpy(mine, fr + f, (size_t)n * sizeof *mine);
        r->fr[kid[k]] = mine, r->nfr[kid[k]] = n;
        f += (int)n;
        st = dist_faces_put(ctx, fc, kid[k], fx + x, true);
        x += (int)dist_faces_len(fc->dims, fc->chunk, kid[k]);
        r->labels->absent++;
        for (int q = 0; q < 3; q++)
            __atomic_fetch_add(&r->lv[0][q], m[1 + q], __ATOMIC_RELAXED);
    }
    s->box = box;
    s->link = arr[0], s->nlink = count[0];
    s->face = arr[1], s->nface = count[1];
    s->plat = arr[2], s->nplat = count[2];
    s->uni = arr[3], s->nuni = count[3];
    if (st == VOX_OK) {
        for (int q = 0; q < 3; q++)
            __atomic_fetch_add(&r->lv[level][q], meta[1 + q], __ATOMIC_RELAXED);
        r->pending -= r->upn[at] == 1;
        r->upn[at] = 2;
        if (meta[0] != 1) { /* its parent's message is to come */
            const int64_t p =
                r->upoff[level + 1] + dist_node_ancestor(r->tree.grid[0], level, j, level + 1);
            r->pending += r->upn[p] == 0;
            r->upn[p] = r->upn[p] ? r->upn[p] : 1;
        }
        r->received += kids ? nk : 0;
    }
    vox_free(ctx, arr[4]);
    vox_free(ctx, arr[5]);
    vox_free(ctx, arr[6]);
    return st;
}

/* The other ranks' chunks that rank 0 takes from them (not from its records): r->remote.
 * (A message may bring a level-1 node's chunks at once: ws_take_node.) */
static void ws_remote(struct dist_run *r, int64_t nchunks)
{
    const struct vox_dist_comm *c = r->vol.comm;
    r->remote = 0;
    for (int64_t i = 0; i < nchunks; i++)
        r->remote +=
            dist_chunk_rank(r->tree.grid[0], i, c->size) != 0 && !(r->skipped && r->reused[i]);
}

/* The other ranks' chunks not yet taken. */
static enum vox_status ws_receive(struct dist_run *r, int64_t nchunks)
{
    enum vox_status s = VOX_OK;
    while ((r->received < r->remote || r->pending > 0) && s == VOX_OK)
        s = ws_receive_one(r, nchunks);
    return s;
}

/* Where fragment `id` is: its chunk c and its index k in r->fr[c], as c << 32 | k (chunks
 * hold fewer than 2^32 voxels); -1 when no chunk has it. The chunk must be done. */
static int64_t frag_loc(const struct dist_run *r, int64_t id)
{
    const int64_t *d = r->vol.dims, *g = r->tree.grid[0];
    int64_t x = id % d[2], y = id / d[2] % d[1], z = id / (d[1] * d[2]);
    int64_t c = (z / r->chunk[0] * g[1] + y / r->chunk[1]) * g[2] + x / r->chunk[2];
    const struct dist_frag *f = r->fr[c];
    int64_t lo = 0, hi = r->nfr[c];
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (f[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < r->nfr[c] && f[lo].id == id ? c << 32 | lo : -1;
}

/* join_locations in parts: unknown counts the ids no chunk has. */
struct loc_job {
    const struct dist_run *r;
    struct dist_sum *s;
    int parts;
    int64_t unknown;
};

static void loc_part(void *arg, int64_t q)
{
    struct loc_job *j = arg;
    struct dist_sum *s = j->s;
    int64_t bad = 0;
    for (int64_t k = q * s->nuni / j->parts; k < (q + 1) * s->nuni / j->parts; k++) {
        int64_t a = frag_loc(j->r, s->uni[k].a), b = frag_loc(j->r, s->uni[k].b);
        if (a < 0 || b < 0)
            bad++;
        else
            s->uni[k] = (struct dist_pair){a, b};
    }
    __atomic_add_fetch(&j->unknown, bad, __ATOMIC_RELAXED);
}

/* A node's joins, fragment ids into their places (frag_loc): all its chunks are done. */
static enum vox_status join_locations(const struct dist_run *r, struct dist_sum *s,
                                      const struct dist_par *par)
{
    struct loc_job j = {r, s, dist_par_parts(par), 0};
    dist_par_for(par, j.parts, loc_part, &j);
    if (j.unknown)
        return vox_fail(r->ctx, VOX_INTERNAL,
                        "chunked watershed: %lld joins name a fragment no chunk has",
                        (long long)j.unknown);
    return VOX_OK;
}

/* Node i of `level` >= 1 from its children's summaries, which it frees. */
static enum vox_status node_task(struct dist_run *r, int level, int64_t i)
{
    int64_t c[3], at[8];
    struct dist_sum kids[8] = {0};
    int nk = dist_node_children(r->tree.grid[level - 1], i, c, at);
    for (int k = 0; k < nk; k++)
        kids[k] = r->sum[level - 1][at[k]];
    struct dist_box b;
    node_box(r, level, i, &b);
    struct dist_sum *s = &r->sum[level][i];
    const struct dist_par par = {r->ctx, &r->tree};
    /* (a node its rank computed came as a message, its statistics with it: ws_take_node) */
    const bool theirs = r->upn && level <= r->uplev && r->upn[r->upoff[level] + i] == 2;
    enum vox_status st = theirs ? VOX_OK : dist_node_ws(r->ctx, r->vol.dims, &b, kids, nk, s, &par);
    for (int k = 0; k < nk; k++) /* the node holds what it needs of them: free them now */
        dist_sum_fini(r->ctx, &r->sum[level - 1][at[k]]);
    if (st == VOX_OK)
        st = join_locations(r, s, &par);
    if (st == VOX_OK) {
        if (!theirs)
            sum_stats(r, level, s);
        r->jn[level][i] = (struct dist_joins){s->uni, s->nuni};
        s->uni = NULL;
        s->nuni = 0;
    }
    return st;
}

static enum vox_status ws_task(void *arg, int level, int64_t i, int tid)
{
    struct dist_run *r = arg;
    return level == 0 ? atomic_chunk(r, i, tid) : node_task(r, level, i);
}

/* A worker with no atomic chunk left: its level-0 buffers go (the relabel needs less). */
static void ws_idle(void *arg, int tid)
{
    struct dist_run *r = arg;
    dist_scratch_release_one(r->ctx, &r->sc[tid]);
}

static int64_t uf_find64(int64_t *p, int64_t x)
{
    while (p[x] != x) {
        p[x] = p[p[x]];
        x = p[x];
    }
    return x;
}

/* The position in r->all of a place c << 32 | k (frag_loc). */
static inline int64_t frag_at(const struct dist_run *r, int64_t loc)
{
    return r->off[loc >> 32] + (loc & 0xffffffff);
}

/* The joins of every node: the root of a basin is its fragment of the smallest id (its first
 * voxel), whatever the order of the joins. */
static void apply_joins(struct dist_run *r)
{
    for (int l = 1; l < r->tree.nlev; l++)
        for (int64_t i = 0; i < r->tree.n[l]; i++) {
            const struct dist_joins *j = &r->jn[l][i];
            for (int64_t k = 0; k < j->n; k++) {
                int64_t a = uf_find64(r->uf, frag_at(r, j->p[k].a));
                int64_t b = uf_find64(r->uf, frag_at(r, j->p[k].b));
                if (a != b && r->all[a].id < r->all[b].id)
                    r->uf[b] = a;
                else if (a != b)
                    r->uf[a] = b;
            }
        }
}

static enum vox_status first_error(const struct dist_run *r, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (r->st[i] != VOX_OK)
            return r->st[i];
    return VOX_OK;
}

/* Chunk c's fragments into r->all, each its own union-find root. */
static void collect_chunk(void *arg, int64_t c)
{
    struct dist_run *r = arg;
    if (r->nfr[c])
        memcpy(r->all + r->off[c], r->fr[c], (size_t)r->nfr[c] * sizeof *r->all);
    for (int64_t i = r->off[c]; i < r->off[c + 1]; i++)
        r->uf[i] = i;
}

/* All fragments, chunk by chunk (r->off[c]: chunk c's first), and the identity union-find
 * over them. */
static enum vox_status collect_frags(struct dist_run *r, int64_t nchunks)
{
    r->off = vox_alloc(r->ctx, (size_t)(nchunks + 1) * sizeof *r->off);
    if (!r->off)
        return VOX_OUT_OF_MEMORY;
    r->off[0] = 0;
    for (int64_t c = 0; c < nchunks; c++)
        r->off[c + 1] = r->off[c] + r->nfr[c];
    r->nall = r->off[nchunks];
    r->all = vox_alloc(r->ctx, (size_t)(r->nall + 1) * sizeof *r->all);
    r->uf = vox_alloc(r->ctx, (size_t)(r->nall + 1) * sizeof *r->uf);
    r->basin = vox_alloc(r->ctx, (size_t)(r->nall + 1) * sizeof *r->basin);
    if (!r->all || !r->uf || !r->basin)
        return VOX_OUT_OF_MEMORY;
    dist_par_for(&(struct dist_par){r->ctx, NULL}, nchunks, collect_chunk, r);
    return VOX_OK;
}

/* Runs the octree from level `from` on; the unions are applied after (below). */
static enum vox_status run_levels(struct dist_run *r, int from)
{
    enum vox_status s = dist_tree_run(r->ctx, &r->tree, from, r->tree.nlev, 0, ws_task,
                                      from == 0 ? ws_idle : NULL, r);
    const struct dist_sum *root = &r->sum[r->tree.nlev - 1][0];
    if (s == VOX_OK && (root->nlink || root->nplat))
        s = vox_fail(r->ctx, VOX_INTERNAL,
                     "chunked watershed: %lld links and %lld plateau "
                     "voxels left at the root",
                     (long long)root->nlink, (long long)root->nplat);
    return s;
}

/* The unions of all nodes applied to the fragments (sorted by id), and the statistics. */
static enum vox_status join_all(struct dist_run *r, int64_t nchunks)
{
    enum vox_status s = collect_frags(r, nchunks);
    if (s == VOX_OK)
        apply_joins(r);
    for (int l = 0; s == VOX_OK && l < r->tree.nlev; l++)
        dist_stats_level(r->stats, VOX_DIST_WATERSHED, l, r->tree.n[l], r->lv[l][0], r->lv[l][1],
                         r->lv[l][2], r->tree.busy[l]);
    return s;
}

struct maps_job {
    struct dist_run *r;
    uint32_t **maps;
};

static void chunk_map(void *arg, int64_t c)
{
    struct maps_job *j = arg;
    struct dist_run *r = j->r;
    j->maps[c] = vox_alloc(r->ctx, (size_t)(r->nfr[c] + 1) * sizeof **j->maps);
    if (j->maps[c]) {
        j->maps[c][0] = 0;
        memcpy(j->maps[c] + 1, r->basin + r->off[c], (size_t)r->nfr[c] * sizeof **j->maps);
    }
}

/* Every chunk's map fragment -> basin (0: background). */
static uint32_t **chunk_maps(struct dist_run *r, int64_t nchunks)
{
    struct maps_job j = {r, vox_calloc(r->ctx, (size_t)nchunks, sizeof *j.maps)};
    if (!j.maps)
        return NULL;
    dist_par_for(&(struct dist_par){r->ctx, NULL}, nchunks, chunk_map, &j);
    bool ok = true;
    for (int64_t c = 0; c < nchunks; c++)
        ok = ok && j.maps[c];
    for (int64_t c = 0; !ok && c < nchunks; c++)
        vox_free(r->ctx, j.maps[c]);
    if (!ok) {
        vox_free(r->ctx, j.maps);
        return NULL;
    }
    return j.maps;
}

/* number_basins in parts of the fragments (and of the sorted roots): the roots counted,
 * their keys written, numbered, and every fragment given its root's number. */
struct nb_job {
    struct dist_run *r;
    int parts;
    int64_t at[DIST_PAR_PARTS]; /* roots per part, then each part's first key */
    uint64_t *key;
    int64_t nb;
};

static void nb_range(const struct nb_job *j, int64_t n, int64_t q, int64_t *lo, int64_t *hi)
{
    *lo = q * n / j->parts;
    *hi = (q + 1) * n / j->parts;
}

static void nb_count(void *arg, int64_t q)
{
    struct nb_job *j = arg;
    int64_t lo, hi, n = 0;
    nb_range(j, j->r->nall, q, &lo, &hi);
    for (int64_t i = lo; i < hi; i++)
        n += j->r->uf[i] == i;
    j->at[q] = n;
}

static void nb_keys(void *arg, int64_t q)
{
    struct nb_job *j = arg;
    const struct dist_run *r = j->r;
    int64_t lo, hi, k = j->at[q];
    nb_range(j, r->nall, q, &lo, &hi);
    for (int64_t i = lo; i < hi; i++)
        if (r->uf[i] == i) /* ids and positions are below 2^32 (the volume's voxel count) */
            j->key[k++] = (uint64_t)r->all[i].id << 32 | (uint64_t)i;
}

static void nb_roots(void *arg, int64_t q)
{
    struct nb_job *j = arg;
    int64_t lo, hi;
    nb_range(j, j->nb, q, &lo, &hi);
    for (int64_t k = lo; k < hi; k++)
        j->r->basin[j->key[k] & 0xffffffff] = (uint32_t)(k + 1);
}

static void nb_rest(void *arg, int64_t q)
{
    struct nb_job *j = arg;
    struct dist_run *r = j->r;
    int64_t lo, hi;
    nb_range(j, r->nall, q, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        int64_t x = i; /* no path compression: the parts walk the forest side by side */
        while (r->uf[x] != x)
            x = r->uf[x];
        if (x != i)
            r->basin[i] = r->basin[x];
    }
}

/* Basin numbers in the order of their roots' ids (their first voxels, as vox_seg_watershed
 * numbers them): r->basin; the count, or -1 when memory is short. */
static int64_t number_basins(struct dist_run *r)
{
    const struct dist_par par = {r->ctx, NULL};
    struct nb_job j = {.r = r, .parts = dist_par_parts(&par)};
    dist_par_for(&par, j.parts, nb_count, &j);
    for (int q = 0; q < j.parts; q++) {
        int64_t c = j.at[q];
        j.at[q] = j.nb;
        j.nb += c;
    }
    j.key = vox_alloc(r->ctx, (size_t)(2 * j.nb + 1) * sizeof *j.key);
    if (!j.key)
        return -1;
    dist_par_for(&par, j.parts, nb_keys, &j);
    dist_sort_u64_par(&par, j.key, j.key + j.nb, j.nb, 32);
    dist_par_for(&par, j.parts, nb_roots, &j);
    dist_par_for(&par, j.parts, nb_rest, &j);
    vox_free(r->ctx, j.key);
    return j.nb;
}

static void relabel_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    struct dist_run *r = arg;
    for (int64_t i = lo[0]; i < hi[0]; i++) {
        struct dist_box b;
        node_box(r, 0, i, &b);
        int64_t n = (b.hi[0] - b.lo[0]) * (b.hi[1] - b.lo[1]) * (b.hi[2] - b.lo[2]);
        const uint32_t *map = r->maps[i];
        uint32_t *lab = dist_scratch_get(r->ctx, &r->sc[tid], DIST_SC_LAB, (size_t)n * sizeof *lab);
        r->st[i] = map && lab ? dist_store_read(r->ctx, r->labels, &b, lab, &r->sc[tid])
                              : VOX_OUT_OF_MEMORY;
        const struct dist_jrec *rec =
            r->vol.jr ? dist_journal_find(r->vol.jr, DJ_RELABEL, i) : NULL;
        bool done =
            r->st[i] == VOX_OK && rec && dist_hash(lab, (size_t)n * sizeof *lab, 0) == rec->sum;
        if (r->st[i] == VOX_OK && !done) {
            for (int64_t k = 0; k < n; k++)
                lab[k] = map[lab[k]];
            r->st[i] = dist_store_write(r->ctx, r->labels, &b, lab, &r->sc[tid]);
            if (r->st[i] == VOX_OK && r->vol.jr)
                r->st[i] = dist_journal_add(r->ctx, r->vol.jr, DJ_RELABEL, i,
                                            dist_hash(lab, (size_t)n * sizeof *lab, 0), NULL, 0);
        }
        if (r->vol.jr && r->st[i] == VOX_OK)
            dist_journal_count(r->vol.jr, done);
    }
}

/* Numbers the basins, fills the sizes and relabels every chunk (or gives a file store the
 * chunks' maps when there are no records to keep: see struct dist_store). */
static enum vox_status finish(struct dist_run *r, int64_t nchunks, int64_t *nbasins_out,
                              int64_t **sizes_out)
{
    int64_t total = r->vol.dims[0] * r->vol.dims[1] * r->vol.dims[2];
    int64_t nb = number_basins(r);
    int64_t *sizes = nb >= 0 ? vox_calloc(r->ctx, (size_t)nb + 1, sizeof *sizes) : NULL;
    if (!sizes)
        return VOX_OUT_OF_MEMORY;
    sizes[0] = total;
    for (int64_t i = 0; i < r->nall; i++) {
        sizes[r->basin[i]] += r->all[i].size;
        sizes[0] -= r->all[i].size;
    }
    for (int64_t i = 0; i < nchunks; i++)
        r->st[i] = VOX_OK;
    r->maps = chunk_maps(r, nchunks);
    enum vox_status s = r->maps ? VOX_OK : VOX_OUT_OF_MEMORY;
    if (s == VOX_OK && r->labels->f.nfd > 0 && !r->vol.jr) {
        r->labels->cmap_n = vox_alloc(r->ctx, (size_t)nchunks * sizeof *r->labels->cmap_n);
        for (int64_t c = 0; r->labels->cmap_n && c < nchunks; c++)
            r->labels->cmap_n[c] = r->nfr[c] + 1;
        s = r->labels->cmap_n ? VOX_OK : VOX_OUT_OF_MEMORY;
        r->labels->cmap = r->maps; /* the store's now */
        r->labels->ncmap = nchunks;
        r->maps = NULL;
    } else if (s == VOX_OK) {
        vox_pool_for(vox_ctx_pool(r->ctx), (int64_t[3]){nchunks, 1, 1}, (int64_t[3]){1, 1, 1},
                     VOX_SCHED_DYNAMIC, relabel_task, r);
        s = first_error(r, nchunks);
        if (s == VOX_OK && r->vol.comm && r->vol.jr) { /* kept for the ranks (dist_shell_pack) */
            r->labels->cmap_n = vox_alloc(r->ctx, (size_t)nchunks * sizeof *r->labels->cmap_n);
            for (int64_t c = 0; r->labels->cmap_n && c < nchunks; c++)
                r->labels->cmap_n[c] = r->nfr[c] + 1;
            s = r->labels->cmap_n ? VOX_OK : VOX_OUT_OF_MEMORY;
            r->labels->fmap = r->maps;
            r->labels->ncmap = nchunks;
            r->maps = NULL;
        }
    }
    struct dist_pairs *pp = r->vol.pairs;
    if (s == VOX_OK && pp) { /* the face records' keys are fragments: (b) and (c) map them */
        pp->fmap_own = r->maps != NULL; /* else the store's (cmap, or fmap kept aside) */
        pp->fmap = r->maps ? r->maps : r->labels->cmap ? r->labels->cmap : r->labels->fmap;
        r->maps = NULL;
    }
    for (int64_t i = 0; r->maps && i < nchunks; i++)
        vox_free(r->ctx, r->maps[i]);
    vox_free(r->ctx, r->maps);
    r->maps = NULL;
    if (s != VOX_OK) {
        vox_free(r->ctx, sizes);
        return s;
    }
    *nbasins_out = nb;
    *sizes_out = sizes;
    return VOX_OK;
}

static enum vox_status check_args(struct vox_ctx *ctx, const struct vox_tensor *aff,
                                  const int64_t chunk[3], const struct vox_seg_params *p)
{
    enum vox_status s = vox_seg_params_check(ctx, p);
    if (s != VOX_OK)
        return s;
    if (!aff || aff->rank != 4 || aff->shape[0] != 3 ||
        (aff->dtype != VOX_U8 && aff->dtype != VOX_F32))
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "chunked segmentation: affinities must be a u8 or f32 (3, Z, Y, X) "
                        "tensor");
    int64_t n = 1;
    for (int a = 0; a < 3; a++) {
        if (aff->shape[a + 1] <= 0)
            return vox_fail(ctx, VOX_INVALID_ARG, "chunked segmentation: empty volume");
        n *= aff->shape[a + 1];
    }
    if (n >= (int64_t)UINT32_MAX)
        return vox_fail(ctx, VOX_UNSUPPORTED,
                        "chunked segmentation: %lld voxels, at most "
                        "2^32 - 2 (u32 labels)",
                        (long long)n);
    if (!chunk || chunk[0] < 1 || chunk[1] < 1 || chunk[2] < 1)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "chunk shape (%lld, %lld, %lld): every side must be >= 1",
                        chunk ? (long long)chunk[0] : 0ll, chunk ? (long long)chunk[1] : 0ll,
                        chunk ? (long long)chunk[2] : 0ll);
    return VOX_OK;
}

/* The chunk shape (clamped to the volume) and the octree over it; the chunk count. */
static int64_t run_geometry(struct dist_run *r, const int64_t chunk[3])
{
    int64_t grid[3];
    for (int a = 0; a < 3; a++) {
        r->chunk[a] = chunk[a] < r->vol.dims[a] ? chunk[a] : r->vol.dims[a];
        grid[a] = (r->vol.dims[a] + r->chunk[a] - 1) / r->chunk[a];
    }
    dist_tree_init(&r->tree, grid);
    r->tree.bar = r->vol.io ? r->vol.io->bar : NULL;
    return r->tree.n[0];
}

/* Rank 0 of a sharing comm: tells each rank which of its chunks come from records (an int64
 * list, maybe empty), before the rank computes any: the rank skips them in every stage. */
static enum vox_status ws_tell_skips(struct dist_run *r, int64_t nchunks)
{
    const struct vox_dist_comm *c = r->vol.comm;
    int64_t *list = vox_alloc(r->ctx, (size_t)(nchunks + 1) * sizeof *list);
    enum vox_status s = list ? VOX_OK : VOX_OUT_OF_MEMORY;
    for (int to = 1; to < c->size && s == VOX_OK; to++) {
        int64_t n = 0;
        for (int64_t i = 0; r->reused && i < nchunks; i++)
            if (r->reused[i] && dist_chunk_rank(r->tree.grid[0], i, c->size) == to)
                list[n++] = i;
        s = c->send_to(c->arg, r->ctx, to, DIST_SHARE_SETUP, list, n * (int64_t)sizeof *list);
    }
    vox_free(r->ctx, list);
    return s;
}

enum vox_status dist_ws_run(struct vox_ctx *ctx, const struct dist_vol *vol, const int64_t chunk[3],
                            const struct vox_seg_params *p, struct dist_store *out,
                            int64_t *nbasins_out, int64_t **sizes_out, struct vox_dist_stats *stats,
                            uint8_t **kept_out)
{
    *kept_out = NULL;
    struct dist_run r = {.ctx = ctx, .p = p, .vol = *vol, .labels = out, .stats = stats};
    int64_t nchunks = run_geometry(&r, chunk);
    bool ok = true;
    for (int l = 0; l < r.tree.nlev; l++) {
        r.sum[l] = vox_calloc(ctx, (size_t)r.tree.n[l], sizeof *r.sum[l]);
        r.jn[l] = vox_calloc(ctx, (size_t)r.tree.n[l], sizeof *r.jn[l]);
        ok = ok && r.sum[l] && r.jn[l];
    }
    r.fr = vox_calloc(ctx, (size_t)nchunks, sizeof *r.fr);
    r.nfr = vox_calloc(ctx, (size_t)nchunks, sizeof *r.nfr);
    r.st = vox_calloc(ctx, (size_t)nchunks, sizeof *r.st);
    r.sc = dist_scratch_new(ctx);
    enum vox_status s = ok && r.fr && r.nfr && r.st && r.sc ? VOX_OK : VOX_OUT_OF_MEMORY;
    if (s == VOX_OK && vol->comm && vol->jr) {
        /* Resumed: the other ranks' chunks whose records hold are taken from them first. With
         * a sharing comm their ranks are told to skip them (ws_tell_skips); else they compute
         * and send them again, and ws_receive_one drops those. */
        r.reused = vox_calloc(ctx, (size_t)nchunks, 1);
        s = r.reused ? VOX_OK : VOX_OUT_OF_MEMORY;
        for (int64_t i = 0; s == VOX_OK && i < nchunks; i++)
            if (dist_chunk_rank(r.tree.grid[0], i, vol->comm->size) != 0 && ws_reuse(&r, i)) {
                r.reused[i] = 1;
                dist_journal_count(vol->jr, true);
                sum_stats(&r, 0, &r.sum[0][i]);
            }
    }
    if (s == VOX_OK && dist_share_on(vol->comm)) { /* the ranks skip what records hold */
        r.skipped = r.reused != NULL;
        s = ws_tell_skips(&r, nchunks);
        /* (a rank that writes its own output computes the nodes of its subtrees) */
        r.uplev = dist_own_level(r.tree.grid[0], vol->comm->size);
        r.nupn = dist_up_layout(r.tree.grid[0], r.uplev, r.upoff);
        if (s == VOX_OK && r.uplev > 0 && !(r.upn = vox_calloc(ctx, (size_t)r.nupn, 1)))
            s = VOX_OUT_OF_MEMORY;
    }
    if (s == VOX_OK && vol->comm) { /* level 0 here and on the other ranks, then the rest */
        ws_remote(&r, nchunks);
        s = dist_tree_run(ctx, &r.tree, 0, 1, 0, ws_task, ws_idle, &r);
        if (s == VOX_OK)
            s = ws_receive(&r, nchunks);
        if (s == VOX_OK)
            s = run_levels(&r, 1);
    } else if (s == VOX_OK) {
        s = run_levels(&r, 0);
    }
    if (s == VOX_OK)
        s = join_all(&r, nchunks);
    if (s == VOX_OK)
        s = finish(&r, nchunks, nbasins_out, sizes_out);
    for (int l = 0; l < r.tree.nlev; l++) {
        for (int64_t i = 0; r.sum[l] && i < r.tree.n[l]; i++)
            dist_sum_fini(ctx, &r.sum[l][i]);
        for (int64_t i = 0; r.jn[l] && i < r.tree.n[l]; i++)
            vox_free(ctx, r.jn[l][i].p);
        vox_free(ctx, r.sum[l]);
        vox_free(ctx, r.jn[l]);
    }
    for (int64_t i = 0; r.fr && i < nchunks; i++)
        vox_free(ctx, r.fr[i]);
    vox_free(ctx, r.fr);
    vox_free(ctx, r.nfr);
    vox_free(ctx, r.st);
    vox_free(ctx, r.upn);
    if (s == VOX_OK && r.skipped)
        *kept_out = r.reused; /* the later stages' too */
    else
        vox_free(ctx, r.reused);
    vox_free(ctx, r.all);
    vox_free(ctx, r.off);
    vox_free(ctx, r.uf);
    vox_free(ctx, r.basin);
    dist_scratch_free(ctx, r.sc);
    return s;
}

enum vox_status vox_dist_watershed(struct vox_ctx *ctx, const struct vox_tensor *aff,
                                   const int64_t chunk[3], const struct vox_seg_params *p,
                                   struct vox_tensor *labels_out, int64_t *nbasins_out,
                                   int64_t **sizes_out)
{
    enum vox_status s = check_args(ctx, aff, chunk, p);
    if (s != VOX_OK)
        return s;
    struct dist_vol vol = {.aff = aff};
    for (int a = 0; a < 3; a++)
        vol.dims[a] = aff->shape[a + 1];
    struct vox_tensor lab = {0};
    s = vox_tensor_alloc(ctx, &lab, VOX_U32, 3, vol.dims);
    struct dist_store st = {.mem = lab.data};
    memcpy(st.dims, vol.dims, sizeof st.dims);
    uint8_t *kept = NULL; /* (none without a comm) */
    if (s == VOX_OK)
        s = dist_ws_run(ctx, &vol, chunk, p, &st, nbasins_out, sizes_out, NULL, &kept);
    if (s != VOX_OK) {
        vox_tensor_free(ctx, &lab);
        return s;
    }
    *labels_out = lab;
    return VOX_OK;
}

/* Another rank's chunk i of stage (a) (dist_share_send_all): its watershed, its labels kept
 * (own) and the message for rank 0 (summary, then its labels or only its faces). */
struct ws_sender {
    struct dist_run r;
    struct dist_store *own;
    bool faces_only;
};

static enum vox_status ws_send_work(void *arg, int64_t i, const uint8_t *in, int64_t in_len,
                                    void **out, int64_t *out_len, int tid)
{
    const struct ws_sender *w = arg;
    const struct dist_run *r = &w->r;
    struct vox_ctx *ctx = r->ctx;
    (void)in, (void)in_len;
    struct dist_scratch *sc = &r->sc[tid];
    struct dist_box b;
    struct dist_sum sum = {0};
    node_box(r, 0, i, &b);
    int64_t nv = (b.hi[0] - b.lo[0]) * (b.hi[1] - b.lo[1]) * (b.hi[2] - b.lo[2]);
    uint32_t *lab = NULL;
    uint8_t *blob = NULL;
    struct dist_chunk_rec rec;
    struct dist_pairs *pp = r->vol.pairs; /* this rank's face records, for its chunks */
    enum vox_status s = dist_chunk_ws(ctx, &r->vol, &b, r->p, sc, &sum, &lab, pp ? &rec : NULL);
    if (s == VOX_OK && pp && rec.npf >= 0)
        s = dist_pairs_put(ctx, pp, i, sum.nfrag, &rec, r->vol.io, tid);
    if (s == VOX_OK && w->own) /* kept for the windows of stages (b) and (c) */
        s = dist_store_write(ctx, w->own, &b, lab, sc);
    const int64_t nx = w->faces_only ? dist_faces_len(r->vol.dims, r->chunk, i) : nv;
    int64_t n = s == VOX_OK ? ws_pack(ctx, &sum, (size_t)nx * sizeof *lab, &blob) : 0;
    if (s == VOX_OK && !blob)
        s = VOX_OUT_OF_MEMORY;
    if (s == VOX_OK) {
        if (w->faces_only)
            dist_faces_extract(&b, lab, (uint32_t *)(void *)(blob + n));
        else
            memcpy(blob + n, lab, (size_t)nv * sizeof *lab);
        *out = blob;
        *out_len = n + nx * (int64_t)sizeof *lab;
    } else {
        vox_free(ctx, blob);
    }
    dist_sum_fini(ctx, &sum);
    return s;
}

/* Another rank writing its own output: node j of `level` of its subtrees from its children's
 * messages (at level 1 ws_send_work's: summary, then the six faces; above this function's
 * `keep`), as rank 0's node_task would merge them. The message (dist_pack): the node's links,
 * faces and plateau voxels where rank 0 computes its parent (keep NULL), else none; its
 * unions; at level 1 the children's fragments and faces one child after another; then
 * whether rank 0 computes its parent (1) or not (0), what it carried up (as sum_stats counts)
 * and at level 1 per child its fragment count and what it carried up. keep: the node's
 * summary without unions (ws_pack's), for its parent here. */
static enum vox_status ws_up(void *arg, int level, int64_t j, const uint8_t *const *blob,
                             const int64_t *len, int nk, void **out, int64_t *out_len, void **keep,
                             int64_t *keep_len, int tid)
{
    const struct ws_sender *w = arg;
    const struct dist_run *r = &w->r;
    struct vox_ctx *ctx = r->ctx;
    (void)tid;
    int64_t c[3], kid[8], meta[4 + 32], nf = 0, nx = 0, at[8];
    struct dist_sum kids[8] = {0}, s = {0};
    dist_node_children(r->tree.grid[level - 1], j, c, kid);
    enum vox_status st = VOX_OK;
    for (int k = 0; k < nk && st == VOX_OK; k++) {
        const int64_t n = ws_parse(ctx, blob[k], len[k], &kids[k]);
        const int64_t fl = level == 1 ? dist_faces_len(r->vol.dims, r->chunk, kid[k]) : 0;
        if (n < 0 || len[k] - n != fl * (int64_t)sizeof(uint32_t)) {
            st = n < 0 ? VOX_OUT_OF_MEMORY
                       : vox_fail(ctx, VOX_INTERNAL,
                                  "chunked watershed: "
                                  "a malformed message of node %lld of level %d",
                                  (long long)kid[k], level - 1);
            break;
        }
        const struct dist_sum *q = &kids[k];
        node_box(r, level - 1, kid[k], &kids[k].box);
        at[k] = n;
        int64_t *m = meta + 4 + 4 * k;
        m[0] = q->nfrag;
        m[1] = q->nface + q->nplat;
        m[2] = q->nlink;
        m[3] = q->nface * (int64_t)sizeof *q->face + q->nplat * (int64_t)sizeof *q->plat +
               q->nlink * (int64_t)sizeof *q->link;
        nf += q->nfrag;
        nx += fl;
    }
    struct dist_frag *fr = st == VOX_OK ? vox_alloc(ctx, (size_t)(nf + 1) * sizeof *fr) : NULL;
    uint32_t *fx = st == VOX_OK ? vox_alloc(ctx, (size_t)(nx + 1) * sizeof *fx) : NULL;
    if (st == VOX_OK && (!fr || !fx))
        st = VOX_OUT_OF_MEMORY;
    for (int k = 0, f = 0, x = 0; st == VOX_OK && k < nk; k++) {
        if (kids[k].nfrag)
            memcpy(fr + f, kids[k].frag, (size_t)kids[k].nfrag * sizeof *fr);
        const int64_t fl = (len[k] - at[k]) / (int64_t)sizeof *fx;
        if (fl)
            memcpy(fx + x, blob[k] + at[k], (size_t)fl * sizeof *fx);
        f += (int)kids[k].nfrag;
        x += (int)fl;
    }
    struct dist_box b;
    node_box(r, level, j, &b);
    if (st == VOX_OK) /* (alone: this thread is one of the rank's chunk workers) */
        st = dist_node_ws(ctx, r->vol.dims, &b, kids, nk, &s, NULL);
    const bool top = keep == NULL;
    meta[0] = top;
    meta[1] = s.nface + s.nplat;
    meta[2] = s.nlink;
    meta[3] = s.nface * (int64_t)sizeof *s.face + s.nplat * (int64_t)sizeof *s.plat +
              s.nlink * (int64_t)sizeof *s.link + s.nuni * (int64_t)sizeof *s.uni;
    if (st == VOX_OK) {
        const int64_t count[7] = {top ? s.nlink : 0,
                                  top ? s.nface : 0,
                                  top ? s.nplat : 0,
                                  s.nuni,
                                  nf,
                                  nx,
                                  4 + (level == 1 ? 4 * (int64_t)nk : 0)};
        const size_t size[7] = {sizeof *s.link, sizeof *s.face, sizeof *s.plat, sizeof *s.uni,
                                sizeof *fr,     sizeof *fx,     sizeof *meta};
        const void *const arr[7] = {s.link, s.face, s.plat, s.uni, fr, fx, meta};
        st = dist_pack(ctx, &b, 7, count, size, arr, out, out_len);
    }
    if (st == VOX_OK && keep) {
        uint8_t *kb = NULL;
        *keep_len = ws_pack(ctx, &s, 0, &kb); /* (s has no fragments) */
        *keep = kb;
        st = kb ? VOX_OK : VOX_OUT_OF_MEMORY;
    }
    for (int k = 0; k < nk; k++)
        dist_sum_fini(ctx, &kids[k]);
    dist_sum_fini(ctx, &s);
    vox_free(ctx, fr);
    vox_free(ctx, fx);
    return st;
}

enum vox_status dist_ws_send(struct vox_ctx *ctx, const struct dist_vol *vol,
                             const int64_t chunk[3], const struct vox_seg_params *p,
                             struct dist_store *own, bool faces_only, int64_t die_after)
{
    const struct vox_dist_comm *c = vol->comm;
    struct ws_sender w = {
        .r = {.ctx = ctx, .p = p, .vol = *vol}, .own = own, .faces_only = faces_only};
    int64_t nchunks = run_geometry(&w.r, chunk);
    w.r.sc = dist_scratch_new(ctx);
    int64_t *list = vox_alloc(ctx, (size_t)(nchunks + 1) * sizeof *list);
    uint8_t *skipped = vox_calloc(ctx, (size_t)nchunks + 1, 1);
    enum vox_status s = w.r.sc && list && skipped ? VOX_OK : VOX_OUT_OF_MEMORY;
    int64_t key = 0, len = 0, nskip = 0, n = 0;
    int64_t *skip = NULL; /* this rank's chunks rank 0 takes from its records */
    if (s == VOX_OK && own) {
        s = c->recv_root(c->arg, ctx, &key, (void **)&skip, &len);
        if (s == VOX_OK && key == DIST_COMM_STOP)
            s = dist_comm_stopped(ctx, c, skip, len);
        else if (s == VOX_OK && (key != DIST_SHARE_SETUP || len % (int64_t)sizeof *skip != 0))
            s = vox_fail(ctx, VOX_IO,
                         "chunked segmentation: rank %d expected the chunks to skip from "
                         "rank 0, got message %lld of %lld bytes",
                         c->rank, (long long)key, (long long)len);
        nskip = len / (int64_t)sizeof *skip;
    }
    for (int64_t k = 0; k < nskip && s == VOX_OK; k++)
        if (skip[k] >= 0 && skip[k] < nchunks)
            skipped[skip[k]] = 1;
    /* this rank's chunks, a subtree's together, but those rank 0 has from its records (it
     * runs their later stages) */
    int64_t nmine = s == VOX_OK ? dist_rank_chunks(w.r.tree.grid[0], c->rank, c->size, list) : 0;
    for (int64_t k = 0; k < nmine; k++)
        if (!skipped[list[k]])
            list[n++] = list[k];
    /* Writing its own output (rank 0 keeps no record of its chunks), the rank also computes
     * the nodes of its subtrees but those over a chunk rank 0 has from its records */
    const int64_t *g = w.r.tree.grid[0];
    const int L = faces_only ? dist_own_level(g, c->size) : 0;
    int64_t off[DIST_TREE_LEVELS + 1];
    const int64_t nup = dist_up_layout(g, L, off);
    uint8_t *up = L > 0 ? vox_calloc(ctx, (size_t)nup, 1) : NULL;
    if (s == VOX_OK && L > 0 &&
        (!up || dist_up_nodes(ctx, g, L, c->size, c->rank, skipped, off, up) < 0))
        s = VOX_OUT_OF_MEMORY;
    /* the chunks on this rank's threads; thread 0 sends their messages as they come */
    if (s == VOX_OK)
        s = dist_share_send_all(ctx, c, g, list, n, ws_send_work, ws_up, up, L, &w, die_after);
    vox_free(ctx, up);
    vox_free(ctx, list);
    vox_free(ctx, skip);
    vox_free(ctx, skipped);
    dist_scratch_free(ctx, w.r.sc);
    return s;
}
