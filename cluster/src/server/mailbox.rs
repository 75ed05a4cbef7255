//! The messages the server's actors exchange, in one place, so that no actor imports another
//! to talk to it.
//!
//! ```text
//!  services ──CoreInput──▶ core actor ──StorageRequest──▶ storage writer
//!                              │  ▲    ──ApplierMsg─────▶ applier ◀──ApplierMsg::Query── services (local reads)
//!                              │  └──── Completion ─────── storage writer, applier
//!                              └──Envelope──▶ peer senders
//! ```
//!
//! - A request that wants an answer carries a `oneshot` sender for it (mini-redis style).
//!   Every answer to a client request is a `Result<_, RequestError>`: one error type from
//!   the actor that fails it to the service that maps it to a gRPC status.
//! - The storage writer and the applier report back with a [`Completion`], not with the core
//!   actor's own input type: they know what they finished, not who listens.
//!
//! # Every queue is bounded
//!
//! | queue | bound | when full |
//! |---|---|---|
//! | core inbox ([`CoreSender`]) | `--max-inflight` + [`PEER_INPUTS`] | clients: RESOURCE_EXHAUSTED; a peer message is dropped (Raft re-sends) |
//! | completions ([`Completions`]) | one slot per kind | a newer report replaces an older one (each covers the ones before) |
//! | storage writer | [`STORAGE_QUEUE`] requests | the core actor waits for room |
//! | applier | `2 x --max-inflight` + [`APPLIER_SLACK`] messages | the core actor waits for room; a local read is refused |
//! | peer sender | `peer::QUEUE` messages | the message is dropped (Raft re-sends) |
//! | HTTP/2 streams per connection | [`MAX_STREAMS_PER_CONNECTION`] | the client waits: its calls queue on its side |
//!
//! The depth of the core inbox, the storage writer's, the applier's and each peer sender's
//! queue is served as `telegraft_queue_depth{queue}` (`observe.rs`).
//!
//! A client request takes a slot of `--max-inflight` before it queues anywhere, and keeps it
//! until it is answered, so client work never exceeds that bound. The stream limit matters
//! as much: without one (tonic's default), a client can open any number of streams on one
//! connection, and a replica short of CPU accepts and buffers them all before any handler,
//! admission included, gets to run (a 4x overload grew a leader past 450 MB that way). The core actor waiting for
//! the storage writer or the applier is the backpressure that stops a slow disk or a slow
//! follower's SQLite from queueing without end: while it waits, its inbox fills and new
//! client requests are refused at once. Nothing waits on the core actor in return (the
//! writer and the applier report through [`Completions`], which never blocks), so the waits
//! cannot form a cycle.

use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::{Notify, mpsc as tmpsc, oneshot};

use super::error::RequestError;
use crate::chat::Outcome;
/// Reads of the chat state are the state machine's own types (`chat/query.rs`).
pub use crate::chat::{Query, QueryOutput};
use crate::raft::{AppendId, Entry, Envelope, HardState, Index, Snapshot, Status};

/// HTTP/2 streams one connection may have open at a replica: bounds what the gRPC server
/// accepts and holds before admission control sees it.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;
/// Room in the core inbox beyond the client requests, for peer messages and status calls.
pub const PEER_INPUTS: usize = 8192;
/// Storage requests queued before the core actor waits for the writer.
pub const STORAGE_QUEUE: usize = 1024;
/// Applier room beyond two messages per admitted client request (the reply's apply batch and
/// a read), for the applies a follower receives and status digests.
pub const APPLIER_SLACK: usize = 1024;

/// The answer to a proposed write: what it created, or why it failed.
pub type ProposeReply = oneshot::Sender<Result<Outcome, RequestError>>;
/// The answer to a read.
pub type ReadReply = oneshot::Sender<Result<QueryOutput, RequestError>>;

/// A client write followed by debug-level tracing spans (`RUST_LOG=telegraft=debug`): the
/// span to hang the next actor's span under, and the write id every span repeats. Only
/// made while those spans are enabled; otherwise the actors carry `None` or an empty
/// [`Traces`], which costs nothing.
#[derive(Clone, Debug)]
pub struct WriteTrace {
    pub span: tracing::Span,
    pub client_id: u64,
    pub sequence: u64,
}

/// The traced writes among a batch of entries, by log index.
pub type Traces = Vec<(Index, WriteTrace)>;

/// The core actor's inbox: everything that can change Raft state, plus status requests.
pub enum CoreInput {
    Peer(Envelope),
    Propose {
        write: Vec<u8>,
        reply: ProposeReply,
        /// The service's span, when tracing is on.
        trace: Option<WriteTrace>,
    },
    /// A linearizable read: served once the core confirms leadership and the applier
    /// caught up.
    Read {
        query: Query,
        reply: ReadReply,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    /// Fault injection (only with `--enable-fault-injection`): make an actor panic, to show
    /// that the process then stops.
    InjectPanic(PanicTarget),
}

/// Which actor [`CoreInput::InjectPanic`] makes panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PanicTarget {
    Core,
    StorageWriter,
}

