-- Scale-out on Citus (`ferry migrate` places the tables: ferry_shared::placement), and
-- statements that run unchanged on one node and on a Citus cluster.

-- Settings a database keeps for every function. `partition_interval`: the width of new
-- `events` partitions, recorded by `ferry migrate` when the database has no partition yet
-- (FERRY_PARTITION_INTERVAL, or the default for the server: 5 minutes on one node, a day on
-- Citus, where every partition is a distributed table of its own). A local table.
CREATE TABLE ferry_settings (
    name   text PRIMARY KEY,
    value  text NOT NULL,
    set_at timestamptz NOT NULL DEFAULT now()
);

-- `seq` must come from the coordinator's sequence: the rollup's watermark counts events by it.
-- On Citus, a row inserted on a worker would draw from that worker's range (its group id
-- shifted left by 48 bits), beyond every watermark, and never be counted; refuse such rows.
ALTER TABLE events ADD CONSTRAINT events_seq_from_coordinator CHECK (seq < 281474976710656);
COMMENT ON CONSTRAINT events_seq_from_coordinator ON events IS
    'insert events through the Citus coordinator: a seq drawn on a worker is never rolled up';

-- As in 0003, but the database's recorded width (ferry_settings) rules: for each requested
-- slot [s, s + width) the partitions of the recorded width that cover it are created, so a
-- function whose FERRY_PARTITION_INTERVAL differs still finds a partition for every event.
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

-- ferry_derive as in 0006, with two statements that Citus can run on distributed tables:
-- `products.updated_at` is set in the insert list (a DO UPDATE on a distributed table may call
-- only immutable functions), and recently viewed lists are trimmed by key instead of by ctid
-- (on Citus tenant by tenant, each statement on one shard).
CREATE OR REPLACE FUNCTION ferry_derive(
    tenant text[], src text[], id text[], typ text[], subj text[], tm timestamptz[],
    usr text[], dct text[], ds text[], ext text[], dat text[], b64 text[], keep integer,
    OUT products integer, OUT views integer, OUT deliveries integer)
