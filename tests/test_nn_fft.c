/*
 * test_nn_fft.c: FFT convolution in the fast forward pass (src/nn/fast_fft.c) against the
 * reference forward pass (the oracle): 5^3 and 7^3 kernels at odd sizes and channel counts,
 * valid and same padding, dilation, bias/batch norm and activations; a net mixing FFT and
 * direct layers; the planner's choice; 1 vs 2 threads bitwise; allocation failures. The
 * overlap-save tiling itself (src/nn/fast_fft.c through its internal API, every ISA's product
 * kernel): forced transform sizes that tile every axis with a partial last tile, batch
 * entries, same padding, dilation, channels past one block, against a scalar conv in double;
 * the grouping of tiles does not change a bit.
 *
 * Tolerance: FFT rounding grows with the transform size (about eps * log2(N) * the sum of
 * |terms| per output), so the table gives per case the bound on
 * |fast - ref| / max(1, max |ref|).
 */
#include "harness.h"
#include "nn/fast.h"
#include "nn_test_nets.h"
#include "vox/nn.h"

/* Runs net (one input) with algo on run_ctx; copies output 0 into out. */
static void run(struct vox_ctx *ctx, struct vox_ctx *run_ctx, const struct vox_net *net,
                const struct vox_nn_weights *w, const int64_t patch[3], enum vox_nn_conv_algo algo,
                struct vox_tensor *out)
{
    struct vox_nn_fast *fast = NULL;
    struct vox_tensor in = {0};
    int64_t c = net->layers[vox_net_input(net, 0)].channels;
    CHECK_OK(
        vox_tensor_alloc(ctx, &in, VOX_F32, 5, (int64_t[]){1, c, patch[0], patch[1], patch[2]}));
    fill(&in, 17);
    CHECK_OK(vox_nn_fast_create_algo(run_ctx, net, w, patch, algo, &fast));
    if (fast) {
        for (int i = 0; algo == VOX_NN_CONV_FFT && i < net->n_layers; i++) {
            struct vox_nn_fast_layer info;
            vox_nn_fast_layer_info(fast, i, &info);
            CHECK((net->layers[i].kind == VOX_NN_CONV) == (strcmp(info.algo, "fft") == 0));
        }
        fast_forward_copy(ctx, run_ctx, fast, &in, out);
    }
    vox_nn_fast_destroy(fast);
    vox_tensor_free(ctx, &in);
}

/* max |fft - ref| / max(1, max |ref|) for output 0. */
static double compare(struct vox_ctx *ctx, const struct vox_net *net, const int64_t patch[3],
                      uint64_t seed)
{
    struct vox_nn_weights *w = random_weights(ctx, net, seed);
    struct vox_nn_plan *ref = NULL;
    struct vox_tensor in = {0}, got = {0};
    int64_t c = net->layers[vox_net_input(net, 0)].channels;
    CHECK_OK(
        vox_tensor_alloc(ctx, &in, VOX_F32, 5, (int64_t[]){1, c, patch[0], patch[1], patch[2]}));
    fill(&in, 17);
    CHECK_OK(vox_nn_plan_create(ctx, net, w, patch, &ref));
    CHECK_OK(vox_nn_plan_forward(ctx, ref, &in));
    run(ctx, ctx, net, w, patch, VOX_NN_CONV_FFT, &got);
    double err = 1e30;
    const struct vox_tensor *a = ref ? vox_nn_plan_output(ref, 0) : NULL;
    if (a && got.data && vox_tensor_numel(a) == vox_tensor_numel(&got)) {
        double m = 1, d = 0;
        for (int64_t e = 0; e < vox_tensor_numel(a); e++) {
            double ra = ((const float *)a->data)[e], fb = ((const float *)got.data)[e];
            m = fmax(m, fabs(ra));
            d = fb == fb ? fmax(d, fabs(ra - fb)) : 1e30;
        }
        err = d / m;
    }
    vox_tensor_free(ctx, &in);
    vox_tensor_free(ctx, &got);
    vox_nn_plan_destroy(ref);
    vox_nn_weights_destroy(w);
    return err;
}

