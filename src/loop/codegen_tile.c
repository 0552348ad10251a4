/*
 * loop/codegen_tile.c: emits one register tile of a nest: C vectors loaded (or set to the
 * identity) into registers, the loops below the tile level, then the (fused post-ops and)
 * store.
 *
 * Key idea, after LoopNest's register blocking: a first "planning" walk over the loops below
 * the tile level collects the distinct C vectors (C offset, lanes) and gives each a register.
 * The emitting walk then fully unrolls output loops (their register is static) and runs
 * reduction loops at run time (unrolled while the body stays under a limit; the remainder and
 * the tail once after the loop). The vector ops of one reduction step are buffered and
 * flushed as a group: the operand with fewer distinct values (B's vectors in a matmul) is
 * loaded once into registers, the other is loaded per value (A's broadcasts) and used against
 * all of them, or read straight from memory (embedded broadcast {1to16} on AVX-512) when it is
 * used once. When the tile has fewer than 8 vectors, each C vector gets up to 4 accumulators
 * that the unrolled reduction steps rotate through (FMA latency x ports), summed at the store.
 * Inside a runtime reduction loop, operands whose rows are >= CG_PF_STRIDE bytes apart (B of a
 * wide matmul) are prefetched CG_PF_DIST steps ahead: hardware prefetchers stop at 4 KB pages.
 * Vector tails use AVX-512 opmask k2 or AVX2 vmaskmovps with a mask row from a table.
 * With reduction vectors (v a reduction dimension) each accumulator holds one C element's
 * lane partial sums: C is loaded into lane 0 (vmovss), and at the store the halves are
 * added (vextractf32x8, vextractf128, vpermilps) down to lane 0, stored with vmovss. A
 * reduction of one vector (v no longer than W) has no step of its own, so the points of the
 * output loops around it flush as one group and share their operands' loads.
 */
#include "codegen_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int32_t vreg(const struct cg *g, int n)
{
    return g->W == 16 ? VOX_JIT_ZMM(n) : VOX_JIT_YMM(n);
}

static void note_reg(struct cg *g, int n)
{
    if (n > g->max_reg)
        g->max_reg = n;
}

/* ---- masks and loads ------------------------------------------------------------------- */

static void set_mask(struct cg *g, int lanes)
{
    if (g->mask_lanes == lanes)
        return;
    g->mask_lanes = lanes;
    if (g->isa == VOX_ISA_AVX512) {
        vox_jit_op_ri(g->a, VOX_JIT_MOV, VOX_JIT_EAX, (1 << lanes) - 1);
        vox_jit_kmovw(g->a, VOX_JIT_K(2), VOX_JIT_EAX);
    } else {
        vox_jit_vrm(g->a, VOX_JIT_VMOVUPS, vreg(g, g->reg_mask),
                    vox_jit_mem_rip(g->masktab_lbl, (8 - lanes) * 4));
    }
}

static struct vox_jit_mem gather_mem(struct cg *g, int t, int64_t off)
{
    int64_t disp = off * 4;
    int32_t base = g->preg[t];
    if (disp < INT32_MIN || disp > INT32_MAX) {
        vox_jit_op_ri(g->a, VOX_JIT_MOV, VOX_JIT_R15, disp);
        vox_jit_op_rr(g->a, VOX_JIT_ADD, VOX_JIT_R15, base);
        base = VOX_JIT_R15;
        disp = 0;
    }
    return vox_jit_mem_bis(base, vreg(g, g->reg_gidx), 4, (int32_t)disp);
}

static void load_gather(struct cg *g, int r, const struct cg_operand *o)
{
    struct vox_jit_asm *a = g->a;
    vox_jit_vrm(a, VOX_JIT_VMOVUPS, vreg(g, g->reg_gidx), vox_jit_mem_rip(g->gidx_lbl[o->t], 0));
    vox_jit_vrrr(a, VOX_JIT_VXORPS, vreg(g, r), vreg(g, r), vreg(g, r));
    if (g->isa == VOX_ISA_AVX512) {
        vox_jit_op_ri(a, VOX_JIT_MOV, VOX_JIT_EAX, (1 << o->lanes) - 1);
        vox_jit_kmovw(a, VOX_JIT_K(1), VOX_JIT_EAX);
        vox_jit_vgatherdps(a, vreg(g, r), gather_mem(g, o->t, o->off), VOX_JIT_K(1));
    } else {
        set_mask(g, o->lanes);
        vox_jit_vrr(a, VOX_JIT_VMOVAPS, vreg(g, g->reg_gmask), vreg(g, g->reg_mask));
        vox_jit_vgatherdps(a, vreg(g, r), gather_mem(g, o->t, o->off), vreg(g, g->reg_gmask));
    }
}

