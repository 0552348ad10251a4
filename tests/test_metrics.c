/*
 * test_metrics.c: the contingency table and the segmentation metrics.
 *
 * Oracles: values computed by hand (written out next to each case), a brute-force scorer that
 * counts voxel pairs one by one and sums probabilities directly, identities (block-merged
 * table == whole-volume table, in any order, through any strides and dtypes; a merge
 * history's scores == scores of the relabelled volume recomputed from scratch).
 */
#include "harness.h"
#include "vox/metrics.h"

#define TOL 1e-12

/* A (1, 1, n) u64 tensor viewing `v`. */
static struct vox_tensor row_u64(uint64_t *v, int64_t n)
{
    return (struct vox_tensor){.dtype = VOX_U64, .rank = 3, .shape = {1, 1, n},
                               .strides = {n, n, 1}, .data = v};
}

static struct vox_contingency *table_of(struct vox_ctx *ctx, uint64_t *seg, uint64_t *gt,
                                        int64_t n)
{
    struct vox_contingency *t = NULL;
    CHECK_OK(vox_contingency_create(ctx, &t));
    struct vox_tensor s = row_u64(seg, n), g = row_u64(gt, n);
    CHECK_OK(vox_contingency_add(ctx, t, &s, &g));
    return t;
}

static struct vox_metrics score(struct vox_ctx *ctx, uint64_t *seg, uint64_t *gt, int64_t n,
                                const struct vox_metrics_options *opt)
{
    struct vox_contingency *t = table_of(ctx, seg, gt, n);
    struct vox_metrics m;
    CHECK_OK(vox_metrics_compute(ctx, t, opt, &m));
    vox_contingency_destroy(t);
    return m;
}

static void check_metrics(const struct vox_metrics *m, double split, double merge, double are,
                          double vs, double vm)
{
    CHECK_NEAR(m->rand_split, split, TOL);
    CHECK_NEAR(m->rand_merge, merge, TOL);
    CHECK_NEAR(m->adapted_rand_error, are, TOL);
    CHECK_NEAR(m->voi_split, vs, TOL);
    CHECK_NEAR(m->voi_merge, vm, TOL);
}

/* gt = [1 1 1 1], seg = [1 1 2 2]: one gt object split in two halves.
 *   pairs: sum n(n-1) = 2 + 2 = 4, sum t(t-1) = 12, sum s(s-1) = 2 + 2 = 4
 *   rand_split = 4/12 = 1/3, rand_merge = 4/4 = 1, ARE = 1 - 2*4/(4+12) = 1/2
 *   VOI split = H(S|T) = 1 bit (each voxel is in either half, 50/50), VOI merge = 0
 *   squares: sum n^2 = 8, sum t^2 = 16, sum s^2 = 8: split 1/2, merge 1, ARE = 1 - 16/24. */
static void test_hand_split(struct vox_ctx *ctx)
{
    uint64_t seg[] = {1, 1, 2, 2}, gt[] = {1, 1, 1, 1};
    struct vox_metrics m = score(ctx, seg, gt, 4, NULL);
    check_metrics(&m, 1.0 / 3, 1.0, 0.5, 1.0, 0.0);
    CHECK(m.voxels == 4 && m.n_seg == 2 && m.n_gt == 1);
    struct vox_metrics_options sq = {.rand_squares = true};
    m = score(ctx, seg, gt, 4, &sq);
    check_metrics(&m, 0.5, 1.0, 1.0 - 16.0 / 24, 1.0, 0.0);
}

/* The mirror image: seg = [1 1 1 1], gt = [1 1 2 2]: two gt objects merged.
 *   rand_split = 4/4 = 1, rand_merge = 4/12 = 1/3, ARE = 1/2, VOI split 0, VOI merge 1 bit. */
static void test_hand_merge(struct vox_ctx *ctx)
{
    uint64_t seg[] = {1, 1, 1, 1}, gt[] = {1, 1, 2, 2};
    struct vox_metrics m = score(ctx, seg, gt, 4, NULL);
    check_metrics(&m, 1.0, 1.0 / 3, 0.5, 0.0, 1.0);
}

