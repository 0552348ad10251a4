/*
 * test_seg_real.c: the segmentation engine on real FIB-SEM data (gala's train and test crops,
 * shared/data/gala_fib_{train,test}.h5, found through $VOX_SHARED_DATA; skipped when absent).
 *
 * Each crop's /boundary_probability becomes affinities (vox_seg_boundary_to_aff), vox_segment
 * runs with the boundary-map defaults of docs/segmentation.md, and the merge history is scored
 * against /labels (gt 0, the one-voxel boundary, ignored) at the thresholds 0.00, 0.01, ..,
 * 1.00 in one pass (vox_metrics_history). The threshold with the best VOI on the train crop is
 * then applied to the test crop.
 *
 * Oracles: the scores at the chosen threshold recomputed from scratch on the cut volume equal
 * the history's; the test crop's VOI and adapted Rand error at the train-chosen threshold stay
 * at or below the values measured when the defaults were chosen, plus a margin, so they never
 * get worse. The quick tier scores the test crop at that threshold only.
 *
 * Full tier, the trained net (nets/fib_aff.net + nets/fib_aff.h5, docs/training.md "Real data"):
 * its affinities of the test crop (the raw mirror-padded by the net's margin as
 * scripts/pad_volume.py does, so the valid net's output has the crop's shape; the fast forward
 * pass, 10 sections at a time), segmented with the parameters and cut at the threshold chosen
 * on the train crop, score no worse than measured plus the margin, and better than the
 * boundary map above (the goal). The same numbers as `vox infer` + `vox segment` +
 * `vox eval` on the command line.
 */
#include "harness.h"
#include "vox/io.h"
#include "vox/metrics.h"
#include "vox/nn.h"
#include "vox/seg.h"

#include <unistd.h>

#define NTH 101       /* thresholds 0.00 .. 1.00 */
#define MARGIN 0.02   /* allowed drift above the measured scores */
#define TRAIN_TH 0.86 /* the train-best threshold, measured */
/* Measured on the test crop at TRAIN_TH (docs/segmentation.md, "Real data"). */
#define TEST_VOI_SPLIT 0.6344
#define TEST_VOI_MERGE 0.9495
#define TEST_ARAND 0.2591
/* nets/fib_aff.h5's segmentation parameters and threshold, chosen on the train crop, and its
 * scores on the test crop at that threshold (docs/training.md, "Real data"). */
#define NET_LOW 0
#define NET_HIGH 204
#define NET_SIZE 100
#define NET_DUST 10
#define NET_TH 0.78
#define NET_VOI_SPLIT 0.2847
#define NET_VOI_MERGE 0.4302
#define NET_ARAND 0.1042

/* The boundary-map defaults documented in docs/segmentation.md. */
static void real_params(struct vox_seg_params *p)
{
    vox_seg_params_defaults(p);
    p->low = 1;
    p->high = 230;
    p->nsize = 1;
    p->size[0] = (struct vox_seg_size_point){.aff = 2, .size = 100};
    p->dust = 10;
}

/* "$VOX_SHARED_DATA/name", or false (and a skip line) when the file is not there. */
static bool real_path(const char *name, char *path, size_t len)
{
    const char *dir = getenv("VOX_SHARED_DATA");
    snprintf(path, len, "%s/%s", dir ? dir : "", name);
    if (dir && access(path, R_OK) == 0)
        return true;
    printf("  skip: no %s under $VOX_SHARED_DATA\n", name);
    return false;
}

struct real_run {
    struct vox_tensor gt;
    struct vox_seg_result res;
    struct vox_contingency *base; /* base segments against gt */
};

static bool real_segment(struct vox_ctx *ctx, const char *file, struct real_run *r)
{
    char spec[1200];
    struct vox_tensor pb = {0}, aff = {0};
    struct vox_seg_params p;
    real_params(&p);
    memset(r, 0, sizeof *r);
    snprintf(spec, sizeof spec, "%s:/boundary_probability", file);
    CHECK_OK(vox_volume_load(ctx, spec, &pb, NULL));
    snprintf(spec, sizeof spec, "%s:/labels", file);
    CHECK_OK(vox_volume_load(ctx, spec, &r->gt, NULL));
    CHECK_OK(vox_seg_boundary_to_aff(ctx, &pb, false, &aff));
    CHECK_OK(vox_segment(ctx, &aff, &p, &r->res));
    CHECK_OK(vox_contingency_create(ctx, &r->base));
    CHECK_OK(vox_contingency_add(ctx, r->base, &r->res.labels, &r->gt));
    vox_tensor_free(ctx, &pb);
    vox_tensor_free(ctx, &aff);
    return vox_test_failures == 0;
}

