/*
 * test_dist_tree.c: the octree's schedule (src/dist/tree.c): for grids of every shape class
 * (one chunk, a line, non-dividing sides, powers of two), 1 and 2 threads, with and without
 * side jobs, and run whole or as level 0 then the rest: every node runs exactly once, only
 * after all its children have ended, the side jobs run, idle is told once per worker after
 * the last atomic chunk was handed out, and a failing task stops the run with its status
 * (its parent never runs). Parallel loops inside tasks (dist_par_for): every item runs once
 * when nodes post loops side by side, and the shared radix sort (dist_sort_u64_par, in a
 * task and on the pool) gives the serial sort's keys. A chunk's early word to its parent
 * (dist_tree_early) lets the parent run while the chunk's task goes on.
 */
#include "dist/dist_internal.h"
#include "harness.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct rec {
    struct dist_tree *t;
    int64_t *start[DIST_TREE_LEVELS], *end[DIST_TREE_LEVELS];
    int64_t clock, side_runs, idle_calls[8], fail_level, fail_i;
    int64_t handed_out_at_idle; /* atomic starts seen when idle was told, minimum */
    int64_t atomic_started;
};

static int64_t tick(struct rec *r)
{
    return __atomic_add_fetch(&r->clock, 1, __ATOMIC_SEQ_CST);
}

static enum vox_status rec_task(void *arg, int level, int64_t i, int tid)
{
    (void)tid;
    struct rec *r = arg;
    if (level < 0) {
        __atomic_add_fetch(&r->side_runs, 1, __ATOMIC_SEQ_CST);
        return VOX_OK;
    }
    if (level == 0)
        __atomic_add_fetch(&r->atomic_started, 1, __ATOMIC_SEQ_CST);
    int64_t s = tick(r);
    if (r->start[level][i])
        r->start[level][i] = -1; /* ran twice */
    else
        r->start[level][i] = s;
    volatile uint64_t spin = 0; /* uneven task lengths, so the interleavings vary */
    for (uint64_t k = 0; k < (uint64_t)((i * 7919 + level * 131) % 2000); k++)
        spin += k;
    r->end[level][i] = tick(r);
    return level == r->fail_level && i == r->fail_i ? VOX_IO : VOX_OK;
}