/* Loads lanes elements of tensor t at off into register r (masked-off lanes are zero). */
static void load_plain(struct cg *g, int r, int t, int64_t off, int lanes)
{
    struct vox_jit_asm *a = g->a;
    struct cg_operand o = {.t = t, .lanes = lanes, .off = off};
    note_reg(g, r);
    if (g->kind[t] == CG_BCAST) {
        vox_jit_vrm(a, VOX_JIT_VBROADCASTSS, vreg(g, r), cg_mem(g, t, off));
    } else if (g->kind[t] == CG_GATHER) {
        load_gather(g, r, &o);
    } else if (lanes == g->W) {
        vox_jit_vrm(a, VOX_JIT_VMOVUPS, vreg(g, r), cg_mem(g, t, off));
    } else {
        set_mask(g, lanes);
        if (g->isa == VOX_ISA_AVX512)
            vox_jit_vrm(a, VOX_JIT_VMOVUPS, vreg(g, r) | VOX_JIT_KMASK(2) | VOX_JIT_ZERO,
                        cg_mem(g, t, off));
        else
            vox_jit_vrrm(a, VOX_JIT_VMASKMOVPS, vreg(g, r), vreg(g, g->reg_mask),
                         cg_mem(g, t, off));
    }
}

/* ---- element-wise ops ------------------------------------------------------------------ */

/* A broadcast constant of the pool as a memory operand. */
static struct vox_jit_mem cmem(struct cg *g, float x)
{
    return vox_jit_mem_rip(cg_const_vec(g, x), 0);
}

static struct vox_jit_mem cmem_bits(struct cg *g, uint32_t bits)
{
    float x;
    memcpy(&x, &bits, sizeof x);
    return cmem(g, x);
}

/* out = expm1(max(u, -87)) (and min(., 87) when `upper`: u may be large) for the vector in
 * register u (clobbered); tmp is clobbered.
 * Cody-Waite range reduction u = n ln2 + r, |r| <= ln2 / 2, with n from adding 1.5 * 2^23 + 127
 * (the rounded sum's low bits are n + 127, so shifting them into the exponent gives 2^n), a
 * degree-8 Taylor polynomial expm1(r) = r + r^2 (1/2! + r/3! + ... + r^6/8!) (truncation
 * < 2e-10 relative), and expm1(u) = 2^n expm1(r) + (2^n - 1), exact for n = 0 (|u| < ln2 / 2),
 * so small arguments keep their relative accuracy. Clamping to |u| <= 87 keeps n in
 * [-126, 126]: 2^n stays normal. */
static void emit_expm1(struct cg *g, int u, int out, int tmp, bool upper)
{
    struct vox_jit_asm *a = g->a;
    int32_t U = vreg(g, u), O = vreg(g, out), T = vreg(g, tmp);
    const float magic = 12582912.0f + 127.0f;
    vox_jit_vrrm(a, VOX_JIT_VMAXPS, U, U, cmem(g, -87.0f));
    if (upper)
        vox_jit_vrrm(a, VOX_JIT_VMINPS, U, U, cmem(g, 87.0f));
    vox_jit_vrm(a, VOX_JIT_VMOVUPS, T, cmem(g, magic));
    vox_jit_vrrm(a, VOX_JIT_VFMADD231PS, T, U, cmem(g, 1.44269504f));
    vox_jit_vrrm(a, VOX_JIT_VSUBPS, O, T, cmem(g, magic));              /* n */
    vox_jit_vrrm(a, VOX_JIT_VFMADD231PS, U, O, cmem(g, -0.693359375f)); /* r = u - n ln2 */
    vox_jit_vrrm(a, VOX_JIT_VFMADD231PS, U, O, cmem(g, 2.12194440e-4f));
    vox_jit_vrri(a, VOX_JIT_VPSLLD, T, T, 23); /* 2^n */
    static const float c[] = {1.0f / 40320, 1.0f / 5040, 1.0f / 720, 1.0f / 120,
                              1.0f / 24,    1.0f / 6,    0.5f};
    vox_jit_vrm(a, VOX_JIT_VMOVUPS, O, cmem(g, c[0]));
    for (int i = 1; i < 7; i++)
        vox_jit_vrrm(a, VOX_JIT_VFMADD213PS, O, U, cmem(g, c[i]));
    vox_jit_vrrr(a, VOX_JIT_VMULPS, O, O, U);
    vox_jit_vrrr(a, VOX_JIT_VFMADD213PS, O, U, U);        /* expm1(r) */
    vox_jit_vrrm(a, VOX_JIT_VSUBPS, U, T, cmem(g, 1.0f)); /* 2^n - 1 */
    vox_jit_vrrr(a, VOX_JIT_VFMADD213PS, O, T, U);
}

