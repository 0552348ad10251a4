/*
 * vox/train.h: training ConvNets: a forward/backward graph over the reference layers, losses
 * with masks and class rebalancing, MALIS, targets from label volumes, SGD and Adam, random
 * patch sampling with augmentation from HDF5 volumes, and a deterministic, resumable training
 * loop.
 *
 *   labels --vox_train_targets--> target + mask   (affinities or boundary map)
 *   raw patch --vox_nn_graph_forward--> logits --vox_loss_compute--> loss, d loss / d logits
 *       --vox_nn_graph_backward--> d loss / d weights --vox_optim_step--> new weights
 *
 * After ZNN (znn-release python/train.py, cost_fn.py; reference note znn.md 1.8): single-patch
 * steps (optionally accumulated over several patches), per-patch rebalancing, the 16
 * flip/transpose augmentations. Unlike ZNN every step is deterministic: the same seed gives
 * bitwise identical weights for any thread count, and a run resumed from a checkpoint ends
 * where the uninterrupted run ends.
 *
 * The heavy layers go through struct vox_nn_kernels, so a fast implementation (JIT) can
 * replace the scalar reference one layer kind at a time.
 */
#ifndef VOX_TRAIN_H
#define VOX_TRAIN_H

#include "vox/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the graph: forward keeping every activation, then backward ------------------------- */

/* The convolution kernels the graph calls; each has the exact semantics of the reference
 * function it defaults to (vox_nn_ref_conv, ..._backward_data, ...), after a leading `self`
 * (the struct's own field, the implementation's state; NULL for the reference kernels). */
struct vox_nn_kernels {
    void *self;
    void (*conv)(void *, struct vox_pool *, const struct vox_tensor *, const struct vox_tensor *,
                 const struct vox_tensor *, const int64_t[3], const int64_t[3], enum vox_nn_act,
                 struct vox_tensor *);
    void (*conv_backward_data)(void *, struct vox_pool *, const struct vox_tensor *,
                               const struct vox_tensor *, const int64_t[3], const int64_t[3],
                               struct vox_tensor *);
    void (*conv_backward_weights)(void *, struct vox_pool *, const struct vox_tensor *,
                                  const struct vox_tensor *, const int64_t[3], const int64_t[3],
                                  struct vox_tensor *, struct vox_tensor *);
    void (*deconv)(void *, struct vox_pool *, const struct vox_tensor *, const struct vox_tensor *,
                   const struct vox_tensor *, enum vox_nn_act, struct vox_tensor *);
    void (*deconv_backward_data)(void *, struct vox_pool *, const struct vox_tensor *,
                                 const struct vox_tensor *, struct vox_tensor *);
    void (*deconv_backward_weights)(void *, struct vox_pool *, const struct vox_tensor *,
                                    const struct vox_tensor *, struct vox_tensor *,
                                    struct vox_tensor *);
    /* x[i] = act(x[i]), i < n, for the pointwise act (not softmax) of add, act and output
     * layers; NULL: the reference's, in double */
    void (*act)(void *, enum vox_nn_act, float *, int64_t);
    /* gx[i] = gy[i] * act'(from y[i]), i < n, for a pointwise act (not softmax) from the
     * layer's output y (gx may be gy); NULL: the reference's, in double */
    void (*act_backward)(void *, enum vox_nn_act, const float *, const float *, float *, int64_t);
    /* conv_backward_data writing gin (=) instead of adding to it, for an input gradient the
     * conv writes first (the graph skips zeroing it); NULL: gin zeroed, then
     * conv_backward_data */
    void (*conv_backward_data_set)(void *, struct vox_pool *, const struct vox_tensor *,
                                   const struct vox_tensor *, const int64_t[3], const int64_t[3],
                                   struct vox_tensor *);
};
/* The scalar reference kernels. */
const struct vox_nn_kernels *vox_nn_kernels_ref(void);

