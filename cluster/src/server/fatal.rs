//! The one way a running replica stops on its own: a failure after which going on could
//! acknowledge what is not durable, or serve state that is not what was committed.
//!
//! - The Raft storage failed (log segment, hard state or snapshot file): an fsync or write
//!   error on the node's own disk.
//! - The state machine failed (SQLite): the applied state can no longer be trusted to match
//!   the log.
//! - An actor the core actor depends on (the storage writer, the applier) is gone while the
//!   core still needs it, which only a crash of that thread explains.
//!
//! Each stops the process with exit code [`EXIT_CODE`] and a message that says which of
//! these happened. Deterministic request errors never come here: they go back to the client
//! (`error.rs`).

use crate::chat::StoreError;
use crate::storage::StorageError;

/// The process exit code of a fatal stop (EX_SOFTWARE).
pub const EXIT_CODE: i32 = 70;

#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    #[error("Raft storage failure (log, hard state or snapshot files): {0}")]
    Storage(#[from] StorageError),
    #[error("state machine failure (SQLite chat store): {0}")]
    StateMachine(#[from] StoreError),
    #[error("the {actor} stopped while {during}")]
    ActorStopped {
        actor: &'static str,
        during: &'static str,
    },
}

/// Logs why and exits with [`EXIT_CODE`].
pub fn stop(why: impl Into<Fatal>) -> ! {
    let why = why.into();
    tracing::error!("FATAL, stopping: {why}");
    eprintln!("telegraft: FATAL, stopping (exit code {EXIT_CODE}): {why}");
    std::process::exit(EXIT_CODE);
}

/// The storage writer is gone while the core actor needed it.
pub fn writer_stopped(during: &'static str) -> ! {
    stop(Fatal::ActorStopped {
        actor: "storage writer",
        during,
    })
}

/// The applier is gone while the core actor needed it.
pub fn applier_stopped(during: &'static str) -> ! {
    stop(Fatal::ActorStopped {
        actor: "applier",
        during,
    })
}
