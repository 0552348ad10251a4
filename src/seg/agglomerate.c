/*
 * seg/agglomerate.c: greedy mean / quantile / max agglomeration of a region graph, and cuts
 * of its merge history.
 *
 * As in waterz and ABISS's agg (reference note §2), the best edge is merged repeatedly and the
 * edges of the two segments to a common neighbour are combined. Unlike them, every statistic
 * is an exact integer (sum, count, max, a sparse 256-bin histogram) and a score is the
 * rational num / den compared by 128-bit cross-multiplication, with ties broken by the
 * current (a, b), so the order of merges is a total order: the history is deterministic and
 * independent of threads or heap layout.
 *
 * Data: edges (24 bytes: the sum, max and count in bit fields whose room agg_load checks)
 * live in one array and are found by their endpoints in an open-addressing hash table (linear
 * probing, backward-shift deletion, 1.5 slots per edge) whose slots hold the pair's 32-bit
 * hash beside the edge id: probes and shifts read no edge. A segment's adjacency is a list of
 * edge ids in a shared pool; dead edges are dropped when a list is moved or the pool
 * compacted (a list that outgrows its room moves to the pool's end; a full pool is compacted
 * in place to its live entries). A merge of b into a (a < b: the survivor keeps the smaller
 * id, the canonical one) walks b's list only: an edge to a neighbour that a also touches (one
 * hash look-up) is added into a's edge, any other edge is re-keyed to a and appended to a's
 * list. Cost per merge: O(deg b) look-ups and heap pushes.
 *
 * Order: the edges whose score applies at load are sorted once (radix sort on a coarse key,
 * exact sorts of equal-key runs) and popped in sequence while unchanged; an edge that is
 * combined or re-keyed goes into a lazy heap (24-byte entries) instead, which therefore holds
 * only what changed. An entry is stale when its edge no longer joins its (a, b) with its score;
 * stale entries are dropped when popped, and the heap is rebuilt from its current entries when
 * stale ones outnumber them. Edges whose score a cut at p->max_threshold would not apply are
 * kept out: the best of them would end the agglomeration anyway, and a score only changes when
 * its edge is combined (and then pushed again). The next merge is the better of the order's
 * first live unchanged edge and the heap's first current entry, in the same total order.
 * Dead and stale edges are also marked in two bit sets (g->dead, g->stale), small enough to
 * stay in cache: the list walks, compactions and order skips test them instead of reading
 * edges at random.
 */
#include "seg_internal.h"

#include <stdlib.h>
#include <string.h>

#define AGG_EMPTY UINT32_MAX

/* 24 bytes. agg_load checks that sums and counts stay in their bits (AGG_NUM_BITS,
 * AGG_DEN_BITS) whatever is merged: the totals over all edges do. */
struct agg_edge {
    uint64_t sum : 54;
    uint64_t max : 8;
    uint64_t queued : 1; /* the heap holds an entry of the edge's current state */
    uint64_t count;
    uint32_t a, b; /* current endpoints, a < b; a = 0: dead */
};

#define AGG_NUM_BITS 54
#define AGG_DEN_BITS 40
#define AGG_NUM_MASK ((1ull << AGG_NUM_BITS) - 1)
#define AGG_DEN_MASK ((1ull << AGG_DEN_BITS) - 1)

/* A heap entry, 24 bytes: the score num / den of edge `edge` when it joined (a, b). The 32-bit
 * edge id is split over the bits above num (10) and den (22). An entry is current when the
 * edge still joins (a, b) with that score (agg_current). */
struct agg_entry {
    uint64_t num_edge, den_edge;
    uint32_t a, b;
};

static inline uint64_t agg_num(const struct agg_entry *x)
{
    return x->num_edge & AGG_NUM_MASK;
}

static inline uint64_t agg_den(const struct agg_entry *x)
{
    return x->den_edge & AGG_DEN_MASK;
}

static inline uint32_t agg_edge_of(const struct agg_entry *x)
{
    return (uint32_t)(x->num_edge >> AGG_NUM_BITS | x->den_edge >> AGG_DEN_BITS << 10);
}

static inline struct agg_entry agg_entry_make(uint64_t num, uint64_t den, uint32_t a, uint32_t b,
                                              uint32_t edge)
{
    return (struct agg_entry){.num_edge = num | (uint64_t)(edge & 1023) << AGG_NUM_BITS,
                              .den_edge = den | (uint64_t)(edge >> 10) << AGG_DEN_BITS,
                              .a = a,
                              .b = b};
}

struct agg {
    struct vox_ctx *ctx;
    const struct vox_seg_params *p;
    struct agg_edge *e;
    int64_t ne, ns; /* edges, segments + 1 */
    uint32_t *order; /* the edges whose score applies at load, best first (see agg_order_init) */
    int64_t norder, next; /* order[next..norder) are still to be popped */
    struct agg_entry *heap; /* entries of edges changed since load */
    int64_t nheap, heap_cap;
    int64_t tabled; /* edges [0, tabled) are in the table (agg_load, agg_links) */
    /* Bit sets over the edges, small enough to stay in cache, so that telling dead entries of
     * the lists and stale entries of the load order apart reads no edge: dead (merged or
     * added into another), stale (dead, or combined or re-keyed since load). */
    uint64_t *dead, *stale;
    int64_t nvalid, nkept; /* edges marked queued; entries kept by the last rebuild */
    uint64_t *slot; /* hash table by (a, b): hash << 32 | edge id, AGG_EMPTY ids empty */
    uint64_t tsize;
    /* per segment: its list at pool[start..start+len) (start -1: none), in a region of the
     * pool that starts with a header: the segment, then the room (agg_cap) */
    int64_t *start;
    uint32_t *len;
    uint32_t *pool;
    int64_t pool_len, pool_cap;
    int64_t *hist;  /* quantile score only: per edge, its bins in the arena */
    int32_t *nbins;
    uint8_t *hbin;  /* histogram arena */
    uint64_t *hcnt;
    int64_t hlen, hcap;
};

