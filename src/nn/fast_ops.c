/*
 * fast_ops.c: the data passes of the fast forward pass in the blocked channel layout
 * (N, ceil(C/b), Z, Y, X, b): layout conversion, zero padding, max-pooling and max-filtering,
 * max-pooling fragments (mpf) and their interleave, nearest upsampling, crop, add, concat and
 * activations (softmax over channels).
 *
 * Key idea: with channels innermost every pass is a loop over (block, z, y, x) whose body is a
 * short loop over the b lanes of one vector, which the compiler vectorises. The batch entries
 * (N > 1: mpf fragments) are just more blocks to the passes that map block to block. Work is split
 * over (output block, output plane) rows with the pool's affine schedule (each thread's share
 * first, then the other's last rows where it is done early); each element is computed by one
 * thread in a fixed order, so results do not depend on the thread count. Activations use the f32
 * libm functions (expm1f, expf, tanhf).
 */
#include "fast.h"

#include <float.h>
#include <string.h>

static inline float *at(const struct vox_nn_bt *t, int64_t cb, int64_t z, int64_t y, int64_t x)
{
    return t->data + (((cb * t->s[0] + z) * t->s[1] + y) * t->s[2] + x) * t->blk;
}

struct job;
typedef void (*row_fn)(const struct job *j, int64_t cb, int64_t z);

struct job {
    row_fn row;
    const struct vox_nn_bt *in[VOX_NN_MAX_IN];
    int n;
    struct vox_nn_bt *out;
    const struct vox_tensor *ts; /* pack: the source; unpack: the destination */
    struct vox_tensor *td;
    int64_t v[3], w[3];
    bool flag;
    enum vox_nn_act act;
    const struct vox_nn_pack_fns *pk; /* pack, unpack: the row transposes */
};

static void task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    const struct job *j = arg;
    for (int64_t cb = lo[0]; cb < hi[0]; cb++)
        for (int64_t z = lo[1]; z < hi[1]; z++)
            j->row(j, cb, z);
}

/* The blocks of every batch entry of t, in memory order. */
static int64_t all_blocks(const struct vox_nn_bt *t)
{
    return t->n * vox_nn_bt_blocks(t);
}

/* Runs j->row over (blocks, planes) of the output (or over `rows` given explicitly). */
static void run(struct vox_pool *pool, struct job *j, int64_t blocks, int64_t planes)
{
    const int64_t n[3] = {blocks, planes, 1}, tile[3] = {1, 1, 1};
    vox_pool_for(pool, n, tile, VOX_SCHED_AFFINE, task, j);
}

const struct vox_nn_pack_fns *vox_nn_pack_fns_for(int isa)
{
    return isa == VOX_ISA_AVX512 ? &vox_nn_pack_avx512
           : isa == VOX_ISA_AVX2 ? &vox_nn_pack_avx2
                                 : &vox_nn_pack_ref;
}

/* Per row (y): where the block is the transposes' width and x is contiguous, the row
 * transposes; else channel by channel, unit-stride reads along x, writes b floats apart within
 * one row of the blocked tensor (X * b floats, in L1). */
static void pack_rows(const struct job *j, int64_t cb, int64_t z, int64_t y0, int64_t y1)
{
    const struct vox_tensor *s = j->ts;
    const float *src = s->data;
    const struct vox_nn_bt *o = j->out;
    const int64_t b = o->blk, nx = o->s[2], sx = s->strides[4];
    const bool fast = (j->pk->lanes == b || b == 1) && sx == 1; /* planar: row copies */
    for (int64_t y = y0; y < y1; y++) {
        float *d = at(o, cb, z, y, 0);
        const float *rows[16];
        for (int64_t l = 0; l < b; l++) {
            int64_t c = cb * b + l;
            const float *p =
                c < o->c ? src + c * s->strides[1] + z * s->strides[2] + y * s->strides[3] : NULL;
            if (fast) {
                rows[l] = p;
                continue;
            }
            for (int64_t x = 0; x < nx; x++)
                d[x * b + l] = p ? p[x * sx] : 0.0f;
        }
        if (fast && b == 1 && rows[0])
            memcpy(d, rows[0], (size_t)nx * sizeof *d);
        else if (fast && b == 1)
            memset(d, 0, (size_t)nx * sizeof *d);
        else if (fast)
            (j->flag ? j->pk->pack_stream : j->pk->pack)(rows, d, nx);
    }
}

