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
//! After every step the `checker` verifies Raft's safety properties; after the chaos phase
//! all faults heal and the run must reach a quiet, converged state within a bounded time
//! (liveness). The same seed always produces the same run, so any failure replays exactly
//! with `just sim seed=S`, which prints a readable trace.
//!
//! The simulator must be able to fail: `PlantedBugs` in the core's options switches on known
//! bugs, and the tests assert that each one is caught.
//!
//! # Layout
//!
//! - `simulation`: one seed's run ([`run_seed`]): the network, clients, fault
//!   schedule and replicas, each replica a [`SimNode`] with a state machine and a clock.
//! - `host`: [`SimNode`] and [`Disk`], a core with the disk and storage queue it writes
//!   through. The golden scripts (`tests/golden.rs`) drive cores through the same type, so
//!   the storage half of the driver contract has one implementation in tests.
//! - `checker`: the invariants.
//!
//! The modules are private; what drivers outside need is re-exported here.

mod checker;
mod host;
mod simulation;

pub use host::{Disk, SimNode};
pub use simulation::{SeedReport, SimConfig, Stats, run_seed};
