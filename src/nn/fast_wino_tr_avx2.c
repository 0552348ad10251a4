/*
 * fast_wino_tr_avx2.c: the Winograd tile transforms (fast_wino_tr.h) for AVX2, 8 lanes.
 */
#define WINO_L 8
#define WINO_TR vox_nn_wino_tr_avx2
#include "fast_wino_tr.h"
