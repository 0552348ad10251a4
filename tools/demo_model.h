/*
 * demo_model.h: the demo's ConvNet step (tools/demo_model.c): find the shipped affinity model
 * and predict affinities for an in-memory EM volume with the fast forward pass.
 */
#ifndef VOX_DEMO_MODEL_H
#define VOX_DEMO_MODEL_H

#include "vox/vox.h"

#include <stdbool.h>
#include <stddef.h>

#define DEMO_MODEL_NAME "synth_aff.h5"

/* The shipped model's path, searched relative to the executable: EXEDIR/../nets, EXEDIR/nets,
 * EXEDIR/../../nets. False when none is readable. */
bool demo_model_find(char *buf, size_t n);

/* Affinities (3, Z, Y, X) u8 (q = round(255 a)) for raw (Z, Y, X) u8, from MODEL.h5 and its
 * spec MODEL.net (one 1-channel input, one 3-channel output, valid padding, stride 1); the
 * input is mirrored at the borders so the output covers the whole volume; the predictions
 * of `views` (1-8) flipped/transposed views of the volume are averaged (test-time
 * augmentation). aff_out is allocated here. */
enum vox_status demo_model_predict(struct vox_ctx *ctx, const char *model,
                                   const struct vox_tensor *raw, int views,
                                   struct vox_tensor *aff_out);

#endif
