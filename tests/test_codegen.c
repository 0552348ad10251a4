/*
 * test_codegen.c: compiled loop nests against the interpreter (the oracle): hand-picked nests
 * (matmul layouts, GEMV, batched, conv 2D/3D NCDHW and blocked, max-pooling, fused bias+ReLU,
 * accumulate, tile edges), a randomised differential stress test over sizes 2^r + tail,
 * splits, orders, unroll limits and every ISA the CPU has, invalid inputs, and threads.
 *
 * Tolerances (float32):
 *   sums of products       |jit - ref| <= 2e-6 * (terms per output) * (1 + |ref|) (FMA rounding
 *                          and the reordered accumulators); max/min nests the same
 *   elu, sigmoid, tanh     |jit - libm| <= 4e-7 * |libm| + 1e-37 (the JIT's vector expm1 vs
 *                          libm's expm1f/expf/tanhf; measured: tanh 2 ulp, the others 1 ulp)
 */
#include "harness.h"
#include "vox/loop.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

struct bufs {
    float *mem[VOX_NEST_TENSORS + VOX_NEST_MAX_EXTRA];
    float *ptr[VOX_NEST_TENSORS + VOX_NEST_MAX_EXTRA];
    int64_t len[VOX_NEST_TENSORS + VOX_NEST_MAX_EXTRA];
};

static void bufs_free(struct vox_ctx *ctx, struct bufs *b)
{
    for (int t = 0; t < VOX_NEST_TENSORS + VOX_NEST_MAX_EXTRA; t++)
        vox_free(ctx, b->mem[t]);
}

/* Allocates every tensor of the nest with random values in [-1, 1]. */
static bool bufs_alloc(struct vox_ctx *ctx, const struct vox_nest *nest, struct bufs *b,
                       uint64_t *seed)
{
    memset(b, 0, sizeof *b);
    int n = VOX_NEST_TENSORS + vox_nest_extra_count(nest), e = 0;
    for (int t = 0; t < n; t++) {
        const int64_t *st = nest->strides[t < VOX_NEST_TENSORS ? t : 0];
        if (t >= VOX_NEST_TENSORS) {
            int k = 0;
            for (int pass = 0; pass < 2; pass++)
                for (int i = 0; i < (pass ? nest->npost : nest->npre); i++) {
                    const struct vox_nest_eltwise *op = pass ? &nest->post[i] : &nest->pre[i];
                    if (vox_nest_eltwise_info(op->kind)->has_tensor && k++ == e)
                        st = op->strides;
                }
            e++;
        }
        int64_t lo, hi;
        vox_nest_span(nest, st, &lo, &hi);
        b->len[t] = hi - lo + 1;
        b->mem[t] = vox_alloc(ctx, (size_t)b->len[t] * sizeof(float));
        if (!b->mem[t])
            return false;
        for (int64_t i = 0; i < b->len[t]; i++)
            b->mem[t][i] = (float)((double)(vox_test_rand(seed) % 2001) / 1000.0 - 1.0);
        b->ptr[t] = b->mem[t] - lo;
    }
    return true;
}

/* Runs the nest through the interpreter and a kernel (isa, opts) and compares C. */
static bool check_nest(struct vox_ctx *ctx, const struct vox_nest *nest,
                       const struct vox_kernel_options *opts, uint64_t seed, const char *what)
{
    struct bufs b;
    bool ok = false;
    float *ref = NULL;
    struct vox_kernel *k = NULL;
    if (!bufs_alloc(ctx, nest, &b, &seed))
        goto done;
    ref = vox_alloc(ctx, (size_t)b.len[0] * sizeof(float));
    if (!ref)
        goto done;
    memcpy(ref, b.mem[0], (size_t)b.len[0] * sizeof(float));
    float *ref_c = ref + (b.ptr[0] - b.mem[0]);
    const float *const *extra = (const float *const *)&b.ptr[VOX_NEST_TENSORS];
    if (vox_nest_interpret(ctx, nest, ref_c, b.ptr[1], b.ptr[2], extra) != VOX_OK)
        goto done;
    if (vox_nest_compile(ctx, nest, opts, &k) != VOX_OK)
        goto done;
    vox_kernel_run(k, b.ptr[0], b.ptr[1], b.ptr[2], extra);
    double terms = vox_nest_points(nest) / (double)b.len[0];
    ok = true;
    for (int64_t i = 0; i < b.len[0] && ok; i++) {
        double r = ref[i], x = b.mem[0][i];
        if (fabs(r - x) > 2e-6 * (terms + 1) * (1 + fabs(r)) && !(isinf(r) && r == x)) {
            char text[1024];
            vox_nest_print(ctx, nest, text, sizeof text, NULL);
            fprintf(stderr, "%s: isa %d: C[%lld] = %.8g, interpreter %.8g\n  %s\n", what,
                    opts ? opts->isa - 1 : -1, (long long)i, x, r, text);
            ok = false;
        }
    }
done:
    CHECK(ok);
    vox_kernel_destroy(k);
    vox_free(ctx, ref);
    bufs_free(ctx, &b);
    return ok;
}

