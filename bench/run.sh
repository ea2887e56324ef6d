#!/usr/bin/env bash
# Runs the platform benchmark (benches/platform.rs) with the release binary it drives.
# Usage: bench/run.sh [RELEASE_BINARY]
# Knobs (see benches/platform.rs): BENCH_SCALE=0.1 BENCH_RUNS=1 BENCH_SECS=3 for a quick run;
# BENCH_ONLY=relay,projection,api,consumer,get,mixed,freshness,rebuild,category-rename,search-facets,ops-load,overload,disaster,peer,read-peer,relay-scaling,projection-scaling,
# redis-checkout (opt-in: the A/B of the Redis pool's checkout check, bench/redis_checkout_ab.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export ALIEXPRESS_BIN="${1:-${CARGO_TARGET_DIR:-target}/release/aliexpress}"
# oha (open-loop HTTP load) from crates.io into ~/.cache/aliexpress/bin, built once.
OHA="$(deploy/local/oha)"
export OHA
# No scheduled base backup of the stack's Postgres while this measures (one now if due).
deploy/local/stack backup --hold $$ >/dev/null 2>&1 || true
if [[ ${BENCH_ONLY:-} != redis-checkout ]]; then
  cargo bench --locked --bench platform
fi
# Opt-in: cache reads no longer check a pooled connection out (the shared read connection), so
# the A/B's GET hit no longer depends on the setting (docs/BENCHMARKS.md).
if [[ ,${BENCH_ONLY:-}, == *,redis-checkout,* ]]; then
  echo "== Redis checkout check: idle (shipped) vs always (deadpool-redis's PING on every checkout)"
  bash bench/redis_checkout_ab.sh "$ALIEXPRESS_BIN"
fi