static inline bool agg_bit(const uint64_t *set, uint32_t i)
{
    return set[i >> 6] >> (i & 63) & 1;
}

static inline void agg_set(uint64_t *set, uint32_t i)
{
    set[i >> 6] |= 1ull << (i & 63);
}

/* Edge i is gone: a = 0 marks it in the edge too (heap entries compare endpoints). */
static inline void agg_kill(struct agg *g, uint32_t i)
{
    g->e[i].a = 0;
    agg_set(g->dead, i);
    agg_set(g->stale, i);
}

static void agg_score(const struct agg *g, int64_t i, uint64_t *num, uint64_t *den)
{
    const struct agg_edge *e = &g->e[i];
    switch (g->p->score) {
    case VOX_SEG_SCORE_MAX:
        *num = e->max;
        *den = 1;
        return;
    case VOX_SEG_SCORE_SMOOTHED:
        *num = e->sum;
        *den = e->count + (uint64_t)g->p->smooth_k;
        return;
    case VOX_SEG_SCORE_QUANTILE: {
        uint64_t k = (uint64_t)(g->p->quantile * (double)(e->count - 1)), cum = 0;
        int64_t h = g->hist[i];
        int32_t j = 0;
        while (j + 1 < g->nbins[i] && (cum += g->hcnt[h + j]) <= k)
            j++;
        *num = g->hbin[h + j];
        *den = 1;
        return;
    }
    default:
        *num = e->sum;
        *den = e->count;
        return;
    }
}

static inline double agg_value(uint64_t num, uint64_t den)
{
    return (double)num / ((double)den * 255.0);
}

/* x goes before y: larger score, then smaller a, then smaller b. */
static inline bool agg_before(const struct agg_entry *x, const struct agg_entry *y)
{
    unsigned __int128 l = (unsigned __int128)agg_num(x) * agg_den(y);
    unsigned __int128 r = (unsigned __int128)agg_num(y) * agg_den(x);
    if (l != r)
        return l > r;
    if (x->a != y->a)
        return x->a < y->a;
    return x->b < y->b;
}

/* The heap is 4-ary (children of i at 4i + 1 .. 4i + 4): half the levels of a binary heap,
 * and the four children share two cache lines. */
#define AGG_PARENT(i) (((i) - 1) / 4)

static void agg_sift_down(struct agg_entry *heap, int64_t n, int64_t i)
{
    struct agg_entry x = heap[i];
    for (;;) {
        int64_t c = 4 * i + 1, end = c + 4 < n ? c + 4 : n;
        if (c >= n)
            break;
        for (int64_t k = c + 1; k < end; k++)
            c = agg_before(&heap[k], &heap[c]) ? k : c;
        if (!agg_before(&heap[c], &x))
            break;
        heap[i] = heap[c];
        i = c;
    }
    heap[i] = x;
}

/* Restores the heap order of heap[0..n) in O(n). */
static void agg_heapify(struct agg_entry *heap, int64_t n)
{
    for (int64_t i = n > 1 ? AGG_PARENT(n - 1) : -1; i >= 0; i--)
        agg_sift_down(heap, n, i);
}

/* Whether x is current: its edge still joins (a, b) with x's score. A dead edge has a = 0. */
static inline bool agg_current(const struct agg *g, const struct agg_entry *x)
{
    uint32_t i = agg_edge_of(x);
    const struct agg_edge *e = &g->e[i];
    if (agg_bit(g->dead, i) || e->a != x->a || e->b != x->b)
        return false;
    uint64_t num, den;
    agg_score(g, i, &num, &den);
    return num == agg_num(x) && den == agg_den(x);
}

/* Drops the stale entries and restores the heap order, in O(n). */
static void agg_heap_rebuild(struct agg *g)
{
    int64_t n = 0;
    for (int64_t i = 0; i < g->nheap; i++)
        if (agg_current(g, &g->heap[i]))
            g->heap[n++] = g->heap[i];
    g->nheap = g->nkept = n;
    agg_heapify(g->heap, n);
}

/* The edge's previous entry, if any, is stale from now on. */
static inline void agg_unqueue(struct agg *g, struct agg_edge *e)
{
    g->nvalid -= e->queued;
    e->queued = false;
}

/* Queues edge i with its current endpoints and score, unless a cut at max_threshold would not
 * apply that score. A rebuild comes when stale entries outnumber both the queued edges and
 * what the last rebuild kept (a quantile can return to an earlier score, so an old entry may
 * be current again: a few edges may have two), so its cost is spread over the pushes. */
