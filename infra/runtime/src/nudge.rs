//! Nudges for the fanout function, passed on through the platform's queue.
//!
//! Loads made by this process (ingest, transform, the rollup's findings) report the webhook
//! deliveries they committed through [`hook`]; after each invocation the adapter passes the
//! count on, once, however many commits it covers:
//!
//! - AWS Lambda: an SQS `SendMessage` to `FERRY_FANOUT_QUEUE_URL`, the fanout function's event
//!   source, signed with the function's role credentials (SigV4, from `object_store`);
//! - Azure: the `nudge` queue output binding of the response envelope (`Outputs.nudge`);
//! - local: the `ferry` stack installs its own hook, which feeds its local queue.
//!
//! A nudge is best effort and carries nothing but a count: a lost one only means the fanout's
//! timer sweep finds the deliveries instead, within a minute. Failing to send one never fails
//! the invocation, whose work is already committed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_shared::load::Nudge;
use ferry_shared::trigger::nudge_message;
use object_store::aws::AwsCredential;
use serde_json::{json, Value};
use tracing::{debug, warn};

use crate::aws::{credential_from_env, var, JsonApi};

/// Deliveries committed since the adapter last passed a nudge on.
static PENDING: AtomicU64 = AtomicU64::new(0);

/// The hook to install on this process's loads ([`ferry_shared::load::Loader::with_nudge`]).
pub fn hook() -> Nudge {
    Arc::new(|deliveries| {
        PENDING.fetch_add(deliveries, Ordering::AcqRel);
    })
}

/// Takes the deliveries committed since the last call.
fn take() -> u64 {
    PENDING.swap(0, Ordering::AcqRel)
}

/// The Azure response's `Outputs`: `{"nudge": {...}}` after commits that queued deliveries,
/// otherwise nothing (an absent output binding value sends no message).
pub(crate) fn azure_outputs() -> Value {
    match take() {
        0 => json!({}),
        n => json!({ "nudge": nudge_message(n) }),
    }
}

/// After a Lambda invocation: sends the pending nudge, if any, to the fanout's SQS queue.
pub(crate) async fn flush_lambda() {
    let n = take();
    if n == 0 {
        return;
    }
    let Some(sqs) = Sqs::from_env() else {
        debug!(
            deliveries = n,
            "FERRY_FANOUT_QUEUE_URL is not set: no nudge (the timer sweep finds them)"
        );
        return;
    };
    match sqs.send_message(&nudge_message(n).to_string()).await {
        Ok(()) => debug!(deliveries = n, "fanout nudged"),
        Err(problem) => warn!(
            deliveries = n,
            %problem,
            "fanout nudge not sent; the timer sweep will find the deliveries"
        ),
    }
}

/// An SQS queue, spoken to in the AWS JSON 1.0 protocol.
#[derive(Debug)]
pub struct Sqs {
    /// `https://sqs.{region}.amazonaws.com/{account}/{name}` (or an emulator's).
    pub queue_url: String,
    pub region: String,
    pub credential: AwsCredential,
}

