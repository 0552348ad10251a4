/*
 * seg/segment.c: the whole pipeline, and cuts of a merge history.
 *
 *   aff ─quantize─▶ q ─watershed─▶ basins ─rag─▶ single linkage + dust ─relabel─▶ base
 *   basin graph ─contract─▶ segment graph ─agglomerate─▶ merge history ─cut(t)─▶ labels
 *
 * Peak memory for contiguous u8 input: the input (3 B/voxel), the label array (4), the
 * watershed's direction bytes (1) and, while building a graph with histograms, at most one
 * byte per boundary face (usually far less than 3 B/voxel). A quantized copy of float input,
 * and the input given to vox_segment_consume, are freed once the region graph is built:
 * the agglomeration holds only the labels and the graph.
 *
 * A cut applies the merges in history order while vox_merge_applies(score, t) holds and stops
 * at the first one it does not, so cuts nest; the final labels are numbered 1.. in order of
 * their smallest base id, which is the C order of their first voxel.
 */
#include "seg_internal.h"

#include <string.h>

enum vox_status vox_merge_history_map(struct vox_ctx *ctx, const struct vox_merge_history *h,
                                      double threshold, uint32_t **map_out,
                                      int64_t *nfinal_out)
{
    if (!h || h->nseg < 0 || h->nseg >= UINT32_MAX || h->n < 0)
        return vox_fail(ctx, VOX_INVALID_ARG, "merge history: missing or malformed");
    int64_t n = h->nseg;
    uint32_t *parent = vox_alloc(ctx, (size_t)(n + 1) * sizeof *parent);
    if (!parent)
        return VOX_OUT_OF_MEMORY;
    for (int64_t b = 0; b <= n; b++)
        parent[b] = (uint32_t)b;
    for (int64_t i = 0; i < h->n && vox_merge_applies(h->m[i].score, threshold); i++) {
        const struct vox_seg_merge *m = &h->m[i];
        if (m->a < 1 || m->a > n || m->b < 1 || m->b > n) {
            vox_free(ctx, parent);
            return vox_fail(ctx, VOX_INVALID_ARG,
                            "merge history entry %lld (%lld, %lld): ids must be in 1..%lld",
                            (long long)i, (long long)m->a, (long long)m->b, (long long)n);
        }
        uint32_t ra = seg_find(parent, (uint32_t)m->a), rb = seg_find(parent, (uint32_t)m->b);
        parent[ra > rb ? ra : rb] = ra < rb ? ra : rb; /* root = smallest id */
    }
    /* parent[b] <= b always, so one ascending pass points every id at its root, and a
     * second numbers the roots (each root precedes its members). */
    for (int64_t b = 1; b <= n; b++)
        parent[b] = parent[parent[b]];
    int64_t k = 0;
    for (int64_t b = 1; b <= n; b++)
        parent[b] = parent[b] == b ? (uint32_t)++k : parent[parent[b]];
    *map_out = parent;
    *nfinal_out = k;
    return VOX_OK;
}

struct cut_job {
    const uint32_t *in, *map;
    void *out;
    bool wide; /* u64 output */
};

/* out may be in itself (u32): each voxel is read, then written. */
static void cut_range(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct cut_job *j = arg;
    if (j->wide) {
        uint64_t *o = j->out;
        for (int64_t v = lo[0]; v < hi[0]; v++)
            o[v] = j->map[j->in[v]];
    } else {
        uint32_t *o = j->out;
        for (int64_t v = lo[0]; v < hi[0]; v++)
            o[v] = j->map[j->in[v]];
    }
}

