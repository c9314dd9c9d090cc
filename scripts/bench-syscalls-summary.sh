#!/usr/bin/env bash
# What `podscope trace syscalls --summary` costs the traced workload: a
# static loop of 1,000,000 getppid, its own CPU time (CLOCK_PROCESS_CPUTIME_ID,
# which includes the BPF programs run in its context), untraced and traced,
# 3 rounds of 5 runs each, alternating. Prints medians, minimums and the
# slowdown. Needs root and a C compiler with static libc.
#   bash scripts/bench-syscalls-summary.sh [PODSCOPE] [trace flags...]
# default: target/release/podscope (else target/debug) with --all --summary.
set -euo pipefail
cd "$(dirname "$0")/.."
P=${1:-}
[ -n "$P" ] && shift
[ -z "$P" ] && { [ -x target/release/podscope ] && P=target/release/podscope || P=target/debug/podscope; }
[ $# -eq 0 ] && set -- --all --summary
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/loop.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    struct timespec a, b;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    for (long i = 0; i < n; i++) syscall(SYS_getppid);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e6);
    return 0;
}
C
cc -O2 -static -o "$dir/loop" "$dir/loop.c"
un=(); tr=()
for round in 1 2 3; do
  for i in 1 2 3 4 5; do un+=("$("$dir/loop")"); done
  "$P" trace syscalls "$@" -o none --duration 120s 2>"$dir/err" & pid=$!
  # Attached once its start line is out.
  for _ in $(seq 100); do grep -q "probes attached" "$dir/err" && break; sleep 0.1; done
  grep -q "probes attached" "$dir/err" || { cat "$dir/err"; exit 1; }
  for i in 1 2 3 4 5; do tr+=("$("$dir/loop")"); done
  kill -INT $pid; wait $pid
done
python3 - "${un[*]}" "${tr[*]}" <<'PY'
import sys, statistics as s
u = [float(x) for x in sys.argv[1].split()]; t = [float(x) for x in sys.argv[2].split()]
print(f"1M getppid, CPU ms: untraced median {s.median(u):.0f} (min {min(u):.0f}); "
      f"traced median {s.median(t):.0f} (min {min(t):.0f}); slowdown {s.median(t)/s.median(u):.2f}x median, "
      f"{min(t)/min(u):.2f}x min to min")
PY
