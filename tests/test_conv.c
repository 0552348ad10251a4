/*
 * test_conv.c: vox_conv3d and vox_nest_conv3d against a plain double-precision reference
 * (NCDHW and blocked layouts, odd extents, channel counts that are not multiples of the
 * block or the vector width, bias + relu), at every ISA the CPU has; bad descriptions.
 */
#include "harness.h"
#include "vox/loop.h"

static float rnd(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(*s >> 40) / (double)(1 << 24) * 2.0 - 1.0);
}

/* Offset of channel c at voxel (z, y, x) of a C-channel D x H x W volume in the layout. */
static int64_t at(int64_t b, bool blocked, int64_t C, int64_t D, int64_t H, int64_t W, int64_t c,
                  int64_t z, int64_t y, int64_t x)
{
    if (!blocked)
        return ((c * D + z) * H + y) * W + x;
    (void)C;
    return (((c / b * D + z) * H + y) * W + x) * b + c % b;
}

static void check_conv(struct vox_ctx *ctx, struct vox_conv3d_desc d, uint64_t seed)
{
    int64_t b, nin, nout, nw;
    CHECK_OK(vox_conv3d_sizes(ctx, &d, &b, &nin, &nout, &nw));
    const bool bl = d.layout == VOX_CONV_BLOCKED;
    const int64_t od = d.d - d.kd + 1, oh = d.h - d.kh + 1, ow = d.w - d.kw + 1;
    const int64_t taps = d.kd * d.kh * d.kw;
    float *in = vox_calloc(ctx, (size_t)nin, 4), *out = vox_alloc(ctx, (size_t)nout * 4);
    float *w = vox_alloc(ctx, (size_t)(d.k * d.c * taps) * 4), *bias = vox_alloc(ctx, 4 * d.k);
    for (int64_t c = 0; c < d.c; c++)
        for (int64_t z = 0; z < d.d; z++)
            for (int64_t y = 0; y < d.h; y++)
                for (int64_t x = 0; x < d.w; x++)
                    in[at(b, bl, d.c, d.d, d.h, d.w, c, z, y, x)] = rnd(&seed);
    for (int64_t i = 0; i < d.k * d.c * taps; i++)
        w[i] = rnd(&seed);
    for (int64_t i = 0; i < d.k; i++)
        bias[i] = rnd(&seed);
    for (int64_t i = 0; i < nout; i++)
        out[i] = 1e30f;
    CHECK_OK(vox_conv3d(ctx, &d, out, in, w, bias));
    double worst = 0;
    for (int64_t k = 0; k < d.k; k++)
        for (int64_t z = 0; z < od; z++)
            for (int64_t y = 0; y < oh; y++)
                for (int64_t x = 0; x < ow; x++) {
                    double r = d.bias ? bias[k] : 0;
                    for (int64_t c = 0; c < d.c; c++)
                        for (int64_t t = 0; t < taps; t++) {
                            int64_t tz = t / (d.kh * d.kw), ty = t / d.kw % d.kh, tx = t % d.kw;
                            r += (double)w[(k * d.c + c) * taps + t] *
                                 in[at(b, bl, d.c, d.d, d.h, d.w, c, z + tz, y + ty, x + tx)];
                        }
                    r = d.relu && r < 0 ? 0 : r;
                    double e = fabs(r - out[at(b, bl, d.k, od, oh, ow, k, z, y, x)]);
                    worst = e > worst ? e : worst;
                }
    CHECK(worst <= 1e-4 * (double)(d.c * taps));
    if (bl) /* padding lanes of the output: 0 + 0 bias */
        for (int64_t k = d.k; k < (d.k + b - 1) / b * b; k++)
            CHECK(out[at(b, true, d.k, od, oh, ow, k, 0, 0, 0)] == 0.0f);
    vox_free(ctx, in);
    vox_free(ctx, out);
    vox_free(ctx, w);
    vox_free(ctx, bias);
}

