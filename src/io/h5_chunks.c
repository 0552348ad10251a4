/*
 * io/h5_chunks.c: writing whole chunks of a gzip-compressed HDF5 dataset, compressed on the
 * context's threads.
 *
 * libhdf5 (serial build) runs its filters on the thread that calls H5Dwrite, one chunk after
 * another; at gzip level 4 that is most of the time a label volume takes to write (a 512^3
 * uint64 dataset: 5 s of deflate for 1 GB). A box that covers the chunks it touches whole (a
 * chunk at the dataset's end: up to the end) is written here instead: each chunk is gathered
 * into a full-size buffer (zero past the dataset's end, the fill value libhdf5 would put
 * there), byte-shuffled as the shuffle filter does and deflated, then handed to
 * H5Dwrite_chunk in chunk order. Deflated: integer chunks of several bytes (labels) as runs
 * (io/deflate_runs.c: 7.8x faster than zlib's level 4 on a segmentation, and smaller) unless
 * they have few; the others with libdeflate at the dataset's level (faster than zlib's
 * compress2). Any inflater reads either (tests/test_io.c reads them through libhdf5); the
 * bytes differ from those libhdf5's own filter would store for a box that cuts chunks, not
 * the values. Only datasets this process created are written so (vol->gzip: their filters
 * are known).
 *
 * The compression touches no libhdf5 state, so it may run on any thread (struct vox_encoded);
 * only the H5Dwrite_chunk calls need the one-thread-at-a-time rule of vox/io.h. Nor does it
 * need the file: a detached volume (the layout a dataset would have, no file) encodes boxes
 * in another process (an MPI rank), which sends them as bytes (vox_encoded_pack) to the
 * process that writes the dataset (vox_volume_write_packed: the layout checked first).
 */
#include "io/deflate_runs.h"
#include "io/h5.h"
#include "io/shuffle.h"

#include <libdeflate.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

struct enc_chunk {
    int64_t origin[VOX_MAX_RANK];
    void *data; /* compressed bytes (NULL: not encoded yet) */
    size_t bytes;
};

struct vox_encoded {
    struct vox_volume *vol;
    int64_t lo[VOX_MAX_RANK], hi[VOX_MAX_RANK];
    struct vox_tensor copy;  /* a box that is not written as chunks: a contiguous copy */
    struct enc_chunk *chunk; /* else its chunks, in C order of the chunk grid */
    int64_t nchunks;
};

bool vox_h5_whole_chunks(const struct vox_volume *vol, const int64_t *lo, const int64_t *hi)
{
    if (vol->chunk[0] <= 0)
        return false;
    for (int i = 0; i < vol->info.rank; i++) {
        int64_t c = vol->chunk[i];
        if (hi[i] <= lo[i] || lo[i] % c != 0 || (hi[i] % c != 0 && hi[i] != vol->info.shape[i]))
            return false;
    }
    return true;
}

bool vox_h5_chunks_ok(const struct vox_volume *vol, const int64_t *lo, const int64_t *hi)
{
    return vol->fmt == &vox_io_h5 && (vol->out || vol->detached) && vol->gzip > 0 &&
           vox_h5_whole_chunks(vol, lo, hi);
}

int64_t vox_h5_chunk_grid(const struct vox_volume *vol, const int64_t *lo, const int64_t *hi,
                          int64_t *first, int64_t *count)
{
    int64_t n = 1;
    for (int i = 0; i < vol->info.rank; i++) {
        first[i] = lo[i] / vol->chunk[i];
        count[i] = (hi[i] - 1) / vol->chunk[i] - first[i] + 1;
        n *= count[i];
    }
    return n;
}

void vox_h5_chunk_origin(const struct vox_volume *vol, const int64_t *first, const int64_t *count,
                         int64_t k, int64_t *origin)
{
    for (int i = vol->info.rank - 1; i >= 0; i--) {
        origin[i] = (first[i] + k % count[i]) * vol->chunk[i];
        k /= count[i];
    }
}

/* The compression of a run of chunks; per worker: the gathered (and shuffled) chunk, the
 * deflate output (libdeflate's bound), copied out at its size, and deflate_runs' tokens. */
