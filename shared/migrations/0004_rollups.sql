-- Rollups, anomalies and the timer's bookkeeping (functions/rollup).
--
-- Every rollup table is keyed by (tenant_id, grain, bucket, …) so it can be distributed by
-- tenant on Citus, co-located with `events` (README, "Scale-out"). `grain` is the bucket width
-- in seconds: 300 (5 minutes), 3600 (hour), 86400 (UTC day). Every column merges: counts and
-- sums add, distinct counts are hll sketches that merge with hll_union. All sketches use
-- log2m 14 (about 0.8% standard error), so any two of them can be unioned.

CREATE EXTENSION IF NOT EXISTS hll;

-- How event types feed the business rollups. Operators may add rows (takes effect for events
-- rolled up afterwards). `role`:
--   page_view     counts toward rollup_pages (page = data.path | data.page | subject)
--   product_view, cart_add, purchase
--                 count toward rollup_products (product = data.sku | data.product_id | subject)
--   purchase      also adds data.amount_cents to rollup_revenue (currency = data.currency)
--   refund        subtracts data.amount_cents in rollup_revenue
CREATE TABLE event_roles (
    type text PRIMARY KEY,
    role text NOT NULL CHECK (role IN ('page_view', 'product_view', 'cart_add', 'purchase', 'refund'))
);

INSERT INTO event_roles (type, role) VALUES
    ('page.viewed', 'page_view'),
    ('product.viewed', 'product_view'),
    ('cart.item_added', 'cart_add'),
    ('cart.added', 'cart_add'),
    ('payment.captured', 'purchase'),
    ('order.completed', 'purchase'),
    ('payment.refunded', 'refund');

-- One watermark per rollup: every event with seq <= last_seq is counted in the rollup tables,
-- and advancing it commits in the same transaction as the merged counts.
CREATE TABLE rollup_state (
    name        text PRIMARY KEY,
    last_seq    bigint NOT NULL DEFAULT 0,
    events      bigint NOT NULL DEFAULT 0,
    -- when the last run proved that no writer below last_seq was still in flight
    advanced_at timestamptz
);

INSERT INTO rollup_state (name) VALUES ('events');

-- Every series the rollups have seen, with when it first and last had events: the anomaly
-- checks score a series only over buckets after its first event (a new series is not a
-- "spike" against the zeros before it) and keep scoring it after its last (silence).
-- metric: 'events' (all types), 'events:<type>', 'source:<source>'.
CREATE TABLE rollup_series (
    tenant_id  text NOT NULL,
    metric     text NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, metric)
);

-- Events by type, with distinct users and sessions.
CREATE TABLE rollup_events (
    tenant_id text NOT NULL,
    grain     integer NOT NULL CHECK (grain IN (300, 3600, 86400)),
    bucket    timestamptz NOT NULL,
    type      text NOT NULL,
    events    bigint NOT NULL DEFAULT 0,
    users     hll NOT NULL DEFAULT hll_empty(14, 5, -1, 1),
    sessions  hll NOT NULL DEFAULT hll_empty(14, 5, -1, 1),
    PRIMARY KEY (tenant_id, grain, bucket, type)
);

-- Page views by page.
CREATE TABLE rollup_pages (
    tenant_id text NOT NULL,
    grain     integer NOT NULL CHECK (grain IN (300, 3600, 86400)),
    bucket    timestamptz NOT NULL,
    page      text NOT NULL,
    views     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, grain, bucket, page)
);

-- Product views, add-to-cart and purchases by product.
CREATE TABLE rollup_products (
    tenant_id text NOT NULL,
    grain     integer NOT NULL CHECK (grain IN (300, 3600, 86400)),
    bucket    timestamptz NOT NULL,
    product   text NOT NULL,
    views     bigint NOT NULL DEFAULT 0,
    cart_adds bigint NOT NULL DEFAULT 0,
    purchases bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, grain, bucket, product)
);

-- Revenue in minor units (data.amount_cents), per currency; `amount` is purchases minus refunds.
CREATE TABLE rollup_revenue (
    tenant_id text NOT NULL,
    grain     integer NOT NULL CHECK (grain IN (300, 3600, 86400)),
    bucket    timestamptz NOT NULL,
    currency  text NOT NULL,
    purchases bigint NOT NULL DEFAULT 0,
    refunds   bigint NOT NULL DEFAULT 0,
    amount    numeric NOT NULL DEFAULT 0,
    refunded  numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, grain, bucket, currency)
);

