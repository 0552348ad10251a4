/*
 * test_nn.c: the network spec parser, shape inference and field of view of the shipped nets,
 * every reference layer on hand-computed cases, weights through HDF5, the forward pass
 * (buffer reuse, 1 vs 2 threads, allocation failures) and parser robustness on garbage.
 */
#include "harness.h"
#include "nn_test_nets.h"
#include "vox/io.h"
#include "vox/nn.h"

#include <unistd.h>

static const char all_layers[] =
    "# every layer type\n"
    "input  raw  channels=2\n"
    "conv   c1   raw -> 4  kernel=1x3x3 pad=valid act=relu   # a comment\n"
    "conv   c2   c1 -> 4   kernel=3 dilation=1x2x2 pad=same bn=yes eps=1e-3 act=elu\n"
    "pool   p1   c2        window=1x2x2\n"
    "maxfilter mf p1 window=1x2x2 dilation=1x1x1\n"
    "upsample u1 mf factor=1x2x2\n"
    "deconv d1   mf -> 3   kernel=1x2x2 bias=no act=tanh\n"
    "crop   k1   c2 to=u1\n"
    "crop   k2   c2 margin=0x1x1\n"
    "concat cat  k1 u1\n"
    "add    s    k1 u1 act=relu\n"
    "softmax sm  d1\n"
    "act    a1   s fn=sigmoid\n"
    "output o1   cat act=sigmoid\n"
    "output o2   sm\n";

static void test_parse_good(struct vox_ctx *ctx)
{
    struct vox_net *net = parse(ctx, all_layers);
    if (!net)
        return;
    CHECK(net->n_layers == 15 && net->n_inputs == 1 && net->n_outputs == 2);
    const struct vox_nn_layer *c2 = &net->layers[vox_net_find(net, "c2")];
    CHECK(c2->kind == VOX_NN_CONV && c2->same && c2->bn && c2->bias && c2->act == VOX_ACT_ELU);
    CHECK(c2->kernel[0] == 3 && c2->kernel[2] == 3 && c2->dilation[1] == 2 && c2->channels == 4);
    CHECK_NEAR(c2->bn_eps, 1e-3, 0);
    const struct vox_nn_layer *cat = &net->layers[vox_net_find(net, "cat")];
    CHECK(cat->kind == VOX_NN_CONCAT && cat->channels == 8 && cat->n_in == 2);
    const struct vox_nn_layer *k1 = &net->layers[vox_net_find(net, "k1")];
    CHECK(k1->crop_to == vox_net_find(net, "u1") && k1->n_in == 2);
    CHECK(net->layers[vox_net_find(net, "sm")].act == VOX_ACT_SOFTMAX);
    CHECK(net->layers[vox_net_find(net, "d1")].channels == 3);
    CHECK(vox_net_output(net, 1) == vox_net_find(net, "o2"));
    /* shapes at 2x12x12: c1 2x10x10, c2 same, p1 2x5x5, mf 2x4x4, u1 2x8x8, d1 2x8x8 */
    struct vox_nn_dims d[15];
    CHECK_OK(vox_net_shapes(ctx, net, (int64_t[]){2, 12, 12}, d));
    int64_t want[][4] = {{2, 2, 12, 12}, {4, 2, 10, 10}, {4, 2, 10, 10}, {4, 2, 5, 5},
                         {4, 2, 4, 4},   {4, 2, 8, 8},   {3, 2, 8, 8},   {4, 2, 8, 8},
                         {4, 2, 8, 8},   {8, 2, 8, 8},   {4, 2, 8, 8}};
    for (int i = 0; i < 11; i++)
        for (int a = 0; a < 4; a++)
            CHECK(d[i].shape[a] == want[i][a]);
    vox_net_destroy(net);
}

