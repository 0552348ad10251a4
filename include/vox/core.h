/*
 * vox/core.h: what every module shares.
 *
 *   status codes and the per-context error message,
 *   the allocator (64-byte aligned, replaceable, with fault injection for tests),
 *   struct vox_ctx (allocator, thread pool, log sink, CPU description, last error),
 *   tensors (dtype, rank <= 6, int64 shape and element strides, views, blocked layout),
 *   the thread pool (deterministic parallel-for over 1D-3D ranges),
 *   CPU features and caches, the peak-FLOPS probe, timers, logging and progress bars.
 *
 * Conventions (docs/formats.md): arrays are C order, last axis fastest; counts, indices and
 * strides are int64_t, size_t is for bytes only. Every fallible call returns enum vox_status
 * and leaves a message on the context that names what was wrong.
 */
#ifndef VOX_CORE_H
#define VOX_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status ---------------------------------------------------------------------------- */

enum vox_status {
    VOX_OK = 0,
    VOX_INVALID_ARG,     /* a caller's or user's argument is wrong */
    VOX_UNSUPPORTED,     /* valid, but not something vox does (dtype, ISA, rank...) */
    VOX_OUT_OF_MEMORY,   /* an allocation failed */
    VOX_IO,              /* the operating system refused (open, read, write, rename) */
    VOX_FORMAT,          /* a file's contents are not what they must be */
    VOX_INTERNAL,        /* a bug in vox: an invariant did not hold */
    VOX_STATUS_COUNT
};

const char *vox_status_str(enum vox_status s);

#if defined(__GNUC__)
#define VOX_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define VOX_PRINTF(a, b)
#endif

/* Invariants of vox's own code: checked in debug and test builds, free in release. */
#ifdef VOX_DEBUG
#define VOX_ASSERT(c) ((c) ? (void)0 : vox_assert_fail(#c, __FILE__, __LINE__))
#else
#define VOX_ASSERT(c) ((void)0)
#endif
void vox_assert_fail(const char *what, const char *file, int line);

/* ---- allocator ------------------------------------------------------------------------- */

#define VOX_ALIGN 64

/* A replaceable allocator. alloc returns `bytes` bytes aligned to `align` (a power of two
 * >= sizeof(void*)) or NULL. free(NULL) must be a no-op. */
struct vox_allocator {
    void *(*alloc)(void *user, size_t bytes, size_t align);
    void (*free)(void *user, void *ptr);
    void *user;
};

/* ---- logging --------------------------------------------------------------------------- */

enum vox_log_level { VOX_LOG_ERROR, VOX_LOG_WARN, VOX_LOG_INFO, VOX_LOG_DEBUG };
typedef void (*vox_log_fn)(void *user, enum vox_log_level level, const char *msg);

/* ---- CPU ------------------------------------------------------------------------------- */

enum vox_isa { VOX_ISA_REF = 0, VOX_ISA_AVX2 = 1, VOX_ISA_AVX512 = 2 };
const char *vox_isa_str(enum vox_isa isa);

struct vox_cpu {
    char vendor[16];
    char model[64];
    int family, model_id;
    bool sse42, avx, avx2, fma, bmi2;
    bool avx512f, avx512bw, avx512vl, avx512dq, avx512vnni;
    bool os_avx, os_avx512;      /* the OS saves ymm / zmm state (XCR0) */
    int64_t l1d_bytes, l2_bytes, l3_bytes; /* per core for L1/L2, total for L3 */
    int cores;                   /* logical CPUs this process may run on */
    enum vox_isa isa_max;        /* best ISA the hardware and OS support */
    enum vox_isa isa;            /* the ISA in use: isa_max capped by VOX_ISA */
};

/* Reads cpuid and the OS; `isa_cap` is the text of VOX_ISA ("ref", "avx2", "avx512") or NULL. */
enum vox_status vox_cpu_detect(struct vox_cpu *cpu_out, const char *isa_cap, char *err,
                               size_t err_len);

