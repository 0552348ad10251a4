/*
 * core/internal.h: the context's layout, private to src/core.
 */
#ifndef VOX_CORE_INTERNAL_H
#define VOX_CORE_INTERNAL_H

#include "vox/core.h"

#include <pthread.h>
#include <stddef.h>

/* Mapped blocks the system allocator keeps after they are freed, for the next allocation of
 * about their size (see sys_alloc in ctx.c). */
#define MAP_CACHE_SLOTS 64
struct map_cache {
    pthread_mutex_t lock;
    int n;        /* slots in use, oldest first */
    size_t bytes; /* their mapped bytes */
    struct map_block {
        void *base;
        size_t mapped;
    } slot[MAP_CACHE_SLOTS];
    bool huge; /* new mappings of HUGE_MAP_BYTES and more ask for huge pages */
};

struct vox_ctx {
    struct vox_allocator allocator;
    struct map_cache cache; /* used only with the system allocator */
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