/* Fast kernels (src/nn/fast_train*.c): JIT loop nests (vox/loop.h) on the graph's NCDHW
 * tensors, vectorised along x: the forward conv as a direct convolution; backward-data as
 * the convolution of the zero-bordered output gradient with the flipped, transposed weights;
 * backward-weights as a nest with the weight dimensions as outputs (vectors along the output
 * channels, on a channels-last copy of the output gradient held a slab of z planes at a time)
 * and the spatial positions reduced in f32, in order. Kernels are compiled on first use for each
 * shape and kept; they run on the context's pool, each output element reduced in a fixed
 * order by one thread, so the results are bitwise identical for any thread count, and within
 * f32 rounding of the reference. A kernel that cannot be compiled or a scratch buffer that
 * cannot be allocated falls back to the reference kernel for that call. */
struct vox_nn_train_fast;
enum vox_status vox_nn_train_fast_create(struct vox_ctx *ctx, struct vox_nn_train_fast **f_out);
void vox_nn_train_fast_destroy(struct vox_nn_train_fast *f);
/* The kernel table (valid while f lives). */
const struct vox_nn_kernels *vox_nn_train_fast_kernels(const struct vox_nn_train_fast *f);
/* Calls that ran a compiled kernel, and calls that fell back to the reference. */
void vox_nn_train_fast_counts(const struct vox_nn_train_fast *f, int64_t *fast_out,
                              int64_t *fallback_out);
/* Forward and backward-data calls run by Winograd on the conv's phase view (dilated convs,
 * and z taps other than 1 and 3, folded into channels: src/nn/fast_phase.c). */
int64_t vox_nn_train_fast_phase_count(const struct vox_nn_train_fast *f);
/* Phase views for the convs they apply to: mode 0 where the conv has 64 MFLOP or more (the
 * default), 1 for every one (tests), -1 never; VOX_TRAIN_PHASE=0 or 1 sets -1 or 1. */
void vox_nn_train_fast_set_phase(struct vox_nn_train_fast *f, int mode);
/* The backward-weights slab: at most `floats` of the output gradient's channels-last copy at a
 * time (default 8 Mi; tests make it small to cover the slab tails). */
void vox_nn_train_fast_set_slab(struct vox_nn_train_fast *f, int64_t floats);
/* The Winograd convs' bands: about `bytes` of packed input at a time (default 4 MiB; tests
 * make it small so that every band runs one row of tiles). */
void vox_nn_train_fast_set_band(struct vox_nn_train_fast *f, int64_t bytes);
/* FFT convolution for the convs (forward, backward-data and backward-weights): mode 0 where
 * the planner's cost model puts it at under half the other algorithms' time within its memory
 * cap (the default: kernels of 5^3 and up on wide layers), 1 for every conv it can run (not
 * softmax; tests), -1 never. */
void vox_nn_train_fast_set_fft(struct vox_nn_train_fast *f, int mode);
/* At most `tiles` tiles per group in the FFT convs planned from now on (0: the cost model's;
 * tests make it small so that the weight gradient sums several groups). */
void vox_nn_train_fast_set_fft_group(struct vox_nn_train_fast *f, int64_t tiles);
/* FFT convs planned so far (each layer's forward, which its weight gradient shares, and its
 * backward-data count one each). */
int vox_nn_train_fast_fft_count(const struct vox_nn_train_fast *f);

struct vox_nn_graph;

/* A graph for net at input patch shape `patch`. Values and gradients share buffers where
 * their lifetimes in a step do not meet (a value from its layer's forward to its last reader,
 * forward or backward; a gradient from its first writer to its layer's backward), so after a
 * step only the inputs', the outputs' and the outputs' inputs' tensors are sure to hold theirs
 * (vox_nn_graph_set_keep: every one). kernels NULL: the reference ones. A conv with bn=yes is conv
 * (with its bias, if any), then batch norm (vox_nn_ref_bn_forward: training mode, the patch is the
 * batch), then its act; one whose output has a single voxel is VOX_INVALID_ARG. */
enum vox_status vox_nn_graph_create(struct vox_ctx *ctx, const struct vox_net *net,
                                    const int64_t patch[3], const struct vox_nn_kernels *kernels,
                                    struct vox_nn_graph **g_out);
