#!/usr/bin/env bash
# The ftrace hook against the BPF tracepoint hook on the same workload: a
# static loop of N getppid (default 200,000), traced by
# `tp:syscalls:sys_enter_getppid` and by `ftrace:syscalls:sys_enter_getppid`
# (--pid of the loop, -o none), 3 runs each, alternating with untraced runs.
# Prints per hook the loop's own CPU time (CLOCK_PROCESS_CPUTIME_ID: it
# includes what the kernel does in its context, the BPF program or ftrace's
# formatting), podscope's CPU time (utime + stime, read before it stops),
# and the records delivered and lost. Needs root and a C compiler with
# static libc.
#   bash scripts/bench-ftrace.sh [PODSCOPE] [N]
#   FTRACE_BUFFER=64M bash scripts/bench-ftrace.sh ...   (the ftrace instance's buffer per CPU)
# default: target/release/podscope (else target/debug).
set -euo pipefail
cd "$(dirname "$0")/.."
T=${CARGO_TARGET_DIR:-target}
P=${1:-}
[ -z "$P" ] && { [ -x "$T/release/podscope" ] && P=$T/release/podscope || P=$T/debug/podscope; }
N=${2:-200000}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/loop.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    char go[8];
    if (argc > 2 && read(0, go, sizeof go) <= 0) return 2;
    struct timespec a, b;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    for (long i = 0; i < n; i++) syscall(SYS_getppid);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e6);
    return 0;
}
C
cc -O2 -static -o "$dir/loop" "$dir/loop.c"
tck=$(getconf CLK_TCK)
# One traced run: prints "LOOP_MS PODSCOPE_MS RECORDS LOST".
traced() {
    local probe=$1
    rm -f "$dir/go"; mkfifo "$dir/go"
    "$dir/loop" "$N" wait < "$dir/go" > "$dir/loop.out" & local w=$!
    exec 3> "$dir/go"
    local extra=()
    # FTRACE_BUFFER=64M: the ftrace instance's buffer per CPU (--ring-buffer-size).
    [[ $probe == ftrace:* && -n ${FTRACE_BUFFER:-} ]] && extra=(--ring-buffer-size "$FTRACE_BUFFER")
    "$P" trace "$probe" --pid $w -o none "${extra[@]}" 2> "$dir/err" & local p=$!
    for _ in $(seq 100); do grep -q "probes attached" "$dir/err" && break; sleep 0.1; done
    grep -q "probes attached" "$dir/err" || { cat "$dir/err" >&2; exit 1; }
    echo go >&3; exec 3>&-
    wait $w
    sleep 0.5
    local ticks
    ticks=$(awk '{print $14+$15}' "/proc/$p/stat")
    kill -INT $p; wait $p || true
    python3 - "$dir/err" "$(cat "$dir/loop.out")" "$ticks" "$tck" <<'PY'
import re, sys
err = open(sys.argv[1]).read()
loop, ticks, tck = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
m = re.search(r"ftrace: (\d+) records .*?, (\d+) lost", err)
if m:
    rec, lost = int(m[1]), int(m[2])
else:
    # BPF: "traced for Xs: N events, M lost"
    m = re.search(r"traced for [^:]*: (\d+) events, (\d+) lost", err)
    rec, lost = (int(m[1]), int(m[2])) if m else (-1, -1)
print(loop, ticks * 1000 / tck, rec, lost)
PY
}
declare -A loop pod recs lost
un=()
for round in 1 2 3; do
    un+=("$("$dir/loop" "$N")")
    for hook in tp ftrace; do
        read -r l c r x < <(traced "$hook:syscalls:sys_enter_getppid")
        loop[$hook]+="$l "; pod[$hook]+="$c "; recs[$hook]+="$r "; lost[$hook]+="$x "
    done
done
python3 - "$N" "${un[*]}" "${loop[tp]}" "${pod[tp]}" "${recs[tp]}" "${lost[tp]}" \
    "${loop[ftrace]}" "${pod[ftrace]}" "${recs[ftrace]}" "${lost[ftrace]}" <<'PY'
import sys, statistics as s
n = int(sys.argv[1])
f = lambda i: [float(x) for x in sys.argv[i].split()]
un = s.median(f(2))
print(f"{n} getppid; untraced loop CPU median {un:.0f} ms (runs {sys.argv[2]})")
for name, i in (("BPF tp:", 3), ("ftrace:", 7)):
    lp, pc, rc, ls = f(i), f(i + 1), f(i + 2), f(i + 3)
    print(f"{name:8} loop CPU median {s.median(lp):.0f} ms ({s.median(lp)/un:.2f}x untraced); "
          f"podscope CPU median {s.median(pc):.0f} ms = {s.median(pc)*1e3/max(s.median(rc),1):.2f} us per record; "
          f"records {' '.join(str(int(x)) for x in rc)}; lost {' '.join(str(int(x)) for x in ls)}")
PY
