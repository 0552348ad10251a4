/*
 * test_jit_encode.c: every encoder form, checked by disassembling with GNU objdump.
 *
 * All cases are emitted into one buffer, each recording its offset and the Intel-syntax text
 * objdump must print there (whitespace collapsed, RIP displacements replaced by the "# 0x.."
 * target objdump appends). One objdump  run decodes the lot; each case must decode to exactly
 * one instruction with the expected text, and where the point is the displacement size
 * (disp8 vs disp32, EVEX disp8*N) the case also fixes the instruction's length.
 * When objdump is missing the test prints a note and passes.
 */
#include "harness.h"
#include "vox/jit.h"

#include <unistd.h>

#define MAX_CASES 400

struct enc_case {
    size_t off;
    int len;            /* expected bytes, 0: not checked */
    int32_t rip_label;  /* >= 0: append " # 0x<label offset + rip_disp>" after link */
    int32_t rip_disp;
    const char *want;
};

struct enc_list {
    struct enc_case c[MAX_CASES];
    int n;
};

static void enc_mark(struct enc_list *l, struct vox_jit_asm *a, const char *want, int len)
{
    if (l->n < MAX_CASES)
        l->c[l->n++] = (struct enc_case){vox_jit_asm_offset(a), len, -1, 0, want};
}

/* E(text, len, statement): the statement must disassemble to `text` (and be `len` bytes). */
#define E(want, len, stmt)                                                                    \
    do {                                                                                      \
        enc_mark(l, a, want, len);                                                            \
        stmt;                                                                                 \
    } while (0)

#define M vox_jit_mem_b
#define MX vox_jit_mem_bis
#define BC(m) vox_jit_mem_bcst(m)
#define X(n) VOX_JIT_XMM(n)
#define Y(n) VOX_JIT_YMM(n)
#define Z(n) VOX_JIT_ZMM(n)
#define K(n) VOX_JIT_K(n)
#define KM(n) VOX_JIT_KMASK(n)

