/*
 * loop/codegen_internal.h: the code generator's state, shared by codegen.c (plan, loops above
 * the register tile) and codegen_tile.c (the register tile). Internal.
 */
#ifndef VOX_LOOP_CODEGEN_INTERNAL_H
#define VOX_LOOP_CODEGEN_INTERNAL_H

#include "codegen.h"

#define CG_MAX_SUBS 512         /* distinct range states */
#define CG_MAX_CODE (8 << 20)   /* bytes of code */
#define CG_MAX_ACC 32           /* C vectors of one tile */
#define CG_MAX_POINTS 256       /* buffered vector ops before a forced flush */
#define CG_MAX_CONST 32
#define CG_PF_DIST 16           /* reduction steps ahead that a software prefetch reaches */
#define CG_PF_STRIDE 2048       /* bytes per reduction step from which operands are prefetched */

enum cg_kind { CG_PACKED, CG_BCAST, CG_GATHER };

/* One vector operand: a tensor's elements from `off` along v (lanes of them). */
struct cg_operand {
    int t;
    int lanes;
    int64_t off;
    int64_t pre_off[VOX_NEST_MAX_OPS]; /* A only: the pre-op tensors' offsets */
};

/* One vector op of the body: acc (reduce)= combine(a, b). */
struct cg_point {
    int acc; /* vector register */
    struct cg_operand a, b;
};

/* Visit flags of a range state: which visits of its C elements it makes, when reduction
 * loops sit above the register tile. CG_FIRST: every such loop is at its first iteration, so
 * the tile starts C at the identity instead of loading it (overwrite mode, no C pass first).
 * CG_LAST: every one is at its last, so the reduction is complete and post-ops are fused. */
enum { CG_FIRST = 1, CG_LAST = 2 };

struct cg_sub {
    int p;
    int flags;
    int64_t ext[VOX_NEST_MAX_DIMS];
    int32_t label;
};

struct cg {
    struct vox_ctx *ctx;
    const struct vox_nest *nest;
    struct vox_jit_asm *a;
    enum vox_isa isa;
    int W, nv, ew, v; /* lanes of a register, registers, lanes of a vector op, vector dim */
    int vpos;         /* the position of v's innermost loop */
    bool vred;        /* v is a reduction: C elements in lane sums, added up at the store */
    bool no_vred;     /* reduction vectors were tried and do not fit the tile */
    int unroll, copies_opt;
    int ntens;
    int64_t stride[CG_TENSORS][VOX_NEST_MAX_DIMS];
    int32_t preg[CG_TENSORS];
    enum cg_kind kind[CG_TENSORS];
    int32_t gidx_lbl[CG_TENSORS];
    int pre_t[VOX_NEST_MAX_OPS], post_t[VOX_NEST_MAX_OPS]; /* tensor of each op, or -1 */
    bool need_gather;
    int reg_mask, reg_gidx, reg_gmask, reg_tmp; /* fixed registers, -1 when unused */
    int reg_etmp[2]; /* two more temporaries for the exp-based ops, -1 when unused */
    int top_free, acc_budget;
    int R;
    bool chunked, red_above;
    int flag_mask;          /* the visit flags that change the code (others are dropped) */
    bool load_c, fuse_post; /* for the tile being emitted, from its flags */
    /* the tile being emitted */
    int64_t acc_toff[CG_MAX_ACC][CG_TENSORS]; /* every tensor's offset at the C vector */
    int acc_lanes[CG_MAX_ACC];
    int nacc, copies, copy, nested, max_reg;
    int nest_copies; /* accumulator copies of every tile (cg_pick_copies) */
    int64_t pf_off[CG_TENSORS]; /* prefetch distance in elements inside a runtime reduction
                                 * loop (0: none) */
    bool planning, overflow;
    struct cg_point pts[CG_MAX_POINTS];
    int npts;
    int mask_lanes; /* lanes of the mask now in k2 / reg_mask, -1: unknown */
    /* constants */
    float const_val[CG_MAX_CONST];
    int32_t const_lbl[CG_MAX_CONST];
    int nconst;
    int32_t masktab_lbl;
    /* range states */
    struct cg_sub subs[CG_MAX_SUBS];
    int nsubs;
    bool failed;
    /* what was planned, for vox_kernel_info (the first, largest tile) */
    int stat_acc, stat_copies, stat_unroll, stat_regs;
    bool stat_done;
};

struct vox_jit_mem cg_mem(struct cg *g, int t, int64_t off);
void cg_add_imm(struct cg *g, int32_t reg, int64_t v);
void cg_advance(struct cg *g, int d, int64_t count);
void cg_call(struct cg *g, int32_t label);
int32_t cg_const_vec(struct cg *g, float x);
void cg_max_state(const struct vox_nest *nest, int p, int64_t *ext);
/* C vectors of the tile at position p for the range state ext (capped past the budget). */
int cg_tile_count(struct cg *g, int p, const int64_t *ext);
int cg_pick_copies(const struct cg *g);
void cg_emit_tile(struct cg *g, const int64_t *ext, int flags);

#endif
