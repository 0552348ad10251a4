#!/usr/bin/python3
"""peer_nn.py: vox's reference forward pass against PyTorch on the same nets and weights.

For each net: `vox infer --init --save-weights` writes seeded random weights (this also tests
their layout: PyTorch's Conv3d / ConvTranspose3d / BatchNorm3d shapes), the test randomises
the biases and batch-norm statistics with h5py, writes a random input, runs `vox infer`, and
compares with the same net built from torch.nn.functional in float64 (a small interpreter of
the spec format of docs/nets.md). Pass: max |vox - torch| / max(1, max |torch|) < 1e-4.

usage: peer_nn.py VOX_BINARY     (skips, exit 0, only when torch cannot be installed)
"""
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np

TOL = 1e-4
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def need_torch():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        pass
    if os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "python3-torch"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def vec(s):
    p = [int(v) for v in s.replace(",", "x").split("x")]
    return p * 3 if len(p) == 1 else p


def parse(text):
    """The spec as a list of (kind, name, inputs, out_channels, params)."""
    layers = []
    for line in text.splitlines():
        t = line.split("#")[0].split()
        if not t:
            continue
        kind, name, ins, ch, kv = t[0], t[1], [], None, {}
        i = 2
        while i < len(t):
            if t[i] == "->":
                ch = int(t[i + 1])
                i += 2
                continue
            if "=" in t[i]:
                k, v = t[i].split("=", 1)
                kv[k] = v
            else:
                ins.append(t[i])
            i += 1
        if kind == "softmax":
            kind, kv["fn"] = "act", "softmax"
        layers.append((kind, name, ins, ch, kv))
    return layers


def act(F, x, a):
    import torch
    return {"linear": lambda v: v, "relu": F.relu, "elu": F.elu, "sigmoid": torch.sigmoid,
            "tanh": torch.tanh, "softmax": lambda v: F.softmax(v, dim=1)}[a](x)


