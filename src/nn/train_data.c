/*
 * train_data.c: training patches from label volumes on disk: random positions, read box by
 * box (vox_volume_read of just the patch), the 16 flip/transpose augmentations, grey-value
 * scale and shift, missing, misaligned (slipped) and blurred sections, all drawn from one
 * seeded splitmix64 state.
 *
 * After ZNN's front_end/zsample.py (reference note znn.md 1.8): a volume is picked with
 * probability proportional to its number of patch positions (PR #75), the position uniformly.
 * A transform is "x-y transpose (bit 3), then flip z, y, x (bits 0-2)" of the final frame; the
 * boxes are read in the source frame (transposed shape when bit 3 is set) and mapped. Labels
 * are read with a one-voxel margin on every side (clipped to the volume; `valid` marks what
 * was read and is unmasked), so affinities v - e_c can be formed after any flip.
 */
#include "internal.h"
#include "vox/io.h"
#include "vox/train.h"

#include <math.h>
#include <string.h>

struct train_vol {
    struct vox_volume *raw, *labels, *mask;
    struct vox_volume *extra[VOX_TRAIN_EXTRA_MAX];
    int64_t shape[3];
    int64_t eoff[VOX_TRAIN_EXTRA_MAX][3]; /* raw voxel p is voxel p - eoff[k] of extra k */
    int64_t lo[3], hi[3]; /* the raw box every input covers: patches are drawn inside it */
};

struct vox_train_data {
    struct vox_ctx *ctx;
    struct train_vol *v;
    int n, n_extra;
};

int vox_train_data_inputs(const struct vox_train_data *d)
{
    return 1 + d->n_extra;
}

uint64_t vox_train_rand(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

double vox_train_uniform(uint64_t *state)
{
    return (double)(vox_train_rand(state) >> 11) * 0x1.0p-53;
}

void vox_train_data_close(struct vox_train_data *d)
{
    if (!d)
        return;
    for (int i = 0; d->v && i < d->n; i++) {
        vox_volume_close(d->v[i].raw);
        vox_volume_close(d->v[i].labels);
        vox_volume_close(d->v[i].mask);
        for (int k = 0; k < VOX_TRAIN_EXTRA_MAX; k++)
            vox_volume_close(d->v[i].extra[k]);
    }
    vox_free(d->ctx, d->v);
    vox_free(d->ctx, d);
}

static bool is_label_dtype(enum vox_dtype t)
{
    return t == VOX_U8 || t == VOX_U16 || t == VOX_U32 || t == VOX_U64 || t == VOX_I32;
}

/* Opens an extra input: u8 or f32, (Z, Y, X) or (1, Z, Y, X) (a 1-channel `vox infer`
 * output). It may be smaller than the raw by an even margin per axis, centred on it: the
 * output of a valid net is its input less the field of view minus one, centred (eoff). */
static enum vox_status open_extra(struct vox_ctx *ctx, const struct vox_train_source *src,
                                  struct train_vol *v, int k)
{
    enum vox_status s = vox_volume_open(ctx, src->extra[k], &v->extra[k]);
    if (s != VOX_OK)
        return s;
    const struct vox_volume_info *e = vox_volume_info(v->extra[k]);
    int c = e->rank == 4;
    bool fits = (e->rank == 3 || (c && e->shape[0] == 1)) &&
                (e->dtype == VOX_U8 || e->dtype == VOX_F32);
    for (int a = 0; a < 3 && fits; a++) {
        int64_t m = v->shape[a] - e->shape[c + a];
        fits = m >= 0 && m % 2 == 0;
        v->eoff[k][a] = m / 2;
        v->lo[a] = m / 2 > v->lo[a] ? m / 2 : v->lo[a];
        v->hi[a] = m / 2 + e->shape[c + a] < v->hi[a] ? m / 2 + e->shape[c + a] : v->hi[a];
    }
    if (!fits)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "extra input '%s' is %s of rank %d, spatial shape %lldx%lldx%lld; expected "
                        "uint8 or float32, "
                        "(Z,Y,X) or (1,Z,Y,X), of the raw '%s' shape %lldx%lldx%lld or smaller by "
                        "an even margin per axis (centred)",
                        src->extra[k], vox_dtype_str(e->dtype), e->rank,
                        (long long)e->shape[e->rank - 3], (long long)e->shape[e->rank - 2],
                        (long long)e->shape[e->rank - 1], src->raw, (long long)v->shape[0],
                        (long long)v->shape[1], (long long)v->shape[2]);
    return VOX_OK;
}

