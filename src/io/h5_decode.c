/*
 * io/h5_decode.c: reading whole chunks of a deflated HDF5 dataset, inflated on the context's
 * threads.
 *
 * libhdf5 (serial build) runs its filters on the thread that calls H5Dread, one chunk after
 * another: 3 x 512^3 float32 affinities with gzip took 7 s to read on any number of threads.
 * A box that covers the chunks it touches whole (the whole volume, chunk-aligned slabs) is
 * read here instead, in batches of chunks: each chunk's stored bytes with H5Dread_chunk (one
 * call at a time, as the serial libhdf5 needs), then, on the context's threads, inflated with
 * libdeflate (2.4x zlib's speed on float32 affinities, 26x on a label volume, whose long
 * distance-1 matches zlib copies a byte at a time), unshuffled (io/shuffle.h, per ISA) and
 * copied into the box. Only datasets whose filters are deflate or shuffle then deflate,
 * whose stored type is the native one (no conversion) and whose fill value is zero (a chunk
 * never written reads as zeros) are read so; a chunk
 * stored with a filter skipped (its filter mask), or one libhdf5 cannot locate or read, sends
 * the whole box back to libhdf5 (which reads it, or says what is wrong). The values are
 * libhdf5's: the filters are undone as its own would. A chunk that does not inflate to its
 * size is a damaged file, named with the chunk's position.
 */
#include "io/h5.h"
#include "io/shuffle.h"

#include <libdeflate.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum { DEC_BATCH = 4 /* chunks per thread read before they are inflated */ };
#define DEC_MAX_CHUNK ((size_t)64 << 20)
#define DEC_BATCH_BYTES ((size_t)256 << 20) /* stored bytes of a batch, about */

/* Whether the fill value of dcpl is zero (the default, or one set to zero). */
static bool zero_fill(hid_t dcpl, hid_t mt, size_t esz)
{
    H5D_fill_value_t fv;
    if (H5Pfill_value_defined(dcpl, &fv) < 0)
        return false;
    if (fv == H5D_FILL_VALUE_DEFAULT)
        return true;
    unsigned char v[16] = {0}, zero[16] = {0};
    return fv == H5D_FILL_VALUE_USER_DEFINED && esz <= sizeof v &&
           H5Pget_fill_value(dcpl, mt, v) >= 0 && memcmp(v, zero, esz) == 0;
}

void vox_h5_decode_of(struct vox_volume *vol)
{
    vol->decode = H5_DECODE_NO;
    if (vol->chunk[0] <= 0)
        return;
    hid_t dcpl = H5Dget_create_plist((hid_t)vol->h5_dset), ft = H5Dget_type((hid_t)vol->h5_dset);
    hid_t mt = vox_h5_mem_type(vol->info.dtype);
    int nf = dcpl >= 0 ? H5Pget_nfilters(dcpl) : -1;
    H5Z_filter_t id[2] = {-1, -1};
    for (int i = 0; i < nf && i < 2; i++) {
        unsigned flags = 0, cd[8], cfg = 0;
        size_t ncd = 8;
        id[i] = H5Pget_filter2(dcpl, (unsigned)i, &flags, &ncd, cd, 0, NULL, &cfg);
    }
    if (ft >= 0 && H5Tequal(ft, mt) > 0 && zero_fill(dcpl, mt, vox_dtype_size(vol->info.dtype))) {
        if (nf == 1 && id[0] == H5Z_FILTER_DEFLATE)
            vol->decode = H5_DECODE_DEFLATE;
        else if (nf == 2 && id[0] == H5Z_FILTER_SHUFFLE && id[1] == H5Z_FILTER_DEFLATE)
            vol->decode = H5_DECODE_SHUFFLE_DEFLATE;
    }
    if (ft >= 0)
        H5Tclose(ft);
    if (dcpl >= 0)
        H5Pclose(dcpl);
}

bool vox_volume_read_parallel(const struct vox_volume *vol, const int64_t *lo, const int64_t *hi)
{
    /* a worker holds one inflated chunk: chunks over DEC_MAX_CHUNK bytes stay with libhdf5,
     * which holds one at a time */
    return vol->fmt == &vox_io_h5 && !vol->out && vol->decode != H5_DECODE_NO &&
           vox_volume_chunk_bytes(vol) <= DEC_MAX_CHUNK && vox_h5_whole_chunks(vol, lo, hi);
}

