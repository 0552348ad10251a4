/*
 * cmd_demo.c: `vox demo`, the main job on built-in data: the whole pipeline from an EM image to
 * a scored segmentation, with nothing to download.
 *
 *   synthetic EM (vox_synth_generate)  raw, ground-truth labels, true affinities
 *     → affinities                     a ConvNet's predictions on the fast forward pass
 *                                      (demo_model.c; by default the shipped model
 *                                      nets/synth_aff.h5), or with --preset the true
 *                                      affinities degraded (vox_synth_degrade)
 *     → segmentation                   vox_segment: watershed, size merge, agglomeration
 *     → evaluation                     every threshold of the merge history in one pass
 *     → files                          DIR/demo.h5 (raw, labels, affinities, seg) and
 *                                      DIR/demo.png (raw | segmentation | ground truth)
 */
#include "cli.h"
#include "demo_model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char help[] =
    "usage: vox demo [--out DIR] [--shape Z,Y,X] [--seed N]\n"
    "                [--model FILE.h5|shipped [--views N] | --preset smooth|noisy]\n"
    "                [--threads N] [--quiet]\n\n"
    "Runs vox's pipeline on a synthetic EM volume with ground truth: generate the image,\n"
    "predict its affinities with a ConvNet (or, with --preset, degrade the true ones),\n"
    "segment them (watershed, size-dependent single linkage, mean-affinity agglomeration),\n"
    "score every agglomeration threshold against the ground truth (VOI split/merge in bits,\n"
    "adapted Rand error), and write the results.\n\n"
    "  --out DIR       where to write demo.h5 and demo.png (default: vox-demo)\n"
    "  --shape Z,Y,X   volume size in voxels (default 48,192,192)\n"
    "  --seed N        synthetic volume seed (default 1)\n"
    "  --model M       predict the affinities with a ConvNet: FILE.h5 with its spec FILE.net\n"
    "                  next to it, or 'shipped': nets/synth_aff.h5, found from the executable\n"
    "                  (EXEDIR/../nets, EXEDIR/nets or EXEDIR/../../nets) (default shipped)\n"
    "  --views N       average the model's predictions over N views of the volume, 1 to 8:\n"
    "                  identity, x-y transpose, x-y flip, both, then the same with z flipped\n"
    "                  (test-time augmentation; default 4)\n"
    "  --preset P      instead of a model: the true affinities degraded like a smooth (good)\n"
    "                  or noisy network's output (default: none, use the model)\n"
    "  --threads N     worker threads (default: VOX_THREADS, else all CPUs)\n"
    "  --quiet         no progress output\n\n"
    "demo.h5 holds /raw (u8), /labels (u64 ground truth), /affinities (u8, 3,Z,Y,X; a/255) and\n"
    "/seg (u64, at the best threshold); open it with h5py. demo.png shows the middle z-slice.\n";

struct demo_opts {
    const char *out;
    int64_t shape[3];
    uint64_t seed;
    enum vox_synth_preset preset;
    bool use_preset;
    int views;
    const char *model;
    struct cli_common common;
};

static int parse(int argc, char **argv, struct demo_opts *o)
{
    for (int i = 1; i < argc; i++) {
        int r = cli_common_option("demo", argc, argv, &i, &o->common);
        if (r != 1) {
            if (r == 2)
                return 2;
            continue;
        }
        const char *a = argv[i], *v;
        int64_t n;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(help, stdout);
            return -1;
        }
        if (strcmp(a, "--out") != 0 && strcmp(a, "--shape") != 0 && strcmp(a, "--seed") != 0 &&
            strcmp(a, "--preset") != 0 && strcmp(a, "--model") != 0 && strcmp(a, "--views") != 0)
            return cli_usage("demo", "unknown option '%s'", a);
        if (!(v = cli_value("demo", argc, argv, &i)))
            return 2;
        if (strcmp(a, "--out") == 0)
            o->out = v;
        else if (strcmp(a, "--model") == 0)
            o->model = v;
        else if (strcmp(a, "--shape") == 0 && !cli_parse_shape(v, 3, 1, 4096, o->shape))
            return cli_usage("demo", "--shape %s: expected Z,Y,X, each 1 to 4096", v);
        else if (strcmp(a, "--views") == 0) {
            if (!cli_parse_i64(v, 1, 8, &n))
                return cli_usage("demo", "--views %s: expected a whole number 1 to 8", v);
            o->views = (int)n;
        } else if (strcmp(a, "--seed") == 0) {
            if (!cli_parse_i64(v, 0, INT64_MAX, &n))
                return cli_usage("demo", "--seed %s: expected a whole number >= 0", v);
            o->seed = (uint64_t)n;
        } else if (strcmp(a, "--preset") == 0) {
            if (!vox_synth_preset_parse(v, &o->preset))
                return cli_usage("demo", "--preset %s: expected smooth or noisy", v);
            o->use_preset = true;
        }
    }
    if (o->use_preset && o->model)
        return cli_usage("demo", "--model and --preset exclude each other");
    if (!o->model && !o->use_preset)
        o->model = "shipped";
    return 0;
}

