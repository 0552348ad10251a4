/*
 * test_core.c: status names, error messages, the allocator and its fault injection, tensors
 * (views, copies, blocked layout), the thread pool's partitions, CPU detection and the peak.
 */
#include "harness.h"
#include "core/internal.h" /* the allocation cache's counts */

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void test_status_names(struct vox_ctx *ctx)
{
    for (int s = 0; s < VOX_STATUS_COUNT; s++)
        CHECK(strlen(vox_status_str((enum vox_status)s)) > 0);
    CHECK(strcmp(vox_status_str((enum vox_status)99), "unknown status") == 0);
    CHECK(vox_fail(ctx, VOX_IO, "cannot open %s", "x.h5") == VOX_IO);
    CHECK(strcmp(vox_ctx_error(ctx), "cannot open x.h5") == 0);
    vox_ctx_error_prefix(ctx, "reading %s", "raw");
    CHECK(strcmp(vox_ctx_error(ctx), "reading raw: cannot open x.h5") == 0);
}

static void test_alloc_aligned_and_injected(struct vox_ctx *ctx)
{
    void *p[8];
    for (int i = 0; i < 8; i++) {
        p[i] = vox_alloc(ctx, (size_t)i * 13 + 1);
        CHECK(p[i] && ((uintptr_t)p[i] % VOX_ALIGN) == 0);
    }
    vox_ctx_fail_alloc_at(ctx, 2);
    void *a = vox_alloc(ctx, 16), *b = vox_alloc(ctx, 16), *c = vox_alloc(ctx, 16);
    CHECK(a && !b && c);
    CHECK_ERROR_HAS("out of memory");
    vox_free(ctx, a);
    vox_free(ctx, c);
    vox_free(ctx, NULL);
    for (int i = 0; i < 8; i++)
        vox_free(ctx, p[i]);
    CHECK(vox_ctx_live_allocs(ctx) == 0);
    CHECK(vox_calloc(ctx, SIZE_MAX / 2, 4) == NULL);
}

/* Large freed blocks are kept for reuse by the next allocation of any size (see sys_alloc in
 * src/core/ctx.c): a reused block handed out by vox_calloc is zeroed (fresh mapped pages need
 * no zeroing, reused ones do); one far larger than asked is cut down, one smaller grown with
 * its pages kept; and the blocks in use and cached together never exceed what was in use
 * before. (Under AddressSanitizer every block is malloc's: no reuse to see.) */
#if defined(__SANITIZE_ADDRESS__)
#define CHECK_REUSE(c) ((void)sizeof(c)) /* (names its variables: none unused) */
#else
#define CHECK_REUSE(c) CHECK(c)
#endif
static size_t nonzero_bytes(const unsigned char *p, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += p[i] != 0;
    return k;
}

static void test_alloc_reuse_and_calloc_zero(struct vox_ctx *ctx0)
{
    (void)ctx0; /* a context of its own: its cache starts empty */
    struct vox_ctx *ctx;
    struct vox_ctx_options opt = {.threads = 1};
    CHECK_OK(vox_ctx_create(&opt, &ctx));
    const size_t n = 3u << 20, mb = 1u << 20;
    unsigned char *a = vox_alloc(ctx, n);
    CHECK(a && ((uintptr_t)a % VOX_ALIGN) == 0);
    memset(a, 0xab, n);
    vox_free(ctx, a);
    unsigned char *b = vox_calloc(ctx, n / 8, 8);
    CHECK_REUSE(b == a); /* the same block, from the cache */
    CHECK(nonzero_bytes(b, n) == 0);
    memset(b, 0xcd, n);
    vox_free(ctx, b);
    unsigned char *c = vox_alloc(ctx, n / 4); /* 4x smaller: the block, its tail unmapped */
    CHECK(c);
    CHECK_REUSE(c == b && ctx->cache.n == 0);
    CHECK(c[0] == 0xcd || c != b);
    memset(c, 0x5a, n / 4);
    vox_free(ctx, c);
    unsigned char *d = vox_alloc(ctx, 2 * n); /* larger: grown, its pages kept */
    CHECK(d);
    CHECK_REUSE(nonzero_bytes(d, n / 4) == n / 4 && d[n / 8] == 0x5a);
    vox_free(ctx, d);
    unsigned char *e = vox_calloc(ctx, 1, 3 * n); /* grown again, zeroed */
    CHECK(e && nonzero_bytes(e, 3 * n) == 0);
    vox_free(ctx, e);
    /* four 1 MiB blocks cached, then 3 MiB asked: one grows, at least 2 MiB of the others go */
    void *p[4];
    for (int i = 0; i < 4; i++)
        CHECK((p[i] = vox_alloc(ctx, mb)) != NULL);
    CHECK_REUSE(ctx->cache.n == 0); /* (p[0] took e's block) */
    for (int i = 0; i < 4; i++)
        vox_free(ctx, p[i]);
    const size_t held = ctx->cache.bytes;
    void *q = vox_alloc(ctx, 3 * mb);
    CHECK(q);
    CHECK_REUSE(ctx->cache.bytes + 3 * mb <= held);
    vox_free(ctx, q);
    /* blocks larger than the cache go back to the system; many blocks do not overflow it */
    void *big = vox_alloc(ctx, (size_t)1200 << 20);
    CHECK(big != NULL);
    vox_free(ctx, big);
    CHECK(ctx->cache.bytes <= ((size_t)1 << 30));
    void *r[80];
    for (int i = 0; i < 80; i++)
        CHECK((r[i] = vox_calloc(ctx, 1, (size_t)(i + 1) << 18)) != NULL);
    for (int i = 0; i < 80; i++)
        vox_free(ctx, r[i]);
    CHECK(ctx->cache.n <= MAP_CACHE_SLOTS);
    CHECK(vox_ctx_live_allocs(ctx) == 0);
    vox_ctx_trim(ctx);
    CHECK(ctx->cache.n == 0 && ctx->cache.bytes == 0);
    vox_ctx_destroy(ctx);
}

