/*
 * test_malis.c: the MALIS loss (src/nn/malis.c): per-edge pair counts, plain and constrained,
 * against a brute-force oracle (a widest-path search per voxel, by relaxation to a fixed
 * point) on tiny random volumes with many tied affinities, masks and strided labels; a
 * hand-computed case; the gradient against central finite differences; zero loss for a
 * perfect prediction; bitwise determinism; bad input and allocation failures.
 */
#include "harness.h"
#include "vox/train.h"

static uint64_t rng_state = 7;

static double urand01(void)
{
    return (double)(vox_test_rand(&rng_state) >> 11) * 0x1.0p-53;
}

/* A tiny volume: affinities (3, Z, Y, X), labels (Z, Y, X) as a strided view into a larger
 * array, a mask, all owned here. */
struct case_ {
    int64_t dim[3], plane, ne;
    struct vox_tensor aff, lab_big, lab, mask;
};

static bool case_make(struct vox_ctx *ctx, struct case_ *k, const int64_t dim[3], int levels,
                      int nlabels, bool masked)
{
    int64_t as[4] = {3, dim[0], dim[1], dim[2]}, bs[3] = {dim[0] + 1, dim[1] + 2, dim[2] + 3};
    int64_t lo[3] = {1, 1, 2}, hi[3] = {dim[0] + 1, dim[1] + 1, dim[2] + 2};
    *k = (struct case_){.dim = {dim[0], dim[1], dim[2]}, .plane = dim[0] * dim[1] * dim[2]};
    k->ne = 3 * k->plane;
    CHECK_OK(vox_tensor_alloc(ctx, &k->aff, VOX_F32, 4, as));
    CHECK_OK(vox_tensor_alloc(ctx, &k->mask, VOX_F32, 4, as));
    CHECK_OK(vox_tensor_alloc(ctx, &k->lab_big, VOX_U64, 3, bs));
    if (!k->aff.data || !k->mask.data || !k->lab_big.data)
        return false;
    CHECK_OK(vox_tensor_view_box(ctx, &k->lab_big, lo, hi, &k->lab));
    float *a = k->aff.data, *m = k->mask.data;
    for (int64_t e = 0; e < k->ne; e++) {
        a[e] = (float)((double)(vox_test_rand(&rng_state) % (uint64_t)levels) / (levels - 1));
        m[e] = masked && urand01() < 0.15 ? 0.0f : 1.0f;
    }
    uint64_t *l = k->lab_big.data;
    for (int64_t i = 0; i < vox_tensor_numel(&k->lab_big); i++)
        l[i] = vox_test_rand(&rng_state) % (uint64_t)(nlabels + 1) + 100; /* junk outside */
    for (int64_t z = 0; z < dim[0]; z++)
        for (int64_t y = 0; y < dim[1]; y++)
            for (int64_t x = 0; x < dim[2]; x++) {
                int64_t idx[3] = {z, y, x};
                uint64_t r = vox_test_rand(&rng_state) % (uint64_t)(nlabels + 2);
                *(uint64_t *)vox_tensor_at(&k->lab, idx) = r > (uint64_t)nlabels ? 0 : r;
            }
    return true;
}

static void case_free(struct vox_ctx *ctx, struct case_ *k)
{
    vox_tensor_free(ctx, &k->aff);
    vox_tensor_free(ctx, &k->mask);
    vox_tensor_free(ctx, &k->lab_big);
}

/* ---- the oracle ---------------------------------------------------------------------------- */

struct oracle {
    const struct case_ *k;
    const float *m;
    uint64_t *lab; /* contiguous labels */
    int64_t *obj;  /* object id per voxel (-1: unlabelled) */
    double *val;   /* per edge: the value the tree is built on */
};

/* edge e = (c, v) links v and u = v - e_c; false when u leaves the patch or e is masked */
static bool oracle_edge(const struct oracle *o, int64_t e, int64_t *v, int64_t *u)
{
    const int64_t *d = o->k->dim;
    int64_t c = e / o->k->plane, w = e % o->k->plane;
    int64_t coord[3] = {w / (d[1] * d[2]), w / d[2] % d[1], w % d[2]};
    int64_t step[3] = {d[1] * d[2], d[2], 1};
    *v = w, *u = w - step[c];
    return coord[c] > 0 && (!o->m || o->m[e] > 0);
}