static enum vox_status open_one(struct vox_ctx *ctx, const struct vox_train_source *src,
                                struct train_vol *v)
{
    enum vox_status s = vox_volume_open(ctx, src->raw, &v->raw);
    if (s != VOX_OK)
        return s;
    const struct vox_volume_info *ri = vox_volume_info(v->raw);
    if (ri->rank != 3 || (ri->dtype != VOX_U8 && ri->dtype != VOX_F32))
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "raw '%s' is %s of rank %d; expected uint8 or "
                        "float32 (Z,Y,X)",
                        src->raw, vox_dtype_str(ri->dtype), ri->rank);
    memcpy(v->shape, ri->shape, sizeof v->shape);
    memcpy(v->hi, ri->shape, sizeof v->hi);
    const char *what[2] = {src->labels, src->mask};
    struct vox_volume **vol[2] = {&v->labels, &v->mask};
    for (int k = 0; k < 2; k++) {
        if (!what[k])
            continue;
        if ((s = vox_volume_open(ctx, what[k], vol[k])) != VOX_OK)
            return s;
        const struct vox_volume_info *li = vox_volume_info(*vol[k]);
        if (li->rank != 3 || !is_label_dtype(li->dtype))
            return vox_fail(ctx, VOX_INVALID_ARG,
                            "%s '%s' is %s of rank %d; expected an "
                            "integer (Z,Y,X) volume",
                            k ? "mask" : "labels", what[k], vox_dtype_str(li->dtype), li->rank);
        if (memcmp(li->shape, v->shape, sizeof v->shape) != 0)
            return vox_fail(ctx, VOX_INVALID_ARG,
                            "%s '%s' has shape %lldx%lldx%lld, the raw '%s' %lldx%lldx%lld",
                            k ? "mask" : "labels", what[k], (long long)li->shape[0],
                            (long long)li->shape[1], (long long)li->shape[2], src->raw,
                            (long long)v->shape[0], (long long)v->shape[1], (long long)v->shape[2]);
    }
    for (int k = 0; k < src->n_extra; k++)
        if ((s = open_extra(ctx, src, v, k)) != VOX_OK)
            return s;
    return VOX_OK;
}

enum vox_status vox_train_data_open(struct vox_ctx *ctx, const struct vox_train_source *src, int n,
                                    struct vox_train_data **d_out)
{
    *d_out = NULL;
    struct vox_train_data *d = vox_calloc(ctx, 1, sizeof *d);
    if (!d)
        return VOX_OUT_OF_MEMORY;
    d->ctx = ctx;
    d->n_extra = n > 0 ? src[0].n_extra : 0;
    enum vox_status s = VOX_OUT_OF_MEMORY;
    if (!(d->v = vox_calloc(ctx, (size_t)(n > 0 ? n : 1), sizeof *d->v)))
        goto fail;
    for (d->n = 0; d->n < n; d->n++) {
        const struct vox_train_source *sr = &src[d->n];
        if (!sr->labels)
            s = vox_fail(ctx, VOX_INVALID_ARG, "data '%s' has no labels", sr->raw);
        else if (sr->n_extra != d->n_extra || sr->n_extra < 0 || sr->n_extra > VOX_TRAIN_EXTRA_MAX)
            s = vox_fail(ctx, VOX_INVALID_ARG,
                         "data '%s' has %d extra inputs; the first volume has %d (at most %d)",
                         sr->raw, sr->n_extra, d->n_extra, VOX_TRAIN_EXTRA_MAX);
        else
            s = open_one(ctx, sr, &d->v[d->n]);
        if (s != VOX_OK) {
            d->n++;
            goto fail;
        }
    }
    *d_out = d;
    return VOX_OK;
fail:
    vox_train_data_close(d);
    return s;
}

