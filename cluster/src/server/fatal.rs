//! The one way a running replica stops on its own: a failure after which going on could
//! acknowledge what is not durable, or serve state that is not what was committed.
//!
//! - The Raft storage failed (log segment, hard state or snapshot file): an fsync or write
//!   error on the node's own disk.
//! - The state machine failed (SQLite): the applied state can no longer be trusted to match
//!   the log.
//! - An actor died: the core actor, a peer sender, the storage writer or the applier
//!   panicked, or one of them ended before the stop notice, or is gone while the core still
//!   needs it.
//!
//! Each stops the process with exit code [`EXIT_CODE`] and a message that says which of
//! these happened. Deterministic request errors never come here: they go back to the client
//! (`error.rs`).
//!
//! # A dead actor ends the process
//!
//! A replica with a dead actor must not keep its port open: it would answer every call with
//! an error for good, where a supervisor restarting the process from its durable state would
//! have it back in a second. So every actor is watched:
//! - tasks (the core actor, the peer senders) run under [`supervise`], which stops the
//!   process if the task panics or returns before the stop notice;
//! - threads (the storage writer, the applier and its snapshot thread) are recognised by name by the panic hook
//!   [`stop_on_actor_thread_panic`] installs, which stops the process from the panicking
//!   thread itself, before the panic unwinds. Their other ways to end are a fatal error
//!   (already a stop) or the stop at shutdown.
//!
//! The gRPC server ending with an error returns from `server::run`, which exits non-zero.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Once;

use futures_util::FutureExt;
use tokio::sync::watch;

use crate::chat::StoreError;
use crate::storage::StorageError;

/// The process exit code of a fatal stop (EX_SOFTWARE).
pub const EXIT_CODE: i32 = 70;

/// The storage writer's thread name (the panic hook knows the thread by it).
pub const STORAGE_WRITER_THREAD: &str = "storage-writer";
/// The applier's thread name, as `applier.rs` names it.
pub const APPLIER_THREAD: &str = "applier";
/// The applier's snapshot thread, as `applier.rs` names it.
pub const SNAPSHOT_THREAD: &str = "snapshot";

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
    #[error("the {actor} panicked")]
    ActorPanicked { actor: &'static str },
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

/// Runs an actor's task body; if it panics, or returns while `stopping` is still false, the
/// process stops. A task that returns after the stop notice has simply finished.
pub async fn supervise(
    actor: &'static str,
    stopping: watch::Receiver<bool>,
    body: impl Future<Output = ()>,
) {
    match AssertUnwindSafe(body).catch_unwind().await {
        Err(_) => stop(Fatal::ActorPanicked { actor }),
        Ok(()) if !*stopping.borrow() => stop(Fatal::ActorStopped {
            actor,
            during: "the replica was serving",
        }),
        Ok(()) => {}
    }
}

/// Installs (once per process) a panic hook that stops the process when a thread named
/// [`STORAGE_WRITER_THREAD`], [`APPLIER_THREAD`] or [`SNAPSHOT_THREAD`] panics. The panic is printed first, as
/// usual; panics elsewhere are left as they were.
pub fn stop_on_actor_thread_panic() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            let actor = match std::thread::current().name() {
                Some(STORAGE_WRITER_THREAD) => "storage writer",
                Some(APPLIER_THREAD) => "applier",
                Some(SNAPSHOT_THREAD) => "snapshot maker",
                _ => return,
            };
            stop(Fatal::ActorPanicked { actor });
        }));
    });
}