/* ELU, sigmoid and tanh of register r through expm1, in reg_tmp and the two reg_etmp:
 *   elu(x)     = max(x, 0) + expm1(min(x, 0))
 *   sigmoid(x) = 1 / (2 + expm1(-x))
 *   tanh(x)    = sign(x) * -e / (2 + e),  e = expm1(-2 |x|)
 * (no blends: each form is exact or accurate on both sides of 0). */
static void apply_exp_op(struct cg *g, int r, enum vox_nest_eltwise_kind kind)
{
    struct vox_jit_asm *a = g->a;
    int t0 = g->reg_tmp, t1 = g->reg_etmp[0], t2 = g->reg_etmp[1];
    int32_t X = vreg(g, r), T0 = vreg(g, t0), T1 = vreg(g, t1), T2 = vreg(g, t2);
    note_reg(g, t0);
    if (kind == VOX_NEST_ELU) {
        vox_jit_vrrm(a, VOX_JIT_VMINPS, T0, X, cmem(g, 0.0f));
        vox_jit_vrrm(a, VOX_JIT_VMAXPS, X, X, cmem(g, 0.0f));
        emit_expm1(g, t0, t2, t1, false);
        vox_jit_vrrr(a, VOX_JIT_VADDPS, X, X, T2);
    } else if (kind == VOX_NEST_SIGMOID) {
        vox_jit_vrrm(a, VOX_JIT_VMULPS, T0, X, cmem(g, -1.0f));
        emit_expm1(g, t0, t2, t1, true);
        vox_jit_vrrm(a, VOX_JIT_VADDPS, T2, T2, cmem(g, 2.0f));
        vox_jit_vrm(a, VOX_JIT_VMOVUPS, X, cmem(g, 1.0f));
        vox_jit_vrrr(a, VOX_JIT_VDIVPS, X, X, T2);
    } else {
        vox_jit_vrrm(a, VOX_JIT_VANDPS, T0, X, cmem_bits(g, 0x7FFFFFFFu));
        vox_jit_vrrm(a, VOX_JIT_VMULPS, T0, T0, cmem(g, -2.0f));
        emit_expm1(g, t0, t2, t1, false);
        vox_jit_vrrm(a, VOX_JIT_VADDPS, T1, T2, cmem(g, 2.0f));
        vox_jit_vrrr(a, VOX_JIT_VDIVPS, T2, T2, T1); /* -tanh(|x|) */
        vox_jit_vrrm(a, VOX_JIT_VXORPS, X, X, cmem_bits(g, 0x80000000u));
        vox_jit_vrrm(a, VOX_JIT_VANDPS, X, X, cmem_bits(g, 0x80000000u));
        vox_jit_vrrr(a, VOX_JIT_VXORPS, X, X, T2);
    }
}

/* x (op)= an element-wise op; the tensor operand (if any) goes through reg_tmp. */
static void apply_op(struct cg *g, int r, const struct vox_nest_eltwise *op, int t, int64_t off,
                     int lanes)
{
    struct vox_jit_asm *a = g->a;
    int32_t x = vreg(g, r);
    switch (op->kind) {
    case VOX_NEST_RELU:
        vox_jit_vrrm(a, VOX_JIT_VMAXPS, x, x, cmem(g, 0.0f));
        break;
    case VOX_NEST_SCALE:
        vox_jit_vrrm(a, VOX_JIT_VMULPS, x, x, cmem(g, op->param));
        break;
    case VOX_NEST_ELU:
    case VOX_NEST_SIGMOID:
    case VOX_NEST_TANH:
        apply_exp_op(g, r, op->kind);
        break;
    default:
        load_plain(g, g->reg_tmp, t, off, lanes);
        vox_jit_vrrr(a, op->kind == VOX_NEST_BIAS ? VOX_JIT_VADDPS : VOX_JIT_VMULPS, x, x,
                     vreg(g, g->reg_tmp));
        break;
    }
}

