/*
 * graph.c: the training graph: a forward pass that keeps every layer's tensor, and a backward
 * pass that walks the layers in reverse, adding each layer's input and parameter gradients.
 *
 * Unlike the inference plan (forward.c) no buffer is reused and batch norm is not folded: a
 * conv with bn=yes runs the conv without activation, then batch norm with the batch's
 * statistics (training mode; ref_bn.c) or the running ones (eval mode), then the activation,
 * keeping xhat and the batch's mean and variance for the backward and for the running
 * statistics (vox_nn_graph_bn_update). A layer with an activation keeps its
 * post-activation tensor; its backward first maps the output gradient to the pre-activation
 * gradient (vox_nn_ref_act_backward, in place: after the backward pass a layer's gradient
 * tensor holds the gradient before its activation, and batch norm's), then calls the layer's
 * adjoint.
 * Gradients accumulate (+=), so a tensor read by several layers sums their contributions in
 * reverse layer order, deterministically; the first contribution is written with = where
 * its layer can (g->setter), so no zeroing. An add's gradient and that of the input it
 * writes first share one buffer (shared_input): after the backward pass that buffer holds the
 * input's gradient (its slope and batch norm applied in place), not the add's. The
 * convolutions go through struct vox_nn_kernels.
 */
#include "internal.h"
#include "vox/train.h"

#include <emmintrin.h> /* SSE2, the baseline */
#include <string.h>

struct vox_nn_graph {
    struct vox_ctx *ctx;
    const struct vox_net *net;
    struct vox_nn_kernels k;
    struct vox_nn_dims *dims;
    struct vox_tensor *val, *grad; /* per layer, owned */
    struct vox_tensor *xhat;       /* per layer: bn=yes convs' normalised values, else empty */
    double **stats;                /* per layer: bn=yes convs' mean[C] then var[C], else NULL */
    bool eval;                     /* batch norm with the running statistics */
    bool no_input_grads;           /* vox_nn_graph_set_input_grads(g, false) */
    bool *slope_done;              /* per layer: its gradient already holds the act's slope (its
                                      one consumer, a max-pooling, applied it: pre_act_grad) */
    bool *bw_done;                 /* per layer: a conv whose gradients its max-pooling computed
                                      (pool_conv_grads): its own backward is skipped */
    bool *sole;                    /* per layer: its one consumer is a conv, max-pooling or add */
    int *setter;                   /* per layer: the consumer whose backward writes its gradient
                                      first (the highest-numbered: the backward runs in reverse)
                                      where that is a conv, max-pooling or add, which then writes
                                      it with = (no zeroing: vox_nn_graph_zero_grad); else -1 */
    int *shares;                   /* per layer: the add whose gradient buffer its gradient is a
                                      view of (shared_input), else 0 */
    int *zero_at;                  /* per layer: the layer before whose backward its gradient
                                      is zeroed (its first writer adds), else -1 */
    void **bufs;                   /* the buffers every value and gradient is a view of */
    int nbufs;
    int64_t buf_bytes;             /* theirs, in all */
    bool keep;                     /* vox_nn_graph_set_keep: a buffer per tensor */
    int64_t stream_bytes;          /* vox_nn_graph_set_stream */
    struct vox_optim_deferred *update; /* vox_nn_graph_set_update */
    uint8_t **pool_arg;  /* per layer: max-pooling's and the max-filter's argmax taps */
    uint8_t *mf_scratch; /* max-filter backward: mf_bytes per thread (a row of doubles) */
    int64_t mf_bytes;
    int mf_threads;
};

/* The reference layers behind the kernel table's leading `self`. */
static void ref_conv(void *self, struct vox_pool *pool, const struct vox_tensor *in,
                     const struct vox_tensor *w, const struct vox_tensor *b, const int64_t dil[3],
                     const int64_t pad[3], enum vox_nn_act act, struct vox_tensor *out)
{
    (void)self;
    vox_nn_ref_conv(pool, in, w, b, dil, pad, act, out);
}

static void ref_conv_bd(void *self, struct vox_pool *pool, const struct vox_tensor *gout,
                        const struct vox_tensor *w, const int64_t dil[3], const int64_t pad[3],
                        struct vox_tensor *gin)
{
    (void)self;
    vox_nn_ref_conv_backward_data(pool, gout, w, dil, pad, gin);
}

static void ref_conv_bw(void *self, struct vox_pool *pool, const struct vox_tensor *in,
                        const struct vox_tensor *gout, const int64_t dil[3], const int64_t pad[3],
                        struct vox_tensor *gw, struct vox_tensor *gb)
{
    (void)self;
    vox_nn_ref_conv_backward_weights(pool, in, gout, dil, pad, gw, gb);
}

static void ref_deconv(void *self, struct vox_pool *pool, const struct vox_tensor *in,
                       const struct vox_tensor *w, const struct vox_tensor *b, enum vox_nn_act act,
                       struct vox_tensor *out)
{
    (void)self;
    vox_nn_ref_deconv(pool, in, w, b, act, out);
}

static void ref_deconv_bd(void *self, struct vox_pool *pool, const struct vox_tensor *gout,
                          const struct vox_tensor *w, struct vox_tensor *gin)
{
    (void)self;
    vox_nn_ref_deconv_backward_data(pool, gout, w, gin);
}

static void ref_deconv_bw(void *self, struct vox_pool *pool, const struct vox_tensor *in,
                          const struct vox_tensor *gout, struct vox_tensor *gw,
                          struct vox_tensor *gb)
{
    (void)self;
    vox_nn_ref_deconv_backward_weights(pool, in, gout, gw, gb);
}

static const struct vox_nn_kernels ref_kernels = {
    NULL,          ref_conv,      ref_conv_bd, ref_conv_bw, ref_deconv,
    ref_deconv_bd, ref_deconv_bw, NULL,        NULL,        NULL,
};

const struct vox_nn_kernels *vox_nn_kernels_ref(void)
{
    return &ref_kernels;
}

void vox_nn_graph_destroy(struct vox_nn_graph *g)
{
    if (!g)
        return;
    for (int i = 0; g->val && g->grad && g->xhat && g->stats && i < g->net->n_layers; i++) {
        vox_tensor_free(g->ctx, &g->val[i]);
        vox_tensor_free(g->ctx, &g->grad[i]);
        vox_tensor_free(g->ctx, &g->xhat[i]);
        vox_free(g->ctx, g->stats[i]);
    }
    for (int b = 0; g->bufs && b < g->nbufs; b++)
        vox_free(g->ctx, g->bufs[b]);
    vox_free(g->ctx, g->bufs);
    vox_free(g->ctx, g->zero_at);
    vox_free(g->ctx, g->xhat);
    vox_free(g->ctx, g->sole);
    vox_free(g->ctx, g->setter);
    vox_free(g->ctx, g->shares);
    vox_free(g->ctx, g->slope_done);
    vox_free(g->ctx, g->bw_done);
    vox_free(g->ctx, g->mf_scratch);
    for (int i = 0; g->pool_arg && i < g->net->n_layers; i++)
        vox_free(g->ctx, g->pool_arg[i]);
    vox_free(g->ctx, g->pool_arg);
    vox_free(g->ctx, g->stats);
    vox_free(g->ctx, g->val);
    vox_free(g->ctx, g->grad);
    vox_free(g->ctx, g->dims);
    vox_free(g->ctx, g);
}

/* The batch-norm state of every bn=yes conv: xhat and the statistics. A channel of one value
 * has no batch variance (PyTorch refuses it too). */
