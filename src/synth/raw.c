/*
 * raw.c: renders the synthetic EM image from the ground-truth labels.
 *
 * The imaging model, in order:
 *   tone     each cell's cytoplasm gets its own brightness (TONE_LO..TONE_HI); a voxel whose
 *            in-plane neighbours (3x3) carry another label is membrane (MEMBRANE): a dark
 *            band 2 voxels wide on each boundary. Where only a z-neighbour differs, the
 *            membrane lies nearly in the section plane and is seen smeared through the
 *            section's thickness: the voxel is darkened by Z_MEMBRANE only;
 *   blur     a separable Gaussian, sigma `blur` voxels in x-y and blur/anisotropy in z (the
 *            same physical width: the optics see isotropic nm, the sections are thick);
 *   drift    a gain 1 + drift * (a smooth per-section wander + a linear ramp across the
 *            field): slow changes of staining and illumination;
 *   noise    shot noise, std noise * sqrt(value), from an integer Irwin-Hall normal;
 *   defects  per section, with probability missing_rate the section is black or pure noise,
 *            else with probability shift_rate it is translated by up to max_shift voxels
 *            in x-y (edges replicated). Labels are never touched.
 * Every random number is hash(seed, purpose, index), so rows render on any thread.
 */
#include "synth/internal.h"

#include <math.h>
#include <string.h>

#define TONE_LO 165.0
#define TONE_HI 215.0
#define MEMBRANE 45.0
#define Z_MEMBRANE 0.3 /* darkening where only a z-neighbour differs */
#define DRIFT_KNOT 16  /* sections between drift knots */

struct render {
    const struct vox_synth_params *p;
    const uint64_t *labels;
    float *f;
    uint8_t *raw;
    double grad[2]; /* drift ramp along y and x */
};

static double tone(uint64_t seed, uint64_t label)
{
    return TONE_LO + (TONE_HI - TONE_LO) * synth_unit(synth_hash(seed, SYNTH_CELL_TONE, label));
}

static void tone_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct render *r = arg;
    const int64_t *sh = r->p->shape;
    int64_t Y = sh[1], X = sh[2];
    for (int64_t z = lo[0]; z < hi[0]; z++)
        for (int64_t y = lo[1]; y < hi[1]; y++)
            for (int64_t x = 0; x < X; x++) {
                const uint64_t *l = r->labels + (z * Y + y) * X + x;
                bool mem = false;
                for (int64_t dy = -1; dy <= 1 && !mem; dy++)
                    for (int64_t dx = -1; dx <= 1 && !mem; dx++)
                        if (y + dy >= 0 && y + dy < Y && x + dx >= 0 && x + dx < X)
                            mem = l[dy * X + dx] != *l;
                bool zmem = (z > 0 && l[-Y * X] != *l) || (z + 1 < sh[0] && l[Y * X] != *l);
                double t = tone(r->p->seed, *l);
                t = mem ? MEMBRANE : zmem ? t + Z_MEMBRANE * (MEMBRANE - t) : t;
                r->f[(z * Y + y) * X + x] = (float)t;
            }
}

/* The per-section drift: knots every DRIFT_KNOT sections joined by smoothstep. */
static double section_drift(uint64_t seed, int64_t z)
{
    int64_t j = z / DRIFT_KNOT;
    double t = (double)(z % DRIFT_KNOT) / DRIFT_KNOT, h = t * t * (3 - 2 * t);
    double a = 2 * synth_unit(synth_hash(seed, SYNTH_DRIFT, (uint64_t)j)) - 1;
    double b = 2 * synth_unit(synth_hash(seed, SYNTH_DRIFT, (uint64_t)j + 1)) - 1;
    return a + h * (b - a);
}