static void emit_gpr(struct vox_jit_asm *a, struct enc_list *l)
{
    E("mov rax,rbx", 3, vox_jit_op_rr(a, VOX_JIT_MOV, VOX_JIT_RAX, VOX_JIT_RBX));
    E("mov r8,r15", 3, vox_jit_op_rr(a, VOX_JIT_MOV, VOX_JIT_R8, VOX_JIT_R15));
    E("mov eax,r9d", 3, vox_jit_op_rr(a, VOX_JIT_MOV, VOX_JIT_EAX, VOX_JIT_R9D));
    E("mov r12d,ecx", 3, vox_jit_op_rr(a, VOX_JIT_MOV, VOX_JIT_R12D, VOX_JIT_ECX));
    E("mov eax,0x5", 5, vox_jit_op_ri(a, VOX_JIT_MOV, VOX_JIT_RAX, 5));
    E("mov r11d,0x80000000", 6, vox_jit_op_ri(a, VOX_JIT_MOV, VOX_JIT_R11, 0x80000000ll));
    E("mov rax,0xffffffffffffffff", 7, vox_jit_op_ri(a, VOX_JIT_MOV, VOX_JIT_RAX, -1));
    E("movabs r9,0x123456789abc", 10,
      vox_jit_op_ri(a, VOX_JIT_MOV, VOX_JIT_R9, 0x123456789abcll));
    E("movabs rdx,0x8000000000000000", 10,
      vox_jit_op_ri(a, VOX_JIT_MOV, VOX_JIT_RDX, INT64_MIN));
    E("mov r10d,0xffffffff", 6, vox_jit_op_ri(a, VOX_JIT_MOV, VOX_JIT_R10D, 0xffffffffll));
    /* addressing forms */
    E("mov rax,QWORD PTR [rbx]", 3, vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_RAX, M(VOX_JIT_RBX, 0)));
    E("mov rax,QWORD PTR [rsp]", 4, vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_RAX, M(VOX_JIT_RSP, 0)));
    E("mov rax,QWORD PTR [r12]", 4, vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_RAX, M(VOX_JIT_R12, 0)));
    E("mov rax,QWORD PTR [rbp+0x0]", 4,
      vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_RAX, M(VOX_JIT_RBP, 0)));
    E("mov rax,QWORD PTR [r13+0x0]", 4,
      vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_RAX, M(VOX_JIT_R13, 0)));
    E("mov rcx,QWORD PTR [rbx+0x7f]", 4,
      vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_RCX, M(VOX_JIT_RBX, 127)));
    E("mov rcx,QWORD PTR [rbx+0x80]", 7,
      vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_RCX, M(VOX_JIT_RBX, 128)));
    E("mov rcx,QWORD PTR [rbx-0x80]", 4,
      vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_RCX, M(VOX_JIT_RBX, -128)));
    E("mov rcx,QWORD PTR [rbx-0x81]", 7,
      vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_RCX, M(VOX_JIT_RBX, -129)));
    E("mov rdx,QWORD PTR [rsp+0x7f]", 5,
      vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_RDX, M(VOX_JIT_RSP, 127)));
    E("mov rdx,QWORD PTR [r12+0x80]", 8,
      vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_RDX, M(VOX_JIT_R12, 128)));
    E("mov rax,QWORD PTR [rax+rcx*1]", 4,
      vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_RAX, MX(VOX_JIT_RAX, VOX_JIT_RCX, 1, 0)));
    E("mov rax,QWORD PTR [rax+rcx*2+0x8]", 5,
      vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_RAX, MX(VOX_JIT_RAX, VOX_JIT_RCX, 2, 8)));
    E("mov rax,QWORD PTR [rax+rcx*4-0x8]", 5,
      vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_RAX, MX(VOX_JIT_RAX, VOX_JIT_RCX, 4, -8)));
    E("mov r14,QWORD PTR [r8+r9*8+0x100]", 8,
      vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_R14, MX(VOX_JIT_R8, VOX_JIT_R9, 8, 256)));
    E("mov rax,QWORD PTR [rsp+r12*1]", 4,
      vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_RAX, MX(VOX_JIT_RSP, VOX_JIT_R12, 1, 0)));
    E("mov rax,QWORD PTR [r13+r13*2+0x0]", 5,
      vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_RAX, MX(VOX_JIT_R13, VOX_JIT_R13, 2, 0)));
    E("mov rax,QWORD PTR [rbp+rax*1+0x0]", 5,
      vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_RAX, MX(VOX_JIT_RBP, VOX_JIT_RAX, 1, 0)));
    E("mov rax,QWORD PTR [rcx*4+0x10]", 8,
      vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_RAX, MX(VOX_JIT_NONE, VOX_JIT_RCX, 4, 16)));
    E("mov r15,QWORD PTR [r12+0x10]", 5,
      vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_R15, M(VOX_JIT_R12, 16)));
    E("mov DWORD PTR [rax],ecx", 2, vox_jit_op_mr(a, VOX_JIT_MOV, M(VOX_JIT_RAX, 0), VOX_JIT_ECX));
    E("mov QWORD PTR [rdi+0x8],r11", 4,
      vox_jit_op_mr(a, VOX_JIT_MOV, M(VOX_JIT_RDI, 8), VOX_JIT_R11));
    E("mov r8d,DWORD PTR [rsi+rdx*4]", 4,
      vox_jit_op_rm(a, VOX_JIT_MOV, VOX_JIT_R8D, MX(VOX_JIT_RSI, VOX_JIT_RDX, 4, 0)));
    /* arithmetic */
    E("add rax,rbx", 3, vox_jit_op_rr(a, VOX_JIT_ADD, VOX_JIT_RAX, VOX_JIT_RBX));
    E("or ecx,edx", 2, vox_jit_op_rr(a, VOX_JIT_OR, VOX_JIT_ECX, VOX_JIT_EDX));
    E("and r8,r9", 3, vox_jit_op_rr(a, VOX_JIT_AND, VOX_JIT_R8, VOX_JIT_R9));
    E("sub rsp,0x8", 4, vox_jit_op_ri(a, VOX_JIT_SUB, VOX_JIT_RSP, 8));
    E("xor eax,eax", 2, vox_jit_op_rr(a, VOX_JIT_XOR, VOX_JIT_EAX, VOX_JIT_EAX));
    E("cmp r10,r11", 3, vox_jit_op_rr(a, VOX_JIT_CMP, VOX_JIT_R10, VOX_JIT_R11));
    E("add rax,0x7f", 4, vox_jit_op_ri(a, VOX_JIT_ADD, VOX_JIT_RAX, 127));
    E("add rax,0x80", 7, vox_jit_op_ri(a, VOX_JIT_ADD, VOX_JIT_RAX, 128));
    E("sub rcx,0xffffffffffffff80", 4, vox_jit_op_ri(a, VOX_JIT_SUB, VOX_JIT_RCX, -128));
    E("sub rcx,0xffffffffffffff7f", 7, vox_jit_op_ri(a, VOX_JIT_SUB, VOX_JIT_RCX, -129));
    E("cmp edx,0xffffffff", 3, vox_jit_op_ri(a, VOX_JIT_CMP, VOX_JIT_EDX, 0xffffffffll));
    E("and r12,0x7fffffff", 7, vox_jit_op_ri(a, VOX_JIT_AND, VOX_JIT_R12, INT32_MAX));
    E("xor r13d,0x1", 4, vox_jit_op_ri(a, VOX_JIT_XOR, VOX_JIT_R13D, 1));
    E("or r15,0xffffffff80000000", 7, vox_jit_op_ri(a, VOX_JIT_OR, VOX_JIT_R15, INT32_MIN));
    E("add rax,QWORD PTR [rsi+0x8]", 4,
      vox_jit_op_rm(a, VOX_JIT_ADD, VOX_JIT_RAX, M(VOX_JIT_RSI, 8)));
    E("sub r9d,DWORD PTR [rax]", 3, vox_jit_op_rm(a, VOX_JIT_SUB, VOX_JIT_R9D, M(VOX_JIT_RAX, 0)));
    E("cmp QWORD PTR [rbx],rax", 3, vox_jit_op_mr(a, VOX_JIT_CMP, M(VOX_JIT_RBX, 0), VOX_JIT_RAX));
    E("add QWORD PTR [rsp+0x8],0x1", 6, vox_jit_op_mi(a, VOX_JIT_ADD, M(VOX_JIT_RSP, 8), 64, 1));
    E("mov DWORD PTR [rax],0x2a", 6, vox_jit_op_mi(a, VOX_JIT_MOV, M(VOX_JIT_RAX, 0), 32, 42));
    E("cmp DWORD PTR [r13+0x0],0x1000", 8,
      vox_jit_op_mi(a, VOX_JIT_CMP, M(VOX_JIT_R13, 0), 32, 4096));
    E("test rax,rax", 3, vox_jit_op_rr(a, VOX_JIT_TEST, VOX_JIT_RAX, VOX_JIT_RAX));
    E("test r8d,r9d", 3, vox_jit_op_rr(a, VOX_JIT_TEST, VOX_JIT_R8D, VOX_JIT_R9D));
    E("test eax,0x10", 6, vox_jit_op_ri(a, VOX_JIT_TEST, VOX_JIT_EAX, 16));
    E("imul rax,rbx", 4, vox_jit_op_rr(a, VOX_JIT_IMUL, VOX_JIT_RAX, VOX_JIT_RBX));
    E("imul r8d,r9d", 4, vox_jit_op_rr(a, VOX_JIT_IMUL, VOX_JIT_R8D, VOX_JIT_R9D));
    E("imul rax,rcx,0x3", 4, vox_jit_imul_rri(a, VOX_JIT_RAX, VOX_JIT_RCX, 3));
    E("imul r10,r11,0x1000", 7, vox_jit_imul_rri(a, VOX_JIT_R10, VOX_JIT_R11, 4096));
    E("imul rdx,QWORD PTR [rax]", 4,
      vox_jit_op_rm(a, VOX_JIT_IMUL, VOX_JIT_RDX, M(VOX_JIT_RAX, 0)));
    E("imul rax,rax,0x5", 4, vox_jit_op_ri(a, VOX_JIT_IMUL, VOX_JIT_RAX, 5));
    E("lea rax,[rbx+rcx*8+0x10]", 5,
      vox_jit_op_rm(a, VOX_JIT_LEA, VOX_JIT_RAX, MX(VOX_JIT_RBX, VOX_JIT_RCX, 8, 16)));
    E("lea r13,[r13+0x0]", 4, vox_jit_op_rm(a, VOX_JIT_LEA, VOX_JIT_R13, M(VOX_JIT_R13, 0)));
    E("lea rsp,[rsp-0x200]", 8, vox_jit_op_rm(a, VOX_JIT_LEA, VOX_JIT_RSP, M(VOX_JIT_RSP, -512)));
    E("inc rax", 3, vox_jit_op_r(a, VOX_JIT_INC, VOX_JIT_RAX));
    E("dec r11d", 3, vox_jit_op_r(a, VOX_JIT_DEC, VOX_JIT_R11D));
    E("neg rcx", 3, vox_jit_op_r(a, VOX_JIT_NEG, VOX_JIT_RCX));
    E("not r9", 3, vox_jit_op_r(a, VOX_JIT_NOT, VOX_JIT_R9));
    E("push rbx", 1, vox_jit_op_r(a, VOX_JIT_PUSH, VOX_JIT_RBX));
    E("push r12", 2, vox_jit_op_r(a, VOX_JIT_PUSH, VOX_JIT_R12));
    E("pop r15", 2, vox_jit_op_r(a, VOX_JIT_POP, VOX_JIT_R15));
    E("pop rbp", 1, vox_jit_op_r(a, VOX_JIT_POP, VOX_JIT_RBP));
    E("call rax", 2, vox_jit_op_r(a, VOX_JIT_CALL, VOX_JIT_RAX));
    E("call r11", 3, vox_jit_op_r(a, VOX_JIT_CALL, VOX_JIT_R11));
    E("shl rax,0x3", 4, vox_jit_op_ri(a, VOX_JIT_SHL, VOX_JIT_RAX, 3));
    E("shr r9d,0x1f", 4, vox_jit_op_ri(a, VOX_JIT_SHR, VOX_JIT_R9D, 31));
    E("sar rdx,0x3f", 4, vox_jit_op_ri(a, VOX_JIT_SAR, VOX_JIT_RDX, 63));
    E("ret", 1, vox_jit_ret(a));
    E("prefetcht0 BYTE PTR [rdx+0x1000]", 7, vox_jit_prefetch(a, M(VOX_JIT_RDX, 4096), 1));
    E("prefetchnta BYTE PTR [r8+0x40]", 5, vox_jit_prefetch(a, M(VOX_JIT_R8, 64), 0));
    E("prefetcht2 BYTE PTR [rax]", 3, vox_jit_prefetch(a, M(VOX_JIT_RAX, 0), 3));
}

