/*
 * loss.c: training targets from label volumes, and the losses with masks and per-patch class
 * rebalancing (square, binary cross-entropy on logits, softmax cross-entropy).
 *
 * After ZNN's cost_fn.py and train.py (reference note znn.md 1.8): affinities are the
 * nearest-neighbour graph of the labels in vox's convention (channel c links v and v - e_c);
 * the boundary map marks label 0 and voxels with a differently labelled 6-neighbour; masks
 * gate the loss, the gradient and the rebalance counts; rebalancing gives each class half of
 * the channel's weight (the 0.5 N / n variant). Every sum is in double in a fixed order.
 */
#include "internal.h"
#include "vox/train.h"

#include <string.h>

static const char *const target_names[] = {"affinity", "boundary"};
static const char *const loss_names[] = {"square", "bce", "softmax", "malis"};

const char *vox_target_str(enum vox_target t)
{
    return t < VOX_TARGET_COUNT ? target_names[t] : "?";
}

const char *vox_loss_str(enum vox_loss l)
{
    return l < VOX_LOSS_COUNT ? loss_names[l] : "?";
}

bool vox_target_parse(const char *s, enum vox_target *out)
{
    for (int i = 0; i < VOX_TARGET_COUNT; i++)
        if (strcmp(s, target_names[i]) == 0)
            return *out = (enum vox_target)i, true;
    return false;
}

bool vox_loss_parse(const char *s, enum vox_loss *out)
{
    for (int i = 0; i < VOX_LOSS_COUNT; i++)
        if (strcmp(s, loss_names[i]) == 0)
            return *out = (enum vox_loss)i, true;
    return false;
}

int64_t vox_target_channels(enum vox_target t, enum vox_loss l)
{
    return t == VOX_TARGET_AFFINITY ? 3 : l == VOX_LOSS_SOFTMAX ? 2 : 1;
}

/* label / valid at interior voxel (z, y, x) shifted by d, in the margin-1 volume */
static int64_t at3(const int64_t *s, int64_t z, int64_t y, int64_t x)
{
    return ((z + 1) * s[1] + (y + 1)) * s[2] + (x + 1);
}

static bool boundary_at(const uint64_t *lab, const uint8_t *ok, const int64_t *s, int64_t z,
                        int64_t y, int64_t x)
{
    static const int64_t d[6][3] = {{-1, 0, 0}, {1, 0, 0},  {0, -1, 0},
                                    {0, 1, 0},  {0, 0, -1}, {0, 0, 1}};
    uint64_t l = lab[at3(s, z, y, x)];
    if (l == 0)
        return true;
    for (int k = 0; k < 6; k++) {
        int64_t e = at3(s, z + d[k][0], y + d[k][1], x + d[k][2]);
        if ((!ok || ok[e]) && lab[e] != l)
            return true;
    }
    return false;
}

