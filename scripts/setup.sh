#!/usr/bin/env bash
# Installs what podscope needs to build and run on a fresh Debian 12 machine,
# and mounts the kernel filesystems BPF tracing uses. Idempotent; needs root.
set -euo pipefail

log() { echo "setup: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: needs root (apt-get, mount); run: sudo bash scripts/setup.sh" >&2
  exit 1
fi

# Build: clang for the BPF C programs, libelf/zlib for libbpf, bpftool for vmlinux.h.
# Run/bench: bpftrace for the benchmark's comparison, iperf3 for the drop, net and accelerate benchmarks (tests/accelerate.rs also uses nginx, tcpdump, python3, bpftool). Tests: iproute2, tcpdump (tests/net.rs: the witness on the pods' veths), util-linux (setpriv),
# prometheus (a real server scrapes podscope in the metrics tests; its own service is not used),
# openssl (the TLS tests and the TLS benchmark make throwaway certificates with it),
# docker.io, podman and busybox-static (tests/engines.rs starts a private dockerd
# and podman service and imports a busybox image; neither service is enabled here).
# nginx and curl: the http probe's tests (tests/http.rs) run nginx by hand with their own
# config on a 127.0.0.x port, and compare with its access log; its service is not used.
# dnsmasq-base (the dnsmasq program without its service): the dns probe's test runs it by
# hand on a 127.0.0.x port 53 and compares with its query log.
# dnsdist: the DNS-over-TLS test (tests/dns.rs) runs it by hand on a 127.0.0.x port 853
# in front of that dnsmasq; its service is not used (stopped below where systemd runs it).
# python3 (Debian's, with its ssl module on the system libssl): tests/https.rs reads HTTPS
# 64 bytes at a time through it (SSL_read_ex answered from OpenSSL's buffer).
# nghttp2-client (h2load) and python3-grpcio: the HTTP/2 and gRPC tests (tests/h2.rs)
# load nginx's h2c listener with h2load and run a Python gRPC server and client
# (Debian's /usr/bin/python3, generic handlers: no code generation); golang-go and
# golang-google-grpc-dev: the same test against a Go gRPC server, built offline in GOPATH mode.
# strace and libc6-dev: tests/syscalls.rs and tests/tracepoints.rs build static C workloads (the
# latter also a veth pair, iproute2); tests/syscalls.rs uses strace -c
# as the count witness for the syscalls probe.
# chromium + chromium-driver: tests/ui.rs drives the web view in headless Chromium (WebDriver).
# tmux: tests/top.rs drives podscope top's terminal view (send-keys, capture-pane).
# iptables (nf_tables backend): tests/drop.rs drops a pod's packets with a rule of its own
# chain (host INPUT, and OUTPUT inside the pod's netns) and takes the rule's counter as witness;
# nsenter (util-linux) and ip netns (iproute2) run its senders.
# python3-venv: scripts/otel-sdk.sh makes the OpenTelemetry SDK's venv (PyPI) for tests/xtrace.rs.
PKGS=(clang-19 python3 llvm-19 iperf3 libelf-dev zlib1g-dev pkg-config bpftool bpftrace iproute2 protobuf-compiler tcpdump util-linux prometheus openssl docker.io podman busybox-static nginx curl dnsmasq-base dnsdist nghttp2-client python3-grpcio golang-go golang-google-grpc-dev strace libc6-dev tmux iptables chromium chromium-driver python3-venv)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Tests: kubectl runs podscope as its plugin (tests/kubectl.rs). The base image
# has one; Debian's kubernetes-client supplies it where none is installed.
command -v kubectl >/dev/null || missing+=(kubernetes-client)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "system packages present"
fi
# The package enables dnsdist's service on 127.0.0.1:53; the tests start their own.
if command -v systemctl >/dev/null && systemctl is-active -q dnsdist 2>/dev/null; then
  systemctl disable --now dnsdist >/dev/null 2>&1 || log "could not stop the dnsdist service"
fi

mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing || log "could not mount tracefs"
mountpoint -q /sys/kernel/debug || mount -t debugfs nodev /sys/kernel/debug || log "could not mount debugfs"
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || log "could not mount bpffs"
# tests/xtrace.rs's Service test: a DNATed connection's answer is bridged
# back to the client pod, and only br_netfilter shows it to conntrack (as on
# kube-proxy nodes). Built into some kernels; else loaded here if allowed.
[ -e /proc/sys/net/bridge ] || modprobe br_netfilter 2>/dev/null ||
  log "br_netfilter is not loaded and could not be (the Service test will say so)"
log "ready"