/* Jumps: every condition backward (rel8), forward (rel32), and backward out of rel8 reach. */
static void emit_jumps(struct vox_jit_asm *a, struct enc_list *l, char *texts, size_t cap)
{
    static const char *const cc[16] = {"jo", "jno", "jb", "jae", "je", "jne", "jbe", "ja",
                                       "js", "jns", "jp", "jnp", "jl", "jge", "jle", "jg"};
    int32_t back = vox_jit_label_new(a), fwd = vox_jit_label_new(a);
    size_t top = vox_jit_asm_offset(a);
    vox_jit_label_bind(a, back);
    size_t used = 0;
    for (int c = 0; c < 16; c++) {
        char *t = texts + used;
        used += (size_t)snprintf(t, cap - used, "%s 0x%zx", cc[c], top) + 1;
        E(t, 2, vox_jit_jcc(a, (enum vox_jit_cc)c, back));
    }
    char *tj = texts + used;
    used += (size_t)snprintf(tj, cap - used, "jmp 0x%zx", top) + 1;
    E(tj, 2, vox_jit_jmp(a, back));
    size_t jf = vox_jit_asm_offset(a);
    vox_jit_jcc(a, VOX_JIT_CC_NE, fwd); /* 6 bytes */
    vox_jit_jmp(a, fwd);                /* 5 bytes */
    for (int i = 0; i < 13; i++)         /* 130 bytes: the backward jumps need rel32 */
        vox_jit_op_ri(a, VOX_JIT_MOV, VOX_JIT_R9, INT64_MIN);
    size_t target = vox_jit_asm_offset(a);
    vox_jit_label_bind(a, fwd);
    char *t1 = texts + used;
    used += (size_t)snprintf(t1, cap - used, "jne 0x%zx", target) + 1;
    char *t2 = texts + used;
    used += (size_t)snprintf(t2, cap - used, "jmp 0x%zx", target) + 1;
    char *t3 = texts + used;
    used += (size_t)snprintf(t3, cap - used, "jl 0x%zx", top) + 1;
    char *t4 = texts + used;
    snprintf(t4, cap - used, "jmp 0x%zx", top);
    l->c[l->n++] = (struct enc_case){jf, 6, -1, 0, t1};
    l->c[l->n++] = (struct enc_case){jf + 6, 5, -1, 0, t2};
    E(t3, 6, vox_jit_jcc(a, VOX_JIT_CC_L, back));
    E(t4, 5, vox_jit_jmp(a, back));
}

