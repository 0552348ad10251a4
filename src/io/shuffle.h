/*
 * io/shuffle.h: the shuffle filter's byte planes of one row of elements. Private to src/io.
 *
 * The reference (h5_chunks.c) transposes 8 x 8 bytes at a time, every plane. The vector
 * versions (shuffle_avx2.c, shuffle_avx512.c: SHUF_BYTES, the vector width, SHUF_FN and
 * UNSHUF_FN, the functions' names, then this file's body under SHUF_BODY) first OR the row's
 * elements: a label row has planes that are zero throughout (ids below 2^24 leave 5 of a uint64's
 * 8), and those are cleared; each other plane is the row's elements shifted and narrowed to bytes,
 * a vector at a time (vpmovqb / vpmovdb / vpmovwb on AVX-512). The row is read once from
 * memory and then from L1.
 */
#ifndef VOX_IO_SHUFFLE_H
#define VOX_IO_SHUFFLE_H

#include <stddef.h>
#include <stdint.h>

/* Byte j of element i of src (len elements of esz bytes) to dst[j * plane + i]. */
typedef void (*shuffle_row_fn)(const char *src, char *dst, size_t len, size_t esz, size_t plane);
void shuffle_row_ref(const char *src, char *dst, size_t len, size_t esz, size_t plane);
void shuffle_row_avx2(const char *src, char *dst, size_t len, size_t esz, size_t plane);
void shuffle_row_avx512(const char *src, char *dst, size_t len, size_t esz, size_t plane);
/* The way back: element i of dst (len elements of esz bytes) from bytes src[j * plane + i]
 * (each plane's bytes widened, shifted into place and ORed, a vector at a time). */
void unshuffle_row_ref(const char *src, char *dst, size_t len, size_t esz, size_t plane);
void unshuffle_row_avx2(const char *src, char *dst, size_t len, size_t esz, size_t plane);
void unshuffle_row_avx512(const char *src, char *dst, size_t len, size_t esz, size_t plane);

#endif

#ifdef SHUF_BODY
#include <string.h>

#define SHUF_PLANES(T, NAME)                                                                       \
    static void NAME(const char *src, char *dst, size_t len, size_t plane)                         \
    {                                                                                              \
        enum { L = SHUF_BYTES / sizeof(T) };                                                       \
        typedef T vt __attribute__((vector_size(SHUF_BYTES)));                                     \
        typedef uint8_t vb __attribute__((vector_size(L)));                                        \
        vt acc = {0};                                                                              \
        size_t i = 0;                                                                              \
        for (; i + L <= len; i += L) {                                                             \
            vt v;                                                                                  \
            memcpy(&v, src + i * sizeof(T), sizeof v);                                             \
            acc |= v;                                                                              \
        }                                                                                          \
        T any = 0;                                                                                 \
        for (int l = 0; l < L; l++)                                                                \
            any |= acc[l];                                                                         \
        for (; i < len; i++) {                                                                     \
            T t;                                                                                   \
            memcpy(&t, src + i * sizeof(T), sizeof t);                                             \
            any |= t;                                                                              \
        }                                                                                          \
        for (size_t j = 0; j < sizeof(T); j++) {                                                   \
            char *d = dst + j * plane;                                                             \
            if (!(uint8_t)(any >> (8 * j))) {                                                      \
                memset(d, 0, len);                                                                 \
                continue;                                                                          \
            }                                                                                      \
            for (i = 0; i + L <= len; i += L) {                                                    \
                vt v;                                                                              \
                memcpy(&v, src + i * sizeof(T), sizeof v);                                         \
                vb b = __builtin_convertvector(v >> (T)(8 * j), vb);                               \
                memcpy(d + i, &b, sizeof b);                                                       \
            }                                                                                      \
            for (; i < len; i++) {                                                                 \
                T t;                                                                               \
                memcpy(&t, src + i * sizeof(T), sizeof t);                                         \
                d[i] = (char)(uint8_t)(t >> (8 * j));                                              \
            }                                                                                      \
        }                                                                                          \
    }

SHUF_PLANES(uint16_t, planes2)
SHUF_PLANES(uint32_t, planes4)
SHUF_PLANES(uint64_t, planes8)

#define UNSHUF_PLANES(T, NAME)                                                                     \
    static void NAME(const char *src, char *dst, size_t len, size_t plane)                         \
    {                                                                                              \
        enum { L = SHUF_BYTES / sizeof(T) };                                                       \
        typedef T vt __attribute__((vector_size(SHUF_BYTES)));                                     \
        typedef uint8_t vb __attribute__((vector_size(L)));                                        \
        size_t i = 0;                                                                              \
        for (; i + L <= len; i += L) {                                                             \
            vt v = {0};                                                                            \
            for (size_t j = 0; j < sizeof(T); j++) {                                               \
                vb b;                                                                              \
                memcpy(&b, src + j * plane + i, sizeof b);                                         \
                v |= __builtin_convertvector(b, vt) << (T)(8 * j);                                 \
            }                                                                                      \
            memcpy(dst + i * sizeof(T), &v, sizeof v);                                             \
        }                                                                                          \
        unshuffle_row_ref(src + i, dst + i * sizeof(T), len - i, sizeof(T), plane);                \
    }

UNSHUF_PLANES(uint16_t, unplanes2)
UNSHUF_PLANES(uint32_t, unplanes4)
UNSHUF_PLANES(uint64_t, unplanes8)

void UNSHUF_FN(const char *src, char *dst, size_t len, size_t esz, size_t plane)
{
    switch (esz) {
    case 2:
        unplanes2(src, dst, len, plane);
        return;
    case 4:
        unplanes4(src, dst, len, plane);
        return;
    case 8:
        unplanes8(src, dst, len, plane);
        return;
    default:
        unshuffle_row_ref(src, dst, len, esz, plane);
    }
}

void SHUF_FN(const char *src, char *dst, size_t len, size_t esz, size_t plane)
{
    switch (esz) {
    case 2:
        planes2(src, dst, len, plane);
        return;
    case 4:
        planes4(src, dst, len, plane);
        return;
    case 8:
        planes8(src, dst, len, plane);
        return;
    default:
        shuffle_row_ref(src, dst, len, esz, plane);
    }
}
#endif
