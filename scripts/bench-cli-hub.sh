#!/usr/bin/env bash
# What `podscope --hub URL trace` costs the CLI per event: a hub and an agent
# on this machine, a test-bed pod that opens /etc/hostname 100,000 times
# when told, and the CLI tracing it (`trace open`, 14 s) over each hub API
# (rest, grpc) and output (-o json to /dev/null, -o none). Prints the CLI's
# CPU time (utime + stime from /proc, read until it exits) per 1,000 events
# and the events it counted. Needs root and the containerd test bed
# (PODBED_SOCKET, testbed/podbed.sh); the pod is removed at the end.
#   bash scripts/bench-cli-hub.sh [PODSCOPE] [PORT]
# default: target/release/podscope, port 17900.
set -euo pipefail
cd "$(dirname "$0")/.."
P=$(realpath "${1:-target/release/podscope}")
PORT=${2:-17900}
: "${PODBED_SOCKET:?set PODBED_SOCKET (export PODBED_SOCKET=\$(bash testbed/podbed.sh up))}"
BED=
for b in "$(dirname "$P")/podbed" "${CARGO_TARGET_DIR:-target}/release/podbed" "${CARGO_TARGET_DIR:-target}/debug/podbed"; do
    [ -x "$b" ] && { BED=$b; break; }
done
[ -n "$BED" ] || { echo "no podbed binary next to $P or in ${CARGO_TARGET_DIR:-target}/{release,debug} (cargo build -p podscope-runtime --bin podbed)" >&2; exit 1; }
dir=$(mktemp -d)
tok=$dir/token
echo bench-token-cli-hub > "$tok"
pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    "$BED" rm-pod --name storm --namespace cli-bench >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
"$BED" rm-pod --name storm --namespace cli-bench >/dev/null 2>&1 || true
"$BED" run-pod --name storm --namespace cli-bench -- sh -c \
    'mkfifo /tmp/go; while :; do read x < /tmp/go; i=0; while [ $i -lt 100000 ]; do read y < /etc/hostname; i=$((i+1)); done; done' >/dev/null
"$P" hub --listen "127.0.0.1:$PORT" --token-file "$tok" 2>"$dir/hub.err" & pids+=($!)
sleep 1
"$P" agent --hub "http://127.0.0.1:$PORT" --node cli-bench --runtime-endpoint "unix://$PODBED_SOCKET" \
    --token-file "$tok" 2>"$dir/agent.err" & pids+=($!)
pid=$("$BED" list | python3 -c 'import json,sys; print([c["pid"] for p in json.load(sys.stdin) if p["name"]=="storm" and p["namespace"]=="cli-bench" for c in p["containers"]][0])')
for i in $(seq 50); do
    curl -sf -H "Authorization: Bearer $(cat "$tok")" "http://127.0.0.1:$PORT/v1/pods?namespace=cli-bench" | grep -q storm && break
    sleep 0.2
done
tck=$(getconf CLK_TCK)
for api in rest grpc; do
    for o in json none; do
        "$P" --hub "http://127.0.0.1:$PORT" --token-file "$tok" --hub-api $api \
            trace open -n cli-bench --pod storm -o $o --duration 14s >/dev/null 2>"$dir/cli.err" &
        t=$!
        sleep 3
        : > "/proc/$pid/root/tmp/go"
        ticks=0
        while kill -0 $t 2>/dev/null; do
            s=$(awk '{print $14+$15}' "/proc/$t/stat" 2>/dev/null || true)
            [ -n "$s" ] && ticks=$s
            sleep 0.2
        done
        wait $t || true
        ev=$(grep -o "[0-9]* events \(printed\|received\)" "$dir/cli.err" | head -1 | awk '{print $1}')
        python3 -c "import sys; t,ev,tck=int(sys.argv[1]),int(sys.argv[2] or 0),int(sys.argv[3]); print(f'$api -o $o: {ev} events, CLI CPU {t*1000//tck} ms = {t*1e6/tck/max(ev,1):.2f} ms per 1,000 events')" "$ticks" "$ev" "$tck"
    done
done
