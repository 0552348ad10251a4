/*
 * dist/agg.c: the chunked agglomeration (stage c), equal to vox_seg_agglomerate over the
 * whole-volume region graph of the base segments, bitwise, for any chunking and thread count.
 *
 * Global process P (seg/agglomerate.c): repeatedly pop the live edge of best key (score
 * num/den descending, then cluster ids a < b ascending; a cluster's id is its smallest base
 * id), merge, stop at the first top a cut at max_threshold would not apply.
 *
 * Region graph. Each atomic chunk counts the faces (u, u + e_c) whose lower voxel u is in its
 * box (so it reads its box plus one voxel on the + sides): every face is counted exactly once,
 * and a node adds its children's halves of an edge exactly (sum, count, max, histograms).
 * A vertex "touches" a node when it has a voxel on a node face with a neighbour outside the
 * node in the volume; an untouching (interior) vertex lies wholly inside, so its edges are
 * complete.
 *
 * Why ABISS's rule is not enough here (reference note §3.5): it relies on a merged edge's
 * score being at most the larger of its parts. That holds for the mean and the max, not for
 * the quantile ({0, 10} and {0, 10} have 0.9-quantile 0, their union {0, 0, 10, 10} has 10)
 * nor for the smoothed mean (sum / (k + count) grows when parts add). So the rule below uses
 * an upper bound ub(e) that holds for every union of parts: the mean sum/count (mean and
 * smoothed) or the max face (max and quantile); score(union) <= max ub(parts).
 *
 * Theorem (contraction). Let C be a vertex set of the current global graph G such that the
 * greedy process P_C on G[C] alone merges C into one cluster with merge scores >= s_min, and
 * every edge leaving C has ub < s_min. Then P's history is an interleaving of P_C's and that
 * of P on G/C (C contracted). Proof: while C is incomplete in P, the best live edge inside C
 * is P_C's next merge (the inside evolves only by inside pops, in key order), with score
 * >= s_min; any edge from a part of C to the rest is a union of edges leaving C, so its score
 * is < s_min: none is popped and P does not stop. The other pops in that period beat s_min,
 * so they are a prefix of G/C's outside pops too (the contracted vertex's edges are < s_min);
 * after it both processes are in the same state. The hypothesis on C stays true when disjoint
 * sets elsewhere are contracted (leaving edges stay unions of the same parts), so the theorem
 * applies to every node's sets in any order.
 *
 * Node pass. P_I is vox_seg_agglomerate on the interior vertices' subgraph (ids compacted
 * monotonically, so ties break the same). A P_I cluster K is a cluster of P_K restricted to K
 * (same argument). For every merge of P_I: s_min of its subtree, exact scores by summing each
 * edge's statistics into the merge that joins its ends (union by rank, link times), and the
 * largest ub over edges leaving the cluster (small-to-large heaps, lazily dropping edges that
 * became internal). The topmost merges with ub_out < s_min (exact 128-bit comparison) are
 * decided with their subtrees and contracted; the rest goes up. The root decides everything
 * (nothing touches: P there is P on G/decided).
 *
 * Order. Every merge of P's history is the best available merge of its merge forest F (both
 * children formed: the edge is live, with the score recorded, and P pops the best live edge).
 * So replaying F with a heap of available merges, keyed exactly, reproduces the history.
 */
#include "dist_internal.h"
#include "seg/seg_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct ag_vtx {
    uint32_t id;
    uint8_t touch; /* bit 2 * axis + side */
};

struct ag_edge {
    uint32_t a, b;
    uint8_t max;
    int32_t nbins;
    int64_t hist;
    uint64_t sum, count;
};

/* A decided merge: cluster ids, exact score, and its place (level, order in the node). */
struct ag_fin {
    uint32_t a, b;
    uint64_t num, den;
    double score;
    int64_t level, seq;
};

struct ag_sum {
    struct dist_box box;
    int64_t level; /* its octree level (0: an atomic chunk) */
    struct ag_vtx *v;
    int64_t nv, vcap;
    struct ag_edge *e;
    int64_t ne, ecap;
    uint8_t *hbin;
    uint64_t *hcnt;
    int64_t nh, hcap;
    struct ag_fin *fin;
    int64_t nfin, fcap;
};

struct ag_run {
    struct vox_ctx *ctx;
    const struct vox_seg_params *p;
    const struct dist_vol *vol;
    const struct dist_labels *labels;
    struct vox_dist_stats *stats;
    int64_t nseg, dims[3], chunk[3];
    bool hist;
    struct dist_tree tree;
    struct ag_sum *sum[DIST_TREE_LEVELS]; /* per level and node */
    int64_t lv[DIST_TREE_LEVELS][3];      /* per level: vertices, edges, bytes carried up */
    struct dist_scratch *sc;              /* per worker */
    struct dist_dend *side;   /* run as a side job after the atomic chunks (NULL: none) */
    struct dist_share *share; /* rank 0: the other ranks' atomic chunks (or NULL) */
};

static void ag_sum_fini(struct vox_ctx *ctx, struct ag_sum *s)
{
    vox_free(ctx, s->v);
    vox_free(ctx, s->e);
    vox_free(ctx, s->hbin);
    vox_free(ctx, s->hcnt);
    vox_free(ctx, s->fin);
    memset(s, 0, sizeof *s);
}

static int vtx_cmp(const void *x, const void *y)
{
    const struct ag_vtx *a = x, *b = y;
    return (a->id > b->id) - (a->id < b->id);
}

static uint64_t vtx_key(const void *x)
{
    return ((const struct ag_vtx *)x)->id;
}

struct ag_kv {
    uint64_t key;
    int64_t i;
};

static uint64_t kv_key(const void *x)
{
    return (uint64_t)((const struct ag_kv *)x)->i;
}

static uint64_t kv_key_hi(const void *x)
{
    return ((const struct ag_kv *)x)->key;
}

static int kv_cmp(const void *x, const void *y)
{
    const struct ag_kv *a = x, *b = y;
    if (a->key != b->key)
        return (a->key > b->key) - (a->key < b->key);
    return (a->i > b->i) - (a->i < b->i);
}

