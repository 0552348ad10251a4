/*
 * cmd_info.c: `vox info`: the CPU (model, features, caches), the ISA vox will use, the thread
 * count, and the measured FP32 peak at one and at all threads, next to the theoretical FMA
 * peak 2 x lanes x ports x clock so the two can be compared, and the memory bandwidth of a
 * pointwise pass at one and at all threads.
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const char help[] =
    "usage: vox info [--threads N] [--json] [--no-peak]\n\n"
    "Describes this machine as vox sees it: CPU model, instruction-set features, caches, the\n"
    "ISA in use (capped by VOX_ISA=ref|avx2|avx512), worker threads (VOX_THREADS or\n"
    "--threads), the FP32 peak measured with independent FMA chains at 1 and all threads, and\n"
    "the memory bandwidth of a pointwise pass (b *= a over arrays past the caches: what\n"
    "vox's passes over activations get) at 1 and all threads, and the round trip of a cache\n"
    "line between two of its threads (whether they share an L3).\n\n"
    "  --json      one JSON object instead of text\n"
    "  --no-peak   skip the peak and bandwidth measurements (about a second)\n"
    "  --threads N worker threads (default: VOX_THREADS, else all CPUs)\n";

static void features(const struct vox_cpu *c, char *buf, size_t len)
{
    const struct {
        const char *name;
        bool on;
    } f[] = {{"sse4.2", c->sse42},       {"avx", c->avx},           {"avx2", c->avx2},
             {"fma", c->fma},            {"bmi2", c->bmi2},         {"avx512f", c->avx512f},
             {"avx512bw", c->avx512bw},  {"avx512vl", c->avx512vl}, {"avx512dq", c->avx512dq},
             {"avx512vnni", c->avx512vnni}};
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (!f[i].on)
            continue;
        size_t n = strlen(buf);
        snprintf(buf + n, len - n, "%s%s", n ? " " : "", f[i].name);
    }
}

int vox_cmd_info(int argc, char **argv)
{
    struct cli_common common = {0};
    bool json = false, peak = true;
    for (int i = 1; i < argc; i++) {
        int r = cli_common_option("info", argc, argv, &i, &common);
        if (r == 0)
            continue;
        if (r == 2)
            return 2;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(help, stdout);
            return 0;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--no-peak") == 0) {
            peak = false;
        } else {
            return cli_usage("info", "unknown option '%s'", argv[i]);
        }
    }
    struct vox_ctx *ctx = cli_ctx_create("info", &common);
    if (!ctx)
        return 1;
    const struct vox_cpu *c = vox_ctx_cpu(ctx);
    struct vox_peak p = {0};
    struct vox_bandwidth bw = {0};
    if (peak &&
        (vox_peak_measure(ctx, &p) != VOX_OK || vox_bandwidth_measure(ctx, 0, &bw) != VOX_OK)) {
        fprintf(stderr, "vox info: out of memory measuring the peak and bandwidth\n");
        vox_ctx_destroy(ctx);
        return 1;
    }
    char feat[256];
    features(c, feat, sizeof feat);
    double fma_peak = 2.0 * p.lanes * p.fma_ports * p.ghz;
    if (json) {
        printf("{\"cpu\":\"%s\",\"vendor\":\"%s\",\"family\":%d,\"model\":%d,"
               "\"features\":\"%s\",\"isa_max\":\"%s\",\"isa\":\"%s\",\"l1d_bytes\":%lld,"
               "\"l2_bytes\":%lld,\"l3_bytes\":%lld,\"cpus\":%d,\"threads\":%d",
               c->model, c->vendor, c->family, c->model_id, feat, vox_isa_str(c->isa_max),
               vox_isa_str(c->isa), (long long)c->l1d_bytes, (long long)c->l2_bytes,
               (long long)c->l3_bytes, c->cores, vox_ctx_threads(ctx));
        if (peak)
            printf(",\"ghz\":%.3f,\"lanes\":%d,\"fma_ports\":%d,\"fma_peak_gflops_1\":%.2f,"
                   "\"peak_gflops_1\":%.2f,\"peak_gflops_all\":%.2f",
                   p.ghz, p.lanes, p.fma_ports, fma_peak, p.gflops_1, p.gflops_all);
        if (peak)
            printf(",\"mem_gbs_1\":%.2f,\"mem_gbs_all\":%.2f,\"round_trip_ns\":%.1f", bw.gbs_1,
                   bw.gbs_all, bw.round_trip_ns);
        printf("}\n");
    } else {
        printf("cpu        %s (%s family %d model %d)\n", c->model, c->vendor, c->family,
               c->model_id);
        printf("features   %s\n", feat);
        printf("isa        %s (best available: %s)\n", vox_isa_str(c->isa),
               vox_isa_str(c->isa_max));
        printf("caches     L1d %lld KiB, L2 %lld KiB, L3 %lld KiB\n",
               (long long)c->l1d_bytes / 1024, (long long)c->l2_bytes / 1024,
               (long long)c->l3_bytes / 1024);
        printf("threads    %d of %d CPUs\n", vox_ctx_threads(ctx), c->cores);
        if (peak) {
            printf("clock      %.2f GHz (effective, measured)\n", p.ghz);
            printf("fma peak   %.1f GFLOP/s per core = 2 x %d lanes x %d FMA/cycle (%s) x %.2f GHz\n",
                   fma_peak, p.lanes, p.fma_ports,
                   p.fma_ports_documented ? "documented" : "measured", p.ghz);
            printf("peak       %.1f GFLOP/s on 1 thread (%.0f%% of the FMA peak), "
                   "%.1f GFLOP/s on %d thread%s\n",
                   p.gflops_1, fma_peak > 0 ? 100 * p.gflops_1 / fma_peak : 0, p.gflops_all,
                   p.threads, p.threads == 1 ? "" : "s");
            printf("memory     %.1f GB/s on 1 thread, %.1f GB/s on %d thread%s (b *= a over 2 x "
                   "%lld MiB: the bytes read and written)\n",
                   bw.gbs_1, bw.gbs_all, bw.threads, bw.threads == 1 ? "" : "s",
                   (long long)(bw.bytes >> 20));
            if (bw.round_trip_ns > 0)
                printf("cores      %.0f ns for a cache line from thread 0 to 1 and back (~100: "
                       "one shared L3, ~400: across chiplets)\n",
                       bw.round_trip_ns);
        }
    }
    vox_ctx_destroy(ctx);
    return 0;
}
