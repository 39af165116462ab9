-- ferry foundation: tenants, partitioned events, ingest ledger, quarantine.
--
-- Scale-out: every large table carries tenant_id and has it in its keys, so each can be
-- distributed by tenant on Citus (`create_distributed_table('events', 'tenant_id')`);
-- `tenants` is small and becomes a reference table. The ledger is keyed by delivery unit, not
-- tenant, because one queue message may carry events of several tenants (see README).

CREATE TABLE tenants (
    tenant_id   text PRIMARY KEY CHECK (tenant_id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name        text NOT NULL DEFAULT '',
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Range-partitioned on the event's own time (deterministic across redeliveries, so a
-- redelivered event lands in the same partition and meets its unique key). Partitions are
-- created by ferry_ensure_event_partitions(); there is deliberately no default partition.
CREATE TABLE events (
    seq             bigint GENERATED ALWAYS AS IDENTITY (CACHE 1),
    tenant_id       text NOT NULL,
    source          text NOT NULL,
    event_id        text NOT NULL,
    type            text NOT NULL,
    subject         text,
    time            timestamptz NOT NULL,
    received_at     timestamptz NOT NULL,
    user_id         text,
    session_id      text,
    datacontenttype text,
    dataschema      text,
    extensions      jsonb,
    data            jsonb,
    data_base64     text,
    PRIMARY KEY (tenant_id, source, event_id, time)
) PARTITION BY RANGE (time);

-- Rollups read new events by sequence (watermark pattern).
CREATE INDEX events_seq_idx ON events (seq);

-- Delivery units already applied (a queue message, later a blob version). Written in the same
-- transaction as the rows the unit produced; a redelivered unit finds its row and has no effect.
CREATE TABLE ingest_ledger (
    unit        text PRIMARY KEY,
    function    text NOT NULL,
    events      integer NOT NULL DEFAULT 0,
    duplicates  integer NOT NULL DEFAULT 0,
    quarantined integer NOT NULL DEFAULT 0,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX ingest_ledger_applied_at_idx ON ingest_ledger (applied_at);

-- Rejected input, with a typed reason and the raw bytes, written in the same transaction as
-- the unit's ledger row. tenant_id is '' when the tenant could not be read from the input.
CREATE TABLE quarantine (
    quarantine_id bigint GENERATED ALWAYS AS IDENTITY,
    tenant_id     text NOT NULL DEFAULT '',
    unit          text NOT NULL,
    position      integer,
    reason        text NOT NULL,
    detail        text NOT NULL,
    raw           bytea NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, quarantine_id)
);

CREATE INDEX quarantine_unit_idx ON quarantine (unit);
CREATE INDEX quarantine_reason_idx ON quarantine (reason, received_at);

-- Creates the partitions of `events` that start at the given slot starts, each `width` wide.
-- Idempotent and safe under concurrent callers: existence is checked first without a lock;
-- creators are serialised by a transaction-scoped advisory lock, and a partition created by a
-- concurrent caller meanwhile is accepted (the catalog lookup after an advisory lock can be
-- stale, so "already exists" is caught rather than re-checked).
CREATE FUNCTION ferry_ensure_event_partitions(starts timestamptz[], width interval)
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
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
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
