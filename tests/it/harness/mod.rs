//! Test harness shared by ferry's integration tests.
//!
//! - [`fresh_db`]: a new database per test, cloned from a migrated template. The server is the
//!   one in `DATABASE_URL`, or — when it is unset — a throwaway PostgreSQL started from the
//!   machine's binaries for this test process (stopped and deleted when the process exits).
//!   When `DATABASE_URL` is a Citus coordinator's, each database is made on every node and
//!   migrated, which places its tables (`scripts/test-citus.sh`).
//! - [`private_cluster`]: a server of the test's own, for tests that restart it.
//! - [`bin`]: path of a real function binary built by the same `cargo test` run.
//! - [`receiver::Receiver`]: a partner's webhook receiver on loopback, answering from a script.

mod emulators;
mod lambda_api;
pub mod receiver;

pub use emulators::{az_container, azurite, moto, moto_call, s3_bucket, store_env, store_options};
pub use lambda_api::RuntimeApi;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context;
pub use ferry_local::postgres::with_database;
use ferry_local::postgres::{free_port, LocalPostgres};
use ferry_shared::config::Config;
use sqlx::PgPool;
use tokio::sync::OnceCell;

struct Cluster {
    /// URL of a maintenance database on the server.
    admin_url: String,
    template: String,
    /// The server is a Citus coordinator (scripts/test-citus.sh): each test's database is made
    /// on every node and migrated (placing the tables) instead of cloned from the template.
    citus: bool,
    _server: Option<LocalPostgres>,
}

static CLUSTER: OnceCell<Cluster> = OnceCell::const_new();
static NEXT_DB: AtomicU32 = AtomicU32::new(1);

/// A database of one test.
#[derive(Debug, Clone)]
pub struct TestDb {
    pub url: String,
    pub pool: PgPool,
}

/// Starts a throwaway server under a new temp dir; it stops and the dir is deleted when this
/// process exits.
pub fn private_cluster() -> anyhow::Result<LocalPostgres> {
    let root = std::env::temp_dir().join(format!(
        "ferry-test-{}-{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&root)?;
    let pg = LocalPostgres::new(root.join("pgdata"), free_port()?)?
        // Throwaway data: fsync off makes tests fast and is safe against the server crashes the
        // tests inject (the process dies, the OS keeps its writes). synchronous_commit stays
        // ON: with it off, a server crash loses commits already confirmed to ferry, and so
        // messages already acknowledged — the exactly-once test catches exactly that.
        .setting("fsync", "off")
        .setting("full_page_writes", "off");
    pg.init()?;
    pg.start()?;
    pg.stop_when_process_exits(&root)?;
    Ok(pg)
}

async fn cluster() -> &'static Cluster {
    CLUSTER
        .get_or_init(|| async {
            let (admin_url, server) =
                match std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
                    Some(url) => (url, None),
                    None => {
                        let pg = tokio::task::spawn_blocking(private_cluster)
                            .await
                            .expect("start thread")
                            .expect("start a private PostgreSQL for tests");
                        (pg.url("postgres"), Some(pg))
                    }
                };
            let template = format!("ferry_tmpl_{}", std::process::id());
            let admin = PgPool::connect(&admin_url)
                .await
                .expect("connect to the test server");
            let citus = ferry_local::citus::is_citus(&admin).await.unwrap();
            if citus {
                admin.close().await;
                return Cluster {
                    admin_url,
                    template,
                    citus,
                    _server: server,
                };
            }
            sqlx::query(&format!("DROP DATABASE IF EXISTS {template}"))
                .execute(&admin)
                .await
                .unwrap();
            sqlx::query(&format!("CREATE DATABASE {template}"))
                .execute(&admin)
                .await
                .unwrap();
            admin.close().await;
            let url = with_database(&admin_url, &template);
            let pool = PgPool::connect(&url)
                .await
                .expect("connect to the template");
            ferry_shared::db::migrate(&pool)
                .await
                .expect("migrate the template");
            pool.close().await;
            Cluster {
                admin_url,
                template,
                citus,
                _server: server,
            }
        })
        .await
}

