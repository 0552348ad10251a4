/*
 * fast_wino_bw.c: the weight gradient of a Winograd-shaped conv (3x3x3, 1x3x3, ...; see
 * fast_wino.c) by Winograd.
 *
 * Key idea: the forward tile is the trilinear form sum_i gy_i y_i = sum_p (A gy)_p (G g)_p
 * (B^T d)_p of F(m, 3) (y = A^T [(G g) . (B^T d)]), so its derivative in the weights g is
 *     dW = G^T [(A gy) . (B^T d)]      per axis; in 3D G^T [(A gy A^T) . (B^T d B)] G,
 * the same matrices with the roles turned round (its derivative in d is the backward-data, a
 * conv with the flipped weights, which fast_train.c runs as a forward Winograd). Per tile of m
 * outputs the input tile's transform V is the forward's (fast_wino_tr.h input), the output
 * gradient's tile becomes W = A gy A^T (fast_wino_tr.h grad, read from the planar gradient through
 * register transposes), and the products summed over tiles are, per transform position p, one
 * matrix product D[p][ci][co] += sum_t V[t][p][ci] W[t][p][co] (a JIT nest: vectors along co, a
 * register tile of ci x co blocks, the tiles the reduction). G^T D G runs once per call: for 3x3x3
 * 144 products per (ci, co) and tile of 2x4x4 outputs instead of 27 * 32 = 864, the direct nest's.
 * Row 1 of A is all ones, so one position of each W holds its tile's sum of gy: the bias gradient,
 * summed on the way in double.
 *
 * The input is read blocked. vox_nn_wino_bw_run_bands takes it planar instead: each thread
 * packs the band of rows its next block reads (rows of tiles are outermost in the tiles' order,
 * so consecutive blocks share a band) into its own buffer, which stays in the caches for the
 * transforms; a packed copy of the whole input (84 MB for RSUNet's 16-channel convs) is neither
 * written to memory nor read back. RSUNet at 1 thread: its packs 208 -> 27 samples a step,
 * the step ~1.5 % faster; same bits.
 *
 * The tiles are cut into `slots` runs of consecutive blocks, each summed into its own D (a
 * number fixed by the shape, not the thread count), and the slots added in order at the end:
 * the same bits for any thread count. The threads take the slots as they come free, longest
 * first (slot_first), so the last ones to finish are short.
 *
 * Where D is large (128 -> 128 channels: 9.4 MB per slot) the threads share one D instead
 * ("shared" mode, chosen by the shape): per block they transform its tiles side by side into
 * one V and W, then each takes groups of transform positions and runs the product for them
 * over all the block's tiles. Each D[p] is then one chain of sums over the tiles in order, so
 * neither the thread count nor the block length changes its bits; the blocks are twice as
 * long (the threads' V and W together), which halves D's traffic, and there is one D, not two
 * slots' worth, to keep in the caches.
 */
#include "fast_wino.h"

#include <string.h>

/* V and W of one block per thread: 3 MiB (the products' partial sums D are loaded and stored
 * once per block, so longer blocks cut that traffic; the transforms' stores then go to L3).
 * Measured, 3x3x3 C -> C at 20 x (4096 / C)^2 on 2 threads, backward-weights ms for blocks of
 * 768 KiB / 3 MiB: C = 16 39-57 / 39-41, 32 34-35 / 27-29, 64 28 / 22-24, 128 26-27 / 25-29;
 * 6 and 12 MiB no better. */
enum { BW_BLOCK_BYTES = 3 << 20 };
/* All slots' D together about this at most (the slots depend on the shape only): 2 to 8
 * slots, 2 even where two D are larger (9.4 MB each at 128 -> 128 channels) */
