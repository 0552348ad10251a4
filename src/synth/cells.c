/*
 * cells.c: the ground-truth cells of a synthetic volume.
 *
 * 1. Objects, in physical space (nm, z y x): blobs (randomly rotated ellipsoids, cell bodies)
 *    and then neurite-like tubes (a random walk of the direction from a random point, both
 *    ways, until the tube leaves the volume; the radius wanders smoothly), each tube a chain
 *    of capsules with linearly varying radius. Objects are added until their cores fill about
 *    CORE_FILL of the volume. Object k's numbers come from hash(seed, object, k).
 * 2. Cores: each voxel inside one or more objects takes the object with the least normalised
 *    distance (d^2/r^2; blobs weighted by BLOB_WEIGHT so cell bodies are not cut by tubes).
 *    Tiles of voxels loop over the primitives whose box meets them: no write races.
 * 3. The rest: every voxel takes the object of its nearest core voxel under the anisotropic
 *    metric (z steps weigh `anisotropy`), by the separable exact Euclidean distance
 *    transform of Felzenszwalb and Huttenlocher (2012) carrying the nearest site's object.
 * 4. Labels: 6-connected pieces of equal object, by union-find in C order with parents
 *    always pointing to lower indices; the root is then each piece's first voxel, so one
 *    pass numbers the pieces 1..N in order of first appearance (canonical). Pieces under
 *    MIN_PIECE voxels (slivers where cores meet) join the object of their first neighbour
 *    in C order, and the pieces are labelled again.
 */
#include "synth/internal.h"

#include <limits.h>
#include <math.h>
#include <string.h>

#define CORE_FILL 0.75
#define BLOB_WEIGHT 0.5
#define MAX_OBJECTS 1000000
#define MIN_PIECE 64 /* voxels: smaller pieces join a neighbour */

struct prim {
    bool blob;
    int32_t obj;
    double a[3], b[3]; /* capsule ends; a is the blob's centre */
    double r0, r1;     /* capsule radii at a and b */
    double rot[3][3];  /* blob: rows are its axes */
    double inv_axis[3];
    int64_t lo[3], hi[3]; /* voxel box [lo, hi) */
};

struct scene {
    struct vox_ctx *ctx;
    const struct vox_synth_params *p;
    double spacing[3], box[3];
    struct prim *prims;
    int64_t count, cap;
    int32_t objects;
};