static int64_t ag_pos(const struct ag_sum *s, uint32_t id)
{
    int64_t lo = 0, hi = s->nv;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (s->v[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Sorts vertices by id, OR-ing the touch bits of duplicates. */
static void ag_compact_vtx(struct vox_ctx *ctx, struct ag_sum *s)
{
    dist_sort(ctx, s->v, s->nv, sizeof *s->v, vtx_key, NULL, vtx_cmp);
    int64_t m = 0;
    for (int64_t i = 0; i < s->nv; i++) {
        if (m > 0 && s->v[m - 1].id == s->v[i].id)
            s->v[m - 1].touch |= s->v[i].touch;
        else
            s->v[m++] = s->v[i];
    }
    s->nv = m;
}

/* Appends to (e, bins) one edge: the sum of the group kv[i..j) of s's edges. */
static void ag_group(const struct ag_sum *s, const struct ag_kv *kv, int64_t i, int64_t j,
                     struct ag_edge *o, uint8_t *bin, uint64_t *cnt, int64_t *nh, bool hist)
{
    *o = (struct ag_edge){.a = (uint32_t)(kv[i].key >> 32), .b = (uint32_t)kv[i].key, .hist = *nh};
    uint64_t h[256];
    if (hist)
        memset(h, 0, sizeof h);
    for (int64_t k = i; k < j; k++) {
        const struct ag_edge *e = &s->e[kv[k].i];
        o->max = e->max > o->max ? e->max : o->max;
        o->sum += e->sum;
        o->count += e->count;
        for (int32_t t = 0; hist && t < e->nbins; t++)
            h[s->hbin[e->hist + t]] += s->hcnt[e->hist + t];
    }
    for (int b = 0; hist && b < 256; b++)
        if (h[b]) {
            bin[*nh] = (uint8_t)b;
            cnt[(*nh)++] = h[b];
            o->nbins++;
        }
}

/* Sorts the edges by (a, b) and adds parallel ones exactly (histograms re-packed). */
static enum vox_status ag_compact_edges(struct vox_ctx *ctx, struct ag_sum *s, bool hist)
{
    struct ag_kv *kv = vox_alloc(ctx, (size_t)(s->ne + 1) * sizeof *kv);
    struct ag_edge *e = vox_alloc(ctx, (size_t)(s->ne + 1) * sizeof *e);
    uint8_t *bin = vox_alloc(ctx, (size_t)s->nh + 1);
    uint64_t *cnt = vox_alloc(ctx, (size_t)(s->nh + 1) * sizeof *cnt);
    if (!kv || !e || !bin || !cnt) {
        vox_free(ctx, kv);
        vox_free(ctx, e);
        vox_free(ctx, bin);
        vox_free(ctx, cnt);
        return VOX_OUT_OF_MEMORY;
    }
    for (int64_t i = 0; i < s->ne; i++)
        kv[i] = (struct ag_kv){(uint64_t)s->e[i].a << 32 | s->e[i].b, i};
    dist_sort(ctx, kv, s->ne, sizeof *kv, kv_key, kv_key_hi, kv_cmp);
    int64_t m = 0, nh = 0;
    for (int64_t i = 0, j; i < s->ne; i = j) {
        for (j = i + 1; j < s->ne && kv[j].key == kv[i].key; j++)
            ;
        ag_group(s, kv, i, j, &e[m++], bin, cnt, &nh, hist);
    }
    vox_free(ctx, kv);
    vox_free(ctx, s->e);
    vox_free(ctx, s->hbin);
    vox_free(ctx, s->hcnt);
    s->e = e;
    s->ne = s->ecap = m;
    s->hbin = bin;
    s->hcnt = cnt;
    s->nh = s->hcap = nh;
    return VOX_OK;
}

/* ---- exact keys ------------------------------------------------------------------------ */

/* x/y beats u/v (strictly larger). */
static inline bool q_gt(uint64_t x, uint64_t y, uint64_t u, uint64_t v)
{
    return (unsigned __int128)x * v > (unsigned __int128)u * y;
}

/* The upper bound of any union of parts including e (see the top). */
static void ag_ub(const struct ag_run *r, const struct ag_edge *e, uint64_t *num, uint64_t *den)
{
    bool mean = r->p->score == VOX_SEG_SCORE_MEAN || r->p->score == VOX_SEG_SCORE_SMOOTHED;
    *num = mean ? e->sum : e->max;
    *den = mean ? e->count : 1;
}

/* ---- the node pass --------------------------------------------------------------------- */

/* Per-merge data of P_I, indexed by merge. */
struct ag_forest {
    int64_t nm;
    const struct vox_seg_merge *m; /* local ids 1..nv */
    uint64_t *num, *den;           /* exact score */
    uint64_t *mnum, *mden;         /* s_min of the subtree */
    int64_t *cons;                 /* the merge that consumes this cluster, or -1 */
    bool *dec;
};

/* Union by rank without compression: each link keeps its merge index, so the merge joining
 * u and v is the largest link time on their paths to where they meet. */
static int64_t ag_join_time(const int64_t *par, const int64_t *lt, int64_t u, int64_t v)
{
    int64_t t = -1;
    while (u != v) {
        if (lt[u] <= lt[v]) {
            if (par[u] == u)
                return -1;
            t = lt[u] > t ? lt[u] : t;
            u = par[u];
        } else {
            if (par[v] == v)
                return -1;
            t = lt[v] > t ? lt[v] : t;
            v = par[v];
        }
    }
    return t;
}

/* Exact (num, den) of every merge of P_I: the statistics of the edges its merge joins. */
static enum vox_status ag_exact(const struct ag_run *r, const struct ag_sum *s, const bool *in,
                                const uint32_t *pos, struct ag_forest *f)
{
    int64_t nv = s->nv, nm = f->nm;
    if (r->p->score == VOX_SEG_SCORE_MAX || r->p->score == VOX_SEG_SCORE_QUANTILE) {
        for (int64_t k = 0; k < nm; k++) {
            f->num[k] = (uint64_t)llround(f->m[k].score * 255.0);
            f->den[k] = 1;
        }
        return VOX_OK;
    }
    int64_t *par = vox_alloc(r->ctx, (size_t)(nv + 1) * sizeof *par);
    int64_t *lt = vox_alloc(r->ctx, (size_t)(nv + 1) * sizeof *lt);
    int64_t *rank = vox_calloc(r->ctx, (size_t)nv + 1, sizeof *rank);
    if (!par || !lt || !rank) {
        vox_free(r->ctx, par);
        vox_free(r->ctx, lt);
        vox_free(r->ctx, rank);
        return VOX_OUT_OF_MEMORY;
    }
    for (int64_t i = 0; i < nv; i++) {
        par[i] = i;
        lt[i] = INT64_MAX;
    }
    for (int64_t k = 0; k < nm; k++) {
        int64_t x = f->m[k].a - 1, y = f->m[k].b - 1;
        while (par[x] != x)
            x = par[x];
        while (par[y] != y)
            y = par[y];
        if (rank[x] < rank[y]) {
            int64_t t = x;
            x = y;
            y = t;
        }
        par[y] = x;
        lt[y] = k;
        rank[x] += rank[x] == rank[y];
        f->num[k] = 0;
        f->den[k] = r->p->score == VOX_SEG_SCORE_SMOOTHED ? (uint64_t)r->p->smooth_k : 0;
    }
    for (int64_t i = 0; i < s->ne; i++) {
        int64_t u = pos[2 * i], v = pos[2 * i + 1];
        int64_t t = in[u] && in[v] ? ag_join_time(par, lt, u, v) : -1;
        if (t >= 0) {
            f->num[t] += s->e[i].sum;
            f->den[t] += s->e[i].count;
        }
    }
    vox_free(r->ctx, par);
    vox_free(r->ctx, lt);
    vox_free(r->ctx, rank);
    return VOX_OK;
}

/* Max-heaps of edge indices by ub, one per cluster of P_I (small-to-large merging). */
struct ag_heaps {
    struct vox_ctx *ctx;
    const uint64_t *un, *ud; /* ub per edge */
    int64_t **h, *n, *cap, *uf;
};

static bool hp_push(struct ag_heaps *H, int64_t r, int64_t x)
{
    if (H->n[r] == H->cap[r]) {
        int64_t c = H->cap[r] ? 2 * H->cap[r] : 4;
        int64_t *a = vox_realloc(H->ctx, H->h[r], (size_t)H->cap[r] * 8, (size_t)c * 8);
        if (!a)
            return false;
        H->h[r] = a;
        H->cap[r] = c;
    }
    int64_t *a = H->h[r], i = H->n[r]++;
    while (i > 0 && q_gt(H->un[x], H->ud[x], H->un[a[(i - 1) / 2]], H->ud[a[(i - 1) / 2]])) {
        a[i] = a[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    a[i] = x;
    return true;
}

static void hp_pop(struct ag_heaps *H, int64_t r)
{
    int64_t *a = H->h[r], n = --H->n[r], x = a[n], i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && q_gt(H->un[a[c + 1]], H->ud[a[c + 1]], H->un[a[c]], H->ud[a[c]]))
            c++;
        if (!q_gt(H->un[a[c]], H->ud[a[c]], H->un[x], H->ud[x]))
            break;
        a[i] = a[c];
        i = c;
    }
    if (n > 0)
        a[i] = x;
}

static int64_t hp_find(int64_t *uf, int64_t x)
{
    while (uf[x] != x) {
        uf[x] = uf[uf[x]];
        x = uf[x];
    }
    return x;
}

/* Joins the clusters of local vertices x and y; returns the new root, -1 out of memory. */
static int64_t hp_union(struct ag_heaps *H, int64_t x, int64_t y)
{
    x = hp_find(H->uf, x);
    y = hp_find(H->uf, y);
    if (H->n[x] < H->n[y]) {
        int64_t t = x;
        x = y;
        y = t;
    }
    for (int64_t i = 0; i < H->n[y]; i++)
        if (!hp_push(H, x, H->h[y][i]))
            return -1;
    vox_free(H->ctx, H->h[y]);
    H->h[y] = NULL;
    H->n[y] = H->cap[y] = 0;
    H->uf[y] = x;
    return x;
}

/* Marks f->dec: the merges whose cluster has every leaving edge's ub below its s_min. */
static enum vox_status ag_leaving(const struct ag_run *r, const struct ag_sum *s, const bool *in,
                                  const uint32_t *pos, struct ag_heaps *H, struct ag_forest *f)
{
    for (int64_t i = 0; i < s->ne; i++) {
        int64_t u = pos[2 * i], v = pos[2 * i + 1];
        if ((in[u] && !hp_push(H, u, i)) || (in[v] && !hp_push(H, v, i)))
            return VOX_OUT_OF_MEMORY;
    }
    for (int64_t k = 0; k < f->nm; k++) {
        int64_t x = hp_union(H, f->m[k].a - 1, f->m[k].b - 1);
        if (x < 0)
            return VOX_OUT_OF_MEMORY;
        while (H->n[x] > 0) {
            const int64_t i = H->h[x][0];
            if (hp_find(H->uf, pos[2 * i]) != hp_find(H->uf, pos[2 * i + 1]))
                break;
            hp_pop(H, x);
        }
        f->dec[k] =
            H->n[x] == 0 || q_gt(f->mnum[k], f->mden[k], H->un[H->h[x][0]], H->ud[H->h[x][0]]);
    }
    (void)r;
    return VOX_OK;
}

/* s_min per subtree and the consumer of each merge's cluster. */
static void ag_tree(int64_t nv, struct ag_forest *f, int64_t *last)
{
    for (int64_t i = 0; i < nv; i++)
        last[i] = -1;
    for (int64_t k = 0; k < f->nm; k++) {
        int64_t c[2] = {last[f->m[k].a - 1], last[f->m[k].b - 1]};
        f->mnum[k] = f->num[k];
        f->mden[k] = f->den[k];
        f->cons[k] = -1;
        for (int j = 0; j < 2; j++) {
            if (c[j] < 0)
                continue;
            f->cons[c[j]] = k;
            if (q_gt(f->mnum[k], f->mden[k], f->mnum[c[j]], f->mden[c[j]])) {
                f->mnum[k] = f->mnum[c[j]];
                f->mden[k] = f->mden[c[j]];
            }
        }
        last[f->m[k].a - 1] = k;
    }
}

/* P_I: vox_seg_agglomerate over the interior vertices' edges, ids = 1 + position. */
static enum vox_status ag_interior(const struct ag_run *r, const struct ag_sum *s, bool *in,
                                   const uint32_t *pos, struct vox_merge_history *h)
{
    struct vox_rag g = {.nseg = s->nv, .nhist = s->nh, .hist_bin = s->hbin, .hist_count = s->hcnt};
    for (int64_t i = 0; i < s->nv; i++)
        in[i] = s->v[i].touch == 0;
    g.e = vox_alloc(r->ctx, (size_t)(s->ne + 1) * sizeof *g.e);
    if (!g.e)
        return VOX_OUT_OF_MEMORY;
    for (int64_t i = 0; i < s->ne; i++) {
        const struct ag_edge *e = &s->e[i];
        int64_t u = pos[2 * i], v = pos[2 * i + 1];
        if (in[u] && in[v])
            g.e[g.n++] = (struct vox_rag_edge){.a = (uint32_t)u + 1,
                                               .b = (uint32_t)v + 1,
                                               .max = e->max,
                                               .nbins = e->nbins,
                                               .hist = e->hist,
                                               .sum = e->sum,
                                               .count = e->count};
    }
    enum vox_status st = vox_seg_agglomerate(r->ctx, &g, r->p, h);
    vox_free(r->ctx, g.e);
    return st;
}

/* Records the decided merges and contracts their clusters (uf: scratch, nv entries). */
static enum vox_status ag_contract(const struct ag_run *r, struct ag_sum *s,
                                   const struct ag_forest *f, const uint32_t *pos, int64_t *uf)
{
    for (int64_t i = 0; i < s->nv; i++)
        uf[i] = i;
    for (int64_t k = 0; k < f->nm; k++) {
        if (!f->dec[k])
            continue;
        int64_t a = f->m[k].a - 1, b = f->m[k].b - 1;
        struct ag_fin x = {.a = s->v[a].id,
                           .b = s->v[b].id,
                           .num = f->num[k],
                           .den = f->den[k],
                           .score = f->m[k].score,
                           .level = s->level,
                           .seq = k};
        if (!dist_push(r->ctx, (void **)&s->fin, &s->nfin, &s->fcap, &x, sizeof x))
            return VOX_OUT_OF_MEMORY;
        uf[hp_find(uf, b)] = hp_find(uf, a); /* the survivor is the smaller position */
    }
    int64_t m = 0;
    for (int64_t i = 0; i < s->ne; i++) {
        struct ag_edge e = s->e[i];
        uint32_t a = s->v[hp_find(uf, pos[2 * i])].id;
        uint32_t b = s->v[hp_find(uf, pos[2 * i + 1])].id;
        if (a == b)
            continue;
        e.a = a < b ? a : b;
        e.b = a < b ? b : a;
        s->e[m++] = e;
    }
    s->ne = m;
    enum vox_status st = ag_compact_edges(r->ctx, s, r->hist);
    if (st != VOX_OK)
        return st;
    /* Keep the clusters' representatives that touch or have an edge. */
    for (int64_t i = 0; i < s->nv; i++)
        uf[i] = hp_find(uf, i) == i && s->v[i].touch ? 1 : 0;
    for (int64_t i = 0; i < s->ne; i++)
        uf[ag_pos(s, s->e[i].a)] = uf[ag_pos(s, s->e[i].b)] = 1;
    m = 0;
    for (int64_t i = 0; i < s->nv; i++)
        if (uf[i])
            s->v[m++] = s->v[i];
    s->nv = m;
    return VOX_OK;
}

/* Every edge's ends as positions in s->v (2 i: a, 2 i + 1: b), looked up once for the node
 * pass's several walks over the edges (edges are in (a, b) order: a repeats). */
static uint32_t *ag_positions(struct vox_ctx *ctx, const struct ag_sum *s)
{
    uint32_t *pos = vox_alloc(ctx, (size_t)(2 * s->ne + 1) * sizeof *pos);
    for (int64_t i = 0; pos && i < s->ne; i++) {
        pos[2 * i] =
            i > 0 && s->e[i].a == s->e[i - 1].a ? pos[2 * i - 2] : (uint32_t)ag_pos(s, s->e[i].a);
        pos[2 * i + 1] = (uint32_t)ag_pos(s, s->e[i].b);
    }
    return pos;
}

struct ag_scratch {
    bool *in, *dec;
    uint64_t *un, *ud, *num, *den, *mnum, *mden;
    int64_t *cons, *last, **h, *n, *cap, *uf;
};

static void ag_scratch_fini(struct vox_ctx *ctx, struct ag_scratch *w, int64_t nv)
{
    for (int64_t i = 0; w->h && i < nv; i++)
        vox_free(ctx, w->h[i]);
    void *all[] = {w->in,   w->dec,  w->un,   w->ud, w->num, w->den, w->mnum,
                   w->mden, w->cons, w->last, w->h,  w->n,   w->cap, w->uf};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        vox_free(ctx, all[i]);
}

static bool ag_scratch_init(struct vox_ctx *ctx, struct ag_scratch *w, int64_t nv, int64_t ne,
                            int64_t nm)
{
    size_t v = (size_t)nv + 1, e = (size_t)ne + 1, m = (size_t)nm + 1;
    w->in = vox_alloc(ctx, v);
    w->dec = vox_alloc(ctx, m);
    w->un = vox_alloc(ctx, e * 8);
    w->ud = vox_alloc(ctx, e * 8);
    w->num = vox_alloc(ctx, m * 8);
    w->den = vox_alloc(ctx, m * 8);
    w->mnum = vox_alloc(ctx, m * 8);
    w->mden = vox_alloc(ctx, m * 8);
    w->cons = vox_alloc(ctx, m * 8);
    w->last = vox_alloc(ctx, v * 8);
    w->h = vox_calloc(ctx, v, sizeof *w->h);
    w->n = vox_calloc(ctx, v, 8);
    w->cap = vox_calloc(ctx, v, 8);
    w->uf = vox_alloc(ctx, v * 8);
    return w->in && w->dec && w->un && w->ud && w->num && w->den && w->mnum && w->mden && w->cons &&
           w->last && w->h && w->n && w->cap && w->uf;
}

/* One chunk's or node's decisions over its compacted s (see the top). */
static enum vox_status ag_node_pass(const struct ag_run *r, struct ag_sum *s, bool root)
{
    struct vox_ctx *ctx = r->ctx;
    struct vox_merge_history h = {0};
    struct ag_scratch w = {0};
    int64_t nv0 = s->nv;
    bool *in = vox_alloc(ctx, (size_t)s->nv + 1);
    uint32_t *pos = ag_positions(ctx, s);
    enum vox_status st = in && pos ? ag_interior(r, s, in, pos, &h) : VOX_OUT_OF_MEMORY;
    if (st == VOX_OK && !ag_scratch_init(ctx, &w, s->nv, s->ne, h.n))
        st = VOX_OUT_OF_MEMORY;
    if (st == VOX_OK) {
        memcpy(w.in, in, (size_t)s->nv);
        struct ag_forest f = {.nm = h.n,
                              .m = h.m,
                              .num = w.num,
                              .den = w.den,
                              .mnum = w.mnum,
                              .mden = w.mden,
                              .cons = w.cons,
                              .dec = w.dec};
        st = ag_exact(r, s, w.in, pos, &f);
        if (st == VOX_OK) {
            ag_tree(s->nv, &f, w.last);
            for (int64_t i = 0; i < s->ne; i++)
                ag_ub(r, &s->e[i], &w.un[i], &w.ud[i]);
            for (int64_t i = 0; i < s->nv; i++)
                w.uf[i] = i;
            struct ag_heaps H = {
                .ctx = ctx, .un = w.un, .ud = w.ud, .h = w.h, .n = w.n, .cap = w.cap, .uf = w.uf};
            st = root ? VOX_OK : ag_leaving(r, s, w.in, pos, &H, &f);
        }
        for (int64_t k = f.nm - 1; st == VOX_OK && k >= 0; k--)
            f.dec[k] = root || f.dec[k] || (f.cons[k] >= 0 && f.dec[f.cons[k]]);
        if (st == VOX_OK)
            st = ag_contract(r, s, &f, pos, w.uf);
    }
    ag_scratch_fini(ctx, &w, nv0);
    vox_free(ctx, in);
    vox_free(ctx, pos);
    vox_merge_history_fini(ctx, &h);
    return st;
}

/* ---- chunks and nodes ------------------------------------------------------------------ */

/* cnt faces of edge key: of affinity w (with histograms), or of largest affinity w (without,
 * where an edge needs only its sum, count and max); sum: of their affinities. */
struct ag_face {
    uint64_t key, sum;
    uint32_t cnt;
    uint8_t w;
};

/* Direct-mapped: the last place of each hashed (key, w) (key alone without histograms) in
 * the face list while a chunk collects, so that repeats count up in place. */
#define AG_SEEN 4096

static int face_cmp(const void *x, const void *y)
{
    const struct ag_face *a = x, *b = y;
    if (a->key != b->key)
        return (a->key > b->key) - (a->key < b->key);
    return (a->w > b->w) - (a->w < b->w);
}

static uint64_t face_key(const void *x)
{
    return ((const struct ag_face *)x)->w;
}

static uint64_t face_key_hi(const void *x)
{
    return ((const struct ag_face *)x)->key;
}

static bool ag_vertex(struct vox_ctx *ctx, struct ag_sum *s, uint32_t id, uint8_t touch)
{
    if (!id || (s->nv > 0 && s->v[s->nv - 1].id == id &&
                (s->v[s->nv - 1].touch | touch) == s->v[s->nv - 1].touch))
        return true;
    struct ag_vtx v = {id, touch};
    return dist_push(ctx, (void **)&s->v, &s->nv, &s->vcap, &v, sizeof v);
}

/* The labels of box row (z, y), l, with their touch bits, where the row is on a z or y face
 * of the box (every voxel's); the other rows add theirs with their x faces (ag_row_x). */
static bool ag_face_row_vertices(const struct ag_run *r, struct ag_sum *s, const uint32_t *l,
                                 int64_t z, int64_t y)
{
    const struct dist_box *b = &s->box;
    const int64_t nx = b->hi[2] - b->lo[2];
    uint8_t tx0, tx1;
    const uint8_t t0 = dist_row_faces(b, r->dims, z, y, &tx0, &tx1);
    bool ok = true;
    for (int64_t j = 0; t0 && ok && j < nx; j++)
        ok = ag_vertex(r->ctx, s, l[j],
                       (uint8_t)(t0 | (j == 0 ? tx0 : 0) | (j == nx - 1 ? tx1 : 0)));
    return ok;
}

/* The faces being collected: the list and the direct-mapped places of recent (key, w), or
 * of recent keys when there are no histograms. */
struct ag_faces {
    struct ag_face *f; /* in the scratch's slot W7 */
    int64_t n;
    struct dist_scratch *sc;
    bool hist;
    int64_t seen[AG_SEEN];
};

/* cnt faces between labels la != lb (both non-zero), their affinities summing to sum, the
 * largest w (with histograms: all w). */
static inline bool ag_faces_add(struct vox_ctx *ctx, struct ag_faces *fs, uint32_t la, uint32_t lb,
                                uint8_t w, uint64_t sum, uint32_t cnt)
{
    struct ag_face f = {.key = la < lb ? (uint64_t)la << 32 | lb : (uint64_t)lb << 32 | la,
                        .sum = sum,
                        .cnt = cnt,
                        .w = w};
    uint64_t h = fs->hist ? f.key ^ f.w : f.key;
    int64_t *slot = &fs->seen[(h * 0x9E3779B97F4A7C15ull) >> 52];
    struct ag_face *g = *slot >= 0 ? &fs->f[*slot] : NULL;
    if (g && g->key == f.key && (g->w == f.w || !fs->hist) && g->cnt <= UINT32_MAX - cnt) {
        g->cnt += cnt;
        g->sum += sum;
        g->w = w > g->w ? w : g->w;
        return true;
    }
    *slot = fs->n;
    return dist_scratch_push(ctx, fs->sc, DIST_SC_W7, (void **)&fs->f, &fs->n, &f, sizeof f);
}

/* One face between labels la != lb (both non-zero) of affinity w. */
static bool ag_face_add(struct vox_ctx *ctx, struct ag_faces *fs, uint32_t la, uint32_t lb,
                        uint8_t w)
{
    return ag_faces_add(ctx, fs, la, lb, w, w, 1);
}

/* Box row l (nx voxels, affinities along x qx, qx[j] that of (j - 1, j)): its faces along x
 * where the labels differ and, unless the row is on a z or y face of the box (t0, whose
 * labels ag_face_row_vertices adds), its labels with their touch bits: the ends' and those
 * where the label changes, found in the same walk. */
static bool ag_row_x(const struct ag_run *r, struct ag_sum *s, struct ag_faces *fs,
                     const uint32_t *l, const uint8_t *qx, int64_t nx, uint8_t t0, uint8_t tx0,
                     uint8_t tx1)
{
    bool ok = t0 || ag_vertex(r->ctx, s, l[0], (uint8_t)(tx0 | (nx == 1 ? tx1 : 0)));
    for (int64_t j = seg_skip_equal(l, l + 1, 0, nx - 1); ok && j < nx - 1;
         j = seg_skip_equal(l, l + 1, j + 1, nx - 1)) {
        ok = t0 || ag_vertex(r->ctx, s, l[j + 1], 0);
        if (ok && l[j] && l[j + 1])
            ok = ag_face_add(r->ctx, fs, l[j], l[j + 1], qx[j + 1]);
    }
    return ok && (t0 || ag_vertex(r->ctx, s, l[nx - 1], tx1));
}

/* The faces (la[j], lb[j]) of affinity qb[j], j in [0, n), where the labels differ. */
static bool ag_row_faces(struct vox_ctx *ctx, struct ag_faces *fs, const uint32_t *la,
                         const uint32_t *lb, const uint8_t *qb, int64_t n)
{
    for (int64_t j = seg_skip_equal(la, lb, 0, n); j < n; j = seg_skip_equal(la, lb, j + 1, n))
        if (la[j] && lb[j] && !ag_face_add(ctx, fs, la[j], lb[j], qb[j]))
            return false;
    return true;
}

/* Faces (u, u + e_a) with u in the box (q: the quantized box + 1 on the + sides, rn its
 * shape), row by row; labels seen across a + face are vertices that touch it. */
static enum vox_status ag_chunk_faces(const struct ag_run *r, struct ag_sum *s, const uint8_t *q,
                                      const int64_t rn[3], const struct dist_win *lw,
                                      struct ag_faces *fs)
{
    const struct dist_box *b = &s->box;
    const int64_t n = rn[0] * rn[1] * rn[2], nx = b->hi[2] - b->lo[2];
    memset(fs->seen, 0xff, sizeof fs->seen);
    for (int64_t z = b->lo[0]; z < b->hi[0]; z++)
        for (int64_t y = b->lo[1]; y < b->hi[1]; y++) {
            const uint32_t *la = dist_win_row(lw, z, y, b->lo[2]);
            const int64_t qo = ((z - b->lo[0]) * rn[1] + y - b->lo[1]) * rn[2];
            const int64_t c[2] = {z, y};
            uint8_t tx0, tx1;
            const uint8_t t0 = dist_row_faces(b, r->dims, z, y, &tx0, &tx1);
            bool ok = (!t0 || ag_face_row_vertices(r, s, la, z, y)) &&
                      ag_row_x(r, s, fs, la, q + 2 * n + qo, nx, t0, tx0, tx1);
            if (ok && b->hi[2] < r->dims[2]) /* the last x: its face leaves the box */
                ok = ag_vertex(r->ctx, s, la[nx], 2u << 4) &&
                     ag_row_faces(r->ctx, fs, la + nx - 1, la + nx, q + 2 * n + qo + nx, 1);
            for (int a = 0; a < 2 && ok; a++) {
                if (c[a] + 1 >= r->dims[a])
                    continue;
                const uint32_t *lb = dist_win_row(lw, z + (a == 0), y + (a == 1), b->lo[2]);
                ok = ag_row_faces(r->ctx, fs, la, lb,
                                  q + a * n + qo + (a == 0 ? rn[1] * rn[2] : rn[2]), nx);
                for (int64_t j = 0; ok && c[a] + 1 == b->hi[a] && j < nx; j++)
                    ok = ag_vertex(r->ctx, s, lb[j], (uint8_t)(2u << (2 * a)));
            }
            if (!ok)
                return VOX_OUT_OF_MEMORY;
        }
    return VOX_OK;
}

/* Box row (z, y) (as ag_chunk_faces) where chunk i has a face record (struct dist_pairs):
 * the touch bits of its labels on the box's faces and the faces that leave the box on the +
 * sides, with affinities from the record's planes; the faces inside come from the record. */
static bool ag_row_shell(const struct ag_run *r, struct ag_sum *s, const struct dist_chunk_pf *pl,
                         const struct dist_win *lw, struct ag_faces *fs, int64_t z, int64_t y)
{
    const struct dist_box *b = &s->box;
    const int64_t nx = b->hi[2] - b->lo[2], zz = z - b->lo[0], yy = y - b->lo[1];
    const uint32_t *la = dist_win_row(lw, z, y, b->lo[2]);
    const int64_t c[2] = {z, y};
    uint8_t tx0, tx1;
    const uint8_t t0 = dist_row_faces(b, r->dims, z, y, &tx0, &tx1);
    bool ok = t0 ? ag_face_row_vertices(r, s, la, z, y)
                 : (!tx0 || ag_vertex(r->ctx, s, la[0], tx0)) &&
                       (!tx1 || ag_vertex(r->ctx, s, la[nx - 1], tx1));
    if (ok && pl->plane[2][1]) /* the last x: its face leaves the box */
        ok = ag_vertex(r->ctx, s, la[nx], 2u << 4) &&
             ag_row_faces(r->ctx, fs, la + nx - 1, la + nx,
                          pl->plane[2][1] + zz * (b->hi[1] - b->lo[1]) + yy, 1);
    for (int a = 0; a < 2 && ok; a++) {
        if (c[a] + 1 != b->hi[a] || !pl->plane[a][1])
            continue;
        const uint32_t *lb = dist_win_row(lw, z + (a == 0), y + (a == 1), b->lo[2]);
        ok = ag_row_faces(r->ctx, fs, la, lb, pl->plane[a][1] + (a == 0 ? yy : zz) * nx, nx);
        for (int64_t j = 0; ok && j < nx; j++)
            ok = ag_vertex(r->ctx, s, lb[j], (uint8_t)(2u << (2 * a)));
    }
    return ok;
}

/* ag_chunk_faces from a chunk's face record: its fragments' labels (through fm, nf
 * fragments, then map where set), its pairs mapped the same way, and the shell's rows. */
static enum vox_status ag_chunk_rec(const struct ag_run *r, struct ag_sum *s,
                                    const struct dist_chunk_pf *pl, const uint32_t *fm, int64_t nf,
                                    const uint32_t *map, const struct dist_win *lw,
                                    struct ag_faces *fs)
{
    const struct dist_pf *pf = pl->pf;
    const int64_t npf = pl->npf;
    memset(fs->seen, 0xff, sizeof fs->seen);
    /* the fragments' segments, looked up in the volume's map once each, not twice an entry */
    uint32_t *seg = dist_scratch_get(r->ctx, fs->sc, DIST_SC_W0, (size_t)(nf + 1) * sizeof *seg);
    bool ok = seg != NULL;
    for (int64_t k = 0; ok && k <= nf; k++)
        seg[k] = map ? map[fm[k]] : fm[k];
    for (int64_t k = 1; ok && k <= nf; k++)
        ok = ag_vertex(r->ctx, s, seg[k], 0);
    for (int64_t k = 0; ok && k < npf; k++) {
        const uint32_t a = seg[pf[k].key >> 32], b = seg[(uint32_t)pf[k].key];
        if (a && b && a != b)
            ok = ag_faces_add(r->ctx, fs, a, b, pf[k].w, pf[k].sum, pf[k].cnt);
    }
    for (int64_t z = s->box.lo[0]; ok && z < s->box.hi[0]; z++)
        for (int64_t y = s->box.lo[1]; ok && y < s->box.hi[1]; y++)
            ok = ag_row_shell(r, s, pl, lw, fs, z, y);
    return ok ? VOX_OK : VOX_OUT_OF_MEMORY;
}

/* The chunk's edges from its sorted faces. */
static enum vox_status ag_chunk_edges(const struct ag_run *r, struct ag_sum *s, struct ag_face *f,
                                      int64_t nf, struct dist_scratch *sc)
{
    if (r->hist) /* by edge, then value */
        dist_sort_sc(r->ctx, sc, f, nf, sizeof *f, face_key, face_key_hi, face_cmp);
    else
        dist_sort_sc(r->ctx, sc, f, nf, sizeof *f, face_key_hi, NULL, face_cmp);
    s->e = vox_alloc(r->ctx, (size_t)(nf + 1) * sizeof *s->e);
    s->hbin = vox_alloc(r->ctx, (size_t)nf + 1);
    s->hcnt = vox_alloc(r->ctx, (size_t)(nf + 1) * sizeof *s->hcnt);
    if (!s->e || !s->hbin || !s->hcnt)
        return VOX_OUT_OF_MEMORY;
    for (int64_t i = 0; i < nf; i++) {
        struct ag_edge *e = s->ne > 0 ? &s->e[s->ne - 1] : NULL;
        if (!e || ((uint64_t)e->a << 32 | e->b) != f[i].key) {
            e = &s->e[s->ne++];
            *e = (struct ag_edge){
                .a = (uint32_t)(f[i].key >> 32), .b = (uint32_t)f[i].key, .hist = s->nh};
        }
        e->max = f[i].w > e->max ? f[i].w : e->max;
        e->sum += f[i].sum;
        e->count += f[i].cnt;
        if (!r->hist)
            continue;
        if (e->nbins > 0 && s->hbin[s->nh - 1] == f[i].w) {
            s->hcnt[s->nh - 1] += f[i].cnt;
        } else {
            s->hbin[s->nh] = f[i].w;
            s->hcnt[s->nh++] = f[i].cnt;
            e->nbins++;
        }
    }
    s->ecap = s->ne;
    s->hcap = s->nh;
    return VOX_OK;
}

/* Atomic chunk: its vertices and region graph part, then the node pass. */
static enum vox_status ag_chunk(const struct ag_run *r, struct ag_sum *s, int64_t i, bool root,
                                struct dist_scratch *sc)
{
    struct ag_faces *fs = vox_alloc(r->ctx, sizeof *fs);
    if (!fs)
        return VOX_OUT_OF_MEMORY;
    *fs = (struct ag_faces){.sc = sc, .hist = r->hist};
    struct dist_chunk_in in;
    enum vox_status st = dist_chunk_in_load(r->ctx, r->vol, r->labels, &s->box, i, sc, &in);
    if (st == VOX_OK) {
        const int64_t rn[3] = {in.hi[0] - s->box.lo[0], in.hi[1] - s->box.lo[1],
                               in.hi[2] - s->box.lo[2]};
        st = in.rec ? ag_chunk_rec(r, s, &in.pf, in.fm, in.nf, in.then, &in.w, fs)
                    : ag_chunk_faces(r, s, in.q.data, rn, &in.w, fs);
        dist_chunk_in_fini(r->ctx, &in);
    }
    if (st == VOX_OK)
        st = ag_chunk_edges(r, s, fs->f, fs->n, sc);
    vox_free(r->ctx, fs);
    if (st != VOX_OK)
        return st;
    ag_compact_vtx(r->ctx, s);
    return ag_node_pass(r, s, root);
}

/* Node: the children's vertices (touch bits kept on the node's own faces), edges (their
 * halves added) and decided merges, then the node pass. */
static enum vox_status ag_node(const struct ag_run *r, const struct ag_sum *kids, int nk,
                               struct ag_sum *s, bool root)
{
    int64_t nv = 0, ne = 0, nh = 0, nfin = 0;
    for (int k = 0; k < nk; k++) {
        nv += kids[k].nv;
        ne += kids[k].ne;
        nh += kids[k].nh;
        nfin += kids[k].nfin;
    }
    s->v = vox_alloc(r->ctx, (size_t)(nv + 1) * sizeof *s->v);
    s->e = vox_alloc(r->ctx, (size_t)(ne + 1) * sizeof *s->e);
    s->hbin = vox_alloc(r->ctx, (size_t)nh + 1);
    s->hcnt = vox_alloc(r->ctx, (size_t)(nh + 1) * sizeof *s->hcnt);
    s->fin = vox_alloc(r->ctx, (size_t)(nfin + 1) * sizeof *s->fin);
    if (!s->v || !s->e || !s->hbin || !s->hcnt || !s->fin)
        return VOX_OUT_OF_MEMORY;
    s->vcap = nv;
    s->fcap = nfin;
    for (int k = 0; k < nk; k++) {
        const struct ag_sum *c = &kids[k];
        uint8_t keep = 0;
        for (int a = 0; a < 3; a++) {
            keep |= (uint8_t)((c->box.lo[a] == s->box.lo[a]) << (2 * a));
            keep |= (uint8_t)((c->box.hi[a] == s->box.hi[a]) << (2 * a + 1));
        }
        for (int64_t i = 0; i < c->nv; i++)
            s->v[s->nv++] = (struct ag_vtx){c->v[i].id, (uint8_t)(c->v[i].touch & keep)};
        for (int64_t i = 0; i < c->ne; i++) {
            s->e[s->ne] = c->e[i];
            s->e[s->ne++].hist += s->nh;
        }
        if (c->nh) {
            memcpy(s->hbin + s->nh, c->hbin, (size_t)c->nh);
            memcpy(s->hcnt + s->nh, c->hcnt, (size_t)c->nh * sizeof *c->hcnt);
        }
        s->nh += c->nh;
        if (c->nfin)
            memcpy(s->fin + s->nfin, c->fin, (size_t)c->nfin * sizeof *c->fin);
        s->nfin += c->nfin;
    }
    ag_compact_vtx(r->ctx, s);
    enum vox_status st = ag_compact_edges(r->ctx, s, r->hist);
    return st == VOX_OK ? ag_node_pass(r, s, root) : st;
}

/* The box of node i of `level` (0: atomic chunk i). */
static void ag_box(const struct ag_run *r, int level, int64_t i, struct dist_box *b)
{
    const int64_t *g = r->tree.grid[level];
    int64_t c[3] = {i / (g[1] * g[2]), (i / g[2]) % g[1], i % g[2]};
    for (int a = 0; a < 3; a++) {
        int64_t sp = r->chunk[a] << level;
        b->lo[a] = c[a] * sp;
        b->hi[a] = b->lo[a] + sp < r->dims[a] ? b->lo[a] + sp : r->dims[a];
    }
}

/* Node i of `level` (-1: the side job): an atomic chunk from the voxels, a node from its
 * children (freed); the statistics count what it carries up. */
static enum vox_status ag_task(void *arg, int level, int64_t i, int tid)
{
    struct ag_run *r = arg;
    if (level < 0) {
        dist_dend_run(r->ctx, r->side); /* its status is the record's, read by its owner */
        return VOX_OK;
    }
    if (level == 0 && dist_share_remote(r->share, i)) /* another rank's: ag_take */
        return tid == 0 ? dist_share_poll(r->ctx, r->share) : VOX_OK;
    if (level >= 1 && dist_share_up(r->share, level, i))
        return VOX_OK; /* its rank computed it: ag_take_node */
    bool root = level == r->tree.nlev - 1;
    struct ag_sum *s = &r->sum[level][i];
    ag_box(r, level, i, &s->box);
    s->level = level;
    enum vox_status st;
    if (level == 0) {
        st = ag_chunk(r, s, i, root, &r->sc[tid]);
    } else {
        int64_t c[3], idx[8];
        struct ag_sum kids[8] = {0};
        int nk = dist_node_children(r->tree.grid[level - 1], i, c, idx);
        for (int k = 0; k < nk; k++)
            kids[k] = r->sum[level - 1][idx[k]];
        st = ag_node(r, kids, nk, s, root);
        for (int k = 0; k < nk; k++)
            ag_sum_fini(r->ctx, &r->sum[level - 1][idx[k]]);
    }
    if (st != VOX_OK)
        return st;
    int64_t add[3] = {s->nv, s->ne,
                      s->nv * (int64_t)sizeof *s->v + s->ne * (int64_t)sizeof *s->e + s->nh * 9 +
                          s->nfin * (int64_t)sizeof *s->fin};
    for (int k = 0; k < 3; k++)
        __atomic_fetch_add(&r->lv[level][k], add[k], __ATOMIC_RELAXED);
    return VOX_OK;
}

/* A worker with no atomic chunk left: the levels above read no voxels. */
static void ag_idle(void *arg, int tid)
{
    struct ag_run *r = arg;
    dist_scratch_release_one(r->ctx, &r->sc[tid]);
}

/* The octree, every node as soon as its children are done; r->sum[top][0] is the root. */
static enum vox_status ag_tree_run(struct ag_run *r)
{
    const struct dist_tree *t = &r->tree;
    enum vox_status s;
    if (r->share) { /* the level above the chunks once the other ranks' are in */
        s = dist_tree_run(r->ctx, &r->tree, 0, 1, r->side != NULL, ag_task, ag_idle, r);
        if (s == VOX_OK)
            s = dist_share_end(r->ctx, r->share);
        if (s == VOX_OK)
            s = dist_tree_run(r->ctx, &r->tree, 1, t->nlev, 0, ag_task, ag_idle, r);
    } else {
        s = dist_tree_run(r->ctx, &r->tree, 0, t->nlev, r->side != NULL, ag_task, ag_idle, r);
    }
    for (int l = 0; s == VOX_OK && l < t->nlev; l++)
        dist_stats_level(r->stats, VOX_DIST_AGGLOMERATE, l, t->n[l], r->lv[l][0], r->lv[l][1],
                         r->lv[l][2], t->busy[l]);
    return s;
}

/* ---- the global order ------------------------------------------------------------------ */

static int fin_order_cmp(const void *x, const void *y)
{
    const struct ag_fin *a = x, *b = y;
    if (a->level != b->level)
        return (a->level > b->level) - (a->level < b->level);
    return (a->seq > b->seq) - (a->seq < b->seq);
}

static uint64_t fin_key(const void *x)
{
    return (uint64_t)((const struct ag_fin *)x)->seq;
}

static uint64_t fin_key_hi(const void *x)
{
    return (uint64_t)((const struct ag_fin *)x)->level;
}

/* x pops before y: larger score, then smaller a, then smaller b. */
static bool fin_before(const struct ag_fin *x, const struct ag_fin *y)
{
    unsigned __int128 l = (unsigned __int128)x->num * y->den;
    unsigned __int128 r = (unsigned __int128)y->num * x->den;
    if (l != r)
        return l > r;
    return x->a != y->a ? x->a < y->a : x->b < y->b;
}

static void rp_push(const struct ag_fin *f, int64_t *heap, int64_t *n, int64_t x)
{
    int64_t i = (*n)++;
    while (i > 0 && fin_before(&f[x], &f[heap[(i - 1) / 2]])) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i] = x;
}

static int64_t rp_pop(const struct ag_fin *f, int64_t *heap, int64_t *n)
{
    int64_t top = heap[0], x = heap[--*n], i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && fin_before(&f[heap[c + 1]], &f[heap[c]]))
            c++;
        if (!fin_before(&f[heap[c]], &f[x]))
            break;
        heap[i] = heap[c];
        i = c;
    }
    if (*n > 0)
        heap[i] = x;
    return top;
}

