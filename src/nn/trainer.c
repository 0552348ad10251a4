/*
 * trainer.c: the training loop: sample patches, targets, forward, loss on the logits,
 * backward, accumulate, optimizer step; validation on fixed patches.
 *
 * Determinism: one splitmix64 word drives all sampling and augmentation; layers split work
 * over channels with one writer per element and fixed-order double sums (ref_*.c); gradients
 * of the patches of a step are added in patch order; the optimizer is elementwise. So the
 * weights after N steps are bitwise the same for any thread count, and a checkpoint (weights,
 * optimizer state, step count, generator word: checkpoint.c) resumes bit for bit.
 *
 * Batch norm: each patch is its own batch (the graph is one patch), so with `accumulate` > 1
 * every patch is normalised by its own statistics and updates the running statistics once,
 * in patch order, as PyTorch does for a loop of forward passes before one optimizer step.
 * Validation uses the running statistics (eval mode), as `vox infer` does.
 *
 * Validation scores the segmentation too (vox_trainer_validate_scores): each patch's output
 * (affinities, or a boundary map turned into affinities as `vox segment --boundary` does) is
 * segmented by vox_segment without size merge and dust (a patch is small), the merge history
 * cut at every threshold of a fixed grid, and scored against the patch's labels (masked
 * voxels and label 0 not counted); the reported error is the grid threshold's whose mean over
 * the patches is lowest.
 */
#include "internal.h"
#include "train_internal.h"
#include "vox/metrics.h"
#include "vox/seg.h"

#include <string.h>

void vox_train_options_defaults(struct vox_train_options *o)
{
    *o = (struct vox_train_options){.target = VOX_TARGET_AFFINITY,
                                    .loss = VOX_LOSS_BCE,
                                    .rebalance = VOX_REBALANCE_PATCH,
                                    .patch = {1, 32, 32},
                                    .accumulate = 1,
                                    .seed = 1,
                                    .init = VOX_INIT_MSRA,
                                    .aug = {.flips = true}};
    vox_optim_defaults(VOX_OPTIM_ADAM, &o->optim);
}

void vox_trainer_destroy(struct vox_trainer *tr)
{
    if (!tr)
        return;
    vox_optim_deferred_destroy(tr->update); /* settles it: nothing runs on the weights after */
    vox_nn_graph_destroy(tr->g);
    vox_nn_weights_destroy(tr->w);
    vox_nn_weights_destroy(tr->gw);
    vox_nn_weights_destroy(tr->gw_posted);
    vox_nn_weights_destroy(tr->m);
    vox_nn_weights_destroy(tr->v);
    vox_free(tr->ctx, tr);
}

/* The net's interface against the options and data: one 1-channel input per data input (the
 * raw, then the extras), one output with the target's channels and an activation the loss
 * accepts, output stride 1. */
static enum vox_status check_net(struct vox_ctx *ctx, struct vox_trainer *tr)
{
    const struct vox_net *net = tr->net;
    const struct vox_train_options *o = &tr->o;
    int want_in = vox_train_data_inputs(tr->data);
    bool ok = net->n_inputs == want_in && net->n_outputs == 1;
    for (int k = 0; ok && k < net->n_inputs; k++)
        ok = net->layers[vox_net_input(net, k)].channels == 1;
    if (!ok)
        return vox_fail(ctx, VOX_UNSUPPORTED,
                        "net '%s' has %d inputs and %d outputs: training on this data needs %d "
                        "input(s) with 1 channel each (the raw, then each extra input) and one "
                        "output",
                        net->source, net->n_inputs, net->n_outputs, want_in);
    tr->out_layer = vox_net_output(net, 0);
    const struct vox_nn_layer *ol = &net->layers[tr->out_layer];
    tr->logit_layer = ol->in[0];
    if (o->loss == VOX_LOSS_MALIS && o->target != VOX_TARGET_AFFINITY)
        return vox_fail(ctx, VOX_INVALID_ARG, "loss malis needs target affinity, not %s",
                        vox_target_str(o->target));
    if (o->n_offsets < 0 || o->n_offsets > VOX_TRAIN_OFFSETS_MAX ||
        (o->n_offsets > 0 && (o->target != VOX_TARGET_AFFINITY || o->loss == VOX_LOSS_MALIS ||
                              o->rebalance == VOX_REBALANCE_VOLUME)))
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "%d long-range offsets: at most %d, with affinity targets, not with "
                        "loss malis or volume rebalancing",
                        o->n_offsets, VOX_TRAIN_OFFSETS_MAX);
    int64_t want = vox_target_channels(o->target, o->loss) + o->n_offsets;
    if (ol->channels != want)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "net '%s': output '%s' has %lld channels; target "
                        "%s with loss %s needs %lld",
                        net->source, ol->name, (long long)ol->channels, vox_target_str(o->target),
                        vox_loss_str(o->loss), (long long)want);
    bool sigmoid = o->loss == VOX_LOSS_BCE || o->loss == VOX_LOSS_MALIS;
    if ((sigmoid && ol->act != VOX_ACT_SIGMOID) ||
        (o->loss == VOX_LOSS_SOFTMAX && ol->act != VOX_ACT_SOFTMAX))
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "net '%s': loss %s needs output '%s' with act=%s, "
                        "it has act=%s",
                        net->source, vox_loss_str(o->loss), ol->name,
                        sigmoid ? "sigmoid" : "softmax", vox_nn_act_str(ol->act));
    if (o->accumulate < 1)
        return vox_fail(ctx, VOX_INVALID_ARG, "accumulate %lld must be >= 1",
                        (long long)o->accumulate);
    return vox_optim_check(ctx, &o->optim);
}