static enum vox_status agg_push(struct agg *g, int64_t i)
{
    struct agg_edge *e = &g->e[i];
    uint64_t num, den;
    agg_score(g, i, &num, &den);
    struct agg_entry x = agg_entry_make(num, den, e->a, e->b, (uint32_t)i);
    agg_unqueue(g, e);
    if (!vox_merge_applies(agg_value(num, den), g->p->max_threshold))
        return VOX_OK;
    int64_t most = g->nvalid > g->nkept ? g->nvalid : g->nkept;
    if (g->nheap > 2 * most + 1024 ||
        (g->nheap == g->heap_cap && g->nheap - g->nvalid >= g->heap_cap / 4))
        agg_heap_rebuild(g); /* a full heap drops its stale entries before it grows */
    if (g->nheap == g->heap_cap) {
        int64_t cap = g->heap_cap + g->heap_cap / 4 + 1024;
        void *h = vox_realloc(g->ctx, g->heap, (size_t)g->heap_cap * sizeof *g->heap,
                              (size_t)cap * sizeof *g->heap);
        if (!h)
            return VOX_OUT_OF_MEMORY;
        g->heap = h;
        g->heap_cap = cap;
    }
    e->queued = true;
    g->nvalid++;
    int64_t k = g->nheap++;
    while (k > 0 && agg_before(&x, &g->heap[AGG_PARENT(k)])) {
        g->heap[k] = g->heap[AGG_PARENT(k)];
        k = AGG_PARENT(k);
    }
    g->heap[k] = x;
    return VOX_OK;
}

static struct agg_entry agg_pop(struct agg *g)
{
    struct agg_entry top = g->heap[0];
    g->heap[0] = g->heap[--g->nheap];
    if (g->nheap > 0) {
        agg_sift_down(g->heap, g->nheap, 0);
        __builtin_prefetch(&g->e[agg_edge_of(&g->heap[0])]); /* likely the next pop's edge */
    }
    return top;
}

/* ---- the edge table -------------------------------------------------------------------- */

/* The 32-bit hash of (a, b): its high bits pick the home slot (multiply-shift, so the table
 * need not be a power of two) and it is stored in the slot beside the edge id. */
static inline uint32_t agg_hash(uint32_t a, uint32_t b)
{
    uint64_t k = (uint64_t)a << 32 | b; /* a murmur3-style finalizer */
    k ^= k >> 33;
    k *= 0xFF51AFD7ED558CCDull;
    k ^= k >> 33;
    k *= 0xC4CEB9FE1A85EC53ull;
    return (uint32_t)(k >> 32);
}

static inline uint64_t agg_home(const struct agg *g, uint32_t hash)
{
    return (uint64_t)hash * g->tsize >> 32;
}

static inline uint64_t agg_next(const struct agg *g, uint64_t h)
{
    return h + 1 == g->tsize ? 0 : h + 1;
}

/* The live edge (a, b), a < b, or AGG_EMPTY; an edge is read only when its hash matches. */
static uint32_t agg_find(const struct agg *g, uint32_t a, uint32_t b)
{
    uint32_t hash = agg_hash(a, b);
    for (uint64_t h = agg_home(g, hash);; h = agg_next(g, h)) {
        uint64_t s = g->slot[h];
        uint32_t i = (uint32_t)s;
        if (i == AGG_EMPTY)
            return i;
        if ((uint32_t)(s >> 32) == hash && g->e[i].a == a && g->e[i].b == b)
            return i;
    }
}

static void agg_insert(struct agg *g, uint32_t i)
{
    uint32_t hash = agg_hash(g->e[i].a, g->e[i].b);
    uint64_t h = agg_home(g, hash);
    while ((uint32_t)g->slot[h] != AGG_EMPTY)
        h = agg_next(g, h);
    g->slot[h] = (uint64_t)hash << 32 | i;
}

/* Removes edge i (under its current endpoints), shifting later entries of its probe run back
 * (their homes come from the stored hashes). */
static void agg_remove(struct agg *g, uint32_t i)
{
    uint64_t h = agg_home(g, agg_hash(g->e[i].a, g->e[i].b));
    while ((uint32_t)g->slot[h] != i)
        h = agg_next(g, h);
    for (uint64_t j = agg_next(g, h); (uint32_t)g->slot[j] != AGG_EMPTY; j = agg_next(g, j)) {
        uint64_t k = agg_home(g, (uint32_t)(g->slot[j] >> 32));
        /* the entry at j may move to the hole at h when its home k is not in (h, j] */
        if ((j > h && (k <= h || k > j)) || (j < h && k <= h && k > j)) {
            g->slot[h] = g->slot[j];
            h = j;
        }
    }
    g->slot[h] = UINT64_MAX;
}

/* ---- adjacency lists ------------------------------------------------------------------- */

#define AGG_HEADER 2

/* Room of segment a's list: the list's length and more, up to its region's end. */
static inline int64_t agg_cap(const struct agg *g, uint32_t a)
{
    return g->start[a] < 0 ? 0 : g->pool[g->start[a] - 1];
}

/* Compacts the pool in place: walks its regions in order (their headers give the segment and
 * the room; a region a list has moved out of, or an emptied list's, is skipped), keeping only
 * the live entries, so entries only move down. Makes room for `more` after them. */
