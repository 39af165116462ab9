//! The loader every function uses: validated events plus the delivery units they came from go
//! into PostgreSQL in ONE transaction — ledger rows, events (deduplicated), quarantine rows.
//!
//! Protocol per transaction:
//! 1. claim the units in `ingest_ledger` (`ON CONFLICT DO NOTHING RETURNING`): a unit that is
//!    already there was applied before and has no effect; a concurrent delivery of the same
//!    unit waits on our uncommitted row and then finds it;
//! 2. look up the tenants (`FOR SHARE`, so a tenant being changed makes us wait, bounded
//!    by `lock_timeout`, and retry later rather than load against a moving target);
//! 3. insert each unit's events: `INSERT … SELECT FROM unnest(…)` for small units, binary COPY
//!    into a temporary staging table and one merge for large ones, both `ON CONFLICT DO NOTHING`
//!    on `(tenant_id, source, event_id, time)`;
//! 4. insert quarantine rows; apply the derived state of the events that were new (products,
//!    recently viewed, webhook outbox: [`derive`]); record per-unit counts in the ledger;
//!    commit, then nudge the fanout function if deliveries were enqueued.
//!
//! Partitions are created before the transaction, in their own short one, so partition DDL
//! never holds locks for the length of a load.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Postgres, Transaction};
use tracing::{debug, info};

use crate::copy::BinaryCopy;
use crate::db;
use crate::error::Error;
use crate::event::{Event, RejectReason, Rejection};
use crate::validate::Parsed;

#[cfg(all(feature = "fault-injection", debug_assertions))]
use crate::faults::{CrashPoint, FaultHook};

/// Returns early with an injected crash when a test asks for one. Compiles to nothing in
/// release builds and without the `fault-injection` feature.
macro_rules! crash_point {
    ($self:ident, $point:ident) => {
        #[cfg(all(feature = "fault-injection", debug_assertions))]
        {
            if let Some(hook) = &$self.faults {
                if hook(CrashPoint::$point) {
                    return Err(Error::InjectedCrash(CrashPoint::$point));
                }
            }
        }
    };
}

/// Longest ledger unit key stored as it is. The ledger's key is a btree entry, which must stay
/// under ~2.7 kB; a queue message id or an object key can be longer.
pub const MAX_UNIT_KEY_BYTES: usize = 512;

/// A ledger unit key that fits the ledger: `key` itself when it is at most
/// [`MAX_UNIT_KEY_BYTES`] long, else its first 200 bytes (cut at a character boundary), `…#`,
/// and the SHA-256 of the whole key in hex. Distinct keys stay distinct, a redelivery maps to
/// the same key, and a person can still tell where the unit came from.
pub fn bounded_unit_key(key: String) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    if key.len() <= MAX_UNIT_KEY_BYTES {
        return key;
    }
    let mut cut = 200;
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = String::with_capacity(cut + 4 + 64);
    out.push_str(&key[..cut]);
    out.push_str("…#");
    for b in Sha256::digest(key.as_bytes()) {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// One delivery unit and what was read from it.
#[derive(Debug)]
pub struct Unit {
    /// Ledger key, e.g. `queue:<message id>`; unique across all units ever delivered, and
    /// at most [`MAX_UNIT_KEY_BYTES`] (+ 70 for a hash) long: see [`bounded_unit_key`].
    pub key: String,
    pub parsed: Parsed,
}

/// What happened to one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitReport {
    pub key: String,
    /// False when the unit's ledger row already existed: nothing was written.
    pub applied: bool,
    /// Valid events offered.
    pub offered: u64,
    /// Events inserted.
    pub loaded: u64,
    /// Valid events that were already stored (producer retries, overlapping units).
    pub duplicates: u64,
    /// Quarantined pieces of input, by reason.
    pub quarantined: BTreeMap<RejectReason, u32>,
}

