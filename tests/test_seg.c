/*
 * test_seg.c: the segmentation pipeline (watershed, region graph, single linkage,
 * agglomeration, cuts) against hand-computed cases, a connected-components oracle on
 * affinities made from ground-truth box partitions, identities (nesting of cuts, cut ==
 * fresh run, 1 thread == 2 threads, u8 == float), watershed properties on random volumes,
 * and bad input.
 */
#include "harness.h"
#include "vox/seg.h"

/* ---- helpers ----------------------------------------------------------------------------- */

/* A partition of (z, y, x) into boxes: random cuts along each axis. */
static void make_boxes(uint32_t *gt, const int64_t *shape, uint64_t *seed, int cuts)
{
    int64_t cell[3][64];
    for (int a = 0; a < 3; a++) {
        int id = 0;
        for (int64_t i = 0; i < shape[a]; i++) {
            if (i > 0 && (int)(vox_test_rand(seed) % 100) < cuts && id < 63)
                id++;
            cell[a][i < 64 ? i : 63] = id;
        }
    }
    for (int64_t z = 0; z < shape[0]; z++)
        for (int64_t y = 0; y < shape[1]; y++)
            for (int64_t x = 0; x < shape[2]; x++)
                gt[(z * shape[1] + y) * shape[2] + x] =
                    (uint32_t)(1 + (cell[0][z < 64 ? z : 63] * 64 + cell[1][y < 64 ? y : 63]) * 64 +
                               cell[2][x < 64 ? x : 63]);
}

/* Affinities from labels: inside a cell in [in_lo, 255], across in [0, out_hi]. */
static void make_aff(uint8_t *q, const uint32_t *gt, const int64_t *shape, uint64_t *seed,
                     int in_lo, int out_hi)
{
    int64_t n = shape[0] * shape[1] * shape[2], step[3] = {shape[1] * shape[2], shape[2], 1};
    for (int c = 0; c < 3; c++)
        for (int64_t v = 0; v < n; v++) {
            int64_t coord = c == 0 ? v / step[0] : c == 1 ? (v / step[1]) % shape[1] : v % shape[2];
            uint64_t r = vox_test_rand(seed);
            bool same = coord > 0 && gt[v] == gt[v - step[c]];
            q[c * n + v] = coord == 0 ? 0
                           : same    ? (uint8_t)(in_lo + (int)(r % (uint64_t)(256 - in_lo)))
                                     : (uint8_t)(r % (uint64_t)(out_hi + 1));
        }
}

/* a and b are the same partition, 0 matching 0 only. */
static bool same_partition(const uint32_t *a, const uint32_t *b, int64_t n)
{
    uint32_t amax = 0, bmax = 0;
    for (int64_t v = 0; v < n; v++) {
        amax = a[v] > amax ? a[v] : amax;
        bmax = b[v] > bmax ? b[v] : bmax;
    }
    uint32_t *ab = calloc(amax + 1, 4), *ba = calloc(bmax + 1, 4);
    bool ok = true;
    for (int64_t v = 0; v < n && ok; v++) {
        if ((a[v] == 0) != (b[v] == 0)) {
            ok = false;
        } else if (a[v]) {
            if (!ab[a[v]])
                ab[a[v]] = b[v];
            if (!ba[b[v]])
                ba[b[v]] = a[v];
            ok = ab[a[v]] == b[v] && ba[b[v]] == a[v];
        }
    }
    free(ab);
    free(ba);
    return ok;
}

/* The oracle: connected components of the edges >= high; voxels with no edge > low are 0. */
static void cc_oracle(const uint8_t *q, const int64_t *shape, int low, int high, uint32_t *out)
{
    int64_t n = shape[0] * shape[1] * shape[2], step[3] = {shape[1] * shape[2], shape[2], 1};
    uint32_t *par = malloc((size_t)n * 4);
    bool *fg = calloc((size_t)n, 1);
    for (int64_t v = 0; v < n; v++)
        par[v] = (uint32_t)v;
    for (int c = 0; c < 3; c++)
        for (int64_t v = 0; v < n; v++) {
            int64_t coord = c == 0 ? v / step[0] : c == 1 ? (v / step[1]) % shape[1] : v % shape[2];
            if (coord == 0 || q[c * n + v] <= low)
                continue;
            fg[v] = fg[v - step[c]] = true;
            if (q[c * n + v] < high)
                continue;
            uint32_t a = (uint32_t)v, b = (uint32_t)(v - step[c]);
            while (par[a] != a)
                a = par[a];
            while (par[b] != b)
                b = par[b];
            par[a > b ? a : b] = a < b ? a : b;
        }
    for (int64_t v = 0; v < n; v++) {
        uint32_t r = (uint32_t)v;
        while (par[r] != r)
            r = par[r];
        out[v] = fg[v] ? r + 1 : 0;
    }
    free(par);
    free(fg);
}

/* Labels first appear in C order as 1, 2, 3, ... */
static bool canonical(const uint32_t *lab, int64_t n)
{
    uint32_t next = 1;
    for (int64_t v = 0; v < n; v++) {
        if (lab[v] > next)
            return false;
        next += lab[v] == next;
    }
    return true;
}

