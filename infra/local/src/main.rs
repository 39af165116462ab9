//! `ferry`: run the pipeline locally and administer it. The commands and their arguments are
//! in `cli.rs`; here, `main` hands each command to a function of its own.

mod cli;

use anyhow::Context;
use clap::Parser;
use ferry_fanout::guard::SystemLookup;
use ferry_ingest::Ingest;
use ferry_local::{bucket, demo, stack, webhooks};
use ferry_rollup::{Rollup, RollupConfig};
use ferry_shared::config::Env;
use ferry_shared::placement::Placement;
use ferry_shared::{config::Config, db, telemetry};
use ferry_transform::{Outcome, Transform, TransformConfig};

use crate::cli::{
    ApikeyCommand, Cli, Command, DbCommand, EndpointCommand, SecretsCommand, TenantCommand,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = Config::from_env(&Env::process())?;
    // The demo prints summaries; what the functions log goes to a file it names at the end.
    let demo_log = match &cli.command {
        Command::Demo { .. } => Some(demo_log_file(&cfg)?),
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
            serve: keep_serving,
            port,
        } => {
            let opts = demo::DemoOptions {
                events,
                workers,
                batch_size,
                seed,
                live_rate: None,
            };
            run_demo(cfg.clone(), opts, file_events, demo_log).await?;
            if keep_serving {
                serve_demo(&cfg, port).await
            } else {
                demo_next_steps();
                Ok(())
            }
        }
        Command::Backfill { store_url } => backfill(&cfg, &store_url).await,
        Command::Watch { interval } => watch(&cfg, interval).await,
        Command::Rollup { every, once } => rollup(&cfg, every, once).await,
        Command::Fanout { every, once } => fanout(&cfg, every, once).await,
        Command::Migrate => migrate(&cfg).await,
        Command::Endpoint { command } => {
            let stack = stack::open(&cfg).await?;
            endpoint_command(&stack, command).await
        }
        Command::Replay { endpoint, since } => replay(&cfg, endpoint, &since).await,
        Command::Secrets {
            command: SecretsCommand::NewKey { id },
        } => new_key(&id),
        Command::Secrets {
            command: SecretsCommand::Rekey,
        } => rekey(&cfg).await,
        Command::Tenant { command } => tenant_command(&cfg, command).await,
        Command::Serve { port, host } => serve(&cfg, host, port, None).await,
        Command::Apikey { command } => apikey_command(&cfg, command).await,
        Command::Db { command } => db_command(&cfg, command).await,
    }
}

/// Sends the demo's function logs to `<state dir>/logs/demo.log` (started afresh).
fn demo_log_file(cfg: &Config) -> anyhow::Result<std::path::PathBuf> {
    let dir = stack::state_dir()?.join("logs");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join("demo.log");
    let _ = std::fs::remove_file(&path);
    telemetry::init_to_file(cfg.log_format, "info", &path)
        .with_context(|| format!("open {}", path.display()))?;
    Ok(path)
}

/// `ferry demo`: the stream through ingest, files through transform, the rollups, the partner's
/// webhooks, then a user's recently viewed products.
async fn run_demo(
    mut cfg: Config,
    opts: demo::DemoOptions,
    file_events: usize,
    log: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let stack = stack::open(&cfg).await?;
    cfg.db.max_connections = cfg.db.max_connections.max(opts.workers as u32 + 1);
    let pool = db::pool(&cfg.db, &stack.url, "ferry-demo")?;
    for t in demo::TENANTS {
        db::add_tenant(&pool, t, &format!("{t} (demo)")).await?;
    }
    let partner = webhooks::WebhookDemo::start(&pool, stack.fanout_config()?).await?;
    let ingest = Ingest::with_pool(&cfg, pool.clone(), "ingest").with_nudge(partner.nudge());
    demo::run(pool.clone(), ingest, opts.clone(), cfg.partition_secs()).await?;
    if file_events > 0 {
        let tcfg = TransformConfig::from_env(&Env::process())?;
        let t = Transform::with_pool(&cfg, tcfg, pool.clone(), "transform")?
            .with_nudge(partner.nudge());
        demo::files(&t, &bucket::bucket_dir()?, file_events, opts.seed).await?;
    }
    let rcfg = RollupConfig::from_env(&Env::process())?;
    let rollup = Rollup::with_pool(&cfg, rcfg, pool.clone(), "rollup").with_nudge(partner.nudge());
    demo::rollups(&rollup).await?;
    partner.finish(&pool).await?;
    webhooks::print_recently_viewed(&pool, webhooks::PARTNER_TENANT, cfg.recently_viewed).await?;
    if let Some(path) = log {
        print_log_summary(&path);
    }
    Ok(())
}

