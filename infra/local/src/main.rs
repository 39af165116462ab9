//! `ferry`: run the pipeline locally and administer it.

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferry_ingest::Ingest;
use ferry_local::{demo, stack};
use ferry_shared::{config::Config, db, telemetry};

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
    /// Push a generated mixed stream through the local queue into the ingest function.
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
    },
    /// Apply the embedded migrations and create partitions for the next hour.
    Migrate,
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
    let cfg = Config::from_env()?;
    telemetry::init_with_default(cfg.log_format, "warn");
    match cli.command {
        Command::Demo {
            events,
            workers,
            batch_size,
            seed,
        } => {
            let stack = stack::open(&cfg).await?;
            let mut cfg = cfg;
            cfg.db.max_connections = cfg.db.max_connections.max(workers as u32 + 1);
            let pool = db::pool(&cfg.db, &stack.url, "ferry-demo")?;
            let ingest = Ingest::with_pool(&cfg, pool.clone(), "ingest");
            demo::run(
                pool,
                ingest,
                demo::DemoOptions {
                    events,
                    workers,
                    batch_size,
                    seed,
                },
                cfg.partition_interval.as_secs() as i64,
            )
            .await?;
        }
        Command::Migrate => {
            let stack = stack::open(&cfg).await?;
            println!("migrations applied; database {}", redact(&stack.url));
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
