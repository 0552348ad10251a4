/*
 * shape.c: shape inference and the field of view.
 *
 * One forward pass over the layers (they are in topological order). Each tensor gets its
 * (C, Z, Y, X) shape and, per axis, the window of input voxels its voxel j sees:
 * [lo + j*stride, lo + j*stride + fov), stride a fraction (pooling multiplies it, upsampling
 * divides it). This is ZNN's fov_pass run forwards: conv and max-filter add (k - 1)*d*stride
 * to the fov, pooling adds (w - 1)*stride and multiplies the stride by w, crops shift lo,
 * and where paths meet the union is taken. Max-pooling fragments (mpf, ZNNi) are followed
 * through fragment 0, as a pooling layer: fragment f's voxel j is fragment 0's shifted by f
 * strides of the mpf's input; an interleave divides the stride by the product of the windows
 * it undoes (the dense output's stride), keeping the fov exact. After an upsampling the fov is an upper bound
 * (rounded up). When a valid layer would get an empty tensor, the pass goes on with size 1
 * to finish the field of view, then reports the patch as smaller than it.
 */
#include "internal.h"

#include <stdio.h>

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* ceil(v * num / den) and floor(v * num / den) for v >= 0, num, den > 0 */
static int64_t mul_ceil(int64_t v, int64_t num, int64_t den)
{
    return (v * num + den - 1) / den;
}

static int64_t mul_floor(int64_t v, int64_t num, int64_t den)
{
    int64_t p = v * num;
    return p >= 0 ? p / den : -((-p + den - 1) / den);
}

static void shape_str(char *buf, size_t n, const int64_t *s, int rank)
{
    int k = 0;
    for (int i = 0; i < rank && k < (int)n; i++)
        k += snprintf(buf + k, n - (size_t)k, i ? "x%lld" : "%lld", (long long)s[i]);
}

struct pass {
    struct vox_ctx *ctx;
    const struct vox_net *net;
    struct vox_nn_dims *d;
    int too_small;   /* the first layer whose valid output would be empty, or -1 */
    int indivisible; /* the first pool (mpf) whose input (+ 1) does not divide by its window */
    unsigned bad;    /* bit a: axis a does not fit (too small, indivisible, a crop, a mismatch) */
    enum vox_status st;
};

/* The union of the input windows of layer l's inputs (add, concat). */
static void fov_union(struct pass *p, const struct vox_nn_layer *l, struct vox_nn_dims *o)
{
    for (int a = 0; a < 3; a++) {
        const struct vox_nn_dims *f = &p->d[l->in[0]];
        int64_t lo = f->lo[a], hi = f->lo[a] + f->fov[a];
        for (int i = 1; i < l->n_in; i++) {
            const struct vox_nn_dims *g = &p->d[l->in[i]];
            lo = g->lo[a] < lo ? g->lo[a] : lo;
            hi = g->lo[a] + g->fov[a] > hi ? g->lo[a] + g->fov[a] : hi;
        }
        o->lo[a] = lo;
        o->fov[a] = hi - lo;
    }
}

static void check_same(struct pass *p, const struct vox_nn_layer *l, int rank0)
{
    const struct vox_nn_dims *f = &p->d[l->in[0]];
    for (int i = 1; i < l->n_in && p->st == VOX_OK; i++) {
        const struct vox_nn_dims *g = &p->d[l->in[i]];
        for (int a = rank0; a < 4; a++)
            if (f->shape[a] != g->shape[a]) {
                p->bad |= a > 0 ? 1u << (a - 1) : 7u;
                char s1[80], s2[80];
                shape_str(s1, sizeof s1, f->shape + rank0, 4 - rank0);
                shape_str(s2, sizeof s2, g->shape + rank0, 4 - rank0);
                p->st = vox_fail(
                    p->ctx, VOX_INVALID_ARG, "%s line %d: %s '%s': '%s' is %s but '%s' is %s",
                    p->net->source, l->line, vox_nn_kind_str(l->kind), l->name,
                    p->net->layers[l->in[0]].name, s1, p->net->layers[l->in[i]].name, s2);
                return;
            }
    }
}

/* A valid window of `ext` input voxels: out = in - ext + 1, at least 1 (see too_small). */
static int64_t shrink(struct pass *p, int layer, int a, int64_t in, int64_t ext)
{
    if (in - ext + 1 >= 1)
        return in - ext + 1;
    p->bad |= 1u << a;
    if (p->too_small < 0)
        p->too_small = layer;
    return 1;
}

