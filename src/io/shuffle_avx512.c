/*
 * io/shuffle_avx512.c: the shuffle filter's byte planes of a row (io/shuffle.h), 64-byte
 * vectors.
 */
#define SHUF_BYTES 64
#define SHUF_FN shuffle_row_avx512
#define UNSHUF_FN unshuffle_row_avx512
#define SHUF_BODY
#include "io/shuffle.h"
