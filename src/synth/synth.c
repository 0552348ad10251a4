/*
 * synth.c: the synthetic volume's parameters (defaults, checks) and the generator that runs
 * the stages: cells (cells.c) -> raw (raw.c) and true affinities (affinity.c).
 */
#include "synth/internal.h"

#include <math.h>

void vox_synth_defaults(struct vox_synth_params *p)
{
    *p = (struct vox_synth_params){
        .shape = {64, 256, 256},
        .seed = 1,
        .voxel_nm = 4,
        .anisotropy = 10,
        .cell_size_nm = 240,
        .blob_fraction = 0.15,
        .noise = 1,
        .blur = 1,
        .drift = 0.1,
        .missing_rate = 0.01,
        .shift_rate = 0.01,
        .max_shift = 8,
    };
}

/* A real parameter must lie in [lo, hi] (and be a number). */
static enum vox_status check_range(struct vox_ctx *ctx, const char *name, double v, double lo,
                                   double hi, bool lo_open)
{
    if (isfinite(v) && (lo_open ? v > lo : v >= lo) && v <= hi)
        return VOX_OK;
    return vox_fail(ctx, VOX_INVALID_ARG, "%s = %g: expected a number %s %g and <= %g", name, v,
                    lo_open ? ">" : ">=", lo, hi);
}

enum vox_status vox_synth_check(struct vox_ctx *ctx, const struct vox_synth_params *p)
{
    static const char *axes[3] = {"z", "y", "x"};
    double numel = 1;
    for (int a = 0; a < 3; a++) {
        if (p->shape[a] <= 0)
            return vox_fail(ctx, VOX_INVALID_ARG, "shape[%d] (%s) = %lld: expected > 0", a, axes[a],
                            (long long)p->shape[a]);
        numel *= (double)p->shape[a];
    }
    if (numel > 4e12 / 16)
        return vox_fail(ctx, VOX_INVALID_ARG, "shape: %g voxels is too many for memory", numel);
    const struct {
        const char *name;
        double v, lo, hi;
        bool lo_open;
    } r[] = {
        {"voxel_nm", p->voxel_nm, 0, 1e6, true},
        {"anisotropy", p->anisotropy, 0, 1e3, true},
        {"cell_size_nm", p->cell_size_nm, 0, 1e9, true},
        {"blob_fraction", p->blob_fraction, 0, 1, false},
        {"noise", p->noise, 0, 1e3, false},
        {"blur", p->blur, 0, 20, false},
        {"drift", p->drift, 0, 1, false},
        {"missing_rate", p->missing_rate, 0, 1, false},
        {"shift_rate", p->shift_rate, 0, 1, false},
        {"max_shift", (double)p->max_shift, 0, 1e6, false},
    };
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) {
        enum vox_status st = check_range(ctx, r[i].name, r[i].v, r[i].lo, r[i].hi, r[i].lo_open);
        if (st != VOX_OK)
            return st;
    }
    if (p->cell_size_nm < p->voxel_nm)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "cell_size_nm = %g: expected at least one voxel (voxel_nm = %g)",
                        p->cell_size_nm, p->voxel_nm);
    return VOX_OK;
}

enum vox_status vox_synth_generate(struct vox_ctx *ctx, const struct vox_synth_params *p,
                                   struct vox_tensor *raw_out, struct vox_tensor *labels_out,
                                   struct vox_tensor *aff_out, int64_t *cells_out)
{
    enum vox_status st = vox_synth_check(ctx, p);
    if (st != VOX_OK)
        return st;
    struct vox_tensor labels = {0}, raw = {0}, aff = {0};
    int64_t cells = 0;
    if ((st = vox_tensor_alloc(ctx, &labels, VOX_U64, 3, p->shape)) != VOX_OK)
        goto fail;
    if ((st = synth_cells(ctx, p, labels.data, &cells)) != VOX_OK)
        goto fail;
    if (raw_out) {
        if ((st = vox_tensor_alloc(ctx, &raw, VOX_U8, 3, p->shape)) != VOX_OK)
            goto fail;
        if ((st = synth_raw(ctx, p, labels.data, raw.data)) != VOX_OK)
            goto fail;
    }
    if (aff_out && (st = vox_synth_affinities(ctx, &labels, &aff)) != VOX_OK)
        goto fail;
    if (raw_out)
        *raw_out = raw;
    if (aff_out)
        *aff_out = aff;
    if (labels_out)
        *labels_out = labels;
    else
        vox_tensor_free(ctx, &labels);
    if (cells_out)
        *cells_out = cells;
    return VOX_OK;
fail:
    vox_tensor_free(ctx, &labels);
    vox_tensor_free(ctx, &raw);
    vox_tensor_free(ctx, &aff);
    return st;
}
