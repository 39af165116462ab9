//! `ferry-bench fanout` against partners as they are: slow, timing out, failing. Each
//! scenario runs in a fresh database: `events` events for every receiver queued, then drained
//! by timer sweeps (one in-process fanout instance, production settings) until every healthy
//! receiver has acknowledged all of its deliveries.
//!
//! - **Slow partners**: receivers answering after 100 ms (and 1 s) against the Little's-law
//!   limit `concurrency / latency` — the most any sender with that many requests in flight
//!   can deliver.
//! - **One bad partner among healthy ones**: 49 receivers at 100 ms alone, then with a 50th
//!   that never answers (`FERRY_WEBHOOK_TIMEOUT=5s`), then with one that answers 500, then
//!   alone again. The healthy receivers' throughput and p99 attempt latency are compared with
//!   the mean of the two runs alone, so that a machine growing busier or quieter during the
//!   scenarios shows as a spread between them instead of as a cost of the bad partner.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_fanout::guard::SystemLookup;
use ferry_fanout::{Fanout, FanoutConfig};
use ferry_ingest::Ingest;
use ferry_local::partner::{Behaviour, Partners};
use ferry_shared::config::Config;
use sqlx::PgPool;

use crate::fanout::{add_endpoints, cloud_event, publish, settings};
use crate::load::prepare;

const DB: &str = "bench_fanout_partners";

/// What one scenario measured, for its healthy receivers.
struct Measured {
    deliveries: usize,
    took: Duration,
    /// Attempt latency as the fanout recorded it, sorted.
    latency: Vec<Duration>,
    /// Requests the bad receiver got.
    bad_requests: usize,
    /// The most requests the healthy receivers got in one second.
    peak: usize,
    /// Claim statements the drains ran (those of a drain cut short at the end are not counted).
    claims: u64,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.deliveries as f64 / self.took.as_secs_f64()
    }
    fn p99(&self) -> Duration {
        crate::fanout::percentile(&self.latency, 0.99)
    }
}

/// Options of the partner scenarios.
pub struct PartnerBench {
    /// Events for each receiver at 100 ms (a quarter of them at 1 s).
    pub events: usize,
    /// Also the scenario of partners answering in 1 s.
    pub slow: bool,
    /// Print healthy deliveries second by second, and the bad partner's requests.
    pub trace: bool,
    /// Deliveries pending for one partner after a 10-minute outage (0 skips the scenario).
    pub outage: usize,
}

