#!/usr/bin/env bash
# hubcast alone, swept over one knob at a time, each run on a fresh server in its
# own process (product defaults, durable SQLite publishes, as compare.sh starts it):
#   - publish: durable publishes/s and latency by the number of concurrent publishers;
#   - latency: publish→receive latency at a steady 100 publishes/s by room size.
# Writes OUT/publish-cC-runR.json, OUT/latency-sS.json, OUT/machine.json and, with
# bench/sweep_plot.py, OUT/sweep.md (tables) and OUT/sweep.svg (both curves).
#
#   bench/sweep.sh [OUT]                       (default OUT: bench/results-sweep)
#   CONCURRENCY="16 256" RUNS=1 bench/sweep.sh   fewer points
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(mkdir -p "${1:-$ROOT/bench/results-sweep}" && cd "${1:-$ROOT/bench/results-sweep}" && pwd)"
CONCURRENCY="${CONCURRENCY:-16 64 256 1024}"   # publish: concurrent publishers
RUNS="${RUNS:-3}"                             # publish: runs per point
PUBLISH_EVENTS="${PUBLISH_EVENTS:-150000}"
SUBSCRIBERS="${SUBSCRIBERS:-1 100 1000 2000 5000 10000}"  # latency: room sizes
RATE="${RATE:-100}"                           # latency: publishes per second
LATENCY_EVENTS="${LATENCY_EVENTS:-300}"
HUBCAST="${HUBCAST_BIN:-$ROOT/target/release/hubcast}"
PORT="${PORT:-8797}"
WORK="$(mktemp -d)"
SERVER_PID=""

stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
trap 'stop_server; rm -rf "$WORK"' EXIT

if [ ! -x "$HUBCAST" ]; then
  (cd "$ROOT" && cargo build --release --bin hubcast)
fi

start_server() { # a fresh server on a fresh store
  rm -rf "$WORK/store" && mkdir -p "$WORK/store"
  HUBCAST_RATE_LIMITS__CONNECTS_PER_IP_PER_MINUTE=0 HUBCAST_RATE_LIMITS__MAX_CONNECTIONS_PER_IP=0 \
  HUBCAST_LIMITS__OUTBOUND_QUEUE=8192 RUST_LOG=warn \
    "$HUBCAST" serve --listen "127.0.0.1:$PORT" --store "sqlite://$WORK/store/hubcast.db" \
      --config "$WORK/none.toml" >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "sweep: the server did not start:" >&2; cat "$WORK/server.log" >&2; exit 1
}

cat >"$OUT/machine.json" <<EOF
{"date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "cpus": $(nproc), "cpu": "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)",
 "kernel": "$(uname -r)", "load_before": "$(cut -d' ' -f1-3 /proc/loadavg)"}
EOF

for c in $CONCURRENCY; do
  for r in $(seq "$RUNS"); do
    echo "sweep: publish, $c publishers, run $r of $RUNS" >&2
    start_server
    "$HUBCAST" bench --url "http://127.0.0.1:$PORT" --quiet --json "$OUT/publish-c$c-run$r.json" \
      publish --events "$PUBLISH_EVENTS" --concurrency "$c" >/dev/null
    stop_server
  done
done

for s in $SUBSCRIBERS; do
  echo "sweep: latency, $s subscribers at $RATE/s" >&2
  start_server
  "$HUBCAST" bench --url "http://127.0.0.1:$PORT" --quiet --json "$OUT/latency-s$s.json" \
    fanout --subscribers "$s" --rate "$RATE" --events "$LATENCY_EVENTS" >/dev/null
  stop_server
done

python3 "$ROOT/bench/sweep_plot.py" "$OUT"
echo "sweep: results in $OUT (sweep.md, sweep.svg)" >&2
