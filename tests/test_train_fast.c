/*
 * test_train_fast.c: the JIT training kernels (src/nn/fast_train.c) against the reference
 * kernels (vox_nn_kernels_ref) at odd sizes and channel counts, with dilation, same padding
 * and every activation; bitwise identity for 1 and 2 threads; the whole trainer with fast
 * kernels against the reference after a few steps.
 *
 * Tolerance: the reference sums in double, the fast kernels in f32 in the nest's order, so
 * the difference is bounded by a few f32 ulps of the sum of |terms|; inputs are O(1).
 */
#include "harness.h"
#include "vox/vox.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void fill(struct vox_tensor *t, uint64_t *rng)
{
    float *p = t->data;
    for (int64_t e = 0; e < vox_tensor_numel(t); e++)
        p[e] = (float)((double)(vox_test_rand(rng) >> 11) / 9007199254740992.0 * 2 - 1);
}

static struct vox_tensor mk(struct vox_ctx *ctx, int64_t n, int64_t c, int64_t z, int64_t y,
                            int64_t x, uint64_t *rng)
{
    struct vox_tensor t = {0};
    int64_t s[5] = {n, c, z, y, x};
    CHECK_OK(vox_tensor_alloc(ctx, &t, VOX_F32, 5, s));
    if (t.data)
        fill(&t, rng);
    return t;
}

static struct vox_tensor copy(struct vox_ctx *ctx, const struct vox_tensor *a)
{
    struct vox_tensor t = {0};
    CHECK_OK(vox_tensor_alloc(ctx, &t, VOX_F32, a->rank, a->shape));
    if (t.data)
        memcpy(t.data, a->data, vox_tensor_nbytes(a));
    return t;
}

/* max |a - b| <= tol * (1 + max |b|) */
static bool close_to(const struct vox_tensor *a, const struct vox_tensor *b, double tol)
{
    const float *p = a->data, *q = b->data;
    double err = 0, big = 0;
    for (int64_t e = 0; e < vox_tensor_numel(a); e++) {
        err = fmax(err, fabs((double)p[e] - q[e]));
        big = fmax(big, fabs((double)q[e]));
    }
    if (err > tol * (1 + big))
        fprintf(stderr, "  max error %g (max |ref| %g)\n", err, big);
    return err <= tol * (1 + big);
}

static bool same_bits(const struct vox_tensor *a, const struct vox_tensor *b)
{
    return memcmp(a->data, b->data, vox_tensor_nbytes(a)) == 0;
}

struct conv_case {
    int64_t n, ci, co, in[3], k[3], dil[3];
    bool same, bias;
    enum vox_nn_act act;
};

/* Runs all three conv kernels of table kt on case c; results in out, gin, gw, gb (callers
 * free them). gin, gw, gb start from the same nonzero values (the kernels add into them). */
struct conv_run {
    struct vox_tensor out, gin, gw, gb, gset; /* gset: backward-data written with = */
};

static void run_conv(struct vox_ctx *ctx, const struct vox_nn_kernels *kt,
                     const struct conv_case *c, struct conv_run *r)
{
    uint64_t rng = 7;
    int64_t pad[3], o[3];
    for (int a = 0; a < 3; a++) {
        pad[a] = c->same ? (c->k[a] - 1) * c->dil[a] / 2 : 0;
        o[a] = c->same ? c->in[a] : c->in[a] - (c->k[a] - 1) * c->dil[a];
    }
    struct vox_tensor in = mk(ctx, c->n, c->ci, c->in[0], c->in[1], c->in[2], &rng);
    struct vox_tensor w = mk(ctx, c->co, c->ci, c->k[0], c->k[1], c->k[2], &rng);
    struct vox_tensor b = mk(ctx, 1, 1, 1, 1, c->co, &rng);
    struct vox_tensor gout = mk(ctx, c->n, c->co, o[0], o[1], o[2], &rng);
    b.rank = 1, b.shape[0] = c->co;
    r->out = mk(ctx, c->n, c->co, o[0], o[1], o[2], &rng);
    r->gin = mk(ctx, c->n, c->ci, c->in[0], c->in[1], c->in[2], &rng);
    r->gw = mk(ctx, c->co, c->ci, c->k[0], c->k[1], c->k[2], &rng);
    r->gb = copy(ctx, &b);
    r->gset = mk(ctx, c->n, c->ci, c->in[0], c->in[1], c->in[2], &rng); /* overwritten */
    struct vox_pool *pool = vox_ctx_pool(ctx);
    kt->conv(kt->self, pool, &in, &w, c->bias ? &b : NULL, c->dil, pad, c->act, &r->out);
    kt->conv_backward_data(kt->self, pool, &gout, &w, c->dil, pad, &r->gin);
    if (kt->conv_backward_data_set) {
        kt->conv_backward_data_set(kt->self, pool, &gout, &w, c->dil, pad, &r->gset);
    } else if (r->gset.data) {
        memset(r->gset.data, 0, vox_tensor_nbytes(&r->gset));
        kt->conv_backward_data(kt->self, pool, &gout, &w, c->dil, pad, &r->gset);
    }
    kt->conv_backward_weights(kt->self, pool, &in, &gout, c->dil, pad, &r->gw,
                              c->bias ? &r->gb : NULL);
    vox_tensor_free(ctx, &in);
    vox_tensor_free(ctx, &w);
    vox_tensor_free(ctx, &b);
    vox_tensor_free(ctx, &gout);
}

static void free_run(struct vox_ctx *ctx, struct conv_run *r)
{
    vox_tensor_free(ctx, &r->out);
    vox_tensor_free(ctx, &r->gin);
    vox_tensor_free(ctx, &r->gw);
    vox_tensor_free(ctx, &r->gb);
    vox_tensor_free(ctx, &r->gset);
}

