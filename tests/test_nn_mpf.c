/*
 * test_nn_mpf.c: max-pooling fragments (mpf, ZNNi) and their interleave, against the dense
 * form of the same net as the oracle: a stride-1 max-filter of the window in place of each mpf
 * and every later conv and max-filter dilated by the product of the earlier windows (ZNN's
 * sliding-window form, reference note znn.md 2.4). Same weights (copied by layer name).
 *
 * Reference path: bitwise equal, since every output voxel is the same double sum of the same
 * f32 terms in the same order, rounded once, and max is exact. Fast path: within 1e-5 of the
 * reference (f32 sums in the kernels' order, as test_nn_fast.c) and of the fast dense net
 * (the dense net's kernels tile x differently, so the f32 order may differ), FFT convs
 * (run fragment by fragment) too; 1 vs 2 threads bitwise. Also the shapes and field of view of both forms, the shipped n337_mpf.net against
 * n337.net, and the errors of bad specs and patches.
 */
#include "harness.h"
#include "nn_test_nets.h"
#include "vox/nn.h"
#include "vox/io.h"
#include "vox/train.h"

#include <unistd.h>

struct pair {
    const char *mpf, *dense;
    int64_t patch[3];
};

/* 1 and 2 mpf layers, windows 2x2x2 and 1x2x2, odd channel counts; a branch after the mpf. */
static const struct pair pairs[] = {
    {"input a channels=3\nconv c1 a -> 5 kernel=2x2x2 act=relu\nmpf m1 c1 window=2x2x2\n"
     "conv c2 m1 -> 3 kernel=2x3x2 act=tanh\ninterleave d c2\noutput o d\n",
     "input a channels=3\nconv c1 a -> 5 kernel=2x2x2 act=relu\nmaxfilter m1 c1 window=2x2x2\n"
     "conv c2 m1 -> 3 kernel=2x3x2 dilation=2 act=tanh\noutput o c2\n",
     {6, 8, 10}},
    {"input a channels=1\nconv c1 a -> 7 kernel=1x3x3 act=relu\nmpf m1 c1 window=1x2x2\n"
     "conv c2 m1 -> 5 kernel=2x2x2 act=elu\nmpf m2 c2 window=2x2x2\n"
     "conv c3 m2 -> 3 kernel=2x2x2\ninterleave d c3\noutput o d act=sigmoid\n",
     "input a channels=1\nconv c1 a -> 7 kernel=1x3x3 act=relu\nmaxfilter m1 c1 window=1x2x2\n"
     "conv c2 m1 -> 5 kernel=2x2x2 dilation=1x2x2 act=elu\n"
     "maxfilter m2 c2 window=2x2x2 dilation=1x2x2\n"
     "conv c3 m2 -> 3 kernel=2x2x2 dilation=2x4x4\noutput o c3 act=sigmoid\n",
     {6, 15, 19}},
    {"input a channels=2\nconv c1 a -> 9 kernel=1x2x2\nmpf m1 c1 window=1x2x2\n"
     "conv c2 m1 -> 3 kernel=1x1x1 act=relu\nconv c3 m1 -> 4 kernel=1x1x1\n"
     "concat k c2 c3\nmaxfilter f k window=1x2x1\nconv c4 f -> 5 kernel=1x2x2\n"
     "interleave d c4\noutput o d act=softmax\n",
     "input a channels=2\nconv c1 a -> 9 kernel=1x2x2\nmaxfilter m1 c1 window=1x2x2\n"
     "conv c2 m1 -> 3 kernel=1x1x1 act=relu\nconv c3 m1 -> 4 kernel=1x1x1\n"
     "concat k c2 c3\nmaxfilter f k window=1x2x1 dilation=1x2x2\n"
     "conv c4 f -> 5 kernel=1x2x2 dilation=1x2x2\noutput o c4 act=softmax\n",
     {3, 10, 12}},
};

