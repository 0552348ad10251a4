/*
 * vox/jit.h: an x86-64 machine-code assembler for the loop-nest code generator.
 *
 * The subset a loop nest needs: GPR moves, arithmetic, compares and jumps; VEX-encoded
 * AVX/AVX2/FMA on xmm/ymm0-15; EVEX-encoded AVX-512 on zmm0-31 with opmasks, zeroing,
 * embedded broadcast and compressed disp8*N. Every addressing form is supported:
 * [base], [base+disp8/32], [base+index*scale+disp], [index*scale+disp32], VSIB for gathers and
 * RIP-relative references to labels or to a constant pool placed after the code.
 *
 * Use:
 *     struct vox_jit_asm *a;
 *     vox_jit_asm_create(ctx, &a);
 *     int32_t top = vox_jit_label_new(a);
 *     vox_jit_label_bind(a, top);
 *     vox_jit_vrrm(a, VOX_JIT_VFMADD231PS, VOX_JIT_ZMM(0), VOX_JIT_ZMM(1),
 *                  vox_jit_mem_bcst(vox_jit_mem_b(VOX_JIT_RSI, 0)));
 *     vox_jit_op_ri(a, VOX_JIT_SUB, VOX_JIT_RDX, 1);
 *     vox_jit_jcc(a, VOX_JIT_CC_NE, top);
 *     vox_jit_ret(a);
 *     struct vox_jit_code code;
 *     if (vox_jit_asm_finalize(a, &code) != VOX_OK) ...   (the one error check)
 *     ((void (*)(void))code.entry)();
 *     vox_jit_code_free(&code);
 *     vox_jit_asm_destroy(a);
 *
 * Errors latch (as in sljit): the first bad call (a register of the wrong class, zmm16 in a
 * VEX-only instruction, rsp as an index, an out-of-memory buffer) records a status and a
 * message; every later call does nothing, and link/finalize return that status. No emit
 * function allocates per instruction; the buffer grows geometrically.
 *
 * Registers are small integers: a class in bits 8-11 and a number in bits 0-4. Opmask
 * decorations are or-ed into a vector register: VOX_JIT_ZMM(1) | VOX_JIT_KMASK(2) | VOX_JIT_ZERO
 * is zmm1{k2}{z}. For stores the mask decorates the source register (merging only).
 */
#ifndef VOX_JIT_H
#define VOX_JIT_H

#include "vox/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- registers ------------------------------------------------------------------------- */

#define VOX_JIT_CLASS_GPR64 0x100
#define VOX_JIT_CLASS_GPR32 0x200
#define VOX_JIT_CLASS_XMM 0x300
#define VOX_JIT_CLASS_YMM 0x400
#define VOX_JIT_CLASS_ZMM 0x500
#define VOX_JIT_CLASS_K 0x600
#define VOX_JIT_CLASS_RIP 0x700
#define VOX_JIT_CLASS_MASK 0xF00

#define VOX_JIT_GPR64(n) (VOX_JIT_CLASS_GPR64 | (n))
#define VOX_JIT_GPR32(n) (VOX_JIT_CLASS_GPR32 | (n))
#define VOX_JIT_XMM(n) (VOX_JIT_CLASS_XMM | (n))
#define VOX_JIT_YMM(n) (VOX_JIT_CLASS_YMM | (n))
#define VOX_JIT_ZMM(n) (VOX_JIT_CLASS_ZMM | (n))
#define VOX_JIT_K(n) (VOX_JIT_CLASS_K | (n))
#define VOX_JIT_NONE 0 /* no register (a memory operand without base or index) */
#define VOX_JIT_RIP VOX_JIT_CLASS_RIP

/* Decorations of a vector register: write under opmask k1-k7, zero the masked-off lanes. */
#define VOX_JIT_KMASK(k) ((k) << 12)
#define VOX_JIT_ZERO 0x8000