static void emit_vex(struct vox_jit_asm *a, struct enc_list *l)
{
    E("vmovups ymm0,YMMWORD PTR [rax]", 4,
      vox_jit_vrm(a, VOX_JIT_VMOVUPS, Y(0), M(VOX_JIT_RAX, 0)));
    E("vmovups YMMWORD PTR [r8+0x20],ymm15", 6,
      vox_jit_vmr(a, VOX_JIT_VMOVUPS, M(VOX_JIT_R8, 32), Y(15)));
    E("vmovups ymm1,YMMWORD PTR [rax+0x80]", 8,
      vox_jit_vrm(a, VOX_JIT_VMOVUPS, Y(1), M(VOX_JIT_RAX, 128)));
    E("vmovups xmm1,xmm9", 5, vox_jit_vrr(a, VOX_JIT_VMOVUPS, X(1), X(9)));
    E("vmovups xmm10,XMMWORD PTR [r12+r13*2-0x10]", 7,
      vox_jit_vrm(a, VOX_JIT_VMOVUPS, X(10), MX(VOX_JIT_R12, VOX_JIT_R13, 2, -16)));
    E("vmovaps ymm2,YMMWORD PTR [rsp+0x40]", 6,
      vox_jit_vrm(a, VOX_JIT_VMOVAPS, Y(2), M(VOX_JIT_RSP, 64)));
    E("vmovaps YMMWORD PTR [rbp+0x0],ymm3", 5,
      vox_jit_vmr(a, VOX_JIT_VMOVAPS, M(VOX_JIT_RBP, 0), Y(3)));
    E("vmaskmovps ymm0,ymm1,YMMWORD PTR [rdi]", 5,
      vox_jit_vrrm(a, VOX_JIT_VMASKMOVPS, Y(0), Y(1), M(VOX_JIT_RDI, 0)));
    E("vmaskmovps YMMWORD PTR [rdi+r9*4],ymm2,ymm3", 6,
      vox_jit_vmrr(a, VOX_JIT_VMASKMOVPS, MX(VOX_JIT_RDI, VOX_JIT_R9, 4, 0), Y(2), Y(3)));
    E("vmaskmovps xmm14,xmm5,XMMWORD PTR [r13+0x0]", 6,
      vox_jit_vrrm(a, VOX_JIT_VMASKMOVPS, X(14), X(5), M(VOX_JIT_R13, 0)));
    E("vbroadcastss ymm0,DWORD PTR [rax+0x4]", 6,
      vox_jit_vrm(a, VOX_JIT_VBROADCASTSS, Y(0), M(VOX_JIT_RAX, 4)));
    E("vbroadcastss ymm8,xmm1", 5, vox_jit_vrr(a, VOX_JIT_VBROADCASTSS, Y(8), X(1)));
    E("vbroadcastss xmm2,DWORD PTR [r13+0x0]", 6,
      vox_jit_vrm(a, VOX_JIT_VBROADCASTSS, X(2), M(VOX_JIT_R13, 0)));
    E("vpbroadcastd ymm3,xmm12", 5, vox_jit_vrr(a, VOX_JIT_VPBROADCASTD, Y(3), X(12)));
    E("vpbroadcastd ymm3,DWORD PTR [rcx]", 5,
      vox_jit_vrm(a, VOX_JIT_VPBROADCASTD, Y(3), M(VOX_JIT_RCX, 0)));
    E("vfmadd231ps ymm0,ymm1,ymm2", 5, vox_jit_vrrr(a, VOX_JIT_VFMADD231PS, Y(0), Y(1), Y(2)));
    E("vfmadd231ps ymm8,ymm9,ymm15", 5, vox_jit_vrrr(a, VOX_JIT_VFMADD231PS, Y(8), Y(9), Y(15)));
    E("vfmadd231ps ymm0,ymm1,YMMWORD PTR [rax+rbx*4+0x80]", 10,
      vox_jit_vrrm(a, VOX_JIT_VFMADD231PS, Y(0), Y(1), MX(VOX_JIT_RAX, VOX_JIT_RBX, 4, 128)));
    E("vmulps ymm1,ymm2,ymm3", 4, vox_jit_vrrr(a, VOX_JIT_VMULPS, Y(1), Y(2), Y(3)));
    E("vmulps ymm1,ymm2,ymm11", 5, vox_jit_vrrr(a, VOX_JIT_VMULPS, Y(1), Y(2), Y(11)));
    E("vaddps xmm1,xmm2,xmm3", 4, vox_jit_vrrr(a, VOX_JIT_VADDPS, X(1), X(2), X(3)));
    E("vsubps ymm10,ymm11,ymm12", 5, vox_jit_vrrr(a, VOX_JIT_VSUBPS, Y(10), Y(11), Y(12)));
    E("vmaxps ymm0,ymm0,YMMWORD PTR [rsi]", 4,
      vox_jit_vrrm(a, VOX_JIT_VMAXPS, Y(0), Y(0), M(VOX_JIT_RSI, 0)));
    E("vminps ymm15,ymm14,ymm13", 5, vox_jit_vrrr(a, VOX_JIT_VMINPS, Y(15), Y(14), Y(13)));
    E("vxorps ymm0,ymm0,ymm0", 4, vox_jit_vrrr(a, VOX_JIT_VXORPS, Y(0), Y(0), Y(0)));
    E("vandps ymm4,ymm5,YMMWORD PTR [r11]", 5,
      vox_jit_vrrm(a, VOX_JIT_VANDPS, Y(4), Y(5), M(VOX_JIT_R11, 0)));
    E("vpaddd ymm1,ymm2,ymm3", 4, vox_jit_vrrr(a, VOX_JIT_VPADDD, Y(1), Y(2), Y(3)));
    E("vfmadd213ps ymm1,ymm2,ymm3", 5, vox_jit_vrrr(a, VOX_JIT_VFMADD213PS, Y(1), Y(2), Y(3)));
    E("vdivps ymm9,ymm2,YMMWORD PTR [rax]", 4,
      vox_jit_vrrm(a, VOX_JIT_VDIVPS, Y(9), Y(2), M(VOX_JIT_RAX, 0)));
    E("vpslld ymm1,ymm2,0x17", 5, vox_jit_vrri(a, VOX_JIT_VPSLLD, Y(1), Y(2), 23));
    E("vpslld ymm12,ymm10,0x17", 6, vox_jit_vrri(a, VOX_JIT_VPSLLD, Y(12), Y(10), 23));
    E("vpcmpeqd ymm0,ymm0,ymm0", 4, vox_jit_vrrr(a, VOX_JIT_VPCMPEQD, Y(0), Y(0), Y(0)));
    E("vgatherdps ymm0,DWORD PTR [rax+ymm1*4],ymm2", 6,
      vox_jit_vgatherdps(a, Y(0), MX(VOX_JIT_RAX, Y(1), 4, 0), Y(2)));
    E("vgatherdps xmm3,DWORD PTR [r8+xmm12*4+0x10],xmm4", 7,
      vox_jit_vgatherdps(a, X(3), MX(VOX_JIT_R8, X(12), 4, 16), X(4)));
    E("vgatherdps ymm9,DWORD PTR [rsp+ymm4*1],ymm10", 6,
      vox_jit_vgatherdps(a, Y(9), MX(VOX_JIT_RSP, Y(4), 1, 0), Y(10)));
    E("vgatherdps ymm5,DWORD PTR [rbp+ymm6*8+0x0],ymm7", 7,
      vox_jit_vgatherdps(a, Y(5), MX(VOX_JIT_RBP, Y(6), 8, 0), Y(7)));
    E("vzeroupper", 3, vox_jit_vzeroupper(a));
    E("kmovw k1,eax", 4, vox_jit_kmovw(a, K(1), VOX_JIT_EAX));
    E("kmovw k7,r12d", 5, vox_jit_kmovw(a, K(7), VOX_JIT_R12D));
    E("kmovw eax,k2", 4, vox_jit_kmovw(a, VOX_JIT_EAX, K(2)));
    E("kmovw r9d,k3", 4, vox_jit_kmovw(a, VOX_JIT_R9D, K(3)));
    E("kmovw k1,k2", 4, vox_jit_kmovw(a, K(1), K(2)));
}