/* Shapes at the patch; the output box and its offset in the input. */
static enum vox_status plan_shapes(struct vox_ctx *ctx, struct vox_trainer *tr)
{
    const int64_t *p = tr->o.patch;
    enum vox_status s = vox_nn_graph_create(ctx, tr->net, p, tr->o.kernels, &tr->g);
    if (s == VOX_OK)
        vox_nn_graph_set_input_grads(tr->g, false);
    if (s == VOX_INVALID_ARG)
        vox_ctx_error_prefix(ctx,
                             "patch %lldx%lldx%lld is too small for the net's field of view "
                             "(or does not divide by its pooling)",
                             (long long)p[0], (long long)p[1], (long long)p[2]);
    if (s != VOX_OK)
        return s;
    const struct vox_nn_dims *d = vox_nn_graph_dims(tr->g);
    for (int a = 0; a < 3; a++) {
        tr->out[a] = d[tr->out_layer].shape[1 + a];
        if (d[tr->out_layer].stride_num[a] != d[tr->out_layer].stride_den[a])
            return vox_fail(ctx, VOX_UNSUPPORTED,
                            "net '%s': the output has stride %lld/%lld "
                            "along axis %d; training needs stride 1",
                            tr->net->source, (long long)d[tr->out_layer].stride_num[a],
                            (long long)d[tr->out_layer].stride_den[a], a);
        /* output voxel j is centred on input voxel j + (in - out) / 2 (valid: (fov - 1) / 2,
         * vox_net_fov's offset; same-padded: 0) */
        tr->off[a] = (p[a] - tr->out[a]) / 2;
    }
    return VOX_OK;
}

enum vox_status vox_trainer_create(struct vox_ctx *ctx, const struct vox_net *net,
                                   const struct vox_train_options *o,
                                   const struct vox_nn_weights *w0, struct vox_train_data *data,
                                   struct vox_trainer **tr_out)
{
    *tr_out = NULL;
    struct vox_trainer *tr = vox_calloc(ctx, 1, sizeof *tr);
    if (!tr)
        return VOX_OUT_OF_MEMORY;
    *tr = (struct vox_trainer){.ctx = ctx, .net = net, .o = *o, .data = data, .rng = o->seed};
    enum vox_status s = check_net(ctx, tr);
    if (s == VOX_OK)
        s = plan_shapes(ctx, tr);
    if (s == VOX_OK && o->rebalance == VOX_REBALANCE_VOLUME && o->loss != VOX_LOSS_MALIS)
        s = data ? vox_train_data_class_counts(ctx, data, o->target, o->loss, tr->vpos, tr->vneg)
                 : vox_fail(ctx, VOX_INVALID_ARG, "volume rebalancing needs the training data");
    if (s == VOX_OK && (s = vox_nn_weights_create(ctx, net, &tr->w)) == VOX_OK &&
        (s = vox_nn_weights_create(ctx, net, &tr->gw)) == VOX_OK &&
        (s = vox_nn_weights_create(ctx, net, &tr->gw_posted)) == VOX_OK &&
        (s = vox_nn_weights_create(ctx, net, &tr->m)) == VOX_OK &&
        (s = vox_nn_weights_create(ctx, net, &tr->v)) == VOX_OK &&
        (s = vox_optim_deferred_create(ctx, tr->w, &tr->update)) == VOX_OK)
        vox_nn_graph_set_update(tr->g, tr->update);
    if (s == VOX_OK && w0) {
        for (int i = 0; i < net->n_layers && s == VOX_OK; i++)
            for (int k = 0; k < VOX_P_COUNT && s == VOX_OK; k++)
                if (tr->w->p[i][k].rank)
                    s = vox_tensor_copy(ctx, &tr->w->p[i][k], &w0->p[i][k]);
    } else if (s == VOX_OK) {
        vox_nn_weights_init(net, tr->w, o->init, o->seed);
    }
    if (s != VOX_OK) {
        vox_trainer_destroy(tr);
        return s;
    }
    *tr_out = tr;
    return VOX_OK;
}

