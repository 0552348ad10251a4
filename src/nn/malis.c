/*
 * malis.c: the MALIS loss on nearest-neighbour affinities, plain and constrained.
 *
 * MALIS (Turaga et al., "Maximin affinity learning of image segmentation", NIPS 2009) scores
 * an affinity graph by the segmentation it implies: two voxels u, v end up in one segment
 * when their maximin edge (the weakest edge of the strongest path between them) is above
 * threshold, so that edge alone decides the pair. Each edge is weighted by the number of
 * voxel pairs it is the maximin edge of: pairs with the same ground-truth object (positive)
 * want it high, pairs of different objects (negative) want it low.
 *
 * All maximin edges come out of one Kruskal pass: edges in descending affinity build the
 * maximum spanning tree; an edge joining components C1 and C2 is the maximin edge of exactly
 * the pairs C1 x C2. With per-component label counts c[l], it is the maximin edge of
 *     npos = sum_l c1[l] c2[l]     positive pairs (same nonzero label)
 *     nneg = |C1| |C2| - npos      negative pairs (|C| counts labelled voxels only).
 * The counts live in per-component hash tables merged small-into-large (each label entry
 * moves O(log n) times), so a pass is O(E log E) for the sort plus near-linear union-find.
 *
 * Constrained MALIS (Funke et al., "Large scale image segmentation with structured loss based
 * deep learning for connectome reconstruction", TPAMI 2018; ZNN's zalis, reference note
 * znn.md 1.8) runs two passes: the positive counts on max(A, A_gt) (true links forced to 1,
 * so only wrong splits are counted) and the negative counts on min(A, A_gt) (true
 * boundaries forced to 0, so only wrong merges are counted). A perfect prediction scores 0.
 *
 * The tree's order is a total one: affinity descending, then the edge index c*Z*Y*X + v
 * ascending (-0 counts as +0), realised as one 64-bit key per edge and an LSD radix sort, so
 * the counts, the loss and its gradient are bitwise reproducible.
 */
#include "internal.h"
#include "vox/train.h"

#include <string.h>

/* One (label, count) entry; label 0 marks an empty slot. */
struct slot {
    uint64_t label;
    int64_t count;
};

/* A component's label multiset: inline while it holds at most one label, else a table of
 * `cap` (a power of two) slots, at most half full. n: its labelled voxels. */
struct comp {
    struct slot one, *tab;
    int64_t used, cap, n;
};

struct malis {
    struct vox_ctx *ctx;
    int64_t dim[3], plane, ne;
    const float *m;  /* edge mask (3, Z, Y, X) or NULL */
    uint64_t *lab;   /* per voxel: its connected ground-truth piece + 1, 0 unlabelled */
    uint8_t *gt;     /* per edge: 1 true link, 0 boundary, 2 not in the graph */
    int64_t *parent; /* union-find, sizes in size[] */
    int64_t *size;
    uint64_t *keys, *tmp;
    struct comp *comp;
};

static int64_t uf_find(int64_t *parent, int64_t v)
{
    while (parent[v] != v)
        v = parent[v] = parent[parent[v]];
    return v;
}

/* Unites the sets of a and b (by size; ties: the lower root wins); returns the new root. */
static int64_t uf_union(int64_t *parent, int64_t *size, int64_t a, int64_t b)
{
    if (size[a] < size[b] || (size[a] == size[b] && b < a)) {
        int64_t t = a;
        a = b, b = t;
    }
    parent[b] = a;
    size[a] += size[b];
    return a;
}

/* The voxel edge e links (v, u = v - e_c); false when u is outside the patch. */
static bool edge_ends(const struct malis *g, int64_t e, int64_t *v_out, int64_t *u_out)
{
    int64_t c = e / g->plane, v = e % g->plane;
    int64_t x = v % g->dim[2], y = v / g->dim[2] % g->dim[1], z = v / (g->dim[1] * g->dim[2]);
    int64_t coord[3] = {z, y, x}, step[3] = {g->dim[1] * g->dim[2], g->dim[2], 1};
    *v_out = v, *u_out = v - step[c];
    return coord[c] > 0;
}

