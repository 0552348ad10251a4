/*
 * bench_train.c: `vox bench train-net`: one training iteration of a whole net (forward keeping
 * every activation, loss, backward, Adam update) with the fast training kernels
 * (vox_nn_train_fast_*), and the same iteration in PyTorch as the peer.
 *
 *   train-net:net=NAME,patch=ZxYxX   nets/NAME.net, output voxels per second
 *
 * The iteration is what vox_trainer_step does after sampling: vox_nn_graph_forward on fixed
 * random inputs (every input of the net, so the two-input VD2D3D runs too), the loss on the
 * logits against a fixed random 0/1 target (softmax loss for a softmax output, bce for a
 * sigmoid one, else square; per-patch rebalancing), vox_nn_graph_backward, and the Adam
 * update as the trainer runs it (vox_optim_post: during the next iteration's forward, on the
 * threads' idle time and each layer's rest before it; update_blocks_idle / _required: how
 * its blocks ran). Sampling and target computation are left out on both sides. A net with bn=yes
 * (the RSUNet) is timed without batch norm (its spec read with bn=no, on both sides), which
 * keeps the numbers comparable with the runs from before vox trained batch norm. One warm-up
 * iteration, then `runs` timed ones.
 *
 * The peer is bench/peers/torch_train.py (torch CPU, same threads, Adam, both memory formats,
 * two warm-up iterations; the faster format is reported). Peak RSS: one iteration in a forked
 * child with a context of its own. With threads >= 2 the same iteration also runs on one
 * thread, one after each timed one (one_thread_median_s, thread_scaling: its median over the
 * threads' median, thread_scaling_pairs: the median of each pair's ratio, which a drift of the
 * host's speed over the runs moves less, one_thread_min_s and thread_scaling_best: the fastest
 * one-thread iteration over the fastest on all threads, each the least disturbed of its kind
 * (on a shared VM other tenants slow single iterations by 10-30 %; one fast iteration sets
 * it, so it moves between invocations as much as the medians' ratio);
 * one_thread_same_weights: both nets' weights bitwise
 * equal after the same steps, the deterministic mode's promise), and mem_gbs_1 / mem_gbs_all: the
 * memory bandwidth of a pointwise pass on one and on all threads right after
 * (vox_bandwidth_measure), and round_trip_ns, a cache line between two of the threads and back: the
 * host's side of that scaling (a 2-vCPU VM moves between cores that share an L3, ~100 ns, where
 * passes over memory barely scale, and cores on two chiplets, ~400 ns, where data one thread wrote
 * and the other reads is slow).
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *param(const char *raw, const char *key, char *buf, size_t len)
{
    size_t kl = strlen(key);
    for (const char *p = raw; *p; p += strcspn(p, ","), p += *p == ',') {
        if (strncmp(p, key, kl) == 0 && p[kl] == '=') {
            snprintf(buf, len, "%.*s", (int)strcspn(p + kl + 1, ","), p + kl + 1);
            return buf;
        }
    }
    return NULL;
}

/* Everything one iteration touches. */
struct tnet {
    struct vox_net *net;
    struct vox_nn_weights *w, *gw, *m, *v;
    struct vox_nn_weights *gw_last;    /* the iteration before's gradient, its update not posted */
    struct vox_optim_deferred *update; /* as vox_trainer: the update overlaps the next forward */
    bool pending;                      /* gw_last's update is to be posted */
    struct vox_nn_train_fast *fast;
    struct vox_nn_graph *g;
    struct vox_tensor *in, target;
    struct vox_optim_params optim;
    enum vox_loss loss;
    int n_in, out_layer, logit_layer;
    int64_t t;
};

