#!/usr/bin/env bash
# The whole test suite: Rust unit, contract, property and integration tests;
# the publishable crates packaged and verified (`cargo publish --dry-run`);
# the README's commands run as written against the binary;
# then the black-box integration tests again on PostgreSQL + NATS (cluster
# mode, plus tests/cluster.rs), starting those services when they are not
# running (scripts/services.sh); then the integration tests driven by clients
# from other ecosystems (Python `websockets`, Node `ws`); Schemathesis against
# the OpenAPI description; the dashboard, the demos, EventSource and pusher-js
# in headless Chromium; the TypeScript SDK's tests; the Python library's type check
# and tests; a 2-minute chaos soak (bench/chaos); the cluster at scale in small
# (bench/cluster: 3 nodes, 3,000 sockets, a node killed, every stream exact);
# a short fuzz run of every parser.
# (tests/webhooks.rs installs the `standardwebhooks` package its receiver
# verifies with into tests/webhooks/.venv on first use; tests/pusher.rs
# installs pusher-js, laravel-echo and the npm `pusher` library into
# tests/pusher/node_modules and the PyPI `pusher` library into
# tests/pusher/.venv the same way; tests/browser/run.sh installs the same npm
# packages there for pusher-js in Chromium.) Installs what it
# needs when it is missing and leaves running services alone. Prints how long
# each step took. Run from anywhere: scripts/test.sh
#
#   HUBCAST_TEST_OFFLINE=1     package the crates with `cargo package --offline`
#                              (cached index) instead of `cargo publish --dry-run`
#   HUBCAST_TEST_CONTAINER=1   also build the container image and smoke-test it
#                              (scripts/container.sh smoke; installs podman, runc)
set -euo pipefail
cd "$(dirname "$0")/.."

