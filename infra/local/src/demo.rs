//! `ferry demo`: a realistic mixed stream for a few tenants — clickstream, product changes,
//! payments — with producer retries (duplicates) and malformed input, pushed through the local
//! queue into the real ingest handler, with progress and a summary of what happened.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ferry_ingest::Ingest;
use ferry_shared::{QueueBatch, QueueHandler, QueueOutcome, RejectReason};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::queue::{drain, LocalQueue};

/// The demo's tenants (registered automatically).
pub const TENANTS: [&str; 3] = ["acme", "globex", "initech"];

/// Options of a demo run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub events: usize,
    pub workers: usize,
    pub batch_size: usize,
    pub seed: u64,
    /// When set, the events are stamped as a live stream sent at this many events per second:
    /// each `n / rate` seconds after `now` (the moment the n-th event would be sent if sending
    /// began at `now`), less up to 2 s (one in a hundred up to
    /// 10 minutes late, as a phone that was offline). Otherwise their times are spread over the
    /// two hours before `now`, which fills the demo's charts.
    pub live_rate: Option<u32>,
}

/// Totals reported by the handler, batch after batch.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub loaded: u64,
    pub duplicates: u64,
    pub already_applied: u64,
    pub quarantined: BTreeMap<RejectReason, u64>,
    pub transient_failures: u64,
}

/// Wraps the ingest handler to keep totals for the report.
struct Counting {
    ingest: Ingest,
    totals: Mutex<Totals>,
}

impl QueueHandler for Counting {
    async fn handle(&self, batch: QueueBatch) -> QueueOutcome {
        let report = self.ingest.process(&batch).await;
        let mut t = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        for u in &report.units {
            t.loaded += u.loaded;
            t.duplicates += u.duplicates;
            t.already_applied += u64::from(!u.applied);
            for (reason, n) in &u.quarantined {
                *t.quarantined.entry(*reason).or_default() += u64::from(*n);
            }
        }
        t.transient_failures += report.failed.len() as u64;
        QueueOutcome {
            failed: report.failed,
        }
    }
}

/// What the generator produced.
#[derive(Debug, Default, Clone)]
pub struct Offered {
    pub messages: u64,
    pub events: u64,
    pub resent_messages: u64,
    pub malformed: u64,
}

/// Generates the demo stream: message bodies, in send order.
pub fn generate(opts: &DemoOptions, run: &str, now: DateTime<Utc>) -> (Vec<Vec<u8>>, Offered) {
    let mut g = Gen {
        rng: SmallRng::seed_from_u64(opts.seed),
        run: run.to_owned(),
        n: 0,
        now,
        live_rate: opts.live_rate.filter(|r| *r > 0),
    };
    let mut offered = Offered::default();
    let mut messages: Vec<Vec<u8>> = Vec::new();
    let mut produced = 0usize;
    while produced < opts.events {
        let roll: f64 = g.rng.random();
        if roll < 0.01 {
            messages.push(g.malformed_message());
            offered.malformed += 1;
            offered.events += 1;
            produced += 1;
            continue;
        }
        let size = if roll < 0.6 {
            1
        } else {
            g.rng.random_range(2..=40)
        };
        let size = size.min(opts.events - produced);
        let events: Vec<Value> = (0..size)
            .map(|_| g.maybe_bad_event(&mut offered.malformed))
            .collect();
        produced += size;
        offered.events += size as u64;
        let body = if size == 1 && roll < 0.6 {
            events[0].to_string()
        } else {
            Value::Array(events).to_string()
        };
        // A producer retry: the same events again, as a new message, some time later.
        if g.rng.random_bool(0.05) {
            messages.push(body.clone().into_bytes());
            offered.resent_messages += 1;
        }
        messages.push(body.into_bytes());
    }
    // Retries arrive later than the original, not right next to it.
    for i in (1..messages.len()).rev() {
        if g.rng.random_bool(0.1) {
            let j = g.rng.random_range(i.saturating_sub(50)..=i);
            messages.swap(i, j);
        }
    }
    offered.messages = messages.len() as u64;
    (messages, offered)
}

