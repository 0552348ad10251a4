/*
 * test_nn_wino.c: Winograd convolution (F(2,3), and F(4,3) along y and x) in the fast forward pass
 * (src/nn/fast_wino.c) against the reference forward pass (the oracle), for every ISA the machine
 * has: 3x3x3 and 1x3x3 (and 3x1x3, 3x3x1) kernels, valid and same padding, 1, 3, 17 and 24 channels
 * in and out (not multiples of the vector width; narrow inputs stored channels-last), odd output
 * sizes (tail tiles on every axis, a last block of fewer tiles), bias, batch norm and
 * activations, batch entries (max-pooling fragments); a whole net with Winograd against
 * direct; 1 vs 2 threads bitwise; blocks of tiles from the L2 (same bits); the memory estimate;
 * allocation failures; the planner's choice by the cost model and by measurement.
 *
 * The full tier repeats the layer table with more seeds.
 *
 * Tolerance: F(2,3)'s transforms add a few roundings per product (|B^T|, |A^T| entries are 0
 * or 1, G's are 1/2): about 3e-7 of max(1, max |ref|); F(4,3), which the 3x3x3 and 1x3x3
 * layers take along y and x (entries up to 8, G's down to 1/24), about 2e-6 (measured 2.3e-6
 * at most over the full tier); the table allows 1e-5.
 */
#include "harness.h"
#include "nn/fast.h"
#include "nn_test_nets.h"
#include "vox/nn.h"

#include <stdlib.h>

/* Runs net (one input) with algo on run_ctx; copies output 0 into out; checks that every
 * conv the algorithm applies to ran by Winograd. */
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
        for (int i = 0; algo == VOX_NN_CONV_WINOGRAD && i < net->n_layers; i++) {
            const struct vox_nn_layer *l = &net->layers[i];
            struct vox_nn_fast_layer info;
            vox_nn_fast_layer_info(fast, i, &info);
            int threes = 0;
            for (int a = 0; a < 3; a++)
                threes += l->kernel[a] == 3;
            bool applies = l->kind == VOX_NN_CONV && threes >= 2 &&
                           l->kernel[0] * l->kernel[1] * l->kernel[2] == (threes == 3 ? 27 : 9);
            CHECK(applies == (strcmp(info.algo, "winograd") == 0));
        }
        fast_forward_copy(ctx, run_ctx, fast, &in, out);
    }
    vox_nn_fast_destroy(fast);
    vox_tensor_free(ctx, &in);
}

/* max |a - b| / max(1, max |a|). */
static double rel_err(const struct vox_tensor *a, const struct vox_tensor *b)
{
    if (!a || !a->data || !b->data || vox_tensor_numel(a) != vox_tensor_numel(b))
        return 1e30;
    double m = 1, d = 0;
    for (int64_t e = 0; e < vox_tensor_numel(a); e++) {
        double ra = ((const float *)a->data)[e], fb = ((const float *)b->data)[e];
        m = fmax(m, fabs(ra));
        d = fb == fb ? fmax(d, fabs(ra - fb)) : 1e30;
    }
    return d / m;
}

/* Winograd on run_ctx against the reference on ctx. */
static double compare(struct vox_ctx *ctx, struct vox_ctx *run_ctx, const struct vox_net *net,
                      const int64_t patch[3], uint64_t seed)
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
    run(ctx, run_ctx, net, w, patch, VOX_NN_CONV_WINOGRAD, &got);
    double err = rel_err(ref ? vox_nn_plan_output(ref, 0) : NULL, &got);
    vox_tensor_free(ctx, &in);
    vox_tensor_free(ctx, &got);
    vox_nn_plan_destroy(ref);
    vox_nn_weights_destroy(w);
    return err;
}

