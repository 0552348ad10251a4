/*
 * dist/sort.c: the sort of the chunk summaries (pairs, faces, basins, edges by id): a stable
 * LSD radix sort on 64-bit keys (one or two per element), byte by byte, skipping the bytes in
 * which all keys agree; the elements are then moved once, by the sorted permutation.
 *
 * Summary arrays are long (a chunk's face voxels and links) and their keys are voxel indices
 * and basin ids, so a few byte passes replace O(n log n) comparator calls. With one key the
 * elements move themselves (scratch: n elements, as a merge sort needs), with two a
 * (key, position) array is sorted and the elements moved once. When the scratch
 * memory cannot be had it falls back to qsort with the equivalent comparator (the callers'
 * orders are total on what they use, so both give the same result). dist_sort_sc takes that
 * memory from a worker's scratch, which a chunk task reuses from sort to sort. Callers whose
 * elements pack into one 64-bit key (the size merge's basins and edges) sort the keys
 * themselves with dist_sort_u64: no key calls, nothing moved beside the keys. In the upper
 * octree nodes those sorts are long and the other workers idle: dist_sort_u64_par splits
 * each byte pass into parts (count, then scatter, each part after the parts before it for
 * each byte value: the serial pass's places exactly).
 */
#include "dist_internal.h"

#include <stdlib.h>
#include <string.h>

struct sort_kv {
    uint64_t k;
    int64_t i;
};

/* One stable counting pass on byte `sh / 8` of the keys: a -> b. */
static void sort_pass(const struct sort_kv *a, struct sort_kv *b, int64_t n, int sh)
{
    int64_t cnt[257] = {0};
    for (int64_t j = 0; j < n; j++)
        cnt[(a[j].k >> sh & 255) + 1]++;
    for (int d = 0; d < 256; d++)
        cnt[d + 1] += cnt[d];
    for (int64_t j = 0; j < n; j++)
        b[cnt[a[j].k >> sh & 255]++] = a[j];
}

/* Sorts a by k, stably (b: scratch of n); returns the array that holds the result. */
static struct sort_kv *sort_radix(struct sort_kv *a, struct sort_kv *b, int64_t n)
{
    uint64_t diff = 0;
    for (int64_t j = 1; j < n; j++)
        diff |= a[j].k ^ a[0].k;
    for (int sh = 0; sh < 64; sh += 8) {
        if (!(diff >> sh & 255))
            continue;
        sort_pass(a, b, n, sh);
        struct sort_kv *t = a;
        a = b;
        b = t;
    }
    return a;
}

/* dst[j] = src[p[j].i], elements of `size` bytes (the common sizes copied inline). */
static void sort_gather(uint8_t *dst, const uint8_t *src, const struct sort_kv *p, int64_t n,
                        size_t size)
{
    switch (size) {
    case 8:
        for (int64_t j = 0; j < n; j++)
            memcpy(dst + (size_t)j * 8, src + (size_t)p[j].i * 8, 8);
        break;
    case 12:
        for (int64_t j = 0; j < n; j++)
            memcpy(dst + (size_t)j * 12, src + (size_t)p[j].i * 12, 12);
        break;
    case 16:
        for (int64_t j = 0; j < n; j++)
            memcpy(dst + (size_t)j * 16, src + (size_t)p[j].i * 16, 16);
        break;
    case 24:
        for (int64_t j = 0; j < n; j++)
            memcpy(dst + (size_t)j * 24, src + (size_t)p[j].i * 24, 24);
        break;
    default:
        for (int64_t j = 0; j < n; j++)
            memcpy(dst + (size_t)j * size, src + (size_t)p[j].i * size, size);
    }
}

/* One key: the elements themselves move, pass by pass, with one scratch array of n
 * elements (the memory of a merge sort), keys computed as they are needed. */
/* Scratch of `bytes` for slot k: from sc, or allocated (freed by sort_put). */
static void *sort_get(struct vox_ctx *ctx, struct dist_scratch *sc, int k, size_t bytes)
{
    return sc ? dist_scratch_get(ctx, sc, k, bytes) : vox_alloc(ctx, bytes);
}

static void sort_put(struct vox_ctx *ctx, struct dist_scratch *sc, void *p)
{
    if (!sc)
        vox_free(ctx, p);
}

