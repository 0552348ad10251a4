/*
 * metrics_history.c: the scores after every merge of a merge history (or at a list of
 * thresholds), in one pass over the history.
 *
 * Key idea (as zwatershed and seung-lab/watershed sweep thresholds): the scores depend only on
 * the sums of metrics.c, and merging segments A and B changes them locally. For every gt
 * label g in the smaller row, n_Ag + n_Bg replaces n_Ag and n_Bg, so
 *   sum n^2 += 2 n_Ag n_Bg,   F_n += f(n_Ag + n_Bg) - f(n_Ag) - f(n_Bg),   f(x) = x log2 x,
 * and likewise sum s^2 and F_s for the two segment sizes; gt sizes do not change. Rows are
 * linked lists of cells, indexed by a hash map (row, gt) -> cell; the smaller row's cells are
 * moved into the larger (or added to its matching cells), so a merge costs O(smaller row) and
 * a whole history O(cells log cells). Segments are union-find sets over ids, so a merge may
 * name any id of a segment. Everything is allocated up front: after that nothing fails.
 */
#include "seg/metrics_internal.h"

#include <stdlib.h>

struct history {
    struct vox_cmap ids;   /* (segment id, 0) -> node + 1 */
    struct vox_cmap where; /* (root node, gt) -> cell + 1 */
    int64_t nodes, max_nodes;
    int64_t *parent, *head, *len, *size; /* per node; head/len/size valid at roots */
    uint64_t *gt;                        /* per cell */
    int64_t *count, *next;
    struct vox_metrics_sums sums;
};

static void history_fini(struct vox_ctx *ctx, struct history *h)
{
    vox_cmap_fini(ctx, &h->ids);
    vox_cmap_fini(ctx, &h->where);
    vox_free(ctx, h->parent);
    vox_free(ctx, h->gt);
    vox_free(ctx, h->count);
}

static int64_t new_node(struct history *h)
{
    int64_t v = h->nodes++;
    VOX_ASSERT(v < h->max_nodes);
    h->parent[v] = v;
    h->head[v] = -1;
    h->len[v] = h->size[v] = 0;
    return v;
}

static int64_t find_root(struct history *h, int64_t v)
{
    while (h->parent[v] != v) {
        h->parent[v] = h->parent[h->parent[v]];
        v = h->parent[v];
    }
    return v;
}

/* The node of segment id, created (empty) on first sight. Cannot fail: ids are reserved. */
static int64_t node_of(struct vox_ctx *ctx, struct history *h, uint64_t id)
{
    int64_t *v = vox_cmap_find(&h->ids, id, 0);
    if (v)
        return *v - 1;
    int64_t node = new_node(h);
    enum vox_status st = vox_cmap_add(ctx, &h->ids, id, 0, node + 1);
    VOX_ASSERT(st == VOX_OK);
    (void)st;
    return node;
}

/* Rows from the cells (sorted by seg), then the sums, which reorder the cells. */
static enum vox_status history_build(struct vox_ctx *ctx, struct history *h,
                                     struct vox_contingency_entry *cells, int64_t n,
                                     const struct vox_metrics_options *opt, int64_t merges)
{
    h->max_nodes = n + 2 * merges + 1;
    size_t nodes = (size_t)h->max_nodes, ncell = (size_t)(n > 0 ? n : 1);
    h->parent = vox_alloc(ctx, 4 * nodes * sizeof(int64_t));
    h->gt = vox_alloc(ctx, ncell * sizeof(uint64_t));
    h->count = vox_alloc(ctx, 2 * ncell * sizeof(int64_t));
    if (!h->parent || !h->gt || !h->count)
        goto oom;
    h->head = h->parent + nodes;
    h->len = h->head + nodes;
    h->size = h->len + nodes;
    h->next = h->count + ncell;
    if (vox_cmap_reserve(ctx, &h->ids, h->max_nodes) != VOX_OK ||
        vox_cmap_reserve(ctx, &h->where, n) != VOX_OK)
        goto oom;
    for (int64_t i = 0; i < n; i++) {
        if (cells[i].seg == 0 && opt->seg0 == VOX_SEG0_SINGLETONS)
            continue;
        int64_t v = node_of(ctx, h, cells[i].seg);
        h->gt[i] = cells[i].gt;
        h->count[i] = cells[i].count;
        h->next[i] = h->head[v];
        h->head[v] = i;
        h->len[v]++;
        h->size[v] += cells[i].count;
        vox_cmap_add(ctx, &h->where, (uint64_t)v, cells[i].gt, i + 1);
    }
    vox_metrics_sums_of(cells, n, opt, &h->sums);
    return VOX_OK;
oom:
    return vox_fail(ctx, VOX_OUT_OF_MEMORY, "out of memory for a merge history over %lld "
                    "contingency cells and %lld merges", (long long)n, (long long)merges);
}