struct enc_job {
    struct vox_ctx *ctx;
    struct vox_volume *vol;
    const int64_t *lo, *hi;
    const char *buf; /* the box, C order */
    struct enc_chunk *c;
    size_t chunk_bytes;
    char *(*scratch)[3];
    struct libdeflate_compressor **cz; /* per worker, at the dataset's level */
    bool failed;
};

/* Transposes the 8x8 bytes of x (x[k]'s byte j becomes x[j]'s byte k): swaps of 4-, 2- and
 * 1-byte blocks between rows 4, 2 and 1 apart. */
static inline void transpose8(uint64_t *x)
{
    for (int k = 0; k < 4; k++) {
        uint64_t t = ((x[k] >> 32) ^ x[k + 4]) & 0x00000000ffffffffull;
        x[k + 4] ^= t;
        x[k] ^= t << 32;
    }
    for (int k = 0; k < 8; k += (k & 1) ? 3 : 1) { /* 0, 1, 4, 5 */
        uint64_t t = ((x[k] >> 16) ^ x[k + 2]) & 0x0000ffff0000ffffull;
        x[k + 2] ^= t;
        x[k] ^= t << 16;
    }
    for (int k = 0; k < 8; k += 2) {
        uint64_t t = ((x[k] >> 8) ^ x[k + 1]) & 0x00ff00ff00ff00ffull;
        x[k + 1] ^= t;
        x[k] ^= t << 8;
    }
}

/* Elements [0, len - len % 8) of `esz` bytes (2, 4 or 8: a constant where inlined) into byte
 * planes `plane` bytes apart, eight at a time as an 8x8 byte transpose (8 bytes per store). */
static inline void shuffle8(const char *src, char *dst, size_t len, size_t esz, size_t plane)
{
    for (size_t i = 0; i + 8 <= len; i += 8) {
        uint64_t x[8] = {0};
        for (int k = 0; k < 8; k++)
            memcpy(&x[k], src + (i + (size_t)k) * esz, esz);
        transpose8(x);
        for (size_t j = 0; j < esz; j++)
            memcpy(dst + j * plane + i, &x[j], 8);
    }
}

/* The shuffle filter on a run of len elements: byte j of element i goes to j * plane + i.
 * The scalar twin of io/shuffle.h's vector versions. */
void shuffle_row_ref(const char *src, char *dst, size_t len, size_t esz, size_t plane)
{
    size_t i = esz == 2 || esz == 4 || esz == 8 ? len / 8 * 8 : 0;
    switch (esz) {
    case 2:
        shuffle8(src, dst, len, 2, plane);
        break;
    case 4:
        shuffle8(src, dst, len, 4, plane);
        break;
    case 8:
        shuffle8(src, dst, len, 8, plane);
        break;
    default:
        break;
    }
    for (; i < len; i++)
        for (size_t j = 0; j < esz; j++)
            dst[j * plane + i] = src[i * esz + j];
}

void unshuffle_row_ref(const char *src, char *dst, size_t len, size_t esz, size_t plane)
{
    for (size_t i = 0; i < len; i++)
        for (size_t j = 0; j < esz; j++)
            dst[i * esz + j] = src[j * plane + i];
}