static enum vox_status bn_alloc(struct vox_ctx *ctx, struct vox_nn_graph *g)
{
    for (int i = 0; i < g->net->n_layers; i++) {
        const struct vox_nn_layer *l = &g->net->layers[i];
        if (l->kind != VOX_NN_CONV || !l->bn)
            continue;
        const int64_t *d = g->dims[i].shape;
        if (d[1] * d[2] * d[3] == 1)
            return vox_fail(ctx, VOX_INVALID_ARG,
                            "%s:%d: layer '%s' has bn=yes and an output of 1x1x1 voxels: "
                            "batch statistics need more than 1 value per channel",
                            g->net->source, l->line, l->name);
        int64_t shape[5] = {1, d[0], d[1], d[2], d[3]};
        enum vox_status s = vox_tensor_alloc(ctx, &g->xhat[i], VOX_F32, 5, shape);
        if (s != VOX_OK)
            return s;
        if (!(g->stats[i] = vox_calloc(ctx, (size_t)(2 * d[0]), sizeof(double))))
            return VOX_OUT_OF_MEMORY;
    }
    return VOX_OK;
}

/* Whether add i writes the gradient of its input k first (g->setter) and k is the first of
 * the add's inputs that are that layer. */
static bool first_copy_set(const struct vox_nn_graph *g, int i, int k)
{
    const struct vox_nn_layer *l = &g->net->layers[i];
    bool first = g->setter[l->in[k]] == i;
    for (int q = 0; q < k; q++)
        first = first && l->in[q] != l->in[k];
    return first;
}

/* The input of add i whose gradient is a view of the add's own gradient buffer, or -1: the
 * first input the add writes with =. The add's gradient (after its act's slope, in place) is
 * that input's, so the add's backward does not copy it, and the pair takes one buffer (RSUNet:
 * each module's residual conv and each upsampling deconv, 84 MB at full resolution). The
 * input's other consumers, if any, are lower-numbered: their backward adds into it after the
 * add's backward has read the buffer. */
static int shared_input(const struct vox_nn_graph *g, int i)
{
    const struct vox_nn_layer *l = &g->net->layers[i];
    if (l->kind != VOX_NN_ADD)
        return -1;
    for (int k = 0; k < l->n_in; k++)
        if (first_copy_set(g, i, k))
            return k;
    return -1;
}

/* ---- Buffers by lifetime (live.c). Times: layer i's forward at i (the inputs' copy at
 * -1), the loss at n, layer i's backward at 2n - i; the caller's tensors live to 2n + 1. */

static int bw_time(const struct vox_nn_graph *g, int i)
{
    return 2 * g->net->n_layers - i;
}

/* Whether layer j's value and gradient are the caller's: a net input or output, or an output's
 * input (the logits a loss reads and writes the gradient of). */
static bool external(const struct vox_nn_graph *g, int j)
{
    const struct vox_net *net = g->net;
    if (net->layers[j].kind == VOX_NN_INPUT || net->layers[j].kind == VOX_NN_OUTPUT)
        return true;
    for (int c = j + 1; c < net->n_layers; c++)
        for (int k = 0; k < net->layers[c].n_in; k++)
            if (net->layers[c].in[k] == j && net->layers[c].kind == VOX_NN_OUTPUT)
                return true;
    return false;
}

/* The highest-numbered consumer of layer j (the first to write its gradient), or -1. */
static int first_writer(const struct vox_nn_graph *g, int j)
{
    for (int c = g->net->n_layers - 1; c > j; c--)
        for (int k = 0; k < g->net->layers[c].n_in; k++)
            if (g->net->layers[c].in[k] == j)
                return c;
    return -1;
}

/* Layer j's value: written by its forward, read by its consumers' forward, by the backward of
 * a consumer that reads its input (a conv's or deconv's weight gradient, max-pooling and
 * max-filtering) and by its own backward where that takes the act's slope (or a pooling's
 * argmax conv gradients, pool_conv_grads, its output). */
static void val_life(const struct vox_nn_graph *g, int j, struct vox_nn_live *it)
{
    const struct vox_net *net = g->net;
    const struct vox_nn_layer *l = &net->layers[j];
    it->start = it->end = l->kind == VOX_NN_INPUT ? -1 : j;
    if (external(g, j) || g->keep) {
        it->end = 2 * net->n_layers + 1;
        return;
    }
    if (l->act != VOX_ACT_LINEAR || l->kind == VOX_NN_POOL)
        it->end = bw_time(g, j);
    for (int c = j + 1; c < net->n_layers; c++)
        for (int k = 0; k < net->layers[c].n_in; k++) {
            if (net->layers[c].in[k] != j)
                continue;
            const enum vox_nn_kind kc = net->layers[c].kind;
            const int t = kc == VOX_NN_CONV || kc == VOX_NN_DECONV || kc == VOX_NN_POOL ||
                                  kc == VOX_NN_MAXFILTER
                              ? bw_time(g, c)
                              : c;
            it->end = t > it->end ? t : it->end;
        }
}

/* Layer j's gradient: written first by its highest-numbered consumer's backward (or, the
 * caller's, from the loss on), read last by its own backward; a gradient that is a view of an
 * add's (shared_input) widens the add's. */
static void grad_life(const struct vox_nn_graph *g, int j, struct vox_nn_live *it)
{
    const int fw = first_writer(g, j);
    it->start = fw < 0 || external(g, j) ? g->net->n_layers : bw_time(g, fw);
    it->end = external(g, j) || g->keep ? 2 * g->net->n_layers + 1 : bw_time(g, j);
}

/* Every value and gradient a view of one of g->bufs: a buffer each with g->keep, else by
 * lifetime. */
static enum vox_status alloc_tensors(struct vox_nn_graph *g)
{
    const int n = g->net->n_layers;
    struct vox_ctx *ctx = g->ctx;
    struct vox_nn_live *it = vox_calloc(ctx, (size_t)(2 * n), sizeof *it);
    int *order = vox_calloc(ctx, (size_t)(2 * n), sizeof *order);
    int *end = vox_calloc(ctx, (size_t)(2 * n), sizeof *end);
    int64_t *bytes = vox_calloc(ctx, (size_t)(2 * n), sizeof *bytes);
    enum vox_status s = VOX_OUT_OF_MEMORY;
    if (!it || !order || !end || !bytes)
        goto done;
    for (int i = 0; i < n; i++) {
        const int64_t *d = g->dims[i].shape;
        it[i].bytes = it[n + i].bytes = d[0] * d[1] * d[2] * d[3] * (int64_t)sizeof(float);
        val_life(g, i, &it[i]);
        grad_life(g, i, &it[n + i]);
    }
    for (int i = 0; i < n; i++) { /* a view's life into its owner's (chains end at an owner) */
        int o = i;
        while (g->shares[o])
            o = g->shares[o];
        struct vox_nn_live *a = &it[n + o], *v = &it[n + i];
        a->start = v->start < a->start ? v->start : a->start;
        a->end = v->end > a->end ? v->end : a->end;
        if (o != i)
            v->bytes = 0;
    }
    g->nbufs = vox_nn_live_assign(it, 2 * n, order, bytes, end);
    if (!(g->bufs = vox_calloc(ctx, (size_t)g->nbufs, sizeof *g->bufs)))
        goto done;
    g->buf_bytes = 0;
    for (int b = 0; b < g->nbufs; b++) {
        if (!(g->bufs[b] = vox_calloc(ctx, (size_t)bytes[b], 1)))
            goto done;
        g->buf_bytes += bytes[b];
    }
    for (int i = n - 1; i >= 0; i--) { /* an owner before its views */
        int64_t shape[5] = {1};
        memcpy(shape + 1, g->dims[i].shape, 4 * sizeof(int64_t));
        vox_nn_tensor_view(&g->val[i], g->bufs[it[i].buf], shape);
        if (g->shares[i])
            g->grad[i] = g->grad[g->shares[i]];
        else
            vox_nn_tensor_view(&g->grad[i], g->bufs[it[n + i].buf], shape);
    }
    s = VOX_OK;
done:
    vox_free(ctx, it);
    vox_free(ctx, order);
    vox_free(ctx, end);
    vox_free(ctx, bytes);
    return s;
}