static void add3(struct vox_ksum *k, int64_t x, int64_t y)
{
    vox_ksum_add(k, vox_metrics_xlogx(x + y));
    vox_ksum_add(k, -vox_metrics_xlogx(x));
    vox_ksum_add(k, -vox_metrics_xlogx(y));
}

/* Joins the segments holding ids a and b, moving the smaller row into the larger. */
static void history_merge(struct vox_ctx *ctx, struct history *h, int64_t a, int64_t b)
{
    int64_t ra = find_root(h, node_of(ctx, h, (uint64_t)a));
    int64_t rb = find_root(h, node_of(ctx, h, (uint64_t)b));
    if (ra == rb)
        return;
    int64_t big = h->len[ra] >= h->len[rb] ? ra : rb, small = big == ra ? rb : ra;
    struct vox_metrics_sums *s = &h->sums;
    for (int64_t e = h->head[small], nx; e >= 0; e = nx) {
        nx = h->next[e];
        vox_cmap_del(&h->where, (uint64_t)small, h->gt[e]);
        int64_t *f = vox_cmap_find(&h->where, (uint64_t)big, h->gt[e]);
        if (f) {
            int64_t old = h->count[*f - 1], c = h->count[e];
            s->snn += 2 * (unsigned __int128)old * (unsigned __int128)c;
            add3(&s->fn, old, c);
            h->count[*f - 1] = old + c;
        } else {
            h->next[e] = h->head[big];
            h->head[big] = e;
            h->len[big]++;
            vox_cmap_add(ctx, &h->where, (uint64_t)big, h->gt[e], e + 1);
        }
    }
    int64_t sa = h->size[big], sb = h->size[small];
    if (sa > 0 && sb > 0) {
        s->sss += 2 * (unsigned __int128)sa * (unsigned __int128)sb;
        add3(&s->fs, sa, sb);
        s->n_seg--;
    }
    h->size[big] = sa + sb;
    h->head[small] = -1;
    h->len[small] = h->size[small] = 0;
    h->parent[small] = big;
}

static enum vox_status check_history(struct vox_ctx *ctx, const struct vox_metrics_options *opt,
                                     int64_t n, const int64_t *a, const int64_t *b,
                                     const double *score, int64_t n_thr, const double *thr)
{
    if (n < 0 || (n > 0 && (!a || !b)))
        return vox_fail(ctx, VOX_INVALID_ARG, "merge history: %lld merges with ids %s",
                        (long long)n, n < 0 ? "(a negative count)" : "missing");
    if (thr && (n_thr < 0 || (n > 0 && !score)))
        return vox_fail(ctx, VOX_INVALID_ARG, "merge history: thresholds need a score per "
                        "merge and n_thresholds >= 0 (got %lld)", (long long)n_thr);
    for (int64_t i = 0; i < n; i++) {
        if (a[i] < 0 || b[i] < 0)
            return vox_fail(ctx, VOX_INVALID_ARG, "merge %lld: segment ids (%lld, %lld) must "
                            "be >= 0", (long long)i, (long long)a[i], (long long)b[i]);
        if ((a[i] == 0 || b[i] == 0) && opt->seg0 != VOX_SEG0_LABEL)
            return vox_fail(ctx, VOX_INVALID_ARG, "merge %lld: (%lld, %lld) involves segment "
                            "0, which the seg0 convention treats as background", (long long)i,
                            (long long)a[i], (long long)b[i]);
        if (score && isnan(score[i]))
            return vox_fail(ctx, VOX_INVALID_ARG, "merge %lld: score is NaN", (long long)i);
    }
    for (int64_t i = 0; thr && i < n_thr; i++)
        if (isnan(thr[i]))
            return vox_fail(ctx, VOX_INVALID_ARG, "threshold %lld is NaN", (long long)i);
    return VOX_OK;
}

