-- The query function: API keys, and an index for "also viewed".
--
-- API keys of the query function (`ferry apikey add|list|revoke`).
--
-- A key reads as `fy_live_<key_id><secret>`: the prefix makes a leaked key recognisable (and
-- findable by secret scanners), `key_id` (8 characters of a-z2-7) finds its row, and the
-- secret (32 more, 160 random bits) is never stored: only the SHA-256 of the whole key is.
-- The query function hashes the key it is sent and compares the two digests in constant time.
-- A key with no tenant is a read-only operator key that reads every tenant.
CREATE TABLE api_keys (
    key_id     text PRIMARY KEY CHECK (key_id ~ '^[a-z2-7]{8}$'),
    tenant_id  text REFERENCES tenants (tenant_id),
    key_hash   bytea NOT NULL CHECK (length(key_hash) = 32),
    name       text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);

-- "Also viewed" (the query API): a product's most recent viewers, newest first, so a read joins
-- a bounded sample of lists (the last 1,000 viewers) to each other however popular the product
-- is. Only for a sixteenth of the users (those whose md5 starts with 0): the loader writes
-- recently_viewed on every product view, and an index of every row cost transform 16% of its
-- CPU (1.54 -> 1.79 core-s per baseline core-s; ratio 1.01 -> 0.85-0.87 at 1,000,000 events).
CREATE INDEX recently_viewed_product_idx ON recently_viewed (tenant_id, product_id, viewed_at DESC)
    WHERE left(md5(user_id), 1) = '0';
