/*
 * cmd_infer.c: `vox infer`: runs a ConvNet (a spec from nets/ or docs/nets.md) over a volume.
 *
 * The fast forward pass (src/nn/fast.c: JIT loop nests in the blocked channel layout) slides
 * over the volume patch by patch (src/nn/slide.c): the patch is the largest that fits --mem,
 * the input is read and the output written box by box, so the volume need not fit in RAM.
 * It also writes seeded random weights (--init, --save-weights) and prints the plan (--plan:
 * per layer the algorithm, shape, FLOPs, bytes and a predicted time from the measured peak).
 * All checks (spec, weights, input shape against the field of view) happen before the output
 * file is committed, so a failure leaves no partial output.
 *
 * Memory: --mem covers what comes after planning starts (the RSS then is the baseline): the
 * plan, the tile staging and the io, whose HDF5 chunk caches are sized from the budget
 * (1/16 of it per dataset, at most the 32 MiB default) and counted with two chunks' worth of
 * decode buffers per dataset. VOX_LOG=debug logs the RSS at each stage.
 */
#include "cli.h"
#include "vox/io.h"
#include "vox/nn.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

static const char help[] =
    "usage: vox infer --net NET --weights W.h5 --in FILE.h5:/raw --out FILE.h5:/out [options]\n"
    "       vox infer --net NET --init msra --seed 1 --save-weights W.h5\n\n"
    "Runs the network NET (a spec, see docs/nets.md) over the input, patch by patch with the\n"
    "fast layers. Input: uint8 (scaled to [0, 1]) or float32, (Z,Y,X) or (C,Z,Y,X); one --in\n"
    "per input statement, in order. Output: (C,Z',Y',X'), one --out per output statement, in\n"
    "order; a valid net's output is smaller than its input by the field of view less one\n"
    "(offset printed unless --quiet); same-padded nets keep the shape (patch margins cropped).\n\n"
    "  --net FILE              network spec (required)\n"
    "  --weights FILE.h5       weights, /<layer>/weight, /<layer>/bias, ... (PyTorch layouts)\n"
    "  --init msra|xavier|uniform  random weights instead of --weights (default: none)\n"
    "  --seed N                seed for --init (default 1)\n"
    "  --save-weights FILE.h5  write the --init weights there and stop\n"
    "  --in SPEC               an input volume (file.h5:/dataset or file.npy); repeatable\n"
    "  --out SPEC              an output dataset (file.h5:/dataset or file.npy); repeatable\n"
    "  --patch Z,Y,X           the input patch (default: the largest that fits --mem);\n"
    "                          with --plan and no --in: the patch shape to plan for\n"
    "  --mem SIZE              RAM budget after loading: plan, tile staging, HDF5 chunk\n"
    "                          caches, e.g. 8G (default 2G; VOX_LOG=debug logs the RSS)\n"
    "  --dtype f32|u8          output type; u8 = round(255 * clamp(v, 0, 1)) (default f32)\n"
    "  --plan                  print per layer: algorithm and where it came from, output\n"
    "                          shape, FLOPs, bytes, predicted (and measured) time\n"
    "  --conv auto|direct|fft|winograd\n"
    "                          conv algorithm: auto = the cost model, checked by a cached\n"
    "                          measurement where it is close (default auto; see\n"
    "                          docs/infer.md; VOX_PLAN_CACHE=off: no cache file);\n"
    "                          winograd applies to 3x3x3, 1x3x3 and alike, others run direct\n"
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
    int64_t mem;
    enum vox_dtype dtype;
    enum vox_nn_conv_algo conv;
    struct cli_common common;
};

