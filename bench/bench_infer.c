/*
 * bench_infer.c: `vox bench infer-*`: the fast forward pass (vox_nn_fast_*) on single layers
 * and on whole nets, with PyTorch as the peer.
 *
 *   infer-conv:c=,k=,d=,h=,w=,kernel=ZxYxX,pad=valid|same   one conv layer (bias, no act)
 *   infer-layers                                           the layer suite, one line each
 *   infer-net:net=NAME,patch=ZxYxX                         nets/NAME.net, output voxels/s
 * (infer-conv and infer-net take algo=auto|direct|fft|winograd, the planner's conv choice;
 * the line's "algo" says what ran.)
 *
 * Each problem is a net (input -> layers -> output) planned once by vox_nn_fast_create and
 * timed with vox_nn_fast_forward, so a line includes what the fast path does around the
 * kernels: packing the (1, C, Z, Y, X) input into the blocked layout, the same-padding copy,
 * unpacking the output. One warm-up run, then `runs` timed runs; the median is reported.
 *
 * The peer is bench/peers/torch_infer.py under bench/peers/venv/bin/python (torch CPU, the
 * same thread count via torch.set_num_threads): torch.nn.functional.conv3d for a layer, the
 * net built from the same spec for a net, each timed in both memory formats (contiguous and
 * channels_last_3d) and reported in the faster one (the line's peer_format). Weights are
 * random on both sides (timing only: the peer tests check the numbers).
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const peer_py = "bench/peers/venv/bin/python";

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

static bool parse_vec(const char *s, int64_t v[3])
{
    long long a, b, c;
    if (sscanf(s, "%lldx%lldx%lld", &a, &b, &c) == 3 && a > 0 && b > 0 && c > 0) {
        v[0] = a, v[1] = b, v[2] = c;
        return true;
    }
    if (sscanf(s, "%lld", &a) == 1 && a > 0 && !strchr(s, 'x')) {
        v[0] = v[1] = v[2] = a;
        return true;
    }
    return false;
}

/* A planned net with random weights and random inputs. */
struct inet {
    struct vox_net *net;
    struct vox_nn_weights *w;
    struct vox_nn_fast *fast;
    struct vox_tensor *in;
    int n_in;
};

static void inet_free(struct vox_ctx *ctx, struct inet *n)
{
    for (int k = 0; n->in && k < n->n_in; k++)
        vox_tensor_free(ctx, &n->in[k]);
    vox_free(ctx, n->in);
    vox_nn_fast_destroy(n->fast);
    vox_nn_weights_destroy(n->w);
    vox_net_destroy(n->net);
    memset(n, 0, sizeof *n);
}

/* Plans `net` (taken over) for `patch` with msra weights and inputs uniform in [0, 1). */
static enum vox_status inet_make(struct vox_ctx *ctx, struct vox_net *net, const int64_t patch[3],
                                 enum vox_nn_conv_algo algo, struct inet *n)
{
    memset(n, 0, sizeof *n);
    n->net = net;
    enum vox_status s = vox_nn_weights_create(ctx, net, &n->w);
    if (s)
        return s;
    vox_nn_weights_init(net, n->w, VOX_INIT_MSRA, 1);
    /* auto plans as `vox infer` does: the cost model checked by a cached measurement */
    struct vox_nn_tune *tune = NULL;
    if (algo == VOX_NN_CONV_AUTO && (s = vox_nn_tune_create(ctx, &tune)))
        return s;
    const struct vox_nn_fast_options opt = {algo, tune};
    s = vox_nn_fast_create_opts(ctx, net, n->w, patch, &opt, &n->fast);
    vox_nn_tune_destroy(tune);
    if (s)
        return s;
    n->n_in = net->n_inputs;
    if (!(n->in = vox_calloc(ctx, (size_t)n->n_in, sizeof *n->in)))
        return VOX_OUT_OF_MEMORY;
    uint64_t seed = 12345;
    for (int k = 0; k < n->n_in; k++) {
        const int64_t *sh = vox_nn_fast_dims(n->fast)[vox_net_input(net, k)].shape;
        int64_t shape[5] = {1, sh[0], sh[1], sh[2], sh[3]};
        if ((s = vox_tensor_alloc(ctx, &n->in[k], VOX_F32, 5, shape)))
            return s;
        float *d = n->in[k].data;
        for (int64_t i = 0; i < sh[0] * sh[1] * sh[2] * sh[3]; i++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            d[i] = (float)(seed >> 40) / (float)(1 << 24);
        }
    }
    return VOX_OK;
}