/* Maps a source-frame array (element size es) into the final frame of transform xf. */
static void transform(const void *src, const int64_t ss[3], int xf, size_t es, void *dst)
{
    bool tr = xf & 8;
    int64_t fs[3] = {ss[0], tr ? ss[2] : ss[1], tr ? ss[1] : ss[2]};
    const char *sp = src;
    char *dp = dst;
    for (int64_t z = 0; z < fs[0]; z++)
        for (int64_t y = 0; y < fs[1]; y++)
            for (int64_t x = 0; x < fs[2]; x++) {
                int64_t a = xf & 1 ? fs[0] - 1 - z : z, b = xf & 2 ? fs[1] - 1 - y : y;
                int64_t c = xf & 4 ? fs[2] - 1 - x : x;
                int64_t e = (a * ss[1] + (tr ? c : b)) * ss[2] + (tr ? b : c);
                memcpy(dp + (size_t)((z * fs[1] + y) * fs[2] + x) * es, sp + (size_t)e * es, es);
            }
}

static uint64_t label_get(const struct vox_tensor *t, int64_t e)
{
    switch (t->dtype) {
    case VOX_U8:
        return ((const uint8_t *)t->data)[e];
    case VOX_U16:
        return ((const uint16_t *)t->data)[e];
    case VOX_U32:
        return ((const uint32_t *)t->data)[e];
    case VOX_I32:
        return (uint64_t)(int64_t)((const int32_t *)t->data)[e];
    default:
        return ((const uint64_t *)t->data)[e];
    }
}

/* Reads box [lo, lo + n) of vol, clipped to the volume, into lab (u64, n) and ANDs (label
 * read && (no mask || mask > 0)) into ok; voxels outside the volume get label 0, ok 0. */
static enum vox_status read_labels(struct vox_ctx *ctx, struct train_vol *v, const int64_t lo[3],
                                   const int64_t n[3], uint64_t *lab, uint8_t *ok)
{
    int64_t a[3], b[3], sh[3];
    for (int k = 0; k < 3; k++) {
        a[k] = lo[k] < 0 ? 0 : lo[k];
        b[k] = lo[k] + n[k] > v->shape[k] ? v->shape[k] : lo[k] + n[k];
        sh[k] = b[k] - a[k];
    }
    memset(lab, 0, (size_t)(n[0] * n[1] * n[2]) * sizeof *lab);
    memset(ok, 0, (size_t)(n[0] * n[1] * n[2]));
    struct vox_volume *vols[2] = {v->labels, v->mask};
    enum vox_status s = VOX_OK;
    for (int k = 0; k < 2 && s == VOX_OK; k++) {
        if (!vols[k])
            continue;
        struct vox_tensor t = {0};
        s = vox_tensor_alloc(ctx, &t, vox_volume_info(vols[k])->dtype, 3, sh);
        if (s == VOX_OK)
            s = vox_volume_read(ctx, vols[k], a, b, &t);
        for (int64_t z = 0; s == VOX_OK && z < sh[0]; z++)
            for (int64_t y = 0; y < sh[1]; y++)
                for (int64_t x = 0; x < sh[2]; x++) {
                    int64_t e =
                        ((z + a[0] - lo[0]) * n[1] + y + a[1] - lo[1]) * n[2] + x + a[2] - lo[2];
                    uint64_t val = label_get(&t, (z * sh[1] + y) * sh[2] + x);
                    if (k == 0)
                        lab[e] = val, ok[e] = 1;
                    else
                        ok[e] = ok[e] && val > 0;
                }
        vox_tensor_free(ctx, &t);
    }
    return s;
}

enum vox_status vox_train_data_class_counts(struct vox_ctx *ctx, struct vox_train_data *d,
                                            enum vox_target t, enum vox_loss l, double *pos,
                                            double *neg)
{
    const int64_t nc = vox_target_channels(t, l);
    memset(pos, 0, (size_t)nc * sizeof *pos);
    memset(neg, 0, (size_t)nc * sizeof *neg);
    enum vox_status s = VOX_OK;
    for (int i = 0; i < d->n && s == VOX_OK; i++) {
        struct train_vol *v = &d->v[i];
        /* slabs of 32 planes, fewer where that is over 64 MB of labels, each with the
         * one-voxel margin the targets need */
        const int64_t plane = (v->shape[1] + 2) * (v->shape[2] + 2);
        const int64_t fit = ((int64_t)64 << 20) / (plane * 8);
        const int64_t zs = fit < 1 ? 1 : fit > 32 ? 32 : fit;
        for (int64_t z0 = 0; z0 < v->shape[0] && s == VOX_OK; z0 += zs) {
            const int64_t nz = z0 + zs < v->shape[0] ? zs : v->shape[0] - z0;
            const int64_t lo[3] = {z0 - 1, -1, -1},
                          n[3] = {nz + 2, v->shape[1] + 2, v->shape[2] + 2};
            struct vox_tensor lab = {0}, ok = {0}, tgt = {0}, mask = {0};
            s = vox_tensor_alloc(ctx, &lab, VOX_U64, 3, n);
            if (s == VOX_OK)
                s = vox_tensor_alloc(ctx, &ok, VOX_U8, 3, n);
            if (s == VOX_OK)
                s = read_labels(ctx, v, lo, n, lab.data, ok.data);
            if (s == VOX_OK)
                s = vox_train_targets(ctx, t, l, &lab, &ok, &tgt, &mask);
            if (s == VOX_OK)
                vox_loss_class_counts(l, &tgt, &mask, pos, neg);
            vox_tensor_free(ctx, &lab);
            vox_tensor_free(ctx, &ok);
            vox_tensor_free(ctx, &tgt);
            vox_tensor_free(ctx, &mask);
        }
    }
    return s;
}

