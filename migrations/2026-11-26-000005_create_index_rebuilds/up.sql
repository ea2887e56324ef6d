-- Runs of `aliexpress replay --rebuild`: which index replaced which, so `--rollback` can swap
-- back and a second concurrent run can name the one in progress.
CREATE TABLE index_rebuilds (
    id           bigserial PRIMARY KEY,
    alias        text NOT NULL,
    old_index    text,
    new_index    text NOT NULL,
    source       text NOT NULL CHECK (source IN ('topic', 'postgres')),
    host         text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    status       text NOT NULL CHECK (status IN ('running', 'done', 'failed', 'rolled_back')),
    documents    bigint
);
