//! Bad input: every rejection reason ends in quarantine with the raw bytes, the message is
//! acknowledged, and nothing else in the same message or batch is lost.

use crate::harness::{config, count, event, fresh_db, message, TestDb};
use ferry_ingest::Ingest;
use ferry_shared::QueueBatch;
use serde_json::json;

async fn setup() -> (TestDb, Ingest) {
    let db = fresh_db().await;
    ferry_shared::db::add_tenant(&db.pool, "acme", "Acme")
        .await
        .unwrap();
    let cfg = config(&[("FERRY_MAX_EVENT_BYTES", "4096")]);
    let ingest = Ingest::with_pool(&cfg, db.pool.clone(), "ingest");
    (db, ingest)
}

/// Sends `body` as one message next to a good message, and returns the quarantine rows
/// `(reason, position, raw, tenant)` of the bad one.
async fn reject(body: Vec<u8>) -> Vec<(String, Option<i32>, Vec<u8>, String)> {
    let (db, ingest) = setup().await;
    let good = event("acme", "good-1").to_string();
    let batch = QueueBatch {
        messages: vec![message("bad", body), message("good", good)],
    };
    let report = ingest.process(&batch).await;
    assert!(
        report.failed.is_empty(),
        "bad input is acknowledged, not retried: {report:?}"
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM ingest_ledger").await,
        2,
        "both messages are in the ledger"
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM events WHERE event_id = 'good-1'"
        )
        .await,
        1,
        "the good message still loads"
    );
    sqlx::query_as("SELECT reason, position, raw, tenant_id FROM quarantine WHERE unit = 'queue:bad' ORDER BY quarantine_id")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

async fn reject_event(ev: serde_json::Value, reason: &str) {
    let body = ev.to_string().into_bytes();
    let rows = reject(body.clone()).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, reason);
    assert_eq!(rows[0].1, Some(0));
    assert_eq!(rows[0].2, body, "raw bytes are kept as sent");
}

fn with(key: &str, value: serde_json::Value) -> serde_json::Value {
    let mut e = event("acme", "e-1");
    e[key] = value;
    e
}

fn without(key: &str) -> serde_json::Value {
    let mut e = event("acme", "e-1");
    e.as_object_mut().unwrap().remove(key);
    e
}

#[tokio::test]
async fn invalid_json_is_quarantined_whole() {
    let rows = reject(b"{\"specversion\": \"1.0\", \"id\": ".to_vec()).await;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].0.as_str(), rows[0].1), ("invalid_json", None));
    assert_eq!(rows[0].2, b"{\"specversion\": \"1.0\", \"id\": ");
}

#[tokio::test]
async fn non_utf8_bytes_are_quarantined_unchanged() {
    let body = b"{\"id\": \"\xff\xfe\x80\"}".to_vec();
    let rows = reject(body.clone()).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "invalid_json");
    assert_eq!(rows[0].2, body);
}

#[tokio::test]
async fn missing_required_attribute_is_quarantined() {
    reject_event(without("id"), "missing_attribute").await;
}

#[tokio::test]
async fn empty_required_attribute_is_quarantined() {
    reject_event(with("source", json!("")), "missing_attribute").await;
}

#[tokio::test]
async fn missing_tenant_is_quarantined() {
    reject_event(without("tenantid"), "missing_attribute").await;
}

#[tokio::test]
async fn wrong_specversion_is_quarantined() {
    reject_event(with("specversion", json!("0.3")), "wrong_specversion").await;
}

#[tokio::test]
async fn invalid_attribute_name_is_quarantined() {
    reject_event(with("Trace-Id", json!("x")), "invalid_attribute_name").await;
}

#[tokio::test]
async fn unparseable_time_is_quarantined() {
    reject_event(with("time", json!("21/11/2026 10:00")), "invalid_time").await;
}

#[tokio::test]
async fn oversize_event_is_quarantined() {
    reject_event(with("data", json!({"blob": "x".repeat(5000)})), "oversize").await;
}

