/*
 * dist/chunk_ws.c: the watershed of one atomic chunk, reduced to a summary.
 *
 * What is local (Zlateski & Seung, arXiv 1505.00249; reference note §1 and §3.3):
 * - A voxel's maximum m needs its 6 edges; its steepest-ascent directions need its edges and
 *   its neighbours' maxima. The chunk's box is read with a 2-voxel margin (clamped to the
 *   volume): m is then exact on the box plus 1, and the directions exact on the box. The
 *   direction rules are copied from seg/watershed.c (ws_dir_of), which is static there.
 * - The whole-volume plateau split is one BFS from the exit voxels (seeds) in C order,
 *   neighbours in index order. Plateaus are disjoint, so the result on one plateau is the
 *   BFS restricted to it with its seeds in C order, and C order inside a box is global C
 *   order. A plateau (plateau voxels and seeds joined by plateau edges) that stays inside the
 *   chunk is split here; one with a plateau edge leaving the chunk is deferred: its voxels go
 *   into the summary and an octree node splits it once it is interior (dist/node_ws.c).
 * - Basins are the connected components of the graph {(v, pointer(v))} plus the edges of
 *   maximum plateaus. Components inside the chunk are fragments (id = first voxel); an edge
 *   that leaves the chunk is a link (fragment, voxel outside), resolved through the face
 *   voxels of the neighbour chunk. Union-find is order-free, so the stitched basins are those
 *   of the whole volume.
 */
#include "dist_internal.h"

#include <stdlib.h>
#include <string.h>

enum {
    DIR_MASK = 0x3F, /* bits 0..5: -z, -y, -x, +x, +y, +z (ascending neighbour index) */
    DIR_RESOLVED = 0x80,
    FL_PLAT = 1,  /* an unresolved non-maximum plateau voxel or a seed */
    FL_OUT = 2,   /* a plateau edge leaves the chunk */
    FL_DEFER = 4, /* its plateau is deferred to the octree */
    FL_SEED = 8,
    FL_DONE = 16, /* labelled */
    FL_EXIT = 32, /* a resolved voxel whose pointer leaves the chunk */
};

/* The chunk: box C (interior) inside the read region R = C + 2 (clamped). */
struct cws {
    struct dist_box box;
    int64_t dims[3], c[3], cn, r[3], rn, o[3];
    const uint8_t *q;
    uint8_t *m, *dir, *pb, *fl;
    uint32_t *uf;
    int low, high;
};

static inline uint32_t uf_find(uint32_t *p, uint32_t x)
{
    while (p[x] != x) {
        p[x] = p[p[x]];
        x = p[x];
    }
    return x;
}

static inline void uf_union(uint32_t *p, uint32_t a, uint32_t b)
{
    a = uf_find(p, a);
    b = uf_find(p, b);
    if (a != b)
        p[a > b ? a : b] = a < b ? a : b;
}

/* m over R from the edges inside R (exact on C + 1). */
static void cws_max(struct cws *w)
{
    const int64_t X = w->r[2], P = w->r[1] * X, n = w->rn;
    for (int64_t z = 0; z < w->r[0]; z++)
        for (int64_t y = 0; y < w->r[1]; y++)
            for (int64_t x = 0; x < X; x++) {
                int64_t v = z * P + y * X + x;
                int mv = 0;
                const uint8_t *q = w->q;
                if (z > 0 && q[v] > mv)
                    mv = q[v];
                if (y > 0 && q[n + v] > mv)
                    mv = q[n + v];
                if (x > 0 && q[2 * n + v] > mv)
                    mv = q[2 * n + v];
                if (x + 1 < X && q[2 * n + v + 1] > mv)
                    mv = q[2 * n + v + 1];
                if (y + 1 < w->r[1] && q[n + v + X] > mv)
                    mv = q[n + v + X];
                if (z + 1 < w->r[0] && q[v + P] > mv)
                    mv = q[v + P];
                w->m[v] = (uint8_t)mv;
            }
}

/* Direction byte of chunk voxel (z, y, x) (as seg/watershed.c's ws_dir_of, with edges that
 * leave the volume absent); *pb gets the plateau bits of a resolved voxel (a seed's). */
