/*
 * seg/basin_graph.c: the watershed basin graph that the size-dependent single linkage needs,
 * with nothing but each pair's largest face affinity, packed into 8 bytes per edge.
 *
 * Single linkage (Zlateski & Seung, arXiv 1505.00249) reads only the max statistic, so the
 * pipeline does not build the full region graph of the (many) basins: an edge is one uint64,
 * a << 36 | b << 8 | max (a < b basin ids below 2^28).
 *
 * Scan: the z-slabs of the volume are split among the threads; each scans its faces row by
 * row into its own L2-sized open-addressing table and, when the table is half full, appends
 * its entries to a list of fixed 1 MiB blocks and clears it, so a pair may appear a few times.
 * The result is a set (the largest max of each pair), so it does not depend on the split.
 * Gather: the blocks are copied into one array, each freed (its pages returned to the system
 * first: the heap would keep them) as soon as it is copied; the array's pages become resident
 * only as they are written, so the peak stays near one copy.
 * Order: an in-place MSD radix sort (American flag sort) by (a, b, max), a pass keeping the
 * last (largest) entry of each pair, then a second in-place sort by (255 - max, a, b): the
 * order of vox_seg_single_linkage (descending max, ties ascending (a, b)). The keys are
 * unique, so the unstable sorts are deterministic, and their top-level buckets are sorted in
 * parallel. Peak: 8 bytes per entry and one block per thread, no sort scratch.
 */
#include "seg_internal.h"

#include <string.h>

#define BG_TABLE_BITS 16     /* 512 KiB of uint64 slots per thread: fits L2 */
#define BG_BLOCK (1 << 17)   /* entries per block: 1 MiB */
#define BG_SCRATCH (1 << 16) /* sort scratch entries per thread: 512 KiB */

struct bg_thread {
    uint64_t *tab; /* pair << 8 | max; 0 = empty */
    int64_t used;
    uint64_t **blocks; /* full blocks, then the current one (nlast entries) */
    int64_t nblocks, cap, nlast;
    enum vox_status s;
};

struct bg_job {
    struct vox_ctx *ctx;
    const uint32_t *lab;
    const uint8_t *q;
    struct seg_dims d;
    struct bg_thread *t;
};

static inline uint64_t bg_hash(uint64_t k)
{
    k ^= k >> 31;
    k *= 0xBF58476D1CE4E5B9ull;
    k ^= k >> 29;
    return k;
}

/* Appends one entry to the thread's block list. */
static enum vox_status bg_push(struct vox_ctx *ctx, struct bg_thread *t, uint64_t e)
{
    if (t->nblocks == 0 || t->nlast == BG_BLOCK) {
        if (t->nblocks == t->cap) {
            int64_t cap = 2 * t->cap + 8;
            void *b = vox_realloc(ctx, t->blocks, (size_t)t->cap * sizeof *t->blocks,
                                  (size_t)cap * sizeof *t->blocks);
            if (!b)
                return VOX_OUT_OF_MEMORY;
            t->blocks = b;
            t->cap = cap;
        }
        if (!(t->blocks[t->nblocks] = vox_alloc(ctx, (size_t)BG_BLOCK * 8)))
            return VOX_OUT_OF_MEMORY;
        t->nblocks++;
        t->nlast = 0;
    }
    t->blocks[t->nblocks - 1][t->nlast++] = e;
    return VOX_OK;
}

/* Moves the table's entries to the blocks and clears the table. */
static enum vox_status bg_flush(struct vox_ctx *ctx, struct bg_thread *t)
{
    const int64_t size = (int64_t)1 << BG_TABLE_BITS;
    for (int64_t i = 0; i < size; i++)
        if (t->tab[i] && bg_push(ctx, t, t->tab[i]) != VOX_OK)
            return VOX_OUT_OF_MEMORY;
    memset(t->tab, 0, (size_t)size * 8);
    t->used = 0;
    return VOX_OK;
}

