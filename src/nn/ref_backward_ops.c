/*
 * ref_backward_ops.c: the reference backward pass of the data-movement and pointwise layers:
 * activations (softmax over channels included), max-pooling, max-filtering, nearest
 * upsampling, crop, add and concat.
 *
 * Each function is the adjoint of its forward loop in ref_ops.c, with the index formula in
 * its comment (and in vox/nn.h). Gradients are added to what `gin` holds (accumulate
 * semantics, see ref_backward.c), each element's contributions summed in double in a fixed
 * order and rounded once; the activation backward overwrites instead (it maps the gradient of
 * a layer's output to the gradient of its pre-activation, in place if asked).
 *
 * Max: the gradient of a window goes to its argmax, and ties go to the first tap in scan
 * order (a, then b, then c: z, y, x of the window), which is the tap the forward max keeps
 * (it replaces the running max only on a strictly larger value).
 */
#include "internal.h"

#include <float.h>
#include <string.h>

/* Calls body(n, c, z, y, x) over t's index space. */
#define FOR_ALL(t, ...)                                                                            \
    do {                                                                                           \
        const int64_t *s_ = (t)->shape;                                                            \
        for (int64_t n = 0; n < s_[0]; n++)                                                        \
            for (int64_t c = 0; c < s_[1]; c++)                                                    \
                for (int64_t z = 0; z < s_[2]; z++)                                                \
                    for (int64_t y = 0; y < s_[3]; y++)                                            \
                        for (int64_t x = 0; x < s_[4]; x++) {                                      \
                            __VA_ARGS__;                                                           \
                        }                                                                          \
    } while (0)

/* softmax over axis 1: gx_c = y_c (gy_c - sum_k y_k gy_k) */
static void softmax_backward(const struct vox_tensor *y, const struct vox_tensor *gy,
                             struct vox_tensor *gx)
{
    const float *yp = y->data, *gp = gy->data;
    float *xp = gx->data;
    const int64_t *s = y->shape;
    int64_t plane = s[2] * s[3] * s[4];
    for (int64_t n = 0; n < s[0]; n++)
        for (int64_t v = 0; v < plane; v++) {
            int64_t base = n * s[1] * plane + v;
            double dot = 0;
            for (int64_t c = 0; c < s[1]; c++)
                dot += (double)yp[base + c * plane] * gp[base + c * plane];
            for (int64_t c = 0; c < s[1]; c++) {
                int64_t e = base + c * plane;
                xp[e] = (float)(yp[e] * (gp[e] - dot));
            }
        }
}

/* xp = yp > 0 ? gp : gp * 0, four lanes at a time (gcc does not vectorise the scalar loop at
 * -O2: xp may alias gp). */
typedef float relu_v4 __attribute__((vector_size(16)));
typedef int32_t relu_m4 __attribute__((vector_size(16)));

static void relu_backward(const float *yp, const float *gp, float *xp, int64_t n)
{
    int64_t e = 0;
    for (; e + 4 <= n; e += 4) {
        relu_v4 y, g;
        memcpy(&y, yp + e, sizeof y);
        memcpy(&g, gp + e, sizeof g);
        relu_m4 m = y > (relu_v4){0, 0, 0, 0};
        relu_v4 r = (relu_v4)(((relu_m4)g & m) | ((relu_m4)(g * 0.0f) & ~m));
        memcpy(xp + e, &r, sizeof r);
    }
    for (; e < n; e++)
        xp[e] = yp[e] > 0 ? gp[e] : gp[e] * 0.0f;
}

/* xp = gp * (yp > 0 ? 1 : yp + 1) in double, four lanes at a time: the same operations as
 * vox_nn_act_slope's, so the same bits. */
typedef double elu_v4d __attribute__((vector_size(32)));
typedef int64_t elu_m4d __attribute__((vector_size(32)));

