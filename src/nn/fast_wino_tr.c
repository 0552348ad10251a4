/*
 * fast_wino_tr.c: the Winograd tile transforms (fast_wino_tr.h) for the baseline ISA
 * (VOX_ISA_REF), 8 lanes.
 */
#define WINO_L 8
#define WINO_TR vox_nn_wino_tr_ref
#include "fast_wino_tr.h"