#if !defined(__SANITIZE_ADDRESS__) /* (there every block is malloc's) */
/* THPeligible of the mapping that holds p, from /proc/self/smaps (-1: not found). */
static int thp_eligible(const void *p)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int inside = 0, r = -1;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        int v;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
            inside = (uintptr_t)p >= lo && (uintptr_t)p < hi;
        else if (inside && sscanf(line, "THPeligible: %d", &v) == 1)
            r = v;
    }
    if (f)
        fclose(f);
    return r;
}
#endif

/* vox_ctx_set_huge_pages: returns the previous setting; a mapping made while it is on asks for
 * huge pages (the kernel then marks it eligible where its mode is madvise or always), one made
 * while it is off does not in madvise mode. */
static void test_huge_pages(struct vox_ctx *ctx0)
{
    (void)ctx0;
    struct vox_ctx *ctx;
    struct vox_ctx_options opt = {.threads = 1};
    CHECK_OK(vox_ctx_create(&opt, &ctx));
    CHECK(vox_ctx_set_huge_pages(ctx, true) == false);
    CHECK(vox_ctx_set_huge_pages(ctx, true) == true);
    CHECK(vox_ctx_set_huge_pages(NULL, true) == false);
    char mode[128] = "";
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (f && !fgets(mode, sizeof mode, f))
        mode[0] = 0;
    if (f)
        fclose(f);
    const char *env = getenv("VOX_HUGEPAGES");
#if !defined(__SANITIZE_ADDRESS__) /* (there every block is malloc's) */
    if (!env && (strstr(mode, "[madvise]") || strstr(mode, "[always]"))) {
        void *on = vox_alloc(ctx, (size_t)8 << 20);
        CHECK(on && thp_eligible(on) == 1);
        vox_ctx_set_huge_pages(ctx, false);
        vox_ctx_trim(ctx);
        void *off = vox_alloc(ctx, (size_t)16 << 20); /* larger than the cached one: fresh */
        CHECK(off && (strstr(mode, "[always]") || thp_eligible(off) == 0));
        vox_free(ctx, on);
        vox_free(ctx, off);
    }
#endif
    (void)env;
    vox_ctx_destroy(ctx);
}

static void test_tensor_alloc_fault_injection(struct vox_ctx *ctx)
{
    int64_t shape[5] = {1, 5, 3, 4, 7};
    struct vox_tensor t;
    vox_ctx_fail_alloc_at(ctx, 1);
    CHECK_STATUS(vox_tensor_alloc(ctx, &t, VOX_F32, 5, shape), VOX_OUT_OF_MEMORY);
    CHECK(t.data == NULL);
    vox_tensor_free(ctx, &t);
    CHECK_OK(vox_tensor_alloc(ctx, &t, VOX_F32, 5, shape));
    struct vox_tensor b;
    vox_ctx_fail_alloc_at(ctx, 1);
    CHECK_STATUS(vox_tensor_to_blocked(ctx, &t, 8, &b), VOX_OUT_OF_MEMORY);
    vox_tensor_free(ctx, &t);
    CHECK(vox_ctx_live_allocs(ctx) == 0);
}