/// Loader settings.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// Width of one `events` partition, in seconds.
    pub partition_secs: i64,
    /// A unit with at least this many events is loaded with binary COPY.
    pub copy_threshold: usize,
    /// Products kept per user in `recently_viewed`.
    pub recently_viewed: u32,
}

impl LoaderConfig {
    pub fn from_config(cfg: &crate::config::Config) -> LoaderConfig {
        LoaderConfig {
            partition_secs: cfg.partition_secs(),
            copy_threshold: cfg.copy_threshold,
            recently_viewed: cfg.recently_viewed,
        }
    }
}

/// Called after a commit that enqueued webhook deliveries (with their number): sends the
/// fanout function a nudge. Best effort: the fanout's timer sweep is the safety net.
pub type Nudge = std::sync::Arc<dyn Fn(u64) + Send + Sync>;

/// Loads delivery units into PostgreSQL. Cheap to share; build once per process.
pub struct Loader {
    pool: PgPool,
    cfg: LoaderConfig,
    /// Partition slots known to exist, so the common case costs no round trip.
    known_partitions: Mutex<HashSet<i64>>,
    nudge: Option<Nudge>,
    #[cfg(all(feature = "fault-injection", debug_assertions))]
    faults: Option<FaultHook>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Loader {
    pub fn new(pool: PgPool, cfg: LoaderConfig) -> Loader {
        Loader {
            pool,
            cfg,
            known_partitions: Mutex::new(HashSet::new()),
            nudge: None,
            #[cfg(all(feature = "fault-injection", debug_assertions))]
            faults: None,
        }
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// Tells the fanout function that `deliveries` were enqueued (after the commit; no-op
    /// without a nudge or deliveries).
    pub fn nudge(&self, deliveries: u64) {
        if deliveries > 0 {
            if let Some(nudge) = &self.nudge {
                nudge(deliveries);
            }
        }
    }

    /// Sends a nudge after every commit that enqueued deliveries.
    pub fn with_nudge(mut self, nudge: Nudge) -> Loader {
        self.nudge = Some(nudge);
        self
    }

    /// Installs a crash-point hook (tests only).
    #[cfg(all(feature = "fault-injection", debug_assertions))]
    pub fn with_faults(mut self, hook: FaultHook) -> Loader {
        self.faults = Some(hook);
        self
    }

    /// Applies `units` in one transaction. On error nothing was written (or, for an injected
    /// `AfterCommit` crash, everything was) and the caller decides about redelivery.
    pub async fn load(&self, function: &str, units: &[Unit]) -> Result<Vec<UnitReport>, Error> {
        self.load_with(function, units, false).await
    }

    /// Like [`Loader::load`], but inserts each event under its own savepoint, so an event the
    /// database refuses for good (SQLSTATE class 22/23/54) is quarantined as
    /// `database_rejected` and the rest of its unit still loads. Slow; for the rare unit whose
    /// normal load failed permanently.
    pub async fn load_isolating(
        &self,
        function: &str,
        units: &[Unit],
    ) -> Result<Vec<UnitReport>, Error> {
        self.load_with(function, units, true).await
    }

    async fn load_with(
        &self,
        function: &str,
        units: &[Unit],
        isolate: bool,
    ) -> Result<Vec<UnitReport>, Error> {
        let received_at = Utc::now();
        let times: Vec<DateTime<Utc>> = units
            .iter()
            .flat_map(|u| u.parsed.events.iter().map(|e| e.time))
            .collect();
        self.ensure_partitions(&times).await?;
        let result = self.load_tx(function, units, received_at, isolate).await;
        if let Err(Error::Transient(sqlx::Error::Database(e))) = &result {
            if e.code().as_deref() == Some("23514") {
                // A partition we believed in is gone (retention): forget what we know.
                self.known_partitions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
            }
        }
        result
    }

    async fn load_tx(
        &self,
        function: &str,
        units: &[Unit],
        received_at: DateTime<Utc>,
        isolate: bool,
    ) -> Result<Vec<UnitReport>, Error> {
        let mut tx = self.pool.begin().await?;
        let keys: Vec<&str> = units.iter().map(|u| u.key.as_str()).collect();
        let claimed: HashSet<String> = sqlx::query_scalar(
            "INSERT INTO ingest_ledger (unit, function)
             SELECT u, $2 FROM unnest($1::text[]) AS u
             ON CONFLICT (unit) DO NOTHING RETURNING unit",
        )
        .bind(&keys)
        .bind(function)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        crash_point!(self, AfterClaim);

        let claimed_units: Vec<&Unit> = units.iter().filter(|u| claimed.contains(&u.key)).collect();
        let active = active_tenants(&mut tx, &claimed_units).await?;

        let mut reports = Vec::with_capacity(units.len());
        let mut quarantine: Vec<(&str, Rejection)> = Vec::new();
        let mut fresh = Fresh::default();
        // Units in order of their smallest event key, so two transactions holding copies of the
        // same events (producer retries) insert them in the same order and cannot deadlock.
        let mut ordered: Vec<&Unit> = units.iter().collect();
        ordered.sort_by_cached_key(|u| u.parsed.events.iter().map(Event::key).min());
        for unit in ordered {
            if !claimed.contains(&unit.key) {
                reports.push(UnitReport {
                    key: unit.key.clone(),
                    applied: false,
                    offered: 0,
                    loaded: 0,
                    duplicates: 0,
                    quarantined: BTreeMap::new(),
                });
                continue;
            }
            let (good, unknown): (Vec<&Event>, Vec<&Event>) = unit
                .parsed
                .events
                .iter()
                .partition(|e| active.contains(&e.tenant_id));
            let (loaded, refused) = if isolate {
                insert_each(&mut tx, &good, received_at, &mut fresh).await?
            } else {
                (
                    self.insert_events(&mut tx, &good, received_at, &mut fresh)
                        .await?,
                    Vec::new(),
                )
            };
            let stored = (good.len() - refused.len()) as u64;
            let mut rejected: Vec<Rejection> = unit.parsed.rejected.clone();
            rejected.extend(unknown.iter().map(|e| unknown_tenant(e)));
            rejected.extend(refused);
            let mut by_reason = BTreeMap::new();
            for r in &rejected {
                *by_reason.entry(r.reason).or_insert(0u32) += 1;
            }
            quarantine.extend(rejected.into_iter().map(|r| (unit.key.as_str(), r)));
            reports.push(UnitReport {
                key: unit.key.clone(),
                applied: true,
                offered: stored,
                loaded,
                duplicates: stored - loaded,
                quarantined: by_reason,
            });
        }
        insert_quarantine(&mut tx, &quarantine, received_at).await?;
        let derived = derive(&mut tx, &fresh, self.cfg.recently_viewed).await?;
        record_counts(&mut tx, &reports).await?;
        crash_point!(self, AfterLoad);
        tx.commit().await?;
        crash_point!(self, AfterCommit);
        self.nudge(derived.deliveries);
        for r in reports.iter().filter(|r| r.applied) {
            debug!(unit = %r.key, loaded = r.loaded, duplicates = r.duplicates,
                   quarantined = r.quarantined.values().sum::<u32>(), "unit applied");
        }
        Ok(reports)
    }

    /// Records a whole unit as rejected (by the database, for a permanent error that validation
    /// could not foresee; or as unreadable), so it is acknowledged instead of redelivered
    /// forever. False when the unit had already been applied.
    pub async fn quarantine_unit(
        &self,
        function: &str,
        key: &str,
        reason: RejectReason,
        raw: &[u8],
        detail: &str,
    ) -> Result<bool, Error> {
        // Whatever the caller built (a notification's `queue:<message id>` too) fits the ledger.
        let key = bounded_unit_key(key.to_owned());
        let key = key.as_str();
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(
            "INSERT INTO ingest_ledger (unit, function, quarantined) VALUES ($1, $2, 1)
             ON CONFLICT (unit) DO NOTHING",
        )
        .bind(key)
        .bind(function)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if claimed {
            let rejection = Rejection {
                tenant_id: None,
                position: None,
                reason,
                detail: detail.to_owned(),
                raw: raw.to_vec(),
            };
            insert_quarantine(&mut tx, &[(key, rejection)], Utc::now()).await?;
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Makes sure the `events` partitions holding `times` exist, each created in its own short
    /// transaction (never inside a load's). Known partitions cost nothing.
    pub async fn ensure_partitions(&self, times: &[DateTime<Utc>]) -> Result<(), Error> {
        let width = self.cfg.partition_secs;
        let missing: Vec<i64> = {
            let known = self
                .known_partitions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let mut slots: Vec<i64> = times
                .iter()
                .map(|t| db::slot_start(*t, width))
                .filter(|s| !known.contains(s))
                .collect();
            slots.sort_unstable();
            slots.dedup();
            slots
        };
        if missing.is_empty() {
            return Ok(());
        }
        // Partition upkeep failing is never the input's fault: retry, never quarantine.
        let created = db::ensure_partitions(&self.pool, &missing, width)
            .await
            .map_err(|e| match e {
                Error::Permanent(e) => Error::Transient(e),
                other => other,
            })?;
        if created > 0 {
            info!(created, "created events partitions");
        }
        self.known_partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(missing);
        Ok(())
    }

    async fn insert_events(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        events: &[&Event],
        received_at: DateTime<Utc>,
        fresh: &mut Fresh,
    ) -> Result<u64, Error> {
        // Concurrent loads of overlapping events (producer retries in different batches) wait
        // on each other's uncommitted keys; inserting in key order keeps them from deadlocking.
        let mut events = events.to_vec();
        events.sort_unstable_by(|a, b| a.key().cmp(&b.key()));
        let events = events.as_slice();
        if events.is_empty() {
            Ok(0)
        } else if events.len() >= self.cfg.copy_threshold {
            insert_copy(tx, events, received_at, fresh).await
        } else {
            insert_unnest(tx, events, received_at, fresh).await
        }
    }
}

const EVENT_COLUMNS: &str = "tenant_id, source, event_id, type, subject, time, received_at, \
     user_id, session_id, datacontenttype, dataschema, extensions, data, data_base64";

/// Small units: one `INSERT … SELECT FROM unnest(…)` with every column as an array parameter.
pub async fn insert_unnest(
    conn: &mut PgConnection,
    events: &[&Event],
    received_at: DateTime<Utc>,
    fresh: &mut Fresh,
) -> Result<u64, Error> {
    fn col<'e, T: ?Sized>(events: &[&'e Event], f: impl Fn(&'e Event) -> &'e T) -> Vec<&'e T> {
        events.iter().map(|e| f(e)).collect()
    }
    fn opt<'e>(
        events: &[&'e Event],
        f: impl Fn(&'e Event) -> Option<&'e str>,
    ) -> Vec<Option<&'e str>> {
        events.iter().map(|e| f(e)).collect()
    }
    let sql = returning_fresh(&format!(
        "INSERT INTO events ({EVENT_COLUMNS})
         SELECT t, s, i, ty, sub, tm, $14, u, se, dct, ds, ext::jsonb, d::jsonb, db
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::timestamptz[], $7::text[], $8::text[], $9::text[], $10::text[],
                     $11::text[], $12::text[], $13::text[])
              AS x(t, s, i, ty, sub, tm, u, se, dct, ds, ext, d, db)
         ON CONFLICT DO NOTHING"
    ));
    let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.time).collect();
    let row: FreshRow = sqlx::query_as(&sql)
        .bind(col(events, |e| e.tenant_id.as_str()))
        .bind(col(events, |e| e.source.as_str()))
        .bind(col(events, |e| e.id.as_str()))
        .bind(col(events, |e| e.ty.as_str()))
        .bind(opt(events, |e| e.subject.as_deref()))
        .bind(times)
        .bind(opt(events, |e| e.user_id.as_deref()))
        .bind(opt(events, |e| e.session_id.as_deref()))
        .bind(opt(events, |e| e.datacontenttype.as_deref()))
        .bind(opt(events, |e| e.dataschema.as_deref()))
        .bind(opt(events, |e| e.extensions.as_deref()))
        .bind(opt(events, |e| e.data.as_deref().map(|d| d.get())))
        .bind(opt(events, |e| e.data_base64.as_deref()))
        .bind(received_at)
        .fetch_one(&mut *conn)
        .await?;
    Ok(fresh.absorb(row))
}

