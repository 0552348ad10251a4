/*
 * seg/input.c: affinities into the quantized domain.
 *
 * Every later step compares integers, so a float affinity a is quantized once:
 * q = floor(255 a + 0.5), computed in double. For a = k / 255.0f (k = 0..255) this gives k
 * exactly (the float's relative error, 2^-24, moves 255 a by far less than 0.5), so u8 input
 * and its float twin give bitwise identical segmentations. NaN and values outside
 * [-QUANT_TOL, 1 + QUANT_TOL] are rejected, naming the first bad index in C order; values in
 * the tolerance band are clamped. A boundary map becomes affinities through
 * q(u, v) = 255 - max(p_u, p_v) (or min(p_u, p_v) for an inside map), exact in integers.
 * Rows are quantized in parallel; each worker keeps the first bad index it saw and the
 * smallest one is reported, so the message does not depend on the thread count.
 */
#include "seg_internal.h"

#define QUANT_TOL 1e-6

struct quant_job {
    const struct vox_tensor *src; /* rank 3 (one channel) or 4 */
    const struct vox_tensor *dst; /* u8, the same shape, rows along x contiguous */
    int64_t rows, x;              /* rows = product of all but the last axis */
    int64_t *bad;                 /* per worker: first bad linear index, INT64_MAX if none */
};

/* The address of row r (C order over all axes but the last) of t. */
static const uint8_t *row_ptr(const struct vox_tensor *t, int64_t r)
{
    int64_t off = 0;
    for (int a = t->rank - 2; a >= 0; a--) {
        off += (r % t->shape[a]) * t->strides[a];
        r /= t->shape[a];
    }
    return (const uint8_t *)t->data + off * (int64_t)vox_dtype_size(t->dtype);
}

/* floor(255 a + 0.5) as a truncation: for every accepted a the sum is above 0.49. */
static inline int quantize_one(float a, bool *ok)
{
    if (!(a >= -QUANT_TOL && a <= 1.0 + QUANT_TOL)) { /* NaN fails both */
        *ok = false;
        return 0;
    }
    int q = (int)((double)a * 255.0 + 0.5);
    return q > 255 ? 255 : q;
}

static void quant_rows(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct quant_job *j = arg;
    int64_t xs = j->src->strides[j->src->rank - 1];
    for (int64_t r = lo[0]; r < hi[0]; r++) {
        const uint8_t *s = row_ptr(j->src, r);
        uint8_t *d = (uint8_t *)row_ptr(j->dst, r);
        if (j->src->dtype == VOX_U8) {
            for (int64_t i = 0; i < j->x; i++)
                d[i] = s[i * xs];
            continue;
        }
        const float *f = (const float *)(const void *)s;
        bool ok = true;
        for (int64_t i = 0; i < j->x; i++) {
            d[i] = (uint8_t)quantize_one(f[i * xs], &ok);
            if (!ok) {
                if (r * j->x + i < j->bad[tid])
                    j->bad[tid] = r * j->x + i;
                return; /* later rows of this worker have larger indices */
            }
        }
    }
}

/* Quantizes src (rank 3 or 4, u8 or f32) into dst (u8, the same shape, x contiguous); names
 * the first bad value by its index plus origin (NULL: none). */
static enum vox_status quantize_into(struct vox_ctx *ctx, const struct vox_tensor *src,
                                     const struct vox_tensor *dst, const int64_t *origin,
                                     const char *what)
{
    int threads = vox_ctx_threads(ctx);
    int64_t *bad = vox_alloc(ctx, (size_t)threads * sizeof *bad);
    if (!bad)
        return VOX_OUT_OF_MEMORY;
    for (int t = 0; t < threads; t++)
        bad[t] = INT64_MAX;
    struct quant_job j = {.src = src, .dst = dst, .x = src->shape[src->rank - 1], .bad = bad};
    j.rows = vox_tensor_numel(src) / j.x;
    vox_pool_for(vox_ctx_pool(ctx), (int64_t[3]){j.rows, 1, 1}, (int64_t[3]){64, 1, 1},
                 VOX_SCHED_STATIC, quant_rows, &j);
    int64_t first = INT64_MAX;
    for (int t = 0; t < threads; t++)
        first = bad[t] < first ? bad[t] : first;
    vox_free(ctx, bad);
    if (first == INT64_MAX)
        return VOX_OK;
    int64_t idx[4], r = first;
    for (int a = src->rank - 1; a >= 0; a--) {
        idx[a] = r % src->shape[a];
        r /= src->shape[a];
    }
    float v = *(const float *)vox_tensor_at(src, idx);
    for (int a = 0; origin && a < src->rank; a++)
        idx[a] += origin[a];
    if (src->rank == 4)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "%s[%lld, %lld, %lld, %lld] = %g: expected a value in [0, 1]", what,
                        (long long)idx[0], (long long)idx[1], (long long)idx[2],
                        (long long)idx[3], (double)v);
    return vox_fail(ctx, VOX_INVALID_ARG, "%s[%lld, %lld, %lld] = %g: expected a value in [0, 1]",
                    what, (long long)idx[0], (long long)idx[1], (long long)idx[2], (double)v);
}

