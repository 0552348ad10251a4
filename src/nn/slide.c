/*
 * slide.c: running a net over a volume larger than a patch: choose the patch from a RAM
 * budget, plan the fast forward pass once, slide the patch over the volume reading the input
 * and writing the output box by box through io, so the volume never has to fit in RAM.
 *
 * Valid nets (ZNNi's sliding window, reference note znn.md section 2): a patch of P input
 * voxels gives Op outputs at stride s (the product of the pooling windows); the volume gives
 * Ov = Op + floor((V - P) / s). Output tiles abut, starting at 0, Op, 2 Op, ..., the last one
 * moved back to end at Ov; output tile j0 reads the input box [j0 * s, j0 * s + P). Every output
 * voxel is computed exactly as one pass over the whole volume would.
 *
 * Same-padded nets (RSUNet): outputs are cropped, not blended. Each patch is read with a margin
 * m = (fov - 1) / 2 + 1 around its core, its start aligned to the pooling grid q (the product of
 * the pooling windows); only the core is written. Cores abut and have length
 * L = floor((P - 2m - q + 1) / q) * q, so each core voxel's field of view lies inside its patch
 * or meets only the volume's own border, where the patch's zero padding is the whole-volume
 * pass's: the result equals one pass over the volume whenever that pass is defined (V a
 * multiple of q along each axis). Otherwise the last patch is not on the grid and the result
 * is a sound prediction, not that pass's.
 */
#include "fast.h"
#include "vox/io.h"

#include <string.h>

/* RUN_BYTES: what a run holds besides the plan, the staging and the caller's io, measured
 * (docs/infer.md, tests/cli_infer_mem.sh): library code first touched by the first patch
 * (libfftw3f, libhdf5's write path, the JIT kernels), the workers' stacks, libhdf5's free
 * lists and metadata cache, heap fragmentation from many small io calls: 2-6 MiB. */
enum { MAX_IO = VOX_NN_MAX_IN, RUN_BYTES = 8 << 20 };

struct vox_nn_volume {
    struct vox_ctx *ctx;
    const struct vox_net *net;
    struct vox_nn_fast *fast;
    bool same;
    bool single; /* one patch = the volume: outputs may differ in shape and stride */
    int64_t vol[3], patch[3], stride[3], q[3], margin[3], core[3];
    int64_t out_vol[3]; /* the output volume's extent */
    enum vox_dtype out_dtype, in_dtype[MAX_IO];
    bool quiet;
    size_t io_bytes, bytes; /* the caller's io memory; everything the budget covers */
    struct vox_tensor raw[MAX_IO], in[MAX_IO]; /* per input: u8 as read, and as f32 */
    struct vox_tensor u8;                      /* u8 staging of one output tile */
};

static bool is_same_net(const struct vox_net *net)
{
    for (int i = 0; i < net->n_layers; i++) {
        const struct vox_nn_layer *l = &net->layers[i];
        if ((l->kind == VOX_NN_CONV && l->same) || l->kind == VOX_NN_DECONV ||
            l->kind == VOX_NN_UPSAMPLE)
            return true;
    }
    return false;
}

/* The largest extent <= p[a] that fits along axis a (the shape pass treats the axes apart, so
 * the others need not fit yet), or 0. */
static int64_t snap(struct vox_nn_volume *v, struct vox_nn_dims *dims, int64_t p[3], int a)
{
    if (v->same)
        p[a] = p[a] >= v->q[a] ? p[a] / v->q[a] * v->q[a] : 0;
    while (p[a] > 0 && (vox_nn_shapes_bad_axes(v->ctx, v->net, p, dims) & (1u << a)))
        p[a]--;
    return p[a];
}

/* The smallest patch extent along a that still leaves a core (same nets). */
static int64_t min_extent(const struct vox_nn_volume *v, int a)
{
    if (!v->same)
        return 1;
    int64_t need = 2 * v->margin[a] + 2 * v->q[a] - 1;
    return need < v->vol[a] ? need : v->vol[a];
}

