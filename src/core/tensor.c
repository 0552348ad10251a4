/*
 * tensor.c: strided arrays of up to 6 dimensions, their views, copies and the blocked
 * channel layout used by the ConvNet kernels.
 *
 * A tensor is (dtype, rank, shape, strides in elements, data). It owns its memory when
 * `base` is set; views share data and never free it. The blocked layout
 * (N, C/b, Z, Y, X, b) puts b consecutive channels in one vector so a kernel loads a whole
 * channel block with one instruction; the channel tail is padded with zeros.
 */
#include "vox/core.h"

#include <string.h>

static const struct {
    const char *name;
    const char *alias;
    size_t size;
} dtypes[VOX_DTYPE_COUNT] = {
    [VOX_U8] = {"u8", "uint8", 1},     [VOX_U16] = {"u16", "uint16", 2},
    [VOX_U32] = {"u32", "uint32", 4},  [VOX_U64] = {"u64", "uint64", 8},
    [VOX_I32] = {"i32", "int32", 4},   [VOX_F32] = {"f32", "float32", 4},
};

size_t vox_dtype_size(enum vox_dtype t)
{
    return (unsigned)t < VOX_DTYPE_COUNT ? dtypes[t].size : 0;
}

const char *vox_dtype_str(enum vox_dtype t)
{
    return (unsigned)t < VOX_DTYPE_COUNT ? dtypes[t].name : "unknown";
}

bool vox_dtype_parse(const char *s, enum vox_dtype *out)
{
    for (int i = 0; i < VOX_DTYPE_COUNT; i++) {
        if (strcmp(s, dtypes[i].name) == 0 || strcmp(s, dtypes[i].alias) == 0) {
            *out = (enum vox_dtype)i;
            return true;
        }
    }
    return false;
}

static enum vox_status check_shape(struct vox_ctx *ctx, enum vox_dtype dtype, int rank,
                                   const int64_t *shape, int64_t *numel_out)
{
    if ((unsigned)dtype >= VOX_DTYPE_COUNT)
        return vox_fail(ctx, VOX_INVALID_ARG, "unknown dtype %d", (int)dtype);
    if (rank < 0 || rank > VOX_MAX_RANK)
        return vox_fail(ctx, VOX_UNSUPPORTED, "rank %d: tensors have 0 to %d dimensions", rank,
                        VOX_MAX_RANK);
    int64_t n = 1;
    for (int i = 0; i < rank; i++) {
        if (shape[i] < 0)
            return vox_fail(ctx, VOX_INVALID_ARG, "axis %d has negative size %lld", i,
                            (long long)shape[i]);
        if (shape[i] > 0 && n > (INT64_MAX / 16) / shape[i])
            return vox_fail(ctx, VOX_OUT_OF_MEMORY, "tensor of %d dimensions is too large",
                            rank);
        n *= shape[i];
    }
    *numel_out = n;
    return VOX_OK;
}

enum vox_status vox_tensor_alloc(struct vox_ctx *ctx, struct vox_tensor *t, enum vox_dtype dtype,
                                 int rank, const int64_t *shape)
{
    memset(t, 0, sizeof *t);
    int64_t n = 0;
    enum vox_status s = check_shape(ctx, dtype, rank, shape, &n);
    if (s != VOX_OK)
        return s;
    void *p = vox_calloc(ctx, (size_t)n, vox_dtype_size(dtype));
    if (!p)
        return VOX_OUT_OF_MEMORY;
    t->dtype = dtype;
    t->rank = rank;
    int64_t stride = 1;
    for (int i = rank - 1; i >= 0; i--) {
        t->shape[i] = shape[i];
        t->strides[i] = stride;
        stride *= shape[i];
    }
    t->data = t->base = p;
    return VOX_OK;
}

void vox_tensor_free(struct vox_ctx *ctx, struct vox_tensor *t)
{
    if (!t || !t->base)
        return;
    vox_free(ctx, t->base);
    memset(t, 0, sizeof *t);
}

