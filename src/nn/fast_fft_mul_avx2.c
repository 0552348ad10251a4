/*
 * fast_fft_mul_avx2.c: the FFT convolution's spectral products (fast_fft_mul.h) for
 * AVX2, 8 lanes, a register tile of 2 x 2.
 */
#define FFT_L 8
#define MUL_TT 2
#define MUL_KT 2
#define FFT_MUL vox_nn_fft_mul_avx2
#include "fast_fft_mul.h"
