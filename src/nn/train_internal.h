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
    int out_layer, logit_layer;
    int64_t out[3], off[3]; /* output box and its offset in the input patch */
    int64_t iter;           /* optimizer steps done */
    uint64_t rng;           /* the sampler's generator word */
};

#endif
