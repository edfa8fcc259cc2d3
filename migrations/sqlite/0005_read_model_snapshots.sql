-- Read-model snapshots: see migrations/postgres/0007_read_model_snapshots.sql. SQLite has
-- one writer, so the position is the events table's rowid (the insertion order, which is
-- the commit order): position_txid is always 0. AUTOINCREMENT keeps ids growing after
-- pruning, so the highest id is always the newest snapshot.
CREATE TABLE IF NOT EXISTS read_model_snapshots
(
    id              integer PRIMARY KEY AUTOINCREMENT,
    format_version  integer NOT NULL,
    created_at      integer NOT NULL,
    position_txid   integer NOT NULL,
    position_global integer NOT NULL,
    keys            integer NOT NULL DEFAULT 0,
    chunks          integer NOT NULL DEFAULT 0,
    digest          text
) STRICT;

CREATE TABLE IF NOT EXISTS read_model_snapshot_chunks
(
    snapshot_id integer NOT NULL REFERENCES read_model_snapshots (id) ON DELETE CASCADE,
    chunk       integer NOT NULL,
    body        blob    NOT NULL,
    PRIMARY KEY (snapshot_id, chunk)
) STRICT;
