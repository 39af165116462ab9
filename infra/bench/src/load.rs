//! `ferry-bench ingest`: the ingest handler against raw COPY of the same rows, in one run.
//!
//! Both sides load the same generated events into identically migrated databases on the same
//! server, with the same dedup (`ON CONFLICT DO NOTHING` on the events key):
//! - handler: message bodies (JSON text) → `Ingest::process` in-process, with `workers`
//!   concurrent invocations of `batch` messages each — parsing, validation, ledger, tenants,
//!   partitions, quarantine bookkeeping included;
//! - baseline: the already-validated rows, binary-encoded beforehand, `COPY` into a staging
//!   table and one `INSERT … SELECT … ON CONFLICT DO NOTHING`, on one connection.
//!
//! It also sweeps the two write strategies over unit sizes, which is how the default
//! `FERRY_COPY_THRESHOLD` was chosen.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ferry_ingest::Ingest;
use ferry_shared::config::{Config, Env};
use ferry_shared::copy::{copy_to_staging, create_staging};
use ferry_shared::load::{Loader, LoaderConfig, Unit};
use ferry_shared::validate::parse_body;
use ferry_shared::validate::Parsed;
use ferry_shared::{db, Event, QueueBatch, QueueMessage};
use sqlx::PgPool;

use ferry_local::demo::{generate_events, TENANTS};
use ferry_local::postgres::with_database;

use crate::machine;

/// Options of the ingest benchmark.
#[derive(Debug, Clone)]
pub struct IngestBench {
    pub events: usize,
    pub events_per_message: usize,
    pub messages_per_batch: usize,
    pub workers: usize,
    /// Also sweep the write strategies over unit sizes.
    pub sweep: bool,
}

pub(crate) async fn prepare(base_url: &str, name: &str, cfg: &Config) -> anyhow::Result<PgPool> {
    // On a Citus coordinator: on every node, then placed by the migration (ferry_local::citus).
    ferry_local::citus::drop_database(base_url, name).await?;
    ferry_local::citus::create_database(base_url, name, None).await?;
    let pool = db::pool(&cfg.db, &with_database(base_url, name), "ferry-bench")?;
    // As `ferry migrate` does: FERRY_PARTITION_INTERVAL, when set, is the width recorded.
    db::migrate_with(&pool, &db::MigrateOptions::from_config(cfg)).await?;
    for t in TENANTS {
        db::add_tenant(&pool, t, t).await?;
    }
    // Both sides find their partitions ready; creating them is not what is measured.
    db::ensure_partitions_ahead(
        &pool,
        Utc::now() - chrono::Duration::hours(3),
        Duration::from_secs(4 * 3600),
        cfg.partition_secs(),
    )
    .await?;
    Ok(pool)
}

/// Runs the benchmark and prints its figures.
#[allow(clippy::print_stdout)]
pub async fn ingest(admin_url: &str, cfg: &Config, opts: &IngestBench) -> anyhow::Result<()> {
    let mut cfg = cfg.clone();
    cfg.db.max_connections = opts.workers as u32 + 2;

    println!(
        "generating {} events ({} per message, {} messages per invocation)",
        opts.events, opts.events_per_message, opts.messages_per_batch
    );
    let events = generate_events(opts.events, 1, Utc::now());
    let bodies: Vec<Vec<u8>> = events
        .chunks(opts.events_per_message)
        .map(|c| serde_json::to_vec(c).expect("serialise"))
        .collect();
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    println!(
        "  {} messages, {:.1} MiB of JSON, {:.0} bytes per event",
        bodies.len(),
        bytes as f64 / 1048576.0,
        bytes as f64 / opts.events as f64
    );

    // Baseline first input: the same rows, validated and encoded outside the timing.
    let now = Utc::now();
    let validated: Vec<Event> = bodies
        .iter()
        .flat_map(|b| parse_body(b, &cfg.limits, now).events)
        .collect();
    assert_eq!(validated.len(), opts.events, "generated events are valid");

    println!("machine   {}", machine::load_line());
    // One COPY of every row, as a single big message would be.
    let all = validated.len().max(1);
    let before = copy_baseline(admin_url, &cfg, &validated, all, "before").await?;

    let handler_pool = prepare(admin_url, "bench_handler", &cfg).await?;
    let ingest = Arc::new(Ingest::with_pool(&cfg, handler_pool.clone(), "ingest"));
    let batches = Arc::new(queue_batches(&bodies, opts.messages_per_batch));
    drop(bodies);
    let phase = machine::Phase::start();
    let loaded = run_workers(&ingest, &batches, opts.workers).await?;
    let took = phase.stop();
    let handler_secs = took.secs;
    assert_eq!(loaded as usize, opts.events);
    let handler_rate = opts.events as f64 / handler_secs;
    println!(
        "handler   ingest in-process, {} workers:  {loaded} events in {handler_secs:.2}s = {handler_rate:.0} events/s; {}",
        opts.workers,
        took.cpu_note()
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&handler_pool)
        .await?;
    assert_eq!(stored as usize, opts.events);
    handler_pool.close().await;
    let after = copy_baseline(admin_url, &cfg, &validated, all, "after").await?;
    drop(validated);
    print_ratio(handler_rate, before, after);

    if opts.sweep {
        strategy_sweep(admin_url, &cfg).await?;
    }
    for name in ["bench_copy", "bench_handler", "bench_sweep"] {
        ferry_local::citus::drop_database(admin_url, name).await?;
    }
    Ok(())
}

