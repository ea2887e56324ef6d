-- Commands by id: submissions through POST /api/commands (pending) and the outcome of every
-- command the write side processed (applied with the resulting version, or rejected with the
-- reason). The primary key makes command processing idempotent.
CREATE TABLE commands (
    command_id      uuid PRIMARY KEY,
    product_id      uuid NOT NULL,
    command_type    text NOT NULL,
    status          text NOT NULL CHECK (status IN ('pending', 'applied', 'rejected')),
    result_version  bigint,
    reason          text,
    submitted_at    timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz
);
