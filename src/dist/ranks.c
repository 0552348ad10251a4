/*
 * dist/ranks.c: the atomic chunks of stages (b) and (c) shared with the other ranks of a comm
 * that can send both ways (vox_dist_comm.send_to / recv_root).
 *
 * Rank 0 holds the label store, so it hands the chunks out: a rank has `ahead` in hand (two
 * per thread of rank 0's, two at least; the stage's setup message says how many) and gets one
 * more each time rank 0 takes a summary (or the end); it computes each chunk's summary over
 * the chunk's labels with a one-voxel margin (struct dist_win), on all its threads at once
 * (dist_share_serve: its calling thread alone uses the comm, receiving a chunk only when rank
 * 0 owes one, so a receive never waits on this rank), and sends it back. Stage (a) runs a
 * rank's own chunks on its threads the same way (dist_share_send_all). The
 * rank kept its chunks' watershed fragment labels from stage (a), so a chunk's message is
 * only its fragment map (to basins, or to segments in stage (c)) and the margin's values,
 * which rank 0 reads from the six faces it kept of every chunk (struct dist_faces): ~0.7 MB
 * for a 128^3 chunk where the whole window is 8.8 MB. A rank's chunks are those of stage (a)
 * (dist_chunk_rank), given a subtree after another; where it owns whole subtrees it computes
 * their nodes too (dist_share.up): its chunks' own messages are then empty, and one message
 * per node, key chunks + the node's place among the levels' nodes, brings what rank 0 keeps
 * of it (rank 0 skips computing it). Rank 0 takes summaries between its own chunks, those
 * waiting (dist_share_poll, from its level-0 tasks on worker 0, the thread that may use the
 * comm) and the rest after them (dist_share_end). Sends must not wait
 * for their receiver (the comm's contract): rank 0's second chunk for a rank would otherwise
 * wait for a rank that waits for rank 0 to take its first summary. Where a summary goes is its
 * chunk or node index, so the result does not depend on timing. Messages: key -2 the stage's
 * setup, key i chunk i, key -1 the end; key -3 (both ways) a failed process's last word
 * (dist_comm_stop).
 */
#include "dist_internal.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

enum {
    SHARE_END = -1,
    SHARE_SETUP = DIST_SHARE_SETUP,
    SHARE_STOP = DIST_COMM_STOP,
    SHARE_AHEAD = 2 /* chunks given per rank at once */
};

enum vox_status dist_comm_stop(struct vox_ctx *ctx, const struct vox_dist_comm *c,
                               enum vox_status s)
{
    if (!c || c->size < 2 || s == VOX_OK)
        return s;
    char msg[1024]; /* the context keeps as much */
    snprintf(msg, sizeof msg, "%s", vox_ctx_error(ctx));
    const int32_t me = c->rank;
    if (c->rank != 0)
        (void)c->send(c->arg, ctx, SHARE_STOP, &me, sizeof me);
    else if (c->send_to)
        for (int to = 1; to < c->size; to++)
            (void)c->send_to(c->arg, ctx, to, SHARE_STOP, &me, sizeof me);
    return vox_fail(ctx, s, "%s", msg); /* a failed send's message would hide the cause */
}

enum vox_status dist_comm_stopped(struct vox_ctx *ctx, const struct vox_dist_comm *c,
                                  const void *blob, int64_t len)
{
    int32_t who = -1;
    if (len == (int64_t)sizeof who)
        memcpy(&who, blob, sizeof who);
    return vox_fail(ctx, VOX_IO,
                    "chunked segmentation: rank %d failed (its own message says why); rank %d "
                    "stops",
                    (int)who, c->rank);
}

bool dist_share_on(const struct vox_dist_comm *c)
{
    return c && c->size > 1 && c->send_to && c->recv_root;
}

void dist_share_fini(struct vox_ctx *ctx, struct dist_share *s)
{
    vox_free(ctx, s->up);
    s->up = NULL;
    s->nup = 0;
    s->uplev = 0;
}

static void share_free(struct vox_ctx *ctx, struct dist_share *s)
{
    vox_free(ctx, s->next);
    vox_free(ctx, s->order);
    vox_free(ctx, s->start);
    s->next = s->order = s->start = NULL;
}

int64_t dist_up_nodes(struct vox_ctx *ctx, const int64_t g[3], int L, int size, int rank,
                      const uint8_t *mark, const int64_t off[DIST_TREE_LEVELS + 1], uint8_t *up)
{
    uint8_t *below = vox_calloc(ctx, (size_t)off[L + 1] + 1, 1); /* a marked chunk under it */
    if (!below)
        return -1;
    int64_t pg[3], h[3], n = 0;
    for (int l = 1; l <= L; l++) {
        dist_level_grid(g, l - 1, pg);
        const int64_t nl = dist_level_grid(g, l, h);
        for (int64_t j = 0; j < nl; j++) {
            int64_t c[3], kid[8];
            const int nk = dist_node_children(pg, j, c, kid);
            bool marked = false;
            for (int k = 0; k < nk; k++)
                marked = marked || (l == 1 ? mark && mark[kid[k]] : below[off[l - 1] + kid[k]]);
            below[off[l] + j] = marked;
            const int owner = dist_node_rank(g, l, j, size);
            up[off[l] + j] = (rank < 0 ? owner != 0 : owner == rank) && !marked;
            n += up[off[l] + j];
        }
    }
    vox_free(ctx, below);
    return n;
}

/* The nodes the ranks compute (s->up): with take_node, where the ranks own whole subtrees
 * (levels 1 to dist_own_level), those of ranks other than 0 under which rank 0 keeps no
 * chunk. Their count (-1: memory short). */
