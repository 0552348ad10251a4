/*
 * bench_dist.c: `vox bench dist-segment`: the chunked segmentation (vox_dist_segment) of a
 * volume on disk against the whole-volume run (vox_segment) in the same invocation.
 *
 * Data: vox_synth_generate's true affinities of a volume of `shape` (default 512x512x512),
 * degraded with vox_synth_degrade(preset, seed) into uint8 predictions and written once to a
 * .npy file. The chunked run reads that file box by box (a volume source) and hands its labels
 * to a sink that only hashes them; the whole run loads the file and runs vox_segment. Both
 * times include the reading of the input. The sink is concurrent (its hash is a sum): the
 * boxes are hashed on every thread, as a user's thread-safe sink would take them.
 * Parameters: shape=ZxYxX, chunk=ZxYxX (default 128x128x128), preset=smooth|noisy, seed=N,
 * runs=N, threads=N; vox's default settings.
 *
 * Keys: median_s etc. are the chunked run's; whole_median_s, ratio_to_whole (whole time /
 * chunked time: the chunked throughput as a share of the whole run's); bytes_per_voxel and
 * whole_bytes_per_voxel, the peak RSS of a forked child doing one run each (input included);
 * equal (the chunked labels and merges are those of the whole run: a hash of every chunk box
 * and the merge count); frozen_ws, frozen_sm, frozen_ag: per octree level, the items each
 * stage carried up (face + plateau voxels, frozen basins, vertices).
 */
#include "bench.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct dist_bench {
    int64_t shape[3], chunk[3];
    enum vox_synth_preset preset;
    uint64_t seed;
    struct vox_seg_params p;
};

static enum vox_status parse_shape(struct vox_ctx *ctx, const char *kv, int64_t out[3])
{
    long long x, y, z;
    char tail;
    const char *v = strchr(kv, '=') + 1;
    if (sscanf(v, "%lldx%lldx%lld%c", &z, &y, &x, &tail) != 3 || z < 1 || y < 1 || x < 1)
        return vox_fail(ctx, VOX_INVALID_ARG, "'%s': expected ZxYxX", kv);
    out[0] = z, out[1] = y, out[2] = x;
    return VOX_OK;
}

static enum vox_status parse(struct vox_ctx *ctx, const char *raw, struct dist_bench *b)
{
    *b = (struct dist_bench){
        .shape = {512, 512, 512}, .chunk = {128, 128, 128}, .preset = VOX_SYNTH_SMOOTH, .seed = 1};
    vox_seg_params_defaults(&b->p);
    char buf[512];
    snprintf(buf, sizeof buf, "%s", raw);
    enum vox_status s = VOX_OK;
    for (char *save = NULL, *kv = strtok_r(buf, ",", &save); kv && s == VOX_OK;
         kv = strtok_r(NULL, ",", &save)) {
        long long x;
        char tail;
        if (!strncmp(kv, "runs=", 5) || !strncmp(kv, "threads=", 8))
            continue;
        if (!strncmp(kv, "shape=", 6))
            s = parse_shape(ctx, kv, b->shape);
        else if (!strncmp(kv, "chunk=", 6))
            s = parse_shape(ctx, kv, b->chunk);
        else if (!strncmp(kv, "preset=", 7) && vox_synth_preset_parse(kv + 7, &b->preset))
            continue;
        else if (!strncmp(kv, "seed=", 5) && sscanf(kv + 5, "%lld%c", &x, &tail) == 1 && x >= 0)
            b->seed = (uint64_t)x;
        else
            s = vox_fail(ctx, VOX_INVALID_ARG,
                         "bad or unknown parameter '%s' (shape=, chunk=, "
                         "preset=smooth|noisy, seed=, runs=, threads=)",
                         kv);
    }
    return s;
}

/* Order-free hash of labels: the sum over chunk boxes of a hash of (box origin, content). */
static uint64_t box_hash(const int64_t lo[3], const uint32_t *l, int64_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (int a = 0; a < 3; a++)
        h = (h ^ (uint64_t)lo[a]) * 1099511628211ull;
    for (int64_t i = 0; i < n; i++)
        h = (h ^ l[i]) * 1099511628211ull;
    return h;
}

struct hash_sink {
    uint64_t h;
};

static enum vox_status sink_ready(void *arg, const struct vox_seg_result *res)
{
    (void)arg, (void)res;
    return VOX_OK;
}

