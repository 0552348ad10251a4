#!/usr/bin/env bash
# cli_core.sh: the command line's shared behaviour: every subcommand has --help; unknown
# commands, unknown options and bad values exit 2 with one line on stderr, never a crash;
# vox info reports the CPU and a measured peak; vox bench prints JSON lines with the keys
# every line must have.
set -u
vox=$1
fail=0
check() { if "$@"; then :; else echo "FAIL: $*"; fail=1; fi; }
# usage_error CMD...: exit status 2 and exactly one line of error output
usage_error() {
    local err
    err=$("$@" 2>&1 >/dev/null)
    local rc=$?
    [ $rc -eq 2 ] && [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] && [[ $err == *error* ]] ||
        { echo "FAIL: '$*' -> rc $rc, stderr: $err"; fail=1; }
}

check "$vox" --help >/dev/null
for cmd in $("$vox" --help | awk '/^commands:/{on=1; next} on && /^  [a-z]/ {print $1}'); do
    check "$vox" "$cmd" --help >/dev/null
    usage_error "$vox" "$cmd" --no-such-option
done
usage_error "$vox" no-such-command
usage_error "$vox" info --threads 0
usage_error "$vox" info --threads many
usage_error "$vox" info --threads
usage_error "$vox" bench
usage_error "$vox" bench no-such-problem
usage_error "$vox" bench peak:runs=0
usage_error "$vox" synth --shape 4,4
usage_error "$vox" synth --seed -1 --out /tmp/never.h5

info=$("$vox" info --json)
check grep -q '"isa":"' <<<"$info"
check grep -q '"peak_gflops_1":' <<<"$info"
check grep -q '"mem_gbs_all":' <<<"$info"
check grep -q '"round_trip_ns":' <<<"$info"
VOX_ISA=ref "$vox" info --no-peak | grep -q "^isa  *ref" || { echo "FAIL: VOX_ISA=ref"; fail=1; }
VOX_ISA=bogus "$vox" info --no-peak >/dev/null 2>&1 && { echo "FAIL: VOX_ISA=bogus accepted"; fail=1; }

line=$("$vox" bench peak:runs=1 --threads 1)
for key in problem runs median_s min_s max_s cpu isa threads peak_gflops commit; do
    check grep -q "\"$key\":" <<<"$line"
done
if /usr/bin/python3 -c 'import json' 2>/dev/null; then
    check /usr/bin/python3 -c 'import json,sys; json.loads(sys.argv[1])' "$line"
fi
[ $fail -eq 0 ] && echo "1 passed, 0 failed" || echo "0 passed, 1 failed"
exit $fail
