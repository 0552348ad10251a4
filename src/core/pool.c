/*
 * pool.c: a persistent thread pool with a parallel-for over 1D-3D tiled ranges.
 *
 * The caller's thread is worker 0, so a pool of 1 thread creates no threads at all. A job is
 * published by bumping a generation counter under a mutex; workers wake, take tiles, and the
 * last one to finish signals the caller. Tiles are numbered in C order over the tile grid.
 *
 *   static:  worker t takes tiles [t*T/P, (t+1)*T/P): the same tiles every time for the same
 *            pool size, which is what makes per-thread partial results reproducible.
 *   dynamic: workers take the next tile from an atomic counter (load balance, no fixed map).
 *   affine:  static's runs, but a worker done with its own run takes the last tiles of the
 *            others' (each run one atomic word: its front and back): a worker mostly works on
 *            what it wrote in an affine loop before (a conv's band pack, then its tiles), and a
 *            slow thread does not hold the loop back. Which worker runs a tile varies.
 *
 * A parallel-for issued from inside a task (or while another is running) runs inline on the
 * calling thread rather than deadlocking.
 *
 * A waiting thread (a worker between jobs, the caller waiting for the workers) spins for up to
 * VOX_POOL_SPIN_US microseconds (default 200) before it sleeps on its condition variable:
 * waking a sleeping thread costs tens of microseconds on a VM, and a training step issues
 * about 400 short parallel loops (VD2D3D at 6x128x128: 800 futex calls a step without the
 * spin, 2 threads 4 % slower). The spin yields the core often, so processes sharing the
 * cores lose little; 0 turns it off. While it waits, a thread runs the pool's background work
 * (vox_pool_set_idle: the training step's weight update), a block at a time.
 */
#include "core/internal.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

struct job {
    vox_task_fn fn;
    void *arg;
    int64_t n[3], tile[3], grid[3];
    int64_t tiles;
    enum vox_schedule sched;
    int64_t next; /* dynamic: next tile (atomic) */
};

/* Affine: worker t's run of tiles [front, back) (one word, so a take from either end is one
 * compare-and-swap), a cache line each. */
struct run {
    uint64_t word; /* front | back << 32 (atomic) */
    char pad[56];
};

struct vox_pool {
    int threads;
    pthread_t *tids;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    uint64_t generation; /* (atomic: read without the mutex while spinning) */
    int pending; /* workers (other than the caller) still running the current job (atomic) */
    bool stop;
    double spin; /* seconds a waiting thread spins before it sleeps */
    int busy;    /* a job is in flight (atomic) */
    struct job job;
    struct run *runs;        /* affine: one per worker */
    bool (*idle_fn)(void *); /* vox_pool_set_idle (atomic) */
    void *idle_arg;
    int idle_inside; /* threads inside idle_fn (atomic) */
};

/* Background work while *word == value (vox_pool_set_idle): one call of the idle fn at a
 * time, until it has nothing left or the word changes. */
static void run_idle(struct vox_pool *pool, const void *word, uint64_t value, bool wide)
{
    for (;;) {
        const uint64_t v = wide ? __atomic_load_n((const uint64_t *)word, __ATOMIC_ACQUIRE)
                                : (uint64_t)__atomic_load_n((const int *)word, __ATOMIC_ACQUIRE);
        if (v != value)
            return;
        __atomic_add_fetch(&pool->idle_inside, 1, __ATOMIC_SEQ_CST);
        bool (*fn)(void *) = __atomic_load_n(&pool->idle_fn, __ATOMIC_SEQ_CST);
        const bool more = fn && fn(__atomic_load_n(&pool->idle_arg, __ATOMIC_SEQ_CST));
        __atomic_sub_fetch(&pool->idle_inside, 1, __ATOMIC_SEQ_CST);
        if (!more)
            return;
    }
}

struct worker_arg {
    struct vox_pool *pool;
    int tid;
    int cpu; /* -1: not pinned */
};

static void run_tile(const struct job *j, int64_t t, int tid)
{
    int64_t c[3] = {t / (j->grid[1] * j->grid[2]), (t / j->grid[2]) % j->grid[1],
                    t % j->grid[2]};
    int64_t lo[3], hi[3];
    for (int a = 0; a < 3; a++) {
        lo[a] = c[a] * j->tile[a];
        hi[a] = lo[a] + j->tile[a] < j->n[a] ? lo[a] + j->tile[a] : j->n[a];
    }
    j->fn(j->arg, lo, hi, tid);
}

/* The worker that the static partition gives tile i of T among P: the inverse of
 * [t*T/P, (t+1)*T/P). */
static int static_owner(int64_t i, int64_t tiles, int threads)
{
    return (int)(((i + 1) * threads - 1) / tiles);
}

