//! The transform function against a real PostgreSQL and real object stores: local files, S3
//! (moto server) and Azure Blob (Azurite). Formats, compressions, exactly-once per object, and
//! bad input.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::harness::{az_container, config, count, fresh_db, s3_bucket, store_options, TestDb};
use ferry_shared::faults::CrashPoint;
use ferry_shared::{BlobCreated, RejectReason};
use ferry_transform::stores::Stores;
use ferry_transform::{ObjectReport, Outcome, Transform, TransformConfig};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::json;

static NEXT: AtomicU32 = AtomicU32::new(1);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn setup(tcfg: TransformConfig) -> (TestDb, Transform) {
    let db = fresh_db().await;
    for t in ["acme", "globex"] {
        ferry_shared::db::add_tenant(&db.pool, t, t).await.unwrap();
    }
    let cfg = config(&[]);
    let t = Transform::with_pool(&cfg, tcfg, db.pool.clone(), "transform")
        .unwrap()
        .with_stores(Stores::with_options(store_options()));
    (db, t)
}

/// A CloudEvent as one JSON line.
fn ce(tenant: &str, id: &str, ty: &str) -> String {
    json!({
        "specversion": "1.0", "id": id, "source": "/tracker", "type": ty,
        "time": (chrono::Utc::now() - chrono::Duration::seconds(30)).to_rfc3339(),
        "tenantid": tenant, "userid": "u1", "data": {"path": "/home"}
    })
    .to_string()
}

fn ndjson(n: usize, tag: &str) -> Vec<u8> {
    let mut out = String::new();
    for i in 0..n {
        out.push_str(&ce("acme", &format!("{tag}-{i}"), "page.viewed"));
        out.push('\n');
    }
    out.into_bytes()
}

fn json_array(n: usize, tag: &str) -> Vec<u8> {
    let items: Vec<String> = (0..n)
        .map(|i| ce("globex", &format!("{tag}-{i}"), "product.viewed"))
        .collect();
    format!("[\n  {}\n]\n", items.join(",\n  ")).into_bytes()
}

/// An access-log CSV (rule `access-log`): `n` rows plus one static asset and one health check.
fn access_csv(n: usize, tag: &str) -> Vec<u8> {
    let now = chrono::Utc::now() - chrono::Duration::seconds(30);
    let mut out = String::from("ts,tenant,method,path,status,user,session,request_id\n");
    for i in 0..n {
        let (method, path) = match i % 3 {
            0 => ("GET", format!("/api/v1/tasks/{i}")),
            1 => ("GET", "/products/p-7".to_owned()),
            _ => ("GET", "/\"quoted, path\"".to_owned()),
        };
        let path = if path.contains(',') {
            "\"/\"\"quoted, path\"\"\"".to_owned()
        } else {
            path
        };
        out.push_str(&format!(
            "{},acme,{method},{path},200,u{i},s1,{tag}-{i}\n",
            now.to_rfc3339()
        ));
    }
    out.push_str(&format!(
        "{},acme,GET,/app.css,200,u1,s1,{tag}-css\n",
        now.to_rfc3339()
    ));
    out.push_str(&format!(
        "{},acme,GET,/healthz,200,,,{tag}-hz\n",
        now.to_rfc3339()
    ));
    out.into_bytes()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 3).unwrap()
}

/// Uploads through object_store and returns the notification a platform would send.
async fn put(t: &Transform, store: &str, key: &str, bytes: Vec<u8>) -> BlobCreated {
    let client = t.stores().get(store).unwrap();
    let size = bytes.len() as u64;
    let r = client
        .put(&ObjectPath::parse(key).unwrap(), PutPayload::from(bytes))
        .await
        .unwrap_or_else(|e| panic!("upload {store}/{key}: {e}"));
    BlobCreated {
        store: store.to_owned(),
        key: key.to_owned(),
        size: Some(size),
        etag: r.e_tag,
        version: r.version,
        sequencer: None,
    }
}

fn local_store() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    (dir, url)
}

async fn events_of(db: &TestDb, source_like: &str) -> i64 {
    count(
        &db.pool,
        &format!("SELECT count(*) FROM events WHERE event_id LIKE '{source_like}%'"),
    )
    .await
}

