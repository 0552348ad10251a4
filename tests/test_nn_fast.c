/*
 * test_nn_fast.c: the fast forward pass against the reference forward pass (the oracle): every
 * layer kind on its own at odd sizes and channel counts that are not multiples of the vector
 * width, for every ISA the machine has; whole nets (N4, n337, RSUNet-tiny); 1 vs 2 threads
 * bitwise; a conv fused with its max-pool (run slab by slab) bitwise equal to the same conv
 * and pool unfused; the per-ISA row transposes of packing against their scalar definition;
 * wrong inputs; allocation failures.
 *
 * Tolerance: the reference sums in double, the fast path in f32 in the kernels' order, so the
 * difference is bounded by about fan_in * 2^-24 * the sum of |terms|; we check
 * |fast - ref| <= tol * max(1, max |ref|) with tol from the table in check_net.
 */
#include "harness.h"
#include "nn/fast.h"
#include "nn_test_nets.h"
#include "vox/io.h"
#include "vox/nn.h"

#include <unistd.h>

/* Runs net on ctx (fast) and on the reference; returns max |fast - ref| / max(1, max |ref|). */
static double compare(struct vox_ctx *ctx, struct vox_ctx *run_ctx, const struct vox_net *net,
                      const int64_t patch[3], uint64_t seed)
{
    struct vox_nn_weights *w = random_weights(ctx, net, seed);
    struct vox_nn_plan *ref = NULL;
    struct vox_nn_fast *fast = NULL;
    struct vox_tensor in[VOX_NN_MAX_IN] = {{0}};
    double err = 1e30;
    CHECK_OK(vox_nn_plan_create(ctx, net, w, patch, &ref));
    CHECK_OK(vox_nn_fast_create(run_ctx, net, w, patch, &fast));
    if (!ref || !fast)
        goto done;
    for (int k = 0; k < net->n_inputs; k++) {
        int64_t c = net->layers[vox_net_input(net, k)].channels;
        int64_t shape[5] = {1, c, patch[0], patch[1], patch[2]};
        CHECK_OK(vox_tensor_alloc(ctx, &in[k], VOX_F32, 5, shape));
        fill(&in[k], seed + 100 + (uint64_t)k);
    }
    CHECK_OK(vox_nn_plan_forward(ctx, ref, in));
    CHECK_OK(vox_nn_fast_forward(run_ctx, fast, in));
    err = 0;
    for (int k = 0; k < net->n_outputs; k++) {
        const struct vox_tensor *a = vox_nn_plan_output(ref, k), *b = vox_nn_fast_output(fast, k);
        CHECK(vox_tensor_numel(a) == vox_tensor_numel(b));
        double m = 1, d = 0;
        for (int64_t e = 0; e < vox_tensor_numel(a); e++) {
            double ra = ((const float *)a->data)[e], fb = ((const float *)b->data)[e];
            m = fmax(m, fabs(ra));
            d = fmax(d, fabs(ra - fb));
            if (fb != fb)
                d = 1e30;
        }
        err = fmax(err, d / m);
    }
done:
    for (int k = 0; k < VOX_NN_MAX_IN; k++)
        vox_tensor_free(ctx, &in[k]);
    vox_nn_fast_destroy(fast);
    vox_nn_plan_destroy(ref);
    vox_nn_weights_destroy(w);
    return err;
}

