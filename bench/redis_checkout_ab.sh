#!/usr/bin/env bash
# A/B of GET /api/products/{id} (Redis hit) throughput with the two Redis checkout policies of
# one `serve` binary: A = REDIS_CHECKOUT_CHECK=idle (shipped: a connection is checked only
# after 10 s unused) and B = always (deadpool-redis's UNWATCH + PING on every checkout). Same
# database, same Redis, same oha load (closed loop, CONNS connections, SECS seconds), RUNS
# rounds interleaved A/B, B/A, ... Opt-in: BENCH_ONLY=redis-checkout make bench. Since cache
# reads share one multiplexed connection per worker (no checkout), a hit is served the same way
# on both sides; the setting now affects the pool's writes-through and read-through puts only;
# results: docs/BENCHMARKS.md. Needs the local stack and oha (deploy/local/oha).
# Usage: bench/redis_checkout_ab.sh BINARY     (knobs: SECS=10 CONNS=16 RUNS=3)
set -euo pipefail
BIN="$(realpath "$1")"
cd "$(dirname "$0")/.."
OHA="${OHA:-$(deploy/local/oha)}"
SECS="${SECS:-10}"; CONNS="${CONNS:-16}"; RUNS="${RUNS:-3}"
DB="aliexpress_ab_$$"
psql -q "postgres://aliexpress:aliexpress@127.0.0.1:5432/aliexpress" -c "CREATE DATABASE $DB" >/dev/null
export DATABASE_URL="postgres://aliexpress:aliexpress@127.0.0.1:5432/$DB?sslmode=disable"
export ALIEXPRESS_NAMESPACE="ab$$_" RUST_LOG=warn API_TOKENS=bench RATE_LIMIT_PER_SECOND=0
"$BIN" migrate >/dev/null
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  psql -q "postgres://aliexpress:aliexpress@127.0.0.1:5432/aliexpress" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null; }
trap cleanup EXIT
start() { # checkout-check port
  REDIS_CHECKOUT_CHECK="$1" "$BIN" serve --bind 127.0.0.1:$2 --metrics-bind 127.0.0.1:0 >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 600); do curl -sf "http://127.0.0.1:$2/health/live" >/dev/null && return; sleep 0.1; done
  echo "$1 did not start"; exit 1
}
start idle 18601; start always 18602
id=$(curl -sf -H 'Authorization: Bearer bench' -H 'content-type: application/json' \
  -d '{"sku":"AB-1","title":"Bench product","description":"'"$(printf 'x%.0s' $(seq 300))"'","price":{"amount_minor":100,"currency":"USD"}}' \
  http://127.0.0.1:18601/api/products | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
for p in 18601 18602; do
  src=$(curl -s -D - -o /dev/null -H 'Authorization: Bearer bench' http://127.0.0.1:$p/api/products/$id | tr -d '\r' | awk -F': ' 'tolower($1)=="x-read-source"{print $2}')
  echo "port $p x-read-source: $src"
done
run() { # name port
  "$OHA" --no-tui --output-format json -c "$CONNS" -z "${SECS}s" -H 'Authorization: Bearer bench' \
    "http://127.0.0.1:$2/api/products/$id" | python3 -c '
import json,sys; v=json.load(sys.stdin); c=v["statusCodeDistribution"]; ok=c.get("200",0); p50=v["latencyPercentiles"]["p50"]*1000; p99=v["latencyPercentiles"]["p99"]*1000
print(f"{sys.argv[1]:9s} {ok/float(sys.argv[2]):8.0f} req/s  p50 {p50:.2f} ms  p99 {p99:.2f} ms  non-200 {sum(c.values())-ok}")' "$1" "$SECS"
}
run A-idle 18601 >/dev/null; run B-always 18602 >/dev/null  # warm-up
for r in $(seq "$RUNS"); do
  if (( r % 2 )); then run A-idle 18601; run B-always 18602; else run B-always 18602; run A-idle 18601; fi
done
