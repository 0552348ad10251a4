/*
 * test_dist.c: the chunked segmentation against the whole-volume one (the oracle): for
 * synthetic volumes (smooth and noisy), random volumes with many ties and plateaus, random
 * chunk shapes (1-voxel-thin and non-dividing included) and 1 or 2 threads, the outputs are
 * bitwise identical. Plus bad arguments and allocation failures.
 */
#include "harness.h"
#include "vox/dist.h"
#include "vox/io.h"
#include "dist/diff.h"

#include <pthread.h>
#include <time.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
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
                    (long long)chunk[0], (long long)chunk[1], (long long)chunk[2], (long long)dnb,
                    (long long)nb);
        vox_tensor_free(c, &dl);
        vox_free(c, ds);
    }
    vox_tensor_free(ctx, &q);
    vox_tensor_free(ctx, &lab);
    vox_free(ctx, sizes);
}

static struct vox_ctx *ctx_one_thread(void);

static bool same_history(const struct vox_merge_history *a, const struct vox_merge_history *b)
{
    if (a->n != b->n || a->nseg != b->nseg)
        return false;
    for (int64_t i = 0; i < a->n; i++)
        if (a->m[i].a != b->m[i].a || a->m[i].b != b->m[i].b ||
            a->m[i].survivor != b->m[i].survivor || a->m[i].score != b->m[i].score)
            return false;
    return true;
}

/* Compares the chunked size merge + dust with vox_seg_single_linkage over the basin graph. */
static void check_sm(struct vox_ctx *ctx, struct vox_ctx *ctx1, const struct vox_tensor *aff,
                     const struct vox_seg_params *p, uint64_t seed, int tries)
{
    struct vox_tensor q = {0}, lab = {0};
    struct vox_rag g = {0};
    struct vox_merge_history dend = {0};
    int64_t nb = 0, *sizes = NULL, nseg = 0, *ssz = NULL;
    uint32_t *map = NULL;
    CHECK_OK(vox_seg_quantize(ctx, aff, &q));
    CHECK_OK(vox_seg_watershed(ctx, &q, p, &lab, &nb, &sizes));
    CHECK_OK(vox_rag_build(ctx, &lab, nb, &q, false, &g));
    CHECK_OK(vox_seg_single_linkage(ctx, &g, sizes, p, &map, &nseg, &ssz, &dend));
    for (int t = 0; t < tries; t++) {
        int64_t chunk[3];
        for (int a = 0; a < 3; a++) {
            uint64_t r = vox_test_rand(&seed);
            chunk[a] = r % 4 == 0 ? 1 : 1 + (int64_t)(r / 4 % (uint64_t)(aff->shape[a + 1] + 1));
        }
        struct vox_ctx *c = t % 2 ? ctx1 : ctx;
        struct vox_merge_history dd = {0};
        int64_t dn = -1, *dsz = NULL;
        uint32_t *dmap = NULL;
        enum vox_status s =
            vox_dist_size_merge(c, &lab, nb, sizes, aff, chunk, p, &dmap, &dn, &dsz, &dd);
        CHECK(s == VOX_OK);
        if (s != VOX_OK) {
            fprintf(stderr, "  chunk (%lld, %lld, %lld): %s\n", (long long)chunk[0],
                    (long long)chunk[1], (long long)chunk[2], vox_ctx_error(c));
            continue;
        }
        bool same = dn == nseg && memcmp(dmap, map, (size_t)(nb + 1) * 4) == 0 &&
                    memcmp(dsz, ssz, (size_t)(nseg + 1) * sizeof *dsz) == 0 &&
                    same_history(&dd, &dend);
        CHECK(same);
        if (!same)
            fprintf(stderr,
                    "  chunk (%lld, %lld, %lld): %lld segments / %lld merges, expected "
                    "%lld / %lld\n",
                    (long long)chunk[0], (long long)chunk[1], (long long)chunk[2], (long long)dn,
                    (long long)dd.n, (long long)nseg, (long long)dend.n);
        vox_merge_history_fini(c, &dd);
        vox_free(c, dmap);
        vox_free(c, dsz);
    }
    vox_merge_history_fini(ctx, &dend);
    vox_rag_fini(ctx, &g);
    vox_free(ctx, map);
    vox_free(ctx, ssz);
    vox_tensor_free(ctx, &q);
    vox_tensor_free(ctx, &lab);
    vox_free(ctx, sizes);
}

/* Size tables that make the merge order matter: a flat limit near the basin sizes, limits
 * growing with the affinity, limits shrinking with it (later edges see larger limits, so a
 * wrong early merge or skip shows), and limits far above the basin sizes. */
static void sm_params(struct vox_seg_params *p, int k)
{
    static const struct vox_seg_size_point tables[4][3] = {{{0, 6}, {0, 0}, {0, 0}},
                                                           {{0, 2}, {150, 14}, {230, 40}},
                                                           {{0, 80}, {128, 20}, {220, 4}},
                                                           {{0, 5}, {200, 300}, {255, 400}}};
    static const int npoints[4] = {1, 3, 3, 3};
    vox_seg_params_defaults(p);
    p->low = k % 3 == 0 ? 0 : 40;
    p->high = k % 2 ? 255 : 200;
    int t = k % 4;
    p->nsize = npoints[t];
    for (int i = 0; i < p->nsize; i++)
        p->size[i] = tables[t][i];
    p->size[0].aff = p->low + 1;
    p->size[0].size += k % 5;
    p->dust = k % 4 == 1 ? 30 : k % 4;
}

static void test_sm_ties(struct vox_ctx *ctx)
{
    struct vox_ctx *ctx1 = ctx_one_thread();
    const int64_t shapes[3][3] = {{12, 20, 24}, {5, 7, 9}, {1, 13, 17}};
    int nseeds = vox_test_full ? 16 : 3;
    for (int si = 0; si < 3; si++)
        for (int k = 0; k < nseeds; k++) {
            const int64_t *sh = shapes[si];
            uint8_t *q = malloc((size_t)(3 * sh[0] * sh[1] * sh[2]));
            tie_volume(q, sh, 500 + (uint64_t)k * 13 + (uint64_t)si, 2 + k % 5, 1 + k % 4);
            struct vox_tensor aff = u8_aff(q, sh);
            struct vox_seg_params p;
            sm_params(&p, k);
            check_sm(ctx, ctx1, &aff, &p, (uint64_t)k + 31, vox_test_full ? 12 : 4);
            free(q);
        }
    vox_ctx_destroy(ctx1);
}

static void test_sm_synth(struct vox_ctx *ctx)
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
        sp.seed = 7 + (uint64_t)k;
        struct vox_tensor raw = {0}, gt = {0}, aff = {0};
        int64_t cells;
        CHECK_OK(vox_synth_generate(ctx, &sp, &raw, &gt, &aff, &cells));
        for (int preset = 0; preset < VOX_SYNTH_PRESET_COUNT; preset++) {
            struct vox_tensor deg = {0};
            CHECK_OK(vox_synth_degrade(ctx, &aff, (enum vox_synth_preset)preset, 3 + k, &deg));
            struct vox_seg_params p;
            vox_seg_params_defaults(&p);
            if (k % 2 == 0)
                sm_params(&p, k + preset + 2);
            check_sm(ctx, ctx1, &deg, &p, 77 + (uint64_t)k, vox_test_full ? 10 : 3);
            vox_tensor_free(ctx, &deg);
        }
        vox_tensor_free(ctx, &raw);
        vox_tensor_free(ctx, &gt);
        vox_tensor_free(ctx, &aff);
    }
    vox_ctx_destroy(ctx1);
}

static struct vox_ctx *ctx_one_thread(void)
{
    struct vox_ctx *c = NULL;
    struct vox_ctx_options opt = {.threads = 1, .log_level = VOX_LOG_WARN};
    return vox_ctx_create(&opt, &c) == VOX_OK ? c : NULL;
}

/* Compares the chunked agglomeration with vox_segment's history over its base segments. */
static void check_ag(struct vox_ctx *ctx, struct vox_ctx *ctx1, const struct vox_tensor *aff,
                     const struct vox_seg_params *p, uint64_t seed, int tries)
{
    struct vox_seg_result res = {0};
    CHECK_OK(vox_segment(ctx, aff, p, &res));
    for (int t = 0; t < tries; t++) {
        int64_t chunk[3];
        for (int a = 0; a < 3; a++) {
            uint64_t r = vox_test_rand(&seed);
            chunk[a] = r % 4 == 0 ? 1 : 1 + (int64_t)(r / 4 % (uint64_t)(aff->shape[a + 1] + 1));
        }
        struct vox_ctx *c = t % 2 ? ctx1 : ctx;
        struct vox_merge_history h = {0};
        enum vox_status s = vox_dist_agglomerate(c, &res.labels, res.nseg, aff, chunk, p, &h);
        CHECK(s == VOX_OK);
        if (s != VOX_OK) {
            fprintf(stderr, "  chunk (%lld, %lld, %lld): %s\n", (long long)chunk[0],
                    (long long)chunk[1], (long long)chunk[2], vox_ctx_error(c));
            continue;
        }
        bool same = same_history(&h, &res.merges);
        CHECK(same);
        if (!same)
            fprintf(stderr, "  score %s chunk (%lld, %lld, %lld): %lld merges, expected %lld\n",
                    vox_seg_score_str(p->score), (long long)chunk[0], (long long)chunk[1],
                    (long long)chunk[2], (long long)h.n, (long long)res.merges.n);
        vox_merge_history_fini(c, &h);
    }
    vox_seg_result_fini(ctx, &res);
}