static void run_shapes(struct vox_ctx *ctx)
{
    static const int64_t shapes[][8] = {
        /* c, k, d, h, w, kd, kh, kw */
        {3, 5, 4, 5, 21, 3, 3, 3},  {24, 24, 4, 5, 19, 3, 3, 3}, {17, 33, 3, 4, 9, 2, 3, 3},
        {1, 1, 1, 1, 1, 1, 1, 1},   {8, 16, 3, 3, 40, 1, 1, 1},  {40, 12, 5, 4, 6, 3, 2, 3},
    };
    int n = (int)(sizeof shapes / sizeof shapes[0]);
    for (int i = 0; i < n; i++)
        for (int lay = 0; lay < 2; lay++)
            for (int blk = 0; blk < (lay ? 3 : 1); blk++) {
                const int64_t *s = shapes[i];
                struct vox_conv3d_desc d = {s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
                                            (enum vox_conv_layout)lay, blk == 2 ? 5 : blk * 8,
                                            (i + blk) % 2 == 0, i % 3 != 1};
                check_conv(ctx, d, (uint64_t)(i * 7 + lay * 3 + blk + 1));
            }
}

static void test_conv_isas(struct vox_ctx *ctx)
{
    run_shapes(ctx);
    const enum vox_isa top = vox_ctx_cpu(ctx)->isa_max;
    static const char *const isas[] = {"avx2", "ref"};
    for (int i = 0; i < 2; i++) {
        if (i == 0 && top < VOX_ISA_AVX2)
            continue;
        struct vox_ctx *c2;
        struct vox_ctx_options opt = {.threads = 1, .log_level = VOX_LOG_WARN, .isa = isas[i]};
        CHECK_OK(vox_ctx_create(&opt, &c2));
        run_shapes(c2);
        CHECK(vox_ctx_live_allocs(c2) == 0);
        vox_ctx_destroy(c2);
    }
}

static void test_conv_schedule(struct vox_ctx *ctx)
{
    /* the default schedule compiles to a register-tiled vector kernel */
    const enum vox_isa isa = vox_ctx_cpu(ctx)->isa;
    if (isa == VOX_ISA_REF)
        return;
    for (int lay = 0; lay < 2; lay++) {
        struct vox_conv3d_desc d = {24, 48, 6, 10, 34, 3, 3, 3, (enum vox_conv_layout)lay, 0,
                                    true, true};
        struct vox_nest nest;
        struct vox_kernel *k;
        CHECK_OK(vox_nest_conv3d(ctx, &d, &nest));
        CHECK_OK(vox_nest_compile(ctx, &nest, NULL, &k));
        const struct vox_kernel_info *info = vox_kernel_info(k);
        CHECK(info->jit);
        CHECK(info->lanes == (isa == VOX_ISA_AVX512 ? 16 : 8));
        CHECK(info->acc_vectors >= 6);
        CHECK(!info->chunked);
        vox_kernel_destroy(k);
    }
    /* the default block on AVX-512: the fewest FMAs (24 -> 24: 24, 1 -> 24: 8, 48 -> 48: 16) */
    static const int64_t ck[3][3] = {{24, 24, 24}, {1, 24, 8}, {48, 48, 16}};
    for (int i = 0; i < 3; i++) {
        struct vox_conv3d_desc d = {ck[i][0], ck[i][1], 3, 3, 3, 3, 3, 3, VOX_CONV_BLOCKED, 0,
                                    false, false};
        int64_t blk;
        CHECK_OK(vox_conv3d_sizes(ctx, &d, &blk, NULL, NULL, NULL));
        CHECK(blk == (isa == VOX_ISA_AVX512 ? ck[i][2] : 8));
    }
}

static void test_conv_errors(struct vox_ctx *ctx)
{
    struct vox_conv3d_desc d = {4, 4, 3, 3, 3, 4, 3, 3, VOX_CONV_NCDHW, 0, false, false};
    struct vox_nest nest;
    CHECK_STATUS(vox_nest_conv3d(ctx, &d, &nest), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("kernel 4x3x3 exceeds the input 3x3x3");
    d.kd = 3;
    d.c = 0;
    CHECK_STATUS(vox_conv3d_sizes(ctx, &d, NULL, NULL, NULL, NULL), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("c = 0");
    d.c = 4;
    d.layout = VOX_CONV_BLOCKED;
    d.block = 65;
    CHECK_STATUS(vox_nest_conv3d(ctx, &d, &nest), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("block 65");
    d.block = 4;
    float buf[512] = {0};
    CHECK_STATUS(vox_conv3d(ctx, &d, buf, NULL, buf, NULL), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("NULL");
    vox_ctx_fail_alloc_at(ctx, 1);
    CHECK_STATUS(vox_conv3d(ctx, &d, buf, buf, buf, NULL), VOX_OUT_OF_MEMORY);
}

VOX_TEST_MAIN(VOX_TEST(test_conv_isas), VOX_TEST(test_conv_schedule), VOX_TEST(test_conv_errors))