void vox_h5_chunk_copy(const struct vox_volume *vol, const int64_t *lo, const int64_t *hi,
                       char *box, const int64_t *origin, char *chunk, size_t chunk_bytes,
                       shuffle_row_fn fn, bool to_box)
{
    const int r = vol->info.rank;
    const size_t esz = vox_dtype_size(vol->info.dtype), n = chunk_bytes / esz;
    int64_t beg[VOX_MAX_RANK], ext[VOX_MAX_RANK], bst[VOX_MAX_RANK], cst[VOX_MAX_RANK],
        idx[VOX_MAX_RANK];
    bool edge = false;
    for (int i = 0; i < r; i++) { /* the chunk's part in the box: [beg, ext) of the chunk */
        int64_t end = origin[i] + vol->chunk[i] < hi[i] ? origin[i] + vol->chunk[i] : hi[i];
        beg[i] = lo[i] > origin[i] ? lo[i] - origin[i] : 0;
        ext[i] = end - origin[i];
        idx[i] = beg[i];
        edge |= ext[i] != vol->chunk[i];
    }
    for (int64_t i = r - 1, b = 1, c = 1; i >= 0; i--) {
        bst[i] = b;
        cst[i] = c;
        b *= hi[i] - lo[i];
        c *= vol->chunk[i];
    }
    if (edge && !to_box) /* zeros shuffle to zeros */
        memset(chunk, 0, chunk_bytes);
    const size_t len = (size_t)(ext[r - 1] - beg[r - 1]);
    for (;;) {
        int64_t bo = origin[r - 1] + beg[r - 1] - lo[r - 1], co = beg[r - 1];
        for (int i = 0; i < r - 1; i++) {
            bo += (origin[i] - lo[i] + idx[i]) * bst[i];
            co += idx[i] * cst[i];
        }
        char *row = box + (size_t)bo * esz;
        if (fn && to_box)
            fn(chunk + co, row, len, esz, n);
        else if (fn)
            fn(row, chunk + co, len, esz, n);
        else if (to_box)
            memcpy(row, chunk + (size_t)co * esz, len * esz);
        else
            memcpy(chunk + (size_t)co * esz, row, len * esz);
        int i = r - 2;
        while (i >= 0 && ++idx[i] == ext[i]) {
            idx[i] = beg[i];
            i--;
        }
        if (i < 0)
            return;
    }
}

static void enc_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    struct enc_job *j = arg;
    const struct vox_volume *vol = j->vol;
    const enum vox_isa isa = vox_ctx_cpu(j->ctx)->isa;
    const shuffle_row_fn shuf = !vol->shuffle || vox_dtype_size(vol->info.dtype) < 2 ? NULL
                                : isa == VOX_ISA_AVX512 ? shuffle_row_avx512
                                : isa == VOX_ISA_AVX2   ? shuffle_row_avx2
                                                        : shuffle_row_ref;
    const bool runs = shuf && vol->info.dtype != VOX_F32; /* integers: labels, counts */
    if (!j->cz[tid])
        j->cz[tid] = libdeflate_alloc_compressor(vol->gzip);
    const size_t zcap = j->cz[tid] ? libdeflate_zlib_compress_bound(j->cz[tid], j->chunk_bytes) : 0;
    const size_t bytes[3] = {j->chunk_bytes, zcap,
                             runs ? deflate_runs_tokens(j->chunk_bytes) * 2 : 1};
    char **sc = j->scratch[tid];
    for (int i = 0; i < 3; i++)
        if (!sc[i] && zcap)
            sc[i] = vox_alloc(j->ctx, bytes[i]);
    for (int64_t k = lo[0]; k < hi[0]; k++) {
        struct enc_chunk *c = &j->c[k];
        if (!sc[0] || !sc[1] || !sc[2]) {
            __atomic_store_n(&j->failed, true, __ATOMIC_RELAXED);
            return;
        }
        vox_h5_chunk_copy(vol, j->lo, j->hi, (char *)j->buf, c->origin, sc[0], j->chunk_bytes, shuf,
                          false);
        /* runs first (a label chunk's byte planes); libdeflate where they are few */
        size_t len = runs ? deflate_runs((const uint8_t *)sc[0], j->chunk_bytes, (uint8_t *)sc[1],
                                         zcap, (uint16_t *)(void *)sc[2])
                          : 0;
        if (!len)
            len = libdeflate_zlib_compress(j->cz[tid], sc[0], j->chunk_bytes, sc[1], zcap);
        if (!len || !(c->data = vox_alloc(j->ctx, len))) {
            __atomic_store_n(&j->failed, true, __ATOMIC_RELAXED);
            return;
        }
        memcpy(c->data, sc[1], len); /* a label chunk deflates 10-100x */
        c->bytes = len;
    }
}