/* The JIT ISAs this CPU has. */
static int jit_isas(struct vox_ctx *ctx, int *isas)
{
    int n = 0;
    const struct vox_cpu *cpu = vox_ctx_cpu(ctx);
    if (cpu->isa_max >= VOX_ISA_AVX2)
        isas[n++] = VOX_ISA_AVX2;
    if (cpu->isa_max >= VOX_ISA_AVX512)
        isas[n++] = VOX_ISA_AVX512;
    return n;
}

/* Parses the text and checks it under every ISA (and the reference kernel). */
static void check_text(struct vox_ctx *ctx, const char *text)
{
    struct vox_nest nest;
    if (vox_nest_parse(ctx, text, &nest) != VOX_OK) {
        fprintf(stderr, "parse failed: %s: %s\n", text, vox_ctx_error(ctx));
        CHECK(false);
        return;
    }
    int isas[3], n = jit_isas(ctx, isas);
    isas[n++] = VOX_ISA_REF;
    for (int i = 0; i < n; i++) {
        struct vox_kernel_options o = {.isa = VOX_KERNEL_ISA(isas[i]), .threads = 1};
        check_nest(ctx, &nest, &o, 7, text);
    }
}

static void test_matmul_layouts(struct vox_ctx *ctx)
{
    static const char *const texts[] = {
        "dims m=37 n=45 k=29; order m:1 n:1 k:1; C[m:45,n:1] += A[m:29,k:1] * B[k:45,n:1]",
        "dims m=37 n=45 k=29; order m:1 k:1 n:1; C[m:45,n:1] += A[m:29,k:1] * B[k:45,n:1]",
        "dims m=37 n=45 k=29; order k:1 m:1 n:1; C[m:45,n:1] += A[m:29,k:1] * B[k:45,n:1]",
        "dims m=37 n=45 k=29; order m:6 n:32 k:1 m:1 n:1; C[m:45,n:1] += A[k:37,m:1] * "
        "B[k:1,n:29]",
        "dims m=64 n=64 k=64; order m:6 n:48 k:1 m:1 n:1; C[m:64,n:1] += A[m:64,k:1] * "
        "B[k:64,n:1]",
        "dims m=50 n=17 k=40; order k:16 m:8 n:16 k:1 m:1 n:1; C[m:17,n:1] += A[m:40,k:1] * "
        "B[k:17,n:1]",
        "dims m=7 n=9 k=5; order n:1 m:1 k:1; C[m:1,n:7] += A[m:5,k:1] * B[k:9,n:1]",
        "dims m=16 n=8 k=3; order m:1 n:1 k:1; C[m:8,n:1] += A[m:3,k:1] * B[k:8,n:1]",
        "dims m=1 n=1 k=1; order m:1 n:1 k:1; C[m:1,n:1] += A[m:1,k:1] * B[k:1,n:1]",
        "dims m=3 n=300 k=4; order m:1 k:1 n:1; C[m:300,n:1] += A[m:4,k:1] * B[k:300,n:1]",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        check_text(ctx, texts[i]);
}

static void test_gemv_batched(struct vox_ctx *ctx)
{
    check_text(ctx, "dims m=33 k=70; order m:1 k:1; C[m:1] += A[m:70,k:1] * B[k:1]");
    check_text(ctx, "dims m=33 k=70; order k:1 m:1; C[m:1] += A[m:70,k:1] * B[k:1]");
    check_text(ctx, "dims b=3 m=9 n=20 k=11; order b:1 m:1 k:1 n:1; "
                    "C[b:180,m:20,n:1] += A[b:99,m:11,k:1] * B[b:220,k:20,n:1]");
}

static void test_conv(struct vox_ctx *ctx)
{
    /* 2D NCHW: out[o, y, x] += in[c, y+ky, x+kx] * w[o, c, ky, kx] */
    check_text(ctx, "dims o=5 c=3 y=6 x=19 ky=3 kx=3; order o:1 c:1 ky:1 kx:1 y:1 x:1; "
                    "C[o:114,y:19,x:1] += A[c:168,y:21,x:1,ky:21,kx:1] * "
                    "B[o:27,c:9,ky:3,kx:1]");
    /* 3D NCDHW, register tile over x */
    check_text(ctx, "dims o=4 c=2 z=3 y=4 x=18 kz=2 ky=3 kx=3; "
                    "order o:1 z:1 y:1 c:1 kz:1 ky:1 kx:1 x:1; "
                    "C[o:216,z:72,y:18,x:1] += A[c:480,z:120,y:20,x:1,kz:120,ky:20,kx:1] * "
                    "B[o:36,c:18,kz:9,ky:3,kx:1]");
    /* blocked: channels innermost (8 per block), vectorised along the output channel */
    check_text(ctx, "dims y=5 x=7 c=8 o=8 ky=3 kx=3; order y:1 x:1 ky:1 kx:1 c:1 o:1; "
                    "C[y:56,x:8,o:1] += A[y:72,x:8,ky:72,kx:8,c:1] * B[ky:192,kx:64,c:8,o:1]");
}

static void test_pool_bias_relu_accumulate(struct vox_ctx *ctx)
{
    check_text(ctx, "dims y=6 x=21 ky=2 kx=2; order y:1 ky:1 kx:1 x:1; "
                    "C[y:21,x:1] max= A[y:44,x:2,ky:22,kx:1] + B[]");
    check_text(ctx, "dims m=9 n=21 k=7; order m:1 k:1 n:1; C[m:21,n:1] max= A[m:7,k:1] * "
                    "B[k:21,n:1]");
    check_text(ctx, "dims m=9 n=21 k=7; order m:1 k:1 n:1; C[m:21,n:1] min= A[m:7,k:1] * "
                    "B[k:21,n:1]");
    check_text(ctx, "dims m=13 n=35 k=9; order m:4 n:16 k:1 m:1 n:1; C[m:35,n:1] += "
                    "A[m:9,k:1] * B[k:35,n:1]; post bias[n:1] relu");
    check_text(ctx, "dims m=13 n=35 k=9; order k:4 m:1 n:1 k:1; C[m:35,n:1] += "
                    "A[m:9,k:1] * B[k:35,n:1]; post bias[m:1] relu scale(0.5)");
    check_text(ctx, "dims m=13 n=35 k=9; order m:1 n:1 k:1; C[m:35,n:1] += "
                    "A[m:9,k:1] * B[k:35,n:1]; pre relu bias[k:1] scale(2); post sigmoid");
    check_text(ctx, "dims m=13 n=35 k=9; order m:1 k:1 n:1; C[m:35,n:1] += "
                    "A[m:9,k:1] * B[k:35,n:1]; accumulate");
    check_text(ctx, "dims m=13 n=35 k=9; order m:1 k:1 n:1; C[m:35,n:1] += "
                    "A[m:1,k:13] * B[k:35,n:1]; pre mul[m:1,k:13] elu");
}

static void test_tile_edges(struct vox_ctx *ctx)
{
    static const int64_t sizes[] = {1, 7, 8, 9, 15, 16, 17, 31, 33, 48, 49};
    char text[512];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int64_t n = sizes[i], m = sizes[(i + 3) % 11];
        snprintf(text, sizeof text,
                 "dims m=%lld n=%lld k=5; order m:6 n:32 k:1 m:1 n:1; C[m:%lld,n:1] += "
                 "A[m:5,k:1] * B[k:%lld,n:1]",
                 (long long)m, (long long)n, (long long)n, (long long)n);
        check_text(ctx, text);
    }
}

