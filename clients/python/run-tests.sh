#!/usr/bin/env bash
# The Python library's checks: mypy --strict over the package and its tests,
# then pytest against the real hubcast binary.
#
#   clients/python/run-tests.sh              # from any directory
#   HUBCAST_BIN=/path/to/hubcast clients/python/run-tests.sh -k subscriber
#
# Without HUBCAST_BIN the binary is <repo>/target/debug/hubcast, built with
# `cargo build` first if it is missing. Extra arguments go to pytest. The venv
# is clients/python/.venv (git-ignored); its pinned requirements are installed
# when requirements-test.txt changes, the package itself on every run.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

# shellcheck source=../../scripts/hubcast-bin.sh
source "$repo/scripts/hubcast-bin.sh"
resolve_hubcast_bin "$repo"
echo "== hubcast binary: $HUBCAST_BIN"

venv="$here/.venv"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "== creating $venv"
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
pip=("$py" -m pip --quiet --disable-pip-version-check)
requirements="$here/requirements-test.txt"
stamp="$venv/.requirements.installed"
if [[ ! -f "$stamp" ]] || ! cmp -s "$requirements" "$stamp"; then
  echo "== installing pinned requirements"
  "${pip[@]}" install -r "$requirements"
  cp "$requirements" "$stamp"
fi
echo "== installing hubcast with its test extra"
# Not editable: the tests import the package as built (py.typed included).
"${pip[@]}" install --no-build-isolation --force-reinstall --no-deps "$here"
"${pip[@]}" install --no-build-isolation "$here[test]"

cd "$here"
echo "== mypy --strict ($("$py" -m mypy --version))"
"$py" -m mypy --strict --cache-dir "$venv/.mypy_cache" src/hubcast tests

echo "== pytest (Python $("$py" -c 'import sys; print(sys.version.split()[0])'))"
timeout 600 "$py" -m pytest -q "$@"