-- Data quality: events per source, by hour and by day.
CREATE TABLE rollup_sources (
    tenant_id text NOT NULL,
    grain     integer NOT NULL CHECK (grain IN (3600, 86400)),
    bucket    timestamptz NOT NULL,
    source    text NOT NULL,
    events    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, grain, bucket, source)
);

-- Findings of the anomaly and data-quality checks; re-scoring a restated bucket updates its row.
CREATE TABLE anomalies (
    tenant_id   text NOT NULL,
    metric      text NOT NULL,
    grain       integer NOT NULL,
    bucket      timestamptz NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('spike', 'drop', 'source_silent', 'source_drop')),
    value       double precision NOT NULL,
    baseline    double precision NOT NULL,
    score       double precision NOT NULL,
    method      text NOT NULL,
    detected_at timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, metric, grain, bucket, kind)
);

CREATE INDEX anomalies_detected_idx ON anomalies (tenant_id, detected_at);

-- What the timer ran: one row per job per tick.
CREATE TABLE job_runs (
    run_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job         text NOT NULL,
    tick        timestamptz NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('ok', 'skipped', 'failed')),
    rows        bigint NOT NULL DEFAULT 0,
    detail      text NOT NULL DEFAULT '',
    error       text
);

CREATE INDEX job_runs_job_idx ON job_runs (job, started_at DESC);

CREATE INDEX quarantine_received_idx ON quarantine (received_at);
CREATE INDEX blob_objects_applied_idx ON blob_objects (applied_at);

-- Removes the `events` partitions that end at or before `before`, except those holding events
-- the rollups have not counted yet (seq > keep_seq). Each partition is detached (and, unless
-- detach_only, dropped) under lock_timeout `wait`; when a lock cannot be had, the rest is left
-- for the next run. Returns what happened to each candidate. Run it outside a long transaction:
-- each drop holds ACCESS EXCLUSIVE on `events` until commit.
CREATE FUNCTION ferry_drop_event_partitions(
    before timestamptz, keep_seq bigint, detach_only boolean, wait interval)
RETURNS TABLE (part text, action text)
LANGUAGE plpgsql AS $$
DECLARE
    r        record;
    max_seq  bigint;
BEGIN
    FOR r IN
        SELECT c.relname::text AS name,
               (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]
                   ::timestamptz AS upper_bound
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'events'::regclass
        ORDER BY 2
    LOOP
        CONTINUE WHEN r.upper_bound IS NULL OR r.upper_bound > before;
        part := r.name;
        BEGIN
            PERFORM set_config('lock_timeout', (extract(epoch FROM wait) * 1000)::bigint || 'ms', true);
            EXECUTE format('ALTER TABLE events DETACH PARTITION %I', r.name);
            -- Checked once detached, so no late event can slip in between.
            EXECUTE format('SELECT max(seq) FROM %I', r.name) INTO max_seq;
            IF max_seq IS NOT NULL AND max_seq > keep_seq THEN
                RAISE EXCEPTION 'not rolled up' USING ERRCODE = 'FR001';
            END IF;
            IF detach_only THEN
                -- Renamed so that a late event for this slot gets a fresh partition (which may
                -- be archived in turn: the suffix keeps the names apart).
                action := 'archived_' || r.name || '_' || extract(epoch FROM clock_timestamp())::bigint;
                EXECUTE format('ALTER TABLE %I RENAME TO %I', r.name, action);
                action := 'detached as ' || action;
            ELSE
                EXECUTE format('DROP TABLE %I', r.name);
                action := 'dropped';
            END IF;
        EXCEPTION
            WHEN lock_not_available THEN
                action := 'busy: retry next run';
            WHEN duplicate_table THEN
                action := 'kept: archive name taken, retry next run';
            WHEN SQLSTATE 'FR001' THEN
                action := 'kept: not rolled up yet';
        END;
        RETURN NEXT;
        -- A waiting ACCESS EXCLUSIVE request queues every reader and writer of `events`
        -- behind it: after one timeout, leave the rest for the next run.
        EXIT WHEN action LIKE 'busy%';
    END LOOP;
END;
$$;