/* ---- context --------------------------------------------------------------------------- */

struct vox_ctx;
struct vox_pool;

struct vox_ctx_options {
    const struct vox_allocator *allocator; /* NULL: the aligned system allocator */
    int threads;          /* 0: VOX_THREADS, else all CPUs; 1: no worker threads */
    bool pin_threads;     /* pin pool threads to CPUs */
    vox_log_fn log;       /* NULL: messages at or above log_level go to stderr */
    void *log_user;
    enum vox_log_level log_level;
    const char *isa;      /* NULL: VOX_ISA from the environment */
};

enum vox_status vox_ctx_create(const struct vox_ctx_options *opt, struct vox_ctx **ctx_out);
void vox_ctx_destroy(struct vox_ctx *ctx);

/* Records `fmt` as the last error and returns `s`, so callers write `return vox_fail(...)`. */
enum vox_status vox_fail(struct vox_ctx *ctx, enum vox_status s, const char *fmt, ...)
    VOX_PRINTF(3, 4);
/* The last error's message ("" if none). Valid until the next failing call. */
const char *vox_ctx_error(const struct vox_ctx *ctx);
void vox_ctx_clear_error(struct vox_ctx *ctx);
/* Prefixes the last error with "prefix: " (adds where, e.g. the file being read). */
void vox_ctx_error_prefix(struct vox_ctx *ctx, const char *fmt, ...) VOX_PRINTF(2, 3);

const struct vox_cpu *vox_ctx_cpu(const struct vox_ctx *ctx);
struct vox_pool *vox_ctx_pool(struct vox_ctx *ctx);
int vox_ctx_threads(const struct vox_ctx *ctx);
/* Whether the context's own allocator asks the kernel for transparent huge pages for its
 * mappings of 4 MiB and more (default off); returns the previous setting. Worth it where the
 * same large buffers are reused many times (training: 1-4 % shorter two-thread steps, fewer
 * TLB misses on each pass over an activation); a one-shot run pays more for its first
 * touches (the demo's inference 10-20 % slower). VOX_HUGEPAGES=0 or 1 in the environment
 * overrides it. No effect with a caller's allocator. */
bool vox_ctx_set_huge_pages(struct vox_ctx *ctx, bool on);

void vox_log(struct vox_ctx *ctx, enum vox_log_level level, const char *fmt, ...)
    VOX_PRINTF(3, 4);

/* Memory through the context's allocator, 64-byte aligned. NULL on failure, with the error
 * recorded on the context. vox_free(ctx, NULL) is a no-op. */
void *vox_alloc(struct vox_ctx *ctx, size_t bytes);
void *vox_calloc(struct vox_ctx *ctx, size_t count, size_t size);
void vox_free(struct vox_ctx *ctx, void *ptr);
/* Grows a buffer allocated by vox_alloc, keeping `old_bytes` of its contents. */
void *vox_realloc(struct vox_ctx *ctx, void *ptr, size_t old_bytes, size_t new_bytes);
/* With the system allocator, freed blocks of 256 KiB and more stay mapped in the context (up
 * to 1 GiB, never more than was in use before) for the next allocations, which then need no
 * fresh pages; vox_ctx_trim returns them to the system (vox_ctx_destroy does too). */
void vox_ctx_trim(struct vox_ctx *ctx);

/* Fault injection for tests: the n-th allocation from now (1 = the next) fails, and only it.
 * 0 turns injection off. vox_ctx_alloc_count returns allocations made so far. */
void vox_ctx_fail_alloc_at(struct vox_ctx *ctx, int64_t n);
int64_t vox_ctx_alloc_count(const struct vox_ctx *ctx);
int64_t vox_ctx_live_allocs(const struct vox_ctx *ctx); /* allocations not yet freed */

/* ---- tensors --------------------------------------------------------------------------- */