static const char *const layer_nets[] = {
    "input a channels=3\nconv c a -> 5 kernel=2x3x3 act=relu\noutput o c\n",
    "input a channels=1\nconv c a -> 19 kernel=3 act=elu\noutput o c\n",
    "input a channels=7\nconv c a -> 9 kernel=1x3x2 dilation=1x2x3 bn=yes act=sigmoid\n"
    "output o c\n",
    "input a channels=2\nconv c0 a -> 17 kernel=1\nconv c c0 -> 11 kernel=3x2x3 pad=same "
    "dilation=2x1x1 act=tanh\noutput o c\n",
    "input a channels=2\nconv c0 a -> 20 kernel=1\nconv c c0 -> 33 kernel=2x2x2 bias=no\n"
    "output o c\n",
    "input a channels=3\nconv c0 a -> 13 kernel=1\ndeconv d c0 -> 6 kernel=1x2x3 act=relu\n"
    "output o d\n",
    "input a channels=5\npool p a window=1x2x1\nmaxfilter m p window=2x2x3 dilation=1x1x2\n"
    "output o m\n",
    "input a channels=3\nupsample u a factor=2x1x3\ncrop k u margin=1x0x2\noutput o k\n",
    "input a channels=3\ninput b channels=3\nconv c a -> 9 kernel=1\nconv d b -> 9 kernel=1\n"
    "add s c d act=elu\nconcat k s a d\noutput o k act=tanh\nsoftmax m s\noutput o2 m\n",
    "input a channels=2\nconv x a -> 4 kernel=3\nconv c a -> 10 kernel=1\ncrop k c to=x\n"
    "output o k\noutput o2 x\n",
    /* narrow outputs (<= 4 channels): e, read by an output only, takes the nest with vectors
     * along the input lanes (which leaves the output's other lanes unwritten); c, read by a
     * conv too, must not (e would multiply those lanes, NaN included, by zero weights) */
    "input a channels=2\nconv c0 a -> 17 kernel=1 act=elu\n"
    "conv c c0 -> 3 kernel=1x5x5 pad=same act=sigmoid\nconv e c -> 2 kernel=2x1x3\n"
    "output o e\noutput o2 c\n",
};

static void test_layers_every_isa(struct vox_ctx *ctx)
{
    struct vox_ctx *isa[3];
    int n_isa = isa_contexts(ctx, isa);
    CHECK(n_isa >= 1);
    const int64_t patch[3] = {4, 10, 11};
    for (size_t k = 0; k < sizeof layer_nets / sizeof layer_nets[0]; k++) {
        struct vox_net *net = parse(ctx, layer_nets[k]);
        if (!net)
            continue;
        for (int i = 0; i < n_isa; i++) {
            double err = compare(ctx, isa[i], net, patch, 7 + k);
            if (err > 1e-5)
                fprintf(stderr, "  net %zu isa %s: error %g\n", k,
                        vox_isa_str(vox_ctx_cpu(isa[i])->isa), err);
            CHECK(err <= 1e-5);
        }
        vox_net_destroy(net);
    }
    for (int i = 0; i < n_isa; i++)
        vox_ctx_destroy(isa[i]);
}

/* Whole nets: name, patch, tolerance (relative to max(1, max |ref|)). */
static void test_whole_nets(struct vox_ctx *ctx)
{
    static const struct {
        const char *name;
        int64_t patch[3];
        double tol;
    } table[] = {
        {"n4.net", {1, 97, 96}, 1e-4},
        {"n337.net", {85, 85, 93}, 1e-4},
        {"rsunet.net", {3, 16, 24}, 1e-4},
    };
    for (size_t k = 0; k < sizeof table / sizeof table[0]; k++) {
        if (!vox_test_full && k < 2)
            continue; /* N4 and n337: seconds of reference convolution (full tier only) */
        struct vox_net *net = shipped(ctx, table[k].name);
        if (!net)
            continue;
        double err = compare(ctx, ctx, net, table[k].patch, 11);
        if (err > table[k].tol)
            fprintf(stderr, "  %s: error %g\n", table[k].name, err);
        CHECK(err <= table[k].tol);
        vox_net_destroy(net);
    }
}

/* Output 0 of net on run_ctx (fast path), copied into out; the algo of layer `probe` too. */
static void fast_out(struct vox_ctx *ctx, struct vox_ctx *run_ctx, const struct vox_net *net,
                     const struct vox_nn_weights *w, const int64_t patch[3], const char *probe,
                     const char **algo, struct vox_tensor *out)
{
    struct vox_nn_fast *fast = NULL;
    struct vox_tensor in = {0};
    int64_t c = net->layers[vox_net_input(net, 0)].channels;
    CHECK_OK(
        vox_tensor_alloc(ctx, &in, VOX_F32, 5, (int64_t[]){1, c, patch[0], patch[1], patch[2]}));
    fill(&in, 21);
    CHECK_OK(vox_nn_fast_create(run_ctx, net, w, patch, &fast));
    if (fast) {
        struct vox_nn_fast_layer li;
        vox_nn_fast_layer_info(fast, vox_net_find(net, probe), &li);
        *algo = li.algo;
        fast_forward_copy(ctx, run_ctx, fast, &in, out);
    }
    vox_nn_fast_destroy(fast);
    vox_tensor_free(ctx, &in);
}

