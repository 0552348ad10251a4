/*
 * time.c: a monotonic clock in seconds.
 */
#include "vox/core.h"

#include <time.h>

double vox_time_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
