/*
 * fast_fft_mul.c: the FFT convolution's spectral products (fast_fft_mul.h) for
 * the baseline ISA (VOX_ISA_REF), 4 lanes, a register tile of 2 x 2.
 */
#define FFT_L 4
#define MUL_TT 2
#define MUL_KT 2
#define FFT_MUL vox_nn_fft_mul_ref
#include "fast_fft_mul.h"