enum vox_status vox_train_targets(struct vox_ctx *ctx, enum vox_target t, enum vox_loss l,
                                  const struct vox_tensor *labels, const struct vox_tensor *valid,
                                  struct vox_tensor *target_out, struct vox_tensor *mask_out)
{
    const int64_t *s = labels->shape;
    if (labels->dtype != VOX_U64 || labels->rank != 3 || !vox_tensor_is_contiguous(labels) ||
        s[0] < 3 || s[1] < 3 || s[2] < 3)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "targets: labels must be contiguous u64 (Z+2, Y+2, X+2), Z, Y, X >= 1");
    if (valid && (valid->dtype != VOX_U8 || memcmp(valid->shape, s, 3 * sizeof *s) != 0 ||
                  !vox_tensor_is_contiguous(valid)))
        return vox_fail(ctx, VOX_INVALID_ARG, "targets: valid must be u8 of the labels' shape");
    int64_t c = vox_target_channels(t, l), shape[4] = {c, s[0] - 2, s[1] - 2, s[2] - 2};
    enum vox_status st = vox_tensor_alloc(ctx, target_out, VOX_F32, 4, shape);
    if (st == VOX_OK && (st = vox_tensor_alloc(ctx, mask_out, VOX_F32, 4, shape)) != VOX_OK)
        vox_tensor_free(ctx, target_out);
    if (st != VOX_OK)
        return st;
    const uint64_t *lab = labels->data;
    const uint8_t *ok = valid ? valid->data : NULL;
    float *tp = target_out->data, *mp = mask_out->data;
    int64_t plane = shape[1] * shape[2] * shape[3], e = 0;
    for (int64_t z = 0; z < shape[1]; z++)
        for (int64_t y = 0; y < shape[2]; y++)
            for (int64_t x = 0; x < shape[3]; x++, e++) {
                int64_t v = at3(s, z, y, x);
                bool vok = !ok || ok[v];
                if (t == VOX_TARGET_BOUNDARY) {
                    float b = boundary_at(lab, ok, s, z, y, x) ? 1.0f : 0.0f;
                    tp[e] = b, mp[e] = vok;
                    if (c == 2)
                        tp[plane + e] = 1 - b, mp[plane + e] = vok;
                    continue;
                }
                int64_t u[3] = {at3(s, z - 1, y, x), at3(s, z, y - 1, x), at3(s, z, y, x - 1)};
                for (int k = 0; k < 3; k++) {
                    tp[k * plane + e] = lab[v] != 0 && lab[v] == lab[u[k]];
                    mp[k * plane + e] = vok && (!ok || ok[u[k]]);
                }
            }
    return VOX_OK;
}

enum vox_status vox_train_affinity_targets(struct vox_ctx *ctx, const struct vox_tensor *labels,
                                           const struct vox_tensor *valid, int n,
                                           const int64_t (*offsets)[3],
                                           struct vox_tensor *target_out,
                                           struct vox_tensor *mask_out)
{
    if (n < 0 || n > VOX_TRAIN_OFFSETS_MAX || (n > 0 && !offsets))
        return vox_fail(ctx, VOX_INVALID_ARG, "targets: %d long-range offsets (0..%d)", n,
                        VOX_TRAIN_OFFSETS_MAX);
    for (int k = 0; k < n; k++)
        if (offsets[k][0] == 0 && offsets[k][1] == 0 && offsets[k][2] == 0)
            return vox_fail(ctx, VOX_INVALID_ARG, "targets: long-range offset %d is 0,0,0", k);
    struct vox_tensor t3 = {0}, m3 = {0};
    enum vox_status st =
        vox_train_targets(ctx, VOX_TARGET_AFFINITY, VOX_LOSS_BCE, labels, valid, &t3, &m3);
    if (st != VOX_OK)
        return st;
    const int64_t *s = labels->shape, shape[4] = {3 + n, s[0] - 2, s[1] - 2, s[2] - 2};
    const int64_t plane = shape[1] * shape[2] * shape[3];
    st = vox_tensor_alloc(ctx, target_out, VOX_F32, 4, shape);
    if (st == VOX_OK && (st = vox_tensor_alloc(ctx, mask_out, VOX_F32, 4, shape)) != VOX_OK)
        vox_tensor_free(ctx, target_out);
    if (st == VOX_OK) {
        memcpy(target_out->data, t3.data, (size_t)(3 * plane) * sizeof(float));
        memcpy(mask_out->data, m3.data, (size_t)(3 * plane) * sizeof(float));
        const uint64_t *lab = labels->data;
        const uint8_t *ok = valid ? valid->data : NULL;
        for (int k = 0; k < n; k++) {
            float *tp = (float *)target_out->data + (3 + k) * plane;
            float *mp = (float *)mask_out->data + (3 + k) * plane;
            const int64_t *o = offsets[k];
            int64_t e = 0;
            for (int64_t z = 0; z < shape[1]; z++)
                for (int64_t y = 0; y < shape[2]; y++)
                    for (int64_t x = 0; x < shape[3]; x++, e++) {
                        const int64_t uz = z - o[0], uy = y - o[1], ux = x - o[2];
                        const bool in = uz >= -1 && uz <= shape[1] && uy >= -1 && uy <= shape[2] &&
                                        ux >= -1 && ux <= shape[3];
                        const int64_t v = at3(s, z, y, x), u = in ? at3(s, uz, uy, ux) : v;
                        tp[e] = in && lab[v] != 0 && lab[v] == lab[u];
                        mp[e] = in && (!ok || (ok[v] && ok[u]));
                    }
        }
    }
    vox_tensor_free(ctx, &t3);
    vox_tensor_free(ctx, &m3);
    return st;
}

