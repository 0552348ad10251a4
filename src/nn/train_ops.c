/*
 * train_ops.c: the training graph's passes over one channel plane (Z, Y, X) at a time (graph.c
 * runs the planes over the pool): max-pooling and its adjoint, the max-filter and its adjoint.
 *
 * Key idea: the reference layers (ref_ops.c, ref_backward_ops.c) compute a 5-D index per tap
 * and, for the max-filter's adjoint, one window argmax per (input, tap); here each window is a
 * pointer walk (the max-filter's rows four lanes at a time). Max-pooling and the max-filter
 * keep each window's argmax (a tap number, one byte per output) for their adjoints, which then
 * read no input; the max-filter's adjoint gathers per input in the reference's order. Every
 * function makes the same comparisons and the same sums in the same order as its reference
 * twin, so the results are bitwise equal (tests/test_train.c checks it).
 */
#include "internal.h"

#include <float.h>
#include <string.h>
#include <emmintrin.h> /* SSE2, the baseline */

/* The offsets of a window's taps in scan order; their count (at most VOX_NN_POOL_TAPS). */
static int tap_offsets(const int64_t w[3], const int64_t st[3], int64_t off[VOX_NN_POOL_TAPS])
{
    int t = 0;
    for (int64_t a = 0; a < w[0]; a++)
        for (int64_t b = 0; b < w[1]; b++)
            for (int64_t d = 0; d < w[2]; d++)
                off[t++] = a * st[0] + b * st[1] + d * st[2];
    return t;
}

typedef float tv4 __attribute__((vector_size(16)));
typedef int32_t tm4 __attribute__((vector_size(16)));

/* The outputs of one row of a window 2 wide along x, 4 at a time (returns how many: the rest
 * go the scalar way): the taps in scan order (x the fastest), each compared as the scalar loop
 * does (strictly greater replaces), so the same maxima and argmax taps; even and odd input
 * columns are split by a shuffle. Max-pooling was 5.5 % of an n337 training step, 4 % so. */
static int64_t maxpool_row_x2(const float *p, const int64_t *off, int taps, int64_t n, float *o,
                              uint8_t *arg)
{
    const tm4 even = {0, 2, 4, 6}, odd = {1, 3, 5, 7};
    int64_t x = 0;
    for (; x + 4 <= n; x += 4) {
        tv4 m = (tv4){0} - FLT_MAX;
        tm4 at = {0};
        for (int t = 0; t < taps; t += 2) { /* taps t, t + 1: x offsets 0 and 1 */
            tv4 lo, hi;
            memcpy(&lo, p + off[t] + 2 * x, sizeof lo);
            memcpy(&hi, p + off[t] + 2 * x + 4, sizeof hi);
            const tv4 v[2] = {__builtin_shuffle(lo, hi, even), __builtin_shuffle(lo, hi, odd)};
            for (int d = 0; d < 2; d++) {
                const tm4 gt = v[d] > m;
                m = (tv4)(((tm4)v[d] & gt) | ((tm4)m & ~gt));
                at = ((t + d) & gt) | (at & ~gt);
            }
        }
        memcpy(o + x, &m, sizeof m);
        for (int k = 0; k < 4; k++)
            arg[x + k] = (uint8_t)at[k];
    }
    return x;
}

void vox_nn_plane_maxpool(const struct vox_tensor *in, const int64_t w[3], struct vox_tensor *out,
                          uint8_t *arg)
{
    const int64_t *is = in->shape + 2, *os = out->shape + 2;
    const int64_t st[3] = {is[1] * is[2], is[2], 1};
    int64_t off[VOX_NN_POOL_TAPS];
    const int taps = tap_offsets(w, st, off);
    const float *ip = in->data;
    float *op = out->data;
    for (int64_t z = 0; z < os[0]; z++)
        for (int64_t y = 0; y < os[1]; y++) {
            const int64_t row = (z * os[1] + y) * os[2];
            const float *p0 = ip + z * w[0] * st[0] + y * w[1] * st[1];
            int64_t x0 = w[2] == 2 ? maxpool_row_x2(p0, off, taps, os[2], op + row, arg + row) : 0;
            for (int64_t x = x0; x < os[2]; x++) {
                const float *p = p0 + x * w[2];
                float m = -FLT_MAX;
                int at = 0;
                for (int t = 0; t < taps; t++)
                    if (p[off[t]] > m)
                        m = p[off[t]], at = t;
                op[row + x] = m;
                arg[row + x] = (uint8_t)at;
            }
        }
}

