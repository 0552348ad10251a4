/*
 * jit/enc_gpr.c: general-purpose instructions (legacy encoding with REX), jumps and labels.
 *
 * Key idea: one table row per mnemonic holds the opcode of each operand form (r/m <- reg,
 * reg <- r/m, the immediate group and its /digit), so the form functions below serve every
 * mnemonic; 0 marks a form that does not exist. Opcodes above 0xFF carry their 0F escape.
 * REX is W (64-bit operand) + R (ModRM.reg bit 3) + X (SIB.index bit 3) + B (rm/base bit 3)
 * and is omitted when all four are zero. Jumps to bound labels (backward) use rel8 when the
 * target is in reach; forward jumps always use rel32 so no relaxation pass is needed.
 */
#include "jit/internal.h"

enum jit_imm_kind { IMM_NONE, IMM_ALU, IMM_MOV, IMM_TEST, IMM_IMUL, IMM_SHIFT };

struct jit_gop_enc {
    const char *name;
    uint16_t rr;       /* ModRM.rm = dst, ModRM.reg = src (or reg = dst when rr_reg_dst) */
    uint16_t rm;       /* reg <- [mem] */
    uint16_t mr;       /* [mem] <- reg */
    uint8_t rr_reg_dst, imm, digit;
};

static const struct jit_gop_enc jit_gops[VOX_JIT_GOP_COUNT] = {
    [VOX_JIT_ADD] = {"add", 0x01, 0x03, 0x01, 0, IMM_ALU, 0},
    [VOX_JIT_OR] = {"or", 0x09, 0x0B, 0x09, 0, IMM_ALU, 1},
    [VOX_JIT_AND] = {"and", 0x21, 0x23, 0x21, 0, IMM_ALU, 4},
    [VOX_JIT_SUB] = {"sub", 0x29, 0x2B, 0x29, 0, IMM_ALU, 5},
    [VOX_JIT_XOR] = {"xor", 0x31, 0x33, 0x31, 0, IMM_ALU, 6},
    [VOX_JIT_CMP] = {"cmp", 0x39, 0x3B, 0x39, 0, IMM_ALU, 7},
    [VOX_JIT_MOV] = {"mov", 0x89, 0x8B, 0x89, 0, IMM_MOV, 0},
    [VOX_JIT_TEST] = {"test", 0x85, 0x85, 0x85, 0, IMM_TEST, 0},
    [VOX_JIT_IMUL] = {"imul", 0x0FAF, 0x0FAF, 0, 1, IMM_IMUL, 0},
    [VOX_JIT_LEA] = {"lea", 0, 0x8D, 0, 0, IMM_NONE, 0},
    [VOX_JIT_SHL] = {"shl", 0, 0, 0, 0, IMM_SHIFT, 4},
    [VOX_JIT_SHR] = {"shr", 0, 0, 0, 0, IMM_SHIFT, 5},
    [VOX_JIT_SAR] = {"sar", 0, 0, 0, 0, IMM_SHIFT, 7},
};

struct jit_uop_enc {
    const char *name;
    uint8_t opcode, digit, only64;
};

static const struct jit_uop_enc jit_uops[VOX_JIT_UOP_COUNT] = {
    [VOX_JIT_INC] = {"inc", 0xFF, 0, 0},  [VOX_JIT_DEC] = {"dec", 0xFF, 1, 0},
    [VOX_JIT_NEG] = {"neg", 0xF7, 3, 0},  [VOX_JIT_NOT] = {"not", 0xF7, 2, 0},
    [VOX_JIT_PUSH] = {"push", 0x50, 0, 1}, [VOX_JIT_POP] = {"pop", 0x58, 0, 1},
    [VOX_JIT_CALL] = {"call", 0xFF, 2, 1},
};

/* ---- helpers --------------------------------------------------------------------------- */

static void jit_rex(struct vox_jit_asm *a, int w, int reg, int x, int b)
{
    unsigned rex = 0x40u | (unsigned)(w << 3) | (unsigned)(((reg >> 3) & 1) << 2) |
                   (unsigned)(x << 1) | (unsigned)b;
    if (rex != 0x40u)
        jit_put(a, rex);
}

static void jit_opcode(struct vox_jit_asm *a, uint16_t op)
{
    if (op > 0xFF)
        jit_put(a, op >> 8);
    jit_put(a, op & 0xFF);
}

