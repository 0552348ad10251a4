/*
 * test_train_bn.c: batch norm in training mode. The reference layer (ref_bn.c) against central
 * finite differences (objective summed in double) at batch 2, odd channel counts and sizes,
 * with its statistics, eval mode and the running update against hand-computed values; then
 * the trainer on a bn=yes net: running statistics that move, bitwise identical for 1 and 2
 * threads (with accumulation), kept by checkpoint/resume and by the saved weights, where the
 * inference plan (what `vox infer` runs, batch norm folded) equals the graph's eval-mode
 * forward; validation leaves them untouched.
 */
#include "harness.h"
#include "vox/io.h"
#include "vox/synth.h"
#include "vox/train.h"

#include <unistd.h>

static float *F(const struct vox_tensor *t)
{
    return t->data;
}

static void fill(struct vox_tensor *t, uint64_t *rng, double lo, double hi)
{
    for (int64_t e = 0; e < vox_tensor_numel(t); e++)
        F(t)[e] = (float)(lo + (hi - lo) * (double)(vox_test_rand(rng) >> 11) * 0x1p-53);
}

struct bn_case {
    struct vox_tensor z, out, xhat, gy, gz, gamma, beta, ggamma, gbeta;
    double mean[8], var[8];
    enum vox_nn_act act;
};

/* L = sum r * bn(z) in double; r is gy */
static double bn_objective(struct bn_case *c)
{
    double mean[8], var[8];
    vox_nn_ref_bn_forward(NULL, &c->z, &c->gamma, &c->beta, 1e-3, c->act, true, mean, var, NULL,
                          &c->out);
    double l = 0;
    for (int64_t e = 0; e < vox_tensor_numel(&c->out); e++)
        l += (double)F(&c->gy)[e] * F(&c->out)[e];
    return l;
}

static int fd_check(struct bn_case *c, float *p, const float *grad, int64_t n, const char *what)
{
    int bad = 0;
    const double h = 1e-3;
    for (int64_t e = 0; e < n; e++) {
        float keep = p[e];
        p[e] = (float)(keep + h);
        double lp = bn_objective(c);
        p[e] = (float)(keep - h);
        double lm = bn_objective(c);
        p[e] = keep;
        double fd = (lp - lm) / ((double)(float)(keep + h) - (double)(float)(keep - h));
        if (!(fabs(fd - grad[e]) <= 1e-3 + 1e-2 * fabs(fd)) && bad++ == 0)
            fprintf(stderr, "  %s: element %lld: backward %.6g, finite difference %.6g\n", what,
                    (long long)e, grad[e], fd);
    }
    return bad;
}

static void bn_case_free(struct vox_ctx *ctx, struct bn_case *c)
{
    struct vox_tensor *t[] = {&c->z,     &c->out,  &c->xhat,   &c->gy,   &c->gz,
                              &c->gamma, &c->beta, &c->ggamma, &c->gbeta};
    for (size_t k = 0; k < sizeof t / sizeof t[0]; k++)
        vox_tensor_free(ctx, t[k]);
}

