/*
 * test_train.c: training: every layer's backward and every loss against central finite
 * differences, targets on hand-made labels, a tiny affinity net that learns (validation loss
 * and segmentation scores improve), determinism over thread counts, kill-and-resume, corrupted
 * checkpoints, and clear errors on bad input.
 */
#include "harness.h"
#include "nn/internal.h"
#include "nn/train_internal.h"
#include "vox/io.h"
#include "vox/metrics.h"
#include "vox/seg.h"
#include "vox/synth.h"
#include "vox/train.h"

#include <unistd.h>

static uint64_t rng_state = 42;

static double urand(void)
{
    return vox_train_uniform(&rng_state) * 2 - 1;
}

static float *F(const struct vox_tensor *t)
{
    return t->data;
}

/* The reference act slope on one row, as struct vox_nn_row_slope's fn */
static void row_slope(void *self, enum vox_nn_act act, const float *y, const float *gy, float *gx,
                      int64_t n)
{
    (void)self;
    const int64_t shape[5] = {1, 1, 1, 1, n}, strides[5] = {n, n, n, n, 1};
    struct vox_tensor ty = {.data = (void *)y, .dtype = VOX_F32, .rank = 5},
                      tg = {.data = (void *)gy, .dtype = VOX_F32, .rank = 5},
                      tx = {.data = gx, .dtype = VOX_F32, .rank = 5};
    memcpy(ty.shape, shape, sizeof shape);
    memcpy(ty.strides, strides, sizeof strides);
    memcpy(tg.shape, shape, sizeof shape);
    memcpy(tg.strides, strides, sizeof strides);
    memcpy(tx.shape, shape, sizeof shape);
    memcpy(tx.strides, strides, sizeof strides);
    vox_nn_ref_act_backward(&ty, &tg, act, &tx);
}

static void tmp_path(char *buf, size_t n, const char *tag)
{
    snprintf(buf, n, "/tmp/vox_test_train_%ld_%s", (long)getpid(), tag);
}

/* L = sum r * out over the net's output, in double */
static double objective(struct vox_ctx *ctx, struct vox_nn_graph *g, const struct vox_net *net,
                        const struct vox_nn_weights *w, const struct vox_tensor *in, const float *r)
{
    CHECK_OK(vox_nn_graph_forward(ctx, g, w, in));
    const struct vox_tensor *o = vox_nn_graph_value(g, vox_net_output(net, 0));
    double l = 0;
    for (int64_t e = 0; e < vox_tensor_numel(o); e++)
        l += (double)r[e] * F(o)[e];
    return l;
}

/* Compares d L / d p with (L(p + h) - L(p - h)) / 2h at up to 24 elements of p. */
static int fd_compare(struct vox_ctx *ctx, struct vox_nn_graph *g, const struct vox_net *net,
                      const struct vox_nn_weights *w, const struct vox_tensor *in, const float *r,
                      float *p, const float *grad, int64_t n, double h, const char *what)
{
    int bad = 0;
    int64_t step = n > 24 ? n / 24 : 1;
    for (int64_t e = 0; e < n; e += step) {
        float keep = p[e];
        p[e] = (float)(keep + h);
        double lp = objective(ctx, g, net, w, in, r);
        p[e] = (float)(keep - h);
        double lm = objective(ctx, g, net, w, in, r);
        p[e] = keep;
        double fd = (lp - lm) / (2 * h);
        if (!(fabs(fd - grad[e]) <= 3e-3 + 2e-2 * fabs(fd))) {
            if (bad++ == 0)
                fprintf(stderr, "  %s: element %lld: backward %.6g, finite difference %.6g\n", what,
                        (long long)e, grad[e], fd);
        }
    }
    return bad;
}

/* Gradient check of a whole net at `patch`: input and every parameter. Input values are
 * distinct by >= 0.01 (so max layers keep their argmax under the perturbation h). */
static void grad_check(struct vox_ctx *ctx, const char *spec, const int64_t patch[3], double h)
{
    struct vox_net *net = NULL;
    struct vox_nn_graph *g = NULL;
    struct vox_nn_weights *w = NULL, *gw = NULL;
    struct vox_tensor in = {0};
    CHECK_OK(vox_net_parse(ctx, spec, "grad.net", &net));
    if (!net)
        return;
    CHECK_OK(vox_nn_graph_create(ctx, net, patch, NULL, &g));
    CHECK_OK(vox_nn_weights_create(ctx, net, &w));
    CHECK_OK(vox_nn_weights_create(ctx, net, &gw));
    int64_t shape[5] = {1, net->layers[vox_net_input(net, 0)].channels, patch[0], patch[1],
                        patch[2]};
    CHECK_OK(vox_tensor_alloc(ctx, &in, VOX_F32, 5, shape));
    if (!g || !w || !gw || !in.data)
        goto done;
    vox_nn_weights_init(net, w, VOX_INIT_UNIFORM, 7);
    for (int i = 0; i < net->n_layers; i++) /* gw accumulates: from 0 (bn_weight starts at 1) */
        for (int k = 0; k < VOX_P_COUNT; k++)
            if (gw->p[i][k].rank)
                memset(gw->p[i][k].data, 0, vox_tensor_nbytes(&gw->p[i][k]));
    for (int i = 0; i < net->n_layers; i++) {
        for (int64_t e = 0; w->p[i][VOX_P_BIAS].rank && e < w->p[i][VOX_P_BIAS].shape[0]; e++)
            F(&w->p[i][VOX_P_BIAS])[e] = (float)(0.1 * urand());
        for (int64_t e = 0; w->p[i][VOX_P_BN_BIAS].rank && e < w->p[i][VOX_P_BN_BIAS].shape[0];
             e++) {
            F(&w->p[i][VOX_P_BN_WEIGHT])[e] = (float)(1 + 0.5 * urand());
            F(&w->p[i][VOX_P_BN_BIAS])[e] = (float)(0.2 * urand());
        }
    }
    int64_t n = vox_tensor_numel(&in);
    for (int64_t e = 0; e < n; e++) /* a scrambled ramp: distinct values */
        F(&in)[e] = (float)(0.01 * (double)((e * 7919) % n) - 0.005 * (double)n);
    for (int64_t e = 0; e < n; e++)
        F(&in)[e] *= (float)(2.0 / (0.01 * (double)n));
    const struct vox_tensor *o = vox_nn_graph_value(g, vox_net_output(net, 0));
    float *r = vox_alloc(ctx, vox_tensor_nbytes(o));
    for (int64_t e = 0; r && e < vox_tensor_numel(o); e++)
        r[e] = (float)urand();
    if (!r)
        goto done;
    objective(ctx, g, net, w, &in, r);
    vox_nn_graph_zero_grad(g);
    struct vox_tensor *go = vox_nn_graph_grad(g, vox_net_output(net, 0));
    memcpy(go->data, r, vox_tensor_nbytes(go));
    vox_nn_graph_backward(ctx, g, w, gw);
    int64_t in_layer = vox_net_input(net, 0);
    struct vox_tensor gin = {0};
    CHECK_OK(vox_tensor_alloc(ctx, &gin, VOX_F32, 5, shape));
    if (gin.data)
        memcpy(gin.data, vox_nn_graph_grad(g, (int)in_layer)->data, vox_tensor_nbytes(&gin));
    int bad = gin.data ? fd_compare(ctx, g, net, w, &in, r, F(&in), F(&gin), n, h, "input") : 1;
    for (int i = 0; i < net->n_layers; i++)
        for (int k = 0; k < VOX_P_COUNT; k++)
            if (w->p[i][k].rank && k != VOX_P_BN_MEAN && k != VOX_P_BN_VAR)
                bad += fd_compare(ctx, g, net, w, &in, r, F(&w->p[i][k]), F(&gw->p[i][k]),
                                  vox_tensor_numel(&w->p[i][k]), h, net->layers[i].name);
    if (bad)
        fprintf(stderr, "  net:\n%s", spec);
    CHECK(bad == 0);
    vox_tensor_free(ctx, &gin);
    vox_free(ctx, r);
done:
    vox_tensor_free(ctx, &in);
    vox_nn_weights_destroy(w);
    vox_nn_weights_destroy(gw);
    vox_nn_graph_destroy(g);
    vox_net_destroy(net);
}

