-- Quarantined bodies compressed with lz4 instead of pglz (issue 16).
--
-- A body refused as oversize is kept whole in `quarantine.raw` (nothing is lost), and the
-- server compresses every value over about 2 KB before storing it. In `bench-e2e.sh` (the
-- demo's stream: 32 oversize messages of 307 KB a second) pglz took 2.8% of the server's CPU,
-- in every ingest backend: 2.3 ms per body in psql, against 0.15 ms with lz4, whose bodies also
-- came out smaller (2.9 KB against 7.5 KB each). A new value is compressed with the column's
-- method; the values already stored stay as they are and read as before. Skipped on a server
-- built without lz4 (PostgreSQL 14+ lists it in `default_toast_compression`'s values when it
-- has it). On Citus the change reaches the shards with the ALTER.

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_settings
               WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE quarantine ALTER COLUMN raw SET COMPRESSION lz4;
    END IF;
END $$;