static void pack_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    const struct job *j = arg;
    for (int64_t cb = lo[1]; cb < hi[1]; cb++)
        for (int64_t z = lo[2]; z < hi[2]; z++)
            pack_rows(j, cb, z, lo[0], hi[0]);
#if defined(__x86_64__) || defined(__i386__)
    if (j->flag) /* the non-temporal stores reach memory before the job ends */
        __builtin_ia32_sfence();
#endif
}

/* Over bands of rows (y), each for every block and plane, in the affine schedule (at least 4
 * bands a thread): a thread packs the rows of a Winograd band whose tiles it then runs (the
 * same schedule over tiles with y outermost), so on a host whose two cores do not share a
 * cache the tiles do not read the other core's writes. Rows of planes of blocks, split by
 * block first, took RSUNet's two-thread step 4-5 % longer there (1.63 against 1.55 s). */
static void bt_pack(struct vox_pool *pool, int isa, const struct vox_tensor *src,
                    struct vox_nn_bt *dst, bool stream)
{
    struct job j = {.ts = src, .out = dst, .pk = vox_nn_pack_fns_for(isa), .flag = stream};
    const int64_t ny = dst->s[1], per = ny / (4 * vox_pool_threads(pool));
    const int64_t n[3] = {ny, all_blocks(dst), dst->s[0]}, tile[3] = {per > 1 ? per : 1, 0, 0};
    vox_pool_for(pool, n, tile, VOX_SCHED_AFFINE, pack_task, &j);
}

void vox_nn_bt_pack(struct vox_pool *pool, int isa, const struct vox_tensor *src,
                    struct vox_nn_bt *dst)
{
    bt_pack(pool, isa, src, dst, false);
}

void vox_nn_bt_pack_stream(struct vox_pool *pool, int isa, const struct vox_tensor *src,
                           struct vox_nn_bt *dst)
{
    bt_pack(pool, isa, src, dst, true);
}

/* The transpose of pack_rows, applying j->act (pointwise) on the way. */
static void unpack_row(const struct job *j, int64_t cb, int64_t z)
{
    struct vox_tensor *d = j->td;
    float *dst = d->data;
    const struct vox_nn_bt *s = j->in[0];
    const int64_t b = s->blk, nx = s->s[2], sx = d->strides[4];
    const bool fast = (j->pk->lanes == b || b == 1) && sx == 1; /* planar: row copies */
    for (int64_t y = 0; y < s->s[1]; y++) {
        const float *p = at(s, cb, z, y, 0);
        float *rows[16];
        for (int64_t l = 0; l < b; l++) {
            int64_t c = cb * b + l;
            rows[l] =
                c < s->c ? dst + c * d->strides[1] + z * d->strides[2] + y * d->strides[3] : NULL;
        }
        if (fast && b == 1 && rows[0])
            memcpy(rows[0], p, (size_t)nx * sizeof *p);
        else if (fast && b > 1)
            j->pk->unpack(p, rows, nx);
        for (int64_t l = 0; l < b && rows[l]; l++) {
            float *q = rows[l];
            if (!fast && j->act == VOX_ACT_LINEAR)
                for (int64_t x = 0; x < nx; x++)
                    q[x * sx] = p[x * b + l];
            else if (!fast)
                for (int64_t x = 0; x < nx; x++)
                    q[x * sx] = vox_nn_act1f(j->act, p[x * b + l]);
            else if (j->act != VOX_ACT_LINEAR)
                j->pk->act(j->act, q, nx);
        }
    }
}

void vox_nn_bt_unpack_act(struct vox_pool *pool, int isa, const struct vox_nn_bt *src,
                          enum vox_nn_act act, struct vox_tensor *dst)
{
    struct job j = {
        .row = unpack_row, .in = {src}, .td = dst, .act = act, .pk = vox_nn_pack_fns_for(isa)};
    run(pool, &j, all_blocks(src), src->s[0]);
}