static struct vox_tensor q_view(uint8_t *q, const int64_t *shape)
{
    struct vox_tensor t = {.dtype = VOX_U8, .rank = 4, .data = q,
                           .shape = {3, shape[0], shape[1], shape[2]}};
    t.strides[3] = 1;
    for (int a = 2; a >= 0; a--)
        t.strides[a] = t.strides[a + 1] * t.shape[a + 1];
    return t;
}

static void params_plain(struct vox_seg_params *p)
{
    vox_seg_params_defaults(p);
    p->nsize = 0;
    p->dust = 0;
}

/* ---- ground truth back, through the whole pipeline ---------------------------------------- */

static void check_gt_roundtrip(struct vox_ctx *ctx, const int64_t *shape, uint64_t seed)
{
    int64_t n = shape[0] * shape[1] * shape[2];
    uint32_t *gt = malloc((size_t)n * 4), *want = malloc((size_t)n * 4);
    uint8_t *q = malloc((size_t)n * 3);
    make_boxes(gt, shape, &seed, 30);
    make_aff(q, gt, shape, &seed, 255, 0);
    struct vox_seg_params p;
    params_plain(&p);
    cc_oracle(q, shape, p.low, p.high, want);
    struct vox_tensor aff = q_view(q, shape);
    struct vox_seg_result r;
    CHECK_OK(vox_segment(ctx, &aff, &p, &r));
    CHECK(same_partition(r.labels.data, want, n));
    CHECK(canonical(r.labels.data, n));
    CHECK(r.merges.n == 0); /* every boundary scores 0: nothing merges below threshold 1 */
    struct vox_tensor cut = {0};
    CHECK_OK(vox_tensor_alloc(ctx, &cut, VOX_U64, 3, shape));
    int64_t k;
    CHECK_OK(vox_merge_history_cut(ctx, &r.merges, &r.labels, 0.5, &cut, &k));
    CHECK(k == r.nseg);
    const uint64_t *c64 = cut.data;
    const uint32_t *l32 = r.labels.data;
    bool eq = true;
    for (int64_t v = 0; v < n; v++)
        eq &= c64[v] == l32[v];
    CHECK(eq);
    vox_tensor_free(ctx, &cut);
    vox_seg_result_fini(ctx, &r);
    free(gt);
    free(want);
    free(q);
}

static void test_gt_shapes(struct vox_ctx *ctx)
{
    static const int64_t shapes[][3] = {{1, 1, 1},  {1, 1, 9},  {1, 1, 40}, {1, 7, 11},
                                        {3, 1, 5},  {17, 9, 13}, {5, 6, 1}, {9, 1, 1},
                                        {24, 20, 22}};
    int seeds = vox_test_full ? 40 : 2;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int s = 0; s < seeds; s++)
            check_gt_roundtrip(ctx, shapes[i], 1000 * i + (uint64_t)s);
}

/* ---- the watershed on hand-made cases ---------------------------------------------------- */

/* A 1 x 1 x X volume with x-affinities e[1..X-1]. */
static void ws_line(struct vox_ctx *ctx, const uint8_t *e, int64_t X, int low, int high,
                    const uint32_t *want, const int64_t *want_sizes, int64_t want_n)
{
    uint8_t q[3 * 16] = {0};
    for (int64_t x = 1; x < X; x++)
        q[2 * X + x] = e[x];
    int64_t shape[3] = {1, 1, X};
    struct vox_tensor t = q_view(q, shape), lab = {0};
    struct vox_seg_params p;
    params_plain(&p);
    p.low = low;
    p.high = high;
    int64_t nb = -1, *sizes = NULL;
    CHECK_OK(vox_seg_watershed(ctx, &t, &p, &lab, &nb, &sizes));
    CHECK(nb == want_n);
    for (int64_t x = 0; x < X && lab.data; x++)
        CHECK(((uint32_t *)lab.data)[x] == want[x]);
    for (int64_t i = 0; i <= want_n && sizes && nb == want_n; i++)
        CHECK(sizes[i] == want_sizes[i]);
    vox_free(ctx, sizes);
    vox_tensor_free(ctx, &lab);
}

static void test_watershed_lines(struct vox_ctx *ctx)
{
    /* A maximal plateau {1,2,3} at 50 (edge 20 leads down from it), a seed pair {4,5} at 90. */
    ws_line(ctx, (const uint8_t[]){0, 10, 50, 50, 20, 90}, 6, 5, 200,
            (const uint32_t[]){1, 1, 1, 1, 2, 2}, (const int64_t[]){0, 4, 2}, 2);
    /* A non-maximal plateau {2,3,4} at 50 with exits at both ends: 3 is equidistant and goes
     * to the first exit in C order. */
    ws_line(ctx, (const uint8_t[]){0, 90, 50, 50, 50, 50, 90}, 7, 5, 200,
            (const uint32_t[]){1, 1, 1, 1, 2, 2, 2}, (const int64_t[]){0, 4, 3}, 2);
    /* The same plateau one longer: each half goes to its nearer exit. */
    ws_line(ctx, (const uint8_t[]){0, 90, 50, 50, 50, 50, 50, 90}, 8, 5, 200,
            (const uint32_t[]){1, 1, 1, 1, 2, 2, 2, 2}, (const int64_t[]){0, 4, 4}, 2);
    /* T_low: voxel 0 only has an edge <= low: background; 3 joins via an edge > low. */
    ws_line(ctx, (const uint8_t[]){0, 5, 90, 6}, 4, 5, 200, (const uint32_t[]){0, 1, 1, 1},
            (const int64_t[]){1, 3}, 1);
    /* T_high: edges >= high merge 0..2 and 3..4 into two plateaus split by an edge of 100. */
    ws_line(ctx, (const uint8_t[]){0, 210, 250, 100, 220}, 5, 5, 200,
            (const uint32_t[]){1, 1, 1, 2, 2}, (const int64_t[]){0, 3, 2}, 2);
    /* Everything <= low: all background. */
    ws_line(ctx, (const uint8_t[]){0, 3, 1, 0}, 4, 5, 200, (const uint32_t[]){0, 0, 0, 0},
            (const int64_t[]){4}, 0);
}