struct loss_job {
    enum vox_loss l;
    enum vox_nn_act act;
    const float *x, *t, *m;
    int64_t c, plane;
    double *w; /* per channel (class), the weight of positives [2c] and negatives [2c+1] */
};

/* Adds, per channel (class for softmax: the voxels whose target argmax is c), the masked
 * counts of positives (t > 0.5) and negatives of voxels [v0, v1) to pos[c] and neg[c]. */
static void class_counts(const struct loss_job *j, int64_t v0, int64_t v1, double *pos, double *neg)
{
    for (int64_t c = 0; c < j->c; c++)
        for (int64_t v = v0; v < v1; v++) {
            int64_t e = j->l == VOX_LOSS_SOFTMAX ? v : c * j->plane + v;
            double m = j->m ? j->m[e] : 1;
            bool is_pos = j->t[c * j->plane + v] > 0.5f;
            if (j->l == VOX_LOSS_SOFTMAX) {
                int64_t arg = 0;
                for (int64_t k = 1; k < j->c; k++)
                    arg = j->t[k * j->plane + v] > j->t[arg * j->plane + v] ? k : arg;
                is_pos = arg == c;
            }
            is_pos ? (pos[c] += m) : (neg[c] += m);
        }
}

static double sum_counts(const double *pos, const double *neg, int64_t c)
{
    double t = 0;
    for (int64_t k = 0; k < c; k++)
        t += pos[k] + neg[k];
    return t;
}

void vox_loss_class_weights(enum vox_loss l, int64_t c, const double *pos, const double *neg,
                            double *wpos, double *wneg)
{
    for (int64_t k = 0; k < c; k++) {
        const bool both = pos && pos[k] > 0 && neg[k] > 0;
        const double n = both ? pos[k] + neg[k] : 0;
        wpos[k] = !both ? 1 : l == VOX_LOSS_SOFTMAX ? n / ((double)c * pos[k]) : 0.5 * n / pos[k];
        wneg[k] = both ? 0.5 * n / neg[k] : 1;
    }
}

/* j->w from counts (NULL: 1s): vox_loss_class_weights. */
static void weights_of(const struct loss_job *j, const double *pos, const double *neg)
{
    double wp[64], wn[64]; /* (the loss checks C <= 64) */
    vox_loss_class_weights(j->l, j->c, pos, neg, wp, wn);
    for (int64_t c = 0; c < j->c; c++)
        j->w[2 * c] = wp[c], j->w[2 * c + 1] = wn[c];
}

/* The voxels are summed in pieces of LOSS_PIECE over the pool, each piece's sums in its own
 * slots, the slots then added in order: the same value for any thread count. */
enum { LOSS_PIECE = 4096 };

struct count_run {
    const struct loss_job *j;
    double *part; /* per piece: pos[c], then neg[c] */
};

static void count_pieces(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    const struct count_run *r = arg;
    const int64_t plane = r->j->plane, c = r->j->c;
    for (int64_t k = lo[0]; k < hi[0]; k++) {
        const int64_t end = (k + 1) * LOSS_PIECE < plane ? (k + 1) * LOSS_PIECE : plane;
        class_counts(r->j, k * LOSS_PIECE, end, r->part + 2 * c * k, r->part + 2 * c * k + c);
    }
}

/* The patch's masked count (what the loss is divided by), and its class weights: from the
 * patch's own counts (VOX_REBALANCE_PATCH), from vpos / vneg (VOX_REBALANCE_VOLUME), or 1s.
 * false: out of memory. */
