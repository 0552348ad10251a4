/*
 * jit/modrm.c: ModRM, SIB and displacement encoding, shared by the legacy, VEX and EVEX paths.
 *
 * Key idea (Intel SDM vol. 2, sections 2.1.5 and 2.6.5): mod selects no / 8-bit / 32-bit
 * displacement, rm = 100 announces a SIB byte, and the special cases fall out of three rules:
 *   - rsp/r12 as base (rm = 100) need a SIB byte (with index = 100, "none");
 *   - rbp/r13 as base with mod = 00 would mean RIP/absolute, so they take a zero disp8;
 *   - index = 100 means "no index", so rsp can never be an index (r12 can, through REX.X).
 * EVEX compresses disp8: a displacement that is a multiple of N (the tuple's memory size)
 * with disp/N in [-128, 127] is stored as one byte (SDM 2.7.5).
 */
#include "jit/internal.h"

bool jit_mem_check(struct vox_jit_asm *a, const struct vox_jit_mem *m, bool vsib,
                   const char *insn)
{
    char b1[16], b2[16];
    int bc = jit_class(m->base);
    bool base_ok = jit_is(m->base, VOX_JIT_CLASS_GPR64) || m->base == VOX_JIT_NONE ||
                   m->base == VOX_JIT_RIP;
    if (!base_ok) {
        jit_fail(a, VOX_INVALID_ARG, "jit: %s: memory base %s is not a 64-bit register", insn,
                 jit_reg_name(m->base, b1));
        return false;
    }
    bool index_ok;
    if (vsib)
        index_ok = jit_is(m->index, VOX_JIT_CLASS_XMM) || jit_is(m->index, VOX_JIT_CLASS_YMM) ||
                   jit_is(m->index, VOX_JIT_CLASS_ZMM);
    else
        index_ok = m->index == VOX_JIT_NONE ||
                   (jit_is(m->index, VOX_JIT_CLASS_GPR64) && m->index != VOX_JIT_RSP);
    if (!index_ok) {
        jit_fail(a, VOX_INVALID_ARG, "jit: %s: %s cannot be the memory index%s", insn,
                 jit_reg_name(m->index, b2), vsib ? " (a gather needs a vector index)" : "");
        return false;
    }
    if (m->scale != 1 && m->scale != 2 && m->scale != 4 && m->scale != 8) {
        jit_fail(a, VOX_INVALID_ARG, "jit: %s: scale %d, expected 1, 2, 4 or 8", insn,
                 (int)m->scale);
        return false;
    }
    if (bc == VOX_JIT_CLASS_RIP) {
        if (m->index != VOX_JIT_NONE) {
            jit_fail(a, VOX_INVALID_ARG, "jit: %s: a RIP-relative operand cannot have index %s",
                     insn, jit_reg_name(m->index, b2));
            return false;
        }
        return jit_label_check(a, m->label, insn);
    }
    return true;
}

static unsigned jit_scale_bits(int32_t scale)
{
    return scale == 1 ? 0u : scale == 2 ? 1u : scale == 4 ? 2u : 3u;
}

void jit_modrm_mem(struct vox_jit_asm *a, int reg, const struct vox_jit_mem *m, int n,
                   int trailing)
{
    unsigned r = (unsigned)(reg & 7) << 3;
    unsigned ss = jit_scale_bits(m->scale) << 6;
    unsigned idx = m->index == VOX_JIT_NONE ? 4u : (unsigned)(m->index & 7);
    if (m->base == VOX_JIT_RIP) {
        jit_put(a, r | 5u);
        jit_fixup_add(a, m->label, m->disp, trailing);
        jit_put32(a, 0);
        return;
    }
    if (m->base == VOX_JIT_NONE) { /* [index*scale + disp32] or [disp32]: SIB with base 101 */
        jit_put(a, r | 4u);
        jit_put(a, ss | idx << 3 | 5u);
        jit_put32(a, (uint32_t)m->disp);
        return;
    }
    unsigned base = (unsigned)(m->base & 7);
    int32_t d8 = m->disp / n;
    unsigned mod;
    if (m->disp == 0 && base != 5)
        mod = 0x00;
    else if (m->disp % n == 0 && d8 >= -128 && d8 <= 127)
        mod = 0x40;
    else
        mod = 0x80;
    if (m->index != VOX_JIT_NONE || base == 4) {
        jit_put(a, mod | r | 4u);
        jit_put(a, ss | idx << 3 | base);
    } else {
        jit_put(a, mod | r | base);
    }
    if (mod == 0x40)
        jit_put(a, (uint8_t)(int8_t)d8);
    else if (mod == 0x80)
        jit_put32(a, (uint32_t)m->disp);
}
