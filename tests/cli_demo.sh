#!/usr/bin/env bash
# cli_demo.sh: the main job runs end to end on a small volume (by default with the shipped
# model nets/synth_aff.h5; with --preset degraded affinities; with a model just trained for
# 2 steps on nets/synth_aff.net), writes its two files, and rejects bad options with exit
# status 2 (a missing model: 1).
set -u
vox=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail=0
check() { if "$@"; then :; else echo "FAIL: $*"; fail=1; fi; }

check "$vox" demo --help >/dev/null
out=$("$vox" demo --out "$dir/d" --shape 12,64,64 --seed 3 --quiet 2>&1)
check test $? -eq 0
check test -s "$dir/d/demo.h5"
check test -s "$dir/d/demo.png"
check grep -q "adapted Rand error" <<<"$out"
check grep -q "affinity  model .*synth_aff.h5, fast forward pass, 4 views" <<<"$out"
out=$("$vox" demo --out "$dir/n" --shape 12,64,64 --seed 3 --preset noisy --quiet 2>&1)
check test $? -eq 0
check grep -q "affinity  noisy preset" <<<"$out"
net=$(dirname "$0")/../nets/synth_aff.net
cp "$net" "$dir/m.net"
"$vox" synth --out "$dir/s.h5" --shape 8,48,48 --preset none --quiet
"$vox" train --net "$dir/m.net" --data "$dir/s.h5:/raw,/labels" --out "$dir/m.h5" --iters 2 \
    --patch 6,24,24 --quiet >/dev/null 2>&1
check test -s "$dir/m.h5"
out=$("$vox" demo --out "$dir/p" --shape 8,48,40 --model "$dir/m.h5" --views 8 --quiet 2>&1)
check test $? -eq 0
check grep -q "affinity  model $dir/m.h5, fast forward pass" <<<"$out"
"$vox" demo --out "$dir/m" --shape 8,48,48 --model "$dir/none.h5" >/dev/null 2>&1
check test $? -eq 1
"$vox" demo --model "$dir/m.h5" --preset smooth --out "$dir/bad" >/dev/null 2>&1
check test $? -eq 2
"$vox" demo --views 9 --out "$dir/bad" >/dev/null 2>&1
check test $? -eq 2
"$vox" demo --preset none --out "$dir/bad" >/dev/null 2>&1
check test $? -eq 2
check cmp -s -n 8 "$dir/d/demo.png" <(printf '\x89PNG\r\n\x1a\n')
"$vox" demo --shape 0,1,1 --out "$dir/bad" >/dev/null 2>&1
check test $? -eq 2
"$vox" demo --bogus >/dev/null 2>&1
check test $? -eq 2
check test ! -e "$dir/bad/demo.h5"
if /usr/bin/python3 -c 'import h5py' 2>/dev/null; then
    check /usr/bin/python3 - "$dir/d/demo.h5" <<'PY'
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
assert f["raw"].shape == (12, 64, 64) and f["raw"].dtype == np.uint8
assert f["labels"].dtype == np.uint64 and f["seg"].dtype == np.uint64
assert f["affinities"].shape == (3, 12, 64, 64)
assert list(f["seg"].attrs["resolution"]) == [40, 4, 4]
PY
fi
[ $fail -eq 0 ] && echo "1 passed, 0 failed" || echo "0 passed, 1 failed"
exit $fail
