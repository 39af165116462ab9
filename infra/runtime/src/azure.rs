//! Azure Functions custom handler: the host POSTs `{"Data": …, "Metadata": …}` to
//! `/{FunctionName}` on 127.0.0.1:`FUNCTIONS_CUSTOMHANDLER_PORT`, one queue message per call.
//!
//! Success (loaded, already applied or quarantined) is a 200 with the response envelope;
//! a transient failure is a 500, so the host makes the message visible again and, after
//! `maxDequeueCount`, moves it to the poison queue. Readiness is any answer on `GET /`.
//!
//! The host serialises string values with an extra layer of JSON quoting
//! (`"msg": "\"hello\""`, `"DequeueCount": "1"`); [`decode_string`] accepts both encodings.

use std::sync::Arc;

use ferry_shared::{QueueBatch, QueueHandler, QueueMessage};
use serde_json::{json, Map, Value};
use tracing::{error, info, warn};
use warp::http::StatusCode;
use warp::Filter;

use crate::RuntimeError;

/// Serves `POST /{function}` and `GET /` on 127.0.0.1:`port`.
pub async fn run_queue<H: QueueHandler>(
    port: u16,
    function: &str,
    handler: Arc<H>,
) -> Result<(), RuntimeError> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|source| RuntimeError::Bind { port, source })?;
    info!(port, function, "azure custom handler listening");
    let function = function.to_owned();
    let ready = warp::get().and(warp::path::end()).map(|| "ready");
    let invoke = warp::post()
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::body::bytes())
        .then(move |name: String, body: warp::hyper::body::Bytes| {
            let handler = Arc::clone(&handler);
            let function = function.clone();
            async move {
                if name != function {
                    return reply(
                        StatusCode::NOT_FOUND,
                        &format!("no function named {name:?}"),
                    );
                }
                let message = match queue_message(&body) {
                    Ok(m) => m,
                    Err(problem) => {
                        // The host's envelope itself is unreadable: fail the invocation so the
                        // message stays on its queue (and reaches the poison queue), not lost.
                        error!(%problem, "unreadable queue envelope");
                        return reply(StatusCode::BAD_REQUEST, &problem);
                    }
                };
                let id = message.id.clone();
                let outcome = handler
                    .handle(QueueBatch {
                        messages: vec![message],
                    })
                    .await;
                if outcome.failed.contains(&id) {
                    warn!(message_id = %id, "transient failure; the host will redeliver");
                    reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "transient failure; retry later",
                    )
                } else {
                    reply(StatusCode::OK, "processed")
                }
            }
        });
    warp::serve(ready.or(invoke)).incoming(listener).run().await;
    Ok(())
}

fn reply(status: StatusCode, log: &str) -> warp::reply::WithStatus<warp::reply::Json> {
    let body = json!({ "Outputs": {}, "Logs": [log], "ReturnValue": null });
    warp::reply::with_status(warp::reply::json(&body), status)
}

/// Reads the queue message out of a host invocation envelope.
pub fn queue_message(envelope: &[u8]) -> Result<QueueMessage, String> {
    let envelope: Value = serde_json::from_slice(envelope)
        .map_err(|e| format!("invocation body is not JSON: {e}"))?;
    let data = envelope
        .get("Data")
        .and_then(Value::as_object)
        .ok_or("no Data object")?;
    let metadata = envelope
        .get("Metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    // The trigger's binding name comes from function.json; take the only entry of Data.
    let value = match data.len() {
        1 => data.values().next().ok_or("empty Data")?,
        0 => return Err("Data holds no trigger value".into()),
        _ => data
            .get("message")
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
        body: decode_string(value),
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
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::String(inner)) => inner.into_bytes(),
            _ => s.clone().into_bytes(),
        },
        Value::Null => Vec::new(),
        other => other.to_string().into_bytes(),
    }
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
    fn an_object_value_is_the_message_itself() {
        let env = json!({"Data": {"msg": {"a": 1}}, "Metadata": {"Id": "x"}});
        assert_eq!(
            queue_message(env.to_string().as_bytes()).unwrap().body,
            br#"{"a":1}"#
        );
    }

    #[test]
    fn envelopes_without_id_or_data_are_refused() {
        assert!(queue_message(br#"{"Data": {"m": "x"}, "Metadata": {}}"#).is_err());
        assert!(queue_message(br#"{"Metadata": {"Id": "x"}}"#).is_err());
        assert!(queue_message(b"not json").is_err());
    }
}
