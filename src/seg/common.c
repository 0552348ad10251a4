/*
 * seg/common.c: parameters, shape checks, radix sort and merge-history storage shared by
 * the segmentation passes.
 */
#include "seg_internal.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static const char *const score_names[VOX_SEG_SCORE_COUNT] = {"mean", "quantile", "max",
                                                             "smoothed"};

const char *vox_seg_score_str(enum vox_seg_score s)
{
    return (unsigned)s < VOX_SEG_SCORE_COUNT ? score_names[s] : "?";
}

void vox_seg_params_defaults(struct vox_seg_params *p)
{
    memset(p, 0, sizeof *p);
    p->low = 3;
    p->high = 252;
    p->nsize = 1;
    p->size[0] = (struct vox_seg_size_point){.aff = 4, .size = 200};
    p->dust = 200;
    p->score = VOX_SEG_SCORE_MEAN;
    p->quantile = 0.5;
    p->smooth_k = 25;
    p->max_threshold = 1.0;
}

enum vox_status vox_seg_params_check(struct vox_ctx *ctx, const struct vox_seg_params *p)
{
    if (!p)
        return vox_fail(ctx, VOX_INVALID_ARG, "segmentation parameters are NULL");
    if (p->low < 0 || p->high > 255 || p->low >= p->high)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "low = %d, high = %d: need 0 <= low < high <= 255 (quantized)", p->low,
                        p->high);
    if (p->nsize < 0 || p->nsize > VOX_SEG_SIZE_POINTS_MAX)
        return vox_fail(ctx, VOX_INVALID_ARG, "size table: %d points, expected 0..%d",
                        p->nsize, VOX_SEG_SIZE_POINTS_MAX);
    for (int i = 0; i < p->nsize; i++) {
        const struct vox_seg_size_point *s = &p->size[i];
        if (s->aff < 0 || s->aff > 255 || s->size < 0 || (i > 0 && s->aff <= s[-1].aff))
            return vox_fail(ctx, VOX_INVALID_ARG,
                            "size table point %d (aff %d, size %lld): affinities must increase "
                            "within 0..255 and sizes be >= 0",
                            i, s->aff, (long long)s->size);
    }
    if (p->dust < 0)
        return vox_fail(ctx, VOX_INVALID_ARG, "dust = %lld, expected >= 0", (long long)p->dust);
    if ((unsigned)p->score >= VOX_SEG_SCORE_COUNT)
        return vox_fail(ctx, VOX_INVALID_ARG, "score = %d is not a vox_seg_score", p->score);
    if (!(p->quantile >= 0.0 && p->quantile <= 1.0))
        return vox_fail(ctx, VOX_INVALID_ARG, "quantile = %g, expected 0..1", p->quantile);
    if (p->smooth_k < 0 || p->smooth_k > (1ll << 40))
        return vox_fail(ctx, VOX_INVALID_ARG, "smooth_k = %lld, expected 0..2^40",
                        (long long)p->smooth_k);
    if (!(p->max_threshold >= 0.0 && p->max_threshold <= 2.0))
        return vox_fail(ctx, VOX_INVALID_ARG, "max_threshold = %g, expected 0..2",
                        p->max_threshold);
    return VOX_OK;
}

static enum vox_status dims_check(struct vox_ctx *ctx, const int64_t *shape, struct seg_dims *d)
{
    d->z = shape[0];
    d->y = shape[1];
    d->x = shape[2];
    if (d->z <= 0 || d->y <= 0 || d->x <= 0)
        return vox_fail(ctx, VOX_INVALID_ARG, "volume shape (%lld, %lld, %lld) is empty",
                        (long long)d->z, (long long)d->y, (long long)d->x);
    if (d->z > UINT32_MAX || d->y > UINT32_MAX || d->x > UINT32_MAX ||
        d->z * d->y > UINT32_MAX || d->z * d->y * d->x >= (int64_t)UINT32_MAX)
        return vox_fail(ctx, VOX_UNSUPPORTED,
                        "volume shape (%lld, %lld, %lld) has 2^32 - 1 voxels or more",
                        (long long)d->z, (long long)d->y, (long long)d->x);
    d->plane = d->y * d->x;
    d->n = d->z * d->plane;
    return VOX_OK;
}

enum vox_status seg_dims_from_q(struct vox_ctx *ctx, const struct vox_tensor *q,
                                struct seg_dims *d)
{
    if (!q || q->dtype != VOX_U8 || q->rank != 4 || q->shape[0] != 3 ||
        !vox_tensor_is_contiguous(q))
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "quantized affinities: expected a contiguous u8 (3, Z, Y, X) tensor");
    return dims_check(ctx, q->shape + 1, d);
}

enum vox_status seg_dims_from_labels(struct vox_ctx *ctx, const struct vox_tensor *labels,
                                     struct seg_dims *d)
{
    if (!labels || labels->dtype != VOX_U32 || labels->rank != 3 ||
        !vox_tensor_is_contiguous(labels))
        return vox_fail(ctx, VOX_INVALID_ARG, "labels: expected a contiguous u32 (Z, Y, X) tensor");
    return dims_check(ctx, labels->shape, d);
}

void seg_radix_sort(struct seg_kv *kv, struct seg_kv *tmp, int64_t n)
{
    if (n < 2)
        return;
    uint64_t all_or = 0, all_and = ~0ull;
    for (int64_t i = 0; i < n; i++) {
        all_or |= kv[i].key;
        all_and &= kv[i].key;
    }
    int64_t count[256];
    struct seg_kv *src = kv, *dst = tmp;
    for (int shift = 0; shift < 64; shift += 8) {
        if ((((all_or ^ all_and) >> shift) & 0xFF) == 0)
            continue; /* this digit is the same in every key */
        memset(count, 0, sizeof count);
        for (int64_t i = 0; i < n; i++)
            count[(src[i].key >> shift) & 0xFF]++;
        int64_t sum = 0;
        for (int64_t r = 0; r < 256; r++) {
            int64_t c = count[r];
            count[r] = sum;
            sum += c;
        }
        for (int64_t i = 0; i < n; i++)
            dst[count[(src[i].key >> shift) & 0xFF]++] = src[i];
        struct seg_kv *t = src;
        src = dst;
        dst = t;
    }
    if (src != kv)
        memcpy(kv, src, (size_t)n * sizeof *kv);
}

enum vox_status seg_history_push(struct vox_ctx *ctx, struct vox_merge_history *h, int64_t a,
                                 int64_t b, int64_t survivor, double score)
{
    if (h->n == h->cap) {
        int64_t cap = h->cap ? 2 * h->cap : 256;
        void *m = vox_realloc(ctx, h->m, (size_t)h->cap * sizeof *h->m,
                              (size_t)cap * sizeof *h->m);
        if (!m)
            return VOX_OUT_OF_MEMORY;
        h->m = m;
        h->cap = cap;
    }
    h->m[h->n++] = (struct vox_seg_merge){.a = a, .b = b, .survivor = survivor, .score = score};
    return VOX_OK;
}

void vox_merge_history_fini(struct vox_ctx *ctx, struct vox_merge_history *h)
{
    if (!h)
        return;
    vox_free(ctx, h->m);
    memset(h, 0, sizeof *h);
}

void seg_release_pages(void *p, size_t bytes)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)p + page - 1) & ~(page - 1);
    uintptr_t hi = ((uintptr_t)p + bytes) & ~(page - 1);
    if (hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_DONTNEED); /* advisory: failure changes nothing */
}
