/*
 * demo_model.c: the demo's ConvNet step: finds the shipped model (nets/synth_aff.h5 and its
 * spec nets/synth_aff.net, trained as docs/training.md says) and predicts affinities for an
 * in-memory volume with the fast forward pass (vox_nn_fast_*).
 *
 * The model is found relative to the executable (/proc/self/exe): DIR/../nets, DIR/nets and
 * DIR/../../nets, so a build directory inside the source tree (build/vox) finds the source
 * tree's nets/. The net is valid-padded: the input is mirrored by the field of view's margin
 * (ZNN's is_bd_mirror), so the predictions cover the whole volume, and the volume is cut into
 * z-slabs whose plan stays under a memory budget (the last slab overlaps the one before; its
 * voxels get the same values).
 */
#include "demo_model.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

bool demo_model_find(char *buf, size_t n)
{
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0)
        return false;
    exe[len] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return false;
    *slash = '\0';
    static const char *const rel[] = {"/../nets/", "/nets/", "/../../nets/"};
    for (size_t k = 0; k < sizeof rel / sizeof rel[0]; k++) {
        int w = snprintf(buf, n, "%s%s%s", exe, rel[k], DEMO_MODEL_NAME);
        if (w > 0 && (size_t)w < n && access(buf, R_OK) == 0)
            return true;
    }
    return false;
}

/* i mirrored into [0, n): -1 -> 1, n -> n - 2 (n == 1: 0). */
static int64_t mirror(int64_t i, int64_t n)
{
    if (n == 1)
        return 0;
    while (i < 0 || i >= n)
        i = i < 0 ? -i : 2 * (n - 1) - i;
    return i;
}

/* The input slab: raw z-rows [z0 - lo0, ...) mirrored, scaled to [0, 1]. */
static void fill_slab(const struct vox_tensor *raw, int64_t z0, const int64_t lo[3],
                      struct vox_tensor *in)
{
    const int64_t *s = raw->shape, *p = in->shape + 2;
    const uint8_t *r = raw->data;
    float *d = in->data;
    for (int64_t z = 0; z < p[0]; z++)
        for (int64_t y = 0; y < p[1]; y++) {
            int64_t rz = mirror(z0 + z - lo[0], s[0]), ry = mirror(y - lo[1], s[1]);
            const uint8_t *row = r + (rz * s[1] + ry) * s[2];
            for (int64_t x = 0; x < p[2]; x++)
                *d++ = row[mirror(x - lo[2], s[2])] / 255.0f;
        }
}

/* Output slab (1, 3, D, Y, X) -> aff[:, z0 : z0 + D] quantized, q = floor(255 a + 0.5). */
static void store_slab(const struct vox_tensor *o, int64_t z0, struct vox_tensor *aff)
{
    const int64_t D = o->shape[2], plane = o->shape[3] * o->shape[4], Z = aff->shape[1];
    const float *src = o->data;
    uint8_t *dst = aff->data;
    for (int64_t c = 0; c < 3; c++)
        for (int64_t z = 0; z < D; z++) {
            const float *a = src + (c * D + z) * plane;
            uint8_t *q = dst + (c * Z + z0 + z) * plane;
            for (int64_t e = 0; e < plane; e++) {
                float v = a[e] < 0 ? 0 : a[e] > 1 ? 1 : a[e];
                q[e] = (uint8_t)(255.0f * v + 0.5f);
            }
        }
}

/* The net's field of view and output offset, and a check that it maps 1 channel to 3. */
static enum vox_status net_geometry(struct vox_ctx *ctx, const struct vox_net *net,
                                    const int64_t shape[3], int64_t fov[3], int64_t lo[3])
{
    int in = vox_net_input(net, 0), out = vox_net_output(net, 0);
    if (net->n_inputs != 1 || net->n_outputs != 1 || net->layers[in].channels != 1 ||
        net->layers[out].channels != 3)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "net '%s': the demo needs one 1-channel input and one 3-channel "
                        "(affinity) output",
                        net->source);
    struct vox_nn_dims *dims = vox_calloc(ctx, (size_t)net->n_layers, sizeof *dims);
    if (!dims)
        return VOX_OUT_OF_MEMORY;
    /* a probe patch larger than any field of view the demo can use */
    const int64_t probe[3] = {shape[0] + 64, shape[1] + 64, shape[2] + 64};
    enum vox_status s = vox_net_shapes(ctx, net, probe, dims);
    if (s == VOX_OK) {
        vox_net_fov(net, dims, fov, lo);
        for (int a = 0; a < 3 && s == VOX_OK; a++)
            if (dims[out].shape[1 + a] != probe[a] - fov[a] + 1)
                s = vox_fail(ctx, VOX_UNSUPPORTED,
                             "net '%s': the demo needs a valid-padded net with stride 1",
                             net->source);
    }
    vox_free(ctx, dims);
    return s;
}

