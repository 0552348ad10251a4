/*
 * jit/asm.c: the assembler's buffer, labels, constant pool, linking and executable memory.
 *
 * Key idea (sljit's compiler): a growable byte buffer written by the encoders, a sticky first
 * error that turns every later call into a no-op, and rel32 fix-ups resolved in one pass at
 * link time. The constant pool follows the code, 64-byte aligned, so broadcast constants are
 * reached RIP-relative. finalize copies the bytes into fresh anonymous pages mapped
 * read-write, then mprotects them read+execute: the code is never writable and executable at
 * once (W^X, as sljitWXExecAllocatorPosix.c).
 */
#include "jit/internal.h"

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define JIT_POOL_ALIGN 64

void jit_fail(struct vox_jit_asm *a, enum vox_status s, const char *fmt, ...)
{
    if (a->status != VOX_OK)
        return;
    a->status = s;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->err, sizeof a->err, fmt, ap);
    va_end(ap);
}

/* Grows *buf (of *cap elements of `elem` bytes) to hold `need` elements. */
static bool jit_grow(struct vox_jit_asm *a, void **buf, size_t *cap, size_t need, size_t elem,
                     const char *what)
{
    if (need <= *cap)
        return true;
    size_t cap2 = *cap ? *cap : 64;
    while (cap2 < need)
        cap2 *= 2;
    void *p = vox_realloc(a->ctx, *buf, *cap * elem, cap2 * elem);
    if (!p) {
        jit_fail(a, VOX_OUT_OF_MEMORY, "jit: out of memory growing the %s to %zu bytes", what,
                 cap2 * elem);
        return false;
    }
    *buf = p;
    *cap = cap2;
    return true;
}

bool jit_begin(struct vox_jit_asm *a)
{
    if (a->status != VOX_OK)
        return false;
    if (a->linked) {
        jit_fail(a, VOX_INVALID_ARG, "jit: instruction emitted after link");
        return false;
    }
    if (a->size + JIT_MAX_INSN <= a->cap)
        return true;
    void *buf = a->buf;
    bool ok = jit_grow(a, &buf, &a->cap, a->size + JIT_MAX_INSN < 4096 ? 4096
                                                                        : a->size + JIT_MAX_INSN,
                       1, "code buffer");
    a->buf = buf;
    if (ok && a->size > INT32_MAX - (1 << 20)) {
        jit_fail(a, VOX_UNSUPPORTED, "jit: code larger than 2 GiB");
        return false;
    }
    return ok;
}

void jit_fixup_add(struct vox_jit_asm *a, int32_t label, int32_t addend, int trailing)
{
    if (a->nfixups == a->fixup_cap) {
        void *p = a->fixups;
        size_t cap = (size_t)a->fixup_cap;
        if (!jit_grow(a, &p, &cap, cap + 1, sizeof *a->fixups, "fix-up list"))
            return;
        a->fixups = p;
        a->fixup_cap = (int32_t)cap;
    }
    a->fixups[a->nfixups++] = (struct jit_fixup){(int32_t)a->size, label, addend, trailing};
}

bool jit_label_check(struct vox_jit_asm *a, int32_t label, const char *what)
{
    if (label >= 0 && label < a->nlabels)
        return true;
    jit_fail(a, VOX_INVALID_ARG, "jit: %s: label %d does not exist (%d labels made)", what,
             (int)label, (int)a->nlabels);
    return false;
}

