//! Blob-created notifications: every platform shape ferry accepts, read into [`BlobCreated`].
//!
//! | shape | where it comes from |
//! |---|---|
//! | S3 event notification (`Records[].s3`) | S3 → SQS body, or S3 → Lambda directly |
//! | `s3:TestEvent` | sent once when a bucket notification is configured: acknowledged |
//! | EventBridge `Object Created` (`source: aws.s3`) | S3 → EventBridge → Lambda (or → SQS) |
//! | Event Grid `Microsoft.Storage.BlobCreated` (Event Grid or CloudEvents schema, one event or an array) | Storage → Event Grid → storage queue |
//!
//! S3 notifications URL-encode keys form-style (`+` for a space, `%XX` otherwise); EventBridge
//! and Event Grid do not (Event Grid gives a URL, whose path is percent-encoded). Anything else is
//! [`Notice::Invalid`] and is quarantined by the handler rather than retried.

use ferry_shared::{BlobCreated, BlobHandler, Retry};
use percent_encoding::percent_decode_str;
use serde_json::Value;
use tracing::{info, warn};

/// What a notification asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Objects to load.
    Blobs(Vec<BlobCreated>),
    /// Nothing to do (a test event, a deletion): acknowledge.
    Ignore(String),
    /// Unreadable: quarantine and acknowledge.
    Invalid(String),
}

/// Reads a notification body (a queue message, or a direct Lambda payload).
pub fn read_notice(body: &[u8]) -> Notice {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Notice::Invalid(format!("notification is not JSON: {e}")),
    };
    read_value(&value)
}

fn read_value(value: &Value) -> Notice {
    if let Value::Array(events) = value {
        // Event Grid delivers arrays; a queue message normally holds one event.
        let mut blobs = Vec::new();
        for event in events {
            match read_value(event) {
                Notice::Blobs(b) => blobs.extend(b),
                Notice::Ignore(_) => {}
                invalid @ Notice::Invalid(_) => return invalid,
            }
        }
        return if blobs.is_empty() {
            Notice::Ignore("no BlobCreated event in the array".into())
        } else {
            Notice::Blobs(blobs)
        };
    }
    let str_at = |path: &str| value.pointer(path).and_then(Value::as_str);
    if str_at("/Event") == Some("s3:TestEvent") {
        return Notice::Ignore("s3:TestEvent".into());
    }
    if value.get("Records").is_some() {
        return s3_records(value);
    }
    if str_at("/source") == Some("aws.s3") || value.get("detail-type").is_some() {
        return eventbridge(value);
    }
    let event_type = str_at("/eventType").or_else(|| str_at("/type"));
    match event_type {
        Some("Microsoft.Storage.BlobCreated") => event_grid(value),
        Some(other) if other.starts_with("Microsoft.") => Notice::Ignore(other.to_owned()),
        _ => {
            Notice::Invalid("not an S3, EventBridge or Event Grid blob-created notification".into())
        }
    }
}

fn s3_records(value: &Value) -> Notice {
    let Some(records) = value.get("Records").and_then(Value::as_array) else {
        return Notice::Invalid("Records is not an array".into());
    };
    let mut blobs = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let name = r.get("eventName").and_then(Value::as_str).unwrap_or("");
        if !name.starts_with("ObjectCreated:") {
            continue;
        }
        let bucket = r.pointer("/s3/bucket/name").and_then(Value::as_str);
        let object = r.pointer("/s3/object");
        let key = object.and_then(|o| o.get("key")).and_then(Value::as_str);
        let (Some(bucket), Some(object), Some(key)) = (bucket, object, key) else {
            return Notice::Invalid(format!("record {i}: no s3.bucket.name or s3.object.key"));
        };
        let key = match form_decode(key) {
            Ok(k) => k,
            Err(e) => return Notice::Invalid(format!("record {i}: {e}")),
        };
        if !usable_bucket(bucket) || key.is_empty() {
            return Notice::Invalid(format!("record {i}: bucket {bucket:?} or an empty key"));
        }
        blobs.push(BlobCreated {
            store: format!("s3://{bucket}"),
            key,
            size: object.get("size").and_then(Value::as_u64),
            etag: text(object, "eTag"),
            version: text(object, "versionId"),
            sequencer: text(object, "sequencer"),
        });
    }
    if blobs.is_empty() {
        Notice::Ignore("no ObjectCreated record".into())
    } else {
        Notice::Blobs(blobs)
    }
}