static void elu_backward(const float *yp, const float *gp, float *xp, int64_t n)
{
    int64_t e = 0;
    const elu_v4d zero = {0, 0, 0, 0}, one = zero + 1.0;
    for (; e + 4 <= n; e += 4) {
        relu_v4 y4, g4;
        memcpy(&y4, yp + e, sizeof y4);
        memcpy(&g4, gp + e, sizeof g4);
        elu_v4d y = __builtin_convertvector(y4, elu_v4d), g = __builtin_convertvector(g4, elu_v4d);
        elu_m4d pos = y > zero;
        elu_v4d slope = (elu_v4d)(((elu_m4d)one & pos) | ((elu_m4d)(y + 1.0) & ~pos));
        relu_v4 r = __builtin_convertvector(g * slope, relu_v4);
        memcpy(xp + e, &r, sizeof r);
    }
    for (; e < n; e++)
        xp[e] = (float)(gp[e] * vox_nn_act_slope(VOX_ACT_ELU, yp[e]));
}

/* One loop per activation (vox_nn_act_slope inlined with a constant act). */
#define ACT_LOOP(A)                                                                                \
    for (int64_t e = 0; e < n; e++)                                                                \
    xp[e] = (float)(gp[e] * vox_nn_act_slope(A, yp[e]))

void vox_nn_ref_act_backward(const struct vox_tensor *y, const struct vox_tensor *gy,
                             enum vox_nn_act act, struct vox_tensor *gx)
{
    if (act == VOX_ACT_SOFTMAX)
        return softmax_backward(y, gy, gx);
    const float *yp = y->data, *gp = gy->data;
    float *xp = gx->data;
    const int64_t n = vox_tensor_numel(gx);
    switch (act) {
    case VOX_ACT_RELU: /* g * 1 or g * 0 (a signed zero) in float: the same bits as in double */
        relu_backward(yp, gp, xp, n);
        break;
    case VOX_ACT_ELU:
        elu_backward(yp, gp, xp, n);
        break;
    case VOX_ACT_SIGMOID:
        ACT_LOOP(VOX_ACT_SIGMOID);
        break;
    case VOX_ACT_TANH:
        ACT_LOOP(VOX_ACT_TANH);
        break;
    default:
        ACT_LOOP(VOX_ACT_LINEAR);
        break;
    }
}

/* The input index (per axis) of the argmax of the window at o with taps o + t*s, t < w:
 * the first maximum in scan order. */
static void window_argmax(const struct vox_tensor *in, int64_t n, int64_t c, const int64_t o[3],
                          const int64_t w[3], const int64_t s[3], int64_t at[3])
{
    const float *ip = in->data;
    float m = -FLT_MAX;
    at[0] = o[0], at[1] = o[1], at[2] = o[2];
    for (int64_t a = 0; a < w[0]; a++)
        for (int64_t b = 0; b < w[1]; b++)
            for (int64_t d = 0; d < w[2]; d++) {
                int64_t p[3] = {o[0] + a * s[0], o[1] + b * s[1], o[2] + d * s[2]};
                float v = ip[vox_nn_idx(in, n, c, p[0], p[1], p[2])];
                if (v > m) {
                    m = v;
                    at[0] = p[0], at[1] = p[1], at[2] = p[2];
                }
            }
}

/* gin[n,c, argmax of window (z,y,x)] += gout[n,c,z,y,x]; the window of out (z,y,x) is
 * in[n,c, z*WZ + a, y*WY + b, x*WX + c'], a < WZ, b < WY, c' < WX. Windows are disjoint, so
 * each input element receives at most one term. */
void vox_nn_ref_maxpool_backward(const struct vox_tensor *in, const struct vox_tensor *gout,
                                 const int64_t window[3], struct vox_tensor *gin)
{
    static const int64_t one[3] = {1, 1, 1};
    const float *gp = gout->data;
    float *ip = gin->data;
    FOR_ALL(gout, {
        int64_t o[3] = {z * window[0], y * window[1], x * window[2]}, at[3];
        window_argmax(in, n, c, o, window, one, at);
        int64_t e = vox_nn_idx(gin, n, c, at[0], at[1], at[2]);
        ip[e] = (float)((double)ip[e] + gp[vox_nn_idx(gout, n, c, z, y, x)]);
    });
}

/* gin[n,c,p] += sum over taps t (scan order) with q = p - t*d inside gout and argmax(q) = p
 * of gout[n,c,q]; the window of out q is in[n,c, q + t*d], t < window. */