enum { SUM_BYTES = 16 << 20, MAX_SLOTS = 8 };
/* Shared mode from this size of D on; positions per group of its products. Measured (3x3x3
 * C -> C at 20 x (4096 / C)^2, backward-weights ms, slots / shared, 1 and 2 threads):
 * C = 128 28.5-30.1 / 23.6-27.1 and 20.9-21.5 / 13.7-15.9; C = 64 30.6 / 24.4-24.9 and
 * 19.0-19.5 / 16.1-17.1; C = 32 34.3-37.4 / 34.9-41.2 and 20.1-23.1 / 23.3-23.6 (D 0.6 MB:
 * the slots stay). */
enum { SHARED_D_BYTES = 2 << 20, GROUP_POSITIONS = 8 };

struct vox_nn_wino_bw {
    struct vox_nn_wino_geom g;
    struct vox_nn_fast_conv cv;
    int threads, slots;
    int64_t p1; /* the transform position of (A gy A^T) whose row of A is all ones: the sum of the
                 * tile's gradient, for the bias (row 1 of F(2,3)'s and F(4,3)'s A) */
    int64_t tiles, blocks, vfl, wfl,
        dfl; /* per thread (shared: per block): V, W + the transforms' buffer; per slot D */
    bool shared;
    int64_t ptf; /* shared: floats per thread (the transforms' and the finish's buffers) */
    struct vox_kernel *gemm;
    struct vox_kernel *ggroup, *grest; /* shared: the products of GROUP_POSITIONS positions, and
                                        * of the P % GROUP_POSITIONS last ones (or NULL) */
    const struct vox_nn_wino_tr *tr;
};