/* A label's colour: a hash, so neighbours differ and the same id always looks the same. */
static void label_rgb(uint64_t id, uint8_t rgb[3])
{
    uint64_t h = id * 0x9E3779B97F4A7C15ull;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    for (int c = 0; c < 3; c++)
        rgb[c] = (uint8_t)(64 + (h >> (8 * c)) % 192);
}

/* The middle z-slice as three panels: raw, raw + segmentation, raw + ground truth. */
static enum vox_status write_png(struct vox_ctx *ctx, const char *path,
                                 const struct vox_tensor *raw, const struct vox_tensor *seg,
                                 const struct vox_tensor *gt)
{
    int64_t h = raw->shape[1], w = raw->shape[2], z = raw->shape[0] / 2, gap = 4;
    int64_t W = 3 * w + 2 * gap;
    uint8_t *img = vox_calloc(ctx, (size_t)(W * h), 3);
    if (!img)
        return VOX_OUT_OF_MEMORY;
    const uint8_t *r = (const uint8_t *)raw->data + z * h * w;
    const uint64_t *lab[2] = {(const uint64_t *)seg->data + z * h * w,
                              (const uint64_t *)gt->data + z * h * w};
    for (int64_t y = 0; y < h; y++)
        for (int64_t x = 0; x < w; x++) {
            uint8_t g = r[y * w + x];
            uint8_t *p = img + 3 * (y * W + x);
            p[0] = p[1] = p[2] = g;
            for (int k = 0; k < 2; k++) {
                uint8_t c[3] = {0, 0, 0};
                uint64_t id = lab[k][y * w + x];
                if (id)
                    label_rgb(id, c);
                uint8_t *q = img + 3 * (y * W + x + (k + 1) * (w + gap));
                for (int ch = 0; ch < 3; ch++)
                    q[ch] = (uint8_t)((g + 2 * c[ch]) / 3);
            }
        }
    enum vox_status s = vox_png_write_rgb(ctx, path, W, h, img);
    vox_free(ctx, img);
    return s;
}

struct demo_data {
    struct vox_tensor raw, gt, aff_true, aff, seg;
    struct vox_seg_result res;
    struct vox_contingency *table;
    struct vox_metrics *m;
    int64_t *a, *b;
    double *score;
};

static void demo_free(struct vox_ctx *ctx, struct demo_data *d)
{
    vox_tensor_free(ctx, &d->raw);
    vox_tensor_free(ctx, &d->gt);
    vox_tensor_free(ctx, &d->aff_true);
    vox_tensor_free(ctx, &d->aff);
    vox_tensor_free(ctx, &d->seg);
    vox_seg_result_fini(ctx, &d->res);
    vox_contingency_destroy(d->table);
    vox_free(ctx, d->m);
    vox_free(ctx, d->a);
    vox_free(ctx, d->b);
    vox_free(ctx, d->score);
}

/* Scores every prefix of the merge history, then reports the thresholds of a grid: a cut at t
 * applies the merges up to the first that vox_merge_applies(score, t) rejects. */