fn eventbridge(value: &Value) -> Notice {
    let detail_type = value
        .get("detail-type")
        .and_then(Value::as_str)
        .unwrap_or("");
    if detail_type != "Object Created" {
        return Notice::Ignore(format!("EventBridge {detail_type:?}"));
    }
    let Some(detail) = value.get("detail") else {
        return Notice::Invalid("EventBridge event without detail".into());
    };
    let bucket = detail.pointer("/bucket/name").and_then(Value::as_str);
    let object = detail.get("object");
    let key = object.and_then(|o| o.get("key")).and_then(Value::as_str);
    let (Some(bucket), Some(object), Some(key)) = (bucket, object, key) else {
        return Notice::Invalid("EventBridge detail without bucket.name or object.key".into());
    };
    if !usable_bucket(bucket) || key.is_empty() {
        return Notice::Invalid(format!(
            "EventBridge detail: bucket {bucket:?} or an empty key"
        ));
    }
    Notice::Blobs(vec![BlobCreated {
        store: format!("s3://{bucket}"),
        key: key.to_owned(),
        size: object.get("size").and_then(Value::as_u64),
        etag: text(object, "etag"),
        version: text(object, "version-id"),
        sequencer: text(object, "sequencer"),
    }])
}

fn event_grid(value: &Value) -> Notice {
    let Some(data) = value.get("data") else {
        return Notice::Invalid("BlobCreated event without data".into());
    };
    let Some(url) = data.get("url").and_then(Value::as_str) else {
        return Notice::Invalid("BlobCreated event without data.url".into());
    };
    let (store, key) = match azure_blob_url(url) {
        Ok(v) => v,
        Err(e) => return Notice::Invalid(e),
    };
    Notice::Blobs(vec![BlobCreated {
        store,
        key,
        size: data.get("contentLength").and_then(Value::as_u64),
        etag: text(data, "eTag"),
        version: None,
        sequencer: text(data, "sequencer"),
    }])
}

/// A bucket name that makes a store URL naming that bucket and no other: not empty, and
/// without `/`, `\\`, whitespace or control characters (AWS allows none of them; a `/` would
/// move the rest of the name into the store's prefix: found by fuzzing).
fn usable_bucket(bucket: &str) -> bool {
    !bucket.is_empty()
        && !bucket
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_whitespace() || c.is_control())
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Decodes an S3 notification key: form-style URL encoding, `+` for a space.
pub fn form_decode(key: &str) -> Result<String, String> {
    let spaced = key.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|_| format!("object key {key:?} does not decode to UTF-8"))
}

/// Splits an Azure blob URL into the store (`az://<account>/<container>`) and the decoded blob
/// name. Accepts the service form (`https://<account>.blob.core.windows.net/<container>/<blob>`,
/// or `.dfs.` for Data Lake Storage)
/// and the path form of the emulator and custom domains
/// (`http://127.0.0.1:10000/<account>/<container>/<blob>`).
pub fn azure_blob_url(url: &str) -> Result<(String, String), String> {
    let bad = |why: &str| format!("blob URL {url:?}: {why}");
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| bad("not http(s)"))?;
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (host, path) = rest.split_once('/').ok_or_else(|| bad("no path"))?;
    let host = host.rsplit('@').next().unwrap_or(host);
    let hostname = host.split(':').next().unwrap_or(host);
    // Service form: the account is in the host name; path form: it is the first segment.
    let service = hostname
        .split_once(".blob.")
        .or_else(|| hostname.split_once(".dfs."));
    let (account, path) = match service {
        Some((account, _)) => (account, path),
        None => path.split_once('/').unwrap_or((path, "")),
    };
    let (container, blob) = path.split_once('/').unwrap_or((path, ""));
    if account.is_empty() || container.is_empty() || blob.is_empty() {
        return Err(bad("expected /<container>/<blob> under an account"));
    }
    let blob = percent_decode_str(blob)
        .decode_utf8()
        .map_err(|_| bad("blob name does not decode to UTF-8"))?;
    Ok((format!("az://{account}/{container}"), blob.into_owned()))
}

