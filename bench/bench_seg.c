/*
 * bench_seg.c: `vox bench seg-watershed`, `seg-rag`, `seg-linkage`, `seg-agglomerate` and
 * `seg-all`: the segmentation pipeline of vox/seg.h on synthetic affinities, stage by stage
 * and whole, with waterz as the peer of seg-all.
 *
 * Data: vox_synth_generate's true affinities of a volume of `shape` (default 256x256x256),
 * degraded with vox_synth_degrade(preset, seed) into uint8 ConvNet-like predictions. Each
 * stage problem times one stage on the outputs of the stages before it (computed once,
 * untimed). Parameters: shape=ZxYxX (or a bare ZxYxX), preset=smooth|noisy, seed=N,
 * threshold=T, size=N, dust=N, runs=N, threads=N.
 *
 * Settings: the stages use vox's defaults (low 0.01, high 0.99, size 200, dust 200, mean,
 * the whole history); seg-all uses waterz-equivalent ones by default: low 0.01, high 0.99, no
 * size merge and no dust (waterz's watershed has neither), mean score, agglomeration up to
 * threshold (default 0.5), then the cut into uint64 labels (waterz returns uint64 labels).
 * seg-all's bytes_per_voxel is the peak RSS of a forked child that loads the uint8 affinities
 * from a file and runs that pipeline with vox_segment_consume (the input is freed once the
 * region graph is built; input included, nothing subtracted). The peer runs
 * bench/peers/waterz_seg.py under bench/peers/venv/bin/python on the same affinities as
 * float32, when that interpreter exists; see docs/benchmarks.md.
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum seg_stage { STAGE_WATERSHED, STAGE_RAG, STAGE_LINKAGE, STAGE_AGGLOMERATE, STAGE_ALL };

struct seg_bench {
    int64_t shape[3];
    enum vox_synth_preset preset;
    uint64_t seed;
    double threshold;
    struct vox_seg_params p;
};

/* One "key=value" (or a bare ZxYxX) of the parameters. */
static enum vox_status parse_kv(struct vox_ctx *ctx, const char *kv, struct seg_bench *b)
{
    long long x, y, z;
    char tail;
    const char *v = strchr(kv, '=') ? strchr(kv, '=') + 1 : kv;
    if (!strncmp(kv, "runs=", 5) || !strncmp(kv, "threads=", 8))
        return VOX_OK; /* the driver's */
    if ((v == kv || !strncmp(kv, "shape=", 6))) {
        if (sscanf(v, "%lldx%lldx%lld%c", &z, &y, &x, &tail) != 3 || z < 1 || y < 1 || x < 1)
            return vox_fail(ctx, VOX_INVALID_ARG, "shape '%s': expected ZxYxX", v);
        b->shape[0] = z, b->shape[1] = y, b->shape[2] = x;
    } else if (!strncmp(kv, "preset=", 7)) {
        if (!vox_synth_preset_parse(v, &b->preset))
            return vox_fail(ctx, VOX_INVALID_ARG, "preset '%s': expected smooth or noisy", v);
    } else if (!strncmp(kv, "seed=", 5) || !strncmp(kv, "size=", 5) || !strncmp(kv, "dust=", 5)) {
        if (sscanf(v, "%lld%c", &x, &tail) != 1 || x < 0)
            return vox_fail(ctx, VOX_INVALID_ARG, "'%s': expected a whole number >= 0", kv);
        if (kv[1] == 'e')
            b->seed = (uint64_t)x;
        else if (kv[0] == 's')
            b->p.nsize = x > 0, b->p.size[0].size = x;
        else
            b->p.dust = x;
    } else if (!strncmp(kv, "threshold=", 10)) {
        if (sscanf(v, "%lf%c", &b->threshold, &tail) != 1 || !(b->threshold >= 0) ||
            b->threshold > 1)
            return vox_fail(ctx, VOX_INVALID_ARG, "threshold '%s': expected 0..1", v);
    } else {
        return vox_fail(ctx, VOX_INVALID_ARG, "unknown parameter '%s' (shape=, preset=, "
                        "seed=, threshold=, size=, dust=, runs=, threads=)", kv);
    }
    return VOX_OK;
}

