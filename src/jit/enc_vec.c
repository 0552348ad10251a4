/*
 * jit/enc_vec.c: vector instructions: the opcode table, operand checks, and the choice
 * between VEX and EVEX; plus gathers (VSIB), opmask moves and vzeroupper.
 *
 * Key idea (sljit's flag bits, xbyak's operand-driven choice): one row per mnemonic gives the
 * opcode, the store opcode, map, implied prefix, the encodings it has (VEX, EVEX) and the
 * EVEX tuple class that fixes the disp8*N scale. The encoding follows from the operands:
 * EVEX when one is a zmm, a register >= 16, a masked/zeroing destination or a broadcast;
 * VEX otherwise (shorter, and the only form of vmaskmovps and vpcmpeqd into a vector).
 * Tuples (SDM 2.7.5): full vector N = 16/32/64 bytes (4 with {1toN}), tuple1-scalar N = 4.
 */
#include "jit/internal.h"

enum { V_VEX = 1, V_EVEX = 2, V_BCST = 4, V_T1S = 8, V_SRCX = 16 };
enum { FM_RRR = 1, FM_RRM = 2, FM_RR = 4, FM_RM = 8, FM_MR = 16, FM_MRR = 32, FM_RRI = 64 };

struct jit_vop_enc {
    const char *name;
    uint8_t opcode, store, map, pp, flags, forms;
};

#define ARITH (FM_RRR | FM_RRM)
#define VE (V_VEX | V_EVEX)
static const struct jit_vop_enc jit_vops[VOX_JIT_VOP_COUNT] = {
    [VOX_JIT_VMOVUPS] = {"vmovups", 0x10, 0x11, 1, 0, VE, FM_RR | FM_RM | FM_MR},
    [VOX_JIT_VMOVAPS] = {"vmovaps", 0x28, 0x29, 1, 0, VE, FM_RR | FM_RM | FM_MR},
    [VOX_JIT_VMASKMOVPS] = {"vmaskmovps", 0x2C, 0x2E, 2, 1, V_VEX, FM_RRM | FM_MRR},
    [VOX_JIT_VBROADCASTSS] = {"vbroadcastss", 0x18, 0, 2, 1, VE | V_T1S | V_SRCX,
                              FM_RR | FM_RM},
    [VOX_JIT_VPBROADCASTD] = {"vpbroadcastd", 0x58, 0, 2, 1, VE | V_T1S | V_SRCX,
                              FM_RR | FM_RM},
    [VOX_JIT_VFMADD231PS] = {"vfmadd231ps", 0xB8, 0, 2, 1, VE | V_BCST, ARITH},
    [VOX_JIT_VMULPS] = {"vmulps", 0x59, 0, 1, 0, VE | V_BCST, ARITH},
    [VOX_JIT_VADDPS] = {"vaddps", 0x58, 0, 1, 0, VE | V_BCST, ARITH},
    [VOX_JIT_VSUBPS] = {"vsubps", 0x5C, 0, 1, 0, VE | V_BCST, ARITH},
    [VOX_JIT_VMAXPS] = {"vmaxps", 0x5F, 0, 1, 0, VE | V_BCST, ARITH},
    [VOX_JIT_VMINPS] = {"vminps", 0x5D, 0, 1, 0, VE | V_BCST, ARITH},
    [VOX_JIT_VXORPS] = {"vxorps", 0x57, 0, 1, 0, VE | V_BCST, ARITH}, /* EVEX: AVX512DQ */
    [VOX_JIT_VANDPS] = {"vandps", 0x54, 0, 1, 0, VE | V_BCST, ARITH}, /* EVEX: AVX512DQ */
    [VOX_JIT_VFMADD213PS] = {"vfmadd213ps", 0xA8, 0, 2, 1, VE | V_BCST, ARITH},
    [VOX_JIT_VDIVPS] = {"vdivps", 0x5E, 0, 1, 0, VE | V_BCST, ARITH},
    [VOX_JIT_VPADDD] = {"vpaddd", 0xFE, 0, 1, 1, VE | V_BCST, ARITH},
    [VOX_JIT_VPCMPEQD] = {"vpcmpeqd", 0x76, 0, 1, 1, V_VEX, ARITH},
    [VOX_JIT_VMOVSS] = {"vmovss", 0x10, 0x11, 1, 2, VE | V_T1S, FM_RM | FM_MR},
    [VOX_JIT_VPERMILPS] = {"vpermilps", 0x04, 0, 3, 1, VE, FM_RRI},
    [VOX_JIT_VEXTRACTF128] = {"vextractf128", 0x19, 0, 3, 1, VE, FM_RRI},
    [VOX_JIT_VEXTRACTF32X8] = {"vextractf32x8", 0x1B, 0, 3, 1, V_EVEX, FM_RRI},
    [VOX_JIT_VPSLLD] = {"vpslld", 0x72, 0, 1, 1, VE, FM_RRI},
};