/* Random weights and biases for a, copied by layer name into b's. */
static void weights(struct vox_ctx *ctx, const struct vox_net *a, const struct vox_net *b,
                    uint64_t seed, struct vox_nn_weights **wa, struct vox_nn_weights **wb)
{
    CHECK_OK(vox_nn_weights_create(ctx, a, wa));
    CHECK_OK(vox_nn_weights_create(ctx, b, wb));
    if (!*wa || !*wb)
        return;
    vox_nn_weights_init(a, *wa, VOX_INIT_MSRA, seed);
    for (int i = 0; i < a->n_layers; i++) {
        struct vox_tensor *t = &(*wa)->p[i][VOX_P_BIAS];
        for (int64_t e = 0; t->rank && e < vox_tensor_numel(t); e++)
            ((float *)t->data)[e] = (float)(vox_test_rand(&seed) % 1000) / 1000.0f - 0.5f;
    }
    for (int i = 0; i < b->n_layers; i++) {
        int j = vox_net_find(a, b->layers[i].name);
        for (int p = 0; p < VOX_P_COUNT; p++)
            if ((*wb)->p[i][p].rank)
                CHECK_OK(vox_tensor_copy(ctx, &(*wb)->p[i][p], &(*wa)->p[j][p]));
    }
}

/* max |a - b| / max(1, max |a|); 1e30 on a shape mismatch or NaN */
static double diff(const struct vox_tensor *a, const struct vox_tensor *b)
{
    if (!a || !b || a->rank != b->rank || memcmp(a->shape, b->shape, sizeof a->shape))
        return 1e30;
    double m = 1, d = 0;
    for (int64_t e = 0; e < vox_tensor_numel(a); e++) {
        double x = ((const float *)a->data)[e], y = ((const float *)b->data)[e];
        m = fmax(m, fabs(x));
        d = y == y ? fmax(d, fabs(x - y)) : 1e30;
    }
    return d / m;
}

static void clone(struct vox_ctx *ctx, const struct vox_tensor *src, struct vox_tensor *dst)
{
    CHECK_OK(vox_tensor_alloc(ctx, dst, VOX_F32, src->rank, src->shape));
    if (dst->data)
        CHECK_OK(vox_tensor_copy(ctx, dst, src));
}

/* The output of net for input `in` by the reference (threads 0) or the fast path with
 * `threads` threads and direct convs (-2: 2 threads, FFT convs), copied into out. */
static void run(struct vox_ctx *ctx, const struct vox_net *net, const struct vox_nn_weights *w,
                const int64_t patch[3], const struct vox_tensor *in, int threads,
                struct vox_tensor *out)
{
    if (threads == 0) {
        struct vox_nn_plan *plan = NULL;
        CHECK_OK(vox_nn_plan_create(ctx, net, w, patch, &plan));
        if (plan && vox_nn_plan_forward(ctx, plan, in) == VOX_OK)
            clone(ctx, vox_nn_plan_output(plan, 0), out);
        vox_nn_plan_destroy(plan);
        return;
    }
    struct vox_ctx *rc = NULL;
    struct vox_ctx_options opt = {.threads = threads < 0 ? -threads : threads,
                                  .log_level = VOX_LOG_WARN};
    CHECK_OK(vox_ctx_create(&opt, &rc));
    struct vox_nn_fast *f = NULL;
    enum vox_nn_conv_algo algo = threads < 0 ? VOX_NN_CONV_FFT : VOX_NN_CONV_DIRECT;
    if (rc)
        CHECK_OK(vox_nn_fast_create_algo(rc, net, w, patch, algo, &f));
    if (f && vox_nn_fast_forward(rc, f, in) == VOX_OK)
        clone(ctx, vox_nn_fast_output(f, 0), out);
    vox_nn_fast_destroy(f);
    vox_ctx_destroy(rc);
}

static bool bitwise(const struct vox_tensor *a, const struct vox_tensor *b)
{
    return a->data && b->data && vox_tensor_nbytes(a) == vox_tensor_nbytes(b) &&
           memcmp(a->data, b->data, vox_tensor_nbytes(a)) == 0;
}