enum vox_status vox_merge_history_cut(struct vox_ctx *ctx, const struct vox_merge_history *h,
                                      const struct vox_tensor *base, double threshold,
                                      struct vox_tensor *out, int64_t *nfinal_out)
{
    struct seg_dims d;
    enum vox_status s = seg_dims_from_labels(ctx, base, &d);
    if (s != VOX_OK)
        return s;
    if (!out || (out->dtype != VOX_U32 && out->dtype != VOX_U64) || out->rank != 3 ||
        !vox_tensor_is_contiguous(out) || memcmp(out->shape, base->shape, 3 * sizeof(int64_t)))
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "cut output: expected a contiguous u32 or u64 tensor of shape "
                        "(%lld, %lld, %lld)",
                        (long long)d.z, (long long)d.y, (long long)d.x);
    uint32_t *map;
    int64_t k;
    s = vox_merge_history_map(ctx, h, threshold, &map, &k);
    if (s != VOX_OK)
        return s;
    const uint32_t *in = base->data;
    int64_t bad = -1;
    for (int64_t v = 0; v < d.n && bad < 0; v++)
        bad = in[v] > h->nseg ? v : -1;
    if (bad >= 0) {
        vox_free(ctx, map);
        return vox_fail(ctx, VOX_INVALID_ARG, "base label %u at voxel %lld exceeds nseg %lld",
                        in[bad], (long long)bad, (long long)h->nseg);
    }
    struct cut_job j = {.in = in, .map = map, .out = out->data, .wide = out->dtype == VOX_U64};
    vox_pool_for(vox_ctx_pool(ctx), (int64_t[3]){d.n, 1, 1}, (int64_t[3]){1 << 16, 1, 1},
                 VOX_SCHED_STATIC, cut_range, &j);
    vox_free(ctx, map);
    if (nfinal_out)
        *nfinal_out = k;
    return VOX_OK;
}

/* Basins → size merge + dust through the full basin graph, contracted to the segments
 * (for more basins than the packed graph holds). */
static enum vox_status segment_full_graph(struct vox_ctx *ctx, const struct vox_tensor *q,
                                          const struct vox_seg_params *p, const int64_t *sizes,
                                          struct vox_seg_result *res, struct vox_rag *gs)
{
    int64_t *seg_sizes = NULL;
    uint32_t *map = NULL;
    struct vox_rag g = {0};
    enum vox_status s = vox_rag_build(ctx, &res->labels, res->nbasins, q,
                                      p->score == VOX_SEG_SCORE_QUANTILE, &g);
    if (s == VOX_OK)
        s = vox_seg_single_linkage(ctx, &g, sizes, p, &map, &res->nseg, &seg_sizes,
                                   &res->dend);
    if (s == VOX_OK) {
        vox_seg_relabel(ctx, &res->labels, map);
        s = vox_rag_contract(ctx, &g, map, res->nseg, gs);
    }
    vox_rag_fini(ctx, &g);
    vox_free(ctx, seg_sizes);
    vox_free(ctx, map);
    return s;
}

/* Basins → size merge + dust over the packed max-only basin graph, then the segments' graph
 * from the relabelled volume (few segments: small and quick). */
static enum vox_status segment_packed(struct vox_ctx *ctx, const struct vox_tensor *q,
                                      const struct vox_seg_params *p, int64_t *sizes,
                                      struct vox_seg_result *res, struct vox_rag *gs)
{
    int64_t *seg_sizes = NULL, ne = 0;
    uint32_t *map = NULL;
    uint64_t *e = NULL;
    enum vox_status s = seg_basin_edges(ctx, &res->labels, q, &e, &ne);
    if (s == VOX_OK)
        s = seg_single_linkage_packed(ctx, res->nbasins, e, ne, sizes, p, &map, &res->nseg,
                                      &seg_sizes, &res->dend);
    else
        vox_free(ctx, e);
    if (s == VOX_OK) {
        vox_seg_relabel(ctx, &res->labels, map);
        s = vox_rag_build(ctx, &res->labels, res->nseg, q, p->score == VOX_SEG_SCORE_QUANTILE,
                          gs);
    }
    vox_free(ctx, seg_sizes);
    vox_free(ctx, map);
    return s;
}

/* Watershed → basin graph → single linkage with dust → labels relabelled in place → the
 * segments' graph (histograms only for the quantile score) → agglomeration. `drop` (q's
 * tensor when the pipeline owns it) is freed once the graph is built. */