/* The positions along axis a of a box of extent n inside volume v's drawing box. */
static int64_t positions(const struct train_vol *v, int a, int64_t n)
{
    return v->hi[a] - v->lo[a] >= n ? v->hi[a] - v->lo[a] - n + 1 : 0;
}

/* Picks a volume (proportional to its positions of a box of source shape ss) and a
 * position; -1 when none fits. */
static int pick(struct vox_train_data *d, uint64_t *rng, const int64_t ss[3], int64_t p[3])
{
    double total = 0;
    for (int i = 0; i < d->n; i++)
        total += (double)positions(&d->v[i], 0, ss[0]) * (double)positions(&d->v[i], 1, ss[1]) *
                 (double)positions(&d->v[i], 2, ss[2]);
    if (total == 0)
        return -1;
    double u = vox_train_uniform(rng) * total;
    int pick = d->n - 1;
    for (int i = 0; i < d->n; i++) {
        double c = (double)positions(&d->v[i], 0, ss[0]) *
                   (double)positions(&d->v[i], 1, ss[1]) * (double)positions(&d->v[i], 2, ss[2]);
        if (u < c) {
            pick = i;
            break;
        }
        u -= c;
    }
    for (int k = 0; k < 3; k++)
        p[k] = d->v[pick].lo[k] +
               (int64_t)(vox_train_rand(rng) % (uint64_t)positions(&d->v[pick], k, ss[k]));
    return pick;
}

/* Reads the box [p, p + ss) of an input volume ((Z, Y, X) or (1, Z, Y, X)) as f32 in the
 * source frame (u8 scaled by 1/255). */
static enum vox_status read_raw(struct vox_ctx *ctx, struct vox_volume *vol, const int64_t p[3],
                                const int64_t ss[3], float *dst)
{
    const struct vox_volume_info *info = vox_volume_info(vol);
    int c = info->rank == 4;
    int64_t lo[4] = {0}, hi[4] = {1}, shape[4] = {1};
    for (int a = 0; a < 3; a++)
        lo[c + a] = p[a], hi[c + a] = p[a] + ss[a], shape[c + a] = ss[a];
    struct vox_tensor t = {0};
    enum vox_status s = vox_tensor_alloc(ctx, &t, info->dtype, info->rank, shape);
    if (s == VOX_OK)
        s = vox_volume_read(ctx, vol, lo, hi, &t);
    for (int64_t e = 0; s == VOX_OK && e < vox_tensor_numel(&t); e++)
        dst[e] =
            t.dtype == VOX_U8 ? ((const uint8_t *)t.data)[e] / 255.0f : ((const float *)t.data)[e];
    vox_tensor_free(ctx, &t);
    return s;
}

/* Section z (ny x nx at p) shifted by (dy, dx): each voxel takes its source's, clamped to the
 * section (the edge repeated into what the shift leaves). tmp: ny * nx floats. */
static void section_shift(float *p, int64_t ny, int64_t nx, int64_t dy, int64_t dx, float *tmp)
{
    memcpy(tmp, p, (size_t)(ny * nx) * sizeof *p);
    for (int64_t y = 0; y < ny; y++) {
        const int64_t sy = y - dy < 0 ? 0 : y - dy >= ny ? ny - 1 : y - dy;
        for (int64_t x = 0; x < nx; x++) {
            const int64_t sx = x - dx < 0 ? 0 : x - dx >= nx ? nx - 1 : x - dx;
            p[y * nx + x] = tmp[sy * nx + sx];
        }
    }
}

