//! `ferry-bench query`: the query function's routes under concurrent load against the same
//! reads run directly, in one run.
//!
//! The database holds `events` synthetic events over 91 days (three tenants, the demo's mix)
//! rolled up by the real rollup, plus products, recently viewed lists and partner deliveries.
//! For each route, `clients` concurrent clients send `requests` requests through real HTTP on
//! loopback to the query router (in this process, on its own pool): key check, tenant check,
//! parameters, the read, JSON, ETag. The baseline is the same `ferry_shared::queries` call on
//! a pool of the same size, from the same number of tasks: what the API adds is everything
//! but the SQL. Ratio = API requests/s ÷ direct reads/s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, Utc};
use ferry_rollup::{Rollup, RollupConfig};
use ferry_shared::config::Config;
use ferry_shared::db;
use ferry_shared::queries::{self, Grain, Metric};
use sqlx::PgPool;

use crate::load::{insert_synthetic, prepare};
use crate::machine;

/// Options of the query benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryBench {
    /// Events over 91 days, rolled up before the routes are measured.
    #[arg(long, default_value_t = 10_000_000)]
    pub events: i64,
    /// Concurrent clients (and connections of each side's pool).
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Requests per route and side.
    #[arg(long, default_value_t = 400)]
    pub requests: usize,
    /// Reuse the database of an earlier run (same event count) instead of loading afresh.
    #[arg(long)]
    pub reuse: bool,
}

const TENANT: &str = "acme";
const DB_NAME: &str = "bench_query";

/// One measured route: its path and query (relative to /v1/tenants/acme), and its read.
struct Case {
    name: &'static str,
    path: String,
    read: Read,
}

#[derive(Clone, Copy)]
enum Read {
    Events(Grain, i64),
    ByType(Grain, i64),
    Visitors(i64),
    TopPages(i64),
    TopProducts(i64),
    Revenue(i64),
    Sources(i64),
    Anomalies,
    Product,
    RecentlyViewed,
    AlsoViewed,
    Endpoints,
}

fn cases(to: DateTime<Utc>) -> Vec<Case> {
    let range = |days: i64| {
        format!(
            "from={}&to={}",
            (to - chrono::Duration::days(days)).format("%Y-%m-%dT%H:%M:%SZ"),
            to.format("%Y-%m-%dT%H:%M:%SZ")
        )
    };
    let c = |name, path: String, read| Case { name, path, read };
    vec![
        c(
            "events, 1 day (5m)",
            format!("/events?{}&grain=5m", range(1)),
            Read::Events(Grain::FiveMinutes, 1),
        ),
        c(
            "events, 90 days (1d)",
            format!("/events?{}&grain=1d", range(90)),
            Read::Events(Grain::Day, 90),
        ),
        c(
            "events by type, 1 day (1h)",
            format!("/events/by-type?{}&grain=1h", range(1)),
            Read::ByType(Grain::Hour, 1),
        ),
        c(
            "events by type, 90 days (1d)",
            format!("/events/by-type?{}&grain=1d", range(90)),
            Read::ByType(Grain::Day, 90),
        ),
        c(
            "visitors, 1 day",
            format!("/visitors?{}", range(1)),
            Read::Visitors(1),
        ),
        c(
            "visitors, 90 days",
            format!("/visitors?{}", range(90)),
            Read::Visitors(90),
        ),
        c(
            "top pages, 1 day",
            format!("/pages/top?{}", range(1)),
            Read::TopPages(1),
        ),
        c(
            "top pages, 90 days",
            format!("/pages/top?{}", range(90)),
            Read::TopPages(90),
        ),
        c(
            "top products, 1 day",
            format!("/products/top?{}", range(1)),
            Read::TopProducts(1),
        ),
        c(
            "top products, 90 days",
            format!("/products/top?{}", range(90)),
            Read::TopProducts(90),
        ),
        c(
            "revenue, 90 days",
            format!("/revenue?{}", range(90)),
            Read::Revenue(90),
        ),
        c(
            "sources per day, 90 days",
            format!("/sources?{}", range(90)),
            Read::Sources(90),
        ),
        c("anomalies", "/anomalies".into(), Read::Anomalies),
        c("a product", "/products/sku-0042".into(), Read::Product),
        c(
            "recently viewed",
            "/users/u42/recently-viewed".into(),
            Read::RecentlyViewed,
        ),
        c(
            "also viewed",
            "/products/sku-0042/also-viewed".into(),
            Read::AlsoViewed,
        ),
        c("endpoint health", "/endpoints".into(), Read::Endpoints),
    ]
}

