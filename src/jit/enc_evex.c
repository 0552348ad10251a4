/*
 * jit/enc_evex.c: the EVEX prefix (AVX-512F on zmm0-31, and xmm/ymm16-31 through AVX512VL).
 *
 * Key idea (Intel SDM vol. 2, section 2.7): EVEX is 62 followed by three payload bytes
 *   P0: R X B R' 0 m m m   (R, X, B, R' inverted; R' is bit 4 of ModRM.reg)
 *   P1: W v v v v 1 p p    (vvvv inverted)
 *   P2: z L'L b V' a a a   (V' inverted: bit 4 of vvvv, or of a VSIB index; aaa the opmask)
 * For a register rm, X carries bit 4 of rm. With a memory operand, an 8-bit displacement is
 * scaled by N, the tuple's memory size (disp8*N), which jit_modrm_mem applies.
 */
#include "jit/internal.h"

void jit_evex_emit(struct vox_jit_asm *a, const struct jit_vinsn *v)
{
    unsigned r = (unsigned)(v->reg >> 3) & 1, r4 = (unsigned)(v->reg >> 4) & 1;
    unsigned x, b, v4;
    unsigned vvvv = v->vvvv < 0 ? 0 : (unsigned)v->vvvv;
    if (v->mem) {
        x = (unsigned)jit_mem_x(v->mem);
        b = (unsigned)jit_mem_b(v->mem);
        v4 = v->vsib ? (unsigned)(v->mem->index >> 4) & 1 : (vvvv >> 4) & 1;
    } else {
        x = (unsigned)(v->rm >> 4) & 1;
        b = (unsigned)(v->rm >> 3) & 1;
        v4 = (vvvv >> 4) & 1;
    }
    jit_put(a, 0x62);
    jit_put(a, (r ^ 1) << 7 | (x ^ 1) << 6 | (b ^ 1) << 5 | (r4 ^ 1) << 4 | v->map);
    jit_put(a, (unsigned)v->w << 7 | (~vvvv & 15u) << 3 | 4u | v->pp);
    jit_put(a, (unsigned)v->z << 7 | (unsigned)v->l << 5 | (unsigned)v->bcst << 4 |
                   (v4 ^ 1) << 3 | (unsigned)v->aaa);
    jit_put(a, v->opcode);
    if (v->mem)
        jit_modrm_mem(a, v->reg, v->mem, v->n, v->has_imm ? 1 : 0);
    else
        jit_modrm_reg(a, v->reg, v->rm);
    if (v->has_imm)
        jit_put(a, v->imm);
}
