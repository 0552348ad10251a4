/*
 * seg/watershed.c: the steepest-ascent watershed of a quantized affinity graph.
 *
 * Zlateski & Seung (arXiv 1505.00249), in the affinity form of the reference code, with the
 * memory of the note's §7: one direction byte per voxel plus the uint32 label array, which
 * also serves as scratch (the voxel maxima, then the BFS queue, then union-find parents).
 *
 *   A  max:   m[v] = the largest of v's (up to) 6 edges          parallel, into the labels
 *   B  dirs:  m <= low: background (0). m >= high: bits of the edges >= high (a plateau of
 *             seeds). Else the edges equal to m: those to a neighbour of larger max are
 *             exits, the first in neighbour-index order is kept (RESOLVED, one bit; SEED if
 *             the voxel also has plateau edges); a voxel with no exit keeps its plateau bits.
 *                                                                parallel, reads m only
 *   C  split: one BFS from the SEED voxels in C order through plateau edges; a reached voxel
 *             points back to the voxel that reached it (neighbours in index order). Plateaus
 *             without an exit stay unresolved: they are the regional maxima.   serial
 *   D1 union: union-find over the unresolved plateau voxels (root = smallest index), in
 *             z-slabs, then across the slabs' seams.                     parallel, seams serial
 *   D2 label: per z-slab, in C order, follow each voxel's pointers to a labelled voxel, a
 *             plateau root or the slab's edge; a new end gets the slab's next provisional id
 *             and the whole path is labelled, so every voxel is walked once.       parallel
 *             Then each id follows its end across the slabs to a plateau root (serial, per
 *             id); taking the ids in slab order is taking them in C order of their first
 *             voxel, so the basins are numbered canonically; labels rewritten.     parallel
 *
 * Edges that leave the volume do not exist (the reference code gives them T_low, which never
 * wins). Pointers ascend strictly in m, or stay in a plateau and move to an earlier BFS
 * voxel, so they are acyclic and end on a maximum plateau.
 */
#include "seg_internal.h"

#include <string.h>

enum {
    DIR_MASK = 0x3F, /* bits 0..5: -z, -y, -x, +x, +y, +z (ascending neighbour index) */
    DIR_SEED = 0x40, /* pass B..C: a resolved voxel with plateau neighbours */
    DIR_DONE = 0x40, /* pass D2: labels[v] holds the final label */
    DIR_RESOLVED = 0x80,
};

struct ws_job {
    const uint8_t *q; /* 3 channels of d.n bytes */
    uint8_t *m;       /* voxel maxima (the first d.n bytes of the label array) */
    uint8_t *dir;
    struct seg_dims d;
    int low, high;
};

/* 16 voxels at a time, with GCC's generic vector extension (SSE2 / NEON / scalar code). */
typedef uint8_t ws_v16 __attribute__((vector_size(16)));

