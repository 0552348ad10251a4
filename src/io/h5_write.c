/*
 * io/h5_write.c: writing HDF5 datasets: the output file, dataset creation, attributes.
 *
 * Datasets are chunked (32x128x128 over the last three axes unless the caller says otherwise,
 * the layout of the shared EM volumes and of most connectomics tools, clipped to the shape)
 * and gzip-compressed, with the byte shuffle filter for multi-byte types. Output is
 * byte-identical across runs for the same data: object time tracking is off on datasets and
 * groups, and nothing else that libhdf5 writes depends on the clock. The file is the
 * temporary one of an out file; an existing target is copied there first, so its other
 * datasets stay, and a dataset of the same name is unlinked (H5Ldelete) and created anew.
 */
#include "io/h5.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static hid_t h5_file_type(enum vox_dtype t)
{
    switch (t) {
    case VOX_U8: return H5T_STD_U8LE;
    case VOX_U16: return H5T_STD_U16LE;
    case VOX_U32: return H5T_STD_U32LE;
    case VOX_U64: return H5T_STD_U64LE;
    case VOX_I32: return H5T_STD_I32LE;
    default: return H5T_IEEE_F32LE;
    }
}

enum vox_status vox_h5_out_begin(struct vox_ctx *ctx, struct vox_out_file *f)
{
    vox_h5_quiet();
    bool exists = access(f->path, F_OK) == 0;
    if (exists) {
        enum vox_status s = vox_io_copy_file(ctx, f->path, f->tmp);
        if (s != VOX_OK)
            return s;
        f->h5_file = H5Fopen(f->tmp, H5F_ACC_RDWR, H5P_DEFAULT);
        if (f->h5_file < 0)
            return vox_fail(ctx, VOX_FORMAT, "'%s' exists and is not an HDF5 file: not "
                            "overwriting it", f->path);
        return VOX_OK;
    }
    int fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0)
        return vox_fail(ctx, VOX_IO, "cannot create '%s': %s", f->tmp, strerror(errno));
    close(fd);
    f->h5_file = H5Fcreate(f->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f->h5_file < 0)
        return vox_fail(ctx, VOX_IO, "cannot create the HDF5 file '%s'", f->tmp);
    return VOX_OK;
}

/* Creates the groups above `dataset` that do not exist yet, without time stamps. */
static enum vox_status h5_make_parents(struct vox_ctx *ctx, struct vox_out_file *f,
                                       const char *dataset)
{
    char prefix[1024];
    if (strlen(dataset) >= sizeof prefix)
        return vox_fail(ctx, VOX_INVALID_ARG, "dataset name '%.64s...' is too long", dataset);
    for (const char *p = strchr(dataset + 1, '/'); p; p = strchr(p + 1, '/')) {
        memcpy(prefix, dataset, (size_t)(p - dataset));
        prefix[p - dataset] = '\0';
        if (H5Lexists(f->h5_file, prefix, H5P_DEFAULT) > 0) {
            H5O_info_t oi;
            if (H5Oget_info_by_name2(f->h5_file, prefix, &oi, H5O_INFO_BASIC, H5P_DEFAULT) < 0 ||
                oi.type != H5O_TYPE_GROUP)
                return vox_fail(ctx, VOX_INVALID_ARG, "'%s:%s': '%s' is not a group", f->path,
                                dataset, prefix);
            continue;
        }
        hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
        H5Pset_obj_track_times(gcpl, 0);
        hid_t g = H5Gcreate2(f->h5_file, prefix, H5P_DEFAULT, gcpl, H5P_DEFAULT);
        H5Pclose(gcpl);
        if (g < 0)
            return vox_fail(ctx, VOX_IO, "'%s': cannot create the group '%s'", f->path, prefix);
        H5Gclose(g);
    }
    return VOX_OK;
}

/* The default chunk: 32x128x128 over the last three axes (1 on the ones before), clipped. */
static void h5_chunk_auto(const struct vox_dataset_options *opt, int64_t *chunk)
{
    static const int64_t zyx[3] = {32, 128, 128};
    for (int i = 0; i < opt->rank; i++) {
        int j = i - (opt->rank - 3);
        int64_t c = j >= 0 ? zyx[j] : 1;
        if (opt->rank == 1)
            c = 1 << 16;
        else if (opt->rank == 2)
            c = 256;
        c = c < opt->shape[i] ? c : opt->shape[i];
        chunk[i] = c > 0 ? c : 1;
    }
}

