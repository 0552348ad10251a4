/*
 * seg/rag.c: the region adjacency graph of a labelling, with exact integer statistics.
 *
 * For every voxel face (v, v - e_c) whose labels a != b are both nonzero, the pair
 * (min, max) accumulates the face's quantized affinity: max, sum (uint64), count (the contact
 * area) and, on request, a histogram over the 256 quantized values, stored sparsely (only the
 * nonzero bins, sorted). All of it adds exactly, so merged edges are exact and the result does
 * not depend on any processing order.
 *
 * Pass 1 scans the faces once, finding each pair's edge in an open-addressing hash table of
 * 4-byte edge ids (4 bytes a slot: growth keeps little alive; a probe compares the edge's key),
 * with a one-entry cache per channel: runs along x mostly repeat the same pair. Without
 * histograms, pass 1 runs on every thread, each over a run of rows with a table of its own;
 * a pair that several runs found is summed when the edges are ordered. Pass 2, for
 * histograms only, scans again and drops each face's value into its edge's slot of a byte
 * array laid out by the counts of pass 1 (at most 3 bytes per voxel, freed at the end), then
 * each edge's values are counted into bins. The table is freed once the scans are done, and
 * the edges are put in (a, b) order by a counting sort on a straight into the output.
 */
#include "seg_internal.h"

#include <stdlib.h>
#include <string.h>

/* One edge's key and statistics together: a face of a new pair touches one cache line. */
struct rag_stat {
    uint64_t key, sum, count;
    uint8_t max;
};

/* Recently used pairs, direct-mapped by hash: most faces of a row repeat a pair of the rows
 * or channels just scanned, and a hit skips the table's two random reads. */
#define RAG_RECENT 1024

struct rag_acc {
    struct vox_ctx *ctx;
    uint32_t *slot;     /* hash table of edge + 1 (0 = empty), probed by st[edge].key */
    int64_t cap;        /* power of two */
    int64_t n, ecap;    /* edges found so far, and room */
    struct rag_stat *st; /* per edge, in first-seen order */
    struct rag_stat *run; /* pass 1: one row's runs of faces of one pair (row length) */
    uint64_t recent_key[RAG_RECENT];
    int64_t recent_edge[RAG_RECENT];
};

static inline uint64_t rag_hash(uint64_t k)
{
    k ^= k >> 31; /* a murmur3-style finalizer: every key bit reaches the low bits */
    k *= 0xBF58476D1CE4E5B9ull;
    k ^= k >> 29;
    k *= 0x94D049BB133111EBull;
    return k ^ (k >> 32);
}

static enum vox_status rag_grow_table(struct rag_acc *r)
{
    int64_t cap = r->cap ? 2 * r->cap : 1024;
    uint32_t *slot = vox_calloc(r->ctx, (size_t)cap, sizeof *slot);
    if (!slot)
        return VOX_OUT_OF_MEMORY;
    for (int64_t e = 0; e < r->n; e++) {
        uint64_t h = rag_hash(r->st[e].key) & (uint64_t)(cap - 1);
        while (slot[h])
            h = (h + 1) & (uint64_t)(cap - 1);
        slot[h] = (uint32_t)e + 1;
    }
    vox_free(r->ctx, r->slot);
    r->slot = slot;
    r->cap = cap;
    return VOX_OK;
}

static enum vox_status rag_grow_edges(struct rag_acc *r)
{
    int64_t cap = r->ecap ? 2 * r->ecap : 1024, old = r->ecap;
    void *st = vox_realloc(r->ctx, r->st, (size_t)old * sizeof *r->st,
                           (size_t)cap * sizeof *r->st);
    if (!st)
        return VOX_OUT_OF_MEMORY;
    r->st = st;
    r->ecap = cap;
    return VOX_OK;
}