enum vox_dtype { VOX_U8, VOX_U16, VOX_U32, VOX_U64, VOX_I32, VOX_F32, VOX_DTYPE_COUNT };
#define VOX_MAX_RANK 6

size_t vox_dtype_size(enum vox_dtype t);
const char *vox_dtype_str(enum vox_dtype t);
/* Parses "u8", "uint8", "float32", ... into *out; returns false if unknown. */
bool vox_dtype_parse(const char *s, enum vox_dtype *out);

/* A strided view of an array, or an owner of one. Shape and strides in elements. */
struct vox_tensor {
    enum vox_dtype dtype;
    int rank;
    int64_t shape[VOX_MAX_RANK];
    int64_t strides[VOX_MAX_RANK];
    void *data;   /* the element at index 0 of every axis */
    void *base;   /* what to free when owned (NULL for a view) */
};

/* Allocates a zeroed C-order tensor. */
enum vox_status vox_tensor_alloc(struct vox_ctx *ctx, struct vox_tensor *t_out,
                                 enum vox_dtype dtype, int rank, const int64_t *shape);
/* Frees an owning tensor and zeroes *t; a view or a zeroed struct is left alone. */
void vox_tensor_free(struct vox_ctx *ctx, struct vox_tensor *t);

int64_t vox_tensor_numel(const struct vox_tensor *t);
size_t vox_tensor_nbytes(const struct vox_tensor *t);
bool vox_tensor_is_contiguous(const struct vox_tensor *t);
/* Address of the element at index idx[0..rank). */
void *vox_tensor_at(const struct vox_tensor *t, const int64_t *idx);

/* A view of the box [lo, hi) of t (both of length rank). */
enum vox_status vox_tensor_view_box(struct vox_ctx *ctx, const struct vox_tensor *t,
                                    const int64_t *lo, const int64_t *hi,
                                    struct vox_tensor *view_out);
/* A view of [lo, hi) along one axis (for example a channel slice). */
enum vox_status vox_tensor_view_axis(struct vox_ctx *ctx, const struct vox_tensor *t, int axis,
                                     int64_t lo, int64_t hi, struct vox_tensor *view_out);
/* Copies src into dst (same dtype and shape, any strides). */
enum vox_status vox_tensor_copy(struct vox_ctx *ctx, struct vox_tensor *dst,
                                const struct vox_tensor *src);

/* Blocked channel layout: (N, C, Z, Y, X) <-> (N, ceil(C/b), Z, Y, X, b), b = 8 or 16.
 * to_blocked allocates *dst_out and zero-pads the channel tail; from_blocked copies the first
 * C channels of a blocked tensor into dst, which must be (N, C, Z, Y, X). f32 only. */
enum vox_status vox_tensor_to_blocked(struct vox_ctx *ctx, const struct vox_tensor *src,
                                      int64_t block, struct vox_tensor *dst_out);
enum vox_status vox_tensor_from_blocked(struct vox_ctx *ctx, const struct vox_tensor *src,
                                        struct vox_tensor *dst);

/* ---- thread pool ----------------------------------------------------------------------- */

/* A task over the box [lo, hi) of a 1D-3D index range; `tid` is the worker (0..threads-1). */
typedef void (*vox_task_fn)(void *arg, const int64_t lo[3], const int64_t hi[3], int tid);

enum vox_schedule {
    VOX_SCHED_STATIC,  /* tiles split into `threads` contiguous runs: a deterministic partition */
    VOX_SCHED_DYNAMIC, /* tiles handed out as threads free up */
    VOX_SCHED_AFFINE   /* static's runs, each taken from its front by its thread; a thread done
                        * with its own takes the others' last tiles (locality, and balance) */
};

/* Creates a pool of `threads` workers (the caller's thread is worker 0). */
enum vox_status vox_pool_create(struct vox_ctx *ctx, int threads, bool pin,
                                struct vox_pool **pool_out);
