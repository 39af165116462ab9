//! Errors of the shared crate, split into retryable and permanent.
//!
//! The split is what adapters act on: a retryable error means "redeliver this unit later",
//! a permanent one means "this input can never be stored; quarantine it and acknowledge".

use thiserror::Error;

#[cfg(fault_injection)]
use crate::faults::CrashPoint;

/// An error from the database layer or the loader.
#[derive(Debug, Error)]
pub enum Error {
    /// The database cannot be reached at all (connection refused, pool timeout, shutdown).
    /// Retrying smaller pieces of work now will not help.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The database is reachable but this attempt failed for an operational reason that may
    /// pass on retry (lock or statement timeout, serialization failure, deadlock, missing
    /// partition or table, permissions): anything not known to be the input's fault.
    #[error("transient database failure: {0}")]
    Transient(#[source] sqlx::Error),
    /// The database refused the data (SQLSTATE classes 22, 23, 54); retrying the same input
    /// gives the same answer.
    #[error("database refused the data: {0}")]
    Permanent(#[source] sqlx::Error),
    /// An insert without `ON CONFLICT` (the loader's first try, see
    /// [`Load::cautious`](crate::load::Load::cautious)) met a stored copy of one of its events
    /// (SQLSTATE 23505). Nothing of the transaction is kept; the load is redone with
    /// `ON CONFLICT DO NOTHING`, which stores the rest and counts the copies as duplicates.
    #[error("an event of the load is stored already: {0}")]
    Conflict(#[source] sqlx::Error),
    /// A crash injected by a test (debug builds with the `fault-injection` feature only).
    #[cfg(fault_injection)]
    #[error("injected crash {0:?}")]
    InjectedCrash(CrashPoint),
}

impl Error {
    /// True when the unit should be redelivered rather than quarantined.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Error::Permanent(_))
    }

    /// True when the database as a whole is unreachable (or, in tests, the process "died"), so
    /// splitting the work into smaller transactions is pointless.
    pub fn is_unavailable(&self) -> bool {
        #[cfg(fault_injection)]
        if matches!(self, Error::InjectedCrash(_)) {
            return true;
        }
        matches!(self, Error::Unavailable(_))
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        classify(e)
    }
}

/// Sorts a sqlx error into unavailable, transient or permanent.
pub fn classify(e: sqlx::Error) -> Error {
    use sqlx::Error as E;
    match &e {
        E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => {
            Error::Unavailable(e)
        }
        E::Protocol(_) => Error::Unavailable(e),
        E::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            match code.as_str() {
                // connection exceptions, admin shutdown, crash shutdown, cannot connect now
                c if c.starts_with("08") => Error::Unavailable(e),
                "57P01" | "57P02" | "57P03" => Error::Unavailable(e),
                // no partition for a row (one was dropped under us): retry after re-creating
                "23514" => Error::Transient(e),
                // data exceptions, integrity violations, program limits: this input can never
                // be stored, and retrying gives the same answer
                c if c.starts_with("22") || c.starts_with("23") || c.starts_with("54") => {
                    Error::Permanent(e)
                }
                // everything else (timeouts, serialization failures, deadlocks, a missing table
                // because code was deployed before `ferry migrate`, permissions, internal
                // errors) is operational, not the input's fault: retry, never quarantine
                _ => Error::Transient(e),
            }
        }
        _ => Error::Transient(e),
    }
}
