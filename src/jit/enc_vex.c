/*
 * jit/enc_vex.c: the VEX prefix (AVX, AVX2, FMA and the opmask moves).
 *
 * Key idea (Intel SDM vol. 2, section 2.3): VEX packs REX.R/X/B (inverted), the opcode map,
 * REX.W, a second source register vvvv (inverted), the vector length L and the implied legacy
 * prefix pp into two or three bytes. The two-byte form C5 applies when X = B = 0, W = 0 and
 * the map is 0F; otherwise the three-byte form C4 is used. Registers are 0-15 only.
 */
#include "jit/internal.h"

void jit_vex_emit(struct vox_jit_asm *a, const struct jit_vinsn *v)
{
    unsigned r = (unsigned)(v->reg >> 3) & 1;
    unsigned x = v->mem ? (unsigned)jit_mem_x(v->mem) : 0;
    unsigned b = v->mem ? (unsigned)jit_mem_b(v->mem) : (unsigned)(v->rm >> 3) & 1;
    unsigned vvvv = v->vvvv < 0 ? 0 : (unsigned)v->vvvv;
    unsigned tail = ((~vvvv & 15u) << 3) | (unsigned)(v->l & 1) << 2 | v->pp;
    if (!x && !b && v->map == 1 && !v->w) {
        jit_put(a, 0xC5);
        jit_put(a, (r ^ 1) << 7 | tail);
    } else {
        jit_put(a, 0xC4);
        jit_put(a, (r ^ 1) << 7 | (x ^ 1) << 6 | (b ^ 1) << 5 | v->map);
        jit_put(a, (unsigned)v->w << 7 | tail);
    }
    jit_put(a, v->opcode);
    if (v->mem)
        jit_modrm_mem(a, v->reg, v->mem, 1, v->has_imm ? 1 : 0);
    else
        jit_modrm_reg(a, v->reg, v->rm);
    if (v->has_imm)
        jit_put(a, v->imm);
}
