-- The fanout claims due deliveries endpoint by endpoint (at most a few per endpoint per
-- claim), so it walks each endpoint's due rows in order.
CREATE INDEX deliveries_endpoint_due_idx ON deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
