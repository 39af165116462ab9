//! Object-store emulators on loopback, for tests that need the real S3 and Azure Blob wire
//! protocols: moto server (PyPI) and Azurite (npm), installed by `scripts/setup.sh` under
//! `$FERRY_TOOLS` (default `<repo>/.ferry/tools`). One of each per test process, started on
//! first use on a free port and stopped when the process exits.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_local::postgres::free_port;
use tokio::sync::OnceCell;

/// One AWS JSON call to moto server (`service` e.g. `sqs` or `secretsmanager`, `target` the
/// whole `X-Amz-Target`, `version` `1.0` or `1.1`), made without the client under test: moto
/// checks no signature, but routes a request to a service (and a region) by the credential
/// scope of its `Authorization` header, so the header names `us-east-1/{service}` and signs
/// nothing. Panics, naming the call, unless moto answers 2xx.
pub async fn moto_call(
    endpoint: &str,
    service: &str,
    target: &str,
    version: &str,
    payload: serde_json::Value,
) -> serde_json::Value {
    let scope = format!(
        "AWS4-HMAC-SHA256 Credential=test/20261126/us-east-1/{service}/aws4_request, \
         SignedHeaders=host, Signature=0"
    );
    let r = reqwest::Client::new()
        .post(format!("{endpoint}/"))
        .header("authorization", scope)
        .header("content-type", format!("application/x-amz-json-{version}"))
        .header("x-amz-target", target)
        .body(payload.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{target}: {e}"));
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    assert!(status.is_success(), "{target}: {status} {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{target}: {e}: {body}"))
}

/// Azurite's well-known development account (public, documented by Microsoft).
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running emulator.
#[derive(Debug)]
pub struct Emulator {
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
}

static MOTO: OnceCell<Emulator> = OnceCell::const_new();
static AZURITE: OnceCell<Emulator> = OnceCell::const_new();

fn tools() -> PathBuf {
    std::env::var_os("FERRY_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(".ferry")
                .join("tools")
        })
}

fn tool(relative: &str) -> PathBuf {
    let path = tools().join(relative);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh (it installs moto and Azurite)",
        path.display()
    );
    path
}

/// Starts `program`, kills it when this process exits, and waits until `ready` answers.
// Both children outlive this process by design (the watchdog ends the emulator after us), so
// there is nothing to wait for.
#[allow(clippy::zombie_processes)]
async fn start(program: PathBuf, args: Vec<String>, ready: String) -> Emulator {
    let child = Command::new(&program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    Command::new("sh")
        .args([
            "-c",
            r#"while kill -0 "$FERRY_PARENT" 2>/dev/null; do sleep 0.5; done; kill "$FERRY_CHILD""#,
        ])
        .env("FERRY_PARENT", std::process::id().to_string())
        .env("FERRY_CHILD", child.id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn watchdog");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(&ready).send().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "{} did not answer on {ready}",
            program.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let endpoint = ready.split('/').take(3).collect::<Vec<_>>().join("/");
    Emulator { endpoint }
}

/// moto server (S3 wire protocol).
pub async fn moto() -> &'static Emulator {
    MOTO.get_or_init(|| async {
        let port = free_port().expect("free port");
        start(
            tool("venv/bin/moto_server"),
            vec![
                "-H".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
            ],
            format!("http://127.0.0.1:{port}/moto-api/"),
        )
        .await
    })
    .await
}

/// Azurite (Azure Blob wire protocol), in memory.
pub async fn azurite() -> &'static Emulator {
    AZURITE
        .get_or_init(|| async {
            let port = free_port().expect("free port");
            let args = [
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port.to_string(),
                "--inMemoryPersistence",
                "--silent",
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
            ];
            start(
                tool("node/node_modules/.bin/azurite-blob"),
                args.iter().map(|s| s.to_string()).collect(),
                format!("http://127.0.0.1:{port}/"),
            )
            .await
        })
        .await
}

/// Creates an S3 bucket on moto (optionally versioned); returns its store URL.
pub async fn s3_bucket(name: &str, versioned: bool) -> String {
    let moto = moto().await;
    let client = reqwest::Client::new();
    let url = format!("{}/{name}", moto.endpoint);
    let r = client.put(&url).send().await.expect("create bucket");
    assert!(r.status().is_success(), "create bucket: {}", r.status());
    if versioned {
        let body = r#"<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Status>Enabled</Status></VersioningConfiguration>"#;
        let r = client
            .put(format!("{url}?versioning"))
            .header("content-type", "application/xml")
            .body(body)
            .send()
            .await
            .expect("enable versioning");
        assert!(r.status().is_success(), "versioning: {}", r.status());
    }
    format!("s3://{name}")
}

/// Creates a container on Azurite (the request is signed by `azblob.py` with the development
/// key: Azurite refuses anonymous container creation); returns its store URL.
pub async fn az_container(name: &str) -> String {
    let azurite = azurite().await;
    let url = format!(
        "{}/{AZURITE_ACCOUNT}/{name}?restype=container",
        azurite.endpoint
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("it/harness/azblob.py");
    let out = tokio::process::Command::new(tool("venv/bin/python"))
        .arg(script)
        .args(["PUT", &url])
        .output()
        .await
        .expect("run azblob.py");
    assert!(
        out.status.success(),
        "create container: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("az://{AZURITE_ACCOUNT}/{name}")
}

/// Settings that point S3 at moto and Azure at Azurite (each only once started), as
/// `(object_store key, environment variable, value)`.
fn settings() -> Vec<(&'static str, &'static str, String)> {
    let mut all = Vec::new();
    if let Some(m) = MOTO.get() {
        all.extend([
            ("aws_endpoint", "AWS_ENDPOINT", m.endpoint.clone()),
            ("aws_allow_http", "AWS_ALLOW_HTTP", "true".into()),
            ("aws_access_key_id", "AWS_ACCESS_KEY_ID", "testing".into()),
            (
                "aws_secret_access_key",
                "AWS_SECRET_ACCESS_KEY",
                "testing".into(),
            ),
            ("aws_region", "AWS_REGION", "us-east-1".into()),
        ]);
    }
    if let Some(a) = AZURITE.get() {
        // In-process clients take the account URL; the binaries use the emulator switch.
        let endpoint = format!("{}/{AZURITE_ACCOUNT}", a.endpoint);
        all.extend([
            ("azure_storage_endpoint", "", endpoint),
            ("azure_storage_account_key", "", AZURITE_KEY.into()),
            ("azure_allow_http", "", "true".into()),
            ("", "AZURE_STORAGE_USE_EMULATOR", "true".into()),
            ("", "AZURITE_BLOB_STORAGE_URL", a.endpoint.clone()),
        ]);
    }
    all
}

/// object_store settings for in-process clients (`Stores::with_options`).
pub fn store_options() -> Vec<(String, String)> {
    settings()
        .into_iter()
        .filter(|(k, _, _)| !k.is_empty())
        .map(|(k, _, v)| (k.to_owned(), v))
        .collect()
}

/// Environment for a function binary that reads from the started emulators.
pub fn store_env() -> Vec<(String, String)> {
    settings()
        .into_iter()
        .filter(|(_, e, _)| !e.is_empty())
        .map(|(_, e, v)| (e.to_owned(), v))
        .collect()
}
