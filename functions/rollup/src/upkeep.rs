//! Partition upkeep and retention of operational and rollup tables.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_shared::error::Error;
use sqlx::PgPool;

/// What happens to `events` partitions past retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionMode {
    /// Detach and drop.
    Drop,
    /// Detach and keep, renamed `archived_<partition>` (to archive or drop by hand).
    Detach,
}

/// Result of one partition upkeep run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartitionReport {
    pub created: i32,
    pub removed: Vec<String>,
    /// Past retention but kept for now, with the reason.
    pub kept: Vec<(String, String)>,
    /// `events` partitions after the run.
    pub partitions: i64,
    /// Locks a rollup run takes: each partition and each of its indexes (the window is read
    /// by `seq`, which cannot prune time partitions, so the planner opens them all).
    pub run_locks: i64,
    /// The server's lock table, at least: `max_locks_per_transaction` x (`max_connections` +
    /// `max_prepared_transactions`), shared by every session.
    pub lock_slots: i64,
}

impl PartitionReport {
    /// Whether a rollup run's locks take more than half the server's lock table: past all of
    /// it, the run fails with "out of shared memory".
    pub fn locks_crowded(&self) -> bool {
        self.run_locks > self.lock_slots / 2
    }
}

/// `now - d`, saturating at the earliest representable time (a retention of "forever").
pub(crate) fn before(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Creates the partitions for `[now, now + ahead]` and removes those that ended more than
/// `retention` ago, except partitions holding events the rollups have not counted yet.
pub async fn partitions(
    pool: &PgPool,
    now: DateTime<Utc>,
    ahead: Duration,
    partition_secs: i64,
    retention: Duration,
    mode: RetentionMode,
    lock_wait: Duration,
) -> Result<PartitionReport, Error> {
    let mut report = PartitionReport {
        created: ferry_shared::db::ensure_partitions_ahead(pool, now, ahead, partition_secs)
            .await?,
        ..PartitionReport::default()
    };
    let cutoff = before(now, retention);
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT part, action FROM ferry_drop_event_partitions(
             $1, (SELECT coalesce(min(last_seq), 0) FROM rollup_state), $2,
             make_interval(secs => $3))",
    )
    .bind(cutoff)
    .bind(mode == RetentionMode::Detach)
    .bind(lock_wait.as_secs_f64())
    .fetch_all(pool)
    .await?;
    for (part, action) in rows {
        if action == "dropped" || action.starts_with("detached") {
            report.removed.push(part);
        } else {
            report.kept.push((part, action));
        }
    }
    (report.partitions, report.run_locks, report.lock_slots) = sqlx::query_as(
        "WITH p AS (SELECT count(*) AS n FROM pg_inherits WHERE inhparent = 'events'::regclass)
         SELECT p.n,
                p.n * (1 + (SELECT count(*) FROM pg_index WHERE indrelid = 'events'::regclass)),
                current_setting('max_locks_per_transaction')::bigint
                * (current_setting('max_connections')::bigint
                   + current_setting('max_prepared_transactions')::bigint)
         FROM p",
    )
    .fetch_one(pool)
    .await?;
    Ok(report)
}

/// Retention of operational rows.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Ledger rows (`ingest_ledger`, `blob_objects`): must outlast the longest redelivery
    /// window of the queues (SQS keeps messages up to 14 days), or a very late redelivery would
    /// be applied again.
    pub ledger: Duration,
    pub quarantine: Duration,
    pub job_runs: Duration,
    pub anomalies: Duration,
    /// Rollup rows, by grain: 5-minute, hourly, daily. The anomaly checks read 7 days back at
    /// 5 minutes and hourly and 4 weeks back daily, which bounds these from below.
    pub rollups: [Duration; 3],
}

/// The grains of the rollup tables, in the order of [`Retention::rollups`].
pub const GRAINS: [i32; 3] = [300, 3_600, 86_400];

/// The shortest rollup retention per grain that the anomaly baselines allow: the oldest
/// seasonal slot (7 days back; 4 weeks back for days) of the newest closed bucket, which ends a
/// grain plus the grace before now, with a day of margin.
pub const MIN_ROLLUP_RETENTION: [Duration; 3] = [
    Duration::from_secs(8 * 86_400),
    Duration::from_secs(8 * 86_400),
    Duration::from_secs(31 * 86_400),
];