enum vox_status vox_nn_graph_create(struct vox_ctx *ctx, const struct vox_net *net,
                                    const int64_t patch[3], const struct vox_nn_kernels *kernels,
                                    struct vox_nn_graph **g_out)
{
    *g_out = NULL;
    for (int i = 0; i < net->n_layers; i++)
        if (net->layers[i].kind == VOX_NN_MPF)
            return vox_fail(ctx, VOX_UNSUPPORTED,
                            "%s:%d: layer '%s' is mpf; training takes the dense form (maxfilter "
                            "and dilated convs, docs/nets.md), not max-pooling fragments",
                            net->source, net->layers[i].line, net->layers[i].name);
    struct vox_nn_graph *g = vox_calloc(ctx, 1, sizeof *g);
    if (!g)
        return VOX_OUT_OF_MEMORY;
    g->ctx = ctx;
    g->stream_bytes = 2 * (vox_ctx_cpu(ctx)->l3_bytes > 0 ? vox_ctx_cpu(ctx)->l3_bytes : 8 << 20);
    g->net = net;
    g->k = kernels ? *kernels : ref_kernels;
    size_t n = (size_t)net->n_layers;
    enum vox_status s = VOX_OUT_OF_MEMORY;
    if (!(g->dims = vox_calloc(ctx, n, sizeof *g->dims)) ||
        !(g->val = vox_calloc(ctx, n, sizeof *g->val)) ||
        !(g->grad = vox_calloc(ctx, n, sizeof *g->grad)) ||
        !(g->xhat = vox_calloc(ctx, n, sizeof *g->xhat)) ||
        !(g->stats = vox_calloc(ctx, n, sizeof *g->stats)) ||
        !(g->sole = vox_calloc(ctx, n, sizeof *g->sole)) ||
        !(g->setter = vox_calloc(ctx, n, sizeof *g->setter)) ||
        !(g->shares = vox_calloc(ctx, n, sizeof *g->shares)) ||
        !(g->zero_at = vox_calloc(ctx, n, sizeof *g->zero_at)) ||
        !(g->slope_done = vox_calloc(ctx, n, sizeof *g->slope_done)) ||
        !(g->bw_done = vox_calloc(ctx, n, sizeof *g->bw_done)))
        goto fail;
    for (int i = 0; i < net->n_layers; i++) {
        int uses = 0;
        for (int j = 0; j < net->n_layers; j++)
            for (int k = 0; k < net->layers[j].n_in; k++)
                if (net->layers[j].in[k] == i) {
                    enum vox_nn_kind c = net->layers[j].kind;
                    uses++;
                    g->sole[i] = c == VOX_NN_CONV || c == VOX_NN_POOL || c == VOX_NN_ADD ||
                                 c == VOX_NN_MAXFILTER;
                }
        g->sole[i] = g->sole[i] && uses == 1;
        const int fw = first_writer(g, i);
        const enum vox_nn_kind kw = fw >= 0 ? net->layers[fw].kind : VOX_NN_INPUT;
        g->setter[i] =
            kw == VOX_NN_CONV || kw == VOX_NN_POOL || kw == VOX_NN_ADD || kw == VOX_NN_MAXFILTER
                ? fw
                : -1;
    }
    if ((s = vox_net_shapes(ctx, net, patch, g->dims)) != VOX_OK ||
        (s = bn_alloc(ctx, g)) != VOX_OK)
        goto fail;
    for (int i = 0; i < net->n_layers; i++) {
        const int k = shared_input(g, i);
        if (k >= 0)
            g->shares[net->layers[i].in[k]] = i;
    }
    for (int i = 0; i < net->n_layers; i++)
        g->zero_at[i] =
            g->setter[i] < 0 && !external(g, i) && !g->shares[i] ? first_writer(g, i) : -1;
    if ((s = alloc_tensors(g)) != VOX_OK)
        goto fail;
    for (int i = 0; i < net->n_layers; i++)
        if (net->layers[i].kind == VOX_NN_MAXFILTER) {
            /* whole 128-byte pairs of cache lines a thread: rows of 207 doubles, 1656 bytes
             * apart, shared a line between the two threads' rows, and VD2D3D's first
             * max-filter's backward took as long on 2 threads as on 1 (each plane 2.3x slower) */
            const int64_t b =
                (g->dims[net->layers[i].in[0]].shape[3] * (int64_t)sizeof(double) + 127) / 128 *
                128;
            g->mf_bytes = b > g->mf_bytes ? b : g->mf_bytes;
        }
    if (!(g->pool_arg = vox_calloc(ctx, n, sizeof *g->pool_arg)))
        goto fail;
    for (int i = 0; i < net->n_layers; i++) {
        const struct vox_nn_layer *l = &net->layers[i];
        const int64_t *d = g->dims[i].shape;
        if ((l->kind == VOX_NN_POOL || l->kind == VOX_NN_MAXFILTER) &&
            l->kernel[0] * l->kernel[1] * l->kernel[2] <= VOX_NN_POOL_TAPS &&
            !(g->pool_arg[i] = vox_alloc(ctx, (size_t)(d[0] * d[1] * d[2] * d[3]))))
            goto fail;
    }
    g->mf_threads = vox_ctx_threads(ctx) > 0 ? vox_ctx_threads(ctx) : 1;
    s = VOX_OUT_OF_MEMORY;
    if (g->mf_bytes && !(g->mf_scratch = vox_alloc(ctx, (size_t)(g->mf_threads * g->mf_bytes))))
        goto fail;
    *g_out = g;
    return VOX_OK;
fail:
    vox_nn_graph_destroy(g);
    return s;
}

const struct vox_nn_dims *vox_nn_graph_dims(const struct vox_nn_graph *g)
{
    return g->dims;
}

struct vox_tensor *vox_nn_graph_value(struct vox_nn_graph *g, int layer)
{
    return &g->val[layer];
}

struct vox_tensor *vox_nn_graph_grad(struct vox_nn_graph *g, int layer)
{
    return &g->grad[layer];
}

static bool wants_grad(const struct vox_nn_graph *g, int j);

/* The bytes of layer i's gradient vox_nn_graph_zero_grad zeroes: none where its first writer
 * writes it with = (a memset and the read an add would make saved: n337's first max-pooling's
 * input gradient is 400 MB, each RSUNet module's first conv's 84 MB). */
static size_t zeroed_bytes(const struct vox_nn_graph *g, int i)
{
    return !external(g, i) || (g->setter[i] >= 0 && wants_grad(g, i))
               ? 0
               : vox_tensor_nbytes(&g->grad[i]);
}

/* Zeroes 1 MiB pieces of every gradient over the pool (a serial memset of an n337 step's
 * gradients, 0.5 GB, held back two threads). */
static void zero_pieces(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    const struct vox_nn_graph *g = arg;
    const size_t piece = (size_t)1 << 20;
    for (int64_t k = lo[0]; k < hi[0]; k++) {
        size_t at = (size_t)k * piece;
        for (int i = 0; i < g->net->n_layers; i++) {
            size_t n = zeroed_bytes(g, i);
            if (at < n) {
                memset((char *)g->grad[i].data + at, 0, n - at < piece ? n - at : piece);
                break;
            }
            at -= (n + piece - 1) / piece * piece;
        }
    }
}

