/*
 * cmd_synth.c: `vox synth`: writes a synthetic EM volume with its ground truth to one HDF5
 * file (raw image, labels, true affinities and a degraded "network prediction"), so every
 * other command can be tried without outside data. See include/vox/synth.h for the model.
 */
#include "cli.h"
#include "vox/io.h"

#include <stdio.h>
#include <string.h>

static const char help[] =
    "usage: vox synth --out FILE.h5 [options]\n\n"
    "Generates a deterministic synthetic EM volume: neurite-like tubes and cell bodies filling\n"
    "the volume, dark membranes, blur, drift, shot noise and occasional missing or shifted\n"
    "sections (raw only). The same options give byte-identical files on any machine and any\n"
    "thread count. Datasets written, each with a float64 'resolution' attribute (z,y,x nm):\n"
    "  /raw                    uint8  (Z,Y,X)   the EM image\n"
    "  /labels                 uint64 (Z,Y,X)   ground truth, ids 1..N in C-order first "
    "appearance\n"
    "  /affinities             uint8  (3,Z,Y,X) true affinities (channel c links v and v - e_c,\n"
    "                                           e = z,y,x; 255 same cell, 0 otherwise)\n"
    "  /affinities_PRESET      uint8  (3,Z,Y,X) degraded ConvNet-like affinities (unless\n"
    "                                           --preset none)\n\n"
    "  --out FILE.h5           output HDF5 file, written atomically (required)\n"
    "  --shape Z,Y,X           voxels (default 64,256,256)\n"
    "  --seed N                random seed (default 1)\n"
    "  --voxel-nm NM           x-y voxel size in nm (default 4)\n"
    "  --anisotropy R          z voxel size / x-y voxel size (default 10: 40x4x4 nm)\n"
    "  --cell-size NM          mean neurite diameter in nm; cell count ~ volume / size^3\n"
    "                          (default 240)\n"
    "  --blob-fraction F       share of cell cores that are cell bodies, 0-1 (default 0.15)\n"
    "  --noise S               shot noise, std = S * sqrt(grey value) (default 1)\n"
    "  --blur S                Gaussian blur sigma in x-y voxels (default 1)\n"
    "  --drift D               slow intensity drift amplitude, 0-1 (default 0.1)\n"
    "  --missing-rate P        probability of a missing section, 0-1 (default 0.01)\n"
    "  --shift-rate P          probability of a shifted section, 0-1 (default 0.01)\n"
    "  --max-shift N           largest section shift in voxels (default 8)\n"
    "  --preset smooth|noisy|none  degraded affinities to add (default smooth)\n"
    "  --threads N             worker threads (default: VOX_THREADS, else all CPUs)\n"
    "  --quiet                 no progress bar and no summary\n";

struct synth_opts {
    struct vox_synth_params p;
    const char *out;
    bool degrade;
    enum vox_synth_preset preset;
    struct cli_common common;
};

