//! The per-object pipeline: pin → claim → fetch → stream → finish, each a step of its own.
//!
//! - **pin**: the notified version or ETag (or, given only a key, what is there now);
//! - **claim**: the object's load transaction, the key's advisory lock, the ledger claim, the
//!   sequencer check (an older notification is recorded `stale`);
//! - **fetch**: a GET pinned to that version (gone since: nothing to do);
//! - **stream**: a blocking thread reads and maps records into bounded chunks while each chunk
//!   is added to the load ([`ferry_shared::load::Load::add`]; derived state is written in bulk
//!   by the load, every 500,000 kept events and at the commit);
//! - **finish**: the `blob_objects` row, the ledger counts and the commit — or, when the object
//!   as a whole is unreadable, a rollback and the object quarantined.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use ferry_shared::ledger::{self, Counts};
use ferry_shared::load::Load;
use ferry_shared::{BlobCreated, Error, Event, Limits, RejectReason, Rejection};
use futures_util::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetResult, ObjectStore, ObjectStoreExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::io::{StreamReader, SyncIoBridge};
use tracing::{info, warn};

use crate::format::{Compression, Format};
use crate::map::{Mapped, Mapper};
use crate::read::{read_object, Flow, ObjectError, ReadLimits, ReaderState, StoreReader};
use crate::report::{ObjectReport, Outcome, TransformError};
use crate::rules::Rule;
use crate::sql;
use crate::Transform;

#[cfg(fault_injection)]
use ferry_shared::faults::CrashPoint;

/// Most bytes of records in one chunk.
const CHUNK_BYTES: usize = 32 * 1024 * 1024;

/// A chunk handed from the reader thread to the loader.
#[derive(Debug, Default)]
struct Chunk {
    records: u64,
    events: Vec<Event>,
    rejected: Vec<Rejection>,
    /// Records dropped, by index of the rule's drop rules.
    dropped: Vec<u64>,
}

/// What the reader thread ends with: how the object was read (or why it could not be), and
/// its first bytes.
type ReadResult = (Result<(Compression, Format), ObjectError>, ReaderState);

/// One object being loaded: which version, under which rule, in which transaction, and its
/// report so far.
struct ObjectLoad<'t> {
    blob: &'t BlobCreated,
    rule: &'t Rule,
    load: Load<'t>,
    report: ObjectReport,
    /// Events offered so far (loaded now or stored before).
    offered: u64,
}

/// How an object's load goes in: first as the loader chooses (inserts without `ON CONFLICT`
/// unless it met stored events lately), then, if an event was stored before, deduplicating up
/// front; event by event when the database refuses one for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    First,
    Cautious,
    Isolating,
}

/// The first step's answer: an object to load, or the report of one that needs nothing more.
enum Claimed<'t> {
    Object(Box<ObjectLoad<'t>>),
    Done(ObjectReport),
}

