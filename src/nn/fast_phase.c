/*
 * nn/fast_phase.c: the phase view of a dilated conv (struct vox_nn_phase), the training
 * graph's way to run dilated and two-plane kernels by Winograd (fast_train.c, phase_conv).
 *
 * A conv of dilation d along y reads, for output y, inputs y, y + d, y + 2d: outputs of one
 * residue r = y mod d meet only inputs of the same residue. So the input's residue classes
 * (ry, rx), each a plane of every d-th row and column, are dense convs of their own with the
 * same kernel undilated; and a kernel's z taps, where they are folded, become channels: the
 * copy for tap j holds the input shifted by j dz planes, so the kernel left is one plane deep.
 * The view stacks the phases along z, each plane's P phases side by side (plane z P + r is
 * phase r of plane z): a kernel one plane deep never mixes planes, so the phases run as one
 * conv of Zs P planes, and a band of consecutive planes cuts its phases from the same input
 * planes.
 *
 *   pack:    view[n, j C + c, z P + r, y', x'] = full[n, c, z + j dz - pz, ry + dy y', rx + dx x']
 *            (0 outside full), straight into a Winograd band's blocked layout (the view is
 *            never written out whole)
 *   scatter: the adjoint, from a view in memory: full[n, c, z, y, x] (+)= the sum over j
 *            (ascending) of the view's values packed from there
 *
 * Both run on the pool, each output row written by one thread (sums in a fixed order: the
 * same bits for any thread count).
 */
#include "fast.h"

#include <string.h>
#include <xmmintrin.h> /* SSE, the baseline: these copies are bound by memory, not lanes */

/* q[rx + dx x] = (or += with `add`) d[rx][x] for rx + dx x < n, rx < dx: a row merged from
 * its phases. Groups of 4 x by 4 x 4 transposes where dx is a multiple of 4, pairs of vectors
 * interleaved where it is 2. */
static void merge_row(float *q, int64_t n, int64_t dx, const float *const *d, bool add)
{
    int64_t x = 0;
    const int64_t whole = n / dx;
    if (dx % 4 == 0)
        for (; x + 4 <= whole; x += 4)
            for (int64_t c = 0; c < dx; c += 4) {
                __m128 r0 = _mm_loadu_ps(d[c] + x), r1 = _mm_loadu_ps(d[c + 1] + x);
                __m128 r2 = _mm_loadu_ps(d[c + 2] + x), r3 = _mm_loadu_ps(d[c + 3] + x);
                _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
                float *o = q + x * dx + c;
                if (add) {
                    r0 = _mm_add_ps(_mm_loadu_ps(o), r0);
                    r1 = _mm_add_ps(_mm_loadu_ps(o + dx), r1);
                    r2 = _mm_add_ps(_mm_loadu_ps(o + 2 * dx), r2);
                    r3 = _mm_add_ps(_mm_loadu_ps(o + 3 * dx), r3);
                }
                _mm_storeu_ps(o, r0);
                _mm_storeu_ps(o + dx, r1);
                _mm_storeu_ps(o + 2 * dx, r2);
                _mm_storeu_ps(o + 3 * dx, r3);
            }
    else if (dx == 2)
        for (; x + 4 <= whole; x += 4) {
            __m128 a = _mm_loadu_ps(d[0] + x), b = _mm_loadu_ps(d[1] + x);
            __m128 lo = _mm_unpacklo_ps(a, b), hi = _mm_unpackhi_ps(a, b);
            if (add) {
                lo = _mm_add_ps(_mm_loadu_ps(q + 2 * x), lo);
                hi = _mm_add_ps(_mm_loadu_ps(q + 2 * x + 4), hi);
            }
            _mm_storeu_ps(q + 2 * x, lo);
            _mm_storeu_ps(q + 2 * x + 4, hi);
        }
    for (; x * dx < n; x++) /* the tail, without a division per element */
        for (int64_t rx = 0; rx < dx && rx + dx * x < n; rx++) {
            float *o = q + rx + dx * x;
            *o = add ? *o + d[rx][x] : d[rx][x];
        }
}

/* t[x] = s[x dx] for x < n, s holding `avail` floats: a phase of a row (pairs of vectors
 * split where dx is 2) */
static void cut_row(const float *s, int64_t dx, int64_t n, int64_t avail, float *t)
{
    int64_t x = 0;
    if (dx == 1) {
        memcpy(t, s, (size_t)n * sizeof *t);
        return;
    }
    if (dx == 2)
        for (; x + 4 <= n && 2 * x + 8 <= avail; x += 4) {
            const __m128 a = _mm_loadu_ps(s + 2 * x), b = _mm_loadu_ps(s + 2 * x + 4);
            _mm_storeu_ps(t + x, _mm_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)));
        }
    for (; x < n; x++)
        t[x] = s[x * dx];
}

struct pack_job {
    const struct vox_nn_phase *ph;
    const float *full;
    const struct vox_nn_pack_fns *pk;
    int64_t n, lo[3];
    const struct vox_nn_bt *dst;
};

enum { CHUNK = 128 }; /* x per pass of a row: 16 rows of it on the stack */

/* Rows y [lo0, hi0) of blocks [lo1, hi1) and planes [lo2, hi2) of the box: per row, each
 * lane's channel row of the phase cut from its input row (dx floats apart), then the blocked
 * layout's register transposes. */