static int jit_w(int32_t r)
{
    return jit_class(r) == VOX_JIT_CLASS_GPR64;
}

static void jit_enc_rr(struct vox_jit_asm *a, int w, uint16_t op, int reg, int rm)
{
    jit_rex(a, w, reg, 0, (rm >> 3) & 1);
    jit_opcode(a, op);
    jit_modrm_reg(a, reg, rm);
}

static void jit_enc_rm(struct vox_jit_asm *a, int w, uint16_t op, int reg,
                       const struct vox_jit_mem *m, int trailing)
{
    jit_rex(a, w, reg, jit_mem_x(m), jit_mem_b(m));
    jit_opcode(a, op);
    jit_modrm_mem(a, reg, m, 1, trailing);
}

static bool jit_gpr_check(struct vox_jit_asm *a, const char *insn, int32_t r, bool only64)
{
    if (only64 ? jit_is(r, VOX_JIT_CLASS_GPR64) : jit_is_gpr(r))
        return true;
    char b[16];
    jit_fail(a, VOX_INVALID_ARG, "jit: %s: operand %s is not a %s register", insn,
             jit_reg_name(r, b), only64 ? "64-bit general" : "general-purpose");
    return false;
}

static bool jit_form_check(struct vox_jit_asm *a, enum vox_jit_gop op, bool has,
                           const char *form)
{
    if ((unsigned)op >= VOX_JIT_GOP_COUNT) {
        jit_fail(a, VOX_INVALID_ARG, "jit: GPR instruction %d does not exist", (int)op);
        return false;
    }
    if (!has)
        jit_fail(a, VOX_INVALID_ARG, "jit: %s has no %s form", jit_gops[op].name, form);
    return has;
}

/* Writes an immediate of `bytes` bytes. */
static void jit_imm(struct vox_jit_asm *a, int64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        jit_put(a, (unsigned)((uint64_t)v >> (8 * i)) & 0xFF);
}

/* The immediate of a ri/mi form: checks its range, returns the opcode, /digit and size. */
static bool jit_imm_form(struct vox_jit_asm *a, const struct jit_gop_enc *e, int bits,
                         int64_t imm, uint16_t *op_out, int *size_out)
{
    bool fits8 = imm >= -128 && imm <= 127;
    bool fits = bits == 32 ? imm >= INT32_MIN && imm <= UINT32_MAX
                           : imm >= INT32_MIN && imm <= INT32_MAX;
    if (e->imm == IMM_SHIFT) {
        fits = imm >= 0 && imm < bits;
        *op_out = 0xC1, *size_out = 1;
    } else if (e->imm == IMM_ALU) {
        fits8 = bits == 32 ? (int32_t)(uint32_t)imm >= -128 && (int32_t)(uint32_t)imm <= 127
                           : fits8;
        *op_out = fits8 ? 0x83 : 0x81, *size_out = fits8 ? 1 : 4;
    } else if (e->imm == IMM_TEST) {
        *op_out = 0xF7, *size_out = 4;
    } else {
        *op_out = 0xC7, *size_out = 4; /* IMM_MOV to memory */
    }
    if (!fits)
        jit_fail(a, VOX_INVALID_ARG, "jit: %s: immediate %lld does not fit the %d-bit form",
                 e->name, (long long)imm, bits);
    return fits;
}

/* ---- two-operand forms ----------------------------------------------------------------- */

void vox_jit_op_rr(struct vox_jit_asm *a, enum vox_jit_gop op, int32_t dst, int32_t src)
{
    if (!jit_begin(a) || !jit_form_check(a, op, op < VOX_JIT_GOP_COUNT && jit_gops[op].rr, "rr"))
        return;
    const struct jit_gop_enc *e = &jit_gops[op];
    if (!jit_gpr_check(a, e->name, dst, false) || !jit_gpr_check(a, e->name, src, false))
        return;
    if (jit_class(dst) != jit_class(src)) {
        char b1[16], b2[16];
        jit_fail(a, VOX_INVALID_ARG, "jit: %s %s, %s: operand sizes differ", e->name,
                 jit_reg_name(dst, b1), jit_reg_name(src, b2));
        return;
    }
    if (e->rr_reg_dst)
        jit_enc_rr(a, jit_w(dst), e->rr, jit_num(dst), jit_num(src));
    else
        jit_enc_rr(a, jit_w(dst), e->rr, jit_num(src), jit_num(dst));
}

