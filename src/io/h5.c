/*
 * io/h5.c: HDF5 datasets through the libhdf5 C API (serial build), the reading side.
 *
 * A box is an HDF5 hyperslab: the file dataspace selects [lo, hi), the memory dataspace is
 * the box itself, and libhdf5 reads only the chunks the box touches (a 32 MiB chunk cache per
 * open dataset, unless vox_volume_set_cache says otherwise, keeps block-by-block reads from
 * decompressing a chunk more than once). libhdf5 builds a selection per chunk a call touches
 * (several KiB each, held until the call returns, and the heap keeps them), so a box over
 * many small chunks (weights written 1x1x1x3x3) is moved in slabs of the first axis that
 * touch at most IO_CHUNKS chunks each.
 * HDF5's own error printing is switched off at every entry (H5Eset_auto2), and each failure
 * becomes a status and a message that names the file. libhdf5's serial build is not
 * thread-safe: io calls must come from one thread at a time.
 */
#include "io/h5.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

enum { IO_CHUNKS = 512 };

void vox_h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

hid_t vox_h5_dapl(size_t bytes)
{
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    H5Pset_chunk_cache(dapl, 12421, bytes, 0.75);
    return dapl;
}

void vox_h5_chunk_of(struct vox_volume *vol)
{
    memset(vol->chunk, 0, sizeof vol->chunk);
    hid_t dcpl = H5Dget_create_plist((hid_t)vol->h5_dset);
    hsize_t c[H5S_MAX_RANK];
    int rank = dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED
                   ? H5Pget_chunk(dcpl, H5S_MAX_RANK, c)
                   : 0;
    for (int i = 0; i < rank && i < VOX_MAX_RANK; i++)
        vol->chunk[i] = (int64_t)c[i];
    if (dcpl >= 0)
        H5Pclose(dcpl);
}

static const struct {
    enum vox_dtype dtype;
    H5T_class_t cls;
    size_t size;
    H5T_sign_t sign;
} h5_types[] = {
    {VOX_U8, H5T_INTEGER, 1, H5T_SGN_NONE},  {VOX_U16, H5T_INTEGER, 2, H5T_SGN_NONE},
    {VOX_U32, H5T_INTEGER, 4, H5T_SGN_NONE}, {VOX_U64, H5T_INTEGER, 8, H5T_SGN_NONE},
    {VOX_I32, H5T_INTEGER, 4, H5T_SGN_2},    {VOX_F32, H5T_FLOAT, 4, H5T_SGN_ERROR},
};

hid_t vox_h5_mem_type(enum vox_dtype t)
{
    switch (t) {
    case VOX_U8: return H5T_NATIVE_UINT8;
    case VOX_U16: return H5T_NATIVE_UINT16;
    case VOX_U32: return H5T_NATIVE_UINT32;
    case VOX_U64: return H5T_NATIVE_UINT64;
    case VOX_I32: return H5T_NATIVE_INT32;
    default: return H5T_NATIVE_FLOAT;
    }
}

/* Describes an HDF5 type the way numpy would ("int8", "float64") or by its class. */
static void h5_type_name(hid_t type, char *out, size_t len)
{
    H5T_class_t cls = H5Tget_class(type);
    int bits = (int)(8 * H5Tget_size(type));
    if (cls == H5T_INTEGER)
        snprintf(out, len, "%sint%d", H5Tget_sign(type) == H5T_SGN_NONE ? "u" : "", bits);
    else if (cls == H5T_FLOAT)
        snprintf(out, len, "float%d", bits);
    else if (cls == H5T_STRING)
        snprintf(out, len, "string");
    else if (cls == H5T_ENUM)
        snprintf(out, len, "enum (bool)");
    else if (cls == H5T_COMPOUND)
        snprintf(out, len, "compound");
    else
        snprintf(out, len, "type class %d", (int)cls);
}

