//! `ferry-bench e2e`: the whole pipeline at a steady rate, timed per event.
//!
//! The demo's stream (clickstream, product changes, payments; producer retries, malformed
//! messages and bad events included) is sent into the local queue at `rate` events per second
//! for `seconds`. `workers` consumers hand it to the ingest handler in batches of up to
//! `batch` messages, as Lambda's SQS poller or the Azure queue trigger would. Every commit that
//! queues webhooks nudges the fanout through a second local queue, drained by `fanout_workers`
//! instances (2, the Terraform module's `maximum_concurrency`); the rollup function's timer
//! ticks every `rollup_every` (production: 1 minute) with every job of a real tick: once before
//! sending (a deployed timer has run before the first event), then half a period into sending
//! and every period after, so that a tick with half a period's events lands mid-stream (when
//! sending lasts longer than half a period). One receiver per tenant answers at once.
//!
//! Measured for each event:
//! - **queue → committed row**: from the message's send to the return of the handler call
//!   that committed it (the commit comes just before the return: an upper bound);
//! - **event → visible in the rollups**: from that commit to the end of the first rollup job
//!   whose watermark covers the event's `seq`, against the bound "one tick period + that run";
//! - **commit → partner receipt**, for each event that produced a webhook.
//!
//! Everything runs in this process and on this machine's PostgreSQL: producer, consumers,
//! fanout, rollup and receivers share its cores.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ferry_fanout::guard::SystemLookup;
use ferry_fanout::Fanout;
use ferry_ingest::Ingest;
use ferry_local::demo::{generate, DemoOptions, TENANTS};
use ferry_local::partner::{Behaviour, Partners};
use ferry_local::queue::{consume, LocalQueue};
use ferry_local::webhooks::PARTNER_TYPES;
use ferry_rollup::{Rollup, RollupConfig};
use ferry_shared::config::{Config, Env};
use ferry_shared::{QueueBatch, QueueHandler, QueueOutcome};
use serde_json::Value;
use sqlx::PgPool;

use crate::fanout::{ms, percentile};
use crate::load::prepare;
use crate::machine;

/// Options of the end-to-end benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct E2eBench {
    /// Events per second sent into the local queue.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u32,
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Concurrent ingest invocations.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Messages per invocation.
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// Concurrent fanout invocations on the nudge queue (the Terraform module's default
    /// `maximum_concurrency` for fanout: each instance sends up to FERRY_FANOUT_PER_ENDPOINT
    /// at once to an endpoint).
    #[arg(long, default_value_t = 2)]
    pub fanout_workers: usize,
    /// Seconds between rollup timer ticks (production: 60).
    #[arg(long, default_value_t = 60)]
    pub rollup_every: u64,
    /// Seed of the generated stream.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The events' own times: `live` (each a few seconds before it is sent, 1% up to 10
    /// minutes late, as a live stream) or `spread` (over the two hours before sending, as the demo
    /// does to fill its charts: each tick then merges every 5-minute bucket of those hours).
    #[arg(long, value_enum, default_value_t = EventTimes::Live)]
    pub event_times: EventTimes,
    /// Leave the database (`bench_e2e`) in place afterwards, to inspect or profile it.
    #[arg(long)]
    pub keep: bool,
}

/// How the stream's events are stamped (see [`E2eBench::event_times`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventTimes {
    Live,
    Spread,
}

impl E2eBench {
    fn period(&self) -> Duration {
        Duration::from_secs(self.rollup_every.max(1))
    }
}

const DB: &str = "bench_e2e";

/// The generated stream: message bodies in send order, with each one's events.
struct Stream {
    bodies: Vec<Vec<u8>>,
    /// Events in each message (a message that is not JSON counts as one).
    weights: Vec<u32>,
    /// The ids of each message's events (a retry repeats its original's).
    ids: Vec<Vec<String>>,
}