static const struct conv_case conv_cases[] = {
    {1, 1, 5, {3, 11, 13}, {1, 3, 3}, {1, 1, 1}, false, true, VOX_ACT_ELU},
    {1, 3, 7, {4, 9, 19}, {2, 3, 3}, {1, 1, 1}, false, true, VOX_ACT_RELU},
    {2, 5, 3, {5, 7, 9}, {3, 3, 3}, {1, 2, 2}, false, false, VOX_ACT_LINEAR},
    {1, 6, 9, {3, 8, 21}, {3, 3, 3}, {1, 1, 1}, true, true, VOX_ACT_SIGMOID},
    {1, 4, 2, {2, 6, 7}, {1, 1, 1}, {1, 1, 1}, false, true, VOX_ACT_TANH},
    {1, 2, 3, {3, 5, 6}, {1, 3, 3}, {1, 1, 1}, true, true, VOX_ACT_SOFTMAX},
    {1, 17, 19, {2, 9, 37}, {1, 3, 3}, {1, 1, 1}, false, true, VOX_ACT_ELU},
    /* several output blocks in the backward-weights tile; a one-channel input (z taps split) */
    {1, 1, 40, {4, 6, 11}, {3, 3, 3}, {1, 1, 1}, false, true, VOX_ACT_RELU},
    {2, 3, 130, {3, 5, 7}, {2, 1, 3}, {1, 1, 1}, true, true, VOX_ACT_LINEAR},
    /* Winograd (extents 1 and 3, two 3s at least, a channel block in and out at least):
     * several tiles, partial ones on every side, several channel blocks, F(2x4x4), F(4x4)
     * and F(2x2) (the small slices' stores). Its rounding scales with the pre-activation, so
     * no saturating act here: after tanh the error would be measured against |out| <= 1. */
    {1, 16, 24, {5, 13, 22}, {3, 3, 3}, {1, 1, 1}, true, true, VOX_ACT_ELU},
    {2, 17, 20, {1, 17, 35}, {1, 3, 3}, {1, 1, 1}, true, true, VOX_ACT_RELU},
    {1, 16, 17, {6, 7, 5}, {3, 3, 1}, {1, 1, 1}, true, false, VOX_ACT_LINEAR},
    /* few output channels, more input ones: the mirrored direct backward-weights (vectors
     * along the input channels; co <= 4 lanes of 16, <= 2 of 8): an output conv's shape, z
     * taps with a halo and dilation, input channels past a lane block */
    {1, 16, 3, {3, 9, 21}, {1, 5, 5}, {1, 1, 1}, true, true, VOX_ACT_LINEAR},
    {1, 9, 2, {6, 7, 12}, {3, 3, 3}, {1, 2, 1}, false, false, VOX_ACT_RELU},
    {1, 20, 1, {5, 8, 9}, {2, 3, 3}, {1, 1, 1}, true, true, VOX_ACT_SIGMOID},
    /* a Winograd backward-weights whose D is large enough (>= 2 MB) for its shared mode */
    {1, 160, 160, {3, 6, 10}, {3, 3, 3}, {1, 1, 1}, true, true, VOX_ACT_ELU},
    /* a Winograd backward-weights of several blocks of tiles over several slots: each thread's
     * bands of the input start inside it (rows of tiles past the first) */
    {1, 16, 16, {4, 40, 72}, {3, 3, 3}, {1, 1, 1}, true, true, VOX_ACT_ELU},
    /* phase convs (from PHASE_FIRST on, with vox_nn_train_fast_set_phase 1: test_phase_taken):
     * dilation 2, 3 (rows merged one value at a time), 4 and 8 in y and x, extents that are not
     * multiples of it, z taps folded into channels (2 planes; 3 at dilation 2 with same
     * padding), same padding in y and x, several batch items, a dilation in y alone */
    {1, 16, 16, {3, 20, 23}, {1, 3, 3}, {1, 2, 2}, false, true, VOX_ACT_RELU},
    {2, 9, 16, {4, 17, 30}, {2, 3, 3}, {1, 4, 4}, false, true, VOX_ACT_ELU},
    {1, 16, 17, {3, 13, 14}, {1, 3, 3}, {1, 2, 2}, true, true, VOX_ACT_LINEAR},
    {1, 6, 16, {5, 11, 12}, {3, 3, 3}, {2, 2, 2}, true, false, VOX_ACT_LINEAR},
    {1, 8, 16, {3, 30, 27}, {2, 3, 3}, {1, 8, 8}, false, true, VOX_ACT_RELU},
    {1, 16, 16, {2, 17, 19}, {1, 3, 3}, {1, 3, 3}, false, true, VOX_ACT_ELU},
    {1, 16, 16, {2, 12, 15}, {1, 3, 3}, {1, 2, 1}, false, false, VOX_ACT_LINEAR},
    /* dilation 8 on rows of several whole groups of 4 x 8 (the merge's transposes) */
    {1, 8, 16, {2, 19, 75}, {1, 3, 3}, {1, 8, 8}, false, true, VOX_ACT_RELU},
};
enum { PHASE_FIRST = 17 }; /* conv_cases from here on run on phase views (mode 1) */

/* every conv kernel vs the reference; then again with backward-weights slabs of about two
 * z planes, so slab tails run, and Winograd bands of one row (or plane) of tiles each (same
 * tolerance) */
static void test_conv_kernels(struct vox_ctx *ctx)
{
    struct vox_nn_train_fast *f = NULL;
    CHECK_OK(vox_nn_train_fast_create(ctx, &f));
    if (!f)
        return;
    vox_nn_train_fast_set_phase(f, 1); /* the phase cases are small */
    const int64_t ncase = (int64_t)(sizeof conv_cases / sizeof conv_cases[0]);
    for (int64_t i = 0; i < 2 * ncase; i++) {
        const struct conv_case *c = &conv_cases[i % ncase];
        int64_t q[3];
        for (int a = 0; a < 3; a++)
            q[a] = c->same ? c->in[a] : c->in[a] - (c->k[a] - 1) * c->dil[a];
        vox_nn_train_fast_set_slab(f, i < ncase ? INT64_C(8) << 20
                                                : 2 * q[1] * q[2] * ((c->co + 15) / 16 * 16));
        vox_nn_train_fast_set_band(f, i < ncase ? INT64_C(4) << 20 : 1);
        struct conv_run a = {0}, b = {0};
        run_conv(ctx, vox_nn_kernels_ref(), c, &a);
        run_conv(ctx, vox_nn_train_fast_kernels(f), c, &b);
        bool ok = close_to(&b.out, &a.out, 2e-5) & close_to(&b.gin, &a.gin, 2e-5) &
                      close_to(&b.gw, &a.gw, 2e-5) & close_to(&b.gset, &a.gset, 2e-5) &&
                  close_to(&b.gb, &a.gb, 2e-5);
        if (!ok)
            fprintf(stderr, "  conv case %lld differs\n", (long long)i);
        CHECK(ok);
        free_run(ctx, &a);
        free_run(ctx, &b);
    }
    int64_t nf, nb;
    vox_nn_train_fast_counts(f, &nf, &nb);
    CHECK(nf == 8 * ncase); /* 4 kernels, 2 passes */
    CHECK(nb == 0);
    vox_nn_train_fast_destroy(f);
}

/* The phase calls (forward, backward-data added and set: 3 a case) in each mode: 1 (every
 * conv they apply to): the phase cases and a conv of 151 MFLOP, none before them; the
 * default: that one only; VOX_TRAIN_PHASE=0 (a new object reads it): none. */