/// `n` valid, realistic events (clickstream, product changes, payments) with ids unique to
/// `seed`; used by the benchmarks.
pub fn generate_events(n: usize, seed: u64, now: DateTime<Utc>) -> Vec<Value> {
    let mut g = Gen {
        rng: SmallRng::seed_from_u64(seed),
        run: format!("b{seed}x{}", now.timestamp()),
        n: 0,
        now,
        live_rate: None,
    };
    (0..n).map(|_| g.event()).collect()
}

struct Gen {
    rng: SmallRng,
    run: String,
    n: u64,
    now: DateTime<Utc>,
    live_rate: Option<u32>,
}

impl Gen {
    fn base(&mut self, tenant: &str, source: &str, ty: &str, data: Value) -> Value {
        self.n += 1;
        let time = match self.live_rate {
            None => self.now - chrono::Duration::seconds(self.rng.random_range(0..7_200)),
            Some(rate) => {
                let sent = self.now
                    + chrono::Duration::microseconds((self.n * 1_000_000 / u64::from(rate)) as i64);
                let late_ms = if self.rng.random_bool(0.01) {
                    self.rng.random_range(0..600_000)
                } else {
                    self.rng.random_range(0..2_000)
                };
                sent - chrono::Duration::milliseconds(late_ms)
            }
        };
        json!({
            "specversion": "1.0",
            "id": format!("{}-{}", self.run, self.n),
            "source": source,
            "type": ty,
            "time": time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "tenantid": tenant,
            "datacontenttype": "application/json",
            "data": data,
        })
    }

    fn event(&mut self) -> Value {
        let tenant = TENANTS[self.rng.random_range(0..TENANTS.len())];
        let user = format!("u{}", self.rng.random_range(1..2_000));
        let session = format!("s{}", self.rng.random_range(1..5_000));
        let sku = format!("sku-{:04}", self.rng.random_range(1..500));
        let roll: f64 = self.rng.random();
        let mut ev = if roll < 0.55 {
            let path = ["/", "/search", "/cart", "/checkout", "/help"][self.rng.random_range(0..5)];
            self.base(
                tenant,
                "/web/tracker",
                "page.viewed",
                json!({"path": path, "referrer": "https://search.example/"}),
            )
        } else if roll < 0.75 {
            self.base(
                tenant,
                "/web/tracker",
                "product.viewed",
                json!({"sku": sku, "path": format!("/p/{sku}")}),
            )
        } else if roll < 0.85 {
            let quantity = self.rng.random_range(1..4);
            self.base(
                tenant,
                "/web/tracker",
                "cart.item_added",
                json!({"sku": sku, "quantity": quantity}),
            )
        } else if roll < 0.92 {
            let price = self.rng.random_range(199..99_999);
            let mut e = self.base(
                tenant,
                "/erp/catalog",
                "product.updated",
                json!({"sku": sku, "price_cents": price, "currency": "EUR"}),
            );
            e["subject"] = json!(sku);
            return e;
        } else {
            let amount = self.rng.random_range(500..250_000);
            let ty = if self.rng.random_bool(0.9) {
                "payment.captured"
            } else {
                "payment.refunded"
            };
            // One product per order: the funnel counts a purchase for the product it names.
            let data = json!({"amount_cents": amount, "currency": "EUR", "order": format!("o-{}", self.n), "sku": sku});
            let mut e = self.base(tenant, "/payments/psp", ty, data);
            e["subject"] = json!(format!("o-{}", self.n));
            return e;
        };
        ev["userid"] = json!(user);
        ev["sessionid"] = json!(session);
        ev
    }

    /// Mostly good events; about 2% carry one of the typical producer mistakes.
    fn maybe_bad_event(&mut self, malformed: &mut u64) -> Value {
        let mut ev = self.event();
        if !self.rng.random_bool(0.02) {
            return ev;
        }
        *malformed += 1;
        let obj = ev.as_object_mut().expect("generated events are objects");
        match self.rng.random_range(0..7) {
            0 => {
                obj.remove("id");
            }
            1 => {
                obj.insert("specversion".into(), json!("0.3"));
            }
            2 => {
                obj.insert("time".into(), json!("21/11/2026 10:00"));
            }
            3 => {
                obj.insert("tenantid".into(), json!("unknown-tenant"));
            }
            4 => {
                obj.insert("User-Agent".into(), json!("Mozilla/5.0"));
            }
            5 => {
                obj.insert("time".into(), json!("2019-01-01T00:00:00Z"));
            }
            _ => {
                obj.insert("data".into(), json!({"blob": "x".repeat(300 * 1024)}));
            }
        }
        ev
    }