static bool class_weights(struct vox_ctx *ctx, const struct loss_job *j, enum vox_rebalance r,
                          const double *vpos, const double *vneg, double *pos, double *neg,
                          double *n_out)
{
    memset(pos, 0, (size_t)j->c * sizeof *pos);
    memset(neg, 0, (size_t)j->c * sizeof *neg);
    const int64_t pieces = (j->plane + LOSS_PIECE - 1) / LOSS_PIECE;
    struct count_run run = {j, vox_calloc(ctx, (size_t)(2 * j->c * pieces) + 1, sizeof(double))};
    if (!run.part)
        return false;
    const int64_t np[3] = {pieces, 1, 1}, tile[3] = {1, 1, 1};
    vox_pool_for(vox_ctx_pool(ctx), np, tile, VOX_SCHED_AFFINE, count_pieces, &run);
    for (int64_t k = 0; k < pieces; k++)
        for (int64_t c = 0; c < j->c; c++) {
            pos[c] += run.part[2 * j->c * k + c];
            neg[c] += run.part[2 * j->c * k + j->c + c];
        }
    vox_free(ctx, run.part);
    weights_of(j,
               r == VOX_REBALANCE_PATCH    ? pos
               : r == VOX_REBALANCE_VOLUME ? vpos
                                           : NULL,
               r == VOX_REBALANCE_PATCH ? neg : vneg);
    /* softmax: every voxel is counted once (in its class), else once per channel */
    *n_out =
        j->l == VOX_LOSS_SOFTMAX ? (j->c > 0 ? pos[0] + neg[0] : 0) : sum_counts(pos, neg, j->c);
    return true;
}

/* Softmax cross-entropy at voxel v: adds scale * d l / d x to g, returns w * l. */
static double softmax_voxel(const struct loss_job *j, int64_t v, double scale, float *g)
{
    double mx = j->x[v], sum = 0, lsum = 0, tsum = 0;
    for (int64_t c = 1; c < j->c; c++)
        mx = j->x[c * j->plane + v] > mx ? j->x[c * j->plane + v] : mx;
    int64_t arg = 0;
    for (int64_t c = 0; c < j->c; c++) {
        sum += exp(j->x[c * j->plane + v] - mx);
        arg = j->t[c * j->plane + v] > j->t[arg * j->plane + v] ? c : arg;
    }
    double wv = (j->m ? j->m[v] : 1) * j->w[2 * arg];
    for (int64_t c = 0; c < j->c; c++) {
        int64_t e = c * j->plane + v;
        double logp = j->x[e] - mx - log(sum);
        lsum -= j->t[e] * logp;
        tsum += j->t[e];
    }
    for (int64_t c = 0; wv != 0 && c < j->c; c++) {
        int64_t e = c * j->plane + v;
        double p = exp(j->x[e] - mx) / sum;
        g[e] = (float)(g[e] + scale * wv * (p * tsum - j->t[e]));
    }
    return wv * lsum;
}

/* Square loss on act(x) at voxel v, all channels (softmax needs them together). */
static double square_voxel(const struct loss_job *j, int64_t v, double scale, float *g)
{
    double y[64], gy[64], acc = 0, dot = 0, mx = -HUGE_VAL, sum = 0;
    for (int64_t c = 0; c < j->c; c++) {
        double xv = j->x[c * j->plane + v];
        y[c] = j->act == VOX_ACT_SOFTMAX ? xv : vox_nn_act_apply(j->act, xv);
        mx = y[c] > mx ? y[c] : mx;
    }
    for (int64_t c = 0; j->act == VOX_ACT_SOFTMAX && c < j->c; c++)
        sum += exp(y[c] - mx);
    for (int64_t c = 0; c < j->c; c++) {
        int64_t e = c * j->plane + v;
        if (j->act == VOX_ACT_SOFTMAX)
            y[c] = exp(y[c] - mx) / sum;
        double wv = (j->m ? j->m[e] : 1) * j->w[2 * c + (j->t[e] > 0.5f ? 0 : 1)];
        double d = y[c] - j->t[e];
        acc += wv * d * d;
        gy[c] = 2 * wv * d;
        dot += gy[c] * y[c];
    }
    for (int64_t c = 0; c < j->c; c++) {
        int64_t e = c * j->plane + v;
        double s = j->act == VOX_ACT_SOFTMAX ? y[c] * (gy[c] - dot) : gy[c];
        if (j->act == VOX_ACT_RELU)
            s = y[c] > 0 ? gy[c] : 0;
        else if (j->act == VOX_ACT_ELU)
            s = gy[c] * (y[c] > 0 ? 1 : y[c] + 1);
        else if (j->act == VOX_ACT_SIGMOID)
            s = gy[c] * y[c] * (1 - y[c]);
        else if (j->act == VOX_ACT_TANH)
            s = gy[c] * (1 - y[c] * y[c]);
        g[e] = (float)(g[e] + scale * s);
    }
    return acc;
}

