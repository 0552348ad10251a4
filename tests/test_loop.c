/*
 * test_loop.c: the loop-nest description, its validation, text form and interpreter.
 *
 * The interpreter is the oracle for the JIT, so it is checked here against straightforward C
 * loops written out by hand (matmul in every layout, GEMV, batched matmul, 2D/3D convolution in
 * NCDHW and channel-blocked layouts, max-pooling, fused element-wise ops), at sizes 2^r + tail
 * with splits that do not divide them. Then properties: the result does not depend on the loop
 * order (random legal orders and random swap/split/merge sequences), the legality queries agree
 * with validation, print -> parse -> print is the identity, and bad nests and bad strings give
 * a status and a message (with a column) and never a crash.
 */
#include "harness.h"
#include "vox/loop.h"

/* ---- helpers --------------------------------------------------------------------------- */

static float frand(uint64_t *rng)
{
    return (float)((double)(vox_test_rand(rng) >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
}

static float *rand_buf(struct vox_ctx *ctx, uint64_t *rng, int64_t n)
{
    float *p = vox_alloc(ctx, (size_t)n * sizeof(float));
    for (int64_t i = 0; p && i < n; i++)
        p[i] = frand(rng);
    return p;
}

/* got and ref agree within a relative tolerance of scale (the sum of |terms|). */
static int count_far(const float *got, const double *ref, const double *scale, int64_t n,
                     const char *what)
{
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        double tol = 1e-5 * (scale ? scale[i] : fabs(ref[i])) + 1e-6;
        if (!(fabs(got[i] - ref[i]) <= tol)) {
            if (bad++ == 0)
                fprintf(stderr, "  %s: element %lld is %.9g, expected %.9g\n", what,
                        (long long)i, (double)got[i], ref[i]);
        }
    }
    return bad;
}

static bool parse_text(struct vox_ctx *ctx, const char *text, struct vox_nest *nest)
{
    enum vox_status s = vox_nest_parse(ctx, text, nest);
    if (s != VOX_OK)
        fprintf(stderr, "  parse \"%s\": %s\n", text, vox_ctx_error(ctx));
    return s == VOX_OK;
}

/* ---- matmul in every layout ------------------------------------------------------------ */

static void matmul_case(struct vox_ctx *ctx, int layout, const char *order, bool acc)
{
    const int64_t M = 19, N = 21, K = 13;
    /* bit 0: A column-major, bit 1: B column-major, bit 2: C column-major */
    int64_t am = layout & 1 ? 1 : K, ak = layout & 1 ? M : 1;
    int64_t bk = layout & 2 ? 1 : N, bn = layout & 2 ? K : 1;
    int64_t cm = layout & 4 ? 1 : N, cn = layout & 4 ? M : 1;
    char text[512];
    snprintf(text, sizeof text,
             "dims m=%lld n=%lld k=%lld; order %s; C[m:%lld,n:%lld] += A[m:%lld,k:%lld] * "
             "B[k:%lld,n:%lld]%s", (long long)M, (long long)N, (long long)K, order,
             (long long)cm, (long long)cn, (long long)am, (long long)ak, (long long)bk,
             (long long)bn, acc ? "; accumulate" : "");
    struct vox_nest nest;
    if (!parse_text(ctx, text, &nest)) {
        CHECK(false);
        return;
    }
    uint64_t rng = (uint64_t)layout * 77 + 1;
    float *A = rand_buf(ctx, &rng, M * K), *B = rand_buf(ctx, &rng, K * N);
    float *C = rand_buf(ctx, &rng, M * N);
    double *ref = vox_alloc(ctx, (size_t)(M * N) * sizeof(double));
    double *scale = vox_alloc(ctx, (size_t)(M * N) * sizeof(double));
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = acc ? C[m * cm + n * cn] : 0.0, sa = fabs(s);
            for (int64_t k = 0; k < K; k++) {
                s += (double)A[m * am + k * ak] * B[k * bk + n * bn];
                sa += fabs((double)A[m * am + k * ak] * B[k * bk + n * bn]);
            }
            ref[m * cm + n * cn] = s;
            scale[m * cm + n * cn] = sa;
        }
    CHECK_OK(vox_nest_interpret(ctx, &nest, C, A, B, NULL));
    CHECK(count_far(C, ref, scale, M * N, text) == 0);
    vox_free(ctx, A), vox_free(ctx, B), vox_free(ctx, C), vox_free(ctx, ref);
    vox_free(ctx, scale);
}

static void test_matmul_layouts(struct vox_ctx *ctx)
{
    static const char *const orders[] = {
        "m:1 n:1 k:1", "k:1 n:1 m:1", "m:8 n:8 k:4 m:1 k:1 n:1", "n:16 m:6 k:1 m:1 n:1",
        "k:5 n:7 m:4 k:2 m:1 n:3 k:1 n:1",
    };
    for (int layout = 0; layout < 8; layout++)
        for (int o = 0; o < 5; o++)
            matmul_case(ctx, layout, orders[o], (layout + o) % 3 == 0);
}

/* ---- GEMV and batched matmul ----------------------------------------------------------- */