/* Every score, with and without an early stop. */
static void ag_params(struct vox_seg_params *p, int k)
{
    vox_seg_params_defaults(p);
    p->score = (enum vox_seg_score)(k % VOX_SEG_SCORE_COUNT);
    p->quantile = k % 3 == 0 ? 0.5 : 0.9;
    p->smooth_k = k % 2 ? 25 : 3;
    p->max_threshold = k / VOX_SEG_SCORE_COUNT % 2 ? 0.6 : 1.0;
    p->nsize = k % 3 == 1 ? 0 : p->nsize;
    p->dust = k % 3 == 1 ? 0 : 20;
}

static void test_ag_ties(struct vox_ctx *ctx)
{
    struct vox_ctx *ctx1 = ctx_one_thread();
    const int64_t shape[3] = {7, 9, 11};
    int64_t n = shape[0] * shape[1] * shape[2];
    uint8_t *q = malloc((size_t)(3 * n));
    int nk = vox_test_full ? 24 : 8;
    for (int k = 0; k < nk; k++) {
        tie_volume(q, shape, 500 + (uint64_t)k, 3 + k % 4, 1 + k % 3);
        struct vox_tensor aff = u8_aff(q, shape);
        struct vox_seg_params p;
        ag_params(&p, k);
        p.low = 0;
        p.high = 255;
        p.nsize = 0;
        p.dust = 0;
        check_ag(ctx, ctx1, &aff, &p, 31 + (uint64_t)k, vox_test_full ? 12 : 4);
    }
    free(q);
    vox_ctx_destroy(ctx1);
}

static void test_ag_synth(struct vox_ctx *ctx)
{
    struct vox_ctx *ctx1 = ctx_one_thread();
    int nseeds = vox_test_full ? 4 : 1;
    for (int k = 0; k < nseeds; k++) {
        struct vox_synth_params sp;
        vox_synth_defaults(&sp);
        sp.shape[0] = 12;
        sp.shape[1] = 20;
        sp.shape[2] = 24;
        sp.cell_size_nm = 40;
        sp.seed = 11 + (uint64_t)k;
        struct vox_tensor raw = {0}, gt = {0}, aff = {0};
        int64_t cells;
        CHECK_OK(vox_synth_generate(ctx, &sp, &raw, &gt, &aff, &cells));
        for (int preset = 0; preset < VOX_SYNTH_PRESET_COUNT; preset++) {
            struct vox_tensor deg = {0};
            CHECK_OK(vox_synth_degrade(ctx, &aff, (enum vox_synth_preset)preset, 9 + k, &deg));
            for (int sc = 0; sc < 2 * VOX_SEG_SCORE_COUNT; sc++) {
                struct vox_seg_params p;
                ag_params(&p, sc + k);
                check_ag(ctx, ctx1, &deg, &p, 91 + (uint64_t)(k * 16 + sc), vox_test_full ? 6 : 2);
            }
            vox_tensor_free(ctx, &deg);
        }
        vox_tensor_free(ctx, &raw);
        vox_tensor_free(ctx, &gt);
        vox_tensor_free(ctx, &aff);
    }
    vox_ctx_destroy(ctx1);
}