/* The longest axis not stuck (x first on ties), or -1. */
static int longest_free(const int64_t p[3], const bool stuck[3])
{
    int a = -1;
    for (int b = 0; b < 3; b++)
        if (!stuck[b] && (a < 0 || p[b] >= p[a]))
            a = b;
    return a;
}

/* The staging a patch p needs besides the plan: per input the f32 patch (and the u8 one it is
 * read into), per output the u8 tile, the contiguous copy of one output core that io writes
 * from (at most one output's patch), and RUN_BYTES. */
static enum vox_status staging_bytes(struct vox_nn_volume *v, const int64_t p[3], size_t *out)
{
    const struct vox_net *net = v->net;
    struct vox_nn_dims *d = vox_calloc(v->ctx, (size_t)net->n_layers, sizeof *d);
    if (!d)
        return VOX_OUT_OF_MEMORY;
    enum vox_status s = vox_net_shapes(v->ctx, net, p, d);
    size_t bytes = 0, core = 0, vox = (size_t)(p[0] * p[1] * p[2]);
    for (int k = 0; k < net->n_inputs && s == VOX_OK; k++)
        bytes += vox * (size_t)net->layers[vox_net_input(net, k)].channels *
                 (sizeof(float) + (v->in_dtype[k] == VOX_U8));
    for (int k = 0; k < net->n_outputs && s == VOX_OK; k++) {
        const int64_t *sh = d[vox_net_output(net, k)].shape;
        size_t n = (size_t)(d[vox_net_output(net, k)].batch * sh[0] * sh[1] * sh[2] * sh[3]);
        size_t c = n * vox_dtype_size(v->out_dtype);
        bytes += v->out_dtype == VOX_U8 ? n : 0;
        core = c > core ? c : core;
    }
    vox_free(v->ctx, d);
    *out = bytes + core + RUN_BYTES;
    return s;
}

/* Everything --mem covers for the patch p: the plan, the staging, the caller's io. */
static enum vox_status patch_bytes(struct vox_nn_volume *v, const int64_t p[3],
                                   enum vox_nn_conv_algo algo, size_t *out)
{
    size_t plan, staging;
    enum vox_status s = vox_nn_fast_estimate_algo(v->ctx, v->net, p, algo, &plan);
    if (s == VOX_OK && (s = staging_bytes(v, p, &staging)) == VOX_OK)
        *out = plan + staging + v->io_bytes;
    return s;
}

static enum vox_status choose_patch(struct vox_nn_volume *v, struct vox_nn_dims *dims,
                                    const int64_t want[3], size_t mem, enum vox_nn_conv_algo algo)
{
    struct vox_ctx *ctx = v->ctx;
    int64_t p[3];
    for (int a = 0; a < 3; a++)
        p[a] = want[a] > 0 && want[a] < v->vol[a] ? want[a] : v->vol[a];
    for (int a = 0; a < 3; a++)
        if (snap(v, dims, p, a) == 0)
            return vox_net_shapes(ctx, v->net, v->vol, dims) != VOX_OK
                       ? VOX_INVALID_ARG
                       : vox_fail(ctx, VOX_INVALID_ARG,
                            "the volume %lldx%lldx%lld is too small for the net '%s' (axis %d)",
                            (long long)v->vol[0], (long long)v->vol[1], (long long)v->vol[2],
                            v->net->source, a);
    bool stuck[3] = {false, false, false}; /* axes that cannot shrink any more */
    for (size_t bytes;;) {
        enum vox_status s = patch_bytes(v, p, algo, &bytes);
        if (s != VOX_OK)
            return s;
        if (bytes <= mem || (want[0] > 0 && want[1] > 0 && want[2] > 0))
            break;
        int a; /* shrink the longest axis that still can, by 1/8 */
        while ((a = longest_free(p, stuck)) >= 0) {
            int64_t old = p[a], lo = min_extent(v, a);
            p[a] = old * 7 / 8 > lo ? old * 7 / 8 : lo;
            if (p[a] != old && snap(v, dims, p, a) >= lo && p[a] != old)
                break;
            p[a] = old;
            stuck[a] = true;
        }
        if (a < 0)
            return vox_fail(ctx, VOX_INVALID_ARG,
                            "the net needs %.1f MiB for its smallest patch %lldx%lldx%lld (plan, "
                            "staging and %.1f MiB of io caches), over the budget of %.1f MiB",
                            (double)bytes / 1048576.0, (long long)p[0], (long long)p[1],
                            (long long)p[2], (double)v->io_bytes / 1048576.0,
                            (double)mem / 1048576.0);
    }
    memcpy(v->patch, p, sizeof p);
    return patch_bytes(v, p, algo, &v->bytes);
}

