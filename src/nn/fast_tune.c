/*
 * fast_tune.c: the quick measurement that checks the planner's cost model for a convolution
 * (direct JIT nest, FFT or Winograd), and the cache of its results in memory and on disk.
 *
 * Key idea (FFTW's planner, ZNNi's per-layer choice, reference note znn.md 2.5/7.2, made
 * cheap): the closed-form model in fast.c is trusted where its best time lies more than 2x
 * below the others; in between it is too coarse (memory-bound spectrum products, transforms,
 * cache effects), so the algorithms within 2x of the best run on the layer's real shape cut to a
 * slab (the output extent along z, then y,
 * halved until the direct nest's flops are under SLAB_FLOPS): one warm-up run, then the best
 * of up to RUNS runs, fewer when a run is slow. Each slab time is scaled to the whole layer by
 * that algorithm's own model (t_layer = t_slab * model(layer) / model(slab)), which corrects
 * for the FFT's overlap on a thin slab. The data are synthetic: timing does not depend on it.
 *
 * Cache: entries keyed by "cpu model|ISA|threads|n,cin,cout,bin,b|kernel|padded input|output|
 * dilation|padding" with the three scaled times in ms (0: not measured). A tune object loads
 * the text file $XDG_CACHE_HOME/vox/plan-cache.txt (else ~/.cache/vox/plan-cache.txt) once,
 * answers from memory, and rewrites the file (temporary name, then rename) after each new
 * measurement. VOX_PLAN_CACHE=off keeps entries in memory only. A file that cannot be read,
 * parsed or written is ignored with a debug log line: the cache only saves time, it never
 * fails a plan.
 * Lines: "# vox plan cache 5", then "<key> <direct ms> <fft ms> <winograd ms>"; a file of
 * another version is ignored (and replaced on the next save). A cached entry that lacks one of
 * the algorithms asked for is measured again.
 */
#include "fast.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { KEY_LEN = 320, PATH_LEN = 1024, RUNS = 3 };
static const double SLAB_FLOPS = 1.5e8; /* about 10 ms for the direct nest on 2 cores */
/* Output rows along z and y a slab keeps at least (a wide layer's slab goes over SLAB_FLOPS):
 * a 1x1x32 slab of a 128-channel 20x32x32 layer timed the FFT faster than Winograd, the
 * reverse of the layer (40 against 32 ms). */
enum { SLAB_ROWS = 4 };
static const double SLOW_RUN_S = 0.05;  /* a slower warm-up: one timed run is enough */
static const char HEADER[] = "# vox plan cache 5"; /* 5: Winograd F(4,3) along y, x */

struct tune_entry {
    char key[KEY_LEN];
    double ms[VOX_NN_ALGOS];
};

struct vox_nn_tune {
    struct vox_ctx *ctx;
    char path[PATH_LEN]; /* "" when the disk cache is off */
    struct tune_entry *e;
    int64_t n, cap;
    int64_t measured, hits;
};