static void test_phase_taken(struct vox_ctx *ctx)
{
    static const struct conv_case big = {1,         16,    16,   {8, 68, 68}, {1, 3, 3},
                                         {1, 2, 2}, false, true, VOX_ACT_RELU};
    const int64_t ncase = (int64_t)(sizeof conv_cases / sizeof conv_cases[0]);
    for (int mode = 0; mode < 3; mode++) { /* set_phase 1, the default, the variable's 0 */
        if (mode == 2)
            setenv("VOX_TRAIN_PHASE", "0", 1);
        struct vox_nn_train_fast *f = NULL;
        CHECK_OK(vox_nn_train_fast_create(ctx, &f));
        if (f && mode == 0)
            vox_nn_train_fast_set_phase(f, 1);
        for (int64_t i = 0; f && i <= ncase; i++) {
            const int64_t before = vox_nn_train_fast_phase_count(f);
            struct conv_run r = {0};
            run_conv(ctx, vox_nn_train_fast_kernels(f), i < ncase ? &conv_cases[i] : &big, &r);
            const bool taken = (mode == 0 && i >= PHASE_FIRST) || (mode == 1 && i == ncase);
            const int64_t want = taken ? 3 : 0;
            const int64_t got = vox_nn_train_fast_phase_count(f) - before;
            if (got != want)
                fprintf(stderr, "  mode %d, conv case %lld: %lld phase calls, expected %lld\n",
                        mode, (long long)i, (long long)got, (long long)want);
            CHECK(got == want);
            free_run(ctx, &r);
        }
        vox_nn_train_fast_destroy(f);
        unsetenv("VOX_TRAIN_PHASE");
    }
}

/* deconv, its backward data and weights vs the reference */
static void test_deconv_kernels(struct vox_ctx *ctx)
{
    static const struct {
        int64_t n, ci, co, in[3], k[3];
    } cases[] = {{1, 3, 5, {2, 3, 5}, {1, 2, 2}},
                 {2, 7, 2, {3, 4, 3}, {2, 2, 2}},
                 {1, 1, 9, {1, 5, 4}, {1, 3, 2}},
                 {1, 19, 20, {2, 5, 7}, {1, 2, 2}}, /* several channel tiles (80 = 20 x 4) */
                 {1, 4, 6, {2, 3, 21}, {1, 2, 2}}}; /* rows of 8 x and a tail (interleave_row) */
    struct vox_nn_train_fast *f = NULL;
    CHECK_OK(vox_nn_train_fast_create(ctx, &f));
    for (size_t i = 0; f && i < sizeof cases / sizeof cases[0]; i++) {
        struct vox_tensor res[2][4] = {{{0}}};
        for (int r = 0; r < 2; r++) {
            const struct vox_nn_kernels *kt =
                r ? vox_nn_train_fast_kernels(f) : vox_nn_kernels_ref();
            uint64_t rng = 11;
            const int64_t *s = cases[i].in, *k = cases[i].k, n = cases[i].n;
            struct vox_tensor in = mk(ctx, n, cases[i].ci, s[0], s[1], s[2], &rng);
            struct vox_tensor w = mk(ctx, cases[i].ci, cases[i].co, k[0], k[1], k[2], &rng);
            struct vox_tensor b = mk(ctx, 1, 1, 1, 1, cases[i].co, &rng);
            struct vox_tensor gout =
                mk(ctx, n, cases[i].co, s[0] * k[0], s[1] * k[1], s[2] * k[2], &rng);
            b.rank = 1, b.shape[0] = cases[i].co;
            res[r][0] = mk(ctx, n, cases[i].co, s[0] * k[0], s[1] * k[1], s[2] * k[2], &rng);
            res[r][1] = mk(ctx, n, cases[i].ci, s[0], s[1], s[2], &rng);
            res[r][2] = mk(ctx, cases[i].ci, cases[i].co, k[0], k[1], k[2], &rng);
            res[r][3] = copy(ctx, &b);
            struct vox_pool *pool = vox_ctx_pool(ctx);
            kt->deconv(kt->self, pool, &in, &w, &b, VOX_ACT_RELU, &res[r][0]);
            kt->deconv_backward_data(kt->self, pool, &gout, &w, &res[r][1]);
            kt->deconv_backward_weights(kt->self, pool, &in, &gout, &res[r][2], &res[r][3]);
            vox_tensor_free(ctx, &in);
            vox_tensor_free(ctx, &w);
            vox_tensor_free(ctx, &b);
            vox_tensor_free(ctx, &gout);
        }
        for (int t = 0; t < 4; t++) {
            CHECK(close_to(&res[1][t], &res[0][t], 2e-5));
            vox_tensor_free(ctx, &res[0][t]);
            vox_tensor_free(ctx, &res[1][t]);
        }
    }
    vox_nn_train_fast_destroy(f);
}

/* 1 and 2 threads: the same bits from every kernel */
static void test_threads(struct vox_ctx *ctx)
{
    struct vox_ctx *one = NULL;
    struct vox_ctx_options co = {.threads = 1, .log_level = VOX_LOG_WARN};
    CHECK_OK(vox_ctx_create(&co, &one));
    struct vox_nn_train_fast *f1 = NULL, *f2 = NULL;
    if (one)
        CHECK_OK(vox_nn_train_fast_create(one, &f1));
    CHECK_OK(vox_nn_train_fast_create(ctx, &f2));
    if (f1 && f2) {
        vox_nn_train_fast_set_phase(f1, 1);
        vox_nn_train_fast_set_phase(f2, 1);
    }
    for (size_t i = 0; f1 && f2 && i < sizeof conv_cases / sizeof conv_cases[0]; i++) {
        struct conv_run a = {0}, b = {0};
        run_conv(one, vox_nn_train_fast_kernels(f1), &conv_cases[i], &a);
        run_conv(ctx, vox_nn_train_fast_kernels(f2), &conv_cases[i], &b);
        CHECK(same_bits(&a.out, &b.out) && same_bits(&a.gin, &b.gin) && same_bits(&a.gw, &b.gw) &&
              same_bits(&a.gb, &b.gb));
        free_run(one, &a);
        free_run(ctx, &b);
    }
    vox_nn_train_fast_destroy(f1);
    vox_nn_train_fast_destroy(f2);
    vox_ctx_destroy(one);
}

/* FFT convs (vox_nn_train_fast_set_fft): valid and same padding, dilation, uneven kernels and
 * extents (partial tiles), several batch items, with and without bias, every activation but
 * softmax; against the reference (the transforms' rounding: a looser bound), then 1 and 2
 * threads bit for bit, and the default mode's pick: FFT for a wide 5^3 conv, not for 3^3. */
static const struct conv_case fft_cases[] = {
    {1, 3, 4, {9, 10, 11}, {5, 5, 5}, {1, 1, 1}, false, true, VOX_ACT_RELU},
    {2, 2, 3, {7, 12, 9}, {3, 5, 3}, {1, 2, 1}, true, true, VOX_ACT_ELU},
    {1, 5, 2, {6, 6, 14}, {2, 3, 4}, {2, 1, 1}, false, false, VOX_ACT_LINEAR},
    {1, 1, 6, {7, 9, 13}, {3, 3, 5}, {1, 1, 2}, true, true, VOX_ACT_SIGMOID},
    {1, 4, 3, {5, 8, 8}, {1, 7, 7}, {1, 1, 1}, false, true, VOX_ACT_TANH},
};