static inline ws_v16 ws_ld(const uint8_t *p)
{
    ws_v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline ws_v16 ws_vmax(ws_v16 a, ws_v16 b)
{
    return b ^ ((a ^ b) & (ws_v16)(a > b));
}

/* The largest edge of voxel v at (z, y, x), edges leaving the volume left out. */
static inline uint8_t ws_max_of(const struct ws_job *j, int64_t v, int64_t z, int64_t y, int64_t x)
{
    const int64_t n = j->d.n, X = j->d.x;
    const uint8_t *q = j->q;
    uint8_t e[6] = {z > 0 ? q[v] : 0,
                    y > 0 ? q[n + v] : 0,
                    x > 0 ? q[2 * n + v] : 0,
                    x + 1 < X ? q[2 * n + v + 1] : 0,
                    y + 1 < j->d.y ? q[n + v + X] : 0,
                    z + 1 < j->d.z ? q[v + j->d.plane] : 0};
    uint8_t m = 0;
    for (int d = 0; d < 6; d++)
        m = e[d] > m ? e[d] : m;
    return m;
}

/* The 16 maxima at x of a row: the x edges from the row itself, the others from 4 rows of
 * edges (a row of zeros where the edge leaves the volume, zero[] repeated: step 0). */
static inline void ws_max16(uint8_t *m, const uint8_t *qx, const uint8_t *const src[4],
                            const int64_t step[4], int64_t x)
{
    ws_v16 v = ws_vmax(ws_ld(qx + x), ws_ld(qx + x + 1));
    for (int k = 0; k < 4; k++)
        v = ws_vmax(v, ws_ld(src[k] + x * step[k]));
    memcpy(m + x, &v, sizeof v);
}

/* Pass A over rows [lo, hi) (row = z * Y + y). */
static void ws_max_rows(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct ws_job *j = arg;
    const int64_t X = j->d.x, n = j->d.n, P = j->d.plane;
    static const uint8_t zero[16];
    for (int64_t r = lo[0]; r < hi[0]; r++) {
        int64_t z = r / j->d.y, y = r % j->d.y, v0 = r * X, x = 1;
        const uint8_t *qz = j->q + v0, *qy = qz + n, *qx = qy + n;
        const bool in[4] = {z > 0, z + 1 < j->d.z, y > 0, y + 1 < j->d.y};
        const uint8_t *src[4] = {in[0] ? qz : zero, in[1] ? qz + P : zero, in[2] ? qy : zero,
                                 in[3] ? qy + X : zero};
        const int64_t step[4] = {in[0], in[1], in[2], in[3]};
        for (; x + 17 <= X; x += 16)
            ws_max16(j->m + v0, qx, src, step, x);
        if (x > 1 && x + 1 < X) { /* the rest, overlapping the last 16 (same values) */
            ws_max16(j->m + v0, qx, src, step, X - 17);
            x = X - 1;
        }
        for (; x < X; x++)
            j->m[v0 + x] = ws_max_of(j, v0 + x, z, y, x);
        j->m[v0] = ws_max_of(j, v0, z, y, 0);
    }
}

/* The direction byte of voxel v at (z, y, x): see pass B above. */
static inline uint8_t ws_dir_of(const struct ws_job *j, int64_t v, int64_t z, int64_t y, int64_t x)
{
    const int64_t n = j->d.n, X = j->d.x, P = j->d.plane;
    int mv = j->m[v];
    if (mv <= j->low)
        return 0;
    const uint8_t *q = j->q;
    int e[6] = {z > 0 ? q[v] : -1,
                y > 0 ? q[n + v] : -1,
                x > 0 ? q[2 * n + v] : -1,
                x + 1 < X ? q[2 * n + v + 1] : -1,
                y + 1 < j->d.y ? q[n + v + X] : -1,
                z + 1 < j->d.z ? q[v + P] : -1};
    const int64_t off[6] = {-P, -X, -1, 1, X, P};
    uint8_t bits = 0;
    if (mv >= j->high) {
        for (int d = 0; d < 6; d++)
            bits |= (uint8_t)((e[d] >= j->high) << d);
        return bits;
    }
    int exit = -1;
    for (int d = 0; d < 6; d++) {
        if (e[d] != mv)
            continue;
        if (j->m[v + off[d]] > mv) {
            exit = exit < 0 ? d : exit; /* the first exit in neighbour-index order wins */
        } else {
            bits |= (uint8_t)(1u << d); /* a plateau edge: the neighbour's max is mv too */
        }
    }
    if (exit < 0)
        return bits;
    return (uint8_t)(DIR_RESOLVED | (1u << exit) | (bits ? DIR_SEED : 0));
}

/* ws_dir_of for the 16 voxels at v of an interior row (every edge exists), branch-free. */
static inline ws_v16 ws_dir16(const struct ws_job *j, int64_t v)
{
    const int64_t n = j->d.n, X = j->d.x, P = j->d.plane, off[6] = {-P, -X, -1, 1, X, P};
    const uint8_t *q = j->q, *m = j->m;
    const ws_v16 e[6] = {ws_ld(q + v),         ws_ld(q + n + v),
                         ws_ld(q + 2 * n + v), ws_ld(q + 2 * n + v + 1),
                         ws_ld(q + n + v + X), ws_ld(q + v + P)};
    const ws_v16 mv = ws_ld(m + v), high = mv * 0 + (uint8_t)j->high;
    ws_v16 hb = mv * 0, ex = hb, pl = hb;
    for (int d = 0; d < 6; d++) {
        ws_v16 bit = hb * 0 + (uint8_t)(1u << d), nb = ws_ld(m + v + off[d]);
        ws_v16 eq = (ws_v16)(e[d] == mv), up = (ws_v16)(nb > mv);
        hb |= (ws_v16)(e[d] >= high) & bit;
        ex |= eq & up & bit;
        pl |= eq & ~up & bit;
    }
    ws_v16 has_ex = (ws_v16)(ex != 0), has_pl = (ws_v16)(pl != 0);
    ws_v16 resolved = (ex & -ex) | (uint8_t)DIR_RESOLVED | (has_pl & (uint8_t)DIR_SEED);
    ws_v16 mid = (has_ex & resolved) | (~has_ex & pl), is_hi = (ws_v16)(mv >= high);
    return (ws_v16)(mv > (uint8_t)j->low) & ((is_hi & hb) | (~is_hi & mid));
}

static void ws_dir_rows(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct ws_job *j = arg;
    const int64_t X = j->d.x;
    for (int64_t r = lo[0]; r < hi[0]; r++) {
        int64_t z = r / j->d.y, y = r % j->d.y, v0 = r * X, x = 0;
        if (z > 0 && z + 1 < j->d.z && y > 0 && y + 1 < j->d.y) {
            j->dir[v0] = ws_dir_of(j, v0, z, y, 0);
            for (x = 1; x + 17 <= X; x += 16) {
                ws_v16 dv = ws_dir16(j, v0 + x);
                memcpy(j->dir + v0 + x, &dv, sizeof dv);
            }
            if (x > 1 && x + 1 < X) { /* the rest, overlapping the last 16 (same values) */
                ws_v16 dv = ws_dir16(j, v0 + X - 17);
                memcpy(j->dir + v0 + X - 17, &dv, sizeof dv);
                x = X - 1;
            }
        }
        for (; x < X; x++)
            j->dir[v0 + x] = ws_dir_of(j, v0 + x, z, y, x);
    }
}

/* Pass C: splits the non-maximal plateaus by BFS from their exits; queue = the label array. */
static void ws_split_plateaus(uint8_t *dir, uint32_t *queue, const struct seg_dims *d)
{
    int64_t head = 0, tail = 0;
    for (int64_t v = 0; v < d->n; v++) {
        if (dir[v] & DIR_SEED && dir[v] & DIR_RESOLVED) {
            dir[v] &= (uint8_t)~DIR_SEED;
            queue[tail++] = (uint32_t)v;
        }
    }
    const int64_t off[6] = {-d->plane, -d->x, -1, 1, d->x, d->plane};
    while (head < tail) {
        int64_t v = queue[head++];
        int64_t x = v % d->x, y = (v / d->x) % d->y, z = v / d->plane;
        const bool in[6] = {z > 0, y > 0, x > 0, x + 1 < d->x, y + 1 < d->y, z + 1 < d->z};
        for (int k = 0; k < 6; k++) {
            if (!in[k])
                continue;
            int64_t u = v + off[k];
            uint8_t du = dir[u], back = (uint8_t)(1u << (5 - k));
            if (!(du & DIR_RESOLVED) && (du & back)) { /* same plateau, not yet reached */
                dir[u] = DIR_RESOLVED | back;
                queue[tail++] = (uint32_t)u;
            }
        }
    }
}

/* Joins the union-find trees of r (a root) and u; returns the new root (the smaller). */
static inline uint32_t ws_join(uint32_t *parent, uint32_t r, uint32_t u, int64_t *roots)
{
    uint32_t ru = seg_find(parent, u);
    if (ru == r)
        return r;
    (*roots)--;
    parent[ru > r ? ru : r] = ru < r ? ru : r;
    return ru < r ? ru : r;
}

/* Pass D1 over the voxels [v0, v1) (whole planes): unions the voxels of each maximum plateau;
 * returns the number of trees made. A voxel joins the tree of its -x plateau neighbour, then
 * those of its -y and -z plateau neighbours; root = smallest index. The -z edges of the first
 * plane are left out when `cut` (another slab's: see ws_union_seams). */
static int64_t ws_union_slab(const uint8_t *dir, uint32_t *parent, const struct seg_dims *d,
                             int64_t v0, int64_t v1, bool cut)
{
    int64_t roots = 0;
    const int64_t X = d->x, P = d->plane, vcut = cut ? v0 + P : v0;
    for (int64_t v = v0; v < v1; v++) {
        uint8_t dv = dir[v];
        if (!dv || (dv & DIR_RESOLVED))
            continue;
        if (v < vcut)
            dv &= (uint8_t)~1u;
        uint32_t r;
        if (dv & 4) { /* -x */
            r = seg_find(parent, (uint32_t)(v - 1));
            if (dv & 2)
                r = ws_join(parent, r, (uint32_t)(v - X), &roots);
        } else if (dv & 2) { /* -y */
            r = seg_find(parent, (uint32_t)(v - X));
        } else if (dv & 1) { /* -z */
            parent[v] = seg_find(parent, (uint32_t)(v - P));
            continue;
        } else {
            r = (uint32_t)v;
            roots++;
        }
        if (dv & 1)
            r = ws_join(parent, r, (uint32_t)(v - P), &roots);
        parent[v] = r;
    }
    return roots;
}

struct ws_union_job {
    const uint8_t *dir;
    uint32_t *parent;
    const struct seg_dims *d;
    int64_t nslab;
    int64_t *roots; /* per slab */
};

static int64_t ws_slab_start(const struct ws_union_job *j, int64_t k)
{
    return k * j->d->z / j->nslab * j->d->plane;
}

static void ws_union_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct ws_union_job *j = arg;
    for (int64_t k = lo[0]; k < hi[0]; k++)
        j->roots[k] = ws_union_slab(j->dir, j->parent, j->d, ws_slab_start(j, k),
                                    ws_slab_start(j, k + 1), k > 0);
}