/* Binary cross-entropy on logits at element e. */
static double bce_elem(const struct loss_job *j, int64_t c, int64_t e, double scale, float *g)
{
    double x = j->x[e], t = j->t[e];
    double wv = (j->m ? j->m[e] : 1) * j->w[2 * c + (t > 0.5 ? 0 : 1)];
    if (wv == 0)
        return 0;
    /* one exp: q = exp(-|x|) is exp(-x) for x >= 0 and exp(x) below */
    double q = exp(-fabs(x));
    double l = (x > 0 ? x : 0) - x * t + log1p(q);
    double p = x >= 0 ? 1 / (1 + q) : q / (1 + q);
    g[e] = (float)(g[e] + scale * wv * (p - t));
    return wv * l;
}

static enum vox_status loss_check(struct vox_ctx *ctx, enum vox_loss l, const struct vox_tensor *x,
                                  enum vox_nn_act act, const struct vox_tensor *t,
                                  const struct vox_tensor *m, const struct vox_tensor *grad)
{
    if (l == VOX_LOSS_MALIS)
        return vox_fail(ctx, VOX_INVALID_ARG, "loss malis needs the labels: use vox_loss_malis");
    if (l == VOX_LOSS_BCE && act != VOX_ACT_SIGMOID)
        return vox_fail(ctx, VOX_INVALID_ARG, "loss bce needs an output with act=sigmoid, not %s",
                        vox_nn_act_str(act));
    if (l == VOX_LOSS_SOFTMAX && (act != VOX_ACT_SOFTMAX || x->shape[1] < 2))
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "loss softmax needs an output with act=softmax and >= 2 channels");
    if (x->shape[1] > 64)
        return vox_fail(ctx, VOX_UNSUPPORTED, "losses take at most 64 channels, not %lld",
                        (long long)x->shape[1]);
    bool ok = x->dtype == VOX_F32 && x->rank == 5 && x->shape[0] == 1 && t->rank == 4 &&
              t->dtype == VOX_F32 && grad->dtype == VOX_F32 &&
              memcmp(grad->shape, x->shape, 5 * sizeof x->shape[0]) == 0 &&
              memcmp(t->shape, x->shape + 1, 4 * sizeof x->shape[0]) == 0;
    if (ok && m)
        ok = m->dtype == VOX_F32 && memcmp(m->shape, t->shape, 4 * sizeof t->shape[0]) == 0;
    if (!ok)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "loss: the target/mask (%lld, %lld, %lld, %lld) must match the output "
                        "(1, %lld, %lld, %lld, %lld), f32",
                        (long long)t->shape[0], (long long)t->shape[1], (long long)t->shape[2],
                        (long long)t->shape[3], (long long)x->shape[1], (long long)x->shape[2],
                        (long long)x->shape[3], (long long)x->shape[4]);
    return VOX_OK;
}

struct loss_run {
    const struct loss_job *j;
    float *g;
    double sc;
    double *part;
};

static void loss_pieces(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    const struct loss_run *r = arg;
    const struct loss_job *j = r->j;
    for (int64_t k = lo[0]; k < hi[0]; k++) {
        double acc = 0;
        const int64_t end = (k + 1) * LOSS_PIECE < j->plane ? (k + 1) * LOSS_PIECE : j->plane;
        for (int64_t v = k * LOSS_PIECE; v < end; v++) {
            if (j->l == VOX_LOSS_SOFTMAX)
                acc += softmax_voxel(j, v, r->sc, r->g);
            else if (j->l == VOX_LOSS_SQUARE)
                acc += square_voxel(j, v, r->sc, r->g);
            else
                for (int64_t c = 0; c < j->c; c++)
                    acc += bce_elem(j, c, c * j->plane + v, r->sc, r->g);
        }
        r->part[k] = acc;
    }
}

