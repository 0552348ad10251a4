/*
 * nn/fast_wino_tr.h: the body of the Winograd F(2,3) tile transforms, compiled once per ISA
 * (fast_wino_tr.c, fast_wino_tr_avx2.c, fast_wino_tr_avx512.c define WINO_L, the lanes of
 * the channel block, and WINO_TR, the table's name, then include this file).
 *
 * Every value is a vector of the WINO_L channel lanes of one position (GCC vector types, so
 * each ISA file gets its own vector width without intrinsics). Per axis of input tile 4:
 *     B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],   A^T = [1 1 1 0; 0 1 -1 -1]
 * applied along x, then y, then z (Lavin and Gray, "Fast Algorithms for Convolutional
 * Neural Networks", 2016); axes of tile 1 are left alone. The tile shapes 4x4x4, 1x4x4,
 * 4x1x4 and 4x4x1 each get their own straight-line copy (constant extents, always inlined).
 * Interior tiles load straight from the blocked tensor; tiles that cross its border (same
 * padding, tails) are first gathered with zeros, narrow inputs (fewer lanes than WINO_L) too.
 * V is [t][p][ci] and M [t][p][co]: a tile's values are contiguous, the stores and loads of
 * the transforms stream. The output may also be planar (blocks of 1: training's tensors):
 * each 4x4 output slice's position vectors are then transposed in registers into channel
 * rows (store_slice_planar).
 */
#include "fast_wino.h"

#include <string.h>

typedef float vf __attribute__((vector_size(4 * WINO_L)));
typedef int32_t vi __attribute__((vector_size(4 * WINO_L)));

#define INLINE static inline __attribute__((always_inline))

/* Unaligned vector loads and stores (no vector arguments or results: the baseline build of
 * 8 lanes has no 32-byte registers to pass them in). */
#define LD(v, p) memcpy(&(v), (p), sizeof(vf))
#define ST(p, v) memcpy((p), &(v), sizeof(vf))

#include "fast_vact.h"
#include "fast_vtr.h"

/* B^T of the 4 values x[0], x[s], x[2s], x[3s] into y[0], y[t], y[2t], y[3t] (may be x). */
INLINE void bt4(const vf *x, int s, vf *y, int t)
{
    vf d0 = x[0], d1 = x[s], d2 = x[2 * s], d3 = x[3 * s];
    y[0] = d0 - d2;
    y[t] = d1 + d2;
    y[2 * t] = d2 - d1;
    y[3 * t] = d1 - d3;
}

/* A^T of the 4 values x[0], x[s], x[2s], x[3s] into y[0], y[t]. */
INLINE void at4(const vf *x, int s, vf *y, int t)
{
    vf x0 = x[0], x1 = x[s], x2 = x[2 * s], x3 = x[3 * s];
    y[0] = x0 + x1 + x2;
    y[t] = x1 - x2 - x3;
}

/* B^T of F(4,3) (points 0, 1, -1, 2, -2, infinity) of x[0], x[s], ..., x[5s] into y[0], y[t],
 * ..., y[5t] (may be x): the rows [4 0 -5 0 1 0], [0 -4 -4 1 1 0], [0 4 -4 -1 1 0],
 * [0 -2 -1 2 1 0], [0 2 -1 -2 1 0], [0 4 0 -5 0 1], with the shared partial sums. */
INLINE void bt6(const vf *x, int s, vf *y, int t)
{
    vf d0 = x[0], d1 = x[s], d2 = x[2 * s], d3 = x[3 * s], d4 = x[4 * s], d5 = x[5 * s];
    vf t0 = d4 - 4.0f * d2, t1 = d3 - 4.0f * d1, t2 = d4 - d2, t3 = 2.0f * (d3 - d1);
    y[0] = 4.0f * d0 - 5.0f * d2 + d4;
    y[t] = t1 + t0;
    y[2 * t] = t0 - t1;
    y[3 * t] = t2 + t3;
    y[4 * t] = t2 - t3;
    y[5 * t] = 4.0f * d1 - 5.0f * d3 + d5;
}

/* A^T of F(4,3) of x[0], x[s], ..., x[5s] into y[0], y[t], y[2t], y[3t]: the rows
 * [1 1 1 1 1 0], [0 1 -1 2 -2 0], [0 1 1 4 4 0], [0 1 -1 8 -8 1]. */
INLINE void at6(const vf *x, int s, vf *y, int t)
{
    vf m0 = x[0], m1 = x[s], m2 = x[2 * s], m3 = x[3 * s], m4 = x[4 * s], m5 = x[5 * s];
    vf a = m1 + m2, b = m1 - m2, c = m3 + m4, d = m3 - m4;
    y[0] = m0 + a + c;
    y[t] = b + 2.0f * d;
    y[2 * t] = a + 4.0f * c;
    y[3 * t] = b + 8.0f * d + m5;
}

