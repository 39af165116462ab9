//! The loader every function uses: validated events plus the delivery units they came from go
//! into PostgreSQL in ONE transaction — ledger rows, events (deduplicated), quarantine rows,
//! derived state.
//!
//! Two ways in:
//! - [`Loader::load`]: whole units at once (ingest: a batch of queue messages);
//! - [`Loader::begin`] → [`Load`]: a transaction the caller drives — claim units in it
//!   ([`crate::ledger`]), [`Load::add`]
//!   events chunk by chunk, [`Load::commit`] with the ledger counts (transform: one object
//!   streamed in bounded chunks). `load` is built on it, so the protocol is written once.
//!
//! Protocol per transaction:
//! 1. claim the units in the ledger ([`crate::ledger::claim`]): a unit that is already there
//!    was applied before and has no effect;
//! 2. look up the tenants (`FOR SHARE`, so a tenant being changed makes us wait, bounded by
//!    `lock_timeout`, and retry later rather than load against a moving target);
//! 3. insert events in key order, deduplicated on `(tenant_id, source, event_id, time)`:
//!    `INSERT … SELECT FROM unnest(…)` below `copy_threshold` events, binary COPY into a
//!    staging table and one merge at or above it, or one by one under savepoints when isolating
//!    an event the database refuses. Copies within one insert are dropped first; the insert
//!    goes without `ON CONFLICT` unless the load is [cautious](Load::cautious), and an event
//!    stored before (or by an earlier insert of the same load) fails it with
//!    [`Error::Conflict`]: [`Loader::load`] then redoes the load with `ON CONFLICT DO
//!    NOTHING`, as the transform does an object;
//! 4. insert quarantine rows; apply the derived state of the events that were new (products,
//!    recently viewed, webhook outbox); record per-unit counts in the ledger; commit, then nudge
//!    the fanout function if deliveries were enqueued.
//!
//! Partitions are created before the events go in, in their own short transactions, so
//! partition DDL never holds locks for the length of a load.

mod derive;
mod insert;

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Postgres, Transaction};
use tracing::{debug, info};

use crate::copy::{copy_to_staging, create_staging};
use crate::db;
use crate::error::Error;
use crate::event::{Event, RejectReason, Rejection};
use crate::ledger::{self, Counts};
use crate::validate::Parsed;
use insert::OnStored;

#[cfg(fault_injection)]
use crate::faults::{CrashPoint, FaultHook};

/// Returns early with an injected crash when a test asks for one. Compiles to nothing in
/// release builds and without the `fault-injection` feature.
macro_rules! crash_point {
    ($loader:expr, $point:ident) => {
        #[cfg(fault_injection)]
        {
            if let Some(hook) = &$loader.faults {
                if hook(CrashPoint::$point) {
                    return Err(Error::InjectedCrash(CrashPoint::$point));
                }
            }
        }
    };
}

/// One delivery unit and what was read from it.
#[derive(Debug)]
pub struct Unit {
    /// Ledger key, e.g. `queue:<message id>`; unique across all units ever delivered, and
    /// bounded by [`ledger::bounded_unit_key`].
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
    /// At least this many events in one [`Load::add`] are loaded with binary COPY.
    pub copy_threshold: usize,
    /// Products kept per user in `recently_viewed`.
    pub recently_viewed: u32,
    /// Events kept for derived state after which [`Load::add`] writes it without waiting for
    /// the commit ([`DERIVE_AFTER`]).
    pub derive_after: u64,
    /// After a load met a stored copy of one of its events, how long loads dedup with
    /// `ON CONFLICT DO NOTHING` from the start instead of trying without it first
    /// ([`Load::cautious`], [`CAUTIOUS_FOR`]).
    pub cautious_for: Duration,
}