/* Times `runs` forward passes (after a warm-up) into res->times; layer >= 0: that layer's own
 * time of each pass into layer_s (runs entries). */
static enum vox_status inet_time(struct vox_ctx *ctx, struct inet *n, int runs,
                                 struct bench_result *res, int layer, double *layer_s)
{
    enum vox_status s = vox_nn_fast_forward(ctx, n->fast, n->in); /* warm-up */
    for (int i = 0; i < runs && s == VOX_OK; i++) {
        double t0 = vox_time_now();
        s = vox_nn_fast_forward(ctx, n->fast, n->in);
        res->times[i] = vox_time_now() - t0;
        struct vox_nn_fast_layer info;
        if (layer >= 0) {
            vox_nn_fast_layer_info(n->fast, layer, &info);
            layer_s[i] = info.seconds;
        }
    }
    res->runs = runs;
    return s;
}

void bench_torch_peer(const char *peer_script, const char *args, struct bench_result *res)
{
    if (access(peer_py, X_OK) != 0 || access(peer_script, R_OK) != 0)
        return;
    char cmd[1024], line[1024] = "", ver[64], fmt[32];
    snprintf(cmd, sizeof cmd, "%s %s %s", peer_py, peer_script, args);
    FILE *pf = popen(cmd, "r");
    if (!pf)
        return;
    bool got = fgets(line, sizeof line, pf) != NULL;
    int rc = pclose(pf);
    double med, t_cont, t_cl;
    const char *k[5] = {strstr(line, "\"version\": \""), strstr(line, "\"median_s\": "),
                        strstr(line, "\"format\": \""), strstr(line, "\"contiguous_s\": "),
                        strstr(line, "\"channels_last_3d_s\": ")};
    if (!got || rc != 0 || !k[0] || !k[1] || !k[2] || !k[3] || !k[4] ||
        sscanf(k[0] + 12, "%63[^\"]", ver) != 1 || sscanf(k[1] + 12, "%lf", &med) != 1 ||
        sscanf(k[2] + 11, "%31[^\"]", fmt) != 1 || sscanf(k[3] + 16, "%lf", &t_cont) != 1 ||
        sscanf(k[4] + 22, "%lf", &t_cl) != 1) {
        fprintf(stderr, "vox bench: the torch peer failed (%s)\n", cmd);
        return;
    }
    res->peer = "torch";
    snprintf(res->peer_version, sizeof res->peer_version, "%s", ver);
    res->peer_median_s = med;
    size_t used = strlen(res->extra);
    snprintf(res->extra + used, sizeof res->extra - used,
             "%s\"peer_format\":\"%s\",\"peer_contiguous_s\":%.6g,\"peer_channels_last_s\":%.6g",
             used ? "," : "", fmt, t_cont, t_cl);
    const char *rss = strstr(line, "\"peak_rss_bytes\": "); /* the training peer's */
    if (rss && sscanf(rss + 18, "%lf", &res->peer_peak_rss_bytes) != 1)
        res->peer_peak_rss_bytes = 0;
}

/* ---- one conv layer --------------------------------------------------------------------- */

struct conv_case {
    int64_t c, k, vol[3], ker[3];
    bool same;
    enum vox_nn_conv_algo algo;
};

/* The median time of a pass of the same net with the direct nest (the other choice of the
 * planner) and, in *layer_out, of its conv layer alone; -1 on failure. */
static double direct_median(struct vox_ctx *ctx, const char *spec, const int64_t vol[3], int runs,
                            double *layer_out)
{
    struct vox_net *net;
    struct inet n = {0};
    struct bench_result *r = calloc(1, sizeof *r);
    double med = -1, layer_s[64];
    *layer_out = -1;
    if (r && vox_net_parse(ctx, spec, "infer-conv", &net) == VOX_OK &&
        inet_make(ctx, net, vol, VOX_NN_CONV_DIRECT, &n) == VOX_OK &&
        inet_time(ctx, &n, runs, r, vox_net_find(n.net, "c"), layer_s) == VOX_OK) {
        med = bench_median(r->times, runs);
        *layer_out = bench_median(layer_s, runs);
    }
    inet_free(ctx, &n);
    free(r);
    return med;
}

