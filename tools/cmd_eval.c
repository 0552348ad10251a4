/*
 * cmd_eval.c: `vox eval`: scores a segmentation against a ground truth: adapted Rand error,
 * Rand split/merge, VOI split/merge (bits), and the largest split and merge errors.
 *
 * Both volumes are read in slabs of z slices and counted into one contingency table, so only
 * the table and two slabs are in memory: volumes larger than RAM work. The label-0 conventions
 * are those of vox/metrics.h; the default is scikit-image's (gt 0 ignored, seg 0 a label).
 */
#include "cli.h"
#include "vox/io.h"

#include <stdio.h>
#include <string.h>

static const char help[] =
    "usage: vox eval --seg SPEC --gt SPEC [options]\n\n"
    "Scores a segmentation against a ground truth. SPEC is file.h5:/dataset, file.h5 (one\n"
    "dataset) or file.npy; both are (Z, Y, X) volumes of the same shape with labels of type\n"
    "uint8, uint16, uint32, uint64 or int32. Rand scores count pairs of distinct voxels\n"
    "(adapted Rand error = 1 - F-score of Rand split and merge, as in SNEMI3D and\n"
    "skimage.metrics.adapted_rand_error); VOI split = H(seg|gt), merge = H(gt|seg), in bits.\n\n"
    "  --seg SPEC       the segmentation (required)\n"
    "  --gt SPEC        the ground truth (required)\n"
    "  --ignore-gt0     do not count voxels where gt == 0 (default)\n"
    "  --keep-gt0       count gt label 0 as an ordinary label\n"
    "  --seg0 MODE      what seg label 0 is: label (an ordinary segment; default),\n"
    "                   singletons (each voxel its own segment), ignore (not counted)\n"
    "  --rand-squares   Rand scores from sum n^2 (self-pairs counted, as waterz and\n"
    "                   zwatershed do) instead of pairs of distinct voxels\n"
    "  --top K          list the K gt labels split the most and the K segments merging the\n"
    "                   most, by VOI share (default 10; 0: none)\n"
    "  --slab Z         z slices read at a time (default: about 64 MiB per volume)\n"
    "  --json           one JSON object instead of text: seg, gt, gt0, seg0, rand, voxels,\n"
    "                   n_seg, n_gt, adapted_rand_error, rand_split, rand_merge, voi_split,\n"
    "                   voi_merge, voi, top_splits [{gt, voxels, pieces, voi}], top_merges\n"
    "                   [{seg, voxels, pieces, voi}]\n"
    "  --threads N      worker threads (default: VOX_THREADS, else all CPUs)\n"
    "  --quiet          no progress bar\n";

struct eval_args {
    const char *seg, *gt;
    struct vox_metrics_options opt;
    int64_t top, slab;
    bool json;
    struct cli_common common;
};

static int parse_option(int argc, char **argv, int *i, void *arg)
{
    struct eval_args *a = arg;
    const char *o = argv[*i], *v;
    if (strcmp(o, "--ignore-gt0") == 0 || strcmp(o, "--keep-gt0") == 0) {
        a->opt.keep_gt0 = strcmp(o, "--keep-gt0") == 0;
    } else if (strcmp(o, "--rand-squares") == 0) {
        a->opt.rand_squares = true;
    } else if (strcmp(o, "--json") == 0) {
        a->json = true;
    } else if (strcmp(o, "--seg") == 0 || strcmp(o, "--gt") == 0) {
        if (!(v = cli_value("eval", argc, argv, i)))
            return 2;
        *(o[2] == 's' ? &a->seg : &a->gt) = v;
    } else if (strcmp(o, "--seg0") == 0) {
        static const char *modes[] = {"label", "singletons", "ignore"};
        if (!(v = cli_value("eval", argc, argv, i)))
            return 2;
        int k = 0;
        while (k < 3 && strcmp(v, modes[k]) != 0)
            k++;
        if (k == 3)
            return cli_usage("eval", "--seg0 '%s': expected label, singletons or ignore", v);
        a->opt.seg0 = (enum vox_seg0)k;
    } else if (strcmp(o, "--top") == 0 || strcmp(o, "--slab") == 0) {
        bool top = strcmp(o, "--top") == 0;
        if (!(v = cli_value("eval", argc, argv, i)))
            return 2;
        if (!cli_parse_i64(v, top ? 0 : 1, top ? 1000000 : INT64_MAX, top ? &a->top : &a->slab))
            return cli_usage("eval", "%s '%s': expected an integer >= %d", o, v, top ? 0 : 1);
    } else {
        return cli_usage("eval", "unknown option '%s'", o);
    }
    return 0;
}

static int parse_args(int argc, char **argv, struct eval_args *a)
{
    int r = cli_parse_options("eval", argc, argv, help, &a->common, parse_option, a);
    if (r)
        return r;
    if (!a->seg || !a->gt)
        return cli_usage("eval", "--seg and --gt are required");
    return 0;
}