/* B^T along x then y of one 6 x 6 z-slice at src (rows sy floats apart) into d[y' * 6 + x']. */
INLINE void bt_slice6(const float *src, int64_t sy, vf *d)
{
#pragma GCC unroll 6
    for (int b = 0; b < 6; b++) {
        vf r[6];
#pragma GCC unroll 6
        for (int c = 0; c < 6; c++)
            LD(r[c], src + b * sy + c * WINO_L);
        bt6(r, 1, d + b * 6, 1);
    }
#pragma GCC unroll 6
    for (int c = 0; c < 6; c++)
        bt6(d + c, 6, d + c, 6);
}

/* B^T along x and y of one z-slice of a1 x a2 positions (each 4 or 1), read from src (row
 * stride sy floats, WINO_L floats per position), in registers, into d (vectors at stride 1),
 * or, where vd is not NULL, straight into V (vd, rows of vs floats). */
INLINE void bt_slice(const float *src, int64_t sy, vf *d, float *vd, int64_t vs, const int a1,
                     const int a2)
{
    vf r[16];
#pragma GCC unroll 16
    for (int b = 0; b < a1; b++)
#pragma GCC unroll 4
        for (int c = 0; c < a2; c++)
            LD(r[b * a2 + c], src + b * sy + c * WINO_L);
    if (a2 == 4)
#pragma GCC unroll 4
        for (int b = 0; b < a1; b++)
            bt4(r + b * 4, 1, r + b * 4, 1);
    if (a1 == 4)
#pragma GCC unroll 4
        for (int c = 0; c < a2; c++)
            bt4(r + c, a2, r + c, a2);
#pragma GCC unroll 16
    for (int k = 0; k < a1 * a2; k++) {
        if (vd)
            ST(vd + k * vs, r[k]);
        else
            d[k] = r[k];
    }
}

/* B^T along x of the 4 positions of the row at p. */
INLINE void row_x(const float *p, vf *x)
{
    vf d[4];
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++)
        LD(d[c], p + c * WINO_L);
    bt4(d, 1, x, 1);
}

/* Half h of a 4x4 z-slice at p after B^T along x and y: rows y' = 2h, 2h + 1 (8 vectors);
 * half 0 reads rows 0-2, half 1 rows 1-3. */
INLINE void slice_half(const float *p, int64_t sy, int h, vf *out)
{
    vf ra[4], rb[4], rc[4];
    row_x(p + h * sy, ra);
    row_x(p + (h + 1) * sy, rb);
    row_x(p + (h + 2) * sy, rc);
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        out[c] = h == 0 ? ra[c] - rc[c] : rb[c] - ra[c];
        out[4 + c] = h == 0 ? rb[c] + rc[c] : ra[c] - rc[c];
    }
}

/* The 4x4x4 transform with no intermediate stores (10-15 % faster than through a buffer):
 * per half of y', the z-slices' halves S0..S3 (8 vectors each, at most three live) give
 * z' = 0: S0 - S2, 1: S1 + S2, 2: S2 - S1, 3: S1 - S3, stored straight into V (position
 * p = (z' * 4 + y') * 4 + x', row stride cin). Input rows: 3 of 4 per half, so 6 of 4 loaded. */
INLINE void input_444(const float *src, int64_t sz, int64_t sy, float *dst, int64_t cin)
{
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        vf s2[8], sa[8], s1[8];
        float *o = dst + 8 * h * cin;
        slice_half(src + 2 * sz, sy, h, s2);
        slice_half(src, sy, h, sa);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            vf r = sa[j] - s2[j];
            ST(o + j * cin, r);
        }
        slice_half(src + sz, sy, h, s1);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            vf r1 = s1[j] + s2[j], r2 = s2[j] - s1[j];
            ST(o + (16 + j) * cin, r1);
            ST(o + (32 + j) * cin, r2);
        }
        slice_half(src + 3 * sz, sy, h, sa);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            vf r = s1[j] - sa[j];
            ST(o + (48 + j) * cin, r);
        }
    }
}

/* Loads the a0 x a1 x a2 input tile at real origin q of channel block src (bin lanes per
 * position) into w, zeros outside the tensor's extent s. */
INLINE void gather(const float *src, int64_t bin, const int64_t s[3], const int64_t q[3], vf *w,
                   const int a0, const int a1, const int a2)
{
    const vf zero = {0};
    for (int a = 0; a < a0; a++)
        for (int b = 0; b < a1; b++) {
            int64_t z = q[0] + a, y = q[1] + b;
            vf *row = w + (a * a1 + b) * a2;
            bool ok = z >= 0 && z < s[0] && y >= 0 && y < s[1];
            const float *p = src + ((z * s[1] + y) * s[2] + q[2]) * bin;
#pragma GCC unroll 4
            for (int c = 0; c < a2; c++) {
                int64_t x = q[2] + c;
                row[c] = zero;
                if (!ok || x < 0 || x >= s[2])
                    continue;
                if (bin == WINO_L) {
                    LD(row[c], p + c * WINO_L);
                    continue;
                }
                for (int64_t l = 0; l < bin; l++)
                    row[c][l] = p[c * bin + l];
            }
        }
}

