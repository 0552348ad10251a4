/*
 * core/peak.h: the ISA-specific FMA loops of the peak probe. Each runs `iters` rounds of 12
 * independent FMAs (2 FLOPs x lanes each) and returns a value that depends on all of them.
 */
#ifndef VOX_CORE_PEAK_H
#define VOX_CORE_PEAK_H
#include <stdint.h>
double vox_peak_loop_avx2(int64_t iters);
double vox_peak_loop_avx512(int64_t iters);
#endif
