/*
 * seg/ws_kernels.h: the watershed's per-voxel passes, A (each voxel's largest edge) and
 * B (its steepest-ascent direction byte), over the rows of a box of quantized affinities
 * (private: seg/watershed.c runs them over the whole volume, dist/chunk_ws.c over a chunk
 * and its margin, so the two decide every voxel alike).
 *
 * Zlateski & Seung (arXiv 1505.00249), pass A and B as described at the top of
 * seg/watershed.c. Edges that leave the box do not exist. Interior rows (every edge there)
 * take 16 voxels at a time with GCC's generic vector extension (SSE2 / NEON / scalar code);
 * the scalar twins ws_max_of and ws_dir_of do the box's edges and are the oracle.
 */
#ifndef VOX_SEG_WS_KERNELS_H
#define VOX_SEG_WS_KERNELS_H

#include "seg_internal.h"

#include <stdbool.h>
#include <string.h>

enum {
    WS_DIR_MASK = 0x3F, /* bits 0..5: -z, -y, -x, +x, +y, +z (ascending neighbour index) */
    WS_DIR_SEED = 0x40, /* a resolved voxel with plateau neighbours */
    WS_DIR_RESOLVED = 0x80,
};

/* A box of d.n voxels: its 3 channels of quantized affinities q (channel c at c * d.n) and
 * the voxel maxima m (pass A's output, pass B's input). */
struct ws_grid {
    const uint8_t *q;
    const uint8_t *m;
    struct seg_dims d;
    int low, high;
};

typedef uint8_t ws_v16 __attribute__((vector_size(16)));