static enum vox_status sink_write(void *arg, const int64_t lo[3], const struct vox_tensor *t)
{
    struct hash_sink *k = arg; /* a concurrent sink: boxes arrive on every thread */
    __atomic_add_fetch(&k->h, box_hash(lo, t->data, vox_tensor_numel(t)), __ATOMIC_RELAXED);
    return VOX_OK;
}

/* The same hash over the whole labels, box by box. */
static enum vox_status whole_hash(struct vox_ctx *ctx, const struct vox_tensor *lab,
                                  const int64_t chunk[3], uint64_t *h_out)
{
    const int64_t *d = lab->shape;
    int64_t c[3], lo[3];
    for (int a = 0; a < 3; a++)
        c[a] = chunk[a] < d[a] ? chunk[a] : d[a];
    uint32_t *box = vox_alloc(ctx, (size_t)(c[0] * c[1] * c[2]) * sizeof *box);
    if (!box)
        return VOX_OUT_OF_MEMORY;
    const uint32_t *l = lab->data;
    uint64_t h = 0;
    for (lo[0] = 0; lo[0] < d[0]; lo[0] += c[0])
        for (lo[1] = 0; lo[1] < d[1]; lo[1] += c[1])
            for (lo[2] = 0; lo[2] < d[2]; lo[2] += c[2]) {
                int64_t n[3], k = 0;
                for (int a = 0; a < 3; a++)
                    n[a] = lo[a] + c[a] < d[a] ? c[a] : d[a] - lo[a];
                for (int64_t z = 0; z < n[0]; z++)
                    for (int64_t y = 0; y < n[1]; y++, k += n[2])
                        memcpy(box + k, l + ((lo[0] + z) * d[1] + lo[1] + y) * d[2] + lo[2],
                               (size_t)n[2] * sizeof *box);
                h += box_hash(lo, box, k);
            }
    vox_free(ctx, box);
    *h_out = h;
    return VOX_OK;
}

struct run_out {
    uint64_t hash;
    int64_t merges;
    struct vox_dist_stats stats;
};

static enum vox_status run_whole(struct vox_ctx *ctx, const struct dist_bench *b, const char *path,
                                 struct run_out *o)
{
    struct vox_tensor q = {0};
    struct vox_seg_result r = {0};
    enum vox_status s = vox_volume_load(ctx, path, &q, NULL);
    s = s ? s : vox_segment(ctx, &q, &b->p, &r);
    vox_tensor_free(ctx, &q);
    if (s == VOX_OK && o) {
        o->merges = r.merges.n;
        s = whole_hash(ctx, &r.labels, b->chunk, &o->hash);
    }
    vox_seg_result_fini(ctx, &r);
    return s;
}

static enum vox_status run_chunked(struct vox_ctx *ctx, const struct dist_bench *b,
                                   const char *path, struct run_out *o)
{
    struct vox_volume *vol = NULL;
    struct hash_sink hs = {0};
    struct vox_dist_sink sink = {sink_ready, sink_write, &hs, true};
    struct vox_dist_options opt = {.sink = &sink, .stats = o ? &o->stats : NULL};
    memcpy(opt.chunk, b->chunk, sizeof opt.chunk);
    struct vox_dist_source src = {.vol = NULL};
    struct vox_seg_result r = {0};
    enum vox_status s = vox_volume_open(ctx, path, &vol);
    src.vol = vol;
    s = s ? s : vox_dist_segment(ctx, &src, &b->p, &opt, &r);
    vox_volume_close(vol);
    if (s == VOX_OK && o) {
        o->merges = r.merges.n;
        o->hash = hs.h;
    }
    vox_seg_result_fini(ctx, &r);
    return s;
}

struct child_arg {
    const struct dist_bench *b;
    const char *path;
    int threads;
    bool chunked;
};

/* In the forked child: a fresh context, one run. */
static int child_run(void *arg)
{
    const struct child_arg *c = arg;
    struct vox_ctx *ctx;
    struct vox_ctx_options opt = {.threads = c->threads, .log_level = VOX_LOG_WARN};
    if (vox_ctx_create(&opt, &ctx) != VOX_OK)
        return 1;
    enum vox_status s =
        c->chunked ? run_chunked(ctx, c->b, c->path, NULL) : run_whole(ctx, c->b, c->path, NULL);
    vox_ctx_destroy(ctx);
    return s == VOX_OK ? 0 : 1;
}

