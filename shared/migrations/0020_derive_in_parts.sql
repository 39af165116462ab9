-- The derived state of a load in three functions, one per part, and the recently-viewed trim
-- about once every `keep / 2` new products of a list instead of at every one (issue 16).
--
-- `pg_stat_statements` over `bench-ingest.sh` (1,000,000 events, 4 workers, loads of 1,000
-- events): ferry_derive_loaded took 17.7 ms a load, of which the recently-viewed trim 9.1 ms
-- (4,223 buffer hits a load: it reads the whole list of each user it trims, a row a heap page,
-- about 200 users a load) and the upsert before it 6.3 ms. In the benchmark's stream 96% of
-- views are of a product new to the user, so once the lists are full almost every view meant
-- reading a list to delete one row.
-- - A list is trimmed back to `keep` when one of the products added to it by the load hashes
--   to 0 modulo `keep / 2` (at least 1: a `keep` of 2 or 3 is trimmed at every new product,
--   as before). Which loads trim a list depends only on the products viewed, so two servers
--   given the same stream hold the same lists.
-- - A list holds the newest `keep` products at least, and between trims some older ones:
--   about `keep / 2 - 1` on average (9 with the default 20), more now and then. A read of up
--   to `keep` products is exact, as before; a read asking for more may see the older ones, as
--   it already could after concurrent loads of one user (0018).
-- - ferry_derive_loaded calls ferry_derive_products, ferry_derive_views and
--   ferry_derive_outbox, so that a later change to one part restates that part alone. Each
--   keeps 0019's settings (sequential scans and JIT off), so that each reads by key even when
--   called alone: restate them in any CREATE OR REPLACE of these functions. The test
--   derived::loads_read_derived_state_by_key_however_small_the_tables_were_when_planned fails
--   without them on ferry_derive_loaded (whose settings hold while the others run); it does
--   not notice them missing on one of the three.
-- Otherwise unchanged from 0018.

CREATE OR REPLACE FUNCTION ferry_derive_products(OUT products integer)
LANGUAGE plpgsql SET enable_seqscan = off SET jit = off AS $$
BEGIN
    -- Products: the newest change by (time, event id) wins, whatever the arrival order. A
    -- change no newer than the stored one is dropped by a plain read first (the stored change
    -- only ever moves forward, so it can never win), and takes no row lock.
    INSERT INTO products AS p
        (tenant_id, product_id, state, deleted, changed_at, source, event_id, updated_at)
    SELECT c.tenant_id, c.pid, CASE WHEN c.role = 'product_delete' THEN NULL ELSE c.data END,
           c.role = 'product_delete', c.time, c.source, c.event_id, now()
    FROM (SELECT DISTINCT ON (tenant_id, pid) *
          FROM (SELECT *, ferry_product_id(data, subject) AS pid FROM ferry_loaded
                WHERE role IN ('product_upsert', 'product_delete')) n
          WHERE pid IS NOT NULL
          ORDER BY tenant_id, pid, time DESC, event_id DESC) c
    LEFT JOIN products cur ON cur.tenant_id = c.tenant_id AND cur.product_id = c.pid
    WHERE cur.product_id IS NULL OR (c.time, c.event_id) > (cur.changed_at, cur.event_id)
    ORDER BY c.tenant_id, c.pid
    ON CONFLICT (tenant_id, product_id) DO UPDATE SET
        state = excluded.state, deleted = excluded.deleted, changed_at = excluded.changed_at,
        source = excluded.source, event_id = excluded.event_id, updated_at = excluded.updated_at
    WHERE (excluded.changed_at, excluded.event_id) > (p.changed_at, p.event_id);
    GET DIAGNOSTICS products = ROW_COUNT;
END $$;

CREATE OR REPLACE FUNCTION ferry_derive_views(keep integer, OUT views integer)
LANGUAGE plpgsql SET enable_seqscan = off SET jit = off AS $$
DECLARE
    t       text;
    touched text[];
    fresh_t text[];
    fresh_u text[];
