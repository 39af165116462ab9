//! The local stack behind the `ferry` command: a private PostgreSQL started from the machine's
//! binaries, a local queue with real visibility-timeout semantics, a bucket directory with a
//! watcher, backfill, the demo traffic and a partner webhook receiver.

pub mod bucket;
pub mod citus;
pub mod demo;
pub mod partner;
pub mod postgres;
pub mod queue;
pub mod stack;
pub mod webhooks;