static inline ws_v16 ws_ld(const uint8_t *p)
{
    ws_v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline ws_v16 ws_vmax(ws_v16 a, ws_v16 b)
{
    return b ^ ((a ^ b) & (ws_v16)(a > b));
}

/* The largest edge of voxel v at (z, y, x), edges leaving the box left out. */
static inline uint8_t ws_max_of(const struct ws_grid *g, int64_t v, int64_t z, int64_t y,
                                int64_t x)
{
    const int64_t n = g->d.n, X = g->d.x;
    const uint8_t *q = g->q;
    uint8_t e[6] = {z > 0 ? q[v] : 0,
                    y > 0 ? q[n + v] : 0,
                    x > 0 ? q[2 * n + v] : 0,
                    x + 1 < X ? q[2 * n + v + 1] : 0,
                    y + 1 < g->d.y ? q[n + v + X] : 0,
                    z + 1 < g->d.z ? q[v + g->d.plane] : 0};
    uint8_t m = 0;
    for (int d = 0; d < 6; d++)
        m = e[d] > m ? e[d] : m;
    return m;
}

/* The 16 maxima at x of a row: the x edges from the row itself, the others from 4 rows of
 * edges (a row of zeros where the edge leaves the box, zero[] repeated: step 0). */
static inline void ws_max16(uint8_t *m, const uint8_t *qx, const uint8_t *const src[4],
                            const int64_t step[4], int64_t x)
{
    ws_v16 v = ws_vmax(ws_ld(qx + x), ws_ld(qx + x + 1));
    for (int k = 0; k < 4; k++)
        v = ws_vmax(v, ws_ld(src[k] + x * step[k]));
    memcpy(m + x, &v, sizeof v);
}

/* Pass A over rows [r0, r1) of the box (row = z * Y + y) into m (box-shaped). */
static inline void ws_max_rows(const struct ws_grid *g, uint8_t *m, int64_t r0, int64_t r1)
{
    const int64_t X = g->d.x, n = g->d.n, P = g->d.plane;
    static const uint8_t zero[16];
    for (int64_t r = r0; r < r1; r++) {
        int64_t z = r / g->d.y, y = r % g->d.y, v0 = r * X, x = 1;
        const uint8_t *qz = g->q + v0, *qy = qz + n, *qx = qy + n;
        const bool in[4] = {z > 0, z + 1 < g->d.z, y > 0, y + 1 < g->d.y};
        const uint8_t *src[4] = {in[0] ? qz : zero, in[1] ? qz + P : zero, in[2] ? qy : zero,
                                 in[3] ? qy + X : zero};
        const int64_t step[4] = {in[0], in[1], in[2], in[3]};
        for (; x + 17 <= X; x += 16)
            ws_max16(m + v0, qx, src, step, x);
        if (x > 1 && x + 1 < X) { /* the rest, overlapping the last 16 (same values) */
            ws_max16(m + v0, qx, src, step, X - 17);
            x = X - 1;
        }
        for (; x < X; x++)
            m[v0 + x] = ws_max_of(g, v0 + x, z, y, x);
        m[v0] = ws_max_of(g, v0, z, y, 0);
    }
}

/* The direction byte of voxel v at (z, y, x) (pass B of seg/watershed.c); *pb gets its
 * plateau bits when it is resolved (a seed's: the BFS of pass C goes through them), else 0. */
static inline uint8_t ws_dir_of(const struct ws_grid *g, int64_t v, int64_t z, int64_t y,
                                int64_t x, uint8_t *pb)
{
    const int64_t n = g->d.n, X = g->d.x, P = g->d.plane;
    int mv = g->m[v];
    *pb = 0;
    if (mv <= g->low)
        return 0;
    const uint8_t *q = g->q;
    int e[6] = {z > 0 ? q[v] : -1,
                y > 0 ? q[n + v] : -1,
                x > 0 ? q[2 * n + v] : -1,
                x + 1 < X ? q[2 * n + v + 1] : -1,
                y + 1 < g->d.y ? q[n + v + X] : -1,
                z + 1 < g->d.z ? q[v + P] : -1};
    const int64_t off[6] = {-P, -X, -1, 1, X, P};
    uint8_t bits = 0;
    if (mv >= g->high) {
        for (int d = 0; d < 6; d++)
            bits |= (uint8_t)((e[d] >= g->high) << d);
        return bits;
    }
    int exit = -1;
    for (int d = 0; d < 6; d++) {
        if (e[d] != mv)
            continue;
        if (g->m[v + off[d]] > mv) {
            exit = exit < 0 ? d : exit; /* the first exit in neighbour-index order wins */
        } else {
            bits |= (uint8_t)(1u << d); /* a plateau edge: the neighbour's max is mv too */
        }
    }
    if (exit < 0)
        return bits;
    *pb = bits;
    return (uint8_t)(WS_DIR_RESOLVED | (1u << exit) | (bits ? WS_DIR_SEED : 0));
}

/* ws_dir_of for the 16 voxels at v of an interior row (every edge exists), branch-free;
 * *pb as there. */
static inline ws_v16 ws_dir16(const struct ws_grid *g, int64_t v, ws_v16 *pb)
{
    const int64_t n = g->d.n, X = g->d.x, P = g->d.plane, off[6] = {-P, -X, -1, 1, X, P};
    const uint8_t *q = g->q, *m = g->m;
    const ws_v16 e[6] = {ws_ld(q + v),         ws_ld(q + n + v),
                         ws_ld(q + 2 * n + v), ws_ld(q + 2 * n + v + 1),
                         ws_ld(q + n + v + X), ws_ld(q + v + P)};
    const ws_v16 mv = ws_ld(m + v), high = mv * 0 + (uint8_t)g->high;
    ws_v16 hb = mv * 0, ex = hb, pl = hb;
    for (int d = 0; d < 6; d++) {
        ws_v16 bit = hb * 0 + (uint8_t)(1u << d), nb = ws_ld(m + v + off[d]);
        ws_v16 eq = (ws_v16)(e[d] == mv), up = (ws_v16)(nb > mv);
        hb |= (ws_v16)(e[d] >= high) & bit;
        ex |= eq & up & bit;
        pl |= eq & ~up & bit;
    }
    ws_v16 has_ex = (ws_v16)(ex != 0), has_pl = (ws_v16)(pl != 0);
    ws_v16 resolved = (ex & -ex) | (uint8_t)WS_DIR_RESOLVED | (has_pl & (uint8_t)WS_DIR_SEED);
    ws_v16 mid = (has_ex & resolved) | (~has_ex & pl), is_hi = (ws_v16)(mv >= high);
    ws_v16 on = (ws_v16)(mv > (uint8_t)g->low);
    *pb = on & ~is_hi & has_ex & pl;
    return on & ((is_hi & hb) | (~is_hi & mid));
}

static inline void ws_dir16_store(const struct ws_grid *g, int64_t v, uint8_t *dir, uint8_t *pb)
{
    ws_v16 p, dv = ws_dir16(g, v, &p);
    memcpy(dir, &dv, sizeof dv);
    if (pb)
        memcpy(pb, &p, sizeof p);
}

/* Pass B over the voxels [x0, x1) of row r of the box: their direction bytes into
 * dir[0 .. x1 - x0), and with pb != NULL their plateau bits (ws_dir_of) into pb[...]. */
static inline void ws_dir_row(const struct ws_grid *g, int64_t r, int64_t x0, int64_t x1,
                              uint8_t *dir, uint8_t *pb)
{
    const int64_t X = g->d.x, z = r / g->d.y, y = r % g->d.y, v0 = r * X;
    const int64_t a = x0 > 1 ? x0 : 1, b = x1 < X - 1 ? x1 : X - 1; /* x with both x edges */
    int64_t x = x0;
    uint8_t p;
    if (z > 0 && z + 1 < g->d.z && y > 0 && y + 1 < g->d.y && b - a >= 16) {
        for (; x < a; x++) {
            dir[x - x0] = ws_dir_of(g, v0 + x, z, y, x, &p);
            if (pb)
                pb[x - x0] = p;
        }
        for (; x + 16 <= b; x += 16)
            ws_dir16_store(g, v0 + x, dir + x - x0, pb ? pb + x - x0 : NULL);
        if (x < b) { /* the rest, overlapping the last 16 (same values) */
            ws_dir16_store(g, v0 + b - 16, dir + b - 16 - x0, pb ? pb + b - 16 - x0 : NULL);
            x = b;
        }
    }
    for (; x < x1; x++) {
        dir[x - x0] = ws_dir_of(g, v0 + x, z, y, x, &p);
        if (pb)
            pb[x - x0] = p;
    }
}

#endif