/* Properties on random volumes: m <= low <=> 0; each labelled voxel has a same-label neighbour
 * across an edge equal to its max; edges >= high join equal labels; canonical numbering;
 * sizes match. */
static void check_ws_props(struct vox_ctx *ctx, const int64_t *shape, uint64_t seed, int levels)
{
    int64_t n = shape[0] * shape[1] * shape[2], step[3] = {shape[1] * shape[2], shape[2], 1};
    uint8_t *q = malloc((size_t)n * 3);
    for (int64_t i = 0; i < 3 * n; i++)
        q[i] = (uint8_t)((vox_test_rand(&seed) % (uint64_t)levels) * (255 / (levels - 1)));
    struct vox_tensor t = q_view(q, shape), lab = {0};
    struct vox_seg_params p;
    params_plain(&p);
    p.low = 40;
    p.high = 220;
    int64_t nb = 0, *sizes = NULL;
    CHECK_OK(vox_seg_watershed(ctx, &t, &p, &lab, &nb, &sizes));
    const uint32_t *L = lab.data;
    bool ok = L && canonical(L, n);
    int64_t *count = calloc((size_t)nb + 1, 8);
    for (int64_t v = 0; v < n && ok; v++) {
        int64_t co[3] = {v / step[0], (v / step[1]) % shape[1], v % shape[2]};
        int m = -1, best_same = 0;
        for (int d = 0; d < 6; d++) {
            int c = d % 3;
            bool plus = d >= 3;
            if ((!plus && co[c] == 0) || (plus && co[c] + 1 >= shape[c]))
                continue;
            int64_t u = plus ? v + step[c] : v - step[c];
            int a = q[c * n + (plus ? u : v)];
            if (a >= p.high && L[u] != L[v])
                ok = false;
            if (a > m)
                m = a;
        }
        for (int d = 0; d < 6; d++) {
            int c = d % 3;
            bool plus = d >= 3;
            if ((!plus && co[c] == 0) || (plus && co[c] + 1 >= shape[c]))
                continue;
            int64_t u = plus ? v + step[c] : v - step[c];
            best_same |= q[c * n + (plus ? u : v)] == m && L[u] == L[v];
        }
        ok &= (m <= p.low) == (L[v] == 0);
        ok &= L[v] == 0 || best_same;
        ok &= L[v] <= nb;
        if (ok)
            count[L[v]]++;
    }
    for (int64_t i = 0; i <= nb && ok; i++)
        ok = count[i] == sizes[i];
    CHECK(ok);
    free(count);
    vox_free(ctx, sizes);
    vox_tensor_free(ctx, &lab);
    free(q);
}

static void test_watershed_props(struct vox_ctx *ctx)
{
    static const int64_t shapes[][3] = {{1, 1, 30}, {1, 12, 9}, {6, 7, 8}, {11, 3, 13}};
    int seeds = vox_test_full ? 60 : 3;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int s = 0; s < seeds; s++)
            for (int levels = 3; levels <= 12; levels += 9) /* many ties, then fewer */
                check_ws_props(ctx, shapes[i], 77 * i + (uint64_t)s, levels);
}

/* ---- identities: nesting, cut == fresh run, threads, u8 == float ------------------------- */

static bool same_history(const struct vox_merge_history *a, const struct vox_merge_history *b,
                         int64_t n)
{
    if (a->n < n || b->n < n)
        return false;
    for (int64_t i = 0; i < n; i++)
        if (a->m[i].a != b->m[i].a || a->m[i].b != b->m[i].b ||
            a->m[i].survivor != b->m[i].survivor || a->m[i].score != b->m[i].score)
            return false;
    return true;
}

static void noisy_volume(uint8_t *q, const int64_t *shape, uint64_t seed)
{
    int64_t n = shape[0] * shape[1] * shape[2];
    uint32_t *gt = malloc((size_t)n * 4);
    make_boxes(gt, shape, &seed, 25);
    make_aff(q, gt, shape, &seed, 120, 200);
    free(gt);
}

