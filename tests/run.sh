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

# Language tools the tests install (cargo-fuzz, componentize-py, schemathesis) live here.
tools=$(realpath -m "${EVHOST_TOOLS_DIR:-${CARGO_TARGET_DIR:-target}/tools}")
export EVHOST_TOOLS_DIR="$tools"
evhost="${CARGO_TARGET_DIR:-target}/debug/evhost"

# The Python and JavaScript SDKs and examples: the SDKs' payload types are those of
# the daemon's catalog; each example passes its tests under pytest or node's test
# runner and builds with componentize-py or componentize-js (installed by
# `plugin build` into the tools folder on first use).
step "Python and JavaScript plugins: SDK types, pytest, node --test, builds"
"$evhost" catalog --json | python3 plugins/sdk-python/gen_types.py --check
for example in spam-router pii-redactor vip-router; do
  "$evhost" plugin build "plugins/examples/$example/python" >/dev/null
  "$evhost" plugin build "plugins/examples/$example/js" >/dev/null
done
python=$(ls -d "$tools"/componentize-py-*/bin/python | tail -n 1)
for example in spam-router pii-redactor vip-router; do
  (cd "plugins/examples/$example/python" && PYTHONPATH="$OLDPWD/plugins/sdk-python" "$python" -m pytest -q)
  (cd "plugins/examples/$example/js" && node --test)
done
export EVHOST_TEST_PYTHON_PLUGINS=1 EVHOST_TEST_JS_PLUGINS=1

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
step "fuzz targets, 15 s each"
CARGO_TARGET_DIR="${EVHOST_FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/fuzz}" \
  bash fuzz/run.sh 15 "$tools"

# The API against its own OpenAPI document: schemathesis, and a generated client.
step "API: schemathesis and a generated client against /openapi.json"
bash tests/api/run.sh "${CARGO_TARGET_DIR:-target}/debug/evhost" "$tools"

# The console in a real browser (Debian's Chromium, installed when missing), driven
# by playwright-core (installed into the tools folder).
step "console: browser tests with Chromium"
bash tests/browser/run.sh "$evhost" "$tools" "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/plugin"

# One closing line for the whole run: cargo prints a result per test binary, and the
# last of those is often a crate with no doc tests.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "\nsummary: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
