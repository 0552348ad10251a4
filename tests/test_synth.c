/*
 * test_synth.c: the synthetic volume generator: determinism (seeds, thread counts), labels
 * dense, canonical and connected (against a union-find oracle), affinities equal to the
 * label pairs at every edge, membranes darker than cells, defects touching raw only, odd
 * shapes, bad parameters, allocation failures, degraded affinities, the own exp.
 */
#include "harness.h"
#include "synth/internal.h"
#include "vox/synth.h"

static void small_params(struct vox_synth_params *p, int64_t z, int64_t y, int64_t x, uint64_t seed)
{
    vox_synth_defaults(p);
    p->shape[0] = z;
    p->shape[1] = y;
    p->shape[2] = x;
    p->seed = seed;
}

struct vol {
    struct vox_tensor raw, labels, aff;
    int64_t cells;
};

static enum vox_status gen(struct vox_ctx *ctx, const struct vox_synth_params *p, struct vol *v)
{
    return vox_synth_generate(ctx, p, &v->raw, &v->labels, &v->aff, &v->cells);
}

static void vol_free(struct vox_ctx *ctx, struct vol *v)
{
    vox_tensor_free(ctx, &v->raw);
    vox_tensor_free(ctx, &v->labels);
    vox_tensor_free(ctx, &v->aff);
}

static bool same(const struct vox_tensor *a, const struct vox_tensor *b)
{
    return vox_tensor_nbytes(a) == vox_tensor_nbytes(b) &&
           memcmp(a->data, b->data, vox_tensor_nbytes(a)) == 0;
}

static int64_t oracle_find(int64_t *par, int64_t i)
{
    while (par[i] != i)
        i = par[i] = par[par[i]];
    return i;
}

/* Labels are 1..N by first appearance, and each label is one 6-connected piece. */
static void check_labels(const struct vol *v)
{
    const int64_t *sh = v->labels.shape;
    const uint64_t *L = v->labels.data;
    int64_t n = sh[0] * sh[1] * sh[2], plane = sh[1] * sh[2];
    uint64_t next = 1;
    bool ok = true;
    for (int64_t i = 0; i < n && ok; i++) {
        ok = L[i] >= 1 && L[i] <= next;
        next += L[i] == next;
    }
    CHECK(ok);
    CHECK((int64_t)next - 1 == v->cells);
    int64_t *par = malloc((size_t)n * sizeof *par), pieces = 0;
    for (int64_t i = 0; i < n; i++)
        par[i] = i;
    for (int64_t i = 0; i < n; i++) {
        int64_t nb[3] = {i % sh[2] ? i - 1 : -1, (i / sh[2]) % sh[1] ? i - sh[2] : -1,
                         i >= plane ? i - plane : -1};
        for (int k = 0; k < 3; k++)
            if (nb[k] >= 0 && L[nb[k]] == L[i])
                par[oracle_find(par, i)] = oracle_find(par, nb[k]);
    }
    for (int64_t i = 0; i < n; i++)
        pieces += oracle_find(par, i) == i;
    CHECK(pieces == v->cells);
    free(par);
}

/* Every edge of every channel against the label pair it links. */
static void check_affinities(const struct vol *v)
{
    const int64_t *sh = v->labels.shape;
    const uint64_t *L = v->labels.data;
    const uint8_t *A = v->aff.data;
    int64_t n = sh[0] * sh[1] * sh[2], step[3] = {sh[1] * sh[2], sh[2], 1}, bad = 0;
    CHECK(v->aff.rank == 4 && v->aff.shape[0] == 3 && v->aff.dtype == VOX_U8);
    for (int c = 0; c < 3; c++)
        for (int64_t i = 0; i < n; i++) {
            int64_t coord = (i / step[c]) % sh[c];
            uint8_t want = coord > 0 && L[i] != 0 && L[i - step[c]] == L[i] ? 255 : 0;
            bad += A[c * n + i] != want;
        }
    CHECK(bad == 0);
}

