/*
 * cmd_segment.c: `vox segment`: affinities (or a boundary map) to a segmentation: watershed,
 * size-dependent single linkage with dust removal, mean/quantile agglomeration, cut at one or
 * more thresholds; also re-cuts a stored merge history (--from) without recomputing.
 *
 * The pipeline is vox_segment's (include/vox/seg.h), run here step by step so that each phase
 * is timed and reported. Everything goes into one HDF5 file written atomically: any error
 * leaves no output file. The merge history is stored with float32 scores, and every cut this
 * command writes (direct or re-cut) is taken with those float32 scores, so a re-cut of the
 * stored history reproduces the direct output exactly.
 *
 * With --chunk the segmentation is vox_dist_segment's (chunk by chunk, the same result
 * bitwise): the affinities are read box by box and every output label dataset is written box
 * by box, so neither is ever whole in memory (--boundary maps are converted whole first).
 */
#include "cli.h"
#include "vox/dist.h"
#include "vox/io.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_THRESHOLDS 64

static const char help[] =
    "usage: vox segment (--aff SPEC | --boundary SPEC | --from SPEC --history SPEC)\n"
    "                   --out FILE.h5:/DATASET [options]\n\n"
    "Segments an affinity graph: watershed (steepest ascent; edges >= --high join plateaus,\n"
    "voxels with no edge above --low are background 0), size-dependent single linkage and dust\n"
    "removal (the base segments), then greedy agglomeration by --score, cut at each threshold.\n"
    "A cut at threshold t applies the merges in order while 1 - score < t (waterz's\n"
    "convention): a HIGHER threshold merges MORE; t = 0 gives the base segments.\n"
    "Affinities are quantized to 8 bits (q = round(255 a)), and every comparison is exact in\n"
    "that domain; results are identical for any thread count.\n\n"
    "Datasets written to the --out file (one HDF5 file, written atomically; an existing file\n"
    "keeps its other datasets), DATASET being the name in --out:\n"
    "  DATASET               uint64 (Z,Y,X) the labels, with one threshold\n"
    "  DATASET_T             uint64 (Z,Y,X) one per threshold when several are given, T\n"
    "                        printed with two decimals (more when needed): /seg_0.30\n"
    "  DATASET_base          uint32 (Z,Y,X) the base segments (the cut at t = 0)\n"
    "  HISTORY               uint64 (n,3)   merges a, b, survivor in base ids, in order\n"
    "  HISTORY_scores        float32 (n,)   their scores (mean affinity etc.); cuts use these\n"
    "                        float32 values. HISTORY defaults to DATASET_merges.\n"
    "Each dataset gets the input's 'resolution' and string attributes with the parameters.\n"
    "Labels are 1..N in C order of first voxel; 0 is background.\n\n"
    "input (one of):\n"
    "  --aff SPEC            affinities (3,Z,Y,X), uint8 (a/255) or float32 in [0,1]; channel c\n"
    "                        links v and v - e_c, e = (z,y,x). SPEC: file.h5:/dataset, file.npy\n"
    "                        (C > 3 channels, as a net trained with long-range --offsets\n"
    "                        writes: the first 3 are used)\n"
    "  --boundary SPEC       a boundary probability map (Z,Y,X), uint8 or float32: edge\n"
    "                        affinity = 1 - max(p_u, p_v)\n"
    "  --inside              with --boundary: the map is the probability of being inside a\n"
    "                        cell; edge affinity = min(p_u, p_v)\n"
    "  --from SPEC           re-cut: base segments written by an earlier run (DATASET_base),\n"
    "                        with --history naming its merge history; writes only the cuts\n\n"
    "output:\n"
    "  --out FILE.h5:/DATASET  output file and dataset name (required)\n"
    "  --history [FILE.h5:]/NAME  merge history dataset (default DATASET_merges, in --out);\n"
    "                        with --from, the history to read (FILE required)\n"
    "  --thresholds T,...    cut thresholds in [0, 1] (default 0.3)\n\n"
    "parameters (defaults: ABISS/seuron's):\n"
    "  --low A               T_low (default 0.01)\n"
    "  --high A              T_high (default 0.99)\n"
    "  --size N              size merge: clusters smaller than N voxels merge across edges\n"
    "                        above --low, strongest first (default 200; 0: no size merge)\n"
    "  --size A:N,A:N,...    a piecewise-linear size table: below the first affinity nothing\n"
    "                        merges, linear between points, constant after the last (at most\n"
    "                        16 points, affinities increasing)\n"
    "  --dust N              after the size merge, segments below N voxels become 0\n"
    "                        (default 200; 0: none)\n"
    "  --score S             agglomeration score: mean (default), median, quantile:Q (Q in\n"
    "                        [0,1]), max, smoothed:K (sum / (K + count))\n"
    "  --max-threshold T     stop the agglomeration before the first merge a cut at T would\n"
    "                        not apply (default 1: the whole history)\n"
    "  --chunk Z,Y,X         segment chunk by chunk (same output, bitwise): affinities read and\n"
    "                        labels written one box at a time (default: the whole volume);\n"
    "                        multiples of a compressed input's HDF5 chunk shape read fastest\n"
    "  --workdir DIR         with --chunk: where the intermediate files (quantized affinities,\n"
    "                        labels, face records: about 2 bytes a voxel) and the restart\n"
    "                        records of every finished chunk task go; created if missing\n"
    "                        (its parent must exist); its files, and the directory if a run\n"
    "                        (this or a killed one) made it, are removed when the run\n"
    "                        succeeds (default: temporary files in /tmp, no restart records)\n"
    "  --resume              with --workdir: go on from the records of an earlier run killed\n"
    "                        or failed with the same input and settings (tasks whose records\n"
    "                        or data are torn or damaged run again; same output). With MPI\n"
    "                        ranks, rank 0 keeps the records\n"
    "  --stats               with --chunk: per stage and octree level, the chunks/nodes, items\n"
    "                        and edges carried up, bytes, time\n"
    "  --threads N           worker threads (default: VOX_THREADS, else all CPUs); with\n"
    "                        vox-mpi, each rank's\n"
    "  --quiet               no phase lines and no summary\n";

struct seg_args {
    const char *aff, *boundary, *from, *out, *history, *size, *score, *workdir;
    bool inside, stats, resume;
    int64_t chunk[3]; /* 0: unchunked */
    double low, high, max_threshold;
    int64_t dust;
    int nthr;
    double thr[MAX_THRESHOLDS];
    struct cli_common common;
    /* derived */
    char out_path[4096], out_ds[512], hist_path[4096], hist_ds[600];
    struct vox_seg_params p;
};

static int quantize(double a)
{
    return (int)floor(255.0 * a + 0.5);
}

