/*
 * nn/internal.h: what the files of src/nn share: small helpers on (N, C, Z, Y, X) tensors and
 * the activation functions in double.
 */
#ifndef VOX_NN_INTERNAL_H
#define VOX_NN_INTERNAL_H

#include "vox/nn.h"

#include <math.h>
#include <string.h>

/* Element index of (n, c, z, y, x) in a contiguous 5D tensor. */
static inline int64_t vox_nn_idx(const struct vox_tensor *t, int64_t n, int64_t c, int64_t z,
                                 int64_t y, int64_t x)
{
    const int64_t *s = t->shape;
    return (((n * s[1] + c) * s[2] + z) * s[3] + y) * s[4] + x;
}

/* t: a dense f32 5-D view of data (shape C-order; not freed with the tensor; data may be
 * NULL for a shape filled in later) */
static inline void vox_nn_tensor_view(struct vox_tensor *t, void *data, const int64_t shape[5])
{
    memset(t, 0, sizeof *t);
    t->dtype = VOX_F32;
    t->rank = 5;
    for (int64_t a = 4, stride = 1; a >= 0; stride *= shape[a--]) {
        t->shape[a] = shape[a];
        t->strides[a] = stride;
    }
    t->data = data;
}

/* The low-side zero padding of a conv layer along z, y, x: (k - 1) d / 2 with same padding
 * (shape.c keeps the output size), 0 with valid padding. */
static inline void vox_nn_conv_pad(const struct vox_nn_layer *l, int64_t pad[3])
{
    for (int a = 0; a < 3; a++)
        pad[a] = l->same ? (l->kernel[a] - 1) * l->dilation[a] / 2 : 0;
}

/* d act / d x expressed through y = act(x) (what the forward pass keeps):
 * relu: y > 0; elu: y > 0 ? 1 : y + 1; sigmoid: y (1 - y); tanh: 1 - y^2; linear: 1. */
static inline double vox_nn_act_slope(enum vox_nn_act a, double y)
{
    switch (a) {
    case VOX_ACT_RELU:
        return y > 0 ? 1 : 0;
    case VOX_ACT_ELU:
        return y > 0 ? 1 : y + 1;
    case VOX_ACT_SIGMOID:
        return y * (1 - y);
    case VOX_ACT_TANH:
        return 1 - y * y;
    default:
        return 1;
    }
}

/* The low-side offset of a crop from spatial size in[3] to out[3]: the layer's fixed margin,
 * or centred when it crops to another tensor's shape (as shape.c sizes it). */
static inline void vox_nn_crop_lo(const struct vox_nn_layer *l, const int64_t in[3],
                                  const int64_t out[3], int64_t lo[3])
{
    for (int a = 0; a < 3; a++)
        lo[a] = l->crop_to < 0 ? l->margin[a] : (in[a] - out[a]) / 2;
}

/* The training graph's plane passes (train_ops.c), bitwise equal to their reference twins
 * (vox_nn_ref_maxpool, vox_nn_ref_maxpool_backward, vox_nn_ref_maxfilter,
 * vox_nn_ref_maxfilter_backward): in, out, gout and gin are (N, C, Z, Y, X); the max-pooling
 * ones take one plane (N = C = 1). */
/* Max-pooling windows of at most this many taps keep their argmax (arg: one tap number per
 * output, scan order) for the adjoint; larger ones use the reference twins. */
#define VOX_NN_POOL_TAPS 255
void vox_nn_plane_maxpool(const struct vox_tensor *in, const int64_t w[3], struct vox_tensor *out,
                          uint8_t *arg);
void vox_nn_plane_maxpool_backward(const struct vox_tensor *gout, const int64_t w[3],
                                   const uint8_t *arg, struct vox_tensor *gin);
/* The same into a gradient that nothing else writes: every element of gin set (= instead of
 * +=, zeros where no window took it), one pass with no zeroing before. */
void vox_nn_plane_maxpool_backward_set(const struct vox_tensor *gout, const int64_t w[3],
                                       const uint8_t *arg, struct vox_tensor *gin);
/* The max-filter (vox_nn_ref_maxfilter's bits), any window, keeping its argmax taps in arg
 * (one byte per output; NULL: not kept; kept only for windows of at most VOX_NN_POOL_TAPS
 * taps); its adjoint from them (vox_nn_ref_maxfilter_backward's bits: gin += ...), acc
 * scratch of gin's x extent doubles. */