void vox_nn_graph_zero_grad(struct vox_nn_graph *g)
{
    int64_t pieces = 0;
    for (int i = 0; i < g->net->n_layers; i++)
        pieces += (int64_t)((zeroed_bytes(g, i) + ((size_t)1 << 20) - 1) >> 20);
    const int64_t n[3] = {pieces, 1, 1}, tile[3] = {1, 1, 1};
    vox_pool_for(vox_ctx_pool(g->ctx), n, tile, VOX_SCHED_AFFINE, zero_pieces, g);
}

/* conv: the low-side padding of `same`, 0 for valid */
/* crop: the low-side offset of layer i's crop */
static void crop_lo(const struct vox_nn_graph *g, int i, int64_t lo[3])
{
    const struct vox_nn_layer *l = &g->net->layers[i];
    vox_nn_crop_lo(l, g->dims[l->in[0]].shape + 1, g->dims[i].shape + 1, lo);
}

/* The per-channel layers (max-pooling, max-filtering and their adjoints, an activation's
 * slope) run over the pool one (batch, channel) plane at a time: the planes are disjoint, so
 * the results do not depend on the thread count. */
enum chan_op {
    CHAN_MAXPOOL,
    CHAN_MAXPOOL_BACKWARD,
    CHAN_MAXFILTER,
    CHAN_MAXFILTER_BACKWARD,
    CHAN_ACT_BACKWARD,
    CHAN_PLAIN,            /* upsample, crop, add, act, output (not softmax): vox_nn_ref_plain */
    CHAN_ADD_BACKWARD,     /* every gins[k] += a (= where set) */
    CHAN_CROP_BACKWARD,    /* out += a placed at lo */
    CHAN_UPSAMPLE_BACKWARD /* out += the sums of a over each factor window */
};

struct chan_job {
    enum chan_op op;
    const struct vox_tensor *a, *b;
    struct vox_tensor *out;
    const int64_t *window, *dilation;
    enum vox_nn_act act;
    uint8_t *scratch; /* max-filter backward: scratch_n bytes per thread */
    int64_t scratch_n;
    uint8_t *arg; /* max-pooling, max-filter: the output's argmax taps, or NULL (reference twins) */
    unsigned set; /* backward ops: bit k: write gins[k] (or out, bit 0) with =, not += */
    unsigned skip; /* CHAN_ADD_BACKWARD: bit k: gins[k] not written (it takes a's buffer) */
    const struct vox_nn_layer *layer;                          /* CHAN_PLAIN */
    void (*act_fn)(void *, enum vox_nn_act, float *, int64_t); /* CHAN_PLAIN: or NULL */
    void (*act_bwd_fn)(void *, enum vox_nn_act, const float *, const float *, float *,
                       int64_t); /* CHAN_ACT_BACKWARD: or NULL */
    void *act_self;
    const struct vox_tensor *const *ins; /* CHAN_PLAIN: the layer's n inputs */
    struct vox_tensor *const *gins;      /* CHAN_ADD_BACKWARD: n gradients */
    int n;
    const int64_t *lo; /* CHAN_CROP_BACKWARD */
    bool stream;       /* CHAN_PLAIN's 2-input add: its sums stored past the caches */
};

/* The (n, c) plane nc of a dense (N, C, Z, Y, X) tensor, as a (1, 1, Z, Y, X) view. */
static struct vox_tensor chan_view(const struct vox_tensor *t, int64_t nc)
{
    struct vox_tensor v = *t;
    v.data = (float *)t->data + nc * t->shape[2] * t->shape[3] * t->shape[4];
    v.base = NULL;
    v.shape[0] = v.shape[1] = 1;
    v.strides[0] = v.strides[1] = t->shape[2] * t->shape[3] * t->shape[4];
    return v;
}

/* o[e] = a[e] + b[e] in float (b NULL: a[e] + 0, the bits of an add into zeros: -0 becomes
 * +0), 8 floats at a time: GCC vectors (the baseline build splits them into SSE halves; -O2
 * left the plain loop scalar, 3 % of an RSUNet step). o may be b. A float sum of two floats
 * has the bits of their double sum rounded to float, so this equals the reference layers. */
static void add_floats(float *o, const float *a, const float *b, int64_t n)
{
    typedef float v8 __attribute__((vector_size(32)));
    int64_t e = 0;
    for (; e + 8 <= n; e += 8) {
        v8 x, y = {0};
        memcpy(&x, a + e, sizeof x);
        if (b)
            memcpy(&y, b + e, sizeof y);
        x += y;
        memcpy(o + e, &x, sizeof x);
    }
    for (; e < n; e++)
        o[e] = a[e] + (b ? b[e] : 0.0f);
}

/* dst[i] = src[i], i < n, stored past the caches (non-temporal) where dst is 16-byte aligned:
 * a pass writing a fresh tensor larger than the L3 then does not first read each line it
 * writes (c = a + b over 84 MB: 7.1 -> 4.5-5.7 ms on one thread, 6.2-7.2 -> 4.4 on two). */
static void stream_floats(float *dst, const float *src, int64_t n)
{
    int64_t i = 0;
#if defined(__SSE__)
    for (; i < n && ((uintptr_t)(dst + i) & 15); i++)
        dst[i] = src[i];
    for (; i + 4 <= n; i += 4)
        __builtin_ia32_movntps(dst + i, __builtin_ia32_loadups(src + i));
#endif
    for (; i < n; i++)
        dst[i] = src[i];
}

/* The floats an add and its act (or the act's slope and the add's backward) take at a time:
 * a multiple of 16 (a vector), so the act's vector code sees each float in the lane a
 * whole-plane call would, and the plane's tail alone is left over: the same bits. */
#define PIECE 2048

/* The plane nc of a layer with several inputs (CHAN_PLAIN) or gradients (CHAN_ADD_BACKWARD). */
static void chan_multi(const struct chan_job *j, int64_t nc, struct vox_tensor *out)
{
    struct vox_tensor v[VOX_NN_MAX_IN], *vp[VOX_NN_MAX_IN];
    for (int k = 0; k < j->n; k++) {
        v[k] = chan_view(j->op == CHAN_PLAIN ? j->ins[k] : j->gins[k], nc);
        vp[k] = &v[k];
    }
    const struct vox_nn_layer *l = j->layer;
    if (j->op == CHAN_PLAIN && j->act_fn &&
        (l->kind == VOX_NN_ADD || l->kind == VOX_NN_ACT || l->kind == VOX_NN_OUTPUT)) {
        struct vox_nn_layer lin = *l; /* the sum or copy alone, then the kernels' act */
        lin.act = VOX_ACT_LINEAR;
        const int64_t n = vox_tensor_numel(out);
        if (l->kind == VOX_NN_ADD && j->n == 2) { /* float: the same bits as the double sum */
            float piece[PIECE] __attribute__((aligned(64)));
            for (int64_t e = 0; e < n; e += PIECE) { /* the act on each sum while it is in L1 */
                const int64_t m = n - e < PIECE ? n - e : PIECE;
                float *o = (float *)out->data + e, *q = j->stream ? piece : o;
                add_floats(q, (const float *)vp[0]->data + e, (const float *)vp[1]->data + e, m);
                if (l->act != VOX_ACT_LINEAR)
                    j->act_fn(j->act_self, l->act, q, m);
                if (j->stream)
                    stream_floats(o, q, m);
            }
#if defined(__SSE__)
            if (j->stream) /* the stores reach memory before another thread reads them */
                __builtin_ia32_sfence();
#endif
        } else {
            vox_nn_ref_plain(&lin, (const struct vox_tensor *const *)vp, out);
            if (l->act != VOX_ACT_LINEAR)
                j->act_fn(j->act_self, l->act, out->data, n);
        }
    } else if (j->op == CHAN_PLAIN) {
        vox_nn_ref_plain(l, (const struct vox_tensor *const *)vp, out);
    } else { /* CHAN_ADD_BACKWARD; b: the layer's output, when its act's slope is fused in */
        struct vox_tensor a = chan_view(j->a, nc), y = j->b ? chan_view(j->b, nc) : a;
        const int64_t n = vox_tensor_numel(&a);
        for (int64_t e = 0; e < n; e += PIECE) {
            const int64_t m = n - e < PIECE ? n - e : PIECE;
            float *ga = (float *)a.data + e;
            if (j->b)
                j->act_bwd_fn(j->act_self, j->act, (const float *)y.data + e, ga, ga, m);
            for (int k = 0; k < j->n; k++) {
                float *gk = (float *)vp[k]->data + e;
                if (!(j->skip >> k & 1))
                    add_floats(gk, ga, j->set >> k & 1 ? NULL : gk, m);
            }
        }
    }
}