impl Stream {
    fn generate(opts: &E2eBench) -> Stream {
        let demo = DemoOptions {
            events: opts.rate as usize * opts.seconds as usize,
            workers: opts.workers,
            batch_size: opts.batch,
            seed: opts.seed,
            live_rate: (opts.event_times == EventTimes::Live).then_some(opts.rate),
        };
        let run = format!("e2e{:x}", Utc::now().timestamp_millis());
        let (bodies, _) = generate(&demo, &run, Utc::now());
        let mut weights = Vec::with_capacity(bodies.len());
        let mut ids = Vec::with_capacity(bodies.len());
        for body in &bodies {
            let events = match serde_json::from_slice::<Value>(body) {
                Ok(Value::Array(events)) => events,
                Ok(event) => vec![event],
                Err(_) => vec![Value::Null],
            };
            weights.push(events.len().max(1) as u32);
            ids.push(
                events
                    .iter()
                    .filter_map(|e| e.get("id").and_then(Value::as_str).map(str::to_owned))
                    .collect(),
            );
        }
        Stream {
            bodies,
            weights,
            ids,
        }
    }

    fn events(&self) -> u64 {
        self.weights.iter().map(|w| u64::from(*w)).sum()
    }
}

/// The ingest handler, noting when each message's call returned.
struct Timed {
    ingest: Ingest,
    committed: Mutex<HashMap<String, Instant>>,
    loaded: AtomicI64,
    redelivered: AtomicI64,
}

impl QueueHandler for Timed {
    async fn handle(&self, batch: QueueBatch) -> QueueOutcome {
        let report = self.ingest.process(&batch).await;
        let now = Instant::now();
        let loaded: u64 = report.units.iter().map(|u| u.loaded).sum();
        self.loaded.fetch_add(loaded as i64, Ordering::Relaxed);
        self.redelivered
            .fetch_add(report.failed.len() as i64, Ordering::Relaxed);
        let mut committed = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        for m in &batch.messages {
            if !report.failed.contains(&m.id) {
                committed.entry(m.id.clone()).or_insert(now);
            }
        }
        QueueOutcome {
            failed: report.failed,
        }
    }
}

/// One tick of the rollup timer, as the benchmark saw it.
#[derive(Debug, Clone)]
struct TickRun {
    /// When the rollup job's transaction ended (its rows visible from then on).
    rollup_done: Instant,
    /// How long the rollup job took.
    rollup_took: Duration,
    /// The watermark after the tick: every `seq` up to it is in the rollups.
    last_seq: i64,
    /// Every job of the tick.
    took: Duration,
}

/// Runs the benchmark and prints its figures.
#[allow(clippy::print_stdout)]
pub async fn e2e(admin_url: &str, cfg: &Config, opts: &E2eBench) -> anyhow::Result<()> {
    let mut cfg = cfg.clone();
    cfg.db.max_connections = cfg.db.max_connections.max(opts.workers as u32 + 6);
    let pool = prepare(admin_url, DB, &cfg).await?;
    println!(
        "generating {} events/s for {} s (the demo's mix; event times: {})",
        opts.rate,
        opts.seconds,
        match opts.event_times {
            EventTimes::Live => "live, as sent",
            EventTimes::Spread => "spread over the two hours before sending",
        }
    );
    let stream = Stream::generate(opts);
    let bytes: usize = stream.bodies.iter().map(Vec::len).sum();
    println!(
        "  {} events in {} messages, {:.1} MiB; {} workers x {} messages per invocation; rollup every {} s",
        stream.events(),
        stream.bodies.len(),
        bytes as f64 / 1048576.0,
        opts.workers,
        opts.batch,
        opts.period().as_secs_f64()
    );
    let partners = Partners::start(TENANTS.len(), Behaviour::default()).await?;
    let fcfg = crate::fanout::settings()?;
    for (i, tenant) in TENANTS.iter().enumerate() {
        ferry_fanout::endpoints::add(
            &pool,
            &fcfg.policy,
            fcfg.keys()?,
            &SystemLookup,
            &ferry_fanout::endpoints::NewEndpoint {
                tenant_id: (*tenant).into(),
                url: partners.url(i),
                event_types: PARTNER_TYPES.iter().map(|t| t.to_string()).collect(),
                description: format!("e2e partner of {tenant}"),
                ..Default::default()
            },
        )
        .await?;
    }
    let fanout = Arc::new(Fanout::new(
        pool.clone(),
        fcfg,
        Arc::new(SystemLookup),
        "fanout",
    )?);
    println!("machine   {}", machine::load_line());
    let run = drive(&cfg, &pool, &stream, fanout, opts).await?;
    println!("machine   {}", machine::load_line());
    report(&pool, &stream, &run, &partners, opts).await?;
    pool.close().await;
    if opts.keep {
        println!("kept the database {DB}");
    } else {
        ferry_local::citus::drop_database(admin_url, DB).await?;
    }
    Ok(())
}