/// Loads every format in every compression from `store`; checks rows, format and compression.
async fn every_format_and_compression(db: &TestDb, t: &Transform, store: &str) {
    let files: Vec<(&str, &str, Vec<u8>, i64)> = vec![
        ("tracker/a.ndjson", "none", ndjson(40, "nd-plain"), 40),
        (
            "tracker/b.ndjson.gz",
            "gzip",
            gzip(&ndjson(41, "nd-gz")),
            41,
        ),
        ("tracker/c.bin", "zstd", zstd(&ndjson(42, "nd-zst")), 42),
        ("dumps/d.json", "none", json_array(30, "js-plain"), 30),
        (
            "dumps/e.json.gz",
            "gzip",
            gzip(&json_array(31, "js-gz")),
            31,
        ),
        ("dumps/f", "zstd", zstd(&json_array(32, "js-zst")), 32),
        ("access-logs/g.csv", "none", access_csv(20, "csv-plain"), 20),
        (
            "access-logs/h.csv.gz",
            "gzip",
            gzip(&access_csv(21, "csv-gz")),
            21,
        ),
        (
            "access-logs/i red.zst",
            "zstd",
            zstd(&access_csv(22, "csv-zst")),
            22,
        ),
    ];
    for (key, compression, bytes, expected) in files {
        let blob = put(t, store, key, bytes).await;
        let r = t.process(&blob).await.unwrap();
        assert_eq!(r.outcome, Outcome::Loaded, "{key}");
        assert_eq!(r.loaded as i64, expected, "{key}: {r:?}");
        assert_eq!(r.quarantined_total(), 0, "{key}: {r:?}");
        let (format, comp): (String, String) = sqlx::query_as(
            "SELECT format, compression FROM blob_objects WHERE store = $1 AND key = $2",
        )
        .bind(store)
        .bind(key)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(comp, compression, "{key}");
        let want = match &key[..2] {
            "tr" => "ndjson",
            "du" => "json",
            _ => "csv",
        };
        assert_eq!(format, want, "{key}");
    }
    // Static assets and health checks were dropped and counted, per object.
    let dropped: serde_json::Value = sqlx::query_scalar(
        "SELECT dropped_by FROM blob_objects WHERE store = $1 AND key = 'access-logs/g.csv'",
    )
    .bind(store)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(dropped, json!({"health-checks": 1, "static-assets": 1}));
    // The URL path classified the type.
    let tasks = count(
        &db.pool,
        "SELECT count(*) FROM events WHERE type = 'task.viewed' AND event_id LIKE 'csv-plain-%'",
    )
    .await;
    assert_eq!(tasks, 7);
    assert_eq!(
        events_of(db, "").await,
        40 + 41 + 42 + 30 + 31 + 32 + 20 + 21 + 22
    );
}

#[tokio::test]
async fn every_format_and_compression_from_local_files() {
    let (db, t) = setup(TransformConfig::default()).await;
    let (_dir, store) = local_store();
    every_format_and_compression(&db, &t, &store).await;
}

#[tokio::test]
async fn every_format_and_compression_from_s3_on_moto() {
    let store = s3_bucket(&unique("formats"), false).await;
    let (db, t) = setup(TransformConfig::default()).await;
    every_format_and_compression(&db, &t, &store).await;
}

#[tokio::test]
async fn every_format_and_compression_from_azure_blob_on_azurite() {
    let store = az_container(&unique("formats")).await;
    let (db, t) = setup(TransformConfig::default()).await;
    every_format_and_compression(&db, &t, &store).await;
}

#[tokio::test]
async fn the_same_notification_three_times_loads_once() {
    let store = s3_bucket(&unique("thrice"), false).await;
    let (db, t) = setup(TransformConfig::default()).await;
    let blob = put(
        &t,
        &store,
        "tracker/x.ndjson.gz",
        gzip(&ndjson(500, "thrice")),
    )
    .await;
    let t = Arc::new(t);
    // Two deliveries at the same moment, then a late third one.
    let (a, b) = tokio::join!(t.process(&blob), t.process(&blob));
    let c = t.process(&blob).await.unwrap();
    let mut outcomes = vec![a.unwrap().outcome, b.unwrap().outcome, c.outcome];
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(
        outcomes,
        vec![
            Outcome::AlreadyApplied,
            Outcome::AlreadyApplied,
            Outcome::Loaded
        ]
    );
    assert_eq!(events_of(&db, "thrice-").await, 500);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM ingest_ledger").await,
        1
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM blob_objects").await,
        1
    );
}

