#!/bin/bash
# cli_chunk.sh: `vox segment --chunk` writes the same datasets as the unchunked run (labels at
# every threshold, base segments, merge history and scores, bitwise), for chunk shapes that
# divide the volume and some that do not, 1 and 2 threads, u8 and f32 affinities and a boundary
# map; --stats prints its table; bad --chunk values exit 2.
set -u
VOX=$1
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
PY=/usr/bin/python3

"$VOX" segment --help | grep -q -- '--chunk Z,Y,X' || fail "--help lacks --chunk"
"$VOX" synth --shape 16,40,48 --cell-size 100 --out "$T/s.h5" --quiet || fail "synth"
"$VOX" segment --chunk 0,4,4 --aff "$T/s.h5:/affinities" --out "$T/z.h5:/seg" 2>/dev/null
[ $? -eq 2 ] || fail "--chunk 0,4,4 accepted"
"$VOX" segment --stats --aff "$T/s.h5:/affinities" --out "$T/z.h5:/seg" 2>/dev/null
[ $? -eq 2 ] || fail "--stats without --chunk accepted"
[ -e "$T/z.h5" ] && fail "a failed run left a file"

run() { # name, input option, input, extra options...
    local n=$1 opt=$2 in=$3
    shift 3
    "$VOX" segment "$opt" "$in" --out "$T/$n.h5:/seg" --thresholds 0.2,0.5 --score median \
        --quiet "$@" || fail "segment $n $*"
}
# Smooth affinities, the raw image as a boundary map (16,64,32: runs of whole (1,16,64,64)
# HDF5 chunks, read one after another, each inflated on the threads).
run ref "--aff" "$T/s.h5:/affinities_smooth"
run bref "--boundary" "$T/s.h5:/raw" --inside
i=0
for c in 16,40,48 8,20,24 5,7,9 1,13,48 3,40,11 16,64,32; do
    run c$i "--aff" "$T/s.h5:/affinities_smooth" --chunk $c --threads $((1 + i % 2))
    run b$i "--boundary" "$T/s.h5:/raw" --inside --chunk $c
    i=$((i + 1))
done
out=$("$VOX" segment --aff "$T/s.h5:/affinities_smooth" --out "$T/st.h5:/seg" --chunk 8,16,16 \
    --stats --workdir "$T") || fail "--stats"
for w in "chunked segment" watershed "size merge" agglomerate "bytes read"; do
    echo "$out" | grep -q "$w" || fail "--stats output lacks '$w'"
done
ls "$T" | grep -q vox-dist-labels && fail "the label store was left in --workdir"
# On a terminal (script(1) gives one) a progress bar counts every task: it ends at its total.
if command -v script >/dev/null; then
    script -qec "\"$VOX\" segment --aff \"$T/s.h5:/affinities\" --out \"$T/p.h5:/seg\" \
        --chunk 5,7,9 --threads 2" /dev/null >"$T/tty.txt" || fail "segment on a terminal"
    tr '\r' '\n' <"$T/tty.txt" | grep -aqE ' 100\.0% ([0-9]+)/\1 tasks, .*done in' ||
        fail "the progress bar did not end at its total: $(tr '\r' '\n' <"$T/tty.txt" | tail -3)"
fi

# The smooth affinities as float32 gzip + shuffle in small HDF5 chunks (3, 4, 8, 16): the
# copy reads runs grown to those chunks' boundaries (boxes that start inside the volume)
if $PY -c 'import h5py, numpy' 2>/dev/null; then
    $PY - "$T" <<'PY' || fail "making the float32 copy"
import sys, h5py, numpy as np
T = sys.argv[1]
with h5py.File(f"{T}/s.h5", "r") as f:
    a = f["affinities_smooth"][...].astype(np.float32) / np.float32(255)
with h5py.File(f"{T}/f.h5", "w") as f:
    f.create_dataset("aff", data=a, chunks=(3, 4, 8, 16), compression="gzip", shuffle=True)
PY
    run c6 "--aff" "$T/f.h5:/aff" --chunk 5,13,9 --threads 2
fi

if $PY -c 'import h5py, numpy' 2>/dev/null; then
    $PY - "$T" <<'PY' || fail "h5py compare"
import sys, h5py, numpy as np
T = sys.argv[1]
names = ["seg_0.20", "seg_0.50", "seg_base", "seg_merges", "seg_merges_scores"]
for ref, pre in (("ref", "c"), ("bref", "b")):
    r = h5py.File(f"{T}/{ref}.h5", "r")
    assert sorted(r.keys()) == names, list(r.keys())
    assert r["seg_merges"].shape[0] > 0
    for i in range(7 if pre == "c" else 6):
        c = h5py.File(f"{T}/{pre}{i}.h5", "r")
        assert sorted(c.keys()) == names, (pre, i, list(c.keys()))
        for k in names:
            assert c[k].dtype == r[k].dtype, (pre, i, k)
            assert np.array_equal(c[k][()], r[k][()]), (pre, i, k)
PY
else
    for i in 0 1 2 3 4 5; do
        for k in seg_0.20 seg_0.50 seg_base; do
            j=$("$VOX" eval --seg "$T/c$i.h5:/$k" --gt "$T/ref.h5:/$k" --json --keep-gt0) ||
                fail "eval c$i $k"
            echo "$j" | grep -q '"voi":0,' || fail "chunked c$i $k differs: $j"
        done
    done
fi
echo "cli_chunk: ok"
