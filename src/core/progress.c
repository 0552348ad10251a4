/*
 * progress.c: a one-line progress bar on stderr for long work (label, bar, done/total, rate,
 * ETA). It draws only when stderr is a terminal and the caller did not ask for quiet, and
 * redraws at most ten times a second, so hot loops may report every step.
 */
#include "vox/core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct vox_progress {
    char label[48];
    char unit[16];
    int64_t total, done;
    double start;
    int64_t last_draw; /* microseconds of vox_time_now (an integer, for the atomics) */
    bool active;
};

static void human(double v, char *buf, size_t len)
{
    const char *suffix = "";
    if (v >= 1e9)
        v /= 1e9, suffix = "G";
    else if (v >= 1e6)
        v /= 1e6, suffix = "M";
    else if (v >= 1e3)
        v /= 1e3, suffix = "k";
    snprintf(buf, len, *suffix || v != (double)(int64_t)v ? "%.1f%s" : "%.0f%s", v, suffix);
}

static void draw(struct vox_progress *p, double now, bool final)
{
    double frac = p->total > 0 ? (double)p->done / (double)p->total : 1.0;
    if (frac > 1)
        frac = 1;
    char bar[31];
    int filled = (int)(frac * 30);
    for (int i = 0; i < 30; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[30] = '\0';
    int64_t done = __atomic_load_n(&p->done, __ATOMIC_RELAXED);
    double el = now - p->start, rate = el > 0 ? (double)done / el : 0;
    char r[32], d[32], t[32];
    human(rate, r, sizeof r);
    human((double)done, d, sizeof d);
    human((double)p->total, t, sizeof t);
    double eta = rate > 0 ? (double)(p->total - done) / rate : 0;
    /* done/total as counted: a bar that ends short of (or past) its total shows it */
    fprintf(stderr, "\r%-16s [%s] %5.1f%% %s/%s %s, %s/s, %s %.0f s  ", p->label, bar, 100 * frac,
            d, t, p->unit, r, final ? "done in" : "ETA", final ? el : eta);
    if (final)
        fputc('\n', stderr);
    fflush(stderr);
}

struct vox_progress *vox_progress_start(struct vox_ctx *ctx, const char *label, int64_t total,
                                        const char *unit, bool quiet)
{
    (void)ctx;
    struct vox_progress *p = calloc(1, sizeof *p);
    if (!p)
        return NULL; /* a progress bar is never worth failing the work for */
    snprintf(p->label, sizeof p->label, "%s", label);
    snprintf(p->unit, sizeof p->unit, "%s", unit ? unit : "");
    p->total = total;
    p->start = vox_time_now();
    p->last_draw = (int64_t)(p->start * 1e6);
    p->active = !quiet && isatty(STDERR_FILENO) && !getenv("VOX_NO_PROGRESS");
    return p;
}

void vox_progress_add(struct vox_progress *p, int64_t done)
{
    if (!p)
        return;
    __atomic_add_fetch(&p->done, done, __ATOMIC_RELAXED);
    if (!p->active)
        return;
    double now = vox_time_now();
    int64_t us = (int64_t)(now * 1e6), last = __atomic_load_n(&p->last_draw, __ATOMIC_RELAXED);
    /* one thread draws (the one that moves last_draw), at most every 0.1 s */
    if (us - last < 100000 || !__atomic_compare_exchange_n(&p->last_draw, &last, us, false,
                                                           __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        return;
    draw(p, now, false);
}

void vox_progress_drop(struct vox_progress *p)
{
    if (!p)
        return;
    if (p->active) {
        fprintf(stderr, "\r%*s\r", 80, "");
        fflush(stderr);
    }
    free(p);
}

void vox_progress_finish(struct vox_progress *p)
{
    if (!p)
        return;
    if (p->active)
        draw(p, vox_time_now(), true);
    free(p);
}
