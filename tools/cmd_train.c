/*
 * cmd_train.c: `vox train`: trains a ConvNet (docs/nets.md) on labelled volumes with the
 * reference layers: random patches read block-wise from HDF5, augmentation, affinity or
 * boundary targets, SGD or Adam, validation, checksummed checkpoints and exact resume.
 *
 * The loop is src/nn/trainer.c; this file parses options, drives it, prints a progress line
 * (iteration, loss, voxels/s, ETA), writes a JSON-lines log and checkpoints every K steps.
 * A NaN loss stops the run with exit 1, keeping the last good checkpoint (nothing is written
 * after the bad step).
 */
#include "cli.h"
#include "vox/io.h"
#include "vox/train.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char help[] =
    "usage: vox train --net NET --data FILE.h5:/raw,/labels[,/mask] --out MODEL.h5 [options]\n\n"
    "Trains NET (1-channel inputs, one output) on random patches of the --data volumes and\n"
    "writes its weights to MODEL.h5 (usable by `vox infer --weights`). Deterministic: the same\n"
    "options give the same weights for any --threads, and --resume continues a run from its\n"
    "checkpoint to the same weights as an uninterrupted run. Ctrl-C (SIGINT) or SIGTERM\n"
    "finishes the step running, writes the checkpoint and exits 130 / 143 (a second one\n"
    "stops at once).\n\n"
    "  --net FILE              network spec (required)\n"
    "  --data SPEC             raw,labels[,mask]; later items starting with '/' are datasets\n"
    "                          of the first item's file; repeatable (required)\n"
    "  --extra SPEC            a further net input of the volume of the last --data or --val\n"
    "                          (e.g. a first net's prediction, for recursive training): same\n"
    "                          shape as the raw, uint8 or float32, no grey augmentation; a\n"
    "                          SPEC '/name' (no ':/') is a dataset of that raw's file; the\n"
    "                          net's inputs are the raw, then the extras in order;\n"
    "                          repeatable, up to 3 (default: none)\n"
    "  --val SPEC              validation volume, same form (default: none)\n"
    "  --out FILE.h5           trained weights (required)\n"
    "  --target affinity|boundary  what to learn (default affinity)\n"
    "  --loss bce|square|softmax|malis  (default: bce for affinity, softmax for boundary);\n"
    "                          malis: constrained MALIS on the affinities (needs --target\n"
    "                          affinity and act=sigmoid; --rebalance does not apply)\n"
    "  --offsets DZ,DY,DX[;...]  long-range affinities: after the 3 nearest-neighbour\n"
    "                          channels, one per offset linking v and v - (DZ,DY,DX) (at most\n"
    "                          8; the net's output has 3 + their number of channels)\n"
    "  --rebalance none|patch|volume\n"
    "                          class weights 0.5 N / n per channel (class) from each patch's\n"
    "                          counts or, once, from every --data volume's (default patch)\n"
    "  --iters N               optimizer steps (default 1000)\n"
    "  --optimizer adam|sgd    (default adam)\n"
    "  --lr X                  learning rate (default 0.001 adam, 0.01 sgd)\n"
    "  --momentum X            sgd momentum (default 0.9)\n"
    "  --weight-decay X        L2 weight decay (default 0)\n"
    "  --anneal-every N        multiply lr by --anneal-factor every N steps (default 0: never)\n"
    "  --anneal-factor X       (default 0.1)\n"
    "  --patch Z,Y,X           input patch; must cover the field of view (default: the field\n"
    "                          of view plus 8 output voxels in y and x, and 2 in z for nets\n"
    "                          with a 3D field of view; printed)\n"
    "  --accumulate K          patches per step, gradients averaged (default 1)\n"
    "  --init msra|xavier|uniform  initial weights (default msra)\n"
    "  --weights FILE.h5       start from these weights instead of --init\n"
    "  --init-from FILE.h5     seed every layer whose name and parameter shapes match a layer\n"
    "                          of FILE.h5 (e.g. a trained VD2D for VD2D3D), --init for the\n"
    "                          rest; prints which layers were seeded (default: none)\n"
    "  --seed N                weights and sampling seed (default 1)\n"
    "  --no-flips              no flip/transpose augmentation (default: the 16 of them)\n"
    "  --grey S,T              grey-value scale +-S and shift +-T (default 0,0)\n"
    "  --missing P             probability of a blanked input section (default 0)\n"
    "  --misalign P,M          probability of a section shifted by up to +-M voxels in y and\n"
    "                          x (default 0,0)\n"
    "  --blur P,S              probability of a section blurred by a Gaussian of sigma up to\n"
    "                          S voxels (default 0,0)\n"
    "  --checkpoint FILE       checkpoint path (default MODEL.h5.ckpt)\n"
    "  --checkpoint-every K    write the checkpoint every K steps (default 100; 0: at the end)\n"
    "  --resume                continue from the checkpoint (it must exist)\n"
    "  --val-every V           validation loss and adapted Rand error every V steps\n"
    "                          (default 100)\n"
    "  --val-patches N         patches per validation (default 8)\n"
    "  --log FILE              JSON-lines log (default MODEL.h5.jsonl; appended on --resume)\n"
    "  --kernels fast|ref      convolution kernels: JIT loop nests (Winograd for 3x3 kernels,\n"
    "                          FFT for large ones where the cost model picks it; VOX_TRAIN_FFT=0\n"
    "                          never, =1 always) or the scalar reference (default fast)\n"
    "  --threads N             worker threads (default: VOX_THREADS, else all CPUs)\n"
    "  --quiet                 no progress lines\n";

