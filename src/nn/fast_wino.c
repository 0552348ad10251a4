/*
 * fast_wino.c: Winograd convolution for the fast forward pass: 3x3x3 kernels as
 * F(2x4x4, 3x3x3) (F(2,3) along z, F(4,3) along y and x), 1x3x3 as F(4x4, 3x3) with the
 * 1-axis untouched, 3x1x3 and 3x3x1 by F(2,3) on their two 3-axes.
 *
 * Key idea (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016; the
 * stages fused over cache-resident blocks as in Jia, Zlateski, Durand and Li, "Optimizing
 * N-dimensional, Winograd-based convolution for manycore CPUs", PPoPP 2018, the "L3 fusion"
 * row of DESIGN.md): per tile of m outputs along an axis of kernel extent 3 (m = 2 or 4), the
 * correlation with a 3-tap kernel is
 *     y = A^T [(G g) . (B^T d)]
 * on an input tile d of m + 2, so a 2x4x4 output tile costs P = 4 * 6 * 6 = 144 multiplies per
 * (ci, co) instead of 32 * 27 = 864 (6x fewer; 1x3x3: 36 per 16 instead of 144, 4x). Summed
 * over input channels this is P independent matrix products
 *     M[t][p][co] = sum_ci V[t][p][ci] * U[p][ci][co]
 * with V = B^T d B the transformed input tiles and U = G g G^T the transformed weights (once,
 * at create; training's convs set new weights at every call, in f32 axis by axis, into
 * buffers the caller lends: vox_nn_wino_set_weights, vox_nn_wino_bind). Run: threads take blocks of
 * T consecutive tiles (numbered over batch entry, y, groups of 4 along x, z, x: wino_decode);
 * per block (a) the input transform writes V (fast_wino_tr.h, vectors across the channel lanes of
 * the blocked layout, zeros read outside the input: same padding and tail tiles need no padded
 * copy), (b) one JIT loop nest computes the P products (dims p, t, ob, bo, ci; vectors along the
 * output lanes bo, a register tile of tiles x output blocks), (c) the output transform A^T M A +
 * bias, activation, stores the valid outputs. T keeps V and M within three quarters of the L2
 * (vox_nn_wino_block_bytes; larger blocks re-read U less often: on Zen 5's 1 MiB L2, 768 KiB
 * measured 8 % faster than 384 KiB for 24 channels), so nothing large leaves the caches. Every
 * output is written by one block with a fixed order of sums: bitwise identical for any thread
 * count.
 *
 * Accuracy: F(2,3)'s transforms only add (G's 1/2 is exact): ~3e-7 relative to the outputs'
 * scale. F(4,3)'s entries go up to 8 (A^T) and down to 1/24 (G): ~2e-6 measured along y and x
 * (tests/test_nn_wino.c). z stays F(2,3): it is EM's short axis (20 planes in RSUNet's patch,
 * where a tile of 6 would waste more at the faces), and F(4,3) on all three axes would round
 * about three times more again.
 */
#include "fast_wino.h"

#include <string.h>

/* V and M of one block at most: three quarters of the L2 (vox_nn_wino_block_bytes), at most
 * BLOCK_BYTES and at least MIN_BLOCK_BYTES; at least SPLIT blocks where the layer has the tiles (so
 * the threads share small layers; a constant, not the thread count: the blocks are the same for any
 * thread count, and an output's sums never depend on its block anyway). */
enum { BLOCK_BYTES = 768 << 10, MIN_BLOCK_BYTES = 192 << 10, SPLIT = 8 };

/* Zen 5's 1 MiB L2 gives BLOCK_BYTES, the best measured there. On Zen 3's 512 KiB L2, blocks
 * of 768 KiB spill V and M to the L3, which two threads then share: RSUNet's 2-thread forward
 * 4.8 % faster with 384 KiB (paired steps, 10 pairs), its 1-thread forward 2 % slower (6). */
int64_t vox_nn_wino_block_bytes(int64_t l2_bytes)
{
    const int64_t b = l2_bytes / 4 * 3;
    return b > BLOCK_BYTES ? BLOCK_BYTES : b < MIN_BLOCK_BYTES ? MIN_BLOCK_BYTES : b;
}