/// The message bodies as queue batches of `per_batch` messages, each with its own id.
fn queue_batches(bodies: &[Vec<u8>], per_batch: usize) -> Vec<QueueBatch> {
    bodies
        .chunks(per_batch)
        .enumerate()
        .map(|(b, chunk)| QueueBatch {
            messages: chunk
                .iter()
                .enumerate()
                .map(|(i, body)| QueueMessage {
                    id: format!("bench-{b}-{i}"),
                    body: body.clone(),
                    delivery_count: 1,
                    ..Default::default()
                })
                .collect(),
        })
        .collect()
}

/// `workers` concurrent invocations of the handler, taking batches in turn until none is
/// left; returns the events loaded.
async fn run_workers(
    ingest: &Arc<Ingest>,
    batches: &Arc<Vec<QueueBatch>>,
    workers: usize,
) -> anyhow::Result<u64> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (ingest, batches, next) = (Arc::clone(ingest), Arc::clone(batches), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut loaded = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(batch) = batches.get(i) else {
                    return loaded;
                };
                let report = ingest.process(batch).await;
                assert!(
                    report.failed.is_empty(),
                    "bench batch failed: {:?}",
                    report.failed
                );
                loaded += report.units.iter().map(|u| u.loaded).sum::<u64>();
            }
        }));
    }
    let mut loaded = 0;
    for t in tasks {
        loaded += t.await?;
    }
    Ok(loaded)
}

/// Rows/s of the loader's two write strategies, UNNEST and binary COPY, for units of several
/// sizes (one unit per transaction, 1 connection): how `FERRY_COPY_THRESHOLD` was chosen.
#[allow(clippy::print_stdout)]
async fn strategy_sweep(admin_url: &str, cfg: &Config) -> anyhow::Result<()> {
    println!("write strategy by unit size (rows/s, one unit per transaction, 1 connection):");
    println!("  {:>6}  {:>10}  {:>10}", "rows", "UNNEST", "COPY");
    let pool = prepare(admin_url, "bench_sweep", cfg).await?;
    let now = Utc::now();
    let total = 100_000;
    for size in [10usize, 100, 500, 1000, 2000, 5000, 20000] {
        let mut rates = Vec::new();
        for (s, copy) in [false, true].into_iter().enumerate() {
            // The threshold alone picks the strategy: 1 = always COPY, never = always UNNEST.
            let loader = Loader::new(
                pool.clone(),
                LoaderConfig {
                    copy_threshold: if copy { 1 } else { usize::MAX },
                    ..LoaderConfig::from_config(cfg)
                },
            );
            let events = generate_events(total, 1000 + size as u64 * 2 + s as u64, now);
            let body = serde_json::to_vec(&events)?;
            let parsed = parse_body(&body, &cfg.limits, now).events;
            let units: Vec<Unit> = parsed
                .chunks(size)
                .enumerate()
                .map(|(i, chunk)| Unit {
                    key: format!("sweep:{size}:{s}:{i}"),
                    parsed: Parsed {
                        events: chunk.to_vec(),
                        rejected: Vec::new(),
                    },
                })
                .collect();
            let started = Instant::now();
            for unit in &units {
                loader.load("bench", std::slice::from_ref(unit)).await?;
            }
            rates.push(total as f64 / started.elapsed().as_secs_f64());
        }
        println!("  {:>6}  {:>10.0}  {:>10.0}", size, rates[0], rates[1]);
    }
    Ok(())
}

