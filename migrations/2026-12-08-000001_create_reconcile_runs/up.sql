-- The projection role's scheduled drift check (`--reconcile-every`): one row per run, what it
-- compared and the drift it confirmed, by store and kind. Rows older than 7 days are deleted
-- by the check itself.
CREATE TABLE reconcile_runs (
    id                bigserial PRIMARY KEY,
    ran_at            timestamptz NOT NULL DEFAULT now(),
    host              text NOT NULL,
    compared          integer NOT NULL,
    absent_from_cache integer NOT NULL,
    drift             jsonb NOT NULL,
    examples          jsonb NOT NULL
);
CREATE INDEX reconcile_runs_ran_at ON reconcile_runs (ran_at);