struct vox_nn_wino {
    struct vox_nn_wino_geom g;
    struct vox_nn_fast_conv cv;
    int threads;
    int64_t tiles, vfl, mfl; /* all tiles; floats per thread of V and M (64-byte multiples) */
    struct vox_kernel *gemm;
    const struct vox_nn_wino_tr *tr;
    float *u, *bias, *scratch;
    float *wt; /* vox_nn_wino_set_weights's work rows (2 * P * cop floats a thread), or NULL */
    bool lent; /* u, scratch and wt are the caller's (vox_nn_wino_bind) */
};

static int64_t cdiv(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

static int64_t round16(int64_t n)
{
    return cdiv(n, 16) * 16;
}

bool vox_nn_wino_ok(const struct vox_nn_fast_conv *c)
{
    if (c->b == 1 || (c->bin == 1 && c->cin > 1))
        return false; /* planar tensors (fast.c, plan_blocks): its gathers would be 3x slower */
    int threes = 0;
    for (int a = 0; a < 3; a++) {
        if (c->dil[a] != 1 || (c->k[a] != 1 && c->k[a] != 3))
            return false;
        threes += c->k[a] == 3;
    }
    return threes >= 2;
}

/* The register tile of the products: ot output blocks x tt tiles, from the register count;
 * ot divides ob where it can (64 channels: 2 + 2 blocks, not 3 + 1). */
static void tile_of(int isa, int64_t ob, int64_t *ot, int64_t *tt)
{
    const int64_t regs = isa == VOX_ISA_AVX512 ? 32 : 16, cap = isa == VOX_ISA_AVX512 ? 3 : 2;
    *ot = ob < cap ? ob : ob % cap == 0 ? cap : ob % 2 == 0 ? 2 : cap;
    *tt = (regs - *ot - 1) / *ot;
    *tt = *tt > 16 ? 16 : *tt;
}

void vox_nn_wino_geometry(const struct vox_nn_fast_conv *c, int isa, int64_t block_bytes,
                          struct vox_nn_wino_geom *g, int64_t *tiles)
{
    memset(g, 0, sizeof *g);
    g->P = 1;
    *tiles = c->n;
    const bool wide = c->k[1] == 3 && c->k[2] == 3; /* y and x by F(4,3) */
    for (int a = 0; a < 3; a++) {
        g->m[a] = c->k[a] != 3 ? 1 : a > 0 && wide ? 4 : 2;
        g->al[a] = g->m[a] + c->k[a] - 1;
        g->nt[a] = cdiv(c->out[a], g->m[a]);
        g->P *= g->al[a];
        *tiles *= g->nt[a];
    }
    g->cin = c->cin;
    g->b = c->b;
    g->cop = cdiv(c->cout, c->b) * c->b;
    g->act = c->act;
    g->tv = round16(g->P * g->cin) + 16;
    g->tm = round16(g->P * g->cop) + 16;
    int64_t ot, tt;
    tile_of(isa, g->cop / g->b, &ot, &tt);
    int64_t t = block_bytes / ((g->tv + g->tm) * (int64_t)sizeof(float));
    int64_t share = cdiv(*tiles, SPLIT);
    t = t < share ? t : share;
    g->T = t > tt ? t / tt * tt : tt;
}

double vox_nn_wino_flops(const struct vox_nn_fast_conv *c, double *transforms_out)
{
    struct vox_nn_wino_geom g;
    int64_t tiles;
    vox_nn_wino_geometry(c, c->b == 16 ? VOX_ISA_AVX512 : VOX_ISA_AVX2, BLOCK_BYTES, &g, &tiles);
    /* per tile: the input's gathered tile, V written and read, M written and read, outputs */
    int64_t ob = g.cop, ib = cdiv(c->cin, c->bin) * c->bin, out = g.m[0] * g.m[1] * g.m[2];
    *transforms_out = (double)(g.P * (ib + 2 * g.cin + 2 * ob) + out * ob) * (double)tiles;
    return 2.0 * (double)(g.P * g.cin * g.cop) * (double)tiles;
}

static void sizes(const struct vox_nn_wino_geom *g, int64_t *vfl, int64_t *mfl)
{
    *vfl = g->T * g->tv;
    *mfl = g->T * g->tm + 2 * g->P * g->b; /* + the transforms' buffer */
}

/* With the largest blocks: an upper bound for any L2. */
size_t vox_nn_wino_bytes(const struct vox_nn_fast_conv *c, int threads)
{
    struct vox_nn_wino_geom g;
    int64_t tiles, vfl, mfl;
    vox_nn_wino_geometry(c, c->b == 16 ? VOX_ISA_AVX512 : VOX_ISA_AVX2, BLOCK_BYTES, &g, &tiles);
    sizes(&g, &vfl, &mfl);
    return (size_t)(g.P * g.cin * g.cop + g.cop + threads * (vfl + mfl)) * sizeof(float);
}

void vox_nn_wino_destroy(struct vox_ctx *ctx, struct vox_nn_wino *f)
{
    if (!f)
        return;
    vox_kernel_destroy(f->gemm);
    if (!f->lent) {
        vox_free(ctx, f->u);
        vox_free(ctx, f->scratch);
        vox_free(ctx, f->wt);
    }
    vox_free(ctx, f->bias);
    vox_free(ctx, f);
}

void vox_nn_wino_lent_floats(const struct vox_nn_wino *f, int64_t *u_out, int64_t *work_out)
{
    const struct vox_nn_wino_geom *g = &f->g;
    *u_out = g->P * g->cin * g->cop;
    *work_out = f->threads * (f->vfl + f->mfl + 2 * g->P * g->cop);
}

void vox_nn_wino_bind(struct vox_nn_wino *f, float *u, float *work)
{
    f->u = u;
    f->scratch = work;
    f->wt = work + f->threads * (f->vfl + f->mfl);
}

const double vox_nn_wino_g4[4][3] = {{1, 0, 0}, {.5, .5, .5}, {.5, -.5, .5}, {0, 0, 1}};
const double vox_nn_wino_g6[6][3] = {{1. / 4, 0, 0},
                                     {-1. / 6, -1. / 6, -1. / 6},
                                     {-1. / 6, 1. / 6, -1. / 6},
                                     {1. / 24, 1. / 12, 1. / 6},
                                     {1. / 24, -1. / 12, 1. / 6},
                                     {0, 0, 1}};
static const double G1[1][3] = {{1, 0, 0}};

/* U[p][ci][co] = (G g G^T)_p per axis (G of F(2,3), of F(4,3), or 1 for an extent of 1), in
 * double; co past cout is 0. */
static void transform_weights(struct vox_nn_wino *f, const float *w)
{
    const struct vox_nn_fast_conv *c = &f->cv;
    const struct vox_nn_wino_geom *g = &f->g;
    const double(*G[3])[3];
    for (int a = 0; a < 3; a++)
        G[a] = g->al[a] == 6 ? vox_nn_wino_g6 : g->al[a] == 4 ? vox_nn_wino_g4 : G1;
    const int64_t *k = c->k, taps = k[0] * k[1] * k[2];
    memset(f->u, 0, (size_t)(g->P * g->cin * g->cop) * sizeof(float));
    for (int64_t o = 0; o < c->cout; o++)
        for (int64_t i = 0; i < c->cin; i++) {
            const float *src = w + (o * c->cin + i) * taps;
            for (int64_t p = 0; p < g->P; p++) {
                int64_t pz = p / (g->al[1] * g->al[2]), py = p / g->al[2] % g->al[1],
                        px = p % g->al[2];
                double sum = 0;
                for (int64_t a = 0; a < k[0]; a++)
                    for (int64_t b = 0; b < k[1]; b++)
                        for (int64_t e = 0; e < k[2]; e++)
                            sum += G[0][pz][a] * G[1][py][b] * G[2][px][e] *
                                   src[(a * k[1] + b) * k[2] + e];
                f->u[(p * g->cin + i) * g->cop + o] = (float)sum;
            }
        }
}

void vox_nn_wino_axis(const double *M, int64_t rows, int64_t cols, int64_t n0, int64_t n1,
                      int64_t width, const float *src, float *dst)
{
    /* 8 floats at a time (width is a multiple of the channel block): GCC vectors, which the
     * baseline build splits into SSE halves; -O2 leaves the plain loop scalar */
    typedef float v8 __attribute__((vector_size(32)));
    for (int64_t a = 0; a < n0; a++)
        for (int64_t q = 0; q < rows; q++)
            for (int64_t b = 0; b < n1; b++) {
                float *d = dst + ((a * rows + q) * n1 + b) * width;
                for (int64_t o = 0; o < width; o += 8) {
                    v8 acc = {0};
                    for (int64_t j = 0; j < cols; j++) {
                        const float mq = (float)M[q * cols + j];
                        v8 x;
                        memcpy(&x, src + ((a * cols + j) * n1 + b) * width + o, sizeof x);
                        if (mq != 0)
                            acc += mq * x;
                    }
                    memcpy(d + o, &acc, sizeof acc);
                }
            }
}

struct setw_job {
    struct vox_nn_wino *f;
    const float *w;
    bool flip;
};

/* The transform of input channels [lo, hi) into U, in the worker's work rows: each channel's
 * own, so the bits do not depend on who runs it. */
static void setw_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct setw_job *j = arg;
    struct vox_nn_wino *f = j->f;
    const struct vox_nn_fast_conv *c = &f->cv;
    const struct vox_nn_wino_geom *g = &f->g;
    const int64_t *k = c->k, taps = k[0] * k[1] * k[2], cop = g->cop, *al = g->al;
    const float *w = j->w;
    const double(*G[3])[3];
    for (int a = 0; a < 3; a++)
        G[a] = al[a] == 6 ? vox_nn_wino_g6 : al[a] == 4 ? vox_nn_wino_g4 : G1;
    float *t0 = f->wt + (int64_t)tid * 2 * g->P * cop, *t1 = t0 + g->P * cop;
    for (int64_t i = lo[0]; i < hi[0]; i++) {
        /* t0[t][o] = g[o][i][t]: the taps of input channel i, output channels contiguous */
        memset(t0, 0, (size_t)(taps * cop) * sizeof *t0);
        for (int64_t o = 0; o < c->cout; o++)
            for (int64_t t = 0; t < taps; t++)
                t0[t * cop + o] = j->flip ? w[(i * c->cout + o) * taps + taps - 1 - t]
                                          : w[(o * c->cin + i) * taps + t];
        vox_nn_wino_axis(*G[2], al[2], k[2], k[0] * k[1], 1, cop, t0, t1);   /* x: k0 k1 al2 */
        vox_nn_wino_axis(*G[1], al[1], k[1], k[0], al[2], cop, t1, t0);      /* y: k0 al1 al2 */
        vox_nn_wino_axis(*G[0], al[0], k[0], 1, al[1] * al[2], cop, t0, t1); /* z: al0 al1 al2 */
        for (int64_t p = 0; p < g->P; p++)
            memcpy(f->u + (p * c->cin + i) * cop, t1 + p * cop, (size_t)cop * sizeof *t1);
    }
}