#[tokio::test]
async fn a_new_version_of_a_key_is_a_new_unit_and_an_older_notification_is_ignored() {
    let store = s3_bucket(&unique("versions"), true).await;
    let (db, t) = setup(TransformConfig::default()).await;
    let key = "tracker/daily.ndjson";
    let mut v1 = put(&t, &store, key, ndjson(10, "v1")).await;
    let mut v2 = put(&t, &store, key, ndjson(15, "v2")).await;
    assert!(
        v1.version.is_some() && v1.version != v2.version,
        "versioned bucket"
    );
    v1.sequencer = Some("0055AED6DCD90281E5".into());
    v2.sequencer = Some("0055AED6DCD90281F7".into());

    // In order: two units, both loaded.
    assert_eq!(t.process(&v1).await.unwrap().outcome, Outcome::Loaded);
    assert_eq!(t.process(&v2).await.unwrap().outcome, Outcome::Loaded);
    assert_eq!(events_of(&db, "v1-").await, 10);
    assert_eq!(events_of(&db, "v2-").await, 15);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM ingest_ledger").await,
        2
    );

    // Out of order on another key: the newer version first, then the late older one.
    let key = "tracker/late.ndjson";
    let mut old = put(&t, &store, key, ndjson(7, "old")).await;
    let mut new = put(&t, &store, key, ndjson(9, "new")).await;
    old.sequencer = Some("9A".into());
    new.sequencer = Some("0100".into()); // shorter strings compare after left-padding
    assert_eq!(t.process(&new).await.unwrap().outcome, Outcome::Loaded);
    assert_eq!(t.process(&old).await.unwrap().outcome, Outcome::Stale);
    assert_eq!(
        t.process(&old).await.unwrap().outcome,
        Outcome::AlreadyApplied
    );
    assert_eq!(events_of(&db, "old-").await, 0);
    assert_eq!(events_of(&db, "new-").await, 9);
    let stale = count(
        &db.pool,
        "SELECT count(*) FROM blob_objects WHERE outcome = 'stale' AND detail LIKE '%older%'",
    )
    .await;
    assert_eq!(stale, 1);
}

#[tokio::test]
async fn a_crash_midway_through_a_large_file_loses_nothing_and_duplicates_nothing() {
    let tcfg = TransformConfig {
        chunk_records: 5_000,
        ..TransformConfig::default()
    };
    let (db, t) = setup(tcfg.clone()).await;
    let (_dir, store) = local_store();
    let mut body = ndjson(60_000, "big");
    body.extend_from_slice(b"{not json}\n");
    let blob = put(&t, &store, "tracker/big.ndjson.gz", gzip(&body)).await;

    let chunks = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&chunks);
    let crashing = Transform::with_pool(&config(&[]), tcfg, db.pool.clone(), "transform")
        .unwrap()
        .with_faults(Arc::new(move |p| {
            p == CrashPoint::MidObject && seen.fetch_add(1, Ordering::SeqCst) == 5
        }));
    let err = crashing.process(&blob).await.unwrap_err();
    assert!(err.to_string().contains("MidObject"), "{err}");
    assert_eq!(
        chunks.load(Ordering::SeqCst),
        6,
        "crashed after 6 of 13 chunks"
    );
    // Nothing of the object is visible: no events, no quarantine rows, no ledger row.
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 0);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM quarantine").await, 0);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM ingest_ledger").await,
        0
    );

    // The platform redelivers: the whole object loads exactly once.
    let r = t.process(&blob).await.unwrap();
    assert_eq!(
        (r.records, r.loaded, r.quarantined_total()),
        (60_001, 60_000, 1)
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 60_000);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM quarantine").await, 1);
    assert_eq!(
        count(&db.pool, "SELECT position::bigint FROM quarantine").await,
        60_001,
        "the bad line keeps its line number"
    );
    assert_eq!(
        t.process(&blob).await.unwrap().outcome,
        Outcome::AlreadyApplied
    );
}