static void test_layers(struct vox_ctx *ctx)
{
    static const struct {
        const char *text;
        int64_t patch[3];
    } table[] = {
        {"input a channels=1\nconv c a -> 3 kernel=3 act=relu\noutput o c\n", {5, 7, 9}},
        {"input a channels=3\nconv c a -> 17 kernel=3 pad=same act=elu\noutput o c\n", {5, 6, 7}},
        {"input a channels=17\nconv c a -> 24 kernel=1x3x3 act=relu\noutput o c\n", {3, 9, 11}},
        {"input a channels=24\nconv c a -> 1 kernel=1x3x3 pad=same act=sigmoid\noutput o c\n",
         {2, 7, 10}},
        {"input a channels=2\nconv c0 a -> 24 kernel=1\nconv c c0 -> 17 kernel=3 pad=same bn=yes "
         "act=tanh\noutput o c\n",
         {4, 9, 8}},
        {"input a channels=2\nconv c0 a -> 24 kernel=1\nconv c c0 -> 24 kernel=3 bias=no\n"
         "output o c\n",
         {6, 9, 13}},
        {"input a channels=17\nconv c a -> 3 kernel=3x1x3 pad=same act=relu\nconv d c -> 17 "
         "kernel=3x3x1\noutput o d\n",
         {5, 6, 7}},
        {"input a channels=2\nconv c0 a -> 8 kernel=1\nconv c c0 -> 5 kernel=3 pad=same act=relu\n"
         "output o c\n",
         {5, 7, 6}},
        {"input a channels=3\nconv c1 a -> 17 kernel=1x3x3 act=relu\nmpf m c1 window=1x2x2\n"
         "conv c2 m -> 5 kernel=3 pad=same act=elu\ninterleave d c2\noutput o d\n",
         {3, 13, 15}},
    };
    struct vox_ctx *isa[3];
    int n_isa = isa_contexts(ctx, isa);
    for (int i = 0; i < n_isa; i++)
        for (size_t k = 0; k < sizeof table / sizeof table[0]; k++) {
            struct vox_net *net = parse(ctx, table[k].text);
            if (!net)
                continue;
            for (uint64_t seed = 3; seed < (vox_test_full ? 8u : 4u); seed++) {
                double err = compare(ctx, isa[i], net, table[k].patch, seed + k);
                if (err > 1e-5)
                    fprintf(stderr, "  %s case %zu seed %llu: error %g\n",
                            vox_isa_str(vox_ctx_cpu(isa[i])->isa), k, (unsigned long long)seed,
                            err);
                CHECK(err <= 1e-5);
            }
            vox_net_destroy(net);
        }
    for (int i = 0; i < n_isa; i++)
        vox_ctx_destroy(isa[i]);
}

/* rsunet (3x3x3 and 1x3x3 convs, same padding, batch norm, ELU, widths 16-128) with Winograd
 * against direct, and 1 vs 2 threads bitwise. */
static void test_net_and_threads(struct vox_ctx *ctx)
{
    struct vox_net *net = shipped(ctx, "rsunet.net");
    if (!net)
        return;
    struct vox_nn_weights *w = random_weights(ctx, net, 5);
    const int64_t patch[3] = {3, 16, 24};
    struct vox_ctx *one;
    struct vox_ctx_options opt = {.threads = 1, .log_level = VOX_LOG_WARN};
    CHECK_OK(vox_ctx_create(&opt, &one));
    struct vox_tensor a = {0}, b = {0}, d = {0};
    run(ctx, ctx, net, w, patch, VOX_NN_CONV_WINOGRAD, &a);
    run(ctx, one, net, w, patch, VOX_NN_CONV_WINOGRAD, &b);
    run(ctx, ctx, net, w, patch, VOX_NN_CONV_DIRECT, &d);
    CHECK(a.data && b.data && memcmp(a.data, b.data, vox_tensor_nbytes(&a)) == 0);
    double err = rel_err(&d, &a);
    if (err > 1e-4)
        fprintf(stderr, "  rsunet: winograd vs direct %g\n", err);
    CHECK(err <= 1e-4);
    vox_tensor_free(ctx, &a);
    vox_tensor_free(ctx, &b);
    vox_tensor_free(ctx, &d);
    vox_ctx_destroy(one);
    vox_nn_weights_destroy(w);
    vox_net_destroy(net);
}

