/*
 * weights.c: a net's parameters: shapes, deterministic random initialisation, and HDF5 files.
 *
 * The file layout is PyTorch's state_dict flattened into groups: "/<layer>/weight" f32
 * (out, in, kz, ky, kx) for Conv3d and (in, out, kz, ky, kx) for ConvTranspose3d,
 * "/<layer>/bias" (out), and for a conv with bn=yes "/<layer>/bn_mean", "bn_var", "bn_weight",
 * "bn_bias" (out) (BatchNorm3d's running_mean, running_var, weight, bias). Files are written
 * atomically through the io module. The random generator is splitmix64 (Steele et al. 2014)
 * with Box-Muller for normals, so the same seed gives the same weights everywhere.
 */
#include "internal.h"
#include "vox/io.h"

#include <stdio.h>
#include <string.h>

static const char *const param_names[VOX_P_COUNT] = {"weight", "bias",      "bn_mean",
                                                     "bn_var", "bn_weight", "bn_bias"};
static const char *const init_names[VOX_INIT_COUNT] = {"msra", "xavier", "uniform"};

const char *vox_nn_param_str(enum vox_nn_param p)
{
    return (unsigned)p < VOX_P_COUNT ? param_names[p] : "?";
}

const char *vox_nn_init_str(enum vox_nn_init i)
{
    return (unsigned)i < VOX_INIT_COUNT ? init_names[i] : "?";
}

bool vox_nn_init_parse(const char *s, enum vox_nn_init *out)
{
    for (int i = 0; i < VOX_INIT_COUNT; i++)
        if (strcmp(s, init_names[i]) == 0 || (i == VOX_INIT_MSRA && strcmp(s, "he") == 0)) {
            *out = (enum vox_nn_init)i;
            return true;
        }
    return false;
}

unsigned vox_nn_layer_params(const struct vox_nn_layer *l)
{
    if (l->kind != VOX_NN_CONV && l->kind != VOX_NN_DECONV)
        return 0;
    unsigned m = 1u << VOX_P_WEIGHT;
    if (l->bias)
        m |= 1u << VOX_P_BIAS;
    if (l->kind == VOX_NN_CONV && l->bn)
        m |= 1u << VOX_P_BN_MEAN | 1u << VOX_P_BN_VAR | 1u << VOX_P_BN_WEIGHT | 1u << VOX_P_BN_BIAS;
    return m;
}

int vox_nn_param_shape(const struct vox_net *net, int layer, enum vox_nn_param p, int64_t shape[5])
{
    const struct vox_nn_layer *l = &net->layers[layer];
    if (!(vox_nn_layer_params(l) & (1u << p)))
        return 0;
    if (p != VOX_P_WEIGHT) {
        shape[0] = l->channels;
        return 1;
    }
    int64_t cin = net->layers[l->in[0]].channels;
    shape[0] = l->kind == VOX_NN_CONV ? l->channels : cin;
    shape[1] = l->kind == VOX_NN_CONV ? cin : l->channels;
    for (int a = 0; a < 3; a++)
        shape[2 + a] = l->kernel[a];
    return 5;
}

void vox_nn_weights_destroy(struct vox_nn_weights *w)
{
    if (!w)
        return;
    for (int i = 0; w->p && i < w->n_layers; i++)
        for (int p = 0; p < VOX_P_COUNT; p++)
            vox_tensor_free(w->ctx, &w->p[i][p]);
    vox_free(w->ctx, w->p);
    vox_free(w->ctx, w);
}

static void fill(struct vox_tensor *t, float v)
{
    float *d = t->data;
    for (int64_t i = 0; i < vox_tensor_numel(t); i++)
        d[i] = v;
}