/* Replays the merge forest: each step pops the best merge whose two clusters exist. */
static enum vox_status ag_replay(struct vox_ctx *ctx, struct ag_fin *f, int64_t n, int64_t nseg,
                                 struct vox_merge_history *h)
{
    dist_sort(ctx, f, n, sizeof *f, fin_key, fin_key_hi, fin_order_cmp);
    int64_t *last = vox_alloc(ctx, (size_t)(nseg + 1) * sizeof *last);
    int64_t *cons = vox_alloc(ctx, (size_t)(n + 1) * sizeof *cons);
    int64_t *cnt = vox_calloc(ctx, (size_t)n + 1, sizeof *cnt);
    int64_t *heap = vox_alloc(ctx, (size_t)(n + 1) * sizeof *heap);
    h->m = vox_alloc(ctx, (size_t)(n + 1) * sizeof *h->m);
    enum vox_status st = VOX_OUT_OF_MEMORY;
    if (!last || !cons || !cnt || !heap || !h->m)
        goto done;
    h->cap = n + 1;
    for (int64_t i = 0; i <= nseg; i++)
        last[i] = -1;
    int64_t nh = 0;
    for (int64_t m = 0; m < n; m++) {
        int64_t c[2] = {last[f[m].a], last[f[m].b]};
        cons[m] = -1;
        for (int j = 0; j < 2; j++)
            if (c[j] >= 0) {
                cons[c[j]] = m;
                cnt[m]++;
            }
        last[f[m].a] = m;
        if (!cnt[m])
            rp_push(f, heap, &nh, m);
    }
    while (nh > 0) {
        int64_t m = rp_pop(f, heap, &nh);
        h->m[h->n++] = (struct vox_seg_merge){f[m].a, f[m].b, f[m].a, f[m].score};
        if (cons[m] >= 0 && --cnt[cons[m]] == 0)
            rp_push(f, heap, &nh, cons[m]);
    }
    st = h->n == n ? VOX_OK
                   : vox_fail(ctx, VOX_INTERNAL,
                              "chunked agglomeration: %lld of %lld merges "
                              "replayed",
                              (long long)h->n, (long long)n);
done:
    vox_free(ctx, last);
    vox_free(ctx, cons);
    vox_free(ctx, cnt);
    vox_free(ctx, heap);
    return st;
}