void vox_nn_plane_maxpool_backward(const struct vox_tensor *gout, const int64_t w[3],
                                   const uint8_t *arg, struct vox_tensor *gin)
{
    const int64_t *is = gin->shape + 2, *os = gout->shape + 2;
    const int64_t st[3] = {is[1] * is[2], is[2], 1};
    int64_t off[VOX_NN_POOL_TAPS];
    tap_offsets(w, st, off);
    const float *gp = gout->data;
    float *g = gin->data;
    for (int64_t z = 0; z < os[0]; z++)
        for (int64_t y = 0; y < os[1]; y++) {
            const int64_t row = (z * os[1] + y) * os[2];
            for (int64_t x = 0; x < os[2]; x++) {
                int64_t e = z * w[0] * st[0] + y * w[1] * st[1] + x * w[2] + off[arg[row + x]];
                g[e] = (float)((double)g[e] + gp[row + x]);
            }
        }
}

void vox_nn_plane_maxpool_backward_set(const struct vox_tensor *gout, const int64_t w[3],
                                       const uint8_t *arg, struct vox_tensor *gin)
{
    const int64_t *is = gin->shape + 2, *os = gout->shape + 2;
    const int64_t st[3] = {is[1] * is[2], is[2], 1};
    int64_t off[VOX_NN_POOL_TAPS];
    tap_offsets(w, st, off);
    const int taps = (int)(w[0] * w[1] * w[2]);
    const float *gp = gout->data;
    float *g = gin->data;
    /* the parts no window covers (extents not multiples of the window): zeros */
    const int64_t cz = os[0] * w[0], cy = os[1] * w[1], cx = os[2] * w[2];
    for (int64_t z = 0; z < is[0]; z++)
        for (int64_t y = 0; y < is[1]; y++) {
            float *r = g + z * st[0] + y * st[1];
            if (z >= cz || y >= cy)
                memset(r, 0, (size_t)is[2] * sizeof *r);
            else if (cx < is[2])
                memset(r + cx, 0, (size_t)(is[2] - cx) * sizeof *r);
        }
    for (int64_t z = 0; z < os[0]; z++)
        for (int64_t y = 0; y < os[1]; y++) {
            const int64_t row = (z * os[1] + y) * os[2];
            for (int64_t x = 0; x < os[2]; x++) {
                float *b = g + z * w[0] * st[0] + y * w[1] * st[1] + x * w[2];
                for (int t = 0; t < taps; t++)
                    b[off[t]] = 0;
                b[off[arg[row + x]]] = gp[row + x] + 0.0f; /* the add's bits (-0 becomes +0) */
            }
        }
}

/* Four lanes of SSE2 (any x86-64), written with GCC vectors: these passes move memory, so the
 * width matters less than leaving the index arithmetic of the reference behind. */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

/* m = v > m ? v : m lane by lane (the reference's comparison: a NaN never wins, -0 keeps +0) */
static inline v4f max_keep(v4f v, v4f m, v4i *gt)
{
    *gt = v > m;
    return (v4f)((*gt & (v4i)v) | (~*gt & (v4i)m));
}

/* filter_row's outputs four at a time for nt taps at offsets off (nt a constant where the
 * call is inlined: the taps' loop unrolled, with no window loops around it); returns how many
 * outputs it wrote. */
