/*
 * io/h5.h: what h5.c (reading) and h5_write.c (writing) share. Private to src/io.
 */
#ifndef VOX_IO_H5_H
#define VOX_IO_H5_H

#include "io/internal.h"

#include <hdf5.h>

/* Switches off libhdf5's printing of its error stack (per thread; cheap, so every entry
 * point calls it). */
void vox_h5_quiet(void);
/* The native HDF5 memory type of a vox dtype. */
hid_t vox_h5_mem_type(enum vox_dtype t);

/* The default chunk cache per open dataset (vox_volume_set_cache changes it). */
#define VOX_H5_CACHE_BYTES ((size_t)32 << 20)
/* Dataset access properties with a chunk cache of `bytes`; the caller closes them. */
hid_t vox_h5_dapl(size_t bytes);
/* Fills vol->chunk from its dataset's creation properties (all 0 when not chunked). */
void vox_h5_chunk_of(struct vox_volume *vol);

enum vox_status vox_h5_set_attr_str(struct vox_ctx *ctx, struct vox_volume *vol,
                                    const char *name, const char *value);
enum vox_status vox_h5_get_attr_str(struct vox_ctx *ctx, struct vox_volume *vol,
                                    const char *name, char *buf, size_t len);
enum vox_status vox_h5_out_begin(struct vox_ctx *ctx, struct vox_out_file *f);
enum vox_status vox_h5_out_dataset(struct vox_ctx *ctx, struct vox_out_file *f,
                                   const char *dataset, const struct vox_dataset_options *opt,
                                   struct vox_volume *vol);
/* The chunk shape of a new non-empty dataset: opt's, or one chosen for it. */
void vox_h5_chunk_choose(const struct vox_dataset_options *opt, int64_t *chunk);
/* Whether the box [lo, hi) of vol is written by h5_chunks.c: a dataset created here with
 * gzip, the box covering the chunks it touches whole (up to the dataset's end). */
bool vox_h5_chunks_ok(const struct vox_volume *vol, const int64_t *lo, const int64_t *hi);
/* Writes such a box from buf (C order), its chunks compressed on the context's threads. */
enum vox_status vox_h5_write_chunks(struct vox_ctx *ctx, struct vox_volume *vol, const int64_t *lo,
                                    const int64_t *hi, const void *buf);
enum vox_status vox_h5_out_end(struct vox_ctx *ctx, struct vox_out_file *f);

#endif