static enum vox_status ag_check(struct vox_ctx *ctx, const struct vox_tensor *labels, int64_t nseg,
                                const struct vox_tensor *aff, const int64_t chunk[3])
{
    if (!aff || aff->rank != 4 || aff->shape[0] != 3 ||
        (aff->dtype != VOX_U8 && aff->dtype != VOX_F32))
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "chunked agglomeration: affinities must be a u8 "
                        "or f32 (3, Z, Y, X) tensor");
    if (!labels || labels->dtype != VOX_U32 || labels->rank != 3 ||
        !vox_tensor_is_contiguous(labels) ||
        memcmp(labels->shape, aff->shape + 1, 3 * sizeof(int64_t)))
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "chunked agglomeration: labels must be a contiguous u32 tensor of "
                        "shape (%lld, %lld, %lld)",
                        (long long)aff->shape[1], (long long)aff->shape[2],
                        (long long)aff->shape[3]);
    if (nseg < 0 || nseg >= (int64_t)UINT32_MAX)
        return vox_fail(ctx, VOX_INVALID_ARG, "chunked agglomeration: nseg = %lld",
                        (long long)nseg);
    if (!chunk || chunk[0] < 1 || chunk[1] < 1 || chunk[2] < 1)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "chunk shape (%lld, %lld, %lld): every side must be >= 1",
                        chunk ? (long long)chunk[0] : 0ll, chunk ? (long long)chunk[1] : 0ll,
                        chunk ? (long long)chunk[2] : 0ll);
    const uint32_t *l = labels->data;
    int64_t n = vox_tensor_numel(labels);
    for (int64_t v = 0; v < n; v++)
        if (l[v] > nseg)
            return vox_fail(ctx, VOX_INVALID_ARG,
                            "chunked agglomeration: label %u at voxel %lld exceeds nseg %lld", l[v],
                            (long long)v, (long long)nseg);
    return VOX_OK;
}