static void chan_planes(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct chan_job *j = arg;
    for (int64_t nc = lo[0]; nc < hi[0]; nc++) {
        struct vox_tensor out = chan_view(j->out, nc), a = {0}, b = {0};
        if (j->a)
            a = chan_view(j->a, nc);
        if (j->b)
            b = chan_view(j->b, nc);
        switch (j->op) {
        case CHAN_MAXPOOL: /* out: the pooled plane */
            if (j->arg)
                vox_nn_plane_maxpool(&a, j->window, &out, j->arg + nc * vox_tensor_numel(&out));
            else
                vox_nn_ref_maxpool(&a, j->window, &out);
            break;
        case CHAN_MAXPOOL_BACKWARD: /* b: the pooled plane's gradient */
            if (j->arg && j->set) {
                vox_nn_plane_maxpool_backward_set(&b, j->window, j->arg + nc * vox_tensor_numel(&b),
                                                  &out);
            } else {
                if (j->set)
                    memset(out.data, 0, vox_tensor_nbytes(&out));
                if (j->arg)
                    vox_nn_plane_maxpool_backward(&b, j->window, j->arg + nc * vox_tensor_numel(&b),
                                                  &out);
                else
                    vox_nn_ref_maxpool_backward(&a, &b, j->window, &out);
            }
            /* the pooled layer's act slope (a: its output), on the plane while it is in the
             * caches: the separate pass's arithmetic, in the same order */
            if (j->act != VOX_ACT_LINEAR && j->act_bwd_fn)
                j->act_bwd_fn(j->act_self, j->act, a.data, out.data, out.data,
                              vox_tensor_numel(&out));
            else if (j->act != VOX_ACT_LINEAR)
                vox_nn_ref_act_backward(&a, &out, j->act, &out);
            break;
        case CHAN_MAXFILTER: /* out: the filtered plane */
            vox_nn_plane_maxfilter(&a, j->window, j->dilation, &out,
                                   j->arg ? j->arg + nc * vox_tensor_numel(&out) : NULL);
            break;
        case CHAN_MAXFILTER_BACKWARD: /* b: the filtered plane's gradient; a: its input */
            if (j->arg) {
                /* the input layer's act slope (a: its output) on each row as it is finished */
                const struct vox_nn_row_slope sl = {j->act_bwd_fn, j->act_self, j->act, a.data};
                vox_nn_plane_maxfilter_backward(
                    &b, j->window, j->dilation, j->arg + nc * vox_tensor_numel(&b),
                    (double *)(void *)(j->scratch + tid * j->scratch_n), j->set,
                    j->act != VOX_ACT_LINEAR ? &sl : NULL, &out);
            } else { /* tap numbers past a byte: none kept (and no slope fused) */
                if (j->set)
                    memset(out.data, 0, vox_tensor_nbytes(&out));
                vox_nn_ref_maxfilter_backward(&a, &b, j->window, j->dilation, &out);
            }
            break;
        case CHAN_PLAIN:
        case CHAN_ADD_BACKWARD:
            chan_multi(j, nc, &out);
            break;
        case CHAN_CROP_BACKWARD:
            vox_nn_ref_crop_backward(&a, j->lo, &out);
            break;
        case CHAN_UPSAMPLE_BACKWARD:
            vox_nn_ref_upsample_backward(&a, j->window, &out);
            break;
        default:
            if (j->act_bwd_fn)
                j->act_bwd_fn(j->act_self, j->act, a.data, b.data, out.data,
                              vox_tensor_numel(&out));
            else
                vox_nn_ref_act_backward(&a, &b, j->act, &out);
            break;
        }
    }
}

static void chan_run(struct vox_pool *pool, struct chan_job *j)
{
    const int64_t n[3] = {j->out->shape[0] * j->out->shape[1], 1, 1}, tile[3] = {1, 1, 1};
    vox_pool_for(pool, n, tile, VOX_SCHED_AFFINE, chan_planes, j);
}

/* Batch norm and the activation on layer i's conv output, in place: with the batch's
 * statistics (kept, with xhat) or, in eval mode, the running ones. */
static void forward_bn(struct vox_nn_graph *g, const struct vox_nn_weights *w, int i,
                       struct vox_pool *pool)
{
    const struct vox_nn_layer *l = &g->net->layers[i];
    const struct vox_tensor *p = w->p[i];
    double *mean = g->stats[i], *var = g->stats[i] + l->channels;
    for (int64_t c = 0; g->eval && c < l->channels; c++) {
        mean[c] = ((const float *)p[VOX_P_BN_MEAN].data)[c];
        var[c] = ((const float *)p[VOX_P_BN_VAR].data)[c];
    }
    vox_nn_ref_bn_forward(pool, &g->val[i], &p[VOX_P_BN_WEIGHT], &p[VOX_P_BN_BIAS], l->bn_eps,
                          l->act, !g->eval, mean, var, g->eval ? NULL : &g->xhat[i], &g->val[i]);
}

static void forward_layer(struct vox_nn_graph *g, const struct vox_nn_weights *w, int i,
                          struct vox_pool *pool)
{
    const struct vox_nn_layer *l = &g->net->layers[i];
    const struct vox_tensor *in = &g->val[l->in[0]], *ins[VOX_NN_MAX_IN];
    struct vox_tensor *out = &g->val[i];
    for (int k = 0; k < l->n_in; k++)
        ins[k] = &g->val[l->in[k]];
    const struct vox_tensor *b = l->bias ? &w->p[i][VOX_P_BIAS] : NULL;
    int64_t v[3];
    switch (l->kind) {
    case VOX_NN_CONV:
        vox_nn_conv_pad(l, v);
        g->k.conv(g->k.self, pool, in, &w->p[i][VOX_P_WEIGHT], b, l->dilation, v,
                  l->bn ? VOX_ACT_LINEAR : l->act, out);
        if (l->bn)
            forward_bn(g, w, i, pool);
        break;
    case VOX_NN_DECONV:
        g->k.deconv(g->k.self, pool, in, &w->p[i][VOX_P_WEIGHT], b, l->act, out);
        break;
    case VOX_NN_POOL:
        chan_run(pool, &(struct chan_job){.op = CHAN_MAXPOOL,
                                          .a = in,
                                          .out = out,
                                          .window = l->kernel,
                                          .arg = g->pool_arg[i],
                                          .set = g->sole[l->in[0]]});
        break;
    case VOX_NN_MAXFILTER:
        chan_run(pool, &(struct chan_job){.op = CHAN_MAXFILTER,
                                          .a = in,
                                          .out = out,
                                          .window = l->kernel,
                                          .dilation = l->dilation,
                                          .arg = g->pool_arg[i]});
        break;
    case VOX_NN_CONCAT:
        vox_nn_ref_plain(l, ins, out);
        break;
    default: /* upsample, crop, add, act, output: per channel plane, but softmax */
        if (l->act == VOX_ACT_SOFTMAX)
            vox_nn_ref_plain(l, ins, out);
        else
            chan_run(pool, &(struct chan_job){.op = CHAN_PLAIN,
                                              .out = out,
                                              .layer = l,
                                              .ins = ins,
                                              .n = l->n_in,
                                              .act_fn = g->k.act,
                                              .act_self = g->k.self,
                                              .stream = (int64_t)vox_tensor_nbytes(out) >
                                                        g->stream_bytes});
        break;
    }
}