/* choose_patch with fo->algo; where the automatic choice's smallest patch does not fit (its
 * estimate holds FFT's spectra wherever FFT might be picked), with the direct nests alone,
 * which need the least memory (fo->algo becomes that). */
static enum vox_status choose_patch_lean(struct vox_nn_volume *v, struct vox_nn_dims *dims,
                                         const int64_t want[3], size_t mem,
                                         struct vox_nn_fast_options *fo)
{
    enum vox_status s = choose_patch(v, dims, want, mem, fo->algo);
    if (s != VOX_INVALID_ARG || fo->algo != VOX_NN_CONV_AUTO)
        return s;
    if ((s = choose_patch(v, dims, want, mem, VOX_NN_CONV_DIRECT)) == VOX_OK)
        fo->algo = VOX_NN_CONV_DIRECT;
    return s;
}

/* Stride, pooling grid and margin from the shapes of the chosen patch. */
static enum vox_status geometry(struct vox_nn_volume *v, const struct vox_nn_dims *dims)
{
    const struct vox_net *net = v->net;
    const struct vox_nn_dims *o = &dims[vox_net_output(net, 0)];
    int64_t fov[3], off[3];
    vox_net_fov(net, dims, fov, off);
    v->single = memcmp(v->patch, v->vol, sizeof v->vol) == 0;
    for (int a = 0; a < 3; a++)
        v->margin[a] = v->same ? (fov[a] - 1) / 2 + 1 : 0;
    for (int a = 0; v->single && a < 3; a++)
        v->core[a] = v->out_vol[a] = o->shape[1 + a];
    for (int k = 1; k < net->n_outputs && !v->single; k++)
        if (memcmp(dims[vox_net_output(net, k)].shape + 1, o->shape + 1, 3 * sizeof(int64_t)))
            return vox_fail(v->ctx, VOX_INVALID_ARG,
                            "the outputs of '%s' differ in shape: sliding needs them equal",
                            net->source);
    for (int a = 0; a < 3 && !v->single; a++) {
        if (o->stride_den[a] != 1 || (v->same && o->stride_num[a] != 1))
            return vox_fail(v->ctx, VOX_INVALID_ARG,
                            "the output of '%s' has stride %lld/%lld along axis %d: expected "
                            "an integer (1 for same-padded nets)",
                            net->source, (long long)o->stride_num[a], (long long)o->stride_den[a],
                            a);
        v->stride[a] = o->stride_num[a];
        int64_t op = o->shape[1 + a];
        if (!v->same) {
            v->core[a] = op;
            v->out_vol[a] = op + (v->vol[a] - v->patch[a]) / v->stride[a];
        } else {
            int64_t l = (v->patch[a] - 2 * v->margin[a] - v->q[a] + 1) / v->q[a] * v->q[a];
            v->core[a] = v->patch[a] >= v->vol[a] ? v->vol[a] : l;
            v->out_vol[a] = v->vol[a];
            if (v->core[a] <= 0)
                return vox_fail(v->ctx, VOX_INVALID_ARG,
                                "patch %lld along axis %d leaves no core inside the margin %lld "
                                "(pooling grid %lld): use a larger --patch or --mem",
                                (long long)v->patch[a], a, (long long)v->margin[a],
                                (long long)v->q[a]);
        }
    }
    return VOX_OK;
}

