/*
 * ctx.c: the context a caller owns: allocator, thread pool, CPU description, log sink and the
 * last error message. Library code keeps no other mutable state.
 *
 * Errors: a failing call records a message with vox_fail() and returns the status; the caller
 * may add where it happened with vox_ctx_error_prefix(), so a user sees
 * "raw.h5:/volumes/raw: dataset not found" rather than a bare code.
 *
 * Allocation goes through the context so tests can make the n-th allocation fail (fault
 * injection) and count live allocations (leak checks without a sanitizer).
 */
#include "core/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static const char *const status_names[VOX_STATUS_COUNT] = {
    [VOX_OK] = "ok",
    [VOX_INVALID_ARG] = "invalid argument",
    [VOX_UNSUPPORTED] = "unsupported",
    [VOX_OUT_OF_MEMORY] = "out of memory",
    [VOX_IO] = "I/O error",
    [VOX_FORMAT] = "bad file format",
    [VOX_INTERNAL] = "internal error",
};

const char *vox_status_str(enum vox_status s)
{
    if ((int)s < 0 || s >= VOX_STATUS_COUNT)
        return "unknown status";
    return status_names[s];
}

void vox_assert_fail(const char *what, const char *file, int line)
{
    fprintf(stderr, "vox: internal invariant failed: %s (%s:%d)\n", what, file, line);
    abort();
}

/* The system allocator. Blocks of SYS_MAP_BYTES and more are mapped pages of their own:
 * through malloc, glibc raises its mmap threshold after each large free and then keeps later
 * blocks of up to 32 MiB in its heap, so a pipeline that frees a stage's buffers before the
 * next stage allocates would hold both resident.
 *
 * Fresh pages cost a fault and a zeroing each, and on the VMs here far more: a guest's freed
 * memory goes back to the host (virtio-balloon free page reporting), so touching it again
 * takes a host fault too, and two threads faulting at once wait for each other (the chunked
 * segmentation's two threads spent a tenth more CPU than one, in clear_page and the
 * fault path). So a freed block goes to the context's cache (at most MAP_CACHE_BYTES, the
 * oldest unmapped first), and a later allocation of any size takes from it: the smallest block
 * that holds it, its tail beyond twice the size asked unmapped; else the largest, grown in
 * place or moved by mremap (its pages kept), with at least as many bytes of the other cached
 * blocks unmapped as it grew by. A new mapping is made only when the cache is empty, so the
 * blocks in use and cached together never exceed the most the process had in use before:
 * the cache raises no peak; it keeps what was resident resident until the next stage asks
 * (and, handing out blocks cut down or grown rather than new ones, the measured peaks fell). Every
 * block has a header just below the pointer: its mapped size, or 0 for a malloc'd block.
 *
 * With vox_ctx_set_huge_pages, mappings of HUGE_MAP_BYTES and more ask for transparent huge
 * pages (madvise; Debian's kernel gives them only to regions that ask): a pass over an 84 MB
 * activation crosses 21 K pages of 4 KiB, and each TLB miss is a two-level page walk under a
 * hypervisor. Paired training steps (Zen 3, 2 vCPUs): RSUNet's two-thread step 3.1 and 3.8 %
 * shorter, VD2D3D's 1.7 and 6.6 %, n337's 0.6 and 1.4 %; one-thread steps the same within the
 * pairs' noise. But the first touch of a huge page costs more: `vox demo`'s inference (fresh
 * buffers, used a few times) took 2.49-2.76 s against 2.18-2.38 s with small pages, so it is
 * the trainer's choice, not the default. VOX_HUGEPAGES=0 or 1 overrides. */
#if defined(__SANITIZE_ADDRESS__)
/* under AddressSanitizer every block comes from malloc, so it checks the large ones too */
#define SYS_MAP_BYTES SIZE_MAX
#else
#define SYS_MAP_BYTES (256u << 10)
#endif
#define SYS_PAGE 4096u
#define HUGE_MAP_BYTES ((size_t)4 << 20)
#define MAP_CACHE_BYTES ((size_t)1 << 30)

struct sys_header {
    size_t mapped; /* bytes mapped from base, 0: from posix_memalign */
    void *base;
};

static struct map_block cache_remove(struct map_cache *c, int i)
{
    struct map_block b = c->slot[i];
    c->bytes -= b.mapped;
    c->n--;
    memmove(c->slot + i, c->slot + i + 1, (size_t)(c->n - i) * sizeof c->slot[0]);
    return b;
}

