//! Azure Functions custom handler: the host POSTs `{"Data": …, "Metadata": …}` to
//! `/{FunctionName}` on 127.0.0.1:`FUNCTIONS_CUSTOMHANDLER_PORT`, one queue message per call.
//!
//! Success (loaded, already applied or quarantined) is a 200 with the response envelope;
//! a transient failure is a 500, so the host makes the message visible again and, after
//! `maxDequeueCount`, moves it to the poison queue. Readiness is any answer on `GET /`.
//!
//! The host serialises string values with an extra layer of JSON quoting
//! (`"msg": "\"hello\""`, `"DequeueCount": "1"`); [`decode_string`] accepts both encodings.
//!
//! Requests are bounded: [`MAX_QUEUE_REQUEST_BYTES`] for queue and timer invocations (a Storage
//! queue message is at most 64 KiB), [`MAX_BLOB_REQUEST_BYTES`] for the server of a
//! blob-created function, whose blob trigger route carries the whole blob (it is skipped, not
//! read: the object is streamed from the store). A larger request is answered 413 and logged;
//! the host retries it and then moves it to the poison queue.

use std::future::Future;
use std::sync::Arc;

use ferry_shared::{BlobCreated, BlobHandler, QueueBatch, QueueHandler, QueueMessage, TickHandler};
use serde_json::{json, Map, Value};
use tracing::{error, info, warn};
use warp::http::StatusCode;
use warp::hyper::body::Bytes;
use warp::Filter;

use crate::blob::{azure_blob_url, handle_notice};
use crate::timer::azure_tick;
use crate::RuntimeError;

/// Largest invocation request of a queue or timer function: a Storage queue message is at most
/// 64 KiB, base64-encoded by default, and the host quotes it once more inside its envelope.
pub const MAX_QUEUE_REQUEST_BYTES: u64 = 1 << 20;

/// Largest invocation request of a blob-created function: its blob trigger route inlines the
/// whole blob (base64) in every request. Larger files take the Event Grid → queue route.
pub const MAX_BLOB_REQUEST_BYTES: u64 = 128 << 20;

/// Serves `POST /{function}` and `GET /` on 127.0.0.1:`port` for a queue-triggered function.
pub async fn run_queue<H: QueueHandler>(
    port: u16,
    function: &str,
    handler: Arc<H>,
) -> Result<(), RuntimeError> {
    serve(port, vec![function.to_owned()], move |body| {
        let handler = Arc::clone(&handler);
        async move { queue_call(&*handler, body).await }
    })
    .await
}

/// Serves a blob-created function: `POST /{function}` takes a storage-queue message holding an
/// Event Grid `BlobCreated` event (the recommended route), `POST /{function}-blob` a blob
/// trigger with `source: EventGrid` (its inlined content is ignored: the object is streamed
/// from the store like any other).
pub async fn run_blob<H: BlobHandler>(
    port: u16,
    function: &str,
    handler: Arc<H>,
) -> Result<(), RuntimeError> {
    let blob_route = format!("{function}-blob");
    let routes = vec![function.to_owned(), blob_route.clone()];
    serve_named(port, routes, MAX_BLOB_REQUEST_BYTES, move |name, body| {
        let handler = Arc::clone(&handler);
        let is_blob_trigger = name == blob_route;
        async move {
            let result = if is_blob_trigger {
                // Only Metadata is read; the inlined content is skipped by the parser.
                let envelope = match serde_json::from_slice::<BlobEnvelope>(&body) {
                    Ok(e) => e,
                    Err(e) => {
                        return unreadable_envelope(format!("invocation body is not JSON: {e}"))
                    }
                };
                drop(body);
                match blob_trigger_metadata(&envelope.metadata) {
                    Ok(blob) => handler.created(blob).await,
                    Err(problem) => return unreadable_envelope(problem),
                }
            } else {
                match queue_message(&body) {
                    Ok(m) => {
                        drop(body);
                        handle_notice(&*handler, format!("queue:{}", m.id), &m.body).await
                    }
                    Err(problem) => return unreadable_envelope(problem),
                }
            };
            match result {
                Ok(()) => (StatusCode::OK, "processed".into()),
                Err(retry) => {
                    warn!(%retry, "transient failure; the host will redeliver");
                    retry_later()
                }
            }
        }
    })
    .await
}