/* the objects: flood fill through graph edges between voxels of one nonzero label */
static void oracle_objects(struct oracle *o)
{
    int64_t n = o->k->plane, v, u;
    for (int64_t i = 0; i < n; i++)
        o->obj[i] = o->lab[i] ? i : -1;
    for (bool changed = true; changed;) { /* min-id propagation to a fixed point */
        changed = false;
        for (int64_t e = 0; e < o->k->ne; e++)
            if (oracle_edge(o, e, &v, &u) && o->lab[v] && o->lab[v] == o->lab[u] &&
                o->obj[v] != o->obj[u]) {
                int64_t m = o->obj[v] < o->obj[u] ? o->obj[v] : o->obj[u];
                o->obj[v] = o->obj[u] = m;
                changed = true;
            }
    }
}

/* e ranks before f in the tree's order (value descending, then index ascending) */
static bool before(const struct oracle *o, int64_t e, int64_t f)
{
    return o->val[e] > o->val[f] || (o->val[e] == o->val[f] && e < f);
}

/* From source s: b[v] = the weakest edge of the strongest path to v (-1 unreached, -2 s). */
static void widest_paths(const struct oracle *o, int64_t s, int64_t *b)
{
    int64_t v, u;
    for (int64_t i = 0; i < o->k->plane; i++)
        b[i] = -1;
    b[s] = -2;
    for (bool changed = true; changed;) {
        changed = false;
        for (int64_t e = 0; e < o->k->ne; e++) {
            if (!oracle_edge(o, e, &v, &u))
                continue;
            for (int dir = 0; dir < 2; dir++) {
                int64_t p = dir ? u : v, q = dir ? v : u;
                if (b[p] == -1)
                    continue;
                int64_t cand = b[p] == -2 || before(o, b[p], e) ? e : b[p];
                if (b[q] == -1 || (b[q] != -2 && before(o, cand, b[q]))) {
                    b[q] = cand;
                    changed = true;
                }
            }
        }
    }
}

/* Counts on values val: positive pairs into npos (if non-NULL), negative into nneg. */
static void oracle_count(const struct oracle *o, int64_t *b, int64_t *npos, int64_t *nneg)
{
    for (int64_t s = 0; s < o->k->plane; s++) {
        if (o->obj[s] < 0)
            continue;
        widest_paths(o, s, b);
        for (int64_t t = s + 1; t < o->k->plane; t++) {
            if (o->obj[t] < 0 || b[t] < 0)
                continue;
            if (o->obj[s] == o->obj[t] && npos)
                npos[b[t]]++;
            if (o->obj[s] != o->obj[t] && nneg)
                nneg[b[t]]++;
        }
    }
}

static void oracle_pairs(struct vox_ctx *ctx, const struct case_ *k, bool masked, bool constrained,
                         int64_t *npos, int64_t *nneg)
{
    struct oracle o = {.k = k, .m = masked ? k->mask.data : NULL};
    o.lab = vox_calloc(ctx, (size_t)k->plane, sizeof *o.lab);
    o.obj = vox_calloc(ctx, (size_t)k->plane, sizeof *o.obj);
    o.val = vox_calloc(ctx, (size_t)k->ne, sizeof *o.val);
    int64_t *b = vox_calloc(ctx, (size_t)k->plane, sizeof *b), v, u;
    memset(npos, 0, (size_t)k->ne * sizeof *npos);
    memset(nneg, 0, (size_t)k->ne * sizeof *nneg);
    if (o.lab && o.obj && o.val && b) {
        for (int64_t i = 0, z = 0; z < k->dim[0]; z++)
            for (int64_t y = 0; y < k->dim[1]; y++)
                for (int64_t x = 0; x < k->dim[2]; x++, i++) {
                    int64_t idx[3] = {z, y, x};
                    o.lab[i] = *(const uint64_t *)vox_tensor_at(&k->lab, idx);
                }
        oracle_objects(&o);
        const float *a = k->aff.data;
        for (int pass = constrained ? 1 : 0; pass < (constrained ? 3 : 1); pass++) {
            for (int64_t e = 0; e < k->ne; e++) {
                bool in = oracle_edge(&o, e, &v, &u);
                double gt = in && o.obj[v] >= 0 && o.obj[v] == o.obj[u];
                o.val[e] = pass == 0 ? a[e] : pass == 1 ? fmax(a[e], gt) : fmin(a[e], gt);
            }
            oracle_count(&o, b, pass != 2 ? npos : NULL, pass != 1 ? nneg : NULL);
        }
    }
    vox_free(ctx, o.lab);
    vox_free(ctx, o.obj);
    vox_free(ctx, o.val);
    vox_free(ctx, b);
}