/// Runs the scenarios and prints a table.
#[allow(clippy::print_stdout)]
pub async fn partners(admin_url: &str, cfg: &Config, opts: &PartnerBench) -> anyhow::Result<()> {
    let events = opts.events;
    let b = Scenarios {
        admin_url,
        cfg,
        trace: opts.trace,
    };
    let fcfg = settings()?;
    let limit = |latency: Duration| fcfg.concurrency as f64 / latency.as_secs_f64();
    let slow = |ms| Behaviour {
        delay: Duration::from_millis(ms),
        ..Behaviour::default()
    };
    println!();
    println!(
        "partners as they are: {events} events to each receiver at 100 ms, drained by one \
         instance (concurrency {}, {} per endpoint)",
        fcfg.concurrency, fcfg.per_endpoint
    );
    println!("machine   {}", crate::machine::load_line());
    let hundred = Duration::from_millis(100);
    let all = b.run(&fcfg, vec![slow(100); 50], events, false).await?;
    print_limit("50 at 100 ms", &all, limit(hundred));
    if opts.slow {
        let second = Duration::from_secs(1);
        let n = (events / 4).max(1);
        let one = b.run(&fcfg, vec![slow(1000); 50], n, false).await?;
        print_limit(&format!("50 at 1 s ({n} events each)"), &one, limit(second));
    }
    let alone = b.run(&fcfg, vec![slow(100); 49], events, false).await?;
    let mut timeout_cfg = fcfg.clone();
    timeout_cfg.timeout = Duration::from_secs(5);
    let hang = Behaviour {
        hang: true,
        ..Behaviour::default()
    };
    let fail = Behaviour {
        fail: true,
        ..Behaviour::default()
    };
    let with = |bad| {
        let mut b = vec![slow(100); 49];
        b.push(bad);
        b
    };
    let hung = b.run(&timeout_cfg, with(hang), events, false).await?;
    let failing = b.run(&fcfg, with(fail), events, false).await?;
    let again = b.run(&fcfg, vec![slow(100); 49], events, false).await?;
    let alone = Reference::of(&alone, &again);
    print_bad_partner(&alone, &hung, &failing);
    if opts.outage > 0 {
        let n = opts.outage;
        let back = b.run(&fcfg, vec![slow(10)], n, true).await?;
        let bound = fcfg.per_endpoint as f64 / 0.010;
        println!(
            "  after a 10-minute outage, one partner answering in 10 ms: {} deliveries drained \
             in {:.1} s = {:.0}/s; peak {} requests in one second (the per-endpoint bound \
             {} in flight / 10 ms = {bound:.0}/s); p99 attempt {:.1} ms; {} claims, {:.1} \
             deliveries each",
            back.deliveries,
            back.took.as_secs_f64(),
            back.rate(),
            back.peak,
            fcfg.per_endpoint,
            crate::fanout::ms(back.p99()),
            back.claims,
            back.deliveries as f64 / back.claims.max(1) as f64
        );
    }
    let within = |m: &Measured| m.rate() >= 0.9 * alone.rate && m.p99() <= alone.p99.mul_f64(1.1);
    println!(
        "targets: >= 0.9 of the limit at 100 ms: {}; a bad partner costs the others < 10%: {}",
        if all.rate() >= 0.9 * limit(hundred) {
            "met"
        } else {
            "NOT met"
        },
        if within(&hung) && within(&failing) {
            "met"
        } else {
            "NOT met"
        }
    );
    println!("machine   {}", crate::machine::load_line());
    ferry_local::citus::drop_database(admin_url, DB).await?;
    Ok(())
}

/// The healthy receivers' figures without a bad partner: the mean of the runs before and after
/// the scenarios with one.
struct Reference<'m> {
    before: &'m Measured,
    after: &'m Measured,
    rate: f64,
    p99: Duration,
}

impl<'m> Reference<'m> {
    fn of(before: &'m Measured, after: &'m Measured) -> Reference<'m> {
        Reference {
            before,
            after,
            rate: (before.rate() + after.rate()) / 2.0,
            p99: (before.p99() + after.p99()) / 2,
        }
    }
}

/// The healthy receivers alone (before and after), with a partner that never answers, and with
/// one answering 500; ratios against the mean of the runs alone.
#[allow(clippy::print_stdout)]
fn print_bad_partner(alone: &Reference, hung: &Measured, failing: &Measured) {
    println!(
        "  {:<44} {:>12} {:>8} {:>11} {:>8} {:>13}",
        "healthy receivers' deliveries",
        "deliveries/s",
        "ratio",
        "p99 attempt",
        "ratio",
        "bad's requests"
    );
    for (label, m) in [
        ("49 at 100 ms, alone (before)", alone.before),
        ("+ 1 that never answers (5 s timeout)", hung),
        ("+ 1 that answers 500", failing),
        ("49 at 100 ms, alone (after)", alone.after),
    ] {
        println!(
            "  {label:<44} {:>12.0} {:>8.2} {:>8.1} ms {:>8.2} {:>13}",
            m.rate(),
            m.rate() / alone.rate,
            crate::fanout::ms(m.p99()),
            m.p99().as_secs_f64() / alone.p99.as_secs_f64().max(1e-9),
            m.bad_requests
        );
    }
    println!(
        "  (ratios against the mean of the runs alone: {:.0} deliveries/s, p99 {:.1} ms)",
        alone.rate,
        crate::fanout::ms(alone.p99)
    );
}