static void test_tensor_bad_args(struct vox_ctx *ctx)
{
    struct vox_tensor t;
    int64_t bad[2] = {3, -1}, ok[7] = {1, 1, 1, 1, 1, 1, 1};
    CHECK_STATUS(vox_tensor_alloc(ctx, &t, VOX_U8, 2, bad), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("negative");
    CHECK_STATUS(vox_tensor_alloc(ctx, &t, VOX_U8, 7, ok), VOX_UNSUPPORTED);
    int64_t huge[3] = {INT64_MAX / 4, 1000, 1000};
    CHECK_STATUS(vox_tensor_alloc(ctx, &t, VOX_U8, 3, huge), VOX_OUT_OF_MEMORY);
    enum vox_dtype d;
    CHECK(vox_dtype_parse("uint64", &d) && d == VOX_U64);
    CHECK(vox_dtype_parse("f32", &d) && d == VOX_F32);
    CHECK(!vox_dtype_parse("float64", &d));
}

static void test_tensor_views_and_copy(struct vox_ctx *ctx)
{
    int64_t shape[3] = {4, 5, 6};
    struct vox_tensor t, u;
    CHECK_OK(vox_tensor_alloc(ctx, &t, VOX_U16, 3, shape));
    uint16_t *d = t.data;
    for (int64_t i = 0; i < 120; i++)
        d[i] = (uint16_t)i;
    struct vox_tensor v;
    int64_t lo[3] = {1, 2, 3}, hi[3] = {3, 5, 5};
    CHECK_OK(vox_tensor_view_box(ctx, &t, lo, hi, &v));
    CHECK(v.base == NULL && v.shape[0] == 2 && v.shape[1] == 3 && v.shape[2] == 2);
    int64_t idx[3] = {1, 2, 1};
    CHECK(*(uint16_t *)vox_tensor_at(&v, idx) == (2 * 30 + 4 * 6 + 4));
    CHECK(!vox_tensor_is_contiguous(&v));
    int64_t vs[3] = {2, 3, 2};
    CHECK_OK(vox_tensor_alloc(ctx, &u, VOX_U16, 3, vs));
    CHECK_OK(vox_tensor_copy(ctx, &u, &v));
    CHECK(((uint16_t *)u.data)[11] == (2 * 30 + 4 * 6 + 4));
    int64_t badhi[3] = {3, 6, 5};
    CHECK_STATUS(vox_tensor_view_box(ctx, &t, lo, badhi, &v), VOX_INVALID_ARG);
    CHECK_OK(vox_tensor_view_axis(ctx, &t, 0, 2, 3, &v));
    CHECK(v.shape[0] == 1 && *(uint16_t *)v.data == 60);
    CHECK_STATUS(vox_tensor_view_axis(ctx, &t, 3, 0, 1, &v), VOX_INVALID_ARG);
    CHECK_STATUS(vox_tensor_copy(ctx, &u, &t), VOX_INVALID_ARG);
    vox_tensor_free(ctx, &u);
    vox_tensor_free(ctx, &t);
    vox_tensor_free(ctx, &v); /* a view: no-op */
}

static void test_tensor_blocked_roundtrip(struct vox_ctx *ctx)
{
    const int64_t channels[] = {1, 7, 8, 9, 16, 17, 33};
    for (int b = 8; b <= 16; b += 8)
        for (size_t k = 0; k < sizeof channels / sizeof channels[0]; k++) {
            int64_t shape[5] = {2, channels[k], 3, 2, 5};
            struct vox_tensor t, bl, back;
            CHECK_OK(vox_tensor_alloc(ctx, &t, VOX_F32, 5, shape));
            CHECK_OK(vox_tensor_alloc(ctx, &back, VOX_F32, 5, shape));
            float *d = t.data;
            for (int64_t i = 0; i < vox_tensor_numel(&t); i++)
                d[i] = (float)i + 0.5f;
            CHECK_OK(vox_tensor_to_blocked(ctx, &t, b, &bl));
            CHECK(bl.shape[1] == (channels[k] + b - 1) / b && bl.shape[5] == b);
            /* channel c of voxel (n, z, y, x) lands at block c/b, lane c%b; the tail is 0 */
            int64_t ti[5] = {1, channels[k] - 1, 2, 1, 4};
            int64_t bi[6] = {1, (channels[k] - 1) / b, 2, 1, 4, (channels[k] - 1) % b};
            CHECK(*(float *)vox_tensor_at(&bl, bi) == *(float *)vox_tensor_at(&t, ti));
            if (channels[k] % b) {
                bi[5] = b - 1;
                CHECK(*(float *)vox_tensor_at(&bl, bi) == 0.0f);
            }
            CHECK_OK(vox_tensor_from_blocked(ctx, &bl, &back));
            CHECK(memcmp(back.data, t.data, vox_tensor_nbytes(&t)) == 0);
            vox_tensor_free(ctx, &t);
            vox_tensor_free(ctx, &bl);
            vox_tensor_free(ctx, &back);
        }
}

struct cover {
    _Atomic int64_t hits[7 * 5 * 3];
    int owner[7 * 5 * 3];
};

static void cover_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    struct cover *c = arg;
    for (int64_t z = lo[0]; z < hi[0]; z++)
        for (int64_t y = lo[1]; y < hi[1]; y++)
            for (int64_t x = lo[2]; x < hi[2]; x++) {
                atomic_fetch_add(&c->hits[(z * 5 + y) * 3 + x], 1);
                c->owner[(z * 5 + y) * 3 + x] = tid;
            }
}

