//! Contract tests of the real `ingest` binary as an Azure Functions custom handler: the test
//! plays the host, waits for readiness on `GET /`, and POSTs queue-trigger envelopes (as the
//! documentation shows them, and double-quoted as a real host sends them) to `/ingest`.

use std::time::Duration;

use crate::harness::{count, fixture, fresh_db, spawn_function, unreachable_database_url};
use serde_json::{json, Value};

struct Host {
    base: String,
    client: reqwest::Client,
    _function: tokio::process::Child,
}

impl Host {
    async fn start(database_url: &str) -> Host {
        let port = ferry_local::postgres::free_port().unwrap().to_string();
        let function = spawn_function(
            "ingest",
            database_url,
            &[("FUNCTIONS_CUSTOMHANDLER_PORT", &port)],
        );
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        // Readiness, as the host polls it: any HTTP answer on GET /.
        for _ in 0..200 {
            if client.get(&base).send().await.is_ok() {
                return Host {
                    base,
                    client,
                    _function: function,
                };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("handler never became ready on {base}");
    }

    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        self.try_post(path, body).await.unwrap()
    }

    async fn try_post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let r = self
            .client
            .post(format!("{}/{path}", self.base))
            .header("Content-Type", "application/json")
            .header(
                "X-Azure-Functions-InvocationId",
                "5c1ab0c5-0e9b-4a9b-a1b7-7a2b9d4e1f00",
            )
            .body(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    async fn invoke(&self, envelope: &Value) -> u16 {
        self.post("ingest", envelope.to_string()).await.0
    }
}

fn envelope(id: &str, message: &Value) -> Value {
    json!({"Data": {"message": message.to_string()}, "Metadata": {"Id": id, "DequeueCount": 1}})
}

fn event(tenant: &str, id: &str) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "/web/shop", "type": "page.viewed",
           "time": "2026-11-21T10:00:00Z", "tenantid": tenant})
}

#[tokio::test]
async fn queue_envelopes_load_in_both_encodings_exactly_once() {
    let db = fresh_db().await;
    for t in ["acme", "beta"] {
        ferry_shared::db::add_tenant(&db.pool, t, t).await.unwrap();
    }
    let host = Host::start(&db.url).await;

    let (status, body) = host
        .post("ingest", fixture("azure_queue_plain.json").to_string())
        .await;
    assert_eq!(status, 200);
    assert!(
        body["Outputs"].is_object(),
        "the response is the host's envelope: {body}"
    );
    assert_eq!(
        host.invoke(&fixture("azure_queue_quoted_string.json"))
            .await,
        200
    );
    let ids: Vec<String> = sqlx::query_scalar("SELECT event_id FROM events ORDER BY event_id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(ids, ["az-plain-1", "az-quoted-1", "az-quoted-2"]);
    let units: Vec<String> = sqlx::query_scalar("SELECT unit FROM ingest_ledger ORDER BY unit")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        units,
        [
            "queue:5f1a6e0e-2a7e-4bb8-9b8e-0c4c3c1f7a01",
            "queue:a0004923-6f1e-4c59-8a57-61b0a3c6f0d2"
        ],
        "the double-quoted Id is decoded before it names the unit"
    );

    // Redelivered (the host retries after a lost response): acknowledged, no effect.
    assert_eq!(
        host.invoke(&fixture("azure_queue_quoted_string.json"))
            .await,
        200
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 3);

    // Bad input is acknowledged (200) and quarantined, not retried into the poison queue.
    let mut bad = event("acme", "bad-1");
    bad["time"] = json!("yesterday");
    assert_eq!(host.invoke(&envelope("m-bad", &bad)).await, 200);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM quarantine WHERE reason = 'invalid_time'"
        )
        .await,
        1
    );

    // A transient failure (tenant row locked) is a non-2xx, so the host retries the message.
    let mut blocker = db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM tenants WHERE tenant_id = 'beta' FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    assert_eq!(
        host.invoke(&envelope("m-beta", &event("beta", "b-9")))
            .await,
        500
    );
    assert_eq!(
        host.invoke(&envelope("m-acme", &event("acme", "a-9")))
            .await,
        200,
        "other tenants are unaffected"
    );
    blocker.rollback().await.unwrap();
    assert_eq!(
        host.invoke(&envelope("m-beta", &event("beta", "b-9")))
            .await,
        200
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 5);
}

#[tokio::test]
async fn unknown_routes_and_unreadable_envelopes_are_refused() {
    let db = fresh_db().await;
    let host = Host::start(&db.url).await;
    assert_eq!(host.invoke(&fixture("azure_queue_plain.json")).await, 200);
    assert_eq!(
        host.post("transform", fixture("azure_queue_plain.json").to_string())
            .await
            .0,
        404
    );
    // The host's envelope itself is unreadable: fail, so the message stays on its queue.
    assert_eq!(host.post("ingest", "not json").await.0, 400);
    assert_eq!(
        host.post(
            "ingest",
            json!({"Data": {"message": "{}"}, "Metadata": {}}).to_string()
        )
        .await
        .0,
        400
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM ingest_ledger").await,
        1
    );
}

#[tokio::test]
async fn a_request_over_the_limit_is_refused_and_the_handler_keeps_serving() {
    let db = fresh_db().await;
    ferry_shared::db::add_tenant(&db.pool, "acme", "Acme")
        .await
        .unwrap();
    let host = Host::start(&db.url).await;
    // A Storage queue message is at most 64 KiB; 2 MiB is no message the host can send.
    let huge = envelope("big", &json!({"padding": "x".repeat(2 << 20)})).to_string();
    // The handler answers without reading the body and closes the connection: the client can
    // lose the race and see its write fail (a broken pipe) before it reads the answer. Send
    // again until it reads the answer; what is asserted is that answer.
    let mut answer = None;
    for _ in 0..5 {
        match host.try_post("ingest", huge.clone()).await {
            Ok(a) => {
                answer = Some(a);
                break;
            }
            Err(e) => assert!(e.is_request(), "{e}"),
        }
    }
    let (status, reply) = answer.expect("an answer to the oversized request");
    assert_eq!(status, 413);
    assert!(
        reply["Logs"][0]
            .as_str()
            .is_some_and(|l| l.contains("over 1048576 bytes")),
        "{reply}"
    );
    // A batch sent as a plain (not double-quoted) string, near the largest real message.
    let batch: Vec<Value> = (0..200)
        .map(|i| {
            let mut e = event("acme", &format!("b-{i}"));
            e["time"] = json!((chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339());
            e
        })
        .collect();
    assert_eq!(host.invoke(&envelope("batch", &json!(batch))).await, 200);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 200);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM ingest_ledger").await,
        1,
        "the refused request left nothing behind"
    );
}

#[tokio::test]
async fn a_database_outage_is_a_retryable_failure() {
    let host = Host::start(&unreachable_database_url()).await;
    assert_eq!(host.invoke(&fixture("azure_queue_plain.json")).await, 500);
}
