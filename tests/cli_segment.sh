#!/bin/bash
# cli_segment.sh: `vox segment` end to end on a synthetic volume: the true affinities give back
# the ground truth exactly (VOI 0, adapted Rand error 0); degraded affinities cut at several
# thresholds give nested segmentations; a re-cut from the stored history equals the direct
# output; 1 and 2 threads give identical files; bad inputs exit non-zero and leave no file.
set -u
VOX=$1
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
PY=/usr/bin/python3

"$VOX" segment --help | grep -q -- '--thresholds' || fail "--help lacks --thresholds"
"$VOX" segment --help | grep -q '1 - score < t' || fail "--help lacks the threshold meaning"
"$VOX" synth --shape 16,64,64 --cell-size 100 --out "$T/s.h5" --quiet || fail "synth"

# True affinities: the ground truth exactly (no dust: small true cells must survive).
"$VOX" segment --aff "$T/s.h5:/affinities" --out "$T/t.h5:/seg" --dust 0 --thresholds 0.5 \
    --quiet || fail "segment true affinities"
j=$("$VOX" eval --seg "$T/t.h5:/seg" --gt "$T/s.h5:/labels" --json) || fail "eval true"
echo "$j" | grep -q '"adapted_rand_error":0,' || fail "true affinities: $j"
echo "$j" | grep -q '"voi":0,' || fail "true affinities: $j"

# Degraded affinities at several thresholds, 1 and 2 threads.
out=$("$VOX" segment --aff "$T/s.h5:/affinities_smooth" --out "$T/a.h5:/seg" \
    --thresholds 0.1,0.3,0.5 --threads 1) || fail "segment smooth"
for w in watershed "size merge" "region graph" "single linkage" agglomeration write basins Mvox/s; do
    echo "$out" | grep -q "$w" || fail "output lacks '$w'"
done
"$VOX" segment --aff "$T/s.h5:/affinities_smooth" --out "$T/b.h5:/seg" \
    --thresholds 0.1,0.3,0.5 --threads 2 --quiet || fail "segment smooth, 2 threads"
# Re-cut from the stored base and history.
"$VOX" segment --from "$T/a.h5:/seg_base" --history "$T/a.h5:/seg_merges" \
    --thresholds 0.3 --out "$T/r.h5:/cut" --quiet || fail "re-cut"
j=$("$VOX" eval --seg "$T/r.h5:/cut" --gt "$T/a.h5:/seg_0.30" --json --keep-gt0) || fail "eval"
echo "$j" | grep -q '"voi":0,' || fail "re-cut differs from the direct cut: $j"
# A uint8 boundary map (the raw image, membranes dark: --inside) works; a u64 one does not.
"$VOX" segment --boundary "$T/s.h5:/raw" --inside --out "$T/x.h5:/seg" --quiet ||
    fail "boundary map"
"$VOX" segment --boundary "$T/s.h5:/labels" --out "$T/y.h5:/seg" --quiet 2>/dev/null &&
    fail "u64 boundary map accepted"

if $PY -c 'import h5py, numpy' 2>/dev/null; then
    $PY - "$T" <<'PY' || fail "h5py checks"
import sys, h5py, numpy as np
T = sys.argv[1]
a, b, r = (h5py.File(f"{T}/{n}.h5", "r") for n in "abr")
names = ["seg_0.10", "seg_0.30", "seg_0.50", "seg_base", "seg_merges", "seg_merges_scores"]
assert sorted(a.keys()) == names, list(a.keys())
for k in names:
    assert np.array_equal(a[k][...], b[k][...]), f"1 vs 2 threads differ in {k}"
assert np.array_equal(r["cut"][...], a["seg_0.30"][...])
assert a["seg_0.30"].dtype == np.uint64 and a["seg_base"].dtype == np.uint32
assert np.allclose(a["seg_0.30"].attrs["resolution"], [400, 40, 40]) or \
    np.allclose(a["seg_0.30"].attrs["resolution"], a["seg_base"].attrs["resolution"])
