//! Incremental rollups over a sequence watermark.
//!
//! One run, in one READ COMMITTED transaction:
//! 1. lock the watermark row (`FOR UPDATE NOWAIT`: a concurrent run is skipped, not queued);
//! 2. read the end of the window, `pg_sequence_last_value` of `events.seq` (or take the end an
//!    earlier run held, see 3), capped at `max_events` past the watermark;
//! 3. wait until no writer that may hold a `seq` in the window is still in flight: every insert
//!    into `events` holds ROW EXCLUSIVE on it from before it draws a `seq` until it ends, so
//!    once every transaction holding that lock *after* the window's end was read has ended,
//!    each row with a `seq` in the window is committed or gone. The rollup reads those
//!    transactions from `pg_locks` and polls until they have ended (never taking a lock on
//!    `events` itself, so ingest is never queued behind it). Past `lock_wait` the run stores
//!    the window's end and the writers still running in `rollup_state` and ends; the next run
//!    waits for those writers only, so long overlapping writers (whole-file transforms) delay
//!    the rollup by one writer's length rather than starving it;
//! 4. aggregate `seq in (last, end]` into two temporary deltas at 5-minute buckets (one scan
//!    each, on one core unless `parallel_workers` allows more): by type with hll sketches of
//!    users and sessions, and by source/role/page/product/currency with counts and amounts;
//! 5. merge the deltas into the 5-minute, hourly and daily rows with `ON CONFLICT DO UPDATE`
//!    (counts add, sketches `hll_union`), so late events fold into their old buckets;
//! 6. advance the watermark, and commit. A crash anywhere before the commit leaves nothing.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ferry_shared::error::{classify, Error};
use sqlx::{PgConnection, PgPool};

#[cfg(fault_injection)]
use ferry_shared::faults::{CrashPoint, FaultHook};

/// Settings of the rollup step.
#[derive(Debug, Clone)]
pub struct AggregateOptions {
    /// How long to wait for in-flight writers before skipping the run.
    pub lock_wait: Duration,
    /// Most events (seq values) one transaction takes on.
    pub max_events: i64,
    /// `work_mem` for the aggregation, in MiB.
    pub work_mem_mb: u32,
    /// Statement timeout inside the rollup transaction.
    pub statement_timeout: Duration,
    /// Parallel workers per scan of the rollup (`max_parallel_workers_per_gather`, set for the
    /// transaction; on Citus, on the coordinator only); `None` leaves the server's setting.
    /// The default, 0, keeps a run on one core so that the loads sharing the database keep the
    /// others: with the server's 2 workers on 2 cores, each minute's rollup stalled ingest for
    /// its length (docs/performance.md, `bench-e2e.sh`).
    pub parallel_workers: Option<u32>,
}

impl Default for AggregateOptions {
    fn default() -> Self {
        AggregateOptions {
            lock_wait: Duration::from_secs(2),
            max_events: 5_000_000,
            work_mem_mb: 256,
            statement_timeout: Duration::from_secs(300),
            parallel_workers: Some(0),
        }
    }
}

/// What one rollup transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Events `(from, to]` were merged (`events` of them; gaps in `seq` are aborted inserts).
    Merged {
        from: i64,
        to: i64,
        events: i64,
        /// The window was cut at `max_events`: more is waiting.
        capped: bool,
        /// The window's end was read by an earlier run (one that gave up waiting, or the rest
        /// of a capped window): newer events may be waiting.
        held: bool,
    },
    /// Nothing new since the watermark.
    UpToDate { at: i64 },
    /// Skipped; the next tick retries.
    Skipped(String),
}

const LOCK_NOT_AVAILABLE: &str = "55P03";

fn is_lock_not_available(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == LOCK_NOT_AVAILABLE)
}

/// The 5-minute delta by type, with distinct users and sessions.
const DELTA_TYPES: &str = "\
CREATE TEMP TABLE rollup_delta_types ON COMMIT DROP AS
SELECT tenant_id,
       date_bin('5 minutes', time, TIMESTAMPTZ 'epoch') AS bucket,
       type,
       count(*) AS events,
       hll_add_agg(hll_hash_text(user_id), 14, 5, -1, 1) AS users,
       hll_add_agg(hll_hash_text(session_id), 14, 5, -1, 1) AS sessions
