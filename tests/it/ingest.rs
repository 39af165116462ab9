//! The ingest handler and the shared loader against a real PostgreSQL: ledger, dedup, both
//! write strategies, partitions, concurrency, and the retryable / permanent split.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{batch, config, count, event, fresh_db, ingest_db, with_database, TestDb};
use ferry_ingest::Ingest;
use serde_json::{json, Value};

/// tenant, source, type, subject, user, session, extensions, data
type StoredRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Value,
    Value,
);

async fn setup(overrides: &[(&str, &str)]) -> (TestDb, Ingest) {
    ingest_db(overrides).await
}

#[tokio::test]
async fn events_are_stored_with_their_columns() {
    let (db, ingest) = setup(&[]).await;
    let mut ev = event("acme", "c-1");
    ev["subject"] = json!("order-9");
    ev["userid"] = json!("u-7");
    ev["sessionid"] = json!("s-3");
    ev["campaign"] = json!("fall");
    ingest.process(&batch(&[("m", ev.to_string())])).await;
    let row: StoredRow =
        sqlx::query_as(
            "SELECT tenant_id, source, type, subject, user_id, session_id, extensions, data FROM events",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        row,
        (
            "acme".into(),
            "/tests".into(),
            "payment.captured".into(),
            Some("order-9".into()),
            Some("u-7".into()),
            Some("s-3".into()),
            json!({"campaign": "fall"}),
            json!({"amount": 1})
        )
    );
}

#[tokio::test]
async fn redelivered_message_has_no_effect() {
    let (db, ingest) = setup(&[]).await;
    let body = json!([event("acme", "r-1"), event("acme", "r-2"), {"bad": true}]).to_string();
    let first = ingest.process(&batch(&[("m-1", body.clone())])).await;
    assert!(first.units[0].applied);
    let second = ingest.process(&batch(&[("m-1", body)])).await;
    assert!(second.failed.is_empty());
    assert!(
        !second.units[0].applied,
        "the ledger row makes a redelivery a no-op"
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 2);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM quarantine").await,
        1,
        "not quarantined twice"
    );
}

#[tokio::test]
async fn producer_retry_in_a_new_message_is_deduplicated() {
    let (db, ingest) = setup(&[]).await;
    let body = json!([event("acme", "p-1"), event("acme", "p-2")]).to_string();
    ingest.process(&batch(&[("m-1", body.clone())])).await;
    let retry = ingest.process(&batch(&[("m-2", body)])).await;
    assert_eq!((retry.units[0].loaded, retry.units[0].duplicates), (0, 2));
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 2);
    assert_eq!(
        count(&db.pool, "SELECT sum(events)::bigint FROM ingest_ledger").await,
        2
    );
}

/// The loader inserts without `ON CONFLICT` first; a load that meets a stored copy of one of
/// its events is redone with it, counts the copies as duplicates, and the loader dedups up
/// front for a while. A copy within one insert (one message here) never costs a redo.
#[tokio::test]
async fn a_load_that_meets_a_stored_event_is_redone_with_on_conflict() {
    use ferry_shared::load::{Loader, LoaderConfig, Unit};
    let time = (chrono::Utc::now() - chrono::Duration::minutes(2)).to_rfc3339();
    let body = |ids: &[&str]| {
        let events: Vec<Value> = ids
            .iter()
            .map(|id| {
                let mut e = event("acme", id);
                e["time"] = json!(time);
                e
            })
            .collect();
        json!(events).to_string()
    };
    for threshold in ["1", "1000000"] {
        let db = fresh_db().await;
        ferry_shared::db::add_tenant(&db.pool, "acme", "acme")
            .await
            .unwrap();
        let cfg = config(&[("FERRY_COPY_THRESHOLD", threshold)]);
        let loader = Loader::new(db.pool.clone(), LoaderConfig::from_config(&cfg));
        let unit = |key: &str, ids: &[&str]| Unit {
            key: key.to_owned(),
            parsed: ferry_shared::validate::parse_body(
                body(ids).as_bytes(),
                &cfg.limits,
                chrono::Utc::now(),
            ),
        };
        // New events, one of them twice in its own message: no redo.
        let first = loader
            .load("ingest", &[unit("queue:a", &["e1", "e2", "e3", "e3"])])
            .await
            .unwrap();
        assert_eq!((first[0].loaded, first[0].duplicates), (3, 1));
        assert!(!loader.dedups_up_front(), "threshold {threshold}");
        // Two stored before, two new: redone, counted, and the loader turns cautious.
        let second = loader
            .load("ingest", &[unit("queue:b", &["e2", "e3", "e4", "e5"])])
            .await
            .unwrap();
        assert_eq!(
            (second[0].loaded, second[0].duplicates),
            (2, 2),
            "threshold {threshold}"
        );
        assert!(loader.dedups_up_front(), "threshold {threshold}");
        assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 5);
        assert_eq!(
            count(
                &db.pool,
                "SELECT count(*) FROM ingest_ledger
                 WHERE unit = 'queue:b' AND events = 2 AND duplicates = 2"
            )
            .await,
            1
        );
        // A loader that is never cautious for long still redoes each such load.
        let brief = Loader::new(
            db.pool.clone(),
            LoaderConfig {
                cautious_for: Duration::ZERO,
                ..LoaderConfig::from_config(&cfg)
            },
        );
        let third = brief
            .load("ingest", &[unit("queue:c", &["e5", "e6"])])
            .await
            .unwrap();
        assert_eq!((third[0].loaded, third[0].duplicates), (1, 1));
        assert!(!brief.dedups_up_front());
        assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 6);
    }
}