LANGUAGE plpgsql AS $$
DECLARE
    t       text;
    touched text[];
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS ferry_fresh (
        tenant_id text, source text, event_id text, type text, subject text, time timestamptz,
        user_id text, datacontenttype text, dataschema text, extensions jsonb, data jsonb,
        data_base64 text, role text
    ) ON COMMIT DELETE ROWS;
    DELETE FROM ferry_fresh;
    INSERT INTO ferry_fresh
    SELECT f.*, r.role
    FROM unnest(tenant, src, id, typ, subj, tm, usr, dct, ds, ext::jsonb[], dat::jsonb[], b64)
         AS f(tenant_id, source, event_id, type, subject, time, user_id, datacontenttype,
              dataschema, extensions, data, data_base64)
    LEFT JOIN event_roles r ON r.type = f.type;

    -- Products: the newest change by (time, event id) wins, whatever the arrival order.
    INSERT INTO products AS p
        (tenant_id, product_id, state, deleted, changed_at, source, event_id, updated_at)
    SELECT DISTINCT ON (tenant_id, pid)
           tenant_id, pid, CASE WHEN role = 'product_delete' THEN NULL ELSE data END,
           role = 'product_delete', time, source, event_id, now()
    FROM (SELECT *, ferry_product_id(data, subject) AS pid FROM ferry_fresh
          WHERE role IN ('product_upsert', 'product_delete')) c
    WHERE pid IS NOT NULL
    ORDER BY tenant_id, pid, time DESC, event_id DESC
    ON CONFLICT (tenant_id, product_id) DO UPDATE SET
        state = excluded.state, deleted = excluded.deleted, changed_at = excluded.changed_at,
        source = excluded.source, event_id = excluded.event_id, updated_at = excluded.updated_at
    WHERE (excluded.changed_at, excluded.event_id) > (p.changed_at, p.event_id);
    GET DIAGNOSTICS products = ROW_COUNT;

    -- Recently viewed: upsert the newest view per (user, product), then keep the newest `keep`.
    INSERT INTO recently_viewed AS rv (tenant_id, user_id, product_id, viewed_at)
    SELECT tenant_id, user_id, pid, max(time)
    FROM (SELECT *, ferry_product_id(data, subject) AS pid FROM ferry_fresh
          WHERE role = 'product_view' AND user_id IS NOT NULL) v
    WHERE pid IS NOT NULL
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (tenant_id, user_id, product_id) DO UPDATE SET
        viewed_at = greatest(rv.viewed_at, excluded.viewed_at);
    GET DIAGNOSTICS views = ROW_COUNT;
    IF views > 0 AND to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        -- One server: per touched user, along the user's index, the rows past the newest
        -- `keep`, by key. Materialized: otherwise the planner re-runs each user's sorted scan
        -- once per row of that user (measured: 55 ms instead of 9 ms for 500 users).
        WITH x AS MATERIALIZED (
            SELECT u.tenant_id, u.user_id, old.product_id
            FROM (SELECT DISTINCT tenant_id, user_id FROM ferry_fresh
                  WHERE role = 'product_view' AND user_id IS NOT NULL) u
            CROSS JOIN LATERAL (
                SELECT o.product_id FROM recently_viewed o
                WHERE o.tenant_id = u.tenant_id AND o.user_id = u.user_id
                ORDER BY o.viewed_at DESC, o.product_id
                OFFSET keep) old)
        DELETE FROM recently_viewed r USING x
        WHERE r.tenant_id = x.tenant_id AND r.user_id = x.user_id AND r.product_id = x.product_id;
    ELSIF views > 0 THEN
        -- Citus: the same, tenant by tenant with the users as an array, so that each statement
        -- names one shard and runs there whole (a lateral subquery with OFFSET over the
        -- coordinator's temporary table cannot be pushed down). One statement per tenant costs
        -- more on one server, hence the two branches.
        FOR t, touched IN
            SELECT tenant_id, array_agg(DISTINCT user_id) FROM ferry_fresh
            WHERE role = 'product_view' AND user_id IS NOT NULL
            GROUP BY tenant_id ORDER BY tenant_id
        LOOP
            WITH x AS MATERIALIZED (
                SELECT u.user_id, old.product_id
                FROM unnest(touched) AS u(user_id)
                CROSS JOIN LATERAL (
                    SELECT o.product_id FROM recently_viewed o
                    WHERE o.tenant_id = t AND o.user_id = u.user_id
                    ORDER BY o.viewed_at DESC, o.product_id
                    OFFSET keep) old)
            DELETE FROM recently_viewed r USING x
            WHERE r.tenant_id = t AND r.user_id = x.user_id AND r.product_id = x.product_id;
        END LOOP;
    END IF;

    -- Webhooks: one message per subscribed event (a CloudEvent, structured JSON), one
    -- delivery per matching endpoint.
    INSERT INTO webhook_messages (message_id, tenant_id, event_type, subject, body)
    SELECT ferry_message_id(f.tenant_id, f.source, f.event_id), f.tenant_id, f.type, f.subject,
           (coalesce(f.extensions, '{}') || jsonb_build_object(
               'specversion', '1.0', 'id', f.event_id, 'source', f.source, 'type', f.type,
               'time', f.time, 'tenantid', f.tenant_id)
            || CASE WHEN f.subject IS NULL THEN '{}' ELSE jsonb_build_object('subject', f.subject) END
            || CASE WHEN f.datacontenttype IS NULL THEN '{}'
                    ELSE jsonb_build_object('datacontenttype', f.datacontenttype) END
            || CASE WHEN f.dataschema IS NULL THEN '{}' ELSE jsonb_build_object('dataschema', f.dataschema) END
            || CASE WHEN f.data IS NOT NULL THEN jsonb_build_object('data', f.data)
                    WHEN f.data_base64 IS NOT NULL THEN jsonb_build_object('data_base64', f.data_base64)
                    ELSE '{}' END)::text
    FROM ferry_fresh f
    WHERE EXISTS (
        SELECT 1 FROM endpoints e
        WHERE e.tenant_id = f.tenant_id AND e.status = 'active' AND ferry_matches(e.event_types, f.type)
          AND (e.subject IS NULL OR ferry_matches(ARRAY[e.subject], f.subject)))
    ORDER BY 1
    ON CONFLICT (message_id) DO NOTHING;
    INSERT INTO deliveries (message_id, endpoint_id, tenant_id)
    SELECT ferry_message_id(f.tenant_id, f.source, f.event_id), e.endpoint_id, f.tenant_id
    FROM ferry_fresh f
    JOIN endpoints e ON e.tenant_id = f.tenant_id AND e.status = 'active'
         AND ferry_matches(e.event_types, f.type)
         AND (e.subject IS NULL OR ferry_matches(ARRAY[e.subject], f.subject))
    ON CONFLICT (message_id, endpoint_id) DO NOTHING;
    GET DIAGNOSTICS deliveries = ROW_COUNT;
    DELETE FROM ferry_fresh;
END $$;
