/*
 * seg/linkage.c: size-dependent single linkage of the watershed basin graph, then dust.
 *
 * Zlateski & Seung (arXiv 1505.00249), §1.8 of the reference note: edges are taken in
 * descending max affinity and an edge of affinity w > T_low joins its two clusters when the
 * smaller one holds fewer voxels than tau^-1(w). Sizes only grow, so no decision is revisited,
 * and only edges that join two clusters (the MST's) are recorded. The order is a counting
 * sort over the 256 quantized values, stable over the graph's (a, b) order, so ties are
 * broken by (a, b). tau^-1 is a piecewise-linear table evaluated once per quantized value.
 * Clusters are union-find trees whose root is their smallest basin id, which is also the
 * canonical order of their first voxels. Dust (clusters below p->dust voxels) becomes
 * background 0, as in the reference code.
 */
#include "seg_internal.h"

#include <string.h>

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

void vox_seg_size_limits(const struct vox_seg_params *p, int64_t lim[256])
{
    for (int w = 0; w < 256; w++) {
        lim[w] = 0;
        if (w <= p->low || p->nsize == 0 || w < p->size[0].aff)
            continue;
        int i = 0;
        while (i + 1 < p->nsize && p->size[i + 1].aff <= w)
            i++;
        const struct vox_seg_size_point *a = &p->size[i];
        if (i + 1 == p->nsize) {
            lim[w] = a->size;
            continue;
        }
        const struct vox_seg_size_point *b = a + 1;
        lim[w] = a->size + floor_div((b->size - a->size) * (w - a->aff), b->aff - a->aff);
    }
}

/* Edge indices in descending max, ties in graph order. */
static void order_by_max(const struct vox_rag *g, int64_t *order)
{
    int64_t start[257] = {0};
    for (int64_t i = 0; i < g->n; i++)
        start[255 - g->e[i].max + 1]++;
    for (int k = 0; k < 256; k++)
        start[k + 1] += start[k];
    for (int64_t i = 0; i < g->n; i++)
        order[start[255 - g->e[i].max]++] = i;
}

/* The edges in merge order: a graph with an order over it, or packed edges. */
struct sl_edges {
    const struct vox_rag *g;
    const int64_t *order;
    uint64_t *packed; /* a << 36 | b << 8 | max; the merges overwrite its front */
    int64_t n;
};

static inline void sl_edge(const struct sl_edges *E, int64_t i, uint32_t *a, uint32_t *b, int *w)
{
    if (E->packed) {
        uint64_t k = E->packed[i];
        *a = (uint32_t)(k >> 36);
        *b = (uint32_t)(k >> 8) & (uint32_t)SEG_PACKED_MAX_ID;
        *w = (int)(k & 0xFF);
        return;
    }
    const struct vox_rag_edge *e = &E->g->e[E->order[i]];
    *a = e->a;
    *b = e->b;
    *w = e->max;
}

/* Runs the merges; parent/size are indexed by basin id. With packed edges the k-th merge is
 * written packed (roots ra << 36 | rb << 8 | max) over edge k, which was already read;
 * otherwise it is appended to *dend. Returns the number of merges, or -1 when out of memory. */
/* Edges ahead whose ends sl_merge prefetches. */
#define SL_AHEAD 8

