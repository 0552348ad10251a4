#!/bin/sh
# cli_show.sh: `vox show` plots the log of a short `vox train` run: a PNG of the requested size
# with the blue training curve, the red validation dots and the green adapted Rand error dots
# in it; bad input gives exit 2 (usage) or 1 (working) with a one-line error.
# usage: cli_show.sh VOX_BINARY
set -eu
VOX=$1
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cat > "$T/tiny.net" <<'NET'
input raw channels=1
conv c1 raw -> 3 kernel=1x3x3
output aff c1 act=sigmoid
NET
"$VOX" synth --out "$T/d.h5" --shape 4,24,24 --preset none --quiet >/dev/null
"$VOX" train --net "$T/tiny.net" --data "$T/d.h5:/raw,/labels" --patch 2,8,8 --iters 6 \
    --val "$T/d.h5:/raw,/labels" --val-every 3 --val-patches 2 --out "$T/m.h5" --quiet \
    --threads 1 || fail "train"
"$VOX" show "$T/m.h5.jsonl" --out "$T/c.png" --size 400,300 --quiet || fail "show"
/usr/bin/python3 - "$T/c.png" <<'PY' || fail "the plot"
import sys
from skimage.io import imread
im = imread(sys.argv[1])
assert im.shape == (300, 400, 3), im.shape
r, g, b = (im[..., k].astype(int) for k in range(3))
blue = ((r == 31) & (g == 92) & (b == 200)).sum()
red = ((r == 214) & (g == 39) & (b == 40)).sum()
black = ((r == 0) & (g == 0) & (b == 0)).sum()
green = ((r == 44) & (g == 160) & (b == 44)).sum()  # the validations' adapted Rand error
assert blue > 50 and red > 25 and green > 25 and black > 300, (blue, red, green, black)
PY

"$VOX" show --help | grep -q -- "--size" || fail "help"
set +e
"$VOX" show "$T/m.h5.jsonl" 2>"$T/e"; [ $? = 2 ] && grep -q "required" "$T/e" || fail "no --out"
"$VOX" show "$T/m.h5.jsonl" --out "$T/c.jpg" 2>"$T/e"; [ $? = 2 ] || fail "not .png"
"$VOX" show "$T/m.h5.jsonl" --out "$T/c.png" --bogus 1 2>"$T/e"; [ $? = 2 ] || fail "unknown"
"$VOX" show "$T/m.h5.jsonl" --out "$T/c.png" --size 10,10 2>"$T/e"; [ $? = 2 ] || fail "size"
"$VOX" show "$T/none.jsonl" --out "$T/c.png" 2>"$T/e"; [ $? = 1 ] && grep -q "none.jsonl" "$T/e" \
    || fail "missing log"
echo '{"other": 1}' > "$T/bad.jsonl"
"$VOX" show "$T/bad.jsonl" --out "$T/c.png" 2>"$T/e"; [ $? = 1 ] && grep -q "no lines" "$T/e" \
    || fail "empty log"
[ "$(wc -l < "$T/e")" = 1 ] || fail "one-line error"
exit 0
