/*
 * live.c: buffers for tensors by lifetime. The training graph keeps every layer's value and
 * gradient, but most are needed only for a stretch of the step (a residual conv's output until
 * its add has read it, a gradient from its first writer to its layer's backward): tensors
 * whose stretches do not meet can take one buffer.
 */
#include "internal.h"

#include <stdlib.h>

/* Items by start, the larger first on a tie (it then sizes the buffer the smaller may reuse
 * later), then by index: a total order, so the assignment is the same on every run. */
static int by_start(const void *a_, const void *b_, void *items_)
{
    const int a = *(const int *)a_, b = *(const int *)b_;
    const struct vox_nn_live *it = items_;
    if (it[a].start != it[b].start)
        return it[a].start < it[b].start ? -1 : 1;
    if (it[a].bytes != it[b].bytes)
        return it[a].bytes > it[b].bytes ? -1 : 1;
    return a < b ? -1 : a > b;
}

int vox_nn_live_assign(struct vox_nn_live *items, int n, int *order, int64_t *buf_bytes,
                       int *buf_end)
{
    for (int i = 0; i < n; i++)
        order[i] = i;
    qsort_r(order, (size_t)n, sizeof *order, by_start, items);
    int nbuf = 0;
    for (int q = 0; q < n; q++) {
        struct vox_nn_live *it = &items[order[q]];
        it->buf = -1;
        if (it->bytes == 0)
            continue;
        int fit = -1, grow = -1; /* the smallest free buffer that holds it; the largest free */
        for (int b = 0; b < nbuf; b++) {
            if (buf_end[b] >= it->start)
                continue;
            if (buf_bytes[b] >= it->bytes && (fit < 0 || buf_bytes[b] < buf_bytes[fit]))
                fit = b;
            if (buf_bytes[b] < it->bytes && (grow < 0 || buf_bytes[b] > buf_bytes[grow]))
                grow = b;
        }
        int b = fit >= 0 ? fit : grow;
        if (b < 0) {
            b = nbuf++;
            buf_bytes[b] = 0;
        }
        buf_bytes[b] = it->bytes > buf_bytes[b] ? it->bytes : buf_bytes[b];
        buf_end[b] = it->end;
        it->buf = b;
    }
    return nbuf;
}