/// Options of the transform benchmark.
#[derive(Debug, Clone)]
pub struct TransformBench {
    pub events: usize,
    /// Where the generated file goes.
    pub dir: std::path::PathBuf,
}

/// What the handler process reports (one JSON line on stdout).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct HandlerRun {
    pub records: u64,
    pub loaded: u64,
    pub secs: f64,
    pub peak_rss_kib: u64,
}

/// Writes `events` generated events as one gzip NDJSON file, 100,000 at a time (so the
/// generator itself stays small). Returns its size in bytes.
pub fn write_gzip_ndjson(path: &std::path::Path, events: usize) -> anyhow::Result<u64> {
    use std::io::Write;
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let now = Utc::now();
    let mut written = 0;
    let mut seed = 7_000;
    while written < events {
        let n = (events - written).min(100_000);
        for e in generate_events(n, seed, now) {
            serde_json::to_writer(&mut gz, &e)?;
            gz.write_all(b"\n")?;
        }
        written += n;
        seed += 1;
    }
    gz.finish()?.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// Peak resident set size of this process (`VmHWM`), in KiB.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// The handler side, run in its own process so its peak RSS is its own: one notification for
/// `key` in the local store `dir`, loaded into `database_url`.
pub async fn transform_run(
    database_url: &str,
    cfg: &Config,
    dir: &std::path::Path,
    key: &str,
) -> anyhow::Result<HandlerRun> {
    let pool = db::pool(&cfg.db, database_url, "ferry-bench")?;
    let tcfg = ferry_transform::TransformConfig::from_env(&Env::process())?;
    let t = ferry_transform::Transform::with_pool(cfg, tcfg, pool, "transform")?;
    let blob = ferry_shared::BlobCreated {
        store: ferry_local::bucket::file_store(&std::fs::canonicalize(dir)?),
        key: key.to_owned(),
        ..Default::default()
    };
    let started = Instant::now();
    let report = t.process(&blob).await?;
    let secs = started.elapsed().as_secs_f64();
    Ok(HandlerRun {
        records: report.records,
        loaded: report.loaded,
        secs,
        peak_rss_kib: peak_rss_kib(),
    })
}

/// Runs the transform benchmark: raw COPY of the rows vs the handler (a child process of
/// `ferry-bench transform-run`) on the same generated file, same server, fresh databases.
#[allow(clippy::print_stdout)]
pub async fn transform(
    admin_url: &str,
    cfg: &Config,
    opts: &TransformBench,
    self_exe: &std::path::Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.dir)?;
    // The rules file covers `tracker/`: the generated file is a tracker drop.
    let tracker = opts.dir.join("tracker");
    std::fs::create_dir_all(&tracker)?;
    let key = format!("tracker/bench-{}.ndjson.gz", opts.events);
    let file = opts.dir.join(&key);
    println!("generating {} events as gzip NDJSON", opts.events);
    let size = write_gzip_ndjson(&file, opts.events)?;
    println!(
        "  {} ({:.1} MiB compressed)",
        file.display(),
        size as f64 / 1048576.0
    );

    // Baseline: the same rows, decompressed, parsed and validated beforehand, then COPY into
    // staging (50,000 rows per COPY, encoding included) and one merge, in one transaction.
    let now = Utc::now();
    let events: Vec<Event> = {
        use std::io::BufRead;
        let reader = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(
            std::fs::File::open(&file)?,
        ));
        let mut out = Vec::with_capacity(opts.events);
        for (i, line) in reader.lines().enumerate() {
            let line = line?;
            let e = ferry_shared::validate::validate_event(&line, i as i32 + 1, &cfg.limits, now)
                .map_err(|r| anyhow::anyhow!("generated event rejected: {}", r.detail))?;
            out.push(e);
        }
        out
    };
    println!("machine   {}", machine::load_line());
    let before = copy_baseline(admin_url, cfg, &events, 50_000, "before").await?;

    prepare(admin_url, "bench_thandler", cfg).await?;
    let url = with_database(admin_url, "bench_thandler");
    let phase = machine::Phase::start();
    let out = tokio::process::Command::new(self_exe)
        .args(["transform-run", "--dir"])
        .arg(&opts.dir)
        .args(["--key", &key])
        .env("DATABASE_URL", &url)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await?;
    let took = phase.stop();
    anyhow::ensure!(out.status.success(), "handler run failed");
    let run: HandlerRun = serde_json::from_slice(&out.stdout)?;
    anyhow::ensure!(
        run.loaded as usize == opts.events,
        "handler loaded {}",
        run.loaded
    );
    let rate = opts.events as f64 / run.secs;
    println!(
        "handler   transform (stream, gunzip, parse, validate, COPY, merge, derived state): {} events in {:.2}s = {rate:.0} events/s; {} (process included)",
        run.loaded, run.secs, took.cpu_note()
    );
    let after = copy_baseline(admin_url, cfg, &events, 50_000, "after").await?;
    drop(events);
    print_ratio(rate, before, after);
    println!(
        "memory    handler peak RSS = {:.1} MiB (file: {:.1} MiB compressed, ~{:.0} MiB of JSON)",
        run.peak_rss_kib as f64 / 1024.0,
        size as f64 / 1048576.0,
        opts.events as f64 * 280.0 / 1048576.0
    );
    for name in ["bench_copy", "bench_thandler"] {
        ferry_local::citus::drop_database(admin_url, name).await?;
    }
    std::fs::remove_file(&file)?;
    Ok(())
}

