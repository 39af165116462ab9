//! Contract tests of the real `fanout` binary: in Lambda mode against a loopback Runtime API
//! with an SQS nudge and both scheduled payload shapes, and in Azure mode with the queue and
//! timer envelopes (`/fanout` and `/fanout-timer`). Each invocation must drain the outbox to a
//! real receiver on loopback.

use std::time::Duration;

use crate::harness::receiver::Receiver;
use crate::harness::{
    count, fill, fixture, fresh_db, spawn_azure, spawn_function, unreachable_database_url,
    RuntimeApi, TestDb,
};
use chrono::{SecondsFormat, Utc};
use serde_json::json;

/// What the binary needs to send to a loopback receiver (the documented allow-list).
const LOOPBACK: &[(&str, &str)] = &[
    ("FERRY_WEBHOOK_ALLOW_HTTP", "true"),
    ("FERRY_WEBHOOK_ALLOW_NETS", "127.0.0.0/8"),
    ("FERRY_FANOUT_LINGER", "0s"),
];

async fn db_with_endpoint(rx: &Receiver) -> TestDb {
    let db = fresh_db().await;
    ferry_shared::db::add_tenant(&db.pool, "acme", "Acme")
        .await
        .unwrap();
    let keys = crate::harness::test_keys();
    crate::harness::add_loopback_endpoint(&db.pool, &keys, "acme", &rx.url("/hook"), &["order.*"])
        .await;
    db
}

/// Enqueues `n` messages the way the rollup and operational events do.
async fn enqueue(db: &TestDb, tag: &str, n: i64) {
    sqlx::query(
        "SELECT ferry_enqueue('acme', ferry_message_id('acme', '/shop', $1 || g), 'order.placed',
                              NULL, json_build_object('specversion', '1.0', 'id', $1 || g,
                                                      'source', '/shop', 'type', 'order.placed')::text)
         FROM generate_series(1, $2) AS g",
    )
    .bind(tag)
    .bind(n)
    .execute(&db.pool)
    .await
    .unwrap();
}

async fn delivered(db: &TestDb) -> i64 {
    count(
        &db.pool,
        "SELECT count(*) FROM deliveries WHERE status = 'delivered'",
    )
    .await
}

fn lambda(api: &RuntimeApi, database_url: &str) -> tokio::process::Child {
    let mut env: Vec<(&str, String)> = api.env();
    env.extend(LOOPBACK.iter().map(|(k, v)| (*k, v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_function("fanout", database_url, &env)
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[tokio::test]
async fn lambda_mode_drains_on_an_sqs_nudge_and_on_both_schedule_shapes() {
    let rx = Receiver::start().await;
    let db = db_with_endpoint(&rx).await;
    let mut api = RuntimeApi::start().await;
    let _f = lambda(&api, &db.url);

    enqueue(&db, "nudged-", 3).await;
    let (kind, body) = api.invoke(fixture("sqs_fanout_nudge.json")).await;
    assert_eq!(
        (kind, &body),
        ("response", &json!({"batchItemFailures": []}))
    );
    assert_eq!(delivered(&db).await, 3);
    assert_eq!(rx.received().len(), 3);

    enqueue(&db, "swept-", 2).await;
    let (kind, body) = api
        .invoke(fill("eventbridge_scheduled_rule.json", &[("time", &now())]))
        .await;
    assert_eq!((kind, &body), ("response", &json!({"status": "done"})));
    assert_eq!(delivered(&db).await, 5);

    enqueue(&db, "scheduler-", 2).await;
    let (kind, _) = api
        .invoke(fill("eventbridge_scheduler.json", &[("time", &now())]))
        .await;
    assert_eq!(kind, "response");
    assert_eq!(delivered(&db).await, 7);
    let got = rx.received();
    assert_eq!(got.len(), 7);
    assert!(got
        .iter()
        .all(|r| r.header("webhook-signature").starts_with("v1,")));
}

#[tokio::test]
async fn lambda_mode_reports_the_nudge_failed_while_the_database_is_down() {
    let mut api = RuntimeApi::start().await;
    let _f = lambda(&api, &unreachable_database_url());
    let (kind, body) = api.invoke(fixture("sqs_fanout_nudge.json")).await;
    assert_eq!(kind, "response", "{body}");
    assert_eq!(
        body,
        json!({"batchItemFailures": [{"itemIdentifier": "3f9d2c1e-7a44-4e0b-8c6b-5b2e9d0a1f77"}]})
    );
    let (kind, _) = api
        .invoke(fill("eventbridge_scheduled_rule.json", &[("time", &now())]))
        .await;
    assert_eq!(kind, "error");
}

fn timer() -> serde_json::Value {
    let t = Utc::now();
    fill(
        "azure_timer.json",
        &[
            ("last", &(t - chrono::Duration::minutes(1)).to_rfc3339()),
            ("next", &(t + chrono::Duration::minutes(1)).to_rfc3339()),
            ("now", &t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        ],
    )
}

#[tokio::test]
async fn azure_mode_drains_on_the_queue_and_timer_envelopes() {
    let rx = Receiver::start().await;
    let db = db_with_endpoint(&rx).await;
    let (_f, base) = spawn_azure("fanout", &db.url, LOOPBACK).await;
    let client = reqwest::Client::new();

    enqueue(&db, "queued-", 3).await;
    let r = client
        .post(format!("{base}/fanout"))
        .json(&fixture("azure_queue_nudge.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(delivered(&db).await, 3);

    enqueue(&db, "timed-", 4).await;
    let r = client
        .post(format!("{base}/fanout-timer"))
        .json(&timer())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(delivered(&db).await, 7);
    assert_eq!(rx.received().len(), 7);

    // A timer envelope without a timer is refused; an unknown route is 404.
    let r = client
        .post(format!("{base}/fanout-timer"))
        .json(&json!({"Data": {}, "Metadata": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client
        .post(format!("{base}/rollup"))
        .json(&timer())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn azure_mode_answers_500_while_the_database_is_down() {
    let (_f, base) = spawn_azure("fanout", &unreachable_database_url(), LOOPBACK).await;
    let client = reqwest::Client::new();
    for (route, body) in [
        ("fanout", fixture("azure_queue_nudge.json")),
        ("fanout-timer", timer()),
    ] {
        let r = tokio::time::timeout(
            Duration::from_secs(30),
            client.post(format!("{base}/{route}")).json(&body).send(),
        )
        .await
        .expect("answers")
        .unwrap();
        assert_eq!(r.status(), 500, "{route}");
    }
}