static uint8_t cws_dir(const struct cws *w, int64_t z, int64_t y, int64_t x, uint8_t *pb)
{
    const int64_t X = w->r[2], P = w->r[1] * X, n = w->rn;
    const int64_t g[3] = {w->box.lo[0] + z, w->box.lo[1] + y, w->box.lo[2] + x};
    const int64_t v = (z + w->o[0]) * P + (y + w->o[1]) * X + x + w->o[2];
    int mv = w->m[v];
    *pb = 0;
    if (mv <= w->low)
        return 0;
    const uint8_t *q = w->q;
    int e[6] = {g[0] > 0 ? q[v] : -1,
                g[1] > 0 ? q[n + v] : -1,
                g[2] > 0 ? q[2 * n + v] : -1,
                g[2] + 1 < w->dims[2] ? q[2 * n + v + 1] : -1,
                g[1] + 1 < w->dims[1] ? q[n + v + X] : -1,
                g[0] + 1 < w->dims[0] ? q[v + P] : -1};
    const int64_t off[6] = {-P, -X, -1, 1, X, P};
    uint8_t bits = 0;
    if (mv >= w->high) {
        for (int d = 0; d < 6; d++)
            bits |= (uint8_t)((e[d] >= w->high) << d);
        return bits;
    }
    int exit = -1;
    for (int d = 0; d < 6; d++) {
        if (e[d] != mv)
            continue;
        if (w->m[v + off[d]] > mv)
            exit = exit < 0 ? d : exit;
        else
            bits |= (uint8_t)(1u << d);
    }
    if (exit < 0)
        return bits;
    *pb = bits;
    return (uint8_t)(DIR_RESOLVED | (1u << exit));
}

/* The chunk neighbour of local voxel v in direction d, or -1 outside the chunk. */
static inline int64_t cws_nb(const struct cws *w, int64_t v, int d)
{
    const int64_t X = w->c[2], P = w->c[1] * X;
    int64_t x = v % X, y = (v / X) % w->c[1], z = v / P;
    switch (d) {
    case 0: return z > 0 ? v - P : -1;
    case 1: return y > 0 ? v - X : -1;
    case 2: return x > 0 ? v - 1 : -1;
    case 3: return x + 1 < X ? v + 1 : -1;
    case 4: return y + 1 < w->c[1] ? v + X : -1;
    default: return z + 1 < w->c[0] ? v + P : -1;
    }
}

/* Bit d set: neighbour d of voxel (z, y, x) of a box of shape n lies in the box (the chunk,
 * or with global coordinates the volume). */
static inline uint8_t cws_inside(const int64_t n[3], int64_t z, int64_t y, int64_t x)
{
    return (uint8_t)((z > 0) | (y > 0) << 1 | (x > 0) << 2 | (x + 1 < n[2]) << 3 |
                     (y + 1 < n[1]) << 4 | (z + 1 < n[0]) << 5);
}

static inline int64_t cws_gxyz(const struct cws *w, int64_t z, int64_t y, int64_t x)
{
    return ((w->box.lo[0] + z) * w->dims[1] + w->box.lo[1] + y) * w->dims[2] + w->box.lo[2] + x;
}

static inline int64_t cws_global(const struct cws *w, int64_t v)
{
    int64_t x = v % w->c[2], y = (v / w->c[2]) % w->c[1], z = v / (w->c[1] * w->c[2]);
    return ((w->box.lo[0] + z) * w->dims[1] + w->box.lo[1] + y) * w->dims[2] + w->box.lo[2] +
           x;
}

static inline uint8_t cws_pbits(const struct cws *w, int64_t v)
{
    return w->fl[v] & FL_SEED ? w->pb[v] : (uint8_t)(w->dir[v] & DIR_MASK);
}

/* Directions, then the plateaus (voxels and seeds joined by plateau edges) and which of them
 * leave the chunk. */