void vox_nn_graph_destroy(struct vox_nn_graph *g);
/* keep: every value and gradient in a buffer of its own, to be read after a step (tests,
 * debugging; the memory of no reuse); false: buffers by lifetime again. The tensors' contents
 * are lost. */
enum vox_status vox_nn_graph_set_keep(struct vox_nn_graph *g, bool keep);
/* Tensors of more than `bytes` that a pass over memory writes fresh (an add layer's sums) are
 * stored past the caches (non-temporal stores: no read of each line first); default twice the
 * L3, so the next reader would get them from memory anyway. Tests set 0 to run that path. */
void vox_nn_graph_set_stream(struct vox_nn_graph *g, int64_t bytes);
/* The bytes of g's value and gradient buffers (batch norm's state and the kernels' scratch
 * not counted). */
int64_t vox_nn_graph_bytes(const struct vox_nn_graph *g);
const struct vox_nn_dims *vox_nn_graph_dims(const struct vox_nn_graph *g);
/* Layer i's tensor (after forward) and its gradient buffer: (1, C, Z, Y, X) f32. Set the
 * output's gradient before vox_nn_graph_backward; after it, a layer with an activation (or
 * batch norm) holds the gradient before them (the backward works in place), except an add
 * whose buffer the input it writes first shares (graph.c shared_input): that holds the
 * input's gradient. */
struct vox_tensor *vox_nn_graph_value(struct vox_nn_graph *g, int layer);
struct vox_tensor *vox_nn_graph_grad(struct vox_nn_graph *g, int layer);
/* Runs every layer; inputs[k] is the k-th input, (1, C, Z, Y, X) f32 of the planned shape. */
enum vox_status vox_nn_graph_forward(struct vox_ctx *ctx, struct vox_nn_graph *g,
                                     const struct vox_nn_weights *w,
                                     const struct vox_tensor *inputs);
/* Batch norm with the running statistics bn_mean/bn_var of the weights (PyTorch's eval mode)
 * instead of the batch's (training mode, the default). The backward pass needs a
 * training-mode forward. */
void vox_nn_graph_set_eval(struct vox_nn_graph *g, bool eval);
/* Whether the backward pass computes the gradients of the net's inputs (default: yes).
 * Training needs none: without them a conv or deconv reading an input skips its
 * backward-data convolution, and the inputs' gradient tensors are left unspecified; so is
 * the gradient of such a conv when a max-pooling is its only reader (the pooling computes
 * the conv's weight and bias gradients from its argmax voxels alone). */
void vox_nn_graph_set_input_grads(struct vox_nn_graph *g, bool on);
/* The forward pass runs vox_optim_require(u, i) before layer i (u NULL: none): the weights it
 * is given are those of a posted update (vox_optim_post), each layer's finished as it is
 * reached, the rest running on the threads' idle time meanwhile. */
struct vox_optim_deferred;
void vox_nn_graph_set_update(struct vox_nn_graph *g, struct vox_optim_deferred *u);
/* Folds the batch statistics of the last training-mode forward into w's bn_mean/bn_var
 * (vox_nn_bn_running_update: momentum 0.1, unbiased variance), as PyTorch does on every
 * training-mode forward. */
void vox_nn_graph_bn_update(const struct vox_nn_graph *g, struct vox_nn_weights *w);
/* Zeroes the gradients of the net's outputs and of their inputs (the logits a loss writes
 * the gradient of), as vox_loss_compute and the trainer need, but those a conv, max-pooling
 * or add writes first (=). The backward pass zeroes the others when their first writer adds:
 * a caller sets only the gradients of those layers. */
void vox_nn_graph_zero_grad(struct vox_nn_graph *g);
/* Back-propagates the gradients the caller put in the grad buffers (usually an output's, or
 * the output layer's input for a loss on logits) through every layer in reverse order, ADDING
 * the parameter gradients to gw (same shapes as w). */
void vox_nn_graph_backward(struct vox_ctx *ctx, struct vox_nn_graph *g,
                           const struct vox_nn_weights *w, struct vox_nn_weights *gw);

