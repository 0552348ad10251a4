/*
 * vox/nn.h: ConvNets for EM: the network spec, weights, the scalar reference layers and the
 * reference forward pass.
 *
 *   text spec (docs/nets.md) --vox_net_parse--> struct vox_net (a DAG of layers, in order)
 *   struct vox_net + patch shape --vox_net_shapes--> every tensor's (C, Z, Y, X), the field of
 *       view and the output/input offset
 *   HDF5 file --vox_nn_weights_load--> struct vox_nn_weights (PyTorch's layouts)
 *   net + weights + patch --vox_nn_plan_create--> a plan (buffers, folded batch norm)
 *       --vox_nn_plan_forward--> outputs
 *
 * Axis order is z, y, x everywhere (z is the section axis of anisotropic EM); activations are
 * (N, C, Z, Y, X) f32, C order. The reference layers (vox_nn_ref_*) are plain loops that
 * accumulate in double: they are the oracle every fast kernel is tested against, so each
 * states its exact definition where it is declared.
 */
#ifndef VOX_NN_H
#define VOX_NN_H

#include "vox/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the network --------------------------------------------------------------------------- */

enum vox_nn_kind {
    VOX_NN_INPUT,     /* a network input: `channels` maps */
    VOX_NN_CONV,      /* 3D convolution (PyTorch's Conv3d: cross-correlation), valid or same */
    VOX_NN_DECONV,    /* transposed convolution with stride = kernel (ConvTranspose3d) */
    VOX_NN_POOL,      /* max-pooling, stride = window; the input must divide by the window */
    VOX_NN_MAXFILTER, /* sliding max, stride 1, optionally dilated (ZNN's dense max_filter) */
    VOX_NN_UPSAMPLE,  /* nearest-neighbour upsampling by an integer factor */
    VOX_NN_CROP,      /* centre crop to another tensor's shape, or by a margin on each side */
    VOX_NN_ADD,       /* elementwise sum of tensors of equal shape, then `act` */
    VOX_NN_CONCAT,    /* concatenation along channels (equal spatial shapes) */
    VOX_NN_ACT,       /* an activation on its own (softmax: over channels) */
    VOX_NN_OUTPUT,    /* marks a network output, applying `act` */
    VOX_NN_MPF,       /* max-pooling fragments (ZNNi): a pool at every offset of the window,
                       * the fragments carried as extra batch entries */
    VOX_NN_INTERLEAVE, /* puts the fragments of every earlier mpf back into one dense tensor */
    VOX_NN_KIND_COUNT
};

enum vox_nn_act {
    VOX_ACT_LINEAR,  /* x */
    VOX_ACT_RELU,    /* max(0, x) */
    VOX_ACT_ELU,     /* x > 0 ? x : exp(x) - 1 */
    VOX_ACT_SIGMOID, /* 1 / (1 + exp(-x)) */
    VOX_ACT_TANH,    /* tanh(x) */
    VOX_ACT_SOFTMAX, /* exp(x_c - max_c x) / sum_c exp(x_c - max_c x), over channels */
    VOX_ACT_COUNT
};

const char *vox_nn_kind_str(enum vox_nn_kind k);
const char *vox_nn_act_str(enum vox_nn_act a);

#define VOX_NN_NAME_MAX 64
#define VOX_NN_MAX_IN 8
#define VOX_NN_MPF_MAX 8 /* mpf layers one tensor's fragments may come from */

/* One statement of a spec. Unused fields are 0 (vectors 1 where they are factors). */
struct vox_nn_layer {
    enum vox_nn_kind kind;
    char name[VOX_NN_NAME_MAX]; /* also the name of the tensor it makes */
    int n_in;
    int in[VOX_NN_MAX_IN]; /* earlier layers whose tensors it reads (crop: 1 + ref) */
    int64_t channels;      /* output channels (every layer, filled by the parser) */
    int64_t kernel[3];     /* conv/deconv kernel, pool/maxfilter window, upsample factor */
    int64_t dilation[3];   /* conv, maxfilter */
    int64_t margin[3];     /* crop by margin (when crop_to < 0) */
    int crop_to;           /* crop: the layer whose spatial shape to crop to, or -1 */
    int frag;              /* the last mpf layer whose fragments its tensor carries, or -1 */
    bool same;             /* conv: zero padding that keeps the shape */
    bool bias;             /* conv/deconv: has a bias (default yes) */
    bool bn;               /* conv: batch norm after the conv (folded at plan; trained in
                            * training mode by the graph, vox/train.h) */
    double bn_eps;         /* default 1e-5 (PyTorch's) */
    enum vox_nn_act act;   /* conv, deconv, add, act, output */
    int line;              /* the spec line, for messages */
};

