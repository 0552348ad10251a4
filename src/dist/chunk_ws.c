/*
 * dist/chunk_ws.c: the watershed of one atomic chunk, reduced to a summary.
 *
 * What is local (Zlateski & Seung, arXiv 1505.00249; reference note §1 and §3.3):
 * - A voxel's maximum m needs its 6 edges; its steepest-ascent directions need its edges and
 *   its neighbours' maxima. The chunk's box is read with a 2-voxel margin (clamped to the
 *   volume): m is then exact on the box plus 1, and the directions exact on the box. Both
 *   passes are seg/watershed.c's own kernels (seg/ws_kernels.h), run over that region.
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
 *
 * Pass order and cost (most voxels are resolved or on maximum plateaus): A and B, the
 * seg/ws_kernels.h kernels over the rows of the chunk; the plateaus (few voxels, reached by
 * skipping 8 flag bytes at a time); the union of maximum plateaus as seg/watershed.c's pass D1
 * does it (root = smallest index, parents point backwards), links and exits only on the
 * chunk's faces; the fragment labels as its pass D2 (a voxel whose next voxel comes before it
 * takes that voxel's label); then the face voxels and the deferred plateau voxels. The work
 * arrays are the worker's scratch, reused from chunk to chunk.
 */
#include "dist_internal.h"
#include "dist/diff.h"
#include "seg/seg_internal.h"
#include "seg/ws_kernels.h"

#include <string.h>

enum {
    DIR_MASK = WS_DIR_MASK, /* bits 0..5: -z, -y, -x, +x, +y, +z (ascending neighbour index) */
    DIR_RESOLVED = WS_DIR_RESOLVED, /* (WS_DIR_SEED, set too, is not used here) */
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
    int64_t ndefer; /* deferred plateau voxels */
    struct dist_scratch *sc; /* the work arrays, and the summary's while it is collected */
};

static inline uint32_t uf_find(uint32_t *p, uint32_t x)
{
    while (p[x] != x) {
        p[x] = p[p[x]];
        x = p[x];
    }
    return x;
}

/* Joins the tree of root r with u's; the new root (the smaller index). */
static inline uint32_t uf_join(uint32_t *p, uint32_t r, uint32_t u)
{
    uint32_t ru = uf_find(p, u);
    if (ru == r)
        return r;
    p[ru > r ? ru : r] = ru < r ? ru : r;
    return ru < r ? ru : r;
}

/* Puts voxel v into the union-find with its backward neighbours of `back` (bits -z, -y, -x,
 * already in it), as seg/watershed.c's ws_union_slab: parents point to smaller indices. */
static inline __attribute__((always_inline)) void uf_add(uint32_t *p, uint32_t v, uint8_t back,
                                                         uint32_t P, uint32_t X)
{
    uint32_t r;
    if (back == 4) { /* -x alone (the common case): v - 1's parent is in its tree */
        p[v] = p[v - 1];
        return;
    }
    if (back & 4) {
        r = uf_find(p, v - 1);
        if (back & 2)
            r = uf_join(p, r, v - X);
    } else if (back & 2) {
        r = uf_find(p, v - X);
    } else if (back & 1) {
        p[v] = uf_find(p, v - P);
        return;
    } else {
        p[v] = v;
        return;
    }
    if (back & 1)
        r = uf_join(p, r, v - P);
    p[v] = r;
}

/* The first v' in [v, n) with fl[v'] & bit (or n), 8 flags at a time. */
static inline int64_t cws_skip(const uint8_t *fl, int64_t v, int64_t n, uint8_t bit)
{
    const uint64_t mask = 0x0101010101010101ull * bit;
    for (; v + 8 <= n; v += 8) {
        uint64_t w;
        memcpy(&w, fl + v, sizeof w);
        if (w & mask)
            break;
    }
    while (v < n && !(fl[v] & bit))
        v++;
    return v;
}

/* The pass kernels' view of R. */
static struct ws_grid cws_grid(const struct cws *w)
{
    struct ws_grid g = {.q = w->q, .m = w->m, .low = w->low, .high = w->high};
    g.d = (struct seg_dims){.z = w->r[0], .y = w->r[1], .x = w->r[2], .n = w->rn,
                            .plane = w->r[1] * w->r[2]};
    return g;
}

