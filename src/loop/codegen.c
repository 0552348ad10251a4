/*
 * loop/codegen.c: lowers a loop nest to x86-64 code (AVX2+FMA or AVX-512): the plan and the
 * loops above the register tile. codegen_tile.c emits the tile itself.
 *
 * After LoopNest (Zlateski et al., facebookresearch/loop_nest), with the tails done without
 * its 2^k specialised copies:
 *  - Vectorise along the innermost loop's dimension v when C has stride 1 along it; each
 *    other tensor is packed (stride 1), broadcast (stride 0) or gathered along v. When that
 *    fills under half a vector (C strided, v a reduction, or a short extent, as in GEMV or an
 *    N = 1 matmul), vectorise instead along a reduction dimension whose innermost loop has
 *    step 1 and along which A or B has stride 1 (the other 0 or 1): each C element then has a
 *    vector of lane partial sums, added up horizontally at the store ("reduction vectors").
 *    Otherwise every "vector" is one lane (scalar mode, still correct). On AVX-512 an
 *    output dimension of at most 8 (an 8-channel block) gets ymm vectors under EVEX (32
 *    registers, opmasks, broadcasts) rather than half-empty zmm ones.
 *  - The register-tile level R is the outermost loop position whose C tile (the distinct C
 *    vectors below it) fits the register budget; since reduction loops leave the tile
 *    unchanged, this also moves C's load/store outward past them.
 *  - Loops above R are runtime loops. The code below each loop depends only on the extents
 *    of the ranges it is handed (a "range state"); each distinct (position, extents) state is
 *    emitted once as a subroutine and called, so a tail costs one extra state per level.
 *  - The entry runs loop 0 for a run of iterations given at run time (threads split it).
 */
#include "codegen_internal.h"

#include <string.h>

static const int32_t ptr_regs[CG_TENSORS] = {VOX_JIT_RDX, VOX_JIT_RSI, VOX_JIT_R8,  VOX_JIT_R9,
                                             VOX_JIT_R10, VOX_JIT_R11, VOX_JIT_RBX, VOX_JIT_RBP,
                                             VOX_JIT_R12, VOX_JIT_R13, VOX_JIT_R14};

/* ---- small emit helpers shared with codegen_tile.c ------------------------------------- */

/* A memory operand for element `off` of tensor t (big displacements go through r15). */
struct vox_jit_mem cg_mem(struct cg *g, int t, int64_t off)
{
    int64_t disp = off * 4;
    if (disp >= INT32_MIN && disp <= INT32_MAX)
        return vox_jit_mem_b(g->preg[t], (int32_t)disp);
    vox_jit_op_ri(g->a, VOX_JIT_MOV, VOX_JIT_R15, disp);
    vox_jit_op_rr(g->a, VOX_JIT_ADD, VOX_JIT_R15, g->preg[t]);
    return vox_jit_mem_b(VOX_JIT_R15, 0);
}

void cg_add_imm(struct cg *g, int32_t reg, int64_t v)
{
    if (v == 0)
        return;
    if (v >= INT32_MIN && v <= INT32_MAX) {
        vox_jit_op_ri(g->a, VOX_JIT_ADD, reg, v);
        return;
    }
    vox_jit_op_ri(g->a, VOX_JIT_MOV, VOX_JIT_RAX, v);
    vox_jit_op_rr(g->a, VOX_JIT_ADD, reg, VOX_JIT_RAX);
}

/* Advances every tensor pointer by `count` steps of `step` along dimension d. */
void cg_advance(struct cg *g, int d, int64_t count)
{
    for (int t = 0; t < g->ntens; t++)
        cg_add_imm(g, g->preg[t], g->stride[t][d] * count * 4);
}

void cg_call(struct cg *g, int32_t label)
{
    vox_jit_op_rm(g->a, VOX_JIT_LEA, VOX_JIT_RAX, vox_jit_mem_rip(label, 0));
    vox_jit_op_r(g->a, VOX_JIT_CALL, VOX_JIT_RAX);
    g->mask_lanes = -1;
}

