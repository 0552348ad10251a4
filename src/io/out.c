/*
 * io/out.c: output files, written atomically.
 *
 * An output file is built under a temporary name beside its target ("seg.h5.tmp-PID", on the
 * same file system, so the final rename(2) is atomic): commit closes it and renames it over
 * the target, abort removes it. Readers of the target see the old file or the whole new one,
 * never a half-written one, and a crash leaves only a .tmp-PID file behind.
 */
#include "io/internal.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>

enum { SPEC_DATASET = 1024 };

/* Frees f; its volumes and its file must be closed already. */
static void out_free(struct vox_out_file *f)
{
    struct vox_ctx *ctx = f->ctx;
    vox_free(ctx, f->vols);
    vox_free(ctx, f->tmp);
    vox_free(ctx, f->path);
    vox_free(ctx, f);
}

/* Closes and frees f's volumes (nvols stays: the format's out_end reads it). */
static void out_close_volumes(struct vox_out_file *f)
{
    for (int64_t i = 0; i < f->nvols; i++) {
        f->fmt->close(f->vols[i]);
        vox_free(f->ctx, f->vols[i]->name);
        vox_free(f->ctx, f->vols[i]);
        f->vols[i] = NULL;
    }
}

enum vox_status vox_out_open(struct vox_ctx *ctx, const char *path, struct vox_out_file **f_out)
{
    *f_out = NULL;
    const struct vox_io_format *fmt;
    enum vox_status s = vox_io_format_of(ctx, path, &fmt);
    if (s != VOX_OK)
        return s;
    struct vox_out_file *f = vox_calloc(ctx, 1, sizeof *f);
    if (!f)
        return VOX_OUT_OF_MEMORY;
    f->ctx = ctx;
    f->fmt = fmt;
    f->fd = -1;
    f->h5_file = -1;
    size_t n = strlen(path) + 32;
    if (!(f->path = vox_io_strdup(ctx, path)) || !(f->tmp = vox_alloc(ctx, n))) {
        out_free(f);
        return VOX_OUT_OF_MEMORY;
    }
    snprintf(f->tmp, n, "%s.tmp-%ld", path, (long)getpid());
    if ((s = fmt->out_begin(ctx, f)) != VOX_OK) {
        fmt->out_end(NULL, f);
        unlink(f->tmp);
        out_free(f);
        return s;
    }
    *f_out = f;
    return VOX_OK;
}

enum vox_status vox_io_check_options(struct vox_ctx *ctx, const char *name,
                                     const struct vox_dataset_options *opt)
{
    if ((unsigned)opt->dtype >= VOX_DTYPE_COUNT)
        return vox_fail(ctx, VOX_INVALID_ARG, "'%s': unknown dtype %d", name, opt->dtype);
    if (opt->rank < 1 || opt->rank > VOX_MAX_RANK)
        return vox_fail(ctx, VOX_UNSUPPORTED,
                        "'%s': rank %d (volumes have 1 to %d "
                        "dimensions)",
                        name, opt->rank, VOX_MAX_RANK);
    if (opt->gzip < 0 || opt->gzip > 9)
        return vox_fail(ctx, VOX_INVALID_ARG, "'%s': gzip level %d (expected 0 to 9)", name,
                        opt->gzip);
    bool chunked = false;
    for (int i = 0; i < opt->rank; i++)
        chunked |= opt->chunk[i] != 0;
    for (int i = 0; i < opt->rank; i++) {
        if (opt->shape[i] < 0)
            return vox_fail(ctx, VOX_INVALID_ARG, "'%s': axis %d has size %lld", name, i,
                            (long long)opt->shape[i]);
        if (chunked && opt->shape[i] > 0 && (opt->chunk[i] < 1 || opt->chunk[i] > opt->shape[i]))
            return vox_fail(ctx, VOX_INVALID_ARG,
                            "'%s': chunk %lld on axis %d (expected 1 to "
                            "%lld)",
                            name, (long long)opt->chunk[i], i, (long long)opt->shape[i]);
    }
    return VOX_OK;
}