static void jit_mov_ri(struct vox_jit_asm *a, int32_t dst, int64_t imm)
{
    int n = jit_num(dst);
    if (jit_w(dst) && (imm < 0 || imm > UINT32_MAX)) {
        if (imm >= INT32_MIN && imm <= INT32_MAX) { /* sign-extended simm32: C7 /0 */
            jit_enc_rr(a, 1, 0xC7, 0, n);
            jit_imm(a, imm, 4);
        } else {                /* movabs */
            jit_rex(a, 1, 0, 0, (n >> 3) & 1);
            jit_put(a, 0xB8u + (unsigned)(n & 7));
            jit_imm(a, imm, 8);
        }
        return;
    }
    if (!jit_w(dst) && (imm < INT32_MIN || imm > UINT32_MAX)) {
        jit_fail(a, VOX_INVALID_ARG, "jit: mov: immediate %lld does not fit 32 bits",
                 (long long)imm);
        return;
    }
    jit_rex(a, 0, 0, 0, (n >> 3) & 1); /* mov r32, imm32 (zero-extends into the r64) */
    jit_put(a, 0xB8u + (unsigned)(n & 7));
    jit_imm(a, imm, 4);
}

void vox_jit_op_ri(struct vox_jit_asm *a, enum vox_jit_gop op, int32_t dst, int64_t imm)
{
    if (!jit_begin(a) ||
        !jit_form_check(a, op, op < VOX_JIT_GOP_COUNT && jit_gops[op].imm != IMM_NONE, "ri"))
        return;
    const struct jit_gop_enc *e = &jit_gops[op];
    if (!jit_gpr_check(a, e->name, dst, false))
        return;
    if (op == VOX_JIT_MOV) {
        jit_mov_ri(a, dst, imm);
        return;
    }
    if (op == VOX_JIT_IMUL) {
        if (imm < INT32_MIN || imm > INT32_MAX) {
            jit_fail(a, VOX_INVALID_ARG, "jit: imul: immediate %lld does not fit 32 bits",
                     (long long)imm);
            return;
        }
        vox_jit_imul_rri(a, dst, dst, (int32_t)imm);
        return;
    }
    uint16_t opc;
    int size;
    if (!jit_imm_form(a, e, jit_w(dst) ? 64 : 32, imm, &opc, &size))
        return;
    jit_enc_rr(a, jit_w(dst), opc, e->digit, jit_num(dst));
    jit_imm(a, imm, size);
}

void vox_jit_op_rm(struct vox_jit_asm *a, enum vox_jit_gop op, int32_t dst,
                   struct vox_jit_mem m)
{
    if (!jit_begin(a) || !jit_form_check(a, op, op < VOX_JIT_GOP_COUNT && jit_gops[op].rm, "rm"))
        return;
    const struct jit_gop_enc *e = &jit_gops[op];
    if (!jit_gpr_check(a, e->name, dst, false) || !jit_mem_check(a, &m, false, e->name))
        return;
    jit_enc_rm(a, jit_w(dst), e->rm, jit_num(dst), &m, 0);
}

void vox_jit_op_mr(struct vox_jit_asm *a, enum vox_jit_gop op, struct vox_jit_mem m,
                   int32_t src)
{
    if (!jit_begin(a) || !jit_form_check(a, op, op < VOX_JIT_GOP_COUNT && jit_gops[op].mr, "mr"))
        return;
    const struct jit_gop_enc *e = &jit_gops[op];
    if (!jit_gpr_check(a, e->name, src, false) || !jit_mem_check(a, &m, false, e->name))
        return;
    jit_enc_rm(a, jit_w(src), e->mr, jit_num(src), &m, 0);
}

void vox_jit_op_mi(struct vox_jit_asm *a, enum vox_jit_gop op, struct vox_jit_mem m, int bits,
                   int32_t imm)
{
    bool has = op < VOX_JIT_GOP_COUNT && jit_gops[op].imm != IMM_NONE &&
               jit_gops[op].imm != IMM_IMUL;
    if (!jit_begin(a) || !jit_form_check(a, op, has, "mi"))
        return;
    const struct jit_gop_enc *e = &jit_gops[op];
    if (bits != 32 && bits != 64) {
        jit_fail(a, VOX_INVALID_ARG, "jit: %s: operand size %d, expected 32 or 64", e->name,
                 bits);
        return;
    }
    uint16_t opc;
    int size;
    if (!jit_mem_check(a, &m, false, e->name) || !jit_imm_form(a, e, bits, imm, &opc, &size))
        return;
    jit_enc_rm(a, bits == 64, opc, e->digit, &m, size);
    jit_imm(a, imm, size);
}

