#!/usr/bin/env bash
# Soak run: evhost (release build, embedded SQLite defaults) at a steady rate with two
# webhook endpoints (two harness runs at half the rate each), driven from outside by the harness in ../shared/harness (its
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
publishers=()
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
# Two publishers at half the rate each: each registers an endpoint of its own (so two
# endpoints get every event between them), and each run stays within the harness's
# bound of 1,000,000 events.
half=$(( RATE / 2 ))
for k in 1 2; do
  EVHOST_TOKEN=$TOKEN "$VENV/bin/python" "$HARNESS/publisher.py" --adapter evhost \
    --base-url "http://127.0.0.1:$PORT" --receiver "http://127.0.0.1:$RX_PORT" \
    -n $(( half * SECONDS_TOTAL )) --rate "$half" --max-publish-seconds $(( SECONDS_TOTAL + 120 )) \
    --watch evhost="$evhost" --raw "$work/raw-$k.jsonl" --out "$work/result-$k.json" \
    >"$work/publisher-$k.txt" 2>&1 &
  publishers+=("$!")
done
for p in "${publishers[@]}"; do wait "$p"; done
cat "$work"/publisher-*.txt

"$VENV/bin/python" - "$work" "$SECONDS_TOTAL" <<'PY'
import glob, json, sys
work, total = sys.argv[1], int(sys.argv[2])
samples = [list(map(int, l.split("\t"))) for l in open(f"{work}/samples.tsv") if l.strip()]
# [id, sent ns, answered ns, status, first arrival ns or null]
events = [json.loads(l) for f in sorted(glob.glob(f"{work}/raw-*.jsonl")) for l in open(f)]
t0 = min(e[1] for e in events)
windows = {}
for _id, sent, _answered, _status, recv in events:
    w = windows.setdefault(int((sent - t0) / 1e9 // 10), [])
    w.append(None if recv is None else (recv - sent) / 1e6)
def p99(xs):
    xs = sorted(x for x in xs if x is not None)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))] if xs else float("nan")
print(f"{'t (s)':>6} {'RSS MiB':>8} {'fds':>5} {'WAL MiB':>8} {'p99 ms':>9} {'sent':>6} {'undelivered':>11}")
rows = []
for t, rss, fds, wal in samples:
    if t > total:
        break  # publishing is over (the harness then removes its endpoints)
    w = windows.get(t // 10, [])
    undelivered = sum(1 for x in w if x is None)
    rows.append((t, rss / 1024, fds, wal / 2**20, p99(w), len(w)))
    print(f"{t:>6} {rss/1024:>8.1f} {fds:>5} {wal/2**20:>8.1f} {p99(w):>9.1f} {len(w):>6} {undelivered:>11}")
steady = [r for r in rows if r[0] >= 60 and r[5] > 0]
if steady:
    for name, i in (("RSS MiB", 1), ("open files", 2), ("WAL MiB", 3), ("p99 ms", 4)):
        vals = [r[i] for r in steady]
        lo, hi = min(vals), max(vals)
        print(f"{name}: {lo:.1f} … {hi:.1f} from 60 s on ({(hi - lo) / hi * 100 if hi else 0:.0f} % spread)")
PY