/* Stores the tile's P transformed values w into dst, the [p][ci] of its channel block, as
 * whole vectors: where the block has fewer than WINO_L channels left the store runs into the
 * next p's first channels (or, for the last p, the tile's 64-byte slack). Channel block 0,
 * stored last (input_tr goes down), overwrites that; with fewer than WINO_L channels in all
 * the stores go up in p, so the next p's store does. */
INLINE void put_v(const vf *w, float *dst, int64_t cin, const int P)
{
#pragma GCC unroll 4
    for (int p = 0; p < P; p++)
        ST(dst + p * cin, w[p]);
}

/* Tile t's (z, y, x) index and batch entry. Tiles deeper than one plane: per row of tiles (y),
 * groups of XG tiles along x, in a group z, then x fastest: the tile XG further along z
 * reuses half the input planes of this one while they are in L1/L2 (with x fastest over the
 * whole row the planes came back from memory a slab of tiles later), and the XG tiles along
 * x write whole 64-byte lines of a planar output (4 floats each) one after the other (with z
 * fastest a line was finished 2 x nt[0] tiles later, after it had left L1: RSUNet's training
 * step 5-7 % faster, inference unchanged). Tiles of one plane share nothing along z: x
 * fastest (the next tile reuses 2 of its columns). Every output is one tile's: the order
 * changes which tiles share a block, not a bit of the result. */
enum { XG = 4 };
static inline int64_t wino_decode(const struct vox_nn_wino_geom *g, int64_t t, int64_t idx[3])
{
    const int64_t *nt = g->nt;
    if (g->al[0] == 1)
        return vox_nn_tile_decode(nt, t, idx);
    const int64_t row = nt[0] * nt[2], full = nt[2] / XG * XG, r = t % row;
    t /= row;
    idx[1] = t % nt[1];
    if (r < full * nt[0]) { /* groups of XG tiles along x, z, then x in the group */
        const int64_t q = r % (XG * nt[0]);
        idx[0] = q / XG;
        idx[2] = r / (XG * nt[0]) * XG + q % XG;
    } else {
        const int64_t q = r - full * nt[0], tail = nt[2] - full;
        idx[0] = q / tail;
        idx[2] = full + q % tail;
    }
    return t / nt[1];
}

/* B^T along z of a tile's a0 slices d (sl vectors each, x and y done) into V at dst: stored
 * straight where every store is a whole block (any order will do), else in place and then in
 * put_v's rising order. */
INLINE void z_into_v(vf *d, float *dst, int64_t cin, const int a0, const int sl)
{
    if (a0 == 4 && cin >= WINO_L) {
#pragma GCC unroll 4
        for (int k = 0; k < sl; k++) {
            vf y[4];
            bt4(d + k, sl, y, 1);
#pragma GCC unroll 4
            for (int a = 0; a < 4; a++)
                ST(dst + (a * sl + k) * cin, y[a]);
        }
        return;
    }
    if (a0 == 4)
        for (int k = 0; k < sl; k++)
            bt4(d + k, sl, d + k, sl);
    put_v(d, dst, cin, a0 * sl);
}

/* The tile shape as a switch case: 7, 3, 5, 6 for 4x4x4, 1x4x4, 4x1x4, 4x4x1 (F(2,3) on the axes
 * of extent 4), 8 and 9 for 4x6x6 and 1x6x6 (F(4,3) along y and x). */
static int wino_shape(const struct vox_nn_wino_geom *g)
{
    if (g->al[1] == 6)
        return g->al[0] == 4 ? 8 : 9;
    return (g->al[0] == 4) * 4 + (g->al[1] == 4) * 2 + (g->al[2] == 4);
}

/* CALL(a0, a1, a2) with the constant tile extents of wino_shape's case (each tile function is
 * always inlined, so every shape gets its own straight-line copy). */
#define WINO_BY_SHAPE(shape, CALL)                                                                 \
    do {                                                                                           \
        switch (shape) {                                                                           \
        case 7:                                                                                    \
            CALL(4, 4, 4);                                                                         \
            break;                                                                                 \
        case 8:                                                                                    \
            CALL(4, 6, 6);                                                                         \
            break;                                                                                 \
        case 9:                                                                                    \
            CALL(1, 6, 6);                                                                         \
            break;                                                                                 \
        case 3:                                                                                    \
            CALL(1, 4, 4);                                                                         \
            break;                                                                                 \
        case 5:                                                                                    \
            CALL(4, 1, 4);                                                                         \
            break;                                                                                 \
        default:                                                                                   \
            CALL(4, 4, 1);                                                                         \
            break;                                                                                 \
        }                                                                                          \
    } while (0)

/* One tile's input transform for channel block cb, into v (the tile's [p][ci]): per z-slice
 * x and y in registers, then z along the slices. Interior tiles prefetch the positions that
 * the tile PF_AHEAD tiles further along the order (wino_decode) reads first (the block's rows
 * are more streams than the hardware prefetcher follows). */
