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

#include <stdlib.h>
#include <string.h>

struct dist_run {
    struct vox_ctx *ctx;
    const struct vox_seg_params *p;
    struct dist_vol vol;
    int64_t chunk[3];
    int64_t grid[3]; /* nodes per axis at the current level */
    int64_t span[3]; /* voxels per node side at the current level */
    struct dist_sum *cur, *nxt;
    int64_t ncur; /* summaries in cur */
    struct dist_frag **fr; /* per atomic chunk: its fragments */
    int64_t *nfr;
    enum vox_status *st;
    struct dist_store *labels;
    struct vox_dist_stats *stats;
    struct dist_frag *all; /* every fragment, sorted by id */
    int64_t nall;
    int64_t *uf;
    uint32_t *basin; /* per position in `all` */
    struct dist_scratch *sc; /* per worker */
    uint32_t **maps;         /* per atomic chunk: fragment -> basin */
};

static void node_box(const struct dist_run *r, int64_t i, struct dist_box *b)
{
    int64_t c[3] = {i / (r->grid[1] * r->grid[2]), (i / r->grid[2]) % r->grid[1],
                    i % r->grid[2]};
    for (int a = 0; a < 3; a++) {
        b->lo[a] = c[a] * r->span[a];
        b->hi[a] = b->lo[a] + r->span[a] < r->vol.dims[a] ? b->lo[a] + r->span[a]
                                                           : r->vol.dims[a];
    }
}

/* Chunk i's summary s (fragments, links, faces, plateau voxels) as a blob with `extra`
 * trailing bytes (left for the caller to fill): *blob_out (NULL when memory is short). */
static int64_t ws_pack(struct vox_ctx *ctx, const struct dist_sum *s, size_t extra,
                       uint8_t **blob_out)
{
    const int64_t hd[4] = {s->nfrag, s->nlink, s->nface, s->nplat};
    const size_t part[4] = {(size_t)s->nfrag * sizeof *s->frag,
                            (size_t)s->nlink * sizeof *s->link,
                            (size_t)s->nface * sizeof *s->face,
                            (size_t)s->nplat * sizeof *s->plat};
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
    int64_t n = ws_pack(r->ctx, &r->cur[i], 0, &b);
    if (!b)
        return VOX_OUT_OF_MEMORY;
    enum vox_status st = dist_journal_add(r->ctx, r->vol.jr, DJ_WS, i, h, b, n);
    vox_free(r->ctx, b);
    return st;
}

/* Chunk i's summary from a blob of ws_pack of at least len bytes: the bytes it took, or -1
 * when the blob is malformed or memory is short. */
static int64_t ws_unpack(struct dist_run *r, int64_t i, const uint8_t *b, int64_t len)
{
    int64_t hd[4];
    if (len < (int64_t)sizeof hd)
        return -1;
    memcpy(hd, b, sizeof hd);
    struct dist_sum *s = &r->cur[i];
    bool ok = hd[0] >= 0 && hd[1] >= 0 && hd[2] >= 0 && hd[3] >= 0 &&
              hd[0] <= len && hd[1] <= len && hd[2] <= len && hd[3] <= len;
    size_t part[4] = {(size_t)hd[0] * sizeof *s->frag, (size_t)hd[1] * sizeof *s->link,
                      (size_t)hd[2] * sizeof *s->face, (size_t)hd[3] * sizeof *s->plat};
    int64_t n = (int64_t)(sizeof hd + part[0] + part[1] + part[2] + part[3]);
    ok = ok && n <= len;
    void *dst[4] = {NULL, NULL, NULL, NULL};
    const uint8_t *p = b + sizeof hd;
    for (int k = 0; k < 4 && ok; p += part[k], k++) {
        dst[k] = vox_alloc(r->ctx, part[k] + 1);
        ok = dst[k] != NULL;
        if (ok && part[k])
            memcpy(dst[k], p, part[k]);
    }
    if (!ok) {
        for (int k = 0; k < 4; k++)
            vox_free(r->ctx, dst[k]);
        return -1;
    }
    node_box(r, i, &s->box);
    r->fr[i] = dst[0], r->nfr[i] = s->nfrag = hd[0];
    s->link = dst[1], s->nlink = hd[1];
    s->face = dst[2], s->nface = hd[2];
    s->plat = dst[3], s->nplat = hd[3];
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

static void atomic_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    struct dist_run *r = arg;
    struct dist_scratch *sc = &r->sc[tid];
    for (int64_t i = lo[0]; i < hi[0]; i++) {
        struct dist_box b;
        node_box(r, i, &b);
        if (r->vol.comm && i % r->vol.comm->size != 0) {
            r->st[i] = VOX_OK; /* another rank's: dist_ws_receive */
            continue;
        }
        if (r->vol.jr && ws_reuse(r, i)) {
            dist_journal_count(r->vol.jr, true);
            r->st[i] = VOX_OK;
            continue;
        }
        int64_t n = (b.hi[0] - b.lo[0]) * (b.hi[1] - b.lo[1]) * (b.hi[2] - b.lo[2]);
        uint32_t *lab = dist_scratch_get(r->ctx, sc, DIST_SC_LAB, (size_t)n * sizeof *lab);
        r->st[i] = lab ? dist_chunk_ws(r->ctx, &r->vol, &b, r->p, sc, &r->cur[i], lab)
                       : VOX_OUT_OF_MEMORY;
        if (r->st[i] == VOX_OK)
            r->st[i] = dist_store_write(r->ctx, r->labels, &b, lab, sc);
        if (r->st[i] == VOX_OK && r->vol.jr) {
            dist_journal_count(r->vol.jr, false);
            r->st[i] = ws_record(r, i, dist_hash(lab, (size_t)n * sizeof *lab, 0));
        }
        if (r->st[i] == VOX_OK) {
            r->fr[i] = r->cur[i].frag;
            r->nfr[i] = r->cur[i].nfrag;
            r->cur[i].frag = NULL;
        }
    }
}