static void emit_evex(struct vox_jit_asm *a, struct enc_list *l, char *texts, size_t cap)
{
    E("vmovups zmm0,ZMMWORD PTR [rax]", 6,
      vox_jit_vrm(a, VOX_JIT_VMOVUPS, Z(0), M(VOX_JIT_RAX, 0)));
    E("vmovups zmm31,ZMMWORD PTR [r15+0x40]", 7,
      vox_jit_vrm(a, VOX_JIT_VMOVUPS, Z(31), M(VOX_JIT_R15, 64)));
    E("vmovups zmm1,ZMMWORD PTR [rax+0x20]", 10,
      vox_jit_vrm(a, VOX_JIT_VMOVUPS, Z(1), M(VOX_JIT_RAX, 32)));
    E("vmovups zmm2,ZMMWORD PTR [rax+0x1fc0]", 7,
      vox_jit_vrm(a, VOX_JIT_VMOVUPS, Z(2), M(VOX_JIT_RAX, 127 * 64)));
    E("vmovups zmm2,ZMMWORD PTR [rax+0x2000]", 10,
      vox_jit_vrm(a, VOX_JIT_VMOVUPS, Z(2), M(VOX_JIT_RAX, 128 * 64)));
    E("vmovups zmm2,ZMMWORD PTR [rax-0x2000]", 7,
      vox_jit_vrm(a, VOX_JIT_VMOVUPS, Z(2), M(VOX_JIT_RAX, -128 * 64)));
    E("vmovups zmm2,ZMMWORD PTR [rax-0x2040]", 10,
      vox_jit_vrm(a, VOX_JIT_VMOVUPS, Z(2), M(VOX_JIT_RAX, -129 * 64)));
    E("vmovups zmm1{k1}{z},ZMMWORD PTR [rsp]", 7,
      vox_jit_vrm(a, VOX_JIT_VMOVUPS, Z(1) | KM(1) | VOX_JIT_ZERO, M(VOX_JIT_RSP, 0)));
    E("vmovups zmm16{k7},ZMMWORD PTR [rbp+0x0]", 7,
      vox_jit_vrm(a, VOX_JIT_VMOVUPS, Z(16) | KM(7), M(VOX_JIT_RBP, 0)));
    E("vmovups ZMMWORD PTR [rdi]{k3},zmm5", 6,
      vox_jit_vmr(a, VOX_JIT_VMOVUPS, M(VOX_JIT_RDI, 0), Z(5) | KM(3)));
    E("vmovups ZMMWORD PTR [r13+r14*8+0x40],zmm24", 8,
      vox_jit_vmr(a, VOX_JIT_VMOVUPS, MX(VOX_JIT_R13, VOX_JIT_R14, 8, 64), Z(24)));
    E("vmovups zmm17,zmm30", 6, vox_jit_vrr(a, VOX_JIT_VMOVUPS, Z(17), Z(30)));
    E("vmovups ymm16,YMMWORD PTR [rax+0x20]", 7,
      vox_jit_vrm(a, VOX_JIT_VMOVUPS, Y(16), M(VOX_JIT_RAX, 32)));
    E("vmovups xmm20,xmm21", 6, vox_jit_vrr(a, VOX_JIT_VMOVUPS, X(20), X(21)));
    E("vmovaps zmm9,ZMMWORD PTR [r12+0x80]", 8,
      vox_jit_vrm(a, VOX_JIT_VMOVAPS, Z(9), M(VOX_JIT_R12, 128)));
    E("vmovaps ZMMWORD PTR [rax],zmm8", 6,
      vox_jit_vmr(a, VOX_JIT_VMOVAPS, M(VOX_JIT_RAX, 0), Z(8)));
    for (int k = 1; k <= 7; k++) {
        char *t = texts + (size_t)(k - 1) * 48;
        snprintf(t, 48, "vmulps zmm%d{k%d}%s,zmm1,zmm2", k + 8, k, k & 1 ? "{z}" : "");
        E(t, 6, vox_jit_vrrr(a, VOX_JIT_VMULPS, Z(k + 8) | KM(k) | (k & 1 ? VOX_JIT_ZERO : 0),
                             Z(1), Z(2)));
    }
    E("vbroadcastss zmm0,DWORD PTR [rax+0x4]", 7,
      vox_jit_vrm(a, VOX_JIT_VBROADCASTSS, Z(0), M(VOX_JIT_RAX, 4)));
    E("vbroadcastss zmm1,DWORD PTR [rax+0x1fc]", 7,
      vox_jit_vrm(a, VOX_JIT_VBROADCASTSS, Z(1), M(VOX_JIT_RAX, 127 * 4)));
    E("vbroadcastss zmm1,DWORD PTR [rax+0x200]", 10,
      vox_jit_vrm(a, VOX_JIT_VBROADCASTSS, Z(1), M(VOX_JIT_RAX, 128 * 4)));
    E("vbroadcastss zmm1,DWORD PTR [rax+0x6]", 10,
      vox_jit_vrm(a, VOX_JIT_VBROADCASTSS, Z(1), M(VOX_JIT_RAX, 6)));
    E("vbroadcastss zmm16,xmm17", 6, vox_jit_vrr(a, VOX_JIT_VBROADCASTSS, Z(16), X(17)));
    E("vbroadcastss zmm3,xmm3", 6, vox_jit_vrr(a, VOX_JIT_VBROADCASTSS, Z(3), X(3)));
    E("vpbroadcastd zmm3,xmm4", 6, vox_jit_vrr(a, VOX_JIT_VPBROADCASTD, Z(3), X(4)));
    E("vfmadd231ps zmm0,zmm1,DWORD BCST [rax+0x4]", 7,
      vox_jit_vrrm(a, VOX_JIT_VFMADD231PS, Z(0), Z(1), BC(M(VOX_JIT_RAX, 4))));
    E("vfmadd231ps zmm0,zmm1,ZMMWORD PTR [rax+0x40]", 7,
      vox_jit_vrrm(a, VOX_JIT_VFMADD231PS, Z(0), Z(1), M(VOX_JIT_RAX, 64)));
    E("vfmadd231ps zmm31,zmm30,zmm29", 6,
      vox_jit_vrrr(a, VOX_JIT_VFMADD231PS, Z(31), Z(30), Z(29)));
    E("vfmadd231ps zmm16{k2},zmm8,zmm24", 6,
      vox_jit_vrrr(a, VOX_JIT_VFMADD231PS, Z(16) | KM(2), Z(8), Z(24)));
    E("vfmadd231ps ymm1,ymm2,DWORD BCST [rax]", 6,
      vox_jit_vrrm(a, VOX_JIT_VFMADD231PS, Y(1), Y(2), BC(M(VOX_JIT_RAX, 0))));
    E("vfmadd231ps zmm0{k1}{z},zmm1,DWORD BCST [rax+r12*4+0x200]", 11,
      vox_jit_vrrm(a, VOX_JIT_VFMADD231PS, Z(0) | KM(1) | VOX_JIT_ZERO, Z(1),
                   BC(MX(VOX_JIT_RAX, VOX_JIT_R12, 4, 512))));
    E("vfmadd231ps zmm20,zmm21,DWORD BCST [r9-0x200]", 7,
      vox_jit_vrrm(a, VOX_JIT_VFMADD231PS, Z(20), Z(21), BC(M(VOX_JIT_R9, -512))));
    E("vaddps zmm0,zmm1,zmm2", 6, vox_jit_vrrr(a, VOX_JIT_VADDPS, Z(0), Z(1), Z(2)));
    E("vsubps zmm3,zmm4,ZMMWORD PTR [rcx+0x80]", 7,
      vox_jit_vrrm(a, VOX_JIT_VSUBPS, Z(3), Z(4), M(VOX_JIT_RCX, 128)));
    E("vmaxps zmm5,zmm25,zmm6", 6, vox_jit_vrrr(a, VOX_JIT_VMAXPS, Z(5), Z(25), Z(6)));
    E("vminps zmm5{k4}{z},zmm5,zmm26", 6,
      vox_jit_vrrr(a, VOX_JIT_VMINPS, Z(5) | KM(4) | VOX_JIT_ZERO, Z(5), Z(26)));
    E("vxorps zmm0,zmm0,zmm0", 6, vox_jit_vrrr(a, VOX_JIT_VXORPS, Z(0), Z(0), Z(0)));
    E("vxorps xmm16,xmm16,xmm16", 6, vox_jit_vrrr(a, VOX_JIT_VXORPS, X(16), X(16), X(16)));
    E("vandps zmm7,zmm8,DWORD BCST [rdx]", 6,
      vox_jit_vrrm(a, VOX_JIT_VANDPS, Z(7), Z(8), BC(M(VOX_JIT_RDX, 0))));
    E("vpaddd zmm1,zmm2,zmm3", 6, vox_jit_vrrr(a, VOX_JIT_VPADDD, Z(1), Z(2), Z(3)));
    E("vfmadd213ps zmm1,zmm2,zmm3", 6, vox_jit_vrrr(a, VOX_JIT_VFMADD213PS, Z(1), Z(2), Z(3)));
    E("vfmadd213ps zmm17,zmm2,DWORD BCST [rdx+0x8]", 7,
      vox_jit_vrrm(a, VOX_JIT_VFMADD213PS, Z(17), Z(2), BC(M(VOX_JIT_RDX, 8))));
    E("vdivps zmm1,zmm2,zmm30", 6, vox_jit_vrrr(a, VOX_JIT_VDIVPS, Z(1), Z(2), Z(30)));
    E("vpslld zmm1,zmm2,0x17", 7, vox_jit_vrri(a, VOX_JIT_VPSLLD, Z(1), Z(2), 23));
    E("vpslld zmm20,zmm9,0x17", 7, vox_jit_vrri(a, VOX_JIT_VPSLLD, Z(20), Z(9), 23));
    E("vpslld ymm21,ymm17,0x17", 7, vox_jit_vrri(a, VOX_JIT_VPSLLD, Y(21), Y(17), 23));
    E("vgatherdps zmm0{k1},DWORD PTR [rax+zmm1*4]", 7,
      vox_jit_vgatherdps(a, Z(0), MX(VOX_JIT_RAX, Z(1), 4, 0), K(1)));
    E("vgatherdps zmm16{k7},DWORD PTR [r9+zmm24*4+0x40]", 8,
      vox_jit_vgatherdps(a, Z(16), MX(VOX_JIT_R9, Z(24), 4, 64), K(7)));
    E("vgatherdps ymm20{k2},DWORD PTR [rax+ymm21*4]", 7,
      vox_jit_vgatherdps(a, Y(20), MX(VOX_JIT_RAX, Y(21), 4, 0), K(2)));
    E("vgatherdps zmm2{k3},DWORD PTR [r13+zmm12*8+0x0]", 8,
      vox_jit_vgatherdps(a, Z(2), MX(VOX_JIT_R13, Z(12), 8, 0), K(3)));
}

