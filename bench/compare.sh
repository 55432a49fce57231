#!/usr/bin/env bash
# Runs the same `fanout` and `rooms` scenarios against hubcast and its peers
# (Sockudo, socket.io 4, nginx+nchan), one server at a time, every server bound
# to 127.0.0.1, the load generator (`hubcast bench --target …`) in its own
# process. Writes OUT/SERVER-SCENARIO.json, OUT/machine.json, and with
# bench/plot.py OUT/summary.md (table with ratios) and OUT/compare.svg.
#
#   bench/compare.sh [OUT]            (default OUT: bench/results)
#   PEERS="hubcast nchan" bench/compare.sh     only some servers
#   SUBSCRIBERS=10000 ROOMS=2000 … sizes (see below)
#   SCENARIOS="fanout-steady" bench/compare.sh  only some scenarios
#   HUBCAST_PORT=… HUBCAST_PUSHER_PORT=… SOCKUDO_PORT=… NCHAN_PORT=…  ports (default
#     8787, 8788, 6001, 8091: several people benchmarking on one machine)
#   SERVER_CPUS=0 LOADGEN_CPUS=1 bench/compare.sh   every server pinned to CPU 0 and
#     the load generator to CPU 1 (`taskset -c`): the server gets one core, the
#     same for every server, as on a machine where a delivery costs more
#
# Every scenario reports the server's CPU per delivery (`--server-pid`:
# utime + stime from /proc of the server and every process descended from it,
# read at the start and the end of the publish phase, divided by the
# deliveries that arrived in it; and over the whole run, to the last delivery).
#
# Peers are installed into a cache outside the repository (PEERS_CACHE,
# default ~/.cache/hubcast-peers) the first time: Sockudo with `cargo install`
# (~25 minutes here; needs protobuf-compiler), socket.io with npm. nchan is
# Debian's libnginx-mod-nchan. A peer that cannot be installed or started is
# skipped with a message; the others still run.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(mkdir -p "${1:-$ROOT/bench/results}" && cd "${1:-$ROOT/bench/results}" && pwd)"
CACHE="${PEERS_CACHE:-$HOME/.cache/hubcast-peers}"
PEERS="${PEERS:-hubcast hubcast-pusher sockudo socketio nchan}"
SUBSCRIBERS="${SUBSCRIBERS:-10000}"     # fanout: subscribers on one room
STEADY_RATE="${STEADY_RATE:-100}"       # fanout steady: publishes per second
STEADY_EVENTS="${STEADY_EVENTS:-300}"
MAX_EVENTS="${MAX_EVENTS:-200}"         # fanout at max rate
ROOMS="${ROOMS:-2000}"                  # rooms: ROOMS × PER_ROOM subscribers
PER_ROOM="${PER_ROOM:-5}"
ROOM_EVENTS="${ROOM_EVENTS:-10}"
SCENARIOS="${SCENARIOS:-fanout-steady fanout-max rooms}"
. "$ROOT/bench/lib.sh"

start_sockudo() {
  local bin="$CACHE/sockudo/bin/sockudo"
  if [ ! -x "$bin" ]; then
    echo "compare: building Sockudo into $CACHE/sockudo (once; ~25 minutes)" >&2
    command -v protoc >/dev/null || { echo "compare: skipping sockudo: protobuf-compiler (protoc) is not installed" >&2; return 1; }
    cargo install sockudo --locked --root "$CACHE/sockudo" >"$CACHE/sockudo-build.log" 2>&1 \
      || { echo "compare: skipping sockudo: cargo install failed (see $CACHE/sockudo-build.log)" >&2; return 1; }
  fi
  local port="${SOCKUDO_PORT:-6001}"
  sed "s/\"port\": 6001,/\"port\": $port,/" "$ROOT/bench/peers/sockudo.json" >"$WORK/sockudo.json"
  (cd "$WORK" && RUST_LOG=warn exec $PIN_SERVER "$bin" --config "$WORK/sockudo.json") >"$WORK/sockudo.log" 2>&1 &
  SERVER_PID=$!
  URL="http://127.0.0.1:$port"
  wait_port "$port"
}

