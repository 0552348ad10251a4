#!/bin/bash
# cli_resume.sh: `vox segment --chunk --workdir` killed after N restart records
# (VOX_DIST_DIE_AFTER=N: exit 3) and run again with --resume writes the same datasets as the
# unchunked run, bitwise, and reuses exactly the N chunk tasks recorded; a torn journal,
# truncated blobs and flipped bytes in the label, affinity and blob files are detected and
# those tasks run again (fewer reused, same output); other settings are refused.
set -u
VOX=$1
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
PY=/usr/bin/python3
$PY -c 'import h5py, numpy' 2>/dev/null || { echo "cli_resume: skipped (no h5py)"; exit 0; }

"$VOX" synth --shape 16,40,48 --cell-size 100 --out "$T/s.h5" --quiet || fail "synth"
IN="$T/s.h5:/affinities_smooth"
OPTS=(--thresholds 0.2,0.5 --score median --chunk 8,20,24)
"$VOX" segment --aff "$IN" --out "$T/ref.h5:/seg" --thresholds 0.2,0.5 --score median --quiet ||
    fail "reference"
"$VOX" segment --aff "$IN" --out "$T/x.h5:/seg" --resume 2>/dev/null
[ $? -eq 2 ] || fail "--resume without --workdir accepted"
# --workdir: made when missing and removed after a successful run (or the resumed run after a
# kill), a user's own kept; a missing parent, a file in its place, or --resume without it: a
# clear error and no output.
"$VOX" segment --aff "$IN" --out "$T/x.h5:/seg" --chunk 8,20,24 --workdir "$T/made" --quiet ||
    fail "--workdir not yet there"
[ -e "$T/made" ] && fail "the --workdir this run made is left"
[ -e "$T/x.h5" ] || fail "no output with a new --workdir"
rm -f "$T/x.h5"
VOX_DIST_DIE_AFTER=3 "$VOX" segment --aff "$IN" --out "$T/x.h5:/seg" --chunk 8,20,24 \
    --workdir "$T/made" --quiet
[ $? -eq 3 ] || fail "VOX_DIST_DIE_AFTER=3 with a new --workdir"
"$VOX" segment --aff "$IN" --out "$T/x.h5:/seg" --chunk 8,20,24 --workdir "$T/made" --resume \
    --quiet || fail "resume in a --workdir the killed run made"
[ -e "$T/made" ] && fail "the resumed run left the --workdir the killed run made"
mkdir "$T/mine" && "$VOX" segment --aff "$IN" --out "$T/y.h5:/seg" --chunk 8,20,24 \
    --workdir "$T/mine" --quiet || fail "--workdir made by the user"
[ -d "$T/mine" ] || fail "a --workdir the user made was removed"
rm -f "$T/x.h5" && touch "$T/afile"
for bad in "$T/no/wd" "$T/afile" "$T/gone --resume"; do
    err=$("$VOX" segment --aff "$IN" --out "$T/x.h5:/seg" --chunk 8,20,24 --workdir $bad 2>&1)
    [ $? -eq 1 ] || fail "--workdir $bad: not refused"
    echo "$err" | grep -q "work directory" || fail "--workdir $bad: unclear error: $err"
    [ -e "$T/x.h5" ] && fail "--workdir $bad left an output"
done

same() { # output file: every dataset equal to the reference
    $PY - "$T/ref.h5" "$1" <<'PY' || fail "$1 differs from the reference"
import sys, h5py, numpy as np
r, c = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
assert sorted(r.keys()) == sorted(c.keys()), (list(r.keys()), list(c.keys()))
for k in r:
    assert r[k].dtype == c[k].dtype and np.array_equal(r[k][()], c[k][()]), k
PY
}
W="$T/w"
kill_at() { # records before the kill, threads
    rm -rf "$W" "$T/o.h5" && mkdir "$W"
    VOX_DIST_DIE_AFTER=$1 "$VOX" segment --aff "$IN" --out "$T/o.h5:/seg" "${OPTS[@]}" \
        --workdir "$W" --threads "$2" --quiet
    [ $? -eq 3 ] || fail "VOX_DIST_DIE_AFTER=$1 did not end the run"
    [ -e "$T/o.h5" ] && fail "a killed run left its output"
}
resume() { # expected "tasks: R reused, N run" (a grep pattern)
    rm -f "$T/o.h5"
    out=$("$VOX" segment --aff "$IN" --out "$T/o.h5:/seg" "${OPTS[@]}" --workdir "$W" \
        --resume --stats) || fail "resume"
    echo "$out" | grep -q "tasks: $1" || fail "expected 'tasks: $1', got: $(echo "$out" | grep tasks)"
    same "$T/o.h5"
    [ -z "$(ls "$W")" ] || fail "a finished run left files in --workdir: $(ls "$W")"
}
# 8 chunks: 24 chunk tasks (read, watershed, relabel), then the size merge and agglomeration.
for k in 1 5 13 24; do
    kill_at $k $((1 + k % 2))
    resume "$k reused, $((24 - k)) run"
done
kill_at 26 2 # every record written: all reused
resume "24 reused, 0 run"

# A kill during the resumed run, then another resume.
kill_at 7 1
VOX_DIST_DIE_AFTER=6 "$VOX" segment --aff "$IN" --out "$T/o.h5:/seg" "${OPTS[@]}" \
    --workdir "$W" --resume --quiet
[ $? -eq 3 ] || fail "second kill"
resume "13 reused, 11 run"

flip() { # file, byte offset
    $PY - "$1" "$2" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2])); b = f.read(1); f.seek(int(sys.argv[2]))
    f.write(bytes([(b[0] if b else 0) ^ 0x5A]))
PY
}
# Damage after a complete set of chunk records plus the size-merge record.
kill_at 25 2
flip "$W/vox-dist-labels" 100 # chunk 0's labels: its watershed and relabel run again
resume "22 reused, 2 run"
kill_at 25 2
flip "$W/vox-dist-affinities" 5000 # one chunk's affinities: read again
resume "23 reused, 1 run"
kill_at 25 2
flip "$W/vox-dist-blobs" 40 # chunk 0's watershed summary
resume "22 reused, 2 run"
kill_at 25 2
truncate -s -3 "$W/vox-dist-journal" # the size-merge record torn: that stage runs again
resume "24 reused, 0 run"
kill_at 25 2
truncate -s 0 "$W/vox-dist-blobs" # every summary lost: watersheds and relabels run again
resume "8 reused, 16 run"
kill_at 25 2
flip "$W/vox-dist-journal" 70 # the second record (56 bytes each) damaged: its task runs
resume "23 reused, 1 run"
kill_at 25 2
flip "$W/vox-dist-journal" 20 # the settings record damaged: nothing is trusted
resume "0 reused, 24 run"

# Other settings are refused.
kill_at 9 1
"$VOX" segment --aff "$IN" --out "$T/o.h5:/seg" --thresholds 0.2 --chunk 8,20,12 \
    --workdir "$W" --resume --quiet 2>"$T/err"
[ $? -eq 1 ] || fail "--resume with another chunk shape accepted"
grep -q "other settings" "$T/err" || fail "message: $(cat "$T/err")"
echo "cli_resume: ok"