static void rec_idle(void *arg, int tid)
{
    struct rec *r = arg;
    int64_t n = __atomic_load_n(&r->atomic_started, __ATOMIC_SEQ_CST);
    int64_t was = __atomic_load_n(&r->handed_out_at_idle, __ATOMIC_SEQ_CST);
    while (n < was && !__atomic_compare_exchange_n(&r->handed_out_at_idle, &was, n, false,
                                                   __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        ; /* (both workers may call it at once) */
    __atomic_add_fetch(&r->idle_calls[tid], 1, __ATOMIC_SEQ_CST);
}

static void check_grid(struct vox_ctx *ctx, const int64_t g[3], int nside, bool split)
{
    struct dist_tree t;
    dist_tree_init(&t, g);
    struct rec r = {.t = &t, .fail_level = -2, .handed_out_at_idle = INT64_MAX};
    CHECK(t.n[0] == g[0] * g[1] * g[2] && t.n[t.nlev - 1] == 1);
    for (int l = 0; l < t.nlev; l++) {
        r.start[l] = calloc((size_t)t.n[l], sizeof *r.start[l]);
        r.end[l] = calloc((size_t)t.n[l], sizeof *r.end[l]);
    }
    enum vox_status s;
    if (split) {
        s = dist_tree_run(ctx, &t, 0, 1, nside, rec_task, rec_idle, &r);
        if (s == VOX_OK)
            s = dist_tree_run(ctx, &t, 1, t.nlev, 0, rec_task, NULL, &r);
    } else {
        s = dist_tree_run(ctx, &t, 0, t.nlev, nside, rec_task, rec_idle, &r);
    }
    CHECK(s == VOX_OK);
    CHECK(r.side_runs == nside);
    int threads = vox_ctx_threads(ctx);
    for (int k = 0; k < threads; k++)
        CHECK(r.idle_calls[k] == 1);
    /* idle comes once all atomic chunks are handed out (those of other workers may still run) */
    CHECK(r.handed_out_at_idle >= t.n[0] - threads + 1);
    int bad = 0;
    for (int l = 0; l < t.nlev; l++)
        for (int64_t i = 0; i < t.n[l]; i++) {
            bad += r.start[l][i] <= 0;
            if (l == 0)
                continue;
            int64_t c[3], kids[8];
            int nk = dist_node_children(t.grid[l - 1], i, c, kids);
            bad += nk == 0;
            for (int k = 0; k < nk; k++)
                bad += r.end[l - 1][kids[k]] >= r.start[l][i];
        }
    if (bad)
        fprintf(stderr, "grid %lld %lld %lld, %d threads: %d violations\n", (long long)g[0],
                (long long)g[1], (long long)g[2], threads, bad);
    CHECK(bad == 0);

    /* A failing task: its status comes back and its parent does not run. */
    if (t.nlev > 1) {
        for (int l = 0; l < t.nlev; l++) {
            memset(r.start[l], 0, (size_t)t.n[l] * sizeof *r.start[l]);
            memset(r.end[l], 0, (size_t)t.n[l] * sizeof *r.end[l]);
        }
        r.fail_level = 0;
        r.fail_i = t.n[0] / 2;
        s = dist_tree_run(ctx, &t, 0, t.nlev, 0, rec_task, NULL, &r);
        CHECK(s == VOX_IO);
        int64_t p = (r.fail_i / g[2] % g[1]) / 2; /* parent's coordinates */
        int64_t pz = r.fail_i / (g[1] * g[2]) / 2, px = r.fail_i % g[2] / 2;
        CHECK(r.start[1][(pz * t.grid[1][1] + p) * t.grid[1][2] + px] == 0);
        CHECK(r.start[t.nlev - 1][0] == 0);
    }
    for (int l = 0; l < t.nlev; l++) {
        free(r.start[l]);
        free(r.end[l]);
    }
}

static void run_grids(struct vox_ctx *ctx)
{
    const int64_t grids[][3] = {{1, 1, 1}, {5, 1, 1}, {1, 1, 2}, {3, 4, 2},
                                {4, 4, 4}, {7, 3, 5}, {2, 9, 1}, {8, 8, 8}};
    for (size_t k = 0; k < sizeof grids / sizeof grids[0]; k++)
        for (int v = 0; v < (vox_test_full ? 40 : 4); v++)
            check_grid(ctx, grids[k], v % 2 ? 2 : 0, v % 4 >= 2);
}

static void test_two_threads(struct vox_ctx *ctx)
{
    run_grids(ctx);
}

static void test_one_thread(struct vox_ctx *ctx)
{
    (void)ctx;
    struct vox_ctx *c1;
    struct vox_ctx_options opt = {.threads = 1, .log_level = VOX_LOG_WARN};
    CHECK_OK(vox_ctx_create(&opt, &c1));
    run_grids(c1);
    vox_ctx_destroy(c1);
}

static void test_alloc_failures(struct vox_ctx *ctx)
{
    struct dist_tree t;
    dist_tree_init(&t, (int64_t[3]){3, 2, 2});
    struct rec r = {.t = &t, .fail_level = -2, .handed_out_at_idle = INT64_MAX};
    for (int l = 0; l < t.nlev; l++) {
        r.start[l] = calloc((size_t)t.n[l], sizeof *r.start[l]);
        r.end[l] = calloc((size_t)t.n[l], sizeof *r.end[l]);
    }
    for (int64_t k = 1; k < 6; k++) {
        vox_ctx_fail_alloc_at(ctx, k);
        enum vox_status s = dist_tree_run(ctx, &t, 0, t.nlev, 0, rec_task, NULL, &r);
        vox_ctx_fail_alloc_at(ctx, 0);
        CHECK(s == VOX_OK || s == VOX_OUT_OF_MEMORY);
        for (int l = 0; l < t.nlev; l++) {
            memset(r.start[l], 0, (size_t)t.n[l] * sizeof *r.start[l]);
            memset(r.end[l], 0, (size_t)t.n[l] * sizeof *r.end[l]);
        }
    }
    for (int l = 0; l < t.nlev; l++) {
        free(r.start[l]);
        free(r.end[l]);
    }
}

/* Every node above the chunks posts a loop of NITEMS items, each counting itself. */
enum { NITEMS = 37 };

struct par_rec {
    struct vox_ctx *ctx;
    struct dist_tree *t;
    int64_t *hits; /* per node of level >= 1 (a flat index), per item */
    int64_t base[DIST_TREE_LEVELS];
};

struct par_item {
    int64_t *hits;
};

static void par_hit(void *arg, int64_t i)
{
    struct par_item *p = arg;
    volatile uint64_t spin = 0;
    for (uint64_t k = 0; k < (uint64_t)(i * 104729 % 3000); k++)
        spin += k;
    __atomic_add_fetch(&p->hits[i], 1, __ATOMIC_SEQ_CST);
}

static enum vox_status par_task(void *arg, int level, int64_t i, int tid)
{
    (void)tid;
    struct par_rec *r = arg;
    if (level == 0)
        return VOX_OK;
    struct par_item p = {r->hits + (r->base[level] + i) * NITEMS};
    dist_par_for(&(struct dist_par){r->ctx, r->t}, NITEMS, par_hit, &p);
    return VOX_OK;
}

static void check_par_loops(struct vox_ctx *ctx)
{
    const int64_t grids[][3] = {{1, 1, 1}, {4, 4, 4}, {7, 3, 5}, {8, 8, 8}};
    for (size_t g = 0; g < sizeof grids / sizeof grids[0]; g++) {
        struct dist_tree t;
        dist_tree_init(&t, grids[g]);
        struct par_rec r = {.ctx = ctx, .t = &t};
        int64_t nodes = 0;
        for (int l = 1; l < t.nlev; l++) {
            r.base[l] = nodes;
            nodes += t.n[l];
        }
        r.hits = calloc((size_t)(nodes + 1) * NITEMS, sizeof *r.hits);
        CHECK(dist_tree_run(ctx, &t, 0, t.nlev, 0, par_task, NULL, &r) == VOX_OK);
        int64_t bad = 0;
        for (int64_t k = 0; k < nodes * NITEMS; k++)
            bad += r.hits[k] != 1;
        CHECK(bad == 0);
        CHECK(t.run == NULL);
        free(r.hits);
    }
    /* outside a tree run: the pool */
    int64_t hits[NITEMS] = {0};
    struct par_item p = {hits};
    dist_par_for(&(struct dist_par){ctx, NULL}, NITEMS, par_hit, &p);
    dist_par_for(NULL, NITEMS, par_hit, &p);
    int64_t bad = 0;
    for (int k = 0; k < NITEMS; k++)
        bad += hits[k] != 2;
    CHECK(bad == 0);
}

/* Keys with some bytes all equal (skipped passes) and duplicates, sorted from bit `from`. */
struct sort_case {
    struct vox_ctx *ctx;
    struct dist_tree *t;
    uint64_t *k, *tmp;
    int64_t n;
    int from;
};

static enum vox_status sort_task(void *arg, int level, int64_t i, int tid)
{
    (void)i, (void)tid;
    struct sort_case *c = arg;
    if (level == c->t->nlev - 1) /* the root, while the other workers have nothing to do */
        dist_sort_u64_par(&(struct dist_par){c->ctx, c->t}, c->k, c->tmp, c->n, c->from);
    return VOX_OK;
}

static void check_par_sort(struct vox_ctx *ctx)
{
    const int64_t sizes[] = {0, 1, 1000, 65536, 70001, 300000};
    uint64_t seed = 12345;
    for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++)
        for (int v = 0; v < 4; v++) {
            int64_t n = sizes[z];
            uint64_t *k = malloc((size_t)(n + 1) * 8), *want = malloc((size_t)(n + 1) * 8);
            uint64_t *tmp = malloc((size_t)(n + 1) * 8);
            for (int64_t j = 0; j < n; j++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                uint64_t x = seed >> 11;
                k[j] = v == 0 ? x : v == 1 ? (x & 0xff00ff0000ffull) : v == 2 ? x % 977 : x << 24;
            }
            int from = (int[]){0, 8, 32, 0}[v];
            memcpy(want, k, (size_t)n * 8);
            dist_sort_u64(want, tmp, n, from);
            struct dist_tree t;
            dist_tree_init(&t, (int64_t[3]){2, 2, 1});
            struct sort_case c = {ctx, &t, k, tmp, n, from};
            uint64_t *k2 = malloc((size_t)(n + 1) * 8);
            memcpy(k2, k, (size_t)n * 8);
            CHECK(dist_tree_run(ctx, &t, 0, t.nlev, 0, sort_task, NULL, &c) == VOX_OK);
            CHECK(n == 0 || memcmp(k, want, (size_t)n * 8) == 0);
            dist_sort_u64_par(&(struct dist_par){ctx, NULL}, k2, tmp, n, from); /* the pool */
            CHECK(n == 0 || memcmp(k2, want, (size_t)n * 8) == 0);
            free(k), free(k2), free(want), free(tmp);
        }
}

static void test_par(struct vox_ctx *ctx)
{
    check_par_loops(ctx);
    check_par_sort(ctx);
    struct vox_ctx *c1;
    struct vox_ctx_options opt = {.threads = 1, .log_level = VOX_LOG_WARN};
    CHECK_OK(vox_ctx_create(&opt, &c1));
    check_par_loops(c1);
    check_par_sort(c1);
    vox_ctx_destroy(c1);
}

/* dist_tree_early: a chunk that has said its part for the parent is done lets the parent
 * start while the chunk's task still runs. Two chunks under the root, two workers: chunk 1
 * says so, then waits (up to 5 s) for the root to have run; chunk 0 returns at once, so
 * whichever worker is free takes the root. Without the early word the root waits for chunk
 * 1's task, which waits in vain. Outside a run the call does nothing. */
struct early_run {
    struct dist_tree *t;
    int root_ran, saw_root;
};

static enum vox_status early_task(void *arg, int level, int64_t i, int tid)
{
    (void)tid;
    struct early_run *e = arg;
    if (level == 1) {
        __atomic_store_n(&e->root_ran, 1, __ATOMIC_SEQ_CST);
    } else if (i == 1) {
        dist_tree_early(e->t, 0, i);
        for (int k = 0; k < 5000 && !__atomic_load_n(&e->root_ran, __ATOMIC_SEQ_CST); k++)
            usleep(1000);
        e->saw_root = __atomic_load_n(&e->root_ran, __ATOMIC_SEQ_CST);
    }
    return VOX_OK;
}

static void test_early(struct vox_ctx *ctx)
{
    struct dist_tree t;
    dist_tree_init(&t, (int64_t[3]){1, 1, 2});
    dist_tree_early(&t, 0, 0); /* no run: nothing */
    struct early_run e = {.t = &t};
    CHECK_OK(dist_tree_run(ctx, &t, 0, t.nlev, 0, early_task, NULL, &e));
    CHECK(e.root_ran && e.saw_root);
}

/* The chunks' hand-out order: a permutation; with one worker depth first (the 8 children
 * of a parent together, parents in order); with w workers the last w chunks have w
 * different parents (each readies its parent while the others still run), and every other
 * chunk keeps its place relative to the rest. Grids 4x4x4 (64 chunks), odd 3x5x2, 1 chunk. */
static void test_order(struct vox_ctx *ctx)
{
    (void)ctx;
    const int64_t grids[3][3] = {{4, 4, 4}, {3, 5, 2}, {1, 1, 1}};
    for (int gi = 0; gi < 3; gi++) {
        struct dist_tree t;
        dist_tree_init(&t, grids[gi]);
        const int64_t n = t.n[0];
        int64_t dfs[64], o[64];
        dist_tree_order(&t, 0, t.nlev, 1, dfs);
        bool seen[64] = {false};
        for (int64_t i = 0; i < n; i++) {
            CHECK(dfs[i] >= 0 && dfs[i] < n && !seen[dfs[i]]);
            seen[dfs[i]] = true;
        }
        for (int w = 2; w <= 4; w++) {
            dist_tree_order(&t, 0, t.nlev, w, o);
            int64_t par[64], k = 0;
            for (int64_t i = 0; i < n; i++) {
                const int64_t *g = t.grid[0], *pg = t.nlev > 1 ? t.grid[1] : g;
                const int64_t z = o[i] / (g[1] * g[2]), y = o[i] / g[2] % g[1], x = o[i] % g[2];
                par[i] = (z / 2 * pg[1] + y / 2) * pg[2] + x / 2;
            }
            const int64_t tail = t.nlev > 1 ? (w < t.n[1] ? w : t.n[1]) : 0;
            for (int64_t i = n - tail; i < n; i++)
                for (int64_t j = i + 1; j < n; j++)
                    CHECK(par[i] != par[j]);
            /* the rest: dfs with the moved chunks taken out, in order */
            for (int64_t i = 0; i < n; i++) {
                bool moved = false;
                for (int64_t j = n - tail; j < n; j++)
                    moved = moved || dfs[i] == o[j];
                if (!moved)
                    CHECK(o[k++] == dfs[i]);
            }
            CHECK(k == n - tail);
        }
    }
}

/* Chunks to ranks: every chunk on exactly one rank's list, the one dist_chunk_rank names;
 * with at least as many level-1 nodes as ranks, the subtrees of level L (dist_own_level: the
 * deepest with 4 nodes a rank, else 1) each on one rank and together in its list (in order),
 * chunk 0 on rank 0; else chunk i on rank i % size. Grids 4x4x4 (8 level-1 nodes), odd 7x5x3
 * (24), 3x1x1 (2), 2x2x2 (1), 8x8x8 (64, then 8); 1 to 9 ranks. */
static void test_rank_chunks(struct vox_ctx *ctx)
{
    (void)ctx;
    const int64_t grids[5][3] = {{4, 4, 4}, {7, 5, 3}, {3, 1, 1}, {2, 2, 2}, {8, 8, 8}};
    for (int gi = 0; gi < 5; gi++) {
        struct dist_tree t;
        dist_tree_init(&t, grids[gi]);
        const int64_t n = t.n[0], *g = t.grid[0];
        for (int size = 1; size <= 9; size++) {
            int64_t list[512], owner[512];
            bool sub = dist_own_level(g, size) > 0;
            const int L = dist_own_level(g, size);
            CHECK(sub == (size > 1 && t.n[1] >= size));
            CHECK(L == 0 || (L < t.nlev - 1 && (L == 1 || t.n[L] >= 4 * size) &&
                             (L + 1 >= t.nlev || t.n[L + 1] < 4 * size)));
            for (int64_t i = 0; i < n; i++)
                owner[i] = -1;
            for (int r = 0; r < size; r++) {
                int64_t m = dist_rank_chunks(g, r, size, list), last = -1;
                for (int64_t k = 0; k < m; k++) {
                    const int64_t i = list[k];
                    CHECK(i >= 0 && i < n && owner[i] < 0);
                    owner[i] = r;
                    CHECK(dist_chunk_rank(g, i, size) == r);
                    const int64_t z = i / (g[1] * g[2]), y = i / g[2] % g[1], x = i % g[2];
                    const int64_t *ag = t.grid[L], d = (int64_t)1 << L;
                    const int64_t anc = (z / d * ag[1] + y / d) * ag[2] + x / d;
                    CHECK(anc == dist_node_ancestor(g, 0, i, L));
                    if (sub) /* subtrees in order, a subtree's chunks together */
                        CHECK(anc >= last && anc % size == r);
                    else
                        CHECK(i % size == r && i > last);
                    last = sub ? anc : i;
                }
            }
            for (int64_t i = 0; i < n; i++)
                CHECK(owner[i] >= 0);
            CHECK(dist_chunk_rank(g, 0, size) == 0);
        }
    }
}

VOX_TEST_MAIN(VOX_TEST(test_two_threads), VOX_TEST(test_one_thread), VOX_TEST(test_alloc_failures),
              VOX_TEST(test_par), VOX_TEST(test_order), VOX_TEST(test_rank_chunks),
              VOX_TEST(test_early))