static void test_pool_covers_range_once(struct vox_ctx *ctx)
{
    const int64_t tiles[][3] = {{1, 1, 1}, {2, 2, 2}, {3, 5, 3}, {0, 0, 0}, {4, 1, 2}};
    for (int threads = 1; threads <= 3; threads++) {
        struct vox_pool *pool;
        CHECK_OK(vox_pool_create(ctx, threads, false, &pool));
        for (size_t k = 0; k < sizeof tiles / sizeof tiles[0]; k++)
            for (int sched = 0; sched < 3; sched++) { /* static, dynamic, affine */
                static struct cover c, first;
                memset(&c, 0, sizeof c);
                int64_t n[3] = {7, 5, 3};
                vox_pool_for(pool, n, tiles[k], (enum vox_schedule)sched, cover_task, &c);
                for (int i = 0; i < 105; i++)
                    CHECK(c.hits[i] == 1);
                if (sched != VOX_SCHED_STATIC)
                    continue;
                /* static: the same owner every time, and the serial fallback agrees */
                memcpy(&first, &c, sizeof c);
                memset(&c, 0, sizeof c);
                vox_pool_for(pool, n, tiles[k], VOX_SCHED_STATIC, cover_task, &c);
                CHECK(memcmp(first.owner, c.owner, sizeof c.owner) == 0);
            }
        vox_pool_destroy(pool);
    }
    vox_pool_destroy(NULL);
    struct vox_pool *pool;
    CHECK_STATUS(vox_pool_create(ctx, 0, false, &pool), VOX_INVALID_ARG);
}

struct affine_run {
    int owner[40], order[40];
    int next;
};

/* Tile 0, the head of worker 0's run, waits (2 s at most) until tile 19, the tail of that run,
 * has run: only a steal from the run's end can do it meanwhile. */
static void slow_head_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    struct affine_run *r = arg;
    (void)hi;
    const double t0 = vox_time_now();
    while (lo[0] == 0 && __atomic_load_n(&r->owner[19], __ATOMIC_ACQUIRE) < 0 &&
           vox_time_now() - t0 < 2)
        ;
    r->order[lo[0]] = __atomic_fetch_add(&r->next, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&r->owner[lo[0]], tid, __ATOMIC_RELEASE);
}

/* The affine schedule: each worker starts on its static run; a worker done with its own takes
 * the others' tiles from their ends (worker 1 takes worker 0's while its first tile runs). */
static void test_pool_affine(struct vox_ctx *ctx)
{
    struct vox_pool *pool;
    CHECK_OK(vox_pool_create(ctx, 2, false, &pool));
    struct affine_run r;
    memset(&r, 0xff, sizeof r);
    r.next = 0;
    vox_pool_for(pool, (int64_t[]){40, 1, 1}, (int64_t[]){1, 1, 1}, VOX_SCHED_AFFINE,
                 slow_head_task, &r);
    CHECK(r.owner[0] == 0);
    CHECK(r.owner[19] == 1); /* taken from the end of worker 0's run */
    CHECK(r.order[20] < r.order[19] && r.order[19] < r.order[18]); /* its own run first */
    for (int t = 20; t < 40; t++) /* worker 0 was busy with tile 0 all along */
        CHECK(r.owner[t] == 1);
    vox_pool_destroy(pool);
}

