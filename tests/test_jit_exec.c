/*
 * test_jit_exec.c: assembled functions run and match their C twins; W^X; error latching;
 * allocation-failure injection.
 *
 * The twins follow the same operation order (one fmaf per lane per element, masked-off lanes
 * add 0*0), so results compare bitwise. zmm code runs only when the CPU has AVX-512.
 */
#include "harness.h"
#include "vox/jit.h"

#define M vox_jit_mem_b
#define MX vox_jit_mem_bis
#define Y(n) VOX_JIT_YMM(n)
#define Z(n) VOX_JIT_ZMM(n)

static bool finalize(struct vox_ctx *ctx, struct vox_jit_asm *a, struct vox_jit_code *code)
{
    enum vox_status s = vox_jit_asm_finalize(a, code);
    CHECK_OK(s);
    return s == VOX_OK;
}

/* ---- GPR loop with forward and backward jumps ------------------------------------------ */

/* int64_t f(const int64_t *x, int64_t n): sum of (x[i] * 3 + 5) >> 1, 0 when n <= 0. */
static void build_gpr_sum(struct vox_jit_asm *a)
{
    int32_t top = vox_jit_label_new(a), done = vox_jit_label_new(a);
    vox_jit_op_r(a, VOX_JIT_PUSH, VOX_JIT_R12);
    vox_jit_op_rr(a, VOX_JIT_MOV, VOX_JIT_R12, VOX_JIT_RDI);
    vox_jit_op_rr(a, VOX_JIT_XOR, VOX_JIT_EAX, VOX_JIT_EAX);
    vox_jit_op_rr(a, VOX_JIT_TEST, VOX_JIT_RSI, VOX_JIT_RSI);
    vox_jit_jcc(a, VOX_JIT_CC_LE, done);
    vox_jit_op_rr(a, VOX_JIT_XOR, VOX_JIT_ECX, VOX_JIT_ECX);
    vox_jit_label_bind(a, top);
    vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_RDX, MX(VOX_JIT_R12, VOX_JIT_RCX, 8, 0));
    vox_jit_imul_rri(a, VOX_JIT_RDX, VOX_JIT_RDX, 3);
    vox_jit_op_ri(a, VOX_JIT_ADD, VOX_JIT_RDX, 5);
    vox_jit_op_ri(a, VOX_JIT_SAR, VOX_JIT_RDX, 1);
    vox_jit_op_rr(a, VOX_JIT_ADD, VOX_JIT_RAX, VOX_JIT_RDX);
    vox_jit_op_r(a, VOX_JIT_INC, VOX_JIT_RCX);
    vox_jit_op_rr(a, VOX_JIT_CMP, VOX_JIT_RCX, VOX_JIT_RSI);
    vox_jit_jcc(a, VOX_JIT_CC_L, top);
    vox_jit_label_bind(a, done);
    vox_jit_op_r(a, VOX_JIT_POP, VOX_JIT_R12);
    vox_jit_ret(a);
}

static void test_exec_gpr_loop(struct vox_ctx *ctx)
{
    struct vox_jit_asm *a;
    CHECK_OK(vox_jit_asm_create(ctx, &a));
    build_gpr_sum(a);
    struct vox_jit_code code;
    if (finalize(ctx, a, &code)) {
        int64_t (*f)(const int64_t *, int64_t) = (int64_t (*)(const int64_t *, int64_t))code.entry;
        int64_t x[100];
        uint64_t seed = 1;
        for (int i = 0; i < 100; i++)
            x[i] = (int64_t)(vox_test_rand(&seed) % 2001) - 1000;
        int64_t ns[] = {-3, 0, 1, 37, 100};
        for (int t = 0; t < 5; t++) {
            int64_t want = 0;
            for (int64_t i = 0; i < ns[t]; i++)
                want += (x[i] * 3 + 5) >> 1;
            CHECK(f(x, ns[t]) == want);
        }
        vox_jit_code_free(&code);
    }
    vox_jit_asm_destroy(a);
}

