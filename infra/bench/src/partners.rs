//! `ferry-bench fanout` against partners as they are: slow, timing out, failing. Each
//! scenario runs in a fresh database: `events` events for every receiver queued, then drained
//! by timer sweeps (one in-process fanout instance, production settings) until every healthy
//! receiver has acknowledged all of its deliveries.
//!
//! - **Slow partners**: receivers answering after 100 ms (and 1 s) against the Little's-law
//!   limit `concurrency / latency` — the most any sender with that many requests in flight
//!   can deliver.
//! - **One bad partner among healthy ones**: 49 receivers at 100 ms alone, then with a 50th
//!   that never answers (`FERRY_WEBHOOK_TIMEOUT=5s`), then with one that answers 500. The
//!   healthy receivers' throughput and p99 attempt latency are compared with the run alone.

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
}

impl Measured {
    fn rate(&self) -> f64 {
        self.deliveries as f64 / self.took.as_secs_f64()
    }
    fn p99(&self) -> Duration {
        crate::fanout::percentile(&self.latency, 0.99)
    }
}

/// Runs the scenarios and prints a table.
#[allow(clippy::print_stdout)]
pub async fn partners(
    admin_url: &str,
    cfg: &Config,
    events: usize,
    slow_too: bool,
) -> anyhow::Result<()> {
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
    let all = run(admin_url, cfg, &fcfg, vec![slow(100); 50], events).await?;
    print_limit("50 at 100 ms", &all, limit(hundred));
    if slow_too {
        let second = Duration::from_secs(1);
        let n = (events / 10).max(1);
        let one = run(admin_url, cfg, &fcfg, vec![slow(1000); 50], n).await?;
        print_limit(&format!("50 at 1 s ({n} events each)"), &one, limit(second));
    }
    let alone = run(admin_url, cfg, &fcfg, vec![slow(100); 49], events).await?;
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
    let hung = run(admin_url, cfg, &timeout_cfg, with(hang), events).await?;
    let failing = run(admin_url, cfg, &fcfg, with(fail), events).await?;
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
        ("49 at 100 ms, alone", &alone),
        ("+ 1 that never answers (5 s timeout)", &hung),
        ("+ 1 that answers 500", &failing),
    ] {
        println!(
            "  {label:<44} {:>12.0} {:>8.2} {:>8.1} ms {:>8.2} {:>13}",
            m.rate(),
            m.rate() / alone.rate(),
            crate::fanout::ms(m.p99()),
            m.p99().as_secs_f64() / alone.p99().as_secs_f64().max(1e-9),
            m.bad_requests
        );
    }
    let within =
        |m: &Measured| m.rate() >= 0.9 * alone.rate() && m.p99() <= alone.p99().mul_f64(1.1);
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

/// One scenario: receivers with these behaviours (the healthy ones neither hang nor fail),
/// `events` events for each, drained until every healthy receiver has them all.
async fn run(
    admin_url: &str,
    cfg: &Config,
    fcfg: &FanoutConfig,
    behaviours: Vec<Behaviour>,
    events: usize,
) -> anyhow::Result<Measured> {
    let mut cfg = cfg.clone();
    cfg.db.max_connections = cfg.db.max_connections.max(8);
    let pool = prepare(admin_url, DB, &cfg).await?;
    let healthy: Vec<bool> = behaviours.iter().map(|b| !b.hang && !b.fail).collect();
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
    let fanout = Arc::new(Fanout::new(
        pool.clone(),
        fcfg.clone(),
        Arc::new(SystemLookup),
        "fanout",
    )?);
    let t = Instant::now();
    // Timer sweeps, one after another, as the platform's schedule would start them.
    let sweeps = {
        let fanout = Arc::clone(&fanout);
        tokio::spawn(async move {
            loop {
                match fanout.drain().await {
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
    sweeps.abort();
    let bad_requests = partners.count_by(|r| !healthy[r.receiver]);
    let latency = healthy_latency(&pool, &ids, &healthy).await?;
    pool.close().await;
    Ok(Measured {
        deliveries: want,
        took,
        latency,
        bad_requests,
    })
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