/* ---- stage (c) on several ranks (dist/ranks.c) --------------------------------------------- */

/* A chunk's summary as a message (dist_pack): vertices, edges, histograms and the merges it
 * decided; with nmeta > 0 (a node's, ag_up) those int64s after them. */
static enum vox_status ag_pack_meta(struct vox_ctx *ctx, const struct ag_sum *s,
                                    const int64_t *meta, int64_t nmeta, void **blob, int64_t *len)
{
    const int64_t count[6] = {s->nv, s->ne, s->nh, s->nh, s->nfin, nmeta};
    const size_t size[6] = {sizeof *s->v,    sizeof *s->e,   1,
                            sizeof *s->hcnt, sizeof *s->fin, sizeof *meta};
    const void *const arr[6] = {s->v, s->e, s->hbin, s->hcnt, s->fin, meta};
    return dist_pack(ctx, &s->box, nmeta > 0 ? 6 : 5, count, size, arr, blob, len);
}

static enum vox_status ag_pack(struct vox_ctx *ctx, const struct ag_sum *s, void **blob,
                               int64_t *len)
{
    return ag_pack_meta(ctx, s, NULL, 0, blob, len);
}

static enum vox_status ag_give(void *arg, int64_t i, void **blob, int64_t *len)
{
    struct ag_run *r = arg;
    struct dist_box b;
    ag_box(r, 0, i, &b);
    return dist_shell_pack(r->ctx, r->labels->st, r->labels->map, i, &b, blob, len);
}