/// Runs one notification through a handler. `unit` names the delivery for quarantine.
pub async fn handle_notice<H: BlobHandler>(
    handler: &H,
    unit: String,
    body: &[u8],
) -> Result<(), Retry> {
    match read_notice(body) {
        Notice::Blobs(blobs) => {
            let mut retry = None;
            for blob in blobs {
                if let Err(r) = handler.created(blob).await {
                    retry = Some(r);
                }
            }
            retry.map_or(Ok(()), Err)
        }
        Notice::Ignore(what) => {
            info!(%unit, %what, "notification acknowledged without effect");
            Ok(())
        }
        Notice::Invalid(detail) => {
            warn!(%unit, %detail, "unreadable notification quarantined");
            handler.unreadable(unit, body.to_vec(), detail).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn blobs(v: Value) -> Vec<BlobCreated> {
        match read_value(&v) {
            Notice::Blobs(b) => b,
            other => panic!("expected blobs, got {other:?}"),
        }
    }

    #[test]
    fn an_empty_bucket_or_key_is_an_invalid_notification() {
        let s3 = |bucket: &str, key: &str| {
            json!({"Records": [{"eventName": "ObjectCreated:Put", "s3": {
                "bucket": {"name": bucket}, "object": {"key": key}}}]})
        };
        let eb = |bucket: &str, key: &str| {
            json!({"source": "aws.s3", "detail-type": "Object Created",
                   "detail": {"bucket": {"name": bucket}, "object": {"key": key}}})
        };
        for v in [
            s3("b", ""),
            s3("", "k"),
            eb("b", ""),
            eb("", "k"),
            s3("b///", "k"),
            eb("a/b", "k"),
            s3("a b", "k"),
        ] {
            assert!(matches!(read_value(&v), Notice::Invalid(_)), "{v}");
        }
        assert!(matches!(read_value(&s3("b", "k")), Notice::Blobs(_)));
    }

    #[test]
    fn s3_keys_are_form_decoded() {
        let b = blobs(
            json!({"Records": [{"eventName": "ObjectCreated:Put", "s3": {
            "bucket": {"name": "drop"},
            "object": {"key": "in/red+flower%2B1.csv", "size": 7, "eTag": "abc",
                       "sequencer": "0A1"}}}]}),
        );
        assert_eq!(b[0].store, "s3://drop");
        assert_eq!(b[0].key, "in/red flower+1.csv");
        assert_eq!(
            (b[0].size, b[0].etag.as_deref(), b[0].sequencer.as_deref()),
            (Some(7), Some("abc"), Some("0A1"))
        );
    }

    #[test]
    fn test_events_and_deletions_are_ignored() {
        let t = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"});
        assert!(matches!(read_value(&t), Notice::Ignore(_)));
        let d = json!({"Records": [{"eventName": "ObjectRemoved:Delete",
                                    "s3": {"bucket": {"name": "b"}, "object": {"key": "k"}}}]});
        assert!(matches!(read_value(&d), Notice::Ignore(_)));
        let g = json!({"eventType": "Microsoft.Storage.BlobDeleted", "data": {}});
        assert!(matches!(read_value(&g), Notice::Ignore(_)));
    }

    #[test]
    fn azure_urls_of_service_and_emulator_give_the_same_store_form() {
        assert_eq!(
            azure_blob_url("https://acct.blob.core.windows.net/incoming/a%20b/c.csv").unwrap(),
            ("az://acct/incoming".into(), "a b/c.csv".into())
        );
        assert_eq!(
            azure_blob_url("http://127.0.0.1:10000/devstoreaccount1/incoming/x.ndjson").unwrap(),
            ("az://devstoreaccount1/incoming".into(), "x.ndjson".into())
        );
        assert_eq!(
            azure_blob_url("https://acct.dfs.core.windows.net/lake/raw/x.csv").unwrap(),
            ("az://acct/lake".into(), "raw/x.csv".into())
        );
        assert!(azure_blob_url("https://acct.blob.core.windows.net/incoming").is_err());
        assert!(azure_blob_url("ftp://x/y/z").is_err());
    }

    #[test]
    fn anything_else_is_invalid() {
        assert!(matches!(read_notice(b"nope"), Notice::Invalid(_)));
        assert!(matches!(read_value(&json!({"a": 1})), Notice::Invalid(_)));
        assert!(matches!(
            read_value(&json!({"Records": [{"eventName": "ObjectCreated:Put", "s3": {}}]})),
            Notice::Invalid(_)
        ));
    }
}