static bool sort_direct(struct vox_ctx *ctx, struct dist_scratch *sc, uint8_t *el, int64_t n,
                        size_t size, uint64_t (*key)(const void *))
{
    uint8_t *tmp = sort_get(ctx, sc, DIST_SC_S2, (size_t)n * size), *a = el, *b = tmp;
    if (!tmp)
        return false;
    uint64_t diff = 0, k0 = key(el);
    for (int64_t j = 1; j < n; j++)
        diff |= key(el + (size_t)j * size) ^ k0;
    for (int sh = 0; sh < 64; sh += 8) {
        if (!(diff >> sh & 255))
            continue;
        int64_t cnt[257] = {0};
        for (int64_t j = 0; j < n; j++)
            cnt[(key(a + (size_t)j * size) >> sh & 255) + 1]++;
        for (int d = 0; d < 256; d++)
            cnt[d + 1] += cnt[d];
        for (int64_t j = 0; j < n; j++) {
            const uint8_t *x = a + (size_t)j * size;
            memcpy(b + (size_t)cnt[key(x) >> sh & 255]++ * size, x, size);
        }
        uint8_t *t = a;
        a = b;
        b = t;
    }
    if (a != el)
        memcpy(el, a, (size_t)n * size);
    sort_put(ctx, sc, tmp);
    return true;
}

void dist_sort_u64(uint64_t *k, uint64_t *tmp, int64_t n, int from)
{
    uint64_t all_or = 0, all_and = ~0ull, *a = k, *b = tmp;
    for (int64_t j = 0; j < n; j++) {
        all_or |= k[j];
        all_and &= k[j];
    }
    /* Passes of 11 bits (8 for short arrays, where the counts would cost more than the
     * keys), each starting at the lowest varying bit not yet sorted: a 52-bit edge key in
     * 5 passes, not 7. Any stable LSD order gives the same result as the byte passes. */
    uint64_t vary = (all_or ^ all_and) >> (from / 8 * 8) << (from / 8 * 8);
    const int width = n >= 2048 ? 11 : 8;
    const uint64_t mask = ((uint64_t)1 << width) - 1;
    int64_t cnt[(1 << 11) + 1];
    while (vary) {
        int sh = __builtin_ctzll(vary);
        vary = sh + width >= 64 ? 0 : vary >> (sh + width) << (sh + width);
        memset(cnt, 0, (size_t)(mask + 2) * sizeof *cnt);
        for (int64_t j = 0; j < n; j++)
            cnt[(a[j] >> sh & mask) + 1]++;
        for (uint64_t d = 0; d < mask; d++)
            cnt[d + 1] += cnt[d];
        for (int64_t j = 0; j < n; j++)
            b[cnt[a[j] >> sh & mask]++] = a[j];
        uint64_t *t = a;
        a = b;
        b = t;
    }
    if (a != k)
        memcpy(k, a, (size_t)n * sizeof *k);
}

/* Parts of a shared pass: part q holds keys [q n / P, (q + 1) n / P) of the source. The
 * digits are dist_sort_u64's (11 bits from the lowest varying bit not yet sorted), so a
 * 52-bit key takes 5 shared passes, not 7 of a byte. */
enum { PAR_MIN = 1 << 16, PAR_BITS = 11 };

struct sort_par {
    const uint64_t *a;
    uint64_t *b;
    int64_t n;
    int parts, sh;
    uint64_t or_[DIST_PAR_PARTS], and_[DIST_PAR_PARTS];
    int64_t (*cnt)[1 << PAR_BITS]; /* per part: counts, then its first place per digit */
};

static void par_vary(void *arg, int64_t q)
{
    struct sort_par *p = arg;
    uint64_t o = 0, a = ~0ull;
    for (int64_t j = q * p->n / p->parts, e = (q + 1) * p->n / p->parts; j < e; j++) {
        o |= p->a[j];
        a &= p->a[j];
    }
    p->or_[q] = o;
    p->and_[q] = a;
}

static void par_count(void *arg, int64_t q)
{
    struct sort_par *p = arg;
    int64_t *c = p->cnt[q];
    const uint64_t mask = (1u << PAR_BITS) - 1;
    memset(c, 0, sizeof p->cnt[q]);
    for (int64_t j = q * p->n / p->parts, e = (q + 1) * p->n / p->parts; j < e; j++)
        c[p->a[j] >> p->sh & mask]++;
}