/* ---- targets and losses ------------------------------------------------------------------ */

enum vox_target { VOX_TARGET_AFFINITY, VOX_TARGET_BOUNDARY, VOX_TARGET_COUNT };
enum vox_loss { VOX_LOSS_SQUARE, VOX_LOSS_BCE, VOX_LOSS_SOFTMAX, VOX_LOSS_MALIS, VOX_LOSS_COUNT };
/* Class rebalancing of the loss: none; by the patch's own class counts; by the training
 * volumes' (counted once, vox_train_data_class_counts). */
enum vox_rebalance {
    VOX_REBALANCE_NONE,
    VOX_REBALANCE_PATCH,
    VOX_REBALANCE_VOLUME,
    VOX_REBALANCE_COUNT
};
const char *vox_target_str(enum vox_target t);
const char *vox_loss_str(enum vox_loss l);
bool vox_target_parse(const char *s, enum vox_target *out);
bool vox_loss_parse(const char *s, enum vox_loss *out);
/* The target channels: affinity 3; boundary 2 with softmax (boundary, interior), else 1. */
int64_t vox_target_channels(enum vox_target t, enum vox_loss l);

/* Targets from labels with a one-voxel margin: labels u64 (Z+2, Y+2, X+2), valid u8 of the same
 * shape (NULL: all valid; 0 marks voxels outside the volume or masked out). Writes
 * target and mask, f32 (C, Z, Y, X) for the interior (Z, Y, X), C = vox_target_channels:
 *   affinity  channel c at v links v and v - e_c, e = (z, y, x): 1 if both have the same
 *             nonzero label, else 0; mask 1 where both are valid;
 *   boundary  1 where the label is 0 or a valid 6-neighbour has another label, else 0; with
 *             2 channels the second is 1 - the first; mask 1 where v is valid. */
enum vox_status vox_train_targets(struct vox_ctx *ctx, enum vox_target t, enum vox_loss l,
                                  const struct vox_tensor *labels, const struct vox_tensor *valid,
                                  struct vox_tensor *target_out, struct vox_tensor *mask_out);

/* Long-range affinity offsets: at most this many beside the 3 nearest-neighbour channels. */
#define VOX_TRAIN_OFFSETS_MAX 8
/* Affinity targets with long-range channels: the 3 of vox_train_targets(VOX_TARGET_AFFINITY),
 * then channel 3 + k at v linking v and v - offsets[k] (any signs, not all 0): 1 if both have
 * the same nonzero label, else 0; mask 1 where both are valid and v - offsets[k] lies in the
 * interior (Z, Y, X) or its one-voxel margin (a link that leaves the labels box is not
 * trained). Same shapes as vox_train_targets, C = 3 + n. */
enum vox_status vox_train_affinity_targets(struct vox_ctx *ctx, const struct vox_tensor *labels,
                                           const struct vox_tensor *valid, int n,
                                           const int64_t (*offsets)[3],
                                           struct vox_tensor *target_out,
                                           struct vox_tensor *mask_out);

/* A loss on the logits x (1, C, Z, Y, X) f32 (the input of the net's output layer), whose
 * output layer applies `act`:
 *   square   l = (act(x) - t)^2, any act (softmax over channels included)
 *   bce      l = max(x, 0) - x t + log(1 + exp(-|x|)) (binary cross-entropy on logits); act
 *            must be sigmoid; d l / d x = sigmoid(x) - t
 *   softmax  l = -sum_c t_c log softmax(x)_c per voxel; act must be softmax, C >= 2
 * Weights: w = mask (NULL: 1) times the rebalance weight; per patch, per channel (per class for
 * softmax, the class being the target's argmax), positives (t > 0.5) get 0.5 N / n+ and the
 * others 0.5 N / n- (N = n+ + n-, masked counts), unless a class is absent. The loss is
 * sum w l / sum mask (0 when the mask is empty); `scale` times its gradient is ADDED to
 * grad (same shape as x). target and mask are (C, Z, Y, X) f32, the spatial shape of x.
 * VOX_LOSS_MALIS needs the labels: it is vox_loss_malis (here VOX_INVALID_ARG). */
