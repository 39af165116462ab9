//! PostgreSQL access: the pool, embedded migrations, tenants and partition upkeep.
//!
//! SQL that handlers need lives here and in `migrations/`, not in handlers.

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::config::DbConfig;
use crate::error::Error;

/// The migrations, embedded once in every binary that links the shared crate.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "foundation",
        include_str!("../migrations/0001_foundation.sql"),
    ),
    (
        2,
        "blob_objects",
        include_str!("../migrations/0002_blob_objects.sql"),
    ),
    (
        3,
        "attach_partitions",
        include_str!("../migrations/0003_attach_partitions.sql"),
    ),
    (4, "rollups", include_str!("../migrations/0004_rollups.sql")),
    (
        5,
        "rollup_windows",
        include_str!("../migrations/0005_rollup_windows.sql"),
    ),
    (
        6,
        "webhooks",
        include_str!("../migrations/0006_webhooks.sql"),
    ),
    (7, "fanout", include_str!("../migrations/0007_fanout.sql")),
    (
        8,
        "endpoint_health",
        include_str!("../migrations/0008_endpoint_health.sql"),
    ),
];

#[derive(Debug)]
struct Embedded;

type BoxDynError = Box<dyn std::error::Error + Send + Sync>;

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(v, d, sql)| {
                    Migration::new(*v, (*d).into(), MigrationType::Simple, (*sql).into(), false)
                })
                .collect())
        })
    }
}

/// Applies the embedded migrations. A deploy step (`ferry migrate`), never a hot handler.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    Migrator::new(Embedded).await?.run(pool).await
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
#[derive(Debug, Clone)]
pub struct Tenant {
    pub tenant_id: String,
    pub name: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

/// All tenants, by id.
pub async fn list_tenants(pool: &PgPool) -> Result<Vec<Tenant>, Error> {
    let rows: Vec<(String, String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT tenant_id, name, status, created_at FROM tenants ORDER BY tenant_id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(tenant_id, name, status, created_at)| Tenant {
            tenant_id,
            name,
            status,
            created_at,
        })
        .collect())
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
    use super::MIGRATIONS;

    /// A file under `migrations/` that is not in the embedded list would never be applied.
    #[test]
    fn every_migration_file_is_embedded_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let embedded: Vec<String> = MIGRATIONS
            .iter()
            .map(|(v, name, _)| format!("{v:04}_{name}.sql"))
            .collect();
        assert_eq!(embedded, files);
        for ((_, _, sql), file) in MIGRATIONS.iter().zip(&files) {
            assert_eq!(
                *sql,
                std::fs::read_to_string(dir.join(file)).unwrap(),
                "{file}"
            );
        }
    }
}
