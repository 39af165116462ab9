//! The local queue: an in-process stand-in for SQS / Azure Storage queues that keeps their
//! semantics — a received message is invisible for the visibility timeout, comes back with a
//! higher delivery count unless acknowledged in time, and moves to a dead-letter list after
//! `max_receives` deliveries. An acknowledgement with an expired receipt is refused, as SQS
//! refuses a stale receipt handle.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ferry_shared::{QueueBatch, QueueHandler, QueueMessage};
use tokio::sync::Notify;

#[derive(Debug, Clone)]
struct Stored {
    id: String,
    body: Vec<u8>,
    receives: u32,
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<Stored>,
    in_flight: HashMap<u64, (Stored, Instant)>,
    dead: Vec<Stored>,
}

/// A received message and the receipt needed to acknowledge it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: QueueMessage,
    pub receipt: u64,
}

/// Counters of a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub sent: u64,
    pub deliveries: u64,
    pub redeliveries: u64,
    pub acked: u64,
    pub ready: usize,
    pub in_flight: usize,
    pub dead: usize,
}

/// An in-memory queue with visibility timeouts and redelivery.
#[derive(Debug)]
pub struct LocalQueue {
    state: Mutex<State>,
    notify: Notify,
    visibility: Duration,
    max_receives: Option<u32>,
    next_id: AtomicU64,
    /// Distinguishes this queue's message ids from every other run's: the ledger outlives
    /// the process, so ids must never repeat.
    nonce: String,
    sent: AtomicU64,
    deliveries: AtomicU64,
    redeliveries: AtomicU64,
    acked: AtomicU64,
}