impl LoaderConfig {
    pub fn from_config(cfg: &crate::config::Config) -> LoaderConfig {
        LoaderConfig {
            partition_secs: cfg.partition_secs(),
            copy_threshold: cfg.copy_threshold,
            recently_viewed: cfg.recently_viewed,
            derive_after: DERIVE_AFTER,
            cautious_for: CAUTIOUS_FOR,
        }
    }
}

/// Events kept for derived state after which [`Load::add`] writes it without waiting for the
/// commit, by default. Derived state is cheapest written once for many events (a product or a
/// user's list touched once, not once per chunk), and the events wait in the database's
/// temporary table, not in memory here; the bound keeps that table from growing with the file
/// (500,000 of the demo's kept events are about 175 MB of the server's temporary files). With
/// 200,000, a 4,000,000-event file loaded 5% slower (57,086 against 59,812 events/s).
pub const DERIVE_AFTER: u64 = 500_000;

/// How long a loader dedups up front after a load met a stored copy of one of its events: a
/// stream with producer retries pays for one redone load a minute, not one per batch.
pub const CAUTIOUS_FOR: Duration = Duration::from_secs(60);

/// Called after a commit that enqueued webhook deliveries (with their number): sends the
/// fanout function a nudge. Best effort: the fanout's timer sweep is the safety net.
pub type Nudge = std::sync::Arc<dyn Fn(u64) + Send + Sync>;