/// A fresh, migrated database for one test.
pub async fn fresh_db() -> TestDb {
    let c = cluster().await;
    let name = format!(
        "t_{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    );
    ferry_local::citus::create_database(&c.admin_url, &name, Some(&c.template))
        .await
        .expect("create test database");
    let url = with_database(&c.admin_url, &name);
    let pool = PgPool::connect(&url)
        .await
        .expect("connect to test database");
    if c.citus {
        ferry_shared::db::migrate(&pool)
            .await
            .expect("migrate and place the test database on Citus");
    }
    TestDb { url, pool }
}

/// Configuration for tests: defaults, plus the given overrides.
pub fn config(overrides: &[(&str, &str)]) -> Config {
    Config::from_env(&ferry_shared::config::Env::from_pairs(
        overrides.iter().copied(),
    ))
    .expect("valid test configuration")
}

/// Path of a binary of this workspace, built by the same `cargo test` invocation.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built; run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// On one server, forgets the partition width `ferry migrate` recorded (an hour), as in a
/// database migrated before widths were recorded there: the functions' own width applies.
/// Only while the database has no partitions (widths must not mix). On Citus the recorded
/// day stays.
pub async fn forget_partition_width(pool: &PgPool) {
    if ferry_local::citus::is_citus(pool).await.unwrap() {
        return;
    }
    let forgotten = sqlx::query(
        "DELETE FROM ferry_settings WHERE name = 'partition_interval'
           AND NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = 'events'::regclass)",
    )
    .execute(pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(forgotten, 1, "a recorded width and no partitions yet");
}

/// The width of each `events` partition, in seconds, from its bounds.
pub async fn partition_widths(pool: &PgPool) -> Vec<f64> {
    sqlx::query_scalar(
        "SELECT extract(epoch FROM (regexp_match(pg_get_expr(c.relpartbound, c.oid),
                'TO \\(''([^'']+)''\\)'))[1]::timestamptz
              - (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\)'))[1]::timestamptz)::float8
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'events'::regclass",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The width of `events` partitions in `pool`'s database, in seconds: the width its migration
/// recorded (on Citus, a day), else the functions' `configured` one.
pub async fn partition_width(pool: &PgPool, configured: i64) -> i64 {
    ferry_shared::db::partition_secs(pool)
        .await
        .unwrap()
        .unwrap_or(configured)
}

/// The name of the `events` partition holding `t`, for partitions `width` seconds wide.
pub fn partition_name(t: chrono::DateTime<chrono::Utc>, width: i64) -> String {
    let start = chrono::DateTime::from_timestamp(ferry_shared::db::slot_start(t, width), 0)
        .expect("a valid time");
    format!("events_p{}", start.format("%Y%m%d_%H%M"))
}

/// Counts rows of a query returning one bigint.
pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .with_context(|| sql.to_owned())
        .unwrap()
}

/// A valid CloudEvent for `tenant`, stamped a minute ago.
pub fn event(tenant: &str, id: &str) -> serde_json::Value {
    serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "/tests",
        "type": "payment.captured",
        "time": (chrono::Utc::now() - chrono::Duration::seconds(60)).to_rfc3339(),
        "tenantid": tenant,
        "data": {"amount": 1}
    })
}

/// A queue batch of `(id, body)` messages.
pub fn batch(messages: &[(&str, String)]) -> ferry_shared::QueueBatch {
    ferry_shared::QueueBatch {
        messages: messages
            .iter()
            .map(|(id, body)| message(id, body.clone()))
            .collect(),
    }
}

/// A queue message with the given id and body.
pub fn message(id: &str, body: impl Into<Vec<u8>>) -> ferry_shared::QueueMessage {
    ferry_shared::QueueMessage {
        id: id.into(),
        body: body.into(),
        delivery_count: 1,
        ..Default::default()
    }
}

/// A fresh database with tenants `acme` and `beta`, and the ingest handler on a pool built as
/// in production (lock and statement timeouts), configured with `overrides`.
pub async fn ingest_db(overrides: &[(&str, &str)]) -> (TestDb, ferry_ingest::Ingest) {
    let db = fresh_db().await;
    for t in ["acme", "beta"] {
        ferry_shared::db::add_tenant(&db.pool, t, t).await.unwrap();
    }
    let cfg = config(overrides);
    let pool = ferry_shared::db::pool(&cfg.db, &db.url, "ingest").unwrap();
    (db, ferry_ingest::Ingest::with_pool(&cfg, pool, "ingest"))
}