static bool parse_thresholds(const char *s, struct seg_args *a)
{
    char buf[1024];
    if (strlen(s) >= sizeof buf)
        return false;
    strcpy(buf, s);
    a->nthr = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (a->nthr == MAX_THRESHOLDS || !cli_parse_f64(t, &a->thr[a->nthr]) ||
            a->thr[a->nthr] < 0 || a->thr[a->nthr] > 1)
            return false;
        a->nthr++;
    }
    return a->nthr > 0;
}

/* "200" or "0.2:100,0.5:400" into the size table (after --low is known). */
static int parse_size(const char *s, struct vox_seg_params *p)
{
    int64_t n;
    if (cli_parse_i64(s, 0, INT64_MAX, &n)) {
        p->nsize = n > 0;
        p->size[0] = (struct vox_seg_size_point){.aff = p->low + 1, .size = n};
        return 0;
    }
    char buf[1024];
    if (strlen(s) >= sizeof buf)
        return cli_usage("segment", "--size: value too long");
    strcpy(buf, s);
    p->nsize = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(t, ':');
        double aff;
        if (!colon || p->nsize == VOX_SEG_SIZE_POINTS_MAX)
            return cli_usage("segment", "--size %s: expected N or up to %d AFF:N pairs", s,
                             VOX_SEG_SIZE_POINTS_MAX);
        *colon = '\0';
        if (!cli_parse_f64(t, &aff) || aff < 0 || aff > 1 ||
            !cli_parse_i64(colon + 1, 0, INT64_MAX, &n))
            return cli_usage("segment", "--size %s: expected AFF:N with AFF in [0,1], N >= 0", s);
        struct vox_seg_size_point *pt = &p->size[p->nsize];
        *pt = (struct vox_seg_size_point){.aff = quantize(aff), .size = n};
        if (p->nsize > 0 && pt->aff <= pt[-1].aff)
            return cli_usage("segment", "--size %s: affinities must increase (after 8-bit "
                             "quantization)", s);
        p->nsize++;
    }
    return 0;
}

static int parse_score(const char *s, struct vox_seg_params *p)
{
    double q;
    int64_t k;
    if (strcmp(s, "mean") == 0) {
        p->score = VOX_SEG_SCORE_MEAN;
    } else if (strcmp(s, "median") == 0) {
        p->score = VOX_SEG_SCORE_QUANTILE;
        p->quantile = 0.5;
    } else if (strcmp(s, "max") == 0) {
        p->score = VOX_SEG_SCORE_MAX;
    } else if (strncmp(s, "quantile:", 9) == 0 && cli_parse_f64(s + 9, &q) && q >= 0 && q <= 1) {
        p->score = VOX_SEG_SCORE_QUANTILE;
        p->quantile = q;
    } else if (strncmp(s, "smoothed:", 9) == 0 && cli_parse_i64(s + 9, 0, INT64_C(1) << 40, &k)) {
        p->score = VOX_SEG_SCORE_SMOOTHED;
        p->smooth_k = k;
    } else {
        return cli_usage("segment", "--score %s: expected mean, median, quantile:Q (0-1), max "
                         "or smoothed:K (K >= 0)", s);
    }
    return 0;
}

/* An option taking a number in [lo, hi]. */
static int parse_real(const char *o, const char *v, double lo, double hi, double *out)
{
    if (!cli_parse_f64(v, out) || *out < lo || *out > hi)
        return cli_usage("segment", "%s %s: expected a number in [%g, %g]", o, v, lo, hi);
    return 0;
}

static int parse_option(int argc, char **argv, int *i, void *arg)
{
    struct seg_args *a = arg;
    const char *o = argv[*i], *v;
    if (strcmp(o, "--inside") == 0 || strcmp(o, "--stats") == 0 ||
        strcmp(o, "--resume") == 0) {
        *(o[2] == 'i' ? &a->inside : o[2] == 's' ? &a->stats : &a->resume) = true;
        return 0;
    }
    if (strcmp(o, "--chunk") == 0) {
        if (!(v = cli_value("segment", argc, argv, i)))
            return 2;
        if (!cli_parse_shape(v, 3, 1, INT64_MAX / 8, a->chunk))
            return cli_usage("segment", "--chunk %s: expected Z,Y,X, each >= 1", v);
        return 0;
    }
    if (strcmp(o, "--workdir") == 0)
        return (a->workdir = cli_value("segment", argc, argv, i)) ? 0 : 2;
    const char **str[] = {&a->aff, &a->boundary, &a->from, &a->out, &a->history, &a->size,
                          &a->score};
    const char *names[] = {"--aff", "--boundary", "--from", "--out", "--history", "--size",
                           "--score"};
    int k = 0;
    while (k < 7 && strcmp(o, names[k]) != 0)
        k++;
    bool known = k < 7 || !strcmp(o, "--thresholds") || !strcmp(o, "--low") ||
                 !strcmp(o, "--high") || !strcmp(o, "--dust") || !strcmp(o, "--max-threshold");
    if (!known)
        return cli_usage("segment", "unknown option '%s'", o);
    if (!(v = cli_value("segment", argc, argv, i)))
        return 2;
    if (k < 7)
        *str[k] = v;
    else if (strcmp(o, "--thresholds") == 0 && !parse_thresholds(v, a))
        return cli_usage("segment", "--thresholds %s: expected 1 to %d comma-separated numbers "
                         "in [0, 1]", v, MAX_THRESHOLDS);
    else if (strcmp(o, "--low") == 0)
        return parse_real(o, v, 0, 1, &a->low);
    else if (strcmp(o, "--high") == 0)
        return parse_real(o, v, 0, 1, &a->high);
    else if (strcmp(o, "--max-threshold") == 0)
        return parse_real(o, v, 0, 2, &a->max_threshold);
    else if (strcmp(o, "--dust") == 0 && !cli_parse_i64(v, 0, INT64_MAX, &a->dust))
        return cli_usage("segment", "--dust %s: expected a whole number >= 0", v);
    return 0;
}

static bool is_h5(const char *path)
{
    const char *dot = strrchr(path, '.');
    return dot && (!strcmp(dot, ".h5") || !strcmp(dot, ".hdf5") || !strcmp(dot, ".hdf"));
}

