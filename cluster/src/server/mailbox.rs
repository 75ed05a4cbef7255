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

use tokio::sync::oneshot;

use super::error::RequestError;
use crate::chat::Outcome;
/// Reads of the chat state are the state machine's own types (`chat/query.rs`).
pub use crate::chat::{Query, QueryOutput};
use crate::raft::{AppendId, Entry, Envelope, HardState, Index, Snapshot, Status};

/// The answer to a proposed write: what it created, or why it failed.
pub type ProposeReply = oneshot::Sender<Result<Outcome, RequestError>>;
/// The answer to a read.
pub type ReadReply = oneshot::Sender<Result<QueryOutput, RequestError>>;

/// The core actor's inbox: everything that can change Raft state, plus status requests.
pub enum CoreInput {
    Peer(Envelope),
    Propose {
        write: Vec<u8>,
        reply: ProposeReply,
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
    /// The storage writer or the applier finished something.
    Done(Completion),
}

/// What the storage writer and the applier report to the core actor.
#[derive(Debug, PartialEq, Eq)]
pub enum Completion {
    /// Every append up to and including `up_to` is durable (one report per fdatasync).
    Persisted { up_to: AppendId },
    /// The applier snapshotted the state machine after applying `index`.
    SnapshotTaken { index: Index, data: Vec<u8> },
}

/// The storage writer's inbox. Requests are performed in order.
pub enum StorageRequest {
    /// Entries to append; completion is reported as [`Completion::Persisted`] after the
    /// batch's fdatasync.
    Append(AppendId, Vec<Entry>),
    /// Term and vote: answered on the oneshot once durable.
    HardState(HardState, oneshot::Sender<()>),
    /// A snapshot this node took: save it and drop the entries it covers.
    Compact(Snapshot),
    /// A snapshot from the leader: save it and replace the whole log; answered on the
    /// oneshot once durable.
    Install(Snapshot, oneshot::Sender<()>),
}

/// The applier's inbox. One queue for applies and queries, so a query queued after the
/// batch that reaches its read index sees that batch.
pub enum ApplierMsg {
    /// Committed entries in log order, with the replies of the proposals they complete.
    Apply {
        entries: Vec<Entry>,
        replies: Vec<(Index, ProposeReply)>,
    },
    Query {
        query: Query,
        reply: ReadReply,
    },
    /// Replace the state with a snapshot's data; answered once done.
    Restore {
        data: Vec<u8>,
        done: oneshot::Sender<()>,
    },
    /// Finish what is queued before this, then stop (the services still hold senders for
    /// local reads, so the queue would never close on its own).
    Stop,
}