enum { MAX_DATA = 16 };

struct train_opts {
    const char *net, *out, *weights, *init_from, *ckpt, *log;
    const char *data[MAX_DATA], *val;
    /* --extra specs per --data (index k) and for --val (index MAX_DATA) */
    const char *extra[MAX_DATA + 1][VOX_TRAIN_EXTRA_MAX];
    int n_extra[MAX_DATA + 1];
    int n_data, last; /* last: the --data index the next --extra joins; MAX_DATA: --val */
    bool loss_set, lr_set, patch_set, resume, ref_kernels;
    int64_t iters, ckpt_every, val_every, val_patches;
    struct vox_train_options t;
    struct cli_common common;
};

static int parse_num(const char *a, const char *v, struct train_opts *o)
{
    struct {
        const char *name;
        int64_t lo, hi, *dst;
    } ints[] = {{"--iters", 1, INT64_C(1) << 40, &o->iters},
                {"--checkpoint-every", 0, INT64_C(1) << 40, &o->ckpt_every},
                {"--val-every", 1, INT64_C(1) << 40, &o->val_every},
                {"--val-patches", 1, 1 << 20, &o->val_patches},
                {"--accumulate", 1, 1 << 20, &o->t.accumulate},
                {"--anneal-every", 0, INT64_C(1) << 40, &o->t.optim.anneal_every}};
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++)
        if (strcmp(a, ints[k].name) == 0)
            return cli_parse_i64(v, ints[k].lo, ints[k].hi, ints[k].dst)
                       ? 0
                       : cli_usage("train", "%s %s: expected a whole number in [%lld, %lld]", a, v,
                                   (long long)ints[k].lo, (long long)ints[k].hi);
    struct {
        const char *name;
        double *dst;
    } reals[] = {{"--lr", &o->t.optim.lr},
                 {"--momentum", &o->t.optim.momentum},
                 {"--weight-decay", &o->t.optim.weight_decay},
                 {"--anneal-factor", &o->t.optim.anneal_factor},
                 {"--missing", &o->t.aug.missing_rate}};
    for (size_t k = 0; k < sizeof reals / sizeof reals[0]; k++)
        if (strcmp(a, reals[k].name) == 0) {
            o->lr_set |= k == 0;
            return cli_parse_f64(v, reals[k].dst) && *reals[k].dst >= 0
                       ? 0
                       : cli_usage("train", "%s %s: expected a number >= 0", a, v);
        }
    return -1;
}