/* Splits --out and --history; fills the parameters. */
static int resolve(struct seg_args *a)
{
    struct vox_ctx *ctx = NULL;
    if (vox_volume_spec_split(ctx, a->out, a->out_path, sizeof a->out_path, a->out_ds,
                              sizeof a->out_ds) != VOX_OK || !a->out_ds[0] || !is_h5(a->out_path))
        return cli_usage("segment", "--out %s: expected FILE.h5:/DATASET", a->out);
    if (strlen(a->out_ds) > 400)
        return cli_usage("segment", "--out %s: dataset name too long", a->out);
    if (!a->history) {
        strcpy(a->hist_path, a->out_path);
        snprintf(a->hist_ds, sizeof a->hist_ds, "%s_merges", a->out_ds);
    } else if (!strchr(a->history, ':')) {
        strcpy(a->hist_path, a->from ? "" : a->out_path);
        snprintf(a->hist_ds, sizeof a->hist_ds, "%s", a->history);
    } else if (vox_volume_spec_split(ctx, a->history, a->hist_path, sizeof a->hist_path,
                                     a->hist_ds, sizeof a->hist_ds) != VOX_OK || !a->hist_ds[0]) {
        return cli_usage("segment", "--history %s: expected [FILE.h5:]/NAME", a->history);
    }
    if (a->from && !a->hist_path[0])
        return cli_usage("segment", "--from needs --history FILE.h5:/NAME");
    if (!a->from && strcmp(a->hist_path, a->out_path) != 0)
        return cli_usage("segment", "--history %s: must be in the --out file %s", a->history,
                         a->out_path);
    struct vox_seg_params *p = &a->p;
    p->low = quantize(a->low);
    p->high = quantize(a->high);
    if (p->low >= p->high)
        return cli_usage("segment", "--low %g, --high %g: need low < high after 8-bit "
                         "quantization", a->low, a->high);
    p->dust = a->dust;
    p->max_threshold = a->max_threshold;
    int r = parse_size(a->size ? a->size : "200", p);
    return r ? r : a->score ? parse_score(a->score, p) : 0;
}

/* 0: parsed; -1: --help printed; 2: usage error printed. */
static int parse_args(int argc, char **argv, struct seg_args *a)
{
    int r = cli_parse_options("segment", argc, argv, help, &a->common, parse_option, a);
    if (r)
        return r;
    if (!a->out)
        return cli_usage("segment", "--out FILE.h5:/DATASET is required");
    if (!!a->aff + !!a->boundary + !!a->from != 1)
        return cli_usage("segment", "give exactly one of --aff, --boundary and --from");
    if (a->inside && !a->boundary)
        return cli_usage("segment", "--inside applies to --boundary only");
    if ((a->workdir || a->stats) && !a->chunk[0])
        return cli_usage("segment", "--workdir and --stats need --chunk");
    if (a->resume && !a->workdir)
        return cli_usage("segment", "--resume needs --workdir");
    if (a->chunk[0] && a->from)
        return cli_usage("segment", "--chunk does not apply to --from");
    return resolve(a);
}

/* The dataset name of threshold k: DATASET alone, or DATASET_T with T in the shortest form
 * of at least two decimals that reads back as the same number. */
static void threshold_name(const struct seg_args *a, int k, char *buf, size_t len)
{
    if (a->nthr == 1) {
        snprintf(buf, len, "%s", a->out_ds);
        return;
    }
    for (int prec = 2; prec <= 17; prec++) {
        snprintf(buf, len, "%s_%.*f", a->out_ds, prec, a->thr[k]);
        if (strtod(strrchr(buf, '_') + 1, NULL) == a->thr[k])
            return;
    }
}

/* ---- running ------------------------------------------------------------------------------ */

struct seg_state {
    struct vox_volume_info info; /* of the input, for resolution */
    struct vox_tensor q, base;
    struct vox_merge_history hist;
    int64_t shape[3];
    int64_t nbasins, nseg, nfinal[MAX_THRESHOLDS];
    double t_start, t_seg; /* pipeline start; seconds in the segmentation phases */
    bool quiet;
};

static void phase(struct seg_state *st, const char *name, double t0, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void phase(struct seg_state *st, const char *name, double t0, const char *fmt, ...)
{
    double dt = vox_time_now() - t0;
    if (strcmp(name, "read") != 0 && strcmp(name, "write") != 0)
        st->t_seg += dt;
    if (st->quiet)
        return;
    printf("%-16s %8.3f s", name, dt);
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        printf("  ");
        vprintf(fmt, ap);
        va_end(ap);
    }
    printf("\n");
    fflush(stdout);
}

/* Float affinities read a slab of planes at a time (whole chunks: each decoded once) and
 * quantized into st->q, so the float volume (4 bytes a value, 4x the quantized one) is never
 * held whole. */
/* The first 3 channels (the nearest-neighbour affinities) of a (C, Z, Y, X) volume. */
static enum vox_status read_nearest(struct vox_ctx *ctx, struct vox_volume *vol,
                                    struct vox_tensor *out)
{
    const struct vox_volume_info *in = vox_volume_info(vol);
    const int64_t lo[4] = {0, 0, 0, 0}, hi[4] = {3, in->shape[1], in->shape[2], in->shape[3]};
    enum vox_status s = vox_tensor_alloc(ctx, out, in->dtype, 4, hi);
    if (s == VOX_OK && (s = vox_volume_read(ctx, vol, lo, hi, out)) != VOX_OK)
        vox_tensor_free(ctx, out);
    return s;
}

static enum vox_status read_quantized(struct vox_ctx *ctx, struct vox_volume *vol,
                                      struct seg_state *st)
{
    const struct vox_volume_info *in = vox_volume_info(vol);
    int64_t chunk[VOX_MAX_RANK], slab = 32;
    if (vox_volume_chunk_shape(vol, chunk))
        slab = chunk[1];
    slab = slab < in->shape[1] ? slab : in->shape[1];
    struct vox_tensor buf = {0};
    enum vox_status s = vox_tensor_alloc(ctx, &st->q, VOX_U8, 4,
                                         (int64_t[4]){3, in->shape[1], in->shape[2], in->shape[3]});
    if (s == VOX_OK)
        s = vox_tensor_alloc(ctx, &buf, VOX_F32, 4,
                             (int64_t[4]){3, slab, in->shape[2], in->shape[3]});
    for (int64_t z = 0; s == VOX_OK && z < in->shape[1]; z += slab) {
        int64_t lo[4] = {0, z, 0, 0}, hi[4] = {3, z + slab < in->shape[1] ? z + slab : in->shape[1],
                                               in->shape[2], in->shape[3]};
        struct vox_tensor b, q;
        s = vox_tensor_view_box(ctx, &buf, (int64_t[4]){0},
                                (int64_t[4]){3, hi[1] - z, hi[2], hi[3]}, &b);
        if (s == VOX_OK)
            s = vox_volume_read(ctx, vol, lo, hi, &b);
        if (s == VOX_OK)
            s = vox_tensor_view_box(ctx, &st->q, lo, hi, &q);
        if (s == VOX_OK && (s = vox_seg_quantize_box(ctx, &b, lo, &q)) != VOX_OK)
            vox_ctx_error_prefix(ctx, "%s", vox_volume_name(vol));
    }
    vox_tensor_free(ctx, &buf);
    if (s != VOX_OK)
        vox_tensor_free(ctx, &st->q);
    return s;
}

