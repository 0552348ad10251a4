/*
 * bench_loop.c: the loop-nest JIT benchmarks of `vox bench`:
 *   matmul:MxNxK        row-major FP32 C = A*B, schedule=default|best, vs OpenBLAS sgemm
 *   loop-looptune       the 25 LoopTune test matmuls (loopstack.md 4.1), one line each
 *   loop-odd            LoopNest's odd-size matmuls (loopstack.md 4.3), one line each
 *   loop-compile        median JIT compile time over those matmuls and a few convolutions
 *   conv3d:c=,k=,...    a direct 3D convolution nest (vox_nest_conv3d)
 *
 * Key idea: every timed run calls the kernel enough times to last >= 5 ms and records the
 * time per call; the median over runs is reported. `best` is a brute-force sweep over the
 * register tile (rows x vectors, within the register file) and the k block, each candidate
 * timed 3 x 2 ms, the 3 fastest and the default re-timed 5 x 5 ms, the best median kept and
 * timed like the default. Results are checked once (untimed)
 * against a plain C triple loop in double. The peer is OpenBLAS's cblas_sgemm loaded with
 * dlopen in this process, after the driver unset OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (which
 * some machines set and which pin a slower kernel); the values it found are reported.
 */
#include "bench.h"

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- timing ---------------------------------------------------------------------------- */

typedef void (*bench_call)(void *arg);

/* Seconds per call of fn(arg): calibrated repetitions lasting >= min_s per run. */
static void time_runs(bench_call fn, void *arg, int runs, double min_s, double *times)
{
    fn(arg); /* warm-up */
    int64_t reps = 1;
    for (;;) {
        double t0 = vox_time_now();
        for (int64_t r = 0; r < reps; r++)
            fn(arg);
        double t = vox_time_now() - t0;
        if (t >= min_s || reps > (1 << 24))
            break;
        reps = t <= 0 ? reps * 16 : (int64_t)(reps * 1.2 * min_s / t) + 1;
    }
    for (int i = 0; i < runs; i++) {
        double t0 = vox_time_now();
        for (int64_t r = 0; r < reps; r++)
            fn(arg);
        times[i] = (vox_time_now() - t0) / (double)reps;
    }
}

/* ---- OpenBLAS peer --------------------------------------------------------------------- */

typedef void (*sgemm_fn)(int order, int ta, int tb, int m, int n, int k, float alpha,
                         const float *a, int lda, const float *b, int ldb, float beta, float *c,
                         int ldc);

struct blas {
    void *h;
    sgemm_fn sgemm;
    char version[64];
    char env_note[160]; /* the OPENBLAS_* values found, as JSON pairs */
};

static void blas_open(struct blas *bl, const struct bench_env *env)
{
    memset(bl, 0, sizeof *bl);
    snprintf(bl->env_note, sizeof bl->env_note,
             "\"openblas_env_found\":\"%s\",\"openblas_env_unset\":%s", env->openblas_env,
             getenv("OPENBLAS_CORETYPE") || getenv("OPENBLAS_L2_SIZE") ? "false" : "true");
    const int threads = vox_ctx_threads(env->ctx);
    bl->h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!bl->h)
        return;
    bl->sgemm = (sgemm_fn)dlsym(bl->h, "cblas_sgemm");
    void (*set_threads)(int) = (void (*)(int))dlsym(bl->h, "openblas_set_num_threads");
    char *(*config)(void) = (char *(*)(void))dlsym(bl->h, "openblas_get_config");
    if (!bl->sgemm) {
        dlclose(bl->h);
        bl->h = NULL;
        return;
    }
    if (set_threads)
        set_threads(threads);
    const char *cfg = config ? config() : "OpenBLAS";
    size_t k = 0;
    for (; cfg[k] && k + 1 < sizeof bl->version; k++)
        bl->version[k] = cfg[k] == '"' || cfg[k] == '\\' ? ' ' : cfg[k];
    bl->version[k] = '\0';
}

static void blas_close(struct blas *bl)
{
    if (bl->h)
        dlclose(bl->h);
    bl->h = NULL;
}

/* ---- matmul ---------------------------------------------------------------------------- */

struct mm {
    int64_t M, N, K;
    float *A, *B, *C;
    const struct vox_kernel *kern;
    sgemm_fn sgemm;
};

static void call_kernel(void *arg)
{
    struct mm *m = arg;
    vox_kernel_run(m->kern, m->C, m->A, m->B, NULL);
}

