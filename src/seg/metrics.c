/*
 * metrics.c: scores from a contingency table: Rand split/merge, the adapted Rand error
 * (Arganda-Carreras et al. 2015, SNEMI3D; the form of scikit-image's adapted_rand_error), the
 * variation of information split/merge in bits (Meila 2007), and the labels that contribute
 * most to each VOI term.
 *
 * Key idea: every score is a function of a few sums over the table, with s_i the segment
 * sizes, t_j the gt sizes and N the voxels counted:
 *   sum n^2, sum s^2, sum t^2          exact, in 128-bit integers
 *   F_n = sum n log2 n, F_s, F_t       double, compensated, summed in label order
 * and, since H(S,T) = log2 N - F_n/N (likewise H(S), H(T)),
 *   voi_split = H(S|T) = (F_t - F_n) / N,   voi_merge = H(T|S) = (F_s - F_n) / N.
 * The same sums are what metrics_history.c updates merge by merge, so a history's scores and
 * a recomputation from scratch agree to rounding. The conventions for label 0 (see
 * vox/metrics.h) only choose which cells enter the sums.
 */
#include "seg/metrics_internal.h"

#include <stdlib.h>

double vox_metrics_xlogx(int64_t x)
{
    return x > 1 ? (double)x * log2((double)x) : 0.0;
}

static const struct vox_metrics_options default_options;

static bool singleton(const struct vox_contingency_entry *c, const struct vox_metrics_options *o)
{
    return c->seg == 0 && o->seg0 == VOX_SEG0_SINGLETONS;
}

enum vox_status vox_metrics_cells(struct vox_ctx *ctx, const struct vox_contingency *t,
                                  const struct vox_metrics_options *opt,
                                  struct vox_contingency_entry **cells_out, int64_t *n_out)
{
    if ((unsigned)opt->seg0 > (unsigned)VOX_SEG0_IGNORE)
        return vox_fail(ctx, VOX_INVALID_ARG, "metrics option seg0 = %d: expected "
                        "VOX_SEG0_LABEL, VOX_SEG0_SINGLETONS or VOX_SEG0_IGNORE", (int)opt->seg0);
    struct vox_contingency_entry *cells;
    int64_t n;
    enum vox_status st = vox_contingency_export(ctx, t, &cells, &n);
    if (st != VOX_OK)
        return st;
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        if (cells[i].gt == 0 && !opt->keep_gt0)
            continue;
        if (cells[i].seg == 0 && opt->seg0 == VOX_SEG0_IGNORE)
            continue;
        cells[k++] = cells[i];
    }
    *cells_out = cells;
    *n_out = k;
    return VOX_OK;
}

void vox_metrics_sums_of(struct vox_contingency_entry *cells, int64_t n,
                         const struct vox_metrics_options *opt, struct vox_metrics_sums *s)
{
    *s = (struct vox_metrics_sums){0};
    for (int64_t i = 0, e; i < n; i = e) {
        int64_t size = 0;
        for (e = i; e < n && cells[e].seg == cells[i].seg; e++) {
            int64_t c = cells[e].count;
            size += c;
            if (singleton(&cells[e], opt)) { /* c segments of one voxel */
                s->snn += (unsigned __int128)c;
                s->sss += (unsigned __int128)c;
                s->n_seg += c;
            } else {
                s->snn += (unsigned __int128)c * (unsigned __int128)c;
                vox_ksum_add(&s->fn, vox_metrics_xlogx(c));
            }
        }
        s->voxels += size;
        if (!singleton(&cells[i], opt)) {
            s->sss += (unsigned __int128)size * (unsigned __int128)size;
            vox_ksum_add(&s->fs, vox_metrics_xlogx(size));
            s->n_seg++;
        }
    }
    vox_metrics_sort_gt(cells, n);
    for (int64_t i = 0, e; i < n; i = e) {
        int64_t size = 0;
        for (e = i; e < n && cells[e].gt == cells[i].gt; e++)
            size += cells[e].count;
        s->stt += (unsigned __int128)size * (unsigned __int128)size;
        vox_ksum_add(&s->ft, vox_metrics_xlogx(size));
        s->n_gt++;
    }
}

/* num / den, or 1 when there are no pairs at all. */
static double ratio_or_one(unsigned __int128 num, unsigned __int128 den)
{
    return den ? (double)num / (double)den : 1.0;
}

