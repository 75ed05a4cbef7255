//! Telegraft's replicated chat cluster.
//!
//! # Layout
//!
//! Public:
//! - [`raft`]: the sans-IO Raft core (no I/O, no clock; deterministic under a seeded RNG).
//! - [`sim`]: a seeded, single-threaded simulator that runs clusters of cores under message
//!   loss, delay, duplication, partitions and crashes, checking Raft's invariants after every
//!   step.
//! - [`proto`]: the gRPC API (chat, admin) and timestamp conversions ([`proto::time`]).
//! - [`admin`]: asking replicas for their status and who leads (one rule for every caller).
//! - [`launcher`]: a local cluster of replica processes ([`launcher::LocalCluster`]).
//! - [`security`]: certificates (`telegraft certs`), TLS identities, chat tokens and
//!   passwords.
//! - [`run`] and [`NodeConfig`]: one replica process (what `telegraft node` runs).
//! - [`StorageWriter`] and [`RaftStorage`]: the durable log and its group-commit writer on
//!   their own, for measuring them (`telegraft-bench log`).
//!
//! Private (reached only through the items above):
//! - `storage`: the durable Raft log (checksummed segments), hard state and snapshots, and
//!   their reconciliation with the state machine at startup.
//! - `chat`: the chat state machine on SQLite.
//! - `server`: the actors around the core and the gRPC services.

pub mod admin;
mod chat;
pub mod launcher;
pub mod proto;
pub mod raft;
pub mod security;
mod server;
pub mod sim;
mod storage;

pub use server::{
    Completion, NodeConfig, ServerError, StorageWriter, WriterStats, id_from_hostname, run,
};
pub use storage::{RaftStorage, StorageError};