static void call_sgemm(void *arg)
{
    struct mm *m = arg;
    /* CblasRowMajor = 101, CblasNoTrans = 111 */
    m->sgemm(101, 111, 111, (int)m->M, (int)m->N, (int)m->K, 1.0f, m->A, (int)m->K, m->B,
             (int)m->N, 0.0f, m->C, (int)m->N);
}

static float lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(*s >> 40) / (double)(1 << 24) * 2.0 - 1.0);
}

/* Compiles a matmul with the given tile (0: default). */
static enum vox_status mm_compile(struct vox_ctx *ctx, const struct mm *m, int rows, int vecs,
                                  int64_t kc, struct vox_kernel **k_out, double *ms_out)
{
    struct vox_nest nest;
    vox_nest_matmul(&nest, m->M, m->N, m->K, m->N, m->K, m->N);
    enum vox_status s = vox_nest_schedule_default(ctx, &nest, rows, vecs, kc);
    if (s)
        return s;
    struct vox_kernel_options opt = {.isa = VOX_KERNEL_ISA_AUTO};
    double t0 = vox_time_now();
    s = vox_nest_compile(ctx, &nest, &opt, k_out);
    *ms_out = (vox_time_now() - t0) * 1e3;
    return s;
}

static enum vox_status mm_verify(struct vox_ctx *ctx, struct mm *m)
{
    for (int64_t i = 0; i < m->M * m->N; i++)
        m->C[i] = NAN;
    vox_kernel_run(m->kern, m->C, m->A, m->B, NULL);
    double worst = 0;
    for (int64_t i = 0; i < m->M; i++)
        for (int64_t j = 0; j < m->N; j++) {
            double r = 0;
            for (int64_t k = 0; k < m->K; k++)
                r += (double)m->A[i * m->K + k] * m->B[k * m->N + j];
            double e = fabs(r - m->C[i * m->N + j]);
            worst = e > worst || e != e ? e : worst;
        }
    if (!(worst <= 1e-5 * (double)m->K + 1e-5))
        return vox_fail(ctx, VOX_INTERNAL, "matmul %lldx%lldx%lld: wrong result (max error %g)",
                        (long long)m->M, (long long)m->N, (long long)m->K, worst);
    return VOX_OK;
}

struct best {
    int rows, vecs;
    int64_t kc;
    double s;
};

/* Median seconds per call of one candidate schedule, runs x min_s each. */
static enum vox_status mm_time(struct vox_ctx *ctx, struct mm *m, const struct best *c,
                               int runs, double min_s, double *s_out)
{
    struct vox_kernel *k;
    double ms, t[8];
    enum vox_status s = mm_compile(ctx, m, c->rows, c->vecs, c->kc, &k, &ms);
    if (s)
        return s;
    m->kern = k;
    time_runs(call_kernel, m, runs, min_s, t);
    vox_kernel_destroy(k);
    *s_out = bench_median(t, runs);
    return VOX_OK;
}

/* Keeps the `keep` fastest candidates in top[], sorted by time. */
static void top_insert(struct best *top, int keep, const struct best *c)
{
    int i = keep;
    while (i > 0 && c->s < top[i - 1].s)
        i--;
    if (i == keep)
        return;
    memmove(&top[i + 1], &top[i], (size_t)(keep - 1 - i) * sizeof *top);
    top[i] = *c;
}

/* The sweep: every register tile that fits the register file with >= 4 accumulators (or the
 * whole of a smaller C), k blocks default, K, 64..512; each timed 3 x 2 ms. The 3 fastest and
 * the default are re-timed 5 x 5 ms and the best median wins (a short timing alone picks
 * noise). */
static enum vox_status mm_sweep(struct vox_ctx *ctx, struct mm *m, struct best *b)
{
    const bool z = vox_ctx_cpu(ctx)->isa == VOX_ISA_AVX512;
    const int regs = z ? 32 : 16, lanes = z ? 16 : 8;
    const int64_t kcs[] = {0, m->K, 64, 128, 256, 512};
    struct best top[4] = {{0, 0, 0, 1e300}, {0, 0, 0, 1e300}, {0, 0, 0, 1e300},
                          {0, 0, 0, 1e300}};
    enum vox_status s = VOX_OK;
    for (int rows = 1; rows <= 12 && !s; rows++)
        for (int vecs = 1; vecs <= 4 && !s; vecs++) {
            int64_t nvec = (m->N + lanes - 1) / lanes, mrows = m->M < rows ? m->M : rows;
            if (rows * vecs + vecs + 1 > regs || vecs > nvec || rows > m->M ||
                mrows * vecs < (m->M * nvec < 4 ? m->M * nvec : 4))
                continue;
            for (size_t i = 0; i < sizeof kcs / sizeof kcs[0] && !s; i++) {
                if (i >= 2 && kcs[i] >= m->K)
                    continue;
                struct best c = {rows, vecs, kcs[i], 0};
                if (!(s = mm_time(ctx, m, &c, 3, 2e-3, &c.s)))
                    top_insert(top, 3, &c);
            }
        }
    top[3] = (struct best){0, 0, 0, 0};
    b->s = 1e300;
    for (int i = 0; i < 4 && !s; i++) {
        if (top[i].s >= 1e300)
            continue;
        if (!(s = mm_time(ctx, m, &top[i], 5, 5e-3, &top[i].s)) && top[i].s < b->s)
            *b = top[i];
    }
    return s;
}

