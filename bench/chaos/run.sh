#!/usr/bin/env bash
# The chaos soak: 3 hubcast nodes on a private PostgreSQL and a private NATS
# (both started here on free loopback ports; the shared services on 5432 and
# 4222 are never touched), faults at random, then every subscriber stream and
# every acknowledged publish checked against the log. See docs/operations.md,
# "Chaos soak".
#
#   bench/chaos/run.sh --duration 120 --seed 7      # from any directory
#   HUBCAST_BIN=/path/to/hubcast bench/chaos/run.sh --duration 1800
#
# Without HUBCAST_BIN the binary is <repo>/target/debug/hubcast, built with
# `cargo build` first if it is missing. Installs PostgreSQL and nats-server
# with apt-get when they are missing. Arguments go to chaos.py (--help).
# Exits 0 when every check passed, 1 on a violated guarantee, 2 when the
# harness itself failed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

# shellcheck source=../../scripts/hubcast-bin.sh
source "$repo/scripts/hubcast-bin.sh"
resolve_hubcast_bin "$repo"
echo "== hubcast binary: $HUBCAST_BIN"

# --- the server binaries of the private services
have_pg() {
    [[ -n "${HUBCAST_TEST_PG_BIN:-}" ]] || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null
}
have_nats() {
    command -v nats-server >/dev/null || [[ -x /usr/sbin/nats-server ]]
}
missing=()
have_pg || missing+=(postgresql)
have_nats || missing+=(nats-server)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
    echo "== installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- venv with pinned websockets + httpx
venv="$here/.venv"
requirements="$here/requirements.txt"
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

exec "$venv/bin/python" "$here/chaos.py" --hubcast-bin "$HUBCAST_BIN" "$@"
