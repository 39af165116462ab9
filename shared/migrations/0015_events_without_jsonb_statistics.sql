-- ANALYZE of `events` without the statistics of its two jsonb columns (issue 16).
--
-- `bench-e2e.sh` stalled for about 13 s (elapsed) whenever autovacuum first visited its young
-- database: one worker ran VACUUM then ANALYZE on each of the 25 five-minute partitions that a
-- stream spread over 2 hours fills, back to back, on a machine the stream already kept busy.
-- ANALYZE was nearly all of that pass's CPU (4.9 s, against 0.01 s for VACUUM): 157–177 ms for
-- a 25,000-event partition in psql, 80–82 ms without the statistics of `data` and
-- `extensions`. No query filters on those columns (only `->>` reads them, which column
-- statistics do not estimate; a `data @> …` filter would use them: restore the default with
-- SET STATISTICS -1 if one is added), and ANALYZE runs again on every partition each time it
-- grows by a tenth. So on one server both columns get a statistics target of 0: on `events` (which
-- reaches every existing partition) and on each partition ferry_ensure_event_partitions
-- creates from now on (a new partition does not inherit the target). On Citus the shards'
-- statistics live on the workers and nothing changes. Otherwise as in 0009.

DO $$
BEGIN
    IF to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        ALTER TABLE events ALTER COLUMN data SET STATISTICS 0,
                           ALTER COLUMN extensions SET STATISTICS 0;
    END IF;
END $$;

CREATE OR REPLACE FUNCTION ferry_ensure_event_partitions(starts timestamptz[], width interval)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    own     interval := (SELECT value::interval FROM ferry_settings WHERE name = 'partition_interval');
    w       interval := coalesce(own, width);
    s       timestamptz;
    p       timestamptz;
    part    text;
    created integer := 0;
    one_server boolean := to_regclass('pg_catalog.pg_dist_partition') IS NULL;
BEGIN
    FOREACH s IN ARRAY starts LOOP
        p := CASE WHEN own IS NULL THEN s
                  ELSE date_bin(own, s, timestamptz '2000-01-01 00:00:00+00') END;
        WHILE p < s + width LOOP
            part := 'events_p' || to_char(p AT TIME ZONE 'UTC', 'YYYYMMDD_HH24MI');
            IF to_regclass(quote_ident(part)) IS NULL THEN
                PERFORM pg_advisory_xact_lock(hashtext('ferry.events.partitions'));
                BEGIN
                    EXECUTE format(
                        'CREATE TABLE %I (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
                        'INCLUDING STORAGE)', part);
                    IF one_server THEN
                        EXECUTE format(
                            'ALTER TABLE %I ALTER COLUMN data SET STATISTICS 0, '
                            'ALTER COLUMN extensions SET STATISTICS 0', part);
                    END IF;
                    EXECUTE format(
                        'ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                        part, p, p + w);
                    created := created + 1;
                EXCEPTION WHEN duplicate_table OR unique_violation THEN
                    NULL;
                END;
            END IF;
            p := p + w;
        END LOOP;
    END LOOP;
    RETURN created;
END;
$$;