static int parse_one(int argc, char **argv, int *i, void *arg)
{
    struct infer_opts *o = arg;
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
    } else if (strcmp(a, "--mem") == 0) {
        if (!cli_parse_bytes(v, &o->mem) || o->mem < 1)
            return cli_usage("infer", "--mem %s: expected a size like 512M or 8G", v);
    } else if (strcmp(a, "--conv") == 0) {
        static const char *const names[] = {"auto", "direct", "fft", "winograd"};
        int k = 0;
        while (k < 4 && strcmp(v, names[k]) != 0)
            k++;
        if (k == 4)
            return cli_usage("infer", "--conv %s: expected auto, direct, fft or winograd", v);
        o->conv = (enum vox_nn_conv_algo)k;
    } else if (strcmp(a, "--dtype") == 0) {
        if (!vox_dtype_parse(v, &o->dtype) || (o->dtype != VOX_F32 && o->dtype != VOX_U8))
            return cli_usage("infer", "--dtype %s: expected f32 or u8", v);
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

/* 0: parsed; -1: --help printed; 2: usage error printed. */
static int parse(int argc, char **argv, struct infer_opts *o)
{
    int r = cli_parse_options("infer", argc, argv, help, &o->common, parse_one, o);
    if (r)
        return r;
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

/* Opens the inputs, checks dtype, rank and channels, and their common spatial extent. */
static enum vox_status open_inputs(struct vox_ctx *ctx, const struct infer_opts *o,
                                   const struct vox_net *net, struct vox_volume **in,
                                   enum vox_dtype *dtypes, int64_t vol[3])
{
    for (int k = 0; k < o->n_in; k++) {
        enum vox_status s = vox_volume_open(ctx, o->in[k], &in[k]);
        if (s != VOX_OK)
            return s;
        const struct vox_volume_info *info = vox_volume_info(in[k]);
        int64_t c = info->rank == 4 ? info->shape[0] : 1;
        int64_t want = net->layers[vox_net_input(net, k)].channels;
        if ((info->rank != 3 && info->rank != 4) ||
            (info->dtype != VOX_U8 && info->dtype != VOX_F32))
            return vox_fail(ctx, VOX_INVALID_ARG,
                            "input '%s' is %s of rank %d; expected uint8 or float32 (Z,Y,X) or "
                            "(C,Z,Y,X)",
                            o->in[k], vox_dtype_str(info->dtype), info->rank);
        if (c != want)
            return vox_fail(ctx, VOX_INVALID_ARG,
                            "input '%s' has %lld channels, the net expects %lld", o->in[k],
                            (long long)c, (long long)want);
        const int64_t *sp = info->shape + info->rank - 3;
        if (k > 0 && memcmp(sp, vol, 3 * sizeof *vol) != 0)
            return vox_fail(ctx, VOX_INVALID_ARG, "input '%s' differs in shape from '%s'", o->in[k],
                            o->in[0]);
        memcpy(vol, sp, 3 * sizeof *vol);
        dtypes[k] = info->dtype;
    }
    return VOX_OK;
}

/* The HDF5 chunk cache per dataset for a budget: 1/16 of it, at most 32 MiB. */
static size_t cache_bytes(int64_t mem)
{
    size_t c = (size_t)mem / 16;
    return c < ((size_t)32 << 20) ? c : (size_t)32 << 20;
}

/* Bytes of the default output chunk (1, 32, 128, 128 clipped to the volume) of dtype. */
static size_t out_chunk_bytes(const int64_t vol[3], enum vox_dtype dtype)
{
    static const int64_t c[3] = {32, 128, 128};
    size_t bytes = vox_dtype_size(dtype);
    for (int a = 0; a < 3; a++)
        bytes *= (size_t)(vol[a] < c[a] ? vol[a] : c[a]);
    return bytes;
}

static const char *source_str(enum vox_nn_algo_source s)
{
    static const char *const names[] = {"-", "model", "forced", "measured", "cached"};
    return names[s];
}

/* Per layer: algorithm and its source, output shape, FLOPs, bytes, a predicted time (the
 * chosen algorithm's measured time where the planner timed it, else from the measured peak:
 * JIT convs and Winograd's products at 80 % of it, its transforms' floats at 5 %, FFT convs'
 * transforms and products at 10 %, and 10 GB/s for the bytes the layer moves; the FFT's
 * flat rate made its layers' predictions about 2x their time), and the measured times of the
 * algorithms the planner timed (scaled to the whole layer; "-" for one it did not time). */
static void print_plan(struct vox_ctx *ctx, const struct vox_net *net, const struct vox_nn_fast *f,
                       const struct vox_nn_tune *tune)
{
    struct vox_peak peak = {0};
    if (vox_peak_measure(ctx, &peak) != VOX_OK || peak.gflops_all <= 0)
        peak.gflops_all = 50;
    const struct vox_nn_dims *d = vox_nn_fast_dims(f);
    printf("%-12s %-10s %-8s %-8s %-20s %10s %9s %9s  %s\n", "layer", "type", "algo", "from",
           "output (c,z,y,x)", "MFLOP", "MB", "pred ms", "measured ms (direct/fft/winograd)");
    double total = 0, total_s = 0;
    for (int i = 0; i < net->n_layers; i++) {
        const int64_t *s = d[i].shape;
        char shape[64], batch[24] = "", meas[48] = "";
        if (d[i].batch > 1) /* mpf fragments: "8*" before the shape of one */
            snprintf(batch, sizeof batch, "%lld*", (long long)d[i].batch);
        snprintf(shape, sizeof shape, "%s%lldx%lldx%lldx%lld", batch, (long long)s[0],
                 (long long)s[1], (long long)s[2], (long long)s[3]);
        struct vox_nn_fast_layer li;
        vox_nn_fast_layer_info(f, i, &li);
        bool fft = strcmp(li.algo, "fft") == 0, wino = strcmp(li.algo, "winograd") == 0;
        double eff = li.jit || wino ? 0.8 : fft ? 0.1 : 0.05;
        double t = li.work / (eff * peak.gflops_all * 1e9) + li.bytes / 10e9;
        const double ms[3] = {li.ms_direct, li.ms_fft, li.ms_wino};
        const int chosen = fft ? 1 : wino ? 2 : 0;
        if (ms[chosen] > 0) /* the chosen algorithm's measured time, where the planner took one */
            t = ms[chosen] / 1e3;
        total += li.flops;
        total_s += t;
        for (int a = 0; a < 3 && ms[0] + ms[1] + ms[2] > 0; a++) {
            size_t used = strlen(meas);
            if (ms[a] > 0)
                snprintf(meas + used, sizeof meas - used, "%s%.3f", a ? "/" : "", ms[a]);
            else
                snprintf(meas + used, sizeof meas - used, "%s-", a ? "/" : "");
        }
        printf("%-12s %-10s %-8s %-8s %-20s %10.1f %9.2f %9.3f  %s\n", net->layers[i].name,
               vox_nn_kind_str(net->layers[i].kind), li.algo, source_str(li.source), shape,
               li.flops / 1e6, li.bytes / 1e6, t * 1e3, meas);
    }
    int64_t fov[3], off[3];
    vox_net_fov(net, d, fov, off);
    printf("total %.1f MFLOP, predicted %.1f ms per patch (peak %.0f GFLOP/s, %d threads), "
           "plan %.1f MiB; field of view %lldx%lldx%lld, output offset %lld,%lld,%lld\n",
           total / 1e6, total_s * 1e3, peak.gflops_all, peak.threads,
           (double)vox_nn_fast_bytes(f) / 1048576.0, (long long)fov[0], (long long)fov[1],
           (long long)fov[2], (long long)off[0], (long long)off[1], (long long)off[2]);
    if (tune) {
        int64_t measured, hits;
        const char *path;
        vox_nn_tune_stats(tune, &measured, &hits, &path);
        printf("plan cache: %lld layers measured, %lld from the cache (%s)\n", (long long)measured,
               (long long)hits, path[0] ? path : "off");
    }
}

struct state {
    struct vox_net *net;
    struct vox_nn_weights *w;
    struct vox_nn_fast *fast; /* --plan without --in */
    struct vox_nn_tune *tune; /* --conv auto */
    struct vox_nn_volume *vol;
    struct vox_volume *in[MAX_IO], *out[MAX_IO];
    struct vox_out_file *file[MAX_IO]; /* one per distinct output path */
    int n_file;
};

/* Sets the inputs' chunk caches and returns what the io may hold: per chunked input and per
 * output its cache and two chunks (a chunk decoded outside the cache, the filter's buffer). */
static enum vox_status io_budget(struct vox_ctx *ctx, const struct infer_opts *o, struct state *st,
                                 const int64_t vol[3], size_t *bytes_out)
{
    size_t cache = cache_bytes(o->mem), bytes = 0;
    for (int k = 0; k < o->n_in; k++) {
        size_t chunk = vox_volume_chunk_bytes(st->in[k]);
        enum vox_status s = vox_volume_set_cache(ctx, st->in[k], cache);
        if (s != VOX_OK)
            return s;
        bytes += chunk ? cache + 2 * chunk : 0;
    }
    bytes += (size_t)o->n_out * (cache + 2 * out_chunk_bytes(vol, o->dtype));
    *bytes_out = bytes;
    return VOX_OK;
}

/* Creates the output datasets, one file per distinct path. */
static enum vox_status open_outputs(struct vox_ctx *ctx, const struct infer_opts *o,
                                    struct state *st)
{
    char path[MAX_IO][1024], ds[1024];
    int fidx[MAX_IO];
    for (int k = 0; k < o->n_out; k++) {
        enum vox_status s =
            vox_volume_spec_split(ctx, o->out[k], path[k], sizeof path[k], ds, sizeof ds);
        int j = 0;
        while (s == VOX_OK && j < k && strcmp(path[j], path[k]) != 0)
            j++;
        if (s == VOX_OK && j == k) {
            fidx[k] = st->n_file;
            s = vox_out_open(ctx, path[k], &st->file[st->n_file++]);
        } else {
            fidx[k] = fidx[j];
        }
        int fi = fidx[k];
        struct vox_dataset_options opt = {.dtype = o->dtype, .rank = 4, .gzip = 0};
        vox_nn_volume_out_shape(st->vol, k, opt.shape);
        if (s == VOX_OK)
            s = vox_out_dataset(ctx, st->file[fi], ds, &opt, &st->out[k]);
        if (s == VOX_OK)
            s = vox_volume_set_cache(ctx, st->out[k], cache_bytes(o->mem));
        if (s != VOX_OK)
            return s;
    }
    return VOX_OK;
}

/* The resident set now, in KiB (-1 where unknown). */
static long resident_kib(void)
{
    int64_t b = vox_rss_bytes();
    return b < 0 ? -1 : (long)(b / 1024);
}

/* The peak resident set so far, in KiB (-1 where unknown). */
static long peak_rss_kib(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : -1;
}

/* --plan with --in: the layers, then the patch, the tiles and what --mem covers. */
static void print_volume_plan(struct vox_ctx *ctx, const struct vox_net *net,
                              const struct state *st, size_t io_bytes, long rss_kib, long peak_kib)
{
    const struct vox_nn_fast *f = vox_nn_volume_fast(st->vol);
    print_plan(ctx, net, f, st->tune);
    int64_t patch[3], out[3], tiles;
    vox_nn_volume_geometry(st->vol, patch, out, &tiles);
    size_t all = vox_nn_volume_bytes(st->vol), plan = vox_nn_fast_bytes(f);
    printf(
        "patch %lldx%lldx%lld, %lld tiles; --mem covers %.1f MiB: plan %.1f, staging and "
        "run %.1f, io %.1f MiB; before planning: RSS %ld KiB, peak RSS %ld KiB (--mem covers what "
        "comes after)\n",
        (long long)patch[0], (long long)patch[1], (long long)patch[2], (long long)tiles,
        (double)all / 1048576.0, (double)plan / 1048576.0,
        (double)(all - plan - io_bytes) / 1048576.0, (double)io_bytes / 1048576.0, rss_kib,
        peak_kib);
}

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
    if (o->conv == VOX_NN_CONV_AUTO && (s = vox_nn_tune_create(ctx, &st->tune)) != VOX_OK)
        return s;
    if (o->n_in == 0) {
        const struct vox_nn_fast_options fo = {.algo = o->conv, .tune = st->tune};
        if ((s = vox_nn_fast_create_opts(ctx, net, st->w, o->patch, &fo, &st->fast)) == VOX_OK)
            print_plan(ctx, net, st->fast, st->tune);
        return s;
    }
    int64_t vol[3];
    enum vox_dtype dtypes[MAX_IO];
    if ((s = open_inputs(ctx, o, net, st->in, dtypes, vol)) != VOX_OK)
        return s;
    struct vox_nn_volume_options vo = {.mem_bytes = (size_t)o->mem,
                                       .out_dtype = o->dtype,
                                       .quiet = o->common.quiet,
                                       .algo = o->conv,
                                       .tune = st->tune};
    if (o->patch_set)
        memcpy(vo.patch, o->patch, sizeof vo.patch);
    if ((s = io_budget(ctx, o, st, vol, &vo.io_bytes)) != VOX_OK)
        return s;
    long rss_kib = resident_kib(), peak_kib = peak_rss_kib(); /* before planning: not in --mem */
    vox_log(ctx, VOX_LOG_DEBUG, "infer: RSS before planning %ld KiB (peak %ld KiB)", rss_kib,
            peak_kib);
    if ((s = vox_nn_volume_plan(ctx, net, st->w, vol, dtypes, &vo, &st->vol)) != VOX_OK)
        return s;
    vox_log(ctx, VOX_LOG_DEBUG, "infer: RSS after planning %ld KiB", resident_kib());
    if (o->plan)
        print_volume_plan(ctx, net, st, vo.io_bytes, rss_kib, peak_kib);
    if (o->n_out == 0)
        return VOX_OK;
    if ((s = open_outputs(ctx, o, st)) != VOX_OK ||
        (s = vox_nn_volume_run(ctx, st->vol, st->in, st->out)) != VOX_OK)
        return s;
    vox_log(ctx, VOX_LOG_DEBUG,
            "infer: RSS after the run %ld KiB, peak %ld KiB, over the "
            "baseline %ld KiB (budget %lld KiB)",
            resident_kib(), peak_rss_kib(), peak_rss_kib() - rss_kib, (long long)(o->mem >> 10));
    for (int f = 0; f < st->n_file && s == VOX_OK; f++) {
        s = vox_out_commit(ctx, st->file[f]);
        st->file[f] = NULL;
    }
    return s;
}

static void summary(const struct infer_opts *o, struct state *st, double t0)
{
    int64_t patch[3], out[3], tiles, shape[4];
    vox_nn_volume_geometry(st->vol, patch, out, &tiles);
    vox_nn_volume_out_shape(st->vol, 0, shape);
    int64_t fov[3], off[3];
    const struct vox_nn_fast *f = vox_nn_volume_fast(st->vol);
    vox_net_fov(st->net, vox_nn_fast_dims(f), fov, off);
    double dt = vox_time_now() - t0;
    printf("wrote %s: %lldx%lldx%lldx%lld, offset %lld,%lld,%lld in the input, %lld patches of "
           "%lldx%lldx%lld, %.2f s, %.3g voxels/s\n",
           o->out[0], (long long)shape[0], (long long)shape[1], (long long)shape[2],
           (long long)shape[3], (long long)off[0], (long long)off[1], (long long)off[2],
           (long long)tiles, (long long)patch[0], (long long)patch[1], (long long)patch[2], dt,
           (double)(shape[1] * shape[2] * shape[3]) / dt);
}

int vox_cmd_infer(int argc, char **argv)
{
    struct infer_opts o = {.seed = 1, .mem = INT64_C(2) << 30, .dtype = VOX_F32};
    int r = parse(argc, argv, &o);
    if (r)
        return r < 0 ? 0 : r;
    struct vox_ctx *ctx = cli_ctx_create("infer", &o.common);
    if (!ctx)
        return 1;
    double t0 = vox_time_now();
    struct state st = {0};
    enum vox_status s = run(ctx, &o, &st);
    int rc = s == VOX_OK ? 0 : cli_fail("infer", ctx, s);
    if (rc == 0 && !o.common.quiet && o.n_out && st.vol)
        summary(&o, &st, t0);
    for (int k = 0; k < MAX_IO; k++) {
        vox_out_abort(st.file[k]);
        vox_volume_close(st.in[k]);
    }
    vox_nn_volume_destroy(st.vol);
    vox_nn_fast_destroy(st.fast);
    vox_nn_tune_destroy(st.tune);
    vox_nn_weights_destroy(st.w);
    vox_net_destroy(st.net);
    vox_ctx_destroy(ctx);
    return rc;
}