static void test_layers_and_nets(struct vox_ctx *ctx)
{
    static const struct {
        const char *text;
        int64_t patch[3];
        double tol;
    } table[] = {
        {"input a channels=3\nconv c a -> 5 kernel=5 act=relu\noutput o c\n", {7, 9, 11}, 1e-5},
        {"input a channels=2\nconv c a -> 17 kernel=7 bn=yes act=elu\noutput o c\n",
         {9, 13, 10},
         1e-5},
        {"input a channels=4\nconv c a -> 3 kernel=5x7x5 pad=same act=sigmoid\noutput o c\n",
         {5, 11, 8},
         1e-5},
        {"input a channels=2\nconv c a -> 9 kernel=3x5x3 dilation=2x1x3 bias=no act=tanh\n"
         "output o c\n",
         {7, 8, 13},
         1e-5},
        {"input a channels=1\nconv c a -> 8 kernel=7\nconv d c -> 6 kernel=5 pad=same act=relu\n"
         "pool p d window=1x2x2\ndeconv u p -> 4 kernel=1x2x2\nconv e u -> 2 kernel=5\n"
         "output o e act=sigmoid\n",
         {17, 26, 22},
         1e-4},
    };
    size_t n = sizeof table / sizeof table[0];
    for (size_t k = 0; k < n; k++) {
        struct vox_net *net = parse(ctx, table[k].text);
        if (!net)
            continue;
        double err = compare(ctx, net, table[k].patch, 3 + k);
        if (err > table[k].tol)
            fprintf(stderr, "  case %zu: error %g\n", k, err);
        CHECK(err <= table[k].tol);
        vox_net_destroy(net);
    }
}

/* The cost model: FFT for 9^3 8->8 on a large patch (on AVX2 the direct nest needs no padded
 * lanes for 8 channels, so a 7^3 layer there is the model's call either way), direct for a
 * dilated 3^3 (5^3 extent, no Winograd) and for a small patch. */
static void test_planner_choice(struct vox_ctx *ctx)
{
    static const struct {
        const char *text;
        int64_t patch[3];
        const char *algo;
    } table[] = {
        {"input a channels=8\nconv c a -> 8 kernel=9\noutput o c\n", {16, 64, 64}, "fft"},
        {"input a channels=8\nconv c a -> 8 kernel=3 dilation=2\noutput o c\n",
         {16, 64, 64},
         "jit"},
        {"input a channels=8\nconv c a -> 8 kernel=7\noutput o c\n", {7, 7, 7}, "jit"},
    };
    if (vox_ctx_cpu(ctx)->isa == VOX_ISA_REF)
        return; /* no JIT: the nests are interpreted */
    for (size_t k = 0; k < sizeof table / sizeof table[0]; k++)
        check_planner_choice(ctx, table[k].text, table[k].patch, table[k].algo, k);
}

static void test_threads_bitwise_and_alloc_failures(struct vox_ctx *ctx)
{
    struct vox_net *net = parse(ctx, "input a channels=3\nconv c a -> 11 kernel=5 pad=same "
                                     "act=elu\nconv d c -> 5 kernel=7\noutput o d\n");
    struct vox_nn_weights *w = random_weights(ctx, net, 2);
    const int64_t patch[3] = {9, 12, 14};
    struct vox_ctx *one;
    struct vox_ctx_options opt = {.threads = 1, .log_level = VOX_LOG_WARN};
    CHECK_OK(vox_ctx_create(&opt, &one));
    struct vox_tensor a = {0}, b = {0};
    run(ctx, ctx, net, w, patch, VOX_NN_CONV_FFT, &a);
    run(ctx, one, net, w, patch, VOX_NN_CONV_FFT, &b);
    CHECK(a.data && b.data && memcmp(a.data, b.data, vox_tensor_nbytes(&a)) == 0);
    vox_tensor_free(ctx, &a);
    vox_tensor_free(ctx, &b);
    vox_ctx_destroy(one);
    for (int64_t k = 1;; k++) {
        struct vox_nn_fast *fast = NULL;
        vox_ctx_fail_alloc_at(ctx, k);
        enum vox_status s = vox_nn_fast_create_algo(ctx, net, w, patch, VOX_NN_CONV_FFT, &fast);
        vox_ctx_fail_alloc_at(ctx, 0);
        if (s == VOX_OK) {
            vox_nn_fast_destroy(fast);
            break;
        }
        CHECK(s == VOX_OUT_OF_MEMORY && fast == NULL);
    }
    vox_nn_weights_destroy(w);
    vox_net_destroy(net);
}