static int parse_kind(const char *a, const char *v, struct train_opts *o)
{
    if (strcmp(a, "--target") == 0 && !vox_target_parse(v, &o->t.target))
        return cli_usage("train", "--target %s: expected affinity or boundary", v);
    if (strcmp(a, "--loss") == 0 && !(o->loss_set = vox_loss_parse(v, &o->t.loss)))
        return cli_usage("train", "--loss %s: expected bce, square, softmax or malis", v);
    if (strcmp(a, "--optimizer") == 0) {
        enum vox_optim_kind k;
        if (!vox_optim_parse(v, &k))
            return cli_usage("train", "--optimizer %s: expected adam or sgd", v);
        o->t.optim.kind = k;
    }
    if (strcmp(a, "--rebalance") == 0) {
        static const char *const names[VOX_REBALANCE_COUNT] = {"none", "patch", "volume"};
        int k = 0;
        while (k < VOX_REBALANCE_COUNT && strcmp(v, names[k]) != 0)
            k++;
        if (k == VOX_REBALANCE_COUNT)
            return cli_usage("train", "--rebalance %s: expected none, patch or volume", v);
        o->t.rebalance = (enum vox_rebalance)k;
    }
    if (strcmp(a, "--init") == 0 && !vox_nn_init_parse(v, &o->t.init))
        return cli_usage("train", "--init %s: expected msra, xavier or uniform", v);
    if (strcmp(a, "--kernels") == 0) {
        if (strcmp(v, "fast") != 0 && strcmp(v, "ref") != 0)
            return cli_usage("train", "--kernels %s: expected fast or ref", v);
        o->ref_kernels = strcmp(v, "ref") == 0;
    }
    return 0;
}