static enum vox_status write_input(struct vox_ctx *ctx, const struct dist_bench *b,
                                   const char *path)
{
    struct vox_synth_params sp;
    vox_synth_defaults(&sp);
    memcpy(sp.shape, b->shape, sizeof sp.shape);
    sp.seed = b->seed;
    struct vox_tensor aff = {0}, q = {0};
    enum vox_status s = vox_synth_generate(ctx, &sp, NULL, NULL, &aff, NULL);
    s = s ? s : vox_synth_degrade(ctx, &aff, b->preset, b->seed, &q);
    vox_tensor_free(ctx, &aff);
    s = s ? s : vox_volume_save(ctx, path, &q, NULL);
    vox_tensor_free(ctx, &q);
    return s;
}

/* "key":[n0,n1,...] of the frozen counts of one stage's levels. */
static void frozen_key(char *dst, size_t len, const char *key, const struct vox_dist_stats *st,
                       enum vox_dist_stage stage)
{
    size_t u = strlen(dst);
    u += (size_t)snprintf(dst + u, len - u, ",\"%s\":[", key);
    const char *sep = "";
    for (int i = 0; i < st->n && u < len; i++)
        if (st->lv[i].stage == stage) {
            u += (size_t)snprintf(dst + u, len - u, "%s%lld", sep, (long long)st->lv[i].frozen);
            sep = ",";
        }
    if (u < len)
        snprintf(dst + u, len - u, "]");
}

static enum vox_status timed(struct vox_ctx *ctx, const struct dist_bench *b, const char *path,
                             int runs, bool chunked, double *times, struct run_out *o)
{
    enum vox_status s = VOX_OK;
    for (int i = 0; i < runs && s == VOX_OK; i++) {
        double t0 = vox_time_now();
        memset(o, 0, sizeof *o);
        s = chunked ? run_chunked(ctx, b, path, o) : run_whole(ctx, b, path, o);
        times[i] = vox_time_now() - t0;
    }
    return s;
}

static enum vox_status run_dist(struct bench_env *env, const struct bench_params *bp,
                                struct bench_result *res)
{
    struct vox_ctx *ctx = env->ctx;
    struct dist_bench b;
    enum vox_status s = parse(ctx, bp->raw, &b);
    s = s ? s : vox_seg_params_check(ctx, &b.p);
    if (s != VOX_OK)
        return s;
    char path[128];
    snprintf(path, sizeof path, "/tmp/vox-bench-dist-%d-u8.npy", (int)getpid());
    s = write_input(ctx, &b, path);
    struct child_arg cw = {&b, path, vox_ctx_threads(ctx), false}, cc = cw;
    cc.chunked = true;
    double whole_peak = -1, wt[64];
    struct run_out ow, oc;
    if (s == VOX_OK) {
        whole_peak = bench_child_peak_rss(child_run, &cw);
        res->peak_rss_bytes = bench_child_peak_rss(child_run, &cc);
    }
    if (s == VOX_OK)
        s = timed(ctx, &b, path, bp->runs, false, wt, &ow);
    if (s == VOX_OK)
        s = timed(ctx, &b, path, bp->runs, true, res->times, &oc);
    unlink(path);
    if (s != VOX_OK)
        return s;
    res->runs = bp->runs;
    res->voxels = (double)b.shape[0] * (double)b.shape[1] * (double)b.shape[2];
    double wmed = bench_median(wt, bp->runs), cmed = bench_median(res->times, bp->runs);
    snprintf(res->extra, sizeof res->extra,
             "\"chunk\":\"%lldx%lldx%lld\",\"whole_median_s\":%.4f,\"ratio_to_whole\":%.3f,"
             "\"whole_bytes_per_voxel\":%.3f,\"equal\":%s,\"merges\":%lld",
             (long long)b.chunk[0], (long long)b.chunk[1], (long long)b.chunk[2], wmed, wmed / cmed,
             whole_peak / res->voxels,
             ow.hash == oc.hash && ow.merges == oc.merges ? "true" : "false", (long long)oc.merges);
    frozen_key(res->extra, sizeof res->extra, "frozen_ws", &oc.stats, VOX_DIST_WATERSHED);
    frozen_key(res->extra, sizeof res->extra, "frozen_sm", &oc.stats, VOX_DIST_SIZE_MERGE);
    frozen_key(res->extra, sizeof res->extra, "frozen_ag", &oc.stats, VOX_DIST_AGGLOMERATE);
    return VOX_OK;
}

const struct bench_problem bench_dist_segment = {
    "dist-segment",
    "shape=ZxYxX (512^3), chunk=ZxYxX (128^3), preset, seed: chunked segmentation of a .npy "
    "volume vs the whole-volume run (time, peak memory, equality, frozen sets per level)",
    1, run_dist};
