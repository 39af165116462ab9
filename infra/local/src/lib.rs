//! The local stack behind the `ferry` command: a private PostgreSQL started from the machine's
//! binaries, a local queue with real visibility-timeout semantics, a bucket directory with a
//! watcher, backfill, the demo traffic and a partner webhook receiver.
//!
//! Where to look: [`stack`] opens the stack (a `DATABASE_URL`, or the private server of
//! [`postgres`]; [`citus`] when it is a Citus coordinator); [`queue`] is the local queue;
//! [`bucket`] the bucket directory, watcher and backfill; [`demo`] and [`webhooks`] the demo's
//! traffic and its partner, whose receiver is [`partner`]. The commands are in `main.rs`, one
//! function each.

pub mod bucket;
pub mod citus;
pub mod demo;
pub mod partner;
pub mod postgres;
pub mod queue;
pub mod stack;
pub mod webhooks;
