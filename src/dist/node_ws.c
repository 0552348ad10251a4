/*
 * dist/node_ws.c: one octree node of the chunked watershed: stitches its children.
 *
 * The children's summaries are concatenated. Then, inside the node's box:
 * - Deferred plateau voxels are grouped by their plateau edges. A plateau none of whose edges
 *   leaves the box is complete: it is split exactly as seg/watershed.c does (one BFS from its
 *   seeds in C order = ascending global index, neighbours in direction order = ascending
 *   index; a reached voxel joins the voxel that reached it), or, without seeds, it is a
 *   maximum plateau and all its voxels join. Other plateaus go up unchanged.
 * - A link whose target voxel lies in the box joins its fragment with the target's, found
 *   among the children's face voxels (the target is a face voxel of its atomic chunk, still
 *   on the outer faces of every node below this one). Other links go up.
 * - Face voxels that are still on the node's outer faces go up.
 * The joins are recorded as fragment pairs (applied to the global union-find by the caller),
 * so the node itself is a pure function of its children: nodes of a level run in parallel.
 */
#include "dist_internal.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static void coords(const int64_t dims[3], int64_t idx, int64_t c[3])
{
    c[2] = idx % dims[2];
    c[1] = (idx / dims[2]) % dims[1];
    c[0] = idx / (dims[1] * dims[2]);
}

void dist_offsets(const int64_t dims[3], int64_t off[6])
{
    const int64_t P = dims[1] * dims[2];
    off[0] = -P;
    off[1] = -dims[2];
    off[2] = -1;
    off[3] = 1;
    off[4] = dims[2];
    off[5] = P;
}

bool dist_in_box(const struct dist_box *b, const int64_t dims[3], int64_t idx, int d)
{
    static const int axis[6] = {0, 1, 2, 2, 1, 0}, step[6] = {-1, -1, -1, 1, 1, 1};
    int64_t c[3];
    coords(dims, idx, c);
    c[axis[d]] += step[d];
    for (int a = 0; a < 3; a++)
        if (c[a] < b->lo[a] || c[a] >= b->hi[a])
            return false;
    return true;
}

static bool idx_in_box(const struct dist_box *b, const int64_t dims[3], int64_t idx)
{
    int64_t c[3];
    coords(dims, idx, c);
    for (int a = 0; a < 3; a++)
        if (c[a] < b->lo[a] || c[a] >= b->hi[a])
            return false;
    return true;
}

bool dist_push(struct vox_ctx *ctx, void **arr, int64_t *n, int64_t *cap, const void *x,
               size_t size)
{
    if (*n == *cap) {
        int64_t c = *cap ? 2 * *cap : 64;
        void *a = vox_realloc(ctx, *arr, (size_t)*cap * size, (size_t)c * size);
        if (!a)
            return false;
        *arr = a;
        *cap = c;
    }
    memcpy((char *)*arr + (size_t)*n * size, x, size);
    (*n)++;
    return true;
}

void dist_sum_fini(struct vox_ctx *ctx, struct dist_sum *s)
{
    vox_free(ctx, s->frag);
    vox_free(ctx, s->link);
    vox_free(ctx, s->face);
    vox_free(ctx, s->plat);
    vox_free(ctx, s->uni);
    memset(s, 0, sizeof *s);
}

/* A merge of the children's runs of faces or plateau voxels (each sorted by voxel index, the
 * first field of both; indices distinct) in parts of the index range: a part takes the
 * voxels of its range of z planes from every run, and writes after the parts before it. */
struct merge_job {
    uint8_t *dst;
    const uint8_t *run[8];
    int64_t len[8];
    int k, parts;
    size_t size;
    int64_t key[DIST_PAR_PARTS + 1]; /* part q: indices in [key[q], key[q + 1]) */
};

_Static_assert(offsetof(struct dist_face, idx) == 0 && offsetof(struct dist_plat, idx) == 0,
               "node_merge reads a voxel's index from its element's first bytes");

