-- Snapshot chunks are JSON (about 1.2 KB a key); pglz, the default, compressed a
-- 1,000,000-key snapshot from 1.2 GB to 165 MB, but a node loading it waited on one
-- backend decompressing it at pglz's speed. lz4 decompresses several times faster
-- for a slightly larger table (BENCHMARKS.md, "Start-up from a snapshot"). Only where
-- the server was built with lz4 (Debian's and the official images are); elsewhere
-- pglz stays. Chunks written before keep their compression until pruned.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings
               WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE read_model_snapshot_chunks ALTER COLUMN body SET COMPRESSION lz4;
    END IF;
END
$$;