void vox_pool_destroy(struct vox_pool *pool);
int vox_pool_threads(const struct vox_pool *pool);

/* Runs fn over the range [0, n[0]) x [0, n[1]) x [0, n[2]) cut into tiles of `tile` (tile
 * sizes <= 0 mean the whole axis). Use n = {N, 1, 1} for 1D. Tiles are numbered in C order;
 * with VOX_SCHED_STATIC thread t always gets the same tiles for the same pool size. A NULL
 * pool runs everything on the caller's thread. Returns when all tiles are done. */
void vox_pool_for(struct vox_pool *pool, const int64_t n[3], const int64_t tile[3],
                  enum vox_schedule sched, vox_task_fn fn, void *arg);
/* memset(p, 0, bytes) in 1 MiB pieces over the pool (a big serial memset holds the other
 * threads back). */
void vox_pool_zero(struct vox_pool *pool, void *p, size_t bytes);
/* Background work: while a thread of the pool would wait (a worker for the next loop, the
 * caller for the workers to finish theirs), it calls fn(arg) again and again until fn returns
 * false (nothing left) or there is work to do: fn should do a few microseconds' work a call,
 * since a loop posted meanwhile waits for it. fn NULL: none; it returns once no thread is still
 * inside the previous fn. One fn at a time; a pool of 1 thread never calls it. */
void vox_pool_set_idle(struct vox_pool *pool, bool (*fn)(void *), void *arg);

/* ---- time, peak, progress -------------------------------------------------------------- */

double vox_time_now(void); /* monotonic seconds */
/* The process's resident set now, in bytes (Linux /proc/self/statm); -1 where unknown. */
int64_t vox_rss_bytes(void);

struct vox_peak {
    double gflops_1;       /* measured FP32 GFLOP/s on one thread */
    double gflops_all;     /* on all pool threads */
    int threads;
    double ghz;            /* effective clock, from the FMA latency loop */
    int lanes;             /* f32 lanes of the vector width used */
    int fma_ports;         /* vector FMAs per cycle at that width */
    bool fma_ports_documented; /* from the vendor's documentation, not from this measurement */
};
/* Measures the peak with independent FMA chains in the widest ISA in use. ~0.3 s. */
enum vox_status vox_peak_measure(struct vox_ctx *ctx, struct vox_peak *peak_out);

/* The memory bandwidth a pass over memory gets, as vox's pointwise passes do (an act's slope
 * on a gradient in place: b[i] *= a[i], two streams read and one written), in GB/s of those
 * three streams. */
struct vox_bandwidth {
    double gbs_1;   /* on one thread */
    double gbs_all; /* split over all pool threads */
    int threads;
    int64_t bytes;        /* each of the two arrays */
    double round_trip_ns; /* a cache line handed from pool thread 0 to thread 1 and back (0:
                           * one thread): ~80-120 ns where two cores share an L3, ~400 ns
                           * across chiplets, where each thread's data should stay its own */
};
/* Best of 5 passes over two arrays of `bytes` each (0: 64 MiB, or 4x the L3 if larger, so
 * the caches hold little of them), and the round trip. ~0.1 s. */
enum vox_status vox_bandwidth_measure(struct vox_ctx *ctx, int64_t bytes,
                                      struct vox_bandwidth *bw_out);

struct vox_progress;
/* A terminal progress bar on stderr: label, done/total, rate, ETA. Silent when stderr is not
 * a terminal or `quiet`. Updates are throttled, so calling often is cheap. */
struct vox_progress *vox_progress_start(struct vox_ctx *ctx, const char *label, int64_t total,
                                        const char *unit, bool quiet);
void vox_progress_add(struct vox_progress *p, int64_t done);
void vox_progress_finish(struct vox_progress *p);
/* Ends the bar without its final line (the work failed): the line is cleared. */
void vox_progress_drop(struct vox_progress *p);

#ifdef __cplusplus
}
#endif
#endif
