//! `ferry-bench`: benchmarks that print figures and a ratio against a baseline measured in the
//! same run. Driven by `scripts/bench-*.sh`; not a test.

mod coldstart;
mod e2e;
mod fanout;
mod load;
mod machine;
mod partners;
mod query;

use clap::{Parser, Subcommand};
use ferry_local::stack;
use ferry_shared::config::Env;
use ferry_shared::{config::Config, telemetry};

#[derive(Parser)]
#[command(name = "ferry-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The ingest handler in-process vs raw COPY of the same rows.
    Ingest {
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        #[arg(long, default_value_t = 100)]
        events_per_message: usize,
        #[arg(long, default_value_t = 10)]
        messages_per_batch: usize,
        /// Concurrent handler invocations (Lambda concurrency / Azure queue batch).
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Skip the write-strategy sweep.
        #[arg(long)]
        no_sweep: bool,
    },
    /// The transform handler on one gzip NDJSON file vs raw COPY of the same rows, with the
    /// handler's peak memory.
    Transform {
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// Where the generated file is written (default: <state dir>/bench).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// A bulk rollup of fresh events vs the cheapest aggregate of the same rows, and one
    /// incremental run on top of a large table.
    Rollup {
        #[arg(long, default_value_t = 1_000_000)]
        events: i64,
        #[arg(long, default_value_t = 10_000_000)]
        base: i64,
        #[arg(long, default_value_t = 10_000)]
        increment: i64,
    },
    /// Webhook fan-out to local receivers vs plain POSTs of the same bodies, then the
    /// commit-to-receipt latency at a steady event rate.
    Fanout {
        #[arg(long, default_value_t = 50)]
        receivers: usize,
        /// Events of the throughput run; each is delivered to every receiver.
        #[arg(long, default_value_t = 1_000)]
        events: usize,
        /// Events per second of the latency run.
        #[arg(long, default_value_t = 500)]
        rate: u32,
        /// Seconds of the latency run.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Events per receiver in each partners-as-they-are scenario (0 skips them).
        #[arg(long, default_value_t = 200)]
        partner_events: usize,
        /// Also run the scenario of partners answering in 1 s (a quarter of the events).
        #[arg(long)]
        slow: bool,
        /// Deliveries pending for one partner after a 10-minute outage (0 skips it).
        #[arg(long, default_value_t = 100_000)]
        outage: usize,
        /// Only the partner scenarios.
        #[arg(long)]
        partners_only: bool,
        /// Print each partner scenario's healthy deliveries second by second, and when the
        /// bad partner was sent to.
        #[arg(long)]
        trace: bool,
    },
    /// Cold start of function binaries in Lambda mode: process start to the first poll of
    /// a loopback Runtime API, against spawning a process that does nothing; then the first
    /// invocation with an empty pool, against the second and a bare connect + `SELECT 1`.
    Coldstart {
        /// `label=path` of a binary to measure (repeatable), e.g. `ingest=dist/bin/ingest`.
        #[arg(long = "bin", required = true, value_parser = label_path)]
        binaries: Vec<(String, std::path::PathBuf)>,
        #[arg(long, default_value_t = 30)]
        runs: usize,
    },
    /// The query function's routes under concurrent load against the same reads run
    /// directly, on `events` events over 91 days rolled up.
    Query(crate::query::QueryBench),
    /// The whole pipeline at a steady rate: queue -> committed row, event -> visible in the
    /// rollups, commit -> partner receipt, per event.
    E2e(crate::e2e::E2eBench),
    /// (Internal) the handler side of `transform`, in its own process.
    #[command(hide = true)]
    TransformRun {
        #[arg(long)]
        dir: std::path::PathBuf,
        #[arg(long)]
        key: String,
    },
}

#[tokio::main]
#[allow(clippy::print_stdout)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = Config::from_env(&Env::process())?;
    // Loopback servers see their clients killed mid-request (cold start): not an error here.
    telemetry::init_with_default(cfg.log_format, "error,warp::server=off");
    // Databases are created next to the one in DATABASE_URL, or on the local stack's server.
    let admin_url = match &cfg.db.url {
        Some(url) => url.clone(),
        None => {
            let pg = stack::private_server()?;
            pg.init()?;
            pg.start()?;
            pg.url("postgres")
        }
    };
    run(cli.command, &admin_url, &cfg).await
}

/// Runs one benchmark.
#[allow(clippy::print_stdout)]
async fn run(command: Command, admin_url: &str, cfg: &Config) -> anyhow::Result<()> {
    let (admin_url, cfg) = (admin_url.to_owned(), cfg.clone());
    match command {
        Command::Ingest {
            events,
            events_per_message,
            messages_per_batch,
            workers,
            no_sweep,
        } => {
            let opts = load::IngestBench {
                events,
                events_per_message,
                messages_per_batch,
                workers,
                sweep: !no_sweep,
            };
            load::ingest(&admin_url, &cfg, &opts).await?;
        }
        Command::Transform { events, dir } => {
            let dir = match dir {
                Some(d) => d,
                None => stack::state_dir()?.join("bench"),
            };
            let opts = load::TransformBench { events, dir };
            let exe = std::env::current_exe()?;
            load::transform(&admin_url, &cfg, &opts, &exe).await?;
        }
        Command::Query(opts) => crate::query::query(&admin_url, &cfg, &opts).await?,
        Command::Rollup {
            events,
            base,
            increment,
        } => {
            let opts = load::RollupBench {
                events,
                base,
                increment,
            };
            load::rollup(&admin_url, &cfg, &opts).await?;
        }
        Command::Fanout {
            receivers,
            events,
            rate,
            seconds,
            partner_events,
            slow,
            partners_only,
            trace,
            outage,
        } => {
            let opts = crate::fanout::FanoutBench {
                receivers,
                events,
                rate,
                seconds,
            };
            if !partners_only {
                crate::fanout::fanout(&admin_url, &cfg, &opts).await?;
            }
            if partner_events > 0 {
                let opts = crate::partners::PartnerBench {
                    events: partner_events,
                    slow,
                    trace,
                    outage,
                };
                crate::partners::partners(&admin_url, &cfg, &opts).await?;
            }
        }
        Command::Coldstart { binaries, runs } => {
            let name = "ferry_bench_coldstart";
            load::prepare(&admin_url, name, &cfg).await?.close().await;
            let opts = crate::coldstart::ColdstartBench {
                binaries,
                runs,
                database_url: ferry_local::postgres::with_database(&admin_url, name),
            };
            crate::coldstart::coldstart(&opts).await?;
        }
        Command::E2e(opts) => crate::e2e::e2e(&admin_url, &cfg, &opts).await?,
        Command::TransformRun { dir, key } => {
            let run = load::transform_run(&admin_url, &cfg, &dir, &key).await?;
            println!("{}", serde_json::to_string(&run)?);
        }
    }
    Ok(())
}

/// `label=path` → (label, path).
fn label_path(s: &str) -> Result<(String, std::path::PathBuf), String> {
    match s.split_once('=') {
        Some((label, path)) if !label.is_empty() && !path.is_empty() => {
            Ok((label.to_owned(), path.into()))
        }
        _ => Err(format!("expected label=path, got {s:?}")),
    }
}
