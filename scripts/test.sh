#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, formatting, lints, then every
# test tier: pure unit tests, root tests that load real BPF programs and make
# real kernel events, and pod tests against a real containerd (testbed/podbed.sh).
# Then the kernel matrix (scripts/kernel-matrix.sh): the probe tests again
# inside Debian's 5.10, 6.1 and 6.12 kernels under qemu. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash testbed/podbed.sh install

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

echo "== kernel matrix: the probe tests inside Debian's 5.10, 6.1 and 6.12 kernels"
bash scripts/kernel-matrix.sh