static void check_pair(struct vox_ctx *ctx, const struct pair *pr, uint64_t seed)
{
    struct vox_net *m = parse(ctx, pr->mpf), *d = parse(ctx, pr->dense);
    struct vox_nn_weights *wm = NULL, *wd = NULL;
    struct vox_tensor in = {0}, ref_m = {0}, ref_d = {0}, fast_m = {0}, fast_m1 = {0},
                      fast_d = {0}, fft_m = {0};
    if (!m || !d)
        goto done;
    weights(ctx, m, d, seed, &wm, &wd);
    int64_t shape[5] = {1, m->layers[0].channels, pr->patch[0], pr->patch[1], pr->patch[2]};
    CHECK_OK(vox_tensor_alloc(ctx, &in, VOX_F32, 5, shape));
    fill(&in, seed + 1);
    run(ctx, m, wm, pr->patch, &in, 0, &ref_m);
    run(ctx, d, wd, pr->patch, &in, 0, &ref_d);
    run(ctx, m, wm, pr->patch, &in, 2, &fast_m);
    run(ctx, m, wm, pr->patch, &in, 1, &fast_m1);
    run(ctx, d, wd, pr->patch, &in, 2, &fast_d);
    run(ctx, m, wm, pr->patch, &in, -2, &fft_m);
    CHECK(ref_m.data && vox_tensor_numel(&ref_m) > 1);
    CHECK(diff(&ref_d, &ref_m) == 0);
    CHECK(bitwise(&ref_d, &ref_m));
    CHECK(diff(&ref_m, &fast_m) <= 1e-5);
    CHECK(diff(&fast_d, &fast_m) <= 1e-5);
    CHECK(bitwise(&fast_m, &fast_m1));
    CHECK(diff(&ref_m, &fft_m) <= 1e-5);
    if (getenv("VOX_TEST_VERBOSE"))
        printf("  fast mpf vs ref %.3g, vs fast dense %.3g, fft mpf vs ref %.3g\n",
               diff(&ref_m, &fast_m), diff(&fast_d, &fast_m), diff(&ref_m, &fft_m));
done:
    vox_tensor_free(ctx, &in);
    vox_tensor_free(ctx, &ref_m);
    vox_tensor_free(ctx, &ref_d);
    vox_tensor_free(ctx, &fast_m);
    vox_tensor_free(ctx, &fast_m1);
    vox_tensor_free(ctx, &fast_d);
    vox_tensor_free(ctx, &fft_m);
    vox_nn_weights_destroy(wm);
    vox_nn_weights_destroy(wd);
    vox_net_destroy(m);
    vox_net_destroy(d);
}

static void test_mpf_equals_maxfilter(struct vox_ctx *ctx)
{
    for (size_t k = 0; k < sizeof pairs / sizeof pairs[0]; k++)
        for (uint64_t seed = 1; seed <= (vox_test_full ? 3u : 1u); seed++)
            check_pair(ctx, &pairs[k], 10 * k + seed);
}

/* Shapes, batch, stride and field of view of both forms agree. */
static void check_dims(struct vox_ctx *ctx, struct vox_net *m, struct vox_net *d,
                       const int64_t patch[3])
{
    struct vox_nn_dims *dm = vox_calloc(ctx, (size_t)m->n_layers, sizeof *dm);
    struct vox_nn_dims *dd = vox_calloc(ctx, (size_t)d->n_layers, sizeof *dd);
    CHECK_OK(vox_net_shapes(ctx, m, patch, dm));
    CHECK_OK(vox_net_shapes(ctx, d, patch, dd));
    const struct vox_nn_dims *om = &dm[vox_net_output(m, 0)], *od = &dd[vox_net_output(d, 0)];
    CHECK(memcmp(om->shape, od->shape, sizeof om->shape) == 0);
    CHECK(om->batch == 1);
    int64_t fm[3], offm[3], fd[3], offd[3];
    vox_net_fov(m, dm, fm, offm);
    vox_net_fov(d, dd, fd, offd);
    for (int a = 0; a < 3; a++) {
        CHECK(fm[a] == fd[a] && offm[a] == offd[a]);
        CHECK(om->stride_num[a] == 1 && om->stride_den[a] == 1);
        CHECK(om->shape[1 + a] == patch[a] - fm[a] + 1);
    }
    vox_free(ctx, dm);
    vox_free(ctx, dd);
}

static void test_shapes(struct vox_ctx *ctx)
{
    for (size_t k = 0; k < sizeof pairs / sizeof pairs[0]; k++) {
        struct vox_net *m = parse(ctx, pairs[k].mpf), *d = parse(ctx, pairs[k].dense);
        if (m && d)
            check_dims(ctx, m, d, pairs[k].patch);
        vox_net_destroy(m);
        vox_net_destroy(d);
    }
    /* the second pair: batch 4 after m1, 32 after m2, per-fragment sizes */
    struct vox_net *m = parse(ctx, pairs[1].mpf);
    struct vox_nn_dims dims[8];
    if (m && vox_net_shapes(ctx, m, pairs[1].patch, dims) == VOX_OK) {
        CHECK(dims[2].batch == 4 && dims[4].batch == 32 && dims[6].batch == 1);
        CHECK(dims[2].shape[1] == 6 && dims[2].shape[2] == 6 && dims[2].shape[3] == 8);
        CHECK(dims[4].shape[1] == 2 && dims[4].shape[2] == 2 && dims[4].shape[3] == 3);
        CHECK(dims[6].shape[1] == 2 && dims[6].shape[2] == 4 && dims[6].shape[3] == 8);
    }
    vox_net_destroy(m);
}

