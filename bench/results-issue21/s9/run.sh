#!/usr/bin/env bash
# Issue 21, session 9: base (18b8aa8) and new hubcast and nchan side by side,
# one room, ROUNDS rounds of 1k × 50/s and 2k × 100/s, the floor after each size.
#   bench/results-issue21/s9/run.sh BASE_BIN [ROUNDS [FIRST_ROUND]]
set -u
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$ROOT"
BASE="$1"; ROUNDS="${2:-2}"; FIRST="${3:-1}"
NEW="$ROOT/target/release/hubcast"
OUT="$ROOT/bench/results-issue21/s9"
export HUBCAST_PORT="${HUBCAST_PORT:-21910}" PUSHER_PORT="${PUSHER_PORT:-21911}" NCHAN_PORT="${NCHAN_PORT:-21912}"
for round in $(seq "$FIRST" "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="base new nchan"; else order="nchan new base"; fi
  for size in "1000 50 300" "2000 100 600"; do
    set -- $size
    for who in $order; do
      case $who in
        base) bin="$BASE"; peers=hubcast ;;
        new) bin="$NEW"; peers=hubcast ;;
        nchan) bin="$NEW"; peers=nchan ;;
      esac
      echo "round $round ${1}x$2 $who load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
      HUBCAST_SERVER_BIN="$bin" PEERS="$peers" SCENARIOS=fanout-steady SUBSCRIBERS="$1" \
        STEADY_RATE="$2" STEADY_EVENTS="$3" bench/compare.sh "$OUT/${1}x$2-r$round-$who" 2>&1 | grep -v '^compare: results' >&2
    done
    "$NEW" bench floor --connections "$1" --rate "$2" --rounds 300 --quiet --json "$OUT/floor-${1}x$2-r$round.json" >/dev/null
  done
done
