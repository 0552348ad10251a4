/*
 * ref_bn.c: the reference batch norm for training (Ioffe & Szegedy 2015, PyTorch's
 * BatchNorm3d): the forward pass with batch or running statistics, the backward pass, and the
 * running-statistics update.
 *
 * Per channel c over its M = N * Z * Y * X values z:
 *   mean = sum z / M,  var = sum (z - mean)^2 / M  (biased, two passes),
 *   xhat = (z - mean) / sqrt(var + eps),  out = act(gamma xhat + beta);
 * backward, from dy = d loss / d (gamma xhat + beta):
 *   dgamma += sum dy xhat,  dbeta += sum dy,
 *   dz = gamma / sqrt(var + eps) / M * (M dy - sum dy - xhat sum dy xhat).
 * Every channel is one task on the pool: its sums run in double in the fixed order
 * (n, z, y, x) on one thread, so the results are bitwise identical for any thread count.
 */
#include "internal.h"

struct bn_job {
    const struct vox_tensor *z, *gy, *xhat, *gamma, *beta;
    struct vox_tensor *out, *xhat_out, *gz, *ggamma, *gbeta;
    double eps;
    enum vox_nn_act act;
    bool batch;
    double *mean, *var;
};

/* The (n, c) plane of a contiguous (N, C, Z, Y, X) tensor. */
static float *plane(const struct vox_tensor *t, int64_t n, int64_t c)
{
    return (float *)t->data + (n * t->shape[1] + c) * t->shape[2] * t->shape[3] * t->shape[4];
}

static void batch_stats(const struct bn_job *j, int64_t c, int64_t nb, int64_t m)
{
    double sum = 0, sq = 0;
    for (int64_t n = 0; n < nb; n++) {
        const float *p = plane(j->z, n, c);
        for (int64_t e = 0; e < m; e++)
            sum += p[e];
    }
    double mean = sum / (double)(nb * m);
    for (int64_t n = 0; n < nb; n++) {
        const float *p = plane(j->z, n, c);
        for (int64_t e = 0; e < m; e++)
            sq += ((double)p[e] - mean) * ((double)p[e] - mean);
    }
    j->mean[c] = mean;
    j->var[c] = sq / (double)(nb * m);
}

static void forward_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    const struct bn_job *j = arg;
    const int64_t *s = j->z->shape, m = s[2] * s[3] * s[4];
    bool pointwise = j->act != VOX_ACT_SOFTMAX;
    for (int64_t c = lo[0]; c < hi[0]; c++) {
        if (j->batch)
            batch_stats(j, c, s[0], m);
        double invstd = 1 / sqrt(j->var[c] + j->eps), mean = j->mean[c];
        double g = ((const float *)j->gamma->data)[c], b = ((const float *)j->beta->data)[c];
        for (int64_t n = 0; n < s[0]; n++) {
            const float *zp = plane(j->z, n, c);
            float *op = plane(j->out, n, c), *xp = j->xhat_out ? plane(j->xhat_out, n, c) : NULL;
            for (int64_t e = 0; e < m; e++) {
                double xh = ((double)zp[e] - mean) * invstd, v = g * xh + b;
                if (xp)
                    xp[e] = (float)xh;
                op[e] = (float)(pointwise ? vox_nn_act_apply(j->act, v) : v);
            }
        }
    }
}

void vox_nn_ref_bn_forward(struct vox_pool *pool, const struct vox_tensor *z,
                           const struct vox_tensor *gamma, const struct vox_tensor *beta,
                           double eps, enum vox_nn_act act, bool batch, double *mean, double *var,
                           struct vox_tensor *xhat, struct vox_tensor *out)
{
    VOX_ASSERT(z->rank == 5 && out->rank == 5 && gamma->shape[0] == z->shape[1]);
    struct bn_job j = {.z = z,
                       .gamma = gamma,
                       .beta = beta,
                       .out = out,
                       .xhat_out = xhat,
                       .eps = eps,
                       .act = act,
                       .batch = batch,
                       .mean = mean,
                       .var = var};
    const int64_t n[3] = {z->shape[1], 1, 1}, tile[3] = {1, 1, 1};
    vox_pool_for(pool, n, tile, VOX_SCHED_STATIC, forward_task, &j);
    if (act == VOX_ACT_SOFTMAX)
        vox_nn_ref_act(out, act, out);
}

static void backward_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    const struct bn_job *j = arg;
    const int64_t *s = j->xhat->shape, m = s[2] * s[3] * s[4];
    double count = (double)(s[0] * m);
    for (int64_t c = lo[0]; c < hi[0]; c++) {
        double sdy = 0, sdyx = 0;
        for (int64_t n = 0; n < s[0]; n++) {
            const float *xp = plane(j->xhat, n, c), *gp = plane(j->gy, n, c);
            for (int64_t e = 0; e < m; e++) {
                sdy += gp[e];
                sdyx += (double)gp[e] * (double)xp[e];
            }
        }
        ((float *)j->ggamma->data)[c] = (float)(((float *)j->ggamma->data)[c] + sdyx);
        ((float *)j->gbeta->data)[c] = (float)(((float *)j->gbeta->data)[c] + sdy);
        double k = ((const float *)j->gamma->data)[c] / sqrt(j->var[c] + j->eps) / count;
        for (int64_t n = 0; n < s[0]; n++) {
            const float *xp = plane(j->xhat, n, c), *gp = plane(j->gy, n, c);
            float *op = plane(j->gz, n, c);
            for (int64_t e = 0; e < m; e++)
                op[e] = (float)(k * (count * gp[e] - sdy - (double)xp[e] * sdyx));
        }
    }
}

void vox_nn_ref_bn_backward(struct vox_pool *pool, const struct vox_tensor *xhat,
                            const struct vox_tensor *gy, const struct vox_tensor *gamma,
                            const double *var, double eps, struct vox_tensor *gz,
                            struct vox_tensor *ggamma, struct vox_tensor *gbeta)
{
    VOX_ASSERT(xhat->rank == 5 && gy->rank == 5 && gz->rank == 5);
    struct bn_job j = {.xhat = xhat,
                       .gy = gy,
                       .gamma = gamma,
                       .gz = gz,
                       .ggamma = ggamma,
                       .gbeta = gbeta,
                       .eps = eps,
                       .var = (double *)var};
    const int64_t n[3] = {xhat->shape[1], 1, 1}, tile[3] = {1, 1, 1};
    vox_pool_for(pool, n, tile, VOX_SCHED_STATIC, backward_task, &j);
}

void vox_nn_bn_running_update(const double *mean, const double *var, int64_t channels,
                              int64_t count, struct vox_tensor *run_mean,
                              struct vox_tensor *run_var)
{
    float *rm = run_mean->data, *rv = run_var->data;
    double unbias = count > 1 ? (double)count / (double)(count - 1) : 1;
    for (int64_t c = 0; c < channels; c++) {
        rm[c] = (float)((1 - VOX_NN_BN_MOMENTUM) * rm[c] + VOX_NN_BN_MOMENTUM * mean[c]);
        rv[c] = (float)((1 - VOX_NN_BN_MOMENTUM) * rv[c] + VOX_NN_BN_MOMENTUM * var[c] * unbias);
    }
}