/// The read a route does, straight through `ferry_shared::queries`.
async fn direct(pool: &PgPool, read: Read, to: DateTime<Utc>) -> anyhow::Result<()> {
    let from = |days: i64| to - chrono::Duration::days(days);
    let t = TENANT;
    match read {
        Read::Events(g, d) => {
            let m = Metric::Events { event_type: None };
            queries::time_series(pool, t, &m, g, from(d), to)
                .await
                .map(drop)
        }
        Read::ByType(g, d) => queries::events_by_type(pool, t, g, from(d), to)
            .await
            .map(drop),
        Read::Visitors(d) => queries::visitors(pool, t, from(d), to, None)
            .await
            .map(drop),
        Read::TopPages(d) => queries::top_pages_from(pool, t, from(d), to, 10, 0)
            .await
            .map(drop),
        Read::TopProducts(d) => queries::top_products_from(pool, t, from(d), to, 10, 0)
            .await
            .map(drop),
        Read::Revenue(d) => queries::revenue(pool, t, from(d), to).await.map(drop),
        Read::Sources(d) => queries::source_days(pool, t, from(d), to).await.map(drop),
        Read::Anomalies => queries::recent_anomalies(pool, t, from(7), 50)
            .await
            .map(drop),
        Read::Product => queries::product(pool, t, "sku-0042").await.map(drop),
        Read::RecentlyViewed => queries::recently_viewed(pool, t, "u42", 10).await.map(drop),
        Read::AlsoViewed => queries::also_viewed(pool, t, "sku-0042", 10)
            .await
            .map(drop),
        Read::Endpoints => queries::endpoint_health(pool, t).await.map(drop),
    }
    .map_err(Into::into)
}

/// Latencies of `n` calls of `call` from `clients` tasks, and the wall time.
async fn drive<F, Fut>(clients: usize, n: usize, call: F) -> anyhow::Result<(Vec<f64>, f64)>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (call, next) = (call.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let t = Instant::now();
                call().await?;
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await??);
    }
    let wall = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Ok((all, wall))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Loads `events` events over 91 days, rolls them up, and adds the derived state and
/// deliveries the other routes read.
#[allow(clippy::print_stdout)]
async fn load(admin_url: &str, cfg: &Config, events: i64) -> anyhow::Result<PgPool> {
    let pool = prepare(admin_url, DB_NAME, cfg).await?;
    let now = Utc::now();
    let spread = 91 * 86_400;
    db::ensure_partitions_ahead(
        &pool,
        now - chrono::Duration::seconds(spread),
        Duration::from_secs(spread as u64 + 3_600),
        cfg.partition_secs(),
    )
    .await?;
    let t = Instant::now();
    println!("loading {events} events over 91 days");
    insert_synthetic(&pool, 1, events, now, spread).await?;
    println!("  loaded in {:.0} s", t.elapsed().as_secs_f64());
    for sql in [
        // 500 products with a state; 2,000 users × 20 recently viewed products per tenant.
        "INSERT INTO products (tenant_id, product_id, state, changed_at, source, event_id)
         SELECT t, 'sku-' || lpad(p::text, 4, '0'),
                jsonb_build_object('name', 'Product ' || p, 'price', 100 + p), now(), '/erp', 'e' || p
         FROM unnest(ARRAY['acme', 'globex', 'initech']) AS t, generate_series(0, 499) AS p
         ON CONFLICT DO NOTHING",
        "INSERT INTO recently_viewed (tenant_id, user_id, product_id, viewed_at)
         SELECT t, 'u' || u, 'sku-' || lpad(((u * 7 + j * 13) % 500)::text, 4, '0'),
                now() - make_interval(secs => u * 20 + j)
         FROM unnest(ARRAY['acme', 'globex', 'initech']) AS t, generate_series(0, 1999) AS u,
              generate_series(0, 19) AS j
         ON CONFLICT DO NOTHING",
        "INSERT INTO endpoints (tenant_id, url, event_types)
         SELECT 'acme', 'https://partner' || i || '.example/hook', '{product.*}'
         FROM generate_series(1, 5) AS i",
        "INSERT INTO webhook_messages (message_id, tenant_id, event_type, body)
         SELECT 'bench-' || i, 'acme', 'product.updated', '{}' FROM generate_series(1, 20000) AS i",
        // A fifth failed and a fifth pending, of which half after a failed attempt: each
        // with the partner's error, as a failing partner leaves them.
        "INSERT INTO deliveries
             (message_id, endpoint_id, tenant_id, status, created_at, attempts, last_error)
         SELECT 'bench-' || i, e.endpoint_id, 'acme',
                (ARRAY['delivered', 'delivered', 'delivered', 'pending', 'failed'])[1 + i % 5],
                now() - make_interval(secs => i % 80000),
                CASE WHEN i % 5 = 4 OR i % 10 = 3 THEN 3 ELSE 0 END,
                CASE WHEN i % 5 = 4 OR i % 10 = 3
                     THEN 'HTTP 503 from the partner after 212 ms: ' || repeat('x', 400) END
         FROM generate_series(1, 20000) AS i, endpoints e",
    ] {
        sqlx::query(sql).execute(&pool).await?;
    }
    Ok(pool)
}