static enum vox_status agg_pool_compact(struct agg *g, int64_t more)
{
    int64_t at = 0;
    for (int64_t p = 0; p < g->pool_len;) {
        uint32_t s = g->pool[p];
        int64_t from = p + AGG_HEADER;
        p = from + g->pool[p + 1];
        if (g->start[s] != from)
            continue;
        if (g->len[s] == 0) {
            g->start[s] = -1;
            continue;
        }
        const uint32_t *l = g->pool + from;
        uint32_t *o = g->pool + at + AGG_HEADER, n = 0;
        for (uint32_t k = 0; k < g->len[s]; k++)
            if (!agg_bit(g->dead, l[k]))
                o[n++] = l[k];
        g->pool[at] = s;
        g->pool[at + 1] = n;
        g->start[s] = at + AGG_HEADER;
        g->len[s] = n;
        at += AGG_HEADER + n;
    }
    g->pool_len = at;
    if (at + more > g->pool_cap) {
        int64_t cap = at + more + at / 2 + 1024;
        void *p = vox_realloc(g->ctx, g->pool, (size_t)g->pool_cap * sizeof *g->pool,
                              (size_t)cap * sizeof *g->pool);
        if (!p)
            return VOX_OUT_OF_MEMORY;
        g->pool = p;
        g->pool_cap = cap;
    }
    return VOX_OK;
}

/* Room for `more` entries after segment a's list (moved to the pool's end when it has none,
 * with twice the room it needs). */
static enum vox_status agg_reserve(struct agg *g, uint32_t a, int64_t more)
{
    int64_t len = g->len[a];
    if (len + more <= agg_cap(g, a))
        return VOX_OK;
    int64_t need = 2 * (len + more);
    if (g->pool_len + AGG_HEADER + need > g->pool_cap) {
        enum vox_status s = agg_pool_compact(g, AGG_HEADER + need);
        if (s != VOX_OK)
            return s;
        len = g->len[a];
        if (len + more <= agg_cap(g, a))
            return VOX_OK;
    }
    need = need < UINT32_MAX ? need : UINT32_MAX; /* a degree is below 2^32 */
    int64_t at = g->pool_len + AGG_HEADER;
    g->pool[at - 2] = a;
    g->pool[at - 1] = (uint32_t)need;
    /* copied whole: telling the dead entries apart would read every edge (random reads); they
     * go when the list is walked or the pool compacted */
    if (len > 0)
        memcpy(g->pool + at, g->pool + g->start[a], (size_t)len * sizeof *g->pool);
    g->start[a] = at;
    g->pool_len = at + need;
    return VOX_OK;
}

/* ---- merging --------------------------------------------------------------------------- */

/* Room for `more` entries at the end of an arena of `len` elements of `size` bytes. */
static bool arena_reserve(struct vox_ctx *ctx, void **buf, int64_t len, int64_t *cap,
                          int64_t more, size_t size)
{
    if (len + more <= *cap)
        return true;
    int64_t c = 2 * (len + more);
    void *b = vox_realloc(ctx, *buf, (size_t)*cap * size, (size_t)c * size);
    if (!b)
        return false;
    *buf = b;
    *cap = c;
    return true;
}

/* Adds edge f's statistics into edge t's (histograms merged into a new run at the arena's
 * end). */
static enum vox_status agg_combine(struct agg *g, uint32_t t, uint32_t f)
{
    struct agg_edge *to = &g->e[t];
    const struct agg_edge *from = &g->e[f];
    to->sum += from->sum;
    to->count += from->count;
    to->max = from->max > to->max ? from->max : to->max;
    if (g->p->score != VOX_SEG_SCORE_QUANTILE)
        return VOX_OK;
    int64_t more = g->nbins[t] + g->nbins[f], cap = g->hcap;
    if (!arena_reserve(g->ctx, (void **)&g->hbin, g->hlen, &cap, more, 1) ||
        !arena_reserve(g->ctx, (void **)&g->hcnt, g->hlen, &g->hcap, more, 8))
        return VOX_OUT_OF_MEMORY;
    int64_t i = g->hist[t], ie = i + g->nbins[t], j = g->hist[f], je = j + g->nbins[f];
    int64_t o = g->hlen;
    while (i < ie || j < je) {
        if (j >= je || (i < ie && g->hbin[i] < g->hbin[j])) {
            g->hbin[o] = g->hbin[i];
            g->hcnt[o++] = g->hcnt[i++];
        } else if (i >= ie || g->hbin[j] < g->hbin[i]) {
            g->hbin[o] = g->hbin[j];
            g->hcnt[o++] = g->hcnt[j++];
        } else {
            g->hbin[o] = g->hbin[i];
            g->hcnt[o++] = g->hcnt[i++] + g->hcnt[j++];
        }
    }
    g->hist[t] = g->hlen;
    g->nbins[t] = (int32_t)(o - g->hlen);
    g->hlen = o;
    return VOX_OK;
}

/* Merging walks b's list in batches of AGG_BATCH edges so that their random reads overlap:
 * the next batch's edges are prefetched, then this batch's table slots, then its look-ups run
 * (prefetching the edges they find), then the batch is applied. Looking up before applying
 * gives the same answers: every look-up is for a pair (a, nb) of its own, and applying an
 * edge removes (b, nb') and inserts or combines into (a, nb') only. */
#define AGG_BATCH 16

/* The other endpoint of b's live edge f. */
static inline uint32_t agg_other(const struct agg_edge *f, uint32_t b)
{
    return f->a == b ? f->b : f->a;
}