static int64_t share_up(struct vox_ctx *ctx, struct dist_share *s)
{
    const int L = s->give && s->take_node ? dist_own_level(s->grid, s->c->size) : 0;
    s->uplev = 0;
    s->nup = 0;
    if (L == 0)
        return 0;
    s->nup = dist_up_layout(s->grid, L, s->upoff);
    if (!(s->up = vox_calloc(ctx, (size_t)s->nup, 1)))
        return -1;
    s->uplev = L;
    return dist_up_nodes(ctx, s->grid, L, s->c->size, -1, s->keep, s->upoff, s->up);
}

/* Hands rank `to` its next chunk, or the end once (after its last). */
static enum vox_status share_give(struct vox_ctx *ctx, struct dist_share *s, int to)
{
    const struct vox_dist_comm *c = s->c;
    int64_t k = s->next[to], end = s->order ? s->start[to + 1] : 0;
    if (k < 0)
        return VOX_OK; /* ended */
    while (k < end && s->keep && s->keep[s->order[k]])
        k++; /* rank 0 runs it */
    s->next[to] = k < end ? k + 1 : -1;
    if (k >= end)
        return c->send_to(c->arg, ctx, to, SHARE_END, "", 0);
    const int64_t i = s->order[k];
    void *b = NULL;
    int64_t len = 0;
    enum vox_status st = s->give(s->arg, i, &b, &len);
    if (st == VOX_OK)
        st = c->send_to(c->arg, ctx, to, i, b, len);
    vox_free(ctx, b);
    return st;
}

enum vox_status dist_share_begin(struct vox_ctx *ctx, struct dist_share *s, const void *setup,
                                 int64_t setup_len)
{
    const struct vox_dist_comm *c = s->c;
    s->remote = 0;
    for (int64_t i = 0; s->give && i < s->nchunks; i++)
        s->remote += dist_share_remote(s, i);
    s->taken = 0;
    s->next = vox_calloc(ctx, (size_t)c->size, sizeof *s->next);
    if (s->give) { /* every rank's chunks, in the order given */
        s->order = vox_alloc(ctx, (size_t)(s->nchunks + 1) * sizeof *s->order);
        s->start = vox_alloc(ctx, (size_t)(c->size + 1) * sizeof *s->start);
    }
    const int64_t nodes = share_up(ctx, s); /* (each one message more) */
    s->remote += nodes;
    /* the setup message: how many chunks a rank gets ahead, the nodes the ranks compute (a
     * count, the deepest level, a byte per node of levels 1 to it: 1 where its rank computes
     * it), then the stage's setup */
    const size_t head = 3 * sizeof(int64_t) + (size_t)s->nup;
    uint8_t *msg = vox_alloc(ctx, head + (size_t)setup_len);
    if (!s->next || !msg || nodes < 0 || (s->give && (!s->order || !s->start))) {
        vox_free(ctx, msg);
        share_free(ctx, s);
        dist_share_fini(ctx, s);
        return VOX_OUT_OF_MEMORY;
    }
    if (s->give)
        s->start[0] = 0;
    for (int to = 0; s->give && to < c->size; to++)
        s->start[to + 1] =
            s->start[to] + dist_rank_chunks(s->grid, to, c->size, s->order + s->start[to]);
    /* Each rank gets `ahead` chunks, then one more per summary taken: with sends that do not
     * wait (libvox_dist_mpi's), it computes its next chunks while rank 0 is busy. Two a
     * thread (mpirun gives every rank the same --threads): the rank's threads each have one
     * while its summaries wait for rank 0. */
    const int64_t ahead = 2 * (int64_t)vox_ctx_threads(ctx) > SHARE_AHEAD
                              ? 2 * (int64_t)vox_ctx_threads(ctx)
                              : SHARE_AHEAD;
    memcpy(msg, &ahead, sizeof ahead);
    const int64_t uplev = s->uplev;
    memcpy(msg + sizeof ahead, &s->nup, sizeof s->nup);
    memcpy(msg + 2 * sizeof ahead, &uplev, sizeof uplev);
    if (s->nup)
        memcpy(msg + 3 * sizeof ahead, s->up, (size_t)s->nup);
    if (setup_len)
        memcpy(msg + head, setup, (size_t)setup_len);
    enum vox_status st = VOX_OK;
    for (int to = 1; to < c->size && st == VOX_OK; to++) { /* give NULL: nothing to share */
        s->next[to] = s->give ? s->start[to] : 0;
        st = c->send_to(c->arg, ctx, to, SHARE_SETUP, msg, (int64_t)head + setup_len);
        for (int64_t k = 0; k < ahead && st == VOX_OK; k++)
            st = share_give(ctx, s, to);
    }
    vox_free(ctx, msg);
    if (!s->give) /* every rank has its end: no dist_share_end follows */
        share_free(ctx, s);
    return st;
}

enum vox_status dist_share_step(struct vox_ctx *ctx, struct dist_share *s)
{
    const struct vox_dist_comm *c = s->c;
    if (s->stopped)
        return VOX_IO; /* (the message was set when the word came) */
    if (s->taken >= s->remote)
        return VOX_OK;
    int64_t i = -1, len = 0;
    uint8_t *b = NULL;
    enum vox_status st = c->recv(c->arg, ctx, &i, (void **)&b, &len);
    if (st != VOX_OK)
        return st;
    s->taken++;
    /* chunk i's summary (empty where its rank computes the chunk's parent), or (i past the
     * chunks) node j of a level's (s->upoff) */
    int64_t j = i - s->nchunks;
    int level = 1;
    while (level < s->uplev && j >= s->upoff[level + 1])
        level++;
    j -= s->upoff[level];
    const bool node = i >= s->nchunks && i - s->nchunks < s->nup && dist_share_up(s, level, j);
    if (i == SHARE_STOP) {
        s->stopped = true;
        st = dist_comm_stopped(ctx, c, b, len);
    } else if (!node && (i <= 0 || i >= s->nchunks || !dist_share_remote(s, i)))
        st = vox_fail(ctx, VOX_IO,
                      "chunked segmentation: a summary for chunk %lld from another "
                      "rank (of %lld chunks)",
                      (long long)i, (long long)s->nchunks);
    else if (!node && dist_share_up(s, 1, dist_chunk_parent(s->grid, i)) && len != 0)
        st = vox_fail(ctx, VOX_IO,
                      "chunked segmentation: %lld bytes for chunk %lld from another rank, "
                      "whose summary goes with its parent's",
                      (long long)len, (long long)i);
    if (st == VOX_OK && node)
        st = s->take_node(s->arg, level, j, b, len);
    else if (st == VOX_OK && !dist_share_up(s, 1, dist_chunk_parent(s->grid, i)))
        st = s->take(s->arg, i, b, len);
    vox_free(ctx, b);
    if (st == VOX_OK) /* that rank's next chunk */
        st = share_give(ctx, s,
                        node ? dist_node_rank(s->grid, level, j, c->size)
                             : dist_chunk_rank(s->grid, i, c->size));
    return st;
}