/// Rolls up whatever is not yet (each `catch_up` stops at its time budget), then `VACUUM
/// ANALYZE` as autovacuum would after such a load.
#[allow(clippy::print_stdout)]
async fn roll_up_all(pool: &PgPool, cfg: &Config) -> anyhow::Result<()> {
    let mut rcfg = RollupConfig::default();
    rcfg.aggregate.max_events = 5_000_000;
    let r = Rollup::with_pool(cfg, rcfg, pool.clone(), "bench-query");
    let t = Instant::now();
    let mut total = 0;
    loop {
        let (n, _) = r.catch_up().await?;
        if n == 0 {
            break;
        }
        total += n;
        println!(
            "  rolled up {total} events ({:.0} s)",
            t.elapsed().as_secs_f64()
        );
    }
    let mut conn = pool.acquire().await?;
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut *conn)
        .await?;
    sqlx::query("VACUUM ANALYZE").execute(&mut *conn).await?;
    Ok(())
}

/// Runs the benchmark and prints its figures.
#[allow(clippy::print_stdout)]
pub async fn query(admin_url: &str, cfg: &Config, opts: &QueryBench) -> anyhow::Result<()> {
    let url = ferry_local::postgres::with_database(admin_url, DB_NAME);
    let mut dbcfg = cfg.db.clone();
    dbcfg.max_connections = opts.clients as u32;
    let reused = if opts.reuse {
        let pool = db::pool(&dbcfg, &url, "ferry-bench")?;
        let n: Option<i64> = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await
            .ok();
        (n == Some(opts.events)).then_some(pool)
    } else {
        None
    };
    let pool = match reused {
        Some(p) => {
            println!("reusing {DB_NAME} ({} events)", opts.events);
            p
        }
        None => {
            load(admin_url, cfg, opts.events).await?.close().await;
            db::pool(&dbcfg, &url, "ferry-bench")?
        }
    };
    roll_up_all(&pool, cfg).await?;
    let key = ferry_query::keys::issue(&pool, Some(TENANT), "bench")
        .await?
        .token;
    let server_pool = db::pool(&dbcfg, &url, "ferry-query")?;
    let query = ferry_query::Query::with_pool(Default::default(), server_pool, "query");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let base = format!("http://{}/v1/tenants/{TENANT}", listener.local_addr()?);
    tokio::spawn(warp::serve(query.routes()).incoming(listener).run());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.clients)
        .build()?;
    let to = Utc::now().duration_trunc(chrono::Duration::hours(1))?;
    println!(
        "{} concurrent clients, {} requests per route; API = HTTP on loopback to the query \
         router; direct = the same ferry_shared::queries call",
        opts.clients, opts.requests
    );
    println!("machine   {}", machine::load_line());
    println!(
        "{:<30} {:>9} {:>9} {:>8}   {:>9} {:>9} {:>8}   {:>5}",
        "route", "API p50", "p99 ms", "req/s", "direct p50", "p99 ms", "reads/s", "ratio"
    );
    for case in cases(to) {
        // Warm both sides (plans, connections) before measuring.
        let url = format!("{base}{}", case.path);
        let api_call = {
            let (client, url, key) = (client.clone(), url.clone(), key.clone());
            move || {
                let (client, url, key) = (client.clone(), url.clone(), key.clone());
                async move {
                    let r = client.get(&url).bearer_auth(&key).send().await?;
                    anyhow::ensure!(r.status().is_success(), "{url}: HTTP {}", r.status());
                    r.bytes().await?;
                    Ok(())
                }
            }
        };
        let direct_call = {
            let (pool, read) = (pool.clone(), case.read);
            move || {
                let pool = pool.clone();
                async move { direct(&pool, read, to).await }
            }
        };
        drive(opts.clients, opts.clients * 2, api_call.clone()).await?;
        drive(opts.clients, opts.clients * 2, direct_call.clone()).await?;
        let (api, api_wall) = drive(opts.clients, opts.requests, api_call).await?;
        let (dir, dir_wall) = drive(opts.clients, opts.requests, direct_call).await?;
        let (api_rate, dir_rate) = (api.len() as f64 / api_wall, dir.len() as f64 / dir_wall);
        println!(
            "{:<30} {:>9.1} {:>9.1} {:>8.0}   {:>9.1} {:>9.1} {:>8.0}   {:>5.2}",
            case.name,
            pct(&api, 0.5),
            pct(&api, 0.99),
            api_rate,
            pct(&dir, 0.5),
            pct(&dir, 0.99),
            dir_rate,
            api_rate / dir_rate
        );
    }
    compression(&client, &base, &key, to, opts).await?;
    println!("machine   {}", machine::load_line());
    Ok(())
}