void vox_nn_plane_maxfilter(const struct vox_tensor *in, const int64_t w[3], const int64_t dil[3],
                            struct vox_tensor *out, uint8_t *arg);
/* A pointwise act's slope taken on the adjoint's rows as they are finished (one pass over
 * gin, not two): gx = gy * act'(y) by fn (struct vox_nn_kernels's act_backward), y the layer's
 * output, gin's shape. */
struct vox_nn_row_slope {
    void (*fn)(void *, enum vox_nn_act, const float *, const float *, float *, int64_t);
    void *self;
    enum vox_nn_act act;
    const float *y;
};
/* set: gin is written (=) rather than added to (nothing else writes it; no zeroing before);
 * slope: NULL, or the act slope of the layer whose gradient gin is, on each finished row. */
void vox_nn_plane_maxfilter_backward(const struct vox_tensor *gout, const int64_t w[3],
                                     const int64_t dil[3], const uint8_t *arg, double *acc,
                                     bool set, const struct vox_nn_row_slope *slope,
                                     struct vox_tensor *gin);

/* The layers that the reference forward pass (forward.c) and the training graph (graph.c)
 * run alike: upsample, crop, add, concat, act, output; other kinds do nothing. */
void vox_nn_ref_plain(const struct vox_nn_layer *l, const struct vox_tensor *const *ins,
                      struct vox_tensor *out);

/* The pointwise activations (softmax is not pointwise and is done by the caller). */
static inline double vox_nn_act_apply(enum vox_nn_act a, double v)
{
    switch (a) {
    case VOX_ACT_RELU:
        return v > 0 ? v : 0;
    case VOX_ACT_ELU:
        return v > 0 ? v : expm1(v);
    case VOX_ACT_SIGMOID:
        return 1.0 / (1.0 + exp(-v));
    case VOX_ACT_TANH:
        return tanh(v);
    default:
        return v;
    }
}

/* The axes (bit a: axis a) along which patch does not fit net (vox_net_shapes would fail);
 * 0 when it fits. The shape pass treats the axes apart, so each axis can be fitted alone.
 * Leaves no error in ctx. */
unsigned vox_nn_shapes_bad_axes(struct vox_ctx *ctx, const struct vox_net *net,
                                const int64_t patch[3], struct vox_nn_dims *dims);

/* The params a layer has (bit i: enum vox_nn_param i). */
unsigned vox_nn_layer_params(const struct vox_nn_layer *l);
/* The expected shape of one parameter; returns its rank (0 when absent). */
int vox_nn_param_shape(const struct vox_net *net, int layer, enum vox_nn_param p, int64_t shape[5]);
/* The input channels of layer `layer` (the channels of its first input). */
int64_t vox_nn_in_channels(const struct vox_net *net, int layer);
/* Every layer's output channels (n_layers entries). */
void vox_nn_channels(const struct vox_net *net, int64_t *ch);

/* A plan holding only the (batch-norm folded) parameters: no shapes, no activations. */
enum vox_status vox_nn_plan_params_only(struct vox_ctx *ctx, const struct vox_net *net,
                                        const struct vox_nn_weights *w,
                                        struct vox_nn_plan **plan_out);
/* Layer `layer`'s folded weight and bias (NULL when it has none). */
void vox_nn_plan_params(const struct vox_nn_plan *plan, int layer, const struct vox_tensor **w_out,
                        const struct vox_tensor **b_out);

/* A tensor's lifetime: it is written first at time start and read last at end (start <= end);
 * buf: its buffer, set by vox_nn_live_assign. */
struct vox_nn_live {
    int64_t bytes;
    int start, end;
    int buf;
};
/* Assigns each of the n items a buffer that no item whose [start, end] meets its own shares:
 * by rising start, the smallest free buffer that holds it, else the largest free one (grown to
 * its size), else a new one. Returns the number of buffers; buf_bytes[b]: buffer b's size (its
 * largest item's). order, buf_bytes and buf_end (scratch): n entries each. */
int vox_nn_live_assign(struct vox_nn_live *items, int n, int *order, int64_t *buf_bytes,
                       int *buf_end); /* items of 0 bytes: none (buf -1) */

#endif