void vox_h5_chunk_choose(const struct vox_dataset_options *opt, int64_t *chunk)
{
    bool given = false;
    for (int i = 0; i < opt->rank; i++)
        given |= opt->chunk[i] != 0;
    if (given)
        memcpy(chunk, opt->chunk, (size_t)opt->rank * sizeof *chunk);
    else
        h5_chunk_auto(opt, chunk);
}

/* Dataset creation properties: no time stamps; chunks, shuffle and gzip unless empty. */
static hid_t h5_dcpl(const struct vox_dataset_options *opt)
{
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_obj_track_times(dcpl, 0);
    for (int i = 0; i < opt->rank; i++)
        if (opt->shape[i] == 0)
            return dcpl;
    hsize_t chunk[VOX_MAX_RANK];
    int64_t c[VOX_MAX_RANK];
    vox_h5_chunk_choose(opt, c);
    for (int i = 0; i < opt->rank; i++)
        chunk[i] = (hsize_t)c[i];
    H5Pset_chunk(dcpl, opt->rank, chunk);
    if (opt->gzip > 0) {
        if (vox_dtype_size(opt->dtype) > 1)
            H5Pset_shuffle(dcpl);
        H5Pset_deflate(dcpl, (unsigned)opt->gzip);
    }
    return dcpl;
}

static bool h5_attr_write(hid_t obj, const char *name, hid_t file_type, hid_t mem_type,
                          hsize_t n, const void *data)
{
    if (H5Aexists(obj, name) > 0 && H5Adelete(obj, name) < 0)
        return false;
    hid_t space = n ? H5Screate_simple(1, &n, NULL) : H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
    bool ok = a >= 0 && H5Awrite(a, mem_type, data) >= 0;
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(space);
    return ok;
}

static enum vox_status h5_create(struct vox_ctx *ctx, struct vox_out_file *f,
                                 const char *dataset, const struct vox_dataset_options *opt,
                                 hid_t *dset_out)
{
    hsize_t dims[VOX_MAX_RANK];
    for (int i = 0; i < opt->rank; i++)
        dims[i] = (hsize_t)opt->shape[i];
    hid_t space = H5Screate_simple(opt->rank, dims, NULL);
    hid_t dcpl = h5_dcpl(opt), dapl = vox_h5_dapl(VOX_H5_CACHE_BYTES);
    *dset_out = H5Dcreate2(f->h5_file, dataset, h5_file_type(opt->dtype), space, H5P_DEFAULT,
                           dcpl, dapl);
    H5Pclose(dapl);
    H5Pclose(dcpl);
    H5Sclose(space);
    if (*dset_out < 0)
        return vox_fail(ctx, VOX_IO, "'%s': cannot create the dataset '%s'", f->path, dataset);
    bool ok = true;
    if (opt->has_resolution)
        ok &= h5_attr_write(*dset_out, "resolution", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 3,
                            opt->resolution);
    if (opt->has_offset)
        ok &= h5_attr_write(*dset_out, "offset", H5T_STD_I64LE, H5T_NATIVE_INT64, 3,
                            opt->offset);
    if (!ok)
        return vox_fail(ctx, VOX_IO, "'%s:%s': cannot write the resolution/offset attributes",
                        f->path, dataset);
    return VOX_OK;
}

