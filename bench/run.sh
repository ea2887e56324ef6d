#!/usr/bin/env bash
# Runs the platform benchmark (benches/platform.rs) with the release binary it drives.
# Usage: bench/run.sh [RELEASE_BINARY]
# Knobs (see benches/platform.rs): BENCH_SCALE=0.1 BENCH_RUNS=1 BENCH_SECS=3 for a quick run;
# BENCH_ONLY=relay,projection,api,consumer,get,mixed,freshness,rebuild,peer,relay-scaling,projection-scaling.
set -euo pipefail
cd "$(dirname "$0")/.."
export ALIEXPRESS_BIN="${1:-${CARGO_TARGET_DIR:-target}/release/aliexpress}"
# oha (open-loop HTTP load) from crates.io into ~/.cache/aliexpress/bin, built once.
OHA="$(deploy/local/oha)"
export OHA
cargo bench --locked --bench platform
