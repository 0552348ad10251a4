/*
 * fast_pack_avx512.c: the blocked layout's row transposes (fast_pack.h) for AVX-512, 16 lanes.
 */
#define PACK_L 16
#define PACK_FN vox_nn_pack_avx512
#include "fast_pack.h"
