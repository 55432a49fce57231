#!/usr/bin/env bash
# clients/js: install (npm ci), build (tsc), type-check the tests, run the unit
# tests (vitest: shared test vectors, property test, API), then the end-to-end
# tests in headless Chromium and on Node against the real hubcast binary (the
# README's examples too, run as written), and the package as published (npm
# pack, installed into a temporary project, loaded with import and require).
#
#   clients/js/run-tests.sh                       # from any directory
#   HUBCAST_BIN=/path/to/hubcast clients/js/run-tests.sh
#
# Without HUBCAST_BIN the binary is <repo>/target/debug/hubcast, built with
# `cargo build` if it is missing. Installs Debian's chromium when
# /usr/bin/chromium is missing. Exits non-zero if anything fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
step() { printf '\n==> %s\n' "$*"; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

if [[ ! -x /usr/bin/chromium ]]; then
  step "installing chromium (apt-get)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  step "installing nodejs and npm (apt-get)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq nodejs npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if (( node_major < 20 )); then
  echo "error: Node >= 20 is needed (found $(node --version))" >&2
  exit 2
fi

# shellcheck source=../../scripts/hubcast-bin.sh
source "$repo/scripts/hubcast-bin.sh"
resolve_hubcast_bin "$repo"
export HUBCAST_BIN
# HUBCAST_* variables are server config; the tests strip them from the servers they start.

cd "$here"
step "npm ci (Node $(node --version))"
npm ci --no-audit --no-fund --loglevel=error

step "build (tsc → dist/ ESM and dist/cjs/ CommonJS)"
npm run --silent build

step "type-check the tests"
npx --no-install tsc -p tsconfig.json --noEmit

status=0
step "unit tests (vitest)"
if ! timeout 300 npx --no-install vitest run --config vitest.config.ts; then
  echo "!! unit tests failed" >&2
  status=1
fi

step "end-to-end tests: headless Chromium and Node against $HUBCAST_BIN; the packed package"
if ! timeout 400 npx --no-install vitest run --config vitest.e2e.config.ts; then
  echo "!! end-to-end tests failed" >&2
  status=1
fi

if [[ $status -eq 0 ]]; then
  echo; echo "clients/js: all tests passed"
else
  echo; echo "clients/js: FAILED" >&2
fi
exit $status