/* The edge of `key`, created if new; -1 when out of memory. */
static int64_t rag_edge_slow(struct rag_acc *r, uint64_t key)
{
    if (2 * (r->n + 1) > r->cap && rag_grow_table(r) != VOX_OK)
        return -1;
    uint64_t h = rag_hash(key) & (uint64_t)(r->cap - 1);
    while (r->slot[h]) {
        if (r->st[r->slot[h] - 1].key == key)
            return r->slot[h] - 1;
        h = (h + 1) & (uint64_t)(r->cap - 1);
    }
    if (r->n == r->ecap && rag_grow_edges(r) != VOX_OK)
        return -1;
    int64_t e = r->n++;
    r->slot[h] = (uint32_t)e + 1;
    r->st[e] = (struct rag_stat){.key = key};
    return e;
}

/* rag_edge_slow behind the cache of recent pairs. */
static int64_t rag_edge(struct rag_acc *r, uint64_t key)
{
    uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> 54; /* 10 bits: RAG_RECENT */
    if (r->recent_key[i] == key)
        return r->recent_edge[i];
    int64_t e = rag_edge_slow(r, key);
    r->recent_key[i] = key;
    r->recent_edge[i] = e;
    return e;
}

/* Adds the faces of one row of channel c into their edges: first the row's runs of faces of
 * one pair, each summed in place, then their table slots prefetched together (the random
 * reads that dominate the scan overlap), then the edges found and added to. */
static enum vox_status rag_row(struct rag_acc *r, const uint32_t *la, const uint32_t *lb,
                               const uint8_t *qc, int64_t x0, int64_t nx)
{
    int64_t n = 0;
    for (int64_t x = seg_skip_equal(la, lb, x0, nx); x < nx;
         x = seg_skip_equal(la, lb, x + 1, nx)) {
        uint32_t a = la[x], b = lb[x];
        if (!a || !b)
            continue;
        uint64_t key = a < b ? (uint64_t)a << 32 | b : (uint64_t)b << 32 | a;
        uint8_t w = qc[x];
        if (n > 0 && r->run[n - 1].key == key) {
            struct rag_stat *t = &r->run[n - 1];
            t->max = w > t->max ? w : t->max;
            t->sum += w;
            t->count++;
        } else {
            r->run[n++] = (struct rag_stat){.key = key, .sum = w, .count = 1, .max = w};
        }
    }
    for (int64_t i = 0; i < n && r->cap > 0; i++)
        __builtin_prefetch(&r->slot[rag_hash(r->run[i].key) & (uint64_t)(r->cap - 1)]);
    for (int64_t i = 0; i < n; i++) {
        const struct rag_stat *u = &r->run[i];
        int64_t e = rag_edge(r, u->key);
        if (e < 0)
            return VOX_OUT_OF_MEMORY;
        struct rag_stat *t = &r->st[e];
        t->max = u->max > t->max ? u->max : t->max;
        t->sum += u->sum;
        t->count += u->count;
    }
    return VOX_OK;
}

/* Scans the faces of the voxels in rows [row0, row1) (row = z * Y + y; a face belongs to
 * its voxel v, the other side is v - e_c); pass 1 (vals == NULL) accumulates statistics,
 * pass 2 places each face's value at vals[pos[e]++]. */
static enum vox_status rag_scan(struct rag_acc *r, const uint32_t *lab, const uint8_t *q,
                                const struct seg_dims *d, uint8_t *vals, int64_t *pos,
                                int64_t row0, int64_t row1)
{
    const int64_t step[3] = {d->plane, d->x, 1};
    if (!vals && !r->run && !(r->run = vox_alloc(r->ctx, (size_t)d->x * sizeof *r->run)))
        return VOX_OUT_OF_MEMORY;
    for (int64_t row = row0; row < row1; row++) {
        int64_t z = row / d->y, y = row % d->y, v0 = row * d->x;
        for (int c = 0; c < 3; c++) {
            if ((c == 0 && z == 0) || (c == 1 && y == 0))
                continue;
            const uint32_t *la = lab + v0, *lb = la - step[c];
            const uint8_t *qc = q + c * d->n + v0;
            if (!vals) {
                enum vox_status s = rag_row(r, la, lb, qc, c == 2, d->x);
                if (s != VOX_OK)
                    return s;
                continue;
            }
            uint64_t last_key = 0;
            int64_t e = -1;
            for (int64_t x = seg_skip_equal(la, lb, c == 2, d->x); x < d->x;
                 x = seg_skip_equal(la, lb, x + 1, d->x)) {
                uint32_t a = la[x], b = lb[x];
                if (!a || !b)
                    continue;
                uint64_t key = a < b ? (uint64_t)a << 32 | b : (uint64_t)b << 32 | a;
                if (key != last_key) {
                    if ((e = rag_edge(r, key)) < 0)
                        return VOX_OUT_OF_MEMORY;
                    last_key = key;
                }
                vals[pos[e]++] = qc[x];
            }
        }
    }
    return VOX_OK;
}

