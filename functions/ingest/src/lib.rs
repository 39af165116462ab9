//! The queue-triggered ingest function.
//!
//! A message body is one structured-mode CloudEvent or a JSON batch of them. For each batch:
//! every message is validated, then all messages are applied in one transaction by the shared
//! [`Loader`] (ledger row per message, events deduplicated, rejected input quarantined). If
//! that transaction fails for a reason other than "database unreachable", each message is
//! retried alone, so one troubled message (a locked tenant, a row the database refuses) cannot
//! hold back the others; a message the database refuses for good is loaded event by event under
//! savepoints, so only the refused events are quarantined (`database_rejected`). Only
//! transient failures are reported, so the platform redelivers just those messages.
//!
//! Where to look: this file is the whole function; the protocol it relies on is
//! [`ferry_shared::load`] and [`ferry_shared::ledger`], the validation [`ferry_shared::validate`].

use std::collections::{BTreeMap, HashSet};

use chrono::Utc;
use ferry_shared::config::Config;
use ferry_shared::validate::parse_body;
use ferry_shared::{
    Limits, Loader, LoaderConfig, QueueBatch, QueueHandler, QueueMessage, QueueOutcome,
    RejectReason, Unit, UnitReport,
};
use sqlx::PgPool;
use tracing::{error, info, instrument, warn};

/// The ingest handler. Build once per process and share.
#[derive(Debug)]
pub struct Ingest {
    loader: Loader,
    limits: Limits,
    function: String,
}

/// What happened to a batch, message by message.
#[derive(Debug, Default, Clone)]
pub struct IngestReport {
    /// One entry per message that was acknowledged.
    pub units: Vec<UnitReport>,
    /// Ids of messages that failed transiently and must be redelivered.
    pub failed: Vec<String>,
}

impl Ingest {
    pub fn new(loader: Loader, limits: Limits, function: impl Into<String>) -> Ingest {
        Ingest {
            loader,
            limits,
            function: function.into(),
        }
    }

    /// Builds the handler from configuration (the pool connects lazily).
    pub fn from_config(cfg: &Config) -> anyhow::Result<Ingest> {
        let function = cfg.function_name.clone().unwrap_or_else(|| "ingest".into());
        let pool = ferry_shared::db::pool(&cfg.db, cfg.database_url()?, &function)?;
        Ok(Ingest::with_pool(cfg, pool, function))
    }

    /// Builds the handler on an existing pool, which should come from
    /// [`ferry_shared::db::pool`] (it sets the lock and statement timeouts the handler relies on
    /// to turn a stuck load into a retry).
    pub fn with_pool(cfg: &Config, pool: PgPool, function: impl Into<String>) -> Ingest {
        let loader = Loader::new(pool, LoaderConfig::from_config(cfg));
        Ingest::new(loader, cfg.limits.clone(), function)
    }

    /// Nudges the fanout function after each commit that queued webhook deliveries.
    pub fn with_nudge(mut self, nudge: ferry_shared::load::Nudge) -> Ingest {
        self.loader = self.loader.with_nudge(nudge);
        self
    }

    /// The function's name (ledger, logs, Azure route).
    pub fn function(&self) -> &str {
        &self.function
    }

