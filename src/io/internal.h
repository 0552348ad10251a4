/*
 * io/internal.h: what the files of src/io share: the volume and output-file layouts and the
 * table of functions each on-disk format (HDF5, .npy) fills.
 *
 * volume.c and out.c do everything that does not depend on the format: spec parsing, argument
 * and box checks, staging strided tensors through contiguous buffers, temporary names, the
 * final rename. A format only moves contiguous C-order boxes between memory and its file.
 */
#ifndef VOX_IO_INTERNAL_H
#define VOX_IO_INTERNAL_H

#include "vox/io.h"

struct vox_io_format;

struct vox_volume {
    struct vox_ctx *ctx;
    const struct vox_io_format *fmt;
    struct vox_volume_info info;
    char *name;                /* the spec, owned */
    struct vox_out_file *out;  /* the output file it belongs to; NULL when opened for reading */
    int64_t h5_file, h5_dset;  /* HDF5 handles (hid_t); h5_file is the out file's when out */
    int fd;                    /* .npy: the file; the out file's when out */
    int64_t data_start;        /* .npy: byte offset of the first element */
    int64_t chunk[VOX_MAX_RANK]; /* HDF5 chunk shape; all 0: not chunked */
    int gzip;                    /* HDF5 created here: its gzip level (0: none), shuffle on */
    bool shuffle;                /* multi-byte types: h5_chunks.c compresses as libhdf5 would */
    int decode;                  /* HDF5 opened for reading: H5_DECODE_* (io/h5_decode.c) */
    struct h5_dcache *dcache;    /* h5_decode.c: chunks decoded for boxes that cut them */
    size_t cache_bytes;          /* vox_volume_set_cache's size, when cache_set */
    bool cache_set;
    bool detached;               /* vox_volume_detached: a layout to encode for, no file */
};

struct vox_out_file {
    struct vox_ctx *ctx;
    const struct vox_io_format *fmt;
    char *path, *tmp;          /* the target and the temporary name beside it, owned */
    int64_t h5_file;           /* HDF5: the open temporary file */
    int fd;                    /* .npy: the open temporary file */
    struct vox_volume **vols;  /* the datasets created so far, owned */
    int64_t nvols, cap;
};

/* One on-disk format. Boxes are checked by the caller; buffers are C-order and contiguous. */
struct vox_io_format {
    const char *name; /* "HDF5", ".npy" */
    /* Opens path (dataset "" = the only one) and fills vol->info and the handles. */
    enum vox_status (*open)(struct vox_ctx *ctx, struct vox_volume *vol, const char *path,
                            const char *dataset);
    enum vox_status (*read)(struct vox_ctx *ctx, struct vox_volume *vol, const int64_t *lo,
                            const int64_t *hi, void *buf);
    enum vox_status (*write)(struct vox_ctx *ctx, struct vox_volume *vol, const int64_t *lo,
                             const int64_t *hi, const void *buf);
    enum vox_status (*set_attr_str)(struct vox_ctx *ctx, struct vox_volume *vol,
                                    const char *name, const char *value);
    enum vox_status (*get_attr_str)(struct vox_ctx *ctx, struct vox_volume *vol,
                                    const char *name, char *buf, size_t len);
    /* Sets the bytes of decoded chunks kept per open dataset (NULL: the format keeps none). */
    enum vox_status (*set_cache)(struct vox_ctx *ctx, struct vox_volume *vol, size_t bytes);
    /* Releases the volume's own handles (not those of its output file). */
    void (*close)(struct vox_volume *vol);
    /* Creates f->tmp (an HDF5 target that exists is copied there first) and opens it. */
    enum vox_status (*out_begin)(struct vox_ctx *ctx, struct vox_out_file *f);
    /* Creates a dataset in f and fills vol's info and handles. */
    enum vox_status (*out_dataset)(struct vox_ctx *ctx, struct vox_out_file *f,
                                   const char *dataset, const struct vox_dataset_options *opt,
                                   struct vox_volume *vol);
    /* Flushes and closes f's file (its volumes are closed already); ctx NULL: aborting. */
    enum vox_status (*out_end)(struct vox_ctx *ctx, struct vox_out_file *f);
};

extern const struct vox_io_format vox_io_h5;
extern const struct vox_io_format vox_io_npy;

/* The format a path's extension names; VOX_INVALID_ARG when none does. */
enum vox_status vox_io_format_of(struct vox_ctx *ctx, const char *path,
                                 const struct vox_io_format **fmt_out);
/* A copy of s through the context's allocator (NULL, with the error recorded, on failure). */
char *vox_io_strdup(struct vox_ctx *ctx, const char *s);
/* Copies the file src to dst (created or truncated), byte for byte. */
enum vox_status vox_io_copy_file(struct vox_ctx *ctx, const char *src, const char *dst);
/* The checks of vox_out_dataset's options; `name` for the messages. */
enum vox_status vox_io_check_options(struct vox_ctx *ctx, const char *name,
                                     const struct vox_dataset_options *opt);
/* The checks of vox_volume_write (vol is being written; src fits at lo), filling the box
 * [l, h). */
enum vox_status vox_io_check_write(struct vox_ctx *ctx, const struct vox_volume *vol,
                                   const int64_t *lo, const struct vox_tensor *src, int64_t *l,
                                   int64_t *h);
/* Fills the C-order element strides of shape. */
void vox_io_c_strides(int rank, const int64_t *shape, int64_t *strides);

#endif