enum {
    VOX_JIT_RAX = VOX_JIT_CLASS_GPR64, VOX_JIT_RCX, VOX_JIT_RDX, VOX_JIT_RBX, VOX_JIT_RSP,
    VOX_JIT_RBP, VOX_JIT_RSI, VOX_JIT_RDI, VOX_JIT_R8, VOX_JIT_R9, VOX_JIT_R10, VOX_JIT_R11,
    VOX_JIT_R12, VOX_JIT_R13, VOX_JIT_R14, VOX_JIT_R15,
    VOX_JIT_EAX = VOX_JIT_CLASS_GPR32, VOX_JIT_ECX, VOX_JIT_EDX, VOX_JIT_EBX, VOX_JIT_ESP,
    VOX_JIT_EBP, VOX_JIT_ESI, VOX_JIT_EDI, VOX_JIT_R8D, VOX_JIT_R9D, VOX_JIT_R10D, VOX_JIT_R11D,
    VOX_JIT_R12D, VOX_JIT_R13D, VOX_JIT_R14D, VOX_JIT_R15D
};

/* ---- memory operands ------------------------------------------------------------------- */

/* [base + index*scale + disp]. base: a GPR64, VOX_JIT_RIP (then `label` is the target and
 * disp is added to its address) or VOX_JIT_NONE. index: a GPR64 other than rsp, an
 * xmm/ymm/zmm for gathers (VSIB), or VOX_JIT_NONE. scale: 1, 2, 4 or 8. bcst: EVEX embedded
 * broadcast of one element ({1to16} for zmm). */
struct vox_jit_mem {
    int32_t base, index, scale, disp;
    int32_t label;
    int32_t bcst;
};

static inline struct vox_jit_mem vox_jit_mem_b(int32_t base, int32_t disp)
{
    struct vox_jit_mem m = {base, VOX_JIT_NONE, 1, disp, -1, 0};
    return m;
}

static inline struct vox_jit_mem vox_jit_mem_bis(int32_t base, int32_t index, int32_t scale,
                                                 int32_t disp)
{
    struct vox_jit_mem m = {base, index, scale, disp, -1, 0};
    return m;
}

/* [rip + (address of label) + disp]: a code label or a constant from vox_jit_const. */
static inline struct vox_jit_mem vox_jit_mem_rip(int32_t label, int32_t disp)
{
    struct vox_jit_mem m = {VOX_JIT_RIP, VOX_JIT_NONE, 1, disp, label, 0};
    return m;
}

static inline struct vox_jit_mem vox_jit_mem_bcst(struct vox_jit_mem m)
{
    m.bcst = 1;
    return m;
}

/* ---- the assembler --------------------------------------------------------------------- */

struct vox_jit_asm;

/* Executable code: `size` bytes at `entry`, mapped read+execute (never writable and
 * executable at once). Constants follow the code inside the same mapping. */
struct vox_jit_code {
    void *entry;
    size_t size;      /* code and constant pool, bytes */
    void *map;        /* the mapping, for vox_jit_code_free */
    size_t map_bytes;
};

/* Creates an empty assembler; the context must outlive it. */
enum vox_status vox_jit_asm_create(struct vox_ctx *ctx, struct vox_jit_asm **asm_out);
void vox_jit_asm_destroy(struct vox_jit_asm *a);
/* Empties the assembler (code, labels, constants, error), keeping its buffers. */
void vox_jit_asm_reset(struct vox_jit_asm *a);

/* The latched status (VOX_OK while nothing failed); its message is in vox_jit_asm_error. */
enum vox_status vox_jit_asm_status(const struct vox_jit_asm *a);
const char *vox_jit_asm_error(const struct vox_jit_asm *a);
/* The offset of the next instruction, bytes. */
size_t vox_jit_asm_offset(const struct vox_jit_asm *a);

/* Resolves jumps and RIP references and appends the constant pool (64-byte aligned, padded
 * with int3). *bytes_out stays valid until the assembler is reset or destroyed. After link,
 * emitting is an error; link again is a no-op. Reports the latched error on the context. */
enum vox_status vox_jit_asm_link(struct vox_jit_asm *a, const uint8_t **bytes_out,
                                 size_t *size_out);
/* Links, then copies the bytes to fresh pages: mapped read-write, filled, then made
 * read+execute. Free with vox_jit_code_free. */
enum vox_status vox_jit_asm_finalize(struct vox_jit_asm *a, struct vox_jit_code *code_out);
/* Unmaps the code and zeroes *code; a zeroed struct is left alone. */
void vox_jit_code_free(struct vox_jit_code *code);

/* ---- labels and constants -------------------------------------------------------------- */

