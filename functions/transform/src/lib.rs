//! Blob-created transform: a file landing in a bucket becomes loaded, deduplicated events,
//! exactly once per object version, however often the platform announces it.
//!
//! One object is one delivery unit, `blob:<store>/<key>@<version or ETag>`, loaded in ONE
//! transaction of the shared loader: claimed in the ledger, streamed from the store in bounded
//! chunks (decoded and parsed on a blocking thread while PostgreSQL merges the previous chunk),
//! its rejected records quarantined with their line numbers, its `blob_objects` row and ledger
//! counts written, committed. If the function dies midway the transaction rolls back and the
//! platform's redelivery loads the whole object again: no loss, no duplicates. A corrupt
//! archive or an unknown format found midway is rolled back the same way, then the object is
//! quarantined as a whole (with its first 64 KiB) and acknowledged.
//!
//! Where to look:
//! - [`object`](crate::Transform::process): the per-object pipeline, pin → claim → fetch →
//!   stream → finish (`object.rs`), and the statements on `blob_objects` (`sql.rs`);
//! - [`read`]: compression and format detection, records one at a time; [`map`]: a record to
//!   an event under its rule; [`rules`]: the rules file (`config/sources.toml`);
//! - [`stores`]: object store clients by URL (local files, S3, Azure Blob);
//! - [`TransformConfig`], [`ObjectReport`]: settings and what an object came to.
//!
//! `read`, `map`, `rules` and `format` are public for the fuzz targets (`fuzz/`).

mod config;
pub mod format;
pub mod map;
mod object;
pub mod read;
mod report;
pub mod rules;
mod sql;
pub mod stores;

use std::sync::Arc;

use ferry_shared::config::Config;
use ferry_shared::load::Nudge;
use ferry_shared::RejectReason;
use ferry_shared::{BlobCreated, BlobHandler, Error, Limits, Loader, LoaderConfig, Retry};
use sqlx::PgPool;
use tracing::warn;

pub use config::TransformConfig;
pub use object::unit_of;
pub use report::{ObjectReport, Outcome, TransformError};

use crate::rules::Rules;
use crate::stores::Stores;

#[cfg(fault_injection)]
use ferry_shared::faults::FaultHook;

/// The transform handler. Build once per process.
pub struct Transform {
    pool: PgPool,
    loader: Loader,
    rules: Arc<Rules>,
    stores: Stores,
    limits: Limits,
    cfg: TransformConfig,
    function: String,
    /// Objects in flight: each holds a connection for its transaction, and partition upkeep
    /// needs one more, so at most `max_connections - 1` objects load at once.
    objects: tokio::sync::Semaphore,
    #[cfg(fault_injection)]
    faults: Option<FaultHook>,
}

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transform")
            .field("function", &self.function)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Transform {
    /// Builds the handler from the process configuration.
    pub fn from_config(cfg: &Config, tcfg: TransformConfig) -> anyhow::Result<Transform> {
        let function = cfg
            .function_name
            .clone()
            .unwrap_or_else(|| "transform".into());
        let pool = ferry_shared::db::pool(&cfg.db, cfg.database_url()?, &function)?;
        Transform::with_pool(cfg, tcfg, pool, function)
    }

    /// Builds the handler on an existing pool (from [`ferry_shared::db::pool`]).
    pub fn with_pool(
        cfg: &Config,
        tcfg: TransformConfig,
        pool: PgPool,
        function: impl Into<String>,
    ) -> anyhow::Result<Transform> {
        let rules = Rules::load(tcfg.rules_file.as_deref())?;
        let loader = Loader::new(pool.clone(), LoaderConfig::from_config(cfg));
        let in_flight = (cfg.db.max_connections as usize).saturating_sub(1).max(1);
        Ok(Transform {
            pool,
            loader,
            rules: Arc::new(rules),
            stores: Stores::default().with_timeout(tcfg.timeout),
            limits: cfg.limits.clone(),
            cfg: tcfg,
            function: function.into(),
            objects: tokio::sync::Semaphore::new(in_flight),
            #[cfg(fault_injection)]
            faults: None,
        })
    }

    /// Installs a crash-point hook (tests only): `MidObject` is asked after each chunk.
    #[cfg(fault_injection)]
    pub fn with_faults(mut self, hook: FaultHook) -> Transform {
        self.faults = Some(hook);
        self
    }

    /// Nudges the fanout function after each commit that queued webhook deliveries.
    pub fn with_nudge(mut self, nudge: Nudge) -> Transform {
        self.loader = self.loader.with_nudge(nudge);
        self
    }

    pub fn function(&self) -> &str {
        &self.function
    }

    /// The store clients (shared with backfill and the local watcher).
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// Replaces the store clients, e.g. with [`Stores::with_options`] (tests, local stack).
    pub fn with_stores(mut self, stores: Stores) -> Transform {
        self.stores = stores;
        self
    }

    /// Quarantines a notification that could not be read.
    pub async fn quarantine_notification(
        &self,
        unit: &str,
        raw: &[u8],
        detail: &str,
    ) -> Result<bool, Error> {
        let reason = RejectReason::InvalidNotification;
        self.loader
            .quarantine_unit(&self.function, unit, reason, raw, detail)
            .await
    }
}

impl BlobHandler for Transform {
    async fn created(&self, blob: BlobCreated) -> Result<(), Retry> {
        self.process(&blob).await.map(|_| ()).map_err(|e| {
            warn!(store = %blob.store, key = %blob.key, error = %e, "object will be retried");
            Retry(e.to_string())
        })
    }

    async fn unreadable(&self, unit: String, raw: Vec<u8>, detail: String) -> Result<(), Retry> {
        self.quarantine_notification(&unit, &raw, &detail)
            .await
            .map(|_| ())
            .map_err(|e| Retry(e.to_string()))
    }
}