static void cws_plateaus(struct cws *w)
{
    int64_t v = 0;
    for (int64_t z = 0; z < w->c[0]; z++)
        for (int64_t y = 0; y < w->c[1]; y++)
            for (int64_t x = 0; x < w->c[2]; x++, v++) {
                w->dir[v] = cws_dir(w, z, y, x, &w->pb[v]);
                int64_t rv = (z + w->o[0]) * w->r[1] * w->r[2] + (y + w->o[1]) * w->r[2] + x +
                             w->o[2];
                uint8_t d = w->dir[v];
                w->fl[v] = 0;
                if (d & DIR_RESOLVED)
                    w->fl[v] = w->pb[v] ? FL_PLAT | FL_SEED : 0;
                else if (d && w->m[rv] < w->high)
                    w->fl[v] = FL_PLAT;
                w->uf[v] = (uint32_t)v;
            }
    const int64_t off[3] = {-w->c[1] * w->c[2], -w->c[2], -1};
    v = 0;
    for (int64_t z = 0; z < w->c[0]; z++)
        for (int64_t y = 0; y < w->c[1]; y++)
            for (int64_t x = 0; x < w->c[2]; x++, v++) {
                if (!(w->fl[v] & FL_PLAT))
                    continue;
                uint8_t bits = cws_pbits(w, v), in = cws_inside(w->c, z, y, x);
                if (bits & ~in)
                    w->fl[v] |= FL_OUT;
                for (int d = 0; d < 3; d++)
                    if ((bits & in) >> d & 1)
                        uf_union(w->uf, (uint32_t)v, (uint32_t)(v + off[d]));
            }
    for (v = 0; v < w->cn; v++)
        if (w->fl[v] & FL_OUT)
            w->fl[uf_find(w->uf, (uint32_t)v)] |= FL_DEFER;
    for (v = 0; v < w->cn; v++)
        if ((w->fl[v] & FL_PLAT) && (w->fl[uf_find(w->uf, (uint32_t)v)] & FL_DEFER))
            w->fl[v] |= FL_DEFER;
}

/* Splits the plateaus inside the chunk: seg/watershed.c's pass C on them (queue = uf). */
static void cws_split(struct cws *w)
{
    uint32_t *queue = w->uf;
    int64_t head = 0, tail = 0;
    for (int64_t v = 0; v < w->cn; v++)
        if ((w->fl[v] & FL_SEED) && !(w->fl[v] & FL_DEFER))
            queue[tail++] = (uint32_t)v;
    while (head < tail) {
        int64_t v = queue[head++];
        for (int k = 0; k < 6; k++) {
            int64_t u = cws_nb(w, v, k);
            if (u < 0)
                continue;
            uint8_t du = w->dir[u], back = (uint8_t)(1u << (5 - k));
            if (!(du & DIR_RESOLVED) && (du & back) && !(w->fl[u] & FL_DEFER)) {
                w->dir[u] = DIR_RESOLVED | back;
                queue[tail++] = (uint32_t)u;
            }
        }
    }
}

/* Unions the voxels of each maximum plateau inside the chunk (plateau bits are symmetric
 * there, so the backward neighbours suffice) and marks the pointers that leave the chunk; the
 * links that leave it go to s->link as (local voxel, global voxel). */
static enum vox_status cws_union(struct vox_ctx *ctx, struct cws *w, const int64_t goff[6],
                                 struct dist_sum *s, int64_t *lcap)
{
    for (int64_t v = 0; v < w->cn; v++)
        w->uf[v] = (uint32_t)v;
    const int64_t X = w->c[2], P = w->c[1] * X, off[3] = {-P, -X, -1};
    int64_t v = 0;
    for (int64_t z = 0; z < w->c[0]; z++)
        for (int64_t y = 0; y < w->c[1]; y++)
            for (int64_t x = 0; x < X; x++, v++) {
                uint8_t d = w->dir[v];
                if (!d || (!(d & DIR_RESOLVED) && (w->fl[v] & FL_DEFER)))
                    continue;
                uint8_t bits = d & DIR_RESOLVED ? (uint8_t)(d & DIR_MASK) : d;
                uint8_t in = cws_inside(w->c, z, y, x);
                if ((d & DIR_RESOLVED) && !(bits & in))
                    w->fl[v] |= FL_EXIT;
                for (int k = 0; k < 3 && !(d & DIR_RESOLVED); k++)
                    if ((bits & in) >> k & 1)
                        uf_union(w->uf, (uint32_t)v, (uint32_t)(v + off[k]));
                for (int k = 0; k < 6; k++) {
                    if (!((bits & ~in) >> k & 1))
                        continue;
                    struct dist_pair l = {v, cws_gxyz(w, z, y, x) + goff[k]};
                    if (!dist_push(ctx, (void **)&s->link, &s->nlink, lcap, &l, sizeof l))
                        return VOX_OUT_OF_MEMORY;
                }
            }
    return VOX_OK;
}