def torch_forward(text, weights_h5, inputs):
    """Runs the spec in float64 with torch.nn.functional; returns the outputs in order."""
    import torch
    import torch.nn.functional as F
    t, outs = {}, []
    w = h5py.File(weights_h5, "r")
    ins = iter(inputs)

    def p(name, what):
        return torch.from_numpy(w[name][what][...].astype(np.float64))

    for kind, name, src, ch, kv in parse(text):
        x = t[src[0]] if src else None
        if kind == "input":
            y = torch.from_numpy(next(ins).astype(np.float64))[None]
        elif kind == "conv":
            k, d = vec(kv["kernel"]), vec(kv.get("dilation", "1"))
            if kv.get("pad") == "same":
                tot = [(k[a] - 1) * d[a] for a in range(3)]
                x = F.pad(x, [v for a in (2, 1, 0) for v in (tot[a] // 2, tot[a] - tot[a] // 2)])
            b = p(name, "bias") if kv.get("bias", "yes") == "yes" else None
            y = F.conv3d(x, p(name, "weight"), b, dilation=d)
            if kv.get("bn") == "yes":
                y = F.batch_norm(y, p(name, "bn_mean"), p(name, "bn_var"), p(name, "bn_weight"),
                                 p(name, "bn_bias"), False, 0.0, float(kv.get("eps", 1e-5)))
            y = act(F, y, kv.get("act", "linear"))
        elif kind == "deconv":
            k = vec(kv["kernel"])
            b = p(name, "bias") if kv.get("bias", "yes") == "yes" else None
            y = act(F, F.conv_transpose3d(x, p(name, "weight"), b, stride=k),
                    kv.get("act", "linear"))
        elif kind == "pool":
            y = F.max_pool3d(x, vec(kv["window"]))
        elif kind == "maxfilter":
            y = F.max_pool3d(x, vec(kv["window"]), stride=1, dilation=vec(kv.get("dilation", "1")))
        elif kind == "upsample":
            y = F.interpolate(x, scale_factor=tuple(float(f) for f in vec(kv["factor"])),
                              mode="nearest")
        elif kind == "crop":
            if "to" in kv:
                lo = [(x.shape[2 + a] - t[kv["to"]].shape[2 + a]) // 2 for a in range(3)]
                sz = t[kv["to"]].shape[2:]
            else:
                lo = vec(kv["margin"])
                sz = [x.shape[2 + a] - 2 * lo[a] for a in range(3)]
            y = x[:, :, lo[0]:lo[0] + sz[0], lo[1]:lo[1] + sz[1], lo[2]:lo[2] + sz[2]]
        elif kind == "add":
            y = act(F, sum(t[s] for s in src), kv.get("act", "linear"))
        elif kind == "concat":
            y = torch.cat([t[s] for s in src], dim=1)
        elif kind == "act":
            y = act(F, x, kv["fn"])
        elif kind == "output":
            y = act(F, x, kv.get("act", "linear"))
            outs.append(y[0].numpy())
        t[name] = y
    return outs


TINY_RSUNET = """
input   raw   channels=1
conv    embed raw -> 4  kernel=1x5x5 pad=same act=elu
conv    d0a   embed -> 4 kernel=1x3x3 pad=same bn=yes act=elu
conv    d0b   d0a -> 4  kernel=3x3x3 pad=same bn=yes act=elu
conv    d0c   d0b -> 4  kernel=3x3x3 pad=same bn=yes
add     d0    d0a d0c act=elu
pool    p1    d0 window=1x2x2
conv    d1a   p1 -> 8   kernel=1x3x3 pad=same bn=yes act=elu
conv    d1b   d1a -> 8  kernel=3x3x3 pad=same bn=yes act=elu eps=1e-3
add     d1    d1a d1b act=elu
pool    p2    d1 window=1x2x2
conv    d2    p2 -> 12  kernel=3x3x3 pad=same bn=yes act=elu
deconv  u1    d2 -> 8   kernel=1x2x2
add     s1    u1 d1
conv    u1m   s1 -> 8   kernel=3x3x3 pad=same bn=yes act=elu
upsample q0   u1m factor=1x2x2
conv    u0    q0 -> 4   kernel=1x1x1
add     s0    u0 d0
conv    u0m   s0 -> 4   kernel=3x3x3 pad=same bn=yes act=elu
conv    affc  u0m -> 3  kernel=1x5x5 pad=same
output  aff   affc act=sigmoid
"""

TINY_N337 = """
input  raw channels=1
conv   c1  raw -> 6 kernel=2 act=relu
pool   p1  c1 window=2
conv   c2  p1 -> 6 kernel=3 act=relu
pool   p2  c2 window=2
conv   c3  p2 -> 6 kernel=3 act=relu
pool   p3  c3 window=2
conv   c4  p3 -> 6 kernel=3 act=relu
conv   c5  c4 -> 6 kernel=3 act=relu
conv   c6  c5 -> 6 kernel=3 act=relu
conv   c7  c6 -> 3 kernel=3 act=relu
output out c7
"""

EVERY_LAYER = """
input  raw channels=2
input  aux channels=1
conv   c1  raw -> 4 kernel=1x3x3 act=tanh
conv   c2  c1 -> 4  kernel=2x3x3 dilation=1x2x2 pad=same bn=yes eps=1e-3 act=elu
conv   a1  aux -> 4 kernel=1x3x3 bias=no act=relu
add    s   c2 a1 act=sigmoid
pool   p1  s window=1x2x2
maxfilter mf p1 window=2x2x2 dilation=1x1x1
upsample u1 mf factor=1x2x2
deconv d1  mf -> 3  kernel=1x2x2 act=relu
crop   k1  c2 to=u1
crop   k2  k1 margin=0x1x1
concat cat k1 u1 d1
conv   o1c cat -> 5 kernel=1 act=linear
softmax sm o1c
act    th  k2 fn=tanh
output o1  sm
output o2  th act=relu
"""


def run(vox, args):
    r = subprocess.run([vox, "infer", "--quiet", "--threads", "2"] + args, capture_output=True,
                       text=True)
    return r.returncode, r.stderr


def check_net(vox, tmp, name, text, patch, seed):
    spec = os.path.join(tmp, name + ".net")
    with open(spec, "w") as f:
        f.write(text)
    wpath, ipath, opath = (os.path.join(tmp, name + s) for s in ("_w.h5", "_in.h5", "_out.h5"))
    rc, err = run(vox, ["--net", spec, "--init", "msra", "--seed", str(seed),
                        "--save-weights", wpath])
    assert rc == 0, err
    rng = np.random.default_rng(seed)
    with h5py.File(wpath, "r+") as w:  # random biases and batch-norm statistics
        for layer in w:
            for p in w[layer]:
                d = w[layer][p]
                if p in ("bias", "bn_mean", "bn_bias"):
                    d[...] = rng.normal(0, 0.3, d.shape).astype(np.float32)
                elif p in ("bn_var", "bn_weight"):
                    d[...] = rng.uniform(0.5, 1.5, d.shape).astype(np.float32)
    inputs, args = [], []
    with h5py.File(ipath, "w") as f:
        for k, (kind, lname, _, _, kv) in enumerate(l for l in parse(text) if l[0] == "input"):
            c = int(kv["channels"])
            x = rng.uniform(0, 1, (c,) + tuple(patch)).astype(np.float32)
            f[lname] = x if c > 1 else x[0]
            inputs.append(x)
            args += ["--in", ipath + ":/" + lname]
    outs = [l[1] for l in parse(text) if l[0] == "output"]
    for o in outs:
        args += ["--out", opath + ":/" + o]
    rc, err = run(vox, ["--net", spec, "--weights", wpath] + args)
    assert rc == 0, name + ": " + err
    want = torch_forward(text, wpath, inputs)
    worst = 0.0
    with h5py.File(opath, "r") as f:
        for o, ref in zip(outs, want):
            got = f[o][...]
            assert got.dtype == np.float32 and got.shape == ref.shape, (name, got.shape, ref.shape)
            err = np.abs(got - ref).max() / max(1.0, np.abs(ref).max())
            worst = max(worst, err)
    print(f"{name:12s} patch {patch} outputs {[w.shape for w in want]} rel err {worst:.2e}")
    return worst < TOL


def check_errors(vox, tmp):
    spec = os.path.join(tmp, "bad.net")
    with open(spec, "w") as f:
        f.write("input raw channels=1\nconvv c raw -> 2 kernel=3\noutput o c\n")
    out = os.path.join(tmp, "never.h5")
    rc, err = run(vox, ["--net", spec, "--init", "msra", "--patch", "1,8,8", "--plan"])
    ok = rc == 1 and "bad.net:2:1: unknown layer type 'convv'" in err
    inp = os.path.join(tmp, "small.h5")
    with h5py.File(inp, "w") as f:
        f["raw"] = np.zeros((1, 50, 50), np.uint8)
    rc, err = run(vox, ["--net", os.path.join(ROOT, "nets", "n4.net"), "--init", "msra",
                        "--in", inp + ":/raw", "--out", out + ":/o"])
    ok = ok and rc == 1 and "smaller than the field of view 1x95x95" in err
    ok = ok and not os.path.exists(out)
    print("errors      ", "ok" if ok else "FAILED: " + err)
    return ok


def main():
    vox = sys.argv[1]
    if not need_torch():
        print("peer_nn: skipped: PyTorch (python3-torch) is not installed and cannot be")
        return 0
    import torch
    torch.set_num_threads(2)
    n4 = open(os.path.join(ROOT, "nets", "n4.net")).read()
    vd2d3d = open(os.path.join(ROOT, "nets", "vd2d3d.net")).read()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        ok &= check_net(vox, tmp, "n4", n4, (1, 97, 98), 1)
        ok &= check_net(vox, tmp, "vd2d3d", vd2d3d, (5, 86, 85), 2)
        ok &= check_net(vox, tmp, "rsunet_tiny", TINY_RSUNET, (4, 16, 24), 3)
        ok &= check_net(vox, tmp, "n337_tiny", TINY_N337, (85, 93, 85), 4)
        ok &= check_net(vox, tmp, "every_layer", EVERY_LAYER, (3, 14, 18), 5)
        ok &= check_errors(vox, tmp)
    print("peer_nn:", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
