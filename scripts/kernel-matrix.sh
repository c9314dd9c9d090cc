#!/usr/bin/env bash
# The kernel test matrix. Boots Debian's own kernels in qemu
# (scripts/kernels/run-kernel.sh: 5.10 from bullseye, 6.1 from bookworm, 6.12
# from trixie; the packages come from the Debian archive and are cached under
# $WORK, never committed), with this machine's / shared, and runs inside each
# the real-BPF probe tests (crates/podscope-bpf/tests/probes.rs), the
# syscalls and tracepoint tests of the CLI (crates/podscope/tests/syscalls.rs,
# tracepoints.rs) and `podscope probes`, all built here. Prints one table per kernel (probe,
# implementation chosen, tests passed) and fails if any test failed.
# Needs root. scripts/test.sh runs it; KERNELS="bookworm" runs fewer.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
SUITES=${KERNELS:-bullseye bookworm trixie}
export WORK=${WORK:-/var/tmp/podscope-kernels}

log() { echo "kernel-matrix: $*" >&2; }

# qemu and what run-kernel.sh needs; e2fsprogs and util-linux for the block
# tests' loop devices and file systems inside the guests.
PKGS=(qemu-system-x86 qemu-system-data kmod busybox-static xz-utils zstd bc time e2fsprogs util-linux)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# /dev/kvm on these machines is a PVM variant that cannot run stock kernels,
# so software emulation (TCG) is the default; ACCEL=kvm or auto to try KVM.
export ACCEL=${ACCEL:-tcg}
log "guests run under $ACCEL$([ "$ACCEL" = tcg ] && echo ' (software emulation: correctness only, no timing figures)')"