/// Large units: binary COPY into a per-connection temporary staging table, then one merge.
pub async fn insert_copy(
    conn: &mut PgConnection,
    events: &[&Event],
    received_at: DateTime<Utc>,
    fresh: &mut Fresh,
) -> Result<u64, Error> {
    create_staging(conn).await?;
    copy_to_staging(conn, events).await?;
    merge_staging(conn, received_at, fresh).await
}

/// Creates the connection's temporary staging table `ferry_staging`, if needed.
pub async fn create_staging(conn: &mut PgConnection) -> Result<(), Error> {
    sqlx::query("SET LOCAL client_min_messages = warning")
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "CREATE TEMP TABLE IF NOT EXISTS ferry_staging (
             tenant_id text, source text, event_id text, type text, subject text,
             time timestamptz, user_id text, session_id text, datacontenttype text,
             dataschema text, extensions text, data text, data_base64 text)",
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Appends events to the staging table with one binary COPY.
pub async fn copy_to_staging(conn: &mut PgConnection, events: &[&Event]) -> Result<(), Error> {
    if events.is_empty() {
        return Ok(());
    }
    let bytes: usize = events.iter().map(|e| e.raw.len() + 64).sum();
    let mut copy = BinaryCopy::with_capacity(bytes);
    for e in events {
        copy.row(13);
        copy.text(Some(&e.tenant_id));
        copy.text(Some(&e.source));
        copy.text(Some(&e.id));
        copy.text(Some(&e.ty));
        copy.text(e.subject.as_deref());
        copy.timestamptz(e.time);
        copy.text(e.user_id.as_deref());
        copy.text(e.session_id.as_deref());
        copy.text(e.datacontenttype.as_deref());
        copy.text(e.dataschema.as_deref());
        copy.text(e.extensions.as_deref());
        copy.text(e.data.as_deref().map(|d| d.get()));
        copy.text(e.data_base64.as_deref());
    }
    let mut sink = conn
        .copy_in_raw("COPY ferry_staging FROM STDIN (FORMAT binary)")
        .await?;
    sink.send(copy.finish()).await?;
    sink.finish().await?;
    Ok(())
}