# hubcast speaking the Pusher protocol: the same binary and store as
# `hubcast`, measured with the adapter that measures Sockudo (`--target
# pusher`), with Sockudo's bench app (bench/peers/sockudo.json).
start_hubcast_pusher() {
  local port="${HUBCAST_PUSHER_PORT:-8788}"
  rm -rf "$WORK/hubcast" && mkdir -p "$WORK/hubcast"
  cat >"$WORK/hubcast/none.toml" <<'TOML'
[[pusher.apps]]
id = "bench"
key = "bench-key"
secret = "bench-secret"
TOML
  HUBCAST_RATE_LIMITS__CONNECTS_PER_IP_PER_MINUTE=0 HUBCAST_RATE_LIMITS__MAX_CONNECTIONS_PER_IP=0 \
  HUBCAST_LIMITS__OUTBOUND_QUEUE=8192 RUST_LOG=warn \
    $PIN_SERVER "$HUBCAST" serve --listen "127.0.0.1:$port" --store "sqlite://$WORK/hubcast/hubcast.db" \
      --config "$WORK/hubcast/none.toml" >"$WORK/hubcast-pusher.log" 2>&1 &
  SERVER_PID=$!
  URL="http://127.0.0.1:$port"
  wait_port "$port"
}

start_socketio() {
  local dir="$CACHE/socketio"
  if [ ! -d "$dir/node_modules/socket.io" ]; then
    command -v npm >/dev/null || { echo "compare: skipping socketio: npm is not installed" >&2; return 1; }
    mkdir -p "$dir"
    [ -f "$dir/package.json" ] || echo '{"name":"hubcast-peer-socketio","private":true}' >"$dir/package.json"
    (cd "$dir" && npm install --no-audit --no-fund socket.io@4 >/dev/null 2>&1) \
      || { echo "compare: skipping socketio: npm install socket.io@4 failed" >&2; return 1; }
  fi
  NODE_PATH="$dir/node_modules" PORT=3001 $PIN_SERVER node "$ROOT/bench/peers/socketio-server.js" >"$WORK/socketio.log" 2>&1 &
  SERVER_PID=$!
  URL=http://127.0.0.1:3001
  wait_port 3001
}

start_nchan() {
  [ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] && command -v nginx >/dev/null \
    || { echo "compare: skipping nchan: install nginx and libnginx-mod-nchan" >&2; return 1; }
  mkdir -p "$WORK/nchan/logs" "$WORK/nchan/temp"
  local port="${NCHAN_PORT:-8091}"
  sed "s/127.0.0.1:8091/127.0.0.1:$port/" "$ROOT/bench/peers/nchan.conf" >"$WORK/nchan/nchan.conf"
  $PIN_SERVER nginx -p "$WORK/nchan" -c "$WORK/nchan/nchan.conf" -g 'daemon off;' >"$WORK/nchan.log" 2>&1 &
  SERVER_PID=$!
  URL="http://127.0.0.1:$port"
  wait_port "$port"
}

run_bench() { # SERVER NAME SCENARIO ARGS…
  local server="$1" name="$2"; shift 2
  case " $SCENARIOS " in *" $name "*) ;; *) return 0 ;; esac
  local target="$server"
  [ "$server" = hubcast-pusher ] && target=pusher
  echo "compare: $server $name" >&2
  $PIN_LOADGEN "$HUBCAST" bench "$@" --target "$target" --url "$URL" --server-pid "$SERVER_PID" --quiet \
    --json "$OUT/$server-$name.json" >/dev/null \
    || echo "compare: $server $name failed" >&2
}

cat >"$OUT/machine.json" <<EOF
{$(machine_fields),
 "sizes": {"subscribers": $SUBSCRIBERS, "steady_rate": $STEADY_RATE, "steady_events": $STEADY_EVENTS,
           "max_events": $MAX_EVENTS, "rooms": $ROOMS, "per_room": $PER_ROOM, "room_events": $ROOM_EVENTS}}
EOF

for server in $PEERS; do
  if ! "start_${server//-/_}"; then
    stop_server
    echo "compare: skipping $server: it did not start (log: $WORK/$server.log)" >&2
    continue
  fi
  run_bench "$server" fanout-steady fanout --subscribers "$SUBSCRIBERS" --rate "$STEADY_RATE" --events "$STEADY_EVENTS"
  run_bench "$server" fanout-max fanout --subscribers "$SUBSCRIBERS" --rate 0 --events "$MAX_EVENTS"
  run_bench "$server" rooms rooms --rooms "$ROOMS" --subscribers-per-room "$PER_ROOM" --events-per-room "$ROOM_EVENTS"
  echo "{\"server\": \"$server\", \"load_after\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >"$OUT/$server-load.json"
  stop_server
done

python3 "$ROOT/bench/plot.py" "$OUT"
echo "compare: results in $OUT (summary.md, compare.svg)" >&2