enum vox_status vox_loss_compute(struct vox_ctx *ctx, enum vox_loss l, enum vox_rebalance r,
                                 const struct vox_tensor *x, enum vox_nn_act act,
                                 const struct vox_tensor *target, const struct vox_tensor *mask,
                                 double scale, struct vox_tensor *grad, double *loss_out);
/* Adds target's (C, Z, Y, X) class counts where mask > 0 (NULL: all) to pos[c] and neg[c]:
 * per channel its positives (t > 0.5) and the rest; for softmax per class c the voxels whose
 * target argmax is c and the rest. What VOX_REBALANCE_PATCH counts in a patch. */
void vox_loss_class_counts(enum vox_loss l, const struct vox_tensor *target,
                           const struct vox_tensor *mask, double *pos, double *neg);
/* The rebalancing weights of counts pos, neg (c each) for loss l: positives (softmax: the
 * class) 0.5 N / n+ (softmax N / (c n_c)), negatives 0.5 N / n-, N = n+ + n-; 1 and 1 where a
 * class is absent (or pos NULL). What the losses weigh by. */
void vox_loss_class_weights(enum vox_loss l, int64_t c, const double *pos, const double *neg,
                            double *wpos, double *wneg);
/* vox_loss_compute with VOX_REBALANCE_VOLUME: the class weights from counts pos, neg (C each,
 * e.g. a training volume's, vox_train_data_class_counts) instead of the patch's own. (With
 * r = VOX_REBALANCE_VOLUME, vox_loss_compute itself is VOX_INVALID_ARG.) */
enum vox_status vox_loss_compute_counts(struct vox_ctx *ctx, enum vox_loss l, const double *pos,
                                        const double *neg, const struct vox_tensor *x,
                                        enum vox_nn_act act, const struct vox_tensor *target,
                                        const struct vox_tensor *mask, double scale,
                                        struct vox_tensor *grad, double *loss_out);

/* MALIS (src/nn/malis.c; Turaga et al. 2009, constrained: Funke et al. 2018) on affinities
 * (3, Z, Y, X) in vox's convention. The graph: the voxels of the patch, and the edges (c, v)
 * whose both ends lie in the patch and whose mask (NULL: all 1) is > 0. The objects: each
 * nonzero label of `labels` (u64 (Z, Y, X), any strides; borrowed) split into its pieces
 * connected through graph edges; label 0 is in no pair. Kruskal builds the maximum spanning
 * tree in a total order (affinity descending, then edge index c*Z*Y*X + v ascending; -0 as
 * +0); a tree edge joining components C1, C2 is the maximin edge of the pairs C1 x C2: npos
 * of them in one object, nneg in two. Constrained: npos from the tree on max(A, A_gt), nneg
 * from the tree on min(A, A_gt), A_gt = 1 on links inside an object, else 0.
 * vox_malis_pairs writes the exact counts per edge into npos_out, nneg_out (3 Z Y X int64
 * each, in aff's element order; 0 off the tree). aff: contiguous f32. */
enum vox_status vox_malis_pairs(struct vox_ctx *ctx, const struct vox_tensor *aff,
                                const struct vox_tensor *labels, const struct vox_tensor *mask,
                                bool constrained, int64_t *npos_out, int64_t *nneg_out);
/* The MALIS loss on the logits x (1, 3, Z, Y, X) f32, a = act(x), act sigmoid or linear:
 *     loss = sum_e [npos_e (1 - a_e)^2 + nneg_e a_e^2] / sum_e (npos_e + nneg_e)
 * (square loss weighted by the pair counts, normalised by the pairs counted; 0 when none).
 * scale times its gradient (the counts held fixed, as they are piecewise constant in x) is
 * ADDED to grad (x's shape). mask: (3, Z, Y, X) f32 or NULL. Single-threaded, bitwise
 * deterministic. */
enum vox_status vox_loss_malis(struct vox_ctx *ctx, const struct vox_tensor *x, enum vox_nn_act act,
                               const struct vox_tensor *labels, const struct vox_tensor *mask,
                               bool constrained, double scale, struct vox_tensor *grad,
                               double *loss_out);