static void pack_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    const struct pack_job *jb = arg;
    const struct vox_nn_phase *ph = jb->ph;
    const struct vox_nn_bt *o = jb->dst;
    const int64_t *F = ph->full, dy = ph->d[0], dx = ph->d[1], P = dy * dx, L = o->blk;
    const int64_t FC = ph->fold * ph->c, nx = o->s[2];
    float tmp[16][CHUNK];
    const float *rows[16];
    for (int64_t cb = lo[1]; cb < hi[1]; cb++)
        for (int64_t pz = lo[2]; pz < hi[2]; pz++) {
            const int64_t p = jb->lo[0] + pz, z = p / P, ry = p % P / dx, rx = p % P % dx;
            for (int64_t y = lo[0]; y < hi[0]; y++) {
                const int64_t yf = ry + dy * (jb->lo[1] + y);
                float *d = o->data + ((cb * o->s[0] + pz) * o->s[1] + y) * nx * L;
                for (int64_t x0 = 0; x0 < nx; x0 += CHUNK) {
                    const int64_t m = nx - x0 < CHUNK ? nx - x0 : CHUNK;
                    const int64_t xf0 = rx + dx * (jb->lo[2] + x0); /* x0's input column */
                    const int64_t in = xf0 < F[2] ? (F[2] - xf0 + dx - 1) / dx : 0;
                    const int64_t mi = in < m ? in : m;
                    for (int64_t l = 0; l < L; l++) {
                        const int64_t ch = cb * L + l, zf = z + ch / ph->c * ph->dz - ph->pz;
                        rows[l] = NULL; /* zeros */
                        if (ch >= FC || zf < 0 || zf >= F[0] || yf >= F[1])
                            continue;
                        const float *src =
                            jb->full +
                            (((jb->n * ph->c + ch % ph->c) * F[0] + zf) * F[1] + yf) * F[2] + xf0;
                        cut_row(src, dx, mi, F[2] - xf0, tmp[l]);
                        for (int64_t x = mi; x < m; x++)
                            tmp[l][x] = 0.0f;
                        rows[l] = tmp[l];
                    }
                    jb->pk->pack(rows, d + x0 * L, m);
                }
            }
        }
}

struct scatter_job {
    const struct vox_nn_phase *ph;
    const float *src;
    float *dst;
    bool add;
};

/* Planes of full: index (n, c, z); rows merged from their phases (every x of a row is in
 * exactly one phase: the view's extents are full's divided by d, rounded up, or more). */
static void scatter_planes(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    const struct scatter_job *jb = arg;
    const struct vox_nn_phase *ph = jb->ph;
    const int64_t *F = ph->full, *S = ph->sub, dy = ph->d[0], dx = ph->d[1], P = dy * dx;
    for (int64_t u = lo[0]; u < hi[0]; u++) {
        const int64_t z = u % F[0], c = (u / F[0]) % ph->c, n = u / (F[0] * ph->c);
        float *plane = jb->dst + u * F[1] * F[2];
        bool first = !jb->add;
        for (int64_t j = 0; j < ph->fold; j++) {
            const int64_t zs = z - j * ph->dz + ph->pz;
            if (zs < 0 || zs >= S[0])
                continue;
            /* phase r of plane zs: view plane zs P + r */
            const float *base =
                jb->src + (((n * ph->fold + j) * ph->c + c) * S[0] + zs) * P * S[1] * S[2];
            const float *d[64];
            for (int64_t y = 0; y < F[1]; y++) {
                const int64_t ry = y % dy, ys = y / dy;
                for (int64_t rx = 0; rx < dx; rx++)
                    d[rx] = base + ((ry * dx + rx) * S[1] + ys) * S[2];
                merge_row(plane + y * F[2], F[2], dx, d, !first);
            }
            first = false;
        }
        if (first) /* no tap reaches this plane: its gradient is 0 */
            memset(plane, 0, (size_t)(F[1] * F[2]) * sizeof *plane);
    }
}

void vox_nn_phase_pack(struct vox_pool *pool, int isa, const struct vox_nn_phase *ph,
                       const float *full, int64_t n, const int64_t lo[3], const int64_t hi[3],
                       struct vox_nn_bt *dst)
{
    struct pack_job jb = {ph, full, vox_nn_pack_fns_for(isa), n, {lo[0], lo[1], lo[2]}, dst};
    for (int a = 0; a < 3; a++)
        dst->s[a] = hi[a] - lo[a];
    if (dst->s[0] <= 0 || dst->s[1] <= 0 || dst->s[2] <= 0)
        return;
    /* vox_nn_bt_pack's schedule: rows over the threads, affine (a thread packs the rows whose
     * tiles it runs) */
    const int64_t ny = dst->s[1], per = ny / (4 * vox_pool_threads(pool));
    const int64_t cnt[3] = {ny, vox_nn_bt_blocks(dst), dst->s[0]},
                  tile[3] = {per > 1 ? per : 1, 0, 0};
    vox_pool_for(pool, cnt, tile, VOX_SCHED_AFFINE, pack_task, &jb);
}

void vox_nn_phase_scatter(struct vox_pool *pool, const struct vox_nn_phase *ph, const float *sub,
                          float *full, bool add)
{
    struct scatter_job jb = {ph, sub, full, add};
    const int64_t units[3] = {ph->n * ph->c * ph->full[0], 1, 1}, tile[3] = {1, 1, 1};
    vox_pool_for(pool, units, tile, VOX_SCHED_AFFINE, scatter_planes, &jb);
}