struct stop {
    int64_t merges; /* how many merges precede it */
    int64_t index;  /* its position in the caller's threshold list */
};

static int cmp_stop(const void *pa, const void *pb)
{
    const struct stop *x = pa, *y = pb;
    if (x->merges != y->merges)
        return x->merges < y->merges ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* For each threshold, the length of the prefix before the first score below it: a binary
 * search on the running minimum of the scores (stored over `score_min`). */
static void stops_of(int64_t n, const double *score, double *score_min, int64_t n_thr,
                     const double *thr, struct stop *stops)
{
    for (int64_t i = 0; i < n; i++)
        score_min[i] = i == 0 || score[i] < score_min[i - 1] ? score[i] : score_min[i - 1];
    for (int64_t k = 0; k < n_thr; k++) {
        int64_t lo = 0, hi = n; /* first i with score_min[i] < thr[k] lies in [lo, hi] */
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if (score_min[mid] < thr[k])
                hi = mid;
            else
                lo = mid + 1;
        }
        stops[k] = (struct stop){lo, k};
    }
    qsort(stops, (size_t)n_thr, sizeof *stops, cmp_stop);
}

static const struct vox_metrics_options default_options;

enum vox_status vox_metrics_history(struct vox_ctx *ctx, const struct vox_contingency *base,
                                    const struct vox_metrics_options *opt, int64_t n,
                                    const int64_t *a, const int64_t *b, const double *score,
                                    int64_t n_thresholds, const double *thresholds,
                                    struct vox_metrics *m_out)
{
    opt = opt ? opt : &default_options;
    enum vox_status st = check_history(ctx, opt, n, a, b, score, n_thresholds, thresholds);
    if (st != VOX_OK)
        return st;
    struct history h = {0};
    struct vox_contingency_entry *cells = NULL;
    struct stop *stops = NULL;
    double *score_min = NULL;
    int64_t ncell;
    st = vox_metrics_cells(ctx, base, opt, &cells, &ncell);
    if (st != VOX_OK)
        return st;
    if (thresholds) {
        stops = vox_alloc(ctx, (size_t)(n_thresholds + 1) * sizeof *stops);
        score_min = vox_alloc(ctx, (size_t)(n + 1) * sizeof *score_min);
        if (!stops || !score_min) {
            st = vox_fail(ctx, VOX_OUT_OF_MEMORY, "out of memory for %lld thresholds",
                          (long long)n_thresholds);
            goto done;
        }
        stops_of(n, score, score_min, n_thresholds, thresholds, stops);
    }
    st = history_build(ctx, &h, cells, ncell, opt, n);
    if (st != VOX_OK)
        goto done;
    int64_t applied = 0;
    if (!thresholds) {
        vox_metrics_finish(&h.sums, opt, &m_out[0]);
        for (; applied < n; applied++) {
            history_merge(ctx, &h, a[applied], b[applied]);
            vox_metrics_finish(&h.sums, opt, &m_out[applied + 1]);
        }
    }
    for (int64_t k = 0; thresholds && k < n_thresholds; k++) {
        for (; applied < stops[k].merges; applied++)
            history_merge(ctx, &h, a[applied], b[applied]);
        vox_metrics_finish(&h.sums, opt, &m_out[stops[k].index]);
    }
done:
    history_fini(ctx, &h);
    vox_free(ctx, stops);
    vox_free(ctx, score_min);
    vox_free(ctx, cells);
    return st;
}