static inline __attribute__((always_inline)) int64_t
filter_taps(const float *ip, const int64_t *off, int nt, int64_t n, float *r, uint8_t *arg)
{
    int64_t x = 0;
    for (; x + 4 <= n; x += 4) {
        v4f m = (v4f){0} - FLT_MAX;
        v4i at = {0}, gt;
        for (int t = 0; t < nt; t++) {
            v4f v;
            memcpy(&v, ip + off[t] + x, sizeof v);
            m = max_keep(v, m, &gt);
            at = (gt & t) | (~gt & at);
        }
        memcpy(r + x, &m, sizeof m);
        if (arg) { /* the four tap numbers (< 256) packed to bytes, one store */
            const __m128i h = _mm_packs_epi32((__m128i)at, (__m128i)at);
            const int32_t b4 = _mm_cvtsi128_si32(_mm_packus_epi16(h, h));
            memcpy(arg + x, &b4, sizeof b4);
        }
    }
    return x;
}

/* Row r (n floats) of the max-filter's output: the taps' input rows maxed in scan order from
 * -FLT_MAX; with `arg`, the winning tap's number per output (0 when none beats -FLT_MAX).
 * off: the taps' offsets (tap_offsets) where the window has at most VOX_NN_POOL_TAPS taps,
 * else NULL (no net has such a window: its rows go the scalar way). VD2D3D's windows of 4
 * and 8 taps get loops of their own. */
static void filter_row(const float *ip, const int64_t st[3], const int64_t w[3], const int64_t *off,
                       int nt, int64_t n, float *r, uint8_t *arg)
{
    int64_t x = 0;
    if (off)
        x = nt == 4   ? filter_taps(ip, off, 4, n, r, arg)
            : nt == 8 ? filter_taps(ip, off, 8, n, r, arg)
                      : filter_taps(ip, off, nt, n, r, arg);
    for (; x < n; x++) {
        float m = -FLT_MAX;
        int t = 0, at = 0;
        for (int64_t a = 0; a < w[0]; a++)
            for (int64_t b = 0; b < w[1]; b++)
                for (int64_t d = 0; d < w[2]; d++, t++) {
                    const float v = ip[a * st[0] + b * st[1] + d * st[2] + x];
                    if (v > m)
                        m = v, at = t;
                }
        r[x] = m;
        if (arg)
            arg[x] = (uint8_t)at;
    }
}

void vox_nn_plane_maxfilter(const struct vox_tensor *in, const int64_t w[3], const int64_t dil[3],
                            struct vox_tensor *out, uint8_t *arg)
{
    const int64_t *is = in->shape + 2, *os = out->shape + 2;
    const int64_t planes = out->shape[0] * out->shape[1], ivol = is[0] * is[1] * is[2];
    const int64_t ovol = os[0] * os[1] * os[2];
    const int64_t st[3] = {dil[0] * is[1] * is[2], dil[1] * is[2], dil[2]};
    int64_t off[VOX_NN_POOL_TAPS];
    const bool few = w[0] * w[1] * w[2] <= VOX_NN_POOL_TAPS;
    const int nt = few ? tap_offsets(w, st, off) : 0;
    for (int64_t pl = 0; pl < planes; pl++)
        for (int64_t z = 0; z < os[0]; z++)
            for (int64_t y = 0; y < os[1]; y++) {
                const int64_t o = pl * ovol + (z * os[1] + y) * os[2];
                filter_row((const float *)in->data + pl * ivol + (z * is[1] + y) * is[2], st, w,
                           few ? off : NULL, nt, os[2], (float *)out->data + o,
                           arg ? arg + o : NULL);
            }
}

typedef double v2d __attribute__((vector_size(16)));
typedef float v2f __attribute__((vector_size(8)));

/* acc[x] += gr[x] where ar[x] == t, four at a time, branch-free (which tap won is data): the
 * four tap bytes compared at once, each byte's mask widened to its float's lane, the float
 * masked to +0.0 where the tap lost (the bits of a double masked after converting), then
 * converted and added: a dozen instructions for four values, where compares and masks built
 * in integer registers took about thirty. */