static void test_layer_grads(struct vox_ctx *ctx)
{
    static const struct {
        const char *spec;
        int64_t patch[3];
        double h;
    } cases[] = {
        {"input i channels=3\nconv c i -> 5 kernel=2x3x2 dilation=1x2x1\noutput o c\n",
         {3, 7, 5},
         1e-2},
        {"input i channels=2\nconv c i -> 3 kernel=3 pad=same act=elu\noutput o c\n",
         {3, 5, 4},
         1e-2},
        {"input i channels=1\nconv c i -> 3 kernel=1x2x3 bias=no act=tanh\noutput o c "
         "act=sigmoid\n",
         {2, 4, 5},
         1e-2},
        {"input i channels=2\ndeconv d i -> 3 kernel=1x2x3 act=tanh\noutput o d\n",
         {2, 3, 3},
         1e-2},
        {"input i channels=3\npool p i window=1x2x2\noutput o p\n", {3, 6, 4}, 1e-3},
        /* a pooling alone consuming an act's output (the slope fused into its adjoint), an add
         * alone consuming each of its inputs (their gradients written with =) */
        {"input i channels=2\nconv c i -> 3 kernel=1x2x2 act=elu\npool p c window=1x2x2\n"
         "conv d p -> 2 kernel=1x2x1 act=tanh\noutput o d\n",
         {2, 5, 7},
         1e-3},
        {"input i channels=2\nconv a i -> 2 kernel=1x2x2\nconv b i -> 2 kernel=1x2x2\n"
         "add s a b act=elu\npool p s window=1x2x2\noutput o p\n",
         {2, 5, 5},
         1e-3},
        {"input i channels=2\nmaxfilter m i window=2x2x3 dilation=1x2x1\noutput o m\n",
         {3, 6, 5},
         1e-3},
        {"input i channels=2\nupsample u i factor=2x1x3\noutput o u\n", {2, 3, 3}, 1e-2},
        {"input i channels=2\nconv c i -> 3 kernel=3 pad=same\ncrop k c margin=1x0x1\n"
         "crop k2 c to=k\nadd s k k2 act=elu\noutput o s\n",
         {3, 5, 5},
         1e-2},
        {"input i channels=1\nconv a i -> 3 kernel=1x2x2\nconv b i -> 2 kernel=1x2x2 act=elu\n"
         "concat cat a b\nsoftmax sm cat\nconv e sm -> 2 kernel=1 act=tanh\noutput o e "
         "act=softmax\n",
         {2, 5, 3},
         1e-2},
        /* batch norm (training mode): with and without conv bias, odd channel counts */
        {"input i channels=2\nconv c i -> 3 kernel=2x3x2 bn=yes act=elu\n"
         "conv d c -> 5 kernel=1x2x2 bias=no bn=yes eps=1e-3 act=tanh\noutput o d\n",
         {3, 6, 5},
         1e-3},
        {"input i channels=1\nconv c i -> 3 kernel=3 pad=same bn=yes act=elu\n"
         "softmax sm c\nconv d sm -> 1 kernel=1x2x1 bn=yes\noutput o d act=sigmoid\n",
         {3, 3, 5},
         1e-3},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        grad_check(ctx, cases[c].spec, cases[c].patch, cases[c].h);
}

/* Two 1-channel inputs, each through its own weights, joined by add (or by concat): the
 * gradients of both inputs and of both paths' parameters against central finite differences
 * (objective summed in double) at odd patch sizes. A backward that dropped or swapped one
 * input's path would show as a zero or wrong gradient on that path's weights. */
static void two_input_check(struct vox_ctx *ctx, const char *spec, const int64_t patch[3])
{
    struct vox_net *net = NULL;
    struct vox_nn_graph *g = NULL;
    struct vox_nn_weights *w = NULL, *gw = NULL;
    struct vox_tensor in[2] = {{0}, {0}}, gin[2] = {{0}, {0}};
    float *r = NULL;
    CHECK_OK(vox_net_parse(ctx, spec, "two.net", &net));
    if (!net)
        return;
    CHECK(net->n_inputs == 2);
    CHECK_OK(vox_nn_graph_create(ctx, net, patch, NULL, &g));
    CHECK_OK(vox_nn_weights_create(ctx, net, &w));
    CHECK_OK(vox_nn_weights_create(ctx, net, &gw));
    int64_t shape[5] = {1, 1, patch[0], patch[1], patch[2]};
    for (int k = 0; k < 2; k++) {
        CHECK_OK(vox_tensor_alloc(ctx, &in[k], VOX_F32, 5, shape));
        CHECK_OK(vox_tensor_alloc(ctx, &gin[k], VOX_F32, 5, shape));
    }
    if (!g || !w || !gw || !in[0].data || !in[1].data || !gin[0].data || !gin[1].data)
        goto done;
    vox_nn_weights_init(net, w, VOX_INIT_UNIFORM, 11);
    for (int i = 0; i < net->n_layers; i++) {
        for (int64_t e = 0;
             w->p[i][VOX_P_WEIGHT].rank && e < vox_tensor_numel(&w->p[i][VOX_P_WEIGHT]); e++)
            F(&w->p[i][VOX_P_WEIGHT])[e] *= 5; /* U(-0.5, 0.5): gradients well above noise */
        for (int64_t e = 0; w->p[i][VOX_P_BIAS].rank && e < w->p[i][VOX_P_BIAS].shape[0]; e++)
            F(&w->p[i][VOX_P_BIAS])[e] = (float)(0.1 * urand());
    }
    int64_t n = vox_tensor_numel(&in[0]);
    for (int k = 0; k < 2; k++)
        for (int64_t e = 0; e < n; e++)
            F(&in[k])[e] = (float)urand();
    const struct vox_tensor *o = vox_nn_graph_value(g, vox_net_output(net, 0));
    r = vox_alloc(ctx, vox_tensor_nbytes(o));
    if (!r)
        goto done;
    for (int64_t e = 0; e < vox_tensor_numel(o); e++)
        r[e] = (float)urand();
    objective(ctx, g, net, w, in, r);
    vox_nn_graph_zero_grad(g);
    memcpy(vox_nn_graph_grad(g, vox_net_output(net, 0))->data, r, vox_tensor_nbytes(o));
    vox_nn_graph_backward(ctx, g, w, gw);
    int bad = 0;
    for (int k = 0; k < 2; k++) {
        memcpy(gin[k].data, vox_nn_graph_grad(g, vox_net_input(net, k))->data, n * sizeof(float));
        double norm = 0;
        for (int64_t e = 0; e < n; e++)
            norm += fabs(F(&gin[k])[e]);
        CHECK(norm > 0); /* both inputs reach the output */
        bad += fd_compare(ctx, g, net, w, in, r, F(&in[k]), F(&gin[k]), n, 1e-2,
                          net->layers[vox_net_input(net, k)].name);
    }
    for (int i = 0; i < net->n_layers; i++)
        for (int k = 0; k < 2; k++)
            if (w->p[i][k].rank)
                bad += fd_compare(ctx, g, net, w, in, r, F(&w->p[i][k]), F(&gw->p[i][k]),
                                  vox_tensor_numel(&w->p[i][k]), 1e-2, net->layers[i].name);
    if (bad)
        fprintf(stderr, "  net:\n%s", spec);
    CHECK(bad == 0);
    /* without input gradients (as training runs): the parameters get the same bits */
    struct vox_nn_weights *gw2 = NULL;
    CHECK_OK(vox_nn_weights_create(ctx, net, &gw2));
    if (gw2) {
        vox_nn_graph_set_input_grads(g, false);
        objective(ctx, g, net, w, in, r);
        vox_nn_graph_zero_grad(g);
        memcpy(vox_nn_graph_grad(g, vox_net_output(net, 0))->data, r, vox_tensor_nbytes(o));
        vox_nn_graph_backward(ctx, g, w, gw2);
        for (int i = 0; i < net->n_layers; i++)
            for (int k = 0; k < 2; k++)
                if (gw->p[i][k].rank)
                    bad += memcmp(gw->p[i][k].data, gw2->p[i][k].data,
                                  vox_tensor_nbytes(&gw->p[i][k])) != 0;
        CHECK(bad == 0);
        vox_nn_graph_set_input_grads(g, true);
    }
    vox_nn_weights_destroy(gw2);
done:
    vox_free(ctx, r);
    for (int k = 0; k < 2; k++) {
        vox_tensor_free(ctx, &in[k]);
        vox_tensor_free(ctx, &gin[k]);
    }
    vox_nn_weights_destroy(w);
    vox_nn_weights_destroy(gw);
    vox_nn_graph_destroy(g);
    vox_net_destroy(net);
}

static void test_two_input_grads(struct vox_ctx *ctx)
{
    static const int64_t odd[2][3] = {{3, 5, 7}, {5, 7, 3}};
    for (int s = 0; s < (vox_test_full ? 2 : 1); s++) {
        two_input_check(ctx,
                        "input a channels=1\ninput b channels=1\n"
                        "conv ca a -> 2 kernel=1x3x3 act=elu\n"
                        "conv cb b -> 2 kernel=3x1x3 pad=same act=tanh\n"
                        "crop kb cb to=ca\nadd s ca kb\nconv e s -> 2 kernel=1x1x1\n"
                        "output o e act=sigmoid\n",
                        odd[s]);
        two_input_check(ctx,
                        "input a channels=1\ninput b channels=1\n"
                        "concat cat a b\nconv c cat -> 3 kernel=2x3x2 act=tanh\n"
                        "conv e c -> 1 kernel=1\noutput o e\n",
                        odd[s]);
    }
}

/* vox_nn_weights_seed: a source net saved to HDF5, a destination sharing some layer names
 * (with the same shapes), one name with another shape and one new name. After seeding, the
 * matching layers equal the source bit for bit, the others keep their initialisation bit for
 * bit, and seeded_out says which is which; a file sharing no layer is VOX_INVALID_ARG. */
static void test_weights_seed(struct vox_ctx *ctx)
{
    static const char src_spec[] = "input raw channels=1\n"
                                   "conv c1 raw -> 4 kernel=1x3x3 act=elu\n"
                                   "conv c2 c1 -> 4 kernel=2x3x3 act=elu\n"
                                   "conv c3 c2 -> 3 kernel=1\n"
                                   "output aff c3 act=sigmoid\n";
    static const char dst_spec[] = "input raw channels=1\n"
                                   "conv c1 raw -> 4 kernel=1x3x3 act=relu\n" /* same shape */
                                   "conv c2 c1 -> 5 kernel=2x3x3 act=elu\n"   /* other shape */
                                   "conv n2 c2 -> 4 kernel=1x3x3 act=elu\n"   /* new name */
                                   "conv c3 n2 -> 3 kernel=1\n"               /* same shape */
                                   "output aff c3 act=sigmoid\n";
    static const char none_spec[] = "input raw channels=1\nconv z raw -> 3 kernel=1\n"
                                    "output aff z act=sigmoid\n";
    char file[512];
    tmp_path(file, sizeof file, "seed.h5");
    struct vox_net *src = NULL, *dst = NULL, *none = NULL;
    struct vox_nn_weights *ws = NULL, *wd = NULL, *w0 = NULL, *wn = NULL;
    CHECK_OK(vox_net_parse(ctx, src_spec, "src.net", &src));
    CHECK_OK(vox_net_parse(ctx, dst_spec, "dst.net", &dst));
    CHECK_OK(vox_net_parse(ctx, none_spec, "none.net", &none));
    if (!src || !dst || !none)
        goto done;
    CHECK_OK(vox_nn_weights_create(ctx, src, &ws));
    CHECK_OK(vox_nn_weights_create(ctx, dst, &wd));
    CHECK_OK(vox_nn_weights_create(ctx, dst, &w0));
    CHECK_OK(vox_nn_weights_create(ctx, none, &wn));
    if (!ws || !wd || !w0 || !wn)
        goto done;
    vox_nn_weights_init(src, ws, VOX_INIT_MSRA, 1);
    for (int i = 0; i < src->n_layers; i++) /* nonzero biases, so they are checked too */
        for (int64_t e = 0; ws->p[i][VOX_P_BIAS].rank && e < ws->p[i][VOX_P_BIAS].shape[0]; e++)
            F(&ws->p[i][VOX_P_BIAS])[e] = (float)urand();
    CHECK_OK(vox_nn_weights_save(ctx, src, ws, file));
    vox_nn_weights_init(dst, wd, VOX_INIT_XAVIER, 2);
    vox_nn_weights_init(dst, w0, VOX_INIT_XAVIER, 2);
    bool seeded[8] = {false};
    CHECK(dst->n_layers <= 8);
    CHECK_OK(vox_nn_weights_seed(ctx, dst, file, wd, seeded));
    for (int i = 0; i < dst->n_layers; i++) {
        const char *name = dst->layers[i].name;
        int j = -1;
        for (int k = 0; k < src->n_layers; k++)
            if (strcmp(src->layers[k].name, name) == 0)
                j = k;
        bool want = strcmp(name, "c1") == 0 || strcmp(name, "c3") == 0;
        if (seeded[i] != want)
            fprintf(stderr, "  layer %s: seeded %d, expected %d\n", name, seeded[i], want);
        CHECK(seeded[i] == want);
        for (int p = 0; p < VOX_P_COUNT; p++) {
            const struct vox_tensor *t = &wd->p[i][p];
            if (!t->rank)
                continue;
            const struct vox_tensor *ref = want ? &ws->p[j][p] : &w0->p[i][p];
            CHECK(vox_tensor_nbytes(t) == vox_tensor_nbytes(ref));
            CHECK(memcmp(t->data, ref->data, vox_tensor_nbytes(t)) == 0);
        }
    }
    CHECK(memcmp(w0->p[1][VOX_P_WEIGHT].data, ws->p[1][VOX_P_WEIGHT].data,
                 vox_tensor_nbytes(&w0->p[1][VOX_P_WEIGHT])) != 0); /* the check can fail */
    CHECK_STATUS(vox_nn_weights_seed(ctx, none, file, wn, seeded), VOX_INVALID_ARG);
    CHECK_ERROR_HAS(file);
done:
    vox_nn_weights_destroy(ws);
    vox_nn_weights_destroy(wd);
    vox_nn_weights_destroy(w0);
    vox_nn_weights_destroy(wn);
    vox_net_destroy(src);
    vox_net_destroy(dst);
    vox_net_destroy(none);
    remove(file);
}

/* every loss, rebalanced or not, masked or not, against finite differences on the logits */
/* vox_loss_compute, or for VOX_REBALANCE_VOLUME vox_loss_compute_counts with fixed counts */
static enum vox_status loss_rb(struct vox_ctx *ctx, enum vox_loss l, enum vox_rebalance r,
                               const struct vox_tensor *x, enum vox_nn_act act,
                               const struct vox_tensor *t, const struct vox_tensor *m,
                               struct vox_tensor *g, double *loss)
{
    static const double pos[3] = {3, 1, 2.5}, neg[3] = {2, 5, 1};
    if (r == VOX_REBALANCE_VOLUME)
        return vox_loss_compute_counts(ctx, l, pos, neg, x, act, t, m, 1, g, loss);
    return vox_loss_compute(ctx, l, r, x, act, t, m, 1, g, loss);
}

static void test_loss_grads(struct vox_ctx *ctx)
{
    static const struct {
        enum vox_loss l;
        enum vox_nn_act act;
        int64_t c;
    } cases[] = {{VOX_LOSS_BCE, VOX_ACT_SIGMOID, 3},   {VOX_LOSS_SQUARE, VOX_ACT_SIGMOID, 3},
                 {VOX_LOSS_SQUARE, VOX_ACT_LINEAR, 1}, {VOX_LOSS_SQUARE, VOX_ACT_SOFTMAX, 2},
                 {VOX_LOSS_SQUARE, VOX_ACT_TANH, 2},   {VOX_LOSS_SOFTMAX, VOX_ACT_SOFTMAX, 3}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        for (int r = 0; r < VOX_REBALANCE_COUNT; r++)
            for (int masked = 0; masked < 2; masked++) {
                int64_t c = cases[k].c, xs[5] = {1, c, 2, 3, 5}, ts[4] = {c, 2, 3, 5};
                struct vox_tensor x = {0}, g = {0}, t = {0}, m = {0};
                CHECK_OK(vox_tensor_alloc(ctx, &x, VOX_F32, 5, xs));
                CHECK_OK(vox_tensor_alloc(ctx, &g, VOX_F32, 5, xs));
                CHECK_OK(vox_tensor_alloc(ctx, &t, VOX_F32, 4, ts));
                CHECK_OK(vox_tensor_alloc(ctx, &m, VOX_F32, 4, ts));
                int64_t n = vox_tensor_numel(&x), plane = n / c;
                for (int64_t e = 0; e < n; e++) {
                    F(&x)[e] = (float)(2 * urand());
                    F(&t)[e] = urand() > 0.2;
                    F(&m)[e] = masked ? urand() > -0.4 : 1;
                }
                if (cases[k].l == VOX_LOSS_SOFTMAX) /* one-hot targets */
                    for (int64_t v = 0; v < plane; v++)
                        for (int64_t j = 0; j < c; j++)
                            F(&t)[j * plane + v] = j == v % c;
                double loss, lp, lm;
                enum vox_loss l = cases[k].l;
                enum vox_rebalance rb = (enum vox_rebalance)r;
                CHECK_OK(loss_rb(ctx, l, rb, &x, cases[k].act, &t, &m, &g, &loss));
                CHECK(loss > 0);
                int bad = 0;
                for (int64_t e = 0; e < n; e++) {
                    float keep = F(&x)[e];
                    struct vox_tensor junk = {0};
                    CHECK_OK(vox_tensor_alloc(ctx, &junk, VOX_F32, 5, xs));
                    F(&x)[e] = keep + 1e-3f;
                    CHECK_OK(loss_rb(ctx, l, rb, &x, cases[k].act, &t, &m, &junk, &lp));
                    F(&x)[e] = keep - 1e-3f;
                    CHECK_OK(loss_rb(ctx, l, rb, &x, cases[k].act, &t, &m, &junk, &lm));
                    F(&x)[e] = keep;
                    double fd = (lp - lm) / ((double)(keep + 1e-3f) - (double)(keep - 1e-3f));
                    if (!(fabs(fd - F(&g)[e]) <= 1e-4 + 1e-2 * fabs(fd)) && bad++ == 0)
                        fprintf(stderr,
                                "  loss %s act %s rebalance %d mask %d: x[%lld] grad %g "
                                "fd %g\n",
                                vox_loss_str(l), vox_nn_act_str(cases[k].act), r, masked,
                                (long long)e, F(&g)[e], fd);
                    vox_tensor_free(ctx, &junk);
                }
                CHECK(bad == 0);
                vox_tensor_free(ctx, &x);
                vox_tensor_free(ctx, &g);
                vox_tensor_free(ctx, &t);
                vox_tensor_free(ctx, &m);
            }
}

/* hand-made labels: affinities and boundary targets with their masks */
static void test_targets(struct vox_ctx *ctx)
{
    /* interior 1x2x3 with margin: labels (3, 4, 5); interior row 0: 1 1 2, row 1: 1 0 2 */
    int64_t ls[3] = {3, 4, 5};
    struct vox_tensor lab = {0}, ok = {0}, t = {0}, m = {0};
    CHECK_OK(vox_tensor_alloc(ctx, &lab, VOX_U64, 3, ls));
    CHECK_OK(vox_tensor_alloc(ctx, &ok, VOX_U8, 3, ls));
    if (!lab.data || !ok.data)
        return;
    uint64_t *L = lab.data;
    uint8_t *O = ok.data;
    static const uint64_t inner[2][3] = {{1, 1, 2}, {1, 0, 2}};
    for (int64_t e = 0; e < 60; e++)
        O[e] = 1, L[e] = 9; /* margin: another cell, valid */
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 3; x++)
            L[(1 * 4 + y + 1) * 5 + x + 1] = inner[y][x];
    for (int y = 0; y < 4; y++) /* the z-below section is outside the volume */
        for (int x = 0; x < 5; x++)
            O[y * 5 + x] = 0;
    CHECK_OK(vox_train_targets(ctx, VOX_TARGET_AFFINITY, VOX_LOSS_BCE, &lab, &ok, &t, &m));
    if (t.data) {
        CHECK(t.shape[0] == 3 && t.shape[1] == 1 && t.shape[2] == 2 && t.shape[3] == 3);
        static const float ay[6] = {0, 0, 0, 1, 0, 1}, ax[6] = {0, 1, 0, 0, 0, 0};
        for (int e = 0; e < 6; e++) {
            CHECK(F(&t)[e] == 0 && F(&m)[e] == 0); /* z: neighbour outside */
            CHECK(F(&t)[6 + e] == ay[e] && F(&m)[6 + e] == 1);
            CHECK(F(&t)[12 + e] == ax[e] && F(&m)[12 + e] == 1);
        }
    }
    vox_tensor_free(ctx, &t);
    vox_tensor_free(ctx, &m);
    CHECK_OK(vox_train_targets(ctx, VOX_TARGET_BOUNDARY, VOX_LOSS_SOFTMAX, &lab, &ok, &t, &m));
    if (t.data) {
        CHECK(t.shape[0] == 2);
        for (int e = 0; e < 6; e++) /* every voxel touches the margin label 9 or label 0 */
            CHECK(F(&t)[e] == 1 && F(&t)[6 + e] == 0 && F(&m)[e] == 1);
    }
    vox_tensor_free(ctx, &t);
    vox_tensor_free(ctx, &m);
    vox_tensor_free(ctx, &lab);
    vox_tensor_free(ctx, &ok);
}

static const char tiny_net[] = "input raw channels=1\n"
                               "conv c1 raw -> 6 kernel=1x3x3 act=elu\n"
                               "conv c2 c1 -> 6 kernel=2x3x3 act=elu\n"
                               "conv c3 c2 -> 3 kernel=1\n"
                               "output aff c3 act=sigmoid\n";

/* A synthetic volume as FILE.h5:/raw and /labels. */
static void make_volume(struct vox_ctx *ctx, uint64_t seed, const int64_t shape[3],
                        const char *file)
{
    struct vox_synth_params p;
    vox_synth_defaults(&p);
    memcpy(p.shape, shape, sizeof p.shape);
    p.seed = seed;
    p.voxel_nm = 10;
    p.anisotropy = 2;
    p.cell_size_nm = 160;
    p.missing_rate = p.shift_rate = 0;
    struct vox_tensor raw = {0}, lab = {0};
    CHECK_OK(vox_synth_generate(ctx, &p, &raw, &lab, NULL, NULL));
    char spec[600];
    snprintf(spec, sizeof spec, "%s:/raw", file);
    CHECK_OK(vox_volume_save(ctx, spec, &raw, NULL));
    snprintf(spec, sizeof spec, "%s:/labels", file);
    CHECK_OK(vox_volume_save(ctx, spec, &lab, NULL));
    vox_tensor_free(ctx, &raw);
    vox_tensor_free(ctx, &lab);
}

/* Every flip/transpose keeps raw, labels and targets aligned: with raw = label (f32), a
 * sampled patch's labels at output voxel o (margin 1) equal the input at o + offset, and the
 * z, y, x affinity targets equal "input at o + offset equals input at o + offset - e_c". */
/* raw and lab saved as FILE:/raw and FILE:/labels and opened as training data (NULL when
 * that failed, reported). */
static struct vox_train_data *train_volume(struct vox_ctx *ctx, const char *file,
                                           const struct vox_tensor *raw,
                                           const struct vox_tensor *lab)
{
    char rs[600], ls[600];
    snprintf(rs, sizeof rs, "%s:/raw", file);
    snprintf(ls, sizeof ls, "%s:/labels", file);
    struct vox_train_source src = {.raw = rs, .labels = ls};
    struct vox_train_data *d = NULL;
    CHECK_OK(vox_volume_save(ctx, rs, raw, NULL));
    CHECK_OK(vox_volume_save(ctx, ls, lab, NULL));
    CHECK_OK(vox_train_data_open(ctx, &src, 1, &d));
    return d;
}

/* long-range affinity targets against a direct count: channels 0-2 are vox_train_targets',
 * channel 3 + k links v and v - o_k within the labels box (the interior and its margin), both
 * valid; links that leave the box are masked; bad offsets are refused */
static void test_long_range_targets(struct vox_ctx *ctx)
{
    const int64_t ls[3] = {6, 9, 11}, in[3] = {4, 7, 9};
    struct vox_tensor lab = {0}, ok = {0}, t = {0}, m = {0}, t3 = {0}, m3 = {0};
    CHECK_OK(vox_tensor_alloc(ctx, &lab, VOX_U64, 3, ls));
    CHECK_OK(vox_tensor_alloc(ctx, &ok, VOX_U8, 3, ls));
    if (!lab.data || !ok.data)
        goto done;
    uint64_t st = 21, *L = lab.data;
    uint8_t *V = ok.data;
    for (int64_t e = 0; e < ls[0] * ls[1] * ls[2]; e++)
        L[e] = vox_train_rand(&st) % 3, V[e] = vox_train_rand(&st) % 7 != 0;
    const int64_t off[4][3] = {{0, 3, 0}, {1, 0, -3}, {-2, -1, 4}, {0, 0, 10}};
    CHECK_OK(vox_train_affinity_targets(ctx, &lab, &ok, 4, off, &t, &m));
    CHECK_OK(vox_train_targets(ctx, VOX_TARGET_AFFINITY, VOX_LOSS_BCE, &lab, &ok, &t3, &m3));
    if (!t.data || !t3.data)
        goto done;
    const int64_t plane = in[0] * in[1] * in[2];
    CHECK(t.shape[0] == 7 && t.shape[1] == in[0] && t.shape[2] == in[1] && t.shape[3] == in[2]);
    CHECK(memcmp(t.data, t3.data, (size_t)(3 * plane) * sizeof(float)) == 0 &&
          memcmp(m.data, m3.data, (size_t)(3 * plane) * sizeof(float)) == 0);
    int64_t bad = 0, masked_out = 0;
    for (int k = 0; k < 4; k++)
        for (int64_t z = 0; z < in[0]; z++)
            for (int64_t y = 0; y < in[1]; y++)
                for (int64_t x = 0; x < in[2]; x++) {
                    const int64_t e = (z * in[1] + y) * in[2] + x;
                    const int64_t v = ((z + 1) * ls[1] + y + 1) * ls[2] + x + 1;
                    const int64_t uz = z + 1 - off[k][0], uy = y + 1 - off[k][1],
                                  ux = x + 1 - off[k][2];
                    const bool inside =
                        uz >= 0 && uz < ls[0] && uy >= 0 && uy < ls[1] && ux >= 0 && ux < ls[2];
                    const int64_t u = inside ? (uz * ls[1] + uy) * ls[2] + ux : v;
                    const float want_t = inside && L[v] && L[v] == L[u];
                    const float want_m = inside && V[v] && V[u];
                    bad += F(&t)[(3 + k) * plane + e] != want_t ||
                           F(&m)[(3 + k) * plane + e] != want_m;
                    masked_out += !inside;
                }
    CHECK(bad == 0 && masked_out > 0);
    struct vox_tensor t2 = {0}, m2 = {0};
    const int64_t zero[1][3] = {{0, 0, 0}};
    CHECK(vox_train_affinity_targets(ctx, &lab, &ok, 1, zero, &t2, &m2) == VOX_INVALID_ARG);
    CHECK(vox_train_affinity_targets(ctx, &lab, &ok, VOX_TRAIN_OFFSETS_MAX + 1, off, &t2, &m2) ==
          VOX_INVALID_ARG);
done:
    vox_tensor_free(ctx, &lab);
    vox_tensor_free(ctx, &ok);
    vox_tensor_free(ctx, &t);
    vox_tensor_free(ctx, &m);
    vox_tensor_free(ctx, &t3);
    vox_tensor_free(ctx, &m3);
}

/* volume rebalancing: the data's class counts are the volume's links counted by hand (over
 * slabs: 70 planes), and a loss with a patch's own counts is the per-patch loss, bit for bit */
static void test_rebalance_volume(struct vox_ctx *ctx)
{
    const int64_t shape[3] = {70, 9, 11};
    struct vox_tensor raw = {0}, lab = {0};
    CHECK_OK(vox_tensor_alloc(ctx, &raw, VOX_F32, 3, shape));
    CHECK_OK(vox_tensor_alloc(ctx, &lab, VOX_U64, 3, shape));
    char file[512];
    tmp_path(file, sizeof file, "rebalance.h5");
    struct vox_train_data *d = NULL;
    if (!raw.data || !lab.data)
        goto done;
    uint64_t st = 7, *L = lab.data;
    for (int64_t e = 0; e < vox_tensor_numel(&lab); e++) /* runs of labels, some 0 */
        L[e] = e % 5 == 0 ? vox_train_rand(&st) % 3 : (e > 0 ? L[e - 1] : 1), F(&raw)[e] = 0;
    d = train_volume(ctx, file, &raw, &lab);
    double pos[3], neg[3], hp[3] = {0}, hn[3] = {0};
    if (!d)
        goto done;
    CHECK_OK(vox_train_data_class_counts(ctx, d, VOX_TARGET_AFFINITY, VOX_LOSS_BCE, pos, neg));
    const int64_t step[3] = {shape[1] * shape[2], shape[2], 1};
    for (int64_t z = 0; z < shape[0]; z++)
        for (int64_t y = 0; y < shape[1]; y++)
            for (int64_t x = 0; x < shape[2]; x++) {
                const int64_t c3[3] = {z, y, x}, v = (z * shape[1] + y) * shape[2] + x;
                for (int c = 0; c < 3; c++) {
                    if (c3[c] == 0)
                        continue; /* the link leaves the volume: masked */
                    const bool p = L[v] != 0 && L[v] == L[v - step[c]];
                    p ? hp[c]++ : hn[c]++;
                }
            }
    for (int c = 0; c < 3; c++)
        CHECK(pos[c] == hp[c] && neg[c] == hn[c]);
    /* a patch's own counts as volume counts: the per-patch loss and gradient, bit for bit */
    const int64_t in[3] = {4, 7, 9}, out[3] = {4, 7, 9}, off[3] = {0, 0, 0};
    uint64_t rng = 3;
    struct vox_tensor x = {0}, l = {0}, ok = {0}, t = {0}, m = {0}, lg = {0}, g1 = {0}, g2 = {0};
    CHECK_OK(vox_train_data_sample(ctx, d, &rng, in, out, off, NULL, &x, &l, &ok));
    CHECK_OK(vox_train_targets(ctx, VOX_TARGET_AFFINITY, VOX_LOSS_BCE, &l, &ok, &t, &m));
    const int64_t xs[5] = {1, 3, out[0], out[1], out[2]};
    CHECK_OK(vox_tensor_alloc(ctx, &lg, VOX_F32, 5, xs));
    CHECK_OK(vox_tensor_alloc(ctx, &g1, VOX_F32, 5, xs));
    CHECK_OK(vox_tensor_alloc(ctx, &g2, VOX_F32, 5, xs));
    if (t.data && lg.data && g1.data && g2.data) {
        for (int64_t e = 0; e < vox_tensor_numel(&lg); e++)
            F(&lg)[e] = (float)(vox_train_uniform(&rng) * 4 - 2);
        double pp[3] = {0}, pn[3] = {0}, l1, l2, l3;
        vox_loss_class_counts(VOX_LOSS_BCE, &t, &m, pp, pn);
        CHECK_OK(vox_loss_compute(ctx, VOX_LOSS_BCE, VOX_REBALANCE_PATCH, &lg, VOX_ACT_SIGMOID, &t,
                                  &m, 1, &g1, &l1));
        CHECK_OK(vox_loss_compute_counts(ctx, VOX_LOSS_BCE, pp, pn, &lg, VOX_ACT_SIGMOID, &t, &m, 1,
                                         &g2, &l2));
        CHECK(l1 == l2 && memcmp(g1.data, g2.data, vox_tensor_nbytes(&g1)) == 0);
        /* the volume's counts weigh the patch otherwise */
        CHECK_OK(vox_loss_compute_counts(ctx, VOX_LOSS_BCE, pos, neg, &lg, VOX_ACT_SIGMOID, &t, &m,
                                         1, &g2, &l3));
        CHECK(l3 != l1);
        CHECK(vox_loss_compute(ctx, VOX_LOSS_BCE, VOX_REBALANCE_VOLUME, &lg, VOX_ACT_SIGMOID, &t,
                               &m, 1, &g1, &l1) == VOX_INVALID_ARG);
        /* the weights those counts give: 0.5 N / n each side, N / (C n_c) for softmax's class,
         * 1 where a class is absent */
        const double cp[3] = {3, 0, 1}, cn[3] = {1, 5, 4};
        double wp[3], wn[3];
        vox_loss_class_weights(VOX_LOSS_BCE, 3, cp, cn, wp, wn);
        CHECK(wp[0] == 0.5 * 4 / 3 && wn[0] == 0.5 * 4 / 1 && wp[1] == 1 && wn[1] == 1 &&
              wp[2] == 0.5 * 5 / 1 && wn[2] == 0.5 * 5 / 4);
        vox_loss_class_weights(VOX_LOSS_SOFTMAX, 3, cp, cn, wp, wn);
        CHECK(wp[0] == 4.0 / (3 * 3) && wp[2] == 5.0 / (3 * 1) && wp[1] == 1);
    }
    vox_tensor_free(ctx, &x);
    vox_tensor_free(ctx, &l);
    vox_tensor_free(ctx, &ok);
    vox_tensor_free(ctx, &t);
    vox_tensor_free(ctx, &m);
    vox_tensor_free(ctx, &lg);
    vox_tensor_free(ctx, &g1);
    vox_tensor_free(ctx, &g2);
done:
    vox_train_data_close(d);
    vox_tensor_free(ctx, &raw);
    vox_tensor_free(ctx, &lab);
    remove(file);
}

/* misaligned sections: each is the plain section shifted by at most M in y and x (edges
 * repeated), some by a nonzero shift; blurred sections: a bright voxel becomes a symmetric
 * bump that sums to 1 and falls off from its centre; rates 0 change nothing */
static void test_augment_sections(struct vox_ctx *ctx)
{
    const int64_t shape[3] = {6, 21, 23}, plane = 21 * 23;
    struct vox_tensor raw = {0}, lab = {0};
    CHECK_OK(vox_tensor_alloc(ctx, &raw, VOX_F32, 3, shape));
    CHECK_OK(vox_tensor_alloc(ctx, &lab, VOX_U64, 3, shape));
    char file[512];
    tmp_path(file, sizeof file, "augment.h5");
    struct vox_train_data *d = NULL;
    if (!raw.data || !lab.data)
        goto done;
    uint64_t st = 9;
    for (int64_t e = 0; e < vox_tensor_numel(&raw); e++)
        F(&raw)[e] = (float)vox_train_uniform(&st), ((uint64_t *)lab.data)[e] = 1;
    d = train_volume(ctx, file, &raw, &lab);
    if (!d)
        goto done;
    const int64_t off[3] = {0, 0, 0};
    struct vox_tensor a = {0}, b = {0}, l = {0}, ok = {0};
    struct vox_augment plain = {0}, mis = {.misalign_rate = 1, .misalign_max = 3};
    uint64_t r1 = 4, r2 = 4;
    CHECK_OK(vox_train_data_sample(ctx, d, &r1, shape, shape, off, &plain, &a, &l, &ok));
    vox_tensor_free(ctx, &l), vox_tensor_free(ctx, &ok);
    CHECK_OK(vox_train_data_sample(ctx, d, &r2, shape, shape, off, &mis, &b, &l, &ok));
    vox_tensor_free(ctx, &l), vox_tensor_free(ctx, &ok);
    int matched = 0, moved = 0;
    for (int64_t z = 0; a.data && b.data && z < shape[0]; z++) {
        const float *pa = F(&a) + z * plane, *pb = F(&b) + z * plane;
        bool found = false;
        for (int64_t dy = -3; dy <= 3 && !found; dy++)
            for (int64_t dx = -3; dx <= 3 && !found; dx++) {
                bool eq = true;
                for (int64_t y = 0; y < shape[1] && eq; y++)
                    for (int64_t x = 0; x < shape[2] && eq; x++) {
                        int64_t sy = y - dy, sx = x - dx;
                        sy = sy < 0 ? 0 : sy >= shape[1] ? shape[1] - 1 : sy;
                        sx = sx < 0 ? 0 : sx >= shape[2] ? shape[2] - 1 : sx;
                        eq = pb[y * shape[2] + x] == pa[sy * shape[2] + sx];
                    }
                found = eq;
                moved += eq && (dy || dx);
            }
        matched += found;
    }
    CHECK(matched == shape[0] && moved > 0);
    vox_tensor_free(ctx, &b);
    /* rates 0: the plain patch, bit for bit */
    struct vox_augment off0 = {.misalign_max = 3, .blur_sigma = 2};
    r2 = 4;
    CHECK_OK(vox_train_data_sample(ctx, d, &r2, shape, shape, off, &off0, &b, &l, &ok));
    vox_tensor_free(ctx, &l), vox_tensor_free(ctx, &ok);
    CHECK(a.data && b.data && memcmp(a.data, b.data, vox_tensor_nbytes(&a)) == 0);
    vox_tensor_free(ctx, &a), vox_tensor_free(ctx, &b);
    vox_train_data_close(d);
    d = NULL;
    /* blur: one bright voxel per section */
    for (int64_t e = 0; e < vox_tensor_numel(&raw); e++)
        F(&raw)[e] = e % plane == 10 * shape[2] + 11 ? 1.0f : 0.0f;
    d = train_volume(ctx, file, &raw, &lab);
    struct vox_augment blur = {.blur_rate = 1, .blur_sigma = 2};
    r1 = 6;
    CHECK_OK(vox_train_data_sample(ctx, d, &r1, shape, shape, off, &blur, &b, &l, &ok));
    vox_tensor_free(ctx, &l), vox_tensor_free(ctx, &ok);
    for (int64_t z = 0; b.data && z < shape[0]; z++) {
        const float *p = F(&b) + z * plane;
        double sum = 0;
        for (int64_t k = 0; k < plane; k++)
            sum += p[k];
        const float c = p[10 * shape[2] + 11];
        CHECK(fabs(sum - 1) < 1e-5 && c < 1 && c > 0);
        for (int64_t k = 1; k <= 5; k++) /* symmetric, falling off along y and x */
            CHECK(fabsf(p[(10 + k) * shape[2] + 11] - p[(10 - k) * shape[2] + 11]) < 1e-6 &&
                  fabsf(p[10 * shape[2] + 11 + k] - p[10 * shape[2] + 11 - k]) < 1e-6 &&
                  p[10 * shape[2] + 11 + k] <= p[10 * shape[2] + 11 + k - 1]);
    }
    vox_tensor_free(ctx, &b);
done:
    vox_train_data_close(d);
    vox_tensor_free(ctx, &raw);
    vox_tensor_free(ctx, &lab);
    remove(file);
}

static void test_sample_alignment(struct vox_ctx *ctx)
{
    int64_t shape[3] = {7, 11, 13};
    struct vox_tensor raw = {0}, lab = {0};
    CHECK_OK(vox_tensor_alloc(ctx, &raw, VOX_F32, 3, shape));
    CHECK_OK(vox_tensor_alloc(ctx, &lab, VOX_U64, 3, shape));
    char file[512], rs[600], ls[600];
    tmp_path(file, sizeof file, "align.h5");
    snprintf(rs, sizeof rs, "%s:/raw", file);
    snprintf(ls, sizeof ls, "%s:/labels", file);
    if (!raw.data || !lab.data)
        goto done;
    uint64_t st = 5;
    for (int64_t e = 0; e < vox_tensor_numel(&lab); e++) {
        uint64_t id = 1 + vox_train_rand(&st) % 6;
        ((uint64_t *)lab.data)[e] = id, F(&raw)[e] = (float)id;
    }
    CHECK_OK(vox_volume_save(ctx, rs, &raw, NULL));
    CHECK_OK(vox_volume_save(ctx, ls, &lab, NULL));
    struct vox_train_source src = {.raw = rs, .labels = ls};
    struct vox_train_data *d = NULL;
    CHECK_OK(vox_train_data_open(ctx, &src, 1, &d));
    const int64_t in[3] = {5, 7, 9}, out[3] = {1, 3, 5}, off[3] = {2, 2, 2};
    struct vox_augment aug = {.flips = true};
    uint64_t rng = 11;
    int64_t bad = 0;
    for (int k = 0; d && k < 64; k++) {
        struct vox_tensor x = {0}, l = {0}, ok = {0}, t = {0}, m = {0};
        CHECK_OK(vox_train_data_sample(ctx, d, &rng, in, out, off, &aug, &x, &l, &ok));
        CHECK_OK(vox_train_targets(ctx, VOX_TARGET_AFFINITY, VOX_LOSS_BCE, &l, &ok, &t, &m));
        for (int64_t z = 0; t.data && z < out[0]; z++)
            for (int64_t y = 0; y < out[1]; y++)
                for (int64_t xx = 0; xx < out[2]; xx++) {
                    const float *X = x.data;
                    int64_t v = ((z + off[0]) * in[1] + y + off[1]) * in[2] + xx + off[2];
                    int64_t lv = ((z + 1) * (out[1] + 2) + y + 1) * (out[2] + 2) + xx + 1;
                    bad += ((const uint64_t *)l.data)[lv] != (uint64_t)X[v];
                    int64_t step[3] = {in[1] * in[2], in[2], 1}, n = out[0] * out[1] * out[2];
                    int64_t e = (z * out[1] + y) * out[2] + xx;
                    for (int c = 0; c < 3; c++)
                        bad += F(&m)[c * n + e] == 1 &&
                               F(&t)[c * n + e] != (float)(X[v] == X[v - step[c]]);
                }
        vox_tensor_free(ctx, &x);
        vox_tensor_free(ctx, &l);
        vox_tensor_free(ctx, &ok);
        vox_tensor_free(ctx, &t);
        vox_tensor_free(ctx, &m);
    }
    CHECK(bad == 0);
    vox_train_data_close(d);
done:
    vox_tensor_free(ctx, &raw);
    vox_tensor_free(ctx, &lab);
    remove(file);
}

/* vox_nn_live_assign: random lifetimes (ties, points, equal sizes): no two items whose
 * [start, end] meet share a buffer, each buffer holds its items, the same buffers on a second
 * run, and a hand-made case reuses what it can (3 items, 2 buffers, one grown). */
static void test_live_assign(struct vox_ctx *ctx)
{
    (void)ctx;
    enum { N = 80 };
    struct vox_nn_live it[N], again[N];
    int order[N], end[N];
    int64_t bytes[N], bytes2[N];
    uint64_t rng = 3;
    for (int i = 0; i < N; i++) {
        rng = rng * 6364136223846793005u + 1442695040888963407u;
        it[i].start = (int)(rng >> 33) % 40;
        it[i].end = it[i].start + (int)(rng >> 45) % 12;
        it[i].bytes = (int64_t)(1 + (rng >> 20) % 4) * 1000 * (i % 7 != 0);
    }
    memcpy(again, it, sizeof it);
    const int nb = vox_nn_live_assign(it, N, order, bytes, end);
    CHECK(nb > 0 && nb < N);
    for (int i = 0; i < N; i++) {
        CHECK(it[i].bytes == 0 ? it[i].buf == -1 : it[i].buf >= 0 && it[i].buf < nb);
        if (it[i].buf >= 0)
            CHECK(bytes[it[i].buf] >= it[i].bytes);
        for (int k = 0; k < i; k++)
            if (it[i].buf >= 0 && it[i].buf == it[k].buf)
                CHECK(it[i].end < it[k].start || it[k].end < it[i].start);
    }
    CHECK(vox_nn_live_assign(again, N, order, bytes2, end) == nb);
    for (int i = 0; i < N; i++)
        CHECK(again[i].buf == it[i].buf);
    struct vox_nn_live h[3] = {{100, 0, 1, 0}, {300, 2, 3, 0}, {50, 1, 2, 0}};
    CHECK(vox_nn_live_assign(h, 3, order, bytes, end) == 2);
    CHECK(h[0].buf == h[1].buf && h[2].buf != h[0].buf && bytes[h[0].buf] == 300);
}

/* The training graph's plane passes equal their reference twins bitwise, ties included
 * (values from a small set: the first maximum in scan order takes the gradient): the
 * max-filter and its adjoint (the argmax taps kept, gathered per input; ties, -inf and NaN too),
 * max-pooling and its adjoint (on a plane whose extents are not multiples of the window; a window 2
 * wide runs 4 outputs at a time), and the relu and elu slopes. */
static void test_plane_ops(struct vox_ctx *ctx)
{
    static const struct {
        int64_t in[5], w[3], d[3];
    } cases[] = {{{1, 2, 5, 7, 9}, {2, 2, 2}, {1, 1, 1}},
                 {{2, 1, 6, 9, 8}, {2, 3, 2}, {2, 1, 3}},
                 {{1, 3, 1, 6, 11}, {1, 2, 3}, {1, 2, 1}},
                 {{1, 2, 3, 5, 21}, {2, 2, 2}, {1, 1, 1}},  /* pooled x 10: 4-wide runs, a tail */
                 {{1, 2, 3, 9, 13}, {1, 2, 2}, {1, 1, 1}}}; /* RSUNet's window, odd sizes */
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const int64_t *is = cases[k].in, *w = cases[k].w, *d = cases[k].d;
        int64_t os[5] = {is[0], is[1], 0, 0, 0}, ps[5] = {1, 1, 0, 0, 0};
        int64_t pin[5] = {1, 1, is[2], is[3], is[4]};
        for (int a = 0; a < 3; a++)
            os[2 + a] = is[2 + a] - (w[a] - 1) * d[a], ps[2 + a] = is[2 + a] / w[a];
        struct vox_tensor in = {0}, go = {0}, g1 = {0}, g2 = {0}, p1 = {0}, p2 = {0};
        CHECK_OK(vox_tensor_alloc(ctx, &in, VOX_F32, 5, is));
        CHECK_OK(vox_tensor_alloc(ctx, &go, VOX_F32, 5, os));
        CHECK_OK(vox_tensor_alloc(ctx, &g1, VOX_F32, 5, is));
        CHECK_OK(vox_tensor_alloc(ctx, &g2, VOX_F32, 5, is));
        CHECK_OK(vox_tensor_alloc(ctx, &p1, VOX_F32, 5, ps));
        CHECK_OK(vox_tensor_alloc(ctx, &p2, VOX_F32, 5, ps));
        struct vox_tensor f1 = {0}, f2 = {0};
        CHECK_OK(vox_tensor_alloc(ctx, &f1, VOX_F32, 5, os));
        CHECK_OK(vox_tensor_alloc(ctx, &f2, VOX_F32, 5, os));
        uint8_t *marg = vox_alloc(ctx, (size_t)vox_tensor_numel(&go));
        double *acc = vox_alloc(ctx, (size_t)is[4] * sizeof *acc);
        if (!in.data || !go.data || !g1.data || !g2.data || !p1.data || !p2.data || !marg || !acc ||
            !f1.data || !f2.data)
            goto next;
        uint64_t st = 7 + k;
        for (int64_t e = 0; e < vox_tensor_numel(&in); e++) {
            F(&in)[e] = (float)(vox_train_rand(&st) % 4) - 1.5f;
            F(&g1)[e] = F(&g2)[e] = (float)vox_train_uniform(&st) - 0.5f;
        }
        for (int64_t e = 0; e < vox_tensor_numel(&go); e++)
            F(&go)[e] = (float)(vox_train_uniform(&st) - 0.5) * 3.1f;
        vox_nn_ref_maxfilter(&in, w, d, &f1);
        vox_nn_plane_maxfilter(&in, w, d, &f2, NULL);
        CHECK(memcmp(f1.data, f2.data, vox_tensor_nbytes(&f1)) == 0);
        memset(f2.data, 0, vox_tensor_nbytes(&f2));
        vox_nn_plane_maxfilter(&in, w, d, &f2, marg);
        CHECK(memcmp(f1.data, f2.data, vox_tensor_nbytes(&f1)) == 0);
        vox_nn_ref_maxfilter_backward(&in, &go, w, d, &g1);
        vox_nn_plane_maxfilter_backward(&go, w, d, marg, acc, false, NULL, &g2);
        CHECK(memcmp(g1.data, g2.data, vox_tensor_nbytes(&g1)) == 0);
        /* the = form into garbage: the add into zeros; with the relu slope fused, the slope's
         * own pass after it (y = the input: signed values and zeros) */
        {
            struct vox_tensor z1 = {0}, z2 = {0};
            CHECK_OK(vox_tensor_alloc(ctx, &z1, VOX_F32, 5, is));
            CHECK_OK(vox_tensor_alloc(ctx, &z2, VOX_F32, 5, is));
            if (z1.data && z2.data) {
                memset(z1.data, 0, vox_tensor_nbytes(&z1));
                for (int64_t e = 0; e < vox_tensor_numel(&z2); e++)
                    F(&z2)[e] = 7.0f;
                vox_nn_ref_maxfilter_backward(&in, &go, w, d, &z1);
                vox_nn_plane_maxfilter_backward(&go, w, d, marg, acc, true, NULL, &z2);
                CHECK(memcmp(z1.data, z2.data, vox_tensor_nbytes(&z1)) == 0);
                const struct vox_nn_row_slope sl = {row_slope, NULL, VOX_ACT_RELU, in.data};
                vox_nn_ref_act_backward(&in, &z1, VOX_ACT_RELU, &z1);
                vox_nn_plane_maxfilter_backward(&go, w, d, marg, acc, true, &sl, &z2);
                CHECK(memcmp(z1.data, z2.data, vox_tensor_nbytes(&z1)) == 0);
            }
            vox_tensor_free(ctx, &z1);
            vox_tensor_free(ctx, &z2);
        }
        /* ties of +0 and -0, -inf and NaN: the reference's comparisons decide (the first max
         * wins, NaN never does, -FLT_MAX and tap 0 when nothing beats it) */
        struct vox_tensor sp = {0}, s1 = {0}, s2 = {0};
        CHECK_OK(vox_tensor_alloc(ctx, &sp, VOX_F32, 5, is));
        CHECK_OK(vox_tensor_alloc(ctx, &s1, VOX_F32, 5, is));
        CHECK_OK(vox_tensor_alloc(ctx, &s2, VOX_F32, 5, is));
        if (sp.data && s1.data && s2.data) {
            for (int64_t e = 0; e < vox_tensor_numel(&sp); e++)
                F(&sp)[e] = e % 7 == 3 ? NAN : e % 5 == 1 ? -INFINITY : e % 3 ? 0.0f : -0.0f;
            vox_nn_ref_maxfilter(&sp, w, d, &f1);
            vox_nn_plane_maxfilter(&sp, w, d, &f2, marg);
            CHECK(memcmp(f1.data, f2.data, vox_tensor_nbytes(&f1)) == 0);
            vox_nn_ref_maxfilter_backward(&sp, &go, w, d, &s1);
            vox_nn_plane_maxfilter_backward(&go, w, d, marg, acc, false, NULL, &s2);
            CHECK(memcmp(s1.data, s2.data, vox_tensor_nbytes(&s1)) == 0);
        }
        vox_tensor_free(ctx, &sp);
        vox_tensor_free(ctx, &s1);
        vox_tensor_free(ctx, &s2);
        /* max-pooling on the first plane; its adjoint with the pooled values as gout */
        struct vox_tensor pl = in, gl1 = g1, gl2 = g2;
        memcpy(pl.shape, pin, sizeof pin);
        memcpy(gl1.shape, pin, sizeof pin);
        memcpy(gl2.shape, pin, sizeof pin);
        uint8_t *arg = vox_alloc(ctx, (size_t)vox_tensor_numel(&p1));
        if (!arg)
            goto next;
        vox_nn_ref_maxpool(&pl, w, &p1);
        vox_nn_plane_maxpool(&pl, w, &p2, arg);
        CHECK(memcmp(p1.data, p2.data, vox_tensor_nbytes(&p1)) == 0);
        vox_nn_ref_maxpool_backward(&pl, &p1, w, &gl1);
        vox_nn_plane_maxpool_backward(&p1, w, arg, &gl2);
        CHECK(memcmp(g1.data, g2.data, vox_tensor_nbytes(&g1)) == 0);
        /* the = form into garbage: the add into zeros, bit for bit (tails included) */
        memset(gl1.data, 0, vox_tensor_nbytes(&gl1));
        for (int64_t e = 0; e < vox_tensor_numel(&gl2); e++)
            F(&gl2)[e] = 7.0f;
        vox_nn_ref_maxpool_backward(&pl, &p1, w, &gl1);
        vox_nn_plane_maxpool_backward_set(&p1, w, arg, &gl2);
        vox_free(ctx, arg);
        CHECK(memcmp(gl1.data, gl2.data, vox_tensor_nbytes(&gl1)) == 0);
        /* relu slope: y = the input (signed values and zeros), gy = g1 */
        vox_nn_ref_act_backward(&in, &g1, VOX_ACT_RELU, &g2);
        for (int64_t e = 0; e < vox_tensor_numel(&in); e++) {
            float want = (float)(F(&g1)[e] * (F(&in)[e] > 0 ? 1.0 : 0.0)); /* signed zeros */
            CHECK(memcmp(&F(&g2)[e], &want, sizeof want) == 0);
        }
        /* elu slope, y in (-1, 1): vectorised in double, the scalar expression's bits */
        for (int64_t e = 0; e < vox_tensor_numel(&in); e++)
            F(&in)[e] = (float)(vox_train_uniform(&st) * 2 - 1);
        vox_nn_ref_act_backward(&in, &g1, VOX_ACT_ELU, &g2);
        for (int64_t e = 0; e < vox_tensor_numel(&in); e++) {
            double y = F(&in)[e];
            float want = (float)(F(&g1)[e] * (y > 0 ? 1.0 : y + 1.0));
            CHECK(memcmp(&F(&g2)[e], &want, sizeof want) == 0);
        }
    next:
        vox_free(ctx, marg);
        vox_free(ctx, acc);
        vox_tensor_free(ctx, &f1);
        vox_tensor_free(ctx, &f2);
        vox_tensor_free(ctx, &in);
        vox_tensor_free(ctx, &go);
        vox_tensor_free(ctx, &g1);
        vox_tensor_free(ctx, &g2);
        vox_tensor_free(ctx, &p1);
        vox_tensor_free(ctx, &p2);
    }
}