/* ---- optimizers --------------------------------------------------------------------------- */

enum vox_optim_kind { VOX_OPTIM_SGD, VOX_OPTIM_ADAM, VOX_OPTIM_COUNT };
const char *vox_optim_str(enum vox_optim_kind k);
bool vox_optim_parse(const char *s, enum vox_optim_kind *out);

struct vox_optim_params {
    enum vox_optim_kind kind;
    double lr;            /* step size; default 0.01 (sgd), 0.001 (adam) */
    double momentum;      /* sgd; default 0.9 */
    double weight_decay;  /* L2, added to the gradient as wd * w; default 0 */
    double beta1, beta2;  /* adam; 0.9, 0.999 */
    double eps;           /* adam; 1e-8 */
    int64_t anneal_every; /* lr *= anneal_factor every this many steps; 0: never (default) */
    double anneal_factor; /* default 0.1 */
};
void vox_optim_defaults(enum vox_optim_kind k, struct vox_optim_params *p);
enum vox_status vox_optim_check(struct vox_ctx *ctx, const struct vox_optim_params *p);

/* Step t (1-based) in double, stored in f32, element by element (blocks of elements on ctx's
 * threads; ctx NULL: on the calling thread; the same bits either way):
 *   g' = g + wd w;  lr_t = lr * factor^floor((t - 1) / every)
 *   sgd   m = momentum m + g';  w -= lr_t m
 *   adam  m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2;
 *         w -= lr_t (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 * m and v (same shapes as w; v unused by sgd) are the optimizer state. bn_mean and bn_var
 * (running statistics, not trained) are skipped. */
void vox_optim_step(struct vox_ctx *ctx, const struct vox_optim_params *p, int64_t t,
                    struct vox_nn_weights *w, const struct vox_nn_weights *g,
                    struct vox_nn_weights *m, struct vox_nn_weights *v);

/* The update of one step run in the background, the ZNN way (its weight updates are
 * unprivileged tasks that overlap the next forward pass): vox_optim_post hands step t's
 * update (vox_optim_step's arithmetic, the same bits) to the threads of ctx's pool, which take
 * its blocks of elements, the first layers first, whenever they would wait between parallel
 * loops; vox_optim_require(u, i) runs what is left of layer i's blocks (or waits for those a
 * thread has taken) before its weights are read (vox_nn_graph_set_update: the graph's forward
 * does it before each layer); vox_optim_settle runs all that is left. w, g, m and v must not
 * change (nor g be reused) until their layers are required or the update settled. The pool
 * runs one update's blocks on its idle time: a post on a pool another posted update uses
 * takes that over (both still finish through require and settle; two trainers on one
 * context just overlap less). */
struct vox_optim_deferred;
enum vox_status vox_optim_deferred_create(struct vox_ctx *ctx, const struct vox_nn_weights *w,
                                          struct vox_optim_deferred **u_out);
void vox_optim_deferred_destroy(struct vox_optim_deferred *u); /* settles it first */
void vox_optim_post(struct vox_optim_deferred *u, const struct vox_optim_params *p, int64_t t,
                    struct vox_nn_weights *w, const struct vox_nn_weights *g,
                    struct vox_nn_weights *m, struct vox_nn_weights *v);
void vox_optim_require(struct vox_optim_deferred *u, int layer); /* u NULL: nothing */
void vox_optim_settle(struct vox_optim_deferred *u);             /* u NULL: nothing */
/* Blocks of a posted update run by waiting threads (the pool's idle work) and on request
 * (require or settle), since the object was created: how much the overlap took. */
void vox_optim_deferred_counts(const struct vox_optim_deferred *u, int64_t *idle_out,
                               int64_t *required_out);

/* ---- data ----------------------------------------------------------------------------------- */

enum { VOX_TRAIN_EXTRA_MAX = 3 };