/// Moves the staging rows into `events` (deduplicated) and empties the staging table.
pub async fn merge_staging(
    conn: &mut PgConnection,
    received_at: DateTime<Utc>,
    fresh: &mut Fresh,
) -> Result<u64, Error> {
    let sql = returning_fresh(&format!(
        "INSERT INTO events ({EVENT_COLUMNS})
         SELECT tenant_id, source, event_id, type, subject, time, $1, user_id, session_id,
                datacontenttype, dataschema, extensions::jsonb, data::jsonb, data_base64
         FROM ferry_staging
         ON CONFLICT DO NOTHING"
    ));
    let row: FreshRow = sqlx::query_as(&sql)
        .bind(received_at)
        .fetch_one(&mut *conn)
        .await?;
    sqlx::query("TRUNCATE ferry_staging")
        .execute(&mut *conn)
        .await?;
    Ok(fresh.absorb(row))
}

/// Inserts events one by one under savepoints (inside a transaction); events the database
/// refuses for good come back as `database_rejected` rejections.
pub async fn insert_each(
    tx: &mut PgConnection,
    events: &[&Event],
    received_at: DateTime<Utc>,
    fresh: &mut Fresh,
) -> Result<(u64, Vec<Rejection>), Error> {
    let mut loaded = 0;
    let mut refused = Vec::new();
    for e in events {
        sqlx::query("SAVEPOINT ferry_event")
            .execute(&mut *tx)
            .await?;
        // Only an event that stays may feed derived state.
        let mut one = Fresh::default();
        match insert_unnest(tx, std::slice::from_ref(e), received_at, &mut one).await {
            Ok(n) => {
                fresh.extend(one);
                loaded += n;
                sqlx::query("RELEASE SAVEPOINT ferry_event")
                    .execute(&mut *tx)
                    .await?;
            }
            Err(Error::Permanent(err)) => {
                sqlx::query("ROLLBACK TO SAVEPOINT ferry_event")
                    .execute(&mut *tx)
                    .await?;
                refused.push(Rejection {
                    tenant_id: Some(e.tenant_id.clone()),
                    position: Some(e.position),
                    reason: RejectReason::DatabaseRejected,
                    detail: err.to_string(),
                    raw: e.raw.as_bytes().to_vec(),
                });
            }
            Err(other) => return Err(other),
        }
    }
    Ok((loaded, refused))
}