/// Serves a timer-triggered function: `POST /{function}` with a `timerTrigger` envelope.
/// Azure does not retry failed timer runs; a 500 only marks the run failed in the host's log.
pub async fn run_tick<H: TickHandler>(
    port: u16,
    function: &str,
    handler: Arc<H>,
) -> Result<(), RuntimeError> {
    serve(port, vec![function.to_owned()], move |body| {
        let handler = Arc::clone(&handler);
        async move { tick_call(&*handler, body).await }
    })
    .await
}

/// Serves a function with a queue trigger on `POST /{function}` and a timer trigger on
/// `POST /{function}-timer`.
pub async fn run_queue_and_tick<H: QueueHandler + TickHandler>(
    port: u16,
    function: &str,
    handler: Arc<H>,
) -> Result<(), RuntimeError> {
    let timer_route = format!("{function}-timer");
    let routes = vec![function.to_owned(), timer_route.clone()];
    serve_named(port, routes, MAX_QUEUE_REQUEST_BYTES, move |name, body| {
        let handler = Arc::clone(&handler);
        let is_timer = name == timer_route;
        async move {
            if is_timer {
                tick_call(&*handler, body).await
            } else {
                queue_call(&*handler, body).await
            }
        }
    })
    .await
}

/// One queue message from the host: 200 when handled, 500 to have it redelivered.
async fn queue_call<H: QueueHandler>(handler: &H, body: Bytes) -> (StatusCode, String) {
    let message = match queue_message(&body) {
        Ok(m) => m,
        Err(problem) => return unreadable_envelope(problem),
    };
    // The message holds its own copy; the request need not outlive the parse.
    drop(body);
    let id = message.id.clone();
    let outcome = QueueHandler::handle(
        handler,
        QueueBatch {
            messages: vec![message],
        },
    )
    .await;
    if outcome.failed.contains(&id) {
        warn!(message_id = %id, "transient failure; the host will redeliver");
        retry_later()
    } else {
        (StatusCode::OK, "processed".into())
    }
}

/// One timer firing: 200, or 500 to mark the run failed in the host's log.
async fn tick_call<H: TickHandler>(handler: &H, body: Bytes) -> (StatusCode, String) {
    let envelope = match parse_envelope(&body) {
        Ok(v) => v,
        Err(problem) => return unreadable_envelope(problem),
    };
    let tick = match azure_tick(&envelope, chrono::Utc::now()) {
        Ok(t) => t,
        Err(problem) => return unreadable_envelope(problem),
    };
    match handler.tick(tick).await {
        Ok(()) => (StatusCode::OK, "done".into()),
        Err(retry) => (StatusCode::INTERNAL_SERVER_ERROR, retry.0),
    }
}

/// The HTTP server shared by every trigger: readiness on `GET /`, invocations on
/// `POST /{route}` for each route name, 404 for any other name.
async fn serve<F, Fut>(port: u16, routes: Vec<String>, call: F) -> Result<(), RuntimeError>
where
    F: Fn(Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = (StatusCode, String)> + Send,
{
    serve_named(port, routes, MAX_QUEUE_REQUEST_BYTES, move |_, body| {
        call(body)
    })
    .await
}

/// [`serve`], telling the handler which route was called.
async fn serve_named<F, Fut>(
    port: u16,
    routes: Vec<String>,
    limit: u64,
    call: F,
) -> Result<(), RuntimeError>
where
    F: Fn(String, Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = (StatusCode, String)> + Send,
{
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|source| RuntimeError::Bind { port, source })?;
    info!(port, ?routes, "azure custom handler listening");
    let ready = warp::get().and(warp::path::end()).map(|| "ready");
    let invoke = warp::post()
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::body::content_length_limit(limit))
        .and(warp::body::bytes())
        .then(move |name: String, body: Bytes| {
            let call = call.clone();
            let known = routes.contains(&name);
            async move {
                let (status, log) = if known {
                    call(name, body).await
                } else {
                    (StatusCode::NOT_FOUND, format!("no function named {name:?}"))
                };
                // The host discards the outputs of a failed invocation: keep a pending nudge
                // for the next success rather than lose it.
                let outputs = if status.is_success() {
                    crate::nudge::azure_outputs()
                } else {
                    json!({})
                };
                reply(status, &log, outputs)
            }
        });
    let refused = move |rejection: warp::Rejection| async move {
        let (status, problem) = if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "invocation request over {limit} bytes refused; the host will retry it, \
                     then move it to the poison queue"
                ),
            )
        } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
            (
                StatusCode::LENGTH_REQUIRED,
                "invocation request without Content-Length refused".to_owned(),
            )
        } else {
            return Err(rejection);
        };
        error!(%problem, "invocation refused");
        // The body was not read, so the connection cannot carry another request: say so, or a
        // client that pools connections (the host, reqwest) writes its next request into a
        // closed socket.
        Ok(warp::reply::with_header(
            reply(status, &problem, json!({})),
            "connection",
            "close",
        ))
    };
    warp::serve(ready.or(invoke).recover(refused))
        .incoming(listener)
        .run()
        .await;
    Ok(())
}