static void load_operand(struct cg *g, int r, const struct cg_operand *o)
{
    load_plain(g, r, o->t, o->off, o->lanes);
    if (o->t != VOX_NEST_A)
        return;
    for (int i = 0; i < g->nest->npre; i++)
        apply_op(g, r, &g->nest->pre[i], g->pre_t[i], o->pre_off[i], o->lanes);
}

static bool memable(const struct cg *g, const struct cg_operand *o)
{
    if (o->t == VOX_NEST_A && g->nest->npre > 0)
        return false;
    if (g->kind[o->t] == CG_PACKED)
        return o->lanes == g->W;
    return g->kind[o->t] == CG_BCAST && g->isa == VOX_ISA_AVX512;
}

static struct vox_jit_mem operand_mem(struct cg *g, const struct cg_operand *o)
{
    struct vox_jit_mem m = cg_mem(g, o->t, o->off);
    return g->kind[o->t] == CG_BCAST ? vox_jit_mem_bcst(m) : m;
}

/* ---- the vector op and the flush ------------------------------------------------------- */

/* acc (reduce)= combine(x, y): y is a register (y_reg >= 0) or memory. */
static void emit_op(struct cg *g, int acc, int x, int y_reg, struct vox_jit_mem y_mem)
{
    struct vox_jit_asm *a = g->a;
    int32_t A = vreg(g, acc), X = vreg(g, x);
    enum vox_nest_compute c = g->nest->compute;
    enum vox_jit_vop comb = c == VOX_NEST_MAX_PLUS ? VOX_JIT_VADDPS : VOX_JIT_VMULPS;
    int32_t dst = c == VOX_NEST_PLUS_MUL ? A : vreg(g, g->reg_tmp);
    enum vox_jit_vop op = c == VOX_NEST_PLUS_MUL ? VOX_JIT_VFMADD231PS : comb;
    if (y_reg >= 0)
        vox_jit_vrrr(a, op, dst, X, vreg(g, y_reg));
    else
        vox_jit_vrrm(a, op, dst, X, y_mem);
    if (c != VOX_NEST_PLUS_MUL)
        vox_jit_vrrr(a, c == VOX_NEST_MIN_MUL ? VOX_JIT_VMINPS : VOX_JIT_VMAXPS, A, dst, A);
}

static bool operand_equal(const struct cg_operand *x, const struct cg_operand *y)
{
    return memcmp(x, y, sizeof *x) == 0;
}

/* Indices of each point's distinct operand (a: A side, else B side); returns the count. */
static int distinct(const struct cg *g, bool a, int *which, int *first)
{
    int n = 0;
    for (int i = 0; i < g->npts; i++) {
        const struct cg_operand *o = a ? &g->pts[i].a : &g->pts[i].b;
        int j = 0;
        while (j < n && !operand_equal(o, a ? &g->pts[first[j]].a : &g->pts[first[j]].b))
            j++;
        if (j == n)
            first[n++] = i;
        which[i] = j;
    }
    return n;
}

/* prefetcht0 of the n distinct operands (points first[]) CG_PF_DIST reduction steps ahead. */
static void prefetch(struct cg *g, bool a, const int *first, int n)
{
    for (int i = 0; i < n; i++) {
        const struct cg_operand *o = a ? &g->pts[first[i]].a : &g->pts[first[i]].b;
        if (g->pf_off[o->t] != 0)
            vox_jit_prefetch(g->a, cg_mem(g, o->t, o->off + g->pf_off[o->t]), 1);
    }
}