    fn malformed_message(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..3) {
            0 => b"{\"specversion\":\"1.0\",\"id\":".to_vec(),
            1 => b"\xff\xfe not utf-8 \x80".to_vec(),
            _ => b"page_view user=42 path=/".to_vec(),
        }
    }
}

/// Runs the demo against `pool` and prints progress (stderr) and a summary (stdout).
pub async fn run(
    pool: PgPool,
    ingest: Ingest,
    opts: DemoOptions,
    partition_secs: i64,
) -> anyhow::Result<()> {
    for t in TENANTS {
        ferry_shared::db::add_tenant(&pool, t, &format!("{t} (demo)")).await?;
    }
    let run_id = format!("demo{:x}", Utc::now().timestamp_millis());
    // The stream reaches two hours back: create its partitions first, as the rollup timer
    // keeps them ahead in production (on-demand creation locks `events` briefly).
    ferry_shared::db::ensure_partitions_ahead(
        &pool,
        Utc::now() - chrono::Duration::minutes(125),
        Duration::from_secs(2 * 3600 + 600),
        partition_secs,
    )
    .await?;
    let (messages, offered) = generate(&opts, &run_id, Utc::now());
    eprintln!(
        "ferry demo: {} events in {} messages for tenants {} ({} producer retries, {} malformed), \
         {} workers x {} messages per invocation",
        offered.events,
        offered.messages,
        TENANTS.join(", "),
        offered.resent_messages,
        offered.malformed,
        opts.workers,
        opts.batch_size
    );
    let queue = Arc::new(LocalQueue::new(Duration::from_secs(30), Some(5)));
    for body in messages {
        queue.send(body);
    }
    let handler = Arc::new(Counting {
        ingest,
        totals: Mutex::new(Totals::default()),
    });
    let started = Instant::now();
    let progress = {
        let (queue, handler) = (Arc::clone(&queue), Arc::clone(&handler));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let s = queue.stats();
                let loaded = handler
                    .totals
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .loaded;
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "  [{secs:5.1}s] {}/{} messages acknowledged, {loaded} events loaded ({:.0} events/s)",
                    s.acked,
                    s.sent,
                    loaded as f64 / secs
                );
            }
        })
    };
    drain(
        Arc::clone(&queue),
        Arc::clone(&handler),
        opts.workers,
        opts.batch_size,
    )
    .await;
    let elapsed = started.elapsed();
    progress.abort();
    let totals = handler
        .totals
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_id LIKE $1 || '-%'")
            .bind(&run_id)
            .fetch_one(&pool)
            .await?;
    let stats = queue.stats();
    print_summary(&offered, &totals, stats, stored, elapsed);
    Ok(())
}

#[allow(clippy::print_stdout)]
fn print_summary(
    offered: &Offered,
    t: &Totals,
    q: crate::queue::QueueStats,
    stored: i64,
    elapsed: Duration,
) {
    let quarantined: u64 = t.quarantined.values().sum();
    let secs = elapsed.as_secs_f64();
    println!();
    println!("ferry demo summary");
    println!("  messages sent             {:>10}", q.sent);
    println!(
        "  deliveries (redelivered)  {:>10} ({})",
        q.deliveries, q.redeliveries
    );
    println!("  dead-lettered messages    {:>10}", q.dead);
    println!("  events offered            {:>10}", offered.events);
    println!("  events loaded             {:>10}", t.loaded);
    println!("  duplicates dropped        {:>10}", t.duplicates);
    println!("  messages already applied  {:>10}", t.already_applied);
    println!("  quarantined               {:>10}", quarantined);
    for (reason, n) in &t.quarantined {
        println!("    {:<24}{:>10}", reason.as_str(), n);
    }
    println!("  transient failures        {:>10}", t.transient_failures);
    println!("  events in database (run)  {:>10}", stored);
    println!("  elapsed                   {:>9.2}s", secs);
    println!(
        "  throughput                {:>10.0} events/s loaded",
        t.loaded as f64 / secs
    );
}