/* The slot of `pair` (a << 28 | b), created with max 0 if new. */
static inline uint64_t *bg_slot(struct bg_thread *t, uint64_t pair)
{
    const uint64_t mask = ((uint64_t)1 << BG_TABLE_BITS) - 1;
    uint64_t h = bg_hash(pair) & mask;
    while (t->tab[h]) {
        if (t->tab[h] >> 8 == pair)
            return &t->tab[h];
        h = (h + 1) & mask;
    }
    t->tab[h] = pair << 8;
    t->used++;
    return &t->tab[h];
}

/* One row of faces along a channel: labels la / lb = la shifted by the channel's step. */
static enum vox_status bg_row(struct vox_ctx *ctx, struct bg_thread *t, const uint32_t *la,
                              const uint32_t *lb, const uint8_t *qc, int64_t x0, int64_t nx)
{
    uint64_t last = 0, *slot = NULL;
    for (int64_t x = seg_skip_equal(la, lb, x0, nx); x < nx;
         x = seg_skip_equal(la, lb, x + 1, nx)) {
        uint32_t a = la[x], b = lb[x];
        if (!a || !b)
            continue;
        uint64_t pair = a < b ? (uint64_t)a << 28 | b : (uint64_t)b << 28 | a;
        if (pair != last || !slot) {
            if (2 * t->used >= (int64_t)1 << BG_TABLE_BITS && bg_flush(ctx, t) != VOX_OK)
                return VOX_OUT_OF_MEMORY;
            slot = bg_slot(t, pair);
            last = pair;
        }
        if ((*slot & 0xFF) < qc[x])
            *slot = pair << 8 | qc[x];
    }
    return VOX_OK;
}

/* Scans the faces of slices [lo[0], hi[0]) (each slice with its faces towards z - 1). */
static void bg_scan_slab(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct bg_job *j = arg;
    const struct seg_dims *d = &j->d;
    struct bg_thread *t = &j->t[tid];
    const int64_t step[3] = {d->plane, d->x, 1};
    for (int64_t row = lo[0] * d->y; row < hi[0] * d->y && t->s == VOX_OK; row++) {
        int64_t z = row / d->y, y = row % d->y, v0 = row * d->x;
        for (int c = 0; c < 3 && t->s == VOX_OK; c++) {
            if ((c == 0 && z == 0) || (c == 1 && y == 0))
                continue;
            const uint32_t *la = j->lab + v0;
            t->s = bg_row(j->ctx, t, la, la - step[c], j->q + c * d->n + v0, c == 2, d->x);
        }
    }
}

/* LSD radix sort of k[0..n) by its bits below `bits`, tmp[0..n) scratch. The digits cover
 * only the bits that vary: each starts at the lowest varying bit not yet sorted, and is 11
 * bits wide (8 for small n, where the counts would dominate). */
static void bg_lsd(uint64_t *k, uint64_t *tmp, int64_t n, int bits)
{
    uint64_t all_or = 0, all_and = ~0ull;
    for (int64_t i = 0; i < n; i++) {
        all_or |= k[i];
        all_and &= k[i];
    }
    uint64_t vary = (all_or ^ all_and) & (bits >= 64 ? ~0ull : ((uint64_t)1 << bits) - 1);
    const int width = n >= 2048 ? 11 : 8;
    const uint64_t mask = ((uint64_t)1 << width) - 1;
    uint64_t *src = k, *dst = tmp;
    int64_t count[1 << 11];
    while (vary) {
        int shift = __builtin_ctzll(vary);
        vary = shift + width >= 64 ? 0 : vary >> (shift + width) << (shift + width);
        memset(count, 0, (size_t)(mask + 1) * sizeof *count);
        for (int64_t i = 0; i < n; i++)
            count[(src[i] >> shift) & mask]++;
        for (int64_t r = 0, sum = 0; r <= (int64_t)mask; r++) {
            int64_t c = count[r];
            count[r] = sum;
            sum += c;
        }
        for (int64_t i = 0; i < n; i++)
            dst[count[(src[i] >> shift) & mask]++] = src[i];
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != k)
        memcpy(k, src, (size_t)n * sizeof *k);
}

/* Permutes k[0..n) in place into the 256 buckets of the digit at bits [shift, shift + 8)
 * (American flag sort); end[b] = the end of bucket b. */