/* Reads --aff or --boundary into quantized affinities st->q. */
static enum vox_status read_input(struct vox_ctx *ctx, const struct seg_args *a,
                                  struct seg_state *st)
{
    const char *spec = a->aff ? a->aff : a->boundary;
    double t0 = vox_time_now();
    struct vox_tensor in = {0};
    struct vox_volume *vol;
    enum vox_status s = vox_volume_open(ctx, spec, &vol);
    if (s != VOX_OK)
        return s;
    const struct vox_volume_info *info = vox_volume_info(vol);
    st->info = *info;
    int want = a->aff ? 4 : 3;
    const bool by_slab = a->aff && info->dtype == VOX_F32;
    if (info->dtype != VOX_U8 && info->dtype != VOX_F32)
        s = vox_fail(ctx, VOX_INVALID_ARG, "%s: dtype %s, expected uint8 or float32", spec,
                     vox_dtype_str(info->dtype));
    else if (info->rank != want || (a->aff && info->shape[0] < 3))
        s = vox_fail(ctx, VOX_INVALID_ARG, "%s: rank %d%s, expected %s", spec, info->rank,
                     info->rank == 4 && info->shape[0] < 3 ? " with fewer than 3 channels" : "",
                     a->aff ? "(3, Z, Y, X) affinities" : "a (Z, Y, X) boundary map");
    else if (by_slab)
        s = read_quantized(ctx, vol, st);
    else if (a->aff && info->shape[0] > 3) /* long-range channels after the 3: not read */
        s = read_nearest(ctx, vol, &in);
    else
        s = vox_volume_read_all(ctx, vol, &in);
    vox_volume_close(vol);
    if (s != VOX_OK) {
        vox_tensor_free(ctx, &in);
        return s;
    }
    if (by_slab) { /* quantized while read */
        phase(st, "read", t0, "%s, quantized a slab at a time", spec);
        return VOX_OK;
    }
    phase(st, "read", t0, "%s", spec);
    t0 = vox_time_now();
    if (a->boundary) {
        s = vox_seg_boundary_to_aff(ctx, &in, a->inside, &st->q);
    } else if (in.dtype == VOX_U8) {
        st->q = in; /* already quantized */
        in = (struct vox_tensor){0};
    } else {
        s = vox_seg_quantize(ctx, &in, &st->q);
    }
    vox_tensor_free(ctx, &in);
    if (s != VOX_OK) {
        vox_ctx_error_prefix(ctx, "%s", spec);
        return s;
    }
    phase(st, "quantize", t0, NULL);
    return VOX_OK;
}

/* Each stage of vox_segment as a phase line, printed as it ends. */
static void stage_done(void *arg, int stage, const struct vox_seg_result *res, double seconds)
{
    struct seg_state *st = arg;
    double t0 = vox_time_now() - seconds;
    if (stage == 0)
        phase(st, "watershed", t0, "%lld basins", (long long)res->nbasins);
    else if (stage == 1)
        phase(st, "size merge", t0,
              "%lld base segments (basin graph, single linkage, dust; their region graph)",
              (long long)res->nseg);
    else
        phase(st, "agglomeration", t0, "%lld merges", (long long)res->merges.n);
}

/* vox_segment_consume (the quantized input is freed once the region graph holds its sums),
 * its stages printed as phases as they end. */
static enum vox_status pipeline(struct vox_ctx *ctx, const struct seg_args *a,
                                struct seg_state *st)
{
    enum vox_status s = read_input(ctx, a, st);
    st->t_start = vox_time_now();
    struct vox_seg_result res = {0};
    const struct vox_seg_observer obs = {stage_done, st};
    if (s == VOX_OK)
        s = vox_segment_observed(ctx, &st->q, &a->p, &obs, &res);
    vox_tensor_free(ctx, &st->q);
    if (s != VOX_OK)
        return s;
    st->base = res.labels;
    st->nbasins = res.nbasins;
    st->nseg = res.nseg;
    st->hist = res.merges;
    res.labels = (struct vox_tensor){0};
    res.merges = (struct vox_merge_history){0};
    vox_seg_result_fini(ctx, &res);
    /* The stored scores are float32; cut with exactly those. */
    for (int64_t i = 0; i < st->hist.n; i++)
        st->hist.m[i].score = (double)(float)st->hist.m[i].score;
    return VOX_OK;
}

/* ---- re-cutting a stored history ------------------------------------------------------------ */

/* Base labels (u32 or u64) into a u32 tensor; st->nseg = the largest label. */
static enum vox_status read_base(struct vox_ctx *ctx, const char *spec, struct seg_state *st)
{
    struct vox_tensor in = {0};
    enum vox_status s = vox_volume_load(ctx, spec, &in, &st->info);
    if (s != VOX_OK)
        return s;
    if (in.rank != 3 || (in.dtype != VOX_U32 && in.dtype != VOX_U64)) {
        vox_tensor_free(ctx, &in);
        return vox_fail(ctx, VOX_INVALID_ARG, "%s: %s rank %d, expected uint32 or uint64 "
                        "(Z, Y, X) base labels", spec, vox_dtype_str(in.dtype), in.rank);
    }
    if (in.dtype == VOX_U32)
        st->base = in;
    else
        s = vox_tensor_alloc(ctx, &st->base, VOX_U32, 3, in.shape);
    int64_t n = vox_tensor_numel(&in), max = 0;
    for (int64_t v = 0; v < n && s == VOX_OK; v++) {
        uint64_t x = in.dtype == VOX_U32 ? ((uint32_t *)in.data)[v] : ((uint64_t *)in.data)[v];
        if (x >= UINT32_MAX)
            s = vox_fail(ctx, VOX_INVALID_ARG, "%s: label %llu at voxel %lld: base labels must "
                         "be below 2^32 - 1", spec, (unsigned long long)x, (long long)v);
        else if (in.dtype == VOX_U64)
            ((uint32_t *)st->base.data)[v] = (uint32_t)x;
        max = (int64_t)x > max ? (int64_t)x : max;
    }
    if (in.dtype != VOX_U32)
        vox_tensor_free(ctx, &in);
    st->nseg = max;
    return s;
}