/// Where the demo's function logs went, how long they are and how many warnings and errors
/// they hold; then what to try next.
#[allow(clippy::print_stdout)]
fn print_log_summary(path: &std::path::Path) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
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

/// The transform handler as the local commands run it.
async fn local_transform(cfg: &Config, application: &str) -> anyhow::Result<Transform> {
    let stack = stack::open(cfg).await?;
    let pool = db::pool(&cfg.db, &stack.url, application)?;
    let tcfg = TransformConfig::from_env(&Env::process())?;
    Transform::with_pool(cfg, tcfg, pool, "transform")
}

/// `ferry backfill`: every object under a prefix through the transform, with progress.
#[allow(clippy::print_stdout)]
async fn backfill(cfg: &Config, store_url: &str) -> anyhow::Result<()> {
    let t = local_transform(cfg, "ferry-backfill").await?;
    let (store, prefix) = backfill_target(store_url)?;
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
    Ok(())
}

/// `ferry watch`: new files in the local bucket through the transform as they land.
#[allow(clippy::print_stdout)]
async fn watch(cfg: &Config, interval: f64) -> anyhow::Result<()> {
    let t = local_transform(cfg, "ferry-watch").await?;
    let dir = bucket::bucket_dir()?;
    eprintln!("watching {} (Ctrl-C stops)", dir.display());
    let stop = async {
        tokio::signal::ctrl_c().await.ok();
    };
    let every = std::time::Duration::from_secs_f64(interval);
    bucket::Watcher::new(&dir)
        .run(&t, every, stop, |r| {
            println!(
                "{}: {:?}, {} loaded, {} quarantined, {} dropped",
                r.unit,
                r.outcome,
                r.loaded,
                r.quarantined_total(),
                r.dropped.values().sum::<u64>()
            );
        })
        .await?;
    Ok(())
}

/// `ferry rollup`: the rollup function's timer, every `every` seconds or once.
#[allow(clippy::print_stdout)]
async fn rollup(cfg: &Config, every: f64, once: bool) -> anyhow::Result<()> {
    let stack = stack::open(cfg).await?;
    let pool = db::pool(&cfg.db, &stack.url, "ferry-rollup")?;
    let rcfg = RollupConfig::from_env(&Env::process())?;
    let rollup = Rollup::with_pool(cfg, rcfg, pool, "rollup");
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
    Ok(())
}

