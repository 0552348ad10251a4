#!/bin/sh
# cli_train.sh: `vox train` end to end on a tiny synthetic volume: training runs, writes
# weights usable by `vox infer`, a JSON-lines log and a checkpoint; an interrupted run resumed
# from its checkpoint ends with the same weights as an uninterrupted one; bad input gives
# exit 2 (usage) or 1 (working) with a one-line error. usage: cli_train.sh VOX_BINARY
set -eu
VOX=$1
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cat > "$T/tiny.net" <<'NET'
input raw channels=1
conv c1 raw -> 4 kernel=1x3x3 act=elu
conv c2 c1 -> 3 kernel=2x3x3
output aff c2 act=sigmoid
NET
"$VOX" synth --out "$T/d.h5" --shape 6,40,40 --voxel-nm 10 --anisotropy 2 --cell-size 160 \
    --preset none --quiet >/dev/null
common="--net $T/tiny.net --data $T/d.h5:/raw,/labels --patch 3,10,10 --seed 5 --quiet"

"$VOX" train $common --iters 20 --out "$T/a.h5" --val "$T/d.h5:/raw,/labels" --val-every 10 \
    --threads 2 || fail "train"
[ -f "$T/a.h5" ] && [ -f "$T/a.h5.ckpt" ] && [ -f "$T/a.h5.jsonl" ] || fail "outputs missing"
# the memory line: a 4x patch takes about 4x the bytes
mem() { "$VOX" train --net "$T/tiny.net" --data "$T/d.h5:/raw,/labels" --patch "$1" --iters 1 \
    --out "$T/mem.h5" 2>&1 | sed -n 's/.*: \([0-9.]*\) \([kM]\)B of activations.*/\1 \2/p' |
    awk '{ print $2 == "k" ? $1 / 1000 : $1 }'; }
m1=$(mem 4,40,40); m4=$(mem 4,80,80)
awk -v a="$m1" -v b="$m4" 'BEGIN { exit !(a > 0 && b > 3 * a && b < 5 * a) }' ||
    fail "memory line: $m1 MB at 4,40,40, $m4 MB at 4,80,80"
[ "$(grep -c '"loss"' "$T/a.h5.jsonl")" = 20 ] || fail "log lines"
grep -q '"val_loss"' "$T/a.h5.jsonl" || fail "no validation in the log"
# long-range affinities: a net with 3 + 2 output channels trains with two offsets, its
# 5-channel prediction segments as its first 3 channels do, a 3-channel net is refused
sed 's/conv c2 c1 -> 3 /conv c2 c1 -> 5 /' "$T/tiny.net" > "$T/lr.net"
"$VOX" train --net "$T/lr.net" --data "$T/d.h5:/raw,/labels" --patch 3,10,10 --seed 5 --quiet \
    --iters 3 --out "$T/lr.h5" --offsets '0,3,0;1,0,-3' --threads 1 || fail "train --offsets"
"$VOX" infer --net "$T/lr.net" --weights "$T/lr.h5" --in "$T/d.h5:/raw" --out "$T/lp.h5:/aff" \
    --quiet || fail "infer a long-range net"
/usr/bin/python3 - "$T/lp.h5" <<'PY' || fail "the 5-channel prediction"
import sys, h5py
with h5py.File(sys.argv[1], "a") as f:
    assert f["aff"].shape[0] == 5, f["aff"].shape
    f["aff3"] = f["aff"][:3]
PY
"$VOX" segment --aff "$T/lp.h5:/aff" --out "$T/s5.h5:/seg" --quiet || fail "segment 5 channels"
"$VOX" segment --aff "$T/lp.h5:/aff3" --out "$T/s3.h5:/seg" --quiet || fail "segment 3 channels"
/usr/bin/python3 -c "
import sys, h5py, numpy as np
a, b = (h5py.File(p, 'r')['seg'][:] for p in sys.argv[1:])
assert a.shape == b.shape and (a == b).all()" "$T/s5.h5" "$T/s3.h5" || fail "5 vs 3 channels"
"$VOX" train $common --iters 3 --out "$T/lx.h5" --offsets '0,3,0' 2>/dev/null &&
    fail "--offsets with a 3-channel net accepted"
"$VOX" train --net "$T/lr.net" --data "$T/d.h5:/raw,/labels" --patch 3,10,10 --quiet \
    --iters 3 --out "$T/lx.h5" --offsets '0,3,0;0,0,0' 2>/dev/null && fail "--offsets 0,0,0"
[ ! -e "$T/lx.h5" ] || fail "a refused run left its output"
# class weights from the volume's counts: trains, and a bad mode is refused
"$VOX" train $common --iters 3 --out "$T/rv.h5" --rebalance volume --threads 1 ||
    fail "train --rebalance volume"
"$VOX" train $common --iters 3 --out "$T/rx.h5" --rebalance class 2>/dev/null &&
    fail "--rebalance class accepted"
[ ! -e "$T/rx.h5" ] || fail "a refused run left its output"
# every validation line also scores the segmentation: an adapted Rand error in [0, 1]
/usr/bin/python3 - "$T/a.h5.jsonl" <<'PY' || fail "validation's adapted Rand error"
import json, sys
v = [json.loads(l) for l in open(sys.argv[1]) if '"val_loss"' in l]
assert len(v) == 2, v
for r in v:
    assert 0 <= r["val_rand_error"] <= 1 and 0.05 <= r["val_threshold"] <= 0.95, r
