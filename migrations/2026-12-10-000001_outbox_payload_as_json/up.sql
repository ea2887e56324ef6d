-- The outbox keeps each event's payload and headers as `json` (the text the writer serialized)
-- instead of `jsonb`. The relay sends that text to Kafka as it is: a `jsonb` column had to be
-- printed back to text by PostgreSQL for every row it claimed (about 3 µs a ~1 KB row, 15 ms of
-- a 5 000-row claim; docs/BENCHMARKS.md), and parsed into its binary form on every write.
-- Nothing queries inside an outbox payload but the operator's `->>` lookups, which `json` has.
--
-- Rewrites the table under an exclusive lock: writes wait for it. The outbox holds the pending
-- rows and the published ones kept until pruned (`process-outbox --prune-published-older-than`);
-- prune first on a large outbox (docs/DEPLOYMENT.md, "Migrations"). The previous release works
-- on either type (it reads `payload::text` and writes through the `jsonb` to `json` cast).
ALTER TABLE outbox ALTER COLUMN headers DROP DEFAULT;
ALTER TABLE outbox
    ALTER COLUMN payload TYPE json USING payload::json,
    ALTER COLUMN headers TYPE json USING headers::json;
ALTER TABLE outbox ALTER COLUMN headers SET DEFAULT '{}'::json;