void vox_jit_imul_rri(struct vox_jit_asm *a, int32_t dst, int32_t src, int32_t imm)
{
    if (!jit_begin(a) || !jit_gpr_check(a, "imul", dst, false) ||
        !jit_gpr_check(a, "imul", src, false))
        return;
    if (jit_class(dst) != jit_class(src)) {
        jit_fail(a, VOX_INVALID_ARG, "jit: imul: operand sizes differ");
        return;
    }
    bool fits8 = imm >= -128 && imm <= 127;
    jit_enc_rr(a, jit_w(dst), fits8 ? 0x6B : 0x69, jit_num(dst), jit_num(src));
    jit_imm(a, imm, fits8 ? 1 : 4);
}

/* ---- one-operand forms, ret, jumps ----------------------------------------------------- */

void vox_jit_op_r(struct vox_jit_asm *a, enum vox_jit_uop op, int32_t reg)
{
    if (!jit_begin(a))
        return;
    if ((unsigned)op >= VOX_JIT_UOP_COUNT) {
        jit_fail(a, VOX_INVALID_ARG, "jit: GPR instruction %d does not exist", (int)op);
        return;
    }
    const struct jit_uop_enc *e = &jit_uops[op];
    if (!jit_gpr_check(a, e->name, reg, e->only64))
        return;
    int n = jit_num(reg);
    if (op == VOX_JIT_PUSH || op == VOX_JIT_POP) {
        jit_rex(a, 0, 0, 0, (n >> 3) & 1);
        jit_put(a, e->opcode + (unsigned)(n & 7));
    } else {
        jit_enc_rr(a, op == VOX_JIT_CALL ? 0 : jit_w(reg), e->opcode, e->digit, n);
    }
}

void vox_jit_ret(struct vox_jit_asm *a)
{
    if (jit_begin(a))
        jit_put(a, 0xC3);
}

void vox_jit_prefetch(struct vox_jit_asm *a, struct vox_jit_mem m, int hint)
{
    if (!jit_begin(a))
        return;
    if (hint < 0 || hint > 3) {
        jit_fail(a, VOX_INVALID_ARG, "jit: prefetch: hint %d is not 0..3", hint);
        return;
    }
    if (jit_mem_check(a, &m, false, "prefetch"))
        jit_enc_rm(a, 0, 0x0F18, hint, &m, 0);
}

/* op8/op32: the rel8 and rel32 opcodes (op32 > 0xFF carries its 0F escape). */
static void jit_jump(struct vox_jit_asm *a, uint16_t op8, uint16_t op32, int32_t label)
{
    if (!jit_begin(a) || !jit_label_check(a, label, "jump"))
        return;
    const struct jit_label *l = &a->labels[label];
    if (l->state == JIT_LABEL_POOL) {
        jit_fail(a, VOX_INVALID_ARG, "jit: jump to constant label %d", (int)label);
        return;
    }
    int64_t rel8 = l->state == JIT_LABEL_CODE ? l->pos - ((int64_t)a->size + 2) : 1000;
    if (rel8 >= -128 && rel8 <= 127) {
        jit_put(a, op8);
        jit_put(a, (uint8_t)(int8_t)rel8);
        return;
    }
    jit_opcode(a, op32);
    jit_fixup_add(a, label, 0, 0);
    jit_put32(a, 0);
}

void vox_jit_jcc(struct vox_jit_asm *a, enum vox_jit_cc cc, int32_t label)
{
    if ((unsigned)cc > VOX_JIT_CC_G) {
        jit_fail(a, VOX_INVALID_ARG, "jit: condition code %d does not exist", (int)cc);
        return;
    }
    jit_jump(a, (uint16_t)(0x70 + cc), (uint16_t)(0x0F80 + cc), label);
}

void vox_jit_jmp(struct vox_jit_asm *a, int32_t label)
{
    jit_jump(a, 0xEB, 0xE9, label);
}