/* A new unbound label id (>= 0), or -1 once an error is latched. */
int32_t vox_jit_label_new(struct vox_jit_asm *a);
/* Binds the label to the current offset; binding twice is an error. */
void vox_jit_label_bind(struct vox_jit_asm *a, int32_t label);
/* A bound label's offset from the code start (valid after link), or -1. */
int64_t vox_jit_label_offset(const struct vox_jit_asm *a, int32_t label);
/* Copies `bytes` of data into the constant pool, aligned to `align` (power of two <= 64);
 * returns a label for vox_jit_mem_rip, or -1 once an error is latched. */
int32_t vox_jit_const(struct vox_jit_asm *a, const void *data, size_t bytes, size_t align);

/* ---- general-purpose instructions ------------------------------------------------------ */

/* Two-operand GPR instructions. Forms: rr = op reg, reg; ri = op reg, imm; rm = op reg, [mem];
 * mr = op [mem], reg; mi = op [mem], imm. The operand size follows the register class (GPR64
 * or GPR32); immediates other than mov's are sign-extended 32-bit values. */
enum vox_jit_gop {
    VOX_JIT_ADD, VOX_JIT_OR, VOX_JIT_AND, VOX_JIT_SUB, VOX_JIT_XOR, VOX_JIT_CMP,
    VOX_JIT_MOV,   /* ri picks the shortest of mov r32,imm32 / mov r64,simm32 / movabs */
    VOX_JIT_TEST,
    VOX_JIT_IMUL,  /* rr, rm, ri (dst = dst * imm) */
    VOX_JIT_LEA,   /* rm only */
    VOX_JIT_SHL, VOX_JIT_SHR, VOX_JIT_SAR, /* ri only, 0 <= imm < operand bits */
    VOX_JIT_GOP_COUNT
};

void vox_jit_op_rr(struct vox_jit_asm *a, enum vox_jit_gop op, int32_t dst, int32_t src);
void vox_jit_op_ri(struct vox_jit_asm *a, enum vox_jit_gop op, int32_t dst, int64_t imm);
void vox_jit_op_rm(struct vox_jit_asm *a, enum vox_jit_gop op, int32_t dst,
                   struct vox_jit_mem m);
void vox_jit_op_mr(struct vox_jit_asm *a, enum vox_jit_gop op, struct vox_jit_mem m,
                   int32_t src);
/* op [mem], simm32 with a 64-bit (bits = 64) or 32-bit (bits = 32) operand. */
void vox_jit_op_mi(struct vox_jit_asm *a, enum vox_jit_gop op, struct vox_jit_mem m, int bits,
                   int32_t imm);
/* dst = src * imm */
void vox_jit_imul_rri(struct vox_jit_asm *a, int32_t dst, int32_t src, int32_t imm);

enum vox_jit_uop { VOX_JIT_INC, VOX_JIT_DEC, VOX_JIT_NEG, VOX_JIT_NOT, VOX_JIT_PUSH,
                   VOX_JIT_POP, VOX_JIT_CALL, VOX_JIT_UOP_COUNT };
/* One-register instructions; push, pop and call take a GPR64. */
void vox_jit_op_r(struct vox_jit_asm *a, enum vox_jit_uop op, int32_t reg);
void vox_jit_ret(struct vox_jit_asm *a);
/* Software prefetch of the line holding [mem]: hint 0 prefetchnta, 1 prefetcht0, 2 prefetcht1,
 * 3 prefetcht2 (0F 18 /hint). */
void vox_jit_prefetch(struct vox_jit_asm *a, struct vox_jit_mem m, int hint);

/* Condition codes, in the encoding's order (tttn). */
enum vox_jit_cc {
    VOX_JIT_CC_O, VOX_JIT_CC_NO, VOX_JIT_CC_B, VOX_JIT_CC_AE, VOX_JIT_CC_E, VOX_JIT_CC_NE,
    VOX_JIT_CC_BE, VOX_JIT_CC_A, VOX_JIT_CC_S, VOX_JIT_CC_NS, VOX_JIT_CC_P, VOX_JIT_CC_NP,
    VOX_JIT_CC_L, VOX_JIT_CC_GE, VOX_JIT_CC_LE, VOX_JIT_CC_G
};
/* Jumps to a label: rel8 when the label is bound and within reach, rel32 otherwise. */
void vox_jit_jcc(struct vox_jit_asm *a, enum vox_jit_cc cc, int32_t label);
void vox_jit_jmp(struct vox_jit_asm *a, int32_t label);

