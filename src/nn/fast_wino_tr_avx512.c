/*
 * fast_wino_tr_avx512.c: the Winograd tile transforms (fast_wino_tr.h) for AVX-512, 16 lanes.
 */
#define WINO_L 16
#define WINO_TR vox_nn_wino_tr_avx512
#include "fast_wino_tr.h"