/* The blocks of tiles follow the L2 (3/4 of it, within bounds); the outputs do not: a conv with
 * enough tiles for several block lengths, on contexts that report a small and a large L2, gives
 * the same bits, and the blocks it used differ (the per-thread work floats). */
static void test_block_from_l2(struct vox_ctx *ctx)
{
    CHECK(vox_nn_wino_block_bytes(1 << 20) == 768 << 10);
    CHECK(vox_nn_wino_block_bytes(512 << 10) == 384 << 10);
    CHECK(vox_nn_wino_block_bytes(32 << 20) == 768 << 10);
    CHECK(vox_nn_wino_block_bytes(64 << 10) == 192 << 10);
    CHECK(vox_nn_wino_block_bytes(0) == 192 << 10);
    struct vox_net *net =
        parse(ctx, "input a channels=16\nconv c a -> 16 kernel=3 pad=same act=elu\noutput o c\n");
    if (!net)
        return;
    struct vox_nn_weights *w = random_weights(ctx, net, 9);
    const int64_t patch[3] = {8, 64, 64};
    const int64_t l2[2] = {64 << 10, 4 << 20};
    struct vox_tensor out[2] = {{0}, {0}};
    int64_t work[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        struct vox_ctx *c;
        struct vox_ctx_options opt = {.threads = 2, .log_level = VOX_LOG_WARN};
        CHECK_OK(vox_ctx_create(&opt, &c));
        /* the detected L2, replaced for this context only */
        ((struct vox_cpu *)vox_ctx_cpu(c))->l2_bytes = l2[k];
        run(ctx, c, net, w, patch, VOX_NN_CONV_WINOGRAD, &out[k]);
        const int isa = (int)vox_ctx_cpu(c)->isa;
        const int64_t lanes = isa == VOX_ISA_AVX512 ? 16 : 8;
        if (isa != VOX_ISA_REF) {
            struct vox_nn_fast_conv cv = {.n = 1,
                                          .cin = 16,
                                          .cout = 16,
                                          .bin = lanes,
                                          .b = lanes,
                                          .in = {8, 64, 64},
                                          .out = {8, 64, 64},
                                          .k = {3, 3, 3},
                                          .dil = {1, 1, 1},
                                          .bias = true,
                                          .act = VOX_ACT_ELU};
            struct vox_nn_wino *f = NULL;
            CHECK_OK(vox_nn_wino_create(c, &cv, (int64_t[]){1, 1, 1}, NULL, NULL, &f));
            int64_t u;
            if (f)
                vox_nn_wino_lent_floats(f, &u, &work[k]);
            vox_nn_wino_destroy(c, f);
        }
        vox_ctx_destroy(c);
    }
    CHECK(out[0].data && out[1].data &&
          memcmp(out[0].data, out[1].data, vox_tensor_nbytes(&out[0])) == 0);
    CHECK(work[0] < work[1] || (work[0] == 0 && work[1] == 0));
    for (int k = 0; k < 2; k++)
        vox_tensor_free(ctx, &out[k]);
    vox_nn_weights_destroy(w);
    vox_net_destroy(net);
}