static int parse_one(int argc, char **argv, int *i, void *arg)
{
    struct train_opts *o = arg;
    const char *a = argv[*i], *v;
    if (strcmp(a, "--resume") == 0 || strcmp(a, "--no-flips") == 0) {
        a[2] == 'r' ? (o->resume = true) : (o->t.aug.flips = false);
        return 0;
    }
    if (!(v = cli_value("train", argc, argv, i)))
        return 2;
    int r = parse_num(a, v, o);
    if (r >= 0)
        return r;
    int64_t n;
    double g[2];
    if (strcmp(a, "--net") == 0) {
        o->net = v;
    } else if (strcmp(a, "--out") == 0) {
        o->out = v;
    } else if (strcmp(a, "--weights") == 0) {
        o->weights = v;
    } else if (strcmp(a, "--init-from") == 0) {
        o->init_from = v;
    } else if (strcmp(a, "--extra") == 0) {
        if (o->last < 0)
            return cli_usage("train", "--extra %s: give it after the --data or --val it joins", v);
        if (o->n_extra[o->last] == VOX_TRAIN_EXTRA_MAX)
            return cli_usage("train", "at most %d --extra per volume", VOX_TRAIN_EXTRA_MAX);
        o->extra[o->last][o->n_extra[o->last]++] = v;
    } else if (strcmp(a, "--checkpoint") == 0) {
        o->ckpt = v;
    } else if (strcmp(a, "--log") == 0) {
        o->log = v;
    } else if (strcmp(a, "--val") == 0) {
        o->val = v;
        o->last = MAX_DATA;
    } else if (strcmp(a, "--data") == 0) {
        if (o->n_data == MAX_DATA)
            return cli_usage("train", "at most %d --data options", MAX_DATA);
        o->last = o->n_data;
        o->data[o->n_data++] = v;
    } else if (strcmp(a, "--seed") == 0) {
        if (!cli_parse_i64(v, 0, INT64_MAX, &n))
            return cli_usage("train", "--seed %s: expected a whole number >= 0", v);
        o->t.seed = (uint64_t)n;
    } else if (strcmp(a, "--patch") == 0) {
        if (!cli_parse_shape(v, 3, 1, 1 << 16, o->t.patch))
            return cli_usage("train", "--patch %s: expected Z,Y,X, three whole numbers >= 1", v);
        o->patch_set = true;
    } else if (strcmp(a, "--grey") == 0) {
        if (sscanf(v, "%lf,%lf", &g[0], &g[1]) != 2 || !(g[0] >= 0 && g[0] < 1 && g[1] >= 0))
            return cli_usage("train", "--grey %s: expected S,T with 0 <= S < 1, T >= 0", v);
        o->t.aug.grey_scale = g[0], o->t.aug.grey_shift = g[1];
    } else if (strcmp(a, "--offsets") == 0) {
        const char *q = v;
        o->t.n_offsets = 0;
        for (;;) {
            long long z, y, x;
            int used = 0;
            if (o->t.n_offsets == VOX_TRAIN_OFFSETS_MAX ||
                sscanf(q, "%lld,%lld,%lld%n", &z, &y, &x, &used) != 3 || llabs(z) > 1024 ||
                llabs(y) > 1024 || llabs(x) > 1024 || (z == 0 && y == 0 && x == 0))
                return cli_usage("train",
                                 "--offsets %s: expected DZ,DY,DX[;DZ,DY,DX...], at most %d, "
                                 "each not 0,0,0 and within +-1024",
                                 v, VOX_TRAIN_OFFSETS_MAX);
            int64_t *t = o->t.offsets[o->t.n_offsets++];
            t[0] = z, t[1] = y, t[2] = x;
            q += used;
            if (*q == 0)
                break;
            if (*q++ != ';')
                return cli_usage("train", "--offsets %s: offsets are separated by ';'", v);
        }
    } else if (strcmp(a, "--misalign") == 0) {
        char tail;
        if (sscanf(v, "%lf,%lf%c", &g[0], &g[1], &tail) != 2 || !(g[0] >= 0 && g[0] <= 1) ||
            !(g[1] >= 0 && g[1] <= 1024) || g[1] != (double)(int)g[1])
            return cli_usage("train",
                             "--misalign %s: expected P,M with 0 <= P <= 1 and a whole M in "
                             "0..1024 (voxels)",
                             v);
        o->t.aug.misalign_rate = g[0], o->t.aug.misalign_max = (int)g[1];
    } else if (strcmp(a, "--blur") == 0) {
        char tail;
        if (sscanf(v, "%lf,%lf%c", &g[0], &g[1], &tail) != 2 || !(g[0] >= 0 && g[0] <= 1) ||
            !(g[1] >= 0 && g[1] <= 10))
            return cli_usage("train", "--blur %s: expected P,S with 0 <= P <= 1, 0 <= S <= 10", v);
        o->t.aug.blur_rate = g[0], o->t.aug.blur_sigma = g[1];
    } else if (strcmp(a, "--target") == 0 || strcmp(a, "--loss") == 0 ||
               strcmp(a, "--optimizer") == 0 || strcmp(a, "--rebalance") == 0 ||
               strcmp(a, "--init") == 0 || strcmp(a, "--kernels") == 0) {
        return parse_kind(a, v, o);
    } else {
        return cli_usage("train", "unknown option '%s'", a);
    }
    return 0;
}

/* 0: parsed; -1: --help printed; 2: usage error printed. */
static int parse(int argc, char **argv, struct train_opts *o)
{
    int r = cli_parse_options("train", argc, argv, help, &o->common, parse_one, o);
    if (r)
        return r;
    if (!o->net || !o->out || o->n_data == 0)
        return cli_usage("train", "--net FILE, --data SPEC and --out FILE.h5 are required");
    if (o->weights && o->init_from)
        return cli_usage("train", "--weights and --init-from exclude each other");
    if (!o->loss_set)
        o->t.loss = o->t.target == VOX_TARGET_AFFINITY ? VOX_LOSS_BCE : VOX_LOSS_SOFTMAX;
    if (!o->lr_set)
        o->t.optim.lr = o->t.optim.kind == VOX_OPTIM_ADAM ? 0.001 : 0.01;
    if (o->t.optim.anneal_factor > 1 || o->t.aug.missing_rate > 1)
        return cli_usage("train", "--anneal-factor and --missing must be <= 1");
    return 0;
}