void vox_nn_volume_destroy(struct vox_nn_volume *v)
{
    if (!v)
        return;
    for (int k = 0; k < MAX_IO; k++) {
        vox_tensor_free(v->ctx, &v->raw[k]);
        vox_tensor_free(v->ctx, &v->in[k]);
    }
    vox_tensor_free(v->ctx, &v->u8);
    vox_nn_fast_destroy(v->fast);
    vox_free(v->ctx, v);
}

static enum vox_status alloc_io(struct vox_nn_volume *v, const enum vox_dtype *in_dtypes)
{
    const struct vox_net *net = v->net;
    enum vox_status s = VOX_OK;
    for (int k = 0; k < net->n_inputs && s == VOX_OK; k++) {
        int64_t c = net->layers[vox_net_input(net, k)].channels;
        int64_t shape[5] = {1, c, v->patch[0], v->patch[1], v->patch[2]};
        s = vox_tensor_alloc(v->ctx, &v->in[k], VOX_F32, 5, shape);
        if (s == VOX_OK && in_dtypes[k] == VOX_U8)
            s = vox_tensor_alloc(v->ctx, &v->raw[k], VOX_U8, 4, shape + 1);
    }
    if (s == VOX_OK && v->out_dtype == VOX_U8 && v->single && net->n_outputs > 1)
        return vox_fail(v->ctx, VOX_INVALID_ARG, "uint8 output needs a net with one output");
    if (s == VOX_OK && v->out_dtype == VOX_U8)
        s = vox_tensor_alloc(v->ctx, &v->u8, VOX_U8, 4,
                             vox_nn_fast_output(v->fast, 0)->shape + 1);
    return s;
}

enum vox_status vox_nn_volume_plan(struct vox_ctx *ctx, const struct vox_net *net,
                                   const struct vox_nn_weights *w, const int64_t vol[3],
                                   const enum vox_dtype *in_dtypes,
                                   const struct vox_nn_volume_options *opt,
                                   struct vox_nn_volume **v_out)
{
    *v_out = NULL;
    if (opt->out_dtype != VOX_F32 && opt->out_dtype != VOX_U8)
        return vox_fail(ctx, VOX_INVALID_ARG, "output dtype %s: expected float32 or uint8",
                        vox_dtype_str(opt->out_dtype));
    struct vox_nn_volume *v = vox_calloc(ctx, 1, sizeof *v);
    struct vox_nn_dims *dims = vox_calloc(ctx, (size_t)net->n_layers, sizeof *dims);
    enum vox_status s = VOX_OUT_OF_MEMORY;
    if (!v || !dims)
        goto fail;
    *v = (struct vox_nn_volume){.ctx = ctx, .net = net, .same = is_same_net(net),
                                .out_dtype = opt->out_dtype, .quiet = opt->quiet,
                                .io_bytes = opt->io_bytes};
    for (int k = 0; k < net->n_inputs && k < MAX_IO; k++)
        v->in_dtype[k] = in_dtypes[k];
    memcpy(v->vol, vol, sizeof v->vol);
    for (int a = 0; a < 3; a++) {
        v->q[a] = 1;
        for (int i = 0; i < net->n_layers; i++)
            if (net->layers[i].kind == VOX_NN_POOL)
                v->q[a] *= net->layers[i].kernel[a];
    }
    size_t mem = opt->mem_bytes ? opt->mem_bytes : (size_t)2 << 30;
    /* margins need the fov, which needs a patch the net takes: plan once with the volume */
    struct vox_nn_fast_options fo = {.algo = opt->algo, .tune = opt->tune};
    if ((s = choose_patch(v, dims, (const int64_t[3]){0, 0, 0}, SIZE_MAX, opt->algo)) != VOX_OK ||
        (s = vox_net_shapes(ctx, net, v->patch, dims)) != VOX_OK ||
        (s = geometry(v, dims)) != VOX_OK ||
        (s = choose_patch_lean(v, dims, opt->patch, mem, &fo)) ||
        (s = vox_net_shapes(ctx, net, v->patch, dims)) != VOX_OK ||
        (s = geometry(v, dims)) != VOX_OK ||
        (s = vox_nn_fast_create_opts(ctx, net, w, v->patch, &fo, &v->fast)) != VOX_OK ||
        (s = alloc_io(v, in_dtypes)) != VOX_OK)
        goto fail;
    vox_free(ctx, dims);
    *v_out = v;
    return VOX_OK;
fail:
    vox_free(ctx, dims);
    vox_nn_volume_destroy(v);
    return s;
}