/* A conv whose only reader is a max-pool runs slab by slab into the pool (fast.c,
 * fusable_pool): bitwise the values of the same conv and pool with a linear act layer between
 * them (which stops the fusion), on every ISA and for 1 and 2 threads; and the reference's. */
static void test_conv_pool_fused(struct vox_ctx *ctx)
{
    static const struct {
        const char *conv, *pool;
        int64_t patch[3];
    } cases[] = {
        {"input a channels=1\nconv c a -> 5 kernel=2x3x3 act=relu\n", "window=2x2x2", {5, 12, 14}},
        {"input a channels=19\nconv c a -> 18 kernel=2x3x2 pad=same act=elu\n",
         "window=1x2x2",
         {4, 10, 12}},
    };
    struct vox_ctx *ctxs[4];
    int n = isa_contexts(ctx, ctxs);
    struct vox_ctx_options one = {.threads = 1, .log_level = VOX_LOG_WARN};
    CHECK_OK(vox_ctx_create(&one, &ctxs[n]));
    n++;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char fused[512], plain[512];
        snprintf(fused, sizeof fused, "%spool p c %s\nconv d p -> 3 kernel=1\noutput o d\n",
                 cases[k].conv, cases[k].pool);
        snprintf(plain, sizeof plain,
                 "%sact q c fn=linear\npool p q %s\nconv d p -> 3 kernel=1\noutput o d\n",
                 cases[k].conv, cases[k].pool);
        struct vox_net *nf = parse(ctx, fused), *np = parse(ctx, plain);
        if (!nf || !np)
            continue;
        struct vox_nn_weights *w = random_weights(ctx, nf, 4 + k), *wp = random_weights(ctx, np, 1);
        for (int i = 0; i < np->n_layers; i++) /* the same conv weights in both nets */
            for (int q = 0; q < VOX_P_COUNT; q++)
                if (wp->p[i][q].rank && vox_net_find(nf, np->layers[i].name) >= 0)
                    CHECK_OK(vox_tensor_copy(ctx, &wp->p[i][q],
                                             &w->p[vox_net_find(nf, np->layers[i].name)][q]));
        double err = compare(ctx, ctx, nf, cases[k].patch, 4 + k);
        CHECK(err <= 1e-5);
        for (int i = 0; i < n; i++) {
            struct vox_tensor a = {0}, b = {0};
            const char *fa = "", *pa = "";
            fast_out(ctx, ctxs[i], nf, w, cases[k].patch, "c", &fa, &a);
            fast_out(ctx, ctxs[i], np, wp, cases[k].patch, "c", &pa, &b);
            CHECK(strstr(fa, "+pool") != NULL);
            CHECK(strstr(pa, "+pool") == NULL);
            CHECK(a.data && b.data && vox_tensor_nbytes(&a) == vox_tensor_nbytes(&b) &&
                  memcmp(a.data, b.data, vox_tensor_nbytes(&a)) == 0);
            vox_tensor_free(ctx, &a);
            vox_tensor_free(ctx, &b);
        }
        vox_nn_weights_destroy(w);
        vox_nn_weights_destroy(wp);
        vox_net_destroy(nf);
        vox_net_destroy(np);
    }
    for (int i = 0; i < n; i++)
        vox_ctx_destroy(ctxs[i]);
}

/* The row transposes (fast_pack.h) of every ISA the machine has, against their definition:
 * two full runs of lanes and a tail, a missing (zero) lane, an unwritten one; the streaming
 * pack equal to the plain one. */
static void test_pack_rows(struct vox_ctx *ctx)
{
    const int max = (int)vox_ctx_cpu(ctx)->isa_max;
    enum { N = 37 };
    for (int isa = VOX_ISA_REF; isa <= max; isa++) {
        const struct vox_nn_pack_fns *pk = vox_nn_pack_fns_for(isa);
        const int L = pk->lanes;
        float src[16][N], blk[16 * N], back[16][N];
        _Alignas(64) float streamed[16 * N];
        const float *rows[16];
        float *outs[16];
        uint64_t seed = 3;
        for (int l = 0; l < L; l++) {
            for (int x = 0; x < N; x++)
                src[l][x] = (float)(vox_test_rand(&seed) % 1000), back[l][x] = -1.0f;
            rows[l] = l == 2 ? NULL : src[l];
            outs[l] = l == 3 ? NULL : back[l];
        }
        pk->pack(rows, blk, N);
        pk->pack_stream(rows, streamed, N); /* the same values, stored non-temporally */
        CHECK(memcmp(blk, streamed, (size_t)(L * N) * sizeof *blk) == 0);
        pk->unpack(blk, outs, N);
        for (int l = 0; l < L; l++)
            for (int x = 0; x < N; x++) {
                CHECK(blk[x * L + l] == (l == 2 ? 0.0f : src[l][x]));
                CHECK(back[l][x] == (l == 3 ? -1.0f : l == 2 ? 0.0f : src[l][x]));
            }
    }
}