/* Counts vals[0..n) into sorted (bin, count) pairs at bins/counts; returns how many. Small
 * edges (most of them in noisy volumes) are sorted in place instead of histogrammed. */
static int32_t rag_bins(uint8_t *vals, int64_t n, uint8_t *bins, uint64_t *counts)
{
    int32_t k = 0;
    if (n <= 64) {
        for (int64_t i = 1; i < n; i++) {
            uint8_t v = vals[i];
            int64_t j = i;
            for (; j > 0 && vals[j - 1] > v; j--)
                vals[j] = vals[j - 1];
            vals[j] = v;
        }
        for (int64_t i = 0; i < n; i++) {
            if (k > 0 && bins[k - 1] == vals[i]) {
                counts[k - 1]++;
            } else {
                bins[k] = vals[i];
                counts[k++] = 1;
            }
        }
        return k;
    }
    uint64_t h[256] = {0};
    for (int64_t i = 0; i < n; i++)
        h[vals[i]]++;
    for (int b = 0; b < 256; b++) {
        if (h[b]) {
            bins[k] = (uint8_t)b;
            counts[k++] = h[b];
        }
    }
    return k;
}

static void rag_acc_free(struct rag_acc *r)
{
    vox_free(r->ctx, r->slot);
    vox_free(r->ctx, r->st);
    vox_free(r->ctx, r->run);
}


/* Pass 2: every face value in its edge's slot (vals), by first-seen edge (off[0..n]). */
static enum vox_status rag_collect(struct rag_acc *r, const uint32_t *lab, const uint8_t *q,
                                   const struct seg_dims *d, uint8_t **vals_out,
                                   int64_t **off_out)
{
    int64_t *off = vox_alloc(r->ctx, (size_t)(r->n + 1) * sizeof *off);
    int64_t *pos = vox_alloc(r->ctx, (size_t)(r->n + 1) * sizeof *pos);
    uint8_t *vals = NULL;
    enum vox_status s = VOX_OUT_OF_MEMORY;
    if (!off || !pos)
        goto fail;
    off[0] = 0;
    for (int64_t e = 0; e < r->n; e++)
        off[e + 1] = off[e] + (int64_t)r->st[e].count;
    memcpy(pos, off, (size_t)(r->n + 1) * sizeof *pos);
    vals = vox_alloc(r->ctx, (size_t)off[r->n] + 1);
    if (!vals)
        goto fail;
    s = rag_scan(r, lab, q, d, vals, pos, 0, d->z * d->y);
    if (s != VOX_OK)
        goto fail;
    vox_free(r->ctx, pos);
    *vals_out = vals;
    *off_out = off;
    return VOX_OK;
fail:
    vox_free(r->ctx, off);
    vox_free(r->ctx, pos);
    vox_free(r->ctx, vals);
    return s;
}

static int rag_cmp_b(const void *x, const void *y)
{
    uint32_t a = ((const struct vox_rag_edge *)x)->b, b = ((const struct vox_rag_edge *)y)->b;
    return (a > b) - (a < b);
}

/* Adds edge y's statistics into x's. */
static void rag_edge_add(struct vox_rag_edge *x, const struct vox_rag_edge *y)
{
    x->max = y->max > x->max ? y->max : x->max;
    x->sum += y->sum;
    x->count += y->count;
}