enum vox_status dist_share_poll(struct vox_ctx *ctx, struct dist_share *s)
{
    const struct vox_dist_comm *c = s->c;
    if (!c->ready)
        return dist_share_step(ctx, s);
    /* (waiting for one here held rank 0's own chunks while a rank computed a node) */
    enum vox_status st = s->stopped ? VOX_IO : VOX_OK;
    while (st == VOX_OK && s->taken < s->remote && c->ready(c->arg, ctx))
        st = dist_share_step(ctx, s);
    return st;
}

enum vox_status dist_share_end(struct vox_ctx *ctx, struct dist_share *s)
{
    enum vox_status st = s->stopped ? VOX_IO : VOX_OK;
    while (st == VOX_OK && s->taken < s->remote)
        st = dist_share_step(ctx, s);
    share_free(ctx, s);
    return st;
}

/* A chunk from rank 0 or a summary for it, queued between a serving rank's threads. */
struct serve_item {
    int64_t key;
    void *blob;
    int64_t len;
};

/* A node the rank computes: its children's summaries so far. */
struct serve_node {
    void *blob[8];
    int64_t len[8];
    int got;
};

/* A rank's threads serving one stage (dist_share_serve): thread 0 alone uses the comm (an MPI
 * library initialised without thread support allows no other); the others compute. */
struct serve_run {
    struct vox_ctx *ctx;
    const struct vox_dist_comm *c;
    int64_t nchunks, ahead;
    const int64_t *grid;
    int workers;
    dist_share_work_fn work;
    dist_share_node_fn node;
    void *arg;
    /* per node of levels 1 to uplev (level l's from upoff[l]): 1 where this rank computes it
     * (NULL: none) */
    const uint8_t *up;
    int64_t nup, upoff[DIST_TREE_LEVELS + 1];
    int uplev;
    bool ack; /* a chunk kept for its parent still gets an (empty) message: rank 0 counts */
    struct serve_node *nodes; /* (where up is set) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct serve_item *in, *out; /* chunks not started; summaries not sent (ahead room each) */
    int64_t nin, nout;
    int64_t got, sent;   /* chunks received, summaries sent */
    int busy;            /* chunks being computed */
    bool ended;          /* the end came: no chunk follows */
    const int64_t *list; /* dist_share_send_all: the chunks, none received (ended from the start) */
    int64_t nlist, next;
    int64_t die_after;
    enum vox_status st;
};

/* The next chunk to compute, mu held: a received one, or the list's next; none while
 * `ahead` chunks are being computed or wait to be sent (the list's summaries would pile up
 * while thread 0 sends). */
static bool serve_take(struct serve_run *v, struct serve_item *it)
{
    if (v->nout + v->busy >= v->ahead)
        return false;
    if (v->nin) {
        *it = v->in[--v->nin];
        return true;
    }
    if (v->next < v->nlist) {
        *it = (struct serve_item){.key = v->list[v->next++]};
        return true;
    }
    return false;
}

/* Whether a chunk is left to take (or will come). */
static bool serve_more(const struct serve_run *v)
{
    return !v->ended || v->nin || v->next < v->nlist;
}

/* Chunk i's summary o kept for its parent j, mu held; with the parent's last child, the
 * parent's message is made (mu released meanwhile, the node counted busy) and queued. */
static bool serve_up(const struct serve_run *v, int level, int64_t j)
{
    return v->up && level >= 1 && level <= v->uplev && v->up[v->upoff[level] + j];
}

static enum vox_status serve_kid(struct serve_run *v, int level, int64_t j, int64_t i,
                                 struct serve_item o, int tid)
{
    int64_t c[3], kid[8], pg[3];
    dist_level_grid(v->grid, level - 1, pg);
    const int nk = dist_node_children(pg, j, c, kid);
    int k = 0;
    while (k < nk && kid[k] != i)
        k++;
    struct serve_node *n = &v->nodes[v->upoff[level] + j];
    if (k == nk || n->blob[k]) {
        vox_free(v->ctx, o.blob);
        return vox_fail(v->ctx, VOX_INTERNAL, "chunked segmentation: node %lld of level %d twice",
                        (long long)i, level - 1);
    }
    n->blob[k] = o.blob;
    n->len[k] = o.len;
    if (++n->got < nk)
        return VOX_OK;
    /* the parent's summary stays here where the rank computes the parent too */
    const int64_t p = dist_node_ancestor(v->grid, level, j, level + 1);
    const bool top = !serve_up(v, level + 1, p);
    v->busy++;
    pthread_mutex_unlock(&v->mu);
    struct serve_item u = {.key = v->nchunks + v->upoff[level] + j}, keep = {0};
    enum vox_status st = v->node(v->arg, level, j, (const uint8_t *const *)n->blob, n->len, nk,
                                 &u.blob, &u.len, top ? NULL : &keep.blob, &keep.len, tid);
    for (k = 0; k < nk; k++) {
        vox_free(v->ctx, n->blob[k]);
        n->blob[k] = NULL;
    }
    pthread_mutex_lock(&v->mu);
    v->busy--;
    if (st == VOX_OK && v->st == VOX_OK) {
        v->out[v->nout++] = u;
    } else {
        vox_free(v->ctx, u.blob);
        vox_free(v->ctx, keep.blob);
        return st;
    }
    return top ? VOX_OK : serve_kid(v, level + 1, p, j, keep, tid);
}