/* A forward jump and a backward loop both farther than rel8 reaches: returns 30. */
static void test_exec_far_jumps(struct vox_ctx *ctx)
{
    struct vox_jit_asm *a;
    CHECK_OK(vox_jit_asm_create(ctx, &a));
    int32_t fwd = vox_jit_label_new(a), top = vox_jit_label_new(a);
    vox_jit_op_rr(a, VOX_JIT_XOR, VOX_JIT_EAX, VOX_JIT_EAX);
    vox_jit_jmp(a, fwd);
    for (int i = 0; i < 15; i++)
        vox_jit_op_ri(a, VOX_JIT_MOV, VOX_JIT_RAX, 999 + ((int64_t)1 << 40));
    vox_jit_label_bind(a, fwd);
    vox_jit_op_ri(a, VOX_JIT_MOV, VOX_JIT_ECX, 10);
    vox_jit_label_bind(a, top);
    vox_jit_op_ri(a, VOX_JIT_ADD, VOX_JIT_RAX, 3);
    for (int i = 0; i < 15; i++)
        vox_jit_op_ri(a, VOX_JIT_MOV, VOX_JIT_R9, INT64_MIN);
    vox_jit_op_r(a, VOX_JIT_DEC, VOX_JIT_RCX);
    vox_jit_jcc(a, VOX_JIT_CC_NE, top);
    vox_jit_ret(a);
    struct vox_jit_code code;
    if (finalize(ctx, a, &code)) {
        CHECK(((int64_t (*)(void))code.entry)() == 30);
        vox_jit_code_free(&code);
    }
    vox_jit_asm_destroy(a);
}

/* ---- RIP-relative constants ------------------------------------------------------------ */

static void test_exec_rip_const(struct vox_ctx *ctx)
{
    struct vox_jit_asm *a;
    CHECK_OK(vox_jit_asm_create(ctx, &a));
    int64_t big = 0x0123456789abcdefll;
    int32_t entry2 = vox_jit_label_new(a);
    int32_t c = vox_jit_const(a, &big, 8, 8);
    vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_RAX, vox_jit_mem_rip(c, 0));
    vox_jit_ret(a);
    vox_jit_label_bind(a, entry2); /* a second entry: returns its own address */
    vox_jit_op_rm(a, VOX_JIT_LEA, VOX_JIT_RAX, vox_jit_mem_rip(entry2, 0));
    vox_jit_ret(a);
    struct vox_jit_code code;
    if (finalize(ctx, a, &code)) {
        CHECK(((int64_t (*)(void))code.entry)() == big);
        uint8_t *e2 = (uint8_t *)code.entry + vox_jit_label_offset(a, entry2);
        CHECK(((void *(*)(void))(void *)e2)() == e2);
        CHECK(vox_jit_label_offset(a, c) % 64 == 0);
        CHECK(memcmp((uint8_t *)code.entry + vox_jit_label_offset(a, c), &big, 8) == 0);
        vox_jit_code_free(&code);
    }
    vox_jit_asm_destroy(a);
}

/* ---- vector dot products --------------------------------------------------------------- */

/* void f(const float *x, const float *y, int64_t n, float *out): lane-wise fma accumulation
 * over 8-float vectors, a vmaskmovps tail, then out[lane] = acc[lane] * 0.5 (a RIP constant). */