/* A parsed net: layers in the order written, every input defined before its use (so the
 * order is topological). Read-only for callers. */
struct vox_net {
    struct vox_ctx *ctx;
    char *source; /* the file name (or the name given to vox_net_parse), for messages */
    struct vox_nn_layer *layers;
    int n_layers;
    int n_inputs, n_outputs;
};

/* Parses a spec from text; `source` names it in messages ("nets/x.net:12:7: ..."). */
enum vox_status vox_net_parse(struct vox_ctx *ctx, const char *text, const char *source,
                              struct vox_net **net_out);
/* Reads and parses a spec file. */
enum vox_status vox_net_load(struct vox_ctx *ctx, const char *path, struct vox_net **net_out);
void vox_net_destroy(struct vox_net *net);
/* The index of the layer named `name`, or -1. */
int vox_net_find(const struct vox_net *net, const char *name);
/* The i-th input / output layer's index (in the order written). */
int vox_net_input(const struct vox_net *net, int i);
int vox_net_output(const struct vox_net *net, int i);
/* The windows of the mpf layers whose fragments layer `layer`'s tensor carries, the first
 * applied first, into win (VOX_NN_MPF_MAX entries); returns their count (0: none). */
int vox_net_mpf_levels(const struct vox_net *net, int layer, int64_t (*win)[3]);

/* ---- shapes and field of view -------------------------------------------------------------- */

/* Per tensor, along z, y, x: tensor voxel j sees the input voxels [lo + j*stride, lo + j*stride
 * + fov) (stride = stride_num / stride_den input voxels; fov is an upper bound when the net
 * upsamples). All inputs share the patch shape and are aligned voxel for voxel. */
struct vox_nn_dims {
    int64_t batch;    /* batch entries: the fragments of earlier mpf layers (1 without) */
    int64_t shape[4]; /* C, Z, Y, X of one entry */
    int64_t fov[3];
    int64_t lo[3];
    int64_t stride_num[3], stride_den[3];
};

/* Every layer's output shape for inputs of spatial shape patch (z, y, x); dims has n_layers
 * entries. Fails (VOX_INVALID_ARG, naming the layer) where a patch is too small for a valid
 * layer (and the field of view), not divisible by a pooling window, of a size s with s + 1 not
 * divisible by an mpf window, or where shapes meet that do not match at add/concat (naming
 * both tensors and shapes). The dims of a tensor carrying mpf fragments describe fragment 0
 * (fragment f of window p sits at offset f along each axis, in units of the stride before the
 * mpf); an interleave's are the dense tensor's. */
enum vox_status vox_net_shapes(struct vox_ctx *ctx, const struct vox_net *net,
                               const int64_t patch[3], struct vox_nn_dims *dims);
/* The field of view of the net (the largest over its outputs) from the dims filled by
 * vox_net_shapes, and the offset of output voxel 0's field centre in the input:
 * lo + (fov - 1) / 2, rounded down. For a valid net with stride-1 outputs, input voxel
 * offset + j is the centre of output voxel j's field. */
void vox_net_fov(const struct vox_net *net, const struct vox_nn_dims *dims, int64_t fov_out[3],
                 int64_t offset_out[3]);

/* ---- weights ------------------------------------------------------------------------------- */

/* The parameters of one layer, as PyTorch stores them (unused ones have rank 0):
 *   weight  conv (out, in, kz, ky, kx); deconv (in, out, kz, ky, kx)
 *   bias    (out)
 *   bn_mean, bn_var, bn_weight, bn_bias  (out)   conv with bn=yes */
enum vox_nn_param {
    VOX_P_WEIGHT,
    VOX_P_BIAS,
    VOX_P_BN_MEAN,
    VOX_P_BN_VAR,
    VOX_P_BN_WEIGHT,
    VOX_P_BN_BIAS,
    VOX_P_COUNT
};
const char *vox_nn_param_str(enum vox_nn_param p); /* "weight", "bias", "bn_mean", ... */

