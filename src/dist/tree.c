/*
 * dist/tree.c: the octree's schedule: every node runs as soon as its children are done.
 *
 * The three stages build the same octree: atomic chunks at level 0, 2x2x2 children per node
 * above, one root. Running it level by level leaves threads idle at every level's end (the
 * last chunks of a level run while the others wait) and keeps a whole level's summaries
 * alive until the next level ends. Here the pool's workers take tasks from one list under a
 * lock (tasks take milliseconds, so the lock is not on a hot path): ready nodes first, the
 * highest level first (the root path is the critical path, and a node frees its children's
 * summaries), then the atomic chunks in the tree's depth-first order, so that the 8 children
 * of a node finish together and their parent starts while the other chunks still run (but
 * for the tail: tree_spread_tail), then
 * the side jobs: they fill the time a worker would wait while the upper nodes, the root
 * last, run on fewer workers than there are (the agglomeration's side job, the merge record's
 * replay, ran first until 2026-11-27: 2 threads, 512^3, 70 ms slower a run). A node's result
 * depends only on its children's summaries, so the order changes no result.
 *
 * The upper nodes, the root above all, run while the other workers have nothing to take
 * (the three roots were most of a 2-thread run's serial time). A task can post one parallel
 * loop (dist_par_for): workers take its items before any new task, the poster takes them
 * too and returns when all are done. The items are the caller's pure functions of their
 * index, so who runs them changes nothing.
 */
#include "dist_internal.h"

#include <string.h>

void dist_tree_init(struct dist_tree *t, const int64_t grid0[3])
{
    memset(t, 0, sizeof *t);
    int64_t g[3] = {grid0[0], grid0[1], grid0[2]};
    for (int l = 0;; l++) {
        memcpy(t->grid[l], g, sizeof g);
        t->n[l] = g[0] * g[1] * g[2];
        t->nlev = l + 1;
        if (g[0] == 1 && g[1] == 1 && g[2] == 1)
            break;
        for (int a = 0; a < 3; a++)
            g[a] = (g[a] + 1) / 2;
    }
}

/* A loop posted by dist_par_for: items [0, n), the next to hand out, those not finished. */
struct tree_job {
    void (*fn)(void *arg, int64_t i);
    void *arg;
    int64_t n, next, left;
};

struct tree_run {
    struct dist_tree *t;
    int from, to;
    dist_tree_fn fn;
    void (*idle)(void *, int);
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t *order; /* level `from`'s nodes in depth-first order */
    int64_t next;   /* the next of them to hand out */
    int64_t side, nside;
    int32_t *pending[DIST_TREE_LEVELS]; /* per node above `from`: children not done */
    int64_t *ready[DIST_TREE_LEVELS];   /* per level: a FIFO of ready nodes */
    int64_t rhead[DIST_TREE_LEVELS], rtail[DIST_TREE_LEVELS];
    uint8_t *early; /* per level-`from` node: its parent was told it is done (dist_tree_early) */
    int64_t left;   /* tasks not done */
    int running;
    enum vox_status st;
    struct tree_job *job; /* a posted loop (NULL: none) */
};

/* Appends the level-`from` nodes under node i of `level` to order, depth first. */
static void tree_dfs(const struct dist_tree *t, int from, int level, int64_t i, int64_t *order,
                     int64_t *n)
{
    if (level == from) {
        order[(*n)++] = i;
        return;
    }
    int64_t c[3], kids[8];
    int nk = dist_node_children(t->grid[level - 1], i, c, kids);
    for (int k = 0; k < nk; k++)
        tree_dfs(t, from, level - 1, kids[k], order, n);
}

/* The parent of node i of `level` (on level + 1's grid). */
static int64_t tree_parent(const struct dist_tree *t, int level, int64_t i)
{
    const int64_t *g = t->grid[level], *pg = t->grid[level + 1];
    int64_t z = i / (g[1] * g[2]), y = i / g[2] % g[1], x = i % g[2];
    return (z / 2 * pg[1] + y / 2) * pg[2] + x / 2;
}

/* The depth-first order's last `m` parents each give their last child to the end of the
 * order: in depth-first order the final chunks all belong to one parent, so the worker that
 * finishes first waits for the last chunk with nothing to run; now each of the final chunks
 * readies a different parent, which the free workers run meanwhile. */