static int64_t cdiv(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

/* D[p][ci][ob][bo] += sum_t V[t][p][ci] W[t][p][ob][bo]: per p, a register tile of ct input
 * channels x ot output blocks, reduced over the block's T tiles. */
static void products_nest(const struct vox_nn_wino_geom *g, int isa, int64_t np, struct vox_nest *n)
{
    const int64_t b = g->b, ob = g->cop / b, cin = g->cin, cop = g->cop;
    const int64_t regs = isa == VOX_ISA_AVX512 ? 32 : 16;
    vox_nest_init(n);
    int d[5];
    static const char *const names[5] = {"p", "ci", "ob", "bo", "t"};
    const int64_t size[5] = {np, cin, ob, b, g->T};
    const int64_t sc[5] = {cin * cop, cop, b, 1, 0}, sa[5] = {cin, 1, 0, 0, g->tv},
                  sb[5] = {cop, 0, b, 1, g->tm};
    for (int k = 0; k < 5; k++) {
        d[k] = vox_nest_dim_add(n, names[k], size[k]);
        n->strides[VOX_NEST_C][d[k]] = sc[k];
        n->strides[VOX_NEST_A][d[k]] = sa[k];
        n->strides[VOX_NEST_B][d[k]] = sb[k];
    }
    /* accumulators ct x ot, ot loads of W and one broadcast of V per tile */
    int64_t ot = ob < 2 ? ob : ob % 3 == 0 && regs == 32 ? 3 : 2;
    int64_t ct = (regs - ot - 1) / ot;
    ct = cdiv(cin, cdiv(cin, ct));
    const int64_t loops[][2] = {{d[0], 1}, {d[2], ot}, {d[1], ct}, {d[4], 1},
                                {d[1], 1}, {d[2], 1},  {d[3], 1}};
    for (size_t k = 0; k < sizeof loops / sizeof loops[0]; k++)
        vox_nest_loop_add(n, (int)loops[k][0], loops[k][1]);
    n->accumulate = true; /* D is summed over the blocks */
}

enum vox_status vox_nn_wino_bw_create(struct vox_ctx *ctx, const struct vox_nn_fast_conv *c,
                                      const int64_t padlo[3], struct vox_nn_wino_bw **bw_out)
{
    *bw_out = NULL;
    const int isa = (int)vox_ctx_cpu(ctx)->isa;
    const int64_t lanes = isa == VOX_ISA_AVX512 ? 16 : 8;
    if (!vox_nn_wino_ok(c) || c->b != lanes || c->bin != lanes || c->n != 1)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "winograd backward-weights: kernel %lldx%lldx%lld, blocks %lld/%lld, "
                        "batch %lld: expected a Winograd conv, blocks of %lld, one batch entry",
                        (long long)c->k[0], (long long)c->k[1], (long long)c->k[2],
                        (long long)c->bin, (long long)c->b, (long long)c->n, (long long)lanes);
    struct vox_nn_wino_bw *f = vox_calloc(ctx, 1, sizeof *f);
    if (!f)
        return VOX_OUT_OF_MEMORY;
    f->cv = *c;
    f->threads = vox_ctx_threads(ctx) > 0 ? vox_ctx_threads(ctx) : 1;
    f->tr = vox_nn_wino_tr_for(isa);
    vox_nn_wino_geometry(c, isa, BW_BLOCK_BYTES, &f->g, &f->tiles);
    struct vox_nn_wino_geom *g = &f->g;
    f->shared = g->P * g->cin * g->cop * (int64_t)sizeof(float) >= SHARED_D_BYTES;
    if (f->shared)
        vox_nn_wino_geometry(c, isa, 2 * BW_BLOCK_BYTES, &f->g, &f->tiles);
    for (int a = 0; a < 3; a++)
        g->lo[a] = padlo[a];
    f->blocks = cdiv(f->tiles, g->T);
    f->vfl = g->T * g->tv;
    f->wfl = g->T * g->tm + 2 * g->P * g->b;
    f->dfl = g->P * g->cin * g->cop;
    f->ptf = 2 * g->P * (g->cop > g->b ? g->cop : g->b);
    f->p1 = ((g->al[0] > 1) * g->al[1] + (g->al[1] > 1)) * g->al[2] + (g->al[2] > 1);
    int64_t slots = SUM_BYTES / (f->dfl * (int64_t)sizeof(float));
    slots = slots > MAX_SLOTS ? MAX_SLOTS : slots < 2 ? 2 : slots;
    f->slots = f->shared ? 1 : (int)(slots < f->blocks ? slots : f->blocks);
    struct vox_nest nest;
    const struct vox_kernel_options opt = {.threads = 1}; /* threads take slots or positions */
    enum vox_status s = VOX_OK;
    if (!f->shared) {
        products_nest(g, isa, g->P, &nest);
        s = vox_nest_compile(ctx, &nest, &opt, &f->gemm);
    } else {
        products_nest(g, isa, GROUP_POSITIONS, &nest);
        s = vox_nest_compile(ctx, &nest, &opt, &f->ggroup);
        if (s == VOX_OK && g->P % GROUP_POSITIONS) {
            products_nest(g, isa, g->P % GROUP_POSITIONS, &nest);
            s = vox_nest_compile(ctx, &nest, &opt, &f->grest);
        }
    }
    if (s != VOX_OK) {
        vox_nn_wino_bw_destroy(ctx, f);
        return s;
    }
    *bw_out = f;
    return VOX_OK;
}

void vox_nn_wino_bw_destroy(struct vox_ctx *ctx, struct vox_nn_wino_bw *f)
{
    if (!f)
        return;
    vox_kernel_destroy(f->gemm);
    vox_kernel_destroy(f->ggroup);
    vox_kernel_destroy(f->grest);
    vox_free(ctx, f);
}

void vox_nn_wino_bw_lent_floats(const struct vox_nn_wino_bw *f, int64_t *work_out,
                                int64_t *sums_out)
{
    *work_out = f->shared ? f->vfl + f->g.T * f->g.tm + f->threads * f->ptf
                          : f->threads * (f->vfl + f->wfl);
    *sums_out = f->slots * (f->dfl + 2 * f->g.cop); /* D, then the bias sums in double */
}

