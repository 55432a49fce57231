#!/usr/bin/env bash
# Drives the dashboard in headless Chromium against the real hubcast binary.
#
#   tests/browser/run.sh                  # from any directory
#   HUBCAST_BIN=/path/to/hubcast tests/browser/run.sh
#
# Uses Debian's /usr/bin/chromium (installed with apt-get if missing; never a
# downloaded browser) and playwright-core from package-lock.json. Starts
# two `hubcast serve` on free loopback ports with their own data dirs (one
# without credentials, one with auth configured) and one `hubcast demo chat`,
# runs dashboard.test.mjs and chat.test.mjs with `node --test`, and stops them;
# market.test.mjs starts (and restarts) its own `hubcast demo` from HUBCAST_BIN,
# sse.test.mjs and pusher.test.mjs their own `hubcast serve` (killed with
# SIGKILL mid-stream; pusher.test.mjs loads pusher-js from tests/pusher).
# First checks that the market page's committed bundle matches its source.
# Screenshots go to <repo>/test-artifacts/.
# Exits non-zero if a test fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

# shellcheck source=../../scripts/hubcast-bin.sh
source "$repo/scripts/hubcast-bin.sh"
resolve_hubcast_bin "$repo"
echo "== hubcast binary: $HUBCAST_BIN"

# --- the browser: Debian chromium, installed only if missing. Another job may
# be running apt at the same time, so a failed attempt (lock held) is retried.
if [[ ! -x /usr/bin/chromium ]]; then
  echo "== installing chromium (apt-get)"
  as_root=()
  [[ "$(id -u)" == 0 ]] || as_root=(sudo)
  for attempt in $(seq 1 40); do
    if "${as_root[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq chromium; then
      break
    fi
    [[ -x /usr/bin/chromium ]] && break
    echo "   apt busy or failed (attempt $attempt); retrying in 15 s"
    sleep 15
  done
fi
if [[ ! -x /usr/bin/chromium ]]; then
  echo "error: /usr/bin/chromium is missing and could not be installed" >&2
  exit 2
fi
echo "== $(/usr/bin/chromium --version 2>/dev/null | head -1)"

# --- playwright-core, exactly as locked
echo "== installing Node dependencies (npm ci)"
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

# --- pusher-js and the `pusher` server library for pusher.test.mjs: the Pusher
# suites' packages, installed as tests/pusher.rs installs them (same lock file,
# same marker), so both runners share one install.
echo "== installing tests/pusher's Node dependencies (npm ci, when missing or stale)"
(cd "$repo/tests/pusher" && exec 9>.install.lock && flock 9 \
  && if [[ ! -d node_modules ]] || ! cmp -s package.json node_modules/.installed; then
       npm ci --no-audit --no-fund --loglevel=error && cp package.json node_modules/.installed
     fi)

# --- the market page's committed bundle must be what its TypeScript builds to
# (the binary embeds examples/market/public/app.js; `cargo run -- demo` needs no npm).
market="$repo/examples/market"
echo "== checking examples/market/public/app.js against examples/market/src (npm ci, build)"
(cd "$market" && npm ci --no-audit --no-fund --loglevel=error)
fresh="$(mktemp -t market-app-XXXXXX.js)"
(cd "$market" && npx tsc -p tsconfig.json --noEmit \
  && npx esbuild src/app.ts --bundle --format=esm --target=es2022 --legal-comments=none --log-level=warning --outfile="$fresh")
if ! cmp -s "$fresh" "$market/public/app.js"; then
  echo "error: examples/market/public/app.js is stale: run \`npm run build\` in examples/market and commit it" >&2
  rm -f "$fresh"
  exit 1
fi
rm -f "$fresh"

# --- two servers, each on a free port with its own data dir and no HUBCAST_*
# from this shell: one in protected mode (no credentials, loopback trusted)
# and one with auth configured (an admin API key and a plain publisher key).
work="$(mktemp -d -t hubcast-browser-XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

unset_vars=()
while IFS='=' read -r name _; do
  [[ "$name" == HUBCAST_* ]] && unset_vars+=(-u "$name")
done < <(env)

# start_server NAME [SUBCOMMAND…]: starts `hubcast SUBCOMMAND` (default
# `serve`) with $work/NAME/hubcast.toml, sets $url.
start_server() {
  local name="$1" dir="$work/$1" port ready=0
  shift
  local subcommand=("$@")
  [[ ${#subcommand[@]} -gt 0 ]] || subcommand=(serve)
  mkdir -p "$dir"
  touch "$dir/hubcast.toml"
  port="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
  (cd "$dir" && exec env "${unset_vars[@]}" RUST_LOG="${RUST_LOG:-hubcast=info}" \
    "$HUBCAST_BIN" "${subcommand[@]}" --config "$dir/hubcast.toml" --listen "127.0.0.1:$port" --store "sqlite://$dir/data/hubcast.db" \
    >"$dir/server.log" 2>&1) &
  pids+=($!)
  url="http://127.0.0.1:$port/"
  for _ in $(seq 1 150); do
    if curl -fsS -o /dev/null "${url}readyz" 2>/dev/null; then ready=1; break; fi
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.2
  done
  if [[ $ready != 1 ]]; then
    echo "error: hubcast ($name) did not become ready; its log:" >&2
    cat "$dir/server.log" >&2
    exit 1
  fi
  echo "== hubcast ($name) at $url"
}

start_server open
open_url="$url"

admin_key="admin-$(node -e 'console.log(require("crypto").randomBytes(12).toString("hex"))')"
publisher_key="pub-$(node -e 'console.log(require("crypto").randomBytes(12).toString("hex"))')"
mkdir -p "$work/auth"
cat >"$work/auth/hubcast.toml" <<TOML
[[auth.api_keys]]
name = "dashboard-admin"
key = "$admin_key"
admin = true

[[auth.api_keys]]
name = "publisher"
key = "$publisher_key"
TOML
start_server auth
auth_url="$url"

start_server demo demo chat
demo_url="$url"

mkdir -p "$repo/test-artifacts"
echo "== node --test dashboard.test.mjs chat.test.mjs market.test.mjs sse.test.mjs pusher.test.mjs"
status=0
(cd "$here" && HUBCAST_URL="$open_url" HUBCAST_AUTH_URL="$auth_url" \
  HUBCAST_ADMIN_KEY="$admin_key" HUBCAST_PUBLISHER_KEY="$publisher_key" \
  HUBCAST_DEMO_URL="$demo_url" HUBCAST_ARTIFACTS="$repo/test-artifacts" \
  node --test --test-timeout=180000 dashboard.test.mjs chat.test.mjs market.test.mjs sse.test.mjs pusher.test.mjs) || status=$?
if [[ $status != 0 ]]; then
  for name in open auth demo; do
    echo "== server log: $name (last 40 lines)" >&2
    tail -n 40 "$work/$name/server.log" >&2
  done
fi
exit $status
