/*
 * vox/io.h: volumes on disk: HDF5 datasets and .npy files, read whole or by box, written
 * whole or by box, always atomically.
 *
 * A volume is named the way the command line spells it:
 *   "file.h5:/path/in/file"   an HDF5 dataset (".h5", ".hdf5", ".hdf" files)
 *   "file.h5"                 an HDF5 file holding exactly one dataset (reading only)
 *   "file.npy"                a NumPy array file (C order, little-endian)
 * Supported element types: u8, u16, u32, u64, i32, f32.
 *
 * Reading a box (a hyperslab) reads only that part of the file, so a volume larger than RAM
 * can be processed block by block.
 *
 * Writing is atomic: an output file is built under a temporary name beside the target
 * ("seg.h5.tmp-PID") and renamed over the target by vox_out_commit(). An interrupted run
 * leaves no file that looks whole. When the target is an existing HDF5 file, its other
 * datasets are kept (the file is copied to the temporary name first) and a dataset of the
 * same name is replaced.
 *
 * Every failure returns a status and leaves a message on the context that names the file and
 * what was wrong (missing file, not HDF5, missing dataset, wrong dtype or rank, shape
 * mismatch, truncated .npy, ...).
 *
 * Threads: libhdf5's serial build (Debian's) is not thread-safe, so calls into this module
 * must come from one thread at a time (any thread, but never two at once, whatever the
 * contexts or files). Volumes and output files are not shared between threads.
 */
#ifndef VOX_IO_H
#define VOX_IO_H

#include "vox/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a volume holds. resolution and offset come from the dataset's attributes
 * "resolution" (float64, z,y,x in nm) and "offset" (int64, z,y,x in voxels) when present,
 * else from the same attributes of the file's root group; .npy files have neither. */
struct vox_volume_info {
    enum vox_dtype dtype;
    int rank;
    int64_t shape[VOX_MAX_RANK];
    bool has_resolution, has_offset;
    double resolution[3];
    int64_t offset[3];
};

struct vox_volume;

/* Opens a volume for reading. */
enum vox_status vox_volume_open(struct vox_ctx *ctx, const char *spec,
                                struct vox_volume **vol_out);
const struct vox_volume_info *vox_volume_info(const struct vox_volume *vol);
/* The spec it was opened or created with, for messages. */
const char *vox_volume_name(const struct vox_volume *vol);

/* Reads the box [lo, hi) (rank values each) into dst, which must have the volume's dtype and
 * the box's shape; dst may be any strided tensor (views included). lo/hi NULL: everything. */
enum vox_status vox_volume_read(struct vox_ctx *ctx, struct vox_volume *vol, const int64_t *lo,
                                const int64_t *hi, struct vox_tensor *dst);
/* Reads the whole volume into a newly allocated tensor. */
enum vox_status vox_volume_read_all(struct vox_ctx *ctx, struct vox_volume *vol,
                                    struct vox_tensor *t_out);
/* Bytes of one HDF5 chunk (decoded) of the volume; 0 when it is not chunked (.npy, HDF5
 * contiguous). A box read or written touches whole chunks: HDF5 decodes each into a buffer of
 * this size, or keeps it in the dataset's chunk cache. */
size_t vox_volume_chunk_bytes(const struct vox_volume *vol);
/* The HDF5 chunk shape (info.rank values) into shape; false (shape untouched) when the volume
 * is not chunked. Reading boxes made of whole chunks decodes each chunk once, on the
 * context's threads where the dataset's filters allow (deflate, with or without shuffle). */
bool vox_volume_chunk_shape(const struct vox_volume *vol, int64_t *shape);
/* Whether a read of the box [lo, hi) decodes on the context's threads (an HDF5 dataset with
 * deflate, with or without shuffle, and a box of whole chunks): a caller with many such
 * boxes gains by reading them one after another rather than from several threads (io calls
 * come one at a time, so the decoding of boxes read from several threads does not overlap). */
bool vox_volume_read_parallel(const struct vox_volume *vol, const int64_t *lo, const int64_t *hi);
/* Whether a box read costs about the box's own bytes however short its rows are: a .npy
 * file (the short rows of a plane come with one read of their span). False for HDF5 (a box
 * read decodes every chunk it meets, or goes row by row through a contiguous dataset): a caller
 * reading many overlapping boxes is better off copying such a volume once into a layout of
 * its own. A volume for which it is true may also be read (vox_volume_read into contiguous
 * tensors, nothing else) from several threads at once, beside other calls of this module. */
bool vox_volume_box_direct(const struct vox_volume *vol);
/* Sets the HDF5 chunk cache of the volume's dataset to `bytes` (default: 32 MiB per dataset,
 * allocated as chunks are touched, so box-by-box reads decode a chunk once and box-by-box
 * writes complete a chunk in memory). A chunk larger than the cache is read or written
 * directly. A no-op for formats without chunks. */
enum vox_status vox_volume_set_cache(struct vox_ctx *ctx, struct vox_volume *vol, size_t bytes);
/* Closes a volume opened for reading. NULL is a no-op. Volumes created through an output file
 * belong to it and are closed by vox_out_commit / vox_out_abort. */
void vox_volume_close(struct vox_volume *vol);

/* ---- writing ----------------------------------------------------------------------------- */

struct vox_dataset_options {
    enum vox_dtype dtype;
    int rank;
    int64_t shape[VOX_MAX_RANK];
    int64_t chunk[VOX_MAX_RANK]; /* HDF5 chunk shape; all 0: chosen automatically */
    int gzip;                    /* HDF5 gzip level 1-9; 0: no compression */
    bool has_resolution, has_offset;
    double resolution[3];        /* written as the float64 attribute "resolution" */
    int64_t offset[3];           /* written as the int64 attribute "offset" */
};

