#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, formatting, lints, then every
# test tier: pure unit tests, root tests that load real BPF programs and make
# real kernel events, and pod tests against a real containerd (testbed/podbed.sh).
# Then the kernel matrix (scripts/kernel-matrix.sh): the probe tests again
# inside Debian's 5.10, 6.1 and 6.12 kernels under qemu. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

# CI builds once from scratch: incremental state would only cost disk (GBs).
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
# A full build of the tests needs about NEED_GB of free disk under target/;
# say so up front rather than dying in the linker with a bus error.
NEED_GB=6
mkdir -p target
free_gb=$(df -P -BG target | awk 'NR==2 {gsub("G","",$4); print $4}')
echo "== disk: ${free_gb} GB free under target/ (a build from scratch writes about ${NEED_GB} GB (2 GB measured with line tables only))"
if [ "${free_gb}" -lt "${NEED_GB}" ] && [ ! -d target/debug/deps ]; then
  echo "test.sh: only ${free_gb} GB free for target/; a build from scratch needs about ${NEED_GB} GB" >&2
  df -h target >&2
  exit 1
fi

bash scripts/setup.sh
bash testbed/podbed.sh install
# The OpenTelemetry Python SDK (PyPI) for the instrumented-app test in tests/xtrace.rs.
bash scripts/otel-sdk.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo build (tests)"
cargo test --workspace --locked --no-run

echo "== test bed: real containerd with CRI pods"
trap 'bash testbed/podbed.sh down' EXIT
PODBED_SOCKET=$(bash testbed/podbed.sh up)
export PODBED_SOCKET

echo "== cargo test"
cargo test --workspace --locked

echo "== disk after the tests: $(du -sh target | cut -f1) in target/, $(df -P -BG target | awk 'NR==2 {print $4}') free"

echo "== kernel matrix: the probe tests inside Debian's 5.10, 6.1 and 6.12 kernels"
bash scripts/kernel-matrix.sh
