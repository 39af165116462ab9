//! Opening the local stack: the database (the one in `DATABASE_URL`, or a private server
//! started from the machine's PostgreSQL binaries under the state directory), migrated.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use ferry_shared::config::Env;
use ferry_shared::{config::Config, db};
use sqlx::PgPool;
use tracing::info;

use crate::postgres::{free_port, LocalPostgres};

/// Default port of the private server, if free when the cluster is first created.
const DEFAULT_PORT: u16 = 54329;

/// A connected, migrated database.
#[derive(Debug)]
pub struct Stack {
    pub url: String,
    pub pool: PgPool,
    /// The private server, when ferry started one.
    pub server: Option<LocalPostgres>,
    /// What the migration step did (Citus placement, recorded partition width).
    pub migrated: db::Migrated,
}

/// The local state directory (`FERRY_STATE_DIR`, default `.ferry` in the working directory).
pub fn state_dir() -> anyhow::Result<PathBuf> {
    let dir = Env::process()
        .get("FERRY_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ".ferry".into());
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(std::fs::canonicalize(&dir)?)
}

/// The private server of this state directory, created on first use (port remembered).
pub fn private_server() -> anyhow::Result<LocalPostgres> {
    let dir = state_dir()?;
    let port_file = dir.join("postgres.port");
    let port = match std::fs::read_to_string(&port_file) {
        Ok(p) => p.trim().parse().context("corrupt postgres.port")?,
        Err(_) => {
            let port = if std::net::TcpListener::bind(("127.0.0.1", DEFAULT_PORT)).is_ok() {
                DEFAULT_PORT
            } else {
                free_port()?
            };
            std::fs::write(&port_file, port.to_string())?;
            port
        }
    };
    Ok(LocalPostgres::new(dir.join("pgdata"), port)?)
}

/// Connects to `DATABASE_URL`, or starts (or reuses) the private server; then migrates.
pub async fn open(cfg: &Config) -> anyhow::Result<Stack> {
    let (url, server) = match cfg.db.url.clone() {
        Some(url) => (url, None),
        None => {
            let pg = private_server()?;
            pg.init()?;
            pg.start()?;
            // Not only on a fresh server: the benchmarks start the same one without it.
            let admin = sqlx::PgPool::connect(&pg.url("postgres")).await?;
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'ferry')",
            )
            .fetch_one(&admin)
            .await?;
            if !exists {
                sqlx::query("CREATE DATABASE ferry").execute(&admin).await?;
            }
            admin.close().await;
            info!(data_dir = %pg.data_dir.display(), port = pg.port, "private PostgreSQL running");
            (pg.url("ferry"), Some(pg))
        }
    };
    let pool = db::pool(&cfg.db, &url, "ferry")?;
    let migrated = db::migrate_with(&pool, &db::MigrateOptions::from_config(cfg))
        .await
        .context("apply migrations")?;
    db::ensure_partitions_ahead(
        &pool,
        chrono::Utc::now(),
        Duration::from_secs(3600),
        cfg.partition_secs(),
    )
    .await?;
    Ok(Stack {
        url,
        pool,
        server,
        migrated,
    })
}

impl Stack {
    /// The fanout settings from the environment. With the private server and no keyring in
    /// the environment, the keyring is the state directory's `webhook-keys` file (created with
    /// a fresh key on first use, readable by its owner only). Against a `DATABASE_URL` the
    /// keyring must be given (FERRY_WEBHOOK_KEYS or FERRY_WEBHOOK_KEYS_FILE): a key made up
    /// here would seal secrets that the deployed fanout could never open.
    pub fn fanout_config(&self) -> anyhow::Result<ferry_fanout::FanoutConfig> {
        let given = ["FERRY_WEBHOOK_KEYS", "FERRY_WEBHOOK_KEYS_FILE"]
            .iter()
            .any(|k| Env::process().is_set(k));
        let file = match (&self.server, given) {
            (Some(_), false) => Some(local_key_file()?),
            _ => None,
        };
        let env = match file {
            Some(path) => Env::process().set("FERRY_WEBHOOK_KEYS_FILE", path.display().to_string()),
            None => Env::process(),
        };
        Ok(ferry_fanout::FanoutConfig::from_env(&env)?)
    }
}

/// The local stack's keyring file, created with one fresh key if missing.
fn local_key_file() -> anyhow::Result<PathBuf> {
    let path = state_dir()?.join("webhook-keys");
    if !path.exists() {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;
        writeln!(f, "{}", ferry_fanout::keys::Keyring::new_entry("local-1"))?;
        info!(path = %path.display(), "created the local webhook keyring");
    }
    Ok(path)
}
