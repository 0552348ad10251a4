/*
 * test_nn_tune.c: the planner's measured conv choice and its cache (src/nn/fast_tune.c).
 *
 * A net of two convs whose cost-model times for direct and FFT lie within 2x of each other on
 * AVX2 and AVX-512 alike (8 -> 16 channels, 5^3 kernels, valid and same padding, patch 16^3;
 * 16 output channels so the model does not depend on the block width): the first plan times
 * them (source MEASURED, both times > 0) and writes the cache file under a temporary
 * XDG_CACHE_HOME; a second plan with the same tune, and one with a new tune that reloads the
 * file, take them from the cache (CACHED, no new measurement) and give bitwise the same
 * output; every plan is within the f32 tolerance of the reference pass whatever was picked.
 * A corrupt file, or one of the old version, is ignored (measured again, then rewritten), an
 * unwritable cache directory is no error, VOX_PLAN_CACHE=off writes nothing, forced
 * algorithms are honoured without timing, and allocation failures are clean. Timings are
 * never asserted. Under VOX_ISA=ref nothing is timed (source MODEL).
 */
#include "harness.h"
#include "vox/nn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char net_text[] = "input raw channels=8\n"
                               "conv c1 raw -> 16 kernel=5x5x5 act=relu\n"
                               "conv c2 raw -> 16 kernel=5x5x5 pad=same\n"
                               "output o1 c1\n"
                               "output o2 c2\n";
static const int64_t patch[3] = {16, 16, 16};
static const int convs[2] = {1, 2}; /* c1, c2 */

struct fixture {
    struct vox_net *net;
    struct vox_nn_weights *w;
    struct vox_nn_plan *ref;
    struct vox_tensor in;
    char dir[64], file[128];
    bool timed; /* the ISA has a JIT nest to time */
};