/* Joins the slabs across the -z edges of their first planes; returns the joins made. */
static int64_t ws_union_seams(const struct ws_union_job *j)
{
    int64_t joins = 0;
    for (int64_t k = 1; k < j->nslab; k++) {
        int64_t v0 = ws_slab_start(j, k), v1 = v0 + j->d->plane;
        for (int64_t v = v0; v < v1 && v0 < j->d->n; v++) {
            uint8_t dv = j->dir[v];
            if (!(dv & 1) || (dv & DIR_RESOLVED))
                continue;
            uint32_t r = seg_find(j->parent, (uint32_t)v);
            ws_join(j->parent, r, (uint32_t)(v - j->d->plane), &joins);
        }
    }
    return joins;
}

/* Pass D1 in z-slabs, one per thread, then the seams; returns the number of plateaus (the
 * partition and its roots, the smallest indices, do not depend on the slabs). */
static enum vox_status ws_union_plateaus(struct vox_ctx *ctx, const uint8_t *dir, uint32_t *parent,
                                         const struct seg_dims *d, int64_t *nplateaus)
{
    int64_t nslab = vox_ctx_threads(ctx) < d->z ? vox_ctx_threads(ctx) : d->z;
    struct ws_union_job j = {.dir = dir, .parent = parent, .d = d, .nslab = nslab};
    j.roots = vox_calloc(ctx, (size_t)nslab, sizeof *j.roots);
    if (!j.roots)
        return VOX_OUT_OF_MEMORY;
    vox_pool_for(vox_ctx_pool(ctx), (int64_t[3]){nslab, 1, 1}, (int64_t[3]){1, 1, 1},
                 VOX_SCHED_STATIC, ws_union_task, &j);
    int64_t n = ws_union_seams(&j);
    for (int64_t k = 0; k < nslab; k++)
        n += j.roots[k];
    vox_free(ctx, j.roots);
    *nplateaus = n;
    return VOX_OK;
}