/* Times one matmul shape (default or best schedule) and its peer; fills *res. */
static enum vox_status mm_run(struct bench_env *env, int64_t M, int64_t N, int64_t K, bool best,
                              int runs, const struct blas *bl, struct bench_result *res)
{
    struct vox_ctx *ctx = env->ctx;
    struct mm m = {M, N, K, NULL, NULL, NULL, NULL, bl->sgemm};
    m.A = vox_alloc(ctx, (size_t)(M * K) * 4);
    m.B = vox_alloc(ctx, (size_t)(K * N) * 4);
    m.C = vox_alloc(ctx, (size_t)(M * N) * 4);
    struct vox_kernel *k = NULL;
    struct best b = {0, 0, 0, 0};
    enum vox_status s = VOX_OUT_OF_MEMORY;
    if (!m.A || !m.B || !m.C)
        goto done;
    uint64_t seed = (uint64_t)(M * 1000003 + N * 1009 + K);
    for (int64_t i = 0; i < M * K; i++)
        m.A[i] = lcg(&seed);
    for (int64_t i = 0; i < K * N; i++)
        m.B[i] = lcg(&seed);
    if (best && (s = mm_sweep(ctx, &m, &b)))
        goto done;
    double ms;
    if ((s = mm_compile(ctx, &m, b.rows, b.vecs, b.kc, &k, &ms)))
        goto done;
    m.kern = k;
    if ((s = mm_verify(ctx, &m)))
        goto done;
    time_runs(call_kernel, &m, runs, 5e-3, res->times);
    res->runs = runs;
    res->flops = 2.0 * (double)M * (double)N * (double)K;
    res->compile_ms = ms;
    const struct vox_kernel_info *info = vox_kernel_info(k);
    int n = snprintf(res->extra, sizeof res->extra,
                     "\"schedule\":\"%s\",\"tile_rows\":%lld,\"tile_vectors\":%lld,"
                     "\"kc\":%lld,\"jit\":%s",
                     best ? "best" : "default", (long long)info->tile[0],
                     (long long)(info->acc_vectors / (info->tile[0] > 0 ? info->tile[0] : 1)),
                     (long long)b.kc, info->jit ? "true" : "false");
    if (bl->sgemm) {
        double t[64];
        time_runs(call_sgemm, &m, runs, 5e-3, t);
        res->peer = "openblas";
        snprintf(res->peer_version, sizeof res->peer_version, "%s", bl->version);
        res->peer_median_s = bench_median(t, runs);
    }
    snprintf(res->extra + n, sizeof res->extra - (size_t)n, ",%s", bl->env_note);
done:
    vox_kernel_destroy(k);
    vox_free(ctx, m.A);
    vox_free(ctx, m.B);
    vox_free(ctx, m.C);
    return s;
}

/* ---- parameters ------------------------------------------------------------------------ */

/* The value of key=VALUE in the comma-separated raw parameters, or NULL. */
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

static enum vox_status parse_best(struct vox_ctx *ctx, const char *raw, bool *best)
{
    char v[32];
    *best = false;
    if (!param(raw, "schedule", v, sizeof v) || strcmp(v, "default") == 0)
        return VOX_OK;
    if (strcmp(v, "best") != 0)
        return vox_fail(ctx, VOX_INVALID_ARG, "schedule=%s: expected default or best", v);
    *best = true;
    return VOX_OK;
}