/// The sending side of the core actor's bounded inbox. It never waits: a full inbox is an
/// overloaded replica, and the caller is told so at once.
#[derive(Clone, Debug)]
pub struct CoreSender {
    tx: tmpsc::Sender<CoreInput>,
}

/// The core actor's inbox, for `capacity` inputs.
pub fn core_inbox(capacity: usize) -> (CoreSender, tmpsc::Receiver<CoreInput>) {
    let (tx, rx) = tmpsc::channel(capacity);
    (CoreSender { tx }, rx)
}

impl CoreSender {
    /// Queues `input`: [`RequestError::Overloaded`] when the inbox is full,
    /// [`RequestError::Stopped`] when the core actor is gone.
    pub fn send(&self, input: CoreInput) -> Result<(), RequestError> {
        self.tx.try_send(input).map_err(|e| match e {
            tmpsc::error::TrySendError::Full(_) => RequestError::Overloaded,
            tmpsc::error::TrySendError::Closed(_) => RequestError::Stopped,
        })
    }
}

impl std::fmt::Debug for CoreInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CoreInput::Peer(_) => "Peer",
            CoreInput::Propose { .. } => "Propose",
            CoreInput::Read { .. } => "Read",
            CoreInput::Status { .. } => "Status",
            CoreInput::InjectPanic(_) => "InjectPanic",
        })
    }
}

/// Where the storage writer and the applier report to the core actor. Each kind of report
/// has one slot, and a newer report replaces the one before: `Persisted{up_to}` covers
/// every earlier append, and only the newest snapshot is worth compacting to. So reporting
/// never blocks and never queues, whatever the core actor is doing.
#[derive(Debug, Default)]
pub struct Completions {
    slots: Mutex<Reported>,
    notify: Notify,
}

/// What was reported since the core actor last looked.
#[derive(Debug, Default)]
pub struct Reported {
    pub persisted: Option<AppendId>,
    /// The newest snapshot file the applier made: the index it covers.
    pub snapshot: Option<Index>,
}

impl Completions {
    /// Records a report and wakes the core actor.
    pub fn report(&self, done: Completion) {
        {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            match done {
                Completion::Persisted { up_to } => {
                    slots.persisted = Some(slots.persisted.map_or(up_to, |p| p.max(up_to)));
                }
                Completion::SnapshotTaken { index } => {
                    if slots.snapshot.is_none_or(|i| i < index) {
                        slots.snapshot = Some(index);
                    }
                }
            }
        }
        self.notify.notify_one();
    }

    /// Takes what was reported since the last call.
    pub fn take(&self) -> Reported {
        std::mem::take(&mut *self.slots.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Completes once something was reported since the last wake-up (at once if it was
    /// reported while nobody waited).
    pub async fn reported(&self) {
        self.notify.notified().await;
    }
}

/// What the storage writer and the applier report to the core actor.
#[derive(Debug, PartialEq, Eq)]
pub enum Completion {
    /// Every append up to and including `up_to` is durable (one report per fdatasync).
    Persisted { up_to: AppendId },
    /// The applier snapshotted the state machine after applying `index`: the snapshot's
    /// file is durable (`storage::SnapshotDir`), only its position travels.
    SnapshotTaken { index: Index },
}

/// The storage writer's inbox. Requests are performed in order.
pub enum StorageRequest {
    /// Entries to append; completion is reported as [`Completion::Persisted`] after the
    /// batch's fdatasync. The traces of the client writes among them (tracing on only).
    Append(AppendId, Vec<Entry>, Traces),
    /// Term and vote: answered on the oneshot once durable.
    HardState(HardState, oneshot::Sender<()>),
    /// A snapshot this node took (its file already durable): save its metadata and drop the
    /// entries it covers.
    Compact(Snapshot),
    /// A snapshot from the leader (its file already durable, written as it was received):
    /// save its metadata and replace the whole log; answered on the oneshot once durable,
    /// with the snapshot handed back for the applier.
    Install(Snapshot, oneshot::Sender<Snapshot>),
    /// Fault injection: the writer thread panics (see [`CoreInput::InjectPanic`]).
    InjectPanic,
}

/// The applier's inbox. One queue for applies and queries, so a query queued after the
/// batch that reaches its read index sees that batch.
pub enum ApplierMsg {
    /// Committed entries in log order, with the replies of the proposals they complete,
    /// when the core actor saw them committed, and the traces of client writes among them.
    Apply {
        entries: Vec<Entry>,
        replies: Vec<(Index, ProposeReply)>,
        committed: Instant,
        traces: Traces,
    },
    Query {
        query: Query,
        reply: ReadReply,
    },
    /// Replace the state with the snapshot's file (named by its term and index); answered
    /// once done.
    Restore {
        snapshot: Snapshot,
        done: oneshot::Sender<()>,
    },
    /// Finish what is queued before this, then stop (the services still hold senders for
    /// local reads, so the queue would never close on its own).
    Stop,
}