/* vox_nn_bt_pack and its streaming twin on 1 and 2 threads: the same blocked tensor, for
 * channel counts that leave a partial block and shapes whose (block, plane) units are fewer
 * than the threads' bands (the rows split) or many. */
static void test_bt_pack_stream(struct vox_ctx *ctx)
{
    const int64_t shapes[][4] = {{20, 3, 5, 37}, {16, 1, 64, 40}, {7, 9, 4, 17}};
    const int isa = (int)vox_ctx_cpu(ctx)->isa;
    const int64_t L = vox_nn_pack_fns_for(isa)->lanes;
    for (int threads = 1; threads <= 2; threads++) {
        struct vox_ctx *c = NULL;
        struct vox_ctx_options o = {.threads = threads, .log_level = VOX_LOG_WARN};
        CHECK_OK(vox_ctx_create(&o, &c));
        for (size_t k = 0; c && k < sizeof shapes / sizeof shapes[0]; k++) {
            const int64_t *sh = shapes[k];
            struct vox_tensor in = {0};
            CHECK_OK(
                vox_tensor_alloc(ctx, &in, VOX_F32, 5, (int64_t[]){1, sh[0], sh[1], sh[2], sh[3]}));
            fill(&in, 5 + (uint64_t)k);
            struct vox_nn_bt a = {.n = 1, .c = sh[0], .blk = L, .s = {sh[1], sh[2], sh[3]}};
            struct vox_nn_bt b = a;
            const size_t bytes = (size_t)vox_nn_bt_elems(&a) * sizeof(float);
            a.data = vox_alloc(ctx, bytes);
            b.data = vox_alloc(ctx, bytes);
            CHECK(a.data && b.data);
            if (a.data && b.data) {
                memset(a.data, 0x55, bytes);
                memset(b.data, 0x66, bytes);
                vox_nn_bt_pack(vox_ctx_pool(c), isa, &in, &a);
                vox_nn_bt_pack_stream(vox_ctx_pool(c), isa, &in, &b);
                CHECK(memcmp(a.data, b.data, bytes) == 0);
                const float *p = in.data; /* and a's value at one voxel of each channel */
                const int64_t vol = sh[1] * sh[2] * sh[3], v = vol - 1;
                for (int64_t ch = 0; ch < sh[0]; ch++)
                    CHECK(a.data[((ch / L) * vol + v) * L + ch % L] == p[ch * vol + v]);
            }
            vox_free(ctx, a.data);
            vox_free(ctx, b.data);
            vox_tensor_free(ctx, &in);
        }
        vox_ctx_destroy(c);
    }
}

/* Output of rsunet-tiny through the fast path on ctx, copied. */
static void run_fast(struct vox_ctx *ctx, struct vox_ctx *run_ctx, struct vox_tensor *out)
{
    struct vox_net *net = shipped(ctx, "rsunet.net");
    struct vox_nn_weights *w = random_weights(ctx, net, 3);
    struct vox_nn_fast *fast = NULL;
    const int64_t patch[3] = {2, 8, 16};
    CHECK_OK(vox_nn_fast_create(run_ctx, net, w, patch, &fast));
    struct vox_tensor in = {0};
    CHECK_OK(vox_tensor_alloc(ctx, &in, VOX_F32, 5, (int64_t[]){1, 1, 2, 8, 16}));
    fill(&in, 9);
    fast_forward_copy(ctx, run_ctx, fast, &in, out);
    vox_tensor_free(ctx, &in);
    vox_nn_fast_destroy(fast);
    vox_nn_weights_destroy(w);
    vox_net_destroy(net);
}

