# Shared by bench/compare.sh and bench/sweep.sh (sourced, not run): the hubcast
# binary, a scratch directory removed on exit, and starting and stopping one
# server under test at a time. Expects ROOT to be set.

HUBCAST="${HUBCAST_BIN:-$ROOT/target/release/hubcast}"
# The server under test may be another build than the load generator (A/B runs).
HUBCAST_SERVER="${HUBCAST_SERVER_BIN:-$HUBCAST}"
WORK="$(mktemp -d)"
# CPU pinning (`taskset -c`) for the server under test and the load generator.
PIN_SERVER="${SERVER_CPUS:+taskset -c $SERVER_CPUS}"
PIN_LOADGEN="${LOADGEN_CPUS:+taskset -c $LOADGEN_CPUS}"
SERVER_PID=""

stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
trap 'stop_server; rm -rf "$WORK"' EXIT

wait_port() { # PORT: until something listens on 127.0.0.1:PORT (20 s)
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

if [ ! -x "$HUBCAST" ]; then
  (cd "$ROOT" && cargo build --release --bin hubcast)
fi

start_hubcast() { # [PORT, default $HUBCAST_PORT or 8787]: a fresh hubcast on a fresh store; sets SERVER_PID and URL
  local port="${1:-${HUBCAST_PORT:-8787}}"
  rm -rf "$WORK/hubcast" && mkdir -p "$WORK/hubcast"
  # Product defaults (durable SQLite publishes, synchronous=full), except the
  # per-address limits a single-address load generator would trip, and the
  # same deep outbound queue `bench --spawn` uses.
  # An empty config file: the defaults (a file named with --config must exist).
  mkdir -p "$WORK/hubcast" && : >"$WORK/hubcast/none.toml"
  HUBCAST_RATE_LIMITS__CONNECTS_PER_IP_PER_MINUTE=0 HUBCAST_RATE_LIMITS__MAX_CONNECTIONS_PER_IP=0 \
  HUBCAST_LIMITS__OUTBOUND_QUEUE=8192 RUST_LOG=warn \
    $PIN_SERVER "$HUBCAST_SERVER" serve --listen "127.0.0.1:$port" --store "sqlite://$WORK/hubcast/hubcast.db" \
      --config "$WORK/hubcast/none.toml" >"$WORK/hubcast.log" 2>&1 &
  SERVER_PID=$!
  URL="http://127.0.0.1:$port"
  wait_port "$port" || { echo "hubcast did not start:" >&2; cat "$WORK/hubcast.log" >&2; return 1; }
}

machine_fields() { # the machine a run measured, as JSON object fields (date, CPU, kernel, load)
  printf '"date": "%s", "cpus": %s, "cpu": "%s",\n "kernel": "%s", "load_before": "%s"' \
    "$(date -u +%FT%TZ)" "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
    "$(uname -r)" "$(cut -d' ' -f1-3 /proc/loadavg)"
}