static void test_deterministic_and_threads(struct vox_ctx *ctx)
{
    struct vox_synth_params p;
    int seeds = vox_test_full ? 4 : 1;
    for (int s = 1; s <= seeds; s++) {
        small_params(&p, 12, 70, 61, (uint64_t)s);
        struct vol a = {0}, b = {0}, c = {0}, d = {0};
        CHECK_OK(gen(ctx, &p, &a));
        CHECK_OK(gen(ctx, &p, &b));
        CHECK(same(&a.raw, &b.raw) && same(&a.labels, &b.labels) && same(&a.aff, &b.aff));
        for (int threads = 1; threads <= 3; threads += 2) {
            struct vox_ctx *c1;
            struct vox_ctx_options o = {.threads = threads, .log_level = VOX_LOG_WARN};
            CHECK_OK(vox_ctx_create(&o, &c1));
            CHECK_OK(gen(c1, &p, &c));
            CHECK(same(&a.raw, &c.raw) && same(&a.labels, &c.labels) && same(&a.aff, &c.aff));
            vol_free(c1, &c);
            vox_ctx_destroy(c1);
        }
        p.seed += 1000;
        CHECK_OK(gen(ctx, &p, &d));
        CHECK(!same(&a.raw, &d.raw) && !same(&a.labels, &d.labels));
        vol_free(ctx, &a);
        vol_free(ctx, &b);
        vol_free(ctx, &d);
    }
}

static void test_labels_and_affinities(struct vox_ctx *ctx)
{
    struct vox_synth_params p;
    int seeds = vox_test_full ? 6 : 2;
    for (int s = 0; s < seeds; s++) {
        small_params(&p, 10 + s, 64, 72, (uint64_t)s + 7);
        p.anisotropy = s % 2 ? 1 : 10;
        p.cell_size_nm = s % 2 ? 60 : 120;
        struct vol v = {0};
        CHECK_OK(gen(ctx, &p, &v));
        CHECK(v.cells > 3);
        check_labels(&v);
        check_affinities(&v);
        struct vox_tensor aff2;
        CHECK_OK(vox_synth_affinities(ctx, &v.labels, &aff2));
        CHECK(same(&aff2, &v.aff));
        vox_tensor_free(ctx, &aff2);
        vol_free(ctx, &v);
    }
}

static void test_raw_statistics(struct vox_ctx *ctx)
{
    struct vox_synth_params p;
    small_params(&p, 16, 96, 96, 3);
    p.missing_rate = p.shift_rate = 0;
    struct vol v = {0};
    CHECK_OK(gen(ctx, &p, &v));
    double mem, in;
    CHECK_OK(vox_synth_contrast(ctx, &v.raw, &v.labels, &mem, &in));
    CHECK(mem + 30 < in);
    CHECK(in > 150 && in < 230 && mem > 20);
    const uint8_t *r = v.raw.data;
    int64_t n = vox_tensor_numel(&v.raw), lo = 255, hi = 0;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        sum += r[i];
        lo = r[i] < lo ? r[i] : lo;
        hi = r[i] > hi ? r[i] : hi;
    }
    CHECK(sum / (double)n > 100 && sum / (double)n < 230);
    CHECK(lo < 80 && hi > 200);
    /* noise 0, blur 0, drift 0: raw takes only the tones and membrane levels */
    p.noise = p.blur = p.drift = 0;
    struct vol c = {0};
    CHECK_OK(gen(ctx, &p, &c));
    CHECK(same(&c.labels, &v.labels));
    CHECK_OK(vox_synth_contrast(ctx, &c.raw, &c.labels, &mem, &in));
    CHECK(in >= 165 && in <= 215);
    vol_free(ctx, &c);
    vol_free(ctx, &v);
}

