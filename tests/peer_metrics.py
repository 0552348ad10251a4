"""peer_metrics.py: `vox eval` against scikit-image's adapted_rand_error and
variation_of_information on random labelings, and against a numpy oracle for Rand split/merge
and the label-0 conventions skimage lacks (seg 0 as singletons, seg 0 ignored).

Run as: /usr/bin/python3 tests/peer_metrics.py path/to/vox
Volumes go to .npy (numpy) and .h5 (h5py) files; vox reads them in slabs (--slab 2 in some
cases, so the block-by-block path is the one compared). Tolerance 1e-9.
"""
import json
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
from skimage.metrics import adapted_rand_error, variation_of_information

TOL = 1e-9
VOX = sys.argv[1]
failures = 0


def check(ok, what):
    global failures
    if not ok:
        failures += 1
        print("FAIL", what)


def vox_eval(seg_spec, gt_spec, *extra):
    r = subprocess.run([VOX, "eval", "--seg", seg_spec, "--gt", gt_spec, "--json", "--quiet",
                        *extra], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("vox eval failed (%d): %s" % (r.returncode, r.stderr))
    return json.loads(r.stdout)


def rand_oracle(seg, gt):
    """Rand split and merge over pairs of distinct voxels, all voxels counted."""
    pairs = np.stack([seg.ravel(), gt.ravel()], axis=1)
    _, n = np.unique(pairs, axis=0, return_counts=True)
    _, s = np.unique(seg, return_counts=True)
    _, t = np.unique(gt, return_counts=True)
    p = lambda x: float(np.sum(x.astype(np.float64) * (x - 1)))
    pn, ps, pt = p(n), p(s), p(t)
    return (pn / pt if pt else 1.0), (pn / ps if ps else 1.0)


def expected(seg, gt, keep_gt0=False, seg0="label"):
    """The scores under vox's conventions, through skimage on edited labels."""
    seg = seg.astype(np.uint64).copy()
    gt = gt.astype(np.uint64).copy()
    keep = np.ones(seg.shape, bool) if keep_gt0 else gt != 0
    if seg0 == "ignore":
        keep &= seg != 0
    if seg0 == "singletons":
        zero = seg == 0
        seg[zero] = seg.max() + 1 + np.arange(int(zero.sum()), dtype=np.uint64)
    seg, gt = seg[keep], gt[keep]
    if seg.size == 0:
        return None
    # skimage's contingency table is dense in label values: compact the labels first
    seg = np.unique(seg, return_inverse=True)[1].reshape(seg.shape)
    gt = np.unique(gt, return_inverse=True)[1].reshape(gt.shape)
    are = adapted_rand_error(gt, seg, ignore_labels=())[0]
    split, merge = variation_of_information(gt, seg, ignore_labels=())
    rs, rm = rand_oracle(seg, gt)
    return dict(adapted_rand_error=are, voi_split=split, voi_merge=merge, rand_split=rs,
                rand_merge=rm, voxels=int(seg.size), n_seg=len(np.unique(seg)),
                n_gt=len(np.unique(gt)))


def compare(got, want, what):
    for k, v in want.items():
        if isinstance(v, int):
            check(got[k] == v, "%s: %s = %s, expected %s" % (what, k, got[k], v))
        else:
            check(abs(got[k] - v) <= TOL, "%s: %s = %.15g, expected %.15g" % (what, k, got[k], v))


def random_labels(rng, shape, labels, runs):
    """Labels in runs along x (like segmentations) or independent voxels."""
    v = rng.integers(0, labels, size=shape)
    if runs:
        change = rng.random(shape) < 0.3
        idx = np.where(change, np.arange(shape[-1]), 0)
        idx = np.maximum.accumulate(idx, axis=-1)
        v = np.take_along_axis(v, idx, axis=-1)
    return v


def test_random(tmp):
    rng = np.random.default_rng(1234)
    dtypes = [np.uint64, np.uint32, np.uint16, np.uint8, np.int32]
    for case in range(12):
        shape = tuple(int(x) for x in rng.integers(1, 14, size=3))
        seg = random_labels(rng, shape, int(rng.integers(2, 40)), case % 2 == 0)
        gt = random_labels(rng, shape, int(rng.integers(2, 12)), case % 3 != 0)
        sd, gd = dtypes[case % 5], dtypes[(case + 2) % 5]
        seg_path, gt_path = os.path.join(tmp, "s%d.npy" % case), os.path.join(tmp, "g%d.h5" % case)
        np.save(seg_path, seg.astype(sd))
        with h5py.File(gt_path, "w") as f:
            f.create_dataset("labels", data=gt.astype(gd))
        gt_spec = gt_path + ":/labels"
        slab = ["--slab", "2"] if case % 2 else []
        for keep, seg0 in [(False, "label"), (True, "label"), (False, "singletons"),
                           (False, "ignore"), (True, "singletons")]:
            flags = ["--keep-gt0" if keep else "--ignore-gt0", "--seg0", seg0] + slab
            want = expected(seg, gt, keep, seg0)
            got = vox_eval(seg_path, gt_spec, *flags)
            what = "case %d %s %s" % (case, shape, " ".join(flags))
            if want is None:
                check(got["voxels"] == 0 and got["adapted_rand_error"] == 0, what + ": empty")
            else:
                compare(got, want, what)
        # the plain skimage call, default conventions (gt 0 ignored, seg 0 a label)
        got = vox_eval(seg_path, gt_spec)
        if np.any(gt != 0):
            are = adapted_rand_error(gt, seg, ignore_labels=(0,))[0]
            split, merge = variation_of_information(gt, seg, ignore_labels=(0,))
            compare(got, dict(adapted_rand_error=are, voi_split=split, voi_merge=merge),
                    "case %d default" % case)
        # the largest errors' VOI shares add up to the totals when all are listed
        got = vox_eval(seg_path, gt_spec, "--top", "100000")
        check(abs(sum(e["voi"] for e in got["top_splits"]) - got["voi_split"]) <= TOL,
              "case %d: split shares" % case)
        check(abs(sum(e["voi"] for e in got["top_merges"]) - got["voi_merge"]) <= TOL,
              "case %d: merge shares" % case)


def test_errors(tmp):
    a, b = os.path.join(tmp, "a.npy"), os.path.join(tmp, "b.npy")
    np.save(a, np.ones((3, 4, 5), np.uint64))
    np.save(b, np.ones((3, 4, 6), np.uint64))
    r = subprocess.run([VOX, "eval", "--seg", a, "--gt", b], capture_output=True, text=True)
    check(r.returncode == 1, "shape mismatch: exit %d, expected 1" % r.returncode)
    check("shape mismatch" in r.stderr and r.stderr.count("\n") == 1,
          "shape mismatch message: %r" % r.stderr)
    r = subprocess.run([VOX, "eval", "--seg", a, "--gt", a, "--seg0", "zero"],
                       capture_output=True, text=True)
    check(r.returncode == 2 and "--seg0 'zero'" in r.stderr, "bad --seg0: %r" % r.stderr)
    r = subprocess.run([VOX, "eval", "--seg", a], capture_output=True, text=True)
    check(r.returncode == 2 and "--gt" in r.stderr, "missing --gt: %r" % r.stderr)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        test_random(tmp)
        test_errors(tmp)
    print("peer_metrics: %d failures" % failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
