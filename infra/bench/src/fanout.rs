//! `ferry-bench fanout`: webhook fan-out to local receivers, against plain HTTP POSTs of the
//! same bodies to the same receivers, in one run.
//!
//! 1. **Throughput.** `events` events are ingested for `receivers` endpoints (every endpoint
//!    subscribes to every event): `events × receivers` deliveries wait in the outbox. The
//!    fanout drains them: claim under lease, sign, POST, record every attempt. The baseline
//!    POSTs the same bodies from memory with the same concurrency: no database, no signing.
//! 2. **Latency at a steady rate.** Events arrive through the ingest handler at `rate` per
//!    second, each for one endpoint (a subject filter per endpoint). The loader nudges the
//!    fanout after each commit, as the platform queue would; the figure is the time from the
//!    commit (the handler's return) to the receiver's receipt.
//!
//! Receivers are real HTTP servers on loopback in this process; they answer 204 at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ferry_fanout::endpoints::{self, NewEndpoint};
use ferry_fanout::guard::SystemLookup;
use ferry_fanout::{Fanout, FanoutConfig};
use ferry_ingest::Ingest;
use ferry_shared::config::{Config, Env};
use ferry_shared::{QueueBatch, QueueHandler, QueueMessage};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::load::prepare;
use ferry_local::partner::{Behaviour, Partners};

/// Options of the fanout benchmark.
#[derive(Debug, Clone)]
pub struct FanoutBench {
    pub receivers: usize,
    /// Events of the throughput run (each goes to every receiver).
    pub events: usize,
    /// Events per second of the latency run.
    pub rate: u32,
    /// Seconds of the latency run.
    pub seconds: u64,
}

const TENANT: &str = "acme";

/// Settings for loopback receivers, with one keyring made for this run (sealing is part of
/// what is measured); everything else is the production default.
pub(crate) fn settings() -> anyhow::Result<FanoutConfig> {
    static KEYS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let keys = KEYS.get_or_init(|| ferry_fanout::keys::Keyring::new_entry("bench"));
    let env = Env::process()
        .set("FERRY_WEBHOOK_ALLOW_HTTP", "true")
        .set("FERRY_WEBHOOK_ALLOW_NETS", "127.0.0.0/8")
        .set("FERRY_WEBHOOK_KEYS", keys.clone());
    Ok(FanoutConfig::from_env(&env)?)
}

pub(crate) fn cloud_event(id: &str, kind: &str, subject: &str) -> serde_json::Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "/bench/fanout",
        "type": kind,
        "subject": subject,
        "time": Utc::now().to_rfc3339(),
        "tenantid": TENANT,
        "datacontenttype": "application/json",
        "data": {"sku": subject, "price": 1999, "currency": "EUR", "stock": 12}
    })
}

/// Ingests events as one message (a CloudEvents batch); returns when committed.
pub(crate) async fn publish(
    ingest: &Ingest,
    message_id: &str,
    events: &[serde_json::Value],
) -> anyhow::Result<()> {
    let outcome = ingest
        .handle(QueueBatch {
            messages: vec![QueueMessage {
                id: message_id.into(),
                body: serde_json::to_vec(events)?,
                delivery_count: 1,
                ..Default::default()
            }],
        })
        .await;
    anyhow::ensure!(outcome.failed.is_empty(), "ingest failed: {outcome:?}");
    Ok(())
}