static void check_nesting(struct vox_ctx *ctx, uint64_t seed, enum vox_seg_score score)
{
    const int64_t shape[3] = {14, 15, 16}, n = 14 * 15 * 16;
    uint8_t *q = malloc((size_t)n * 3);
    noisy_volume(q, shape, seed);
    struct vox_tensor aff = q_view(q, shape);
    struct vox_seg_params p;
    vox_seg_params_defaults(&p);
    p.low = 60;
    p.high = 240;
    p.size[0] = (struct vox_seg_size_point){.aff = 61, .size = 6};
    p.dust = 2;
    p.score = score;
    struct vox_seg_result full;
    CHECK_OK(vox_segment(ctx, &aff, &p, &full));
    const double th[] = {0.1, 0.3, 0.5, 0.7, 0.9};
    struct vox_tensor cut[5] = {{0}};
    for (int i = 0; i < 5; i++) {
        CHECK_OK(vox_tensor_alloc(ctx, &cut[i], VOX_U32, 3, shape));
        CHECK_OK(vox_merge_history_cut(ctx, &full.merges, &full.labels, th[i], &cut[i], NULL));
        CHECK(canonical(cut[i].data, n));
    }
    for (int i = 0; i + 1 < 5; i++) { /* finer -> coarser is a function */
        const uint32_t *a = cut[i].data, *b = cut[i + 1].data;
        uint32_t *f = calloc((size_t)n + 1, 4);
        bool ok = true;
        for (int64_t v = 0; v < n; v++) {
            if (!f[a[v]])
                f[a[v]] = b[v] + 1;
            ok &= f[a[v]] == b[v] + 1 && (a[v] == 0) == (b[v] == 0);
        }
        CHECK(ok);
        free(f);
    }
    p.max_threshold = 0.5; /* a fresh run that stops early */
    struct vox_seg_result part;
    CHECK_OK(vox_segment(ctx, &aff, &p, &part));
    CHECK(part.merges.n <= full.merges.n);
    CHECK(same_history(&part.merges, &full.merges, part.merges.n));
    struct vox_tensor c = {0};
    CHECK_OK(vox_tensor_alloc(ctx, &c, VOX_U32, 3, shape));
    CHECK_OK(vox_merge_history_cut(ctx, &part.merges, &part.labels, 0.5, &c, NULL));
    CHECK(memcmp(c.data, cut[2].data, (size_t)n * 4) == 0);
    vox_tensor_free(ctx, &c);
    for (int i = 0; i < 5; i++)
        vox_tensor_free(ctx, &cut[i]);
    vox_seg_result_fini(ctx, &part);
    vox_seg_result_fini(ctx, &full);
    free(q);
}

static void test_nesting(struct vox_ctx *ctx)
{
    int seeds = vox_test_full ? 30 : 2;
    for (int s = 0; s < seeds; s++)
        for (int sc = 0; sc < VOX_SEG_SCORE_COUNT; sc++)
            check_nesting(ctx, 500 + (uint64_t)s, (enum vox_seg_score)sc);
}

/* ctx (2 threads), ctx1 (1) and ctx3 (3 threads) give bitwise identical results, and so does
 * float input. */
/* What vox_segment_observed told: the stages in order, and per stage basins, segments or
 * merges. */
struct stages {
    int n, stage[4];
    int64_t count[4];
    bool seconds_ok;
};

static void note_stage(void *arg, int stage, const struct vox_seg_result *res, double seconds)
{
    struct stages *s = arg;
    if (s->n == 0)
        s->seconds_ok = true;
    s->seconds_ok &= seconds >= 0;
    if (s->n < 4) {
        s->stage[s->n] = stage;
        s->count[s->n++] = stage == 0 ? res->nbasins : stage == 1 ? res->nseg : res->merges.n;
    }
}