impl Transform {
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
                let detail = format!("the key cannot be addressed in the store: {e}");
                let reason = RejectReason::InvalidNotification;
                return self
                    .quarantine_object(&pinned, None, reason, &detail, &[])
                    .await;
            }
        };
        let _permit = self
            .objects
            .acquire()
            .await
            .map_err(|e| TransformError::Store(e.to_string()))?;
        if !pin(&mut pinned, store.as_ref(), &path).await? {
            return Ok(ObjectReport::new(unit_of(&pinned), Outcome::Gone));
        }
        let mut attempt = Attempt::First;
        let report = loop {
            match self.load_object(&pinned, &store, &path, attempt).await {
                Err(TransformError::Database(Error::Conflict(e))) if attempt == Attempt::First => {
                    // Some event of the object was stored before (an overlapping file): load
                    // it again deduplicating every chunk with ON CONFLICT.
                    info!(unit = %unit_of(&pinned), error = %e, "reloading the object with ON CONFLICT");
                    attempt = Attempt::Cautious;
                }
                Err(TransformError::Database(Error::Permanent(e)))
                    if attempt != Attempt::Isolating =>
                {
                    // The database refuses some record for good (a value jsonb cannot hold,
                    // say): load the object again event by event, quarantining only what it
                    // refuses.
                    warn!(unit = %unit_of(&pinned), error = %e, "reloading the object event by event");
                    attempt = Attempt::Isolating;
                }
                other => break other?,
            }
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

    /// Loads one pinned object version: claim → fetch → stream → finish.
    async fn load_object(
        &self,
        blob: &BlobCreated,
        store: &Arc<dyn ObjectStore>,
        path: &ObjectPath,
        attempt: Attempt,
    ) -> Result<ObjectReport, TransformError> {
        let unit = unit_of(blob);
        if ledger::applied(&self.pool, &unit).await? {
            return Ok(ObjectReport::new(unit, Outcome::AlreadyApplied));
        }
        let Some(rule) = self.rules.rule_for(&blob.store, &blob.key) else {
            let detail = format!(
                "no [[source]] in the sources file covers {}/{}",
                blob.store, blob.key
            );
            let reason = RejectReason::NoSourceRule;
            return self
                .quarantine_object(blob, None, reason, &detail, &[])
                .await;
        };
        let mut object = match self.claim(blob, unit.clone(), rule, attempt).await? {
            Claimed::Object(object) => object,
            Claimed::Done(report) => return Ok(report),
        };
        let Some(got) = fetch(blob, &object.report.unit, store.as_ref(), path).await? else {
            return Ok(ObjectReport::new(unit, Outcome::Gone));
        };
        let read = self.stream(&mut object, got).await?;
        self.finish(*object, read).await
    }

    /// Opens the object's transaction and claims its unit; records an older notification as
    /// stale.
    async fn claim<'t>(
        &'t self,
        blob: &'t BlobCreated,
        unit: String,
        rule: &'t Rule,
        attempt: Attempt,
    ) -> Result<Claimed<'t>, TransformError> {
        let mut load = self
            .loader
            .begin(attempt == Attempt::Isolating)
            .await?
            .chunked();
        if attempt == Attempt::Cautious {
            load = load.cautious();
        }
        let timeout = self.cfg.timeout.as_millis();
        sqlx::query(&format!("SET LOCAL statement_timeout = {timeout}"))
            .execute(load.conn())
            .await?;
        sql::lock_key(load.conn(), blob).await?;
        if !ledger::claim_one(load.conn(), &self.function, &unit).await? {
            return Ok(Claimed::Done(ObjectReport::new(
                unit,
                Outcome::AlreadyApplied,
            )));
        }
        if let Some(newer) = sql::newer_sequencer(load.conn(), blob).await? {
            let detail = format!(
                "sequencer {} is older than {} already applied for this key",
                blob.sequencer.as_deref().unwrap_or_default(),
                newer.trim_start_matches('0')
            );
            let report = ObjectReport::new(unit, Outcome::Stale);
            sql::record_object(load.conn(), blob, Some(rule), None, &report, Some(&detail)).await?;
            load.commit(&[counts(&report, &self.function)]).await?;
            return Ok(Claimed::Done(report));
        }
        Ok(Claimed::Object(Box::new(ObjectLoad {
            blob,
            rule,
            load,
            report: ObjectReport::new(unit, Outcome::Loaded),
            offered: 0,
        })))
    }

    /// Reads the object on a blocking thread and adds each chunk to the load as it comes.
    async fn stream(
        &self,
        object: &mut ObjectLoad<'_>,
        got: GetResult,
    ) -> Result<ReadResult, TransformError> {
        let (chunks_tx, mut chunks) = mpsc::channel::<Chunk>(1);
        let (spent_tx, spent) = std::sync::mpsc::channel::<Chunk>();
        let reader = spawn_reader(
            got,
            object.rule.clone(),
            self.limits.clone(),
            object.blob.key.clone(),
            self.cfg.chunk_records,
            (chunks_tx, spent),
        );
        let mut consumed: Result<(), Error> = Ok(());
        while let Some(mut chunk) = chunks.recv().await {
            if let Err(e) = self.add_chunk(object, &mut chunk).await {
                consumed = Err(e);
                break;
            }
            // Freed by the reader thread, which allocated it: freeing 10,000 events here took
            // half of this task's time (`perf`: 0.67 of 1.36 s for 1,000,000 events), during
            // which PostgreSQL waited for the next chunk. Once the reader is done, here.
            let _ = spent_tx.send(chunk);
        }
        // The reader stops at its next chunk once nobody receives.
        drop(chunks);
        let read = reader
            .await
            .map_err(|e| TransformError::Store(format!("reader thread failed: {e}")))?;
        consumed?;
        Ok(read)
    }

    /// Adds one chunk: its events and rejected records, counted in the report.
    async fn add_chunk(&self, object: &mut ObjectLoad<'_>, chunk: &mut Chunk) -> Result<(), Error> {
        let report = &mut object.report;
        report.records += chunk.records;
        let drops = chunk.dropped.iter().enumerate().filter(|(_, n)| **n > 0);
        for (i, n) in drops {
            let name = object.rule.drops[i].name.clone();
            *report.dropped.entry(name).or_default() += n;
        }
        let added = object
            .load
            .add(
                &report.unit,
                &chunk.events,
                std::mem::take(&mut chunk.rejected),
            )
            .await?;
        report.loaded += added.loaded;
        object.offered += added.offered;
        for (reason, n) in added.quarantined {
            *report.quarantined.entry(reason).or_default() += u64::from(n);
        }
        #[cfg(fault_injection)]
        if let Some(hook) = &self.faults {
            if hook(CrashPoint::MidObject) {
                return Err(Error::InjectedCrash(CrashPoint::MidObject));
            }
        }
        Ok(())
    }

    /// Commits a read object, or quarantines one that could not be read as a whole.
    async fn finish(
        &self,
        object: ObjectLoad<'_>,
        (read, state): ReadResult,
    ) -> Result<ObjectReport, TransformError> {
        let ObjectLoad {
            blob,
            rule,
            mut load,
            mut report,
            offered,
        } = object;
        let (compression, format) = match read {
            Ok(shape) => shape,
            Err(ObjectError::Store(e)) => return Err(TransformError::Store(e)),
            Err(ObjectError::Stopped) => {
                return Err(TransformError::Store("the reader stopped early".into()))
            }
            Err(whole) => {
                // Roll back what was loaded: the object is quarantined as a whole.
                load.rollback().await?;
                let reason = match whole {
                    ObjectError::Corrupt(_) => RejectReason::CorruptArchive,
                    _ => RejectReason::UnknownFormat,
                };
                let detail = whole.to_string();
                return self
                    .quarantine_object(blob, Some(rule), reason, &detail, &state.head())
                    .await;
            }
        };
        report.duplicates = offered.saturating_sub(report.loaded);
        let shape = (format.as_str(), compression.as_str());
        sql::record_object(load.conn(), blob, Some(rule), Some(shape), &report, None).await?;
        report.deliveries = load.commit(&[counts(&report, &self.function)]).await?;
        Ok(report)
    }

    /// Records an object as quarantined as a whole and acknowledges it.
    pub(crate) async fn quarantine_object(
        &self,
        blob: &BlobCreated,
        rule: Option<&Rule>,
        reason: RejectReason,
        detail: &str,
        head: &[u8],
    ) -> Result<ObjectReport, TransformError> {
        let unit = unit_of(blob);
        let mut load = self.loader.begin(false).await?;
        sql::lock_key(load.conn(), blob).await?;
        if !ledger::claim_one(load.conn(), &self.function, &unit).await? {
            return Ok(ObjectReport::new(unit, Outcome::AlreadyApplied));
        }
        let mut report = ObjectReport::new(unit, Outcome::Quarantined(reason));
        report.quarantined.insert(reason, 1);
        let rejection = Rejection {
            tenant_id: None,
            position: None,
            reason,
            detail: format!("{}/{}: {detail}", blob.store, blob.key),
            raw: head.to_vec(),
        };
        load.add(&report.unit, &[], vec![rejection]).await?;
        sql::record_object(load.conn(), blob, rule, None, &report, Some(detail)).await?;
        load.commit(&[counts(&report, &self.function)]).await?;
        warn!(unit = %report.unit, reason = %reason, %detail, "object quarantined");
        Ok(report)
    }
}