static void weights_zero(struct vox_nn_weights *w)
{
    for (int i = 0; i < w->n_layers; i++)
        for (int k = 0; k < VOX_P_COUNT; k++)
            if (w->p[i][k].rank)
                memset(w->p[i][k].data, 0, vox_tensor_nbytes(&w->p[i][k]));
}

/* The loss on the logits of the patch; MALIS takes the labels' interior (the output box). */
static enum vox_status patch_loss(struct vox_ctx *ctx, struct vox_trainer *tr,
                                  const struct vox_tensor *lab, const struct vox_tensor *tgt,
                                  const struct vox_tensor *mask, double scale, double *loss_out)
{
    struct vox_tensor *x = vox_nn_graph_value(tr->g, tr->logit_layer);
    struct vox_tensor *g = vox_nn_graph_grad(tr->g, tr->logit_layer);
    enum vox_nn_act act = tr->net->layers[tr->out_layer].act;
    if (tr->o.loss != VOX_LOSS_MALIS && tr->o.rebalance == VOX_REBALANCE_VOLUME)
        return vox_loss_compute_counts(ctx, tr->o.loss, tr->vpos, tr->vneg, x, act, tgt, mask,
                                       scale, g, loss_out);
    if (tr->o.loss != VOX_LOSS_MALIS)
        return vox_loss_compute(ctx, tr->o.loss, tr->o.rebalance, x, act, tgt, mask, scale, g,
                                loss_out);
    struct vox_tensor inner;
    int64_t lo[3] = {1, 1, 1}, hi[3];
    for (int a = 0; a < 3; a++)
        hi[a] = lab->shape[a] - 1;
    enum vox_status s = vox_tensor_view_box(ctx, lab, lo, hi, &inner);
    return s == VOX_OK ? vox_loss_malis(ctx, x, act, &inner, mask, true, scale, g, loss_out) : s;
}

/* The batch-norm running statistics (bn_mean, bn_var) of src into dst. A step stages them in
 * tr->gw (whose slots the optimizer ignores), updating them patch by patch, and commits them
 * to tr->w only when the step succeeds. */
static void running_stats_copy(struct vox_nn_weights *dst, const struct vox_nn_weights *src)
{
    for (int i = 0; i < dst->n_layers; i++)
        for (int k = VOX_P_BN_MEAN; k <= VOX_P_BN_VAR; k++)
            if (dst->p[i][k].rank)
                memcpy(dst->p[i][k].data, src->p[i][k].data, vox_tensor_nbytes(&dst->p[i][k]));
}

/* Validation's segmentation scores: per threshold of the grid, the patches' adapted Rand
 * errors summed. */
struct val_seg {
    double err[VOX_VAL_GRID];
    int64_t patches;
};

/* o (1, C, Z, Y, X) as quantized affinities (3, Z, Y, X): affinities clamped to [0, 1], a
 * boundary map (channel 0) through vox_seg_boundary_to_aff. */