static double dot3(const double *a, const double *b)
{
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

static void unit3(struct synth_rng *r, double *d)
{
    double n2;
    do {
        for (int i = 0; i < 3; i++)
            d[i] = synth_gauss(r);
        n2 = dot3(d, d);
    } while (n2 < 1e-6);
    double inv = 1 / sqrt(n2);
    for (int i = 0; i < 3; i++)
        d[i] *= inv;
}

static void prim_box(const struct scene *s, struct prim *q, const double *lo, const double *hi)
{
    for (int i = 0; i < 3; i++) {
        double l = lo[i] / s->spacing[i], h = hi[i] / s->spacing[i];
        int64_t n = s->p->shape[i];
        q->lo[i] = l <= 0 ? 0 : l >= (double)n ? n : (int64_t)l;
        q->hi[i] = h < 0 ? 0 : h >= (double)(n - 1) ? n : (int64_t)h + 2;
        if (q->hi[i] > n)
            q->hi[i] = n;
    }
}

static enum vox_status scene_push(struct scene *s, const struct prim *q)
{
    if (s->count == s->cap) {
        int64_t cap = s->cap ? 2 * s->cap : 256;
        void *m =
            vox_realloc(s->ctx, s->prims, (size_t)s->cap * sizeof *q, (size_t)cap * sizeof *q);
        if (!m)
            return VOX_OUT_OF_MEMORY;
        s->prims = m;
        s->cap = cap;
    }
    s->prims[s->count++] = *q;
    return VOX_OK;
}

/* A blob: returns its volume. */
static enum vox_status add_blob(struct scene *s, int64_t k, double *volume_out)
{
    struct synth_rng r = {synth_hash(s->p->seed, SYNTH_OBJECT, (uint64_t)k)};
    struct prim q = {.blob = true, .obj = s->objects};
    double base = s->p->cell_size_nm * synth_uniform(&r, 0.75, 1.5), ax[3], lo[3], hi[3];
    for (int i = 0; i < 3; i++) {
        q.a[i] = synth_uniform(&r, 0, s->box[i]);
        ax[i] = base * synth_uniform(&r, 0.75, 1.3);
        q.inv_axis[i] = 1 / ax[i];
    }
    double qt[4], n2 = 0;
    for (int i = 0; i < 4; i++) {
        qt[i] = synth_gauss(&r);
        n2 += qt[i] * qt[i];
    }
    double w = qt[0], x = qt[1], y = qt[2], z = qt[3], f = n2 > 1e-12 ? 2 / n2 : 0;
    double m[3][3] = {{1 - f * (y * y + z * z), f * (x * y - z * w), f * (x * z + y * w)},
                      {f * (x * y + z * w), 1 - f * (x * x + z * z), f * (y * z - x * w)},
                      {f * (x * z - y * w), f * (y * z + x * w), 1 - f * (x * x + y * y)}};
    memcpy(q.rot, m, sizeof m);
    double rmax = ax[0] > ax[1] ? ax[0] : ax[1];
    rmax = rmax > ax[2] ? rmax : ax[2];
    for (int i = 0; i < 3; i++) {
        lo[i] = q.a[i] - rmax;
        hi[i] = q.a[i] + rmax;
    }
    prim_box(s, &q, lo, hi);
    *volume_out = 4.18879020478639 * ax[0] * ax[1] * ax[2];
    return scene_push(s, &q);
}

/* Length of the segment a->b inside the box (Liang-Barsky clipping). */
static double clipped_length(const struct scene *s, const double *a, const double *b)
{
    double t0 = 0, t1 = 1;
    for (int i = 0; i < 3; i++) {
        double d = b[i] - a[i];
        if (d == 0) {
            if (a[i] < 0 || a[i] > s->box[i])
                return 0;
            continue;
        }
        double u = (0 - a[i]) / d, v = (s->box[i] - a[i]) / d;
        if (u > v) {
            double t = u;
            u = v;
            v = t;
        }
        t0 = u > t0 ? u : t0;
        t1 = v < t1 ? v : t1;
    }
    if (t1 <= t0)
        return 0;
    double d[3] = {b[0] - a[0], b[1] - a[1], b[2] - a[2]};
    return (t1 - t0) * sqrt(dot3(d, d));
}

struct walk {
    double pos[3], dir[3], rt, rad, wobble, step, margin;
};

static bool outside(const struct scene *s, const double *x, double margin)
{
    for (int i = 0; i < 3; i++)
        if (x[i] < -margin || x[i] > s->box[i] + margin)
            return true;
    return false;
}

/* Walks one way from the start, pushing capsules; adds their in-box volume. */
static enum vox_status tube_walk(struct scene *s, struct synth_rng *r, struct walk w,
                                 double *volume)
{
    double diag = sqrt(dot3(s->box, s->box));
    int64_t steps = (int64_t)(2 * diag / w.step) + 4;
    for (int64_t k = 0; k < steps && !outside(s, w.pos, w.margin); k++) {
        struct prim q = {.obj = s->objects, .r0 = w.rad};
        memcpy(q.a, w.pos, sizeof q.a);
        double g[3];
        unit3(r, g);
        for (int i = 0; i < 3; i++)
            w.dir[i] += 0.25 * g[i];
        double inv = 1 / sqrt(dot3(w.dir, w.dir));
        for (int i = 0; i < 3; i++) {
            w.dir[i] *= inv;
            w.pos[i] += w.step * w.dir[i];
        }
        w.wobble = 0.85 * w.wobble + 0.3 * synth_gauss(r);
        w.wobble = w.wobble < -2 ? -2 : w.wobble > 2 ? 2 : w.wobble;
        w.rad = w.rt * (1 + 0.2 * w.wobble);
        memcpy(q.b, w.pos, sizeof q.b);
        q.r1 = w.rad;
        double lo[3], hi[3], rm = q.r0 > q.r1 ? q.r0 : q.r1;
        for (int i = 0; i < 3; i++) {
            lo[i] = (q.a[i] < q.b[i] ? q.a[i] : q.b[i]) - rm;
            hi[i] = (q.a[i] > q.b[i] ? q.a[i] : q.b[i]) + rm;
        }
        prim_box(s, &q, lo, hi);
        double rmid = 0.5 * (q.r0 + q.r1);
        *volume += 3.14159265358979 * rmid * rmid * clipped_length(s, q.a, q.b);
        enum vox_status st = scene_push(s, &q);
        if (st != VOX_OK)
            return st;
    }
    return VOX_OK;
}

static enum vox_status add_tube(struct scene *s, int64_t k, double *volume_out)
{
    struct synth_rng r = {synth_hash(s->p->seed, SYNTH_OBJECT, (1ull << 40) + (uint64_t)k)};
    struct walk w = {.wobble = 0};
    for (int i = 0; i < 3; i++)
        w.pos[i] = synth_uniform(&r, 0, s->box[i]);
    unit3(&r, w.dir);
    w.rt = 0.5 * s->p->cell_size_nm * synth_uniform(&r, 0.6, 1.5);
    w.rad = w.rt;
    w.step = 0.8 * w.rt;
    w.margin = 1.5 * w.rt;
    *volume_out = 0;
    enum vox_status st = tube_walk(s, &r, w, volume_out);
    for (int i = 0; i < 3; i++)
        w.dir[i] = -w.dir[i];
    return st != VOX_OK ? st : tube_walk(s, &r, w, volume_out);
}

static enum vox_status make_objects(struct scene *s)
{
    double volume = s->box[0] * s->box[1] * s->box[2];
    double blob_target = CORE_FILL * s->p->blob_fraction * volume;
    double tube_target = CORE_FILL * volume - blob_target, acc = 0, v;
    enum vox_status st = VOX_OK;
    for (int64_t k = 0; st == VOX_OK && s->objects < MAX_OBJECTS; k++) {
        int64_t before = s->count;
        st = add_blob(s, k, &v);
        if (st != VOX_OK)
            break;
        if (acc + 0.5 * v > blob_target) {
            s->count = before; /* this blob would overfill: blobs are done */
            break;
        }
        acc += v;
        s->objects++;
    }
    acc = 0;
    for (int64_t k = 0; st == VOX_OK && acc < tube_target && s->objects < MAX_OBJECTS; k++) {
        st = add_tube(s, k, &v);
        acc += v;
        s->objects++;
    }
    return st;
}

/* ---- cores ------------------------------------------------------------------------------ */

struct raster {
    const struct scene *s;
    float *score;
    int32_t *obj;
};

static double prim_score(const struct prim *q, const double *x)
{
    if (q->blob) {
        double d[3] = {x[0] - q->a[0], x[1] - q->a[1], x[2] - q->a[2]}, sum = 0;
        for (int i = 0; i < 3; i++) {
            double u = dot3(q->rot[i], d) * q->inv_axis[i];
            sum += u * u;
        }
        return sum;
    }
    double ab[3] = {q->b[0] - q->a[0], q->b[1] - q->a[1], q->b[2] - q->a[2]};
    double ax[3] = {x[0] - q->a[0], x[1] - q->a[1], x[2] - q->a[2]};
    double len2 = dot3(ab, ab), t = len2 > 0 ? dot3(ax, ab) / len2 : 0;
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    double d[3] = {ax[0] - t * ab[0], ax[1] - t * ab[1], ax[2] - t * ab[2]};
    double rad = q->r0 + t * (q->r1 - q->r0);
    return dot3(d, d) / (rad * rad);
}

static void raster_prim(const struct raster *ra, const struct prim *q, const int64_t *lo,
                        const int64_t *hi)
{
    const struct scene *s = ra->s;
    int64_t Y = s->p->shape[1], X = s->p->shape[2];
    for (int64_t z = lo[0]; z < hi[0]; z++)
        for (int64_t y = lo[1]; y < hi[1]; y++)
            for (int64_t x = lo[2]; x < hi[2]; x++) {
                double pt[3] = {z * s->spacing[0], y * s->spacing[1], x * s->spacing[2]};
                double sc = prim_score(q, pt);
                if (!(sc < 1))
                    continue;
                float w = (float)(q->blob ? BLOB_WEIGHT * sc : sc);
                int64_t i = (z * Y + y) * X + x;
                if (w < ra->score[i] || (w == ra->score[i] && q->obj < ra->obj[i])) {
                    ra->score[i] = w;
                    ra->obj[i] = q->obj;
                }
            }
}

static void raster_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct raster *ra = arg;
    const struct scene *s = ra->s;
    int64_t Y = s->p->shape[1], X = s->p->shape[2];
    for (int64_t z = lo[0]; z < hi[0]; z++)
        for (int64_t y = lo[1]; y < hi[1]; y++)
            for (int64_t x = 0; x < X; x++) {
                ra->score[(z * Y + y) * X + x] = 2;
                ra->obj[(z * Y + y) * X + x] = -1;
            }
    for (int64_t k = 0; k < s->count; k++) {
        const struct prim *q = &s->prims[k];
        int64_t a[3] = {q->lo[0] > lo[0] ? q->lo[0] : lo[0], q->lo[1] > lo[1] ? q->lo[1] : lo[1],
                        q->lo[2]};
        int64_t b[3] = {q->hi[0] < hi[0] ? q->hi[0] : hi[0], q->hi[1] < hi[1] ? q->hi[1] : hi[1],
                        q->hi[2]};
        if (a[0] < b[0] && a[1] < b[1] && a[2] < b[2])
            raster_prim(ra, q, a, b);
    }
}

