#!/usr/bin/env bash
# Durable publishes/s through hubcast on PostgreSQL, next to the raw INSERT
# rate of the same database (pgbench, same concurrency, one autocommit INSERT
# of the same shape per transaction). Prints both and the ratio; writes JSON.
#
#   bench/postgres-publish.sh [EVENTS] [CONCURRENCY]
# Needs PostgreSQL on 127.0.0.1:5432 (scripts/services.sh) and pgbench.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-30000}
CONCURRENCY=${2:-64}
PG=${HUBCAST_BENCH_PG:-postgres://postgres@127.0.0.1:5432/test}
SCHEMA=bench_$(date +%s)
OUT=${OUT:-target/bench}
mkdir -p "$OUT"

bash scripts/services.sh >/dev/null
cargo build --release --quiet -p hubcast
BIN=target/release/hubcast
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

echo "== hubcast on PostgreSQL (schema $SCHEMA)"
env -u HUBCAST_URL HUBCAST_POSTGRES__SCHEMA="$SCHEMA" HUBCAST_RATE_LIMITS__CONNECTS_PER_IP_PER_MINUTE=0 \
    "$BIN" serve --listen "127.0.0.1:$PORT" --store "$PG" --bus memory >"$OUT/postgres-server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; psql "$PG" -qc "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
"$BIN" bench --url "http://127.0.0.1:$PORT" --json "$OUT/postgres-publish.json" publish \
    --events "$EVENTS" --concurrency "$CONCURRENCY"
hubcast_rate=$(python3 -c "import json; print(json.load(open('$OUT/postgres-publish.json'))['results']['publishes_per_sec'])")

echo "== raw INSERT rate of the same database (pgbench, $CONCURRENCY clients)"
psql "$PG" -qc "CREATE TABLE $SCHEMA.raw_events (room TEXT, seq BIGINT, ts BIGINT, data JSON, PRIMARY KEY (room, seq))"
script=$(mktemp)
cat >"$script" <<SQL
\set s random(1, 2000000000)
INSERT INTO $SCHEMA.raw_events VALUES ('r', :s, 0, '{"n":1,"pad":"$(printf 'x%.0s' $(seq 1 64))"}') ON CONFLICT DO NOTHING;
SQL
raw_rate=$(pgbench -n -h 127.0.0.1 -U postgres -c "$CONCURRENCY" -j 2 -T 10 -f "$script" test 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
rm -f "$script"

python3 - "$hubcast_rate" "$raw_rate" "$OUT/postgres-vs-raw.json" <<'PY'
import json, sys
hubcast, raw, out = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
print(f"{'hubcast durable publishes/s':<32}{hubcast:>12.0f}")
print(f"{'raw INSERT tps (pgbench)':<32}{raw:>12.0f}")
print(f"{'ratio':<32}{hubcast / raw:>12.2f}")
json.dump({"hubcast_publishes_per_sec": hubcast, "raw_insert_tps": raw, "ratio": hubcast / raw}, open(out, "w"), indent=2)
PY