static inline int64_t elem_idx(const uint8_t *e)
{
    int64_t v;
    memcpy(&v, e, sizeof v);
    return v;
}

/* The first element of run (n elements of `size` bytes) whose index is >= key. */
static int64_t run_lower(const uint8_t *run, int64_t n, size_t size, int64_t key)
{
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (elem_idx(run + (size_t)mid * size) < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void merge_part(void *arg, int64_t q)
{
    const struct merge_job *j = arg;
    const size_t size = j->size;
    int64_t pos[8], end[8], at = 0;
    for (int c = 0; c < j->k; c++) {
        pos[c] = run_lower(j->run[c], j->len[c], size, j->key[q]);
        end[c] = run_lower(j->run[c], j->len[c], size, j->key[q + 1]);
        at += pos[c];
    }
    uint8_t *dst = j->dst + (size_t)at * size;
    for (;;) { /* the run with the smallest head gives all its voxels below the next head */
        int best = -1;
        int64_t bk = INT64_MAX, next = INT64_MAX;
        for (int c = 0; c < j->k; c++) {
            if (pos[c] == end[c])
                continue;
            int64_t x = elem_idx(j->run[c] + (size_t)pos[c] * size);
            if (x < bk)
                next = bk, bk = x, best = c;
            else if (x < next)
                next = x;
        }
        if (best < 0)
            return;
        int64_t n = 1;
        const uint8_t *src = j->run[best] + (size_t)pos[best] * size;
        while (pos[best] + n < end[best] && elem_idx(src + (size_t)n * size) < next)
            n++;
        memcpy(dst, src, (size_t)n * size);
        dst += (size_t)n * size;
        pos[best] += n;
    }
}

static void node_merge(const struct dist_par *par, const int64_t dims[3],
                       const struct dist_box *box, uint8_t *dst, const void *const *run,
                       const int64_t *len, int k, size_t size)
{
    struct merge_job j = {.dst = dst, .k = k, .size = size, .parts = dist_par_parts(par)};
    int64_t nz = box->hi[0] - box->lo[0], total = 0;
    for (int c = 0; c < k; c++) {
        j.run[c] = run[c];
        j.len[c] = len[c];
        total += len[c];
    }
    if (total < 4096 || nz < j.parts)
        j.parts = 1;
    for (int q = 0; q < j.parts; q++)
        j.key[q] = q == 0 ? INT64_MIN : (box->lo[0] + q * nz / j.parts) * dims[1] * dims[2];
    j.key[j.parts] = INT64_MAX;
    dist_par_for(par, j.parts, merge_part, &j);
}

/* The children's arrays (frag is not carried): links concatenated, faces and plateau voxels
 * merged in voxel order (each child's are sorted). */
static enum vox_status node_gather(struct vox_ctx *ctx, const int64_t dims[3],
                                   const struct dist_box *box, const struct dist_sum *kids,
                                   int nkids, struct dist_sum *o, const struct dist_par *par)
{
    const void *fr[8], *pr[8];
    int64_t fl[8], pl[8];
    for (int k = 0; k < nkids; k++) {
        o->nlink += kids[k].nlink;
        fr[k] = kids[k].face, fl[k] = kids[k].nface, o->nface += fl[k];
        pr[k] = kids[k].plat, pl[k] = kids[k].nplat, o->nplat += pl[k];
    }
    o->link = vox_alloc(ctx, (size_t)(o->nlink + 1) * sizeof *o->link);
    o->face = vox_alloc(ctx, (size_t)(o->nface + 1) * sizeof *o->face);
    o->plat = vox_alloc(ctx, (size_t)(o->nplat + 1) * sizeof *o->plat);
    if (!o->link || !o->face || !o->plat)
        return VOX_OUT_OF_MEMORY;
    int64_t nl = 0;
    for (int k = 0; k < nkids; k++) {
        if (kids[k].nlink)
            memcpy(o->link + nl, kids[k].link, (size_t)kids[k].nlink * sizeof *o->link);
        nl += kids[k].nlink;
    }
    node_merge(par, dims, box, (uint8_t *)o->face, fr, fl, nkids, sizeof *o->face);
    node_merge(par, dims, box, (uint8_t *)o->plat, pr, pl, nkids, sizeof *o->plat);
    return VOX_OK;
}

static int64_t plat_find(const struct dist_sum *o, int64_t idx)
{
    int64_t lo = 0, hi = o->nplat;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (o->plat[mid].idx < idx)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < o->nplat && o->plat[lo].idx == idx ? lo : -1;
}

static int64_t face_find(const struct dist_sum *o, int64_t idx)
{
    int64_t lo = 0, hi = o->nface;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (o->face[mid].idx < idx)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < o->nface && o->face[lo].idx == idx ? lo : -1;
}

static int64_t find64(int64_t *p, int64_t x)
{
    while (p[x] != x) {
        p[x] = p[p[x]];
        x = p[x];
    }
    return x;
}

struct node_ctx {
    struct vox_ctx *ctx;
    const int64_t *dims;
    const struct dist_box *box;
    struct dist_sum *o;
    int64_t goff[6];
    int64_t *uf, *nb; /* per plateau voxel: union-find, and 6 neighbour positions (-1) */
    uint8_t *st;      /* per plateau voxel: 1 leaves the box (at the root: incomplete), 2 reached */
    int64_t ucap;
};

static enum vox_status node_join(struct node_ctx *n, int64_t fa, int64_t fb)
{
    struct dist_sum *o = n->o;
    if (fa == fb || (o->nuni && o->uni[o->nuni - 1].a == fa && o->uni[o->nuni - 1].b == fb))
        return VOX_OK; /* consecutive links of a fragment often meet the same one */
    struct dist_pair u = {fa, fb};
    return dist_push(n->ctx, (void **)&n->o->uni, &n->o->nuni, &n->ucap, &u, sizeof u)
               ? VOX_OK
               : VOX_OUT_OF_MEMORY;
}

/* Groups the plateau voxels and marks the groups that leave the box. */
static enum vox_status node_group(struct node_ctx *n)
{
    struct dist_sum *o = n->o;
    for (int64_t i = 0; i < o->nplat; i++) {
        n->uf[i] = i;
        n->st[i] = 0;
    }
    for (int64_t i = 0; i < o->nplat; i++) {
        for (int d = 0; d < 6; d++) {
            n->nb[6 * i + d] = -1;
            if (!(o->plat[i].bits >> d & 1))
                continue;
            if (!dist_in_box(n->box, n->dims, o->plat[i].idx, d)) {
                n->st[i] = 1;
                continue;
            }
            int64_t j = plat_find(o, o->plat[i].idx + n->goff[d]);
            if (j < 0)
                return vox_fail(n->ctx, VOX_INTERNAL,
                                "chunked watershed: plateau voxel %lld has no neighbour %d",
                                (long long)o->plat[i].idx, d);
            n->nb[6 * i + d] = j;
            int64_t a = find64(n->uf, i), b = find64(n->uf, j);
            if (a != b)
                n->uf[a > b ? a : b] = a < b ? a : b;
        }
    }
    for (int64_t i = 0; i < o->nplat; i++)
        if (n->st[i] == 1)
            n->st[find64(n->uf, i)] = 1;
    for (int64_t i = 0; i < o->nplat; i++)
        n->st[i] = n->st[find64(n->uf, i)];
    return VOX_OK;
}

/* Splits the complete plateaus (BFS, queue = uf) and joins the maximum ones. */
static enum vox_status node_split(struct node_ctx *n)
{
    struct dist_sum *o = n->o;
    int64_t *queue = n->uf, head = 0, tail = 0;
    enum vox_status s = VOX_OK;
    for (int64_t i = 0; i < o->nplat; i++)
        if (!n->st[i] && o->plat[i].seed) {
            n->st[i] = 2;
            queue[tail++] = i;
        }
    while (head < tail && s == VOX_OK) {
        int64_t i = queue[head++];
        for (int d = 0; d < 6 && s == VOX_OK; d++) {
            int64_t j = n->nb[6 * i + d];
            if (j < 0 || n->st[j] || o->plat[j].seed)
                continue;
            n->st[j] = 2;
            queue[tail++] = j;
            s = node_join(n, o->plat[j].frag, o->plat[i].frag);
        }
    }
    for (int64_t i = 0; i < o->nplat && s == VOX_OK; i++)
        for (int d = 0; d < 6 && !n->st[i] && s == VOX_OK; d++)
            if (n->nb[6 * i + d] >= 0)
                s = node_join(n, o->plat[i].frag, o->plat[n->nb[6 * i + d]].frag);
    return s;
}

/* Resolves the links into the box and keeps the faces and plateau voxels still open. */
/* Whether voxel idx of box b has a neighbour outside b but in the volume (b's face voxels:
 * idx lies in b). */
static inline bool face_open(const struct dist_box *b, const int64_t dims[3], int64_t idx)
{
    int64_t c[3];
    coords(dims, idx, c);
    for (int a = 0; a < 3; a++)
        if ((c[a] == b->lo[a] && c[a] > 0) || (c[a] + 1 == b->hi[a] && c[a] + 1 < dims[a]))
            return true;
    return false;
}

/* The lookups of node_links, in parts (dist_par_for): per link, the face entry of its
 * target (-1: the target is outside the box, -2: no entry; LINK_IN: in the box, not looked
 * up yet); per face voxel, whether it stays open. */
enum { LINK_IN = -3 };

struct link_job {
    const struct node_ctx *n;
    int64_t *target;
    uint8_t *open;
    int parts;
    bool find; /* look the targets in the box up by binary search (else: LINK_IN) */
};

static void link_part(void *arg, int64_t q)
{
    const struct link_job *j = arg;
    const struct dist_sum *o = j->n->o;
    for (int64_t i = q * o->nlink / j->parts; i < (q + 1) * o->nlink / j->parts; i++) {
        if (!idx_in_box(j->n->box, j->n->dims, o->link[i].b)) {
            j->target[i] = -1;
            continue;
        }
        int64_t f = j->find ? face_find(o, o->link[i].b) : LINK_IN;
        j->target[i] = f == -1 ? -2 : f;
    }
    for (int64_t i = q * o->nface / j->parts; i < (q + 1) * o->nface / j->parts; i++)
        j->open[i] = face_open(j->n->box, j->n->dims, o->face[i].idx);
}

/* The targets marked LINK_IN, by one walk along the faces (both in voxel order): keys
 * (target - the box's first voxel) << lb | link, radix-sorted. A binary search per link cost
 * ~20 cache misses into the faces (MBs at the upper nodes): 3.5 % of a one-thread chunked run.
 * False (nothing done) when the keys do not fit in 64 bits or memory is short. */
static bool link_walk(struct link_job *j, const struct dist_par *par)
{
    const struct node_ctx *n = j->n;
    const struct dist_sum *o = n->o;
    const int64_t *d = n->dims, *lo = n->box->lo, *hi = n->box->hi;
    const int64_t first = (lo[0] * d[1] + lo[1]) * d[2] + lo[2];
    const int64_t span = ((hi[0] - 1) * d[1] + hi[1] - 1) * d[2] + hi[2] - first;
    int lb = 1, sb = 1;
    while (lb < 63 && (int64_t)1 << lb < o->nlink)
        lb++;
    while (sb < 63 && (int64_t)1 << sb < span)
        sb++;
    int64_t m = 0;
    for (int64_t i = 0; i < o->nlink; i++)
        m += j->target[i] == LINK_IN;
    if (lb + sb > 64 || m == 0)
        return lb + sb <= 64;
    uint64_t *k = vox_alloc(n->ctx, (size_t)m * sizeof *k),
             *t = vox_alloc(n->ctx, (size_t)m * sizeof *t);
    if (k && t) {
        m = 0;
        for (int64_t i = 0; i < o->nlink; i++)
            if (j->target[i] == LINK_IN)
                k[m++] = (uint64_t)(o->link[i].b - first) << lb | (uint64_t)i;
        dist_sort_u64_par(par, k, t, m, lb);
        const uint64_t mask = ((uint64_t)1 << lb) - 1;
        int64_t f = 0;
        for (int64_t q = 0; q < m; q++) {
            const int64_t b = first + (int64_t)(k[q] >> lb);
            while (f < o->nface && o->face[f].idx < b)
                f++;
            j->target[k[q] & mask] = f < o->nface && o->face[f].idx == b ? f : -2;
        }
    }
    bool ok = k && t;
    vox_free(n->ctx, k);
    vox_free(n->ctx, t);
    return ok;
}

static enum vox_status node_links(struct node_ctx *n, const struct dist_par *par)
{
    struct dist_sum *o = n->o;
    struct link_job j = {.n = n, .parts = dist_par_parts(par)};
    j.target = vox_alloc(n->ctx, (size_t)(o->nlink + 1) * sizeof *j.target);
    j.open = vox_alloc(n->ctx, (size_t)o->nface + 1);
    enum vox_status s = j.target && j.open ? VOX_OK : VOX_OUT_OF_MEMORY;
    if (s == VOX_OK)
        dist_par_for(par, j.parts, link_part, &j);
    if (s == VOX_OK && !link_walk(&j, par)) { /* the lookups one by one */
        j.find = true;
        dist_par_for(par, j.parts, link_part, &j);
    }
    int64_t k = 0;
    for (int64_t i = 0; i < o->nlink && s == VOX_OK; i++) {
        if (j.target[i] == -1)
            o->link[k++] = o->link[i];
        else if (j.target[i] == -2)
            s = vox_fail(n->ctx, VOX_INTERNAL,
                         "chunked watershed: link to voxel %lld "
                         "has no face entry",
                         (long long)o->link[i].b);
        else
            s = node_join(n, o->link[i].a, o->face[j.target[i]].frag);
    }
    if (s == VOX_OK) {
        o->nlink = k;
        k = 0;
        for (int64_t i = 0; i < o->nface; i++)
            if (j.open[i])
                o->face[k++] = o->face[i];
        o->nface = k;
        k = 0;
        for (int64_t i = 0; i < o->nplat; i++)
            if (n->st[i] == 1)
                o->plat[k++] = o->plat[i];
        o->nplat = k;
    }
    vox_free(n->ctx, j.target);
    vox_free(n->ctx, j.open);
    return s;
}

enum vox_status dist_node_ws(struct vox_ctx *ctx, const int64_t dims[3], const struct dist_box *box,
                             const struct dist_sum *kids, int nkids, struct dist_sum *out,
                             const struct dist_par *par)
{
    struct dist_sum o = {.box = *box};
    struct node_ctx n = {.ctx = ctx, .dims = dims, .box = box, .o = &o};
    dist_offsets(dims, n.goff);
    enum vox_status s = node_gather(ctx, dims, box, kids, nkids, &o, par);
    if (s == VOX_OK) {
        n.uf = vox_alloc(ctx, (size_t)(o.nplat + 1) * sizeof *n.uf);
        n.nb = vox_alloc(ctx, (size_t)(6 * o.nplat + 1) * sizeof *n.nb);
        n.st = vox_alloc(ctx, (size_t)(o.nplat + 1));
        s = n.uf && n.nb && n.st ? VOX_OK : VOX_OUT_OF_MEMORY;
    }
    if (s == VOX_OK)
        s = node_group(&n);
    if (s == VOX_OK)
        s = node_split(&n);
    if (s == VOX_OK)
        s = node_links(&n, par);
    vox_free(ctx, n.uf);
    vox_free(ctx, n.nb);
    vox_free(ctx, n.st);
    if (s != VOX_OK) {
        dist_sum_fini(ctx, &o);
        return s;
    }
    *out = o;
    return VOX_OK;
}