enum { N_SPECS = 3 + VOX_TRAIN_EXTRA_MAX };

/* The extras: "/x" -> "FILE:/x" with the raw's file, into buf[3..]; 0 or 2. */
static int split_extra(const char *file, const char *const *extra, int n, char buf[][1024],
                       struct vox_train_source *src)
{
    for (int k = 0; k < n; k++) {
        bool rel = extra[k][0] == '/' && !strstr(extra[k], ":/");
        int w = rel ? snprintf(buf[3 + k], 1024, "%s:%s", file, extra[k])
                                   : snprintf(buf[3 + k], 1024, "%s", extra[k]);
        if (w < 0 || w >= 1024 || (!file[0] && rel))
            return cli_usage("train", "--extra %s: too long, or '/' without a raw file",
                             extra[k]);
        src->extra[k] = buf[3 + k];
    }
    src->n_extra = n;
    return 0;
}

/* "f.h5:/raw,/labels,/mask" -> three specs in buf (each 1024 bytes), then the extras */
static int split_data(const char *spec, const char *const *extra, int n_extra,
                      char buf[N_SPECS][1024], struct vox_train_source *src)
{
    char file[1024];
    const char *colon = strstr(spec, ":/");
    int n = 0;
    snprintf(file, sizeof file, "%.*s", colon ? (int)(colon - spec) : 0, spec);
    if (strlen(spec) >= 1000)
        return cli_usage("train", "--data: the spec is too long");
    for (const char *p = spec; *p && n < 3; n++) {
        const char *comma = strchr(p, ',');
        int len = comma ? (int)(comma - p) : (int)strlen(p), w;
        if (*p == '/' && n > 0)
            w = snprintf(buf[n], 1024, "%s:%.*s", file, len, p);
        else
            w = snprintf(buf[n], 1024, "%.*s", len, p);
        if (w < 0 || w >= 1024)
            return cli_usage("train", "--data: the spec is too long");
        p = comma ? comma + 1 : p + len;
    }
    if (n < 2)
        return cli_usage("train", "--data %s: expected RAW,LABELS[,MASK]", spec);
    *src = (struct vox_train_source){.raw = buf[0], .labels = buf[1], .mask = n > 2 ? buf[2] : NULL};
    return split_extra(file, extra, n_extra, buf, src);
}

struct state {
    int stopped; /* the signal that stopped the steps before --iters, else 0 */
    struct vox_net *net;
    struct vox_nn_weights *w0;
    struct vox_train_data *data, *val;
    struct vox_trainer *tr;
    struct vox_nn_train_fast *fast;
    struct vox_train_options t; /* the options with the kernel table */
    FILE *log;
    char ckpt[1100], logpath[1100];
    char specs[MAX_DATA + 1][N_SPECS][1024]; /* --data and --val split into volume specs */
    struct vox_train_source src[MAX_DATA], vsrc;
    int64_t good; /* iteration of the last checkpoint written or loaded, -1: none */
};

/* Splits every --data / --val into volume specs; 0 or 2 (usage error printed). */
static int split_all(const struct train_opts *o, struct state *st)
{
    for (int k = 0; k < o->n_data; k++)
        if (split_data(o->data[k], o->extra[k], o->n_extra[k], st->specs[k], &st->src[k]) != 0)
            return 2;
    return o->val ? split_data(o->val, o->extra[MAX_DATA], o->n_extra[MAX_DATA],
                               st->specs[MAX_DATA], &st->vsrc)
                  : 0;
}

