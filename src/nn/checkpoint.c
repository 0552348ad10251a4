/*
 * checkpoint.c: training checkpoints: everything a run needs to continue bit for bit, in one
 * self-checking file written atomically.
 *
 * Layout (little-endian, as the machine writes it; vox runs on x86-64):
 *   "VOXCKPT1"  u32 version (1)  u32 optimizer kind  i64 iteration  u64 generator word
 *   u32 entries, then per parameter present (layer order, then param order):
 *     u32 layer  u32 param  u32 name length  name  u32 rank  i64 shape[rank]
 *     f32 weight[numel]  f32 m[numel]  f32 v[numel]
 *   u64 FNV-1a of every byte before it.
 * FNV-1a's steps are bijections of the state, so any one changed byte changes the sum: a
 * flipped byte is always caught. Loading checks the sum first, then the net (names, params,
 * shapes), then applies; a failed load leaves the trainer untouched. Writing goes to
 * "PATH.tmp-PID", fsync, then rename over PATH, so a crash leaves the old checkpoint whole.
 */
#include "internal.h"
#include "train_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CKPT_MAGIC "VOXCKPT1"
#define CKPT_VERSION 1u

struct buf {
    unsigned char *p;
    size_t len, cap;
    struct vox_ctx *ctx;
    bool oom;
};

static void put(struct buf *b, const void *src, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 4096) + n;
        unsigned char *p = vox_realloc(b->ctx, b->p, b->len, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void put_u32(struct buf *b, uint32_t v)
{
    put(b, &v, sizeof v);
}

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * UINT64_C(0x100000001b3);
    return h;
}

static uint32_t count_params(const struct vox_nn_weights *w)
{
    uint32_t n = 0;
    for (int i = 0; i < w->n_layers; i++)
        for (int k = 0; k < VOX_P_COUNT; k++)
            n += w->p[i][k].rank > 0;
    return n;
}

static void serialize(const struct vox_trainer *tr, struct buf *b)
{
    put(b, CKPT_MAGIC, 8);
    put_u32(b, CKPT_VERSION);
    put_u32(b, (uint32_t)tr->o.optim.kind);
    put(b, &tr->iter, sizeof tr->iter);
    put(b, &tr->rng, sizeof tr->rng);
    put_u32(b, count_params(tr->w));
    for (int i = 0; i < tr->w->n_layers; i++)
        for (int k = 0; k < VOX_P_COUNT; k++) {
            const struct vox_tensor *t = &tr->w->p[i][k];
            if (!t->rank)
                continue;
            const char *name = tr->net->layers[i].name;
            put_u32(b, (uint32_t)i);
            put_u32(b, (uint32_t)k);
            put_u32(b, (uint32_t)strlen(name));
            put(b, name, strlen(name));
            put_u32(b, (uint32_t)t->rank);
            put(b, t->shape, (size_t)t->rank * sizeof t->shape[0]);
            put(b, t->data, vox_tensor_nbytes(t));
            put(b, tr->m->p[i][k].data, vox_tensor_nbytes(t));
            put(b, tr->v->p[i][k].data, vox_tensor_nbytes(t));
        }
    uint64_t h = fnv1a(b->p, b->len);
    put(b, &h, sizeof h);
}

static enum vox_status write_atomic(struct vox_ctx *ctx, const char *path, const struct buf *b)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return vox_fail(ctx, VOX_INVALID_ARG, "checkpoint path '%s' is too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return vox_fail(ctx, VOX_IO, "cannot create checkpoint '%s': %s", tmp, strerror(errno));
    bool ok = fwrite(b->p, 1, b->len, f) == b->len && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int err = errno;
    ok = fclose(f) == 0 && ok;
    if (ok && rename(tmp, path) == 0)
        return VOX_OK;
    err = ok ? errno : err;
    remove(tmp);
    return vox_fail(ctx, VOX_IO, "cannot write checkpoint '%s': %s", path, strerror(err));
}

enum vox_status vox_trainer_save(struct vox_ctx *ctx, const struct vox_trainer *tr,
                                 const char *path)
{
    struct buf b = {.ctx = ctx};
    vox_optim_settle(tr->update); /* the last step's update in the weights and state */
    serialize(tr, &b);
    enum vox_status s = b.oom ? VOX_OUT_OF_MEMORY : write_atomic(ctx, path, &b);
    vox_free(ctx, b.p);
    return s;
}

