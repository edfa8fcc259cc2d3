-- Read-model snapshots (src/snapshot/): every client key's view and the feed position
-- they reflect, so a node starts from the newest one and replays only what came after.
-- A snapshot is written as a header, then its chunks (one row per chunk of keys, each in
-- a transaction of its own: a long transaction would hold back the feed's
-- high-water mark), then the header is sealed with its digest. Until then `digest` is
-- NULL and no node loads it.
CREATE TABLE IF NOT EXISTS read_model_snapshots
(
    id              BIGSERIAL PRIMARY KEY,
    format_version  bigint  NOT NULL,
    -- Unix milliseconds when the writer started.
    created_at      bigint  NOT NULL,
    -- The feed position the views reflect at least: every event of a transaction with
    -- txid <= position_txid, and of position_txid itself up to position_global, is in.
    position_txid   bigint  NOT NULL,
    position_global bigint  NOT NULL,
    keys            bigint  NOT NULL DEFAULT 0,
    chunks          bigint  NOT NULL DEFAULT 0,
    -- Hex SHA-256 over the header fields and the chunks (see src/snapshot/format.rs).
    digest          text
);

CREATE TABLE IF NOT EXISTS read_model_snapshot_chunks
(
    snapshot_id bigint  NOT NULL REFERENCES read_model_snapshots (id) ON DELETE CASCADE,
    chunk       bigint  NOT NULL,
    body        bytea   NOT NULL,
    PRIMARY KEY (snapshot_id, chunk)
);
