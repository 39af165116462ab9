//! The timer-triggered rollup function.
//!
//! Every tick runs a short chain of jobs, each recorded in `job_runs` (start, end, rows,
//! outcome, error). A failing job does not stop the others, and whatever it did not do is
//! picked up by the next tick: every job works from state in the database (the watermark,
//! the partitions that exist, the age of rows), never from the tick's own time window.
//!
//! | job | every tick? | what it does |
//! |---|---|---|
//! | `partitions` | yes | creates `events` partitions ahead, removes those past retention |
//! | `rollup` | yes | merges new events into the 5-minute, hourly and daily rollups |
//! | `anomalies` | yes | scores closed 5-minute buckets of event volume |
//! | `data_quality` | yes | finds sources gone silent or dropping, by hour and day |
//! | `housekeeping` | hourly | deletes ledger, quarantine, job, anomaly and rollup rows past retention |
//!
//! Where to look: the jobs and [`RollupConfig`] here; the exactly-once rollup transaction in
//! `aggregate.rs`; anomaly and data-quality scoring in `anomaly.rs`; partitions, retention and
//! housekeeping in `upkeep.rs`. Analysts read the rollups through [`ferry_shared::queries`].

mod aggregate;
mod anomaly;
mod config;
mod upkeep;

use std::time::Instant;

use chrono::{DateTime, Utc};
use ferry_shared::config::{bad, Config};
use ferry_shared::error::Error;
use ferry_shared::trigger::{Retry, Tick, TickHandler};
use sqlx::PgPool;
use tracing::{error, info, warn};

#[cfg(fault_injection)]
use ferry_shared::faults::FaultHook;

pub use aggregate::{AggregateOptions, Step};
pub use anomaly::Settings as AnomalySettings;
pub use config::RollupConfig;
pub use upkeep::{Retention, RetentionMode};

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    Ok,
    Skipped,
    Failed,
}

impl JobOutcome {
    fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Ok => "ok",
            JobOutcome::Skipped => "skipped",
            JobOutcome::Failed => "failed",
        }
    }
}

/// One job of one tick.
#[derive(Debug, Clone)]
pub struct JobReport {
    pub job: &'static str,
    pub outcome: JobOutcome,
    pub rows: i64,
    pub detail: String,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

struct Done {
    outcome: JobOutcome,
    rows: i64,
    detail: String,
}

fn ok(rows: i64, detail: impl Into<String>) -> Done {
    Done {
        outcome: JobOutcome::Ok,
        rows,
        detail: detail.into(),
    }
}

/// The rollup handler.
pub struct Rollup {
    pool: PgPool,
    cfg: RollupConfig,
    partition_secs: i64,
    name: String,
    nudge: Option<ferry_shared::load::Nudge>,
    #[cfg(fault_injection)]
    faults: Option<FaultHook>,
}

impl Rollup {
    /// From the environment: pool and settings.
    pub fn from_config(cfg: &Config, rcfg: RollupConfig) -> anyhow::Result<Rollup> {
        // Dropping a partition drops the unique key that deduplicates its events: one that
        // ingest still accepts could then be loaded, and counted, a second time.
        if rcfg.events_retention < cfg.limits.max_event_age {
            return Err(bad(
                "FERRY_EVENTS_RETENTION",
                &humantime::format_duration(rcfg.events_retention).to_string(),
                &format!(
                    "must be at least FERRY_MAX_EVENT_AGE ({}): a producer's resend of an older \
                     event would otherwise be loaded and counted again; lower both together",
                    humantime::format_duration(cfg.limits.max_event_age)
                ),
            )
            .into());
        }
        let name = cfg.function_name.clone().unwrap_or_else(|| "rollup".into());
        let pool = ferry_shared::db::pool(&cfg.db, cfg.database_url()?, &name)?;
        Ok(Rollup::with_pool(cfg, rcfg, pool, &name))
    }

    pub fn with_pool(cfg: &Config, rcfg: RollupConfig, pool: PgPool, name: &str) -> Rollup {
        Rollup {
            pool,
            cfg: rcfg,
            partition_secs: cfg.partition_secs(),
            name: name.to_owned(),
            nudge: None,
            #[cfg(fault_injection)]
            faults: None,
        }
    }

