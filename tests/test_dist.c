/*
 * test_dist.c: the chunked segmentation against the whole-volume one (the oracle): for
 * synthetic volumes (smooth and noisy), random volumes with many ties and plateaus, random
 * chunk shapes (1-voxel-thin and non-dividing included) and 1 or 2 threads, the outputs are
 * bitwise identical. Plus bad arguments and allocation failures.
 */
#include "harness.h"
#include "vox/dist.h"
#include "vox/synth.h"

/* Random quantized affinities with `levels` distinct values, constant over blocks of `blk`
 * voxels along x (long plateaus and exact ties everywhere). */
static void tie_volume(uint8_t *q, const int64_t *shape, uint64_t seed, int levels, int blk)
{
    int64_t n = shape[0] * shape[1] * shape[2];
    for (int c = 0; c < 3; c++)
        for (int64_t v = 0; v < n; v++) {
            if (v % blk == 0 || v % shape[2] == 0)
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            uint64_t h = seed >> 33;
            q[c * n + v] = (uint8_t)((h % (uint64_t)levels) * (255 / (levels - 1)));
        }
}

static struct vox_tensor u8_aff(uint8_t *q, const int64_t *shape)
{
    struct vox_tensor t = {.dtype = VOX_U8, .rank = 4, .data = q};
    t.shape[0] = 3;
    for (int a = 0; a < 3; a++)
        t.shape[a + 1] = shape[a];
    t.strides[3] = 1;
    for (int a = 2; a >= 0; a--)
        t.strides[a] = t.strides[a + 1] * t.shape[a + 1];
    return t;
}

/* Compares the chunked watershed with vox_seg_watershed for `tries` random chunk shapes. */
static void check_ws(struct vox_ctx *ctx, struct vox_ctx *ctx1, const struct vox_tensor *aff,
                     const struct vox_seg_params *p, uint64_t seed, int tries)
{
    struct vox_tensor q = {0}, lab = {0};
    int64_t nb = 0, *sizes = NULL;
    CHECK_OK(vox_seg_quantize(ctx, aff, &q));
    CHECK_OK(vox_seg_watershed(ctx, &q, p, &lab, &nb, &sizes));
    int64_t n = vox_tensor_numel(&lab);
    for (int t = 0; t < tries; t++) {
        int64_t chunk[3];
        for (int a = 0; a < 3; a++) {
            uint64_t r = vox_test_rand(&seed);
            chunk[a] = r % 4 == 0 ? 1 : 1 + (int64_t)(r / 4 % (uint64_t)(aff->shape[a + 1] + 1));
        }
        struct vox_ctx *c = t % 2 ? ctx1 : ctx;
        struct vox_tensor dl = {0};
        int64_t dnb = -1, *ds = NULL;
        enum vox_status s = vox_dist_watershed(c, aff, chunk, p, &dl, &dnb, &ds);
        CHECK(s == VOX_OK);
        if (s != VOX_OK) {
            fprintf(stderr, "  chunk (%lld, %lld, %lld): %s\n", (long long)chunk[0],
                    (long long)chunk[1], (long long)chunk[2], vox_ctx_error(c));
            continue;
        }
        bool same = dnb == nb && memcmp(dl.data, lab.data, (size_t)n * 4) == 0 &&
                    memcmp(ds, sizes, (size_t)(nb + 1) * sizeof *ds) == 0;
        CHECK(same);
        if (!same)
            fprintf(stderr, "  chunk (%lld, %lld, %lld): %lld basins, expected %lld\n",
                    (long long)chunk[0], (long long)chunk[1], (long long)chunk[2],
                    (long long)dnb, (long long)nb);
        vox_tensor_free(c, &dl);
        vox_free(c, ds);
    }
    vox_tensor_free(ctx, &q);
    vox_tensor_free(ctx, &lab);
    vox_free(ctx, sizes);
}

static struct vox_ctx *ctx_one_thread(void)
{
    struct vox_ctx *c = NULL;
    struct vox_ctx_options opt = {.threads = 1, .log_level = VOX_LOG_WARN};
    return vox_ctx_create(&opt, &c) == VOX_OK ? c : NULL;
}

