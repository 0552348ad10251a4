/*
 * ref_backward.c: the reference backward pass of the convolution and the transposed
 * convolution: gradients with respect to the input, the weights and the bias.
 *
 * The adjoints of the loops in ref_conv.c, written as gathers so that every gradient element
 * is one sum accumulated in double in a fixed order and rounded once, then added to what the
 * gradient tensor already holds (PyTorch's accumulate-into-.grad semantics, so a tensor read
 * by several layers, or several patches of one step, sum their contributions in the order the
 * calls are made). Work is split over (n, input channel) for the input gradient and over the
 * output channel for the weight gradient; each element is computed by one thread, so the
 * result does not depend on the thread count.
 */
#include "internal.h"

struct bwd_job {
    const struct vox_tensor *in, *w, *gout;
    const int64_t *dil, *pad;
    struct vox_tensor *gin, *gw, *gb;
};

/* gin[n,i,p] += sum_{o,a,b,c} w[o,i,a,b,c] * gout[n,o, p_z - a*dz + pz, p_y - b*dy + py,
 * p_x - c*dx + px], over the taps whose output index is inside gout. Task range: flat (n, i). */
static void conv_data_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct bwd_job *j = arg;
    const struct vox_tensor *w = j->w, *go = j->gout;
    const float *wp = w->data, *gp = go->data;
    float *ip = j->gin->data;
    const int64_t *is = j->gin->shape, *os = go->shape, *k = w->shape + 2;
    for (int64_t ni = lo[0]; ni < hi[0]; ni++) {
        int64_t n = ni / is[1], i = ni % is[1];
        for (int64_t z = 0; z < is[2]; z++)
            for (int64_t y = 0; y < is[3]; y++)
                for (int64_t x = 0; x < is[4]; x++) {
                    double acc = 0;
                    for (int64_t o = 0; o < os[1]; o++)
                        for (int64_t a = 0; a < k[0]; a++) {
                            int64_t oz = z - a * j->dil[0] + j->pad[0];
                            if (oz < 0 || oz >= os[2])
                                continue;
                            for (int64_t b = 0; b < k[1]; b++) {
                                int64_t oy = y - b * j->dil[1] + j->pad[1];
                                if (oy < 0 || oy >= os[3])
                                    continue;
                                for (int64_t c = 0; c < k[2]; c++) {
                                    int64_t ox = x - c * j->dil[2] + j->pad[2];
                                    if (ox < 0 || ox >= os[4])
                                        continue;
                                    acc += (double)wp[vox_nn_idx(w, o, i, a, b, c)] *
                                           (double)gp[vox_nn_idx(go, n, o, oz, oy, ox)];
                                }
                            }
                        }
                    int64_t e = vox_nn_idx(j->gin, n, i, z, y, x);
                    ip[e] = (float)(ip[e] + acc);
                }
    }
}

/* gw[o,i,a,b,c] += sum_{n,z,y,x} gout[n,o,z,y,x] * in[n,i, z + a*dz - pz, y + b*dy - py,
 * x + c*dx - px] (zero outside in); gb[o] += sum_{n,z,y,x} gout[n,o,z,y,x].
 * Task range: o. */
static void conv_weight_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct bwd_job *j = arg;
    const struct vox_tensor *in = j->in, *go = j->gout, *gw = j->gw;
    const float *ip = in->data, *gp = go->data;
    float *wp = gw->data;
    const int64_t *is = in->shape, *os = go->shape, *k = gw->shape + 2;
    for (int64_t o = lo[0]; o < hi[0]; o++) {
        for (int64_t i = 0; i < is[1]; i++)
            for (int64_t a = 0; a < k[0]; a++)
                for (int64_t b = 0; b < k[1]; b++)
                    for (int64_t c = 0; c < k[2]; c++) {
                        double acc = 0;
                        for (int64_t n = 0; n < os[0]; n++)
                            for (int64_t z = 0; z < os[2]; z++) {
                                int64_t iz = z + a * j->dil[0] - j->pad[0];
                                if (iz < 0 || iz >= is[2])
                                    continue;
                                for (int64_t y = 0; y < os[3]; y++) {
                                    int64_t iy = y + b * j->dil[1] - j->pad[1];
                                    if (iy < 0 || iy >= is[3])
                                        continue;
                                    for (int64_t x = 0; x < os[4]; x++) {
                                        int64_t ix = x + c * j->dil[2] - j->pad[2];
                                        if (ix >= 0 && ix < is[4])
                                            acc += (double)gp[vox_nn_idx(go, n, o, z, y, x)] *
                                                   (double)ip[vox_nn_idx(in, n, i, iz, iy, ix)];
                                    }
                                }
                            }
                        int64_t e = vox_nn_idx(gw, o, i, a, b, c);
                        wp[e] = (float)(wp[e] + acc);
                    }
        if (j->gb) {
            double acc = 0;
            int64_t plane = os[2] * os[3] * os[4];
            for (int64_t n = 0; n < os[0]; n++)
                for (int64_t v = 0; v < plane; v++)
                    acc += gp[(n * os[1] + o) * plane + v];
            float *bp = j->gb->data;
            bp[o] = (float)(bp[o] + acc);
        }
    }
}

void vox_nn_ref_conv_backward_data(struct vox_pool *pool, const struct vox_tensor *gout,
                                   const struct vox_tensor *w, const int64_t dilation[3],
                                   const int64_t pad[3], struct vox_tensor *gin)
{
    VOX_ASSERT(w->shape[0] == gout->shape[1] && w->shape[1] == gin->shape[1]);
    struct bwd_job j = {.w = w, .gout = gout, .dil = dilation, .pad = pad, .gin = gin};
    int64_t n[3] = {gin->shape[0] * gin->shape[1], 1, 1}, tile[3] = {1, 1, 1};
    vox_pool_for(pool, n, tile, VOX_SCHED_DYNAMIC, conv_data_task, &j);
}