/// `ferry fanout`: due webhook deliveries sent, checking every `every` seconds or once.
#[allow(clippy::print_stdout)]
async fn fanout(cfg: &Config, every: f64, once: bool) -> anyhow::Result<()> {
    let stack = stack::open(cfg).await?;
    let pool = db::pool(&cfg.db, &stack.url, "ferry-fanout")?;
    let fanout = local_fanout(&stack, pool.clone())?;
    if !once {
        eprintln!("sending due webhook deliveries every {every}s (Ctrl-C stops)");
    }
    let mut timer = ticker(every.max(0.1));
    while tick(&mut timer).await {
        let r = fanout.drain().await?;
        if once || r.attempts > 0 {
            let next = ferry_fanout::outbox::next_due(&pool, fanout.config().probe_max).await?;
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
    Ok(())
}

/// `ferry migrate`: the migrations, the partition width, and where the tables went on Citus.
#[allow(clippy::print_stdout)]
async fn migrate(cfg: &Config) -> anyhow::Result<()> {
    let stack = stack::open(cfg).await?;
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
    Ok(())
}

/// `ferry replay`: an endpoint's messages since a time queued again.
#[allow(clippy::print_stdout)]
async fn replay(cfg: &Config, endpoint: i64, since: &str) -> anyhow::Result<()> {
    let stack = stack::open(cfg).await?;
    let since = parse_since(since)?;
    let r = ferry_fanout::endpoints::replay(&stack.pool, endpoint, since).await?;
    println!(
        "endpoint {endpoint}: {} failed deliveries queued again, {} missed messages \
         queued (since {})",
        r.requeued,
        r.added,
        since.to_rfc3339()
    );
    Ok(())
}

/// `ferry secrets new-key`: a fresh keyring entry.
#[allow(clippy::print_stdout)]
fn new_key(id: &str) -> anyhow::Result<()> {
    let entry = ferry_fanout::keys::Keyring::new_entry(id);
    // Checked like any keyring, so a bad id is refused here, not at deploy time.
    ferry_fanout::keys::Keyring::parse(&entry)?;
    println!("{entry}");
    eprintln!(
        "add it to FERRY_WEBHOOK_KEYS in the secret store: last to let every instance \
         read it, then first to seal with it; then `ferry secrets rekey`"
    );
    Ok(())
}

/// `ferry secrets rekey`: every stored signing secret sealed under the current key.
#[allow(clippy::print_stdout)]
async fn rekey(cfg: &Config) -> anyhow::Result<()> {
    let stack = stack::open(cfg).await?;
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
    Ok(())
}

/// `ferry tenant add|list`.
#[allow(clippy::print_stdout)]
async fn tenant_command(cfg: &Config, command: TenantCommand) -> anyhow::Result<()> {
    let stack = stack::open(cfg).await?;
    match command {
        TenantCommand::Add { id, name } => {
            db::add_tenant(&stack.pool, &id, &name)
                .await
                .with_context(|| format!("add tenant {id:?}"))?;
            println!("tenant {id} is active");
        }
        TenantCommand::List => {
            for t in db::list_tenants(&stack.pool).await? {
                println!(
                    "{:<24} {:<10} {:<30} {}",
                    t.tenant_id, t.status, t.name, t.created_at
                );
            }
        }
    }
    Ok(())
}

/// What to try after the demo.
#[allow(clippy::print_stdout)]
fn demo_next_steps() {
    println!(
        "dashboard: http://127.0.0.1:8080/ with `ferry demo --serve` (it prints a key), or \
         `ferry serve` and a key from `ferry apikey add {}`",
        webhooks::PARTNER_TENANT
    );
}

/// `ferry demo --serve`: a key for the partner tenant, then the dashboard until Ctrl-C.
#[allow(clippy::print_stdout)]
async fn serve_demo(cfg: &Config, port: u16) -> anyhow::Result<()> {
    let stack = stack::open(cfg).await?;
    let tenant = webhooks::PARTNER_TENANT;
    let key = ferry_query::keys::issue(&stack.pool, Some(tenant), "ferry demo --serve").await?;
    println!("\ndashboard of {tenant}: sign in with this key (made for the demo; `ferry apikey revoke {}` ends it)", key.key_id);
    println!("  {}", key.token);
    serve(cfg, std::net::Ipv4Addr::LOCALHOST.into(), port, Some("/")).await
}

/// `ferry serve`: the query function's router on a local port.
#[allow(clippy::print_stdout)]
async fn serve(
    cfg: &Config,
    host: std::net::IpAddr,
    port: u16,
    open: Option<&str>,
) -> anyhow::Result<()> {
    let stack = stack::open(cfg).await?;
    let mut qcfg = ferry_query::QueryConfig::from_env(&Env::process())?;
    qcfg.recently_viewed = cfg.recently_viewed;
    let mut dbcfg = cfg.db.clone();
    dbcfg.statement_timeout = qcfg.statement_timeout;
    let pool = db::pool(&dbcfg, &stack.url, "ferry-serve")?;
    let query = ferry_query::Query::with_pool(qcfg, pool, "query");
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .with_context(|| format!("listen on {host}:{port} (another --port?)"))?;
    let base = format!("http://{}", listener.local_addr()?);
    if let Some(page) = open {
        println!("open {base}{page} (Ctrl-C stops)");
    } else {
        println!("ferry query API on {base}/v1/ and its dashboard on {base}/ (Ctrl-C stops)");
        println!("  a key:  ferry apikey add <tenant>");
        println!(
            "  try:    curl -H \"Authorization: Bearer $KEY\" {base}/v1/tenants/<tenant>/events"
        );
    }
    let server = warp::serve(query.routes()).incoming(listener).run();
    tokio::select! {
        () = server => {}
        _ = tokio::signal::ctrl_c() => println!("stopped"),
    }
    Ok(())
}

/// `ferry apikey add|list|revoke`.
#[allow(clippy::print_stdout)]
async fn apikey_command(cfg: &Config, command: ApikeyCommand) -> anyhow::Result<()> {
    use ferry_query::keys;
    let stack = stack::open(cfg).await?;
    let pool = &stack.pool;
    match command {
        ApikeyCommand::Add { tenant, name, .. } => {
            let issued = keys::issue(pool, tenant.as_deref(), &name).await?;
            let reads = tenant.map_or("every tenant (read-only operator key)".to_owned(), |t| {
                format!("tenant {t}")
            });
            println!("key {} reads {reads}:", issued.key_id);
            println!("{}", issued.token);
            println!("It is shown once; ferry keeps only its hash. Send it as");
            println!("  Authorization: Bearer {}…", &issued.token[..16]);
        }
        ApikeyCommand::List { tenant } => {
            let rows = keys::list(pool, tenant.as_deref()).await?;
            if rows.is_empty() {
                println!("no keys (ferry apikey add <tenant>)");
            }
            for k in rows {
                let state = k.revoked_at.map_or("active".to_owned(), |t| {
                    format!("revoked {}", t.format("%F %T"))
                });
                println!(
                    "{:<20} {:<24} {:<22} {:<20} {}",
                    k.shown(),
                    k.tenant_id.as_deref().unwrap_or("(every tenant)"),
                    state,
                    k.created_at.format("%F %T"),
                    k.name
                );
            }
        }
        ApikeyCommand::Revoke { key } => {
            if keys::revoke(pool, &key).await? {
                println!("revoked; requests with it are refused from now on");
            } else {
                // Only the id: what was typed may be a whole key.
                let id = keys::key_id(&key);
                anyhow::bail!("no active key with id {id:?} (ferry apikey list)");
            }
        }
    }
    Ok(())
}

/// `ferry db url|stop`.
#[allow(clippy::print_stdout)]
async fn db_command(cfg: &Config, command: DbCommand) -> anyhow::Result<()> {
    match command {
        DbCommand::Url => {
            // The private server's URL has no password; a DATABASE_URL's is not echoed.
            let stack = stack::open(cfg).await?;
            println!("{}", redact(&stack.url));
        }
        DbCommand::Stop => {
            let pg = stack::private_server()?;
            pg.stop("fast")?;
            println!("private PostgreSQL stopped ({})", pg.data_dir.display());
        }
    }
    Ok(())
}

/// `ferry endpoint …`.
#[allow(clippy::print_stdout)]
async fn endpoint_command(stack: &stack::Stack, command: EndpointCommand) -> anyhow::Result<()> {
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
            let new = ferry_fanout::endpoints::NewEndpoint {
                tenant_id: tenant,
                url,
                event_types: types,
                subject,
                rate_limit,
                description,
            };
            endpoint_add(stack, new).await
        }
        EndpointCommand::List { tenant } => endpoint_list(pool, tenant.as_deref()).await,
        EndpointCommand::RotateSecret { id, overlap } => rotate_secret(stack, id, &overlap).await,
        EndpointCommand::Disable { id, reason } => {
            ferry_fanout::endpoints::disable(pool, id, &reason).await?;
            println!("endpoint {id} disabled");
            Ok(())
        }
        EndpointCommand::Enable { id } => {
            let waiting = ferry_fanout::endpoints::enable(pool, id).await?;
            println!("endpoint {id} enabled; {waiting} waiting deliveries are due now");
            Ok(())
        }
        EndpointCommand::Test { id } => endpoint_test(stack, id).await,
    }
}