FROM events
WHERE seq > {from} AND seq <= {to}
GROUP BY 1, 2, 3";

/// The 5-minute delta by source and business role. Nothing in `data` can make it fail: `->>`
/// yields NULL on any shape, amounts are summed only when they are JSON numbers below 10^15, and
/// pages are cut to 512 characters (at most 2,048 bytes, under the btree key limit of the
/// `rollup_pages` primary key). A purchase counts for a product only when it names one
/// (`data.sku` or `data.product_id`): its `subject` is usually the order, and taken for a
/// product it gave the product rollup one row per order and grain (in `bench-e2e.sh`, about
/// 60,000 of a tick's 66,000 product rows).
///
/// Rows are grouped by `type`, and the type's role is joined on the (small) grouped result: a
/// role computed per row would be evaluated once per expression that uses it, since the planner
/// inlines it. The type lists of each role are one-time subqueries (init plans) of the same
/// statement, so the extraction and the role agree on one snapshot of `event_roles`.
const DELTA_DIMS: &str = "\
CREATE TEMP TABLE rollup_delta_dims ON COMMIT DROP AS
SELECT d.tenant_id, d.bucket, d.source, r.role, d.page, d.product, d.currency, d.events, d.amount
FROM (
    SELECT tenant_id, date_bin('5 minutes', time, TIMESTAMPTZ 'epoch') AS bucket, source, type,
           CASE WHEN type = ANY ({page_types})
                THEN left(coalesce(data->>'path', data->>'page', subject, ''), 512) END AS page,
           CASE WHEN type = ANY ({product_types})
                THEN left(coalesce(data->>'sku', data->>'product_id', subject), 256)
                WHEN type = ANY ({purchase_types})
                THEN left(coalesce(data->>'sku', data->>'product_id'), 256) END AS product,
           CASE WHEN type = ANY ({money_types})
                THEN left(coalesce(data->>'currency', ''), 16) END AS currency,
           count(*) AS events,
           sum(CASE WHEN type = ANY ({money_types})
                         AND jsonb_typeof(data->'amount_cents') = 'number'
                         AND abs((data->>'amount_cents')::numeric) < 1e15
                    THEN (data->>'amount_cents')::numeric END) AS amount
    FROM events
    WHERE seq > {from} AND seq <= {to}
    GROUP BY 1, 2, 3, 4, 5, 6, 7
) d
LEFT JOIN event_roles r ON r.type = d.type";

/// The types of some roles, as a one-time subquery.
fn types_of(roles: &str) -> String {
    format!(
        "(SELECT coalesce(array_agg(type), '{{}}') FROM event_roles WHERE role IN ({roles}))::text[]"
    )
}

const GRAINS: &str = "(VALUES (300), (3600), (86400)) AS g(grain)";