struct bw_job {
    const struct vox_nn_wino_bw *f;
    const struct vox_nn_bt *in, *gout;
    float *work, *sums;
    int64_t g0, count, parts; /* shared: the block's tiles, cut in `parts` for the transforms */
    const struct vox_tensor *planar; /* or the input planar, packed by each thread in bands */
    float *bands;                    /* band_floats per thread */
    int64_t band_rows, band_floats;  /* tile rows per band */
    int isa;
};

/* Tile rows per band of the input that a thread packs for its own blocks: about `bytes`
 * (the forward's bands' rule), and at least what one block spans. */
static int64_t band_rows(const struct vox_nn_wino_bw *f, const int64_t s[3], int64_t bytes)
{
    const struct vox_nn_wino_geom *g = &f->g;
    const int a = vox_nn_wino_row_axis(g);
    const int64_t span = cdiv(g->T, f->tiles / g->nt[a]) + 1;
    int64_t r = vox_nn_wino_geom_band_rows(g, s, bytes);
    r = r > span ? r : span;
    return r < g->nt[a] ? r : g->nt[a];
}

/* Input rows [lo, hi) along the row axis of tile rows [r0, r1] (clipped to the extent n). */
static void rows_of(const struct vox_nn_wino_geom *g, int64_t r0, int64_t r1, int64_t n,
                    int64_t *lo, int64_t *hi)
{
    const int a = vox_nn_wino_row_axis(g);
    *lo = r0 * g->m[a] - g->lo[a];
    *hi = r1 * g->m[a] - g->lo[a] + g->al[a];
    *lo = *lo < 0 ? 0 : *lo;
    *hi = *hi > n ? n : *hi;
    *hi = *hi < *lo ? *lo : *hi;
}

/* Floats of one thread's band: (R - 1) m + al rows of the row axis at most (R tile rows). */
static int64_t band_floats(const struct vox_nn_wino_bw *f, const int64_t s[3], int64_t bytes)
{
    const struct vox_nn_wino_geom *g = &f->g;
    const int a = vox_nn_wino_row_axis(g);
    const int64_t rows = (band_rows(f, s, bytes) - 1) * g->m[a] + g->al[a];
    int64_t n = cdiv(f->cv.cin, f->cv.bin) * f->cv.bin;
    for (int k = 0; k < 3; k++)
        n *= k != a ? s[k] : rows < s[k] ? rows : s[k];
    return n;
}

int64_t vox_nn_wino_bw_band_floats(const struct vox_nn_wino_bw *f, const int64_t s[3],
                                   int64_t bytes)
{
    return f->shared ? 0 : f->threads * band_floats(f, s, bytes);
}

/* Where blocks of tiles [g0, g0 + count) read the input: thread tid's band (its packed rows
 * [*lo, *hi) of the planar input, repacked when the block needs rows outside them) with g's
 * origin there, or the whole packed input. */
static const struct vox_nn_bt *block_input(const struct bw_job *j, int tid, int64_t g0,
                                           int64_t count, struct vox_nn_wino_geom *g,
                                           struct vox_nn_bt *band, int64_t *lo, int64_t *hi)
{
    if (!j->planar)
        return j->in;
    const struct vox_nn_wino_bw *f = j->f;
    const int a = vox_nn_wino_row_axis(g);
    const int64_t per = f->tiles / g->nt[a], n = j->planar->shape[2 + a];
    int64_t nlo, nhi;
    rows_of(g, g0 / per % g->nt[a], (g0 + count - 1) / per % g->nt[a], n, &nlo, &nhi);
    if (nlo < *lo || nhi > *hi) {
        const int64_t r0 = g0 / per % g->nt[a], r1 = r0 + j->band_rows - 1;
        rows_of(g, r0, r1 < g->nt[a] ? r1 : g->nt[a] - 1, n, lo, hi);
        struct vox_tensor src = *j->planar;
        src.data = (float *)src.data + *lo * src.strides[2 + a];
        src.shape[2 + a] = *hi - *lo;
        *band = (struct vox_nn_bt){.data = j->bands + (int64_t)tid * j->band_floats,
                                   .n = 1,
                                   .c = f->cv.cin,
                                   .blk = f->cv.bin};
        for (int k = 0; k < 3; k++)
            band->s[k] = src.shape[2 + k];
        if (*hi > *lo)
            vox_nn_bt_pack(NULL, j->isa, &src, band); /* inside a task: on this thread */
    }
    g->off[a] = *lo;
    return band;
}