static enum vox_status h5_dtype(struct vox_ctx *ctx, hid_t dset, const char *path,
                                const char *dataset, enum vox_dtype *out)
{
    hid_t type = H5Dget_type(dset);
    if (type < 0)
        return vox_fail(ctx, VOX_FORMAT, "'%s:%s': cannot read the dataset's type", path,
                        dataset);
    H5T_class_t cls = H5Tget_class(type);
    size_t size = H5Tget_size(type);
    H5T_sign_t sign = cls == H5T_INTEGER ? H5Tget_sign(type) : H5T_SGN_ERROR;
    for (size_t i = 0; i < sizeof h5_types / sizeof h5_types[0]; i++) {
        if (h5_types[i].cls == cls && h5_types[i].size == size && h5_types[i].sign == sign) {
            *out = h5_types[i].dtype;
            H5Tclose(type);
            return VOX_OK;
        }
    }
    char name[32];
    h5_type_name(type, name, sizeof name);
    H5Tclose(type);
    return vox_fail(ctx, VOX_UNSUPPORTED, "'%s:%s': dtype %s is not supported (vox reads "
                    "uint8, uint16, uint32, uint64, int32, float32)", path, dataset, name);
}

/* ---- finding datasets ------------------------------------------------------------------ */

struct h5_list {
    int64_t count;
    char first[512];   /* the first dataset's path, with its leading '/' */
    char names[400];   /* "/a, /b, ..." as many as fit */
};

static herr_t list_cb(hid_t obj, const char *name, const H5O_info_t *info, void *arg)
{
    struct h5_list *l = arg;
    if (info->type != H5O_TYPE_DATASET)
        return 0;
    if (l->count++ == 0)
        snprintf(l->first, sizeof l->first, "/%s", name);
    size_t n = strlen(l->names);
    if (n + strlen(name) + 8 < sizeof l->names)
        snprintf(l->names + n, sizeof l->names - n, "%s/%s", n ? ", " : "", name);
    else if (n + 5 < sizeof l->names && strcmp(l->names + n - 3, "...") != 0)
        strcat(l->names, ", ...");
    return 0;
}

static void h5_list_datasets(hid_t file, struct h5_list *l)
{
    memset(l, 0, sizeof *l);
    H5Ovisit2(file, H5_INDEX_NAME, H5_ITER_INC, list_cb, l, H5O_INFO_BASIC);
}

static enum vox_status h5_open_dataset(struct vox_ctx *ctx, hid_t file, const char *path,
                                       const char *dataset, hid_t *dset_out)
{
    struct h5_list l;
    if (!*dataset) {
        h5_list_datasets(file, &l);
        if (l.count != 1)
            return vox_fail(ctx, VOX_INVALID_ARG, "'%s' holds %lld datasets (%s): name one, as "
                            "in %s:%s", path, (long long)l.count, l.names, path,
                            l.count ? l.first : "/dataset");
        dataset = l.first;
    }
    hid_t dapl = vox_h5_dapl(VOX_H5_CACHE_BYTES);
    *dset_out = H5Dopen2(file, dataset, dapl);
    H5Pclose(dapl);
    if (*dset_out >= 0)
        return VOX_OK;
    h5_list_datasets(file, &l);
    return vox_fail(ctx, VOX_INVALID_ARG, "'%s' has no dataset '%s' (it holds %lld: %s)", path,
                    dataset, (long long)l.count, l.names);
}

/* Reads a 3-value numeric attribute of obj; false when it is absent or not 3 numbers. */
static bool h5_attr_vec3(hid_t obj, const char *name, hid_t mem_type, void *out)
{
    if (H5Aexists(obj, name) <= 0)
        return false;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t space = a >= 0 ? H5Aget_space(a) : -1;
    hid_t type = a >= 0 ? H5Aget_type(a) : -1;
    H5T_class_t cls = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
    bool ok = space >= 0 && H5Sget_simple_extent_npoints(space) == 3 &&
              (cls == H5T_INTEGER || cls == H5T_FLOAT) && H5Aread(a, mem_type, out) >= 0;
    if (type >= 0)
        H5Tclose(type);
    if (space >= 0)
        H5Sclose(space);
    if (a >= 0)
        H5Aclose(a);
    return ok;
}

/* resolution and offset: the dataset's attributes, else the file's (root group's). */
static void h5_read_geometry(hid_t file, hid_t dset, struct vox_volume_info *in)
{
    in->has_resolution = h5_attr_vec3(dset, "resolution", H5T_NATIVE_DOUBLE, in->resolution) ||
                         h5_attr_vec3(file, "resolution", H5T_NATIVE_DOUBLE, in->resolution);
    in->has_offset = h5_attr_vec3(dset, "offset", H5T_NATIVE_INT64, in->offset) ||
                     h5_attr_vec3(file, "offset", H5T_NATIVE_INT64, in->offset);
}