static enum vox_status check_volumes(struct vox_ctx *ctx, struct vox_volume *seg,
                                     struct vox_volume *gt)
{
    const struct vox_volume_info *s = vox_volume_info(seg), *g = vox_volume_info(gt);
    const struct vox_volume_info *in[2] = {s, g};
    struct vox_volume *vols[2] = {seg, gt};
    for (int k = 0; k < 2; k++) {
        if (in[k]->rank != 3)
            return vox_fail(ctx, VOX_INVALID_ARG, "%s: rank %d, expected a (Z, Y, X) volume",
                            vox_volume_name(vols[k]), in[k]->rank);
        if (in[k]->dtype == VOX_F32)
            return vox_fail(ctx, VOX_UNSUPPORTED, "%s: dtype f32, expected integer labels "
                            "(uint8, uint16, uint32, uint64 or int32)", vox_volume_name(vols[k]));
    }
    if (memcmp(s->shape, g->shape, 3 * sizeof s->shape[0]) != 0)
        return vox_fail(ctx, VOX_INVALID_ARG, "shape mismatch: %s is (%lld, %lld, %lld) but %s "
                        "is (%lld, %lld, %lld)", vox_volume_name(seg), (long long)s->shape[0],
                        (long long)s->shape[1], (long long)s->shape[2], vox_volume_name(gt),
                        (long long)g->shape[0], (long long)g->shape[1], (long long)g->shape[2]);
    return VOX_OK;
}

