//! `ferry`: run the pipeline locally and administer it.

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferry_fanout::guard::SystemLookup;
use ferry_ingest::Ingest;
use ferry_local::{bucket, demo, stack, webhooks};
use ferry_rollup::{Rollup, RollupConfig};
use ferry_shared::config::Env;
use ferry_shared::placement::Placement;
use ferry_shared::{config::Config, db, telemetry};
use ferry_transform::{Outcome, Transform, TransformConfig};

#[derive(Parser)]
#[command(
    name = "ferry",
    about = "ferry's local stack and admin commands",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Push a generated mixed stream through the local queue into the ingest function, and
    /// files through the local bucket into the transform function; roll up; deliver product
    /// changes and anomalies to a local partner receiver that verifies the signatures; print a
    /// user's recently viewed products.
    Demo {
        /// Events to generate.
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        /// Concurrent ingest invocations.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Messages per invocation (SQS allows up to 10 without a batching window).
        #[arg(long, default_value_t = 10)]
        batch_size: usize,
        /// Random seed of the generated stream.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Events written as files (gzip NDJSON) into the local bucket, plus one CSV.
        #[arg(long, default_value_t = 5_000)]
        file_events: usize,
    },
    /// Run every object under a prefix through the transform handler (idempotent).
    ///
    /// STORE_URL is s3://bucket/prefix, az://account/container/prefix (credentials from the
    /// AWS_* / AZURE_* environment), or a local path (file:// or plain; inside the local
    /// bucket, keys are relative to the bucket).
    Backfill { store_url: String },
    /// Watch the local bucket directory and load new files as they land (Ctrl-C stops).
    Watch {
        /// Seconds between scans.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// The rollup function's timer, locally: partition upkeep, rollups, anomaly and
    /// data-quality checks, housekeeping — one tick every `--every` seconds, or `--once`.
    Rollup {
        /// Seconds between ticks.
        #[arg(long, default_value_t = 60.0)]
        every: f64,
        /// Run one tick, print its jobs and exit.
        #[arg(long)]
        once: bool,
    },
    /// The fanout function, locally: sends due webhook deliveries, checking every `--every`
    /// seconds, or drains once with `--once` (FERRY_WEBHOOK_* and FERRY_FANOUT_* settings
    /// apply; FERRY_WEBHOOK_ALLOW_HTTP and FERRY_WEBHOOK_ALLOW_NETS=127.0.0.0/8 for a receiver
    /// on this machine).
    Fanout {
        /// Seconds between checks for due deliveries.
        #[arg(long, default_value_t = 1.0)]
        every: f64,
        /// Drain what is due once, print what happened and exit.
        #[arg(long)]
        once: bool,
    },
    /// Apply the embedded migrations and create partitions for the next hour.
    Migrate,
    /// Manage partner webhook endpoints.
    Endpoint {
        #[command(subcommand)]
        command: EndpointCommand,
    },
    /// Queue again an endpoint's messages since a time: failed deliveries start over, and
    /// matching messages it never received (while disabled) are added.
    Replay {
        /// The endpoint id (see `ferry endpoint list`).
        #[arg(long)]
        endpoint: i64,
        /// RFC 3339 time (2026-11-20T08:00:00Z) or an age (2h, 3d).
        #[arg(long)]
        since: String,
    },
    /// Webhook signing secrets at rest: make a key, re-seal every secret under the current key.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// The private PostgreSQL server of the local stack.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Print a fresh keyring entry `<id>:<base64 of 32 bytes>` for FERRY_WEBHOOK_KEYS (put it
    /// in the platform's secret store; the database never sees it).
    NewKey {
        /// The key's id: 1-32 of a-z, 0-9, - and _ (e.g. a date: k2026-11).
        id: String,
    },
    /// Seal every stored signing secret under the keyring's current (first) key: those under
    /// older keys, and any stored in plain. Run after putting a new key first; then the old
    /// key can leave the keyring.
    Rekey,
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Register a tenant (or re-activate it).
    Add {
        /// Tenant id: lowercase letters, digits, `-` and `_`.
        id: String,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List tenants.
    List,
}

#[derive(Subcommand)]
enum EndpointCommand {
    /// Subscribe a URL to event types; prints the endpoint id and its signing secret (shown
    /// once). The URL is refused if it, or any address its host resolves to now, is not public
    /// (see FERRY_WEBHOOK_ALLOW_NETS for loopback in local use).
    Add {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        url: String,
        /// Event types, exact or a prefix ending in `*` (repeat, or comma-separate).
        #[arg(long = "type", value_delimiter = ',', required = true)]
        types: Vec<String>,
        /// Only events with this subject (exact, or a prefix ending in `*`).
        #[arg(long)]
        subject: Option<String>,
        /// Requests per second at most.
        #[arg(long)]
        rate_limit: Option<i32>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List endpoints (of one tenant with --tenant).
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Issue a new signing secret; the current ones keep signing for --overlap.
    RotateSecret {
        id: i64,
        #[arg(long, default_value = "24h")]
        overlap: String,
    },
    /// Stop sending to an endpoint (its deliveries wait).
    Disable {
        id: i64,
        #[arg(long, default_value = "disabled by an operator")]
        reason: String,
    },
    /// Resume sending to an endpoint; waiting deliveries fall due at once.
    Enable { id: i64 },
    /// Send a signed `ferry.endpoint.test` event to an endpoint now and print the answer
    /// (nothing is recorded; the endpoint's deliveries and health are untouched).
    Test { id: i64 },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Start the private server (or check DATABASE_URL) and print the connection URL.
    Url,
    /// Stop the private server.
    Stop,
}

#[tokio::main]
#[allow(clippy::print_stdout)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = Config::from_env(&Env::process())?;
    // The demo prints summaries; what the functions log goes to a file it names at the end.
    let demo_log = match &cli.command {
        Command::Demo { .. } => {
            let dir = stack::state_dir()?.join("logs");
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            let path = dir.join("demo.log");
            let _ = std::fs::remove_file(&path);
            telemetry::init_to_file(cfg.log_format, "info", &path)
                .with_context(|| format!("open {}", path.display()))?;
            Some(path)
        }
        _ => {
            telemetry::init_with_default(cfg.log_format, "warn");
            None
        }
    };
    match cli.command {
        Command::Demo {
            events,
            workers,
            batch_size,
            seed,
            file_events,
        } => {
            let stack = stack::open(&cfg).await?;
            let mut cfg = cfg;
            cfg.db.max_connections = cfg.db.max_connections.max(workers as u32 + 1);
            let pool = db::pool(&cfg.db, &stack.url, "ferry-demo")?;
            for t in demo::TENANTS {
                db::add_tenant(&pool, t, &format!("{t} (demo)")).await?;
            }
            let partner = webhooks::WebhookDemo::start(&pool, stack.fanout_config()?).await?;
            let ingest =
                Ingest::with_pool(&cfg, pool.clone(), "ingest").with_nudge(partner.nudge());
            demo::run(
                pool.clone(),
                ingest,
                demo::DemoOptions {
                    events,
                    workers,
                    batch_size,
                    seed,
                },
                cfg.partition_secs(),
            )
            .await?;
            if file_events > 0 {
                let t = Transform::with_pool(
                    &cfg,
                    TransformConfig::from_env(&Env::process())?,
                    pool.clone(),
                    "transform",
                )?
                .with_nudge(partner.nudge());
                demo::files(&t, &bucket::bucket_dir()?, file_events, seed).await?;
            }
            let rollup = Rollup::with_pool(
                &cfg,
                RollupConfig::from_env(&Env::process())?,
                pool.clone(),
                "rollup",
            )
            .with_nudge(partner.nudge());
            demo::rollups(&rollup).await?;
            partner.finish(&pool).await?;
            webhooks::print_recently_viewed(&pool, webhooks::PARTNER_TENANT).await?;
            if let Some(path) = demo_log {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                // Text lines carry " WARN ", JSON lines "level":"WARN".
                let count = |level: &str| {
                    let json = format!("\"level\":\"{}\"", level.trim());
                    text.lines()
                        .filter(|l| l.contains(level) || l.contains(&json))
                        .count()
                };
                println!(
                    "\nfunction logs: {} ({} lines; {} warnings, {} errors)",
                    path.display(),
                    text.lines().count(),
                    count(" WARN "),
                    count(" ERROR ")
                );
                println!(
                    "next: `ferry rollup` and `ferry fanout` keep the timer and the webhooks \
                     running; `ferry endpoint list` shows the partner endpoints"
                );
            }
        }
        Command::Backfill { store_url } => {
            let stack = stack::open(&cfg).await?;
            let pool = db::pool(&cfg.db, &stack.url, "ferry-backfill")?;
            let t = Transform::with_pool(
                &cfg,
                TransformConfig::from_env(&Env::process())?,
                pool,
                "transform",
            )?;
            let (store, prefix) = backfill_target(&store_url)?;
            eprintln!("backfill {store} prefix {prefix:?}");
            let started = std::time::Instant::now();
            let summary = bucket::backfill(&t, &store, &prefix, |i, n, blob, result| {
                let what = match result {
                    Ok(r) => match &r.outcome {
                        Outcome::Loaded => format!(
                            "loaded {} of {} records ({} duplicates, {} quarantined, {} dropped)",
                            r.loaded,
                            r.records,
                            r.duplicates,
                            r.quarantined_total(),
                            r.dropped.values().sum::<u64>()
                        ),
                        Outcome::Quarantined(reason) => format!("quarantined: {reason}"),
                        other => format!("{other:?}").to_lowercase(),
                    },
                    Err(e) => format!("FAILED (retry later): {e}"),
                };
                eprintln!("[{i}/{n}] {}: {what}", blob.key);
            })
            .await?;
            println!(
                "backfill: {} objects ({} loaded, {} already applied, {} stale, {} gone, \
                 {} quarantined, {} failed); {} events loaded, {} duplicates, \
                 {} records quarantined, {} dropped; {:.1}s",
                summary.objects,
                summary.loaded_objects,
                summary.already_applied,
                summary.stale,
                summary.gone,
                summary.quarantined_objects,
                summary.failed,
                summary.events_loaded,
                summary.duplicates,
                summary.quarantined_records,
                summary.dropped,
                started.elapsed().as_secs_f64()
            );
            if summary.failed > 0 {
                anyhow::bail!("{} objects failed; run the backfill again", summary.failed);
            }
        }
        Command::Watch { interval } => {
            let stack = stack::open(&cfg).await?;
            let pool = db::pool(&cfg.db, &stack.url, "ferry-watch")?;
            let t = Transform::with_pool(
                &cfg,
                TransformConfig::from_env(&Env::process())?,
                pool,
                "transform",
            )?;
            let dir = bucket::bucket_dir()?;
            eprintln!("watching {} (Ctrl-C stops)", dir.display());
            let stop = async {
                tokio::signal::ctrl_c().await.ok();
            };
            bucket::Watcher::new(&dir)
                .run(
                    &t,
                    std::time::Duration::from_secs_f64(interval),
                    stop,
                    |r| {
                        println!(
                            "{}: {:?}, {} loaded, {} quarantined, {} dropped",
                            r.unit,
                            r.outcome,
                            r.loaded,
                            r.quarantined_total(),
                            r.dropped.values().sum::<u64>()
                        );
                    },
                )
                .await?;
        }
        Command::Rollup { every, once } => {
            let stack = stack::open(&cfg).await?;
            let pool = db::pool(&cfg.db, &stack.url, "ferry-rollup")?;
            let rollup = Rollup::with_pool(
                &cfg,
                RollupConfig::from_env(&Env::process())?,
                pool,
                "rollup",
            );
            let mut timer = ticker(every.max(1.0));
            while tick(&mut timer).await {
                let now = chrono::Utc::now();
                for r in rollup.run_at(now, now).await {
                    println!(
                        "{} {:<13} {:<7} {:>8} rows  {}{}",
                        now.format("%H:%M:%S"),
                        r.job,
                        format!("{:?}", r.outcome).to_lowercase(),
                        r.rows,
                        r.detail,
                        r.error.map(|e| format!(" error: {e}")).unwrap_or_default()
                    );
                }
                if once {
                    break;
                }
            }
        }
        Command::Fanout { every, once } => {
            let stack = stack::open(&cfg).await?;
            let pool = db::pool(&cfg.db, &stack.url, "ferry-fanout")?;
            let fanout = local_fanout(&stack, pool.clone())?;
            if !once {
                eprintln!("sending due webhook deliveries every {every}s (Ctrl-C stops)");
            }
            let mut timer = ticker(every.max(0.1));
            while tick(&mut timer).await {
                let r = fanout.drain().await?;
                if once || r.attempts > 0 {
                    let next = ferry_fanout::outbox::next_due(&pool).await?;
                    println!(
                        "{} fanout  {} attempts: {} delivered, {} to retry, {} failed for good, \
                         {} endpoints disabled; {}",
                        chrono::Utc::now().format("%H:%M:%S"),
                        r.attempts,
                        r.delivered,
                        r.retried,
                        r.failed,
                        r.disabled,
                        match next {
                            Some(at) => format!("next due {}", at.format("%H:%M:%S")),
                            None => "nothing pending".into(),
                        }
                    );
                }
                if once {
                    break;
                }
            }
        }
        Command::Migrate => {
            let stack = stack::open(&cfg).await?;
            println!("migrations applied; database {}", redact(&stack.url));
            let width = stack
                .migrated
                .partition_secs
                .unwrap_or(cfg.partition_secs());
            println!(
                "events partitions: {} wide{}",
                humantime::format_duration(std::time::Duration::from_secs(width as u64)),
                if stack.migrated.partition_secs.is_some() {
                    " (recorded in the database)"
                } else {
                    " (FERRY_PARTITION_INTERVAL)"
                }
            );
            if let Some(citus) = &stack.migrated.citus {
                let version = citus.version.split(" on ").next().unwrap_or(&citus.version);
                println!(
                    "{version}: {} tables distributed by tenant_id ({} shards each), {} \
                     reference, {} on the coordinator{}",
                    placement_count(Placement::Tenant),
                    citus.shard_count,
                    placement_count(Placement::Reference),
                    placement_count(Placement::Coordinator),
                    if citus.changed.is_empty() {
                        "; already placed".to_owned()
                    } else {
                        format!("; placed now: {}", citus.changed.join(", "))
                    }
                );
            }
        }
        Command::Endpoint { command } => {
            let stack = stack::open(&cfg).await?;
            endpoint_command(&stack, command).await?;
        }
        Command::Replay { endpoint, since } => {
            let stack = stack::open(&cfg).await?;
            let since = parse_since(&since)?;
            let r = ferry_fanout::endpoints::replay(&stack.pool, endpoint, since).await?;
            println!(
                "endpoint {endpoint}: {} failed deliveries queued again, {} missed messages \
                 queued (since {})",
                r.requeued,
                r.added,
                since.to_rfc3339()
            );
        }
        Command::Secrets {
            command: SecretsCommand::NewKey { id },
        } => {
            let entry = ferry_fanout::keys::Keyring::new_entry(&id);
            // Checked like any keyring, so a bad id is refused here, not at deploy time.
            ferry_fanout::keys::Keyring::parse(&entry)?;
            println!("{entry}");
            eprintln!(
                "add it to FERRY_WEBHOOK_KEYS in the secret store: last to let every instance \
                 read it, then first to seal with it; then `ferry secrets rekey`"
            );
        }
        Command::Secrets {
            command: SecretsCommand::Rekey,
        } => {
            let stack = stack::open(&cfg).await?;
            let fcfg = stack.fanout_config()?;
            let keys = fcfg.keys()?;
            let r = ferry_fanout::endpoints::rekey(&stack.pool, keys).await?;
            println!(
                "{} signing secrets sealed anew under key {}; {} already under it",
                r.rekeyed,
                keys.current(),
                r.current
            );
            for (endpoint, secret, why) in &r.unreadable {
                println!("  endpoint {endpoint} secret {secret}: {why}");
            }
            if !r.unreadable.is_empty() {
                anyhow::bail!(
                    "{} secrets could not be opened with this keyring; put their key back in \
                     FERRY_WEBHOOK_KEYS and run `ferry secrets rekey` again",
                    r.unreadable.len()
                );
            }
        }
        Command::Tenant {
            command: TenantCommand::Add { id, name },
        } => {
            let stack = stack::open(&cfg).await?;
            db::add_tenant(&stack.pool, &id, &name)
                .await
                .with_context(|| format!("add tenant {id:?}"))?;
            println!("tenant {id} is active");
        }
        Command::Tenant {
            command: TenantCommand::List,
        } => {
            let stack = stack::open(&cfg).await?;
            for t in db::list_tenants(&stack.pool).await? {
                println!(
                    "{:<24} {:<10} {:<30} {}",
                    t.tenant_id, t.status, t.name, t.created_at
                );
            }
        }
        Command::Db {
            command: DbCommand::Url,
        } => {
            // The private server's URL has no password; a DATABASE_URL's is not echoed.
            let stack = stack::open(&cfg).await?;
            println!("{}", redact(&stack.url));
        }
        Command::Db {
            command: DbCommand::Stop,
        } => {
            let pg = stack::private_server()?;
            pg.stop("fast")?;
            println!("private PostgreSQL stopped ({})", pg.data_dir.display());
        }
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
async fn endpoint_command(stack: &stack::Stack, command: EndpointCommand) -> anyhow::Result<()> {
    use ferry_fanout::endpoints;
    let pool = &stack.pool;
    match command {
        EndpointCommand::Add {
            tenant,
            url,
            types,
            subject,
            rate_limit,
            description,
        } => {
            let cfg = stack.fanout_config()?;
            let (id, secret) = endpoints::add(
                pool,
                &cfg.policy,
                cfg.keys()?,
                &SystemLookup,
                &endpoints::NewEndpoint {
                    tenant_id: tenant.clone(),
                    url,
                    event_types: types,
                    subject,
                    rate_limit,
                    description,
                },
            )
            .await?;
            let stored = endpoints::list(pool, Some(&tenant))
                .await?
                .into_iter()
                .find(|e| e.endpoint_id == id)
                .map(|e| e.url)
                .unwrap_or_default();
            println!("endpoint {id} added for {tenant}: {stored}");
            println!("signing secret (shown once): {}", secret.reveal());
        }
        EndpointCommand::List { tenant } => {
            for e in endpoints::list(pool, tenant.as_deref()).await? {
                println!(
                    "{:>5} {:<12} {:<8} {:<40} types={} subject={} secrets={} pending={} \
                     failed={}{}{}",
                    e.endpoint_id,
                    e.tenant_id,
                    e.status,
                    e.url,
                    e.event_types.join(","),
                    e.subject.as_deref().unwrap_or("*"),
                    e.secrets,
                    e.pending,
                    e.failed,
                    e.rate_limit
                        .map(|r| format!(" rate={r}/s"))
                        .unwrap_or_default(),
                    e.disabled_reason
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                );
            }
        }
        EndpointCommand::RotateSecret { id, overlap } => {
            let overlap = humantime::parse_duration(&overlap)
                .with_context(|| format!("--overlap {overlap:?}: expected e.g. 24h"))?;
            let cfg = stack.fanout_config()?;
            let secret = endpoints::rotate_secret(pool, cfg.keys()?, id, overlap).await?;
            println!(
                "endpoint {id}: new signing secret (shown once): {}",
                secret.reveal()
            );
            println!(
                "the previous secrets keep signing for {}",
                humantime::format_duration(overlap)
            );
        }
        EndpointCommand::Disable { id, reason } => {
            endpoints::disable(pool, id, &reason).await?;
            println!("endpoint {id} disabled");
        }
        EndpointCommand::Enable { id } => {
            let waiting = endpoints::enable(pool, id).await?;
            println!("endpoint {id} enabled; {waiting} waiting deliveries are due now");
        }
        EndpointCommand::Test { id } => {
            let fanout = local_fanout(stack, pool.clone())?;
            let (url, a) = fanout.send_test(id).await?;
            let answer = match (a.status, &a.error) {
                (Some(code), _) => format!("answered {code}"),
                (None, Some(error)) => error.clone(),
                (None, None) => "no answer".into(),
            };
            println!(
                "endpoint {id} ({url}): {answer} in {} ms",
                a.latency.as_millis()
            );
            if a.verdict != ferry_fanout::send::Verdict::Delivered {
                anyhow::bail!(
                    "the test event was not accepted; `ferry endpoint list` shows the endpoint, \
                     its status and its waiting deliveries"
                );
            }
            println!("accepted: the receiver can verify the signature with its secret");
        }
    }
    Ok(())
}

/// The fanout handler as the local commands run it (the system resolver, the local keyring).
fn local_fanout(stack: &stack::Stack, pool: sqlx::PgPool) -> anyhow::Result<ferry_fanout::Fanout> {
    ferry_fanout::Fanout::new(
        pool,
        stack.fanout_config()?,
        std::sync::Arc::new(SystemLookup),
        "fanout",
    )
}

/// The timer of a local function loop: every `secs`, a missed tick delayed rather than burst.
fn ticker(secs: f64) -> tokio::time::Interval {
    let mut timer = tokio::time::interval(std::time::Duration::from_secs_f64(secs));
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer
}

/// Waits for the next tick; false when Ctrl-C comes first.
async fn tick(timer: &mut tokio::time::Interval) -> bool {
    tokio::select! {
        _ = timer.tick() => true,
        _ = tokio::signal::ctrl_c() => false,
    }
}

/// `--since`: an RFC 3339 time, or an age such as `2h`.
fn parse_since(text: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let age = humantime::parse_duration(text)
        .with_context(|| format!("--since {text:?}: expected an RFC 3339 time or an age (2h)"))?;
    Ok(chrono::Utc::now() - chrono::Duration::from_std(age)?)
}

/// Store and prefix of a backfill argument.
fn backfill_target(url: &str) -> anyhow::Result<(String, String)> {
    if url.starts_with("s3://") || url.starts_with("az://") {
        return Ok(ferry_transform::stores::split_store_url(url)?);
    }
    let path = std::path::Path::new(url.strip_prefix("file://").unwrap_or(url));
    let path = std::fs::canonicalize(path).with_context(|| format!("{url}: no such path"))?;
    let bucket = bucket::bucket_dir()?;
    if let Ok(rel) = path.strip_prefix(&bucket) {
        let mut prefix = rel.to_string_lossy().into_owned();
        if path.is_dir() && !prefix.is_empty() {
            prefix.push('/');
        }
        return Ok((bucket::file_store(&bucket), prefix));
    }
    anyhow::ensure!(path.is_dir(), "{url}: not a directory");
    Ok((bucket::file_store(&path), String::new()))
}

/// The URL without its password, for output.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// How many of ferry's tables have `placement` on Citus.
fn placement_count(placement: Placement) -> usize {
    ferry_shared::placement::TABLES
        .iter()
        .filter(|(_, p)| *p == placement)
        .count()
}
