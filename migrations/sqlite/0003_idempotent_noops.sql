-- See the PostgreSQL migration: Idempotency-Keys of commands that changed nothing.
CREATE TABLE IF NOT EXISTS idempotent_noops
(
    idempotency_key text    PRIMARY KEY,
    request_hash    text    NOT NULL,
    aggregate_id    text    NOT NULL,
    version         integer NOT NULL CHECK (version >= 0),
    recorded_at     text    NOT NULL
) STRICT;