/// The baseline, in a fresh database: `events` (validated and encoded beforehand) binary-COPYed
/// into a staging table `chunk` rows at a time and merged into `events` with one
/// `INSERT … SELECT … ON CONFLICT DO NOTHING`, in one transaction on one connection. Run before
/// and after the handler, so that a machine that got busier or quieter in between shows.
/// Returns rows/s.
#[allow(clippy::print_stdout)]
async fn copy_baseline(
    admin_url: &str,
    cfg: &Config,
    events: &[Event],
    chunk: usize,
    when: &str,
) -> anyhow::Result<f64> {
    let pool = prepare(admin_url, "bench_copy", cfg).await?;
    let now = Utc::now();
    let mut conn = pool.acquire().await?;
    let phase = machine::Phase::start();
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    // One merge of millions of rows takes longer than the pool's statement timeout.
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *tx)
        .await?;
    create_staging(&mut tx).await?;
    for part in events.chunks(chunk) {
        let refs: Vec<&Event> = part.iter().collect();
        copy_to_staging(&mut tx, &refs).await?;
    }
    let loaded = baseline_merge(&mut tx, now).await?;
    tx.commit().await?;
    let took = phase.stop();
    drop(conn);
    pool.close().await;
    anyhow::ensure!(loaded as usize == events.len(), "baseline loaded {loaded}");
    let rate = events.len() as f64 / took.secs;
    println!(
        "baseline  raw COPY + merge, 1 connection, {when}: {loaded} rows in {:.2}s = {rate:.0} rows/s; {}",
        took.secs,
        took.cpu_note()
    );
    Ok(rate)
}

/// The ratio against the mean of the two baselines, with their spread, and the load average.
#[allow(clippy::print_stdout)]
fn print_ratio(rate: f64, before: f64, after: f64) {
    let mean = (before + after) / 2.0;
    println!(
        "ratio     handler / raw COPY = {:.2} (against the mean of {before:.0} and {after:.0} rows/s; {:.2}–{:.2} against each)",
        rate / mean,
        rate / before.max(after),
        rate / before.min(after)
    );
    println!("machine   {}", machine::load_line());
}

