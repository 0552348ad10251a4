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
    double start, last_draw;
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
    snprintf(buf, len, "%.1f%s", v, suffix);
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
    double el = now - p->start, rate = el > 0 ? (double)p->done / el : 0;
    char r[32];
    human(rate, r, sizeof r);
    double eta = rate > 0 ? (double)(p->total - p->done) / rate : 0;
    fprintf(stderr, "\r%-16s [%s] %5.1f%% %s %s/s %s %.0fs  ", p->label, bar, 100 * frac,
            final ? "done in" : "", r, p->unit, final ? el : eta);
    if (!final)
        fprintf(stderr, "ETA");
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
    p->start = p->last_draw = vox_time_now();
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
    if (now - p->last_draw < 0.1)
        return;
    p->last_draw = now;
    draw(p, now, false);
}

void vox_progress_finish(struct vox_progress *p)
{
    if (!p)
        return;
    if (p->active)
        draw(p, vox_time_now(), true);
    free(p);
}