/* Computes chunk `it` on thread tid, mu held (released while it runs); its summary queued. */
static void serve_one(struct serve_run *v, struct serve_item it, int tid)
{
    v->busy++;
    pthread_mutex_unlock(&v->mu);
    struct serve_item o = {.key = it.key};
    enum vox_status st = v->work(v->arg, it.key, it.blob, it.len, &o.blob, &o.len, tid);
    vox_free(v->ctx, it.blob);
    pthread_mutex_lock(&v->mu);
    v->busy--;
    if (st == VOX_OK && v->st == VOX_OK && v->up) {
        const int64_t j = dist_chunk_parent(v->grid, it.key);
        if (serve_up(v, 1, j)) { /* kept for the parent; maybe an empty message */
            st = serve_kid(v, 1, j, it.key, o, tid);
            o = (struct serve_item){.key = v->ack ? it.key : SHARE_END};
        }
    }
    if (st == VOX_OK && v->st == VOX_OK && o.key != SHARE_END)
        v->out[v->nout++] = o;
    else
        vox_free(v->ctx, o.blob);
    if (st != VOX_OK && v->st == VOX_OK)
        v->st = st;
    pthread_cond_broadcast(&v->cv);
}

/* Thread 0: sends the summaries, receives a chunk whenever rank 0 owes one (it gives one per
 * summary taken, after `ahead` at first: a receive then cannot wait for this rank), and
 * computes chunks when it has nothing else to do. */
static void serve_comm(struct serve_run *v)
{
    const struct vox_dist_comm *c = v->c;
    pthread_mutex_lock(&v->mu);
    while (v->st == VOX_OK) {
        if (v->nout) {
            struct serve_item o = v->out[--v->nout];
            pthread_mutex_unlock(&v->mu);
            enum vox_status st = c->send(c->arg, v->ctx, o.key, o.blob ? o.blob : "", o.len);
            vox_free(v->ctx, o.blob);
            if (st == VOX_OK && v->die_after > 0 && v->sent + 1 == v->die_after)
                _exit(3); /* the test hook: a rank killed after that many chunks sent */
            pthread_mutex_lock(&v->mu);
            v->sent++;
            v->st = v->st == VOX_OK ? st : v->st;
            continue;
        }
        const int idle = v->workers - 1 - v->busy; /* the other threads, waiting */
        if (!v->ended && v->got < v->ahead + v->sent && v->nin <= idle) {
            pthread_mutex_unlock(&v->mu);
            struct serve_item it = {0};
            enum vox_status st = c->recv_root(c->arg, v->ctx, &it.key, &it.blob, &it.len);
            if (st == VOX_OK && it.key == SHARE_STOP)
                st = dist_comm_stopped(v->ctx, c, it.blob, it.len);
            else if (st == VOX_OK && it.key != SHARE_END &&
                     (it.key < 0 || it.key >= v->nchunks ||
                      dist_chunk_rank(v->grid, it.key, c->size) != c->rank))
                st = vox_fail(v->ctx, VOX_IO, "chunked segmentation: rank %d was given chunk %lld",
                              c->rank, (long long)it.key);
            pthread_mutex_lock(&v->mu);
            if (st == VOX_OK && it.key == SHARE_END) {
                v->ended = true;
                vox_free(v->ctx, it.blob);
            } else if (st == VOX_OK) {
                v->got++;
                v->in[v->nin++] = it;
            } else {
                vox_free(v->ctx, it.blob);
                v->st = v->st == VOX_OK ? st : v->st;
            }
            pthread_cond_broadcast(&v->cv);
            continue;
        }
        struct serve_item it;
        if (serve_take(v, &it)) {
            serve_one(v, it, 0);
            continue;
        }
        if (!serve_more(v) && !v->busy)
            break;                         /* every summary sent */
        pthread_cond_wait(&v->cv, &v->mu); /* a summary from another thread */
    }
    pthread_cond_broadcast(&v->cv); /* the others stop */
    pthread_mutex_unlock(&v->mu);
}

static void serve_task(void *arg, const int64_t lo[3], const int64_t hi[3], int tid)
{
    struct serve_run *v = arg;
    (void)hi;
    if (lo[0] == 0) {
        serve_comm(v);
        return;
    }
    pthread_mutex_lock(&v->mu);
    for (;;) {
        /* (chunks come in the order rank 0 gives them; any thread may take any) */
        struct serve_item it;
        if (v->st != VOX_OK || !serve_more(v))
            break;
        if (serve_take(v, &it))
            serve_one(v, it, tid);
        else
            pthread_cond_wait(&v->cv, &v->mu);
    }
    pthread_mutex_unlock(&v->mu);
}

