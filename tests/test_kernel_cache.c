/*
 * test_kernel_cache.c: the kernel cache: equal nests share one compiled kernel, different
 * shapes or options do not, the least recently used kernel is evicted when full, results equal
 * the uncached vox_matmul bit for bit, and bad arguments and allocation failures are handled.
 */
#include "harness.h"

#include "vox/loop.h"

static void fill(float *v, int64_t n, uint64_t seed)
{
    for (int64_t i = 0; i < n; i++)
        v[i] = (float)((int64_t)(vox_test_rand(&seed) % 2001) - 1000) / 1000.0f;
}

static void test_cache_hits_and_results(struct vox_ctx *ctx)
{
    struct vox_kernel_cache *c;
    CHECK_OK(vox_kernel_cache_create(ctx, 2, &c));
    static const int64_t shapes[][3] = {{17, 33, 9}, {64, 48, 32}, {17, 33, 9}, {5, 1, 70}};
    float *A = vox_alloc(ctx, 64 * 70 * sizeof(float)), *B = vox_alloc(ctx, 70 * 48 * sizeof(float));
    float *C1 = vox_alloc(ctx, 64 * 48 * sizeof(float)), *C2 = vox_alloc(ctx, 64 * 48 * sizeof(float));
    fill(A, 64 * 70, 1);
    fill(B, 70 * 48, 2);
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        int64_t M = shapes[i][0], N = shapes[i][1], K = shapes[i][2];
        CHECK_OK(vox_matmul_cached(c, M, N, K, C1, N, A, K, B, N, false));
        CHECK_OK(vox_matmul(ctx, M, N, K, C2, N, A, K, B, N, false));
        CHECK(memcmp(C1, C2, (size_t)(M * N) * sizeof(float)) == 0);
    }
    int64_t hits, misses;
    int size;
    vox_kernel_cache_stats(c, &hits, &misses, &size);
    /* 17x33x9 twice (one hit), then 5x1x70 evicts the least recently used (64x48x32) */
    CHECK(hits == 1 && misses == 3 && size == 2);
    CHECK_OK(vox_matmul_cached(c, 64, 48, 32, C1, 48, A, 32, B, 48, false));
    vox_kernel_cache_stats(c, &hits, &misses, &size);
    CHECK(hits == 1 && misses == 4);
    CHECK_OK(vox_matmul_cached(c, 5, 1, 70, C1, 1, A, 70, B, 1, false));
    vox_kernel_cache_stats(c, &hits, &misses, &size);
    CHECK(hits == 2 && misses == 4);

    /* The same nest with other options is another kernel. */
    struct vox_nest nest;
    vox_nest_matmul(&nest, 8, 16, 4, 16, 4, 16);
    const struct vox_kernel *k1, *k2, *k3;
    struct vox_kernel_options one = {.threads = 1};
    CHECK_OK(vox_kernel_cache_get(c, &nest, NULL, &k1));
    CHECK_OK(vox_kernel_cache_get(c, &nest, &one, &k2));
    CHECK_OK(vox_kernel_cache_get(c, &nest, &one, &k3));
    CHECK(k1 != k2 && k2 == k3);

    CHECK_STATUS(vox_matmul_cached(c, 4, 4, 4, C1, 3, A, 4, B, 4, false), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("leading dimensions");
    vox_kernel_cache_destroy(c);
    vox_kernel_cache_destroy(NULL);
    vox_free(ctx, A);
    vox_free(ctx, B);
    vox_free(ctx, C1);
    vox_free(ctx, C2);
}

static void test_cache_bad_args_and_faults(struct vox_ctx *ctx)
{
    struct vox_kernel_cache *c;
    CHECK_STATUS(vox_kernel_cache_create(ctx, 0, &c), VOX_INVALID_ARG);
    CHECK(c == NULL);
    for (int n = 1; n <= 2; n++) {
        vox_ctx_fail_alloc_at(ctx, n);
        CHECK_STATUS(vox_kernel_cache_create(ctx, 4, &c), VOX_OUT_OF_MEMORY);
        CHECK(c == NULL);
    }
    vox_ctx_fail_alloc_at(ctx, 0);
    CHECK_OK(vox_kernel_cache_create(ctx, 4, &c));
    struct vox_nest bad;
    vox_nest_init(&bad);
    const struct vox_kernel *k;
    CHECK(vox_kernel_cache_get(c, &bad, NULL, &k) != VOX_OK);
    int64_t hits, misses;
    int size;
    vox_kernel_cache_stats(c, &hits, &misses, &size);
    CHECK(size == 0 && misses == 0);
    vox_kernel_cache_destroy(c);
}

VOX_TEST_MAIN(VOX_TEST(test_cache_hits_and_results), VOX_TEST(test_cache_bad_args_and_faults))
