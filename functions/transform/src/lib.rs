//! Blob-created transform: a file landing in a bucket becomes loaded, deduplicated events,
//! exactly once per object version, however often the platform announces it.
//!
//! One object is one delivery unit, `blob:<store>/<key>@<version or ETag>`, and is loaded in
//! ONE transaction:
//! 1. an advisory lock on (store, key) serialises notifications of the same key; the unit is
//!    claimed in `ingest_ledger` (a unit already there was applied: nothing happens); a
//!    notification whose `sequencer` is older than one already applied for the key is recorded
//!    as `stale` and ignored;
//! 2. the object is streamed from the store (pinned to the notified version or ETag), decoded
//!    and parsed on a blocking thread, and arrives in bounded chunks; for each chunk, its
//!    partitions are attached (in their own short transactions: attaching does not conflict
//!    with this transaction's open inserts), its events are COPYed into a temporary staging
//!    table and merged into `events` (`ON CONFLICT DO NOTHING`) while the reader parses the
//!    next chunk, and its rejected records are written to `quarantine` with their line numbers;
//! 3. the object's `blob_objects` row and ledger counts are written and the transaction
//!    commits.
//!
//! Memory is bounded by the chunk size, whatever the file size. If the function dies midway,
//! the transaction rolls back: nothing of the object is stored, the ledger has no row, and the
//! platform's redelivery loads the whole object again — no loss, no duplicates. A corrupt
//! archive or an unknown format discovered midway is handled the same way, then the object is
//! quarantined as a whole (with its first 64 KiB) and acknowledged.

pub mod map;
pub mod read;
pub mod rules;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ferry_shared::config::Config;
use ferry_shared::load::{
    active_tenant_ids, copy_to_staging, create_staging, derive, insert_each, insert_quarantine,
    merge_staging, unknown_tenant, Fresh,
};
use ferry_shared::{
    BlobCreated, BlobHandler, Error, Event, Limits, Loader, LoaderConfig, RejectReason, Rejection,
    Retry,
};
use futures_util::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt};
use sqlx::{PgConnection, PgPool};
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};
use tracing::{info, warn};

use crate::map::{Mapped, Mapper};
use crate::read::{read_object, Flow, ObjectError, ReadLimits, Source};
use crate::rules::{Rule, Sources};
use crate::store::Stores;

#[cfg(all(feature = "fault-injection", debug_assertions))]
use ferry_shared::faults::{CrashPoint, FaultHook};

/// Transform settings (from the environment, see the README).
#[derive(Debug, Clone)]
pub struct TransformConfig {
    /// Records per chunk handed from the reader to the loader (`FERRY_TRANSFORM_CHUNK`).
    pub chunk_records: usize,
    /// Statement timeout inside an object's transaction (`FERRY_TRANSFORM_TIMEOUT`); the merge
    /// of a large file is one statement.
    pub timeout: Duration,
    /// Rules file (`FERRY_SOURCES_FILE`); the compiled-in `config/sources.toml` when unset.
    pub sources_file: Option<PathBuf>,
}

impl TransformConfig {
    pub fn from_env() -> anyhow::Result<TransformConfig> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let chunk_records = match get("FERRY_TRANSFORM_CHUNK") {
            Some(v) => v.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                anyhow::anyhow!("FERRY_TRANSFORM_CHUNK={v:?}: expected a whole number > 0")
            })?,
            None => 10_000,
        };
        let timeout = match get("FERRY_TRANSFORM_TIMEOUT") {
            Some(v) => humantime::parse_duration(v.trim())
                .map_err(|e| anyhow::anyhow!("FERRY_TRANSFORM_TIMEOUT={v:?}: {e}"))?,
            None => Duration::from_secs(600),
        };
        Ok(TransformConfig {
            chunk_records,
            timeout,
            sources_file: get("FERRY_SOURCES_FILE").map(PathBuf::from),
        })
    }
}

impl Default for TransformConfig {
    fn default() -> Self {
        TransformConfig {
            chunk_records: 10_000,
            timeout: Duration::from_secs(600),
            sources_file: None,
        }
    }
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Read and applied (its records loaded, quarantined or dropped).
    Loaded,
    /// This version was applied before: no effect.
    AlreadyApplied,
    /// A newer version of the key was already applied: recorded and ignored.
    Stale,
    /// The notified version is no longer in the store (overwritten or deleted); a later
    /// notification covers what replaced it.
    Gone,
    /// The object as a whole was quarantined for this reason.
    Quarantined(RejectReason),
}

