/*
 * bench_peak.c: `vox bench peak`: the FP32 FMA peak probe itself, per run, so its spread
 * shows how noisy the machine is at the moment.
 */
#include "bench.h"

#include <stdio.h>

static enum vox_status run_peak(struct bench_env *env, const struct bench_params *p,
                                struct bench_result *res)
{
    for (int i = 0; i < p->runs; i++) {
        struct vox_peak pk;
        double t0 = vox_time_now();
        enum vox_status s = vox_peak_measure(env->ctx, &pk);
        if (s != VOX_OK)
            return s;
        res->times[i] = vox_time_now() - t0;
        snprintf(res->extra, sizeof res->extra,
                 "\"peak_gflops_1\":%.2f,\"peak_gflops_all\":%.2f,\"ghz\":%.3f,\"lanes\":%d,"
                 "\"fma_ports\":%d",
                 pk.gflops_1, pk.gflops_all, pk.ghz, pk.lanes, pk.fma_ports);
    }
    res->runs = p->runs;
    return VOX_OK;
}

const struct bench_problem bench_peak = {
    "peak", "the FMA peak probe (no parameters); extra keys give 1- and all-thread GFLOP/s", 3,
    run_peak};