/* An extra input smaller than the raw by an even margin (a valid net's output) is read
 * centred: with the extra equal to the raw on their common voxels, every sampled extra patch
 * equals its raw patch under every flip; an odd margin and a patch that only fits the raw
 * are clear errors. */
static void test_sample_extra_centred(struct vox_ctx *ctx)
{
    const int64_t shape[3] = {7, 11, 13}, m[3] = {1, 2, 3};
    const int64_t es[4] = {1, shape[0] - 2 * m[0], shape[1] - 2 * m[1], shape[2] - 2 * m[2]};
    const int64_t odd[3] = {shape[0], shape[1] - 1, shape[2]};
    struct vox_tensor raw = {0}, lab = {0}, ex = {0}, exo = {0};
    CHECK_OK(vox_tensor_alloc(ctx, &raw, VOX_F32, 3, shape));
    CHECK_OK(vox_tensor_alloc(ctx, &lab, VOX_U32, 3, shape));
    CHECK_OK(vox_tensor_alloc(ctx, &ex, VOX_F32, 4, es));
    CHECK_OK(vox_tensor_alloc(ctx, &exo, VOX_F32, 3, odd));
    char file[512], rs[600], ls[600], xs[600], os[600];
    tmp_path(file, sizeof file, "extra.h5");
    snprintf(rs, sizeof rs, "%s:/raw", file);
    snprintf(ls, sizeof ls, "%s:/labels", file);
    snprintf(xs, sizeof xs, "%s:/pred", file);
    snprintf(os, sizeof os, "%s:/odd", file);
    if (!raw.data || !lab.data || !ex.data || !exo.data)
        goto done;
    for (int64_t e = 0; e < vox_tensor_numel(&raw); e++)
        F(&raw)[e] = (float)e, ((uint32_t *)lab.data)[e] = 1;
    for (int64_t z = 0; z < es[1]; z++)
        for (int64_t y = 0; y < es[2]; y++)
            for (int64_t x = 0; x < es[3]; x++)
                F(&ex)
    [(z * es[2] + y) * es[3] + x] =
        (float)(((z + m[0]) * shape[1] + y + m[1]) * shape[2] + x + m[2]);
    CHECK_OK(vox_volume_save(ctx, rs, &raw, NULL));
    CHECK_OK(vox_volume_save(ctx, ls, &lab, NULL));
    CHECK_OK(vox_volume_save(ctx, xs, &ex, NULL));
    CHECK_OK(vox_volume_save(ctx, os, &exo, NULL));
    struct vox_train_source src = {.raw = rs, .labels = ls, .extra = {xs}, .n_extra = 1};
    struct vox_train_data *d = NULL;
    CHECK_OK(vox_train_data_open(ctx, &src, 1, &d));
    const int64_t in[3] = {3, 5, 5}, out[3] = {1, 3, 3}, off[3] = {1, 1, 1};
    struct vox_augment aug = {.flips = true};
    uint64_t rng = 3;
    int64_t bad = 0, seen_edge = 0;
    for (int k = 0; d && k < 64; k++) {
        struct vox_tensor x[2] = {{0}}, l = {0}, ok = {0};
        CHECK_OK(vox_train_data_sample(ctx, d, &rng, in, out, off, &aug, x, &l, &ok));
        for (int64_t e = 0; x[1].data && e < vox_tensor_numel(&x[0]); e++) {
            bad += F(&x[0])[e] != F(&x[1])[e];
            int64_t v = (int64_t)F(&x[0])[e], z = v / (shape[1] * shape[2]);
            seen_edge += z == m[0]; /* the extra's first plane is drawn too */
        }
        for (int i = 0; i < 2; i++)
            vox_tensor_free(ctx, &x[i]);
        vox_tensor_free(ctx, &l);
        vox_tensor_free(ctx, &ok);
    }
    CHECK(bad == 0);
    CHECK(seen_edge > 0);
    if (d) {
        struct vox_tensor x[2] = {{0}}, l = {0}, ok = {0};
        const int64_t big[3] = {7, 5, 5}, bout[3] = {5, 3, 3};
        CHECK(vox_train_data_sample(ctx, d, &rng, big, bout, off, NULL, x, &l, &ok) ==
              VOX_INVALID_ARG);
        CHECK_ERROR_HAS("extra inputs also cover is 5x7x7");
    }
    vox_train_data_close(d);
    src.extra[0] = os;
    d = NULL;
    CHECK(vox_train_data_open(ctx, &src, 1, &d) == VOX_INVALID_ARG);
    CHECK_ERROR_HAS("even margin");
    CHECK(d == NULL);
done:
    vox_tensor_free(ctx, &raw);
    vox_tensor_free(ctx, &lab);
    vox_tensor_free(ctx, &ex);
    vox_tensor_free(ctx, &exo);
    remove(file);
}

