/*
 * nn/fast_wino.h: what the Winograd convolution (fast_wino.c) shares with its transform
 * kernels (fast_wino_tr*.c, one per ISA, from the body in fast_wino_tr.h): the tile geometry
 * and the table of the two transforms.
 */
#ifndef VOX_NN_FAST_WINO_H
#define VOX_NN_FAST_WINO_H

#include "fast.h"

/* Per axis (z, y, x): output tile m (2 for a kernel extent 3, else 1), input tile al = m + k - 1
 * (4 or 1), tiles nt = ceil(out / m), padding lo. P = al[0] * al[1] * al[2] positions.
 * A block holds T tiles: V is [T][P][cin] (input lanes not padded), M is [T][P][cop] with
 * cop = the output channels padded to the block b; U is [P][cin][cop]. */
struct vox_nn_wino_geom {
    int64_t m[3], al[3], nt[3], lo[3];
    int64_t off[3]; /* where the input tensor starts in the whole input: a band's origin
                     * (vox_nn_wino_run_tiles), else 0 */
    int64_t P, T, cin, cop, b;
    int64_t tv, tm; /* floats per tile in V and M: P * cin, P * cop rounded up to 64 bytes, plus
                     * 64 bytes (tiles 4 KiB apart would share the L1's sets) */
    enum vox_nn_act act;
    const float *bias; /* cop floats, 0 past cout */
};

/* The transforms of tiles g0 .. g0 + count - 1 (numbered over batch entry, z, y, x): input:
 * V[t][p][ci] = (B^T d B)_p of tile t's input (zeros outside the tensor); output:
 * out = act(A^T M A + bias [+ res]) at the valid outputs of each tile (res: NULL, or a tensor
 * laid out as out: a fused residual add). buf: 2 * P * b floats. */
struct vox_nn_wino_tr {
    void (*input)(const struct vox_nn_wino_geom *g, const struct vox_nn_bt *in, int64_t g0,
                  int64_t count, float *v, float *buf);
    void (*output)(const struct vox_nn_wino_geom *g, const float *mm, int64_t g0, int64_t count,
                   struct vox_nn_bt *out, const struct vox_nn_bt *res, float *buf);
    /* backward-weights: W[t][p][co] = (A gy A^T)_p of tile t's outputs in the planar gy (zeros
     * outside), laid out as M */
    void (*grad)(const struct vox_nn_wino_geom *g, const struct vox_nn_bt *gy, int64_t g0,
                 int64_t count, float *w, float *buf);
};

/* The geometry of conv c on isa (T for blocks of about block_bytes of V and M); the tiles in
 * *tiles_out. */
void vox_nn_wino_geometry(const struct vox_nn_fast_conv *c, int isa, int64_t block_bytes,
                          struct vox_nn_wino_geom *g, int64_t *tiles_out);
/* One axis of a separable transform for rows of `width` floats (a multiple of 8): src holds n0 x
 * cols x n1 rows (the axis in the middle), dst gets n0 x rows x n1 with dst[a][q][b] = sum_j
 * M[q][j] src[a][j][b] (M: rows x cols, row-major, in double, applied in f32). */
void vox_nn_wino_axis(const double *M, int64_t rows, int64_t cols, int64_t n0, int64_t n1,
                      int64_t width, const float *src, float *dst);
/* The axis along which the tiles' rows follow each other, outermost in their order
 * (wino_decode): y for 3D tiles, z for tiles of one plane; bands are runs of these rows. */
static inline int vox_nn_wino_row_axis(const struct vox_nn_wino_geom *g)
{
    return g->al[0] > 1 ? 1 : 0;
}
/* Rows of tiles per band: about `bytes` of packed input (of extents s), 1 to all of them. */
int64_t vox_nn_wino_geom_band_rows(const struct vox_nn_wino_geom *g, const int64_t s[3],
                                   int64_t bytes);
/* The bands of a conv's tiles (n batch entries): runs of consecutive tiles whose input is a
 * slab, rows of tiles (3D tiles: y is outermost in wino_decode's order) or planes (tiles of
 * one plane), as many as make about `bytes` of packed input (one at least); band b's tiles
 * [t0, t1) and its input's box [lo, hi) within the input extent s (clipped: outside is zero). */
int64_t vox_nn_wino_geom_bands(const struct vox_nn_wino_geom *g, const int64_t s[3], int64_t bytes,
                               int64_t n);
void vox_nn_wino_geom_band(const struct vox_nn_wino_geom *g, const int64_t s[3], int64_t bytes,
                           int64_t b, int64_t *t0, int64_t *t1, int64_t lo[3], int64_t hi[3]);
/* G of F(2,3) (4 x 3) and of F(4,3) (6 x 3). */
extern const double vox_nn_wino_g4[4][3], vox_nn_wino_g6[6][3];

/* 8 lanes built for the baseline ISA (VOX_ISA_REF); AVX2 (8 lanes); AVX-512 (16 lanes). */
extern const struct vox_nn_wino_tr vox_nn_wino_tr_ref, vox_nn_wino_tr_avx2, vox_nn_wino_tr_avx512;

static inline const struct vox_nn_wino_tr *vox_nn_wino_tr_for(int isa)
{
    return isa == VOX_ISA_AVX512 ? &vox_nn_wino_tr_avx512
           : isa == VOX_ISA_AVX2 ? &vox_nn_wino_tr_avx2
                                 : &vox_nn_wino_tr_ref;
}

#endif
