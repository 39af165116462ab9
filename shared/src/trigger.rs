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
