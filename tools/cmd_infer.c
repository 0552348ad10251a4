/*
 * cmd_infer.c: `vox infer`: runs a ConvNet (a spec from nets/ or docs/nets.md) over a volume.
 *
 * For now the whole input is one patch through the reference forward pass (src/nn/forward.c):
 * exact, slow, and the oracle the fast engine will be checked against. It also writes
 * seeded random weights (--init, --save-weights) and prints the plan (--plan). All checks
 * (spec, weights, input shape against the field of view) happen before anything is written,
 * so a failure leaves no partial output.
 */
#include "cli.h"
#include "vox/io.h"
#include "vox/nn.h"

#include <stdio.h>
#include <string.h>

static const char help[] =
    "usage: vox infer --net NET --weights W.h5 --in FILE.h5:/raw --out FILE.h5:/out [options]\n"
    "       vox infer --net NET --init msra --seed 1 --save-weights W.h5\n\n"
    "Runs the network NET (a spec, see docs/nets.md) over the whole input in one patch with\n"
    "the reference layers. Input: uint8 (scaled to [0, 1]) or float32, (Z,Y,X) or (C,Z,Y,X);\n"
    "one --in per input statement, in order. Output: float32 (C,Z',Y',X'), one --out per output\n"
    "statement, in order; a valid net's output is smaller than its input by the field of view\n"
    "less one (offset printed unless --quiet).\n\n"
    "  --net FILE              network spec (required)\n"
    "  --weights FILE.h5       weights, /<layer>/weight, /<layer>/bias, ... (PyTorch layouts)\n"
    "  --init msra|xavier|uniform  random weights instead of --weights (default: none)\n"
    "  --seed N                seed for --init (default 1)\n"
    "  --save-weights FILE.h5  write the --init weights there and stop\n"
    "  --in SPEC               an input volume (file.h5:/dataset or file.npy); repeatable\n"
    "  --out SPEC              an output dataset (file.h5:/dataset or file.npy); repeatable\n"
    "  --patch Z,Y,X           with --plan and no --in: the patch shape to plan for\n"
    "  --plan                  print per layer: type, output shape, FLOPs, bytes\n"
    "  --threads N             worker threads (default: VOX_THREADS, else all CPUs)\n"
    "  --quiet                 no progress bar and no summary\n";

enum { MAX_IO = 8 };

struct infer_opts {
    const char *net, *weights, *save;
    const char *in[MAX_IO], *out[MAX_IO];
    int n_in, n_out;
    bool init_set, plan, patch_set;
    enum vox_nn_init init;
    uint64_t seed;
    int64_t patch[3];
    struct cli_common common;
};

static int parse_one(int argc, char **argv, int *i, struct infer_opts *o)
{
    const char *a = argv[*i], *v;
    if (strcmp(a, "--plan") == 0) {
        o->plan = true;
        return 0;
    }
    if (!(v = cli_value("infer", argc, argv, i)))
        return 2;
    int64_t n;
    if (strcmp(a, "--net") == 0) {
        o->net = v;
    } else if (strcmp(a, "--weights") == 0) {
        o->weights = v;
    } else if (strcmp(a, "--save-weights") == 0) {
        o->save = v;
    } else if (strcmp(a, "--init") == 0) {
        if (!vox_nn_init_parse(v, &o->init))
            return cli_usage("infer", "--init %s: expected msra, xavier or uniform", v);
        o->init_set = true;
    } else if (strcmp(a, "--seed") == 0) {
        if (!cli_parse_i64(v, 0, INT64_MAX, &n))
            return cli_usage("infer", "--seed %s: expected a whole number >= 0", v);
        o->seed = (uint64_t)n;
    } else if (strcmp(a, "--patch") == 0) {
        if (!cli_parse_shape(v, 3, 1, INT64_C(1) << 31, o->patch))
            return cli_usage("infer", "--patch %s: expected Z,Y,X, three whole numbers >= 1", v);
        o->patch_set = true;
    } else if (strcmp(a, "--in") == 0 || strcmp(a, "--out") == 0) {
        bool in = strcmp(a, "--in") == 0;
        int *k = in ? &o->n_in : &o->n_out;
        if (*k == MAX_IO)
            return cli_usage("infer", "at most %d %s options", MAX_IO, a);
        (in ? o->in : o->out)[(*k)++] = v;
    } else {
        return cli_usage("infer", "unknown option '%s'", a);
    }
    return 0;
}