static void test_fft_kernels(struct vox_ctx *ctx)
{
    struct vox_ctx *one = NULL;
    struct vox_ctx_options co = {.threads = 1, .log_level = VOX_LOG_WARN};
    CHECK_OK(vox_ctx_create(&co, &one));
    struct vox_nn_train_fast *f = NULL, *f1 = NULL;
    CHECK_OK(vox_nn_train_fast_create(ctx, &f));
    if (one)
        CHECK_OK(vox_nn_train_fast_create(one, &f1));
    if (!f || !f1)
        goto done;
    vox_nn_train_fast_set_fft(f, 1);
    vox_nn_train_fast_set_fft(f1, 1);
    const int64_t ncase = (int64_t)(sizeof fft_cases / sizeof fft_cases[0]);
    for (int64_t i = 0; i < 2 * ncase; i++) {
        const struct conv_case *c = &fft_cases[i % ncase];
        /* the second pass: groups of 2 tiles (several groups: the weight gradient's sums of
         * each added into the spectra in order) */
        vox_nn_train_fast_set_fft_group(f, i < ncase ? 0 : 2);
        vox_nn_train_fast_set_fft_group(f1, i < ncase ? 0 : 2);
        struct conv_run a = {0}, b = {0}, d = {0};
        run_conv(ctx, vox_nn_kernels_ref(), c, &a);
        run_conv(ctx, vox_nn_train_fast_kernels(f), c, &b);
        run_conv(one, vox_nn_train_fast_kernels(f1), c, &d);
        bool ok = close_to(&b.out, &a.out, 1e-4) & close_to(&b.gin, &a.gin, 1e-4) &
                      close_to(&b.gw, &a.gw, 1e-4) & close_to(&b.gset, &a.gset, 1e-4) &&
                  close_to(&b.gb, &a.gb, 1e-4);
        if (!ok)
            fprintf(stderr, "  fft case %lld differs\n", (long long)i);
        CHECK(ok);
        CHECK(same_bits(&b.out, &d.out) && same_bits(&b.gin, &d.gin) && same_bits(&b.gw, &d.gw) &&
              same_bits(&b.gset, &d.gset));
        free_run(ctx, &a);
        free_run(ctx, &b);
        free_run(one, &d);
    }
    int64_t nf, nb;
    vox_nn_train_fast_counts(f, &nf, &nb);
    CHECK(nf == 8 * ncase && nb == 0);
    CHECK(vox_nn_train_fast_fft_count(f) == 4 * ncase); /* forward and adjoint, 2 groupings */
    /* the default mode: a 32 -> 32 5^3 conv to 48^3 goes to FFT (the model: 0.44 of the direct
     * nest's time), a 3^3 one does not (Winograd); counted by the FFT objects planned */
    static const struct conv_case pick[] = {
        {1, 32, 32, {52, 52, 52}, {5, 5, 5}, {1, 1, 1}, false, true, VOX_ACT_RELU},
        {1, 32, 32, {50, 50, 50}, {3, 3, 3}, {1, 1, 1}, false, true, VOX_ACT_RELU}};
    for (int k = 0; k < 2; k++) {
        struct vox_nn_train_fast *fd = NULL;
        CHECK_OK(vox_nn_train_fast_create(ctx, &fd));
        if (!fd)
            break;
        struct conv_run b = {0};
        run_conv(ctx, vox_nn_train_fast_kernels(fd), &pick[k], &b);
        if (vox_nn_train_fast_fft_count(fd) != (k == 0 ? 2 : 0))
            fprintf(stderr, "  pick %d: %d FFT convs\n", k, vox_nn_train_fast_fft_count(fd));
        CHECK(vox_nn_train_fast_fft_count(fd) == (k == 0 ? 2 : 0)); /* forward and adjoint */
        free_run(ctx, &b);
        vox_nn_train_fast_destroy(fd);
    }
done:
    vox_nn_train_fast_destroy(f);
    vox_nn_train_fast_destroy(f1);
    vox_ctx_destroy(one);
}

/* A whole graph (pooling, deconv, upsample, crop, a 3-way add, max-filter, concat) forward
 * and backward on 1 and 2 threads: the same parameter gradients, bit for bit. */
/* One backward of net at patch on ctx (fast kernels), input gradients on or off, into *gw;
 * *kept: whether layer `probe`'s gradient (probe >= 0) still holds what was put there
 * before (NaN). */
static void backward_grads(struct vox_ctx *ctx, const struct vox_net *net, const int64_t patch[3],
                           bool input_grads, int probe, struct vox_nn_weights **gw, bool *kept)
{
    struct vox_nn_train_fast *f = NULL;
    struct vox_nn_graph *g = NULL;
    struct vox_nn_weights *w = NULL;
    *kept = false;
    CHECK_OK(vox_nn_train_fast_create(ctx, &f));
    if (f)
        CHECK_OK(vox_nn_graph_create(ctx, net, patch, vox_nn_train_fast_kernels(f), &g));
    CHECK_OK(vox_nn_weights_create(ctx, net, &w));
    CHECK_OK(vox_nn_weights_create(ctx, net, gw));
    if (g && w && *gw) {
        vox_nn_graph_set_input_grads(g, input_grads);
        vox_nn_weights_init(net, w, VOX_INIT_MSRA, 3);
        uint64_t rng = 5;
        struct vox_tensor in =
            mk(ctx, 1, net->layers[0].channels, patch[0], patch[1], patch[2], &rng);
        CHECK_OK(vox_nn_graph_forward(ctx, g, w, &in));
        vox_nn_graph_zero_grad(g);
        struct vox_tensor *pg = probe >= 0 ? vox_nn_graph_grad(g, probe) : NULL;
        for (int64_t e = 0; pg && e < vox_tensor_numel(pg); e++)
            ((float *)pg->data)[e] = NAN;
        struct vox_tensor *go = vox_nn_graph_grad(g, vox_net_output(net, 0));
        float *gp = go->data;
        for (int64_t e = 0; e < vox_tensor_numel(go); e++)
            gp[e] = (float)((e * 7 % 13) - 6) / 5.0f;
        vox_nn_graph_backward(ctx, g, w, *gw);
        *kept = pg && isnan(((float *)pg->data)[0]);
        vox_tensor_free(ctx, &in);
    }
    vox_nn_weights_destroy(w);
    vox_nn_graph_destroy(g);
    vox_nn_train_fast_destroy(f);
}

static void graph_grads(struct vox_ctx *ctx, const struct vox_net *net, struct vox_nn_weights **gw)
{
    static const int64_t patch[3] = {4, 12, 12};
    bool kept;
    backward_grads(ctx, net, patch, true, -1, gw, &kept);
}