struct dec_chunk {
    int64_t origin[VOX_MAX_RANK];
    unsigned char *raw; /* stored bytes (NULL with len 0: never written, zeros) */
    size_t cap, len;
    int slot; /* a box that cuts chunks: the cache slot that holds (or will hold) it */
    bool hit; /* ... already decoded there */
};

/* Decoded chunks kept for boxes that cut chunks (many small boxes read the same chunks:
 * libhdf5's chunk cache does this for its own reads), least recently used out first. */
struct h5_dcache {
    int n;
    size_t bytes; /* a chunk's */
    int64_t *key; /* the chunk's index in the dataset's chunk grid, -1: empty */
    uint64_t *used, clock;
    char **data; /* NULL: a slot not used yet */
};

void vox_h5_dcache_free(struct vox_volume *vol)
{
    struct h5_dcache *d = vol->dcache;
    if (!d)
        return;
    for (int i = 0; d->data && i < d->n; i++)
        vox_free(vol->ctx, d->data[i]);
    vox_free(vol->ctx, d->data);
    vox_free(vol->ctx, d->key);
    vox_free(vol->ctx, d->used);
    vox_free(vol->ctx, d);
    vol->dcache = NULL;
}

/* The cache, made on first use: as many chunks as the dataset's chunk cache size holds; NULL
 * when that is under two (libhdf5 then reads such boxes, as it does not cache them either) or
 * memory is short. */
static struct h5_dcache *dcache_get(struct vox_volume *vol, size_t chunk_bytes)
{
    if (vol->dcache)
        return vol->dcache;
    const size_t bytes = vol->cache_set ? vol->cache_bytes : VOX_H5_CACHE_BYTES;
    int64_t n = (int64_t)(bytes / chunk_bytes), all = 1;
    for (int i = 0; i < vol->info.rank; i++)
        all *= (vol->info.shape[i] + vol->chunk[i] - 1) / vol->chunk[i];
    if (n < 2)
        return NULL;
    n = n < all ? n : all < 2 ? 2 : all; /* no more slots than the dataset has chunks */
    struct h5_dcache *d = vox_calloc(vol->ctx, 1, sizeof *d);
    if (!d)
        return NULL;
    vol->dcache = d;
    d->key = vox_alloc(vol->ctx, (size_t)n * sizeof *d->key);
    d->used = vox_calloc(vol->ctx, (size_t)n, sizeof *d->used);
    d->data = vox_calloc(vol->ctx, (size_t)n, sizeof *d->data);
    d->n = (int)n;
    d->bytes = chunk_bytes;
    if (!d->key || !d->used || !d->data) {
        vox_h5_dcache_free(vol);
        return NULL;
    }
    for (int64_t i = 0; i < n; i++)
        d->key[i] = -1; /* the slots' memory comes when they are first used */
    return vol->dcache;
}

/* The index of the chunk at `origin` in the dataset's chunk grid. */
static int64_t chunk_key(const struct vox_volume *vol, const int64_t *origin)
{
    int64_t k = 0;
    for (int i = 0; i < vol->info.rank; i++)
        k = k * ((vol->info.shape[i] + vol->chunk[i] - 1) / vol->chunk[i]) +
            origin[i] / vol->chunk[i];
    return k;
}

/* Cache slots for chunks c[0, n) (distinct, n <= the cache's size): a slot that holds one is a
 * hit, the others get the least recently used slots not taken by this batch (their memory
 * made on first use). False: memory short (nothing assigned is trusted then). */
static bool dcache_assign(const struct vox_volume *vol, struct h5_dcache *d, struct dec_chunk *c,
                          int64_t n)
{
    const uint64_t start = ++d->clock;
    for (int64_t k = 0; k < n; k++) {
        const int64_t key = chunk_key(vol, c[k].origin);
        c[k].hit = false;
        c[k].slot = -1;
        for (int i = 0; i < d->n && c[k].slot < 0; i++)
            if (d->key[i] == key)
                c[k].slot = i, c[k].hit = true;
        if (c[k].slot < 0) {
            int best = -1;
            for (int i = 0; i < d->n; i++)
                if (d->used[i] < start && (best < 0 || d->used[i] < d->used[best]))
                    best = i;
            c[k].slot = best;
            d->key[best] = key;
            if (!d->data[best] && !(d->data[best] = vox_alloc(vol->ctx, d->bytes))) {
                d->key[best] = -1;
                for (int64_t q = 0; q < k; q++)
                    if (!c[q].hit)
                        d->key[c[q].slot] = -1;
                return false;
            }
        }
        d->used[c[k].slot] = ++d->clock;
    }
    return true;
}

