/*
 * cmd_bench.c: `vox bench PROBLEM...`: runs benchmark problems (the bench/ directory) and prints one JSON
 * line per result. A pattern with '*' or '?' runs every matching problem ("seg-*").
 */
#include "cli.h"

#include "bench.h"
#include "commit.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static const struct bench_problem *const problems[] = {
#define BENCH_PROBLEM(sym) &sym,
#include "problems.inc"
#undef BENCH_PROBLEM
};
#define NPROBLEMS ((int)(sizeof problems / sizeof problems[0]))

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_median(const double *v, int n)
{
    double tmp[64];
    if (n <= 0 || n > 64)
        return 0;
    memcpy(tmp, v, (size_t)n * sizeof *v);
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_double);
    return n % 2 ? tmp[n / 2] : 0.5 * (tmp[n / 2 - 1] + tmp[n / 2]);
}

double bench_child_peak_rss(struct vox_ctx *parent, int (*fn)(void *arg), void *arg)
{
    vox_ctx_trim(parent); /* the child would count the blocks the parent keeps as its own */
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0)
        _exit(fn(arg));
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return -1;
    return (double)ru.ru_maxrss * 1024.0;
}

static void json_escape(const char *s, char *out, size_t len)
{
    size_t k = 0;
    for (; *s && k + 2 < len; s++) {
        if (*s == '"' || *s == '\\')
            out[k++] = '\\';
        out[k++] = *s;
    }
    out[k] = '\0';
}

static void print_result(const struct bench_env *env, const char *problem,
                         const struct bench_result *r)
{
    if (r->runs <= 0)
        return;
    double med = bench_median(r->times, r->runs), mn = 1e300, mx = 0;
    for (int i = 0; i < r->runs; i++) {
        mn = r->times[i] < mn ? r->times[i] : mn;
        mx = r->times[i] > mx ? r->times[i] : mx;
    }
    const struct vox_cpu *c = vox_ctx_cpu(env->ctx);
    char name[256], cpu[128];
    json_escape(problem, name, sizeof name);
    json_escape(c->model, cpu, sizeof cpu);
    printf("{\"problem\":\"%s\",\"runs\":%d,\"median_s\":%.6g,\"min_s\":%.6g,\"max_s\":%.6g,"
           "\"cpu\":\"%s\",\"isa\":\"%s\",\"threads\":%d,\"peak_gflops\":%.2f,\"commit\":\"%s\"",
           name, r->runs, med, mn, mx, cpu, vox_isa_str(c->isa), vox_ctx_threads(env->ctx),
           env->peak_gflops, env->commit);
    if (r->flops > 0 && med > 0) {
        double g = r->flops / med * 1e-9;
        printf(",\"gflops\":%.3f,\"pct_peak\":%.2f", g, 100.0 * g / env->peak_gflops);
    }
    if (r->voxels > 0 && med > 0)
        printf(",\"mvox_s\":%.3f", r->voxels / med * 1e-6);
    if (r->bytes > 0 && med > 0)
        printf(",\"gb_s\":%.3f", r->bytes / med * 1e-9);
    if (r->peak_rss_bytes > 0 && r->voxels > 0)
        printf(",\"bytes_per_voxel\":%.3f", r->peak_rss_bytes / r->voxels);
    if (r->peer_peak_rss_bytes > 0 && r->voxels > 0)
        printf(",\"peer_bytes_per_voxel\":%.3f", r->peer_peak_rss_bytes / r->voxels);
    if (r->compile_ms >= 0)
        printf(",\"compile_ms\":%.4f", r->compile_ms);
    if (r->layer_s > 0) {
        printf(",\"layer_s\":%.6g", r->layer_s);
        if (r->flops > 0)
            printf(",\"layer_pct_peak\":%.2f",
                   100.0 * r->flops / r->layer_s * 1e-9 / env->peak_gflops);
    }
    if (r->peer) {
        printf(",\"peer\":\"%s\",\"peer_version\":\"%s\",\"peer_median_s\":%.6g", r->peer,
               r->peer_version, r->peer_median_s);
        if (med > 0)
            printf(",\"ratio\":%.3f", r->peer_median_s / med);
        if (r->layer_s > 0)
            printf(",\"layer_ratio\":%.3f", r->peer_median_s / r->layer_s);
    }
    if (r->extra[0])
        printf(",%s", r->extra);
    printf("}\n");
    fflush(stdout);
}

static int parse_params(const char *cmd, char *spec, struct bench_params *p, int default_runs)
{
    char *colon = strchr(spec, ':');
    p->raw = "";
    p->runs = default_runs;
    p->threads = 0;
    if (!colon)
        return 0;
    *colon = '\0';
    p->raw = colon + 1;
    /* runs= and threads= are generic; the problem parses the rest from p->raw. */
    for (const char *k = p->raw; (k = strstr(k, "=")) != NULL; k++) {
        const char *start = k;
        while (start > p->raw && start[-1] != ',')
            start--;
        int64_t v;
        char val[32];
        size_t n = strcspn(k + 1, ",");
        if (n >= sizeof val)
            continue;
        memcpy(val, k + 1, n);
        val[n] = '\0';
        if (strncmp(start, "runs=", 5) == 0) {
            if (!cli_parse_i64(val, 1, 64, &v))
                return cli_usage(cmd, "runs=%s: expected 1 to 64", val);
            p->runs = (int)v;
        } else if (strncmp(start, "threads=", 8) == 0) {
            if (!cli_parse_i64(val, 1, 1024, &v))
                return cli_usage(cmd, "threads=%s: expected 1 to 1024", val);
            p->threads = (int)v;
        }
    }
    return 0;
}