static void sum_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    int64_t *partial = arg;
    for (int64_t i = lo[0]; i < hi[0]; i++)
        partial[tid * 8] += i;
}

static void test_pool_static_owner_matches_serial(struct vox_ctx *ctx)
{
    /* With a NULL pool the static schedule reports the worker the pool would have used. */
    int64_t a[16 * 8] = {0}, b[16 * 8] = {0};
    int64_t n[3] = {1000, 1, 1}, tile[3] = {7, 1, 1};
    vox_pool_for(vox_ctx_pool(ctx), n, tile, VOX_SCHED_STATIC, sum_task, a);
    struct vox_pool *one;
    CHECK_OK(vox_pool_create(ctx, 2, false, &one));
    vox_pool_for(one, n, tile, VOX_SCHED_STATIC, sum_task, b);
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(a[0] + a[8] == 999 * 1000 / 2);
    vox_pool_destroy(one);
}

static void test_pool_zero(struct vox_ctx *ctx)
{
    const size_t mib = (size_t)1 << 20, sizes[] = {0, 1, mib - 1, mib, 3 * mib + 5};
    uint8_t *buf = malloc(4 * mib + 64);
    CHECK(buf != NULL);
    for (int threads = 1; buf && threads <= 3; threads++) {
        struct vox_pool *pool;
        CHECK_OK(vox_pool_create(ctx, threads, false, &pool));
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            memset(buf, 0xab, 4 * mib + 64);
            vox_pool_zero(pool, buf + 7, sizes[k]); /* an unaligned start */
            size_t bad = 0;
            for (size_t i = 0; i < 4 * mib + 64; i++)
                bad += buf[i] != (i >= 7 && i < 7 + sizes[k] ? 0 : 0xab);
            CHECK(bad == 0);
        }
        vox_pool_destroy(pool);
    }
    free(buf);
}

static void count_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    __atomic_add_fetch((int64_t *)arg, hi[0] - lo[0], __ATOMIC_RELAXED);
}

/* Many short jobs back to back and some after a pause longer than the spin, with the spin
 * off, tiny and default: a lost wake-up hangs here (the ctest timeout). */
static void test_pool_spin_and_sleep(struct vox_ctx *ctx)
{
    const char *spins[] = {"0", "1", NULL};
    for (size_t k = 0; k < sizeof spins / sizeof spins[0]; k++) {
        if (spins[k])
            setenv("VOX_POOL_SPIN_US", spins[k], 1);
        else
            unsetenv("VOX_POOL_SPIN_US");
        struct vox_pool *pool;
        CHECK_OK(vox_pool_create(ctx, 2, false, &pool));
        int64_t total = 0;
        const int64_t n[3] = {8, 1, 1}, tile[3] = {1, 1, 1};
        for (int i = 0; i < 20000; i++) {
            if (i % 2000 == 0)
                usleep(1000);
            vox_pool_for(pool, n, tile, i & 1 ? VOX_SCHED_DYNAMIC : VOX_SCHED_STATIC, count_task,
                         &total);
        }
        CHECK(total == 8 * 20000);
        vox_pool_destroy(pool);
    }
    unsetenv("VOX_POOL_SPIN_US");
}

/* Background work: up to `left` pieces, each counted; false once none is left. */
struct idle_work {
    int64_t left, done;
};

static bool idle_piece(void *arg)
{
    struct idle_work *w = arg;
    if (__atomic_sub_fetch(&w->left, 1, __ATOMIC_RELAXED) < 0)
        return false;
    __atomic_add_fetch(&w->done, 1, __ATOMIC_RELAXED);
    return true;
}

/* Tile 0 (the caller's, static) busy until the other threads have run every piece of the
 * work (or 2 s; 20 ms on a pool of 1 thread): they wait meanwhile. */
static void busy_first(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)hi, (void)tid;
    const struct idle_work *w = arg;
    const double end =
        vox_time_now() + (__atomic_load_n(&w->left, __ATOMIC_RELAXED) > 1000 ? 0.02 : 2.0);
    while (lo[0] == 0 && __atomic_load_n(&w->left, __ATOMIC_RELAXED) > 0 && vox_time_now() < end)
        ;
}

/* vox_pool_set_idle: a waiting thread runs the pieces (all of them, within the caller's 20
 * ms), with the spin off too (the waits between loops still run them); a pool of 1 thread
 * never; after set_idle(NULL) no more are run. */