/* The default patch: the field of view plus 8 output voxels in y, x (2 in z where the field of
 * view is 3D), grown by up to 15 voxels per axis until the net's poolings divide it. */
static enum vox_status default_patch(struct vox_ctx *ctx, const struct vox_net *net,
                                     int64_t patch[3])
{
    struct vox_nn_dims *d = vox_calloc(ctx, (size_t)net->n_layers, sizeof *d);
    if (!d)
        return VOX_OUT_OF_MEMORY;
    int64_t probe[3] = {256, 1024, 1024}, fov[3], off[3];
    enum vox_status s = vox_net_shapes(ctx, net, probe, d);
    if (s == VOX_OK) {
        vox_net_fov(net, d, fov, off);
        int64_t base[3] = {fov[0] > 1 ? fov[0] + 1 : 1, fov[1] + 7, fov[2] + 7};
        s = VOX_INVALID_ARG;
        for (int64_t g = 0; g < 16 && s != VOX_OK; g++) {
            for (int a = 0; a < 3; a++)
                patch[a] = base[a] + (a == 0 && base[0] == 1 ? 0 : g);
            s = vox_net_shapes(ctx, net, patch, d);
        }
    }
    vox_free(ctx, d);
    if (s != VOX_OK)
        vox_ctx_error_prefix(ctx, "net '%s': no default --patch fits; give --patch",
                             net->source);
    return s;
}

/* --init-from: seeds the fresh weights w0 by layer name and prints the seeded layers. */
static enum vox_status init_from(struct vox_ctx *ctx, const struct train_opts *o,
                                 struct state *st)
{
    bool *hit = vox_calloc(ctx, (size_t)st->net->n_layers, sizeof *hit);
    enum vox_status s = hit ? vox_nn_weights_create(ctx, st->net, &st->w0) : VOX_OUT_OF_MEMORY;
    if (s == VOX_OK) {
        vox_nn_weights_init(st->net, st->w0, o->t.init, o->t.seed);
        s = vox_nn_weights_seed(ctx, st->net, o->init_from, st->w0, hit);
    }
    for (int i = 0; s == VOX_OK && i < st->net->n_layers; i++)
        if (st->w0->p[i][VOX_P_WEIGHT].rank && !o->common.quiet)
            fprintf(stderr, "vox train: layer %-12s %s\n", st->net->layers[i].name,
                    hit[i] ? "seeded from --init-from" : "initialised");
    vox_free(ctx, hit);
    return s;
}