/* One axis of a Gaussian blur of a section: n lines of len voxels `step` apart, lines `line`
 * apart, with taps w[-r .. r] (edges repeated). tmp: len floats. */
static void blur_axis(float *p, int64_t n, int64_t len, int64_t step, int64_t line, const double *w,
                      int r, float *tmp)
{
    for (int64_t i = 0; i < n; i++) {
        float *q = p + i * line;
        for (int64_t j = 0; j < len; j++)
            tmp[j] = q[j * step];
        for (int64_t j = 0; j < len; j++) {
            double acc = 0;
            for (int k = -r; k <= r; k++) {
                const int64_t t = j + k < 0 ? 0 : j + k >= len ? len - 1 : j + k;
                acc += w[k + r] * tmp[t];
            }
            q[j * step] = (float)acc;
        }
    }
}

/* Section (ny x nx at p) blurred by a Gaussian of sigma (radius ceil(3 sigma), taps summing
 * to 1), y then x. tmp: max(ny, nx) floats. */
static void section_blur(float *p, int64_t ny, int64_t nx, double sigma, float *tmp)
{
    enum { R_MAX = 32 };
    int r = (int)ceil(3 * sigma);
    r = r < 1 ? 1 : r > R_MAX ? R_MAX : r;
    double w[2 * R_MAX + 1], sum = 0;
    for (int k = -r; k <= r; k++)
        sum += w[k + r] = exp(-0.5 * k * k / (sigma * sigma));
    for (int k = 0; k <= 2 * r; k++)
        w[k] /= sum;
    blur_axis(p, nx, ny, nx, 1, w, r, tmp);
    blur_axis(p, ny, nx, 1, nx, w, r, tmp);
}

static void augment_grey(uint64_t *rng, const struct vox_augment *aug, struct vox_tensor *in,
                         float *tmp)
{
    double scale = 1 + aug->grey_scale * (2 * vox_train_uniform(rng) - 1);
    double shift = aug->grey_shift * (2 * vox_train_uniform(rng) - 1);
    float *p = in->data;
    int64_t plane = in->shape[3] * in->shape[4];
    for (int64_t e = 0; e < vox_tensor_numel(in); e++)
        p[e] = (float)(p[e] * scale + shift);
    for (int64_t z = 0; aug->missing_rate > 0 && in->shape[2] > 1 && z < in->shape[2]; z++)
        if (vox_train_uniform(rng) < aug->missing_rate)
            memset(p + z * plane, 0, (size_t)plane * sizeof *p);
    const int64_t ny = in->shape[3], nx = in->shape[4], m = aug->misalign_max;
    for (int64_t z = 0; aug->misalign_rate > 0 && m > 0 && in->shape[2] > 1 && z < in->shape[2];
         z++)
        if (vox_train_uniform(rng) < aug->misalign_rate) {
            const int64_t dy = (int64_t)(vox_train_rand(rng) % (uint64_t)(2 * m + 1)) - m;
            const int64_t dx = (int64_t)(vox_train_rand(rng) % (uint64_t)(2 * m + 1)) - m;
            section_shift(p + z * plane, ny, nx, dy, dx, tmp);
        }
    for (int64_t z = 0; aug->blur_rate > 0 && aug->blur_sigma > 0 && z < in->shape[2]; z++)
        if (vox_train_uniform(rng) < aug->blur_rate) {
            const double sigma = aug->blur_sigma * (1 - vox_train_uniform(rng)); /* (0, max] */
            section_blur(p + z * plane, ny, nx, sigma, tmp);
        }
}

/* The labels box in the source frame for transform xf (see the file comment). */
static void label_box(int xf, const int64_t p[3], const int64_t in[3], const int64_t out[3],
                      const int64_t off[3], int64_t lo[3], int64_t n[3])
{
    for (int a = 0; a < 3; a++) {
        int sa = (xf & 8) && a > 0 ? 3 - a : a;
        int64_t o = xf & (1 << a) ? in[a] - off[a] - out[a] : off[a];
        lo[sa] = p[sa] + o - 1;
        n[sa] = out[a] + 2;
    }
}

/* Reads every input box of volume v at p (source shape ss) into inputs[0 .. 1 + n_extra),
 * (1, 1, Z, Y, X) f32 in the final frame of transform xf; buf holds one source box. */