static void real_fini(struct vox_ctx *ctx, struct real_run *r)
{
    vox_contingency_destroy(r->base);
    vox_seg_result_fini(ctx, &r->res);
    vox_tensor_free(ctx, &r->gt);
}

/* Scores after the merges a cut at each threshold th[i] applies: a merge of score s applies
 * while 1 - s < th (vox_merge_applies), i.e. -(1 - s) >= the next double above -th. */
static void real_sweep(struct vox_ctx *ctx, const struct real_run *r, int64_t nth,
                       const double *th, struct vox_metrics *m)
{
    int64_t n = r->res.merges.n;
    int64_t *a = vox_alloc(ctx, (size_t)(n + 1) * sizeof *a);
    int64_t *b = vox_alloc(ctx, (size_t)(n + 1) * sizeof *b);
    double *sc = vox_alloc(ctx, (size_t)(n + 1) * sizeof *sc);
    double *mt = vox_alloc(ctx, (size_t)(nth + 1) * sizeof *mt);
    CHECK(a && b && sc && mt);
    for (int64_t i = 0; a && b && sc && i < n; i++) {
        a[i] = r->res.merges.m[i].a;
        b[i] = r->res.merges.m[i].b;
        sc[i] = -(1.0 - r->res.merges.m[i].score);
    }
    for (int64_t i = 0; mt && i < nth; i++)
        mt[i] = nextafter(-th[i], INFINITY);
    if (a && b && sc && mt)
        CHECK_OK(vox_metrics_history(ctx, r->base, NULL, n, a, b, sc, nth, mt, m));
    vox_free(ctx, a);
    vox_free(ctx, b);
    vox_free(ctx, sc);
    vox_free(ctx, mt);
}

/* The scores of the volume cut at th, from scratch. */
static struct vox_metrics real_cut_score(struct vox_ctx *ctx, const struct real_run *r,
                                         double th)
{
    struct vox_tensor cut = {0};
    struct vox_contingency *t = NULL;
    struct vox_metrics m = {0};
    CHECK_OK(vox_tensor_alloc(ctx, &cut, VOX_U32, 3, r->res.labels.shape));
    CHECK_OK(vox_merge_history_cut(ctx, &r->res.merges, &r->res.labels, th, &cut, NULL));
    CHECK_OK(vox_contingency_create(ctx, &t));
    CHECK_OK(vox_contingency_add(ctx, t, &cut, &r->gt));
    CHECK_OK(vox_metrics_compute(ctx, t, NULL, &m));
    vox_contingency_destroy(t);
    vox_tensor_free(ctx, &cut);
    return m;
}

static void print_metrics(const char *what, double th, const struct vox_metrics *m)
{
    printf("  %s th %.2f: VOI %.4f (split %.4f, merge %.4f), adapted Rand error %.4f\n", what,
           th, m->voi_split + m->voi_merge, m->voi_split, m->voi_merge,
           m->adapted_rand_error);
}

static void check_bounds(const struct vox_metrics *m)
{
    CHECK(m->voi_split <= TEST_VOI_SPLIT + MARGIN);
    CHECK(m->voi_merge <= TEST_VOI_MERGE + MARGIN);
    CHECK(m->adapted_rand_error <= TEST_ARAND + MARGIN);
}

static int64_t best_voi(const struct vox_metrics *m, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (m[i].voi_split + m[i].voi_merge < m[best].voi_split + m[best].voi_merge)
            best = i;
    return best;
}