static void check_threads_float(struct vox_ctx *ctx, struct vox_ctx *ctx1, struct vox_ctx *ctx3,
                                uint64_t seed)
{
    const int64_t shape[3] = {13, 17, 19}, n = 13 * 17 * 19;
    uint8_t *q = malloc((size_t)n * 3);
    noisy_volume(q, shape, seed);
    struct vox_tensor aff = q_view(q, shape), f = {0};
    CHECK_OK(vox_tensor_alloc(ctx, &f, VOX_F32, 4, aff.shape));
    for (int64_t i = 0; i < 3 * n; i++)
        ((float *)f.data)[i] = q[i] / 255.0f;
    struct vox_seg_params p;
    vox_seg_params_defaults(&p);
    p.low = 50;
    p.size[0] = (struct vox_seg_size_point){.aff = 51, .size = 10};
    p.dust = 3;
    p.score = (enum vox_seg_score)(seed % VOX_SEG_SCORE_COUNT);
    struct vox_seg_result r2, r1, r3, rf;
    CHECK_OK(vox_segment(ctx, &aff, &p, &r2));
    CHECK_OK(vox_segment(ctx1, &aff, &p, &r1));
    CHECK_OK(vox_segment(ctx3, &aff, &p, &r3));
    CHECK(memcmp(r3.labels.data, r1.labels.data, (size_t)n * 4) == 0);
    CHECK(r3.merges.n == r1.merges.n && same_history(&r3.merges, &r1.merges, r1.merges.n));
    CHECK(r3.dend.n == r1.dend.n && same_history(&r3.dend, &r1.dend, r1.dend.n));
    CHECK_OK(vox_segment(ctx, &f, &p, &rf));
    struct vox_tensor own = {0}; /* vox_segment_consume: the same result, the input freed */
    CHECK_OK(vox_tensor_alloc(ctx, &own, VOX_U8, 4, aff.shape));
    memcpy(own.data, q, (size_t)n * 3);
    struct vox_seg_result rc[2];
    CHECK_OK(vox_segment_consume(ctx, &own, &p, &rc[0]));
    struct stages seen = {0}; /* vox_segment_observed: told each stage, in order */
    const struct vox_seg_observer obs = {note_stage, &seen};
    CHECK_OK(vox_segment_observed(ctx, &f, &p, &obs, &rc[1]));
    CHECK(seen.n == 3 && seen.stage[0] == 0 && seen.stage[1] == 1 && seen.stage[2] == 2);
    CHECK(seen.count[0] == r2.nbasins && seen.count[1] == r2.nseg && seen.count[2] == r2.merges.n &&
          seen.seconds_ok);
    for (int i = 0; i < 2; i++) {
        CHECK(rc[i].nseg == r2.nseg && rc[i].merges.n == r2.merges.n);
        CHECK(memcmp(rc[i].labels.data, r2.labels.data, (size_t)n * 4) == 0);
        CHECK(same_history(&rc[i].merges, &r2.merges, r2.merges.n));
        vox_seg_result_fini(ctx, &rc[i]);
    }
    CHECK(own.data == NULL && f.data == NULL);
    CHECK(r2.nseg == r1.nseg && r2.nseg == rf.nseg && r2.nseg > 1);
    CHECK(memcmp(r2.labels.data, r1.labels.data, (size_t)n * 4) == 0);
    CHECK(memcmp(r2.labels.data, rf.labels.data, (size_t)n * 4) == 0);
    CHECK(r2.merges.n == r1.merges.n && r2.merges.n == rf.merges.n && r2.merges.n > 0);
    CHECK(same_history(&r2.merges, &r1.merges, r2.merges.n));
    CHECK(same_history(&r2.merges, &rf.merges, r2.merges.n));
    CHECK(same_history(&r2.dend, &rf.dend, r2.dend.n) && r2.dend.n == r1.dend.n);
    CHECK(same_history(&r2.dend, &r1.dend, r2.dend.n));
    vox_seg_result_fini(ctx, &r2);
    vox_seg_result_fini(ctx1, &r1);
    vox_seg_result_fini(ctx3, &r3);
    vox_seg_result_fini(ctx, &rf);
    vox_tensor_free(ctx, &f);
    free(q);
}

static void test_threads_and_float(struct vox_ctx *ctx)
{
    struct vox_ctx *ctx1, *ctx3;
    struct vox_ctx_options opt = {.threads = 1, .log_level = VOX_LOG_WARN};
    CHECK_OK(vox_ctx_create(&opt, &ctx1));
    opt.threads = 3;
    CHECK_OK(vox_ctx_create(&opt, &ctx3));
    int seeds = vox_test_full ? 24 : 4;
    for (int s = 0; s < seeds; s++)
        check_threads_float(ctx, ctx1, ctx3, 900 + (uint64_t)s);
    CHECK(vox_ctx_live_allocs(ctx1) == 0);
    CHECK(vox_ctx_live_allocs(ctx3) == 0);
    vox_ctx_destroy(ctx1);
    vox_ctx_destroy(ctx3);
}

/* On a random volume with many basins (the packed basin graph's sort takes its parallel,
 * partitioned path), vox_segment's size merge equals single linkage over the full region graph
 * (an independent code path), for 1 and 3 threads. */
static void test_packed_linkage_oracle(struct vox_ctx *ctx)
{
    const int64_t shape[3] = {40, 48, 56}, n = 40 * 48 * 56;
    uint8_t *q = malloc((size_t)n * 3);
    uint64_t seed = 77;
    for (int64_t i = 0; i < 3 * n; i++)
        q[i] = (uint8_t)(vox_test_rand(&seed) % 256);
    struct vox_tensor aff = q_view(q, shape), lab = {0};
    struct vox_seg_params p;
    vox_seg_params_defaults(&p);
    p.size[0] = (struct vox_seg_size_point){.aff = 4, .size = 12};
    p.dust = 5;
    int64_t nb = 0, *sizes = NULL, nseg = 0, *ss = NULL;
    CHECK_OK(vox_seg_watershed(ctx, &aff, &p, &lab, &nb, &sizes));
    struct vox_rag g = {0};
    CHECK_OK(vox_rag_build(ctx, &lab, nb, &aff, false, &g));
    CHECK(g.n > 100000);
    uint32_t *map = NULL;
    struct vox_merge_history dend = {0};
    CHECK_OK(vox_seg_single_linkage(ctx, &g, sizes, &p, &map, &nseg, &ss, &dend));
    vox_seg_relabel(ctx, &lab, map);
    for (int t = 1; t <= 3; t += 2) {
        struct vox_ctx *c;
        struct vox_ctx_options opt = {.threads = t, .log_level = VOX_LOG_WARN};
        CHECK_OK(vox_ctx_create(&opt, &c));
        struct vox_seg_result r;
        CHECK_OK(vox_segment(c, &aff, &p, &r));
        CHECK(r.nbasins == nb && r.nseg == nseg && r.dend.n == dend.n && dend.n > 1000);
        CHECK(same_history(&r.dend, &dend, dend.n));
        CHECK(memcmp(r.labels.data, lab.data, (size_t)n * 4) == 0);
        vox_seg_result_fini(c, &r);
        CHECK(vox_ctx_live_allocs(c) == 0);
        vox_ctx_destroy(c);
    }
    vox_merge_history_fini(ctx, &dend);
    vox_free(ctx, map);
    vox_free(ctx, ss);
    vox_free(ctx, sizes);
    vox_rag_fini(ctx, &g);
    vox_tensor_free(ctx, &lab);
    free(q);
}