/// The baseline's merge: staging rows into `events`, deduplicated, and nothing else (the
/// loader's merge also keeps the new rows that feed derived state in `ferry_loaded`).
async fn baseline_merge(
    conn: &mut sqlx::PgConnection,
    received_at: chrono::DateTime<Utc>,
) -> anyhow::Result<u64> {
    let done = sqlx::query(
        "INSERT INTO events (tenant_id, source, event_id, type, subject, time, received_at,
                             user_id, session_id, datacontenttype, dataschema, extensions, data,
                             data_base64)
         SELECT tenant_id, source, event_id, type, subject, time, $1, user_id, session_id,
                datacontenttype, dataschema, extensions::jsonb, data::jsonb, data_base64
         FROM ferry_staging
         ON CONFLICT DO NOTHING",
    )
    .bind(received_at)
    .execute(&mut *conn)
    .await?;
    sqlx::query("TRUNCATE ferry_staging")
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}

/// Options of the rollup benchmark.
#[derive(Debug, Clone)]
pub struct RollupBench {
    /// Fresh events rolled up in one bulk run.
    pub events: i64,
    /// Events already in the table (and rolled up) before the incremental run.
    pub base: i64,
    /// New events the incremental run rolls up.
    pub increment: i64,
}

/// Inserts `[first, last]` synthetic events shaped like the demo stream (3 tenants, page and
/// product views, carts, catalog updates, payments) spread over the `spread_secs` before `end`.
pub(crate) async fn insert_synthetic(
    pool: &PgPool,
    first: i64,
    last: i64,
    end: chrono::DateTime<Utc>,
    spread_secs: i64,
) -> anyhow::Result<()> {
    const CHUNK: i64 = 250_000;
    let mut lo = first;
    while lo <= last {
        let hi = (lo + CHUNK - 1).min(last);
        sqlx::query(
            "INSERT INTO events (tenant_id, source, event_id, type, time, received_at, user_id,
                                 session_id, data)
             SELECT t,
                    CASE WHEN r < 85 THEN '/web/tracker' WHEN r < 92 THEN '/erp/catalog'
                         ELSE '/payments/psp' END,
                    'bench-' || g,
                    CASE WHEN r < 55 THEN 'page.viewed' WHEN r < 75 THEN 'product.viewed'
                         WHEN r < 85 THEN 'cart.item_added' WHEN r < 92 THEN 'product.updated'
                         WHEN r < 99 THEN 'payment.captured' ELSE 'payment.refunded' END,
                    $1::timestamptz - ((g * 7919) % $2) * interval '1 second',
                    now(), 'u' || (g * 31 % 2000), 's' || (g * 17 % 5000),
                    CASE WHEN r < 55 THEN jsonb_build_object(
                             'path', (ARRAY['/', '/search', '/cart', '/checkout', '/help'])[1 + g % 5],
                             'referrer', 'https://search.example/')
                         WHEN r < 92 THEN jsonb_build_object('sku', 'sku-' || lpad((g % 500)::text, 4, '0'))
                         ELSE jsonb_build_object('amount_cents', 500 + g % 250000, 'currency', 'EUR',
                                                 'order', 'o-' || g) END
             FROM (SELECT g, (g * 2654435761) % 100 AS r,
                          (ARRAY['acme', 'globex', 'initech'])[1 + (g % 3)::int] AS t
                   FROM generate_series($3::bigint, $4::bigint) AS g) s",
        )
        .bind(end)
        .bind(spread_secs.max(1))
        .bind(lo)
        .bind(hi)
        .execute(pool)
        .await?;
        lo = hi + 1;
    }
    Ok(())
}

/// The cheapest possible rollup of a `seq` window, as the baseline: one count per tenant,
/// 5-minute bucket and type; no sketches, no dimensions, no merge, nothing written.
async fn baseline_aggregate(
    pool: &PgPool,
    from: i64,
    to: i64,
    work_mem_mb: u32,
) -> anyhow::Result<Duration> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
    sqlx::query(&format!("SET LOCAL work_mem = '{work_mem_mb}MB'"))
        .execute(&mut *tx)
        .await?;
    let t = Instant::now();
    sqlx::query(
        "SELECT tenant_id, date_bin('5 minutes', time, TIMESTAMPTZ 'epoch'), type, count(*)
         FROM events WHERE seq > $1 AND seq <= $2 GROUP BY 1, 2, 3",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&mut *tx)
    .await?;
    let elapsed = t.elapsed();
    tx.rollback().await?;
    Ok(elapsed)
}