/* The deepest slab (output z-rows) whose plan fits in `budget` bytes (at least 1). */
static int64_t slab_depth(struct vox_ctx *ctx, const struct vox_net *net, const int64_t shape[3],
                          const int64_t fov[3], size_t budget)
{
    int64_t d = shape[0];
    for (; d > 1; d = (d + 1) / 2) {
        int64_t p[3] = {d + fov[0] - 1, shape[1] + fov[1] - 1, shape[2] + fov[2] - 1};
        size_t bytes;
        if (vox_nn_fast_estimate(ctx, net, p, &bytes) == VOX_OK && bytes <= budget)
            break;
    }
    return d;
}

static enum vox_status run_slabs(struct vox_ctx *ctx, const struct vox_net *net,
                                 const struct vox_nn_weights *w, const struct vox_tensor *raw,
                                 const int64_t fov[3], const int64_t lo[3], struct vox_tensor *aff)
{
    const int64_t *s = raw->shape;
    int64_t D = slab_depth(ctx, net, s, fov, (size_t)512 << 20);
    int64_t p[3] = {D + fov[0] - 1, s[1] + fov[1] - 1, s[2] + fov[2] - 1};
    int64_t is[5] = {1, 1, p[0], p[1], p[2]};
    struct vox_nn_fast *f = NULL;
    struct vox_tensor in = {0};
    enum vox_status st = vox_nn_fast_create(ctx, net, w, p, &f);
    if (st == VOX_OK)
        st = vox_tensor_alloc(ctx, &in, VOX_F32, 5, is);
    for (int64_t z = 0; st == VOX_OK && z < s[0]; z += D) {
        int64_t z0 = z + D <= s[0] ? z : s[0] - D;
        fill_slab(raw, z0, lo, &in);
        if ((st = vox_nn_fast_forward(ctx, f, &in)) == VOX_OK)
            store_slab(vox_nn_fast_output(f, 0), z0, aff);
    }
    vox_tensor_free(ctx, &in);
    vox_nn_fast_destroy(f);
    return st;
}

/* View xf (bits 0-2: flip z, y, x; bit 3: then swap y and x) of voxel p of a volume of
 * shape s: its coordinates q in the view. */
static void view_coords(int xf, const int64_t s[3], const int64_t p[3], int64_t q[3])
{
    int64_t f[3];
    for (int a = 0; a < 3; a++)
        f[a] = xf & (1 << a) ? s[a] - 1 - p[a] : p[a];
    q[0] = f[0], q[1] = xf & 8 ? f[2] : f[1], q[2] = xf & 8 ? f[1] : f[2];
}

/* raw seen through view xf (shape vs: y and x swapped when xf & 8). */
static void view_raw(const struct vox_tensor *raw, int xf, struct vox_tensor *out)
{
    const int64_t *s = raw->shape, *vs = out->shape;
    const uint8_t *r = raw->data;
    uint8_t *o = out->data;
    for (int64_t p[3] = {0, 0, 0}; p[0] < s[0]; p[0]++)
        for (p[1] = 0; p[1] < s[1]; p[1]++)
            for (p[2] = 0; p[2] < s[2]; p[2]++) {
                int64_t q[3];
                view_coords(xf, s, p, q);
                o[(q[0] * vs[1] + q[1]) * vs[2] + q[2]] = r[(p[0] * s[1] + p[1]) * s[2] + p[2]];
            }
}

/* Adds view xf's affinities back in the volume's frame: the link (p, p - e_c) is channel c'
 * (y and x swap under bit 3) of the view at q, or at q + e_c' when axis c is flipped (the
 * view's link then points the other way); links leaving the volume take q itself. */