static void axis_step(struct pass *p, int li, int a)
{
    const struct vox_nn_layer *l = &p->net->layers[li];
    const struct vox_nn_dims *f = &p->d[l->in[0]];
    struct vox_nn_dims *o = &p->d[li];
    int64_t in = f->shape[1 + a], sn = f->stride_num[a], sd = f->stride_den[a];
    int64_t k = l->kernel[a], ext = (k - 1) * l->dilation[a];
    o->shape[1 + a] = in, o->lo[a] = f->lo[a], o->fov[a] = f->fov[a];
    switch (l->kind) {
    case VOX_NN_CONV:
    case VOX_NN_MAXFILTER:
        o->fov[a] += mul_ceil(ext, sn, sd);
        if (l->same && l->kind == VOX_NN_CONV)
            o->lo[a] -= mul_ceil(ext / 2, sn, sd);
        else
            o->shape[1 + a] = shrink(p, li, a, in, ext + 1);
        break;
    case VOX_NN_POOL:
        o->fov[a] += mul_ceil(k - 1, sn, sd);
        sn *= k;
        o->shape[1 + a] = in / k > 0 ? in / k : 1;
        break;
    case VOX_NN_MPF: /* fragment 0: pooling after a max-filter, as far as the fov goes */
        o->fov[a] += mul_ceil(k - 1, sn, sd);
        sn *= k;
        o->shape[1 + a] = shrink(p, li, a, (in - k + 1) / k, 1);
        break;
    case VOX_NN_DECONV:
    case VOX_NN_UPSAMPLE:
        sd *= k;
        o->shape[1 + a] = in * k;
        break;
    case VOX_NN_INTERLEAVE: {
        int64_t win[VOX_NN_MPF_MAX][3], m = 1;
        for (int v = vox_net_mpf_levels(p->net, l->in[0], win) - 1; v >= 0; v--)
            m *= win[v][a];
        sd *= m;
        o->shape[1 + a] = in * m;
        break;
    }
    case VOX_NN_CROP: {
        int64_t m = l->crop_to >= 0 ? (in - p->d[l->crop_to].shape[1 + a]) / 2 : l->margin[a];
        o->shape[1 + a] = l->crop_to >= 0 ? p->d[l->crop_to].shape[1 + a] : in - 2 * m;
        o->lo[a] += mul_floor(m, sn, sd);
        if (o->shape[1 + a] < 1 && p->too_small >= 0)
            o->shape[1 + a] = 1;
        break;
    }
    default:
        break;
    }
    int64_t g = gcd64(sn, sd);
    o->stride_num[a] = sn / g;
    o->stride_den[a] = sd / g;
}

/* Pool inputs must divide by the window; crops must fit. Checked after the pass for pools
 * (a patch smaller than the field of view is the better message), here for crops. */
static void check_layer(struct pass *p, int li)
{
    const struct vox_nn_layer *l = &p->net->layers[li];
    const struct vox_nn_dims *f = &p->d[l->in[0]];
    for (int a = 0; a < 3; a++) {
        if (p->bad & (1u << a)) /* clamped along a: only the field of view is still sound */
            continue;
        int64_t in = f->shape[1 + a], k = l->kernel[a], out = p->d[li].shape[1 + a];
        bool off = (l->kind == VOX_NN_POOL && in % k != 0) ||
                   (l->kind == VOX_NN_MPF && (in + 1) % k != 0);
        if (off && p->indivisible < 0 && p->too_small < 0)
            p->indivisible = li;
        bool crop = l->kind == VOX_NN_CROP && (out < 1 || out > in);
        p->bad |= off || crop ? 1u << a : 0;
        if (crop && p->too_small < 0) {
            char s1[80], s2[80];
            shape_str(s1, sizeof s1, f->shape + 1, 3);
            shape_str(s2, sizeof s2, p->d[li].shape + 1, 3);
            p->st = vox_fail(p->ctx, VOX_INVALID_ARG,
                             "%s line %d: crop '%s': cannot crop '%s' (%s) to %s", p->net->source,
                             l->line, l->name, p->net->layers[l->in[0]].name, s1, s2);
            return;
        }
    }
}

static enum vox_status indivisible(struct pass *p)
{
    const struct vox_nn_layer *l = &p->net->layers[p->indivisible];
    char s1[80], s2[80];
    shape_str(s1, sizeof s1, p->d[l->in[0]].shape + 1, 3);
    shape_str(s2, sizeof s2, l->kernel, 3);
    if (l->kind == VOX_NN_MPF)
        return vox_fail(p->ctx, VOX_INVALID_ARG,
                        "%s line %d: mpf '%s': input '%s' is %s; each size + 1 must divide by the "
                        "window %s (equal fragments)",
                        p->net->source, l->line, l->name, p->net->layers[l->in[0]].name, s1, s2);
    return vox_fail(p->ctx, VOX_INVALID_ARG,
                    "%s line %d: pool '%s': input '%s' is %s, not divisible by the window %s",
                    p->net->source, l->line, l->name, p->net->layers[l->in[0]].name, s1, s2);
}