/// The merges of a window's deltas into the rollups. The five rollup tables' merges write
/// their rows in key order, so a range read (a day of one tenant's hourly products) finds
/// them on fewer pages: the hash aggregate's order put the one-day product funnel on 3,225
/// pages, one per row, of 10,000,000 events' rollups (15-39 ms); key order on 1,220-1,263
/// (4.3 ms for 1,220; 68 if packed: updated rows move); tenant, grain and bucket alone on
/// 2,247. The sort takes 0.3-0.46 s
/// of a 300,000-event window's product merge (103,141 rows, 2.0-3.0 s under `EXPLAIN
/// ANALYZE`), bytewise or in the columns' collation alike; alternated three times with and
/// without it, the merge took 2.6-3.2 s against 2.5-2.9 s (about 7% more, inside its noise).
fn merges() -> [String; 6] {
    let bin = "date_bin(make_interval(secs => g.grain), d.bucket, TIMESTAMPTZ 'epoch')";
    let empty = "hll_empty(14, 5, -1, 1)";
    [
        format!(
            "INSERT INTO rollup_events AS r (tenant_id, grain, bucket, type, events, users, sessions)
             SELECT d.tenant_id, g.grain, {bin}, d.type, sum(d.events),
                    coalesce(hll_union_agg(d.users), {empty}),
                    coalesce(hll_union_agg(d.sessions), {empty})
             FROM rollup_delta_types d CROSS JOIN {GRAINS}
             GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
             ON CONFLICT (tenant_id, grain, bucket, type) DO UPDATE SET
                 events = r.events + excluded.events,
                 users = hll_union(r.users, excluded.users),
                 sessions = hll_union(r.sessions, excluded.sessions)"
        ),
        format!(
            "INSERT INTO rollup_pages AS r (tenant_id, grain, bucket, page, views)
             SELECT d.tenant_id, g.grain, {bin}, d.page, sum(d.events)
             FROM rollup_delta_dims d CROSS JOIN {GRAINS}
             WHERE d.role = 'page_view'
             GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
             ON CONFLICT (tenant_id, grain, bucket, page) DO UPDATE SET
                 views = r.views + excluded.views"
        ),
        format!(
            "INSERT INTO rollup_products AS r
                 (tenant_id, grain, bucket, product, views, cart_adds, purchases)
             SELECT d.tenant_id, g.grain, {bin}, d.product,
                    coalesce(sum(d.events) FILTER (WHERE d.role = 'product_view'), 0),
                    coalesce(sum(d.events) FILTER (WHERE d.role = 'cart_add'), 0),
                    coalesce(sum(d.events) FILTER (WHERE d.role = 'purchase'), 0)
             FROM rollup_delta_dims d CROSS JOIN {GRAINS}
             WHERE d.product IS NOT NULL
             GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
             ON CONFLICT (tenant_id, grain, bucket, product) DO UPDATE SET
                 views = r.views + excluded.views,
                 cart_adds = r.cart_adds + excluded.cart_adds,
                 purchases = r.purchases + excluded.purchases"
        ),
        format!(
            "INSERT INTO rollup_revenue AS r
                 (tenant_id, grain, bucket, currency, purchases, refunds, amount, refunded)
             SELECT d.tenant_id, g.grain, {bin}, d.currency,
                    coalesce(sum(d.events) FILTER (WHERE d.role = 'purchase'), 0),
                    coalesce(sum(d.events) FILTER (WHERE d.role = 'refund'), 0),
                    coalesce(sum(CASE WHEN d.role = 'refund' THEN -d.amount ELSE d.amount END), 0),
                    coalesce(sum(d.amount) FILTER (WHERE d.role = 'refund'), 0)
             FROM rollup_delta_dims d CROSS JOIN {GRAINS}
             WHERE d.currency IS NOT NULL
             GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
             ON CONFLICT (tenant_id, grain, bucket, currency) DO UPDATE SET
                 purchases = r.purchases + excluded.purchases,
                 refunds = r.refunds + excluded.refunds,
                 amount = r.amount + excluded.amount,
                 refunded = r.refunded + excluded.refunded"
        ),
        format!(
            "INSERT INTO rollup_sources AS r (tenant_id, grain, bucket, source, events)
             SELECT d.tenant_id, g.grain, {bin}, d.source, sum(d.events)
             FROM rollup_delta_dims d CROSS JOIN (VALUES (3600), (86400)) AS g(grain)
             GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
             ON CONFLICT (tenant_id, grain, bucket, source) DO UPDATE SET
                 events = r.events + excluded.events"
        ),
        // The series catalog the anomaly checks read: first and last bucket with events.
        "INSERT INTO rollup_series AS r (tenant_id, metric, first_seen, last_seen)
         SELECT tenant_id, metric, min(bucket), max(bucket) FROM (
             SELECT tenant_id, 'events' AS metric, bucket FROM rollup_delta_types
             UNION ALL
             SELECT tenant_id, 'events:' || type, bucket FROM rollup_delta_types
             UNION ALL
             SELECT tenant_id, 'source:' || source, bucket FROM rollup_delta_dims
         ) s
         GROUP BY 1, 2
         ON CONFLICT (tenant_id, metric) DO UPDATE SET
             first_seen = least(r.first_seen, excluded.first_seen),
             last_seen = greatest(r.last_seen, excluded.last_seen)"
            .to_owned(),
    ]
}

/// A window whose end was read by an earlier run, with the writers it was waiting for.
struct Window {
    end: i64,
    /// When `end` was read: every transaction that committed before then has `seq <= end`.
    read_at: DateTime<Utc>,
    lockers: Vec<String>,
    held: bool,
}