enum { PF_AHEAD = 2 };

INLINE void input_tile(const struct vox_nn_wino_geom *g, const struct vox_nn_bt *in, int64_t cb,
                       const int64_t q[3], int64_t e, float *v, vf *w, const int a0, const int a1,
                       const int a2)
{
    const int64_t bin = in->blk, nb = vox_nn_bt_blocks(in), vol = vox_nn_bt_vol(in);
    const int64_t *s = in->s, cin = g->cin;
    const int sl = a1 * a2;
    bool inside = bin == WINO_L;
    for (int a = 0; a < 3; a++)
        inside = inside && q[a] >= 0 && q[a] + g->al[a] <= s[a];
    /* F(4,3) tiles whose rows lie inside but not all of their z-slices (the first and last
     * along z of same padding: a fifth of a 20-plane layer's tiles) take the slices from the
     * tensor, zero outside, with no gather of the whole tile */
    const bool by_slice = !inside && a1 == 6 && bin == WINO_L && q[1] >= 0 && q[1] + a1 <= s[1] &&
                          q[2] >= 0 && q[2] + a2 <= s[2];
    const float *src = in->data + (e * nb + cb) * vol * bin;
    int64_t sz = s[1] * s[2] * WINO_L, sy = s[2] * WINO_L;
    if (by_slice) {
        src += (q[1] * s[2] + q[2]) * WINO_L; /* + z * sz for slice z */
    } else if (inside) {
        src += ((q[0] * s[1] + q[1]) * s[2] + q[2]) * WINO_L;
        /* ahead along z: the planes a tile some 4 PF_AHEAD further along the order
         * (wino_decode's groups) reads first; along x (tiles of one plane), the columns the
         * tile PF_AHEAD further reads first (prefetching columns along the group measured
         * slower) */
        const int zs = a0 > 1 ? a0 - 2 : 0, xs = a2 > 1 ? a2 - 2 : 1;
        const int64_t ahead = zs ? PF_AHEAD * zs + a0 - zs : PF_AHEAD * xs + a2 - xs;
        if (zs && q[0] + ahead + zs <= s[0])
            for (int a = 0; a < zs; a++)
                for (int b = 0; b < a1; b++)
                    for (int c = 0; c < a2; c++)
                        __builtin_prefetch(src + (ahead + a) * sz + b * sy + c * WINO_L);
        if (!zs && q[2] + ahead + xs <= s[2])
            for (int b = 0; b < a1; b++)
                for (int c = 0; c < xs; c++)
                    __builtin_prefetch(src + b * sy + (ahead + c) * WINO_L);
    } else {
        gather(src, bin, s, q, w, a0, a1, a2);
        src = (const float *)w;
        sz = sl * WINO_L;
        sy = a2 * WINO_L;
    }
    float *dst = v + cb * bin;
    if (a1 == 6) { /* F(4,3) along y and x: slices through d (past a gathered tile in w) */
        vf *d = w + a0 * sl;
        const vf zero = {0};
        for (int a = 0; a < a0; a++) {
            const int64_t z = q[0] + a;
            if (!by_slice)
                bt_slice6(src + a * sz, sy, d + a * sl);
            else if (z >= 0 && z < s[0])
                bt_slice6(src + z * sz, sy, d + a * sl);
            else
                for (int k = 0; k < sl; k++)
                    d[a * sl + k] = zero;
        }
        z_into_v(d, dst, cin, a0, sl);
        return;
    }
    if (a0 == 4 && a1 == 4 && a2 == 4 && cin >= WINO_L) { /* any store order (see put_v) */
        input_444(src, sz, sy, dst, cin);
        return;
    }
    if (a0 == 1 && cin >= WINO_L) {
        bt_slice(src, sy, w, dst, cin, a1, a2);
        return;
    }
    for (int a = 0; a < a0; a++)
        bt_slice(src + a * sz, sy, w + a * sl, NULL, 0, a1, a2);
    z_into_v(w, dst, cin, a0, sl);
}

/* Channel block by channel block (fewer streams at a time; the last first, see put_v), tile by
 * tile. */
static void input_tr(const struct vox_nn_wino_geom *g, const struct vox_nn_bt *in, int64_t g0,
                     int64_t count, float *v, float *buf)
{
    vf *w = (vf *)buf;
    const int shape = wino_shape(g);
    for (int64_t cb = vox_nn_bt_blocks(in) - 1; cb >= 0; cb--)
        for (int64_t t = 0; t < count; t++) {
            int64_t idx[3], q[3];
            int64_t e = wino_decode(g, g0 + t, idx);
            for (int a = 0; a < 3; a++)
                q[a] = idx[a] * g->m[a] - g->lo[a] - g->off[a];
            float *vt = v + t * g->tv;
#define INPUT_TILE_AT(a0, a1, a2) input_tile(g, in, cb, q, e, vt, w, a0, a1, a2)
            WINO_BY_SHAPE(shape, INPUT_TILE_AT);
#undef INPUT_TILE_AT
        }
}

