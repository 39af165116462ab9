-- ferry transform: one row per object version the transform function has dealt with.
--
-- The ledger (ingest_ledger) makes an object version's effect exactly-once; this table says
-- what that effect was, for operators and for ordering: per (store, key) the highest
-- `sequencer` applied so far lets an older, late notification be recognised and ignored.
-- Rows are written in the same transaction as the object's events and ledger row.
CREATE TABLE blob_objects (
    store       text NOT NULL,            -- s3://bucket, az://account/container, file:///dir
    key         text NOT NULL,            -- object key, decoded
    content_id  text NOT NULL,            -- version id when the store versions, else the ETag
    unit        text NOT NULL,            -- its ingest_ledger unit
    sequencer   text,                     -- notification sequencer, left-padded to 64 chars
    size        bigint,
    source_rule text,                     -- the [[source]] of config/sources.toml that applied
    format      text,                     -- ndjson | json | csv
    compression text,                     -- none | gzip | zstd
    outcome     text NOT NULL CHECK (outcome IN ('loaded', 'quarantined', 'stale')),
    records     bigint NOT NULL DEFAULT 0,
    loaded      bigint NOT NULL DEFAULT 0,
    duplicates  bigint NOT NULL DEFAULT 0,
    quarantined bigint NOT NULL DEFAULT 0,
    dropped     bigint NOT NULL DEFAULT 0,
    dropped_by  jsonb NOT NULL DEFAULT '{}',   -- drop rule name -> records dropped
    detail      text,                          -- why, for quarantined and stale objects
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store, key, content_id)
);

CREATE INDEX blob_objects_applied_at_idx ON blob_objects (applied_at);