async fn quarantined(db: &TestDb, reason: &str) -> Vec<(Option<i32>, String, Vec<u8>)> {
    sqlx::query_as(
        "SELECT position, detail, raw FROM quarantine WHERE reason = $1 ORDER BY position",
    )
    .bind(reason)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_thousand_lines_with_ten_bad_ones_load_990_and_quarantine_10_with_line_numbers() {
    let (db, t) = setup(TransformConfig::default()).await;
    let (_dir, store) = local_store();
    let bad_lines = [17usize, 100, 101, 250, 333, 500, 640, 777, 901, 1000];
    let mut body = Vec::new();
    for line in 1..=1000usize {
        let text = match bad_lines.iter().position(|b| *b == line) {
            None => ce("acme", &format!("ok-{line}"), "page.viewed"),
            Some(0) => "{\"truncated".to_owned(),
            Some(1) => ce("acme", "", "page.viewed"), // missing id
            Some(2) => ce("nobody", &format!("x-{line}"), "page.viewed"),
            Some(3) => "[1,2,3]".to_owned(),
            Some(4) => ce("acme", &format!("t-{line}"), "page.viewed")
                .replace("\"time\":\"", "\"time\":\"yesterday "),
            Some(5) => ce("acme", &format!("s-{line}"), "page.viewed").replace("1.0", "0.3"),
            _ => String::new(), // replaced by bytes below
        };
        let mut bytes = text.into_bytes();
        if line == 640 || line == 777 || line == 901 {
            bytes = b"{\"id\":\"bad\xff\xfe\"}".to_vec();
        }
        if line == 1000 {
            bytes = vec![b'{'; 300 * 1024]; // longer than FERRY_MAX_EVENT_BYTES
        }
        body.extend_from_slice(&bytes);
        body.push(b'\n');
    }
    let blob = put(&t, &store, "tracker/mixed.ndjson.gz", gzip(&body)).await;
    let r = t.process(&blob).await.unwrap();
    assert_eq!(
        (r.records, r.loaded, r.quarantined_total()),
        (1000, 990, 10),
        "{r:?}"
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 990);
    let rows: Vec<(i32, String, String)> =
        sqlx::query_as("SELECT position, reason, unit FROM quarantine ORDER BY position")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let lines: Vec<usize> = rows.iter().map(|(p, _, _)| *p as usize).collect();
    assert_eq!(lines, bad_lines);
    let reasons: Vec<&str> = rows.iter().map(|(_, r, _)| r.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "invalid_json",
            "missing_attribute",
            "unknown_tenant",
            "invalid_json",
            "invalid_time",
            "wrong_specversion",
            "undecodable",
            "undecodable",
            "undecodable",
            "oversize"
        ]
    );
    assert!(rows
        .iter()
        .all(|(_, _, u)| u.contains("tracker/mixed.ndjson.gz")));
    let raw = &quarantined(&db, "undecodable").await[0].2;
    assert_eq!(
        raw.as_slice(),
        b"{\"id\":\"bad\xff\xfe\"}",
        "raw bytes kept"
    );
    let counted: (i64, i64, i64) =
        sqlx::query_as("SELECT records, loaded, quarantined FROM blob_objects")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(counted, (1000, 990, 10));
}

#[tokio::test]
async fn csv_rows_with_missing_fields_or_the_wrong_shape_are_quarantined_alone() {
    let (db, t) = setup(TransformConfig::default()).await;
    let (_dir, store) = local_store();
    let ts = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let csv = format!(
        "ts,tenant,method,path,status,user,session,request_id\n\
         {ts},acme,GET,/a,200,u,s,r1\n\
         ,acme,GET,/b,200,u,s,r2\n\
         {ts},acme,GET,/c,200\n\
         not-a-time,acme,GET,/d,200,u,s,r4\n\
         {ts},acme,GET,/e,200,u,s,r5\n"
    );
    let blob = put(&t, &store, "access-logs/rows.csv", csv.into_bytes()).await;
    let r = t.process(&blob).await.unwrap();
    assert_eq!(r.loaded, 2);
    let missing = quarantined(&db, "missing_field").await;
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].0, Some(3), "line 3 (the header is line 1)");
    assert!(missing[0].1.contains("\"ts\""), "{}", missing[0].1);
    assert_eq!(missing[0].2, b",acme,GET,/b,200,u,s,r2");
    let shape = quarantined(&db, "malformed_record").await;
    assert_eq!((shape.len(), shape[0].0), (1, Some(4)));
    assert!(
        shape[0].1.contains("5 fields; the header has 8"),
        "{}",
        shape[0].1
    );
    let time = quarantined(&db, "invalid_time").await;
    assert_eq!((time.len(), time[0].0), (1, Some(5)));
}