/* Stores act(y + bias [+ res]) of one output z-slice, m1 x m2 values y, at base (rows of sy
 * floats): n1 x n2 of them (the part inside the tensor). res (NULL: none): a residual tensor
 * laid out as the output, at the same offset (a fused add layer). */
INLINE void store_slice(enum vox_nn_act act, vf *y, const vf *bias, float *base, const float *res,
                        int64_t sy, int64_t n1, int64_t n2, const int m1, const int m2)
{
#pragma GCC unroll 4
    for (int k = 0; k < m1 * m2; k++)
        y[k] += *bias;
    for (int64_t b = 0; res && b < n1; b++)
        for (int64_t c = 0; c < n2; c++) {
            vf r;
            LD(r, res + b * sy + c * WINO_L);
            y[b * m2 + c] += r;
        }
#pragma GCC unroll 4
    for (int k = 0; k < m1 * m2; k++)
        act_vec(act, &y[k]);
    if (n1 == m1 && n2 == m2) {
#pragma GCC unroll 4
        for (int b = 0; b < m1; b++)
#pragma GCC unroll 2
            for (int c = 0; c < m2; c++)
                ST(base + b * sy + c * WINO_L, y[b * m2 + c]);
        return;
    }
    for (int64_t b = 0; b < n1; b++)
        for (int64_t c = 0; c < n2; c++)
            ST(base + b * sy + c * WINO_L, y[b * m2 + c]);
}

/* Rows of 4 floats (sy apart) to and from a vector of WINO_L / 4 of them, through register
 * shuffles (a 64-byte store read back as 16-byte loads, or the reverse, would stall on store
 * forwarding). */
typedef float v4f __attribute__((vector_size(16)));
typedef float v8f __attribute__((vector_size(32)));

INLINE void rows4_store(float *dst, int64_t sy, const vf *t)
{
    v4f q[WINO_L / 4];
#if WINO_L == 16
    q[0] = __builtin_shufflevector(*t, *t, 0, 1, 2, 3);
    q[1] = __builtin_shufflevector(*t, *t, 4, 5, 6, 7);
    q[2] = __builtin_shufflevector(*t, *t, 8, 9, 10, 11);
    q[3] = __builtin_shufflevector(*t, *t, 12, 13, 14, 15);
#else
    q[0] = __builtin_shufflevector(*t, *t, 0, 1, 2, 3);
    q[1] = __builtin_shufflevector(*t, *t, 4, 5, 6, 7);
#endif
#pragma GCC unroll 4
    for (int b = 0; b < WINO_L / 4; b++)
        memcpy(dst + b * sy, &q[b], sizeof q[b]);
}

