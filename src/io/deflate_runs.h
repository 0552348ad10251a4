/*
 * io/deflate_runs.h: a zlib stream of data made of byte runs, in one pass. Private to src/io.
 */
#ifndef VOX_IO_DEFLATE_RUNS_H
#define VOX_IO_DEFLATE_RUNS_H

#include <stddef.h>
#include <stdint.h>

/* The tokens deflate_runs may keep for n bytes (u16 each): more means the data has few runs. */
static inline size_t deflate_runs_tokens(size_t n)
{
    return n / 8 + 8;
}

/* A zlib stream (RFC 1950, 1951) of src[0, n), n >= 1, into dst: every run of equal bytes is
 * one literal and distance-1 matches of up to 258 bytes, in one block with its own Huffman
 * codes. Returns its size, or 0 when it would need more than deflate_runs_tokens(n) tokens
 * or more than `cap` bytes (data that zlib's own search codes better). tok: room for
 * deflate_runs_tokens(n) tokens. Any inflater (libhdf5's deflate filter, h5py) reads it. */
size_t deflate_runs(const uint8_t *src, size_t n, uint8_t *dst, size_t cap, uint16_t *tok);
/* The scalar twin (tests): byte-by-byte runs and zlib's adler32; the same bytes. */
size_t deflate_runs_ref(const uint8_t *src, size_t n, uint8_t *dst, size_t cap, uint16_t *tok);

#endif