/* Compresses chunks [k0, k1) of e (their origins set) on the context's threads. */
static enum vox_status enc_range(struct vox_ctx *ctx, struct vox_encoded *e, const void *buf,
                                 int64_t k0, int64_t k1)
{
    struct vox_volume *vol = e->vol;
    size_t chunk_bytes = vox_dtype_size(vol->info.dtype);
    for (int i = 0; i < vol->info.rank; i++)
        chunk_bytes *= (size_t)vol->chunk[i];
    int nt = vox_ctx_threads(ctx);
    char *(*scratch)[3] = vox_calloc(ctx, (size_t)nt, sizeof *scratch);
    struct libdeflate_compressor **cz = vox_calloc(ctx, (size_t)nt, sizeof *cz);
    if (!scratch || !cz) {
        vox_free(ctx, scratch);
        vox_free(ctx, cz);
        return VOX_OUT_OF_MEMORY;
    }
    struct enc_job j = {ctx,           vol,         e->lo,   e->hi, buf,
                        e->chunk + k0, chunk_bytes, scratch, cz,    false};
    vox_pool_for(vox_ctx_pool(ctx), (int64_t[3]){k1 - k0, 1, 1}, (int64_t[3]){1, 1, 1},
                 VOX_SCHED_DYNAMIC, enc_task, &j);
    for (int t = 0; t < nt; t++) {
        for (int i = 0; i < 3; i++)
            vox_free(ctx, scratch[t][i]);
        if (cz[t])
            libdeflate_free_compressor(cz[t]);
    }
    vox_free(ctx, scratch);
    vox_free(ctx, cz);
    if (j.failed)
        return vox_fail(ctx, VOX_OUT_OF_MEMORY, "'%s': cannot compress a chunk (out of memory)",
                        vol->name);
    return VOX_OK;
}

/* Writes chunks [k0, k1) of e and frees their bytes. */
static enum vox_status write_range(struct vox_ctx *ctx, struct vox_encoded *e, int64_t k0,
                                   int64_t k1)
{
    vox_h5_quiet();
    enum vox_status s = VOX_OK;
    for (int64_t k = k0; k < k1; k++) {
        struct enc_chunk *c = &e->chunk[k];
        hsize_t off[VOX_MAX_RANK];
        for (int i = 0; i < e->vol->info.rank; i++)
            off[i] = (hsize_t)c->origin[i];
        if (s == VOX_OK &&
            H5Dwrite_chunk((hid_t)e->vol->h5_dset, H5P_DEFAULT, 0, off, c->bytes, c->data) < 0)
            s = vox_fail(ctx, VOX_IO, "'%s': HDF5 could not write a chunk (full disk?)",
                         e->vol->name);
        vox_free(ctx, c->data);
        c->data = NULL;
    }
    return s;
}

static void enc_free(struct vox_ctx *ctx, struct vox_encoded *e)
{
    if (!e)
        return;
    for (int64_t k = 0; k < e->nchunks; k++)
        vox_free(ctx, e->chunk[k].data);
    vox_free(ctx, e->chunk);
    vox_tensor_free(ctx, &e->copy);
    vox_free(ctx, e);
}

/* An encoding of the box [lo, hi) with its chunks' origins, nothing compressed yet. */
static enum vox_status enc_new(struct vox_ctx *ctx, struct vox_volume *vol, const int64_t *lo,
                               const int64_t *hi, struct vox_encoded **out)
{
    struct vox_encoded *e = vox_calloc(ctx, 1, sizeof *e);
    int64_t first[VOX_MAX_RANK], count[VOX_MAX_RANK];
    int64_t n = vox_h5_chunk_grid(vol, lo, hi, first, count);
    if (!e || !(e->chunk = vox_calloc(ctx, (size_t)n, sizeof *e->chunk))) {
        vox_free(ctx, e);
        return VOX_OUT_OF_MEMORY;
    }
    e->vol = vol;
    e->nchunks = n;
    memcpy(e->lo, lo, sizeof e->lo);
    memcpy(e->hi, hi, sizeof e->hi);
    for (int64_t k = 0; k < n; k++)
        vox_h5_chunk_origin(vol, first, count, k, e->chunk[k].origin);
    *out = e;
    return VOX_OK;
}