static void tree_spread_tail(const struct dist_tree *t, int from, int to, int64_t *order, int64_t n,
                             int m)
{
    if (to - from < 2 || m < 2)
        return;
    int64_t last[64], k = 0, end = n;
    m = m < 64 ? m : 64;
    while (k < m && end > 0) { /* the last child of each of the last m parents, latest first */
        const int64_t p = tree_parent(t, from, order[end - 1]);
        last[k++] = end - 1;
        while (end > 0 && tree_parent(t, from, order[end - 1]) == p)
            end--;
    }
    if (k < 2)
        return;
    int64_t moved[64];
    for (int64_t j = 0; j < k; j++)
        moved[j] = order[last[k - 1 - j]]; /* in the parents' order */
    int64_t w = last[k - 1];
    for (int64_t i = last[k - 1], j = k - 1; i < n; i++) {
        if (j >= 0 && i == last[j]) {
            j--;
            continue;
        }
        order[w++] = order[i];
    }
    for (int64_t j = 0; j < k; j++)
        order[w++] = moved[j];
}

void dist_tree_order(const struct dist_tree *t, int from, int to, int workers, int64_t *order)
{
    int64_t n = 0;
    for (int64_t i = 0; i < t->n[to - 1]; i++)
        tree_dfs(t, from, to - 1, i, order, &n);
    tree_spread_tail(t, from, to, order, n, workers);
}

/* The next task under r->mu: *level and *i (level -1: a side job), false when none is ready. */
static bool tree_take(struct tree_run *r, int *level, int64_t *i)
{
    for (int l = r->to - 1; l > r->from; l--)
        if (r->rhead[l] < r->rtail[l]) {
            *level = l;
            *i = r->ready[l][r->rhead[l]++];
            return true;
        }
    if (r->next < r->t->n[r->from]) {
        *level = r->from;
        *i = r->order[r->next++];
        return true;
    }
    if (r->side < r->nside) {
        *level = -1;
        *i = r->side++;
        return true;
    }
    return false;
}

/* Node i of `level` is done for its parent (under r->mu). */
static void tree_child_done(struct tree_run *r, int level, int64_t i)
{
    if (level + 1 < r->to) {
        int64_t p = tree_parent(r->t, level, i);
        if (--r->pending[level + 1][p] == 0)
            r->ready[level + 1][r->rtail[level + 1]++] = p;
    }
}