static enum vox_status score_thresholds(struct vox_ctx *ctx, struct demo_data *d, bool quiet,
                                        double *best_t_out)
{
    const struct vox_merge_history *h = &d->res.merges;
    int64_t n = h->n;
    d->a = vox_calloc(ctx, (size_t)n + 1, sizeof *d->a);
    d->b = vox_calloc(ctx, (size_t)n + 1, sizeof *d->b);
    d->score = vox_calloc(ctx, (size_t)n + 1, sizeof *d->score);
    d->m = vox_calloc(ctx, (size_t)n + 1, sizeof *d->m);
    if (!d->a || !d->b || !d->score || !d->m)
        return VOX_OUT_OF_MEMORY;
    for (int64_t i = 0; i < n; i++)
        d->a[i] = h->m[i].a, d->b[i] = h->m[i].b, d->score[i] = h->m[i].score;
    enum vox_status s = vox_contingency_create(ctx, &d->table);
    if (s == VOX_OK)
        s = vox_contingency_add(ctx, d->table, &d->res.labels, &d->gt);
    if (s == VOX_OK)
        s = vox_metrics_history(ctx, d->table, NULL, n, d->a, d->b, d->score, 0, NULL, d->m);
    if (s != VOX_OK)
        return s;
    double best = 1e300;
    if (!quiet)
        printf("\n  threshold   segments   VOI split   VOI merge   adapted Rand error\n");
    for (int k = 1; k <= 19; k++) {
        double t = 0.05 * k;
        int64_t applied = 0;
        while (applied < n && vox_merge_applies(h->m[applied].score, t))
            applied++;
        const struct vox_metrics *m = &d->m[applied];
        double voi = m->voi_split + m->voi_merge;
        if (!quiet && k % 2 == 0)
            printf("  %9.2f %10lld %11.3f %11.3f %20.4f\n", t, (long long)(d->res.nseg - applied),
                   m->voi_split, m->voi_merge, m->adapted_rand_error);
        if (voi < best - 1e-12) {
            best = voi;
            *best_t_out = t;
        }
    }
    return VOX_OK;
}

static enum vox_status write_h5(struct vox_ctx *ctx, const char *path, struct demo_data *d)
{
    struct vox_out_file *f;
    enum vox_status s = vox_out_open(ctx, path, &f);
    if (s != VOX_OK)
        return s;
    const struct {
        const char *name;
        const struct vox_tensor *t;
    } sets[] = {
        {"/raw", &d->raw}, {"/labels", &d->gt}, {"/affinities", &d->aff}, {"/seg", &d->seg}};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0] && s == VOX_OK; i++) {
        struct vox_dataset_options o = {.dtype = sets[i].t->dtype,
                                        .rank = sets[i].t->rank,
                                        .gzip = 1,
                                        .has_resolution = true,
                                        .resolution = {40, 4, 4}};
        memcpy(o.shape, sets[i].t->shape, sizeof o.shape);
        struct vox_volume *v;
        s = vox_out_dataset(ctx, f, sets[i].name, &o, &v);
        if (s == VOX_OK)
            s = vox_volume_write(ctx, v, NULL, sets[i].t);
    }
    if (s != VOX_OK) {
        vox_out_abort(f);
        return s;
    }
    return vox_out_commit(ctx, f);
}