enum vox_status vox_h5_write_chunks(struct vox_ctx *ctx, struct vox_volume *vol, const int64_t *lo,
                                    const int64_t *hi, const void *buf)
{
    struct vox_encoded *e = NULL;
    enum vox_status s = enc_new(ctx, vol, lo, hi, &e);
    /* A batch of chunks at a time: four per thread keeps the threads busy to the end of a
     * batch and the compressed bytes held to a few chunks. */
    int64_t batch = 4 * (int64_t)vox_ctx_threads(ctx);
    for (int64_t k = 0; s == VOX_OK && k < e->nchunks; k += batch) {
        int64_t k1 = k + batch < e->nchunks ? k + batch : e->nchunks;
        s = enc_range(ctx, e, buf, k, k1);
        s = s ? s : write_range(ctx, e, k, k1);
    }
    enc_free(ctx, e);
    return s;
}

enum vox_status vox_volume_encode(struct vox_ctx *ctx, struct vox_volume *vol, const int64_t *lo,
                                  const struct vox_tensor *src, struct vox_encoded **out)
{
    *out = NULL;
    int64_t l[VOX_MAX_RANK] = {0}, h[VOX_MAX_RANK] = {0};
    enum vox_status s = vox_io_check_write(ctx, vol, lo, src, l, h);
    if (s != VOX_OK)
        return s;
    struct vox_tensor copy = {0};
    bool direct = vox_h5_chunks_ok(vol, l, h) && vox_tensor_is_contiguous(src);
    if (!direct) { /* kept for vox_volume_write_encoded */
        s = vox_tensor_alloc(ctx, &copy, src->dtype, src->rank, src->shape);
        s = s ? s : vox_tensor_copy(ctx, &copy, src);
        if (s == VOX_OK && !(*out = vox_calloc(ctx, 1, sizeof **out)))
            s = VOX_OUT_OF_MEMORY;
        if (s != VOX_OK) {
            vox_tensor_free(ctx, &copy);
            return s;
        }
        (*out)->vol = vol;
        memcpy((*out)->lo, l, sizeof l);
        (*out)->copy = copy;
        return VOX_OK;
    }
    s = enc_new(ctx, vol, l, h, out);
    s = s ? s : enc_range(ctx, *out, src->data, 0, (*out)->nchunks);
    if (s != VOX_OK) {
        enc_free(ctx, *out);
        *out = NULL;
    }
    return s;
}

enum vox_status vox_volume_write_encoded(struct vox_ctx *ctx, struct vox_encoded *e)
{
    if (!e)
        return vox_fail(ctx, VOX_INVALID_ARG, "nothing encoded to write");
    if (e->vol->detached) {
        vox_fail(ctx, VOX_INVALID_ARG,
                 "'%s' is detached: pack its encodings for the process that writes it",
                 e->vol->name);
        enc_free(ctx, e);
        return VOX_INVALID_ARG;
    }
    enum vox_status s = e->copy.data ? vox_volume_write(ctx, e->vol, e->lo, &e->copy)
                                     : write_range(ctx, e, 0, e->nchunks);
    enc_free(ctx, e);
    return s;
}

void vox_encoded_free(struct vox_ctx *ctx, struct vox_encoded *e)
{
    enc_free(ctx, e);
}

/* ---- encodings as bytes, for a dataset another process writes -------------------------------- */

enum vox_status vox_volume_detached(struct vox_ctx *ctx, const char *name,
                                    const struct vox_dataset_options *opt,
                                    struct vox_volume **vol_out)
{
    *vol_out = NULL;
    enum vox_status s = vox_io_check_options(ctx, name, opt);
    if (s != VOX_OK)
        return s;
    struct vox_volume *vol = vox_calloc(ctx, 1, sizeof *vol);
    if (!vol || !(vol->name = vox_io_strdup(ctx, name))) {
        vox_free(ctx, vol);
        return VOX_OUT_OF_MEMORY;
    }
    vol->ctx = ctx;
    vol->fmt = &vox_io_h5;
    vol->detached = true;
    vol->h5_file = vol->h5_dset = -1;
    vol->fd = -1;
    vol->info.dtype = opt->dtype;
    vol->info.rank = opt->rank;
    memcpy(vol->info.shape, opt->shape, sizeof vol->info.shape);
    bool empty = false;
    for (int i = 0; i < opt->rank; i++)
        empty |= opt->shape[i] == 0;
    if (!empty) { /* as vox_h5_out_dataset sets them */
        vox_h5_chunk_choose(opt, vol->chunk);
        vol->gzip = opt->gzip;
        vol->shuffle = vol->gzip > 0 && vox_dtype_size(opt->dtype) > 1;
    }
    *vol_out = vol;
    return VOX_OK;
}

