#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, formatting, lints, then every
# test tier (pure unit tests, root tests that load real BPF programs and make
# real kernel events). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked
