/*
 * optim.c: the optimizers: SGD with momentum, L2 weight decay and step annealing (ZNN's
 * filter::update and train.py's anneal_factor), and Adam (Kingma & Ba 2015, with bias
 * correction).
 *
 * Updates are elementwise, computed in double from the f32 weight, gradient and state and
 * stored back in f32, each element on its own (blocks of them on the context's threads): the
 * same inputs give the same bits on any machine and thread count, and the state (m, v) is all a
 * checkpoint needs besides the step count. Batch norm's running statistics (bn_mean, bn_var) are
 * not trained: the trainer updates them from the batch statistics; bn_weight and bn_bias are, like
 * any weight.
 */
#include "internal.h"
#include "vox/train.h"

#include <string.h>

static const char *const optim_names[] = {"sgd", "adam"};

const char *vox_optim_str(enum vox_optim_kind k)
{
    return k < VOX_OPTIM_COUNT ? optim_names[k] : "?";
}

bool vox_optim_parse(const char *s, enum vox_optim_kind *out)
{
    for (int i = 0; i < VOX_OPTIM_COUNT; i++)
        if (strcmp(s, optim_names[i]) == 0)
            return *out = (enum vox_optim_kind)i, true;
    return false;
}

void vox_optim_defaults(enum vox_optim_kind k, struct vox_optim_params *p)
{
    *p = (struct vox_optim_params){.kind = k,
                                   .lr = k == VOX_OPTIM_ADAM ? 0.001 : 0.01,
                                   .momentum = 0.9,
                                   .beta1 = 0.9,
                                   .beta2 = 0.999,
                                   .eps = 1e-8,
                                   .anneal_factor = 0.1};
}

enum vox_status vox_optim_check(struct vox_ctx *ctx, const struct vox_optim_params *p)
{
    if (p->kind >= VOX_OPTIM_COUNT)
        return vox_fail(ctx, VOX_INVALID_ARG, "optimizer: unknown kind %d", (int)p->kind);
    if (!(p->lr > 0) || !(p->lr < 1e6))
        return vox_fail(ctx, VOX_INVALID_ARG, "optimizer: lr %g must be > 0", p->lr);
    if (!(p->momentum >= 0 && p->momentum < 1))
        return vox_fail(ctx, VOX_INVALID_ARG, "optimizer: momentum %g must be in [0, 1)",
                        p->momentum);
    if (!(p->weight_decay >= 0))
        return vox_fail(ctx, VOX_INVALID_ARG, "optimizer: weight decay %g must be >= 0",
                        p->weight_decay);
    if (!(p->beta1 >= 0 && p->beta1 < 1 && p->beta2 >= 0 && p->beta2 < 1 && p->eps > 0))
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "optimizer: adam needs beta1, beta2 in [0, 1) and eps > 0");
    if (p->anneal_every < 0 || !(p->anneal_factor > 0 && p->anneal_factor <= 1))
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "optimizer: anneal every %lld must be >= 0, factor %g in (0, 1]",
                        (long long)p->anneal_every, p->anneal_factor);
    return VOX_OK;
}

enum { OPTIM_BLOCK = 16384 /* elements a task updates */ };

struct optim_job {
    const struct vox_optim_params *p;
    double lr, c1, c2;
    struct vox_nn_weights *w, *m, *v;
    const struct vox_nn_weights *g;
    int32_t (*ref)[2]; /* the trained tensors: layer, parameter */
    int64_t *first;    /* per tensor: its first block; then the block count */
    int n;
    int64_t block; /* elements a block */
};

/* Elements [e0, e1) of tensor (i, k): each alone, so any split gives the same bits. */
static void optim_range(const struct optim_job *j, int i, int k, int64_t e0, int64_t e1)
{
    const struct vox_optim_params *p = j->p;
    float *wp = j->w->p[i][k].data, *mp = j->m->p[i][k].data, *vp = j->v->p[i][k].data;
    const float *gp = j->g->p[i][k].data;
    for (int64_t e = e0; e < e1; e++) {
        double gd = (double)gp[e] + p->weight_decay * wp[e];
        if (p->kind == VOX_OPTIM_SGD) {
            double md = p->momentum * mp[e] + gd;
            mp[e] = (float)md;
            wp[e] = (float)(wp[e] - j->lr * md);
            continue;
        }
        double md = p->beta1 * mp[e] + (1 - p->beta1) * gd;
        double vd = p->beta2 * vp[e] + (1 - p->beta2) * gd * gd;
        mp[e] = (float)md;
        vp[e] = (float)vd;
        wp[e] = (float)(wp[e] - j->lr * (md / j->c1) / (sqrt(vd / j->c2) + p->eps));
    }
}

/* Block b of the job's tensors; *t: a tensor at or before b's (a hint, advanced to b's). */
static void optim_block(const struct optim_job *j, int64_t b, int *t)
{
    while (j->first[*t + 1] <= b)
        ++*t;
    while (j->first[*t] > b)
        --*t;
    const int i = j->ref[*t][0], k = j->ref[*t][1];
    const int64_t n = vox_tensor_numel(&j->w->p[i][k]), e0 = (b - j->first[*t]) * j->block;
    optim_range(j, i, k, e0, e0 + j->block < n ? e0 + j->block : n);
}

static void optim_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    const struct optim_job *j = arg;
    int t = 0;
    for (int64_t b = lo[0]; b < hi[0]; b++)
        optim_block(j, b, &t);
}

/* The trained tensors of w (j->ref, j->n) and their blocks of j->block elements (j->first:
 * n + 2 entries); the block count. */
static int64_t optim_blocks(struct optim_job *j, const struct vox_nn_weights *w)
{
    int64_t blocks = 0;
    j->n = 0;
    for (int i = 0; i < w->n_layers; i++)
        for (int k = 0; k < VOX_P_COUNT; k++) {
            if (w->p[i][k].rank == 0 || k == VOX_P_BN_MEAN || k == VOX_P_BN_VAR)
                continue;
            j->ref[j->n][0] = i, j->ref[j->n][1] = k;
            j->first[j->n++] = blocks;
            blocks += (vox_tensor_numel(&w->p[i][k]) + j->block - 1) / j->block;
        }
    j->first[j->n] = blocks;
    j->first[j->n + 1] = INT64_MAX;
    return blocks;
}

/* The learning rate and Adam's bias corrections of step t. */
static void optim_scalars(struct optim_job *j, const struct vox_optim_params *p, int64_t t)
{
    j->lr = p->lr;
    if (p->anneal_every > 0)
        j->lr *= pow(p->anneal_factor, (double)((t - 1) / p->anneal_every));
    j->c1 = 1 - pow(p->beta1, (double)t);
    j->c2 = 1 - pow(p->beta2, (double)t);
}

void vox_optim_step(struct vox_ctx *ctx, const struct vox_optim_params *p, int64_t t,
                    struct vox_nn_weights *w, const struct vox_nn_weights *g,
                    struct vox_nn_weights *m, struct vox_nn_weights *v)
{
    struct optim_job j = {.p = p, .w = w, .m = m, .v = v, .g = g, .block = OPTIM_BLOCK};
    optim_scalars(&j, p, t);
    const int cap = w->n_layers * VOX_P_COUNT;
    j.ref = ctx ? vox_alloc(ctx, (size_t)(cap + 1) * sizeof *j.ref) : NULL;
    j.first = ctx ? vox_alloc(ctx, (size_t)(cap + 2) * sizeof *j.first) : NULL;
    if (!j.ref || !j.first) { /* no context (or memory): one element after another here */
        if (ctx) {
            vox_free(ctx, j.ref);
            vox_free(ctx, j.first);
        }
        for (int i = 0; i < w->n_layers; i++)
            for (int k = 0; k < VOX_P_COUNT; k++)
                if (w->p[i][k].rank != 0 && k != VOX_P_BN_MEAN && k != VOX_P_BN_VAR)
                    optim_range(&j, i, k, 0, vox_tensor_numel(&w->p[i][k]));
        return;
    }
    const int64_t blocks = optim_blocks(&j, w);
    if (blocks)
        vox_pool_for(vox_ctx_pool(ctx), (int64_t[3]){blocks, 1, 1}, (int64_t[3]){1, 1, 1},
                     VOX_SCHED_AFFINE, optim_task, &j);
    vox_free(ctx, j.ref);
    vox_free(ctx, j.first);
}

/* ---- the update in the background ---- */

enum {
    DEFER_BLOCK = 2048 /* elements: ~10 us of Adam, what a loop posted meanwhile may wait */
};
enum { BLOCK_PENDING, BLOCK_RUNNING, BLOCK_DONE };

struct vox_optim_deferred {
    struct vox_ctx *ctx;
    struct optim_job j;
    struct vox_optim_params p;
    int n_layers;
    int64_t blocks;
    int64_t *layer_first;       /* per layer: its first block; then the block count */
    uint8_t *state;             /* per block: BLOCK_* (atomic) */
    int64_t next;               /* the idle threads' next block to try (atomic) */
    bool posted;                /* registered as the pool's idle work */
    int64_t n_idle, n_required; /* blocks run each way (atomic) */
};

/* Runs block b unless another thread has taken it; true if this call ran it. */
static bool claim_block(struct vox_optim_deferred *u, int64_t b, int *t)
{
    uint8_t expect = BLOCK_PENDING;
    if (!__atomic_compare_exchange_n(&u->state[b], &expect, BLOCK_RUNNING, false, __ATOMIC_ACQUIRE,
                                     __ATOMIC_RELAXED))
        return false;
    optim_block(&u->j, b, t);
    __atomic_store_n(&u->state[b], BLOCK_DONE, __ATOMIC_RELEASE);
    return true;
}

