//! PostgreSQL access: the pool, embedded migrations, tenants and partition upkeep.
//!
//! SQL that handlers need lives here and in `migrations/`, not in handlers.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::config::DbConfig;
use crate::error::Error;
use crate::placement;

/// The migrations under `migrations/`, embedded at build time in every binary that links the
/// shared crate (a new file is picked up without touching code; `build.rs` rebuilds on it).
/// Versions applied by earlier releases keep their checksums: the files are unchanged.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Width of `events` partitions that `ferry migrate` records for a new database on one server:
/// an hour. The rollup reads its window by `seq`, which cannot prune time partitions, so each
/// run plans, opens and locks every partition (and its two indexes): kept 30 days, 5-minute
/// partitions were 8,640, and the run failed with "out of shared memory" under the default
/// lock table (`max_locks_per_transaction` 64); an hour makes them 720, which a run reads in
/// 55-60 ms holding 2,163 locks (docs/operations.md, docs/performance.md).
pub const ONE_SERVER_PARTITION_SECS: i64 = 3_600;

/// What `ferry migrate` decides beyond the migrations themselves.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// Width of `events` partitions to record for a database that has none yet. `None`: one
    /// node records [`ONE_SERVER_PARTITION_SECS`], Citus [`placement::CITUS_PARTITION_SECS`].
    pub partition_interval: Option<std::time::Duration>,
    /// Shards per distributed table, when Citus distributes `events` for the first time.
    pub shard_count: u32,
}

impl MigrateOptions {
    pub fn from_config(cfg: &crate::Config) -> MigrateOptions {
        MigrateOptions {
            partition_interval: cfg.partition_interval,
            shard_count: cfg.citus_shard_count,
        }
    }
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            partition_interval: None,
            shard_count: placement::DEFAULT_SHARD_COUNT,
        }
    }
}

/// What [`migrate`] did.
#[derive(Debug, Clone, Default)]
pub struct Migrated {
    /// On a Citus database: its version and the tables placed by this run.
    pub citus: Option<placement::Placed>,
    /// The width of `events` partitions the database records, in seconds, if any.
    pub partition_secs: Option<i64>,
}

/// Why [`migrate`] failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Migrations(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Placement(#[from] placement::PlacementError),
    #[error("recording the partition width: {0}")]
    Settings(#[from] sqlx::Error),
}

/// Applies the embedded migrations, places the tables when the database is a Citus
/// coordinator (`placement`), and records the partition width of a new database. Idempotent.
/// A deploy step (`ferry migrate`), never a hot handler.
pub async fn migrate(pool: &PgPool) -> Result<Migrated, MigrateError> {
    migrate_with(pool, &MigrateOptions::default()).await
}

/// [`migrate`] with options.
pub async fn migrate_with(pool: &PgPool, opts: &MigrateOptions) -> Result<Migrated, MigrateError> {
    MIGRATOR.run(pool).await?;
    let citus = placement::place(pool, opts.shard_count).await?;
    let secs = match (opts.partition_interval, &citus) {
        (Some(w), _) => w.as_secs() as i64,
        (None, Some(_)) => placement::CITUS_PARTITION_SECS,
        (None, None) => ONE_SERVER_PARTITION_SECS,
    };
    // Only for a database without partitions: a width cannot change under existing ones.
    sqlx::query(
        "INSERT INTO ferry_settings (name, value)
         SELECT 'partition_interval', make_interval(secs => $1::double precision)::text
         WHERE NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = 'events'::regclass)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(secs as f64)
    .execute(pool)
    .await?;
    Ok(Migrated {
        citus,
        partition_secs: partition_secs(pool).await?,
    })
}

/// The width of `events` partitions the database records (`ferry_settings`), in seconds.
pub async fn partition_secs(pool: &PgPool) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT extract(epoch FROM value::interval)::bigint FROM ferry_settings
         WHERE name = 'partition_interval'",
    )
    .fetch_optional(pool)
    .await
}