/* Runs v's threads and frees what is left in its queues; its status. */
static enum vox_status serve_run_all(struct serve_run *v)
{
    if (v->st == VOX_OK) { /* (out: a node's message may follow each thread's last summary) */
        v->in = vox_alloc(v->ctx, (size_t)v->ahead * sizeof *v->in);
        v->out = vox_alloc(v->ctx,
                           (size_t)(v->ahead + v->workers * (v->uplev + 1) + 1) * sizeof *v->out);
        v->st = v->in && v->out ? VOX_OK : VOX_OUT_OF_MEMORY;
    }
    if (v->st == VOX_OK && v->up) {
        v->nodes = vox_calloc(v->ctx, (size_t)v->nup, sizeof *v->nodes);
        v->st = v->nodes ? VOX_OK : VOX_OUT_OF_MEMORY;
    }
    if (v->st == VOX_OK) {
        const int64_t n[3] = {v->workers, 1, 1}, tile[3] = {1, 1, 1};
        vox_pool_for(vox_ctx_pool(v->ctx), n, tile, VOX_SCHED_STATIC, serve_task, v);
    }
    for (int64_t k = 0; v->in && k < v->nin; k++)
        vox_free(v->ctx, v->in[k].blob);
    for (int64_t k = 0; v->out && k < v->nout; k++)
        vox_free(v->ctx, v->out[k].blob);
    for (int64_t j = 0; v->nodes && j < v->nup; j++)
        for (int k = 0; k < 8; k++)
            vox_free(v->ctx, v->nodes[j].blob[k]);
    vox_free(v->ctx, v->nodes);
    vox_free(v->ctx, v->in);
    vox_free(v->ctx, v->out);
    return v->st;
}

enum vox_status dist_share_send_all(struct vox_ctx *ctx, const struct vox_dist_comm *c,
                                    const int64_t grid[3], const int64_t *list, int64_t n,
                                    dist_share_work_fn work, dist_share_node_fn node,
                                    const uint8_t *up, int uplev, void *arg, int64_t die_after)
{
    const int workers = vox_ctx_threads(ctx);
    struct serve_run v = {.ctx = ctx,
                          .c = c,
                          .ahead = 2 * (int64_t)workers,
                          .workers = workers,
                          .work = work,
                          .arg = arg,
                          .mu = PTHREAD_MUTEX_INITIALIZER,
                          .cv = PTHREAD_COND_INITIALIZER,
                          .ended = true,
                          .list = list,
                          .nlist = n,
                          .nchunks = grid[0] * grid[1] * grid[2],
                          .grid = grid,
                          .node = node,
                          .up = up,
                          .die_after = die_after};
    v.uplev = up ? uplev : 0;
    v.nup = dist_up_layout(grid, v.uplev, v.upoff); /* (as dist_share_begin's) */
    return serve_run_all(&v);
}

enum vox_status dist_share_serve(struct vox_ctx *ctx, const struct vox_dist_comm *c,
                                 const int64_t grid[3], dist_share_setup_fn setup,
                                 dist_share_work_fn work, dist_share_node_fn node, void *arg,
                                 bool parallel)
{
    int64_t key = 0, len = 0, ahead = 0, nup = -1, uplev = -1;
    uint8_t *b = NULL;
    enum vox_status st = c->recv_root(c->arg, ctx, &key, (void **)&b, &len);
    if (st == VOX_OK && key == SHARE_STOP)
        st = dist_comm_stopped(ctx, c, b, len);
    else if (st == VOX_OK && key != SHARE_SETUP)
        st = vox_fail(ctx, VOX_IO,
                      "chunked segmentation: rank %d expected a stage's setup from "
                      "rank 0, got message %lld",
                      c->rank, (long long)key);
    if (st == VOX_OK && len >= 3 * (int64_t)sizeof ahead) {
        memcpy(&ahead, b, sizeof ahead);
        memcpy(&nup, b + sizeof ahead, sizeof nup);
        memcpy(&uplev, b + 2 * sizeof ahead, sizeof uplev);
    }
    /* (the nodes: none, or every one's byte of levels 1 to the rank's subtrees' level; a
     * stage without nodes gets none) */
    struct serve_run v = {.uplev = uplev == dist_own_level(grid, c->size) ? (int)uplev : -1};
    const int64_t want = dist_up_layout(grid, v.uplev > 0 ? v.uplev : 0, v.upoff);
    const int64_t head = 3 * (int64_t)sizeof ahead + (nup > 0 ? nup : 0);
    if (st == VOX_OK &&
        (ahead < 1 || ahead > (int64_t)1 << 20 || (nup != 0 && (v.uplev < 1 || nup != want)) ||
         (nup && !node) || len < head))
        st = vox_fail(ctx, VOX_IO, "chunked segmentation: rank %d got a malformed setup", c->rank);
    uint8_t *up = st == VOX_OK && nup > 0 ? vox_alloc(ctx, (size_t)nup) : NULL;
    if (st == VOX_OK && nup > 0 && !up)
        st = VOX_OUT_OF_MEMORY;
    if (up)
        memcpy(up, b + 3 * sizeof ahead, (size_t)nup);
    if (st == VOX_OK)
        st = setup(arg, b + head, len - head);
    vox_free(ctx, b);
    v.ctx = ctx;
    v.c = c;
    v.nchunks = grid[0] * grid[1] * grid[2];
    v.grid = grid;
    v.ahead = ahead;
    v.workers = parallel ? vox_ctx_threads(ctx) : 1;
    v.work = work;
    v.node = node;
    v.arg = arg;
    v.up = up;
    v.nup = up ? nup : 0;
    v.uplev = up ? v.uplev : 0;
    v.ack = true;
    v.mu = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
    v.cv = (pthread_cond_t)PTHREAD_COND_INITIALIZER;
    v.st = st;
    st = serve_run_all(&v);
    vox_free(ctx, up);
    return st;
}

/* ---- chunk summaries as messages ----------------------------------------------------------- */

enum vox_status dist_pack(struct vox_ctx *ctx, const struct dist_box *b, int n,
                          const int64_t *count, const size_t *size, const void *const *arr,
                          void **blob, int64_t *len)
{
    int64_t hd[6 + DIST_PACK_MAX];
    memcpy(hd, b->lo, sizeof b->lo);
    memcpy(hd + 3, b->hi, sizeof b->hi);
    size_t total = (size_t)(6 + n) * sizeof *hd;
    for (int k = 0; k < n; k++) {
        hd[6 + k] = count[k];
        total += (size_t)count[k] * size[k];
    }
    uint8_t *p = *blob = vox_alloc(ctx, total);
    if (!p)
        return VOX_OUT_OF_MEMORY;
    memcpy(p, hd, (size_t)(6 + n) * sizeof *hd);
    p += (size_t)(6 + n) * sizeof *hd;
    for (int k = 0; k < n; k++) {
        if (count[k])
            memcpy(p, arr[k], (size_t)count[k] * size[k]);
        p += (size_t)count[k] * size[k];
    }
    *len = (int64_t)total;
    return VOX_OK;
}