/* Node i of `level`'s summary s (its box set) from its rank's message (ag_pack_meta's:
 * *meta and *nmeta where meta is set); the caller frees what s and *meta hold, also on
 * failure. */
static enum vox_status ag_unpack(const struct ag_run *r, int level, int64_t i, const uint8_t *blob,
                                 int64_t len, struct ag_sum *s, int64_t **meta, int64_t *nmeta)
{
    const size_t size[6] = {sizeof *s->v,    sizeof *s->e,   1,
                            sizeof *s->hcnt, sizeof *s->fin, sizeof **meta};
    int64_t c[6] = {0};
    void *arr[6] = {0};
    enum vox_status st = dist_unpack(r->ctx, blob, len, &s->box, meta ? 6 : 5, size, c, arr);
    s->v = arr[0];
    s->e = arr[1];
    s->hbin = arr[2];
    s->hcnt = arr[3];
    s->fin = arr[4];
    if (meta) {
        *meta = arr[5];
        *nmeta = c[5];
    }
    if (st == VOX_OK && c[2] != c[3])
        st = VOX_FORMAT;
    if (st == VOX_FORMAT)
        return vox_fail(r->ctx, VOX_IO,
                        "chunked agglomeration: a malformed summary of %lld "
                        "bytes for %s %lld from another rank",
                        (long long)len, level ? "octree node" : "chunk", (long long)i);
    if (st != VOX_OK)
        return st;
    s->level = level;
    s->nv = s->vcap = c[0];
    s->ne = s->ecap = c[1];
    s->nh = s->hcap = c[2];
    s->nfin = s->fcap = c[4];
    return VOX_OK;
}

