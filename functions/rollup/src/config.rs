//! The rollup function's settings (environment variables: docs/configuration.md).

use std::time::Duration;

use ferry_shared::config::{bad, ConfigError, Env};

use crate::aggregate::AggregateOptions;
use crate::anomaly::Settings as AnomalySettings;
use crate::upkeep::{self, Retention, RetentionMode};

/// Settings of the rollup function (environment variables: docs/configuration.md).
#[derive(Debug, Clone)]
pub struct RollupConfig {
    pub aggregate: AggregateOptions,
    /// Time one tick may spend catching up on a backlog, window after window.
    pub budget: Duration,
    pub partitions_ahead: Duration,
    pub events_retention: Duration,
    pub retention_mode: RetentionMode,
    pub retention: Retention,
    pub housekeeping_every: Duration,
    pub anomaly: AnomalySettings,
}

impl Default for RollupConfig {
    fn default() -> Self {
        RollupConfig {
            aggregate: AggregateOptions::default(),
            budget: Duration::from_secs(40),
            partitions_ahead: Duration::from_secs(2 * 3600),
            events_retention: Duration::from_secs(30 * 86_400),
            retention_mode: RetentionMode::Drop,
            retention: Retention::default(),
            housekeeping_every: Duration::from_secs(3600),
            anomaly: AnomalySettings::default(),
        }
    }
}