enum vox_status dist_unpack(struct vox_ctx *ctx, const uint8_t *blob, int64_t len,
                            const struct dist_box *b, int n, const size_t *size, int64_t *count,
                            void **arr)
{
    int64_t hd[6 + DIST_PACK_MAX], need = (6 + n) * (int64_t)sizeof *hd;
    bool ok = len >= need;
    if (ok)
        memcpy(hd, blob, (size_t)need);
    for (int a = 0; ok && a < 3; a++)
        ok = hd[a] == b->lo[a] && hd[3 + a] == b->hi[a];
    for (int k = 0; ok && k < n; k++) {
        ok = hd[6 + k] >= 0 && hd[6 + k] <= len;
        need += ok ? hd[6 + k] * (int64_t)size[k] : 0;
    }
    if (!ok || len != need)
        return VOX_FORMAT;
    const uint8_t *p = blob + (6 + n) * sizeof *hd;
    for (int k = 0; k < n; k++) {
        count[k] = hd[6 + k];
        if (!(arr[k] = vox_alloc(ctx, (size_t)(count[k] + 1) * size[k])))
            return VOX_OUT_OF_MEMORY; /* the caller frees what was allocated */
        memcpy(arr[k], p, (size_t)count[k] * size[k]);
        p += (size_t)count[k] * size[k];
    }
    return VOX_OK;
}

void dist_serve_geometry(const struct dist_vol *vol, const int64_t chunk[3], int64_t dims[3],
                         int64_t chunk_out[3], struct dist_tree *tree)
{
    int64_t grid[3];
    for (int a = 0; a < 3; a++) {
        dims[a] = vol->dims[a];
        chunk_out[a] = chunk[a] < dims[a] ? chunk[a] : dims[a];
        grid[a] = (dims[a] + chunk_out[a] - 1) / chunk_out[a];
    }
    dist_tree_init(tree, grid);
}

/* ---- chunk faces and shells (windows without the interior) ---------------------------------- */

static void faces_box(const struct dist_faces *fc, int64_t j, struct dist_box *b)
{
    const int64_t *g = fc->grid;
    int64_t c[3] = {j / (g[1] * g[2]), (j / g[2]) % g[1], j % g[2]};
    for (int a = 0; a < 3; a++) {
        b->lo[a] = c[a] * fc->chunk[a];
        b->hi[a] = b->lo[a] + fc->chunk[a] < fc->dims[a] ? b->lo[a] + fc->chunk[a] : fc->dims[a];
    }
}

enum vox_status dist_faces_init(struct vox_ctx *ctx, struct dist_faces *fc, const int64_t dims[3],
                                const int64_t chunk[3])
{
    memset(fc, 0, sizeof *fc);
    fc->nchunks = 1;
    for (int a = 0; a < 3; a++) {
        fc->dims[a] = dims[a];
        fc->chunk[a] = chunk[a] < dims[a] ? chunk[a] : dims[a];
        fc->grid[a] = (dims[a] + fc->chunk[a] - 1) / fc->chunk[a];
        fc->nchunks *= fc->grid[a];
    }
    fc->f = vox_calloc(ctx, (size_t)fc->nchunks, sizeof *fc->f);
    return fc->f ? VOX_OK : VOX_OUT_OF_MEMORY;
}

void dist_faces_fini(struct vox_ctx *ctx, struct dist_faces *fc)
{
    for (int64_t j = 0; fc->f && j < fc->nchunks; j++)
        vox_free(ctx, fc->f[j]);
    vox_free(ctx, fc->f);
    memset(fc, 0, sizeof *fc);
}

int64_t dist_faces_len(const int64_t dims[3], const int64_t chunk[3], int64_t i)
{
    struct dist_faces fc = {.nchunks = 1};
    for (int a = 0; a < 3; a++) {
        fc.dims[a] = dims[a];
        fc.chunk[a] = chunk[a] < dims[a] ? chunk[a] : dims[a];
        fc.grid[a] = (dims[a] + fc.chunk[a] - 1) / fc.chunk[a];
    }
    struct dist_box b;
    faces_box(&fc, i, &b);
    const int64_t nz = b.hi[0] - b.lo[0], ny = b.hi[1] - b.lo[1], nx = b.hi[2] - b.lo[2];
    return 2 * (ny * nx + nz * nx + nz * ny);
}

void dist_faces_extract(const struct dist_box *b, const uint32_t *lab, uint32_t *f)
{
    const int64_t nz = b->hi[0] - b->lo[0], ny = b->hi[1] - b->lo[1], nx = b->hi[2] - b->lo[2];
    uint32_t *p = f;
    for (int side = 0; side < 2; side++, p += ny * nx) /* z = lo, z = hi - 1 */
        memcpy(p, lab + (side ? nz - 1 : 0) * ny * nx, (size_t)(ny * nx) * sizeof *p);
    for (int side = 0; side < 2; side++, p += nz * nx)
        for (int64_t z = 0; z < nz; z++)
            memcpy(p + z * nx, lab + (z * ny + (side ? ny - 1 : 0)) * nx, (size_t)nx * sizeof *p);
    for (int side = 0; side < 2; side++, p += nz * ny)
        for (int64_t z = 0; z < nz; z++)
            for (int64_t y = 0; y < ny; y++)
                p[z * ny + y] = lab[(z * ny + y) * nx + (side ? nx - 1 : 0)];
}