static void build_dot_ymm(struct vox_jit_asm *a)
{
    int32_t masks[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    float half = 0.5f;
    int32_t tab = vox_jit_const(a, masks, sizeof masks, 32);
    int32_t ch = vox_jit_const(a, &half, 4, 4);
    int32_t top = vox_jit_label_new(a), tail = vox_jit_label_new(a);
    vox_jit_vrrr(a, VOX_JIT_VXORPS, Y(8), Y(8), Y(8));
    vox_jit_op_rr(a, VOX_JIT_MOV, VOX_JIT_RAX, VOX_JIT_RDX);
    vox_jit_op_ri(a, VOX_JIT_SHR, VOX_JIT_RAX, 3);
    vox_jit_jcc(a, VOX_JIT_CC_E, tail);
    vox_jit_label_bind(a, top);
    vox_jit_vrm(a, VOX_JIT_VMOVUPS, Y(9), M(VOX_JIT_RDI, 0));
    vox_jit_vrrm(a, VOX_JIT_VFMADD231PS, Y(8), Y(9), M(VOX_JIT_RSI, 0));
    vox_jit_op_ri(a, VOX_JIT_ADD, VOX_JIT_RDI, 32);
    vox_jit_op_ri(a, VOX_JIT_ADD, VOX_JIT_RSI, 32);
    vox_jit_op_r(a, VOX_JIT_DEC, VOX_JIT_RAX);
    vox_jit_jcc(a, VOX_JIT_CC_NE, top);
    vox_jit_label_bind(a, tail);
    vox_jit_op_ri(a, VOX_JIT_AND, VOX_JIT_EDX, 7);
    vox_jit_op_r(a, VOX_JIT_NEG, VOX_JIT_RDX);
    vox_jit_op_rm(a, VOX_JIT_LEA, VOX_JIT_R8, vox_jit_mem_rip(tab, 0));
    vox_jit_vrm(a, VOX_JIT_VMOVUPS, Y(2), MX(VOX_JIT_R8, VOX_JIT_RDX, 4, 32));
    vox_jit_vrrm(a, VOX_JIT_VMASKMOVPS, Y(1), Y(2), M(VOX_JIT_RDI, 0));
    vox_jit_vrrm(a, VOX_JIT_VMASKMOVPS, Y(3), Y(2), M(VOX_JIT_RSI, 0));
    vox_jit_vrrr(a, VOX_JIT_VFMADD231PS, Y(8), Y(1), Y(3));
    vox_jit_vrm(a, VOX_JIT_VBROADCASTSS, Y(4), vox_jit_mem_rip(ch, 0));
    vox_jit_vrrr(a, VOX_JIT_VMULPS, Y(8), Y(8), Y(4));
    vox_jit_vmr(a, VOX_JIT_VMOVUPS, M(VOX_JIT_RCX, 0), Y(8));
    vox_jit_vzeroupper(a);
    vox_jit_ret(a);
}

/* The same at 16 lanes with zmm17/zmm30, an opmask tail (mask passed in r8d) and an embedded
 * broadcast of the 0.5 constant. */
static void build_dot_zmm(struct vox_jit_asm *a)
{
    float zero = 0.0f, half = 0.5f;
    int32_t cz = vox_jit_const(a, &zero, 4, 4), ch = vox_jit_const(a, &half, 4, 4);
    int32_t top = vox_jit_label_new(a), tail = vox_jit_label_new(a);
    vox_jit_vrm(a, VOX_JIT_VBROADCASTSS, Z(17), vox_jit_mem_rip(cz, 0));
    vox_jit_op_rr(a, VOX_JIT_MOV, VOX_JIT_RAX, VOX_JIT_RDX);
    vox_jit_op_ri(a, VOX_JIT_SHR, VOX_JIT_RAX, 4);
    vox_jit_jcc(a, VOX_JIT_CC_E, tail);
    vox_jit_label_bind(a, top);
    vox_jit_vrm(a, VOX_JIT_VMOVUPS, Z(30), M(VOX_JIT_RDI, 0));
    vox_jit_vrrm(a, VOX_JIT_VFMADD231PS, Z(17), Z(30), M(VOX_JIT_RSI, 0));
    vox_jit_op_ri(a, VOX_JIT_ADD, VOX_JIT_RDI, 64);
    vox_jit_op_ri(a, VOX_JIT_ADD, VOX_JIT_RSI, 64);
    vox_jit_op_r(a, VOX_JIT_DEC, VOX_JIT_RAX);
    vox_jit_jcc(a, VOX_JIT_CC_NE, top);
    vox_jit_label_bind(a, tail);
    vox_jit_kmovw(a, VOX_JIT_K(3), VOX_JIT_R8D);
    vox_jit_vrm(a, VOX_JIT_VMOVUPS, Z(30) | VOX_JIT_KMASK(3) | VOX_JIT_ZERO, M(VOX_JIT_RDI, 0));
    vox_jit_vrm(a, VOX_JIT_VMOVUPS, Z(1) | VOX_JIT_KMASK(3) | VOX_JIT_ZERO, M(VOX_JIT_RSI, 0));
    vox_jit_vrrr(a, VOX_JIT_VFMADD231PS, Z(17), Z(30), Z(1));
    vox_jit_vrrm(a, VOX_JIT_VMULPS, Z(17), Z(17), vox_jit_mem_bcst(vox_jit_mem_rip(ch, 0)));
    vox_jit_vmr(a, VOX_JIT_VMOVUPS, M(VOX_JIT_RCX, 0), Z(17));
    vox_jit_vzeroupper(a);
    vox_jit_ret(a);
}

static void dot_twin(const float *x, const float *y, int64_t n, int lanes, float *out)
{
    float acc[16] = {0};
    int64_t padded = (n + lanes - 1) / lanes * lanes;
    for (int64_t i = 0; i < padded; i++) {
        float xv = i < n ? x[i] : 0.0f, yv = i < n ? y[i] : 0.0f;
        acc[i % lanes] = fmaf(xv, yv, acc[i % lanes]);
    }
    for (int l = 0; l < lanes; l++)
        out[l] = acc[l] * 0.5f;
}

static void run_dot(struct vox_ctx *ctx, int lanes)
{
    struct vox_jit_asm *a;
    CHECK_OK(vox_jit_asm_create(ctx, &a));
    if (lanes == 8)
        build_dot_ymm(a);
    else
        build_dot_zmm(a);
    struct vox_jit_code code;
    if (!finalize(ctx, a, &code)) {
        vox_jit_asm_destroy(a);
        return;
    }
    void (*f)(const float *, const float *, int64_t, float *, uint32_t) =
        (void (*)(const float *, const float *, int64_t, float *, uint32_t))code.entry;
    float x[200], y[200];
    uint64_t seed = 7;
    for (int i = 0; i < 200; i++) {
        x[i] = (float)(vox_test_rand(&seed) % 1000) / 100.0f - 5.0f;
        y[i] = (float)(vox_test_rand(&seed) % 1000) / 300.0f - 1.0f;
    }
    int64_t ns[] = {0, 5, 8, 15, 16, 37, 100, 200};
    for (int t = 0; t < 8; t++) {
        float got[16], want[16];
        uint32_t mask = (1u << (ns[t] % lanes)) - 1;
        f(x, y, ns[t], got, mask);
        dot_twin(x, y, ns[t], lanes, want);
        CHECK(memcmp(got, want, (size_t)lanes * sizeof(float)) == 0);
    }
    vox_jit_code_free(&code);
    vox_jit_asm_destroy(a);
}

static void test_exec_dot_ymm(struct vox_ctx *ctx)
{
    if (vox_ctx_cpu(ctx)->isa_max >= VOX_ISA_AVX2)
        run_dot(ctx, 8);
    else
        printf("note: no AVX2; ymm execution skipped\n");
}

static void test_exec_dot_zmm(struct vox_ctx *ctx)
{
    if (vox_ctx_cpu(ctx)->isa_max >= VOX_ISA_AVX512)
        run_dot(ctx, 16);
    else
        printf("note: no AVX-512; zmm execution skipped\n");
}

/* ---- gathers --------------------------------------------------------------------------- */

/* void f(const float *base, const int32_t *idx, float *out) */
static void build_gather(struct vox_jit_asm *a, bool zmm)
{
    if (zmm) {
        vox_jit_op_ri(a, VOX_JIT_MOV, VOX_JIT_EAX, 0xffff);
        vox_jit_kmovw(a, VOX_JIT_K(1), VOX_JIT_EAX);
        vox_jit_vrm(a, VOX_JIT_VMOVUPS, Z(20), M(VOX_JIT_RSI, 0));
        vox_jit_vgatherdps(a, Z(5), MX(VOX_JIT_RDI, Z(20), 4, 4), VOX_JIT_K(1));
        vox_jit_vmr(a, VOX_JIT_VMOVUPS, M(VOX_JIT_RDX, 0), Z(5));
    } else {
        vox_jit_vrm(a, VOX_JIT_VMOVUPS, Y(12), M(VOX_JIT_RSI, 0));
        vox_jit_vrrr(a, VOX_JIT_VPCMPEQD, Y(2), Y(2), Y(2));
        vox_jit_vgatherdps(a, Y(5), MX(VOX_JIT_RDI, Y(12), 4, 4), Y(2));
        vox_jit_vmr(a, VOX_JIT_VMOVUPS, M(VOX_JIT_RDX, 0), Y(5));
    }
    vox_jit_vzeroupper(a);
    vox_jit_ret(a);
}

static void test_exec_gather(struct vox_ctx *ctx)
{
    float base[64];
    int32_t idx[16];
    for (int i = 0; i < 64; i++)
        base[i] = (float)i * 1.5f;
    for (int i = 0; i < 16; i++)
        idx[i] = (i * 7 + 3) % 63;
    for (int zmm = 0; zmm < 2; zmm++) {
        if (vox_ctx_cpu(ctx)->isa_max < (zmm ? VOX_ISA_AVX512 : VOX_ISA_AVX2))
            continue;
        struct vox_jit_asm *a;
        CHECK_OK(vox_jit_asm_create(ctx, &a));
        build_gather(a, zmm);
        struct vox_jit_code code;
        if (finalize(ctx, a, &code)) {
            float out[16];
            ((void (*)(const float *, const int32_t *, float *))code.entry)(base, idx, out);
            for (int i = 0; i < (zmm ? 16 : 8); i++)
                CHECK(out[i] == base[idx[i] + 1]);
            vox_jit_code_free(&code);
        }
        vox_jit_asm_destroy(a);
    }
}

/* ---- W^X ------------------------------------------------------------------------------- */

/* The permissions ("r-xp") of the mapping holding `p`, from /proc/self/maps. */
static bool mapping_perms(const void *p, char perms[5])
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return false;
    char line[512];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perms) == 3)
            found = (uintptr_t)p >= lo && (uintptr_t)p < hi;
    }
    fclose(f);
    return found;
}