enum vox_status vox_nn_weights_create(struct vox_ctx *ctx, const struct vox_net *net,
                                      struct vox_nn_weights **w_out)
{
    *w_out = NULL;
    enum vox_status s = VOX_OUT_OF_MEMORY;
    struct vox_nn_weights *w = vox_calloc(ctx, 1, sizeof *w);
    if (!w)
        return s;
    w->ctx = ctx;
    w->n_layers = net->n_layers;
    if (!(w->p = vox_calloc(ctx, (size_t)net->n_layers, sizeof *w->p)))
        goto fail;
    for (int i = 0; i < net->n_layers; i++)
        for (int p = 0; p < VOX_P_COUNT; p++) {
            int64_t shape[5];
            int rank = vox_nn_param_shape(net, i, (enum vox_nn_param)p, shape);
            if (rank && (s = vox_tensor_alloc(ctx, &w->p[i][p], VOX_F32, rank, shape)) != VOX_OK)
                goto fail;
            if (rank && (p == VOX_P_BN_VAR || p == VOX_P_BN_WEIGHT))
                fill(&w->p[i][p], 1.0f);
        }
    *w_out = w;
    return VOX_OK;
fail:
    vox_nn_weights_destroy(w);
    return s;
}

static uint64_t splitmix(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1): 53 random bits, never 0. */
static double unit(uint64_t *state)
{
    return ((double)(splitmix(state) >> 11) + 0.5) / 0x1p53;
}

void vox_nn_weights_init(const struct vox_net *net, struct vox_nn_weights *w, enum vox_nn_init init,
                         uint64_t seed)
{
    for (int i = 0; i < net->n_layers; i++) {
        struct vox_tensor *t = &w->p[i][VOX_P_WEIGHT];
        if (t->rank == 0)
            continue;
        const struct vox_nn_layer *l = &net->layers[i];
        double k = (double)(l->kernel[0] * l->kernel[1] * l->kernel[2]);
        double cin = (double)net->layers[l->in[0]].channels, cout = (double)l->channels;
        double fan_in = cin * k, fan_out = cout * k;
        /* one stream per layer, so adding a layer does not change the others' weights */
        uint64_t state = seed ^ (0x5851F42D4C957F2Dull * (uint64_t)(i + 1));
        float *d = t->data;
        for (int64_t j = 0; j < vox_tensor_numel(t); j++) {
            double v;
            if (init == VOX_INIT_MSRA) {
                double u1 = unit(&state), u2 = unit(&state);
                v = sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2) * sqrt(2.0 / fan_in);
            } else {
                double a = init == VOX_INIT_XAVIER ? sqrt(6.0 / (fan_in + fan_out)) : 0.1;
                v = (2.0 * unit(&state) - 1.0) * a;
            }
            d[j] = (float)v;
        }
    }
}

static void shape_str(char *buf, size_t n, const int64_t *s, int rank)
{
    int k = snprintf(buf, n, "(");
    for (int i = 0; i < rank && k < (int)n; i++)
        k += snprintf(buf + k, n - (size_t)k, i ? ", %lld" : "%lld", (long long)s[i]);
    if (k < (int)n)
        snprintf(buf + k, n - (size_t)k, ")");
}

/* Reads one parameter into the (already shaped) tensor t, checking dtype and shape. */
static enum vox_status load_param(struct vox_ctx *ctx, const char *path, const char *layer,
                                  enum vox_nn_param p, struct vox_tensor *t)
{
    char spec[1200];
    snprintf(spec, sizeof spec, "%s:/%s/%s", path, layer, param_names[p]);
    struct vox_volume *vol;
    enum vox_status s = vox_volume_open(ctx, spec, &vol);
    if (s != VOX_OK) {
        vox_ctx_error_prefix(ctx, "weights '%s': layer '%s': cannot read /%s/%s", path, layer,
                             layer, param_names[p]);
        if (s != VOX_INVALID_ARG)
            return s;
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", vox_ctx_error(ctx));
        return vox_fail(ctx, VOX_FORMAT, "%s", msg);
    }
    const struct vox_volume_info *info = vox_volume_info(vol);
    bool same = info->rank == t->rank && info->dtype == VOX_F32;
    for (int a = 0; same && a < t->rank; a++)
        same = info->shape[a] == t->shape[a];
    if (!same) {
        char want[128], got[128];
        shape_str(want, sizeof want, t->shape, t->rank);
        shape_str(got, sizeof got, info->shape, info->rank);
        s = vox_fail(ctx, VOX_FORMAT, "weights '%s': layer '%s': /%s/%s is %s %s, expected f32 %s",
                     path, layer, layer, param_names[p], vox_dtype_str(info->dtype), got, want);
    } else {
        s = vox_volume_read(ctx, vol, NULL, NULL, t);
    }
    vox_volume_close(vol);
    return s;
}

