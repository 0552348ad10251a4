/*
 * loop/kernel.c: compiled loop-nest kernels (compile, run across the thread pool, destroy),
 * the analytic default schedule for matmul-like nests, and vox_matmul.
 *
 * Key idea: the generated function runs a run of loop 0's iterations, so threads take
 * contiguous runs of it (the pool's affine schedule where loop 0 is long: see vox_kernel_run).
 * Loop 0 must index C, so no two threads write the same element and each element sees the
 * same operations in the same order for any thread count: results are bitwise identical.
 * VOX_ISA_REF, or a nest the generator cannot lower (VOX_UNSUPPORTED), runs the interpreter
 * instead.
 */
#include "codegen.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <string.h>

struct vox_kernel {
    struct vox_ctx *ctx;
    struct vox_nest nest;
    struct cg_result cg;
    struct vox_pool *pool; /* NULL: run on the calling thread */
    int threads;
};

struct run_job {
    const struct vox_kernel *k;
    const float *ptr[CG_TENSORS];
    int64_t ntens;
};

/* ---- running --------------------------------------------------------------------------- */

enum { AFFINE_TILES = 16 }; /* runs of loop 0 a thread, where it is long enough */

static void run_range(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    const struct run_job *job = arg;
    const struct vox_kernel *k = job->k;
    const struct cg_result *cg = &k->cg;
    int d0 = k->nest.order[0].dim;
    struct cg_args args;
    memset(&args, 0, sizeof args);
    for (int t = 0; t < job->ntens; t++) {
        int64_t s = t < VOX_NEST_TENSORS ? k->nest.strides[t][d0] : 0;
        if (t >= VOX_NEST_TENSORS) {
            int e = t - VOX_NEST_TENSORS, seen = 0;
            for (int pass = 0; pass < 2; pass++)
                for (int i = 0; i < (pass ? k->nest.npost : k->nest.npre); i++) {
                    const struct vox_nest_eltwise *op = pass ? &k->nest.post[i] : &k->nest.pre[i];
                    if (vox_nest_eltwise_info(op->kind)->has_tensor && seen++ == e)
                        s = op->strides[d0];
                }
        }
        args.ptr[t] = job->ptr[t] + (cg->parallel ? lo[0] * cg->step0 * s : 0);
    }
    int64_t end_full = hi[0] < cg->n_full0 ? hi[0] : cg->n_full0;
    args.n_full = cg->parallel ? (end_full > lo[0] ? end_full - lo[0] : 0) : cg->n_full0;
    args.do_tail = !cg->parallel || hi[0] > cg->n_full0;
    ((void (*)(const struct cg_args *))cg->code.entry)(&args);
}

void vox_kernel_run(const struct vox_kernel *k, float *C, const float *A, const float *B,
                    const float *const *extra)
{
    const struct vox_nest *nest = &k->nest;
    if (!k->cg.info.jit) {
        vox_nest_interpret(k->ctx, nest, C, A, B, extra);
        return;
    }
    struct run_job job = {.k = k, .ntens = VOX_NEST_TENSORS + vox_nest_extra_count(nest)};
    job.ptr[VOX_NEST_C] = C;
    job.ptr[VOX_NEST_A] = A;
    job.ptr[VOX_NEST_B] = B;
    for (int t = VOX_NEST_TENSORS; t < job.ntens; t++)
        job.ptr[t] = extra[t - VOX_NEST_TENSORS];
    int64_t iters = k->cg.n_full0 + (k->cg.tail0 > 0);
    if (k->cg.parallel && k->pool && k->threads > 1 && iters > 1) {
        /* Long loops: AFFINE_TILES runs a thread, each thread's own first, then the others'
         * last ones, so a thread the host slows (its other tenants share the caches and
         * memory) does not hold the loop back. Short ones (a weight gradient's 4 blocks of
         * input channels): one run a thread, where a stolen run would be a quarter of the
         * loop. VD2D3D's two-thread step 2.0-4.8 % shorter with this and the nn passes'
         * affine schedules (paired steps, 12 pairs in each order, twice), RSUNet's 0.4-1.6 %. */
        const int64_t runs =
            iters >= AFFINE_TILES * k->threads ? AFFINE_TILES * k->threads : k->threads;
        int64_t n[3] = {iters, 1, 1}, tile[3] = {(iters + runs - 1) / runs, 1, 1};
        vox_pool_for(k->pool, n, tile, runs > k->threads ? VOX_SCHED_AFFINE : VOX_SCHED_STATIC,
                     run_range, &job);
    } else {
        int64_t lo[3] = {0, 0, 0}, hi[3] = {iters, 1, 1};
        run_range(&job, lo, hi, 0);
    }
}

/* ---- compile / destroy ----------------------------------------------------------------- */