/* The next voxel along v's pointer (resolved) or its union-find parent (plateau); -1 at a
 * plateau root. */
static inline int64_t ws_next(const uint8_t *dir, const uint32_t *lab, const int64_t *off,
                              int64_t v)
{
    uint8_t dv = dir[v];
    if (dv & DIR_RESOLVED)
        return v + off[__builtin_ctz(dv & DIR_MASK)];
    return lab[v] == (uint32_t)v ? -1 : (int64_t)lab[v];
}

/* Pass D2 of one z-slab: provisional labels. A slab's ids are numbered in C order of their
 * first voxel; an id ends on a plateau root inside the slab (target UINT32_MAX) or on the
 * first voxel outside the slab that its pointers reach (target). */
struct ws_slab_ids {
    int64_t n, cap;   /* ids 1..n */
    uint32_t *target; /* [id] */
    uint32_t *size;   /* [id], [0]: background voxels */
    enum vox_status s;
};

static uint32_t ws_new_id(struct vox_ctx *ctx, struct ws_slab_ids *t, uint32_t target)
{
    if (t->n + 1 >= t->cap) {
        int64_t cap = 2 * t->cap + 1024;
        uint32_t *tg = vox_realloc(ctx, t->target, (size_t)t->cap * 4, (size_t)cap * 4);
        uint32_t *sz = tg ? vox_realloc(ctx, t->size, (size_t)t->cap * 4, (size_t)cap * 4) : NULL;
        if (tg)
            t->target = tg;
        if (!sz) {
            t->s = VOX_OUT_OF_MEMORY;
            return 0;
        }
        t->size = sz;
        memset(sz + t->cap, 0, (size_t)(cap - t->cap) * 4);
        t->cap = cap;
    }
    t->n++;
    t->target[t->n] = target;
    return (uint32_t)t->n;
}