static void tnet_free(struct vox_ctx *ctx, struct tnet *n)
{
    for (int k = 0; n->in && k < n->n_in; k++)
        vox_tensor_free(ctx, &n->in[k]);
    vox_free(ctx, n->in);
    vox_tensor_free(ctx, &n->target);
    vox_optim_deferred_destroy(n->update);
    vox_nn_graph_destroy(n->g);
    vox_nn_train_fast_destroy(n->fast);
    vox_nn_weights_destroy(n->w);
    vox_nn_weights_destroy(n->gw);
    vox_nn_weights_destroy(n->gw_last);
    vox_nn_weights_destroy(n->m);
    vox_nn_weights_destroy(n->v);
    vox_net_destroy(n->net);
    memset(n, 0, sizeof *n);
}

/* nets/NAME.net with every bn=yes read as bn=no (same length: the text keeps its layout). */
static enum vox_status load_net(struct vox_ctx *ctx, const char *path, struct vox_net **net_out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return vox_fail(ctx, VOX_IO, "train-net: cannot open %s", path);
    char *text = calloc(1, 1 << 20);
    size_t len = text ? fread(text, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (!text)
        return vox_fail(ctx, VOX_OUT_OF_MEMORY, "train-net: out of memory");
    text[len] = 0;
    for (char *p = text; (p = strstr(p, "bn=yes")) != NULL; p += 6)
        memcpy(p, "bn=no ", 6);
    enum vox_status s = vox_net_parse(ctx, text, path, net_out);
    free(text);
    return s;
}

/* Uniform [0, 1) inputs, a random 0/1 target (softmax: one-hot over the channels). */
static enum vox_status make_data(struct vox_ctx *ctx, struct tnet *n)
{
    const struct vox_nn_dims *d = vox_nn_graph_dims(n->g);
    uint64_t seed = 12345;
    if (!(n->in = vox_calloc(ctx, (size_t)n->n_in, sizeof *n->in)))
        return VOX_OUT_OF_MEMORY;
    enum vox_status s = VOX_OK;
    for (int k = 0; k < n->n_in && s == VOX_OK; k++) {
        const int64_t *sh = d[vox_net_input(n->net, k)].shape;
        int64_t shape[5] = {1, sh[0], sh[1], sh[2], sh[3]};
        if ((s = vox_tensor_alloc(ctx, &n->in[k], VOX_F32, 5, shape)) != VOX_OK)
            break;
        float *p = n->in[k].data;
        for (int64_t i = 0; i < sh[0] * sh[1] * sh[2] * sh[3]; i++)
            p[i] = (float)vox_train_uniform(&seed);
    }
    const int64_t *o = d[n->out_layer].shape;
    if (s == VOX_OK && (s = vox_tensor_alloc(ctx, &n->target, VOX_F32, 4, o)) == VOX_OK) {
        float *t = n->target.data;
        int64_t vox = o[1] * o[2] * o[3];
        for (int64_t i = 0; i < vox; i++) {
            int64_t hot = (int64_t)(vox_train_rand(&seed) % (uint64_t)o[0]);
            for (int64_t c = 0; c < o[0]; c++)
                t[c * vox + i] = n->loss == VOX_LOSS_SOFTMAX ? (float)(c == hot)
                                                             : (float)(vox_train_rand(&seed) >> 63);
        }
    }
    return s;
}

/* Plans net (taken over) at patch with msra weights, Adam, fast kernels. */
static enum vox_status tnet_make(struct vox_ctx *ctx, struct vox_net *net, const int64_t patch[3],
                                 struct tnet *n)
{
    memset(n, 0, sizeof *n);
    n->net = net;
    n->n_in = net->n_inputs;
    n->out_layer = vox_net_output(net, 0);
    n->logit_layer = net->layers[n->out_layer].in[0];
    enum vox_nn_act act = net->layers[n->out_layer].act;
    n->loss = act == VOX_ACT_SOFTMAX   ? VOX_LOSS_SOFTMAX
              : act == VOX_ACT_SIGMOID ? VOX_LOSS_BCE
                                       : VOX_LOSS_SQUARE;
    vox_optim_defaults(VOX_OPTIM_ADAM, &n->optim);
    enum vox_status s = vox_nn_weights_create(ctx, net, &n->w);
    if (s == VOX_OK && (s = vox_nn_weights_create(ctx, net, &n->gw)) == VOX_OK &&
        (s = vox_nn_weights_create(ctx, net, &n->gw_last)) == VOX_OK &&
        (s = vox_nn_weights_create(ctx, net, &n->m)) == VOX_OK &&
        (s = vox_nn_weights_create(ctx, net, &n->v)) == VOX_OK &&
        (s = vox_optim_deferred_create(ctx, n->w, &n->update)) == VOX_OK)
        s = vox_nn_train_fast_create(ctx, &n->fast);
    if (s != VOX_OK)
        return s;
    vox_nn_weights_init(net, n->w, VOX_INIT_MSRA, 1);
    s = vox_nn_graph_create(ctx, net, patch, vox_nn_train_fast_kernels(n->fast), &n->g);
    if (s == VOX_OK) {
        vox_nn_graph_set_input_grads(n->g, false); /* as vox_trainer (and torch's inputs) */
        vox_nn_graph_set_update(n->g, n->update);
    }
    return s == VOX_OK ? make_data(ctx, n) : s;
}

/* Posts the update of the iteration before (its gradient in gw_last), if any. */
static void tnet_post(struct tnet *n)
{
    if (n->pending)
        vox_optim_post(n->update, &n->optim, n->t, n->w, n->gw_last, n->m, n->v);
    n->pending = false;
}

/* One iteration: the iteration before's Adam update (posted here, not at that iteration's
 * end: the one-thread net's iteration timed between the two would have the pool's idle
 * thread running it), forward (each layer's update finished first, the rest on the threads'
 * idle time), loss, backward. */
static enum vox_status tnet_step(struct vox_ctx *ctx, struct tnet *n)
{
    tnet_post(n);
    enum vox_status s = vox_nn_graph_forward(ctx, n->g, n->w, n->in);
    if (s != VOX_OK)
        return s;
    vox_nn_graph_zero_grad(n->g);
    for (int i = 0; i < n->gw->n_layers; i++)
        for (int k = 0; k < VOX_P_COUNT; k++)
            if (n->gw->p[i][k].rank)
                memset(n->gw->p[i][k].data, 0, vox_tensor_nbytes(&n->gw->p[i][k]));
    double loss;
    s = vox_loss_compute(ctx, n->loss, VOX_REBALANCE_PATCH,
                         vox_nn_graph_value(n->g, n->logit_layer), n->net->layers[n->out_layer].act,
                         &n->target, NULL, 1.0, vox_nn_graph_grad(n->g, n->logit_layer), &loss);
    if (s != VOX_OK)
        return s;
    vox_nn_graph_backward(ctx, n->g, n->w, n->gw);
    struct vox_nn_weights *t = n->gw;
    n->gw = n->gw_last;
    n->gw_last = t;
    n->t++;
    n->pending = true;
    return VOX_OK;
}

/* The last iteration's update done. */
static void tnet_settle(struct tnet *n)
{
    tnet_post(n);
    vox_optim_settle(n->update);
}

struct train_child {
    int threads;
    const char *path;
    const int64_t *patch;
};

/* In a forked child with a context of its own: plan and run one iteration, for the peak RSS. */
static int child_train(void *arg)
{
    struct train_child *c = arg;
    struct vox_ctx *ctx;
    struct vox_ctx_options opt = {.threads = c->threads, .log_level = VOX_LOG_WARN};
    if (vox_ctx_create(&opt, &ctx) != VOX_OK)
        return 1;
    vox_ctx_set_huge_pages(ctx, true); /* as vox train */
    struct vox_net *net;
    struct tnet n = {0};
    enum vox_status s = load_net(ctx, c->path, &net);
    if (s == VOX_OK && (s = tnet_make(ctx, net, c->patch, &n)) == VOX_OK)
        s = tnet_step(ctx, &n);
    if (s == VOX_OK)
        tnet_settle(&n);
    tnet_free(ctx, &n);
    vox_ctx_destroy(ctx);
    return s == VOX_OK ? 0 : 1;
}

static void default_patch(const char *name, int64_t patch[3])
{
    patch[0] = patch[1] = patch[2] = 109; /* n337: 4^3 outputs */
    if (strcmp(name, "rsunet") == 0)
        patch[0] = 20, patch[1] = patch[2] = 256;
    if (strcmp(name, "vd2d3d") == 0)
        patch[0] = 6, patch[1] = patch[2] = 128;
    if (strcmp(name, "vd2d") == 0)
        patch[0] = 1, patch[1] = patch[2] = 128;
}

/* Whether the two nets' weights are the same bits. */
static bool same_weights(const struct tnet *a, const struct tnet *b)
{
    for (int i = 0; i < a->w->n_layers; i++)
        for (int k = 0; k < VOX_P_COUNT; k++)
            if (a->w->p[i][k].rank && memcmp(a->w->p[i][k].data, b->w->p[i][k].data,
                                             vox_tensor_nbytes(&a->w->p[i][k])) != 0)
                return false;
    return true;
}

/* The iterations on ctx; with ctx1 (one thread) the same net's iterations on it too, one after
 * each (the thread counts' scaling from one window of the machine's speed, and whether the
 * weights come out the same bits). */
static enum vox_status time_net(struct vox_ctx *ctx, struct vox_ctx *ctx1, const char *path,
                                const int64_t patch[3], int runs, struct bench_result *res)
{
    struct vox_net *net, *net1 = NULL;
    struct tnet n = {0}, n1 = {0};
    double t1[64];
    enum vox_status s = load_net(ctx, path, &net);
    if (s == VOX_OK && (s = tnet_make(ctx, net, patch, &n)) == VOX_OK)
        s = tnet_step(ctx, &n); /* warm-up: compiles the kernels */
    if (s == VOX_OK && ctx1 && (s = load_net(ctx1, path, &net1)) == VOX_OK &&
        (s = tnet_make(ctx1, net1, patch, &n1)) == VOX_OK)
        s = tnet_step(ctx1, &n1);
    for (int i = 0; i < runs && s == VOX_OK; i++) {
        double t0 = vox_time_now();
        s = tnet_step(ctx, &n);
        res->times[i] = vox_time_now() - t0;
        t0 = vox_time_now();
        if (s == VOX_OK && ctx1)
            s = tnet_step(ctx1, &n1);
        t1[i] = vox_time_now() - t0;
    }
    res->runs = runs;
    if (s == VOX_OK) {
        tnet_settle(&n);
        if (ctx1)
            tnet_settle(&n1);
        const int64_t *o = vox_nn_graph_dims(n.g)[n.out_layer].shape;
        res->voxels = (double)(o[1] * o[2] * o[3]);
        int64_t fast, fallback;
        vox_nn_train_fast_counts(n.fast, &fast, &fallback);
        snprintf(res->extra, sizeof res->extra,
                 "\"patch\":\"%lldx%lldx%lld\",\"out\":\"%lldx%lldx%lld\",\"loss\":\"%s\","
                 "\"optimizer\":\"adam\",\"voxels_s\":%.1f,\"fast_calls\":%lld,"
                 "\"fallback_calls\":%lld",
                 (long long)patch[0], (long long)patch[1], (long long)patch[2], (long long)o[1],
                 (long long)o[2], (long long)o[3], vox_loss_str(n.loss),
                 res->voxels / bench_median(res->times, runs), (long long)fast,
                 (long long)fallback);
        int64_t idle, required;
        vox_optim_deferred_counts(n.update, &idle, &required);
        size_t at = strlen(res->extra);
        snprintf(res->extra + at, sizeof res->extra - at,
                 ",\"update_blocks_idle\":%lld,\"update_blocks_required\":%lld", (long long)idle,
                 (long long)required);
        if (ctx1) {
            const double m1 = bench_median(t1, runs);
            double pair[64]; /* each timed iteration's one-thread twin, run right after it */
            double best = res->times[0], best1 = t1[0];
            for (int i = 0; i < runs; i++) {
                pair[i] = t1[i] / res->times[i];
                best = res->times[i] < best ? res->times[i] : best;
                best1 = t1[i] < best1 ? t1[i] : best1;
            }
            size_t used = strlen(res->extra);
            snprintf(res->extra + used, sizeof res->extra - used,
                     ",\"one_thread_median_s\":%.4f,\"thread_scaling\":%.3f,"
                     "\"thread_scaling_pairs\":%.3f,\"one_thread_min_s\":%.4f,"
                     "\"thread_scaling_best\":%.3f,\"one_thread_same_weights\":%s",
                     m1, m1 / bench_median(res->times, runs), bench_median(pair, runs), best1,
                     best1 / best, same_weights(&n, &n1) ? "true" : "false");
            /* the host's side of that scaling, in the same window: how much faster a pass over
             * memory runs on all threads than on one */
            struct vox_bandwidth bw;
            used = strlen(res->extra);
            if (vox_bandwidth_measure(ctx, 0, &bw) == VOX_OK)
                snprintf(res->extra + used, sizeof res->extra - used,
                         ",\"mem_gbs_1\":%.1f,\"mem_gbs_all\":%.1f,\"round_trip_ns\":%.0f",
                         bw.gbs_1, bw.gbs_all, bw.round_trip_ns);
        }
    }
    tnet_free(ctx, &n);
    if (ctx1)
        tnet_free(ctx1, &n1);
    return s;
}

static enum vox_status run_train_net(struct bench_env *env, const struct bench_params *p,
                                     struct bench_result *res)
{
    struct vox_ctx *ctx = env->ctx;
    char name[64] = "n337", v[64], path[128];
    param(p->raw, "net", name, sizeof name);
    if (strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_-") != strlen(name))
        return vox_fail(ctx, VOX_INVALID_ARG, "train-net net=%s: expected a name in nets/", name);
    int64_t patch[3];
    default_patch(name, patch);
    long long a, b, c;
    if (param(p->raw, "patch", v, sizeof v)) {
        if (sscanf(v, "%lldx%lldx%lld", &a, &b, &c) != 3 || a <= 0 || b <= 0 || c <= 0)
            return vox_fail(ctx, VOX_INVALID_ARG, "train-net patch=%s: expected ZxYxX", v);
        patch[0] = a, patch[1] = b, patch[2] = c;
    }
    snprintf(path, sizeof path, "nets/%s.net", name);
    /* with several threads, one-thread iterations interleaved (thread_scaling) */
    struct vox_ctx *ctx1 = NULL;
    struct vox_ctx_options o1 = {.threads = 1, .log_level = VOX_LOG_WARN};
    enum vox_status s = vox_ctx_threads(ctx) > 1 ? vox_ctx_create(&o1, &ctx1) : VOX_OK;
    const bool huge = vox_ctx_set_huge_pages(ctx, true); /* as vox train */
    vox_ctx_set_huge_pages(ctx1, true);
    if (s == VOX_OK)
        s = time_net(ctx, ctx1, path, patch, p->runs, res);
    vox_ctx_set_huge_pages(ctx, huge);
    vox_ctx_destroy(ctx1);
    if (s != VOX_OK)
        return s;
    struct train_child ch = {vox_ctx_threads(ctx), path, patch};
    res->peak_rss_bytes = bench_child_peak_rss(ctx, child_train, &ch);
    char args[256];
    snprintf(args, sizeof args, "%s %lld %lld %lld %d %d", path, (long long)patch[0],
             (long long)patch[1], (long long)patch[2], vox_ctx_threads(ctx), p->runs);
    bench_torch_peer("bench/peers/torch_train.py", args, res);
    return VOX_OK;
}

const struct bench_problem bench_train_net = {
    "train-net",
    "net=n337|vd2d3d|vd2d|rsunet|...,patch=ZxYxX: one training iteration (forward, loss, "
    "backward, Adam) of nets/NAME.net with the fast kernels (output voxels/s, bytes per output "
    "voxel) vs the same iteration in torch; bn=yes is trained as bn=no",
    3, run_train_net};