/* Looks up, for b's live edges l[0..n), the edge from a to the same neighbour (to[k];
 * AGG_EMPTY when there is none). */
static void agg_batch_find(const struct agg *g, uint32_t a, uint32_t b, const uint32_t *l,
                           int64_t n, uint32_t *to)
{
    for (int64_t k = 0; k < n; k++) {
        const struct agg_edge *f = &g->e[l[k]];
        uint32_t nb = agg_other(f, b);
        __builtin_prefetch(&g->slot[agg_home(g, agg_hash(a < nb ? a : nb, a < nb ? nb : a))]);
        __builtin_prefetch(&g->slot[agg_home(g, agg_hash(f->a, f->b))]);
    }
    for (int64_t k = 0; k < n; k++) {
        const struct agg_edge *f = &g->e[l[k]];
        uint32_t nb = agg_other(f, b);
        to[k] = agg_find(g, a < nb ? a : nb, a < nb ? nb : a);
        if (to[k] != AGG_EMPTY)
            __builtin_prefetch(&g->e[to[k]]);
    }
}

/* Moves b's live edge fi to a: added into a's edge `to` to the same neighbour, or re-keyed to
 * (a, nb) and appended to a's list. */
static enum vox_status agg_move(struct agg *g, uint32_t a, uint32_t b, uint32_t fi, uint32_t to)
{
    struct agg_edge *f = &g->e[fi];
    uint32_t nb = agg_other(f, b);
    agg_remove(g, fi);
    if (to != AGG_EMPTY) { /* a common neighbour: one edge with the sum of both */
        uint64_t num0, den0, num1, den1;
        agg_score(g, to, &num0, &den0);
        enum vox_status s = agg_combine(g, to, fi);
        agg_kill(g, fi);
        agg_unqueue(g, f);
        agg_set(g->stale, to);
        agg_score(g, to, &num1, &den1);
        /* a queued entry of an unchanged score stays current (max, quantile) */
        if (s != VOX_OK || (g->e[to].queued && num0 == num1 && den0 == den1))
            return s;
        return agg_push(g, to);
    }
    f->a = a < nb ? a : nb;
    f->b = a < nb ? nb : a;
    agg_set(g->stale, fi);
    agg_insert(g, fi);
    g->pool[g->start[a] + g->len[a]++] = fi;
    return agg_push(g, fi);
}

/* Merges b into a (a < b) along edge me: b's edges to a's neighbours are added into a's,
 * the others are re-keyed to a and join a's list. */
static enum vox_status agg_merge(struct agg *g, uint32_t a, uint32_t b, uint32_t me)
{
    agg_remove(g, me);
    agg_kill(g, me);
    enum vox_status s = agg_reserve(g, a, g->len[b]);
    int64_t len = g->len[b], n = 0;
    uint32_t *lb = g->pool + (len > 0 ? g->start[b] : 0);
    for (int64_t k = 0; k < len; k++) { /* b's list is consumed: keep its live ids in place */
        if (agg_bit(g->dead, lb[k]))
            continue;
        if (n < AGG_BATCH)
            __builtin_prefetch(&g->e[lb[k]]);
        lb[n++] = lb[k];
    }
    for (int64_t k0 = 0; k0 < n && s == VOX_OK; k0 += AGG_BATCH) {
        int64_t m = n - k0 < AGG_BATCH ? n - k0 : AGG_BATCH;
        for (int64_t k = k0 + AGG_BATCH; k < n && k < k0 + 2 * AGG_BATCH; k++)
            __builtin_prefetch(&g->e[lb[k]]);
        uint32_t to[AGG_BATCH];
        agg_batch_find(g, a, b, lb + k0, m, to);
        for (int64_t k = 0; k < m && s == VOX_OK; k++)
            s = agg_move(g, a, b, lb[k0 + k], to[k]);
    }
    g->len[b] = 0;
    return s;
}

/* ---- setup ----------------------------------------------------------------------------- */

static enum vox_status agg_alloc(struct agg *g, const struct vox_rag *rag)
{
    struct vox_ctx *ctx = g->ctx;
    int64_t ns = rag->nseg + 1, ne = rag->n;
    bool q = g->p->score == VOX_SEG_SCORE_QUANTILE;
    uint64_t tsize = (uint64_t)ne + (uint64_t)ne / 2 + 1024; /* load <= 2/3 */
    g->ne = ne;
    g->ns = ns;
    g->tsize = tsize;
    g->e = vox_alloc(ctx, (size_t)(ne + 1) * sizeof *g->e);
    g->slot = vox_alloc(ctx, (size_t)tsize * sizeof *g->slot);
    g->start = vox_alloc(ctx, (size_t)ns * sizeof *g->start);
    g->len = vox_calloc(ctx, (size_t)ns, sizeof *g->len);
    /* the lists with their headers, and room for those that move */
    g->pool_cap = 2 * ne + AGG_HEADER * ns + ne / 2 + 1024;
    g->pool = vox_alloc(ctx, (size_t)g->pool_cap * sizeof *g->pool);
    g->hcap = q ? rag->nhist + 1 : 0;
    g->hist = q ? vox_alloc(ctx, (size_t)(ne + 1) * sizeof *g->hist) : NULL;
    g->nbins = q ? vox_alloc(ctx, (size_t)(ne + 1) * sizeof *g->nbins) : NULL;
    g->hbin = q ? vox_alloc(ctx, (size_t)g->hcap) : NULL;
    g->hcnt = q ? vox_alloc(ctx, (size_t)g->hcap * 8) : NULL;
    g->dead = vox_calloc(ctx, (size_t)(ne / 64 + 1), sizeof *g->dead);
    g->stale = vox_calloc(ctx, (size_t)(ne / 64 + 1), sizeof *g->stale);
    if (!g->e || !g->slot || !g->start || !g->len || !g->pool || !g->dead || !g->stale ||
        (q && (!g->hist || !g->nbins || !g->hbin || !g->hcnt)))
        return VOX_OUT_OF_MEMORY;
    memset(g->slot, 0xFF, (size_t)tsize * sizeof *g->slot);
    if (q) {
        memcpy(g->hbin, rag->hist_bin, (size_t)rag->nhist);
        memcpy(g->hcnt, rag->hist_count, (size_t)rag->nhist * 8);
        g->hlen = rag->nhist;
    }
    return VOX_OK;
}