static void gather_tap(const uint8_t *ar, const float *gr, uint8_t t, int64_t n, double *acc)
{
    const __m128i tt = _mm_set1_epi8((char)t);
    int64_t x = 0;
    for (; x + 4 <= n; x += 4) {
        int32_t a4;
        memcpy(&a4, ar + x, sizeof a4);
        __m128i hit = _mm_cmpeq_epi8(_mm_cvtsi32_si128(a4), tt);
        hit = _mm_unpacklo_epi16(_mm_unpacklo_epi8(hit, hit), _mm_unpacklo_epi8(hit, hit));
        const __m128 f = _mm_and_ps(_mm_loadu_ps(gr + x), _mm_castsi128_ps(hit));
        _mm_storeu_pd(acc + x, _mm_add_pd(_mm_loadu_pd(acc + x), _mm_cvtps_pd(f)));
        _mm_storeu_pd(acc + x + 2,
                      _mm_add_pd(_mm_loadu_pd(acc + x + 2), _mm_cvtps_pd(_mm_movehl_ps(f, f))));
    }
    for (; x < n; x++)
        acc[x] += ar[x] == t ? (double)gr[x] : 0.0;
}

/* g[x] = (float)(g[x] + acc[x]), or with set (float)acc[x]: the same bits as an add into +0.0
 * (acc, a sum from +0.0, is never -0.0) */
static void add_row(const double *acc, int64_t n, bool set, float *g)
{
    int64_t x = 0;
    if (set) {
        for (; x + 2 <= n; x += 2) {
            v2d a;
            memcpy(&a, acc + x, sizeof a);
            const v2f f = __builtin_convertvector(a, v2f);
            memcpy(g + x, &f, sizeof f);
        }
        for (; x < n; x++)
            g[x] = (float)acc[x];
        return;
    }
    for (; x + 2 <= n; x += 2) {
        v2f f;
        v2d a;
        memcpy(&f, g + x, sizeof f);
        memcpy(&a, acc + x, sizeof a);
        f = __builtin_convertvector(__builtin_convertvector(f, v2d) + a, v2f);
        memcpy(g + x, &f, sizeof f);
    }
    for (; x < n; x++)
        g[x] = (float)(g[x] + acc[x]);
}

/* Each input gathers, tap by tap in scan order, the gradients of the outputs q = p - t*d whose
 * winner it was: the reference's sums in its order (a lost tap adds +0.0, which leaves a sum
 * that started at +0.0 unchanged), one row of inputs at a time. */
void vox_nn_plane_maxfilter_backward(const struct vox_tensor *gout, const int64_t w[3],
                                     const int64_t dil[3], const uint8_t *arg, double *acc,
                                     bool set, const struct vox_nn_row_slope *slope,
                                     struct vox_tensor *gin)
{
    const int64_t *is = gin->shape + 2, *os = gout->shape + 2;
    const int64_t planes = gout->shape[0] * gout->shape[1], ivol = is[0] * is[1] * is[2];
    const int64_t ovol = os[0] * os[1] * os[2];
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *gp = (const float *)gout->data + pl * ovol;
        const uint8_t *ap = arg + pl * ovol;
        float *g = (float *)gin->data + pl * ivol;
        for (int64_t z = 0; z < is[0]; z++)
            for (int64_t y = 0; y < is[1]; y++) {
                memset(acc, 0, (size_t)is[2] * sizeof *acc);
                int t = 0;
                for (int64_t a = 0; a < w[0]; a++)
                    for (int64_t b = 0; b < w[1]; b++)
                        for (int64_t d = 0; d < w[2]; d++, t++) {
                            const int64_t qz = z - a * dil[0], qy = y - b * dil[1], sx = d * dil[2];
                            if (qz < 0 || qy < 0 || qz >= os[0] || qy >= os[1] || sx >= is[2])
                                continue;
                            const int64_t q = (qz * os[1] + qy) * os[2];
                            const int64_t n = sx + os[2] < is[2] ? os[2] : is[2] - sx;
                            gather_tap(ap + q, gp + q, (uint8_t)t, n, acc + sx);
                        }
                const int64_t r = (z * is[1] + y) * is[2];
                add_row(acc, is[2], set, g + r);
                if (slope)
                    slope->fn(slope->self, slope->act, slope->y + pl * ivol + r, g + r, g + r,
                              is[2]);
            }
    }
}