/* The next voxel of v's fragment towards its root: along its pointer, or its plateau's
 * union-find parent; -1 at a root (a pointer leaving the chunk, a deferred voxel, a plateau
 * root). */
static inline int64_t cws_next(const struct cws *w, const int64_t off[6], int64_t v)
{
    uint8_t d = w->dir[v];
    if (d & DIR_RESOLVED)
        return w->fl[v] & FL_EXIT ? -1 : v + off[__builtin_ctz(d & DIR_MASK)];
    if (w->fl[v] & FL_DEFER)
        return -1;
    return w->uf[v] == (uint32_t)v ? -1 : (int64_t)w->uf[v];
}

/* Fragments numbered in C order of their first voxel (as seg/watershed.c's pass D2 labels
 * basins: each voxel follows its path to a labelled voxel or a root, then labels the path);
 * lab: 1 + the fragment's position, 0 background. */
static enum vox_status cws_label(struct vox_ctx *ctx, struct cws *w, uint32_t *lab,
                                 struct dist_sum *s)
{
    const int64_t X = w->c[2], P = w->c[1] * X, off[6] = {-P, -X, -1, 1, X, P};
    int64_t cap = 0;
    for (int64_t v = 0; v < w->cn; v++) {
        if (!w->dir[v]) {
            lab[v] = 0;
            continue;
        }
        if (!(w->fl[v] & FL_DONE)) {
            int64_t p = v, nx;
            uint32_t id = 0;
            while (!id) {
                if (w->fl[p] & FL_DONE)
                    id = lab[p];
                else if ((nx = cws_next(w, off, p)) >= 0)
                    p = nx;
                else
                    break;
            }
            if (!id) {
                struct dist_frag f = {cws_global(w, v), 0};
                if (!dist_push(ctx, (void **)&s->frag, &s->nfrag, &cap, &f, sizeof f))
                    return VOX_OUT_OF_MEMORY;
                id = (uint32_t)s->nfrag;
            }
            for (int64_t q = v; !(w->fl[q] & FL_DONE);) {
                nx = cws_next(w, off, q);
                lab[q] = id;
                w->fl[q] |= FL_DONE;
                if (nx < 0)
                    break;
                q = nx;
            }
        }
        s->frag[lab[v] - 1].size++;
    }
    return VOX_OK;
}

static int pair_cmp(const void *x, const void *y)
{
    const struct dist_pair *a = x, *b = y;
    if (a->a != b->a)
        return a->a < b->a ? -1 : 1;
    return (a->b > b->b) - (a->b < b->b);
}

static uint64_t pair_key(const void *x)
{
    const struct dist_pair *p = x;
    return (uint64_t)p->a << 32 | (uint64_t)p->b;
}

/* Fragments (numbered in C order of their first voxel), then links, faces and deferred
 * plateau voxels in fragment ids. */