enum vox_status vox_nn_graph_forward(struct vox_ctx *ctx, struct vox_nn_graph *g,
                                     const struct vox_nn_weights *w,
                                     const struct vox_tensor *inputs)
{
    const struct vox_net *net = g->net;
    if (w->n_layers != net->n_layers)
        return vox_fail(ctx, VOX_INVALID_ARG, "the weights have %d layers, the net '%s' has %d",
                        w->n_layers, net->source, net->n_layers);
    for (int k = 0; k < net->n_inputs; k++) {
        struct vox_tensor *t = &g->val[vox_net_input(net, k)];
        const struct vox_tensor *u = &inputs[k];
        bool ok = u->dtype == VOX_F32 && u->rank == 5;
        for (int a = 0; ok && a < 5; a++)
            ok = u->shape[a] == t->shape[a];
        if (!ok)
            return vox_fail(ctx, VOX_INVALID_ARG,
                            "input %d must be float32 (1, %lld, %lld, %lld, %lld)", k,
                            (long long)t->shape[1], (long long)t->shape[2], (long long)t->shape[3],
                            (long long)t->shape[4]);
        enum vox_status s = vox_tensor_copy(ctx, t, u);
        if (s != VOX_OK)
            return s;
    }
    for (int i = 0; i < net->n_layers; i++) {
        if (g->update) /* the step before's update of its weights, what is left of it */
            vox_optim_require(g->update, i);
        if (net->layers[i].kind != VOX_NN_INPUT)
            forward_layer(g, w, i, vox_ctx_pool(ctx));
    }
    return VOX_OK;
}

/* The gradient of layer i's pre-activation, in place of its output gradient (which only
 * layer i's backward reads). */
static struct vox_tensor *pre_act_grad(struct vox_nn_graph *g, int i, struct vox_pool *pool)
{
    struct vox_tensor *t = &g->grad[i];
    enum vox_nn_act act = g->net->layers[i].act;
    if (g->slope_done[i])
        g->slope_done[i] = false;
    else if (act == VOX_ACT_SOFTMAX)
        vox_nn_ref_act_backward(&g->val[i], t, act, t);
    else if (act != VOX_ACT_LINEAR)
        chan_run(pool, &(struct chan_job){.op = CHAN_ACT_BACKWARD,
                                          .a = &g->val[i],
                                          .b = t,
                                          .out = t,
                                          .act = act,
                                          .act_bwd_fn = g->k.act_backward,
                                          .act_self = g->k.self});
    return t;
}

/* Whether layer j's act slope can be taken by its one consumer's backward (a max-pooling's
 * or a max-filter's, on the gradient it writes): j is read by that layer alone and is a conv,
 * transposed conv or add with a pointwise act. */
static bool slope_fusable(const struct vox_nn_graph *g, int j)
{
    const struct vox_nn_layer *l = &g->net->layers[j];
    return g->sole[j] && l->act != VOX_ACT_LINEAR && l->act != VOX_ACT_SOFTMAX &&
           (l->kind == VOX_NN_CONV || l->kind == VOX_NN_DECONV || l->kind == VOX_NN_ADD);
}

/* Whether layer j's gradient is needed: not for a net input when input gradients are off. */
static bool wants_grad(const struct vox_nn_graph *g, int j)
{
    return !g->no_input_grads || g->net->layers[j].kind != VOX_NN_INPUT;
}

/* A conv whose output only a max-pooling reads and whose input needs no gradient (a net
 * input with input gradients off): its weight and bias gradients straight from the pooling's
 * gradient. The pooling's adjoint puts each pooled gradient on one voxel of its window (the
 * argmax), so the conv's output gradient is zero elsewhere: gz = g * slope(y) at the argmax
 * (y: the pooled value, the conv's output there), 0 elsewhere. n337's first conv (80
 * channels, 107^3) then neither writes nor reads its 392 MB gradient, and does 1/8 of the
 * products. Each output channel is summed by one thread over the pooled voxels in order, in
 * double: the same bits for any thread count. */
struct pool_conv_job {
    const struct vox_nn_graph *g;
    int pool, conv;
    float *gw, *gb;
    double *acc;        /* per thread: ci * taps, every thread's on lines of its own */
    const int64_t *ofs; /* per conv tap: its input offset from the window's corner */
    int64_t acc_n;      /* doubles a thread: ci * taps rounded up to 128 bytes */
};