static void pad_row(const struct job *j, int64_t cb, int64_t z)
{
    const struct vox_nn_bt *s = j->in[0], *o = j->out;
    const int64_t *lo = j->v, b = o->blk;
    int64_t zs = z - lo[0];
    for (int64_t y = 0; y < o->s[1]; y++) {
        int64_t ys = y - lo[1];
        float *d = at(o, cb, z, y, 0);
        if (zs < 0 || zs >= s->s[0] || ys < 0 || ys >= s->s[1]) {
            memset(d, 0, (size_t)(o->s[2] * b) * sizeof *d);
            continue;
        }
        int64_t x0 = lo[2], x1 = lo[2] + s->s[2];
        memset(d, 0, (size_t)(x0 * b) * sizeof *d);
        memcpy(d + x0 * b, at(s, cb, zs, ys, 0), (size_t)(s->s[2] * b) * sizeof *d);
        memset(d + x1 * b, 0, (size_t)((o->s[2] - x1) * b) * sizeof *d);
    }
}

void vox_nn_bt_pad(struct vox_pool *pool, const struct vox_nn_bt *src, const int64_t lo[3],
                   struct vox_nn_bt *dst)
{
    struct job j = {.row = pad_row, .in = {src}, .out = dst, .v = {lo[0], lo[1], lo[2]}};
    run(pool, &j, all_blocks(dst), dst->s[0]);
}

/* Row (cb, z) of o: the max over the window w of s's block sb, taken at stride st, dilation
 * dl and offset off: o(z, y, x) = max over (a, c, e) < w of s(z st + a dl + off, ...). */
static void max_window_row(const struct vox_nn_bt *s, int64_t sb, const struct vox_nn_bt *o,
                           int64_t cb, int64_t z, const int64_t w[3], const int64_t st[3],
                           const int64_t dl[3], const int64_t off[3])
{
    const int64_t b = o->blk;
    float acc[64];
    for (int64_t y = 0; y < o->s[1]; y++)
        for (int64_t x = 0; x < o->s[2]; x++) {
            for (int64_t l = 0; l < b; l++)
                acc[l] = -FLT_MAX;
            for (int64_t a = 0; a < w[0]; a++)
                for (int64_t c = 0; c < w[1]; c++)
                    for (int64_t e = 0; e < w[2]; e++) {
                        const float *p =
                            at(s, sb, z * st[0] + a * dl[0] + off[0],
                               y * st[1] + c * dl[1] + off[1], x * st[2] + e * dl[2] + off[2]);
                        for (int64_t l = 0; l < b; l++)
                            acc[l] = p[l] > acc[l] ? p[l] : acc[l];
                    }
            memcpy(at(o, cb, z, y, x), acc, (size_t)b * sizeof *acc);
        }
}

/* Max-filtering (stride 1) of row (cb, z): window rows whole, into the output row, so the
 * loop runs along x * b floats for any block (planar tensors have b = 1). */
static void max_filter_row(const struct vox_nn_bt *s, const struct vox_nn_bt *o, int64_t cb,
                           int64_t z, const int64_t w[3], const int64_t dl[3])
{
    const int64_t b = o->blk, len = o->s[2] * b;
    for (int64_t y = 0; y < o->s[1]; y++) {
        float *d = at(o, cb, z, y, 0);
        for (int64_t i = 0; i < len; i++)
            d[i] = -FLT_MAX;
        for (int64_t a = 0; a < w[0]; a++)
            for (int64_t c = 0; c < w[1]; c++)
                for (int64_t e = 0; e < w[2]; e++) {
                    const float *p = at(s, cb, z + a * dl[0], y + c * dl[1], e * dl[2]);
                    for (int64_t i = 0; i < len; i++)
                        d[i] = p[i] > d[i] ? p[i] : d[i];
                }
    }
}

static void max_row(const struct job *j, int64_t cb, int64_t z)
{
    if (!j->flag)
        return max_filter_row(j->in[0], j->out, cb, z, j->w, j->v);
    int64_t st[3], dl[3];
    for (int a = 0; a < 3; a++) {
        st[a] = j->flag ? j->w[a] : 1;
        dl[a] = j->flag ? 1 : j->v[a];
    }
    max_window_row(j->in[0], cb, j->out, cb, z, j->w, st, dl, (const int64_t[3]){0, 0, 0});
}

