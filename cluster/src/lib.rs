//! Telegraft's replicated chat cluster.
//!
//! - [`raft`]: the sans-IO Raft core (no I/O, no clock; deterministic under a seeded RNG).
//! - [`sim`]: a seeded, single-threaded simulator that runs clusters of cores under message
//!   loss, delay, duplication, partitions and crashes, checking Raft's invariants after every
//!   step.
//! - [`storage`]: the durable Raft log (checksummed segments, group commit), hard state and
//!   snapshots.
//! - [`chat`]: the chat state machine on SQLite.
//! - [`admin`]: asking replicas for their status and who leads (one rule for every caller).
//! - [`proto`]: the gRPC API (chat, Raft peer transport, admin).
//! - [`server`]: one replica process (actors and gRPC services); [`launcher`]: a local
//!   cluster of replica processes.

pub mod admin;
pub mod chat;
pub mod launcher;
pub mod proto;
pub mod raft;
pub mod server;
pub mod sim;
pub mod storage;