struct setup {
    struct vox_net *net;
    struct vox_train_data *data, *val;
    struct vox_trainer *tr;
    char file[512], vfile[512];
};

static void teardown(struct setup *s)
{
    vox_trainer_destroy(s->tr);
    vox_train_data_close(s->data);
    vox_train_data_close(s->val);
    vox_net_destroy(s->net);
    s->tr = NULL, s->data = s->val = NULL, s->net = NULL;
}

static bool setup(struct vox_ctx *ctx, struct setup *s, const struct vox_train_options *o,
                  bool make)
{
    static const int64_t shape[3] = {8, 64, 64};
    tmp_path(s->file, sizeof s->file, "train.h5");
    tmp_path(s->vfile, sizeof s->vfile, "val.h5");
    if (make) {
        make_volume(ctx, 3, shape, s->file);
        make_volume(ctx, 4, shape, s->vfile);
    }
    char raw[600], lab[600], vraw[600], vlab[600];
    snprintf(raw, sizeof raw, "%s:/raw", s->file);
    snprintf(lab, sizeof lab, "%s:/labels", s->file);
    snprintf(vraw, sizeof vraw, "%s:/raw", s->vfile);
    snprintf(vlab, sizeof vlab, "%s:/labels", s->vfile);
    struct vox_train_source src = {.raw = raw, .labels = lab}, vsrc = {.raw = vraw, .labels = vlab};
    CHECK_OK(vox_net_parse(ctx, tiny_net, "tiny.net", &s->net));
    if (s->net)
        CHECK_OK(vox_train_data_open(ctx, &src, 1, &s->data));
    if (s->data)
        CHECK_OK(vox_train_data_open(ctx, &vsrc, 1, &s->val));
    if (s->val)
        CHECK_OK(vox_trainer_create(ctx, s->net, o, NULL, s->data, &s->tr));
    return s->tr != NULL;
}