/* One tiled case: a conv on a blocked input of extent s (same padding: lo > 0). */
struct tile_case {
    int64_t n, cin, cout, bin, b, k[3], dil[3], s[3], lo[3], fft_n[3];
    enum vox_nn_act act;
};

/* act(bias + correlation) in double at output (e, o, z, y, x), zeros outside the input. */
static double conv_at(const struct tile_case *t, const float *in, const float *w, const float *bias,
                      int64_t e, int64_t o, const int64_t p[3])
{
    double sum = bias[o];
    int64_t ib = (t->cin + t->bin - 1) / t->bin, vol = t->s[0] * t->s[1] * t->s[2];
    for (int64_t c = 0; c < t->cin; c++)
        for (int64_t a = 0; a < t->k[0]; a++)
            for (int64_t b = 0; b < t->k[1]; b++)
                for (int64_t d = 0; d < t->k[2]; d++) {
                    int64_t q[3] = {p[0] + a * t->dil[0] - t->lo[0],
                                    p[1] + b * t->dil[1] - t->lo[1],
                                    p[2] + d * t->dil[2] - t->lo[2]};
                    bool inside = true;
                    for (int ax = 0; ax < 3; ax++)
                        inside = inside && q[ax] >= 0 && q[ax] < t->s[ax];
                    if (!inside)
                        continue;
                    int64_t v = (q[0] * t->s[1] + q[1]) * t->s[2] + q[2];
                    sum +=
                        (double)w[(((o * t->cin + c) * t->k[0] + a) * t->k[1] + b) * t->k[2] + d] *
                        in[((e * ib + c / t->bin) * vol + v) * t->bin + c % t->bin];
                }
    return t->act == VOX_ACT_RELU && sum < 0 ? 0.0 : sum;
}

/* Runs case t by FFT on ctx with at most `group` tiles per group into out (blocked). */
static void run_tiles(struct vox_ctx *ctx, const struct tile_case *t, int64_t group,
                      const float *in, const float *w, const float *bias, float *out,
                      const int64_t oext[3])
{
    struct vox_nn_fast_conv cv = {.n = t->n,
                                  .cin = t->cin,
                                  .cout = t->cout,
                                  .bin = t->bin,
                                  .b = t->b,
                                  .bias = true,
                                  .act = t->act,
                                  .fft_group = group};
    for (int a = 0; a < 3; a++) {
        cv.k[a] = t->k[a];
        cv.dil[a] = t->dil[a];
        cv.out[a] = oext[a];
        cv.in[a] = oext[a] + (t->k[a] - 1) * t->dil[a];
        cv.fft_n[a] = t->fft_n[a];
    }
    struct vox_nn_fft *f = NULL;
    CHECK_OK(vox_nn_fft_create(ctx, &cv, t->lo, w, bias, &f));
    if (!f)
        return;
    struct vox_nn_bt bi = {.data = (float *)in,
                           .n = t->n,
                           .c = t->cin,
                           .blk = t->bin,
                           .s = {t->s[0], t->s[1], t->s[2]}};
    struct vox_nn_bt bo = {
        .data = out, .n = t->n, .c = t->cout, .blk = t->b, .s = {oext[0], oext[1], oext[2]}};
    vox_nn_fft_run(f, vox_ctx_pool(ctx), &bi, &bo);
    vox_nn_fft_destroy(ctx, f);
}