/* One training volume: raw (u8, scaled to [0, 1], or f32; (Z, Y, X)), labels (u8/u16/u32/u64/
 * i32, the raw's shape) and an optional mask (any of those dtypes; > 0 counts). Specs as in
 * vox/io.h ("file.h5:/raw"). extra[0..n_extra) are further net inputs of the raw's shape and
 * dtypes (e.g. a first net's boundary map for recursive training, znn.md 4.2): sampled at the
 * raw's position with the same flip/transpose, without grey-value or missing-section
 * augmentation. Every volume of one data set has the same n_extra. */
struct vox_train_source {
    const char *raw, *labels, *mask;
    const char *extra[VOX_TRAIN_EXTRA_MAX];
    int n_extra;
};

/* Augmentations, each drawn per patch from the sampler's generator. */
struct vox_augment {
    bool flips;          /* one of the 16 z/y/x flips and x-y transposes, uniformly */
    double grey_scale;   /* raw * U(1 - s, 1 + s); 0: off */
    double grey_shift;   /* raw + U(-s, s); 0: off */
    double missing_rate; /* each input section becomes 0 with this probability (Z > 1) */
    /* each input section is shifted in y and x by a whole number of voxels uniform in
     * [-misalign_max, misalign_max] (edge voxels repeated into what it leaves) with this
     * probability (Z > 1; the labels stay: the net learns to look through a slipped section) */
    double misalign_rate;
    int misalign_max;
    /* each input section is blurred (a 2D Gaussian of sigma uniform in (0, blur_sigma],
     * edges repeated) with this probability */
    double blur_rate, blur_sigma;
};

struct vox_train_data;
/* Opens the volumes (read block-wise, one patch at a time) and checks shapes: labels and mask
 * must have the raw's shape. */
enum vox_status vox_train_data_open(struct vox_ctx *ctx, const struct vox_train_source *src, int n,
                                    struct vox_train_data **d_out);
void vox_train_data_close(struct vox_train_data *d);
/* Net inputs per patch: 1 + n_extra. */
int vox_train_data_inputs(const struct vox_train_data *d);

/* A 64-bit generator (splitmix64): the whole state is one word, saved in checkpoints. */
uint64_t vox_train_rand(uint64_t *state);
/* Uniform in [0, 1) from 53 bits. */
double vox_train_uniform(uint64_t *state);

/* Samples one patch: a volume with probability proportional to its number of positions, a
 * position uniformly where the input box `in` fits, then the augmentation. Writes the inputs
 * inputs_out[0 .. vox_train_data_inputs) (1, 1, Z, Y, X) f32 (raw first, then the extras) and, for
 * the output box (`out` voxels at `offset` in the input), the labels u64 and valid u8 with a
 * one-voxel margin (out + 2 per axis), in the augmented frame. Fails (VOX_INVALID_ARG) when no
 * volume holds the input box. */
/* The class counts of the targets of t (and loss l) over every voxel of every volume's labels
 * where valid (labelled, mask > 0; a link to outside the volume is not), as
 * vox_loss_class_counts counts a patch: pos and neg get vox_target_channels(t, l) values.
 * Unaugmented (a transposed patch's y channel is the volume's x). Read slab by slab. */
enum vox_status vox_train_data_class_counts(struct vox_ctx *ctx, struct vox_train_data *d,
                                            enum vox_target t, enum vox_loss l, double *pos,
                                            double *neg);
enum vox_status vox_train_data_sample(struct vox_ctx *ctx, struct vox_train_data *d, uint64_t *rng,
                                      const int64_t in[3], const int64_t out[3],
                                      const int64_t offset[3], const struct vox_augment *aug,
                                      struct vox_tensor *inputs_out, struct vox_tensor *labels_out,
                                      struct vox_tensor *valid_out);

/* ---- the training loop ---------------------------------------------------------------------- */