/* The tile taken from the front (or back) of run r, or -1 when it is empty. */
static int64_t take(struct run *r, bool back)
{
    uint64_t w = __atomic_load_n(&r->word, __ATOMIC_RELAXED);
    for (;;) {
        const uint64_t f = w & 0xffffffffu, b = w >> 32;
        if (f >= b)
            return -1;
        const uint64_t nw = back ? f | (b - 1) << 32 : (f + 1) | b << 32;
        if (__atomic_compare_exchange_n(&r->word, &w, nw, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return (int64_t)(back ? b - 1 : f);
    }
}

static void run_share(struct vox_pool *pool, struct job *j, int tid, int threads)
{
    if (j->sched == VOX_SCHED_AFFINE) {
        for (int64_t t; (t = take(&pool->runs[tid], false)) >= 0;)
            run_tile(j, t, tid);
        for (int k = 1; k < threads; k++)
            for (int64_t t; (t = take(&pool->runs[(tid + k) % threads], true)) >= 0;)
                run_tile(j, t, tid);
        return;
    }
    if (j->sched == VOX_SCHED_STATIC) {
        int64_t b = j->tiles * tid / threads, e = j->tiles * (tid + 1) / threads;
        for (int64_t t = b; t < e; t++)
            run_tile(j, t, tid);
        return;
    }
    for (;;) {
        int64_t t = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        if (t >= j->tiles)
            break;
        run_tile(j, t, tid);
    }
}

/* Spins while *word == value, for at most `spin` seconds; true if it changed. Waking a thread
 * asleep on a condition variable costs tens of microseconds on a VM (the vCPU halts), and a
 * training step or an octree node issues hundreds of short parallel loops. The spin yields
 * the core every 64 pauses: with more threads than cores (two test processes of 2 threads on
 * 2 cores) a spin without it made the quick test tier 16.0 -> 20.4 s; with it 15.9 s. */
static bool spin_while(struct vox_pool *pool, const void *word, uint64_t value, bool wide,
                       double spin)
{
    if (spin <= 0)
        return false;
    double end = 0;
    for (int i = 0;; i++) {
        uint64_t v = wide ? __atomic_load_n((const uint64_t *)word, __ATOMIC_ACQUIRE)
                          : (uint64_t)__atomic_load_n((const int *)word, __ATOMIC_ACQUIRE);
        if (v != value)
            return true;
        if ((i & 63) == 0 && __atomic_load_n(&pool->idle_fn, __ATOMIC_RELAXED)) {
            run_idle(pool, word, value, wide); /* work posted while this thread waits */
            end = 0;
        }
        if ((i & 63) == 0) {
            double now = vox_time_now();
            if (end == 0)
                end = now + spin;
            else if (now > end)
                return false;
            sched_yield(); /* a thread of another process waiting for this core runs now */
        }
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
}

static void *worker_main(void *p)
{
    struct worker_arg wa = *(struct worker_arg *)p;
    free(p);
    struct vox_pool *pool = wa.pool;
    if (wa.cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(wa.cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    }
    uint64_t seen = 0;
    for (;;) {
        run_idle(pool, &pool->generation, seen, true);
        spin_while(pool, &pool->generation, seen, true, pool->spin);
        pthread_mutex_lock(&pool->mu);
        while (!pool->stop && __atomic_load_n(&pool->generation, __ATOMIC_RELAXED) == seen)
            pthread_cond_wait(&pool->wake, &pool->mu);
        if (pool->stop)
            break;
        seen = pool->generation;
        pthread_mutex_unlock(&pool->mu);
        run_share(pool, &pool->job, wa.tid, pool->threads);
        pthread_mutex_lock(&pool->mu);
        if (__atomic_sub_fetch(&pool->pending, 1, __ATOMIC_RELEASE) == 0)
            pthread_cond_signal(&pool->done);
        pthread_mutex_unlock(&pool->mu);
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

static void pool_stop(struct vox_pool *pool, int started)
{
    pthread_mutex_lock(&pool->mu);
    pool->stop = true;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 0; i < started; i++)
        pthread_join(pool->tids[i], NULL);
}

static bool start_worker(struct vox_pool *pool, int slot, int cpu)
{
    struct worker_arg *wa = malloc(sizeof *wa);
    if (!wa)
        return false;
    *wa = (struct worker_arg){pool, slot + 1, cpu};
    if (pthread_create(&pool->tids[slot], NULL, worker_main, wa) != 0) {
        free(wa);
        return false;
    }
    return true;
}

enum vox_status vox_pool_create(struct vox_ctx *ctx, int threads, bool pin,
                                struct vox_pool **pool_out)
{
    *pool_out = NULL;
    if (threads < 1 || threads > 1024)
        return vox_fail(ctx, VOX_INVALID_ARG, "threads = %d: expected 1 to 1024", threads);
    struct vox_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return vox_fail(ctx, VOX_OUT_OF_MEMORY, "out of memory creating the thread pool");
    pool->threads = threads;
    const char *sp = getenv("VOX_POOL_SPIN_US");
    pool->spin = (sp ? atof(sp) : 200) * 1e-6;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pthread_cond_init(&pool->done, NULL);
    pool->tids = calloc((size_t)threads, sizeof *pool->tids);
    pool->runs = aligned_alloc(64, (size_t)threads * sizeof *pool->runs);
    if (!pool->tids || !pool->runs)
        goto fail_mem;
    int ncpu = ctx ? ctx->cpu.cores : 1;
    int started = 0;
    while (started < threads - 1 && start_worker(pool, started, pin ? (started + 1) % ncpu : -1))
        started++;
    if (started < threads - 1) {
        pool_stop(pool, started);
        goto fail_mem;
    }
    if (pin) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(0, &set);
        pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    }
    *pool_out = pool;
    return VOX_OK;
fail_mem:
    free(pool->runs);
    free(pool->tids);
    free(pool);
    return vox_fail(ctx, VOX_OUT_OF_MEMORY, "out of memory creating the thread pool");
}

void vox_pool_destroy(struct vox_pool *pool)
{
    if (!pool)
        return;
    pool_stop(pool, pool->threads - 1);
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->wake);
    pthread_cond_destroy(&pool->done);
    free(pool->runs);
    free(pool->tids);
    free(pool);
}

int vox_pool_threads(const struct vox_pool *pool) { return pool ? pool->threads : 1; }

void vox_pool_for(struct vox_pool *pool, const int64_t n[3], const int64_t tile[3],
                  enum vox_schedule sched, vox_task_fn fn, void *arg)
{
    struct job j = {.fn = fn, .arg = arg, .sched = sched};
    j.tiles = 1;
    for (int a = 0; a < 3; a++) {
        j.n[a] = n[a];
        if (n[a] <= 0)
            return;
        j.tile[a] = tile && tile[a] > 0 && tile[a] < n[a] ? tile[a] : n[a];
        j.grid[a] = (n[a] + j.tile[a] - 1) / j.tile[a];
        j.tiles *= j.grid[a];
    }
    int expected = 0;
    if (!pool || pool->threads == 1 || j.tiles == 1 ||
        !__atomic_compare_exchange_n(&pool->busy, &expected, 1, false, __ATOMIC_ACQUIRE,
                                     __ATOMIC_RELAXED)) {
        /* Serial: the same tiles in the same order. With a static schedule each tile still
         * reports the worker it would have had, so per-thread buffers stay consistent. */
        int threads = pool ? pool->threads : 1;
        for (int64_t t = 0; t < j.tiles; t++)
            run_tile(&j, t, sched == VOX_SCHED_DYNAMIC ? 0 : static_owner(t, j.tiles, threads));
        return;
    }
    if (sched == VOX_SCHED_AFFINE && j.tiles >= (INT64_C(1) << 32))
        j.sched = VOX_SCHED_DYNAMIC; /* beyond a run word's halves */
    for (int t = 0; j.sched == VOX_SCHED_AFFINE && t < pool->threads; t++)
        pool->runs[t].word = (uint64_t)(j.tiles * t / pool->threads) |
                             (uint64_t)(j.tiles * (t + 1) / pool->threads) << 32;
    pthread_mutex_lock(&pool->mu);
    pool->job = j;
    __atomic_store_n(&pool->pending, pool->threads - 1, __ATOMIC_RELAXED);
    __atomic_store_n(&pool->generation, pool->generation + 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mu);
    run_share(pool, &pool->job, 0, pool->threads);
    for (int p; (p = __atomic_load_n(&pool->pending, __ATOMIC_ACQUIRE)) > 0;) {
        run_idle(pool, &pool->pending, (uint64_t)p, false);
        if (!spin_while(pool, &pool->pending, (uint64_t)p, false, pool->spin))
            break;
    }
    pthread_mutex_lock(&pool->mu);
    while (__atomic_load_n(&pool->pending, __ATOMIC_RELAXED) > 0)
        pthread_cond_wait(&pool->done, &pool->mu);
    pthread_mutex_unlock(&pool->mu);
    __atomic_store_n(&pool->busy, 0, __ATOMIC_RELEASE);
}

void vox_pool_set_idle(struct vox_pool *pool, bool (*fn)(void *), void *arg)
{
    if (!pool)
        return;
    if (fn) /* the argument first: a thread that sees fn sees it */
        __atomic_store_n(&pool->idle_arg, arg, __ATOMIC_SEQ_CST);
    __atomic_store_n(&pool->idle_fn, fn, __ATOMIC_SEQ_CST);
    while (!fn && __atomic_load_n(&pool->idle_inside, __ATOMIC_SEQ_CST) > 0)
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#else
        ;
#endif
}

struct zero_job {
    uint8_t *p;
    size_t bytes, piece;
};

static void zero_piece(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    const struct zero_job *j = arg;
    for (int64_t k = lo[0]; k < hi[0]; k++) {
        size_t at = (size_t)k * j->piece, n = j->bytes - at < j->piece ? j->bytes - at : j->piece;
        memset(j->p + at, 0, n);
    }
}

void vox_pool_zero(struct vox_pool *pool, void *p, size_t bytes)
{
    struct zero_job j = {p, bytes, (size_t)1 << 20};
    const int64_t n[3] = {(int64_t)((bytes + j.piece - 1) / j.piece), 1, 1}, tile[3] = {1, 1, 1};
    if (bytes)
        vox_pool_for(pool, n, tile, VOX_SCHED_STATIC, zero_piece, &j);
}