cargo build --locked -q -p podscope
testbin=$(cargo test --locked -q -p podscope-bpf --test probes --no-run --message-format=json 2>/dev/null |
  python3 -c 'import sys, json
for line in sys.stdin:
    j = json.loads(line)
    if j.get("reason") == "compiler-artifact" and j.get("executable") and j["target"]["name"] == "probes":
        print(j["executable"])')
[ -x "$testbin" ] || { log "could not find the probes test binary"; exit 1; }
# The CLI tests of probes that are not in probes.rs: name=binary pairs.
extra=""
for t in syscalls tracepoints; do
  bin=$(cargo test --locked -q -p podscope --test $t --no-run --message-format=json 2>/dev/null |
    python3 -c 'import sys, json
for line in sys.stdin:
    j = json.loads(line)
    if j.get("reason") == "compiler-artifact" and j.get("executable") and j["target"]["kind"] == ["test"]:
        print(j["executable"])')
  [ -x "$bin" ] || { log "could not find the $t test binary"; exit 1; }
  extra="$extra $t=$bin"
done

kernel_of() {  # suite -> kernel version, fetched once and remembered
  local suite=$1 mark=$WORK/suite-$1 kver
  if [ -f "$mark" ] && [ -d "$WORK/kernels/$(cat "$mark")/boot" ]; then
    cat "$mark"
    return
  fi
  kver=$(bash scripts/kernels/run-kernel.sh --fetch "$suite" | tail -1)
  echo "$kver" > "$mark"
  echo "$kver"
}

# The guest script (run-kernel.sh keeps lines starting with @@ for itself): a loop device and ext4 need their modules; the tests
# themselves make their loop devices and file systems.
# The CLI as cargo built it (CARGO_TARGET_DIR, when set, is where).
podscope_bin=${CARGO_TARGET_DIR:-$repo/target}/debug/podscope
guest_cmd="cd $repo
modprobe loop 2>/dev/null; modprobe ext4 2>/dev/null
echo '::podscope-probes::'
$podscope_bin probes -o json
# Whole traces too: every probe at once with the cgroup watcher (which the
# probe tests do not load), by host and in pod mode (kernel admission on).
$podscope_bin trace all --all --duration 2s -o none > /tmp/trace-all.out 2>&1
echo \"::podscope-trace=all --all rc=\$?\"
grep -E 'warning|error|probes attached' /tmp/trace-all.out
$podscope_bin trace exec,tcp -A --wait --duration 2s -o none > /tmp/trace-pods.out 2>&1
echo \"::podscope-trace=exec,tcp -A --wait rc=\$?\"
grep -E 'warning|error|probes attached' /tmp/trace-pods.out
# net is not part of 'all' (asked for by name): its own whole trace.
$podscope_bin trace net,drop --all --duration 2s -o none > /tmp/trace-net.out 2>&1
echo \"::podscope-trace=net,drop --all rc=\$?\"
grep -E 'warning|error|probes attached' /tmp/trace-net.out
echo '::podscope-tests::'
$testbin --test-threads=1 --color never 2>&1
echo \"::podscope-tests-rc=\$?\""
# The CLI tests run in a second boot of the same kernel: under TCG the probe
# tests alone take most of run-kernel.sh's 600 s. EXTRA_ONLY=1 runs only these.
extra_cmd="cd $repo
modprobe veth 2>/dev/null  # tests/tracepoints.rs makes a veth pair (no module autoloading in the guests)
for pair in $extra; do
  echo \"::podscope-extra=\${pair%%=*}::\"
  \${pair#*=} --test-threads=1 --color never 2>&1
  echo \"::podscope-extra-rc=\$?\"
done"

failed=0
summary=()
for suite in $SUITES; do
  kver=$(kernel_of "$suite")
  out=$(mktemp)
  log "== $suite: Linux $kver"
  # A guest kernel can crash under TCG (seen once in ~10 boots of 6.12: an
  # int3 oops in early text patching, before any of our code runs; and once
  # during `podscope probes`, whose many attaches patch kernel text too);
  # run-kernel.sh then has no exit code (125) and the guest never reports
  # its tests' exit code. Boot again, at most twice, keep the failed boot's
  # console log, and say so. A crash our code caused every time still fails
  # after the third boot.
  for attempt in 1 2 3; do
    set +e
    if [ "${EXTRA_ONLY:-}" = 1 ]; then
      : > "$out"; rc=0
    else
      bash scripts/kernels/run-kernel.sh "$kver" "$guest_cmd" > "$out" 2>&1
      rc=$?
    fi
    set -e
    [ $rc -eq 125 ] && ! grep -q '::podscope-tests-rc=' "$out" || break
    cp "$WORK/logs/$kver.console.log" "$WORK/logs/$kver.console.attempt$attempt.log" 2>/dev/null || true
    log "$suite: the guest died before its tests ended (attempt $attempt; console: $WORK/logs/$kver.console.attempt$attempt.log)$( [ $attempt -lt 3 ] && echo '; booting again')"
    tail -n 5 "$WORK/logs/$kver.console.log" >&2 || true
  done
  for attempt in 1 2 3; do
    set +e
    bash scripts/kernels/run-kernel.sh "$kver" "$extra_cmd" > "$out.extra" 2>&1
    rc2=$?
    set -e
    # As for the probe tests' guest: a guest that died before every test
    # binary reported (no exit code: 125) boots again, at most twice, its
    # console log kept. Seen once on 5.10 under TCG: soft lockups and RCU
    # stalls in the kernel while tests/tracepoints.rs removed a killed
    # trace's tracefs instance (the next boot passed).
    [ $rc2 -eq 125 ] && [ "$(grep -c '::podscope-extra-rc=' "$out.extra")" -lt 2 ] || break
    cp "$WORK/logs/$kver.console.log" "$WORK/logs/$kver.console.extra-attempt$attempt.log" 2>/dev/null || true
    log "$suite: the guest for the CLI tests died before they ended (attempt $attempt; console: $WORK/logs/$kver.console.extra-attempt$attempt.log)$( [ $attempt -lt 3 ] && echo '; booting again')"
    tail -n 5 "$WORK/logs/$kver.console.log" >&2 || true
  done
  cat "$out.extra" >> "$out"
  rm -f "$out.extra"
  [ $rc2 -eq 0 ] || { log "$suite: the CLI tests' guest exited with $rc2"; failed=1; }
  EXTRA_ONLY=${EXTRA_ONLY:-} python3 - "$out" "$kver" <<'EOF' || failed=1
import json, os, re, sys
path, kver = sys.argv[1], sys.argv[2]
extra_only = os.environ.get("EXTRA_ONLY") == "1"
text = open(path, errors="replace").read()
probes, tests, rc, traces = {}, {}, None, {}
extra = {}   # test binary -> {test: result}, and its exit code
extra_rc = {}
section = None
current = None
for line in text.splitlines():
    m = re.match(r"^::podscope-extra=(\S+)::", line)
    if m: section = "extra"; current = m.group(1); extra[current] = {}; continue
    m = re.match(r"^::podscope-extra-rc=(\d+)", line)
    if m: extra_rc[current] = int(m.group(1)); continue
    if section == "extra":
        m = re.match(r"^test (\S+) \.\.\. (ok|FAILED|ignored)", line)
        if m: extra[current][m.group(1)] = m.group(2)
        continue
    if line.startswith("::podscope-probes::"): section = "probes"; continue
    if line.startswith("::podscope-tests-rc="): rc = int(line.split("=")[1].strip(":")); continue
    if line.startswith("::podscope-tests::"): section = "tests"; continue
    m = re.match(r"^::podscope-trace=(.*) rc=(\d+)", line)
    if m: traces[m.group(1)] = int(m.group(2)); continue
    if section == "probes" and line.startswith("{"):
        row = json.loads(line)
        probes[row["probe"]] = row
    m = re.match(r"^test (\S+) \.\.\. (ok|FAILED|ignored)", line)
    if m: tests[m.group(1)] = m.group(2)
# Which probe each test exercises.
def probe_of(test):
    first = test.split("_")[0]
    return {"odirect": "bio", "asking": "bio", "lost": "exec", "cgroup": "exec"}.get(first, first)
print(f"\nLinux {kver}")
print(f"{'PROBE':<7} {'IMPLEMENTATION':<16} {'TESTS':<8} FAILED")
for name, row in probes.items():
    mine = [t for t in tests if probe_of(t) == name]
    ok = [t for t in mine if tests[t] == "ok"]
    bad = [t for t in mine if tests[t] == "FAILED"]
    imp = row.get("implementation") or "NO: " + (row.get("reason") or "?")[:60]
    print(f"{name:<7} {imp:<16} {len(ok)}/{len(mine):<6} {', '.join(bad)}")
# Tests of what is not a tracing probe (accel: podscope accelerate's
# sockops + sk_msg programs), so that no test goes uncounted in the table.
for name in sorted({probe_of(t) for t in tests} - set(probes)):
    mine = [t for t in tests if probe_of(t) == name]
    ok = [t for t in mine if tests[t] == "ok"]
    bad = [t for t in mine if tests[t] == "FAILED"]
    imp = {"accel": "sockops+sk_msg"}.get(name, "-")
    print(f"{name:<7} {imp:<16} {len(ok)}/{len(mine):<6} {', '.join(bad)}")
for binary, results in extra.items():
    ok = [t for t, r in results.items() if r == "ok"]
    bad = [t for t, r in results.items() if r == "FAILED"]
    name = {"tracepoints": "tracepoint"}.get(binary, binary)
    print(f"{name:<7} {'tests/' + binary + '.rs':<16} {len(ok)}/{len(results):<6} {', '.join(bad)}")
for args, code in traces.items():
    print(f"podscope trace {args}: {'ok' if code == 0 else f'FAILED (exit {code})'}")
bad = [t for t, r in tests.items() if r == "FAILED"]
bad += [f"{b}: {t}" for b, res in extra.items() for t, r in res.items() if r == "FAILED"]
bad += [f"tests/{b}.rs exited with {c}" for b, c in extra_rc.items() if c != 0]
if len(extra) != 2 or any(not r for r in extra.values()):
    bad.append("the syscalls/tracepoints tests did not report")
bad += [f"trace {a}" for a, c in traces.items() if c != 0]
if "warning: not tracing" in text:
    bad.append("a probe did not load in a whole trace")
if len(traces) != 3 and not extra_only:
    bad.append("the whole-trace runs did not report")
if (not probes or not tests or rc is None) and not extra_only:
    print(f"the guest did not finish (probes: {len(probes)}, tests: {len(tests)}); its output:")
    print(text[-4000:])
    sys.exit(1)
if bad or (rc != 0 and not extra_only):
    after_panic = False
    for line in text.splitlines():
        # A panic's message is the line after "panicked at".
        if after_panic or "podscope: error" in line or "warning: not tracing" in line or "panicked" in line or "assert" in line or "left:" in line or "right:" in line or "loading probes" in line:
            print("  " + line)
        after_panic = "panicked at" in line
    sys.exit(1)
print(f"{len(tests) + sum(len(r) for r in extra.values())} passed, 0 failed")
EOF
  [ $rc -eq 0 ] || { log "$suite: the guest exited with $rc"; failed=1; }
  summary+=("$suite=$kver")
  rm -f "$out"
done
log "kernels: ${summary[*]}"
exit $failed
