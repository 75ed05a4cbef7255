//! The vocabulary of the Raft core: identifiers, log entries, peer messages, and the
//! inputs and outputs exchanged with whoever drives the core (the core actor or the simulator).
//!
//! Everything here is plain data. Messages are addressed with an [`Envelope`] that carries the
//! sender's term, so term handling happens once, in one place, before a role sees the message.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's identifier within the cluster. Never 0.
pub type NodeId = u64;
/// A leadership term. Terms start at 0 (no leader yet) and only grow.
pub type Term = u64;
/// A log position. Index 0 is the empty log; the first entry has index 1.
pub type Index = u64;
/// The caller's identifier for a linearizable read, echoed back when it can be served.
pub type ReadId = u64;
/// A leader's read-confirmation round. Followers echo the latest round they saw.
pub type ReadSeq = u64;
/// Numbers the core's storage appends (`Output::Append`); storage reports completion by the
/// highest one done. Not to be confused with a client's exactly-once id (`WriteId` in
/// `chat.proto`, [`crate::chat`]'s session sequence): this one never leaves the process.
pub type AppendId = u64;
/// The old name of [`AppendId`], kept only until the simulator (edited separately) moves to
/// the new one.
#[doc(hidden)]
pub type WriteId = AppendId;

/// A log entry. `command` is `None` for the no-op a new leader appends to commit its term.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub index: Index,
    pub term: Term,
    pub command: Option<Vec<u8>>,
}

/// The state that must survive a crash before the node answers anything that depends on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
}

/// A state-machine snapshot covering every entry up to and including `index`.
/// `data` is opaque to the core.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub index: Index,
    pub term: Term,
    pub data: Vec<u8>,
}

/// A message from one node to another. `term` is the sender's current term, except for
/// pre-votes, which carry the term the sender would campaign in (thesis 9.6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub message: Message,
}

/// Peer messages. Requests and their responses are paired by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// "Would you vote for me if I campaigned?" Changes no term or vote on either side.
    PreVote {
        last_index: Index,
        last_term: Term,
    },
    PreVoteResponse {
        granted: bool,
    },
    /// A real vote request. The receiver persists its vote before granting.
    Vote {
        last_index: Index,
        last_term: Term,
    },
    VoteResponse {
        granted: bool,
    },
    /// Replicates `entries` after (`prev_index`, `prev_term`). An empty `entries` is a
    /// heartbeat. `read_seq` is the leader's current read round, echoed in the response.
    Append {
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
        read_seq: ReadSeq,
    },
    AppendResponse {
        read_seq: ReadSeq,
        outcome: AppendOutcome,
    },
    /// Replaces a follower's log with a snapshot when the entries it needs were compacted.
    /// Answered with an `AppendResponse`.
    InstallSnapshot {
        snapshot: Snapshot,
        read_seq: ReadSeq,
    },
}

/// The result of an `Append` or `InstallSnapshot` at the follower.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendOutcome {
    /// The follower's log matches the leader's up to `matched`, and up to `durable` it is
    /// also persisted (`durable <= matched`). Only `durable` counts towards commitment.
    Accepted { matched: Index, durable: Index },
    /// The follower has no entry (`prev_index`, `prev_term`). The hint lets the leader skip
    /// a whole term at a time (thesis 5.3 optimisation): `hint_term` is the term the
    /// follower holds at `prev_index` (None when its log is shorter), and `hint_index` the
    /// first index of that term, or the follower's last index + 1.
    Rejected {
        prev_index: Index,
        hint_index: Index,
        hint_term: Option<Term>,
    },
}

/// The node's role, as reported in status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    Candidate,
    Leader,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        })
    }
}

