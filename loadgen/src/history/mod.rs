//! The history of a run: every call the checker follows, as it happened, and what becomes of
//! it.
//!
//! Each chat is an append-only list. `SendMessage` appends a message; the generator puts a
//! unique key (`k<client>-<sequence>`) at the start of every message's content, so a message
//! can be recognised wherever it shows up. The cluster stamps every message with
//! `committed_at` (the leader's clock at commit: the same on every replica, strictly
//! increasing in commit order). `GetMessages` is a poll with a cursor: it reads the messages
//! of the reader's chats whose `committed_at` is after the cursor, in commit order, and the
//! poller's next cursor is the largest `committed_at` it has seen. A poller therefore gets
//! every message of its chats exactly once, and the checker holds each poll to its window
//! `(cursor, ...]`. After the load, every chat's whole list is read from every
//! live replica (a `Final` event each; the leader's linearizable read is the reference), and
//! each replica's state digest is recorded. What could not be read is recorded too
//! (`Unread`, `Lagging`, `Down`), so that the checker never reports as passed what it did not
//! see.
//!
//! - this module: the events (one line of `history.jsonl` each) and the message keys;
//! - [`calls`]: how a finished call becomes an event (its outcome, what a read returned);
//! - [`check`]: the checker (lost, phantom, duplicate, reordered, stale, non-monotonic,
//!   divergent);
//! - [`elle`]: the same history in Elle's list-append form.
//!
//! The history knows nothing of files: the results folder writes and reads it
//! ([`crate::results`]).

mod calls;
mod check;
mod elle;

pub(crate) use calls::{CallTimes, read_event, seen, send_event};
pub use check::{Anomaly, Counts, Kind, LaggingReplica, Report, Verdict, check, check_with_skew};
pub use elle::to_elle;

use serde::{Deserialize, Serialize};

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It succeeded (and its result is recorded).
    Ok,
    /// The cluster definitely did not do it.
    Fail,
    /// It may or may not have happened (no answer, or the cluster could not tell).
    Unknown,
}

/// A message as a read returned it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub chat: u64,
    pub id: u64,
    /// The key at the start of the content, or the whole content when it has none.
    pub key: String,
    /// The send time the client wrote into it (µs since the Unix epoch; 0 if none).
    pub sent_us: i64,
    /// Its `committed_at` (µs since the Unix epoch; 0 if the cluster gave none). Required:
    /// a history without it was written before polls used `committed_at` cursors
    /// ([`OLD_FORMAT`]).
    pub committed_us: i64,
}

/// What reading a history written before polls used `committed_at` cursors says.
pub const OLD_FORMAT: &str = "written by an older loadgen, whose polls and history \
    windows used the clients' send times, not the cluster's committed_at (its reads have \
    `after_us`, not `cursor_us`, and its messages no `committed_us`); this loadgen cannot \
    check it: re-run the scenario, or check it with the loadgen that wrote it";

/// Whether a history line that does not parse is one of an older loadgen's (see
/// [`OLD_FORMAT`]).
pub fn is_old_format(line: &str) -> bool {
    line.contains("\"after_us\"")
        || (line.contains("\"sent_us\"")
            && line.contains("\"key\"")
            && line.contains("\"messages\"")
            && !line.contains("\"committed_us\""))
}

/// One entry of `history.jsonl`. Times are microseconds since the run began.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Send {
        client: u64,
        invoke_us: u64,
        complete_us: u64,
        outcome: Outcome,
        chat: u64,
        user: u64,
        key: String,
        /// The send time written into the message (microseconds since the Unix epoch).
        sent_us: i64,
        message_id: Option<u64>,
    },
    Read {
        client: u64,
        invoke_us: u64,
        complete_us: u64,
        outcome: Outcome,
        user: u64,
        /// The poll's cursor: it asked for the messages committed after this time (µs since
        /// the Unix epoch), the largest `committed_at` its poller had seen for this user (or,
        /// before it saw any, the generator's clock when the run began).
        cursor_us: i64,
        linearizable: bool,
        /// The chats the reader was a member of when the read began (joins acknowledged).
        chats: Vec<u64>,
        messages: Vec<Seen>,
        /// The cluster cut the page short (`has_more`): the read saw the first messages of
        /// its window only, up to its last message's `committed_at`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
    },
    /// A chat's whole list, read from one replica after the load.
    Final {
        replica: String,
        chat: u64,
        messages: Vec<Seen>,
        /// The leader's linearizable read: the list every other is compared with.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        reference: bool,
        /// Set when the replica answered NOT_FOUND for the chat's member, a user that
        /// acknowledged writes created: a definite answer, so the list is empty.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        not_found: Option<String>,
    },
    /// A final read that could not be made. `replica` and `chat` are `None` when none could
    /// be made at all (no replica answered, or no leader to read from).
    Unread {
        replica: Option<String>,
        chat: Option<u64>,
        reason: String,
    },
    /// A live replica that had not applied the leader's commit index (`target_index`) when
    /// the wait after the load ended: its lists may be a prefix of the reference's.
    Lagging {
        replica: String,
        applied_index: u64,
        target_index: u64,
    },
    /// A replica that did not answer after the load: it was not read.
    Down { replica: String },
    /// A replica's state digest after the load, once the replicas applied the same entries.
    Digest {
        replica: String,
        applied_index: u64,
        digest: String,
    },
}

/// The key a generator puts at the start of message content: `k<client>-<sequence>`.
pub fn message_key(client: u64, sequence: u64) -> String {
    format!("k{client}-{sequence}")
}

/// The key of a message's content: its first word.
pub fn key_of(content: &str) -> String {
    content.split(' ').next().unwrap_or_default().to_string()
}