async fn active_tenants(
    tx: &mut Transaction<'_, Postgres>,
    units: &[&Unit],
) -> Result<HashSet<String>, Error> {
    let mut wanted: Vec<&str> = units
        .iter()
        .flat_map(|u| u.parsed.events.iter().map(|e| e.tenant_id.as_str()))
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    active_tenant_ids(tx, &wanted).await
}

/// Which of `wanted` (sorted, distinct) are registered, active tenants. Locks their rows
/// `FOR SHARE` until the transaction ends, so a tenant cannot be suspended mid-load.
pub async fn active_tenant_ids(
    conn: &mut PgConnection,
    wanted: &[&str],
) -> Result<HashSet<String>, Error> {
    if wanted.is_empty() {
        return Ok(HashSet::new());
    }
    Ok(sqlx::query_scalar(
        "SELECT tenant_id FROM tenants WHERE tenant_id = ANY($1) AND status = 'active'
         ORDER BY tenant_id FOR SHARE",
    )
    .bind(wanted)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect())
}

/// The rejection of an event whose tenant is unknown or not active.
pub fn unknown_tenant(e: &Event) -> Rejection {
    Rejection {
        tenant_id: Some(e.tenant_id.clone()),
        position: Some(e.position),
        reason: RejectReason::UnknownTenant,
        detail: format!("tenant {:?} is not registered or not active", e.tenant_id),
        raw: e.raw.as_bytes().to_vec(),
    }
}