static void flush(struct cg *g)
{
    if (g->npts == 0)
        return;
    int wa[CG_MAX_POINTS], wb[CG_MAX_POINTS], fa[CG_MAX_POINTS], fb[CG_MAX_POINTS];
    int na = distinct(g, true, wa, fa), nb = distinct(g, false, wb, fb);
    prefetch(g, true, fa, na);
    prefetch(g, false, fb, nb);
    bool q_is_b = nb <= na;
    int nq = q_is_b ? nb : na, np = q_is_b ? na : nb;
    int *wq = q_is_b ? wb : wa, *wp = q_is_b ? wa : wb, *fq = q_is_b ? fb : fa,
        *fp = q_is_b ? fa : fb;
    int first = g->nacc * g->copies, room = g->top_free - first + 1;
    bool qcache = nq + 1 <= room;
    int p0 = qcache ? first + nq : first;
    int np_tmp = (qcache ? room - nq : room - 1) >= 2 ? 2 : 1, qtmp = g->top_free;
    if (qcache)
        for (int i = 0; i < nq; i++)
            load_operand(g, first + i, q_is_b ? &g->pts[fq[i]].b : &g->pts[fq[i]].a);
    for (int i = 0; i < np; i++) {
        const struct cg_operand *po = q_is_b ? &g->pts[fp[i]].a : &g->pts[fp[i]].b;
        int uses = 0;
        for (int k = 0; k < g->npts; k++)
            uses += wp[k] == i;
        if (uses == 1 && qcache && memable(g, po)) {
            int k = fp[i];
            emit_op(g, g->pts[k].acc, first + wq[k], -1, operand_mem(g, po));
            continue;
        }
        int pr = p0 + i % np_tmp;
        load_operand(g, pr, po);
        for (int k = 0; k < g->npts; k++) {
            if (wp[k] != i)
                continue;
            const struct cg_operand *qo = q_is_b ? &g->pts[k].b : &g->pts[k].a;
            if (qcache) {
                emit_op(g, g->pts[k].acc, pr, first + wq[k], vox_jit_mem_b(VOX_JIT_RAX, 0));
            } else if (memable(g, qo)) {
                emit_op(g, g->pts[k].acc, pr, -1, operand_mem(g, qo));
            } else {
                load_operand(g, qtmp, qo);
                emit_op(g, g->pts[k].acc, pr, qtmp, vox_jit_mem_b(VOX_JIT_RAX, 0));
            }
        }
    }
    g->npts = 0;
}

/* ---- the walk -------------------------------------------------------------------------- */

static int find_acc(struct cg *g, const int64_t *off, int lanes)
{
    for (int i = 0; i < g->nacc; i++)
        if (g->acc_toff[i][VOX_NEST_C] == off[VOX_NEST_C] && g->acc_lanes[i] == lanes)
            return i;
    if (!g->planning || g->nacc == CG_MAX_ACC) {
        g->overflow = true;
        return 0;
    }
    memcpy(g->acc_toff[g->nacc], off, sizeof g->acc_toff[0]);
    g->acc_lanes[g->nacc] = lanes;
    return g->nacc++;
}

/* One vector op at the offsets off, lanes wide. */
static void point(struct cg *g, const int64_t *off, int lanes)
{
    int acc = find_acc(g, off, g->vred ? 1 : lanes);
    if (g->planning || g->overflow)
        return;
    if (g->npts == CG_MAX_POINTS)
        flush(g);
    struct cg_point *pt = &g->pts[g->npts++];
    memset(pt, 0, sizeof *pt);
    pt->acc = acc + g->copy * g->nacc;
    pt->a.t = VOX_NEST_A;
    pt->b.t = VOX_NEST_B;
    pt->a.lanes = pt->b.lanes = lanes;
    pt->a.off = off[VOX_NEST_A];
    pt->b.off = off[VOX_NEST_B];
    for (int i = 0; i < g->nest->npre; i++)
        if (g->pre_t[i] >= 0)
            pt->a.pre_off[i] = off[g->pre_t[i]];
}

static void shift(const struct cg *g, const int64_t *off, int d, int64_t k, int64_t *out)
{
    for (int t = 0; t < g->ntens; t++)
        out[t] = off[t] + k * g->stride[t][d];
}

static void walk(struct cg *g, int p, const int64_t *ext, const int64_t *off);

/* The innermost loop over an output v: vectors of ew lanes, the last one partial. */
static void innermost(struct cg *g, const int64_t *ext, const int64_t *off)
{
    int64_t o[CG_TENSORS];
    for (int64_t j = 0; j < ext[g->v] && !g->overflow; j += g->ew) {
        shift(g, off, g->v, j, o);
        int64_t left = ext[g->v] - j;
        point(g, o, left < g->ew ? (int)left : g->ew);
    }
}

/* Vector ops in one pass over positions p.. for the state ext. */
static int64_t count_ops(const struct cg *g, int p, const int64_t *ext)
{
    const struct vox_nest *nest = g->nest;
    int64_t n = 1;
    for (int d = 0; d < nest->ndims; d++) {
        bool looped = false;
        for (int q = p; q < nest->norder; q++)
            looped |= nest->order[q].dim == d;
        if (looped)
            n *= d == g->v ? (ext[d] + g->ew - 1) / g->ew : ext[d];
    }
    return n;
}

/* Loop p's step; the loop of reduction vectors runs a vector (W elements of v) at a time. */
static int64_t loop_step(const struct cg *g, int p)
{
    return g->vred && p == g->vpos ? g->W : g->nest->order[p].step;
}

