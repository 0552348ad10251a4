/*
 * nn_test_nets.h: what the nn tests share: loading the shipped nets (nets/NAME beside the
 * tests directory, found from any build directory), parsing a spec, random inputs and
 * weights.
 */
#ifndef VOX_NN_TEST_NETS_H
#define VOX_NN_TEST_NETS_H

#include "harness.h"
#include "vox/nn.h"

/* nets/NAME next to this file's directory; a failed load is a failed check (NULL). */
static inline struct vox_net *shipped(struct vox_ctx *ctx, const char *name)
{
    char path[1024];
    const char *f = __FILE__, *slash = strrchr(f, '/');
    int dir = slash ? (int)(slash - f) : 0;
    snprintf(path, sizeof path, "%.*s%snets/%s", dir, f, dir ? "/../" : "../", name);
    struct vox_net *net = NULL;
    CHECK_OK(vox_net_load(ctx, path, &net));
    return net;
}

static inline struct vox_net *parse(struct vox_ctx *ctx, const char *text)
{
    struct vox_net *net = NULL;
    CHECK_OK(vox_net_parse(ctx, text, "t.net", &net));
    return net;
}

/* Runs fast (planned on run_ctx) on in and copies its output 0 into out (allocated on ctx). */
static inline void fast_forward_copy(struct vox_ctx *ctx, struct vox_ctx *run_ctx,
                                     struct vox_nn_fast *fast, const struct vox_tensor *in,
                                     struct vox_tensor *out)
{
    CHECK_OK(vox_nn_fast_forward(run_ctx, fast, in));
    const struct vox_tensor *o = vox_nn_fast_output(fast, 0);
    CHECK_OK(vox_tensor_alloc(ctx, out, VOX_F32, 5, o->shape));
    CHECK_OK(vox_tensor_copy(ctx, out, o));
}

/* Values in [-0.5, 1.5) drawn from seed. */
static inline void fill(struct vox_tensor *t, uint64_t seed)
{
    for (int64_t e = 0; e < vox_tensor_numel(t); e++)
        ((float *)t->data)[e] = (float)(vox_test_rand(&seed) % 2000) / 1000.0f - 0.5f;
}

/* msra weights, with random biases and batch-norm statistics (variances in [0.5, 1.5)) so
 * their folding is tested. */
static inline struct vox_nn_weights *random_weights(struct vox_ctx *ctx, const struct vox_net *net,
                                                    uint64_t seed)
{
    struct vox_nn_weights *w = NULL;
    CHECK_OK(vox_nn_weights_create(ctx, net, &w));
    if (!w)
        return NULL;
    vox_nn_weights_init(net, w, VOX_INIT_MSRA, seed);
    for (int i = 0; i < net->n_layers; i++)
        for (int p = VOX_P_BIAS; p < VOX_P_COUNT; p++) {
            struct vox_tensor *t = &w->p[i][p];
            for (int64_t e = 0; t->rank && e < vox_tensor_numel(t); e++) {
                float r = (float)(vox_test_rand(&seed) % 1000) / 1000.0f;
                ((float *)t->data)[e] = p == VOX_P_BN_VAR ? 0.5f + r : r - 0.5f;
            }
        }
    return w;
}

/* A context per ISA the machine has (ref, avx2, avx512), 2 threads each; their count. */
static inline int isa_contexts(struct vox_ctx *ctx, struct vox_ctx **out)
{
    static const char *const names[] = {"ref", "avx2", "avx512"};
    int n = 0;
    for (int i = 0; i <= (int)vox_ctx_cpu(ctx)->isa_max; i++) {
        struct vox_ctx_options opt = {.threads = 2, .log_level = VOX_LOG_WARN, .isa = names[i]};
        if (vox_ctx_create(&opt, &out[n]) == VOX_OK)
            n++;
    }
    return n;
}

/* Plans the net of spec text at patch with the cost model (no tune) and checks that its layer
 * "c" runs by algo ("jit", "fft", "winograd") and that the estimate equals the plan's bytes;
 * case k names it in a failure. */
static inline void check_planner_choice(struct vox_ctx *ctx, const char *text,
                                        const int64_t patch[3], const char *algo, size_t k)
{
    struct vox_net *net = parse(ctx, text);
    struct vox_nn_weights *w = random_weights(ctx, net, 1);
    struct vox_nn_fast *fast = NULL;
    size_t est = 0;
    CHECK_OK(vox_nn_fast_create(ctx, net, w, patch, &fast));
    CHECK_OK(vox_nn_fast_estimate(ctx, net, patch, &est));
    if (fast) {
        struct vox_nn_fast_layer info;
        vox_nn_fast_layer_info(fast, vox_net_find(net, "c"), &info);
        if (strcmp(info.algo, algo) != 0)
            fprintf(stderr, "  case %zu: %s, expected %s\n", k, info.algo, algo);
        CHECK(strcmp(info.algo, algo) == 0);
        CHECK(est == vox_nn_fast_bytes(fast));
    }
    vox_nn_fast_destroy(fast);
    vox_nn_weights_destroy(w);
    vox_net_destroy(net);
}

#endif