static enum vox_status output_affinities(struct vox_ctx *ctx, const struct vox_tensor *o,
                                         enum vox_target t, struct vox_tensor *q_out)
{
    const int64_t nc = t == VOX_TARGET_AFFINITY ? 3 : 1;
    if (!o || o->dtype != VOX_F32 || o->rank != 5 || o->shape[0] != 1 || o->shape[1] < nc ||
        !vox_tensor_is_contiguous(o))
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "validation: the net's output must be a contiguous f32 (1, C, Z, Y, X) "
                        "tensor with C >= %lld",
                        (long long)nc);
    const int64_t vox = o->shape[2] * o->shape[3] * o->shape[4];
    const int64_t shape[4] = {nc, o->shape[2], o->shape[3], o->shape[4]};
    struct vox_tensor p = {0};
    enum vox_status s = vox_tensor_alloc(ctx, &p, VOX_F32, 4, shape);
    if (s != VOX_OK)
        return s;
    const float *src = o->data;
    float *dst = p.data;
    for (int64_t i = 0; i < nc * vox; i++) {
        const float v = src[i];
        dst[i] = v > 0 ? (v < 1 ? v : 1) : 0; /* NaN: 0 */
    }
    if (nc == 3) {
        s = vox_seg_quantize(ctx, &p, q_out);
    } else {
        struct vox_tensor map = p;
        map.rank = 3;
        memmove(map.shape, p.shape + 1, 3 * sizeof map.shape[0]);
        memmove(map.strides, p.strides + 1, 3 * sizeof map.strides[0]);
        s = vox_seg_boundary_to_aff(ctx, &map, false, q_out);
    }
    vox_tensor_free(ctx, &p);
    return s;
}

enum vox_status vox_train_seg_errors(struct vox_ctx *ctx, const struct vox_tensor *o,
                                     enum vox_target t, const struct vox_tensor *labels,
                                     const struct vox_tensor *valid, double err_out[VOX_VAL_GRID])
{
    struct vox_tensor q = {0}, gt = {0};
    struct vox_seg_result res = {0};
    struct vox_contingency *table = NULL;
    struct vox_seg_params p;
    vox_seg_params_defaults(&p);
    p.nsize = 0, p.dust = 0;
    enum vox_status s = output_affinities(ctx, o, t, &q);
    const int64_t *m = labels->shape;
    bool fits = s == VOX_OK && labels->dtype == VOX_U64 && labels->rank == 3 &&
                vox_tensor_is_contiguous(labels) &&
                (!valid || (valid->dtype == VOX_U8 && vox_tensor_is_contiguous(valid) &&
                            memcmp(valid->shape, m, 3 * sizeof *m) == 0));
    for (int a = 0; fits && a < 3; a++)
        fits = m[a] == q.shape[1 + a] + 2;
    if (s == VOX_OK && !fits)
        s = vox_fail(ctx, VOX_INVALID_ARG,
                     "validation: labels must be contiguous u64 of the output's shape + 2 per "
                     "axis (and valid u8 of the same shape)");
    if (s == VOX_OK)
        s = vox_segment_consume(ctx, &q, &p, &res);
    if (s == VOX_OK)
        s = vox_tensor_alloc(ctx, &gt, VOX_U64, 3, res.labels.shape);
    if (s == VOX_OK) { /* the labels' interior, 0 where not valid */
        const int64_t *n = res.labels.shape;
        const uint64_t *l = labels->data;
        const uint8_t *v = valid ? valid->data : NULL;
        uint64_t *g = gt.data;
        for (int64_t z = 0; z < n[0]; z++)
            for (int64_t y = 0; y < n[1]; y++)
                for (int64_t x = 0; x < n[2]; x++) {
                    const int64_t k = ((z + 1) * m[1] + y + 1) * m[2] + x + 1;
                    *g++ = !v || v[k] ? l[k] : 0;
                }
        s = vox_contingency_create(ctx, &table);
    }
    if (s == VOX_OK)
        s = vox_contingency_add(ctx, table, &res.labels, &gt);
    const struct vox_merge_history *h = &res.merges;
    int64_t *a = NULL, *b = NULL;
    struct vox_metrics *mh = NULL;
    if (s == VOX_OK) {
        a = vox_alloc(ctx, (size_t)(h->n + 1) * sizeof *a);
        b = vox_alloc(ctx, (size_t)(h->n + 1) * sizeof *b);
        mh = vox_alloc(ctx, (size_t)(h->n + 1) * sizeof *mh);
        s = a && b && mh ? VOX_OK : VOX_OUT_OF_MEMORY;
    }
    for (int64_t i = 0; s == VOX_OK && i < h->n; i++)
        a[i] = h->m[i].a, b[i] = h->m[i].b;
    if (s == VOX_OK)
        s = vox_metrics_history(ctx, table, NULL, h->n, a, b, NULL, 0, NULL, mh);
    for (int k = 0, applied = 0; s == VOX_OK && k < VOX_VAL_GRID; k++) {
        const double th = 0.05 * (k + 1);
        while (applied < h->n && vox_merge_applies(h->m[applied].score, th))
            applied++;
        err_out[k] = mh[applied].adapted_rand_error;
    }
    vox_free(ctx, a);
    vox_free(ctx, b);
    vox_free(ctx, mh);
    vox_contingency_destroy(table);
    vox_tensor_free(ctx, &q);
    vox_tensor_free(ctx, &gt);
    vox_seg_result_fini(ctx, &res);
    return s;
}

