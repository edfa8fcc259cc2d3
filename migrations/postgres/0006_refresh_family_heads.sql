-- One row per refresh family that has been rotated or revoked: its live token (the head),
-- the most recently spent token, and the successor that spending produced. Spending a
-- refresh token is one conditional upsert of this row (src/ledger.rs), so a token has at
-- most one successor on any number of nodes, and the revocation check is part of the
-- same statement. `ends_at` is the latest `exp` of any token of the family: the row (and
-- so a revocation) is pruned only after every token it covers has expired.
CREATE TABLE IF NOT EXISTS refresh_family_heads
(
    family             text   PRIMARY KEY,
    head_jti           text,
    head_generation    bigint,
    head_iat           bigint,
    head_exp           bigint,
    head_ver           bigint,
    spent_jti          text,
    spent_at_ms        bigint,
    revoked_at         bigint,
    revoked_reason     text,
    revoked_generation bigint,
    ends_at            bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS refresh_family_heads_ends ON refresh_family_heads (ends_at);

-- Families revoked before this table existed stay revoked. Their tokens were minted at
-- most one refresh lifetime (at most 90 days) before the revocation, so that bounds
-- every token they cover. `refresh_families` is no longer written.
INSERT INTO refresh_family_heads (family, revoked_at, revoked_reason, ends_at)
SELECT family, revoked_at, 'reuse', revoked_at + 7776000 FROM refresh_families
ON CONFLICT (family) DO NOTHING;