struct vox_nn_weights {
    struct vox_ctx *ctx;
    int n_layers;
    struct vox_tensor (*p)[VOX_P_COUNT]; /* p[layer][param], f32 */
};

enum vox_nn_init { VOX_INIT_MSRA, VOX_INIT_XAVIER, VOX_INIT_UNIFORM, VOX_INIT_COUNT };
const char *vox_nn_init_str(enum vox_nn_init i);
bool vox_nn_init_parse(const char *s, enum vox_nn_init *out);

/* Zeroed parameters of the right shapes for net (bn_var and bn_weight set to 1). */
enum vox_status vox_nn_weights_create(struct vox_ctx *ctx, const struct vox_net *net,
                                      struct vox_nn_weights **w_out);
void vox_nn_weights_destroy(struct vox_nn_weights *w);
/* Deterministic random weights from `seed` (own splitmix64 + Box-Muller, independent of the
 * platform and thread count). Biases 0, batch norm the identity (mean 0, var 1, weight 1, bias 0).
 *   msra:    N(0, 2 / fan_in)          fan_in = in * kz * ky * kx
 *   xavier:  U(-a, a), a = sqrt(6 / (fan_in + fan_out)), fan_out = out * kz * ky * kx
 *   uniform: U(-0.1, 0.1) */
void vox_nn_weights_init(const struct vox_net *net, struct vox_nn_weights *w, enum vox_nn_init init,
                         uint64_t seed);
/* Loads "/<layer>/<param>" datasets (f32) from an HDF5 file; a missing dataset or a wrong
 * shape is VOX_FORMAT naming the layer, the expected and the found shape. */
enum vox_status vox_nn_weights_load(struct vox_ctx *ctx, const struct vox_net *net,
                                    const char *path, struct vox_nn_weights **w_out);
/* A name-matched partial load (seeding one net from another's weights, as in recursive
 * training, znn.md 4.2): each layer of net whose every parameter exists in `path` under the
 * same layer name with the same shape is copied into w; the others keep w's values.
 * seeded_out[i] (n_layers entries) tells which were copied. Fails (VOX_INVALID_ARG) when no
 * layer matches (a wrong or unreadable file included). */
enum vox_status vox_nn_weights_seed(struct vox_ctx *ctx, const struct vox_net *net,
                                    const char *path, struct vox_nn_weights *w, bool *seeded_out);

/* Saves them to an HDF5 file, atomically (through the io module). */
enum vox_status vox_nn_weights_save(struct vox_ctx *ctx, const struct vox_net *net,
                                    const struct vox_nn_weights *w, const char *path);

/* ---- reference layers: (N, C, Z, Y, X) f32, contiguous; the caller sizes `out` --------------
 * Out-of-range reads in conv are zeros (padding). Sums are accumulated in double and rounded to
 * f32 once, so the result does not depend on the summation order to f32 precision: that is
 * what makes these the oracle. The pool (may be NULL) splits work over (n, out channel), each
 * element computed by one thread in a fixed order: identical results for any thread count. */

/* out[n,o,z,y,x] = act(b[o] + sum_{i,a,b,c} w[o,i,a,b,c] * in[n,i, z + a*dz - pz, y + b*dy - py,
 *                                                                   x + c*dx - px])
 * w (O, I, KZ, KY, KX), b (O) or NULL, pad = the low-side zero padding (0 for valid). */
void vox_nn_ref_conv(struct vox_pool *pool, const struct vox_tensor *in, const struct vox_tensor *w,
                     const struct vox_tensor *b, const int64_t dilation[3], const int64_t pad[3],
                     enum vox_nn_act act, struct vox_tensor *out);
/* Transposed conv with stride = kernel, no padding (out = in * k):
 * out[n,o, z*KZ+a, y*KY+b, x*KX+c] = act(b[o] + sum_i in[n,i,z,y,x] * w[i,o,a,b,c])
 * w (I, O, KZ, KY, KX). */