/// Reads a fixture file from `tests/fixtures`.
pub fn fixture(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Reads a fixture with `{{name}}` placeholders filled in (every placeholder must be).
pub fn fill(name: &str, values: &[(&str, &str)]) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    let mut text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (k, v) in values {
        text = text.replace(&format!("{{{{{k}}}}}"), v);
    }
    assert!(!text.contains("{{"), "{name}: unfilled placeholder");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The webhook keyring of the tests (test-only key material): secrets are sealed under
/// `test-1`; `test-0` is an older key still in the ring.
pub const TEST_KEYS: &str = "test-1:dGVzdC1rZXktb25lLTMyLWJ5dGVzLWxvbmctLS0tLS0=,\
                             test-0:dGVzdC1rZXktemVyby0zMi1ieXRlcy1sb25nLS0tLS0=";

/// The tests' keyring, parsed.
pub fn test_keys() -> ferry_fanout::keys::Keyring {
    ferry_fanout::keys::Keyring::parse(TEST_KEYS).expect("TEST_KEYS")
}

/// Subscribes a loopback receiver `url` of `tenant` to `types` through the real
/// `endpoints::add` (http and 127.0.0.0/8 allowed), its secret sealed under `keys`; returns
/// the endpoint id and its secret.
pub async fn add_loopback_endpoint(
    pool: &sqlx::PgPool,
    keys: &ferry_fanout::keys::Keyring,
    tenant: &str,
    url: &str,
    types: &[&str],
) -> (i64, ferry_fanout::sign::Secret) {
    let policy = ferry_fanout::guard::Policy {
        allow_http: true,
        allow: vec!["127.0.0.0/8".parse().expect("a network")],
    };
    ferry_fanout::endpoints::add(
        pool,
        &policy,
        keys,
        &ferry_fanout::guard::SystemLookup,
        &ferry_fanout::endpoints::NewEndpoint {
            tenant_id: tenant.into(),
            url: url.into(),
            event_types: types.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        },
    )
    .await
    .expect("endpoint added")
}

/// Environment every function binary gets in contract tests: the fixtures carry fixed event
/// times, so the accepted window is widened; lock waits are short.
pub const FUNCTION_ENV: &[(&str, &str)] = &[
    ("FERRY_MAX_EVENT_AGE", "36500d"),
    ("FERRY_DB_LOCK_TIMEOUT", "500ms"),
    ("FERRY_DB_CONNECT_TIMEOUT", "2s"),
    ("FERRY_WEBHOOK_KEYS", TEST_KEYS),
    ("RUST_LOG", "warn"),
];

/// Starts a real function binary with a clean platform environment plus `env`. The process is
/// killed when the returned handle is dropped.
pub fn spawn_function(
    name: &str,
    database_url: &str,
    env: &[(&str, &str)],
) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(bin(name));
    for var in [
        "AWS_LAMBDA_RUNTIME_API",
        "FUNCTIONS_CUSTOMHANDLER_PORT",
        "DATABASE_URL",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("DATABASE_URL", database_url)
        .envs(FUNCTION_ENV.iter().copied())
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"))
}

/// Starts a real function binary in Azure custom-handler mode (`FERRY_FUNCTION_NAME` =
/// `name`, on a free port) and waits until it answers; returns the process and its base URL.
pub async fn spawn_azure(
    name: &str,
    database_url: &str,
    env: &[(&str, &str)],
) -> (tokio::process::Child, String) {
    let port = free_port().expect("free port").to_string();
    let mut all = vec![
        ("FUNCTIONS_CUSTOMHANDLER_PORT", port.as_str()),
        ("FERRY_FUNCTION_NAME", name),
    ];
    all.extend_from_slice(env);
    let child = spawn_function(name, database_url, &all);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client.get(&base).send().await.is_ok() {
            return (child, base);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{name} did not start listening");
}

/// A URL on which no PostgreSQL listens (for "database down" tests).
pub fn unreachable_database_url() -> String {
    let port = free_port().expect("free port");
    format!("postgres://ferry@127.0.0.1:{port}/ferry")
}