/* A cached block for `want` bytes (a multiple of the page), as the comment above says, and
 * its mapped size; or NULL (the cache empty, or mremap failed). */
static void *cache_take(struct map_cache *c, size_t want, size_t *mapped)
{
    struct map_block out[MAP_CACHE_SLOTS];
    int nout = 0;
    pthread_mutex_lock(&c->lock);
    int best = -1, big = -1;
    for (int i = 0; i < c->n; i++) {
        if (c->slot[i].mapped >= want && (best < 0 || c->slot[i].mapped < c->slot[best].mapped))
            best = i;
        if (big < 0 || c->slot[i].mapped > c->slot[big].mapped)
            big = i;
    }
    struct map_block b = {NULL, 0};
    if (best >= 0 || big >= 0)
        b = cache_remove(c, best >= 0 ? best : big);
    /* growing: unmap at least as much of the others, oldest first */
    for (size_t freed = 0; b.base && b.mapped < want && freed < want - b.mapped && c->n > 0;) {
        out[nout] = cache_remove(c, 0);
        freed += out[nout++].mapped;
    }
    pthread_mutex_unlock(&c->lock);
    for (int i = 0; i < nout; i++)
        munmap(out[i].base, out[i].mapped);
    if (!b.base)
        return NULL;
    *mapped = b.mapped;
    if (b.mapped / 2 > want) {
        munmap((char *)b.base + want, b.mapped - want);
        *mapped = want;
    } else if (b.mapped < want) {
        void *m = mremap(b.base, b.mapped, want, MREMAP_MAYMOVE);
        if (m == MAP_FAILED) {
            munmap(b.base, b.mapped);
            return NULL;
        }
        b.base = m;
        *mapped = want;
    }
    return b.base;
}

/* Keeps a freed block, unmapping the oldest ones it displaces (outside the lock). */
static void cache_put(struct map_cache *c, void *base, size_t mapped)
{
    struct map_block out[MAP_CACHE_SLOTS];
    int nout = 0;
    pthread_mutex_lock(&c->lock);
    while (c->n == MAP_CACHE_SLOTS || c->bytes + mapped > MAP_CACHE_BYTES)
        out[nout++] = cache_remove(c, 0);
    c->slot[c->n++] = (struct map_block){base, mapped};
    c->bytes += mapped;
    pthread_mutex_unlock(&c->lock);
    for (int i = 0; i < nout; i++)
        munmap(out[i].base, out[i].mapped);
}

/* sys_alloc, telling whether the block is fresh zero pages (mapped, not from the cache) */
static void *sys_alloc_fresh(struct map_cache *c, size_t bytes, size_t align, bool *fresh)
{
    size_t off = align > sizeof(struct sys_header) ? align : sizeof(struct sys_header);
    void *base = NULL;
    size_t mapped = 0;
    *fresh = false;
    if (bytes >= SYS_MAP_BYTES && align <= SYS_PAGE && bytes <= SIZE_MAX - 2 * SYS_PAGE) {
        off = SYS_PAGE;
        mapped = (bytes + off + SYS_PAGE - 1) / SYS_PAGE * SYS_PAGE;
        if (c)
            base = cache_take(c, mapped, &mapped);
        if (!base) {
            base = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (base == MAP_FAILED)
                return NULL;
#ifdef MADV_HUGEPAGE
            const char *env = getenv("VOX_HUGEPAGES");
            const bool huge = env && (*env == '0' || *env == '1') ? *env == '1' : c && c->huge;
            if (huge && mapped >= HUGE_MAP_BYTES)
                (void)madvise(base, mapped, MADV_HUGEPAGE); /* a hint: failure changes nothing */
#endif
            *fresh = true;
        }
    } else if (bytes > SIZE_MAX - off || posix_memalign(&base, align, bytes + off) != 0) {
        return NULL;
    }
    char *p = (char *)base + off;
    ((struct sys_header *)p)[-1] = (struct sys_header){mapped, base};
    return p;
}

static void *sys_alloc(void *user, size_t bytes, size_t align)
{
    bool fresh;
    return sys_alloc_fresh(user, bytes, align, &fresh);
}