/* The pool's idle work: the next block, in layer order (the next forward reads the first
 * layers first). */
static bool idle_block(void *arg)
{
    struct vox_optim_deferred *u = arg;
    const int64_t b = __atomic_fetch_add(&u->next, 1, __ATOMIC_RELAXED);
    if (b >= u->blocks)
        return false;
    int t = 0;
    if (claim_block(u, b, &t))
        __atomic_add_fetch(&u->n_idle, 1, __ATOMIC_RELAXED);
    return true;
}

enum vox_status vox_optim_deferred_create(struct vox_ctx *ctx, const struct vox_nn_weights *w,
                                          struct vox_optim_deferred **u_out)
{
    *u_out = NULL;
    struct vox_optim_deferred *u = vox_calloc(ctx, 1, sizeof *u);
    if (!u)
        return VOX_OUT_OF_MEMORY;
    u->ctx = ctx;
    u->n_layers = w->n_layers;
    u->j.block = DEFER_BLOCK;
    const int cap = w->n_layers * VOX_P_COUNT;
    if (!(u->j.ref = vox_alloc(ctx, (size_t)(cap + 1) * sizeof *u->j.ref)) ||
        !(u->j.first = vox_alloc(ctx, (size_t)(cap + 2) * sizeof *u->j.first)) ||
        !(u->layer_first = vox_alloc(ctx, (size_t)(w->n_layers + 1) * sizeof *u->layer_first))) {
        vox_optim_deferred_destroy(u);
        return VOX_OUT_OF_MEMORY;
    }
    u->blocks = optim_blocks(&u->j, w);
    for (int i = 0, t = 0; i <= w->n_layers; i++) { /* tensors are in layer order */
        while (t < u->j.n && u->j.ref[t][0] < i)
            t++;
        u->layer_first[i] = u->j.first[t];
    }
    if (!(u->state = vox_calloc(ctx, (size_t)(u->blocks + 1), 1))) {
        vox_optim_deferred_destroy(u);
        return VOX_OUT_OF_MEMORY;
    }
    *u_out = u;
    return VOX_OK;
}

void vox_optim_deferred_destroy(struct vox_optim_deferred *u)
{
    if (!u)
        return;
    if (u->state)
        vox_optim_settle(u);
    vox_free(u->ctx, u->j.ref);
    vox_free(u->ctx, u->j.first);
    vox_free(u->ctx, u->layer_first);
    vox_free(u->ctx, u->state);
    vox_free(u->ctx, u);
}

void vox_optim_post(struct vox_optim_deferred *u, const struct vox_optim_params *p, int64_t t,
                    struct vox_nn_weights *w, const struct vox_nn_weights *g,
                    struct vox_nn_weights *m, struct vox_nn_weights *v)
{
    vox_optim_settle(u);
    u->p = *p;
    u->j.p = &u->p;
    u->j.w = w, u->j.g = g, u->j.m = m, u->j.v = v;
    optim_scalars(&u->j, p, t);
    memset(u->state, BLOCK_PENDING, (size_t)u->blocks);
    __atomic_store_n(&u->next, 0, __ATOMIC_RELAXED);
    u->posted = true;
    vox_pool_set_idle(vox_ctx_pool(u->ctx), idle_block, u); /* publishes the stores above */
}

void vox_optim_require(struct vox_optim_deferred *u, int layer)
{
    if (!u || !u->posted || layer < 0 || layer >= u->n_layers)
        return;
    int t = 0;
    for (int64_t b = u->layer_first[layer]; b < u->layer_first[layer + 1]; b++) {
        if (claim_block(u, b, &t)) {
            __atomic_add_fetch(&u->n_required, 1, __ATOMIC_RELAXED);
            continue;
        }
        while (__atomic_load_n(&u->state[b], __ATOMIC_ACQUIRE) != BLOCK_DONE)
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#else
            ;
#endif
    }
}

void vox_optim_settle(struct vox_optim_deferred *u)
{
    if (!u || !u->posted)
        return;
    for (int i = 0; i < u->n_layers; i++)
        vox_optim_require(u, i);
    vox_pool_set_idle(vox_ctx_pool(u->ctx), NULL, NULL); /* no thread inside idle_block now */
    u->posted = false;
}

void vox_optim_deferred_counts(const struct vox_optim_deferred *u, int64_t *idle_out,
                               int64_t *required_out)
{
    *idle_out = __atomic_load_n(&u->n_idle, __ATOMIC_RELAXED);
    *required_out = __atomic_load_n(&u->n_required, __ATOMIC_RELAXED);
}