#[allow(clippy::print_stdout)]
fn print_limit(label: &str, m: &Measured, limit: f64) {
    println!(
        "  {label:<32} {} deliveries in {:.2} s = {:.0}/s; limit {limit:.0}/s; ratio {:.2}; p99 attempt {:.1} ms",
        m.deliveries,
        m.took.as_secs_f64(),
        m.rate(),
        m.rate() / limit,
        crate::fanout::ms(m.p99())
    );
}

/// Where and how the scenarios run.
struct Scenarios<'a> {
    admin_url: &'a str,
    cfg: &'a Config,
    trace: bool,
}

/// One scenario: receivers with these behaviours (the healthy ones neither hang nor fail),
/// `events` events for each, drained until every healthy receiver has them all. With
/// `outage`, the endpoints start as a 10-minute partner outage leaves them (see
/// [`after_outage`]).
impl Scenarios<'_> {
    async fn run(
        &self,
        fcfg: &FanoutConfig,
        behaviours: Vec<Behaviour>,
        events: usize,
        outage: bool,
    ) -> anyhow::Result<Measured> {
        let (admin_url, trace) = (self.admin_url, self.trace);
        let mut cfg = self.cfg.clone();
        cfg.db.max_connections = cfg.db.max_connections.max(8);
        let pool = prepare(admin_url, DB, &cfg).await?;
        let healthy: Vec<bool> = behaviours.iter().map(|b| !b.hang && !b.fail).collect();
        // Receivers log a request when it arrives; the last one is done once answered.
        let answer = behaviours
            .iter()
            .filter(|b| !b.hang && !b.fail)
            .map(|b| b.delay)
            .max()
            .unwrap_or_default();
        let partners = Partners::start_each(behaviours).await?;
        let ids = add_endpoints(
            &pool,
            fcfg,
            &partners,
            healthy.len(),
            "bench.partners",
            |_| None,
        )
        .await?;
        let ingest = Ingest::with_pool(&cfg, pool.clone(), "ingest");
        for chunk in 0..events.div_ceil(100) {
            let batch: Vec<_> = (chunk * 100..((chunk + 1) * 100).min(events))
                .map(|i| cloud_event(&format!("p-{i}"), "bench.partners", "all"))
                .collect();
            publish(&ingest, &format!("p-msg-{chunk}"), &batch).await?;
        }
        let want = events * healthy.iter().filter(|h| **h).count();
        if outage {
            after_outage(&pool).await?;
        }
        let fanout = Arc::new(Fanout::new(
            pool.clone(),
            fcfg.clone(),
            Arc::new(SystemLookup),
            "fanout",
        )?);
        let t = Instant::now();
        let (arrived, claims) =
            drain_until_delivered(&fanout, &partners, &healthy, want, t).await?;
        let took = arrived + answer;
        if trace {
            print_trace(&partners, &healthy, t, took);
        }
        let bad_requests = partners.count_by(|r| !healthy[r.receiver]);
        let latency = healthy_latency(&pool, &ids, &healthy).await?;
        pool.close().await;
        Ok(Measured {
            deliveries: want,
            took,
            latency,
            bad_requests,
            claims,
            peak: per_second(&partners, &healthy, t, took)
                .into_iter()
                .max()
                .unwrap_or(0),
        })
    }
}

/// The state a 10-minute partner outage leaves: every delivery fell due at some point during
/// those 10 minutes and waited behind the endpoint's open circuit; the endpoint has been
/// failing for 10 minutes, and its next probe is due now (the partner is back just before it).
async fn after_outage(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE deliveries
         SET next_attempt_at = now() - random() * interval '10 minutes'
         WHERE status = 'pending'",
    )
    .execute(pool)
    .await?;
    // The probe falls a quarter of the failing time (at most 30 s) after the last failure.
    sqlx::query(
        "UPDATE endpoints
         SET failing_since = now() - interval '10 minutes',
             last_failure_at = now() - interval '30 seconds'",
    )
    .execute(pool)
    .await?;
    Ok(())
}