struct reader {
    const unsigned char *p;
    size_t len, at;
};

static bool get(struct reader *r, void *dst, size_t n)
{
    if (r->len - r->at < n)
        return false;
    if (dst)
        memcpy(dst, r->p + r->at, n);
    r->at += n;
    return true;
}

/* One parameter entry: checked against the net; copied into the trainer when `apply`. */
static const char *read_entry(struct reader *r, struct vox_trainer *tr, bool apply)
{
    uint32_t layer, param, nlen, rank;
    char name[VOX_NN_NAME_MAX];
    if (!get(r, &layer, 4) || !get(r, &param, 4) || !get(r, &nlen, 4))
        return "truncated";
    if (layer >= (uint32_t)tr->net->n_layers || param >= VOX_P_COUNT || nlen >= sizeof name ||
        !get(r, name, nlen) || !get(r, &rank, 4))
        return "a parameter entry is malformed";
    name[nlen] = '\0';
    struct vox_tensor *t = &tr->w->p[layer][param];
    int64_t shape[VOX_MAX_RANK];
    if (strcmp(name, tr->net->layers[layer].name) != 0 || rank != (uint32_t)t->rank ||
        !get(r, shape, rank * sizeof shape[0]) ||
        memcmp(shape, t->shape, rank * sizeof shape[0]) != 0)
        return "it was made for another net (layer names or parameter shapes differ)";
    size_t nb = vox_tensor_nbytes(t);
    struct vox_tensor *dst[3] = {t, &tr->m->p[layer][param], &tr->v->p[layer][param]};
    for (int k = 0; k < 3; k++)
        if (!get(r, apply ? dst[k]->data : NULL, nb))
            return "truncated";
    return NULL;
}

/* Walks the file; NULL when it is good (and applied, when `apply`), else what is wrong. */
static const char *parse(struct reader *r, struct vox_trainer *tr, bool apply)
{
    char magic[8];
    uint32_t version, kind, n;
    int64_t iter;
    uint64_t rng;
    r->at = 0;
    if (!get(r, magic, 8) || memcmp(magic, CKPT_MAGIC, 8) != 0)
        return "not a vox checkpoint (bad magic)";
    uint64_t sum = 0;
    if (r->len >= 16)
        memcpy(&sum, r->p + r->len - 8, 8);
    if (r->len < 16 || fnv1a(r->p, r->len - 8) != sum)
        return "corrupted (checksum mismatch)";
    r->len -= 8;
    if (!get(r, &version, 4) || version != CKPT_VERSION)
        return "unsupported version";
    if (!get(r, &kind, 4) || kind != (uint32_t)tr->o.optim.kind)
        return "it was written with another optimizer";
    if (!get(r, &iter, 8) || !get(r, &rng, 8) || !get(r, &n, 4) || iter < 0)
        return "truncated";
    if (n != count_params(tr->w))
        return "it was made for another net (parameter count differs)";
    for (uint32_t i = 0; i < n; i++) {
        const char *e = read_entry(r, tr, apply);
        if (e)
            return e;
    }
    if (r->at != r->len)
        return "trailing bytes";
    if (apply)
        tr->iter = iter, tr->rng = rng;
    return NULL;
}

enum vox_status vox_trainer_load(struct vox_ctx *ctx, struct vox_trainer *tr, const char *path)
{
    vox_optim_settle(tr->update); /* no update runs on what this replaces */
    FILE *f = fopen(path, "rb");
    if (!f)
        return vox_fail(ctx, VOX_IO, "cannot open checkpoint '%s': %s", path, strerror(errno));
    struct buf b = {.ctx = ctx};
    unsigned char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        put(&b, chunk, got);
    bool rerr = ferror(f);
    fclose(f);
    enum vox_status s = VOX_OK;
    if (b.oom)
        s = VOX_OUT_OF_MEMORY;
    else if (rerr)
        s = vox_fail(ctx, VOX_IO, "cannot read checkpoint '%s'", path);
    struct reader r = {b.p, b.len, 0};
    const char *e = s == VOX_OK ? parse(&r, tr, false) : NULL;
    if (s == VOX_OK && e)
        s = vox_fail(ctx, VOX_FORMAT, "checkpoint '%s' refused: %s", path, e);
    r.len = b.len;
    if (s == VOX_OK)
        parse(&r, tr, true);
    vox_free(ctx, b.p);
    return s;
}
