//! Anomaly and data-quality checks over the rollup tables.
//!
//! A series is one metric of one tenant at one grain: `events` and `events:<type>` at 5
//! minutes (spikes and drops), `source:<source>` by hour and by day (silence and sharp drops).
//! Only *closed* buckets are scored: a bucket is closed when it ended at least `grace` before
//! both now and `rollup_state.advanced_at` (every event committed before then is counted), so
//! an incomplete bucket (still open, or not rolled up yet because a run was skipped) is never
//! read as a drop.
//!
//! For each of the last `rescore` closed buckets (late events restate them) the baseline is:
//! - **seasonal**: the same slot on previous days (7 for 5-minute and hourly series) or weeks
//!   (4 for daily ones), when at least 3 of them lie after the series' first event;
//! - otherwise **trailing**: the preceding buckets (2 hours, 1 day, 7 days), at least half of
//!   them after the first event; with less history the bucket is not scored.
//!
//! Score: `z = (x − median) / σ` with `σ = max(1.4826·MAD, √median, 0.1·median, 1)` (robust
//! spread, floored so quiet, Poisson-like series do not alarm on noise). A bucket is flagged
//! when `|z| ≥ threshold` in an allowed direction and `max(x, median) ≥ min_volume`; it is
//! reported when it is part of a run of `consecutive` flagged buckets of one direction.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use ferry_shared::error::Error;
use sqlx::PgPool;

/// Guard rails.
#[derive(Debug, Clone)]
pub struct Settings {
    /// |z| at or above which a bucket is flagged.
    pub threshold: f64,
    /// Neither the value nor its baseline reaches this: not scored (per bucket of the grain).
    pub min_volume: f64,
    /// Flagged buckets in a row (same direction) needed for a 5-minute finding.
    pub consecutive: usize,
    /// A bucket must have ended this long before now and before `advanced_at`.
    pub grace: Duration,
    /// Closed buckets re-scored on every run.
    pub rescore: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            threshold: 4.0,
            min_volume: 30.0,
            consecutive: 2,
            grace: Duration::from_secs(120),
            rescore: 6,
        }
    }
}

/// Which way a finding goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

/// How a scored bucket compares with its baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub bucket: i64,
    pub value: f64,
    pub baseline: f64,
    pub z: f64,
    pub method: &'static str,
}

/// One series' values: bucket start (epoch seconds) → value; a missing bucket is 0.
pub struct Series<'a> {
    pub grain: i64,
    pub first_seen: i64,
    pub values: &'a BTreeMap<i64, f64>,
}