/* Rank 0 of a comm: the summaries and fragment labels of the other ranks' chunks, each
 * written into its chunk's slot, so the order they arrive in does not matter. */
static enum vox_status ws_receive(struct dist_run *r, int64_t nchunks)
{
    const struct vox_dist_comm *c = r->vol.comm;
    int64_t remote = nchunks - (nchunks + c->size - 1) / c->size;
    enum vox_status s = VOX_OK;
    for (int64_t k = 0; k < remote && s == VOX_OK; k++) {
        int64_t i = -1, len = 0;
        uint8_t *b = NULL;
        s = c->recv(c->arg, r->ctx, &i, (void **)&b, &len);
        if (s != VOX_OK)
            break;
        struct dist_box box;
        int64_t n = -1, nv = 0;
        if (i > 0 && i < nchunks && i % c->size != 0 && !r->fr[i] && !r->cur[i].link) {
            node_box(r, i, &box);
            nv = (box.hi[0] - box.lo[0]) * (box.hi[1] - box.lo[1]) * (box.hi[2] - box.lo[2]);
            n = ws_unpack(r, i, b, len);
        }
        if (n < 0 || len - n != nv * (int64_t)sizeof(uint32_t))
            s = vox_fail(r->ctx, VOX_IO, "chunked watershed: a malformed summary of "
                         "%lld bytes for chunk %lld from another rank", (long long)len,
                         (long long)i);
        else
            s = dist_store_write(r->ctx, r->labels, &box, (const uint32_t *)(b + n), NULL);
        vox_free(r->ctx, b);
    }
    return s;
}