static void test_defects_touch_raw_only(struct vox_ctx *ctx)
{
    struct vox_synth_params p;
    small_params(&p, 8, 40, 40, 5);
    p.missing_rate = p.shift_rate = 0;
    struct vol a = {0}, b = {0}, c = {0};
    CHECK_OK(gen(ctx, &p, &a));
    p.missing_rate = 1;
    CHECK_OK(gen(ctx, &p, &b));
    CHECK(same(&a.labels, &b.labels) && same(&a.aff, &b.aff) && !same(&a.raw, &b.raw));
    const uint8_t *r = b.raw.data;
    int black = 0;
    for (int64_t z = 0; z < 8; z++) {
        bool all0 = true;
        for (int64_t i = 0; i < 1600; i++)
            all0 &= r[z * 1600 + i] == 0;
        black += all0;
    }
    CHECK(black > 0 && black < 8); /* some black, some noise */
    p.missing_rate = 0;
    p.shift_rate = 1;
    CHECK_OK(gen(ctx, &p, &c));
    CHECK(same(&a.labels, &c.labels) && !same(&a.raw, &c.raw));
    vol_free(ctx, &a);
    vol_free(ctx, &b);
    vol_free(ctx, &c);
}

static void test_odd_shapes(struct vox_ctx *ctx)
{
    const int64_t shapes[][3] = {{1, 1, 1}, {1, 50, 3}, {7, 13, 17}, {30, 1, 1}, {2, 2, 90}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        struct vox_synth_params p;
        small_params(&p, shapes[k][0], shapes[k][1], shapes[k][2], 11);
        p.missing_rate = p.shift_rate = 0.5;
        struct vol v = {0};
        CHECK_OK(gen(ctx, &p, &v));
        CHECK(v.cells >= 1);
        check_labels(&v);
        check_affinities(&v);
        struct vox_tensor d;
        CHECK_OK(vox_synth_degrade(ctx, &v.aff, VOX_SYNTH_NOISY, 3, &d));
        vox_tensor_free(ctx, &d);
        vol_free(ctx, &v);
    }
}