    /// Nudges the fanout function after a run that queued `anomaly.detected` webhooks.
    pub fn with_nudge(mut self, nudge: ferry_shared::load::Nudge) -> Rollup {
        self.nudge = Some(nudge);
        self
    }

    #[cfg(fault_injection)]
    pub fn with_faults(mut self, hook: FaultHook) -> Rollup {
        self.faults = Some(hook);
        self
    }

    pub fn function(&self) -> &str {
        &self.name
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// One rollup transaction (no job bookkeeping); for tests and benchmarks.
    pub async fn step(&self) -> Result<Step, Error> {
        aggregate::step(
            &self.pool,
            &self.cfg.aggregate,
            #[cfg(fault_injection)]
            self.faults.as_ref(),
        )
        .await
    }

    /// Rolls up window after window until caught up, skipped, or past the budget.
    pub async fn catch_up(&self) -> Result<(i64, Vec<Step>), Error> {
        let start = Instant::now();
        let mut total = 0;
        let mut steps = Vec::new();
        loop {
            let step = self.step().await?;
            // A capped window leaves a backlog; a held one was read a while ago.
            let more = matches!(step, Step::Merged { capped, held, .. } if capped || held);
            if let Step::Merged { events, .. } = step {
                total += events;
            }
            steps.push(step);
            if !more || start.elapsed() >= self.cfg.budget {
                return Ok((total, steps));
            }
        }
    }

    /// Runs every job due at `now` and records each in `job_runs`.
    pub async fn run_at(&self, tick: DateTime<Utc>, now: DateTime<Utc>) -> Vec<JobReport> {
        let mut reports = Vec::new();
        reports.push(self.job(tick, "partitions", self.partitions(now)).await);
        reports.push(self.job(tick, "rollup", self.rollup()).await);
        reports.push(
            self.job(tick, "anomalies", self.anomalies(now, false))
                .await,
        );
        reports.push(
            self.job(tick, "data_quality", self.anomalies(now, true))
                .await,
        );
        match self.due("housekeeping", now).await {
            Ok(true) => {
                reports.push(self.job(tick, "housekeeping", self.housekeeping(now)).await);
            }
            Ok(false) => {}
            Err(e) => warn!(error = %e, "cannot tell whether housekeeping is due"),
        }
        reports
    }

    async fn job(
        &self,
        tick: DateTime<Utc>,
        job: &'static str,
        work: impl std::future::Future<Output = Result<Done, Error>>,
    ) -> JobReport {
        let started_at = Utc::now();
        let result = work.await;
        let finished_at = Utc::now();
        let report = match result {
            Ok(d) => JobReport {
                job,
                outcome: d.outcome,
                rows: d.rows,
                detail: d.detail,
                error: None,
                started_at,
                finished_at,
            },
            Err(e) => JobReport {
                job,
                outcome: JobOutcome::Failed,
                rows: 0,
                detail: String::new(),
                error: Some(e.to_string()),
                started_at,
                finished_at,
            },
        };
        let ms = (finished_at - started_at).num_milliseconds();
        match report.outcome {
            JobOutcome::Failed => error!(
                function = %self.name, job, ms, error = report.error.as_deref().unwrap_or(""),
                "job failed; the next tick retries it"
            ),
            JobOutcome::Skipped => {
                warn!(function = %self.name, job, ms, detail = %report.detail, "job skipped")
            }
            JobOutcome::Ok => {
                info!(function = %self.name, job, ms, rows = report.rows, detail = %report.detail, "job done")
            }
        }
        if let Err(e) = sqlx::query(
            "INSERT INTO job_runs (job, tick, started_at, finished_at, outcome, rows, detail, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(job)
        .bind(tick)
        .bind(started_at)
        .bind(finished_at)
        .bind(report.outcome.as_str())
        .bind(report.rows)
        .bind(&report.detail)
        .bind(&report.error)
        .execute(&self.pool)
        .await
        {
            warn!(function = %self.name, job, error = %e, "cannot record the job run");
        }
        report
    }

    async fn due(&self, job: &str, now: DateTime<Utc>) -> Result<bool, Error> {
        let last: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT max(started_at) FROM job_runs WHERE job = $1 AND outcome = 'ok'",
        )
        .bind(job)
        .fetch_one(&self.pool)
        .await?;
        let every = chrono::Duration::from_std(self.cfg.housekeeping_every).unwrap_or_default();
        Ok(last.is_none_or(|t| now - t >= every))
    }

    async fn partitions(&self, now: DateTime<Utc>) -> Result<Done, Error> {
        let r = upkeep::partitions(
            &self.pool,
            now,
            self.cfg.partitions_ahead,
            self.partition_secs,
            self.cfg.events_retention,
            self.cfg.retention_mode,
            self.cfg.aggregate.lock_wait,
        )
        .await?;
        let mut detail = format!("created {}, removed {}", r.created, r.removed.len());
        for (part, why) in &r.kept {
            detail.push_str(&format!("; {part} {why}"));
        }
        detail.push_str(&format!(
            "; {} partitions (a rollup run locks {} of at least {} lock slots)",
            r.partitions, r.run_locks, r.lock_slots
        ));
        if r.locks_crowded() {
            warn!(
                function = %self.name,
                partitions = r.partitions,
                run_locks = r.run_locks,
                lock_slots = r.lock_slots,
                "each rollup run locks every events partition and its indexes, over half the \
                 server's lock table: raise max_locks_per_transaction, or shorten \
                 FERRY_EVENTS_RETENTION with FERRY_MAX_EVENT_AGE; a new database can be given \
                 wider partitions (docs/operations.md)"
            );
            detail.push_str("; over half the lock table");
        }
        Ok(ok(i64::from(r.created) + r.removed.len() as i64, detail))
    }

    async fn rollup(&self) -> Result<Done, Error> {
        let (events, steps) = self.catch_up().await?;
        let merged: Vec<String> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Merged { from, to, .. } => Some(format!("({from}, {to}]")),
                _ => None,
            })
            .collect();
        let last = steps.last();
        Ok(match last {
            Some(Step::Skipped(why)) if merged.is_empty() => Done {
                outcome: JobOutcome::Skipped,
                rows: 0,
                detail: why.clone(),
            },
            Some(Step::UpToDate { at }) if merged.is_empty() => {
                ok(0, format!("up to date at {at}"))
            }
            _ => {
                let mut detail = format!("seq {}", merged.join(" "));
                if let Some(Step::Merged { capped: true, .. }) = last {
                    detail.push_str("; backlog left for the next tick");
                }
                ok(events, detail)
            }
        })
    }

