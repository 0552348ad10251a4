#!/usr/bin/python3
"""peer_train.py: vox's training gradients against PyTorch autograd, whole nets.

For each small net (every layer kind appears in one): random weights (`vox infer --init`,
biases randomised with h5py), a random raw volume and blocky labels exactly one patch large,
then ONE step of `vox train --optimizer sgd --lr 1 --momentum 0 --rebalance none --no-flips`,
so the weights move by exactly minus the gradient: g_vox = w0 - w1. The same net, loss and
targets (vox's conventions: affinity channel c links v and v - e_c inside the volume; boundary =
label 0 or a differently labelled 6-neighbour) are built in float64 torch and differentiated by
autograd. Pass: max |g_vox - g_torch| <= 1e-3 * max |g_torch| + 1e-7 for every parameter
(1e-5 relative for the running statistics).

Batch norm (bn=yes) runs in training mode on both sides: batch statistics, and the running
statistics updated with momentum 0.1 and the unbiased variance; they start random, and the
saved bn_mean/bn_var must equal torch's updated running_mean/running_var. With --accumulate K
every patch is its own batch: torch runs the forward K times on the same patch (no
augmentation), updating the running statistics K times. Then `vox infer` with the trained
weights (batch norm folded) must equal torch's eval-mode forward (running statistics).

usage: peer_train.py VOX_BINARY     (skips, exit 0, only when torch cannot be imported)
"""
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_nn import need_torch, parse, torch_forward, vec  # noqa: E402

NETS = [
    ("affinity", "bce", (3, 10, 10), 1, """
input raw channels=1
conv c1 raw -> 5 kernel=1x3x3 act=elu
conv c2 c1 -> 4 kernel=2x3x3 dilation=1x2x1 act=tanh
conv c3 c2 -> 3 kernel=1
output aff c3 act=sigmoid
"""),
    ("affinity", "square", (2, 12, 12), 1, """
input raw channels=1
conv c1 raw -> 4 kernel=1x3x3 act=relu
pool p1 c1 window=1x2x2
conv c2 p1 -> 4 kernel=1x3x3 pad=same act=elu
deconv d1 c2 -> 4 kernel=1x2x2 act=tanh
upsample u1 c2 factor=1x2x2
crop k1 c1 to=d1
concat cat k1 d1
add s u1 d1 act=elu
concat cat2 cat s
maxfilter m cat2 window=1x2x2 dilation=1x1x2
conv c3 m -> 3 kernel=2x1x1 bias=no
output aff c3 act=sigmoid
"""),
    ("boundary", "softmax", (2, 11, 9), 1, """
input raw channels=1
conv c1 raw -> 3 kernel=1x3x3 act=elu
conv c2 c1 -> 3 kernel=1x3x3 pad=same act=sigmoid
softmax sm c2
crop k c1 margin=0x1x1
conv c3 sm -> 3 kernel=1x3x3
add a c3 k
conv c4 a -> 2 kernel=2x1x1
output b c4 act=softmax
"""),
    ("affinity", "bce", (3, 10, 11), 2, """
input raw channels=1
conv c1 raw -> 5 kernel=1x3x3 bn=yes act=elu
conv c2 c1 -> 3 kernel=2x3x3 bias=no bn=yes eps=1e-3 act=tanh
conv c3 c2 -> 3 kernel=1 bn=yes
output aff c3 act=sigmoid
"""),
    ("boundary", "softmax", (2, 12, 10), 1, """
input raw channels=1
conv c1 raw -> 3 kernel=1x3x3 pad=same bn=yes act=relu
pool p1 c1 window=1x2x2
conv c2 p1 -> 4 kernel=1x3x3 pad=same bias=no bn=yes act=elu
upsample u1 c2 factor=1x2x2
concat cat c1 u1
conv c3 cat -> 2 kernel=1x3x3
output b c3 act=softmax
"""),
]


def act(F, torch, x, a):
    return {"linear": lambda v: v, "relu": F.relu, "elu": F.elu, "sigmoid": torch.sigmoid,
            "tanh": torch.tanh, "softmax": lambda v: F.softmax(v, dim=1)}[a](x)