/* The merges (n,3) u64 and their scores (n,) f32 into st->hist. */
static enum vox_status read_history(struct vox_ctx *ctx, const struct seg_args *a,
                                    struct seg_state *st)
{
    char spec[4800], sspec[4900];
    snprintf(spec, sizeof spec, "%s:%s", a->hist_path, a->hist_ds);
    snprintf(sspec, sizeof sspec, "%s_scores", spec);
    struct vox_tensor m = {0}, sc = {0};
    enum vox_status s = vox_volume_load(ctx, spec, &m, NULL);
    if (s == VOX_OK)
        s = vox_volume_load(ctx, sspec, &sc, NULL);
    if (s == VOX_OK && (m.dtype != VOX_U64 || m.rank != 2 || m.shape[1] != 3))
        s = vox_fail(ctx, VOX_INVALID_ARG, "%s: expected a uint64 (n, 3) merge history", spec);
    else if (s == VOX_OK && (sc.dtype != VOX_F32 || sc.rank != 1 || sc.shape[0] != m.shape[0]))
        s = vox_fail(ctx, VOX_INVALID_ARG, "%s: expected float32 (%lld,) scores, one per merge",
                     sspec, (long long)m.shape[0]);
    int64_t n = s == VOX_OK ? m.shape[0] : 0;
    if (s == VOX_OK && n > 0 && !(st->hist.m = vox_alloc(ctx, (size_t)n * sizeof *st->hist.m)))
        s = VOX_OUT_OF_MEMORY;
    const uint64_t *md = m.data;
    const float *sd = sc.data;
    for (int64_t i = 0; i < n && s == VOX_OK; i++) {
        if (md[3 * i] > INT64_MAX || md[3 * i + 1] > INT64_MAX || md[3 * i + 2] > INT64_MAX)
            s = vox_fail(ctx, VOX_INVALID_ARG, "%s: merge %lld has an id >= 2^63", spec,
                         (long long)i);
        st->hist.m[i] = (struct vox_seg_merge){(int64_t)md[3 * i], (int64_t)md[3 * i + 1],
                                               (int64_t)md[3 * i + 2], sd[i]};
    }
    st->hist.n = st->hist.cap = s == VOX_OK ? n : 0;
    st->hist.nseg = st->nseg;
    vox_tensor_free(ctx, &m);
    vox_tensor_free(ctx, &sc);
    return s;
}

/* ---- writing ------------------------------------------------------------------------------ */

/* A dataset of the output file with its attributes (HDF5 chunks of `chunk`, NULL: the
 * default); the data is written afterwards. */
/* The options of an output dataset (gzip 4, the input's resolution and offset). */
static struct vox_dataset_options out_options(const struct seg_state *st, enum vox_dtype dtype,
                                              int rank, const int64_t *shape, const int64_t *chunk)
{
    struct vox_dataset_options d = {.dtype = dtype, .rank = rank, .gzip = 4};
    memcpy(d.shape, shape, (size_t)rank * sizeof *shape);
    if (chunk)
        memcpy(d.chunk, chunk, (size_t)rank * sizeof *chunk);
    if (rank == 3) {
        d.has_resolution = st->info.has_resolution;
        d.has_offset = st->info.has_offset;
        memcpy(d.resolution, st->info.resolution, sizeof d.resolution);
        memcpy(d.offset, st->info.offset, sizeof d.offset);
    }
    return d;
}

static enum vox_status make_dataset(struct vox_ctx *ctx, struct vox_out_file *f,
                                    const struct seg_state *st, const char *name,
                                    enum vox_dtype dtype, int rank, const int64_t *shape,
                                    const int64_t *chunk, const char *params, const char *what,
                                    struct vox_volume **vol_out)
{
    struct vox_dataset_options d = out_options(st, dtype, rank, shape, chunk);
    struct vox_volume *vol = NULL;
    enum vox_status s = vox_out_dataset(ctx, f, name, &d, &vol);
    s = s ? s : vox_volume_set_attr_str(ctx, vol, "source", "vox segment");
    s = s ? s : vox_volume_set_attr_str(ctx, vol, "parameters", params);
    s = s ? s : vox_volume_set_attr_str(ctx, vol, "contents", what);
    *vol_out = vol;
    return s;
}

static enum vox_status write_dataset(struct vox_ctx *ctx, struct vox_out_file *f,
                                     const struct seg_state *st, const char *name,
                                     const struct vox_tensor *t, const char *params,
                                     const char *what)
{
    struct vox_volume *vol = NULL;
    enum vox_status s =
        make_dataset(ctx, f, st, name, t->dtype, t->rank, t->shape, NULL, params, what, &vol);
    return s ? s : vox_volume_write(ctx, vol, NULL, t);
}

/* The merge history as (n,3) u64 and (n,) f32. */
static enum vox_status write_history(struct vox_ctx *ctx, struct vox_out_file *f,
                                     const struct seg_args *a, const struct seg_state *st,
                                     const char *params)
{
    int64_t n = st->hist.n, sm[2] = {n, 3};
    struct vox_tensor m = {0}, sc = {0};
    enum vox_status s = vox_tensor_alloc(ctx, &m, VOX_U64, 2, sm);
    s = s ? s : vox_tensor_alloc(ctx, &sc, VOX_F32, 1, sm);
    for (int64_t i = 0; i < n && s == VOX_OK; i++) {
        const struct vox_seg_merge *e = &st->hist.m[i];
        uint64_t *row = (uint64_t *)m.data + 3 * i;
        row[0] = (uint64_t)e->a, row[1] = (uint64_t)e->b, row[2] = (uint64_t)e->survivor;
        ((float *)sc.data)[i] = (float)e->score;
    }
    char name[640];
    snprintf(name, sizeof name, "%s_scores", a->hist_ds);
    s = s ? s : write_dataset(ctx, f, st, a->hist_ds, &m, params,
                              "merges a, b, survivor in base ids, in order; a cut at t applies "
                              "them while 1 - score < t");
    s = s ? s : write_dataset(ctx, f, st, name, &sc, params, "float32 score of each merge");
    vox_tensor_free(ctx, &m);
    vox_tensor_free(ctx, &sc);
    return s;
}

static void params_string(const struct seg_args *a, char *buf, size_t len)
{
    const struct vox_seg_params *p = &a->p;
    if (a->from) {
        snprintf(buf, len, "re-cut of %s with history %s:%s", a->from, a->hist_path, a->hist_ds);
        return;
    }
    int k = snprintf(buf, len, "input=%s%s low=%g (q %d) high=%g (q %d) size=", a->aff ? a->aff
                     : a->boundary, a->boundary ? (a->inside ? " (boundary, inside)" :
                     " (boundary)") : "", a->low, p->low, a->high, p->high);
    for (int i = 0; i < p->nsize && k < (int)len; i++)
        k += snprintf(buf + k, len - (size_t)k, "%s(q %d):%lld", i ? "," : "",
                      p->size[i].aff, (long long)p->size[i].size);
    if (k < (int)len)
        snprintf(buf + k, len - (size_t)k, "%s dust=%lld score=%s quantile=%g smooth_k=%lld "
                 "max_threshold=%g (affinities quantized to q = round(255 a))",
                 p->nsize ? "" : "0", (long long)p->dust, a->score ? a->score : "mean",
                 p->quantile, (long long)p->smooth_k, p->max_threshold);
}

struct cut_slab {
    const uint32_t *base, *map;
    uint64_t *out;
};

static void cut_slab_part(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    const struct cut_slab *c = arg;
    for (int64_t v = lo[0]; v < hi[0]; v++)
        c->out[v] = c->map[c->base[v]];
}

/* The labels cut at threshold thr, mapped and written a slab of planes at a time (the HDF5
 * chunks' 32, so each slab's chunks are compressed on every thread): a whole uint64 copy of
 * the volume would be the run's largest array. */
