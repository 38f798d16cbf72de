#!/usr/bin/env bash
# Runs every fuzz target for a fixed time and fails on the first crash.
#   fuzz/run.sh <seconds per target> [tools dir]
# The committed corpus (fuzz/corpus/<target>) seeds each run and is not written to;
# what a run finds goes to a scratch folder. A crash leaves its input in
# fuzz/artifacts/<target>/ and the command to replay it in the output.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-15}
tools=$(realpath -m "${2:-../target/tools}")

# cargo-fuzz instruments the code with flags only a nightly compiler takes.
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if [ "$("$tools/bin/cargo-fuzz" --version 2>/dev/null)" != "cargo-fuzz 0.13.2" ]; then
  cargo install cargo-fuzz --version 0.13.2 --locked --root "$tools"
fi
export PATH="$tools/bin:$PATH"
# The caller names the build folder (CARGO_TARGET_DIR); by default one of its own, as
# the instrumented build shares nothing with the test build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/../target/fuzz}"

cargo +nightly fetch --locked
# Safe Rust: coverage guidance without AddressSanitizer, whose instrumented build of
# wasmtime and SQLite costs more than it could find here.
build=(-s none --codegen-units 16)
cargo +nightly fuzz build "${build[@]}"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo +nightly fuzz list); do
  mkdir -p "$scratch/$target" "corpus/$target"
  printf '%-12s ' "$target"
  log="$scratch/$target.log"
  if ! cargo +nightly fuzz run "${build[@]}" "$target" "$scratch/$target" "corpus/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    echo "CRASH"
    tail -n 60 "$log"
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  echo "ok: ${runs:-?} runs in ${seconds}s, ${cov:-cov: ?}"
done
