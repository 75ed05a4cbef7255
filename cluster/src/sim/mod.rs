//! A seeded, single-threaded simulator for the Raft core.
//!
//! One run ("a seed") builds a cluster of 1 to 7 [`crate::raft::Node`]s and drives them
//! through simulated time in 1 ms steps, with everything decided by one seeded RNG:
//!
//! - a network that delays (sometimes by a lot), drops, duplicates and so reorders messages,
//!   and symmetric or one-way partitions that come and go;
//! - a disk per node: term/vote and snapshots are durable at once (the core's contract makes
//!   them synchronous), entry writes complete after a delay and in order, and a crash loses
//!   every write not yet completed along with all volatile state;
//! - crashes and restarts, and log compaction with snapshots sent to lagging followers;
//! - clients issuing writes (unique values appended to a list) and linearizable reads
//!   throughout, each client with one operation outstanding, retrying on failure.
//!
//! After every step the [`checker`] verifies Raft's safety properties; after the chaos phase
//! all faults heal and the run must reach a quiet, converged state within a bounded time
//! (liveness). The same seed always produces the same run, so any failure replays exactly
//! with `just sim seed=S`, which prints a readable trace.
//!
//! The simulator must be able to fail: `PlantedBugs` in the core's options switches on known
//! bugs, and the tests assert that each one is caught.

pub mod checker;
pub mod world;

pub use world::{SeedReport, SimConfig, run_seed};