static enum vox_status write_cut(struct vox_ctx *ctx, struct vox_out_file *f, struct seg_state *st,
                                 const char *name, double thr, const char *params, int64_t *nfinal)
{
    char what[128];
    snprintf(what, sizeof what, "labels cut at threshold %g", thr);
    uint32_t *map = NULL;
    struct vox_volume *vol = NULL;
    struct vox_tensor slab = {0};
    const int64_t *shape = st->base.shape, plane = shape[1] * shape[2];
    const int64_t rows = shape[0] < 32 ? shape[0] : 32;
    enum vox_status s = vox_merge_history_map(ctx, &st->hist, thr, &map, nfinal);
    s = s ? s : make_dataset(ctx, f, st, name, VOX_U64, 3, shape, NULL, params, what, &vol);
    s = s ? s : vox_tensor_alloc(ctx, &slab, VOX_U64, 3, (int64_t[3]){rows, shape[1], shape[2]});
    for (int64_t z = 0; z < shape[0] && s == VOX_OK; z += rows) {
        int64_t n = shape[0] - z < rows ? shape[0] - z : rows;
        struct cut_slab c = {(const uint32_t *)st->base.data + z * plane, map, slab.data};
        vox_pool_for(vox_ctx_pool(ctx), (int64_t[3]){n * plane, 1, 1}, (int64_t[3]){1 << 16, 1, 1},
                     VOX_SCHED_STATIC, cut_slab_part, &c);
        struct vox_tensor v = slab;
        v.shape[0] = n;
        s = vox_volume_write(ctx, vol, (int64_t[3]){z, 0, 0}, &v);
    }
    vox_tensor_free(ctx, &slab);
    vox_free(ctx, map);
    return s;
}

/* Cuts at every threshold and writes everything into one output file. */
static enum vox_status write_outputs(struct vox_ctx *ctx, const struct seg_args *a,
                                     struct seg_state *st)
{
    double t0 = vox_time_now();
    char params[9216], name[600];
    params_string(a, params, sizeof params);
    struct vox_out_file *f = NULL;
    enum vox_status s = vox_out_open(ctx, a->out_path, &f);
    for (int k = 0; k < a->nthr && s == VOX_OK; k++) {
        threshold_name(a, k, name, sizeof name);
        s = write_cut(ctx, f, st, name, a->thr[k], params, &st->nfinal[k]);
    }
    if (s == VOX_OK && !a->from) {
        snprintf(name, sizeof name, "%s_base", a->out_ds);
        s = write_dataset(ctx, f, st, name, &st->base, params,
                          "base segments after size merge and dust (the cut at 0)");
        s = s ? s : write_history(ctx, f, a, st, params);
    }
    if (s == VOX_OK)
        s = vox_out_commit(ctx, f); /* frees f, also on failure */
    else
        vox_out_abort(f);
    if (s == VOX_OK)
        phase(st, "write", t0, "%s", a->out_path);
    return s;
}

/* ---- chunked ------------------------------------------------------------------------------- */

/* The output of a chunked run, filled box by box from every thread: each box's datasets are
 * mapped and compressed side by side (vox_volume_encode), written one box at a time under
 * `lock` (libhdf5 is not thread-safe; vox_dist_segment reads no HDF5 file while boxes come).
 * With MPI, the other ranks encode their own chunks' boxes for detached volumes of the same
 * layout and send the bytes, which rank 0 stores (chunk_encode, chunk_store). */
struct chunk_out {
    struct vox_ctx *ctx;
    const struct seg_args *a;
    struct seg_state *st;
    bool worker; /* another rank: detached volumes, no file */
    pthread_mutex_t lock;
    int64_t h5chunk[3]; /* the datasets' HDF5 chunks: whole ones in every box */
    struct vox_out_file *f;
    struct vox_volume *base, *cut[MAX_THRESHOLDS];
    uint32_t *map[MAX_THRESHOLDS];
    char params[9216];
};

/* HDF5 chunks for the labels of a run with `chunk`-shaped boxes: per axis the largest
 * divisor of the box side up to the default (32 x 128 x 128), so that every box holds whole
 * chunks and is compressed on its own thread; where that divisor is small (a prime side) the
 * default, and boxes that share chunks are written through libhdf5's cache. */
static void out_chunks(const int64_t chunk[3], const int64_t shape[3], int64_t out[3])
{
    static const int64_t dflt[3] = {32, 128, 128};
    int64_t d[3];
    bool ok = true;
    for (int a = 0; a < 3; a++) {
        int64_t c = chunk[a] < shape[a] ? chunk[a] : shape[a];
        c = c > 1 ? c : 1; /* (a failed open leaves the shape 0) */
        d[a] = dflt[a] < c ? dflt[a] : c;
        while (c % d[a] != 0)
            d[a]--;
        ok &= 4 * d[a] >= (dflt[a] < c ? dflt[a] : c);
    }
    for (int a = 0; a < 3; a++)
        out[a] = ok ? d[a] : (dflt[a] < shape[a] ? dflt[a] : shape[a]);
}

/* A dataset of the output (another rank: a detached volume of the same layout). */
static enum vox_status chunk_dataset(struct chunk_out *o, const char *name, enum vox_dtype dtype,
                                     const char *what, struct vox_volume **vol)
{
    if (!o->worker)
        return make_dataset(o->ctx, o->f, o->st, name, dtype, 3, o->st->shape, o->h5chunk,
                            o->params, what, vol);
    struct vox_dataset_options d = out_options(o->st, dtype, 3, o->st->shape, o->h5chunk);
    char full[4800];
    snprintf(full, sizeof full, "%s:%s", o->a->out_path, name);
    return vox_volume_detached(o->ctx, full, &d, vol);
}

/* The result is known: keep the history (float32 scores), map each cut, create the datasets
 * and write the history (another rank: the maps and detached volumes only). */
static enum vox_status chunk_ready(void *arg, const struct vox_seg_result *res)
{
    struct chunk_out *o = arg;
    struct vox_ctx *ctx = o->ctx;
    struct seg_state *st = o->st;
    st->nbasins = res->nbasins;
    st->nseg = res->nseg;
    st->hist = (struct vox_merge_history){.nseg = res->merges.nseg, .n = res->merges.n,
                                          .cap = res->merges.n};
    st->hist.m = vox_alloc(ctx, (size_t)(res->merges.n + 1) * sizeof *st->hist.m);
    if (!st->hist.m)
        return VOX_OUT_OF_MEMORY;
    for (int64_t i = 0; i < res->merges.n; i++) {
        st->hist.m[i] = res->merges.m[i];
        st->hist.m[i].score = (double)(float)res->merges.m[i].score;
    }
    char name[600], what[128];
    params_string(o->a, o->params, sizeof o->params);
    enum vox_status s = o->worker ? VOX_OK : vox_out_open(ctx, o->a->out_path, &o->f);
    for (int k = 0; k < o->a->nthr && s == VOX_OK; k++) {
        s = vox_merge_history_map(ctx, &st->hist, o->a->thr[k], &o->map[k], &st->nfinal[k]);
        threshold_name(o->a, k, name, sizeof name);
        snprintf(what, sizeof what, "labels cut at threshold %g", o->a->thr[k]);
        s = s ? s : chunk_dataset(o, name, VOX_U64, what, &o->cut[k]);
    }
    snprintf(name, sizeof name, "%s_base", o->a->out_ds);
    s = s ? s
          : chunk_dataset(o, name, VOX_U32,
                          "base segments after size merge and dust (the cut "
                          "at 0)",
                          &o->base);
    return s || o->worker ? s : write_history(ctx, o->f, o->a, st, o->params);
}