struct vox_out_file;

/* Starts an output file (".h5"/".hdf5"/".hdf" or ".npy", by extension) under a temporary
 * name. A .npy file holds one array; its dataset name is ignored. At most one output file per
 * target path may be open in a process (the temporary name is the path plus the PID). The
 * new file gets the default permissions (0666 less the umask), not the old target's. */
enum vox_status vox_out_open(struct vox_ctx *ctx, const char *path, struct vox_out_file **f_out);
/* Creates (or replaces) a dataset in the output file. The volume belongs to the file. */
enum vox_status vox_out_dataset(struct vox_ctx *ctx, struct vox_out_file *f, const char *dataset,
                                const struct vox_dataset_options *opt,
                                struct vox_volume **vol_out);
/* Writes src at offset lo (rank values; NULL: the origin) of a volume being written. src must
 * have the volume's dtype and fit inside it; any strides. */
enum vox_status vox_volume_write(struct vox_ctx *ctx, struct vox_volume *vol, const int64_t *lo,
                                 const struct vox_tensor *src);
/* Writing from several threads. Every vox/io.h call must come from one thread at a time
 * (libhdf5 is not thread-safe), yet most of the time a gzip-compressed write takes is the
 * compression; so it can be split off. vox_volume_encode checks src as vox_volume_write would
 * and prepares it: for an HDF5 dataset with gzip whose chunks the box covers whole (up to the
 * dataset's end), the chunks compressed (on the context's threads, or on the caller's when
 * called from a pool task), else a copy. It touches no file, so several threads may encode
 * at once. vox_volume_write_encoded then writes it, with the one-thread rule, and frees it;
 * vox_encoded_free drops one unwritten. */
struct vox_encoded;
enum vox_status vox_volume_encode(struct vox_ctx *ctx, struct vox_volume *vol, const int64_t *lo,
                                  const struct vox_tensor *src, struct vox_encoded **out);
enum vox_status vox_volume_write_encoded(struct vox_ctx *ctx, struct vox_encoded *e);
void vox_encoded_free(struct vox_ctx *ctx, struct vox_encoded *e);
/* Encoding in a process that does not hold the file (an MPI rank): vox_volume_detached gives
 * a volume with the layout vox_out_dataset would give an HDF5 dataset with these options (its
 * chunks, gzip and shuffle), in no file; vox_volume_encode encodes boxes for it, and
 * vox_encoded_pack turns an encoding into bytes (a vox_alloc'd blob; e is freed, also on
 * failure). The process that writes the dataset hands the bytes to vox_volume_write_packed,
 * which checks they were made for this dataset's dtype, shape, chunks and filters (else
 * VOX_FORMAT, nothing written) and stores them (the one-thread rule). A detached volume
 * cannot be written; vox_volume_close frees it. */
enum vox_status vox_volume_detached(struct vox_ctx *ctx, const char *name,
                                    const struct vox_dataset_options *opt,
                                    struct vox_volume **vol_out);
enum vox_status vox_encoded_pack(struct vox_ctx *ctx, struct vox_encoded *e, void **blob,
                                 int64_t *len);
enum vox_status vox_volume_write_packed(struct vox_ctx *ctx, struct vox_volume *vol,
                                        const void *blob, int64_t len);
/* A string attribute on a dataset being written (provenance: "source", "convention", ...).
 * Written as a variable-length UTF-8 string, as h5py writes str. A .npy file has no
 * attributes: the call does nothing there. */
enum vox_status vox_volume_set_attr_str(struct vox_ctx *ctx, struct vox_volume *vol,
                                        const char *name, const char *value);
/* Reads a string attribute (variable or fixed length) of an HDF5 dataset into buf (len bytes,
 * NUL included); VOX_INVALID_ARG when it is absent or does not fit. */
enum vox_status vox_volume_get_attr_str(struct vox_ctx *ctx, struct vox_volume *vol,
                                        const char *name, char *buf, size_t len);
/* Flushes, closes and renames the file into place; frees f, also on failure (then the
 * temporary file is removed). */
enum vox_status vox_out_commit(struct vox_ctx *ctx, struct vox_out_file *f);
/* Closes f and removes its temporary file; the target is left as it was. NULL is a no-op. */
void vox_out_abort(struct vox_out_file *f);

/* ---- conveniences ------------------------------------------------------------------------ */

/* Splits "file.h5:/a/b" into the file path and the dataset name ("" when there is none).
 * The split is at the last ':' followed by '/'. */
enum vox_status vox_volume_spec_split(struct vox_ctx *ctx, const char *spec, char *path,
                                      size_t path_len, char *dataset, size_t dataset_len);
/* Opens spec and reads it whole. */
enum vox_status vox_volume_load(struct vox_ctx *ctx, const char *spec, struct vox_tensor *t_out,
                                struct vox_volume_info *info_out);
/* Writes one tensor as one dataset, atomically (opt may be NULL: defaults, gzip 4 for h5).
 * opt's dtype, rank and shape are ignored: t's are used. */
enum vox_status vox_volume_save(struct vox_ctx *ctx, const char *spec, const struct vox_tensor *t,
                                const struct vox_dataset_options *opt);

/* ---- previews ------------------------------------------------------------------------------ */

/* Writes an 8-bit RGB image (height rows of width pixels, 3 bytes each) as PNG, atomically. */
enum vox_status vox_png_write_rgb(struct vox_ctx *ctx, const char *path, int64_t width,
                                  int64_t height, const uint8_t *rgb);

#ifdef __cplusplus
}
#endif
#endif