static enum vox_status conv_case_run(struct bench_env *env, const struct conv_case *cc, int runs,
                                     struct bench_result *res)
{
    struct vox_ctx *ctx = env->ctx;
    char spec[512];
    snprintf(spec, sizeof spec,
             "input raw channels=%lld\nconv c raw -> %lld kernel=%lldx%lldx%lld pad=%s\n"
             "output out c\n",
             (long long)cc->c, (long long)cc->k, (long long)cc->ker[0], (long long)cc->ker[1],
             (long long)cc->ker[2], cc->same ? "same" : "valid");
    struct vox_net *net;
    struct inet n = {0};
    double layer_s[64];
    int li = -1;
    enum vox_status s = vox_net_parse(ctx, spec, "infer-conv", &net);
    if (s == VOX_OK && (s = inet_make(ctx, net, cc->vol, cc->algo, &n)) == VOX_OK) {
        li = vox_net_find(n.net, "c");
        s = inet_time(ctx, &n, runs, res, li, layer_s);
    }
    if (s == VOX_OK) {
        struct vox_nn_fast_layer info;
        vox_nn_fast_layer_info(n.fast, li, &info);
        res->flops = info.flops;
        const int64_t *o = vox_nn_fast_dims(n.fast)[li].shape;
        res->voxels = (double)(o[1] * o[2] * o[3]);
        /* the layer alone, its input already in the blocked layout (as torch's input is in
         * its format): the pass above also packs the input and unpacks the output */
        res->layer_s = bench_median(layer_s, runs);
        snprintf(res->extra, sizeof res->extra, "\"algo\":\"%s\",\"block\":%lld", info.algo,
                 (long long)info.block);
        bool other = strcmp(info.algo, "fft") == 0 || strcmp(info.algo, "winograd") == 0;
        if (other && cc->algo == VOX_NN_CONV_AUTO) {
            size_t used = strlen(res->extra);
            double layer, med = direct_median(ctx, spec, cc->vol, runs, &layer);
            snprintf(
                res->extra + used, sizeof res->extra - used,
                ",\"direct_median_s\":%.6g,\"direct_layer_s\":%.6g,\"direct_layer_pct_peak\":%.2f",
                med, layer, layer > 0 ? 100.0 * res->flops / layer / 1e9 / env->peak_gflops : 0.0);
        }
        char args[256];
        snprintf(args, sizeof args, "conv %lld %lld %lld %lld %lld %lld %lld %lld %s %d %d",
                 (long long)cc->c, (long long)cc->k, (long long)cc->vol[0], (long long)cc->vol[1],
                 (long long)cc->vol[2], (long long)cc->ker[0], (long long)cc->ker[1],
                 (long long)cc->ker[2], cc->same ? "same" : "valid", vox_ctx_threads(ctx), runs);
        bench_torch_peer("bench/peers/torch_infer.py", args, res);
    }
    inet_free(ctx, &n);
    return s;
}

/* The algo=auto|direct|fft|winograd parameter (default auto). */
static enum vox_status parse_algo(struct vox_ctx *ctx, const struct bench_params *p,
                                  const char *problem, enum vox_nn_conv_algo *algo)
{
    static const char *const names[] = {"auto", "direct", "fft", "winograd"};
    char v[64];
    *algo = VOX_NN_CONV_AUTO;
    if (!param(p->raw, "algo", v, sizeof v))
        return VOX_OK;
    int a = 0;
    while (a < 4 && strcmp(v, names[a]) != 0)
        a++;
    if (a == 4)
        return vox_fail(ctx, VOX_INVALID_ARG, "%s algo=%s: expected auto, direct, fft or winograd",
                        problem, v);
    *algo = (enum vox_nn_conv_algo)a;
    return VOX_OK;
}