/* Encodes a box's datasets: enc[k] the cut at threshold k, enc[nthr] the base labels. */
static enum vox_status chunk_encode_all(struct chunk_out *o, const int64_t lo[3],
                                        const struct vox_tensor *l, struct vox_encoded **enc)
{
    struct vox_tensor cut = {0};
    int nthr = o->a->nthr;
    enum vox_status s = vox_volume_encode(o->ctx, o->base, lo, l, &enc[nthr]);
    s = s ? s : vox_tensor_alloc(o->ctx, &cut, VOX_U64, 3, l->shape);
    const uint32_t *b = l->data;
    uint64_t *c = cut.data;
    int64_t n = vox_tensor_numel(l);
    for (int k = 0; k < nthr && s == VOX_OK; k++) {
        for (int64_t v = 0; v < n; v++)
            c[v] = o->map[k][b[v]];
        s = vox_volume_encode(o->ctx, o->cut[k], lo, &cut, &enc[k]);
    }
    vox_tensor_free(o->ctx, &cut);
    return s;
}

static enum vox_status chunk_write(void *arg, const int64_t lo[3], const struct vox_tensor *l)
{
    struct chunk_out *o = arg;
    struct vox_encoded *enc[MAX_THRESHOLDS + 1] = {0};
    int nthr = o->a->nthr;
    enum vox_status s = chunk_encode_all(o, lo, l, enc);
    pthread_mutex_lock(&o->lock);
    for (int k = 0; k <= nthr; k++) {
        if (s == VOX_OK && enc[k])
            s = vox_volume_write_encoded(o->ctx, enc[k]);
        else
            vox_encoded_free(o->ctx, enc[k]);
    }
    pthread_mutex_unlock(&o->lock);
    return s;
}

/* Another rank: a box's datasets as bytes for rank 0, int64 words: the count, each part's
 * length, then the parts (vox_encoded_pack's), in chunk_encode_all's order. */
static enum vox_status chunk_encode(void *arg, const int64_t lo[3], const struct vox_tensor *l,
                                    void **blob, int64_t *len)
{
    struct chunk_out *o = arg;
    struct vox_encoded *enc[MAX_THRESHOLDS + 1] = {0};
    void *part[MAX_THRESHOLDS + 1] = {0};
    int64_t plen[MAX_THRESHOLDS + 1] = {0}, n = o->a->nthr + 1;
    enum vox_status s = chunk_encode_all(o, lo, l, enc);
    int64_t total = (1 + n) * (int64_t)sizeof(int64_t);
    for (int k = 0; k < n; k++) {
        if (s == VOX_OK)
            s = vox_encoded_pack(o->ctx, enc[k], &part[k], &plen[k]); /* frees enc[k] */
        else
            vox_encoded_free(o->ctx, enc[k]);
        total += plen[k];
    }
    uint8_t *p = s == VOX_OK ? vox_alloc(o->ctx, (size_t)total) : NULL;
    if (s == VOX_OK && !p)
        s = VOX_OUT_OF_MEMORY;
    if (s == VOX_OK) {
        int64_t *hd = (int64_t *)p;
        hd[0] = n;
        memcpy(hd + 1, plen, (size_t)n * sizeof *plen);
        uint8_t *d = p + (1 + n) * sizeof(int64_t);
        for (int k = 0; k < n; d += plen[k], k++)
            memcpy(d, part[k], (size_t)plen[k]);
        *blob = p;
        *len = total;
    }
    for (int k = 0; k < n; k++)
        vox_free(o->ctx, part[k]);
    return s;
}

/* Rank 0: another rank's box, stored into each dataset. */
static enum vox_status chunk_store(void *arg, const int64_t lo[3], const void *blob, int64_t len)
{
    struct chunk_out *o = arg;
    const int64_t n = o->a->nthr + 1, head = (1 + n) * (int64_t)sizeof(int64_t);
    const int64_t *hd = blob;
    int64_t total = head;
    bool ok = len >= head && hd[0] == n;
    for (int k = 0; ok && k < n; k++) {
        ok = hd[1 + k] >= 0 && hd[1 + k] <= len - total;
        total += ok ? hd[1 + k] : 0;
    }
    if (!ok || total != len)
        return vox_fail(o->ctx, VOX_IO,
                        "the labels of the chunk at (%lld, %lld, %lld) came malformed from "
                        "another rank",
                        (long long)lo[0], (long long)lo[1], (long long)lo[2]);
    enum vox_status s = VOX_OK;
    const uint8_t *d = (const uint8_t *)blob + head;
    pthread_mutex_lock(&o->lock);
    for (int k = 0; k < n && s == VOX_OK; d += hd[1 + k], k++)
        s = vox_volume_write_packed(o->ctx, k < n - 1 ? o->cut[k] : o->base, d, hd[1 + k]);
    pthread_mutex_unlock(&o->lock);
    return s;
}

static void print_stats(const struct vox_dist_stats *x)
{
    static const char *stage[] = {"watershed", "size merge", "agglomerate", "ingest"};
    printf("%-12s %5s %8s %12s %12s %12s %9s\n", "stage", "level", "nodes", "carried",
           "edges", "bytes", "seconds");
    for (int i = 0; i < x->n; i++) {
        const struct vox_dist_level *l = &x->lv[i];
        printf("%-12s %5lld %8lld %12lld %12lld %12lld %9.3f\n", stage[l->stage],
               (long long)l->level, (long long)l->nodes, (long long)l->frozen,
               (long long)l->edges, (long long)l->bytes, l->seconds);
    }
    printf("carried: face + plateau voxels (watershed), frozen basins (size merge), vertices "
           "(agglomerate)\nio: %lld bytes read, %lld bytes written\n",
           (long long)x->bytes_read, (long long)x->bytes_written);
    if (x->tasks_reused + x->tasks_run > 0)
        printf("tasks: %lld reused, %lld run\n", (long long)x->tasks_reused,
               (long long)x->tasks_run);
    printf("face records: %lld chunks, %lld bytes (size merge and agglomeration scan the rest)\n",
           (long long)x->face_records, (long long)x->face_record_bytes);
}