/// The host's envelope itself is unreadable: fail the invocation so the message stays on its
/// queue (and reaches the poison queue), not lost.
fn unreadable_envelope(problem: String) -> (StatusCode, String) {
    error!(%problem, "unreadable invocation envelope");
    (StatusCode::BAD_REQUEST, problem)
}

fn retry_later() -> (StatusCode, String) {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "transient failure; retry later".into(),
    )
}

/// A blob trigger invocation as read: its `Data` (the whole blob) is skipped by the parser.
#[derive(serde::Deserialize)]
struct BlobEnvelope {
    #[serde(rename = "Metadata", default)]
    metadata: Map<String, Value>,
}

/// Reads a blob trigger envelope (`Metadata.Uri`, `Metadata.Properties`).
pub fn blob_trigger(envelope: &Value) -> Result<BlobCreated, String> {
    let metadata = envelope
        .get("Metadata")
        .and_then(Value::as_object)
        .ok_or("blob trigger without Metadata")?;
    blob_trigger_metadata(metadata)
}

fn blob_trigger_metadata(metadata: &Map<String, Value>) -> Result<BlobCreated, String> {
    let uri = meta_string(metadata, "Uri").ok_or("blob trigger without Metadata.Uri")?;
    let (store, key) = azure_blob_url(&uri)?;
    let properties = match metadata.get("Properties") {
        Some(Value::Object(p)) => p.clone(),
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_default(),
        _ => Map::new(),
    };
    let etag = meta_string(&properties, "ETag").or_else(|| meta_string(&properties, "Etag"));
    let size = ["ContentLength", "Length"]
        .iter()
        .find_map(|k| meta_string(&properties, k))
        .and_then(|s| s.trim().parse().ok());
    Ok(BlobCreated {
        store,
        key,
        size,
        etag: etag.filter(|e| !e.is_empty()),
        version: meta_string(&properties, "VersionId").filter(|v| !v.is_empty()),
        sequencer: None,
    })
}

fn reply(
    status: StatusCode,
    log: &str,
    outputs: Value,
) -> warp::reply::WithStatus<warp::reply::Json> {
    let body = json!({ "Outputs": outputs, "Logs": [log], "ReturnValue": null });
    warp::reply::with_status(warp::reply::json(&body), status)
}

/// Reads the queue message out of a host invocation envelope.
pub fn queue_message(envelope: &[u8]) -> Result<QueueMessage, String> {
    queue_message_in(parse_envelope(envelope)?)
}

fn parse_envelope(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("invocation body is not JSON: {e}"))
}

/// Reads the queue message out of an already parsed invocation envelope (taking the message
/// out of it rather than copying it).
fn queue_message_in(mut envelope: Value) -> Result<QueueMessage, String> {
    let metadata = match envelope.get_mut("Metadata").map(Value::take) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let data = envelope
        .get_mut("Data")
        .and_then(Value::as_object_mut)
        .ok_or("no Data object")?;
    // The trigger's binding name comes from function.json; take the only entry of Data.
    let value = match data.len() {
        1 => data
            .values_mut()
            .next()
            .map(Value::take)
            .ok_or("empty Data")?,
        0 => return Err("Data holds no trigger value".into()),
        _ => data
            .get_mut("message")
            .map(Value::take)
            .ok_or("Data holds several values and none named \"message\"")?,
    };
    let id = meta_string(&metadata, "Id")
        .filter(|s| !s.is_empty())
        .ok_or("Metadata has no Id")?;
    let delivery_count = meta_string(&metadata, "DequeueCount")
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(1);
    let attributes = ["InsertionTime", "ExpirationTime", "NextVisibleTime"]
        .iter()
        .filter_map(|k| meta_string(&metadata, k).map(|v| (k.to_string(), v)))
        .collect();
    Ok(QueueMessage {
        id,
        body: decode_owned(value),
        delivery_count,
        attributes,
    })
}