static void noise_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct render *r = arg;
    const struct vox_synth_params *p = r->p;
    int64_t Y = p->shape[1], X = p->shape[2];
    for (int64_t z = lo[0]; z < hi[0]; z++) {
        double sd = 0.6 * section_drift(p->seed, z);
        for (int64_t y = lo[1]; y < hi[1]; y++) {
            double gy = r->grad[0] * ((double)y / (double)Y - 0.5);
            for (int64_t x = 0; x < X; x++) {
                int64_t i = (z * Y + y) * X + x;
                double gx = r->grad[1] * ((double)x / (double)X - 0.5);
                double v = r->f[i] * (1 + p->drift * (sd + 0.4 * (gy + gx)));
                v = v > 0 ? v : 0;
                uint64_t bits = synth_hash(p->seed, SYNTH_NOISE, (uint64_t)i);
                v += p->noise * sqrt(v) * synth_gauss_bits(bits);
                v = v < 0 ? 0 : v > 255 ? 255 : v;
                r->raw[i] = (uint8_t)(v + 0.5);
            }
        }
    }
}

/* Missing and shifted sections, one section at a time (rare and cheap). */
static enum vox_status defects(struct vox_ctx *ctx, const struct vox_synth_params *p, uint8_t *raw)
{
    int64_t Y = p->shape[1], X = p->shape[2], plane = Y * X;
    uint8_t *copy = NULL;
    for (int64_t z = 0; z < p->shape[0]; z++) {
        struct synth_rng r = {synth_hash(p->seed, SYNTH_SECTION, (uint64_t)z)};
        double u_missing = synth_unit(synth_next(&r)), u_shift = synth_unit(synth_next(&r));
        uint64_t kind = synth_next(&r);
        uint8_t *s = raw + z * plane;
        if (u_missing < p->missing_rate) {
            for (int64_t i = 0; i < plane; i++)
                s[i] = kind & 1 ? 0
                                : (uint8_t)synth_hash(p->seed, SYNTH_DEFECT_NOISE,
                                                      (uint64_t)(z * plane + i));
        } else if (u_shift < p->shift_rate) {
            int64_t span = 2 * p->max_shift + 1;
            int64_t dy = (int64_t)((kind >> 8) % (uint64_t)span) - p->max_shift;
            int64_t dx = (int64_t)((kind >> 32) % (uint64_t)span) - p->max_shift;
            if (!copy && !(copy = vox_alloc(ctx, (size_t)plane)))
                return VOX_OUT_OF_MEMORY;
            memcpy(copy, s, (size_t)plane);
            for (int64_t y = 0; y < Y; y++) {
                int64_t sy = y - dy < 0 ? 0 : y - dy >= Y ? Y - 1 : y - dy;
                for (int64_t x = 0; x < X; x++) {
                    int64_t sx = x - dx < 0 ? 0 : x - dx >= X ? X - 1 : x - dx;
                    s[y * X + x] = copy[sy * X + sx];
                }
            }
        }
    }
    vox_free(ctx, copy);
    return VOX_OK;
}

enum vox_status synth_raw(struct vox_ctx *ctx, const struct vox_synth_params *p,
                          const uint64_t *labels, uint8_t *raw)
{
    int64_t numel = p->shape[0] * p->shape[1] * p->shape[2];
    struct render r = {.p = p, .labels = labels, .raw = raw};
    r.f = vox_alloc(ctx, (size_t)numel * sizeof(float));
    if (!r.f)
        return VOX_OUT_OF_MEMORY;
    for (int i = 0; i < 2; i++)
        r.grad[i] = 2 * synth_unit(synth_hash(p->seed, SYNTH_DRIFT, (1ull << 40) + i)) - 1;
    int64_t range[3] = {p->shape[0], p->shape[1], 1}, tile[3] = {1, 32, 1};
    struct vox_pool *pool = vox_ctx_pool(ctx);
    vox_pool_for(pool, range, tile, VOX_SCHED_STATIC, tone_task, &r);
    double sigma[3] = {p->blur / p->anisotropy, p->blur, p->blur};
    enum vox_status st = synth_blur(ctx, r.f, p->shape, sigma);
    if (st == VOX_OK) {
        vox_pool_for(pool, range, tile, VOX_SCHED_STATIC, noise_task, &r);
        st = defects(ctx, p, raw);
    }
    vox_free(ctx, r.f);
    return st;
}
