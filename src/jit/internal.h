/*
 * jit/internal.h: the assembler's state and the byte-level helpers its encoder files share.
 *
 * Key idea: every emit function first calls jit_begin, which returns false once an error is
 * latched (so later calls do nothing) and otherwise guarantees JIT_MAX_INSN free bytes, so
 * the encoders then write with unchecked jit_put. Jumps and RIP-relative operands leave a
 * rel32 hole and a fix-up that vox_jit_asm_link resolves once every label is known.
 */
#ifndef VOX_JIT_INTERNAL_H
#define VOX_JIT_INTERNAL_H

#include "vox/jit.h"

#define JIT_MAX_INSN 32 /* bytes one instruction may need (15 architectural, rounded up) */

enum jit_label_state { JIT_LABEL_UNBOUND, JIT_LABEL_CODE, JIT_LABEL_POOL };

struct jit_label {
    int32_t pos;   /* code offset, or constant-pool offset for JIT_LABEL_POOL */
    int32_t state; /* enum jit_label_state */
};

/* A rel32 field at `pos` that becomes (target + addend) - (pos + 4 + trailing), where
 * `trailing` counts the immediate bytes after the field (the instruction's end is the base). */
struct jit_fixup {
    int32_t pos, label, addend, trailing;
};

struct vox_jit_asm {
    struct vox_ctx *ctx;
    uint8_t *buf;
    size_t size, cap;
    struct jit_label *labels;
    int32_t nlabels, label_cap;
    struct jit_fixup *fixups;
    int32_t nfixups, fixup_cap;
    uint8_t *pool;
    size_t pool_size, pool_cap;
    size_t code_size; /* bytes of code before the pool, set by link */
    bool linked;
    enum vox_status status;
    char err[224];
};

/* Latches the first error (later ones are ignored). */
void jit_fail(struct vox_jit_asm *a, enum vox_status s, const char *fmt, ...) VOX_PRINTF(3, 4);
/* True when the caller may emit one instruction; see the file comment. */
bool jit_begin(struct vox_jit_asm *a);
/* Records a rel32 fix-up for the 4 bytes about to be written at the current offset. */
void jit_fixup_add(struct vox_jit_asm *a, int32_t label, int32_t addend, int trailing);
/* True for a label id that exists; latches an error naming `what` otherwise. */
bool jit_label_check(struct vox_jit_asm *a, int32_t label, const char *what);
/* "rax", "r12d", "ymm3", "zmm17", "k2", ...; buf holds at least 16 bytes. */
const char *jit_reg_name(int32_t reg, char *buf);

static inline void jit_put(struct vox_jit_asm *a, unsigned b)
{
    a->buf[a->size++] = (uint8_t)b;
}

static inline void jit_put32(struct vox_jit_asm *a, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        a->buf[a->size++] = (uint8_t)(v >> (8 * i));
}

static inline int jit_class(int32_t r)
{
    return r & VOX_JIT_CLASS_MASK;
}

static inline int jit_num(int32_t r)
{
    return r & 31;
}

/* A plain register: a known class, a number in range and no decoration. */
static inline bool jit_is(int32_t r, int cls)
{
    int max = cls == VOX_JIT_CLASS_ZMM || cls == VOX_JIT_CLASS_XMM || cls == VOX_JIT_CLASS_YMM
                  ? 31
                  : cls == VOX_JIT_CLASS_K ? 7 : 15;
    return (r & ~0xFF) == cls && (r & 0xFF) <= max;
}

static inline bool jit_is_gpr(int32_t r)
{
    return jit_is(r, VOX_JIT_CLASS_GPR64) || jit_is(r, VOX_JIT_CLASS_GPR32);
}

/* ---- ModRM / SIB / displacement (modrm.c) ---------------------------------------------- */

/* Checks a memory operand: base/index classes, scale, rsp as index, the RIP label. `vsib`
 * asks for a vector index (gathers). Latches an error naming `insn` and returns false. */
bool jit_mem_check(struct vox_jit_asm *a, const struct vox_jit_mem *m, bool vsib,
                   const char *insn);
/* The REX/VEX/EVEX extension bits of a checked memory operand: bit 3 of index (X) and of
 * base (B), and bit 4 of a vector index (EVEX V'). */
static inline int jit_mem_x(const struct vox_jit_mem *m)
{
    return (m->index >> 3) & 1;
}

static inline int jit_mem_b(const struct vox_jit_mem *m)
{
    return jit_class(m->base) == VOX_JIT_CLASS_GPR64 ? (m->base >> 3) & 1 : 0;
}

/* Writes ModRM (+ SIB + displacement) for register field `reg` and memory `m`. `n` is the
 * EVEX disp8 scale (1 for legacy and VEX); `trailing` is the count of immediate bytes that
 * follow, needed to resolve RIP-relative displacements. */
void jit_modrm_mem(struct vox_jit_asm *a, int reg, const struct vox_jit_mem *m, int n,
                   int trailing);

static inline void jit_modrm_reg(struct vox_jit_asm *a, int reg, int rm)
{
    jit_put(a, 0xC0u | (unsigned)((reg & 7) << 3) | (unsigned)(rm & 7));
}

/* ---- VEX and EVEX prefixes (enc_vex.c, enc_evex.c) ------------------------------------- */

/* One vector instruction after operand checking: register numbers are 0-31 (GPRs and k
 * registers by their number), vvvv < 0 means unused, mem == NULL means rm is a register. */
struct jit_vinsn {
    uint8_t opcode, map, pp, w, l; /* map 1 = 0F, 2 = 0F38, 3 = 0F3A; l 0/1/2 = 128/256/512 */
    int reg, vvvv, rm;
    const struct vox_jit_mem *mem;
    bool vsib;
    int aaa, z, bcst; /* EVEX only */
    int n;            /* EVEX disp8 scale */
    bool has_imm;     /* an imm8 follows the ModRM bytes */
    uint8_t imm;
};

void jit_vex_emit(struct vox_jit_asm *a, const struct jit_vinsn *v);
void jit_evex_emit(struct vox_jit_asm *a, const struct jit_vinsn *v);

#endif
