//! What the transform says about one object: its outcome and counts, or why it must be
//! delivered again.

use std::collections::BTreeMap;

use ferry_shared::{Error, RejectReason};

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Read and applied (its records loaded, quarantined or dropped).
    Loaded,
    /// This version was applied before: no effect.
    AlreadyApplied,
    /// A newer version of the key was already applied: recorded and ignored.
    Stale,
    /// The notified version is no longer in the store (overwritten or deleted); a later
    /// notification covers what replaced it.
    Gone,
    /// The object as a whole was quarantined for this reason.
    Quarantined(RejectReason),
}

/// The report for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectReport {
    pub unit: String,
    pub outcome: Outcome,
    /// Records read (lines, rows or array elements; blank lines are not records).
    pub records: u64,
    pub loaded: u64,
    pub duplicates: u64,
    pub quarantined: BTreeMap<RejectReason, u64>,
    /// Records dropped, by drop rule.
    pub dropped: BTreeMap<String, u64>,
    /// Webhook deliveries enqueued for the object's events.
    pub deliveries: u64,
}

impl ObjectReport {
    pub(crate) fn new(unit: String, outcome: Outcome) -> ObjectReport {
        ObjectReport {
            unit,
            outcome,
            records: 0,
            loaded: 0,
            duplicates: 0,
            quarantined: BTreeMap::new(),
            dropped: BTreeMap::new(),
            deliveries: 0,
        }
    }

    pub fn quarantined_total(&self) -> u64 {
        self.quarantined.values().sum()
    }
}

/// Why an object must be delivered again.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error(transparent)]
    Database(#[from] Error),
    #[error("object store: {0}")]
    Store(String),
}

impl From<sqlx::Error> for TransformError {
    fn from(e: sqlx::Error) -> Self {
        TransformError::Database(e.into())
    }
}