void vox_nn_ref_deconv(struct vox_pool *pool, const struct vox_tensor *in,
                       const struct vox_tensor *w, const struct vox_tensor *b, enum vox_nn_act act,
                       struct vox_tensor *out);
/* out[n,c,z,y,x] = max_{a<WZ, b<WY, c'<WX} in[n,c, z*WZ+a, y*WY+b, x*WX+c'] */
void vox_nn_ref_maxpool(const struct vox_tensor *in, const int64_t window[3],
                        struct vox_tensor *out);
/* out[n,c,z,y,x] = max_{a<WZ, b<WY, c'<WX} in[n,c, z+a*dz, y+b*dy, x+c'*dx] */
void vox_nn_ref_maxfilter(const struct vox_tensor *in, const int64_t window[3],
                          const int64_t dilation[3], struct vox_tensor *out);
/* Max-pooling fragments: for each offset (oz, oy, ox) < window, f = (oz * WY + oy) * WX + ox,
 * out[n*F + f, c, z,y,x] = max_{a<WZ, b<WY, c'<WX} in[n,c, z*WZ+oz+a, y*WY+oy+b, x*WX+ox+c'],
 * F = WZ * WY * WX fragments of floor((in - W + 1) / W) voxels per axis. */
void vox_nn_ref_mpf(const struct vox_tensor *in, const int64_t window[3], struct vox_tensor *out);
/* Undoes `levels` mpf layers of windows win[0] (the first applied) .. win[levels - 1]: along
 * each axis a dense index d = (((j * p_L + o_L) * p_{L-1} + o_{L-1}) ...) * p_1 + o_1, and the
 * batch entry is b = ((f_1 * F_2 + f_2) * F_3 + ...) with f_k the flat offset of level k:
 * out[0, c, dz, dy, dx] = in[b, c, jz, jy, jx]. */
void vox_nn_ref_interleave(const struct vox_tensor *in, int levels, const int64_t (*win)[3],
                           struct vox_tensor *out);
/* out[n,c,z,y,x] = in[n,c, z/FZ, y/FY, x/FX] (integer division) */
void vox_nn_ref_upsample(const struct vox_tensor *in, const int64_t factor[3],
                         struct vox_tensor *out);
/* out[n,c,z,y,x] = in[n,c, z+lo[0], y+lo[1], x+lo[2]] */
void vox_nn_ref_crop(const struct vox_tensor *in, const int64_t lo[3], struct vox_tensor *out);
/* out = act(sum_k in_k), summed in double in the order k = 0, 1, ... */
void vox_nn_ref_add(const struct vox_tensor *const *in, int n, enum vox_nn_act act,
                    struct vox_tensor *out);
/* out[n, off_k + c, ...] = in_k[n, c, ...], off_k = channels of in_0 .. in_{k-1} */
void vox_nn_ref_concat(const struct vox_tensor *const *in, int n, struct vox_tensor *out);
/* out = act(in) elementwise; softmax over the channel axis. in may equal out. */
void vox_nn_ref_act(const struct vox_tensor *in, enum vox_nn_act act, struct vox_tensor *out);

/* ---- reference backward layers -------------------------------------------------------------
 * The adjoints of the layers above, for training (src/nn/ref_backward*.c). Gradients are ADDED
 * to what gin / gw / gb hold (each element's new terms summed in double in a fixed order and
 * rounded once), so a tensor read by several layers, or a step over several patches, sums
 * its contributions in call order; zero them first for a plain gradient. Bitwise identical for
 * any thread count (work is split over channels; every element has one writer). */

/* gin[n,i,p] += sum_{o,a,b,c} w[o,i,a,b,c] * gout[n,o, pz - a*dz + pz0, py - b*dy + py0,
 *                                                 px - c*dx + px0]   (pad = (pz0, py0, px0)) */
void vox_nn_ref_conv_backward_data(struct vox_pool *pool, const struct vox_tensor *gout,
                                   const struct vox_tensor *w, const int64_t dilation[3],
                                   const int64_t pad[3], struct vox_tensor *gin);
/* gw[o,i,a,b,c] += sum_{n,z,y,x} gout[n,o,z,y,x] * in[n,i, z + a*dz - pz, ...];
 * gb[o] += sum gout[n,o,...] (gb may be NULL). */