enum vox_status vox_h5_out_dataset(struct vox_ctx *ctx, struct vox_out_file *f,
                                   const char *dataset, const struct vox_dataset_options *opt,
                                   struct vox_volume *vol)
{
    vox_h5_quiet();
    if (dataset[0] != '/' || dataset[1] == '\0')
        return vox_fail(ctx, VOX_INVALID_ARG, "'%s': name the dataset to write, as in %s:/name",
                        f->path, f->path);
    enum vox_status s = h5_make_parents(ctx, f, dataset);
    if (s != VOX_OK)
        return s;
    if (H5Lexists(f->h5_file, dataset, H5P_DEFAULT) > 0 &&
        H5Ldelete(f->h5_file, dataset, H5P_DEFAULT) < 0)
        return vox_fail(ctx, VOX_IO, "'%s': cannot replace the dataset '%s'", f->path, dataset);
    hid_t dset = -1;
    if ((s = h5_create(ctx, f, dataset, opt, &dset)) != VOX_OK) {
        if (dset >= 0)
            H5Dclose(dset);
        return s;
    }
    vol->h5_file = f->h5_file;
    vol->h5_dset = dset;
    vox_h5_chunk_of(vol);
    vol->gzip = vol->chunk[0] > 0 ? opt->gzip : 0; /* the filters h5_dcpl set */
    vol->shuffle = vol->gzip > 0 && vox_dtype_size(opt->dtype) > 1;
    return VOX_OK;
}

enum vox_status vox_h5_set_attr_str(struct vox_ctx *ctx, struct vox_volume *vol,
                                    const char *name, const char *value)
{
    vox_h5_quiet();
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    bool ok = h5_attr_write(vol->h5_dset, name, t, t, 0, &value);
    H5Tclose(t);
    if (!ok)
        return vox_fail(ctx, VOX_IO, "'%s': cannot write the attribute '%s'", vol->name, name);
    return VOX_OK;
}

/* Reads a scalar string attribute, variable-length or fixed, into buf. */
static bool h5_attr_str(hid_t a, hid_t type, char *buf, size_t len, size_t *need)
{
    hid_t mt = H5Tcopy(H5T_C_S1);
    bool ok;
    H5Tset_cset(mt, H5Tget_cset(type));
    if (H5Tis_variable_str(type) > 0) {
        char *p = NULL;
        H5Tset_size(mt, H5T_VARIABLE);
        ok = H5Aread(a, mt, &p) >= 0 && p;
        *need = ok ? strlen(p) + 1 : 0;
        if (ok && *need <= len)
            memcpy(buf, p, *need);
        H5free_memory(p);
    } else {
        *need = H5Tget_size(type) + 1;
        H5Tset_size(mt, *need);
        H5Tset_strpad(mt, H5T_STR_NULLTERM);
        ok = *need > len || H5Aread(a, mt, buf) >= 0;
    }
    H5Tclose(mt);
    return ok;
}

enum vox_status vox_h5_get_attr_str(struct vox_ctx *ctx, struct vox_volume *vol,
                                    const char *name, char *buf, size_t len)
{
    vox_h5_quiet();
    if (H5Aexists(vol->h5_dset, name) <= 0)
        return vox_fail(ctx, VOX_INVALID_ARG, "'%s' has no attribute '%s'", vol->name, name);
    hid_t a = H5Aopen(vol->h5_dset, name, H5P_DEFAULT);
    hid_t type = a >= 0 ? H5Aget_type(a) : -1, space = a >= 0 ? H5Aget_space(a) : -1;
    size_t need = 0;
    bool is_str = type >= 0 && H5Tget_class(type) == H5T_STRING && space >= 0 &&
                  H5Sget_simple_extent_npoints(space) == 1;
    bool ok = is_str && h5_attr_str(a, type, buf, len, &need);
    if (space >= 0)
        H5Sclose(space);
    if (type >= 0)
        H5Tclose(type);
    if (a >= 0)
        H5Aclose(a);
    if (!ok)
        return vox_fail(ctx, VOX_FORMAT, "'%s': the attribute '%s' is not a readable string",
                        vol->name, name);
    if (need > len)
        return vox_fail(ctx, VOX_INVALID_ARG, "'%s': the attribute '%s' needs %zu bytes, the "
                        "buffer has %zu", vol->name, name, need, len);
    return VOX_OK;
}

enum vox_status vox_h5_out_end(struct vox_ctx *ctx, struct vox_out_file *f)
{
    vox_h5_quiet();
    herr_t r = f->h5_file >= 0 ? H5Fclose(f->h5_file) : 0;
    f->h5_file = -1;
    if (ctx && r < 0)
        return vox_fail(ctx, VOX_IO, "cannot finish writing '%s' (disk full?)", f->tmp);
    return VOX_OK;
}
