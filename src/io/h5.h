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
/* Whether the box [lo, hi) covers every chunk it touches whole (up to the dataset's end). */
bool vox_h5_whole_chunks(const struct vox_volume *vol, const int64_t *lo, const int64_t *hi);
/* The chunk grid of such a box: its first chunk and chunk count per axis; returns the count. */
int64_t vox_h5_chunk_grid(const struct vox_volume *vol, const int64_t *lo, const int64_t *hi,
                          int64_t *first, int64_t *count);
/* The origin of the box's chunk k (C order of the grid). */
void vox_h5_chunk_origin(const struct vox_volume *vol, const int64_t *first, const int64_t *count,
                         int64_t k, int64_t *origin);
/* Between the part of a box (C order) in the chunk at `origin` and the chunk's buffer (full
 * chunk shape): into the chunk (zero past the dataset's end), byte-shuffled by fn unless NULL,
 * or back into the box (to_box; fn then unshuffles). Each row of the chunk at once. */
void vox_h5_chunk_copy(const struct vox_volume *vol, const int64_t *lo, const int64_t *hi,
                       char *box, const int64_t *origin, char *chunk, size_t chunk_bytes,
                       void (*fn)(const char *, char *, size_t, size_t, size_t), bool to_box);
/* Whether the box [lo, hi) of vol is written by h5_chunks.c: a dataset created here with
 * gzip, the box covering the chunks it touches whole (up to the dataset's end). */
bool vox_h5_chunks_ok(const struct vox_volume *vol, const int64_t *lo, const int64_t *hi);
/* Writes such a box from buf (C order), its chunks compressed on the context's threads. */
enum vox_status vox_h5_write_chunks(struct vox_ctx *ctx, struct vox_volume *vol, const int64_t *lo,
                                    const int64_t *hi, const void *buf);
enum vox_status vox_h5_out_end(struct vox_ctx *ctx, struct vox_out_file *f);

/* How h5_decode.c may read a dataset's chunks: not (other filters, a fill value other than
 * zero, a file type other than the native one), or deflated, with the shuffle before. */
enum { H5_DECODE_NO, H5_DECODE_DEFLATE, H5_DECODE_SHUFFLE_DEFLATE };
/* Sets vol->decode from its dataset's creation properties. */
void vox_h5_decode_of(struct vox_volume *vol);
/* Frees the decoded chunks h5_decode.c keeps for boxes that cut chunks. */
void vox_h5_dcache_free(struct vox_volume *vol);
/* Reads the box [lo, hi) into buf (C order) when the dataset's chunks may be decoded here:
 * their stored bytes read in turn, inflated and unshuffled on the context's threads (a box
 * that cuts chunks through a cache of decoded chunks the size of the dataset's chunk cache).
 * *done false: not such a dataset (or a chunk stored with a filter skipped, or a cache of
 * fewer than two chunks): read it through libhdf5. */
enum vox_status vox_h5_read_chunks(struct vox_ctx *ctx, struct vox_volume *vol, const int64_t *lo,
                                   const int64_t *hi, void *buf, bool *done);

#endif