static void pool_conv_channels(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct pool_conv_job *j = arg;
    const struct vox_nn_graph *g = j->g;
    const struct vox_nn_layer *pl = &g->net->layers[j->pool], *cl = &g->net->layers[j->conv];
    const struct vox_tensor *in = &g->val[cl->in[0]];
    const float *gp = g->grad[j->pool].data, *yp = g->val[j->pool].data, *ip = in->data;
    const uint8_t *at = g->pool_arg[j->pool];
    const int64_t *ps = g->grad[j->pool].shape + 2, *is = in->shape + 2, *w = pl->kernel;
    const int64_t *k = cl->kernel, *d = cl->dilation;
    int64_t pad[3], span[3], wt[VOX_NN_POOL_TAPS][3];
    const int64_t *ofs = j->ofs;
    vox_nn_conv_pad(cl, pad);
    const int64_t ci = in->shape[1], taps = k[0] * k[1] * k[2];
    const int64_t pv = ps[0] * ps[1] * ps[2], iv = is[0] * is[1] * is[2];
    for (int a = 0; a < 3; a++)
        span[a] = (k[a] - 1) * d[a];
    /* one input channel and 2 x 4 taps in pairs of adjacent x (n337's first conv, 2x2x2: tap
     * 2m + 1 one float after tap 2m): the eight sums stay in four registers of two doubles
     * through a channel's pooled voxels, the same products added in the same order. In
     * memory each sum was a chain of load, add and store per voxel (the adds' 60 % of this
     * function's samples). */
    const bool eight = ci * taps == 8 && k[2] % 2 == 0 && d[2] == 1;
    for (int64_t t = 0, a = 0; a < w[0]; a++) /* the pooling's taps, as vox_nn_plane_maxpool */
        for (int64_t b = 0; b < w[1]; b++)
            for (int64_t c = 0; c < w[2]; c++, t++)
                wt[t][0] = a, wt[t][1] = b, wt[t][2] = c;
    double *acc = j->acc + (int64_t)tid * j->acc_n;
    for (int64_t o = lo[0]; o < hi[0]; o++) {
        memset(acc, 0, (size_t)(ci * taps) * sizeof *acc);
        __m128d r[4] = {_mm_setzero_pd(), _mm_setzero_pd(), _mm_setzero_pd(), _mm_setzero_pd()};
        double bsum = 0;
        const float *go = gp + o * pv, *yo = yp + o * pv;
        const uint8_t *ao = at + o * pv;
        for (int64_t pz = 0, p = 0; pz < ps[0]; pz++)
            for (int64_t py = 0; py < ps[1]; py++)
                for (int64_t px = 0; px < ps[2]; px++, p++) {
                    if (go[p] == 0.0f)
                        continue;
                    const float gz = (float)(go[p] * vox_nn_act_slope(cl->act, yo[p]));
                    bsum += gz;
                    const int64_t *t = wt[ao[p]];
                    const int64_t z = pz * w[0] + t[0] - pad[0], y = py * w[1] + t[1] - pad[1],
                                  x = px * w[2] + t[2] - pad[2];
                    if (z >= 0 && y >= 0 && x >= 0 && z + span[0] < is[0] && y + span[1] < is[1] &&
                        x + span[2] < is[2]) {
                        const float *src = ip + (z * is[1] + y) * is[2] + x;
                        if (eight) { /* the 8 sums in registers: no chain through memory */
                            const __m128d g2 = _mm_set1_pd((double)gz);
                            for (int q = 0; q < 4; q++) {
                                const __m128 v = _mm_castsi128_ps(
                                    _mm_loadl_epi64((const __m128i *)(src + ofs[2 * q])));
                                r[q] = _mm_add_pd(r[q], _mm_mul_pd(g2, _mm_cvtps_pd(v)));
                            }
                            continue;
                        }
                        for (int64_t ch = 0; ch < ci; ch++)
                            for (int64_t tap = 0; tap < taps; tap++)
                                acc[ch * taps + tap] += (double)gz * src[ch * iv + ofs[tap]];
                        continue;
                    }
                    for (int q = 0; eight && q < 4; q++) /* the sums to acc, in order */
                        _mm_storeu_pd(acc + 2 * q, r[q]);
                    for (int64_t a = 0, tap = 0; a < k[0]; a++) /* at the border (same pad) */
                        for (int64_t b = 0; b < k[1]; b++)
                            for (int64_t c = 0; c < k[2]; c++, tap++) {
                                const int64_t zz = z + a * d[0], yy = y + b * d[1],
                                              xx = x + c * d[2];
                                if (zz < 0 || zz >= is[0] || yy < 0 || yy >= is[1] || xx < 0 ||
                                    xx >= is[2])
                                    continue;
                                for (int64_t ch = 0; ch < ci; ch++)
                                    acc[ch * taps + tap] +=
                                        (double)gz * ip[ch * iv + (zz * is[1] + yy) * is[2] + xx];
                            }
                    for (int q = 0; eight && q < 4; q++)
                        r[q] = _mm_loadu_pd(acc + 2 * q);
                }
        for (int q = 0; eight && q < 4; q++)
            _mm_storeu_pd(acc + 2 * q, r[q]);
        for (int64_t e = 0; e < ci * taps; e++)
            j->gw[o * ci * taps + e] = (float)(j->gw[o * ci * taps + e] + acc[e]);
        if (j->gb)
            j->gb[o] = (float)(j->gb[o] + bsum);
    }
}

/* Whether max-pooling i computes its input conv's gradients itself (pool_conv_channels):
 * where that is cheaper. Per pooled voxel it does ci * taps scalar products; the dense way
 * does window times as many on vectors, plus passes over the conv's gradient. Measured:
 * n337's first conv (1 channel, 2^3 taps, 2^3 window) one step 0.53 -> 0.46 s at 1 thread;
 * n537's (4^3 taps) 4.71 -> 5.33 s. So only up to twice the window's voxels. */
static bool pool_conv_ok(const struct vox_nn_graph *g, int i)
{
    const struct vox_nn_layer *pl = &g->net->layers[i];
    const int c = pl->in[0];
    const struct vox_nn_layer *cl = &g->net->layers[c];
    if (cl->kind != VOX_NN_CONV || cl->bn || cl->act == VOX_ACT_SOFTMAX || !g->sole[c] ||
        wants_grad(g, cl->in[0]) || !g->pool_arg[i] || g->val[c].shape[0] != 1)
        return false;
    const int64_t products =
                      g->val[cl->in[0]].shape[1] * cl->kernel[0] * cl->kernel[1] * cl->kernel[2],
                  window = pl->kernel[0] * pl->kernel[1] * pl->kernel[2];
    return products <= 2 * window;
}

static bool pool_conv_grads(struct vox_nn_graph *g, struct vox_nn_weights *gw, int i,
                            struct vox_pool *pool)
{
    const int c = g->net->layers[i].in[0];
    const struct vox_nn_layer *cl = &g->net->layers[c];
    const int64_t ci = g->val[cl->in[0]].shape[1];
    const int64_t taps = cl->kernel[0] * cl->kernel[1] * cl->kernel[2];
    const int64_t *is = g->val[cl->in[0]].shape + 2, *k = cl->kernel, *d = cl->dilation;
    int64_t *ofs = vox_alloc(g->ctx, (size_t)taps * sizeof *ofs);
    struct pool_conv_job j = {g,
                              i,
                              c,
                              gw->p[c][VOX_P_WEIGHT].data,
                              cl->bias ? gw->p[c][VOX_P_BIAS].data : NULL,
                              NULL,
                              ofs,
                              (ci * taps + 15) / 16 * 16};
    j.acc = vox_alloc(g->ctx, (size_t)(vox_pool_threads(pool) * j.acc_n) * sizeof *j.acc);
    if (!j.acc || !ofs) {
        vox_free(g->ctx, j.acc);
        vox_free(g->ctx, ofs);
        return false; /* the dense way then */
    }
    for (int64_t t = 0, a = 0; a < k[0]; a++)
        for (int64_t b = 0; b < k[1]; b++)
            for (int64_t e = 0; e < k[2]; e++, t++)
                ofs[t] = (a * d[0] * is[1] + b * d[1]) * is[2] + e * d[2];
    const int64_t n[3] = {cl->channels, 1, 1}, tile[3] = {1, 1, 1};
    vox_pool_for(pool, n, tile, VOX_SCHED_AFFINE, pool_conv_channels, &j);
    vox_free(g->ctx, j.acc);
    vox_free(g->ctx, ofs);
    g->bw_done[c] = true;
    return true;
}