/// Builds the pool. Connects lazily, so a function starts (and can report per-message
/// failures) even while the database is down.
pub fn pool(cfg: &DbConfig, url: &str, application: &str) -> Result<PgPool, sqlx::Error> {
    let lock = format!("{}ms", cfg.lock_timeout.as_millis());
    let statement = format!("{}ms", cfg.statement_timeout.as_millis());
    let options = PgConnectOptions::from_str(url)?
        .application_name(application)
        .options([
            ("lock_timeout", lock.as_str()),
            ("statement_timeout", statement.as_str()),
            // Times written into text (a delivered event's `time`) are in UTC, whatever the
            // server's default time zone.
            ("TimeZone", "UTC"),
        ]);
    Ok(PgPoolOptions::new()
        .max_connections(cfg.max_connections)
        .acquire_timeout(cfg.connect_timeout)
        .connect_lazy_with(options))
}

/// Registers a tenant (idempotent: an existing tenant keeps its data and becomes active).
pub async fn add_tenant(pool: &PgPool, tenant_id: &str, name: &str) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO tenants (tenant_id, name) VALUES ($1, $2)
         ON CONFLICT (tenant_id) DO UPDATE SET name = EXCLUDED.name, status = 'active'",
    )
    .bind(tenant_id)
    .bind(name)
    .execute(pool)
    .await?;
    Ok(())
}

/// A row of the tenants table.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Tenant {
    pub tenant_id: String,
    pub name: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

/// All tenants, by id.
pub async fn list_tenants(pool: &PgPool) -> Result<Vec<Tenant>, Error> {
    Ok(
        sqlx::query_as(
            "SELECT tenant_id, name, status, created_at FROM tenants ORDER BY tenant_id",
        )
        .fetch_all(pool)
        .await?,
    )
}

/// Start of the partition slot holding `t`, for partitions `width_secs` wide (UTC-aligned).
pub fn slot_start(t: DateTime<Utc>, width_secs: i64) -> i64 {
    t.timestamp().div_euclid(width_secs) * width_secs
}

/// Creates the `events` partitions starting at the given slot starts (epoch seconds), in its
/// own short transaction. Returns how many were created.
pub async fn ensure_partitions(
    pool: &PgPool,
    starts: &[i64],
    width_secs: i64,
) -> Result<i32, Error> {
    if starts.is_empty() {
        return Ok(0);
    }
    let starts: Vec<DateTime<Utc>> = starts
        .iter()
        .filter_map(|s| DateTime::from_timestamp(*s, 0))
        .collect();
    let created: i32 = sqlx::query_scalar(
        "SELECT ferry_ensure_event_partitions($1, make_interval(secs => $2::double precision))",
    )
    .bind(&starts)
    .bind(width_secs as f64)
    .fetch_one(pool)
    .await?;
    Ok(created)
}

/// Creates partitions for `[from, from + ahead]` (used at deploy time and by timers).
pub async fn ensure_partitions_ahead(
    pool: &PgPool,
    from: DateTime<Utc>,
    ahead: std::time::Duration,
    width_secs: i64,
) -> Result<i32, Error> {
    let first = slot_start(from, width_secs);
    let last = slot_start(
        from + chrono::Duration::from_std(ahead).unwrap_or_default(),
        width_secs,
    );
    let starts: Vec<i64> = (first..=last).step_by(width_secs as usize).collect();
    ensure_partitions(pool, &starts, width_secs).await
}

#[cfg(test)]
mod tests {
    use super::MIGRATOR;

    /// Every file under `migrations/` is embedded, in version order, with its own text.
    #[test]
    fn every_migration_file_is_embedded_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let embedded: Vec<String> = MIGRATOR
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.description.replace(' ', "_")))
            .collect();
        assert_eq!(embedded, files);
        for (m, file) in MIGRATOR.iter().zip(&files) {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            assert_eq!(m.sql.as_ref(), text.as_str(), "{file}");
        }
    }
}
