-- Idempotency-Keys of commands that changed nothing (no event to carry the key in its
-- metadata, see 0001): the answer they got, so a retry gets it again and another body
-- under the same key is a 409 (API.md "Internal (admin) API"). Kept like events are:
-- a key stays spent.
CREATE TABLE IF NOT EXISTS idempotent_noops
(
    idempotency_key text   PRIMARY KEY,
    request_hash    text   NOT NULL,
    aggregate_id    text   NOT NULL,
    version         bigint NOT NULL CHECK (version >= 0),
    recorded_at     text   NOT NULL
);