void vox_nn_wino_set_weights(struct vox_ctx *ctx, struct vox_nn_wino *f, const float *w,
                             const float *bias, bool flip, bool *ok_out)
{
    const struct vox_nn_fast_conv *c = &f->cv;
    const int64_t cop = f->g.cop;
    if (!f->wt && !f->lent)
        f->wt = vox_alloc(ctx, (size_t)(f->threads * 2 * f->g.P * cop) * sizeof(float));
    *ok_out = f->wt != NULL;
    if (!f->wt)
        return;
    struct setw_job j = {f, w, flip};
    struct vox_pool *pool = vox_ctx_pool(ctx);
    if (vox_pool_threads(pool) <= f->threads) /* a worker's rows for each thread */
        vox_pool_for(pool, (int64_t[3]){c->cin, 1, 1}, (int64_t[3]){1, 1, 1}, VOX_SCHED_AFFINE,
                     setw_task, &j);
    else
        setw_task(&j, (int64_t[3]){0, 0, 0}, (int64_t[3]){c->cin, 1, 1}, 0);
    memset(f->bias, 0, (size_t)cop * sizeof *f->bias);
    for (int64_t o = 0; o < c->cout && bias; o++)
        f->bias[o] = bias[o];
}

/* The P products of one block: C = M [t][p][ob][bo], A = V [t][p][ci], B = U [p][ci][ob][bo]. */
static void gemm_nest(const struct vox_nn_wino_geom *g, int isa, struct vox_nest *n)
{
    const int64_t b = g->b, ob = g->cop / b, T = g->T, cin = g->cin, cop = g->cop;
    vox_nest_init(n);
    int d[5];
    static const char *const names[5] = {"p", "t", "ob", "bo", "ci"};
    const int64_t size[5] = {g->P, T, ob, b, cin};
    const int64_t sc[5] = {cop, g->tm, b, 1, 0}, sa[5] = {cin, g->tv, 0, 0, 1},
                  sb[5] = {cin * cop, 0, b, 1, cop};
    for (int k = 0; k < 5; k++) {
        d[k] = vox_nest_dim_add(n, names[k], size[k]);
        n->strides[VOX_NEST_C][d[k]] = sc[k];
        n->strides[VOX_NEST_A][d[k]] = sa[k];
        n->strides[VOX_NEST_B][d[k]] = sb[k];
    }
    int64_t ot, tt;
    tile_of(isa, ob, &ot, &tt);
    const int64_t loops[][2] = {{d[0], 1}, {d[2], ot}, {d[1], tt}, {d[4], 1},
                                {d[2], 1}, {d[1], 1},  {d[3], 1}};
    for (size_t k = 0; k < sizeof loops / sizeof loops[0]; k++)
        vox_nest_loop_add(n, (int)loops[k][0], loops[k][1]);
}

