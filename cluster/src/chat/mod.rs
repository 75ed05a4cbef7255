//! The chat state machine: commands that go through the Raft log, and their deterministic
//! application to SQLite.
//!
//! Determinism is the point. Every replica applies the same entries in the same order, so:
//! - ids come from the log: a user, chat or message gets the index of the entry that created
//!   it, the same on every replica (the seed project's replica-local counters were not);
//! - validation that depends on state (unknown user, not a member, duplicate name) happens
//!   here, at apply time, and a rejected command changes nothing on any replica;
//! - exactly-once writes: a command may carry a [`SessionSeq`] (client id, sequence); the
//!   latest sequence per client, a hash of the command it carried and its outcome live in the
//!   same transaction as the change. A retry (same sequence, same command) returns the first
//!   outcome instead of applying twice; the same sequence with a different command is
//!   refused (FAILED_PRECONDITION), never answered with another command's outcome.
//!   Sequences and client ids use the whole `u64` range;
//! - time comes from the log too: a message's `committed_at` is derived at apply time from
//!   the clock of the leader that proposed it (carried in the entry), so it is the same on
//!   every replica and strictly increasing in commit order. Clients read messages in pages
//!   (`query.rs`) and poll with the last `committed_at` they saw.
//!
//! The state digest (`digest.rs`) is kept up to date as entries apply, so status reads no
//! table; every replica that applied the same entries has the same digest.
//!
//! Names are shown to people, so they refuse control and invisible characters (`text.rs`).
//!
//! Static checks (lengths, empty names, hidden characters) are also run before proposing,
//! so bad requests fail fast without costing a log entry; they are repeated here because
//! the log is the authority.

mod command;
mod digest;
mod hash;
mod query;
mod store;
mod text;

pub use command::{ChatError, Command, Outcome, SessionSeq, Write};
pub use query::{MessagesQuery, Query, QueryOutput};
pub use store::{ChatStore, SnapshotSource, StoreError};
pub use text::{escape_hidden, is_hidden};
