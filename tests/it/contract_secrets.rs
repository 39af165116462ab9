//! The database URL from AWS Secrets Manager: the real `ingest` binary in Lambda mode, with no
//! `DATABASE_URL` but `FERRY_DATABASE_SECRET_ARN`, reads the secret from moto's Secrets
//! Manager at start-up (`GetSecretValue`, AWS JSON 1.1, SigV4) and loads through it. A secret
//! it cannot use stops it at start-up with a message that names the ARN and never the value.

use std::process::Stdio;
use std::time::Duration;

use crate::harness::{bin, count, fixture, fresh_db, moto_call, RuntimeApi, TestDb};
use serde_json::{json, Value};

/// One call to moto's Secrets Manager (see [`moto_call`]).
async fn secretsmanager(endpoint: &str, action: &str, payload: Value) -> Value {
    let target = format!("secretsmanager.{action}");
    moto_call(endpoint, "secretsmanager", &target, "1.1", payload).await
}

/// Creates a secret holding `value` and returns its ARN.
async fn create_secret(endpoint: &str, value: &str) -> String {
    let name = format!(
        "ferry-db-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let created = secretsmanager(
        endpoint,
        "CreateSecret",
        json!({"Name": name, "SecretString": value}),
    )
    .await;
    created["ARN"].as_str().unwrap().to_owned()
}

/// Starts `ingest` in Lambda mode with no `DATABASE_URL`, the secret's ARN, role credentials
/// and moto as the Secrets Manager endpoint; stderr is kept for the test.
fn spawn_ingest(
    api: &RuntimeApi,
    moto: &str,
    arn: &str,
    extra: &[(&str, &str)],
) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(bin("ingest"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(api.env())
        .env("FERRY_DATABASE_SECRET_ARN", arn)
        .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env(
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        )
        .env("AWS_SESSION_TOKEN", "session-token-from-the-execution-role")
        .env("RUST_LOG", "warn")
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn().expect("start ingest")
}

async fn db_with_tenants() -> TestDb {
    let db = fresh_db().await;
    for t in ["acme", "beta"] {
        ferry_shared::db::add_tenant(&db.pool, t, t).await.unwrap();
    }
    db
}

#[tokio::test]
async fn a_url_secret_is_read_at_start_up_and_used_for_loads() {
    let db = db_with_tenants().await;
    let moto = crate::harness::moto().await;
    let arn = create_secret(&moto.endpoint, &db.url).await;
    let mut api = RuntimeApi::start().await;
    let _function = spawn_ingest(&api, &moto.endpoint, &arn, &[]);

    let (kind, body) = api.invoke(fixture("sqs_batch_three_messages.json")).await;
    assert_eq!(kind, "response", "{body}");
    assert_eq!(body["batchItemFailures"], json!([]));
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 3);
}

#[tokio::test]
async fn an_rds_master_secret_is_completed_from_the_environment() {
    let db = db_with_tenants().await;
    let url = reqwest::Url::parse(&db.url).unwrap();
    // What RDS stores for `manage_master_user_password`: the user and password only. The test
    // server trusts loopback, so any password is accepted; this one holds characters a URL
    // must escape.
    let secret = json!({"username": url.username(), "password": "p@ss/w:rd %"}).to_string();
    let moto = crate::harness::moto().await;
    let arn = create_secret(&moto.endpoint, &secret).await;
    let port = url.port().unwrap().to_string();
    let sslmode = url
        .query_pairs()
        .find(|(k, _)| k == "sslmode")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| "prefer".into());
    let mut api = RuntimeApi::start().await;
    let _function = spawn_ingest(
        &api,
        &moto.endpoint,
        &arn,
        &[
            ("FERRY_DATABASE_HOST", url.host_str().unwrap()),
            ("FERRY_DATABASE_PORT", &port),
            ("FERRY_DATABASE_NAME", url.path().trim_start_matches('/')),
            // As the test server's URL asks (scripts/test-citus.sh: disable).
            ("FERRY_DATABASE_SSLMODE", &sslmode),
        ],
    );

    let (kind, body) = api.invoke(fixture("sqs_batch_three_messages.json")).await;
    assert_eq!(kind, "response", "{body}");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 3);
}