/* Orders the edges of the parts r[0..parts) by (a, b) without a sort buffer: a counting sort
 * by a into the output (the per-edge arrays' pages returned as they are copied: the peak is
 * about one copy), each a's run then sorted by b (short runs by insertion, long ones by
 * qsort), and a pair found by several parts summed into one edge (exact: any order gives the
 * same sums). Returns the edges and their number *n (hist: the first-seen index in its part,
 * meaningful with one part), or NULL. */
static struct vox_rag_edge *rag_order(struct rag_acc *r, int parts, int64_t nseg, int64_t *n)
{
    struct vox_ctx *ctx = r->ctx;
    int64_t *at = vox_calloc(ctx, (size_t)nseg + 2, sizeof *at);
    struct vox_rag_edge *e = vox_alloc(ctx, (size_t)(*n + 1) * sizeof *e);
    if (!at || !e) {
        vox_free(ctx, at);
        vox_free(ctx, e);
        return NULL;
    }
    for (int t = 0; t < parts; t++)
        for (int64_t i = 0; i < r[t].n; i++)
            at[(r[t].st[i].key >> 32) + 1]++;
    for (int64_t v = 0; v <= nseg; v++)
        at[v + 1] += at[v];
    const int64_t step = 1 << 16;
    for (int t = 0; t < parts; t++) {
        const struct rag_acc *p = &r[t];
        for (int64_t i = 0; i < p->n; i++) {
            const struct rag_stat *x = &p->st[i];
            uint64_t k = x->key;
            e[at[k >> 32]++] = (struct vox_rag_edge){.a = (uint32_t)(k >> 32),
                                                     .b = (uint32_t)k,
                                                     .max = x->max,
                                                     .sum = x->sum,
                                                     .count = x->count,
                                                     .hist = i};
            if ((i + 1) % step == 0) { /* the statistics copied so far are dead */
                int64_t i0 = i + 1 - step;
                seg_release_pages(p->st + i0, (size_t)step * sizeof *p->st);
            }
        }
    }
    int64_t m = 0;
    for (int64_t i = 0, j; i < *n; i = j) {
        for (j = i + 1; j < *n && e[j].a == e[i].a; j++)
            ;
        if (j - i > 32) {
            qsort(e + i, (size_t)(j - i), sizeof *e, rag_cmp_b);
        } else {
            for (int64_t k = i + 1; k < j; k++) {
                struct vox_rag_edge x = e[k];
                int64_t l = k;
                for (; l > i && e[l - 1].b > x.b; l--)
                    e[l] = e[l - 1];
                e[l] = x;
            }
        }
        for (int64_t k = i; k < j; k++) {
            if (m > 0 && e[m - 1].a == e[k].a && e[m - 1].b == e[k].b)
                rag_edge_add(&e[m - 1], &e[k]);
            else
                e[m++] = e[k];
        }
    }
    vox_free(ctx, at);
    *n = m;
    return e;
}

/* Writes the edges of the parts in (a, b) order, with their histograms when vals is given
 * (one part). */
static enum vox_status rag_emit(struct rag_acc *r, int parts, uint8_t *vals, const int64_t *off,
                                int64_t nseg, struct vox_rag *g)
{
    struct vox_ctx *ctx = r->ctx;
    memset(g, 0, sizeof *g);
    int64_t nh = 0, n = 0;
    for (int t = 0; t < parts; t++)
        n += r[t].n;
    for (int64_t e = 0; vals && e < r->n; e++)
        nh += r->st[e].count < 256 ? (int64_t)r->st[e].count : 256;
    g->e = rag_order(r, parts, nseg, &n);
    g->hist_bin = vox_alloc(ctx, (size_t)nh + 1);
    g->hist_count = vox_alloc(ctx, (size_t)(nh + 1) * sizeof *g->hist_count);
    if (!g->e || !g->hist_bin || !g->hist_count) {
        vox_rag_fini(ctx, g);
        return VOX_OUT_OF_MEMORY;
    }
    g->nseg = nseg;
    g->n = n;
    for (int64_t i = 0; i < n; i++) {
        struct vox_rag_edge *o = &g->e[i];
        int64_t e = o->hist;
        o->hist = g->nhist;
        if (vals) {
            o->nbins = rag_bins(vals + off[e], off[e + 1] - off[e], g->hist_bin + g->nhist,
                                g->hist_count + g->nhist);
            g->nhist += o->nbins;
        }
    }
    return VOX_OK;
}

