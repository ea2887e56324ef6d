#!/usr/bin/env bash
# Runs the platform benchmark (benches/platform.rs) with the release binary it drives.
# Usage: bench/run.sh [RELEASE_BINARY]   (BENCH_SCALE=0.2 for a quick run)
set -euo pipefail
cd "$(dirname "$0")/.."
export ALIEXPRESS_BIN="${1:-${CARGO_TARGET_DIR:-target}/release/aliexpress}"
cargo bench --locked --bench platform