static void test_tiles(struct vox_ctx *ctx)
{
    static const struct tile_case cases[] = {
        /* valid, 3 x 2 x 3 tiles with partial last tiles, 2 batch entries */
        {2, 5, 7, 8, 8, {5, 3, 4}, {1, 1, 1}, {14, 11, 17}, {0, 0, 0}, {8, 6, 8}, VOX_ACT_RELU},
        /* same padding, dilation, 19 -> 18 channels over two blocks of 16 */
        {1,
         19,
         18,
         16,
         16,
         {3, 5, 3},
         {2, 1, 1},
         {9, 12, 10},
         {2, 2, 1},
         {8, 8, 6},
         VOX_ACT_LINEAR},
        /* one axis untiled (its transform covers it), 1-channel input */
        {1, 1, 9, 1, 8, {1, 5, 5}, {1, 1, 1}, {3, 20, 13}, {0, 0, 0}, {4, 12, 8}, VOX_ACT_RELU},
    };
    struct vox_ctx *isa[3];
    int nisa = isa_contexts(ctx, isa);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const struct tile_case *t = &cases[k];
        int64_t oext[3], ib = (t->cin + t->bin - 1) / t->bin, ob = (t->cout + t->b - 1) / t->b;
        for (int a = 0; a < 3; a++)
            oext[a] = t->s[a] + 2 * t->lo[a] - (t->k[a] - 1) * t->dil[a];
        int64_t ivol = t->s[0] * t->s[1] * t->s[2], ovol = oext[0] * oext[1] * oext[2];
        int64_t nin = t->n * ib * t->bin * ivol, nout = t->n * ob * t->b * ovol;
        int64_t nw = t->cout * t->cin * t->k[0] * t->k[1] * t->k[2];
        float *in = vox_alloc(ctx, (size_t)nin * sizeof(float));
        float *w = vox_alloc(ctx, (size_t)nw * sizeof(float));
        float *bias = vox_alloc(ctx, (size_t)t->cout * sizeof(float));
        float *all = vox_alloc(ctx, (size_t)nout * sizeof(float));
        float *few = vox_alloc(ctx, (size_t)nout * sizeof(float));
        uint64_t seed = 7 + k;
        for (int64_t e = 0; e < nin; e++)
            in[e] = (float)(vox_test_rand(&seed) % 2001) / 1000.0f - 1.0f;
        for (int64_t e = 0; e < nw; e++)
            w[e] = (float)(vox_test_rand(&seed) % 2001) / 4000.0f - 0.25f;
        for (int64_t o = 0; o < t->cout; o++)
            bias[o] = (float)o / 10.0f - 0.3f;
        for (int i = 0; i < nisa; i++) {
            run_tiles(isa[i], t, 0, in, w, bias, all, oext);
            run_tiles(isa[i], t, 3, in, w, bias, few, oext);
            CHECK(memcmp(all, few, (size_t)nout * sizeof(float)) == 0);
            double err = 0, m = 1;
            for (int64_t e = 0; e < t->n; e++)
                for (int64_t o = 0; o < ob * t->b; o++)
                    for (int64_t v = 0; v < ovol; v++) {
                        int64_t p[3] = {v / (oext[1] * oext[2]), v / oext[2] % oext[1],
                                        v % oext[2]};
                        double want = o < t->cout ? conv_at(t, in, w, bias, e, o, p) : 0.0;
                        double got = all[((e * ob + o / t->b) * ovol + v) * t->b + o % t->b];
                        m = fmax(m, fabs(want));
                        err = got == got ? fmax(err, fabs(got - want)) : 1e30;
                    }
            if (err > 1e-5 * m)
                fprintf(stderr, "  case %zu isa %d: error %g of %g\n", k, i, err, m);
            CHECK(err <= 1e-5 * m);
        }
        vox_free(ctx, in);
        vox_free(ctx, w);
        vox_free(ctx, bias);
        vox_free(ctx, all);
        vox_free(ctx, few);
    }
    for (int i = 0; i < nisa; i++)
        vox_ctx_destroy(isa[i]);
}

VOX_TEST_MAIN(VOX_TEST(test_layers_and_nets), VOX_TEST(test_tiles), VOX_TEST(test_planner_choice),
              VOX_TEST(test_threads_bitwise_and_alloc_failures))