/* RIP-relative operands: to code labels and to pool constants. */
static void emit_rip(struct vox_jit_asm *a, struct enc_list *l)
{
    int32_t here = vox_jit_label_new(a);
    vox_jit_label_bind(a, here);
    float c4[4] = {1, 2, 3, 4};
    int32_t pool = vox_jit_const(a, c4, sizeof c4, 16);
    int64_t one = 1;
    int32_t pool8 = vox_jit_const(a, &one, 8, 8);
    struct {
        int32_t label, disp;
    } rip[6] = {{here, 0}, {here, 8}, {pool, 0}, {pool, 4}, {pool8, 0}, {pool, 0}};
    int first = l->n;
    E("lea rax,[rip]", 7, vox_jit_op_rm(a, VOX_JIT_LEA, VOX_JIT_RAX, vox_jit_mem_rip(here, 0)));
    E("lea r12,[rip]", 7, vox_jit_op_rm(a, VOX_JIT_LEA, VOX_JIT_R12, vox_jit_mem_rip(here, 8)));
    E("vbroadcastss ymm0,DWORD PTR [rip]", 9,
      vox_jit_vrm(a, VOX_JIT_VBROADCASTSS, Y(0), vox_jit_mem_rip(pool, 0)));
    E("vbroadcastss zmm17,DWORD PTR [rip]", 10,
      vox_jit_vrm(a, VOX_JIT_VBROADCASTSS, Z(17), vox_jit_mem_rip(pool, 4)));
    E("cmp QWORD PTR [rip],0x1000", 11,
      vox_jit_op_mi(a, VOX_JIT_CMP, vox_jit_mem_rip(pool8, 0), 64, 4096));
    E("vfmadd231ps zmm1,zmm2,DWORD BCST [rip]", 10,
      vox_jit_vrrm(a, VOX_JIT_VFMADD231PS, Z(1), Z(2), BC(vox_jit_mem_rip(pool, 0))));
    for (int i = 0; i < 6; i++) {
        l->c[first + i].rip_label = rip[i].label;
        l->c[first + i].rip_disp = rip[i].disp;
    }
}

