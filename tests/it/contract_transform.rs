//! Contract tests of the real `transform` binary: in Lambda mode against a loopback Runtime API
//! (S3 notifications through SQS, the `s3:TestEvent`, direct `S3Event`, EventBridge
//! `Object Created`), and in Azure mode with host-shaped envelopes (Event Grid through a storage
//! queue, the EventGrid-sourced blob trigger). Objects live on moto (S3) and Azurite (Azure).

use crate::harness::{
    az_container, count, fill, fresh_db, s3_bucket, spawn_azure, spawn_function, store_env,
    store_options, unreachable_database_url, RuntimeApi, TestDb,
};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::json;

fn lines(tag: &str, n: usize) -> Vec<u8> {
    let mut out = String::new();
    for i in 0..n {
        out.push_str(
            &json!({"specversion": "1.0", "id": format!("{tag}-{i}"), "source": "/tracker",
                    "type": "page.viewed", "time": chrono::Utc::now().to_rfc3339(),
                    "tenantid": "acme"})
            .to_string(),
        );
        out.push('\n');
    }
    out.into_bytes()
}

struct Uploaded {
    etag: String,
    version: String,
    size: String,
}

async fn upload(store: &str, key: &str, body: Vec<u8>) -> Uploaded {
    let stores = ferry_transform::stores::Stores::with_options(store_options());
    let size = body.len().to_string();
    let r = stores
        .get(store)
        .unwrap()
        .put(&ObjectPath::parse(key).unwrap(), PutPayload::from(body))
        .await
        .unwrap();
    Uploaded {
        etag: r.e_tag.unwrap_or_default().trim_matches('"').to_owned(),
        version: r.version.unwrap_or_default(),
        size,
    }
}

async fn tenant_db() -> TestDb {
    let db = fresh_db().await;
    ferry_shared::db::add_tenant(&db.pool, "acme", "Acme")
        .await
        .unwrap();
    db
}

fn lambda(api: &RuntimeApi, database_url: &str) -> tokio::process::Child {
    let mut env: Vec<(String, String)> = api
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    env.extend(store_env());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    spawn_function("transform", database_url, &env)
}

#[tokio::test]
async fn lambda_mode_s3_via_sqs_test_event_direct_s3_and_eventbridge() {
    let bucket_store = s3_bucket("contract-lambda", false).await;
    let bucket = bucket_store.trim_start_matches("s3://");
    let db = tenant_db().await;
    let mut api = RuntimeApi::start().await;
    let _f = lambda(&api, &db.url);

    // S3 → SQS, with the s3:TestEvent in the same batch; a key with a space.
    let up = upload(&bucket_store, "tracker/red flower.ndjson", lines("sqs", 12)).await;
    let mut batch = fill(
        "s3_via_sqs.json",
        &[
            ("message_id", "m-1"),
            ("bucket", bucket),
            ("key_encoded", "tracker/red+flower.ndjson"),
            ("etag", &up.etag),
            ("size", &up.size),
            ("sequencer", "0055AED6DCD90281E5"),
            ("version", &up.version),
        ],
    );
    let test_event = fill(
        "s3_test_event_via_sqs.json",
        &[("message_id", "m-test"), ("bucket", bucket)],
    );
    let records = batch["Records"].as_array_mut().unwrap();
    records.push(test_event["Records"][0].clone());
    for _ in 0..2 {
        let (kind, body) = api.invoke(batch.clone()).await;
        assert_eq!(kind, "response");
        assert_eq!(body, json!({"batchItemFailures": []}));
    }
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 12);

    // Direct S3Event.
    let up = upload(&bucket_store, "tracker/direct.ndjson", lines("direct", 5)).await;
    let direct = fill(
        "s3_direct.json",
        &[
            ("bucket", bucket),
            ("key_encoded", "tracker/direct.ndjson"),
            ("etag", &up.etag),
            ("size", &up.size),
            ("sequencer", "0055AED6DCD90281E6"),
            ("version", &up.version),
        ],
    );
    let (kind, _) = api.invoke(direct).await;
    assert_eq!(kind, "response");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 17);

    // EventBridge "Object Created": keys arrive unencoded.
    let up = upload(&bucket_store, "tracker/eb 1+1.ndjson", lines("eb", 4)).await;
    let eb = fill(
        "eventbridge_object_created.json",
        &[
            ("bucket", bucket),
            ("key", "tracker/eb 1+1.ndjson"),
            ("etag", &up.etag),
            ("size", &up.size),
            ("sequencer", "0055AED6DCD90281E7"),
            ("version", &up.version),
        ],
    );
    let (kind, _) = api.invoke(eb.clone()).await;
    assert_eq!(kind, "response");
    let (kind, _) = api.invoke(eb).await;
    assert_eq!(kind, "response");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 21);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM blob_objects").await,
        3
    );
}