struct dec_job {
    const struct vox_volume *vol;
    const int64_t *lo, *hi;
    char *buf;
    struct dec_chunk *c;
    size_t chunk_bytes;
    shuffle_row_fn unshuffle;            /* NULL: no shuffle */
    char **scratch;                      /* per worker: one inflated chunk */
    struct libdeflate_decompressor **dc; /* per worker */
    struct h5_dcache *cache;             /* a box that cuts chunks: chunks decode there */
    int64_t bad; /* the first chunk (of the batch) that did not inflate, or -1 */
};

static void dec_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    struct dec_job *j = arg;
    for (int64_t k = lo[0]; k < hi[0]; k++) {
        struct dec_chunk *c = &j->c[k];
        char *d = j->cache ? j->cache->data[c->slot] : j->scratch[tid];
        size_t n = 0;
        const bool hit = j->cache && c->hit; /* decoded in its slot already */
        if (!hit && !c->len)
            memset(d, 0, j->chunk_bytes); /* zeros unshuffle to zeros */
        else if (!hit && (libdeflate_zlib_decompress(j->dc[tid], c->raw, c->len, d, j->chunk_bytes,
                                                     &n) != LIBDEFLATE_SUCCESS ||
                          n != j->chunk_bytes)) {
            int64_t seen = __atomic_load_n(&j->bad, __ATOMIC_RELAXED);
            while ((seen < 0 || k < seen) &&
                   !__atomic_compare_exchange_n(&j->bad, &seen, k, false, __ATOMIC_RELAXED,
                                                __ATOMIC_RELAXED))
                ;
            continue;
        }
        vox_h5_chunk_copy(j->vol, j->lo, j->hi, j->buf, c->origin, d, j->chunk_bytes, j->unshuffle,
                          true);
    }
}

/* Reads the stored bytes of chunks [k0, k1) of the grid into c[0, k1 - k0) (origins set;
 * hits skipped). *fallback: a chunk was stored with a filter skipped, or libhdf5 could not
 * locate or read one. */
static enum vox_status read_raw(struct vox_ctx *ctx, struct vox_volume *vol, struct dec_chunk *c,
                                int64_t k0, int64_t k1, bool *fallback)
{
    for (int64_t k = k0; k < k1; k++) {
        struct dec_chunk *e = &c[k - k0];
        if (e->hit)
            continue; /* decoded already (origins and hits set by the caller) */
        hsize_t off[VOX_MAX_RANK], n = 0;
        for (int i = 0; i < vol->info.rank; i++)
            off[i] = (hsize_t)e->origin[i];
        unsigned mask = 0;
        haddr_t addr = HADDR_UNDEF;
        if (H5Dget_chunk_info_by_coord((hid_t)vol->h5_dset, off, &mask, &addr, &n) < 0 || mask) {
            *fallback = true; /* libhdf5 reads it, or says what is wrong */
            return VOX_OK;
        }
        e->len = addr == HADDR_UNDEF ? 0 : (size_t)n; /* never written: zeros */
        if (!e->len)
            continue;
        if (e->cap < e->len) {
            unsigned char *p = vox_alloc(ctx, e->len);
            if (!p)
                return VOX_OUT_OF_MEMORY;
            vox_free(ctx, e->raw);
            e->raw = p;
            e->cap = e->len;
        }
        uint32_t got = 0;
        if (H5Dread_chunk((hid_t)vol->h5_dset, H5P_DEFAULT, off, &got, e->raw) < 0 || got) {
            *fallback = true;
            return VOX_OK;
        }
    }
    return VOX_OK;
}