static enum vox_status pick_isa(struct vox_ctx *ctx, const struct vox_kernel_options *o,
                                enum vox_isa *isa_out)
{
    const struct vox_cpu *cpu = vox_ctx_cpu(ctx);
    int isa = o && o->isa != VOX_KERNEL_ISA_AUTO ? o->isa - 1 : (int)cpu->isa;
    if (isa < VOX_ISA_REF || isa > VOX_ISA_AVX512)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "compile: options.isa %d is not VOX_KERNEL_ISA_AUTO or VOX_KERNEL_ISA(a "
                        "vox_isa)", o->isa);
    if (isa > (int)cpu->isa_max)
        return vox_fail(ctx, VOX_UNSUPPORTED, "compile: ISA %s is not available on this CPU",
                        vox_isa_str((enum vox_isa)isa));
    *isa_out = (enum vox_isa)isa;
    return VOX_OK;
}

/* With VOX_JIT_DUMP=DIR, the kernel's code bytes go to DIR/vox-START.bin (for
 * `objdump -D -b binary -m i386:x86-64`). */
static void jit_dump(const struct vox_jit_code *code)
{
    const char *dir = getenv("VOX_JIT_DUMP");
    char path[512];
    if (!dir || !code->entry ||
        snprintf(path, sizeof path, "%s/vox-%lx.bin", dir, (unsigned long)code->entry) >=
            (int)sizeof path)
        return;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return;
    ssize_t w = write(fd, code->entry, code->size);
    (void)w;
    close(fd);
}

/* With VOX_PERF_MAP set, names the kernel's code for `perf report` (which reads
 * /tmp/perf-PID.map): one appended line "START SIZE vox:NEST". A write of one short line with
 * O_APPEND is atomic, so threads compiling at once need no lock. Failures are ignored. */
static void perf_map_add(struct vox_ctx *ctx, const struct vox_nest *nest,
                         const struct vox_jit_code *code)
{
    jit_dump(code);
    if (!getenv("VOX_PERF_MAP") || !code->entry)
        return;
    char *text = NULL, path[64], line[512];
    if (vox_nest_to_string(ctx, nest, &text) != VOX_OK) {
        vox_ctx_clear_error(ctx);
        return;
    }
    snprintf(path, sizeof path, "/tmp/perf-%ld.map", (long)getpid());
    int n = snprintf(line, sizeof line, "%lx %zx vox:%.400s\n", (unsigned long)code->entry,
                     code->size, text);
    vox_free(ctx, text);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0)
        return;
    if (n > (int)sizeof line - 1)
        n = (int)sizeof line - 1, line[n - 1] = '\n';
    ssize_t w = write(fd, line, (size_t)n);
    (void)w;
    close(fd);
}

enum vox_status vox_nest_compile(struct vox_ctx *ctx, const struct vox_nest *nest,
                                 const struct vox_kernel_options *opts,
                                 struct vox_kernel **kernel_out)
{
    double t0 = vox_time_now();
    *kernel_out = NULL;
    enum vox_isa isa = VOX_ISA_REF;
    enum vox_status s = vox_nest_validate(ctx, nest);
    if (s || (s = pick_isa(ctx, opts, &isa)))
        return s;
    if (opts && (opts->unroll < 0 || opts->copies < 0 || opts->copies > 4 || opts->threads < 0))
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "compile: options unroll %d, copies %d, threads %d: expected unroll >= "
                        "0, copies 0..4, threads >= 0",
                        opts->unroll, opts->copies, opts->threads);
    struct vox_kernel *k = vox_calloc(ctx, 1, sizeof *k);
    if (!k)
        return VOX_OUT_OF_MEMORY;
    k->ctx = ctx;
    k->nest = *nest;
    k->pool = vox_ctx_pool(ctx);
    k->threads = opts && opts->threads ? opts->threads : vox_ctx_threads(ctx);
    if (k->threads > vox_ctx_threads(ctx))
        k->threads = vox_ctx_threads(ctx);
    if (isa != VOX_ISA_REF) {
        s = vox_cg_generate(ctx, nest, isa, opts ? opts->unroll : 0, opts ? opts->copies : 0,
                            &k->cg);
        if (s == VOX_UNSUPPORTED) {
            vox_log(ctx, VOX_LOG_DEBUG, "compile: interpreting: %s", vox_ctx_error(ctx));
            vox_ctx_clear_error(ctx);
            s = VOX_OK;
        } else if (s) {
            vox_free(ctx, k);
            return s;
        }
    }
    struct vox_kernel_info *info = &k->cg.info;
    if (!info->jit) {
        memset(&k->cg, 0, sizeof k->cg);
        info->isa = VOX_ISA_REF;
        info->lanes = 1;
        info->parallel_dim = -1;
        info->flops = vox_nest_flops(nest);
        info->bytes = vox_nest_bytes(nest);
    }
    info->compile_ms = (vox_time_now() - t0) * 1e3;
    if (info->jit)
        perf_map_add(ctx, nest, &k->cg.code);
    *kernel_out = k;
    return VOX_OK;
}

const struct vox_kernel_info *vox_kernel_info(const struct vox_kernel *k)
{
    return &k->cg.info;
}

void vox_kernel_destroy(struct vox_kernel *k)
{
    if (!k)
        return;
    vox_jit_code_free(&k->cg.code);
    vox_free(k->ctx, k);
}