/// Writes quarantine rows: `(unit, rejection)` pairs.
pub async fn insert_quarantine(
    conn: &mut PgConnection,
    rows: &[(&str, Rejection)],
    received_at: DateTime<Utc>,
) -> Result<(), Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let tenants: Vec<&str> = rows
        .iter()
        .map(|(_, r)| r.tenant_id.as_deref().unwrap_or(""))
        .collect();
    let units: Vec<&str> = rows.iter().map(|(u, _)| *u).collect();
    let positions: Vec<Option<i32>> = rows.iter().map(|(_, r)| r.position).collect();
    let reasons: Vec<&str> = rows.iter().map(|(_, r)| r.reason.as_str()).collect();
    let details: Vec<&str> = rows.iter().map(|(_, r)| r.detail.as_str()).collect();
    let raws: Vec<&[u8]> = rows.iter().map(|(_, r)| r.raw.as_slice()).collect();
    sqlx::query(
        "INSERT INTO quarantine (tenant_id, unit, position, reason, detail, raw, received_at)
         SELECT t, u, p, r, d, b, $7
         FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[], $6::bytea[])
              AS x(t, u, p, r, d, b)",
    )
    .bind(tenants)
    .bind(units)
    .bind(positions)
    .bind(reasons)
    .bind(details)
    .bind(raws)
    .bind(received_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn record_counts(
    tx: &mut Transaction<'_, Postgres>,
    reports: &[UnitReport],
) -> Result<(), Error> {
    let applied: Vec<&UnitReport> = reports.iter().filter(|r| r.applied).collect();
    if applied.is_empty() {
        return Ok(());
    }
    let count = |v: u64| i32::try_from(v).unwrap_or(i32::MAX);
    let units: Vec<&str> = applied.iter().map(|r| r.key.as_str()).collect();
    let loaded: Vec<i32> = applied.iter().map(|r| count(r.loaded)).collect();
    let dups: Vec<i32> = applied.iter().map(|r| count(r.duplicates)).collect();
    let quarantined: Vec<i32> = applied
        .iter()
        .map(|r| count(r.quarantined.values().map(|n| *n as u64).sum()))
        .collect();
    sqlx::query(
        "UPDATE ingest_ledger l SET events = c.e, duplicates = c.d, quarantined = c.q
         FROM unnest($1::text[], $2::int4[], $3::int4[], $4::int4[]) AS c(unit, e, d, q)
         WHERE l.unit = c.unit",
    )
    .bind(units)
    .bind(loaded)
    .bind(dups)
    .bind(quarantined)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The columns a statement returns about the events it stored that feed derived state: the
/// number stored, then one array per column of those events (NULL when there are none).
type FreshRow = (
    i64,
    Option<Vec<String>>,
    Option<Vec<String>>,
    Option<Vec<String>>,
    Option<Vec<String>>,
    Option<Vec<Option<String>>>,
    Option<Vec<DateTime<Utc>>>,
    Option<Vec<Option<String>>>,
    Option<Vec<Option<String>>>,
    Option<Vec<Option<String>>>,
    Option<Vec<Option<String>>>,
    Option<Vec<Option<String>>>,
    Option<Vec<Option<String>>>,
    Option<Vec<Option<String>>>,
);

/// Wraps an `INSERT INTO events … ON CONFLICT DO NOTHING` so that it returns how many rows it
/// stored plus, as arrays, the stored events that feed derived state: product changes and
/// views (by `event_roles`), and any event of a tenant with an active endpoint. Duplicates are
/// not returned, so derived state sees each event once.
fn returning_fresh(insert: &str) -> String {
    format!(
        "WITH ins AS ({insert}
             RETURNING tenant_id, source, event_id, type, subject, time, user_id, session_id,
                       datacontenttype, dataschema, extensions, data, data_base64),
         fresh AS (
             SELECT * FROM ins
             WHERE type IN (SELECT type FROM event_roles
                            WHERE role IN ('product_view', 'product_upsert', 'product_delete'))
                OR tenant_id IN (SELECT tenant_id FROM endpoints WHERE status = 'active'))
         SELECT (SELECT count(*) FROM ins),
                array_agg(tenant_id), array_agg(source), array_agg(event_id), array_agg(type),
                array_agg(subject), array_agg(time), array_agg(user_id), array_agg(session_id),
                array_agg(datacontenttype), array_agg(dataschema), array_agg(extensions::text),
                array_agg(data::text), array_agg(data_base64)
         FROM fresh"
    )
}

/// Newly stored events that feed derived state, gathered over a transaction's statements.
#[derive(Debug, Default, Clone)]
pub struct Fresh {
    tenant_id: Vec<String>,
    source: Vec<String>,
    event_id: Vec<String>,
    ty: Vec<String>,
    subject: Vec<Option<String>>,
    time: Vec<DateTime<Utc>>,
    user_id: Vec<Option<String>>,
    session_id: Vec<Option<String>>,
    datacontenttype: Vec<Option<String>>,
    dataschema: Vec<Option<String>>,
    extensions: Vec<Option<String>>,
    data: Vec<Option<String>>,
    data_base64: Vec<Option<String>>,
}

impl Fresh {
    pub fn len(&self) -> usize {
        self.event_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.event_id.is_empty()
    }

    /// Appends a statement's result; returns the number of events it stored.
    fn absorb(&mut self, row: FreshRow) -> u64 {
        let (stored, t, s, i, ty, sub, tm, u, se, dct, ds, ext, d, db) = row;
        self.extend(Fresh {
            tenant_id: t.unwrap_or_default(),
            source: s.unwrap_or_default(),
            event_id: i.unwrap_or_default(),
            ty: ty.unwrap_or_default(),
            subject: sub.unwrap_or_default(),
            time: tm.unwrap_or_default(),
            user_id: u.unwrap_or_default(),
            session_id: se.unwrap_or_default(),
            datacontenttype: dct.unwrap_or_default(),
            dataschema: ds.unwrap_or_default(),
            extensions: ext.unwrap_or_default(),
            data: d.unwrap_or_default(),
            data_base64: db.unwrap_or_default(),
        });
        u64::try_from(stored).unwrap_or(0)
    }

    fn extend(&mut self, other: Fresh) {
        self.tenant_id.extend(other.tenant_id);
        self.source.extend(other.source);
        self.event_id.extend(other.event_id);
        self.ty.extend(other.ty);
        self.subject.extend(other.subject);
        self.time.extend(other.time);
        self.user_id.extend(other.user_id);
        self.session_id.extend(other.session_id);
        self.datacontenttype.extend(other.datacontenttype);
        self.dataschema.extend(other.dataschema);
        self.extensions.extend(other.extensions);
        self.data.extend(other.data);
        self.data_base64.extend(other.data_base64);
    }
}

/// What [`derive`] wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Derived {
    /// Product rows created or replaced by a newer change.
    pub products: u64,
    /// (user, product) views recorded.
    pub views: u64,
    /// Webhook deliveries enqueued.
    pub deliveries: u64,
}