/* Iterations [i0, i1) of loop p unrolled at static offsets; the reduction step rotates. */
static void unrolled(struct cg *g, int p, const int64_t *sub, const int64_t *off, int64_t i0,
                     int64_t i1, bool red)
{
    int d = g->nest->order[p].dim;
    int64_t s = loop_step(g, p), o[CG_TENSORS];
    for (int64_t i = i0; i < i1 && !g->overflow; i++) {
        shift(g, off, d, i * s, o);
        walk(g, p + 1, sub, o);
        if (red && !g->planning) {
            flush(g);
            g->copy = (g->copy + 1) % g->copies;
        }
    }
}

static void reduction_loop(struct cg *g, int p, const int64_t *ext, const int64_t *off)
{
    struct vox_jit_asm *a = g->a;
    int d = g->nest->order[p].dim;
    int64_t s = loop_step(g, p), e = ext[d], nfull = e / s, tail = e % s, o[CG_TENSORS];
    if (g->vred && p == g->vpos && nfull == 1 && tail == 0) {
        /* one vector of the reduction: no step of its own, so the points of the output
         * loops around it flush as one group, which loads the operand with fewer values
         * once (a flush per point reloaded it for every FMA) */
        walk(g, p + 1, ext, off);
        return;
    }
    int64_t sub[VOX_NEST_MAX_DIMS];
    memcpy(sub, ext, sizeof sub);
    sub[d] = s;
    int64_t body = count_ops(g, p + 1, sub);
    int64_t u = g->unroll / (body > 0 ? body : 1);
    u = u < 1 ? 1 : u > nfull ? nfull : u;
    /* the runtime loop's body must hold whole rotations, so step i always feeds copy
     * i % copies whatever the unrolling */
    if (g->copies > 1 && nfull >= g->copies)
        u = u < g->copies ? g->copies : u - u % g->copies;
    else if (g->copies > 1)
        u = nfull;
    int64_t nloop = u > 0 ? nfull / u : 0;
    if (g->planning || nloop <= 1) {
        unrolled(g, p, sub, off, 0, g->planning && nfull > 0 ? 1 : nfull, true);
    } else {
        flush(g);
        int64_t pf_saved[CG_TENSORS];
        memcpy(pf_saved, g->pf_off, sizeof pf_saved);
        for (int t = VOX_NEST_A; t <= VOX_NEST_B; t++)
            if (g->kind[t] == CG_PACKED && llabs(g->stride[t][d] * s) * 4 >= CG_PF_STRIDE)
                g->pf_off[t] = g->stride[t][d] * s * CG_PF_DIST;
        if (g->nested++)
            vox_jit_op_r(a, VOX_JIT_PUSH, VOX_JIT_RCX);
        int32_t top = vox_jit_label_new(a);
        vox_jit_op_ri(a, VOX_JIT_MOV, VOX_JIT_RCX, nloop);
        vox_jit_label_bind(a, top);
        g->mask_lanes = -1;
        unrolled(g, p, sub, off, 0, u, true);
        memcpy(g->pf_off, pf_saved, sizeof pf_saved);
        cg_advance(g, d, u * s);
        vox_jit_op_r(a, VOX_JIT_DEC, VOX_JIT_RCX);
        vox_jit_jcc(a, VOX_JIT_CC_NE, top);
        if (--g->nested)
            vox_jit_op_r(a, VOX_JIT_POP, VOX_JIT_RCX);
        cg_advance(g, d, -nloop * u * s);
        g->mask_lanes = -1;
        if (!g->stat_done && u > g->stat_unroll)
            g->stat_unroll = (int)u;
        unrolled(g, p, sub, off, nloop * u, nfull, true);
    }
    if (tail > 0 && !(g->planning && nfull > 0)) {
        sub[d] = tail;
        shift(g, off, d, nfull * s, o);
        walk(g, p + 1, sub, o);
        if (!g->planning) {
            flush(g);
            g->copy = (g->copy + 1) % g->copies;
        }
    }
}

static void walk(struct cg *g, int p, const int64_t *ext, const int64_t *off)
{
    const struct vox_nest *nest = g->nest;
    if (g->overflow)
        return;
    if (p == nest->norder) { /* scalar mode: one lane; reduction vectors: the v extent */
        point(g, off, g->vred ? (int)ext[g->v] : 1);
        return;
    }
    int d = nest->order[p].dim;
    if (p == nest->norder - 1 && d == g->v && !vox_nest_is_reduction(nest, d)) {
        innermost(g, ext, off);
        return;
    }
    if (vox_nest_is_reduction(nest, d)) {
        reduction_loop(g, p, ext, off);
        return;
    }
    int64_t s = nest->order[p].step, e = ext[d], sub[VOX_NEST_MAX_DIMS];
    memcpy(sub, ext, sizeof sub);
    sub[d] = s;
    unrolled(g, p, sub, off, 0, e / s, false);
    if (e % s) {
        int64_t o[CG_TENSORS];
        sub[d] = e % s;
        shift(g, off, d, e - e % s, o);
        walk(g, p + 1, sub, o);
    }
}