/* ---- agglomeration and single linkage on hand-made graphs ----------------------------------- */

/* A graph over 3 segments: (1,2) faces {10, 20, 200}, (1,3) {50}, (2,3) {100, 100}. */
static struct vox_rag hand_rag(uint8_t *bins, uint64_t *counts)
{
    static struct vox_rag_edge e[3];
    e[0] = (struct vox_rag_edge){.a = 1, .b = 2, .max = 200, .nbins = 3, .hist = 0, .sum = 230,
                                 .count = 3};
    e[1] = (struct vox_rag_edge){.a = 1, .b = 3, .max = 50, .nbins = 1, .hist = 3, .sum = 50,
                                 .count = 1};
    e[2] = (struct vox_rag_edge){.a = 2, .b = 3, .max = 100, .nbins = 1, .hist = 4, .sum = 200,
                                 .count = 2};
    const uint8_t b[5] = {10, 20, 200, 50, 100};
    const uint64_t c[5] = {1, 1, 1, 1, 2};
    memcpy(bins, b, 5);
    memcpy(counts, c, sizeof c);
    return (struct vox_rag){.nseg = 3, .n = 3, .e = e, .nhist = 5, .hist_bin = bins,
                            .hist_count = counts};
}

static void check_agg(struct vox_ctx *ctx, enum vox_seg_score score, int64_t k,
                      const struct vox_seg_merge *want, int64_t nwant)
{
    uint8_t bins[5];
    uint64_t counts[5];
    struct vox_rag g = hand_rag(bins, counts);
    struct vox_seg_params p;
    vox_seg_params_defaults(&p);
    p.score = score;
    p.smooth_k = k;
    struct vox_merge_history h = {0};
    CHECK_OK(vox_seg_agglomerate(ctx, &g, &p, &h));
    CHECK(h.n == nwant);
    for (int64_t i = 0; i < nwant && i < h.n; i++) {
        CHECK(h.m[i].a == want[i].a && h.m[i].b == want[i].b);
        CHECK(h.m[i].survivor == want[i].survivor);
        CHECK_NEAR(h.m[i].score, want[i].score, 1e-12);
    }
    vox_merge_history_fini(ctx, &h);
}

static void test_agglomerate_hand(struct vox_ctx *ctx)
{
    /* mean: (2,3) at 100; then (1,2)+(1,3) = 280 / 4 = 70. */
    check_agg(ctx, VOX_SEG_SCORE_MEAN, 0,
              (const struct vox_seg_merge[]){{2, 3, 2, 100 / 255.0}, {1, 2, 1, 70 / 255.0}}, 2);
    /* median: 20, 50, 100 -> (2,3); then {10, 20, 50, 200}: k = floor(1.5) = 1 -> 20. */
    check_agg(ctx, VOX_SEG_SCORE_QUANTILE, 0,
              (const struct vox_seg_merge[]){{2, 3, 2, 100 / 255.0}, {1, 2, 1, 20 / 255.0}}, 2);
    /* max: (1,2) at 200; then max(50, 100). */
    check_agg(ctx, VOX_SEG_SCORE_MAX, 0,
              (const struct vox_seg_merge[]){{1, 2, 1, 200 / 255.0}, {1, 3, 1, 100 / 255.0}}, 2);
    /* smoothed, k = 1: 230/4, 50/2, 200/3 -> (2,3); then 280 / 5 = 56. */
    check_agg(ctx, VOX_SEG_SCORE_SMOOTHED, 1,
              (const struct vox_seg_merge[]){{2, 3, 2, 200 / 765.0}, {1, 2, 1, 56 / 255.0}}, 2);
}

