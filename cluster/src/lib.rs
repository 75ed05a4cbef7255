//! Telegraft's replicated chat cluster.
//!
//! - [`raft`]: the sans-IO Raft core (no I/O, no clock; deterministic under a seeded RNG).
//! - [`sim`]: a seeded, single-threaded simulator that runs clusters of cores under message
//!   loss, delay, duplication, partitions and crashes, checking Raft's invariants after every
//!   step.

pub mod raft;
pub mod sim;