/// The ledger counts of an object's report.
fn counts<'a>(report: &'a ObjectReport, function: &'a str) -> Counts<'a> {
    Counts {
        unit: &report.unit,
        function,
        loaded: report.loaded,
        duplicates: report.duplicates,
        quarantined: report.quarantined_total(),
    }
}

/// Pins a notification that names no version or ETag to what the store holds now (the local
/// watcher and some callers give only a key). False when nothing is there.
async fn pin(
    blob: &mut BlobCreated,
    store: &dyn ObjectStore,
    path: &ObjectPath,
) -> Result<bool, TransformError> {
    if blob.version.is_some() || blob.etag.is_some() {
        return Ok(true);
    }
    match store.head(path).await {
        Ok(meta) => {
            blob.etag = meta.e_tag.as_deref().map(plain_etag);
            blob.version = meta.version;
            blob.size = Some(meta.size);
            Ok(true)
        }
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(TransformError::Store(e.to_string())),
    }
}

/// GETs the notified version; `None` when it is no longer in the store (overwritten or deleted
/// since the notification: its successor has its own).
async fn fetch(
    blob: &BlobCreated,
    unit: &str,
    store: &dyn ObjectStore,
    path: &ObjectPath,
) -> Result<Option<GetResult>, TransformError> {
    let gone = || {
        warn!(%unit, "the notified version is no longer in the store");
        Ok(None)
    };
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
                return gone();
            }
        }
        // S3 and Azure compare If-Match as sent, and their ETags are quoted.
        (None, Some(e)) => options.if_match = Some(format!("\"{e}\"")),
        (None, None) => {}
    }
    match store.get_opts(path, options).await {
        Ok(got) => Ok(Some(got)),
        Err(object_store::Error::NotFound { .. } | object_store::Error::Precondition { .. }) => {
            gone()
        }
        Err(e) => Err(TransformError::Store(e.to_string())),
    }
}