/* Compiles under every JIT ISA, checks against the interpreter and that reduction vectors
 * were (want = true) or were not chosen. */
static void check_rv(struct vox_ctx *ctx, const char *text, bool want)
{
    struct vox_nest nest;
    CHECK_OK(vox_nest_parse(ctx, text, &nest));
    int isas[2], n = jit_isas(ctx, isas);
    for (int i = 0; i < n; i++) {
        struct vox_kernel_options o = {.isa = VOX_KERNEL_ISA(isas[i]), .threads = 1};
        check_nest(ctx, &nest, &o, 11, text);
        struct vox_kernel *k;
        CHECK_OK(vox_nest_compile(ctx, &nest, &o, &k));
        if (vox_kernel_info(k)->reduction_vectors != want)
            fprintf(stderr, "reduction vectors %d, want %d: %s\n",
                    vox_kernel_info(k)->reduction_vectors, want, text);
        CHECK(vox_kernel_info(k)->reduction_vectors == want);
        vox_kernel_destroy(k);
    }
}

/* Vectors along a reduction (GEMV, N = 1, C strided): tails of every length around the
 * vector widths, several C elements per tile, accumulate, fused post-ops, k split above the
 * tile (C reloaded), the reduction innermost or above output loops. */
static void test_reduction_vectors(struct vox_ctx *ctx)
{
    static const int64_t ks[] = {5, 8, 9, 16, 17, 31, 33, 64, 100};
    char text[512];
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        long long K = ks[i], M = 1 + (long long)i * 3;
        snprintf(text, sizeof text, "dims m=%lld k=%lld; order m:1 k:1; C[m:1] += A[m:%lld,k:1] "
                 "* B[k:1]", M, K, K);
        check_rv(ctx, text, true);
        snprintf(text, sizeof text, "dims m=%lld n=1 k=%lld; order m:6 k:1 m:1 n:1; C[m:1,n:1] "
                 "+= A[m:%lld,k:1] * B[k:1,n:1]%s", M, K, K, i % 2 ? "; accumulate" : "");
        check_rv(ctx, text, true);
    }
    check_rv(ctx, "dims m=13 n=1 k=37; order k:16 m:7 k:1 m:1 n:1; C[m:1,n:1] += A[m:37,k:1] * "
                  "B[k:1,n:1]; post bias[m:1] relu", true);
    check_rv(ctx, "dims m=13 n=1 k=37; order m:7 k:1 m:1 n:1; C[m:1,n:1] += A[m:37,k:1] * "
                  "B[k:1,n:1]; post bias[m:1] scale(0.5) relu; accumulate", true);
    /* C strided along the innermost output dimension, B transposed (both stride 1 along k) */
    check_rv(ctx, "dims m=9 n=11 k=45; order n:1 k:1 m:1; C[m:11,n:1] += A[m:45,k:1] * "
                  "B[k:1,n:45]", true);
    /* a batched dot product: B broadcast along k (stride 0), A packed */
    check_rv(ctx, "dims b=5 k=70; order b:1 k:1; C[b:1] += A[b:70,k:1] * B[b:1]", true);
    /* not chosen: a full-width output vector, max-reduction, pre-ops, k strided in A and B */
    check_rv(ctx, "dims m=9 n=40 k=45; order m:1 k:1 n:1; C[m:40,n:1] += A[m:45,k:1] * "
                  "B[k:40,n:1]", false);
    check_rv(ctx, "dims m=9 k=45; order m:1 k:1; C[m:1] max= A[m:45,k:1] * B[k:1]", false);
    check_rv(ctx, "dims m=9 k=45; order m:1 k:1; C[m:1] += A[m:45,k:1] * B[k:1]; pre relu",
             false);
    check_rv(ctx, "dims m=9 k=45; order m:1 k:1; C[m:1] += A[m:1,k:9] * B[k:2]", false);
}

