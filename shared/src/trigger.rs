//! The trigger contract: platform-neutral inputs and outcomes that every handler speaks.
//! Adapters in `infra/runtime` map platform payloads onto these; no platform type gets past them.

use std::collections::BTreeMap;
use std::future::Future;

/// One message taken from a queue.
#[derive(Debug, Clone, Default)]
pub struct QueueMessage {
    /// The platform's message id (SQS `messageId`, Azure `Id`, local queue id). Stable across
    /// redeliveries of the same message, so it names the delivery unit in the ledger.
    pub id: String,
    pub body: Vec<u8>,
    /// How many times this message has been delivered, this delivery included (1 = first).
    pub delivery_count: u32,
    pub attributes: BTreeMap<String, String>,
}

/// Messages delivered to one invocation.
#[derive(Debug, Clone, Default)]
pub struct QueueBatch {
    pub messages: Vec<QueueMessage>,
}

/// What a queue handler reports: the ids of messages that failed *transiently* and must be
/// redelivered. Every other message is acknowledged (loaded, already applied, or quarantined).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueOutcome {
    pub failed: Vec<String>,
}

/// A queue-triggered function.
pub trait QueueHandler: Send + Sync + 'static {
    /// Handles a batch. Never fails as a whole: transient failures are reported per message.
    fn handle(&self, batch: QueueBatch) -> impl Future<Output = QueueOutcome> + Send;
}

/// A new object, or a new version of one, in a bucket or container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobCreated {
    /// Where the object lives: `s3://<bucket>`, `az://<account>/<container>` or
    /// `file:///<directory>`.
    pub store: String,
    /// The object key, decoded (S3 notifications URL-encode it; adapters undo that).
    pub key: String,
    pub size: Option<u64>,
    /// The ETag as the notification gave it (quotes are not significant).
    pub etag: Option<String>,
    /// The version id, where the store keeps versions.
    pub version: Option<String>,
    /// The platform's ordering token for events on one key (S3 and Azure `sequencer`).
    pub sequencer: Option<String>,
}

/// A redelivery request: the notification failed for a reason that may pass (database or
/// object store unreachable) and must be delivered again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry(pub String);

impl std::fmt::Display for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A blob-created function.
pub trait BlobHandler: Send + Sync + 'static {
    /// Handles one object. `Ok` acknowledges the notification: loaded, already applied,
    /// stale, or quarantined. `Err` asks the platform to deliver it again.
    fn created(&self, blob: BlobCreated) -> impl Future<Output = Result<(), Retry>> + Send;

    /// Records a notification that could not be read at all (quarantined under `unit`), so it
    /// is acknowledged rather than redelivered forever.
    fn unreadable(
        &self,
        unit: String,
        raw: Vec<u8>,
        detail: String,
    ) -> impl Future<Output = Result<(), Retry>> + Send;
}

/// A timer firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// When the platform meant it to fire (EventBridge `time`, the Azure host's `UtcNow`).
    pub scheduled: chrono::DateTime<chrono::Utc>,
    /// The platform says the run is late (Azure `IsPastDue`); jobs catch up by watermark anyway.
    pub past_due: bool,
}

/// A timer-triggered function.
pub trait TickHandler: Send + Sync + 'static {
    /// Runs the scheduled work. `Err` reports the run as failed (the platform does not retry
    /// timers; the next tick picks up where this one stopped).
    fn tick(&self, tick: Tick) -> impl Future<Output = Result<(), Retry>> + Send;
}

/// The message that wakes the fanout function after a commit enqueued webhook deliveries, on
/// every platform and locally: a JSON object (so Azure never mistakes it for base64).
pub fn nudge_message(deliveries: u64) -> serde_json::Value {
    serde_json::json!({ "deliveries": deliveries })
}
