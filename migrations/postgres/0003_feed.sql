-- The cross-node feed (src/feed.rs). postgres-es inserts only its seven columns, so the
-- two added here are filled by their defaults, inside the writing transaction:
--   global_position  a BIGSERIAL, unique and increasing in *insertion* order; alone it is
--                    not a safe checkpoint, because transactions commit out of order
--                    (DESIGN.md, "the classic gap");
--   txid             the writing transaction's id. A reader takes only rows with
--                    txid < pg_snapshot_xmin(pg_current_snapshot()): those transactions
--                    have all finished, so no row can still appear below that mark. The
--                    reader's checkpoint is the pair (txid, global_position), advanced
--                    only over such rows, so it never passes an uncommitted hole.
ALTER TABLE events ADD COLUMN IF NOT EXISTS global_position BIGSERIAL;
ALTER TABLE events ADD COLUMN IF NOT EXISTS txid xid8 NOT NULL DEFAULT pg_current_xact_id();

CREATE INDEX IF NOT EXISTS events_feed_order ON events (txid, global_position);

-- A wake-up hint for every node: "this key has this sequence now". NOTIFY is delivered
-- when (and only if) the inserting transaction commits; it is never replayed to a node
-- that was not listening, which is why the feed also catches up from the table.
CREATE OR REPLACE FUNCTION widget_auth_notify_event() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify('widget_auth_events', NEW.aggregate_id || ':' || NEW.sequence);
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS events_notify ON events;
CREATE TRIGGER events_notify
    AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION widget_auth_notify_event();