/* Thread tid's own floats in work: its V, W and transform buffer (slots), or its transform
 * and finish buffer after the block's V and W (shared). */
static float *thread_area(const struct vox_nn_wino_bw *f, float *work, int tid)
{
    return f->shared ? work + f->vfl + f->g.T * f->g.tm + (int64_t)tid * f->ptf
                     : work + (int64_t)tid * (f->vfl + f->wfl);
}

/* Shared: tiles [lo, hi) of the block (a part per task) into V and W. */
static void shared_transform(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct bw_job *j = arg;
    const struct vox_nn_wino_bw *f = j->f;
    const struct vox_nn_wino_geom *g = &f->g;
    float *buf = thread_area(f, j->work, tid), *v = j->work, *w = v + f->vfl;
    (void)hi;
    int64_t t0 = lo[0] * j->count / j->parts, t1 = (lo[0] + 1) * j->count / j->parts;
    if (t1 > t0) {
        f->tr->input(g, j->in, j->g0 + t0, t1 - t0, v + t0 * g->tv, buf);
        f->tr->grad(g, j->gout, j->g0 + t0, t1 - t0, w + t0 * g->tm, buf);
    }
}

/* Shared: position groups [lo, hi): their products over the block's tiles. */
static void shared_products(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    const struct bw_job *j = arg;
    const struct vox_nn_wino_bw *f = j->f;
    const struct vox_nn_wino_geom *g = &f->g;
    const float *v = j->work, *w = v + f->vfl;
    for (int64_t k = lo[0]; k < hi[0]; k++) {
        const int64_t p = k * GROUP_POSITIONS;
        vox_kernel_run(p + GROUP_POSITIONS <= g->P ? f->ggroup : f->grest,
                       j->sums + p * g->cin * g->cop, v + p * g->cin, w + p * g->cop, NULL);
    }
}

static void shared_run(struct bw_job *j, struct vox_pool *pool)
{
    const struct vox_nn_wino_bw *f = j->f;
    const struct vox_nn_wino_geom *g = &f->g;
    float *v = j->work, *w = v + f->vfl;
    double *bs = (double *)(j->sums + f->dfl);
    const int64_t groups = (g->P + GROUP_POSITIONS - 1) / GROUP_POSITIONS;
    j->parts = 2 * (int64_t)f->threads;
    for (int64_t blk = 0; blk < f->blocks; blk++) {
        j->g0 = blk * g->T;
        j->count = f->tiles - j->g0 < g->T ? f->tiles - j->g0 : g->T;
        vox_pool_for(pool, (int64_t[]){j->parts, 1, 1}, (int64_t[]){1, 1, 1}, VOX_SCHED_DYNAMIC,
                     shared_transform, j);
        for (int64_t t = 0; t < j->count; t++) { /* the bias, in tile order */
            const float *sum = w + t * g->tm + f->p1 * g->cop;
            for (int64_t o = 0; o < g->cop; o++)
                bs[o] += sum[o];
        }
        if (j->count < g->T) {
            memset(v + j->count * g->tv, 0, (size_t)((g->T - j->count) * g->tv) * sizeof(float));
            memset(w + j->count * g->tm, 0, (size_t)((g->T - j->count) * g->tm) * sizeof(float));
        }
        vox_pool_for(pool, (int64_t[]){groups, 1, 1}, (int64_t[]){1, 1, 1}, VOX_SCHED_DYNAMIC,
                     shared_products, j);
    }
}

