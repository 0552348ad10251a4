#!/bin/sh
# cli_recursive.sh: recursive training (znn.md 4.2, docs/training.md) end to end on a tiny
# synthetic volume: train a 2D net, `vox infer` it over the volume, then train a two-input net
# on (raw, prediction) with --extra, its raw-path layers seeded by --init-from; the seeded
# layer starts equal to its source. usage: cli_recursive.sh VOX_BINARY
set -eu
VOX=$1
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cat > "$T/a.net" <<'NET'
input raw channels=1
conv conv1 raw -> 4 kernel=1x3x3 pad=same act=relu
conv conv2 conv1 -> 1 kernel=1x3x3 pad=same
output prob conv2 act=sigmoid
NET
cat > "$T/b.net" <<'NET'
input raw channels=1
input rec channels=1
conv conv1 raw -> 4 kernel=1x3x3 act=relu
conv conv1_rec rec -> 4 kernel=1x3x3 bias=no
add sum conv1 conv1_rec act=relu
conv conv3 sum -> 1 kernel=2x3x3
output prob conv3 act=sigmoid
NET
"$VOX" synth --out "$T/d.h5" --shape 6,32,32 --voxel-nm 10 --anisotropy 2 --cell-size 160 \
    --preset none --quiet >/dev/null
"$VOX" train --net "$T/a.net" --data "$T/d.h5:/raw,/labels" --target boundary --loss bce \
    --patch 1,12,12 --iters 3 --out "$T/a.h5" --quiet || fail "train the first net"
"$VOX" infer --net "$T/a.net" --weights "$T/a.h5" --in "$T/d.h5:/raw" --out "$T/p.h5:/prob" \
    --quiet || fail "infer the first net"
# default patch (printed), the prediction as the second input, conv1 seeded from a.h5
"$VOX" train --net "$T/b.net" --data "$T/d.h5:/raw,/labels" --extra "$T/p.h5:/prob" \
    --target boundary --loss bce --iters 2 --out "$T/b.h5" --init-from "$T/a.h5" \
    2>"$T/err" >/dev/null || { cat "$T/err"; fail "train the two-input net"; }
grep -q "patch 3,.*default from the field of view" "$T/err" || fail "default patch not printed"
grep -q "conv1 .*seeded" "$T/err" || fail "conv1 not reported seeded"
grep -q "conv3 .*initialised" "$T/err" || fail "conv3 not reported initialised"
# the seeded layer equals its source: one step of lr 1e-30 leaves it (to 1e-20)
"$VOX" train --net "$T/b.net" --data "$T/d.h5:/raw,/labels" --extra "$T/p.h5:/prob" \
    --target boundary --loss bce --iters 1 --optimizer sgd --lr 1e-30 --momentum 0 \
    --out "$T/s.h5" --init-from "$T/a.h5" --quiet || fail "seeded run"
/usr/bin/python3 - "$T/a.h5" "$T/s.h5" <<'PY' || fail "seeded conv1 differs from its source"
import sys, h5py, numpy as np
a, s = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
for p in ("weight", "bias"):
    assert np.allclose(a["conv1"][p][()], s["conv1"][p][()], rtol=0, atol=1e-20), p
PY
# a valid first net: its prediction is smaller than the raw (by 0,4,4) and is read centred
cat > "$T/v.net" <<'NET'
input raw channels=1
conv conv1 raw -> 4 kernel=1x3x3 act=relu
conv conv2 conv1 -> 1 kernel=1x3x3
output prob conv2 act=sigmoid
NET
"$VOX" train --net "$T/v.net" --data "$T/d.h5:/raw,/labels" --target boundary --loss bce \
    --patch 1,12,12 --iters 2 --out "$T/v.h5" --quiet || fail "train the valid net"
"$VOX" infer --net "$T/v.net" --weights "$T/v.h5" --in "$T/d.h5:/raw" --out "$T/vp.h5:/prob" \
    --quiet || fail "infer the valid net"
"$VOX" train --net "$T/b.net" --data "$T/d.h5:/raw,/labels" --extra "$T/vp.h5:/prob" \
    --target boundary --loss bce --iters 2 --out "$T/bv.h5" --quiet 2>"$T/err" ||
    { cat "$T/err"; fail "train on a valid net's smaller prediction"; }
# errors: --extra before any --data, a net whose inputs do not match the data
set +e
"$VOX" train --extra "$T/p.h5:/prob" --net "$T/b.net" --data "$T/d.h5:/raw,/labels" \
    --out "$T/x.h5" 2>/dev/null
[ $? -eq 2 ] || fail "--extra before --data is not exit 2"
"$VOX" train --net "$T/b.net" --data "$T/d.h5:/raw,/labels" --out "$T/x.h5" --quiet 2>"$T/err"
rc=$?
set -e
[ $rc -eq 1 ] && grep -q "2 inputs" "$T/err" || fail "input count mismatch: rc $rc"
echo "cli_recursive: ok"