static void test_ag_bad_args_and_alloc(struct vox_ctx *ctx)
{
    const int64_t sh[3] = {4, 5, 6};
    uint8_t *q = malloc(3 * 120);
    tie_volume(q, sh, 9, 4, 2);
    struct vox_tensor aff = u8_aff(q, sh);
    struct vox_seg_params p;
    ag_params(&p, 1);
    p.low = 0;
    struct vox_seg_result res = {0};
    struct vox_merge_history h = {0};
    CHECK_OK(vox_segment(ctx, &aff, &p, &res));
    CHECK_STATUS(
        vox_dist_agglomerate(ctx, &res.labels, res.nseg, &aff, (int64_t[3]){0, 1, 1}, &p, &h),
        VOX_INVALID_ARG);
    CHECK_ERROR_HAS("every side must be >= 1");
    CHECK_STATUS(
        vox_dist_agglomerate(ctx, &res.labels, res.nseg - 1, &aff, (int64_t[3]){2, 2, 2}, &p, &h),
        VOX_INVALID_ARG);
    CHECK_ERROR_HAS("exceeds nseg");
    CHECK_STATUS(vox_dist_agglomerate(ctx, &aff, res.nseg, &aff, (int64_t[3]){2, 2, 2}, &p, &h),
                 VOX_INVALID_ARG);
    CHECK_ERROR_HAS("labels must be a contiguous u32");
    bool done = false;
    for (int64_t k = 1; k < 4000 && !done; k++) {
        vox_ctx_fail_alloc_at(ctx, k);
        enum vox_status s =
            vox_dist_agglomerate(ctx, &res.labels, res.nseg, &aff, (int64_t[3]){2, 3, 2}, &p, &h);
        vox_ctx_fail_alloc_at(ctx, 0);
        CHECK(s == VOX_OK || s == VOX_OUT_OF_MEMORY);
        if (s == VOX_OK) {
            CHECK(same_history(&h, &res.merges));
            vox_merge_history_fini(ctx, &h);
            done = true;
        }
    }
    CHECK(done);
    vox_seg_result_fini(ctx, &res);
    free(q);
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

/* A hand-made plateau split: a row of 7 voxels, x-edges 200 100 100 100 100 200 (the y and z
 * channels are 0). Voxels 0-1 and 5-6 are maximum plateaus (basins 1 and 2); 2 and 4 are
 * exits (seeds) of the plateau {2, 3, 4} at 100; voxel 3 is reached from both seeds at the
 * same BFS step and goes to the seed first in C order (2, basin 1). The neighbour visiting
 * order cannot change a label: within one BFS level the queue is sorted by seed rank, so a
 * voxel takes the smallest-rank seed among its neighbours one level up, whatever order a
 * voxel's neighbours are visited in (it only changes which same-seed voxel is the pointer).
 * So the test pins the rank rule, with the plateau cut by every chunking. */
static void test_ws_plateau_hand(struct vox_ctx *ctx)
{
    const int64_t sh[3] = {1, 1, 7};
    uint8_t q[21] = {0};
    const uint8_t ex[7] = {0, 200, 100, 100, 100, 100, 200};
    memcpy(q + 14, ex, 7);
    struct vox_tensor aff = u8_aff(q, sh);
    struct vox_seg_params p;
    vox_seg_params_defaults(&p);
    p.low = 0;
    p.high = 255;
    const uint32_t want[7] = {1, 1, 1, 1, 2, 2, 2};
    for (int64_t cx = 1; cx <= 7; cx++) {
        struct vox_tensor lab = {0};
        int64_t nb = 0, *sizes = NULL;
        CHECK_OK(vox_dist_watershed(ctx, &aff, (int64_t[3]){1, 1, cx}, &p, &lab, &nb, &sizes));
        bool ok =
            nb == 2 && memcmp(lab.data, want, sizeof want) == 0 && sizes[1] == 4 && sizes[2] == 3;
        CHECK(ok);
        if (!ok)
            fprintf(stderr, "  chunk x %lld: %lld basins\n", (long long)cx, (long long)nb);
        vox_tensor_free(ctx, &lab);
        vox_free(ctx, sizes);
    }
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

static void test_sm_bad_args_and_alloc(struct vox_ctx *ctx)
{
    const int64_t sh[3] = {4, 5, 6};
    uint8_t *q = malloc(3 * 120);
    tie_volume(q, sh, 5, 3, 2);
    struct vox_tensor aff = u8_aff(q, sh), lab = {0};
    struct vox_seg_params p;
    sm_params(&p, 2);
    int64_t nb = 0, *sizes = NULL, nseg, *ssz;
    uint32_t *map;
    CHECK_OK(vox_dist_watershed(ctx, &aff, (int64_t[3]){9, 9, 9}, &p, &lab, &nb, &sizes));
    CHECK_STATUS(vox_dist_size_merge(ctx, &lab, nb, sizes, &aff, (int64_t[3]){1, 1, 0}, &p, &map,
                                     &nseg, &ssz, NULL),
                 VOX_INVALID_ARG);
    CHECK_ERROR_HAS("every side must be >= 1");
    CHECK_STATUS(vox_dist_size_merge(ctx, &lab, nb - 1, sizes, &aff, (int64_t[3]){2, 2, 2}, &p,
                                     &map, &nseg, &ssz, NULL),
                 VOX_INVALID_ARG);
    CHECK_ERROR_HAS("exceeds nbasins");
    bool done = false;
    for (int64_t k = 1; k < 2000 && !done; k++) {
        struct vox_merge_history d = {0};
        vox_ctx_fail_alloc_at(ctx, k);
        enum vox_status s = vox_dist_size_merge(ctx, &lab, nb, sizes, &aff, (int64_t[3]){2, 2, 3},
                                                &p, &map, &nseg, &ssz, &d);
        vox_ctx_fail_alloc_at(ctx, 0);
        CHECK(s == VOX_OK || s == VOX_OUT_OF_MEMORY);
        if (s == VOX_OK) {
            vox_free(ctx, map);
            vox_free(ctx, ssz);
            vox_merge_history_fini(ctx, &d);
            done = true;
        }
    }
    CHECK(done);
    vox_tensor_free(ctx, &lab);
    vox_free(ctx, sizes);
    free(q);
}

/* ---- vox_dist_segment ------------------------------------------------------------------- */

/* A sink that gathers the boxes into one tensor and checks it is told the result first. */
struct gather {
    struct vox_tensor t;
    int64_t nseg, writes, stored;
    bool ready;
    int fail;            /* 1: ready fails, 2: encode fails */
    struct vox_ctx *ctx; /* a rank's run's (gather_encode) */
};

static enum vox_status gather_ready(void *arg, const struct vox_seg_result *res)
{
    struct gather *g = arg;
    g->ready = true;
    g->nseg = res->nseg;
    return g->fail == 1 ? VOX_IO : VOX_OK;
}

static enum vox_status gather_write(void *arg, const int64_t lo[3], const struct vox_tensor *l)
{
    struct gather *g = arg;
    if (!g->ready)
        return VOX_INTERNAL;
    const uint32_t *src = l->data;
    uint32_t *dst = g->t.data;
    for (int64_t z = 0; z < l->shape[0]; z++)
        for (int64_t y = 0; y < l->shape[1]; y++)
            memcpy(dst + ((lo[0] + z) * g->t.shape[1] + lo[1] + y) * g->t.shape[2] + lo[2],
                   src + (z * l->shape[1] + y) * l->shape[2], (size_t)l->shape[2] * 4);
    __atomic_add_fetch(&g->writes, 1, __ATOMIC_RELAXED); /* concurrent: boxes are disjoint */
    return VOX_OK;
}

/* The ranks' side of a sink that lets them write their own chunks: a box as bytes (lo,
 * shape, labels) once ready has come; rank 0 stores them (checking the box is the one it
 * expects). */
static enum vox_status gather_encode(void *arg, const int64_t lo[3], const struct vox_tensor *l,
                                     void **blob, int64_t *len)
{
    struct gather *g = arg;
    if (!g->ready || g->nseg <= 0 || !vox_tensor_is_contiguous(l))
        return VOX_INTERNAL;
    if (g->fail == 2)
        return vox_fail(g->ctx, VOX_IO, "test: this rank's encode fails");
    size_t nb = vox_tensor_nbytes(l);
    int64_t *p = vox_alloc(g->ctx, 6 * sizeof *p + nb); /* the run's context frees it */
    if (!p)
        return VOX_OUT_OF_MEMORY;
    memcpy(p, lo, 3 * sizeof *p);
    memcpy(p + 3, l->shape, 3 * sizeof *p);
    memcpy(p + 6, l->data, nb);
    *blob = p;
    *len = (int64_t)(6 * sizeof *p + nb);
    __atomic_add_fetch(&g->writes, 1, __ATOMIC_RELAXED);
    return VOX_OK;
}

static enum vox_status gather_store(void *arg, const int64_t lo[3], const void *blob, int64_t len)
{
    struct gather *g = arg;
    const int64_t *p = blob;
    if (len < 6 * (int64_t)sizeof *p || memcmp(p, lo, 3 * sizeof *p) != 0 ||
        len != 6 * (int64_t)sizeof *p + p[3] * p[4] * p[5] * 4)
        return VOX_INTERNAL;
    struct vox_tensor l = {.dtype = VOX_U32,
                           .rank = 3,
                           .data = (void *)(p + 6),
                           .shape = {p[3], p[4], p[5]},
                           .strides = {p[4] * p[5], p[5], 1}};
    __atomic_add_fetch(&g->stored, 1, __ATOMIC_RELAXED);
    return gather_write(arg, lo, &l);
}

/* Rank 0's side of a sink that stores what the ranks encode (and writes its own chunks). */
static struct vox_dist_sink gather_sink(struct gather *g)
{
    return (struct vox_dist_sink){.ready = gather_ready,
                                  .write = gather_write,
                                  .arg = g,
                                  .encode = gather_encode,
                                  .store = gather_store};
}

static bool same_result(const struct vox_seg_result *a, const struct vox_seg_result *b,
                        const struct vox_tensor *labels)
{
    return a->nseg == b->nseg && a->nbasins == b->nbasins && same_history(&a->dend, &b->dend) &&
           same_history(&a->merges, &b->merges) &&
           !memcmp(labels->data, b->labels.data, vox_tensor_nbytes(&b->labels));
}

/* vox_dist_segment from the tensor (labels whole) and from a volume file (through a sink)
 * against vox_segment, for `tries` random chunk shapes. */
static void check_seg(struct vox_ctx *ctx, struct vox_ctx *ctx1, const struct vox_tensor *aff,
                      const struct vox_seg_params *p, uint64_t seed, int tries)
{
    struct vox_seg_result ref = {0};
    CHECK_OK(vox_segment(ctx, aff, p, &ref));
    char dir[] = "/tmp/vox-dist-XXXXXX", path[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/aff.npy", dir);
    struct vox_volume *vol = NULL;
    CHECK_OK(vox_volume_save(ctx, path, aff, NULL));
    CHECK_OK(vox_volume_open(ctx, path, &vol));
    for (int t = 0; t < tries && vol; t++) {
        struct vox_dist_options o = {.sink = NULL};
        for (int a = 0; a < 3; a++) {
            uint64_t r = vox_test_rand(&seed);
            o.chunk[a] = r % 4 == 0 ? 1 : 1 + (int64_t)(r / 4 % (uint64_t)(aff->shape[a + 1] + 1));
        }
        struct vox_ctx *c = t % 2 ? ctx1 : ctx;
        struct vox_dist_stats stats;
        o.stats = &stats;
        stats.n = 0;
        struct vox_seg_result res = {0};
        struct vox_dist_source src = {.aff = aff};
        setenv("VOX_DIST_PAIRS", "2", 1); /* face records for every chunk, however small */
        CHECK_OK(vox_dist_segment(c, &src, p, &o, &res));
        CHECK(same_result(&res, &ref, &res.labels));
        CHECK(stats.n >= 3 && stats.lv[0].stage == VOX_DIST_WATERSHED && stats.lv[0].level == 0);
        vox_seg_result_fini(c, &res);
        struct gather g = {.ready = false};
        CHECK_OK(vox_tensor_alloc(c, &g.t, VOX_U32, 3, ref.labels.shape));
        struct vox_dist_sink sink = {
            .ready = gather_ready, .write = gather_write, .arg = &g, .concurrent = t % 4 < 2};
        o.sink = &sink;
        o.workdir = t % 2 ? dir : NULL;
        src = (struct vox_dist_source){.vol = vol};
        CHECK_OK(vox_dist_segment(c, &src, p, &o, &res));
        unsetenv("VOX_DIST_PAIRS");
        CHECK(g.nseg == ref.nseg && g.writes > 0 && res.labels.data == NULL);
        res.labels = g.t;
        CHECK(same_result(&res, &ref, &g.t));
        CHECK(stats.bytes_read > 0 && stats.bytes_written > 0);
        vox_seg_result_fini(c, &res);
        if (t % 2 == 0) { /* and with (b) and (c) scanning the voxels (no face records) */
            const int64_t rd = stats.bytes_read, wr = stats.bytes_written;
            struct gather g2 = {.ready = false};
            CHECK_OK(vox_tensor_alloc(c, &g2.t, VOX_U32, 3, ref.labels.shape));
            sink.arg = &g2;
            stats.n = 0;
            setenv("VOX_DIST_PAIRS", "0", 1);
            CHECK_OK(vox_dist_segment(c, &src, p, &o, &res));
            unsetenv("VOX_DIST_PAIRS");
            res.labels = g2.t;
            CHECK(same_result(&res, &ref, &g2.t));
            /* the records, written and read above */
            CHECK(wr > stats.bytes_written && rd != stats.bytes_read);
            vox_seg_result_fini(c, &res);
        }
    }
    vox_volume_close(vol);
    unlink(path);
    CHECK(rmdir(dir) == 0);
    vox_seg_result_fini(ctx, &ref);
}

static void test_seg_synth(struct vox_ctx *ctx)
{
    struct vox_ctx *ctx1 = ctx_one_thread();
    struct vox_synth_params sp;
    vox_synth_defaults(&sp);
    sp.shape[0] = 10;
    sp.shape[1] = 18;
    sp.shape[2] = 21;
    sp.cell_size_nm = 40;
    sp.seed = 5;
    struct vox_tensor raw = {0}, gt = {0}, aff = {0};
    int64_t cells;
    CHECK_OK(vox_synth_generate(ctx, &sp, &raw, &gt, &aff, &cells));
    int nsc = vox_test_full ? 2 * VOX_SEG_SCORE_COUNT : VOX_SEG_SCORE_COUNT;
    for (int sc = 0; sc < nsc; sc++) {
        struct vox_tensor deg = {0};
        CHECK_OK(vox_synth_degrade(ctx, &aff, (enum vox_synth_preset)(sc % VOX_SYNTH_PRESET_COUNT),
                                   3 + sc, &deg));
        struct vox_seg_params p;
        ag_params(&p, sc);
        check_seg(ctx, ctx1, &deg, &p, 17 + (uint64_t)sc, vox_test_full ? 6 : 2);
        vox_tensor_free(ctx, &deg);
    }
    uint8_t *q = malloc(3 * 9 * 11 * 13);
    const int64_t shape[3] = {9, 11, 13};
    tie_volume(q, shape, 77, 4, 3);
    struct vox_tensor u8 = u8_aff(q, shape);
    struct vox_seg_params p;
    ag_params(&p, 2);
    check_seg(ctx, ctx1, &u8, &p, 23, vox_test_full ? 8 : 3);
    free(q);
    vox_tensor_free(ctx, &raw);
    vox_tensor_free(ctx, &gt);
    vox_tensor_free(ctx, &aff);
    vox_ctx_destroy(ctx1);
}

/* The chunked run of u8 affinities q (3, shape) from a .npy through a sink without records,
 * chunks `chunk`: its labels and merges equal the whole run's; its statistics into *stats. */
static void sink_run(struct vox_ctx *ctx, uint8_t *q, const int64_t shape[3],
                     const int64_t chunk[3], struct vox_dist_stats *stats, const char *pairs)
{
    struct vox_tensor aff = u8_aff(q, shape);
    struct vox_seg_params p;
    vox_seg_params_defaults(&p);
    struct vox_seg_result ref = {0}, res = {0};
    CHECK_OK(vox_segment(ctx, &aff, &p, &ref));
    char dir[] = "/tmp/vox-dist-XXXXXX", path[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/aff.npy", dir);
    struct vox_volume *vol = NULL;
    CHECK_OK(vox_volume_save(ctx, path, &aff, NULL));
    CHECK_OK(vox_volume_open(ctx, path, &vol));
    struct gather g = {.ready = false};
    CHECK_OK(vox_tensor_alloc(ctx, &g.t, VOX_U32, 3, shape));
    struct vox_dist_sink sink = {
        .ready = gather_ready, .write = gather_write, .arg = &g, .concurrent = true};
    *stats = (struct vox_dist_stats){.n = 0};
    struct vox_dist_options o = {.sink = &sink, .stats = stats};
    memcpy(o.chunk, chunk, sizeof o.chunk);
    struct vox_dist_source src = {.vol = vol};
    setenv("VOX_DIST_PAIRS", pairs, 1); /* "0": the bytes written are the label store's alone */
    CHECK_OK(vox_dist_segment(ctx, &src, &p, &o, &res));
    unsetenv("VOX_DIST_PAIRS");
    res.labels = g.t;
    CHECK(same_result(&res, &ref, &g.t));
    vox_seg_result_fini(ctx, &res);
    vox_seg_result_fini(ctx, &ref);
    vox_volume_close(vol);
    unlink(path);
    CHECK(rmdir(dir) == 0);
}

/* Three chunks along x, each with a record of its own kind, through a sink without records: noise
 * (more than 65535 fragments: u32), smooth affinities (fewer fragments, runs along x: runs)
 * and x-planes (no edge along x, every y-z plane one basin: 64 runs a row, more bytes than
 * u16, so u16 with its x columns beside). The bytes written tell each kind, and the windows
 * across the faces read every pair of neighbouring kinds. */
static void test_seg_wide_and_narrow(struct vox_ctx *ctx)
{
    const int64_t shape[3] = {64, 64, 192}, n = shape[0] * shape[1] * shape[2];
    uint8_t *q = malloc((size_t)(3 * n));
    uint64_t seed = 99;
    for (int64_t i = 0; i < 3 * n; i++) {
        const int64_t x = i % shape[2], c = i / n;
        q[i] = x < 64    ? (uint8_t)(vox_test_rand(&seed) % 251)
               : x < 128 ? (uint8_t)(200 + i % 7)
                         : (uint8_t)(c == 2 ? 0 : 255);
    }
    struct vox_dist_stats stats;
    sink_run(ctx, q, shape, (int64_t[3]){64, 64, 64}, &stats, "0");
    const int64_t third = n / 3, rows = 64 * 64, sink_bytes = 4 * n;
    const int64_t runs = stats.bytes_written - sink_bytes - 4 * third - (2 * third + 4 * rows);
    /* the runs record: its columns and index, at least one run a row, fewer bytes than u16 */
    CHECK(runs >= 8 * rows + 4 + 4 * rows && runs < 2 * third + 4 * rows);
    free(q);
}

/* The vector versions of dist_diff that the machine runs against the scalar twin, with and
 * without the non-zero test: rows of lengths around the vector widths, labels from 3 values
 * (equal runs, zeros) or random (every face differs), all or only some lanes set; the same
 * positions in the same order. */
static void test_diff_rows(struct vox_ctx *ctx)
{
    const enum vox_isa isa = vox_ctx_cpu(ctx)->isa_max;
    const dist_diff_fn fn[2] = {dist_diff_avx2, dist_diff_avx512};
    const int64_t lens[] = {0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 129, 1000};
    uint64_t seed = 5;
    int ran = 0;
    for (int f = 0; f < 2; f++) {
        if ((int)isa < f + 1)
            continue;
        for (size_t li = 0; li < sizeof lens / sizeof *lens; li++)
            for (int kind = 0; kind < 3; kind++) {
                const int64_t n = lens[li];
                uint32_t a[1000], b[1000], want[1016], got[1016];
                for (int64_t j = 0; j < n; j++) {
                    a[j] = (uint32_t)(kind == 0   ? vox_test_rand(&seed) % 3
                                      : kind == 1 ? vox_test_rand(&seed)
                                                  : 7 + (uint32_t)(j % 5 == 3));
                    b[j] = kind == 2 ? 7
                                     : (uint32_t)(kind == 0 ? vox_test_rand(&seed) % 3
                                                            : vox_test_rand(&seed));
                }
                for (int nz = 0; nz < 2; nz++) {
                    const int64_t k = dist_diff_ref(a, b, n, want, nz);
                    CHECK(fn[f](a, b, n, got, nz) == k);
                    CHECK(k == 0 || memcmp(want, got, (size_t)k * sizeof *got) == 0);
                    if (kind == 2)
                        CHECK(k == n / 5 + (n % 5 == 4));
                    ran++;
                }
            }
    }
    CHECK(isa == VOX_ISA_REF || ran >= 90);
}

/* Two chunks of 65536 fragments each (x-segments of 8 voxels, cut from each other): ids past
 * 16 bits, so no u16 record, but 16 runs a 128-voxel row: wide runs (DIST_REC_RUNS32, 8 bytes
 * a run, a quarter of u32), read back across the face between the chunks. */
static void test_seg_wide_runs(struct vox_ctx *ctx)
{
    const int64_t shape[3] = {128, 64, 128}, n = shape[0] * shape[1] * shape[2];
    uint8_t *q = malloc((size_t)(3 * n));
    for (int64_t i = 0; i < 3 * n; i++) /* only x edges, none into a segment's first voxel */
        q[i] = (uint8_t)(i / n == 2 && i % 8 != 0 ? 255 : 0);
    struct vox_dist_stats stats;
    sink_run(ctx, q, shape, (int64_t[3]){64, 64, 128}, &stats, "0");
    const int64_t rows = 64 * 64, record = 8 * rows + 4 * (rows + 1) + 8 * 16 * rows;
    CHECK(stats.bytes_written == 4 * n + 2 * record);
    free(q);
}

/* Face-record entries at their limits: two planes of 256 x 256 voxels, each a basin (edges
 * of 255 inside, 250 between them), in two chunks along x: each chunk's 32768 faces between
 * its two fragments, and a 2 x 256 x 512 volume's 65536 in one chunk, so an entry reaches
 * 65535 faces (the count's limit: a second entry takes the rest) and a sum of 65535 x 250
 * (24 bits), both packed in the file (dist/pairs.c); records forced. The agglomeration's
 * score (the mean) needs every bit of both. */
static void test_seg_record_limits(struct vox_ctx *ctx)
{
    const int64_t shapes[2][3] = {{2, 256, 512}, {2, 256, 256}};
    for (int k = 0; k < 2; k++) {
        const int64_t *shape = shapes[k], n = shape[0] * shape[1] * shape[2];
        uint8_t *q = malloc((size_t)(3 * n));
        for (int64_t i = 0; i < 3 * n; i++)
            q[i] = (uint8_t)(i < n ? 250 : 255);
        struct vox_dist_stats stats;
        sink_run(ctx, q, shape, (int64_t[3]){2, 256, 256}, &stats, "2");
        CHECK(stats.face_records == shape[2] / 256);
        free(q);
    }
}

/* Rows of 2^16 voxels or more, which a run's end (16 bits) cannot hold: u16 records, though
 * runs would be far smaller (long stretches of one label), and the same result. */
static void test_seg_long_rows(struct vox_ctx *ctx)
{
    const int64_t shape[3] = {1, 3, 70001}, n = shape[0] * shape[1] * shape[2];
    uint8_t *q = malloc((size_t)(3 * n));
    uint64_t seed = 7;
    for (int64_t i = 0; i < 3 * n; i++) /* a boundary every ~1000 voxels along x */
        q[i] = (uint8_t)(i / n == 2 && vox_test_rand(&seed) % 1000 == 0 ? 0 : 255);
    struct vox_dist_stats stats;
    sink_run(ctx, q, shape, (int64_t[3]){1, 2, 70001}, &stats, "0");
    /* two chunks (2 rows and 1) as u16 with their x columns */
    CHECK(stats.bytes_written == 4 * n + 2 * n + 2 * 2 * 3);
    free(q);
}

/* One chunked run of vol (16^3 chunks, through a sink) with VOX_DIST_PAIRS=mode (NULL:
 * unset): equal to ref; its bytes read and written, its chunks with face records. */
static void records_run(struct vox_ctx *ctx, struct vox_volume *vol, const struct vox_seg_params *p,
                        const struct vox_seg_result *ref, const char *mode, int64_t *rd,
                        int64_t *wr, int64_t *nrec)
{
    struct gather g = {.ready = false};
    CHECK_OK(vox_tensor_alloc(ctx, &g.t, VOX_U32, 3, ref->labels.shape));
    struct vox_dist_sink sink = {
        .ready = gather_ready, .write = gather_write, .arg = &g, .concurrent = true};
    struct vox_dist_stats stats = {.n = 0};
    struct vox_dist_options o = {.sink = &sink, .stats = &stats, .chunk = {16, 16, 16}};
    struct vox_dist_source src = {.vol = vol};
    struct vox_seg_result res = {0};
    if (mode)
        setenv("VOX_DIST_PAIRS", mode, 1);
    CHECK_OK(vox_dist_segment(ctx, &src, p, &o, &res));
    unsetenv("VOX_DIST_PAIRS");
    res.labels = g.t;
    CHECK(same_result(&res, ref, &g.t));
    *rd = stats.bytes_read;
    *wr = stats.bytes_written;
    *nrec = stats.face_records;
    CHECK((stats.face_records > 0) == (stats.face_record_bytes > 0));
    vox_seg_result_fini(ctx, &res);
}

/* Stage (a)'s face records (dist/pairs.c) and the scans of stages (b) and (c): a volume of
 * 40^3 in chunks of 16 (the last ones 8), every score (the quantile's records are per
 * affinity), smooth and noisy, through a sink from a file, with records for every chunk
 * (VOX_DIST_PAIRS=2), without (=0) and as chosen (unset: noise's tiny fragments make records
 * costlier than scans, so none): all equal the whole run. */
static void test_seg_face_records(struct vox_ctx *ctx)
{
    struct vox_synth_params sp;
    vox_synth_defaults(&sp);
    sp.shape[0] = sp.shape[1] = sp.shape[2] = 40;
    sp.cell_size_nm = 60;
    sp.seed = 11;
    struct vox_tensor aff = {0};
    CHECK_OK(vox_synth_generate(ctx, &sp, NULL, NULL, &aff, NULL));
    char dir[] = "/tmp/vox-dist-XXXXXX", path[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/aff.npy", dir);
    static const char *const mode[3] = {"2", "0", NULL};
    for (int k = 0; k < 2 * VOX_SEG_SCORE_COUNT; k++) {
        const bool noisy = k >= VOX_SEG_SCORE_COUNT;
        struct vox_tensor deg = {0};
        CHECK_OK(vox_synth_degrade(ctx, &aff, noisy ? VOX_SYNTH_NOISY : VOX_SYNTH_SMOOTH, 4, &deg));
        struct vox_volume *vol = NULL;
        CHECK_OK(vox_volume_save(ctx, path, &deg, NULL));
        CHECK_OK(vox_volume_open(ctx, path, &vol));
        struct vox_seg_params p;
        ag_params(&p, k);
        struct vox_seg_result ref = {0};
        CHECK_OK(vox_segment(ctx, &deg, &p, &ref));
        int64_t rd[3] = {0}, wr[3] = {0}, nrec[3] = {0};
        for (int m = 0; m < 3 && vol; m++)
            records_run(ctx, vol, &p, &ref, mode[m], &rd[m], &wr[m], &nrec[m]);
        CHECK(wr[0] > wr[1] && rd[0] != rd[1]); /* records written and read instead */
        CHECK(nrec[0] == 27 && nrec[1] == 0);   /* 40^3 in 16^3 chunks: 3 x 3 x 3 */
        CHECK(!noisy || (wr[2] == wr[1] && rd[2] == rd[1] && nrec[2] == 0));
        if (k == 0 && vol) { /* a disk that fills up: records for the first chunks, then scans */
            struct rlimit old, lim;
            CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0);
            lim = old;
            lim.rlim_cur = 150000; /* the label store's files stay below; the records (a file a
                                    * worker, 430 KB in all) not */
            void (*was)(int) = signal(SIGXFSZ, SIG_IGN);
            CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
            int64_t rd_full, wr_full, nrec_full;
            records_run(ctx, vol, &p, &ref, "2", &rd_full, &wr_full, &nrec_full);
            CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
            signal(SIGXFSZ, was);
            CHECK(wr_full > wr[1] && wr_full < wr[0] && nrec_full > 0 && nrec_full < 27);
        }
        vox_seg_result_fini(ctx, &ref);
        vox_volume_close(vol);
        vox_tensor_free(ctx, &deg);
    }
    unlink(path);
    CHECK(rmdir(dir) == 0);
    vox_tensor_free(ctx, &aff);
}

/* A loopback comm: ranks 1..size-1 run first and queue their blobs; rank 0 takes them last
 * first (an order no single process gives), so the result must not depend on arrival. */
struct loop_comm {
    struct vox_ctx *ctx;
    void *blob[64];
    int64_t chunk[64], len[64];
    int n;
};

static enum vox_status loop_send(void *arg, struct vox_ctx *ctx, int64_t chunk,
                                 const void *blob, int64_t len)
{
    struct loop_comm *l = arg;
    if (l->n == 64 || !(l->blob[l->n] = vox_alloc(l->ctx, (size_t)len)))
        return VOX_OUT_OF_MEMORY;
    memcpy(l->blob[l->n], blob, (size_t)len);
    l->chunk[l->n] = chunk, l->len[l->n++] = len;
    return VOX_OK;
}

static enum vox_status loop_recv(void *arg, struct vox_ctx *ctx, int64_t *chunk_out,
                                 void **blob_out, int64_t *len_out)
{
    struct loop_comm *l = arg;
    if (l->n == 0)
        return VOX_INTERNAL;
    l->n--;
    *blob_out = vox_alloc(ctx, (size_t)l->len[l->n]);
    if (!*blob_out)
        return VOX_OUT_OF_MEMORY;
    memcpy(*blob_out, l->blob[l->n], (size_t)l->len[l->n]);
    vox_free(l->ctx, l->blob[l->n]);
    *chunk_out = l->chunk[l->n], *len_out = l->len[l->n];
    return VOX_OK;
}

/* vox_dist_segment shared by 1..4 loopback ranks equals vox_segment; a blob for the wrong
 * chunk or of the wrong length is refused by name. */
static void test_seg_comm(struct vox_ctx *ctx)
{
    uint8_t *q = malloc(3 * 9 * 11 * 13);
    const int64_t shape[3] = {9, 11, 13};
    tie_volume(q, shape, 91, 4, 3);
    struct vox_tensor aff = u8_aff(q, shape);
    struct vox_seg_params p;
    ag_params(&p, 1);
    struct vox_seg_result ref = {0}, res = {0};
    CHECK_OK(vox_segment(ctx, &aff, &p, &ref));
    struct vox_dist_source src = {.aff = &aff};
    struct loop_comm l = {.ctx = ctx};
    for (int size = 1; size <= 4; size++) {
        struct vox_dist_comm c = {.size = size, .send = loop_send, .recv = loop_recv, .arg = &l};
        struct vox_dist_options o = {.chunk = {4, 5, 6}, .comm = &c};
        for (c.rank = size - 1; c.rank > 0; c.rank--) {
            CHECK_OK(vox_dist_segment(ctx, &src, &p, &o, &res));
            CHECK(res.labels.data == NULL && res.nseg == 0);
        }
        CHECK_OK(vox_dist_segment(ctx, &src, &p, &o, &res));
        CHECK(l.n == 0 && same_result(&res, &ref, &res.labels));
        vox_seg_result_fini(ctx, &res);
    }
    struct vox_dist_comm c = {.rank = 1, .size = 2, .send = loop_send, .recv = loop_recv,
                              .arg = &l};
    struct vox_dist_options o = {.chunk = {4, 5, 6}, .comm = &c};
    CHECK_OK(vox_dist_segment(ctx, &src, &p, &o, &res));
    l.chunk[l.n - 1]--; /* chunk 25's blob (of 27), labelled 24 (rank 0's) */
    c.rank = 0;
    CHECK_STATUS(vox_dist_segment(ctx, &src, &p, &o, &res), VOX_IO);
    CHECK_ERROR_HAS("malformed summary");
    while (l.n > 0)
        vox_free(ctx, l.blob[--l.n]);
    c.size = 0;
    CHECK_STATUS(vox_dist_segment(ctx, &src, &p, &o, &res), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("rank");
    vox_seg_result_fini(ctx, &ref);
    free(q);
}

/* A loopback comm for ranks run as threads, with messages both ways: every send is queued
 * (it never waits, like libvox_dist_mpi's), every receive waits for its queue. */
struct mq {
    int64_t key, len;
    void *blob;
    struct mq *next;
};

struct thread_comm {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct mq *q[5]; /* 0: to rank 0 from any rank; r: from rank 0 to rank r */
    int64_t sent[5]; /* messages into each queue */
};

struct thread_rank {
    struct thread_comm *t;
    int rank;
    /* the comm's contract: one thread of a process calls it (an MPI library initialised
     * without thread support); calls from another are counted */
    pthread_t caller;
    bool called;
    int64_t foreign;
    int64_t past; /* messages to rank 0 keyed past `chunks` (a level-1 node's) */
    int64_t chunks;
};

/* Counts a call from a thread other than the first caller's. */
static void tc_caller(struct thread_rank *r)
{
    if (!r->called) {
        r->caller = pthread_self();
        r->called = true;
    } else if (!pthread_equal(r->caller, pthread_self())) {
        r->foreign++;
    }
}

static enum vox_status tq_put(struct thread_comm *t, int q, int64_t key, const void *blob,
                              int64_t len)
{
    struct mq *m = malloc(sizeof *m);
    void *b = malloc(len ? (size_t)len : 1);
    if (!m || !b) {
        free(m);
        free(b);
        return VOX_OUT_OF_MEMORY;
    }
    memcpy(b, blob, (size_t)len);
    *m = (struct mq){key, len, b, NULL};
    pthread_mutex_lock(&t->mu);
    struct mq **end = &t->q[q];
    while (*end)
        end = &(*end)->next;
    *end = m;
    t->sent[q]++;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    return VOX_OK;
}

static enum vox_status tq_get(struct thread_comm *t, int q, struct vox_ctx *ctx, int64_t *key,
                              void **blob, int64_t *len)
{
    pthread_mutex_lock(&t->mu);
    /* a minute without a message is a hang (a process that failed without a word): fail */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 60;
    int w = 0;
    while (!t->q[q] && w == 0)
        w = pthread_cond_timedwait(&t->cv, &t->mu, &until);
    if (!t->q[q]) {
        pthread_mutex_unlock(&t->mu);
        return vox_fail(ctx, VOX_IO, "test comm: no message for queue %d in 60 s", q);
    }
    struct mq *m = t->q[q];
    t->q[q] = m->next;
    pthread_mutex_unlock(&t->mu);
    *blob = vox_alloc(ctx, (size_t)m->len + 1);
    if (*blob)
        memcpy(*blob, m->blob, (size_t)m->len);
    *key = m->key, *len = m->len;
    free(m->blob);
    free(m);
    return *blob ? VOX_OK : VOX_OUT_OF_MEMORY;
}

/* Frees the messages nobody took (a failed run's last words to a rank that had ended); their
 * count. */
static int tc_drain(struct thread_comm *t)
{
    int n = 0;
    for (int q = 0; q < (int)(sizeof t->q / sizeof t->q[0]); q++)
        while (t->q[q]) {
            struct mq *m = t->q[q];
            t->q[q] = m->next;
            free(m->blob);
            free(m);
            n++;
        }
    return n;
}

static enum vox_status tc_send(void *arg, struct vox_ctx *ctx, int64_t chunk, const void *blob,
                               int64_t len)
{
    (void)ctx;
    tc_caller(arg);
    struct thread_rank *r = arg;
    r->past += r->chunks && chunk >= r->chunks;
    return tq_put(r->t, 0, chunk, blob, len);
}

static enum vox_status tc_recv(void *arg, struct vox_ctx *ctx, int64_t *chunk, void **blob,
                               int64_t *len)
{
    tc_caller(arg);
    return tq_get(((struct thread_rank *)arg)->t, 0, ctx, chunk, blob, len);
}

/* Rank 0: whether a message waits for it. */
static bool tc_ready(void *arg, struct vox_ctx *ctx)
{
    (void)ctx;
    tc_caller(arg);
    struct thread_comm *t = ((struct thread_rank *)arg)->t;
    pthread_mutex_lock(&t->mu);
    bool any = t->q[0] != NULL;
    pthread_mutex_unlock(&t->mu);
    return any;
}

static enum vox_status tc_send_to(void *arg, struct vox_ctx *ctx, int to, int64_t key,
                                  const void *blob, int64_t len)
{
    (void)ctx;
    tc_caller(arg);
    return tq_put(((struct thread_rank *)arg)->t, to, key, blob, len);
}

static enum vox_status tc_recv_root(void *arg, struct vox_ctx *ctx, int64_t *key, void **blob,
                                    int64_t *len)
{
    struct thread_rank *r = arg;
    tc_caller(r);
    return tq_get(r->t, r->rank, ctx, key, blob, len);
}

struct rank_job {
    struct thread_rank tr;
    struct vox_dist_comm c;
    const char *path;
    const struct vox_seg_params *p;
    struct vox_dist_options o;
    enum vox_status st;
    char err[256];   /* the rank's message */
    struct gather g; /* a rank's own sink, when it encodes its chunks */
    struct vox_dist_sink sink;
};

static void *rank_main(void *arg)
{
    struct rank_job *j = arg;
    struct vox_ctx *ctx = NULL;
    struct vox_ctx_options co = {.threads = 1 + j->tr.rank % 2, .log_level = VOX_LOG_WARN};
    struct vox_volume *vol = NULL;
    struct vox_seg_result res = {0};
    j->st = vox_ctx_create(&co, &ctx);
    j->g.ctx = ctx;
    if (j->st == VOX_OK)
        j->st = vox_volume_open(ctx, j->path, &vol);
    struct vox_dist_source src = {.vol = vol};
    if (j->st == VOX_OK)
        j->st = vox_dist_segment(ctx, &src, j->p, &j->o, &res);
    if (j->st == VOX_OK && (res.labels.data || res.nseg != 0))
        j->st = VOX_INTERNAL; /* a rank other than 0 gives nothing */
    snprintf(j->err, sizeof j->err, "%s", vox_ctx_error(ctx));
    vox_volume_close(vol);
    vox_ctx_destroy(ctx);
    return NULL;
}

/* Two ranks' jobs with options o; rank 1's sink (with o's) encodes its chunks. */
static void two_rank_jobs(struct thread_comm *t, struct rank_job job[2], const char *path,
                          const struct vox_seg_params *p, const struct vox_dist_options *o)
{
    for (int r = 0; r < 2; r++) {
        job[r] = (struct rank_job){.tr = {t, r}, .path = path, .p = p, .o = *o};
        job[r].c = (struct vox_dist_comm){
            r, 2, tc_send, tc_recv, tc_send_to, tc_recv_root, &job[r].tr, NULL};
        job[r].o.comm = &job[r].c;
    }
    job[1].sink =
        (struct vox_dist_sink){.ready = gather_ready, .arg = &job[1].g, .encode = gather_encode};
    if (o->sink)
        job[1].o.sink = &job[1].sink;
}

/* Rank 1 of job on a thread beside rank 0 here, over the volume at path: rank 0's status
 * (rank 1's in job[1].st). */
static enum vox_status two_ranks(struct vox_ctx *ctx, const char *path,
                                 const struct vox_seg_params *p, struct rank_job job[2],
                                 struct vox_seg_result *res)
{
    pthread_t th;
    CHECK(pthread_create(&th, NULL, rank_main, &job[1]) == 0);
    struct vox_volume *vol = NULL;
    CHECK_OK(vox_volume_open(ctx, path, &vol));
    struct vox_dist_source src = {.vol = vol};
    enum vox_status s = vox_dist_segment(ctx, &src, p, &job[0].o, res);
    pthread_join(th, NULL);
    vox_volume_close(vol);
    return s;
}

/* Ranks as threads with messages both ways (stages (b) and (c) shared too, dist/ranks.c):
 * 2 to 4 ranks, rank 0 on 1 or 2 threads, through a sink (the fragment faces) equal the whole
 * run; chunks large enough that the other ranks' chunks decide merges. */
static void test_seg_ranks(struct vox_ctx *ctx)
{
    struct vox_synth_params sp;
    vox_synth_defaults(&sp);
    sp.shape[0] = 24, sp.shape[1] = 96, sp.shape[2] = 96;
    sp.cell_size_nm = 80;
    sp.seed = 9;
    struct vox_tensor raw = {0}, gt = {0}, aff = {0}, deg = {0};
    int64_t cells;
    CHECK_OK(vox_synth_generate(ctx, &sp, &raw, &gt, &aff, &cells));
    CHECK_OK(vox_synth_degrade(ctx, &aff, VOX_SYNTH_SMOOTH, 4, &deg));
    char dir[] = "/tmp/vox-ranks-XXXXXX", path[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/aff.npy", dir);
    CHECK_OK(vox_volume_save(ctx, path, &deg, NULL));
    struct vox_seg_params p;
    ag_params(&p, 0); /* a size merge, mean score */
    struct vox_seg_result ref = {0};
    CHECK_OK(vox_segment(ctx, &deg, &p, &ref));
    /* 2, 3 and 4 ranks, with face records on every chunk (the ranks' own chunks of (b) and
     * (c) and rank 0's: dist_pairs_chunk), then without; 2 x 2 x 2 chunks (dealt one by one
     * to the ranks) and 4 x 5 x 4 (by level-1 subtree: 12 of them, the ranks compute those
     * nodes); last, 2 ranks on 8 x 8 x 8 chunks (by level-2 subtree: 8 of them; the ranks
     * compute levels 1 and 2 of theirs) */
    for (int k = 0; k < 7; k++) {
        const int size = k == 6 ? 2 : 2 + k % 3;
        const bool rec = k < 3 || k == 6, subtrees = k % 2 == 0, deep = k == 6;
        setenv("VOX_DIST_PAIRS", rec ? "2" : "0", 1);
        struct thread_comm t = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
        struct rank_job job[4];
        pthread_t th[4];
        struct vox_ctx *c0 = size == 3 ? ctx_one_thread() : ctx;
        struct gather g = {.ready = false};
        CHECK_OK(vox_tensor_alloc(c0, &g.t, VOX_U32, 3, ref.labels.shape));
        /* 2 and 4 ranks write their own chunks (encode there, store on rank 0); with 3, rank
         * 0 writes every chunk */
        const bool enc = size != 3;
        struct vox_dist_sink sink = {.ready = gather_ready,
                                     .write = gather_write,
                                     .arg = &g,
                                     .concurrent = size % 4 == 0,
                                     .encode = enc ? gather_encode : NULL,
                                     .store = enc ? gather_store : NULL};
        for (int r = 0; r < size; r++) {
            job[r] = (struct rank_job){
                .tr = {&t, r}, .path = path, .p = &p, .o = {.chunk = {12, 48, 48}, .sink = &sink}};
            if (subtrees && !deep) /* 4 x 5 x 4 chunks */
                job[r].o.chunk[0] = 7, job[r].o.chunk[1] = 20, job[r].o.chunk[2] = 30;
            if (deep) /* 8 x 8 x 8 */
                job[r].o.chunk[0] = 3, job[r].o.chunk[1] = 12, job[r].o.chunk[2] = 12;
            job[r].tr.chunks = deep ? 512 : subtrees ? 80 : 8;
            job[r].sink = (struct vox_dist_sink){
                .ready = gather_ready, .arg = &job[r].g, .encode = gather_encode};
            if (r > 0 && enc)
                job[r].o.sink = &job[r].sink;
            job[r].c = (struct vox_dist_comm){r, size, tc_send, tc_recv, tc_send_to, tc_recv_root,
                                              &job[r].tr,
                                              /* (rank 0 probing for messages, or not) */
                                              k % 3 == 1 ? NULL : tc_ready};
            job[r].o.comm = &job[r].c;
            if (r > 0)
                CHECK(pthread_create(&th[r], NULL, rank_main, &job[r]) == 0);
        }
        struct vox_volume *vol = NULL;
        struct vox_seg_result res = {0};
        CHECK_OK(vox_volume_open(c0, path, &vol));
        struct vox_dist_source src = {.vol = vol};
        CHECK_OK(vox_dist_segment(c0, &src, &p, &job[0].o, &res));
        for (int r = 1; r < size; r++) {
            pthread_join(th[r], NULL);
            CHECK_OK(job[r].st);
        }
        res.labels = g.t;
        CHECK(same_result(&res, &ref, &g.t));
        /* every rank had chunks of stages (b), (c) and (d): setup, chunks and the end each;
         * the chunks each rank encoded are the ones rank 0 stored */
        int64_t encoded = 0;
        /* each process used the comm from one thread, though odd ranks ran 2 */
        for (int r = 0; r < size; r++)
            CHECK(job[r].tr.called && job[r].tr.foreign == 0);
        for (int r = 1; r < size; r++) {
            /* by subtree, a rank sent its 2 x 3 x 2 level-1 nodes j = r mod size in stages
             * (b) and (c), and in (a) where it writes its output; else none */
            const int64_t nodes = subtrees && !deep ? (12 - r + size - 1) / size : 0;
            CHECK(deep || job[r].tr.past == nodes * (enc ? 3 : 2));
            /* deep: rank 1's 4 level-2 nodes and their 32 children in (a), (b) and (c) */
            CHECK(!deep || job[r].tr.past == 3 * (4 + 32));
            CHECK(t.sent[r] >= 3 * (1 + 1 + 1) - (enc ? 0 : 1) && !t.q[r]);
            CHECK(!enc || (job[r].g.ready && job[r].g.nseg == ref.nseg && job[r].g.writes > 0));
            encoded += job[r].g.writes;
        }
        CHECK(g.stored == encoded);
        CHECK(!t.q[0]);
        vox_seg_result_fini(c0, &res);
        vox_volume_close(vol);
        if (c0 != ctx)
            vox_ctx_destroy(c0);
        unsetenv("VOX_DIST_PAIRS");
    }
    /* ranks that encode their chunks' output (so they send rank 0 their faces only) with a
     * rank 0 whose sink cannot store it: an error on rank 0, and the ranks still end */
    {
        struct thread_comm t = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
        struct rank_job job[2];
        struct gather g = {.ready = false};
        CHECK_OK(vox_tensor_alloc(ctx, &g.t, VOX_U32, 3, ref.labels.shape));
        struct vox_dist_sink sink = {.ready = gather_ready, .write = gather_write, .arg = &g};
        two_rank_jobs(&t, job, path, &p,
                      &(struct vox_dist_options){.chunk = {12, 48, 48}, .sink = &sink});
        struct vox_seg_result res = {0};
        CHECK_STATUS(two_ranks(ctx, path, &p, job, &res), VOX_INVALID_ARG);
        CHECK_ERROR_HAS("cannot store");
        CHECK_OK(job[1].st);
        CHECK(tc_drain(&t) == 1); /* rank 0's word that it failed, to a rank already done */
        vox_seg_result_fini(ctx, &res);
        vox_tensor_free(ctx, &g.t);
    }
    /* a process that fails tells those that may wait for it, which fail too instead of
     * waiting forever: rank 0 before the output stage (its sink's ready fails: the rank
     * waits for that stage's setup), rank 1 in it (its encode fails: rank 0 waits for its
     * chunks), and rank 0 at the start (its sink has no write: a bad argument there only) */
    for (int who = 0; who < 3; who++) {
        struct thread_comm t = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
        struct rank_job job[2];
        struct gather g = {.ready = false, .fail = who == 0 ? 1 : 0};
        CHECK_OK(vox_tensor_alloc(ctx, &g.t, VOX_U32, 3, ref.labels.shape));
        struct vox_dist_sink sink = gather_sink(&g);
        sink.write = who == 2 ? NULL : sink.write;
        two_rank_jobs(&t, job, path, &p,
                      &(struct vox_dist_options){.chunk = {12, 48, 48}, .sink = &sink});
        job[1].g.fail = who == 1 ? 2 : 0;
        struct vox_seg_result res = {0};
        CHECK_STATUS(two_ranks(ctx, path, &p, job, &res), who == 2 ? VOX_INVALID_ARG : VOX_IO);
        CHECK(job[1].st == VOX_IO);
        if (who != 1) {
            CHECK(strstr(job[1].err, "rank 0 failed") && strstr(job[1].err, "rank 1 stops"));
        } else {
            CHECK_ERROR_HAS("rank 1 failed");
            CHECK(strstr(job[1].err, "encode fails") != NULL);
        }
        tc_drain(&t);
        vox_seg_result_fini(ctx, &res);
        vox_tensor_free(ctx, &g.t);
    }
    /* with restart records (a workdir) rank 0 records the rank's chunks, whose labels it gets
     * whole; the rank still has its chunks of stages (b), (c) and (d) */
    {
        struct thread_comm t = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
        struct rank_job job[2];
        struct gather g = {.ready = false};
        CHECK_OK(vox_tensor_alloc(ctx, &g.t, VOX_U32, 3, ref.labels.shape));
        struct vox_dist_sink sink = gather_sink(&g);
        char wd[] = "/tmp/vox-ranks-wd-XXXXXX";
        CHECK(mkdtemp(wd) != NULL);
        two_rank_jobs(
            &t, job, path, &p,
            &(struct vox_dist_options){.chunk = {12, 48, 48}, .sink = &sink, .workdir = wd});
        struct vox_dist_stats stats = {0};
        job[0].o.stats = &stats;
        struct vox_seg_result res = {0};
        CHECK_OK(two_ranks(ctx, path, &p, job, &res));
        CHECK_OK(job[1].st);
        res.labels = g.t;
        CHECK(same_result(&res, &ref, &g.t));
        CHECK(stats.tasks_run > 0 && g.stored == job[1].g.writes && g.stored > 0);
        CHECK(t.sent[1] >= 3 * (1 + 1 + 1) && !t.q[0] && !t.q[1]);
        CHECK(rmdir(wd) == 0); /* the records are gone once the run succeeded */
        vox_seg_result_fini(ctx, &res);
        /* a run that failed at the output (rank 0's sink's ready) leaves every chunk
         * recorded; resumed, the rank is told to skip its chunks: it computes and sends
         * nothing, rank 0 runs their later stages from its records, same result */
        char wr[] = "/tmp/vox-ranks-wr-XXXXXX";
        CHECK(mkdtemp(wr) != NULL);
        for (int run = 0; run < 2; run++) {
            struct thread_comm tr = {.mu = PTHREAD_MUTEX_INITIALIZER,
                                     .cv = PTHREAD_COND_INITIALIZER};
            struct gather gr = {.ready = false, .fail = run == 0 ? 1 : 0};
            CHECK_OK(vox_tensor_alloc(ctx, &gr.t, VOX_U32, 3, ref.labels.shape));
            struct vox_dist_sink sr = gather_sink(&gr);
            two_rank_jobs(&tr, job, path, &p,
                          &(struct vox_dist_options){
                              .chunk = {12, 48, 48}, .sink = &sr, .workdir = wr, .resume = run});
            struct vox_dist_stats rs = {0};
            job[0].o.stats = &rs;
            struct vox_seg_result rr = {0};
            CHECK_STATUS(two_ranks(ctx, path, &p, job, &rr), run == 0 ? VOX_IO : VOX_OK);
            if (run == 1) {
                CHECK_OK(job[1].st);
                rr.labels = gr.t;
                CHECK(same_result(&rr, &ref, &gr.t));
                gr.t = (struct vox_tensor){0}; /* (rr's now) */
                CHECK(rs.tasks_run == 0 && rs.tasks_reused > 0);
                CHECK(tr.sent[0] == 0 && job[1].g.writes == 0); /* nothing from the rank */
                CHECK(rmdir(wr) == 0);
            }
            tc_drain(&tr);
            vox_seg_result_fini(ctx, &rr);
            vox_tensor_free(ctx, &gr.t);
        }
    }
    /* without a sink rank 0 keeps stages (b) and (c) and tells the rank so */
    struct thread_comm t = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    struct rank_job job[2];
    two_rank_jobs(&t, job, path, &p, &(struct vox_dist_options){.chunk = {12, 48, 48}});
    struct vox_seg_result res = {0};
    CHECK_OK(two_ranks(ctx, path, &p, job, &res));
    CHECK_OK(job[1].st);
    /* (the list of chunks to skip, then each stage's setup and end) */
    CHECK(same_result(&res, &ref, &res.labels) && t.sent[1] == 1 + 3 * 2 && !t.q[0] && !t.q[1]);
    vox_seg_result_fini(ctx, &res);
    unlink(path);
    CHECK(rmdir(dir) == 0);
    vox_seg_result_fini(ctx, &ref);
    vox_tensor_free(ctx, &raw);
    vox_tensor_free(ctx, &gt);
    vox_tensor_free(ctx, &aff);
    vox_tensor_free(ctx, &deg);
}

static void test_seg_bad_args(struct vox_ctx *ctx)
{
    uint8_t q[3 * 4 * 4 * 4] = {0};
    const int64_t shape[3] = {4, 4, 4};
    struct vox_tensor aff = u8_aff(q, shape);
    struct vox_seg_params p;
    vox_seg_params_defaults(&p);
    struct vox_seg_result res = {0};
    struct vox_dist_options o = {.chunk = {2, 2, 0}};
    struct vox_dist_source src = {.aff = &aff};
    CHECK_STATUS(vox_dist_segment(ctx, &src, &p, &o, &res), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("every side must be >= 1");
    o.chunk[2] = 2;
    struct vox_dist_source none = {0};
    CHECK_STATUS(vox_dist_segment(ctx, &none, &p, &o, &res), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("exactly one");
    struct vox_dist_sink half = {.ready = gather_ready};
    o.sink = &half;
    CHECK_STATUS(vox_dist_segment(ctx, &src, &p, &o, &res), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("ready and write");
    o.sink = NULL;
    struct vox_tensor bad = aff;
    bad.shape[0] = 2;
    src.aff = &bad;
    CHECK_STATUS(vox_dist_segment(ctx, &src, &p, &o, &res), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("(3, Z, Y, X)");
    src.aff = &aff;
    for (int64_t k = 1; k < 40; k++) {
        vox_ctx_fail_alloc_at(ctx, k);
        enum vox_status s = vox_dist_segment(ctx, &src, &p, &o, &res);
        vox_ctx_fail_alloc_at(ctx, 0);
        CHECK(s == VOX_OK || s == VOX_OUT_OF_MEMORY);
        if (s == VOX_OK)
            vox_seg_result_fini(ctx, &res);
    }
}

VOX_TEST_MAIN(VOX_TEST(test_ws_ties), VOX_TEST(test_ws_synth), VOX_TEST(test_ws_plateau_hand),
              VOX_TEST(test_sm_ties), VOX_TEST(test_sm_synth), VOX_TEST(test_bad_args),
              VOX_TEST(test_alloc_failures), VOX_TEST(test_sm_bad_args_and_alloc),
              VOX_TEST(test_ag_ties), VOX_TEST(test_ag_synth), VOX_TEST(test_ag_bad_args_and_alloc),
              VOX_TEST(test_seg_synth), VOX_TEST(test_seg_wide_and_narrow),
              VOX_TEST(test_seg_wide_runs), VOX_TEST(test_diff_rows),
              VOX_TEST(test_seg_record_limits), VOX_TEST(test_seg_long_rows),
              VOX_TEST(test_seg_face_records), VOX_TEST(test_seg_comm), VOX_TEST(test_seg_ranks),
              VOX_TEST(test_seg_bad_args))