void vox_nn_ref_conv_backward_weights(struct vox_pool *pool, const struct vox_tensor *in,
                                      const struct vox_tensor *gout, const int64_t dilation[3],
                                      const int64_t pad[3], struct vox_tensor *gw,
                                      struct vox_tensor *gb);
/* gin[n,i,z,y,x] += sum_{o,a,b,c} w[i,o,a,b,c] * gout[n,o, z*KZ+a, y*KY+b, x*KX+c] */
void vox_nn_ref_deconv_backward_data(struct vox_pool *pool, const struct vox_tensor *gout,
                                     const struct vox_tensor *w, struct vox_tensor *gin);
/* gw[i,o,a,b,c] += sum_{n,z,y,x} in[n,i,z,y,x] * gout[n,o, z*KZ+a, ...]; gb[o] += sum gout */
void vox_nn_ref_deconv_backward_weights(struct vox_pool *pool, const struct vox_tensor *in,
                                        const struct vox_tensor *gout, struct vox_tensor *gw,
                                        struct vox_tensor *gb);
/* gx = gy * act'(x) from y = act(x): relu y > 0, elu y > 0 ? 1 : y + 1, sigmoid y (1 - y),
 * tanh 1 - y^2; softmax gx_c = y_c (gy_c - sum_k y_k gy_k). Overwrites gx (may equal gy). */
void vox_nn_ref_act_backward(const struct vox_tensor *y, const struct vox_tensor *gy,
                             enum vox_nn_act act, struct vox_tensor *gx);
/* gin[argmax of each window] += gout; ties: the first tap in scan order (z, y, x), the one
 * the forward max keeps. */
void vox_nn_ref_maxpool_backward(const struct vox_tensor *in, const struct vox_tensor *gout,
                                 const int64_t window[3], struct vox_tensor *gin);
void vox_nn_ref_maxfilter_backward(const struct vox_tensor *in, const struct vox_tensor *gout,
                                   const int64_t window[3], const int64_t dilation[3],
                                   struct vox_tensor *gin);
/* gin[z,y,x] += sum_{a<FZ,b<FY,c<FX} gout[z*FZ+a, y*FY+b, x*FX+c] */
void vox_nn_ref_upsample_backward(const struct vox_tensor *gout, const int64_t factor[3],
                                  struct vox_tensor *gin);
/* gin[z+lo0, y+lo1, x+lo2] += gout[z,y,x] */
void vox_nn_ref_crop_backward(const struct vox_tensor *gout, const int64_t lo[3],
                              struct vox_tensor *gin);
/* gin_k += gout for every k (gout: the gradient of the sum before the activation) */
void vox_nn_ref_add_backward(const struct vox_tensor *gout, struct vox_tensor *const *gin, int n);
/* gin_k[n,c] += gout[n, off_k + c] */
void vox_nn_ref_concat_backward(const struct vox_tensor *gout, struct vox_tensor *const *gin,
                                int n);

/* ---- batch norm for training (src/nn/ref_bn.c) ---------------------------------------------
 * PyTorch's BatchNorm3d after a conv, per channel c over its M = N*Z*Y*X values, in double,
 * one channel per pool task (bitwise identical for any thread count). */

/* out = act(gamma[c] xhat + beta[c]), xhat = (z - mean[c]) / sqrt(var[c] + eps).
 * batch: mean[c] = sum z / M and var[c] = sum (z - mean)^2 / M (biased) are computed and
 * written; else mean/var are read (running statistics: eval mode). xhat (may be NULL) gets
 * xhat in f32 (what the backward needs); out may equal z. */
void vox_nn_ref_bn_forward(struct vox_pool *pool, const struct vox_tensor *z,
                           const struct vox_tensor *gamma, const struct vox_tensor *beta,
                           double eps, enum vox_nn_act act, bool batch, double *mean, double *var,
                           struct vox_tensor *xhat, struct vox_tensor *out);
/* The adjoint of a batch-statistics forward, from gy = d loss / d (gamma xhat + beta):
 *   ggamma[c] += sum gy xhat,  gbeta[c] += sum gy,
 *   gz = gamma[c] / sqrt(var[c] + eps) / M * (M gy - sum gy - xhat sum gy xhat).
 * gz is overwritten (may equal gy). */
