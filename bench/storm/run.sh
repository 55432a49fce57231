#!/usr/bin/env bash
# The connect storm of issue 22: NODES `hubcast serve` nodes on one PostgreSQL
# and one NATS (product defaults; only the per-address connect rate is lifted),
# CONNECTIONS WebSockets from WORKERS client processes (npm `ws`, no retries)
# subscribing with ?cursor=0 to ROOMS fresh rooms, then RATE durable publishes/s
# for SECONDS. Prints and writes (OUT/storm.json) refusals, exactness and
# publish-to-receive latency (overall, per client process, and per second of
# sending); failed publishes by reason. Keeps each node's log and its final
# /metrics in OUT (nodeN.log, nodeN.metrics).
#
#   bench/storm/run.sh                       # 6 nodes, 102,000 connections
#   NODES=3 CONNECTIONS=15000 ROOMS=1000 RATE=2000 bench/storm/run.sh
#   HUBCAST_BIN=/path/to/hubcast bench/storm/run.sh   # another build
#   PORT_BASE=22000 bench/storm/run.sh        # nodes on 22001… (default 19101…)
#   CLIENT=rust bench/storm/run.sh            # client processes in Rust (hubcast
#                                             # bench storm-client), not Node `ws`
#
# Needs PostgreSQL on 127.0.0.1:5432 and NATS on 127.0.0.1:4222
# (scripts/services.sh), node >= 20, and ~2 GB of memory per 10^5 connections.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
NODES=${NODES:-6}
CONNECTIONS=${CONNECTIONS:-102000}
WORKERS=${WORKERS:-6}
CLIENT=${CLIENT:-node}
ROOMS=${ROOMS:-6000}
RATE=${RATE:-1200}
SECONDS_=${SECONDS_:-15}
PG=${HUBCAST_BENCH_PG:-postgres://postgres@127.0.0.1:5432/test}
NATS=${HUBCAST_BENCH_NATS:-nats://127.0.0.1:4222}
OUT=${OUT:-$repo/target/bench/storm}
PORT_BASE=${PORT_BASE:-19100}   # node n listens on PORT_BASE + n
SCHEMA=storm_$(date +%s)_$$
mkdir -p "$OUT"

if [[ -z "${HUBCAST_BIN:-}" ]]; then
    (cd "$repo" && cargo build --release --quiet -p hubcast)
    HUBCAST_BIN=$repo/target/release/hubcast
fi
# The clients (npm `ws`) are bench/wsload's, shared with bench/cluster.
[[ -d "$repo/bench/wsload/node_modules/ws" ]] || (cd "$repo/bench/wsload" && npm ci --no-audit --no-fund --silent)

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql "$PG" -qc "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
}
trap cleanup EXIT

. "$repo/bench/wsload/nodes.sh"
urls=()
for n in $(seq 1 "$NODES"); do
    port=$((PORT_BASE + n))
    start_node "$n" "$port"
done
node_urls=$(IFS=,; echo "${urls[*]}")
echo "== $NODES nodes ($("$HUBCAST_BIN" --version 2>/dev/null || echo hubcast)), schema $SCHEMA"
echo "== $CONNECTIONS connections from $WORKERS $CLIENT client processes to $ROOMS rooms, then $RATE publishes/s for ${SECONDS_}s"
node "$here/storm.mjs" --nodes "$node_urls" --connections "$CONNECTIONS" --workers "$WORKERS" \
    --rooms "$ROOMS" --rate "$RATE" --seconds "$SECONDS_" --client "$CLIENT" --hubcast-bin "$HUBCAST_BIN" --json "$OUT/storm.json"
for n in $(seq 1 "$NODES"); do
    # Each node's metrics at the end, for the reconcile, store and pool counters.
    curl -s "${urls[$((n - 1))]}/metrics" >"$OUT/node$n.metrics" || true
    refusals=$(awk '/^hubcast_refusals_total/ {s += $2} END {print s + 0}' "$OUT/node$n.metrics")
    warnings=$(grep -c '"refused"\|refused' "$OUT/node$n.log" || true)
    echo "node $n: hubcast_refusals_total $refusals, log lines about refusals $warnings"
done
