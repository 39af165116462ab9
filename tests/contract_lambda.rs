//! Contract tests of the real `ingest` binary in AWS Lambda mode: the test serves the Lambda
//! Runtime API on loopback (`/2018-06-01/runtime/invocation/next`, `…/response`, `…/error`)
//! and feeds it `SqsEvent` fixtures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_tests::{count, fixture, fresh_db, spawn_function, unreachable_database_url};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Mutex};
use warp::Filter;

/// A loopback Lambda Runtime API: events in, function results out.
struct RuntimeApi {
    addr: SocketAddr,
    events: mpsc::Sender<(String, Value)>,
    results: mpsc::Receiver<(String, &'static str, Value)>,
    next_id: u32,
}

impl RuntimeApi {
    async fn start() -> RuntimeApi {
        let (event_tx, event_rx) = mpsc::channel::<(String, Value)>(16);
        let (result_tx, result_rx) = mpsc::channel(16);
        let event_rx = Arc::new(Mutex::new(event_rx));
        let next = warp::get()
            .and(warp::path!(
                "2018-06-01" / "runtime" / "invocation" / "next"
            ))
            .then(move || {
                let event_rx = Arc::clone(&event_rx);
                async move {
                    // Long poll, as the real API does, until the test queues an event.
                    let (id, payload) = event_rx.lock().await.recv().await.expect("test ended");
                    let deadline =
                        (chrono::Utc::now() + chrono::Duration::seconds(60)).timestamp_millis();
                    let reply = warp::reply::with_header(
                        warp::reply::json(&payload),
                        "Lambda-Runtime-Aws-Request-Id",
                        id,
                    );
                    let reply = warp::reply::with_header(
                        reply,
                        "Lambda-Runtime-Deadline-Ms",
                        deadline.to_string(),
                    );
                    warp::reply::with_header(
                        reply,
                        "Lambda-Runtime-Invoked-Function-Arn",
                        "arn:aws:lambda:eu-west-1:123456789012:function:ingest",
                    )
                }
            });
        // POST …/{id}/response and …/{id}/error: the function's result, recorded for the test.
        let result = warp::post()
            .and(warp::path!(
                "2018-06-01" / "runtime" / "invocation" / String / String
            ))
            .and(warp::body::json())
            .then(move |id: String, kind: String, body: Value| {
                let tx = result_tx.clone();
                async move {
                    let kind = if kind == "response" {
                        "response"
                    } else {
                        "error"
                    };
                    tx.send((id, kind, body)).await.ok();
                    warp::reply::with_status("", warp::http::StatusCode::ACCEPTED)
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(warp::serve(next.or(result)).incoming(listener).run());
        RuntimeApi {
            addr,
            events: event_tx,
            results: result_rx,
            next_id: 0,
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_LAMBDA_RUNTIME_API", self.addr.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", "ingest".into()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        ]
    }

    /// Invokes the function with `payload`; returns which endpoint it answered on, and the body.
    async fn invoke(&mut self, payload: Value) -> (&'static str, Value) {
        self.next_id += 1;
        let id = format!("req-{}", self.next_id);
        self.events.send((id.clone(), payload)).await.unwrap();
        let (got, kind, body) = tokio::time::timeout(Duration::from_secs(60), self.results.recv())
            .await
            .expect("function answered in time")
            .expect("runtime api alive");
        assert_eq!(got, id);
        (kind, body)
    }
}

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