/* One step's backward with output gradient pattern k into gw (zeroed first). */
static void graph_step(struct vox_ctx *ctx, struct vox_nn_graph *g, const struct vox_net *net,
                       const struct vox_nn_weights *w, struct vox_nn_weights *gw,
                       const struct vox_tensor *in, int k)
{
    for (int i = 0; i < gw->n_layers; i++)
        for (int p = 0; p < VOX_P_COUNT; p++)
            if (gw->p[i][p].rank)
                memset(gw->p[i][p].data, 0, vox_tensor_nbytes(&gw->p[i][p]));
    CHECK_OK(vox_nn_graph_forward(ctx, g, w, in));
    vox_nn_graph_zero_grad(g);
    struct vox_tensor *go = vox_nn_graph_grad(g, vox_net_output(net, 0));
    float *gp = go->data;
    for (int64_t e = 0; e < vox_tensor_numel(go); e++)
        gp[e] = (float)((e * (7 + 4 * k) % 13) - 6) / 5.0f;
    vox_nn_graph_backward(ctx, g, w, gw);
}

/* Gradients a layer's one consumer writes with = (conv, max-pooling, add; not zeroed by
 * vox_nn_graph_zero_grad): a second step on the same graph gives the bits of a first step on
 * a fresh one (nothing left over from the step before), input gradient included. */
static void test_graph_second_step(struct vox_ctx *ctx)
{
    static const char spec[] = "input raw channels=1\n"
                               "conv c1 raw -> 16 kernel=1x3x3 act=elu\n"
                               "pool p c1 window=1x2x2\n"
                               "conv c2 p -> 16 kernel=3x3x3 pad=same act=elu\n"
                               "conv c3 c2 -> 16 kernel=3x3x3 pad=same\n"
                               "add s c3 p act=elu\n"
                               "conv o s -> 3 kernel=1\n"
                               "output aff o act=sigmoid\n";
    static const int64_t patch[3] = {4, 12, 12};
    struct vox_net *net = NULL;
    CHECK_OK(vox_net_parse(ctx, spec, "second.net", &net));
    struct vox_nn_train_fast *f = NULL;
    struct vox_nn_graph *g[2] = {NULL, NULL};
    struct vox_nn_weights *w = NULL, *gw[2] = {NULL, NULL};
    CHECK_OK(vox_nn_train_fast_create(ctx, &f));
    for (int r = 0; r < 2 && f && net; r++) {
        CHECK_OK(vox_nn_graph_create(ctx, net, patch, vox_nn_train_fast_kernels(f), &g[r]));
        if (g[r]) /* every layer's gradient compared below */
            CHECK_OK(vox_nn_graph_set_keep(g[r], true));
        CHECK_OK(vox_nn_weights_create(ctx, net, &gw[r]));
    }
    if (net)
        CHECK_OK(vox_nn_weights_create(ctx, net, &w));
    if (g[0] && g[1] && w && gw[0] && gw[1]) {
        vox_nn_weights_init(net, w, VOX_INIT_MSRA, 3);
        uint64_t rng = 9;
        struct vox_tensor in = mk(ctx, 1, 1, patch[0], patch[1], patch[2], &rng);
        graph_step(ctx, g[0], net, w, gw[0], &in, 0);
        graph_step(ctx, g[0], net, w, gw[0], &in, 1);
        graph_step(ctx, g[1], net, w, gw[1], &in, 1);
        for (int i = 0; i < net->n_layers; i++) {
            for (int p = 0; p < VOX_P_COUNT; p++)
                if (gw[0]->p[i][p].rank)
                    CHECK(same_bits(&gw[0]->p[i][p], &gw[1]->p[i][p]));
            CHECK(same_bits(vox_nn_graph_grad(g[0], i), vox_nn_graph_grad(g[1], i)));
        }
        vox_tensor_free(ctx, &in);
    }
    for (int r = 0; r < 2; r++) {
        vox_nn_graph_destroy(g[r]);
        vox_nn_weights_destroy(gw[r]);
    }
    vox_nn_weights_destroy(w);
    vox_nn_train_fast_destroy(f);
    vox_net_destroy(net);
}

static void test_graph_threads(struct vox_ctx *ctx)
{
    static const char spec[] = "input raw channels=1\n"
                               "conv c1 raw -> 4 kernel=1x3x3 act=elu\n"
                               "pool p c1 window=1x2x2\n"
                               "deconv u p -> 4 kernel=1x2x2\n"
                               "upsample up p factor=1x2x2\n"
                               "crop k c1 to=u\n"
                               "add s u k up act=elu\n"
                               "maxfilter m s window=2x2x2\n"
                               "conv c2 m -> 2 kernel=1 pad=same act=relu\n"
                               "concat cat m c2\n"
                               "conv o cat -> 3 kernel=1\n"
                               "output aff o act=sigmoid\n";
    struct vox_ctx *one = NULL;
    struct vox_ctx_options co = {.threads = 1, .log_level = VOX_LOG_WARN};
    CHECK_OK(vox_ctx_create(&co, &one));
    struct vox_net *net = NULL;
    CHECK_OK(vox_net_parse(ctx, spec, "graph.net", &net));
    struct vox_nn_weights *g1 = NULL, *g2 = NULL;
    if (one && net) {
        graph_grads(one, net, &g1);
        graph_grads(ctx, net, &g2);
    }
    int64_t diff = 0, nonzero = 0;
    for (int i = 0; g1 && g2 && i < net->n_layers; i++)
        for (int k = 0; k < VOX_P_COUNT; k++)
            if (g1->p[i][k].rank) {
                if (!same_bits(&g1->p[i][k], &g2->p[i][k]) && diff++ == 0)
                    fprintf(stderr, "  layer %s parameter %d differs\n", net->layers[i].name, k);
                const float *p = g1->p[i][k].data;
                for (int64_t e = 0; e < vox_tensor_numel(&g1->p[i][k]); e++)
                    nonzero += p[e] != 0;
            }
    CHECK(g1 && g2 && diff == 0 && nonzero > 0);
    vox_nn_weights_destroy(g1);
    vox_nn_weights_destroy(g2);
    vox_net_destroy(net);
    vox_ctx_destroy(one);
}

/* A conv reading a net input whose output only a max-pooling reads: with input gradients off
 * the pooling computes the conv's weight and bias gradients from the argmax voxels alone
 * (graph.c pool_conv_grads, the conv's own gradient never written) where its products are
 * at most twice the window's voxels. Its parameter gradients against the dense backward
 * (input gradients on) within 2e-5, valid and same padding, dilation, every act; bitwise the
 * same for 1 and 2 threads; a conv with more products keeps the dense way. */