/// Writes the derived state of `fresh` (products, recently viewed, webhook outbox) inside the
/// caller's transaction, in one round trip (`ferry_derive`, migration 0010). Nothing to do
/// costs nothing.
pub async fn derive(
    conn: &mut PgConnection,
    fresh: &Fresh,
    recently_viewed: u32,
) -> Result<Derived, Error> {
    if fresh.is_empty() {
        return Ok(Derived::default());
    }
    let (products, views, deliveries): (i32, i32, i32) = sqlx::query_as(
        "SELECT products, views, deliveries FROM ferry_derive(
             $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&fresh.tenant_id)
    .bind(&fresh.source)
    .bind(&fresh.event_id)
    .bind(&fresh.ty)
    .bind(&fresh.subject)
    .bind(&fresh.time)
    .bind(&fresh.user_id)
    .bind(&fresh.session_id)
    .bind(&fresh.datacontenttype)
    .bind(&fresh.dataschema)
    .bind(&fresh.extensions)
    .bind(&fresh.data)
    .bind(&fresh.data_base64)
    .bind(i32::try_from(recently_viewed).unwrap_or(i32::MAX))
    .fetch_one(&mut *conn)
    .await?;
    let n = |v: i32| u64::try_from(v).unwrap_or(0);
    Ok(Derived {
        products: n(products),
        views: n(views),
        deliveries: n(deliveries),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_unit_key_is_bounded_stable_and_still_distinct() {
        let short = "queue:0f1e2d3c".to_owned();
        assert_eq!(bounded_unit_key(short.clone()), short);
        let long = format!("queue:{}", "é".repeat(5000));
        let a = bounded_unit_key(long.clone());
        assert!(a.len() <= MAX_UNIT_KEY_BYTES, "{}", a.len());
        assert!(a.starts_with("queue:éé"), "recognisable");
        assert_eq!(
            a,
            bounded_unit_key(long.clone()),
            "a redelivery maps to the same key"
        );
        let other = format!("{long}x");
        assert_ne!(a, bounded_unit_key(other), "distinct keys stay distinct");
        let edge = "q".repeat(MAX_UNIT_KEY_BYTES);
        assert_eq!(bounded_unit_key(edge.clone()), edge);
        assert_ne!(bounded_unit_key(format!("{edge}q")), format!("{edge}q"));
    }
}