static void layer_step(struct pass *p, const int64_t patch[3], int li)
{
    const struct vox_nn_layer *l = &p->net->layers[li];
    struct vox_nn_dims *o = &p->d[li];
    o->shape[0] = l->channels;
    o->batch = l->kind == VOX_NN_INPUT ? 1 : p->d[l->in[0]].batch;
    if (l->kind == VOX_NN_MPF)
        o->batch *= l->kernel[0] * l->kernel[1] * l->kernel[2];
    if (l->kind == VOX_NN_INTERLEAVE)
        o->batch = 1;
    if (l->kind == VOX_NN_INPUT) {
        for (int a = 0; a < 3; a++) {
            o->shape[1 + a] = patch[a];
            o->lo[a] = 0;
            o->fov[a] = o->stride_num[a] = o->stride_den[a] = 1;
        }
        return;
    }
    for (int a = 0; a < 3; a++)
        axis_step(p, li, a);
    check_layer(p, li);
    if (l->kind == VOX_NN_ADD && p->too_small < 0 && p->indivisible < 0)
        check_same(p, l, 0);
    if (l->kind == VOX_NN_CONCAT && p->too_small < 0 && p->indivisible < 0)
        check_same(p, l, 1);
    if (l->kind == VOX_NN_ADD || l->kind == VOX_NN_CONCAT)
        fov_union(p, l, o);
}

/* The shape pass; *bad_out gets the axes that do not fit (the planner snaps each axis). */
static enum vox_status shapes(struct vox_ctx *ctx, const struct vox_net *net,
                              const int64_t patch[3], struct vox_nn_dims *dims, unsigned *bad_out)
{
    for (int a = 0; a < 3; a++)
        if (patch[a] < 1 || patch[a] > (INT64_C(1) << 31))
            return *bad_out = 1u << a, vox_fail(ctx, VOX_INVALID_ARG,
                            "patch size %lld along axis %c is not in "
                            "1..2^31",
                            (long long)patch[a], "zyx"[a]);
    struct pass p = {.ctx = ctx, .net = net, .d = dims, .too_small = -1, .indivisible = -1};
    for (int i = 0; i < net->n_layers && p.st == VOX_OK; i++)
        layer_step(&p, patch, i);
    if (p.st == VOX_OK && p.too_small >= 0) {
        int64_t fov[3], off[3];
        vox_net_fov(net, dims, fov, off);
        char s1[80], s2[80];
        shape_str(s1, sizeof s1, patch, 3);
        shape_str(s2, sizeof s2, fov, 3);
        const struct vox_nn_layer *l = &net->layers[p.too_small];
        p.st = vox_fail(ctx, VOX_INVALID_ARG,
                        "%s: the input patch %s is smaller than the field of view %s (%s '%s' "
                        "would have no output)",
                        net->source, s1, s2, vox_nn_kind_str(l->kind), l->name);
    }
    if (p.st == VOX_OK && p.indivisible >= 0)
        p.st = indivisible(&p);
    *bad_out = p.st == VOX_OK ? 0 : p.bad ? p.bad : 7u;
    return p.st;
}

enum vox_status vox_net_shapes(struct vox_ctx *ctx, const struct vox_net *net,
                               const int64_t patch[3], struct vox_nn_dims *dims)
{
    unsigned bad;
    return shapes(ctx, net, patch, dims, &bad);
}

unsigned vox_nn_shapes_bad_axes(struct vox_ctx *ctx, const struct vox_net *net,
                                const int64_t patch[3], struct vox_nn_dims *dims)
{
    unsigned bad;
    if (shapes(ctx, net, patch, dims, &bad) != VOX_OK)
        vox_ctx_clear_error(ctx);
    return bad;
}

void vox_net_fov(const struct vox_net *net, const struct vox_nn_dims *dims, int64_t fov_out[3],
                 int64_t offset_out[3])
{
    for (int a = 0; a < 3; a++) {
        fov_out[a] = 0;
        offset_out[a] = 0;
        for (int i = 0; i < net->n_layers; i++)
            if (net->layers[i].kind == VOX_NN_OUTPUT && dims[i].fov[a] > fov_out[a]) {
                fov_out[a] = dims[i].fov[a];
                offset_out[a] = dims[i].lo[a] + (dims[i].fov[a] - 1) / 2;
            }
    }
}

double vox_nn_layer_flops(const struct vox_net *net, const struct vox_nn_dims *dims, int layer)
{
    const struct vox_nn_layer *l = &net->layers[layer];
    const int64_t *s = dims[layer].shape;
    double vox = (double)dims[layer].batch * (double)s[1] * (double)s[2] * (double)s[3];
    double cin = (double)net->layers[l->in[0]].channels;
    double k = (double)l->kernel[0] * (double)l->kernel[1] * (double)l->kernel[2];
    if (l->kind == VOX_NN_CONV)
        return 2.0 * cin * k * (double)s[0] * vox;
    if (l->kind == VOX_NN_DECONV) /* each output voxel gets one tap per input channel */
        return 2.0 * cin * (double)s[0] * vox;
    return 0;
}