BEGIN
    -- Recently viewed: the newest view per (user, product); then, per user whose list is due
    -- a trim, the rows past the newest `keep`, by key (through the primary key, sorted). A
    -- list only grows by a new product: a view that moves a listed product forward, or an
    -- older one that changes nothing, leaves the length as it was and is not trimmed.
    WITH ins AS (
        INSERT INTO recently_viewed AS rv (tenant_id, user_id, product_id, viewed_at)
        SELECT tenant_id, user_id, pid, at
        FROM (SELECT tenant_id, user_id, pid, max(time) AS at,
                     row_number() OVER (PARTITION BY tenant_id, user_id
                                        ORDER BY max(time) DESC, pid) AS n
              FROM (SELECT tenant_id, user_id, time, ferry_product_id(data, subject) AS pid
                    FROM ferry_loaded
                    WHERE role = 'product_view' AND user_id IS NOT NULL) v
              WHERE pid IS NOT NULL
              GROUP BY 1, 2, 3) w
        WHERE n <= keep  -- of the new views, only a user's newest `keep` can make the list
        ORDER BY 1, 2, 3
        ON CONFLICT (tenant_id, user_id, product_id) DO UPDATE SET viewed_at = excluded.viewed_at
        WHERE excluded.viewed_at > rv.viewed_at
        -- xmax 0: inserted, not updated. A list is trimmed when a product added to it hashes
        -- to 0 modulo `keep / 2`: about once every keep / 2 new products.
        RETURNING tenant_id, user_id,
                  xmax = 0 AND mod(hashtext(user_id || ' ' || product_id),
                                   greatest(keep / 2, 1)) = 0 AS due)
    SELECT count(*), array_agg(tenant_id) FILTER (WHERE due),
           array_agg(user_id) FILTER (WHERE due)
    INTO views, fresh_t, fresh_u FROM ins;
    IF to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        -- One server: one statement. Materialized: otherwise the planner re-runs each user's
        -- sorted scan once per row of that user. A row past `keep` that another load holds
        -- (moving it forward, or trimming it too) is skipped, not waited for: the list may
        -- keep it until that user's next trim, as when the other load's view is newer.
        WITH x AS MATERIALIZED (
            SELECT u.tenant_id, u.user_id, old.product_id, old.viewed_at
            FROM (SELECT DISTINCT tenant_id, user_id
                  FROM unnest(fresh_t, fresh_u) AS f(tenant_id, user_id)) u
            CROSS JOIN LATERAL (
                SELECT o.product_id, o.viewed_at FROM recently_viewed o
                WHERE o.tenant_id = u.tenant_id AND o.user_id = u.user_id
                ORDER BY o.viewed_at DESC, o.product_id
                OFFSET keep) old),
        mine AS MATERIALIZED (
            SELECT r.tenant_id, r.user_id, r.product_id
            FROM recently_viewed r JOIN x
              ON r.tenant_id = x.tenant_id AND r.user_id = x.user_id
             AND r.product_id = x.product_id AND r.viewed_at = x.viewed_at
            FOR UPDATE OF r SKIP LOCKED)
        DELETE FROM recently_viewed r USING mine
        WHERE r.tenant_id = mine.tenant_id AND r.user_id = mine.user_id
          AND r.product_id = mine.product_id;
    ELSE
        -- Citus: tenant by tenant with the users as an array, so that each statement names one
        -- shard and runs there whole (a lateral subquery with OFFSET over the coordinator's
        -- temporary table cannot be pushed down).
        FOR t, touched IN
            SELECT tenant_id, array_agg(DISTINCT user_id)
            FROM unnest(fresh_t, fresh_u) AS f(tenant_id, user_id)
            GROUP BY tenant_id ORDER BY tenant_id
        LOOP
            WITH x AS MATERIALIZED (
                SELECT u.user_id, old.product_id, old.viewed_at
                FROM unnest(touched) AS u(user_id)
                CROSS JOIN LATERAL (
                    SELECT o.product_id, o.viewed_at FROM recently_viewed o
                    WHERE o.tenant_id = t AND o.user_id = u.user_id
                    ORDER BY o.viewed_at DESC, o.product_id
                    OFFSET keep) old)
            DELETE FROM recently_viewed r USING x
            WHERE r.tenant_id = t AND r.user_id = x.user_id AND r.product_id = x.product_id
              AND r.viewed_at = x.viewed_at;
        END LOOP;
    END IF;