timings=()
step_name=""
step_start=$SECONDS
step() {
    finish_step
    step_name="$*"
    step_start=$SECONDS
    printf '\n==> %s\n' "$*"
}
finish_step() {
    if [[ -n "$step_name" ]]; then
        timings+=("$(printf '%5ds  %s' $((SECONDS - step_start)) "$step_name")")
    fi
}
have_nextest() { cargo nextest --version >/dev/null 2>&1; }

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v node >/dev/null || need_apt+=(nodejs npm)
# tests/cli.rs: a TLS endpoint (nginx) with a certificate made by openssl.
[[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null || need_apt+=(nginx)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v curl >/dev/null || need_apt+=(curl)
if [[ "${HUBCAST_TEST_CONTAINER:-}" == 1 ]]; then
    command -v podman >/dev/null || need_apt+=(podman)
    command -v runc >/dev/null || need_apt+=(runc)
fi
if ((${#need_apt[@]})); then
    step "installing ${need_apt[*]}"
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
fi

step "cargo build"
cargo build --locked --workspace --all-targets

step "Rust tests"
if have_nextest; then
    cargo nextest run --locked --workspace --no-fail-fast
else
    cargo test --locked --workspace --no-fail-fast
fi

step "packages: hubcast-protocol and hubcast-client as crates.io would build them"
# One command for both: cargo (>= 1.90) packages them together and verifies
# hubcast-client against the packaged hubcast-protocol from a temporary local
# registry, so the client's `path` + `version` dependency needs no upload.
# --allow-dirty: the suite checks the working tree, committed or not.
# Cargo treats a registry crate of a given version as immutable: it would
# reuse the packaged hubcast-protocol an earlier run extracted into
# ~/.cargo/registry/src/-<hash>/ and the build of it, though the code has
# changed since. So the check builds in a target dir of its own, from which
# our own crates' artifacts are removed before each run (their dependencies
# stay cached), and the stale extracts go too.
export CARGO_TARGET_DIR="$PWD/target/package-check"
rm -rf "$CARGO_TARGET_DIR"/package \
       "$CARGO_TARGET_DIR"/debug/.fingerprint/hubcast-* \
       "$CARGO_TARGET_DIR"/debug/deps/*hubcast_* \
       "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/hubcast-protocol-* \
       "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/hubcast-client-*
if [[ "${HUBCAST_TEST_OFFLINE:-}" == 1 ]]; then
    cargo package --offline --locked --allow-dirty -p hubcast-protocol -p hubcast-client
else
    cargo publish --dry-run --locked --allow-dirty -p hubcast-protocol -p hubcast-client
fi
unset CARGO_TARGET_DIR

step "README commands, run as written against the binary"
HUBCAST_BIN="$PWD/target/debug/hubcast" python3 tests/readme/check.py

step "services for cluster mode (PostgreSQL, NATS)"
bash scripts/services.sh

step "integration tests on PostgreSQL + NATS (HUBCAST_TEST_BACKEND=cluster)"
# Only the black-box binaries (tests/*.rs) that start real processes;
# hub_handoff is in-process and has no backend to switch.
if have_nextest; then
    HUBCAST_TEST_BACKEND=cluster cargo nextest run --locked --no-fail-fast -E 'kind(test) and not binary(hub_handoff)'
else
    blackbox=()
    for file in tests/*.rs; do
        name=$(basename "$file" .rs)
        [[ "$name" == hub_handoff ]] || blackbox+=(--test "$name")
    done
    HUBCAST_TEST_BACKEND=cluster cargo test --locked --no-fail-fast "${blackbox[@]}"
fi

step "external clients (Python websockets, httpx-sse; Node ws, eventsource; nginx)"
HUBCAST_BIN="$PWD/target/debug/hubcast" bash tests/external/run.sh

step "OpenAPI: Schemathesis against the running binary"
HUBCAST_BIN="$PWD/target/debug/hubcast" bash tests/openapi/run.sh

step "TypeScript SDK: unit tests, shared vectors, end to end in Chromium, README example, packed package"
HUBCAST_BIN="$PWD/target/debug/hubcast" bash clients/js/run-tests.sh

step "Python library: mypy --strict, pytest against the binary"
HUBCAST_BIN="$PWD/target/debug/hubcast" bash clients/python/run-tests.sh

step "chaos soak: 3 nodes on a private PostgreSQL + NATS, random faults (2 min)"
HUBCAST_BIN="$PWD/target/debug/hubcast" bash bench/chaos/run.sh --duration 120 --seed "${HUBCAST_CHAOS_SEED:-$RANDOM}"

step "cluster at scale, small: 3 nodes on PostgreSQL + NATS, 3,000 npm ws sockets, a node killed mid-run, every stream exact"
# bench/cluster with the debug build: 44 rooms (40 × 60 + 4 × 150 subscribers
# spread over the nodes), 100 durable publishes/s in all, to every node, for 20 s; node 2
# kill -9'd 8 s in; its subscribers resume on the others with their cursors.
# Asserts exactness only (nothing lost, doubled or reset; every subscriber of
# the killed node resumed), never a time.
HUBCAST_BIN="$PWD/target/debug/hubcast" bash bench/cluster/run.sh --nodes 3 --rooms 40x60,4x150 \
    --rate 100 --seconds 20 --kill-node 2 --kill-at 8 --drain 90 --progress 5 \
    --assert-exact --no-plot --out target/test-cluster

step "dashboard, demos, SSE and pusher-js in headless Chromium"
HUBCAST_BIN="$PWD/target/debug/hubcast" bash tests/browser/run.sh

if [[ "${HUBCAST_TEST_CONTAINER:-}" == 1 ]]; then
    step "container image: build FROM scratch, run, publish, restart on its volume"
    HUBCAST_BIN="$PWD/target/debug/hubcast" bash scripts/container.sh smoke
fi

step "fuzz every client-facing parser (5 s each)"
bash fuzz/run.sh 5

finish_step
echo
echo "step times:"
printf '%s\n' "${timings[@]}"
echo
echo "all test suites passed"
