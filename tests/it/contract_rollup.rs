//! Contract tests of the real `rollup` binary: in Lambda mode against a loopback Runtime API
//! with both scheduled payload shapes (an EventBridge rule's "Scheduled Event", and EventBridge
//! Scheduler's, whose `detail` is a string), and in Azure mode with the `timerTrigger` envelope.

use std::time::Duration;

use crate::harness::{
    count, fill, fresh_db, spawn_azure, spawn_function, unreachable_database_url, RuntimeApi,
    TestDb,
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

/// A database with `n` page views of tenant acme over the last half hour.
async fn db_with_events(n: i64) -> TestDb {
    let db = fresh_db().await;
    ferry_shared::db::add_tenant(&db.pool, "acme", "Acme")
        .await
        .unwrap();
    add_events(&db, n, "a").await;
    db
}

async fn add_events(db: &TestDb, n: i64, tag: &str) {
    let start = Utc::now() - chrono::Duration::minutes(30);
    ferry_shared::db::ensure_partitions_ahead(&db.pool, start, Duration::from_secs(3600), 300)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (tenant_id, source, event_id, type, time, received_at, user_id, data)
         SELECT 'acme', '/web', $1 || g, 'page.viewed', $2 + (g % 1800) * interval '1 second',
                now(), 'u' || (g % 17), jsonb_build_object('path', '/p' || (g % 3))
         FROM generate_series(1, $3) AS g",
    )
    .bind(tag)
    .bind(start)
    .bind(n)
    .execute(&db.pool)
    .await
    .unwrap();
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

async fn ticks(db: &TestDb) -> Vec<(DateTime<Utc>, String, String)> {
    sqlx::query_as("SELECT tick, job, outcome FROM job_runs ORDER BY run_id")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

/// The harness widens `FERRY_MAX_EVENT_AGE` for fixtures with fixed times; the rollup refuses
/// to start with a raw retention shorter than that (tested below), so it is set back.
const RETENTION: &[(&str, &str)] = &[("FERRY_MAX_EVENT_AGE", "30d")];

fn lambda(api: &RuntimeApi, database_url: &str) -> tokio::process::Child {
    let mut env: Vec<(&str, String)> = api.env();
    env.extend(RETENTION.iter().map(|(k, v)| (*k, v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_function("rollup", database_url, &env)
}

#[tokio::test]
async fn lambda_mode_runs_the_jobs_on_a_rule_tick_and_a_scheduler_tick() {
    let db = db_with_events(300).await;
    let mut api = RuntimeApi::start().await;
    let _f = lambda(&api, &db.url);

    let rule_time = Utc::now() - chrono::Duration::seconds(20);
    let (kind, body) = api
        .invoke(fill(
            "eventbridge_scheduled_rule.json",
            &[("time", &rfc3339(rule_time))],
        ))
        .await;
    assert_eq!((kind, &body), ("response", &json!({"status": "done"})));
    assert_eq!(
        count(
            &db.pool,
            "SELECT sum(events)::bigint FROM rollup_events WHERE grain = 86400"
        )
        .await,
        300
    );
    let runs = ticks(&db).await;
    let jobs: Vec<&str> = runs.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        jobs,
        [
            "partitions",
            "rollup",
            "anomalies",
            "data_quality",
            "housekeeping"
        ]
    );
    assert!(
        runs.iter()
            .all(|r| r.0.timestamp() == rule_time.timestamp() && r.2 == "ok"),
        "{runs:?}"
    );

    // Scheduler: `detail` is the string "{}"; the payload is still read, its time recorded.
    add_events(&db, 45, "b").await;
    let scheduler_time = Utc::now() - chrono::Duration::seconds(5);
    let (kind, _) = api
        .invoke(fill(
            "eventbridge_scheduler.json",
            &[("time", &rfc3339(scheduler_time))],
        ))
        .await;
    assert_eq!(kind, "response");
    assert_eq!(
        count(
            &db.pool,
            "SELECT sum(events)::bigint FROM rollup_events WHERE grain = 86400"
        )
        .await,
        345
    );
    let runs = ticks(&db).await;
    assert_eq!(runs.len(), 5 + 4, "housekeeping is hourly: {runs:?}");
    assert!(runs[5..]
        .iter()
        .all(|r| r.0.timestamp() == scheduler_time.timestamp() && r.2 == "ok"));
}

#[tokio::test]
async fn lambda_mode_reports_a_function_error_when_the_database_is_down() {
    let mut api = RuntimeApi::start().await;
    let _f = lambda(&api, &unreachable_database_url());
    let (kind, body) = api
        .invoke(fill(
            "eventbridge_scheduled_rule.json",
            &[("time", &rfc3339(Utc::now()))],
        ))
        .await;
    assert_eq!(kind, "error", "{body}");
    assert!(body.to_string().contains("rollup"), "{body}");
}

async fn azure(database_url: &str) -> (tokio::process::Child, String) {
    spawn_azure("rollup", database_url, RETENTION).await
}

fn timer(now: DateTime<Utc>) -> Value {
    fill(
        "azure_timer.json",
        &[
            ("last", &rfc3339(now - chrono::Duration::minutes(1))),
            ("next", &rfc3339(now + chrono::Duration::minutes(1))),
            ("now", &now.to_rfc3339_opts(SecondsFormat::Millis, true)),
        ],
    )
}

#[tokio::test]
async fn azure_mode_runs_the_jobs_on_the_timer_envelope() {
    let db = db_with_events(120).await;
    let (_f, base) = azure(&db.url).await;
    let now = Utc::now() - chrono::Duration::seconds(3);
    let r = reqwest::Client::new()
        .post(format!("{base}/rollup"))
        .json(&timer(now))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        count(
            &db.pool,
            "SELECT sum(events)::bigint FROM rollup_events WHERE grain = 300"
        )
        .await,
        120
    );
    let runs = ticks(&db).await;
    assert_eq!(runs.len(), 5);
    assert!(
        runs.iter()
            .all(|r| r.0.timestamp_millis() == now.timestamp_millis() && r.2 == "ok"),
        "{runs:?}"
    );

    // An envelope without a timer object is refused, and nothing runs.
    let r = reqwest::Client::new()
        .post(format!("{base}/rollup"))
        .json(&json!({"Data": {}, "Metadata": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(ticks(&db).await.len(), 5);
}

#[tokio::test]
async fn azure_mode_answers_500_while_the_database_is_down() {
    let (_f, base) = azure(&unreachable_database_url()).await;
    let r = reqwest::Client::new()
        .post(format!("{base}/rollup"))
        .json(&timer(Utc::now()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert!(r.text().await.unwrap().contains("rollup"));
}

#[tokio::test]
async fn refuses_to_start_with_a_retention_shorter_than_the_accepted_event_age() {
    let db = fresh_db().await;
    let mut child = tokio::process::Command::new(crate::harness::bin("rollup"))
        .env("DATABASE_URL", &db.url)
        .env("FERRY_MAX_EVENT_AGE", "30d")
        .env("FERRY_EVENTS_RETENTION", "7d")
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", "1")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(!status.success());
    let mut err = String::new();
    use tokio::io::AsyncReadExt;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    assert!(err.contains("FERRY_EVENTS_RETENTION"), "{err}");
}
