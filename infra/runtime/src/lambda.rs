//! AWS Lambda: `SqsEvent` in, `SqsBatchResponse` out (the event source mapping must have
//! `ReportBatchItemFailures` enabled, or AWS ignores the per-message failures).
//!
//! Blob-created functions take any of three payloads: an `SqsEvent` whose bodies are S3 (or
//! EventBridge) notifications, a direct `S3Event`, or an EventBridge `Object Created` event.

use std::future::Future;
use std::sync::Arc;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use ferry_shared::{
    BlobHandler, QueueBatch, QueueHandler, QueueMessage, QueueOutcome, TickHandler,
};
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::{json, Value};

use crate::blob::handle_notice;
use crate::nudge;
use crate::timer::aws_tick;
use crate::RuntimeError;

/// Runs the Lambda Runtime API loop with a queue handler.
pub async fn run_queue<H: QueueHandler>(handler: Arc<H>) -> Result<(), RuntimeError> {
    serve(move |event: LambdaEvent<SqsEvent>| {
        let handler = Arc::clone(&handler);
        async move {
            let outcome = handler.handle(sqs_batch(event.payload)).await;
            Ok(serde_json::to_value(sqs_response(outcome))?)
        }
    })
    .await
}

/// The Runtime API loop: each invocation, then the fanout nudge its commits call for (sent
/// before the response, so the invocation is not frozen with it unsent).
async fn serve<A, F, Fut>(invoke: F) -> Result<(), RuntimeError>
where
    A: for<'de> serde::Deserialize<'de>,
    F: Fn(LambdaEvent<A>) -> Fut,
    Fut: Future<Output = Result<Value, lambda_runtime::Error>>,
{
    lambda_runtime::run(service_fn(move |event: LambdaEvent<A>| {
        // Boxed: nesting each handler's future inside this one made the binaries' async
        // state types too deep for the compiler's layout query (rollup's test build).
        let invocation = Box::pin(invoke(event));
        async move {
            let result = invocation.await;
            nudge::flush_lambda().await;
            result
        }
    }))
    .await
    .map_err(|e| RuntimeError::Lambda(e.to_string()))
}

/// Runs the Lambda Runtime API loop with a blob-created handler.
pub async fn run_blob<H: BlobHandler>(handler: Arc<H>) -> Result<(), RuntimeError> {
    serve(move |event: LambdaEvent<Value>| {
        let handler = Arc::clone(&handler);
        async move { blob_invocation(&*handler, event).await }
    })
    .await
}

async fn blob_invocation<H: BlobHandler>(
    handler: &H,
    event: LambdaEvent<Value>,
) -> Result<Value, lambda_runtime::Error> {
    if from_sqs(&event.payload) {
        let batch = sqs_batch(serde_json::from_value(event.payload)?);
        let mut outcome = QueueOutcome::default();
        for m in batch.messages {
            let unit = format!("sqs:{}", m.id);
            if m.id.is_empty() || handle_notice(handler, unit, &m.body).await.is_err() {
                outcome.failed.push(m.id);
            }
        }
        return Ok(serde_json::to_value(sqs_response(outcome))?);
    }
    // A direct S3 or EventBridge invocation: an error makes Lambda retry it.
    let unit = format!("lambda:{}", event.context.request_id);
    let body = serde_json::to_vec(&event.payload)?;
    handle_notice(handler, unit, &body)
        .await
        .map_err(|retry| retry.0)?;
    Ok(json!({"status": "processed"}))
}

/// Runs the Lambda Runtime API loop with a timer handler (EventBridge rule or Scheduler).
pub async fn run_tick<H: TickHandler>(handler: Arc<H>) -> Result<(), RuntimeError> {
    serve(move |event: LambdaEvent<Value>| {
        let handler = Arc::clone(&handler);
        async move { tick_invocation(&*handler, &event.payload).await }
    })
    .await
}

/// Runs the Lambda Runtime API loop for a function with an SQS event source mapping and a
/// schedule: SQS batches go to the queue handler, anything else is a timer tick.
pub async fn run_queue_and_tick<H: QueueHandler + TickHandler>(
    handler: Arc<H>,
) -> Result<(), RuntimeError> {
    serve(move |event: LambdaEvent<Value>| {
        let handler = Arc::clone(&handler);
        async move {
            if from_sqs(&event.payload) {
                let outcome = QueueHandler::handle(
                    &*handler,
                    sqs_batch(serde_json::from_value(event.payload)?),
                )
                .await;
                Ok(serde_json::to_value(sqs_response(outcome))?)
            } else {
                tick_invocation(&*handler, &event.payload).await
            }
        }
    })
    .await
}

/// Whether a payload is an `SqsEvent` (rather than a direct or scheduled invocation).
fn from_sqs(payload: &Value) -> bool {
    payload
        .pointer("/Records/0/eventSource")
        .and_then(Value::as_str)
        == Some("aws:sqs")
}

/// One scheduled invocation: an error reports the run failed.
async fn tick_invocation<H: TickHandler>(
    handler: &H,
    payload: &Value,
) -> Result<Value, lambda_runtime::Error> {
    let tick = aws_tick(payload, chrono::Utc::now());
    handler.tick(tick).await.map_err(|retry| retry.0)?;
    Ok(json!({"status": "done"}))
}

/// Maps an SQS event onto the trigger contract.
pub fn sqs_batch(event: SqsEvent) -> QueueBatch {
    let messages = event
        .records
        .into_iter()
        .map(|m| QueueMessage {
            delivery_count: m
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|c| c.parse().ok())
                .unwrap_or(1),
            id: m.message_id.unwrap_or_default(),
            body: m.body.unwrap_or_default().into_bytes(),
            attributes: m.attributes.into_iter().collect(),
        })
        .collect();
    QueueBatch { messages }
}

/// Maps the outcome onto `batchItemFailures`.
pub fn sqs_response(outcome: QueueOutcome) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = outcome
        .failed
        .into_iter()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqs_records_become_queue_messages() {
        let event: SqsEvent = serde_json::from_value(serde_json::json!({"Records": [{
            "messageId": "m-1", "receiptHandle": "r", "body": "{\"a\":1}",
            "attributes": {"ApproximateReceiveCount": "3", "SentTimestamp": "1"},
            "messageAttributes": {}, "md5OfBody": "x", "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:eu-west-1:1:ingest", "awsRegion": "eu-west-1"
        }]}))
        .unwrap();
        let batch = sqs_batch(event);
        assert_eq!(batch.messages.len(), 1);
        let m = &batch.messages[0];
        assert_eq!(
            (m.id.as_str(), m.body.as_slice(), m.delivery_count),
            ("m-1", &b"{\"a\":1}"[..], 3)
        );
    }

    #[test]
    fn failures_serialise_as_batch_item_failures() {
        let r = sqs_response(QueueOutcome {
            failed: vec!["m-2".into()],
        });
        assert_eq!(
            serde_json::to_value(r).unwrap(),
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m-2"}]})
        );
    }
}