/* The horizontal-sum instructions (vectorised reductions) and scalar moves. */
static void emit_hsum(struct vox_jit_asm *a, struct enc_list *l)
{
    E("vextractf32x8 ymm1,zmm2,0x1", 7, vox_jit_vrri(a, VOX_JIT_VEXTRACTF32X8, Y(1), Z(2), 1));
    E("vextractf32x8 ymm17,zmm30,0x1", 7,
      vox_jit_vrri(a, VOX_JIT_VEXTRACTF32X8, Y(17), Z(30), 1));
    E("vextractf128 xmm1,ymm2,0x1", 6, vox_jit_vrri(a, VOX_JIT_VEXTRACTF128, X(1), Y(2), 1));
    E("vextractf128 xmm9,ymm12,0x1", 6, vox_jit_vrri(a, VOX_JIT_VEXTRACTF128, X(9), Y(12), 1));
    E("vextractf32x4 xmm3,ymm20,0x1", 7,
      vox_jit_vrri(a, VOX_JIT_VEXTRACTF128, X(3), Y(20), 1));
    E("vpermilps xmm1,xmm2,0x4e", 6, vox_jit_vrri(a, VOX_JIT_VPERMILPS, X(1), X(2), 0x4E));
    E("vpermilps xmm10,xmm3,0xb1", 6, vox_jit_vrri(a, VOX_JIT_VPERMILPS, X(10), X(3), 0xB1));
    E("vpermilps xmm18,xmm19,0xb1", 7, vox_jit_vrri(a, VOX_JIT_VPERMILPS, X(18), X(19), 0xB1));
    E("vpermilps ymm1,ymm2,0x1b", 6, vox_jit_vrri(a, VOX_JIT_VPERMILPS, Y(1), Y(2), 0x1B));
    E("vaddps ymm20,ymm20,ymm3", 6, vox_jit_vrrr(a, VOX_JIT_VADDPS, Y(20), Y(20), Y(3)));
    E("vaddps xmm17,xmm17,xmm1", 6, vox_jit_vrrr(a, VOX_JIT_VADDPS, X(17), X(17), X(1)));
    E("vmovss xmm1,DWORD PTR [rax+0x4]", 5,
      vox_jit_vrm(a, VOX_JIT_VMOVSS, X(1), M(VOX_JIT_RAX, 4)));
    E("vmovss DWORD PTR [r9+0x8],xmm12", 6,
      vox_jit_vmr(a, VOX_JIT_VMOVSS, M(VOX_JIT_R9, 8), X(12)));
    E("vmovss DWORD PTR [rdx+0x40],xmm25", 7,
      vox_jit_vmr(a, VOX_JIT_VMOVSS, M(VOX_JIT_RDX, 64), X(25)));
    E("vmovss xmm16,DWORD PTR [rsi+0x1fc]", 7,
      vox_jit_vrm(a, VOX_JIT_VMOVSS, X(16), M(VOX_JIT_RSI, 508)));
    E("vmovups ZMMWORD PTR [rax]{k2},zmm3", 6,
      vox_jit_vmr(a, VOX_JIT_VMOVUPS, M(VOX_JIT_RAX, 0), Z(3) | KM(2)));
}

/* ---- objdump --------------------------------------------------------------------------- */

struct dis_line {
    size_t addr;
    char text[128];
};

/* Collapses whitespace; turns "[rip+0x..]" into "[rip]" (the target is in the comment). */
static void normalize(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    bool space = false;
    for (const char *p = in; *p && o + 2 < cap; p++) {
        if (*p == ' ' || *p == '\t' || *p == '\n') {
            space = o > 0;
            continue;
        }
        if (space)
            out[o++] = ' ';
        space = false;
        out[o++] = *p;
        if (strncmp(p, "rip", 3) == 0 && (p[3] == '+' || p[3] == '-')) {
            memcpy(out + o, "ip", 2);
            o += 2;
            p += 2;
            while (p[1] && p[1] != ']')
                p++;
        }
    }
    out[o] = '\0';
    char *b = strstr(out, "{1to"), *ptr = strstr(out, " PTR [");
    if (b && ptr) { /* older binutils print "PTR [m]{1toN}", 2.40 prints "BCST [m]" */
        memmove(b, strchr(b, '}') + 1, strlen(strchr(b, '}') + 1) + 1);
        memmove(ptr + 5, ptr + 4, strlen(ptr + 4) + 1);
        memcpy(ptr, " BCST", 5);
    }
}