static enum vox_status open_all(struct vox_ctx *ctx, const struct train_opts *o, struct state *st)
{
    enum vox_status s = vox_net_load(ctx, o->net, &st->net);
    st->t = o->t;
    if (s == VOX_OK && !o->patch_set && (s = default_patch(ctx, st->net, st->t.patch)) == VOX_OK &&
        !o->common.quiet)
        fprintf(stderr, "vox train: patch %lld,%lld,%lld (default from the field of view)\n",
                (long long)st->t.patch[0], (long long)st->t.patch[1], (long long)st->t.patch[2]);
    if (s == VOX_OK && o->weights)
        s = vox_nn_weights_load(ctx, st->net, o->weights, &st->w0);
    else if (s == VOX_OK && o->init_from)
        s = init_from(ctx, o, st);
    if (s == VOX_OK)
        s = vox_train_data_open(ctx, st->src, o->n_data, &st->data);
    if (s == VOX_OK && o->val)
        s = vox_train_data_open(ctx, &st->vsrc, 1, &st->val);
    if (s == VOX_OK && !o->ref_kernels && (s = vox_nn_train_fast_create(ctx, &st->fast)) == VOX_OK)
        st->t.kernels = vox_nn_train_fast_kernels(st->fast);
    if (s == VOX_OK)
        s = vox_trainer_create(ctx, st->net, &st->t, st->w0, st->data, &st->tr);
    if (s == VOX_OK && !o->common.quiet) {
        const double b = (double)vox_trainer_graph_bytes(st->tr);
        fprintf(stderr,
                "vox train: patch %lld,%lld,%lld: %.1f %s of activations and gradients (they "
                "grow with the patch's voxels)\n",
                (long long)st->t.patch[0], (long long)st->t.patch[1], (long long)st->t.patch[2],
                b < 1e6 ? b / 1e3 : b / 1e6, b < 1e6 ? "kB" : "MB");
    }
    double pos[4], neg[4], wp[4], wn[4];
    if (s == VOX_OK && !o->common.quiet && vox_trainer_class_counts(st->tr, pos, neg)) {
        const int64_t nc = vox_target_channels(st->t.target, st->t.loss);
        vox_loss_class_weights(st->t.loss, nc, pos, neg, wp, wn);
        fprintf(stderr, "vox train: class weights from the volumes' counts (positive, negative):");
        for (int64_t c = 0; c < nc; c++)
            fprintf(stderr, "%s %.3g, %.3g", c ? ";" : "", wp[c], wn[c]);
        fprintf(stderr, "\n");
    }
    snprintf(st->ckpt, sizeof st->ckpt, "%s", o->ckpt ? o->ckpt : "");
    if (!o->ckpt)
        snprintf(st->ckpt, sizeof st->ckpt, "%s.ckpt", o->out);
    snprintf(st->logpath, sizeof st->logpath, "%s", o->log ? o->log : "");
    if (!o->log)
        snprintf(st->logpath, sizeof st->logpath, "%s.jsonl", o->out);
    st->good = -1;
    if (s == VOX_OK && o->resume && (s = vox_trainer_load(ctx, st->tr, st->ckpt)) == VOX_OK)
        st->good = vox_trainer_iteration(st->tr);
    if (s == VOX_OK && !(st->log = fopen(st->logpath, o->resume ? "a" : "w")))
        s = vox_fail(ctx, VOX_IO, "cannot open the log '%s'", st->logpath);
    return s;
}

static void fmt_eta(double s, char *buf, size_t n)
{
    if (s >= 3600)
        snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
    else
        snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
}

/* One step plus its periodic work: log, progress, validation, checkpoint. */
static enum vox_status step(struct vox_ctx *ctx, const struct train_opts *o, struct state *st,
                            double t0, int64_t first)
{
    double loss;
    enum vox_status s = vox_trainer_step(ctx, st->tr, &loss);
    if (s != VOX_OK)
        return s;
    int64_t it = vox_trainer_iteration(st->tr), done = it - first;
    double dt = vox_time_now() - t0;
    double vps = (double)done * (double)vox_trainer_patch_voxels(st->tr) / (dt > 0 ? dt : 1e-9);
    fprintf(st->log, "{\"iter\": %lld, \"loss\": %.9g, \"voxels_per_s\": %.1f, \"time_s\": %.3f}\n",
            (long long)it, loss, vps, dt);
    int64_t every = o->iters >= 20 ? o->iters / 20 : 1;
    if (!o->common.quiet && (it % every == 0 || it == o->iters)) {
        char eta[32];
        fmt_eta(dt / (double)done * (double)(o->iters - it), eta, sizeof eta);
        fprintf(stderr, "vox train: iter %lld/%lld  loss %.5f  %.0f voxels/s  ETA %s\n",
                (long long)it, (long long)o->iters, loss, vps, eta);
    }
    if (st->val && (it % o->val_every == 0 || it == o->iters)) {
        struct vox_val_scores v;
        if ((s = vox_trainer_validate_scores(ctx, st->tr, st->val, o->val_patches, &v)) != VOX_OK)
            return s;
        fprintf(st->log,
                "{\"iter\": %lld, \"val_loss\": %.9g, \"val_rand_error\": %.9g, "
                "\"val_threshold\": %.2f}\n",
                (long long)it, v.loss, v.rand_error, v.threshold);
        if (!o->common.quiet)
            fprintf(stderr,
                    "vox train: iter %lld  validation loss %.5f  adapted Rand error %.4f "
                    "(threshold %.2f)\n",
                    (long long)it, v.loss, v.rand_error, v.threshold);
    }
    fflush(st->log);
    if ((o->ckpt_every > 0 && it % o->ckpt_every == 0) || it == o->iters) {
        if ((s = vox_trainer_save(ctx, st->tr, st->ckpt)) != VOX_OK)
            return s;
        st->good = it;
    }
    return VOX_OK;
}