void vox_nn_ref_conv_backward_weights(struct vox_pool *pool, const struct vox_tensor *in,
                                      const struct vox_tensor *gout, const int64_t dilation[3],
                                      const int64_t pad[3], struct vox_tensor *gw,
                                      struct vox_tensor *gb)
{
    VOX_ASSERT(gw->shape[0] == gout->shape[1] && gw->shape[1] == in->shape[1]);
    struct bwd_job j = {.in = in, .gout = gout, .dil = dilation, .pad = pad, .gw = gw, .gb = gb};
    int64_t n[3] = {gw->shape[0], 1, 1}, tile[3] = {1, 1, 1};
    vox_pool_for(pool, n, tile, VOX_SCHED_DYNAMIC, conv_weight_task, &j);
}

/* gin[n,i,z,y,x] += sum_{o,a,b,c} w[i,o,a,b,c] * gout[n,o, z*KZ+a, y*KY+b, x*KX+c].
 * Task range: flat (n, i). */
static void deconv_data_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct bwd_job *j = arg;
    const struct vox_tensor *w = j->w, *go = j->gout;
    const float *wp = w->data, *gp = go->data;
    float *ip = j->gin->data;
    const int64_t *is = j->gin->shape, *k = w->shape + 2;
    for (int64_t ni = lo[0]; ni < hi[0]; ni++) {
        int64_t n = ni / is[1], i = ni % is[1];
        for (int64_t z = 0; z < is[2]; z++)
            for (int64_t y = 0; y < is[3]; y++)
                for (int64_t x = 0; x < is[4]; x++) {
                    double acc = 0;
                    for (int64_t o = 0; o < go->shape[1]; o++)
                        for (int64_t a = 0; a < k[0]; a++)
                            for (int64_t b = 0; b < k[1]; b++)
                                for (int64_t c = 0; c < k[2]; c++)
                                    acc += (double)wp[vox_nn_idx(w, i, o, a, b, c)] *
                                           (double)gp[vox_nn_idx(go, n, o, z * k[0] + a,
                                                                 y * k[1] + b, x * k[2] + c)];
                    int64_t e = vox_nn_idx(j->gin, n, i, z, y, x);
                    ip[e] = (float)(ip[e] + acc);
                }
    }
}

/* gw[i,o,a,b,c] += sum_{n,z,y,x} in[n,i,z,y,x] * gout[n,o, z*KZ+a, y*KY+b, x*KX+c];
 * gb[o] += sum gout[n,o,...]. Task range: o (the weight's second axis). */
static void deconv_weight_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct bwd_job *j = arg;
    const struct vox_tensor *in = j->in, *go = j->gout, *gw = j->gw;
    const float *ip = in->data, *gp = go->data;
    float *wp = gw->data;
    const int64_t *is = in->shape, *os = go->shape, *k = gw->shape + 2;
    for (int64_t o = lo[0]; o < hi[0]; o++) {
        for (int64_t i = 0; i < is[1]; i++)
            for (int64_t a = 0; a < k[0]; a++)
                for (int64_t b = 0; b < k[1]; b++)
                    for (int64_t c = 0; c < k[2]; c++) {
                        double acc = 0;
                        for (int64_t n = 0; n < is[0]; n++)
                            for (int64_t z = 0; z < is[2]; z++)
                                for (int64_t y = 0; y < is[3]; y++)
                                    for (int64_t x = 0; x < is[4]; x++)
                                        acc += (double)ip[vox_nn_idx(in, n, i, z, y, x)] *
                                               (double)gp[vox_nn_idx(go, n, o, z * k[0] + a,
                                                                     y * k[1] + b, x * k[2] + c)];
                        int64_t e = vox_nn_idx(gw, i, o, a, b, c);
                        wp[e] = (float)(wp[e] + acc);
                    }
        if (j->gb) {
            double acc = 0;
            int64_t plane = os[2] * os[3] * os[4];
            for (int64_t n = 0; n < os[0]; n++)
                for (int64_t v = 0; v < plane; v++)
                    acc += gp[(n * os[1] + o) * plane + v];
            float *bp = j->gb->data;
            bp[o] = (float)(bp[o] + acc);
        }
    }
}

void vox_nn_ref_deconv_backward_data(struct vox_pool *pool, const struct vox_tensor *gout,
                                     const struct vox_tensor *w, struct vox_tensor *gin)
{
    VOX_ASSERT(w->shape[0] == gin->shape[1] && w->shape[1] == gout->shape[1]);
    struct bwd_job j = {.w = w, .gout = gout, .gin = gin};
    int64_t n[3] = {gin->shape[0] * gin->shape[1], 1, 1}, tile[3] = {1, 1, 1};
    vox_pool_for(pool, n, tile, VOX_SCHED_DYNAMIC, deconv_data_task, &j);
}

void vox_nn_ref_deconv_backward_weights(struct vox_pool *pool, const struct vox_tensor *in,
                                        const struct vox_tensor *gout, struct vox_tensor *gw,
                                        struct vox_tensor *gb)
{
    VOX_ASSERT(gw->shape[0] == in->shape[1] && gw->shape[1] == gout->shape[1]);
    struct bwd_job j = {.in = in, .gout = gout, .gw = gw, .gb = gb};
    int64_t n[3] = {gw->shape[1], 1, 1}, tile[3] = {1, 1, 1};
    vox_pool_for(pool, n, tile, VOX_SCHED_DYNAMIC, deconv_weight_task, &j);
}