enum vox_status dist_faces_put(struct vox_ctx *ctx, struct dist_faces *fc, int64_t i,
                               const uint32_t *src, bool faces)
{
    struct dist_box b;
    faces_box(fc, i, &b);
    const size_t n = (size_t)dist_faces_len(fc->dims, fc->chunk, i);
    uint32_t *f = vox_alloc(ctx, n * sizeof *f);
    if (!f)
        return VOX_OUT_OF_MEMORY;
    if (faces)
        memcpy(f, src, n * sizeof *f);
    else
        dist_faces_extract(&b, src, f);
    vox_free(ctx, fc->f[i]);
    fc->f[i] = f;
    return VOX_OK;
}

enum vox_status dist_faces_window(struct vox_ctx *ctx, const struct dist_labels *l,
                                  const int64_t dims[3], const struct dist_box *b,
                                  struct dist_win *w)
{
    const struct dist_faces *fc = l->st->faces;
    const int64_t i =
        ((b->lo[0] / fc->chunk[0]) * fc->grid[1] + b->lo[1] / fc->chunk[1]) * fc->grid[2] +
        b->lo[2] / fc->chunk[2];
    void *blob = NULL;
    int64_t len = 0;
    enum vox_status s = dist_shell_pack(ctx, l->st, l->map, i, b, &blob, &len);
    struct dist_store raw = *l->st; /* the chunk's fragment labels, as written */
    raw.cmap = NULL;
    raw.faces = NULL;
    s = s ? s : dist_shell_window(ctx, &raw, dims, b, blob, len, w);
    vox_free(ctx, blob);
    return s;
}

/* The fragment labels of voxels (z, y, x0 .. x0 + n - 1), all on one face of chunk j: where
 * they start in j's faces, and the step from one to the next (0: a single voxel). NULL when
 * they are not on a face (or j's faces are missing). */
static const uint32_t *face_run(const struct dist_faces *fc, int64_t j, int64_t z, int64_t y,
                                int64_t x0, int64_t n, int64_t *step)
{
    struct dist_box b;
    faces_box(fc, j, &b);
    const int64_t nz = b.hi[0] - b.lo[0], ny = b.hi[1] - b.lo[1], nx = b.hi[2] - b.lo[2];
    const uint32_t *f = fc->f[j];
    if (!f)
        return NULL;
    z -= b.lo[0], y -= b.lo[1], x0 -= b.lo[2];
    *step = 1;
    if (z == 0 || z == nz - 1)
        return f + (z == 0 ? 0 : ny * nx) + y * nx + x0;
    if (y == 0 || y == ny - 1)
        return f + 2 * ny * nx + (y == 0 ? 0 : nz * nx) + z * nx + x0;
    *step = 0; /* on an x face: one voxel of the row */
    if (n == 1 && (x0 == 0 || x0 == nx - 1))
        return f + 2 * ny * nx + 2 * nz * nx + (x0 == 0 ? 0 : nz * ny) + z * ny + y;
    return NULL;
}

/* The window of box b (grown by one, clamped) and whether (z, y) crosses the box. */
static void shell_window(const int64_t dims[3], const struct dist_box *b, struct dist_box *w)
{
    for (int a = 0; a < 3; a++) {
        w->lo[a] = b->lo[a] > 0 ? b->lo[a] - 1 : 0;
        w->hi[a] = b->hi[a] < dims[a] ? b->hi[a] + 1 : dims[a];
    }
}

static int64_t shell_count(const struct dist_box *w, const struct dist_box *b)
{
    int64_t nw = 1, nb = 1;
    for (int a = 0; a < 3; a++) {
        nw *= w->hi[a] - w->lo[a];
        nb *= b->hi[a] - b->lo[a];
    }
    return nw - nb;
}

/* The shell of box b (window w) read from a store that holds every chunk's basins (rank 0
 * keeping records, its fragment maps aside in fmap), through map, into sh. */
static enum vox_status shell_from_store(struct vox_ctx *ctx, const struct dist_store *st,
                                        const uint32_t *map, const struct dist_box *b,
                                        const struct dist_box *w, uint32_t *sh)
{
    const struct dist_labels l = {.st = (struct dist_store *)st, .map = map};
    struct dist_win win;
    enum vox_status s = dist_win_load(ctx, &l, st->dims, b, NULL, &win);
    const uint32_t *v = win.p;
    for (int64_t z = w->lo[0]; s == VOX_OK && z < w->hi[0]; z++)
        for (int64_t y = w->lo[1]; y < w->hi[1]; y++)
            for (int64_t x = w->lo[2]; x < w->hi[2]; x++, v++)
                if (!(z >= b->lo[0] && z < b->hi[0] && y >= b->lo[1] && y < b->hi[1] &&
                      x >= b->lo[2] && x < b->hi[2]))
                    *sh++ = *v;
    dist_win_fini(ctx, &win);
    return s;
}

