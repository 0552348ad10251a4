#!/usr/bin/env bash
# cli_demo.sh: the main job runs end to end on a small volume, writes its two files, and
# rejects bad options with exit status 2.
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