static enum vox_status run_conv(struct bench_env *env, const struct bench_params *p,
                                struct bench_result *res)
{
    struct conv_case cc = {24, 24, {20, 256, 256}, {3, 3, 3}, false, VOX_NN_CONV_AUTO};
    char v[64];
    const char *keys[] = {"c", "k", "d", "h", "w"};
    int64_t *dst[] = {&cc.c, &cc.k, &cc.vol[0], &cc.vol[1], &cc.vol[2]};
    for (int i = 0; i < 5; i++)
        if (param(p->raw, keys[i], v, sizeof v) && (*dst[i] = atoll(v)) <= 0)
            return vox_fail(env->ctx, VOX_INVALID_ARG, "infer-conv %s=%s: expected > 0", keys[i],
                            v);
    if (param(p->raw, "kernel", v, sizeof v) && !parse_vec(v, cc.ker))
        return vox_fail(env->ctx, VOX_INVALID_ARG, "infer-conv kernel=%s: expected ZxYxX", v);
    if (param(p->raw, "pad", v, sizeof v)) {
        if (strcmp(v, "same") != 0 && strcmp(v, "valid") != 0)
            return vox_fail(env->ctx, VOX_INVALID_ARG, "infer-conv pad=%s: expected valid or same",
                            v);
        cc.same = strcmp(v, "same") == 0;
    }
    enum vox_status s = parse_algo(env->ctx, p, "infer-conv", &cc.algo);
    return s == VOX_OK ? conv_case_run(env, &cc, p->runs, res) : s;
}

/* The layer suite: the shapes of EM nets (ZNNi's, the RSUNet's), valid padding. */
static enum vox_status run_layers(struct bench_env *env, const struct bench_params *p,
                                  struct bench_result *res)
{
    static const struct {
        const char *label;
        struct conv_case cc;
    } suite[] = {
        {"infer-layers:3x3x3,24->24,20x256x256",
         {24, 24, {20, 256, 256}, {3, 3, 3}, false, VOX_NN_CONV_AUTO}},
        {"infer-layers:3x3x3,48->48,10x128x128",
         {48, 48, {10, 128, 128}, {3, 3, 3}, false, VOX_NN_CONV_AUTO}},
        {"infer-layers:1x3x3,48->48,16x160x160",
         {48, 48, {16, 160, 160}, {1, 3, 3}, false, VOX_NN_CONV_AUTO}},
        {"infer-layers:5x5x5,8->8,32x128x128",
         {8, 8, {32, 128, 128}, {5, 5, 5}, false, VOX_NN_CONV_AUTO}},
        {"infer-layers:7x7x7,8->8,32x128x128",
         {8, 8, {32, 128, 128}, {7, 7, 7}, false, VOX_NN_CONV_AUTO}},
        {"infer-layers:3x3x3,1->24,20x256x256",
         {1, 24, {20, 256, 256}, {3, 3, 3}, false, VOX_NN_CONV_AUTO}},
    };
    for (size_t i = 0; i < sizeof suite / sizeof suite[0]; i++) {
        struct bench_result *r = calloc(1, sizeof *r);
        if (!r)
            return vox_fail(env->ctx, VOX_OUT_OF_MEMORY, "infer-layers: out of memory");
        r->compile_ms = -1;
        enum vox_status s = conv_case_run(env, &suite[i].cc, p->runs, r);
        if (s == VOX_OK)
            env->emit(env, suite[i].label, r);
        free(r);
        if (s)
            return s;
    }
    res->runs = 0;
    return VOX_OK;
}

/* ---- whole nets ------------------------------------------------------------------------- */

struct net_child {
    int threads;
    const char *path;
    const int64_t *patch;
};

/* In a forked child (a context of its own: the parent's pool threads do not exist there):
 * plan and run once, for the peak resident set. */
static int child_net(void *arg)
{
    struct net_child *c = arg;
    struct vox_ctx *ctx;
    struct vox_ctx_options opt = {.threads = c->threads, .log_level = VOX_LOG_WARN};
    if (vox_ctx_create(&opt, &ctx) != VOX_OK)
        return 1;
    struct vox_net *net;
    struct inet n = {0};
    enum vox_status s = vox_net_load(ctx, c->path, &net);
    if (s == VOX_OK && (s = inet_make(ctx, net, c->patch, VOX_NN_CONV_AUTO, &n)) == VOX_OK)
        s = vox_nn_fast_forward(ctx, n.fast, n.in);
    inet_free(ctx, &n);
    vox_ctx_destroy(ctx);
    return s == VOX_OK ? 0 : 1;
}

