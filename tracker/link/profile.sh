#!/bin/sh
# Regenerates tracker/link/hot-code.order: runs a release `tracker` under callgrind through workload.py
# (start-up, HTTP and UDP service, stats, shutdown) and lists every function it ran, mangled, for lld's
# --symbol-ordering-file (build.rs). usage: tracker/link/profile.sh [path/to/release/tracker]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../../target/release/tracker}
tmp=$(mktemp -d)
pid=
trap 'rm -rf "$tmp"; [ -z "$pid" ] || kill "$pid" 2>/dev/null || true' EXIT
# run TOOL...: the tracker under TOOL through the workload, then SIGUSR1 and SIGTERM.
run() {
    : >"$tmp/ready"
    "$@" "$bin" --listen 127.0.0.1:0 --udp 127.0.0.1:0 --threads 1 --stats-file "$tmp/stats.json" \
        --state-file "$tmp/state.json" >"$tmp/ready" 2>"$tmp/log" &
    pid=$!
    i=0
    while [ "$(grep -c listening "$tmp/ready" || true)" -lt 2 ]; do
        i=$((i + 1)); [ $i -lt 600 ] || { echo "tracker did not start" >&2; exit 1; }
        sleep 0.1
    done
    tcp=$(grep '"tcp"' "$tmp/ready" | sed 's/.*"addr":"\([^"]*\)".*/\1/')
    udp=$(grep '"udp"' "$tmp/ready" | sed 's/.*"addr":"\([^"]*\)".*/\1/')
    python3 "$here/workload.py" "$tcp" "$udp"
    # The tool's child is the tracker: signal it, not the tool.
    t=$(pgrep -P $pid || echo $pid)
    kill -USR1 $t; sleep 1; kill -TERM $t; wait $pid; pid=
}
run valgrind --tool=callgrind --demangle=no --callgrind-out-file="$tmp/cg.out"
# Code run on this CPU but not under valgrind (libc start-up, IFUNC variants): the functions of the
# code page faults of a plain run (each the first touch of a 64 KiB window, so re-profile after a build).
run perf record -q -e page-faults -c 1 -d -o "$tmp/pf.data"
perf script -i "$tmp/pf.data" -F ip,addr,sym --no-demangle 2>/dev/null \
    | awk '$1 == $3 && $4 != "[unknown]" {print $4}' | sort -u >"$tmp/faulted"
# "fn=(id) name" / "cfn=(id) name": the first mention of each function carries its name ('N marks a
# recursion level, "0x..." code without a symbol).
{ sed -n "s/^c\\{0,1\\}fn=([0-9]*) //p" "$tmp/cg.out" | sed "s/'[0-9]*\$//"; cat "$tmp/faulted"; } \
    | grep -v '^0x\|^(' | sort -u >"$tmp/named"
# Every name of the same code (identical functions are merged; the section carries one of the names).
nm --defined-only "$bin" | awk 'NR == FNR {want[$1] = 1; next} $3 in want {print $1}' "$tmp/named" - \
    | sort -u >"$tmp/addrs"
nm --defined-only "$bin" | awk 'NR == FNR {at[$1] = 1; next} $1 in at {print $3}' "$tmp/addrs" - \
    | cat - "$tmp/named" | sort -u >"$tmp/ran"
# libc picks its string functions by CPU at start-up (IFUNC) and valgrind's CPU is not the machine's:
# with one variant of a function run, every variant of it is listed.
nm --defined-only "$bin" | awk '{print $3}' | sort -u >"$tmp/all"
{ sed -n 's/^__\([a-z0-9]*\)_\(sse\|ssse\|avx\|evex\).*/\1/p' "$tmp/ran"; } | sort -u | while read -r base; do
    grep "^__${base}_\(sse\|ssse\|avx\|evex\)" "$tmp/all" || true
done | cat - "$tmp/ran" >"$tmp/new"
# A page-fault record only names the first function run in each 64 KiB window: what earlier profiles
# found stays listed while the binary still has it (it may be hot only because it is placed well now).
touch "$here/hot-code.order"
grep -Fx -f "$tmp/all" "$here/hot-code.order" | cat - "$tmp/new" | sort -u >"$tmp/order"
mv "$tmp/order" "$here/hot-code.order"
wc -l "$here/hot-code.order"