static void sys_free(void *user, void *ptr)
{
    struct map_cache *c = user;
    if (!ptr)
        return;
    struct sys_header h = ((struct sys_header *)ptr)[-1];
    if (h.mapped && c && h.mapped <= MAP_CACHE_BYTES)
        cache_put(c, h.base, h.mapped);
    else if (h.mapped)
        munmap(h.base, h.mapped);
    else
        free(h.base);
}

static const struct vox_allocator system_allocator = {sys_alloc, sys_free, NULL};

static void stderr_log(void *user, enum vox_log_level level, const char *msg)
{
    static const char *const names[] = {"error", "warning", "info", "debug"};
    (void)user;
    fprintf(stderr, "vox: %s: %s\n", names[level], msg);
}

static int threads_from_env(const struct vox_cpu *cpu)
{
    const char *s = getenv("VOX_THREADS");
    if (s && *s) {
        char *end;
        long n = strtol(s, &end, 10);
        if (*end == '\0' && n >= 1 && n <= 1024)
            return (int)n;
    }
    return cpu->cores > 0 ? cpu->cores : 1;
}

enum vox_status vox_ctx_create(const struct vox_ctx_options *opt, struct vox_ctx **ctx_out)
{
    static const struct vox_ctx_options defaults = {.log_level = VOX_LOG_WARN};
    if (!opt)
        opt = &defaults;
    *ctx_out = NULL;
    struct vox_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return VOX_OUT_OF_MEMORY;
    ctx->allocator = opt->allocator ? *opt->allocator : system_allocator;
    if (!opt->allocator) {
        pthread_mutex_init(&ctx->cache.lock, NULL);
        ctx->allocator.user = &ctx->cache;
    }
    ctx->log = opt->log ? opt->log : stderr_log;
    ctx->log_user = opt->log_user;
    ctx->log_level = opt->log_level;
    char err[256] = "";
    const char *isa = opt->isa ? opt->isa : getenv("VOX_ISA");
    enum vox_status s = vox_cpu_detect(&ctx->cpu, isa, err, sizeof err);
    if (s != VOX_OK) {
        /* The context is the only place a message can live, so report on stderr-less paths
         * through the log sink before giving up. */
        ctx->log(ctx->log_user, VOX_LOG_ERROR, err);
        free(ctx);
        return s;
    }
    int threads = opt->threads > 0 ? opt->threads : threads_from_env(&ctx->cpu);
    s = vox_pool_create(ctx, threads, opt->pin_threads, &ctx->pool);
    if (s != VOX_OK) {
        free(ctx);
        return s;
    }
    *ctx_out = ctx;
    return VOX_OK;
}

bool vox_ctx_set_huge_pages(struct vox_ctx *ctx, bool on)
{
    if (!ctx || ctx->allocator.user != &ctx->cache)
        return false;
    const bool was = ctx->cache.huge;
    ctx->cache.huge = on;
    return was;
}

void vox_ctx_trim(struct vox_ctx *ctx)
{
    if (!ctx || ctx->allocator.user != &ctx->cache)
        return;
    struct map_cache *c = &ctx->cache;
    struct map_block out[MAP_CACHE_SLOTS];
    pthread_mutex_lock(&c->lock);
    const int n = c->n;
    memcpy(out, c->slot, (size_t)n * sizeof out[0]);
    c->n = 0;
    c->bytes = 0;
    pthread_mutex_unlock(&c->lock);
    for (int i = 0; i < n; i++)
        munmap(out[i].base, out[i].mapped);
}

void vox_ctx_destroy(struct vox_ctx *ctx)
{
    if (!ctx)
        return;
    vox_pool_destroy(ctx->pool);
    vox_ctx_trim(ctx);
    if (ctx->allocator.user == &ctx->cache)
        pthread_mutex_destroy(&ctx->cache.lock);
    free(ctx);
}

enum vox_status vox_fail(struct vox_ctx *ctx, enum vox_status s, const char *fmt, ...)
{
    if (ctx) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->error, sizeof ctx->error, fmt, ap);
        va_end(ap);
    }
    return s;
}

const char *vox_ctx_error(const struct vox_ctx *ctx) { return ctx ? ctx->error : ""; }

void vox_ctx_clear_error(struct vox_ctx *ctx) { ctx->error[0] = '\0'; }

