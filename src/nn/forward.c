/*
 * forward.c: the reference forward pass: plan a net for a patch shape, then run it layer by
 * layer with the scalar reference layers.
 *
 * Planning infers every tensor's shape, folds inference batch norm into the conv weights
 * (w' = w * g / sqrt(var + eps), b' = (b - mean) * g / sqrt(var + eps) + beta, per output
 * channel, in double), and places tensors in buffers by liveness: a tensor's buffer is free
 * again once the last layer that reads it has run, and a new tensor takes the smallest free
 * buffer that fits (growing the largest free one if none fits). Layers never run in place,
 * and outputs keep their buffers. Running allocates nothing.
 */
#include "internal.h"

#include <limits.h>
#include <string.h>

struct vox_nn_plan {
    struct vox_ctx *ctx;
    const struct vox_net *net;
    struct vox_nn_dims *dims;
    struct vox_tensor *t;     /* per layer: a view of its tensor in its buffer */
    struct vox_tensor *w, *b; /* per layer: the (folded) weight and bias, owned */
    void **buf;               /* the buffers, owned */
    size_t *buf_bytes;
    int n_buf;
    size_t bytes_noreuse;
};

void vox_nn_plan_destroy(struct vox_nn_plan *plan)
{
    if (!plan)
        return;
    struct vox_ctx *ctx = plan->ctx;
    for (int i = 0; plan->w && plan->b && i < plan->net->n_layers; i++) {
        vox_tensor_free(ctx, &plan->w[i]);
        vox_tensor_free(ctx, &plan->b[i]);
    }
    for (int i = 0; plan->buf && i < plan->n_buf; i++)
        vox_free(ctx, plan->buf[i]);
    vox_free(ctx, plan->buf);
    vox_free(ctx, plan->buf_bytes);
    vox_free(ctx, plan->w);
    vox_free(ctx, plan->b);
    vox_free(ctx, plan->t);
    vox_free(ctx, plan->dims);
    vox_free(ctx, plan);
}

/* Copies layer i's weight and bias into the plan, folding batch norm. */
static enum vox_status fold(struct vox_nn_plan *plan, const struct vox_nn_weights *w, int i)
{
    const struct vox_nn_layer *l = &plan->net->layers[i];
    const struct vox_tensor *p = w->p[i];
    struct vox_ctx *ctx = plan->ctx;
    int64_t cout = l->channels;
    enum vox_status s = vox_tensor_alloc(ctx, &plan->w[i], VOX_F32, 5, p[VOX_P_WEIGHT].shape);
    if (s == VOX_OK && (l->bias || l->bn))
        s = vox_tensor_alloc(ctx, &plan->b[i], VOX_F32, 1, &cout);
    if (s != VOX_OK)
        return s;
    /* conv: (out, in, k...), one scale per leading index; deconv: (in, out, k...), no bn */
    const float *src = p[VOX_P_WEIGHT].data;
    float *dst = plan->w[i].data, *bias = plan->b[i].data;
    int64_t per = vox_tensor_numel(&plan->w[i]) / p[VOX_P_WEIGHT].shape[0];
    for (int64_t o = 0; o < p[VOX_P_WEIGHT].shape[0]; o++) {
        double scale = 1;
        if (l->bn)
            scale = ((const float *)p[VOX_P_BN_WEIGHT].data)[o] /
                    sqrt((double)((const float *)p[VOX_P_BN_VAR].data)[o] + l->bn_eps);
        for (int64_t e = 0; e < per; e++)
            dst[o * per + e] = (float)(src[o * per + e] * scale);
    }
    for (int64_t o = 0; bias && o < cout; o++) {
        double b0 = l->bias ? ((const float *)p[VOX_P_BIAS].data)[o] : 0;
        if (l->bn) {
            const float *mean = p[VOX_P_BN_MEAN].data, *var = p[VOX_P_BN_VAR].data;
            const float *g = p[VOX_P_BN_WEIGHT].data, *beta = p[VOX_P_BN_BIAS].data;
            double scale = g[o] / sqrt((double)var[o] + l->bn_eps);
            b0 = (b0 - mean[o]) * scale + beta[o];
        }
        bias[o] = (float)b0;
    }
    return VOX_OK;
}

/* The buffer for layer i: the smallest free one that fits, else the largest free one
 * (grown), else a new one. free_after[b]: the last layer reading what is in b. */
static int pick_buffer(struct vox_nn_plan *plan, int *free_after, size_t need, int i)
{
    int fit = -1, big = -1;
    for (int b = 0; b < plan->n_buf; b++) {
        if (free_after[b] >= i)
            continue;
        if (plan->buf_bytes[b] >= need && (fit < 0 || plan->buf_bytes[b] < plan->buf_bytes[fit]))
            fit = b;
        if (big < 0 || plan->buf_bytes[b] > plan->buf_bytes[big])
            big = b;
    }
    int b = fit >= 0 ? fit : big >= 0 ? big : plan->n_buf++;
    if (plan->buf_bytes[b] < need)
        plan->buf_bytes[b] = need;
    return b;
}

