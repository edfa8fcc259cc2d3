-- See the PostgreSQL migration: one row per rotated or revoked refresh family.
CREATE TABLE IF NOT EXISTS refresh_family_heads
(
    family             text    PRIMARY KEY,
    head_jti           text,
    head_generation    integer,
    head_iat           integer,
    head_exp           integer,
    head_ver           integer,
    spent_jti          text,
    spent_at_ms        integer,
    revoked_at         integer,
    revoked_reason     text,
    revoked_generation integer,
    ends_at            integer NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS refresh_family_heads_ends ON refresh_family_heads (ends_at);

INSERT INTO refresh_family_heads (family, revoked_at, revoked_reason, ends_at)
SELECT family, revoked_at, 'reuse', revoked_at + 7776000 FROM refresh_families WHERE true
ON CONFLICT (family) DO NOTHING;