enum vox_status vox_nn_wino_create(struct vox_ctx *ctx, const struct vox_nn_fast_conv *c,
                                   const int64_t padlo[3], const float *w, const float *bias,
                                   struct vox_nn_wino **wino_out)
{
    *wino_out = NULL;
    const int isa = (int)vox_ctx_cpu(ctx)->isa;
    const int64_t lanes = isa == VOX_ISA_AVX512 ? 16 : 8;
    if (!vox_nn_wino_ok(c) || c->b != lanes)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "winograd: kernel %lldx%lldx%lld dilation %lldx%lldx%lld block %lld: "
                        "expected extents 1 or 3 (two 3s at least), dilation 1, block %lld",
                        (long long)c->k[0], (long long)c->k[1], (long long)c->k[2],
                        (long long)c->dil[0], (long long)c->dil[1], (long long)c->dil[2],
                        (long long)c->b, (long long)lanes);
    struct vox_nn_wino *f = vox_calloc(ctx, 1, sizeof *f);
    if (!f)
        return VOX_OUT_OF_MEMORY;
    f->cv = *c;
    f->threads = vox_ctx_threads(ctx) > 0 ? vox_ctx_threads(ctx) : 1;
    f->tr = vox_nn_wino_tr_for(isa);
    vox_nn_wino_geometry(c, isa, vox_nn_wino_block_bytes(vox_ctx_cpu(ctx)->l2_bytes), &f->g,
                         &f->tiles);
    for (int a = 0; a < 3; a++)
        f->g.lo[a] = padlo[a];
    sizes(&f->g, &f->vfl, &f->mfl);
    const struct vox_nn_wino_geom *g = &f->g;
    f->lent = w == NULL;
    if (!f->lent) {
        f->u = vox_alloc(ctx, (size_t)(g->P * g->cin * g->cop) * sizeof(float));
        f->scratch = vox_alloc(ctx, (size_t)(f->threads * (f->vfl + f->mfl)) * sizeof(float));
    }
    f->bias = vox_calloc(ctx, (size_t)g->cop, sizeof(float));
    enum vox_status s = VOX_OUT_OF_MEMORY;
    if (!f->bias || (!f->lent && (!f->u || !f->scratch)))
        goto fail;
    for (int64_t o = 0; o < c->cout && bias && c->bias; o++)
        f->bias[o] = bias[o];
    f->g.bias = f->bias;
    if (!f->lent)
        transform_weights(f, w);
    struct vox_nest nest;
    gemm_nest(g, isa, &nest);
    const struct vox_kernel_options opt = {.threads = 1}; /* threads split the blocks */
    if ((s = vox_nest_compile(ctx, &nest, &opt, &f->gemm)) != VOX_OK)
        goto fail;
    *wino_out = f;
    return VOX_OK;