def forward(text, P, R, raw):
    """float64 forward, batch norm in training mode (R: running statistics, updated in place);
    returns (logits of the output layer, the output layer's act)."""
    import torch
    import torch.nn.functional as F
    t = {}
    for kind, name, src, ch, kv in parse(text):
        x = t[src[0]] if src else None
        a = kv.get("act", "linear")
        if kind == "input":
            y = raw
        elif kind == "conv":
            k, d = vec(kv["kernel"]), vec(kv.get("dilation", "1"))
            if kv.get("pad") == "same":
                tot = [(k[i] - 1) * d[i] for i in range(3)]
                x = F.pad(x, [v for i in (2, 1, 0) for v in (tot[i] // 2, tot[i] - tot[i] // 2)])
            y = F.conv3d(x, P[name, "weight"], P.get((name, "bias")), dilation=d)
            if kv.get("bn") == "yes":
                y = F.batch_norm(y, R[name, "bn_mean"], R[name, "bn_var"], P[name, "bn_weight"],
                                 P[name, "bn_bias"], True, 0.1, float(kv.get("eps", 1e-5)))
            y = act(F, torch, y, a)
        elif kind == "deconv":
            y = act(F, torch, F.conv_transpose3d(x, P[name, "weight"], P.get((name, "bias")),
                                                 stride=vec(kv["kernel"])), a)
        elif kind == "pool":
            y = F.max_pool3d(x, vec(kv["window"]))
        elif kind == "maxfilter":
            y = F.max_pool3d(x, vec(kv["window"]), stride=1, dilation=vec(kv.get("dilation", "1")))
        elif kind == "upsample":
            y = F.interpolate(x, scale_factor=tuple(float(f) for f in vec(kv["factor"])),
                              mode="nearest")
        elif kind == "crop":
            if "to" in kv:
                lo = [(x.shape[2 + i] - t[kv["to"]].shape[2 + i]) // 2 for i in range(3)]
                sz = t[kv["to"]].shape[2:]
            else:
                lo = vec(kv["margin"])
                sz = [x.shape[2 + i] - 2 * lo[i] for i in range(3)]
            y = x[:, :, lo[0]:lo[0] + sz[0], lo[1]:lo[1] + sz[1], lo[2]:lo[2] + sz[2]]
        elif kind == "add":
            y = act(F, torch, sum(t[s] for s in src), a)
        elif kind == "concat":
            y = torch.cat([t[s] for s in src], dim=1)
        elif kind == "act":
            y = act(F, torch, x, kv["fn"])
        elif kind == "output":
            return x, a
        t[name] = y


def targets(target, labels, off, out):
    """vox's targets and masks for the output box (off, out) of the labels volume."""
    Z, Y, X = labels.shape
    if target == "affinity":
        t = np.zeros((3,) + out)
        m = np.zeros((3,) + out)
        for c in range(3):
            e = [0, 0, 0]
            e[c] = 1
            for z in range(out[0]):
                for y in range(out[1]):
                    for x in range(out[2]):
                        v = (off[0] + z, off[1] + y, off[2] + x)
                        u = (v[0] - e[0], v[1] - e[1], v[2] - e[2])
                        if min(u) < 0:
                            continue
                        m[c, z, y, x] = 1
                        t[c, z, y, x] = labels[v] != 0 and labels[v] == labels[u]
        return t, m
    b = np.zeros(out)
    for z in range(out[0]):
        for y in range(out[1]):
            for x in range(out[2]):
                v = (off[0] + z, off[1] + y, off[2] + x)
                bd = labels[v] == 0
                for d in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)):
                    u = (v[0] + d[0], v[1] + d[1], v[2] + d[2])
                    if all(0 <= u[i] < labels.shape[i] for i in range(3)) and labels[u] != labels[v]:
                        bd = True
                b[z, y, x] = bd
    return np.stack([b, 1 - b]), np.ones((2,) + out)


def loss_fn(torch, F, loss, logits, a, t, m):
    t, m = torch.from_numpy(t)[None], torch.from_numpy(m)[None]
    if loss == "bce":
        return (F.binary_cross_entropy_with_logits(logits, t, reduction="none") * m).sum() / m.sum()
    if loss == "softmax":
        lp = F.log_softmax(logits, dim=1)
        return (-(t * lp).sum(dim=1) * m[:, 0]).sum() / m[:, 0].sum()
    y = act(F, torch, logits, a)
    return (((y - t) ** 2) * m).sum() / m.sum()


def check(vox, d, k, target, loss, shape, acc, text):
    import torch
    import torch.nn.functional as F
    rng = np.random.default_rng(10 + k)
    net, w0, w1, data = (os.path.join(d, f"{k}{s}") for s in (".net", "w0.h5", "w1.h5", "d.h5"))
    open(net, "w").write(text)
    subprocess.run([vox, "infer", "--net", net, "--init", "uniform", "--seed", str(k + 3),
                    "--save-weights", w0, "--quiet"], check=True)
    with h5py.File(w0, "r+") as f:
        for layer in f:
            for p, lo, hi in (("bias", -0.1, 0.1), ("bn_mean", -0.3, 0.3), ("bn_var", 0.5, 1.5),
                              ("bn_weight", 0.5, 1.5), ("bn_bias", -0.3, 0.3)):
                if p in f[layer]:
                    f[layer][p][...] = rng.uniform(lo, hi, f[layer][p].shape)
    raw = rng.uniform(0, 1, shape).astype(np.float32)
    zz, yy, xx = np.indices(shape)
    labels = (1 + (yy // 3 + 2 * (xx // 4) + zz) % 4).astype(np.uint32)
    labels[rng.uniform(0, 1, shape) < 0.05] = 0
    with h5py.File(data, "w") as f:
        f["raw"], f["labels"] = raw, labels
    r = subprocess.run([vox, "train", "--net", net, "--weights", w0, "--data",
                        data + ":/raw,/labels", "--patch", ",".join(map(str, shape)),
                        "--iters", "1", "--accumulate", str(acc), "--optimizer", "sgd", "--lr", "1", "--momentum", "0",
                        "--rebalance", "none", "--no-flips", "--target", target, "--loss", loss,
                        "--out", w1, "--checkpoint-every", "0", "--quiet", "--threads", "2"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print(f"net {k}: vox train failed: {r.stderr}")
        return False
    a0, a1 = h5py.File(w0, "r"), h5py.File(w1, "r")
    running = ("bn_mean", "bn_var")
    P = {(l, p): torch.tensor(a0[l][p][...].astype(np.float64), requires_grad=True)
         for l in a0 for p in a0[l] if p not in running}
    R = {(l, p): torch.tensor(a0[l][p][...].astype(np.float64))
         for l in a0 for p in a0[l] if p in running}
    for _ in range(acc):  # each patch its own batch; gradients averaged
        logits, a = forward(text, P, R, torch.from_numpy(raw.astype(np.float64))[None, None])
        out = tuple(logits.shape[2:])
        off = tuple((shape[i] - out[i]) // 2 for i in range(3))
        t, m = targets(target, labels, off, out)
        (loss_fn(torch, F, loss, logits, a, t, m) / acc).backward()
    ok = True
    for (l, p), w in list(P.items()) + list(R.items()):
        rel = 1e-3
        if p in running:  # the new running statistics, to f32 rounding
            g_vox, g, rel = a1[l][p][...].astype(np.float64), w.numpy(), 1e-5
        else:
            g_vox = a0[l][p][...].astype(np.float64) - a1[l][p][...].astype(np.float64)
            g = w.grad.numpy()
        err = np.abs(g_vox - g).max()
        if not err <= rel * np.abs(g).max() + 1e-7:
            print(f"net {k} ({target}/{loss}): {l}/{p}: max |vox - torch| {err:.3g}, "
                  f"max |torch| {np.abs(g).max():.3g}")
            ok = False
    if R:
        ok = infer_check(vox, d, k, text, raw, w1) and ok
    print(f"net {k} ({target}/{loss}, {len(P) + len(R)} parameters, accumulate {acc}): "
          f"{'ok' if ok else 'FAIL'}")
    return ok


def infer_check(vox, d, k, text, raw, w1):
    """`vox infer` with the trained weights against torch's eval-mode forward."""
    net, ip, op = (os.path.join(d, f"{k}{s}") for s in (".net", "in.h5", "out.h5"))
    with h5py.File(ip, "w") as f:
        f["raw"] = raw
    outs = [l[1] for l in parse(text) if l[0] == "output"]
    r = subprocess.run([vox, "infer", "--net", net, "--weights", w1, "--in", ip + ":/raw",
                        "--out", op + ":/" + outs[0], "--quiet", "--threads", "2"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print(f"net {k}: vox infer failed: {r.stderr}")
        return False
    want = torch_forward(text, w1, [raw[None]])[0]
    got = h5py.File(op, "r")[outs[0]][...]
    err = np.abs(got - want).max() if got.shape == want.shape else np.inf
    if not err <= 1e-5:
        print(f"net {k}: vox infer vs torch eval mode: max error {err:.3g} (shapes {got.shape}, "
              f"{want.shape})")
        return False
    return True


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    if not need_torch():
        print("skip: torch is not available")
        return 0
    with tempfile.TemporaryDirectory() as d:
        ok = [check(sys.argv[1], d, k, *case) for k, case in enumerate(NETS)]
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