void vox_nn_volume_geometry(const struct vox_nn_volume *v, int64_t patch_out[3],
                            int64_t out_vol_out[3], int64_t *tiles_out)
{
    int64_t tiles = 1;
    for (int a = 0; a < 3; a++) {
        patch_out[a] = v->patch[a];
        out_vol_out[a] = v->out_vol[a];
        tiles *= (v->out_vol[a] + v->core[a] - 1) / v->core[a];
    }
    *tiles_out = tiles;
}

void vox_nn_volume_out_shape(const struct vox_nn_volume *v, int k, int64_t shape_out[4])
{
    const struct vox_tensor *t = vox_nn_fast_output(v->fast, k);
    shape_out[0] = t->shape[1];
    for (int a = 0; a < 3; a++)
        shape_out[1 + a] = v->single ? t->shape[2 + a] : v->out_vol[a];
}

const struct vox_nn_fast *vox_nn_volume_fast(const struct vox_nn_volume *v)
{
    return v->fast;
}

size_t vox_nn_volume_bytes(const struct vox_nn_volume *v)
{
    return v->bytes;
}

/* Reads the input box at ps for every input, as f32. */
static enum vox_status read_tile(struct vox_nn_volume *v, struct vox_volume *const *in,
                                 const int64_t ps[3])
{
    for (int k = 0; k < v->net->n_inputs; k++) {
        const struct vox_volume_info *info = vox_volume_info(in[k]);
        int64_t lo[4] = {0, ps[0], ps[1], ps[2]}, hi[4];
        hi[0] = v->in[k].shape[1];
        for (int a = 0; a < 3; a++)
            hi[1 + a] = ps[a] + v->patch[a];
        bool u8 = v->raw[k].data != NULL; /* f32 is read straight into the input */
        struct vox_tensor dst = u8 ? v->raw[k] : v->in[k];
        if (!u8) { /* (1, C, Z, Y, X) -> (C, Z, Y, X) */
            dst.rank = 4;
            memmove(dst.shape, dst.shape + 1, 4 * sizeof(int64_t));
            memmove(dst.strides, dst.strides + 1, 4 * sizeof(int64_t));
            dst.base = NULL;
        }
        if (info->rank == 3) { /* (Z, Y, X): drop the channel axis of the staging tensor */
            dst.rank = 3;
            memmove(dst.shape, dst.shape + 1, 3 * sizeof(int64_t));
            memmove(dst.strides, dst.strides + 1, 3 * sizeof(int64_t));
            dst.base = NULL;
        }
        enum vox_status s = vox_volume_read(v->ctx, in[k], info->rank == 3 ? lo + 1 : lo,
                                            info->rank == 3 ? hi + 1 : hi, &dst);
        if (s != VOX_OK)
            return s;
        float *d = v->in[k].data;
        int64_t n = vox_tensor_numel(&v->in[k]);
        for (int64_t e = 0; u8 && e < n; e++)
            d[e] = ((const uint8_t *)v->raw[k].data)[e] / 255.0f;
    }
    return VOX_OK;
}