/* 0: parsed; 1: --help printed; 2: usage error printed. */
static int parse(int argc, char **argv, struct infer_opts *o)
{
    for (int i = 1; i < argc; i++) {
        int r = cli_common_option("infer", argc, argv, &i, &o->common);
        if (r == 2)
            return 2;
        if (r == 0)
            continue;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(help, stdout);
            return 1;
        }
        if (strncmp(argv[i], "--", 2) != 0)
            return cli_usage("infer", "unexpected argument '%s'", argv[i]);
        if ((r = parse_one(argc, argv, &i, o)) != 0)
            return r;
    }
    if (!o->net)
        return cli_usage("infer", "--net FILE is required");
    if (o->save && !o->init_set)
        return cli_usage("infer", "--save-weights needs --init");
    if (o->save)
        return 0;
    if (!o->weights == !o->init_set)
        return cli_usage("infer", "give one of --weights FILE.h5 or --init KIND");
    if (o->n_in == 0 && !(o->plan && o->patch_set))
        return cli_usage("infer", "--in SPEC is required (or --plan with --patch Z,Y,X)");
    if (o->n_in > 0 && o->n_out == 0 && !o->plan)
        return cli_usage("infer", "--out SPEC is required");
    return 0;
}

/* Reads one input volume as (1, C, Z, Y, X) f32: u8 scaled by 1/255, f32 as is. */
static enum vox_status read_input(struct vox_ctx *ctx, const char *spec, int64_t channels,
                                  struct vox_tensor *t_out)
{
    struct vox_tensor raw = {0};
    struct vox_volume_info info;
    enum vox_status s = vox_volume_load(ctx, spec, &raw, &info);
    if (s != VOX_OK)
        return s;
    int64_t c = info.rank == 4 ? info.shape[0] : 1;
    if ((info.rank != 3 && info.rank != 4) || (info.dtype != VOX_U8 && info.dtype != VOX_F32))
        s = vox_fail(ctx, VOX_INVALID_ARG,
                     "input '%s' is %s of rank %d; expected uint8 or "
                     "float32 (Z,Y,X) or (C,Z,Y,X)",
                     spec, vox_dtype_str(info.dtype), info.rank);
    else if (c != channels)
        s = vox_fail(ctx, VOX_INVALID_ARG, "input '%s' has %lld channels, the net expects %lld",
                     spec, (long long)c, (long long)channels);
    int64_t shape[5] = {1, c, info.shape[info.rank - 3], info.shape[info.rank - 2],
                        info.shape[info.rank - 1]};
    if (s == VOX_OK)
        s = vox_tensor_alloc(ctx, t_out, VOX_F32, 5, shape);
    if (s == VOX_OK) {
        float *d = t_out->data;
        for (int64_t i = 0; i < vox_tensor_numel(t_out); i++)
            d[i] = info.dtype == VOX_U8 ? ((const uint8_t *)raw.data)[i] / 255.0f
                                        : ((const float *)raw.data)[i];
    }
    vox_tensor_free(ctx, &raw);
    return s;
}

static void print_plan(const struct vox_net *net, const struct vox_nn_dims *d)
{
    printf("%-16s %-9s %-22s %12s %12s\n", "layer", "type", "output (c,z,y,x)", "MFLOP", "MB");
    double total = 0;
    for (int i = 0; i < net->n_layers; i++) {
        const int64_t *s = d[i].shape;
        char shape[64];
        snprintf(shape, sizeof shape, "%lldx%lldx%lldx%lld", (long long)s[0], (long long)s[1],
                 (long long)s[2], (long long)s[3]);
        double fl = vox_nn_layer_flops(net, d, i);
        total += fl;
        printf("%-16s %-9s %-22s %12.1f %12.2f\n", net->layers[i].name,
               vox_nn_kind_str(net->layers[i].kind), shape, fl / 1e6,
               4.0 * (double)(s[0] * s[1] * s[2] * s[3]) / 1e6);
    }
    int64_t fov[3], off[3];
    vox_net_fov(net, d, fov, off);
    printf("total %.1f MFLOP; field of view %lldx%lldx%lld, output offset %lld,%lld,%lld\n",
           total / 1e6, (long long)fov[0], (long long)fov[1], (long long)fov[2], (long long)off[0],
           (long long)off[1], (long long)off[2]);
}