static void test_gemv_batched(struct vox_ctx *ctx)
{
    uint64_t rng = 5;
    /* y[m] = sum_k A[m,k] x[k], A column-major. */
    const int64_t M = 37, K = 29;
    struct vox_nest nest;
    float *A = rand_buf(ctx, &rng, M * K), *x = rand_buf(ctx, &rng, K);
    float *y = rand_buf(ctx, &rng, M);
    double ref[37];
    for (int64_t m = 0; m < M; m++) {
        ref[m] = 0;
        for (int64_t k = 0; k < K; k++)
            ref[m] += (double)A[m + k * M] * x[k];
    }
    CHECK(parse_text(ctx, "dims m=37 k=29; order k:8 m:16 k:1 m:1; C[m:1] += A[m:1,k:37] * B[k:1]",
                     &nest));
    CHECK_OK(vox_nest_interpret(ctx, &nest, y, A, x, NULL));
    CHECK(count_far(y, ref, NULL, M, "gemv") == 0);
    vox_free(ctx, A), vox_free(ctx, x), vox_free(ctx, y);

    /* C[b,m,n] = sum_k A[b,k,m] B[b,k,n] (A transposed per batch). */
    const int64_t Bn = 3, Mm = 9, Nn = 11, Kk = 7;
    A = rand_buf(ctx, &rng, Bn * Kk * Mm);
    float *Bt = rand_buf(ctx, &rng, Bn * Kk * Nn), *C = rand_buf(ctx, &rng, Bn * Mm * Nn);
    double cref[3 * 9 * 11];
    for (int64_t b = 0; b < Bn; b++)
        for (int64_t m = 0; m < Mm; m++)
            for (int64_t n = 0; n < Nn; n++) {
                double s = 0;
                for (int64_t k = 0; k < Kk; k++)
                    s += (double)A[(b * Kk + k) * Mm + m] * Bt[(b * Kk + k) * Nn + n];
                cref[(b * Mm + m) * Nn + n] = s;
            }
    CHECK(parse_text(ctx, "dims b=3 m=9 n=11 k=7; order b:1 n:4 m:4 k:1 m:1 n:1; "
                          "C[b:99,m:11,n:1] += A[b:63,m:1,k:9] * B[b:77,n:1,k:11]", &nest));
    CHECK_OK(vox_nest_interpret(ctx, &nest, C, A, Bt, NULL));
    CHECK(count_far(C, cref, NULL, Bn * Mm * Nn, "batched matmul") == 0);
    vox_free(ctx, A), vox_free(ctx, Bt), vox_free(ctx, C);
}

/* ---- convolution and pooling ----------------------------------------------------------- */

static void set_stride(struct vox_nest *nest, int t, const char *dim, int64_t s)
{
    nest->strides[t][vox_nest_dim_find(nest, dim)] = s;
}

/* Sets the order from "name:step name:step ...". */
static void set_order(struct vox_nest *nest, const char *text)
{
    char name[VOX_NEST_NAME_MAX];
    long long step;
    int used;
    nest->norder = 0;
    while (sscanf(text, " %15[A-Za-z_0-9]:%lld%n", name, &step, &used) == 2) {
        vox_nest_loop_add(nest, vox_nest_dim_find(nest, name), step);
        text += used;
    }
}

struct conv {
    int64_t n, ci, co, o[3], k[3];
    bool blocked; /* (N, C/8, Z, Y, X, 8) for input and output, channels a multiple of 8 */
    const char *order;
};

/* The nest for conv c with bias + ReLU fused. Input (A) extent i = o + k - 1 per axis. */
static void conv_nest(const struct conv *c, struct vox_nest *nest)
{
    static const char *const on[3] = {"oz", "oy", "ox"}, *const kn[3] = {"kz", "ky", "kx"};
    int64_t i3[3], in_sp = 1, out_sp = 1, k3 = c->k[0] * c->k[1] * c->k[2];
    for (int a = 0; a < 3; a++)
        i3[a] = c->o[a] + c->k[a] - 1, in_sp *= i3[a], out_sp *= c->o[a];
    int64_t b = c->blocked ? 8 : 1; /* innermost channel block */
    vox_nest_init(nest);
    vox_nest_dim_add(nest, "n", c->n);
    vox_nest_dim_add(nest, "co", c->co / b);
    vox_nest_dim_add(nest, "ci", c->ci / b);
    if (c->blocked)
        vox_nest_dim_add(nest, "coi", 8), vox_nest_dim_add(nest, "cii", 8);
    for (int a = 0; a < 3; a++)
        vox_nest_dim_add(nest, on[a], c->o[a]), vox_nest_dim_add(nest, kn[a], c->k[a]);
    int64_t ia = b, oa = b, ka = 1; /* strides of the innermost spatial axis */
    for (int a = 2; a >= 0; a--) {
        set_stride(nest, VOX_NEST_A, on[a], ia), set_stride(nest, VOX_NEST_A, kn[a], ia);
        set_stride(nest, VOX_NEST_C, on[a], oa), set_stride(nest, VOX_NEST_B, kn[a], ka);
        ia *= i3[a], oa *= c->o[a], ka *= c->k[a];
    }
    set_stride(nest, VOX_NEST_A, "n", c->ci * in_sp), set_stride(nest, VOX_NEST_A, "ci", b * in_sp);
    set_stride(nest, VOX_NEST_C, "n", c->co * out_sp);
    set_stride(nest, VOX_NEST_C, "co", b * out_sp);
    set_stride(nest, VOX_NEST_B, "co", b * c->ci * k3), set_stride(nest, VOX_NEST_B, "ci", b * k3);
    nest->npost = 2;
    nest->post[0].kind = VOX_NEST_BIAS;
    nest->post[0].strides[vox_nest_dim_find(nest, "co")] = b;
    nest->post[1].kind = VOX_NEST_RELU;
    if (c->blocked) {
        set_stride(nest, VOX_NEST_A, "cii", 1), set_stride(nest, VOX_NEST_C, "coi", 1);
        set_stride(nest, VOX_NEST_B, "coi", c->ci * k3), set_stride(nest, VOX_NEST_B, "cii", k3);
        nest->post[0].strides[vox_nest_dim_find(nest, "coi")] = 1;
    }
    set_order(nest, c->order);
}

/* Offset of (n, ch, z, y, x) in an (N, C, Z, Y, X) tensor, or its blocked form. */
static int64_t at5(bool blocked, int64_t C, const int64_t *sp, int64_t n, int64_t ch,
                   int64_t z, int64_t y, int64_t x)
{
    int64_t v = (z * sp[1] + y) * sp[2] + x, s3 = sp[0] * sp[1] * sp[2];
    if (!blocked)
        return (n * C + ch) * s3 + v;
    return ((n * (C / 8) + ch / 8) * s3 + v) * 8 + ch % 8;
}