/* A 64-byte constant of 16 equal floats (cached), for identities and op parameters. */
int32_t cg_const_vec(struct cg *g, float x)
{
    for (int i = 0; i < g->nconst; i++)
        if (memcmp(&g->const_val[i], &x, sizeof x) == 0)
            return g->const_lbl[i];
    float v[16];
    for (int i = 0; i < 16; i++)
        v[i] = x;
    int32_t l = vox_jit_const(g->a, v, sizeof v, 64);
    if (g->nconst < CG_MAX_CONST) {
        g->const_val[g->nconst] = x;
        g->const_lbl[g->nconst++] = l;
    }
    return l;
}

/* ---- range states ---------------------------------------------------------------------- */

/* The extents handed to position p when every enclosing loop runs a full step. */
void cg_max_state(const struct vox_nest *nest, int p, int64_t *ext)
{
    for (int d = 0; d < nest->ndims; d++)
        ext[d] = nest->dims[d].size;
    for (int q = 0; q < p; q++) {
        int d = nest->order[q].dim;
        if (nest->order[q].step < ext[d])
            ext[d] = nest->order[q].step;
    }
}

/* The subroutine label for a state, queued for emission on first use. */
static int32_t state_label(struct cg *g, int p, const int64_t *ext, int flags)
{
    flags &= g->flag_mask;
    for (int i = 0; i < g->nsubs; i++)
        if (g->subs[i].p == p && g->subs[i].flags == flags &&
            !memcmp(g->subs[i].ext, ext, sizeof g->subs[i].ext))
            return g->subs[i].label;
    if (g->nsubs == CG_MAX_SUBS) {
        g->failed = true;
        return vox_jit_label_new(g->a);
    }
    struct cg_sub *s = &g->subs[g->nsubs++];
    s->p = p;
    s->flags = flags;
    memcpy(s->ext, ext, sizeof s->ext);
    s->label = vox_jit_label_new(g->a);
    return s->label;
}

/* n calls of body, advancing along d by s after each (a runtime loop when n > 1). */
static void emit_calls(struct cg *g, int d, int64_t s, int64_t n, int32_t body)
{
    if (n == 1) {
        cg_call(g, body);
        cg_advance(g, d, s);
        return;
    }
    int32_t top = vox_jit_label_new(g->a);
    vox_jit_op_ri(g->a, VOX_JIT_MOV, VOX_JIT_RCX, n);
    vox_jit_label_bind(g->a, top);
    vox_jit_op_r(g->a, VOX_JIT_PUSH, VOX_JIT_RCX);
    cg_call(g, body);
    vox_jit_op_r(g->a, VOX_JIT_POP, VOX_JIT_RCX);
    cg_advance(g, d, s);
    vox_jit_op_r(g->a, VOX_JIT_DEC, VOX_JIT_RCX);
    vox_jit_jcc(g->a, VOX_JIT_CC_NE, top);
}

/* The visit flags of iteration i of `iters` of a loop handed `flags`: an output loop passes
 * them on; a reduction loop keeps CG_FIRST for its first iteration, CG_LAST for its last. */
static int iter_flags(const struct cg *g, int flags, bool red, int64_t i, int64_t iters)
{
    if (!red)
        return flags & g->flag_mask;
    return ((i == 0 ? flags & CG_FIRST : 0) | (i == iters - 1 ? flags & CG_LAST : 0)) &
           g->flag_mask;
}

/* Loop p (0 <= p < R) over the state ext: runs of full steps with equal flags (at most three:
 * first, middle, last), then the tail. */