/// The report for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectReport {
    pub unit: String,
    pub outcome: Outcome,
    /// Records read (lines, rows or array elements; blank lines are not records).
    pub records: u64,
    pub loaded: u64,
    pub duplicates: u64,
    pub quarantined: BTreeMap<RejectReason, u64>,
    /// Records dropped, by drop rule.
    pub dropped: BTreeMap<String, u64>,
    /// Webhook deliveries enqueued for the object's events.
    pub deliveries: u64,
}

impl ObjectReport {
    fn new(unit: String, outcome: Outcome) -> ObjectReport {
        ObjectReport {
            unit,
            outcome,
            records: 0,
            loaded: 0,
            duplicates: 0,
            quarantined: BTreeMap::new(),
            dropped: BTreeMap::new(),
            deliveries: 0,
        }
    }

    pub fn quarantined_total(&self) -> u64 {
        self.quarantined.values().sum()
    }
}

/// Why an object must be delivered again.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error(transparent)]
    Database(#[from] Error),
    #[error("object store: {0}")]
    Store(String),
}

/// The transform handler. Build once per process.
pub struct Transform {
    pool: PgPool,
    loader: Loader,
    sources: Arc<Sources>,
    stores: Stores,
    limits: Limits,
    cfg: TransformConfig,
    function: String,
    /// Objects in flight: each holds a connection for its transaction, and partition upkeep
    /// needs one more, so at most `max_connections - 1` objects load at once.
    objects: tokio::sync::Semaphore,
    #[cfg(all(feature = "fault-injection", debug_assertions))]
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

/// Most bytes of records in one chunk.
const CHUNK_BYTES: usize = 32 * 1024 * 1024;

/// A chunk handed from the reader thread to the loader.
#[derive(Debug, Default)]
struct Chunk {
    records: u64,
    events: Vec<Event>,
    rejected: Vec<Rejection>,
    dropped: Vec<u64>,
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
        let sources = Sources::load(tcfg.sources_file.as_deref())?;
        let loader = Loader::new(pool.clone(), LoaderConfig::from_config(cfg));
        let in_flight = (cfg.db.max_connections as usize).saturating_sub(1).max(1);
        Ok(Transform {
            pool,
            loader,
            sources: Arc::new(sources),
            stores: Stores::default().with_timeout(tcfg.timeout),
            limits: cfg.limits.clone(),
            cfg: tcfg,
            function: function.into(),
            objects: tokio::sync::Semaphore::new(in_flight),
            #[cfg(all(feature = "fault-injection", debug_assertions))]
            faults: None,
        })
    }

    /// Installs a crash-point hook (tests only): `MidObject` is asked after each chunk.
    #[cfg(all(feature = "fault-injection", debug_assertions))]
    pub fn with_faults(mut self, hook: FaultHook) -> Transform {
        self.faults = Some(hook);
        self
    }