/// Starts the reader thread: the object's bytes are decoded, parsed and mapped there, and
/// handed over in chunks bounded by records and bytes (records may be up to 256 KiB each),
/// each sorted by event key; chunks the loader is done with come back on `spent`, to be freed
/// here.
fn spawn_reader(
    got: GetResult,
    rule: Rule,
    limits: Limits,
    key: String,
    chunk_records: usize,
    (chunks, spent): (mpsc::Sender<Chunk>, std::sync::mpsc::Receiver<Chunk>),
) -> JoinHandle<ReadResult> {
    let stream = got.into_stream().map_err(std::io::Error::other);
    let bridge = SyncIoBridge::new(StreamReader::new(stream));
    let (input, state) = StoreReader::new(bridge);
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
        let result = read_object(input, &state, &rule, read_limits, |number, record| {
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
            if chunk.records as usize >= chunk_records || bytes >= CHUNK_BYTES {
                bytes = 0;
                let full = std::mem::replace(&mut chunk, fresh());
                if chunks.blocking_send(sorted(full)).is_err() {
                    return Flow::Stop;
                }
                spent.try_iter().for_each(drop);
            }
            Flow::Continue
        });
        if result.is_ok() && chunks.blocking_send(sorted(chunk)).is_err() {
            return (Err(ObjectError::Stopped), state);
        }
        (result, state)
    })
}

/// A chunk with its events in key order, the order the loader inserts them in: sorting here,
/// on the reader thread, leaves the loader a pass over sorted input while PostgreSQL waits.
fn sorted(mut chunk: Chunk) -> Chunk {
    chunk.events.sort_by(|a, b| a.key().cmp(&b.key()));
    chunk
}

/// The ledger unit of an object version (bounded: a key of kilobytes is hashed).
pub fn unit_of(blob: &BlobCreated) -> String {
    let content = blob
        .version
        .as_deref()
        .or(blob.etag.as_deref())
        .unwrap_or("unversioned");
    ledger::bounded_unit_key(format!("blob:{}/{}@{content}", blob.store, blob.key))
}

/// ETags compare without their quotes (and weak marker): S3 notifications send them bare,
/// HEAD responses quoted.
fn plain_etag(e: &str) -> String {
    e.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_owned()
}