/* SIGINT or SIGTERM during the steps: the step running finishes, its checkpoint is written
 * and the run stops (exit 128 + the signal), to be continued with --resume. A second one
 * kills at once (the handler gives the signal back its default). */
static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
    stop_signal = sig;
    signal(sig, SIG_DFL);
}

static enum vox_status run(struct vox_ctx *ctx, const struct train_opts *o, struct state *st)
{
    enum vox_status s = open_all(ctx, o, st);
    if (s != VOX_OK)
        return s;
    int64_t first = vox_trainer_iteration(st->tr);
    double t0 = vox_time_now();
    struct sigaction sa = {.sa_handler = on_stop_signal}, old_int, old_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    if (old_int.sa_handler == SIG_IGN) /* a background job's: Ctrl-C is not for it */
        sigaction(SIGINT, &old_int, NULL);
    if (old_term.sa_handler == SIG_IGN)
        sigaction(SIGTERM, &old_term, NULL);
    while (s == VOX_OK && !stop_signal && vox_trainer_iteration(st->tr) < o->iters)
        s = step(ctx, o, st, t0, first);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (s == VOX_OK && stop_signal && vox_trainer_iteration(st->tr) < o->iters) {
        if ((s = vox_trainer_save(ctx, st->tr, st->ckpt)) != VOX_OK)
            return s;
        st->good = vox_trainer_iteration(st->tr);
        st->stopped = stop_signal;
        fprintf(stderr,
                "vox train: %s at iteration %lld/%lld: checkpoint '%s' written; the same "
                "command with --resume continues it\n",
                stop_signal == SIGINT ? "interrupted" : "terminated", (long long)st->good,
                (long long)o->iters, st->ckpt);
        return VOX_OK;
    }
    if (s != VOX_OK && st->good >= 0)
        vox_ctx_error_prefix(ctx, "stopped; the last good checkpoint is '%s' (iteration %lld)",
                             st->ckpt, (long long)st->good);
    if (s == VOX_OK)
        s = vox_nn_weights_save(ctx, st->net, vox_trainer_weights(st->tr), o->out);
    return s;
}

int vox_cmd_train(int argc, char **argv)
{
    struct train_opts o = {
        .iters = 1000, .ckpt_every = 100, .val_every = 100, .val_patches = 8, .last = -1};
    vox_train_options_defaults(&o.t);
    int r = parse(argc, argv, &o);
    if (r)
        return r < 0 ? 0 : r;
    struct state st = {0};
    if (split_all(&o, &st) != 0)
        return 2;
    struct vox_ctx *ctx = cli_ctx_create("train", &o.common);
    if (!ctx)
        return 1;
    vox_ctx_set_huge_pages(ctx, true); /* the same buffers every step */
    enum vox_status s = run(ctx, &o, &st);
    int rc = s == VOX_OK ? (st.stopped ? 128 + st.stopped : 0) : cli_fail("train", ctx, s);
    if (rc == 0 && !o.common.quiet)
        printf("wrote %s after %lld iterations (checkpoint %s, log %s)\n", o.out,
               (long long)vox_trainer_iteration(st.tr), st.ckpt, st.logpath);
    if (st.log)
        fclose(st.log);
    vox_trainer_destroy(st.tr);
    vox_nn_train_fast_destroy(st.fast);
    vox_train_data_close(st.data);
    vox_train_data_close(st.val);
    vox_nn_weights_destroy(st.w0);
    vox_net_destroy(st.net);
    vox_ctx_destroy(ctx);
    return rc;
}