enum vox_status dist_shell_pack(struct vox_ctx *ctx, const struct dist_store *st,
                                const uint32_t *map, int64_t i, const struct dist_box *b,
                                void **blob, int64_t *len)
{
    const struct dist_faces *fc = st->faces;
    const uint32_t *fm = st->cmap ? st->cmap[i] : st->fmap[i];
    struct dist_box w;
    shell_window(st->dims, b, &w);
    const int64_t ncm = st->cmap_n[i], nsh = shell_count(&w, b);
    *len = (int64_t)sizeof(int64_t) + (ncm + nsh) * (int64_t)sizeof(uint32_t);
    uint8_t *p = *blob = vox_alloc(ctx, (size_t)*len);
    if (!p)
        return VOX_OUT_OF_MEMORY;
    memcpy(p, &ncm, sizeof ncm);
    uint32_t *cm = (uint32_t *)(p + sizeof ncm), *sh = cm + ncm;
    for (int64_t k = 0; k < ncm; k++)
        cm[k] = map ? map[fm[k]] : fm[k];
    if (!st->cmap) {
        enum vox_status s = shell_from_store(ctx, st, map, b, &w, sh);
        if (s != VOX_OK) {
            vox_free(ctx, *blob);
            *blob = NULL;
        }
        return s;
    }
    /* row by row: a row outside the box crosses one to three chunks' z or y faces; a row
     * through the box has one voxel on each side, on its neighbours' x faces */
    int64_t k = 0;
    for (int64_t z = w.lo[0]; z < w.hi[0]; z++)
        for (int64_t y = w.lo[1]; y < w.hi[1]; y++) {
            bool cross = z >= b->lo[0] && z < b->hi[0] && y >= b->lo[1] && y < b->hi[1];
            for (int64_t x = w.lo[2]; x < w.hi[2];) {
                if (cross && x >= b->lo[2] && x < b->hi[2]) { /* the interior: the rank's */
                    x = b->hi[2];
                    continue;
                }
                const int64_t cx = x / fc->chunk[2];
                int64_t end = (cx + 1) * fc->chunk[2] < w.hi[2] ? (cx + 1) * fc->chunk[2] : w.hi[2];
                end = cross ? x + 1 : end;
                const int64_t j =
                    ((z / fc->chunk[0]) * fc->grid[1] + y / fc->chunk[1]) * fc->grid[2] + cx;
                int64_t step = 0;
                const uint32_t *fr = face_run(fc, j, z, y, x, end - x, &step);
                const uint32_t *cmj = st->cmap[j];
                for (int64_t t = 0; fr && t < end - x; t++) {
                    uint32_t frag = fr[t * step];
                    if (frag >= (uint32_t)st->cmap_n[j]) {
                        fr = NULL;
                        break;
                    }
                    sh[k++] = map ? map[cmj[frag]] : cmj[frag];
                }
                if (!fr) {
                    vox_free(ctx, *blob);
                    *blob = NULL;
                    return vox_fail(ctx, VOX_INTERNAL,
                                    "chunked segmentation: no face label "
                                    "for voxel (%lld, %lld, %lld)",
                                    (long long)z, (long long)y, (long long)x);
                }
                x = end;
            }
        }
    return VOX_OK;
}

static enum vox_status shell_malformed(struct vox_ctx *ctx, const struct dist_box *b)
{
    return vox_fail(ctx, VOX_IO,
                    "chunked segmentation: rank 0 sent a malformed window for the "
                    "chunk at (%lld, %lld, %lld)",
                    (long long)b->lo[0], (long long)b->lo[1], (long long)b->lo[2]);
}

enum vox_status dist_shell_window(struct vox_ctx *ctx, struct dist_store *own,
                                  const int64_t dims[3], const struct dist_box *b,
                                  const uint8_t *blob, int64_t len, struct dist_win *w)
{
    memset(w, 0, sizeof *w);
    struct dist_box g;
    shell_window(dims, b, &g);
    int64_t ncm = -1, nsh = shell_count(&g, b), nb = 1, nw = 1;
    if (len >= (int64_t)sizeof ncm)
        memcpy(&ncm, blob, sizeof ncm);
    if (ncm < 1 || len != (int64_t)sizeof ncm + (ncm + nsh) * (int64_t)sizeof(uint32_t))
        return shell_malformed(ctx, b);
    for (int a = 0; a < 3; a++) {
        w->lo[a] = g.lo[a];
        w->n[a] = g.hi[a] - g.lo[a];
        nw *= w->n[a];
        nb *= b->hi[a] - b->lo[a];
    }
    uint32_t *in = vox_alloc(ctx, (size_t)nb * sizeof *in),
             *out = vox_alloc(ctx, (size_t)nw * sizeof *out);
    enum vox_status s = in && out ? dist_store_read(ctx, own, b, in, NULL) : VOX_OUT_OF_MEMORY;
    const uint32_t *cm = (const uint32_t *)(blob + sizeof ncm), *sh = cm + ncm;
    const int64_t nx = w->n[2], bx0 = b->lo[2] - g.lo[2], bnx = b->hi[2] - b->lo[2];
    uint32_t *o = out;
    const uint32_t *v = in;
    for (int64_t z = g.lo[0]; s == VOX_OK && z < g.hi[0]; z++)
        for (int64_t y = g.lo[1]; s == VOX_OK && y < g.hi[1]; y++, o += nx) {
            if (!(z >= b->lo[0] && z < b->hi[0] && y >= b->lo[1] && y < b->hi[1])) {
                memcpy(o, sh, (size_t)nx * sizeof *o); /* a shell row */
                sh += nx;
                continue;
            }
            for (int64_t x = 0; x < bx0; x++)
                o[x] = *sh++;
            for (int64_t x = 0; x < bnx; x++) {
                if (v[x] >= (uint32_t)ncm) {
                    s = VOX_FORMAT; /* a fragment beyond the map sent */
                    break;
                }
                o[bx0 + x] = cm[v[x]];
            }
            v += bnx;
            for (int64_t x = bx0 + bnx; x < nx; x++)
                o[x] = *sh++;
        }
    vox_free(ctx, in);
    if (s != VOX_OK) {
        vox_free(ctx, out);
        return s == VOX_FORMAT ? shell_malformed(ctx, b) : s;
    }
    w->p = w->own = out;
    return VOX_OK;
}

enum vox_status dist_shell_labels(struct vox_ctx *ctx, struct dist_store *own,
                                  const int64_t dims[3], const struct dist_box *b,
                                  const uint8_t *blob, int64_t len, struct dist_win *w,
                                  struct dist_labels *given)
{
    enum vox_status st = dist_shell_window(ctx, own, dims, b, blob, len, w);
    if (st != VOX_OK)
        return st;
    int64_t ncm; /* the fragment map's length (dist_shell_window checked it) */
    memcpy(&ncm, blob, sizeof ncm);
    *given = (struct dist_labels){
        .given = w, .given_fm = (const uint32_t *)(const void *)(blob + 8), .given_nf = ncm - 1};
    return VOX_OK;
}