/* nets/n337_mpf.net: the fov of n337 (85), dense outputs n - 84 for n = 8 o + 84. */
static void test_shipped_n337(struct vox_ctx *ctx)
{
    struct vox_net *m = shipped(ctx, "n337_mpf.net");
    struct vox_nn_dims *dims = m ? vox_calloc(ctx, (size_t)m->n_layers, sizeof *dims) : NULL;
    if (dims) {
        const int64_t patch[3] = {92, 100, 108};
        CHECK_OK(vox_net_shapes(ctx, m, patch, dims));
        int64_t fov[3], off[3];
        vox_net_fov(m, dims, fov, off);
        const struct vox_nn_dims *o = &dims[vox_net_output(m, 0)];
        for (int a = 0; a < 3; a++)
            CHECK(fov[a] == 85 && off[a] == 42 && o->shape[1 + a] == patch[a] - 84);
        CHECK(o->shape[0] == 3 && o->batch == 1);
        const int64_t bad[3] = {92, 93, 92};
        CHECK_STATUS(vox_net_shapes(ctx, m, bad, dims), VOX_INVALID_ARG);
        CHECK_ERROR_HAS("mpf 'p1': input 'c1' is 91x92x91; each size + 1 must divide");
    }
    vox_free(ctx, dims);
    vox_net_destroy(m);
}

static void parse_error(struct vox_ctx *ctx, const char *text, const char *needle)
{
    struct vox_net *net = NULL;
    CHECK_STATUS(vox_net_parse(ctx, text, "t.net", &net), VOX_FORMAT);
    CHECK(net == NULL);
    CHECK_ERROR_HAS(needle);
}

static void test_errors(struct vox_ctx *ctx)
{
    parse_error(ctx, "input a channels=1\nconv c a -> 2 kernel=2\ninterleave d c\noutput o d\n",
                "t.net:3:1: interleave 'd': input 'c' carries no fragments (no mpf before it)");
    parse_error(ctx, "input a channels=1\nmpf m a window=2\noutput o m\n",
                "t.net:3:1: output 'o': 'm' carries the fragments of mpf 'm'; interleave them");
    parse_error(ctx, "input a channels=1\nmpf m a window=2\nadd s m a\n",
                "t.net:3:1: add 's': 'm' and 'a' carry fragments of different mpf layers (m, none)");
    parse_error(ctx, "input a channels=1\nmpf m a window=2 dilation=2\n",
                "t.net:2:18: unknown parameter 'dilation' for mpf");
    parse_error(ctx, "input a channels=1\nmpf m a\n", "t.net:2:1: mpf 'm' needs window=");
    parse_error(ctx, "input a channels=1\nmpf m1 a window=1\nmpf m2 m1 window=1\n"
                     "mpf m3 m2 window=1\nmpf m4 m3 window=1\nmpf m5 m4 window=1\n"
                     "mpf m6 m5 window=1\nmpf m7 m6 window=1\nmpf m8 m7 window=1\n"
                     "mpf m9 m8 window=1\n",
                "t.net:10:1: mpf 'm9': more than 8 mpf layers before an interleave");
    struct vox_net *m = parse(ctx, pairs[0].mpf);
    struct vox_nn_dims dims[6];
    if (m) {
        const int64_t odd[3] = {6, 8, 9}, small[3] = {4, 4, 4};
        CHECK_STATUS(vox_net_shapes(ctx, m, odd, dims), VOX_INVALID_ARG);
        CHECK_ERROR_HAS("t.net line 3: mpf 'm1': input 'c1' is 5x7x8; each size + 1 must "
                        "divide by the window 2x2x2");
        CHECK_STATUS(vox_net_shapes(ctx, m, small, dims), VOX_INVALID_ARG);
        CHECK_ERROR_HAS("the input patch 4x4x4 is smaller than the field of view 5x7x5");
        struct vox_nn_graph *g = NULL;
        CHECK_STATUS(vox_nn_graph_create(ctx, m, pairs[0].patch, NULL, &g), VOX_UNSUPPORTED);
        CHECK_ERROR_HAS("t.net:3: layer 'm1' is mpf; training takes the dense form");
        CHECK(g == NULL);
    }
    vox_net_destroy(m);
}