PY
"$VOX" infer --net "$T/tiny.net" --weights "$T/a.h5" --in "$T/d.h5:/raw" \
    --out "$T/p.h5:/aff" --quiet || fail "infer with trained weights"

# kill-and-resume: 10 steps (checkpoint), then resume to 20: same weights as a.h5 (1 thread)
"$VOX" train $common --iters 10 --out "$T/b.h5" --checkpoint "$T/b.ckpt" --threads 1 \
    || fail "first half"
"$VOX" train $common --iters 20 --out "$T/b.h5" --checkpoint "$T/b.ckpt" --resume \
    --threads 1 || fail "resume"
/usr/bin/python3 - "$T/a.h5" "$T/b.h5" <<'PY' || fail "resumed weights differ"
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
for layer in a:
    for p in a[layer]:
        assert np.array_equal(a[layer][p][()], b[layer][p][()]), (layer, p)
PY

# SIGTERM (as Ctrl-C's SIGINT): the step running finishes, the checkpoint is written, exit 143;
# --resume from it to K + 3 steps gives the weights of an uninterrupted run of K + 3
"$VOX" train $common --iters 1000000 --out "$T/s.h5" --checkpoint "$T/s.ckpt" --threads 1 \
    --log "$T/s.jsonl" 2>"$T/s.err" &
pid=$!
for _ in $(seq 300); do
    n=$(grep -c '"loss"' "$T/s.jsonl" 2>/dev/null || true)
    [ "${n:-0}" -ge 5 ] && break
    sleep 0.1
done
kill -TERM $pid
rc=0
wait $pid || rc=$?
[ $rc = 143 ] || fail "SIGTERM: exit $rc, expected 143 ($(cat "$T/s.err"))"
K=$(sed -n 's/.*terminated at iteration \([0-9]*\)\/.*/\1/p' "$T/s.err")
[ -n "$K" ] && [ -f "$T/s.ckpt" ] && [ ! -f "$T/s.h5" ] || fail "SIGTERM: $(cat "$T/s.err")"
"$VOX" train $common --iters $((K + 3)) --out "$T/s.h5" --checkpoint "$T/s.ckpt" --resume \
    --threads 1 --log "$T/s.jsonl" || fail "resume after SIGTERM"
"$VOX" train $common --iters $((K + 3)) --out "$T/u.h5" --threads 1 || fail "uninterrupted"
/usr/bin/python3 - "$T/s.h5" "$T/u.h5" <<'PY' || fail "weights after SIGTERM and resume differ"
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
for layer in a:
    for p in a[layer]:
        assert np.array_equal(a[layer][p][()], b[layer][p][()]), (layer, p)
PY

# constrained MALIS: a few steps run, bitwise the same for 1 and 2 threads
for th in 1 2; do
    "$VOX" train $common --iters 3 --loss malis --out "$T/m$th.h5" --threads $th \
        || fail "train --loss malis (threads $th)"
done
grep -q '"loss"' "$T/m1.h5.jsonl" || fail "malis log"
/usr/bin/python3 - "$T/m1.h5" "$T/m2.h5" <<'PY' || fail "malis weights differ across threads"
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
for layer in a:
    for p in a[layer]:
        assert np.array_equal(a[layer][p][()], b[layer][p][()]), (layer, p)
PY
set +e
"$VOX" train $common --iters 3 --loss malis --target boundary --out "$T/m.h5" 2>"$T/err"; rc=$?
set -e
[ $rc = 1 ] && grep -q "needs target affinity" "$T/err" || fail "malis on boundary: $rc $(cat "$T/err")"

# a corrupted checkpoint is refused
/usr/bin/python3 -c "
import sys; p = sys.argv[1]; d = bytearray(open(p, 'rb').read()); d[len(d) // 2] ^= 1
open(p, 'wb').write(d)" "$T/b.ckpt"
set +e
"$VOX" train $common --iters 30 --out "$T/b.h5" --checkpoint "$T/b.ckpt" --resume 2>"$T/err"
rc=$?
set -e
[ $rc = 1 ] && grep -q "checksum" "$T/err" || fail "corrupted checkpoint: rc $rc $(cat "$T/err")"

# usage errors: exit 2
for args in "--bogus" "--net $T/tiny.net" "$common --out $T/c.h5 --iters 0" \
            "$common --out $T/c.h5 --loss hinge" "$common --out $T/c.h5 --patch 3,10"; do
    set +e
    "$VOX" train $args 2>"$T/err"
    rc=$?
    set -e
    [ $rc = 2 ] || fail "'$args' gave $rc, expected 2"
    [ "$(wc -l < "$T/err")" = 1 ] || fail "'$args': not one line: $(cat "$T/err")"
done
# working errors: exit 1 with a message naming the problem
set +e
"$VOX" train $common --out "$T/c.h5" --patch 1,10,10 2>"$T/err"; rc=$?
set -e
[ $rc = 1 ] && grep -q "field of view" "$T/err" || fail "small patch: $rc $(cat "$T/err")"
"$VOX" train --help | grep -q -- "--checkpoint-every" || fail "help"
echo "cli_train: ok"