void vox_metrics_finish(const struct vox_metrics_sums *s, const struct vox_metrics_options *opt,
                        struct vox_metrics *m)
{
    *m = (struct vox_metrics){.voxels = s->voxels, .n_seg = s->n_seg, .n_gt = s->n_gt,
                              .rand_split = 1.0, .rand_merge = 1.0};
    if (s->voxels == 0)
        return;
    unsigned __int128 self = opt->rand_squares ? 0 : (unsigned __int128)s->voxels;
    unsigned __int128 num = s->snn - self, ds = s->sss - self, dt = s->stt - self;
    m->rand_split = ratio_or_one(num, dt);
    m->rand_merge = ratio_or_one(num, ds);
    m->adapted_rand_error = ds + dt ? 1.0 - 2.0 * ((double)num / (double)(ds + dt)) : 0.0;
    double n = (double)s->voxels, fn = vox_ksum_value(&s->fn);
    double split = (vox_ksum_value(&s->ft) - fn) / n;
    double merge = (vox_ksum_value(&s->fs) - fn) / n;
    m->voi_split = split > 0 ? split : 0.0;   /* clamp rounding below 0 */
    m->voi_merge = merge > 0 ? merge : 0.0;
}

enum vox_status vox_metrics_compute(struct vox_ctx *ctx, const struct vox_contingency *t,
                                    const struct vox_metrics_options *opt,
                                    struct vox_metrics *m_out)
{
    *m_out = (struct vox_metrics){0};
    opt = opt ? opt : &default_options;
    struct vox_contingency_entry *cells;
    int64_t n;
    enum vox_status st = vox_metrics_cells(ctx, t, opt, &cells, &n);
    if (st != VOX_OK)
        return st;
    struct vox_metrics_sums s;
    vox_metrics_sums_of(cells, n, opt, &s);
    vox_metrics_finish(&s, opt, m_out);
    vox_free(ctx, cells);
    return VOX_OK;
}

/* ---- the largest errors ------------------------------------------------------------------ */

static int cmp_error(const void *pa, const void *pb)
{
    const struct vox_metrics_error *a = pa, *b = pb;
    if (a->voi != b->voi)
        return a->voi > b->voi ? -1 : 1;
    return a->label < b->label ? -1 : a->label > b->label;
}

/* Per label of the current sort key (gt when by_gt, else seg): its share of the VOI term,
 * (x log2 x of its size - sum of n log2 n over its cells) / N. Keeps the k largest nonzero. */
static int64_t shares(struct vox_contingency_entry *cells, int64_t n, bool by_gt, double voxels,
                      const struct vox_metrics_options *opt, struct vox_metrics_error *tmp,
                      int64_t k, struct vox_metrics_error *out)
{
    int64_t m = 0;
    for (int64_t i = 0, e; i < n; i = e) {
        uint64_t label = by_gt ? cells[i].gt : cells[i].seg;
        struct vox_metrics_error r = {.label = label};
        struct vox_ksum f = {0};
        for (e = i; e < n && (by_gt ? cells[e].gt : cells[e].seg) == label; e++) {
            r.voxels += cells[e].count;
            bool one = singleton(&cells[e], opt);
            r.pieces += one ? cells[e].count : 1;
            vox_ksum_add(&f, one ? 0.0 : vox_metrics_xlogx(cells[e].count));
        }
        if (!by_gt && singleton(&cells[i], opt))
            continue;
        r.voi = (vox_metrics_xlogx(r.voxels) - vox_ksum_value(&f)) / voxels;
        if (r.voi > 0)
            tmp[m++] = r;
    }
    qsort(tmp, (size_t)m, sizeof *tmp, cmp_error);
    int64_t kept = m < k ? m : k;
    for (int64_t i = 0; out && i < kept; i++)
        out[i] = tmp[i];
    return out ? kept : 0;
}

enum vox_status vox_metrics_top_errors(struct vox_ctx *ctx, const struct vox_contingency *t,
                                       const struct vox_metrics_options *opt, int64_t k,
                                       struct vox_metrics_error *splits_out,
                                       int64_t *n_splits_out,
                                       struct vox_metrics_error *merges_out,
                                       int64_t *n_merges_out)
{
    *n_splits_out = 0;
    *n_merges_out = 0;
    if (k < 0)
        return vox_fail(ctx, VOX_INVALID_ARG, "top errors: k = %lld, expected >= 0",
                        (long long)k);
    opt = opt ? opt : &default_options;
    struct vox_contingency_entry *cells;
    int64_t n;
    enum vox_status st = vox_metrics_cells(ctx, t, opt, &cells, &n);
    if (st != VOX_OK)
        return st;
    struct vox_metrics_error *tmp = vox_alloc(ctx, (size_t)(n > 0 ? n : 1) * sizeof *tmp);
    if (!tmp) {
        vox_free(ctx, cells);
        return vox_fail(ctx, VOX_OUT_OF_MEMORY, "out of memory ranking %lld labels",
                        (long long)n);
    }
    int64_t voxels = 0;
    for (int64_t i = 0; i < n; i++)
        voxels += cells[i].count;
    *n_merges_out = shares(cells, n, false, (double)voxels, opt, tmp, k, merges_out);
    vox_metrics_sort_gt(cells, n);
    *n_splits_out = shares(cells, n, true, (double)voxels, opt, tmp, k, splits_out);
    vox_free(ctx, tmp);
    vox_free(ctx, cells);
    return VOX_OK;
}