/* The first block of slot s (s = slots: the end). The slots' lengths fall linearly from the
 * first to the last (one block at least each): the threads take slots as they come free, and a
 * thread left waiting at the end waits for at most the other's last, short slot, where equal
 * slots kept it up to one eighth of the loop. RSUNet's two-thread step 0.3-5 % shorter (paired
 * steps, four runs of 5-6 pairs, two in each order), the one-thread step within its noise
 * (-3.5 to +2.5 %: the same blocks in the same order). A function of the shape only: the same
 * sums for any thread count. */
static int64_t slot_first(const struct vox_nn_wino_bw *f, int64_t s)
{
    const int64_t S = f->slots, extra = f->blocks - S; /* blocks beyond one a slot */
    return s + extra - extra * (S - s) * (S - s) / (S * S);
}

/* Slots [lo, hi): their blocks in order, in thread tid's blocks. */
static void slot_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct bw_job *j = arg;
    const struct vox_nn_wino_bw *f = j->f;
    const struct vox_nn_wino_geom *g = &f->g;
    float *v = thread_area(f, j->work, tid), *w = v + f->vfl;
    float *buf = w + g->T * g->tm;
    struct vox_nn_wino_geom gb = *g; /* with the origin of the thread's band */
    struct vox_nn_bt band;
    int64_t blo = 0, bhi = -1;
    for (int64_t s = lo[0]; s < hi[0]; s++) {
        float *d = j->sums + s * f->dfl;
        double *bs = (double *)(j->sums + f->slots * f->dfl) + s * g->cop;
        for (int64_t blk = slot_first(f, s); blk < slot_first(f, s + 1); blk++) {
            int64_t g0 = blk * g->T, count = f->tiles - g0 < g->T ? f->tiles - g0 : g->T;
            f->tr->input(&gb, block_input(j, tid, g0, count, &gb, &band, &blo, &bhi), g0, count, v,
                         buf);
            f->tr->grad(g, j->gout, g0, count, w, buf);
            for (int64_t t = 0; t < count; t++) { /* the bias: the tiles' sums, in double */
                const float *sum = w + t * g->tm + f->p1 * g->cop;
                for (int64_t o = 0; o < g->cop; o++)
                    bs[o] += sum[o];
            }
            if (count < g->T) { /* tiles past the end: zeros in both (stale lanes may be NaN) */
                memset(v + count * g->tv, 0, (size_t)((g->T - count) * g->tv) * sizeof(float));
                memset(w + count * g->tm, 0, (size_t)((g->T - count) * g->tm) * sizeof(float));
            }
            vox_kernel_run(f->gemm, d, v, w, NULL);
        }
    }
}

static void run_job(struct bw_job *j, struct vox_pool *pool)
{
    if (pool && vox_pool_threads(pool) > j->f->threads)
        pool = NULL; /* a pool wider than the per-thread blocks: run on the caller's thread */
    if (j->f->shared) {
        shared_run(j, pool);
        return;
    }
    vox_pool_for(pool, (int64_t[]){j->f->slots, 1, 1}, (int64_t[]){1, 1, 1}, VOX_SCHED_DYNAMIC,
                 slot_task, j);
}

void vox_nn_wino_bw_run(const struct vox_nn_wino_bw *f, struct vox_pool *pool,
                        const struct vox_nn_bt *in, const struct vox_nn_bt *gout, float *work,
                        float *sums, bool first)
{
    if (first)
        memset(sums, 0, (size_t)(f->slots * (f->dfl + 2 * f->g.cop)) * sizeof *sums);
    struct bw_job j = {.f = f, .in = in, .gout = gout, .work = work, .sums = sums};
    run_job(&j, pool);
}