static int64_t sl_merge(struct vox_ctx *ctx, const struct sl_edges *E,
                        const struct vox_seg_params *p, uint32_t *parent, int64_t *size,
                        struct vox_merge_history *dend)
{
    int64_t lim[256], k = 0;
    vox_seg_size_limits(p, lim);
    for (int64_t i = 0; i < E->n; i++) {
        uint32_t a, b;
        int w;
        if (i + SL_AHEAD < E->n) { /* the ends' records, a few edges ahead (random reads) */
            sl_edge(E, i + SL_AHEAD, &a, &b, &w);
            __builtin_prefetch(&parent[a]);
            __builtin_prefetch(&parent[b]);
            __builtin_prefetch(&size[a]);
            __builtin_prefetch(&size[b]);
        }
        sl_edge(E, i, &a, &b, &w);
        if (w <= p->low)
            break;
        uint32_t ra = seg_find(parent, a), rb = seg_find(parent, b);
        if (ra == rb)
            continue;
        int64_t small = size[ra] < size[rb] ? size[ra] : size[rb];
        if (small >= lim[w])
            continue;
        uint32_t keep = ra < rb ? ra : rb, gone = ra < rb ? rb : ra;
        parent[gone] = keep;
        size[keep] += size[gone];
        if (E->packed)
            E->packed[k] = (uint64_t)ra << 36 | (uint64_t)rb << 8 | (uint64_t)w;
        else if (dend && seg_history_push(ctx, dend, ra, rb, keep, w / 255.0) != VOX_OK)
            return -1;
        k++;
    }
    return k;
}

/* Dust and canonical numbering: roots are the smallest ids of their clusters, size[] holds
 * each root's cluster size (size[0]: background voxels). Turns parent into the map; size[]
 * is overwritten (with each basin's new id). */
static enum vox_status sl_number(struct vox_ctx *ctx, int64_t n, const struct vox_seg_params *p,
                                 uint32_t *parent, int64_t *size, int64_t *nseg_out,
                                 int64_t **seg_sizes_out)
{
    int64_t k = 0;
    for (int64_t b = 1; b <= n; b++)
        k += parent[b] == b && size[b] >= p->dust;
    int64_t *seg_sizes = vox_calloc(ctx, (size_t)k + 1, sizeof *seg_sizes);
    if (!seg_sizes)
        return VOX_OUT_OF_MEMORY;
    seg_sizes[0] = size[0];
    k = 0;
    for (int64_t b = 1; b <= n; b++) { /* a root precedes its members */
        uint32_t r = seg_find(parent, (uint32_t)b);
        if (r == b) {
            int64_t id = size[b] >= p->dust ? ++k : 0;
            seg_sizes[id] += size[b];
            size[b] = id;
        } else {
            size[b] = size[r];
        }
    }
    uint32_t *map = parent; /* parent[b] becomes basin b's segment */
    map[0] = 0;
    for (int64_t b = 1; b <= n; b++)
        map[b] = (uint32_t)size[b];
    *nseg_out = k;
    *seg_sizes_out = seg_sizes;
    return VOX_OK;
}

/* The packed merges e[0..k) as a merge history: copied out compactly so that the edge array
 * can be freed (*e = NULL) before the 4x larger history is allocated. */
static enum vox_status sl_dend_unpack(struct vox_ctx *ctx, uint64_t **e, int64_t k, int64_t n,
                                      struct vox_merge_history *dend)
{
    uint64_t *m = vox_alloc(ctx, (size_t)(k + 1) * sizeof *m);
    if (!m)
        return VOX_OUT_OF_MEMORY;
    memcpy(m, *e, (size_t)k * sizeof *m);
    vox_free(ctx, *e);
    *e = NULL;
    *dend = (struct vox_merge_history){.nseg = n, .n = k, .cap = k};
    dend->m = vox_alloc(ctx, (size_t)(k + 1) * sizeof *dend->m);
    if (!dend->m) {
        vox_free(ctx, m);
        return VOX_OUT_OF_MEMORY;
    }
    for (int64_t i = 0; i < k; i++) {
        int64_t ra = (int64_t)(m[i] >> 36), rb = (int64_t)(m[i] >> 8) & SEG_PACKED_MAX_ID;
        dend->m[i] = (struct vox_seg_merge){.a = ra,
                                            .b = rb,
                                            .survivor = ra < rb ? ra : rb,
                                            .score = (double)(m[i] & 0xFF) / 255.0};
    }
    vox_free(ctx, m);
    return VOX_OK;
}

/* Merges, numbers and (with packed edges) unpacks the merge history; size[] is scratch
 * holding the basin sizes on entry. */
