//! Cold start of the function binaries, in Lambda mode against a loopback Lambda Runtime API
//! and as Azure custom handlers:
//!
//! - **init**: spawning the process → its first `GET /2018-06-01/runtime/invocation/next` (and,
//!   in Azure mode, → its first answer on `GET /`, the host's readiness probe). What
//!   Lambda bills as init (configuration, logging, the lazy pool, the runtime client) plus the
//!   process's own start (loading and relocating the binary). Baseline: spawning a process that
//!   does nothing (`/bin/true`), the floor any binary pays.
//! - **first invocation**: the first poll answered with a real event → the function's
//!   `…/response`, with the pool still empty: the first database connection (and, for
//!   `transform`, the first S3 client and GET) is part of it. Baselines in the same run: the
//!   same binary's second invocation of the same kind of event (warm pool), and the bench
//!   opening one connection to the same database and running `SELECT 1`.
//!
//! The event each binary gets is chosen by its label: `ingest` an SQS batch of one CloudEvent,
//! `transform` an S3 `ObjectCreated` notification for a one-event NDJSON object under
//! `tracker/`, served by this process as a path-style S3 endpoint (`AWS_ENDPOINT`), `rollup`
//! and `fanout` an EventBridge scheduled event. Every event is checked to have been stored.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use chrono::Utc;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::mpsc;
use warp::Filter;

/// Options of `ferry-bench coldstart`.
pub struct ColdstartBench {
    /// `label=path` of each binary to measure, in the order printed.
    pub binaries: Vec<(String, PathBuf)>,
    pub runs: usize,
    /// A migrated database with the demo tenants, for the invocations.
    pub database_url: String,
}

/// The source of every event this benchmark stores.
const SOURCE: &str = "/bench/coldstart";
const BUCKET: &str = "ferry-bench";

/// One run of one binary.
struct Run {
    init: Duration,
    /// `None` when the label names no event to send.
    first: Option<Duration>,
    warm: Option<Duration>,
}

/// One binary's figures.
struct Figures {
    label: String,
    size: u64,
    init: Vec<Duration>,
    /// Azure mode: process start → the first answer on `GET /`.
    ready: Vec<Duration>,
    first: Vec<Duration>,
    warm: Vec<Duration>,
}

/// Runs the benchmark and prints two tables.
#[allow(clippy::print_stdout)]
pub async fn coldstart(opts: &ColdstartBench) -> anyhow::Result<()> {
    if opts.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let mut baseline = Vec::with_capacity(opts.runs);
    let mut connect = Vec::with_capacity(opts.runs);
    for _ in 0..opts.runs {
        let start = Instant::now();
        let status = Command::new("true")
            .status()
            .await
            .context("spawning `true`")?;
        ensure!(status.success(), "`true` failed");
        baseline.push(start.elapsed());
        connect.push(connect_and_select(&opts.database_url).await?);
    }
    baseline.sort();
    connect.sort();
    let keys = ferry_fanout::keys::Keyring::new_entry("bench");
    let mut all = Vec::new();
    let mut expected = 0;
    for (label, path) in &opts.binaries {
        let size = std::fs::metadata(path)
            .with_context(|| format!("{label}: {}", path.display()))?
            .len();
        let mut f = Figures {
            label: label.clone(),
            size,
            init: Vec::new(),
            ready: Vec::new(),
            first: Vec::new(),
            warm: Vec::new(),
        };
        for run in 0..opts.runs {
            let events = Events::for_label(label, run);
            expected += events.stored;
            let r = one_run(path, &opts.database_url, &keys, events)
                .await
                .with_context(|| format!("{label}, run {}", run + 1))?;
            f.init.push(r.init);
            f.ready.push(
                azure_ready(path, &opts.database_url, &keys)
                    .await
                    .with_context(|| format!("{label}, Azure mode, run {}", run + 1))?,
            );
            f.first.extend(r.first);
            f.warm.extend(r.warm);
        }
        f.init.sort();
        f.ready.sort();
        f.first.sort();
        f.warm.sort();
        all.push(f);
    }
    let mut db = PgConnection::connect(&opts.database_url).await?;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE source = $1")
        .bind(SOURCE)
        .fetch_one(&mut db)
        .await?;
    ensure!(
        stored == expected as i64,
        "{expected} events were sent, {stored} are stored"
    );
    print_tables(opts.runs, expected, &baseline, &connect, &all);
    Ok(())
}