static enum vox_status parse(struct vox_ctx *ctx, const char *raw, enum seg_stage stage,
                             struct seg_bench *b)
{
    *b = (struct seg_bench){.shape = {256, 256, 256}, .preset = VOX_SYNTH_SMOOTH, .seed = 1,
                            .threshold = 0.5};
    vox_seg_params_defaults(&b->p);
    if (stage == STAGE_ALL)
        b->p.nsize = 0, b->p.dust = 0; /* waterz's watershed: no size merge, no dust */
    char buf[512];
    snprintf(buf, sizeof buf, "%s", raw);
    enum vox_status s = VOX_OK;
    for (char *save = NULL, *kv = strtok_r(buf, ",", &save); kv && s == VOX_OK;
         kv = strtok_r(NULL, ",", &save))
        s = parse_kv(ctx, kv, b);
    if (stage == STAGE_ALL)
        b->p.max_threshold = b->threshold;
    return s;
}

/* The degraded uint8 affinities. */
static enum vox_status make_affinities(struct vox_ctx *ctx, const struct seg_bench *b,
                                       struct vox_tensor *q)
{
    struct vox_synth_params sp;
    vox_synth_defaults(&sp);
    memcpy(sp.shape, b->shape, sizeof sp.shape);
    sp.seed = b->seed;
    struct vox_tensor aff = {0};
    enum vox_status s = vox_synth_generate(ctx, &sp, NULL, NULL, &aff, NULL);
    if (s == VOX_OK)
        s = vox_synth_degrade(ctx, &aff, b->preset, b->seed, q);
    vox_tensor_free(ctx, &aff);
    return s;
}

/* The intermediate results of the stages, each computed from the one before. */
struct seg_data {
    struct vox_tensor q, labels;
    int64_t nbasins, nseg, *sizes;
    struct vox_rag g, gs;
    uint32_t *map;
};

static void data_fini(struct vox_ctx *ctx, struct seg_data *d)
{
    vox_tensor_free(ctx, &d->q);
    vox_tensor_free(ctx, &d->labels);
    vox_free(ctx, d->sizes);
    vox_free(ctx, d->map);
    vox_rag_fini(ctx, &d->g);
    vox_rag_fini(ctx, &d->gs);
}

/* Runs the stages before `stage`, untimed. */
static enum vox_status prepare(struct vox_ctx *ctx, const struct seg_bench *b,
                               enum seg_stage stage, struct seg_data *d)
{
    bool hist = b->p.score == VOX_SEG_SCORE_QUANTILE;
    int64_t *seg_sizes = NULL;
    enum vox_status s = make_affinities(ctx, b, &d->q);
    if (s == VOX_OK && stage > STAGE_WATERSHED && stage != STAGE_ALL)
        s = vox_seg_watershed(ctx, &d->q, &b->p, &d->labels, &d->nbasins, &d->sizes);
    if (s == VOX_OK && stage > STAGE_RAG && stage != STAGE_ALL)
        s = vox_rag_build(ctx, &d->labels, d->nbasins, &d->q, hist, &d->g);
    if (s == VOX_OK && stage > STAGE_LINKAGE && stage != STAGE_ALL) {
        s = vox_seg_single_linkage(ctx, &d->g, d->sizes, &b->p, &d->map, &d->nseg, &seg_sizes,
                                   NULL);
        s = s ? s : vox_rag_contract(ctx, &d->g, d->map, d->nseg, &d->gs);
    }
    vox_free(ctx, seg_sizes);
    return s;
}