/* m over the rows of C + 1 in R, from the edges inside R (exact there: R = C + 2). */
static void cws_max(struct cws *w)
{
    const struct ws_grid g = cws_grid(w);
    int64_t lo[2], hi[2];
    for (int a = 0; a < 2; a++) {
        lo[a] = w->o[a] > 0 ? w->o[a] - 1 : 0;
        hi[a] = w->o[a] + w->c[a] < w->r[a] ? w->o[a] + w->c[a] + 1 : w->r[a];
    }
    for (int64_t z = lo[0]; z < hi[0]; z++)
        ws_max_rows(&g, w->m, z * w->r[1] + lo[1], z * w->r[1] + hi[1]);
}

/* Bit d set: neighbour d of voxel (z, y, x) of a box of shape n lies in the box (the chunk,
 * or with global coordinates the volume). */
static inline uint8_t cws_inside(const int64_t n[3], int64_t z, int64_t y, int64_t x)
{
    return (uint8_t)((z > 0) | (y > 0) << 1 | (x > 0) << 2 | (x + 1 < n[2]) << 3 |
                     (y + 1 < n[1]) << 4 | (z + 1 < n[0]) << 5);
}

/* cws_inside of the chunk voxel v. */
static inline uint8_t cws_inside_v(const struct cws *w, int64_t v)
{
    return cws_inside(w->c, v / (w->c[1] * w->c[2]), (v / w->c[2]) % w->c[1], v % w->c[2]);
}

static inline int64_t cws_gxyz(const struct cws *w, int64_t z, int64_t y, int64_t x)
{
    return ((w->box.lo[0] + z) * w->dims[1] + w->box.lo[1] + y) * w->dims[2] + w->box.lo[2] + x;
}

static inline int64_t cws_global(const struct cws *w, int64_t v)
{
    return cws_gxyz(w, v / (w->c[1] * w->c[2]), (v / w->c[2]) % w->c[1], v % w->c[2]);
}

static inline uint8_t cws_pbits(const struct cws *w, int64_t v)
{
    return w->fl[v] & FL_SEED ? w->pb[v] : (uint8_t)(w->dir[v] & DIR_MASK);
}

/* Directions of C (pass B on its rows of R; edges inside R are those inside the volume) and
 * the plateau flags. */
static void cws_dirs(struct cws *w)
{
    const struct ws_grid g = cws_grid(w);
    int64_t v = 0;
    for (int64_t z = 0; z < w->c[0]; z++)
        for (int64_t y = 0; y < w->c[1]; y++, v += w->c[2]) {
            int64_t r = (z + w->o[0]) * w->r[1] + y + w->o[1];
            ws_dir_row(&g, r, w->o[2], w->o[2] + w->c[2], w->dir + v, w->pb + v);
            const uint8_t *m = w->m + r * w->r[2] + w->o[2], *d = w->dir + v, *pb = w->pb + v;
            uint8_t *fl = w->fl + v;
            for (int64_t x = 0; x < w->c[2]; x++) {
                uint8_t plat = d[x] && m[x] < w->high ? FL_PLAT : 0;
                fl[x] = d[x] & DIR_RESOLVED ? (pb[x] ? FL_PLAT | FL_SEED : 0) : plat;
            }
        }
}

/* The plateaus (voxels and seeds joined by plateau edges): those with an edge leaving the
 * chunk are deferred, all their voxels marked. */
