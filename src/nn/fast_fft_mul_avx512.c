/*
 * fast_fft_mul_avx512.c: the FFT convolution's spectral products (fast_fft_mul.h) for
 * AVX-512, 16 lanes, a register tile of 3 x 3.
 */
#define FFT_L 16
#define MUL_TT 3
#define MUL_KT 3
#define FFT_MUL vox_nn_fft_mul_avx512
#include "fast_fft_mul.h"