static void fixture_make(struct vox_ctx *ctx, struct fixture *f)
{
    memset(f, 0, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/vox_tune_XXXXXX");
    CHECK(mkdtemp(f->dir) != NULL);
    snprintf(f->file, sizeof f->file, "%s/vox/plan-cache.txt", f->dir);
    setenv("XDG_CACHE_HOME", f->dir, 1);
    unsetenv("VOX_PLAN_CACHE");
    f->timed = vox_ctx_cpu(ctx)->isa != VOX_ISA_REF;
    CHECK_OK(vox_net_parse(ctx, net_text, "t.net", &f->net));
    CHECK_OK(vox_nn_weights_create(ctx, f->net, &f->w));
    vox_nn_weights_init(f->net, f->w, VOX_INIT_MSRA, 5);
    CHECK_OK(vox_tensor_alloc(ctx, &f->in, VOX_F32, 5, (int64_t[]){1, 8, 16, 16, 16}));
    uint64_t seed = 9;
    for (int64_t e = 0; e < vox_tensor_numel(&f->in); e++)
        ((float *)f->in.data)[e] = (float)(vox_test_rand(&seed) % 2000) / 1000.0f - 1.0f;
    CHECK_OK(vox_nn_plan_create(ctx, f->net, f->w, patch, &f->ref));
    CHECK_OK(vox_nn_plan_forward(ctx, f->ref, &f->in));
}

static void fixture_free(struct vox_ctx *ctx, struct fixture *f)
{
    remove(f->file);
    char sub[96];
    snprintf(sub, sizeof sub, "%s/vox", f->dir);
    rmdir(sub);
    remove(f->dir);
    vox_tensor_free(ctx, &f->in);
    vox_nn_plan_destroy(f->ref);
    vox_nn_weights_destroy(f->w);
    vox_net_destroy(f->net);
    unsetenv("XDG_CACHE_HOME");
    unsetenv("VOX_PLAN_CACHE");
}

/* Plans with opt, checks each conv's source (and times when timed), runs, compares with the
 * reference (1e-5 of max(1, |ref|)), and copies output o into out (if out). */
static void plan_check(struct vox_ctx *ctx, struct fixture *f,
                       const struct vox_nn_fast_options *opt, enum vox_nn_algo_source want,
                       struct vox_tensor out[2])
{
    struct vox_nn_fast *fast = NULL;
    CHECK_OK(vox_nn_fast_create_opts(ctx, f->net, f->w, patch, opt, &fast));
    if (!fast)
        return;
    for (int k = 0; k < 2; k++) {
        struct vox_nn_fast_layer li;
        vox_nn_fast_layer_info(fast, convs[k], &li);
        CHECK(li.source == want);
        bool timed = want == VOX_NN_ALGO_MEASURED || want == VOX_NN_ALGO_CACHED;
        CHECK(timed == (li.ms_direct > 0 && li.ms_fft > 0));
        if (timed) /* the faster one is taken */
            CHECK((strcmp(li.algo, "fft") == 0) == (li.ms_fft < li.ms_direct));
        if (want == VOX_NN_ALGO_FORCED)
            CHECK((strcmp(li.algo, "fft") == 0) == (opt->algo == VOX_NN_CONV_FFT));
    }
    CHECK_OK(vox_nn_fast_forward(ctx, fast, &f->in));
    for (int o = 0; o < 2; o++) {
        const struct vox_tensor *a = vox_nn_plan_output(f->ref, o),
                                *b = vox_nn_fast_output(fast, o);
        double m = 1, d = 0;
        for (int64_t e = 0; e < vox_tensor_numel(a); e++) {
            double ra = ((const float *)a->data)[e], fb = ((const float *)b->data)[e];
            m = fmax(m, fabs(ra));
            d = fb == fb ? fmax(d, fabs(ra - fb)) : 1e30;
        }
        CHECK(d <= 1e-5 * m);
        if (out) {
            CHECK_OK(vox_tensor_alloc(ctx, &out[o], VOX_F32, 5, b->shape));
            CHECK_OK(vox_tensor_copy(ctx, &out[o], b));
        }
    }
    vox_nn_fast_destroy(fast);
}

static void stats(const struct vox_nn_tune *t, int64_t measured, int64_t hits)
{
    int64_t m, h;
    const char *path;
    vox_nn_tune_stats(t, &m, &h, &path);
    CHECK(m == measured && h == hits);
}

static bool file_starts(const char *path, const char *text)
{
    char line[64] = "";
    FILE *fp = fopen(path, "r");
    if (!fp)
        return false;
    bool ok = fgets(line, sizeof line, fp) && strncmp(line, text, strlen(text)) == 0;
    fclose(fp);
    return ok;
}

static void free_pair(struct vox_ctx *ctx, struct vox_tensor t[2])
{
    vox_tensor_free(ctx, &t[0]);
    vox_tensor_free(ctx, &t[1]);
}

static void test_measure_and_cache(struct vox_ctx *ctx)
{
    struct fixture f;
    fixture_make(ctx, &f);
    const enum vox_nn_algo_source measured = f.timed ? VOX_NN_ALGO_MEASURED : VOX_NN_ALGO_MODEL;
    const enum vox_nn_algo_source cached = f.timed ? VOX_NN_ALGO_CACHED : VOX_NN_ALGO_MODEL;
    struct vox_nn_tune *t1 = NULL, *t2 = NULL;
    struct vox_tensor a[2] = {0}, b[2] = {0}, c[2] = {0};
    CHECK_OK(vox_nn_tune_create(ctx, &t1));
    struct vox_nn_fast_options opt = {.algo = VOX_NN_CONV_AUTO, .tune = t1};
    plan_check(ctx, &f, &opt, measured, a);
    stats(t1, f.timed ? 2 : 0, 0);
    CHECK(file_starts(f.file, "# vox plan cache 5") == f.timed);
    plan_check(ctx, &f, &opt, cached, b); /* in memory */
    stats(t1, f.timed ? 2 : 0, f.timed ? 2 : 0);
    CHECK_OK(vox_nn_tune_create(ctx, &t2)); /* from the file */
    opt.tune = t2;
    plan_check(ctx, &f, &opt, cached, c);
    stats(t2, 0, f.timed ? 2 : 0);
    for (int o = 0; o < 2; o++) /* one plan: bitwise the same results */
        CHECK(a[o].data && b[o].data && c[o].data &&
              memcmp(a[o].data, b[o].data, vox_tensor_nbytes(&a[o])) == 0 &&
              memcmp(a[o].data, c[o].data, vox_tensor_nbytes(&a[o])) == 0);
    vox_nn_tune_destroy(t2);
    /* corrupt, or of the old version (two times a line): ignored, measured again, rewritten
     * (untimed, nothing made the directory) */
    static const char *const bad[2] = {"# vox plan cache 5\nAMD|avx512|t2|garbage 1.0\n",
                                       "# vox plan cache 1\nAMD|avx512|t2|k 1.0 2.0\n"};
    for (int k = 0; k < 2; k++) {
        FILE *fp = f.timed ? fopen(f.file, "w") : NULL;
        CHECK(fp != NULL || !f.timed);
        if (fp) {
            fputs(bad[k], fp);
            fclose(fp);
        }
        CHECK_OK(vox_nn_tune_create(ctx, &t2));
        opt.tune = t2;
        plan_check(ctx, &f, &opt, measured, NULL);
        stats(t2, f.timed ? 2 : 0, 0);
        CHECK(file_starts(f.file, "# vox plan cache 5") == f.timed);
        vox_nn_tune_destroy(t2);
    }
    CHECK_OK(vox_nn_tune_create(ctx, &t2));
    stats(t2, 0, 0);
    opt.tune = t2;
    plan_check(ctx, &f, &opt, cached, NULL);
    vox_nn_tune_destroy(t2);
    vox_nn_tune_destroy(t1);
    free_pair(ctx, a);
    free_pair(ctx, b);
    free_pair(ctx, c);
    fixture_free(ctx, &f);
}

static void test_off_unwritable_forced(struct vox_ctx *ctx)
{
    struct fixture f;
    fixture_make(ctx, &f);
    const enum vox_nn_algo_source measured = f.timed ? VOX_NN_ALGO_MEASURED : VOX_NN_ALGO_MODEL;
    struct vox_nn_tune *t = NULL;
    setenv("VOX_PLAN_CACHE", "off", 1);
    CHECK_OK(vox_nn_tune_create(ctx, &t));
    int64_t m, h;
    const char *path = "x";
    if (t)
        vox_nn_tune_stats(t, &m, &h, &path);
    CHECK(strcmp(path, "") == 0);
    struct vox_nn_fast_options opt = {.algo = VOX_NN_CONV_AUTO, .tune = t};
    plan_check(ctx, &f, &opt, measured, NULL);
    CHECK(access(f.file, F_OK) != 0);
    vox_nn_tune_destroy(t);
    unsetenv("VOX_PLAN_CACHE");
    /* the cache "directory" is a file: nothing can be written, nothing fails */
    char blocker[96];
    snprintf(blocker, sizeof blocker, "%s/vox", f.dir);
    FILE *fp = fopen(blocker, "w");
    CHECK(fp != NULL);
    if (fp)
        fclose(fp);
    CHECK_OK(vox_nn_tune_create(ctx, &t));
    opt.tune = t;
    plan_check(ctx, &f, &opt, measured, NULL);
    plan_check(ctx, &f, &opt, f.timed ? VOX_NN_ALGO_CACHED : VOX_NN_ALGO_MODEL, NULL);
    remove(blocker);
    /* forced: no timing */
    opt.algo = VOX_NN_CONV_DIRECT;
    plan_check(ctx, &f, &opt, VOX_NN_ALGO_FORCED, NULL);
    opt.algo = VOX_NN_CONV_FFT;
    plan_check(ctx, &f, &opt, VOX_NN_ALGO_FORCED, NULL);
    stats(t, f.timed ? 2 : 0, f.timed ? 2 : 0);
    vox_nn_tune_destroy(t);
    fixture_free(ctx, &f);
}

static void test_alloc_failures(struct vox_ctx *ctx)
{
    struct fixture f;
    fixture_make(ctx, &f);
    setenv("VOX_PLAN_CACHE", "off", 1);
    for (int64_t k = 1;; k++) {
        struct vox_nn_tune *t = NULL;
        struct vox_nn_fast *fast = NULL;
        vox_ctx_fail_alloc_at(ctx, k);
        enum vox_status s = vox_nn_tune_create(ctx, &t);
        struct vox_nn_fast_options opt = {.algo = VOX_NN_CONV_AUTO, .tune = t};
        if (s == VOX_OK)
            s = vox_nn_fast_create_opts(ctx, f.net, f.w, patch, &opt, &fast);
        vox_ctx_fail_alloc_at(ctx, 0);
        vox_nn_fast_destroy(fast);
        vox_nn_tune_destroy(t);
        if (s == VOX_OK)
            break;
        CHECK(s == VOX_OUT_OF_MEMORY && fast == NULL);
        if (s != VOX_OUT_OF_MEMORY)
            break;
    }
    fixture_free(ctx, &f);
}

VOX_TEST_MAIN(VOX_TEST(test_measure_and_cache), VOX_TEST(test_off_unwritable_forced),
              VOX_TEST(test_alloc_failures))