void vox_nn_bt_max(struct vox_pool *pool, const struct vox_nn_bt *in, const int64_t window[3],
                   const int64_t dilation[3], bool pool_stride, struct vox_nn_bt *out)
{
    struct job j = {.row = max_row, .in = {in}, .out = out, .flag = pool_stride};
    for (int a = 0; a < 3; a++) {
        j.w[a] = window[a];
        j.v[a] = dilation ? dilation[a] : 1;
    }
    run(pool, &j, all_blocks(out), out->s[0]);
}

/* cb: a block of the output; entry e * F + f of out pools entry e of in at offset f */
static void mpf_row(const struct job *j, int64_t cb, int64_t z)
{
    const int64_t *w = j->w, nb = vox_nn_bt_blocks(j->out);
    const int64_t frags = w[0] * w[1] * w[2], e = cb / nb, f = e % frags;
    const int64_t sb = (e / frags) * nb + cb % nb;
    const int64_t off[3] = {f / (w[1] * w[2]), f / w[2] % w[1], f % w[2]};
    max_window_row(j->in[0], sb, j->out, cb, z, w, w, (const int64_t[3]){1, 1, 1}, off);
}

void vox_nn_bt_mpf(struct vox_pool *pool, const struct vox_nn_bt *in, const int64_t window[3],
                   struct vox_nn_bt *out)
{
    struct job j = {.row = mpf_row, .in = {in}, .out = out, .w = {window[0], window[1], window[2]}};
    run(pool, &j, all_blocks(out), out->s[0]);
}

/* Splits a dense index per axis into the mpf levels' offsets (level 0 first): d[a] becomes
 * the fragment's voxel, and the batch entry is returned. */
static int64_t fragment_of(int levels, const int64_t (*win)[3], int64_t d[3])
{
    int64_t e = 0;
    for (int k = 0; k < levels; k++) {
        int64_t f = 0;
        for (int a = 0; a < 3; a++) {
            f = f * win[k][a] + d[a] % win[k][a];
            d[a] /= win[k][a];
        }
        e = e * win[k][0] * win[k][1] * win[k][2] + f;
    }
    return e;
}

struct interleave_job {
    const struct vox_nn_bt *in, *out;
    int levels;
    const int64_t (*win)[3];
};

static void interleave_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    const struct interleave_job *j = arg;
    const struct vox_nn_bt *s = j->in, *o = j->out;
    const int64_t nb = vox_nn_bt_blocks(s);
    for (int64_t cb = lo[0]; cb < hi[0]; cb++)
        for (int64_t z = lo[1]; z < hi[1]; z++)
            for (int64_t y = 0; y < o->s[1]; y++)
                for (int64_t x = 0; x < o->s[2]; x++) {
                    int64_t d[3] = {z, y, x}, e = fragment_of(j->levels, j->win, d);
                    memcpy(at(o, cb, z, y, x), at(s, e * nb + cb, d[0], d[1], d[2]),
                           (size_t)o->blk * sizeof(float));
                }
}

void vox_nn_bt_interleave(struct vox_pool *pool, const struct vox_nn_bt *in, int levels,
                          const int64_t (*win)[3], struct vox_nn_bt *out)
{
    struct interleave_job j = {.in = in, .out = out, .levels = levels, .win = win};
    const int64_t n[3] = {vox_nn_bt_blocks(out), out->s[0], 1}, tile[3] = {1, 1, 1};
    vox_pool_for(pool, n, tile, VOX_SCHED_AFFINE, interleave_task, &j);
}

/* upsample (flag) or crop: out[z, y, x] = in[z / f + lo] */
static void move_row(const struct job *j, int64_t cb, int64_t z)
{
    const struct vox_nn_bt *s = j->in[0], *o = j->out;
    const int64_t *f = j->w, *lo = j->v, b = o->blk;
    for (int64_t y = 0; y < o->s[1]; y++) {
        if (!j->flag) {
            memcpy(at(o, cb, z, y, 0), at(s, cb, z + lo[0], y + lo[1], lo[2]),
                   (size_t)(o->s[2] * b) * sizeof(float));
            continue;
        }
        for (int64_t x = 0; x < o->s[2]; x++)
            memcpy(at(o, cb, z, y, x), at(s, cb, z / f[0], y / f[1], x / f[2]),
                   (size_t)b * sizeof(float));
    }
}