#[allow(clippy::print_stdout)]
fn print_tables(
    runs: usize,
    stored: usize,
    baseline: &[Duration],
    connect: &[Duration],
    all: &[Figures],
) {
    let base = median(baseline);
    println!("machine   {}", crate::machine::load_line());
    println!(
        "init, {runs} runs each: process start to the first GET /runtime/invocation/next \
         (Lambda), to the first answer on GET / (Azure custom handler)"
    );
    println!(
        "{:<28} {:>12} {:>10} {:>10} {:>10} {:>12} {:>12} {:>10}",
        "binary", "bytes", "min", "median", "max", "vs baseline", "Azure median", "Azure max"
    );
    println!(
        "{:<28} {:>12} {:>10} {:>10} {:>10} {:>12} {:>12} {:>10}",
        "baseline: spawn `true`",
        "-",
        ms(baseline[0]),
        ms(base),
        ms(baseline[baseline.len() - 1]),
        "1.0",
        "-",
        "-"
    );
    for f in all {
        println!(
            "{:<28} {:>12} {:>10} {:>10} {:>10} {:>12} {:>12} {:>10}",
            f.label,
            f.size,
            ms(f.init[0]),
            ms(median(&f.init)),
            ms(f.init[f.init.len() - 1]),
            ratio(&f.init, base),
            ms(median(&f.ready)),
            ms(f.ready[f.ready.len() - 1]),
        );
    }
    println!();
    println!(
        "first invocation (Lambda), empty pool: the event handed over to the function's \
         response; {runs} runs each, {stored} events stored and checked"
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>12} {:>10}",
        "binary", "min", "median", "max", "warm median", "first/warm"
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>12} {:>10}",
        "baseline: connect+SELECT 1",
        ms(connect[0]),
        ms(median(connect)),
        ms(connect[connect.len() - 1]),
        "-",
        "-"
    );
    for f in all.iter().filter(|f| !f.first.is_empty()) {
        let warm = median(&f.warm);
        println!(
            "{:<28} {:>10} {:>10} {:>10} {:>12} {:>10}",
            f.label,
            ms(f.first[0]),
            ms(median(&f.first)),
            ms(f.first[f.first.len() - 1]),
            ms(warm),
            ratio(&f.first, warm)
        );
    }
}

async fn connect_and_select(url: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut c = PgConnection::connect(url).await?;
    sqlx::query("SELECT 1").execute(&mut c).await?;
    let took = start.elapsed();
    c.close().await?;
    Ok(took)
}

/// The two invocations of one run, and the objects the S3 endpoint serves for them.
struct Events {
    invocations: Vec<Value>,
    objects: HashMap<String, Vec<u8>>,
    /// Events these invocations store.
    stored: usize,
}

impl Events {
    fn for_label(label: &str, run: usize) -> Events {
        let mut e = Events {
            invocations: Vec::new(),
            objects: HashMap::new(),
            stored: 0,
        };
        for n in 0..2 {
            let id = format!("{label}-{run}-{n}-{}", Utc::now().timestamp_micros());
            let invocation = match label {
                "ingest" => sqs_event(&id, &cloud_event(&id)),
                "transform" => {
                    let key = format!("tracker/coldstart/{id}.ndjson");
                    let mut body = serde_json::to_vec(&cloud_event(&id)).expect("json");
                    body.push(b'\n');
                    let event = s3_event(&key, body.len());
                    e.objects.insert(key, body);
                    event
                }
                "rollup" | "fanout" => scheduled_event(),
                _ => continue,
            };
            if matches!(label, "ingest" | "transform") {
                e.stored += 1;
            }
            e.invocations.push(invocation);
        }
        e
    }
}

fn cloud_event(id: &str) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": SOURCE,
        "type": "page.viewed",
        "subject": "/",
        "time": Utc::now().to_rfc3339(),
        "tenantid": "acme",
        "datacontenttype": "application/json",
        "data": {"user_id": "u-1", "session_id": "s-1", "path": "/"}
    })
}