/// What the core asks of its driver. Outputs are ordered and the driver must honour the order
/// as described in the module docs of [`crate::raft`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Persist term and vote. Synchronous: durable before any later output is acted on.
    HardState(HardState),
    /// Persist these entries, first discarding any stored entry at or after the first one's
    /// index. Asynchronous: writes complete in `id` order; report completion with
    /// `persisted(id)` (one report may cover several writes).
    Append { id: AppendId, entries: Vec<Entry> },
    /// Replace the state machine and the whole log with this snapshot. Synchronous, like
    /// `HardState`.
    Restore(Snapshot),
    /// Send a message. May be sent at once: messages that depend on durability are only
    /// emitted once the core knows the data is durable.
    Send(Envelope),
    /// Apply these committed entries to the state machine, in order.
    Apply(Vec<Entry>),
    /// The read `id` is linearizable once the state machine has applied through `index`,
    /// which every `Apply` emitted before this output covers.
    ReadReady { id: ReadId, index: Index },
    /// The read `id` cannot be served here (leadership lost); retry at `leader`.
    ReadAborted { id: ReadId, leader: Option<NodeId> },
}

/// A snapshot of a node's progress, for status RPCs, tests and the simulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub vote: Option<NodeId>,
    pub leader: Option<NodeId>,
    pub commit_index: Index,
    pub applied_index: Index,
    pub persisted_index: Index,
    pub last_index: Index,
    pub snapshot_index: Index,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.command {
            None => write!(f, "{}@{} noop", self.index, self.term),
            Some(c) => write!(
                f,
                "{}@{} {}",
                self.index,
                self.term,
                String::from_utf8_lossy(c)
            ),
        }
    }
}

fn fmt_entries(entries: &[Entry]) -> String {
    entries
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}→n{} t{} ", self.from, self.to, self.term)?;
        match &self.message {
            Message::PreVote {
                last_index,
                last_term,
            } => {
                write!(f, "PreVote last={last_index}@{last_term}")
            }
            Message::PreVoteResponse { granted } => write!(f, "PreVoteResponse granted={granted}"),
            Message::Vote {
                last_index,
                last_term,
            } => {
                write!(f, "Vote last={last_index}@{last_term}")
            }
            Message::VoteResponse { granted } => write!(f, "VoteResponse granted={granted}"),
            Message::Append {
                prev_index,
                prev_term,
                entries,
                commit,
                read_seq,
            } => write!(
                f,
                "Append prev={prev_index}@{prev_term} commit={commit} read_seq={read_seq} [{}]",
                fmt_entries(entries)
            ),
            Message::AppendResponse { read_seq, outcome } => match outcome {
                AppendOutcome::Accepted { matched, durable } => write!(
                    f,
                    "AppendResponse read_seq={read_seq} accepted matched={matched} durable={durable}"
                ),
                AppendOutcome::Rejected {
                    prev_index,
                    hint_index,
                    hint_term,
                } => write!(
                    f,
                    "AppendResponse read_seq={read_seq} rejected prev={prev_index} hint={hint_index}@{}",
                    hint_term.map_or("-".to_string(), |t| t.to_string())
                ),
            },
            Message::InstallSnapshot { snapshot, read_seq } => write!(
                f,
                "InstallSnapshot {}@{} ({} bytes) read_seq={read_seq}",
                snapshot.index,
                snapshot.term,
                snapshot.data.len()
            ),
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::HardState(hs) => write!(
                f,
                "persist term={} vote={}",
                hs.term,
                hs.vote.map_or("-".to_string(), |v| v.to_string())
            ),
            Output::Append { id, entries } => write!(f, "append #{id} [{}]", fmt_entries(entries)),
            Output::Restore(s) => write!(f, "restore snapshot {}@{}", s.index, s.term),
            Output::Send(env) => write!(f, "send {env}"),
            Output::Apply(entries) => write!(f, "apply [{}]", fmt_entries(entries)),
            Output::ReadReady { id, index } => write!(f, "read {id} ready at {index}"),
            Output::ReadAborted { id, leader } => write!(
                f,
                "read {id} aborted leader={}",
                leader.map_or("-".to_string(), |l| l.to_string())
            ),
        }
    }
}