/// The file half of the demo: `events` generated events written as gzip NDJSON files into the
/// local bucket (`tracker/`), plus an access-log CSV (`access-logs/`, with static assets and
/// health checks to drop), picked up by the bucket watcher and loaded by the transform handler.
#[allow(clippy::print_stdout)]
pub async fn files(
    transform: &ferry_transform::Transform,
    bucket: &std::path::Path,
    events: usize,
    seed: u64,
) -> anyhow::Result<()> {
    use std::io::Write;
    let now = Utc::now();
    let run = format!("demo{:x}", now.timestamp_millis());
    let generated = generate_events(events, seed ^ 0x5eed, now);
    let files = 8.min(generated.len().max(1));
    let per_file = generated.len().div_ceil(files);
    let write = |key: &str, bytes: &[u8]| -> anyhow::Result<()> {
        let path = bucket.join(key);
        std::fs::create_dir_all(path.parent().expect("key has a directory"))?;
        // Write then rename, as an uploader would: the watcher never sees half a file.
        let tmp = path.with_extension("part");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    };
    for (i, part) in generated.chunks(per_file.max(1)).enumerate() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        for e in part {
            serde_json::to_writer(&mut gz, e)?;
            gz.write_all(b"\n")?;
        }
        write(
            &format!("tracker/{run}/part-{i:03}.ndjson.gz"),
            &gz.finish()?,
        )?;
    }
    let mut csv = String::from("ts,tenant,method,path,status,user,session,request_id\n");
    let paths = [
        "/api/v1/tasks/17",
        "/products/p-3",
        "/cart",
        "/app.css",
        "/healthz",
        "/",
    ];
    for i in 0..600usize {
        let method = if paths[i % paths.len()] == "/cart" {
            "POST"
        } else {
            "GET"
        };
        let ts = (now - chrono::Duration::seconds((i % 600) as i64)).to_rfc3339();
        csv.push_str(&format!(
            "{ts},{},{method},{},200,u{},s{},{run}-r{i}\n",
            TENANTS[i % 3],
            paths[i % paths.len()],
            i % 50,
            i % 20
        ));
    }
    write(&format!("access-logs/{run}.csv"), csv.as_bytes())?;

    let started = Instant::now();
    let mut watcher = crate::bucket::Watcher::new(bucket);
    let mut summary = crate::bucket::Summary::default();
    for r in watcher.scan(transform).await? {
        summary.add(&r);
    }
    let secs = started.elapsed().as_secs_f64();
    println!();
    println!("ferry demo: files in {}", bucket.display());
    println!("  objects handled           {:>10}", summary.objects);
    println!("  objects loaded            {:>10}", summary.loaded_objects);
    println!(
        "  objects already applied   {:>10}",
        summary.already_applied
    );
    println!(
        "  objects quarantined       {:>10}",
        summary.quarantined_objects
    );
    println!("  records read              {:>10}", summary.records);
    println!("  events loaded             {:>10}", summary.events_loaded);
    println!("  duplicates                {:>10}", summary.duplicates);
    println!(
        "  records quarantined       {:>10}",
        summary.quarantined_records
    );
    println!("  records dropped by rules  {:>10}", summary.dropped);
    println!(
        "  elapsed                   {:>9.2}s  ({:.0} records/s)",
        secs,
        summary.records as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// Runs one tick of the rollup function over what the demo loaded and prints, per tenant, the
/// last two hours from the rollups (events, distinct users from hll next to the exact count,
/// top pages, revenue) and any anomalies found.
#[allow(clippy::print_stdout)]
pub async fn rollups(rollup: &ferry_rollup::Rollup) -> anyhow::Result<()> {
    use ferry_shared::queries;
    let now = Utc::now();
    let t = std::time::Instant::now();
    let reports = rollup.run_at(now, now).await;
    println!("\nrollup tick ({:.2} s)", t.elapsed().as_secs_f64());
    for r in &reports {
        println!(
            "  {:<13} {:<7} {:>8} rows  {}{}",
            r.job,
            format!("{:?}", r.outcome).to_lowercase(),
            r.rows,
            r.detail,
            r.error
                .as_deref()
                .map(|e| format!(" error: {e}"))
                .unwrap_or_default()
        );
    }
    let pool = rollup.pool();
    let (from, to) = (
        now - chrono::Duration::hours(2),
        now + chrono::Duration::minutes(5),
    );
    for tenant in TENANTS {
        let events = queries::time_series(
            pool,
            tenant,
            &queries::Metric::Events { event_type: None },
            queries::Grain::Hour,
            from,
            to,
        )
        .await?;
        let total: f64 = events.iter().map(|p| p.value).sum();
        let users = queries::unique_users(pool, tenant, from, to, None).await?;
        let exact: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT user_id) FROM events
             WHERE tenant_id = $1 AND time >= date_bin('5 minutes', $2, TIMESTAMPTZ 'epoch') AND time < $3",
        )
        .bind(tenant)
        .bind(from)
        .bind(to)
        .fetch_one(pool)
        .await?;
        let pages = queries::top_pages(pool, tenant, from, to, 3).await?;
        let revenue = queries::revenue(pool, tenant, from, to).await?;
        println!(
            "{tenant}: {total:.0} events in 2 h; distinct users {users:.0} (hll) vs {exact} (exact)"
        );
        let pages: Vec<String> = pages
            .iter()
            .map(|p| format!("{} {}", p.page, p.views))
            .collect();
        println!("  top pages: {}", pages.join(", "));
        for r in revenue {
            println!(
                "  revenue {}: {:.2} net ({} purchases, {} refunds)",
                r.currency,
                r.net / 100.0,
                r.purchases,
                r.refunds
            );
        }
        let found =
            queries::recent_anomalies(pool, tenant, now - chrono::Duration::hours(1), 5).await?;
        if found.is_empty() {
            println!("  anomalies: none (a steady stream)");
        }
        for a in found {
            println!(
                "  anomaly {} {} at {}: {:.0} vs baseline {:.0} (score {:.1})",
                a.kind,
                a.metric,
                a.bucket.format("%H:%M"),
                a.value,
                a.baseline,
                a.score
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_mixes_retries_malformed_input_and_batches() {
        let opts = DemoOptions {
            events: 5_000,
            workers: 1,
            batch_size: 10,
            seed: 7,
            live_rate: None,
        };
        let (messages, offered) = generate(&opts, "t", Utc::now());
        assert_eq!(offered.events, 5_000);
        assert_eq!(offered.messages as usize, messages.len());
        assert!(offered.resent_messages > 20, "{offered:?}");
        assert!(offered.malformed > 50, "{offered:?}");
        assert!(messages.iter().any(|m| m.first() == Some(&b'[')));
        assert!(messages.iter().any(|m| std::str::from_utf8(m).is_err()));
    }

    #[test]
    fn a_live_stream_is_stamped_when_it_is_sent() {
        let now = Utc::now();
        let opts = DemoOptions {
            events: 20_000,
            workers: 1,
            batch_size: 10,
            seed: 3,
            live_rate: Some(1_000),
        };
        let (messages, _) = generate(&opts, "t", now);
        let times: Vec<DateTime<Utc>> = messages
            .iter()
            .filter_map(|m| serde_json::from_slice::<Value>(m).ok())
            .flat_map(|v| match v {
                Value::Array(a) => a,
                one => vec![one],
            })
            .filter_map(|e| e.get("time")?.as_str()?.parse().ok())
            .collect();
        assert!(times.len() > 15_000, "{} times read", times.len());
        // 20,000 events at 1,000 a second: sent over 20 s after `now`, none stamped after it is
        // sent, most within 2 s of it, the late tail at most 10 minutes back. The generator's
        // deliberately bad events (a time from 2019, among others) are the only exceptions.
        let last = now + chrono::Duration::seconds(21);
        let outside = times
            .iter()
            .filter(|t| **t > last || **t <= now - chrono::Duration::minutes(10))
            .count();
        assert!(outside * 100 < times.len(), "{outside} of {}", times.len());
        let recent = times
            .iter()
            .filter(|t| **t >= now - chrono::Duration::seconds(2))
            .count();
        assert!(
            recent * 100 >= times.len() * 95,
            "{recent} of {}",
            times.len()
        );
        assert!(times
            .iter()
            .any(|t| *t > now + chrono::Duration::seconds(15)));
    }
}