static void test_wx(struct vox_ctx *ctx)
{
    struct vox_jit_asm *a;
    CHECK_OK(vox_jit_asm_create(ctx, &a));
    build_gpr_sum(a);
    struct vox_jit_code code;
    if (finalize(ctx, a, &code)) {
        char perms[5] = "";
        if (mapping_perms(code.entry, perms))
            CHECK(strcmp(perms, "r-xp") == 0);
        else
            printf("note: /proc/self/maps unreadable; W^X check skipped\n");
        CHECK(code.size == vox_jit_asm_offset(a));
        vox_jit_code_free(&code);
        CHECK(code.entry == NULL);
        vox_jit_code_free(&code); /* a zeroed struct is left alone */
    }
    vox_jit_asm_destroy(a);
    vox_jit_asm_destroy(NULL);
}

/* ---- error latching -------------------------------------------------------------------- */

static void bad_vex_zmm16(struct vox_jit_asm *a)
{
    vox_jit_vrrm(a, VOX_JIT_VMASKMOVPS, Y(16), Y(1), M(VOX_JIT_RAX, 0));
}
static void bad_vex_zmm(struct vox_jit_asm *a)
{
    vox_jit_vrrr(a, VOX_JIT_VPCMPEQD, Z(0), Z(0), Z(0));
}
static void bad_rsp_index(struct vox_jit_asm *a)
{
    vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_RAX, MX(VOX_JIT_RAX, VOX_JIT_RSP, 1, 0));
}
static void bad_unbound(struct vox_jit_asm *a)
{
    vox_jit_jmp(a, vox_jit_label_new(a));
    vox_jit_ret(a);
}
static void bad_gpr_class(struct vox_jit_asm *a)
{
    vox_jit_op_rr(a, VOX_JIT_MOV, VOX_JIT_RAX, VOX_JIT_XMM(1));
}
static void bad_sizes(struct vox_jit_asm *a)
{
    vox_jit_op_rr(a, VOX_JIT_ADD, VOX_JIT_RAX, VOX_JIT_ECX);
}
static void bad_form(struct vox_jit_asm *a)
{
    vox_jit_op_rr(a, VOX_JIT_LEA, VOX_JIT_RAX, VOX_JIT_RCX);
}
static void bad_shift(struct vox_jit_asm *a)
{
    vox_jit_op_ri(a, VOX_JIT_SHL, VOX_JIT_RAX, 64);
}
static void bad_imm(struct vox_jit_asm *a)
{
    vox_jit_op_ri(a, VOX_JIT_ADD, VOX_JIT_RAX, (int64_t)1 << 32);
}
static void bad_zero_store(struct vox_jit_asm *a)
{
    vox_jit_vmr(a, VOX_JIT_VMOVUPS, M(VOX_JIT_RAX, 0), Z(1) | VOX_JIT_KMASK(1) | VOX_JIT_ZERO);
}
static void bad_gather_regs(struct vox_jit_asm *a)
{
    vox_jit_vgatherdps(a, Z(1), MX(VOX_JIT_RAX, Z(1), 4, 0), VOX_JIT_K(1));
}
static void bad_gather_k0(struct vox_jit_asm *a)
{
    vox_jit_vgatherdps(a, Z(1), MX(VOX_JIT_RAX, Z(2), 4, 0), VOX_JIT_K(0));
}
static void bad_kmov(struct vox_jit_asm *a)
{
    vox_jit_kmovw(a, VOX_JIT_RAX, VOX_JIT_K(1));
}
static void bad_bind_twice(struct vox_jit_asm *a)
{
    int32_t l = vox_jit_label_new(a);
    vox_jit_label_bind(a, l);
    vox_jit_label_bind(a, l);
}
static void bad_label_id(struct vox_jit_asm *a)
{
    vox_jit_jcc(a, VOX_JIT_CC_E, 99);
}
static void bad_width_mix(struct vox_jit_asm *a)
{
    vox_jit_vrrr(a, VOX_JIT_VADDPS, Z(0), Y(1), Z(2));
}
static void bad_scale(struct vox_jit_asm *a)
{
    vox_jit_vrm(a, VOX_JIT_VMOVUPS, Y(0), MX(VOX_JIT_RAX, VOX_JIT_RCX, 3, 0));
}
static void bad_bcst(struct vox_jit_asm *a)
{
    vox_jit_vrm(a, VOX_JIT_VMOVUPS, Z(0), vox_jit_mem_bcst(M(VOX_JIT_RAX, 0)));
}
static void bad_const(struct vox_jit_asm *a)
{
    float c = 1;
    vox_jit_const(a, &c, 4, 3);
}
static void bad_empty(struct vox_jit_asm *a)
{
    (void)a;
}

