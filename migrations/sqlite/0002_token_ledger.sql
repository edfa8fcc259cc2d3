-- See the PostgreSQL migration: single-use tokens and revoked refresh families.
CREATE TABLE IF NOT EXISTS token_ledger
(
    jti        text    PRIMARY KEY,
    kind       text    NOT NULL,
    family     text,
    used_at_ms integer NOT NULL,
    expires_at integer NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS token_ledger_family ON token_ledger (family, used_at_ms) WHERE family IS NOT NULL;
CREATE INDEX IF NOT EXISTS token_ledger_expires ON token_ledger (expires_at);

CREATE TABLE IF NOT EXISTS refresh_families
(
    family     text    PRIMARY KEY,
    revoked_at integer NOT NULL,
    expires_at integer NOT NULL
) STRICT;