/* The header of a packed encoding: int64 words. */
enum { PK_MAGIC, PK_KIND, PK_DTYPE, PK_RANK, PK_GZIP, PK_SHUFFLE, PK_N, PK_AXES };
#define PK_WORDS(r) (PK_AXES + 4 * (r))           /* then shape, chunk, lo, hi */
static const int64_t pk_magic = 0x31454e43584f56; /* "VOXCNE1" */

enum vox_status vox_encoded_pack(struct vox_ctx *ctx, struct vox_encoded *e, void **blob,
                                 int64_t *len)
{
    *blob = NULL;
    *len = 0;
    if (!e)
        return vox_fail(ctx, VOX_INVALID_ARG, "nothing encoded to pack");
    const struct vox_volume *vol = e->vol;
    const int r = vol->info.rank;
    const bool copy = e->copy.data != NULL;
    size_t data = copy ? vox_tensor_nbytes(&e->copy) : 0;
    for (int64_t k = 0; !copy && k < e->nchunks; k++)
        data += e->chunk[k].bytes;
    const int64_t n = copy ? (int64_t)data : e->nchunks;
    size_t head = (size_t)PK_WORDS(r) * sizeof(int64_t),
           table = copy ? 0 : (size_t)n * (size_t)(r + 1) * sizeof(int64_t);
    uint8_t *p = vox_alloc(ctx, head + table + data);
    if (!p) {
        enc_free(ctx, e);
        return VOX_OUT_OF_MEMORY;
    }
    int64_t *h = (int64_t *)p;
    h[PK_MAGIC] = pk_magic;
    h[PK_KIND] = copy;
    h[PK_DTYPE] = vol->info.dtype;
    h[PK_RANK] = r;
    h[PK_GZIP] = vol->gzip;
    h[PK_SHUFFLE] = vol->shuffle;
    h[PK_N] = n;
    int64_t hi[VOX_MAX_RANK];
    for (int i = 0; i < r; i++) /* a copy's box ends where its tensor does */
        hi[i] = copy ? e->lo[i] + e->copy.shape[i] : e->hi[i];
    memcpy(h + PK_AXES, vol->info.shape, (size_t)r * sizeof *h);
    memcpy(h + PK_AXES + r, vol->chunk, (size_t)r * sizeof *h);
    memcpy(h + PK_AXES + 2 * r, e->lo, (size_t)r * sizeof *h);
    memcpy(h + PK_AXES + 3 * r, hi, (size_t)r * sizeof *h);
    uint8_t *d = p + head + table;
    if (copy)
        memcpy(d, e->copy.data, data);
    for (int64_t k = 0; !copy && k < n; k++) {
        int64_t *t = (int64_t *)(p + head) + k * (r + 1);
        memcpy(t, e->chunk[k].origin, (size_t)r * sizeof *t);
        t[r] = (int64_t)e->chunk[k].bytes;
        memcpy(d, e->chunk[k].data, e->chunk[k].bytes);
        d += e->chunk[k].bytes;
    }
    enc_free(ctx, e);
    *blob = p;
    *len = (int64_t)(head + table + data);
    return VOX_OK;
}

static enum vox_status pk_bad(struct vox_ctx *ctx, const struct vox_volume *vol, const char *why)
{
    return vox_fail(ctx, VOX_FORMAT, "'%s': a packed encoding that does not fit it (%s)", vol->name,
                    why);
}

