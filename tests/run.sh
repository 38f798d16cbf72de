#!/usr/bin/env bash
# The whole test suite, on a fresh machine with only rustup and cargo installed.
# Formatting and lints first (cheap, and a red lint is a red build), then every
# unit test and the black-box suite against the freshly built binary.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain: $(cargo --version)"
# Plugins are built for wasm32-wasip2; make sure the target is there.
if command -v rustup >/dev/null 2>&1; then
  rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build the daemon"
cargo build --locked -p evhost

if [ -n "${EVHOST_TEST_POSTGRES_URL:-}" ]; then
  step "PostgreSQL tests will use \$EVHOST_TEST_POSTGRES_URL"
else
  step "EVHOST_TEST_POSTGRES_URL is not set: PostgreSQL tests will be skipped (each says so)"
fi

step "cargo test --workspace"
cargo test --workspace --locked