/// The two largest answers sent as they are, gzipped and in brotli: bytes on the wire and
/// latency, so what compression costs the server shows beside what it saves.
#[allow(clippy::print_stdout)]
async fn compression(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    to: DateTime<Utc>,
    opts: &QueryBench,
) -> anyhow::Result<()> {
    // A dashboard file is compressed once per process, at the first request for it.
    let root = base.split("/v1/").next().unwrap_or(base);
    let mut firsts = Vec::new();
    for _ in 0..2 {
        let t = Instant::now();
        let r = client
            .get(format!("{root}/dashboard.js"))
            .header("accept-encoding", "br")
            .send()
            .await?;
        anyhow::ensure!(
            r.status().is_success(),
            "/dashboard.js: HTTP {}",
            r.status()
        );
        let len = r.bytes().await?.len();
        firsts.push((t.elapsed().as_secs_f64() * 1e3, len));
    }
    println!(
        "\ndashboard.js in brotli ({} bytes): first request {:.1} ms (compressed then, once \
         per process), then {:.1} ms",
        firsts[0].1, firsts[0].0, firsts[1].0
    );
    println!(
        "\n{:<30} {:>9} {:>9} {:>9} {:>8}",
        "compressed answers", "coding", "bytes", "API p50", "p99 ms"
    );
    for case in cases(to).into_iter().filter(|c| {
        matches!(
            c.read,
            Read::Events(Grain::FiveMinutes, 1) | Read::ByType(Grain::Day, 90)
        )
    }) {
        for coding in ["identity", "gzip", "br"] {
            let call = {
                let (client, url, key) = (client.clone(), format!("{base}{}", case.path), key);
                let key = key.to_owned();
                move || {
                    let (client, url, key) = (client.clone(), url.clone(), key.clone());
                    async move {
                        let r = client
                            .get(&url)
                            .bearer_auth(&key)
                            .header("accept-encoding", coding)
                            .send()
                            .await?;
                        anyhow::ensure!(r.status().is_success(), "{url}: HTTP {}", r.status());
                        Ok(r.bytes().await?.len())
                    }
                }
            };
            let bytes = call().await?;
            let sized = move || {
                let call = call.clone();
                async move { call().await.map(drop) }
            };
            let (lat, _) = drive(opts.clients, opts.requests, sized).await?;
            println!(
                "{:<30} {:>9} {:>9} {:>9.1} {:>8.1}",
                case.name,
                coding,
                bytes,
                pct(&lat, 0.5),
                pct(&lat, 0.99)
            );
        }
    }
    Ok(())
}