/* Disassembles bytes; returns the number of lines, or -1 if objdump could not run. */
static int disassemble(const uint8_t *bytes, size_t size, struct dis_line *lines, int cap)
{
    char path[] = "/tmp/vox_jit_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    bool ok = write(fd, bytes, size) == (ssize_t)size;
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             "objdump -D -b binary -m i386:x86-64 -M intel --insn-width=16 %s 2>/dev/null", path);
    FILE *f = ok ? popen(cmd, "r") : NULL;
    int n = 0;
    char buf[512];
    while (f && n < cap && fgets(buf, sizeof buf, f)) {
        char *t1 = strchr(buf, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
        char *end;
        unsigned long addr = strtoul(buf, &end, 16);
        if (!t2 || *end != ':')
            continue;
        lines[n].addr = addr;
        normalize(t2 + 1, lines[n].text, sizeof lines[n].text);
        n++;
    }
    if (f)
        pclose(f);
    unlink(path);
    return f ? n : -1;
}

static int find_line(const struct dis_line *lines, int n, size_t addr)
{
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (lines[mid].addr == addr)
            return mid;
        if (lines[mid].addr < addr)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

static void check_cases(struct vox_ctx *ctx, struct vox_jit_asm *a, struct enc_list *l)
{
    const uint8_t *bytes;
    size_t size;
    CHECK_OK(vox_jit_asm_link(a, &bytes, &size));
    if (vox_jit_asm_status(a) != VOX_OK)
        return;
    int cap = (int)size + 16;
    struct dis_line *lines = malloc((size_t)cap * sizeof *lines);
    int n = disassemble(bytes, size, lines, cap);
    CHECK(n > 0);
    for (int i = 0; i < l->n && n > 0; i++) {
        const struct enc_case *c = &l->c[i];
        char want[160];
        snprintf(want, sizeof want, "%s", c->want);
        if (c->rip_label >= 0)
            snprintf(want, sizeof want, "%s # 0x%llx", c->want,
                     (unsigned long long)(vox_jit_label_offset(a, c->rip_label) + c->rip_disp));
        int k = find_line(lines, n, c->off);
        const char *got = k >= 0 ? lines[k].text : "(no instruction starts here)";
        size_t next = k >= 0 && k + 1 < n ? lines[k + 1].addr : size;
        bool len_ok = c->len == 0 || next - c->off == (size_t)c->len;
        if (strcmp(got, want) != 0 || !len_ok) {
            fprintf(stderr, "  at 0x%zx: want \"%s\" (%d bytes), got \"%s\" (%zu bytes):", c->off,
                    want, c->len, got, next - c->off);
            for (size_t b = c->off; b < next && b < size; b++)
                fprintf(stderr, " %02x", bytes[b]);
            fprintf(stderr, "\n");
            vox_test_failures++;
        }
    }
    free(lines);
}

static bool have_objdump(void)
{
    if (system("objdump --version >/dev/null 2>&1") == 0)
        return true;
    printf("note: objdump not found; the encoding checks are skipped\n");
    return false;
}

static void run_group(struct vox_ctx *ctx, int group)
{
    if (!have_objdump())
        return;
    struct vox_jit_asm *a;
    CHECK_OK(vox_jit_asm_create(ctx, &a));
    if (!a)
        return;
    struct enc_list *l = calloc(1, sizeof *l);
    char texts[2048];
    if (group == 0)
        emit_gpr(a, l);
    else if (group == 1)
        emit_jumps(a, l, texts, sizeof texts);
    else if (group == 2)
        emit_vex(a, l);
    else if (group == 3)
        emit_evex(a, l, texts, sizeof texts);
    else if (group == 4)
        emit_rip(a, l);
    else
        emit_hsum(a, l);
    CHECK(l->n > 0 && l->n < MAX_CASES);
    check_cases(ctx, a, l);
    free(l);
    vox_jit_asm_destroy(a);
}

static void test_encode_gpr(struct vox_ctx *ctx) { run_group(ctx, 0); }
static void test_encode_jumps(struct vox_ctx *ctx) { run_group(ctx, 1); }
static void test_encode_vex(struct vox_ctx *ctx) { run_group(ctx, 2); }
static void test_encode_evex(struct vox_ctx *ctx) { run_group(ctx, 3); }
static void test_encode_rip(struct vox_ctx *ctx) { run_group(ctx, 4); }
static void test_encode_hsum(struct vox_ctx *ctx) { run_group(ctx, 5); }

/* Wrong operand classes and immediates latch an error rather than emitting. */
static void test_encode_hsum_errors(struct vox_ctx *ctx)
{
    static const struct {
        enum vox_jit_vop op;
        int32_t dst, src;
        int imm;
    } bad[] = {{VOX_JIT_VEXTRACTF128, Y(1), Y(2), 1}, {VOX_JIT_VEXTRACTF32X8, X(1), Z(2), 1},
               {VOX_JIT_VPERMILPS, X(1), Y(2), 0},    {VOX_JIT_VPERMILPS, X(1), X(2), 256},
               {VOX_JIT_VADDPS, X(1), X(2), 0},       {VOX_JIT_VPERMILPS, X(1) | KM(1), X(2), 0}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct vox_jit_asm *a;
        CHECK_OK(vox_jit_asm_create(ctx, &a));
        if (!a)
            return;
        vox_jit_vrri(a, bad[i].op, bad[i].dst, bad[i].src, bad[i].imm);
        CHECK(vox_jit_asm_status(a) == VOX_INVALID_ARG);
        CHECK(vox_jit_asm_offset(a) == 0);
        vox_jit_asm_destroy(a);
    }
    struct vox_jit_asm *a;
    CHECK_OK(vox_jit_asm_create(ctx, &a));
    if (!a)
        return;
    vox_jit_vrm(a, VOX_JIT_VMOVSS, Y(1), M(VOX_JIT_RAX, 0));
    CHECK(vox_jit_asm_status(a) == VOX_INVALID_ARG);
    CHECK(strstr(vox_jit_asm_error(a), "vmovss") != NULL);
    vox_jit_asm_destroy(a);
}

VOX_TEST_MAIN(VOX_TEST(test_encode_gpr), VOX_TEST(test_encode_jumps), VOX_TEST(test_encode_vex),
              VOX_TEST(test_encode_evex), VOX_TEST(test_encode_rip), VOX_TEST(test_encode_hsum),
              VOX_TEST(test_encode_hsum_errors))