static void backward_layer(struct vox_nn_graph *g, const struct vox_nn_weights *w,
                           struct vox_nn_weights *gw, int i, struct vox_pool *pool)
{
    const struct vox_nn_layer *l = &g->net->layers[i];
    const struct vox_tensor *in = &g->val[l->in[0]], *gout = &g->grad[i];
    struct vox_tensor *gin = &g->grad[l->in[0]], *gins[VOX_NN_MAX_IN];
    for (int k = 0; k < l->n_in; k++)
        gins[k] = &g->grad[l->in[k]];
    struct vox_tensor *gb = l->bias ? &gw->p[i][VOX_P_BIAS] : NULL, *gz;
    int64_t v[3];
    unsigned add_set = 0;
    switch (l->kind) {
    case VOX_NN_CONV:
        if (g->bw_done[i]) /* its max-pooling did it (pool_conv_grads) */
            break;
        vox_nn_conv_pad(l, v);
        gz = pre_act_grad(g, i, pool);
        if (l->bn) /* in place: the gradient of the conv's output */
            vox_nn_ref_bn_backward(pool, &g->xhat[i], gz, &w->p[i][VOX_P_BN_WEIGHT],
                                   g->stats[i] + l->channels, l->bn_eps, gz,
                                   &gw->p[i][VOX_P_BN_WEIGHT], &gw->p[i][VOX_P_BN_BIAS]);
        gout = gz;
        g->k.conv_backward_weights(g->k.self, pool, in, gout, l->dilation, v,
                                   &gw->p[i][VOX_P_WEIGHT], gb);
        if (!wants_grad(g, l->in[0]))
            break;
        if (g->setter[l->in[0]] != i) {
            g->k.conv_backward_data(g->k.self, pool, gout, &w->p[i][VOX_P_WEIGHT], l->dilation, v,
                                    gin);
        } else if (g->k.conv_backward_data_set) { /* gin was not zeroed */
            g->k.conv_backward_data_set(g->k.self, pool, gout, &w->p[i][VOX_P_WEIGHT], l->dilation,
                                        v, gin);
        } else {
            memset(gin->data, 0, vox_tensor_nbytes(gin));
            g->k.conv_backward_data(g->k.self, pool, gout, &w->p[i][VOX_P_WEIGHT], l->dilation, v,
                                    gin);
        }
        break;
    case VOX_NN_DECONV:
        gout = pre_act_grad(g, i, pool);
        g->k.deconv_backward_weights(g->k.self, pool, in, gout, &gw->p[i][VOX_P_WEIGHT], gb);
        if (wants_grad(g, l->in[0]))
            g->k.deconv_backward_data(g->k.self, pool, gout, &w->p[i][VOX_P_WEIGHT], gin);
        break;
    case VOX_NN_POOL: {
        if (pool_conv_ok(g, i) && pool_conv_grads(g, gw, i, pool))
            break;
        /* the pooled layer's act slope fused in where the pooling alone consumes it (n337: its
         * first conv's 400 MB gradient then takes one pass, not two) */
        const struct vox_nn_layer *src = &g->net->layers[l->in[0]];
        const bool fuse = slope_fusable(g, l->in[0]);
        chan_run(pool, &(struct chan_job){.op = CHAN_MAXPOOL_BACKWARD,
                                          .a = in,
                                          .b = gout,
                                          .out = gin,
                                          .window = l->kernel,
                                          .arg = g->pool_arg[i],
                                          .set = g->setter[l->in[0]] == i,
                                          .act = fuse ? src->act : VOX_ACT_LINEAR,
                                          .act_bwd_fn = g->k.act_backward,
                                          .act_self = g->k.self});
        g->slope_done[l->in[0]] = fuse;
        break;
    }
    case VOX_NN_MAXFILTER: {
        /* as max-pooling's: the input layer's act slope fused in where the filter alone reads
         * it (VD2D3D: three passes over a 40-70 MB gradient, zeroing, adding and the slope,
         * become one) */
        const struct vox_nn_layer *src = &g->net->layers[l->in[0]];
        const bool fuse = slope_fusable(g, l->in[0]) && g->pool_arg[i] && g->k.act_backward;
        /* a pool wider than the scratch (threads raised after create) runs serially */
        chan_run(vox_pool_threads(pool) <= g->mf_threads ? pool : NULL,
                 &(struct chan_job){.op = CHAN_MAXFILTER_BACKWARD,
                                    .a = in,
                                    .b = gout,
                                    .out = gin,
                                    .window = l->kernel,
                                    .dilation = l->dilation,
                                    .arg = g->pool_arg[i],
                                    .set = g->setter[l->in[0]] == i,
                                    .act = fuse ? src->act : VOX_ACT_LINEAR,
                                    .act_bwd_fn = g->k.act_backward,
                                    .act_self = g->k.self,
                                    .scratch = g->mf_scratch,
                                    .scratch_n = g->mf_bytes});
        g->slope_done[l->in[0]] = fuse;
        break;
    }
    case VOX_NN_UPSAMPLE:
        chan_run(pool,
                 &(struct chan_job){
                     .op = CHAN_UPSAMPLE_BACKWARD, .a = gout, .out = gin, .window = l->kernel});
        break;
    case VOX_NN_CROP:
        crop_lo(g, i, v);
        chan_run(pool,
                 &(struct chan_job){.op = CHAN_CROP_BACKWARD, .a = gout, .out = gin, .lo = v});
        break;
    case VOX_NN_ADD: {
        /* input k is written with = where this add writes it first (and k is the first of its
         * copies); one whose gradient shares this layer's buffer (shared_input) is not written */
        const int take = shared_input(g, i);
        for (int k = 0; k < l->n_in; k++)
            add_set |= (unsigned)first_copy_set(g, i, k) << k;
        /* the act's slope on each piece of the plane as the sums read it (one pass, not two) */
        const bool fuse = !g->slope_done[i] && l->act != VOX_ACT_LINEAR &&
                          l->act != VOX_ACT_SOFTMAX && g->k.act_backward;
        chan_run(pool, &(struct chan_job){.op = CHAN_ADD_BACKWARD,
                                          .a = fuse ? &g->grad[i] : pre_act_grad(g, i, pool),
                                          .b = fuse ? &g->val[i] : NULL,
                                          .act = fuse ? l->act : VOX_ACT_LINEAR,
                                          .act_bwd_fn = g->k.act_backward,
                                          .act_self = g->k.self,
                                          .out = gins[0],
                                          .gins = gins,
                                          .n = l->n_in,
                                          .set = add_set,
                                          .skip = take >= 0 ? 1u << take : 0});
        break;
    }
    case VOX_NN_CONCAT:
        vox_nn_ref_concat_backward(gout, gins, l->n_in);
        break;
    case VOX_NN_ACT:
    case VOX_NN_OUTPUT:
        vox_nn_ref_add_backward(pre_act_grad(g, i, pool), &gin, 1);
        break;
    default:
        break;
    }
}

void vox_nn_graph_backward(struct vox_ctx *ctx, struct vox_nn_graph *g,
                           const struct vox_nn_weights *w, struct vox_nn_weights *gw)
{
    memset(g->slope_done, 0, (size_t)g->net->n_layers * sizeof *g->slope_done);
    memset(g->bw_done, 0, (size_t)g->net->n_layers * sizeof *g->bw_done);
    struct vox_pool *pool = vox_ctx_pool(ctx);
    for (int i = g->net->n_layers - 1; i >= 0; i--) {
        for (int j = 0; j < i; j++) /* the gradients layer i adds into first */
            if (g->zero_at[j] == i)
                vox_pool_zero(pool, g->grad[j].data, vox_tensor_nbytes(&g->grad[j]));
        if (g->net->layers[i].kind != VOX_NN_INPUT)
            backward_layer(g, w, gw, i, pool);
    }
}

int64_t vox_nn_graph_bytes(const struct vox_nn_graph *g)
{
    return g->buf_bytes;
}

enum vox_status vox_nn_graph_set_keep(struct vox_nn_graph *g, bool keep)
{
    for (int b = 0; b < g->nbufs; b++)
        vox_free(g->ctx, g->bufs[b]);
    vox_free(g->ctx, g->bufs);
    g->bufs = NULL;
    g->nbufs = 0;
    g->keep = keep;
    return alloc_tensors(g);
}

void vox_nn_graph_set_stream(struct vox_nn_graph *g, int64_t bytes)
{
    g->stream_bytes = bytes;
}

void vox_nn_graph_set_update(struct vox_nn_graph *g, struct vox_optim_deferred *u)
{
    g->update = u;
}

void vox_nn_graph_set_eval(struct vox_nn_graph *g, bool eval)
{
    g->eval = eval;
}

void vox_nn_graph_set_input_grads(struct vox_nn_graph *g, bool on)
{
    g->no_input_grads = !on;
}

void vox_nn_graph_bn_update(const struct vox_nn_graph *g, struct vox_nn_weights *w)
{
    for (int i = 0; i < g->net->n_layers; i++) {
        const struct vox_nn_layer *l = &g->net->layers[i];
        if (!g->stats[i])
            continue;
        const int64_t *d = g->dims[i].shape;
        vox_nn_bn_running_update(g->stats[i], g->stats[i] + l->channels, l->channels,
                                 d[1] * d[2] * d[3], &w->p[i][VOX_P_BN_MEAN],
                                 &w->p[i][VOX_P_BN_VAR]);
    }
}
