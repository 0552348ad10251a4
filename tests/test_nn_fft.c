/*
 * test_nn_fft.c: FFT convolution in the fast forward pass (src/nn/fast_fft.c) against the
 * reference forward pass (the oracle): 5^3 and 7^3 kernels at odd sizes and channel counts,
 * valid and same padding, dilation, bias/batch norm and activations; a net mixing FFT and
 * direct layers; the planner's choice; 1 vs 2 threads bitwise; allocation failures.
 *
 * Tolerance: FFT rounding grows with the transform size (about eps * log2(N) * the sum of
 * |terms| per output), so the table gives per case the bound on
 * |fast - ref| / max(1, max |ref|).
 */
#include "harness.h"
#include "nn_test_nets.h"
#include "vox/nn.h"

/* Runs net (one input) with algo on run_ctx; copies output 0 into out. */
static void run(struct vox_ctx *ctx, struct vox_ctx *run_ctx, const struct vox_net *net,
                const struct vox_nn_weights *w, const int64_t patch[3],
                enum vox_nn_conv_algo algo, struct vox_tensor *out)
{
    struct vox_nn_fast *fast = NULL;
    struct vox_tensor in = {0};
    int64_t c = net->layers[vox_net_input(net, 0)].channels;
    CHECK_OK(vox_tensor_alloc(ctx, &in, VOX_F32, 5,
                              (int64_t[]){1, c, patch[0], patch[1], patch[2]}));
    fill(&in, 17);
    CHECK_OK(vox_nn_fast_create_algo(run_ctx, net, w, patch, algo, &fast));
    if (fast) {
        for (int i = 0; algo == VOX_NN_CONV_FFT && i < net->n_layers; i++) {
            struct vox_nn_fast_layer info;
            vox_nn_fast_layer_info(fast, i, &info);
            CHECK((net->layers[i].kind == VOX_NN_CONV) == (strcmp(info.algo, "fft") == 0));
        }
        CHECK_OK(vox_nn_fast_forward(run_ctx, fast, &in));
        const struct vox_tensor *o = vox_nn_fast_output(fast, 0);
        CHECK_OK(vox_tensor_alloc(ctx, out, VOX_F32, 5, o->shape));
        CHECK_OK(vox_tensor_copy(ctx, out, o));
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
    CHECK_OK(vox_tensor_alloc(ctx, &in, VOX_F32, 5,
                              (int64_t[]){1, c, patch[0], patch[1], patch[2]}));
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
         {9, 13, 10}, 1e-5},
        {"input a channels=4\nconv c a -> 3 kernel=5x7x5 pad=same act=sigmoid\noutput o c\n",
         {5, 11, 8}, 1e-5},
        {"input a channels=2\nconv c a -> 9 kernel=3x5x3 dilation=2x1x3 bias=no act=tanh\n"
         "output o c\n",
         {7, 8, 13}, 1e-5},
        {"input a channels=1\nconv c a -> 8 kernel=7\nconv d c -> 6 kernel=5 pad=same act=relu\n"
         "pool p d window=1x2x2\ndeconv u p -> 4 kernel=1x2x2\nconv e u -> 2 kernel=5\n"
         "output o e act=sigmoid\n",
         {17, 26, 22}, 1e-4},
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
        {"input a channels=8\nconv c a -> 8 kernel=3 dilation=2\noutput o c\n", {16, 64, 64},
         "jit"},
        {"input a channels=8\nconv c a -> 8 kernel=7\noutput o c\n", {7, 7, 7}, "jit"},
    };
    if (vox_ctx_cpu(ctx)->isa == VOX_ISA_REF)
        return; /* no JIT: the nests are interpreted */
    for (size_t k = 0; k < sizeof table / sizeof table[0]; k++) {
        struct vox_net *net = parse(ctx, table[k].text);
        struct vox_nn_weights *w = random_weights(ctx, net, 1);
        struct vox_nn_fast *fast = NULL;
        size_t est = 0;
        CHECK_OK(vox_nn_fast_create(ctx, net, w, table[k].patch, &fast));
        CHECK_OK(vox_nn_fast_estimate(ctx, net, table[k].patch, &est));
        if (fast) {
            struct vox_nn_fast_layer info;
            vox_nn_fast_layer_info(fast, vox_net_find(net, "c"), &info);
            if (strcmp(info.algo, table[k].algo) != 0)
                fprintf(stderr, "  case %zu: %s, expected %s\n", k, info.algo, table[k].algo);
            CHECK(strcmp(info.algo, table[k].algo) == 0);
            CHECK(est == vox_nn_fast_bytes(fast));
        }
        vox_nn_fast_destroy(fast);
        vox_nn_weights_destroy(w);
        vox_net_destroy(net);
    }
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

VOX_TEST_MAIN(VOX_TEST(test_layers_and_nets), VOX_TEST(test_planner_choice),
              VOX_TEST(test_threads_bitwise_and_alloc_failures))
