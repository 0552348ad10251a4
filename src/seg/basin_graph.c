/*
 * seg/basin_graph.c: the watershed basin graph that the size-dependent single linkage needs,
 * with nothing but each pair's largest face affinity, packed into 8 bytes per edge.
 *
 * Single linkage (Zlateski & Seung, arXiv 1505.00249) reads only the max statistic, so the
 * pipeline does not build the full region graph of the (many) basins: an edge is one uint64,
 * a << 36 | b << 8 | max (a < b basin ids below 2^28). The faces are scanned row by row into
 * a fixed, cache-sized open-addressing table; when it is half full its entries are appended
 * to a flat array and the table is cleared, so a pair may appear a few times. One LSD radix
 * sort of the array, a pass keeping the largest max of each pair, and a stable counting sort
 * by max give the edges in descending max, ties in ascending (a, b): the order of
 * vox_seg_single_linkage. Peak: about 16 bytes per edge (the array and the sort's scratch),
 * against about 120 for the full graph.
 */
#include "seg_internal.h"
#include <string.h>

#define BG_TABLE_BITS 18 /* 2 MiB of uint64 slots */

struct bg_acc {
    struct vox_ctx *ctx;
    uint64_t *tab; /* pair << 8 | max; 0 = empty */
    int64_t used;
    uint64_t *out; /* flushed entries */
    int64_t n, cap;
};

static inline uint64_t bg_hash(uint64_t k)
{
    k ^= k >> 31;
    k *= 0xBF58476D1CE4E5B9ull;
    k ^= k >> 29;
    return k;
}

/* Moves the table's entries to the array and clears the table. */
static enum vox_status bg_flush(struct bg_acc *r)
{
    const int64_t size = (int64_t)1 << BG_TABLE_BITS;
    if (r->n + r->used > r->cap) {
        int64_t cap = r->cap + r->cap / 2 + r->used + 1024;
        void *o = vox_realloc(r->ctx, r->out, (size_t)r->cap * 8, (size_t)cap * 8);
        if (!o)
            return VOX_OUT_OF_MEMORY;
        r->out = o;
        r->cap = cap;
    }
    for (int64_t i = 0; i < size; i++)
        if (r->tab[i])
            r->out[r->n++] = r->tab[i];
    memset(r->tab, 0, (size_t)size * 8);
    r->used = 0;
    return VOX_OK;
}

/* The slot of `pair` (a << 28 | b), created with max 0 if new. */
static inline int64_t bg_slot(struct bg_acc *r, uint64_t pair)
{
    const uint64_t mask = ((uint64_t)1 << BG_TABLE_BITS) - 1;
    uint64_t h = bg_hash(pair) & mask;
    while (r->tab[h]) {
        if (r->tab[h] >> 8 == pair)
            return (int64_t)h;
        h = (h + 1) & mask;
    }
    r->tab[h] = pair << 8;
    r->used++;
    return (int64_t)h;
}

/* One row of faces along channel c: labels la / lb = la shifted by the channel's step. */
static enum vox_status bg_row(struct bg_acc *r, const uint32_t *la, const uint32_t *lb,
                              const uint8_t *qc, int64_t x0, int64_t nx)
{
    uint64_t last = 0;
    int64_t slot = -1;
    for (int64_t x = x0; x < nx; x++) {
        uint32_t a = la[x], b = lb[x];
        if (a == b || !a || !b)
            continue;
        uint64_t pair = a < b ? (uint64_t)a << 28 | b : (uint64_t)b << 28 | a;
        if (pair != last || slot < 0) {
            if (2 * r->used >= (int64_t)1 << BG_TABLE_BITS && bg_flush(r) != VOX_OK)
                return VOX_OUT_OF_MEMORY;
            slot = bg_slot(r, pair);
            last = pair;
        }
        if ((r->tab[slot] & 0xFF) < qc[x])
            r->tab[slot] = pair << 8 | qc[x];
    }
    return VOX_OK;
}

static enum vox_status bg_scan(struct bg_acc *r, const uint32_t *lab, const uint8_t *q,
                               const struct seg_dims *d)
{
    const int64_t step[3] = {d->plane, d->x, 1};
    for (int64_t row = 0; row < d->z * d->y; row++) {
        int64_t z = row / d->y, y = row % d->y, v0 = row * d->x;
        for (int c = 0; c < 3; c++) {
            if ((c == 0 && z == 0) || (c == 1 && y == 0))
                continue;
            const uint32_t *la = lab + v0;
            if (bg_row(r, la, la - step[c], q + c * d->n + v0, c == 2, d->x) != VOX_OK)
                return VOX_OUT_OF_MEMORY;
        }
    }
    return bg_flush(r);
}

/* LSD radix sort of k[0..n) (all 64 bits), tmp[0..n) scratch; constant digits skipped. */
static void bg_sort(uint64_t *k, uint64_t *tmp, int64_t n)
{
    uint64_t all_or = 0, all_and = ~0ull;
    for (int64_t i = 0; i < n; i++) {
        all_or |= k[i];
        all_and &= k[i];
    }
    uint64_t *src = k, *dst = tmp;
    int64_t count[256];
    for (int shift = 0; shift < 64; shift += 8) {
        if ((((all_or ^ all_and) >> shift) & 0xFF) == 0)
            continue;
        memset(count, 0, sizeof count);
        for (int64_t i = 0; i < n; i++)
            count[(src[i] >> shift) & 0xFF]++;
        for (int64_t rr = 0, sum = 0; rr < 256; rr++) {
            int64_t c = count[rr];
            count[rr] = sum;
            sum += c;
        }
        for (int64_t i = 0; i < n; i++)
            dst[count[(src[i] >> shift) & 0xFF]++] = src[i];
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != k)
        memcpy(k, src, (size_t)n * sizeof *k);
}

/* Sorted entries → one per pair (the last: the largest max) → descending max into `by_max`. */
static int64_t bg_order(uint64_t *k, int64_t n, uint64_t *by_max)
{
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (i + 1 < n && k[i + 1] >> 8 == k[i] >> 8)
            continue;
        k[m++] = k[i];
    }
    int64_t start[257] = {0};
    for (int64_t i = 0; i < m; i++)
        start[255 - (k[i] & 0xFF) + 1]++;
    for (int w = 0; w < 256; w++)
        start[w + 1] += start[w];
    for (int64_t i = 0; i < m; i++)
        by_max[start[255 - (k[i] & 0xFF)]++] = k[i];
    return m;
}

enum vox_status seg_basin_edges(struct vox_ctx *ctx, const struct vox_tensor *labels,
                                const struct vox_tensor *q, uint64_t **edges_out,
                                int64_t *n_out)
{
    struct seg_dims d;
    enum vox_status s = seg_dims_from_labels(ctx, labels, &d);
    if (s != VOX_OK)
        return s;
    struct bg_acc r = {.ctx = ctx};
    uint64_t *tmp = NULL;
    r.tab = vox_calloc(ctx, (size_t)1 << BG_TABLE_BITS, 8);
    s = r.tab ? bg_scan(&r, labels->data, q->data, &d) : VOX_OUT_OF_MEMORY;
    vox_free(ctx, r.tab);
    if (s == VOX_OK)
        tmp = vox_alloc(ctx, (size_t)(r.n + 1) * 8);
    if (s != VOX_OK || !tmp) {
        vox_free(ctx, r.out);
        return VOX_OUT_OF_MEMORY;
    }
    bg_sort(r.out, tmp, r.n);
    *n_out = bg_order(r.out, r.n, tmp);
    vox_free(ctx, r.out);
    *edges_out = tmp;
    return VOX_OK;
}