const char *jit_reg_name(int32_t reg, char *buf)
{
    static const char *const gpr[16] = {"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                                        "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15"};
    static const char *const gpr32[8] = {"eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"};
    int n = reg & 0xFF;
    switch (reg & ~0xFF) {
    case VOX_JIT_CLASS_GPR64:
        return n < 16 ? gpr[n] : "bad register";
    case VOX_JIT_CLASS_GPR32:
        if (n < 8)
            return gpr32[n];
        snprintf(buf, 16, "r%dd", n);
        return n < 16 ? buf : "bad register";
    case VOX_JIT_CLASS_XMM: snprintf(buf, 16, "xmm%d", n); return buf;
    case VOX_JIT_CLASS_YMM: snprintf(buf, 16, "ymm%d", n); return buf;
    case VOX_JIT_CLASS_ZMM: snprintf(buf, 16, "zmm%d", n); return buf;
    case VOX_JIT_CLASS_K: snprintf(buf, 16, "k%d", n); return buf;
    case VOX_JIT_CLASS_RIP: return "rip";
    case 0: return n ? "bad register" : "none";
    default:
        snprintf(buf, 16, "0x%x", (unsigned)reg);
        return buf;
    }
}

/* ---- lifetime -------------------------------------------------------------------------- */

enum vox_status vox_jit_asm_create(struct vox_ctx *ctx, struct vox_jit_asm **asm_out)
{
    *asm_out = NULL;
    struct vox_jit_asm *a = vox_calloc(ctx, 1, sizeof *a);
    if (!a)
        return VOX_OUT_OF_MEMORY;
    a->ctx = ctx;
    *asm_out = a;
    return VOX_OK;
}

void vox_jit_asm_destroy(struct vox_jit_asm *a)
{
    if (!a)
        return;
    vox_free(a->ctx, a->buf);
    vox_free(a->ctx, a->labels);
    vox_free(a->ctx, a->fixups);
    vox_free(a->ctx, a->pool);
    vox_free(a->ctx, a);
}

void vox_jit_asm_reset(struct vox_jit_asm *a)
{
    a->size = 0;
    a->nlabels = 0;
    a->nfixups = 0;
    a->pool_size = 0;
    a->code_size = 0;
    a->linked = false;
    a->status = VOX_OK;
    a->err[0] = '\0';
}

enum vox_status vox_jit_asm_status(const struct vox_jit_asm *a)
{
    return a->status;
}

const char *vox_jit_asm_error(const struct vox_jit_asm *a)
{
    return a->err;
}

size_t vox_jit_asm_offset(const struct vox_jit_asm *a)
{
    return a->size;
}

/* ---- labels and constants -------------------------------------------------------------- */

int32_t vox_jit_label_new(struct vox_jit_asm *a)
{
    if (a->status != VOX_OK)
        return -1;
    if (a->nlabels == a->label_cap) {
        void *p = a->labels;
        size_t cap = (size_t)a->label_cap;
        if (!jit_grow(a, &p, &cap, cap + 1, sizeof *a->labels, "label table"))
            return -1;
        a->labels = p;
        a->label_cap = (int32_t)cap;
    }
    a->labels[a->nlabels] = (struct jit_label){-1, JIT_LABEL_UNBOUND};
    return a->nlabels++;
}

void vox_jit_label_bind(struct vox_jit_asm *a, int32_t label)
{
    if (a->status != VOX_OK || !jit_label_check(a, label, "bind"))
        return;
    if (a->linked) {
        jit_fail(a, VOX_INVALID_ARG, "jit: label %d bound after link", (int)label);
        return;
    }
    if (a->labels[label].state != JIT_LABEL_UNBOUND) {
        jit_fail(a, VOX_INVALID_ARG, "jit: label %d is bound twice", (int)label);
        return;
    }
    a->labels[label] = (struct jit_label){(int32_t)a->size, JIT_LABEL_CODE};
}

int64_t vox_jit_label_offset(const struct vox_jit_asm *a, int32_t label)
{
    if (label < 0 || label >= a->nlabels)
        return -1;
    const struct jit_label *l = &a->labels[label];
    if (l->state == JIT_LABEL_CODE)
        return l->pos;
    if (l->state == JIT_LABEL_POOL && a->linked)
        return (int64_t)(a->code_size + (size_t)l->pos);
    return -1;
}

int32_t vox_jit_const(struct vox_jit_asm *a, const void *data, size_t bytes, size_t align)
{
    if (a->status != VOX_OK)
        return -1;
    if (align == 0 || align > JIT_POOL_ALIGN || (align & (align - 1)) || bytes == 0 ||
        bytes > (1u << 24)) {
        jit_fail(a, VOX_INVALID_ARG,
                 "jit: constant of %zu bytes aligned to %zu: expected 1..16 MiB aligned to a "
                 "power of two <= 64", bytes, align);
        return -1;
    }
    size_t off = (a->pool_size + align - 1) & ~(align - 1);
    void *p = a->pool;
    if (!jit_grow(a, &p, &a->pool_cap, off + bytes, 1, "constant pool"))
        return -1;
    a->pool = p;
    int32_t label = vox_jit_label_new(a);
    if (label < 0)
        return -1;
    memset(a->pool + a->pool_size, 0, off - a->pool_size);
    memcpy(a->pool + off, data, bytes);
    a->pool_size = off + bytes;
    a->labels[label] = (struct jit_label){(int32_t)off, JIT_LABEL_POOL};
    return label;
}

/* ---- link and finalize ----------------------------------------------------------------- */

/* Appends the pool after int3 padding to JIT_POOL_ALIGN. */
static bool jit_append_pool(struct vox_jit_asm *a)
{
    a->code_size = a->size;
    if (a->pool_size == 0)
        return true;
    a->code_size = (a->size + JIT_POOL_ALIGN - 1) & ~(size_t)(JIT_POOL_ALIGN - 1);
    void *p = a->buf;
    if (!jit_grow(a, &p, &a->cap, a->code_size + a->pool_size, 1, "code buffer"))
        return false;
    a->buf = p;
    memset(a->buf + a->size, 0xCC, a->code_size - a->size);
    memcpy(a->buf + a->code_size, a->pool, a->pool_size);
    a->size = a->code_size + a->pool_size;
    return true;
}

static bool jit_resolve(struct vox_jit_asm *a)
{
    for (int32_t i = 0; i < a->nfixups; i++) {
        const struct jit_fixup *f = &a->fixups[i];
        const struct jit_label *l = &a->labels[f->label];
        if (l->state == JIT_LABEL_UNBOUND) {
            jit_fail(a, VOX_INVALID_ARG, "jit: label %d is used at offset %d but never bound",
                     (int)f->label, (int)f->pos);
            return false;
        }
        int64_t target = l->pos + (l->state == JIT_LABEL_POOL ? (int64_t)a->code_size : 0);
        int64_t rel = target + f->addend - (f->pos + 4 + f->trailing);
        if (rel < INT32_MIN || rel > INT32_MAX) {
            jit_fail(a, VOX_UNSUPPORTED, "jit: label %d out of rel32 reach", (int)f->label);
            return false;
        }
        uint32_t u = (uint32_t)(int32_t)rel;
        for (int b = 0; b < 4; b++)
            a->buf[f->pos + b] = (uint8_t)(u >> (8 * b));
    }
    return true;
}

enum vox_status vox_jit_asm_link(struct vox_jit_asm *a, const uint8_t **bytes_out,
                                 size_t *size_out)
{
    if (a->status == VOX_OK && !a->linked) {
        if (jit_append_pool(a) && jit_resolve(a))
            a->linked = true;
    }
    if (a->status != VOX_OK)
        return vox_fail(a->ctx, a->status, "%s", a->err);
    if (bytes_out)
        *bytes_out = a->buf;
    if (size_out)
        *size_out = a->size;
    return VOX_OK;
}

enum vox_status vox_jit_asm_finalize(struct vox_jit_asm *a, struct vox_jit_code *code_out)
{
    memset(code_out, 0, sizeof *code_out);
    const uint8_t *bytes;
    size_t size;
    enum vox_status s = vox_jit_asm_link(a, &bytes, &size);
    if (s != VOX_OK)
        return s;
    if (size == 0)
        return vox_fail(a->ctx, VOX_INVALID_ARG, "jit: finalize of an empty assembler");
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t map_bytes = (size + page - 1) / page * page;
    void *map = mmap(NULL, map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED)
        return vox_fail(a->ctx, VOX_OUT_OF_MEMORY, "jit: mmap of %zu bytes failed", map_bytes);
    memcpy(map, bytes, size);
    if (mprotect(map, map_bytes, PROT_READ | PROT_EXEC) != 0) {
        munmap(map, map_bytes);
        return vox_fail(a->ctx, VOX_IO, "jit: mprotect to read+execute failed");
    }
    *code_out = (struct vox_jit_code){map, size, map, map_bytes};
    return VOX_OK;
}

void vox_jit_code_free(struct vox_jit_code *code)
{
    if (code->map)
        munmap(code->map, code->map_bytes);
    memset(code, 0, sizeof *code);
}