static bool jit_is_vec(int32_t r)
{
    return jit_is(r, VOX_JIT_CLASS_XMM) || jit_is(r, VOX_JIT_CLASS_YMM) ||
           jit_is(r, VOX_JIT_CLASS_ZMM);
}

/* 0, 1, 2 for xmm, ymm, zmm. */
static uint8_t jit_vl(int32_t r)
{
    return (uint8_t)((jit_class(r) - VOX_JIT_CLASS_XMM) >> 8);
}

/* Checks that `r` is a plain vector register of class `cls` (or any vector when cls is 0). */
static bool jit_vec_check(struct vox_jit_asm *a, const char *insn, int32_t r, int cls)
{
    if (jit_is_vec(r) && (cls == 0 || jit_class(r) == cls))
        return true;
    char b[16];
    jit_fail(a, VOX_INVALID_ARG, "jit: %s: operand %s is not a%s vector register%s", insn,
             jit_reg_name(r, b), cls ? " matching" : "",
             (r & 0xF000) && cls ? " (only the destination takes a mask)" : "");
    return false;
}

/* Picks VEX or EVEX and emits. reg/vvvv/rm are plain registers (VOX_JIT_NONE if unused). */
static void jit_vpick(struct vox_jit_asm *a, const struct jit_vop_enc *e, struct jit_vinsn *v,
                      int32_t reg, int32_t vvvv, int32_t rm)
{
    int hi = jit_num(reg) >= 16 || (vvvv && jit_num(vvvv) >= 16) || (rm && jit_num(rm) >= 16);
    bool evex = v->l == 2 || hi || v->aaa || v->z || v->bcst;
    if (evex && !(e->flags & V_EVEX)) {
        char b[16];
        int32_t high = jit_num(reg) >= 16 ? reg : (vvvv && jit_num(vvvv) >= 16) ? vvvv : rm;
        const char *why = v->l == 2 ? "zmm" : hi ? jit_reg_name(high, b) : "a mask or broadcast";
        jit_fail(a, VOX_UNSUPPORTED, "jit: %s has no EVEX form, which %s needs", e->name, why);
        return;
    }
    if (v->bcst && !(e->flags & V_BCST)) {
        jit_fail(a, VOX_INVALID_ARG, "jit: %s has no embedded broadcast", e->name);
        return;
    }
    v->reg = jit_num(reg);
    v->vvvv = vvvv ? jit_num(vvvv) : -1;
    v->rm = rm ? jit_num(rm) : 0;
    if (evex || !(e->flags & V_VEX)) {
        v->n = (e->flags & V_T1S) || v->bcst ? 4 : 16 << v->l;
        jit_evex_emit(a, v);
    } else {
        jit_vex_emit(a, v);
    }
}

/* The common path of every table-driven form. `dst` is the ModRM.reg operand (it may carry
 * an opmask); vvvv and rm are registers or VOX_JIT_NONE; m is the memory operand or NULL. */
