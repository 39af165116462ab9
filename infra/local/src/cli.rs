//! The `ferry` command line: every command and its arguments (clap derive).

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ferry",
    about = "ferry's local stack and admin commands",
    version
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
        /// Then keep serving the query API and its dashboard (with a key made for the demo's
        /// partner tenant) until Ctrl-C.
        #[arg(long)]
        serve: bool,
        /// Port of the dashboard with --serve.
        #[arg(long, default_value_t = 8080)]
        port: u16,
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
    /// Serve the query API (`/v1/…`) on this machine, over the local stack's database (or
    /// DATABASE_URL). Requests need a key: `ferry apikey add <tenant>`.
    Serve {
        /// Port to listen on.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Address to listen on (0.0.0.0 to be reachable from other machines).
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
    },
    /// Manage the query API's keys (shown once when added, stored hashed).
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
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
pub enum SecretsCommand {
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
pub enum ApikeyCommand {
    /// Issue a key that reads one tenant (or, with --admin, every tenant) and print it once.
    Add {
        /// The tenant the key reads.
        #[arg(required_unless_present = "admin", conflicts_with = "admin")]
        tenant: Option<String>,
        /// An operator key: reads every tenant.
        #[arg(long)]
        admin: bool,
        /// What the key is for (shown by `list`).
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List keys (of one tenant when given), without their secrets.
    List { tenant: Option<String> },
    /// Revoke a key, by its id or the key itself; it is refused from the next request.
    Revoke { key: String },
}

#[derive(Subcommand)]
pub enum TenantCommand {
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
pub enum EndpointCommand {
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
pub enum DbCommand {
    /// Start the private server (or check DATABASE_URL) and print the connection URL.
    Url,
    /// Stop the private server.
    Stop,
}