    async fn anomalies(&self, now: DateTime<Utc>, sources: bool) -> Result<Done, Error> {
        let settings = &self.cfg.anomaly;
        let Some(closed) = anomaly::closed_before(&self.pool, now, settings.grace).await? else {
            return Ok(Done {
                outcome: JobOutcome::Skipped,
                rows: 0,
                detail: "no rollup has run yet".into(),
            });
        };
        let detection = if sources {
            anomaly::detect_sources(&self.pool, settings, closed).await?
        } else {
            anomaly::detect_volume(&self.pool, settings, closed).await?
        };
        let recorded = anomaly::record(&self.pool, &detection).await?;
        if let (Some(nudge), true) = (&self.nudge, recorded.enqueued > 0) {
            nudge(recorded.enqueued);
        }
        Ok(ok(
            recorded.new as i64,
            format!(
                "closed before {}: {} findings, {} new, {} withdrawn, {} webhooks queued",
                closed.format("%Y-%m-%dT%H:%M:%SZ"),
                detection.findings.len(),
                recorded.new,
                recorded.withdrawn,
                recorded.enqueued
            ),
        ))
    }

    async fn housekeeping(&self, now: DateTime<Utc>) -> Result<Done, Error> {
        let deleted = upkeep::housekeeping(&self.pool, now, &self.cfg.retention).await?;
        let total: u64 = deleted.iter().map(|(_, n)| n).sum();
        let detail = deleted
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(ok(total as i64, format!("deleted: {detail}")))
    }
}

impl TickHandler for Rollup {
    async fn tick(&self, tick: Tick) -> Result<(), Retry> {
        let reports = self.run_at(tick.scheduled, Utc::now()).await;
        let failed: Vec<String> = reports
            .iter()
            .filter(|r| r.outcome == JobOutcome::Failed)
            .map(|r| format!("{}: {}", r.job, r.error.as_deref().unwrap_or("")))
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Retry(failed.join("; ")))
        }
    }
}
