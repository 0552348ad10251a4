/*
 * vox/synth.h: deterministic synthetic EM volumes with ground truth, so every part of vox can
 * be run and tested without outside data.
 *
 * A volume is made in physical space (nm), then sampled on an anisotropic grid:
 *   cells      neurite-like tubes (smooth random curves of varying radius, in all directions)
 *              and ellipsoidal blobs (cell bodies); every voxel goes to the nearest cell core
 *              under the physical (anisotropic) metric, then each connected piece becomes one
 *              label, so labels are dense, connected and canonical;
 *   raw        bright cytoplasm (a brightness per cell), dark membranes where labels meet,
 *              anisotropic Gaussian blur, slow intensity drift, shot noise, and occasional
 *              missing (black or noise) or shifted sections. Defects touch raw, never labels;
 *   affinities the true affinity graph of the labels, and ConvNet-like degraded versions.
 *
 * Determinism: the same parameters give the same bytes on any machine and any thread count.
 * All randomness is a counter-based hash keyed by (seed, purpose, index); arithmetic is IEEE
 * +,-,*,/ and sqrt (correctly rounded everywhere, and this module is built without FMA
 * contraction); no libm transcendental is used (the Gaussian weights use an own exp).
 */
#ifndef VOX_SYNTH_H
#define VOX_SYNTH_H

#include "vox/core.h"

#ifdef __cplusplus
extern "C" {
#endif

struct vox_synth_params {
    int64_t shape[3];     /* z, y, x voxels; default 64, 256, 256 */
    uint64_t seed;        /* default 1 */
    double voxel_nm;      /* x/y voxel size in nm; default 4 */
    double anisotropy;    /* z voxel size / x-y voxel size (> 0); default 10 (40x4x4 nm) */
    double cell_size_nm;  /* mean neurite diameter in nm (blobs are 1.5-3x wider); default 240.
                           * Cell cores are added until they fill about 75% of the volume, so
                           * the cell count scales as volume / cell_size^3 */
    double blob_fraction; /* share of the volume given to blob (cell body) cores, 0-1; 0.15 */
    double noise;         /* shot noise: std = noise * sqrt(grey value), so 1 is Poisson
                           * statistics at one count per grey level; >= 0; default 1 */
    double blur;          /* Gaussian blur sigma in x-y voxels (z: blur / anisotropy, the same
                           * physical width); >= 0; default 1 */
    double drift;         /* relative amplitude of slow intensity drift (per section and across
                           * the field), 0-1; default 0.1 */
    double missing_rate;  /* probability that a section is missing (black or noise), 0-1;
                           * default 0.01 */
    double shift_rate;    /* probability that a section is shifted in x-y, 0-1; default 0.01 */
    int64_t max_shift;    /* largest shift of a shifted section, voxels, >= 0; default 8 */
};

/* Fills p with the defaults above. */
void vox_synth_defaults(struct vox_synth_params *p);

/* Checks p; VOX_INVALID_ARG with a message naming the first bad parameter. */
enum vox_status vox_synth_check(struct vox_ctx *ctx, const struct vox_synth_params *p);

/* Generates a volume. Each output may be NULL (not wanted); the others are allocated:
 *   raw_out     u8  (Z, Y, X)
 *   labels_out  u64 (Z, Y, X), ids 1..N numbered by first appearance in C order, each label
 *               one 6-connected piece, no background
 *   aff_out     u8  (3, Z, Y, X): channel c links v with v - e_c, e = (z, y, x); 255 where both
 *               voxels have the same nonzero label, else 0; index 0 along axis c is 0.
 * cells_out (may be NULL) receives N. On failure nothing is allocated. */
enum vox_status vox_synth_generate(struct vox_ctx *ctx, const struct vox_synth_params *p,
                                   struct vox_tensor *raw_out, struct vox_tensor *labels_out,
                                   struct vox_tensor *aff_out, int64_t *cells_out);

/* The true affinities (u8, 3,Z,Y,X) of a u64 (Z,Y,X) label volume (any strides), as above. */
enum vox_status vox_synth_affinities(struct vox_ctx *ctx, const struct vox_tensor *labels,
                                     struct vox_tensor *aff_out);

enum vox_synth_preset {
    VOX_SYNTH_SMOOTH, /* boundaries blurred over 1-2 voxels, mild noise: a good network */
    VOX_SYNTH_NOISY,  /* stronger noise, gaps in membranes, low spots inside cells */
    VOX_SYNTH_PRESET_COUNT
};
const char *vox_synth_preset_str(enum vox_synth_preset p);
/* Parses "smooth" / "noisy"; false if unknown. */
bool vox_synth_preset_parse(const char *s, enum vox_synth_preset *out);

/* Turns true affinities (u8, 3,Z,Y,X, any strides) into ConvNet-like predictions (u8, same
 * shape, newly allocated; a value a means a/255). Deterministic in (aff, preset, seed). */
enum vox_status vox_synth_degrade(struct vox_ctx *ctx, const struct vox_tensor *aff,
                                  enum vox_synth_preset preset, uint64_t seed,
                                  struct vox_tensor *out);

/* Mean raw value on membrane voxels (those with a 6-neighbour of another label) and inside
 * cells (the rest), for summaries and tests. raw u8 and labels u64 of the same (Z,Y,X) shape;
 * a class with no voxels reports 0. */
enum vox_status vox_synth_contrast(struct vox_ctx *ctx, const struct vox_tensor *raw,
                                   const struct vox_tensor *labels, double *membrane_mean_out,
                                   double *interior_mean_out);

#ifdef __cplusplus
}
#endif
#endif