static void test_threads_bitwise(struct vox_ctx *ctx)
{
    struct vox_ctx *one;
    struct vox_ctx_options opt = {.threads = 1, .log_level = VOX_LOG_WARN};
    CHECK_OK(vox_ctx_create(&opt, &one));
    struct vox_tensor a = {0}, b = {0};
    run_fast(ctx, ctx, &a);
    run_fast(ctx, one, &b);
    CHECK(vox_tensor_numel(&a) == 3 * 2 * 8 * 16);
    CHECK(a.data && b.data && memcmp(a.data, b.data, vox_tensor_nbytes(&a)) == 0);
    vox_tensor_free(ctx, &a);
    vox_tensor_free(ctx, &b);
    vox_ctx_destroy(one);
}

/* Planar tensors (blocks of 1, fast.c plan_blocks; the planar nest of fast_conv.c): 20 and 5
 * channels fill blocks of 8 and 16 lanes badly, so on every ISA the chain from the 20-channel
 * input runs planar: a conv over 12 input channels (kz and 12 channels per pass; 3x2x3: no
 * Winograd to prefer blocks for), a same-padded
 * dilated one, a residual add fused into it, a max-filter, a conv to 5 fused with its pool;
 * the last conv (to 16) writes blocks from a planar input. Against the reference on every ISA
 * (x: several register tiles and a tail), bitwise for 1 and 2 threads. */
static void test_planar(struct vox_ctx *ctx)
{
    static const char text[] =
        "input a channels=20\nconv c1 a -> 20 kernel=3x2x3 act=relu\n"
        "conv c2 c1 -> 20 kernel=1x3x3 pad=same dilation=1x2x1\nadd s c2 c1 act=relu\n"
        "maxfilter m s window=1x2x2\nconv c3 m -> 5 kernel=2x2x3 act=elu\n"
        "pool p c3 window=1x2x2\nconv c4 p -> 16 kernel=1x1x3\noutput o c4\n";
    static const char *const planar[] = {"a", "c1", "c2", "s", "m", "c3", "p"};
    const int64_t patch[3] = {6, 13, 53};
    struct vox_net *net = parse(ctx, text);
    struct vox_ctx *isa[3];
    int n_isa = isa_contexts(ctx, isa);
    for (int i = 0; net && i < n_isa; i++) {
        struct vox_nn_weights *w = random_weights(ctx, net, 3);
        struct vox_nn_fast *fast = NULL;
        CHECK_OK(vox_nn_fast_create(isa[i], net, w, patch, &fast));
        for (int l = 0; fast && l < net->n_layers; l++) {
            struct vox_nn_fast_layer info;
            vox_nn_fast_layer_info(fast, l, &info);
            bool want = false;
            for (size_t k = 0; k < sizeof planar / sizeof planar[0]; k++)
                want = want || strcmp(net->layers[l].name, planar[k]) == 0;
            if (want != (info.block == 1))
                fprintf(stderr, "  isa %s layer %s: block %lld\n",
                        vox_isa_str(vox_ctx_cpu(isa[i])->isa), net->layers[l].name,
                        (long long)info.block);
            CHECK(want == (info.block == 1));
        }
        vox_nn_fast_destroy(fast);
        vox_nn_weights_destroy(w);
        double err = compare(ctx, isa[i], net, patch, 5);
        if (err > 1e-5)
            fprintf(stderr, "  isa %s: error %g\n", vox_isa_str(vox_ctx_cpu(isa[i])->isa), err);
        CHECK(err <= 1e-5);
    }
    for (int i = 0; i < n_isa; i++)
        vox_ctx_destroy(isa[i]);
    /* a 3x3x3 conv from 24 to 48 channels: Winograd on blocks beats what a planar input allows
     * (the blocked nest reading it, or the FFT), so the input stays in blocks */
    struct vox_net *wn = parse(ctx, "input a channels=24\nconv c a -> 48 kernel=3\noutput o c\n");
    struct vox_nn_weights *ww = wn ? random_weights(ctx, wn, 2) : NULL;
    struct vox_nn_fast *wf = NULL;
    if (ww)
        CHECK_OK(vox_nn_fast_create(ctx, wn, ww, (int64_t[]){10, 40, 40}, &wf));
    if (wf && vox_ctx_cpu(ctx)->isa != VOX_ISA_REF) {
        struct vox_nn_fast_layer li;
        vox_nn_fast_layer_info(wf, vox_net_find(wn, "a"), &li);
        CHECK(li.block > 1);
        vox_nn_fast_layer_info(wf, vox_net_find(wn, "c"), &li);
        CHECK(strcmp(li.algo, "winograd") == 0);
    }
    vox_nn_fast_destroy(wf);
    vox_nn_weights_destroy(ww);
    vox_net_destroy(wn);
    /* ... but not where its planar output goes on to more layers: in a chain of 24-channel
     * 1x3x3 convs the second stays planar and so does its input (the last, which only the
     * output reads, may take Winograd and its input in blocks); 24 channels fill 16 lanes
     * badly, not 8 */
    wn = parse(ctx, "input a channels=1\nconv c1 a -> 24 kernel=1x3x3\nconv c2 c1 -> 24 "
                    "kernel=1x3x3\nconv c3 c2 -> 24 kernel=1x3x3\noutput o c3\n");
    ww = wn ? random_weights(ctx, wn, 2) : NULL;
    wf = NULL;
    if (ww)
        CHECK_OK(vox_nn_fast_create(ctx, wn, ww, (int64_t[]){4, 64, 64}, &wf));
    if (wf && vox_ctx_cpu(ctx)->isa == VOX_ISA_AVX512) {
        struct vox_nn_fast_layer li;
        vox_nn_fast_layer_info(wf, vox_net_find(wn, "c1"), &li);
        CHECK(li.block == 1);
    }
    vox_nn_fast_destroy(wf);
    vox_nn_weights_destroy(ww);
    vox_net_destroy(wn);
    struct vox_ctx *one;
    struct vox_ctx_options opt = {.threads = 1, .log_level = VOX_LOG_WARN};
    CHECK_OK(vox_ctx_create(&opt, &one));
    struct vox_nn_weights *w = net ? random_weights(ctx, net, 4) : NULL;
    struct vox_tensor a = {0}, b = {0};
    const char *algo = NULL;
    if (w) {
        fast_out(ctx, ctx, net, w, patch, "c1", &algo, &a);
        fast_out(ctx, one, net, w, patch, "c1", &algo, &b);
    }
    CHECK(a.data && b.data && vox_tensor_nbytes(&a) == vox_tensor_nbytes(&b) &&
          memcmp(a.data, b.data, vox_tensor_nbytes(&a)) == 0);
    vox_tensor_free(ctx, &a);
    vox_tensor_free(ctx, &b);
    vox_nn_weights_destroy(w);
    vox_ctx_destroy(one);
    vox_net_destroy(net);
}

