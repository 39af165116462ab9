//! Crash points for the exactly-once tests.
//!
//! This module exists only in debug builds with the `fault-injection` feature; release builds
//! contain neither the hook nor the checks.

use std::sync::Arc;

/// Where a load can be made to "crash".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashPoint {
    /// The ledger rows are claimed, nothing else is written.
    AfterClaim,
    /// Everything is written, the transaction is not committed.
    AfterLoad,
    /// The transaction is committed, the platform has not been acknowledged.
    AfterCommit,
    /// A file is being loaded: part of it is staged, the transaction is still open
    /// (checked after each chunk of a blob).
    MidObject,
}

/// Decides, at each crash point, whether to crash there.
pub type FaultHook = Arc<dyn Fn(CrashPoint) -> bool + Send + Sync>;