/* Full tier: sweep train, pick its best threshold, apply it to test. */
static void real_full(struct vox_ctx *ctx, const char *train, const char *test)
{
    double th[NTH];
    struct vox_metrics mtr[NTH], mte[NTH];
    struct real_run r;
    for (int i = 0; i < NTH; i++)
        th[i] = i / 100.0;
    if (real_segment(ctx, train, &r))
        real_sweep(ctx, &r, NTH, th, mtr);
    real_fini(ctx, &r);
    if (vox_test_failures)
        return;
    int64_t bt = best_voi(mtr, NTH);
    print_metrics("train best", th[bt], &mtr[bt]);
    CHECK(fabs(th[bt] - TRAIN_TH) < 1e-9);
    if (real_segment(ctx, test, &r)) {
        real_sweep(ctx, &r, NTH, th, mte);
        int64_t be = best_voi(mte, NTH);
        print_metrics("test best", th[be], &mte[be]);
        print_metrics("test at train threshold", th[bt], &mte[bt]);
        struct vox_metrics c = real_cut_score(ctx, &r, th[bt]);
        CHECK_NEAR(c.voi_split, mte[bt].voi_split, 1e-9);
        CHECK_NEAR(c.voi_merge, mte[bt].voi_merge, 1e-9);
        CHECK_NEAR(c.adapted_rand_error, mte[bt].adapted_rand_error, 1e-9);
        check_bounds(&mte[bt]);
    }
    real_fini(ctx, &r);
}

static void test_gala_fib(struct vox_ctx *ctx)
{
    char train[1024], test[1024];
    if (!real_path("gala_fib_train.h5", train, sizeof train) ||
        !real_path("gala_fib_test.h5", test, sizeof test))
        return;
    if (vox_test_full) {
        real_full(ctx, train, test);
        return;
    }
    struct real_run r;
    if (real_segment(ctx, test, &r)) {
        struct vox_metrics m = real_cut_score(ctx, &r, TRAIN_TH);
        print_metrics("test at train threshold", TRAIN_TH, &m);
        check_bounds(&m);
    }
    real_fini(ctx, &r);
}

/* ---- the trained net: nets/fib_aff.net with nets/fib_aff.h5 (docs/training.md, "Real data") */

#define NET_MARGIN 14 /* (field of view 29 - 1) / 2 on every axis */
#define NET_SLAB 10   /* output sections per forward pass */

/* nets/NAME beside this file's directory. */
static void shipped_path(const char *name, char *path, size_t len)
{
    const char *f = __FILE__, *slash = strrchr(f, '/');
    int dir = slash ? (int)(slash - f) : 0;
    snprintf(path, len, "%.*s%snets/%s", dir, f, dir ? "/../" : "../", name);
}

/* numpy's 'reflect' padding: index i in [-n + 1, 2n - 2] mirrored into [0, n). */
static int64_t reflect(int64_t i, int64_t n)
{
    return i < 0 ? -i : i >= n ? 2 * (n - 1) - i : i;
}

/* The net's input for output sections [z0, z0 + NET_SLAB): the raw (u8, scaled by 1/255 as
 * vox infer does) mirror-padded by NET_MARGIN, as scripts/pad_volume.py writes it. */
static void slab_input(const struct vox_tensor *raw, int64_t z0, struct vox_tensor *in)
{
    const uint8_t *r = raw->data;
    float *p = in->data;
    int64_t nz = raw->shape[0], ny = raw->shape[1], nx = raw->shape[2];
    for (int64_t z = 0; z < in->shape[2]; z++)
        for (int64_t y = 0; y < in->shape[3]; y++)
            for (int64_t x = 0; x < in->shape[4]; x++) {
                int64_t sz = reflect(z0 + z - NET_MARGIN, nz), sy = reflect(y - NET_MARGIN, ny);
                int64_t sx = reflect(x - NET_MARGIN, nx);
                *p++ = (float)r[(sz * ny + sy) * nx + sx] / 255.0f;
            }
}

