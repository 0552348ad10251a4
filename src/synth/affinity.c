/*
 * affinity.c: the true affinity graph of a label volume, ConvNet-like degraded versions of
 * it, and the membrane/interior contrast of a raw image.
 *
 * Affinity channel c at voxel v links v with v - e_c, e = (z, y, x): 255 when both carry the
 * same nonzero label, else 0 (also at index 0 along axis c, which links to nothing).
 *
 * Degradation imitates what a trained boundary network outputs, per channel:
 *   1. the in-plane 3x3 minimum of the true map (boundaries become ~3 voxels wide, as
 *      networks predict them), then a Gaussian blur (so they fall off over 1-2 voxels);
 *      In the smooth preset a little noise is added before the blur, so it is spatially
 *      correlated like a network's output, and only a trace of i.i.d. noise after;
 *   2. p = 0.02 + (inside - 0.02) * blurred + noise: inside a cell p is `inside` +- noise,
 *      the levels of the segmentation reference's benchmark (smooth: 0.993 +- 0.01, noisy:
 *      0.97 +- 0.05; shared/reference/segmentation.md section 5.3), so Mvox/s figures on the
 *      two presets mean what the goals mean;
 *   3. preset noisy: spots on a coarse grid (SPOT_GRID voxels per cell, each cell holding a
 *      spot with probability SPOT_P): half are gaps (p raised: membranes with holes, the
 *      classic merge error), half are low spots (p lowered: spurious splits inside cells).
 *      Spots are applied in the C order of their grid cells, so every voxel sees the same
 *      sequence whichever tile renders it.
 */
#include "synth/internal.h"

#include <math.h>
#include <string.h>

static const int64_t SPOT_GRID[3] = {4, 16, 16};
#define SPOT_P 0.6

struct preset_def {
    const char *name;
    double sigma_xy, sigma_z, inside;
    double field_noise; /* noise added before the blur: spatially correlated, as in a network's
                         * output, where neighbouring voxels see nearly the same input */
    double noise;       /* i.i.d. noise added after the blur */
    bool spots;
};

static const struct preset_def presets[VOX_SYNTH_PRESET_COUNT] = {
    [VOX_SYNTH_SMOOTH] = {"smooth", 0.8, 0.5, 0.993, 0.01, 0.002, false},
    [VOX_SYNTH_NOISY] = {"noisy", 1.0, 0.5, 0.97, 0, 0.05, true},
};

const char *vox_synth_preset_str(enum vox_synth_preset p)
{
    return (unsigned)p < VOX_SYNTH_PRESET_COUNT ? presets[p].name : "unknown preset";
}

bool vox_synth_preset_parse(const char *s, enum vox_synth_preset *out)
{
    for (int i = 0; i < VOX_SYNTH_PRESET_COUNT; i++)
        if (s && strcmp(s, presets[i].name) == 0) {
            *out = (enum vox_synth_preset)i;
            return true;
        }
    return false;
}

/* ---- true affinities -------------------------------------------------------------------- */

struct aff_job {
    const struct vox_tensor *labels;
    uint8_t *aff;
    int64_t shape[3];
};

static void aff_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct aff_job *j = arg;
    const int64_t *s = j->labels->strides, *sh = j->shape;
    const uint64_t *L = j->labels->data;
    int64_t n = sh[0] * sh[1] * sh[2];
    for (int64_t z = lo[0]; z < hi[0]; z++)
        for (int64_t y = lo[1]; y < hi[1]; y++)
            for (int64_t x = 0; x < sh[2]; x++) {
                const uint64_t *v = L + z * s[0] + y * s[1] + x * s[2];
                int64_t i = (z * sh[1] + y) * sh[2] + x;
                bool in[3] = {z > 0, y > 0, x > 0};
                for (int c = 0; c < 3; c++)
                    j->aff[c * n + i] = in[c] && *v != 0 && v[-s[c]] == *v ? 255 : 0;
            }
}

