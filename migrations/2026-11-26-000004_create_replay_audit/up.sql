-- One row per partition whose committed offset `aliexpress replay --execute` moved.
CREATE TABLE replay_audit (
    id           bigserial PRIMARY KEY,
    executed_at  timestamptz NOT NULL DEFAULT now(),
    host         text NOT NULL,
    group_id     text NOT NULL,
    topic        text NOT NULL,
    kafka_partition integer NOT NULL,
    from_offset  bigint,
    to_offset    bigint NOT NULL,
    mode         text NOT NULL
);
-- Messages `aliexpress dlq redrive` republished, so running it twice redrives nothing twice.
CREATE TABLE dlq_redrives (
    dlq_topic     text NOT NULL,
    kafka_partition integer NOT NULL,
    dlq_offset    bigint NOT NULL,
    target_topic  text NOT NULL,
    redriven_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dlq_topic, kafka_partition, dlq_offset)
);
