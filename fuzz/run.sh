#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation and runs
# each for a while (default 10 s each; `fuzz/run.sh 300` for a longer run).
#
# It needs neither nightly Rust nor cargo-fuzz: the instrumentation is stable
# `-C` flags (what `cargo fuzz build --sanitizer none` passes). With cargo-fuzz
# installed, `cargo fuzz run TARGET` works on this directory as well.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-10}
TARGETS=(client_message room_name publish_body query token)

export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps RUSTFLAGS off build scripts (as cargo-fuzz does).
HOST=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --locked --target "$HOST" --target-dir target --bins

mkdir -p artifacts
for target in "${TARGETS[@]}"; do
    mkdir -p "corpus/$target" "target/corpus/$target"
    echo "== fuzz $target for ${SECONDS_EACH}s"
    "target/$HOST/release/$target" "target/corpus/$target" "corpus/$target" \
        -max_total_time="$SECONDS_EACH" -max_len=4096 -timeout=5 -rss_limit_mb=2048 \
        -artifact_prefix="artifacts/$target-" -print_final_stats=1 2>&1 \
        | grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+== ERROR|SUMMARY)|panicked|Test unit written" || true
    if ls "artifacts/$target-"* >/dev/null 2>&1; then
        echo "fuzz target $target found a failing input: see fuzz/artifacts/" >&2
        exit 1
    fi
done
echo "fuzzing: no failures"