/* A real-valued option: the field it sets. */
static double *real_option(struct vox_synth_params *p, const char *name)
{
    const struct {
        const char *name;
        double *field;
    } t[] = {{"--voxel-nm", &p->voxel_nm},
             {"--anisotropy", &p->anisotropy},
             {"--cell-size", &p->cell_size_nm},
             {"--blob-fraction", &p->blob_fraction},
             {"--noise", &p->noise},
             {"--blur", &p->blur},
             {"--drift", &p->drift},
             {"--missing-rate", &p->missing_rate},
             {"--shift-rate", &p->shift_rate}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (strcmp(name, t[i].name) == 0)
            return t[i].field;
    return NULL;
}

static int parse_one(int argc, char **argv, int *i, void *arg)
{
    struct synth_opts *o = arg;
    const char *a = argv[*i], *v;
    double *real = real_option(&o->p, a);
    int64_t n;
    if (!(v = cli_value("synth", argc, argv, i)))
        return 2;
    if (real) {
        if (!cli_parse_f64(v, real))
            return cli_usage("synth", "%s %s: expected a number", a, v);
    } else if (strcmp(a, "--out") == 0) {
        o->out = v;
    } else if (strcmp(a, "--shape") == 0) {
        if (!cli_parse_shape(v, 3, 1, INT64_C(1) << 31, o->p.shape))
            return cli_usage("synth", "--shape %s: expected Z,Y,X, three whole numbers >= 1", v);
    } else if (strcmp(a, "--seed") == 0) {
        if (!cli_parse_i64(v, 0, INT64_MAX, &n))
            return cli_usage("synth", "--seed %s: expected a whole number >= 0", v);
        o->p.seed = (uint64_t)n;
    } else if (strcmp(a, "--max-shift") == 0) {
        if (!cli_parse_i64(v, 0, 1000000, &o->p.max_shift))
            return cli_usage("synth", "--max-shift %s: expected a whole number >= 0", v);
    } else if (strcmp(a, "--preset") == 0) {
        o->degrade = strcmp(v, "none") != 0;
        if (o->degrade && !vox_synth_preset_parse(v, &o->preset))
            return cli_usage("synth", "--preset %s: expected smooth, noisy or none", v);
    } else {
        return cli_usage("synth", "unknown option '%s'", a);
    }
    return 0;
}

/* 0: parsed; -1: --help printed; 2: usage error printed. */
static int parse(int argc, char **argv, struct synth_opts *o)
{
    int r = cli_parse_options("synth", argc, argv, help, &o->common, parse_one, o);
    if (r)
        return r;
    if (!o->out)
        return cli_usage("synth", "--out FILE.h5 is required");
    const char *dot = strrchr(o->out, '.');
    if (!dot || (strcmp(dot, ".h5") != 0 && strcmp(dot, ".hdf5") != 0 && strcmp(dot, ".hdf")))
        return cli_usage("synth", "--out %s: expected an HDF5 file (.h5, .hdf5 or .hdf)", o->out);
    return 0;
}

static enum vox_status write_one(struct vox_ctx *ctx, struct vox_out_file *f, const char *name,
                                 const struct vox_tensor *t, const struct vox_synth_params *p)
{
    struct vox_dataset_options d = {
        .dtype = t->dtype, .rank = t->rank, .gzip = 4, .has_resolution = true};
    memcpy(d.shape, t->shape, sizeof d.shape);
    d.resolution[0] = p->voxel_nm * p->anisotropy;
    d.resolution[1] = d.resolution[2] = p->voxel_nm;
    struct vox_volume *vol;
    enum vox_status st = vox_out_dataset(ctx, f, name, &d, &vol);
    if (st == VOX_OK)
        st = vox_volume_write(ctx, vol, NULL, t);
    if (st == VOX_OK)
        st = vox_volume_set_attr_str(ctx, vol, "source", "vox synth");
    return st;
}

struct outputs {
    struct vox_tensor raw, labels, aff, deg;
    int64_t cells;
};

static enum vox_status run(struct vox_ctx *ctx, const struct synth_opts *o, struct outputs *r)
{
    struct vox_progress *bar = vox_progress_start(ctx, "synth", 3, "steps", o->common.quiet);
    enum vox_status st = vox_synth_generate(ctx, &o->p, &r->raw, &r->labels, &r->aff, &r->cells);
    vox_progress_add(bar, 1);
    if (st == VOX_OK && o->degrade)
        st = vox_synth_degrade(ctx, &r->aff, o->preset, o->p.seed, &r->deg);
    vox_progress_add(bar, 1);
    struct vox_out_file *f = NULL;
    if (st == VOX_OK)
        st = vox_out_open(ctx, o->out, &f);
    if (st == VOX_OK)
        st = write_one(ctx, f, "/raw", &r->raw, &o->p);
    if (st == VOX_OK)
        st = write_one(ctx, f, "/labels", &r->labels, &o->p);
    if (st == VOX_OK)
        st = write_one(ctx, f, "/affinities", &r->aff, &o->p);
    if (st == VOX_OK && o->degrade) {
        char name[64];
        snprintf(name, sizeof name, "/affinities_%s", vox_synth_preset_str(o->preset));
        st = write_one(ctx, f, name, &r->deg, &o->p);
    }
    if (st == VOX_OK)
        st = vox_out_commit(ctx, f); /* frees f, also on failure */
    else
        vox_out_abort(f);
    vox_progress_add(bar, 1);
    vox_progress_finish(bar);
    return st;
}

int vox_cmd_synth(int argc, char **argv)
{
    struct synth_opts o = {.degrade = true, .preset = VOX_SYNTH_SMOOTH};
    vox_synth_defaults(&o.p);
    int r = parse(argc, argv, &o);
    if (r)
        return r < 0 ? 0 : r;
    struct vox_ctx *ctx = cli_ctx_create("synth", &o.common);
    if (!ctx)
        return 1;
    enum vox_status st = vox_synth_check(ctx, &o.p);
    if (st != VOX_OK) {
        fprintf(stderr, "vox synth: error: %s (see 'vox synth --help')\n", vox_ctx_error(ctx));
        vox_ctx_destroy(ctx);
        return 2;
    }
    double t0 = vox_time_now();
    struct outputs out = {0};
    st = run(ctx, &o, &out);
    double mem = 0, in = 0;
    if (st == VOX_OK)
        st = vox_synth_contrast(ctx, &out.raw, &out.labels, &mem, &in);
    int rc = st == VOX_OK ? 0 : cli_fail("synth", ctx, st);
    if (rc == 0 && !o.common.quiet) {
        const int64_t *s = o.p.shape;
        printf("shape      %lld x %lld x %lld (z, y, x)\n", (long long)s[0], (long long)s[1],
               (long long)s[2]);
        printf("voxel      %g x %g x %g nm\n", o.p.voxel_nm * o.p.anisotropy, o.p.voxel_nm,
               o.p.voxel_nm);
        printf("cells      %lld\n", (long long)out.cells);
        printf("raw mean   %.1f on membranes, %.1f inside cells\n", mem, in);
        printf("wrote      %s (/raw, /labels, /affinities%s%s) in %.2f s\n", o.out,
               o.degrade ? ", /affinities_" : "", o.degrade ? vox_synth_preset_str(o.preset) : "",
               vox_time_now() - t0);
    }
    vox_tensor_free(ctx, &out.raw);
    vox_tensor_free(ctx, &out.labels);
    vox_tensor_free(ctx, &out.aff);
    vox_tensor_free(ctx, &out.deg);
    vox_ctx_destroy(ctx);
    return rc;
}
