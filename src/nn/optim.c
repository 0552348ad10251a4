/*
 * optim.c: the optimizers: SGD with momentum, L2 weight decay and step annealing (ZNN's
 * filter::update and train.py's anneal_factor), and Adam (Kingma & Ba 2015, with bias
 * correction).
 *
 * Updates are elementwise, computed in double from the f32 weight, gradient and state and
 * stored back in f32, in a fixed order on one thread: the same inputs give the same bits on
 * any machine and thread count, and the state (m, v) is all a checkpoint needs besides the
 * step count. Batch norm's running statistics (bn_mean, bn_var) are not trained: the
 * trainer updates them from the batch statistics; bn_weight and bn_bias are, like any weight.
 */
#include "internal.h"
#include "vox/train.h"

#include <string.h>

static const char *const optim_names[] = {"sgd", "adam"};

const char *vox_optim_str(enum vox_optim_kind k)
{
    return k < VOX_OPTIM_COUNT ? optim_names[k] : "?";
}

bool vox_optim_parse(const char *s, enum vox_optim_kind *out)
{
    for (int i = 0; i < VOX_OPTIM_COUNT; i++)
        if (strcmp(s, optim_names[i]) == 0)
            return *out = (enum vox_optim_kind)i, true;
    return false;
}

void vox_optim_defaults(enum vox_optim_kind k, struct vox_optim_params *p)
{
    *p = (struct vox_optim_params){.kind = k,
                                   .lr = k == VOX_OPTIM_ADAM ? 0.001 : 0.01,
                                   .momentum = 0.9,
                                   .beta1 = 0.9,
                                   .beta2 = 0.999,
                                   .eps = 1e-8,
                                   .anneal_factor = 0.1};
}

enum vox_status vox_optim_check(struct vox_ctx *ctx, const struct vox_optim_params *p)
{
    if (p->kind >= VOX_OPTIM_COUNT)
        return vox_fail(ctx, VOX_INVALID_ARG, "optimizer: unknown kind %d", (int)p->kind);
    if (!(p->lr > 0) || !(p->lr < 1e6))
        return vox_fail(ctx, VOX_INVALID_ARG, "optimizer: lr %g must be > 0", p->lr);
    if (!(p->momentum >= 0 && p->momentum < 1))
        return vox_fail(ctx, VOX_INVALID_ARG, "optimizer: momentum %g must be in [0, 1)",
                        p->momentum);
    if (!(p->weight_decay >= 0))
        return vox_fail(ctx, VOX_INVALID_ARG, "optimizer: weight decay %g must be >= 0",
                        p->weight_decay);
    if (!(p->beta1 >= 0 && p->beta1 < 1 && p->beta2 >= 0 && p->beta2 < 1 && p->eps > 0))
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "optimizer: adam needs beta1, beta2 in [0, 1) and eps > 0");
    if (p->anneal_every < 0 || !(p->anneal_factor > 0 && p->anneal_factor <= 1))
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "optimizer: anneal every %lld must be >= 0, factor %g in (0, 1]",
                        (long long)p->anneal_every, p->anneal_factor);
    return VOX_OK;
}

void vox_optim_step(const struct vox_optim_params *p, int64_t t, struct vox_nn_weights *w,
                    const struct vox_nn_weights *g, struct vox_nn_weights *m,
                    struct vox_nn_weights *v)
{
    double lr = p->lr;
    if (p->anneal_every > 0)
        lr *= pow(p->anneal_factor, (double)((t - 1) / p->anneal_every));
    double c1 = 1 - pow(p->beta1, (double)t), c2 = 1 - pow(p->beta2, (double)t);
    for (int i = 0; i < w->n_layers; i++)
        for (int k = 0; k < VOX_P_COUNT; k++) {
            if (w->p[i][k].rank == 0 || k == VOX_P_BN_MEAN || k == VOX_P_BN_VAR)
                continue;
            float *wp = w->p[i][k].data, *mp = m->p[i][k].data, *vp = v->p[i][k].data;
            const float *gp = g->p[i][k].data;
            const int64_t n = vox_tensor_numel(&w->p[i][k]);
            for (int64_t e = 0; e < n; e++) {
                double gd = (double)gp[e] + p->weight_decay * wp[e];
                if (p->kind == VOX_OPTIM_SGD) {
                    double md = p->momentum * mp[e] + gd;
                    mp[e] = (float)md;
                    wp[e] = (float)(wp[e] - lr * md);
                    continue;
                }
                double md = p->beta1 * mp[e] + (1 - p->beta1) * gd;
                double vd = p->beta2 * vp[e] + (1 - p->beta2) * gd * gd;
                mp[e] = (float)md;
                vp[e] = (float)vd;
                wp[e] = (float)(wp[e] - lr * (md / c1) / (sqrt(vd / c2) + p->eps));
            }
        }
}
