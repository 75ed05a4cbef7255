//! The leader's view of one follower: how much of the log it holds and what is in flight.
//!
//! A follower is in one of three states (as in etcd-io/raft):
//! - `Probe`: we do not know where its log matches ours. One `Append` at a time; `next`
//!   walks back on rejections (by a whole term at a time, using the follower's hints).
//! - `Replicate`: its log matches ours up to `next - 1` as far as we know. Appends are
//!   pipelined: `next` advances optimistically as they are sent, up to `max_inflight`
//!   unacknowledged messages. A stall (no durable progress for `Options::stall_ticks` while
//!   messages are in flight) means something was lost, and we fall back to `Probe`.
//! - `Snapshot`: the entries it needs are compacted away; a snapshot is on its way.

use std::collections::VecDeque;

use super::message::{Index, ReadSeq};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgressState {
    Probe { paused: bool },
    Replicate,
    Snapshot { index: Index, ticks: u64 },
}

#[derive(Clone, Debug)]
pub struct Progress {
    /// The next index to send.
    pub next: Index,
    /// The highest index known to be durable on the follower and to match our log.
    pub matched: Index,
    /// The highest log position this term's appends, heartbeats and snapshots to the
    /// follower have named: no correct answer acknowledges or rejects anything beyond it.
    pub sent: Index,
    pub state: ProgressState,
    /// Last index carried by each unacknowledged pipelined append, oldest first.
    pub inflight: VecDeque<Index>,
    /// The highest read round the follower has echoed in this term.
    pub read_seq: ReadSeq,
    /// Whether the follower answered since the last check-quorum round.
    pub active: bool,
    /// `matched` at the previous heartbeat, and how long it has not moved with appends in
    /// flight, for stall detection.
    pub matched_at_last_heartbeat: Index,
    pub stalled_ticks: u64,
}

impl Progress {
    pub fn new(next: Index) -> Progress {
        Progress {
            next,
            matched: 0,
            sent: 0,
            state: ProgressState::Probe { paused: false },
            inflight: VecDeque::new(),
            read_seq: 0,
            active: true,
            matched_at_last_heartbeat: 0,
            stalled_ticks: 0,
        }
    }

    /// Records a durable, matching prefix reported by the follower. Returns whether it grew.
    pub fn update_matched(&mut self, durable: Index) -> bool {
        while self.inflight.front().is_some_and(|&last| last <= durable) {
            self.inflight.pop_front();
        }
        if durable > self.matched {
            self.matched = durable;
            self.next = self.next.max(durable + 1);
            true
        } else {
            false
        }
    }

    /// Falls back to probing from `next`.
    pub fn probe_from(&mut self, next: Index) {
        self.next = next.max(self.matched + 1);
        self.state = ProgressState::Probe { paused: false };
        self.inflight.clear();
    }

    pub fn become_replicate(&mut self, next: Index) {
        self.next = next.max(self.matched + 1);
        self.state = ProgressState::Replicate;
        self.inflight.clear();
    }

    pub fn is_paused(&self, max_inflight: usize) -> bool {
        match self.state {
            ProgressState::Probe { paused } => paused,
            ProgressState::Replicate => self.inflight.len() >= max_inflight,
            ProgressState::Snapshot { .. } => true,
        }
    }
}