static void jit_vemit(struct vox_jit_asm *a, enum vox_jit_vop op, int form, int32_t dst,
                      int32_t vvvv, int32_t rm, const struct vox_jit_mem *m)
{
    if (!jit_begin(a))
        return;
    if ((unsigned)op >= VOX_JIT_VOP_COUNT) {
        jit_fail(a, VOX_INVALID_ARG, "jit: vector instruction %d does not exist", (int)op);
        return;
    }
    const struct jit_vop_enc *e = &jit_vops[op];
    static const char *const form_names[] = {"rrr", "rrm", "rr", "rm", "mr", "mrr", "rri"};
    if (!(e->forms & form)) {
        jit_fail(a, VOX_INVALID_ARG, "jit: %s has no %s form", e->name,
                 form_names[__builtin_ctz((unsigned)form)]);
        return;
    }
    bool store = form == FM_MR || form == FM_MRR;
    int32_t reg = dst & 0xFFF;
    struct jit_vinsn v = {.opcode = store ? e->store : e->opcode, .map = e->map, .pp = e->pp,
                          .aaa = (dst >> 12) & 7, .z = (dst >> 15) & 1, .mem = m,
                          .bcst = m ? m->bcst != 0 : 0};
    if ((dst & 0x8000) && (store || !v.aaa)) {
        jit_fail(a, VOX_INVALID_ARG, "jit: %s: zeroing needs an opmask and a register "
                 "destination", e->name);
        return;
    }
    if (!jit_vec_check(a, e->name, reg, 0))
        return;
    v.l = jit_vl(reg);
    if (vvvv && !jit_vec_check(a, e->name, vvvv, jit_class(reg)))
        return;
    int rm_cls = (e->flags & V_SRCX) ? VOX_JIT_CLASS_XMM : jit_class(reg);
    if (rm && !jit_vec_check(a, e->name, rm, rm_cls))
        return;
    if (m && !jit_mem_check(a, m, false, e->name))
        return;
    if (op == VOX_JIT_VMOVSS && v.l != 0) {
        jit_fail(a, VOX_INVALID_ARG, "jit: vmovss takes an xmm register");
        return;
    }
    jit_vpick(a, e, &v, reg, vvvv, rm);
}

void vox_jit_vrri(struct vox_jit_asm *a, enum vox_jit_vop op, int32_t dst, int32_t src, int imm)
{
    if (!jit_begin(a))
        return;
    if ((unsigned)op >= VOX_JIT_VOP_COUNT || !(jit_vops[op].forms & FM_RRI)) {
        jit_fail(a, VOX_INVALID_ARG, "jit: vector instruction %d has no rri form", (int)op);
        return;
    }
    const struct jit_vop_enc *e = &jit_vops[op];
    bool extract = op != VOX_JIT_VPERMILPS && op != VOX_JIT_VPSLLD;
    int32_t want_src = !extract                    ? jit_class(dst)
                       : op == VOX_JIT_VEXTRACTF128 ? VOX_JIT_CLASS_YMM
                                                    : VOX_JIT_CLASS_ZMM;
    int32_t want_dst = extract ? want_src - 0x100 : want_src;
    if (imm < 0 || imm > 255 || (dst & 0xF000) || !jit_vec_check(a, e->name, src, want_src) ||
        !jit_vec_check(a, e->name, dst, want_dst)) {
        if (vox_jit_asm_status(a) == VOX_OK)
            jit_fail(a, VOX_INVALID_ARG, "jit: %s: expected an unmasked destination and an "
                     "imm8 in 0..255, got %d", e->name, imm);
        return;
    }
    /* The extracts encode the source in ModRM.reg and the destination in ModRM.rm; vpslld
     * the destination in vvvv and the opcode extension /6 in ModRM.reg. */
    struct jit_vinsn v = {.opcode = e->opcode, .map = e->map, .pp = e->pp, .l = jit_vl(src),
                          .has_imm = true, .imm = (uint8_t)imm};
    if (op == VOX_JIT_VPSLLD)
        jit_vpick(a, e, &v, VOX_JIT_XMM(6), dst, src);
    else
        jit_vpick(a, e, &v, extract ? src : dst, VOX_JIT_NONE, extract ? dst : src);
}

void vox_jit_vrrr(struct vox_jit_asm *a, enum vox_jit_vop op, int32_t dst, int32_t src1,
                  int32_t src2)
{
    jit_vemit(a, op, FM_RRR, dst, src1 ? src1 : -1, src2 ? src2 : -1, NULL);
}

void vox_jit_vrrm(struct vox_jit_asm *a, enum vox_jit_vop op, int32_t dst, int32_t src1,
                  struct vox_jit_mem m)
{
    jit_vemit(a, op, FM_RRM, dst, src1 ? src1 : -1, VOX_JIT_NONE, &m);
}