/* What summary s carries up, as ag_task counts it: vertices, edges, bytes. */
static void ag_count(const struct ag_sum *s, int64_t add[3])
{
    add[0] = s->nv;
    add[1] = s->ne;
    add[2] = s->nv * (int64_t)sizeof *s->v + s->ne * (int64_t)sizeof *s->e + s->nh * 9 +
             s->nfin * (int64_t)sizeof *s->fin;
}

/* Rank 0: chunk i's summary from its rank, into the slot its own task would have filled. */
static enum vox_status ag_take(void *arg, int64_t i, const uint8_t *blob, int64_t len)
{
    struct ag_run *r = arg;
    struct ag_sum *s = &r->sum[0][i];
    ag_box(r, 0, i, &s->box);
    /* (what s holds is freed with the run's sums, also on failure) */
    enum vox_status st = ag_unpack(r, 0, i, blob, len, s, NULL, NULL);
    if (st != VOX_OK)
        return st;
    int64_t add[3];
    ag_count(s, add);
    for (int k = 0; k < 3; k++)
        __atomic_fetch_add(&r->lv[0][k], add[k], __ATOMIC_RELAXED);
    return VOX_OK;
}

/* Rank 0: node j of `level` from its rank (ag_up): where rank 0 computes its parent its
 * summary (which holds every merge under it), and the statistics of it and, at level 1, of
 * its chunks. */
static enum vox_status ag_take_node(void *arg, int level, int64_t j, const uint8_t *blob,
                                    int64_t len)
{
    struct ag_run *r = arg;
    struct ag_sum *s = &r->sum[level][j];
    ag_box(r, level, j, &s->box);
    int64_t *meta = NULL, nmeta = 0, c[3], kid[8];
    const int nk = dist_node_children(r->tree.grid[level - 1], j, c, kid), kids = level == 1;
    enum vox_status st = ag_unpack(r, level, j, blob, len, s, &meta, &nmeta);
    if (st == VOX_OK && nmeta != 3 + 3 * nk * kids)
        st = vox_fail(r->ctx, VOX_IO,
                      "chunked agglomeration: a malformed summary of %lld bytes for octree "
                      "node %lld of level %d from another rank",
                      (long long)len, (long long)j, level);
    for (int k = 0; st == VOX_OK && k < 3; k++) {
        __atomic_fetch_add(&r->lv[level][k], meta[k], __ATOMIC_RELAXED);
        for (int q = 0; kids && q < nk; q++)
            __atomic_fetch_add(&r->lv[0][k], meta[3 + 3 * q + k], __ATOMIC_RELAXED);
    }
    vox_free(r->ctx, meta);
    return st;
}

