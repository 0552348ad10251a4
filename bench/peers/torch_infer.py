"""PyTorch peer of `vox bench infer-*`: one convolution, or a whole net built from a vox spec.

  torch_infer.py conv C K D H W KZ KY KX PAD THREADS RUNS
      torch.nn.functional.conv3d (bias, no activation) on a (1, C, D, H, W) input, timed in
      both memory formats (contiguous and channels_last_3d); the faster one is reported.
  torch_infer.py net SPEC PZ PY PX THREADS RUNS
      the net of the vox spec (docs/nets.md) as torch modules, random weights, batch norm in
      eval mode, on a (1, C, PZ, PY, PX) patch, in both memory formats.

Prints one JSON line: version, median_s (the faster format), format, and both medians.
Each timing: one warm-up call, then RUNS timed calls under torch.inference_mode; the median.
"""
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def vec(s):
    v = [int(t) for t in s.replace(",", "x").split("x")]
    return v * 3 if len(v) == 1 else v


ACTS = {
    "linear": lambda x: x,
    "relu": F.relu,
    "elu": F.elu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softmax": lambda x: torch.softmax(x, dim=1),
}


class SpecNet(torch.nn.Module):
    """The layers of a spec, run in file order; every statement names its output tensor."""

    def __init__(self, text):
        super().__init__()
        self.steps, self.inputs, self.outputs = [], [], []
        self.mods = torch.nn.ModuleDict()
        ch = {}
        for raw in text.splitlines():
            words = raw.split("#", 1)[0].split()
            if not words:
                continue
            kind, name, rest = words[0], words[1], words[2:]
            kv = dict(w.split("=", 1) for w in rest if "=" in w)
            ins = [w for w in rest if "=" not in w and w != "->"]
            out_c = None
            if "->" in rest:
                out_c = int(rest[rest.index("->") + 1])
                ins = ins[: rest.index("->")]
            if kind == "input":
                ch[name] = int(kv["channels"])
                self.inputs.append(name)
                continue
            key = name.replace(".", "_")
            if kind == "conv":
                dil = vec(kv.get("dilation", "1"))
                pad = "same" if kv.get("pad", "valid") == "same" else 0
                m = torch.nn.Conv3d(ch[ins[0]], out_c, vec(kv["kernel"]), padding=pad,
                                    dilation=dil, bias=kv.get("bias", "yes") == "yes")
                seq = [m]
                if kv.get("bn", "no") == "yes":
                    seq.append(torch.nn.BatchNorm3d(out_c, eps=float(kv.get("eps", "1e-5"))))
                self.mods[key] = torch.nn.Sequential(*seq)
                ch[name] = out_c
            elif kind == "deconv":
                k = vec(kv["kernel"])
                self.mods[key] = torch.nn.ConvTranspose3d(ch[ins[0]], out_c, k, stride=k,
                                                          bias=kv.get("bias", "yes") == "yes")
                ch[name] = out_c
            elif kind == "concat":
                ch[name] = sum(ch[i] for i in ins)
            else:
                ch[name] = ch[ins[0]]
            if kind == "output":
                self.outputs.append(name)
            self.steps.append((kind, name, key, ins, kv))

    def step(self, kind, key, x, kv):
        act = ACTS[kv.get("act", kv.get("fn", "linear"))]
        if kind in ("conv", "deconv"):
            return act(self.mods[key](x[0]))
        if kind == "pool":
            w = vec(kv["window"])
            return F.max_pool3d(x[0], w, stride=w)
        if kind == "maxfilter":
            return F.max_pool3d(x[0], vec(kv["window"]), stride=1,
                                dilation=vec(kv.get("dilation", "1")))
        if kind == "upsample":
            f = vec(kv["factor"])
            return x[0].repeat_interleave(f[0], 2).repeat_interleave(f[1], 3) \
                       .repeat_interleave(f[2], 4)
        if kind == "add":
            return act(sum(x[1:], x[0]))
        if kind == "concat":
            return torch.cat(x, dim=1)
        if kind == "softmax":
            return torch.softmax(x[0], dim=1)
        return act(x[0])  # act, output

    def forward(self, *inputs):
        t = dict(zip(self.inputs, inputs))
        for kind, name, key, ins, kv in self.steps:
            if kind == "crop":
                src = t[ins[0]]
                if "to" in kv:
                    ref = t[kv["to"]].shape[2:]
                    lo = [(a - b) // 2 for a, b in zip(src.shape[2:], ref)]
                    hi = [l + b for l, b in zip(lo, ref)]
                else:
                    m = vec(kv["margin"])
                    lo = m
                    hi = [a - b for a, b in zip(src.shape[2:], m)]
                t[name] = src[:, :, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            else:
                t[name] = self.step(kind, key, [t[i] for i in ins], kv)
        return [t[o] for o in self.outputs]


def timed(fn, runs):
    fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    mode = sys.argv[1]
    torch.manual_seed(0)
    res = {}
    with torch.inference_mode():
        if mode == "conv":
            c, k, d, h, w, kz, ky, kx = (int(a) for a in sys.argv[2:10])
            pad = "same" if sys.argv[10] == "same" else 0
            threads, runs = int(sys.argv[11]), int(sys.argv[12])
            torch.set_num_threads(threads)
            wt = torch.randn(k, c, kz, ky, kx) * 0.1
            b = torch.randn(k)
            x = torch.rand(1, c, d, h, w)
            for fmt in ("contiguous", "channels_last_3d"):
                mf = getattr(torch, fmt + "_format" if fmt == "contiguous" else fmt)
                xx, ww = x.to(memory_format=mf), wt.to(memory_format=mf)
                res[fmt] = timed(lambda: F.conv3d(xx, ww, b, padding=pad), runs)
        else:
            spec = open(sys.argv[2]).read()
            patch = [int(a) for a in sys.argv[3:6]]
            threads, runs = int(sys.argv[6]), int(sys.argv[7])
            torch.set_num_threads(threads)
            net = SpecNet(spec).eval()
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm3d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
            chans = []
            for raw in spec.splitlines():
                words = raw.split("#", 1)[0].split()
                if words and words[0] == "input":
                    chans.append(int(dict(w.split("=", 1) for w in words[2:] if "=" in w)
                                     ["channels"]))
            xs = [torch.rand(1, c, *patch) for c in chans]
            for fmt in ("contiguous", "channels_last_3d"):
                mf = getattr(torch, fmt + "_format" if fmt == "contiguous" else fmt)
                n2 = net.to(memory_format=mf)
                xx = [x.to(memory_format=mf) for x in xs]
                res[fmt] = timed(lambda: n2(*xx), runs)
    best = min(res, key=res.get)
    print(json.dumps({"version": torch.__version__, "median_s": res[best], "format": best,
                      "contiguous_s": res["contiguous"],
                      "channels_last_3d_s": res["channels_last_3d"]}))


if __name__ == "__main__":
    main()