END $$;

CREATE OR REPLACE FUNCTION ferry_derive_outbox(OUT deliveries integer)
LANGUAGE plpgsql SET enable_seqscan = off SET jit = off AS $$
BEGIN
    -- Webhooks: one message per subscribed event (a CloudEvent, structured JSON, every
    -- attribute the producer sent), one delivery per matching endpoint, in one statement (so
    -- that both see the same endpoints). An endpoint's types are matched once per (tenant,
    -- type) of the load, not once per event; its subject filter, once per event.
    deliveries := 0;
    IF EXISTS (SELECT 1 FROM ferry_loaded WHERE hooked) THEN
        WITH hooks AS MATERIALIZED (
            SELECT k.tenant_id, k.type, e.endpoint_id, e.subject
            FROM (SELECT DISTINCT tenant_id, type FROM ferry_loaded WHERE hooked) k
            JOIN endpoints e ON e.tenant_id = k.tenant_id AND e.status = 'active'
             AND ferry_matches(e.event_types, k.type)),
        messages AS (
            INSERT INTO webhook_messages (message_id, tenant_id, event_type, subject, body)
            SELECT ferry_message_id(f.tenant_id, f.source, f.event_id, f.time), f.tenant_id,
                   f.type, f.subject,
                   (coalesce(f.extensions, '{}') || jsonb_build_object(
                       'specversion', '1.0', 'id', f.event_id, 'source', f.source, 'type', f.type,
                       'time', f.time, 'tenantid', f.tenant_id)
                    || CASE WHEN f.user_id IS NULL THEN '{}'
                            ELSE jsonb_build_object('userid', f.user_id) END
                    || CASE WHEN f.session_id IS NULL THEN '{}'
                            ELSE jsonb_build_object('sessionid', f.session_id) END
                    || CASE WHEN f.subject IS NULL THEN '{}'
                            ELSE jsonb_build_object('subject', f.subject) END
                    || CASE WHEN f.datacontenttype IS NULL THEN '{}'
                            ELSE jsonb_build_object('datacontenttype', f.datacontenttype) END
                    || CASE WHEN f.dataschema IS NULL THEN '{}'
                            ELSE jsonb_build_object('dataschema', f.dataschema) END
                    || CASE WHEN f.data IS NOT NULL THEN jsonb_build_object('data', f.data)
                            WHEN f.data_base64 IS NOT NULL
                                THEN jsonb_build_object('data_base64', f.data_base64)
                            ELSE '{}' END)::text
            FROM ferry_loaded f
            WHERE f.hooked AND EXISTS (
                SELECT 1 FROM hooks h
                WHERE h.tenant_id = f.tenant_id AND h.type = f.type
                  AND (h.subject IS NULL OR ferry_matches(ARRAY[h.subject], f.subject)))
            ORDER BY 1
            ON CONFLICT (message_id) DO NOTHING)
        INSERT INTO deliveries (message_id, endpoint_id, tenant_id)
        SELECT ferry_message_id(f.tenant_id, f.source, f.event_id, f.time), h.endpoint_id,
               f.tenant_id
        FROM ferry_loaded f
        JOIN hooks h ON h.tenant_id = f.tenant_id AND h.type = f.type
         AND (h.subject IS NULL OR ferry_matches(ARRAY[h.subject], f.subject))
        WHERE f.hooked
        ON CONFLICT (message_id, endpoint_id) DO NOTHING;
        GET DIAGNOSTICS deliveries = ROW_COUNT;
    END IF;
END $$;

CREATE OR REPLACE FUNCTION ferry_derive_loaded(
    keep integer, OUT products integer, OUT views integer, OUT deliveries integer)
LANGUAGE plpgsql SET enable_seqscan = off SET jit = off AS $$
BEGIN
    products := ferry_derive_products();
    views := ferry_derive_views(keep);
    deliveries := ferry_derive_outbox();
END $$;