static void test_agglomerate_ties(struct vox_ctx *ctx)
{
    struct vox_rag_edge e[2] = {{.a = 3, .b = 4, .max = 100, .sum = 100, .count = 1},
                                {.a = 1, .b = 2, .max = 100, .sum = 200, .count = 2}};
    struct vox_rag g = {.nseg = 4, .n = 2, .e = e};
    struct vox_seg_params p;
    vox_seg_params_defaults(&p);
    struct vox_merge_history h = {0};
    CHECK_OK(vox_seg_agglomerate(ctx, &g, &p, &h));
    CHECK(h.n == 2 && h.m[0].a == 1 && h.m[0].b == 2 && h.m[1].a == 3);
    vox_merge_history_fini(ctx, &h);
    e[0].a = 5; /* a bad graph: an id above nseg */
    CHECK_STATUS(vox_seg_agglomerate(ctx, &g, &p, &h), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("edge 0");
}

static void check_linkage(struct vox_ctx *ctx, const struct vox_seg_params *p,
                          const uint32_t *want_map, int64_t want_n, int64_t want_merges)
{
    struct vox_rag_edge e[3] = {{.a = 1, .b = 2, .max = 200, .sum = 200, .count = 1},
                                {.a = 2, .b = 3, .max = 150, .sum = 150, .count = 1},
                                {.a = 3, .b = 4, .max = 100, .sum = 100, .count = 1}};
    struct vox_rag g = {.nseg = 4, .n = 3, .e = e};
    const int64_t sizes[5] = {7, 5, 3, 10, 2};
    uint32_t *map = NULL;
    int64_t n = -1, *ss = NULL;
    struct vox_merge_history dend = {0};
    CHECK_OK(vox_seg_single_linkage(ctx, &g, sizes, p, &map, &n, &ss, &dend));
    CHECK(n == want_n);
    CHECK(dend.n == want_merges);
    int64_t total = 0;
    for (int64_t b = 0; b <= 4 && map; b++)
        CHECK(map[b] == want_map[b]);
    for (int64_t i = 0; i <= n && ss; i++)
        total += ss[i];
    CHECK(total == 27);
    vox_free(ctx, map);
    vox_free(ctx, ss);
    vox_merge_history_fini(ctx, &dend);
}

static void test_single_linkage(struct vox_ctx *ctx)
{
    struct vox_seg_params p;
    params_plain(&p);
    p.low = 50;
    p.nsize = 1;
    p.size[0] = (struct vox_seg_size_point){.aff = 51, .size = 8};
    /* (1,2): min 3 < 8 merge -> 8; (2,3): min(8, 10) = 8 stays; (3,4): 2 < 8 merge -> 12. */
    check_linkage(ctx, &p, (const uint32_t[]){0, 1, 1, 2, 2}, 2, 2);
    p.dust = 10; /* {1,2} (8 voxels) is dust */
    check_linkage(ctx, &p, (const uint32_t[]){0, 0, 0, 1, 1}, 1, 2);
    /* tau^-1 linear from (51, 0) to (251, 200): w - 51: 149 at 200 (merge), 99 at 150
     * (8 < 99: merge), 49 at 100 (13 > 49? no: min(18, 2) = 2 < 49: merge). */
    p.dust = 0;
    p.nsize = 2;
    p.size[1] = (struct vox_seg_size_point){.aff = 251, .size = 200};
    check_linkage(ctx, &p, (const uint32_t[]){0, 1, 1, 1, 1}, 1, 3);
    p.low = 150; /* edges <= low never merge */
    check_linkage(ctx, &p, (const uint32_t[]){0, 1, 1, 2, 3}, 3, 1);
}

/* Contracting the basin graph through a map == building the graph of the mapped labels. */
static void test_rag_contract(struct vox_ctx *ctx)
{
    const int64_t shape[3] = {9, 10, 11}, n = 9 * 10 * 11;
    uint8_t *q = malloc((size_t)n * 3);
    int seeds = vox_test_full ? 20 : 2;
    for (int sd = 0; sd < seeds; sd++) {
        noisy_volume(q, shape, 40 + (uint64_t)sd);
        struct vox_tensor t = q_view(q, shape), lab = {0};
        struct vox_seg_params p;
        params_plain(&p);
        p.low = 60;
        int64_t nb = 0, *sizes = NULL;
        CHECK_OK(vox_seg_watershed(ctx, &t, &p, &lab, &nb, &sizes));
        struct vox_rag g = {0}, gc = {0}, gb = {0};
        CHECK_OK(vox_rag_build(ctx, &lab, nb, &t, true, &g));
        uint32_t *map = malloc((size_t)(nb + 1) * 4);
        uint64_t rs = 7 + (uint64_t)sd;
        int64_t k = (nb + 2) / 3;
        map[0] = 0;
        for (int64_t b = 1; b <= nb; b++)
            map[b] = (uint32_t)(vox_test_rand(&rs) % (uint64_t)(k + 1));
        CHECK_OK(vox_rag_contract(ctx, &g, map, k, &gc));
        vox_seg_relabel(ctx, &lab, map);
        CHECK_OK(vox_rag_build(ctx, &lab, k, &t, true, &gb));
        bool ok = gc.n == gb.n && gc.nhist == gb.nhist && gc.n > 0;
        for (int64_t i = 0; ok && i < gc.n; i++) {
            const struct vox_rag_edge *x = &gc.e[i], *y = &gb.e[i];
            ok = x->a == y->a && x->b == y->b && x->max == y->max && x->sum == y->sum &&
                 x->count == y->count && x->nbins == y->nbins;
            for (int32_t j = 0; ok && j < x->nbins; j++)
                ok = gc.hist_bin[x->hist + j] == gb.hist_bin[y->hist + j] &&
                     gc.hist_count[x->hist + j] == gb.hist_count[y->hist + j];
        }
        CHECK(ok);
        free(map);
        vox_rag_fini(ctx, &g);
        vox_rag_fini(ctx, &gc);
        vox_rag_fini(ctx, &gb);
        vox_free(ctx, sizes);
        vox_tensor_free(ctx, &lab);
    }
    free(q);
}

/* ---- input: boundary maps, quantization, bad input -------------------------------------- */

static void test_boundary_map(struct vox_ctx *ctx)
{
    uint8_t p8[6] = {0, 255, 10, 20, 30, 40};
    float pf[6];
    for (int i = 0; i < 6; i++)
        pf[i] = p8[i] / 255.0f;
    struct vox_tensor t8 = {.dtype = VOX_U8, .rank = 3, .data = p8, .shape = {1, 2, 3},
                            .strides = {6, 3, 1}};
    struct vox_tensor tf = t8;
    tf.dtype = VOX_F32;
    tf.data = pf;
    struct vox_tensor a = {0}, b = {0}, c = {0};
    CHECK_OK(vox_seg_boundary_to_aff(ctx, &t8, false, &a));
    CHECK_OK(vox_seg_boundary_to_aff(ctx, &tf, false, &b));
    CHECK_OK(vox_seg_boundary_to_aff(ctx, &t8, true, &c));
    const uint8_t *q = a.data, *qi = c.data;
    /* channel 0 (z): nothing; channel 1 (y): (0,j)-(1,j); channel 2 (x): (i,j)-(i,j-1). */
    const uint8_t want[18] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 235, 0, 215, 0, 0, 0, 0, 225, 215};
    const uint8_t want_in[18] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 30, 10, 0, 0, 10, 0, 20, 30};
    CHECK(memcmp(q, want, 18) == 0);
    CHECK(memcmp(qi, want_in, 18) == 0);
    CHECK(memcmp(a.data, b.data, 18) == 0);
    vox_tensor_free(ctx, &a);
    vox_tensor_free(ctx, &b);
    vox_tensor_free(ctx, &c);
}