static enum vox_status cws_summarize(struct vox_ctx *ctx, struct cws *w, uint32_t *lab,
                                     struct dist_sum *s)
{
    enum vox_status st = cws_label(ctx, w, lab, s);
    if (st != VOX_OK)
        return st;
    for (int64_t i = 0; i < s->nlink; i++)
        s->link[i].a = s->frag[lab[s->link[i].a] - 1].id;
    dist_sort(ctx, s->link, s->nlink, sizeof *s->link, pair_key, NULL, pair_cmp);
    int64_t k = 0;
    for (int64_t i = 0; i < s->nlink; i++)
        if (k == 0 || pair_cmp(&s->link[k - 1], &s->link[i]) != 0)
            s->link[k++] = s->link[i];
    s->nlink = k;
    int64_t fcap = 0, pcap = 0;
    int64_t v = -1;
    for (int64_t z = 0; z < w->c[0]; z++)
        for (int64_t y = 0; y < w->c[1]; y++)
            for (int64_t x = 0; x < w->c[2]; x++) {
                if (!w->dir[++v])
                    continue;
                int64_t g = cws_gxyz(w, z, y, x), frag = s->frag[lab[v] - 1].id;
                uint8_t in = cws_inside(w->c, z, y, x);
                bool face = cws_inside(w->dims, w->box.lo[0] + z, w->box.lo[1] + y,
                                       w->box.lo[2] + x) & ~in;
                struct dist_face f = {g, frag};
                if (face && !dist_push(ctx, (void **)&s->face, &s->nface, &fcap, &f, sizeof f))
                    return VOX_OUT_OF_MEMORY;
                if (!(w->fl[v] & FL_DEFER))
                    continue;
                struct dist_plat pl = {g, frag, cws_pbits(w, v),
                                       (uint8_t)((w->fl[v] & FL_SEED) != 0)};
                if (!dist_push(ctx, (void **)&s->plat, &s->nplat, &pcap, &pl, sizeof pl))
                    return VOX_OUT_OF_MEMORY;
            }
    return VOX_OK;
}

/* Reads the region R of the affinities and quantizes it. */
static enum vox_status cws_read(struct vox_ctx *ctx, const struct dist_vol *vol, struct cws *w,
                                struct vox_tensor *q)
{
    int64_t lo[3], hi[3];
    for (int a = 0; a < 3; a++) {
        int64_t rlo = w->box.lo[a] >= 2 ? w->box.lo[a] - 2 : 0;
        int64_t rhi = w->box.hi[a] + 2 <= w->dims[a] ? w->box.hi[a] + 2 : w->dims[a];
        lo[a] = rlo;
        hi[a] = rhi;
        w->r[a] = rhi - rlo;
        w->o[a] = w->box.lo[a] - rlo;
        w->c[a] = w->box.hi[a] - w->box.lo[a];
    }
    w->rn = w->r[0] * w->r[1] * w->r[2];
    w->cn = w->c[0] * w->c[1] * w->c[2];
    return dist_read_q(ctx, vol, lo, hi, q);
}

enum vox_status dist_chunk_ws(struct vox_ctx *ctx, const struct dist_vol *vol,
                              const struct dist_box *box, const struct vox_seg_params *p,
                              struct dist_sum *s, uint32_t *lab)
{
    struct cws w = {.box = *box, .low = p->low, .high = p->high};
    memcpy(w.dims, vol->dims, sizeof w.dims);
    struct vox_tensor q = {0};
    uint32_t *own = NULL;
    memset(s, 0, sizeof *s);
    s->box = *box;
    enum vox_status st = cws_read(ctx, vol, &w, &q);
    if (st != VOX_OK)
        return st;
    w.q = q.data;
    w.m = vox_alloc(ctx, (size_t)w.rn);
    w.dir = vox_alloc(ctx, (size_t)w.cn);
    w.pb = vox_alloc(ctx, (size_t)w.cn);
    w.fl = vox_alloc(ctx, (size_t)w.cn);
    w.uf = vox_alloc(ctx, (size_t)w.cn * sizeof *w.uf);
    if (!lab)
        lab = own = vox_alloc(ctx, (size_t)w.cn * sizeof *lab);
    st = VOX_OUT_OF_MEMORY;
    if (!w.m || !w.dir || !w.pb || !w.fl || !w.uf || !lab)
        goto done;
    int64_t goff[6], lcap = 0;
    dist_offsets(w.dims, goff);
    cws_max(&w);
    cws_plateaus(&w);
    cws_split(&w);
    st = cws_union(ctx, &w, goff, s, &lcap);
    if (st == VOX_OK)
        st = cws_summarize(ctx, &w, lab, s);
done:
    vox_tensor_free(ctx, &q);
    vox_free(ctx, w.m);
    vox_free(ctx, w.dir);
    vox_free(ctx, w.pb);
    vox_free(ctx, w.fl);
    vox_free(ctx, w.uf);
    vox_free(ctx, own);
    if (st != VOX_OK)
        dist_sum_fini(ctx, s);
    return st;
}