/* A planar input is read in place (no packing) and a planar output without activation is a
 * view of the plan's tensor (no unpacking): the input is left unchanged, a strided input (a
 * box of a wider tensor, which is packed) gives the same bits, and the output is the
 * reference's. */
static void test_planar_in_place(struct vox_ctx *ctx)
{
    struct vox_net *net =
        parse(ctx, "input a channels=20\nconv c a -> 5 kernel=1x3x3\noutput o c\n");
    const int64_t patch[3] = {3, 9, 37};
    struct vox_nn_weights *w = net ? random_weights(ctx, net, 6) : NULL;
    struct vox_nn_fast *fast = NULL;
    if (w)
        CHECK_OK(vox_nn_fast_create(ctx, net, w, patch, &fast));
    struct vox_tensor in = {0}, keep = {0}, wide = {0}, box = {0}, a = {0}, b = {0};
    const int64_t shape[5] = {1, 20, 3, 9, 37}, wshape[5] = {1, 20, 3, 9, 41};
    CHECK_OK(vox_tensor_alloc(ctx, &in, VOX_F32, 5, shape));
    CHECK_OK(vox_tensor_alloc(ctx, &keep, VOX_F32, 5, shape));
    CHECK_OK(vox_tensor_alloc(ctx, &wide, VOX_F32, 5, wshape));
    fill(&in, 31);
    CHECK_OK(vox_tensor_copy(ctx, &keep, &in));
    CHECK_OK(vox_tensor_view_box(ctx, &wide, (int64_t[]){0, 0, 0, 0, 2},
                                 (int64_t[]){1, 20, 3, 9, 39}, &box));
    CHECK_OK(vox_tensor_copy(ctx, &box, &in));
    if (fast) {
        CHECK(vox_nn_fast_output(fast, 0)->base == NULL); /* a view */
        fast_forward_copy(ctx, ctx, fast, &in, &a);
        CHECK(memcmp(in.data, keep.data, vox_tensor_nbytes(&in)) == 0);
        fast_forward_copy(ctx, ctx, fast, &box, &b);
        CHECK(a.data && b.data && memcmp(a.data, b.data, vox_tensor_nbytes(&a)) == 0);
    }
    double err = net ? compare(ctx, ctx, net, patch, 6) : 1;
    CHECK(err <= 1e-5);
    vox_nn_fast_destroy(fast);
    vox_tensor_free(ctx, &in);
    vox_tensor_free(ctx, &keep);
    vox_tensor_free(ctx, &wide);
    vox_tensor_free(ctx, &a);
    vox_tensor_free(ctx, &b);
    vox_nn_weights_destroy(w);
    vox_net_destroy(net);
}

