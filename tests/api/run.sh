#!/usr/bin/env bash
# The API against its own document, from outside the process:
#   1. schemathesis (every operation, every check) against /openapi.json;
#   2. a client generated from that document (openapi-python-client) calling every
#      route (call_every_route.py).
# The daemon and both clients run in a network namespace of their own that has only
# loopback, so no generated webhook URL can reach past 127.0.0.1.
#   tests/api/run.sh <evhost binary> <tools dir>
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(realpath "$1")
tools=$(realpath -m "$2")

venv="$tools/venv"
stamp="$venv/.requirements"
if ! cmp -s "$here/requirements.txt" "$stamp" 2>/dev/null; then
  echo "installing $(grep -v '^#' "$here/requirements.txt" | tr '\n' ' ')into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$stamp"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# As root this is a plain network namespace; otherwise a user namespace makes one.
ns=(unshare --net)
[ "$(id -u)" = 0 ] || ns=(unshare --map-root-user --net)
"${ns[@]}" env BIN="$bin" VENV="$venv" WORK="$work" HERE="$here" bash -euo pipefail -c '
  ip link set lo up
  token=api-fuzz-token-0123456789
  port=18080
  EVHOST_DATA_DIR="$WORK/data" EVHOST_API_TOKEN="$token" \
    EVHOST_SERVER__LISTEN="127.0.0.1:$port" \
    EVHOST_WEBHOOKS__ALLOWED_NETWORKS="[\"127.0.0.0/8\"]" \
    EVHOST_LOG__LEVEL=warn \
    "$BIN" serve >"$WORK/daemon.log" 2>&1 &
  daemon=$!
  stop() { kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; }
  trap stop EXIT
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.1
  done
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$WORK/daemon.log"; exit 1; }

  echo "schemathesis $("$VENV/bin/schemathesis" --version | tr -dc "0-9.")"
  status=0
  (cd "$WORK" && "$VENV/bin/python" "$HERE/schemathesis_cli.py" --no-color --config-file "$HERE/schemathesis.toml" run \
      "http://127.0.0.1:$port/openapi.json" \
      -H "Authorization: Bearer $token" \
      --checks all --workers 2 --seed 1 --no-shrink) || status=$?

  echo
  echo "client generated from /openapi.json calls every route"
  curl -sf "http://127.0.0.1:$port/openapi.json" >"$WORK/openapi.json"
  (cd "$WORK" && "$VENV/bin/openapi-python-client" generate --path openapi.json \
      --output-path evhost_client --meta none --config "$HERE/generate.yaml" >generate.log 2>&1) || { cat "$WORK/generate.log"; exit 1; }
  PYTHONPATH="$WORK" "$VENV/bin/python" "$HERE/call_every_route.py" \
      "http://127.0.0.1:$port" "$token" "$WORK/openapi.json" || status=$?

  if [ "$status" != 0 ]; then
    echo "--- daemon log (last 40 lines)"; tail -n 40 "$WORK/daemon.log"
  fi
  exit "$status"
'
