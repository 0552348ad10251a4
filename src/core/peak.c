/*
 * peak.c: the machine's measured FP32 peak, the denominator of every "% of peak" vox reports.
 *
 * Method: each thread runs 12 independent FMA chains in the widest ISA in use (enough to
 * cover latency x ports on current x86 cores), so the loop is bound by FMA throughput only.
 * The effective clock comes from a chain of dependent integer adds (one cycle each). From
 * the two, FMA ports = GFLOP/s / (2 x lanes x GHz). All threads run the loop at once for the
 * all-thread figure, which also shows a shared-frequency drop.
 *
 * The memory bandwidth beside it: a pointwise pass b *= a over arrays past the caches, on one
 * thread and split over all. Where one thread already takes most of what the machine gives
 * (a VM on a busy host: 60 GB/s on one thread of a 2-vCPU EPYC, 65 on both), a pass over
 * memory runs no faster on more threads, which bounds a training step's scaling.
 */
#include "core/internal.h"
#include "core/peak.h"

#include <string.h>

static double peak_loop_ref(int64_t iters)
{
    float a[12];
    for (int i = 0; i < 12; i++)
        a[i] = (float)i;
    for (int64_t k = 0; k < iters; k++)
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++)
            a[i] = a[i] * 0.999999f + 1e-7f;
    float s = 0;
    for (int i = 0; i < 12; i++)
        s += a[i];
    return s;
}

static const struct {
    double (*loop)(int64_t);
    int lanes;
} peak_loops[] = {
    [VOX_ISA_REF] = {peak_loop_ref, 1},
    [VOX_ISA_AVX2] = {vox_peak_loop_avx2, 8},
    [VOX_ISA_AVX512] = {vox_peak_loop_avx512, 16},
};

/* Seconds for `n` dependent adds: one cycle each on every x86 core of the last 20 years. */
static double clock_ghz(void)
{
    /* Many short runs, keeping the fastest: a run that the OS preempts (other processes on a
     * shared machine) only ever looks slower, never faster. */
    int64_t n = 20 * 1000 * 1000, x = 0;
    double best = 1e30;
    for (int rep = 0; rep < 30; rep++) {
        double t0 = vox_time_now();
        int64_t i = n;
        __asm__ volatile("1:\n\t"
                         "add $1, %0\n\t"
                         "add $1, %0\n\t"
                         "add $1, %0\n\t"
                         "add $1, %0\n\t"
                         "sub $4, %1\n\t"
                         "jnz 1b"
                         : "+r"(x), "+r"(i));
        double t = vox_time_now() - t0;
        best = t < best ? t : best;
    }
    return (double)n / best * 1e-9;
}

struct peak_job {
    double (*loop)(int64_t);
    int64_t iters;
    double seconds[1024];
    double sink[1024];
};

static void peak_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    struct peak_job *j = arg;
    for (int64_t i = lo[0]; i < hi[0]; i++) {
        double t0 = vox_time_now();
        j->sink[i] = j->loop(j->iters);
        j->seconds[i] = vox_time_now() - t0;
    }
}

/* Best of several runs of `threads` simultaneous loops: total GFLOP/s. */
static double measure(struct vox_pool *pool, int threads, struct peak_job *job,
                      double (*loop)(int64_t), int lanes)
{
    job->loop = loop;
    job->iters = 4 * 1000 * 1000;
    double best = 0;
    for (int rep = 0; rep < 9; rep++) {
        int64_t n[3] = {threads, 1, 1}, tile[3] = {1, 1, 1};
        vox_pool_for(threads > 1 ? pool : NULL, n, tile, VOX_SCHED_STATIC, peak_task, job);
        double slowest = 0;
        for (int t = 0; t < threads; t++)
            slowest = job->seconds[t] > slowest ? job->seconds[t] : slowest;
        double g = threads * 12.0 * 2.0 * lanes * (double)job->iters / slowest * 1e-9;
        best = g > best ? g : best;
    }
    return best;
}

/* Vector FMAs per cycle at a given width, from the vendors' documentation, so the measured
 * peak can be checked against an independent figure. 0 when the core is not in the table.
 *   AMD Zen 2/3 (family 17h, 19h without AVX-512): two 256-bit FMA pipes.
 *   AMD Zen 4 (19h with AVX-512): two 256-bit pipes; a 512-bit FMA takes both (1 per cycle).
 *   AMD Zen 5 (1Ah): two FMA pipes of full 512-bit width.
 *   Intel cores with AVX2 since Haswell: two 256-bit FMA ports; 512-bit varies by SKU. */
static int documented_fma_ports(const struct vox_cpu *c, int lanes)
{
    bool amd = strcmp(c->vendor, "AuthenticAMD") == 0;
    bool intel = strcmp(c->vendor, "GenuineIntel") == 0;
    if (lanes == 1)
        return 0;
    if (amd && c->family == 0x1a)
        return 2;
    if (amd && (c->family == 0x17 || c->family == 0x19))
        return lanes == 16 ? 1 : 2;
    if (intel && lanes == 8)
        return 2;
    return 0;
}

enum vox_status vox_peak_measure(struct vox_ctx *ctx, struct vox_peak *p)
{
    enum vox_isa isa = ctx->cpu.isa;
    int threads = vox_ctx_threads(ctx);
    struct peak_job *job = vox_calloc(ctx, 1, sizeof *job);
    if (!job)
        return VOX_OUT_OF_MEMORY;
    p->threads = threads;
    p->lanes = peak_loops[isa].lanes;
    p->ghz = clock_ghz();
    p->gflops_1 = measure(NULL, 1, job, peak_loops[isa].loop, p->lanes);
    p->gflops_all = threads > 1 ? measure(ctx->pool, threads, job, peak_loops[isa].loop, p->lanes)
                                : p->gflops_1;
    p->fma_ports = documented_fma_ports(&ctx->cpu, p->lanes);
    p->fma_ports_documented = p->fma_ports > 0;
    if (!p->fma_ports_documented) {
        double per_cycle = p->gflops_1 / (2.0 * p->lanes * p->ghz);
        p->fma_ports = per_cycle < 0.5 ? 1 : (int)(per_cycle + 0.5);
    }
    vox_free(ctx, job);
    return VOX_OK;
}