int64_t vox_tensor_numel(const struct vox_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++)
        n *= t->shape[i];
    return n;
}

size_t vox_tensor_nbytes(const struct vox_tensor *t)
{
    return (size_t)vox_tensor_numel(t) * vox_dtype_size(t->dtype);
}

bool vox_tensor_is_contiguous(const struct vox_tensor *t)
{
    int64_t stride = 1;
    for (int i = t->rank - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->strides[i] != stride)
            return false;
        stride *= t->shape[i];
    }
    return true;
}

void *vox_tensor_at(const struct vox_tensor *t, const int64_t *idx)
{
    int64_t off = 0;
    for (int i = 0; i < t->rank; i++)
        off += idx[i] * t->strides[i];
    return (char *)t->data + off * (int64_t)vox_dtype_size(t->dtype);
}

enum vox_status vox_tensor_view_box(struct vox_ctx *ctx, const struct vox_tensor *t,
                                    const int64_t *lo, const int64_t *hi,
                                    struct vox_tensor *v)
{
    for (int i = 0; i < t->rank; i++) {
        if (lo[i] < 0 || hi[i] < lo[i] || hi[i] > t->shape[i])
            return vox_fail(ctx, VOX_INVALID_ARG,
                            "box [%lld, %lld) on axis %d is outside the tensor's size %lld",
                            (long long)lo[i], (long long)hi[i], i, (long long)t->shape[i]);
    }
    struct vox_tensor r = *t;
    r.base = NULL;
    r.data = vox_tensor_at(t, lo);
    for (int i = 0; i < t->rank; i++)
        r.shape[i] = hi[i] - lo[i];
    *v = r;
    return VOX_OK;
}

enum vox_status vox_tensor_view_axis(struct vox_ctx *ctx, const struct vox_tensor *t, int axis,
                                     int64_t lo, int64_t hi, struct vox_tensor *v)
{
    if (axis < 0 || axis >= t->rank)
        return vox_fail(ctx, VOX_INVALID_ARG, "axis %d of a rank-%d tensor", axis, t->rank);
    int64_t l[VOX_MAX_RANK] = {0}, h[VOX_MAX_RANK];
    for (int i = 0; i < t->rank; i++)
        h[i] = t->shape[i];
    l[axis] = lo;
    h[axis] = hi;
    return vox_tensor_view_box(ctx, t, l, h, v);
}

/* Copies a box of `shape` between two strided arrays (strides in bytes), C order. */
static void copy_rec(char *d, const int64_t *ds, const char *s, const int64_t *ss,
                     const int64_t *shape, int rank, size_t esz)
{
    if (rank == 0) {
        memcpy(d, s, esz);
        return;
    }
    if (rank == 1) {
        if (ds[0] == (int64_t)esz && ss[0] == (int64_t)esz) {
            memcpy(d, s, esz * (size_t)shape[0]);
            return;
        }
        for (int64_t i = 0; i < shape[0]; i++)
            memcpy(d + i * ds[0], s + i * ss[0], esz);
        return;
    }
    for (int64_t i = 0; i < shape[0]; i++)
        copy_rec(d + i * ds[0], ds + 1, s + i * ss[0], ss + 1, shape + 1, rank - 1, esz);
}

