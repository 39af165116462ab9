-- Partitions are now created as plain tables and then attached, instead of
-- `CREATE TABLE … PARTITION OF`. The latter takes ACCESS EXCLUSIVE on `events`, so it waited
-- for (and then blocked) every open load; `ATTACH PARTITION` takes SHARE UPDATE EXCLUSIVE,
-- which does not conflict with the ROW EXCLUSIVE lock of inserting transactions. A long file
-- load that inserts chunk after chunk in one transaction no longer stops other processes
-- (or its own partition upkeep) from adding partitions.
CREATE OR REPLACE FUNCTION ferry_ensure_event_partitions(starts timestamptz[], width interval)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    s       timestamptz;
    part    text;
    created integer := 0;
BEGIN
    FOREACH s IN ARRAY starts LOOP
        part := 'events_p' || to_char(s AT TIME ZONE 'UTC', 'YYYYMMDD_HH24MI');
        IF to_regclass(quote_ident(part)) IS NULL THEN
            PERFORM pg_advisory_xact_lock(hashtext('ferry.events.partitions'));
            BEGIN
                -- Columns, NOT NULL and defaults of the parent; the identity stays the
                -- parent's (rows are always inserted through `events`), indexes come with
                -- the attach.
                EXECUTE format(
                    'CREATE TABLE %I (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
                    'INCLUDING STORAGE)', part);
                EXECUTE format(
                    'ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                    part, s, s + width);
                created := created + 1;
            EXCEPTION WHEN duplicate_table OR unique_violation THEN
                NULL;
            END;
        END IF;
    END LOOP;
    RETURN created;
END;
$$;
