-- Real-time derived state and the webhook outbox. `products`, `recently_viewed`, the
-- messages and their deliveries are written by the shared loader in the same transaction as
-- the events they come from (only for events that were new), so they are exactly as reliable
-- as the events. Every table carries tenant_id (Citus: distributed by tenant; `endpoints`
-- and `endpoint_secrets` are small and can become reference tables).

-- Product changes and deletions play roles too.
ALTER TABLE event_roles DROP CONSTRAINT event_roles_role_check;
ALTER TABLE event_roles ADD CONSTRAINT event_roles_role_check CHECK (role IN (
    'page_view', 'product_view', 'cart_add', 'purchase', 'refund',
    'product_upsert', 'product_delete'));
INSERT INTO event_roles (type, role) VALUES
    ('product.created', 'product_upsert'),
    ('product.updated', 'product_upsert'),
    ('product.deleted', 'product_delete')
ON CONFLICT (type) DO NOTHING;

-- The product id of an event: data.sku, data.product_id or the subject (as the rollups).
CREATE FUNCTION ferry_product_id(data jsonb, subject text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN left(coalesce(data->>'sku', data->>'product_id', subject), 256);

-- The latest state of each product: the `data` of its newest change by (event time, event
-- id), whatever order changes arrive in. A deletion keeps its row (deleted, state NULL) so an
-- older update arriving later cannot bring the product back.
CREATE TABLE products (
    tenant_id  text NOT NULL,
    product_id text NOT NULL,
    state      jsonb,
    deleted    boolean NOT NULL DEFAULT false,
    changed_at timestamptz NOT NULL,
    source     text NOT NULL,
    event_id   text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, product_id)
);

-- The last N distinct products each user viewed (N = FERRY_RECENTLY_VIEWED).
CREATE TABLE recently_viewed (
    tenant_id  text NOT NULL,
    user_id    text NOT NULL,
    product_id text NOT NULL,
    viewed_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, user_id, product_id)
);
CREATE INDEX recently_viewed_user_idx ON recently_viewed (tenant_id, user_id, viewed_at DESC);