void vox_nn_bt_upsample(struct vox_pool *pool, const struct vox_nn_bt *in, const int64_t f[3],
                        struct vox_nn_bt *out)
{
    struct job j = {.row = move_row, .in = {in}, .out = out, .flag = true, .w = {f[0], f[1], f[2]}};
    run(pool, &j, all_blocks(out), out->s[0]);
}

void vox_nn_bt_crop(struct vox_pool *pool, const struct vox_nn_bt *in, const int64_t lo[3],
                    struct vox_nn_bt *out)
{
    struct job j = {.row = move_row, .in = {in}, .out = out, .v = {lo[0], lo[1], lo[2]}};
    run(pool, &j, all_blocks(out), out->s[0]);
}

/* ELU four lanes at a time (GCC vectors; SSE at the library's baseline ISA): max(x, 0) +
 * expm1(min(x, 0)) with the JIT's expm1 (src/loop/codegen_tile.c, emit_expm1): u = n ln2 + r
 * by Cody-Waite, 2^n from the low bits of u / ln2 + 1.5 * 2^23 + 127, a degree-8 Taylor
 * polynomial for expm1(r), and expm1(u) = 2^n expm1(r) + (2^n - 1), exact at n = 0. The scalar
 * path called libm's expm1f per element: 7 % of an RSUNet forward pass. */
typedef float ops_v4 __attribute__((vector_size(16)));
typedef int32_t ops_m4 __attribute__((vector_size(16)));

static inline ops_v4 v4_sel(ops_m4 m, ops_v4 a, ops_v4 b)
{
    return (ops_v4)(((ops_m4)a & m) | ((ops_m4)b & ~m));
}

static inline ops_v4 v4_elu(ops_v4 x)
{
    const ops_v4 zero = {0, 0, 0, 0}, magic = zero + (12582912.0f + 127.0f);
    ops_v4 u = v4_sel(x < zero, x, zero);
    u = v4_sel(u > zero - 87.0f, u, zero - 87.0f);
    ops_v4 t = magic + u * 1.44269504f, n = t - magic;
    ops_v4 r = u - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    ops_v4 p2n = (ops_v4)((ops_m4)t << 23);
    static const float c[] = {1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f};
    ops_v4 q = zero + 1.0f / 40320;
    for (int i = 0; i < 6; i++)
        q = q * r + c[i];
    ops_v4 em1 = q * r * r + r;
    return v4_sel(x > zero, x, zero) + (p2n * em1 + (p2n - 1.0f));
}

/* d[e] = act(p[e]) for n elements (p may equal d). */
static void act_span(enum vox_nn_act act, const float *p, float *d, int64_t n)
{
    int64_t e = 0;
    if (act == VOX_ACT_ELU)
        for (; e + 4 <= n; e += 4) {
            ops_v4 v;
            memcpy(&v, p + e, sizeof v);
            v = v4_elu(v);
            memcpy(d + e, &v, sizeof v);
        }
    for (; e < n; e++)
        d[e] = vox_nn_act1f(act, p[e]);
}

/* One pass per piece of 256 floats: the inputs summed in order, then the activation (a pass
 * per input and one for the activation over the whole row were 12 % of an RSUNet forward). */
static void add_row(const struct job *j, int64_t cb, int64_t z)
{
    const struct vox_nn_bt *o = j->out;
    const int64_t len = o->s[1] * o->s[2] * o->blk;
    float *d = at(o, cb, z, 0, 0), sum[256];
    const float *p[VOX_NN_MAX_IN];
    for (int k = 0; k < j->n; k++)
        p[k] = at(j->in[k], cb, z, 0, 0);
    for (int64_t e0 = 0; e0 < len; e0 += 256) {
        const int64_t m = len - e0 < 256 ? len - e0 : 256;
        memcpy(sum, p[0] + e0, (size_t)m * sizeof *sum);
        for (int k = 1; k < j->n; k++)
            for (int64_t e = 0; e < m; e++)
                sum[e] += p[k][e0 + e];
        if (j->act == VOX_ACT_LINEAR)
            memcpy(d + e0, sum, (size_t)m * sizeof *sum);
        else
            act_span(j->act, sum, d + e0, m);
    }
}