/// Waits for the process to stop by itself; returns whether it succeeded and what it said.
async fn exit_of(mut child: tokio::process::Child) -> (bool, String) {
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the function stops at start-up")
        .unwrap();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        e.read_to_string(&mut stderr).await.unwrap();
    }
    (status.success(), stderr)
}

#[tokio::test]
async fn a_secret_that_is_not_a_database_url_stops_the_start_without_quoting_it() {
    let moto = crate::harness::moto().await;
    let arn = create_secret(&moto.endpoint, "hunter2-is-not-a-url").await;
    let api = RuntimeApi::start().await;
    let (ok, stderr) = exit_of(spawn_ingest(&api, &moto.endpoint, &arn, &[])).await;
    assert!(!ok);
    assert!(stderr.contains(&arn), "names the ARN: {stderr}");
    assert!(
        stderr.contains("neither a postgres:// URL nor a JSON object"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "never the value: {stderr}");
}

#[tokio::test]
async fn a_missing_secret_stops_the_start_with_the_service_answer() {
    let moto = crate::harness::moto().await;
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ferry-nowhere-AbCdEf";
    let api = RuntimeApi::start().await;
    let (ok, stderr) = exit_of(spawn_ingest(&api, &moto.endpoint, arn, &[])).await;
    assert!(!ok);
    assert!(stderr.contains(arn), "{stderr}");
    assert!(stderr.contains("ResourceNotFoundException"), "{stderr}");
}

/// The webhook keyring from Secrets Manager: the real `fanout` binary (Azure mode, so a timer
/// envelope drives it) without FERRY_WEBHOOK_KEYS but with FERRY_WEBHOOK_KEYS_SECRET_ARN opens
/// a sealed signing secret with the keyring it read at start-up, and signs with it.
#[tokio::test]
async fn the_webhook_keyring_is_read_from_its_secret_and_opens_sealed_secrets() {
    use crate::harness::receiver::Receiver;
    use ferry_fanout::keys::Keyring;

    let db = db_with_tenants().await;
    let rx = Receiver::start().await;
    let ring = Keyring::new_entry("sm-1");
    let keys = Keyring::parse(&ring).unwrap();
    let (_, secret) = crate::harness::add_loopback_endpoint(
        &db.pool,
        &keys,
        "acme",
        &rx.url("/hook"),
        &["order.*"],
    )
    .await;
    sqlx::query(
        "SELECT ferry_enqueue('acme', 'msg_sm', 'order.placed', NULL,
                              '{\"specversion\":\"1.0\",\"id\":\"o-1\",\"source\":\"/shop\",\"type\":\"order.placed\"}')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let moto = crate::harness::moto().await;
    let arn = create_secret(&moto.endpoint, &ring).await;
    let (_f, base) = crate::harness::spawn_azure(
        "fanout",
        &db.url,
        &[
            ("FERRY_WEBHOOK_KEYS", ""),
            ("FERRY_WEBHOOK_KEYS_SECRET_ARN", &arn),
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", &moto.endpoint),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            (
                "AWS_SECRET_ACCESS_KEY",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            ),
            ("FERRY_WEBHOOK_ALLOW_HTTP", "true"),
            ("FERRY_WEBHOOK_ALLOW_NETS", "127.0.0.0/8"),
        ],
    )
    .await;
    let t = chrono::Utc::now();
    let timer = crate::harness::fill(
        "azure_timer.json",
        &[
            ("last", &(t - chrono::Duration::minutes(1)).to_rfc3339()),
            ("next", &(t + chrono::Duration::minutes(1)).to_rfc3339()),
            ("now", &t.to_rfc3339()),
        ],
    );
    let r = reqwest::Client::new()
        .post(format!("{base}/fanout-timer"))
        .json(&timer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = rx.received();
    assert_eq!(got.len(), 1, "the sealed secret opened and signed");
    standardwebhooks::Webhook::new(&secret.reveal())
        .unwrap()
        .verify(&got[0].body, &got[0].headers)
        .expect("signed with the endpoint's secret");
}
