-- Single-use tokens. A visitor token may be exchanged once and a refresh token rotated
-- once, on any node: the first INSERT of a `jti` wins, every later one conflicts.
-- Not events: these are the hot path's only writes, and they are not key changes.
CREATE TABLE IF NOT EXISTS token_ledger
(
    jti        text   PRIMARY KEY,
    kind       text   NOT NULL,
    family     text,
    used_at_ms bigint NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS token_ledger_family ON token_ledger (family, used_at_ms) WHERE family IS NOT NULL;
CREATE INDEX IF NOT EXISTS token_ledger_expires ON token_ledger (expires_at);

-- Refresh families revoked because a rotated token was presented again.
CREATE TABLE IF NOT EXISTS refresh_families
(
    family     text   PRIMARY KEY,
    revoked_at bigint NOT NULL,
    expires_at bigint NOT NULL
);
