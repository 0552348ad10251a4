/*
 * core/internal.h: the context's layout, private to src/core.
 */
#ifndef VOX_CORE_INTERNAL_H
#define VOX_CORE_INTERNAL_H

#include "vox/core.h"

struct vox_ctx {
    struct vox_allocator allocator;
    vox_log_fn log;
    void *log_user;
    enum vox_log_level log_level;
    struct vox_cpu cpu;
    struct vox_pool *pool;
    int64_t alloc_count;   /* allocations made (atomic) */
    int64_t live_allocs;   /* allocations not yet freed (atomic) */
    int64_t fail_alloc_at; /* alloc_count value whose allocation fails; 0 = none (atomic) */
    char error[1024];
};

#endif