/* One shape: statistics by hand, the backward against finite differences, eval mode. */
static void bn_layer_check(struct vox_ctx *ctx, const int64_t shape[5], enum vox_nn_act act)
{
    struct bn_case c = {.act = act};
    int64_t ch = shape[1], m = shape[0] * shape[2] * shape[3] * shape[4];
    uint64_t rng = 17 + (uint64_t)ch;
    CHECK_OK(vox_tensor_alloc(ctx, &c.z, VOX_F32, 5, shape));
    CHECK_OK(vox_tensor_alloc(ctx, &c.out, VOX_F32, 5, shape));
    CHECK_OK(vox_tensor_alloc(ctx, &c.xhat, VOX_F32, 5, shape));
    CHECK_OK(vox_tensor_alloc(ctx, &c.gy, VOX_F32, 5, shape));
    CHECK_OK(vox_tensor_alloc(ctx, &c.gz, VOX_F32, 5, shape));
    CHECK_OK(vox_tensor_alloc(ctx, &c.gamma, VOX_F32, 1, &ch));
    CHECK_OK(vox_tensor_alloc(ctx, &c.beta, VOX_F32, 1, &ch));
    CHECK_OK(vox_tensor_alloc(ctx, &c.ggamma, VOX_F32, 1, &ch));
    CHECK_OK(vox_tensor_alloc(ctx, &c.gbeta, VOX_F32, 1, &ch));
    if (!c.gbeta.data)
        goto done;
    fill(&c.z, &rng, -1, 2);
    fill(&c.gy, &rng, -1, 1);
    fill(&c.gamma, &rng, 0.5, 1.5);
    fill(&c.beta, &rng, -0.3, 0.3);
    /* the batch statistics and xhat by hand (biased variance, over n, z, y, x) */
    vox_nn_ref_bn_forward(NULL, &c.z, &c.gamma, &c.beta, 1e-3, act, true, c.mean, c.var, &c.xhat,
                          &c.out);
    int64_t plane = shape[2] * shape[3] * shape[4];
    for (int64_t k = 0; k < ch; k++) {
        double s = 0, q = 0;
        for (int64_t n = 0; n < shape[0]; n++)
            for (int64_t e = 0; e < plane; e++)
                s += F(&c.z)[(n * ch + k) * plane + e];
        for (int64_t n = 0; n < shape[0]; n++)
            for (int64_t e = 0; e < plane; e++)
                q += pow(F(&c.z)[(n * ch + k) * plane + e] - s / (double)m, 2);
        CHECK_NEAR(c.mean[k], s / (double)m, 1e-12);
        CHECK_NEAR(c.var[k], q / (double)m, 1e-12);
        int64_t e0 = ((shape[0] - 1) * ch + k) * plane + plane - 1;
        CHECK_NEAR(F(&c.xhat)[e0], (F(&c.z)[e0] - c.mean[k]) / sqrt(c.var[k] + 1e-3), 1e-6);
    }
    /* backward: z, gamma, beta against finite differences; gy is the objective's weight.
     * With an activation the objective's gradient is gy times its slope: use linear. */
    if (act == VOX_ACT_LINEAR) {
        memset(c.ggamma.data, 0, vox_tensor_nbytes(&c.ggamma));
        memset(c.gbeta.data, 0, vox_tensor_nbytes(&c.gbeta));
        vox_nn_ref_bn_backward(NULL, &c.xhat, &c.gy, &c.gamma, c.var, 1e-3, &c.gz, &c.ggamma,
                               &c.gbeta);
        int bad = fd_check(&c, F(&c.z), F(&c.gz), vox_tensor_numel(&c.z), "z");
        bad += fd_check(&c, F(&c.gamma), F(&c.ggamma), ch, "gamma");
        bad += fd_check(&c, F(&c.beta), F(&c.gbeta), ch, "beta");
        CHECK(bad == 0);
    }
    /* eval mode: the given statistics, act(gamma (z - mean) / sqrt(var + eps) + beta) */
    double rm[8], rv[8];
    for (int64_t k = 0; k < ch; k++)
        rm[k] = 0.1 * (double)k - 0.2, rv[k] = 0.5 + 0.25 * (double)k;
    vox_nn_ref_bn_forward(NULL, &c.z, &c.gamma, &c.beta, 1e-3, VOX_ACT_TANH, false, rm, rv, NULL,
                          &c.out);
    int64_t k1 = 1 % ch, e1 = k1 * plane + plane / 2; /* n = 0, channel 1 (or 0) */
    double want =
        tanh(F(&c.gamma)[k1] * (F(&c.z)[e1] - rm[k1]) / sqrt(rv[k1] + 1e-3) + F(&c.beta)[k1]);
    CHECK_NEAR(F(&c.out)[e1], want, 1e-6);
    CHECK(rm[k1] == 0.1 * (double)k1 - 0.2); /* read, not written */
done:
    bn_case_free(ctx, &c);
}

static void test_bn_layer(struct vox_ctx *ctx)
{
    static const int64_t shapes[][5] = {{2, 3, 3, 5, 3}, {1, 5, 1, 3, 7}, {2, 1, 1, 1, 3}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        bn_layer_check(ctx, shapes[s], VOX_ACT_LINEAR);
        bn_layer_check(ctx, shapes[s], VOX_ACT_ELU);
    }
    /* running statistics: PyTorch's momentum 0.1 and unbiased variance, by hand */
    int64_t two = 2;
    struct vox_tensor rm = {0}, rv = {0};
    CHECK_OK(vox_tensor_alloc(ctx, &rm, VOX_F32, 1, &two));
    CHECK_OK(vox_tensor_alloc(ctx, &rv, VOX_F32, 1, &two));
    if (rm.data && rv.data) {
        F(&rm)[0] = 0.5f, F(&rm)[1] = -1, F(&rv)[0] = 2, F(&rv)[1] = 1;
        const double mean[2] = {1, 3}, var[2] = {0.8, 4};
        vox_nn_bn_running_update(mean, var, 2, 5, &rm, &rv);
        CHECK(F(&rm)[0] == (float)(0.9 * 0.5 + 0.1 * 1));
        CHECK(F(&rm)[1] == (float)(0.9 * -1 + 0.1 * 3));
        CHECK(F(&rv)[0] == (float)(0.9 * 2 + 0.1 * 0.8 * 5 / 4));
        CHECK(F(&rv)[1] == (float)(0.9 * 1 + 0.1 * 4 * 5 / 4));
    }
    vox_tensor_free(ctx, &rm);
    vox_tensor_free(ctx, &rv);
}

