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
 * voxel, so they are acyclic and end on a maximum plateau. Passes A and B are the kernels of
 * seg/ws_kernels.h, which the chunked watershed (dist/chunk_ws.c) runs too.
 */
#include "ws_kernels.h"

#include <string.h>

enum {
    DIR_MASK = WS_DIR_MASK,
    DIR_SEED = WS_DIR_SEED, /* pass B..C: a resolved voxel with plateau neighbours */
    DIR_DONE = 0x40,        /* pass D2: labels[v] holds the final label */
    DIR_RESOLVED = WS_DIR_RESOLVED,
};

struct ws_job {
    struct ws_grid g;
    uint8_t *m; /* voxel maxima (the first d.n bytes of the label array) */
    uint8_t *dir;
};

/* Pass A over rows [lo, hi) (row = z * Y + y). */
static void ws_max_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct ws_job *j = arg;
    ws_max_rows(&j->g, j->m, lo[0], hi[0]);
}

/* Pass B over rows [lo, hi). */
static void ws_dir_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct ws_job *j = arg;
    const int64_t X = j->g.d.x;
    for (int64_t r = lo[0]; r < hi[0]; r++)
        ws_dir_row(&j->g, r, 0, X, j->dir + r * X, NULL);
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
    struct ws_job j = {.g.q = q ? q->data : NULL};
    enum vox_status s = vox_seg_params_check(ctx, p);
    if (s == VOX_OK)
        s = seg_dims_from_q(ctx, q, &j.g.d);
    if (s != VOX_OK)
        return s;
    j.g.low = p->low;
    j.g.high = p->high;
    struct vox_tensor lab = {0};
    int64_t *sizes = NULL;
    s = vox_tensor_alloc(ctx, &lab, VOX_U32, 3, q->shape + 1);
    if (s != VOX_OK)
        return s;
    j.dir = vox_alloc(ctx, (size_t)j.g.d.n);
    if (!j.dir) {
        s = VOX_OUT_OF_MEMORY;
        goto fail;
    }
    j.m = lab.data;
    j.g.m = j.m;
    const int64_t rows[3] = {j.g.d.z * j.g.d.y, 1, 1}, tile[3] = {16, 1, 1};
    vox_pool_for(vox_ctx_pool(ctx), rows, tile, VOX_SCHED_STATIC, ws_max_task, &j);
    vox_pool_for(vox_ctx_pool(ctx), rows, tile, VOX_SCHED_STATIC, ws_dir_task, &j);
    ws_split_plateaus(j.dir, lab.data, &j.g.d);
    int64_t nplateaus = 0;
    s = ws_union_plateaus(ctx, j.dir, lab.data, &j.g.d, &nplateaus);
    if (s != VOX_OK)
        goto fail;
    sizes = vox_calloc(ctx, (size_t)nplateaus + 1, sizeof *sizes);
    if (!sizes) {
        s = VOX_OUT_OF_MEMORY;
        goto fail;
    }
    int64_t nbasins = 0;
    s = ws_label(ctx, j.dir, lab.data, &j.g.d, sizes, &nbasins);
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