#[tokio::test]
async fn records_no_type_rule_classifies_are_quarantined_as_unclassified() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("sources.toml");
    std::fs::write(
        &rules,
        r#"
        [[source]]
        name = "strict-log"
        prefix = "strict/"
        [source.fields]
        time = "ts"
        tenantid = "tenant"
        [source.set]
        source = "urn:strict"
        [[source.classify]]
        when = { path = '^/api/' }
        type = "api.called"
        "#,
    )
    .unwrap();
    let (db, t) = setup(TransformConfig {
        rules_file: Some(rules),
        ..TransformConfig::default()
    })
    .await;
    let (_dir, store) = local_store();
    let ts = chrono::Utc::now().to_rfc3339();
    let csv = format!("ts,tenant,path\n{ts},acme,/api/x\n{ts},acme,/elsewhere\n");
    let blob = put(&t, &store, "strict/a.csv", csv.into_bytes()).await;
    let r = t.process(&blob).await.unwrap();
    assert_eq!(r.loaded, 1);
    assert_eq!(r.quarantined.get(&RejectReason::Unclassified), Some(&1));
    // Without an id column, ids derive from the key and line: stable across redeliveries.
    let id: String = sqlx::query_scalar("SELECT event_id FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(id, "strict/a.csv:2");
}

#[tokio::test]
async fn corrupt_archives_unknown_formats_and_unruled_objects_are_quarantined_whole() {
    let (db, t) = setup(TransformConfig {
        chunk_records: 100,
        ..TransformConfig::default()
    })
    .await;
    let (_dir, store) = local_store();
    // A gzip file cut in the middle: its first chunks were already staged when the damage
    // shows, and none of them may remain.
    let whole = gzip(&ndjson(5_000, "cut"));
    let cut = whole[..whole.len() / 2].to_vec();
    let mut flipped = zstd(&ndjson(3_000, "flip"));
    flipped.truncate(flipped.len() * 2 / 3);
    let cases: Vec<(&str, Vec<u8>, RejectReason)> = vec![
        ("tracker/cut.gz", cut, RejectReason::CorruptArchive),
        (
            "tracker/truncated.zst",
            flipped,
            RejectReason::CorruptArchive,
        ),
        (
            "tracker/archive.zip",
            b"PK\x03\x04rest-of-zip".to_vec(),
            RejectReason::UnknownFormat,
        ),
        (
            "tracker/image.png",
            b"\x89PNG\r\n\x1a\n\x00\x00".to_vec(),
            RejectReason::UnknownFormat,
        ),
        (
            "tracker/plain.txt",
            b"hello,world\n1,2\n".to_vec(),
            RejectReason::UnknownFormat,
        ),
        (
            "access-logs/wrong.csv",
            ndjson(3, "wrong"),
            RejectReason::UnknownFormat,
        ),
        (
            "elsewhere/x.ndjson",
            ndjson(3, "norule"),
            RejectReason::NoSourceRule,
        ),
    ];
    for (key, bytes, reason) in cases {
        let blob = put(&t, &store, key, bytes).await;
        let r = t.process(&blob).await.unwrap();
        assert_eq!(r.outcome, Outcome::Quarantined(reason), "{key}");
        // Acknowledged for good: a redelivery has no effect.
        let again: ObjectReport = t.process(&blob).await.unwrap();
        assert_eq!(again.outcome, Outcome::AlreadyApplied, "{key}");
        let (n, detail): (i64, String) = sqlx::query_as(
            "SELECT count(*), min(detail) FROM quarantine WHERE reason = $1 AND unit LIKE '%' || $2 || '%'",
        )
        .bind(reason.as_str())
        .bind(key)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(n, 1, "{key}");
        assert!(detail.contains(key), "{key}: {detail}");
    }
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 0);
    let head: Vec<u8> =
        sqlx::query_scalar("SELECT raw FROM quarantine WHERE unit LIKE '%archive.zip%'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        head, b"PK\x03\x04rest-of-zip",
        "the object's first bytes are kept"
    );
}