/* ---- vector instructions (VEX or EVEX, chosen from the operands) ----------------------- */

/* EVEX is used when an operand is a zmm, a register >= 16, a masked/zeroing destination or
 * an embedded broadcast; VEX otherwise. An instruction that lacks the needed encoding is an
 * error (VOX_UNSUPPORTED). */
enum vox_jit_vop {
    VOX_JIT_VMOVUPS, VOX_JIT_VMOVAPS,   /* vrr, vrm (load), vmr (store) */
    VOX_JIT_VMASKMOVPS,                 /* VEX only: vrrm (load, vvvv = mask), vmrr (store) */
    VOX_JIT_VBROADCASTSS,               /* vrm, vrr (source xmm) */
    VOX_JIT_VPBROADCASTD,               /* vrm, vrr (source xmm) */
    VOX_JIT_VFMADD231PS, VOX_JIT_VMULPS, VOX_JIT_VADDPS, VOX_JIT_VSUBPS, VOX_JIT_VMAXPS,
    VOX_JIT_VMINPS, VOX_JIT_VXORPS, VOX_JIT_VANDPS,  /* vrrr, vrrm */
    VOX_JIT_VFMADD213PS,                /* vrrr, vrrm: dst = dst * src1 + src2 */
    VOX_JIT_VDIVPS,                     /* vrrr, vrrm: dst = src1 / src2 */
    VOX_JIT_VPADDD,                     /* vrrr, vrrm */
    VOX_JIT_VPCMPEQD,                   /* VEX only: vrrr, vrrm */
    VOX_JIT_VMOVSS,                     /* xmm: vrm (load, zeroes lanes 1..), vmr (store) */
    VOX_JIT_VPERMILPS,                  /* vrri: dst = src's lanes permuted by imm8 */
    VOX_JIT_VEXTRACTF128,               /* vrri: xmm dst = 128-bit lane imm8 of ymm src
                                         * (EVEX vextractf32x4 for registers >= 16) */
    VOX_JIT_VEXTRACTF32X8,              /* EVEX only: vrri: ymm dst = 256-bit half of zmm */
    VOX_JIT_VPSLLD,                     /* vrri: dst = src's 32-bit lanes shifted left by imm8
                                         * (66 0F 72 /6 ib: dst in vvvv) */
    VOX_JIT_VOP_COUNT
};

/* dst, src1 (VEX.vvvv), src2 */
void vox_jit_vrrr(struct vox_jit_asm *a, enum vox_jit_vop op, int32_t dst, int32_t src1,
                  int32_t src2);
void vox_jit_vrrm(struct vox_jit_asm *a, enum vox_jit_vop op, int32_t dst, int32_t src1,
                  struct vox_jit_mem m);
/* dst, src (two-operand forms: moves and broadcasts) */
void vox_jit_vrr(struct vox_jit_asm *a, enum vox_jit_vop op, int32_t dst, int32_t src);
void vox_jit_vrm(struct vox_jit_asm *a, enum vox_jit_vop op, int32_t dst, struct vox_jit_mem m);
/* dst, src, imm8 (vpermilps, vpslld, and the extracts whose destination is one width
 * narrower). */
void vox_jit_vrri(struct vox_jit_asm *a, enum vox_jit_vop op, int32_t dst, int32_t src,
                  int imm);
/* Store [mem] <- src (src may carry an opmask). */
void vox_jit_vmr(struct vox_jit_asm *a, enum vox_jit_vop op, struct vox_jit_mem m, int32_t src);
/* Store [mem] <- src under a vector mask (vmaskmovps m, mask, src). */
void vox_jit_vmrr(struct vox_jit_asm *a, enum vox_jit_vop op, struct vox_jit_mem m,
                  int32_t mask, int32_t src);
/* vgatherdps dst, [base + vindex*scale + disp]: with a vector `mask` (VEX, AVX2; the mask is
 * cleared by the instruction) or an opmask k1-k7 (EVEX). dst, index and mask must differ. */
void vox_jit_vgatherdps(struct vox_jit_asm *a, int32_t dst, struct vox_jit_mem m, int32_t mask);
/* kmovw between k0-k7 and a GPR32 or another k register. */
void vox_jit_kmovw(struct vox_jit_asm *a, int32_t dst, int32_t src);
void vox_jit_vzeroupper(struct vox_jit_asm *a);

#ifdef __cplusplus
}
#endif
#endif