static enum vox_status sl_run(struct vox_ctx *ctx, int64_t n, struct sl_edges *E, int64_t *size,
                              const struct vox_seg_params *p, uint32_t **map_out, int64_t *nseg_out,
                              int64_t **seg_sizes_out, struct vox_merge_history *dend_out)
{
    uint32_t *parent = vox_alloc(ctx, (size_t)(n + 1) * sizeof *parent);
    struct vox_merge_history dend = {.nseg = n};
    int64_t *seg_sizes = NULL;
    enum vox_status s = VOX_OUT_OF_MEMORY;
    if (!parent)
        goto fail;
    for (int64_t b = 0; b <= n; b++)
        parent[b] = (uint32_t)b;
    int64_t k = sl_merge(ctx, E, p, parent, size, dend_out ? &dend : NULL);
    if (k < 0)
        goto fail;
    s = sl_number(ctx, n, p, parent, size, nseg_out, &seg_sizes);
    if (s == VOX_OK && E->packed && dend_out)
        s = sl_dend_unpack(ctx, &E->packed, k, n, &dend);
    if (s != VOX_OK)
        goto fail;
    *map_out = parent;
    *seg_sizes_out = seg_sizes;
    if (dend_out)
        *dend_out = dend;
    return VOX_OK;
fail:
    vox_free(ctx, parent);
    vox_free(ctx, seg_sizes);
    vox_merge_history_fini(ctx, &dend);
    return s;
}

enum vox_status vox_seg_single_linkage(struct vox_ctx *ctx, const struct vox_rag *rag,
                                       const int64_t *sizes, const struct vox_seg_params *p,
                                       uint32_t **map_out, int64_t *nseg_out,
                                       int64_t **seg_sizes_out, struct vox_merge_history *dend_out)
{
    enum vox_status s = vox_seg_params_check(ctx, p);
    if (s != VOX_OK)
        return s;
    if (!rag || !sizes)
        return vox_fail(ctx, VOX_INVALID_ARG, "single linkage: no region graph or sizes");
    int64_t *order = vox_alloc(ctx, (size_t)(rag->n + 1) * sizeof *order);
    int64_t *size = vox_alloc(ctx, (size_t)(rag->nseg + 1) * sizeof *size);
    if (order && size) {
        order_by_max(rag, order);
        memcpy(size, sizes, (size_t)(rag->nseg + 1) * sizeof *size);
        struct sl_edges E = {.g = rag, .order = order, .n = rag->n};
        s = sl_run(ctx, rag->nseg, &E, size, p, map_out, nseg_out, seg_sizes_out, dend_out);
    } else {
        s = VOX_OUT_OF_MEMORY;
    }
    vox_free(ctx, order);
    vox_free(ctx, size);
    return s;
}

enum vox_status seg_single_linkage_packed(struct vox_ctx *ctx, int64_t nbasins, uint64_t *e,
                                          int64_t ne, int64_t *sizes,
                                          const struct vox_seg_params *p, uint32_t **map_out,
                                          int64_t *nseg_out, int64_t **seg_sizes_out,
                                          struct vox_merge_history *dend_out)
{
    struct sl_edges E = {.packed = e, .n = ne};
    enum vox_status s =
        sl_run(ctx, nbasins, &E, sizes, p, map_out, nseg_out, seg_sizes_out, dend_out);
    vox_free(ctx, E.packed);
    return s;
}

struct relabel_job {
    uint32_t *lab;
    const uint32_t *map;
};

static void relabel_range(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct relabel_job *j = arg;
    for (int64_t v = lo[0]; v < hi[0]; v++)
        j->lab[v] = j->map[j->lab[v]];
}

void vox_seg_relabel(struct vox_ctx *ctx, struct vox_tensor *labels, const uint32_t *map)
{
    struct relabel_job j = {.lab = labels->data, .map = map};
    vox_pool_for(vox_ctx_pool(ctx), (int64_t[3]){vox_tensor_numel(labels), 1, 1},
                 (int64_t[3]){1 << 16, 1, 1}, VOX_SCHED_STATIC, relabel_range, &j);
}