static enum vox_status segment_run(struct vox_ctx *ctx, const struct vox_tensor *q,
                                   struct vox_tensor *drop, const struct vox_seg_params *p,
                                   const struct vox_seg_observer *obs, struct vox_seg_result *res)
{
    int64_t *sizes = NULL;
    struct vox_rag gs = {0};
    double t0 = vox_time_now();
    enum vox_status s = vox_seg_watershed(ctx, q, p, &res->labels, &res->nbasins, &sizes);
    double t1 = vox_time_now();
    if (s == VOX_OK && obs)
        obs->stage_done(obs->arg, 0, res, t1 - t0);
    if (s == VOX_OK && p->nsize == 0 && p->dust <= 1) { /* no size merge, no dust: the basins */
        res->nseg = res->nbasins;
        res->dend = (struct vox_merge_history){.nseg = res->nbasins};
        s = vox_rag_build(ctx, &res->labels, res->nseg, q, p->score == VOX_SEG_SCORE_QUANTILE,
                          &gs);
    } else if (s == VOX_OK && res->nbasins <= SEG_PACKED_MAX_ID)
        s = segment_packed(ctx, q, p, sizes, res, &gs);
    else if (s == VOX_OK)
        s = segment_full_graph(ctx, q, p, sizes, res, &gs);
    vox_free(ctx, sizes);
    vox_tensor_free(ctx, drop); /* the affinities are dead once the graph holds their sums */
    double t2 = vox_time_now();
    if (s == VOX_OK && obs)
        obs->stage_done(obs->arg, 1, res, t2 - t1);
    if (s == VOX_OK)
        s = seg_agglomerate_owned(ctx, &gs, p, &res->merges);
    vox_rag_fini(ctx, &gs);
    res->seconds[0] = t1 - t0;
    res->seconds[1] = t2 - t1;
    res->seconds[2] = vox_time_now() - t2;
    if (s == VOX_OK && obs)
        obs->stage_done(obs->arg, 2, res, res->seconds[2]);
    vox_log(ctx, VOX_LOG_DEBUG,
            "segment: watershed %.3f s (%lld basins), graph and size merge %.3f s (%lld "
            "segments), agglomeration %.3f s (%lld merges)",
            res->seconds[0], (long long)res->nbasins, res->seconds[1], (long long)res->nseg,
            res->seconds[2], (long long)res->merges.n);
    return s;
}

/* vox_segment; `own` (aff itself, or NULL) is freed as soon as it is no longer needed. */
static enum vox_status segment(struct vox_ctx *ctx, const struct vox_tensor *aff,
                               struct vox_tensor *own, const struct vox_seg_params *p,
                               const struct vox_seg_observer *obs, struct vox_seg_result *res_out)
{
    struct vox_seg_result res = {0};
    struct vox_tensor qown = {0};
    const struct vox_tensor *q = aff;
    enum vox_status s = vox_seg_params_check(ctx, p);
    if (s == VOX_OK &&
        (!aff || aff->dtype != VOX_U8 || aff->rank != 4 || !vox_tensor_is_contiguous(aff))) {
        s = vox_seg_quantize(ctx, aff, &qown);
        vox_tensor_free(ctx, own);
        q = &qown;
        own = &qown;
    }
    if (s == VOX_OK)
        s = segment_run(ctx, q, own, p, obs, &res);
    vox_tensor_free(ctx, own);
    vox_tensor_free(ctx, &qown);
    if (s != VOX_OK) {
        vox_seg_result_fini(ctx, &res);
        return s;
    }
    *res_out = res;
    return VOX_OK;
}

enum vox_status vox_segment(struct vox_ctx *ctx, const struct vox_tensor *aff,
                            const struct vox_seg_params *p, struct vox_seg_result *res_out)
{
    return segment(ctx, aff, NULL, p, NULL, res_out);
}

enum vox_status vox_segment_consume(struct vox_ctx *ctx, struct vox_tensor *aff,
                                    const struct vox_seg_params *p,
                                    struct vox_seg_result *res_out)
{
    return segment(ctx, aff, aff, p, NULL, res_out);
}

enum vox_status vox_segment_observed(struct vox_ctx *ctx, struct vox_tensor *aff,
                                     const struct vox_seg_params *p,
                                     const struct vox_seg_observer *obs,
                                     struct vox_seg_result *res_out)
{
    return segment(ctx, aff, aff, p, obs, res_out);
}

void vox_seg_result_fini(struct vox_ctx *ctx, struct vox_seg_result *res)
{
    if (!res)
        return;
    vox_tensor_free(ctx, &res->labels);
    vox_merge_history_fini(ctx, &res->dend);
    vox_merge_history_fini(ctx, &res->merges);
    memset(res, 0, sizeof *res);
}