#[tokio::test]
async fn lambda_mode_reports_failures_when_the_database_is_down() {
    let bucket_store = s3_bucket("contract-down", false).await;
    let bucket = bucket_store.trim_start_matches("s3://");
    let up = upload(&bucket_store, "tracker/x.ndjson", lines("down", 3)).await;
    let mut api = RuntimeApi::start().await;
    let _f = lambda(&api, &unreachable_database_url());
    let values = [
        ("message_id", "m-down"),
        ("bucket", bucket),
        ("key_encoded", "tracker/x.ndjson"),
        ("etag", up.etag.as_str()),
        ("size", up.size.as_str()),
        ("sequencer", "01"),
        ("version", ""),
    ];
    let (kind, body) = api.invoke(fill("s3_via_sqs.json", &values)).await;
    assert_eq!(kind, "response");
    assert_eq!(
        body,
        json!({"batchItemFailures": [{"itemIdentifier": "m-down"}]})
    );
    // A direct invocation fails as a whole, so Lambda retries it.
    let (kind, _) = api.invoke(fill("s3_direct.json", &values[1..])).await;
    assert_eq!(kind, "error");
}

async fn azure(database_url: &str) -> (tokio::process::Child, String) {
    let env = store_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    spawn_azure("transform", database_url, &env).await
}

#[tokio::test]
async fn azure_mode_event_grid_via_queue_and_the_event_grid_blob_trigger() {
    let store = az_container("contract-azure").await;
    let container = store.rsplit('/').next().unwrap().to_owned();
    let azurite = crate::harness::azurite().await;
    let db = tenant_db().await;
    let (_f, base) = azure(&db.url).await;
    let client = reqwest::Client::new();

    let up = upload(&store, "tracker/grid one.ndjson", lines("grid", 6)).await;
    let url = format!(
        "{}/devstoreaccount1/{container}/tracker/grid%20one.ndjson",
        azurite.endpoint
    );
    let envelope = fill(
        "azure_eventgrid_via_queue.json",
        &[
            ("container", &container),
            ("blob_name", "tracker/grid one.ndjson"),
            ("url", &url),
            ("etag", &up.etag),
            ("size", &up.size),
            ("sequencer", "00000000000004420000000000028963"),
        ],
    );
    for _ in 0..2 {
        let r = client
            .post(format!("{base}/transform"))
            .json(&envelope)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 6);

    let up = upload(&store, "tracker/trigger.ndjson", lines("trigger", 3)).await;
    let url = format!(
        "{}/devstoreaccount1/{container}/tracker/trigger.ndjson",
        azurite.endpoint
    );
    let envelope = fill(
        "azure_blob_trigger_eventgrid.json",
        &[
            ("url", &url),
            ("blob_name", "tracker/trigger.ndjson"),
            ("etag", &up.etag),
            ("size", &up.size),
        ],
    );
    let r = client
        .post(format!("{base}/transform-blob"))
        .json(&envelope)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 9);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM blob_objects WHERE store LIKE 'az://%'"
        )
        .await,
        2
    );
}

#[tokio::test]
async fn azure_mode_answers_500_while_the_database_is_down() {
    let store = az_container("contract-azure-down").await;
    let container = store.rsplit('/').next().unwrap().to_owned();
    let azurite = crate::harness::azurite().await;
    let up = upload(&store, "tracker/d.ndjson", lines("d", 2)).await;
    let (_f, base) = azure(&unreachable_database_url()).await;
    let url = format!(
        "{}/devstoreaccount1/{container}/tracker/d.ndjson",
        azurite.endpoint
    );
    let envelope = fill(
        "azure_eventgrid_via_queue.json",
        &[
            ("container", &container),
            ("blob_name", "tracker/d.ndjson"),
            ("url", &url),
            ("etag", &up.etag),
            ("size", &up.size),
            ("sequencer", "01"),
        ],
    );
    let r = reqwest::Client::new()
        .post(format!("{base}/transform"))
        .json(&envelope)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
}
