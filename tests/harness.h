/*
 * harness.h: the tiny test harness every C test uses.
 *
 * A test file defines `static void test_x(struct vox_ctx *ctx)` functions and lists them in a
 * table with VOX_TESTS(...). Each test gets a fresh context; a test fails when a CHECK fails
 * or when it leaks an allocation made through the context. `--full` runs the full tier
 * (tests read `vox_test_full` to widen their seeds), `--only NAME` runs one test. The run
 * ends with the line "N passed, N failed".
 */
#ifndef VOX_TEST_HARNESS_H
#define VOX_TEST_HARNESS_H

#include "vox/core.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int vox_test_failures;
static int vox_test_full;
static const char *vox_test_argv0;

#define CHECK(c)                                                                              \
    do {                                                                                      \
        if (!(c)) {                                                                           \
            fprintf(stderr, "  FAIL %s:%d: %s\n", __FILE__, __LINE__, #c);                    \
            vox_test_failures++;                                                              \
        }                                                                                     \
    } while (0)

#define CHECK_OK(expr)                                                                        \
    do {                                                                                      \
        enum vox_status s_ = (expr);                                                          \
        if (s_ != VOX_OK) {                                                                   \
            fprintf(stderr, "  FAIL %s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #expr,        \
                    vox_status_str(s_), vox_ctx_error(ctx));                                  \
            vox_test_failures++;                                                              \
        }                                                                                     \
    } while (0)

#define CHECK_STATUS(expr, want)                                                              \
    do {                                                                                      \
        enum vox_status s_ = (expr);                                                          \
        if (s_ != (want)) {                                                                   \
            fprintf(stderr, "  FAIL %s:%d: %s -> %s, expected %s (%s)\n", __FILE__, __LINE__,  \
                    #expr, vox_status_str(s_), vox_status_str(want), vox_ctx_error(ctx));     \
            vox_test_failures++;                                                              \
        }                                                                                     \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                 \
    do {                                                                                      \
        double a_ = (a), b_ = (b);                                                            \
        if (!(fabs(a_ - b_) <= (tol))) {                                                      \
            fprintf(stderr, "  FAIL %s:%d: %s = %.12g, %s = %.12g (tol %g)\n", __FILE__,       \
                    __LINE__, #a, a_, #b, b_, (double)(tol));                                 \
            vox_test_failures++;                                                              \
        }                                                                                     \
    } while (0)

/* The error message contains `needle` (user-facing messages must say what was wrong). */
#define CHECK_ERROR_HAS(needle)                                                               \
    do {                                                                                      \
        if (!strstr(vox_ctx_error(ctx), (needle))) {                                          \
            fprintf(stderr, "  FAIL %s:%d: error \"%s\" lacks \"%s\"\n", __FILE__, __LINE__,   \
                    vox_ctx_error(ctx), (needle));                                            \
            vox_test_failures++;                                                              \
        }                                                                                     \
    } while (0)

struct vox_test {
    const char *name;
    void (*fn)(struct vox_ctx *ctx);
};

#define VOX_TEST(fn) {#fn, fn}

static inline int vox_test_main(int argc, char **argv, const struct vox_test *tests, int n)
{
    const char *only = NULL;
    vox_test_argv0 = argv[0];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--full") == 0)
            vox_test_full = 1;
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
    }
    int passed = 0, failed = 0;
    for (int i = 0; i < n; i++) {
        if (only && strcmp(only, tests[i].name) != 0)
            continue;
        struct vox_ctx *ctx;
        struct vox_ctx_options opt = {.threads = 2, .log_level = VOX_LOG_WARN};
        if (vox_ctx_create(&opt, &ctx) != VOX_OK) {
            fprintf(stderr, "cannot create a context\n");
            return 1;
        }
        int before = vox_test_failures;
        tests[i].fn(ctx);
        if (vox_ctx_live_allocs(ctx) != 0) {
            fprintf(stderr, "  FAIL %s: %lld allocations leaked\n", tests[i].name,
                    (long long)vox_ctx_live_allocs(ctx));
            vox_test_failures++;
        }
        vox_ctx_destroy(ctx);
        bool ok = vox_test_failures == before;
        printf("%s %s\n", ok ? "ok  " : "FAIL", tests[i].name);
        ok ? passed++ : failed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#define VOX_TEST_MAIN(...)                                                                    \
    int main(int argc, char **argv)                                                           \
    {                                                                                         \
        static const struct vox_test tests_[] = {__VA_ARGS__};                                \
        return vox_test_main(argc, argv, tests_, (int)(sizeof tests_ / sizeof tests_[0]));    \
    }

/* A deterministic generator for test data (splitmix64). */
static inline uint64_t vox_test_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#endif