static uint64_t slot_hash(uint64_t label, int64_t cap)
{
    return (label * UINT64_C(0x9E3779B97F4A7C15)) >> 17 & (uint64_t)(cap - 1);
}

static int64_t comp_get(const struct comp *c, uint64_t label)
{
    if (!c->tab)
        return c->used && c->one.label == label ? c->one.count : 0;
    for (uint64_t h = slot_hash(label, c->cap);; h = (h + 1) & (uint64_t)(c->cap - 1))
        if (c->tab[h].label == label || c->tab[h].label == 0)
            return c->tab[h].label == label ? c->tab[h].count : 0;
}

static void table_put(struct slot *tab, int64_t cap, uint64_t label, int64_t count, bool *added)
{
    uint64_t h = slot_hash(label, cap);
    while (tab[h].label != 0 && tab[h].label != label)
        h = (h + 1) & (uint64_t)(cap - 1);
    *added = tab[h].label == 0;
    tab[h].label = label;
    tab[h].count += count;
}

/* Adds count voxels of label to c, growing its table (2x) when it would pass half full. */
static enum vox_status comp_add(struct vox_ctx *ctx, struct comp *c, uint64_t label, int64_t count)
{
    bool added;
    if (!c->tab && (!c->used || c->one.label == label)) {
        c->one = (struct slot){label, (c->used ? c->one.count : 0) + count};
        c->used = 1;
        return VOX_OK;
    }
    if (!c->tab || 2 * (c->used + 1) > c->cap) {
        int64_t cap = c->tab ? 2 * c->cap : 8;
        struct slot *t = vox_calloc(ctx, (size_t)cap, sizeof *t);
        if (!t)
            return VOX_OUT_OF_MEMORY;
        if (!c->tab)
            table_put(t, cap, c->one.label, c->one.count, &added);
        for (int64_t i = 0; c->tab && i < c->cap; i++)
            if (c->tab[i].label)
                table_put(t, cap, c->tab[i].label, c->tab[i].count, &added);
        vox_free(ctx, c->tab);
        c->tab = t, c->cap = cap;
    }
    table_put(c->tab, c->cap, label, count, &added);
    c->used += added;
    return VOX_OK;
}

/* Merges component b into a, the new root's (the entries of the one with fewer labels move
 * into the other's table, then the result is put in a); *pos: the positive pairs of a x b.
 * On failure both keep their tables (freed with every other one by the caller). */
static enum vox_status comp_merge(struct vox_ctx *ctx, struct comp *a, struct comp *b, int64_t *pos)
{
    if (a->used < b->used) {
        struct comp t = *a;
        *a = *b, *b = t;
    }
    *pos = 0;
    const struct slot *src = b->tab ? b->tab : &b->one;
    int64_t n = b->tab ? b->cap : b->used;
    for (int64_t i = 0; i < n; i++) {
        if (!src[i].label)
            continue;
        *pos += src[i].count * comp_get(a, src[i].label);
        enum vox_status s = comp_add(ctx, a, src[i].label, src[i].count);
        if (s != VOX_OK)
            return s;
    }
    a->n += b->n;
    vox_free(ctx, b->tab);
    *b = (struct comp){0};
    return VOX_OK;
}

static void malis_fini(struct malis *g)
{
    struct vox_ctx *ctx = g->ctx;
    vox_free(ctx, g->lab);
    vox_free(ctx, g->gt);
    vox_free(ctx, g->parent);
    vox_free(ctx, g->size);
    vox_free(ctx, g->keys);
    vox_free(ctx, g->tmp);
    vox_free(ctx, g->comp);
}

/* The ground truth: each nonzero label split into its pieces connected through graph edges
 * (so a label cut by the patch border or the mask gives several objects), and per edge
 * 1 (a link inside one piece), 0 (a boundary) or 2 (not in the graph). */