/// `VACUUM ANALYZE events` (as autovacuum would after a load), without the pool's statement
/// timeout.
async fn vacuum(pool: &PgPool) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut *conn)
        .await?;
    sqlx::query("VACUUM ANALYZE events")
        .execute(&mut *conn)
        .await?;
    sqlx::query("RESET statement_timeout")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Runs the rollup benchmark and prints its figures.
#[allow(clippy::print_stdout)]
pub async fn rollup(admin_url: &str, cfg: &Config, opts: &RollupBench) -> anyhow::Result<()> {
    use ferry_rollup::{Rollup, RollupConfig, Step};
    let pool = prepare(admin_url, "bench_rollup", cfg).await?;
    let width = cfg.partition_secs();
    let now = Utc::now();
    let mut rcfg = RollupConfig::default();
    rcfg.aggregate.max_events = opts.events.max(opts.base).max(1);
    let work_mem = rcfg.aggregate.work_mem_mb;
    let r = Rollup::with_pool(cfg, rcfg, pool.clone(), "bench-rollup");

    // 1. Bulk: `events` fresh events over the last 2 hours, rolled up in one run.
    println!("loading {} events (last 2 hours)", opts.events);
    insert_synthetic(&pool, 1, opts.events, now, 7_200).await?;
    vacuum(&pool).await?;
    println!("machine   {}", machine::load_line());
    let base_time = baseline_aggregate(&pool, 0, i64::MAX, work_mem).await?;
    let t = Instant::now();
    let step = r.step().await?;
    let bulk = t.elapsed();
    let Step::Merged { events, .. } = step else {
        anyhow::bail!("bulk run did not merge: {step:?}");
    };
    let rate = events as f64 / bulk.as_secs_f64();
    let base_rate = opts.events as f64 / base_time.as_secs_f64();
    println!(
        "bulk rollup: {events} events in {:.2} s = {:.0} events/s",
        bulk.as_secs_f64(),
        rate
    );
    println!(
        "  baseline (count per tenant/bucket/type, no hll, no dimensions, no merge): {:.2} s = {:.0} events/s",
        base_time.as_secs_f64(),
        base_rate
    );
    println!("  ratio rollup/baseline: {:.2}", rate / base_rate);
    println!("machine   {}", machine::load_line());
    let rows: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM rollup_events) + (SELECT count(*) FROM rollup_pages)
              + (SELECT count(*) FROM rollup_products) + (SELECT count(*) FROM rollup_revenue)
              + (SELECT count(*) FROM rollup_sources)",
    )
    .fetch_one(&pool)
    .await?;
    println!("  rollup rows written: {rows}");

    // 2. Incremental: grow the table to `base` events over two days, roll them up, then add
    //    `increment` new ones and time the one run that picks them up.
    let more = opts.base - opts.events;
    if more > 0 {
        println!("loading {more} more events (over 2 days) and rolling them up");
        db::ensure_partitions_ahead(
            &pool,
            now - chrono::Duration::days(2),
            Duration::from_secs(2 * 86_400 + 3_600),
            width,
        )
        .await?;
        insert_synthetic(&pool, opts.events + 1, opts.base, now, 2 * 86_400).await?;
        vacuum(&pool).await?;
        let (n, _) = r.catch_up().await?;
        println!("  rolled up {n}");
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    let parts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass")
            .fetch_one(&pool)
            .await?;
    insert_synthetic(
        &pool,
        opts.base + 1,
        opts.base + opts.increment,
        Utc::now(),
        300,
    )
    .await?;
    let from: i64 = sqlx::query_scalar("SELECT last_seq FROM rollup_state WHERE name = 'events'")
        .fetch_one(&pool)
        .await?;
    let base_time = baseline_aggregate(&pool, from, i64::MAX, work_mem).await?;
    let t = Instant::now();
    let step = r.step().await?;
    let inc = t.elapsed();
    println!(
        "incremental rollup: {step:?} on top of {total} events in {parts} partitions: {:.0} ms \
         (baseline count over the same window: {:.0} ms; one tick is 60,000 ms)",
        inc.as_secs_f64() * 1000.0,
        base_time.as_secs_f64() * 1000.0
    );
    pool.close().await;
    ferry_local::citus::drop_database(admin_url, "bench_rollup").await?;
    Ok(())
}