/// Loads delivery units into PostgreSQL. Cheap to share; build once per process.
pub struct Loader {
    pool: PgPool,
    cfg: LoaderConfig,
    /// Partition slots known to exist, so the common case costs no round trip.
    known_partitions: Mutex<HashSet<i64>>,
    /// Until when loads begin [`Load::cautious`]: set when a load met a stored copy of one of
    /// its events.
    cautious_until: Mutex<Option<Instant>>,
    nudge: Option<Nudge>,
    #[cfg(fault_injection)]
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
            cautious_until: Mutex::new(None),
            nudge: None,
            #[cfg(fault_injection)]
            faults: None,
        }
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// Sends a nudge after every commit that enqueued deliveries.
    pub fn with_nudge(mut self, nudge: Nudge) -> Loader {
        self.nudge = Some(nudge);
        self
    }

    /// Installs a crash-point hook (tests only).
    #[cfg(fault_injection)]
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
        match self.load_once(function, units, isolate, false).await {
            Err(Error::Conflict(e)) => {
                info!(error = %e, "a load met a stored event; loading it again with ON CONFLICT");
                self.load_once(function, units, isolate, true).await
            }
            other => other,
        }
    }

    /// One try of [`Loader::load_with`]; `cautious` dedups with `ON CONFLICT` from the start.
    async fn load_once(
        &self,
        function: &str,
        units: &[Unit],
        isolate: bool,
        cautious: bool,
    ) -> Result<Vec<UnitReport>, Error> {
        let times: Vec<DateTime<Utc>> = units
            .iter()
            .flat_map(|u| u.parsed.events.iter().map(|e| e.time))
            .collect();
        self.ensure_partitions(&times).await?;
        let mut load = self.begin(isolate).await?;
        if cautious {
            load = load.cautious();
        }
        let keys: Vec<&str> = units.iter().map(|u| u.key.as_str()).collect();
        let claimed = ledger::claim(load.conn(), function, &keys).await?;
        crash_point!(self, AfterClaim);

        let tenants: Vec<&str> = units
            .iter()
            .filter(|u| claimed.contains(&u.key))
            .flat_map(|u| u.parsed.events.iter().map(|e| e.tenant_id.as_str()))
            .collect();
        load.lock_tenants(&tenants).await?;
        // Units in order of their smallest event key, so two transactions holding copies of the
        // same events (producer retries) insert them in the same order and cannot deadlock
        // when units go in one by one (a batch in one statement is sorted by key as a whole).
        let mut ordered: Vec<&Unit> = units.iter().collect();
        ordered.sort_by_cached_key(|u| u.parsed.events.iter().map(Event::key).min());
        let claimed_units: Vec<&Unit> = ordered
            .iter()
            .copied()
            .filter(|u| claimed.contains(&u.key))
            .collect();
        let mut added = load.add_units(&claimed_units).await?.into_iter();
        let mut reports = Vec::with_capacity(units.len());
        for unit in ordered {
            let Some(added) = claimed.contains(&unit.key).then(|| added.next()).flatten() else {
                reports.push(UnitReport {
                    key: unit.key.clone(),
                    applied: false,
                    offered: 0,
                    loaded: 0,
                    duplicates: 0,
                    quarantined: BTreeMap::new(),
                });
                continue;
            };
            reports.push(UnitReport {
                key: unit.key.clone(),
                applied: true,
                offered: added.offered,
                loaded: added.loaded,
                duplicates: added.offered - added.loaded,
                quarantined: added.quarantined,
            });
        }
        let counts: Vec<Counts> = reports
            .iter()
            .filter(|r| r.applied)
            .map(|r| Counts {
                unit: &r.key,
                function,
                loaded: r.loaded,
                duplicates: r.duplicates,
                quarantined: r.quarantined.values().map(|n| u64::from(*n)).sum(),
            })
            .collect();
        load.commit(&counts).await?;
        for r in reports.iter().filter(|r| r.applied) {
            debug!(unit = %r.key, loaded = r.loaded, duplicates = r.duplicates,
                   quarantined = r.quarantined.values().sum::<u32>(), "unit applied");
        }
        Ok(reports)
    }

    /// Opens a load transaction the caller drives (see [`Load`]). `isolate` inserts events one
    /// by one under savepoints, as [`Loader::load_isolating`] does.
    pub async fn begin(&self, isolate: bool) -> Result<Load<'_>, Error> {
        let tx = self.pool.begin_with(derive::BEGIN).await?;
        Ok(Load {
            loader: self,
            tx,
            received_at: Utc::now(),
            isolate,
            on_stored: if isolate || self.dedups_up_front() {
                OnStored::Skip
            } else {
                OnStored::Fail
            },
            tenants: HashMap::new(),
            staging: false,
            chunked: false,
            kept: 0,
            deliveries: 0,
        })
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
        let key = ledger::bounded_unit_key(key.to_owned());
        let mut load = self.begin(false).await?;
        if !ledger::claim_one(load.conn(), function, &key).await? {
            return Ok(false);
        }
        let rejection = Rejection {
            tenant_id: None,
            position: None,
            reason,
            detail: detail.to_owned(),
            raw: raw.to_vec(),
        };
        load.add(&key, &[], vec![rejection]).await?;
        let counts = Counts {
            unit: &key,
            function,
            loaded: 0,
            duplicates: 0,
            quarantined: 1,
        };
        load.commit(&[counts]).await?;
        Ok(true)
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

    /// True while loads dedup with `ON CONFLICT` from the start: for
    /// [`LoaderConfig::cautious_for`] after a load met a stored copy of one of its events.
    pub fn dedups_up_front(&self) -> bool {
        let until = *self
            .cautious_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        until.is_some_and(|t| Instant::now() < t)
    }

    /// Notes that an insert met a stored copy of one of its events.
    fn met_stored(&self) {
        let now = Instant::now();
        let until = now.checked_add(self.cfg.cautious_for).unwrap_or(now);
        let mut slot = self
            .cautious_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *slot = Some(slot.map_or(until, |t| t.max(until)));
    }

    /// What a failed add teaches the loader: a partition it knew of is missing (retention
    /// dropped it), so the next load checks again; or an event was stored already, so loads
    /// dedup up front for a while.
    fn learn_from(&self, e: &Error) {
        if let Error::Conflict(_) = e {
            self.met_stored();
        }
        if let Error::Transient(sqlx::Error::Database(db)) = e {
            if db.code().as_deref() == Some("23514") {
                self.known_partitions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
            }
        }
    }
}