fail:
    vox_nn_wino_destroy(ctx, f);
    return s;
}

struct wino_job {
    const struct vox_nn_wino *f;
    const struct vox_nn_wino_geom *g; /* f's, or a band's copy (its input's origin in off) */
    const struct vox_nn_bt *in, *res;
    struct vox_nn_bt *out;
    int64_t t0, t1; /* the tiles */
};

/* Blocks [lo, hi) of the job's tiles: transform in, multiply, transform out, in thread tid's
 * scratch. */
static void block_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct wino_job *j = arg;
    const struct vox_nn_wino *f = j->f;
    const struct vox_nn_wino_geom *g = j->g;
    float *v = f->scratch + (int64_t)tid * (f->vfl + f->mfl), *m = v + f->vfl;
    float *buf = m + g->T * g->tm;
    for (int64_t blk = lo[0]; blk < hi[0]; blk++) {
        int64_t g0 = j->t0 + blk * g->T, count = j->t1 - g0 < g->T ? j->t1 - g0 : g->T;
        f->tr->input(g, j->in, g0, count, v, buf);
        if (count < g->T) /* tiles past the end: zeros */
            memset(v + count * g->tv, 0, (size_t)((g->T - count) * g->tv) * sizeof(float));
        vox_kernel_run(f->gemm, m, v, f->u, NULL);
        f->tr->output(g, m, g0, count, j->out, j->res, buf);
    }
}