/* Copies and checks the edges and counts the degrees (in len). Edges in strictly increasing
 * (a, b) order, as vox_rag_build makes them, cannot repeat, and go into the table later
 * (agg_links, beside the sort of agg_order_init); from the first edge out of order on, the
 * edges so far are put in the table and each later one is looked up first. With `owned`, the
 * pages of the edges already copied are returned as it goes (their copies take their
 * place). */
static enum vox_status agg_load(struct agg *g, const struct vox_rag *rag, bool owned)
{
    bool q = g->p->score == VOX_SEG_SCORE_QUANTILE, sorted = true;
    const int64_t step = 1 << 16;
    uint64_t prev = 0, total = 0;
    for (int64_t i = 0; i < g->ne; i++) {
        if (owned && i % step == 0 && i > 0)
            seg_release_pages(rag->e + i - step, (size_t)step * sizeof *rag->e);
        const struct vox_rag_edge *r = &rag->e[i];
        if (r->a == 0 || r->a >= r->b || r->b > rag->nseg || r->count == 0 ||
            (q && r->nbins <= 0))
            return vox_fail(g->ctx, VOX_INVALID_ARG,
                            "region graph edge %lld (%u, %u): expected 0 < a < b <= %lld, "
                            "count > 0%s",
                            (long long)i, r->a, r->b, (long long)rag->nseg,
                            q ? " and a histogram" : "");
        uint64_t key = (uint64_t)r->a << 32 | r->b;
        if (sorted && key <= prev) { /* out of order: the table from now on */
            sorted = false;
            for (int64_t k = 0; k < i; k++)
                agg_insert(g, (uint32_t)k);
            g->tabled = i;
        }
        prev = key;
        if (!sorted && agg_find(g, r->a, r->b) != AGG_EMPTY)
            return vox_fail(g->ctx, VOX_INVALID_ARG,
                            "region graph edge %lld (%u, %u) repeats an earlier edge",
                            (long long)i, r->a, r->b);
        if (r->count > AGG_DEN_MASK || r->sum > 255 * r->count ||
            (total += r->count) + (uint64_t)g->p->smooth_k > AGG_DEN_MASK)
            return vox_fail(g->ctx, VOX_INVALID_ARG,
                            "region graph edge %lld (%u, %u): sum %llu, count %llu: expected "
                            "sum <= 255 count and a total count + smooth_k below 2^%d",
                            (long long)i, r->a, r->b, (unsigned long long)r->sum,
                            (unsigned long long)r->count, AGG_DEN_BITS);
        g->e[i] = (struct agg_edge){.a = r->a, .b = r->b, .max = r->max, .sum = r->sum,
                                    .count = r->count};
        if (q) {
            g->hist[i] = r->hist;
            g->nbins[i] = r->nbins;
        }
        if (!sorted) {
            agg_insert(g, (uint32_t)i);
            g->tabled = i + 1;
        }
        g->len[r->a]++;
        g->len[r->b]++;
    }
    return VOX_OK;
}

/* The edges not yet in the table go in, and the segments' lists are laid out in the pool. */
static void agg_links(struct agg *g)
{
    const int64_t ahead = 8;
    for (int64_t i = g->tabled; i < g->ne; i++) {
        if (i + ahead < g->ne) /* the table slot of a later edge: the only random access */
            __builtin_prefetch(
                &g->slot[agg_home(g, agg_hash(g->e[i + ahead].a, g->e[i + ahead].b))]);
        agg_insert(g, (uint32_t)i);
    }
    int64_t at = 0;
    for (int64_t v = 0; v < g->ns; v++) {
        g->start[v] = -1;
        if (g->len[v] == 0)
            continue;
        g->pool[at] = (uint32_t)v;
        g->pool[at + 1] = g->len[v];
        g->start[v] = at + AGG_HEADER;
        at += AGG_HEADER + g->len[v];
        g->len[v] = 0;
    }
    g->pool_len = at;
    for (int64_t i = 0; i < g->ne; i++) {
        uint32_t a = g->e[i].a, b = g->e[i].b;
        g->pool[g->start[a] + g->len[a]++] = (uint32_t)i;
        g->pool[g->start[b] + g->len[b]++] = (uint32_t)i;
    }
}