/* Affinities (3, Z, Y, X) f32 of the trained net over the whole raw of `file`. */
static bool net_affinities(struct vox_ctx *ctx, const char *file, struct vox_tensor *aff)
{
    char path[1200];
    struct vox_net *net = NULL;
    struct vox_nn_weights *w = NULL;
    struct vox_nn_fast *fast = NULL;
    struct vox_tensor raw = {0}, in = {0};
    snprintf(path, sizeof path, "%s:/raw", file);
    CHECK_OK(vox_volume_load(ctx, path, &raw, NULL));
    shipped_path("fib_aff.net", path, sizeof path);
    CHECK_OK(vox_net_load(ctx, path, &net));
    shipped_path("fib_aff.h5", path, sizeof path);
    if (net)
        CHECK_OK(vox_nn_weights_load(ctx, net, path, &w));
    CHECK(raw.shape[0] % NET_SLAB == 0);
    if (vox_test_failures)
        goto done;
    int64_t patch[3] = {NET_SLAB + 2 * NET_MARGIN, raw.shape[1] + 2 * NET_MARGIN,
                        raw.shape[2] + 2 * NET_MARGIN};
    int64_t ishape[5] = {1, 1, patch[0], patch[1], patch[2]};
    int64_t ashape[4] = {3, raw.shape[0], raw.shape[1], raw.shape[2]};
    CHECK_OK(vox_nn_fast_create(ctx, net, w, patch, &fast));
    CHECK_OK(vox_tensor_alloc(ctx, &in, VOX_F32, 5, ishape));
    CHECK_OK(vox_tensor_alloc(ctx, aff, VOX_F32, 4, ashape));
    for (int64_t z0 = 0; vox_test_failures == 0 && z0 < raw.shape[0]; z0 += NET_SLAB) {
        slab_input(&raw, z0, &in);
        CHECK_OK(vox_nn_fast_forward(ctx, fast, &in));
        const struct vox_tensor *o = vox_nn_fast_output(fast, 0);
        /* the valid net maps the padded slab onto exactly the slab's sections */
        CHECK(o->shape[1] == 3 && o->shape[2] == NET_SLAB && o->shape[3] == raw.shape[1] &&
              o->shape[4] == raw.shape[2]);
        struct vox_tensor src = *o, dst;
        src.rank = 4;
        memmove(src.shape, o->shape + 1, 4 * sizeof *src.shape);
        memmove(src.strides, o->strides + 1, 4 * sizeof *src.strides);
        CHECK_OK(vox_tensor_view_axis(ctx, aff, 1, z0, z0 + NET_SLAB, &dst));
        if (vox_test_failures == 0)
            CHECK_OK(vox_tensor_copy(ctx, &dst, &src));
    }
done:
    vox_nn_fast_destroy(fast);
    vox_nn_weights_destroy(w);
    vox_net_destroy(net);
    vox_tensor_free(ctx, &in);
    vox_tensor_free(ctx, &raw);
    return vox_test_failures == 0;
}

/* The segmentation parameters and threshold chosen for the net on the train crop. */
static void net_params(struct vox_seg_params *p)
{
    vox_seg_params_defaults(p);
    p->low = NET_LOW;
    p->high = NET_HIGH;
    p->nsize = 1;
    p->size[0] = (struct vox_seg_size_point){.aff = NET_LOW + 1, .size = NET_SIZE};
    p->dust = NET_DUST;
}

/* Full tier: the net's affinities of the test crop, segmented and cut at the train-chosen
 * threshold, score no worse than measured (+ MARGIN) and better than the boundary map. */
static void test_gala_fib_net(struct vox_ctx *ctx)
{
    char test[1024];
    if (!vox_test_full || !real_path("gala_fib_test.h5", test, sizeof test))
        return;
    struct real_run r;
    struct vox_tensor aff = {0};
    struct vox_seg_params p;
    char spec[1200];
    memset(&r, 0, sizeof r);
    net_params(&p);
    snprintf(spec, sizeof spec, "%s:/labels", test);
    if (net_affinities(ctx, test, &aff)) {
        CHECK_OK(vox_volume_load(ctx, spec, &r.gt, NULL));
        CHECK_OK(vox_segment(ctx, &aff, &p, &r.res));
    }
    if (vox_test_failures == 0) {
        struct vox_metrics m = real_cut_score(ctx, &r, NET_TH);
        print_metrics("net, test at train threshold", NET_TH, &m);
        CHECK(m.voi_split <= NET_VOI_SPLIT + MARGIN);
        CHECK(m.voi_merge <= NET_VOI_MERGE + MARGIN);
        CHECK(m.adapted_rand_error <= NET_ARAND + MARGIN);
        CHECK(m.voi_split + m.voi_merge < TEST_VOI_SPLIT + TEST_VOI_MERGE);
        CHECK(m.adapted_rand_error < TEST_ARAND);
    }
    vox_seg_result_fini(ctx, &r.res);
    vox_tensor_free(ctx, &r.gt);
    vox_tensor_free(ctx, &aff);
}

VOX_TEST_MAIN(VOX_TEST(test_gala_fib), VOX_TEST(test_gala_fib_net))