/// What a run recorded.
struct Run {
    /// Per message (send order): when it was sent, and when its handler call returned.
    sent: Vec<Instant>,
    committed: Vec<Option<Instant>>,
    ticks: Vec<TickRun>,
    loaded: i64,
    redelivered: i64,
    dead: usize,
    offered_secs: f64,
    /// Deliveries the outbox holds for the run's events, and how many were still pending.
    deliveries: i64,
    pending: i64,
}

/// Sends the stream at the rate through queue, ingest, fanout and rollup timer; waits until
/// everything is ingested, delivered and rolled up.
#[allow(clippy::print_stdout)]
async fn drive(
    cfg: &Config,
    pool: &PgPool,
    stream: &Stream,
    fanout: Arc<Fanout>,
    opts: &E2eBench,
) -> anyhow::Result<Run> {
    let nudges = Arc::new(LocalQueue::new(Duration::from_secs(60), Some(5)));
    let nudge = ferry_local::webhooks::nudge_into(Arc::clone(&nudges));
    let stop_fanout = Arc::new(AtomicBool::new(false));
    let fanout_consumer = tokio::spawn(consume(
        Arc::clone(&nudges),
        fanout,
        opts.fanout_workers,
        10,
        Some(Arc::clone(&stop_fanout)),
    ));
    let rcfg = RollupConfig::from_env(&Env::process())?;
    let rollup =
        Rollup::with_pool(cfg, rcfg, pool.clone(), "rollup").with_nudge(Arc::clone(&nudge));
    // A deployed timer has ticked before the first event arrives (it makes today's partitions
    // and rollup state); the run's own ticks fall half a period into sending and every period
    // after, so that one lands mid-stream when sending lasts longer than half a period.
    let first = rollup.run_at(Utc::now(), Utc::now()).await;
    if let Some((job, e)) = first
        .iter()
        .find_map(|j| j.error.as_deref().map(|e| (j.job, e)))
    {
        anyhow::bail!("the tick before sending failed: its {job} job: {e}");
    }
    let target = Arc::new(AtomicI64::new(i64::MAX));
    let timer = tokio::spawn(rollup_timer(
        rollup,
        pool.clone(),
        opts.period(),
        Arc::clone(&target),
    ));

    let queue = Arc::new(LocalQueue::new(Duration::from_secs(30), Some(5)));
    let handler = Arc::new(Timed {
        ingest: Ingest::with_pool(cfg, pool.clone(), "ingest").with_nudge(nudge),
        committed: Mutex::default(),
        loaded: AtomicI64::new(0),
        redelivered: AtomicI64::new(0),
    });
    let stop_ingest = Arc::new(AtomicBool::new(false));
    let consumers = tokio::spawn(consume(
        Arc::clone(&queue),
        Arc::clone(&handler),
        opts.workers,
        opts.batch,
        Some(Arc::clone(&stop_ingest)),
    ));
    let (ids, sent) = produce(&queue, stream, opts.rate, &handler).await;
    let offered_secs = sent.last().map_or(0.0, |l| (*l - sent[0]).as_secs_f64());
    stop_ingest.store(true, Ordering::Release);
    consumers.await?;

    // Every event's webhooks delivered (nudged; the timer sweep is not needed here).
    let (deliveries, pending) = settle_outbox(pool, Duration::from_secs(60)).await?;
    stop_fanout.store(true, Ordering::Release);
    fanout_consumer.await?;
    // The timer keeps ticking until its watermark covers every stored event.
    let newest: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM events")
        .fetch_one(pool)
        .await?;
    target.store(newest.unwrap_or(0), Ordering::Release);
    println!("  ingested; waiting for the rollup timer to cover every event");
    let ticks = timer.await??;

    let committed_at =
        std::mem::take(&mut *handler.committed.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(Run {
        committed: ids.iter().map(|id| committed_at.get(id).copied()).collect(),
        sent,
        ticks,
        loaded: handler.loaded.load(Ordering::Relaxed),
        redelivered: handler.redelivered.load(Ordering::Relaxed),
        dead: queue.stats().dead,
        offered_secs,
        deliveries,
        pending,
    })
}

/// Sends the messages at `rate` events per second, with a progress line every 10 s; returns
/// each message's queue id and send instant.
#[allow(clippy::print_stdout)]
async fn produce(
    queue: &LocalQueue,
    stream: &Stream,
    rate: u32,
    handler: &Timed,
) -> (Vec<String>, Vec<Instant>) {
    let n = stream.bodies.len();
    let (mut ids, mut sent) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut clock = tokio::time::interval(Duration::from_millis(1));
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let start = Instant::now();
    let (mut events, mut next_report) = (0u64, 10u64);
    while ids.len() < n {
        clock.tick().await;
        let now = Instant::now();
        let due = (now - start).as_secs_f64() * f64::from(rate);
        while ids.len() < n && (events as f64) < due {
            let i = ids.len();
            ids.push(queue.send(stream.bodies[i].clone()));
            sent.push(now);
            events += u64::from(stream.weights[i]);
        }
        if (now - start).as_secs() >= next_report {
            let s = queue.stats();
            println!(
                "  [{next_report:>3} s] {events} events sent, {} loaded; {} messages waiting, {} in flight",
                handler.loaded.load(Ordering::Relaxed),
                s.ready,
                s.in_flight
            );
            next_report += 10;
        }
    }
    (ids, sent)
}

/// Waits until no delivery is pending (or `timeout` passes); returns (deliveries, pending).
async fn settle_outbox(pool: &PgPool, timeout: Duration) -> anyhow::Result<(i64, i64)> {
    let deadline = Instant::now() + timeout;
    loop {
        let (all, pending): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE status = 'pending') FROM deliveries",
        )
        .fetch_one(pool)
        .await?;
        if pending == 0 || Instant::now() >= deadline {
            return Ok((all, pending));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The rollup function's timer: a full tick every `period` (the first after half of one) until
/// the watermark reaches `target`.
async fn rollup_timer(
    rollup: Rollup,
    pool: PgPool,
    period: Duration,
    target: Arc<AtomicI64>,
) -> anyhow::Result<Vec<TickRun>> {
    let mut clock = tokio::time::interval_at((Instant::now() + period / 2).into(), period);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = Vec::new();
    loop {
        clock.tick().await;
        let started = Instant::now();
        let (at, wall) = (Instant::now(), Utc::now());
        let jobs = rollup.run_at(Utc::now(), Utc::now()).await;
        let took = started.elapsed();
        let job = jobs
            .iter()
            .find(|j| j.job == "rollup")
            .ok_or_else(|| anyhow::anyhow!("a tick without its rollup job"))?;
        anyhow::ensure!(
            job.error.is_none(),
            "the rollup job failed: {:?}",
            job.error
        );
        let last_seq: i64 =
            sqlx::query_scalar("SELECT last_seq FROM rollup_state WHERE name = 'events'")
                .fetch_one(&pool)
                .await?;
        ticks.push(TickRun {
            rollup_done: instant_of(at, wall, job.finished_at),
            rollup_took: (job.finished_at - job.started_at)
                .to_std()
                .unwrap_or_default(),
            last_seq,
            took,
        });
        if last_seq >= target.load(Ordering::Acquire) {
            return Ok(ticks);
        }
    }
}

/// The instant of wall-clock time `t`, given that `at` was `wall`.
fn instant_of(at: Instant, wall: DateTime<Utc>, t: DateTime<Utc>) -> Instant {
    match (t - wall).to_std() {
        Ok(after) => at + after,
        Err(_) => at - (wall - t).to_std().unwrap_or_default(),
    }
}

/// Percentiles of `v` (sorted here): "p50 …, p99 …, max … ms".
fn spread(v: &mut [Duration]) -> String {
    v.sort();
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(v, 0.50)),
        ms(percentile(v, 0.99)),
        ms(v.last().copied().unwrap_or_default())
    )
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

/// Prints the three latencies and the targets.
#[allow(clippy::print_stdout)]
async fn report(
    pool: &PgPool,
    stream: &Stream,
    run: &Run,
    partners: &Partners,
    opts: &E2eBench,
) -> anyhow::Result<()> {
    let offered = stream.events() as f64 / run.offered_secs.max(f64::EPSILON);
    println!(
        "offered: {} events in {} messages over {:.1} s = {offered:.0} events/s; {} loaded, {} redeliveries, {} dead-lettered",
        stream.events(),
        stream.bodies.len(),
        run.offered_secs,
        run.loaded,
        run.redelivered,
        run.dead
    );
    // Queue → committed row, per event.
    let mut queue_to_row = Vec::with_capacity(stream.events() as usize);
    let mut uncommitted = 0u64;
    for (i, sent) in run.sent.iter().enumerate() {
        match run.committed[i] {
            Some(c) => {
                queue_to_row.extend(std::iter::repeat_n(c - *sent, stream.weights[i] as usize))
            }
            None => uncommitted += u64::from(stream.weights[i]),
        }
    }
    let p99_row = {
        queue_to_row.sort();
        percentile(&queue_to_row, 0.99)
    };
    println!(
        "queue -> committed row ({} events): {}{}",
        queue_to_row.len(),
        spread(&mut queue_to_row),
        if uncommitted > 0 {
            format!("; {uncommitted} events in messages never committed")
        } else {
            String::new()
        }
    );
    timeline(stream, run);
    // Each event's commit: its first message's (a retry's commit finds it stored).
    let mut commit_of: HashMap<&str, Instant> = HashMap::new();
    for (i, ids) in stream.ids.iter().enumerate() {
        if let Some(c) = run.committed[i] {
            for id in ids {
                let e = commit_of.entry(id.as_str()).or_insert(c);
                *e = (*e).min(c);
            }
        }
    }
    let (visible_ok, visible_max) = visibility(pool, run, &commit_of, opts).await?;
    let webhook_p99 = webhooks(partners, run, &commit_of)?;
    println!(
        "targets: p99 queue -> row < 100 ms at {} events/s: {}; every event in the rollups within one tick + one run: {} (latest {:.1} s); p99 webhook < 1 s: {}",
        opts.rate,
        verdict(p99_row < Duration::from_millis(100) && offered >= 0.95 * f64::from(opts.rate)),
        verdict(visible_ok),
        visible_max.as_secs_f64(),
        verdict(webhook_p99.is_some_and(|p| p < Duration::from_secs(1)) && run.pending == 0)
    );
    Ok(())
}

/// Queue → committed row by 10-second window of send time, so a stall shows where it was; the
/// first 10 s again by second, where a start-up stall would show.
#[allow(clippy::print_stdout)]
fn timeline(stream: &Stream, run: &Run) {
    let by_10 = windows(stream, run, Duration::from_secs(10), usize::MAX);
    println!("  by 10 s of sending, p50/p99 ms: {}", by_10.join(", "));
    let by_1 = windows(stream, run, Duration::from_secs(1), 10);
    println!("  its first 10 s by second:       {}", by_1.join(", "));
}

/// "from-to p50/p99" of queue → committed row for each `width` (whole seconds) of send time,
/// the first `most`; "from-to —" for a window in which no message committed.
fn windows(stream: &Stream, run: &Run, width: Duration, most: usize) -> Vec<String> {
    let Some(start) = run.sent.first().copied() else {
        return Vec::new();
    };
    let samples = run.sent.iter().enumerate().filter_map(|(i, sent)| {
        let c = run.committed[i]?;
        Some((*sent - start, c - *sent, stream.weights[i] as usize))
    });
    by_window(samples, width, most)
}

/// "from-to p50/p99" of the waits for each `width` (whole seconds) of their offset, the first
/// `most`; "from-to —" for a window without any. Samples are (offset, wait, weight).
fn by_window(
    samples: impl Iterator<Item = (Duration, Duration, usize)>,
    width: Duration,
    most: usize,
) -> Vec<String> {
    let mut windows: Vec<Vec<Duration>> = Vec::new();
    for (offset, wait, weight) in samples {
        let w = (offset.as_millis() / width.as_millis().max(1)) as usize;
        if w >= most {
            continue;
        }
        if windows.len() <= w {
            windows.resize_with(w + 1, Vec::new);
        }
        windows[w].extend(std::iter::repeat_n(wait, weight));
    }
    let secs = width.as_secs().max(1) as usize;
    windows
        .iter_mut()
        .enumerate()
        .map(|(w, v)| {
            let span = format!("{}-{}", w * secs, w * secs + secs);
            if v.is_empty() {
                return format!("{span} —");
            }
            v.sort();
            format!(
                "{span} {:.0}/{:.0}",
                ms(percentile(v, 0.50)),
                ms(percentile(v, 0.99))
            )
        })
        .collect()
}

/// Event → visible in the rollups, per stored event. Returns whether every event met its
/// bound (the tick period plus the run that covered it) and the longest wait.
#[allow(clippy::print_stdout)]
async fn visibility(
    pool: &PgPool,
    run: &Run,
    commit_of: &HashMap<&str, Instant>,
    opts: &E2eBench,
) -> anyhow::Result<(bool, Duration)> {
    let stored: Vec<(String, i64)> = sqlx::query_as("SELECT event_id, seq FROM events")
        .fetch_all(pool)
        .await?;
    let mut waits = Vec::with_capacity(stored.len());
    let (mut late, mut unmatched, mut unseen) = (0usize, 0usize, 0usize);
    for (id, seq) in &stored {
        let Some(commit) = commit_of.get(id.as_str()) else {
            unmatched += 1;
            continue;
        };
        let Some(tick) = run.ticks.iter().find(|t| t.last_seq >= *seq) else {
            unseen += 1;
            continue;
        };
        let wait = tick.rollup_done.saturating_duration_since(*commit);
        if wait > opts.period() + tick.rollup_took {
            late += 1;
        }
        waits.push(wait);
    }
    let longest = waits.iter().max().copied().unwrap_or_default();
    let runs: Vec<String> = run
        .ticks
        .iter()
        .map(|t| format!("{:.0}/{:.0}", ms(t.rollup_took), ms(t.took)))
        .collect();
    println!(
        "event -> visible in the rollups ({} events): {}; {late} later than one period + one run{}",
        waits.len(),
        spread(&mut waits),
        if unmatched + unseen > 0 {
            format!("; {unmatched} stored events not from this run, {unseen} never rolled up")
        } else {
            String::new()
        }
    );
    println!(
        "  {} ticks every {:.0} s; rollup job / whole tick, ms: {}",
        run.ticks.len(),
        opts.period().as_secs_f64(),
        runs.join(", ")
    );
    Ok((late == 0 && unseen == 0 && unmatched == 0, longest))
}

/// Commit → partner receipt for every event that produced a webhook; returns the p99.
#[allow(clippy::print_stdout)]
fn webhooks(
    partners: &Partners,
    run: &Run,
    commit_of: &HashMap<&str, Instant>,
) -> anyhow::Result<Option<Duration>> {
    let received = partners.received();
    let mut waits = Vec::with_capacity(received.len());
    let mut early = 0usize;
    for r in received.iter().filter(|r| (200..300).contains(&r.status)) {
        // Anomaly findings of the rollup carry ids of their own.
        if let Some(commit) = commit_of.get(r.event_id.as_str()) {
            early += usize::from(r.at < *commit);
            waits.push((*commit, r.at.saturating_duration_since(*commit)));
        }
    }
    if waits.is_empty() {
        println!("commit -> partner receipt: no webhooks");
        return Ok(None);
    }
    let count = waits.len();
    let by_10 = match run.sent.first().copied() {
        Some(origin) => by_window(
            waits
                .iter()
                .map(|(at, wait)| (at.saturating_duration_since(origin), *wait, 1)),
            Duration::from_secs(10),
            usize::MAX,
        ),
        None => Vec::new(),
    };
    let mut waits: Vec<Duration> = waits.into_iter().map(|(_, w)| w).collect();
    let line = spread(&mut waits);
    let p99 = percentile(&waits, 0.99);
    println!(
        "commit -> partner receipt ({count} webhooks of {} deliveries, {} still pending): {line} ({early} arrived before the handler call returned, counted as 0)",
        run.deliveries, run.pending
    );
    println!("  by 10 s of commit, p50/p99 ms: {}", by_10.join(", "));
    Ok(Some(p99))
}
