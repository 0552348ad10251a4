/*
 * test_io.c: volumes on disk (src/io): HDF5 and .npy round trips for every dtype, boxes
 * (interior, far corner, single voxels, strided tensors) read and written, attributes,
 * atomic output (abort, keeping and replacing datasets), byte-identical output, every bad
 * input with its status and message, allocation-failure injection, and a file written by
 * h5py (the shared EM data, found through $VOX_SHARED_DATA; skipped when absent).
 *
 * The oracle is the tensor that was written: every read is compared byte for byte with the
 * matching box of it. Files live in a fresh mkdtemp directory per test, removed at the end.
 */
#include "harness.h"
#include "io/deflate_runs.h"
#include "io/shuffle.h"
#include "vox/io.h"

#include <dirent.h>
#include <hdf5.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* ---- helpers --------------------------------------------------------------------------- */

struct tmpdir {
    char path[64];
};

static void tmp_make(struct tmpdir *d)
{
    snprintf(d->path, sizeof d->path, "/tmp/vox-io-XXXXXX");
    if (!mkdtemp(d->path)) {
        perror("mkdtemp");
        exit(1);
    }
}

/* Files in the directory (to check that no temporary file is left). */
static int tmp_count(const struct tmpdir *d)
{
    int n = 0;
    DIR *dir = opendir(d->path);
    for (struct dirent *e; dir && (e = readdir(dir));)
        n += e->d_name[0] != '.';
    if (dir)
        closedir(dir);
    return n;
}

static void tmp_remove(struct tmpdir *d)
{
    DIR *dir = opendir(d->path);
    char p[512];
    for (struct dirent *e; dir && (e = readdir(dir));) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", d->path, e->d_name);
        unlink(p);
    }
    if (dir)
        closedir(dir);
    rmdir(d->path);
}

static const char *at(const struct tmpdir *d, const char *name)
{
    static char buf[4][512]; /* a few live at once in one call */
    static int next;
    char *b = buf[next++ & 3];
    snprintf(b, 512, "%s/%s", d->path, name);
    return b;
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(data, 1, n, f);
        fclose(f);
    }
}

/* The whole file, malloc'ed (tests only), its size in *n. */
static char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    *n = 0;
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    fclose(f);
    return b;
}

/* A C-order tensor of random values (finite floats). */
static void fill_random(struct vox_ctx *ctx, struct vox_tensor *t, enum vox_dtype dt, int rank,
                        const int64_t *shape, uint64_t seed)
{
    CHECK_OK(vox_tensor_alloc(ctx, t, dt, rank, shape));
    int64_t n = vox_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        uint64_t r = vox_test_rand(&seed);
        switch (dt) {
        case VOX_U8: ((uint8_t *)t->data)[i] = (uint8_t)r; break;
        case VOX_U16: ((uint16_t *)t->data)[i] = (uint16_t)r; break;
        case VOX_U32: ((uint32_t *)t->data)[i] = (uint32_t)r; break;
        case VOX_U64: ((uint64_t *)t->data)[i] = r; break;
        case VOX_I32: ((int32_t *)t->data)[i] = (int32_t)r; break;
        default: ((float *)t->data)[i] = (float)((double)(r >> 11) / 9007199254740992.0 - 0.5);
        }
    }
}