/// What one [`Load::add`] stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Added {
    /// Valid events of active tenants that are stored now (loaded) or were before (duplicates).
    pub offered: u64,
    /// Events inserted.
    pub loaded: u64,
    /// Quarantined pieces of input, by reason (those given, unknown tenants, refused events).
    pub quarantined: BTreeMap<RejectReason, u32>,
}

/// One load transaction, driven by the caller: claim units ([`ledger::claim`] on
/// [`Load::conn`]), [`add`](Load::add)
/// their events (in chunks, if they come in chunks), [`commit`](Load::commit) with the ledger
/// counts. Dropped without a commit, it rolls back: nothing of it is stored.
pub struct Load<'l> {
    loader: &'l Loader,
    tx: Transaction<'static, Postgres>,
    received_at: DateTime<Utc>,
    isolate: bool,
    /// Tenants looked up (and locked `FOR SHARE`) in this transaction: active or not.
    tenants: HashMap<String, bool>,
    /// Whether the staging table exists on this connection (this transaction).
    staging: bool,
    /// Every add goes through the staging table ([`Load::chunked`]).
    chunked: bool,
    /// Whether the events inserts dedup with `ON CONFLICT` ([`Load::cautious`]).
    on_stored: OnStored,
    /// Stored events in `ferry_loaded` whose derived state is not written yet.
    kept: u64,
    deliveries: u64,
}

impl std::fmt::Debug for Load<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Load")
            .field("received_at", &self.received_at)
            .field("isolate", &self.isolate)
            .finish_non_exhaustive()
    }
}