static void add_view(const struct vox_tensor *va, int xf, const int64_t s[3], float *acc)
{
    const int64_t *vs = va->shape + 1, plane = vs[0] * vs[1] * vs[2];
    const uint8_t *v = va->data;
    for (int c = 0; c < 3; c++) {
        int cv = xf & 8 && c > 0 ? 3 - c : c;
        for (int64_t p[3] = {0, 0, 0}; p[0] < s[0]; p[0]++)
            for (p[1] = 0; p[1] < s[1]; p[1]++)
                for (p[2] = 0; p[2] < s[2]; p[2]++) {
                    int64_t q[3];
                    view_coords(xf, s, p, q);
                    q[cv] += xf & (1 << c) && p[c] > 0;
                    *acc++ += v[cv * plane + (q[0] * vs[1] + q[1]) * vs[2] + q[2]];
                }
    }
}

/* The mean of `views` views' predictions (views 0, 8, 6, 14, 1, 9, 7, 15: identity,
 * transpose, x-y flips, then with z flipped), quantized. */
static enum vox_status predict_views(struct vox_ctx *ctx, const struct vox_net *net,
                                     const struct vox_nn_weights *w, const struct vox_tensor *raw,
                                     int views, const int64_t fov[3], const int64_t lo[3],
                                     struct vox_tensor *aff)
{
    static const int order[8] = {0, 8, 6, 14, 1, 9, 7, 15};
    const int64_t *s = raw->shape, n = vox_tensor_numel(aff);
    float *acc = vox_calloc(ctx, (size_t)n, sizeof *acc);
    enum vox_status st = acc ? VOX_OK : VOX_OUT_OF_MEMORY;
    for (int k = 0; k < views && st == VOX_OK; k++) {
        int xf = order[k];
        int64_t vs[3] = {s[0], xf & 8 ? s[2] : s[1], xf & 8 ? s[1] : s[2]};
        int64_t as[4] = {3, vs[0], vs[1], vs[2]};
        struct vox_tensor vr = {0}, va = {0};
        st = vox_tensor_alloc(ctx, &vr, VOX_U8, 3, vs);
        if (st == VOX_OK && (st = vox_tensor_alloc(ctx, &va, VOX_U8, 4, as)) == VOX_OK) {
            view_raw(raw, xf, &vr);
            if ((st = run_slabs(ctx, net, w, &vr, fov, lo, &va)) == VOX_OK)
                add_view(&va, xf, s, acc);
        }
        vox_tensor_free(ctx, &vr);
        vox_tensor_free(ctx, &va);
    }
    uint8_t *q = aff->data;
    for (int64_t e = 0; st == VOX_OK && e < n; e++)
        q[e] = (uint8_t)(acc[e] / (float)views + 0.5f);
    vox_free(ctx, acc);
    return st;
}

enum vox_status demo_model_predict(struct vox_ctx *ctx, const char *model,
                                   const struct vox_tensor *raw, int views,
                                   struct vox_tensor *aff_out)
{
    char spec[4096];
    size_t n = strlen(model);
    if (n < 3 || strcmp(model + n - 3, ".h5") != 0 || n + 2 > sizeof spec)
        return vox_fail(ctx, VOX_INVALID_ARG, "model '%s': expected NAME.h5 next to NAME.net",
                        model);
    memcpy(spec, model, n - 3);
    memcpy(spec + n - 3, ".net", 5);
    struct vox_net *net = NULL;
    struct vox_nn_weights *w = NULL;
    int64_t fov[3], lo[3], as[4] = {3, raw->shape[0], raw->shape[1], raw->shape[2]};
    enum vox_status s = vox_net_load(ctx, spec, &net);
    if (s == VOX_OK)
        s = vox_nn_weights_load(ctx, net, model, &w);
    if (s == VOX_OK)
        s = net_geometry(ctx, net, raw->shape, fov, lo);
    if (s == VOX_OK)
        s = vox_tensor_alloc(ctx, aff_out, VOX_U8, 4, as);
    if (s == VOX_OK)
        s = predict_views(ctx, net, w, raw, views, fov, lo, aff_out);
    vox_nn_weights_destroy(w);
    vox_net_destroy(net);
    return s;
}