/* Counts both volumes into t, `slab` z slices at a time (0: about 64 MiB per volume). */
static enum vox_status count_volumes(struct vox_ctx *ctx, struct vox_volume *seg,
                                     struct vox_volume *gt, int64_t slab, bool quiet,
                                     struct vox_contingency *t)
{
    const struct vox_volume_info *si = vox_volume_info(seg), *gi = vox_volume_info(gt);
    int64_t nz = si->shape[0], plane = si->shape[1] * si->shape[2];
    if (slab == 0) {
        int64_t bytes = (int64_t)vox_dtype_size(VOX_U64) * (plane > 0 ? plane : 1);
        slab = (64 << 20) / bytes > 1 ? (64 << 20) / bytes : 1;
    }
    slab = slab < nz ? slab : (nz > 0 ? nz : 1);
    struct vox_tensor sb = {0}, gb = {0};
    int64_t shape[3] = {slab, si->shape[1], si->shape[2]};
    enum vox_status st = vox_tensor_alloc(ctx, &sb, si->dtype, 3, shape);
    st = st ? st : vox_tensor_alloc(ctx, &gb, gi->dtype, 3, shape);
    struct vox_progress *p = vox_progress_start(ctx, "eval", nz, "slices", quiet);
    for (int64_t z = 0; z < nz && st == VOX_OK; z += slab) {
        int64_t dz = nz - z < slab ? nz - z : slab;
        int64_t lo[3] = {z, 0, 0}, hi[3] = {z + dz, si->shape[1], si->shape[2]};
        int64_t vlo[3] = {0, 0, 0}, vhi[3] = {dz, si->shape[1], si->shape[2]};
        struct vox_tensor sv, gv;
        st = vox_tensor_view_box(ctx, &sb, vlo, vhi, &sv);
        st = st ? st : vox_tensor_view_box(ctx, &gb, vlo, vhi, &gv);
        st = st ? st : vox_volume_read(ctx, seg, lo, hi, &sv);
        st = st ? st : vox_volume_read(ctx, gt, lo, hi, &gv);
        st = st ? st : vox_contingency_add(ctx, t, &sv, &gv);
        vox_progress_add(p, dz);
    }
    vox_progress_finish(p);
    vox_tensor_free(ctx, &sb);
    vox_tensor_free(ctx, &gb);
    return st;
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static const char *seg0_name(enum vox_seg0 m)
{
    return m == VOX_SEG0_SINGLETONS ? "singletons" : m == VOX_SEG0_IGNORE ? "ignore" : "label";
}

static void print_errors_json(const char *key, const char *label,
                              const struct vox_metrics_error *e, int64_t n)
{
    printf(",\"%s\":[", key);
    for (int64_t i = 0; i < n; i++)
        printf("%s{\"%s\":%llu,\"voxels\":%lld,\"pieces\":%lld,\"voi\":%.17g}", i ? "," : "",
               label, (unsigned long long)e[i].label, (long long)e[i].voxels,
               (long long)e[i].pieces, e[i].voi);
    printf("]");
}

static void print_json(const struct eval_args *a, const struct vox_metrics *m,
                       const struct vox_metrics_error *sp, int64_t nsp,
                       const struct vox_metrics_error *me, int64_t nme)
{
    printf("{\"seg\":");
    json_str(a->seg);
    printf(",\"gt\":");
    json_str(a->gt);
    printf(",\"gt0\":\"%s\",\"seg0\":\"%s\",\"rand\":\"%s\"", a->opt.keep_gt0 ? "label" : "ignore",
           seg0_name(a->opt.seg0), a->opt.rand_squares ? "squares" : "pairs");
    printf(",\"voxels\":%lld,\"n_seg\":%lld,\"n_gt\":%lld", (long long)m->voxels,
           (long long)m->n_seg, (long long)m->n_gt);
    printf(",\"adapted_rand_error\":%.17g,\"rand_split\":%.17g,\"rand_merge\":%.17g",
           m->adapted_rand_error, m->rand_split, m->rand_merge);
    printf(",\"voi_split\":%.17g,\"voi_merge\":%.17g,\"voi\":%.17g", m->voi_split, m->voi_merge,
           m->voi_split + m->voi_merge);
    print_errors_json("top_splits", "gt", sp, nsp);
    print_errors_json("top_merges", "seg", me, nme);
    printf("}\n");
}

static void print_text(const struct eval_args *a, const struct vox_metrics *m,
                       const struct vox_metrics_error *sp, int64_t nsp,
                       const struct vox_metrics_error *me, int64_t nme)
{
    printf("voxels              %lld counted (gt 0: %s, seg 0: %s)\n", (long long)m->voxels,
           a->opt.keep_gt0 ? "a label" : "ignored", seg0_name(a->opt.seg0));
    printf("labels              %lld segments, %lld gt labels\n", (long long)m->n_seg,
           (long long)m->n_gt);
    printf("adapted Rand error  %.6f (Rand split %.6f, merge %.6f; %s)\n",
           m->adapted_rand_error, m->rand_split, m->rand_merge,
           a->opt.rand_squares ? "sum n^2" : "pairs");
    printf("VOI                 %.6f bits (split %.6f, merge %.6f)\n",
           m->voi_split + m->voi_merge, m->voi_split, m->voi_merge);
    if (nsp)
        printf("largest splits      gt label: voxels, segments, VOI split share\n");
    for (int64_t i = 0; i < nsp; i++)
        printf("  %18llu: %lld, %lld, %.6f\n", (unsigned long long)sp[i].label,
               (long long)sp[i].voxels, (long long)sp[i].pieces, sp[i].voi);
    if (nme)
        printf("largest merges      segment: voxels, gt labels, VOI merge share\n");
    for (int64_t i = 0; i < nme; i++)
        printf("  %18llu: %lld, %lld, %.6f\n", (unsigned long long)me[i].label,
               (long long)me[i].voxels, (long long)me[i].pieces, me[i].voi);
}

/* Reads, counts and scores; prints on success. */
static enum vox_status evaluate(struct vox_ctx *ctx, const struct eval_args *a)
{
    struct vox_volume *seg = NULL, *gt = NULL;
    struct vox_contingency *t = NULL;
    struct vox_metrics_error *sp = NULL, *me = NULL;
    int64_t nsp = 0, nme = 0;
    struct vox_metrics m;
    enum vox_status st = vox_volume_open(ctx, a->seg, &seg);
    st = st ? st : vox_volume_open(ctx, a->gt, &gt);
    st = st ? st : check_volumes(ctx, seg, gt);
    st = st ? st : vox_contingency_create(ctx, &t);
    st = st ? st : count_volumes(ctx, seg, gt, a->slab, a->common.quiet || a->json, t);
    st = st ? st : vox_metrics_compute(ctx, t, &a->opt, &m);
    if (st == VOX_OK && a->top > 0) {
        sp = vox_alloc(ctx, 2 * (size_t)a->top * sizeof *sp);
        me = sp ? sp + a->top : NULL;
        st = sp ? vox_metrics_top_errors(ctx, t, &a->opt, a->top, sp, &nsp, me, &nme)
                : VOX_OUT_OF_MEMORY;
    }
    if (st == VOX_OK)
        (a->json ? print_json : print_text)(a, &m, sp, nsp, me, nme);
    vox_free(ctx, sp);
    vox_contingency_destroy(t);
    vox_volume_close(seg);
    vox_volume_close(gt);
    return st;
}

int vox_cmd_eval(int argc, char **argv)
{
    struct eval_args a = {.top = 10};
    int r = parse_args(argc, argv, &a);
    if (r)
        return r < 0 ? 0 : r;
    struct vox_ctx *ctx = cli_ctx_create("eval", &a.common);
    if (!ctx)
        return 1;
    enum vox_status st = evaluate(ctx, &a);
    int rc = st == VOX_OK ? 0 : cli_fail("eval", ctx, st);
    vox_ctx_destroy(ctx);
    return rc;
}
