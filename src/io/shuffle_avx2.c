/*
 * io/shuffle_avx2.c: the shuffle filter's byte planes of a row (io/shuffle.h), 32-byte vectors.
 */
#define SHUF_BYTES 32
#define SHUF_FN shuffle_row_avx2
#define UNSHUF_FN unshuffle_row_avx2
#define SHUF_BODY
#include "io/shuffle.h"