-- Partner endpoints. event_types: exact types, or prefixes ending in '*' ('product.*', '*').
-- subject: NULL for any, else an exact subject or a prefix ending in '*'.
CREATE TABLE endpoints (
    endpoint_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants (tenant_id),
    url             text NOT NULL,
    event_types     text[] NOT NULL CHECK (cardinality(event_types) > 0),
    subject         text,
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    disabled_reason text,
    -- requests per second, NULL for no limit
    rate_limit      integer CHECK (rate_limit > 0),
    description     text NOT NULL DEFAULT '',
    -- first failure since the last success (auto-disable after FERRY_DISABLE_AFTER)
    failing_since   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX endpoints_active_idx ON endpoints (tenant_id) WHERE status = 'active';

-- Signing secrets (Standard Webhooks `whsec_`, 32 random bytes). Every secret whose
-- expires_at is NULL or in the future signs: several during a rotation.
CREATE TABLE endpoint_secrets (
    endpoint_id bigint NOT NULL REFERENCES endpoints ON DELETE CASCADE,
    secret_id   integer NOT NULL,
    secret      bytea NOT NULL CHECK (length(secret) BETWEEN 24 AND 64),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    PRIMARY KEY (endpoint_id, secret_id)
);

-- Whether `value` matches one of `patterns` (exact, or a prefix ending in '*').
CREATE FUNCTION ferry_matches(patterns text[], value text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN EXISTS (
    SELECT 1 FROM unnest(patterns) AS p
    WHERE p = value OR (right(p, 1) = '*' AND starts_with(value, left(p, -1))));

-- The `webhook-id` of an event's message: stable, with no '.' (it is part of the signed
-- content), and revealing nothing about volumes.
CREATE FUNCTION ferry_message_id(tenant text, src text, id text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 'msg_' || left(encode(sha256(convert_to(tenant || E'\x1f' || src || E'\x1f' || id, 'UTF8')), 'hex'), 32);

-- One message per event (or finding) that some endpoint subscribed to. message_id is the
-- `webhook-id`, stable across retries and endpoints; body is the exact bytes sent (a
-- CloudEvent in structured JSON), so every attempt signs the same content.
CREATE TABLE webhook_messages (
    message_id text PRIMARY KEY,
    tenant_id  text NOT NULL,
    event_type text NOT NULL,
    subject    text,
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The outbox: one row per (message, matching endpoint).
CREATE TABLE deliveries (
    delivery_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id      text NOT NULL REFERENCES webhook_messages ON DELETE CASCADE,
    endpoint_id     bigint NOT NULL REFERENCES endpoints ON DELETE CASCADE,
    tenant_id       text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- claimed by a fanout instance until then (FOR UPDATE SKIP LOCKED + lease)
    lease_until     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_error      text,
    UNIQUE (message_id, endpoint_id)
);
CREATE INDEX deliveries_due_idx ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_endpoint_idx ON deliveries (endpoint_id, created_at);

-- Every attempt: time, HTTP status, latency, error, response excerpt.
CREATE TABLE delivery_attempts (
    delivery_id bigint NOT NULL REFERENCES deliveries ON DELETE CASCADE,
    attempt     integer NOT NULL,
    started_at  timestamptz NOT NULL,
    latency_ms  integer,
    status_code integer,
    outcome     text NOT NULL,
    error       text,
    response    text,
    PRIMARY KEY (delivery_id, attempt)
);

-- Enqueues one message for every active endpoint of `tenant` that matches `type` and
-- `subject`; returns the deliveries created. Used for findings and operational events (the
-- loader does the same set-based, for whole batches).
CREATE FUNCTION ferry_enqueue(tenant text, message text, type text, subj text, body text)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM endpoints e
        WHERE e.tenant_id = tenant AND e.status = 'active' AND ferry_matches(e.event_types, type)
          AND (e.subject IS NULL OR ferry_matches(ARRAY[e.subject], subj))) THEN
        RETURN 0;
    END IF;
    INSERT INTO webhook_messages (message_id, tenant_id, event_type, subject, body)
    VALUES (message, tenant, type, subj, body)
    ON CONFLICT (message_id) DO NOTHING;
    INSERT INTO deliveries (message_id, endpoint_id, tenant_id)
    SELECT message, e.endpoint_id, tenant FROM endpoints e
    WHERE e.tenant_id = tenant AND e.status = 'active' AND ferry_matches(e.event_types, type)
      AND (e.subject IS NULL OR ferry_matches(ARRAY[e.subject], subj))
    ORDER BY e.endpoint_id
    ON CONFLICT (message_id, endpoint_id) DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- Applies the derived state of newly stored events (arrays of their columns, one entry per
-- event): product changes, recently viewed products (keeping `keep` per user), and one message
-- plus its deliveries per event that an active endpoint subscribed to. Called by the loader
-- in the events' transaction. Rows are written in key order, so concurrent loads touching the
-- same products or users lock them in the same order.
CREATE FUNCTION ferry_derive(
    tenant text[], src text[], id text[], typ text[], subj text[], tm timestamptz[],
    usr text[], dct text[], ds text[], ext text[], dat text[], b64 text[], keep integer,
    OUT products integer, OUT views integer, OUT deliveries integer)
LANGUAGE plpgsql AS $$
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
    INSERT INTO products AS p (tenant_id, product_id, state, deleted, changed_at, source, event_id)
    SELECT DISTINCT ON (tenant_id, pid)
           tenant_id, pid, CASE WHEN role = 'product_delete' THEN NULL ELSE data END,
           role = 'product_delete', time, source, event_id
    FROM (SELECT *, ferry_product_id(data, subject) AS pid FROM ferry_fresh
          WHERE role IN ('product_upsert', 'product_delete')) c
    WHERE pid IS NOT NULL
    ORDER BY tenant_id, pid, time DESC, event_id DESC
    ON CONFLICT (tenant_id, product_id) DO UPDATE SET
        state = excluded.state, deleted = excluded.deleted, changed_at = excluded.changed_at,
        source = excluded.source, event_id = excluded.event_id, updated_at = now()
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
    IF views > 0 THEN
        -- Per touched user, along the user's index: rows past the newest `keep`, by ctid (no
        -- statistics exist for the temporary table, so nothing here may invite a scan of the
        -- whole of recently_viewed).
        DELETE FROM recently_viewed
        WHERE ctid = ANY (ARRAY(
            SELECT old.ctid
            FROM (SELECT DISTINCT tenant_id, user_id FROM ferry_fresh
                  WHERE role = 'product_view' AND user_id IS NOT NULL) u
            CROSS JOIN LATERAL (
                SELECT r.ctid FROM recently_viewed r
                WHERE r.tenant_id = u.tenant_id AND r.user_id = u.user_id
                ORDER BY r.viewed_at DESC, r.product_id
                OFFSET keep) old));
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
