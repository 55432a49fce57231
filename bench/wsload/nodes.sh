# Sourced by bench/storm/run.sh and bench/cluster/run.sh: starts one
# `hubcast serve` cluster node and waits until it is ready.
#
#   start_node N PORT   node N on 127.0.0.1:PORT, logging to $OUT/nodeN.log;
#                       appends its pid to `pids` and its URL to `urls`
#
# Uses HUBCAST_BIN, PG, NATS, SCHEMA (the PostgreSQL schema and NATS subject
# prefix of the run) and OUT. Product defaults but the per-address connect
# rate (every client of a load run shares a few addresses). Exits 2 with the
# node's log when it does not become ready.
start_node() {
    local n=$1 port=$2 ready=0
    env -u HUBCAST_URL \
        HUBCAST_POSTGRES__SCHEMA="$SCHEMA" HUBCAST_NATS__SUBJECT_PREFIX="$SCHEMA" \
        HUBCAST_RATE_LIMITS__CONNECTS_PER_IP_PER_MINUTE=0 \
        "$HUBCAST_BIN" serve --listen "127.0.0.1:$port" --store "$PG" --bus "$NATS" \
        >"$OUT/node$n.log" 2>&1 &
    pids+=($!)
    urls+=("http://127.0.0.1:$port")
    # The first node migrates the schema; the others start after it.
    for _ in $(seq 1 300); do
        if curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; then ready=1; break; fi
        kill -0 "${pids[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    if ((!ready)); then echo "node $n did not become ready:" >&2; tail -20 "$OUT/node$n.log" >&2; exit 2; fi
}