static enum vox_status run_matmul(struct bench_env *env, const struct bench_params *p,
                                  struct bench_result *res)
{
    long long M = 256, N = 256, K = 256;
    bool best;
    enum vox_status s = parse_best(env->ctx, p->raw, &best);
    if (s)
        return s;
    if (p->raw[0] >= '0' && p->raw[0] <= '9' &&
        (sscanf(p->raw, "%lldx%lldx%lld", &M, &N, &K) != 3 || M < 1 || N < 1 || K < 1 ||
         M > 16384 || N > 16384 || K > 16384))
        return vox_fail(env->ctx, VOX_INVALID_ARG, "matmul '%s': expected MxNxK (1..16384)",
                        p->raw);
    struct blas bl;
    blas_open(&bl, env);
    s = mm_run(env, M, N, K, best, p->runs, &bl, res);
    blas_close(&bl);
    return s;
}

/* loopstack.md 4.1: LoopTune's 25 test shapes mm{m}_{n}_{k}. */
static const int16_t looptune[25][3] = {
    {112, 208, 256}, {112, 224, 128}, {112, 256, 64},  {112, 256, 80},  {128, 160, 224},
    {160, 224, 192}, {176, 128, 160}, {176, 144, 160}, {176, 192, 160}, {192, 192, 80},
    {192, 256, 256}, {208, 128, 256}, {208, 160, 80},  {208, 80, 224},  {224, 112, 176},
    {224, 208, 224}, {224, 224, 256}, {224, 64, 240},  {240, 208, 144}, {256, 160, 112},
    {64, 240, 64},   {80, 176, 224},  {96, 160, 256},  {96, 224, 240},  {96, 240, 128}};

/* loopstack.md 4.3: LoopNest's matmuls, given there as m x k x n; stored here as M, N, K. */
static const int16_t odd[14][3] = {
    {333, 333, 333}, {1, 333, 333},   {4, 2, 4},     {72, 64, 256}, {3840, 259, 259},
    {333, 133, 333}, {256, 256, 256}, {32, 512, 512}, {333, 1, 222}, {259, 1, 259},
    {1, 507, 1},     {483, 259, 259}, {1, 23, 8192}, {1, 451, 64}};

static enum vox_status run_set(struct bench_env *env, const struct bench_params *p,
                               struct bench_result *res, const char *name,
                               const int16_t (*shapes)[3], int n)
{
    bool best;
    enum vox_status s = parse_best(env->ctx, p->raw, &best);
    if (s)
        return s;
    struct blas bl;
    blas_open(&bl, env);
    for (int i = 0; i < n && s == VOX_OK; i++) {
        for (int pass = 0; pass < (best ? 2 : 1) && s == VOX_OK; pass++) {
            struct bench_result r = {.compile_ms = -1};
            s = mm_run(env, shapes[i][0], shapes[i][1], shapes[i][2], pass == 1, p->runs, &bl,
                       &r);
            char label[96];
            snprintf(label, sizeof label, "%s:%dx%dx%d", name, shapes[i][0], shapes[i][1],
                     shapes[i][2]);
            if (s == VOX_OK)
                env->emit(env, label, &r);
        }
    }
    blas_close(&bl);
    res->runs = 0;
    return s;
}

static enum vox_status run_looptune(struct bench_env *env, const struct bench_params *p,
                                    struct bench_result *res)
{
    return run_set(env, p, res, "loop-looptune", looptune, 25);
}

static enum vox_status run_odd(struct bench_env *env, const struct bench_params *p,
                               struct bench_result *res)
{
    return run_set(env, p, res, "loop-odd", odd, 14);
}

/* ---- convolution ----------------------------------------------------------------------- */

struct cv {
    const struct vox_kernel *kern;
    float *in, *out, *w;
    const float *extra[1];
};

static void call_conv(void *arg)
{
    struct cv *c = arg;
    vox_kernel_run(c->kern, c->out, c->in, c->w, c->extra);
}

static enum vox_status parse_conv(struct vox_ctx *ctx, const char *raw,
                                  struct vox_conv3d_desc *d)
{
    *d = (struct vox_conv3d_desc){24, 24, 16, 32, 32, 3, 3, 3, VOX_CONV_BLOCKED, 0, false, false};
    char v[64];
    const char *keys[] = {"c", "k", "d", "h", "w"};
    int64_t *dst[] = {&d->c, &d->k, &d->d, &d->h, &d->w};
    for (int i = 0; i < 5; i++)
        if (param(raw, keys[i], v, sizeof v))
            *dst[i] = atoll(v);
    if (param(raw, "block", v, sizeof v))
        d->block = atoll(v);
    if (param(raw, "kernel", v, sizeof v)) {
        long long a, b, c;
        if (sscanf(v, "%lldx%lldx%lld", &a, &b, &c) != 3)
            return vox_fail(ctx, VOX_INVALID_ARG, "conv3d kernel=%s: expected AxBxC", v);
        d->kd = a, d->kh = b, d->kw = c;
    }
    if (param(raw, "layout", v, sizeof v)) {
        if (strcmp(v, "blocked") != 0 && strcmp(v, "ncdhw") != 0)
            return vox_fail(ctx, VOX_INVALID_ARG, "conv3d layout=%s: expected blocked or ncdhw",
                            v);
        d->layout = strcmp(v, "blocked") == 0 ? VOX_CONV_BLOCKED : VOX_CONV_NCDHW;
    }
    return vox_conv3d_sizes(ctx, d, NULL, NULL, NULL, NULL);
}

