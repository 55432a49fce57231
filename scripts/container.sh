#!/usr/bin/env bash
# Builds the container image (Containerfile) from a hubcast binary, with no
# registry: FROM scratch plus a staged root filesystem (the binary, the
# shared libraries `ldd` names, CA roots, an empty config).
#
#   scripts/container.sh build [TAG]   # TAG defaults to localhost/hubcast:VERSION
#   scripts/container.sh smoke         # build a throwaway image, run it, check it, remove it
#
# The binary is $HUBCAST_BIN, else target/release/hubcast (built with
# `cargo build --release --locked` when missing). Needs podman (Debian:
# `apt-get install podman`); `build` uses buildah instead when podman is
# missing. `smoke` runs as follows, and works where the caller may not raise
# resource limits or use crun in a hybrid cgroup layout (a VM or a container
# without systemd): it gives the container limits no higher than its own
# (`--ulimit`), and falls back to runc (`apt-get install runc`) when the
# default runtime cannot start a container. Set HUBCAST_CONTAINER_RUNTIME to
# pick the OCI runtime yourself.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

command=${1:-}
case "$command" in
    build | smoke) ;;
    *)
        echo "usage: scripts/container.sh build [TAG] | smoke" >&2
        exit 2
        ;;
esac

if [[ -n "${HUBCAST_BIN:-}" ]]; then
    case "$HUBCAST_BIN" in /*) ;; *) HUBCAST_BIN="$repo/$HUBCAST_BIN" ;; esac
else
    HUBCAST_BIN="$repo/target/release/hubcast"
    [[ -x "$HUBCAST_BIN" ]] || cargo build --release --locked --bin hubcast
fi
[[ -x "$HUBCAST_BIN" ]] || { echo "error: no hubcast binary at $HUBCAST_BIN" >&2; exit 2; }
command -v podman >/dev/null || command -v buildah >/dev/null || {
    echo "error: podman (or buildah) is needed: apt-get install podman" >&2
    exit 2
}

version=$("$HUBCAST_BIN" --version | awk '{print $2}')
work=$(mktemp -d "${TMPDIR:-/tmp}/hubcast-image.XXXXXX")
containers=()
volume=""
image=""
cleanup() {
    local status=$?
    if [[ "$command" == smoke ]]; then
        for c in "${containers[@]}"; do podman rm -f "$c" >/dev/null 2>&1 || true; done
        [[ -n "$volume" ]] && podman volume rm -f "$volume" >/dev/null 2>&1
        [[ -n "$image" ]] && podman rmi -f "$image" >/dev/null 2>&1
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT

# The context: rootfs/ (what `ldd` says the binary loads, at the same paths)
# and data/ (the volume's initial content, owned by the image's user).
stage() {
    local root=$work/rootfs
    mkdir -p "$root/usr/local/bin" "$root/etc/hubcast" "$root/etc/ssl/certs" "$root/tmp" "$work/data"
    chmod 1777 "$root/tmp"
    cp "$HUBCAST_BIN" "$root/usr/local/bin/hubcast"
    local lib
    for lib in $(ldd "$HUBCAST_BIN" | grep -o '/[^ ]*'); do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
        cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
    fi
    printf '%s\n' '# hubcast.toml: mount your own over this file (docs/configuration.md).' \
        '# The image listens on 0.0.0.0:8787 and keeps its SQLite log in /data.' >"$root/etc/hubcast/hubcast.toml"
    cp "$repo/Containerfile" "$work/Containerfile"
}

build_image() {
    local tag=$1
    stage
    if command -v podman >/dev/null; then
        podman build --quiet --file "$work/Containerfile" --tag "$tag" "$work" >/dev/null
    else
        buildah build --quiet --file "$work/Containerfile" --tag "$tag" "$work" >/dev/null
    fi
    echo "built $tag ($(du -sh "$work/rootfs" | cut -f1) of files)"
}

if [[ "$command" == build ]]; then
    build_image "${2:-localhost/hubcast:$version}"
    exit 0
fi

# ------------------------------------------------------------------- smoke
command -v podman >/dev/null || { echo "error: smoke needs podman" >&2; exit 2; }
image="localhost/hubcast-smoke:$$"
build_image "$image"

# Limits no higher than ours: raising one needs CAP_SYS_RESOURCE.
run_flags=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=4096:4096")
runtime=()
if [[ -n "${HUBCAST_CONTAINER_RUNTIME:-}" ]]; then
    runtime=(--runtime "$HUBCAST_CONTAINER_RUNTIME")
fi
fail() {
    echo "FAIL: $*" >&2
    exit 1
}

echo "== the image runs the binary"
if ! out=$(podman "${runtime[@]}" run --rm --network=none "${run_flags[@]}" "$image" --version 2>&1); then
    if [[ ${#runtime[@]} -eq 0 ]] && command -v runc >/dev/null; then
        echo "   the default runtime failed ($out); trying runc"
        runtime=(--runtime runc)
        out=$(podman "${runtime[@]}" run --rm --network=none "${run_flags[@]}" "$image" --version 2>&1) ||
            fail "runc cannot run the image either: $out"
    else
        fail "cannot run the image: $out (install runc, or set HUBCAST_CONTAINER_RUNTIME)"
    fi
fi
[[ "$out" == "hubcast $version" ]] || fail "--version printed '$out', expected 'hubcast $version'"

echo "== with no credentials, protected mode refuses 0.0.0.0"
if out=$(podman "${runtime[@]}" run --rm --network=none "${run_flags[@]}" "$image" 2>&1); then
    fail "the image served on 0.0.0.0 without credentials: $out"
fi
grep -q -- '--insecure' <<<"$out" || fail "the refusal does not say what to do: $out"

echo "== serving with an API key, on a volume"
key=smoke-key-0123456789abcdef0123456789
printf '[[auth.api_keys]]\nname = "smoke"\nkey = "%s"\n' "$key" >"$work/hubcast.toml"
chmod 644 "$work/hubcast.toml"
volume="hubcast-smoke-$$"
podman volume create "$volume" >/dev/null
start() {
    local name="hubcast-smoke-$$-$1"
    # Host network, a port the kernel picks, announced on stdout.
    podman "${runtime[@]}" run -d --name "$name" --network=host "${run_flags[@]}" \
        -e HUBCAST_LISTEN=127.0.0.1:0 -v "$work/hubcast.toml:/etc/hubcast/hubcast.toml:ro" \
        -v "$volume:/data" "$image" >/dev/null
    containers+=("$name")
    local i line=""
    for i in $(seq 1 200); do
        line=$(podman logs "$name" 2>/dev/null | grep -m1 '^listening on http://' || true)
        [[ -n "$line" ]] && break
        [[ "$(podman inspect -f '{{.State.Running}}' "$name")" == true ]] ||
            fail "the container exited: $(podman logs "$name" 2>&1 | tail -5)"
        sleep 0.1
    done
    [[ -n "$line" ]] || fail "the server did not say where it listens: $(podman logs "$name" 2>&1 | tail -5)"
    url=${line#listening on }
    current=$name
}
start 1
publish() {
    curl -s --noproxy '*' -o "$work/body" -w '%{http_code}' -X POST "$url/v1/rooms/smoke/events" "$@"
}
status=$(publish -d '{"data":"no key"}')
[[ "$status" == 401 ]] || fail "a publish without the key answered $status"
status=$(publish -H "Authorization: Bearer $key" -d '{"data":{"n":1}}')
[[ "$status" == 201 ]] || fail "a publish with the key answered $status: $(cat "$work/body")"
grep -q '"seq":1' "$work/body" || fail "the first publish is not seq 1: $(cat "$work/body")"
ready=$(curl -s --noproxy '*' -o /dev/null -w '%{http_code}' "$url/readyz")
[[ "$ready" == 200 ]] || fail "/readyz answered $ready"

echo "== a graceful stop, and the log survives in the volume"
podman stop --time 20 "$current" >/dev/null
code=$(podman inspect -f '{{.State.ExitCode}}' "$current")
[[ "$code" == 0 ]] || fail "SIGTERM ended the server with $code: $(podman logs "$current" 2>&1 | tail -5)"
start 2
history=$(curl -s --noproxy '*' -H "Authorization: Bearer $key" "$url/v1/rooms/smoke/events")
grep -q '"data":{"n":1}' <<<"$history" || fail "the event is gone after a restart: $history"
status=$(publish -H "Authorization: Bearer $key" -d '{"data":{"n":2}}')
grep -q '"seq":2' "$work/body" || fail "the next publish is not seq 2 ($status): $(cat "$work/body")"

echo "container smoke test passed ($image, runtime ${runtime[*]:-default})"