/* ---- nearest core: the distance transform carrying labels ------------------------------- */

struct edt_pass {
    float *g;
    int32_t *obj;
    int64_t n, inner; /* line length and the stride between its elements */
    double w;         /* weight of one step squared */
    char *scratch;    /* per thread */
    size_t scratch_bytes;
};

static void edt_line(const struct edt_pass *e, float *g, int32_t *obj, char *scr)
{
    int64_t n = e->n, st = e->inner, k = -1;
    double *f = (double *)scr, *zb = f + n;
    int64_t *v = (int64_t *)(zb + n + 1);
    int32_t *lab = (int32_t *)(v + n);
    for (int64_t i = 0; i < n; i++) {
        f[i] = g[i * st];
        lab[i] = obj[i * st];
    }
    for (int64_t q = 0; q < n; q++) {
        if (f[q] == (double)INFINITY)
            continue;
        double s = -(double)INFINITY;
        while (k >= 0) {
            int64_t p = v[k];
            s = ((f[q] + e->w * (double)(q * q)) - (f[p] + e->w * (double)(p * p))) /
                (2 * e->w * (double)(q - p));
            if (s > zb[k])
                break;
            k--;
        }
        k++;
        v[k] = q;
        zb[k] = k == 0 ? -(double)INFINITY : s;
    }
    if (k < 0)
        return;
    int64_t m = k, j = 0;
    for (int64_t q = 0; q < n; q++) {
        while (j < m && zb[j + 1] < (double)q)
            j++;
        double d = (double)(q - v[j]);
        g[q * st] = (float)(e->w * d * d + f[v[j]]);
        obj[q * st] = lab[v[j]];
    }
}