/// `ferry endpoint add`: prints the endpoint as stored and its secret, once.
#[allow(clippy::print_stdout)]
async fn endpoint_add(
    stack: &stack::Stack,
    new: ferry_fanout::endpoints::NewEndpoint,
) -> anyhow::Result<()> {
    use ferry_fanout::endpoints;
    let cfg = stack.fanout_config()?;
    let tenant = new.tenant_id.clone();
    let (id, secret) =
        endpoints::add(&stack.pool, &cfg.policy, cfg.keys()?, &SystemLookup, &new).await?;
    let stored = endpoints::list(&stack.pool, Some(&tenant))
        .await?
        .into_iter()
        .find(|e| e.endpoint_id == id)
        .map(|e| e.url)
        .unwrap_or_default();
    println!("endpoint {id} added for {tenant}: {stored}");
    println!("signing secret (shown once): {}", secret.reveal());
    Ok(())
}

/// `ferry endpoint list`.
#[allow(clippy::print_stdout)]
async fn endpoint_list(pool: &sqlx::PgPool, tenant: Option<&str>) -> anyhow::Result<()> {
    for e in ferry_fanout::endpoints::list(pool, tenant).await? {
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
    Ok(())
}

/// `ferry endpoint rotate-secret`.
#[allow(clippy::print_stdout)]
async fn rotate_secret(stack: &stack::Stack, id: i64, overlap: &str) -> anyhow::Result<()> {
    let overlap = humantime::parse_duration(overlap)
        .with_context(|| format!("--overlap {overlap:?}: expected e.g. 24h"))?;
    let cfg = stack.fanout_config()?;
    let secret =
        ferry_fanout::endpoints::rotate_secret(&stack.pool, cfg.keys()?, id, overlap).await?;
    println!(
        "endpoint {id}: new signing secret (shown once): {}",
        secret.reveal()
    );
    println!(
        "the previous secrets keep signing for {}",
        humantime::format_duration(overlap)
    );
    Ok(())
}

/// `ferry endpoint test`: a signed test event sent now, and the answer.
#[allow(clippy::print_stdout)]
async fn endpoint_test(stack: &stack::Stack, id: i64) -> anyhow::Result<()> {
    let fanout = local_fanout(stack, stack.pool.clone())?;
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