impl Default for Retention {
    fn default() -> Self {
        let day = 86_400;
        Retention {
            ledger: Duration::from_secs(15 * day),
            quarantine: Duration::from_secs(30 * day),
            job_runs: Duration::from_secs(7 * day),
            anomalies: Duration::from_secs(90 * day),
            rollups: [
                Duration::from_secs(35 * day),
                Duration::from_secs(400 * day),
                Duration::from_secs(3_650 * day),
            ],
        }
    }
}

/// Rows deleted per statement, so no single delete holds locks or bloats WAL for long.
const BATCH: i64 = 10_000;

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Runs a `DELETE … LIMIT BATCH` statement (its parameters bound by `bind`) until it deletes
/// fewer than a batch; returns the rows deleted.
async fn delete_batched(
    pool: &PgPool,
    sql: &str,
    bind: impl for<'q> Fn(PgQuery<'q>) -> PgQuery<'q>,
) -> Result<u64, Error> {
    let mut total = 0;
    loop {
        let n = bind(sqlx::query(sql)).execute(pool).await?.rows_affected();
        total += n;
        if n < BATCH as u64 {
            return Ok(total);
        }
    }
}

/// Deletes expired rows in batches. Returns (table, rows deleted) per table.
pub async fn housekeeping(
    pool: &PgPool,
    now: DateTime<Utc>,
    retention: &Retention,
) -> Result<Vec<(&'static str, u64)>, Error> {
    // (table, its key, the time column that ages it, retention). Deletes go by key, never by
    // ctid: on Citus `quarantine` and `anomalies` are distributed, and a ctid means nothing
    // across shards.
    let plan: [(&'static str, &str, &str, Duration); 5] = [
        ("ingest_ledger", "unit", "applied_at", retention.ledger),
        (
            "blob_objects",
            "store, key, content_id",
            "applied_at",
            retention.ledger,
        ),
        (
            "quarantine",
            "tenant_id, quarantine_id",
            "received_at",
            retention.quarantine,
        ),
        ("job_runs", "run_id", "started_at", retention.job_runs),
        (
            "anomalies",
            "tenant_id, metric, grain, bucket, kind",
            "detected_at",
            retention.anomalies,
        ),
    ];
    let mut out = Vec::new();
    for (table, key, column, keep) in plan {
        let cutoff = before(now, keep);
        let sql = format!(
            "DELETE FROM {table} WHERE ({key}) IN (
                 SELECT {key} FROM {table} WHERE {column} < $1 LIMIT {BATCH})"
        );
        out.push((table, delete_batched(pool, &sql, |q| q.bind(cutoff)).await?));
    }

    // Rollup rows, tenant by tenant (the primary keys lead with tenant, grain, bucket; on
    // Citus each statement runs on the tenant's shard).
    let tenants: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT tenant_id FROM rollup_series ORDER BY 1")
            .fetch_all(pool)
            .await?;
    for (table, dimension) in [
        ("rollup_events", "type"),
        ("rollup_pages", "page"),
        ("rollup_products", "product"),
        ("rollup_revenue", "currency"),
        ("rollup_sources", "source"),
    ] {
        let sql = format!(
            "DELETE FROM {table} WHERE tenant_id = $1 AND grain = $2 AND (bucket, {dimension}) IN (
                 SELECT bucket, {dimension} FROM {table}
                 WHERE tenant_id = $1 AND grain = $2 AND bucket < $3 LIMIT {BATCH})"
        );
        let mut total = 0;
        for (grain, keep) in GRAINS.into_iter().zip(retention.rollups) {
            if table == "rollup_sources" && grain == GRAINS[0] {
                continue; // hourly and daily only
            }
            let cutoff = before(now, keep);
            for tenant in &tenants {
                total += delete_batched(pool, &sql, |q| {
                    q.bind(tenant.clone()).bind(grain).bind(cutoff)
                })
                .await?;
            }
        }
        out.push((table, total));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::PartitionReport;

    /// A run's locks for `partitions` partitions of `events`, which has two indexes.
    fn report(partitions: i64, lock_slots: i64) -> PartitionReport {
        PartitionReport {
            partitions,
            run_locks: partitions * 3,
            lock_slots,
            ..PartitionReport::default()
        }
    }

    #[test]
    fn locks_are_crowded_past_half_the_lock_table() {
        // PostgreSQL's defaults: 64 x (100 + 0) = 6,400 slots.
        assert!(!report(720, 6_400).locks_crowded(), "an hour wide, 30 days");
        assert!(!report(1_066, 6_400).locks_crowded());
        assert!(report(1_067, 6_400).locks_crowded());
        assert!(
            report(8_640, 6_400).locks_crowded(),
            "5 minutes wide, 30 days"
        );
    }
}