void vox_jit_vrr(struct vox_jit_asm *a, enum vox_jit_vop op, int32_t dst, int32_t src)
{
    jit_vemit(a, op, FM_RR, dst, VOX_JIT_NONE, src ? src : -1, NULL);
}

void vox_jit_vrm(struct vox_jit_asm *a, enum vox_jit_vop op, int32_t dst, struct vox_jit_mem m)
{
    jit_vemit(a, op, FM_RM, dst, VOX_JIT_NONE, VOX_JIT_NONE, &m);
}

void vox_jit_vmr(struct vox_jit_asm *a, enum vox_jit_vop op, struct vox_jit_mem m, int32_t src)
{
    jit_vemit(a, op, FM_MR, src, VOX_JIT_NONE, VOX_JIT_NONE, &m);
}

void vox_jit_vmrr(struct vox_jit_asm *a, enum vox_jit_vop op, struct vox_jit_mem m,
                  int32_t mask, int32_t src)
{
    jit_vemit(a, op, FM_MRR, src, mask ? mask : -1, VOX_JIT_NONE, &m);
}

/* ---- gathers, opmask moves, vzeroupper ------------------------------------------------- */

void vox_jit_vgatherdps(struct vox_jit_asm *a, int32_t dst, struct vox_jit_mem m, int32_t mask)
{
    if (!jit_begin(a) || !jit_vec_check(a, "vgatherdps", dst, 0) ||
        !jit_mem_check(a, &m, true, "vgatherdps"))
        return;
    bool evex = jit_is(mask, VOX_JIT_CLASS_K);
    if (jit_class(m.index) != jit_class(dst) || m.bcst || (evex && jit_num(mask) == 0) ||
        (!evex && !jit_vec_check(a, "vgatherdps", mask, jit_class(dst)))) {
        jit_fail(a, VOX_INVALID_ARG, "jit: vgatherdps: the index must match the destination's "
                 "width and the mask be a matching vector (VEX) or k1-k7 (EVEX), no broadcast");
        return;
    }
    if (dst == m.index || dst == mask || m.index == mask) {
        jit_fail(a, VOX_INVALID_ARG, "jit: vgatherdps: destination, index and mask must be "
                 "different registers");
        return;
    }
    struct jit_vinsn v = {.opcode = 0x92, .map = 2, .pp = 1, .l = jit_vl(dst),
                          .reg = jit_num(dst), .vvvv = evex ? -1 : jit_num(mask), .mem = &m,
                          .vsib = true, .aaa = evex ? jit_num(mask) : 0, .n = 4};
    bool hi = jit_num(dst) >= 16 || jit_num(m.index) >= 16 || (!evex && jit_num(mask) >= 16);
    if (!evex && (v.l == 2 || hi)) {
        jit_fail(a, VOX_UNSUPPORTED, "jit: vgatherdps with zmm or registers >= 16 needs an "
                 "opmask (EVEX) rather than a vector mask");
        return;
    }
    if (evex)
        jit_evex_emit(a, &v);
    else
        jit_vex_emit(a, &v);
}

void vox_jit_kmovw(struct vox_jit_asm *a, int32_t dst, int32_t src)
{
    if (!jit_begin(a))
        return;
    bool dk = jit_is(dst, VOX_JIT_CLASS_K), sk = jit_is(src, VOX_JIT_CLASS_K);
    bool dr = jit_is(dst, VOX_JIT_CLASS_GPR32), sr = jit_is(src, VOX_JIT_CLASS_GPR32);
    if (!((dk && (sk || sr)) || (dr && sk))) {
        char b1[16], b2[16];
        jit_fail(a, VOX_INVALID_ARG, "jit: kmovw %s, %s: expected k,k / k,r32 / r32,k",
                 jit_reg_name(dst, b1), jit_reg_name(src, b2));
        return;
    }
    uint8_t opcode = sk && dk ? 0x90 : dk ? 0x92 : 0x93;
    struct jit_vinsn v = {.opcode = opcode, .map = 1, .reg = jit_num(dst), .vvvv = -1,
                          .rm = jit_num(src)};
    jit_vex_emit(a, &v);
}

void vox_jit_vzeroupper(struct vox_jit_asm *a)
{
    if (!jit_begin(a))
        return;
    jit_put(a, 0xC5);
    jit_put(a, 0xF8);
    jit_put(a, 0x77);
}
