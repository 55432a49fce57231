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
PORT="${PORT:-8797}"
. "$ROOT/bench/lib.sh"

cat >"$OUT/machine.json" <<EOF
{$(machine_fields)}
EOF

for c in $CONCURRENCY; do
  for r in $(seq "$RUNS"); do
    echo "sweep: publish, $c publishers, run $r of $RUNS" >&2
    start_hubcast "$PORT"
    "$HUBCAST" bench --url "$URL" --quiet --json "$OUT/publish-c$c-run$r.json" \
      publish --events "$PUBLISH_EVENTS" --concurrency "$c" >/dev/null
    stop_server
  done
done

for s in $SUBSCRIBERS; do
  echo "sweep: latency, $s subscribers at $RATE/s" >&2
  start_hubcast "$PORT"
  "$HUBCAST" bench --url "$URL" --quiet --json "$OUT/latency-s$s.json" \
    fanout --subscribers "$s" --rate "$RATE" --events "$LATENCY_EVENTS" >/dev/null
  stop_server
done

python3 "$ROOT/bench/sweep_plot.py" "$OUT"
echo "sweep: results in $OUT (sweep.md, sweep.svg)" >&2