/// A large refused body is kept byte for byte, compressed with lz4 where the server has it
/// (migration 0016: pglz took 2.3 ms per 300 KB body, lz4 0.15 ms).
#[tokio::test]
async fn a_large_refused_body_is_kept_whole_and_compressed_with_lz4() {
    let (db, ingest) = setup().await;
    let body = with("data", json!({"blob": "x".repeat(300 * 1024)}))
        .to_string()
        .into_bytes();
    let report = ingest
        .process(&QueueBatch {
            messages: vec![message("big", body.clone())],
        })
        .await;
    assert!(report.failed.is_empty(), "{report:?}");
    let (reason, raw, method): (String, Vec<u8>, Option<String>) = sqlx::query_as(
        "SELECT reason, raw, pg_column_compression(raw) FROM quarantine WHERE unit = 'queue:big'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(reason, "oversize");
    assert_eq!(raw, body, "the body reads back whole");
    let has_lz4 = count(
        &db.pool,
        "SELECT count(*) FROM pg_settings
         WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)",
    )
    .await
        == 1;
    let expected = if has_lz4 { "lz4" } else { "pglz" };
    assert_eq!(method.as_deref(), Some(expected), "stored compressed");
}

#[tokio::test]
async fn unknown_tenant_is_quarantined_with_its_tenant() {
    let ev = event("nobody", "e-1");
    let body = ev.to_string().into_bytes();
    let rows = reject(body.clone()).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].0.as_str(), rows[0].2.clone(), rows[0].3.as_str()),
        ("unknown_tenant", body, "nobody")
    );
}

#[tokio::test]
async fn time_outside_the_window_is_quarantined() {
    reject_event(
        with("time", json!("2001-01-01T00:00:00Z")),
        "time_out_of_window",
    )
    .await;
    let future = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    reject_event(with("time", json!(future)), "time_out_of_window").await;
}

#[tokio::test]
async fn wrongly_typed_attribute_is_quarantined() {
    reject_event(with("type", json!(42)), "invalid_attribute_value").await;
}

#[tokio::test]
async fn nul_escape_in_data_is_quarantined_not_retried() {
    reject_event(with("data", json!({"note": "a\u{0}b"})), "unsupported_data").await;
}

/// The raw text of a good event with `placeholder` replaced by `json` (an escape that a
/// serde_json::Value cannot hold).
fn raw_with(name: &str, json: &str) -> Vec<u8> {
    with(name, json!("@@@"))
        .to_string()
        .replace("\"@@@\"", json)
        .into_bytes()
}

#[tokio::test]
async fn text_that_cannot_be_stored_is_unsupported_data_wherever_it_appears() {
    // A lone UTF-16 surrogate is valid JSON syntax but no character: refused in the same
    // words, with the same reason, in an attribute, an extension and data, in one pass.
    for name in ["id", "subject", "userid", "campaign", "data"] {
        let body = raw_with(name, r#""a\ud800""#);
        let rows = reject(body.clone()).await;
        assert_eq!(rows.len(), 1, "{name}: {rows:?}");
        assert_eq!(
            (rows[0].0.as_str(), rows[0].1, rows[0].3.as_str()),
            ("unsupported_data", Some(0), "acme"),
            "{name}"
        );
        assert_eq!(rows[0].2, body);
    }
}

#[tokio::test]
async fn a_number_out_of_range_in_an_extension_is_an_invalid_attribute_value() {
    let body = raw_with("campaign", "1e400");
    let rows = reject(body).await;
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1),
        ("invalid_attribute_value", Some(0))
    );
}

#[tokio::test]
async fn data_base64_that_is_not_base64_is_quarantined() {
    let mut ev = without("data");
    ev["data_base64"] = json!("!!!not base64!!!");
    reject_event(ev, "invalid_attribute_value").await;
}