#[tokio::test]
async fn a_truncated_json_array_keeps_its_complete_elements() {
    let (db, t) = setup(TransformConfig::default()).await;
    let (_dir, store) = local_store();
    let mut body = json_array(5, "arr");
    body.truncate(body.len() - 40); // cut inside the last element
    let blob = put(&t, &store, "dumps/cut.json", body).await;
    let r = t.process(&blob).await.unwrap();
    assert_eq!(r.loaded, 4);
    let bad = quarantined(&db, "malformed_record").await;
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].0, Some(5), "element 5");
    assert!(bad[0].1.contains("without `]`"), "{}", bad[0].1);
}

#[tokio::test]
async fn unreadable_notifications_are_quarantined_and_acknowledged() {
    let (db, t) = setup(TransformConfig::default()).await;
    let body = br#"{"hello": "world"}"#;
    let r = ferry_runtime::blob::handle_notice(&t, "sqs:m-1".into(), body).await;
    assert!(r.is_ok());
    let again = ferry_runtime::blob::handle_notice(&t, "sqs:m-1".into(), body).await;
    assert!(again.is_ok());
    let rows = quarantined(&db, "invalid_notification").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].2, body);
}

#[tokio::test]
async fn a_missing_object_is_acknowledged_without_effect() {
    let (db, t) = setup(TransformConfig::default()).await;
    let (_dir, store) = local_store();
    let blob = BlobCreated {
        store,
        key: "tracker/never-written.ndjson".into(),
        ..BlobCreated::default()
    };
    assert_eq!(t.process(&blob).await.unwrap().outcome, Outcome::Gone);
    // Overwritten since the notification: the ETag no longer matches.
    let mut old = put(&t, &blob.store, "tracker/over.ndjson", ndjson(2, "over1")).await;
    put(
        &t,
        &blob.store,
        "tracker/over.ndjson",
        ndjson(3, "over2-longer"),
    )
    .await;
    old.etag = Some("0-0-0".into());
    assert_eq!(t.process(&old).await.unwrap().outcome, Outcome::Gone);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 0);
}

#[tokio::test]
async fn an_unreachable_store_is_retried_not_quarantined() {
    let (db, _) = setup(TransformConfig::default()).await;
    let port = ferry_local::postgres::free_port().unwrap();
    let options = vec![
        (
            "aws_endpoint".to_owned(),
            format!("http://127.0.0.1:{port}"),
        ),
        ("aws_allow_http".to_owned(), "true".to_owned()),
        ("aws_access_key_id".to_owned(), "x".to_owned()),
        ("aws_secret_access_key".to_owned(), "x".to_owned()),
        ("aws_region".to_owned(), "us-east-1".to_owned()),
        ("ferry_max_retries".to_owned(), "0".to_owned()),
    ];
    let t = Transform::with_pool(
        &config(&[]),
        TransformConfig::default(),
        db.pool.clone(),
        "t",
    )
    .unwrap()
    .with_stores(Stores::with_options(options));
    let blob = BlobCreated {
        store: "s3://nowhere".into(),
        key: "tracker/x.ndjson".into(),
        etag: Some("abc".into()),
        ..BlobCreated::default()
    };
    let err = t.process(&blob).await.unwrap_err();
    assert!(err.to_string().contains("object store"), "{err}");
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM ingest_ledger").await,
        0
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM quarantine").await, 0);
}