static enum vox_status check_volume(struct vox_ctx *ctx, const struct vox_tensor *t,
                                    enum vox_dtype dtype, int rank, const char *what)
{
    if (!t || !t->data || t->dtype != dtype || t->rank != rank)
        return vox_fail(ctx, VOX_INVALID_ARG, "%s: expected a %s tensor of rank %d", what,
                        vox_dtype_str(dtype), rank);
    return VOX_OK;
}

enum vox_status vox_synth_affinities(struct vox_ctx *ctx, const struct vox_tensor *labels,
                                     struct vox_tensor *aff_out)
{
    enum vox_status st = check_volume(ctx, labels, VOX_U64, 3, "labels");
    if (st != VOX_OK)
        return st;
    struct aff_job j = {.labels = labels};
    int64_t shape[4] = {3, labels->shape[0], labels->shape[1], labels->shape[2]};
    memcpy(j.shape, shape + 1, sizeof j.shape);
    if ((st = vox_tensor_alloc(ctx, aff_out, VOX_U8, 4, shape)) != VOX_OK)
        return st;
    j.aff = aff_out->data;
    int64_t range[3] = {shape[1], shape[2], 1}, tile[3] = {1, 64, 1};
    vox_pool_for(vox_ctx_pool(ctx), range, tile, VOX_SCHED_STATIC, aff_task, &j);
    return VOX_OK;
}

/* ---- degraded affinities ---------------------------------------------------------------- */

struct degrade_job {
    const struct preset_def *pre;
    const struct vox_tensor *aff;
    uint64_t seed;
    int c;
    int64_t shape[3], grid[3];
    float *f;
    uint8_t *out;
};

static void erode_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct degrade_job *j = arg;
    const int64_t *s = j->aff->strides, *sh = j->shape;
    const uint8_t *A = (const uint8_t *)j->aff->data + j->c * s[0];
    for (int64_t z = lo[0]; z < hi[0]; z++)
        for (int64_t y = lo[1]; y < hi[1]; y++)
            for (int64_t x = 0; x < sh[2]; x++) {
                uint8_t m = 255;
                for (int64_t b = y - 1; b <= y + 1; b++)
                    for (int64_t a = x - 1; a <= x + 1; a++)
                        if (b >= 0 && b < sh[1] && a >= 0 && a < sh[2]) {
                            uint8_t v = A[z * s[1] + b * s[2] + a * s[3]];
                            m = v < m ? v : m;
                        }
                int64_t i = (z * sh[1] + y) * sh[2] + x;
                uint64_t bits = synth_hash(j->seed, SYNTH_AFF_FIELD,
                                           (uint64_t)(j->c * sh[0] * sh[1] * sh[2] + i));
                j->f[i] = (float)m * (1.0f / 255) +
                          (float)j->pre->field_noise * synth_gauss_bits(bits);
            }
}

/* Spot of grid cell g: centre, radii, and the level it pushes towards (gap: up, else down). */
struct spot {
    double c[3], inv_r[3], level;
    bool gap, present;
};

static struct spot make_spot(const struct degrade_job *j, const int64_t *g)
{
    uint64_t key = (uint64_t)((g[0] * j->grid[1] + g[1]) * j->grid[2] + g[2]);
    struct synth_rng r = {synth_hash(j->seed, SYNTH_AFF_SPOT, key)};
    struct spot s = {.present = synth_unit(synth_next(&r)) < SPOT_P};
    s.gap = synth_next(&r) & 1;
    for (int a = 0; a < 3; a++) {
        s.c[a] = ((double)g[a] + synth_uniform(&r, 0, 1)) * (double)SPOT_GRID[a];
        s.inv_r[a] = 1 / (a == 0 ? synth_uniform(&r, 0.6, 1.5) : synth_uniform(&r, 1.5, 3.5));
    }
    s.level = s.gap ? synth_uniform(&r, 0.7, 0.95) : synth_uniform(&r, 0.05, 0.3);
    return s;
}

