/*
 * synth/internal.h: what the synth files share: the keyed counter-based random numbers, an
 * exp without libm, the separable Gaussian blur, and the cell generator's entry point.
 *
 * Random numbers are a pure function of (seed, purpose, index): splitmix64's finaliser over a
 * mix of the three, so any voxel or object can draw its numbers in any order, on any thread.
 */
#ifndef VOX_SYNTH_INTERNAL_H
#define VOX_SYNTH_INTERNAL_H

#include "vox/synth.h"

/* What a random number is for: keeps the streams of different uses apart. */
enum synth_purpose {
    SYNTH_OBJECT = 1,   /* object k's shape parameters */
    SYNTH_CELL_TONE,    /* brightness of label k */
    SYNTH_DRIFT,        /* drift knots and gradient */
    SYNTH_SECTION,      /* per-section defects */
    SYNTH_NOISE,        /* per-voxel shot noise */
    SYNTH_DEFECT_NOISE, /* per-voxel noise of a missing section */
    SYNTH_AFF_NOISE,    /* per-voxel noise of degraded affinities */
    SYNTH_AFF_SPOT,     /* per-grid-cell spots of degraded affinities */
    SYNTH_AFF_FIELD     /* per-voxel noise of degraded affinities, before the blur */
};

static inline uint64_t synth_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The 64 random bits for (seed, purpose, index). */
static inline uint64_t synth_hash(uint64_t seed, uint64_t purpose, uint64_t index)
{
    uint64_t k = synth_mix(seed ^ (purpose * 0xD6E8FEB86659FD93ull));
    return synth_mix(k + (index + 1) * 0x9E3779B97F4A7C15ull);
}

/* A sequential stream starting at a key (for an object's several parameters). */
struct synth_rng {
    uint64_t state;
};

static inline uint64_t synth_next(struct synth_rng *r)
{
    r->state += 0x9E3779B97F4A7C15ull;
    return synth_mix(r->state);
}

/* Uniform in [0, 1) with 53 bits. */
static inline double synth_unit(uint64_t bits)
{
    return (double)(bits >> 11) * (1.0 / 9007199254740992.0);
}

static inline double synth_uniform(struct synth_rng *r, double lo, double hi)
{
    return lo + (hi - lo) * synth_unit(synth_next(r));
}

/* An approximately standard normal number from 64 bits: the sum of four 16-bit uniforms
 * (Irwin-Hall), centred and scaled to unit variance. Exact integer arithmetic. */
static inline float synth_gauss_bits(uint64_t b)
{
    int64_t s = (int64_t)(b & 0xFFFF) + (int64_t)((b >> 16) & 0xFFFF) +
                (int64_t)((b >> 32) & 0xFFFF) + (int64_t)(b >> 48);
    /* mean 4 * 32767.5, variance 4 * (65536^2 - 1) / 12 */
    return (float)(((double)s - 131070.0) * (1.0 / 37837.2));
}

static inline double synth_gauss(struct synth_rng *r)
{
    return synth_gauss_bits(synth_next(r));
}

/* exp(x) for x <= 0 with +, *, / only (bitwise the same everywhere). */
double synth_exp_neg(double x);

/* Blurs a float (Z, Y, X) C-order volume in place with a separable Gaussian of the given
 * sigmas in voxels (0: that axis untouched); edges are mirrored. Uses the context's pool;
 * the result does not depend on the thread count. */
enum vox_status synth_blur(struct vox_ctx *ctx, float *v, const int64_t shape[3],
                           const double sigma[3]);

/* Fills labels (u64, Z,Y,X, C order) with canonical connected cell labels; returns N. */
enum vox_status synth_cells(struct vox_ctx *ctx, const struct vox_synth_params *p, uint64_t *labels,
                            int64_t *cells_out);

/* Renders raw (u8, C order) from canonical labels. */
enum vox_status synth_raw(struct vox_ctx *ctx, const struct vox_synth_params *p,
                          const uint64_t *labels, uint8_t *raw);

#endif