/* k blocks above the register tile: the first block starts C at the identity (random C
 * before the run must not leak in), later ones reload it, the last fuses the post-ops; k
 * tails, one block, two k levels, k outermost (the entry's static loop), max reductions. */
static void test_k_blocks(struct vox_ctx *ctx)
{
    static const char *const orders[] = {
        "m:12 k:32 n:16 m:6 k:1 m:1 n:1", "m:12 k:50 n:16 m:6 k:1 m:1 n:1",
        "m:12 k:128 n:16 m:6 k:1 m:1 n:1", "k:40 m:8 k:8 n:16 m:4 k:1 m:1 n:1",
        "k:16 m:6 k:1 m:1 n:1", "n:32 k:24 m:6 n:16 k:1 m:1 n:1"};
    static const char *const tails[] = {"", "; post bias[n:1] relu", "; accumulate",
                                        "; post scale(0.5) relu; accumulate"};
    char text[512];
    for (size_t i = 0; i < sizeof orders / sizeof orders[0]; i++)
        for (size_t j = 0; j < sizeof tails / sizeof tails[0]; j++) {
            snprintf(text, sizeof text, "dims m=37 n=45 k=100; order %s; C[m:45,n:1] %s "
                     "A[m:100,k:1] * B[k:45,n:1]%s", orders[i], j == 0 && i % 2 ? "max=" : "+=",
                     tails[j]);
            check_text(ctx, text);
        }
    /* B rows >= 2 KB apart: software prefetch in the runtime k loop */
    check_text(ctx, "dims m=13 n=40 k=70; order m:6 k:1 m:1 n:1; C[m:40,n:1] += A[m:70,k:1] * "
                    "B[k:600,n:1]");
    struct vox_nest nest;
    CHECK_OK(vox_nest_parse(ctx, "dims m=37 n=45 k=100; order m:12 k:32 n:16 m:6 k:1 m:1 n:1; "
                            "C[m:45,n:1] += A[m:100,k:1] * B[k:45,n:1]; post bias[n:1] relu",
                            &nest));
    struct vox_kernel *k;
    CHECK_OK(vox_nest_compile(ctx, &nest, NULL, &k));
    const struct vox_kernel_info *info = vox_kernel_info(k);
    CHECK(!info->jit || info->post_fused);
    vox_kernel_destroy(k);
}