assert "dust=200" in a["seg_0.30"].attrs["parameters"]
m = a["seg_merges"][...]
assert m.ndim == 2 and m.shape[1] == 3 and a["seg_merges_scores"].shape == (m.shape[0],)
base = a["seg_base"][...].astype(np.uint64)
# nesting: each finer segment lies inside one coarser segment; 0 stays 0
levels = [base] + [a[k][...] for k in names[:3]]
for fine, coarse in zip(levels, levels[1:]):
    assert np.array_equal(fine == 0, coarse == 0)
    pairs = np.unique(np.stack([fine.ravel(), coarse.ravel()]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1], "cuts do not nest"
    assert len(np.unique(coarse)) <= len(np.unique(fine))
PY
fi

# Float affinities k / 255 give the segmentation of their uint8 twin, however they are stored
# (gzip with the shuffle in chunks of 4 planes: read a slab at a time and inflated on the
# threads; gzip alone; with a checksum filter, which libhdf5 undoes itself; contiguous).
if $PY -c 'import h5py, numpy' 2>/dev/null; then
    $PY - "$T" <<'PY' || fail "making float twins"
import sys, h5py, numpy as np
T = sys.argv[1]
with h5py.File(f"{T}/s.h5", "r") as f:
    q = np.rint(np.clip(f["affinities_smooth"][...], 0, 1) * 255).astype(np.uint8)
a = q.astype(np.float32) / np.float32(255)
with h5py.File(f"{T}/tw.h5", "w") as f:
    f["u8"] = q
    f.create_dataset("shuf", data=a, chunks=(3, 4, 16, 16), compression="gzip", shuffle=True)
    f.create_dataset("gz", data=a, chunks=(1, 5, 64, 7), compression="gzip")
    f.create_dataset("f32", data=a, chunks=(3, 4, 16, 16), compression="gzip", fletcher32=True)
    f["flat"] = a
PY
    for d in u8 shuf gz f32 flat; do
        "$VOX" segment --aff "$T/tw.h5:/$d" --out "$T/tw_$d.h5:/seg" --thresholds 0.3 \
            --threads 2 --quiet || fail "segment twin $d"
    done
    $PY - "$T" <<'PY' || fail "float twins differ"
import sys, h5py, numpy as np
T = sys.argv[1]
ref = h5py.File(f"{T}/tw_u8.h5", "r")["seg"][...]
for d in ["shuf", "gz", "f32", "flat"]:
    assert np.array_equal(h5py.File(f"{T}/tw_{d}.h5", "r")["seg"][...], ref), d
PY
fi

# Bad inputs: non-zero exit, a one-line error naming the problem, no output file.
bad() {
    want=$1; shift
    "$VOX" segment "$@" --out "$T/bad.h5:/seg" --quiet 2>"$T/err"
    rc=$?
    [ $rc -ne 0 ] || fail "'$*' succeeded"
    [ -e "$T/bad.h5" ] && fail "'$*' left an output file"
    grep -q "error" "$T/err" || fail "'$*' printed no error"
    grep -q -- "$want" "$T/err" || fail "'$*': error lacks '$want': $(cat "$T/err")"
    [ "$(wc -l <"$T/err")" -eq 1 ] || fail "'$*': more than one line: $(cat "$T/err")"
}
if $PY -c 'import h5py, numpy' 2>/dev/null; then
    $PY - "$T" <<'PY' || fail "making bad inputs"
import sys, h5py, numpy as np
T = sys.argv[1]
with h5py.File(f"{T}/in.h5", "w") as f:
    x = np.full((3, 4, 5, 6), 0.5, np.float32); x[1, 2, 3, 4] = np.nan
    f["nan"] = x
    x = np.full((3, 40, 5, 6), 0.5, np.float32); x[2, 37, 1, 2] = 1.5
    f.create_dataset("far", data=x, chunks=(3, 8, 5, 6), compression="gzip", shuffle=True)
    f["two"] = np.zeros((2, 4, 5, 6), np.float32)
    f["empty"] = np.zeros((3, 0, 5, 6), np.float32)
    f["u16"] = np.zeros((3, 4, 5, 6), np.uint16)
    f["merges"] = np.zeros((2, 3), np.uint64)
    f["merges_scores"] = np.zeros((3,), np.float32)
    f["base"] = np.ones((4, 5, 6), np.uint32)
PY
    bad "in.h5.*\[1, 2, 3, 4\] = nan" --aff "$T/in.h5:/nan"
    bad "in.h5.*\[2, 37, 1, 2\] = 1.5" --aff "$T/in.h5:/far"
    bad "channel" --aff "$T/in.h5:/two"
    bad "empty" --aff "$T/in.h5:/empty"
    bad "uint8 or float32" --aff "$T/in.h5:/u16"
    bad "scores" --from "$T/in.h5:/base" --history "$T/in.h5:/merges"
fi
bad "missing\|No such\|not" --aff "$T/nothere.h5:/aff"
bad "--low" --aff "$T/s.h5:/affinities" --low 0.5 --high 0.5
bad "--thresholds" --aff "$T/s.h5:/affinities" --thresholds 0.2,1.5
bad "--score" --aff "$T/s.h5:/affinities" --score mode
bad "--size" --aff "$T/s.h5:/affinities" --size 0.5:10,0.2:20
bad "unknown" --aff "$T/s.h5:/affinities" --frobnicate
bad "exactly one" --aff "$T/s.h5:/affinities" --boundary "$T/s.h5:/raw"
"$VOX" segment --aff "$T/s.h5:/affinities" --out "$T/x.npy" --quiet 2>/dev/null
[ $? -eq 2 ] || fail ".npy output accepted"
echo "cli_segment: ok"