static enum vox_status run_demo(struct vox_ctx *ctx, const struct demo_opts *o, struct demo_data *d)
{
    bool q = o->common.quiet;
    struct vox_synth_params sp;
    vox_synth_defaults(&sp);
    memcpy(sp.shape, o->shape, sizeof sp.shape);
    sp.seed = o->seed;
    double t0 = vox_time_now();
    int64_t cells;
    enum vox_status s = vox_synth_generate(ctx, &sp, &d->raw, &d->gt, &d->aff_true, &cells);
    if (s != VOX_OK)
        return s;
    double t1 = vox_time_now();
    if (!q)
        printf("synth     %lld x %lld x %lld voxels (40 x 4 x 4 nm), %lld cells (%.2f s)\n",
               (long long)o->shape[0], (long long)o->shape[1], (long long)o->shape[2],
               (long long)cells, t1 - t0);
    if (o->use_preset)
        s = vox_synth_degrade(ctx, &d->aff_true, o->preset, o->seed, &d->aff);
    else
        s = demo_model_predict(ctx, o->model, &d->raw, o->views, &d->aff);
    if (s != VOX_OK)
        return s;
    double ti = vox_time_now();
    if (o->use_preset)
        printf("affinity  %s preset: the true affinities degraded (%.2f s)\n",
               vox_synth_preset_str(o->preset), ti - t1);
    else
        printf("affinity  model %s, fast forward pass, %d views (%.2f s, %.1f Mvox/s)\n", o->model,
               o->views, ti - t1, (double)vox_tensor_numel(&d->raw) * o->views / (ti - t1) * 1e-6);
    t1 = ti;
    struct vox_seg_params p;
    vox_seg_params_defaults(&p);
    if ((s = vox_segment(ctx, &d->aff, &p, &d->res)) != VOX_OK)
        return s;
    double t2 = vox_time_now(), voxels = (double)vox_tensor_numel(&d->raw);
    if (!q)
        printf("segment   %lld basins -> %lld segments after size merge, %lld merges recorded "
               "(%.2f s, %.1f Mvox/s)\n",
               (long long)d->res.nbasins, (long long)d->res.nseg, (long long)d->res.merges.n,
               t2 - t1, voxels / (t2 - t1) * 1e-6);
    double best_t = 0.5;
    if ((s = score_thresholds(ctx, d, q, &best_t)) != VOX_OK)
        return s;
    if ((s = vox_tensor_alloc(ctx, &d->seg, VOX_U64, 3, d->raw.shape)) != VOX_OK)
        return s;
    int64_t nfinal;
    s = vox_merge_history_cut(ctx, &d->res.merges, &d->res.labels, best_t, &d->seg, &nfinal);
    if (s != VOX_OK)
        return s;
    struct vox_contingency *t;
    struct vox_metrics m;
    if ((s = vox_contingency_create(ctx, &t)) != VOX_OK)
        return s;
    s = vox_contingency_add(ctx, t, &d->seg, &d->gt);
    if (s == VOX_OK)
        s = vox_metrics_compute(ctx, t, NULL, &m);
    vox_contingency_destroy(t);
    if (s != VOX_OK)
        return s;
    double t3 = vox_time_now();
    printf("\nbest threshold %.2f (chosen against the ground truth): %lld segments (ground truth: "
           "%lld cells)\n"
           "  VOI split %.3f bits, VOI merge %.3f bits, adapted Rand error %.4f  (%.2f s)\n",
           best_t, (long long)nfinal, (long long)cells, m.voi_split, m.voi_merge,
           m.adapted_rand_error, t3 - t2);
    char path[4096];
    snprintf(path, sizeof path, "%s/demo.h5", o->out);
    if ((s = write_h5(ctx, path, d)) != VOX_OK)
        return s;
    printf("wrote     %s (/raw, /labels, /affinities, /seg)\n", path);
    snprintf(path, sizeof path, "%s/demo.png", o->out);
    if ((s = write_png(ctx, path, &d->raw, &d->seg, &d->gt)) != VOX_OK)
        return s;
    printf("wrote     %s (middle slice: raw | segmentation | ground truth)\n", path);
    printf("total     %.2f s\n", vox_time_now() - t0);
    return VOX_OK;
}

int vox_cmd_demo(int argc, char **argv)
{
    struct demo_opts o = {.out = "vox-demo",
                          .shape = {48, 192, 192},
                          .seed = 1,
                          .preset = VOX_SYNTH_NOISY,
                          .views = 4};
    int r = parse(argc, argv, &o);
    if (r)
        return r < 0 ? 0 : r;
    char model[4096];
    if (o.model && strcmp(o.model, "shipped") == 0) {
        if (!demo_model_find(model, sizeof model)) {
            fprintf(stderr,
                    "vox demo: error: cannot find the shipped model %s (searched "
                    "EXEDIR/../nets, EXEDIR/nets, EXEDIR/../../nets); give --model "
                    "FILE.h5 or --preset smooth|noisy\n",
                    DEMO_MODEL_NAME);
            return 1;
        }
        o.model = model;
    }
    if (mkdir(o.out, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "vox demo: error: cannot create %s: %s\n", o.out, strerror(errno));
        return 1;
    }
    struct vox_ctx *ctx = cli_ctx_create("demo", &o.common);
    if (!ctx)
        return 1;
    const struct vox_cpu *c = vox_ctx_cpu(ctx);
    if (!o.common.quiet)
        printf("vox demo  %s, %s, %d threads\n", c->model, vox_isa_str(c->isa),
               vox_ctx_threads(ctx));
    struct demo_data d = {0};
    enum vox_status s = run_demo(ctx, &o, &d);
    int rc = s == VOX_OK ? 0 : cli_fail("demo", ctx, s);
    demo_free(ctx, &d);
    vox_ctx_destroy(ctx);
    return rc;
}