impl Load<'_> {
    /// Loads every [`Load::add`] through the staging table (binary COPY, then one merge),
    /// whatever its size, for events that come in chunks over one transaction. Later chunks
    /// may need partitions attached (from another connection) after this transaction first
    /// wrote to `events`. A prepared statement's cached plan does not see them: PostgreSQL
    /// revalidates it without taking in invalidations, this transaction already holding its
    /// lock on `events` ("no partition of relation \"events\" found for row" from the
    /// `unnest` insert, which sqlx prepares once per connection). The staging table's
    /// `TRUNCATE` after each merge invalidates the merge's plan, so the next one is planned
    /// afresh and routes rows to the new partitions.
    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }

    /// Dedups every events insert with `ON CONFLICT DO NOTHING` from the start. Without it, a
    /// load tries its inserts without the clause first (cheaper: no speculative insertion):
    /// an event stored already then fails the insert with [`Error::Conflict`], the caller
    /// rolls back and loads again with this, and the loader stays cautious for
    /// [`LoaderConfig::cautious_for`]. [`Loader::load`] does that itself.
    pub fn cautious(mut self) -> Self {
        self.on_stored = OnStored::Skip;
        self
    }

    /// The transaction, for the caller's own statements in it (e.g. transform's object row).
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Looks up and locks (`FOR SHARE`, in one statement, in order) the tenants not seen yet
    /// in this transaction.
    pub async fn lock_tenants(&mut self, tenants: &[&str]) -> Result<(), Error> {
        let mut new: Vec<&str> = tenants
            .iter()
            .copied()
            .filter(|t| !self.tenants.contains_key(*t))
            .collect();
        new.sort_unstable();
        new.dedup();
        if new.is_empty() {
            return Ok(());
        }
        let active = insert::active_tenant_ids(&mut self.tx, &new).await?;
        for t in new {
            self.tenants.insert(t.to_owned(), active.contains(t));
        }
        Ok(())
    }

    /// Adds a claimed unit's events (all of them, or the next chunk) and its rejected input:
    /// partitions, tenant check, events in key order, quarantine rows. The derived state of
    /// new events is written at [`Load::commit`], or here once enough are waiting.
    pub async fn add(
        &mut self,
        unit: &str,
        events: &[Event],
        mut rejected: Vec<Rejection>,
    ) -> Result<Added, Error> {
        let result = self.add_events(events, &mut rejected).await;
        if let Err(e) = &result {
            self.loader.learn_from(e);
        }
        let (offered, loaded) = result?;
        let mut quarantined = BTreeMap::new();
        for r in &rejected {
            *quarantined.entry(r.reason).or_insert(0u32) += 1;
        }
        let rows: Vec<(&str, Rejection)> = rejected.into_iter().map(|r| (unit, r)).collect();
        insert::insert_quarantine(&mut self.tx, &rows, self.received_at).await?;
        if self.kept >= self.loader.cfg.derive_after {
            self.derive(true).await?;
        }
        Ok(Added {
            offered,
            loaded,
            quarantined,
        })
    }

    /// Adds claimed units whole: like [`Load::add`] for each in turn, but when their events
    /// together stay below the COPY threshold (the usual queue batch), with one statement for
    /// all their events and one for all their quarantine rows. Returns each unit's counts, in
    /// the order given.
    async fn add_units(&mut self, units: &[&Unit]) -> Result<Vec<Added>, Error> {
        let total: usize = units.iter().map(|u| u.parsed.events.len()).sum();
        if self.isolate || self.chunked || total >= self.loader.cfg.copy_threshold {
            let mut added = Vec::with_capacity(units.len());
            for u in units {
                let rejected = u.parsed.rejected.clone();
                added.push(self.add(&u.key, &u.parsed.events, rejected).await?);
            }
            return Ok(added);
        }
        let result = self.add_small(units).await;
        if let Err(e) = &result {
            self.loader.learn_from(e);
        }
        result
    }

    /// [`Load::add_units`] for units whose events are few: one insert, one quarantine insert.
    async fn add_small(&mut self, units: &[&Unit]) -> Result<Vec<Added>, Error> {
        let events: Vec<&Event> = units.iter().flat_map(|u| &u.parsed.events).collect();
        self.make_ready_for(&events).await?;
        let mut added = vec![Added::default(); units.len()];
        let mut good: Vec<(i32, &Event)> = Vec::new();
        let mut quarantine: Vec<(&str, Rejection)> = Vec::new();
        for (i, u) in units.iter().enumerate() {
            let mut rejected = u.parsed.rejected.clone();
            for e in &u.parsed.events {
                if self.tenants.get(&e.tenant_id).copied().unwrap_or(false) {
                    good.push((i32::try_from(i).unwrap_or(i32::MAX), e));
                    added[i].offered += 1;
                } else {
                    rejected.push(insert::unknown_tenant(e));
                }
            }
            for r in rejected {
                *added[i].quarantined.entry(r.reason).or_insert(0) += 1;
                quarantine.push((u.key.as_str(), r));
            }
        }
        // Key order across units, so concurrent loads of the same events cannot deadlock; a
        // stable sort, so of two copies of an event the first given is the one stored.
        good.sort_by(|(ua, a), (ub, b)| a.key().cmp(&b.key()).then(ua.cmp(ub)));
        good.dedup_by(|(_, later), (_, first)| later.key() == first.key());
        if !good.is_empty() {
            let (stored, by_unit) =
                insert::insert_unnest(&mut self.tx, &good, self.received_at, self.on_stored)
                    .await?;
            self.kept += stored.kept;
            for u in by_unit {
                if let Some(a) = usize::try_from(u).ok().and_then(|u| added.get_mut(u)) {
                    a.loaded += 1;
                }
            }
        }
        insert::insert_quarantine(&mut self.tx, &quarantine, self.received_at).await?;
        if self.kept >= self.loader.cfg.derive_after {
            self.derive(true).await?;
        }
        Ok(added)
    }

    /// Makes sure the partitions `events` go to exist, and looks up (and locks) their tenants.
    async fn make_ready_for<E: Borrow<Event>>(&mut self, events: &[E]) -> Result<(), Error> {
        let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.borrow().time).collect();
        self.loader.ensure_partitions(&times).await?;
        let tenants: Vec<&str> = events
            .iter()
            .map(|e| e.borrow().tenant_id.as_str())
            .collect();
        self.lock_tenants(&tenants).await
    }

    /// Inserts the events of active tenants; the others (and any the database refuses, when
    /// isolating) join `rejected`. Returns (offered, loaded).
    async fn add_events(
        &mut self,
        events: &[Event],
        rejected: &mut Vec<Rejection>,
    ) -> Result<(u64, u64), Error> {
        if events.is_empty() {
            return Ok((0, 0));
        }
        self.make_ready_for(events).await?;
        let (mut good, unknown): (Vec<&Event>, Vec<&Event>) = events
            .iter()
            .partition(|e| self.tenants.get(&e.tenant_id).copied().unwrap_or(false));
        rejected.extend(unknown.iter().map(|e| insert::unknown_tenant(e)));
        // Concurrent loads of overlapping events (producer retries in different units) wait on
        // each other's uncommitted keys; inserting in key order keeps them from deadlocking.
        // Stable: of two copies of an event, the first given is the one stored.
        good.sort_by(|a, b| a.key().cmp(&b.key()));
        let (tx, received_at) = (&mut *self.tx, self.received_at);
        if self.isolate {
            let (stored, refused) = insert::insert_each(tx, &good, received_at).await?;
            let offered = (good.len() - refused.len()) as u64;
            rejected.extend(refused);
            self.kept += stored.kept;
            return Ok((offered, stored.events));
        }
        let offered = good.len() as u64;
        // One copy of each event goes in (the rest are duplicates), so that an insert without
        // `ON CONFLICT` fails only on events stored before.
        good.dedup_by(|later, first| later.key() == first.key());
        let on_stored = self.on_stored;
        let stored = if self.chunked || good.len() >= self.loader.cfg.copy_threshold {
            if !self.staging {
                create_staging(tx).await?;
                self.staging = true;
            }
            copy_to_staging(tx, &good).await?;
            insert::merge_staging(tx, received_at, on_stored).await?
        } else if good.is_empty() {
            insert::Stored::default()
        } else {
            let pairs: Vec<(i32, &Event)> = good.iter().map(|e| (0, *e)).collect();
            insert::insert_unnest(tx, &pairs, received_at, on_stored)
                .await?
                .0
        };
        self.kept += stored.kept;
        Ok((offered, stored.events))
    }

    /// Writes the derived state of the events kept so far (products, recently viewed, webhook
    /// outbox); `more` when events may still come in this transaction. Nothing to do costs
    /// nothing.
    async fn derive(&mut self, more: bool) -> Result<(), Error> {
        if self.kept == 0 {
            return Ok(());
        }
        let recently_viewed = self.loader.cfg.recently_viewed;
        let derived = derive::derive(&mut self.tx, recently_viewed, more).await?;
        debug!(
            kept = self.kept,
            products = derived.products,
            views = derived.views,
            deliveries = derived.deliveries,
            "derived state written"
        );
        self.kept = 0;
        self.deliveries += derived.deliveries;
        Ok(())
    }

    /// Writes what is left of the derived state and the ledger counts of the claimed units,
    /// commits, then nudges the fanout if deliveries were enqueued. Returns the deliveries.
    pub async fn commit(mut self, counts: &[Counts<'_>]) -> Result<u64, Error> {
        self.derive(false).await?;
        ledger::settle(&mut self.tx, counts).await?;
        crash_point!(self.loader, AfterLoad);
        self.tx.commit().await?;
        crash_point!(self.loader, AfterCommit);
        if self.deliveries > 0 {
            if let Some(nudge) = &self.loader.nudge {
                nudge(self.deliveries);
            }
        }
        Ok(self.deliveries)
    }

    /// Rolls back everything of this load.
    pub async fn rollback(self) -> Result<(), Error> {
        Ok(self.tx.rollback().await?)
    }
}