int cg_tile_count(struct cg *g, int p, const int64_t *ext)
{
    int64_t off[CG_TENSORS] = {0};
    g->nacc = 0;
    g->planning = true;
    g->overflow = false;
    walk(g, p, ext, off);
    g->planning = false;
    int n = g->overflow ? CG_MAX_ACC + 1 : g->nacc;
    g->overflow = false;
    return n;
}

/* ---- tile entry and exit --------------------------------------------------------------- */

static void init_accs(struct cg *g)
{
    float id = vox_nest_compute_info(g->nest->compute)->identity;
    for (int c = 0; c < g->copies; c++) {
        for (int i = 0; i < g->nacc; i++) {
            int r = i + c * g->nacc;
            note_reg(g, r);
            if (c == 0 && g->load_c && g->vred)
                vox_jit_vrm(g->a, VOX_JIT_VMOVSS, VOX_JIT_XMM(r),
                            cg_mem(g, VOX_NEST_C, g->acc_toff[i][VOX_NEST_C]));
            else if (c == 0 && g->load_c)
                load_plain(g, r, VOX_NEST_C, g->acc_toff[i][VOX_NEST_C], g->acc_lanes[i]);
            else if (id == 0.0f)
                vox_jit_vrrr(g->a, VOX_JIT_VXORPS, vreg(g, r), vreg(g, r), vreg(g, r));
            else
                vox_jit_vrm(g->a, VOX_JIT_VMOVUPS, vreg(g, r),
                            vox_jit_mem_rip(cg_const_vec(g, id), 0));
        }
    }
}

/* Adds the lanes of accumulator r into its lane 0 (tmp: a free register). */
static void hsum(struct cg *g, int r, int tmp)
{
    struct vox_jit_asm *a = g->a;
    if (g->W == 16) {
        vox_jit_vrri(a, VOX_JIT_VEXTRACTF32X8, VOX_JIT_YMM(tmp), VOX_JIT_ZMM(r), 1);
        vox_jit_vrrr(a, VOX_JIT_VADDPS, VOX_JIT_YMM(r), VOX_JIT_YMM(r), VOX_JIT_YMM(tmp));
    }
    vox_jit_vrri(a, VOX_JIT_VEXTRACTF128, VOX_JIT_XMM(tmp), VOX_JIT_YMM(r), 1);
    vox_jit_vrrr(a, VOX_JIT_VADDPS, VOX_JIT_XMM(r), VOX_JIT_XMM(r), VOX_JIT_XMM(tmp));
    vox_jit_vrri(a, VOX_JIT_VPERMILPS, VOX_JIT_XMM(tmp), VOX_JIT_XMM(r), 0x4E);
    vox_jit_vrrr(a, VOX_JIT_VADDPS, VOX_JIT_XMM(r), VOX_JIT_XMM(r), VOX_JIT_XMM(tmp));
    vox_jit_vrri(a, VOX_JIT_VPERMILPS, VOX_JIT_XMM(tmp), VOX_JIT_XMM(r), 0xB1);
    vox_jit_vrrr(a, VOX_JIT_VADDPS, VOX_JIT_XMM(r), VOX_JIT_XMM(r), VOX_JIT_XMM(tmp));
}

