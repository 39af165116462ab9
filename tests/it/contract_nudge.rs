//! The nudge that wakes the fanout after a load commits webhook deliveries, sent by the real
//! `ingest` binary through each platform's queue:
//! - Lambda: an SQS `SendMessage` (AWS JSON 1.0, SigV4) to `FERRY_FANOUT_QUEUE_URL`, checked
//!   against moto's SQS and, for the signature headers, against a loopback receiver;
//! - Azure: the `nudge` output binding in the response envelope.
//!
//! One nudge per invocation whose commits queued deliveries, none otherwise.

use crate::harness::receiver::Receiver;
use crate::harness::{
    fixture, fresh_db, moto_call, spawn_azure, spawn_function, RuntimeApi, TestDb,
};
use serde_json::{json, Value};

/// Tenants acme and beta; acme has an endpoint for `page.*`, so of the three-message fixture
/// only acme's page view queues a delivery. The URL is never called here.
async fn db_with_endpoint() -> TestDb {
    let db = fresh_db().await;
    for t in ["acme", "beta"] {
        ferry_shared::db::add_tenant(&db.pool, t, t).await.unwrap();
    }
    sqlx::query(
        "INSERT INTO endpoints (tenant_id, url, event_types)
         VALUES ('acme', 'https://partner.example/hooks', '{page.*}')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    db
}

/// One call to moto's SQS (see [`moto_call`]).
async fn sqs(endpoint: &str, action: &str, payload: Value) -> Value {
    moto_call(
        endpoint,
        "sqs",
        &format!("AmazonSQS.{action}"),
        "1.0",
        payload,
    )
    .await
}

async fn receive_all(endpoint: &str, queue_url: &str) -> Vec<String> {
    let got = sqs(
        endpoint,
        "ReceiveMessage",
        json!({"QueueUrl": queue_url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 1}),
    )
    .await;
    got["Messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| m["Body"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn lambda_env<'a>(
    api: &'a [(&'static str, String)],
    queue_url: &'a str,
    region: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut env: Vec<(&str, &str)> = api.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend([
        ("FERRY_FANOUT_QUEUE_URL", queue_url),
        ("AWS_REGION", region),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        (
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        ),
        ("AWS_SESSION_TOKEN", "session-token-from-the-execution-role"),
    ]);
    env
}

#[tokio::test]
async fn lambda_ingest_sends_one_sqs_nudge_per_invocation_that_queued_deliveries() {
    let db = db_with_endpoint().await;
    let moto = crate::harness::moto().await;
    let created = sqs(
        &moto.endpoint,
        "CreateQueue",
        json!({"QueueName": format!("ferry-fanout-{}", std::process::id())}),
    )
    .await;
    let queue_url = created["QueueUrl"].as_str().unwrap().to_owned();

    let mut api = RuntimeApi::start().await;
    let api_env = api.env();
    // moto keeps queues per region; its unsigned calls above are us-east-1's.
    let env = lambda_env(&api_env, &queue_url, "us-east-1");
    let _function = spawn_function("ingest", &db.url, &env);

    let (kind, _) = api.invoke(fixture("sqs_batch_three_messages.json")).await;
    assert_eq!(kind, "response");
    assert_eq!(
        receive_all(&moto.endpoint, &queue_url).await,
        [r#"{"deliveries":1}"#],
        "one nudge, counting acme's page view"
    );

    // Redelivered: nothing new is committed, so nothing is nudged.
    let (kind, _) = api.invoke(fixture("sqs_batch_three_messages.json")).await;
    assert_eq!(kind, "response");
    assert_eq!(
        receive_all(&moto.endpoint, &queue_url).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn the_sqs_nudge_is_sigv4_signed_with_the_role_credentials() {
    let db = db_with_endpoint().await;
    let receiver = Receiver::start().await;
    let queue_url = receiver.url("/123456789012/ferry-fanout");
    let mut api = RuntimeApi::start().await;
    let api_env = api.env();
    let env = lambda_env(&api_env, &queue_url, "eu-west-1");
    let _function = spawn_function("ingest", &db.url, &env);

    let (kind, _) = api.invoke(fixture("sqs_batch_three_messages.json")).await;
    assert_eq!(kind, "response");
    let got = receiver.received();
    assert_eq!(got.len(), 1, "one SendMessage");
    let r = &got[0];
    let header = |name: &str| r.header(name).to_owned();
    assert_eq!(header("x-amz-target"), "AmazonSQS.SendMessage");
    assert_eq!(header("content-type"), "application/x-amz-json-1.0");
    assert_eq!(
        header("x-amz-security-token"),
        "session-token-from-the-execution-role"
    );
    let auth = header("authorization");
    let today = chrono::Utc::now().format("%Y%m%d").to_string();
    assert!(
        auth.starts_with(&format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{today}/eu-west-1/sqs/aws4_request, SignedHeaders="
        )),
        "{auth}"
    );
    assert!(
        auth.contains("x-amz-target") && auth.contains("Signature="),
        "{auth}"
    );
    assert!(
        !auth.contains("wJalrXUtnFEMI"),
        "the secret key never travels"
    );
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        body,
        json!({"QueueUrl": queue_url, "MessageBody": r#"{"deliveries":1}"#})
    );
}

#[tokio::test]
async fn azure_ingest_returns_the_nudge_as_an_output_binding() {
    let db = db_with_endpoint().await;
    let (_function, base) = spawn_azure("ingest", &db.url, &[]).await;
    let client = reqwest::Client::new();
    let post = |envelope: Value| {
        let client = client.clone();
        let url = format!("{base}/ingest");
        async move {
            let r = client.post(url).json(&envelope).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let envelope = |id: &str, tenant: &str, ty: &str| {
        let event = json!({"specversion": "1.0", "id": id, "source": "/web/shop", "type": ty,
                           "time": chrono::Utc::now().to_rfc3339(), "tenantid": tenant});
        json!({"Data": {"message": event.to_string()}, "Metadata": {"Id": id, "DequeueCount": 1}})
    };

    // acme's page view matches the endpoint: the nudge queue gets {"deliveries": 1}.
    let (status, body) = post(envelope("az-n-1", "acme", "page.viewed")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["Outputs"],
        json!({"nudge": {"deliveries": 1}}),
        "{body}"
    );

    // No endpoint for beta, nor for acme's payments: no output, so no message.
    for (id, tenant, ty) in [
        ("az-n-2", "beta", "page.viewed"),
        ("az-n-3", "acme", "payment.captured"),
    ] {
        let (status, body) = post(envelope(id, tenant, ty)).await;
        assert_eq!(status, 200);
        assert_eq!(body["Outputs"], json!({}), "{id}: {body}");
    }
    // The same message again: already applied, nothing committed, no nudge.
    let (_, body) = post(envelope("az-n-1", "acme", "page.viewed")).await;
    assert_eq!(body["Outputs"], json!({}));
}
