#!/bin/bash
# mpi_segment.sh: `mpirun -np N vox-mpi segment --chunk ...` for N = 1..4 (the atomic chunks
# of all three stages shared among the ranks), and with more ranks than chunks, writes the
# same datasets as the unchunked `vox segment` (labels at every threshold, base segments,
# merge history and scores, bitwise; the other ranks' chunks encoded there, stored as the
# one-process run stores them), also when killed after k restart records and resumed with
# another number of ranks, or when rank 1 dies; vox-mpi without `segment` exits 2. Args: vox, vox-mpi, mpirun.
set -u
VOX=$1
VMPI=$2
MPIRUN=${3:-mpirun}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
PY=/usr/bin/python3

"$VMPI" 2>/dev/null
[ $? -eq 2 ] || fail "vox-mpi without a command did not exit 2"
"$VOX" synth --shape 16,40,48 --cell-size 100 --out "$T/s.h5" --quiet || fail "synth"
opts=(--aff "$T/s.h5:/affinities_smooth" --thresholds 0.2,0.5 --score median --quiet)
"$VOX" segment "${opts[@]}" --out "$T/ref.h5:/seg" || fail "segment"
for n in 1 2 3 4; do
    "$MPIRUN" --allow-run-as-root --oversubscribe -np $n "$VMPI" segment "${opts[@]}" \
        --chunk 5,13,16 --threads 1 --out "$T/m$n.h5:/seg" || fail "mpirun -np $n"
done
# more ranks than chunks: ranks 2 and 3 get none in any stage
"$MPIRUN" --allow-run-as-root --oversubscribe -np 4 "$VMPI" segment "${opts[@]}" \
    --chunk 16,40,24 --threads 2 --out "$T/m5.h5:/seg" || fail "mpirun -np 4, 2 chunks"
# slabs along z only, 4 ranks: a rank's chunks' margins lie in the chunks just above and
# below, another rank's, which it copies from the HDF5 source with its own
"$MPIRUN" --allow-run-as-root --oversubscribe -np 4 "$VMPI" segment "${opts[@]}" \
    --chunk 2,40,48 --threads 1 --out "$T/m6.h5:/seg" || fail "mpirun -np 4, z slabs"
# chunks large enough that stages (b) and (c) decide merges in them (the other ranks' too)
"$VOX" synth --shape 24,96,96 --cell-size 80 --out "$T/b.h5" --quiet || fail "synth b"
big=(--aff "$T/b.h5:/affinities_smooth" --quiet)
"$VOX" segment "${big[@]}" --out "$T/bref.h5:/seg" || fail "segment b"
"$VOX" segment "${big[@]}" --chunk 12,48,48 --out "$T/bc.h5:/seg" || fail "segment b --chunk"
for n in 2 3; do # (rank 0 with 2 threads: the other ranks' chunks also after its own)
    "$MPIRUN" --allow-run-as-root --oversubscribe -np $n "$VMPI" segment "${big[@]}" \
        --chunk 12,48,48 --threads $((n - 1)) --out "$T/b$n.h5:/seg" || fail "mpirun -np $n, b"
done
"$MPIRUN" --allow-run-as-root --oversubscribe -np 3 "$VMPI" segment "${opts[@]}" \
    --out "$T/x.h5:/seg" 2>/dev/null && fail "-np 3 without --chunk accepted"
# 8 x 8 x 8 chunks, 2 ranks of one thread: 32 level-1 subtrees each, whose parents the ranks
# send with their chunks' messages (rank 0 waiting to send a rank its next chunk while that
# rank waited to send rank 0 a summary hung every run until rank 0's sends stopped waiting)
"$VOX" synth --shape 32,128,128 --cell-size 60 --out "$T/d.h5" --quiet || fail "synth d"
deep=(--aff "$T/d.h5:/affinities_smooth" --quiet)
"$VOX" segment "${deep[@]}" --out "$T/dref.h5:/seg" || fail "segment d"
timeout 120 "$MPIRUN" --allow-run-as-root --oversubscribe -np 2 "$VMPI" segment "${deep[@]}" \
    --chunk 4,16,16 --threads 1 --out "$T/d2.h5:/seg" || fail "mpirun -np 2, 8x8x8 chunks"
# ... killed after 900 of its 1536 chunk tasks and resumed: the ranks compute the level-1 and
# level-2 nodes of their subtrees (of 2 ranks' 8 level-2 subtrees) but those over chunks
# rank 0 took from its records
rm -rf "$T/dw" && mkdir "$T/dw"
VOX_DIST_DIE_AFTER=900 timeout 120 "$MPIRUN" --allow-run-as-root --oversubscribe -np 2 "$VMPI" \
    segment "${deep[@]}" --chunk 4,16,16 --threads 1 --workdir "$T/dw" --out "$T/dk.h5:/seg" \
    >/dev/null 2>&1 && fail "VOX_DIST_DIE_AFTER=900 did not end the 8x8x8 run"