static void ground_truth(struct malis *g, const struct vox_tensor *labels)
{
    int64_t n = g->plane, v, u;
    for (int64_t z = 0, i = 0; z < g->dim[0]; z++)
        for (int64_t y = 0; y < g->dim[1]; y++)
            for (int64_t x = 0; x < g->dim[2]; x++, i++) {
                int64_t idx[3] = {z, y, x};
                g->lab[i] = *(const uint64_t *)vox_tensor_at(labels, idx);
                g->parent[i] = i, g->size[i] = 1;
            }
    for (int64_t e = 0; e < g->ne; e++) {
        bool in = edge_ends(g, e, &v, &u) && (!g->m || g->m[e] > 0);
        g->gt[e] = in ? g->lab[v] != 0 && g->lab[v] == g->lab[u] : 2;
        if (g->gt[e] != 1)
            continue;
        int64_t rv = uf_find(g->parent, v), ru = uf_find(g->parent, u);
        if (rv != ru)
            uf_union(g->parent, g->size, rv, ru);
    }
    for (int64_t i = 0; i < n; i++)
        g->lab[i] = g->lab[i] ? (uint64_t)uf_find(g->parent, i) + 1 : 0;
}

/* Sorts n keys ascending: 8-bit LSD radix passes, skipping digits all keys share. */
static void radix_sort(uint64_t *k, uint64_t *tmp, int64_t n)
{
    uint64_t *from = k, *to = tmp;
    for (int shift = 0; shift < 64; shift += 8) {
        int64_t count[257] = {0};
        for (int64_t i = 0; i < n; i++)
            count[(from[i] >> shift & 255) + 1]++;
        if (n == 0 || count[(from[0] >> shift & 255) + 1] == n)
            continue;
        for (int d = 0; d < 256; d++)
            count[d + 1] += count[d];
        for (int64_t i = 0; i < n; i++)
            to[count[from[i] >> shift & 255]++] = from[i];
        uint64_t *t = from;
        from = to, to = t;
    }
    if (from != k)
        memcpy(k, from, (size_t)n * sizeof *k);
}

enum pass { PASS_BOTH, PASS_POS, PASS_NEG };

/* The edges of the graph in Kruskal order; returns how many. The value is the affinity,
 * raised to 1 on true links (PASS_POS) or lowered to 0 on boundaries (PASS_NEG). */
static int64_t order_edges(struct malis *g, const float *a, enum pass p)
{
    int64_t n = 0;
    for (int64_t e = 0; e < g->ne; e++) {
        if (g->gt[e] == 2)
            continue;
        float val = a[e] + 0.0f; /* -0 -> +0 */
        if (p == PASS_POS && g->gt[e] == 1 && !(val > 1))
            val = 1;
        if (p == PASS_NEG && g->gt[e] == 0 && !(val < 0))
            val = 0;
        uint32_t b;
        memcpy(&b, &val, sizeof b);
        uint32_t ascending = b & 0x80000000u ? ~b : b | 0x80000000u;
        g->keys[n++] = (uint64_t)~ascending << 32 | (uint64_t)e;
    }
    radix_sort(g->keys, g->tmp, n);
    return n;
}

/* One Kruskal pass: the pair counts of every tree edge into npos / nneg (per pass kind). */
static enum vox_status kruskal(struct malis *g, const float *a, enum pass p, int64_t *npos,
                               int64_t *nneg)
{
    enum vox_status s = VOX_OK;
    for (int64_t i = 0; i < g->plane; i++) {
        g->parent[i] = i, g->size[i] = 1;
        int64_t labelled = g->lab[i] != 0;
        g->comp[i] = (struct comp){.one = {g->lab[i], labelled}, .used = labelled, .n = labelled};
    }
    int64_t n = order_edges(g, a, p), v, u;
    for (int64_t k = 0; k < n && s == VOX_OK; k++) {
        int64_t e = (int64_t)(g->keys[k] & 0xFFFFFFFFu), pos;
        edge_ends(g, e, &v, &u);
        int64_t rv = uf_find(g->parent, v), ru = uf_find(g->parent, u);
        if (rv == ru)
            continue;
        int64_t nv = g->comp[rv].n, nu = g->comp[ru].n;
        int64_t root = uf_union(g->parent, g->size, rv, ru), other = root == rv ? ru : rv;
        s = comp_merge(g->ctx, &g->comp[root], &g->comp[other], &pos);
        if (s == VOX_OK && p != PASS_NEG)
            npos[e] = pos;
        if (s == VOX_OK && p != PASS_POS)
            nneg[e] = nv * nu - pos;
    }
    for (int64_t i = 0; i < g->plane; i++)
        vox_free(g->ctx, g->comp[i].tab);
    return s;
}

