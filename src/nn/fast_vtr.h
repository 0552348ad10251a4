/*
 * nn/fast_vtr.h: the L x L register transpose shared by the blocked layout's row passes
 * (fast_pack.h) and the Winograd output transform's planar stores (fast_wino_tr.h). The
 * including file defines vf and vi (GCC vectors of float and int32 of its width L) and INLINE.
 *
 * log2(L) rounds of "zip" (interleave the low, then the high halves of rows i and i + L/2):
 * each round moves one bit of the row index into the column index, so after log2(L) rounds row
 * i holds column i.
 */
#ifndef VOX_NN_FAST_VTR_H
#define VOX_NN_FAST_VTR_H

enum { VTR_L = (int)(sizeof(vf) / sizeof(float)) };

/* Transposes the L x L matrix in r (row i: r[i]) in place (unrolled: the rows stay in
 * registers). */
INLINE void vtranspose(vf r[VTR_L])
{
    vi lo, hi;
#pragma GCC unroll 16
    for (int k = 0; k < VTR_L / 2; k++) {
        lo[2 * k] = k, lo[2 * k + 1] = VTR_L + k;
        hi[2 * k] = VTR_L / 2 + k, hi[2 * k + 1] = VTR_L + VTR_L / 2 + k;
    }
#pragma GCC unroll 4
    for (int round = 1; round < VTR_L; round *= 2) {
        vf t[VTR_L];
#pragma GCC unroll 16
        for (int i = 0; i < VTR_L / 2; i++) {
            t[2 * i] = __builtin_shuffle(r[i], r[i + VTR_L / 2], lo);
            t[2 * i + 1] = __builtin_shuffle(r[i], r[i + VTR_L / 2], hi);
        }
#pragma GCC unroll 16
        for (int i = 0; i < VTR_L; i++)
            r[i] = t[i];
    }
}

#endif