static void edt_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    const struct edt_pass *e = arg;
    char *scr = e->scratch + (size_t)tid * e->scratch_bytes;
    for (int64_t o = lo[0]; o < hi[0]; o++)
        for (int64_t i = lo[1]; i < hi[1]; i++) {
            int64_t off = o * e->n * e->inner + i;
            edt_line(e, e->g + off, e->obj + off, scr);
        }
}

static enum vox_status nearest_core(struct vox_ctx *ctx, const struct vox_synth_params *p, float *g,
                                    int32_t *obj)
{
    const int64_t *sh = p->shape;
    int64_t numel = sh[0] * sh[1] * sh[2];
    for (int64_t i = 0; i < numel; i++)
        g[i] = obj[i] >= 0 ? 0.0f : INFINITY;
    int threads = vox_ctx_threads(ctx);
    for (int axis = 2; axis >= 0; axis--) {
        struct edt_pass e = {.g = g, .obj = obj, .n = sh[axis]};
        e.w = axis == 0 ? p->anisotropy * p->anisotropy : 1;
        e.inner = axis == 0 ? sh[1] * sh[2] : axis == 1 ? sh[2] : 1;
        int64_t outer = axis == 0 ? 1 : axis == 1 ? sh[0] : sh[0] * sh[1];
        e.scratch_bytes = (size_t)(e.n * 32 + 64 + 127) / 128 * 128; /* no line two threads share */
        e.scratch = vox_alloc(ctx, (size_t)threads * e.scratch_bytes);
        if (!e.scratch)
            return VOX_OUT_OF_MEMORY;
        int64_t range[3] = {outer, e.inner, 1}, tile[3] = {e.inner == 1 ? 64 : 1, 256, 1};
        vox_pool_for(vox_ctx_pool(ctx), range, tile, VOX_SCHED_STATIC, edt_task, &e);
        vox_free(ctx, e.scratch);
    }
    return VOX_OK;
}

/* ---- connected pieces ------------------------------------------------------------------- */