/* Labels the voxels [v0, v1) with ids of t (lab[v] = id, DONE set); reads nothing outside. */
static void ws_label_slab(struct vox_ctx *ctx, uint8_t *dir, uint32_t *lab,
                          const struct seg_dims *d, int64_t v0, int64_t v1, struct ws_slab_ids *t)
{
    const int64_t off[6] = {-d->plane, -d->x, -1, 1, d->x, d->plane};
    if (!ws_new_id(ctx, t, 0)) /* room for size[0] */
        return;
    t->n = 0;
    for (int64_t v = v0; v < v1 && t->s == VOX_OK; v++) {
        if (!dir[v]) {
            lab[v] = 0;
            t->size[0]++;
            continue;
        }
        if (!(dir[v] & DIR_DONE)) {
            int64_t p = v, nx = ws_next(dir, lab, off, v);
            uint32_t id;
            if (nx >= v0 && nx < v) { /* the common case: the next voxel is labelled already */
                lab[v] = lab[nx];
                dir[v] |= DIR_DONE;
                t->size[lab[v]]++;
                continue;
            }
            for (;;) { /* find the end: a labelled voxel, a plateau root or the slab's edge */
                if (dir[p] & DIR_DONE) {
                    id = lab[p];
                    break;
                }
                nx = ws_next(dir, lab, off, p);
                if (nx < 0 || nx < v0 || nx >= v1) {
                    id = ws_new_id(ctx, t, nx < 0 ? UINT32_MAX : (uint32_t)nx);
                    break;
                }
                p = nx;
            }
            if (!id)
                return;
            for (int64_t w = v; !(dir[w] & DIR_DONE);) { /* label the path, end included */
                nx = ws_next(dir, lab, off, w);
                lab[w] = id;
                dir[w] |= DIR_DONE;
                if (nx < v0 || nx >= v1)
                    break;
                w = nx;
            }
        }
        t->size[lab[v]]++;
    }
}