static void test_pool_conv_sparse(struct vox_ctx *ctx)
{
    static const struct {
        const char *layers;
        int64_t patch[3];
        bool sparse;
    } cases[] = {
        {"input raw channels=2\nconv c1 raw -> 5 kernel=2x2x2 dilation=1x1x2 act=relu\n"
         "pool p c1 window=2x2x2\n",
         {7, 13, 14},
         true},
        {"input raw channels=2\nconv c1 raw -> 5 kernel=1x1x3 pad=same act=elu\n"
         "pool p c1 window=2x2x2\n",
         {4, 10, 12},
         true},
        {"input raw channels=1\nconv c1 raw -> 4 kernel=1x3x3 pad=same act=tanh\n"
         "pool p c1 window=2x2x2\n",
         {6, 10, 10},
         true},
        {"input raw channels=2\nconv c1 raw -> 3 kernel=2x2x2\npool p c1 window=2x2x2\n",
         {7, 9, 9},
         true},
        {"input raw channels=1\nconv c1 raw -> 3 kernel=3x3x3 act=relu\npool p c1 window=2x2x2\n",
         {8, 8, 8},
         false},
        /* one channel, 2x2x2 (n337's first conv): its eight sums in registers, valid and with
         * same padding (border voxels' sums in between) */
        {"input raw channels=1\nconv c1 raw -> 4 kernel=2x2x2 act=relu\npool p c1 window=2x2x2\n",
         {9, 11, 13},
         true},
        {"input raw channels=1\nconv c1 raw -> 4 kernel=2x2x2 pad=same act=elu\n"
         "pool p c1 window=2x2x2\n",
         {8, 10, 12},
         true},
    };
    struct vox_ctx *one = NULL;
    struct vox_ctx_options co = {.threads = 1, .log_level = VOX_LOG_WARN};
    CHECK_OK(vox_ctx_create(&co, &one));
    for (size_t k = 0; one && k < sizeof cases / sizeof cases[0]; k++) {
        char spec[512];
        snprintf(spec, sizeof spec, "%sconv c2 p -> 3 kernel=1\noutput aff c2 act=sigmoid\n",
                 cases[k].layers);
        struct vox_net *net = NULL;
        CHECK_OK(vox_net_parse(ctx, spec, "sparse.net", &net));
        if (!net)
            continue;
        struct vox_nn_weights *dense = NULL, *sparse = NULL, *sparse1 = NULL;
        bool kept_dense = true, kept_sparse = false, kept1 = false;
        const int64_t *patch = cases[k].patch;
        backward_grads(ctx, net, patch, true, 1, &dense, &kept_dense);
        backward_grads(ctx, net, patch, false, 1, &sparse, &kept_sparse);
        backward_grads(one, net, patch, false, 1, &sparse1, &kept1);
        /* the sparse way taken where expected, and never with input gradients on */
        CHECK(!kept_dense && kept_sparse == cases[k].sparse && kept1 == cases[k].sparse);
        for (int i = 0; dense && sparse && sparse1 && i < net->n_layers; i++)
            for (int p = 0; p < VOX_P_COUNT; p++)
                if (dense->p[i][p].rank) {
                    if (!close_to(&sparse->p[i][p], &dense->p[i][p], 2e-5))
                        fprintf(stderr, "  case %zu layer %s parameter %d\n", k,
                                net->layers[i].name, p);
                    CHECK(close_to(&sparse->p[i][p], &dense->p[i][p], 2e-5));
                    CHECK(same_bits(&sparse->p[i][p], &sparse1->p[i][p]));
                }
        vox_nn_weights_destroy(dense);
        vox_nn_weights_destroy(sparse);
        vox_nn_weights_destroy(sparse1);
        vox_net_destroy(net);
    }
    vox_ctx_destroy(one);
}

/* The pointwise acts of add, act and output layers and their slopes (the kernels' vector
 * act and act_backward): every layer's values with the fast kernels within 2e-6 of the
 * reference's, and every layer's gradient and the parameter gradients within 2e-5 (the vector expm1
 * is within 4e-7 of libm's; the convs, not Winograd's (two kernel extents of 3 at least), differ by
 * f32 rounding), at a width whose rows end in a partial vector. The two max-filters take their
 * input's slope on their rows (an add's elu, a conv's relu; the reference kernels take it in a
 * pass of its own) and write its gradient with = (no zeroing before). */
static void test_graph_acts(struct vox_ctx *ctx)
{
    static const char spec[] = "input raw channels=1\n"
                               "conv c1 raw -> 3 kernel=1x1x3 act=relu\n"
                               "conv c2 raw -> 3 kernel=1\n"
                               "crop k c2 to=c1\n"
                               "add s c1 k act=elu\n"
                               "act t s fn=tanh\n"
                               "add s3 s t c1 act=elu\n"
                               "maxfilter m s3 window=1x2x2 dilation=1x1x2\n"
                               "conv c3 m -> 3 kernel=1x2x1 act=relu\n"
                               "maxfilter m2 c3 window=2x1x1\n"
                               "conv o m2 -> 2 kernel=1\n"
                               "output aff o act=sigmoid\n";
    static const int64_t patch[3] = {3, 13, 21};
    struct vox_net *net = NULL;
    struct vox_nn_train_fast *f = NULL;
    struct vox_nn_graph *g[2] = {NULL, NULL};
    struct vox_nn_weights *w = NULL;
    CHECK_OK(vox_net_parse(ctx, spec, "acts.net", &net));
    CHECK_OK(vox_nn_train_fast_create(ctx, &f));
    for (int r = 0; net && f && r < 2; r++) {
        CHECK_OK(
            vox_nn_graph_create(ctx, net, patch, r ? vox_nn_train_fast_kernels(f) : NULL, &g[r]));
        if (g[r]) /* every layer's value and gradient compared below */
            CHECK_OK(vox_nn_graph_set_keep(g[r], true));
    }
    if (net)
        CHECK_OK(vox_nn_weights_create(ctx, net, &w));
    if (g[0] && g[1] && w) {
        vox_nn_weights_init(net, w, VOX_INIT_MSRA, 7);
        uint64_t rng = 11;
        struct vox_tensor in = mk(ctx, 1, 1, patch[0], patch[1], patch[2], &rng);
        for (float *p = in.data; p < (float *)in.data + vox_tensor_numel(&in); p++)
            *p *= 4.0f; /* values on both sides of 0, and far into elu's and tanh's tails */
        for (int r = 0; r < 2; r++)
            CHECK_OK(vox_nn_graph_forward(ctx, g[r], w, &in));
        for (int i = 0; i < net->n_layers; i++)
            if (net->layers[i].kind != VOX_NN_INPUT &&
                !close_to(vox_nn_graph_value(g[1], i), vox_nn_graph_value(g[0], i), 2e-6)) {
                fprintf(stderr, "  layer %s differs\n", net->layers[i].name);
                CHECK(false);
            }
        /* backward through the acts' slopes: every parameter gradient within 2e-5 */
        struct vox_nn_weights *gw[2] = {NULL, NULL};
        for (int r = 0; r < 2; r++) {
            CHECK_OK(vox_nn_weights_create(ctx, net, &gw[r]));
            vox_nn_graph_zero_grad(g[r]);
            struct vox_tensor *go = vox_nn_graph_grad(g[r], vox_net_output(net, 0));
            float *gp = go->data;
            for (int64_t e = 0; e < vox_tensor_numel(go); e++)
                gp[e] = ((float)(e * 7 % 13) - 6.5f) / 5.0f; /* never 0 */
            if (gw[r])
                vox_nn_graph_backward(ctx, g[r], w, gw[r]);
        }
        for (int i = 0; gw[0] && gw[1] && i < net->n_layers; i++) {
            if (net->layers[i].kind != VOX_NN_INPUT &&
                !close_to(vox_nn_graph_grad(g[1], i), vox_nn_graph_grad(g[0], i), 2e-5)) {
                fprintf(stderr, "  layer %s gradient differs\n", net->layers[i].name);
                CHECK(false);
            }
            for (int k = 0; k < VOX_P_COUNT; k++)
                if (gw[0]->p[i][k].rank && !close_to(&gw[1]->p[i][k], &gw[0]->p[i][k], 2e-5)) {
                    fprintf(stderr, "  layer %s parameter %d gradient differs\n",
                            net->layers[i].name, k);
                    CHECK(false);
                }
        }
        for (int r = 0; r < 2; r++)
            vox_nn_weights_destroy(gw[r]);
        vox_tensor_free(ctx, &in);
    }
    vox_nn_weights_destroy(w);
    for (int r = 0; r < 2; r++)
        vox_nn_graph_destroy(g[r]);
    vox_nn_train_fast_destroy(f);
    vox_net_destroy(net);
}

