#!/usr/bin/env bash
# Where the CPU of a GET goes: /health/live, a Redis hit and a Postgres miss of one `serve`
# binary under oha (closed loop, CONNS connections, SECS seconds each), with the CPU each
# process used per answered request, read from /proc: `serve`, redis-server, every Postgres
# process (and the backends that ended meanwhile, through the postmaster's children times), oha
# itself, and the whole box. The miss server keeps cache entries 1 s and reads 65 536 products at
# random, like the `get` row of `make bench`. Results: docs/BENCHMARKS.md ("Where the time
# goes"). Needs the local stack and oha (deploy/local/oha).
# Usage: bench/get_cpu_split.sh BINARY     (knobs: SECS=10 CONNS=16)
set -euo pipefail
BIN="$(realpath "$1")"
cd "$(dirname "$0")/.."
OHA="${OHA:-$(deploy/local/oha)}"
SECS="${SECS:-10}"; CONNS="${CONNS:-16}"
ADMIN="postgres://aliexpress:aliexpress@127.0.0.1:5432/aliexpress"
DB="aliexpress_split_$$"
TIMES=$(mktemp)
psql -q "$ADMIN" -c "CREATE DATABASE $DB" >/dev/null
export DATABASE_URL="postgres://aliexpress:aliexpress@127.0.0.1:5432/$DB?sslmode=disable"
export ALIEXPRESS_NAMESPACE="split$$_" RUST_LOG=warn API_TOKENS=bench RATE_LIMIT_PER_SECOND=0
"$BIN" migrate >/dev/null
psql -q "$DATABASE_URL" -c "INSERT INTO products (id, sku, title, description, category, brand, attributes, \
  price_minor, currency, stock, status, version, created_at, updated_at) \
  SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid, 'MISS-' || g, 'Bench product', \
  repeat('x', 300), '', '', '{}', 100, 'USD', 0, 'published', 1, now(), now() FROM generate_series(0, 65535) g"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null; rm -f "$TIMES"; }
trap cleanup EXIT
start() { # port [env...]
  local port=$1; shift
  env "$@" "$BIN" serve --bind 127.0.0.1:"$port" --metrics-bind 127.0.0.1:0 >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 600); do curl -sf "http://127.0.0.1:$port/health/live" >/dev/null && return; sleep 0.1; done
  echo "serve on $port did not start"; exit 1
}
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
sum_ticks() { local t=0 s; for p in $(pgrep -f "$1"); do s=$(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0); t=$((t+s)); done; echo $t; }
pg_ticks() { local pm; pm=$(pgrep -o -x postgres); echo $(( $(sum_ticks postgres) + $(awk '{print $16+$17}' "/proc/$pm/stat") )); }
box_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
measure() { # label pid url [oha args...]
  local label=$1 pid=$2 url=$3; shift 3
  local s0 r0 p0 b0 s1 r1 p1 b1 out n
  s0=$(ticks "$pid"); r0=$(sum_ticks redis-server); p0=$(pg_ticks); b0=$(box_ticks)
  out=$(/usr/bin/time -f "%U %S" -o "$TIMES" "$OHA" -z "${SECS}s" -c "$CONNS" --no-tui --output-format json \
    -H "Authorization: Bearer bench" "$@" "$url" 2>/dev/null)
  s1=$(ticks "$pid"); r1=$(sum_ticks redis-server); p1=$(pg_ticks); b1=$(box_ticks)
  OHA_OUT="$out" OHA_TIMES="$(cat "$TIMES")" python3 - "$label" "$SECS" "$s1" "$s0" "$r1" "$r0" "$p1" "$p0" "$b1" "$b0" <<'PY'
import json, os, sys
label, secs, s1, s0, r1, r0, p1, p0, b1, b0 = sys.argv[1], float(sys.argv[2]), *map(int, sys.argv[3:])
report = json.loads(os.environ["OHA_OUT"])
user, system = map(float, os.environ["OHA_TIMES"].split())
n = report["statusCodeDistribution"].get("200", 0)
us = lambda ticks: ticks * 1e4 / n  # ticks of 10 ms -> µs per answered request
print(f"{label:6} {n / secs:8.0f} req/s; CPU µs/request: serve {us(s1 - s0):6.1f}, redis {us(r1 - r0):5.1f}, "
      f"postgres {us(p1 - p0):5.1f}, oha {(user + system) * 1e6 / n:5.1f}, box {us(b1 - b0):6.1f}")
PY
}
start 18301
start 18302 REDIS_CACHE_TTL_SECS=1
hit_pid=${pids[0]}; miss_pid=${pids[1]}
id=00000000-0000-4000-8000-000000000007
curl -sf -H "Authorization: Bearer bench" "http://127.0.0.1:18301/api/products/$id" >/dev/null
measure live "$hit_pid" "http://127.0.0.1:18301/health/live"
measure hit "$hit_pid" "http://127.0.0.1:18301/api/products/$id"
measure miss "$miss_pid" "http://127.0.0.1:18302/api/products/00000000-0000-4000-8000-00000000[0-9a-f]{4}" --rand-regex-url