static int64_t frag_pos(const struct dist_run *r, int64_t id)
{
    int64_t lo = 0, hi = r->nall;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (r->all[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < r->nall && r->all[lo].id == id ? lo : -1;
}

/* The node's joins, fragment ids into positions in r->all (on the node's thread). */
static enum vox_status join_positions(const struct dist_run *r, struct dist_sum *s)
{
    for (int64_t k = 0; k < s->nuni; k++) {
        int64_t a = frag_pos(r, s->uni[k].a), b = frag_pos(r, s->uni[k].b);
        if (a < 0 || b < 0)
            return vox_fail(r->ctx, VOX_INTERNAL, "chunked watershed: unknown fragment "
                            "%lld or %lld", (long long)s->uni[k].a, (long long)s->uni[k].b);
        s->uni[k] = (struct dist_pair){a, b};
    }
    return VOX_OK;
}

static void node_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    struct dist_run *r = arg;
    const int64_t pg[3] = {r->grid[0], r->grid[1], r->grid[2]};
    const int64_t ng[3] = {(pg[0] + 1) / 2, (pg[1] + 1) / 2, (pg[2] + 1) / 2};
    for (int64_t i = lo[0]; i < hi[0]; i++) {
        int64_t c[3] = {i / (ng[1] * ng[2]), (i / ng[2]) % ng[1], i % ng[2]};
        struct dist_sum kids[8];
        int64_t at[8];
        int nk = 0;
        for (int dz = 0; dz < 2; dz++)
            for (int dy = 0; dy < 2; dy++)
                for (int dx = 0; dx < 2; dx++) {
                    int64_t k[3] = {2 * c[0] + dz, 2 * c[1] + dy, 2 * c[2] + dx};
                    if (k[0] < pg[0] && k[1] < pg[1] && k[2] < pg[2]) {
                        at[nk] = (k[0] * pg[1] + k[1]) * pg[2] + k[2];
                        kids[nk] = r->cur[at[nk]];
                        nk++;
                    }
                }
        struct dist_box b;
        for (int a = 0; a < 3; a++) {
            b.lo[a] = c[a] * 2 * r->span[a];
            b.hi[a] = b.lo[a] + 2 * r->span[a] < r->vol.dims[a] ? b.lo[a] + 2 * r->span[a]
                                                                : r->vol.dims[a];
        }
        r->st[i] = dist_node_ws(r->ctx, r->vol.dims, &b, kids, nk, &r->nxt[i]);
        for (int k = 0; k < nk; k++) /* the node holds what it needs of them: free them now */
            dist_sum_fini(r->ctx, &r->cur[at[k]]);
        if (r->st[i] == VOX_OK)
            r->st[i] = join_positions(r, &r->nxt[i]);
    }
}

static int64_t uf_find64(int64_t *p, int64_t x)
{
    while (p[x] != x) {
        p[x] = p[p[x]];
        x = p[x];
    }
    return x;
}

/* Applies the joins of the level just built (positions in r->all), in node order. */
static void apply_joins(struct dist_run *r, int64_t nnodes)
{
    for (int64_t i = 0; i < nnodes; i++) {
        struct dist_sum *s = &r->nxt[i];
        for (int64_t k = 0; k < s->nuni; k++) {
            int64_t a = uf_find64(r->uf, s->uni[k].a), b = uf_find64(r->uf, s->uni[k].b);
            if (a != b)
                r->uf[a > b ? a : b] = a < b ? a : b;
        }
        vox_free(r->ctx, s->uni);
        s->uni = NULL;
        s->nuni = 0;
    }
}

static enum vox_status first_error(const struct dist_run *r, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (r->st[i] != VOX_OK)
            return r->st[i];
    return VOX_OK;
}

/* Whether chunk x's next fragment comes before chunk y's (at: the next of each). */
static inline bool frag_before(const struct dist_run *r, const int64_t *at, int64_t x, int64_t y)
{
    return r->fr[x][at[x]].id < r->fr[y][at[y]].id;
}

static void frag_heap_down(const struct dist_run *r, const int64_t *at, int64_t *h, int64_t n,
                           int64_t i)
{
    for (int64_t c = 2 * i + 1; c < n; i = c, c = 2 * i + 1) {
        if (c + 1 < n && frag_before(r, at, h[c + 1], h[c]))
            c++;
        if (!frag_before(r, at, h[c], h[i]))
            return;
        int64_t t = h[c];
        h[c] = h[i];
        h[i] = t;
    }
}

/* r->all: the chunks' fragments merged into id order (each chunk's are in that order: its
 * C order is the volume's); false when memory is short. */
static bool merge_frags(struct dist_run *r, int64_t nchunks)
{
    int64_t *h = vox_alloc(r->ctx, (size_t)(nchunks + 1) * sizeof *h), n = 0, k = 0;
    int64_t *at = vox_calloc(r->ctx, (size_t)nchunks + 1, sizeof *at);
    for (int64_t i = 0; h && at && i < nchunks; i++)
        if (r->nfr[i])
            h[n++] = i;
    for (int64_t i = n / 2 - 1; h && at && i >= 0; i--)
        frag_heap_down(r, at, h, n, i);
    while (h && at && n > 0) {
        const int64_t c = h[0];
        r->all[k++] = r->fr[c][at[c]++];
        if (at[c] == r->nfr[c])
            h[0] = h[--n];
        frag_heap_down(r, at, h, n, 0);
    }
    bool ok = h && at;
    vox_free(r->ctx, h);
    vox_free(r->ctx, at);
    return ok;
}

/* All fragments sorted by id, and the identity union-find over them. */
static enum vox_status collect_frags(struct dist_run *r, int64_t nchunks)
{
    r->nall = 0;
    for (int64_t i = 0; i < nchunks; i++)
        r->nall += r->nfr[i];
    r->all = vox_alloc(r->ctx, (size_t)(r->nall + 1) * sizeof *r->all);
    r->uf = vox_alloc(r->ctx, (size_t)(r->nall + 1) * sizeof *r->uf);
    r->basin = vox_alloc(r->ctx, (size_t)(r->nall + 1) * sizeof *r->basin);
    if (!r->all || !r->uf || !r->basin)
        return VOX_OUT_OF_MEMORY;
    if (!merge_frags(r, nchunks))
        return VOX_OUT_OF_MEMORY;
    for (int64_t i = 0; i < r->nall; i++)
        r->uf[i] = i;
    return VOX_OK;
}

/* The statistics of the summaries of one level (what they pass up). */
static void level_stats(const struct dist_run *r, int64_t level, int64_t n, double t0)
{
    int64_t fz = 0, ed = 0, by = 0;
    for (int64_t i = 0; i < n; i++) {
        const struct dist_sum *c = &r->cur[i];
        fz += c->nface + c->nplat;
        ed += c->nlink;
        by += c->nface * (int64_t)sizeof *c->face + c->nplat * (int64_t)sizeof *c->plat +
              c->nlink * (int64_t)sizeof *c->link + c->nuni * (int64_t)sizeof *c->uni;
    }
    dist_stats_level(r->stats, VOX_DIST_WATERSHED, level, n, fz, ed, by, vox_time_now() - t0);
}

/* Runs the octree levels; r->cur holds level 0 on entry, the root on return. */
static enum vox_status run_levels(struct dist_run *r)
{
    enum vox_status s = VOX_OK;
    int64_t level = 0;
    while (s == VOX_OK && (r->grid[0] > 1 || r->grid[1] > 1 || r->grid[2] > 1)) {
        int64_t ng[3] = {(r->grid[0] + 1) / 2, (r->grid[1] + 1) / 2, (r->grid[2] + 1) / 2};
        int64_t nn = ng[0] * ng[1] * ng[2], np = r->grid[0] * r->grid[1] * r->grid[2];
        double t0 = vox_time_now();
        r->nxt = vox_calloc(r->ctx, (size_t)nn, sizeof *r->nxt);
        if (!r->nxt)
            return VOX_OUT_OF_MEMORY;
        for (int64_t i = 0; i < nn; i++)
            r->st[i] = VOX_OK;
        vox_pool_for(vox_ctx_pool(r->ctx), (int64_t[3]){nn, 1, 1}, (int64_t[3]){1, 1, 1},
                     VOX_SCHED_DYNAMIC, node_task, r);
        s = first_error(r, nn);
        if (s == VOX_OK)
            apply_joins(r, nn);
        for (int64_t i = 0; i < np; i++)
            dist_sum_fini(r->ctx, &r->cur[i]);
        vox_free(r->ctx, r->cur);
        r->cur = r->nxt;
        r->ncur = nn;
        r->nxt = NULL;
        memcpy(r->grid, ng, sizeof ng);
        for (int a = 0; a < 3; a++)
            r->span[a] *= 2;
        if (s == VOX_OK)
            level_stats(r, ++level, nn, t0);
    }
    if (s == VOX_OK && (r->cur[0].nlink || r->cur[0].nplat))
        s = vox_fail(r->ctx, VOX_INTERNAL, "chunked watershed: %lld links and %lld plateau "
                     "voxels left at the root", (long long)r->cur[0].nlink,
                     (long long)r->cur[0].nplat);
    return s;
}

/* Every chunk's map fragment -> basin (0: background), in one walk over all fragments in id
 * order: a chunk's own come in that order too, so the k-th met of chunk c is fr[c][k - 1]. */
static uint32_t **chunk_maps(struct dist_run *r, int64_t nchunks)
{
    uint32_t **maps = vox_calloc(r->ctx, (size_t)nchunks, sizeof *maps);
    int64_t *met = vox_calloc(r->ctx, (size_t)nchunks, sizeof *met);
    bool ok = maps && met;
    for (int64_t i = 0; ok && i < nchunks; i++) {
        maps[i] = vox_alloc(r->ctx, (size_t)(r->nfr[i] + 1) * sizeof **maps);
        ok = maps[i] != NULL;
        if (ok)
            maps[i][0] = 0;
    }
    const int64_t *d = r->vol.dims;
    for (int64_t k = 0; ok && k < r->nall; k++) {
        int64_t id = r->all[k].id, x = id % d[2], y = id / d[2] % d[1], z = id / (d[1] * d[2]);
        int64_t c = (z / r->chunk[0] * r->grid[1] + y / r->chunk[1]) * r->grid[2] +
                    x / r->chunk[2];
        maps[c][++met[c]] = r->basin[k];
    }
    vox_free(r->ctx, met);
    for (int64_t i = 0; !ok && maps && i < nchunks; i++)
        vox_free(r->ctx, maps[i]);
    if (!ok) {
        vox_free(r->ctx, maps);
        return NULL;
    }
    return maps;
}

static void relabel_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    struct dist_run *r = arg;
    for (int64_t i = lo[0]; i < hi[0]; i++) {
        struct dist_box b;
        node_box(r, i, &b);
        int64_t n = (b.hi[0] - b.lo[0]) * (b.hi[1] - b.lo[1]) * (b.hi[2] - b.lo[2]);
        const uint32_t *map = r->maps[i];
        uint32_t *lab =
            dist_scratch_get(r->ctx, &r->sc[tid], DIST_SC_LAB, (size_t)n * sizeof *lab);
        r->st[i] = map && lab ? dist_store_read(r->ctx, r->labels, &b, lab, &r->sc[tid])
                              : VOX_OUT_OF_MEMORY;
        const struct dist_jrec *rec = r->vol.jr ? dist_journal_find(r->vol.jr, DJ_RELABEL, i)
                                                : NULL;
        bool done = r->st[i] == VOX_OK && rec &&
                    dist_hash(lab, (size_t)n * sizeof *lab, 0) == rec->sum;
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
    int64_t nb = 0, total = r->vol.dims[0] * r->vol.dims[1] * r->vol.dims[2];
    for (int64_t i = 0; i < r->nall; i++) {
        int64_t root = uf_find64(r->uf, i);
        r->basin[i] = root == i ? (uint32_t)++nb : r->basin[root];
    }
    int64_t *sizes = vox_calloc(r->ctx, (size_t)nb + 1, sizeof *sizes);
    if (!sizes)
        return VOX_OUT_OF_MEMORY;
    sizes[0] = total;
    for (int64_t i = 0; i < r->nall; i++) {
        sizes[r->basin[i]] += r->all[i].size;
        sizes[0] -= r->all[i].size;
    }
    for (int64_t i = 0; i < nchunks; i++)
        r->st[i] = VOX_OK;
    /* Level-0 geometry again for the chunk boxes. */
    for (int a = 0; a < 3; a++) {
        r->span[a] = r->chunk[a];
        r->grid[a] = (r->vol.dims[a] + r->chunk[a] - 1) / r->chunk[a];
    }
    r->maps = chunk_maps(r, nchunks);
    enum vox_status s = r->maps ? VOX_OK : VOX_OUT_OF_MEMORY;
    if (s == VOX_OK && r->labels->f.nfd > 0 && !r->vol.jr) {
        r->labels->cmap = r->maps; /* the store's now */
        r->labels->ncmap = nchunks;
        r->maps = NULL;
    } else if (s == VOX_OK) {
        vox_pool_for(vox_ctx_pool(r->ctx), (int64_t[3]){nchunks, 1, 1}, (int64_t[3]){1, 1, 1},
                     VOX_SCHED_DYNAMIC, relabel_task, r);
        s = first_error(r, nchunks);
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
        return vox_fail(ctx, VOX_UNSUPPORTED, "chunked segmentation: %lld voxels, at most "
                        "2^32 - 2 (u32 labels)", (long long)n);
    if (!chunk || chunk[0] < 1 || chunk[1] < 1 || chunk[2] < 1)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "chunk shape (%lld, %lld, %lld): every side must be >= 1",
                        chunk ? (long long)chunk[0] : 0ll, chunk ? (long long)chunk[1] : 0ll,
                        chunk ? (long long)chunk[2] : 0ll);
    return VOX_OK;
}

enum vox_status dist_ws_run(struct vox_ctx *ctx, const struct dist_vol *vol,
                            const int64_t chunk[3], const struct vox_seg_params *p,
                            struct dist_store *out, int64_t *nbasins_out, int64_t **sizes_out,
                            struct vox_dist_stats *stats)
{
    struct dist_run r = {.ctx = ctx, .p = p, .vol = *vol, .labels = out, .stats = stats};
    int64_t nchunks = 1;
    for (int a = 0; a < 3; a++) {
        r.chunk[a] = chunk[a] < r.vol.dims[a] ? chunk[a] : r.vol.dims[a];
        r.span[a] = r.chunk[a];
        r.grid[a] = (r.vol.dims[a] + r.chunk[a] - 1) / r.chunk[a];
        nchunks *= r.grid[a];
    }
    r.cur = vox_calloc(ctx, (size_t)nchunks, sizeof *r.cur);
    r.fr = vox_calloc(ctx, (size_t)nchunks, sizeof *r.fr);
    r.nfr = vox_calloc(ctx, (size_t)nchunks, sizeof *r.nfr);
    r.st = vox_calloc(ctx, (size_t)nchunks, sizeof *r.st);
    r.sc = dist_scratch_new(ctx);
    enum vox_status s = r.cur && r.fr && r.nfr && r.st && r.sc ? VOX_OK : VOX_OUT_OF_MEMORY;
    double t0 = vox_time_now();
    if (s == VOX_OK) {
        vox_pool_for(vox_ctx_pool(ctx), (int64_t[3]){nchunks, 1, 1}, (int64_t[3]){1, 1, 1},
                     VOX_SCHED_DYNAMIC, atomic_task, &r);
        s = first_error(&r, nchunks);
        dist_scratch_release(ctx, r.sc); /* the relabel needs less */
    }
    if (s == VOX_OK && vol->comm)
        s = ws_receive(&r, nchunks);
    if (s == VOX_OK)
        s = collect_frags(&r, nchunks);
    r.ncur = nchunks;
    if (s == VOX_OK)
        level_stats(&r, 0, nchunks, t0);
    if (s == VOX_OK)
        s = run_levels(&r);
    if (s == VOX_OK)
        s = finish(&r, nchunks, nbasins_out, sizes_out);
    for (int64_t i = 0; r.cur && i < r.ncur; i++)
        dist_sum_fini(ctx, &r.cur[i]);
    for (int64_t i = 0; r.fr && i < nchunks; i++)
        vox_free(ctx, r.fr[i]);
    vox_free(ctx, r.cur);
    vox_free(ctx, r.fr);
    vox_free(ctx, r.nfr);
    vox_free(ctx, r.st);
    vox_free(ctx, r.all);
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
    if (s == VOX_OK)
        s = dist_ws_run(ctx, &vol, chunk, p, &st, nbasins_out, sizes_out, NULL);
    if (s != VOX_OK) {
        vox_tensor_free(ctx, &lab);
        return s;
    }
    *labels_out = lab;
    return VOX_OK;
}

enum vox_status dist_ws_send(struct vox_ctx *ctx, const struct dist_vol *vol,
                             const int64_t chunk[3], const struct vox_seg_params *p)
{
    const struct vox_dist_comm *c = vol->comm;
    struct dist_run r = {.ctx = ctx, .p = p, .vol = *vol};
    int64_t nchunks = 1;
    for (int a = 0; a < 3; a++) {
        r.span[a] = chunk[a] < r.vol.dims[a] ? chunk[a] : r.vol.dims[a];
        r.grid[a] = (r.vol.dims[a] + r.span[a] - 1) / r.span[a];
        nchunks *= r.grid[a];
    }
    struct dist_scratch *sc = dist_scratch_new(ctx);
    enum vox_status s = sc ? VOX_OK : VOX_OUT_OF_MEMORY;
    for (int64_t i = c->rank; i < nchunks && s == VOX_OK; i += c->size) {
        struct dist_box b;
        struct dist_sum sum = {0};
        node_box(&r, i, &b);
        int64_t nv = (b.hi[0] - b.lo[0]) * (b.hi[1] - b.lo[1]) * (b.hi[2] - b.lo[2]);
        uint32_t *lab = vox_alloc(ctx, (size_t)nv * sizeof *lab);
        uint8_t *blob = NULL;
        s = lab ? dist_chunk_ws(ctx, &r.vol, &b, p, sc, &sum, lab) : VOX_OUT_OF_MEMORY;
        int64_t n = s == VOX_OK ? ws_pack(ctx, &sum, (size_t)nv * sizeof *lab, &blob) : 0;
        if (s == VOX_OK && !blob)
            s = VOX_OUT_OF_MEMORY;
        if (s == VOX_OK) {
            memcpy(blob + n, lab, (size_t)nv * sizeof *lab);
            s = c->send(c->arg, ctx, i, blob, n + nv * (int64_t)sizeof *lab);
        }
        vox_free(ctx, blob);
        vox_free(ctx, lab);
        dist_sum_fini(ctx, &sum);
    }
    dist_scratch_free(ctx, sc);
    return s;
}
