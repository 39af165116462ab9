-- Rollup follow-ups: a window held across runs, withdrawn findings.

-- A window whose end was read, but whose writers were still in flight when the run gave up
-- waiting: the next run waits for exactly these transactions (virtualxids from pg_locks),
-- not for writers that started later, so a stream of long, overlapping writers (whole-file
-- transforms) delays the rollup by one writer's length instead of starving it.
ALTER TABLE rollup_state
    ADD COLUMN pending_end     bigint,
    ADD COLUMN pending_lockers text[] NOT NULL DEFAULT '{}',
    -- when pending_end was read: everything committed before then has seq <= pending_end
    ADD COLUMN pending_at      timestamptz;

COMMENT ON COLUMN rollup_state.advanced_at IS
    'when the end of the last fully merged window was read: every event committed before then is counted';

-- A finding whose bucket no longer qualifies once re-scored (late events restated it) is
-- withdrawn, not deleted: partners may have been told about it. Qualifying again clears it.
ALTER TABLE anomalies ADD COLUMN withdrawn_at timestamptz;
