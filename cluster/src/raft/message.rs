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
/// Names a follower's request for a read index (`Message::ReadIndex`), echoed in the
/// leader's answer. Unique per node incarnation and term: a node starts its numbering at a
/// random point drawn from the injected RNG, so an answer to a request sent before a restart
/// cannot be mistaken for the answer to a new one.
pub type ReadRequest = u64;
/// Numbers the core's storage appends (`Output::Append`); storage reports completion by the
/// highest one done. Not to be confused with a client's exactly-once id (`WriteId` in
/// `chat.proto`, [`crate::chat`]'s session sequence): this one never leaves the process.
pub type AppendId = u64;

/// Terms above this are refused in peer messages. No correct cluster gets near it (a term
/// grows by one per election), and refusing more keeps every `term + 1` from overflowing.
pub const MAX_TERM: Term = u64::MAX >> 2;
/// A node refuses a message whose term is more than this far ahead of its own. A correct
/// peer gets ahead by one term per election it took part in (pre-vote keeps a cut-off node
/// from inflating its term), so no correct gap comes near it; without it, one forged message
/// at [`MAX_TERM`] would leave the cluster no term to campaign in.
pub const MAX_TERM_JUMP: Term = 1 << 32;
/// A follower refuses a snapshot more than this far past its own last index. A correct
/// leader's snapshot is ahead by the entries committed while the follower lagged: 2^40 is
/// over three years of 10,000 writes a second. Without it, one forged snapshot at
/// [`MAX_INDEX`] would leave the cluster no index to append at.
pub const MAX_SNAPSHOT_JUMP: Index = 1 << 40;
/// Indexes above this are refused in peer messages, for the same reason: `prev_index +
/// entries.len()`, `matched + 1` and friends cannot overflow.
pub const MAX_INDEX: Index = u64::MAX >> 2;

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
/// `data` is opaque to the core. The replica leaves it empty: a snapshot there is a whole
/// SQLite database, kept in a file named by `term` and `index` (`storage/snapshots.rs`) and
/// never in memory. The simulator, a model, keeps its state machine's state in it.
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
    /// A follower asks the leader for a read index (thesis 6.4.1) on behalf of every read
    /// that arrived since its previous request. The leader answers once a quorum has
    /// confirmed its leadership after this request arrived.
    ReadIndex {
        request: ReadRequest,
    },
    /// The leader's answer: a read that arrived at the follower before `request` was sent is
    /// linearizable once the follower has applied through `index`.
    ReadIndexResponse {
        request: ReadRequest,
        index: Index,
    },
}

/// Why a peer message was refused: no correct peer sends it. `kind` names the message and
/// `reason` the rule it breaks; both are fixed strings, so a flood of bad messages costs no
/// allocation and can be counted per reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {reason}")]
pub struct InvalidMessage {
    pub kind: &'static str,
    pub reason: &'static str,
}

impl Message {
    /// The message's name, as in the enum.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::PreVote { .. } => "PreVote",
            Message::PreVoteResponse { .. } => "PreVoteResponse",
            Message::Vote { .. } => "Vote",
            Message::VoteResponse { .. } => "VoteResponse",
            Message::Append { .. } => "Append",
            Message::AppendResponse { .. } => "AppendResponse",
            Message::InstallSnapshot { .. } => "InstallSnapshot",
            Message::ReadIndex { .. } => "ReadIndex",
            Message::ReadIndexResponse { .. } => "ReadIndexResponse",
        }
    }
}