/* Checks aff-like (3, Z, Y, X) f32 contiguous, labels, mask; fills the graph's sizes. */
static enum vox_status malis_check(struct vox_ctx *ctx, const int64_t *ashape,
                                   const struct vox_tensor *labels, const struct vox_tensor *mask,
                                   struct malis *g)
{
    const int64_t *ls = labels->shape;
    if (ashape[0] != 3)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "malis: the affinities have %lld channels, expected 3 (z, y, x)",
                        (long long)ashape[0]);
    if (labels->dtype != VOX_U64 || labels->rank != 3 || ls[0] != ashape[1] || ls[1] != ashape[2] ||
        ls[2] != ashape[3])
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "malis: the labels must be u64 (%lld, %lld, %lld), the affinities' "
                        "spatial shape",
                        (long long)ashape[1], (long long)ashape[2], (long long)ashape[3]);
    if (mask && (mask->dtype != VOX_F32 || mask->rank != 4 || !vox_tensor_is_contiguous(mask) ||
                 memcmp(mask->shape, ashape, 4 * sizeof *ashape) != 0))
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "malis: the mask must be contiguous f32 of the affinities' shape");
    int64_t plane = ashape[1] * ashape[2] * ashape[3];
    if (plane < 1 || 3 * plane > INT64_C(0xFFFFFFFF))
        return vox_fail(ctx, VOX_UNSUPPORTED,
                        "malis: %lld voxels; a patch must have 1 to 1431655765 voxels",
                        (long long)plane);
    *g = (struct malis){.ctx = ctx,
                        .dim = {ashape[1], ashape[2], ashape[3]},
                        .plane = plane,
                        .ne = 3 * plane,
                        .m = mask ? mask->data : NULL};
    return VOX_OK;
}

static enum vox_status malis_init(struct malis *g, const struct vox_tensor *labels)
{
    struct vox_ctx *ctx = g->ctx;
    size_t n = (size_t)g->plane, ne = (size_t)g->ne;
    g->lab = vox_alloc(ctx, n * sizeof *g->lab);
    g->gt = vox_alloc(ctx, ne);
    g->parent = vox_alloc(ctx, n * sizeof *g->parent);
    g->size = vox_alloc(ctx, n * sizeof *g->size);
    g->keys = vox_alloc(ctx, ne * sizeof *g->keys);
    g->tmp = vox_alloc(ctx, ne * sizeof *g->tmp);
    g->comp = vox_alloc(ctx, n * sizeof *g->comp);
    if (!g->lab || !g->gt || !g->parent || !g->size || !g->keys || !g->tmp || !g->comp) {
        malis_fini(g);
        return VOX_OUT_OF_MEMORY;
    }
    ground_truth(g, labels);
    return VOX_OK;
}

/* Both passes (constrained) or one: zeroes and fills npos, nneg (ne each). */
static enum vox_status malis_count(struct malis *g, const float *a, bool constrained, int64_t *npos,
                                   int64_t *nneg)
{
    memset(npos, 0, (size_t)g->ne * sizeof *npos);
    memset(nneg, 0, (size_t)g->ne * sizeof *nneg);
    if (!constrained)
        return kruskal(g, a, PASS_BOTH, npos, nneg);
    enum vox_status s = kruskal(g, a, PASS_POS, npos, nneg);
    return s == VOX_OK ? kruskal(g, a, PASS_NEG, npos, nneg) : s;
}