INLINE void rows4_load(const float *src, int64_t sy, vf *t)
{
    v4f q[WINO_L / 4];
#pragma GCC unroll 4
    for (int b = 0; b < WINO_L / 4; b++)
        memcpy(&q[b], src + b * sy, sizeof q[b]);
#if WINO_L == 16
    v8f a = __builtin_shufflevector(q[0], q[1], 0, 1, 2, 3, 4, 5, 6, 7);
    v8f c = __builtin_shufflevector(q[2], q[3], 0, 1, 2, 3, 4, 5, 6, 7);
    *t = __builtin_shufflevector(a, c, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
#else
    *t = __builtin_shufflevector(q[0], q[1], 0, 1, 2, 3, 4, 5, 6, 7);
#endif
}

/* store_slice for a planar output (channel l of the block at base + l * cs, nch of them
 * exist): the slice's m1 x m2 position vectors become channel rows, WINO_L positions at a
 * time (m1 * m2 = 16: register transposes; else through a buffer), then res (laid out as the
 * output) is added, the act applied and each channel's n1 x n2 values stored. */
INLINE void store_slice_planar(enum vox_nn_act act, vf *y, const vf *bias, float *base,
                               const float *res, int64_t cs, int64_t sy, int64_t n1, int64_t n2,
                               int64_t nch, const int m1, const int m2)
{
    const int np = m1 * m2;
#pragma GCC unroll 4
    for (int k = 0; k < np; k++)
        y[k] += *bias;
    if (np % WINO_L != 0) { /* small slices (F(2,3)): element by element */
        float v[16][WINO_L];
        for (int k = 0; k < np; k++)
            ST(v[k], y[k]);
        for (int64_t l = 0; l < nch; l++)
            for (int64_t b = 0; b < n1; b++)
                for (int64_t c = 0; c < n2; c++) {
                    vf t = (vf){0};
                    t[0] = v[b * m2 + c][l] + (res ? res[l * cs + b * sy + c] : 0.0f);
                    act_vec(act, &t);
                    base[l * cs + b * sy + c] = t[0];
                }
        return;
    }
    const int rows = WINO_L / m2;          /* slice rows per group of WINO_L positions */
    if (n1 == m1 && n2 == m2 && m2 == 4) { /* whole slices: stores of constant size */
        for (int h = 0; h < np / WINO_L; h++) {
            vf t[WINO_L];
#pragma GCC unroll 16
            for (int i = 0; i < WINO_L; i++)
                t[i] = y[h * WINO_L + i];
            vtranspose(t);
            for (int64_t l = 0; l < nch; l++) {
                const int64_t at = l * cs + h * rows * sy;
                if (res) {
                    vf r;
                    rows4_load(res + at, sy, &r);
                    t[l] += r;
                }
                act_vec(act, &t[l]);
                rows4_store(base + at, sy, &t[l]);
            }
        }
        return;
    }
    for (int h = 0; h < np / WINO_L; h++) {
        vf t[WINO_L];
#pragma GCC unroll 16
        for (int i = 0; i < WINO_L; i++)
            t[i] = y[h * WINO_L + i];
        vtranspose(t); /* t[l]: channel l at positions h * WINO_L + i */
        for (int64_t l = 0; l < nch; l++) {
            float v[WINO_L];
            if (res) {
                memset(v, 0, sizeof v);
                for (int64_t b = h * rows; b < n1 && b < (h + 1) * rows; b++)
                    memcpy(v + (b - h * rows) * m2, res + l * cs + b * sy, (size_t)n2 * sizeof *v);
                vf r;
                LD(r, v);
                t[l] += r;
            }
            act_vec(act, &t[l]);
            ST(v, t[l]);
            for (int64_t b = h * rows; b < n1 && b < (h + 1) * rows; b++)
                memcpy(base + l * cs + b * sy, v + (b - h * rows) * m2, (size_t)n2 * sizeof *v);
        }
    }
}

/* The output slice's stores: blocked (store_slice) or planar (an output of blocks of 1). */
INLINE void put_slice(const struct vox_nn_wino_geom *g, vf *y, const vf *bias,
                      struct vox_nn_bt *out, const struct vox_nn_bt *res, int64_t e, int64_t ob,
                      const int64_t o[3], int64_t n1, int64_t n2, const int m1, const int m2)
{
    const int64_t *s = out->s, vol = vox_nn_bt_vol(out);
    const int64_t off = (o[0] * s[1] + o[1]) * s[2] + o[2];
    if (out->blk == 1) {
        const int64_t ch = e * out->c + ob * WINO_L, left = out->c - ob * WINO_L;
        store_slice_planar(g->act, y, bias, out->data + ch * vol + off,
                           res ? res->data + ch * vol + off : NULL, vol, s[2], n1, n2,
                           left < WINO_L ? left : WINO_L, m1, m2);
        return;
    }
    const int64_t nb = g->cop / WINO_L, at = ((e * nb + ob) * vol + off) * WINO_L;
    store_slice(g->act, y, bias, out->data + at, res ? res->data + at : NULL, s[2] * WINO_L, n1, n2,
                m1, m2);
}

/* A^T along x and y of one slice of a1 x a2 values src, in registers, into y (m1 x m2). */
INLINE void at_slice(const vf *src, vf *y, const int a1, const int a2)
{
    vf r[16];
#pragma GCC unroll 16
    for (int k = 0; k < a1 * a2; k++)
        r[k] = src[k];
    const int m2 = a2 == 4 ? 2 : 1;
    if (a2 == 4)
#pragma GCC unroll 4
        for (int b = 0; b < a1; b++)
            at4(r + b * 4, 1, r + b * 2, 1); /* row b's 2 values land before row b + 1 is read */
    if (a1 == 4)
#pragma GCC unroll 2
        for (int c = 0; c < m2; c++)
            at4(r + c, m2, r + c, m2);
    const int n = (a1 == 4 ? 2 : 1) * m2;
#pragma GCC unroll 4
    for (int k = 0; k < n; k++)
        y[k] = r[k];
}

/* A^T along x then y of one 6 x 6 slice, value k at p + k * ps floats, into y (4 x 4). */
INLINE void at_slice6(const float *p, int64_t ps, vf *y)
{
    vf r[24];
#pragma GCC unroll 6
    for (int b = 0; b < 6; b++) {
        vf x[6];
#pragma GCC unroll 6
        for (int c = 0; c < 6; c++)
            LD(x[c], p + (b * 6 + c) * ps);
        at6(x, 1, r + b * 4, 1);
    }
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++)
        at6(r + c, 4, y + c, 4);
}

/* One tile's output transform for every output block, from mt (the tile's [p][co]): z first
 * (the values of the tile's P positions read once), then x and y per output z-slice in
 * registers (a tile of 1 along z: straight from M). */