static void conv_case(struct vox_ctx *ctx, const struct conv *c)
{
    int64_t i3[3], k3 = c->k[0] * c->k[1] * c->k[2];
    for (int a = 0; a < 3; a++)
        i3[a] = c->o[a] + c->k[a] - 1;
    int64_t ni = c->n * c->ci * i3[0] * i3[1] * i3[2];
    int64_t no = c->n * c->co * c->o[0] * c->o[1] * c->o[2];
    uint64_t rng = 99;
    float *in = rand_buf(ctx, &rng, ni), *w = rand_buf(ctx, &rng, c->co * c->ci * k3);
    float *bias = rand_buf(ctx, &rng, c->co), *out = rand_buf(ctx, &rng, no);
    double *ref = vox_alloc(ctx, (size_t)no * sizeof(double));
    double *scale = vox_alloc(ctx, (size_t)no * sizeof(double));
    for (int64_t n = 0; n < c->n; n++)
        for (int64_t co = 0; co < c->co; co++)
            for (int64_t z = 0; z < c->o[0]; z++)
                for (int64_t y = 0; y < c->o[1]; y++)
                    for (int64_t x = 0; x < c->o[2]; x++) {
                        double s = 0, sa = 0;
                        for (int64_t ci = 0; ci < c->ci; ci++)
                            for (int64_t kz = 0; kz < c->k[0]; kz++)
                                for (int64_t ky = 0; ky < c->k[1]; ky++)
                                    for (int64_t kx = 0; kx < c->k[2]; kx++) {
                                        double t = in[at5(c->blocked, c->ci, i3, n, ci, z + kz,
                                                          y + ky, x + kx)] *
                                                   (double)w[((co * c->ci + ci) * c->k[0] + kz) *
                                                                 c->k[1] * c->k[2] +
                                                             ky * c->k[2] + kx];
                                        s += t, sa += fabs(t);
                                    }
                        int64_t o = at5(c->blocked, c->co, c->o, n, co, z, y, x);
                        s += bias[co];
                        ref[o] = s > 0 ? s : 0;
                        scale[o] = sa + fabs(bias[co]);
                    }
    struct vox_nest nest;
    conv_nest(c, &nest);
    const float *extra[1] = {bias};
    CHECK_OK(vox_nest_interpret(ctx, &nest, out, in, w, extra));
    CHECK(count_far(out, ref, scale, no, c->order) == 0);
    vox_free(ctx, in), vox_free(ctx, w), vox_free(ctx, bias), vox_free(ctx, out);
    vox_free(ctx, ref), vox_free(ctx, scale);
}