static enum vox_status read_inputs(struct vox_ctx *ctx, struct vox_train_data *d,
                                   struct train_vol *v, const int64_t p[3], const int64_t ss[3],
                                   int xf, float *buf, struct vox_tensor *inputs)
{
    int64_t ishape[5] = {1, 1, ss[0], xf & 8 ? ss[2] : ss[1], xf & 8 ? ss[1] : ss[2]};
    enum vox_status s = VOX_OK;
    for (int k = 0; k <= d->n_extra && s == VOX_OK; k++) {
        const int64_t *o = k ? v->eoff[k - 1] : (const int64_t[3]){0, 0, 0};
        int64_t q[3] = {p[0] - o[0], p[1] - o[1], p[2] - o[2]};
        s = read_raw(ctx, k ? v->extra[k - 1] : v->raw, q, ss, buf);
        if (s == VOX_OK)
            s = vox_tensor_alloc(ctx, &inputs[k], VOX_F32, 5, ishape);
        if (s == VOX_OK)
            transform(buf, ss, xf, sizeof *buf, inputs[k].data);
    }
    return s;
}

enum vox_status vox_train_data_sample(struct vox_ctx *ctx, struct vox_train_data *d, uint64_t *rng,
                                      const int64_t in[3], const int64_t out[3],
                                      const int64_t offset[3], const struct vox_augment *aug,
                                      struct vox_tensor *inputs_out, struct vox_tensor *labels_out,
                                      struct vox_tensor *valid_out)
{
    int xf = aug && aug->flips ? (int)(vox_train_rand(rng) & 15) : 0;
    bool tr = xf & 8;
    int64_t ss[3] = {in[0], tr ? in[2] : in[1], tr ? in[1] : in[2]}, p[3];
    for (int k = 0; k <= d->n_extra; k++)
        inputs_out[k] = (struct vox_tensor){0};
    *labels_out = *valid_out = (struct vox_tensor){0};
    int vi = pick(d, rng, ss, p);
    if (vi < 0)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "the patch %lldx%lldx%lld is larger than every "
                        "training volume (the first is %lldx%lldx%lld; the part its extra inputs "
                        "also cover is %lldx%lldx%lld)",
                        (long long)ss[0], (long long)ss[1], (long long)ss[2],
                        (long long)d->v[0].shape[0], (long long)d->v[0].shape[1],
                        (long long)d->v[0].shape[2], (long long)(d->v[0].hi[0] - d->v[0].lo[0]),
                        (long long)(d->v[0].hi[1] - d->v[0].lo[1]),
                        (long long)(d->v[0].hi[2] - d->v[0].lo[2]));
    int64_t lo[3], n[3];
    int64_t lshape[3] = {out[0] + 2, out[1] + 2, out[2] + 2};
    label_box(xf, p, in, out, offset, lo, n);
    float *raw = vox_alloc(ctx, (size_t)(in[0] * in[1] * in[2]) * sizeof *raw);
    uint64_t *lab = vox_alloc(ctx, (size_t)(n[0] * n[1] * n[2]) * sizeof *lab);
    uint8_t *ok = vox_alloc(ctx, (size_t)(n[0] * n[1] * n[2]));
    enum vox_status s = raw && lab && ok ? VOX_OK : VOX_OUT_OF_MEMORY;
    if (s == VOX_OK)
        s = read_inputs(ctx, d, &d->v[vi], p, ss, xf, raw, inputs_out);
    if (s == VOX_OK)
        s = read_labels(ctx, &d->v[vi], lo, n, lab, ok);
    if (s == VOX_OK && (s = vox_tensor_alloc(ctx, labels_out, VOX_U64, 3, lshape)) == VOX_OK)
        s = vox_tensor_alloc(ctx, valid_out, VOX_U8, 3, lshape);
    if (s == VOX_OK) {
        transform(lab, n, xf, sizeof *lab, labels_out->data);
        transform(ok, n, xf, 1, valid_out->data);
        if (aug) { /* raw is free now: it holds a section for the shifts and blurs */
            augment_grey(rng, aug, &inputs_out[0], raw);
        }
    } else {
        for (int k = 0; k <= d->n_extra; k++)
            vox_tensor_free(ctx, &inputs_out[k]);
        vox_tensor_free(ctx, labels_out);
        vox_tensor_free(ctx, valid_out);
    }
    vox_free(ctx, raw);
    vox_free(ctx, lab);
    vox_free(ctx, ok);
    return s;
}
