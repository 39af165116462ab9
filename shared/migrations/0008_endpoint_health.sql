-- The times of an endpoint's newest success and newest failure. Instances record their
-- attempts in batches, so a batch can arrive after a newer one: a success older than the
-- newest failure must not clear `failing_since`, and a failure older than the newest success
-- must not set it. `last_success_at` is advanced at most once a minute while the endpoint is
-- healthy (it only has to be newer than any failure still in flight).
ALTER TABLE endpoints
    ADD COLUMN last_success_at timestamptz,
    ADD COLUMN last_failure_at timestamptz;