void dist_tree_early(struct dist_tree *t, int level, int64_t i)
{
    struct tree_run *r = t->run;
    if (!r || level != r->from)
        return;
    pthread_mutex_lock(&r->mu);
    r->early[i] = 1;
    tree_child_done(r, level, i);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void tree_worker(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)lo, (void)hi;
    struct tree_run *r = arg;
    bool idle_told = false;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        if (!idle_told && r->idle && r->next >= r->t->n[r->from]) {
            idle_told = true; /* no level-`from` task left for any worker */
            pthread_mutex_unlock(&r->mu);
            r->idle(r->arg, tid);
            pthread_mutex_lock(&r->mu);
        }
        struct tree_job *job = r->job;
        if (job && job->next < job->n) { /* the posting task waits for it: first */
            int64_t k = job->next++;
            pthread_mutex_unlock(&r->mu);
            job->fn(job->arg, k);
            pthread_mutex_lock(&r->mu);
            if (--job->left == 0)
                pthread_cond_broadcast(&r->cv);
            continue;
        }
        int level;
        int64_t i;
        bool got = r->st == VOX_OK && tree_take(r, &level, &i);
        if (!got) {
            if (r->running == 0 || r->left == 0)
                break;
            pthread_cond_wait(&r->cv, &r->mu);
            continue;
        }
        r->running++;
        pthread_mutex_unlock(&r->mu);
        double t0 = vox_time_now();
        enum vox_status s = r->fn(r->arg, level, i, tid);
        double t1 = vox_time_now();
        pthread_mutex_lock(&r->mu);
        r->running--;
        r->left--;
        if (level >= 0) /* (side jobs are not nodes) */
            vox_progress_add(r->t->bar, 1);
        if (s != VOX_OK && r->st == VOX_OK)
            r->st = s;
        r->t->busy[level < 0 ? r->from : level] += t1 - t0; /* side jobs: with level `from` */
        if (level >= 0 && !(level == r->from && r->early[i]))
            tree_child_done(r, level, i);
        pthread_cond_broadcast(&r->cv);
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

enum vox_status dist_tree_run(struct vox_ctx *ctx, struct dist_tree *t, int from, int to,
                              int64_t nside, dist_tree_fn fn, void (*idle)(void *, int), void *arg)
{
    if (from >= to)
        return VOX_OK;
    struct tree_run r = {.t = t,
                         .from = from,
                         .to = to,
                         .fn = fn,
                         .idle = idle,
                         .arg = arg,
                         .nside = nside,
                         .left = nside};
    r.order = vox_alloc(ctx, (size_t)t->n[from] * sizeof *r.order);
    r.early = vox_calloc(ctx, (size_t)t->n[from], 1);
    bool ok = r.order && r.early;
    for (int l = from; l < to; l++) {
        r.left += t->n[l];
        if (l == from)
            continue;
        r.pending[l] = vox_calloc(ctx, (size_t)t->n[l], sizeof *r.pending[l]);
        r.ready[l] = vox_alloc(ctx, (size_t)t->n[l] * sizeof *r.ready[l]);
        ok = ok && r.pending[l] && r.ready[l];
    }
    if (ok) {
        dist_tree_order(t, from, to, vox_ctx_threads(ctx), r.order);
        for (int l = from; l + 1 < to; l++)
            for (int64_t i = 0; i < t->n[l]; i++)
                r.pending[l + 1][tree_parent(t, l, i)]++;
        for (int l = from; l < to; l++)
            t->busy[l] = 0;
        pthread_mutex_init(&r.mu, NULL);
        pthread_cond_init(&r.cv, NULL);
        int nt = vox_ctx_threads(ctx);
        t->run = &r;
        vox_pool_for(vox_ctx_pool(ctx), (int64_t[3]){nt, 1, 1}, (int64_t[3]){1, 1, 1},
                     VOX_SCHED_STATIC, tree_worker, &r);
        t->run = NULL;
        pthread_cond_destroy(&r.cv);
        pthread_mutex_destroy(&r.mu);
    }
    vox_free(ctx, r.order);
    vox_free(ctx, r.early);
    for (int l = from; l < to; l++) {
        vox_free(ctx, r.pending[l]);
        vox_free(ctx, r.ready[l]);
    }
    if (!ok)
        return VOX_OUT_OF_MEMORY;
    return r.st;
}

struct par_pool {
    void (*fn)(void *arg, int64_t i);
    void *arg;
};

static void par_pool_item(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    (void)tid;
    const struct par_pool *q = arg;
    for (int64_t i = lo[0]; i < hi[0]; i++)
        q->fn(q->arg, i);
}

int dist_par_parts(const struct dist_par *p)
{
    int threads = p ? vox_ctx_threads(p->ctx) : 0;
    return threads < 1 ? 1 : 4 * threads < DIST_PAR_PARTS ? 4 * threads : DIST_PAR_PARTS;
}

void dist_par_for(const struct dist_par *p, int64_t n, void (*fn)(void *arg, int64_t i), void *arg)
{
    struct tree_run *r = p && p->tree ? p->tree->run : NULL;
    if (p && !p->tree && n > 1 && vox_ctx_threads(p->ctx) > 1) {
        struct par_pool q = {fn, arg};
        vox_pool_for(vox_ctx_pool(p->ctx), (int64_t[3]){n, 1, 1}, (int64_t[3]){1, 1, 1},
                     VOX_SCHED_DYNAMIC, par_pool_item, &q);
        return;
    }
    struct tree_job job = {fn, arg, n, 0, n};
    bool posted = false;
    if (r && n > 1) {
        pthread_mutex_lock(&r->mu);
        if (!r->job) {
            r->job = &job;
            posted = true;
            pthread_cond_broadcast(&r->cv);
        }
        pthread_mutex_unlock(&r->mu);
    }
    if (!posted) {
        for (int64_t i = 0; i < n; i++)
            fn(arg, i);
        return;
    }
    pthread_mutex_lock(&r->mu);
    while (job.next < n) {
        int64_t k = job.next++;
        pthread_mutex_unlock(&r->mu);
        fn(arg, k);
        pthread_mutex_lock(&r->mu);
        job.left--;
    }
    while (job.left > 0)
        pthread_cond_wait(&r->cv, &r->mu);
    r->job = NULL;
    pthread_mutex_unlock(&r->mu);
}

/* The chunks under node j of `level`, depth first, appended to list at *n. */
static void rank_subtree(const int64_t g[3], int level, int64_t j, int64_t *list, int64_t *n)
{
    if (level == 0) {
        list[(*n)++] = j;
        return;
    }
    int64_t pg[3], c[3], kid[8];
    dist_level_grid(g, level - 1, pg);
    const int nk = dist_node_children(pg, j, c, kid);
    for (int k = 0; k < nk; k++)
        rank_subtree(g, level - 1, kid[k], list, n);
}

int64_t dist_rank_chunks(const int64_t g[3], int rank, int size, int64_t *list)
{
    int64_t n = 0, all = g[0] * g[1] * g[2], h[3];
    const int L = dist_own_level(g, size);
    if (L == 0) {
        for (int64_t i = size > 1 ? rank : 0; i<all; i += size> 1 ? size : 1)
            list[n++] = i;
        return n;
    }
    const int64_t nl = dist_level_grid(g, L, h);
    for (int64_t j = rank; j < nl; j += size)
        rank_subtree(g, L, j, list, &n);
    return n;
}
