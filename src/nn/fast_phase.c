/*
 * nn/fast_phase.c: the phase view of a dilated conv (struct vox_nn_phase), the training
 * graph's way to run dilated and two-plane kernels by Winograd (fast_train.c, phase_conv).
 *
 * A conv of dilation d along y reads, for output y, inputs y, y + d, y + 2d: outputs of one
 * residue r = y mod d meet only inputs of the same residue. So the input's residue classes
 * (ry, rx), each a plane of every d-th row and column, are dense convs of their own with the
 * same kernel undilated; and a kernel's z taps, where they are folded, become channels: the
 * copy for tap j holds the input shifted by j dz planes, so the kernel left is one plane deep.
 * The sub-tensor stacks the phases along z (phase r's planes at r Zs .. r Zs + Zs - 1): a
 * kernel one plane deep never mixes planes, so the phases run as one conv of P Zs planes.
 *
 *   gather:  sub[n, j C + c, r Zs + z, y', x'] = full[n, c, z + j dz - pz, ry + dy y', rx + dx x']
 *            (0 outside full)
 *   scatter: its adjoint: full[n, c, z, y, x] (+)= sum over j (ascending) of the sub values
 *            gathered from there (those inside sub)
 *
 * Both are copies over planes of the destination on the pool, each written by one thread
 * (sums in a fixed order: the same bits for any thread count).
 */
#include "fast.h"

#include <string.h>
#include <xmmintrin.h> /* SSE, the baseline: these copies are bound by memory, not lanes */

/* d[rx][x] = s[rx + dx x] for x < m (0 where rx + dx x >= n), rx < dx: one row dealt to its
 * phases. Groups of 4 x by 4 x 4 transposes where dx is a multiple of 4, pairs of vectors
 * split where it is 2. */
static void deal_row(const float *s, int64_t n, int64_t dx, float *const *d, int64_t m)
{
    int64_t x = 0;
    const int64_t whole = n / dx < m ? n / dx : m; /* x whose every phase is inside the row */
    if (dx % 4 == 0)
        for (; x + 4 <= whole; x += 4)
            for (int64_t c = 0; c < dx; c += 4) {
                __m128 r0 = _mm_loadu_ps(s + x * dx + c), r1 = _mm_loadu_ps(s + (x + 1) * dx + c);
                __m128 r2 = _mm_loadu_ps(s + (x + 2) * dx + c);
                __m128 r3 = _mm_loadu_ps(s + (x + 3) * dx + c);
                _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
                _mm_storeu_ps(d[c] + x, r0);
                _mm_storeu_ps(d[c + 1] + x, r1);
                _mm_storeu_ps(d[c + 2] + x, r2);
                _mm_storeu_ps(d[c + 3] + x, r3);
            }
    else if (dx == 2)
        for (; x + 4 <= whole; x += 4) {
            __m128 a = _mm_loadu_ps(s + 2 * x), b = _mm_loadu_ps(s + 2 * x + 4);
            _mm_storeu_ps(d[0] + x, _mm_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)));
            _mm_storeu_ps(d[1] + x, _mm_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
        }
    for (int64_t rx = 0; rx < dx; rx++)
        for (int64_t k = x; k < m; k++)
            d[rx][k] = rx + dx * k < n ? s[rx + dx * k] : 0.0f;
}

/* The reverse: q[rx + dx x] = (or += with `add`) d[rx][x] for rx + dx x < n. */
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
    for (int64_t k = x * dx; k < n; k++)
        q[k] = add ? q[k] + d[k % dx][k / dx] : d[k % dx][k / dx];
}

struct phase_job {
    const struct vox_nn_phase *ph;
    const float *src;
    float *dst;
    bool add;
};

/* Sub-planes: index (n, j C + c, z); each reads one plane of full (in the caches while its
 * P phases are cut from it). Source rows are read whole and dealt to the phases. */