static void bg_partition(uint64_t *k, int64_t n, int shift, int64_t end[256])
{
    int64_t next[256];
    memset(end, 0, 256 * sizeof *end);
    for (int64_t i = 0; i < n; i++)
        end[(k[i] >> shift) & 0xFF]++;
    for (int64_t b = 0, sum = 0; b < 256; b++) {
        next[b] = sum;
        sum += end[b];
        end[b] = sum;
    }
    for (int b = 0; b < 256; b++) {
        while (next[b] < end[b]) {
            uint64_t v = k[next[b]];
            int dv = (int)((v >> shift) & 0xFF);
            while (dv != b) { /* follow the cycle until an element belongs here */
                uint64_t w = k[next[dv]];
                k[next[dv]++] = v;
                v = w;
                dv = (int)((v >> shift) & 0xFF);
            }
            k[next[b]++] = v;
        }
    }
}

/* Sorts k[0..n), whose keys are equal at and above bit `bits`: buckets that fit the scratch
 * (tmp, BG_SCRATCH entries) by LSD, larger ones by an in-place partition on the top digit. */
static void bg_msd(uint64_t *k, int64_t n, int bits, uint64_t *tmp)
{
    if (n <= BG_SCRATCH) {
        bg_lsd(k, tmp, n, bits);
        return;
    }
    if (bits <= 0)
        return;
    int shift = bits > 8 ? bits - 8 : 0;
    int64_t end[256];
    bg_partition(k, n, shift, end);
    for (int b = 0; b < 256; b++) {
        int64_t s0 = b ? end[b - 1] : 0;
        if (end[b] - s0 > 1)
            bg_msd(k + s0, end[b] - s0, shift, tmp);
    }
}

struct bg_sort_job {
    uint64_t *k;
    const int64_t *end;
    int shift;
    uint64_t *tmp; /* BG_SCRATCH entries per thread */
};

static void bg_sort_buckets(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct bg_sort_job *j = arg;
    for (int64_t b = lo[0]; b < hi[0]; b++) {
        int64_t s0 = b ? j->end[b - 1] : 0;
        if (j->end[b] - s0 > 1)
            bg_msd(j->k + s0, j->end[b] - s0, j->shift, j->tmp + (int64_t)tid * BG_SCRATCH);
    }
}

/* Sorts k[0..n) in place: one partition on the 8 highest varying bits, then its buckets in
 * parallel; tmp holds BG_SCRATCH entries per thread. */
static void bg_sort(struct vox_ctx *ctx, uint64_t *k, int64_t n, uint64_t *tmp)
{
    uint64_t all_or = 0, all_and = ~0ull;
    for (int64_t i = 0; i < n; i++) {
        all_or |= k[i];
        all_and &= k[i];
    }
    uint64_t vary = all_or ^ all_and;
    if (n <= BG_SCRATCH || !vary) {
        bg_lsd(k, tmp, n, 64);
        return;
    }
    int top = 64 - __builtin_clzll(vary), shift = top > 8 ? top - 8 : 0;
    int64_t end[256];
    bg_partition(k, n, shift, end);
    struct bg_sort_job j = {.k = k, .end = end, .shift = shift, .tmp = tmp};
    vox_pool_for(vox_ctx_pool(ctx), (int64_t[3]){256, 1, 1}, (int64_t[3]){1, 1, 1},
                 VOX_SCHED_DYNAMIC, bg_sort_buckets, &j);
}

/* Unsorted entries → one per pair (the largest max) in descending max, ties ascending
 * (a, b), in place; returns how many. */
static int64_t bg_order(struct vox_ctx *ctx, uint64_t *k, int64_t n, uint64_t *tmp)
{
    bg_sort(ctx, k, n, tmp);
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (i + 1 < n && k[i + 1] >> 8 == k[i] >> 8)
            continue;
        k[m++] = (uint64_t)(255 - (k[i] & 0xFF)) << 56 | k[i] >> 8; /* (255 - max, a, b) */
    }
    seg_release_pages(k + m, (size_t)(n - m) * sizeof *k); /* the duplicates' room */
    bg_sort(ctx, k, m, tmp);
    for (int64_t i = 0; i < m; i++)
        k[i] = (k[i] & (((uint64_t)1 << 56) - 1)) << 8 | (255 - (k[i] >> 56));
    return m;
}