impl RollupConfig {
    /// Reads the rollup's settings.
    pub fn from_env(env: &Env) -> Result<RollupConfig, ConfigError> {
        let get = |k: &str| env.get(k);
        let d = RollupConfig::default();
        let partitions_ahead = env.duration("FERRY_PARTITIONS_AHEAD", d.partitions_ahead)?;
        if partitions_ahead < Duration::from_secs(3600) {
            return Err(bad(
                "FERRY_PARTITIONS_AHEAD",
                &humantime::format_duration(partitions_ahead).to_string(),
                "must be at least 1h",
            ));
        }
        let mut rollups = d.retention.rollups;
        for (i, var) in [
            "FERRY_ROLLUP_RETENTION_5M",
            "FERRY_ROLLUP_RETENTION_1H",
            "FERRY_ROLLUP_RETENTION_1D",
        ]
        .into_iter()
        .enumerate()
        {
            rollups[i] = env.duration(var, rollups[i])?;
            let min = upkeep::MIN_ROLLUP_RETENTION[i];
            if rollups[i] < min {
                return Err(bad(
                    var,
                    &humantime::format_duration(rollups[i]).to_string(),
                    &format!(
                        "must be at least {} (the anomaly baselines read that far back)",
                        humantime::format_duration(min)
                    ),
                ));
            }
        }
        let retention_mode = match get("FERRY_RETENTION_MODE").as_deref().map(str::trim) {
            None | Some("drop") => RetentionMode::Drop,
            Some("detach") => RetentionMode::Detach,
            Some(v) => return Err(bad("FERRY_RETENTION_MODE", v, "expected drop or detach")),
        };
        Ok(RollupConfig {
            aggregate: AggregateOptions {
                lock_wait: env.duration("FERRY_ROLLUP_LOCK_WAIT", d.aggregate.lock_wait)?,
                max_events: env.checked(
                    "FERRY_ROLLUP_MAX_EVENTS",
                    d.aggregate.max_events,
                    |n| *n > 0,
                )?,
                work_mem_mb: env.checked(
                    "FERRY_ROLLUP_WORK_MEM_MB",
                    d.aggregate.work_mem_mb,
                    |n| (4..=65_536).contains(n),
                )?,
                statement_timeout: env.duration(
                    "FERRY_ROLLUP_STATEMENT_TIMEOUT",
                    d.aggregate.statement_timeout,
                )?,
                // Always set: the default is 0, never the server's.
                parallel_workers: Some(
                    env.checked("FERRY_ROLLUP_PARALLEL_WORKERS", 0, |n| *n <= 64)?,
                ),
            },
            budget: env.duration("FERRY_ROLLUP_BUDGET", d.budget)?,
            partitions_ahead,
            events_retention: env.duration("FERRY_EVENTS_RETENTION", d.events_retention)?,
            retention_mode,
            retention: Retention {
                ledger: env.duration("FERRY_LEDGER_RETENTION", d.retention.ledger)?,
                quarantine: env.duration("FERRY_QUARANTINE_RETENTION", d.retention.quarantine)?,
                job_runs: env.duration("FERRY_JOB_RUNS_RETENTION", d.retention.job_runs)?,
                anomalies: env.duration("FERRY_ANOMALY_RETENTION", d.retention.anomalies)?,
                rollups,
            },
            housekeeping_every: env.duration("FERRY_HOUSEKEEPING_EVERY", d.housekeeping_every)?,
            anomaly: AnomalySettings {
                threshold: env
                    .checked("FERRY_ANOMALY_THRESHOLD", d.anomaly.threshold, |n| *n > 0.0)?,
                min_volume: env.checked("FERRY_ANOMALY_MIN_VOLUME", d.anomaly.min_volume, |n| {
                    *n >= 0.0
                })?,
                consecutive: env.checked(
                    "FERRY_ANOMALY_CONSECUTIVE",
                    d.anomaly.consecutive,
                    |n| *n >= 1,
                )?,
                grace: env.duration("FERRY_ANOMALY_GRACE", d.anomaly.grace)?,
                rescore: d.anomaly.rescore,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<RollupConfig, ConfigError> {
        RollupConfig::from_env(&Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn defaults() {
        let c = from(&[]).unwrap();
        assert_eq!(c.partitions_ahead, Duration::from_secs(7200));
        assert_eq!(c.retention_mode, RetentionMode::Drop);
        assert_eq!(c.aggregate.lock_wait, Duration::from_secs(2));
    }

    #[test]
    fn bad_values_name_the_variable() {
        assert_eq!(
            from(&[("FERRY_PARTITIONS_AHEAD", "30m")]).unwrap_err().var,
            "FERRY_PARTITIONS_AHEAD"
        );
        assert_eq!(
            from(&[("FERRY_RETENTION_MODE", "shred")]).unwrap_err().var,
            "FERRY_RETENTION_MODE"
        );
        assert_eq!(
            from(&[("FERRY_ANOMALY_THRESHOLD", "-1")]).unwrap_err().var,
            "FERRY_ANOMALY_THRESHOLD"
        );
        // Shorter than the anomaly baselines read back.
        assert_eq!(
            from(&[("FERRY_ROLLUP_RETENTION_5M", "2d")])
                .unwrap_err()
                .var,
            "FERRY_ROLLUP_RETENTION_5M"
        );
        assert_eq!(
            from(&[("FERRY_ROLLUP_RETENTION_1D", "30d")])
                .unwrap_err()
                .var,
            "FERRY_ROLLUP_RETENTION_1D"
        );
        let c = from(&[("FERRY_ROLLUP_RETENTION_1H", "90d")]).unwrap();
        assert_eq!(c.retention.rollups[1], Duration::from_secs(90 * 86_400));
        let c = from(&[
            ("FERRY_RETENTION_MODE", "detach"),
            ("FERRY_EVENTS_RETENTION", "2d"),
        ])
        .unwrap();
        assert_eq!(c.retention_mode, RetentionMode::Detach);
        assert_eq!(c.events_retention, Duration::from_secs(2 * 86_400));
        // The rollup stays on one core unless allowed more.
        assert_eq!(from(&[]).unwrap().aggregate.parallel_workers, Some(0));
        let c = from(&[("FERRY_ROLLUP_PARALLEL_WORKERS", "4")]).unwrap();
        assert_eq!(c.aggregate.parallel_workers, Some(4));
        assert_eq!(
            from(&[("FERRY_ROLLUP_PARALLEL_WORKERS", "65")])
                .unwrap_err()
                .var,
            "FERRY_ROLLUP_PARALLEL_WORKERS"
        );
    }
}