/* Perfect agreement up to renaming: every error exactly 0, both Rand scores exactly 1. */
static void test_hand_perfect(struct vox_ctx *ctx)
{
    uint64_t seg[] = {7, 7, 9, 9, 9, 4}, gt[] = {1, 1, 2, 2, 2, 3};
    struct vox_metrics m = score(ctx, seg, gt, 6, NULL);
    CHECK(m.rand_split == 1.0 && m.rand_merge == 1.0 && m.adapted_rand_error == 0.0);
    CHECK(m.voi_split == 0.0 && m.voi_merge == 0.0);
    CHECK(m.n_seg == 3 && m.n_gt == 3);
}

/* gt = [1 1 1 2 2 2], seg = [5 5 6 6 6 6]: cells (5,1)=2, (6,1)=1, (6,2)=3; N = 6.
 *   sum n(n-1) = 2 + 0 + 6 = 8, sum t(t-1) = 6 + 6 = 12, sum s(s-1) = 2 + 12 = 14
 *   rand_split = 8/12 = 2/3, rand_merge = 8/14 = 4/7, ARE = 1 - 16/26 = 5/13
 *   VOI split = 3/6 * H(2/3, 1/3) = (log2 3 - 2/3) / 2           (gt 2 is whole)
 *   VOI merge = 4/6 * H(1/4, 3/4) = (2/3) (2 - (3/4) log2 3)     (seg 5 is pure)
 * Largest errors: gt 1 (3 voxels, 2 pieces) carries all of VOI split, seg 6 (4 voxels,
 * 2 pieces) all of VOI merge; gt 2 and seg 5 have share 0 and are not listed. */