struct ws_label_job {
    struct vox_ctx *ctx;
    uint8_t *dir;
    uint32_t *lab;
    struct ws_union_job u; /* the slabs */
    struct ws_slab_ids *ids;
    int64_t *base;       /* global id of slab k's id 1, minus 1 */
    const uint32_t *fin; /* global id -> label */
};

static void ws_label_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct ws_label_job *j = arg;
    for (int64_t k = lo[0]; k < hi[0]; k++)
        ws_label_slab(j->ctx, j->dir, j->lab, j->u.d, ws_slab_start(&j->u, k),
                      ws_slab_start(&j->u, k + 1), &j->ids[k]);
}

static void ws_relabel_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct ws_label_job *j = arg;
    for (int64_t k = lo[0]; k < hi[0]; k++) {
        const uint32_t *fin = j->fin + j->base[k];
        for (int64_t v = ws_slab_start(&j->u, k); v < ws_slab_start(&j->u, k + 1); v++)
            j->lab[v] = j->lab[v] ? fin[j->lab[v]] : 0;
    }
}

/* The global id of voxel v's provisional label. */
static uint32_t ws_global_id(const struct ws_label_job *j, int64_t v)
{
    int64_t k = 0;
    while (ws_slab_start(&j->u, k + 1) <= v)
        k++;
    return (uint32_t)(j->base[k] + j->lab[v]);
}

/* fin[g] = the root id (one that ends on a plateau root) that id g's targets lead to. */
static void ws_resolve(const struct ws_label_job *j, uint32_t *fin, int64_t nid)
{
    for (int64_t k = 0, g = 1; k < j->u.nslab; k++) {
        for (int64_t i = 1; i <= j->ids[k].n; i++, g++) {
            uint32_t t = j->ids[k].target[i];
            fin[g] = t == UINT32_MAX ? (uint32_t)g : ws_global_id(j, t);
        }
    }
    for (int64_t g = 1; g <= nid; g++) { /* pointer paths are acyclic: so are the targets */
        uint32_t r = (uint32_t)g;
        while (fin[r] != r)
            r = fin[r];
        for (uint32_t w = (uint32_t)g, nx; fin[w] != r; w = nx) {
            nx = fin[w];
            fin[w] = r;
        }
    }
}

/* Pass D2 in z-slabs (provisional ids, in parallel), then the ids joined and numbered
 * canonically (serial, per id), then the labels rewritten (in parallel). */