impl Series<'_> {
    fn at(&self, bucket: i64) -> f64 {
        self.values.get(&bucket).copied().unwrap_or(0.0)
    }

    /// Seasonal slots before `bucket`: (step, count).
    fn season(&self) -> (i64, usize) {
        if self.grain >= 86_400 {
            (7 * 86_400, 4)
        } else {
            (86_400, 7)
        }
    }

    fn trailing_len(&self) -> usize {
        match self.grain {
            g if g >= 86_400 => 7,
            g if g >= 3_600 => 24,
            _ => 24,
        }
    }

    /// Buckets whose values the baseline of `bucket` reads (for fetching).
    pub fn needed(grain: i64, bucket: i64) -> Vec<i64> {
        let s = Series {
            grain,
            first_seen: i64::MIN,
            values: &BTreeMap::new(),
        };
        let (step, n) = s.season();
        let mut out: Vec<i64> = (1..=n as i64).map(|k| bucket - k * step).collect();
        out.extend((1..=s.trailing_len() as i64).map(|k| bucket - k * grain));
        out.push(bucket);
        out
    }

    /// Scores `bucket`, or `None` without enough history.
    pub fn score(&self, bucket: i64) -> Option<Score> {
        if bucket < self.first_seen {
            return None;
        }
        let (step, n) = self.season();
        let seasonal: Vec<f64> = (1..=n as i64)
            .map(|k| bucket - k * step)
            .filter(|b| *b >= self.first_seen)
            .map(|b| self.at(b))
            .collect();
        let (points, method) = if seasonal.len() >= 3 {
            (seasonal, "seasonal")
        } else {
            let w = self.trailing_len();
            let trailing: Vec<f64> = (1..=w as i64)
                .map(|k| bucket - k * self.grain)
                .filter(|b| *b >= self.first_seen)
                .map(|b| self.at(b))
                .collect();
            if trailing.len() < (w / 2).max(3) {
                return None;
            }
            (trailing, "trailing")
        };
        let baseline = median(&points);
        let deviations: Vec<f64> = points.iter().map(|p| (p - baseline).abs()).collect();
        let mad = median(&deviations);
        let sigma = (1.4826 * mad)
            .max(baseline.sqrt())
            .max(0.1 * baseline)
            .max(1.0);
        let value = self.at(bucket);
        Some(Score {
            bucket,
            value,
            baseline,
            z: (value - baseline) / sigma,
            method,
        })
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Scores the given (ascending) buckets and returns the findings that pass the guard rails.
pub fn findings(
    series: &Series<'_>,
    buckets: &[i64],
    settings: &Settings,
    directions: &[Direction],
    consecutive: usize,
) -> Vec<(Direction, Score)> {
    let flagged: Vec<Option<(Direction, Score)>> = buckets
        .iter()
        .map(|b| {
            let s = series.score(*b)?;
            if s.value.max(s.baseline) < settings.min_volume {
                return None;
            }
            let dir = if s.z >= settings.threshold {
                Direction::Up
            } else if s.z <= -settings.threshold {
                Direction::Down
            } else {
                return None;
            };
            directions.contains(&dir).then_some((dir, s))
        })
        .collect();
    let need = consecutive.max(1);
    let mut out = Vec::new();
    let mut i = 0;
    while i < flagged.len() {
        let Some((dir, _)) = &flagged[i] else {
            i += 1;
            continue;
        };
        let dir = *dir;
        let mut j = i;
        while j < flagged.len() && flagged[j].as_ref().is_some_and(|(d, _)| *d == dir) {
            j += 1;
        }
        if j - i >= need {
            out.extend(flagged[i..j].iter().flatten().cloned());
        }
        i = j;
    }
    out
}

/// The start of the newest bucket of `grain` that is closed at `closed_before`.
fn closed_buckets(closed_before: DateTime<Utc>, grain: i64, n: usize) -> Vec<i64> {
    let end = closed_before.timestamp().div_euclid(grain) * grain; // exclusive
    (1..=n as i64).rev().map(|k| end - k * grain).collect()
}

/// Where the checks may look: buckets ending at or before this are closed.
pub async fn closed_before(
    pool: &PgPool,
    now: DateTime<Utc>,
    grace: Duration,
) -> Result<Option<DateTime<Utc>>, Error> {
    let settled: Option<Option<DateTime<Utc>>> =
        sqlx::query_scalar("SELECT advanced_at FROM rollup_state WHERE name = 'events'")
            .fetch_optional(pool)
            .await?;
    let Some(settled) = settled.flatten() else {
        return Ok(None);
    };
    Ok(Some(crate::upkeep::before(now.min(settled), grace)))
}

/// What one check re-scored: a tenant's buckets of one grain, for some kinds of finding.
/// Findings in it that were not found again are withdrawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    pub tenant_id: String,
    pub grain: i64,
    pub buckets: Vec<i64>,
    pub kinds: &'static [&'static str],
}

/// The result of one check.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Detection {
    pub findings: Vec<Finding>,
    pub scopes: Vec<Scope>,
    /// When the check started reading (database clock): a finding row written after this by
    /// an overlapping, newer check is neither overwritten nor withdrawn by this one.
    pub started: Option<DateTime<Utc>>,
}

async fn clock(pool: &PgPool) -> Result<DateTime<Utc>, Error> {
    Ok(sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await?)
}

/// A finding to upsert.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub tenant_id: String,
    pub metric: String,
    pub grain: i64,
    pub kind: &'static str,
    pub score: Score,
}

async fn tenants(pool: &PgPool) -> Result<Vec<String>, Error> {
    Ok(
        sqlx::query_scalar("SELECT tenant_id FROM tenants WHERE status = 'active' ORDER BY 1")
            .fetch_all(pool)
            .await?,
    )
}

async fn series_of(
    pool: &PgPool,
    tenant: &str,
    prefix: &str,
    since: DateTime<Utc>,
) -> Result<Vec<(String, DateTime<Utc>)>, Error> {
    Ok(sqlx::query_as(
        "SELECT metric, first_seen FROM rollup_series
         WHERE tenant_id = $1 AND (metric = $2 OR metric LIKE $2 || ':%') AND last_seen >= $3",
    )
    .bind(tenant)
    .bind(prefix)
    .bind(since)
    .fetch_all(pool)
    .await?)
}

