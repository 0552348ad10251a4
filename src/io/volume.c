/*
 * io/volume.c: the format-independent half of reading and writing volumes.
 *
 * A volume is opened through the table of its format (chosen by extension, see spec.c);
 * this file checks every box and tensor against the volume before the format sees them, and
 * moves strided tensors (views) through a bounded staging buffer, slab by slab along the
 * first axis, so the formats only ever move contiguous C-order boxes.
 */
#include "io/internal.h"

#include <limits.h>
#include <string.h>

enum { STAGE_BYTES = 8 << 20, SPEC_PATH = PATH_MAX, SPEC_DATASET = 1024 };

enum vox_status vox_volume_open(struct vox_ctx *ctx, const char *spec,
                                struct vox_volume **vol_out)
{
    *vol_out = NULL;
    char path[SPEC_PATH], dataset[SPEC_DATASET];
    const struct vox_io_format *fmt;
    enum vox_status s = vox_volume_spec_split(ctx, spec, path, sizeof path, dataset,
                                              sizeof dataset);
    if (s != VOX_OK || (s = vox_io_format_of(ctx, path, &fmt)) != VOX_OK)
        return s;
    struct vox_volume *vol = vox_calloc(ctx, 1, sizeof *vol);
    if (!vol)
        return VOX_OUT_OF_MEMORY;
    vol->ctx = ctx;
    vol->fmt = fmt;
    vol->fd = -1;
    vol->h5_file = vol->h5_dset = -1;
    if (!(vol->name = vox_io_strdup(ctx, spec))) {
        s = VOX_OUT_OF_MEMORY;
        goto fail;
    }
    if ((s = fmt->open(ctx, vol, path, dataset)) != VOX_OK)
        goto fail;
    *vol_out = vol;
    return VOX_OK;
fail:
    vox_free(ctx, vol->name);
    vox_free(ctx, vol);
    return s;
}

const struct vox_volume_info *vox_volume_info(const struct vox_volume *vol) { return &vol->info; }

const char *vox_volume_name(const struct vox_volume *vol) { return vol->name; }

size_t vox_volume_chunk_bytes(const struct vox_volume *vol)
{
    if (vol->chunk[0] <= 0)
        return 0;
    size_t bytes = vox_dtype_size(vol->info.dtype);
    for (int i = 0; i < vol->info.rank; i++)
        bytes *= (size_t)vol->chunk[i];
    return bytes;
}

bool vox_volume_chunk_shape(const struct vox_volume *vol, int64_t *shape)
{
    if (vol->chunk[0] <= 0)
        return false;
    memcpy(shape, vol->chunk, (size_t)vol->info.rank * sizeof *shape);
    return true;
}

bool vox_volume_box_direct(const struct vox_volume *vol) { return vol->fmt == &vox_io_npy; }

enum vox_status vox_volume_set_cache(struct vox_ctx *ctx, struct vox_volume *vol, size_t bytes)
{
    return vol->fmt->set_cache ? vol->fmt->set_cache(ctx, vol, bytes) : VOX_OK;
}

void vox_volume_close(struct vox_volume *vol)
{
    if (!vol || vol->out)
        return;
    if (!vol->detached)
        vol->fmt->close(vol);
    vox_free(vol->ctx, vol->name);
    vox_free(vol->ctx, vol);
}

/* Checks t against the volume and fills the box [l, h): from lo/hi (NULL: the origin / the
 * far end), or, when `from_tensor`, h = l + t's shape. */
static enum vox_status check_box(struct vox_ctx *ctx, const struct vox_volume *vol,
                                 const int64_t *lo, const int64_t *hi,
                                 const struct vox_tensor *t, bool from_tensor, int64_t *l,
                                 int64_t *h)
{
    const struct vox_volume_info *in = &vol->info;
    if (t->dtype != in->dtype || t->rank != in->rank)
        return vox_fail(ctx, VOX_INVALID_ARG, "'%s' holds %s of rank %d, the tensor is %s of "
                        "rank %d", vol->name, vox_dtype_str(in->dtype), in->rank,
                        vox_dtype_str(t->dtype), t->rank);
    for (int i = 0; i < in->rank; i++) {
        l[i] = lo ? lo[i] : 0;
        h[i] = from_tensor ? l[i] + t->shape[i] : hi ? hi[i] : in->shape[i];
        if (l[i] < 0 || h[i] < l[i] || h[i] > in->shape[i])
            return vox_fail(ctx, VOX_INVALID_ARG, "box [%lld, %lld) on axis %d is outside "
                            "'%s' (size %lld)", (long long)l[i], (long long)h[i], i, vol->name,
                            (long long)in->shape[i]);
        if (t->shape[i] != h[i] - l[i])
            return vox_fail(ctx, VOX_INVALID_ARG, "'%s': the box is %lld on axis %d, the "
                            "tensor %lld", vol->name, (long long)(h[i] - l[i]), i,
                            (long long)t->shape[i]);
    }
    return VOX_OK;
}

/* Moves one contiguous box between the volume and buf. */
static enum vox_status move(struct vox_ctx *ctx, struct vox_volume *vol, const int64_t *l,
                            const int64_t *h, void *buf, bool writing)
{
    return writing ? vol->fmt->write(ctx, vol, l, h, buf) : vol->fmt->read(ctx, vol, l, h, buf);
}