/* --chunk: vox_dist_segment from the volume (or the converted boundary map) into the file. */
static enum vox_status chunked(struct vox_ctx *ctx, const struct seg_args *a,
                               struct seg_state *st, const struct vox_dist_comm *comm)
{
    /* another rank: sends rank 0 its chunks' summaries and encoded output, writes no file */
    bool worker = comm && comm->rank != 0;
    struct vox_volume *vol = NULL;
    struct vox_dist_source src = {0};
    enum vox_status s;
    if (a->boundary) {
        s = read_input(ctx, a, st);
        src.aff = &st->q;
    } else {
        s = vox_volume_open(ctx, a->aff, &vol);
        src.vol = vol;
        if (s == VOX_OK)
            st->info = *vox_volume_info(vol);
    }
    for (int k = 0; k < 3 && s == VOX_OK; k++)
        st->shape[k] = st->info.shape[k + 1 - (a->boundary != NULL)];
    struct chunk_out o = {
        .ctx = ctx, .a = a, .st = st, .worker = worker, .lock = PTHREAD_MUTEX_INITIALIZER};
    out_chunks(a->chunk, st->shape, o.h5chunk);
    struct vox_dist_sink sink = {.ready = chunk_ready,
                                 .write = chunk_write,
                                 .arg = &o,
                                 .concurrent = true,
                                 .encode = chunk_encode,
                                 .store = chunk_store};
    struct vox_dist_stats stats = {0};
    /* VOX_DIST_DIE_AFTER=N (tests): the process ends after N restart records; with
     * VOX_DIST_DIE_RANK=R (R > 0), rank R ends instead, after sending N chunks. */
    const char *die = getenv("VOX_DIST_DIE_AFTER"), *die_rank = getenv("VOX_DIST_DIE_RANK");
    if (die && (comm ? comm->rank : 0) != (die_rank ? atoi(die_rank) : 0))
        die = NULL;
    struct vox_dist_options opt = {.sink = &sink,
                                   .workdir = a->workdir,
                                   .stats = &stats,
                                   .resume = a->resume,
                                   .die_after = die ? strtoll(die, NULL, 10) : 0,
                                   .comm = comm,
                                   .progress = !st->quiet};
    memcpy(opt.chunk, a->chunk, sizeof opt.chunk);
    struct vox_seg_result res = {0};
    double t0 = vox_time_now();
    st->t_start = t0;
    if (s == VOX_OK)
        s = vox_dist_segment(ctx, &src, &a->p, &opt, &res);
    if (s == VOX_OK)
        phase(st, "chunked segment", t0, "chunks %lld x %lld x %lld, %lld merges",
              (long long)a->chunk[0], (long long)a->chunk[1], (long long)a->chunk[2],
              (long long)st->hist.n);
    t0 = vox_time_now();
    if (s == VOX_OK && !worker)
        s = vox_out_commit(ctx, o.f); /* frees f, also on failure */
    else if (o.f)
        vox_out_abort(o.f);
    if (s == VOX_OK && !worker)
        phase(st, "write", t0, "%s", a->out_path);
    if (s == VOX_OK && a->stats && !worker)
        print_stats(&stats);
    for (int k = 0; k < a->nthr; k++) {
        vox_free(ctx, o.map[k]);
        if (worker) /* (rank 0's belong to its file) */
            vox_volume_close(o.cut[k]);
    }
    if (worker)
        vox_volume_close(o.base);
    vox_seg_result_fini(ctx, &res);
    vox_volume_close(vol);
    vox_tensor_free(ctx, &st->q);
    return s;
}

static void summary(const struct seg_args *a, const struct seg_state *st)
{
    if (st->quiet)
        return;
    const int64_t *sh = st->shape;
    double nvox = (double)sh[0] * (double)sh[1] * (double)sh[2];
    printf("shape            %lld x %lld x %lld (z, y, x)\n", (long long)sh[0],
           (long long)sh[1], (long long)sh[2]);
    if (!a->from) {
        printf("basins           %lld\n", (long long)st->nbasins);
        printf("base segments    %lld (after size merge and dust)\n", (long long)st->nseg);
        printf("merges           %lld\n", (long long)st->hist.n);
    }
    for (int k = 0; k < a->nthr; k++) {
        char name[600];
        threshold_name(a, k, name, sizeof name);
        printf("threshold %-6g %lld segments -> %s\n", a->thr[k], (long long)st->nfinal[k],
               name);
    }
    if (!a->from && st->t_seg > 0)
        printf("speed            %.2f Mvox/s (%.3f s segmenting, read and write excluded)\n",
               nvox / st->t_seg * 1e-6, st->t_seg);
}

int vox_cmd_segment(int argc, char **argv)
{
    return vox_cmd_segment_comm(argc, argv, NULL);
}

int vox_cmd_segment_comm(int argc, char **argv, const struct vox_dist_comm *comm)
{
    struct seg_args a = {.low = 0.01, .high = 0.99, .dust = 200, .max_threshold = 1.0,
                         .nthr = 1, .thr = {0.3}};
    vox_seg_params_defaults(&a.p);
    int r = parse_args(argc, argv, &a);
    if (r)
        return r < 0 ? 0 : r;
    struct vox_ctx *ctx = cli_ctx_create("segment", &a.common);
    if (!ctx)
        return 1;
    struct seg_state st = {.quiet = a.common.quiet || (comm && comm->rank != 0)};
    enum vox_status s = vox_seg_params_check(ctx, &a.p);
    if (s != VOX_OK) {
        fprintf(stderr, "vox segment: error: %s (see 'vox segment --help')\n",
                vox_ctx_error(ctx));
        vox_ctx_destroy(ctx);
        return 2;
    }
    if (a.from) {
        double t0 = vox_time_now();
        s = read_base(ctx, a.from, &st);
        s = s ? s : read_history(ctx, &a, &st);
        if (s == VOX_OK)
            phase(&st, "read", t0, "%s, %lld merges", a.from, (long long)st.hist.n);
    } else if (comm && comm->size > 1 && !a.chunk[0]) {
        s = vox_fail(ctx, VOX_INVALID_ARG, "%d MPI ranks need --chunk", comm->size);
    } else if (a.chunk[0]) {
        s = chunked(ctx, &a, &st, comm);
    } else {
        s = pipeline(ctx, &a, &st);
    }
    if (!a.chunk[0] && s == VOX_OK)
        memcpy(st.shape, st.base.shape, sizeof st.shape);
    if (!a.chunk[0])
        s = s ? s : write_outputs(ctx, &a, &st);
    int rc = s == VOX_OK ? 0 : cli_fail("segment", ctx, s);
    if (rc == 0)
        summary(&a, &st);
    vox_tensor_free(ctx, &st.q);
    vox_tensor_free(ctx, &st.base);
    vox_merge_history_fini(ctx, &st.hist);
    vox_ctx_destroy(ctx);
    return rc;
}