static void test_ws_ties(struct vox_ctx *ctx)
{
    struct vox_ctx *ctx1 = ctx_one_thread();
    const int64_t shapes[3][3] = {{12, 20, 24}, {5, 7, 9}, {1, 13, 17}};
    int nseeds = vox_test_full ? 12 : 2;
    for (int si = 0; si < 3; si++)
        for (int k = 0; k < nseeds; k++) {
            const int64_t *sh = shapes[si];
            uint8_t *q = malloc((size_t)(3 * sh[0] * sh[1] * sh[2]));
            int levels = 2 + k % 4, blk = 1 + k % 5;
            tie_volume(q, sh, 1000 + (uint64_t)k * 7 + (uint64_t)si, levels, blk);
            struct vox_tensor aff = u8_aff(q, sh);
            struct vox_seg_params p;
            vox_seg_params_defaults(&p);
            p.low = k % 3 == 0 ? 0 : 40;
            p.high = k % 2 ? 255 : 200;
            check_ws(ctx, ctx1, &aff, &p, (uint64_t)k + 17, vox_test_full ? 12 : 4);
            free(q);
        }
    vox_ctx_destroy(ctx1);
}

static void test_ws_synth(struct vox_ctx *ctx)
{
    struct vox_ctx *ctx1 = ctx_one_thread();
    int nseeds = vox_test_full ? 6 : 1;
    for (int k = 0; k < nseeds; k++) {
        struct vox_synth_params sp;
        vox_synth_defaults(&sp);
        sp.shape[0] = 12;
        sp.shape[1] = 20;
        sp.shape[2] = 24;
        sp.cell_size_nm = 40;
        sp.seed = 1 + (uint64_t)k;
        struct vox_tensor raw = {0}, gt = {0}, aff = {0};
        int64_t cells;
        CHECK_OK(vox_synth_generate(ctx, &sp, &raw, &gt, &aff, &cells));
        for (int preset = 0; preset < VOX_SYNTH_PRESET_COUNT; preset++) {
            struct vox_tensor deg = {0};
            CHECK_OK(vox_synth_degrade(ctx, &aff, (enum vox_synth_preset)preset, 5 + k, &deg));
            struct vox_seg_params p;
            vox_seg_params_defaults(&p);
            check_ws(ctx, ctx1, &deg, &p, 99 + (uint64_t)k, vox_test_full ? 10 : 3);
            vox_tensor_free(ctx, &deg);
        }
        vox_tensor_free(ctx, &raw);
        vox_tensor_free(ctx, &gt);
        vox_tensor_free(ctx, &aff);
    }
    vox_ctx_destroy(ctx1);
}

static void test_bad_args(struct vox_ctx *ctx)
{
    const int64_t sh[3] = {2, 3, 4};
    uint8_t q[72] = {0};
    struct vox_tensor aff = u8_aff(q, sh), lab;
    struct vox_seg_params p;
    vox_seg_params_defaults(&p);
    int64_t nb, *sizes;
    CHECK_STATUS(vox_dist_watershed(ctx, &aff, (int64_t[3]){1, 0, 1}, &p, &lab, &nb, &sizes),
                 VOX_INVALID_ARG);
    CHECK_ERROR_HAS("every side must be >= 1");
    aff.shape[0] = 2;
    CHECK_STATUS(vox_dist_watershed(ctx, &aff, (int64_t[3]){1, 1, 1}, &p, &lab, &nb, &sizes),
                 VOX_INVALID_ARG);
    CHECK_ERROR_HAS("(3, Z, Y, X)");
    aff.shape[0] = 3;
    p.low = 300;
    CHECK_STATUS(vox_dist_watershed(ctx, &aff, (int64_t[3]){1, 1, 1}, &p, &lab, &nb, &sizes),
                 VOX_INVALID_ARG);
    CHECK_ERROR_HAS("low");
}

static void test_alloc_failures(struct vox_ctx *ctx)
{
    const int64_t sh[3] = {4, 5, 6};
    uint8_t *q = malloc(3 * 120);
    tie_volume(q, sh, 3, 3, 2);
    struct vox_tensor aff = u8_aff(q, sh);
    struct vox_seg_params p;
    vox_seg_params_defaults(&p);
    p.low = 0;
    bool done = false;
    for (int64_t k = 1; k < 400 && !done; k++) {
        struct vox_tensor lab = {0};
        int64_t nb, *sizes = NULL;
        vox_ctx_fail_alloc_at(ctx, k);
        enum vox_status s =
            vox_dist_watershed(ctx, &aff, (int64_t[3]){2, 2, 3}, &p, &lab, &nb, &sizes);
        vox_ctx_fail_alloc_at(ctx, 0);
        CHECK(s == VOX_OK || s == VOX_OUT_OF_MEMORY);
        if (s == VOX_OK) {
            vox_tensor_free(ctx, &lab);
            vox_free(ctx, sizes);
            done = true;
        }
    }
    CHECK(done);
    free(q);
}

VOX_TEST_MAIN(VOX_TEST(test_ws_ties), VOX_TEST(test_ws_synth), VOX_TEST(test_bad_args),
              VOX_TEST(test_alloc_failures))