static void tiny_options(struct vox_train_options *o)
{
    vox_train_options_defaults(o);
    o->patch[0] = 3, o->patch[1] = 12, o->patch[2] = 12;
    o->optim.lr = 0.01;
    o->aug.grey_scale = 0.1, o->aug.grey_shift = 0.05;
}

/* The smallest of validation's errors over its thresholds. */
static double min_err(const double e[VOX_VAL_GRID])
{
    double m = e[0];
    for (int k = 1; k < VOX_VAL_GRID; k++)
        m = e[k] < m ? e[k] : m;
    return m;
}

/* A (C, Z, Y, X) tensor seen as the net's output (1, C, Z, Y, X). */
static struct vox_tensor as_output(const struct vox_tensor *t)
{
    struct vox_tensor o = *t;
    o.rank = 5, o.base = NULL;
    memmove(o.shape + 1, t->shape, 4 * sizeof o.shape[0]);
    memmove(o.strides + 1, t->strides, 4 * sizeof o.strides[0]);
    o.shape[0] = 1, o.strides[0] = t->shape[0] * t->strides[0];
    return o;
}

/* validation's segmentation scores: perfect affinities score 0; labels one voxel off along x
 * do not; invalid voxels are not counted; a perfect boundary map beats a flat one */
static void test_val_seg_errors(struct vox_ctx *ctx)
{
    const int64_t ls[3] = {8, 20, 22}; /* interior 6 x 18 x 20 */
    struct vox_tensor lab = {0}, off = {0}, ok = {0}, t = {0}, m = {0}, bt = {0}, bm = {0};
    CHECK_OK(vox_tensor_alloc(ctx, &lab, VOX_U64, 3, ls));
    CHECK_OK(vox_tensor_alloc(ctx, &off, VOX_U64, 3, ls));
    CHECK_OK(vox_tensor_alloc(ctx, &ok, VOX_U8, 3, ls));
    if (!lab.data || !off.data || !ok.data)
        goto done;
    uint64_t *L = lab.data, *S = off.data;
    uint8_t *V = ok.data;
    for (int64_t z = 0; z < ls[0]; z++) /* four boxes, label 0 in a strip along y */
        for (int64_t y = 0; y < ls[1]; y++)
            for (int64_t x = 0; x < ls[2]; x++) {
                const int64_t k = (z * ls[1] + y) * ls[2] + x;
                L[k] = y == 9 ? 0 : 1 + (x >= 7) + 2 * (y >= 10);
                V[k] = 1;
            }
    for (int64_t k = 0; k < ls[0] * ls[1] * ls[2]; k++) /* one voxel along x */
        S[k] = k % ls[2] + 1 < ls[2] ? L[k + 1] : L[k];
    CHECK_OK(vox_train_targets(ctx, VOX_TARGET_AFFINITY, VOX_LOSS_BCE, &lab, NULL, &t, &m));
    double e[VOX_VAL_GRID];
    if (!t.data)
        goto done;
    struct vox_tensor o = as_output(&t);
    CHECK_OK(vox_train_seg_errors(ctx, &o, VOX_TARGET_AFFINITY, &lab, NULL, e));
    CHECK(min_err(e) == 0 && e[VOX_VAL_GRID - 1] == 0);
    CHECK_OK(vox_train_seg_errors(ctx, &o, VOX_TARGET_AFFINITY, &off, NULL, e));
    CHECK(min_err(e) > 0.01);
    /* boxes 3 and 4 (y >= 10, x < 7 and x >= 7) joined by their x links: a merge error,
     * unless box 4's voxels are not valid */
    for (int64_t z = 0; z < ls[0] - 2; z++)
        for (int64_t y = 9; y < ls[1] - 2; y++)
            F(&t)[((2 * (ls[0] - 2) + z) * (ls[1] - 2) + y) * (ls[2] - 2) + 6] = 1;
    CHECK_OK(vox_train_seg_errors(ctx, &o, VOX_TARGET_AFFINITY, &lab, NULL, e));
    CHECK(min_err(e) > 0.01);
    for (int64_t k = 0; k < ls[0] * ls[1] * ls[2]; k++)
        V[k] = L[k] != 4;
    CHECK_OK(vox_train_seg_errors(ctx, &o, VOX_TARGET_AFFINITY, &lab, &ok, e));
    CHECK(min_err(e) == 0);
    /* a boundary map: the targets' against a flat 0.5 */
    CHECK_OK(vox_train_targets(ctx, VOX_TARGET_BOUNDARY, VOX_LOSS_BCE, &lab, NULL, &bt, &bm));
    if (!bt.data)
        goto done;
    struct vox_tensor b = as_output(&bt);
    CHECK_OK(vox_train_seg_errors(ctx, &b, VOX_TARGET_BOUNDARY, &lab, NULL, e));
    const double perfect = min_err(e);
    for (int64_t k = 0; k < vox_tensor_numel(&bt); k++)
        F(&bt)[k] = 0.5f;
    CHECK_OK(vox_train_seg_errors(ctx, &b, VOX_TARGET_BOUNDARY, &lab, NULL, e));
    CHECK(perfect < min_err(e) - 0.1);
    /* a label tensor of the wrong shape is refused */
    CHECK(vox_train_seg_errors(ctx, &o, VOX_TARGET_AFFINITY, &bt, NULL, e) == VOX_INVALID_ARG);
done:
    vox_tensor_free(ctx, &lab);
    vox_tensor_free(ctx, &off);
    vox_tensor_free(ctx, &ok);
    vox_tensor_free(ctx, &t);
    vox_tensor_free(ctx, &m);
    vox_tensor_free(ctx, &bt);
    vox_tensor_free(ctx, &bm);
}