/* Slides net over a random u8 volume with the given patch (the volume: one pass); output 0 read
 * back as f32 into out. */
static void slide(struct vox_ctx *ctx, const struct vox_net *net, struct vox_nn_weights *w,
                  const int64_t vol[3], const int64_t patch[3], struct vox_tensor *out)
{
    char in_path[256], out_path[256], spec[300];
    snprintf(in_path, sizeof in_path, "/tmp/vox_mpf_in_%d.h5", (int)getpid());
    snprintf(out_path, sizeof out_path, "/tmp/vox_mpf_out_%d.h5", (int)getpid());
    struct vox_tensor raw = {0};
    CHECK_OK(vox_tensor_alloc(ctx, &raw, VOX_U8, 3, vol));
    uint64_t seed = 4;
    for (int64_t e = 0; e < vox_tensor_numel(&raw); e++)
        ((uint8_t *)raw.data)[e] = (uint8_t)vox_test_rand(&seed);
    snprintf(spec, sizeof spec, "%s:/raw", in_path);
    CHECK_OK(vox_volume_save(ctx, spec, &raw, NULL));
    struct vox_volume *in = NULL, *o = NULL;
    struct vox_out_file *f = NULL;
    struct vox_nn_volume *v = NULL;
    const enum vox_dtype dt = VOX_U8;
    struct vox_nn_volume_options opt = {.patch = {patch[0], patch[1], patch[2]}, .quiet = true,
                                        .out_dtype = VOX_F32};
    struct vox_dataset_options dopt = {.dtype = VOX_F32, .rank = 4};
    CHECK_OK(vox_volume_open(ctx, spec, &in));
    CHECK_OK(vox_nn_volume_plan(ctx, net, w, vol, &dt, &opt, &v));
    if (v) {
        int64_t pp[3], ov[3], tiles;
        vox_nn_volume_geometry(v, pp, ov, &tiles);
        CHECK(memcmp(pp, patch, sizeof pp) == 0);
        CHECK(memcmp(vol, patch, sizeof pp) == 0 ? tiles == 1 : tiles >= 8);
        vox_nn_volume_out_shape(v, 0, dopt.shape);
    }
    if (v && in) {
        CHECK_OK(vox_out_open(ctx, out_path, &f));
        CHECK_OK(vox_out_dataset(ctx, f, "/o", &dopt, &o));
        CHECK_OK(vox_nn_volume_run(ctx, v, &in, &o));
        CHECK_OK(vox_out_commit(ctx, f));
        snprintf(spec, sizeof spec, "%s:/o", out_path);
        CHECK_OK(vox_volume_load(ctx, spec, out, NULL));
    }
    vox_volume_close(in);
    vox_nn_volume_destroy(v);
    vox_tensor_free(ctx, &raw);
    unlink(out_path);
    unlink(in_path);
}

/* The mpf net slid patch by patch (dense outputs, abutting tiles) == the dense net in one
 * pass over the whole volume. */
static void test_sliding(struct vox_ctx *ctx)
{
    const struct pair *pr = &pairs[1];
    struct vox_net *m = parse(ctx, pr->mpf), *d = parse(ctx, pr->dense);
    struct vox_nn_weights *wm = NULL, *wd = NULL;
    struct vox_tensor a = {0}, b = {0};
    const int64_t vol[3] = {9, 30, 35};
    if (m && d) {
        weights(ctx, m, d, 7, &wm, &wd);
        slide(ctx, m, wm, vol, pr->patch, &a);
        slide(ctx, d, wd, vol, vol, &b);
        CHECK(a.rank == 4 && a.shape[1] == 5 && a.shape[2] == 19 && a.shape[3] == 24);
        CHECK(diff(&b, &a) <= 1e-5);
    }
    vox_tensor_free(ctx, &a);
    vox_tensor_free(ctx, &b);
    vox_nn_weights_destroy(wm);
    vox_nn_weights_destroy(wd);
    vox_net_destroy(m);
    vox_net_destroy(d);
}

VOX_TEST_MAIN(VOX_TEST(test_mpf_equals_maxfilter), VOX_TEST(test_shapes), VOX_TEST(test_sliding),
              VOX_TEST(test_shipped_n337), VOX_TEST(test_errors))
