//! Durable state of one replica: the Raft log (`log.rs`), the hard state (term and vote)
//! and the latest snapshot (metadata in `raft/snapshot`, bytes in a file of `snapshots/`,
//! see `snapshots.rs`); and, at startup, their reconciliation with the state machine
//! ([`reconcile`]).
//!
//! Layout of a data directory:
//! ```text
//! DIR/raft/log/00000000000000000001.log   log segments (checksummed records)
//! DIR/raft/hardstate                      term + vote + crc32, replaced atomically
//! DIR/raft/snapshot                       index + term + crc32, replaced atomically
//! DIR/snapshots/snap-<term>-<index>.db    the snapshot's bytes (an SQLite database)
//! DIR/chat.sqlite                         the state machine (see crate::chat)
//! ```
//! "Replaced atomically" means: write a temporary file, fsync it, rename it over the old one,
//! fsync the directory. A crash leaves either the old or the new version, never a mix.
//!
//! Every I/O error is returned as a [`StorageError`]; the node treats any of them as fatal
//! (it stops loudly rather than continue with state it cannot trust).

mod error;
mod log;
mod raft_storage;
mod recovery;
mod snapshots;

pub use error::StorageError;
pub use raft_storage::RaftStorage;
pub use recovery::{StateMachine, reconcile};
pub use snapshots::{Incoming, IncomingError, Outgoing, SnapshotDir};