static uint64_t find_root(uint64_t *parent, uint64_t i)
{
    while (parent[i] != i) {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    return i;
}

static void unite(uint64_t *parent, uint64_t a, uint64_t b)
{
    a = find_root(parent, a);
    b = find_root(parent, b);
    if (a < b)
        parent[b] = a;
    else if (b < a)
        parent[a] = b;
}

static int64_t label_pieces(const int64_t *sh, const int32_t *obj, uint64_t *lab)
{
    int64_t Y = sh[1], X = sh[2], plane = Y * X, numel = sh[0] * plane;
    for (int64_t i = 0; i < numel; i++) {
        lab[i] = (uint64_t)i;
        int64_t x = i % X, y = (i / X) % Y;
        if (x > 0 && obj[i - 1] == obj[i])
            unite(lab, (uint64_t)i, (uint64_t)(i - 1));
        if (y > 0 && obj[i - X] == obj[i])
            unite(lab, (uint64_t)i, (uint64_t)(i - X));
        if (i >= plane && obj[i - plane] == obj[i])
            unite(lab, (uint64_t)i, (uint64_t)(i - plane));
    }
    /* parents point down, so lab[p] for p < i already holds p's final label */
    uint64_t n = 0;
    for (int64_t i = 0; i < numel; i++) {
        uint64_t p = lab[i];
        lab[i] = p == (uint64_t)i ? ++n : lab[p];
    }
    return (int64_t)n;
}

/* Gives each piece under MIN_PIECE voxels the object of its first other-piece neighbour. */
static enum vox_status absorb_slivers(struct vox_ctx *ctx, const int64_t *sh, int32_t *obj,
                                      const uint64_t *lab, int64_t pieces)
{
    int64_t *size = vox_calloc(ctx, (size_t)pieces + 1, sizeof *size);
    int32_t *repl = vox_alloc(ctx, ((size_t)pieces + 1) * sizeof *repl);
    if (!size || !repl) {
        vox_free(ctx, size);
        vox_free(ctx, repl);
        return VOX_OUT_OF_MEMORY;
    }
    int64_t Y = sh[1], X = sh[2], plane = Y * X, numel = sh[0] * plane;
    for (int64_t i = 0; i < numel; i++)
        size[lab[i]]++;
    for (int64_t k = 0; k <= pieces; k++)
        repl[k] = INT32_MIN;
    for (int64_t i = 0; i < numel; i++) {
        uint64_t l = lab[i];
        if (size[l] >= MIN_PIECE || repl[l] != INT32_MIN)
            continue;
        int64_t x = i % X, y = (i / X) % Y, z = i / plane;
        int64_t nb[6] = {x > 0 ? i - 1 : i,     x + 1 < X ? i + 1 : i,
                         y > 0 ? i - X : i,     y + 1 < Y ? i + X : i,
                         z > 0 ? i - plane : i, z + 1 < sh[0] ? i + plane : i};
        for (int k = 0; k < 6 && repl[l] == INT32_MIN; k++)
            if (lab[nb[k]] != l)
                repl[l] = obj[nb[k]];
    }
    for (int64_t i = 0; i < numel; i++)
        if (repl[lab[i]] != INT32_MIN)
            obj[i] = repl[lab[i]];
    vox_free(ctx, size);
    vox_free(ctx, repl);
    return VOX_OK;
}

enum vox_status synth_cells(struct vox_ctx *ctx, const struct vox_synth_params *p, uint64_t *labels,
                            int64_t *cells_out)
{
    struct scene s = {.ctx = ctx, .p = p};
    s.spacing[0] = p->voxel_nm * p->anisotropy;
    s.spacing[1] = s.spacing[2] = p->voxel_nm;
    for (int i = 0; i < 3; i++)
        s.box[i] = (double)p->shape[i] * s.spacing[i];
    int64_t numel = p->shape[0] * p->shape[1] * p->shape[2];
    float *score = vox_alloc(ctx, (size_t)numel * sizeof(float));
    int32_t *obj = vox_alloc(ctx, (size_t)numel * sizeof(int32_t));
    enum vox_status st = score && obj ? make_objects(&s) : VOX_OUT_OF_MEMORY;
    if (st != VOX_OK)
        goto done;
    struct raster ra = {.s = &s, .score = score, .obj = obj};
    int64_t range[3] = {p->shape[0], p->shape[1], 1}, tile[3] = {1, 16, 1};
    vox_pool_for(vox_ctx_pool(ctx), range, tile, VOX_SCHED_DYNAMIC, raster_task, &ra);
    st = nearest_core(ctx, p, score, obj);
    if (st != VOX_OK)
        goto done;
    int64_t pieces = label_pieces(p->shape, obj, labels);
    if ((st = absorb_slivers(ctx, p->shape, obj, labels, pieces)) != VOX_OK)
        goto done;
    *cells_out = label_pieces(p->shape, obj, labels);
done:
    vox_free(ctx, s.prims);
    vox_free(ctx, score);
    vox_free(ctx, obj);
    return st;
}