/* adapted Rand error of the segmentation of the net's output on the whole val volume */
static double seg_error(struct vox_ctx *ctx, struct setup *s)
{
    char spec[600];
    struct vox_tensor raw = {0}, lab = {0}, in = {0}, aff = {0}, seg = {0};
    snprintf(spec, sizeof spec, "%s:/raw", s->vfile);
    CHECK_OK(vox_volume_load(ctx, spec, &raw, NULL));
    snprintf(spec, sizeof spec, "%s:/labels", s->vfile);
    CHECK_OK(vox_volume_load(ctx, spec, &lab, NULL));
    int64_t is[5] = {1, 1, raw.shape[0], raw.shape[1], raw.shape[2]};
    struct vox_nn_graph *g = NULL;
    CHECK_OK(vox_nn_graph_create(ctx, s->net, is + 2, NULL, &g));
    CHECK_OK(vox_tensor_alloc(ctx, &in, VOX_F32, 5, is));
    double err = 1;
    if (!g || !in.data || !lab.data)
        goto done;
    for (int64_t e = 0; e < vox_tensor_numel(&in); e++)
        F(&in)[e] = ((const uint8_t *)raw.data)[e] / 255.0f;
    CHECK_OK(vox_nn_graph_forward(ctx, g, vox_trainer_weights(s->tr), &in));
    const struct vox_tensor *o = vox_nn_graph_value(g, vox_net_output(s->net, 0));
    aff = *o; /* (3, Z, Y, X) view */
    aff.rank = 4, aff.base = NULL;
    memmove(aff.shape, o->shape + 1, 4 * sizeof aff.shape[0]);
    memmove(aff.strides, o->strides + 1, 4 * sizeof aff.strides[0]);
    struct vox_seg_params p;
    vox_seg_params_defaults(&p);
    p.nsize = 0, p.dust = 0;
    struct vox_seg_result res = {0};
    CHECK_OK(vox_segment(ctx, &aff, &p, &res));
    int64_t nf, lo[3], hi[3];
    for (int a = 0; a < 3; a++)
        lo[a] = (raw.shape[a] - aff.shape[1 + a]) / 2, hi[a] = lo[a] + aff.shape[1 + a];
    struct vox_tensor gt;
    CHECK_OK(vox_tensor_view_box(ctx, &lab, lo, hi, &gt));
    CHECK_OK(vox_tensor_alloc(ctx, &seg, VOX_U32, 3, aff.shape + 1));
    CHECK_OK(vox_merge_history_cut(ctx, &res.merges, &res.labels, 0.5, &seg, &nf));
    struct vox_contingency *t = NULL;
    struct vox_metrics m = {0};
    CHECK_OK(vox_contingency_create(ctx, &t));
    CHECK_OK(vox_contingency_add(ctx, t, &seg, &gt));
    CHECK_OK(vox_metrics_compute(ctx, t, NULL, &m));
    err = m.adapted_rand_error;
    vox_contingency_destroy(t);
    vox_seg_result_fini(ctx, &res);
done:
    vox_nn_graph_destroy(g);
    vox_tensor_free(ctx, &raw);
    vox_tensor_free(ctx, &lab);
    vox_tensor_free(ctx, &in);
    vox_tensor_free(ctx, &seg);
    return err;
}