/// Runs one rollup transaction: lock the watermark, find the window, wait until it is settled,
/// merge it, move the watermark.
pub async fn step(
    pool: &PgPool,
    opts: &AggregateOptions,
    #[cfg(fault_injection)] faults: Option<&FaultHook>,
) -> Result<Step, Error> {
    let mut tx = pool.begin().await?;
    settings(&mut tx, opts).await?;
    let Some(state) = lock_state(&mut tx).await? else {
        return Ok(Step::Skipped("another rollup run is in progress".into()));
    };
    let from = state.0;
    let Some(window) = open_window(&mut tx, state).await? else {
        tx.commit().await?;
        return Ok(Step::UpToDate { at: from });
    };
    if let Some(held) = hold_unsettled(&mut tx, &window, from, opts).await? {
        tx.commit().await?;
        return Ok(held);
    }
    let to = window.end.min(from.saturating_add(opts.max_events.max(1)));
    let events = merge_window(&mut tx, from, to).await?;

    #[cfg(fault_injection)]
    if faults.is_some_and(|hook| hook(CrashPoint::AfterLoad)) {
        // As the server does when the process dies: nothing of the transaction stays. (A
        // dropped transaction would roll back only when its connection is next used, so the
        // test's immediate re-run could find the watermark still locked.)
        tx.rollback().await?;
        return Err(Error::InjectedCrash(CrashPoint::AfterLoad));
    }

    let capped = to < window.end;
    advance(&mut tx, &window, to, events, capped).await?;
    tx.commit().await?;
    Ok(Step::Merged {
        from,
        to,
        events,
        capped,
        held: window.held,
    })
}

/// The rollup transaction's settings: no JIT, its own `work_mem`, parallel workers and
/// statement timeout.
async fn settings(conn: &mut PgConnection, opts: &AggregateOptions) -> Result<(), Error> {
    for setting in [
        "SET LOCAL jit = off".to_owned(),
        format!("SET LOCAL work_mem = '{}MB'", opts.work_mem_mb.max(4)),
        format!(
            "SET LOCAL statement_timeout = '{}ms'",
            opts.statement_timeout.as_millis().max(1)
        ),
    ]
    .into_iter()
    .chain(
        opts.parallel_workers
            .map(|n| format!("SET LOCAL max_parallel_workers_per_gather = {n}")),
    ) {
        sqlx::query(&setting).execute(&mut *conn).await?;
    }
    Ok(())
}

/// The watermark row: `(last_seq, pending_end, pending_lockers, pending_at)`.
type State = (i64, Option<i64>, Vec<String>, Option<DateTime<Utc>>);

/// Locks the watermark row (`NOWAIT`); `None` when another run holds it.
async fn lock_state(conn: &mut PgConnection) -> Result<Option<State>, Error> {
    let state: Option<State> = match sqlx::query_as(
        "SELECT last_seq, pending_end, pending_lockers, pending_at FROM rollup_state
         WHERE name = 'events' FOR UPDATE NOWAIT",
    )
    .fetch_optional(&mut *conn)
    .await
    {
        Ok(v) => v,
        Err(e) if is_lock_not_available(&e) => return Ok(None),
        Err(e) => return Err(classify(e)),
    };
    state.map(Some).ok_or_else(|| {
        Error::Transient(sqlx::Error::Protocol(
            "rollup_state has no 'events' row: run `ferry migrate`".into(),
        ))
    })
}