static const char bn_net[] = "input raw channels=1\n"
                             "conv c1 raw -> 5 kernel=1x3x3 bn=yes act=elu\n"
                             "conv c2 c1 -> 3 kernel=2x3x3 bias=no bn=yes eps=1e-3 act=tanh\n"
                             "conv c3 c2 -> 3 kernel=1\n"
                             "output aff c3 act=sigmoid\n";

struct rig {
    char file[256], raw[300], lab[300];
    struct vox_net *net;
    struct vox_train_data *data;
};

static bool rig_open(struct vox_ctx *ctx, struct rig *r)
{
    snprintf(r->file, sizeof r->file, "/tmp/vox_test_train_bn_%ld.h5", (long)getpid());
    snprintf(r->raw, sizeof r->raw, "%s:/raw", r->file);
    snprintf(r->lab, sizeof r->lab, "%s:/labels", r->file);
    struct vox_synth_params p;
    vox_synth_defaults(&p);
    p.shape[0] = 6, p.shape[1] = 40, p.shape[2] = 40;
    p.seed = 9;
    struct vox_tensor raw = {0}, lab = {0};
    CHECK_OK(vox_synth_generate(ctx, &p, &raw, &lab, NULL, NULL));
    CHECK_OK(vox_volume_save(ctx, r->raw, &raw, NULL));
    CHECK_OK(vox_volume_save(ctx, r->lab, &lab, NULL));
    vox_tensor_free(ctx, &raw);
    vox_tensor_free(ctx, &lab);
    struct vox_train_source src = {.raw = r->raw, .labels = r->lab};
    CHECK_OK(vox_net_parse(ctx, bn_net, "bn.net", &r->net));
    if (r->net)
        CHECK_OK(vox_train_data_open(ctx, &src, 1, &r->data));
    return r->data != NULL;
}

static void rig_close(struct rig *r)
{
    vox_train_data_close(r->data);
    vox_net_destroy(r->net);
    remove(r->file);
}