/* Buffers by lifetime (graph.c alloc_tensors): a graph that shares buffers and one that keeps
 * every tensor apart (vox_nn_graph_set_keep) give the same bits (outputs, input gradients,
 * every parameter gradient) over three steps of one graph each, for a U-Net with batch norm,
 * poolings, transposed convs, skip adds, a crop, a concat and two inputs, on the reference and
 * the fast kernels; and the shared one takes fewer bytes. A tensor freed too early (its buffer
 * taken by another before its last reader) or a gradient not zeroed before its first adder
 * changes the bits. The shared graph stores its adds' sums past the caches
 * (vox_nn_graph_set_stream 0), the kept one through them: the same bits too. */
static void test_graph_buffers(struct vox_ctx *ctx)
{
    static const char spec[] = "input raw channels=1\n"
                               "input aux channels=2\n"
                               "conv e raw -> 16 kernel=1x3x3 pad=same act=elu\n"
                               "concat ea e aux\n"
                               "conv a0 ea -> 16 kernel=1x3x3 pad=same bn=yes act=elu\n"
                               "conv b0 a0 -> 16 kernel=3x3x3 pad=same act=elu\n"
                               "conv c0 b0 -> 16 kernel=3x3x3 pad=same\n"
                               "add d0 a0 c0 act=elu\n"
                               "pool p1 d0 window=1x2x2\n"
                               "conv a1 p1 -> 32 kernel=1x3x3 pad=same act=relu\n"
                               "conv c1 a1 -> 32 kernel=3x3x3 pad=same bn=yes\n"
                               "add d1 a1 c1 act=elu\n"
                               "deconv u0 d1 -> 16 kernel=1x2x2\n"
                               "add s0 u0 d0\n"
                               "conv m0 s0 -> 16 kernel=1x3x3 pad=same act=tanh\n"
                               "conv m1 m0 -> 8 kernel=3x3x3\n"
                               "crop k d0 to=m1\n"
                               "concat q m1 k\n"
                               "conv o q -> 3 kernel=1\n"
                               "output aff o act=sigmoid\n";
    static const int64_t patch[3] = {6, 16, 24};
    struct vox_net *net = NULL;
    struct vox_nn_train_fast *f = NULL;
    struct vox_nn_weights *ref = NULL; /* the reference kernels' last gradients */
    CHECK_OK(vox_net_parse(ctx, spec, "buffers.net", &net));
    CHECK_OK(vox_nn_train_fast_create(ctx, &f));
    for (int fast = 0; net && f && fast < 2; fast++) {
        struct vox_nn_graph *g[2] = {NULL, NULL};
        struct vox_nn_weights *w = NULL, *gw[2] = {NULL, NULL};
        CHECK_OK(vox_nn_weights_create(ctx, net, &w));
        for (int r = 0; r < 2; r++) {
            CHECK_OK(vox_nn_graph_create(ctx, net, patch,
                                         fast ? vox_nn_train_fast_kernels(f) : NULL, &g[r]));
            CHECK_OK(vox_nn_weights_create(ctx, net, &gw[r]));
        }
        if (!g[0] || !g[1] || !w || !gw[0] || !gw[1])
            goto next;
        CHECK_OK(vox_nn_graph_set_keep(g[1], true));
        vox_nn_graph_set_stream(g[0], 0); /* its adds' sums stored past the caches */
        fprintf(stderr, "  %s: %lld bytes shared, %lld kept\n", fast ? "fast" : "reference",
                (long long)vox_nn_graph_bytes(g[0]), (long long)vox_nn_graph_bytes(g[1]));
        CHECK(vox_nn_graph_bytes(g[0]) * 4 < vox_nn_graph_bytes(g[1]) * 3);
        vox_nn_weights_init(net, w, VOX_INIT_MSRA, 17);
        uint64_t rng = 23;
        struct vox_tensor in[2] = {mk(ctx, 1, 1, patch[0], patch[1], patch[2], &rng),
                                   mk(ctx, 1, 2, patch[0], patch[1], patch[2], &rng)};
        for (int step = 0; step < 3; step++) {
            for (int r = 0; r < 2; r++) {
                CHECK_OK(vox_nn_graph_forward(ctx, g[r], w, in));
                vox_nn_graph_zero_grad(g[r]);
                struct vox_tensor *go = vox_nn_graph_grad(g[r], vox_net_output(net, 0));
                float *gp = go->data;
                for (int64_t e = 0; e < vox_tensor_numel(go); e++)
                    gp[e] = (float)((e * (7 + 4 * step) % 13) - 6) / 5.0f;
                vox_nn_graph_backward(ctx, g[r], w, gw[r]);
            }
            CHECK(same_bits(vox_nn_graph_value(g[0], vox_net_output(net, 0)),
                            vox_nn_graph_value(g[1], vox_net_output(net, 0))));
            for (int k = 0; k < 2; k++)
                CHECK(same_bits(vox_nn_graph_grad(g[0], vox_net_input(net, k)),
                                vox_nn_graph_grad(g[1], vox_net_input(net, k))));
            for (int i = 0; i < net->n_layers; i++)
                for (int p = 0; p < VOX_P_COUNT; p++)
                    if (gw[0]->p[i][p].rank && !same_bits(&gw[0]->p[i][p], &gw[1]->p[i][p])) {
                        fprintf(stderr, "  %s: layer %s parameter %d gradient differs (step %d)\n",
                                fast ? "fast" : "reference", net->layers[i].name, p, step);
                        CHECK(false);
                    }
        }
        for (int k = 0; k < 2; k++)
            vox_tensor_free(ctx, &in[k]);
        /* the fast kernels' gradients against the reference's (the Winograd convs' rounding;
         * an act's slope the fast graph left out, c0's weight gradient taking b0's beside it,
         * is off by far more) */
        for (int i = 0; fast && ref && i < net->n_layers; i++)
            for (int p = 0; p < VOX_P_COUNT; p++)
                if (ref->p[i][p].rank && !close_to(&gw[0]->p[i][p], &ref->p[i][p], 1e-4)) {
                    fprintf(stderr, "  layer %s parameter %d: fast against reference\n",
                            net->layers[i].name, p);
                    CHECK(false);
                }
        if (!fast) {
            ref = gw[0];
            gw[0] = NULL;
        }
    next:
        for (int r = 0; r < 2; r++) {
            vox_nn_graph_destroy(g[r]);
            vox_nn_weights_destroy(gw[r]);
        }
        vox_nn_weights_destroy(w);
    }
    vox_nn_weights_destroy(ref);
    vox_nn_train_fast_destroy(f);
    vox_net_destroy(net);
}