/* ---- tests ----------------------------------------------------------------------------- */

/* pair counts per edge equal the brute-force oracle's, plain and constrained */
static void test_pairs_oracle(struct vox_ctx *ctx)
{
    int cases = vox_test_full ? 400 : 60;
    for (int t = 0; t < cases; t++) {
        uint64_t grow = vox_test_full ? 2 : 0; /* full: up to 3x6x7 */
        int64_t dim[3] = {1 + (int64_t)(vox_test_rand(&rng_state) % 3),
                          1 + (int64_t)(vox_test_rand(&rng_state) % (4 + grow)),
                          1 + (int64_t)(vox_test_rand(&rng_state) % (5 + grow))};
        int levels = 2 + (int)(vox_test_rand(&rng_state) % 5), nlab = 1 + t % 4;
        bool masked = t % 3 == 2;
        struct case_ k;
        if (!case_make(ctx, &k, dim, levels, nlab, masked)) {
            case_free(ctx, &k);
            return;
        }
        size_t bytes = (size_t)k.ne * sizeof(int64_t);
        int64_t *p = vox_alloc(ctx, bytes), *n = vox_alloc(ctx, bytes);
        int64_t *op = vox_alloc(ctx, bytes), *on = vox_alloc(ctx, bytes);
        for (int c = 0; p && n && op && on && c < 2; c++) {
            const struct vox_tensor *m = masked ? &k.mask : NULL;
            CHECK_OK(vox_malis_pairs(ctx, &k.aff, &k.lab, m, c == 1, p, n));
            oracle_pairs(ctx, &k, masked, c == 1, op, on);
            bool same = memcmp(p, op, bytes) == 0 && memcmp(n, on, bytes) == 0;
            if (!same)
                fprintf(stderr, "  case %d (%lldx%lldx%lld, %d levels, mask %d, constrained %d)\n",
                        t, (long long)dim[0], (long long)dim[1], (long long)dim[2], levels, masked,
                        c);
            CHECK(same);
        }
        vox_free(ctx, p);
        vox_free(ctx, n);
        vox_free(ctx, op);
        vox_free(ctx, on);
        case_free(ctx, &k);
    }
}