/* Copies every thread's blocks into one new array, freeing each block once copied. */
static enum vox_status bg_gather(struct vox_ctx *ctx, struct bg_thread *t, int nt, uint64_t **out,
                                 int64_t *n_out)
{
    int64_t n = 0;
    for (int i = 0; i < nt; i++)
        n += t[i].nblocks ? (t[i].nblocks - 1) * (int64_t)BG_BLOCK + t[i].nlast : 0;
    uint64_t *all = vox_alloc(ctx, (size_t)(n + 1) * 8);
    if (!all)
        return VOX_OUT_OF_MEMORY;
    int64_t at = 0;
    for (int i = 0; i < nt; i++) { /* last block first: freed memory gathers at the top */
        for (int64_t b = t[i].nblocks - 1; b >= 0; b--) {
            int64_t len = b + 1 < t[i].nblocks ? BG_BLOCK : t[i].nlast;
            memcpy(all + at, t[i].blocks[b], (size_t)len * 8);
            at += len;
            seg_release_pages(t[i].blocks[b], (size_t)BG_BLOCK * 8);
            vox_free(ctx, t[i].blocks[b]);
        }
        t[i].nblocks = 0;
    }
    *out = all;
    *n_out = n;
    return VOX_OK;
}

static enum vox_status bg_scan(struct bg_job *j, int nt)
{
    for (int i = 0; i < nt; i++)
        if (!(j->t[i].tab = vox_calloc(j->ctx, (size_t)1 << BG_TABLE_BITS, 8)))
            return VOX_OUT_OF_MEMORY;
    vox_pool_for(vox_ctx_pool(j->ctx), (int64_t[3]){j->d.z, 1, 1}, (int64_t[3]){1, 1, 1},
                 VOX_SCHED_STATIC, bg_scan_slab, j);
    for (int i = 0; i < nt; i++) {
        if (j->t[i].s == VOX_OK)
            j->t[i].s = bg_flush(j->ctx, &j->t[i]);
        if (j->t[i].s != VOX_OK)
            return j->t[i].s;
        vox_free(j->ctx, j->t[i].tab);
        j->t[i].tab = NULL;
    }
    return VOX_OK;
}

enum vox_status seg_basin_edges(struct vox_ctx *ctx, const struct vox_tensor *labels,
                                const struct vox_tensor *q, uint64_t **edges_out, int64_t *n_out)
{
    struct bg_job j = {.ctx = ctx, .lab = labels->data, .q = q->data};
    enum vox_status s = seg_dims_from_labels(ctx, labels, &j.d);
    if (s != VOX_OK)
        return s;
    int nt = vox_ctx_threads(ctx);
    j.t = vox_calloc(ctx, (size_t)nt, sizeof *j.t);
    if (!j.t)
        return VOX_OUT_OF_MEMORY;
    uint64_t *all = NULL;
    int64_t n = 0;
    s = bg_scan(&j, nt);
    if (s == VOX_OK)
        s = bg_gather(ctx, j.t, nt, &all, &n);
    for (int i = 0; i < nt; i++) {
        for (int64_t b = 0; b < j.t[i].nblocks; b++)
            vox_free(ctx, j.t[i].blocks[b]);
        vox_free(ctx, j.t[i].blocks);
        vox_free(ctx, j.t[i].tab);
    }
    vox_free(ctx, j.t);
    uint64_t *tmp = s == VOX_OK ? vox_alloc(ctx, (size_t)nt * BG_SCRATCH * 8) : NULL;
    if (!tmp) {
        vox_free(ctx, all);
        return VOX_OUT_OF_MEMORY;
    }
    *n_out = bg_order(ctx, all, n, tmp);
    vox_free(ctx, tmp);
    *edges_out = all;
    return VOX_OK;
}
