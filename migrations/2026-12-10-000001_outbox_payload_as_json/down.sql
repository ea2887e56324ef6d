ALTER TABLE outbox ALTER COLUMN headers DROP DEFAULT;
ALTER TABLE outbox
    ALTER COLUMN payload TYPE jsonb USING payload::jsonb,
    ALTER COLUMN headers TYPE jsonb USING headers::jsonb;
ALTER TABLE outbox ALTER COLUMN headers SET DEFAULT '{}'::jsonb;