/* 1x1x4, labels 1 1 2 2, x links 0.3 (inside 1), 0.6 (boundary), 1.0 (inside 2): by hand */
static void test_hand_case(struct vox_ctx *ctx)
{
    int64_t xs[5] = {1, 3, 1, 1, 4}, ls[3] = {1, 1, 4};
    struct vox_tensor x = {0}, g = {0}, lab = {0};
    CHECK_OK(vox_tensor_alloc(ctx, &x, VOX_F32, 5, xs));
    CHECK_OK(vox_tensor_alloc(ctx, &g, VOX_F32, 5, xs));
    CHECK_OK(vox_tensor_alloc(ctx, &lab, VOX_U64, 3, ls));
    if (x.data && g.data && lab.data) {
        float *a = x.data;
        uint64_t *l = lab.data;
        l[0] = l[1] = 1, l[2] = l[3] = 2;
        a[9] = 0.3f, a[10] = 0.6f, a[11] = 1.0f;
        double loss;
        /* plain: e11 joins {2},{3} (1 pos); e10 {1},{2,3} (2 neg); e9 {0},{1,2,3} (1 pos 2 neg) */
        CHECK_OK(vox_loss_malis(ctx, &x, VOX_ACT_LINEAR, &lab, NULL, false, 1, &g, &loss));
        CHECK_NEAR(loss, (2 * 0.6 * 0.6 + 0.7 * 0.7 + 2 * 0.3 * 0.3) / 6, 1e-7);
        /* constrained: e9 and e11 1 pos each; e10 joins the two objects: 4 neg */
        CHECK_OK(vox_loss_malis(ctx, &x, VOX_ACT_LINEAR, &lab, NULL, true, 1, &g, &loss));
        CHECK_NEAR(loss, (0.7 * 0.7 + 4 * 0.6 * 0.6) / 6, 1e-7);
        int64_t p[12], n[12];
        struct vox_tensor aff = x;
        aff.rank = 4;
        memmove(aff.shape, x.shape + 1, 4 * sizeof x.shape[0]);
        memmove(aff.strides, x.strides + 1, 4 * sizeof x.strides[0]);
        CHECK_OK(vox_malis_pairs(ctx, &aff, &lab, NULL, true, p, n));
        CHECK(p[9] == 1 && n[9] == 0 && p[10] == 0 && n[10] == 4 && p[11] == 1 && n[11] == 0);
        /* label 2 cut in two by a zero mask on e11: voxels 2 and 3 become two objects */
        int64_t ms[4] = {3, 1, 1, 4};
        struct vox_tensor m = {0};
        CHECK_OK(vox_tensor_alloc(ctx, &m, VOX_F32, 4, ms));
        for (int64_t e = 0; m.data && e < 12; e++)
            ((float *)m.data)[e] = e != 11;
        if (m.data)
            CHECK_OK(vox_malis_pairs(ctx, &aff, &lab, &m, false, p, n));
        CHECK(p[11] == 0 && n[11] == 0 && p[9] == 1 && n[9] == 1 && n[10] == 1 && p[10] == 0);
        vox_tensor_free(ctx, &m);
    }
    vox_tensor_free(ctx, &x);
    vox_tensor_free(ctx, &g);
    vox_tensor_free(ctx, &lab);
}

/* Logits x (1, 3, Z, Y, X): a scrambled ramp over [-3, 3] (distinct by 6 / ne, so the tree's
 * order survives perturbations of h), and labels in blobs of 2x2x2 with some 0s. */
static bool smooth_case(struct vox_ctx *ctx, const int64_t dim[3], struct vox_tensor *x,
                        struct vox_tensor *g, struct vox_tensor *lab)
{
    int64_t xs[5] = {1, 3, dim[0], dim[1], dim[2]};
    CHECK_OK(vox_tensor_alloc(ctx, x, VOX_F32, 5, xs));
    CHECK_OK(vox_tensor_alloc(ctx, g, VOX_F32, 5, xs));
    CHECK_OK(vox_tensor_alloc(ctx, lab, VOX_U64, 3, dim));
    if (!x->data || !g->data || !lab->data)
        return false;
    int64_t ne = vox_tensor_numel(x);
    for (int64_t e = 0; e < ne; e++)
        ((float *)x->data)[e] = (float)(-3 + 6.0 * (double)((e * 7919) % ne) / (double)ne);
    uint64_t *l = lab->data;
    for (int64_t z = 0, i = 0; z < dim[0]; z++)
        for (int64_t y = 0; y < dim[1]; y++)
            for (int64_t xx = 0; xx < dim[2]; xx++, i++) {
                uint64_t blob = (uint64_t)((z / 2 * 7 + y / 2) * 5 + xx / 2);
                l[i] = blob % 5 == 4 ? 0 : blob % 3 + 1;
            }
    return true;
}