/* Edge i's entry; false when a cut at max_threshold would not apply its score. */
static bool agg_entry_of(const struct agg *g, int64_t i, struct agg_entry *x)
{
    uint64_t num, den;
    agg_score(g, i, &num, &den);
    *x = agg_entry_make(num, den, g->e[i].a, g->e[i].b, (uint32_t)i);
    return vox_merge_applies(agg_value(num, den), g->p->max_threshold);
}

/* A key that orders entries by descending score, coarsely: the inverted top 32 bits of
 * num / den * 2^24 (scores are at most 255). Different scores may share a key, never the
 * reverse order; agg_order_init sorts such runs exactly. */
static inline uint32_t agg_key(uint64_t num, uint64_t den)
{
    uint64_t q = num < (1ull << 40) ? (num << 24) / den
                                    : (uint64_t)(((unsigned __int128)num << 24) / den);
    return ~(uint32_t)q;
}

/* Sorts x[0..n) by the high 32 bits, stably (11-bit digits), using tmp[0..n). */
static void agg_sort_high(uint64_t *x, uint64_t *tmp, int64_t n)
{
    uint64_t *src = x, *dst = tmp;
    for (int shift = 32; shift < 64; shift += 11) {
        int64_t cnt[2049] = {0};
        for (int64_t i = 0; i < n; i++)
            cnt[(src[i] >> shift & 2047) + 1]++;
        for (int d = 0; d < 2048; d++)
            cnt[d + 1] += cnt[d];
        for (int64_t i = 0; i < n; i++)
            dst[cnt[src[i] >> shift & 2047]++] = src[i];
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != x)
        memcpy(x, src, (size_t)n * sizeof *x);
}

/* Edge i's entry, whatever its score. */
static inline struct agg_entry agg_entry_exact(const struct agg *g, uint32_t i)
{
    uint64_t num, den;
    agg_score(g, i, &num, &den);
    return agg_entry_make(num, den, g->e[i].a, g->e[i].b, i);
}

static int agg_cmp_exact(const void *x, const void *y, void *arg)
{
    const struct agg *g = arg;
    struct agg_entry ex = agg_entry_exact(g, (uint32_t)*(const uint64_t *)x);
    struct agg_entry ey = agg_entry_exact(g, (uint32_t)*(const uint64_t *)y);
    return agg_before(&ex, &ey) ? -1 : agg_before(&ey, &ex) ? 1 : 0;
}

/* Puts the key-sorted run x[0..n) (equal keys) in exact order. A run already in order (equal
 * scores, edges in (a, b) order: the usual case) costs one pass that reads each edge once,
 * in ascending id order, prefetched ahead. */
static void agg_sort_run(const struct agg *g, uint64_t *x, int64_t n)
{
    struct agg_entry prev = agg_entry_exact(g, (uint32_t)x[0]);
    int64_t i = 1;
    for (; i < n; i++) {
        if (i + 8 < n)
            __builtin_prefetch(&g->e[(uint32_t)x[i + 8]]);
        struct agg_entry cur = agg_entry_exact(g, (uint32_t)x[i]);
        if (!agg_before(&prev, &cur))
            break;
        prev = cur;
    }
    if (i < n)
        qsort_r(x, (size_t)n, sizeof *x, agg_cmp_exact, (void *)g);
}

/* The order of every edge whose score applies at load, best first in the heap's total order:
 * a radix sort by key, then exact sorts of the runs of equal keys. Popping it is sequential;
 * only edges that change later go through the heap, which starts small. */
static enum vox_status agg_order_init(struct agg *g)
{
    struct agg_entry x;
    int64_t nq = 0;
    for (int64_t i = 0; i < g->ne; i++)
        nq += agg_entry_of(g, i, &x);
    uint64_t *k = vox_alloc(g->ctx, (size_t)(2 * nq + 1) * sizeof *k);
    g->order = vox_alloc(g->ctx, (size_t)(nq + 1) * sizeof *g->order);
    g->heap_cap = g->ne / 16 + 1024;
    g->heap = vox_alloc(g->ctx, (size_t)g->heap_cap * sizeof *g->heap);
    if (!k || !g->order || !g->heap) {
        vox_free(g->ctx, k);
        return VOX_OUT_OF_MEMORY;
    }
    for (int64_t i = 0; i < g->ne; i++)
        if (agg_entry_of(g, i, &x))
            k[g->norder++] = (uint64_t)agg_key(agg_num(&x), agg_den(&x)) << 32 | (uint64_t)i;
    agg_sort_high(k, k + nq, nq);
    for (int64_t i = 0, j; i < nq; i = j) {
        for (j = i + 1; j < nq && k[j] >> 32 == k[i] >> 32; j++)
            ;
        if (j - i > 1)
            agg_sort_run(g, k + i, j - i);
    }
    for (int64_t i = 0; i < nq; i++)
        g->order[i] = (uint32_t)k[i];
    vox_free(g->ctx, k);
    return VOX_OK;
}

/* The table and lists (task 0) and the load order (task 1) read the copied edges only and
 * write their own arrays: on two threads they run side by side. */
struct agg_init_job {
    struct agg *g;
    enum vox_status *st;
};

static void agg_init_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct agg_init_job *j = arg;
    for (int64_t t = lo[0]; t < hi[0]; t++) {
        if (t == 0)
            agg_links(j->g);
        else
            j->st[1] = agg_order_init(j->g);
    }
}