/* Pass 1 in parallel: part t scans the t-th run of rows into a table of its own; rag_order
 * sums the pairs that several parts found (exact integer statistics: the result is the same
 * for any number of parts). */
#define RAG_PARTS_MAX 64

struct rag_scan_job {
    struct rag_acc *r;
    int64_t rows;
    int parts;
    const uint32_t *lab;
    const uint8_t *q;
    const struct seg_dims *d;
    enum vox_status s[RAG_PARTS_MAX];
};

static void rag_scan_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    struct rag_scan_job *j = arg;
    for (int64_t t = lo[0]; t < hi[0]; t++)
        j->s[t] = rag_scan(&j->r[t], j->lab, j->q, j->d, NULL, NULL, j->rows * t / j->parts,
                           j->rows * (t + 1) / j->parts);
}

static enum vox_status rag_scan_parts(struct vox_ctx *ctx, struct rag_acc *r, int parts,
                                      const uint32_t *lab, const uint8_t *q,
                                      const struct seg_dims *d)
{
    struct rag_scan_job j = {.r = r, .rows = d->z * d->y, .parts = parts, .lab = lab, .q = q,
                             .d = d};
    for (int t = 0; t < parts; t++)
        r[t].ctx = ctx;
    vox_pool_for(parts > 1 ? vox_ctx_pool(ctx) : NULL, (int64_t[3]){parts, 1, 1},
                 (int64_t[3]){1, 1, 1}, VOX_SCHED_STATIC, rag_scan_task, &j);
    for (int t = 0; t < parts; t++)
        if (j.s[t] != VOX_OK)
            return vox_fail(ctx, j.s[t], "region graph: out of memory");
    return VOX_OK;
}

enum vox_status vox_rag_build(struct vox_ctx *ctx, const struct vox_tensor *labels, int64_t nseg,
                              const struct vox_tensor *q, bool histograms,
                              struct vox_rag *rag_out)
{
    struct seg_dims d, dq;
    enum vox_status s = seg_dims_from_labels(ctx, labels, &d);
    if (s == VOX_OK)
        s = seg_dims_from_q(ctx, q, &dq);
    if (s != VOX_OK)
        return s;
    if (d.z != dq.z || d.y != dq.y || d.x != dq.x)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "labels (%lld, %lld, %lld) and affinities (3, %lld, %lld, %lld) differ",
                        (long long)d.z, (long long)d.y, (long long)d.x, (long long)dq.z,
                        (long long)dq.y, (long long)dq.x);
    if (nseg < 0 || nseg > UINT32_MAX)
        return vox_fail(ctx, VOX_INVALID_ARG, "nseg = %lld, expected 0..2^32-1",
                        (long long)nseg);
    /* pass 2 finds edges by the one table of all pairs: histograms take one part */
    int parts = histograms ? 1 : vox_ctx_threads(ctx);
    parts = parts < RAG_PARTS_MAX ? parts : RAG_PARTS_MAX;
    struct rag_acc *r = vox_calloc(ctx, (size_t)parts, sizeof *r);
    uint8_t *vals = NULL;
    int64_t *off = NULL;
    if (!r)
        return VOX_OUT_OF_MEMORY;
    s = rag_scan_parts(ctx, r, parts, labels->data, q->data, &d);
    if (s == VOX_OK && histograms)
        s = rag_collect(r, labels->data, q->data, &d, &vals, &off);
    for (int t = 0; t < parts; t++) { /* the tables are dead once the faces are scanned */
        vox_free(ctx, r[t].slot);
        r[t].slot = NULL;
    }
    if (s == VOX_OK)
        s = rag_emit(r, parts, vals, off, nseg, rag_out);
    vox_free(ctx, vals);
    vox_free(ctx, off);
    for (int t = 0; t < parts; t++)
        rag_acc_free(&r[t]);
    vox_free(ctx, r);
    return s;
}