/* the gradient of the loss equals its central finite difference (no order change) */
static void test_gradient(struct vox_ctx *ctx)
{
    int64_t dim[3] = {2, 4, 5};
    for (int c = 0; c < 4; c++) {
        struct vox_tensor x = {0}, g = {0}, junk = {0}, lab = {0};
        bool constrained = c & 1;
        enum vox_nn_act act = c & 2 ? VOX_ACT_LINEAR : VOX_ACT_SIGMOID;
        if (smooth_case(ctx, dim, &x, &g, &lab) &&
            vox_tensor_alloc(ctx, &junk, VOX_F32, 5, x.shape) == VOX_OK) {
            float *xp = x.data;
            int64_t ne = vox_tensor_numel(&x);
            if (act == VOX_ACT_LINEAR) /* affinities in (0.05, 0.95) */
                for (int64_t e = 0; e < ne; e++)
                    xp[e] = 0.5f + 0.15f * xp[e];
            double loss, lp, lm, h = 1e-3;
            CHECK_OK(vox_loss_malis(ctx, &x, act, &lab, NULL, constrained, 2, &g, &loss));
            CHECK(loss > 0);
            int bad = 0, nonzero = 0;
            for (int64_t e = 0; e < ne; e++) {
                float keep = xp[e];
                xp[e] = (float)(keep + h);
                double hp = (double)xp[e];
                CHECK_OK(vox_loss_malis(ctx, &x, act, &lab, NULL, constrained, 1, &junk, &lp));
                xp[e] = (float)(keep - h);
                double hm = (double)xp[e];
                CHECK_OK(vox_loss_malis(ctx, &x, act, &lab, NULL, constrained, 1, &junk, &lm));
                xp[e] = keep;
                double fd = 2 * (lp - lm) / (hp - hm), gv = ((float *)g.data)[e];
                nonzero += gv != 0;
                if (!(fabs(fd - gv) <= 1e-5 + 1e-3 * fabs(fd)) && bad++ == 0)
                    fprintf(stderr, "  act %s constrained %d: x[%lld] grad %g fd %g\n",
                            vox_nn_act_str(act), constrained, (long long)e, gv, fd);
            }
            CHECK(bad == 0);
            CHECK(nonzero > 10);
        }
        vox_tensor_free(ctx, &x);
        vox_tensor_free(ctx, &g);
        vox_tensor_free(ctx, &junk);
        vox_tensor_free(ctx, &lab);
    }
}

/* A = A_gt: constrained MALIS is 0 with a 0 gradient; lowering the first true link (first of
 * the ties at 1, so a tree edge) makes it positive */
static void test_perfect(struct vox_ctx *ctx)
{
    int64_t dim[3] = {3, 6, 7};
    struct vox_tensor x = {0}, g = {0}, lab = {0};
    if (smooth_case(ctx, dim, &x, &g, &lab)) {
        float *xp = x.data;
        const uint64_t *l = lab.data;
        int64_t plane = dim[0] * dim[1] * dim[2], step[3] = {dim[1] * dim[2], dim[2], 1};
        int64_t inside = -1;
        for (int64_t c = 0; c < 3; c++)
            for (int64_t z = 0, v = 0; z < dim[0]; z++)
                for (int64_t y = 0; y < dim[1]; y++)
                    for (int64_t xx = 0; xx < dim[2]; xx++, v++) {
                        int64_t coord[3] = {z, y, xx};
                        bool in = coord[c] > 0;
                        bool link = in && l[v] && l[v] == l[v - step[c]];
                        xp[c * plane + v] = in ? (float)link : 0.5f;
                        inside = link && inside < 0 ? c * plane + v : inside;
                    }
        double loss = -1;
        CHECK_OK(vox_loss_malis(ctx, &x, VOX_ACT_LINEAR, &lab, NULL, true, 1, &g, &loss));
        CHECK(loss == 0);
        bool zero = true;
        for (int64_t e = 0; e < 3 * plane; e++)
            zero = zero && ((float *)g.data)[e] == 0;
        CHECK(zero);
        CHECK(inside >= 0);
        xp[inside] = 0.2f;
        CHECK_OK(vox_loss_malis(ctx, &x, VOX_ACT_LINEAR, &lab, NULL, true, 1, &g, &loss));
        CHECK(loss > 0);
        CHECK(((float *)g.data)[inside] < 0);
    }
    vox_tensor_free(ctx, &x);
    vox_tensor_free(ctx, &g);
    vox_tensor_free(ctx, &lab);
}

