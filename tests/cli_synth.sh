#!/bin/bash
# cli_synth.sh: `vox synth` end to end: writes a file, twice with identical bytes (also with
# another thread count), rejects bad options with exit 2 and no output, and (when Debian's
# python3 has h5py) checks the datasets, shapes, dtypes, attributes and label/affinity
# consistency.
set -u
VOX=$1
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$VOX" synth --help | grep -q -- '--preset' || fail "--help lacks --preset"
"$VOX" synth --shape 8,40,36 --seed 3 --out "$T/a.h5" --quiet --threads 1 || fail "run 1"
[ -s "$T/a.h5" ] || fail "no output file"
"$VOX" synth --shape 8,40,36 --seed 3 --out "$T/b.h5" --quiet --threads 2 || fail "run 2"
cmp -s "$T/a.h5" "$T/b.h5" || fail "two runs differ"
"$VOX" synth --shape 8,40,36 --seed 4 --out "$T/c.h5" --quiet --preset noisy || fail "run 3"
cmp -s "$T/a.h5" "$T/c.h5" && fail "different seeds give the same file"
out=$("$VOX" synth --shape 4,20,20 --out "$T/d.h5" --threads 2) || fail "run 4"
echo "$out" | grep -q "cells" || fail "summary lacks the cell count"

bad() {
    "$VOX" synth "$@" --out "$T/bad.h5" --quiet 2>"$T/err"
    rc=$?
    [ $rc -eq 2 ] || fail "'$*' exited $rc, expected 2"
    [ -e "$T/bad.h5" ] && fail "'$*' left an output file"
    grep -q "error" "$T/err" || fail "'$*' printed no error"
}
bad --shape 0,10,10
bad --shape 4,10
bad --anisotropy 0
bad --noise -1
bad --preset sharp
bad --frobnicate 3
bad --seed
"$VOX" synth --shape 4,8,8 --quiet 2>/dev/null; [ $? -eq 2 ] || fail "missing --out"
"$VOX" synth --shape 4,8,8 --out "$T/x.npy" 2>/dev/null; [ $? -eq 2 ] || fail ".npy accepted"
[ -e "$T/x.npy" ] && fail ".npy left a file"

if /usr/bin/python3 -c 'import h5py, numpy' 2>/dev/null; then
    /usr/bin/python3 - "$T/c.h5" <<'PY' || fail "h5py checks"
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
assert sorted(f.keys()) == ["affinities", "affinities_noisy", "labels", "raw"], list(f.keys())
raw, lab, aff, deg = (f[k] for k in ["raw", "labels", "affinities", "affinities_noisy"])
assert raw.shape == (8, 40, 36) and raw.dtype == np.uint8
assert lab.shape == (8, 40, 36) and lab.dtype == np.uint64
assert aff.shape == (3, 8, 40, 36) and aff.dtype == np.uint8
assert deg.shape == aff.shape and deg.dtype == np.uint8
for d in (raw, lab, aff, deg):
    assert np.allclose(d.attrs["resolution"], [40, 4, 4]), d.attrs["resolution"]
L, A = lab[...], aff[...]
_, first = np.unique(L.ravel(), return_index=True)
assert L.min() == 1 and np.all(np.diff(first) > 0) and len(first) == L.max()
for c in range(3):
    want = np.zeros(L.shape, np.uint8)
    sl = [slice(None)] * 3; sl[c] = slice(1, None)
    pr = [slice(None)] * 3; pr[c] = slice(None, -1)
    want[tuple(sl)] = np.where(L[tuple(sl)] == L[tuple(pr)], 255, 0)
    assert np.array_equal(A[c], want), c
PY
fi
echo "cli_synth: ok"