static void cws_plateaus(struct cws *w)
{
    const int64_t X = w->c[2], P = w->c[1] * X, n = w->cn;
    int64_t nout = 0;
    for (int64_t v = cws_skip(w->fl, 0, n, FL_PLAT); v < n;
         v = cws_skip(w->fl, v + 1, n, FL_PLAT)) {
        uint8_t bits = cws_pbits(w, v), in = cws_inside_v(w, v);
        if (bits & ~in) {
            w->fl[v] |= FL_OUT;
            nout++;
        }
        uf_add(w->uf, (uint32_t)v, bits & in & 7, (uint32_t)P, (uint32_t)X);
    }
    w->ndefer = 0;
    if (!nout)
        return;
    for (int64_t v = cws_skip(w->fl, 0, n, FL_OUT); v < n; v = cws_skip(w->fl, v + 1, n, FL_OUT))
        w->fl[uf_find(w->uf, (uint32_t)v)] |= FL_DEFER;
    for (int64_t v = cws_skip(w->fl, 0, n, FL_PLAT); v < n; v = cws_skip(w->fl, v + 1, n, FL_PLAT))
        if (w->fl[uf_find(w->uf, (uint32_t)v)] & FL_DEFER) {
            w->fl[v] |= FL_DEFER;
            w->ndefer++;
        }
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

/* Splits the plateaus inside the chunk: seg/watershed.c's pass C on them (queue = uf). */
static void cws_split(struct cws *w)
{
    uint32_t *queue = w->uf;
    int64_t head = 0, tail = 0;
    for (int64_t v = cws_skip(w->fl, 0, w->cn, FL_SEED); v < w->cn;
         v = cws_skip(w->fl, v + 1, w->cn, FL_SEED))
        if (!(w->fl[v] & FL_DEFER))
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

/* The backward plateau neighbours of inner maximum plateau voxel v (bits d) it still has to
 * join. With its -x neighbour u = v - 1 on the plateau, v - X is in u's tree already when u
 * has a plateau edge to u - X and v - X one to u - X too (the square closes); the same for
 * -z with v - P. Joins of voxels already joined change nothing. */
static inline uint8_t cws_back(const uint8_t *dir, uint8_t d, int64_t v, int64_t X, int64_t P)
{
    uint8_t b = d & 7;
    if (b & 4) {
        if ((b & 2) && (dir[v - 1] & 2) && (dir[v - X] & 4))
            b &= (uint8_t)~2;
        if ((b & 1) && (dir[v - 1] & 1) && (dir[v - P] & 4))
            b &= (uint8_t)~1;
    }
    return b;
}

/* One voxel of the union pass with its inside bits `in`: a maximum plateau voxel joins its
 * backward plateau neighbours; a pointer or plateau edge leaving the chunk is a link (a
 * pointer's marks the voxel an exit). */
static inline bool cws_union_voxel(struct vox_ctx *ctx, struct cws *w, int64_t v, uint8_t in,
                                   int64_t g, const int64_t goff[6], struct dist_sum *s)
{
    uint8_t d = w->dir[v];
    if (!d || (!(d & DIR_RESOLVED) && (w->fl[v] & FL_DEFER)))
        return true;
    uint8_t bits = d & DIR_RESOLVED ? (uint8_t)(d & DIR_MASK) : d;
    if (!(d & DIR_RESOLVED))
        uf_add(w->uf, (uint32_t)v, bits & in & 7, (uint32_t)(w->c[1] * w->c[2]),
               (uint32_t)w->c[2]);
    if (!(bits & ~in))
        return true;
    if (d & DIR_RESOLVED)
        w->fl[v] |= FL_EXIT;
    for (int k = 0; k < 6; k++) {
        if (!((bits & ~in) >> k & 1))
            continue;
        struct dist_pair l = {v, g + goff[k]};
        if (!dist_scratch_push(ctx, w->sc, DIST_SC_W0, (void **)&s->link, &s->nlink, &l, sizeof l))
            return false;
    }
    return true;
}

/* Unions the voxels of each maximum plateau inside the chunk (plateau bits are symmetric
 * there, so the backward neighbours suffice) and marks the pointers that leave the chunk; the
 * links that leave it go to s->link as (local voxel, global voxel). Inner voxels of inner rows
 * have every neighbour inside: only their maximum plateau voxels do anything. */
static enum vox_status cws_union(struct vox_ctx *ctx, struct cws *w, const int64_t goff[6],
                                 struct dist_sum *s)
{
    const int64_t X = w->c[2], P = w->c[1] * X;
    const uint8_t *dir = w->dir, *fl = w->fl;
    const uint8_t defer = w->ndefer ? FL_DEFER : 0; /* deferred plateaus are rare */
    for (int64_t z = 0; z < w->c[0]; z++)
        for (int64_t y = 0; y < w->c[1]; y++) {
            const int64_t v0 = (z * w->c[1] + y) * X;
            if (z > 0 && z + 1 < w->c[0] && y > 0 && y + 1 < w->c[1] && X > 2) {
                /* the row's first voxel, its inner ones, its last, in order (uf_add's -x
                 * shortcut reads the voxel before) */
                if (!cws_union_voxel(ctx, w, v0, cws_inside(w->c, z, y, 0), cws_gxyz(w, z, y, 0),
                                     goff, s))
                    return VOX_OUT_OF_MEMORY;
                for (int64_t v = v0 + 1; v < v0 + X - 1; v++) {
                    uint8_t d = dir[v];
                    if (d && !(d & DIR_RESOLVED) && !(fl[v] & defer))
                        uf_add(w->uf, (uint32_t)v, cws_back(dir, d, v, X, P), (uint32_t)P,
                               (uint32_t)X);
                }
                if (!cws_union_voxel(ctx, w, v0 + X - 1, cws_inside(w->c, z, y, X - 1),
                                     cws_gxyz(w, z, y, X - 1), goff, s))
                    return VOX_OUT_OF_MEMORY;
                continue;
            }
            for (int64_t x = 0; x < X; x++)
                if (!cws_union_voxel(ctx, w, v0 + x, cws_inside(w->c, z, y, x),
                                     cws_gxyz(w, z, y, x), goff, s))
                    return VOX_OUT_OF_MEMORY;
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

/* The fragment of v, not labelled yet and not reached from an earlier voxel: follows its path
 * to a labelled voxel (one before v, or marked) or a root (a new fragment), then labels the
 * path. 0: memory short. */
static uint32_t cws_label_path(struct vox_ctx *ctx, struct cws *w, const int64_t off[6],
                               int64_t v, uint32_t *lab, struct dist_sum *s)
{
    int64_t p = v, nx;
    uint32_t id = 0;
    while (!id) {
        if (p < v || (w->fl[p] & FL_DONE))
            id = lab[p];
        else if ((nx = cws_next(w, off, p)) >= 0)
            p = nx;
        else
            break;
    }
    if (!id) {
        struct dist_frag f = {cws_global(w, v), 0};
        if (!dist_scratch_push(ctx, w->sc, DIST_SC_W1, (void **)&s->frag, &s->nfrag, &f, sizeof f))
            return 0;
        id = (uint32_t)s->nfrag;
    }
    for (int64_t q = v; q >= v && !(w->fl[q] & FL_DONE);) {
        nx = cws_next(w, off, q);
        lab[q] = id;
        w->fl[q] |= FL_DONE;
        if (nx < 0)
            break;
        q = nx;
    }
    return id;
}

/* Fragments numbered in C order of their first voxel (as seg/watershed.c's pass D2 labels
 * basins); lab: 1 + the fragment's position, 0 background. Every voxel before v is labelled
 * when v comes (FL_DONE marks only those labelled ahead, along a path), so a next voxel
 * before v gives v's label at once. */
static enum vox_status cws_label(struct vox_ctx *ctx, struct cws *w, uint32_t *lab,
                                 struct dist_sum *s)
{
    const int64_t X = w->c[2], P = w->c[1] * X, off[6] = {-P, -X, -1, 1, X, P};
    uint32_t cur = 0; /* voxels of fragment cur counted in a run */
    int64_t run = 0;
    for (int64_t v = 0; v < w->cn; v++) {
        if (!w->dir[v]) {
            lab[v] = 0;
            continue;
        }
        if (!(w->fl[v] & FL_DONE)) {
            int64_t nx = cws_next(w, off, v);
            if (nx >= 0 && nx < v)
                lab[v] = lab[nx];
            else if (!cws_label_path(ctx, w, off, v, lab, s))
                return VOX_OUT_OF_MEMORY;
        }
        if (lab[v] != cur) {
            if (cur)
                s->frag[cur - 1].size += run;
            cur = lab[v];
            run = 0;
        }
        run++;
    }
    if (cur)
        s->frag[cur - 1].size += run;
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

/* The face voxels of a row (z, y) of the chunk, x in [x0, x1), in C order. */
static bool cws_face_row(struct vox_ctx *ctx, struct cws *w, const uint32_t *lab,
                         struct dist_sum *s, int64_t z, int64_t y, int64_t x0,
                         int64_t x1)
{
    const int64_t v0 = (z * w->c[1] + y) * w->c[2];
    for (int64_t x = x0; x < x1; x++) {
        if (!w->dir[v0 + x])
            continue;
        uint8_t in = cws_inside(w->c, z, y, x);
        if (!(cws_inside(w->dims, w->box.lo[0] + z, w->box.lo[1] + y, w->box.lo[2] + x) & ~in))
            continue;
        struct dist_face f = {cws_gxyz(w, z, y, x), s->frag[lab[v0 + x] - 1].id};
        if (!dist_scratch_push(ctx, w->sc, DIST_SC_W2, (void **)&s->face, &s->nface, &f, sizeof f))
            return false;
    }
    return true;
}

/* The voxels on the chunk faces with a neighbour in the volume outside (the whole first and
 * last rows and planes, the ends of the others), in C order. */
static enum vox_status cws_faces(struct vox_ctx *ctx, struct cws *w, const uint32_t *lab,
                                 struct dist_sum *s)
{
    int64_t X = w->c[2];
    for (int64_t z = 0; z < w->c[0]; z++)
        for (int64_t y = 0; y < w->c[1]; y++) {
            bool ok;
            if (z == 0 || z + 1 == w->c[0] || y == 0 || y + 1 == w->c[1])
                ok = cws_face_row(ctx, w, lab, s, z, y, 0, X);
            else
                ok = cws_face_row(ctx, w, lab, s, z, y, 0, 1) &&
                     (X < 2 || cws_face_row(ctx, w, lab, s, z, y, X - 1, X));
            if (!ok)
                return VOX_OUT_OF_MEMORY;
        }
    return VOX_OK;
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
    dist_sort_sc(ctx, w->sc, s->link, s->nlink, sizeof *s->link, pair_key, NULL, pair_cmp);
    int64_t k = 0;
    for (int64_t i = 0; i < s->nlink; i++)
        if (k == 0 || pair_cmp(&s->link[k - 1], &s->link[i]) != 0)
            s->link[k++] = s->link[i];
    s->nlink = k;
    st = cws_faces(ctx, w, lab, s);
    int64_t n = w->cn;
    for (int64_t v = w->ndefer ? cws_skip(w->fl, 0, n, FL_DEFER) : n; st == VOX_OK && v < n;
         v = cws_skip(w->fl, v + 1, n, FL_DEFER)) {
        struct dist_plat pl = {cws_global(w, v), s->frag[lab[v] - 1].id, cws_pbits(w, v),
                               (uint8_t)((w->fl[v] & FL_SEED) != 0)};
        if (!dist_scratch_push(ctx, w->sc, DIST_SC_W3, (void **)&s->plat, &s->nplat, &pl,
                               sizeof pl))
            st = VOX_OUT_OF_MEMORY;
    }
    return st;
}

/* The summary's arrays, collected in the scratch, into arrays of their own and their size
 * (the scratch's stay for the next chunk). */
static enum vox_status cws_own(struct vox_ctx *ctx, struct dist_sum *s)
{
    void **arr[4] = {(void **)&s->frag, (void **)&s->link, (void **)&s->face, (void **)&s->plat};
    const size_t bytes[4] = {
        (size_t)s->nfrag * sizeof *s->frag, (size_t)s->nlink * sizeof *s->link,
        (size_t)s->nface * sizeof *s->face, (size_t)s->nplat * sizeof *s->plat};
    void *own[4];
    bool ok = true;
    for (int k = 0; k < 4; k++) {
        own[k] = vox_alloc(ctx, bytes[k] + 1);
        ok = ok && own[k];
    }
    for (int k = 0; k < 4; k++) {
        if (ok && bytes[k])
            memcpy(own[k], *arr[k], bytes[k]);
        if (!ok)
            vox_free(ctx, own[k]);
        *arr[k] = ok ? own[k] : NULL;
    }
    return ok ? VOX_OK : VOX_OUT_OF_MEMORY;
}

/* The record's faces are summed in a direct-mapped table of live entries (pair, or pair and
 * affinity with histograms, hashed): a face adds to its slot's entry when the slot holds its
 * key, else the entry there goes to the list and the slot starts the face's. Nearby faces
 * share few pairs, so most faces add in the table (86 % on the bench volume); the list gets
 * the rest, and the stages merge repeated keys exactly. */
enum { PF_SLOTS = 4096 };

static inline bool cws_pf_flush(struct vox_ctx *ctx, struct dist_scratch *sc,
                                struct dist_chunk_rec *rec, const struct dist_pf *e)
{
    return !e->cnt ||
           dist_scratch_push(ctx, sc, DIST_SC_W4, (void **)&rec->pf, &rec->npf, e, sizeof *e);
}

/* One face between fragments la != lb (both non-zero) of affinity q. */
static inline bool cws_pf_add(struct vox_ctx *ctx, struct dist_scratch *sc, struct dist_pf *tab,
                              bool hist, struct dist_chunk_rec *rec, uint32_t la, uint32_t lb,
                              uint8_t q)
{
    const uint64_t key = la < lb ? (uint64_t)la << 32 | lb : (uint64_t)lb << 32 | la;
    struct dist_pf *e = &tab[((hist ? key ^ q : key) * 0x9E3779B97F4A7C15ull) >> 52];
    if (e->key == key && e->cnt && (!hist || e->w == q) && e->cnt < UINT16_MAX) {
        e->cnt++;
        e->sum += q;
        e->w = q > e->w ? q : e->w;
        return true;
    }
    if (!cws_pf_flush(ctx, sc, rec, e))
        return false;
    *e = (struct dist_pf){.key = key, .sum = q, .cnt = 1, .w = q};
    return true;
}

/* The record for stages (b) and (c) (struct dist_pairs): the faces with both ends in the box
 * between different fragments, the planes of crossing-face affinities and the box's faces
 * of fragment labels; npf -1: none. */
static enum vox_status cws_record(struct vox_ctx *ctx, struct cws *w, const uint32_t *lab,
                                  bool hist, double per_voxel, struct dist_chunk_rec *rec)
{
    struct dist_pf *tab = dist_scratch_get(ctx, w->sc, DIST_SC_W7, PF_SLOTS * sizeof *tab);
    if (!tab)
        return VOX_OUT_OF_MEMORY;
    memset(tab, 0, PF_SLOTS * sizeof *tab);
    *rec = (struct dist_chunk_rec){0};
    const int64_t X = w->c[2], P = w->c[1] * X, rp = w->r[1] * w->r[2];
    uint32_t *pos = dist_scratch_get(ctx, w->sc, DIST_SC_S2, (size_t)(X + 16) * sizeof *pos);
    if (!pos)
        return VOX_OUT_OF_MEMORY;
    const dist_diff_fn diff = dist_diff_pick(ctx);
    /* Where fragments are tiny (noise), listing them costs more than the scans it saves:
     * past `per_voxel` entries a voxel, no record (the stages scan; < 0: no limit). */
    const int64_t most = per_voxel < 0 ? -1 : (int64_t)(per_voxel * (double)w->cn);
    for (int64_t z = 0; z < w->c[0]; z++)
        for (int64_t y = 0; y < w->c[1]; y++) {
            if (most >= 0 && rec->npf > most) {
                *rec = (struct dist_chunk_rec){.npf = -1};
                return VOX_OK;
            }
            const uint32_t *l = lab + z * P + y * X;
            const int64_t rr = ((z + w->o[0]) * w->r[1] + y + w->o[1]) * w->r[2] + w->o[2];
            for (int a = 0; a < 3; a++) { /* faces (u, u + e_a), affinity q[a] at u + e_a */
                const uint32_t *lb = a == 0 ? l + P : a == 1 ? l + X : l + 1;
                const uint8_t *q = w->q + a * w->rn + rr + (a == 0 ? rp : a == 1 ? w->r[2] : 1);
                int64_t n = a == 2 ? X - 1 : X;
                if ((a == 0 && z + 1 >= w->c[0]) || (a == 1 && y + 1 >= w->c[1]))
                    continue;
                const int64_t nd = diff(l, lb, n, pos, true);
                for (int64_t k = 0; k < nd; k++) {
                    const uint32_t j = pos[k];
                    if (!cws_pf_add(ctx, w->sc, tab, hist, rec, l[j], lb[j], q[j]))
                        return VOX_OUT_OF_MEMORY;
                }
            }
        }
    for (int k = 0; k < PF_SLOTS; k++)
        if (!cws_pf_flush(ctx, w->sc, rec, &tab[k]))
            return VOX_OUT_OF_MEMORY;
    if (most >= 0 && rec->npf > most) {
        *rec = (struct dist_chunk_rec){.npf = -1};
        return VOX_OK;
    }
    int64_t np = 0;
    for (int a = 0; a < 3; a++)
        for (int side = 0; side < 2; side++)
            np += dist_planes_size(&w->box, w->dims, a, side);
    rec->planes = dist_scratch_get(ctx, w->sc, DIST_SC_W5, (size_t)np + 1);
    if (!rec->planes)
        return VOX_OUT_OF_MEMORY;
    uint8_t *d = rec->planes;
    for (int a = 0; a < 3; a++)
        for (int side = 0; side < 2; side++) {
            if (!dist_planes_size(&w->box, w->dims, a, side))
                continue;
            int64_t at[3] = {0, 0, 0}; /* box coordinates: at[a] fixed on the plane */
            at[a] = side ? w->c[a] : 0;
            const int b0 = a == 0 ? 1 : 0, b1 = a == 2 ? 1 : 2; /* the plane's axes */
            for (int64_t u = 0; u < w->c[b0]; u++)
                for (int64_t v = 0; v < w->c[b1]; v++) {
                    at[b0] = u;
                    at[b1] = v;
                    *d++ =
                        w->q[a * w->rn + ((at[0] + w->o[0]) * w->r[1] + at[1] + w->o[1]) * w->r[2] +
                             at[2] + w->o[2]];
                }
        }
    rec->nplanes = d - rec->planes;
    rec->faces = dist_scratch_get(ctx, w->sc, DIST_SC_W6,
                                  (size_t)dist_faces_len(w->dims, w->c, 0) * sizeof *rec->faces);
    if (!rec->faces)
        return VOX_OUT_OF_MEMORY;
    dist_faces_extract(&w->box, lab, rec->faces);
    return VOX_OK;
}

/* Reads the region R of the affinities and quantizes it. */
static enum vox_status cws_read(struct vox_ctx *ctx, const struct dist_vol *vol, struct cws *w,
                                struct dist_scratch *sc, struct vox_tensor *q)
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
    return dist_read_q(ctx, vol, lo, hi, sc, q);
}

enum vox_status dist_chunk_ws(struct vox_ctx *ctx, const struct dist_vol *vol,
                              const struct dist_box *box, const struct vox_seg_params *p,
                              struct dist_scratch *sc, struct dist_sum *s, uint32_t **lab_out,
                              struct dist_chunk_rec *rec)
{
    struct cws w = {.box = *box, .low = p->low, .high = p->high, .sc = sc};
    memcpy(w.dims, vol->dims, sizeof w.dims);
    struct vox_tensor q = {0};
    memset(s, 0, sizeof *s);
    s->box = *box;
    enum vox_status st = cws_read(ctx, vol, &w, sc, &q);
    if (st != VOX_OK)
        return st;
    w.q = q.data;
    w.m = dist_scratch_get(ctx, sc, DIST_SC_M, (size_t)w.rn);
    w.dir = dist_scratch_get(ctx, sc, DIST_SC_DIR, (size_t)w.cn);
    w.pb = dist_scratch_get(ctx, sc, DIST_SC_PB, (size_t)w.cn);
    w.fl = dist_scratch_get(ctx, sc, DIST_SC_FL, (size_t)w.cn);
    w.uf = dist_scratch_get(ctx, sc, DIST_SC_UF, (size_t)w.cn * sizeof *w.uf);
    st = VOX_OUT_OF_MEMORY;
    int64_t goff[6];
    if (w.m && w.dir && w.pb && w.fl && w.uf) {
        dist_offsets(w.dims, goff);
        cws_max(&w);
        cws_dirs(&w);
        cws_plateaus(&w);
        cws_split(&w);
        st = cws_union(ctx, &w, goff, s);
    }
    /* The labels overwrite the union-find: the label pass reads a voxel's parent (always an
     * earlier voxel, or on a path not labelled yet) before it writes the voxel's label, and
     * nothing reads the union-find after it. A 128^3 chunk's work arrays take 24 MB, not 32
     * (no faster on the 512^3 bench: two workers' 48 MB still exceed its 32 MB L3). */
    uint32_t *lab = w.uf;
    if (st == VOX_OK)
        st = cws_summarize(ctx, &w, lab, s);
    if (st == VOX_OK && rec)
        st = cws_record(ctx, &w, lab, p->score == VOX_SEG_SCORE_QUANTILE,
                        vol->pairs ? vol->pairs->per_voxel : -1, rec);
    vox_tensor_free(ctx, &q);
    if (st == VOX_OK)
        st = cws_own(ctx, s);
    if (st != VOX_OK) /* the arrays were the scratch's, or are freed */
        *s = (struct dist_sum){.box = *box};
    *lab_out = st == VOX_OK ? lab : NULL;
    return st;
}