/* the same inputs give bitwise the same loss and gradient, on 1 and on 2 threads */
static void test_deterministic(struct vox_ctx *ctx)
{
    struct vox_ctx *one = NULL;
    struct vox_ctx_options co = {.threads = 1, .log_level = VOX_LOG_WARN};
    CHECK_OK(vox_ctx_create(&co, &one));
    int64_t dim[3] = {4, 24, 24};
    struct vox_tensor x = {0}, g = {0}, g2 = {0}, lab = {0};
    if (one && smooth_case(ctx, dim, &x, &g, &lab) &&
        vox_tensor_alloc(ctx, &g2, VOX_F32, 5, x.shape) == VOX_OK) {
        float *xp = x.data;
        for (int64_t e = 0; e < vox_tensor_numel(&x); e++) /* many ties after the sigmoid */
            xp[e] = (float)(vox_test_rand(&rng_state) % 7) * 4 - 12;
        double l1, l2;
        CHECK_OK(vox_loss_malis(ctx, &x, VOX_ACT_SIGMOID, &lab, NULL, true, 1, &g, &l1));
        CHECK_OK(vox_loss_malis(one, &x, VOX_ACT_SIGMOID, &lab, NULL, true, 1, &g2, &l2));
        CHECK(l1 == l2 && l1 > 0);
        CHECK(memcmp(g.data, g2.data, vox_tensor_nbytes(&g)) == 0);
    }
    vox_tensor_free(ctx, &x);
    vox_tensor_free(ctx, &g);
    vox_tensor_free(ctx, &g2);
    vox_tensor_free(ctx, &lab);
    vox_ctx_destroy(one);
}

/* bad input: a status and a message naming the problem; allocation failures leak nothing */
static void test_errors(struct vox_ctx *ctx)
{
    int64_t dim[3] = {2, 3, 4}, bad[3] = {2, 3, 5}, ms[4] = {3, 2, 3, 5};
    struct vox_tensor x = {0}, g = {0}, lab = {0}, lab2 = {0}, m = {0};
    double loss;
    if (smooth_case(ctx, dim, &x, &g, &lab) &&
        vox_tensor_alloc(ctx, &lab2, VOX_U64, 3, bad) == VOX_OK &&
        vox_tensor_alloc(ctx, &m, VOX_F32, 4, ms) == VOX_OK) {
        CHECK_STATUS(vox_loss_malis(ctx, &x, VOX_ACT_RELU, &lab, NULL, true, 1, &g, &loss),
                     VOX_INVALID_ARG);
        CHECK_ERROR_HAS("act=sigmoid");
        CHECK_STATUS(vox_loss_malis(ctx, &x, VOX_ACT_SIGMOID, &lab2, NULL, true, 1, &g, &loss),
                     VOX_INVALID_ARG);
        CHECK_ERROR_HAS("u64 (2, 3, 4)");
        CHECK_STATUS(vox_loss_malis(ctx, &x, VOX_ACT_SIGMOID, &lab, &m, true, 1, &g, &loss),
                     VOX_INVALID_ARG);
        CHECK_ERROR_HAS("mask");
        CHECK_STATUS(vox_loss_compute(ctx, VOX_LOSS_MALIS, VOX_REBALANCE_NONE, &x, VOX_ACT_SIGMOID,
                                      &x, NULL, 1, &g, &loss),
                     VOX_INVALID_ARG);
        CHECK_ERROR_HAS("vox_loss_malis");
        struct vox_tensor two = x;
        two.shape[1] = 2;
        CHECK_STATUS(vox_loss_malis(ctx, &two, VOX_ACT_SIGMOID, &lab, NULL, true, 1, &two, &loss),
                     VOX_INVALID_ARG);
        CHECK_ERROR_HAS("2 channels, expected 3");
        enum vox_loss l;
        CHECK(vox_loss_parse("malis", &l) && l == VOX_LOSS_MALIS);
        CHECK(strcmp(vox_loss_str(VOX_LOSS_MALIS), "malis") == 0);
        for (int64_t n = 1; n < 16; n++) {
            int64_t live = vox_ctx_live_allocs(ctx);
            vox_ctx_fail_alloc_at(ctx, n);
            enum vox_status s =
                vox_loss_malis(ctx, &x, VOX_ACT_SIGMOID, &lab, NULL, true, 1, &g, &loss);
            vox_ctx_fail_alloc_at(ctx, 0);
            CHECK(s == VOX_OK || s == VOX_OUT_OF_MEMORY);
            CHECK(vox_ctx_live_allocs(ctx) == live);
        }
    }
    vox_tensor_free(ctx, &x);
    vox_tensor_free(ctx, &g);
    vox_tensor_free(ctx, &lab);
    vox_tensor_free(ctx, &lab2);
    vox_tensor_free(ctx, &m);
}

VOX_TEST_MAIN(VOX_TEST(test_pairs_oracle), VOX_TEST(test_hand_case), VOX_TEST(test_gradient),
              VOX_TEST(test_perfect), VOX_TEST(test_deterministic), VOX_TEST(test_errors))
