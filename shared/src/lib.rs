//! ferry's common crate: what every function shares, and nothing that knows a cloud platform
//! (adapters in `infra/runtime` translate platform payloads into the types of [`trigger`]).
//!
//! Where to look:
//! - [`event`], [`validate`]: the CloudEvents model and its strict validation, with typed
//!   rejection reasons;
//! - [`ledger`]: the exactly-once ledger (claim a delivery unit, settle its counts);
//! - [`load`]: the loader — units or chunks of events into PostgreSQL in one transaction;
//! - [`db`]: pools, embedded migrations, partitions; [`placement`]: where tables go on Citus;
//! - [`queries`]: the read side (rollups, findings) for the CLI and tests;
//! - [`config`]: every variable ferry reads; [`telemetry`]: logs; [`trigger`]: the contract
//!   between a function and the platform adapters.

pub mod config;
pub mod copy;
pub mod db;
pub mod error;
mod event;
#[cfg(fault_injection)]
pub mod faults;
pub mod ledger;
pub mod load;
pub mod placement;
pub mod queries;
pub mod telemetry;
pub mod trigger;
pub mod validate;

pub use config::{Config, Limits};
pub use error::Error;
pub use event::{Event, RejectReason, Rejection};
pub use load::{Loader, LoaderConfig, Unit, UnitReport};
pub use trigger::{
    BlobCreated, BlobHandler, QueueBatch, QueueHandler, QueueMessage, QueueOutcome, Retry, Tick,
    TickHandler,
};