/// A batch of small messages goes in as one insert; each message still gets its own counts,
/// in its report, its ledger row and its quarantine rows, with the same strategy or the other.
#[tokio::test]
async fn each_message_of_a_batch_keeps_its_own_counts() {
    // One time for all: an event's key includes its time.
    let time = (chrono::Utc::now() - chrono::Duration::minutes(2)).to_rfc3339();
    let event = |tenant: &str, id: &str| {
        let mut e = event(tenant, id);
        e["time"] = json!(time);
        e
    };
    for threshold in ["5000", "1"] {
        let (db, ingest) = setup(&[("FERRY_COPY_THRESHOLD", threshold)]).await;
        let already = json!([event("acme", "k-0")]).to_string();
        ingest.process(&batch(&[("m-0", already)])).await;
        let mut stranger = event("acme", "k-9");
        stranger["tenantid"] = json!("nobody");
        let messages = [
            // k-0 was stored by an earlier batch; k-1 and k-2 are new.
            (
                "m-1",
                json!([
                    event("acme", "k-1"),
                    event("acme", "k-0"),
                    event("acme", "k-2")
                ]),
            ),
            // k-2 again (a producer retry inside the batch), k-3 new, one unknown tenant.
            (
                "m-2",
                json!([event("acme", "k-2"), event("acme", "k-3"), stranger]),
            ),
            // k-3 again, and one event that is not valid.
            ("m-3", json!([event("acme", "k-3"), {"specversion": "1.0"}])),
        ];
        let bodies: Vec<(&str, String)> =
            messages.iter().map(|(m, b)| (*m, b.to_string())).collect();
        let report = ingest.process(&batch(&bodies)).await;
        assert!(report.failed.is_empty(), "{report:?}");
        let mut got: Vec<(String, u64, u64, u32)> = report
            .units
            .iter()
            .map(|u| {
                let q = u.quarantined.values().sum::<u32>();
                (u.key.clone(), u.loaded, u.duplicates, q)
            })
            .collect();
        got.sort();
        let want = [
            ("queue:m-1", 2, 1, 0),
            ("queue:m-2", 1, 1, 1),
            ("queue:m-3", 0, 1, 1),
        ]
        .map(|(k, l, d, q)| (k.to_owned(), l, d, q));
        assert_eq!(got, want, "threshold {threshold}");
        let ledger: Vec<(String, i32, i32, i32)> = sqlx::query_as(
            "SELECT unit, events, duplicates, quarantined FROM ingest_ledger
             WHERE unit <> 'queue:m-0' ORDER BY unit",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        let as_ledger: Vec<(String, i32, i32, i32)> = want
            .iter()
            .map(|(k, l, d, q)| (k.clone(), *l as i32, *d as i32, *q as i32))
            .collect();
        assert_eq!(ledger, as_ledger, "threshold {threshold}");
        let quarantined: Vec<(String, String)> =
            sqlx::query_as("SELECT unit, reason FROM quarantine ORDER BY unit")
                .fetch_all(&db.pool)
                .await
                .unwrap();
        assert_eq!(quarantined.len(), 2, "{quarantined:?}");
        assert_eq!(
            quarantined[0],
            ("queue:m-2".into(), "unknown_tenant".into())
        );
        assert_eq!(quarantined[1].0, "queue:m-3");
        assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 4);
    }
}

