#!/usr/bin/env bash
# The cluster at scale of issue 20: --nodes K `hubcast serve` nodes (release
# build, product defaults; only the per-address connect rate is lifted) on one
# PostgreSQL and one NATS, a schema and a subject prefix of their own, driven
# by bench/cluster/cluster.mjs (npm `ws` clients in several processes): a room
# mix of subscribers spread over the nodes, durable publishes on every node at
# a total rate, optionally one node `kill -9`'d mid-run, every stream checked
# exact at the end. Prints progress and a table; writes OUT/cluster.json,
# OUT/cluster.md (a BENCHMARKS.md table row per step), the nodes' logs and
# (python3 + matplotlib) OUT/cluster.png.
#
#   bench/cluster/run.sh --nodes 3 --rooms 100x90,2x500 --rate 500 --seconds 30 --kill-node 2 --kill-at 10
#   bench/cluster/run.sh --nodes 6 --rooms 1000x90,10x1000 --workers 6 --rate 1000 --seconds 60 \
#       --kill-node 3 --kill-at 30                   # the 100k run of BENCHMARKS.md
#   bench/cluster/run.sh --nodes 3 --rooms 100x90 --find-rate 500 --step-seconds 20
#   bench/cluster/run.sh --client rust …             # client processes in Rust
#
# Options of this script (the others go to cluster.mjs; see its header):
#   --nodes K        nodes to start (default 3)
#   --client C       `node` (default: npm `ws` workers) or `rust` (`hubcast bench
#                    cluster-client` of HUBCAST_BIN, the same requests and report
#                    for a fraction of the CPU: at 100,000 sockets the Node
#                    clients ate ~95% of one of this machine's 2 cores)
#   --out DIR        where the JSON, the logs and the plot go (default target/bench/cluster)
#   --port-base P    the nodes listen on the first K free ports from P (default 22000)
#   --no-plot        no PNG
# Environment: HUBCAST_BIN (a build to use instead of `cargo build --release`),
# HUBCAST_BENCH_PG (default postgres://postgres@127.0.0.1:5432/test),
# HUBCAST_BENCH_NATS (default nats://127.0.0.1:4222); with the defaults,
# scripts/services.sh starts PostgreSQL and NATS when they are not running.
# Exit status: cluster.mjs's (1 with --assert-exact and a violation).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

NODES=3
OUT="$repo/target/bench/cluster"
PORT_BASE=22000
PLOT=1
JSON=""
pass=()
kill_node=0
client=node
rooms="1000x90,10x1000"
while (($#)); do
    case "$1" in
        --nodes) NODES=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --port-base) PORT_BASE=$2; shift 2 ;;
        --no-plot) PLOT=0; shift ;;
        --json) JSON=$2; shift 2 ;;
        --kill-node) kill_node=$2; pass+=("$1" "$2"); shift 2 ;;
        --rooms) rooms=$2; pass+=("$1" "$2"); shift 2 ;;
        --client) client=$2; pass+=("$1" "$2"); shift 2 ;;
        --assert-exact) pass+=("$1"); shift ;;
        --*) pass+=("$1" "$2"); shift 2 ;;
        *) echo "unexpected argument: $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
JSON=${JSON:-$OUT/cluster.json}
PG=${HUBCAST_BENCH_PG:-postgres://postgres@127.0.0.1:5432/test}
NATS=${HUBCAST_BENCH_NATS:-nats://127.0.0.1:4222}
SCHEMA=cluster_$(date +%s)_$$

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [[ -z "${HUBCAST_BENCH_PG:-}${HUBCAST_BENCH_NATS:-}" ]] && ! { port_open 5432 && port_open 4222; }; then
    bash "$repo/scripts/services.sh"
fi
if [[ -z "${HUBCAST_BIN:-}" ]]; then
    (cd "$repo" && cargo build --release --quiet -p hubcast)
    HUBCAST_BIN=$repo/target/release/hubcast
fi
# The Rust clients are this build's `hubcast bench cluster-client`.
[[ $client == rust ]] && pass+=(--hubcast-bin "$HUBCAST_BIN")
# The Node clients (npm `ws`) are bench/wsload's, shared with bench/storm.
[[ -d "$repo/bench/wsload/node_modules/ws" ]] || (cd "$repo/bench/wsload" && npm ci --no-audit --no-fund --silent)

# Every socket is a file: a node holds its share of the subscribers, and
# after a kill the share of one node fewer.
subscribers=$(awk -v spec="$rooms" 'BEGIN { n = split(spec, parts, ","); for (i = 1; i <= n; i++) { split(parts[i], cs, "x"); t += cs[1] * cs[2] } print t }')
survivors=$NODES
((kill_node > 0)) && survivors=$((NODES - 1))
per_node=$(( (subscribers + survivors - 1) / survivors ))
after_kill=""
((kill_node > 0)) && after_kill=" after the kill"
if ((per_node + 100 > $(ulimit -n))); then
    echo "warning: ~$per_node sockets per node$after_kill but open files are limited to $(ulimit -n) per process: raise \`ulimit -n\` or add a node" >&2
fi

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    psql "$PG" -qc "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
}
trap cleanup EXIT

. "$repo/bench/wsload/nodes.sh"
urls=()
port=$PORT_BASE
for n in $(seq 1 "$NODES"); do
    while port_open "$port"; do port=$((port + 1)); done
    start_node "$n" "$port"
    port=$((port + 1))
done
node_urls=$(IFS=,; echo "${urls[*]}")
node_pids=$(IFS=,; echo "${pids[*]}")
echo "== $NODES nodes ($("$HUBCAST_BIN" --version 2>/dev/null || echo hubcast)) on $node_urls, schema $SCHEMA, $client clients"
echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

status=0
node "$here/cluster.mjs" --urls "$node_urls" --pids "$node_pids" --prefix "$SCHEMA" \
    --clk-tck "$(getconf CLK_TCK)" --json "$JSON" "${pass[@]}" || status=$?

if [[ -f "$JSON" ]]; then
    python3 "$here/summary.py" "$JSON" >"${JSON%.json}.md" || true
fi
if ((PLOT)) && [[ -f "$JSON" ]]; then
    python=python3
    if ! python3 -c 'import matplotlib' 2>/dev/null; then
        # A venv of its own, so the system's Python is left alone.
        if [[ ! -x "$here/.venv/bin/python" ]] || ! "$here/.venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
            python3 -m venv "$here/.venv" && "$here/.venv/bin/pip" install --quiet --disable-pip-version-check matplotlib
        fi
        python="$here/.venv/bin/python"
    fi
    "$python" "$here/plot.py" "$JSON" "${JSON%.json}.png" || echo "warning: no plot" >&2
fi
exit "$status"
