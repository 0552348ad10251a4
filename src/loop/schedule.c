/*
 * loop/schedule.c: the analytic default schedule for matmul-like nests, and vox_matmul.
 *
 * Key idea (BLIS-style blocking expressed as a loop order, no packing): with n the output
 * dimension along which C and B have stride 1, m the output dimension B does not depend on
 * and k the reduction,
 *     m:MB  k:KC  n:NR  m:MR  k:1  m:1  n:1
 * The register tile is MR rows x NR = (vectors x lanes) columns (AVX-512 6 x 3 zmm, AVX2 6 x 2
 * ymm: MR*vectors accumulators + vectors for B + 1 broadcast of A fit the register file); KC
 * keeps the B panel (KC x N, read once per MB rows) in half of L2, but >= 256 (each k block
 * reloads the C tile; the first starts from 0, see codegen.c), so K is blocked only for wide
 * B (N = 1024: KC = 256, where B's rows, 4 KB apart, are software-prefetched as hardware
 * prefetchers stop at pages); MB keeps the A block (MB x KC) in a quarter of L2 and gives
 * loop 0 several iterations for threads.
 */
#include "vox/loop.h"

void vox_nest_matmul(struct vox_nest *nest, int64_t M, int64_t N, int64_t K, int64_t ldc,
                     int64_t lda, int64_t ldb)
{
    vox_nest_init(nest);
    int m = vox_nest_dim_add(nest, "m", M), n = vox_nest_dim_add(nest, "n", N),
        k = vox_nest_dim_add(nest, "k", K);
    if (m < 0 || n < 0 || k < 0)
        return; /* a size out of range: left without loops, validation names it */
    vox_nest_loop_add(nest, m, 1);
    vox_nest_loop_add(nest, n, 1);
    vox_nest_loop_add(nest, k, 1);
    nest->strides[VOX_NEST_C][m] = ldc;
    nest->strides[VOX_NEST_C][n] = 1;
    nest->strides[VOX_NEST_A][m] = lda;
    nest->strides[VOX_NEST_A][k] = 1;
    nest->strides[VOX_NEST_B][k] = ldb;
    nest->strides[VOX_NEST_B][n] = 1;
}

/* Finds n (C and B stride 1), m (output, B stride 0), k (the one reduction). */
static bool matmul_dims(const struct vox_nest *nest, int *m, int *n, int *k)
{
    *m = *n = *k = -1;
    for (int d = 0; d < nest->ndims; d++) {
        const int64_t c = nest->strides[VOX_NEST_C][d], b = nest->strides[VOX_NEST_B][d];
        if (c == 0)
            *k = *k < 0 ? d : nest->ndims;
        else if (c == 1 && b == 1)
            *n = d;
        else if (b == 0)
            *m = d;
    }
    return nest->ndims == 3 && *m >= 0 && *n >= 0 && *k >= 0 && *k < nest->ndims;
}

static int64_t clamp64(int64_t x, int64_t lo, int64_t hi)
{
    return x < lo ? lo : x > hi ? hi : x;
}

enum vox_status vox_nest_schedule_default(struct vox_ctx *ctx, struct vox_nest *nest,
                                          int tile_rows, int tile_vecs, int64_t kc)
{
    enum vox_status s = vox_nest_validate(ctx, nest);
    if (s)
        return s;
    int m, n, k;
    if (!matmul_dims(nest, &m, &n, &k))
        return VOX_OK;
    const struct vox_cpu *cpu = vox_ctx_cpu(ctx);
    int lanes = cpu->isa == VOX_ISA_AVX512 ? 16 : 8;
    int mr = tile_rows > 0 ? tile_rows : 6;
    int nv = tile_vecs > 0 ? tile_vecs : cpu->isa == VOX_ISA_AVX512 ? 3 : 2;
    int64_t M = nest->dims[m].size, N = nest->dims[n].size, K = nest->dims[k].size;
    int64_t nr = clamp64((int64_t)nv * lanes, 1, (N + lanes - 1) / lanes * lanes);
    int64_t l2 = cpu->l2_bytes > 0 ? cpu->l2_bytes : 1 << 20;
    if (kc <= 0) /* the B panel (kc x N) in half of L2, the micro-panel (kc x nr) in a quarter */
        kc = clamp64(l2 / 2 / (clamp64(N, nr, 1 << 20) * 4), 256, l2 / 4 / (nr * 4));
    int64_t nblk = (K + kc - 1) / kc;
    kc = (K + nblk - 1) / nblk;
    int64_t mb = clamp64(l2 / 4 / (kc * 4) / mr * mr, mr, 1 << 20);
    mb = clamp64(mb, mr, 8 * mr);
    nest->norder = 0;
    if (mb < M)
        vox_nest_loop_add(nest, m, mb);
    if (kc < K)
        vox_nest_loop_add(nest, k, kc);
    if (nr < N)
        vox_nest_loop_add(nest, n, nr);
    if (mr < M && mr < mb)
        vox_nest_loop_add(nest, m, mr);
    vox_nest_loop_add(nest, k, 1);
    vox_nest_loop_add(nest, m, 1);
    vox_nest_loop_add(nest, n, 1);
    return vox_nest_validate(ctx, nest);
}

enum vox_status vox_matmul(struct vox_ctx *ctx, int64_t M, int64_t N, int64_t K, float *C,
                           int64_t ldc, const float *A, int64_t lda, const float *B,
                           int64_t ldb, bool accumulate)
{
    if (ldc < N || lda < K || ldb < N)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "matmul: leading dimensions ldc %lld, lda %lld, ldb %lld must be >= "
                        "N %lld, K %lld, N %lld",
                        (long long)ldc, (long long)lda, (long long)ldb, (long long)N,
                        (long long)K, (long long)N);
    struct vox_nest nest;
    vox_nest_matmul(&nest, M, N, K, ldc, lda, ldb);
    nest.accumulate = accumulate;
    enum vox_status s = vox_nest_schedule_default(ctx, &nest, 0, 0, 0);
    if (s)
        return s;
    struct vox_kernel *k;
    if ((s = vox_nest_compile(ctx, &nest, NULL, &k)))
        return s;
    vox_kernel_run(k, C, A, B, NULL);
    vox_kernel_destroy(k);
    return VOX_OK;
}