static enum vox_status ws_label(struct vox_ctx *ctx, uint8_t *dir, uint32_t *lab,
                                const struct seg_dims *d, int64_t *sizes, int64_t *nbasins)
{
    int64_t nslab = vox_ctx_threads(ctx) < d->z ? vox_ctx_threads(ctx) : d->z;
    struct ws_label_job j = {.ctx = ctx, .dir = dir, .lab = lab, .u = {.d = d, .nslab = nslab}};
    j.ids = vox_calloc(ctx, (size_t)nslab, sizeof *j.ids);
    j.base = vox_calloc(ctx, (size_t)nslab + 1, sizeof *j.base);
    uint32_t *fin = NULL, *num = NULL;
    enum vox_status s = j.ids && j.base ? VOX_OK : VOX_OUT_OF_MEMORY;
    if (s == VOX_OK)
        vox_pool_for(vox_ctx_pool(ctx), (int64_t[3]){nslab, 1, 1}, (int64_t[3]){1, 1, 1},
                     VOX_SCHED_STATIC, ws_label_task, &j);
    for (int64_t k = 0; s == VOX_OK && k < nslab; k++) {
        s = j.ids[k].s;
        j.base[k + 1] = j.base[k] + j.ids[k].n;
    }
    int64_t nid = s == VOX_OK ? j.base[nslab] : 0;
    if (s == VOX_OK) {
        fin = vox_alloc(ctx, (size_t)(nid + 1) * 4);
        num = vox_calloc(ctx, (size_t)(nid + 1), 4);
        s = fin && num ? VOX_OK : VOX_OUT_OF_MEMORY;
    }
    if (s == VOX_OK) {
        ws_resolve(&j, fin, nid);
        int64_t next = 0;
        for (int64_t g = 1; g <= nid; g++) { /* ids in C order of their first voxel */
            if (!num[fin[g]])
                num[fin[g]] = (uint32_t)++next;
        }
        for (int64_t g = 1; g <= nid; g++)
            fin[g] = num[fin[g]];
        fin[0] = 0;
        for (int64_t k = 0; k < nslab; k++)
            for (int64_t i = 0; i <= j.ids[k].n; i++)
                sizes[i ? fin[j.base[k] + i] : 0] += j.ids[k].size[i];
        j.fin = fin;
        if (nslab > 1)
            vox_pool_for(vox_ctx_pool(ctx), (int64_t[3]){nslab, 1, 1}, (int64_t[3]){1, 1, 1},
                         VOX_SCHED_STATIC, ws_relabel_task, &j);
        *nbasins = next;
    }
    for (int64_t k = 0; j.ids && k < nslab; k++) {
        vox_free(ctx, j.ids[k].target);
        vox_free(ctx, j.ids[k].size);
    }
    vox_free(ctx, j.ids);
    vox_free(ctx, j.base);
    vox_free(ctx, fin);
    vox_free(ctx, num);
    return s;
}

enum vox_status vox_seg_watershed(struct vox_ctx *ctx, const struct vox_tensor *q,
                                  const struct vox_seg_params *p, struct vox_tensor *labels_out,
                                  int64_t *nbasins_out, int64_t **sizes_out)
{
    struct ws_job j = {.q = q ? q->data : NULL};
    enum vox_status s = vox_seg_params_check(ctx, p);
    if (s == VOX_OK)
        s = seg_dims_from_q(ctx, q, &j.d);
    if (s != VOX_OK)
        return s;
    j.low = p->low;
    j.high = p->high;
    struct vox_tensor lab = {0};
    int64_t *sizes = NULL;
    s = vox_tensor_alloc(ctx, &lab, VOX_U32, 3, q->shape + 1);
    if (s != VOX_OK)
        return s;
    j.dir = vox_alloc(ctx, (size_t)j.d.n);
    if (!j.dir) {
        s = VOX_OUT_OF_MEMORY;
        goto fail;
    }
    j.m = lab.data;
    const int64_t rows[3] = {j.d.z * j.d.y, 1, 1}, tile[3] = {16, 1, 1};
    vox_pool_for(vox_ctx_pool(ctx), rows, tile, VOX_SCHED_STATIC, ws_max_rows, &j);
    vox_pool_for(vox_ctx_pool(ctx), rows, tile, VOX_SCHED_STATIC, ws_dir_rows, &j);
    ws_split_plateaus(j.dir, lab.data, &j.d);
    int64_t nplateaus = 0;
    s = ws_union_plateaus(ctx, j.dir, lab.data, &j.d, &nplateaus);
    if (s != VOX_OK)
        goto fail;
    sizes = vox_calloc(ctx, (size_t)nplateaus + 1, sizeof *sizes);
    if (!sizes) {
        s = VOX_OUT_OF_MEMORY;
        goto fail;
    }
    int64_t nbasins = 0;
    s = ws_label(ctx, j.dir, lab.data, &j.d, sizes, &nbasins);
    if (s != VOX_OK)
        goto fail;
    VOX_ASSERT(nbasins == nplateaus);
    vox_free(ctx, j.dir);
    *labels_out = lab;
    *nbasins_out = nbasins;
    *sizes_out = sizes;
    return VOX_OK;
fail:
    vox_free(ctx, j.dir);
    vox_free(ctx, sizes);
    vox_tensor_free(ctx, &lab);
    return s;
}