async fn healthy_latency(
    pool: &PgPool,
    ids: &[i64],
    healthy: &[bool],
) -> anyhow::Result<Vec<Duration>> {
    let good: Vec<i64> = ids
        .iter()
        .zip(healthy)
        .filter(|(_, h)| **h)
        .map(|(id, _)| *id)
        .collect();
    let ms: Vec<i32> = sqlx::query_scalar(
        "SELECT a.latency_ms FROM delivery_attempts a JOIN deliveries d USING (delivery_id)
         WHERE d.endpoint_id = ANY($1) ORDER BY a.latency_ms",
    )
    .bind(&good)
    .fetch_all(pool)
    .await?;
    Ok(ms
        .into_iter()
        .map(|m| Duration::from_millis(m.max(0) as u64))
        .collect())
}

/// Healthy deliveries second by second, and when the bad partners were sent to.
#[allow(clippy::print_stdout)]
fn print_trace(partners: &Partners, healthy: &[bool], t: Instant, took: Duration) {
    let per_second = per_second(partners, healthy, t, took);
    let bad: Vec<String> = partners
        .received()
        .iter()
        .filter(|r| !healthy[r.receiver])
        .map(|r| format!("{:.2}", r.at.saturating_duration_since(t).as_secs_f64()))
        .collect();
    println!("    trace: healthy receivers' requests per second {per_second:?}");
    if !bad.is_empty() {
        println!(
            "    trace: the bad partner was sent to at (s) {}",
            bad.join(" ")
        );
    }
}

/// Requests the healthy receivers got in each whole second from `t`.
fn per_second(partners: &Partners, healthy: &[bool], t: Instant, took: Duration) -> Vec<usize> {
    let mut out = vec![0usize; took.as_secs() as usize + 1];
    for r in partners.received() {
        let second = r.at.saturating_duration_since(t).as_secs() as usize;
        if healthy[r.receiver] {
            if let Some(n) = out.get_mut(second) {
                *n += 1;
            }
        }
    }
    out
}

/// Timer sweeps, one after another as the platform's schedule would start them, until the
/// healthy receivers have acknowledged `want` requests. Returns the time from `t` and the
/// claims the finished drains ran.
async fn drain_until_delivered(
    fanout: &Arc<Fanout>,
    partners: &Partners,
    healthy: &[bool],
    want: usize,
    t: Instant,
) -> anyhow::Result<(Duration, u64)> {
    let claims = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut sweeps = {
        let (fanout, claims, stop) = (Arc::clone(fanout), Arc::clone(&claims), Arc::clone(&stop));
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let drained = fanout.drain().await;
                if let Ok(r) = &drained {
                    claims.fetch_add(r.claims, std::sync::atomic::Ordering::Relaxed);
                }
                match drained {
                    Ok(r) if r.attempts > 0 => {}
                    Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Err(e) => {
                        eprintln!("drain failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    };
    let deadline = Duration::from_secs(600);
    let took = loop {
        let ok = partners.count_by(|r| healthy[r.receiver] && r.status < 300);
        if ok >= want {
            break t.elapsed();
        }
        anyhow::ensure!(
            t.elapsed() < deadline,
            "{ok} of {want} delivered in {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // A drain with nothing left to send returns (and its claims count); one still probing a
    // bad partner is cut short.
    stop.store(true, std::sync::atomic::Ordering::Release);
    if tokio::time::timeout(Duration::from_secs(3), &mut sweeps)
        .await
        .is_err()
    {
        sweeps.abort();
    }
    Ok((took, claims.load(std::sync::atomic::Ordering::Relaxed)))
}