/* the tiny affinity net learns: validation loss and segmentation both improve */
static void test_train_tiny(struct vox_ctx *ctx)
{
    struct vox_train_options o;
    tiny_options(&o);
    struct setup s = {0};
    if (!setup(ctx, &s, &o, true))
        goto done;
    double v0, v1, loss = 0;
    struct vox_val_scores c0, c1;
    CHECK_OK(vox_trainer_validate(ctx, s.tr, s.val, 8, &v0));
    CHECK_OK(vox_trainer_validate_scores(ctx, s.tr, s.val, 8, &c0));
    double e0 = seg_error(ctx, &s), t0 = vox_time_now();
    int iters = vox_test_full ? 1000 : 300;
    for (int i = 0; i < iters; i++)
        CHECK_OK(vox_trainer_step(ctx, s.tr, &loss));
    double dt = vox_time_now() - t0;
    CHECK_OK(vox_trainer_validate(ctx, s.tr, s.val, 8, &v1));
    CHECK_OK(vox_trainer_validate_scores(ctx, s.tr, s.val, 8, &c1));
    double e1 = seg_error(ctx, &s);
    printf("  tiny net: %d iterations, %.0f output voxels/s; val loss %.4f -> %.4f; adapted "
           "Rand error %.3f -> %.3f (val patches: %.3f at %.2f -> %.3f at %.2f)\n",
           iters, (double)iters * (double)vox_trainer_patch_voxels(s.tr) / dt, v0, v1, e0, e1,
           c0.rand_error, c0.threshold, c1.rand_error, c1.threshold);
    CHECK(v1 < 0.6 * v0);
    CHECK(e1 < e0 - 0.05);
    /* the scores' loss is the loss's, bit for bit (the segmentation leaves the state alone) */
    CHECK(c0.loss == v0 && c1.loss == v1);
    /* the patches' segmentations improve as the whole volume's does */
    CHECK(c1.rand_error < 0.5 * c0.rand_error && c1.rand_error >= 0 && c0.rand_error <= 1);
    CHECK(c1.threshold >= 0.05 - 1e-12 && c1.threshold <= 0.95 + 1e-12);
done:
    teardown(&s);
    remove(s.file);
    remove(s.vfile);
}

static bool weights_equal(const struct vox_nn_weights *a, const struct vox_nn_weights *b)
{
    for (int i = 0; i < a->n_layers; i++)
        for (int k = 0; k < VOX_P_COUNT; k++)
            if (a->p[i][k].rank &&
                memcmp(a->p[i][k].data, b->p[i][k].data, vox_tensor_nbytes(&a->p[i][k])) != 0)
                return false;
    return true;
}

/* 1 vs 2 threads, gradient accumulation and SGD: bitwise identical weights */
static void test_determinism(struct vox_ctx *ctx)
{
    struct vox_ctx *one = NULL;
    struct vox_ctx_options co = {.threads = 1, .log_level = VOX_LOG_WARN};
    CHECK_OK(vox_ctx_create(&co, &one));
    struct vox_train_options o;
    tiny_options(&o);
    vox_optim_defaults(VOX_OPTIM_SGD, &o.optim);
    o.optim.weight_decay = 1e-4, o.optim.anneal_every = 3, o.accumulate = 2;
    o.aug.missing_rate = 0.3;
    struct setup a = {0}, b = {0};
    if (one && setup(ctx, &a, &o, true) && setup(one, &b, &o, false)) {
        double la, lb;
        for (int i = 0; i < 6; i++) {
            CHECK_OK(vox_trainer_step(ctx, a.tr, &la));
            CHECK_OK(vox_trainer_step(one, b.tr, &lb));
            CHECK(la == lb);
        }
        CHECK(weights_equal(vox_trainer_weights(a.tr), vox_trainer_weights(b.tr)));
    }
    teardown(&a);
    teardown(&b);
    vox_ctx_destroy(one);
    remove(a.file);
    remove(a.vfile);
}

/* Fills every parameter tensor of w with values in [lo, hi). */
static void fill_params(struct vox_nn_weights *w, uint64_t *seed, double lo, double hi)
{
    for (int i = 0; i < w->n_layers; i++)
        for (int k = 0; k < VOX_P_COUNT; k++)
            for (int64_t e = 0; w->p[i][k].rank && e < vox_tensor_numel(&w->p[i][k]); e++)
                ((float *)w->p[i][k].data)[e] =
                    (float)(lo +
                            (hi - lo) * (double)(vox_test_rand(seed) >> 11) / 9007199254740992.0);
}

/* Tile 0 (the caller's) busy for 20 ms, the others nothing: the pool's other threads wait,
 * running the posted update's blocks. */
static void busy_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)arg, (void)hi, (void)tid;
    for (double end = vox_time_now() + 0.02; lo[0] == 0 && vox_time_now() < end;)
        ;
}

/* vox_optim_step on the context's threads (tensors of several blocks: 64 -> 64 3x3x3) and on
 * the calling thread against the formulas of vox/train.h written out here, element by
 * element: the same bits, for SGD and Adam, with weight decay and annealing, at steps 1 and 7;
 * batch norm's running statistics untouched. */