/* The estimate holds Winograd's bytes; allocation failures in create are clean. */
static void test_estimate_and_alloc_failures(struct vox_ctx *ctx)
{
    struct vox_net *net = parse(ctx, "input a channels=3\nconv c a -> 11 kernel=3 pad=same "
                                     "act=elu\nconv d c -> 5 kernel=1x3x3\noutput o d\n");
    struct vox_nn_weights *w = random_weights(ctx, net, 2);
    const int64_t patch[3] = {5, 12, 14};
    struct vox_nn_fast *fast = NULL;
    size_t est = 0;
    CHECK_OK(vox_nn_fast_create_algo(ctx, net, w, patch, VOX_NN_CONV_WINOGRAD, &fast));
    CHECK_OK(vox_nn_fast_estimate_algo(ctx, net, patch, VOX_NN_CONV_WINOGRAD, &est));
    CHECK(fast && est == vox_nn_fast_bytes(fast));
    vox_nn_fast_destroy(fast);
    for (int64_t k = 1;; k++) {
        fast = NULL;
        vox_ctx_fail_alloc_at(ctx, k);
        enum vox_status s =
            vox_nn_fast_create_algo(ctx, net, w, patch, VOX_NN_CONV_WINOGRAD, &fast);
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

/* The cost model: Winograd for 48 -> 48 3x3x3 and 1x3x3 on a large patch, direct for a
 * 1-channel input; a close call (8 -> 8) is measured with a tune, Winograd among the
 * candidates, and the fastest taken. */
/* A residual add fused into the Winograd conv it reads (the other input added and the add's
 * activation applied in the output transform): the add reports "fused" where it may be
 * (the conv has no activation, the add is its only reader, the other input comes earlier),
 * "pass" where it may not; every net equals the reference on every ISA, by Winograd and by
 * the direct nests (which take the add as a post-op, as a deconv's nest does). */
static void test_fused_add(struct vox_ctx *ctx)
{
    static const struct {
        const char *text;
        const char *algo;
    } table[] = {
        {"input a channels=5\nconv p a -> 12 kernel=1 act=relu\n"
         "conv c p -> 12 kernel=3 pad=same\nadd s p c act=elu\nconv o2 s -> 3 kernel=1\n"
         "output o o2\n",
         "fused"},
        {"input a channels=5\nconv p a -> 12 kernel=1 act=relu\n"
         "conv c p -> 12 kernel=1x3x3 pad=same act=relu\nadd s c p\noutput o s\n",
         "pass"},
        {"input a channels=5\nconv p a -> 12 kernel=1 act=relu\n"
         "conv c p -> 12 kernel=3 pad=same\nadd s p c act=tanh\nconv d c -> 12 kernel=1\n"
         "add t s d\noutput o t\n",
         "pass"},
        /* a deconv's nest takes the add as a post-op */
        {"input a channels=5\nconv p a -> 12 kernel=1 act=relu\npool q p window=1x2x2\n"
         "deconv u q -> 12 kernel=1x2x2\nadd s p u act=elu\noutput o s\n",
         "fused"},
    };
    struct vox_ctx *isa[3];
    int n_isa = isa_contexts(ctx, isa);
    const int64_t patch[3] = {5, 10, 8};
    for (size_t k = 0; k < sizeof table / sizeof table[0]; k++) {
        struct vox_net *net = NULL;
        CHECK_OK(vox_net_parse(ctx, table[k].text, "fused.net", &net));
        if (!net)
            continue;
        struct vox_nn_weights *w = random_weights(ctx, net, 3 + k);
        struct vox_nn_fast *fast = NULL;
        CHECK_OK(vox_nn_fast_create_algo(ctx, net, w, patch, VOX_NN_CONV_WINOGRAD, &fast));
        if (fast && vox_ctx_cpu(ctx)->isa != VOX_ISA_REF) {
            struct vox_nn_fast_layer info;
            vox_nn_fast_layer_info(fast, vox_net_find(net, "s"), &info);
            if (strcmp(info.algo, table[k].algo) != 0)
                fprintf(stderr, "  net %zu: add is %s, expected %s\n", k, info.algo, table[k].algo);
            CHECK(strcmp(info.algo, table[k].algo) == 0);
        }
        vox_nn_fast_destroy(fast);
        for (int i = 0; i < n_isa; i++)
            CHECK(compare(ctx, isa[i], net, patch, 3 + k) < 1e-5);
        /* the direct nest takes the add as a post-op: the same answer as the reference */
        struct vox_tensor got = {0};
        struct vox_nn_plan *ref = NULL;
        struct vox_tensor in = {0};
        CHECK_OK(vox_tensor_alloc(ctx, &in, VOX_F32, 5, (int64_t[]){1, 5, 5, 10, 8}));
        fill(&in, 17);
        CHECK_OK(vox_nn_plan_create(ctx, net, w, patch, &ref));
        CHECK_OK(vox_nn_plan_forward(ctx, ref, &in));
        run(ctx, ctx, net, w, patch, VOX_NN_CONV_DIRECT, &got);
        CHECK(rel_err(ref ? vox_nn_plan_output(ref, 0) : NULL, &got) < 1e-5);
        vox_tensor_free(ctx, &got);
        vox_tensor_free(ctx, &in);
        vox_nn_plan_destroy(ref);
        vox_nn_weights_destroy(w);
        vox_net_destroy(net);
    }
    for (int i = 0; i < n_isa; i++)
        vox_ctx_destroy(isa[i]);
}

static void test_planner(struct vox_ctx *ctx)
{
    static const struct {
        const char *text;
        int64_t patch[3];
        const char *algo;
    } table[] = {
        {"input a channels=48\nconv c a -> 48 kernel=3\noutput o c\n", {10, 40, 40}, "winograd"},
        {"input a channels=48\nconv c a -> 48 kernel=1x3x3\noutput o c\n", {4, 40, 40}, "winograd"},
        {"input a channels=1\nconv c a -> 16 kernel=3\noutput o c\n", {10, 40, 40}, "jit"},
    };
    if (vox_ctx_cpu(ctx)->isa == VOX_ISA_REF)
        return; /* no JIT: the nests are interpreted */
    for (size_t k = 0; k < sizeof table / sizeof table[0]; k++)
        check_planner_choice(ctx, table[k].text, table[k].patch, table[k].algo, k);
    setenv("VOX_PLAN_CACHE", "off", 1);
    struct vox_net *net = parse(ctx, "input a channels=16\nconv c a -> 16 kernel=3\noutput o c\n");
    struct vox_nn_weights *w = random_weights(ctx, net, 1);
    struct vox_nn_tune *tune = NULL;
    struct vox_nn_fast *fast = NULL;
    CHECK_OK(vox_nn_tune_create(ctx, &tune));
    const struct vox_nn_fast_options opt = {.algo = VOX_NN_CONV_AUTO, .tune = tune};
    CHECK_OK(vox_nn_fast_create_opts(ctx, net, w, (int64_t[]){16, 64, 64}, &opt, &fast));
    if (fast) {
        struct vox_nn_fast_layer li;
        vox_nn_fast_layer_info(fast, vox_net_find(net, "c"), &li);
        CHECK(li.source == VOX_NN_ALGO_MEASURED && li.ms_direct > 0 && li.ms_wino > 0);
        double best = fmin(li.ms_direct, li.ms_wino);
        if (li.ms_fft > 0)
            best = fmin(best, li.ms_fft);
        const char *want = best == li.ms_wino ? "winograd" : best == li.ms_fft ? "fft" : "jit";
        CHECK(strcmp(li.algo, want) == 0);
    }
    vox_nn_fast_destroy(fast);
    vox_nn_tune_destroy(tune);
    vox_nn_weights_destroy(w);
    vox_net_destroy(net);
    unsetenv("VOX_PLAN_CACHE");
}

VOX_TEST_MAIN(VOX_TEST(test_layers), VOX_TEST(test_net_and_threads), VOX_TEST(test_block_from_l2),
              VOX_TEST(test_estimate_and_alloc_failures), VOX_TEST(test_fused_add),
              VOX_TEST(test_planner))
