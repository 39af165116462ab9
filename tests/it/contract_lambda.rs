//! Contract tests of the real `ingest` binary in AWS Lambda mode: the test serves the Lambda
//! Runtime API on loopback (`/2018-06-01/runtime/invocation/next`, `…/response`, `…/error`)
//! and feeds it `SqsEvent` fixtures.

use crate::harness::{
    count, fixture, fresh_db, spawn_function, unreachable_database_url, RuntimeApi,
};
use serde_json::{json, Value};

fn start(api: &RuntimeApi, database_url: &str) -> tokio::process::Child {
    let env = api.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_function("ingest", database_url, &env)
}

/// The fixture with every message id and event id given a suffix (a new delivery).
fn renamed(suffix: &str) -> Value {
    let mut event = fixture("sqs_batch_three_messages.json");
    for record in event["Records"].as_array_mut().unwrap() {
        let id = format!("{}{suffix}", record["messageId"].as_str().unwrap());
        record["messageId"] = json!(id);
        let body = record["body"]
            .as_str()
            .unwrap()
            .replace("\"id\": \"sqs-", &format!("\"id\": \"sqs{suffix}-"));
        record["body"] = json!(body);
    }
    event
}

fn failures(body: &Value) -> Vec<String> {
    body["batchItemFailures"]
        .as_array()
        .expect("batchItemFailures present")
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn sqs_batches_load_and_report_only_transient_failures() {
    let db = fresh_db().await;
    for t in ["acme", "beta"] {
        ferry_shared::db::add_tenant(&db.pool, t, t).await.unwrap();
    }
    let mut api = RuntimeApi::start().await;
    let _function = start(&api, &db.url);

    // Two good messages and one with a bad event: nothing to redeliver.
    let (kind, body) = api.invoke(fixture("sqs_batch_three_messages.json")).await;
    assert_eq!(kind, "response");
    assert_eq!(failures(&body), Vec::<String>::new());
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 3);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM quarantine WHERE reason = 'wrong_specversion'"
        )
        .await,
        1
    );

    // The same batch redelivered: acknowledged, no effect.
    let (_, body) = api.invoke(fixture("sqs_batch_three_messages.json")).await;
    assert_eq!(failures(&body), Vec::<String>::new());
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 3);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM quarantine").await, 1);

    // The database is unavailable for one tenant (its row is locked): only that message fails.
    let mut blocker = db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM tenants WHERE tenant_id = 'beta' FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let (_, body) = api.invoke(renamed("-2")).await;
    assert_eq!(failures(&body), ["2e1424d4-f796-459a-8184-9c92662be6da-2"]);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM events").await,
        4,
        "the acme message loaded"
    );
    blocker.rollback().await.unwrap();
    let (_, body) = api.invoke(renamed("-2")).await;
    assert_eq!(failures(&body), Vec::<String>::new());
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM events").await,
        6,
        "the beta message loaded on redelivery"
    );
}

#[tokio::test]
async fn every_message_fails_when_the_database_is_down() {
    let mut api = RuntimeApi::start().await;
    let _function = start(&api, &unreachable_database_url());
    let (kind, body) = api.invoke(fixture("sqs_batch_three_messages.json")).await;
    assert_eq!(
        kind, "response",
        "per-message failures, not a function error"
    );
    let mut failed = failures(&body);
    failed.sort();
    assert_eq!(
        failed,
        [
            "059f36b4-87a3-44ab-83d2-661975830a7d",
            "2e1424d4-f796-459a-8184-9c92662be6da",
            "8b7c1a52-3f0e-4c7e-9a57-2f4d1e0c9b11"
        ]
    );
}

#[tokio::test]
async fn a_payload_that_is_not_an_sqs_event_is_a_function_error() {
    let db = fresh_db().await;
    let mut api = RuntimeApi::start().await;
    let _function = start(&api, &db.url);
    let (kind, _) = api.invoke(json!({"Records": "nope"})).await;
    assert_eq!(kind, "error");
    // The runtime keeps serving after an error.
    let (kind, body) = api.invoke(json!({"Records": []})).await;
    assert_eq!((kind, failures(&body)), ("response", vec![]));
}