static int64_t cdiv(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

/* Adds the entry, or replaces the one of the same key. */
static enum vox_status entry_add(struct vox_nn_tune *t, const char *key,
                                 const double ms[VOX_NN_ALGOS])
{
    for (int64_t k = 0; k < t->n; k++)
        if (strcmp(t->e[k].key, key) == 0) {
            memcpy(t->e[k].ms, ms, sizeof t->e[k].ms);
            return VOX_OK;
        }
    if (t->n == t->cap) {
        int64_t cap = t->cap ? 2 * t->cap : 16;
        struct tune_entry *e =
            vox_realloc(t->ctx, t->e, (size_t)t->n * sizeof *e, (size_t)cap * sizeof *e);
        if (!e)
            return VOX_OUT_OF_MEMORY;
        t->e = e;
        t->cap = cap;
    }
    snprintf(t->e[t->n].key, KEY_LEN, "%s", key);
    memcpy(t->e[t->n].ms, ms, sizeof t->e[t->n].ms);
    t->n++;
    return VOX_OK;
}

/* Reads the file; a corrupt one is dropped whole (its entries cannot be trusted). */
static enum vox_status load(struct vox_nn_tune *t)
{
    FILE *fp = fopen(t->path, "r");
    if (!fp) {
        vox_log(t->ctx, VOX_LOG_DEBUG, "plan cache %s: not read (%s)", t->path, strerror(errno));
        return VOX_OK;
    }
    char line[KEY_LEN + 128], key[KEY_LEN];
    bool ok = fgets(line, sizeof line, fp) && strncmp(line, HEADER, sizeof HEADER - 1) == 0 &&
              line[sizeof HEADER - 1] == '\n';
    enum vox_status s = VOX_OK;
    while (ok && s == VOX_OK && fgets(line, sizeof line, fp)) {
        double ms[VOX_NN_ALGOS];
        char end;
        ok = strchr(line, '\n') &&
             sscanf(line, "%319s %lf %lf %lf %c", key, &ms[0], &ms[1], &ms[2], &end) == 4;
        for (int a = 0; ok && a < VOX_NN_ALGOS; a++)
            ok = isfinite(ms[a]) && ms[a] >= 0;
        if (ok)
            s = entry_add(t, key, ms);
    }
    fclose(fp);
    if (!ok) {
        vox_log(t->ctx, VOX_LOG_DEBUG, "plan cache %s: corrupt, ignored", t->path);
        t->n = 0;
    }
    return s;
}

/* Rewrites the file with every entry; failures only log. */
static void save(struct vox_nn_tune *t)
{
    char dir[PATH_LEN], tmp[PATH_LEN + 32];
    snprintf(dir, sizeof dir, "%s", t->path);
    *strrchr(dir, '/') = '\0';
    char *parent = strrchr(dir, '/');
    if (parent && parent != dir) { /* ~/.cache may be missing too */
        *parent = '\0';
        mkdir(dir, 0755);
        *parent = '/';
    }
    mkdir(dir, 0755);
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", t->path, (long)getpid());
    FILE *fp = fopen(tmp, "w");
    bool ok = fp && fprintf(fp, "%s\n", HEADER) > 0;
    for (int64_t k = 0; ok && k < t->n; k++)
        ok = fprintf(fp, "%s %.6g %.6g %.6g\n", t->e[k].key, t->e[k].ms[0], t->e[k].ms[1],
                     t->e[k].ms[2]) > 0;
    if (fp && fclose(fp) != 0)
        ok = false;
    if (ok && rename(tmp, t->path) == 0)
        return;
    vox_log(t->ctx, VOX_LOG_DEBUG, "plan cache %s: not written (%s)", t->path, strerror(errno));
    remove(tmp);
}

/* The cache file's path, "" when off or no home is known. */
static void cache_path(char *path)
{
    const char *off = getenv("VOX_PLAN_CACHE"), *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    path[0] = '\0';
    if (off && strcmp(off, "off") == 0)
        return;
    if (xdg && xdg[0] == '/')
        snprintf(path, PATH_LEN, "%s/vox/plan-cache.txt", xdg);
    else if (home && home[0] == '/')
        snprintf(path, PATH_LEN, "%s/.cache/vox/plan-cache.txt", home);
}

enum vox_status vox_nn_tune_create(struct vox_ctx *ctx, struct vox_nn_tune **tune_out)
{
    *tune_out = NULL;
    struct vox_nn_tune *t = vox_calloc(ctx, 1, sizeof *t);
    if (!t)
        return VOX_OUT_OF_MEMORY;
    t->ctx = ctx;
    cache_path(t->path);
    enum vox_status s = t->path[0] ? load(t) : VOX_OK;
    if (s != VOX_OK) {
        vox_nn_tune_destroy(t);
        return s;
    }
    *tune_out = t;
    return VOX_OK;
}

void vox_nn_tune_destroy(struct vox_nn_tune *t)
{
    if (!t)
        return;
    vox_free(t->ctx, t->e);
    vox_free(t->ctx, t);
}

void vox_nn_tune_stats(const struct vox_nn_tune *t, int64_t *measured_out, int64_t *hits_out,
                       const char **path_out)
{
    *measured_out = t->measured;
    *hits_out = t->hits;
    *path_out = t->path;
}

static void make_key(struct vox_ctx *ctx, const struct vox_nn_fast_conv *c, const int64_t lo[3],
                     char *key)
{
    const struct vox_cpu *cpu = vox_ctx_cpu(ctx);
    char model[64];
    snprintf(model, sizeof model, "%s", cpu->model[0] ? cpu->model : "unknown");
    for (char *p = model; *p; p++)
        if (*p == ' ' || *p == '|' || *p == '\t')
            *p = '_';
    snprintf(key, KEY_LEN,
             "%s|%s|t%d|%lld,%lld,%lld,%lld,%lld|k%lldx%lldx%lld|i%lldx%lldx%lld|"
             "o%lldx%lldx%lld|d%lldx%lldx%lld|p%lldx%lldx%lld|f%d",
             model, vox_isa_str(cpu->isa), vox_ctx_threads(ctx), (long long)c->n, (long long)c->cin,
             (long long)c->cout, (long long)c->bin, (long long)c->b, (long long)c->k[0],
             (long long)c->k[1], (long long)c->k[2], (long long)c->in[0], (long long)c->in[1],
             (long long)c->in[2], (long long)c->out[0], (long long)c->out[1], (long long)c->out[2],
             (long long)c->dil[0], (long long)c->dil[1], (long long)c->dil[2], (long long)lo[0],
             (long long)lo[1], (long long)lo[2], (int)c->lanes_free); /* f: fast_conv.c */
}

/* The slab: one batch entry, the output's longer of z and y halved until about SLAB_FLOPS
 * (not below SLAB_ROWS).
 * (Halving z to one plane first made the direct nest read every input row once per kz tap,
 * with none of the reuse across planes that the layer has: 8 -> 8 5x5x5 timed at 31 ms for a
 * layer that runs in 18.) */
static struct vox_nn_fast_conv slab_of(const struct vox_nn_fast_conv *c)
{
    struct vox_nn_fast_conv s = *c;
    vox_nn_fft_size(c, s.fft_n); /* the layer's tiles, so the slab times them */
    s.n = 1;
    for (;;) {
        double m[VOX_NN_ALGOS];
        vox_nn_conv_model(&s, m);
        const int a = s.out[1] > s.out[0] ? 1 : 0;
        if (m[0] * 0.35 <= SLAB_FLOPS || s.out[a] <= SLAB_ROWS)
            break;
        s.out[a] = (s.out[a] + 1) / 2;
        s.in[a] = s.out[a] + (c->in[a] - c->out[a]);
    }
    return s;
}

/* Best time of run(arg) after a warm-up, in seconds. */
static double best_time(void (*run)(void *), void *arg)
{
    double t0 = vox_time_now();
    run(arg);
    double best = vox_time_now() - t0;
    for (int r = 0; r < RUNS && best < SLOW_RUN_S; r++) {
        t0 = vox_time_now();
        run(arg);
        double dt = vox_time_now() - t0;
        best = dt < best ? dt : best;
    }
    return best;
}

struct timed {
    struct vox_pool *pool;
    struct vox_kernel *kern;
    struct vox_nn_fft *fft;
    struct vox_nn_wino *wino;
    struct vox_nn_bt in, pad, out;
    const float *wp, *bp;
    const int64_t *lo;
    bool same;
};

static void run_direct(void *arg)
{
    struct timed *t = arg;
    if (t->same)
        vox_nn_bt_pad(t->pool, &t->in, t->lo, &t->pad);
    const float *extra[1] = {t->bp};
    vox_kernel_run(t->kern, t->out.data, t->same ? t->pad.data : t->in.data, t->wp, extra);
}

static void run_fft(void *arg)
{
    struct timed *t = arg;
    vox_nn_fft_run(t->fft, t->pool, &t->in, &t->out);
}

static void run_wino(void *arg)
{
    struct timed *t = arg;
    vox_nn_wino_run(t->wino, t->pool, &t->in, NULL, &t->out);
}

/* Times the algorithms in mask on the slab s: sec[0] direct, [1] FFT, [2] Winograd, in seconds
 * (0 for the others). */
static enum vox_status time_slab(struct vox_ctx *ctx, const struct vox_nn_fast_conv *s,
                                 const int64_t lo[3], unsigned mask, double sec[VOX_NN_ALGOS])
{
    struct timed t = {.pool = vox_ctx_pool(ctx), .lo = lo, .same = lo[0] + lo[1] + lo[2] > 0};
    int64_t taps = s->k[0] * s->k[1] * s->k[2], wn = s->cout * s->cin * taps;
    int64_t ib = cdiv(s->cin, s->bin), ob = cdiv(s->cout, s->b);
    int64_t ivol = s->in[0] * s->in[1] * s->in[2], ovol = s->out[0] * s->out[1] * s->out[2];
    t.pad =
        (struct vox_nn_bt){.n = 1, .c = s->cin, .blk = s->bin, .s = {s->in[0], s->in[1], s->in[2]}};
    t.in = t.pad;
    for (int a = 0; t.same && a < 3; a++)
        t.in.s[a] = s->out[a]; /* same padding: the input has the output's extent */
    t.out = (struct vox_nn_bt){
        .n = 1, .c = s->cout, .blk = s->b, .s = {s->out[0], s->out[1], s->out[2]}};
    float *w = vox_alloc(ctx, (size_t)wn * sizeof *w);
    float *wp = vox_alloc(ctx, (size_t)vox_nn_fast_pack_elems(s) * sizeof *wp);
    float *bp = vox_calloc(ctx, (size_t)(ob * s->b), sizeof *bp);
    t.in.data = vox_calloc(ctx, (size_t)(ib * s->bin * ivol), sizeof(float));
    t.pad.data = vox_calloc(ctx, (size_t)(ib * s->bin * ivol), sizeof(float));
    t.out.data = vox_alloc(ctx, (size_t)(ob * s->b * ovol) * sizeof(float));
    enum vox_status st = VOX_OUT_OF_MEMORY;
    if (!w || !wp || !bp || !t.in.data || !t.pad.data || !t.out.data)
        goto done;
    for (int64_t e = 0; e < wn; e++) /* small, varied values; no denormals */
        w[e] = (float)((e * 37) % 101 - 50) / 500.0f;
    vox_nn_fast_pack(s, false, w, NULL, wp, bp);
    struct vox_nest nest;
    vox_nn_fast_conv_nest(s, vox_ctx_cpu(ctx)->isa, &nest);
    if ((st = vox_nest_compile(ctx, &nest, NULL, &t.kern)) != VOX_OK)
        goto done;
    t.wp = wp;
    t.bp = bp;
    memset(sec, 0, VOX_NN_ALGOS * sizeof *sec);
    if (mask & 1)
        sec[0] = best_time(run_direct, &t);
    if ((mask & 2) && (st = vox_nn_fft_create(ctx, s, lo, w, NULL, &t.fft)) != VOX_OK)
        goto done;
    if (mask & 2)
        sec[1] = best_time(run_fft, &t);
    if ((mask & 4) && (st = vox_nn_wino_create(ctx, s, lo, w, NULL, &t.wino)) != VOX_OK)
        goto done;
    if (mask & 4)
        sec[2] = best_time(run_wino, &t);
done:
    vox_kernel_destroy(t.kern);
    vox_nn_fft_destroy(ctx, t.fft);
    vox_nn_wino_destroy(ctx, t.wino);
    vox_free(ctx, w);
    vox_free(ctx, wp);
    vox_free(ctx, bp);
    vox_free(ctx, t.in.data);
    vox_free(ctx, t.pad.data);
    vox_free(ctx, t.out.data);
    return st;
}

/* The cached entry of key if it has every algorithm of mask, else NULL. */
static const struct tune_entry *lookup(const struct vox_nn_tune *t, const char *key,
                                       unsigned mask)
{
    for (int64_t k = 0; k < t->n; k++)
        if (strcmp(t->e[k].key, key) == 0) {
            for (int a = 0; a < VOX_NN_ALGOS; a++)
                if ((mask >> a & 1) && !(t->e[k].ms[a] > 0))
                    return NULL;
            return &t->e[k];
        }
    return NULL;
}

enum vox_status vox_nn_tune_times(struct vox_nn_tune *t, struct vox_ctx *ctx,
                                  const struct vox_nn_fast_conv *c, const int64_t padlo[3],
                                  unsigned mask, double ms_out[VOX_NN_ALGOS],
                                  enum vox_nn_algo_source *source_out)
{
    char key[KEY_LEN];
    make_key(ctx, c, padlo, key);
    const struct tune_entry *e = lookup(t, key, mask);
    if (e) {
        for (int a = 0; a < VOX_NN_ALGOS; a++)
            ms_out[a] = mask >> a & 1 ? e->ms[a] : 0;
        *source_out = VOX_NN_ALGO_CACHED;
        t->hits++;
        return VOX_OK;
    }
    struct vox_nn_fast_conv s = slab_of(c);
    double sec[VOX_NN_ALGOS], full[VOX_NN_ALGOS], part[VOX_NN_ALGOS];
    enum vox_status st = time_slab(ctx, &s, padlo, mask, sec);
    if (st != VOX_OK)
        return st;
    vox_nn_conv_model(c, full);
    vox_nn_conv_model(&s, part);
    for (int a = 0; a < VOX_NN_ALGOS; a++) /* at least 1 ns: a measured time is never 0 */
        ms_out[a] =
            mask >> a & 1 ? fmax(sec[a] * 1e3 * full[a] / part[a], 1e-6) : 0;
    *source_out = VOX_NN_ALGO_MEASURED;
    t->measured++;
    vox_log(ctx, VOX_LOG_DEBUG, "plan: measured %s: direct %.3f ms, fft %.3f ms, winograd %.3f ms",
            key, ms_out[0], ms_out[1], ms_out[2]);
    if ((st = entry_add(t, key, ms_out)) != VOX_OK)
        return st;
    if (t->path[0])
        save(t);
    return VOX_OK;
}