enum vox_status vox_malis_pairs(struct vox_ctx *ctx, const struct vox_tensor *aff,
                                const struct vox_tensor *labels, const struct vox_tensor *mask,
                                bool constrained, int64_t *npos_out, int64_t *nneg_out)
{
    struct malis g;
    if (aff->dtype != VOX_F32 || aff->rank != 4 || !vox_tensor_is_contiguous(aff))
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "malis: the affinities must be contiguous f32 (3, Z, Y, X)");
    enum vox_status s = malis_check(ctx, aff->shape, labels, mask, &g);
    if (s == VOX_OK && (s = malis_init(&g, labels)) == VOX_OK) {
        s = malis_count(&g, aff->data, constrained, npos_out, nneg_out);
        malis_fini(&g);
    }
    return s;
}

/* The loss from the counts, adding scale * d loss / d x to g; a = act(x) (sigmoid, linear). */
static double malis_loss_grad(const struct malis *g, const float *x, enum vox_nn_act act,
                              const int64_t *npos, const int64_t *nneg, double scale, float *gr)
{
    int64_t total = 0;
    for (int64_t e = 0; e < g->ne; e++)
        total += npos[e] + nneg[e];
    if (total == 0)
        return 0;
    double acc = 0, sc = scale / (double)total;
    for (int64_t e = 0; e < g->ne; e++) {
        if (npos[e] == 0 && nneg[e] == 0)
            continue;
        double a = vox_nn_act_apply(act, x[e]), p = (double)npos[e], n = (double)nneg[e];
        acc += p * (1 - a) * (1 - a) + n * a * a;
        double da = 2 * (n * a - p * (1 - a));
        gr[e] = (float)(gr[e] + sc * da * (act == VOX_ACT_SIGMOID ? a * (1 - a) : 1));
    }
    return acc / (double)total;
}

enum vox_status vox_loss_malis(struct vox_ctx *ctx, const struct vox_tensor *x, enum vox_nn_act act,
                               const struct vox_tensor *labels, const struct vox_tensor *mask,
                               bool constrained, double scale, struct vox_tensor *grad,
                               double *loss_out)
{
    *loss_out = 0;
    if (act != VOX_ACT_SIGMOID && act != VOX_ACT_LINEAR)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "loss malis needs an output with act=sigmoid (or linear), not %s",
                        vox_nn_act_str(act));
    if (x->dtype != VOX_F32 || x->rank != 5 || x->shape[0] != 1 || !vox_tensor_is_contiguous(x) ||
        grad->dtype != VOX_F32 || !vox_tensor_is_contiguous(grad) ||
        memcmp(grad->shape, x->shape, 5 * sizeof x->shape[0]) != 0)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "loss malis: the output and its gradient must be contiguous f32 "
                        "(1, 3, Z, Y, X) of one shape");
    struct malis g;
    enum vox_status s = malis_check(ctx, x->shape + 1, labels, mask, &g);
    if (s != VOX_OK || (s = malis_init(&g, labels)) != VOX_OK)
        return s;
    float *a = vox_alloc(ctx, (size_t)g.ne * sizeof *a);
    int64_t *npos = vox_alloc(ctx, (size_t)g.ne * sizeof *npos);
    int64_t *nneg = vox_alloc(ctx, (size_t)g.ne * sizeof *nneg);
    s = a && npos && nneg ? VOX_OK : VOX_OUT_OF_MEMORY;
    const float *xp = x->data;
    for (int64_t e = 0; s == VOX_OK && e < g.ne; e++)
        a[e] = (float)vox_nn_act_apply(act, xp[e]);
    if (s == VOX_OK && (s = malis_count(&g, a, constrained, npos, nneg)) == VOX_OK)
        *loss_out = malis_loss_grad(&g, xp, act, npos, nneg, scale, grad->data);
    vox_free(ctx, a);
    vox_free(ctx, npos);
    vox_free(ctx, nneg);
    malis_fini(&g);
    return s;
}