/// The window after the watermark: the one an earlier run held, or a new one up to the newest
/// `seq` drawn. `None` (with `advanced_at` moved) when there is nothing new.
async fn open_window(conn: &mut PgConnection, state: State) -> Result<Option<Window>, Error> {
    let (from, pending_end, pending_lockers, pending_at) = state;
    if let (Some(end), Some(read_at)) = (pending_end, pending_at) {
        if end > from {
            // An earlier run read this end and gave up waiting for its writers: wait for those
            // writers only, not for any that started since.
            return Ok(Some(Window {
                end,
                read_at,
                lockers: pending_lockers,
                held: true,
            }));
        }
    }
    // The clock first: whatever committed before `read_at` has a seq <= the end.
    let (read_at, newest): (DateTime<Utc>, Option<i64>) = sqlx::query_as(
        "SELECT clock_timestamp(),
                pg_sequence_last_value(pg_get_serial_sequence('events', 'seq')::regclass)",
    )
    .fetch_one(&mut *conn)
    .await?;
    let newest = newest.unwrap_or(0);
    if newest <= from {
        // Every seq drawn so far is <= the watermark and was proven settled by an earlier run.
        sqlx::query(
            "UPDATE rollup_state SET advanced_at = $1, pending_end = NULL,
                 pending_lockers = '{}', pending_at = NULL
             WHERE name = 'events'",
        )
        .bind(read_at)
        .execute(&mut *conn)
        .await?;
        return Ok(None);
    }
    // Read after the end: whoever may hold a seq <= end is among these.
    let lockers = writers(&mut *conn).await?;
    Ok(Some(Window {
        end: newest,
        read_at,
        lockers,
        held: false,
    }))
}

/// Waits (up to `lock_wait`) for the window's writers, and on Citus for its prepared
/// transactions. When some are still unsettled, holds the window for the next run and says so.
async fn hold_unsettled(
    conn: &mut PgConnection,
    window: &Window,
    from: i64,
    opts: &AggregateOptions,
) -> Result<Option<Step>, Error> {
    let running = wait_for(&mut *conn, &window.lockers, opts.lock_wait).await?;
    if !running.is_empty() {
        // Hold the window: the next run waits only for the writers still running now.
        sqlx::query(
            "UPDATE rollup_state SET pending_end = $1, pending_lockers = $2, pending_at = $3
             WHERE name = 'events'",
        )
        .bind(window.end)
        .bind(&running)
        .bind(window.read_at)
        .execute(&mut *conn)
        .await?;
        return Ok(Some(Step::Skipped(format!(
            "{} writer(s) still in flight after {}; seq ({from}, {}] is held for the next run",
            running.len(),
            humantime::format_duration(opts.lock_wait),
            window.end
        ))));
    }
    // On Citus, a load's rows on a worker become visible only when the worker commits its
    // prepared transaction, which can happen after the coordinator committed (and released its
    // locks): when the worker was unreachable, Citus recovers it up to a minute later. Until
    // then, the window is held.
    let unsettled = wait_for_prepared(&mut *conn, opts.lock_wait).await?;
    if unsettled > 0 {
        sqlx::query(
            "UPDATE rollup_state SET pending_end = $1, pending_lockers = '{}', pending_at = $2
             WHERE name = 'events'",
        )
        .bind(window.end)
        .bind(window.read_at)
        .execute(&mut *conn)
        .await?;
        return Ok(Some(Step::Skipped(format!(
            "{unsettled} committed transaction(s) still prepared on Citus workers after {}; \
             seq ({from}, {}] is held until Citus recovers them",
            humantime::format_duration(opts.lock_wait),
            window.end
        ))));
    }
    Ok(None)
}

/// Merges the events with `seq` in `(from, to]` into every rollup; returns how many there were.
async fn merge_window(conn: &mut PgConnection, from: i64, to: i64) -> Result<i64, Error> {
    let sql = |template: &str| {
        template
            .replace("{from}", &from.to_string())
            .replace("{to}", &to.to_string())
            .replace("{page_types}", &types_of("'page_view'"))
            .replace("{product_types}", &types_of("'product_view', 'cart_add'"))
            .replace("{purchase_types}", &types_of("'purchase'"))
            .replace("{money_types}", &types_of("'purchase', 'refund'"))
    };
    // The sketches' aggregate states are large (about 128 KiB each), so the planner prefers
    // sorting a window's rows to hashing its few groups, at twice the time. Hash aggregation
    // stays within `work_mem` x `hash_mem_multiplier` (spilling past it), so this changes the
    // plan, not the memory bound.
    sqlx::query("SET LOCAL enable_sort = off")
        .execute(&mut *conn)
        .await?;
    sqlx::query(&sql(DELTA_TYPES)).execute(&mut *conn).await?;
    sqlx::query("SET LOCAL enable_sort TO DEFAULT")
        .execute(&mut *conn)
        .await?;
    sqlx::query(&sql(DELTA_DIMS)).execute(&mut *conn).await?;
    let events: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(events), 0)::bigint FROM rollup_delta_types")
            .fetch_one(&mut *conn)
            .await?;
    for sql in merges() {
        sqlx::query(&sql).execute(&mut *conn).await?;
    }
    Ok(events)
}