static void apply_spot(const struct degrade_job *j, const struct spot *s, const int64_t *lo,
                       const int64_t *hi)
{
    int64_t a[3], b[3];
    for (int k = 0; k < 3; k++) {
        double r = 1 / s->inv_r[k];
        int64_t l = (int64_t)floor(s->c[k] - r), h = (int64_t)floor(s->c[k] + r) + 1;
        a[k] = l > lo[k] ? l : lo[k];
        b[k] = h < hi[k] ? h : hi[k];
    }
    for (int64_t z = a[0]; z < b[0]; z++)
        for (int64_t y = a[1]; y < b[1]; y++)
            for (int64_t x = a[2]; x < b[2]; x++) {
                double d[3] = {((double)z - s->c[0]) * s->inv_r[0],
                               ((double)y - s->c[1]) * s->inv_r[1],
                               ((double)x - s->c[2]) * s->inv_r[2]};
                if (d[0] * d[0] + d[1] * d[1] + d[2] * d[2] >= 1)
                    continue;
                float *p = &j->f[(z * j->shape[1] + y) * j->shape[2] + x];
                if (s->gap ? *p < s->level : *p > s->level)
                    *p = (float)s->level;
            }
}

/* Tiles are whole grid rows (SPOT_GRID[0] sections x SPOT_GRID[1] rows x all x). */
static void finish_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct degrade_job *j = arg;
    const int64_t *sh = j->shape;
    int64_t n = sh[0] * sh[1] * sh[2];
    int64_t vlo[3] = {lo[0] * SPOT_GRID[0], lo[1] * SPOT_GRID[1], 0};
    int64_t vhi[3] = {hi[0] * SPOT_GRID[0], hi[1] * SPOT_GRID[1], sh[2]};
    for (int k = 0; k < 2; k++)
        vhi[k] = vhi[k] < sh[k] ? vhi[k] : sh[k];
    for (int64_t z = vlo[0]; z < vhi[0]; z++)
        for (int64_t y = vlo[1]; y < vhi[1]; y++)
            for (int64_t x = 0; x < sh[2]; x++) {
                int64_t i = (z * sh[1] + y) * sh[2] + x;
                uint64_t bits = synth_hash(j->seed, SYNTH_AFF_NOISE, (uint64_t)(j->c * n + i));
                j->f[i] = 0.02f + (float)(j->pre->inside - 0.02) * j->f[i] +
                          (float)j->pre->noise * synth_gauss_bits(bits);
            }
    for (int64_t gz = lo[0] - 1; j->pre->spots && gz <= lo[0] + 1; gz++)
        for (int64_t gy = lo[1] - 1; gy <= lo[1] + 1; gy++)
            for (int64_t gx = 0; gx < j->grid[2]; gx++) {
                int64_t g[3] = {gz, gy, gx};
                if (gz < 0 || gz >= j->grid[0] || gy < 0 || gy >= j->grid[1])
                    continue;
                struct spot s = make_spot(j, g);
                if (s.present)
                    apply_spot(j, &s, vlo, vhi);
            }
    int64_t idx[3];
    for (idx[0] = vlo[0]; idx[0] < vhi[0]; idx[0]++)
        for (idx[1] = vlo[1]; idx[1] < vhi[1]; idx[1]++)
            for (idx[2] = 0; idx[2] < sh[2]; idx[2]++) {
                int64_t i = (idx[0] * sh[1] + idx[1]) * sh[2] + idx[2];
                float v = idx[j->c] == 0 ? 0 : j->f[i] * 255 + 0.5f;
                j->out[j->c * n + i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
}

enum vox_status vox_synth_degrade(struct vox_ctx *ctx, const struct vox_tensor *aff,
                                  enum vox_synth_preset preset, uint64_t seed,
                                  struct vox_tensor *out)
{
    enum vox_status st = check_volume(ctx, aff, VOX_U8, 4, "affinities");
    if (st != VOX_OK)
        return st;
    if (aff->shape[0] != 3)
        return vox_fail(ctx, VOX_INVALID_ARG, "affinities: expected 3 channels, got %lld",
                        (long long)aff->shape[0]);
    if ((unsigned)preset >= VOX_SYNTH_PRESET_COUNT)
        return vox_fail(ctx, VOX_INVALID_ARG, "preset: %d is not a degradation preset",
                        (int)preset);
    struct degrade_job j = {.pre = &presets[preset], .aff = aff, .seed = seed};
    int64_t numel = 1;
    for (int a = 0; a < 3; a++) {
        j.shape[a] = aff->shape[a + 1];
        j.grid[a] = (j.shape[a] + SPOT_GRID[a] - 1) / SPOT_GRID[a];
        numel *= j.shape[a];
    }
    j.f = vox_alloc(ctx, (size_t)numel * sizeof(float));
    if (!j.f)
        return VOX_OUT_OF_MEMORY;
    if ((st = vox_tensor_alloc(ctx, out, VOX_U8, 4, aff->shape)) != VOX_OK)
        goto fail;
    j.out = out->data;
    struct vox_pool *pool = vox_ctx_pool(ctx);
    double sigma[3] = {j.pre->sigma_z, j.pre->sigma_xy, j.pre->sigma_xy};
    for (j.c = 0; j.c < 3; j.c++) {
        int64_t rows[3] = {j.shape[0], j.shape[1], 1}, rtile[3] = {1, 64, 1};
        vox_pool_for(pool, rows, rtile, VOX_SCHED_STATIC, erode_task, &j);
        if ((st = synth_blur(ctx, j.f, j.shape, sigma)) != VOX_OK)
            goto fail;
        int64_t grid[3] = {j.grid[0], j.grid[1], 1}, one[3] = {1, 1, 1};
        vox_pool_for(pool, grid, one, VOX_SCHED_STATIC, finish_task, &j);
    }
    vox_free(ctx, j.f);
    return VOX_OK;
fail:
    vox_free(ctx, j.f);
    vox_tensor_free(ctx, out);
    return st;
}

/* ---- contrast --------------------------------------------------------------------------- */

enum vox_status vox_synth_contrast(struct vox_ctx *ctx, const struct vox_tensor *raw,
                                   const struct vox_tensor *labels, double *membrane_mean_out,
                                   double *interior_mean_out)
{
    enum vox_status st = check_volume(ctx, raw, VOX_U8, 3, "raw");
    if (st == VOX_OK)
        st = check_volume(ctx, labels, VOX_U64, 3, "labels");
    if (st != VOX_OK)
        return st;
    for (int a = 0; a < 3; a++)
        if (raw->shape[a] != labels->shape[a])
            return vox_fail(ctx, VOX_INVALID_ARG, "raw and labels differ in shape along axis %d",
                            a);
    const int64_t *sh = labels->shape, *ls = labels->strides, *rs = raw->strides;
    double sum[2] = {0, 0}, cnt[2] = {0, 0};
    for (int64_t z = 0; z < sh[0]; z++)
        for (int64_t y = 0; y < sh[1]; y++)
            for (int64_t x = 0; x < sh[2]; x++) {
                const uint64_t *v =
                    (const uint64_t *)labels->data + z * ls[0] + y * ls[1] + x * ls[2];
                int64_t idx[3] = {z, y, x};
                int mem = 0;
                for (int a = 0; a < 3; a++) {
                    mem |= idx[a] > 0 && v[-ls[a]] != *v;
                    mem |= idx[a] + 1 < sh[a] && v[ls[a]] != *v;
                }
                sum[mem] += ((const uint8_t *)raw->data)[z * rs[0] + y * rs[1] + x * rs[2]];
                cnt[mem] += 1;
            }
    *membrane_mean_out = cnt[1] > 0 ? sum[1] / cnt[1] : 0;
    *interior_mean_out = cnt[0] > 0 ? sum[0] / cnt[0] : 0;
    return VOX_OK;
}