static void test_parse_errors(struct vox_ctx *ctx)
{
    static const struct {
        const char *text, *needle;
    } cases[] = {
        {"input raw channels=1\nconvv c1 raw -> 2 kernel=3\n",
         "t.net:2:1: unknown layer type 'convv'"},
        {"input raw channels=1\n  conv c3 p2 -> 2 kernel=3\n",
         "t.net:2:11: conv 'c3' input 'p2' is not defined"},
        {"input raw channels=1\nconv c1 raw -> 2 kernel=3x3\noutput o c1\n",
         "t.net:2:25: conv 'c1': bad value '3x3' for kernel"},
        {"input raw channels=1\nconv c1 raw kernel=3\n", "t.net:2:1: conv 'c1' needs '-> "},
        {"input raw channels=1\nconv c1 raw -> 2\n", "t.net:2:1: conv 'c1' needs kernel="},
        {"input raw channels=1\nconv c1 raw -> 2 kernel=3 act=foo\n",
         "t.net:2:31: conv 'c1': bad value 'foo' for act"},
        {"input raw channels=1\npool p raw window=2 foo=1\n",
         "t.net:2:21: unknown parameter 'foo' for pool"},
        {"input raw channels=1\ninput raw channels=2\n", "t.net:2:7: 'raw' is already defined"},
        {"input raw channels=1\nadd s raw\n", "t.net:2:1: add 's' needs 2 inputs, got 1"},
        {"input raw channels=1\nconv c raw -> 2 kernel=1 kernel=1\n",
         "t.net:2:26: parameter 'kernel' is given twice"},
        {"input raw channels=1\nconv c raw -> 2 kernel=1 pad=full\n",
         "bad value 'full' for pad (expected valid or same)"},
        {"input raw channels=1\ncrop k raw\n", "t.net:2:1: crop 'k' needs to=TENSOR"},
        {"input raw channels=1\ncrop k raw to=zz\n", "t.net:2:15: crop 'k' reference 'zz'"},
        {"input raw channels=1\nconv c raw -> 2 kernel=1 act=softmax\n", "bad value 'softmax'"},
        {"input raw channels=1\n", "t.net:1:1: the net has no output statement"},
        {"output o raw\n", "t.net:1:10: output 'o' input 'raw' is not defined"},
        {"input 9raw channels=1\n", "t.net:1:7: bad name '9raw'"},
        {"input raw channels=1\nconv c raw -> 2 kernel=1\nconv d c -> 3 kernel=1\nadd s c d\n",
         "t.net:4:1: add 's': 'c' has 2 channels, 'd' has 3"},
        {"input raw channels=1\noutput o raw\nconv c o -> 1 kernel=1\n", "reads output 'o'"},
        {"input raw channels=0\n", "t.net:1:20: input 'raw': bad value '0' for channels"},
        {"input raw channels=1\nconv c raw -> x kernel=1\n",
         "t.net:2:15: conv 'c': expected the output channels after '->'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct vox_net *net = (struct vox_net *)1;
        CHECK_STATUS(vox_net_parse(ctx, cases[i].text, "t.net", &net), VOX_FORMAT);
        CHECK(net == NULL);
        CHECK_ERROR_HAS(cases[i].needle);
    }
    struct vox_net *net;
    CHECK_STATUS(vox_net_load(ctx, "/nonexistent/x.net", &net), VOX_IO);
    CHECK_ERROR_HAS("/nonexistent/x.net");
}

static void test_shape_errors(struct vox_ctx *ctx)
{
    struct vox_net *net = parse(ctx, "input a channels=1\nconv b a -> 2 kernel=1x3x3\n"
                                     "conv c a -> 2 kernel=1x1x1\nadd s b c\noutput o s\n");
    struct vox_nn_dims d[5];
    CHECK_STATUS(vox_net_shapes(ctx, net, (int64_t[]){1, 8, 8}, d), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("add 's': 'b' is 2x1x6x6 but 'c' is 2x1x8x8");
    vox_net_destroy(net);
    net = parse(ctx, "input a channels=1\npool p a window=1x2x2\noutput o p\n");
    CHECK_STATUS(vox_net_shapes(ctx, net, (int64_t[]){1, 7, 8}, d), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("pool 'p': input 'a' is 1x7x8, not divisible by the window 1x2x2");
    vox_net_destroy(net);
}

struct fov_case {
    const char *file;
    int64_t fov[3], patch[3], out[4];
};

static void test_shipped_nets(struct vox_ctx *ctx)
{
    /* hand-computed: N4 = 1 + 3+1 + 8+2 + 12+4 + 24+8 + 32 = 95 (each max-filter doubles the
     * dilation); n337 backwards from 1: +2*4 = 9, *2 = 18, +2, *2 = 40, +2, *2 = 84, +1 = 85 */
    static const struct fov_case cases[] = {
        {"n4.net", {1, 95, 95}, {1, 100, 100}, {2, 1, 6, 6}},
        {"vd2d.net", {1, 109, 109}, {1, 208, 208}, {2, 1, 100, 100}},
        {"vd2d3d.net", {5, 85, 85}, {9, 169, 169}, {2, 5, 85, 85}},
        {"n337.net", {85, 85, 85}, {93, 85, 101}, {3, 2, 1, 3}},
        {"n537.net", {163, 163, 163}, {171, 163, 163}, {3, 2, 1, 1}},
        {"n726.net", {117, 117, 117}, {121, 117, 117}, {3, 2, 1, 1}},
        {"n926.net", {155, 155, 155}, {159, 155, 155}, {3, 2, 1, 1}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct fov_case *c = &cases[i];
        struct vox_net *net = shipped(ctx, c->file);
        if (!net)
            continue;
        struct vox_nn_dims *d = vox_alloc(ctx, (size_t)net->n_layers * sizeof *d);
        CHECK_OK(vox_net_shapes(ctx, net, c->patch, d));
        int64_t fov[3], off[3];
        vox_net_fov(net, d, fov, off);
        const struct vox_nn_dims *o = &d[vox_net_output(net, 0)];
        for (int a = 0; a < 4; a++)
            CHECK(o->shape[a] == c->out[a]);
        for (int a = 0; a < 3; a++) {
            CHECK(fov[a] == c->fov[a]);
            CHECK(off[a] == (c->fov[a] - 1) / 2);
        }
        int64_t small[3] = {c->fov[0], c->fov[1] - 1, c->fov[2]};
        CHECK_STATUS(vox_net_shapes(ctx, net, small, d), VOX_INVALID_ARG);
        CHECK_ERROR_HAS("smaller than the field of view");
        vox_free(ctx, d);
        vox_net_destroy(net);
    }
    struct vox_net *net = shipped(ctx, "rsunet.net");
    if (!net)
        return;
    struct vox_nn_dims *d = vox_alloc(ctx, (size_t)net->n_layers * sizeof *d);
    CHECK_OK(vox_net_shapes(ctx, net, (int64_t[]){4, 32, 48}, d));
    const struct vox_nn_dims *o = &d[vox_net_output(net, 0)];
    CHECK(o->shape[0] == 3 && o->shape[1] == 4 && o->shape[2] == 32 && o->shape[3] == 48);
    int64_t fov[3], off[3];
    vox_net_fov(net, d, fov, off);
    CHECK(off[0] == 0); /* same padding, no pooling in z: centred */
    CHECK(d[vox_net_find(net, "down3")].shape[0] == 128 &&
          d[vox_net_find(net, "down3")].shape[2] == 4);
    CHECK_STATUS(vox_net_shapes(ctx, net, (int64_t[]){4, 36, 48}, d), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("not divisible by the window");
    vox_free(ctx, d);
    vox_net_destroy(net);
}

/* ---- reference layers ---------------------------------------------------------------------- */

static struct vox_tensor t5(struct vox_ctx *ctx, int64_t n, int64_t c, int64_t z, int64_t y,
                            int64_t x)
{
    struct vox_tensor t = {0};
    CHECK_OK(vox_tensor_alloc(ctx, &t, VOX_F32, 5, (int64_t[]){n, c, z, y, x}));
    return t;
}

static float *F(struct vox_tensor *t)
{
    return t->data;
}

static float at(struct vox_tensor *t, int64_t c, int64_t z, int64_t y, int64_t x)
{
    return F(t)[((c * t->shape[2] + z) * t->shape[3] + y) * t->shape[4] + x];
}

static void test_ref_conv_impulse(struct vox_ctx *ctx)
{
    /* an impulse at p gives out[z,y,x] = w[p - (z,y,x) + pad] (cross-correlation) */
    struct vox_tensor in = t5(ctx, 1, 1, 3, 5, 6), w = t5(ctx, 2, 1, 3, 3, 3);
    struct vox_tensor b = {0}, out = t5(ctx, 1, 2, 3, 5, 6);
    CHECK_OK(vox_tensor_alloc(ctx, &b, VOX_F32, 1, (int64_t[]){2}));
    F(&b)[0] = 0.5f;
    F(&b)[1] = -1.0f;
    for (int64_t i = 0; i < 54; i++)
        F(&w)[i] = (float)(i + 1);
    F(&in)[(1 * 5 + 2) * 6 + 3] = 1.0f; /* impulse at (1, 2, 3) */
    int64_t dil[3] = {1, 1, 1}, pad[3] = {1, 1, 1};
    vox_nn_ref_conv(vox_ctx_pool(ctx), &in, &w, &b, dil, pad, VOX_ACT_LINEAR, &out);
    for (int64_t o = 0; o < 2; o++)
        for (int64_t z = 0; z < 3; z++)
            for (int64_t y = 0; y < 5; y++)
                for (int64_t x = 0; x < 6; x++) {
                    int64_t a = 1 - z + 1, bb = 2 - y + 1, c = 3 - x + 1;
                    double want = o == 0 ? 0.5 : -1.0;
                    if (a >= 0 && a < 3 && bb >= 0 && bb < 3 && c >= 0 && c < 3)
                        want += F(&w)[((o * 3 + a) * 3 + bb) * 3 + c];
                    CHECK_NEAR(at(&out, o, z, y, x), want, 0);
                }
    /* valid, dilated 2 in x, relu: out is 3-2 x 5-2 x 6-4 */
    struct vox_tensor v = t5(ctx, 1, 2, 1, 3, 2);
    int64_t dil2[3] = {1, 1, 2}, nopad[3] = {0, 0, 0};
    vox_nn_ref_conv(NULL, &in, &w, &b, dil2, nopad, VOX_ACT_RELU, &v);
    /* out(0,y,x) sees in(a, y+b, x+2c): the impulse is hit when a=1, b=2-y, 2c=3-x */
    for (int64_t y = 0; y < 3; y++)
        for (int64_t x = 0; x < 2; x++) {
            int64_t bb = 2 - y, c2 = 3 - x;
            double w0 = (bb >= 0 && bb < 3 && c2 % 2 == 0 && c2 / 2 < 3)
                            ? F(&w)[(1 * 3 + bb) * 3 + c2 / 2]
                            : 0;
            double w1 = (bb >= 0 && bb < 3 && c2 % 2 == 0 && c2 / 2 < 3)
                            ? F(&w)[((3 + 1) * 3 + bb) * 3 + c2 / 2]
                            : 0;
            CHECK_NEAR(at(&v, 0, 0, y, x), w0 + 0.5, 0);
            CHECK_NEAR(at(&v, 1, 0, y, x), w1 - 1 > 0 ? w1 - 1 : 0, 0);
        }
    vox_tensor_free(ctx, &in);
    vox_tensor_free(ctx, &w);
    vox_tensor_free(ctx, &b);
    vox_tensor_free(ctx, &out);
    vox_tensor_free(ctx, &v);
}

static void test_ref_deconv(struct vox_ctx *ctx)
{
    /* (I=2, O=1, 1x2x2): each input voxel scatters sum_i in_i * w[i,0] into its 1x2x2 block */
    struct vox_tensor in = t5(ctx, 1, 2, 1, 2, 1), w = t5(ctx, 2, 1, 1, 2, 2);
    struct vox_tensor out = t5(ctx, 1, 1, 1, 4, 2);
    for (int i = 0; i < 8; i++)
        F(&w)[i] = (float)(i + 1);
    F(&in)[0] = 1; /* i=0, y=0 */
    F(&in)[3] = 2; /* i=1, y=1 */
    vox_nn_ref_deconv(NULL, &in, &w, NULL, VOX_ACT_LINEAR, &out);
    float want[8] = {1, 2, 3, 4, 10, 12, 14, 16};
    for (int i = 0; i < 8; i++)
        CHECK_NEAR(F(&out)[i], want[i], 0);
    vox_tensor_free(ctx, &in);
    vox_tensor_free(ctx, &w);
    vox_tensor_free(ctx, &out);
}

static void test_ref_pool_filter(struct vox_ctx *ctx)
{
    struct vox_tensor in = t5(ctx, 1, 1, 1, 4, 4), p = t5(ctx, 1, 1, 1, 2, 2);
    struct vox_tensor m = t5(ctx, 1, 1, 1, 3, 3), md = t5(ctx, 1, 1, 1, 2, 2);
    float v[16] = {1, 5, 2, 0, 3, 4, 8, 1, -1, -2, -3, -4, 0, -9, 6, 7};
    memcpy(in.data, v, sizeof v);
    vox_nn_ref_maxpool(&in, (int64_t[]){1, 2, 2}, &p);
    float wp[4] = {5, 8, 0, 7};
    for (int i = 0; i < 4; i++)
        CHECK_NEAR(F(&p)[i], wp[i], 0);
    vox_nn_ref_maxfilter(&in, (int64_t[]){1, 2, 2}, (int64_t[]){1, 1, 1}, &m);
    float wm[9] = {5, 8, 8, 4, 8, 8, 0, 6, 7};
    for (int i = 0; i < 9; i++)
        CHECK_NEAR(F(&m)[i], wm[i], 0);
    /* dilation 2: taps (y, x), (y, x+2), (y+2, x), (y+2, x+2) */
    vox_nn_ref_maxfilter(&in, (int64_t[]){1, 2, 2}, (int64_t[]){1, 2, 2}, &md);
    float wd[4] = {2, 5, 8, 7};
    for (int i = 0; i < 4; i++)
        CHECK_NEAR(F(&md)[i], wd[i], 0);
    vox_tensor_free(ctx, &in);
    vox_tensor_free(ctx, &p);
    vox_tensor_free(ctx, &m);
    vox_tensor_free(ctx, &md);
}

static void test_ref_moves(struct vox_ctx *ctx)
{
    struct vox_tensor in = t5(ctx, 1, 2, 1, 2, 3), up = t5(ctx, 1, 2, 2, 4, 3);
    for (int i = 0; i < 12; i++)
        F(&in)[i] = (float)i;
    vox_nn_ref_upsample(&in, (int64_t[]){2, 2, 1}, &up);
    for (int c = 0; c < 2; c++)
        for (int z = 0; z < 2; z++)
            for (int y = 0; y < 4; y++)
                for (int x = 0; x < 3; x++)
                    CHECK_NEAR(at(&up, c, z, y, x), at(&in, c, 0, y / 2, x), 0);
    struct vox_tensor cr = t5(ctx, 1, 2, 1, 2, 1);
    vox_nn_ref_crop(&up, (int64_t[]){1, 1, 2}, &cr);
    CHECK_NEAR(at(&cr, 1, 0, 0, 0), 6 + 2, 0); /* up(1, 1, 1, 2) = in(1, 0, 0, 2) */
    CHECK_NEAR(at(&cr, 0, 0, 1, 0), 5, 0);     /* up(0, 1, 2, 2) = in(0, 0, 1, 2) */
    struct vox_tensor cat = t5(ctx, 1, 4, 1, 2, 3), sum = t5(ctx, 1, 2, 1, 2, 3);
    const struct vox_tensor *two[2] = {&in, &in};
    vox_nn_ref_concat(two, 2, &cat);
    vox_nn_ref_add(two, 2, VOX_ACT_LINEAR, &sum);
    for (int i = 0; i < 12; i++) {
        CHECK_NEAR(F(&cat)[i], i, 0);
        CHECK_NEAR(F(&cat)[12 + i], i, 0);
        CHECK_NEAR(F(&sum)[i], 2 * i, 0);
    }
    vox_tensor_free(ctx, &in);
    vox_tensor_free(ctx, &up);
    vox_tensor_free(ctx, &cr);
    vox_tensor_free(ctx, &cat);
    vox_tensor_free(ctx, &sum);
}

static void test_ref_act(struct vox_ctx *ctx)
{
    struct vox_tensor in = t5(ctx, 1, 3, 1, 1, 4), out = t5(ctx, 1, 3, 1, 1, 4);
    float v[12] = {1, -2, 100, 0, 2, 3, -100, 0, -1, 0.5f, 50, 0};
    memcpy(in.data, v, sizeof v);
    vox_nn_ref_act(&in, VOX_ACT_SOFTMAX, &out);
    for (int x = 0; x < 4; x++) {
        double s = 0;
        for (int c = 0; c < 3; c++)
            s += at(&out, c, 0, 0, x);
        CHECK_NEAR(s, 1.0, 1e-6);
    }
    CHECK_NEAR(at(&out, 0, 0, 0, 3), 1.0 / 3, 1e-7);
    CHECK_NEAR(at(&out, 0, 0, 0, 0), exp(1) / (exp(1) + exp(2) + exp(-1)), 1e-7);
    static const struct {
        enum vox_nn_act a;
        double x, y;
    } pts[] = {{VOX_ACT_RELU, -2, 0},
               {VOX_ACT_RELU, 3, 3},
               {VOX_ACT_ELU, -1, -0.6321205588},
               {VOX_ACT_SIGMOID, 0, 0.5},
               {VOX_ACT_TANH, 1, 0.7615941559},
               {VOX_ACT_LINEAR, -7, -7}};
    for (size_t i = 0; i < sizeof pts / sizeof pts[0]; i++) {
        F(&in)[0] = (float)pts[i].x;
        vox_nn_ref_act(&in, pts[i].a, &out);
        CHECK_NEAR(F(&out)[0], pts[i].y, 1e-7);
    }
    vox_tensor_free(ctx, &in);
    vox_tensor_free(ctx, &out);
}

/* ---- weights and the forward pass ---------------------------------------------------------- */

static const char tiny_unet[] = "input  raw channels=1\n"
                                "conv   e   raw -> 3 kernel=1x3x3 pad=same act=elu\n"
                                "conv   d0  e -> 3  kernel=3x3x3 pad=same bn=yes act=relu\n"
                                "pool   p   d0 window=1x2x2\n"
                                "conv   d1  p -> 4  kernel=3x3x3 pad=same bn=yes act=relu\n"
                                "deconv u   d1 -> 3 kernel=1x2x2\n"
                                "add    s   u d0\n"
                                "upsample q d1 factor=1x2x2\n"
                                "concat k   s q\n"
                                "conv   o   k -> 2 kernel=1x1x1\n"
                                "output aff o act=sigmoid\n";

static void tmp_path(char *buf, size_t n, const char *tag)
{
    snprintf(buf, n, "/tmp/vox_test_nn_%d_%s.h5", (int)getpid(), tag);
}

static void test_weights_roundtrip(struct vox_ctx *ctx)
{
    struct vox_net *net = parse(ctx, tiny_unet);
    struct vox_nn_weights *w = NULL, *r = NULL;
    CHECK_OK(vox_nn_weights_create(ctx, net, &w));
    if (!w)
        return;
    vox_nn_weights_init(net, w, VOX_INIT_MSRA, 7);
    int d0 = vox_net_find(net, "d0");
    CHECK(w->p[d0][VOX_P_WEIGHT].shape[0] == 3 && w->p[d0][VOX_P_WEIGHT].shape[1] == 3);
    CHECK(w->p[d0][VOX_P_BN_VAR].rank == 1 && F(&w->p[d0][VOX_P_BN_VAR])[2] == 1.0f);
    int u = vox_net_find(net, "u"); /* ConvTranspose3d: (in, out, ...) */
    CHECK(w->p[u][VOX_P_WEIGHT].shape[0] == 4 && w->p[u][VOX_P_WEIGHT].shape[1] == 3);
    F(&w->p[d0][VOX_P_BN_MEAN])[1] = 0.25f;
    char path[256];
    tmp_path(path, sizeof path, "w");
    CHECK_OK(vox_nn_weights_save(ctx, net, w, path));
    CHECK_OK(vox_nn_weights_load(ctx, net, path, &r));
    for (int i = 0; r && i < net->n_layers; i++)
        for (int p = 0; p < VOX_P_COUNT; p++)
            if (w->p[i][p].rank)
                CHECK(memcmp(w->p[i][p].data, r->p[i][p].data, vox_tensor_nbytes(&w->p[i][p])) ==
                      0);
    /* same seed, same weights; another seed, others */
    struct vox_nn_weights *w2 = NULL;
    CHECK_OK(vox_nn_weights_create(ctx, net, &w2));
    vox_nn_weights_init(net, w2, VOX_INIT_MSRA, 7);
    CHECK(memcmp(w2->p[d0][0].data, w->p[d0][0].data, vox_tensor_nbytes(&w->p[d0][0])) == 0);
    vox_nn_weights_init(net, w2, VOX_INIT_XAVIER, 8);
    CHECK(memcmp(w2->p[d0][0].data, w->p[d0][0].data, vox_tensor_nbytes(&w->p[d0][0])) != 0);
    vox_nn_weights_destroy(w2);
    vox_nn_weights_destroy(r);
    /* a net whose d1 has 5 channels: wrong shape, named */
    char other[sizeof tiny_unet + 8];
    snprintf(other, sizeof other, "%s", tiny_unet);
    char *pos = strstr(other, "p -> 4");
    pos[5] = '5';
    struct vox_net *net2 = parse(ctx, other);
    CHECK_STATUS(vox_nn_weights_load(ctx, net2, path, &r), VOX_FORMAT);
    CHECK_ERROR_HAS("layer 'd1': /d1/weight is f32 (4, 3, 3, 3, 3), expected f32 "
                    "(5, 3, 3, 3, 3)");
    CHECK(r == NULL);
    vox_net_destroy(net2);
    /* a net with a layer the file lacks */
    struct vox_net *net3 = parse(ctx, "input raw channels=1\nconv zz raw -> 1 kernel=1\n"
                                      "output o zz\n");
    CHECK_STATUS(vox_nn_weights_load(ctx, net3, path, &r), VOX_FORMAT);
    CHECK_ERROR_HAS("layer 'zz'");
    CHECK_ERROR_HAS("/zz/weight");
    vox_net_destroy(net3);
    unlink(path);
    vox_nn_weights_destroy(w);
    vox_net_destroy(net);
}

/* Runs tiny_unet at 4x8x8 on ctx; returns the output copied into *out. */
static void run_unet(struct vox_ctx *ctx, struct vox_tensor *out)
{
    struct vox_net *net = parse(ctx, tiny_unet);
    struct vox_nn_weights *w = NULL;
    struct vox_nn_plan *plan = NULL;
    CHECK_OK(vox_nn_weights_create(ctx, net, &w));
    vox_nn_weights_init(net, w, VOX_INIT_MSRA, 3);
    CHECK_OK(vox_nn_plan_create(ctx, net, w, (int64_t[]){4, 8, 8}, &plan));
    struct vox_tensor in = t5(ctx, 1, 1, 4, 8, 8);
    uint64_t seed = 5;
    for (int i = 0; i < 256; i++)
        F(&in)[i] = (float)(vox_test_rand(&seed) % 1000) / 1000.0f;
    CHECK_OK(vox_nn_plan_forward(ctx, plan, &in));
    const struct vox_tensor *o = vox_nn_plan_output(plan, 0);
    CHECK(o->shape[1] == 2 && o->shape[2] == 4 && o->shape[3] == 8 && o->shape[4] == 8);
    *out = t5(ctx, 1, 2, 4, 8, 8);
    CHECK_OK(vox_tensor_copy(ctx, out, o));
    size_t noreuse, bytes = vox_nn_plan_bytes(plan, &noreuse);
    CHECK(bytes < noreuse);
    vox_tensor_free(ctx, &in);
    vox_nn_plan_destroy(plan);
    vox_nn_weights_destroy(w);
    vox_net_destroy(net);
}

static void test_forward_threads(struct vox_ctx *ctx)
{
    struct vox_ctx *one;
    struct vox_ctx_options opt = {.threads = 1, .log_level = VOX_LOG_WARN};
    CHECK_OK(vox_ctx_create(&opt, &one));
    struct vox_tensor a, b;
    run_unet(ctx, &a);
    run_unet(one, &b);
    CHECK(memcmp(a.data, b.data, vox_tensor_nbytes(&a)) == 0);
    for (int64_t i = 0; i < vox_tensor_numel(&a); i++)
        CHECK(F(&a)[i] > 0 && F(&a)[i] < 1); /* sigmoid */
    vox_tensor_free(ctx, &a);
    vox_tensor_free(one, &b);
    vox_ctx_destroy(one);
}

static void test_forward_bn_fold(struct vox_ctx *ctx)
{
    /* y = relu(g * (2x + 1 - m) / sqrt(v + eps) + beta), one 1x1x1 conv */
    struct vox_net *net = parse(ctx, "input a channels=1\nconv c a -> 1 kernel=1 bn=yes eps=0.5 "
                                     "act=relu\noutput o c\n");
    struct vox_nn_weights *w;
    struct vox_nn_plan *plan = NULL;
    CHECK_OK(vox_nn_weights_create(ctx, net, &w));
    F(&w->p[1][VOX_P_WEIGHT])[0] = 2;
    F(&w->p[1][VOX_P_BIAS])[0] = 1;
    F(&w->p[1][VOX_P_BN_MEAN])[0] = 3;
    F(&w->p[1][VOX_P_BN_VAR])[0] = 3.5f;
    F(&w->p[1][VOX_P_BN_WEIGHT])[0] = 4;
    F(&w->p[1][VOX_P_BN_BIAS])[0] = -1;
    CHECK_OK(vox_nn_plan_create(ctx, net, w, (int64_t[]){1, 1, 3}, &plan));
    struct vox_tensor in = t5(ctx, 1, 1, 1, 1, 3);
    F(&in)[0] = 0, F(&in)[1] = 1, F(&in)[2] = 5;
    CHECK_OK(vox_nn_plan_forward(ctx, plan, &in));
    const float *o = vox_nn_plan_output(plan, 0)->data;
    CHECK_NEAR(o[0], 0, 1e-6); /* 4 * (1 - 3) / 2 - 1 = -5 -> 0 */
    CHECK_NEAR(o[1], 0, 1e-6); /* 4 * (3 - 3) / 2 - 1 = -1 -> 0 */
    CHECK_NEAR(o[2], 4 * (11 - 3) / 2.0 - 1, 1e-5);
    struct vox_tensor bad = t5(ctx, 1, 1, 1, 1, 4);
    CHECK_STATUS(vox_nn_plan_forward(ctx, plan, &bad), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("input 0 ('a') must be float32 (1, 1, 1, 1, 3)");
    vox_tensor_free(ctx, &bad);
    vox_tensor_free(ctx, &in);
    vox_nn_plan_destroy(plan);
    vox_nn_weights_destroy(w);
    vox_net_destroy(net);
}

static void test_alloc_failures(struct vox_ctx *ctx)
{
    int64_t completed = 0;
    for (int64_t n = 1; n < 400 && !completed; n++) {
        vox_ctx_fail_alloc_at(ctx, n);
        struct vox_net *net = NULL;
        struct vox_nn_weights *w = NULL;
        struct vox_nn_plan *plan = NULL;
        struct vox_tensor in = {0};
        enum vox_status s = vox_net_parse(ctx, tiny_unet, "t.net", &net);
        if (s == VOX_OK)
            s = vox_nn_weights_create(ctx, net, &w);
        if (s == VOX_OK)
            s = vox_nn_plan_create(ctx, net, w, (int64_t[]){2, 4, 4}, &plan);
        if (s == VOX_OK)
            s = vox_tensor_alloc(ctx, &in, VOX_F32, 5, (int64_t[]){1, 1, 2, 4, 4});
        if (s == VOX_OK)
            s = vox_nn_plan_forward(ctx, plan, &in);
        CHECK(s == VOX_OK || s == VOX_OUT_OF_MEMORY);
        completed = s == VOX_OK;
        vox_tensor_free(ctx, &in);
        vox_nn_plan_destroy(plan);
        vox_nn_weights_destroy(w);
        vox_net_destroy(net);
        CHECK(vox_ctx_live_allocs(ctx) == 0);
    }
    vox_ctx_fail_alloc_at(ctx, 0);
    CHECK(completed);
}

static void test_garbage_specs(struct vox_ctx *ctx)
{
    static const char *const words[] = {"input",
                                        "conv",
                                        "deconv",
                                        "pool",
                                        "maxfilter",
                                        "upsample",
                                        "crop",
                                        "add",
                                        "concat",
                                        "act",
                                        "softmax",
                                        "output",
                                        "a",
                                        "b",
                                        "c",
                                        "->",
                                        "2",
                                        "kernel=3",
                                        "kernel=1x2x2",
                                        "window=1x2x2",
                                        "factor=2",
                                        "pad=same",
                                        "act=relu",
                                        "bn=yes",
                                        "to=a",
                                        "margin=0x1x1",
                                        "fn=softmax",
                                        "channels=1",
                                        "dilation=1x2x2",
                                        "=",
                                        "x",
                                        "#",
                                        "kernel=",
                                        "3x",
                                        "->->",
                                        "bias=no",
                                        "eps=1e-3",
                                        "\t",
                                        "channels=99999999999999999999"};
    int64_t nw = (int64_t)(sizeof words / sizeof words[0]);
    uint64_t seed = 11;
    int rounds = vox_test_full ? 20000 : 2000;
    char text[2048];
    for (int r = 0; r < rounds; r++) {
        int len = 0, lines = 1 + (int)(vox_test_rand(&seed) % 6);
        for (int l = 0; l < lines; l++) {
            int n = (int)(vox_test_rand(&seed) % 8);
            for (int k = 0; k < n; k++)
                len += snprintf(text + len, sizeof text - (size_t)len, "%s ",
                                words[vox_test_rand(&seed) % (uint64_t)nw]);
            len += snprintf(text + len, sizeof text - (size_t)len, "\n");
        }
        struct vox_net *net = NULL;
        enum vox_status s = vox_net_parse(ctx, text, "g.net", &net);
        CHECK(s == VOX_OK || s == VOX_FORMAT);
        CHECK((s == VOX_OK) == (net != NULL));
        if (s != VOX_OK)
            CHECK(strncmp(vox_ctx_error(ctx), "g.net:", 6) == 0);
        if (net) {
            struct vox_nn_dims *d = vox_alloc(ctx, (size_t)net->n_layers * sizeof *d);
            s = vox_net_shapes(ctx, net, (int64_t[]){2, 8, 8}, d);
            CHECK(s == VOX_OK || s == VOX_INVALID_ARG);
            vox_free(ctx, d);
        }
        vox_net_destroy(net);
    }
}

VOX_TEST_MAIN(VOX_TEST(test_parse_good), VOX_TEST(test_parse_errors), VOX_TEST(test_shape_errors),
              VOX_TEST(test_shipped_nets), VOX_TEST(test_ref_conv_impulse),
              VOX_TEST(test_ref_deconv), VOX_TEST(test_ref_pool_filter), VOX_TEST(test_ref_moves),
              VOX_TEST(test_ref_act), VOX_TEST(test_weights_roundtrip),
              VOX_TEST(test_forward_threads), VOX_TEST(test_forward_bn_fold),
              VOX_TEST(test_alloc_failures), VOX_TEST(test_garbage_specs))