fn needed_buckets(grain: i64, scored: &[i64]) -> Vec<DateTime<Utc>> {
    let set: BTreeSet<i64> = scored
        .iter()
        .flat_map(|b| Series::needed(grain, *b))
        .collect();
    set.into_iter()
        .filter_map(|b| Utc.timestamp_opt(b, 0).single())
        .collect()
}

/// Spikes and drops of event volume, in total and per type, over closed 5-minute buckets.
pub async fn detect_volume(
    pool: &PgPool,
    settings: &Settings,
    closed_before: DateTime<Utc>,
) -> Result<Detection, Error> {
    const GRAIN: i64 = 300;
    // The re-scored window, plus the buckets before it that a run of consecutive buckets
    // reaching into the window may start from (so a finding at the window's edge stands).
    let rescore = settings.rescore.max(1);
    let scored = closed_buckets(
        closed_before,
        GRAIN,
        rescore + settings.consecutive.max(1) - 1,
    );
    let window = scored[scored.len() - rescore..].to_vec();
    let buckets = needed_buckets(GRAIN, &scored);
    let since = buckets.first().copied().unwrap_or(closed_before);
    let mut out = Detection {
        started: Some(clock(pool).await?),
        ..Detection::default()
    };
    for tenant in tenants(pool).await? {
        out.scopes.push(Scope {
            tenant_id: tenant.clone(),
            grain: GRAIN,
            buckets: window.clone(),
            kinds: &["spike", "drop"],
        });
        let metrics = series_of(pool, &tenant, "events", since).await?;
        if metrics.is_empty() {
            continue;
        }
        let rows: Vec<(String, DateTime<Utc>, i64)> = sqlx::query_as(
            "SELECT type, bucket, events FROM rollup_events
             WHERE tenant_id = $1 AND grain = 300 AND bucket = ANY($2)",
        )
        .bind(&tenant)
        .bind(&buckets)
        .fetch_all(pool)
        .await?;
        let mut values: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
        for (ty, bucket, n) in rows {
            let b = bucket.timestamp();
            *values
                .entry("events".into())
                .or_default()
                .entry(b)
                .or_default() += n as f64;
            *values
                .entry(format!("events:{ty}"))
                .or_default()
                .entry(b)
                .or_default() += n as f64;
        }
        let empty = BTreeMap::new();
        for (metric, first_seen) in metrics {
            let series = Series {
                grain: GRAIN,
                first_seen: first_seen.timestamp(),
                values: values.get(&metric).unwrap_or(&empty),
            };
            for (dir, score) in findings(
                &series,
                &scored,
                settings,
                &[Direction::Up, Direction::Down],
                settings.consecutive,
            ) {
                // Buckets before the window only complete a run; they were recorded (or
                // withdrawn) while they were in it.
                if !window.contains(&score.bucket) {
                    continue;
                }
                out.findings.push(Finding {
                    tenant_id: tenant.clone(),
                    metric: metric.clone(),
                    grain: GRAIN,
                    kind: if dir == Direction::Up {
                        "spike"
                    } else {
                        "drop"
                    },
                    score,
                });
            }
        }
    }
    Ok(out)
}