static void run_job(const struct vox_nn_wino *f, struct vox_pool *pool, struct wino_job *j)
{
    if (pool && vox_pool_threads(pool) > f->threads)
        pool = NULL; /* a pool wider than the per-thread scratch: run on the caller's thread */
    /* affine: each thread's run of blocks is the band's rows it packed (vox_nn_bt_pack) */
    vox_pool_for(pool, (int64_t[]){cdiv(j->t1 - j->t0, j->g->T), 1, 1}, (int64_t[]){1, 1, 1},
                 VOX_SCHED_AFFINE, block_task, j);
}

void vox_nn_wino_run(struct vox_nn_wino *f, struct vox_pool *pool, const struct vox_nn_bt *in,
                     const struct vox_nn_bt *res, struct vox_nn_bt *out)
{
    struct wino_job j = {f, &f->g, in, res, out, 0, f->tiles};
    run_job(f, pool, &j);
}

int64_t vox_nn_wino_geom_band_rows(const struct vox_nn_wino_geom *g, const int64_t s[3],
                                   int64_t bytes)
{
    const int a = vox_nn_wino_row_axis(g);
    int64_t row = g->m[a] * g->cin * (int64_t)sizeof(float);
    for (int k = 0; k < 3; k++)
        row *= k == a ? 1 : s[k];
    const int64_t r = bytes / (row > 0 ? row : 1);
    return r < 1 ? 1 : r > g->nt[a] ? g->nt[a] : r;
}

int64_t vox_nn_wino_geom_bands(const struct vox_nn_wino_geom *g, const int64_t s[3], int64_t bytes,
                               int64_t n)
{
    const int64_t nt = g->nt[vox_nn_wino_row_axis(g)];
    return n * cdiv(nt, vox_nn_wino_geom_band_rows(g, s, bytes));
}

void vox_nn_wino_geom_band(const struct vox_nn_wino_geom *g, const int64_t s[3], int64_t bytes,
                           int64_t b, int64_t *t0, int64_t *t1, int64_t lo[3], int64_t hi[3])
{
    const int a = vox_nn_wino_row_axis(g);
    const int64_t R = vox_nn_wino_geom_band_rows(g, s, bytes), nb = cdiv(g->nt[a], R), e = b / nb,
                  i = b % nb * R;
    const int64_t rows = g->nt[a] - i < R ? g->nt[a] - i : R;
    const int64_t per = g->nt[0] * g->nt[1] * g->nt[2] / g->nt[a];
    *t0 = (e * g->nt[a] + i) * per;
    *t1 = *t0 + rows * per;
    for (int k = 0; k < 3; k++) {
        lo[k] = 0;
        hi[k] = s[k];
    }
    const int64_t q = i * g->m[a] - g->lo[a], qe = (i + rows - 1) * g->m[a] - g->lo[a] + g->al[a];
    lo[a] = q > 0 ? q : 0;
    hi[a] = qe < s[a] ? qe : s[a];
    if (hi[a] < lo[a])
        hi[a] = lo[a];
}

int64_t vox_nn_wino_bands(const struct vox_nn_wino *f, const int64_t s[3], int64_t bytes)
{
    return vox_nn_wino_geom_bands(&f->g, s, bytes, f->cv.n);
}

void vox_nn_wino_band(const struct vox_nn_wino *f, const int64_t s[3], int64_t bytes, int64_t b,
                      int64_t *t0, int64_t *t1, int64_t lo[3], int64_t hi[3])
{
    vox_nn_wino_geom_band(&f->g, s, bytes, b, t0, t1, lo, hi);
}

void vox_nn_wino_run_tiles(struct vox_nn_wino *f, struct vox_pool *pool, const struct vox_nn_bt *in,
                           const int64_t off[3], int64_t t0, int64_t t1,
                           const struct vox_nn_bt *res, struct vox_nn_bt *out)
{
    struct vox_nn_wino_geom g = f->g;
    memcpy(g.off, off, sizeof g.off);
    struct wino_job j = {f, &g, in, res, out, t0, t1};
    run_job(f, pool, &j);
}
