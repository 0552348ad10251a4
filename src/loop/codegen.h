/*
 * loop/codegen.h: the code generator's interface to the kernel module (internal).
 *
 * codegen.c lowers a valid nest to one x86-64 function `void f(const struct cg_args *)`. The
 * function runs the nest's outermost loop for args->n_full full iterations from the given
 * pointers, then its tail iteration if args->do_tail, so a caller can hand disjoint runs of
 * that loop to threads.
 */
#ifndef VOX_LOOP_CODEGEN_H
#define VOX_LOOP_CODEGEN_H

#include "vox/jit.h"
#include "vox/loop.h"

/* Tensors: C, A, B, then the extra operands. */
#define CG_TENSORS (VOX_NEST_TENSORS + VOX_NEST_MAX_EXTRA)

struct cg_args {
    const float *ptr[CG_TENSORS];
    int64_t n_full;  /* full iterations of loop 0 to run */
    int64_t do_tail; /* nonzero: then run loop 0's tail iteration */
};

struct cg_result {
    struct vox_jit_code code;
    bool parallel;   /* loop 0 indexes C and is a runtime loop: its iterations may be split */
    int64_t step0, n_full0, tail0; /* loop 0: step, full iterations, tail extent (0: none) */
    struct vox_kernel_info info;
};

/* Generates code for `isa` (VOX_ISA_AVX2 or VOX_ISA_AVX512). VOX_UNSUPPORTED when the nest
 * needs something the generator lacks (the caller then falls back to the interpreter). */
enum vox_status vox_cg_generate(struct vox_ctx *ctx, const struct vox_nest *nest,
                                enum vox_isa isa, int unroll, int copies,
                                struct cg_result *out);

#endif