/* Checks 64 output voxels of every channel against the plain sum (NCDHW or blocked). */
static enum vox_status conv_verify(struct vox_ctx *ctx, const struct vox_conv3d_desc *d,
                                   int64_t b, const struct cv *c)
{
    const int64_t od = d->d - d->kd + 1, oh = d->h - d->kh + 1, ow = d->w - d->kw + 1;
    const int64_t ib = (d->c + b - 1) / b, taps = d->kd * d->kh * d->kw;
    uint64_t seed = 99;
    for (int sample = 0; sample < 64; sample++) {
        int64_t z = (int64_t)((lcg(&seed) + 1) * 0.5 * (double)od) % od;
        int64_t y = (int64_t)((lcg(&seed) + 1) * 0.5 * (double)oh) % oh;
        int64_t x = (int64_t)((lcg(&seed) + 1) * 0.5 * (double)ow) % ow;
        for (int64_t k = 0; k < d->k; k++) {
            double r = 0;
            for (int64_t ch = 0; ch < d->c; ch++)
                for (int64_t t = 0; t < taps; t++) {
                    int64_t tz = z + t / (d->kh * d->kw), ty = y + t / d->kw % d->kh,
                            tx = x + t % d->kw;
                    int64_t ai = b > 1 ? (((ch / b * d->d + tz) * d->h + ty) * d->w + tx) * b +
                                             ch % b
                                       : ((ch * d->d + tz) * d->h + ty) * d->w + tx;
                    int64_t wi = b > 1 ? (((k / b * ib + ch / b) * taps + t) * b + ch % b) * b +
                                             k % b
                                       : (k * d->c + ch) * taps + t;
                    r += (double)c->in[ai] * c->w[wi];
                }
            int64_t oi = b > 1 ? (((k / b * od + z) * oh + y) * ow + x) * b + k % b
                               : ((k * od + z) * oh + y) * ow + x;
            if (!(fabs(r - c->out[oi]) <= 1e-5 * (double)(d->c * taps) + 1e-5))
                return vox_fail(ctx, VOX_INTERNAL, "conv3d: wrong output at k %lld (%g vs %g)",
                                (long long)k, (double)c->out[oi], r);
        }
    }
    return VOX_OK;
}

static enum vox_status run_conv3d(struct bench_env *env, const struct bench_params *p,
                                  struct bench_result *res)
{
    struct vox_ctx *ctx = env->ctx;
    struct vox_conv3d_desc d;
    int64_t b, nin, nout, nw;
    struct vox_nest nest;
    enum vox_status s = parse_conv(ctx, p->raw, &d);
    if (s || (s = vox_conv3d_sizes(ctx, &d, &b, &nin, &nout, &nw)) ||
        (s = vox_nest_conv3d(ctx, &d, &nest)))
        return s;
    struct cv c = {NULL, vox_calloc(ctx, (size_t)nin, 4), vox_alloc(ctx, (size_t)nout * 4),
                   vox_calloc(ctx, (size_t)nw, 4), {NULL}};
    struct vox_kernel *k = NULL;
    s = VOX_OUT_OF_MEMORY;
    if (!c.in || !c.out || !c.w)
        goto done;
    uint64_t seed = 7;
    for (int64_t ch = 0; ch < d.c; ch++) /* padding lanes stay 0 */
        for (int64_t i = 0; i < d.d * d.h * d.w; i++)
            c.in[b > 1 ? (ch / b * d.d * d.h * d.w + i) * b + ch % b : ch * d.d * d.h * d.w + i] =
                lcg(&seed);
    for (int64_t i = 0; i < nw; i++)
        c.w[i] = lcg(&seed);
    double t0 = vox_time_now();
    if ((s = vox_nest_compile(ctx, &nest, NULL, &k)))
        goto done;
    res->compile_ms = (vox_time_now() - t0) * 1e3;
    c.kern = k;
    call_conv(&c);
    if ((s = conv_verify(ctx, &d, b, &c)))
        goto done;
    time_runs(call_conv, &c, p->runs, 5e-3, res->times);
    res->runs = p->runs;
    const int64_t outv = (d.d - d.kd + 1) * (d.h - d.kh + 1) * (d.w - d.kw + 1);
    res->flops = 2.0 * (double)(d.c * d.k * d.kd * d.kh * d.kw) * (double)outv;
    const struct vox_kernel_info *info = vox_kernel_info(k);
    snprintf(res->extra, sizeof res->extra,
             "\"layout\":\"%s\",\"block\":%lld,\"nest_gflop\":%.4f,\"acc_vectors\":%d,"
             "\"lanes\":%d,\"jit\":%s",
             b > 1 ? "blocked" : "ncdhw", (long long)b, vox_nest_flops(&nest) * 1e-9,
             info->acc_vectors, info->lanes, info->jit ? "true" : "false");
done:
    vox_kernel_destroy(k);
    vox_free(ctx, c.in);
    vox_free(ctx, c.out);
    vox_free(ctx, c.w);
    return s;
}