static enum vox_status place(struct vox_nn_plan *plan)
{
    const struct vox_net *net = plan->net;
    struct vox_ctx *ctx = plan->ctx;
    int n = net->n_layers;
    int *last = vox_alloc(ctx, (size_t)n * sizeof *last);
    int *free_after = vox_alloc(ctx, (size_t)n * sizeof *free_after);
    int *where = vox_alloc(ctx, (size_t)n * sizeof *where);
    enum vox_status s = VOX_OUT_OF_MEMORY;
    if (!last || !free_after || !where)
        goto done;
    for (int i = 0; i < n; i++) {
        last[i] = net->layers[i].kind == VOX_NN_OUTPUT ? INT_MAX : i;
        for (int k = 0; k < net->layers[i].n_in; k++)
            last[net->layers[i].in[k]] = i;
    }
    for (int i = 0; i < n; i++) {
        struct vox_tensor *t = &plan->t[i];
        *t = (struct vox_tensor){.dtype = VOX_F32, .rank = 5, .shape = {plan->dims[i].batch}};
        memcpy(t->shape + 1, plan->dims[i].shape, 4 * sizeof(int64_t));
        for (int a = 4; a >= 0; a--)
            t->strides[a] = a == 4 ? 1 : t->strides[a + 1] * t->shape[a + 1];
        size_t need = vox_tensor_nbytes(t);
        plan->bytes_noreuse += need;
        where[i] = pick_buffer(plan, free_after, need, i);
        free_after[where[i]] = last[i];
    }
    plan->buf = vox_calloc(ctx, (size_t)plan->n_buf, sizeof *plan->buf);
    for (int b = 0; plan->buf && b < plan->n_buf; b++)
        if (!(plan->buf[b] = vox_alloc(ctx, plan->buf_bytes[b])))
            goto done;
    if (!plan->buf)
        goto done;
    for (int i = 0; i < n; i++)
        plan->t[i].data = plan->buf[where[i]];
    s = VOX_OK;
done:
    vox_free(ctx, last);
    vox_free(ctx, free_after);
    vox_free(ctx, where);
    return s;
}

enum vox_status vox_nn_plan_create(struct vox_ctx *ctx, const struct vox_net *net,
                                   const struct vox_nn_weights *w, const int64_t patch[3],
                                   struct vox_nn_plan **plan_out)
{
    *plan_out = NULL;
    if (w->n_layers != net->n_layers)
        return vox_fail(ctx, VOX_INVALID_ARG, "the weights have %d layers, the net '%s' has %d",
                        w->n_layers, net->source, net->n_layers);
    enum vox_status s = VOX_OUT_OF_MEMORY;
    struct vox_nn_plan *plan = vox_calloc(ctx, 1, sizeof *plan);
    if (!plan)
        return s;
    plan->ctx = ctx;
    plan->net = net;
    size_t n = (size_t)net->n_layers;
    if (!(plan->dims = vox_calloc(ctx, n, sizeof *plan->dims)) ||
        !(plan->t = vox_calloc(ctx, n, sizeof *plan->t)) ||
        !(plan->w = vox_calloc(ctx, n, sizeof *plan->w)) ||
        !(plan->b = vox_calloc(ctx, n, sizeof *plan->b)) ||
        !(plan->buf_bytes = vox_calloc(ctx, n, sizeof *plan->buf_bytes)))
        goto fail;
    if ((s = vox_net_shapes(ctx, net, patch, plan->dims)) != VOX_OK)
        goto fail;
    for (int i = 0; i < net->n_layers; i++)
        if (vox_nn_layer_params(&net->layers[i]) && (s = fold(plan, w, i)) != VOX_OK)
            goto fail;
    if ((s = place(plan)) != VOX_OK)
        goto fail;
    *plan_out = plan;
    return VOX_OK;
fail:
    vox_nn_plan_destroy(plan);
    return s;
}

