-- The wake-up NOTIFY moves out of the writing transaction: the node that committed sends
-- it right after the commit (src/commands.rs, `Store::notify`).
--
-- Why: PostgreSQL serialises every committing transaction that has queued a
-- notification on one database-wide lock, held through the commit's WAL flush, so a
-- NOTIFY inside every event insert turned concurrent admin commands into a queue. A
-- notification is only a wake-up hint (the feed's catch-up reads the table and never
-- depends on it), so sending it after the commit loses nothing: a node that dies between
-- its commit and its NOTIFY is covered by the other nodes' catch-up within a second.
DROP TRIGGER IF EXISTS events_notify ON events;
DROP FUNCTION IF EXISTS widget_auth_notify_event();
