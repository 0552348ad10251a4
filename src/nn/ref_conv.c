/*
 * ref_conv.c: the reference convolution and transposed convolution: the oracle for the JIT
 * and every fast kernel.
 *
 * Plain loops over (N, C, Z, Y, X) f32 tensors in PyTorch's conventions (Conv3d is a
 * cross-correlation; ConvTranspose3d with stride = kernel scatters each input voxel into a
 * k-block). Every output element is one sum accumulated in double in a fixed order (input
 * channel, then kz, ky, kx) and rounded once, so it is within 1 ulp of the exact value
 * whatever order a fast kernel uses. Work is split over (n, output channel) on the pool; each
 * element is computed by one thread, so results do not depend on the thread count.
 */
#include "internal.h"

struct conv_job {
    const struct vox_tensor *in, *w, *b;
    const int64_t *dil, *pad;
    enum vox_nn_act act;
    struct vox_tensor *out;
};

/* out[n,o,z,y,x] = act(b[o] + sum_{i,a,b,c} w[o,i,a,b,c] * in[n,i, z+a*dz-pz, y+b*dy-py,
 * x+c*dx-px]), zero outside in. Task range: flat (n, o). */
static void conv_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct conv_job *j = arg;
    const struct vox_tensor *in = j->in, *w = j->w;
    const float *ip = in->data, *wp = w->data, *bp = j->b ? j->b->data : NULL;
    float *op = j->out->data;
    const int64_t *os = j->out->shape, *is = in->shape, *k = w->shape + 2;
    int64_t nout = os[1], cin = is[1];
    for (int64_t no = lo[0]; no < hi[0]; no++) {
        int64_t n = no / nout, o = no % nout;
        for (int64_t z = 0; z < os[2]; z++)
            for (int64_t y = 0; y < os[3]; y++)
                for (int64_t x = 0; x < os[4]; x++) {
                    double acc = bp ? bp[o] : 0.0;
                    for (int64_t i = 0; i < cin; i++)
                        for (int64_t a = 0; a < k[0]; a++) {
                            int64_t iz = z + a * j->dil[0] - j->pad[0];
                            if (iz < 0 || iz >= is[2])
                                continue;
                            for (int64_t b = 0; b < k[1]; b++) {
                                int64_t iy = y + b * j->dil[1] - j->pad[1];
                                if (iy < 0 || iy >= is[3])
                                    continue;
                                for (int64_t c = 0; c < k[2]; c++) {
                                    int64_t ix = x + c * j->dil[2] - j->pad[2];
                                    if (ix < 0 || ix >= is[4])
                                        continue;
                                    acc += (double)wp[vox_nn_idx(w, o, i, a, b, c)] *
                                           (double)ip[vox_nn_idx(in, n, i, iz, iy, ix)];
                                }
                            }
                        }
                    op[vox_nn_idx(j->out, n, o, z, y, x)] = (float)vox_nn_act_apply(j->act, acc);
                }
    }
}

void vox_nn_ref_conv(struct vox_pool *pool, const struct vox_tensor *in, const struct vox_tensor *w,
                     const struct vox_tensor *b, const int64_t dilation[3], const int64_t pad[3],
                     enum vox_nn_act act, struct vox_tensor *out)
{
    VOX_ASSERT(in->rank == 5 && w->rank == 5 && out->rank == 5);
    VOX_ASSERT(w->shape[0] == out->shape[1] && w->shape[1] == in->shape[1]);
    struct conv_job j = {in, w, b, dilation, pad, act, out};
    int64_t n[3] = {out->shape[0] * out->shape[1], 1, 1}, tile[3] = {1, 1, 1};
    vox_pool_for(pool, n, tile, VOX_SCHED_DYNAMIC, conv_task, &j);
    if (act == VOX_ACT_SOFTMAX)
        vox_nn_ref_act(out, act, out);
}

/* out[n,o, z*KZ+a, y*KY+b, x*KX+c] = act(b[o] + sum_i in[n,i,z,y,x] * w[i,o,a,b,c]).
 * Task range: flat (n, o). */
static void deconv_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct conv_job *j = arg;
    const struct vox_tensor *in = j->in, *w = j->w;
    const float *ip = in->data, *wp = w->data, *bp = j->b ? j->b->data : NULL;
    float *op = j->out->data;
    const int64_t *os = j->out->shape, *k = w->shape + 2;
    int64_t nout = os[1], cin = in->shape[1];
    for (int64_t no = lo[0]; no < hi[0]; no++) {
        int64_t n = no / nout, o = no % nout;
        for (int64_t z = 0; z < os[2]; z++)
            for (int64_t y = 0; y < os[3]; y++)
                for (int64_t x = 0; x < os[4]; x++) {
                    double acc = bp ? bp[o] : 0.0;
                    for (int64_t i = 0; i < cin; i++)
                        acc += (double)wp[vox_nn_idx(w, i, o, z % k[0], y % k[1], x % k[2])] *
                               (double)ip[vox_nn_idx(in, n, i, z / k[0], y / k[1], x / k[2])];
                    op[vox_nn_idx(j->out, n, o, z, y, x)] = (float)vox_nn_act_apply(j->act, acc);
                }
    }
}

void vox_nn_ref_deconv(struct vox_pool *pool, const struct vox_tensor *in,
                       const struct vox_tensor *w, const struct vox_tensor *b, enum vox_nn_act act,
                       struct vox_tensor *out)
{
    VOX_ASSERT(in->rank == 5 && w->rank == 5 && out->rank == 5);
    VOX_ASSERT(w->shape[0] == in->shape[1] && w->shape[1] == out->shape[1]);
    static const int64_t none[3] = {1, 1, 1};
    struct conv_job j = {in, w, b, none, none, act, out};
    int64_t n[3] = {out->shape[0] * out->shape[1], 1, 1}, tile[3] = {1, 1, 1};
    vox_pool_for(pool, n, tile, VOX_SCHED_DYNAMIC, deconv_task, &j);
    if (act == VOX_ACT_SOFTMAX)
        vox_nn_ref_act(out, act, out);
}