static enum vox_status write_outputs(struct vox_ctx *ctx, const struct infer_opts *o,
                                     const struct vox_nn_plan *plan)
{
    enum vox_status s = VOX_OK;
    for (int k = 0; k < o->n_out && s == VOX_OK; k++) {
        const struct vox_tensor *t = vox_nn_plan_output(plan, k);
        struct vox_tensor v = *t; /* drop N: (C, Z, Y, X) */
        v.rank = 4;
        memmove(v.shape, t->shape + 1, 4 * sizeof v.shape[0]);
        memmove(v.strides, t->strides + 1, 4 * sizeof v.strides[0]);
        v.base = NULL;
        s = vox_volume_save(ctx, o->out[k], &v, NULL);
    }
    return s;
}

struct state {
    struct vox_net *net;
    struct vox_nn_weights *w;
    struct vox_nn_plan *plan;
    struct vox_tensor in[MAX_IO];
};

static enum vox_status run(struct vox_ctx *ctx, const struct infer_opts *o, struct state *st)
{
    enum vox_status s = vox_net_load(ctx, o->net, &st->net);
    if (s != VOX_OK)
        return s;
    struct vox_net *net = st->net;
    if (o->weights)
        s = vox_nn_weights_load(ctx, net, o->weights, &st->w);
    else if ((s = vox_nn_weights_create(ctx, net, &st->w)) == VOX_OK)
        vox_nn_weights_init(net, st->w, o->init, o->seed);
    if (s != VOX_OK || o->save)
        return s != VOX_OK ? s : vox_nn_weights_save(ctx, net, st->w, o->save);
    if (o->n_in && o->n_in != net->n_inputs)
        return vox_fail(ctx, VOX_INVALID_ARG, "the net '%s' has %d inputs, got %d --in", o->net,
                        net->n_inputs, o->n_in);
    if (o->n_out && o->n_out != net->n_outputs)
        return vox_fail(ctx, VOX_INVALID_ARG, "the net '%s' has %d outputs, got %d --out", o->net,
                        net->n_outputs, o->n_out);
    int64_t patch[3] = {o->patch[0], o->patch[1], o->patch[2]};
    for (int k = 0; k < o->n_in && s == VOX_OK; k++) {
        s = read_input(ctx, o->in[k], net->layers[vox_net_input(net, k)].channels, &st->in[k]);
        if (s == VOX_OK && k > 0 && memcmp(st->in[k].shape + 2, patch, sizeof patch) != 0)
            s = vox_fail(ctx, VOX_INVALID_ARG, "input '%s' differs in shape from '%s'", o->in[k],
                         o->in[0]);
        if (s == VOX_OK)
            memcpy(patch, st->in[k].shape + 2, sizeof patch);
    }
    if (s == VOX_OK)
        s = vox_nn_plan_create(ctx, net, st->w, patch, &st->plan);
    if (s != VOX_OK)
        return s;
    if (o->plan)
        print_plan(net, vox_nn_plan_dims(st->plan));
    if (o->n_out == 0)
        return VOX_OK;
    struct vox_progress *bar = vox_progress_start(ctx, "infer", 1, "patches", o->common.quiet);
    s = vox_nn_plan_forward(ctx, st->plan, st->in);
    vox_progress_add(bar, 1);
    vox_progress_finish(bar);
    return s == VOX_OK ? write_outputs(ctx, o, st->plan) : s;
}

int vox_cmd_infer(int argc, char **argv)
{
    struct infer_opts o = {.seed = 1};
    int r = parse(argc, argv, &o);
    if (r != 0)
        return r == 1 ? 0 : 2;
    struct vox_ctx *ctx = cli_ctx_create("infer", &o.common);
    if (!ctx)
        return 1;
    double t0 = vox_time_now();
    struct state st = {0};
    enum vox_status s = run(ctx, &o, &st);
    int rc = s == VOX_OK ? 0 : cli_fail("infer", ctx, s);
    if (rc == 0 && !o.common.quiet && o.n_out) {
        const struct vox_tensor *t = vox_nn_plan_output(st.plan, 0);
        int64_t fov[3], off[3];
        vox_net_fov(st.net, vox_nn_plan_dims(st.plan), fov, off);
        printf("wrote %s: %lldx%lldx%lldx%lld, offset %lld,%lld,%lld in the input, %.2f s\n",
               o.out[0], (long long)t->shape[1], (long long)t->shape[2], (long long)t->shape[3],
               (long long)t->shape[4], (long long)off[0], (long long)off[1], (long long)off[2],
               vox_time_now() - t0);
    }
    for (int k = 0; k < MAX_IO; k++)
        vox_tensor_free(ctx, &st.in[k]);
    vox_nn_plan_destroy(st.plan);
    vox_nn_weights_destroy(st.w);
    vox_net_destroy(st.net);
    vox_ctx_destroy(ctx);
    return rc;
}