static void test_conv(struct vox_ctx *ctx)
{
    static const struct conv cases[] = {
        /* 2D (kz = 1) and 3D, NCDHW */
        {1, 4, 6, {1, 7, 9}, {1, 3, 3}, false,
         "n:1 co:1 oz:1 oy:1 ox:4 ci:1 kz:1 ky:1 kx:1 ox:1"},
        {2, 3, 5, {3, 4, 5}, {3, 3, 3}, false,
         "n:1 co:2 oz:1 oy:3 ox:1 ci:1 kz:1 ky:1 kx:1 co:1 oy:1"},
        {2, 3, 5, {3, 4, 5}, {1, 3, 3}, false,
         "kx:1 ky:1 kz:1 ci:1 n:1 co:1 oz:1 oy:1 ox:1"},
        /* blocked (N, C/8, Z, Y, X, 8) */
        {1, 16, 16, {2, 3, 4}, {3, 3, 3}, true,
         "n:1 co:1 oz:1 oy:1 ox:3 ci:1 kz:1 ky:1 kx:1 cii:1 ox:1 coi:1"},
        {2, 8, 16, {2, 3, 3}, {1, 3, 3}, true,
         "n:1 co:1 ci:1 oz:1 oy:2 kz:1 ky:1 kx:1 ox:1 oy:1 cii:1 coi:1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        conv_case(ctx, &cases[i]);
}

/* 2x2 max-pooling with stride 2 over (C, Y, X), as max-plus with B = 0 and max-multiply with
 * B = 1, both with B broadcast (all strides 0). */
static void test_pool(struct vox_ctx *ctx)
{
    const int64_t C = 3, OY = 5, OX = 6, IY = 2 * OY + 1, IX = 2 * OX; /* a ragged input row */
    uint64_t rng = 11;
    float *in = rand_buf(ctx, &rng, C * IY * IX), out[3 * 5 * 6];
    double ref[3 * 5 * 6];
    for (int64_t c = 0; c < C; c++)
        for (int64_t y = 0; y < OY; y++)
            for (int64_t x = 0; x < OX; x++) {
                float m = -INFINITY;
                for (int64_t ky = 0; ky < 2; ky++)
                    for (int64_t kx = 0; kx < 2; kx++)
                        m = fmaxf(m, in[(c * IY + 2 * y + ky) * IX + 2 * x + kx]);
                ref[(c * OY + y) * OX + x] = m;
            }
    static const char *const texts[] = {
        "dims c=3 oy=5 ox=6 ky=2 kx=2; order c:1 oy:2 ky:1 ox:4 kx:1 oy:1 ox:1; "
        "C[c:30,oy:6,ox:1] max= A[c:132,oy:24,ox:2,ky:12,kx:1] + B[]",
        "dims c=3 oy=5 ox=6 ky=2 kx=2; order kx:1 ky:1 c:1 oy:1 ox:1; "
        "C[c:30,oy:6,ox:1] max= A[c:132,oy:24,ox:2,ky:12,kx:1] * B[]",
    };
    const float bvals[2] = {0.0f, 1.0f};
    for (int t = 0; t < 2; t++) {
        struct vox_nest nest;
        CHECK(parse_text(ctx, texts[t], &nest));
        CHECK_OK(vox_nest_interpret(ctx, &nest, out, in, &bvals[t], NULL));
        for (int64_t i = 0; i < C * OY * OX; i++)
            CHECK(out[i] == (float)ref[i]);
    }
    vox_free(ctx, in);
}

/* ---- fused element-wise ops ------------------------------------------------------------ */

/* The ops written out independently of the library's table. */
static float ref_op(enum vox_nest_eltwise_kind k, float x, float t, float p)
{
    switch (k) {
    case VOX_NEST_RELU: return fmaxf(x, 0.0f);
    case VOX_NEST_ELU: return x > 0 ? x : expm1f(x);
    case VOX_NEST_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case VOX_NEST_TANH: return tanhf(x);
    case VOX_NEST_SCALE: return x * p;
    case VOX_NEST_BIAS: return x + t;
    case VOX_NEST_MUL: return x * t;
    default: return NAN;
    }
}

/* Each op alone as a post-op, and as a pre-op on A, on C[m,n] = sum_k A[m,k] B[k,n]: the
 * op's tensor operand is indexed by n (post) or by (m, k) (pre). */
static void test_eltwise(struct vox_ctx *ctx)
{
    enum { M = 5, N = 7, K = 6 };
    uint64_t rng = 3;
    float A[M * K], B[K * N], T[M * K], C[M * N];
    for (int i = 0; i < M * K; i++)
        A[i] = frand(&rng), T[i] = frand(&rng);
    for (int i = 0; i < K * N; i++)
        B[i] = frand(&rng);
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < VOX_NEST_ELTWISE_COUNT; k++) {
            const struct vox_nest_eltwise_info *info = vox_nest_eltwise_info(k);
            char text[256];
            snprintf(text, sizeof text,
                     "dims m=5 n=7 k=6; order n:3 k:4 m:1 k:1 n:1; C[m:7,n:1] += A[m:6,k:1] * "
                     "B[k:7,n:1]; %s %s%s%s", pass ? "post" : "pre", info->name,
                     info->has_tensor ? (pass ? "[n:1]" : "[m:6,k:1]") : "",
                     info->has_param ? "(-0.75)" : "");
            struct vox_nest nest;
            CHECK(parse_text(ctx, text, &nest));
            const float *extra[1] = {T};
            CHECK_OK(vox_nest_interpret(ctx, &nest, C, A, B, extra));
            double ref[M * N], scale[M * N];
            for (int m = 0; m < M; m++)
                for (int n = 0; n < N; n++) {
                    double s = 0, sa = 0;
                    for (int kk = 0; kk < K; kk++) {
                        float a = pass ? A[m * K + kk] : ref_op(k, A[m * K + kk], T[m * K + kk],
                                                                -0.75f);
                        s += (double)a * B[kk * N + n], sa += fabs((double)a * B[kk * N + n]);
                    }
                    ref[m * N + n] = pass ? ref_op(k, (float)s, T[n], -0.75f) : s;
                    scale[m * N + n] = sa + 1.0;
                }
            CHECK(count_far(C, ref, scale, M * N, text) == 0);
        }
}

/* ---- random nests ---------------------------------------------------------------------- */

static int64_t rnd(uint64_t *rng, int64_t n) { return (int64_t)(vox_test_rand(rng) % (uint64_t)n); }

/* A random legal order: each dimension gets 1..levels loops with decreasing steps ending at 1
 * (not dividing the size, sometimes above it), interleaved at random. */
static void random_order(uint64_t *rng, struct vox_nest *nest, int levels)
{
    int64_t steps[VOX_NEST_MAX_DIMS][4];
    int count[VOX_NEST_MAX_DIMS], next[VOX_NEST_MAX_DIMS], left = 0;
    for (int d = 0; d < nest->ndims; d++) {
        int room = VOX_NEST_MAX_ORDER - left - (nest->ndims - d - 1);
        count[d] = 1 + (int)rnd(rng, levels < room ? levels : room);
        next[d] = 0;
        left += count[d];
        steps[d][count[d] - 1] = 1;
        for (int l = count[d] - 2; l >= 0; l--)
            steps[d][l] = steps[d][l + 1] + 1 + rnd(rng, nest->dims[d].size + 1);
    }
    nest->norder = 0;
    while (left > 0) {
        int d = (int)rnd(rng, nest->ndims);
        if (next[d] == count[d])
            continue;
        vox_nest_loop_add(nest, d, steps[d][next[d]++]);
        left--;
    }
}

static void random_op(uint64_t *rng, const struct vox_nest *nest, struct vox_nest_eltwise *op,
                      bool post)
{
    memset(op, 0, sizeof *op);
    op->kind = (enum vox_nest_eltwise_kind)rnd(rng, VOX_NEST_ELTWISE_COUNT);
    op->param = (float)ldexp(frand(rng), (int)rnd(rng, 40) - 20);
    for (int d = 0; d < nest->ndims; d++)
        if (!(post && vox_nest_is_reduction(nest, d)) && rnd(rng, 2))
            op->strides[d] = rnd(rng, 41) - 20;
}

/* A random valid nest: 1..7 dims, C dense over its output dims in a random order and sign,
 * A and B random strides, random compute, mode and ops. */
static void random_nest(uint64_t *rng, struct vox_nest *nest)
{
    vox_nest_init(nest);
    int nd = 1 + (int)rnd(rng, 7);
    while (nest->ndims < nd) {
        char name[VOX_NEST_NAME_MAX] = {(char)('a' + rnd(rng, 26))};
        for (int i = 1, len = (int)rnd(rng, VOX_NEST_NAME_MAX - 1); i < len; i++)
            name[i] = "abcdefghijklmnopqrstuvwxyz_0123456789ABC"[rnd(rng, 40)];
        vox_nest_dim_add(nest, name, 1 + rnd(rng, 12));
    }
    int perm[VOX_NEST_MAX_DIMS];
    for (int i = 0; i < nd; i++)
        perm[i] = i;
    for (int i = nd - 1; i > 0; i--) {
        int j = (int)rnd(rng, i + 1), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    int64_t dense = 1;
    for (int i = 0; i < nd; i++) {
        int d = perm[i];
        if (rnd(rng, 3) > 0) {
            nest->strides[VOX_NEST_C][d] = rnd(rng, 2) ? dense : -dense;
            dense *= nest->dims[d].size;
        }
    }
    for (int d = 0; d < nd; d++) {
        for (int t = VOX_NEST_A; t <= VOX_NEST_B; t++)
            nest->strides[t][d] = rnd(rng, 3) ? rnd(rng, 61) - 30 : 0;
        if (!nest->strides[VOX_NEST_C][d] && !nest->strides[VOX_NEST_A][d] &&
            !nest->strides[VOX_NEST_B][d])
            nest->strides[VOX_NEST_A][d] = 1;
    }
    nest->compute = (enum vox_nest_compute)rnd(rng, VOX_NEST_COMPUTE_COUNT);
    nest->accumulate = rnd(rng, 2);
    nest->npre = (int)rnd(rng, 3);
    nest->npost = (int)rnd(rng, 3);
    for (int i = 0; i < nest->npre; i++)
        random_op(rng, nest, &nest->pre[i], false);
    for (int i = 0; i < nest->npost; i++)
        random_op(rng, nest, &nest->post[i], true);
    random_order(rng, nest, 3);
}

/* "name:step ..." of a nest's order. */
static void order_text(const struct vox_nest *nest, char *buf, size_t len)
{
    size_t at = 0;
    buf[0] = '\0';
    for (int p = 0; p < nest->norder && at < len; p++)
        at += (size_t)snprintf(buf + at, len - at, "%s%s:%lld", p ? " " : "",
                               nest->dims[nest->order[p].dim].name,
                               (long long)nest->order[p].step);
}

/* ---- loop-order invariance and the transforms ------------------------------------------ */

static void test_order_invariance(struct vox_ctx *ctx)
{
    uint64_t rng = 1234;
    int runs = vox_test_full ? 400 : 25;
    struct vox_nest mm, cv;
    char order[512];
    CHECK(parse_text(ctx, "dims m=19 n=21 k=13; order m:1 n:1 k:1; C[m:21,n:1] += A[m:13,k:1] * "
                          "B[k:21,n:1]", &mm));
    struct conv c = {2, 3, 5, {3, 4, 5}, {3, 3, 3}, false, "n:1 co:1 ci:1 oz:1 kz:1 oy:1 ky:1 "
                                                            "ox:1 kx:1"};
    conv_nest(&c, &cv);
    for (int r = 0; r < runs; r++) {
        random_order(&rng, &mm, 3);
        order_text(&mm, order, sizeof order);
        matmul_case(ctx, (int)rnd(&rng, 8), order, rnd(&rng, 2));
        if (r % 5 == 0) {
            random_order(&rng, &cv, 2);
            order_text(&cv, order, sizeof order);
            c.order = order;
            conv_case(ctx, &c);
        }
    }
}

/* Legality queries agree with validation of the transformed copy; the transforms keep the
 * nest valid and the matmul result unchanged. */
static void test_transforms(struct vox_ctx *ctx)
{
    uint64_t rng = 77;
    int runs = vox_test_full ? 400 : 40;
    for (int r = 0; r < runs; r++) {
        struct vox_nest nest, copy;
        CHECK(parse_text(ctx, "dims m=19 n=21 k=13; order n:16 m:6 k:1 m:1 n:1; C[m:21,n:1] += "
                              "A[m:13,k:1] * B[k:21,n:1]", &nest));
        for (int step = 0; step < 30; step++) {
            int i = (int)rnd(&rng, nest.norder + 1), j = (int)rnd(&rng, nest.norder);
            int64_t by = 1 + rnd(&rng, 24);
            const char *why = NULL;
            bool can;
            struct vox_nest before = nest;
            copy = nest;
            switch (rnd(&rng, 3)) {
            case 0:
                can = vox_nest_can_swap(&nest, i, j, &why);
                if (i < nest.norder) {
                    copy.order[i] = nest.order[j], copy.order[j] = nest.order[i];
                    CHECK(can == (vox_nest_validate(ctx, &copy) == VOX_OK));
                }
                CHECK_STATUS(vox_nest_swap(ctx, &nest, i, j), can ? VOX_OK : VOX_INVALID_ARG);
                break;
            case 1:
                can = vox_nest_can_split(&nest, i, by, &why);
                CHECK_STATUS(vox_nest_split(ctx, &nest, i, by), can ? VOX_OK : VOX_INVALID_ARG);
                break;
            default:
                can = vox_nest_can_merge(&nest, i, &why);
                CHECK_STATUS(vox_nest_merge(ctx, &nest, i), can ? VOX_OK : VOX_INVALID_ARG);
                break;
            }
            CHECK(can ? why == NULL : why != NULL);
            if (!can) {
                CHECK(vox_nest_equal(&nest, &before));
                CHECK_ERROR_HAS(why);
            }
            CHECK_OK(vox_nest_validate(ctx, &nest));
        }
        if (r % 4 == 0) {
            char order[512];
            order_text(&nest, order, sizeof order);
            matmul_case(ctx, 0, order, false);
        }
    }
}

/* ---- text form ------------------------------------------------------------------------- */

/* Buffers sized by each tensor's span, so the sanitizer sees any access outside them. */
static void interpret_in_spans(struct vox_ctx *ctx, uint64_t *rng, const struct vox_nest *nest)
{
    const int64_t *strides[3 + VOX_NEST_MAX_EXTRA];
    float *buf[3 + VOX_NEST_MAX_EXTRA] = {NULL};
    const float *base[3 + VOX_NEST_MAX_EXTRA];
    int n = 0;
    for (int t = 0; t < VOX_NEST_TENSORS; t++)
        strides[n++] = nest->strides[t];
    for (int i = 0; i < nest->npre; i++)
        if (vox_nest_eltwise_info(nest->pre[i].kind)->has_tensor)
            strides[n++] = nest->pre[i].strides;
    for (int i = 0; i < nest->npost; i++)
        if (vox_nest_eltwise_info(nest->post[i].kind)->has_tensor)
            strides[n++] = nest->post[i].strides;
    CHECK(n == 3 + vox_nest_extra_count(nest));
    int64_t lo[3 + VOX_NEST_MAX_EXTRA], hi[3 + VOX_NEST_MAX_EXTRA];
    for (int i = 0; i < n; i++) {
        vox_nest_span(nest, strides[i], &lo[i], &hi[i]);
        if (hi[i] - lo[i] >= (1 << 20))
            return;
    }
    for (int i = 0; i < n; i++) {
        buf[i] = rand_buf(ctx, rng, hi[i] - lo[i] + 1);
        base[i] = buf[i] - lo[i];
    }
    CHECK_OK(vox_nest_interpret(ctx, nest, (float *)base[0], base[1], base[2], base + 3));
    for (int i = 0; i < n; i++)
        vox_free(ctx, buf[i]);
}

static void test_round_trip(struct vox_ctx *ctx)
{
    uint64_t rng = 42;
    int runs = vox_test_full ? 20000 : 300;
    for (int r = 0; r < runs; r++) {
        struct vox_nest nest, back;
        random_nest(&rng, &nest);
        CHECK_OK(vox_nest_validate(ctx, &nest));
        char *s1 = NULL, *s2 = NULL;
        CHECK_OK(vox_nest_to_string(ctx, &nest, &s1));
        if (!s1)
            continue;
        CHECK_OK(vox_nest_parse(ctx, s1, &back));
        CHECK(vox_nest_equal(&nest, &back));
        CHECK_OK(vox_nest_to_string(ctx, &back, &s2));
        CHECK(s2 && strcmp(s1, s2) == 0);
        if (s2 && strcmp(s1, s2) != 0)
            fprintf(stderr, "  %s\n  %s\n", s1, s2);
        if (vox_nest_points(&nest) <= 20000)
            interpret_in_spans(ctx, &rng, &nest);
        vox_free(ctx, s1), vox_free(ctx, s2);
    }
}

#define MM "dims m=4 n=3 k=2; order m:1 n:1 k:1; "
#define MMC MM "C[m:3,n:1] += A[m:2,k:1] * B[n:1,k:3]"

static void test_parse_errors(struct vox_ctx *ctx)
{
    static const struct {
        const char *text;
        enum vox_status status;
        const char *needle;
    } cases[] = {
        {"", VOX_FORMAT, "column 1: expected 'dims', found the end"},
        {"dims m=4 order m:1", VOX_FORMAT, "column 16: expected '=' and a size, found 'm:1'"},
        {"dims m=4; order q:1", VOX_FORMAT, "column 17: expected a dimension declared"},
        {"dims m=4 m=5;", VOX_FORMAT, "column 10: expected a dimension name not declared"},
        {"dims m=x;", VOX_FORMAT, "column 8: expected an integer, found 'x;'"},
        {"dims m=99999999999999999999;", VOX_FORMAT, "integer that fits in 64 bits"},
        {"dims 7=1;", VOX_FORMAT, "column 6: expected a dimension name"},
        {"dims m=1;", VOX_FORMAT, "column 10: expected 'order', found the end"},
        {MM "C[m:3,n:1] = A[]", VOX_FORMAT, "column 49: expected a reduction"},
        {MM "C[m:3,n:1] += A[m:2,k:1] - B[]", VOX_FORMAT, "column 63: expected '*' or '+'"},
        {MM "C[m:3,n:1] min= A[m:2,k:1] + B[]", VOX_FORMAT, "a combine that pairs"},
        {MM "C[m:3 n:1] += A[]", VOX_FORMAT, "column 44: expected ',' or ']', found 'n:1]'"},
        {MM "C[m:3,m:1] += A[]", VOX_FORMAT, "each dimension at most once"},
        {MM "C[m:3,n:1] += A[m:2,k:1] * B[k:3,n:1] xyz", VOX_FORMAT, "';' or the end"},
        {MMC "; post foo", VOX_FORMAT, "expected an element-wise op"},
        {MMC "; post scale", VOX_FORMAT, "expected '(' and the op's constant"},
        {MMC "; post scale(x)", VOX_FORMAT, "expected a number"},
        {MMC "; post bias", VOX_FORMAT, "expected '['"},
        {MMC "; post relu relu relu relu relu", VOX_FORMAT, "at most 4 ops"},
        {MMC "; accumulate; pre relu", VOX_FORMAT, "expected the end of the text"},
        {MMC "; post relu; pre relu", VOX_FORMAT, "expected 'accumulate', found 'pre'"},
        {MMC "; pre relu; pre relu", VOX_FORMAT, "expected 'post' or 'accumulate', found 'pre'"},
        {MMC "; frob", VOX_FORMAT, "expected 'pre', 'post' or 'accumulate'"},
        {"dims m=0; order m:1; C[m:1] += A[] * B[]", VOX_INVALID_ARG, "size 0"},
        {MMC "; post scale(1e99)", VOX_INVALID_ARG, "constant is not finite"},
        {MMC "; post relu; accumulate", VOX_OK, ""},
        {"  dims m=4 n=3 k=2 ;order m:1 n:1 k:1;C[ m : 3 , n:1 ]+=A[m:2,k:1]*B[k:3,n:1] ",
         VOX_OK, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct vox_nest nest;
        vox_ctx_clear_error(ctx);
        CHECK_STATUS(vox_nest_parse(ctx, cases[i].text, &nest), cases[i].status);
        CHECK_ERROR_HAS(cases[i].needle);
    }
    /* Every proper prefix of a valid string fails with a column inside it, or parses. */
    const char *full = MMC "; pre scale(0.5); post bias[n:1] relu; accumulate";
    for (size_t n = 0; n < strlen(full); n++) {
        char prefix[256];
        struct vox_nest nest;
        memcpy(prefix, full, n), prefix[n] = '\0';
        enum vox_status s = vox_nest_parse(ctx, prefix, &nest);
        CHECK(s == VOX_OK || s == VOX_FORMAT || s == VOX_INVALID_ARG);
        if (s == VOX_FORMAT)
            CHECK(strncmp(vox_ctx_error(ctx), "column ", 7) == 0);
    }
}

/* Random token soup: any status but a crash or a leak. */
static void test_parse_garbage(struct vox_ctx *ctx)
{
    static const char *const tok[] = {
        "dims", "order", "C", "A", "B", "m", "n", "k", "=", ":", ";", "[", "]", ",", "+=",
        "max=", "*", "+", "1", "-3", "4", "relu", "bias", "scale", "(", ")", "0.5", " ",
        "post", "pre", "accumulate", "m=4", "n:1", "\t", "9999999999999999999999", "x_y"};
    uint64_t rng = 9;
    int runs = vox_test_full ? 100000 : 3000;
    for (int r = 0; r < runs; r++) {
        char text[512] = "";
        size_t len = 0;
        if (rnd(&rng, 2))
            len = (size_t)snprintf(text, sizeof text, "%s", MM);
        for (int t = 0, n = (int)rnd(&rng, 30); t < n && len < 400; t++)
            len += (size_t)snprintf(text + len, sizeof text - len, "%s%s",
                                    tok[rnd(&rng, sizeof tok / sizeof tok[0])],
                                    rnd(&rng, 2) ? " " : "");
        struct vox_nest nest;
        enum vox_status s = vox_nest_parse(ctx, text, &nest);
        CHECK(s == VOX_OK || s == VOX_FORMAT || s == VOX_INVALID_ARG);
        if (s == VOX_OK)
            CHECK_OK(vox_nest_validate(ctx, &nest));
    }
}

/* ---- invalid nests --------------------------------------------------------------------- */

static void test_invalid_text(struct vox_ctx *ctx)
{
    static const struct {
        const char *text, *needle;
    } cases[] = {
        {"dims m=4 n=3 k=2; order m:4 n:1 k:1 m:8 m:1; C[m:3,n:1] += A[m:2,k:1] * B[k:3,n:1]",
         "order entry 3: dimension 'm' has step 8 but its enclosing split has step 4"},
        {"dims m=4 n=3 k=2; order m:1 n:1 k:4; C[m:3,n:1] += A[m:2,k:1] * B[k:3,n:1]",
         "order entry 2: dimension 'k' has step 4 in its innermost loop, expected 1"},
        {"dims m=4 n=3 k=2; order m:1 n:1; C[m:3,n:1] += A[m:2,k:1] * B[k:3,n:1]",
         "dimension 'k' never appears in the order"},
        {"dims m=4 n=3 k=2; order m:1 n:0 k:1; C[m:3,n:1] += A[m:2,k:1] * B[k:3,n:1]",
         "order entry 1: dimension 'n' has step 0, expected >= 1"},
        {"dims m=4 n=3 k=2; order m:1 n:1 k:1; C[m:3,n:1] += A[m:2] * B[n:1]",
         "dimension 'k' indexes no tensor"},
        {"dims m=4 n=3 k=2; order m:1 n:1 k:1; C[m:1,n:1] += A[m:2,k:1] * B[k:3,n:1]",
         "C's strides alias two output elements"},
        {"dims m=4 n=3 k=2; order m:1 n:1 k:1; C[m:-3,n:2] += A[m:2,k:1] * B[k:3,n:1]",
         "C's strides alias two output elements: dimension 'm' has stride -3"},
        {MMC "; post bias[n:1,k:1]", "post op 0 (bias): stride 1 along reduction dimension 'k'"},
        {"dims m=2147483649 n=3 k=2; order m:1 n:1 k:1; C[m:3,n:1] += A[m:2,k:1] * B[k:3,n:1]",
         "size 2147483649"},
        {"dims m=4 n=3 k=2; order m:1 n:1 k:1; C[m:3,n:1] += A[m:4611686018427387904,k:1] * "
         "B[k:3,n:1]", "tensor A: its offsets overflow int64"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct vox_nest nest;
        CHECK_STATUS(vox_nest_parse(ctx, cases[i].text, &nest), VOX_INVALID_ARG);
        CHECK_ERROR_HAS(cases[i].needle);
    }
}

/* Breaks a valid matmul nest in the ways text cannot express. */
static void break_nest(struct vox_nest *n, int how)
{
    switch (how) {
    case 0: n->ndims = 0; break;
    case 1: n->ndims = VOX_NEST_MAX_DIMS + 1; break;
    case 2: n->norder = 0; break;
    case 3: n->norder = -5; break;
    case 4: n->dims[1].name[0] = '\0'; break;
    case 5: memset(n->dims[1].name, 'x', VOX_NEST_NAME_MAX); break;
    case 6: strcpy(n->dims[2].name, "m"); break;
    case 7: n->order[1].dim = 7; break;
    case 8: n->compute = (enum vox_nest_compute)9; break;
    case 9: n->npre = 1, n->pre[0].kind = (enum vox_nest_eltwise_kind)99; break;
    case 10: n->npost = 1, n->post[0].kind = VOX_NEST_SCALE, n->post[0].param = NAN; break;
    case 11: n->npre = VOX_NEST_MAX_OPS + 1; break;
    case 12: n->strides[VOX_NEST_B][0] = INT64_MIN; break;
    default: strcpy(n->dims[0].name, "9a"); break;
    }
}

static void test_invalid_struct(struct vox_ctx *ctx)
{
    static const char *const needles[] = {
        "nest: 0 dimensions, expected 1 to 12", "nest: 13 dimensions",
        "nest: 0 loops in the order", "nest: -5 loops", "dimension 1: name is not an identifier",
        "dimension 1: name is not an identifier", "dimension 2: name 'm' is used twice",
        "order entry 1: dimension index 7, expected 0 to 2", "compute 9 is not one of",
        "pre op 0: kind 99 is not one of", "post op 0 (scale): constant is not finite",
        "5 pre-ops", "tensor B: its offsets overflow", "dimension 0: name is not an identifier",
    };
    for (int how = 0; how < (int)(sizeof needles / sizeof needles[0]); how++) {
        struct vox_nest nest;
        CHECK(parse_text(ctx, MMC, &nest));
        break_nest(&nest, how);
        CHECK_STATUS(vox_nest_validate(ctx, &nest), VOX_INVALID_ARG);
        CHECK_ERROR_HAS(needles[how]);
        float x[64] = {0};
        CHECK_STATUS(vox_nest_interpret(ctx, &nest, x, x, x, NULL), VOX_INVALID_ARG);
        CHECK_STATUS(vox_nest_print(ctx, &nest, NULL, 0, NULL), VOX_INVALID_ARG);
    }
    struct vox_nest nest;
    CHECK(parse_text(ctx, MMC "; post bias[n:1]", &nest));
    float x[64] = {0};
    CHECK_STATUS(vox_nest_interpret(ctx, &nest, x, x, x, NULL), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("extra[0] (the tensor of post op 0) is NULL");
    CHECK_STATUS(vox_nest_interpret(ctx, &nest, x, NULL, x, NULL), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("tensor A is NULL");
    CHECK_STATUS(vox_nest_validate(ctx, NULL), VOX_INVALID_ARG);
}

/* Random bytes, and valid nests with one random byte changed: validation answers, and a nest
 * it accepts prints, parses back equal, and runs inside its spans. */
static void test_garbage_nests(struct vox_ctx *ctx)
{
    uint64_t rng = 31337;
    int runs = vox_test_full ? 50000 : 2000;
    for (int r = 0; r < runs; r++) {
        struct vox_nest nest;
        unsigned char *bytes = (unsigned char *)&nest;
        if (r % 2) {
            for (size_t i = 0; i < sizeof nest; i++)
                bytes[i] = (unsigned char)vox_test_rand(&rng);
            if (rnd(&rng, 2))
                nest.ndims = (int)rnd(&rng, 14), nest.norder = (int)rnd(&rng, 26);
        } else {
            random_nest(&rng, &nest);
            bytes[rnd(&rng, sizeof nest)] ^= (unsigned char)(1u << rnd(&rng, 8));
        }
        /* Any bytes but a bool's: a bool other than 0 or 1 is undefined behaviour to read. */
        memset(&nest.accumulate, 0, sizeof nest.accumulate);
        nest.accumulate = rnd(&rng, 2);
        enum vox_status s = vox_nest_validate(ctx, &nest);
        CHECK(s == VOX_OK || s == VOX_INVALID_ARG);
        if (s != VOX_OK) {
            CHECK(vox_ctx_error(ctx)[0] != '\0');
            continue;
        }
        char *text = NULL;
        struct vox_nest back;
        CHECK_OK(vox_nest_to_string(ctx, &nest, &text));
        bool same = text && vox_nest_parse(ctx, text, &back) == VOX_OK &&
                    vox_nest_equal(&nest, &back);
        CHECK(same);
        if (!same)
            fprintf(stderr, "  %s\n", text ? text : "(null)");
        vox_free(ctx, text);
        if (vox_nest_points(&nest) <= 20000)
            interpret_in_spans(ctx, &rng, &nest);
    }
}

/* ---- buffers, allocation failure, estimates -------------------------------------------- */

static void test_print_buffer(struct vox_ctx *ctx)
{
    struct vox_nest nest;
    CHECK(parse_text(ctx, MMC, &nest));
    size_t len = 0;
    char small[10];
    CHECK_STATUS(vox_nest_print(ctx, &nest, small, sizeof small, &len), VOX_INVALID_ARG);
    CHECK(len == strlen(MMC));
    CHECK(strncmp(small, MMC, sizeof small - 1) == 0 && small[9] == '\0');
    CHECK_ERROR_HAS("needs");
    char fits[128];
    CHECK_OK(vox_nest_print(ctx, &nest, fits, strlen(MMC) + 1, &len));
    CHECK(strcmp(fits, MMC) == 0);

    char *str = (char *)&nest;
    vox_ctx_fail_alloc_at(ctx, 1);
    CHECK_STATUS(vox_nest_to_string(ctx, &nest, &str), VOX_OUT_OF_MEMORY);
    CHECK(str == NULL);
    vox_ctx_fail_alloc_at(ctx, 0);
    CHECK_OK(vox_nest_to_string(ctx, &nest, &str));
    CHECK(str && strcmp(str, MMC) == 0);
    vox_free(ctx, str);
}

static void test_estimates(struct vox_ctx *ctx)
{
    struct vox_nest nest;
    CHECK(parse_text(ctx, "dims m=19 n=21 k=13; order m:1 n:1 k:1; C[m:21,n:1] += A[m:13,k:1] * "
                          "B[k:21,n:1]; post bias[n:1] relu", &nest));
    CHECK(vox_nest_points(&nest) == 19.0 * 21 * 13);
    CHECK(vox_nest_flops(&nest) == 2.0 * 19 * 21 * 13 + 2.0 * 19 * 21);
    CHECK(vox_nest_bytes(&nest) == 4.0 * (19 * 13 + 13 * 21 + 19 * 21 + 21));
    CHECK(vox_nest_extra_count(&nest) == 1);
    CHECK(vox_nest_is_reduction(&nest, 2) && !vox_nest_is_reduction(&nest, 0));
    /* A sliding window: 1D conv, the input spans o + k - 1 elements, not o * k. */
    CHECK(parse_text(ctx, "dims o=10 k=3; order o:1 k:1; C[o:1] += A[o:1,k:1] * B[k:1]", &nest));
    CHECK(vox_nest_bytes(&nest) == 4.0 * (12 + 3 + 10));
    int64_t lo, hi;
    int64_t st[VOX_NEST_MAX_DIMS] = {-2, 5};
    vox_nest_span(&nest, st, &lo, &hi);
    CHECK(lo == -18 && hi == 10);
    CHECK(vox_nest_dim_find(&nest, "k") == 1 && vox_nest_dim_find(&nest, "q") == -1);
    CHECK(vox_nest_dim_add(&nest, "k", 3) == -1 && vox_nest_dim_add(&nest, "1x", 3) == -1);
    CHECK(vox_nest_compute_info(VOX_NEST_COMPUTE_COUNT) == NULL);
    CHECK(vox_nest_eltwise_info(VOX_NEST_ELTWISE_COUNT) == NULL);
}

VOX_TEST_MAIN(VOX_TEST(test_matmul_layouts), VOX_TEST(test_gemv_batched), VOX_TEST(test_conv),
              VOX_TEST(test_pool), VOX_TEST(test_eltwise), VOX_TEST(test_order_invariance),
              VOX_TEST(test_transforms), VOX_TEST(test_round_trip), VOX_TEST(test_parse_errors),
              VOX_TEST(test_parse_garbage), VOX_TEST(test_invalid_text),
              VOX_TEST(test_invalid_struct), VOX_TEST(test_garbage_nests),
              VOX_TEST(test_print_buffer), VOX_TEST(test_estimates))