static void gather_planes(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    const struct phase_job *jb = arg;
    const struct vox_nn_phase *ph = jb->ph;
    const int64_t *F = ph->full, *S = ph->sub, dy = ph->d[0], dx = ph->d[1];
    const int64_t P = dy * dx, step = S[0] * S[1] * S[2], FC = ph->fold * ph->c;
    for (int64_t u = lo[0]; u < hi[0]; u++) {
        const int64_t z = u % S[0], ch = (u / S[0]) % FC, n = u / (S[0] * FC);
        const int64_t j = ch / ph->c, c = ch % ph->c, zf = z + j * ph->dz - ph->pz;
        float *base = jb->dst + (n * FC + ch) * P * step + z * S[1] * S[2];
        if (zf < 0 || zf >= F[0]) {
            for (int64_t r = 0; r < P; r++)
                memset(base + r * step, 0, (size_t)(S[1] * S[2]) * sizeof(float));
            continue;
        }
        const float *plane = jb->src + ((n * ph->c + c) * F[0] + zf) * F[1] * F[2];
        float *d[64];
        for (int64_t ry = 0; ry < dy; ry++)
            for (int64_t ys = 0; ys < S[1]; ys++) {
                const int64_t yf = ry + dy * ys;
                for (int64_t rx = 0; rx < dx; rx++)
                    d[rx] = base + (ry * dx + rx) * step + ys * S[2];
                if (yf < F[1])
                    deal_row(plane + yf * F[2], F[2], dx, d, S[2]);
                else
                    for (int64_t rx = 0; rx < dx; rx++)
                        memset(d[rx], 0, (size_t)S[2] * sizeof(float));
            }
    }
}

/* Planes of full: index (n, c, z); rows written phase by phase (every x of a row is in
 * exactly one phase: sub's extents are full's divided by d, rounded up). */
static void scatter_planes(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    const struct phase_job *jb = arg;
    const struct vox_nn_phase *ph = jb->ph;
    const int64_t *F = ph->full, *S = ph->sub, dy = ph->d[0], dx = ph->d[1];
    const int64_t P = dy * dx, step = S[0] * S[1] * S[2];
    for (int64_t u = lo[0]; u < hi[0]; u++) {
        const int64_t z = u % F[0], c = (u / F[0]) % ph->c, n = u / (F[0] * ph->c);
        float *plane = jb->dst + u * F[1] * F[2];
        bool first = !jb->add;
        for (int64_t j = 0; j < ph->fold; j++) {
            const int64_t zs = z - j * ph->dz + ph->pz;
            if (zs < 0 || zs >= S[0])
                continue;
            const float *base =
                jb->src + ((n * ph->fold + j) * ph->c + c) * P * step + zs * S[1] * S[2];
            const float *d[64];
            for (int64_t y = 0; y < F[1]; y++) {
                const int64_t ry = y % dy, ys = y / dy;
                for (int64_t rx = 0; rx < dx; rx++)
                    d[rx] = base + (ry * dx + rx) * step + ys * S[2];
                merge_row(plane + y * F[2], F[2], dx, d, !first);
            }
            first = false;
        }
        if (first) /* no tap reaches this plane: its gradient is 0 */
            memset(plane, 0, (size_t)(F[1] * F[2]) * sizeof *plane);
    }
}

void vox_nn_phase_gather(struct vox_pool *pool, const struct vox_nn_phase *ph, const float *full,
                         float *sub)
{
    struct phase_job jb = {ph, full, sub, false};
    const int64_t units[3] = {ph->n * ph->fold * ph->c * ph->sub[0], 1, 1}, tile[3] = {1, 1, 1};
    vox_pool_for(pool, units, tile, VOX_SCHED_STATIC, gather_planes, &jb);
}

void vox_nn_phase_scatter(struct vox_pool *pool, const struct vox_nn_phase *ph, const float *sub,
                          float *full, bool add)
{
    struct phase_job jb = {ph, sub, full, add};
    const int64_t units[3] = {ph->n * ph->c * ph->full[0], 1, 1}, tile[3] = {1, 1, 1};
    vox_pool_for(pool, units, tile, VOX_SCHED_STATIC, scatter_planes, &jb);
}