/* One timed run of a stage (its outputs are freed again). */
static enum vox_status run_stage(struct vox_ctx *ctx, const struct seg_bench *b,
                                 enum seg_stage stage, struct seg_data *d, int64_t *count)
{
    enum vox_status s;
    struct vox_tensor lab = {0};
    int64_t *sizes = NULL, *seg_sizes = NULL, n = 0;
    uint32_t *map = NULL;
    struct vox_rag g = {0};
    struct vox_merge_history h = {0};
    if (stage == STAGE_WATERSHED) {
        s = vox_seg_watershed(ctx, &d->q, &b->p, &lab, &n, &sizes);
    } else if (stage == STAGE_RAG) {
        s = vox_rag_build(ctx, &d->labels, d->nbasins, &d->q,
                          b->p.score == VOX_SEG_SCORE_QUANTILE, &g);
        n = g.n;
    } else if (stage == STAGE_LINKAGE) {
        s = vox_seg_single_linkage(ctx, &d->g, d->sizes, &b->p, &map, &n, &seg_sizes, NULL);
        s = s ? s : vox_rag_contract(ctx, &d->g, map, n, &g);
    } else {
        s = vox_seg_agglomerate(ctx, &d->gs, &b->p, &h);
        n = h.n;
    }
    *count = n;
    vox_tensor_free(ctx, &lab);
    vox_free(ctx, sizes);
    vox_free(ctx, seg_sizes);
    vox_free(ctx, map);
    vox_rag_fini(ctx, &g);
    vox_merge_history_fini(ctx, &h);
    return s;
}

/* The whole pipeline as a real run does it: vox_segment, then the cut into uint64 labels.
 * With `consume`, vox_segment_consume frees q once the region graph is built. */
static enum vox_status run_all(struct vox_ctx *ctx, const struct seg_bench *b,
                               struct vox_tensor *q, bool consume, int64_t *segments)
{
    struct vox_seg_result r = {0};
    struct vox_tensor out = {0};
    enum vox_status s = consume ? vox_segment_consume(ctx, q, &b->p, &r)
                                : vox_segment(ctx, q, &b->p, &r);
    s = s ? s : vox_tensor_alloc(ctx, &out, VOX_U64, 3, r.labels.shape);
    s = s ? s : vox_merge_history_cut(ctx, &r.merges, &r.labels, b->threshold, &out, segments);
    vox_tensor_free(ctx, &out);
    vox_seg_result_fini(ctx, &r);
    return s;
}

struct child_arg {
    const struct seg_bench *b;
    const char *u8_path;
    int threads;
};

/* In the forked child: a fresh context (threads do not survive fork), the affinities read
 * from the file, the whole pipeline. */
static int child_all(void *arg)
{
    const struct child_arg *c = arg;
    struct vox_ctx *ctx;
    struct vox_ctx_options opt = {.threads = c->threads, .log_level = VOX_LOG_WARN};
    if (vox_ctx_create(&opt, &ctx) != VOX_OK)
        return 1;
    struct vox_tensor q = {0};
    int64_t segments;
    enum vox_status s = vox_volume_load(ctx, c->u8_path, &q, NULL);
    s = s ? s : run_all(ctx, c->b, &q, true, &segments);
    vox_tensor_free(ctx, &q);
    vox_ctx_destroy(ctx);
    return s == VOX_OK ? 0 : 1;
}

/* Writes q / 255 as float32 (3, Z, Y, X) .npy for the peer. */
static enum vox_status save_f32(struct vox_ctx *ctx, const struct vox_tensor *q,
                                const char *path)
{
    struct vox_tensor f = {0};
    enum vox_status s = vox_tensor_alloc(ctx, &f, VOX_F32, 4, q->shape);
    int64_t n = vox_tensor_numel(q);
    const uint8_t *src = q->data;
    for (int64_t i = 0; i < n && s == VOX_OK; i++)
        ((float *)f.data)[i] = (float)src[i] / 255.0f;
    s = s ? s : vox_volume_save(ctx, path, &f, NULL);
    vox_tensor_free(ctx, &f);
    return s;
}

