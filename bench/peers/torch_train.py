"""PyTorch peer of `vox bench train-net`: one training iteration of a net built from a vox spec.

  torch_train.py SPEC PZ PY PX THREADS RUNS

The net of the spec (torch_infer.SpecNet; every bn=yes read as bn=no, as vox's bench reads it), random
weights, fixed random inputs (every input of the spec) and a fixed random 0/1 target at the
output's shape. One iteration: zero_grad, forward, loss (cross-entropy for a softmax output,
binary cross-entropy for a sigmoid one, else squared error; mean over voxels), backward,
torch.optim.Adam step. Timed in both memory formats (contiguous and channels_last_3d), each
after two warm-up iterations; RUNS timed iterations, the median. Prints one JSON line:
version, median_s (the faster format), format, both medians, and peak_rss_bytes: the process's
peak resident set (VmHWM) while the faster format ran, the peak being reset between formats
through /proc/self/clear_refs (0 where that is unavailable).
"""
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_infer import SpecNet  # noqa: E402


def output_act(spec):
    for raw in spec.splitlines():
        words = raw.split("#", 1)[0].split()
        if words and words[0] == "output":
            kv = dict(w.split("=", 1) for w in words[2:] if "=" in w)
            return kv.get("act", "linear")
    return "linear"


def loss_fn(act, y, t):
    if act == "softmax":
        return -(t * torch.log(y.clamp_min(1e-12))).sum(dim=1).mean()
    if act == "sigmoid":
        return torch.nn.functional.binary_cross_entropy(y, t)
    return ((y - t) ** 2).mean()


def time_format(spec, patch, chans, mf, runs):
    torch.manual_seed(0)
    net = SpecNet(spec).to(memory_format=mf)
    xs = [torch.rand(1, c, *patch).to(memory_format=mf) for c in chans]
    act = output_act(spec)
    with torch.no_grad():
        y = net(*xs)[0]
    t = (torch.rand(y.shape) < 0.5).float()
    if act == "softmax":
        t = torch.nn.functional.one_hot(torch.randint(0, y.shape[1], y.shape[:1] + y.shape[2:]),
                                        y.shape[1]).permute(0, 4, 1, 2, 3).float()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=False)
        loss = loss_fn(act, net(*xs)[0], t)
        loss.backward()
        opt.step()

    step()
    step()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    spec = open(sys.argv[1]).read().replace("bn=yes", "bn=no")
    patch = [int(a) for a in sys.argv[2:5]]
    threads, runs = int(sys.argv[5]), int(sys.argv[6])
    torch.set_num_threads(threads)
    chans = []
    for raw in spec.splitlines():
        words = raw.split("#", 1)[0].split()
        if words and words[0] == "input":
            chans.append(int(dict(w.split("=", 1) for w in words[2:] if "=" in w)["channels"]))
    res, rss = {}, {}
    for fmt in ("contiguous", "channels_last_3d"):
        mf = getattr(torch, fmt + "_format" if fmt == "contiguous" else fmt)
        fresh = reset_peak()
        res[fmt] = time_format(spec, patch, chans, mf, runs)
        rss[fmt] = peak_rss() if fresh else 0
    best = min(res, key=res.get)
    print(json.dumps({"version": torch.__version__, "median_s": res[best], "format": best,
                      "contiguous_s": res["contiguous"],
                      "channels_last_3d_s": res["channels_last_3d"],
                      "peak_rss_bytes": rss[best]}))


if __name__ == "__main__":
    main()