fn sqs_event(id: &str, event: &Value) -> Value {
    let now = Utc::now().timestamp_millis().to_string();
    json!({"Records": [{
        "messageId": id,
        "receiptHandle": "coldstart",
        "body": event.to_string(),
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": now,
            "SenderId": "bench",
            "ApproximateFirstReceiveTimestamp": now
        },
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:ferry-ingest",
        "awsRegion": "eu-west-1"
    }]})
}

fn s3_event(key: &str, size: usize) -> Value {
    json!({"Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "eu-west-1",
        "eventTime": Utc::now().to_rfc3339(),
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": BUCKET},
            "object": {"key": key, "size": size, "eTag": etag(key)}
        }
    }]})
}

fn scheduled_event() -> Value {
    json!({
        "version": "0",
        "id": "coldstart",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": Utc::now().to_rfc3339(),
        "region": "eu-west-1",
        "resources": ["arn:aws:events:eu-west-1:123456789012:rule/ferry"],
        "detail": {}
    })
}

/// An object's ETag: anything stable per key will do.
fn etag(key: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The loopback side of one run: a Lambda Runtime API handing out `invocations` (then holding
/// every further poll), and a path-style S3 endpoint serving `objects` from bucket [`BUCKET`].
struct Loopback {
    invocations: Mutex<VecDeque<Value>>,
    handed: AtomicU32,
    objects: HashMap<String, Vec<u8>>,
    polls: mpsc::UnboundedSender<Instant>,
    results: mpsc::UnboundedSender<(Instant, String, Value)>,
}

type Seen = (
    mpsc::UnboundedReceiver<Instant>,
    mpsc::UnboundedReceiver<(Instant, String, Value)>,
);

async fn serve(events: Events) -> anyhow::Result<(std::net::SocketAddr, Seen)> {
    let (polls, polls_rx) = mpsc::unbounded_channel();
    let (results, results_rx) = mpsc::unbounded_channel();
    let state = Arc::new(Loopback {
        invocations: Mutex::new(events.invocations.into()),
        handed: AtomicU32::new(0),
        objects: events.objects,
        polls,
        results,
    });
    let with = move || {
        let state = Arc::clone(&state);
        warp::any().map(move || Arc::clone(&state))
    };
    let next = warp::get()
        .and(warp::path!(
            "2018-06-01" / "runtime" / "invocation" / "next"
        ))
        .and(with())
        .then(|api: Arc<Loopback>| async move {
            let _ = api.polls.send(Instant::now());
            let next = api
                .invocations
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            let Some(payload) = next else {
                // Long poll with nothing to hand out: until the process is killed.
                match std::future::pending::<Infallible>().await {}
            };
            let deadline = (Utc::now() + chrono::Duration::seconds(60)).timestamp_millis();
            let id = format!("req-{}", api.handed.fetch_add(1, Ordering::Relaxed) + 1);
            let reply = warp::reply::json(&payload);
            let reply = warp::reply::with_header(reply, "Lambda-Runtime-Aws-Request-Id", id);
            let reply =
                warp::reply::with_header(reply, "Lambda-Runtime-Deadline-Ms", deadline.to_string());
            warp::reply::with_header(
                reply,
                "Lambda-Runtime-Invoked-Function-Arn",
                "arn:aws:lambda:eu-west-1:123456789012:function:ferry",
            )
        });
    let result = warp::post()
        .and(warp::path!(
            "2018-06-01" / "runtime" / "invocation" / String / String
        ))
        .and(warp::body::json())
        .and(with())
        .then(
            |_id: String, kind: String, body: Value, api: Arc<Loopback>| async move {
                let _ = api.results.send((Instant::now(), kind, body));
                warp::reply::with_status("", warp::http::StatusCode::ACCEPTED)
            },
        );
    let s3 = warp::get()
        .and(warp::path(BUCKET))
        .and(warp::path::tail())
        .and(with())
        .map(|tail: warp::path::Tail, api: Arc<Loopback>| {
            let key = tail.as_str().to_owned();
            let (status, body) = match api.objects.get(&key) {
                Some(b) => (warp::http::StatusCode::OK, b.clone()),
                None => (warp::http::StatusCode::NOT_FOUND, Vec::new()),
            };
            warp::http::Response::builder()
                .status(status)
                .header("ETag", format!("\"{}\"", etag(&key)))
                .header("Last-Modified", "Fri, 27 Nov 2026 05:00:00 GMT")
                .header("Content-Type", "application/x-ndjson")
                .body(body)
                .unwrap_or_default()
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(warp::serve(next.or(result).or(s3)).incoming(listener).run());
    Ok((addr, (polls_rx, results_rx)))
}

/// Spawns the binary in Lambda mode, hands it this run's invocations and times them; then
/// kills it.
async fn one_run(
    path: &PathBuf,
    database_url: &str,
    keys: &str,
    events: Events,
) -> anyhow::Result<Run> {
    let invocations = events.invocations.clone();
    let (addr, (mut polls, mut results)) = serve(events).await?;
    let start = Instant::now();
    let mut child = Command::new(path)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_REGION", "eu-west-1")
        // What the Lambda role puts in the environment, and the S3 endpoint on loopback.
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_ENDPOINT", format!("http://{addr}"))
        .env("AWS_ALLOW_HTTP", "true")
        .env("DATABASE_URL", database_url)
        .env("FERRY_WEBHOOK_KEYS", keys)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {}", path.display()))?;
    let timed = tokio::time::timeout(Duration::from_secs(30), async {
        let first_poll = polls.recv().await.context("no poll")?;
        let mut answered = Vec::new();
        let mut handed = first_poll;
        for sent in &invocations {
            let (at, kind, body) = results.recv().await.context("no result")?;
            check(sent, &kind, &body)?;
            answered.push(at - handed);
            handed = polls.recv().await.context("no poll")?;
        }
        anyhow::Ok(Run {
            init: first_poll - start,
            first: answered.first().copied(),
            warm: answered.get(1).copied(),
        })
    })
    .await;
    let _ = child.start_kill();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = tokio::time::timeout(Duration::from_secs(1), e.read_to_string(&mut stderr)).await;
    }
    let _ = child.wait().await;
    match timed {
        Ok(Ok(run)) => Ok(run),
        Ok(Err(e)) => Err(e.context(format!("the binary said: {}", stderr.trim()))),
        Err(_) => bail!("no answer within 30 s; the binary said: {}", stderr.trim()),
    }
}

/// Spawns the binary as an Azure custom handler on a free port and returns the time until it
/// first answers `GET /` (the host's readiness probe); then kills it.
async fn azure_ready(path: &PathBuf, database_url: &str, keys: &str) -> anyhow::Result<Duration> {
    let port = ferry_local::postgres::free_port()?;
    let start = Instant::now();
    let mut child = Command::new(path)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("DATABASE_URL", database_url)
        .env("FERRY_WEBHOOK_KEYS", keys)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {}", path.display()))?;
    let probe = async {
        loop {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                use tokio::io::AsyncWriteExt;
                s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    .await?;
                let mut answer = Vec::new();
                s.read_to_end(&mut answer).await?;
                if answer.starts_with(b"HTTP/1.1 200") {
                    return anyhow::Ok(start.elapsed());
                }
            }
            if let Some(status) = child.try_wait()? {
                bail!("the binary exited: {status}");
            }
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
    };
    let ready = tokio::time::timeout(Duration::from_secs(10), probe).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    ready.map_err(|_| anyhow::anyhow!("not ready within 10 s"))?
}

/// The invocation succeeded: a response (not an error), and for a batch no failed message.
fn check(sent: &Value, kind: &str, body: &Value) -> anyhow::Result<()> {
    ensure!(kind == "response", "the function answered {kind}: {body}");
    if sent.pointer("/Records/0/eventSource") == Some(&json!("aws:sqs")) {
        let failed = body.get("batchItemFailures").and_then(Value::as_array);
        ensure!(failed.is_some_and(Vec::is_empty), "messages failed: {body}");
    }
    Ok(())
}

fn median(sorted: &[Duration]) -> Duration {
    sorted[sorted.len() / 2]
}

fn ratio(sorted: &[Duration], base: Duration) -> String {
    format!(
        "{:.1}",
        median(sorted).as_secs_f64() / base.as_secs_f64().max(1e-9)
    )
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