impl LocalQueue {
    /// A queue whose messages stay invisible for `visibility` after each receive and are
    /// dead-lettered after `max_receives` deliveries (`None`: never).
    pub fn new(visibility: Duration, max_receives: Option<u32>) -> LocalQueue {
        LocalQueue {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            visibility,
            max_receives,
            next_id: AtomicU64::new(1),
            nonce: format!(
                "{:x}-{:x}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default(),
                std::process::id()
            ),
            sent: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            redeliveries: AtomicU64::new(0),
            acked: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enqueues a message; returns its id.
    pub fn send(&self, body: Vec<u8>) -> String {
        let id = format!(
            "local-{}-{}",
            self.nonce,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        self.lock().ready.push_back(Stored {
            id: id.clone(),
            body,
            receives: 0,
        });
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.notify.notify_one();
        id
    }

    /// Receives up to `max` visible messages (possibly none).
    pub fn receive(&self, max: usize) -> Vec<Delivery> {
        let now = Instant::now();
        let mut state = self.lock();
        let expired: Vec<u64> = state
            .in_flight
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(r, _)| *r)
            .collect();
        for receipt in expired {
            if let Some((stored, _)) = state.in_flight.remove(&receipt) {
                if self.max_receives.is_some_and(|max| stored.receives >= max) {
                    state.dead.push(stored);
                } else {
                    state.ready.push_back(stored);
                }
            }
        }
        let mut out = Vec::new();
        while out.len() < max {
            let Some(mut stored) = state.ready.pop_front() else {
                break;
            };
            stored.receives += 1;
            if stored.receives > 1 {
                self.redeliveries.fetch_add(1, Ordering::Relaxed);
            }
            self.deliveries.fetch_add(1, Ordering::Relaxed);
            let receipt = self.next_id.fetch_add(1, Ordering::Relaxed);
            out.push(Delivery {
                message: QueueMessage {
                    id: stored.id.clone(),
                    body: stored.body.clone(),
                    delivery_count: stored.receives,
                    attributes: Default::default(),
                },
                receipt,
            });
            state
                .in_flight
                .insert(receipt, (stored, now + self.visibility));
        }
        out
    }

    /// Deletes a delivered message. False if the receipt expired (the message is visible again
    /// or already redelivered) or was used before.
    pub fn ack(&self, receipt: u64) -> bool {
        let now = Instant::now();
        let mut state = self.lock();
        match state.in_flight.get(&receipt) {
            Some((_, until)) if *until > now => {
                state.in_flight.remove(&receipt);
                self.acked.fetch_add(1, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// True when no message is waiting or in flight (dead letters aside).
    pub fn is_drained(&self) -> bool {
        let state = self.lock();
        state.ready.is_empty() && state.in_flight.is_empty()
    }

    /// Waits until a message may be available, at most `timeout`.
    pub async fn wait(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.notify.notified()).await;
    }

    pub fn stats(&self) -> QueueStats {
        let state = self.lock();
        QueueStats {
            sent: self.sent.load(Ordering::Relaxed),
            deliveries: self.deliveries.load(Ordering::Relaxed),
            redeliveries: self.redeliveries.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            ready: state.ready.len(),
            in_flight: state.in_flight.len(),
            dead: state.dead.len(),
        }
    }

    /// Bodies of dead-lettered messages.
    pub fn dead_letters(&self) -> Vec<(String, Vec<u8>)> {
        self.lock()
            .dead
            .iter()
            .map(|s| (s.id.clone(), s.body.clone()))
            .collect()
    }
}

/// Feeds the queue to `handler` with `workers` concurrent pollers, `batch_size` messages per
/// invocation, until the queue is drained. Messages the handler reports as failed are not
/// acknowledged and come back after the visibility timeout, as on the clouds.
pub async fn drain<H: QueueHandler>(
    queue: Arc<LocalQueue>,
    handler: Arc<H>,
    workers: usize,
    batch_size: usize,
) {
    consume(queue, handler, workers, batch_size, None).await
}

/// Like [`drain`], but a long-running consumer: once the queue is drained it keeps waiting for
/// messages until `stop` is set, then returns.
pub async fn consume<H: QueueHandler>(
    queue: Arc<LocalQueue>,
    handler: Arc<H>,
    workers: usize,
    batch_size: usize,
    stop: Option<Arc<AtomicBool>>,
) {
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let queue = Arc::clone(&queue);
        let handler = Arc::clone(&handler);
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let deliveries = queue.receive(batch_size);
                if deliveries.is_empty() {
                    let done = match &stop {
                        None => true,
                        Some(stop) => stop.load(Ordering::Acquire),
                    };
                    if done && queue.is_drained() {
                        return;
                    }
                    queue.wait(Duration::from_millis(20)).await;
                    continue;
                }
                let batch = QueueBatch {
                    messages: deliveries.iter().map(|d| d.message.clone()).collect(),
                };
                let outcome = handler.handle(batch).await;
                for d in &deliveries {
                    if !outcome.failed.contains(&d.message.id) {
                        queue.ack(d.receipt);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unacknowledged_messages_come_back_with_a_higher_delivery_count() {
        let q = LocalQueue::new(Duration::from_millis(30), None);
        let id = q.send(b"x".to_vec());
        let first = q.receive(10);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].message.delivery_count, 1);
        assert!(
            q.receive(10).is_empty(),
            "invisible during the visibility timeout"
        );
        std::thread::sleep(Duration::from_millis(40));
        assert!(!q.ack(first[0].receipt), "an expired receipt is refused");
        let second = q.receive(10);
        assert_eq!(
            (
                second[0].message.id.as_str(),
                second[0].message.delivery_count
            ),
            (id.as_str(), 2)
        );
        assert!(q.ack(second[0].receipt));
        assert!(q.is_drained());
        assert_eq!(q.stats().redeliveries, 1);
    }

    #[test]
    fn message_ids_never_repeat_across_queues() {
        let a = LocalQueue::new(Duration::from_secs(1), None).send(vec![]);
        let b = LocalQueue::new(Duration::from_secs(1), None).send(vec![]);
        assert_ne!(
            a, b,
            "the ledger outlives a queue, so a repeated id would be lost"
        );
    }

    #[test]
    fn messages_are_dead_lettered_after_max_receives() {
        let q = LocalQueue::new(Duration::from_millis(1), Some(2));
        q.send(b"poison".to_vec());
        for _ in 0..2 {
            assert_eq!(q.receive(1).len(), 1);
            std::thread::sleep(Duration::from_millis(3));
        }
        assert!(q.receive(1).is_empty());
        assert_eq!(q.dead_letters().len(), 1);
        assert!(q.is_drained());
    }
}