    /// Nudges the fanout function after each commit that queued webhook deliveries.
    pub fn with_nudge(mut self, nudge: ferry_shared::load::Nudge) -> Transform {
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

    /// Handles one object.
    pub async fn process(&self, blob: &BlobCreated) -> Result<ObjectReport, TransformError> {
        let started = Instant::now();
        let store = self
            .stores
            .get(&blob.store)
            .map_err(|e| TransformError::Store(e.to_string()))?;
        let mut pinned = blob.clone();
        pinned.etag = blob.etag.as_deref().map(plain_etag);
        pinned.sequencer = blob.sequencer.as_deref().map(str::to_ascii_uppercase);
        let path = match ObjectPath::parse(&blob.key) {
            Ok(p) => p,
            Err(e) => {
                let unit = unit_of(&pinned);
                let detail = format!("the key cannot be addressed in the store: {e}");
                return self
                    .quarantine_object(
                        &pinned,
                        &unit,
                        None,
                        RejectReason::InvalidNotification,
                        &detail,
                        &[],
                    )
                    .await;
            }
        };
        let _permit = self
            .objects
            .acquire()
            .await
            .map_err(|e| TransformError::Store(e.to_string()))?;
        if pinned.version.is_none() && pinned.etag.is_none() {
            // The local watcher and some callers give only a key: pin what is there now.
            match store.head(&path).await {
                Ok(meta) => {
                    pinned.etag = meta.e_tag.as_deref().map(plain_etag);
                    pinned.version = meta.version;
                    pinned.size = Some(meta.size);
                }
                Err(object_store::Error::NotFound { .. }) => {
                    return Ok(ObjectReport::new(unit_of(&pinned), Outcome::Gone));
                }
                Err(e) => return Err(TransformError::Store(e.to_string())),
            }
        }
        let unit = unit_of(&pinned);
        let first = self
            .process_pinned(&pinned, &unit, Arc::clone(&store), &path, false)
            .await;
        let report = match first {
            Err(TransformError::Database(Error::Permanent(e))) => {
                // The database refuses some record for good (a value jsonb cannot hold, say):
                // load the object again event by event, quarantining only what it refuses.
                warn!(%unit, error = %e, "reloading the object event by event");
                self.process_pinned(&pinned, &unit, store, &path, true)
                    .await?
            }
            other => other?,
        };
        info!(
            unit = %report.unit, outcome = ?report.outcome, records = report.records,
            loaded = report.loaded, duplicates = report.duplicates,
            quarantined = report.quarantined_total(),
            dropped = report.dropped.values().sum::<u64>(),
            elapsed_ms = started.elapsed().as_millis() as u64, "object done"
        );
        Ok(report)
    }

    async fn process_pinned(
        &self,
        blob: &BlobCreated,
        unit: &str,
        store: Arc<dyn ObjectStore>,
        path: &ObjectPath,
        isolate: bool,
    ) -> Result<ObjectReport, TransformError> {
        let applied: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM ingest_ledger WHERE unit = $1")
                .bind(unit)
                .fetch_optional(&self.pool)
                .await
                .map_err(Error::from)?;
        if applied.is_some() {
            return Ok(ObjectReport::new(unit.to_owned(), Outcome::AlreadyApplied));
        }
        let Some(rule) = self.sources.rule_for(&blob.store, &blob.key) else {
            let detail = format!(
                "no [[source]] in the sources file covers {}/{}",
                blob.store, blob.key
            );
            return self
                .quarantine_object(blob, unit, None, RejectReason::NoSourceRule, &detail, &[])
                .await;
        };

        let received_at = Utc::now();
        let mut tx = self.pool.begin().await.map_err(Error::from)?;
        sqlx::query(&format!(
            "SET LOCAL statement_timeout = {}",
            self.cfg.timeout.as_millis()
        ))
        .execute(&mut *tx)
        .await
        .map_err(Error::from)?;
        if !claim(&mut tx, blob, unit, &self.function).await? {
            return Ok(ObjectReport::new(unit.to_owned(), Outcome::AlreadyApplied));
        }
        if let Some(newer) = newer_sequencer(&mut tx, blob).await? {
            let detail = format!(
                "sequencer {} is older than {} already applied for this key",
                blob.sequencer.as_deref().unwrap_or_default(),
                newer.trim_start_matches('0')
            );
            let report = ObjectReport::new(unit.to_owned(), Outcome::Stale);
            record_object(
                &mut tx,
                blob,
                unit,
                Some(rule),
                None,
                &report,
                Some(&detail),
            )
            .await?;
            tx.commit().await.map_err(Error::from)?;
            return Ok(report);
        }

        let mut options = GetOptions::default();
        match (&blob.version, &blob.etag) {
            (Some(v), _) => options.version = Some(v.clone()),
            // The local file store does not take If-Match: compare its ETag instead.
            (None, Some(e)) if blob.store.starts_with("file://") => {
                let now = match store.head(path).await {
                    Ok(meta) => meta.e_tag,
                    Err(object_store::Error::NotFound { .. }) => None,
                    Err(e) => return Err(TransformError::Store(e.to_string())),
                };
                if now.as_deref().map(plain_etag).as_deref() != Some(e.as_str()) {
                    warn!(%unit, "the notified version is no longer in the store");
                    return Ok(ObjectReport::new(unit.to_owned(), Outcome::Gone));
                }
            }
            // S3 and Azure compare If-Match as sent, and their ETags are quoted.
            (None, Some(e)) => options.if_match = Some(format!("\"{e}\"")),
            (None, None) => {}
        }
        let got = match store.get_opts(path, options).await {
            Ok(g) => g,
            Err(
                object_store::Error::NotFound { .. } | object_store::Error::Precondition { .. },
            ) => {
                // Overwritten or deleted since the notification: its successor has its own.
                warn!(%unit, "the notified version is no longer in the store");
                return Ok(ObjectReport::new(unit.to_owned(), Outcome::Gone));
            }
            Err(e) => return Err(TransformError::Store(e.to_string())),
        };
        let stream = got.into_stream().map_err(std::io::Error::other);
        let bridge = SyncIoBridge::new(StreamReader::new(stream));

        create_staging(&mut tx).await?;
        let (chunks_tx, mut chunks) = mpsc::channel::<Chunk>(1);
        let (source, state) = Source::new(bridge);
        let reader = {
            let rule = rule.clone();
            let limits = self.limits.clone();
            let key = blob.key.clone();
            let chunk_records = self.cfg.chunk_records;
            tokio::task::spawn_blocking(move || {
                let mapper = Mapper::new(&rule, limits.clone(), Utc::now(), &key);
                let read_limits = ReadLimits {
                    max_record_bytes: limits.max_event_bytes + 1,
                };
                let fresh = || Chunk {
                    dropped: vec![0; rule.drops.len()],
                    ..Chunk::default()
                };
                let mut chunk = fresh();
                let mut bytes = 0usize;
                let result = read_object(source, &state, &rule, read_limits, |number, record| {
                    chunk.records += 1;
                    match mapper.map(number, record) {
                        Mapped::Event(e) => {
                            bytes += e.raw.len();
                            chunk.events.push(*e)
                        }
                        Mapped::Rejected(r) => {
                            bytes += r.raw.len();
                            chunk.rejected.push(r)
                        }
                        Mapped::Dropped(i) => chunk.dropped[i] += 1,
                    }
                    // Bounded by records and by bytes (records may be up to 256 KiB each).
                    if chunk.records as usize >= chunk_records || bytes >= CHUNK_BYTES {
                        bytes = 0;
                        let full = std::mem::replace(&mut chunk, fresh());
                        if chunks_tx.blocking_send(full).is_err() {
                            return Flow::Stop;
                        }
                    }
                    Flow::Continue
                });
                if result.is_ok() && chunks_tx.blocking_send(chunk).is_err() {
                    return (Err(ObjectError::Stopped), state);
                }
                (result, state)
            })
        };

        let mut report = ObjectReport::new(unit.to_owned(), Outcome::Loaded);
        let mut staged: u64 = 0;
        let mut tenants: HashMap<String, bool> = HashMap::new();
        let mut consumed: Result<(), Error> = Ok(());
        while let Some(chunk) = chunks.recv().await {
            let step = self
                .stage(
                    &mut tx,
                    unit,
                    rule,
                    chunk,
                    &mut tenants,
                    &mut report,
                    received_at,
                    isolate,
                )
                .await;
            match step {
                Ok(n) => staged += n,
                Err(e) => {
                    consumed = Err(e);
                    break;
                }
            }
        }
        drop(chunks);
        let (read, state) = reader
            .await
            .map_err(|e| TransformError::Store(format!("reader thread failed: {e}")))?;
        consumed?;
        let (compression, format) = match read {
            Ok(v) => v,
            Err(ObjectError::Source(e)) => return Err(TransformError::Store(e)),
            Err(ObjectError::Stopped) => {
                return Err(TransformError::Store("the reader stopped early".into()))
            }
            Err(whole) => {
                // Roll back what was loaded: the object is quarantined as a whole.
                tx.rollback().await.map_err(Error::from)?;
                let reason = match whole {
                    ObjectError::Corrupt(_) => RejectReason::CorruptArchive,
                    _ => RejectReason::UnknownFormat,
                };
                let detail = whole.to_string();
                return self
                    .quarantine_object(blob, unit, Some(rule), reason, &detail, &state.head())
                    .await;
            }
        };
        report.duplicates = staged.saturating_sub(report.loaded);
        record_object(
            &mut tx,
            blob,
            unit,
            Some(rule),
            Some((format.as_str(), compression.as_str())),
            &report,
            None,
        )
        .await?;
        tx.commit().await.map_err(Error::from)?;
        self.loader.nudge(report.deliveries);
        Ok(report)
    }

    /// Loads one chunk: partitions, tenant check, COPY into staging and merge, quarantine rows.
    /// Returns the number of events offered (loaded or duplicate).
    #[allow(clippy::too_many_arguments)]
    async fn stage(
        &self,
        tx: &mut PgConnection,
        unit: &str,
        rule: &Rule,
        chunk: Chunk,
        tenants: &mut HashMap<String, bool>,
        report: &mut ObjectReport,
        received_at: DateTime<Utc>,
        isolate: bool,
    ) -> Result<u64, Error> {
        report.records += chunk.records;
        for (i, n) in chunk.dropped.iter().enumerate().filter(|(_, n)| **n > 0) {
            *report
                .dropped
                .entry(rule.drops[i].name.clone())
                .or_default() += n;
        }
        let times: Vec<DateTime<Utc>> = chunk.events.iter().map(|e| e.time).collect();
        self.loader.ensure_partitions(&times).await?;
        let mut new: Vec<&str> = chunk
            .events
            .iter()
            .map(|e| e.tenant_id.as_str())
            .filter(|t| !tenants.contains_key(*t))
            .collect();
        new.sort_unstable();
        new.dedup();
        if !new.is_empty() {
            let active = active_tenant_ids(tx, &new).await?;
            for t in new {
                tenants.insert(t.to_owned(), active.contains(t));
            }
        }
        let (mut good, unknown): (Vec<&Event>, Vec<&Event>) = chunk
            .events
            .iter()
            .partition(|e| tenants.get(&e.tenant_id).copied().unwrap_or(false));
        // In key order, like every load, so overlapping loads cannot deadlock.
        good.sort_unstable_by(|a, b| a.key().cmp(&b.key()));
        let mut rejected = chunk.rejected;
        let mut offered = good.len() as u64;
        let mut fresh = Fresh::default();
        if isolate {
            let (loaded, refused) = insert_each(tx, &good, received_at, &mut fresh).await?;
            report.loaded += loaded;
            offered -= refused.len() as u64;
            rejected.extend(refused);
        } else {
            copy_to_staging(tx, &good).await?;
            // Merged chunk by chunk: PostgreSQL merges while the reader parses the next
            // chunk. (Partitions attach without conflicting with this transaction's inserts.)
            report.loaded += merge_staging(tx, received_at, &mut fresh).await?;
        }
        // Products, recently viewed and webhooks, chunk by chunk in the object's transaction.
        report.deliveries += derive(tx, &fresh, self.loader.config().recently_viewed)
            .await?
            .deliveries;
        rejected.extend(unknown.iter().map(|e| unknown_tenant(e)));
        for r in &rejected {
            *report.quarantined.entry(r.reason).or_default() += 1;
        }
        let rows: Vec<(&str, Rejection)> = rejected.into_iter().map(|r| (unit, r)).collect();
        insert_quarantine(tx, &rows, received_at).await?;
        #[cfg(all(feature = "fault-injection", debug_assertions))]
        if let Some(hook) = &self.faults {
            if hook(CrashPoint::MidObject) {
                return Err(Error::InjectedCrash(CrashPoint::MidObject));
            }
        }
        Ok(offered)
    }

    /// Records an object as quarantined as a whole and acknowledges it.
    async fn quarantine_object(
        &self,
        blob: &BlobCreated,
        unit: &str,
        rule: Option<&Rule>,
        reason: RejectReason,
        detail: &str,
        head: &[u8],
    ) -> Result<ObjectReport, TransformError> {
        let mut tx = self.pool.begin().await.map_err(Error::from)?;
        if !claim(&mut tx, blob, unit, &self.function).await? {
            return Ok(ObjectReport::new(unit.to_owned(), Outcome::AlreadyApplied));
        }
        let mut report = ObjectReport::new(unit.to_owned(), Outcome::Quarantined(reason));
        report.quarantined.insert(reason, 1);
        let rejection = Rejection {
            tenant_id: None,
            position: None,
            reason,
            detail: format!("{}/{}: {detail}", blob.store, blob.key),
            raw: head.to_vec(),
        };
        insert_quarantine(&mut tx, &[(unit, rejection)], Utc::now()).await?;
        record_object(&mut tx, blob, unit, rule, None, &report, Some(detail)).await?;
        tx.commit().await.map_err(Error::from)?;
        warn!(%unit, reason = %reason, %detail, "object quarantined");
        Ok(report)
    }

    /// Quarantines a notification that could not be read.
    pub async fn quarantine_notification(
        &self,
        unit: &str,
        raw: &[u8],
        detail: &str,
    ) -> Result<bool, Error> {
        self.loader
            .quarantine_unit(
                &self.function,
                unit,
                RejectReason::InvalidNotification,
                raw,
                detail,
            )
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

/// The ledger unit of an object version (bounded: a key of kilobytes is hashed).
pub fn unit_of(blob: &BlobCreated) -> String {
    let content = blob
        .version
        .as_deref()
        .or(blob.etag.as_deref())
        .unwrap_or("unversioned");
    ferry_shared::load::bounded_unit_key(format!("blob:{}/{}@{content}", blob.store, blob.key))
}

/// ETags compare without their quotes (and weak marker): S3 notifications send them bare,
/// HEAD responses quoted.
fn plain_etag(e: &str) -> String {
    e.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_owned()
}

/// Sequencers order events on one key when compared as strings after left-padding.
fn padded(sequencer: &str) -> String {
    format!("{sequencer:0>64}")
}

async fn claim(
    tx: &mut PgConnection,
    blob: &BlobCreated,
    unit: &str,
    function: &str,
) -> Result<bool, Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("{}\n{}", blob.store, blob.key))
        .execute(&mut *tx)
        .await?;
    let claimed = sqlx::query(
        "INSERT INTO ingest_ledger (unit, function) VALUES ($1, $2)
         ON CONFLICT (unit) DO NOTHING",
    )
    .bind(unit)
    .bind(function)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    Ok(claimed)
}

/// The highest sequencer already applied for the key, when it is newer than this one.
async fn newer_sequencer(
    tx: &mut PgConnection,
    blob: &BlobCreated,
) -> Result<Option<String>, Error> {
    let Some(seq) = blob.sequencer.as_deref() else {
        return Ok(None);
    };
    let newest: Option<String> =
        sqlx::query_scalar("SELECT max(sequencer) FROM blob_objects WHERE store = $1 AND key = $2")
            .bind(&blob.store)
            .bind(&blob.key)
            .fetch_one(&mut *tx)
            .await?;
    Ok(newest.filter(|n| *n > padded(seq)))
}

async fn record_object(
    tx: &mut PgConnection,
    blob: &BlobCreated,
    unit: &str,
    rule: Option<&Rule>,
    shape: Option<(&str, &str)>,
    report: &ObjectReport,
    detail: Option<&str>,
) -> Result<(), Error> {
    let outcome = match report.outcome {
        Outcome::Stale => "stale",
        Outcome::Quarantined(_) => "quarantined",
        _ => "loaded",
    };
    let content_id = blob
        .version
        .as_deref()
        .or(blob.etag.as_deref())
        .unwrap_or("unversioned");
    let dropped: u64 = report.dropped.values().sum();
    let dropped_by = serde_json::to_string(&report.dropped).unwrap_or_else(|_| "{}".into());
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO blob_objects (store, key, content_id, unit, sequencer, size, source_rule,
             format, compression, outcome, records, loaded, duplicates, quarantined, dropped,
             dropped_by, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16::jsonb, $17)
         ON CONFLICT (store, key, content_id) DO UPDATE SET
             unit = EXCLUDED.unit, sequencer = EXCLUDED.sequencer, outcome = EXCLUDED.outcome,
             records = EXCLUDED.records, loaded = EXCLUDED.loaded,
             duplicates = EXCLUDED.duplicates, quarantined = EXCLUDED.quarantined,
             dropped = EXCLUDED.dropped, dropped_by = EXCLUDED.dropped_by,
             detail = EXCLUDED.detail, applied_at = now()",
    )
    .bind(&blob.store)
    .bind(&blob.key)
    .bind(content_id)
    .bind(unit)
    .bind(blob.sequencer.as_deref().map(padded))
    .bind(blob.size.map(n))
    .bind(rule.map(|r| r.name.as_str()))
    .bind(shape.map(|s| s.0))
    .bind(shape.map(|s| s.1))
    .bind(outcome)
    .bind(n(report.records))
    .bind(n(report.loaded))
    .bind(n(report.duplicates))
    .bind(n(report.quarantined_total()))
    .bind(n(dropped))
    .bind(dropped_by)
    .bind(detail)
    .execute(&mut *tx)
    .await?;
    let count = |v: u64| i32::try_from(v).unwrap_or(i32::MAX);
    sqlx::query(
        "UPDATE ingest_ledger SET events = $2, duplicates = $3, quarantined = $4 WHERE unit = $1",
    )
    .bind(unit)
    .bind(count(report.loaded))
    .bind(count(report.duplicates))
    .bind(count(report.quarantined_total()))
    .execute(&mut *tx)
    .await?;
    Ok(())
}