enum vox_status vox_nn_plan_params_only(struct vox_ctx *ctx, const struct vox_net *net,
                                       const struct vox_nn_weights *w,
                                       struct vox_nn_plan **plan_out)
{
    *plan_out = NULL;
    if (w->n_layers != net->n_layers)
        return vox_fail(ctx, VOX_INVALID_ARG, "the weights have %d layers, the net '%s' has %d",
                        w->n_layers, net->source, net->n_layers);
    struct vox_nn_plan *plan = vox_calloc(ctx, 1, sizeof *plan);
    if (!plan)
        return VOX_OUT_OF_MEMORY;
    plan->ctx = ctx;
    plan->net = net;
    size_t n = (size_t)net->n_layers;
    enum vox_status s = VOX_OUT_OF_MEMORY;
    if (!(plan->w = vox_calloc(ctx, n, sizeof *plan->w)) ||
        !(plan->b = vox_calloc(ctx, n, sizeof *plan->b)))
        goto fail;
    for (int i = 0; i < net->n_layers; i++)
        if (vox_nn_layer_params(&net->layers[i]) && (s = fold(plan, w, i)) != VOX_OK)
            goto fail;
    *plan_out = plan;
    return VOX_OK;
fail:
    vox_nn_plan_destroy(plan);
    return s;
}

void vox_nn_plan_params(const struct vox_nn_plan *plan, int layer, const struct vox_tensor **w_out,
                        const struct vox_tensor **b_out)
{
    *w_out = &plan->w[layer];
    *b_out = plan->b[layer].data ? &plan->b[layer] : NULL;
}

const struct vox_nn_dims *vox_nn_plan_dims(const struct vox_nn_plan *plan)
{
    return plan->dims;
}

size_t vox_nn_plan_bytes(const struct vox_nn_plan *plan, size_t *without_reuse_out)
{
    size_t sum = 0;
    for (int b = 0; b < plan->n_buf; b++)
        sum += plan->buf_bytes[b];
    if (without_reuse_out)
        *without_reuse_out = plan->bytes_noreuse;
    return sum;
}

const struct vox_tensor *vox_nn_plan_output(const struct vox_nn_plan *plan, int i)
{
    int j = vox_net_output(plan->net, i);
    return j >= 0 ? &plan->t[j] : NULL;
}

static void run_layer(struct vox_nn_plan *plan, int i, struct vox_pool *pool)
{
    const struct vox_nn_layer *l = &plan->net->layers[i];
    const struct vox_tensor *in = &plan->t[l->in[0]];
    struct vox_tensor *out = &plan->t[i];
    const struct vox_tensor *ins[VOX_NN_MAX_IN];
    for (int k = 0; k < l->n_in; k++)
        ins[k] = &plan->t[l->in[k]];
    int64_t v[3];
    switch (l->kind) {
    case VOX_NN_CONV:
        vox_nn_conv_pad(l, v);
        vox_nn_ref_conv(pool, in, &plan->w[i], l->bias || l->bn ? &plan->b[i] : NULL, l->dilation,
                        v, l->act, out);
        break;
    case VOX_NN_DECONV:
        vox_nn_ref_deconv(pool, in, &plan->w[i], l->bias ? &plan->b[i] : NULL, l->act, out);
        break;
    case VOX_NN_POOL:
        vox_nn_ref_maxpool(in, l->kernel, out);
        break;
    case VOX_NN_MAXFILTER:
        vox_nn_ref_maxfilter(in, l->kernel, l->dilation, out);
        break;
    case VOX_NN_MPF:
        vox_nn_ref_mpf(in, l->kernel, out);
        break;
    case VOX_NN_INTERLEAVE: {
        int64_t win[VOX_NN_MPF_MAX][3];
        vox_nn_ref_interleave(in, vox_net_mpf_levels(plan->net, l->in[0], win), win, out);
        break;
    }
    default: /* upsample, crop, add, concat, act, output */
        vox_nn_ref_plain(l, ins, out);
        break;
    }
}

enum vox_status vox_nn_plan_forward(struct vox_ctx *ctx, struct vox_nn_plan *plan,
                                    const struct vox_tensor *inputs)
{
    const struct vox_net *net = plan->net;
    for (int k = 0; k < net->n_inputs; k++) {
        struct vox_tensor *t = &plan->t[vox_net_input(net, k)];
        const struct vox_tensor *u = &inputs[k];
        bool ok = u->dtype == VOX_F32 && u->rank == 5;
        for (int a = 0; ok && a < 5; a++)
            ok = u->shape[a] == t->shape[a];
        if (!ok)
            return vox_fail(ctx, VOX_INVALID_ARG,
                            "input %d ('%s') must be float32 (1, %lld, %lld, %lld, %lld)", k,
                            net->layers[vox_net_input(net, k)].name, (long long)t->shape[1],
                            (long long)t->shape[2], (long long)t->shape[3], (long long)t->shape[4]);
    }
    for (int k = 0; k < net->n_inputs; k++) {
        enum vox_status s = vox_tensor_copy(ctx, &plan->t[vox_net_input(net, k)], &inputs[k]);
        if (s != VOX_OK)
            return s;
    }
    for (int i = 0; i < net->n_layers; i++)
        if (net->layers[i].kind != VOX_NN_INPUT)
            run_layer(plan, i, vox_ctx_pool(ctx));
    return VOX_OK;
}