static void emit_level(struct cg *g, int p, const int64_t *ext, int flags)
{
    const struct vox_nest *nest = g->nest;
    int d = nest->order[p].dim;
    int64_t s = nest->order[p].step, e = ext[d], nfull = e / s, tail = e % s;
    int64_t iters = nfull + (tail > 0), sub[VOX_NEST_MAX_DIMS];
    bool red = vox_nest_is_reduction(nest, d);
    memcpy(sub, ext, sizeof sub);
    sub[d] = s;
    for (int64_t i = 0; i < nfull;) {
        int f = iter_flags(g, flags, red, i, iters);
        int64_t j = i + 1;
        while (j < nfull && iter_flags(g, flags, red, j, iters) == f)
            j = j < iters - 1 ? iters - 1 : nfull; /* flags change only at 1 and iters - 1 */
        emit_calls(g, d, s, j - i, state_label(g, p + 1, sub, f));
        i = j;
    }
    if (tail > 0) {
        sub[d] = tail;
        cg_call(g, state_label(g, p + 1, sub, iter_flags(g, flags, red, nfull, iters)));
    }
    cg_advance(g, d, -nfull * s);
}

/* The entry: loop 0 with run-time counts (or the whole nest as one tile when R = 0). */
static void emit_entry(struct cg *g)
{
    const struct vox_nest *nest = g->nest;
    struct vox_jit_asm *a = g->a;
    static const int32_t saved[] = {VOX_JIT_RBX, VOX_JIT_RBP, VOX_JIT_R12, VOX_JIT_R13,
                                    VOX_JIT_R14, VOX_JIT_R15};
    for (int i = 0; i < 6; i++)
        vox_jit_op_r(a, VOX_JIT_PUSH, saved[i]);
    for (int t = 0; t < g->ntens; t++)
        vox_jit_op_rm(a, VOX_JIT_MOV, g->preg[t], vox_jit_mem_b(VOX_JIT_RDI, 8 * t));
    int64_t ext[VOX_NEST_MAX_DIMS];
    cg_max_state(nest, 0, ext);
    int d = nest->order[0].dim;
    if (g->R == 0) {
        cg_call(g, state_label(g, 0, ext, CG_FIRST | CG_LAST));
    } else if (vox_nest_is_reduction(nest, d)) {
        emit_level(g, 0, ext, CG_FIRST | CG_LAST); /* not split across threads: static */
    } else {
        int64_t s = nest->order[0].step, e = ext[d];
        int32_t skip = vox_jit_label_new(a);
        vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_RCX,
                      vox_jit_mem_b(VOX_JIT_RDI, (int32_t)offsetof(struct cg_args, n_full)));
        vox_jit_op_rr(a, VOX_JIT_TEST, VOX_JIT_RCX, VOX_JIT_RCX);
        vox_jit_jcc(a, VOX_JIT_CC_E, skip);
        ext[d] = s < e ? s : e;
        int32_t body = state_label(g, 1, ext, CG_FIRST | CG_LAST), top = vox_jit_label_new(a);
        vox_jit_label_bind(a, top);
        vox_jit_op_r(a, VOX_JIT_PUSH, VOX_JIT_RCX);
        cg_call(g, body);
        vox_jit_op_r(a, VOX_JIT_POP, VOX_JIT_RCX);
        cg_advance(g, d, s);
        vox_jit_op_r(a, VOX_JIT_DEC, VOX_JIT_RCX);
        vox_jit_jcc(a, VOX_JIT_CC_NE, top);
        vox_jit_label_bind(a, skip);
        if (e % s != 0 && e > s) {
            int32_t done = vox_jit_label_new(a);
            vox_jit_op_mi(a, VOX_JIT_CMP,
                          vox_jit_mem_b(VOX_JIT_RDI, (int32_t)offsetof(struct cg_args, do_tail)),
                          64, 0);
            vox_jit_jcc(a, VOX_JIT_CC_E, done);
            ext[d] = e % s;
            cg_call(g, state_label(g, 1, ext, CG_FIRST | CG_LAST));
            vox_jit_label_bind(a, done);
        }
    }
    vox_jit_vzeroupper(a);
    for (int i = 5; i >= 0; i--)
        vox_jit_op_r(a, VOX_JIT_POP, saved[i]);
    vox_jit_ret(a);
}

/* ---- the plan -------------------------------------------------------------------------- */

