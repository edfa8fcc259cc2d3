-- The event store, in the layout postgres-es reads and writes: one row per event,
-- numbered per client key (aggregate) from 1 with no gaps.
CREATE TABLE IF NOT EXISTS events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        jsonb                        NOT NULL,
    metadata       jsonb                        NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

-- An Idempotency-Key can be recorded once: a retried command finds the event its first
-- attempt wrote, on any node and after any restart, and a concurrent duplicate fails
-- in the same transaction that would have applied it twice.
CREATE UNIQUE INDEX IF NOT EXISTS events_idempotency_key
    ON events ((metadata ->> 'idempotency_key'))
    WHERE metadata ->> 'idempotency_key' IS NOT NULL;