#[tokio::test]
async fn a_mixed_batch_loads_the_good_events_and_quarantines_the_bad() {
    let (db, ingest) = setup().await;
    let body = json!([
        event("acme", "b-0"),
        without("type"),
        event("acme", "b-2"),
        "not an event",
        event("ghost", "b-4"),
        event("acme", "b-5"),
    ])
    .to_string();
    let report = ingest
        .process(&QueueBatch {
            messages: vec![message("mixed", body)],
        })
        .await;
    assert!(report.failed.is_empty());
    assert_eq!(report.units[0].loaded, 3);
    let loaded: Vec<String> = sqlx::query_scalar("SELECT event_id FROM events ORDER BY event_id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(loaded, ["b-0", "b-2", "b-5"]);
    let q: Vec<(Option<i32>, String)> =
        sqlx::query_as("SELECT position, reason FROM quarantine ORDER BY position")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        q,
        [
            (Some(1), "missing_attribute".into()),
            (Some(3), "invalid_json".into()),
            (Some(4), "unknown_tenant".into())
        ]
    );
    let ledger: (i32, i32, i32) = sqlx::query_as(
        "SELECT events, duplicates, quarantined FROM ingest_ledger WHERE unit = 'queue:mixed'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(ledger, (3, 0, 3));
}

#[tokio::test]
async fn an_overlong_key_attribute_is_quarantined() {
    reject_event(
        with("source", json!("s".repeat(2000))),
        "invalid_attribute_value",
    )
    .await;
}

#[tokio::test]
async fn an_event_the_database_refuses_is_quarantined_alone_and_the_rest_loads() {
    let (db, ingest) = setup().await;
    // Valid JSON that PostgreSQL's jsonb refuses (a number beyond numeric's range): the
    // validator does not know numeric's limits, the database says so with a data exception
    // (SQLSTATE 22003).
    let refused = event("acme", "x-1")
        .to_string()
        .replace(r#""amount":1"#, r#""amount":1e200000"#);
    assert!(refused.contains("1e200000"), "{refused}");
    let body = format!(
        "[{},{refused},{}]",
        event("acme", "x-0"),
        event("acme", "x-2")
    );
    let batch = QueueBatch {
        messages: vec![
            message("m1", event("acme", "ok-1").to_string()),
            message("m2", body),
            message("m3", event("acme", "ok-3").to_string()),
        ],
    };
    let report = ingest.process(&batch).await;
    assert!(report.failed.is_empty(), "{report:?}");
    let ids: Vec<String> = sqlx::query_scalar("SELECT event_id FROM events ORDER BY event_id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(ids, ["ok-1", "ok-3", "x-0", "x-2"]);
    let (reason, position, raw): (String, Option<i32>, Vec<u8>) =
        sqlx::query_as("SELECT reason, position, raw FROM quarantine WHERE unit = 'queue:m2'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((reason.as_str(), position), ("database_rejected", Some(1)));
    assert_eq!(raw, refused.clone().into_bytes());
    // Redelivery of that message has no further effect.
    let again = ingest
        .process(&QueueBatch {
            messages: vec![batch.messages[1].clone()],
        })
        .await;
    assert!(again.failed.is_empty());
    assert!(!again.units[0].applied);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM quarantine").await, 1);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 4);
}

#[tokio::test]
async fn a_message_id_of_kilobytes_loads_once_under_a_bounded_ledger_key() {
    let (db, ingest) = setup().await;
    let id = "m".repeat(10_000);
    let batch = QueueBatch {
        messages: vec![message(&id, event("acme", "long-1").to_string())],
    };
    for round in 0..2 {
        let report = ingest.process(&batch).await;
        assert!(report.failed.is_empty(), "round {round}: {report:?}");
        assert_eq!(
            report.units[0].applied,
            round == 0,
            "a redelivery is recognised"
        );
    }
    let unit: String = sqlx::query_scalar("SELECT unit FROM ingest_ledger")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(unit.starts_with("queue:mmm") && unit.len() < 600, "{unit}");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 1);
}
