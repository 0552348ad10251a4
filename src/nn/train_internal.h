/*
 * nn/train_internal.h: the trainer's state, shared by the loop (trainer.c) and the
 * checkpoints (checkpoint.c).
 */
#ifndef VOX_NN_TRAIN_INTERNAL_H
#define VOX_NN_TRAIN_INTERNAL_H

#include "vox/train.h"

struct vox_trainer {
    struct vox_ctx *ctx;
    const struct vox_net *net;
    struct vox_train_options o;
    struct vox_train_data *data;
    struct vox_nn_graph *g;
    struct vox_nn_weights *w, *gw, *m, *v; /* weights, gradient, optimizer state */
    struct vox_nn_weights *gw_posted;      /* the gradient the posted update reads (the two
                                              gradients swap each step) */
    struct vox_optim_deferred *update;     /* the last step's update, finishing in the
                                              background (vox_optim_post) */
    int out_layer, logit_layer;
    int64_t out[3], off[3]; /* output box and its offset in the input patch */
    int64_t iter;           /* optimizer steps done */
    uint64_t rng;           /* the sampler's generator word */
    double vpos[4], vneg[4]; /* VOX_REBALANCE_VOLUME: the training volumes' class counts */
};

/* Validation's thresholds: 0.05 k, k = 1 .. VOX_VAL_GRID. */
enum { VOX_VAL_GRID = 19 };

/* The adapted Rand error of the segmentation of a net's output o ((1, C, Z, Y, X) f32,
 * contiguous, activated: affinities (C >= 3, the first 3 used) for VOX_TARGET_AFFINITY, else
 * a boundary map in channel 0) against the interior of labels (u64, Z + 2, Y + 2, X + 2) where
 * valid (u8 of the same shape; NULL: all), at each threshold: err_out[k - 1] for 0.05 k.
 * Segmented by vox_segment with its defaults less the size merge and dust, the merge history
 * cut as vox_merge_history_cut does; label 0 and invalid voxels are not counted. */
enum vox_status vox_train_seg_errors(struct vox_ctx *ctx, const struct vox_tensor *o,
                                     enum vox_target t, const struct vox_tensor *labels,
                                     const struct vox_tensor *valid, double err_out[VOX_VAL_GRID]);

#endif
