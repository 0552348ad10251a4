/*
 * ref_ops.c: the reference data-movement and pointwise layers: max-pooling, max-filtering,
 * max-pooling fragments and their interleave, nearest upsampling, crop, add, concat and
 * activations (softmax over channels).
 *
 * Obviously-correct loops over contiguous (N, C, Z, Y, X) f32 tensors; each function states
 * its index formula in vox/nn.h. Sums (add, softmax) are taken in double in a fixed order.
 * These are cheap next to the convolutions and run on the caller's thread.
 */
#include "internal.h"

#include <float.h>

/* Calls body(n, c, z, y, x) over out's index space. */
#define FOR_OUT(out, ...)                                                                          \
    do {                                                                                           \
        const int64_t *os_ = (out)->shape;                                                         \
        for (int64_t n = 0; n < os_[0]; n++)                                                       \
            for (int64_t c = 0; c < os_[1]; c++)                                                   \
                for (int64_t z = 0; z < os_[2]; z++)                                               \
                    for (int64_t y = 0; y < os_[3]; y++)                                           \
                        for (int64_t x = 0; x < os_[4]; x++) {                                     \
                            __VA_ARGS__;                                                           \
                        }                                                                          \
    } while (0)

/* max over the window w, taps at offsets (z0 + a*s0, ...) */
static float window_max(const struct vox_tensor *in, int64_t n, int64_t c, const int64_t o[3],
                        const int64_t w[3], const int64_t s[3])
{
    const float *ip = in->data;
    float m = -FLT_MAX;
    for (int64_t a = 0; a < w[0]; a++)
        for (int64_t b = 0; b < w[1]; b++)
            for (int64_t d = 0; d < w[2]; d++) {
                float v =
                    ip[vox_nn_idx(in, n, c, o[0] + a * s[0], o[1] + b * s[1], o[2] + d * s[2])];
                m = v > m ? v : m;
            }
    return m;
}

void vox_nn_ref_maxpool(const struct vox_tensor *in, const int64_t window[3],
                        struct vox_tensor *out)
{
    static const int64_t one[3] = {1, 1, 1};
    float *op = out->data;
    FOR_OUT(out, {
        int64_t o[3] = {z * window[0], y * window[1], x * window[2]};
        op[vox_nn_idx(out, n, c, z, y, x)] = window_max(in, n, c, o, window, one);
    });
}

void vox_nn_ref_maxfilter(const struct vox_tensor *in, const int64_t window[3],
                          const int64_t dilation[3], struct vox_tensor *out)
{
    float *op = out->data;
    FOR_OUT(out, {
        int64_t o[3] = {z, y, x};
        op[vox_nn_idx(out, n, c, z, y, x)] = window_max(in, n, c, o, window, dilation);
    });
}

void vox_nn_ref_mpf(const struct vox_tensor *in, const int64_t window[3], struct vox_tensor *out)
{
    static const int64_t one[3] = {1, 1, 1};
    const int64_t *w = window, frags = w[0] * w[1] * w[2];
    float *op = out->data;
    FOR_OUT(out, {
        int64_t f = n % frags, o[3] = {z * w[0] + f / (w[1] * w[2]), y * w[1] + f / w[2] % w[1],
                                      x * w[2] + f % w[2]};
        op[vox_nn_idx(out, n, c, z, y, x)] = window_max(in, n / frags, c, o, w, one);
    });
}

void vox_nn_ref_interleave(const struct vox_tensor *in, int levels, const int64_t (*win)[3],
                           struct vox_tensor *out)
{
    const float *ip = in->data;
    float *op = out->data;
    FOR_OUT(out, {
        int64_t d[3] = {z, y, x}, b = 0;
        for (int k = 0; k < levels; k++) {
            int64_t f = 0;
            for (int a = 0; a < 3; a++) {
                f = f * win[k][a] + d[a] % win[k][a];
                d[a] /= win[k][a];
            }
            b = b * win[k][0] * win[k][1] * win[k][2] + f;
        }
        op[vox_nn_idx(out, n, c, z, y, x)] = ip[vox_nn_idx(in, n + b, c, d[0], d[1], d[2])];
    });
}