/* Adds the patch's errors (the net's output against lab where ok) to acc. */
static enum vox_status patch_seg(struct vox_ctx *ctx, const struct vox_trainer *tr,
                                 const struct vox_tensor *lab, const struct vox_tensor *ok,
                                 struct val_seg *acc)
{
    double err[VOX_VAL_GRID];
    enum vox_status s = vox_train_seg_errors(ctx, vox_nn_graph_value(tr->g, tr->out_layer),
                                             tr->o.target, lab, ok, err);
    for (int k = 0; s == VOX_OK && k < VOX_VAL_GRID; k++)
        acc->err[k] += err[k];
    acc->patches += s == VOX_OK;
    return s;
}

/* One patch: sample, forward, loss (its gradient times `scale` into the logits' grad),
 * backward into tr->gw when `backward` (training: the batch-norm running statistics staged in
 * tr->gw are updated from the patch's batch statistics too); with seg, its segmentation's
 * scores added there. */
static enum vox_status run_patch(struct vox_ctx *ctx, struct vox_trainer *tr,
                                 struct vox_train_data *d, uint64_t *rng,
                                 const struct vox_augment *aug, double scale, bool backward,
                                 struct val_seg *seg, double *loss_out)
{
    struct vox_tensor in[1 + VOX_TRAIN_EXTRA_MAX] = {{0}};
    struct vox_tensor lab = {0}, ok = {0}, tgt = {0}, mask = {0};
    enum vox_status s =
        vox_train_data_sample(ctx, d, rng, tr->o.patch, tr->out, tr->off, aug, in, &lab, &ok);
    if (s == VOX_OK)
        s = tr->o.n_offsets > 0
                ? vox_train_affinity_targets(ctx, &lab, &ok, tr->o.n_offsets,
                                             (const int64_t(*)[3])tr->o.offsets, &tgt, &mask)
                : vox_train_targets(ctx, tr->o.target, tr->o.loss, &lab, &ok, &tgt, &mask);
    if (s == VOX_OK)
        s = vox_nn_graph_forward(ctx, tr->g, tr->w, in);
    if (s == VOX_OK && backward)
        vox_nn_graph_bn_update(tr->g, tr->gw);
    if (s == VOX_OK) {
        vox_nn_graph_zero_grad(tr->g);
        s = patch_loss(ctx, tr, &lab, &tgt, &mask, scale, loss_out);
    }
    if (s == VOX_OK && backward && isfinite(*loss_out))
        vox_nn_graph_backward(ctx, tr->g, tr->w, tr->gw);
    if (s == VOX_OK && seg)
        s = patch_seg(ctx, tr, &lab, &ok, seg);
    for (int k = 0; k < 1 + VOX_TRAIN_EXTRA_MAX; k++)
        vox_tensor_free(ctx, &in[k]);
    vox_tensor_free(ctx, &lab);
    vox_tensor_free(ctx, &ok);
    vox_tensor_free(ctx, &tgt);
    vox_tensor_free(ctx, &mask);
    return s;
}

