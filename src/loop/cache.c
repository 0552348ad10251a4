/*
 * loop/cache.c: compiled kernels kept by nest, so conveniences called again and again with the
 * same shapes (vox_matmul_cached, layers of a net run patch after patch) compile once.
 *
 * A small array searched linearly: a cache holds tens of kernels, and comparing two nests
 * (vox_nest_equal) costs far less than the ~0.03 ms of a compile. When full, the least
 * recently used kernel is destroyed. A cache belongs to one thread at a time; the kernels it
 * returns may be run from anywhere while the cache lives and until they are evicted.
 */
#include "vox/loop.h"

#include <string.h>

struct cache_entry {
    struct vox_nest nest;
    struct vox_kernel_options opts;
    struct vox_kernel *kernel;
    uint64_t last_use;
};

struct vox_kernel_cache {
    struct vox_ctx *ctx;
    int capacity, n;
    uint64_t clock;
    int64_t hits, misses;
    struct cache_entry *e;
};

enum vox_status vox_kernel_cache_create(struct vox_ctx *ctx, int capacity,
                                        struct vox_kernel_cache **cache_out)
{
    *cache_out = NULL;
    if (capacity < 1 || capacity > 4096)
        return vox_fail(ctx, VOX_INVALID_ARG, "kernel cache capacity %d: expected 1 to 4096",
                        capacity);
    struct vox_kernel_cache *c = vox_calloc(ctx, 1, sizeof *c);
    if (!c)
        return VOX_OUT_OF_MEMORY;
    c->e = vox_calloc(ctx, (size_t)capacity, sizeof *c->e);
    if (!c->e) {
        vox_free(ctx, c);
        return VOX_OUT_OF_MEMORY;
    }
    c->ctx = ctx;
    c->capacity = capacity;
    *cache_out = c;
    return VOX_OK;
}

void vox_kernel_cache_destroy(struct vox_kernel_cache *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n; i++)
        vox_kernel_destroy(c->e[i].kernel);
    struct vox_ctx *ctx = c->ctx;
    vox_free(ctx, c->e);
    vox_free(ctx, c);
}

static bool same_options(const struct vox_kernel_options *a, const struct vox_kernel_options *b)
{
    return a->isa == b->isa && a->unroll == b->unroll && a->copies == b->copies &&
           a->threads == b->threads;
}

enum vox_status vox_kernel_cache_get(struct vox_kernel_cache *c, const struct vox_nest *nest,
                                     const struct vox_kernel_options *opts,
                                     const struct vox_kernel **kernel_out)
{
    static const struct vox_kernel_options defaults = {0};
    const struct vox_kernel_options *o = opts ? opts : &defaults;
    c->clock++;
    for (int i = 0; i < c->n; i++)
        if (same_options(&c->e[i].opts, o) && vox_nest_equal(&c->e[i].nest, nest)) {
            c->e[i].last_use = c->clock;
            c->hits++;
            *kernel_out = c->e[i].kernel;
            return VOX_OK;
        }
    struct vox_kernel *k;
    enum vox_status s = vox_nest_compile(c->ctx, nest, o, &k);
    if (s != VOX_OK)
        return s;
    c->misses++;
    int slot = c->n;
    if (c->n == c->capacity) {
        slot = 0;
        for (int i = 1; i < c->n; i++)
            if (c->e[i].last_use < c->e[slot].last_use)
                slot = i;
        vox_kernel_destroy(c->e[slot].kernel);
    } else {
        c->n++;
    }
    c->e[slot] = (struct cache_entry){*nest, *o, k, c->clock};
    *kernel_out = k;
    return VOX_OK;
}

void vox_kernel_cache_stats(const struct vox_kernel_cache *c, int64_t *hits_out,
                            int64_t *misses_out, int *size_out)
{
    *hits_out = c->hits;
    *misses_out = c->misses;
    *size_out = c->n;
}

enum vox_status vox_matmul_cached(struct vox_kernel_cache *c, int64_t M, int64_t N, int64_t K,
                                  float *C, int64_t ldc, const float *A, int64_t lda,
                                  const float *B, int64_t ldb, bool accumulate)
{
    if (ldc < N || lda < K || ldb < N)
        return vox_fail(c->ctx, VOX_INVALID_ARG,
                        "matmul: leading dimensions ldc %lld, lda %lld, ldb %lld must be >= "
                        "N %lld, K %lld, N %lld",
                        (long long)ldc, (long long)lda, (long long)ldb, (long long)N,
                        (long long)K, (long long)N);
    struct vox_nest nest;
    vox_nest_matmul(&nest, M, N, K, ldc, lda, ldb);
    nest.accumulate = accumulate;
    enum vox_status s = vox_nest_schedule_default(c->ctx, &nest, 0, 0, 0);
    const struct vox_kernel *k;
    if (s == VOX_OK)
        s = vox_kernel_cache_get(c, &nest, NULL, &k);
    if (s == VOX_OK)
        vox_kernel_run(k, C, A, B, NULL);
    return s;
}