fn meta_string(metadata: &Map<String, Value>, key: &str) -> Option<String> {
    metadata
        .get(key)
        .map(decode_string)
        .and_then(|b| String::from_utf8(b).ok())
}

/// Decodes a value the host placed in `Data` or `Metadata`: a plain string, a string holding a
/// JSON-quoted string (the host's double encoding), or a JSON object/array/number.
pub fn decode_string(value: &Value) -> Vec<u8> {
    match value {
        Value::String(s) => unquote(s).unwrap_or_else(|| s.clone().into_bytes()),
        Value::Null => Vec::new(),
        other => other.to_string().into_bytes(),
    }
}

/// [`decode_string`] of a value the caller gives up: a plain string is moved, not copied.
fn decode_owned(value: Value) -> Vec<u8> {
    match value {
        Value::String(s) => unquote(&s).unwrap_or_else(|| s.into_bytes()),
        other => decode_string(&other),
    }
}

/// The string inside a JSON-quoted string (the host's double encoding). Only text that starts
/// with a quote can be one, so a message that is JSON of another kind (an event, a batch) is
/// never parsed here: a plain batch of thousands of events is not turned into a tree.
fn unquote(s: &str) -> Option<Vec<u8>> {
    if !s.trim_start().starts_with('"') {
        return None;
    }
    serde_json::from_str::<String>(s)
        .ok()
        .map(String::into_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_double_quoted_envelopes_give_the_same_message() {
        let event = r#"{"specversion":"1.0","id":"1"}"#;
        let plain = json!({"Data": {"message": event},
                           "Metadata": {"Id": "abc", "DequeueCount": 2}});
        let quoted = json!({"Data": {"message": serde_json::to_string(event).unwrap()},
                            "Metadata": {"Id": "\"abc\"", "DequeueCount": "2"}});
        for env in [plain, quoted] {
            let m = queue_message(env.to_string().as_bytes()).unwrap();
            assert_eq!(
                (m.id.as_str(), m.body.as_slice(), m.delivery_count),
                ("abc", event.as_bytes(), 2)
            );
        }
    }

    #[test]
    fn only_a_quoted_string_is_unquoted() {
        let batch = r#"[{"id":"1"},{"id":"2"}]"#;
        assert_eq!(decode_string(&json!(batch)), batch.as_bytes());
        assert_eq!(
            decode_string(&json!(format!("  {}", json!(batch)))),
            batch.as_bytes()
        );
        assert_eq!(
            decode_string(&json!("\"abc")),
            b"\"abc",
            "not JSON: kept as is"
        );
        assert_eq!(decode_string(&json!("17")), b"17");
    }

    #[test]
    fn an_object_value_is_the_message_itself() {
        let env = json!({"Data": {"msg": {"a": 1}}, "Metadata": {"Id": "x"}});
        assert_eq!(
            queue_message(env.to_string().as_bytes()).unwrap().body,
            br#"{"a":1}"#
        );
    }

    #[test]
    fn blob_trigger_envelopes_name_the_blob_and_its_etag() {
        let env = json!({"Data": {"blob": "aGVsbG8="}, "Metadata": {
            "Uri": "\"https://acct.blob.core.windows.net/incoming/d/x.csv\"",
            "name": "\"d/x.csv\"",
            "Properties": {"ETag": "\"0x8D9\"", "ContentLength": 5}}});
        let b = blob_trigger(&env).unwrap();
        assert_eq!(
            (b.store.as_str(), b.key.as_str(), b.etag.as_deref(), b.size),
            ("az://acct/incoming", "d/x.csv", Some("0x8D9"), Some(5))
        );
        assert!(blob_trigger(&json!({"Data": {"blob": ""}, "Metadata": {}})).is_err());
    }

    #[test]
    fn envelopes_without_id_or_data_are_refused() {
        assert!(queue_message(br#"{"Data": {"m": "x"}, "Metadata": {}}"#).is_err());
        assert!(queue_message(br#"{"Metadata": {"Id": "x"}}"#).is_err());
        assert!(queue_message(b"not json").is_err());
    }
}