enum vox_status vox_trainer_step(struct vox_ctx *ctx, struct vox_trainer *tr, double *loss_out)
{
    *loss_out = 0;
    uint64_t rng = tr->rng;
    weights_zero(tr->gw);
    running_stats_copy(tr->gw, tr->w);
    double sum = 0, scale = 1.0 / (double)tr->o.accumulate;
    for (int64_t k = 0; k < tr->o.accumulate; k++) {
        double l = 0;
        enum vox_status s = run_patch(ctx, tr, tr->data, &rng, &tr->o.aug, scale, true, NULL, &l);
        if (s != VOX_OK)
            return s;
        sum += l;
    }
    *loss_out = sum * scale;
    if (!isfinite(*loss_out)) /* "nan" whatever its sign bit (-nan on some builds) */
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "the loss is %s at iteration %lld (diverged: "
                        "lower the learning rate)",
                        isnan(*loss_out) ? "nan"
                        : *loss_out > 0  ? "inf"
                                         : "-inf",
                        (long long)tr->iter + 1);
    running_stats_copy(tr->w, tr->gw);
    tr->rng = rng;
    tr->iter++;
    /* the update runs on the threads' idle time and, layer by layer, before the next forward
     * reads the weights (vox_nn_graph_set_update); it reads this gradient, so the next step
     * accumulates into the other */
    vox_optim_post(tr->update, &tr->o.optim, tr->iter, tr->w, tr->gw, tr->m, tr->v);
    struct vox_nn_weights *t = tr->gw;
    tr->gw = tr->gw_posted;
    tr->gw_posted = t;
    return VOX_OK;
}

/* The mean loss over the patches and, with seg, their segmentation scores. */
static enum vox_status validate(struct vox_ctx *ctx, struct vox_trainer *tr,
                                struct vox_train_data *val, int64_t patches, struct val_seg *seg,
                                double *loss_out)
{
    uint64_t rng = tr->o.seed ^ UINT64_C(0x5EED0F7A11DA7E00);
    double sum = 0;
    *loss_out = 0;
    if (vox_train_data_inputs(val) != vox_train_data_inputs(tr->data))
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "the validation data has %d inputs per patch, the training data %d",
                        vox_train_data_inputs(val), vox_train_data_inputs(tr->data));
    vox_optim_settle(tr->update);
    vox_nn_graph_set_eval(tr->g, true);
    for (int64_t k = 0; k < patches; k++) {
        double l = 0;
        enum vox_status s = run_patch(ctx, tr, val, &rng, NULL, 1, false, seg, &l);
        if (s != VOX_OK) {
            vox_nn_graph_set_eval(tr->g, false);
            return s;
        }
        sum += l;
    }
    vox_nn_graph_set_eval(tr->g, false);
    *loss_out = patches > 0 ? sum / (double)patches : 0;
    return VOX_OK;
}

enum vox_status vox_trainer_validate(struct vox_ctx *ctx, struct vox_trainer *tr,
                                     struct vox_train_data *val, int64_t patches, double *loss_out)
{
    return validate(ctx, tr, val, patches, NULL, loss_out);
}

enum vox_status vox_trainer_validate_scores(struct vox_ctx *ctx, struct vox_trainer *tr,
                                            struct vox_train_data *val, int64_t patches,
                                            struct vox_val_scores *out)
{
    struct val_seg seg = {{0}, 0};
    *out = (struct vox_val_scores){.rand_error = 1, .threshold = 0.5};
    enum vox_status s = validate(ctx, tr, val, patches, &seg, &out->loss);
    for (int k = 0; s == VOX_OK && seg.patches > 0 && k < VOX_VAL_GRID; k++) {
        const double e = seg.err[k] / (double)seg.patches;
        if (k == 0 || e < out->rand_error) { /* ties: the lower threshold */
            out->rand_error = e;
            out->threshold = 0.05 * (k + 1);
        }
    }
    return s;
}

bool vox_trainer_class_counts(const struct vox_trainer *tr, double *pos, double *neg)
{
    if (tr->o.rebalance != VOX_REBALANCE_VOLUME || tr->o.loss == VOX_LOSS_MALIS)
        return false;
    const int64_t nc = vox_target_channels(tr->o.target, tr->o.loss);
    memcpy(pos, tr->vpos, (size_t)nc * sizeof *pos);
    memcpy(neg, tr->vneg, (size_t)nc * sizeof *neg);
    return true;
}

int64_t vox_trainer_iteration(const struct vox_trainer *tr)
{
    return tr->iter;
}

const struct vox_nn_weights *vox_trainer_weights(const struct vox_trainer *tr)
{
    vox_optim_settle(tr->update); /* the last step's update finished */
    return tr->w;
}

int64_t vox_trainer_patch_voxels(const struct vox_trainer *tr)
{
    return tr->out[0] * tr->out[1] * tr->out[2] * tr->o.accumulate;
}

int64_t vox_trainer_graph_bytes(const struct vox_trainer *tr)
{
    return vox_nn_graph_bytes(tr->g);
}