void vox_nn_ref_maxfilter_backward(const struct vox_tensor *in, const struct vox_tensor *gout,
                                   const int64_t window[3], const int64_t dilation[3],
                                   struct vox_tensor *gin)
{
    const float *gp = gout->data;
    float *ip = gin->data;
    const int64_t *os = gout->shape;
    FOR_ALL(gin, {
        double acc = 0;
        for (int64_t a = 0; a < window[0]; a++)
            for (int64_t b = 0; b < window[1]; b++)
                for (int64_t d = 0; d < window[2]; d++) {
                    int64_t q[3] = {z - a * dilation[0], y - b * dilation[1], x - d * dilation[2]};
                    if (q[0] < 0 || q[1] < 0 || q[2] < 0 || q[0] >= os[2] || q[1] >= os[3] ||
                        q[2] >= os[4])
                        continue;
                    int64_t at[3];
                    window_argmax(in, n, c, q, window, dilation, at);
                    if (at[0] == z && at[1] == y && at[2] == x)
                        acc += gp[vox_nn_idx(gout, n, c, q[0], q[1], q[2])];
                }
        int64_t e = vox_nn_idx(gin, n, c, z, y, x);
        ip[e] = (float)(ip[e] + acc);
    });
}

/* gin[n,c,z,y,x] += sum_{a<FZ, b<FY, c'<FX} gout[n,c, z*FZ+a, y*FY+b, x*FX+c'] (the forward
 * is out[z] = in[z / F]; taps beyond gout's edge are skipped). */
void vox_nn_ref_upsample_backward(const struct vox_tensor *gout, const int64_t factor[3],
                                  struct vox_tensor *gin)
{
    const float *gp = gout->data;
    float *ip = gin->data;
    const int64_t *os = gout->shape;
    FOR_ALL(gin, {
        double acc = 0;
        for (int64_t a = 0; a < factor[0] && z * factor[0] + a < os[2]; a++)
            for (int64_t b = 0; b < factor[1] && y * factor[1] + b < os[3]; b++)
                for (int64_t d = 0; d < factor[2] && x * factor[2] + d < os[4]; d++)
                    acc += gp[vox_nn_idx(gout, n, c, z * factor[0] + a, y * factor[1] + b,
                                         x * factor[2] + d)];
        int64_t e = vox_nn_idx(gin, n, c, z, y, x);
        ip[e] = (float)(ip[e] + acc);
    });
}

/* gin[n,c, z+lo[0], y+lo[1], x+lo[2]] += gout[n,c,z,y,x]; the rest of gin is unchanged. */
void vox_nn_ref_crop_backward(const struct vox_tensor *gout, const int64_t lo[3],
                              struct vox_tensor *gin)
{
    const float *gp = gout->data;
    float *ip = gin->data;
    FOR_ALL(gout, {
        int64_t e = vox_nn_idx(gin, n, c, z + lo[0], y + lo[1], x + lo[2]);
        ip[e] = (float)((double)ip[e] + gp[vox_nn_idx(gout, n, c, z, y, x)]);
    });
}

/* gin_k += gout for every k (gout is the gradient of the sum, before the activation). */
void vox_nn_ref_add_backward(const struct vox_tensor *gout, struct vox_tensor *const *gin, int n)
{
    const float *gp = gout->data;
    const int64_t m = vox_tensor_numel(gout);
    for (int k = 0; k < n; k++) { /* a float add: the double sum of two floats rounded once
                                      * more to float gives the same bits (53 >= 2 * 24 + 2) */
        float *ip = gin[k]->data;
        for (int64_t e = 0; e < m; e++)
            ip[e] += gp[e];
    }
}

/* gin_k[n,c,z,y,x] += gout[n, off_k + c, z,y,x], off_k = channels of gin_0 .. gin_{k-1}. */
void vox_nn_ref_concat_backward(const struct vox_tensor *gout, struct vox_tensor *const *gin,
                                int n_in)
{
    const float *gp = gout->data;
    int64_t off = 0;
    for (int k = 0; k < n_in; k++) {
        struct vox_tensor *t = gin[k];
        float *ip = t->data;
        FOR_ALL(t, {
            int64_t e = vox_nn_idx(t, n, c, z, y, x);
            ip[e] = (float)((double)ip[e] + gp[vox_nn_idx(gout, n, off + c, z, y, x)]);
        });
        off += t->shape[1];
    }
}