static bool op_needs_exp(enum vox_nest_eltwise_kind k)
{
    return k == VOX_NEST_ELU || k == VOX_NEST_SIGMOID || k == VOX_NEST_TANH;
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* v: the innermost loop's dimension, or a reduction dimension whose vectors fill more lanes
 * (plus-multiply without pre-ops only: masked-off lanes then add exact zeros). */
static void plan_vector_dim(struct cg *g)
{
    const struct vox_nest *nest = g->nest;
    int last = nest->norder - 1, v0 = nest->order[last].dim;
    int64_t ext[VOX_NEST_MAX_DIMS];
    g->v = v0;
    g->vpos = last;
    g->vred = false;
    cg_max_state(nest, last, ext);
    int64_t best = nest->strides[VOX_NEST_C][v0] == 1 ? min64(ext[v0], g->W) : 1;
    if (best * 2 >= g->W || g->no_vred || nest->compute != VOX_NEST_PLUS_MUL || nest->npre > 0)
        return;
    bool seen[VOX_NEST_MAX_DIMS] = {false};
    for (int p = last; p >= 0; p--) {
        int d = nest->order[p].dim;
        int64_t sa = nest->strides[VOX_NEST_A][d], sb = nest->strides[VOX_NEST_B][d];
        bool inner = !seen[d];
        seen[d] = true;
        if (!inner || !vox_nest_is_reduction(nest, d) || nest->order[p].step != 1 ||
            (sa != 1 && sb != 1) || (sa != 0 && sa != 1) || (sb != 0 && sb != 1))
            continue;
        cg_max_state(nest, p, ext);
        if (min64(ext[d], g->W) > best) {
            best = min64(ext[d], g->W);
            g->v = d;
            g->vpos = p;
            g->vred = true;
        }
    }
}

/* Tensors, their pointer registers, and each one's access kind along v. */
static enum vox_status plan_tensors(struct cg *g)
{
    const struct vox_nest *nest = g->nest;
    memcpy(g->stride[0], nest->strides, sizeof nest->strides);
    g->ntens = VOX_NEST_TENSORS;
    for (int pass = 0; pass < 2; pass++) {
        const struct vox_nest_eltwise *ops = pass ? nest->post : nest->pre;
        int *slot = pass ? g->post_t : g->pre_t;
        for (int i = 0; i < (pass ? nest->npost : nest->npre); i++) {
            slot[i] = -1;
            if (!vox_nest_eltwise_info(ops[i].kind)->has_tensor)
                continue;
            slot[i] = g->ntens;
            memcpy(g->stride[g->ntens++], ops[i].strides, sizeof ops[i].strides);
        }
    }
    g->W = g->isa == VOX_ISA_AVX512 ? 16 : 8;
    plan_vector_dim(g);
    int64_t ext[VOX_NEST_MAX_DIMS];
    cg_max_state(nest, nest->norder - 1, ext);
    if (g->W == 16 && !g->vred && ext[g->v] <= 8)
        g->W = 8; /* ymm (ymm16-31 through EVEX): no half-empty zmm for 8-lane blocks */
    g->ew = g->vred || nest->strides[VOX_NEST_C][g->v] == 1 ? g->W : 1;
    for (int t = 0; t < g->ntens; t++) {
        int64_t s = g->stride[t][g->v];
        g->preg[t] = ptr_regs[t];
        g->kind[t] = s == 0 || g->ew == 1 ? CG_BCAST : s == 1 ? CG_PACKED : CG_GATHER;
        if (g->kind[t] == CG_GATHER) {
            if (s > INT32_MAX / g->W || s < INT32_MIN / g->W)
                return vox_fail(g->ctx, VOX_UNSUPPORTED,
                                "codegen: tensor %d's stride %lld along '%s' is too large to "
                                "gather", t, (long long)s, nest->dims[g->v].name);
            int32_t idx[16] = {0};
            for (int i = 0; i < g->W; i++)
                idx[i] = (int32_t)(s * i);
            g->gidx_lbl[t] = vox_jit_const(g->a, idx, sizeof idx, 64);
            g->need_gather = true;
        }
    }
    return VOX_OK;
}

/* Whether some range handed to the innermost loop is not a multiple of the vector width. */
static bool has_partial_vectors(const struct cg *g)
{
    if (g->ew == 1)
        return true;
    const struct vox_nest *nest = g->nest;
    int64_t ext[64];
    int n = 1;
    ext[0] = nest->dims[g->v].size;
    for (int p = 0; p < nest->norder; p++) {
        if (nest->order[p].dim != g->v || p == g->vpos)
            continue;
        int64_t s = nest->order[p].step;
        int m = 0;
        int64_t next[64];
        for (int i = 0; i < n && m < 62; i++) {
            if (ext[i] >= s)
                next[m++] = s;
            if (ext[i] % s)
                next[m++] = ext[i] % s;
        }
        memcpy(ext, next, sizeof next);
        n = m;
    }
    for (int i = 0; i < n; i++)
        if (ext[i] % g->W)
            return true;
    return false;
}

/* Fixed vector registers at the top of the file; the rest holds accumulators and operands. */
static void plan_registers(struct cg *g)
{
    const struct vox_nest *nest = g->nest;
    int next = g->nv - 1;
    g->reg_mask = g->reg_gidx = g->reg_gmask = g->reg_tmp = -1;
    if (g->isa == VOX_ISA_AVX2 && (has_partial_vectors(g) || g->need_gather))
        g->reg_mask = next--;
    if (g->need_gather) {
        g->reg_gidx = next--;
        if (g->isa == VOX_ISA_AVX2)
            g->reg_gmask = next--;
    }
    bool post_tensor = false, need_exp = false;
    for (int i = 0; i < nest->npost; i++) {
        post_tensor |= g->post_t[i] >= 0;
        need_exp |= op_needs_exp(nest->post[i].kind);
    }
    for (int i = 0; i < nest->npre; i++)
        need_exp |= op_needs_exp(nest->pre[i].kind);
    if (nest->compute != VOX_NEST_PLUS_MUL || nest->npre > 0 || post_tensor || need_exp)
        g->reg_tmp = next--;
    g->reg_etmp[0] = g->reg_etmp[1] = -1;
    if (need_exp) {
        g->reg_etmp[0] = next--;
        g->reg_etmp[1] = next--;
    }
    if (g->reg_mask >= 0) {
        int32_t tab[16];
        for (int i = 0; i < 16; i++)
            tab[i] = i < 8 ? -1 : 0;
        g->masktab_lbl = vox_jit_const(g->a, tab, sizeof tab, 64);
    }
    g->top_free = next;
    g->acc_budget = next + 1 - 2; /* two operand registers at least */
}

static bool reduction_above(const struct vox_nest *nest, int p)
{
    for (int q = 0; q < p; q++)
        if (vox_nest_is_reduction(nest, nest->order[q].dim))
            return true;
    return false;
}

/* R: the outermost position whose largest tile fits; chunked when none does. Not 0 when
 * the first loop, over an output dimension, runs more than once: its runs are what the
 * threads split (a C small enough for the registers whole, as a one-channel conv's weight
 * gradient, would otherwise run on one thread; the sums keep their loop order either way). */
static void plan_tile_level(struct cg *g)
{
    const struct vox_nest *nest = g->nest;
    int64_t ext[VOX_NEST_MAX_DIMS];
    g->R = nest->norder - 1;
    g->chunked = true;
    const int d0 = nest->order[0].dim;
    const bool split0 = nest->norder > 1 && !vox_nest_is_reduction(nest, d0) &&
                        nest->order[0].step < nest->dims[d0].size;
    for (int p = split0 ? 1 : 0; p < nest->norder; p++) {
        cg_max_state(nest, p, ext);
        if (cg_tile_count(g, p, ext) <= g->acc_budget) {
            g->R = p;
            g->chunked = false;
            break;
        }
    }
    if (!g->chunked) { /* accumulator copies from the largest tile, the same for every tile */
        cg_max_state(nest, g->R, ext);
        cg_tile_count(g, g->R, ext);
        g->nest_copies = cg_pick_copies(g);
    }
    g->red_above = reduction_above(nest, g->R);
    g->flag_mask = (g->red_above && !nest->accumulate ? CG_FIRST : 0) |
                   (g->red_above && nest->npost > 0 ? CG_LAST : 0);
}

static void fill_info(struct cg *g, struct cg_result *out)
{
    const struct vox_nest *nest = g->nest;
    struct vox_kernel_info *info = &out->info;
    info->jit = true;
    info->isa = g->isa;
    info->lanes = g->ew;
    info->reduction_vectors = g->vred;
    info->tile_level = g->R;
    cg_max_state(nest, g->R, info->tile);
    if (g->chunked)
        info->tile[g->v] = g->ew;
    for (int d = 0; d < nest->ndims; d++)
        if (vox_nest_is_reduction(nest, d))
            info->tile[d] = 1;
    info->acc_vectors = g->stat_acc;
    info->acc_copies = g->stat_copies;
    info->unroll = g->stat_unroll;
    info->vec_regs = g->stat_regs;
    info->chunked = g->chunked;
    info->post_fused = nest->npost > 0;
    int d0 = nest->order[0].dim;
    out->parallel = g->R > 0 && !vox_nest_is_reduction(nest, d0);
    info->parallel_dim = out->parallel ? d0 : -1;
    out->step0 = nest->order[0].step;
    int64_t e0 = nest->dims[d0].size;
    out->n_full0 = e0 / out->step0;
    out->tail0 = e0 > out->step0 ? e0 % out->step0 : 0;
    if (e0 < out->step0)
        out->n_full0 = 1; /* the one iteration is "full": the max state has extent e0 */
    info->flops = vox_nest_flops(nest);
    info->bytes = vox_nest_bytes(nest);
    info->code_bytes = out->code.size;
}

static enum vox_status generate(struct cg *g, struct cg_result *out)
{
    enum vox_status s = plan_tensors(g);
    if (s)
        return s;
    plan_registers(g);
    plan_tile_level(g);
    if (g->vred && (g->chunked || g->R > g->vpos)) {
        /* the reduction-vector loop must run inside the register tile */
        g->no_vred = true;
        if ((s = plan_tensors(g)))
            return s;
        plan_registers(g);
        plan_tile_level(g);
    }
    emit_entry(g);
    for (int i = 0; i < g->nsubs && !g->failed; i++) {
        struct cg_sub sub = g->subs[i];
        vox_jit_label_bind(g->a, sub.label);
        g->mask_lanes = -1;
        if (sub.p == g->R)
            cg_emit_tile(g, sub.ext, sub.flags);
        else
            emit_level(g, sub.p, sub.ext, sub.flags);
        vox_jit_ret(g->a);
        if (vox_jit_asm_offset(g->a) > CG_MAX_CODE)
            g->failed = true;
    }
    if (g->failed)
        return vox_fail(g->ctx, VOX_UNSUPPORTED,
                        "codegen: the nest needs more than %d range states or %d code bytes",
                        CG_MAX_SUBS, CG_MAX_CODE);
    if ((s = vox_jit_asm_finalize(g->a, &out->code)))
        return s;
    fill_info(g, out);
    return VOX_OK;
}

enum vox_status vox_cg_generate(struct vox_ctx *ctx, const struct vox_nest *nest,
                                enum vox_isa isa, int unroll, int copies,
                                struct cg_result *out)
{
    memset(out, 0, sizeof *out);
    struct cg *g = vox_calloc(ctx, 1, sizeof *g);
    if (!g)
        return VOX_OUT_OF_MEMORY;
    g->ctx = ctx;
    g->nest = nest;
    g->isa = isa;
    g->W = isa == VOX_ISA_AVX512 ? 16 : 8;
    g->nv = isa == VOX_ISA_AVX512 ? 32 : 16;
    g->unroll = unroll > 0 ? unroll : 64;
    g->copies_opt = copies;
    g->mask_lanes = -1;
    g->masktab_lbl = -1;
    enum vox_status s = vox_jit_asm_create(ctx, &g->a);
    if (!s)
        s = generate(g, out);
    if (g->a)
        vox_jit_asm_destroy(g->a);
    vox_free(ctx, g);
    return s;
}