enum vox_status vox_h5_read_chunks(struct vox_ctx *ctx, struct vox_volume *vol, const int64_t *lo,
                                   const int64_t *hi, void *buf, bool *done)
{
    *done = false;
    const size_t esz = vox_dtype_size(vol->info.dtype), chunk_bytes = vox_volume_chunk_bytes(vol);
    struct h5_dcache *cache = NULL;
    if (!vox_volume_read_parallel(vol, lo, hi)) {
        /* a box that cuts chunks: through the cache of decoded chunks */
        if (vol->fmt != &vox_io_h5 || vol->out || vol->decode == H5_DECODE_NO ||
            chunk_bytes > DEC_MAX_CHUNK || !(cache = dcache_get(vol, chunk_bytes)))
            return VOX_OK;
        for (int i = 0; i < vol->info.rank; i++)
            if (hi[i] <= lo[i])
                return VOX_OK;
    }
    vox_h5_quiet();
    const enum vox_isa isa = vox_ctx_cpu(ctx)->isa;
    shuffle_row_fn unshuffle = vol->decode != H5_DECODE_SHUFFLE_DEFLATE || esz < 2 ? NULL
                               : isa == VOX_ISA_AVX512 ? unshuffle_row_avx512
                               : isa == VOX_ISA_AVX2   ? unshuffle_row_avx2
                                                       : unshuffle_row_ref;
    int64_t first[VOX_MAX_RANK], count[VOX_MAX_RANK];
    const int64_t n = vox_h5_chunk_grid(vol, lo, hi, first, count);
    const int nt = vox_ctx_threads(ctx);
    int64_t batch = (int64_t)DEC_BATCH * nt, fit = (int64_t)(DEC_BATCH_BYTES / chunk_bytes);
    if (batch > fit) /* large chunks: fewer at a time, one per worker at least */
        batch = fit > nt ? fit : nt;
    if (cache && batch > cache->n) /* each chunk of a batch in a slot of its own */
        batch = cache->n;
    struct dec_chunk *c = vox_calloc(ctx, (size_t)batch, sizeof *c);
    char **scratch = vox_calloc(ctx, (size_t)nt, sizeof *scratch);
    struct libdeflate_decompressor **dc = vox_calloc(ctx, (size_t)nt, sizeof *dc);
    enum vox_status s = c && scratch && dc ? VOX_OK : VOX_OUT_OF_MEMORY;
    for (int t = 0; s == VOX_OK && t < nt; t++)
        if (!(scratch[t] = vox_alloc(ctx, chunk_bytes)) ||
            !(dc[t] = libdeflate_alloc_decompressor()))
            s = VOX_OUT_OF_MEMORY;
    bool fallback = false;
    for (int64_t k0 = 0; s == VOX_OK && !fallback && k0 < n; k0 += batch) {
        const int64_t k1 = n - k0 > batch ? k0 + batch : n;
        for (int64_t k = k0; k < k1; k++) {
            vox_h5_chunk_origin(vol, first, count, k, c[k - k0].origin);
            c[k - k0].hit = false;
        }
        if (cache && !dcache_assign(vol, cache, c, k1 - k0)) {
            s = VOX_OUT_OF_MEMORY;
            break;
        }
        s = read_raw(ctx, vol, c, k0, k1, &fallback);
        if (s != VOX_OK || fallback) {
            for (int64_t k = 0; cache && k < k1 - k0; k++)
                if (!c[k].hit) /* its slot holds nothing now */
                    cache->key[c[k].slot] = -1;
            break;
        }
        struct dec_job j = {vol, lo, hi, buf, c, chunk_bytes, unshuffle, scratch, dc, cache, -1};
        vox_pool_for(vox_ctx_pool(ctx), (int64_t[3]){k1 - k0, 1, 1}, (int64_t[3]){1, 1, 1},
                     VOX_SCHED_DYNAMIC, dec_task, &j);
        for (int64_t k = j.bad; cache && k >= 0 && k < k1 - k0; k++)
            if (!c[k].hit) /* the batch stopped being trusted at its first bad chunk */
                cache->key[c[k].slot] = -1;
        if (j.bad >= 0) {
            char at[160];
            int w = 0;
            for (int i = 0; i < vol->info.rank; i++)
                w += snprintf(at + w, sizeof at - (size_t)w, "%s%lld", i ? ", " : "[",
                              (long long)c[j.bad].origin[i]);
            snprintf(at + w, sizeof at - (size_t)w, "]");
            s = vox_fail(ctx, VOX_FORMAT,
                         "'%s': the chunk at %s does not inflate to its size "
                         "(damaged file?)",
                         vol->name, at);
        }
    }
    for (int64_t i = 0; c && i < batch; i++)
        vox_free(ctx, c[i].raw);
    for (int t = 0; scratch && t < nt; t++)
        vox_free(ctx, scratch[t]);
    for (int t = 0; dc && t < nt; t++)
        if (dc[t])
            libdeflate_free_decompressor(dc[t]);
    vox_free(ctx, c);
    vox_free(ctx, scratch);
    vox_free(ctx, dc);
    *done = s == VOX_OK && !fallback;
    return s;
}
