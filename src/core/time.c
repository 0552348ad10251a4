/*
 * time.c: a monotonic clock in seconds, and the process's resident set (for memory logs).
 */
#include "vox/core.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

double vox_time_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int64_t vox_rss_bytes(void)
{
    long pages = -1, resident = -1;
    FILE *fp = fopen("/proc/self/statm", "r");
    if (fp && fscanf(fp, "%ld %ld", &pages, &resident) != 2)
        resident = -1;
    if (fp)
        fclose(fp);
    return resident < 0 ? -1 : (int64_t)resident * (int64_t)sysconf(_SC_PAGESIZE);
}