struct bad_case {
    void (*emit)(struct vox_jit_asm *a);
    enum vox_status status;
    const char *needle;
};

static void test_errors_latch(struct vox_ctx *ctx)
{
    static const struct bad_case cases[] = {
        {bad_vex_zmm16, VOX_UNSUPPORTED, "vmaskmovps has no EVEX form, which ymm16 needs"},
        {bad_vex_zmm, VOX_UNSUPPORTED, "vpcmpeqd has no EVEX form, which zmm needs"},
        {bad_rsp_index, VOX_INVALID_ARG, "rsp cannot be the memory index"},
        {bad_unbound, VOX_INVALID_ARG, "label 0 is used at offset 1 but never bound"},
        {bad_gpr_class, VOX_INVALID_ARG, "xmm1 is not a general-purpose register"},
        {bad_sizes, VOX_INVALID_ARG, "add rax, ecx: operand sizes differ"},
        {bad_form, VOX_INVALID_ARG, "lea has no rr form"},
        {bad_shift, VOX_INVALID_ARG, "immediate 64 does not fit"},
        {bad_imm, VOX_INVALID_ARG, "immediate 4294967296 does not fit"},
        {bad_zero_store, VOX_INVALID_ARG, "zeroing needs an opmask and a register destination"},
        {bad_gather_regs, VOX_INVALID_ARG, "must be different registers"},
        {bad_gather_k0, VOX_INVALID_ARG, "k1-k7"},
        {bad_kmov, VOX_INVALID_ARG, "kmovw rax, k1"},
        {bad_bind_twice, VOX_INVALID_ARG, "label 0 is bound twice"},
        {bad_label_id, VOX_INVALID_ARG, "label 99 does not exist"},
        {bad_width_mix, VOX_INVALID_ARG, "ymm1 is not a matching vector register"},
        {bad_scale, VOX_INVALID_ARG, "scale 3"},
        {bad_bcst, VOX_INVALID_ARG, "vmovups has no embedded broadcast"},
        {bad_const, VOX_INVALID_ARG, "aligned to 3"},
        {bad_empty, VOX_INVALID_ARG, "empty"},
    };
    struct vox_jit_asm *a;
    CHECK_OK(vox_jit_asm_create(ctx, &a));
    if (!a)
        return;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vox_jit_asm_reset(a);
        cases[i].emit(a);
        if (vox_jit_asm_status(a) != VOX_OK) {
            /* latched at emit time: every later call is a no-op and the first message stays */
            size_t at = vox_jit_asm_offset(a);
            vox_jit_op_rr(a, VOX_JIT_MOV, VOX_JIT_RAX, VOX_JIT_RBX);
            vox_jit_vrrr(a, VOX_JIT_VADDPS, Z(0), Z(1), Z(2));
            vox_jit_op_rr(a, VOX_JIT_LEA, VOX_JIT_RAX, VOX_JIT_RCX);
            CHECK(vox_jit_asm_offset(a) == at);
            CHECK(vox_jit_label_new(a) == -1);
        }
        struct vox_jit_code code;
        CHECK_STATUS(vox_jit_asm_finalize(a, &code), cases[i].status);
        CHECK(code.entry == NULL);
        CHECK_ERROR_HAS(cases[i].needle);
    }
    /* emitting after link is an error too */
    vox_jit_asm_reset(a);
    vox_jit_ret(a);
    CHECK_OK(vox_jit_asm_link(a, NULL, NULL));
    vox_jit_ret(a);
    CHECK_STATUS(vox_jit_asm_link(a, NULL, NULL), VOX_INVALID_ARG);
    CHECK_ERROR_HAS("after link");
    vox_jit_asm_destroy(a);
}

