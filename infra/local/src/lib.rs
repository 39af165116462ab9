//! The local stack behind the `ferry` command: a private PostgreSQL started from the machine's
//! binaries, a local queue with real visibility-timeout semantics, a bucket directory with a
//! watcher, backfill, and the demo traffic.

pub mod bench;
pub mod blobs;
pub mod demo;
pub mod postgres;
pub mod queue;
pub mod stack;