/* Another rank: the run's geometry and parameters. */
struct ag_served {
    struct ag_run r;
    struct dist_store *own; /* this rank's fragment labels */
};

static enum vox_status ag_setup(void *arg, const uint8_t *blob, int64_t len)
{
    struct ag_served *v = arg;
    if (len != (int64_t)sizeof v->r.nseg)
        return vox_fail(v->r.ctx, VOX_IO, "chunked agglomeration: a malformed setup from rank 0");
    memcpy(&v->r.nseg, blob, sizeof v->r.nseg);
    return VOX_OK;
}

static enum vox_status ag_work(void *arg, int64_t i, const uint8_t *blob, int64_t len, void **out,
                               int64_t *out_len, int tid)
{
    const struct ag_served *v = arg;
    struct ag_run rr = v->r; /* this thread's: the window is the chunk's */
    struct ag_run *r = &rr;
    struct dist_win w;
    struct dist_labels given;
    struct ag_sum s = {0};
    ag_box(r, 0, i, &s.box);
    enum vox_status st = dist_shell_labels(r->ctx, v->own, r->dims, &s.box, blob, len, &w, &given);
    if (st != VOX_OK)
        return st;
    r->labels = &given;
    /* never the root: with one chunk there is no other rank's */
    st = ag_chunk(r, &s, i, false, &r->sc[tid]);
    dist_win_fini(r->ctx, &w);
    if (st == VOX_OK)
        st = ag_pack(r->ctx, &s, out, out_len);
    ag_sum_fini(r->ctx, &s);
    return st;
}

/* Another rank: node j of `level` from its children's summaries (ag_work's at level 1, this
 * function's `keep` above), as rank 0's ag_task would compute it. The message for rank 0:
 * the node's summary where rank 0 computes its parent (keep NULL), else an empty one, and
 * the statistics of the node and, at level 1, of its chunks (ag_count's). keep: the node's
 * summary, for its parent here. */
static enum vox_status ag_up(void *arg, int level, int64_t j, const uint8_t *const *blob,
                             const int64_t *len, int nk, void **out, int64_t *out_len, void **keep,
                             int64_t *keep_len, int tid)
{
    const struct ag_served *v = arg;
    const struct ag_run *r = &v->r;
    (void)tid;
    int64_t c[3], kid[8], meta[3 + 24];
    struct ag_sum kids[8] = {0}, s = {0}, none = {0};
    dist_node_children(r->tree.grid[level - 1], j, c, kid);
    enum vox_status st = VOX_OK;
    for (int k = 0; k < nk && st == VOX_OK; k++) {
        ag_box(r, level - 1, kid[k], &kids[k].box);
        st = ag_unpack(r, level - 1, kid[k], blob[k], len[k], &kids[k], NULL, NULL);
        ag_count(&kids[k], meta + 3 + 3 * k);
    }
    ag_box(r, level, j, &s.box);
    s.level = level;
    none.box = s.box;
    /* (never the root: the ranks' subtrees are below it) */
    if (st == VOX_OK)
        st = ag_node(r, kids, nk, &s, false);
    ag_count(&s, meta);
    if (st == VOX_OK)
        st = ag_pack_meta(r->ctx, keep ? &none : &s, meta, 3 + (level == 1 ? 3 * (int64_t)nk : 0),
                          out, out_len);
    if (st == VOX_OK && keep)
        st = ag_pack(r->ctx, &s, keep, keep_len);
    for (int k = 0; k < nk; k++)
        ag_sum_fini(r->ctx, &kids[k]);
    ag_sum_fini(r->ctx, &s);
    return st;
}

enum vox_status dist_ag_serve(struct vox_ctx *ctx, const struct dist_vol *vol,
                              const int64_t chunk[3], const struct vox_seg_params *p,
                              struct dist_store *own)
{
    struct ag_served v = {
        .r = {.ctx = ctx, .p = p, .vol = vol, .hist = p->score == VOX_SEG_SCORE_QUANTILE},
        .own = own};
    dist_serve_geometry(vol, chunk, v.r.dims, v.r.chunk, &v.r.tree);
    v.r.sc = dist_scratch_new(ctx);
    enum vox_status s = v.r.sc ? dist_share_serve(ctx, vol->comm, v.r.tree.grid[0], ag_setup,
                                                  ag_work, ag_up, &v, true)
                               : VOX_OUT_OF_MEMORY;
    dist_scratch_free(ctx, v.r.sc);
    return s;
}

enum vox_status dist_ag_run(struct vox_ctx *ctx, const struct dist_vol *vol,
                            const struct dist_labels *labels, int64_t nseg, const int64_t chunk[3],
                            const struct vox_seg_params *p, struct vox_merge_history *hist_out,
                            struct vox_dist_stats *stats, struct dist_dend *side)
{
    struct ag_run r = {.ctx = ctx,
                       .side = side && !side->done ? side : NULL,
                       .p = p,
                       .vol = vol,
                       .labels = labels,
                       .stats = stats,
                       .nseg = nseg,
                       .hist = p->score == VOX_SEG_SCORE_QUANTILE};
    int64_t grid[3];
    for (int a = 0; a < 3; a++) {
        r.dims[a] = vol->dims[a];
        r.chunk[a] = chunk[a] < r.dims[a] ? chunk[a] : r.dims[a];
        grid[a] = (r.dims[a] + r.chunk[a] - 1) / r.chunk[a];
    }
    dist_tree_init(&r.tree, grid);
    r.tree.bar = vol->io ? vol->io->bar : NULL;
    struct vox_merge_history h = {.nseg = nseg};
    bool ok = true;
    for (int l = 0; l < r.tree.nlev; l++) {
        r.sum[l] = vox_calloc(ctx, (size_t)r.tree.n[l], sizeof *r.sum[l]);
        ok = ok && r.sum[l];
    }
    r.sc = dist_scratch_new(ctx);
    enum vox_status s = ok && r.sc ? VOX_OK : VOX_OUT_OF_MEMORY;
    /* the other ranks' chunks are handed out where the store keeps fragment faces */
    bool faces = labels->st && dist_store_shells(labels->st);
    struct dist_share share = {.c = vol->comm,
                               .keep = vol->kept,
                               .grid = {r.tree.grid[0][0], r.tree.grid[0][1], r.tree.grid[0][2]},
                               .nchunks = r.tree.n[0],
                               .give = faces ? ag_give : NULL,
                               .take = ag_take,
                               .take_node = ag_take_node,
                               .arg = &r};
    if (s == VOX_OK && dist_share_on(vol->comm)) {
        r.share = faces ? &share : NULL;
        s = dist_share_begin(ctx, &share, &nseg, sizeof nseg);
    }
    if (s == VOX_OK)
        s = ag_tree_run(&r);
    dist_share_fini(ctx, &share);
    const struct ag_sum *root = &r.sum[r.tree.nlev - 1][0];
    if (s == VOX_OK)
        s = ag_replay(ctx, root->fin, root->nfin, nseg, &h);
    for (int l = 0; l < r.tree.nlev; l++) {
        for (int64_t i = 0; r.sum[l] && i < r.tree.n[l]; i++)
            ag_sum_fini(ctx, &r.sum[l][i]);
        vox_free(ctx, r.sum[l]);
    }
    dist_scratch_free(ctx, r.sc);
    if (s != VOX_OK) {
        vox_merge_history_fini(ctx, &h);
        return s;
    }
    *hist_out = h;
    return VOX_OK;
}

enum vox_status vox_dist_agglomerate(struct vox_ctx *ctx, const struct vox_tensor *labels,
                                     int64_t nseg, const struct vox_tensor *aff,
                                     const int64_t chunk[3], const struct vox_seg_params *p,
                                     struct vox_merge_history *hist_out)
{
    enum vox_status s = vox_seg_params_check(ctx, p);
    if (s == VOX_OK)
        s = ag_check(ctx, labels, nseg, aff, chunk);
    if (s != VOX_OK)
        return s;
    struct dist_vol vol = {.aff = aff};
    for (int a = 0; a < 3; a++)
        vol.dims[a] = aff->shape[a + 1];
    struct dist_labels lab = {.t = labels};
    return dist_ag_run(ctx, &vol, &lab, nseg, chunk, p, hist_out, NULL, NULL);
}
