#!/usr/bin/env bash
# Issue 21, session 11: hubcast builds and nchan side by side, every target
# scenario of the issue, ROUNDS rounds, the order reversed every other round,
# the floor after each one-room size.
#   bench/results-issue21/s11/run.sh ROUNDS FIRST "NAME=BIN NAME=BIN…" [SIZES]
# SIZES (default all): 1000x50 2000x100 10000xmax rooms
set -u
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$ROOT"
ROUNDS="$1"; FIRST="$2"; BUILDS="$3"; SIZES="${4:-1000x50 2000x100 10000xmax rooms}"
LOADGEN="$ROOT/target/release/hubcast"
OUT="$ROOT/bench/results-issue21/s11"
export HUBCAST_PORT="${HUBCAST_PORT:-21910}" HUBCAST_PUSHER_PORT="${HUBCAST_PUSHER_PORT:-21911}" NCHAN_PORT="${NCHAN_PORT:-21912}"
for round in $(seq "$FIRST" "$ROUNDS"); do
  order="$BUILDS nchan=nchan"
  [ $((round % 2)) = 0 ] && order="$(echo $order | tr ' ' '\n' | tac | tr '\n' ' ')"
  for size in $SIZES; do
    case $size in
      rooms) env_size="SCENARIOS=rooms" ;;
      *xmax) env_size="SCENARIOS=fanout-max SUBSCRIBERS=${size%xmax}" ;;
      *) n=${size%x*}; r=${size#*x}; env_size="SCENARIOS=fanout-steady SUBSCRIBERS=$n STEADY_RATE=$r STEADY_EVENTS=$((r * 6))" ;;
    esac
    for pair in $order; do
      who=${pair%%=*}; bin=${pair#*=}
      if [ "$who" = nchan ]; then peers=nchan; bin="$LOADGEN"; else peers=hubcast; fi
      echo "round $round $size $who load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
      env $env_size HUBCAST_SERVER_BIN="$bin" PEERS="$peers" bench/compare.sh "$OUT/$size-r$round-$who" 2>&1 | grep -v '^compare: results' >&2
    done
    case $size in
      rooms|*xmax) ;;
      *) "$LOADGEN" bench floor --connections "$n" --rate "$r" --rounds 300 --quiet --json "$OUT/floor-$size-r$round.json" >/dev/null ;;
    esac
  done
done