static void bn_options(struct vox_train_options *o)
{
    vox_train_options_defaults(o);
    o->patch[0] = 3, o->patch[1] = 11, o->patch[2] = 13;
    o->accumulate = 2;
    o->optim.lr = 0.01;
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

/* 1 vs 2 threads with accumulation: bitwise identical weights and running statistics, which
 * moved; validation does not touch them; resume from a checkpoint keeps them */
static void test_bn_trainer(struct vox_ctx *ctx)
{
    struct rig r = {0};
    struct vox_ctx *one = NULL;
    struct vox_ctx_options co = {.threads = 1, .log_level = VOX_LOG_WARN};
    struct vox_trainer *a = NULL, *b = NULL, *c = NULL;
    char ck[300];
    snprintf(ck, sizeof ck, "/tmp/vox_test_train_bn_%ld.ckpt", (long)getpid());
    CHECK_OK(vox_ctx_create(&co, &one));
    if (!one || !rig_open(ctx, &r))
        goto done;
    struct vox_train_options o;
    bn_options(&o);
    CHECK_OK(vox_trainer_create(ctx, r.net, &o, NULL, r.data, &a));
    CHECK_OK(vox_trainer_create(one, r.net, &o, NULL, r.data, &b));
    CHECK_OK(vox_trainer_create(ctx, r.net, &o, NULL, r.data, &c));
    if (!a || !b || !c)
        goto done;
    double la, lb;
    for (int i = 0; i < 4; i++) {
        CHECK_OK(vox_trainer_step(ctx, a, &la));
        CHECK_OK(vox_trainer_step(one, b, &lb));
        CHECK(la == lb);
        if (i == 1)
            CHECK_OK(vox_trainer_save(ctx, a, ck));
    }
    const struct vox_nn_weights *wa = vox_trainer_weights(a);
    CHECK(weights_equal(wa, vox_trainer_weights(b)));
    /* 4 steps x 2 patches from mean 0 / var 1: 0.9^8 of the start is left */
    CHECK(F(&wa->p[1][VOX_P_BN_MEAN])[0] != 0 && F(&wa->p[2][VOX_P_BN_VAR])[2] != 1);
    CHECK(F(&wa->p[1][VOX_P_BN_WEIGHT])[0] != 1 && F(&wa->p[2][VOX_P_BN_BIAS])[1] != 0);
    double v;
    CHECK_OK(vox_trainer_validate(ctx, a, r.data, 2, &v));
    CHECK(weights_equal(wa, vox_trainer_weights(b)));
    CHECK_OK(vox_trainer_load(ctx, c, ck));
    for (int i = 2; i < 4; i++)
        CHECK_OK(vox_trainer_step(ctx, c, &la));
    CHECK(weights_equal(wa, vox_trainer_weights(c)));
done:
    vox_trainer_destroy(a);
    vox_trainer_destroy(b);
    vox_trainer_destroy(c);
    vox_ctx_destroy(one);
    rig_close(&r);
    remove(ck);
}

/* After training, the saved weights through the inference plan (batch norm folded, as in
 * `vox infer`) equal the graph's eval-mode forward (running statistics), and differ from
 * the training-mode forward (batch statistics). */
static void test_bn_infer(struct vox_ctx *ctx)
{
    struct rig r = {0};
    struct vox_trainer *tr = NULL;
    struct vox_nn_weights *w = NULL;
    struct vox_nn_plan *plan = NULL;
    struct vox_nn_graph *g = NULL;
    struct vox_tensor in = {0};
    char wf[300];
    snprintf(wf, sizeof wf, "/tmp/vox_test_train_bn_%ld_w.h5", (long)getpid());
    if (!rig_open(ctx, &r))
        goto done;
    struct vox_train_options o;
    bn_options(&o);
    CHECK_OK(vox_trainer_create(ctx, r.net, &o, NULL, r.data, &tr));
    double l;
    for (int i = 0; tr && i < 3; i++)
        CHECK_OK(vox_trainer_step(ctx, tr, &l));
    if (!tr)
        goto done;
    CHECK_OK(vox_nn_weights_save(ctx, r.net, vox_trainer_weights(tr), wf));
    CHECK_OK(vox_nn_weights_load(ctx, r.net, wf, &w));
    const int64_t patch[3] = {4, 9, 10}, shape[5] = {1, 1, 4, 9, 10};
    CHECK_OK(vox_tensor_alloc(ctx, &in, VOX_F32, 5, shape));
    if (!w || !in.data)
        goto done;
    uint64_t rng = 3;
    fill(&in, &rng, 0, 1);
    CHECK_OK(vox_nn_plan_create(ctx, r.net, w, patch, &plan));
    CHECK_OK(vox_nn_graph_create(ctx, r.net, patch, NULL, &g));
    if (!plan || !g)
        goto done;
    CHECK_OK(vox_nn_plan_forward(ctx, plan, &in));
    vox_nn_graph_set_eval(g, true);
    CHECK_OK(vox_nn_graph_forward(ctx, g, w, &in));
    const struct vox_tensor *po = vox_nn_plan_output(plan, 0);
    const struct vox_tensor *go = vox_nn_graph_value(g, vox_net_output(r.net, 0));
    double err = 0, moved = 0;
    for (int64_t e = 0; e < vox_tensor_numel(po); e++)
        err = fmax(err, fabs(F(po)[e] - F(go)[e]));
    vox_nn_graph_set_eval(g, false);
    CHECK_OK(vox_nn_graph_forward(ctx, g, w, &in));
    for (int64_t e = 0; e < vox_tensor_numel(po); e++)
        moved = fmax(moved, fabs(F(po)[e] - F(go)[e]));
    CHECK(err < 1e-5);
    CHECK(moved > 1e-3);
done:
    vox_nn_graph_destroy(g);
    vox_nn_plan_destroy(plan);
    vox_tensor_free(ctx, &in);
    vox_nn_weights_destroy(w);
    vox_trainer_destroy(tr);
    rig_close(&r);
    remove(wf);
}

/* a bn=yes conv with one output voxel has no batch variance: refused, naming the layer */
static void test_bn_errors(struct vox_ctx *ctx)
{
    struct vox_net *net = NULL;
    struct vox_nn_graph *g = NULL;
    CHECK_OK(vox_net_parse(ctx,
                           "input i channels=1\nconv c i -> 2 kernel=1x3x3 bn=yes\n"
                           "output o c\n",
                           "one.net", &net));
    const int64_t patch[3] = {1, 3, 3};
    if (net)
        CHECK_STATUS(vox_nn_graph_create(ctx, net, patch, NULL, &g), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("one.net:2: layer 'c' has bn=yes and an output of 1x1x1 voxels");
    CHECK(g == NULL);
    vox_net_destroy(net);
}

VOX_TEST_MAIN(VOX_TEST(test_bn_layer), VOX_TEST(test_bn_trainer), VOX_TEST(test_bn_infer),
              VOX_TEST(test_bn_errors))