/* ---- compile time ---------------------------------------------------------------------- */

static enum vox_status compile_ms(struct vox_ctx *ctx, const struct vox_nest *nest, double *s_out)
{
    double t[3];
    for (int r = 0; r < 3; r++) {
        struct vox_kernel *k;
        double t0 = vox_time_now();
        enum vox_status s = vox_nest_compile(ctx, nest, NULL, &k);
        t[r] = vox_time_now() - t0;
        if (s)
            return s;
        vox_kernel_destroy(k);
    }
    *s_out = bench_median(t, 3);
    return VOX_OK;
}

static enum vox_status run_compile(struct bench_env *env, const struct bench_params *p,
                                   struct bench_result *res)
{
    (void)p;
    struct vox_ctx *ctx = env->ctx;
    struct vox_nest nest;
    enum vox_status s = VOX_OK;
    int n = 0;
    for (int i = 0; i < 25 + 14 && s == VOX_OK; i++) {
        const int16_t *sh = i < 25 ? looptune[i] : odd[i - 25];
        vox_nest_matmul(&nest, sh[0], sh[1], sh[2], sh[1], sh[2], sh[1]);
        if (!(s = vox_nest_schedule_default(ctx, &nest, 0, 0, 0)))
            s = compile_ms(ctx, &nest, &res->times[n++]);
    }
    static const int64_t convs[4][3] = {{24, 24, 1}, {48, 48, 1}, {24, 24, 0}, {3, 16, 0}};
    for (int i = 0; i < 4 && s == VOX_OK; i++) {
        struct vox_conv3d_desc d = {convs[i][0], convs[i][1], 16, 32, 32, 3, 3, 3,
                                    (enum vox_conv_layout)convs[i][2], 0, true, true};
        if (!(s = vox_nest_conv3d(ctx, &d, &nest)))
            s = compile_ms(ctx, &nest, &res->times[n++]);
    }
    res->runs = n;
    res->compile_ms = bench_median(res->times, n) * 1e3;
    double mx = 0;
    for (int i = 0; i < n; i++)
        mx = res->times[i] > mx ? res->times[i] : mx;
    snprintf(res->extra, sizeof res->extra, "\"nests\":%d,\"compile_ms_max\":%.4f", n, mx * 1e3);
    return s;
}

const struct bench_problem bench_matmul = {
    "matmul",
    "MxNxK (default 256x256x256), schedule=default|best: row-major FP32 C = A*B vs OpenBLAS",
    5, run_matmul};
const struct bench_problem bench_loop_looptune = {
    "loop-looptune", "schedule=default|best: LoopTune's 25 test matmuls, one line each", 5,
    run_looptune};
const struct bench_problem bench_loop_odd = {
    "loop-odd", "schedule=default|best: LoopNest's odd-size matmuls, one line each", 5, run_odd};
const struct bench_problem bench_loop_compile = {
    "loop-compile", "median JIT compile time over the matmul sets and 4 conv3d nests", 1,
    run_compile};
const struct bench_problem bench_conv3d = {
    "conv3d",
    "c=24,k=24,d=16,h=32,w=32,kernel=3x3x3,layout=blocked|ncdhw: direct 3D conv (valid)", 5,
    run_conv3d};