/* Runs waterz_seg.py and fills the peer fields; a peer that fails is reported, not fatal. */
static void run_peer(const struct seg_bench *b, const char *f32_path, int runs, double voxels,
                     struct bench_result *res, char *extra, size_t len)
{
    char cmd[1024], line[4096] = "";
    snprintf(cmd, sizeof cmd, "bench/peers/venv/bin/python bench/peers/waterz_seg.py %s %.17g "
             "%.17g %.17g %d", f32_path, b->threshold, b->p.low / 255.0, b->p.high / 255.0,
             runs);
    FILE *pf = popen(cmd, "r");
    if (!pf)
        return;
    bool got = fgets(line, sizeof line, pf) != NULL;
    int rc = pclose(pf);
    char ver[64];
    double med, peak, inc;
    long long segs;
    const char *k[5] = {strstr(line, "\"version\": \""), strstr(line, "\"median_s\": "),
                        strstr(line, "\"segments\": "), strstr(line, "\"peak_rss_bytes\": "),
                        strstr(line, "\"rss_increase_bytes\": ")};
    if (!got || rc != 0 || !k[0] || !k[1] || !k[2] || !k[3] || !k[4] ||
        sscanf(k[0] + 12, "%63[^\"]", ver) != 1 || sscanf(k[1] + 12, "%lf", &med) != 1 ||
        sscanf(k[2] + 12, "%lld", &segs) != 1 || sscanf(k[3] + 18, "%lf", &peak) != 1 ||
        sscanf(k[4] + 22, "%lf", &inc) != 1) {
        fprintf(stderr, "vox bench: seg-all: the waterz peer failed (%s)\n", cmd);
        return;
    }
    res->peer = "waterz";
    snprintf(res->peer_version, sizeof res->peer_version, "%s", ver);
    res->peer_median_s = med;
    size_t used = strlen(extra);
    snprintf(extra + used, len - used, ",\"peer_segments\":%lld,\"peer_bytes_per_voxel\":%.3f,"
             "\"peer_rss_increase_bytes_per_voxel\":%.3f", segs, peak / voxels, inc / voxels);
}

static enum vox_status bench_all(struct bench_env *env, const struct bench_params *bp,
                                 const struct seg_bench *b, struct bench_result *res)
{
    struct vox_ctx *ctx = env->ctx;
    char u8[128], f32[128];
    snprintf(u8, sizeof u8, "/tmp/vox-bench-seg-%d-u8.npy", (int)getpid());
    snprintf(f32, sizeof f32, "/tmp/vox-bench-seg-%d-f32.npy", (int)getpid());
    bool peer = access("bench/peers/venv/bin/python", X_OK) == 0 &&
                access("bench/peers/waterz_seg.py", R_OK) == 0;
    struct vox_tensor q = {0};
    int64_t segments = 0;
    enum vox_status s = make_affinities(ctx, b, &q);
    s = s ? s : vox_volume_save(ctx, u8, &q, NULL);
    if (s == VOX_OK && peer)
        s = save_f32(ctx, &q, f32);
    vox_tensor_free(ctx, &q); /* the child reads what it needs; the parent holds little */
    struct child_arg c = {b, u8, vox_ctx_threads(ctx)};
    if (s == VOX_OK)
        res->peak_rss_bytes = bench_child_peak_rss(ctx, child_all, &c);
    s = s ? s : vox_volume_load(ctx, u8, &q, NULL);
    for (int i = 0; i < bp->runs && s == VOX_OK; i++) {
        vox_ctx_trim(ctx); /* as a process of its own would start: no blocks kept from the last */
        double t0 = vox_time_now();
        s = run_all(ctx, b, &q, false, &segments);
        res->times[i] = vox_time_now() - t0;
    }
    res->runs = bp->runs;
    res->voxels = (double)b->shape[0] * (double)b->shape[1] * (double)b->shape[2];
    snprintf(res->extra, sizeof res->extra, "\"segments\":%lld", (long long)segments);
    vox_tensor_free(ctx, &q);
    unlink(u8);
    if (s == VOX_OK && peer)
        run_peer(b, f32, bp->runs, res->voxels, res, res->extra, sizeof res->extra);
    unlink(f32);
    return s;
}

