//! ferry's integration tests: one test binary, one module per area, all against real parts —
//! a real PostgreSQL (the one in `DATABASE_URL`, or a throwaway server the harness starts),
//! real HTTP on loopback, the real function binaries, moto server and Azurite.
//!
//! Where to look:
//! - [`harness`]: fresh databases, the function binaries, emulators, a webhook receiver;
//! - `ingest`, `bad_input`, `exactly_once`, `derived`: the shared loader through ingest;
//! - `transform`, `rollup`, `fanout`, `query`: one module per function;
//! - `contract_*`: the real binaries on the Lambda Runtime API and as Azure custom handlers;
//! - `schema`, `extensions`, and `citus` (feature `citus`, `scripts/test-citus.sh`).
//!
//! Run one area with a filter: `cargo test -p ferry-tests -- transform::`.

// The helpers of a test crate unwrap as its tests do (the workspace denies unwrap elsewhere).
#![allow(clippy::unwrap_used)]

mod harness;

mod bad_input;
#[cfg(feature = "citus")]
mod citus;
mod contract_azure;
mod contract_fanout;
mod contract_lambda;
mod contract_nudge;
mod contract_rollup;
mod contract_secrets;
mod contract_transform;
mod derived;
mod docs;
mod exactly_once;
mod extensions;
mod fanout;
mod ingest;
mod query;
mod rollup;
mod schema;
mod transform;
