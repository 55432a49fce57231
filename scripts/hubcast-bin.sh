# Sourced by the test runners: sets and exports HUBCAST_BIN, the server binary
# the tests start. A given HUBCAST_BIN is resolved against the caller's
# directory; otherwise the workspace's debug build, built if missing.
#   source scripts/hubcast-bin.sh; resolve_hubcast_bin "$repo"
resolve_hubcast_bin() {
    local repo=$1
    if [[ -n "${HUBCAST_BIN:-}" ]]; then
        case "$HUBCAST_BIN" in /*) ;; *) HUBCAST_BIN="$(pwd)/$HUBCAST_BIN" ;; esac
    else
        HUBCAST_BIN="$repo/target/debug/hubcast"
        if [[ ! -x "$HUBCAST_BIN" ]]; then
            echo "== building hubcast (cargo build)"
            (cd "$repo" && cargo build --quiet)
        fi
    fi
    if [[ ! -x "$HUBCAST_BIN" ]]; then
        echo "error: hubcast binary not found or not executable: $HUBCAST_BIN" >&2
        exit 2
    fi
    export HUBCAST_BIN
}
