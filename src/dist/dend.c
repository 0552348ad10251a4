/*
 * dist/dend.c: the size merge's merge record (dend), replayed from the final merges that
 * the octree's nodes decided (dist/size_merge.c): each node's are in the global order (w
 * descending, then basin ids), so one heap merge of those runs gives the whole-volume order,
 * and a union-find over the basins gives each merge's ids at merge time, as
 * vox_seg_single_linkage records them. vox_dist_segment runs it in the agglomeration's
 * tree, after its chunks are handed out.
 */
#include "dist_internal.h"
#include "seg/seg_internal.h"

/* A run's next merge in the heap of dist_dend_run: its key in the global order (255 - w above a
 * above b, one 128-bit compare) and the run. */
struct sm_head {
    unsigned __int128 key;
    int64_t run;
};

static inline unsigned __int128 sm_order_key(const struct sm_edge *e)
{
    return (unsigned __int128)(255u - e->w) << 64 | (unsigned __int128)e->a << 32 | e->b;
}

/* Sifts heap entry i of the n in h down. */
static void sm_heap_down(struct sm_head *h, int64_t n, int64_t i)
{
    const struct sm_head x = h[i];
    for (int64_t c = 2 * i + 1; c < n; i = c, c = 2 * i + 1) {
        c += c + 1 < n && h[c + 1].key < h[c].key;
        if (!(h[c].key < x.key))
            break;
        h[i] = h[c];
    }
    h[i] = x;
}

/* Replays the nodes' final merges (sorted runs, merged through a heap) in the global order
 * on a union-find of the basins: the record gets the ids at merge time. */
void dist_dend_run(struct vox_ctx *ctx, struct dist_dend *d)
{
    const struct sm_fin *fin = d->fin;
    struct vox_merge_history *dend = &d->dend;
    int64_t total = 0, n = 0;
    for (int64_t k = 0; k < d->nfin; k++)
        total += fin[k].n;
    *dend = (struct vox_merge_history){.nseg = d->nbasins};
    struct sm_head *h = vox_alloc(ctx, (size_t)(d->nfin + 1) * sizeof *h);
    int64_t *at = vox_calloc(ctx, (size_t)d->nfin + 1, sizeof *at);
    uint32_t *parent = vox_alloc(ctx, (size_t)(d->nbasins + 1) * sizeof *parent);
    dend->m = vox_alloc(ctx, (size_t)(total + 1) * sizeof *dend->m);
    enum vox_status s = h && at && parent && dend->m ? VOX_OK : VOX_OUT_OF_MEMORY;
    dend->cap = total + 1;
    for (int64_t b = 0; s == VOX_OK && b <= d->nbasins; b++)
        parent[b] = (uint32_t)b;
    for (int64_t k = 0; s == VOX_OK && k < d->nfin; k++)
        h[n++] = (struct sm_head){sm_order_key(&fin[k].e[0]), k};
    for (int64_t i = n / 2 - 1; s == VOX_OK && i >= 0; i--)
        sm_heap_down(h, n, i);
    /* the merges in order first (basin ids in a and b), then the union-find over them: its
     * finds miss the cache (2.4 M basins on the bench volume), and in an array the basins
     * of merges further on can be fetched ahead */
    while (s == VOX_OK && n > 0) {
        const int64_t k = h[0].run;
        const struct sm_edge *e = &fin[k].e[at[k]++];
        dend->m[dend->n++] = (struct vox_seg_merge){.a = e->a, .b = e->b, .score = e->w / 255.0};
        if (at[k] == fin[k].n)
            h[0] = h[--n];
        else
            h[0].key = sm_order_key(&fin[k].e[at[k]]);
        sm_heap_down(h, n, 0);
    }
    enum { AHEAD = 16 };
    for (int64_t i = 0; s == VOX_OK && i < dend->n; i++) {
        if (i + AHEAD < dend->n) {
            __builtin_prefetch(&parent[dend->m[i + AHEAD].a]);
            __builtin_prefetch(&parent[dend->m[i + AHEAD].b]);
        }
        struct vox_seg_merge *m = &dend->m[i];
        int64_t ra = seg_find(parent, (uint32_t)m->a), rb = seg_find(parent, (uint32_t)m->b);
        int64_t keep = ra < rb ? ra : rb, gone = ra < rb ? rb : ra;
        parent[gone] = (uint32_t)keep; /* sm_finish has checked that no merge repeats */
        m->a = ra;
        m->b = rb;
        m->survivor = keep;
    }
    vox_free(ctx, h);
    vox_free(ctx, at);
    vox_free(ctx, parent);
    if (s != VOX_OK)
        vox_merge_history_fini(ctx, dend);
    d->st = s;
    d->done = true;
}

void dist_dend_fini(struct vox_ctx *ctx, struct dist_dend *d)
{
    struct sm_fin *fin = d->fin;
    for (int64_t k = 0; k < d->nfin; k++)
        vox_free(ctx, fin[k].e);
    vox_free(ctx, fin);
    vox_merge_history_fini(ctx, &d->dend);
    *d = (struct dist_dend){0};
}
