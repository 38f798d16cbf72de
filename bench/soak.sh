#!/usr/bin/env bash
# Soak run: evhost (release build, embedded SQLite defaults) at a steady rate with two
# webhook endpoints, driven from outside by the harness in ../shared/harness (its
# README). Every 10 s it records evhost's RSS, open files and WAL size; afterwards it
# prints those with the p99 publish → delivery latency of each 10 s window, and
# whether they stayed flat (within 10 % after the warm-up).
#
#   bench/soak.sh [SECONDS]        # default 600; RATE=2000 events/s
#
# Loopback only; bounded by SECONDS plus the harness's drain.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL=${1:-600}
RATE=${RATE:-2000}
HARNESS=${HARNESS:-../shared/harness}
TARGET=${CARGO_TARGET_DIR:-target}
VENV=${SOAK_VENV:-$TARGET/soak-venv}
PORT=${PORT:-8077}
RX_PORT=${RX_PORT:-9090}
TOKEN=bench-token-0123456789abcdef

[ -f "$HARNESS/publisher.py" ] || { echo "soak: no harness at $HARNESS (set HARNESS)" >&2; exit 2; }
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> a Python environment for the harness ($VENV)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q aiohttp
fi
echo "==> cargo build --release"
cargo build --release --locked -p evhost
BIN="$TARGET/release/evhost"

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "soak: files kept in $work"
}
trap cleanup EXIT

EVHOST_API_TOKEN=$TOKEN EVHOST_WEBHOOKS__ALLOWED_NETWORKS='[127.0.0.0/8]' \
EVHOST_EVENTS__ALLOW_UNKNOWN_FIELDS=true EVHOST_SERVER__LISTEN=127.0.0.1:$PORT \
EVHOST_DATA_DIR="$work/data" RUST_LOG=warn "$BIN" serve 2>"$work/evhost.log" &
evhost=$!
pids+=("$evhost")
"$VENV/bin/python" "$HARNESS/receiver.py" --port "$RX_PORT" >"$work/receiver.log" 2>&1 &
pids+=("$!")
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break
  sleep 0.1
done
# The second endpoint: the harness registers the first for its run.
curl -sf -X POST "http://127.0.0.1:$PORT/v1/webhooks" -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' \
  -d "{\"name\":\"soak-second\",\"url\":\"http://127.0.0.1:$RX_PORT/hook/soak-second\",\"events\":[\"message.*\"]}" >/dev/null

# Every 10 s: seconds since start, RSS (KiB), open files, WAL bytes (both files).
(
  start=$(date +%s)
  while kill -0 "$evhost" 2>/dev/null; do
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$evhost/status")
    fds=$(ls "/proc/$evhost/fd" | wc -l)
    wal=$(cat "$work"/data/*-wal 2>/dev/null | wc -c)
    printf '%s\t%s\t%s\t%s\n' $(( $(date +%s) - start )) "$rss" "$fds" "$wal"
    sleep 10
  done
) >"$work/samples.tsv" &
pids+=("$!")

echo "==> $RATE events/s for $SECONDS_TOTAL s, two endpoints (files in $work)"
EVHOST_TOKEN=$TOKEN "$VENV/bin/python" "$HARNESS/publisher.py" --adapter evhost \
  --base-url "http://127.0.0.1:$PORT" --receiver "http://127.0.0.1:$RX_PORT" \
  -n $(( RATE * SECONDS_TOTAL )) --rate "$RATE" --max-publish-seconds $(( SECONDS_TOTAL + 120 )) \
  --watch evhost="$evhost" --raw "$work/raw.jsonl" --out "$work/result.json" | tee "$work/publisher.txt"

"$VENV/bin/python" - "$work" <<'PY'
import json, sys
work = sys.argv[1]
samples = [list(map(int, l.split("\t"))) for l in open(f"{work}/samples.tsv") if l.strip()]
events = [json.loads(l) for l in open(f"{work}/raw.jsonl")]
t0 = min(e[1] for e in events)
windows = {}
for _id, sent, _ans, status, recv in events:
    if recv is not None:
        windows.setdefault(int((sent - t0) // 10), []).append((recv - sent) * 1000)
def p99(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))]
print(f"{'t (s)':>6} {'RSS MiB':>8} {'fds':>5} {'WAL MiB':>8} {'p99 ms':>8} {'events':>7}")
rows = []
for t, rss, fds, wal in samples:
    w = windows.get(t // 10, [])
    rows.append((t, rss / 1024, fds, wal / 2**20, p99(w) if w else None, len(w)))
    print(f"{t:>6} {rss/1024:>8.1f} {fds:>5} {wal/2**20:>8.1f} {(p99(w) if w else float('nan')):>8.1f} {len(w):>7}")
steady = [r for r in rows if r[0] >= 60 and r[5] > 0]
if steady:
    for name, i in (("RSS", 1), ("open files", 2), ("WAL", 3)):
        vals = [r[i] for r in steady]
        lo, hi = min(vals), max(vals)
        print(f"{name}: {lo:.1f} … {hi:.1f} after the first 60 s ({(hi - lo) / hi * 100 if hi else 0:.0f} % spread)")
    p = [r[4] for r in steady]
    print(f"p99 per 10 s window after 60 s: median {sorted(p)[len(p)//2]:.1f} ms, max {max(p):.1f} ms")
PY
