#!/bin/bash
# cli_infer_mem.sh: the planner's --mem budget (vox_nn_volume_plan, src/nn/slide.c). `vox infer`
# with nets/n4.net (random msra weights) on a synthetic volume under two budgets: the peak RSS
# (ru_maxrss of the child, through /usr/bin/python3's resource module) stays under the budget
# plus an allowance for the program itself, and both runs write the same values (the sliding
# windows tile the output exactly): bitwise with --conv direct (the kernels are compiled per
# patch shape, and every tile of a nest sums its reduction in the same order), within 1e-6
# with --conv auto, which may pick FFT for one patch shape and direct for the other (a wrong
# tile offset or seam gives differences of order 0.1). The allowance is the peak RSS of the same command on a
# volume of one field of view (libraries, JIT code, HDF5, a minimal plan) plus 16 MiB of slack
# (staging buffers, allocator fragmentation). The precise check: peak RSS less the RSS before
# planning (printed by --plan) <= --mem, for n4 and for a same-padded net by FFT and direct.
# $1 is the vox binary.
# Skipped for the sanitizer build (a binary under build-san/): ASan's shadow memory and
# quarantine inflate the RSS far beyond what the plan holds.
set -u
vox=$1
case "$vox" in *build-san*) echo "cli_infer_mem: skipped (sanitizer build)"; exit 0 ;; esac
# Skipped under VOX_ISA=ref: the interpreter runs these convolutions minutes slower, and the
# memory plan does not depend on the ISA (the other passes of the suite run this test).
if [ "${VOX_ISA:-}" = ref ]; then echo "cli_infer_mem: skipped (VOX_ISA=ref)"; exit 0; fi
py=/usr/bin/python3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
here=$(cd "$(dirname "$0")/.." && pwd)
net=$here/nets/n4.net

# peak KiB of the command's process tree; the command's exit status must be 0
peak() {
    "$py" -c 'import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if r.returncode == 0 else -1)' "$@"
}

"$vox" synth --quiet --out "$dir/s.h5" --shape 2,300,300 --seed 5 || fail "synth"
"$vox" synth --quiet --out "$dir/t.h5" --shape 1,95,95 --seed 5 || fail "synth tiny"
"$vox" infer --quiet --net "$net" --init msra --seed 3 --save-weights "$dir/w.h5" \
    || fail "save weights"
run() { peak "$vox" infer --quiet --threads 2 --net "$net" --weights "$dir/w.h5" "$@"; }
base=$(run --in "$dir/t.h5:/raw" --out "$dir/t_o.h5:/p")
[ "$base" -gt 0 ] || fail "baseline run"
allow=$((base + 16 * 1024))
export XDG_CACHE_HOME=$dir/cache
for mib in 32 128; do
    kib=$(run --in "$dir/s.h5:/raw" --out "$dir/o$mib.h5:/p" --mem ${mib}M)
    [ "$kib" -gt 0 ] || fail "infer --mem ${mib}M"
    echo "  --mem ${mib}M: peak $((kib / 1024)) MiB (budget + allowance $(((mib * 1024 + allow) / 1024)) MiB)"
    [ "$kib" -le $((mib * 1024 + allow)) ] || fail "--mem ${mib}M: peak RSS ${kib} KiB"
    # precise: peak RSS (/usr/bin/time) less the RSS before planning (printed by --plan)
    /usr/bin/time -f "%M" -o "$dir/peak" "$vox" infer --threads 2 --net "$net" \
        --weights "$dir/w.h5" --in "$dir/s.h5:/raw" --out "$dir/p$mib.h5:/p" --mem ${mib}M \
        --plan --quiet > "$dir/plan" || fail "infer --plan --mem ${mib}M"
    before=$(sed -n 's/.*before planning: RSS \([0-9]*\) KiB.*/\1/p' "$dir/plan")
    after=$(tail -1 "$dir/peak")
    echo "  --mem ${mib}M: peak $after KiB - before planning $before KiB = $((after - before)) KiB"
    [ -n "$before" ] && [ $((after - before)) -le $((mib * 1024)) ] \
        || fail "--mem ${mib}M: peak RSS - RSS before planning over the budget"