/* a and b (any strides) hold the same bytes. */
static bool same(struct vox_ctx *ctx, const struct vox_tensor *a, const struct vox_tensor *b)
{
    if (a->dtype != b->dtype || a->rank != b->rank)
        return false;
    for (int i = 0; i < a->rank; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    struct vox_tensor ca, cb;
    vox_tensor_alloc(ctx, &ca, a->dtype, a->rank, a->shape);
    vox_tensor_alloc(ctx, &cb, b->dtype, b->rank, b->shape);
    vox_tensor_copy(ctx, &ca, a);
    vox_tensor_copy(ctx, &cb, b);
    bool eq = memcmp(ca.data, cb.data, vox_tensor_nbytes(&ca)) == 0;
    vox_tensor_free(ctx, &ca);
    vox_tensor_free(ctx, &cb);
    return eq;
}

/* Reads [lo, hi) of spec into a view inside a larger tensor (strided) or a contiguous one,
 * and compares it with the same box of the oracle. */
static void check_box(struct vox_ctx *ctx, struct vox_volume *vol, const struct vox_tensor *ref,
                      const int64_t *lo, const int64_t *hi, bool strided)
{
    int rank = ref->rank;
    int64_t shape[VOX_MAX_RANK], big[VOX_MAX_RANK], l1[VOX_MAX_RANK], h1[VOX_MAX_RANK];
    for (int i = 0; i < rank; i++) {
        shape[i] = hi[i] - lo[i];
        big[i] = shape[i] + (strided ? 3 : 0);
        l1[i] = strided ? 1 : 0;
        h1[i] = l1[i] + shape[i];
    }
    struct vox_tensor out, view, want;
    CHECK_OK(vox_tensor_alloc(ctx, &out, ref->dtype, rank, big));
    CHECK_OK(vox_tensor_view_box(ctx, &out, l1, h1, &view));
    CHECK_OK(vox_volume_read(ctx, vol, lo, hi, &view));
    CHECK_OK(vox_tensor_view_box(ctx, ref, lo, hi, &want));
    CHECK(same(ctx, &view, &want));
    vox_tensor_free(ctx, &out);
}

static const char *ext_of(int format) { return format ? "npy" : "h5"; }

/* ---- spec ------------------------------------------------------------------------------ */

static void test_spec_split(struct vox_ctx *ctx)
{
    char p[64], d[64];
    CHECK_OK(vox_volume_spec_split(ctx, "a.h5:/raw", p, sizeof p, d, sizeof d));
    CHECK(strcmp(p, "a.h5") == 0 && strcmp(d, "/raw") == 0);
    CHECK_OK(vox_volume_spec_split(ctx, "c:/x/y.h5:/g/v", p, sizeof p, d, sizeof d));
    CHECK(strcmp(p, "c:/x/y.h5") == 0 && strcmp(d, "/g/v") == 0);
    CHECK_OK(vox_volume_spec_split(ctx, "run:3/v.npy", p, sizeof p, d, sizeof d));
    CHECK(strcmp(p, "run:3/v.npy") == 0 && d[0] == '\0');
    CHECK_STATUS(vox_volume_spec_split(ctx, "", p, sizeof p, d, sizeof d), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("empty volume name");
    CHECK_STATUS(vox_volume_spec_split(ctx, ":/raw", p, sizeof p, d, sizeof d), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("no file name");
    CHECK_STATUS(vox_volume_spec_split(ctx, "a.h5:/raw", p, 4, d, sizeof d), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("too long");
    struct vox_volume *vol;
    CHECK_STATUS(vox_volume_open(ctx, "x.tif", &vol), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("unknown volume format");
}

/* ---- round trips ----------------------------------------------------------------------- */

static void test_roundtrip_every_dtype(struct vox_ctx *ctx)
{
    struct tmpdir d;
    tmp_make(&d);
    const int64_t shape[3] = {37, 9, 130}; /* two chunks along z and along x */
    for (int format = 0; format < 2; format++) {
        for (int dt = 0; dt < VOX_DTYPE_COUNT; dt++) {
            char spec[600];
            snprintf(spec, sizeof spec, "%s/v%d.%s%s", d.path, dt, ext_of(format),
                     format ? "" : ":/group/sub/vol");
            struct vox_tensor t, back;
            struct vox_volume_info info;
            fill_random(ctx, &t, (enum vox_dtype)dt, 3, shape, 7 + (uint64_t)dt);
            CHECK_OK(vox_volume_save(ctx, spec, &t, NULL));
            CHECK_OK(vox_volume_load(ctx, spec, &back, &info));
            CHECK(info.dtype == (enum vox_dtype)dt && info.rank == 3);
            CHECK(info.shape[0] == 37 && info.shape[1] == 9 && info.shape[2] == 130);
            CHECK(same(ctx, &t, &back));
            vox_tensor_free(ctx, &back);
            vox_tensor_free(ctx, &t);
        }
    }
    /* rank 1 and 4; a .npy header is padded so the data starts at a multiple of 64 */
    const int64_t s1[1] = {5}, s4[4] = {3, 4, 5, 6};
    for (int format = 0; format < 2; format++) {
        for (int r = 0; r < 2; r++) {
            char spec[600];
            snprintf(spec, sizeof spec, "%s/r%d.%s%s", d.path, r, ext_of(format),
                     format ? "" : ":/a");
            struct vox_tensor t, back;
            fill_random(ctx, &t, VOX_U16, r ? 4 : 1, r ? s4 : s1, 3);
            CHECK_OK(vox_volume_save(ctx, spec, &t, NULL));
            CHECK_OK(vox_volume_load(ctx, spec, &back, NULL));
            CHECK(same(ctx, &t, &back));
            if (format) {
                size_t n;
                char *b = read_file(spec, &n);
                size_t h = n - vox_tensor_nbytes(&t);
                CHECK(b && h % 64 == 0 && h >= 64 && b[h - 1] == '\n');
                CHECK(b && memmem(b, n, r ? "(3, 4, 5, 6), }" : "(5,), }", r ? 15 : 7));
                free(b);
            }
            vox_tensor_free(ctx, &back);
            vox_tensor_free(ctx, &t);
        }
    }
    tmp_remove(&d);
}

/* ---- boxes ----------------------------------------------------------------------------- */

static void test_read_boxes(struct vox_ctx *ctx)
{
    struct tmpdir d;
    tmp_make(&d);
    const int64_t shape[3] = {20, 17, 45};
    uint64_t seed = 11;
    for (int format = 0; format < 2; format++) {
        char spec[600];
        snprintf(spec, sizeof spec, "%s/b.%s%s", d.path, ext_of(format), format ? "" : ":/v");
        struct vox_tensor ref;
        struct vox_volume *vol;
        fill_random(ctx, &ref, VOX_U32, 3, shape, 5);
        struct vox_dataset_options opt = {.gzip = 1, .chunk = {4, 8, 16}};
        CHECK_OK(vox_volume_save(ctx, spec, &ref, &opt));
        CHECK_OK(vox_volume_open(ctx, spec, &vol));
        const int64_t boxes[][6] = {
            {0, 0, 0, 20, 17, 45},  /* whole */
            {3, 5, 7, 11, 16, 40},  /* interior */
            {19, 16, 44, 20, 17, 45}, /* the far corner voxel */
            {0, 0, 0, 1, 1, 1},     /* the first voxel */
            {5, 0, 0, 9, 17, 45},   /* whole planes: one run in .npy */
            {5, 3, 0, 6, 9, 45},    /* whole rows */
            {12, 16, 0, 20, 17, 45}, /* far edge */
        };
        for (size_t b = 0; b < sizeof boxes / sizeof boxes[0]; b++) {
            check_box(ctx, vol, &ref, boxes[b], boxes[b] + 3, false);
            check_box(ctx, vol, &ref, boxes[b], boxes[b] + 3, true);
        }
        for (int i = 0; i < (vox_test_full ? 300 : 20); i++) {
            int64_t lo[3], hi[3];
            for (int a = 0; a < 3; a++) {
                lo[a] = (int64_t)(vox_test_rand(&seed) % (uint64_t)shape[a]);
                hi[a] = lo[a] + 1 + (int64_t)(vox_test_rand(&seed) % (uint64_t)(shape[a] - lo[a]));
            }
            check_box(ctx, vol, &ref, lo, hi, i & 1);
        }
        vox_volume_close(vol);
        vox_tensor_free(ctx, &ref);
    }
    tmp_remove(&d);
}

/* Thin boxes of a .npy file: a plane's short rows come with one read of their span, or, where
 * the span is mostly gaps, one read each. HDF5 boxes are not direct. */
static void test_npy_thin_boxes(struct vox_ctx *ctx)
{
    struct tmpdir d;
    tmp_make(&d);
    const int64_t shape[4] = {3, 40, 300, 300};
    struct vox_tensor ref;
    struct vox_volume *vol;
    fill_random(ctx, &ref, VOX_U8, 4, shape, 7);
    CHECK_OK(vox_volume_save(ctx, at(&d, "m.npy"), &ref, NULL));
    CHECK_OK(vox_volume_open(ctx, at(&d, "m.npy"), &vol));
    CHECK(vox_volume_box_direct(vol));
    const int64_t boxes[][8] = {
        {0, 0, 0, 0, 3, 40, 300, 300},    /* whole: one run, read as such */
        {0, 1, 2, 3, 3, 39, 290, 5},      /* two columns: spans (gaps < a call per run) */
        {1, 0, 150, 7, 3, 40, 151, 299},  /* one row per plane */
        {0, 17, 0, 296, 2, 23, 300, 300}, /* the far x edge */
        {0, 3, 10, 20, 3, 9, 250, 280},   /* planes of short rows: spans */
        {2, 5, 0, 0, 3, 30, 20, 300},     /* whole rows of a few planes: spans */
    };
    for (size_t b = 0; b < sizeof boxes / sizeof boxes[0]; b++)
        check_box(ctx, vol, &ref, boxes[b], boxes[b] + 4, b & 1);
    vox_volume_close(vol);
    vox_tensor_free(ctx, &ref);
    /* a plane's span over 4 MiB: run by run */
    const int64_t wide[4] = {2, 2, 2100, 2100}, thin[2][4] = {{0, 0, 0, 5}, {2, 2, 2100, 9}};
    fill_random(ctx, &ref, VOX_U8, 4, wide, 9);
    CHECK_OK(vox_volume_save(ctx, at(&d, "w.npy"), &ref, NULL));
    CHECK_OK(vox_volume_open(ctx, at(&d, "w.npy"), &vol));
    check_box(ctx, vol, &ref, thin[0], thin[1], true);
    vox_volume_close(vol);
    vox_tensor_free(ctx, &ref);
    fill_random(ctx, &ref, VOX_U8, 3, shape + 1, 8);
    CHECK_OK(vox_volume_save(ctx, at(&d, "m.h5:/v"), &ref, NULL));
    CHECK_OK(vox_volume_open(ctx, at(&d, "m.h5:/v"), &vol));
    CHECK(!vox_volume_box_direct(vol));
    vox_volume_close(vol);
    vox_tensor_free(ctx, &ref);
    tmp_remove(&d);
}

/* Writes a volume as a 3x2x2 grid of uneven blocks taken from strided views, then checks it. */
static void test_write_boxes(struct vox_ctx *ctx)
{
    struct tmpdir d;
    tmp_make(&d);
    const int64_t shape[3] = {13, 10, 21}, cuts[3][4] = {{0, 4, 9, 13}, {0, 7, 10}, {0, 1, 21}};
    for (int format = 0; format < 2; format++) {
        struct vox_tensor ref, big, back;
        const int64_t bigs[3] = {15, 12, 23}, off[3] = {1, 1, 1}, end[3] = {14, 11, 22};
        fill_random(ctx, &big, VOX_F32, 3, bigs, 17);
        CHECK_OK(vox_tensor_view_box(ctx, &big, off, end, &ref)); /* a strided view */
        struct vox_out_file *f;
        struct vox_volume *vol;
        const char *path = at(&d, format ? "w.npy" : "w.h5");
        struct vox_dataset_options opt = {.dtype = VOX_F32, .rank = 3, .gzip = 4,
                                          .shape = {13, 10, 21}};
        CHECK_OK(vox_out_open(ctx, path, &f));
        CHECK_OK(vox_out_dataset(ctx, f, "/w", &opt, &vol));
        CHECK(strstr(vox_volume_name(vol), "w."));
        for (int z = 0; z < 3; z++)
            for (int y = 0; y < 2; y++)
                for (int x = 0; x < 2; x++) {
                    int64_t lo[3] = {cuts[0][z], cuts[1][y], cuts[2][x]};
                    int64_t hi[3] = {cuts[0][z + 1], cuts[1][y + 1], cuts[2][x + 1]};
                    struct vox_tensor blk;
                    CHECK_OK(vox_tensor_view_box(ctx, &ref, lo, hi, &blk));
                    CHECK_OK(vox_volume_write(ctx, vol, lo, &blk));
                }
        /* a box read back before commit sees what was written */
        check_box(ctx, vol, &ref, (int64_t[]){2, 6, 0}, (int64_t[]){5, 8, 2}, true);
        CHECK_OK(vox_out_commit(ctx, f));
        CHECK_OK(vox_volume_load(ctx, format ? path : at(&d, "w.h5:/w"), &back, NULL));
        CHECK(back.shape[0] == shape[0] && same(ctx, &ref, &back));
        vox_tensor_free(ctx, &back);
        vox_tensor_free(ctx, &big);
    }
    CHECK(tmp_count(&d) == 2);
    tmp_remove(&d);
}

/* ---- attributes, keeping and replacing datasets, determinism -------------------------- */

static void test_attributes(struct vox_ctx *ctx)
{
    struct tmpdir d;
    tmp_make(&d);
    struct vox_tensor t;
    fill_random(ctx, &t, VOX_U8, 3, (int64_t[]){4, 5, 6}, 1);
    struct vox_dataset_options opt = {.gzip = 9, .has_resolution = true, .has_offset = true,
                                      .resolution = {40, 4.5, 4}, .offset = {-3, 0, 1LL << 40}};
    const char *path = at(&d, "a.h5");
    struct vox_out_file *f;
    struct vox_volume *vol;
    opt.dtype = VOX_U8;
    opt.rank = 3;
    memcpy(opt.shape, t.shape, sizeof opt.shape);
    CHECK_OK(vox_out_open(ctx, path, &f));
    CHECK_OK(vox_out_dataset(ctx, f, "/seg", &opt, &vol));
    CHECK_OK(vox_volume_write(ctx, vol, NULL, &t));
    CHECK_OK(vox_volume_set_attr_str(ctx, vol, "source", "vox test"));
    CHECK_OK(vox_volume_set_attr_str(ctx, vol, "source", "vox test, replaced"));
    CHECK_OK(vox_volume_set_attr_str(ctx, vol, "convention", "0 = background; ünïcode"));
    CHECK_OK(vox_out_commit(ctx, f));

    CHECK_OK(vox_volume_open(ctx, at(&d, "a.h5:/seg"), &vol));
    const struct vox_volume_info *in = vox_volume_info(vol);
    CHECK(in->has_resolution && in->resolution[0] == 40 && in->resolution[1] == 4.5);
    CHECK(in->has_offset && in->offset[0] == -3 && in->offset[2] == 1LL << 40);
    char buf[64];
    CHECK_OK(vox_volume_get_attr_str(ctx, vol, "source", buf, sizeof buf));
    CHECK(strcmp(buf, "vox test, replaced") == 0);
    CHECK_OK(vox_volume_get_attr_str(ctx, vol, "convention", buf, sizeof buf));
    CHECK(strcmp(buf, "0 = background; ünïcode") == 0);
    CHECK_STATUS(vox_volume_get_attr_str(ctx, vol, "source", buf, 4), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("needs 19 bytes");
    CHECK_STATUS(vox_volume_get_attr_str(ctx, vol, "nope", buf, sizeof buf), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("no attribute 'nope'");
    CHECK_STATUS(vox_volume_get_attr_str(ctx, vol, "resolution", buf, sizeof buf), VOX_FORMAT);
    CHECK_ERROR_HAS("not a readable string");
    CHECK_STATUS(vox_volume_set_attr_str(ctx, vol, "x", "y"), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("opened for reading");
    vox_volume_close(vol);

    /* no attributes: none reported; .npy drops string attributes */
    CHECK_OK(vox_volume_save(ctx, at(&d, "b.h5:/v"), &t, NULL));
    CHECK_OK(vox_volume_open(ctx, at(&d, "b.h5:/v"), &vol));
    CHECK(!vox_volume_info(vol)->has_resolution && !vox_volume_info(vol)->has_offset);
    vox_volume_close(vol);
    CHECK_OK(vox_out_open(ctx, at(&d, "c.npy"), &f));
    CHECK_OK(vox_out_dataset(ctx, f, "", &opt, &vol));
    CHECK_OK(vox_volume_set_attr_str(ctx, vol, "source", "dropped"));
    CHECK_OK(vox_volume_write(ctx, vol, NULL, &t));
    CHECK_OK(vox_out_commit(ctx, f));
    vox_tensor_free(ctx, &t);
    tmp_remove(&d);
}

static void test_keep_and_replace_datasets(struct vox_ctx *ctx)
{
    struct tmpdir d;
    tmp_make(&d);
    struct vox_tensor a, b, c, back;
    fill_random(ctx, &a, VOX_U8, 3, (int64_t[]){3, 4, 5}, 1);
    fill_random(ctx, &b, VOX_U64, 2, (int64_t[]){6, 7}, 2);
    fill_random(ctx, &c, VOX_F32, 3, (int64_t[]){2, 2, 9}, 3);
    CHECK_OK(vox_volume_save(ctx, at(&d, "f.h5:/raw"), &a, NULL));
    CHECK_OK(vox_volume_save(ctx, at(&d, "f.h5:/deep/labels"), &b, NULL));
    /* replace /raw with another dtype and shape; /deep/labels stays */
    CHECK_OK(vox_volume_save(ctx, at(&d, "f.h5:/raw"), &c, NULL));
    CHECK_OK(vox_volume_load(ctx, at(&d, "f.h5:/raw"), &back, NULL));
    CHECK(same(ctx, &c, &back));
    vox_tensor_free(ctx, &back);
    CHECK_OK(vox_volume_load(ctx, at(&d, "f.h5:/deep/labels"), &back, NULL));
    CHECK(same(ctx, &b, &back));
    vox_tensor_free(ctx, &back);
    CHECK(tmp_count(&d) == 1);
    /* a dataset path through an existing dataset is refused */
    CHECK_STATUS(vox_volume_save(ctx, at(&d, "f.h5:/raw/x"), &a, NULL), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("'/raw' is not a group");
    CHECK(tmp_count(&d) == 1);
    vox_tensor_free(ctx, &a);
    vox_tensor_free(ctx, &b);
    vox_tensor_free(ctx, &c);
    tmp_remove(&d);
}

static void test_byte_identical_output(struct vox_ctx *ctx)
{
    struct tmpdir d;
    tmp_make(&d);
    struct vox_tensor t;
    fill_random(ctx, &t, VOX_U16, 3, (int64_t[]){40, 30, 140}, 4);
    struct vox_dataset_options opt = {.gzip = 4, .has_resolution = true,
                                      .resolution = {8, 8, 8}};
    const char *names[2][2] = {{"x.h5", "y.h5"}, {"x.npy", "y.npy"}};
    for (int format = 0; format < 2; format++) {
        for (int k = 0; k < 2; k++) {
            char spec[600];
            snprintf(spec, sizeof spec, "%s/%s%s", d.path, names[format][k],
                     format ? "" : ":/g/v");
            CHECK_OK(vox_volume_save(ctx, spec, &t, &opt));
            if (k == 0 && format == 0)
                sleep(1); /* a time stamp, if HDF5 wrote one, would differ */
        }
        size_t n1, n2;
        char *b1 = read_file(at(&d, names[format][0]), &n1);
        char *b2 = read_file(at(&d, names[format][1]), &n2);
        CHECK(b1 && b2 && n1 == n2 && n1 > 0 && memcmp(b1, b2, n1) == 0);
        free(b1);
        free(b2);
    }
    vox_tensor_free(ctx, &t);
    tmp_remove(&d);
}

/* The stored bytes of every chunk of dataset `name` in `path`, concatenated with their sizes
 * (libhdf5's H5Dread_chunk: the filtered bytes as they are in the file). */
static char *raw_chunks(const char *path, const char *name, size_t *len)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), d = H5Dopen2(f, name, H5P_DEFAULT);
    hid_t sp = H5Dget_space(d), dcpl = H5Dget_create_plist(d);
    hsize_t dims[8], ch[8], idx[8] = {0};
    int r = H5Sget_simple_extent_dims(sp, dims, NULL);
    CHECK(r > 0 && H5Pget_chunk(dcpl, 8, ch) == r);
    char *out = NULL;
    *len = 0;
    for (;;) {
        hsize_t n = 0;
        uint32_t mask = 1;
        CHECK(H5Dget_chunk_storage_size(d, idx, &n) >= 0 && n > 0);
        out = realloc(out, *len + sizeof n + n);
        memcpy(out + *len, &n, sizeof n);
        CHECK(H5Dread_chunk(d, H5P_DEFAULT, idx, &mask, out + *len + sizeof n) >= 0);
        CHECK(mask == 0);
        *len += sizeof n + n;
        int i = r - 1;
        while (i >= 0 && (idx[i] += ch[i]) >= dims[i])
            idx[i--] = 0;
        if (i < 0)
            break;
    }
    H5Pclose(dcpl);
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(f);
    return out;
}

/* A gzip dataset written whole (its chunks compressed on the pool, io/h5_chunks.c), box by
 * box through vox_volume_encode (chunk-aligned boxes, out of order, and one box that is not),
 * in boxes that cut chunks (libhdf5 compresses), and as the first way but encoded for a
 * detached volume and stored from its packed bytes (another process's encoding): the same
 * values, for every dtype (shuffle for multi-byte ones), edge chunks included, and every
 * chunk stored with the same bytes where the same boxes were written. */
static void test_chunk_compression(struct vox_ctx *ctx)
{
    struct tmpdir d;
    tmp_make(&d);
    const int64_t shape[3] = {19, 37, 70}, chunk[3] = {8, 16, 32};
    for (int dt = 0; dt < VOX_DTYPE_COUNT; dt++) {
        struct vox_tensor t, back;
        fill_random(ctx, &t, (enum vox_dtype)dt, 3, shape, 40 + (uint64_t)dt);
        if (dt == VOX_U64) /* labels: runs, so deflate has something to find */
            for (int64_t i = 0; i < vox_tensor_numel(&t); i++)
                ((uint64_t *)t.data)[i] = (uint64_t)(i / 7) * 0x10001u;
        struct vox_dataset_options opt = {.dtype = (enum vox_dtype)dt, .rank = 3, .gzip = 4};
        memcpy(opt.shape, shape, sizeof shape);
        memcpy(opt.chunk, chunk, sizeof chunk);
        const char *names[4] = {"whole.h5", "enc.h5", "cut.h5", "packed.h5"};
        struct vox_volume *det;
        CHECK_OK(vox_volume_detached(ctx, "elsewhere.h5:/v", &opt, &det));
        for (int way = 0; way < 4; way++) {
            struct vox_out_file *f;
            struct vox_volume *vol;
            CHECK_OK(vox_out_open(ctx, at(&d, names[way]), &f));
            CHECK_OK(vox_out_dataset(ctx, f, "/v", &opt, &vol));
            if (way == 0)
                CHECK_OK(vox_volume_write(ctx, vol, NULL, &t));
            /* enc: z slabs [16, 19), [0, 16) as two boxes split at y 16, the rest unaligned */
            const int64_t boxes[4][2][3] = {{{16, 0, 0}, {19, 37, 70}},
                                            {{0, 16, 0}, {16, 37, 70}},
                                            {{0, 0, 0}, {16, 16, 33}},
                                            {{0, 0, 33}, {16, 16, 70}}};
            for (int b = 0; (way == 1 || way == 3) && b < 4; b++) {
                struct vox_tensor v;
                struct vox_encoded *e;
                CHECK_OK(vox_tensor_view_box(ctx, &t, boxes[b][0], boxes[b][1], &v));
                CHECK_OK(vox_volume_encode(ctx, way == 1 ? vol : det, boxes[b][0], &v, &e));
                if (way == 1) {
                    CHECK_OK(vox_volume_write_encoded(ctx, e));
                    continue;
                }
                void *blob;
                int64_t len;
                CHECK_OK(vox_encoded_pack(ctx, e, &blob, &len));
                CHECK_STATUS(vox_volume_write_packed(ctx, vol, blob, len - 1), VOX_FORMAT);
                CHECK_OK(vox_volume_write_packed(ctx, vol, blob, len));
                vox_free(ctx, blob);
            }
            for (int64_t z = 0; way == 2 && z < shape[0]; z += 5) {
                int64_t lo[3] = {z, 0, 0}, hi[3] = {z + 5 < 19 ? z + 5 : 19, 37, 70};
                struct vox_tensor v;
                CHECK_OK(vox_tensor_view_box(ctx, &t, lo, hi, &v));
                CHECK_OK(vox_volume_write(ctx, vol, lo, &v));
            }
            CHECK_OK(vox_out_commit(ctx, f));
            char spec[600];
            snprintf(spec, sizeof spec, "%s:/v", at(&d, names[way]));
            CHECK_OK(vox_volume_load(ctx, spec, &back, NULL));
            CHECK(same(ctx, &t, &back));
            vox_tensor_free(ctx, &back);
        }
        vox_volume_close(det);
        size_t n[4];
        char *raw[4];
        for (int way = 0; way < 4; way++)
            raw[way] = raw_chunks(at(&d, names[way]), "/v", &n[way]);
        /* chunks are deflated here as runs (integers of several bytes with runs: the u64
         * data, zero-padded edge chunks; io/deflate_runs.c) or by libdeflate, where libhdf5
         * (boxes that cut chunks: way 2, and ways 1 and 3 alike) uses zlib: the same values
         * (above), other bytes; the same boxes, the same bytes */
        CHECK(n[1] == n[3] && memcmp(raw[1], raw[3], n[1]) == 0);
        /* the zlib header of the first chunk: deflate_runs' 0x7801, zlib level 4's 0x785e */
        CHECK(n[0] > 10 && (uint8_t)raw[0][8] == 0x78 &&
              ((uint8_t)raw[0][9] == 0x01) == (dt == VOX_U64));
        CHECK(n[2] > 10 && (uint8_t)raw[2][9] == 0x5e);
        for (int way = 0; way < 4; way++)
            free(raw[way]);
        vox_tensor_free(ctx, &t);
    }
    tmp_remove(&d);
}

static uint64_t runs_rand(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* deflate_runs against its scalar twin, bit for bit, and zlib's inflate: buffers of runs of
 * 1-3 bytes, 1-600 bytes, about 258 (the longest match), one run, and few values in short
 * runs (many blocks); sizes around the match lengths. Short runs are refused (zlib codes
 * them better), and so is a cap one byte short of the stream. */
static void test_deflate_runs(struct vox_ctx *ctx)
{
    (void)ctx;
    const size_t sizes[] = {1, 2, 3, 4, 257, 258, 259, 260, 517, 4096, 100003, (size_t)3 << 20};
    const int nsizes = (int)(sizeof sizes / sizeof *sizes);
    uint64_t x = 88172645463325252ull;
    int taken[5] = {0};
    for (int si = 0; si < nsizes; si++)
        for (int mode = 0; mode < 5; mode++) {
            const size_t n = sizes[si], cap = n + n / 2 + 64;
            uint8_t *src = malloc(n), *a = malloc(cap), *b = malloc(cap), *back = malloc(n);
            uint16_t *tok = malloc(deflate_runs_tokens(n) * sizeof *tok);
            CHECK(src && a && b && back && tok);
            for (size_t i = 0; i < n;) {
                uint64_t r = runs_rand(&x);
                size_t len = mode == 0   ? 1 + r % 3
                             : mode == 1 ? 1 + r % 600
                             : mode == 2 ? n
                             : mode == 3 ? 250 + r % 17
                                         : 1 + r % 40;
                uint8_t c = (uint8_t)(mode == 4 ? (r >> 32) % 3 : r >> 32);
                for (size_t k = 0; k < len && i < n; k++)
                    src[i++] = c;
            }
            size_t la = deflate_runs(src, n, a, cap, tok),
                   lb = deflate_runs_ref(src, n, b, cap, tok);
            CHECK(la == lb && memcmp(a, b, la) == 0);
            if (la) {
                taken[mode]++;
                uLongf got = (uLongf)n;
                CHECK(uncompress(back, &got, a, (uLong)la) == Z_OK && got == n &&
                      memcmp(back, src, n) == 0);
                CHECK(deflate_runs(src, n, a, la - 1, tok) == 0);
            }
            if (mode == 0 && n >= 4096)
                CHECK(la == 0);
            if (mode == 2)
                CHECK(la > 0 && la < 64 + n / 64);
            free(src), free(a), free(b), free(back), free(tok);
        }
    CHECK(taken[1] >= nsizes - 1 && taken[3] >= nsizes - 1 && taken[4] >= nsizes - 3);
}

/* The vector byte shuffles of every ISA the machine has against the scalar twin: rows of
 * 2-, 4- and 8-byte elements, lengths around the vector widths, random values and labels
 * (small ids: zero planes), bit for bit; and the unshuffles (vector and scalar) back. */
static void test_shuffle_rows(struct vox_ctx *ctx)
{
    const enum vox_isa isa = vox_ctx_cpu(ctx)->isa_max;
    const shuffle_row_fn fn[2] = {shuffle_row_avx2, shuffle_row_avx512},
                         un[2] = {unshuffle_row_avx2, unshuffle_row_avx512};
    const size_t lens[] = {1, 3, 4, 7, 8, 15, 16, 31, 32, 33, 63, 64, 65, 100, 128, 129, 1000};
    uint64_t x = 0x9e3779b97f4a7c15ull;
    int ran = 0;
    for (int f = 0; f < 2; f++) {
        if ((int)isa < f + 1)
            continue;
        for (size_t esz = 2; esz <= 8; esz *= 2)
            for (size_t li = 0; li < sizeof lens / sizeof *lens; li++)
                for (int kind = 0; kind < 2; kind++) {
                    const size_t n = lens[li], plane = n + 5;
                    char src[8000], a[8 * 1005], b[8 * 1005];
                    for (size_t i = 0; i < n * esz; i++)
                        src[i] = (char)(kind == 0 || i % esz == 0 ? runs_rand(&x) : 0);
                    memset(a, 0x55, sizeof a);
                    memset(b, 0x55, sizeof b);
                    shuffle_row_ref(src, a, n, esz, plane);
                    fn[f](src, b, n, esz, plane);
                    CHECK(memcmp(a, b, esz * plane) == 0);
                    char back[8000];
                    un[f](b, back, n, esz, plane); /* and back */
                    CHECK(memcmp(back, src, n * esz) == 0);
                    unshuffle_row_ref(b, back, n, esz, plane);
                    CHECK(memcmp(back, src, n * esz) == 0);
                    ran++;
                }
    }
    CHECK(ran > 0 || isa == VOX_ISA_REF);
}

/* A detached volume only encodes; packed bytes made for another layout (chunks, dtype, a box
 * beyond the dataset) or cut short are refused with nothing written. */
static void test_packed_mismatch(struct vox_ctx *ctx)
{
    struct tmpdir d;
    tmp_make(&d);
    struct vox_tensor t;
    const int64_t shape[3] = {8, 16, 16};
    fill_random(ctx, &t, VOX_U32, 3, shape, 5);
    struct vox_dataset_options opt = {
        .dtype = VOX_U32, .rank = 3, .gzip = 4, .shape = {8, 16, 16}, .chunk = {4, 8, 8}};
    struct vox_dataset_options other = opt;
    other.chunk[2] = 16;
    struct vox_volume *det, *det2, *vol;
    struct vox_encoded *e;
    void *blob;
    int64_t len;
    CHECK_OK(vox_volume_detached(ctx, "x.h5:/v", &opt, &det));
    CHECK_OK(vox_volume_detached(ctx, "x.h5:/v", &other, &det2));
    CHECK_STATUS(vox_volume_write(ctx, det, NULL, &t), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("detached");
    CHECK_OK(vox_volume_encode(ctx, det, NULL, &t, &e));
    CHECK_STATUS(vox_volume_write_encoded(ctx, e), VOX_INVALID_ARG);
    struct vox_out_file *f;
    CHECK_OK(vox_out_open(ctx, at(&d, "p.h5"), &f));
    CHECK_OK(vox_out_dataset(ctx, f, "/v", &opt, &vol));
    CHECK_OK(vox_volume_encode(ctx, det2, NULL, &t, &e));
    CHECK_OK(vox_encoded_pack(ctx, e, &blob, &len));
    CHECK_STATUS(vox_volume_write_packed(ctx, vol, blob, len), VOX_FORMAT);
    CHECK_ERROR_HAS("does not fit");
    vox_free(ctx, blob);
    CHECK_OK(vox_volume_encode(ctx, det, NULL, &t, &e));
    CHECK_OK(vox_encoded_pack(ctx, e, &blob, &len));
    for (int64_t cut = 0; cut < len; cut += len / 7 + 1)
        CHECK_STATUS(vox_volume_write_packed(ctx, vol, blob, cut), VOX_FORMAT);
    ((int64_t *)blob)[2] = VOX_U64; /* another dtype */
    CHECK_STATUS(vox_volume_write_packed(ctx, vol, blob, len), VOX_FORMAT);
    vox_free(ctx, blob);
    vox_out_abort(f);
    vox_volume_close(det);
    vox_volume_close(det2);
    vox_tensor_free(ctx, &t);
    CHECK(vox_ctx_live_allocs(ctx) == 0);
    tmp_remove(&d);
}

/* ---- atomic output --------------------------------------------------------------------- */

static void test_abort(struct vox_ctx *ctx)
{
    struct tmpdir d;
    tmp_make(&d);
    struct vox_tensor a, b, back;
    fill_random(ctx, &a, VOX_I32, 3, (int64_t[]){3, 4, 5}, 1);
    fill_random(ctx, &b, VOX_I32, 3, (int64_t[]){3, 4, 5}, 2);
    struct vox_dataset_options opt = {.dtype = VOX_I32, .rank = 3, .shape = {3, 4, 5}};
    for (int format = 0; format < 2; format++) {
        const char *path = at(&d, format ? "t.npy" : "t.h5");
        char spec[600];
        snprintf(spec, sizeof spec, "%s%s", path, format ? "" : ":/v");
        struct vox_out_file *f;
        struct vox_volume *vol;
        /* a new target: nothing is left */
        CHECK_OK(vox_out_open(ctx, path, &f));
        CHECK_OK(vox_out_dataset(ctx, f, "/v", &opt, &vol));
        CHECK_OK(vox_volume_write(ctx, vol, NULL, &a));
        CHECK(tmp_count(&d) == 1); /* the temporary file */
        vox_out_abort(f);
        CHECK(tmp_count(&d) == 0);
        /* an existing target stays as it was */
        CHECK_OK(vox_volume_save(ctx, spec, &a, NULL));
        size_t n1, n2;
        char *before = read_file(path, &n1);
        CHECK_OK(vox_out_open(ctx, path, &f));
        CHECK_OK(vox_out_dataset(ctx, f, "/v", &opt, &vol));
        CHECK_OK(vox_volume_write(ctx, vol, NULL, &b));
        vox_out_abort(f);
        char *after = read_file(path, &n2);
        CHECK(before && after && n1 == n2 && memcmp(before, after, n1) == 0);
        free(before);
        free(after);
        CHECK_OK(vox_volume_load(ctx, spec, &back, NULL));
        CHECK(same(ctx, &a, &back));
        vox_tensor_free(ctx, &back);
        CHECK(tmp_count(&d) == 1);
        unlink(path);
    }
    vox_out_abort(NULL);
    vox_tensor_free(ctx, &a);
    vox_tensor_free(ctx, &b);
    tmp_remove(&d);
}

/* ---- bad inputs ------------------------------------------------------------------------ */

/* Makes an HDF5 file with one dataset of the given type and rank with libhdf5 directly. */
static void h5_make(const char *path, const char *name, hid_t type, int rank)
{
    hsize_t dims[8] = {2, 2, 2, 2, 2, 2, 2, 2};
    char zeros[256] = {0};
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t sp = rank ? H5Screate_simple(rank, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t ds = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (H5Tget_class(type) != H5T_STRING)
        H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros);
    H5Dclose(ds);
    H5Sclose(sp);
    H5Fclose(f);
}

/* A .npy file with the given header dict and `data` bytes of zeros. */
static void npy_make(const char *path, const char *dict, size_t data)
{
    char buf[1024] = "\x93NUMPY\x01\x00";
    size_t n = strlen(dict);
    buf[8] = (char)n;
    memcpy(buf + 10, dict, n);
    write_file(path, buf, 10 + n + data);
}

static void test_bad_hdf5(struct vox_ctx *ctx)
{
    struct tmpdir d;
    tmp_make(&d);
    struct vox_volume *vol = NULL;
    CHECK_STATUS(vox_volume_open(ctx, at(&d, "none.h5:/raw"), &vol), VOX_IO);
    CHECK_ERROR_HAS("none.h5");
    CHECK_ERROR_HAS("No such file");
    write_file(at(&d, "text.h5"), "hello, not hdf5", 15);
    CHECK_STATUS(vox_volume_open(ctx, at(&d, "text.h5:/raw"), &vol), VOX_FORMAT);
    CHECK_ERROR_HAS("text.h5' is not an HDF5 file");
    h5_make(at(&d, "f64.h5"), "/p", H5T_IEEE_F64LE, 3);
    CHECK_STATUS(vox_volume_open(ctx, at(&d, "f64.h5:/p"), &vol), VOX_UNSUPPORTED);
    CHECK_ERROR_HAS("f64.h5:/p': dtype float64 is not supported");
    h5_make(at(&d, "i8.h5"), "/p", H5T_STD_I8LE, 3);
    CHECK_STATUS(vox_volume_open(ctx, at(&d, "i8.h5"), &vol), VOX_UNSUPPORTED);
    CHECK_ERROR_HAS("dtype int8");
    h5_make(at(&d, "r7.h5"), "/p", H5T_STD_U8LE, 7);
    CHECK_STATUS(vox_volume_open(ctx, at(&d, "r7.h5:/p"), &vol), VOX_UNSUPPORTED);
    CHECK_ERROR_HAS("rank 7");
    h5_make(at(&d, "r0.h5"), "/p", H5T_STD_U8LE, 0);
    CHECK_STATUS(vox_volume_open(ctx, at(&d, "r0.h5:/p"), &vol), VOX_UNSUPPORTED);
    CHECK_ERROR_HAS("rank 0");
    hid_t str = H5Tcopy(H5T_C_S1);
    H5Tset_size(str, 8);
    h5_make(at(&d, "str.h5"), "/s", str, 1);
    H5Tclose(str);
    CHECK_STATUS(vox_volume_open(ctx, at(&d, "str.h5:/s"), &vol), VOX_UNSUPPORTED);
    CHECK_ERROR_HAS("dtype string");

    struct vox_tensor t;
    fill_random(ctx, &t, VOX_U8, 3, (int64_t[]){4, 4, 4}, 1);
    CHECK_OK(vox_volume_save(ctx, at(&d, "two.h5:/raw"), &t, NULL));
    CHECK_OK(vox_volume_save(ctx, at(&d, "two.h5:/g/labels"), &t, NULL));
    CHECK_STATUS(vox_volume_open(ctx, at(&d, "two.h5:/nope"), &vol), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("has no dataset '/nope' (it holds 2: /g/labels, /raw)");
    CHECK_STATUS(vox_volume_open(ctx, at(&d, "two.h5:/g"), &vol), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("no dataset '/g'");
    CHECK_STATUS(vox_volume_open(ctx, at(&d, "two.h5"), &vol), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("holds 2 datasets (/g/labels, /raw): name one");
    /* the only dataset of a file needs no name */
    CHECK_OK(vox_volume_save(ctx, at(&d, "one.h5:/only"), &t, NULL));
    CHECK_OK(vox_volume_open(ctx, at(&d, "one.h5"), &vol));
    CHECK(vol && strcmp(vox_volume_name(vol), at(&d, "one.h5")) == 0);
    vox_volume_close(vol);
    /* writing: no dataset name, a target that is not HDF5 (left alone), no directory */
    CHECK_STATUS(vox_volume_save(ctx, at(&d, "new.h5"), &t, NULL), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("name the dataset to write");
    CHECK_STATUS(vox_volume_save(ctx, at(&d, "text.h5:/raw"), &t, NULL), VOX_FORMAT);
    CHECK_ERROR_HAS("exists and is not an HDF5 file");
    size_t n;
    char *b = read_file(at(&d, "text.h5"), &n);
    CHECK(b && n == 15 && memcmp(b, "hello", 5) == 0);
    free(b);
    CHECK_STATUS(vox_volume_save(ctx, "/nonexistent-vox-dir/x.h5:/v", &t, NULL), VOX_IO);
    CHECK_ERROR_HAS("cannot create '/nonexistent-vox-dir/x.h5.tmp-");
    CHECK_ERROR_HAS("No such file or directory");
    CHECK(tmp_count(&d) == 8);
    vox_tensor_free(ctx, &t);
    tmp_remove(&d);
}

static void test_bad_npy(struct vox_ctx *ctx)
{
    struct tmpdir d;
    tmp_make(&d);
    struct vox_volume *vol = NULL;
    const struct {
        const char *dict;
        size_t data;
        enum vox_status status;
        const char *msg;
    } cases[] = {
        {"{'descr': '<u2', 'fortran_order': False, 'shape': (3, 4), }", 23, VOX_FORMAT,
         "is truncated: its header promises 24 bytes of data, the file holds 23"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", 24, VOX_UNSUPPORTED,
         "dtype float64 is not supported"},
        {"{'descr': '|i1', 'fortran_order': False, 'shape': (3,), }", 3, VOX_UNSUPPORTED,
         "dtype int8"},
        {"{'descr': '>u4', 'fortran_order': False, 'shape': (3,), }", 12, VOX_UNSUPPORTED,
         "dtype uint32 big-endian"},
        {"{'descr': '<u1', 'fortran_order': True, 'shape': (3, 2), }", 6, VOX_UNSUPPORTED,
         "fortran_order"},
        {"{'descr': '<u1', 'fortran_order': False, 'shape': (), }", 1, VOX_UNSUPPORTED,
         "rank 0"},
        {"{'descr': '<u1', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1), }", 1,
         VOX_UNSUPPORTED, "rank 7"},
        {"{'descr': '<u1', 'fortran_order': False}", 1, VOX_FORMAT, "cannot parse"},
        {"{'descr': '<u1', 'fortran_order': False, 'shape': (3, -1), }", 1, VOX_FORMAT,
         "cannot parse"},
        {"{'descr': '<u1', 'fortran_order': Maybe, 'shape': (3,), }", 3, VOX_FORMAT,
         "cannot parse"},
        {"{'descr': '<u1', 'fortran_order': False, 'shape': (3,), 'x': 1}", 3, VOX_FORMAT,
         "cannot parse"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        npy_make(at(&d, "bad.npy"), cases[i].dict, cases[i].data);
        CHECK_STATUS(vox_volume_open(ctx, at(&d, "bad.npy"), &vol), cases[i].status);
        CHECK_ERROR_HAS(cases[i].msg);
        CHECK_ERROR_HAS("bad.npy");
    }
    /* "|u1" and double quotes are accepted */
    npy_make(at(&d, "ok.npy"), "{\"descr\": \"|u1\", \"fortran_order\": False, "
             "\"shape\": (2, 3)}", 6);
    CHECK_OK(vox_volume_open(ctx, at(&d, "ok.npy"), &vol));
    CHECK(vol && vox_volume_info(vol)->dtype == VOX_U8 && vox_volume_info(vol)->shape[1] == 3);
    vox_volume_close(vol);
    write_file(at(&d, "magic.npy"), "PK\x03\x04 a zip file", 16);
    CHECK_STATUS(vox_volume_open(ctx, at(&d, "magic.npy"), &vol), VOX_FORMAT);
    CHECK_ERROR_HAS("magic.npy' is not a .npy file (bad magic)");
    write_file(at(&d, "short.npy"), "\x93NUMPY\x01\x00\x40\x00{'de", 14);
    CHECK_STATUS(vox_volume_open(ctx, at(&d, "short.npy"), &vol), VOX_FORMAT);
    CHECK_ERROR_HAS("truncated .npy header");
    CHECK_STATUS(vox_volume_open(ctx, at(&d, "none.npy"), &vol), VOX_IO);
    CHECK_ERROR_HAS("cannot open '");
    CHECK_ERROR_HAS("none.npy': No such file");
    CHECK(tmp_count(&d) == 4);
    tmp_remove(&d);
}

/* A .npy output holds one array, and needs one. */
static void test_npy_output_rules(struct vox_ctx *ctx)
{
    struct tmpdir d;
    tmp_make(&d);
    struct vox_volume *vol;
    struct vox_out_file *f;
    struct vox_volume *v2;
    struct vox_dataset_options opt = {.dtype = VOX_U8, .rank = 1, .shape = {3}};
    CHECK_OK(vox_out_open(ctx, at(&d, "one.npy"), &f));
    CHECK_OK(vox_out_dataset(ctx, f, "", &opt, &vol));
    CHECK_STATUS(vox_out_dataset(ctx, f, "", &opt, &v2), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("holds one array only");
    vox_out_abort(f);
    CHECK_OK(vox_out_open(ctx, at(&d, "empty.npy"), &f));
    CHECK_STATUS(vox_out_commit(ctx, f), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("no array was written");
    CHECK(tmp_count(&d) == 0);
    tmp_remove(&d);
}

static void test_bad_boxes_and_options(struct vox_ctx *ctx)
{
    struct tmpdir d;
    tmp_make(&d);
    struct vox_tensor t, small, other;
    struct vox_volume *vol;
    fill_random(ctx, &t, VOX_U16, 3, (int64_t[]){4, 5, 6}, 1);
    fill_random(ctx, &small, VOX_U16, 3, (int64_t[]){2, 2, 2}, 1);
    fill_random(ctx, &other, VOX_F32, 3, (int64_t[]){2, 2, 2}, 1);
    for (int format = 0; format < 2; format++) {
        const char *spec = at(&d, format ? "b.npy" : "b.h5:/v");
        CHECK_OK(vox_volume_save(ctx, spec, &t, NULL));
        CHECK_OK(vox_volume_open(ctx, spec, &vol));
        int64_t lo[3] = {3, 4, 5}, hi[3] = {5, 6, 7};
        CHECK_STATUS(vox_volume_read(ctx, vol, lo, hi, &small), VOX_INVALID_ARG);
        CHECK_ERROR_HAS("box [3, 5) on axis 0 is outside '");
        CHECK_ERROR_HAS("(size 4)");
        int64_t lo2[3] = {0, 0, 0}, hi2[3] = {2, 2, 3};
        CHECK_STATUS(vox_volume_read(ctx, vol, lo2, hi2, &small), VOX_INVALID_ARG);
        CHECK_ERROR_HAS("the box is 3 on axis 2, the tensor 2");
        int64_t neg[3] = {-1, 0, 0};
        CHECK_STATUS(vox_volume_read(ctx, vol, neg, hi2, &small), VOX_INVALID_ARG);
        CHECK_ERROR_HAS("outside");
        CHECK_STATUS(vox_volume_read(ctx, vol, NULL, NULL, &other), VOX_INVALID_ARG);
        CHECK_ERROR_HAS("holds u16 of rank 3, the tensor is f32 of rank 3");
        CHECK_STATUS(vox_volume_write(ctx, vol, NULL, &small), VOX_INVALID_ARG);
        CHECK_ERROR_HAS("opened for reading");
        vox_volume_close(vol);

        struct vox_out_file *f;
        struct vox_dataset_options opt = {.dtype = VOX_U16, .rank = 3, .shape = {4, 5, 6}};
        CHECK_OK(vox_out_open(ctx, at(&d, format ? "o.npy" : "o.h5"), &f));
        CHECK_OK(vox_out_dataset(ctx, f, "/v", &opt, &vol));
        CHECK_STATUS(vox_volume_write(ctx, vol, lo, &small), VOX_INVALID_ARG);
        CHECK_ERROR_HAS("box [3, 5) on axis 0 is outside");
        CHECK_STATUS(vox_volume_write(ctx, vol, NULL, &other), VOX_INVALID_ARG);
        CHECK_ERROR_HAS("the tensor is f32");
        struct vox_dataset_options bad = opt;
        bad.rank = 0;
        CHECK_STATUS(vox_out_dataset(ctx, f, "/w", &bad, &vol), VOX_UNSUPPORTED);
        CHECK_ERROR_HAS("rank 0");
        bad = opt;
        bad.gzip = 10;
        CHECK_STATUS(vox_out_dataset(ctx, f, "/w", &bad, &vol), VOX_INVALID_ARG);
        CHECK_ERROR_HAS("gzip level 10");
        bad = opt;
        bad.chunk[0] = 5;
        CHECK_STATUS(vox_out_dataset(ctx, f, "/w", &bad, &vol), VOX_INVALID_ARG);
        CHECK_ERROR_HAS("chunk 5 on axis 0 (expected 1 to 4)");
        bad = opt;
        bad.shape[1] = -2;
        CHECK_STATUS(vox_out_dataset(ctx, f, "/w", &bad, &vol), VOX_INVALID_ARG);
        CHECK_ERROR_HAS("axis 1 has size -2");
        vox_out_abort(f);
    }
    CHECK(tmp_count(&d) == 2);
    vox_tensor_free(ctx, &t);
    vox_tensor_free(ctx, &small);
    vox_tensor_free(ctx, &other);
    tmp_remove(&d);
}

/* ---- allocation failures --------------------------------------------------------------- */

/* Makes the n-th allocation fail for n = 1, 2, ... until the operation succeeds; each failing
 * run must return a status and leave no allocation and no file behind. */
static void test_alloc_failures(struct vox_ctx *ctx)
{
    struct tmpdir d;
    tmp_make(&d);
    struct vox_tensor t, back;
    fill_random(ctx, &t, VOX_U32, 3, (int64_t[]){6, 5, 4}, 1);
    for (int format = 0; format < 2; format++) {
        const char *spec = at(&d, format ? "m.npy" : "m.h5:/g/v");
        char spec_copy[600];
        snprintf(spec_copy, sizeof spec_copy, "%s", spec);
        int64_t live = vox_ctx_live_allocs(ctx);
        int files = tmp_count(&d);
        /* save: into a new file the first time, over an existing one after that */
        for (int round = 0; round < 2; round++) {
            int64_t n = 1;
            for (;; n++) {
                vox_ctx_fail_alloc_at(ctx, n);
                enum vox_status s = vox_volume_save(ctx, spec_copy, &t, NULL);
                vox_ctx_fail_alloc_at(ctx, 0);
                CHECK(vox_ctx_live_allocs(ctx) == live);
                if (s == VOX_OK)
                    break;
                CHECK(s == VOX_OUT_OF_MEMORY);
                CHECK(tmp_count(&d) == files + round);
            }
            CHECK(n > 1);
        }
        /* open + read_all */
        for (int64_t n = 1;; n++) {
            struct vox_volume *vol = NULL;
            vox_ctx_fail_alloc_at(ctx, n);
            enum vox_status s = vox_volume_open(ctx, spec_copy, &vol);
            if (s == VOX_OK)
                s = vox_volume_read_all(ctx, vol, &back);
            vox_ctx_fail_alloc_at(ctx, 0);
            vox_volume_close(vol);
            if (s == VOX_OK) {
                CHECK(same(ctx, &t, &back));
                vox_tensor_free(ctx, &back);
                break;
            }
            CHECK(s == VOX_OUT_OF_MEMORY);
            CHECK(vox_ctx_live_allocs(ctx) == live);
        }
        /* a strided read needs a staging buffer: its failure is reported too */
        struct vox_tensor big, view;
        struct vox_volume *vol;
        fill_random(ctx, &big, VOX_U32, 3, (int64_t[]){6, 5, 8}, 2);
        CHECK_OK(vox_tensor_view_box(ctx, &big, (int64_t[]){0, 0, 2}, (int64_t[]){6, 5, 6},
                                     &view));
        CHECK_OK(vox_volume_open(ctx, spec_copy, &vol));
        vox_ctx_fail_alloc_at(ctx, 1);
        CHECK_STATUS(vox_volume_read(ctx, vol, NULL, NULL, &view), VOX_OUT_OF_MEMORY);
        vox_ctx_fail_alloc_at(ctx, 0);
        CHECK_OK(vox_volume_read(ctx, vol, NULL, NULL, &view));
        CHECK(same(ctx, &t, &view));
        vox_volume_close(vol);
        vox_tensor_free(ctx, &big);
    }
    vox_tensor_free(ctx, &t);
    tmp_remove(&d);
}

/* ---- reading chunks inflated on the threads (io/h5_decode.c) ---------------------------- */

/* Dataset `name` of shape (3, 21, 30, 40) in chunks (3, 4, 16, 16), dtype `ft` in the file,
 * filters: 1 deflate, 2 shuffle + deflate, 3 fletcher32 + shuffle + deflate; fill value
 * `fill`; the chunks at z 8..11 never written (zeros, or the fill value). Values from t. */
static void make_filtered(hid_t f, const char *name, hid_t ft, int filters, uint32_t fill,
                          const struct vox_tensor *t)
{
    hsize_t dims[4] = {3, 21, 30, 40}, ch[4] = {3, 4, 16, 16};
    hid_t sp = H5Screate_simple(4, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 4, ch);
    if (filters == 3)
        H5Pset_fletcher32(dcpl);
    if (filters >= 2)
        H5Pset_shuffle(dcpl);
    H5Pset_deflate(dcpl, 4);
    if (fill)
        H5Pset_fill_value(dcpl, H5T_NATIVE_UINT32, &fill);
    hid_t d = H5Dcreate2(f, name, ft, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    CHECK(d >= 0);
    const hsize_t part[2][2] = {{0, 8}, {12, 21}}; /* z ranges written */
    for (int k = 0; k < 2; k++) {
        hsize_t start[4] = {0, part[k][0], 0, 0}, count[4] = {3, part[k][1] - part[k][0], 30, 40};
        hid_t fs = H5Dget_space(d), ms = H5Screate_simple(4, count, NULL);
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
        const size_t rows = (size_t)count[1] * 30 * 40;
        uint32_t *buf = malloc(3 * rows * sizeof *buf);
        for (int c = 0; buf && c < 3; c++)
            memcpy(buf + c * rows, (const uint32_t *)t->data + (c * 21 + part[k][0]) * 30 * 40,
                   rows * sizeof *buf);
        CHECK(buf && H5Dwrite(d, H5T_NATIVE_UINT32, ms, fs, H5P_DEFAULT, buf) >= 0);
        free(buf);
        H5Sclose(fs);
        H5Sclose(ms);
    }
    H5Pclose(dcpl);
    H5Sclose(sp);
    H5Dclose(d);
}

/* Deflated datasets read whole, by chunk-aligned boxes (inflated on the threads) and by boxes
 * that cut chunks (through the cache of decoded chunks; many small ones, with the default
 * cache and one of two chunks): the written values, zeros where chunks were never written;
 * datasets with a checksum filter, a fill value other than zero or a big-endian type go
 * through libhdf5 and read right too. A chunk whose stored bytes are damaged fails, whole or
 * cut, with a message that names it (and, with the checksum filter, libhdf5's message). */
static void test_decode_chunks(struct vox_ctx *ctx)
{
    struct tmpdir d;
    tmp_make(&d);
    const int64_t shape[4] = {3, 21, 30, 40};
    struct vox_tensor t;
    CHECK_OK(vox_tensor_alloc(ctx, &t, VOX_U32, 4, shape));
    uint32_t *v = t.data;
    const int64_t n = vox_tensor_numel(&t), plane = 30 * 40, vol = 21 * plane;
    for (int64_t i = 0; i < n; i++) /* labels: runs, and some large values */
        v[i] = (uint32_t)((i % vol) / 7 * 2654435761u % 100000u);
    hid_t f = H5Fcreate(at(&d, "f.h5"), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    const char *names[5] = {"/deflate", "/shuffle", "/fletcher", "/fill", "/bigend"};
    make_filtered(f, names[0], H5T_STD_U32LE, 1, 0, &t);
    make_filtered(f, names[1], H5T_STD_U32LE, 2, 0, &t);
    make_filtered(f, names[2], H5T_STD_U32LE, 3, 0, &t);
    make_filtered(f, names[3], H5T_STD_U32LE, 2, 7, &t);
    make_filtered(f, names[4], H5T_STD_U32BE, 2, 0, &t);
    H5Fclose(f);
    const int64_t boxes[3][2][4] = {{{0, 0, 0, 0}, {3, 21, 30, 40}},  /* whole */
                                    {{0, 4, 16, 0}, {3, 20, 30, 32}}, /* whole chunks */
                                    {{1, 3, 5, 7}, {3, 21, 29, 40}}}; /* cuts chunks */
    for (int k = 0; k < 5; k++) {
        char spec[600];
        snprintf(spec, sizeof spec, "%s:%s", at(&d, "f.h5"), names[k]);
        struct vox_volume *vl;
        CHECK_OK(vox_volume_open(ctx, spec, &vl));
        for (int b = 0; b < 3; b++) {
            const int64_t *lo = boxes[b][0], *hi = boxes[b][1];
            int64_t bs[4];
            for (int i = 0; i < 4; i++)
                bs[i] = hi[i] - lo[i];
            struct vox_tensor got;
            CHECK_OK(vox_tensor_alloc(ctx, &got, VOX_U32, 4, bs));
            CHECK_OK(vox_volume_read(ctx, vl, lo, hi, &got));
            int64_t bad = 0, i = 0;
            for (int64_t c = lo[0]; c < hi[0]; c++)
                for (int64_t z = lo[1]; z < hi[1]; z++)
                    for (int64_t y = lo[2]; y < hi[2]; y++)
                        for (int64_t x = lo[3]; x < hi[3]; x++, i++) {
                            uint32_t want = z >= 8 && z < 12 ? (k == 3 ? 7u : 0u)
                                                             : v[((c * 21 + z) * 30 + y) * 40 + x];
                            bad += ((uint32_t *)got.data)[i] != want;
                        }
            CHECK(bad == 0);
            vox_tensor_free(ctx, &got);
        }
        vox_volume_close(vl);
    }
    /* many small boxes that cut chunks, through the cache of decoded chunks: the default one,
     * and one of two chunks (evicting all the time) */
    for (int k = 0; k < 2; k++)
        for (int small = 0; small < 2; small++) {
            char spec[600];
            snprintf(spec, sizeof spec, "%s:%s", at(&d, "f.h5"), names[k]);
            struct vox_volume *vl;
            CHECK_OK(vox_volume_open(ctx, spec, &vl));
            if (small)
                CHECK_OK(vox_volume_set_cache(ctx, vl, 2 * vox_volume_chunk_bytes(vl)));
            uint64_t r = 12345 + (uint64_t)(2 * k + small);
            int64_t bad = 0;
            for (int b = 0; b < 60; b++) {
                int64_t lo[4], hi[4], bs[4];
                for (int i = 0; i < 4; i++) {
                    lo[i] = (int64_t)(vox_test_rand(&r) % (uint64_t)shape[i]);
                    hi[i] = lo[i] + 1 + (int64_t)(vox_test_rand(&r) % (uint64_t)(shape[i] - lo[i]));
                    if (b % 3 == 0 && i < 2) /* thin boxes: a plane, a row */
                        hi[i] = lo[i] + 1;
                    bs[i] = hi[i] - lo[i];
                }
                struct vox_tensor got;
                CHECK_OK(vox_tensor_alloc(ctx, &got, VOX_U32, 4, bs));
                CHECK_OK(vox_volume_read(ctx, vl, lo, hi, &got));
                int64_t i = 0;
                for (int64_t c = lo[0]; c < hi[0]; c++)
                    for (int64_t z = lo[1]; z < hi[1]; z++)
                        for (int64_t y = lo[2]; y < hi[2]; y++)
                            for (int64_t x = lo[3]; x < hi[3]; x++, i++)
                                bad +=
                                    ((uint32_t *)got.data)[i] !=
                                    (z >= 8 && z < 12 ? 0u : v[((c * 21 + z) * 30 + y) * 40 + x]);
                vox_tensor_free(ctx, &got);
            }
            CHECK(bad == 0);
            vox_volume_close(vl);
        }
    /* damage the stored bytes of chunk (0, 12, 16, 16) */
    f = H5Fopen(at(&d, "f.h5"), H5F_ACC_RDWR, H5P_DEFAULT);
    for (int k = 0; k < 3; k++) {
        hid_t ds = H5Dopen2(f, names[k], H5P_DEFAULT);
        hsize_t off[4] = {0, 12, 16, 16}, sz = 0;
        CHECK(H5Dget_chunk_storage_size(ds, off, &sz) >= 0 && sz > 16);
        unsigned char *raw = malloc(sz);
        uint32_t mask = 0;
        CHECK(raw && H5Dread_chunk(ds, H5P_DEFAULT, off, &mask, raw) >= 0);
        memset(raw + 2, 0xff, 8); /* past the zlib header */
        CHECK(H5Dwrite_chunk(ds, H5P_DEFAULT, mask, off, sz, raw) >= 0);
        free(raw);
        H5Dclose(ds);
    }
    H5Fclose(f);
    for (int k = 0; k < 3; k++) {
        char spec[600];
        snprintf(spec, sizeof spec, "%s:%s", at(&d, "f.h5"), names[k]);
        struct vox_tensor got = {0};
        CHECK_STATUS(vox_volume_load(ctx, spec, &got, NULL), VOX_FORMAT);
        const char *e = vox_ctx_error(ctx);
        CHECK(strstr(e, names[k] + 1) != NULL);
        CHECK((strstr(e, "chunk at [0, 12, 16, 16] does not inflate") != NULL) == (k < 2));
        vox_tensor_free(ctx, &got);
        /* a box that cuts it: the same (the cache keeps nothing of it: twice) */
        struct vox_volume *vl;
        CHECK_OK(vox_volume_open(ctx, spec, &vl));
        const int64_t lo[4] = {1, 13, 17, 17}, hi[4] = {2, 14, 18, 18};
        for (int twice = 0; twice < 2; twice++) {
            struct vox_tensor one;
            CHECK_OK(vox_tensor_alloc(ctx, &one, VOX_U32, 4, (int64_t[4]){1, 1, 1, 1}));
            CHECK_STATUS(vox_volume_read(ctx, vl, lo, hi, &one), VOX_FORMAT);
            CHECK((strstr(vox_ctx_error(ctx), "does not inflate") != NULL) == (k < 2));
            vox_tensor_free(ctx, &one);
        }
        vox_volume_close(vl);
    }
    vox_tensor_free(ctx, &t);
    tmp_remove(&d);
}

/* ---- a file written by h5py ------------------------------------------------------------ */

static void test_shared_h5py_file(struct vox_ctx *ctx)
{
    const char *dir = getenv("VOX_SHARED_DATA");
    char spec[1024];
    snprintf(spec, sizeof spec, "%s/gala_fib_test.h5", dir ? dir : "");
    if (!dir || access(spec, R_OK) != 0) {
        printf("  skip: no gala_fib_test.h5 under $VOX_SHARED_DATA\n");
        return;
    }
    struct vox_volume *vol;
    CHECK_STATUS(vox_volume_open(ctx, spec, &vol), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("holds 4 datasets (/boundary_probability, /labels, /oversegmentation, "
                    "/raw)");
    /* values computed with h5py and numpy */
    struct vox_tensor t;
    struct vox_volume_info info;
    snprintf(spec, sizeof spec, "%s/gala_fib_test.h5:/raw", dir);
    CHECK_OK(vox_volume_load(ctx, spec, &t, &info));
    CHECK(info.dtype == VOX_U8 && info.rank == 3 && info.shape[0] == 50 &&
          info.shape[1] == 100 && info.shape[2] == 200);
    CHECK(info.has_resolution && info.resolution[0] == 10 && !info.has_offset);
    uint64_t sum = 0;
    for (int64_t i = 0; i < vox_tensor_numel(&t); i++)
        sum += ((uint8_t *)t.data)[i];
    CHECK(sum == 142056807u);
    CHECK(*(uint8_t *)vox_tensor_at(&t, (int64_t[]){10, 20, 30}) == 136);
    CHECK(*(uint8_t *)vox_tensor_at(&t, (int64_t[]){49, 99, 199}) == 166);
    CHECK_OK(vox_volume_open(ctx, spec, &vol));
    char src[256];
    CHECK_OK(vox_volume_get_attr_str(ctx, vol, "source", src, sizeof src));
    CHECK(strstr(src, "janelia-flyem/gala@") == src);
    check_box(ctx, vol, &t, (int64_t[]){30, 90, 120}, (int64_t[]){50, 100, 200}, true);
    vox_volume_close(vol);
    vox_tensor_free(ctx, &t);

    snprintf(spec, sizeof spec, "%s/gala_fib_test.h5:/labels", dir);
    CHECK_OK(vox_volume_load(ctx, spec, &t, &info));
    CHECK(info.dtype == VOX_U64);
    sum = 0;
    for (int64_t i = 0; i < vox_tensor_numel(&t); i++)
        sum += ((uint64_t *)t.data)[i];
    CHECK(sum == 27334214u);
    CHECK(*(uint64_t *)vox_tensor_at(&t, (int64_t[]){49, 99, 199}) == 41);
    vox_tensor_free(ctx, &t);

    snprintf(spec, sizeof spec, "%s/gala_fib_test.h5:/boundary_probability", dir);
    CHECK_OK(vox_volume_open(ctx, spec, &vol));
    struct vox_tensor one;
    CHECK_OK(vox_tensor_alloc(ctx, &one, VOX_F32, 3, (int64_t[]){1, 1, 1}));
    CHECK_OK(vox_volume_read(ctx, vol, (int64_t[]){10, 20, 30}, (int64_t[]){11, 21, 31}, &one));
    uint32_t bits;
    memcpy(&bits, one.data, 4);
    CHECK(bits == 0x3ca3d70au); /* h5py: 0ad7a33c little-endian */
    vox_tensor_free(ctx, &one);
    vox_volume_close(vol);
}

VOX_TEST_MAIN(VOX_TEST(test_spec_split), VOX_TEST(test_roundtrip_every_dtype),
              VOX_TEST(test_read_boxes), VOX_TEST(test_npy_thin_boxes), VOX_TEST(test_write_boxes),
              VOX_TEST(test_attributes), VOX_TEST(test_keep_and_replace_datasets),
              VOX_TEST(test_byte_identical_output), VOX_TEST(test_chunk_compression),
              VOX_TEST(test_deflate_runs), VOX_TEST(test_shuffle_rows),
              VOX_TEST(test_decode_chunks), VOX_TEST(test_packed_mismatch), VOX_TEST(test_abort),
              VOX_TEST(test_bad_hdf5), VOX_TEST(test_bad_npy), VOX_TEST(test_npy_output_rules),
              VOX_TEST(test_bad_boxes_and_options), VOX_TEST(test_alloc_failures),
              VOX_TEST(test_shared_h5py_file))