static void test_optim_step(struct vox_ctx *ctx)
{
    static const char spec[] = "input raw channels=64\n"
                               "conv c1 raw -> 64 kernel=3 act=relu bn=yes\n"
                               "conv c2 c1 -> 3 kernel=1\n"
                               "output aff c2 act=sigmoid\n";
    struct vox_net *net = NULL;
    CHECK_OK(vox_net_parse(ctx, spec, "optim.net", &net));
    if (!net)
        return;
    for (int kind = 0; kind < 2; kind++)
        for (int64_t t = 1; t <= 7; t += 6) {
            struct vox_nn_weights *w[4], *g, *m[4], *v[4];
            uint64_t seed = 17 + (uint64_t)t;
            CHECK_OK(vox_nn_weights_create(ctx, net, &g));
            fill_params(g, &seed, -1, 1);
            for (int c = 0; c < 4; c++) {
                CHECK_OK(vox_nn_weights_create(ctx, net, &w[c]));
                CHECK_OK(vox_nn_weights_create(ctx, net, &m[c]));
                CHECK_OK(vox_nn_weights_create(ctx, net, &v[c]));
                uint64_t s2 = 99;
                fill_params(w[c], &s2, -0.5, 0.5);
                fill_params(m[c], &s2, -0.1, 0.1);
                fill_params(v[c], &s2, 0, 0.01);
            }
            struct vox_optim_params p;
            vox_optim_defaults(kind ? VOX_OPTIM_ADAM : VOX_OPTIM_SGD, &p);
            p.weight_decay = 1e-3, p.anneal_every = 3, p.anneal_factor = 0.5;
            vox_optim_step(ctx, &p, t, w[0], g, m[0], v[0]);
            vox_optim_step(NULL, &p, t, w[1], g, m[1], v[1]);
            /* in the background: layer 1 required first, loops on the pool meanwhile (their
             * waiting threads run blocks), then the rest */
            struct vox_optim_deferred *u = NULL;
            CHECK_OK(vox_optim_deferred_create(ctx, w[3], &u));
            if (u) {
                vox_optim_post(u, &p, t, w[3], g, m[3], v[3]);
                vox_optim_require(u, 1);
                CHECK(memcmp(w[3]->p[1][VOX_P_WEIGHT].data, w[0]->p[1][VOX_P_WEIGHT].data,
                             vox_tensor_nbytes(&w[0]->p[1][VOX_P_WEIGHT])) == 0);
                vox_pool_for(vox_ctx_pool(ctx), (int64_t[3]){vox_ctx_threads(ctx), 1, 1},
                             (int64_t[3]){1, 1, 1}, VOX_SCHED_STATIC, busy_task, NULL);
                vox_optim_settle(u);
                int64_t idle, required;
                vox_optim_deferred_counts(u, &idle, &required);
                CHECK(required > 0 && idle + required > 3 * 16384 / 2048);
                CHECK(vox_ctx_threads(ctx) == 1 ? idle == 0 : idle > 0);
                vox_optim_deferred_destroy(u);
            }
            double lr = p.lr * pow(p.anneal_factor, (double)((t - 1) / p.anneal_every));
            double c1 = 1 - pow(p.beta1, (double)t), c2 = 1 - pow(p.beta2, (double)t);
            int64_t total = 0;
            for (int i = 0; i < net->n_layers; i++)
                for (int k = 0; k < VOX_P_COUNT; k++) {
                    struct vox_nn_weights *W = w[2], *M = m[2], *V = v[2];
                    const int64_t n = W->p[i][k].rank ? vox_tensor_numel(&W->p[i][k]) : 0;
                    const bool skip = k == VOX_P_BN_MEAN || k == VOX_P_BN_VAR;
                    float *wp = W->p[i][k].data, *mp = M->p[i][k].data, *vp = V->p[i][k].data;
                    const float *gp = g->p[i][k].data;
                    for (int64_t e = 0; e < n && !skip; e++) {
                        double gd = (double)gp[e] + p.weight_decay * wp[e];
                        if (!kind) {
                            double md = p.momentum * mp[e] + gd;
                            mp[e] = (float)md;
                            wp[e] = (float)(wp[e] - lr * md);
                            continue;
                        }
                        double md = p.beta1 * mp[e] + (1 - p.beta1) * gd;
                        double vd = p.beta2 * vp[e] + (1 - p.beta2) * gd * gd;
                        mp[e] = (float)md;
                        vp[e] = (float)vd;
                        wp[e] = (float)(wp[e] - lr * (md / c1) / (sqrt(vd / c2) + p.eps));
                    }
                    total += n;
                }
            CHECK(total > 3 * 16384);
            for (int c = 0; c < 4; c++)
                CHECK(c == 2 || (weights_equal(w[c], w[2]) && weights_equal(m[c], m[2]) &&
                                 weights_equal(v[c], v[2])));
            vox_nn_weights_destroy(g);
            for (int c = 0; c < 4; c++) {
                vox_nn_weights_destroy(w[c]);
                vox_nn_weights_destroy(m[c]);
                vox_nn_weights_destroy(v[c]);
            }
        }
    vox_net_destroy(net);
}

/* N steps with a checkpoint at N/2, then resume: the same weights; corrupted checkpoints */
static void test_resume_and_corruption(struct vox_ctx *ctx)
{
    struct vox_train_options o;
    tiny_options(&o);
    struct setup a = {0}, b = {0};
    char ck[512];
    tmp_path(ck, sizeof ck, "ckpt");
    double l;
    if (setup(ctx, &a, &o, true) && setup(ctx, &b, &o, false)) {
        for (int i = 0; i < 8; i++) {
            CHECK_OK(vox_trainer_step(ctx, a.tr, &l));
            if (i == 3)
                CHECK_OK(vox_trainer_save(ctx, a.tr, ck));
        }
        CHECK_OK(vox_trainer_load(ctx, b.tr, ck));
        CHECK(vox_trainer_iteration(b.tr) == 4);
        for (int i = 4; i < 8; i++)
            CHECK_OK(vox_trainer_step(ctx, b.tr, &l));
        CHECK(weights_equal(vox_trainer_weights(a.tr), vox_trainer_weights(b.tr)));
        /* flip one byte at a time in a few places: always refused, trainer untouched */
        FILE *f = fopen(ck, "r+b");
        CHECK(f != NULL);
        long size = 0;
        if (f && fseek(f, 0, SEEK_END) == 0)
            size = ftell(f);
        for (long at = 9; f && at < size; at += size / 5) {
            int c;
            fseek(f, at, SEEK_SET);
            c = fgetc(f);
            fseek(f, at, SEEK_SET);
            fputc(c ^ 0x10, f);
            fflush(f);
            CHECK_STATUS(vox_trainer_load(ctx, b.tr, ck), VOX_FORMAT);
            CHECK_ERROR_HAS("checksum");
            fseek(f, at, SEEK_SET);
            fputc(c, f);
            fflush(f);
        }
        if (f)
            fclose(f);
        CHECK(vox_trainer_iteration(b.tr) == 8);
        CHECK_OK(vox_trainer_load(ctx, b.tr, ck)); /* restored bytes: good again */
        CHECK_STATUS(vox_trainer_load(ctx, b.tr, "/nonexistent/ckpt"), VOX_IO);
        CHECK_ERROR_HAS("/nonexistent/ckpt");
    }
    teardown(&a);
    teardown(&b);
    remove(ck);
    remove(a.file);
    remove(a.vfile);
}

/* bad input: clear errors, no crash */
static void test_errors(struct vox_ctx *ctx)
{
    char file[512], spec[600], spec2[600];
    tmp_path(file, sizeof file, "bad.h5");
    int64_t s1[3] = {4, 20, 20}, s2[3] = {4, 20, 19};
    struct vox_tensor raw = {0}, lab = {0};
    CHECK_OK(vox_tensor_alloc(ctx, &raw, VOX_F32, 3, s1));
    CHECK_OK(vox_tensor_alloc(ctx, &lab, VOX_U32, 3, s2));
    if (!raw.data || !lab.data)
        goto done;
    for (int64_t e = 0; e < vox_tensor_numel(&raw); e++)
        F(&raw)[e] = e % 400 == 210 ? NAN : 0.5f; /* (z, 10, 10): in every patch */
    snprintf(spec, sizeof spec, "%s:/raw", file);
    CHECK_OK(vox_volume_save(ctx, spec, &raw, NULL));
    snprintf(spec2, sizeof spec2, "%s:/labels", file);
    CHECK_OK(vox_volume_save(ctx, spec2, &lab, NULL));
    struct vox_train_data *d = NULL;
    struct vox_train_source src = {.raw = spec, .labels = spec2};
    CHECK_STATUS(vox_train_data_open(ctx, &src, 1, &d), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("has shape 4x20x19");
    vox_tensor_free(ctx, &lab);
    CHECK_OK(vox_tensor_alloc(ctx, &lab, VOX_U32, 3, s1));
    CHECK_OK(vox_volume_save(ctx, spec2, &lab, NULL));
    CHECK_OK(vox_train_data_open(ctx, &src, 1, &d));
    struct vox_net *net = NULL;
    CHECK_OK(vox_net_parse(ctx, tiny_net, "tiny.net", &net));
    struct vox_train_options o;
    tiny_options(&o);
    struct vox_trainer *tr = NULL;
    o.patch[0] = 1;
    CHECK_STATUS(vox_trainer_create(ctx, net, &o, NULL, d, &tr), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("too small for the net's field of view");
    o.patch[0] = 3;
    o.loss = VOX_LOSS_SOFTMAX;
    CHECK_STATUS(vox_trainer_create(ctx, net, &o, NULL, d, &tr), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("needs output 'aff' with act=softmax");
    o.target = VOX_TARGET_BOUNDARY;
    CHECK_STATUS(vox_trainer_create(ctx, net, &o, NULL, d, &tr), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("has 3 channels");
    o.loss = VOX_LOSS_MALIS;
    CHECK_STATUS(vox_trainer_create(ctx, net, &o, NULL, d, &tr), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("loss malis needs target affinity, not boundary");
    o.target = VOX_TARGET_AFFINITY;
    o.loss = VOX_LOSS_BCE;
    o.patch[1] = o.patch[2] = 20;
    CHECK_OK(vox_trainer_create(ctx, net, &o, NULL, d, &tr));
    double l;
    if (tr) {
        CHECK_STATUS(vox_trainer_step(ctx, tr, &l), VOX_INVALID_ARG);
        CHECK_ERROR_HAS("the loss is nan");
        CHECK(vox_trainer_iteration(tr) == 0);
    }
    o.patch[1] = o.patch[2] = 21;
    struct vox_trainer *tr2 = NULL;
    CHECK_OK(vox_trainer_create(ctx, net, &o, NULL, d, &tr2));
    if (tr2) {
        CHECK_STATUS(vox_trainer_step(ctx, tr2, &l), VOX_INVALID_ARG);
        CHECK_ERROR_HAS("larger than every training volume");
    }
    vox_trainer_destroy(tr2);
    vox_trainer_destroy(tr);
    vox_train_data_close(d);
    vox_net_destroy(net);
done:
    vox_tensor_free(ctx, &raw);
    vox_tensor_free(ctx, &lab);
    remove(file);
}

VOX_TEST_MAIN(VOX_TEST(test_layer_grads), VOX_TEST(test_two_input_grads),
              VOX_TEST(test_weights_seed), VOX_TEST(test_loss_grads), VOX_TEST(test_targets),
              VOX_TEST(test_sample_alignment), VOX_TEST(test_long_range_targets),
              VOX_TEST(test_rebalance_volume), VOX_TEST(test_augment_sections),
              VOX_TEST(test_sample_extra_centred), VOX_TEST(test_plane_ops),
              VOX_TEST(test_live_assign), VOX_TEST(test_val_seg_errors), VOX_TEST(test_train_tiny),
              VOX_TEST(test_determinism), VOX_TEST(test_optim_step),
              VOX_TEST(test_resume_and_corruption), VOX_TEST(test_errors))
