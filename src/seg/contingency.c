/*
 * contingency.c: the contingency table between a segmentation and a ground truth, as a hash
 * map from (seg, gt) to an exact int64 voxel count.
 *
 * Key idea: counts are additive, so a table accumulated block by block, or merged from tables
 * of separate blocks in any order, equals the whole-volume table exactly (ABISS computes one
 * per chunk and sums them the same way). Labels change rarely along a row, so each row is
 * run-length coded first: one hash update per run of equal (seg, gt) pairs, not per voxel.
 *
 * The map is open addressing with linear probing at load <= 1/2, keyed by the two labels
 * through a splitmix64 mix; deletion shifts the rest of the probe run back (Knuth 6.4,
 * Algorithm R), which metrics_history.c needs when rows of the table move.
 */
#include "seg/metrics_internal.h"

#include <stdlib.h>
#include <string.h>

struct vox_contingency {
    struct vox_ctx *ctx;
    struct vox_cmap map;
    int64_t voxels;
};

/* ---- the map ----------------------------------------------------------------------------- */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int64_t slot_of(const struct vox_cmap *m, uint64_t k0, uint64_t k1)
{
    return (int64_t)(mix64(k0 * 0x9E3779B97F4A7C15ull + mix64(k1)) & (uint64_t)(m->cap - 1));
}

void vox_cmap_fini(struct vox_ctx *ctx, struct vox_cmap *m)
{
    vox_free(ctx, m->slots);
    memset(m, 0, sizeof *m);
}

static enum vox_status rehash(struct vox_ctx *ctx, struct vox_cmap *m, int64_t cap)
{
    struct vox_cmap_slot *slots = vox_calloc(ctx, (size_t)cap, sizeof *slots);
    if (!slots)
        return vox_fail(ctx, VOX_OUT_OF_MEMORY, "out of memory growing a contingency table "
                        "to %lld cells", (long long)cap);
    struct vox_cmap old = *m;
    m->slots = slots;
    m->cap = cap;
    for (int64_t i = 0; i < old.cap; i++) {
        if (old.slots[i].v == 0)
            continue;
        int64_t j = slot_of(m, old.slots[i].k0, old.slots[i].k1);
        while (slots[j].v != 0)
            j = (j + 1) & (cap - 1);
        slots[j] = old.slots[i];
    }
    vox_free(ctx, old.slots);
    return VOX_OK;
}

enum vox_status vox_cmap_reserve(struct vox_ctx *ctx, struct vox_cmap *m, int64_t n)
{
    int64_t cap = m->cap ? m->cap : 16;
    while (cap < 2 * n)
        cap *= 2;
    return cap == m->cap ? VOX_OK : rehash(ctx, m, cap);
}

/* The slot holding (k0, k1), or -1. */
static int64_t index_of(const struct vox_cmap *m, uint64_t k0, uint64_t k1)
{
    if (m->cap == 0)
        return -1;
    for (int64_t j = slot_of(m, k0, k1);; j = (j + 1) & (m->cap - 1)) {
        const struct vox_cmap_slot *s = &m->slots[j];
        if (s->v == 0)
            return -1;
        if (s->k0 == k0 && s->k1 == k1)
            return j;
    }
}

int64_t *vox_cmap_find(const struct vox_cmap *m, uint64_t k0, uint64_t k1)
{
    int64_t j = index_of(m, k0, k1);
    return j < 0 ? NULL : &m->slots[j].v;
}

enum vox_status vox_cmap_add(struct vox_ctx *ctx, struct vox_cmap *m, uint64_t k0, uint64_t k1,
                             int64_t delta)
{
    if (2 * (m->len + 1) > m->cap) {
        enum vox_status st = vox_cmap_reserve(ctx, m, m->len + 1);
        if (st != VOX_OK)
            return st;
    }
    int64_t j = slot_of(m, k0, k1);
    while (m->slots[j].v != 0) {
        if (m->slots[j].k0 == k0 && m->slots[j].k1 == k1) {
            m->slots[j].v += delta;
            VOX_ASSERT(m->slots[j].v != 0);
            return VOX_OK;
        }
        j = (j + 1) & (m->cap - 1);
    }
    m->slots[j] = (struct vox_cmap_slot){k0, k1, delta};
    m->len++;
    return VOX_OK;
}