    /// Processes a batch and reports on every message.
    #[instrument(skip_all, fields(function = %self.function, messages = batch.messages.len()))]
    pub async fn process(&self, batch: &QueueBatch) -> IngestReport {
        let now = Utc::now();
        let mut report = IngestReport::default();
        let mut seen = HashSet::new();
        let mut messages: Vec<&QueueMessage> = Vec::with_capacity(batch.messages.len());
        for m in &batch.messages {
            if m.id.is_empty() {
                // Without an id a redelivery cannot be recognised; never acknowledge it, so it
                // ends in the platform's dead-letter queue rather than being applied twice.
                error!("message without an id; leaving it to the dead-letter queue");
                report.failed.push(String::new());
            } else if seen.insert(m.id.as_str()) {
                messages.push(m);
            }
        }
        let units: Vec<Unit> = messages
            .iter()
            .map(|m| Unit {
                key: unit_key(&m.id),
                parsed: parse_body(&m.body, &self.limits, now),
            })
            .collect();
        if units.is_empty() {
            return report;
        }
        match self.loader.load(&self.function, &units).await {
            Ok(units) => report.units = units,
            Err(e) if e.is_unavailable() => {
                warn!(error = %e, "database unavailable; every message will be redelivered");
                report.failed.extend(messages.iter().map(|m| m.id.clone()));
            }
            Err(e) if units.len() == 1 => {
                let m = messages[0];
                self.settle_alone(&m.body, &m.id, &units[0], e, &mut report)
                    .await;
            }
            Err(e) => {
                warn!(error = %e, "batch transaction failed; applying messages one by one");
                for (message, unit) in messages.iter().zip(&units) {
                    match self
                        .loader
                        .load(&self.function, std::slice::from_ref(unit))
                        .await
                    {
                        Ok(mut r) => report.units.append(&mut r),
                        Err(e) => {
                            self.settle_alone(&message.body, &message.id, unit, e, &mut report)
                                .await
                        }
                    }
                }
            }
        }
        log_report(&report);
        report
    }

    /// Decides about one message whose own transaction failed.
    async fn settle_alone(
        &self,
        body: &[u8],
        id: &str,
        unit: &Unit,
        error: ferry_shared::Error,
        report: &mut IngestReport,
    ) {
        if error.is_retryable() {
            warn!(message_id = %id, error = %error, "transient failure; message will be redelivered");
            report.failed.push(id.to_owned());
            return;
        }
        warn!(message_id = %id, error = %error, "database refused the message; loading it event by event");
        match self
            .loader
            .load_isolating(&self.function, std::slice::from_ref(unit))
            .await
        {
            Ok(mut r) => {
                report.units.append(&mut r);
                return;
            }
            Err(e) if e.is_retryable() => {
                warn!(message_id = %id, error = %e, "transient failure; message will be redelivered");
                report.failed.push(id.to_owned());
                return;
            }
            Err(e) => {
                warn!(message_id = %id, error = %e, "database refused the message; quarantining it whole");
            }
        }
        match self
            .loader
            .quarantine_unit(
                &self.function,
                &unit.key,
                RejectReason::DatabaseRejected,
                body,
                &error.to_string(),
            )
            .await
        {
            Ok(applied) => report.units.push(UnitReport {
                key: unit.key.clone(),
                applied,
                offered: 0,
                loaded: 0,
                duplicates: 0,
                quarantined: BTreeMap::from([(RejectReason::DatabaseRejected, 1)]),
            }),
            Err(e) => {
                warn!(message_id = %id, error = %e, "could not quarantine; message will be redelivered");
                report.failed.push(id.to_owned());
            }
        }
    }
}

impl QueueHandler for Ingest {
    async fn handle(&self, batch: QueueBatch) -> QueueOutcome {
        QueueOutcome {
            failed: self.process(&batch).await.failed,
        }
    }
}

/// The ledger key of a queue message (bounded: a message id of kilobytes is hashed).
pub fn unit_key(message_id: &str) -> String {
    ferry_shared::ledger::bounded_unit_key(format!("queue:{message_id}"))
}

fn log_report(report: &IngestReport) {
    let sum = |f: fn(&UnitReport) -> u64| report.units.iter().map(f).sum::<u64>();
    info!(
        loaded = sum(|u| u.loaded),
        duplicates = sum(|u| u.duplicates),
        quarantined = sum(|u| u.quarantined.values().map(|n| *n as u64).sum()),
        already_applied = report.units.iter().filter(|u| !u.applied).count(),
        failed = report.failed.len(),
        "batch processed"
    );
}
