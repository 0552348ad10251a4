/*
 * fast_pack.c: the blocked layout's row transposes (fast_pack.h) for the baseline ISA
 * (VOX_ISA_REF), 8 lanes.
 */
#define PACK_L 8
#define PACK_FN vox_nn_pack_ref
#include "fast_pack.h"