static void test_bad_parameters(struct vox_ctx *ctx)
{
    struct vox_synth_params p;
    struct vox_tensor raw = {0};
    small_params(&p, 0, 8, 8, 1);
    CHECK_STATUS(vox_synth_generate(ctx, &p, &raw, NULL, NULL, NULL), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("shape[0] (z)");
    small_params(&p, 4, 8, -3, 1);
    CHECK_STATUS(vox_synth_generate(ctx, &p, &raw, NULL, NULL, NULL), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("shape[2] (x)");
    small_params(&p, 4, 8, 8, 1);
    p.anisotropy = 0;
    CHECK_STATUS(vox_synth_generate(ctx, &p, &raw, NULL, NULL, NULL), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("anisotropy");
    p.anisotropy = -2;
    CHECK_STATUS(vox_synth_check(ctx, &p), VOX_INVALID_ARG);
    p.anisotropy = 10;
    p.noise = -1;
    CHECK_STATUS(vox_synth_check(ctx, &p), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("noise");
    p.noise = NAN;
    CHECK_STATUS(vox_synth_check(ctx, &p), VOX_INVALID_ARG);
    p.noise = 1;
    p.missing_rate = 1.5;
    CHECK_STATUS(vox_synth_check(ctx, &p), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("missing_rate");
    CHECK(raw.data == NULL);
    struct vox_tensor lab, d;
    int64_t shape[3] = {2, 3, 4};
    CHECK_OK(vox_tensor_alloc(ctx, &lab, VOX_U64, 3, shape));
    CHECK_STATUS(vox_synth_degrade(ctx, &lab, VOX_SYNTH_SMOOTH, 1, &d), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("affinities");
    CHECK_STATUS(vox_synth_affinities(ctx, &raw, &d), VOX_INVALID_ARG);
    vox_tensor_free(ctx, &lab);
    enum vox_synth_preset pr;
    CHECK(vox_synth_preset_parse("noisy", &pr) && pr == VOX_SYNTH_NOISY);
    CHECK(!vox_synth_preset_parse("sharp", &pr));
    CHECK(strcmp(vox_synth_preset_str(VOX_SYNTH_SMOOTH), "smooth") == 0);
}

static void test_allocation_failures(struct vox_ctx *ctx)
{
    struct vox_synth_params p;
    small_params(&p, 5, 40, 30, 2);
    p.shift_rate = 1;
    bool done = false;
    for (int64_t n = 1; n < 200 && !done; n++) {
        struct vol v = {0};
        struct vox_tensor d = {0};
        vox_ctx_fail_alloc_at(ctx, n);
        enum vox_status s = gen(ctx, &p, &v);
        if (s == VOX_OK) {
            s = vox_synth_degrade(ctx, &v.aff, VOX_SYNTH_NOISY, 1, &d);
            done = s == VOX_OK;
        }
        CHECK(s == VOX_OK || s == VOX_OUT_OF_MEMORY);
        vox_ctx_fail_alloc_at(ctx, 0);
        vox_tensor_free(ctx, &d);
        vol_free(ctx, &v);
        CHECK(vox_ctx_live_allocs(ctx) == 0);
    }
    CHECK(done);
}

/* Mean degraded value over edges whose true value is `want`. */
static double mean_where(const struct vox_tensor *deg, const struct vox_tensor *aff, uint8_t want)
{
    const uint8_t *d = deg->data, *a = aff->data;
    double sum = 0, cnt = 0;
    for (int64_t i = 0; i < vox_tensor_numel(aff); i++)
        if (a[i] == want) {
            sum += d[i];
            cnt++;
        }
    return cnt ? sum / cnt : 0;
}

static void test_degrade(struct vox_ctx *ctx)
{
    struct vox_synth_params p;
    small_params(&p, 12, 64, 64, 9);
    struct vol v = {0};
    CHECK_OK(gen(ctx, &p, &v));
    struct vox_tensor s1, s2, s3, nz;
    CHECK_OK(vox_synth_degrade(ctx, &v.aff, VOX_SYNTH_SMOOTH, 4, &s1));
    CHECK_OK(vox_synth_degrade(ctx, &v.aff, VOX_SYNTH_SMOOTH, 4, &s2));
    CHECK_OK(vox_synth_degrade(ctx, &v.aff, VOX_SYNTH_SMOOTH, 5, &s3));
    CHECK_OK(vox_synth_degrade(ctx, &v.aff, VOX_SYNTH_NOISY, 4, &nz));
    CHECK(same(&s1, &s2) && !same(&s1, &s3) && !same(&s1, &nz));
    for (int c = 0; c < 3; c++)
        CHECK(s1.shape[c] == v.aff.shape[c]);
    /* smooth: high inside cells, low across boundaries, and spread (not just 0/255) */
    CHECK(mean_where(&s1, &v.aff, 255) > 190);
    CHECK(mean_where(&s1, &v.aff, 0) < 90);
    CHECK(mean_where(&nz, &v.aff, 255) > 150);
    int64_t mid = 0, n = vox_tensor_numel(&s1);
    for (int64_t i = 0; i < n; i++)
        mid += ((uint8_t *)s1.data)[i] > 60 && ((uint8_t *)s1.data)[i] < 190;
    CHECK(mid > n / 100);
    /* index 0 along axis c links to nothing */
    const uint8_t *d = nz.data;
    int64_t Y = 64, X = 64, N = 12 * Y * X, nonzero = 0;
    for (int64_t i = 0; i < Y * X; i++)
        nonzero += d[i];
    for (int64_t z = 0; z < 12; z++)
        for (int64_t y = 0; y < Y; y++)
            nonzero += d[2 * N + (z * Y + y) * X] + d[N + z * Y * X + y * 0];
    CHECK(nonzero == 0);
    vox_tensor_free(ctx, &s1);
    vox_tensor_free(ctx, &s2);
    vox_tensor_free(ctx, &s3);
    vox_tensor_free(ctx, &nz);
    vol_free(ctx, &v);
}

static void test_own_exp(struct vox_ctx *ctx)
{
    for (double x = 0; x > -60; x -= 0.37)
        CHECK_NEAR(synth_exp_neg(x) / exp(x), 1, 1e-11);
    CHECK(synth_exp_neg(0) == 1 && synth_exp_neg(-800) == 0);
}

VOX_TEST_MAIN(VOX_TEST(test_deterministic_and_threads), VOX_TEST(test_labels_and_affinities),
              VOX_TEST(test_raw_statistics), VOX_TEST(test_defects_touch_raw_only),
              VOX_TEST(test_odd_shapes), VOX_TEST(test_bad_parameters),
              VOX_TEST(test_allocation_failures), VOX_TEST(test_degrade), VOX_TEST(test_own_exp))