void vox_nn_bt_add(struct vox_pool *pool, const struct vox_nn_bt *const *in, int n,
                   enum vox_nn_act act, struct vox_nn_bt *out)
{
    struct job j = {.row = add_row, .n = n, .out = out, .act = act};
    for (int k = 0; k < n; k++)
        j.in[k] = in[k];
    run(pool, &j, all_blocks(out), out->s[0]);
}

/* cb: a block of the whole output; its entry e, and channels of entry e of the inputs */
static void concat_row(const struct job *j, int64_t cb, int64_t z)
{
    const struct vox_nn_bt *o = j->out;
    const int64_t e = cb / vox_nn_bt_blocks(o);
    for (int64_t l = 0; l < o->blk; l++) {
        int64_t c = (cb % vox_nn_bt_blocks(o)) * o->blk + l, k = 0;
        while (k < j->n && c >= j->in[k]->c)
            c -= j->in[k++]->c;
        const struct vox_nn_bt *s = k < j->n ? j->in[k] : NULL;
        int64_t sb = s ? e * vox_nn_bt_blocks(s) + c / s->blk : 0;
        for (int64_t y = 0; y < o->s[1]; y++)
            for (int64_t x = 0; x < o->s[2]; x++)
                at(o, cb, z, y, x)[l] = s ? at(s, sb, z, y, x)[c % s->blk] : 0.0f;
    }
}

void vox_nn_bt_concat(struct vox_pool *pool, const struct vox_nn_bt *const *in, int n,
                      struct vox_nn_bt *out)
{
    struct job j = {.row = concat_row, .n = n, .out = out};
    for (int k = 0; k < n; k++)
        j.in[k] = in[k];
    run(pool, &j, all_blocks(out), out->s[0]);
}

/* softmax over the channels of every voxel of plane z of batch entry e (one row per plane) */
static void softmax_row(const struct job *j, int64_t e, int64_t z)
{
    const struct vox_nn_bt *s0 = j->in[0], *o0 = j->out;
    const struct vox_nn_bt si = vox_nn_bt_entry(s0, e), oi = vox_nn_bt_entry(o0, e);
    const struct vox_nn_bt *s = &si, *o = &oi;
    const int64_t b = o->blk, nb = vox_nn_bt_blocks(o);
    for (int64_t y = 0; y < o->s[1]; y++)
        for (int64_t x = 0; x < o->s[2]; x++) {
            double m = -DBL_MAX, sum = 0;
            for (int64_t c = 0; c < o->c; c++)
                m = fmax(m, at(s, c / b, z, y, x)[c % b]);
            for (int64_t c = 0; c < o->c; c++)
                sum += exp(at(s, c / b, z, y, x)[c % b] - m);
            for (int64_t c = 0; c < nb * b; c++)
                at(o, c / b, z, y, x)[c % b] =
                    c < o->c ? (float)(exp(at(s, c / b, z, y, x)[c % b] - m) / sum) : 0.0f;
        }
}

static void act_row(const struct job *j, int64_t cb, int64_t z)
{
    const struct vox_nn_bt *o = j->out;
    int64_t len = o->s[1] * o->s[2] * o->blk;
    act_span(j->act, at(j->in[0], cb, z, 0, 0), at(o, cb, z, 0, 0), len);
}

void vox_nn_bt_act(struct vox_pool *pool, const struct vox_nn_bt *in, enum vox_nn_act act,
                   struct vox_nn_bt *out)
{
    struct job j = {
        .row = act == VOX_ACT_SOFTMAX ? softmax_row : act_row, .in = {in}, .out = out, .act = act};
    run(pool, &j, act == VOX_ACT_SOFTMAX ? out->n : all_blocks(out), out->s[0]);
}
