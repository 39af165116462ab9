//! ferry's common crate: the CloudEvents model and its strict validation, typed configuration,
//! PostgreSQL access and embedded migrations, the exactly-once loader shared by every function,
//! the trigger contract, and telemetry.
//!
//! Nothing here knows about a cloud platform: adapters in `infra/runtime` translate platform
//! payloads into the types of [`trigger`].

pub mod config;
pub mod copy;
pub mod db;
pub mod error;
pub mod event;
#[cfg(all(feature = "fault-injection", debug_assertions))]
pub mod faults;
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