/* ---- allocation failures --------------------------------------------------------------- */

/* A function big enough to grow every buffer several times. */
static void build_big(struct vox_jit_asm *a)
{
    for (int i = 0; i < 300; i++) {
        int32_t l = vox_jit_label_new(a);
        float c = (float)i;
        int32_t k = vox_jit_const(a, &c, 4, 4);
        vox_jit_jcc(a, VOX_JIT_CC_NE, l);
        vox_jit_vrm(a, VOX_JIT_VBROADCASTSS, Z(i % 32), vox_jit_mem_rip(k, 0));
        for (int j = 0; j < 8; j++)
            vox_jit_vrrm(a, VOX_JIT_VFMADD231PS, Z(j), Z(j + 8),
                         vox_jit_mem_bcst(M(VOX_JIT_RSI, 4 * j)));
        vox_jit_label_bind(a, l);
    }
    vox_jit_ret(a);
}

static void test_alloc_failure(struct vox_ctx *ctx)
{
    struct vox_jit_asm *a;
    CHECK_OK(vox_jit_asm_create(ctx, &a));
    if (!a)
        return;
    build_big(a);
    const uint8_t *ref_bytes;
    size_t ref_size;
    CHECK_OK(vox_jit_asm_link(a, &ref_bytes, &ref_size));
    uint8_t *ref = malloc(ref_size);
    memcpy(ref, ref_bytes, ref_size);
    vox_jit_asm_reset(a); /* reuse keeps the buffers: same bytes, no new allocation */
    int64_t before = vox_ctx_alloc_count(ctx);
    build_big(a);
    const uint8_t *bytes;
    size_t size;
    CHECK_OK(vox_jit_asm_link(a, &bytes, &size));
    CHECK(vox_ctx_alloc_count(ctx) == before);
    CHECK(size == ref_size && memcmp(bytes, ref, size) == 0);
    vox_jit_asm_destroy(a);
    int failures = 0;
    for (int64_t n = 1; n < 200; n++) {
        vox_ctx_fail_alloc_at(ctx, n);
        enum vox_status s = vox_jit_asm_create(ctx, &a);
        if (s == VOX_OK) {
            build_big(a);
            struct vox_jit_code code;
            s = vox_jit_asm_finalize(a, &code);
            if (s == VOX_OK) {
                CHECK(code.size == ref_size && memcmp(code.entry, ref, ref_size) == 0);
                vox_jit_code_free(&code);
            } else {
                CHECK_ERROR_HAS("jit: out of memory growing the");
            }
            vox_jit_asm_destroy(a);
        }
        vox_ctx_fail_alloc_at(ctx, 0);
        if (s == VOX_OK)
            break;
        CHECK(s == VOX_OUT_OF_MEMORY);
        failures++;
    }
    CHECK(failures >= 5); /* the assembler, code buffer, labels, fix-ups and pool all grew */
    free(ref);
}

VOX_TEST_MAIN(VOX_TEST(test_exec_gpr_loop), VOX_TEST(test_exec_far_jumps),
              VOX_TEST(test_exec_rip_const), VOX_TEST(test_exec_dot_ymm),
              VOX_TEST(test_exec_dot_zmm), VOX_TEST(test_exec_gather), VOX_TEST(test_wx),
              VOX_TEST(test_errors_latch), VOX_TEST(test_alloc_failure))
