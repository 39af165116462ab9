//! Where every table lives on a Citus cluster: one declaration, applied by `ferry migrate`.
//!
//! On one PostgreSQL server nothing here runs. When the database has the `citus` extension,
//! [`place`] distributes the tables that grow with tenants by `tenant_id`, all co-located with
//! `events` (a tenant's events, rollups, findings and derived state share a shard, so every
//! per-tenant statement runs on one node), makes the small lookup tables that workers join
//! reference tables, and leaves the rest as plain tables on the coordinator. It is idempotent:
//! a table already placed as declared is left alone, one placed otherwise is an error that says
//! how to undo it.
//!
//! Why the coordinator keeps what it keeps:
//! - `ingest_ledger`, `blob_objects`: keyed by delivery unit or object, not tenant (one queue
//!   message may carry events of several tenants); every load writes them in its transaction.
//! - `tenants`: every load checks its tenants `FOR SHARE`. As a reference table that row lock
//!   would be taken on every node (and loads deadlocked on it), and every table with a foreign
//!   key to it would become a Citus local table, with restrictions plain tables do not have.
//!   No distributed table references it, and no statement joins it with one.
//! - the webhook outbox (`endpoints`, `endpoint_secrets`, `webhook_messages`, `deliveries`,
//!   `delivery_attempts`): small, hot, claimed with `FOR UPDATE SKIP LOCKED` by the fanout.
//! - `rollup_state`, `job_runs`, `ferry_settings`: one writer, a few rows.
//! - `api_keys`: a few rows, read by key id before the tenant is known.

use sqlx::PgPool;

/// How a table is placed on a Citus cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Distributed by `tenant_id`, co-located with `events`.
    Tenant,
    /// A copy on every node (small, joined by distributed queries).
    Reference,
    /// A plain table on the coordinator.
    Coordinator,
}

use Placement::{Coordinator, Reference, Tenant};

/// Every table of ferry's schema and its placement. `events` comes first: the other tenant
/// tables are co-located with it. `tests/it/schema.rs` checks this list against the migrated
/// catalog (every table placed; keys and foreign keys that Citus accepts).
pub const TABLES: &[(&str, Placement)] = &[
    ("events", Tenant),
    ("quarantine", Tenant),
    ("rollup_events", Tenant),
    ("rollup_pages", Tenant),
    ("rollup_products", Tenant),
    ("rollup_revenue", Tenant),
    ("rollup_sources", Tenant),
    ("rollup_series", Tenant),
    ("anomalies", Tenant),
    ("products", Tenant),
    ("recently_viewed", Tenant),
    ("event_roles", Reference),
    ("tenants", Coordinator),
    ("ingest_ledger", Coordinator),
    ("blob_objects", Coordinator),
    ("rollup_state", Coordinator),
    ("job_runs", Coordinator),
    ("ferry_settings", Coordinator),
    ("endpoints", Coordinator),
    ("endpoint_secrets", Coordinator),
    ("webhook_messages", Coordinator),
    ("deliveries", Coordinator),
    ("delivery_attempts", Coordinator),
    ("api_keys", Coordinator),
];

/// Shards per distributed table when `ferry migrate` first distributes `events`
/// (FERRY_CITUS_SHARD_COUNT). Citus's own default; the measurements are in docs/architecture.md.
pub const DEFAULT_SHARD_COUNT: u32 = 32;

/// Width of `events` partitions that `ferry migrate` records for a new database on Citus,
/// where every partition is a distributed table with a shard per shard count.
pub const CITUS_PARTITION_SECS: i64 = 86_400;