impl Envelope {
    /// The checks that need nothing but the message itself: every term and index is in
    /// range and consistent with the others and with the envelope's term, as a correct
    /// sender makes them. The receiver's own checks (addressing, what it sent) are in
    /// [`crate::raft::Node::validate`], which calls this.
    ///
    /// - Terms are at most [`MAX_TERM`], indexes at most [`MAX_INDEX`].
    /// - Requests (`PreVote`, `Vote`, `Append`, `InstallSnapshot`) come from a term >= 1.
    /// - A log position names index 0 with term 0, and any later index with a term >= 1.
    /// - A candidate's last term is below the term it campaigns in.
    /// - An append's entries follow `prev_index` one by one, their terms never decrease, start
    ///   at `prev_term` or later, and none is above the envelope's term.
    /// - `durable <= matched`; a rejection's hint points at or before the rejected
    ///   `prev_index`, with a term no later than the envelope's.
    /// - A snapshot covers at least index 1, with a term between 1 and the envelope's.
    /// - A read index is between 1 (a leader's read index is at least its no-op's) and
    ///   [`MAX_INDEX`]; requests for one come from a term >= 1.
    pub fn check(&self) -> Result<(), InvalidMessage> {
        let kind = self.message.kind();
        let fail = |reason| Err(InvalidMessage { kind, reason });
        let term = self.term;
        if term > MAX_TERM {
            return fail("term out of range");
        }
        let is_request = matches!(
            self.message,
            Message::PreVote { .. }
                | Message::Vote { .. }
                | Message::Append { .. }
                | Message::InstallSnapshot { .. }
                | Message::ReadIndex { .. }
        );
        if is_request && term == 0 {
            return fail("a request from term 0");
        }
        // (index, term) names a log position: index 0 has term 0, later ones a term >= 1.
        let position_ok = |index: Index, t: Term| index <= MAX_INDEX && (index == 0) == (t == 0);
        match &self.message {
            Message::PreVote {
                last_index,
                last_term,
            }
            | Message::Vote {
                last_index,
                last_term,
            } => {
                if !position_ok(*last_index, *last_term) {
                    return fail("last log position out of range");
                }
                if *last_term >= term {
                    return fail("last log term not below the campaign's term");
                }
            }
            Message::PreVoteResponse { .. } | Message::VoteResponse { .. } => {}
            Message::Append {
                prev_index,
                prev_term,
                entries,
                commit,
                read_seq: _,
            } => {
                if !position_ok(*prev_index, *prev_term) {
                    return fail("previous log position out of range");
                }
                if *prev_term > term {
                    return fail("previous term above the leader's term");
                }
                if *commit > MAX_INDEX {
                    return fail("commit index out of range");
                }
                let fits = u64::try_from(entries.len())
                    .ok()
                    .and_then(|n| prev_index.checked_add(n))
                    .is_some_and(|last| last <= MAX_INDEX);
                if !fits {
                    return fail("entries run past the largest index");
                }
                let mut last_term = (*prev_term).max(1);
                for (expect, e) in (prev_index + 1..).zip(entries) {
                    if e.index != expect {
                        return fail("entries do not follow prev_index one by one");
                    }
                    if e.term < last_term {
                        return fail("entry terms decrease");
                    }
                    if e.term > term {
                        return fail("entry term above the leader's term");
                    }
                    last_term = e.term;
                }
            }
            Message::AppendResponse { outcome, .. } => match outcome {
                AppendOutcome::Accepted { matched, durable } => {
                    if *matched > MAX_INDEX {
                        return fail("matched index out of range");
                    }
                    if durable > matched {
                        return fail("durable above matched");
                    }
                }
                AppendOutcome::Rejected {
                    prev_index,
                    hint_index,
                    hint_term,
                } => {
                    if *prev_index > MAX_INDEX {
                        return fail("rejected index out of range");
                    }
                    if hint_index > prev_index {
                        return fail("hint after the rejected index");
                    }
                    if let Some(t) = hint_term
                        && (*t == 0 || *t > term || *hint_index == 0)
                    {
                        return fail("hint term out of range");
                    }
                }
            },
            Message::InstallSnapshot { snapshot, .. } => {
                if snapshot.index == 0 || !position_ok(snapshot.index, snapshot.term) {
                    return fail("snapshot position out of range");
                }
                if snapshot.term > term {
                    return fail("snapshot term above the leader's term");
                }
            }
            Message::ReadIndex { .. } => {}
            Message::ReadIndexResponse { index, .. } => {
                if *index == 0 || *index > MAX_INDEX {
                    return fail("read index out of range");
                }
            }
        }
        Ok(())
    }
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
            Message::ReadIndex { request } => write!(f, "ReadIndex request={request}"),
            Message::ReadIndexResponse { request, index } => {
                write!(f, "ReadIndexResponse request={request} index={index}")
            }
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