void vox_nn_ref_upsample(const struct vox_tensor *in, const int64_t factor[3],
                         struct vox_tensor *out)
{
    const float *ip = in->data;
    float *op = out->data;
    FOR_OUT(out, op[vox_nn_idx(out, n, c, z, y, x)] =
                     ip[vox_nn_idx(in, n, c, z / factor[0], y / factor[1], x / factor[2])]);
}

void vox_nn_ref_crop(const struct vox_tensor *in, const int64_t lo[3], struct vox_tensor *out)
{
    const float *ip = in->data;
    float *op = out->data;
    FOR_OUT(out, op[vox_nn_idx(out, n, c, z, y, x)] =
                     ip[vox_nn_idx(in, n, c, z + lo[0], y + lo[1], x + lo[2])]);
}

void vox_nn_ref_add(const struct vox_tensor *const *in, int n_in, enum vox_nn_act act,
                    struct vox_tensor *out)
{
    float *op = out->data;
    const int64_t n = vox_tensor_numel(out);
    for (int64_t e = 0; e < n; e++) {
        double acc = 0;
        for (int k = 0; k < n_in; k++)
            acc += ((const float *)in[k]->data)[e];
        op[e] = (float)acc;
    }
    vox_nn_ref_act(out, act, out);
}

void vox_nn_ref_concat(const struct vox_tensor *const *in, int n_in, struct vox_tensor *out)
{
    float *op = out->data;
    int64_t off = 0;
    for (int k = 0; k < n_in; k++) {
        const struct vox_tensor *t = in[k];
        const float *ip = t->data;
        FOR_OUT(t, op[vox_nn_idx(out, n, off + c, z, y, x)] = ip[vox_nn_idx(t, n, c, z, y, x)]);
        off += t->shape[1];
    }
}

/* softmax over axis 1 at every (n, z, y, x) */
static void softmax(const struct vox_tensor *in, struct vox_tensor *out)
{
    const float *ip = in->data;
    float *op = out->data;
    const int64_t *s = in->shape;
    int64_t plane = s[2] * s[3] * s[4];
    for (int64_t n = 0; n < s[0]; n++)
        for (int64_t v = 0; v < plane; v++) {
            const float *src = ip + n * s[1] * plane + v;
            float *dst = op + n * s[1] * plane + v;
            double m = -DBL_MAX, sum = 0;
            for (int64_t c = 0; c < s[1]; c++)
                m = src[c * plane] > m ? src[c * plane] : m;
            for (int64_t c = 0; c < s[1]; c++)
                sum += exp(src[c * plane] - m);
            for (int64_t c = 0; c < s[1]; c++)
                dst[c * plane] = (float)(exp(src[c * plane] - m) / sum);
        }
}

void vox_nn_ref_act(const struct vox_tensor *in, enum vox_nn_act act, struct vox_tensor *out)
{
    if (act == VOX_ACT_SOFTMAX)
        return softmax(in, out);
    const float *ip = in->data;
    float *op = out->data;
    if (act == VOX_ACT_LINEAR && ip == op)
        return;
    const int64_t n = vox_tensor_numel(out);
    for (int64_t e = 0; e < n; e++)
        op[e] = (float)vox_nn_act_apply(act, ip[e]);
}

void vox_nn_ref_plain(const struct vox_nn_layer *l, const struct vox_tensor *const *ins,
                      struct vox_tensor *out)
{
    int64_t v[3];
    switch (l->kind) {
    case VOX_NN_UPSAMPLE:
        vox_nn_ref_upsample(ins[0], l->kernel, out);
        break;
    case VOX_NN_CROP:
        vox_nn_crop_lo(l, ins[0]->shape + 2, out->shape + 2, v);
        vox_nn_ref_crop(ins[0], v, out);
        break;
    case VOX_NN_ADD:
        vox_nn_ref_add(ins, l->n_in, l->act, out);
        break;
    case VOX_NN_CONCAT:
        vox_nn_ref_concat(ins, l->n_in, out);
        break;
    case VOX_NN_ACT:
    case VOX_NN_OUTPUT:
        vox_nn_ref_act(ins[0], l->act, out);
        break;
    default:
        break;
    }
}