static void par_scatter(void *arg, int64_t q)
{
    struct sort_par *p = arg;
    int64_t *c = p->cnt[q];
    const uint64_t mask = (1u << PAR_BITS) - 1;
    for (int64_t j = q * p->n / p->parts, e = (q + 1) * p->n / p->parts; j < e; j++)
        p->b[c[p->a[j] >> p->sh & mask]++] = p->a[j];
}

void dist_sort_u64_par(const struct dist_par *dp, uint64_t *k, uint64_t *tmp, int64_t n, int from)
{
    int threads = dp ? vox_ctx_threads(dp->ctx) : 1;
    struct sort_par p = {.a = k, .b = tmp, .n = n};
    if (n >= PAR_MIN && threads >= 2) {
        p.parts = dist_par_parts(dp);
        p.cnt = vox_alloc(dp->ctx, (size_t)p.parts * sizeof *p.cnt);
    }
    if (!p.cnt) { /* short, one thread, or no memory for the counts */
        dist_sort_u64(k, tmp, n, from);
        return;
    }
    /* the parts' places are the serial pass's: part q's keys of each digit go after those
     * of parts < q, so the result (a stable sort) is the same */
    dist_par_for(dp, p.parts, par_vary, &p);
    uint64_t all_or = 0, all_and = ~0ull;
    for (int q = 0; q < p.parts; q++) {
        all_or |= p.or_[q];
        all_and &= p.and_[q];
    }
    uint64_t vary = (all_or ^ all_and) >> (from / 8 * 8) << (from / 8 * 8);
    while (vary) {
        p.sh = __builtin_ctzll(vary);
        vary = p.sh + PAR_BITS >= 64 ? 0 : vary >> (p.sh + PAR_BITS) << (p.sh + PAR_BITS);
        dist_par_for(dp, p.parts, par_count, &p);
        int64_t at = 0;
        for (int d = 0; d < 1 << PAR_BITS; d++)
            for (int q = 0; q < p.parts; q++) {
                int64_t c = p.cnt[q][d];
                p.cnt[q][d] = at;
                at += c;
            }
        dist_par_for(dp, p.parts, par_scatter, &p);
        const uint64_t *t = p.a;
        p.a = p.b;
        p.b = (uint64_t *)t;
    }
    if (p.a != k)
        memcpy(k, p.a, (size_t)n * sizeof *k);
    vox_free(dp->ctx, p.cnt);
}

void dist_sort(struct vox_ctx *ctx, void *base, int64_t n, size_t size,
               uint64_t (*key)(const void *), uint64_t (*key_hi)(const void *),
               int (*cmp)(const void *, const void *))
{
    dist_sort_sc(ctx, NULL, base, n, size, key, key_hi, cmp);
}

void dist_sort_sc(struct vox_ctx *ctx, struct dist_scratch *sc, void *base, int64_t n,
                  size_t size, uint64_t (*key)(const void *), uint64_t (*key_hi)(const void *),
                  int (*cmp)(const void *, const void *))
{
    if (n < 2)
        return;
    if (!key_hi && n >= 64) {
        if (!sort_direct(ctx, sc, base, n, size, key))
            qsort(base, (size_t)n, size, cmp);
        return;
    }
    uint8_t *el = base;
    struct sort_kv *a = n >= 64 ? sort_get(ctx, sc, DIST_SC_S0, (size_t)n * sizeof *a) : NULL;
    struct sort_kv *b = a ? sort_get(ctx, sc, DIST_SC_S1, (size_t)n * sizeof *b) : NULL;
    uint8_t *tmp = b ? sort_get(ctx, sc, DIST_SC_S2, (size_t)n * size) : NULL;
    if (!tmp) {
        sort_put(ctx, sc, a);
        sort_put(ctx, sc, b);
        qsort(base, (size_t)n, size, cmp);
        return;
    }
    for (int64_t j = 0; j < n; j++)
        a[j] = (struct sort_kv){key(el + (size_t)j * size), j};
    struct sort_kv *r = sort_radix(a, b, n);
    if (key_hi) {
        for (int64_t j = 0; j < n; j++)
            r[j].k = key_hi(el + (size_t)r[j].i * size);
        r = sort_radix(r, r == a ? b : a, n);
    }
    sort_gather(tmp, el, r, n, size);
    memcpy(base, tmp, (size_t)n * size);
    sort_put(ctx, sc, a);
    sort_put(ctx, sc, b);
    sort_put(ctx, sc, tmp);
}
