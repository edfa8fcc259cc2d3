-- The event store, in the layout sqlite-es reads and writes: one row per event,
-- numbered per client key (aggregate) from 1 with no gaps.
CREATE TABLE IF NOT EXISTS events
(
    aggregate_type text                          NOT NULL,
    aggregate_id   text                          NOT NULL,
    sequence       integer CHECK (sequence >= 0) NOT NULL,
    event_type     text                          NOT NULL,
    event_version  text                          NOT NULL,
    payload        text                          NOT NULL,
    metadata       text                          NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
) STRICT;

-- See the PostgreSQL migration: one event per Idempotency-Key, enforced by the store.
CREATE UNIQUE INDEX IF NOT EXISTS events_idempotency_key
    ON events (metadata ->> 'idempotency_key')
    WHERE metadata ->> 'idempotency_key' IS NOT NULL;