static void test_hand_asymmetric(struct vox_ctx *ctx)
{
    uint64_t seg[] = {5, 5, 6, 6, 6, 6}, gt[] = {1, 1, 1, 2, 2, 2};
    double vs = (log2(3.0) - 2.0 / 3) / 2, vm = (2.0 / 3) * (2 - 0.75 * log2(3.0));
    struct vox_metrics m = score(ctx, seg, gt, 6, NULL);
    check_metrics(&m, 2.0 / 3, 4.0 / 7, 5.0 / 13, vs, vm);

    struct vox_contingency *t = table_of(ctx, seg, gt, 6);
    struct vox_metrics_error sp[4], me[4];
    int64_t nsp, nme;
    CHECK_OK(vox_metrics_top_errors(ctx, t, NULL, 4, sp, &nsp, me, &nme));
    CHECK(nsp == 1 && nme == 1);
    CHECK(sp[0].label == 1 && sp[0].voxels == 3 && sp[0].pieces == 2);
    CHECK(me[0].label == 6 && me[0].voxels == 4 && me[0].pieces == 2);
    CHECK_NEAR(sp[0].voi, vs, TOL);
    CHECK_NEAR(me[0].voi, vm, TOL);
    CHECK_OK(vox_metrics_top_errors(ctx, t, NULL, 0, sp, &nsp, me, &nme));
    CHECK(nsp == 0 && nme == 0);
    CHECK_STATUS(vox_metrics_top_errors(ctx, t, NULL, -1, sp, &nsp, me, &nme), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("k = -1");
    vox_contingency_destroy(t);
}

/* gt = [0 0 1 1 1 1], seg = [3 0 0 0 4 4]: cells (3,0)=1, (0,0)=1, (0,1)=2, (4,1)=2.
 * default (gt 0 ignored, seg 0 a label): cells (0,1)=2, (4,1)=2: the 2x2 split above:
 *   split 1/3, merge 1, ARE 1/2, VOI split 1, merge 0; n_seg 2, n_gt 1.
 * seg 0 singletons: pieces of gt 1 are {.}, {.}, {4 4}: sum n(n-1) = 2, sum t(t-1) = 12,
 *   sum s(s-1) = 2: split 1/6, merge 1, ARE = 1 - 4/14 = 5/7;
 *   VOI split = H(1/4, 1/4, 1/2) = 1.5 bits, merge 0; n_seg 3.
 * seg 0 ignored: only (4,1)=2: perfect, N = 2.
 * gt 0 kept, seg 0 a label: N = 6, t = {gt0: 2, gt1: 4}, s = {3: 1, 0: 3, 4: 2};
 *   sum n(n-1) = 2 + 2 = 4, sum t(t-1) = 2 + 12 = 14, sum s(s-1) = 6 + 2 = 8:
 *   split 4/14, merge 4/8, ARE = 1 - 8/22 = 7/11;
 *   F_n = 2 + 2, F_t = 2 + 8, F_s = 3 log2 3 + 2: VOI split = 6/6 = 1,
 *   VOI merge = (3 log2 3 - 2) / 6. */
static void test_label0_conventions(struct vox_ctx *ctx)
{
    uint64_t seg[] = {3, 0, 0, 0, 4, 4}, gt[] = {0, 0, 1, 1, 1, 1};
    struct vox_metrics m = score(ctx, seg, gt, 6, NULL);
    check_metrics(&m, 1.0 / 3, 1.0, 0.5, 1.0, 0.0);
    CHECK(m.voxels == 4 && m.n_seg == 2 && m.n_gt == 1);

    struct vox_metrics_options single = {.seg0 = VOX_SEG0_SINGLETONS};
    m = score(ctx, seg, gt, 6, &single);
    check_metrics(&m, 1.0 / 6, 1.0, 5.0 / 7, 1.5, 0.0);
    CHECK(m.voxels == 4 && m.n_seg == 3);

    struct vox_metrics_options ignore = {.seg0 = VOX_SEG0_IGNORE};
    m = score(ctx, seg, gt, 6, &ignore);
    check_metrics(&m, 1.0, 1.0, 0.0, 0.0, 0.0);
    CHECK(m.voxels == 2 && m.n_seg == 1);

    struct vox_metrics_options keep = {.keep_gt0 = true};
    m = score(ctx, seg, gt, 6, &keep);
    check_metrics(&m, 4.0 / 14, 0.5, 7.0 / 11, 1.0, (3 * log2(3.0) - 2) / 6);
    CHECK(m.voxels == 6 && m.n_seg == 3 && m.n_gt == 2);

    struct vox_metrics_options bad = {.seg0 = (enum vox_seg0)7};
    struct vox_contingency *t = table_of(ctx, seg, gt, 6);
    CHECK_STATUS(vox_metrics_compute(ctx, t, &bad, &m), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("seg0 = 7");
    vox_contingency_destroy(t);
}

/* Nothing counted (all gt 0): no errors, Rand scores 1. */
static void test_empty(struct vox_ctx *ctx)
{
    uint64_t seg[] = {1, 2, 3}, gt[] = {0, 0, 0};
    struct vox_metrics m = score(ctx, seg, gt, 3, NULL);
    check_metrics(&m, 1.0, 1.0, 0.0, 0.0, 0.0);
    CHECK(m.voxels == 0 && m.n_seg == 0 && m.n_gt == 0);
}

/* ---- brute force ------------------------------------------------------------------------- */

/* The scores by definition: pairs of voxels counted one by one, entropies from probabilities.
 * Applies the conventions by editing the labels: dropped voxels are skipped, seg-0 singletons
 * get labels of their own. */
static struct vox_metrics brute(const uint64_t *seg0, const uint64_t *gt0, int64_t n,
                                const struct vox_metrics_options *o)
{
    uint64_t *s = malloc((size_t)n * sizeof *s), *g = malloc((size_t)n * sizeof *g);
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        if ((gt0[i] == 0 && !o->keep_gt0) || (seg0[i] == 0 && o->seg0 == VOX_SEG0_IGNORE))
            continue;
        s[k] = seg0[i] == 0 && o->seg0 == VOX_SEG0_SINGLETONS ? (1ull << 40) + (uint64_t)i
                                                                : seg0[i];
        g[k++] = gt0[i];
    }
    double both = 0, ss = 0, tt = 0, hst = 0, hs = 0, ht = 0;
    for (int64_t i = 0; i < k; i++) {
        int64_t cs = 0, ct = 0, cst = 0;
        for (int64_t j = 0; j < k; j++) {
            cs += s[j] == s[i];
            ct += g[j] == g[i];
            cst += s[j] == s[i] && g[j] == g[i];
        }
        /* ordered pairs (i, j), j != i (or j == i with squares) */
        int self = o->rand_squares ? 0 : 1;
        both += (double)(cst - self), ss += (double)(cs - self), tt += (double)(ct - self);
        /* -sum_v (1/N) log2 p(label of v) is the entropy */
        hst -= log2((double)cst / (double)k) / (double)k;
        hs -= log2((double)cs / (double)k) / (double)k;
        ht -= log2((double)ct / (double)k) / (double)k;
    }
    struct vox_metrics m = {.voxels = k, .rand_split = tt ? both / tt : 1,
                            .rand_merge = ss ? both / ss : 1,
                            .adapted_rand_error = ss + tt ? 1 - 2 * both / (ss + tt) : 0,
                            .voi_split = k ? hst - ht : 0, .voi_merge = k ? hst - hs : 0};
    free(s);
    free(g);
    return m;
}

static void fill_random(uint64_t *v, int64_t n, uint64_t labels, uint64_t *rng)
{
    for (int64_t i = 0; i < n; i++)
        v[i] = vox_test_rand(rng) % labels;
}

static void test_brute_force(struct vox_ctx *ctx)
{
    const struct vox_metrics_options opts[] = {
        {0}, {.keep_gt0 = true}, {.seg0 = VOX_SEG0_SINGLETONS}, {.seg0 = VOX_SEG0_IGNORE},
        {.rand_squares = true}, {.keep_gt0 = true, .seg0 = VOX_SEG0_SINGLETONS}};
    uint64_t rng = 42, seg[300], gt[300];
    int rounds = vox_test_full ? 60 : 8;
    for (int r = 0; r < rounds; r++) {
        int64_t n = 20 + (int64_t)(vox_test_rand(&rng) % 280);
        fill_random(seg, n, 2 + vox_test_rand(&rng) % 12, &rng);
        fill_random(gt, n, 2 + vox_test_rand(&rng) % 12, &rng);
        for (size_t o = 0; o < sizeof opts / sizeof opts[0]; o++) {
            struct vox_metrics m = score(ctx, seg, gt, n, &opts[o]);
            struct vox_metrics w = brute(seg, gt, n, &opts[o]);
            CHECK(m.voxels == w.voxels);
            check_metrics(&m, w.rand_split, w.rand_merge, w.adapted_rand_error, w.voi_split,
                          w.voi_merge);
        }
    }
}

/* The shares of the largest errors add up to the VOI terms when every label is listed. */
static void test_top_errors_sum(struct vox_ctx *ctx)
{
    uint64_t rng = 7, seg[500], gt[500];
    fill_random(seg, 500, 40, &rng);
    fill_random(gt, 500, 25, &rng);
    struct vox_metrics_options o = {.seg0 = VOX_SEG0_SINGLETONS};
    struct vox_contingency *t = table_of(ctx, seg, gt, 500);
    struct vox_metrics m;
    CHECK_OK(vox_metrics_compute(ctx, t, &o, &m));
    struct vox_metrics_error sp[64], me[64];
    int64_t nsp, nme;
    CHECK_OK(vox_metrics_top_errors(ctx, t, &o, 64, sp, &nsp, me, &nme));
    double a = 0, b = 0;
    for (int64_t i = 0; i < nsp; i++)
        a += sp[i].voi;
    for (int64_t i = 0; i < nme; i++)
        b += me[i].voi;
    CHECK_NEAR(a, m.voi_split, 1e-10);
    CHECK_NEAR(b, m.voi_merge, 1e-10);
    for (int64_t i = 1; i < nsp; i++)
        CHECK(sp[i - 1].voi >= sp[i].voi);
    for (int64_t i = 0; i < nme; i++)
        CHECK(me[i].label != 0);
    vox_contingency_destroy(t);
}

/* ---- blocks ------------------------------------------------------------------------------ */

static bool tables_equal(struct vox_ctx *ctx, struct vox_contingency *a, struct vox_contingency *b)
{
    struct vox_contingency_entry *ea, *eb;
    int64_t na, nb;
    CHECK_OK(vox_contingency_export(ctx, a, &ea, &na));
    CHECK_OK(vox_contingency_export(ctx, b, &eb, &nb));
    bool eq = na == nb && vox_contingency_voxels(a) == vox_contingency_voxels(b) &&
              memcmp(ea, eb, (size_t)na * sizeof *ea) == 0;
    vox_free(ctx, ea);
    vox_free(ctx, eb);
    return eq;
}

/* A u64 (Z, Y, X) volume with `labels` labels, in runs along x (as segmentations have). */
static void random_volume(struct vox_ctx *ctx, struct vox_tensor *t, const int64_t *shape,
                          uint64_t labels, uint64_t *rng)
{
    CHECK_OK(vox_tensor_alloc(ctx, t, VOX_U64, 3, shape));
    uint64_t *v = t->data, cur = 0;
    for (int64_t i = 0; i < vox_tensor_numel(t); i++) {
        if (vox_test_rand(rng) % 4 == 0)
            cur = vox_test_rand(rng) % labels;
        v[i] = cur;
    }
}

static void test_blocks_merge(struct vox_ctx *ctx)
{
    uint64_t rng = 3;
    const int64_t shape[3] = {7, 11, 13};
    struct vox_tensor seg, gt;
    random_volume(ctx, &seg, shape, 30, &rng);
    random_volume(ctx, &gt, shape, 12, &rng);
    struct vox_contingency *whole, *fwd, *rev, *blk[8] = {0};
    CHECK_OK(vox_contingency_create(ctx, &whole));
    CHECK_OK(vox_contingency_add(ctx, whole, &seg, &gt));
    CHECK(vox_contingency_voxels(whole) == 7 * 11 * 13);
    /* 2 x 2 x 2 blocks of uneven sizes, merged forwards and backwards */
    for (int b = 0; b < 8; b++) {
        int64_t cut[3] = {3, 5, 6}, lo[3], hi[3];
        for (int d = 0; d < 3; d++) {
            bool upper = (b >> d) & 1;
            lo[d] = upper ? cut[d] : 0;
            hi[d] = upper ? shape[d] : cut[d];
        }
        struct vox_tensor sv, gv;
        CHECK_OK(vox_tensor_view_box(ctx, &seg, lo, hi, &sv));
        CHECK_OK(vox_tensor_view_box(ctx, &gt, lo, hi, &gv));
        CHECK_OK(vox_contingency_create(ctx, &blk[b]));
        CHECK_OK(vox_contingency_add(ctx, blk[b], &sv, &gv));
    }
    CHECK_OK(vox_contingency_create(ctx, &fwd));
    CHECK_OK(vox_contingency_create(ctx, &rev));
    for (int b = 0; b < 8; b++) {
        CHECK_OK(vox_contingency_merge(ctx, fwd, blk[b]));
        CHECK_OK(vox_contingency_merge(ctx, rev, blk[7 - b]));
    }
    CHECK(tables_equal(ctx, whole, fwd));
    CHECK(tables_equal(ctx, whole, rev));
    struct vox_metrics m1, m2;
    CHECK_OK(vox_metrics_compute(ctx, whole, NULL, &m1));
    CHECK_OK(vox_metrics_compute(ctx, rev, NULL, &m2));
    CHECK(memcmp(&m1, &m2, sizeof m1) == 0); /* bitwise: the order of blocks does not matter */
    CHECK_STATUS(vox_contingency_merge(ctx, fwd, fwd), VOX_INVALID_ARG);
    for (int b = 0; b < 8; b++)
        vox_contingency_destroy(blk[b]);
    vox_contingency_destroy(fwd);
    vox_contingency_destroy(rev);
    vox_contingency_destroy(whole);
    vox_tensor_free(ctx, &seg);
    vox_tensor_free(ctx, &gt);
}

/* Negative strides (a view flipped along x and z) and other dtypes (u16 seg, i32 gt) give the
 * same table: the table does not depend on voxel order or storage. */
static void test_strides_dtypes(struct vox_ctx *ctx)
{
    uint64_t rng = 11;
    const int64_t shape[3] = {4, 5, 9};
    struct vox_tensor seg, gt, s16, g32;
    random_volume(ctx, &seg, shape, 300, &rng);
    random_volume(ctx, &gt, shape, 9, &rng);
    CHECK_OK(vox_tensor_alloc(ctx, &s16, VOX_U16, 3, shape));
    CHECK_OK(vox_tensor_alloc(ctx, &g32, VOX_I32, 3, shape));
    for (int64_t i = 0; i < vox_tensor_numel(&seg); i++) {
        ((uint16_t *)s16.data)[i] = (uint16_t)((uint64_t *)seg.data)[i];
        ((int32_t *)g32.data)[i] = (int32_t)((uint64_t *)gt.data)[i];
    }
    struct vox_tensor fs = seg, fg = gt;
    int64_t last[3] = {shape[0] - 1, 0, shape[2] - 1};
    fs.data = vox_tensor_at(&seg, last);
    fg.data = vox_tensor_at(&gt, last);
    fs.strides[0] = fg.strides[0] = -seg.strides[0];
    fs.strides[2] = fg.strides[2] = -1;
    struct vox_contingency *a, *b, *c;
    CHECK_OK(vox_contingency_create(ctx, &a));
    CHECK_OK(vox_contingency_create(ctx, &b));
    CHECK_OK(vox_contingency_create(ctx, &c));
    CHECK_OK(vox_contingency_add(ctx, a, &seg, &gt));
    CHECK_OK(vox_contingency_add(ctx, b, &fs, &fg));
    CHECK_OK(vox_contingency_add(ctx, c, &s16, &g32));
    CHECK(tables_equal(ctx, a, b));
    CHECK(tables_equal(ctx, a, c));
    /* spot-check one cell against a direct count */
    uint64_t s0 = ((uint64_t *)seg.data)[17], g0 = ((uint64_t *)gt.data)[17];
    int64_t direct = 0;
    for (int64_t i = 0; i < vox_tensor_numel(&seg); i++)
        direct += ((uint64_t *)seg.data)[i] == s0 && ((uint64_t *)gt.data)[i] == g0;
    CHECK(vox_contingency_get(a, s0, g0) == direct && direct > 0);
    CHECK(vox_contingency_get(a, 1000000, g0) == 0);
    vox_contingency_destroy(a);
    vox_contingency_destroy(b);
    vox_contingency_destroy(c);
    vox_tensor_free(ctx, &seg);
    vox_tensor_free(ctx, &gt);
    vox_tensor_free(ctx, &s16);
    vox_tensor_free(ctx, &g32);
}

static void test_bad_blocks(struct vox_ctx *ctx)
{
    struct vox_contingency *t;
    CHECK_OK(vox_contingency_create(ctx, &t));
    struct vox_tensor a, b, f;
    CHECK_OK(vox_tensor_alloc(ctx, &a, VOX_U64, 3, (int64_t[]){2, 3, 4}));
    CHECK_OK(vox_tensor_alloc(ctx, &b, VOX_I32, 3, (int64_t[]){2, 3, 5}));
    CHECK_OK(vox_tensor_alloc(ctx, &f, VOX_F32, 3, (int64_t[]){2, 3, 4}));
    CHECK_STATUS(vox_contingency_add(ctx, t, &a, &b), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("seg shape (2, 3, 4) differs from gt shape (2, 3, 5)");
    CHECK_STATUS(vox_contingency_add(ctx, t, &a, &f), VOX_UNSUPPORTED);
    CHECK_ERROR_HAS("gt: dtype f32");
    struct vox_tensor r2 = a;
    r2.rank = 2;
    CHECK_STATUS(vox_contingency_add(ctx, t, &r2, &a), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("seg: rank 2");
    struct vox_tensor bv;
    CHECK_OK(vox_tensor_view_box(ctx, &b, (int64_t[]){0, 0, 0}, (int64_t[]){2, 3, 4}, &bv));
    ((int32_t *)b.data)[5 + 2] = -3; /* row (z 0, y 1) */
    CHECK_STATUS(vox_contingency_add(ctx, t, &a, &bv), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("gt has a negative label in row (z 0, y 1)");
    CHECK_STATUS(vox_contingency_add_count(ctx, t, 1, 2, -1), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("count -1");
    vox_contingency_destroy(t);
    vox_contingency_destroy(NULL);
    vox_tensor_free(ctx, &a);
    vox_tensor_free(ctx, &b);
    vox_tensor_free(ctx, &f);
}

/* ---- merge history ----------------------------------------------------------------------- */

static uint64_t uf_find(uint64_t *parent, uint64_t v)
{
    while (parent[v] != v)
        v = parent[v];
    return v;
}

/* Scores after each merge against scores of the relabelled volume, from scratch. */
static void history_case(struct vox_ctx *ctx, uint64_t seed, const struct vox_metrics_options *o)
{
    enum { N = 600, L = 50, M = 70 };
    uint64_t rng = seed, seg[N], gt[N], rel[N], parent[L + 10];
    fill_random(seg, N, L, &rng); /* ids L..L+9 appear only in the history */
    fill_random(gt, N, 8, &rng);
    int64_t a[M], b[M];
    double sc[M];
    uint64_t lo = o->seg0 == VOX_SEG0_LABEL ? 0 : 1;
    for (int i = 0; i < M; i++) {
        a[i] = (int64_t)(lo + vox_test_rand(&rng) % (L + 10 - lo));
        b[i] = (int64_t)(lo + vox_test_rand(&rng) % (L + 10 - lo));
        sc[i] = 1.0 - i / (double)M + 0.05 * (double)(vox_test_rand(&rng) % 3);
    }
    struct vox_contingency *t = table_of(ctx, seg, gt, N);
    struct vox_metrics hist[M + 1], at[4];
    CHECK_OK(vox_metrics_history(ctx, t, o, M, a, b, sc, 0, NULL, hist));
    for (uint64_t i = 0; i < L + 10; i++)
        parent[i] = i;
    for (int i = 0; i <= M; i++) {
        if (i > 0) {
            uint64_t ra = uf_find(parent, (uint64_t)a[i - 1]);
            uint64_t rb = uf_find(parent, (uint64_t)b[i - 1]);
            parent[rb] = ra;
        }
        for (int v = 0; v < N; v++)
            rel[v] = seg[v] == 0 && o->seg0 != VOX_SEG0_LABEL ? 0 : uf_find(parent, seg[v]);
        struct vox_metrics w = score(ctx, rel, gt, N, o);
        CHECK(hist[i].voxels == w.voxels && hist[i].n_seg == w.n_seg && hist[i].n_gt == w.n_gt);
        CHECK(hist[i].rand_split == w.rand_split && hist[i].rand_merge == w.rand_merge);
        CHECK(hist[i].adapted_rand_error == w.adapted_rand_error);
        CHECK_NEAR(hist[i].voi_split, w.voi_split, TOL);
        CHECK_NEAR(hist[i].voi_merge, w.voi_merge, TOL);
    }
    /* thresholds, unsorted: each is the prefix before the first score below it */
    double th[4] = {0.5, 2.0, -1.0, 0.8};
    CHECK_OK(vox_metrics_history(ctx, t, o, M, a, b, sc, 4, th, at));
    for (int k = 0; k < 4; k++) {
        int p = 0;
        while (p < M && sc[p] >= th[k])
            p++;
        CHECK(memcmp(&at[k], &hist[p], sizeof at[k]) == 0);
    }
    vox_contingency_destroy(t);
}

static void test_history(struct vox_ctx *ctx)
{
    const struct vox_metrics_options opts[] = {
        {0}, {.seg0 = VOX_SEG0_SINGLETONS}, {.seg0 = VOX_SEG0_IGNORE, .keep_gt0 = true},
        {.rand_squares = true}};
    int seeds = vox_test_full ? 20 : 2;
    for (int s = 0; s < seeds; s++)
        for (size_t o = 0; o < sizeof opts / sizeof opts[0]; o++)
            history_case(ctx, 100 + (uint64_t)s, &opts[o]);
}

/* A history where a big segment absorbs many small ones, then the case that matters most in
 * practice: merging everything gives the all-in-one segmentation. */
static void test_history_all(struct vox_ctx *ctx)
{
    uint64_t seg[] = {1, 2, 3, 4, 5, 6}, gt[] = {1, 1, 2, 2, 3, 3};
    int64_t a[] = {1, 1, 3, 1, 6}, b[] = {2, 3, 4, 5, 1};
    struct vox_contingency *t = table_of(ctx, seg, gt, 6);
    struct vox_metrics m[6];
    CHECK_OK(vox_metrics_history(ctx, t, NULL, 5, a, b, NULL, 0, NULL, m));
    /* start: every voxel alone: split = 0 pairs / 6, VOI split = 1 bit, merge 0 */
    check_metrics(&m[0], 0.0, 1.0, 1.0, 1.0, 0.0);
    /* after (1,2): perfect on gt 1: split 2/6 */
    CHECK_NEAR(m[1].rand_split, 2.0 / 6, TOL);
    /* at the end one segment: split 1, merge 6/30, VOI merge log2 3 */
    check_metrics(&m[5], 1.0, 6.0 / 30, 1 - 12.0 / 36, 0.0, log2(3.0));
    CHECK(m[5].n_seg == 1);
    vox_contingency_destroy(t);
}

static void test_history_errors(struct vox_ctx *ctx)
{
    uint64_t seg[] = {0, 1, 2}, gt[] = {1, 1, 2};
    struct vox_contingency *t = table_of(ctx, seg, gt, 3);
    struct vox_metrics m[3];
    int64_t a[] = {1, 0}, b[] = {2, 1}, neg[] = {-4, 1};
    double sc[] = {1.0, NAN}, th[] = {0.5};
    struct vox_metrics_options single = {.seg0 = VOX_SEG0_SINGLETONS};
    CHECK_STATUS(vox_metrics_history(ctx, t, &single, 2, a, b, NULL, 0, NULL, m),
                 VOX_INVALID_ARG);
    CHECK_ERROR_HAS("merge 1: (0, 1) involves segment 0");
    CHECK_STATUS(vox_metrics_history(ctx, t, NULL, 2, neg, b, NULL, 0, NULL, m),
                 VOX_INVALID_ARG);
    CHECK_ERROR_HAS("merge 0: segment ids (-4, 2) must be >= 0");
    CHECK_STATUS(vox_metrics_history(ctx, t, NULL, 2, a, b, sc, 0, NULL, m), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("merge 1: score is NaN");
    CHECK_STATUS(vox_metrics_history(ctx, t, NULL, 2, a, b, NULL, 1, th, m), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("thresholds need a score per merge");
    /* merging seg 0 is fine when 0 is an ordinary label */
    CHECK_OK(vox_metrics_history(ctx, t, NULL, 2, a, b, NULL, 0, NULL, m));
    CHECK(m[2].n_seg == 1);
    vox_contingency_destroy(t);
}

/* Every allocation failure is reported as OUT_OF_MEMORY and leaks nothing. */
static void test_alloc_failures(struct vox_ctx *ctx)
{
    uint64_t rng = 5, seg[200], gt[200];
    fill_random(seg, 200, 60, &rng);
    fill_random(gt, 200, 6, &rng);
    int64_t a[] = {1, 2, 3, 70}, b[] = {4, 5, 6, 1};
    double sc[] = {4, 3, 2, 1}, th[] = {2.5};
    bool done = false;
    for (int64_t k = 1; !done && k < 200; k++) {
        struct vox_contingency *t = NULL, *u = NULL;
        struct vox_metrics m[5];
        struct vox_metrics_error e[3];
        int64_t ne, nm;
        vox_ctx_fail_alloc_at(ctx, k);
        struct vox_tensor s = row_u64(seg, 200), g = row_u64(gt, 200);
        enum vox_status st = vox_contingency_create(ctx, &t);
        st = st ? st : vox_contingency_add(ctx, t, &s, &g);
        st = st ? st : vox_contingency_create(ctx, &u);
        st = st ? st : vox_contingency_merge(ctx, u, t);
        st = st ? st : vox_metrics_compute(ctx, u, NULL, m);
        st = st ? st : vox_metrics_top_errors(ctx, u, NULL, 3, e, &ne, e, &nm);
        st = st ? st : vox_metrics_history(ctx, u, NULL, 4, a, b, sc, 0, NULL, m);
        st = st ? st : vox_metrics_history(ctx, u, NULL, 4, a, b, sc, 1, th, m);
        vox_ctx_fail_alloc_at(ctx, 0);
        CHECK(st == VOX_OK || st == VOX_OUT_OF_MEMORY);
        done = st == VOX_OK;
        vox_contingency_destroy(t);
        vox_contingency_destroy(u);
    }
    CHECK(done);
}

VOX_TEST_MAIN(VOX_TEST(test_hand_split), VOX_TEST(test_hand_merge), VOX_TEST(test_hand_perfect),
              VOX_TEST(test_hand_asymmetric), VOX_TEST(test_label0_conventions),
              VOX_TEST(test_empty), VOX_TEST(test_brute_force), VOX_TEST(test_top_errors_sum),
              VOX_TEST(test_blocks_merge), VOX_TEST(test_strides_dtypes),
              VOX_TEST(test_bad_blocks), VOX_TEST(test_history), VOX_TEST(test_history_all),
              VOX_TEST(test_history_errors), VOX_TEST(test_alloc_failures))