/* Adds edge src's histogram into h[256]. */
static void rag_hist_add(const struct vox_rag *g, const struct vox_rag_edge *src, uint64_t *h)
{
    for (int32_t k = 0; k < src->nbins; k++)
        h[g->hist_bin[src->hist + k]] += g->hist_count[src->hist + k];
}

/* Appends one contracted edge: the group kv[i..j) of g's edges with the same new key. */
static void rag_contract_group(const struct vox_rag *g, const struct seg_kv *kv, int64_t i,
                               int64_t j, struct vox_rag *o)
{
    struct vox_rag_edge *e = &o->e[o->n++];
    *e = (struct vox_rag_edge){.a = (uint32_t)(kv[i].key >> 32), .b = (uint32_t)kv[i].key,
                               .hist = o->nhist};
    uint64_t h[256];
    bool hist = g->nhist > 0;
    if (hist)
        memset(h, 0, sizeof h);
    for (int64_t k = i; k < j; k++) {
        const struct vox_rag_edge *s = &g->e[kv[k].val];
        e->max = s->max > e->max ? s->max : e->max;
        e->sum += s->sum;
        e->count += s->count;
        if (hist)
            rag_hist_add(g, s, h);
    }
    for (int b = 0; hist && b < 256; b++) {
        if (h[b]) {
            o->hist_bin[o->nhist] = (uint8_t)b;
            o->hist_count[o->nhist++] = h[b];
            e->nbins++;
        }
    }
}

enum vox_status vox_rag_contract(struct vox_ctx *ctx, const struct vox_rag *rag,
                                 const uint32_t *map, int64_t nseg, struct vox_rag *out)
{
    struct vox_rag o = {.nseg = nseg};
    struct seg_kv *kv = vox_alloc(ctx, (size_t)(2 * rag->n + 1) * sizeof *kv);
    o.e = vox_alloc(ctx, (size_t)(rag->n + 1) * sizeof *o.e);
    o.hist_bin = vox_alloc(ctx, (size_t)rag->nhist + 1);
    o.hist_count = vox_alloc(ctx, (size_t)(rag->nhist + 1) * sizeof *o.hist_count);
    if (!kv || !o.e || !o.hist_bin || !o.hist_count) {
        vox_free(ctx, kv);
        vox_rag_fini(ctx, &o);
        return VOX_OUT_OF_MEMORY;
    }
    int64_t m = 0;
    for (int64_t i = 0; i < rag->n; i++) {
        uint32_t a = map[rag->e[i].a], b = map[rag->e[i].b];
        if (a == b || !a || !b)
            continue;
        uint64_t key = a < b ? (uint64_t)a << 32 | b : (uint64_t)b << 32 | a;
        kv[m++] = (struct seg_kv){.key = key, .val = (uint64_t)i};
    }
    seg_radix_sort(kv, kv + m, m); /* stable: a group keeps the graph's edge order */
    for (int64_t i = 0, j; i < m; i = j) {
        for (j = i + 1; j < m && kv[j].key == kv[i].key; j++)
            ;
        rag_contract_group(rag, kv, i, j, &o);
    }
    vox_free(ctx, kv);
    *out = o;
    return VOX_OK;
}

void vox_rag_fini(struct vox_ctx *ctx, struct vox_rag *rag)
{
    if (!rag)
        return;
    vox_free(ctx, rag->e);
    vox_free(ctx, rag->hist_bin);
    vox_free(ctx, rag->hist_count);
    memset(rag, 0, sizeof *rag);
}