impl Sqs {
    /// From `FERRY_FANOUT_QUEUE_URL`, `AWS_REGION` and the role credentials Lambda puts in
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
    pub fn from_env() -> Option<Sqs> {
        let queue_url = var("FERRY_FANOUT_QUEUE_URL")?;
        // The queue's own region signs its requests (it may differ from the function's).
        let region = region_of(&queue_url)
            .or_else(|| var("AWS_REGION"))
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into());
        let Some(credential) = credential_from_env() else {
            warn!("FERRY_FANOUT_QUEUE_URL is set but AWS credentials are not: no nudges");
            return None;
        };
        Some(Sqs {
            queue_url,
            region,
            credential,
        })
    }

    /// The service endpoint: `https://sqs.{region}.amazonaws.com/` for AWS queue URLs (the
    /// legacy `{region}.queue.amazonaws.com` form included), else the URL's origin (an
    /// emulator, a VPC endpoint).
    fn endpoint(&self) -> Result<String, String> {
        let url = url::Url::parse(&self.queue_url)
            .map_err(|e| format!("FERRY_FANOUT_QUEUE_URL is not a URL: {e}"))?;
        if url
            .host_str()
            .is_some_and(|h| h.ends_with(".amazonaws.com"))
        {
            return Ok(format!("https://sqs.{}.amazonaws.com/", self.region));
        }
        Ok(format!("{}/", url.origin().ascii_serialization()))
    }

    /// Sends one message (`SendMessage`). A FIFO queue gets one message group; its
    /// deduplication id is random, so two nudges are never merged.
    pub async fn send_message(&self, body: &str) -> Result<(), String> {
        let mut payload = json!({ "QueueUrl": self.queue_url, "MessageBody": body });
        if self.queue_url.ends_with(".fifo") {
            payload["MessageGroupId"] = json!("ferry-fanout");
            payload["MessageDeduplicationId"] = json!(format!("{:032x}", rand_id()));
        }
        self.call("SendMessage", &payload).await.map(drop)
    }

    /// One AWS JSON 1.0 call: POST to the endpoint with `X-Amz-Target: AmazonSQS.{action}`,
    /// SigV4-signed for service `sqs`. Returns the response document.
    pub async fn call(&self, action: &str, payload: &Value) -> Result<Value, String> {
        let endpoint = self.endpoint()?;
        let api = JsonApi {
            endpoint: &endpoint,
            service: "sqs",
            region: &self.region,
            credential: &self.credential,
            json_version: "1.0",
            target_prefix: "AmazonSQS",
            // A nudge is best effort and delays the invocation's answer: a short time limit.
            timeout: Duration::from_secs(2),
        };
        api.call(action, payload).await.map_err(|e| e.to_string())
    }
}

/// The region in an AWS queue URL: `sqs.{region}.amazonaws.com` or the legacy
/// `{region}.queue.amazonaws.com`.
fn region_of(queue_url: &str) -> Option<String> {
    let host = url::Url::parse(queue_url).ok()?.host_str()?.to_owned();
    let rest = host.strip_suffix(".amazonaws.com")?;
    let region = match rest.strip_prefix("sqs.") {
        Some(r) => r,
        None => rest.strip_suffix(".queue")?,
    };
    (!region.is_empty() && !region.contains('.')).then(|| region.to_owned())
}

/// A random 128-bit number (nanoseconds mixed with a counter: unique per process).
fn rand_id() -> u128 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    (nanos << 32)
        ^ u128::from(COUNTER.fetch_add(1, Ordering::Relaxed))
        ^ u128::from(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_deliveries_are_passed_on_once() {
        let nudge = hook();
        nudge(2);
        nudge(3);
        assert_eq!(azure_outputs(), json!({"nudge": {"deliveries": 5}}));
        assert_eq!(azure_outputs(), json!({}));
    }

    #[test]
    fn the_endpoint_is_the_queue_url_origin() {
        let sqs = Sqs {
            queue_url: "https://sqs.eu-west-1.amazonaws.com/123456789012/ferry-fanout".into(),
            region: "eu-west-1".into(),
            credential: AwsCredential {
                key_id: "k".into(),
                secret_key: "s".into(),
                token: None,
            },
        };
        assert_eq!(
            sqs.endpoint().unwrap(),
            "https://sqs.eu-west-1.amazonaws.com/"
        );
        for (url, region) in [
            ("https://sqs.eu-west-1.amazonaws.com/1/q", Some("eu-west-1")),
            (
                "https://ap-south-1.queue.amazonaws.com/1/q",
                Some("ap-south-1"),
            ),
            ("http://127.0.0.1:5000/123456789012/q", None),
        ] {
            assert_eq!(region_of(url).as_deref(), region, "{url}");
        }
    }
}