static void test_bad_input(struct vox_ctx *ctx)
{
    float f[2 * 3 * 4 * 5] = {0};
    struct vox_tensor t = {.dtype = VOX_F32, .rank = 4, .data = f, .shape = {2, 3, 4, 5},
                           .strides = {60, 20, 5, 1}};
    struct vox_seg_params p;
    vox_seg_params_defaults(&p);
    struct vox_seg_result r;
    CHECK_STATUS(vox_segment(ctx, &t, &p, &r), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("2 channels");
    t.rank = 3;
    CHECK_STATUS(vox_segment(ctx, &t, &p, &r), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("rank 3");
    t = (struct vox_tensor){.dtype = VOX_F32, .rank = 4, .data = f, .shape = {3, 0, 4, 5},
                            .strides = {20, 20, 5, 1}};
    CHECK_STATUS(vox_segment(ctx, &t, &p, &r), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("empty");
    t.shape[1] = 2;
    t.strides[0] = 40;
    f[1 * 40 + 1 * 20 + 2 * 5 + 3] = NAN;
    f[2 * 40 + 1 * 20] = 1.5f; /* later in C order */
    CHECK_STATUS(vox_segment(ctx, &t, &p, &r), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("affinities[1, 1, 2, 3]");
    f[1 * 40 + 1 * 20 + 2 * 5 + 3] = 1.0f + 1e-7f; /* within tolerance */
    CHECK_STATUS(vox_segment(ctx, &t, &p, &r), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("affinities[2, 1, 0, 0] = 1.5");
    t.dtype = VOX_U16;
    CHECK_STATUS(vox_segment(ctx, &t, &p, &r), VOX_UNSUPPORTED);
    p.low = 200;
    p.high = 100;
    t.dtype = VOX_F32;
    CHECK_STATUS(vox_segment(ctx, &t, &p, &r), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("low = 200");
    vox_seg_params_defaults(&p);
    p.nsize = 2;
    p.size[1].aff = 2;
    CHECK_STATUS(vox_segment(ctx, &t, &p, &r), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("size table point 1");
    CHECK_STATUS(vox_segment(ctx, NULL, &p, &r), VOX_INVALID_ARG);
}

static void test_alloc_failures(struct vox_ctx *ctx)
{
    const int64_t shape[3] = {6, 7, 8}, n = 6 * 7 * 8;
    uint8_t *q = malloc((size_t)n * 3);
    noisy_volume(q, shape, 5);
    struct vox_tensor aff = q_view(q, shape), f = {0};
    CHECK_OK(vox_tensor_alloc(ctx, &f, VOX_F32, 4, aff.shape));
    for (int64_t i = 0; i < 3 * n; i++)
        ((float *)f.data)[i] = q[i] / 255.0f;
    struct vox_seg_params p;
    vox_seg_params_defaults(&p);
    p.low = 50;
    p.score = VOX_SEG_SCORE_QUANTILE;
    for (int64_t k = 1; k < 200; k++) {
        struct vox_seg_result r;
        vox_ctx_fail_alloc_at(ctx, k);
        enum vox_status s = vox_segment(ctx, &f, &p, &r);
        vox_ctx_fail_alloc_at(ctx, 0);
        CHECK(s == VOX_OK || s == VOX_OUT_OF_MEMORY);
        if (s == VOX_OK) {
            vox_seg_result_fini(ctx, &r);
            break;
        }
    }
    vox_tensor_free(ctx, &f);
    free(q);
}

VOX_TEST_MAIN(VOX_TEST(test_watershed_lines), VOX_TEST(test_watershed_props),
              VOX_TEST(test_gt_shapes), VOX_TEST(test_single_linkage), VOX_TEST(test_rag_contract),
              VOX_TEST(test_agglomerate_hand), VOX_TEST(test_agglomerate_ties),
              VOX_TEST(test_nesting), VOX_TEST(test_threads_and_float),
              VOX_TEST(test_packed_linkage_oracle),
              VOX_TEST(test_boundary_map), VOX_TEST(test_bad_input),
              VOX_TEST(test_alloc_failures))
