#!/usr/bin/env bash
# The console's browser tests: Debian's Chromium driven by playwright-core, against
# a daemon built from this tree.
#
#   bash tests/browser/run.sh <evhost binary> <tools dir> <plugin .wasm dir>
#
# Installs what is missing: Chromium from Debian's packages (apt, as root or through
# sudo) and playwright-core from the npm registry into the tools folder. Screenshots
# go to $EVHOST_SCREENSHOTS (default: <tools dir>/../ui-screenshots).
set -euo pipefail
cd "$(dirname "$0")"
evhost=$(realpath "$1")
tools=$(realpath -m "$2")
plugins=$(realpath "$3")
playwright_version=1.65.2

chromium=${EVHOST_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
  echo "Chromium is missing: installing Debian's chromium package"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
"$chromium" --version

if ! command -v node >/dev/null 2>&1; then
  echo "node is needed to drive the browser tests (Debian's nodejs package)" >&2
  exit 1
fi
driver="$tools/playwright-core-$playwright_version"
if [ ! -f "$driver/node_modules/playwright-core/package.json" ]; then
  echo "installing playwright-core $playwright_version into $driver"
  mkdir -p "$driver"
  npm install --silent --no-save --no-package-lock --no-audit --no-fund \
    --prefix "$driver" "playwright-core@$playwright_version"
fi

export EVHOST_BIN="$evhost" EVHOST_CHROMIUM="$chromium" EVHOST_PLAYWRIGHT="$driver/node_modules/playwright-core"
export EVHOST_TEST_PLUGINS_DIR="$plugins"
export EVHOST_SCREENSHOTS="${EVHOST_SCREENSHOTS:-$(dirname "$tools")/ui-screenshots}"
mkdir -p "$EVHOST_SCREENSHOTS"
node --test --test-concurrency=1 console.test.mjs
echo "screenshots: $EVHOST_SCREENSHOTS"