/* Writes the core [cs, ce) of the patch output (whose voxel 0 is output voxel os). */
static enum vox_status write_tile(struct vox_nn_volume *v, struct vox_volume *const *out,
                                  const int64_t os[3], const int64_t cs[3], const int64_t ce[3])
{
    for (int k = 0; k < v->net->n_outputs; k++) {
        const struct vox_tensor *t = vox_nn_fast_output(v->fast, k);
        struct vox_tensor src = *t, box;
        enum vox_status s;
        src.rank = 4;
        memmove(src.shape, t->shape + 1, 4 * sizeof(int64_t));
        memmove(src.strides, t->strides + 1, 4 * sizeof(int64_t));
        src.base = NULL;
        if (v->out_dtype == VOX_U8) {
            const float *f = t->data;
            uint8_t *u = v->u8.data;
            for (int64_t e = 0; e < vox_tensor_numel(&v->u8); e++) {
                float x = f[e] < 0 ? 0 : f[e] > 1 ? 1 : f[e];
                u[e] = (uint8_t)(x * 255.0f + 0.5f);
            }
            src = v->u8;
            src.base = NULL;
        }
        if (v->single) { /* the whole output at the origin */
            if ((s = vox_volume_write(v->ctx, out[k], NULL, &src)) != VOX_OK)
                return s;
            continue;
        }
        int64_t lo[4] = {0, cs[0] - os[0], cs[1] - os[1], cs[2] - os[2]};
        int64_t hi[4] = {src.shape[0], ce[0] - os[0], ce[1] - os[1], ce[2] - os[2]};
        int64_t at[4] = {0, cs[0], cs[1], cs[2]};
        s = vox_tensor_view_box(v->ctx, &src, lo, hi, &box);
        if (s == VOX_OK)
            s = vox_volume_write(v->ctx, out[k], at, &box);
        if (s != VOX_OK)
            return s;
    }
    return VOX_OK;
}

/* Tile t's core [cs, ce), its patch start ps and its output origin os, along axis a. */
static void tile_axis(const struct vox_nn_volume *v, int a, int64_t t, int64_t *cs, int64_t *ce,
                      int64_t *ps, int64_t *os)
{
    int64_t L = v->core[a];
    *cs = t * L;
    *ce = *cs + L < v->out_vol[a] ? *cs + L : v->out_vol[a];
    if (!v->same) {
        if (*ce - *cs < L)
            *cs = *ce - L;
        *ps = *cs * v->stride[a];
        *os = *cs;
        return;
    }
    int64_t p = *cs - v->margin[a];
    p = p > 0 ? p / v->q[a] * v->q[a] : 0;
    *ps = p < v->vol[a] - v->patch[a] ? p : v->vol[a] - v->patch[a];
    *os = *ps;
}

enum vox_status vox_nn_volume_run(struct vox_ctx *ctx, struct vox_nn_volume *v,
                                  struct vox_volume *const *in, struct vox_volume *const *out)
{
    int64_t n[3], total = v->out_vol[0] * v->out_vol[1] * v->out_vol[2];
    for (int a = 0; a < 3; a++)
        n[a] = (v->out_vol[a] + v->core[a] - 1) / v->core[a];
    struct vox_progress *bar = vox_progress_start(ctx, "infer", total, "voxels", v->quiet);
    enum vox_status s = VOX_OK;
    for (int64_t t = 0; t < n[0] * n[1] * n[2] && s == VOX_OK; t++) {
        int64_t idx[3] = {t / (n[1] * n[2]), t / n[2] % n[1], t % n[2]};
        int64_t cs[3], ce[3], ps[3], os[3];
        for (int a = 0; a < 3; a++)
            tile_axis(v, a, idx[a], &cs[a], &ce[a], &ps[a], &os[a]);
        if ((s = read_tile(v, in, ps)) == VOX_OK &&
            (s = vox_nn_fast_forward(ctx, v->fast, v->in)) == VOX_OK)
            s = write_tile(v, out, os, cs, ce);
        int64_t done = 1;
        for (int a = 0; a < 3; a++)
            done *= ce[a] - (idx[a] * v->core[a]);
        vox_progress_add(bar, done);
        if (t == 0)
            vox_log(ctx, VOX_LOG_DEBUG, "infer: RSS after the first patch %lld KiB",
                    (long long)(vox_rss_bytes() >> 10));
    }
    vox_progress_finish(bar);
    return s;
}
