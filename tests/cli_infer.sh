#!/bin/bash
# cli_infer.sh: `vox infer` from the shell: usage errors (exit 2), failures (exit 1, no partial
# output), random weights, --plan, and a run on a synthetic volume. $1 is the vox binary.
set -u
vox=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
here=$(cd "$(dirname "$0")/.." && pwd)

"$vox" infer --help | grep -q -- "--save-weights" || fail "--help"
"$vox" infer --bogus 2>/dev/null; [ $? -eq 2 ] || fail "unknown option is not exit 2"
"$vox" infer --net x.net 2>/dev/null; [ $? -eq 2 ] || fail "missing --weights is not exit 2"
"$vox" infer --net x.net --init foo 2>/dev/null; [ $? -eq 2 ] || fail "bad --init"

printf 'input raw channels=1\nconv c raw -> 3 kernel=1x3x3 act=relu\noutput o c act=sigmoid\n' \
    > "$dir/t.net"
printf 'input raw channels=1\nconv c raw -> 3 kernel=1x3x3 act=relux\noutput o c\n' \
    > "$dir/bad.net"
"$vox" synth --quiet --out "$dir/s.h5" --shape 2,20,24 || fail "synth"
"$vox" infer --quiet --net "$dir/t.net" --init msra --seed 3 --save-weights "$dir/w.h5" \
    || fail "save weights"
"$vox" infer --quiet --net "$dir/t.net" --weights "$dir/w.h5" --in "$dir/s.h5:/raw" \
    --out "$dir/o.h5:/aff" || fail "infer"
[ -f "$dir/o.h5" ] || fail "no output"
"$vox" infer --net "$dir/t.net" --weights "$dir/w.h5" --patch 2,20,24 --plan | grep -q \
    "3x2x18x22" || fail "--plan shape"
# max-pooling fragments: the plan of the shipped n337_mpf, and a small mpf net over the volume
plan=$("$vox" infer --net "$here/nets/n337_mpf.net" --init msra --patch 92,92,100 --plan) \
    || fail "n337_mpf --plan"
echo "$plan" | grep -q "c7 .* 512\*3x1x1x2 " || fail "n337_mpf fragments: $plan"
echo "$plan" | grep -q "out .* 3x8x8x16 " || fail "n337_mpf dense output: $plan"
echo "$plan" | grep -q "field of view 85x85x85" || fail "n337_mpf fov: $plan"
printf '%s\n' 'input raw channels=1' 'conv c raw -> 3 kernel=1x3x3 act=relu' \
    'mpf m c window=1x2x2' 'conv d m -> 2 kernel=1x2x2' 'interleave i d' \
    'output o i act=sigmoid' > "$dir/mpf.net"
"$vox" infer --quiet --net "$dir/mpf.net" --init msra --in "$dir/s.h5:/raw" --patch 2,11,13 \
    --out "$dir/m.h5:/aff" || fail "mpf infer"
[ -f "$dir/m.h5" ] || fail "no mpf output"

err=$("$vox" infer --net "$dir/bad.net" --init msra --in "$dir/s.h5:/raw" \
    --out "$dir/x.h5:/aff" 2>&1); rc=$?
[ $rc -eq 1 ] || fail "bad spec exit $rc"
echo "$err" | grep -q "bad.net:2:34: conv 'c': bad value 'relux' for act" || fail "msg: $err"
err=$("$vox" infer --net "$here/nets/n4.net" --init msra --in "$dir/s.h5:/raw" \
    --out "$dir/x.h5:/aff" 2>&1); rc=$?
[ $rc -eq 1 ] || fail "small input exit $rc"
echo "$err" | grep -q "smaller than the field of view 1x95x95" || fail "msg: $err"
err=$("$vox" infer --net "$here/nets/n4.net" --weights "$dir/w.h5" --patch 1,95,95 --plan \
    2>&1); rc=$?
[ $rc -eq 1 ] || fail "wrong weights exit $rc"
echo "$err" | grep -q "layer 'c1'" || fail "msg: $err"
[ ! -e "$dir/x.h5" ] || fail "partial output"
echo "cli_infer: ok"