static void test_pool_idle(struct vox_ctx *ctx)
{
    for (int threads = 1; threads <= 2; threads++)
        for (int spin = 0; spin < 2; spin++) {
            if (!spin)
                setenv("VOX_POOL_SPIN_US", "0", 1);
            struct vox_pool *pool;
            CHECK_OK(vox_pool_create(ctx, threads, false, &pool));
            unsetenv("VOX_POOL_SPIN_US");
            struct idle_work w = {threads == 1 ? 100000 : 100, 0};
            vox_pool_set_idle(pool, idle_piece, &w);
            const int64_t n[3] = {threads, 1, 1}, tile[3] = {1, 1, 1};
            vox_pool_for(pool, n, tile, VOX_SCHED_STATIC, busy_first, &w);
            vox_pool_set_idle(pool, NULL, NULL);
            const int64_t done = __atomic_load_n(&w.done, __ATOMIC_RELAXED);
            CHECK(threads == 1 ? done == 0 : done == 100);
            w.left = 100000; /* unregistered: nothing runs them now (20 ms) */
            vox_pool_for(pool, n, tile, VOX_SCHED_STATIC, busy_first, &w);
            CHECK(__atomic_load_n(&w.done, __ATOMIC_RELAXED) == done);
            vox_pool_destroy(pool);
        }
}

static void test_cpu_and_isa_cap(struct vox_ctx *ctx)
{
    struct vox_cpu c;
    char err[128];
    CHECK_OK(vox_cpu_detect(&c, NULL, err, sizeof err));
    CHECK(c.cores >= 1 && c.l1d_bytes > 0 && c.l2_bytes > 0);
    CHECK(c.isa == c.isa_max);
    if (c.isa_max == VOX_ISA_AVX512)
        CHECK(c.avx2 && c.fma && c.avx512f);
    CHECK_OK(vox_cpu_detect(&c, "ref", err, sizeof err));
    CHECK(c.isa == VOX_ISA_REF);
    CHECK_OK(vox_cpu_detect(&c, "avx512", err, sizeof err));
    CHECK(c.isa == c.isa_max);
    CHECK(vox_cpu_detect(&c, "sse9", err, sizeof err) == VOX_INVALID_ARG);
    CHECK(strstr(err, "sse9") != NULL);
}

/* The bandwidth pass: positive figures on 1 and all threads, the arrays' size as asked
 * (rounded to whole vectors), a round trip between two threads where there are two. */
static void test_bandwidth_positive(struct vox_ctx *ctx)
{
    struct vox_bandwidth bw;
    CHECK_OK(vox_bandwidth_measure(ctx, (INT64_C(1) << 20) + 4, &bw));
    CHECK(bw.gbs_1 > 0 && bw.gbs_all > 0);
    CHECK(bw.threads == vox_ctx_threads(ctx));
    CHECK(bw.bytes == (INT64_C(1) << 20) + 32);
    CHECK(vox_ctx_threads(ctx) < 2 || bw.round_trip_ns > 0);
    CHECK(vox_ctx_threads(ctx) > 1 || bw.round_trip_ns == 0);
}

static void test_peak_positive(struct vox_ctx *ctx)
{
    struct vox_peak p;
    CHECK_OK(vox_peak_measure(ctx, &p));
    CHECK(p.gflops_1 > 0.5 && p.gflops_all >= 0.5 * p.gflops_1 && p.ghz > 0.2);
    CHECK(p.lanes == (vox_ctx_cpu(ctx)->isa == VOX_ISA_AVX512 ? 16
                      : vox_ctx_cpu(ctx)->isa == VOX_ISA_AVX2 ? 8 : 1));
}

VOX_TEST_MAIN(VOX_TEST(test_status_names), VOX_TEST(test_alloc_aligned_and_injected),
              VOX_TEST(test_alloc_reuse_and_calloc_zero), VOX_TEST(test_huge_pages),
              VOX_TEST(test_tensor_alloc_fault_injection), VOX_TEST(test_tensor_bad_args),
              VOX_TEST(test_tensor_views_and_copy), VOX_TEST(test_tensor_blocked_roundtrip),
              VOX_TEST(test_pool_covers_range_once), VOX_TEST(test_pool_affine),
              VOX_TEST(test_pool_static_owner_matches_serial), VOX_TEST(test_pool_zero),
              VOX_TEST(test_pool_spin_and_sleep), VOX_TEST(test_pool_idle),
              VOX_TEST(test_cpu_and_isa_cap), VOX_TEST(test_peak_positive),
              VOX_TEST(test_bandwidth_positive))