enum vox_status vox_nn_weights_load(struct vox_ctx *ctx, const struct vox_net *net,
                                    const char *path, struct vox_nn_weights **w_out)
{
    struct vox_nn_weights *w;
    enum vox_status s = vox_nn_weights_create(ctx, net, &w);
    for (int i = 0; i < net->n_layers && s == VOX_OK; i++)
        for (int p = 0; p < VOX_P_COUNT && s == VOX_OK; p++)
            if (w->p[i][p].rank)
                s = load_param(ctx, path, net->layers[i].name, (enum vox_nn_param)p, &w->p[i][p]);
    if (s != VOX_OK) {
        vox_nn_weights_destroy(w);
        w = NULL;
    }
    *w_out = w;
    return s;
}

/* Layer i from path into w when all its parameters match: VOX_OK with *hit set or not;
 * out-of-memory passes through, any other failure is a miss. */
static enum vox_status seed_layer(struct vox_ctx *ctx, const struct vox_net *net, int i,
                                  const char *path, struct vox_nn_weights *w, bool *hit)
{
    struct vox_tensor t[VOX_P_COUNT] = {{0}};
    enum vox_status s = VOX_OK;
    *hit = false;
    for (int p = 0; p < VOX_P_COUNT && s == VOX_OK; p++)
        if (w->p[i][p].rank && (s = vox_tensor_alloc(ctx, &t[p], VOX_F32, w->p[i][p].rank,
                                                     w->p[i][p].shape)) == VOX_OK)
            s = load_param(ctx, path, net->layers[i].name, (enum vox_nn_param)p, &t[p]);
    if (s == VOX_OK) {
        *hit = true;
        for (int p = 0; p < VOX_P_COUNT; p++)
            if (w->p[i][p].rank)
                memcpy(w->p[i][p].data, t[p].data, vox_tensor_nbytes(&t[p]));
    }
    for (int p = 0; p < VOX_P_COUNT; p++)
        vox_tensor_free(ctx, &t[p]);
    return s == VOX_OUT_OF_MEMORY ? s : VOX_OK;
}

enum vox_status vox_nn_weights_seed(struct vox_ctx *ctx, const struct vox_net *net,
                                    const char *path, struct vox_nn_weights *w, bool *seeded_out)
{
    int hits = 0, any = 0;
    for (int i = 0; i < net->n_layers; i++) {
        seeded_out[i] = false;
        if (!vox_nn_layer_params(&net->layers[i]))
            continue;
        any++;
        enum vox_status s = seed_layer(ctx, net, i, path, w, &seeded_out[i]);
        if (s != VOX_OK)
            return s;
        hits += seeded_out[i];
    }
    if (any > 0 && hits == 0)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "weights '%s': no layer of net '%s' has a match (same name and "
                        "parameter shapes) there, or the file cannot be read",
                        path, net->source);
    return VOX_OK;
}

enum vox_status vox_nn_weights_save(struct vox_ctx *ctx, const struct vox_net *net,
                                    const struct vox_nn_weights *w, const char *path)
{
    struct vox_out_file *f;
    enum vox_status s = vox_out_open(ctx, path, &f);
    if (s != VOX_OK)
        return s;
    for (int i = 0; i < net->n_layers && s == VOX_OK; i++)
        for (int p = 0; p < VOX_P_COUNT && s == VOX_OK; p++) {
            const struct vox_tensor *t = &w->p[i][p];
            if (!t->rank)
                continue;
            char name[VOX_NN_NAME_MAX + 16];
            snprintf(name, sizeof name, "/%s/%s", net->layers[i].name, param_names[p]);
            struct vox_dataset_options o = {.dtype = VOX_F32, .rank = t->rank};
            memcpy(o.shape, t->shape, sizeof o.shape);
            /* one chunk per tensor: the default (1x1x1x3x3 for a conv weight) makes
             * thousands of tiny chunks, and a read costs libhdf5 several KiB per chunk */
            memcpy(o.chunk, t->shape, sizeof o.chunk);
            struct vox_volume *vol;
            s = vox_out_dataset(ctx, f, name, &o, &vol);
            if (s == VOX_OK)
                s = vox_volume_write(ctx, vol, NULL, t);
        }
    if (s != VOX_OK) {
        vox_out_abort(f);
        return s;
    }
    return vox_out_commit(ctx, f);
}