enum vox_status vox_tensor_copy(struct vox_ctx *ctx, struct vox_tensor *dst,
                                const struct vox_tensor *src)
{
    if (dst->dtype != src->dtype || dst->rank != src->rank)
        return vox_fail(ctx, VOX_INVALID_ARG, "copy from %s rank %d into %s rank %d",
                        vox_dtype_str(src->dtype), src->rank, vox_dtype_str(dst->dtype),
                        dst->rank);
    for (int i = 0; i < src->rank; i++)
        if (dst->shape[i] != src->shape[i])
            return vox_fail(ctx, VOX_INVALID_ARG, "copy: axis %d is %lld in the source, %lld "
                            "in the destination", i, (long long)src->shape[i],
                            (long long)dst->shape[i]);
    size_t esz = vox_dtype_size(src->dtype);
    int64_t ds[VOX_MAX_RANK], ss[VOX_MAX_RANK];
    for (int i = 0; i < src->rank; i++) {
        ds[i] = dst->strides[i] * (int64_t)esz;
        ss[i] = src->strides[i] * (int64_t)esz;
    }
    if (vox_tensor_numel(src) > 0)
        copy_rec(dst->data, ds, src->data, ss, src->shape, src->rank, esz);
    return VOX_OK;
}

enum vox_status vox_tensor_to_blocked(struct vox_ctx *ctx, const struct vox_tensor *src,
                                      int64_t b, struct vox_tensor *dst)
{
    memset(dst, 0, sizeof *dst);
    if (src->rank != 5 || src->dtype != VOX_F32)
        return vox_fail(ctx, VOX_INVALID_ARG, "blocked layout needs an f32 (N,C,Z,Y,X) tensor, "
                        "got %s of rank %d", vox_dtype_str(src->dtype), src->rank);
    if (b != 8 && b != 16)
        return vox_fail(ctx, VOX_INVALID_ARG, "channel block %lld: expected 8 or 16",
                        (long long)b);
    const int64_t *sh = src->shape;
    int64_t cb = (sh[1] + b - 1) / b;
    int64_t shape[6] = {sh[0], cb, sh[2], sh[3], sh[4], b};
    enum vox_status s = vox_tensor_alloc(ctx, dst, VOX_F32, 6, shape);
    if (s != VOX_OK)
        return s;
    float *d = dst->data;
    for (int64_t n = 0; n < sh[0]; n++)
        for (int64_t c = 0; c < sh[1]; c++)
            for (int64_t z = 0; z < sh[2]; z++)
                for (int64_t y = 0; y < sh[3]; y++)
                    for (int64_t x = 0; x < sh[4]; x++) {
                        int64_t idx[5] = {n, c, z, y, x};
                        int64_t o = (((n * cb + c / b) * sh[2] + z) * sh[3] + y) * sh[4] + x;
                        d[o * b + c % b] = *(const float *)vox_tensor_at(src, idx);
                    }
    return VOX_OK;
}

enum vox_status vox_tensor_from_blocked(struct vox_ctx *ctx, const struct vox_tensor *src,
                                        struct vox_tensor *dst)
{
    if (src->rank != 6 || src->dtype != VOX_F32 || dst->rank != 5 || dst->dtype != VOX_F32)
        return vox_fail(ctx, VOX_INVALID_ARG, "from_blocked needs f32 (N,C/b,Z,Y,X,b) into "
                        "f32 (N,C,Z,Y,X)");
    const int64_t *sh = dst->shape, b = src->shape[5];
    bool ok = src->shape[0] == sh[0] && src->shape[1] == (sh[1] + b - 1) / b &&
              src->shape[2] == sh[2] && src->shape[3] == sh[3] && src->shape[4] == sh[4];
    if (!ok)
        return vox_fail(ctx, VOX_INVALID_ARG, "from_blocked: blocked and plain shapes differ");
    for (int64_t n = 0; n < sh[0]; n++)
        for (int64_t c = 0; c < sh[1]; c++)
            for (int64_t z = 0; z < sh[2]; z++)
                for (int64_t y = 0; y < sh[3]; y++)
                    for (int64_t x = 0; x < sh[4]; x++) {
                        int64_t di[5] = {n, c, z, y, x}, si[6] = {n, c / b, z, y, x, c % b};
                        *(float *)vox_tensor_at(dst, di) =
                            *(const float *)vox_tensor_at(src, si);
                    }
    return VOX_OK;
}