/* vox_loss_compute and vox_loss_compute_counts. */
static enum vox_status loss_run(struct vox_ctx *ctx, enum vox_loss l, enum vox_rebalance r,
                                const double *vpos, const double *vneg, const struct vox_tensor *x,
                                enum vox_nn_act act, const struct vox_tensor *target,
                                const struct vox_tensor *mask, double scale,
                                struct vox_tensor *grad, double *loss_out)
{
    *loss_out = 0;
    enum vox_status s = loss_check(ctx, l, x, act, target, mask, grad);
    if (s != VOX_OK)
        return s;
    struct loss_job j = {l,
                         act,
                         x->data,
                         target->data,
                         mask ? mask->data : NULL,
                         x->shape[1],
                         x->shape[2] * x->shape[3] * x->shape[4],
                         NULL};
    j.w = vox_alloc(ctx, (size_t)(4 * j.c) * sizeof *j.w);
    if (!j.w)
        return VOX_OUT_OF_MEMORY;
    double *pos = j.w + 2 * j.c, *neg = pos + j.c, n = 0, acc = 0;
    if (!class_weights(ctx, &j, r, vpos, vneg, pos, neg, &n)) {
        vox_free(ctx, j.w);
        return VOX_OUT_OF_MEMORY;
    }
    const int64_t pieces = (j.plane + LOSS_PIECE - 1) / LOSS_PIECE;
    double *part = n > 0 ? vox_calloc(ctx, (size_t)pieces, sizeof *part) : NULL;
    if (n > 0 && !part) {
        vox_free(ctx, j.w);
        return VOX_OUT_OF_MEMORY;
    }
    struct loss_run run = {&j, grad->data, n > 0 ? scale / n : 0, part};
    const int64_t np[3] = {n > 0 ? pieces : 0, 1, 1}, tile[3] = {1, 1, 1};
    vox_pool_for(vox_ctx_pool(ctx), np, tile, VOX_SCHED_AFFINE, loss_pieces, &run);
    for (int64_t k = 0; part && k < pieces; k++)
        acc += part[k];
    vox_free(ctx, part);
    vox_free(ctx, j.w);
    *loss_out = n > 0 ? acc / n : 0;
    return VOX_OK;
}

enum vox_status vox_loss_compute(struct vox_ctx *ctx, enum vox_loss l, enum vox_rebalance r,
                                 const struct vox_tensor *x, enum vox_nn_act act,
                                 const struct vox_tensor *target, const struct vox_tensor *mask,
                                 double scale, struct vox_tensor *grad, double *loss_out)
{
    if (r == VOX_REBALANCE_VOLUME)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "loss: volume rebalancing needs the volume's class counts "
                        "(vox_loss_compute_counts)");
    return loss_run(ctx, l, r, NULL, NULL, x, act, target, mask, scale, grad, loss_out);
}

enum vox_status vox_loss_compute_counts(struct vox_ctx *ctx, enum vox_loss l, const double *pos,
                                        const double *neg, const struct vox_tensor *x,
                                        enum vox_nn_act act, const struct vox_tensor *target,
                                        const struct vox_tensor *mask, double scale,
                                        struct vox_tensor *grad, double *loss_out)
{
    return loss_run(ctx, l, VOX_REBALANCE_VOLUME, pos, neg, x, act, target, mask, scale, grad,
                    loss_out);
}

void vox_loss_class_counts(enum vox_loss l, const struct vox_tensor *target,
                           const struct vox_tensor *mask, double *pos, double *neg)
{
    struct loss_job j = {.l = l,
                         .t = target->data,
                         .m = mask ? mask->data : NULL,
                         .c = target->shape[0],
                         .plane = target->shape[1] * target->shape[2] * target->shape[3]};
    class_counts(&j, 0, j.plane, pos, neg);
}
