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
 * runs=N, threads=N, ranks=N; vox's default settings.
 *
 * With ranks=N (N >= 2) the same chunked segmentation also runs as `mpirun -np N vox-mpi
 * segment --chunk ... --threads 1` and as `mpirun -np 1 vox-mpi segment ... --threads 1` (the
 * command line's reading and HDF5 writing included in both, so their ratio is the ranks'
 * scaling): mpi_median_s, mpi_1rank_median_s, mpi_scaling (1-rank time / N-rank time),
 * mpi_bytes_per_voxel (the largest process's peak RSS, over the volume's voxels) and mpi_equal
 * (the two runs' label datasets are bitwise equal). vox-mpi is looked up next to this
 * executable (it is built where Open MPI is installed).
 *
 * The whole and the chunked runs alternate (whole, chunked, whole, ...); with threads=N >= 2 a
 * chunked run on one thread goes with each pair (after the N-thread one, and every other
 * round before it, so an odd `runs` gets one round more; one_thread_median_s, thread_scaling = its
 * median / the N-thread chunked median, one_thread_equal: the same labels and merges), so
 * the threads' scaling comes from one window of a machine whose speed drifts.
 * Keys: median_s etc. are the chunked run's; whole_median_s, ratio_to_whole (whole time /
 * chunked time: the chunked throughput as a share of the whole run's); bytes_per_voxel and
 * whole_bytes_per_voxel, the peak RSS of a forked child doing one run each (input included);
 * equal (the chunked labels and merges are those of the whole run: a hash of every chunk box
 * and the merge count); frozen_ws, frozen_sm, frozen_ag: per octree level, the items each
 * stage carried up (face + plateau voxels, frozen basins, vertices); seconds_ws, seconds_sm,
 * seconds_ag: each level's time.
 */
#include "bench.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

struct dist_bench {
    int64_t shape[3], chunk[3];
    enum vox_synth_preset preset;
    uint64_t seed;
    int ranks;
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
        else if (!strncmp(kv, "ranks=", 6) && sscanf(kv + 6, "%lld%c", &x, &tail) == 1 && x >= 2 &&
                 x <= 64)
            b->ranks = (int)x;
        else
            s = vox_fail(ctx, VOX_INVALID_ARG,
                         "bad or unknown parameter '%s' (shape=, chunk=, "
                         "preset=smooth|noisy, seed=, runs=, threads=, ranks=2..64)",
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
    struct vox_dist_sink sink = {
        .ready = sink_ready, .write = sink_write, .arg = &hs, .concurrent = true};
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

/* "key":[n0,n1,...] of the frozen counts (seconds: the times) of one stage's levels. */
static void level_key(char *dst, size_t len, const char *key, const struct vox_dist_stats *st,
                      enum vox_dist_stage stage, bool seconds)
{
    size_t u = strlen(dst);
    u += (size_t)snprintf(dst + u, len - u, ",\"%s\":[", key);
    const char *sep = "";
    for (int i = 0; i < st->n && u < len; i++)
        if (st->lv[i].stage == stage) {
            if (seconds)
                u += (size_t)snprintf(dst + u, len - u, "%s%.3f", sep, st->lv[i].seconds);
            else
                u += (size_t)snprintf(dst + u, len - u, "%s%lld", sep, (long long)st->lv[i].frozen);
            sep = ",";
        }
    if (u < len)
        snprintf(dst + u, len - u, "]");
}

/* The vox-mpi executable next to this one, in path (false: none). */
static bool find_vox_mpi(char *path, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", path, len - 16);
    if (n <= 0)
        return false;
    path[n] = 0;
    char *slash = strrchr(path, '/');
    if (!slash)
        return false;
    strcpy(slash + 1, "vox-mpi");
    return access(path, X_OK) == 0;
}

/* Runs `mpirun -np ranks vox-mpi segment ...` on in, writing out:/seg; its wall time and the
 * largest process's peak RSS in bytes (wait4's figure for mpirun covers its waited-for
 * ranks; getrusage(RUSAGE_CHILDREN) would also count this process's earlier children). */
static enum vox_status run_mpi(struct vox_ctx *ctx, const struct dist_bench *b, const char *mpi,
                               const char *in, const char *out, int ranks, double *sec,
                               double *peak)
{
    char np[16], chunk[64], outspec[128];
    snprintf(np, sizeof np, "%d", ranks);
    snprintf(chunk, sizeof chunk, "%lld,%lld,%lld", (long long)b->chunk[0], (long long)b->chunk[1],
             (long long)b->chunk[2]);
    snprintf(outspec, sizeof outspec, "%.96s:/seg", out);
    char *const argv[] = {"mpirun",
                          "--allow-run-as-root",
                          "--oversubscribe",
                          "-np",
                          np,
                          (char *)mpi,
                          "segment",
                          "--aff",
                          (char *)in,
                          "--chunk",
                          chunk,
                          "--threads",
                          "1",
                          "--quiet",
                          "--out",
                          outspec,
                          NULL};
    double t0 = vox_time_now();
    pid_t pid = fork();
    if (pid == 0) {
        execvp("mpirun", argv);
        _exit(127);
    }
    int st = 0;
    struct rusage ru;
    if (pid < 0 || wait4(pid, &st, 0, &ru) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return vox_fail(ctx, VOX_IO,
                        "dist-segment: 'mpirun -np %d %s segment ...' failed "
                        "(is Open MPI's mpirun installed?)",
                        ranks, mpi);
    *sec = vox_time_now() - t0;
    *peak = (double)ru.ru_maxrss * 1024.0; /* wait4: the largest of mpirun and its ranks */
    return VOX_OK;
}

/* The N-rank and 1-rank MPI runs (see the file comment), appended to extra. */
static enum vox_status mpi_keys(struct vox_ctx *ctx, const struct dist_bench *b, const char *in,
                                int runs, char *extra, size_t len)
{
    char mpi[512], out[2][96];
    if (!find_vox_mpi(mpi, sizeof mpi))
        return vox_fail(ctx, VOX_UNSUPPORTED,
                        "dist-segment ranks=%d: no vox-mpi next to this "
                        "vox (it is built where Open MPI is installed)",
                        b->ranks);
    double t[2][64], peak = 0, pk = 0;
    enum vox_status s = VOX_OK;
    for (int k = 0; k < 2; k++) {
        snprintf(out[k], sizeof out[k], "/tmp/vox-bench-dist-%d-mpi%d.h5", (int)getpid(), k);
        for (int i = 0; i < runs && s == VOX_OK; i++) {
            s = run_mpi(ctx, b, mpi, in, out[k], k == 0 ? b->ranks : 1, &t[k][i], &pk);
            peak = k == 0 && pk > peak ? pk : peak;
        }
    }
    struct vox_tensor l[2] = {{0}, {0}};
    char spec[2][128];
    for (int k = 0; k < 2 && s == VOX_OK; k++) {
        snprintf(spec[k], sizeof spec[k], "%.96s:/seg", out[k]);
        s = vox_volume_load(ctx, spec[k], &l[k], NULL);
    }
    bool equal = s == VOX_OK && vox_tensor_nbytes(&l[0]) == vox_tensor_nbytes(&l[1]) &&
                 memcmp(l[0].data, l[1].data, vox_tensor_nbytes(&l[0])) == 0;
    for (int k = 0; k < 2; k++) {
        vox_tensor_free(ctx, &l[k]);
        unlink(out[k]);
    }
    if (s != VOX_OK)
        return s;
    double n = bench_median(t[0], runs), one = bench_median(t[1], runs);
    double vox = (double)b->shape[0] * (double)b->shape[1] * (double)b->shape[2];
    size_t u = strlen(extra);
    snprintf(extra + u, len - u,
             ",\"mpi_ranks\":%d,\"mpi_median_s\":%.4f,\"mpi_1rank_median_s\":%.4f,"
             "\"mpi_scaling\":%.3f,\"mpi_bytes_per_voxel\":%.3f,\"mpi_equal\":%s",
             b->ranks, n, one, one / n, peak / vox, equal ? "true" : "false");
    return VOX_OK;
}

/* The whole and the chunked run alternately, runs times each (a machine whose speed drifts
 * over the invocation then moves both medians alike, not their ratio); with ctx1 (a context
 * of one thread) a one-thread chunked run after each pair too, into one (its labels checked
 * against the others': one->hash). */
static enum vox_status timed(struct vox_ctx *ctx, struct vox_ctx *ctx1, const struct dist_bench *b,
                             const char *path, int runs, double *whole, double *chunked,
                             double *one, struct run_out *ow, struct run_out *oc,
                             struct run_out *o1)
{
    enum vox_status s = VOX_OK;
    const int per = ctx1 ? 3 : 2;
    for (int i = 0; i < per * runs && s == VOX_OK; i++) {
        /* 0 whole, 1 chunked, 2 chunked on one thread; every other round the one-thread run
         * first, so that what a run pays for the memory and files the run before it freed
         * (fresh pages cost on these VMs) falls on both chunked runs alike */
        const int k = per == 3 && i / per % 2 && i % per ? 3 - i % per : i % per;
        struct run_out *o = k == 0 ? ow : k == 1 ? oc : o1;
        /* each run as a process of its own would start: no freed blocks kept from the last */
        vox_ctx_trim(ctx);
        vox_ctx_trim(ctx1);
        double t0 = vox_time_now();
        memset(o, 0, sizeof *o);
        s = k == 0 ? run_whole(ctx, b, path, o) : run_chunked(k == 2 ? ctx1 : ctx, b, path, o);
        (k == 0 ? whole : k == 1 ? chunked : one)[i / per] = vox_time_now() - t0;
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
    double whole_peak = -1, wt[64], t1[64];
    struct run_out ow, oc, o1;
    if (s == VOX_OK) {
        whole_peak = bench_child_peak_rss(ctx, child_run, &cw);
        res->peak_rss_bytes = bench_child_peak_rss(ctx, child_run, &cc);
    }
    /* with several threads, the one-thread chunked run interleaved: the threads' scaling
     * measured in one window of the machine's speed */
    struct vox_ctx *ctx1 = NULL;
    struct vox_ctx_options o1opt = {.threads = 1, .log_level = VOX_LOG_WARN};
    if (s == VOX_OK && vox_ctx_threads(ctx) > 1)
        s = vox_ctx_create(&o1opt, &ctx1);
    /* an even number of rounds with the one-thread run: each chunked run then follows the
     * whole run in half of them (at 256^3 chunks, two threads right after the whole run took
     * 6 % longer, one thread no longer; with 5 rounds three of the two-thread runs did) */
    const int rounds = ctx1 && bp->runs % 2 ? bp->runs + 1 : bp->runs;
    if (s == VOX_OK)
        s = timed(ctx, ctx1, &b, path, rounds, wt, res->times, t1, &ow, &oc, &o1);
    if (s != VOX_OK) {
        vox_ctx_destroy(ctx1);
        unlink(path);
        return s;
    }
    res->runs = rounds;
    res->voxels = (double)b.shape[0] * (double)b.shape[1] * (double)b.shape[2];
    double wmed = bench_median(wt, rounds), cmed = bench_median(res->times, rounds);
    snprintf(res->extra, sizeof res->extra,
             "\"chunk\":\"%lldx%lldx%lld\",\"whole_median_s\":%.4f,\"ratio_to_whole\":%.3f,"
             "\"whole_bytes_per_voxel\":%.3f,\"equal\":%s,\"merges\":%lld",
             (long long)b.chunk[0], (long long)b.chunk[1], (long long)b.chunk[2], wmed, wmed / cmed,
             whole_peak / res->voxels,
             ow.hash == oc.hash && ow.merges == oc.merges ? "true" : "false", (long long)oc.merges);
    if (ctx1) {
        const double m1 = bench_median(t1, rounds);
        size_t used = strlen(res->extra);
        snprintf(res->extra + used, sizeof res->extra - used,
                 ",\"one_thread_median_s\":%.4f,\"thread_scaling\":%.3f,\"one_thread_equal\":%s",
                 m1, m1 / cmed, o1.hash == oc.hash && o1.merges == oc.merges ? "true" : "false");
        vox_ctx_destroy(ctx1);
    }
    static const char *const keys[3][2] = {
        {"frozen_ws", "seconds_ws"}, {"frozen_sm", "seconds_sm"}, {"frozen_ag", "seconds_ag"}};
    for (int k = 0; k < 3; k++)
        for (int t = 0; t < 2; t++)
            level_key(res->extra, sizeof res->extra, keys[k][t], &oc.stats,
                      (enum vox_dist_stage)(VOX_DIST_WATERSHED + k), t == 1);
    if (b.ranks >= 2)
        s = mpi_keys(ctx, &b, path, bp->runs, res->extra, sizeof res->extra);
    unlink(path);
    return s;
}

const struct bench_problem bench_dist_segment = {
    "dist-segment",
    "shape=ZxYxX (512^3), chunk=ZxYxX (128^3), preset, seed: chunked segmentation of a .npy "
    "volume vs the whole-volume run (time, peak memory, equality, frozen sets per level); "
    "ranks=N: also by N MPI ranks against 1 (mpirun, vox-mpi)",
    1, run_dist};