static const char net_text[] = "input raw channels=1\n"
                               "conv c1 raw -> 7 kernel=1x3x3 act=elu\n"
                               "conv c2 c1 -> 5 kernel=2x3x3 act=relu\n"
                               "conv c3 c2 -> 6 kernel=3 pad=same act=elu\n"
                               "conv c4 c3 -> 3 kernel=1\n"
                               "output aff c4 act=sigmoid\n";

/* batch norm after convs with and without bias; SGD (Adam would turn the rounding noise of the
 * pre-bn bias's zero gradient into full-size steps) */
static const char bn_net_text[] = "input raw channels=1\n"
                                  "conv c1 raw -> 7 kernel=1x3x3 act=tanh\n"
                                  "conv c2 c1 -> 5 kernel=2x3x3 bn=yes act=relu\n"
                                  "conv c3 c2 -> 6 kernel=3 pad=same bias=no bn=yes act=elu\n"
                                  "conv c4 c3 -> 3 kernel=1\n"
                                  "output aff c4 act=sigmoid\n";

static void make_volume(struct vox_ctx *ctx, const char *file)
{
    struct vox_synth_params p;
    vox_synth_defaults(&p);
    p.shape[0] = 8, p.shape[1] = 48, p.shape[2] = 48;
    p.seed = 5;
    struct vox_tensor raw = {0}, lab = {0};
    CHECK_OK(vox_synth_generate(ctx, &p, &raw, &lab, NULL, NULL));
    char spec[600];
    snprintf(spec, sizeof spec, "%s:/raw", file);
    CHECK_OK(vox_volume_save(ctx, spec, &raw, NULL));
    snprintf(spec, sizeof spec, "%s:/labels", file);
    CHECK_OK(vox_volume_save(ctx, spec, &lab, NULL));
    vox_tensor_free(ctx, &raw);
    vox_tensor_free(ctx, &lab);
}

/* the trainer with fast kernels: the same losses and weights as with the reference, within
 * f32 rounding, after a few Adam steps (SGD with batch norm: its parameters and running
 * statistics included) */
static void trainer_pair(struct vox_ctx *ctx, const char *text, enum vox_optim_kind optim)
{
    char file[256], raw[300], lab[300];
    snprintf(file, sizeof file, "/tmp/vox_test_train_fast_%ld.h5", (long)getpid());
    snprintf(raw, sizeof raw, "%s:/raw", file);
    snprintf(lab, sizeof lab, "%s:/labels", file);
    make_volume(ctx, file);
    struct vox_train_source src = {.raw = raw, .labels = lab};
    struct vox_net *net = NULL;
    struct vox_train_data *data = NULL;
    struct vox_nn_train_fast *f = NULL;
    struct vox_trainer *tr[2] = {NULL, NULL};
    CHECK_OK(vox_net_parse(ctx, text, "t.net", &net));
    CHECK_OK(vox_train_data_open(ctx, &src, 1, &data));
    CHECK_OK(vox_nn_train_fast_create(ctx, &f));
    if (!net || !data || !f)
        goto done;
    struct vox_train_options o;
    vox_train_options_defaults(&o);
    vox_optim_defaults(optim, &o.optim);
    o.patch[0] = 5, o.patch[1] = 17, o.patch[2] = 19;
    o.aug.flips = true;
    for (int r = 0; r < 2; r++) {
        o.kernels = r ? vox_nn_train_fast_kernels(f) : NULL;
        CHECK_OK(vox_trainer_create(ctx, net, &o, NULL, data, &tr[r]));
    }
    if (!tr[0] || !tr[1])
        goto done;
    for (int i = 0; i < 5; i++) {
        double la, lb;
        CHECK_OK(vox_trainer_step(ctx, tr[0], &la));
        CHECK_OK(vox_trainer_step(ctx, tr[1], &lb));
        CHECK_NEAR(la, lb, 1e-4 * (1 + fabs(la)));
    }
    const struct vox_nn_weights *wa = vox_trainer_weights(tr[0]), *wb = vox_trainer_weights(tr[1]);
    for (int l = 0; l < wa->n_layers; l++)
        for (int p = 0; p < VOX_P_COUNT; p++)
            if (wa->p[l][p].rank)
                CHECK(close_to(&wb->p[l][p], &wa->p[l][p], 1e-4));
done:
    vox_trainer_destroy(tr[0]);
    vox_trainer_destroy(tr[1]);
    vox_nn_train_fast_destroy(f);
    vox_train_data_close(data);
    vox_net_destroy(net);
    remove(file);
}

static void test_trainer(struct vox_ctx *ctx)
{
    trainer_pair(ctx, net_text, VOX_OPTIM_ADAM);
    trainer_pair(ctx, bn_net_text, VOX_OPTIM_SGD);
}

VOX_TEST_MAIN(VOX_TEST(test_conv_kernels), VOX_TEST(test_phase_taken),
              VOX_TEST(test_deconv_kernels), VOX_TEST(test_threads), VOX_TEST(test_fft_kernels),
              VOX_TEST(test_graph_threads), VOX_TEST(test_graph_second_step),
              VOX_TEST(test_graph_acts), VOX_TEST(test_graph_buffers),
              VOX_TEST(test_pool_conv_sparse), VOX_TEST(test_trainer))