#[tokio::test]
async fn backfill_over_a_prefix_of_100_files_is_idempotent() {
    let store = s3_bucket(&unique("backfill"), false).await;
    let (db, t) = setup(TransformConfig::default()).await;
    for i in 0..100 {
        let body = gzip(&ndjson(20, &format!("bf{i:03}")));
        put(
            &t,
            &store,
            &format!("tracker/2026/11/{i:03}.ndjson.gz"),
            body,
        )
        .await;
    }
    put(
        &t,
        &store,
        "elsewhere/not-in-prefix.ndjson",
        ndjson(5, "outside"),
    )
    .await;
    let mut seen = 0;
    let first = ferry_local::bucket::backfill(&t, &store, "tracker/2026/", |i, n, _, r| {
        assert!(r.is_ok());
        assert_eq!(n, 100);
        seen = i;
    })
    .await
    .unwrap();
    assert_eq!(seen, 100, "progress reported for every object");
    assert_eq!(
        (first.objects, first.loaded_objects, first.events_loaded),
        (100, 100, 2_000)
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 2_000);

    let second = ferry_local::bucket::backfill(&t, &store, "tracker/2026/", |_, _, _, _| {})
        .await
        .unwrap();
    assert_eq!(
        (second.objects, second.already_applied, second.events_loaded),
        (100, 100, 0)
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 2_000);
}

#[tokio::test]
async fn the_bucket_watcher_loads_new_and_changed_files_once() {
    let (db, t) = setup(TransformConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let write = |key: &str, body: &[u8]| {
        let path = dir.path().join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    };
    write("tracker/a.ndjson", &ndjson(3, "wa"));
    write("tracker/b.ndjson.part", &ndjson(3, "partial")); // still being written
    let mut watcher = ferry_local::bucket::Watcher::new(dir.path());
    let first = watcher.scan(&t).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(watcher.scan(&t).await.unwrap().is_empty(), "nothing new");
    std::fs::rename(
        dir.path().join("tracker/b.ndjson.part"),
        dir.path().join("tracker/b.ndjson"),
    )
    .unwrap();
    // A new version of a.ndjson (its events carry new times, so all five are new events).
    write("tracker/a.ndjson", &ndjson(5, "wa"));
    let second = watcher.scan(&t).await.unwrap();
    assert_eq!(second.len(), 2);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM events").await,
        3 + 5 + 3
    );
    // A fresh watcher (the process restarted) finds everything already applied.
    let again = ferry_local::bucket::Watcher::new(dir.path())
        .scan(&t)
        .await
        .unwrap();
    assert!(again.iter().all(|r| r.outcome == Outcome::AlreadyApplied));
}

