#!/usr/bin/env bash
# Runs the external-client integration tests against the real hubcast binary:
# Python `websockets` and `httpx-sse` (pytest), Node `ws` and `eventsource`
# (node --test), and Debian's nginx in front of SSE streams (installed with
# apt-get when missing).
#
#   tests/external/run.sh            # from any directory
#   HUBCAST_BIN=/path/to/hubcast tests/external/run.sh
#
# Without HUBCAST_BIN the binary is <repo>/target/debug/hubcast, built with
# `cargo build` first if it is missing. Extra arguments are passed to pytest.
# Exits non-zero if either suite fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

# shellcheck source=../../scripts/hubcast-bin.sh
source "$repo/scripts/hubcast-bin.sh"
resolve_hubcast_bin "$repo"
export HUBCAST_BIN
echo "== hubcast binary: $HUBCAST_BIN"

# --- Python: venv with pinned pytest + websockets
venv="$here/.venv"
requirements="$here/python/requirements.txt"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "== creating $venv"
  python3 -m venv "$venv"
fi
stamp="$venv/.requirements.installed"
if [[ ! -f "$stamp" ]] || ! cmp -s "$requirements" "$stamp"; then
  echo "== installing Python requirements"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi

# --- Node: ws from the lock file
echo "== installing Node dependencies"
if [[ -f "$here/node/package-lock.json" ]]; then
  (cd "$here/node" && npm ci --no-audit --no-fund --loglevel=error)
else
  (cd "$here/node" && npm install --no-audit --no-fund --loglevel=error)
fi

# --- nginx (Debian's), for the SSE-through-a-proxy tests. Another job may be
# running apt at the same time, so a failed attempt (lock held) is retried.
if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
  echo "== installing nginx (apt-get)"
  as_root=()
  [[ "$(id -u)" == 0 ]] || as_root=(sudo)
  for attempt in $(seq 1 20); do
    if DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq nginx \
      || { "${as_root[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq nginx; }; then
      break
    fi
    echo "   apt busy or failed (attempt $attempt); retrying in 15 s"
    sleep 15
  done
fi

status=0

echo "== pytest (Python websockets $("$venv/bin/python" -c 'import websockets; print(websockets.__version__)'))"
# -p no:cacheprovider: leave no .pytest_cache in the tree.
if ! (cd "$here/python" && timeout 300 "$venv/bin/python" -m pytest -p no:cacheprovider -q "$@" test_protocol.py test_reliability.py); then
  echo "!! pytest failed" >&2
  status=1
fi

echo "== pytest: HTTP hardening"
if ! (cd "$here/python" && timeout 300 "$venv/bin/python" -m pytest -p no:cacheprovider -q "$@" test_http_hardening.py); then
  echo "!! pytest (HTTP hardening) failed" >&2
  status=1
fi

echo "== pytest: Server-Sent Events (httpx-sse, nginx)"
if ! (cd "$here/python" && timeout 300 "$venv/bin/python" -m pytest -p no:cacheprovider -q "$@" test_sse.py); then
  echo "!! pytest (SSE) failed" >&2
  status=1
fi

echo "== node --test (Node $(node --version), ws $(cd "$here/node" && node -p 'require("ws/package.json").version'), eventsource $(cd "$here/node" && node -p 'require("eventsource/package.json").version'))"
if ! (cd "$here/node" && timeout 300 node --test --test-reporter=spec protocol.test.mjs sse.test.mjs); then
  echo "!! node tests failed" >&2
  status=1
fi

if [[ $status -eq 0 ]]; then
  echo "== external tests: all passed"
else
  echo "== external tests: FAILED" >&2
fi
exit $status