INLINE void output_tile(const struct vox_nn_wino_geom *g, const float *mt, const int64_t o[3],
                        int64_t e, struct vox_nn_bt *out, const struct vox_nn_bt *res, vf *w,
                        const int a0, const int a1, const int a2)
{
    const int64_t nb = g->cop / WINO_L, cop = g->cop;
    const int64_t *s = out->s;
    const int sl = a1 * a2, m0 = a0 > 1 ? a0 - 2 : 1, m1 = a1 > 1 ? a1 - 2 : 1,
              m2 = a2 > 1 ? a2 - 2 : 1;
    const int64_t n0 = s[0] - o[0] < m0 ? s[0] - o[0] : m0;
    const int64_t n1 = s[1] - o[1] < m1 ? s[1] - o[1] : m1;
    const int64_t n2 = s[2] - o[2] < m2 ? s[2] - o[2] : m2;
    for (int64_t ob = 0; ob < nb; ob++) {
        const float *src = mt + ob * WINO_L;
        vf bias;
        LD(bias, g->bias + ob * WINO_L);
        if (a0 == 4) {
#pragma GCC unroll 4
            for (int k = 0; k < sl; k++) {
                vf x[4];
#pragma GCC unroll 4
                for (int a = 0; a < 4; a++)
                    LD(x[a], src + (a * sl + k) * cop);
                at4(x, 1, w + k, sl);
            }
        } else if (a1 == 6) {
            vf y[16];
            at_slice6(src, cop, y);
            put_slice(g, y, &bias, out, res, e, ob, o, n1, n2, 4, 4);
            continue;
        } else {
            vf y[4], r[16];
#pragma GCC unroll 16
            for (int k = 0; k < sl; k++)
                LD(r[k], src + k * cop);
            at_slice(r, y, a1, a2);
            put_slice(g, y, &bias, out, res, e, ob, o, n1, n2, m1, m2);
            continue;
        }
        for (int64_t a = 0; a < n0; a++) {
            vf y[16];
            const int64_t oa[3] = {o[0] + a, o[1], o[2]};
            if (a1 == 6) {
                at_slice6((const float *)(w + a * sl), WINO_L, y);
                put_slice(g, y, &bias, out, res, e, ob, oa, n1, n2, 4, 4);
                continue;
            }
            at_slice(w + a * sl, y, a1, a2);
            put_slice(g, y, &bias, out, res, e, ob, oa, n1, n2, m1, m2);
        }
    }
}

static void output_tr(const struct vox_nn_wino_geom *g, const float *mm, int64_t g0, int64_t count,
                      struct vox_nn_bt *out, const struct vox_nn_bt *res, float *buf)
{
    vf *w = (vf *)buf;
    const int shape = wino_shape(g);
    for (int64_t t = 0; t < count; t++) {
        int64_t idx[3], o[3];
        int64_t e = wino_decode(g, g0 + t, idx);
        for (int a = 0; a < 3; a++)
            o[a] = idx[a] * g->m[a];
        const float *mt = mm + t * g->tm;
#define OUTPUT_TILE_AT(a0, a1, a2) output_tile(g, mt, o, e, out, res, w, a0, a1, a2)
        WINO_BY_SHAPE(shape, OUTPUT_TILE_AT);
#undef OUTPUT_TILE_AT
    }
}

/* ---- The output gradient's transform (backward-weights, fast_wino_bw.c) ---- */

/* A of F(2,3), the transpose of A^T: the 2 values x[0], x[s] into y[0], y[t], y[2t], y[3t]. */
INLINE void a4(const vf *x, int s, vf *y, int t)
{
    vf g0 = x[0], g1 = x[s];
    y[0] = g0;
    y[t] = g0 + g1;
    y[2 * t] = g0 - g1;
    y[3 * t] = -g1;
}

/* A of F(4,3): the 4 values x[0], x[s], x[2s], x[3s] into y[0], y[t], ..., y[5t]: the columns
 * of at6's rows, [1 0 0 0], [1 1 1 1], [1 -1 1 -1], [1 2 4 8], [1 -2 4 -8], [0 0 0 1]. */
INLINE void a6(const vf *x, int s, vf *y, int t)
{
    vf g0 = x[0], g1 = x[s], g2 = x[2 * s], g3 = x[3 * s];
    vf e = g0 + g2, o = g1 + g3, e4 = g0 + 4.0f * g2, o8 = 2.0f * g1 + 8.0f * g3;
    y[0] = g0;
    y[t] = e + o;
    y[2 * t] = e - o;
    y[3 * t] = e4 + o8;
    y[4 * t] = e4 - o8;
    y[5 * t] = g3;
}

/* The m values x[0], x[s], ... into the al = m + 2 values y[0], y[t], ... (m = 1: a copy). */
INLINE void a_any(const vf *x, int s, vf *y, int t, const int m)
{
    if (m == 4)
        a6(x, s, y, t);
    else if (m == 2)
        a4(x, s, y, t);
    else
        y[0] = x[0];
}

/* The inverse of store_slice_planar's transposes: the m1 x m2 position vectors y of one z-slice
 * of a planar tensor (channel l of the block at base + l * cs, nch of them; rows sy floats
 * apart), the n1 x n2 inside the tensor, zeros elsewhere. */