void vox_ctx_error_prefix(struct vox_ctx *ctx, const char *fmt, ...)
{
    char prefix[256], old[sizeof ctx->error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, ctx->error, sizeof old);
    /* Truncation is acceptable here: the message keeps its start, which names the place. */
    size_t n = strlen(prefix);
    if (n > sizeof ctx->error - 3)
        n = sizeof ctx->error - 3;
    memcpy(ctx->error, prefix, n);
    ctx->error[n] = ':';
    ctx->error[n + 1] = ' ';
    size_t room = sizeof ctx->error - n - 3, m = strlen(old);
    m = m < room ? m : room;
    memcpy(ctx->error + n + 2, old, m);
    ctx->error[n + 2 + m] = '\0';
}

const struct vox_cpu *vox_ctx_cpu(const struct vox_ctx *ctx) { return &ctx->cpu; }

struct vox_pool *vox_ctx_pool(struct vox_ctx *ctx) { return ctx->pool; }

int vox_ctx_threads(const struct vox_ctx *ctx) { return vox_pool_threads(ctx->pool); }

void vox_log(struct vox_ctx *ctx, enum vox_log_level level, const char *fmt, ...)
{
    if (!ctx || level > ctx->log_level)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ctx->log(ctx->log_user, level, msg);
}

/* vox_alloc; *fresh tells whether the block is known to be zero pages */
static void *ctx_alloc(struct vox_ctx *ctx, size_t bytes, bool *fresh)
{
    int64_t n = __atomic_add_fetch(&ctx->alloc_count, 1, __ATOMIC_RELAXED);
    int64_t fail_at = __atomic_load_n(&ctx->fail_alloc_at, __ATOMIC_RELAXED);
    void *p = NULL;
    *fresh = false;
    if (fail_at != 0 && n == fail_at)
        p = NULL;
    else if (ctx->allocator.alloc == sys_alloc)
        p = sys_alloc_fresh(ctx->allocator.user, bytes, VOX_ALIGN, fresh);
    else
        p = ctx->allocator.alloc(ctx->allocator.user, bytes, VOX_ALIGN);
    if (!p) {
        vox_fail(ctx, VOX_OUT_OF_MEMORY, "out of memory: could not allocate %zu bytes", bytes);
        return NULL;
    }
    __atomic_add_fetch(&ctx->live_allocs, 1, __ATOMIC_RELAXED);
    return p;
}

void *vox_alloc(struct vox_ctx *ctx, size_t bytes)
{
    bool fresh;
    return ctx_alloc(ctx, bytes, &fresh);
}

void *vox_calloc(struct vox_ctx *ctx, size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size) {
        vox_fail(ctx, VOX_OUT_OF_MEMORY, "out of memory: %zu x %zu bytes overflows", count,
                 size);
        return NULL;
    }
    /* fresh mapped pages are zero already: writing zeros would only fault every page in (and
     * keep pages resident that the caller may never touch) */
    bool fresh;
    void *p = ctx_alloc(ctx, count * size, &fresh);
    if (p && !fresh)
        memset(p, 0, count * size);
    return p;
}

void vox_free(struct vox_ctx *ctx, void *ptr)
{
    if (!ptr)
        return;
    __atomic_sub_fetch(&ctx->live_allocs, 1, __ATOMIC_RELAXED);
    ctx->allocator.free(ctx->allocator.user, ptr);
}

void *vox_realloc(struct vox_ctx *ctx, void *ptr, size_t old_bytes, size_t new_bytes)
{
    void *p = vox_alloc(ctx, new_bytes);
    if (!p)
        return NULL;
    if (ptr)
        memcpy(p, ptr, old_bytes < new_bytes ? old_bytes : new_bytes);
    vox_free(ctx, ptr);
    return p;
}

void vox_ctx_fail_alloc_at(struct vox_ctx *ctx, int64_t n)
{
    int64_t at = n > 0 ? __atomic_load_n(&ctx->alloc_count, __ATOMIC_RELAXED) + n : 0;
    __atomic_store_n(&ctx->fail_alloc_at, at, __ATOMIC_RELAXED);
}

int64_t vox_ctx_alloc_count(const struct vox_ctx *ctx)
{
    return __atomic_load_n(&ctx->alloc_count, __ATOMIC_RELAXED);
}

int64_t vox_ctx_live_allocs(const struct vox_ctx *ctx)
{
    return __atomic_load_n(&ctx->live_allocs, __ATOMIC_RELAXED);
}