pub(crate) async fn add_endpoints(
    pool: &PgPool,
    cfg: &FanoutConfig,
    partners: &Partners,
    n: usize,
    kind: &str,
    subject: impl Fn(usize) -> Option<String>,
) -> anyhow::Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let (id, _secret) = endpoints::add(
            pool,
            &cfg.policy,
            cfg.keys()?,
            &SystemLookup,
            &NewEndpoint {
                tenant_id: TENANT.into(),
                url: partners.url(i),
                event_types: vec![kind.into()],
                subject: subject(i),
                description: format!("bench receiver {i}"),
                ..Default::default()
            },
        )
        .await?;
        ids.push(id);
    }
    Ok(ids)
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Waits until the receivers have answered `n` requests in all (or `timeout` passes).
async fn received(partners: &Partners, n: usize, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while partners.count() < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {n} requests arrived within {timeout:?}",
            partners.count()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Runs the benchmark and prints its figures.
#[allow(clippy::print_stdout)]
pub async fn fanout(admin_url: &str, cfg: &Config, opts: &FanoutBench) -> anyhow::Result<()> {
    let mut cfg = cfg.clone();
    cfg.db.max_connections = cfg.db.max_connections.max(8);
    let pool = prepare(admin_url, "bench_fanout", &cfg).await?;
    let fcfg = settings()?;
    let partners = Partners::start(opts.receivers, Behaviour::default()).await?;

    println!("machine   {}", crate::machine::load_line());
    let (burst, fanout, rate) = throughput(&cfg, &pool, &fcfg, &partners, opts).await?;
    let base_rate = baseline(&pool, &fcfg, &partners, &burst, opts).await?;
    println!("  ratio fanout/baseline: {:.2}", rate / base_rate);
    println!("machine   {}", crate::machine::load_line());
    for id in &burst {
        endpoints::disable(&pool, *id, "bench: throughput run done").await?;
    }
    let (offered, p99) = steady(&cfg, &pool, &fcfg, &partners, opts, fanout).await?;
    println!(
        "targets: >= 2000 deliveries/s: {}; p99 < 1 s at 500 events/s: {}",
        if rate >= 2000.0 { "met" } else { "NOT met" },
        if p99 < Duration::from_secs(1) && offered >= 0.95 * f64::from(opts.rate) {
            "met"
        } else {
            "NOT met"
        }
    );
    println!("machine   {}", crate::machine::load_line());
    pool.close().await;
    ferry_local::citus::drop_database(admin_url, "bench_fanout").await?;
    Ok(())
}

/// Commit-to-receipt latency of every committed event, sorted, and how many were received
/// before the loader's commit call returned: a drain already under way can claim a delivery
/// the moment the commit is visible, before the hook runs; such receipts count as 0 ms.
fn latencies(
    partners: &Partners,
    committed: &HashMap<String, Instant>,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let receipts = partners.received();
    let early = receipts
        .iter()
        .filter(|r| committed.get(&r.event_id).is_some_and(|c| r.at < *c))
        .count();
    let mut latency: Vec<Duration> = receipts
        .iter()
        .filter_map(|r| {
            committed
                .get(&r.event_id)
                .map(|c| r.at.saturating_duration_since(*c))
        })
        .collect();
    anyhow::ensure!(
        latency.len() == committed.len(),
        "{} receipts for {} events",
        latency.len(),
        committed.len()
    );
    latency.sort();
    Ok((latency, early))
}

/// Throughput: `events × receivers` deliveries waiting in the outbox, drained. Returns the
/// endpoints, the handler and deliveries per second.
#[allow(clippy::print_stdout)]
async fn throughput(
    cfg: &Config,
    pool: &PgPool,
    fcfg: &FanoutConfig,
    partners: &Partners,
    opts: &FanoutBench,
) -> anyhow::Result<(Vec<i64>, Fanout, f64)> {
    let concurrency = fcfg.concurrency;
    let burst = add_endpoints(pool, fcfg, partners, opts.receivers, "bench.burst", |_| {
        None
    })
    .await?;
    let ingest = Ingest::with_pool(cfg, pool.clone(), "ingest");
    let t = Instant::now();
    for (chunk, ids) in (0..opts.events).collect::<Vec<_>>().chunks(100).enumerate() {
        let events: Vec<_> = ids
            .iter()
            .map(|i| cloud_event(&format!("burst-{i}"), "bench.burst", "all"))
            .collect();
        publish(&ingest, &format!("burst-msg-{chunk}"), &events).await?;
    }
    let total = opts.events * opts.receivers;
    let queued: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = 'pending'")
            .fetch_one(pool)
            .await?;
    anyhow::ensure!(
        queued as usize == total,
        "{queued} deliveries queued, expected {total}"
    );
    println!(
        "outbox: {total} deliveries ({} events x {} endpoints) queued in {:.2} s",
        opts.events,
        opts.receivers,
        t.elapsed().as_secs_f64()
    );

    let fanout = Fanout::new(pool.clone(), fcfg.clone(), Arc::new(SystemLookup), "fanout")?;
    let before = partners.count();
    let t = Instant::now();
    let mut report = ferry_fanout::Report::default();
    while partners.count() < before + total && t.elapsed() < Duration::from_secs(600) {
        let r = fanout.drain().await?;
        report.attempts += r.attempts;
        report.delivered += r.delivered;
        report.retried += r.retried;
    }
    received(partners, before + total, Duration::from_secs(5)).await?;
    let fanout_time = t.elapsed();
    let rate = total as f64 / fanout_time.as_secs_f64();
    anyhow::ensure!(
        report.delivered as usize == total && report.retried == 0,
        "fanout report: {report:?}"
    );
    println!(
        "fanout: {total} deliveries in {:.2} s = {rate:.0} deliveries/s ({} attempts, {} retried; concurrency {concurrency}, {} per endpoint)",
        fanout_time.as_secs_f64(),
        report.attempts,
        report.retried,
        fcfg.per_endpoint
    );

    Ok((burst, fanout, rate))
}

/// Baseline: the same bodies POSTed from memory with the same concurrency (no claim, signing
/// or record). Returns requests per second.
#[allow(clippy::print_stdout)]
async fn baseline(
    pool: &PgPool,
    fcfg: &FanoutConfig,
    partners: &Partners,
    burst: &[i64],
    opts: &FanoutBench,
) -> anyhow::Result<f64> {
    let concurrency = fcfg.concurrency;
    let total = opts.events * opts.receivers;
    let bodies: Vec<(i64, String)> = sqlx::query_as(
        "SELECT d.endpoint_id, m.body FROM deliveries d JOIN webhook_messages m USING (message_id)",
    )
    .fetch_all(pool)
    .await?;
    let url_of: HashMap<i64, String> = burst
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, partners.url(i)))
        .collect();
    let client = reqwest::Client::builder()
        .timeout(fcfg.timeout)
        .no_proxy()
        .build()?;
    let jobs: Vec<(String, String)> = bodies
        .into_iter()
        .map(|(e, b)| (url_of[&e].clone(), b))
        .collect();
    let jobs = Arc::new(std::sync::Mutex::new(jobs));
    let before = partners.count();
    let t = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (jobs, client) = (Arc::clone(&jobs), client.clone());
        workers.spawn(async move {
            loop {
                let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some((url, body)) = job else { break };
                let r = client
                    .post(url)
                    .header("content-type", "application/cloudevents+json")
                    .body(body)
                    .send()
                    .await;
                if let Ok(r) = r {
                    let _ = r.bytes().await;
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    received(partners, before + total, Duration::from_secs(5)).await?;
    let base_rate = total as f64 / t.elapsed().as_secs_f64();
    println!(
        "  baseline (the same bodies POSTed from memory, {concurrency} at a time: no claim, signing or record): {:.2} s = {base_rate:.0} requests/s",
        t.elapsed().as_secs_f64()
    );
    Ok(base_rate)
}

/// Latency at a steady rate, nudged after each commit. Returns the offered rate and the
/// p99 of commit-to-receipt latency.
#[allow(clippy::print_stdout)]
async fn steady(
    cfg: &Config,
    pool: &PgPool,
    fcfg: &FanoutConfig,
    partners: &Partners,
    opts: &FanoutBench,
    fanout: Fanout,
) -> anyhow::Result<(f64, Duration)> {
    add_endpoints(pool, fcfg, partners, opts.receivers, "bench.steady", |i| {
        Some(format!("r{i}"))
    })
    .await?;
    // The nudge hook runs right after the commit: its instant is where latency starts.
    let nudged = Arc::new(Notify::new());
    let commit_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let ingest = {
        let (nudged, commit_at) = (Arc::clone(&nudged), Arc::clone(&commit_at));
        Ingest::with_pool(cfg, pool.clone(), "ingest").with_nudge(Arc::new(move |_| {
            *commit_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            nudged.notify_one();
        }))
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fanout = Arc::new(fanout);
    let worker = {
        let (fanout, nudged, stop) = (Arc::clone(&fanout), Arc::clone(&nudged), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut drains = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                // The timer sweep would also come by; a nudge is what makes it quick.
                let _ = tokio::time::timeout(Duration::from_millis(500), nudged.notified()).await;
                if fanout.drain().await.is_ok() {
                    drains += 1;
                }
            }
            drains
        })
    };
    let per_tick = 10usize;
    let period = Duration::from_secs_f64(per_tick as f64 / f64::from(opts.rate.max(1)));
    let ticks = (u64::from(opts.rate) * opts.seconds) as usize / per_tick;
    let mut committed: HashMap<String, Instant> = HashMap::with_capacity(ticks * per_tick);
    let mut clock = tokio::time::interval(period);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let before = partners.count();
    let t = Instant::now();
    for tick in 0..ticks {
        clock.tick().await;
        let ids: Vec<String> = (0..per_tick)
            .map(|j| format!("steady-{}", tick * per_tick + j))
            .collect();
        let events: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(j, id)| {
                let r = (tick * per_tick + j) % opts.receivers;
                cloud_event(id, "bench.steady", &format!("r{r}"))
            })
            .collect();
        publish(&ingest, &format!("steady-msg-{tick}"), &events).await?;
        let at = commit_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| anyhow::anyhow!("a commit that queued deliveries sent no nudge"))?;
        committed.extend(ids.into_iter().map(|id| (id, at)));
    }
    let offered = committed.len() as f64 / t.elapsed().as_secs_f64();
    received(partners, before + committed.len(), Duration::from_secs(60)).await?;
    stop.store(true, std::sync::atomic::Ordering::Release);
    nudged.notify_one();
    let drains = worker.await?;
    let (latency, early) = latencies(partners, &committed)?;
    let p50 = percentile(&latency, 0.50);
    let p99 = percentile(&latency, 0.99);
    println!(
        "steady: {} events at {offered:.0} events/s over {:.1} s, one delivery each, {drains} drains",
        committed.len(),
        t.elapsed().as_secs_f64()
    );
    println!(
        "  commit-to-receipt latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({early} received before the commit call returned, counted as 0)",
        ms(p50),
        ms(p99),
        ms(*latency.last().unwrap_or(&Duration::ZERO))
    );
    Ok((offered, p99))
}