/* A random nest: matmul-like or conv-like dims of size 2^r + tail, random splits/order. */
static void random_nest(struct vox_nest *nest, uint64_t *seed)
{
    vox_nest_init(nest);
    int nd = 2 + (int)(vox_test_rand(seed) % 3);
    static const char *const names[] = {"a", "b", "c", "d"};
    for (int d = 0; d < nd; d++) {
        int r = (int)(vox_test_rand(seed) % 5);
        vox_nest_dim_add(nest, names[d], (1 << r) + (int64_t)(vox_test_rand(seed) % 4));
    }
    /* C over the first nd - 1 dims (or all when rand says so), dense, random layout order */
    bool all_out = vox_test_rand(seed) % 4 == 0;
    int64_t span = 1;
    for (int d = nd - 1; d >= 0; d--) {
        if (d == nd - 1 && !all_out)
            continue;
        nest->strides[VOX_NEST_C][d] = span;
        span *= nest->dims[d].size;
    }
    for (int t = 1; t < 3; t++) {
        int64_t sp = 1;
        for (int d = 0; d < nd; d++) {
            int dd = vox_test_rand(seed) % 2 ? d : nd - 1 - d;
            if (nest->strides[t][dd] || vox_test_rand(seed) % 3 == 0)
                continue;
            nest->strides[t][dd] = sp;
            sp *= nest->dims[dd].size;
        }
    }
    nest->compute = vox_test_rand(seed) % 5 == 0 ? VOX_NEST_MAX_MUL : VOX_NEST_PLUS_MUL;
    nest->accumulate = vox_test_rand(seed) % 4 == 0;
    /* order: a random permutation, each dim optionally split once */
    int perm[4] = {0, 1, 2, 3};
    for (int i = nd - 1; i > 0; i--) {
        int j = (int)(vox_test_rand(seed) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int i = 0; i < nd; i++)
        if (vox_test_rand(seed) % 2)
            vox_nest_loop_add(nest, perm[i], 1 + (int64_t)(vox_test_rand(seed) % 20));
    for (int i = 0; i < nd; i++)
        vox_nest_loop_add(nest, perm[(i + 1) % nd], 1);
}

static void test_random(struct vox_ctx *ctx)
{
    uint64_t seed = 12345;
    int isas[2], n = jit_isas(ctx, isas), count = vox_test_full ? 3000 : 300, failures = 0;
    int valid = 0;
    for (int i = 0; i < count && failures < 5; i++) {
        struct vox_nest nest;
        random_nest(&nest, &seed);
        if (vox_nest_validate(ctx, &nest) != VOX_OK) {
            vox_ctx_clear_error(ctx);
            continue;
        }
        valid++;
        for (int j = 0; j < n; j++) {
            struct vox_kernel_options o = {.isa = VOX_KERNEL_ISA(isas[j]),
                                           .unroll = (int)(vox_test_rand(&seed) % 80),
                                           .copies = (int)(vox_test_rand(&seed) % 5),
                                           .threads = 1};
            failures += !check_nest(ctx, &nest, &o, seed, "random");
        }
    }
    /* The generator must mostly make valid nests, or this test checks little. */
    printf("  random: %d of %d nests valid, each on %d ISA(s)\n", valid, count, n);
    CHECK(failures > 0 || valid >= count / 2);
}

/* The exp-based ops (ELU, sigmoid, tanh) in registers against libm, as post-ops and pre-ops,
 * over [-100, 100] and around the points where the vector code changes regime (|x| near
 * ln2 / 2, the clamp at 87, tiny and denormal arguments). Tolerance (the vector expm1: ~1-2
 * ulp, and one rounding per operation after it): |jit - libm| <= 4e-7 |libm| + 1e-37. */
static bool exp_op_ok(float x, float got, float ref, const char *op, int isa)
{
    if (fabsf(got - ref) <= 4e-7f * fabsf(ref) + 1e-37f)
        return true;
    fprintf(stderr, "%s(%.9g): isa %d: %.9g, libm %.9g\n", op, x, isa, got, ref);
    return false;
}

static void test_exp_ops(struct vox_ctx *ctx)
{
    enum { N = 4099 };
    static const float special[] = {0.0f,       -0.0f,   1e-30f,   -1e-30f,  1e-40f, -1e-40f,
                                    1e-7f,      -1e-7f,  0.34657f, -0.34657f, 0.3466f, -0.3466f,
                                    87.0f,      -87.0f,  87.4f,    -87.4f,   88.7f,  -88.7f,
                                    -103.0f,    20.0f,   -20.0f,   9.0f,     -9.0f,  1.0f};
    static const char *const ops[] = {"elu", "sigmoid", "tanh"};
    float *x = vox_alloc(ctx, N * sizeof(float)), *y = vox_alloc(ctx, N * sizeof(float));
    float one = 1.0f;
    CHECK(x && y);
    if (!x || !y)
        goto done;
    for (int i = 0; i < N; i++)
        x[i] = i < 24 ? special[i] : -100.0f + 200.0f * (float)(i - 24) / (N - 25);
    int isas[2], nisa = jit_isas(ctx, isas);
    for (int o = 0; o < 3; o++)
        for (int pre = 0; pre < 2; pre++)
            for (int s = 0; s < nisa; s++) {
                char text[256];
                snprintf(text, sizeof text,
                         "dims n=%d k=1; order n:1 k:1; C[n:1] += A[n:1] * B[k:1]; %s %s", N,
                         pre ? "pre" : "post", ops[o]);
                struct vox_nest nest;
                struct vox_kernel *k;
                struct vox_kernel_options opt = {.isa = VOX_KERNEL_ISA(isas[s]), .threads = 1};
                CHECK_OK(vox_nest_parse(ctx, text, &nest));
                if (vox_nest_compile(ctx, &nest, &opt, &k) != VOX_OK) {
                    CHECK(false);
                    continue;
                }
                CHECK(vox_kernel_info(k)->jit);
                vox_kernel_run(k, y, x, &one, NULL);
                vox_kernel_destroy(k);
                const struct vox_nest_eltwise_info *info =
                    vox_nest_eltwise_info(o == 0 ? VOX_NEST_ELU : o == 1 ? VOX_NEST_SIGMOID
                                                                          : VOX_NEST_TANH);
                bool ok = true;
                for (int i = 0; i < N && ok; i++)
                    ok = exp_op_ok(x[i], y[i], info->fn(x[i], 0.0f, 0.0f), ops[o], isas[s]);
                CHECK(ok);
            }
done:
    vox_free(ctx, x);
    vox_free(ctx, y);
}

static void test_invalid(struct vox_ctx *ctx)
{
    struct vox_nest nest;
    vox_nest_init(&nest);
    struct vox_kernel *k = (struct vox_kernel *)&nest;
    CHECK_STATUS(vox_nest_compile(ctx, &nest, NULL, &k), VOX_INVALID_ARG);
    CHECK(k == NULL);
    CHECK_OK(vox_nest_parse(ctx, "dims m=3 k=4; order m:1 k:1; C[m:1] += A[m:4,k:1] * B[k:1]",
                            &nest));
    struct vox_kernel_options o = {.isa = 7};
    CHECK_STATUS(vox_nest_compile(ctx, &nest, &o, &k), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("options.isa");
    o.isa = VOX_KERNEL_ISA_AUTO;
    o.copies = 9;
    CHECK_STATUS(vox_nest_compile(ctx, &nest, &o, &k), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("copies");
    nest.order[1].step = 2;
    CHECK_STATUS(vox_nest_compile(ctx, &nest, NULL, &k), VOX_INVALID_ARG);
    float c[4];
    CHECK_STATUS(vox_matmul(ctx, 2, 2, 2, c, 1, c, 2, c, 2, false), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("leading");
    CHECK_STATUS(vox_matmul(ctx, 0, 2, 2, c, 2, c, 2, c, 2, false), VOX_INVALID_ARG);
    /* allocation failures give a status and leak nothing */
    CHECK_OK(vox_nest_parse(ctx, "dims m=3 k=4; order m:1 k:1; C[m:1] += A[m:4,k:1] * B[k:1]",
                            &nest));
    for (int64_t n = 1; n < 6; n++) {
        int64_t live = vox_ctx_live_allocs(ctx);
        vox_ctx_fail_alloc_at(ctx, n);
        enum vox_status s = vox_nest_compile(ctx, &nest, NULL, &k);
        vox_ctx_fail_alloc_at(ctx, 0);
        if (s == VOX_OK)
            vox_kernel_destroy(k);
        CHECK(vox_ctx_live_allocs(ctx) == live);
    }
}

/* Runs the nest's kernel for 1 and for 2 threads from b's C as it is (c2: a 2-thread
 * context): c1 gets the 1-thread result, b's C the 2-thread one, *info2 that kernel's info;
 * whether the two are the same bits. */
static bool threads_alike(struct vox_ctx *c2, const struct vox_nest *nest, struct bufs *b,
                          float *c1, struct vox_kernel_info *info2)
{
    const size_t bytes = (size_t)b->len[0] * sizeof(float);
    float *c0 = vox_alloc(c2, bytes);
    struct vox_kernel *k1 = NULL, *k2 = NULL;
    struct vox_kernel_options o1 = {.isa = VOX_KERNEL_ISA_AUTO, .threads = 1};
    struct vox_kernel_options o2 = {.isa = VOX_KERNEL_ISA_AUTO, .threads = 2};
    bool ok = c0 && vox_nest_compile(c2, nest, &o1, &k1) == VOX_OK &&
              vox_nest_compile(c2, nest, &o2, &k2) == VOX_OK;
    if (ok) {
        memcpy(c0, b->mem[0], bytes); /* (an accumulating nest adds to C) */
        vox_kernel_run(k1, b->ptr[0], b->ptr[1], b->ptr[2], NULL);
        memcpy(c1, b->mem[0], bytes);
        memcpy(b->mem[0], c0, bytes);
        vox_kernel_run(k2, b->ptr[0], b->ptr[1], b->ptr[2], NULL);
        ok = memcmp(c1, b->mem[0], bytes) == 0;
        *info2 = *vox_kernel_info(k2);
    }
    vox_kernel_destroy(k1);
    vox_kernel_destroy(k2);
    vox_free(c2, c0);
    return ok;
}

static void test_matmul_default_and_threads(struct vox_ctx *ctx)
{
    static const int64_t shapes[][3] = {{64, 64, 64}, {100, 75, 131}, {1, 333, 50}, {13, 1, 7}};
    for (int i = 0; i < 4; i++) {
        struct vox_nest nest;
        int64_t M = shapes[i][0], N = shapes[i][1], K = shapes[i][2];
        vox_nest_matmul(&nest, M, N, K, N, K, N);
        CHECK_OK(vox_nest_schedule_default(ctx, &nest, 0, 0, 0));
        int isas[2], n = jit_isas(ctx, isas);
        for (int j = 0; j < n; j++) {
            struct vox_kernel_options o = {.isa = VOX_KERNEL_ISA(isas[j]), .threads = 1};
            check_nest(ctx, &nest, &o, 3, "default matmul");
        }
    }
    /* 1 vs 2 threads: bitwise identical */
    struct vox_ctx_options co = {.threads = 2};
    struct vox_ctx *c2;
    CHECK_OK(vox_ctx_create(&co, &c2));
    struct vox_nest nest;
    vox_nest_matmul(&nest, 97, 70, 83, 70, 83, 70);
    CHECK_OK(vox_nest_schedule_default(c2, &nest, 0, 0, 0));
    struct bufs b;
    uint64_t seed = 5;
    CHECK(bufs_alloc(c2, &nest, &b, &seed));
    float *c1 = vox_alloc(c2, (size_t)b.len[0] * sizeof(float));
    struct vox_kernel_info info2;
    CHECK(c1 && threads_alike(c2, &nest, &b, c1, &info2));
    CHECK(info2.jit == (vox_ctx_cpu(c2)->isa != VOX_ISA_REF));
    /* vox_matmul agrees with the kernel */
    CHECK_OK(vox_matmul(c2, 97, 70, 83, c1, 70, b.ptr[1], 83, b.ptr[2], 70, false));
    int64_t bad = 0;
    for (int64_t i = 0; i < b.len[0]; i++)
        bad += fabsf(c1[i] - b.mem[0][i]) > 1e-4f;
    CHECK(bad == 0);
    vox_free(c2, c1);
    bufs_free(c2, &b);
    vox_ctx_destroy(c2);
}

/* A C small enough for the registers whole (a one-channel conv's weight gradient: 5 x 2 taps
 * x 8 output channels, summed over positions) under a first loop that blocks the y taps
 * (2, 2, then a tail of 1): the threads split those blocks (before, the tile held all of C from
 * the top and one thread ran it), with the bits of one thread and the interpreter's sums. */
static void test_small_c_threads(struct vox_ctx *ctx)
{
    const char *text = "dims b=5 c=2 o=8 y=20 x=24; order b:2 y:1 x:1 b:1 c:1 o:1; "
                       "C[b:16,c:8,o:1] += A[y:25,x:1,b:25,c:1] * B[y:192,x:8,o:1]; "
                       "accumulate";
    check_text(ctx, text);
    struct vox_ctx_options co = {.threads = 2};
    struct vox_ctx *c2;
    CHECK_OK(vox_ctx_create(&co, &c2));
    struct vox_nest nest;
    CHECK_OK(vox_nest_parse(c2, text, &nest));
    struct bufs b;
    uint64_t seed = 9;
    CHECK(bufs_alloc(c2, &nest, &b, &seed));
    float *c1 = vox_alloc(c2, (size_t)b.len[0] * sizeof(float));
    struct vox_kernel_info info2;
    CHECK(c1 && threads_alike(c2, &nest, &b, c1, &info2));
    if (info2.jit) { /* the first loop's dimension, b (0), is split */
        CHECK(info2.parallel_dim == 0);
        CHECK(info2.tile_level == 1);
    }
    vox_free(c2, c1);
    bufs_free(c2, &b);
    vox_ctx_destroy(c2);
}

VOX_TEST_MAIN(VOX_TEST(test_matmul_layouts), VOX_TEST(test_gemv_batched), VOX_TEST(test_conv),
              VOX_TEST(test_pool_bias_relu_accumulate), VOX_TEST(test_tile_edges),
              VOX_TEST(test_reduction_vectors), VOX_TEST(test_k_blocks), VOX_TEST(test_random),
              VOX_TEST(test_exp_ops), VOX_TEST(test_invalid),
              VOX_TEST(test_matmul_default_and_threads), VOX_TEST(test_small_c_threads))
