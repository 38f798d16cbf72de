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

# The example and test plugins, as components; the plugin tests load these files.
step "build the plugins for wasm32-wasip2"
cargo build --locked --profile plugin --target wasm32-wasip2 \
  -p spam-router -p pii-redactor -p vip-router -p hostile

if [ -n "${EVHOST_TEST_POSTGRES_URL:-}" ]; then
  step "PostgreSQL tests will use \$EVHOST_TEST_POSTGRES_URL"
else
  step "EVHOST_TEST_POSTGRES_URL is not set: PostgreSQL tests will be skipped (each says so)"
fi

step "cargo test --workspace"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"

# Coverage-guided fuzzing of the parsers (fuzz/README.md): a short fixed run of each
# target; any crash fails the suite.
tools=$(realpath -m "${EVHOST_TOOLS_DIR:-${CARGO_TARGET_DIR:-target}/tools}")
step "fuzz targets, 15 s each"
CARGO_TARGET_DIR="${EVHOST_FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/fuzz}" \
  bash fuzz/run.sh 15 "$tools"

# The API against its own OpenAPI document: schemathesis, and a generated client.
step "API: schemathesis and a generated client against /openapi.json"
bash tests/api/run.sh "${CARGO_TARGET_DIR:-target}/debug/evhost" "$tools"

# One closing line for the whole run: cargo prints a result per test binary, and the
# last of those is often a crate with no doc tests.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "\nsummary: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