void vox_nn_ref_bn_backward(struct vox_pool *pool, const struct vox_tensor *xhat,
                            const struct vox_tensor *gy, const struct vox_tensor *gamma,
                            const double *var, double eps, struct vox_tensor *gz,
                            struct vox_tensor *ggamma, struct vox_tensor *gbeta);
/* PyTorch's running statistics (momentum 0.1) from one batch's mean and biased var over
 * `count` values per channel: run_mean = 0.9 run_mean + 0.1 mean, run_var = 0.9 run_var +
 * 0.1 var count / (count - 1) (the unbiased variance). f32 (channels), updated in place. */
#define VOX_NN_BN_MOMENTUM 0.1
void vox_nn_bn_running_update(const double *mean, const double *var, int64_t channels,
                              int64_t count, struct vox_tensor *run_mean,
                              struct vox_tensor *run_var);

/* ---- the reference forward pass ------------------------------------------------------------ */

struct vox_nn_plan;

/* Plans net for inputs of spatial shape patch: infers shapes, folds batch norm into the conv
 * weights, and allocates the tensors, reusing a buffer once every reader of the tensor in it
 * has run. `w` is copied from (it need not outlive the plan); `net` must outlive it. */
enum vox_status vox_nn_plan_create(struct vox_ctx *ctx, const struct vox_net *net,
                                   const struct vox_nn_weights *w, const int64_t patch[3],
                                   struct vox_nn_plan **plan_out);
void vox_nn_plan_destroy(struct vox_nn_plan *plan);
/* The shapes the plan was made for (n_layers entries). */
const struct vox_nn_dims *vox_nn_plan_dims(const struct vox_nn_plan *plan);
/* Bytes of activation memory the plan holds (after reuse), and without reuse. */
size_t vox_nn_plan_bytes(const struct vox_nn_plan *plan, size_t *without_reuse_out);
/* Runs the reference layers. inputs[i] is the i-th input, (1, C, Z, Y, X) f32 of the planned
 * shape (any strides). Uses the context's pool. Does not allocate; fails only on a wrong
 * input shape or dtype. */
enum vox_status vox_nn_plan_forward(struct vox_ctx *ctx, struct vox_nn_plan *plan,
                                    const struct vox_tensor *inputs);
/* The i-th output after vox_nn_plan_forward: (1, C, Z, Y, X) f32, owned by the plan. */
const struct vox_tensor *vox_nn_plan_output(const struct vox_nn_plan *plan, int i);
/* Dense multiply-add FLOPs (2 per MAC) of one layer at the planned shape (0 for data moves). */
double vox_nn_layer_flops(const struct vox_net *net, const struct vox_nn_dims *dims, int layer);

/* ---- the fast forward pass (src/nn/fast*.c) ------------------------------------------------ */
/* The same contract as the reference plan, computed with JIT loop nests in the blocked channel
 * layout (convs, deconvs: bias, batch norm and activation fused) and blocked C passes (the
 * rest). Within f32 rounding of the reference (the sums are in f32, in the kernels' order);
 * bitwise identical for any thread count. Uses the context's ISA (VOX_ISA caps it). */

struct vox_nn_fast;

/* How convolutions run: by the cost model (FFT for large kernels where it is cheaper and its
 * cached kernel spectra are not too large, Winograd (F(4,3) along y and x, F(2,3) along z) for
 * 3x3x3 / 1x3x3 kernels where it is cheaper), always direct (JIT nest), FFT wherever it can
 * (convs; deconvs stay direct), or
 * Winograd wherever it can (convs of dilation 1 with kernel extents 1 or 3, two 3s at least;
 * the rest stay direct). */
enum vox_nn_conv_algo {
    VOX_NN_CONV_AUTO,
    VOX_NN_CONV_DIRECT,
    VOX_NN_CONV_FFT,
    VOX_NN_CONV_WINOGRAD
};

/* Measured conv times, cached (src/nn/fast_tune.c): where the cost model's times for direct,
 * FFT or Winograd lie within 2x of the best, the planner times those on a slab of the layer's
 * real shape and takes the fastest. Entries are keyed by (cpu model, ISA, threads, layer shape) and
 * kept in memory and in a text file, $XDG_CACHE_HOME/vox/plan-cache.txt (else
 * ~/.cache/vox/plan-cache.txt); VOX_PLAN_CACHE=off keeps them in memory only. A file that
 * cannot be read, parsed or written is ignored (a debug log line), never an error. */
struct vox_nn_tune;
enum vox_status vox_nn_tune_create(struct vox_ctx *ctx, struct vox_nn_tune **tune_out);
void vox_nn_tune_destroy(struct vox_nn_tune *t);
/* Layers timed so far, layers answered from the cache, and the file ("" when off). */
void vox_nn_tune_stats(const struct vox_nn_tune *t, int64_t *measured_out, int64_t *hits_out,
                       const char **path_out);

struct vox_nn_fast_options {
    enum vox_nn_conv_algo algo; /* VOX_NN_CONV_AUTO: the model, checked by tune if set */
    struct vox_nn_tune *tune;   /* NULL: the cost model alone (no timing, deterministic) */
};

/* Plans, packs the weights and compiles the kernels; allocates every buffer once. */
enum vox_status vox_nn_fast_create(struct vox_ctx *ctx, const struct vox_net *net,
                                   const struct vox_nn_weights *w, const int64_t patch[3],
                                   struct vox_nn_fast **fast_out);
/* The same with the convolution algorithm chosen by the caller. */
enum vox_status vox_nn_fast_create_algo(struct vox_ctx *ctx, const struct vox_net *net,
                                        const struct vox_nn_weights *w, const int64_t patch[3],
                                        enum vox_nn_conv_algo algo,
                                        struct vox_nn_fast **fast_out);
/* The same with options (opt NULL: AUTO, no tune). */
enum vox_status vox_nn_fast_create_opts(struct vox_ctx *ctx, const struct vox_net *net,
                                        const struct vox_nn_weights *w, const int64_t patch[3],
                                        const struct vox_nn_fast_options *opt,
                                        struct vox_nn_fast **fast_out);
void vox_nn_fast_destroy(struct vox_nn_fast *f);
/* inputs[i]: (1, C, Z, Y, X) f32 of the planned shape, any strides. Allocates nothing; fails
 * only on a wrong input shape or dtype. */
enum vox_status vox_nn_fast_forward(struct vox_ctx *ctx, struct vox_nn_fast *f,
                                    const struct vox_tensor *inputs);
/* The i-th output, (1, C, Z, Y, X) f32 in C order, owned by f and rewritten by every
 * vox_nn_fast_forward (it may be a view of the plan's own tensor: copy it to keep it). The
 * inputs of a forward pass are only read (a planar one in C order is read where it lies). */
const struct vox_tensor *vox_nn_fast_output(const struct vox_nn_fast *f, int i);
const struct vox_nn_dims *vox_nn_fast_dims(const struct vox_nn_fast *f);
/* Bytes f holds: activations after reuse, scratch, packed weights, outputs. */
size_t vox_nn_fast_bytes(const struct vox_nn_fast *f);
/* The bytes vox_nn_fast_create would hold for this patch, without allocating them (fails as
 * vox_net_shapes does for a patch the net cannot take). */
enum vox_status vox_nn_fast_estimate(struct vox_ctx *ctx, const struct vox_net *net,
                                     const int64_t patch[3], size_t *bytes_out);
/* The same for create_opts with this algo: where a measurement may pick either algorithm the
 * larger footprint counts, so the estimate holds whichever is chosen. */
enum vox_status vox_nn_fast_estimate_algo(struct vox_ctx *ctx, const struct vox_net *net,
                                          const int64_t patch[3], enum vox_nn_conv_algo algo,
                                          size_t *bytes_out);

/* Where a conv's algorithm came from. */
enum vox_nn_algo_source {
    VOX_NN_ALGO_NONE,     /* not a conv */
    VOX_NN_ALGO_MODEL,    /* the cost model (times far apart, no tune, or FFT too large) */
    VOX_NN_ALGO_FORCED,   /* VOX_NN_CONV_DIRECT / FFT */
    VOX_NN_ALGO_MEASURED, /* timed in this plan */
    VOX_NN_ALGO_CACHED    /* a measurement from the tune cache */
};