static enum vox_status run_net(struct bench_env *env, const struct bench_params *p,
                               struct bench_result *res)
{
    struct vox_ctx *ctx = env->ctx;
    char name[64] = "n337", v[64], path[128];
    param(p->raw, "net", name, sizeof name);
    int64_t patch[3] = {117, 117, 117};
    if (strcmp(name, "rsunet") == 0)
        patch[0] = 20, patch[1] = patch[2] = 256;
    if (strcmp(name, "n537") == 0) /* 9^3 outputs, a 4.1 GB plan: PyTorch fits beside it */
        patch[0] = patch[1] = patch[2] = 227;
    if (param(p->raw, "patch", v, sizeof v) && !parse_vec(v, patch))
        return vox_fail(ctx, VOX_INVALID_ARG, "infer-net patch=%s: expected ZxYxX", v);
    if (strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_-") != strlen(name))
        return vox_fail(ctx, VOX_INVALID_ARG, "infer-net net=%s: expected a name in nets/", name);
    snprintf(path, sizeof path, "nets/%s.net", name);
    struct vox_net *net;
    struct inet n = {0};
    enum vox_nn_conv_algo algo;
    enum vox_status s = parse_algo(ctx, p, "infer-net", &algo);
    if (s != VOX_OK)
        return s;
    s = vox_net_load(ctx, path, &net);
    if (s == VOX_OK && (s = inet_make(ctx, net, patch, algo, &n)) == VOX_OK)
        s = inet_time(ctx, &n, p->runs, res, -1, NULL);
    if (s == VOX_OK) {
        double flops = 0;
        for (int i = 0; i < n.net->n_layers; i++)
            flops += vox_nn_layer_flops(n.net, vox_nn_fast_dims(n.fast), i);
        res->flops = flops;
        const int64_t *o = vox_nn_fast_dims(n.fast)[vox_net_output(n.net, 0)].shape;
        res->voxels = (double)(o[1] * o[2] * o[3]);
        snprintf(res->extra, sizeof res->extra,
                 "\"patch\":\"%lldx%lldx%lld\",\"out\":\"%lldx%lldx%lld\",\"plan_bytes\":%zu",
                 (long long)patch[0], (long long)patch[1], (long long)patch[2], (long long)o[1],
                 (long long)o[2], (long long)o[3], vox_nn_fast_bytes(n.fast));
    }
    inet_free(ctx, &n);
    if (s == VOX_OK) {
        struct net_child c = {vox_ctx_threads(ctx), path, patch};
        res->peak_rss_bytes = bench_child_peak_rss(ctx, child_net, &c);
        char args[256];
        snprintf(args, sizeof args, "net %s %lld %lld %lld %d %d", path, (long long)patch[0],
                 (long long)patch[1], (long long)patch[2], vox_ctx_threads(ctx), p->runs);
        bench_torch_peer("bench/peers/torch_infer.py", args, res);
    }
    return s;
}

const struct bench_problem bench_infer_conv = {
    "infer-conv",
    "c=24,k=24,d=20,h=256,w=256,kernel=3x3x3,pad=valid|same,algo=auto|direct|fft|winograd: one "
    "conv layer of the fast path vs torch conv3d (an FFT or Winograd layer picked by auto also "
    "reports direct_median_s)",
    5, run_conv};
const struct bench_problem bench_infer_layers = {
    "infer-layers",
    "the layer suite (24/48 channels 3x3x3 and 1x3x3, 8 channels 5^3 and 7^3, "
    "the 1->24 input layer) vs torch conv3d, one line each",
    5, run_layers};
const struct bench_problem bench_infer_net = {
    "infer-net",
    "net=n337|n537|rsunet|...,patch=ZxYxX,algo=auto|direct|fft|winograd: a whole net of nets/ "
    "(output voxels/s, bytes per output voxel) vs the same net in torch",
    3, run_net};