static void test_errors_and_alloc_failures(struct vox_ctx *ctx)
{
    struct vox_net *net = parse(ctx, layer_nets[3]);
    struct vox_nn_weights *w = random_weights(ctx, net, 1);
    struct vox_nn_fast *fast = NULL;
    const int64_t patch[3] = {3, 5, 6};
    CHECK_OK(vox_nn_fast_create(ctx, net, w, patch, &fast));
    size_t est = 0;
    CHECK_OK(vox_nn_fast_estimate(ctx, net, patch, &est));
    CHECK(fast && est == vox_nn_fast_bytes(fast));
    for (int i = 0; fast && i < net->n_layers; i++) {
        struct vox_nn_fast_layer info;
        vox_nn_fast_layer_info(fast, i, &info);
        if (net->layers[i].kind == VOX_NN_CONV && vox_ctx_cpu(ctx)->isa != VOX_ISA_REF)
            CHECK(info.jit); /* the generator lowers these nests */
        /* a 2-channel input read by a conv to 17 channels, then 11: all planar (blocks of
         * 1), as 17 and 11 fill blocks of 8 or 16 lanes badly */
        CHECK(info.block == 1);
    }
    struct vox_tensor in = {0};
    CHECK_OK(vox_tensor_alloc(ctx, &in, VOX_F32, 5, (int64_t[]){1, 2, 3, 5, 7}));
    CHECK_STATUS(vox_nn_fast_forward(ctx, fast, &in), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("(1, 2, 3, 5, 6)");
    struct vox_net *small = parse(ctx, layer_nets[0]);
    CHECK_STATUS(vox_nn_fast_estimate(ctx, small, (int64_t[]){1, 5, 5}, &est), VOX_INVALID_ARG);
    vox_net_destroy(small);
    vox_tensor_free(ctx, &in);
    vox_nn_fast_destroy(fast);
    for (int64_t k = 1;; k++) {
        vox_ctx_fail_alloc_at(ctx, k);
        fast = NULL;
        enum vox_status s = vox_nn_fast_create(ctx, net, w, patch, &fast);
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

/* Slides net over a u8 volume with the given patch and returns output 0 read back as f32. */
static void slide(struct vox_ctx *ctx, const struct vox_net *net, struct vox_nn_weights *w,
                  const int64_t vol[3], const int64_t patch[3], struct vox_tensor *out)
{
    char in_path[256], out_path[256];
    snprintf(in_path, sizeof in_path, "/tmp/vox_slide_in_%d.h5:/raw", (int)getpid());
    snprintf(out_path, sizeof out_path, "/tmp/vox_slide_out_%d.h5", (int)getpid());
    struct vox_tensor raw = {0};
    CHECK_OK(vox_tensor_alloc(ctx, &raw, VOX_U8, 3, vol));
    uint64_t seed = 4;
    for (int64_t e = 0; e < vox_tensor_numel(&raw); e++)
        ((uint8_t *)raw.data)[e] = (uint8_t)vox_test_rand(&seed);
    CHECK_OK(vox_volume_save(ctx, in_path, &raw, NULL));
    struct vox_volume *in = NULL, *o = NULL;
    struct vox_out_file *f = NULL;
    struct vox_nn_volume *v = NULL;
    const enum vox_dtype dt = VOX_U8;
    struct vox_nn_volume_options opt = {
        .patch = {patch[0], patch[1], patch[2]}, .quiet = true, .out_dtype = VOX_F32};
    CHECK_OK(vox_volume_open(ctx, in_path, &in));
    CHECK_OK(vox_nn_volume_plan(ctx, net, w, vol, &dt, &opt, &v));
    struct vox_dataset_options dopt = {.dtype = VOX_F32, .rank = 4};
    if (v) {
        int64_t pp[3], ov[3], tiles;
        vox_nn_volume_geometry(v, pp, ov, &tiles);
        CHECK(memcmp(vol, patch, 3 * sizeof *vol) == 0 ? tiles == 1 : tiles >= 4);
        vox_nn_volume_out_shape(v, 0, dopt.shape);
    }
    CHECK_OK(vox_out_open(ctx, out_path, &f));
    CHECK_OK(vox_out_dataset(ctx, f, "/o", &dopt, &o));
    CHECK_OK(vox_nn_volume_run(ctx, v, &in, &o));
    CHECK_OK(vox_out_commit(ctx, f));
    char spec[300];
    snprintf(spec, sizeof spec, "%s:/o", out_path);
    CHECK_OK(vox_volume_load(ctx, spec, out, NULL));
    vox_volume_close(in);
    vox_nn_volume_destroy(v);
    vox_tensor_free(ctx, &raw);
    unlink(out_path);
    snprintf(in_path, sizeof in_path, "/tmp/vox_slide_in_%d.h5", (int)getpid());
    unlink(in_path);
}

/* Sliding patches == one patch over the whole volume: a pooled valid net (abutting tiles,
 * strided output) and a same-padded U-Net (cropped margins). */
static void test_sliding_equals_one_pass(struct vox_ctx *ctx)
{
    static const struct {
        const char *text;
        int64_t vol[3], patch[3];
    } cases[] = {
        {"input raw channels=1\nconv c1 raw -> 5 kernel=2x3x3 act=relu\npool p c1 window=1x2x2\n"
         "conv c2 p -> 3 kernel=1x3x3 act=relu\noutput o c2 act=sigmoid\n",
         {5, 30, 28},
         {3, 12, 14}},
        {"input raw channels=1\nconv e raw -> 6 kernel=1x3x3 pad=same act=elu\n"
         "pool p e window=1x2x2\nconv c p -> 9 kernel=3x3x3 pad=same bn=yes act=relu\n"
         "deconv u c -> 6 kernel=1x2x2\nadd s u e\nconv f s -> 3 kernel=1x3x3 pad=same\n"
         "output o f act=sigmoid\n",
         {6, 24, 20},
         {6, 16, 14}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        struct vox_net *net = parse(ctx, cases[k].text);
        struct vox_nn_weights *w = random_weights(ctx, net, 5);
        struct vox_tensor a = {0}, b = {0};
        slide(ctx, net, w, cases[k].vol, cases[k].vol, &a);
        slide(ctx, net, w, cases[k].vol, cases[k].patch, &b);
        CHECK(a.data && b.data && vox_tensor_numel(&a) == vox_tensor_numel(&b));
        double d = 0;
        for (int64_t e = 0; a.data && b.data && e < vox_tensor_numel(&a); e++)
            d = fmax(d, fabs(((float *)a.data)[e] - ((float *)b.data)[e]));
        /* a Winograd layer rounds by where its tiles fall, which the patch origin moves:
         * F(4,3) along y and x is within about 2e-6 of the exact sum (test_nn_wino) */
        if (d > 5e-6)
            fprintf(stderr, "  case %zu: max difference %g\n", k, d);
        CHECK(d <= 5e-6);
        vox_tensor_free(ctx, &a);
        vox_tensor_free(ctx, &b);
        vox_nn_weights_destroy(w);
        vox_net_destroy(net);
    }
}

VOX_TEST_MAIN(VOX_TEST(test_sliding_equals_one_pass), VOX_TEST(test_layers_every_isa),
              VOX_TEST(test_whole_nets), VOX_TEST(test_conv_pool_fused), VOX_TEST(test_pack_rows),
              VOX_TEST(test_bt_pack_stream), VOX_TEST(test_threads_bitwise), VOX_TEST(test_planar),
              VOX_TEST(test_planar_in_place), VOX_TEST(test_errors_and_alloc_failures))