static void store_accs(struct cg *g)
{
    struct vox_jit_asm *a = g->a;
    const struct vox_nest *nest = g->nest;
    enum vox_jit_vop red = nest->compute == VOX_NEST_PLUS_MUL  ? VOX_JIT_VADDPS
                           : nest->compute == VOX_NEST_MIN_MUL ? VOX_JIT_VMINPS
                                                               : VOX_JIT_VMAXPS;
    for (int i = 0; i < g->nacc; i++) {
        int32_t r = vreg(g, i);
        for (int c = 1; c < g->copies; c++)
            vox_jit_vrrr(a, red, r, r, vreg(g, i + c * g->nacc));
        if (g->vred)
            hsum(g, i, g->top_free);
        if (g->fuse_post)
            for (int k = 0; k < nest->npost; k++)
                apply_op(g, i, &nest->post[k], g->post_t[k],
                         g->post_t[k] >= 0 ? g->acc_toff[i][g->post_t[k]] : 0, g->acc_lanes[i]);
        int lanes = g->acc_lanes[i];
        struct vox_jit_mem m = cg_mem(g, VOX_NEST_C, g->acc_toff[i][VOX_NEST_C]);
        if (g->vred) {
            vox_jit_vmr(a, VOX_JIT_VMOVSS, m, VOX_JIT_XMM(i));
            continue;
        }
        if (lanes == g->W) {
            vox_jit_vmr(a, VOX_JIT_VMOVUPS, m, r);
            continue;
        }
        set_mask(g, lanes);
        if (g->isa == VOX_ISA_AVX512)
            vox_jit_vmr(a, VOX_JIT_VMOVUPS, m, r | VOX_JIT_KMASK(2));
        else
            vox_jit_vmrr(a, VOX_JIT_VMASKMOVPS, m, vreg(g, g->reg_mask), r);
    }
}

/* Accumulator copies for a tile of g->nacc vectors: enough to cover the FMA latency when
 * the tile is small. The generator picks them once per nest, from its largest tile
 * (cg_emit_tile uses g->nest_copies for every tile), because they split the reduction into
 * partial sums: tiles with different copies would round an output differently, and which
 * outputs fall in a tail tile depends on the shape the kernel was compiled for. */
int cg_pick_copies(const struct cg *g)
{
    const struct vox_nest *nest = g->nest;
    bool red_inside = false;
    for (int q = g->R; q < nest->norder; q++)
        red_inside |= vox_nest_is_reduction(nest, nest->order[q].dim);
    int c = g->copies_opt > 0           ? g->copies_opt
            : red_inside && g->nacc < 8 ? (8 + g->nacc - 1) / g->nacc
                                        : 1;
    c = c > 4 ? 4 : c;
    while (c > 1 && g->nacc * c > g->acc_budget)
        c--;
    return c;
}

/* The tile for one vector at the innermost loop's static offsets off. */
static void chunk(struct cg *g, const int64_t *off, int lanes)
{
    g->nacc = 1;
    g->copies = 1;
    g->copy = 0;
    memcpy(g->acc_toff[0], off, sizeof g->acc_toff[0]);
    g->acc_lanes[0] = lanes;
    init_accs(g);
    point(g, off, lanes);
    flush(g);
    store_accs(g);
}

/* No tile fits: the innermost loop runs vector by vector at run time. */
static void emit_chunked(struct cg *g, const int64_t *ext)
{
    struct vox_jit_asm *a = g->a;
    int64_t e = ext[g->v], nfull = e / g->ew, tail = e % g->ew, off[CG_TENSORS] = {0};
    if (nfull > 0) {
        int32_t top = vox_jit_label_new(a);
        vox_jit_op_ri(a, VOX_JIT_MOV, VOX_JIT_RCX, nfull);
        vox_jit_label_bind(a, top);
        g->mask_lanes = -1;
        chunk(g, off, g->ew);
        cg_advance(g, g->v, g->ew);
        vox_jit_op_r(a, VOX_JIT_DEC, VOX_JIT_RCX);
        vox_jit_jcc(a, VOX_JIT_CC_NE, top);
        cg_advance(g, g->v, -nfull * g->ew);
        g->mask_lanes = -1;
    }
    if (tail > 0) {
        shift(g, off, g->v, nfull * g->ew, off);
        chunk(g, off, (int)tail);
    }
}

void cg_emit_tile(struct cg *g, const int64_t *ext, int flags)
{
    g->max_reg = 0;
    g->load_c = g->nest->accumulate || (g->red_above && !(flags & CG_FIRST));
    g->fuse_post = !g->red_above || (flags & CG_LAST);
    if (g->chunked) {
        emit_chunked(g, ext);
    } else {
        if (cg_tile_count(g, g->R, ext) > g->acc_budget) {
            g->failed = true;
            return;
        }
        int64_t off[CG_TENSORS] = {0};
        g->copies = g->nest_copies;
        g->copy = 0;
        g->nested = 0;
        init_accs(g);
        walk(g, g->R, ext, off);
        flush(g);
        store_accs(g);
    }
    if (!g->stat_done) {
        g->stat_done = true;
        g->stat_acc = g->nacc;
        g->stat_copies = g->copies;
        g->stat_regs = g->max_reg + 1 + (g->nv - 1 - g->top_free);
        if (g->stat_unroll == 0)
            g->stat_unroll = 1;
    }
}