/// Why the tables could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error(
        "Citus: the coordinator is not in the cluster's metadata, so reference tables have no \
         copy on it; run SELECT citus_set_coordinator_host('<host the workers reach it at>', \
         <port>) on the coordinator, then ferry migrate again"
    )]
    NoCoordinator,
    #[error(
        "Citus: table {table} is {found}, but ferry places it as {wanted}; {hint}, then run \
         ferry migrate again"
    )]
    Misplaced {
        table: &'static str,
        found: &'static str,
        wanted: &'static str,
        hint: &'static str,
    },
    #[error("Citus: placing {table}: {source}")]
    Database {
        table: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

/// What [`place`] found and did on a Citus database.
#[derive(Debug, Clone, Default)]
pub struct Placed {
    /// `citus_version()`, e.g. "Citus 12.1.6 on x86_64-pc-linux-gnu, …".
    pub version: String,
    /// Tables distributed or made reference tables by this run.
    pub changed: Vec<&'static str>,
    /// Shards per distributed table (of `events`).
    pub shard_count: i64,
}

/// The Citus version when the database has the extension, else `None`.
pub async fn citus_version(pool: &PgPool) -> Result<Option<String>, sqlx::Error> {
    let installed: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')")
            .fetch_one(pool)
            .await?;
    if !installed {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT citus_version()")
        .fetch_one(pool)
        .await
        .map(Some)
}

/// Places every table of [`TABLES`] on a Citus database (see the module docs). Returns `None`,
/// having done nothing, on a database without the citus extension.
pub async fn place(pool: &PgPool, shard_count: u32) -> Result<Option<Placed>, PlacementError> {
    let db = |table| move |source| PlacementError::Database { table, source };
    let Some(version) = citus_version(pool).await.map_err(db("citus"))? else {
        return Ok(None);
    };
    let coordinator: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_dist_node WHERE groupid = 0)")
            .fetch_one(pool)
            .await
            .map_err(db("pg_dist_node"))?;
    if !coordinator {
        return Err(PlacementError::NoCoordinator);
    }
    let mut placed = Placed {
        version,
        ..Placed::default()
    };
    for &(table, want) in TABLES {
        if place_one(pool, table, want, shard_count).await? {
            placed.changed.push(table);
        }
    }
    // Distributing copies existing rows to the shards but leaves them on the coordinator's
    // disk, invisible; remove them.
    for table in &placed.changed {
        sqlx::query("SELECT truncate_local_data_after_distributing_table($1)")
            .bind(table)
            .execute(pool)
            .await
            .map_err(db(table))?;
    }
    placed.shard_count = sqlx::query_scalar(
        "SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'events'::regclass",
    )
    .fetch_one(pool)
    .await
    .map_err(db("events"))?;
    Ok(Some(placed))
}

/// Places one table as `want`s (unless it is placed so already); true when it was placed now.
async fn place_one(
    pool: &PgPool,
    table: &'static str,
    want: Placement,
    shard_count: u32,
) -> Result<bool, PlacementError> {
    let db = |table| move |source| PlacementError::Database { table, source };
    // (method, replication): 'h' is hash-distributed; 'n' is a reference table when
    // replicated to every node ('t'), else a Citus local table.
    let found: Option<(String, String)> = sqlx::query_as(
        "SELECT partmethod::text, repmodel::text FROM pg_dist_partition
         WHERE logicalrelid = $1::regclass",
    )
    .bind(table)
    .fetch_optional(pool)
    .await
    .map_err(db(table))?;
    let found_as = found.map(|(method, replication)| match (&*method, &*replication) {
        ("h", _) => Tenant,
        (_, "t") => Reference,
        _ => Coordinator, // a Citus local table: wrong either way, below
    });
    let misplaced = |found: &'static str, hint: &'static str| PlacementError::Misplaced {
        table,
        found,
        wanted: match want {
            Tenant => "distributed by tenant_id",
            Reference => "a reference table",
            Coordinator => "a plain table on the coordinator",
        },
        hint,
    };
    match (want, found_as) {
        (Tenant, Some(Tenant)) | (Reference, Some(Reference)) | (Coordinator, None) => Ok(false),
        (Tenant, None) => {
            let sql = if table == "events" {
                "SELECT create_distributed_table($1, 'tenant_id', shard_count => $2)"
            } else {
                "SELECT create_distributed_table($1, 'tenant_id', colocate_with => 'events')"
            };
            sqlx::query(sql)
                .bind(table)
                .bind(shard_count as i32)
                .execute(pool)
                .await
                .map_err(db(table))?;
            Ok(true)
        }
        (Reference, None) => {
            sqlx::query("SELECT create_reference_table($1)")
                .bind(table)
                .execute(pool)
                .await
                .map_err(db(table))?;
            Ok(true)
        }
        (_, Some(Coordinator)) => Err(misplaced(
            "a Citus local table",
            "a foreign key to a reference table makes one; undo it with \
                 SELECT undistribute_table('<table>', cascade_via_foreign_keys => true)",
        )),
        (_, Some(Tenant)) => Err(misplaced(
            "distributed",
            "undo it with SELECT undistribute_table('<table>')",
        )),
        (_, Some(Reference)) => Err(misplaced(
            "a reference table",
            "undo it with SELECT undistribute_table('<table>')",
        )),
    }
}
