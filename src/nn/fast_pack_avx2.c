/*
 * fast_pack_avx2.c: the blocked layout's row transposes (fast_pack.h) for AVX2, 8 lanes.
 */
#define PACK_L 8
#define PACK_FN vox_nn_pack_avx2
#include "fast_pack.h"