/* Moves the box [l, h) between the volume and the strided tensor t, through a staging
 * buffer of whole slabs of the first axis (at most STAGE_BYTES, or one slab). */
static enum vox_status move_strided(struct vox_ctx *ctx, struct vox_volume *vol,
                                    const int64_t *l, const int64_t *h, struct vox_tensor *t,
                                    bool writing)
{
    int64_t numel = vox_tensor_numel(t);
    if (vox_tensor_is_contiguous(t) || numel == 0)
        return move(ctx, vol, l, h, t->data, writing);
    size_t esz = vox_dtype_size(t->dtype);
    int64_t slab = numel / t->shape[0];
    int64_t step = (int64_t)(STAGE_BYTES / esz) / slab;
    step = step < 1 ? 1 : step > t->shape[0] ? t->shape[0] : step;
    struct vox_tensor st, v;
    int64_t shape[VOX_MAX_RANK];
    memcpy(shape, t->shape, sizeof shape);
    shape[0] = step;
    if (vox_tensor_alloc(ctx, &st, t->dtype, t->rank, shape) != VOX_OK)
        return VOX_OUT_OF_MEMORY;
    enum vox_status s = VOX_OK;
    int64_t sl[VOX_MAX_RANK], sh[VOX_MAX_RANK];
    memcpy(sl, l, sizeof sl);
    memcpy(sh, h, sizeof sh);
    for (int64_t z = 0; z < t->shape[0] && s == VOX_OK; z += step) {
        int64_t n = t->shape[0] - z < step ? t->shape[0] - z : step;
        struct vox_tensor buf = st;
        buf.shape[0] = n;
        sl[0] = l[0] + z;
        sh[0] = sl[0] + n;
        vox_tensor_view_axis(ctx, t, 0, z, z + n, &v);
        if (writing && (s = vox_tensor_copy(ctx, &buf, &v)) == VOX_OK)
            s = move(ctx, vol, sl, sh, buf.data, true);
        if (!writing && (s = move(ctx, vol, sl, sh, buf.data, false)) == VOX_OK)
            s = vox_tensor_copy(ctx, &v, &buf);
    }
    vox_tensor_free(ctx, &st);
    return s;
}

enum vox_status vox_volume_read(struct vox_ctx *ctx, struct vox_volume *vol, const int64_t *lo,
                                const int64_t *hi, struct vox_tensor *dst)
{
    int64_t l[VOX_MAX_RANK] = {0}, h[VOX_MAX_RANK] = {0};
    enum vox_status s = check_box(ctx, vol, lo, hi, dst, false, l, h);
    return s != VOX_OK ? s : move_strided(ctx, vol, l, h, dst, false);
}

enum vox_status vox_io_check_write(struct vox_ctx *ctx, const struct vox_volume *vol,
                                   const int64_t *lo, const struct vox_tensor *src, int64_t *l,
                                   int64_t *h)
{
    if (!vol->out && !vol->detached)
        return vox_fail(ctx, VOX_INVALID_ARG, "'%s' was opened for reading, not writing",
                        vol->name);
    return check_box(ctx, vol, lo, NULL, src, true, l, h);
}

enum vox_status vox_volume_write(struct vox_ctx *ctx, struct vox_volume *vol, const int64_t *lo,
                                 const struct vox_tensor *src)
{
    int64_t l[VOX_MAX_RANK] = {0}, h[VOX_MAX_RANK] = {0};
    enum vox_status s = vol->detached ? vox_fail(ctx, VOX_INVALID_ARG,
                                                 "'%s' is detached: it encodes, it holds no "
                                                 "file to write",
                                                 vol->name)
                                      : vox_io_check_write(ctx, vol, lo, src, l, h);
    struct vox_tensor t = *src; /* only read from: writing copies out of it */
    return s != VOX_OK ? s : move_strided(ctx, vol, l, h, &t, true);
}

enum vox_status vox_volume_read_all(struct vox_ctx *ctx, struct vox_volume *vol,
                                    struct vox_tensor *t_out)
{
    const struct vox_volume_info *in = &vol->info;
    enum vox_status s = vox_tensor_alloc(ctx, t_out, in->dtype, in->rank, in->shape);
    if (s == VOX_OK && (s = vox_volume_read(ctx, vol, NULL, NULL, t_out)) != VOX_OK)
        vox_tensor_free(ctx, t_out);
    return s;
}

enum vox_status vox_volume_set_attr_str(struct vox_ctx *ctx, struct vox_volume *vol,
                                        const char *name, const char *value)
{
    if (!vol->out)
        return vox_fail(ctx, VOX_INVALID_ARG, "'%s' was opened for reading, not writing",
                        vol->name);
    return vol->fmt->set_attr_str(ctx, vol, name, value);
}

enum vox_status vox_volume_get_attr_str(struct vox_ctx *ctx, struct vox_volume *vol,
                                        const char *name, char *buf, size_t len)
{
    return vol->fmt->get_attr_str(ctx, vol, name, buf, len);
}

enum vox_status vox_volume_load(struct vox_ctx *ctx, const char *spec, struct vox_tensor *t_out,
                                struct vox_volume_info *info_out)
{
    struct vox_volume *vol;
    enum vox_status s = vox_volume_open(ctx, spec, &vol);
    if (s != VOX_OK)
        return s;
    s = vox_volume_read_all(ctx, vol, t_out);
    if (s == VOX_OK && info_out)
        *info_out = vol->info;
    vox_volume_close(vol);
    return s;
}
