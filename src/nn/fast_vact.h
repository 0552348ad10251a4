/*
 * nn/fast_vact.h: the pointwise activations in vector form, as the JIT's post-ops compute
 * them (src/loop/codegen_tile.c emit_expm1), for the vector C of the Winograd transforms
 * (fast_wino_tr.h) and of the blocked layout's row passes (fast_pack.h). The including file
 * defines vf and vi (GCC vectors of float and int32 of its width) and INLINE.
 */
#ifndef VOX_NN_FAST_VACT_H
#define VOX_NN_FAST_VACT_H

/* x = max(x, c) and min(x, c) (c where x is NaN, as vmaxps / vminps with c second). */
INLINE void vmax_c(vf *x, float c)
{
    const vf k = (vf){0} + c;
    const vi m = *x > k;
    *x = (vf)((m & (vi)*x) | (~m & (vi)k));
}

INLINE void vmin_c(vf *x, float c)
{
    const vf k = (vf){0} + c;
    const vi m = *x < k;
    *x = (vf)((m & (vi)*x) | (~m & (vi)k));
}

/* u = expm1(max(u, -87)) (and min(., 87) when upper), the JIT's method (src/loop/
 * codegen_tile.c emit_expm1): Cody-Waite reduction u = n ln2 + r, 2^n from the rounding's low
 * bits shifted into the exponent, a degree-8 Taylor polynomial of expm1(r), then
 * expm1(u) = 2^n expm1(r) + (2^n - 1): within 4e-7 relative of libm. */
INLINE void vexpm1(vf *u, bool upper)
{
    static const float c[7] = {1.0f / 40320, 1.0f / 5040, 1.0f / 720, 1.0f / 120,
                               1.0f / 24,    1.0f / 6,    0.5f};
    const float magic = 12582912.0f + 127.0f;
    vmax_c(u, -87.0f);
    if (upper)
        vmin_c(u, 87.0f);
    vf t = *u * 1.44269504f + magic;
    vf n = t - magic;
    vf r = *u - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    vf p2 = (vf)((vi)t << 23);
    vf o = (vf){0} + c[0];
    for (int i = 1; i < 7; i++)
        o = o * r + c[i];
    o = o * r;
    o = o * r + r;
    *u = o * p2 + (p2 - 1.0f);
}

/* The activation in vector form, as the JIT's post-ops compute it:
 *   elu(x) = max(x, 0) + expm1(min(x, 0)),  sigmoid(x) = 1 / (2 + expm1(-x)),
 *   tanh(x) = sign(x) * -e / (2 + e) with e = expm1(-2 |x|). */
INLINE void act_vec(enum vox_nn_act act, vf *x)
{
    const vi sign = (vi){0} + (int32_t)0x80000000u;
    vf t;
    switch (act) {
    case VOX_ACT_RELU:
        vmax_c(x, 0.0f);
        break;
    case VOX_ACT_ELU:
        t = *x;
        vmin_c(&t, 0.0f);
        vmax_c(x, 0.0f);
        vexpm1(&t, false);
        *x += t;
        break;
    case VOX_ACT_SIGMOID:
        t = -*x;
        vexpm1(&t, true);
        *x = 1.0f / (t + 2.0f);
        break;
    case VOX_ACT_TANH:
        t = (vf)((vi)*x & ~sign) * -2.0f;
        vexpm1(&t, false);
        t = t / (t + 2.0f); /* -tanh(|x|) */
        *x = (vf)((((vi)*x ^ sign) & sign) ^ (vi)t);
        break;
    default:
        break;
    }
}

#endif