void vox_nn_wino_bw_run_bands(const struct vox_nn_wino_bw *f, struct vox_pool *pool, int isa,
                              const struct vox_tensor *in, float *bands, int64_t bytes,
                              const struct vox_nn_bt *gout, float *work, float *sums, bool first)
{
    if (first)
        memset(sums, 0, (size_t)(f->slots * (f->dfl + 2 * f->g.cop)) * sizeof *sums);
    struct bw_job j = {
        .f = f, .gout = gout, .work = work, .sums = sums, .planar = in, .bands = bands, .isa = isa};
    j.band_rows = band_rows(f, in->shape + 2, bytes);
    j.band_floats = band_floats(f, in->shape + 2, bytes);
    run_job(&j, pool);
}

struct finish_job {
    const struct vox_nn_wino_bw *f;
    const float *sums;
    float *work, *gw;
    double gt[3][18]; /* G^T per axis (3 x al, or 1 x 1), row-major */
};

/* Input channels [lo, hi): the slots' rows of each, added in slot order (fixed sums), through
 * G^T axis by axis into its taps, added into gw; in thread tid's work rows. */
static void finish_channels(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct finish_job *j = arg;
    const struct vox_nn_wino_bw *f = j->f;
    const struct vox_nn_wino_geom *g = &f->g;
    const struct vox_nn_fast_conv *c = &f->cv;
    const int64_t *k = c->k, *al = g->al, taps = k[0] * k[1] * k[2], cop = g->cop, P = g->P;
    float *t0 = thread_area(f, j->work, tid), *t1 = t0 + P * cop;
    for (int64_t i = lo[0]; i < hi[0]; i++) {
        for (int64_t p = 0; p < P; p++) {
            float *d = t0 + p * cop;
            const float *src = j->sums + (p * c->cin + i) * cop;
            memcpy(d, src, (size_t)cop * sizeof *d);
            for (int s = 1; s < f->slots; s++)
                for (int64_t o = 0; o < cop; o++)
                    d[o] += src[s * f->dfl + o];
        }
        vox_nn_wino_axis(j->gt[2], k[2], al[2], al[0] * al[1], 1, cop, t0, t1); /* al0 al1 k2 */
        vox_nn_wino_axis(j->gt[1], k[1], al[1], al[0], k[2], cop, t1, t0);      /* al0 k1 k2 */
        vox_nn_wino_axis(j->gt[0], k[0], al[0], 1, k[1] * k[2], cop, t0, t1);   /* k0 k1 k2 */
        for (int64_t o = 0; o < c->cout; o++)
            for (int64_t t = 0; t < taps; t++)
                j->gw[(o * c->cin + i) * taps + t] += t1[t * cop + o];
    }
}

void vox_nn_wino_bw_finish(const struct vox_nn_wino_bw *f, struct vox_pool *pool, const float *sums,
                           float *work, float *gw, float *gb)
{
    const double *bs = (const double *)(sums + f->slots * f->dfl);
    for (int64_t o = 0; gb && o < f->cv.cout; o++) {
        double sum = 0;
        for (int s = 0; s < f->slots; s++) /* in slot order */
            sum += bs[s * f->g.cop + o];
        gb[o] = (float)(gb[o] + sum);
    }
    const int64_t *k = f->cv.k, *al = f->g.al;
    struct finish_job j = {.f = f, .sums = sums, .work = work, .gw = gw};
    for (int a = 0; a < 3; a++)
        for (int64_t q = 0; q < k[a]; q++)
            for (int64_t r = 0; r < al[a]; r++)
                j.gt[a][q * al[a] + r] = al[a] == 6   ? vox_nn_wino_g6[r][q]
                                         : al[a] == 4 ? vox_nn_wino_g4[r][q]
                                                      : 1.0;
    if (pool && vox_pool_threads(pool) > f->threads)
        pool = NULL;
    vox_pool_for(pool, (int64_t[]){f->cv.cin, 1, 1}, (int64_t[]){1, 1, 1}, VOX_SCHED_AFFINE,
                 finish_channels, &j);
}