struct stream_job {
    const float *a;
    float *b;
    int64_t n; /* floats per array */
    int parts;
    double seconds[1024];
};

/* b *= a on part lo[0] of the arrays (static: the same part each pass, so each thread's share stays
 * in its own pages); times its own pass. */
static void stream_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)hi;
    (void)tid;
    struct stream_job *j = arg;
    typedef float v8 __attribute__((vector_size(32)));
    const int64_t p = lo[0], i0 = j->n * p / j->parts / 8 * 8;
    const int64_t i1 = p + 1 == j->parts ? j->n : j->n * (p + 1) / j->parts / 8 * 8;
    double t0 = vox_time_now();
    for (int64_t i = i0; i < i1; i += 8) {
        v8 x, y;
        memcpy(&x, j->a + i, sizeof x);
        memcpy(&y, j->b + i, sizeof y);
        y *= x;
        memcpy(j->b + i, &y, sizeof y);
    }
    j->seconds[p] = vox_time_now() - t0;
}

static double stream_pass(struct vox_pool *pool, int parts, struct stream_job *j)
{
    double best = 0;
    j->parts = parts;
    for (int rep = 0; rep < 5; rep++) {
        vox_pool_for(parts > 1 ? pool : NULL, (int64_t[]){parts, 1, 1}, (int64_t[]){1, 1, 1},
                     VOX_SCHED_STATIC, stream_task, j);
        double slowest = 0;
        for (int t = 0; t < parts; t++)
            slowest = j->seconds[t] > slowest ? j->seconds[t] : slowest;
        double g = 3.0 * (double)j->n * sizeof(float) / slowest * 1e-9;
        best = g > best ? g : best;
    }
    return best;
}

/* Round trips of one cache line between pool threads 0 and 1 (the others idle): each waits
 * for the other's value, a bounded number of spins (a thread that never comes, as when the
 * pool runs the loop on one thread, ends it with the count 0). */
enum { TRIPS = 20000, WARM = 1000 }; /* timed after WARM (the other thread's wake-up) */
struct trip_job {
    int flag __attribute__((aligned(64)));
    int done[2];
    double seconds;
};

static void trip_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)hi;
    (void)tid;
    struct trip_job *j = arg;
    const int me = (int)lo[0];
    if (me > 1)
        return;
    double t0 = vox_time_now();
    int i = 0;
    for (; i < WARM + TRIPS; i++) {
        if (i == WARM)
            t0 = vox_time_now();
        const int want = 2 * i + me; /* thread 0 sees even values, 1 odd */
        int64_t spins = 0;
        while (__atomic_load_n(&j->flag, __ATOMIC_ACQUIRE) != want && ++spins < (INT64_C(1) << 26))
            ;
        if (spins >= (INT64_C(1) << 26))
            break;
        __atomic_store_n(&j->flag, want + 1, __ATOMIC_RELEASE);
    }
    j->done[me] = i;
    if (me == 0)
        j->seconds = vox_time_now() - t0;
}

static double round_trip_ns(struct vox_pool *pool, int threads)
{
    struct trip_job j = {0};
    vox_pool_for(pool, (int64_t[]){threads, 1, 1}, (int64_t[]){1, 1, 1}, VOX_SCHED_STATIC,
                 trip_task, &j);
    return j.done[0] == WARM + TRIPS && j.done[1] == WARM + TRIPS ? j.seconds / TRIPS * 1e9 : 0;
}

enum vox_status vox_bandwidth_measure(struct vox_ctx *ctx, int64_t bytes, struct vox_bandwidth *bw)
{
    memset(bw, 0, sizeof *bw);
    if (bytes <= 0) {
        bytes = INT64_C(64) << 20;
        bytes = 4 * ctx->cpu.l3_bytes > bytes ? 4 * ctx->cpu.l3_bytes : bytes;
    }
    const int64_t n = (bytes / (int64_t)sizeof(float) + 7) / 8 * 8;
    struct stream_job *j = vox_calloc(ctx, 1, sizeof *j);
    float *a = vox_alloc(ctx, (size_t)(2 * n) * sizeof *a);
    if (!j || !a) {
        vox_free(ctx, j);
        vox_free(ctx, a);
        return VOX_OUT_OF_MEMORY;
    }
    for (int64_t i = 0; i < 2 * n; i++)       /* every page touched before the timed passes */
        a[i] = 1.0f - (float)(i & 1) * 1e-7f; /* products stay normal over the passes */
    *j = (struct stream_job){.a = a, .b = a + n, .n = n};
    const int threads = vox_ctx_threads(ctx) < 1024 ? vox_ctx_threads(ctx) : 1024;
    bw->threads = threads;
    bw->bytes = n * (int64_t)sizeof(float);
    bw->gbs_1 = stream_pass(NULL, 1, j);
    bw->gbs_all = threads > 1 ? stream_pass(ctx->pool, threads, j) : bw->gbs_1;
    bw->round_trip_ns = threads > 1 ? round_trip_ns(ctx->pool, threads) : 0;
    vox_free(ctx, a);
    vox_free(ctx, j);
    return VOX_OK;
}