INLINE void load_slice_planar(vf *y, const float *base, int64_t cs, int64_t sy, int64_t n1,
                              int64_t n2, int64_t nch, const int m1, const int m2)
{
    const int np = m1 * m2;
    const vf zero = {0};
    if (np % WINO_L != 0) { /* small slices (F(2,3)): element by element */
        for (int k = 0; k < np; k++)
            y[k] = zero;
        for (int64_t l = 0; l < nch; l++)
            for (int64_t b = 0; b < n1; b++)
                for (int64_t c = 0; c < n2; c++)
                    y[b * m2 + c][l] = base[l * cs + b * sy + c];
        return;
    }
    const int rows = WINO_L / m2; /* slice rows per group of WINO_L positions */
    const bool whole = n1 == m1 && n2 == m2 && m2 == 4;
    for (int h = 0; h < np / WINO_L; h++) {
        vf t[WINO_L];
#pragma GCC unroll 16
        for (int l = 0; l < WINO_L; l++) {
            t[l] = zero;
            if (l >= nch)
                continue;
            const float *at = base + l * cs + h * rows * sy;
            if (whole) {
                rows4_load(at, sy, &t[l]);
                continue;
            }
            float v[WINO_L] = {0};
            for (int64_t b = h * rows; b < n1 && b < (h + 1) * rows; b++)
                memcpy(v + (b - h * rows) * m2, at + (b - h * rows) * sy, (size_t)n2 * sizeof *v);
            LD(t[l], v);
        }
        vtranspose(t); /* t[i]: position h * WINO_L + i, channels in the lanes */
#pragma GCC unroll 16
        for (int i = 0; i < WINO_L; i++)
            y[h * WINO_L + i] = t[i];
    }
}

/* One tile's gradient transform for every channel block of the planar tensor gy, into wt
 * (the tile's [p][co], rows of cop floats): per output z-slice A along x and y in registers,
 * then A along z across the slices (w: a0 x a1 x a2 vectors). */
INLINE void grad_tile(const struct vox_nn_wino_geom *g, const struct vox_nn_bt *gy,
                      const int64_t o[3], int64_t e, float *wt, vf *w, const int a0, const int a1,
                      const int a2)
{
    const int64_t *s = gy->s, vol = vox_nn_bt_vol(gy), cop = g->cop;
    const int sl = a1 * a2, m0 = a0 > 1 ? a0 - 2 : 1, m1 = a1 > 1 ? a1 - 2 : 1,
              m2 = a2 > 1 ? a2 - 2 : 1;
    const int64_t n0 = s[0] - o[0] < m0 ? s[0] - o[0] : m0;
    const int64_t n1 = s[1] - o[1] < m1 ? s[1] - o[1] : m1;
    const int64_t n2 = s[2] - o[2] < m2 ? s[2] - o[2] : m2;
    const vf zero = {0};
    for (int64_t ob = 0; ob < cop / WINO_L; ob++) {
        const int64_t ch = e * gy->c + ob * WINO_L, left = gy->c - ob * WINO_L;
        for (int a = 0; a < m0; a++) {
            vf y[16], r[24];
            if (a < n0)
                load_slice_planar(y, gy->data + ch * vol + ((o[0] + a) * s[1] + o[1]) * s[2] + o[2],
                                  vol, s[2], n1, n2, left < WINO_L ? left : WINO_L, m1, m2);
            else
#pragma GCC unroll 16
                for (int k = 0; k < m1 * m2; k++)
                    y[k] = zero;
#pragma GCC unroll 4
            for (int b = 0; b < m1; b++) /* x: m1 rows of a2 */
                a_any(y + b * m2, 1, r + b * a2, 1, m2);
            vf *d = w + a * sl;
#pragma GCC unroll 6
            for (int c = 0; c < a2; c++) /* y: a1 x a2 */
                a_any(r + c, a2, d + c, a2, m1);
        }
        float *dst = wt + ob * WINO_L;
        if (a0 == 4) {
#pragma GCC unroll 4
            for (int k = 0; k < sl; k++) {
                vf x[4];
                a4(w + k, sl, x, 1);
#pragma GCC unroll 4
                for (int a = 0; a < 4; a++)
                    ST(dst + (a * sl + k) * cop, x[a]);
            }
        } else {
#pragma GCC unroll 6
            for (int k = 0; k < sl; k++)
                ST(dst + k * cop, w[k]);
        }
    }
}

static void grad_tr(const struct vox_nn_wino_geom *g, const struct vox_nn_bt *gy, int64_t g0,
                    int64_t count, float *wm, float *buf)
{
    vf *w = (vf *)buf;
    const int shape = wino_shape(g);
    for (int64_t t = 0; t < count; t++) {
        int64_t idx[3], o[3];
        int64_t e = wino_decode(g, g0 + t, idx);
        for (int a = 0; a < 3; a++)
            o[a] = idx[a] * g->m[a];
        float *wt = wm + t * g->tm;
#define GRAD_TILE_AT(a0, a1, a2) grad_tile(g, gy, o, e, wt, w, a0, a1, a2)
        WINO_BY_SHAPE(shape, GRAD_TILE_AT);
#undef GRAD_TILE_AT
    }
}

const struct vox_nn_wino_tr WINO_TR = {input_tr, output_tr, grad_tr};