#[tokio::test]
async fn copy_and_unnest_strategies_store_identical_rows() {
    let time = (chrono::Utc::now() - chrono::Duration::minutes(3)).to_rfc3339();
    let body = json!((0..600)
        .map(|i| {
            let mut e = event(
                if i % 2 == 0 { "acme" } else { "beta" },
                &format!("s-{}", i % 500),
            );
            e["time"] = json!(time);
            if i % 3 == 0 {
                e["userid"] = json!(format!("u{i}"));
                e["subject"] = json!("x");
                e["extra"] = json!(true);
            }
            e["data"] = json!({"n": i % 500, "s": "ünïcode \"quoted\" \\ back"});
            e
        })
        .collect::<Vec<_>>())
    .to_string();
    let mut fingerprints = Vec::new();
    for threshold in ["1", "1000000"] {
        let (db, ingest) = setup(&[("FERRY_COPY_THRESHOLD", threshold)]).await;
        let r = ingest.process(&batch(&[("m", body.clone())])).await;
        assert_eq!(
            (r.units[0].loaded, r.units[0].duplicates),
            (500, 100),
            "threshold {threshold}"
        );
        let fp: String = sqlx::query_scalar(
            "SELECT md5(string_agg(concat_ws('|', tenant_id, source, event_id, type, subject, time,
                    user_id, session_id, datacontenttype, extensions, data), ',' ORDER BY tenant_id, event_id))
             FROM events",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        fingerprints.push(fp);
    }
    assert_eq!(fingerprints[0], fingerprints[1]);
}

#[tokio::test]
async fn partitions_are_created_on_demand_at_the_configured_width() {
    let (db, ingest) = setup(&[("FERRY_PARTITION_INTERVAL", "15m")]).await;
    // The functions' width applies where the database records none (one migrated before
    // `ferry migrate` recorded an hour on one server).
    crate::harness::forget_partition_width(&db.pool).await;
    let now = chrono::Utc::now();
    let events: Vec<_> = [0i64, 20, 40, 300]
        .iter()
        .map(|mins| {
            let mut e = event("acme", &format!("t-{mins}"));
            e["time"] = json!((now - chrono::Duration::minutes(*mins)).to_rfc3339());
            e
        })
        .collect();
    let r = ingest
        .process(&batch(&[("m", json!(events).to_string())]))
        .await;
    assert_eq!(r.units[0].loaded, 4);
    let widths = crate::harness::partition_widths(&db.pool).await;
    // The functions' width, unless the database recorded its own (Citus: a day).
    let width = crate::harness::partition_width(&db.pool, 900).await;
    let citus = ferry_local::citus::is_citus(&db.pool).await.unwrap();
    assert_eq!(width, if citus { 86_400 } else { 900 });
    let slots: std::collections::BTreeSet<i64> = [0i64, 20, 40, 300]
        .iter()
        .map(|mins| ferry_shared::db::slot_start(now - chrono::Duration::minutes(*mins), width))
        .collect();
    assert!(
        widths.len() >= slots.len(),
        "one partition per slot touched: {widths:?}"
    );
    assert!(widths.iter().all(|w| *w == width as f64), "{widths:?}");
    // On one server every partition, new ones included, is analyzed without statistics of
    // the jsonb columns (migration 0015: they halve ANALYZE, and no query filters on them).
    if !citus {
        // attstattarget: int4 with -1 for the default up to PostgreSQL 16; int2, NULL, from 17.
        let targets: Vec<(String, String, i32)> = sqlx::query_as(
            "SELECT c.relname::text, a.attname::text, coalesce(a.attstattarget::int4, -1)
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_attribute a ON a.attrelid = c.oid
             WHERE i.inhparent = 'events'::regclass
               AND a.attname IN ('data', 'extensions', 'user_id')
             ORDER BY 1, 2",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert_eq!(targets.len(), 3 * widths.len(), "{targets:?}");
        let parent: Vec<i32> = sqlx::query_scalar(
            "SELECT coalesce(attstattarget::int4, -1) FROM pg_attribute
             WHERE attrelid = 'events'::regclass AND attname IN ('data', 'extensions')",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert_eq!(parent, vec![0, 0], "the migration's own ALTER on events");
        for (part, column, target) in &targets {
            let want = if column == "user_id" { -1 } else { 0 };
            assert_eq!(*target, want, "{part}.{column}");
        }
    }
}

#[tokio::test]
async fn concurrent_loaders_share_new_partitions_without_errors() {
    let db = fresh_db().await;
    ferry_shared::db::add_tenant(&db.pool, "acme", "")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..8 {
        // Separate handlers: no shared partition cache, as on separate function instances.
        let ingest = Ingest::with_pool(&config(&[]), db.pool.clone(), "ingest");
        tasks.push(tokio::spawn(async move {
            let events: Vec<_> = (0..50)
                .map(|i| event("acme", &format!("w{w}-{i}")))
                .collect();
            ingest
                .process(&batch(&[(&format!("m{w}"), json!(events).to_string())]))
                .await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert!(r.failed.is_empty(), "{r:?}");
        assert!(r.units[0].quarantined.is_empty(), "{r:?}");
    }
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 400);
}

#[tokio::test]
async fn concurrent_deliveries_of_one_message_apply_it_once() {
    let (db, ingest) = setup(&[]).await;
    let ingest = Arc::new(ingest);
    let body = json!((0..200)
        .map(|i| event("acme", &format!("d-{i}")))
        .collect::<Vec<_>>())
    .to_string();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (ingest, body) = (Arc::clone(&ingest), body.clone());
            tokio::spawn(async move { ingest.process(&batch(&[("same", body)])).await })
        })
        .collect();
    let mut applied = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert!(r.failed.is_empty());
        applied += r.units.iter().filter(|u| u.applied).count();
    }
    assert_eq!(applied, 1);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 200);
}