enum vox_status vox_volume_write_packed(struct vox_ctx *ctx, struct vox_volume *vol,
                                        const void *blob, int64_t len)
{
    const int r = vol->info.rank;
    const size_t head = (size_t)PK_WORDS(r) * sizeof(int64_t);
    if (!vol->out || vol->fmt != &vox_io_h5)
        return vox_fail(ctx, VOX_INVALID_ARG, "'%s' is not an HDF5 dataset being written",
                        vol->name);
    if (len < 0 || (size_t)len < head)
        return pk_bad(ctx, vol, "too short");
    int64_t h[PK_WORDS(VOX_MAX_RANK)];
    memcpy(h, blob, head);
    if (h[PK_MAGIC] != pk_magic || h[PK_RANK] != r || h[PK_DTYPE] != vol->info.dtype ||
        memcmp(h + PK_AXES, vol->info.shape, (size_t)r * sizeof *h) != 0)
        return pk_bad(ctx, vol, "another dtype or shape");
    const int64_t *lo = h + PK_AXES + 2 * r, *hi = h + PK_AXES + 3 * r, n = h[PK_N];
    int64_t box = 1;
    for (int i = 0; i < r; i++) {
        if (lo[i] < 0 || hi[i] <= lo[i] || hi[i] > vol->info.shape[i])
            return pk_bad(ctx, vol, "a box outside it");
        box *= hi[i] - lo[i];
    }
    const uint8_t *p = blob;
    if (h[PK_KIND] == 1) { /* a copy of the box */
        if (n != box * (int64_t)vox_dtype_size(vol->info.dtype) || len != (int64_t)head + n)
            return pk_bad(ctx, vol, "a copy of the wrong size");
        struct vox_tensor t = {.dtype = vol->info.dtype, .rank = r, .data = (void *)(p + head)};
        for (int i = r - 1, st = 1; i >= 0; st *= (int)(hi[i] - lo[i]), i--) {
            t.shape[i] = hi[i] - lo[i];
            t.strides[i] = st;
        }
        return vox_volume_write(ctx, vol, lo, &t);
    }
    int64_t first[VOX_MAX_RANK], count[VOX_MAX_RANK];
    if (h[PK_KIND] != 0 || h[PK_GZIP] != vol->gzip || h[PK_SHUFFLE] != vol->shuffle ||
        memcmp(h + PK_AXES + r, vol->chunk, (size_t)r * sizeof *h) != 0 ||
        !vox_h5_chunks_ok(vol, lo, hi))
        return pk_bad(ctx, vol, "other chunks or filters");
    if (n != vox_h5_chunk_grid(vol, lo, hi, first, count) ||
        (len - (int64_t)head) / (int64_t)((size_t)(r + 1) * sizeof(int64_t)) < n)
        return pk_bad(ctx, vol, "a chunk table of the wrong length");
    const int64_t *table = (const int64_t *)(p + head);
    int64_t data = (int64_t)head + n * (r + 1) * (int64_t)sizeof(int64_t), at = data;
    for (int64_t k = 0; k < n; k++) {
        int64_t origin[VOX_MAX_RANK], b = table[k * (r + 1) + r];
        vox_h5_chunk_origin(vol, first, count, k, origin);
        if (memcmp(origin, table + k * (r + 1), (size_t)r * sizeof *origin) != 0 || b < 0 ||
            b > len - at)
            return pk_bad(ctx, vol, "a chunk out of place");
        at += b;
    }
    if (at != len)
        return pk_bad(ctx, vol, "bytes beyond its chunks");
    vox_h5_quiet();
    at = data;
    for (int64_t k = 0; k < n; k++) {
        hsize_t off[VOX_MAX_RANK];
        for (int i = 0; i < r; i++)
            off[i] = (hsize_t)table[k * (r + 1) + i];
        int64_t b = table[k * (r + 1) + r];
        if (H5Dwrite_chunk((hid_t)vol->h5_dset, H5P_DEFAULT, 0, off, (size_t)b, p + at) < 0)
            return vox_fail(ctx, VOX_IO, "'%s': HDF5 could not write a chunk (full disk?)",
                            vol->name);
        at += b;
    }
    return VOX_OK;
}
