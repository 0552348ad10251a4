"""waterz_seg.py: the waterz peer of `vox bench seg-all` (bench/bench_seg.c).

usage: waterz_seg.py AFF.npy THRESHOLD LOW HIGH RUNS

Loads float32 affinities (3, Z, Y, X), runs waterz.agglomerate(affs, [THRESHOLD],
aff_threshold_low=LOW, aff_threshold_high=HIGH, scoring_function=OneMinus<MeanAffinity<...>>)
RUNS times (watershed, region graph, agglomeration and the uint64 segmentation: everything
agglomerate does), timing only that call, and prints one JSON line: version, median_s, times,
segments (nonzero labels at THRESHOLD), peak_rss_bytes (the process's peak, input and
interpreter included) and rss_increase_bytes (peak after the runs - peak before them).
waterz's C++ chatter on stdout is sent to /dev/null so the JSON line is the only output.
"""
import json
import os
import resource
import sys
import time

import numpy as np
import waterz


def main():
    path, threshold, low, high, runs = sys.argv[1:6]
    affs = np.ascontiguousarray(np.load(path), dtype=np.float32)
    out = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_WRONLY)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times, segments = [], 0
    for _ in range(int(runs)):
        sys.stdout.flush()
        os.dup2(devnull, 1)
        t0 = time.perf_counter()
        seg = next(iter(waterz.agglomerate(
            affs, [float(threshold)], aff_threshold_low=float(low),
            aff_threshold_high=float(high),
            scoring_function="OneMinus<MeanAffinity<RegionGraphType, ScoreValue>>")))
        times.append(time.perf_counter() - t0)
        sys.stdout.flush()
        os.dup2(out.fileno(), 1)
        u = np.unique(seg)
        segments = int(len(u) - (1 if u[0] == 0 else 0))
        del seg, u
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out.write(json.dumps({
        "version": waterz.__version__, "median_s": float(np.median(times)), "times": times,
        "segments": segments, "peak_rss_bytes": after, "rss_increase_bytes": after - before,
    }) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