struct vox_nn_fast_layer {
    const char *algo; /* "pack", "jit", "jit+pad" (same padding), "jit+pool" / "jit+pad+pool"
                       * / "interp+pool" (a conv run slab by slab into the max-pool that reads
                       * it; that pool: "fused"), "fft", "winograd", "interp", "pass",
                       * "unpack" (an output layer fused into unpacking the result) */
    bool jit;
    int64_t block;    /* channels per block of its tensor */
    double flops;     /* vox_nn_layer_flops */
    double work;      /* the flops its algorithm performs (FFT: transforms + products;
                       * Winograd: the products + the floats its transforms move) */
    double bytes;     /* its inputs and output in the blocked layout (a conv run into its pool:
                       * the pool's output instead of its own; a fused layer: 0) */
    enum vox_nn_algo_source source;
    double ms_direct, ms_fft, ms_wino; /* measured (scaled to the whole layer), else 0 */
    double seconds; /* its time in the last vox_nn_fast_forward (inputs: packing; outputs:
                     * their unpacking too), 0 before the first */
};
void vox_nn_fast_layer_info(const struct vox_nn_fast *f, int layer,
                            struct vox_nn_fast_layer *info_out);

/* ---- volumes larger than a patch (src/nn/slide.c) ------------------------------------------ */
/* Slides the fast pass over a volume, reading and writing box by box (vox/io.h). Valid nets:
 * output tiles abut, exactly one pass over the volume. Same-padded nets: each patch is read
 * with a margin of (fov - 1) / 2 + 1, aligned to the pooling grid, and only its core is
 * written (cropping, no blending): equal to one pass over the volume when that is defined. */

struct vox_volume;
struct vox_nn_volume;

struct vox_nn_volume_options {
    int64_t patch[3];         /* all > 0: this input patch (snapped to one the net takes) */
    size_t mem_bytes;         /* else the largest patch whose plan fits (0: 2 GiB) */
    enum vox_dtype out_dtype; /* VOX_F32, or VOX_U8: round(255 * clamp(v, 0, 1)) */
    bool quiet;               /* no progress bar */
    enum vox_nn_conv_algo algo; /* conv algorithm (AUTO: model, checked by tune) */
    struct vox_nn_tune *tune;   /* NULL: the cost model alone */
    size_t io_bytes; /* what the caller's io holds while running (chunk caches and buffers):
                        counted against mem_bytes with the plan and the staging */
};

/* Plans for input volumes of spatial extent vol whose dtypes are in_dtypes (u8 is scaled by
 * 1/255, f32 read as is): the patch, the tiles, the fast plan, the staging buffers. */
enum vox_status vox_nn_volume_plan(struct vox_ctx *ctx, const struct vox_net *net,
                                   const struct vox_nn_weights *w, const int64_t vol[3],
                                   const enum vox_dtype *in_dtypes,
                                   const struct vox_nn_volume_options *opt,
                                   struct vox_nn_volume **v_out);
void vox_nn_volume_destroy(struct vox_nn_volume *v);
/* The chosen input patch, the output volume's spatial extent, the number of tiles. */
void vox_nn_volume_geometry(const struct vox_nn_volume *v, int64_t patch_out[3],
                            int64_t out_vol_out[3], int64_t *tiles_out);
/* The k-th output dataset's shape (C, Z', Y', X'). */
void vox_nn_volume_out_shape(const struct vox_nn_volume *v, int k, int64_t shape_out[4]);
const struct vox_nn_fast *vox_nn_volume_fast(const struct vox_nn_volume *v);
/* What the budget covers for the chosen patch: the plan (vox_nn_fast_estimate_algo), the
 * staging of one tile (inputs as read and as f32, the u8 output, the copy of a core that io
 * writes from), a fixed 8 MiB for the run (library code, thread stacks, libhdf5's lists)
 * and the options' io_bytes. */
size_t vox_nn_volume_bytes(const struct vox_nn_volume *v);
/* in[k]: the k-th input, (Z, Y, X) or (C, Z, Y, X) of the planned extent and dtype; out[k]:
 * datasets being written, (C, Z', Y', X') of the output extent and the options' dtype. */
enum vox_status vox_nn_volume_run(struct vox_ctx *ctx, struct vox_nn_volume *v,
                                  struct vox_volume *const *in, struct vox_volume *const *out);

#ifdef __cplusplus
}
#endif
#endif