/* Loads the graph; `owned` (rag itself, or NULL) is freed once copied, before the heap takes
 * its room. */
static enum vox_status agg_init(struct agg *g, const struct vox_rag *rag, struct vox_rag *owned)
{
    enum vox_status s = agg_alloc(g, rag);
    if (s == VOX_OK)
        s = agg_load(g, rag, owned != NULL);
    vox_rag_fini(g->ctx, owned);
    if (s != VOX_OK)
        return s;
    enum vox_status st[2] = {VOX_OK, VOX_OK};
    struct agg_init_job j = {g, st};
    vox_pool_for(vox_ctx_pool(g->ctx), (int64_t[3]){2, 1, 1}, (int64_t[3]){1, 1, 1},
                 VOX_SCHED_STATIC, agg_init_task, &j);
    return st[0] != VOX_OK ? st[0] : st[1];
}

/* The next merge: the better of the first edge in the load order that is live and unchanged
 * (not changed) and the heap's first current entry; false when neither is left. */
static bool agg_next_entry(struct agg *g, struct agg_entry *top)
{
    while (g->next < g->norder && agg_bit(g->stale, g->order[g->next]))
        g->next++;
    for (int64_t k = g->next + 1; k < g->norder && k < g->next + 4; k++)
        if (!agg_bit(g->stale, g->order[k])) /* likely a later head */
            __builtin_prefetch(&g->e[g->order[k]]);
    while (g->nheap > 0 && !agg_current(g, &g->heap[0]))
        agg_pop(g);
    struct agg_entry x;
    bool ordered = g->next < g->norder && (agg_entry_of(g, g->order[g->next], &x), true);
    if (g->nheap > 0 && (!ordered || agg_before(&g->heap[0], &x))) {
        *top = agg_pop(g);
        return true;
    }
    if (ordered) {
        g->next++;
        *top = x;
    }
    return ordered;
}

static void agg_fini(struct agg *g)
{
    struct vox_ctx *ctx = g->ctx;
    vox_free(ctx, g->e);
    vox_free(ctx, g->order);
    vox_free(ctx, g->heap);
    vox_free(ctx, g->slot);
    vox_free(ctx, g->start);
    vox_free(ctx, g->len);
    vox_free(ctx, g->pool);
    vox_free(ctx, g->hist);
    vox_free(ctx, g->nbins);
    vox_free(ctx, g->hbin);
    vox_free(ctx, g->hcnt);
    vox_free(ctx, g->dead);
    vox_free(ctx, g->stale);
}

bool vox_merge_applies(double score, double threshold)
{
    return 1.0 - score < threshold;
}

static enum vox_status agg_run(struct vox_ctx *ctx, const struct vox_rag *rag,
                               struct vox_rag *owned,
                               const struct vox_seg_params *p,
                               struct vox_merge_history *hist_out)
{
    struct agg g = {.ctx = ctx, .p = p};
    /* at most nseg - 1 merges: the history never grows (its pages fill as it is written) */
    struct vox_merge_history h = {.nseg = rag->nseg, .cap = rag->nseg};
    h.m = vox_alloc(ctx, (size_t)(h.cap + 1) * sizeof *h.m);
    enum vox_status s = h.m ? agg_init(&g, rag, owned) : VOX_OUT_OF_MEMORY;
    if (!h.m)
        vox_rag_fini(ctx, owned);
    struct agg_entry top;
    while (s == VOX_OK && agg_next_entry(&g, &top)) { /* every queued score applies */
        struct agg_edge *e = &g.e[agg_edge_of(&top)];
        agg_unqueue(&g, e);
        s = seg_history_push(ctx, &h, e->a, e->b, e->a, agg_value(agg_num(&top), agg_den(&top)));
        if (s == VOX_OK)
            s = agg_merge(&g, e->a, e->b, agg_edge_of(&top));
    }
    agg_fini(&g);
    if (s != VOX_OK) {
        vox_merge_history_fini(ctx, &h);
        return s;
    }
    *hist_out = h;
    return VOX_OK;
}

static enum vox_status agg_check(struct vox_ctx *ctx, const struct vox_rag *rag,
                                 const struct vox_seg_params *p)
{
    enum vox_status s = vox_seg_params_check(ctx, p);
    if (s != VOX_OK)
        return s;
    if (!rag || rag->nseg < 0 || rag->nseg > UINT32_MAX - 1 || rag->n < 0 ||
        rag->n >= UINT32_MAX)
        return vox_fail(ctx, VOX_INVALID_ARG, "agglomeration: no region graph, or too large");
    return VOX_OK;
}

enum vox_status vox_seg_agglomerate(struct vox_ctx *ctx, const struct vox_rag *rag,
                                    const struct vox_seg_params *p,
                                    struct vox_merge_history *hist_out)
{
    enum vox_status s = agg_check(ctx, rag, p);
    return s != VOX_OK ? s : agg_run(ctx, rag, NULL, p, hist_out);
}

enum vox_status seg_agglomerate_owned(struct vox_ctx *ctx, struct vox_rag *rag,
                                      const struct vox_seg_params *p,
                                      struct vox_merge_history *hist_out)
{
    enum vox_status s = agg_check(ctx, rag, p);
    if (s != VOX_OK)
        vox_rag_fini(ctx, rag);
    return s != VOX_OK ? s : agg_run(ctx, rag, rag, p, hist_out);
}