/* A new volume of f named "path:dataset" (or "path" when dataset is ""). */
static struct vox_volume *out_volume_new(struct vox_ctx *ctx, struct vox_out_file *f,
                                         const char *dataset)
{
    if (f->nvols == f->cap) {
        int64_t cap = f->cap ? 2 * f->cap : 4;
        struct vox_volume **v = vox_realloc(ctx, f->vols, (size_t)f->cap * sizeof *v,
                                            (size_t)cap * sizeof *v);
        if (!v)
            return NULL;
        f->vols = v;
        f->cap = cap;
    }
    struct vox_volume *vol = vox_calloc(ctx, 1, sizeof *vol);
    size_t n = strlen(f->path) + strlen(dataset) + 2;
    if (!vol || !(vol->name = vox_alloc(ctx, n))) {
        vox_free(ctx, vol);
        return NULL;
    }
    snprintf(vol->name, n, "%s%s%s", f->path, *dataset ? ":" : "", dataset);
    vol->ctx = ctx;
    vol->fmt = f->fmt;
    vol->out = f;
    vol->fd = -1;
    vol->h5_file = vol->h5_dset = -1;
    return vol;
}

enum vox_status vox_out_dataset(struct vox_ctx *ctx, struct vox_out_file *f, const char *dataset,
                                const struct vox_dataset_options *opt,
                                struct vox_volume **vol_out)
{
    *vol_out = NULL;
    enum vox_status s = vox_io_check_options(ctx, f->path, opt);
    if (s != VOX_OK)
        return s;
    struct vox_volume *vol = out_volume_new(ctx, f, dataset ? dataset : "");
    if (!vol)
        return VOX_OUT_OF_MEMORY;
    if ((s = f->fmt->out_dataset(ctx, f, dataset ? dataset : "", opt, vol)) != VOX_OK) {
        f->fmt->close(vol);
        vox_free(ctx, vol->name);
        vox_free(ctx, vol);
        return s;
    }
    struct vox_volume_info *in = &vol->info;
    in->dtype = opt->dtype;
    in->rank = opt->rank;
    memcpy(in->shape, opt->shape, sizeof in->shape);
    in->has_resolution = opt->has_resolution;
    in->has_offset = opt->has_offset;
    memcpy(in->resolution, opt->resolution, sizeof in->resolution);
    memcpy(in->offset, opt->offset, sizeof in->offset);
    f->vols[f->nvols++] = vol;
    *vol_out = vol;
    return VOX_OK;
}

enum vox_status vox_out_commit(struct vox_ctx *ctx, struct vox_out_file *f)
{
    out_close_volumes(f);
    enum vox_status s = f->fmt->out_end(ctx, f);
    if (s == VOX_OK && rename(f->tmp, f->path) != 0)
        s = vox_fail(ctx, VOX_IO, "cannot rename '%s' to '%s': %s", f->tmp, f->path,
                     strerror(errno));
    if (s != VOX_OK)
        unlink(f->tmp);
    out_free(f);
    return s;
}

void vox_out_abort(struct vox_out_file *f)
{
    if (!f)
        return;
    out_close_volumes(f);
    f->fmt->out_end(NULL, f);
    unlink(f->tmp);
    out_free(f);
}

enum vox_status vox_volume_save(struct vox_ctx *ctx, const char *spec, const struct vox_tensor *t,
                                const struct vox_dataset_options *opt)
{
    char path[PATH_MAX], dataset[SPEC_DATASET];
    enum vox_status s = vox_volume_spec_split(ctx, spec, path, sizeof path, dataset,
                                              sizeof dataset);
    if (s != VOX_OK)
        return s;
    struct vox_dataset_options o = opt ? *opt : (struct vox_dataset_options){.gzip = 4};
    o.dtype = t->dtype;
    o.rank = t->rank;
    memcpy(o.shape, t->shape, sizeof o.shape);
    struct vox_out_file *f;
    struct vox_volume *vol;
    if ((s = vox_out_open(ctx, path, &f)) != VOX_OK)
        return s;
    if ((s = vox_out_dataset(ctx, f, dataset, &o, &vol)) != VOX_OK ||
        (s = vox_volume_write(ctx, vol, NULL, t)) != VOX_OK) {
        vox_out_abort(f);
        return s;
    }
    return vox_out_commit(ctx, f);
}