struct vox_train_options {
    enum vox_target target;
    enum vox_loss loss;
    enum vox_rebalance rebalance;
    struct vox_optim_params optim;
    int64_t patch[3];      /* input patch, z, y, x */
    int64_t accumulate;    /* patches per step (gradient averaged); >= 1 */
    uint64_t seed;         /* weights init and sampling */
    enum vox_nn_init init; /* for fresh weights */
    struct vox_augment aug;
    const struct vox_nn_kernels *kernels; /* NULL: the reference kernels; borrowed */
    /* affinity targets only: long-range channels after the nearest 3
     * (vox_train_affinity_targets); the net's output has 3 + n_offsets channels. Not with
     * MALIS or --rebalance volume. */
    int n_offsets;
    int64_t offsets[VOX_TRAIN_OFFSETS_MAX][3];
};
void vox_train_options_defaults(struct vox_train_options *o);

struct vox_trainer;
/* A trainer for net (borrowed; must outlive it) on `data` (borrowed). Checks the options, the
 * net (vox_train_data_inputs(data) inputs with 1 channel each, one output with the target's
 * channels, the loss's act) and the patch against the field of view. w0 NULL: fresh weights from
 * (init, seed). */
enum vox_status vox_trainer_create(struct vox_ctx *ctx, const struct vox_net *net,
                                   const struct vox_train_options *o,
                                   const struct vox_nn_weights *w0, struct vox_train_data *data,
                                   struct vox_trainer **tr_out);
void vox_trainer_destroy(struct vox_trainer *tr);
/* One step: `accumulate` patches, forward + loss + backward each, then the optimizer.
 * *loss_out: the mean loss of the patches. A NaN or infinite loss is VOX_INVALID_ARG and
 * leaves the weights and state untouched. */
enum vox_status vox_trainer_step(struct vox_ctx *ctx, struct vox_trainer *tr, double *loss_out);
/* The mean loss over `patches` patches of `val` drawn from a fixed seed (no augmentation),
 * without touching the training state. */
enum vox_status vox_trainer_validate(struct vox_ctx *ctx, struct vox_trainer *tr,
                                     struct vox_train_data *val, int64_t patches, double *loss_out);
/* vox_trainer_validate's patches scored as segmentations too: each patch's output (affinities;
 * a boundary map becomes affinities 1 - max(p_u, p_v)) through vox_segment (default
 * parameters, no size merge or dust), its merge history cut at each threshold 0.05, 0.10, ...,
 * 0.95 and scored against the patch's labels (label 0 and masked voxels not counted).
 * rand_error: the lowest over the thresholds of the patches' mean adapted Rand error;
 * threshold: where (the lower one on ties). */
struct vox_val_scores {
    double loss, rand_error, threshold;
};
enum vox_status vox_trainer_validate_scores(struct vox_ctx *ctx, struct vox_trainer *tr,
                                            struct vox_train_data *val, int64_t patches,
                                            struct vox_val_scores *out);
int64_t vox_trainer_iteration(const struct vox_trainer *tr);
/* With VOX_REBALANCE_VOLUME: the training volumes' class counts the loss weighs by (pos and
 * neg get vox_target_channels values); false (nothing written) otherwise. */
bool vox_trainer_class_counts(const struct vox_trainer *tr, double *pos, double *neg);
const struct vox_nn_weights *vox_trainer_weights(const struct vox_trainer *tr);
/* Output voxels per patch (for voxels/s). */
int64_t vox_trainer_patch_voxels(const struct vox_trainer *tr);
/* The bytes of the graph's values and gradients at the patch (vox_nn_graph_bytes): most of a
 * step's memory; it grows with the patch's voxels. */
int64_t vox_trainer_graph_bytes(const struct vox_trainer *tr);

/* Checkpoints: weights, optimizer state, iteration and generator state in one file with a
 * checksum, written atomically (temporary file, fsync, rename). Loading checks the magic, the
 * net (layer names and parameter shapes), the optimizer kind and the checksum: a corrupted or
 * foreign file is VOX_FORMAT with a message naming the file and the check that failed. */
enum vox_status vox_trainer_save(struct vox_ctx *ctx, const struct vox_trainer *tr,
                                 const char *path);
enum vox_status vox_trainer_load(struct vox_ctx *ctx, struct vox_trainer *tr, const char *path);

#ifdef __cplusplus
}
#endif
#endif