/// Moves the watermark to `to`. `advanced_at` says "everything that had committed by then is
/// counted": the time the window's end was read. A capped window leaves a backlog, so it does
/// not move (the anomaly checks would read the gap as a drop); its settled remainder stays
/// held, with no writers left to wait for.
async fn advance(
    conn: &mut PgConnection,
    window: &Window,
    to: i64,
    events: i64,
    capped: bool,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE rollup_state SET last_seq = $1, events = events + $2,
             advanced_at = CASE WHEN $4 THEN advanced_at ELSE $3 END,
             pending_end = CASE WHEN $4 THEN $5 END,
             pending_lockers = '{}',
             pending_at = CASE WHEN $4 THEN $3 END
         WHERE name = 'events'",
    )
    .bind(to)
    .bind(events)
    .bind(window.read_at)
    .bind(capped)
    .bind(window.end)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The transactions (virtualxids) holding a write lock on `events` now. Every insert holds
/// ROW EXCLUSIVE on it from before it draws a `seq` until it ends.
async fn writers(conn: &mut PgConnection) -> Result<Vec<String>, Error> {
    Ok(sqlx::query_scalar(
        "SELECT virtualtransaction FROM pg_locks
         WHERE locktype = 'relation' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND relation = 'events'::regclass AND granted AND pid <> pg_backend_pid()
           AND mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')",
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// On a Citus coordinator: waits up to `wait` until no transaction that committed here is still
/// only prepared on a worker (logged in `pg_dist_transaction`, listed by the worker's
/// `pg_prepared_xacts`); returns how many still are, counting an unreachable worker as one
/// (nothing can be proven about it). Elsewhere: 0 at once.
///
/// Transactions still running here are not counted: those that may hold a `seq` of the window
/// were waited for (`wait_for`) and have committed here, so their records are visible.
async fn wait_for_prepared(conn: &mut PgConnection, wait: Duration) -> Result<i64, Error> {
    let citus: bool =
        sqlx::query_scalar("SELECT to_regclass('pg_catalog.pg_dist_transaction') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await?;
    if !citus {
        return Ok(0);
    }
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(5);
    loop {
        let unsettled: i64 = sqlx::query_scalar(
            "WITH w AS (
                 SELECT success, result FROM run_command_on_workers(
                     $$SELECT coalesce(string_agg(gid, ','), '') FROM pg_prepared_xacts
                       WHERE database = current_database()$$))
             SELECT (SELECT count(*) FROM w WHERE NOT success)
                  + (SELECT count(*) FROM pg_dist_transaction t
                     WHERE t.gid IN (SELECT unnest(string_to_array(result, ','))
                                     FROM w WHERE success))",
        )
        .fetch_one(&mut *conn)
        .await?;
        if unsettled == 0 || Instant::now() >= deadline {
            return Ok(unsettled);
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Waits up to `wait` until every transaction of `lockers` has ended; returns those still
/// running (none: the window is settled). This is the "wait for lockers" step of `CREATE
/// INDEX CONCURRENTLY`, done from `pg_locks`: it never takes a lock on `events`, so it neither
/// waits for a gap between writers (which a busy stream may never leave) nor queues new
/// writers. A virtualxid is never reused soon (PostgreSQL keeps each backend slot's next local
/// id across sessions), and a reused one could only make the run wait longer.
async fn wait_for(
    conn: &mut PgConnection,
    lockers: &[String],
    wait: Duration,
) -> Result<Vec<String>, Error> {
    if lockers.is_empty() {
        return Ok(Vec::new());
    }
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(2);
    loop {
        let running: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT virtualxid FROM pg_locks
             WHERE locktype = 'virtualxid' AND granted AND virtualxid = ANY($1)",
        )
        .bind(lockers)
        .fetch_all(&mut *conn)
        .await?;
        if running.is_empty() || Instant::now() >= deadline {
            return Ok(running);
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}