static const char *const count_key[] = {"basins", "edges", "segments", "merges"};

static enum vox_status bench_seg(struct bench_env *env, const struct bench_params *bp,
                                 struct bench_result *res, enum seg_stage stage)
{
    struct vox_ctx *ctx = env->ctx;
    struct seg_bench b;
    enum vox_status s = parse(ctx, bp->raw, stage, &b);
    s = s ? s : vox_seg_params_check(ctx, &b.p);
    if (s != VOX_OK)
        return s;
    if (stage == STAGE_ALL) {
        s = bench_all(env, bp, &b, res);
    } else {
        struct seg_data d = {0};
        int64_t count = 0;
        s = prepare(ctx, &b, stage, &d);
        for (int i = 0; i < bp->runs && s == VOX_OK; i++) {
            double t0 = vox_time_now();
            s = run_stage(ctx, &b, stage, &d, &count);
            res->times[i] = vox_time_now() - t0;
        }
        data_fini(ctx, &d);
        res->runs = bp->runs;
        res->voxels = (double)b.shape[0] * (double)b.shape[1] * (double)b.shape[2];
        snprintf(res->extra, sizeof res->extra, "\"%s\":%lld", count_key[stage],
                 (long long)count);
    }
    if (s != VOX_OK)
        return s;
    double med = bench_median(res->times, res->runs);
    size_t used = strlen(res->extra);
    snprintf(res->extra + used, sizeof res->extra - used,
             ",\"mvox_s_per_core\":%.3f,\"preset\":\"%s\",\"size\":%lld,\"dust\":%lld",
             res->voxels / med * 1e-6 / vox_ctx_threads(ctx), vox_synth_preset_str(b.preset),
             b.p.nsize ? (long long)b.p.size[0].size : 0LL, (long long)b.p.dust);
    if (stage == STAGE_ALL) {
        used = strlen(res->extra);
        snprintf(res->extra + used, sizeof res->extra - used, ",\"threshold\":%g", b.threshold);
    }
    return VOX_OK;
}

#define SEG_PROBLEM(sym, name, stage, runs, what)                                              \
    static enum vox_status run_##sym(struct bench_env *env, const struct bench_params *p,     \
                                     struct bench_result *res)                                \
    {                                                                                          \
        return bench_seg(env, p, res, stage);                                                  \
    }                                                                                          \
    const struct bench_problem sym = {name, what, runs, run_##sym};

#define SEG_PARAMS "shape=ZxYxX (256^3), preset=smooth|noisy, seed, size, dust: "
SEG_PROBLEM(bench_seg_watershed, "seg-watershed", STAGE_WATERSHED, 3,
            SEG_PARAMS "the watershed of uint8 affinities")
SEG_PROBLEM(bench_seg_rag, "seg-rag", STAGE_RAG, 3, SEG_PARAMS "the basin region graph")
SEG_PROBLEM(bench_seg_linkage, "seg-linkage", STAGE_LINKAGE, 3,
            SEG_PARAMS "size-dependent single linkage, dust, graph contraction")
SEG_PROBLEM(bench_seg_agglomerate, "seg-agglomerate", STAGE_AGGLOMERATE, 3,
            SEG_PARAMS "mean agglomeration of the base segments (the whole history)")
SEG_PROBLEM(bench_seg_all, "seg-all", STAGE_ALL, 3,
            SEG_PARAMS "threshold=T (0.5): the pipeline with waterz's settings, peer waterz")