out=$(timeout 120 "$MPIRUN" --allow-run-as-root --oversubscribe -np 2 "$VMPI" segment "${deep[@]}" \
    --chunk 4,16,16 --threads 2 --workdir "$T/dw" --resume --stats --out "$T/dr.h5:/seg") ||
    fail "resume 8x8x8"
echo "$out" | grep -q "tasks: 900 reused" || fail "8x8x8: $(echo "$out" | grep tasks)"
# restartable: 2 ranks killed after k restart records (rank 0 keeps them), resumed with 3
# (48 chunks: 144 chunk tasks, then the size merge and agglomeration; 146: all recorded)
W="$T/w"
for k in 9 70 146; do
    rm -rf "$W" "$T/k.h5" && mkdir "$W"
    VOX_DIST_DIE_AFTER=$k "$MPIRUN" --allow-run-as-root --oversubscribe -np 2 "$VMPI" segment \
        "${opts[@]}" --chunk 5,13,16 --threads 1 --workdir "$W" --out "$T/k.h5:/seg" \
        >/dev/null 2>&1 && fail "VOX_DIST_DIE_AFTER=$k did not end the run"
    [ -e "$T/k.h5" ] && fail "a killed run left its output"
    # (resumed with 2 threads a rank: each rank's chunks on both)
    out=$("$MPIRUN" --allow-run-as-root --oversubscribe -np 3 "$VMPI" segment "${opts[@]}" \
        --chunk 5,13,16 --threads 2 --workdir "$W" --resume --stats --out "$T/r$k.h5:/seg") ||
        fail "resume after $k records"
    want=$((k < 144 ? k : 144))
    echo "$out" | grep -q "tasks: $want reused" ||
        fail "after $k records: $(echo "$out" | grep tasks), expected $want reused"
    [ -z "$(ls "$W")" ] || fail "a finished run left files in --workdir: $(ls "$W")"
done
# rank 1 (not rank 0) killed after sending 4 chunks (computed on its 2 threads): resumed with
# 2 ranks, some tasks reused
rm -rf "$W" "$T/k.h5" && mkdir "$W"
VOX_DIST_DIE_RANK=1 VOX_DIST_DIE_AFTER=4 "$MPIRUN" --allow-run-as-root --oversubscribe -np 2 \
    "$VMPI" segment "${opts[@]}" --chunk 5,13,16 --threads 2 --workdir "$W" \
    --out "$T/k.h5:/seg" >/dev/null 2>&1 && fail "rank 1 was not killed"
[ -e "$T/k.h5" ] && fail "a run whose rank died left its output"
out=$("$MPIRUN" --allow-run-as-root --oversubscribe -np 2 "$VMPI" segment "${opts[@]}" \
    --chunk 5,13,16 --threads 1 --workdir "$W" --resume --stats --out "$T/rk.h5:/seg") ||
    fail "resume after rank 1 died"
echo "$out" | grep -q "tasks: [1-9][0-9]* reused" || fail "rank 1 died: $(echo "$out" | grep tasks)"

$PY - "$T" <<'PY' || fail "h5py compare"
import sys, h5py, numpy as np
T = sys.argv[1]
names = ["seg_0.20", "seg_0.50", "seg_base", "seg_merges", "seg_merges_scores"]
r = h5py.File(f"{T}/ref.h5", "r")
assert sorted(r.keys()) == names, list(r.keys())
for n in ["m1", "m2", "m3", "m4", "m5", "m6", "r9", "r70", "r146", "rk"]:
    m = h5py.File(f"{T}/{n}.h5", "r")
    for k in names:
        a, b = r[k][...], m[k][...]
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), (n, k)
r = h5py.File(f"{T}/dref.h5", "r")
for n in ("d2", "dr"):
    m = h5py.File(f"{T}/{n}.h5", "r")
    assert sorted(m.keys()) == sorted(r.keys()), list(m.keys())
    for k in r.keys():
        assert np.array_equal(r[k][...], m[k][...]), (n, k)
r = h5py.File(f"{T}/bref.h5", "r")
for n in (2, 3):
    m = h5py.File(f"{T}/b{n}.h5", "r")
    assert sorted(m.keys()) == sorted(r.keys()), list(m.keys())
    for k in r.keys():
        assert np.array_equal(r[k][...], m[k][...]), ("b", n, k)
# the other ranks encode their chunks' output (rank 0 stores the bytes): every stored chunk
# as the one-process --chunk run stores it
c = h5py.File(f"{T}/bc.h5", "r")
for n in (2, 3):
    m = h5py.File(f"{T}/b{n}.h5", "r")
    for k in ("seg", "seg_base"):
        a, b = c[k], m[k]
        assert a.chunks == b.chunks and a.compression == b.compression, (n, k)
        for i in range(a.id.get_num_chunks()):
            off = a.id.get_chunk_info(i).chunk_offset
            assert a.id.read_direct_chunk(off) == b.id.read_direct_chunk(off), (n, k, off)
PY
echo "ok mpi_segment"