static enum vox_status h5_read_info(struct vox_ctx *ctx, hid_t file, hid_t dset,
                                    const char *path, const char *dataset,
                                    struct vox_volume_info *in)
{
    memset(in, 0, sizeof *in);
    enum vox_status s = h5_dtype(ctx, dset, path, dataset, &in->dtype);
    if (s != VOX_OK)
        return s;
    hid_t space = H5Dget_space(dset);
    int rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    hsize_t dims[H5S_MAX_RANK];
    if (rank < 1 || rank > VOX_MAX_RANK) {
        if (space >= 0)
            H5Sclose(space);
        return vox_fail(ctx, VOX_UNSUPPORTED, "'%s:%s' has rank %d (vox reads 1 to %d "
                        "dimensions)", path, dataset, rank, VOX_MAX_RANK);
    }
    H5Sget_simple_extent_dims(space, dims, NULL);
    H5Sclose(space);
    in->rank = rank;
    for (int i = 0; i < rank; i++)
        in->shape[i] = (int64_t)dims[i];
    h5_read_geometry(file, dset, in);
    return VOX_OK;
}

static enum vox_status h5_open(struct vox_ctx *ctx, struct vox_volume *vol, const char *path,
                               const char *dataset)
{
    vox_h5_quiet();
    if (access(path, R_OK) != 0)
        return vox_fail(ctx, VOX_IO, "cannot open '%s': %s", path, strerror(errno));
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0)
        return vox_fail(ctx, VOX_FORMAT, "'%s' is not an HDF5 file (or it is damaged, or another "
                        "program has it open for writing)", path);
    hid_t dset = -1;
    enum vox_status s = h5_open_dataset(ctx, file, path, dataset, &dset);
    if (s == VOX_OK)
        s = h5_read_info(ctx, file, dset, path, dataset, &vol->info);
    if (s != VOX_OK) {
        if (dset >= 0)
            H5Dclose(dset);
        H5Fclose(file);
        return s;
    }
    vol->h5_file = file;
    vol->h5_dset = dset;
    vox_h5_chunk_of(vol);
    vox_h5_decode_of(vol);
    return VOX_OK;
}

/* Selects the box [lo, hi) in a new file dataspace and makes the matching memory space. */
static bool h5_box_spaces(struct vox_volume *vol, const int64_t *lo, const int64_t *hi,
                          hid_t *fs_out, hid_t *ms_out)
{
    hsize_t start[VOX_MAX_RANK], count[VOX_MAX_RANK];
    for (int i = 0; i < vol->info.rank; i++) {
        start[i] = (hsize_t)lo[i];
        count[i] = (hsize_t)(hi[i] - lo[i]);
    }
    *fs_out = H5Dget_space(vol->h5_dset);
    *ms_out = H5Screate_simple(vol->info.rank, count, NULL);
    return *fs_out >= 0 && *ms_out >= 0 &&
           H5Sselect_hyperslab(*fs_out, H5S_SELECT_SET, start, NULL, count, NULL) >= 0;
}

/* Rows of the first axis per call: all, or as many whole chunk rows as keep a call under
 * IO_CHUNKS chunks (at least one chunk row). */
static int64_t h5_rows(const struct vox_volume *vol, const int64_t *lo, const int64_t *hi)
{
    if (vol->chunk[0] <= 0)
        return hi[0] - lo[0];
    int64_t per_row = 1; /* chunks one chunk row of the box touches */
    for (int i = 1; i < vol->info.rank; i++)
        per_row *= (hi[i] - 1) / vol->chunk[i] - lo[i] / vol->chunk[i] + 1;
    int64_t rows = IO_CHUNKS / per_row;
    return (rows > 1 ? rows : 1) * vol->chunk[0];
}

