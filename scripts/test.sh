#!/usr/bin/env bash
# The whole test suite: Rust unit, contract, property and integration tests,
# then the integration tests driven by clients from other ecosystems (Python
# `websockets`, Node `ws`). Installs what it needs when it is missing and
# leaves running services alone. Run from anywhere: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v node >/dev/null || need_apt+=(nodejs npm)
if ((${#need_apt[@]})); then
    step "installing ${need_apt[*]}"
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
fi

step "cargo build"
cargo build --locked --all-targets

step "Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --no-fail-fast
else
    cargo test --locked --no-fail-fast
fi

step "external clients (Python websockets, Node ws)"
HUBCAST_BIN="$PWD/target/debug/hubcast" bash tests/external/run.sh

echo
echo "all test suites passed"
