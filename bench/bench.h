/*
 * bench.h: how a benchmark problem plugs into `vox bench`.
 *
 * A problem is a name, optional parameters after a colon ("h5-write:256x256x256,runs=5"), and
 * a run function that times its work and fills a struct bench_result. The driver prints one
 * JSON line per result with the keys every line has (problem, runs, median_s, min_s, max_s,
 * cpu, isa, threads, peak_gflops, commit) and those the problem sets (gflops, pct_peak,
 * mvox_s, bytes_per_voxel, compile_ms, gb_s, and a peer measured in the same run: peer,
 * peer_version, peer_median_s, ratio = peer time / vox time).
 *
 * Problems are listed once, in bench/problems.inc.
 */
#ifndef VOX_BENCH_H
#define VOX_BENCH_H

#include "vox/vox.h"

#include <stdbool.h>

struct bench_params {
    const char *raw;    /* everything after the colon, "" if none */
    int runs;           /* runs=N (default set by the problem) */
    int threads;        /* threads=N, 0 = the context's */
};

struct bench_result {
    int runs;
    double times[64];          /* seconds of each timed run */
    double flops;              /* per run, 0 if not a FLOP-counting problem */
    double voxels;             /* per run, for mvox_s, 0 if not applicable */
    double bytes;              /* per run, for gb_s, 0 if not applicable */
    double peak_rss_bytes;     /* for bytes_per_voxel, 0 if not measured */
    double peer_peak_rss_bytes; /* the peer's, for peer_bytes_per_voxel, 0 if not measured */
    double compile_ms;         /* < 0 if not applicable */
    const char *peer;          /* NULL if no peer ran */
    char peer_version[64];
    double peer_median_s;
    double layer_s;            /* a net problem's measured layer alone (median), 0 if none */
    char extra[1024];          /* more "key":value pairs, comma-separated, no braces */
};

struct bench_env {
    struct vox_ctx *ctx;
    double peak_gflops;        /* measured at the context's thread count */
    const char *commit;
    /* The OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE values the driver found and unset before any
     * problem ran (they pin a slower OpenBLAS kernel; a peer loads it afterwards). */
    char openblas_env[96];
    /* Prints one result line under `label`, for problems with several results per run (they
     * return with res->runs = 0, so the driver prints nothing more). */
    void (*emit)(const struct bench_env *env, const char *label, const struct bench_result *r);
};

struct bench_problem {
    const char *name;
    const char *help;          /* parameters and what is measured */
    int default_runs;
    /* Returns VOX_OK and fills *res, or a status with the message on env->ctx. */
    enum vox_status (*run)(struct bench_env *env, const struct bench_params *p,
                           struct bench_result *res);
};

/* Median of n values (sorts a copy). */
double bench_median(const double *v, int n);
/* Runs fn(arg) in a forked child and returns its peak resident set in bytes, or -1. The child's
 * exit status must be 0 for success. Used where bytes/voxel must not include the parent's:
 * the parent's context `parent` first returns the blocks it keeps (vox_ctx_trim). */
double bench_child_peak_rss(struct vox_ctx *parent, int (*fn)(void *arg), void *arg);

/* Runs `bench/peers/venv/bin/python SCRIPT ARGS`, a torch peer printing one JSON line with
 * version, median_s, format, contiguous_s and channels_last_3d_s, and fills the peer fields
 * (peer_format and both timings go to extra). A missing venv or a failing peer is reported on
 * stderr and leaves the fields empty: not fatal. */
void bench_torch_peer(const char *script, const char *args, struct bench_result *res);

#define BENCH_PROBLEM(sym) extern const struct bench_problem sym;
#include "problems.inc"
#undef BENCH_PROBLEM

#endif