void vox_cmap_del(struct vox_cmap *m, uint64_t k0, uint64_t k1)
{
    int64_t hole = index_of(m, k0, k1), mask = m->cap - 1;
    if (hole < 0)
        return;
    for (int64_t j = (hole + 1) & mask; m->slots[j].v != 0; j = (j + 1) & mask) {
        int64_t home = slot_of(m, m->slots[j].k0, m->slots[j].k1);
        /* the entry at j may move to the hole if its home is not in (hole, j] cyclically */
        bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    m->slots[hole].v = 0;
    m->len--;
}

/* ---- the table --------------------------------------------------------------------------- */

enum vox_status vox_contingency_create(struct vox_ctx *ctx, struct vox_contingency **t_out)
{
    *t_out = NULL;
    struct vox_contingency *t = vox_calloc(ctx, 1, sizeof *t);
    if (!t)
        return vox_fail(ctx, VOX_OUT_OF_MEMORY, "out of memory creating a contingency table");
    t->ctx = ctx;
    *t_out = t;
    return VOX_OK;
}

void vox_contingency_destroy(struct vox_contingency *t)
{
    if (!t)
        return;
    struct vox_ctx *ctx = t->ctx;
    vox_cmap_fini(ctx, &t->map);
    vox_free(ctx, t);
}

int64_t vox_contingency_voxels(const struct vox_contingency *t) { return t->voxels; }
int64_t vox_contingency_cells(const struct vox_contingency *t) { return t->map.len; }

int64_t vox_contingency_get(const struct vox_contingency *t, uint64_t seg, uint64_t gt)
{
    const int64_t *v = vox_cmap_find(&t->map, seg, gt);
    return v ? *v : 0;
}

enum vox_status vox_contingency_add_count(struct vox_ctx *ctx, struct vox_contingency *t,
                                          uint64_t seg, uint64_t gt, int64_t count)
{
    if (count < 0)
        return vox_fail(ctx, VOX_INVALID_ARG, "contingency count %lld for (seg %llu, gt %llu): "
                        "expected >= 0", (long long)count, (unsigned long long)seg,
                        (unsigned long long)gt);
    if (count == 0)
        return VOX_OK;
    enum vox_status st = vox_cmap_add(ctx, &t->map, seg, gt, count);
    if (st == VOX_OK)
        t->voxels += count;
    return st;
}

static bool label_dtype(enum vox_dtype d)
{
    return d == VOX_U8 || d == VOX_U16 || d == VOX_U32 || d == VOX_U64 || d == VOX_I32;
}

static enum vox_status check_block(struct vox_ctx *ctx, const struct vox_tensor *seg,
                                   const struct vox_tensor *gt)
{
    const struct vox_tensor *ts[2] = {seg, gt};
    const char *names[2] = {"seg", "gt"};
    for (int k = 0; k < 2; k++) {
        if (ts[k]->rank != 3)
            return vox_fail(ctx, VOX_INVALID_ARG, "%s: rank %d, expected a (Z, Y, X) volume",
                            names[k], ts[k]->rank);
        if (!label_dtype(ts[k]->dtype))
            return vox_fail(ctx, VOX_UNSUPPORTED, "%s: dtype %s, expected integer labels "
                            "(u8, u16, u32, u64 or i32)", names[k], vox_dtype_str(ts[k]->dtype));
    }
    for (int d = 0; d < 3; d++)
        if (seg->shape[d] != gt->shape[d])
            return vox_fail(ctx, VOX_INVALID_ARG, "seg shape (%lld, %lld, %lld) differs from gt "
                            "shape (%lld, %lld, %lld)", (long long)seg->shape[0],
                            (long long)seg->shape[1], (long long)seg->shape[2],
                            (long long)gt->shape[0], (long long)gt->shape[1],
                            (long long)gt->shape[2]);
    return VOX_OK;
}

/* Row (z, y) of t as uint64 labels; false if an i32 label is negative. */
static bool load_row(const struct vox_tensor *t, int64_t z, int64_t y, int64_t nx, uint64_t *out)
{
    const char *p = (const char *)t->data +
                    (z * t->strides[0] + y * t->strides[1]) * (int64_t)vox_dtype_size(t->dtype);
    int64_t sx = t->strides[2];
    switch (t->dtype) {
    case VOX_U8:
        for (int64_t x = 0; x < nx; x++)
            out[x] = ((const uint8_t *)(const void *)p)[x * sx];
        return true;
    case VOX_U16:
        for (int64_t x = 0; x < nx; x++)
            out[x] = ((const uint16_t *)(const void *)p)[x * sx];
        return true;
    case VOX_U32:
        for (int64_t x = 0; x < nx; x++)
            out[x] = ((const uint32_t *)(const void *)p)[x * sx];
        return true;
    case VOX_U64:
        for (int64_t x = 0; x < nx; x++)
            out[x] = ((const uint64_t *)(const void *)p)[x * sx];
        return true;
    default: {
        const int32_t *q = (const int32_t *)(const void *)p;
        int32_t lo = 0;
        for (int64_t x = 0; x < nx; x++) {
            lo = q[x * sx] < lo ? q[x * sx] : lo;
            out[x] = (uint64_t)(uint32_t)q[x * sx];
        }
        return lo >= 0;
    }
    }
}

/* One hash update per run of equal (seg, gt) pairs. */
static enum vox_status add_row(struct vox_ctx *ctx, struct vox_contingency *t, const uint64_t *s,
                               const uint64_t *g, int64_t nx)
{
    int64_t x = 0;
    while (x < nx) {
        int64_t e = x + 1;
        while (e < nx && s[e] == s[x] && g[e] == g[x])
            e++;
        enum vox_status st = vox_cmap_add(ctx, &t->map, s[x], g[x], e - x);
        if (st != VOX_OK)
            return st;
        t->voxels += e - x;
        x = e;
    }
    return VOX_OK;
}

enum vox_status vox_contingency_add(struct vox_ctx *ctx, struct vox_contingency *t,
                                    const struct vox_tensor *seg, const struct vox_tensor *gt)
{
    enum vox_status st = check_block(ctx, seg, gt);
    if (st != VOX_OK)
        return st;
    int64_t nz = seg->shape[0], ny = seg->shape[1], nx = seg->shape[2];
    if (nz * ny * nx == 0)
        return VOX_OK;
    uint64_t *buf = vox_alloc(ctx, 2 * (size_t)nx * sizeof *buf);
    if (!buf)
        return vox_fail(ctx, VOX_OUT_OF_MEMORY, "out of memory for a row of %lld labels",
                        (long long)nx);
    for (int64_t z = 0; z < nz && st == VOX_OK; z++) {
        for (int64_t y = 0; y < ny && st == VOX_OK; y++) {
            bool seg_ok = load_row(seg, z, y, nx, buf);
            if (!seg_ok || !load_row(gt, z, y, nx, buf + nx)) {
                st = vox_fail(ctx, VOX_INVALID_ARG, "%s has a negative label in row (z %lld, "
                              "y %lld): labels must be >= 0", seg_ok ? "gt" : "seg",
                              (long long)z, (long long)y);
                break;
            }
            st = add_row(ctx, t, buf, buf + nx, nx);
        }
    }
    vox_free(ctx, buf);
    return st;
}

enum vox_status vox_contingency_merge(struct vox_ctx *ctx, struct vox_contingency *dst,
                                      const struct vox_contingency *src)
{
    if (dst == src)
        return vox_fail(ctx, VOX_INVALID_ARG, "cannot merge a contingency table into itself");
    enum vox_status st = vox_cmap_reserve(ctx, &dst->map, dst->map.len + src->map.len);
    for (int64_t i = 0; i < src->map.cap && st == VOX_OK; i++) {
        const struct vox_cmap_slot *s = &src->map.slots[i];
        if (s->v != 0)
            st = vox_cmap_add(ctx, &dst->map, s->k0, s->k1, s->v);
    }
    if (st == VOX_OK)
        dst->voxels += src->voxels;
    return st;
}

static int cmp_seg_gt(const void *pa, const void *pb)
{
    const struct vox_contingency_entry *a = pa, *b = pb;
    if (a->seg != b->seg)
        return a->seg < b->seg ? -1 : 1;
    return a->gt < b->gt ? -1 : a->gt > b->gt;
}

static int cmp_gt_seg(const void *pa, const void *pb)
{
    const struct vox_contingency_entry *a = pa, *b = pb;
    if (a->gt != b->gt)
        return a->gt < b->gt ? -1 : 1;
    return a->seg < b->seg ? -1 : a->seg > b->seg;
}

void vox_metrics_sort_seg(struct vox_contingency_entry *cells, int64_t n)
{
    qsort(cells, (size_t)n, sizeof *cells, cmp_seg_gt);
}

void vox_metrics_sort_gt(struct vox_contingency_entry *cells, int64_t n)
{
    qsort(cells, (size_t)n, sizeof *cells, cmp_gt_seg);
}

enum vox_status vox_contingency_export(struct vox_ctx *ctx, const struct vox_contingency *t,
                                       struct vox_contingency_entry **cells_out, int64_t *n_out)
{
    *cells_out = NULL;
    *n_out = 0;
    int64_t n = t->map.len;
    struct vox_contingency_entry *cells = vox_alloc(ctx, (size_t)(n > 0 ? n : 1) * sizeof *cells);
    if (!cells)
        return vox_fail(ctx, VOX_OUT_OF_MEMORY, "out of memory exporting %lld contingency cells",
                        (long long)n);
    int64_t k = 0;
    for (int64_t i = 0; i < t->map.cap; i++) {
        const struct vox_cmap_slot *s = &t->map.slots[i];
        if (s->v != 0)
            cells[k++] = (struct vox_contingency_entry){s->k0, s->k1, s->v};
    }
    vox_metrics_sort_seg(cells, n);
    *cells_out = cells;
    *n_out = n;
    return VOX_OK;
}