#[tokio::test]
async fn the_ferry_backfill_command_prints_progress_and_a_summary() {
    let db = fresh_db().await;
    ferry_shared::db::add_tenant(&db.pool, "acme", "")
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let bucket = state.path().join("bucket");
    for i in 0..3 {
        let path = bucket.join(format!("tracker/{i}.ndjson"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, ndjson(4, &format!("cli{i}"))).unwrap();
    }
    let run = || {
        std::process::Command::new(crate::harness::bin("ferry"))
            .args(["backfill", bucket.join("tracker").to_str().unwrap()])
            .env("DATABASE_URL", &db.url)
            .env("FERRY_STATE_DIR", state.path())
            .env_remove("FERRY_BUCKET_DIR")
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let progress = String::from_utf8_lossy(&first.stderr);
    assert!(
        progress.contains("[3/3] tracker/2.ndjson: loaded 4 of 4 records"),
        "{progress}"
    );
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(out.contains("3 objects (3 loaded"), "{out}");
    assert!(out.contains("12 events loaded"), "{out}");
    let second = run();
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(
        out.contains("3 objects (0 loaded, 3 already applied"),
        "{out}"
    );
    assert!(out.contains(" 0 events loaded"), "{out}");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 12);
}

#[tokio::test]
async fn a_file_spanning_many_partitions_loads_chunk_by_chunk_in_one_transaction() {
    // Later chunks need partitions that do not exist yet while the object's transaction holds
    // its inserts open: they are attached from another connection without waiting for it.
    let (db, t) = setup(TransformConfig {
        chunk_records: 1_000,
        ..TransformConfig::default()
    })
    .await;
    // The functions' 5-minute slots, not the hour `ferry migrate` records on one server.
    crate::harness::forget_partition_width(&db.pool).await;
    let (_dir, store) = local_store();
    let start = chrono::Utc::now() - chrono::Duration::hours(3);
    let mut body = String::new();
    for i in 0..12_000i64 {
        let time = start + chrono::Duration::seconds(i * 15 / 20);
        body.push_str(
            &json!({"specversion": "1.0", "id": format!("span-{i}"), "source": "/tracker",
                    "type": "page.viewed", "time": time.to_rfc3339(), "tenantid": "acme"})
            .to_string(),
        );
        body.push('\n');
    }
    let before = count(
        &db.pool,
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass",
    )
    .await;
    let blob = put(&t, &store, "tracker/span.ndjson", body.into_bytes()).await;
    let r = tokio::time::timeout(std::time::Duration::from_secs(60), t.process(&blob))
        .await
        .expect("no lock wait")
        .unwrap();
    assert_eq!(r.loaded, 12_000);
    let after = count(
        &db.pool,
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass",
    )
    .await;
    // 150 minutes of events: 30 partitions of 5 minutes (on Citus, where the database records
    // a day, the one or two days they touch).
    let citus = ferry_local::citus::is_citus(&db.pool).await.unwrap();
    let width = crate::harness::partition_width(&db.pool, 300).await;
    assert_eq!(width, if citus { 86_400 } else { 300 });
    let slots: std::collections::BTreeSet<i64> = (0..12_000i64)
        .map(|i| {
            ferry_shared::db::slot_start(start + chrono::Duration::seconds(i * 15 / 20), width)
        })
        .collect();
    assert!(slots.len() >= 30 || citus, "{slots:?}");
    assert!(
        after - before >= slots.len() as i64,
        "partitions {before} -> {after}"
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 12_000);
}

#[tokio::test]
async fn keys_with_characters_object_store_would_escape_load_and_backfill() {
    let store = s3_bucket(&unique("keys"), false).await;
    let (db, t) = setup(TransformConfig::default()).await;
    let key = "tracker/report~v2 [1]%.ndjson";
    let blob = put(&t, &store, key, ndjson(3, "odd")).await;
    let r = t.process(&blob).await.unwrap();
    assert_eq!((r.outcome, r.loaded), (Outcome::Loaded, 3));
    let listed = ferry_local::bucket::list(&t, &store, "tracker/")
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, key, "listing gives the key as stored");
    let again = ferry_local::bucket::backfill(&t, &store, "tracker/", |_, _, _, _| {})
        .await
        .unwrap();
    assert_eq!(again.already_applied, 1);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 3);
}

#[tokio::test]
async fn a_record_the_database_refuses_is_quarantined_alone() {
    let (db, t) = setup(TransformConfig::default()).await;
    let (_dir, store) = local_store();
    // Valid JSON, a valid CloudEvent, but jsonb refuses a number beyond numeric's range.
    let refused = ce("acme", "dbr-bad", "page.viewed").replace("\"/home\"", "1e200000");
    let mut body = json_array(50, "dbr");
    let end = body.iter().rposition(|b| *b == b']').unwrap();
    body.truncate(end);
    body.extend_from_slice(format!(",\n  {refused}\n]\n").as_bytes());
    let blob = put(&t, &store, "dumps/refused.json", body).await;
    let r = t.process(&blob).await.unwrap();
    assert_eq!(
        (r.outcome.clone(), r.loaded),
        (Outcome::Loaded, 50),
        "{r:?}"
    );
    let rows = quarantined(&db, "database_rejected").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, Some(51), "element 51");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 50);
}

#[tokio::test]
async fn an_unreadable_notification_with_a_message_id_of_kilobytes_is_quarantined_once() {
    use ferry_shared::BlobHandler;
    let (db, t) = setup(TransformConfig::default()).await;
    let unit = format!("queue:{}", "m".repeat(10_000));
    for _ in 0..2 {
        t.unreadable(
            unit.clone(),
            b"not a notification".to_vec(),
            "unreadable".into(),
        )
        .await
        .expect("acknowledged, not retried forever");
    }
    let units: Vec<String> = sqlx::query_scalar("SELECT unit FROM quarantine")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(units.len(), 1, "a redelivery is recognised");
    assert!(
        units[0].starts_with("queue:mmm") && units[0].len() < 600,
        "{}",
        units[0]
    );
}