#[tokio::test]
async fn a_locked_tenant_fails_only_its_own_message() {
    let (db, ingest) = setup(&[("FERRY_DB_LOCK_TIMEOUT", "300ms")]).await;
    // An operator (or a shard move) holds the tenant row: loads for it must wait, then retry.
    let mut blocker = db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM tenants WHERE tenant_id = 'beta' FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let b = batch(&[
        ("a-msg", event("acme", "a-1").to_string()),
        ("b-msg", event("beta", "b-1").to_string()),
        ("a-msg-2", event("acme", "a-2").to_string()),
    ]);
    let r = ingest.process(&b).await;
    assert_eq!(r.failed, ["b-msg"]);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM events WHERE tenant_id = 'acme'"
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM ingest_ledger WHERE unit = 'queue:b-msg'"
        )
        .await,
        0
    );
    blocker.rollback().await.unwrap();
    let again = ingest
        .process(&batch(&[("b-msg", event("beta", "b-1").to_string())]))
        .await;
    assert!(again.failed.is_empty());
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM events WHERE tenant_id = 'beta'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn an_unreachable_database_fails_every_message_quickly() {
    let port = ferry_local::postgres::free_port().unwrap();
    let url = with_database(&format!("postgres://ferry@127.0.0.1:{port}/x"), "nowhere");
    let cfg = config(&[("FERRY_DB_CONNECT_TIMEOUT", "1s")]);
    let ingest = Ingest::from_config(&{
        let mut c = cfg;
        c.db.url = Some(url);
        c
    })
    .unwrap();
    let started = Instant::now();
    let b = batch(&[
        ("m1", event("acme", "1").to_string()),
        ("m2", event("acme", "2").to_string()),
    ]);
    let r = ingest.process(&b).await;
    assert_eq!(r.failed, ["m1", "m2"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no per-message retry storm: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_demo_prints_its_summaries_and_keeps_the_function_logs_in_a_file() {
    let db = fresh_db().await;
    let state = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(crate::harness::bin("ferry"))
        .args(["demo", "--events", "1500", "--file-events", "300"])
        .env("DATABASE_URL", &db.url)
        .env("FERRY_STATE_DIR", state.path())
        .env("FERRY_WEBHOOK_KEYS", crate::harness::TEST_KEYS)
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for section in [
        "ferry demo summary",
        "rollup tick",
        "partner webhooks",
        "signatures verified",
        "recently viewed by",
    ] {
        assert!(stdout.contains(section), "{section:?} missing:\n{stdout}");
    }
    // Planned 503s and retries are counted in the summary, never printed as warnings.
    assert!(stdout.contains("answered 503, then retried"), "{stdout}");
    for noise in ["WARN", "ERROR", "INFO"] {
        assert!(
            !stdout.contains(noise) && !stderr.contains(noise),
            "{noise} in the demo's output:\n{stdout}\n{stderr}"
        );
    }
    let log = state.path().join("logs").join("demo.log");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("batch processed"), "the functions logged");
    assert!(
        stdout.contains(&format!("function logs: {}", log.display())),
        "{stdout}"
    );
}