done
# a same-padded net with 7^3 and 5^3 convs, by FFT and direct, at two budgets each: the
# precise check (the plan, the staging, HDF5's chunk caches and a fixed run allowance are all
# in the estimate, src/nn/slide.c)
cat > "$dir/fft.net" <<'NET'
input  raw channels=1
conv   c1  raw -> 8 kernel=7x7x7 pad=same act=relu
conv   c2  c1 -> 8 kernel=5x5x5 pad=same act=relu
conv   c3  c2 -> 3 kernel=5x5x5 pad=same
output aff c3 act=sigmoid
NET
"$vox" synth --quiet --out "$dir/f.h5" --shape 48,96,96 --seed 5 || fail "synth fft"
"$vox" infer --quiet --net "$dir/fft.net" --init msra --seed 3 --save-weights "$dir/fw.h5" \
    || fail "save fft weights"
for conv in fft direct; do
    for mib in 32 64; do
        /usr/bin/time -f "%M" -o "$dir/peak" "$vox" infer --threads 2 --net "$dir/fft.net" \
            --weights "$dir/fw.h5" --in "$dir/f.h5:/raw" --out "$dir/f$conv$mib.h5:/aff" \
            --mem ${mib}M --conv $conv --plan --quiet > "$dir/plan" \
            || fail "fft net --conv $conv --mem ${mib}M"
        before=$(sed -n 's/.*before planning: RSS \([0-9]*\) KiB.*/\1/p' "$dir/plan")
        covers=$(grep -o 'mem covers [0-9.]* MiB' "$dir/plan")
        after=$(tail -1 "$dir/peak")
        echo "  fft net --conv $conv --mem ${mib}M: $covers; peak $after KiB - before $before" \
             "KiB = $((after - before)) KiB"
        [ -n "$before" ] && [ $((after - before)) -le $((mib * 1024)) ] \
            || fail "fft net --conv $conv --mem ${mib}M: peak RSS - RSS before over the budget"
    done
done
# a budget below the smallest patch: a message that says so, and no output file
"$vox" infer --threads 2 --net "$dir/fft.net" --weights "$dir/fw.h5" --in "$dir/f.h5:/raw" \
    --out "$dir/small.h5:/aff" --mem 12M --conv fft 2> "$dir/err" && fail "--mem 12M ran"
grep -q "smallest patch .* over the budget of 12.0 MiB" "$dir/err" \
    || fail "--mem 12M: message: $(cat "$dir/err")"
[ ! -e "$dir/small.h5" ] || fail "--mem 12M left an output file"
# the two budgets must choose different tilings, else the comparison below proves nothing
t32=$("$vox" infer --net "$net" --weights "$dir/w.h5" --in "$dir/s.h5:/raw" --conv direct \
    --out "$dir/x32.h5:/p" --mem 32M --threads 2 2>&1 | grep -o "[0-9]* patches of [0-9x]*")
t128=$("$vox" infer --net "$net" --weights "$dir/w.h5" --in "$dir/s.h5:/raw" --conv direct \
    --out "$dir/x128.h5:/p" --mem 128M --threads 2 2>&1 | grep -o "[0-9]* patches of [0-9x]*")
echo "  tilings: $t32 / $t128"
[ -n "$t32" ] && [ "$t32" != "$t128" ] || fail "same tiling under both budgets: $t32"
"$py" - "$dir/o32.h5" "$dir/o128.h5" <<'PY' || fail "outputs differ between the budgets"
import sys, h5py, numpy as np
a, b = (h5py.File(f, "r")["/p"][()] for f in sys.argv[1:3])
d = float(np.abs(a.astype(np.float64) - b).max()) if a.shape == b.shape else float("inf")
print("  outputs %s vs %s, max |difference| %g" % (a.shape, b.shape, d))
sys.exit(0 if d <= 1e-6 else 1)
PY
"$py" - "$dir/x32.h5" "$dir/x128.h5" <<'PY' || fail "--conv direct outputs not bitwise equal"
import sys, h5py, numpy as np
a, b = (h5py.File(f, "r")["/p"][()] for f in sys.argv[1:3])
n = int((a != b).sum()) if a.shape == b.shape else -1
print("  --conv direct: %d voxels differ between the tilings" % n)
sys.exit(0 if n == 0 else 1)
PY
echo "cli_infer_mem: ok"