static enum vox_status check_input(struct vox_ctx *ctx, const struct vox_tensor *t, int rank,
                                   const char *what)
{
    if (!t || !t->data)
        return vox_fail(ctx, VOX_INVALID_ARG, "%s: no tensor", what);
    if (t->dtype != VOX_U8 && t->dtype != VOX_F32)
        return vox_fail(ctx, VOX_UNSUPPORTED, "%s: dtype %s, expected u8 or f32", what,
                        vox_dtype_str(t->dtype));
    if (t->rank != rank)
        return vox_fail(ctx, VOX_INVALID_ARG, "%s: rank %d, expected %s", what, t->rank,
                        rank == 4 ? "4 (3, Z, Y, X)" : "3 (Z, Y, X)");
    if (rank == 4 && t->shape[0] != 3)
        return vox_fail(ctx, VOX_INVALID_ARG, "%s: %lld channels, expected 3 (z, y, x)", what,
                        (long long)t->shape[0]);
    struct seg_dims d;
    return seg_dims_from_labels(ctx, &(struct vox_tensor){.dtype = VOX_U32, .rank = 3,
                                                          .shape = {t->shape[rank - 3],
                                                                    t->shape[rank - 2],
                                                                    t->shape[rank - 1]},
                                                          .strides = {t->shape[rank - 2] *
                                                                          t->shape[rank - 1],
                                                                      t->shape[rank - 1], 1}},
                                &d);
}

enum vox_status vox_seg_quantize(struct vox_ctx *ctx, const struct vox_tensor *aff,
                                 struct vox_tensor *q_out)
{
    enum vox_status s = check_input(ctx, aff, 4, "affinities");
    if (s != VOX_OK)
        return s;
    struct vox_tensor q = {0};
    s = vox_tensor_alloc(ctx, &q, VOX_U8, 4, aff->shape);
    if (s == VOX_OK)
        s = quantize_into(ctx, aff, &q, NULL, "affinities");
    if (s != VOX_OK) {
        vox_tensor_free(ctx, &q);
        return s;
    }
    *q_out = q;
    return VOX_OK;
}

enum vox_status vox_seg_quantize_box(struct vox_ctx *ctx, const struct vox_tensor *aff,
                                     const int64_t origin[4], struct vox_tensor *q)
{
    if (!aff || !aff->data || aff->rank != 4 || (aff->dtype != VOX_U8 && aff->dtype != VOX_F32))
        return vox_fail(ctx, VOX_INVALID_ARG, "affinities: expected a u8 or f32 rank-4 box");
    if (!q || !q->data || q->dtype != VOX_U8 || q->rank != 4 || q->strides[3] != 1)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "quantized box: expected a u8 rank-4 tensor with "
                        "contiguous rows");
    for (int a = 0; a < 4; a++)
        if (q->shape[a] != aff->shape[a])
            return vox_fail(ctx, VOX_INVALID_ARG,
                            "quantized box: shape differs from the "
                            "affinities' on axis %d (%lld, %lld)",
                            a, (long long)q->shape[a], (long long)aff->shape[a]);
    return quantize_into(ctx, aff, q, origin, "affinities");
}

struct boundary_job {
    const uint8_t *p;
    uint8_t *q;
    struct seg_dims d;
    bool inside;
};

static void boundary_rows(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct boundary_job *j = arg;
    const int64_t step[3] = {j->d.plane, j->d.x, 1};
    for (int64_t r = lo[0]; r < hi[0]; r++) {
        int64_t z = r / j->d.y, y = r % j->d.y, v0 = r * j->d.x;
        const bool first[3] = {z == 0, y == 0, false};
        for (int c = 0; c < 3; c++) {
            uint8_t *q = j->q + c * j->d.n + v0;
            const uint8_t *p = j->p + v0, *pn = p - step[c];
            int64_t x0 = c == 2 ? 1 : first[c] ? j->d.x : 0;
            for (int64_t x = 0; x < x0 && x < j->d.x; x++)
                q[x] = 0; /* links to nothing */
            for (int64_t x = x0; x < j->d.x; x++) {
                int big = p[x] > pn[x] ? p[x] : pn[x], small = p[x] < pn[x] ? p[x] : pn[x];
                q[x] = (uint8_t)(j->inside ? small : 255 - big);
            }
        }
    }
}

enum vox_status vox_seg_boundary_to_aff(struct vox_ctx *ctx, const struct vox_tensor *p,
                                        bool inside, struct vox_tensor *q_out)
{
    enum vox_status s = check_input(ctx, p, 3, "boundary map");
    if (s != VOX_OK)
        return s;
    struct vox_tensor q = {0};
    uint8_t *pq = NULL;
    int64_t shape[4] = {3, p->shape[0], p->shape[1], p->shape[2]};
    s = vox_tensor_alloc(ctx, &q, VOX_U8, 4, shape);
    if (s != VOX_OK)
        goto fail;
    struct boundary_job j = {.q = q.data, .inside = inside};
    s = seg_dims_from_q(ctx, &q, &j.d);
    if (s != VOX_OK)
        goto fail;
    pq = vox_alloc(ctx, (size_t)j.d.n);
    if (!pq) {
        s = VOX_OUT_OF_MEMORY;
        goto fail;
    }
    s = quantize_into(ctx, p,
                      &(struct vox_tensor){.dtype = VOX_U8,
                                           .rank = 3,
                                           .shape = {j.d.z, j.d.y, j.d.x},
                                           .strides = {j.d.plane, j.d.x, 1},
                                           .data = pq},
                      NULL, "boundary map");
    if (s != VOX_OK)
        goto fail;
    j.p = pq;
    vox_pool_for(vox_ctx_pool(ctx), (int64_t[3]){j.d.z * j.d.y, 1, 1}, (int64_t[3]){64, 1, 1},
                 VOX_SCHED_STATIC, boundary_rows, &j);
    vox_free(ctx, pq);
    *q_out = q;
    return VOX_OK;
fail:
    vox_free(ctx, pq);
    vox_tensor_free(ctx, &q);
    return s;
}