static enum vox_status h5_box_io(struct vox_ctx *ctx, struct vox_volume *vol, const int64_t *lo,
                                 const int64_t *hi, void *buf, bool writing)
{
    vox_h5_quiet();
    for (int i = 0; i < vol->info.rank; i++)
        if (hi[i] <= lo[i])
            return VOX_OK;
    int64_t rows = h5_rows(vol, lo, hi);
    if (rows < hi[0] - lo[0]) { /* slabs [z, z + n), aligned to the chunks */
        size_t row_bytes = vox_dtype_size(vol->info.dtype);
        for (int i = 1; i < vol->info.rank; i++)
            row_bytes *= (size_t)(hi[i] - lo[i]);
        int64_t l[VOX_MAX_RANK], h[VOX_MAX_RANK];
        memcpy(l, lo, (size_t)vol->info.rank * sizeof *l);
        memcpy(h, hi, (size_t)vol->info.rank * sizeof *h);
        for (int64_t z = lo[0]; z < hi[0];) {
            int64_t end = (z / rows + 1) * rows;
            l[0] = z;
            h[0] = end < hi[0] ? end : hi[0];
            enum vox_status s = h5_box_io(ctx, vol, l, h,
                                          (char *)buf + (size_t)(z - lo[0]) * row_bytes, writing);
            if (s != VOX_OK)
                return s;
            z = h[0];
        }
        return VOX_OK;
    }
    hid_t fs = -1, ms = -1, mt = vox_h5_mem_type(vol->info.dtype);
    bool ok = h5_box_spaces(vol, lo, hi, &fs, &ms);
    if (ok)
        ok = (writing ? H5Dwrite(vol->h5_dset, mt, ms, fs, H5P_DEFAULT, buf)
                      : H5Dread(vol->h5_dset, mt, ms, fs, H5P_DEFAULT, buf)) >= 0;
    if (fs >= 0)
        H5Sclose(fs);
    if (ms >= 0)
        H5Sclose(ms);
    if (!ok)
        return vox_fail(ctx, writing ? VOX_IO : VOX_FORMAT, "'%s': HDF5 could not %s the box "
                        "(damaged file or full disk?)", vol->name, writing ? "write" : "read");
    return VOX_OK;
}

static enum vox_status h5_read(struct vox_ctx *ctx, struct vox_volume *vol, const int64_t *lo,
                               const int64_t *hi, void *buf)
{
    bool done = false;
    enum vox_status s = vox_h5_read_chunks(ctx, vol, lo, hi, buf, &done);
    if (s != VOX_OK || done)
        return s;
    return h5_box_io(ctx, vol, lo, hi, buf, false);
}

static enum vox_status h5_write(struct vox_ctx *ctx, struct vox_volume *vol, const int64_t *lo,
                                const int64_t *hi, const void *buf)
{
    if (vox_h5_chunks_ok(vol, lo, hi)) /* compressed on the context's threads */
        return vox_h5_write_chunks(ctx, vol, lo, hi, buf);
    return h5_box_io(ctx, vol, lo, hi, (void *)buf, true);
}

/* Reopens the dataset (by its path in the file) with a chunk cache of `bytes`. */
static enum vox_status h5_set_cache(struct vox_ctx *ctx, struct vox_volume *vol, size_t bytes)
{
    vox_h5_quiet();
    char name[1024];
    ssize_t n = H5Iget_name((hid_t)vol->h5_dset, name, sizeof name);
    if (n <= 0 || (size_t)n >= sizeof name)
        return vox_fail(ctx, VOX_IO, "'%s': cannot name the dataset to reopen it", vol->name);
    hid_t dapl = vox_h5_dapl(bytes);
    hid_t dset = H5Dopen2((hid_t)vol->h5_file, name, dapl);
    H5Pclose(dapl);
    if (dset < 0)
        return vox_fail(ctx, VOX_IO, "'%s': cannot reopen the dataset '%s'", vol->name, name);
    H5Dclose((hid_t)vol->h5_dset);
    vol->h5_dset = dset;
    vox_h5_dcache_free(vol); /* made again at the new size */
    vol->cache_bytes = bytes;
    vol->cache_set = true;
    return VOX_OK;
}

static void h5_close(struct vox_volume *vol)
{
    vox_h5_quiet();
    vox_h5_dcache_free(vol);
    if (vol->h5_dset >= 0)
        H5Dclose(vol->h5_dset);
    if (!vol->out && vol->h5_file >= 0)
        H5Fclose(vol->h5_file);
    vol->h5_dset = vol->h5_file = -1;
}

const struct vox_io_format vox_io_h5 = {
    .name = "HDF5",
    .open = h5_open,
    .read = h5_read,
    .write = h5_write,
    .set_attr_str = vox_h5_set_attr_str,
    .get_attr_str = vox_h5_get_attr_str,
    .set_cache = h5_set_cache,
    .close = h5_close,
    .out_begin = vox_h5_out_begin,
    .out_dataset = vox_h5_out_dataset,
    .out_end = vox_h5_out_end,
};
