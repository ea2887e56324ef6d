#!/usr/bin/env bash
# The relay's claim with the outbox payload stored as `json` (shipped) or `jsonb` (before
# 2026-12-10-000001_outbox_payload_as_json): the same binary's one-shot `process-outbox` over
# the same 100k rows of ~1 KB (the relay row's seed), the two databases alternating ROUNDS
# times. Prints each batch's claim in ms (sorted; `outbox batch timings`) and the run's rate.
# Results: docs/BENCHMARKS.md ("Where the time goes"). Needs the local stack.
# Usage: bench/relay_claim_ab.sh BINARY     (knobs: ROUNDS=3)
set -euo pipefail
BIN="$(realpath "$1")"; ROUNDS="${ROUNDS:-3}"
PG="postgres://aliexpress:aliexpress@127.0.0.1:5432"
SEED="INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, topic, key, event_type, schema_version, payload, headers)
  SELECT gen_random_uuid(), 'product', p.id, v, 'TOPIC', p.id::text, 'ProductStockAdjusted', 1,
    jsonb_build_object('aggregate_id', p.id, 'aggregate_version', v,
      'pad', (SELECT string_agg(md5(random()::text || g::text || v::text || p.id::text), '') FROM generate_series(1, 28) g)),
    jsonb_build_object('event_type', 'ProductStockAdjusted', 'aggregate_version', v::text)
  FROM generate_series(1, 10) v, (SELECT gen_random_uuid() AS id FROM generate_series(1, 10000)) p ORDER BY v, p.id"
LOGS=$(mktemp -d)
cleanup() { for side in json jsonb; do psql -q "$PG/aliexpress" -c "DROP DATABASE IF EXISTS claim_ab_$side WITH (FORCE)" >/dev/null; done; rm -rf "$LOGS"; }
trap cleanup EXIT
for side in json jsonb; do
  psql -q "$PG/aliexpress" -c "DROP DATABASE IF EXISTS claim_ab_$side WITH (FORCE)" -c "CREATE DATABASE claim_ab_$side"
  DATABASE_URL="$PG/claim_ab_$side?sslmode=disable" "$BIN" migrate >/dev/null
  if [[ $side == jsonb ]]; then
    psql -q "$PG/claim_ab_$side" -c "ALTER TABLE outbox ALTER COLUMN headers DROP DEFAULT" \
      -c "ALTER TABLE outbox ALTER COLUMN payload TYPE jsonb USING payload::jsonb, ALTER COLUMN headers TYPE jsonb USING headers::jsonb"
  fi
  psql -q "$PG/claim_ab_$side" -c "${SEED//TOPIC/claim_ab_$side}"
done
for r in $(seq "$ROUNDS"); do
  for side in json jsonb; do
    url="$PG/claim_ab_$side?sslmode=disable"
    psql -q "$url" -c "UPDATE outbox SET published_at = NULL" -c "VACUUM ANALYZE outbox"
    s=$(date +%s.%N)
    DATABASE_URL="$url" KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}" ALIEXPRESS_NAMESPACE="claimab${side}_" \
      RUST_LOG=aliexpress=debug "$BIN" process-outbox >/dev/null 2>"$LOGS/$side.log"
    e=$(date +%s.%N)
    n=$(psql -Atq "$url" -c "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
    claims=$(grep -o "claim_ms=[0-9]*" "$LOGS/$side.log" | cut -d= -f2 | sort -n | tr '\n' ' ')
    python3 -c "import sys; n, s, e = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]); print(f'round {sys.argv[4]} {sys.argv[5]:5}: {n} rows, {n / (e - s):6.0f} rows/s; claims (ms) {sys.argv[6]}')" \
      "$n" "$s" "$e" "$r" "$side" "$claims"
  done
done