static void list_problems(FILE *f)
{
    for (int i = 0; i < NPROBLEMS; i++)
        fprintf(f, "  %-16s %s\n", problems[i]->name, problems[i]->help);
}

static const char help[] =
    "usage: vox bench [--threads N] [--list] PROBLEM[:PARAMS]...\n\n"
    "Runs benchmark problems and prints one JSON line per result with the keys problem, runs,\n"
    "median_s, min_s, max_s, cpu, isa, threads, peak_gflops (measured now, at this thread\n"
    "count), commit, and where they apply gflops, pct_peak, mvox_s, gb_s, bytes_per_voxel,\n"
    "compile_ms, and for a peer measured in the same run peer, peer_version, peer_median_s,\n"
    "ratio (peer time / vox time: above 1 means vox is faster) and, where the peer reports its\n"
    "peak resident set (train-net), peer_bytes_per_voxel. The conv-layer problems also give\n"
    "layer_s, layer_pct_peak and layer_ratio: the conv layer alone, without packing its input\n"
    "into the blocked layout and unpacking its output (torch's input is already in its format).\n\n"
    "PARAMS are comma-separated after a colon; every problem takes runs=N and threads=N.\n"
    "A PROBLEM with * or ? runs every problem whose name matches (quote it in the shell).\n\n"
    "problems:\n";

static int run_one(struct bench_env *env, const struct bench_problem *pb, char *spec,
                   const char *label)
{
    struct bench_params p;
    if (parse_params("bench", spec, &p, pb->default_runs))
        return 2;
    struct bench_env sub = *env;
    /* the blocks the last problem left in the shared context would count in this one's peaks
     * (a forked child inherits them) and help its first run */
    vox_ctx_trim(env->ctx);
    if (p.threads && p.threads != vox_ctx_threads(env->ctx)) {
        /* threads=N: a context of its own, and the peak measured at that thread count. */
        struct cli_common c = {.threads = p.threads};
        sub.ctx = cli_ctx_create("bench", &c);
        if (!sub.ctx)
            return 1;
        struct vox_peak pk;
        vox_peak_measure(sub.ctx, &pk);
        sub.peak_gflops = pk.gflops_all;
    }
    struct bench_result *res = calloc(1, sizeof *res);
    if (!res)
        return 1;
    res->compile_ms = -1;
    enum vox_status s = pb->run(&sub, &p, res);
    int rc = 0;
    if (s != VOX_OK) {
        fprintf(stderr, "vox bench: error: %s: %s\n", label, vox_ctx_error(sub.ctx));
        rc = s == VOX_INVALID_ARG ? 2 : 1;
    } else if (res->runs > 0) {
        print_result(&sub, label, res);
    }
    free(res);
    if (sub.ctx != env->ctx)
        vox_ctx_destroy(sub.ctx);
    return rc;
}

int vox_cmd_bench(int argc, char **argv)
{
    struct cli_common common = {0};
    char *specs[64];
    int nspecs = 0;
    for (int i = 1; i < argc; i++) {
        int r = cli_common_option("bench", argc, argv, &i, &common);
        if (r == 0)
            continue;
        if (r == 2)
            return 2;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(help, stdout);
            list_problems(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--list") == 0) {
            list_problems(stdout);
            return 0;
        }
        if (argv[i][0] == '-')
            return cli_usage("bench", "unknown option '%s'", argv[i]);
        if (nspecs == 64)
            return cli_usage("bench", "at most 64 problems at once");
        specs[nspecs++] = argv[i];
    }
    if (nspecs == 0)
        return cli_usage("bench", "name at least one problem (vox bench --list)");
    /* Check every name before running anything. */
    for (int k = 0; k < nspecs; k++) {
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)strcspn(specs[k], ":"), specs[k]);
        bool any = false;
        for (int i = 0; i < NPROBLEMS; i++)
            any |= fnmatch(name, problems[i]->name, 0) == 0;
        if (!any)
            return cli_usage("bench", "no problem matches '%s' (vox bench --list)", name);
    }
    struct vox_ctx *ctx = cli_ctx_create("bench", &common);
    if (!ctx)
        return 1;
    struct vox_peak pk;
    vox_peak_measure(ctx, &pk);
    struct bench_env env = {ctx, pk.gflops_all, VOX_COMMIT, "", print_result};
    const char *ct = getenv("OPENBLAS_CORETYPE"), *l2 = getenv("OPENBLAS_L2_SIZE");
    snprintf(env.openblas_env, sizeof env.openblas_env, "CORETYPE=%s L2_SIZE=%s",
             ct ? ct : "(unset)", l2 ? l2 : "(unset)");
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv("OPENBLAS_L2_SIZE");
    int rc = 0;
    for (int k = 0; k < nspecs && rc == 0; k++) {
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)strcspn(specs[k], ":"), specs[k]);
        for (int i = 0; i < NPROBLEMS && rc == 0; i++) {
            if (fnmatch(name, problems[i]->name, 0) != 0)
                continue;
            char spec[512], label[512];
            const char *colon = strchr(specs[k], ':');
            snprintf(spec, sizeof spec, "%s%s", problems[i]->name, colon ? colon : "");
            snprintf(label, sizeof label, "%s", spec);
            rc = run_one(&env, problems[i], spec, label);
        }
    }
    vox_ctx_destroy(ctx);
    return rc;
}