/// Sources that went silent or dropped sharply, by closed hour and closed day.
pub async fn detect_sources(
    pool: &PgPool,
    settings: &Settings,
    closed_before: DateTime<Utc>,
) -> Result<Detection, Error> {
    let mut out = Detection {
        started: Some(clock(pool).await?),
        ..Detection::default()
    };
    let tenants = tenants(pool).await?;
    for grain in [3_600_i64, 86_400] {
        let scored = closed_buckets(closed_before, grain, 1);
        let buckets = needed_buckets(grain, &scored);
        let since = buckets.first().copied().unwrap_or(closed_before);
        for tenant in &tenants {
            out.scopes.push(Scope {
                tenant_id: tenant.clone(),
                grain,
                buckets: scored.clone(),
                kinds: &["source_silent", "source_drop"],
            });
            let metrics = series_of(pool, tenant, "source", since).await?;
            if metrics.is_empty() {
                continue;
            }
            let rows: Vec<(String, DateTime<Utc>, i64)> = sqlx::query_as(
                "SELECT source, bucket, events FROM rollup_sources
                 WHERE tenant_id = $1 AND grain = $2 AND bucket = ANY($3)",
            )
            .bind(tenant)
            .bind(grain as i32)
            .bind(&buckets)
            .fetch_all(pool)
            .await?;
            let mut values: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
            for (source, bucket, n) in rows {
                values
                    .entry(format!("source:{source}"))
                    .or_default()
                    .insert(bucket.timestamp(), n as f64);
            }
            let empty = BTreeMap::new();
            for (metric, first_seen) in metrics {
                let series = Series {
                    grain,
                    first_seen: first_seen.timestamp(),
                    values: values.get(&metric).unwrap_or(&empty),
                };
                for (_, score) in findings(&series, &scored, settings, &[Direction::Down], 1) {
                    // A drop must also be a real fall, not only a statistically unusual dip.
                    let kind = if score.value == 0.0 {
                        "source_silent"
                    } else if score.value <= 0.5 * score.baseline {
                        "source_drop"
                    } else {
                        continue;
                    };
                    out.findings.push(Finding {
                        tenant_id: tenant.clone(),
                        metric: metric.clone(),
                        grain,
                        kind,
                        score,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// What [`record`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Findings not recorded before.
    pub new: u64,
    /// Findings of re-scored buckets that no longer qualify.
    pub withdrawn: u64,
    /// Webhook deliveries of `anomaly.detected` created for new findings.
    pub enqueued: u64,
}

fn at(bucket: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(bucket, 0).single()
}

/// The source of the rollup's `anomaly.detected` events.
pub const ANOMALY_SOURCE: &str = "ferry/rollup";

/// Enqueues a new finding as an `anomaly.detected` CloudEvent for the tenant's endpoints that
/// subscribed to it, in the finding's transaction. Its id names the finding, so a finding that
/// is withdrawn and later restored is not announced twice. Returns the deliveries created.
async fn announce(
    tx: &mut sqlx::PgConnection,
    f: &Finding,
    bucket: DateTime<Utc>,
) -> Result<u64, Error> {
    let bucket_text = bucket.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let id = format!(
        "anomaly/{}/{}/{}/{}",
        f.metric, f.grain, bucket_text, f.kind
    );
    let body = serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": ANOMALY_SOURCE,
        "type": "anomaly.detected",
        "subject": f.metric,
        "time": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "tenantid": f.tenant_id,
        "datacontenttype": "application/json",
        "data": {
            "metric": f.metric,
            "grain_seconds": f.grain,
            "bucket": bucket_text,
            "kind": f.kind,
            "value": f.score.value,
            "baseline": f.score.baseline,
            "score": f.score.z,
            "method": f.score.method,
        },
    });
    let n: i32 = sqlx::query_scalar(
        "SELECT ferry_enqueue($1, ferry_message_id($1, $2, $3), 'anomaly.detected', $4, $5)",
    )
    .bind(&f.tenant_id)
    .bind(ANOMALY_SOURCE)
    .bind(&id)
    .bind(&f.metric)
    .bind(body.to_string())
    .fetch_one(&mut *tx)
    .await?;
    Ok(n.max(0) as u64)
}

/// Writes a check's result in one transaction: upserts its findings (re-scoring a bucket
/// updates the row, and a withdrawn finding that qualifies again is restored) and withdraws
/// the findings of its scopes that were not found again.
pub async fn record(pool: &PgPool, detection: &Detection) -> Result<Recorded, Error> {
    let mut tx = pool.begin().await?;
    let mut out = Recorded::default();
    let started = detection.started.unwrap_or(DateTime::<Utc>::MAX_UTC);
    for f in &detection.findings {
        let Some(bucket) = at(f.score.bucket) else {
            continue;
        };
        let inserted: Option<bool> = sqlx::query_scalar(
            // updated_at comes from the insert list: a DO UPDATE on a Citus distributed
            // table may call only immutable functions.
            "INSERT INTO anomalies AS a
                 (tenant_id, metric, grain, bucket, kind, value, baseline, score, method,
                  updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())
             ON CONFLICT (tenant_id, metric, grain, bucket, kind) DO UPDATE SET
                 value = excluded.value, baseline = excluded.baseline, score = excluded.score,
                 method = excluded.method, updated_at = excluded.updated_at, withdrawn_at = NULL
             WHERE a.updated_at < $10
             RETURNING (xmax = 0)",
        )
        .bind(&f.tenant_id)
        .bind(&f.metric)
        .bind(f.grain as i32)
        .bind(bucket)
        .bind(f.kind)
        .bind(f.score.value)
        .bind(f.score.baseline)
        .bind(f.score.z)
        .bind(f.score.method)
        .bind(started)
        .fetch_optional(&mut *tx)
        .await?;
        if inserted == Some(true) {
            out.new += 1;
            out.enqueued += announce(&mut tx, f, bucket).await?;
        }
    }
    for scope in &detection.scopes {
        let buckets: Vec<DateTime<Utc>> = scope.buckets.iter().filter_map(|b| at(*b)).collect();
        let found: Vec<&Finding> = detection
            .findings
            .iter()
            .filter(|f| f.tenant_id == scope.tenant_id && f.grain == scope.grain)
            .collect();
        let metrics: Vec<&str> = found.iter().map(|f| f.metric.as_str()).collect();
        let found_at: Vec<DateTime<Utc>> = found
            .iter()
            .map(|f| at(f.score.bucket).unwrap_or(DateTime::<Utc>::MIN_UTC))
            .collect();
        let kinds: Vec<&str> = found.iter().map(|f| f.kind).collect();
        out.withdrawn += sqlx::query(
            "UPDATE anomalies a SET withdrawn_at = now(), updated_at = now()
             WHERE tenant_id = $1 AND grain = $2 AND bucket = ANY($3) AND kind = ANY($4)
               AND withdrawn_at IS NULL AND updated_at < $8
               AND NOT EXISTS (
                   SELECT 1 FROM unnest($5::text[], $6::timestamptz[], $7::text[]) AS f(metric, bucket, kind)
                   WHERE f.metric = a.metric AND f.bucket = a.bucket AND f.kind = a.kind)",
        )
        .bind(&scope.tenant_id)
        .bind(scope.grain as i32)
        .bind(&buckets)
        .bind(scope.kinds)
        .bind(&metrics)
        .bind(&found_at)
        .bind(&kinds)
        .bind(started)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &BTreeMap<i64, f64>) -> Series<'_> {
        Series {
            grain: 300,
            first_seen: 0,
            values,
        }
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn trailing_baseline_scores_a_spike() {
        let mut v: BTreeMap<i64, f64> =
            (0..30).map(|i| (i * 300, 100.0 + (i % 5) as f64)).collect();
        v.insert(30 * 300, 400.0);
        let s = series(&v).score(30 * 300).unwrap();
        assert_eq!(s.method, "trailing");
        assert!(s.z > 10.0, "{s:?}");
    }

    #[test]
    fn no_score_before_enough_history() {
        let v: BTreeMap<i64, f64> = (0..5).map(|i| (i * 300, 100.0)).collect();
        assert!(series(&v).score(5 * 300).is_none());
    }

    #[test]
    fn seasonal_baseline_when_days_of_history_exist() {
        let day = 86_400;
        let mut v = BTreeMap::new();
        for d in 0..5 {
            v.insert(d * day, 50.0);
        }
        v.insert(5 * day, 500.0);
        let s = series(&v).score(5 * day).unwrap();
        assert_eq!(s.method, "seasonal");
        assert_eq!(s.baseline, 50.0);
    }

    #[test]
    fn a_single_flagged_bucket_is_not_a_finding_when_two_are_needed() {
        let mut v: BTreeMap<i64, f64> = (0..40).map(|i| (i * 300, 100.0)).collect();
        v.insert(35 * 300, 500.0);
        let buckets: Vec<i64> = (34..40).map(|i| i * 300).collect();
        let s = series(&v);
        let f = findings(&s, &buckets, &Settings::default(), &[Direction::Up], 2);
        assert!(f.is_empty(), "{f:?}");
        v.insert(36 * 300, 500.0);
        let s = series(&v);
        let f = findings(&s, &buckets, &Settings::default(), &[Direction::Up], 2);
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn low_volume_is_not_scored() {
        let mut v: BTreeMap<i64, f64> = (0..40).map(|i| (i * 300, 2.0)).collect();
        v.insert(38 * 300, 20.0);
        v.insert(39 * 300, 20.0);
        let buckets: Vec<i64> = (34..40).map(|i| i * 300).collect();
        let s = series(&v);
        assert!(findings(&s, &buckets, &Settings::default(), &[Direction::Up], 2).is_empty());
    }
}
