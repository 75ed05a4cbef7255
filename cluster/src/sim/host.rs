//! One simulated host: a Raft core with the disk and the storage queue it writes through.
//!
//! Two drivers run cores in tests: the seeded simulator (`simulation`) and the golden
//! scripts (`tests/golden.rs`). Both need the storage half of the driver contract written in
//! [`crate::raft`], and it lives here, once, so that a script and a seed mean the same thing by
//! "persisted", "crashed" or "restored":
//!
//! - `Output::HardState` and `Output::Restore` are durable at once (they are synchronous).
//! - `Output::Append` writes queue up and complete in order, each at its due time or later. A
//!   completed write replaces what the disk holds from its first index on.
//! - A restore lands after the writes queued before it: they would be overwritten anyway, so
//!   they are dropped, and their completion is reported later (the core ignores it).
//! - A crash loses the core (all volatile state), every queued write and every completion not
//!   yet reported. The [`Disk`] survives, and a restart rebuilds the core from it.
//!
//! What this module does not decide: when anything happens. Time, message delivery, faults
//! and the state machine belong to the driver, which calls in here.

use std::collections::VecDeque;

use rand::RngCore;

use super::checker::LogView;
use crate::raft::{
    AppendId, Entry, Error, HardState, Index, Node, NodeId, Options, Output, Restored, Snapshot,
    Term,
};

/// What a node keeps across a crash: term and vote, its latest snapshot, the entries after it.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub hard_state: HardState,
    pub snapshot: Snapshot,
    /// Durable entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

impl Disk {
    /// The term of the entry at `index`, if the disk knows it (the snapshot's last entry, or
    /// a stored entry).
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot.index {
            Some(self.snapshot.term)
        } else if index > self.snapshot.index {
            self.entries
                .get((index - self.snapshot.index - 1) as usize)
                .map(|e| e.term)
        } else {
            None
        }
    }

    /// The (term, index) of the last entry on disk, as a restarted node would campaign with.
    pub fn last(&self) -> (Term, Index) {
        self.entries
            .last()
            .map_or((self.snapshot.term, self.snapshot.index), |e| {
                (e.term, e.index)
            })
    }

    /// Replaces everything from the first entry's index on (entries the snapshot already
    /// covers are skipped).
    fn write(&mut self, entries: Vec<Entry>) {
        let Some(first) = entries.first() else { return };
        let keep = first.index.saturating_sub(self.snapshot.index + 1) as usize;
        self.entries.truncate(keep.min(self.entries.len()));
        for e in entries {
            if e.index > self.snapshot.index {
                let next = self.snapshot.index + self.entries.len() as Index + 1;
                assert_eq!(e.index, next, "a write leaves a gap on disk");
                self.entries.push(e);
            }
        }
    }

    /// A snapshot taken locally: entries up to it are dropped.
    fn compact(&mut self, snapshot: Snapshot) {
        let drop = (snapshot.index - self.snapshot.index) as usize;
        self.entries.drain(..drop.min(self.entries.len()));
        self.snapshot = snapshot;
    }

    /// A snapshot received from the leader: it replaces the whole log.
    fn install(&mut self, snapshot: Snapshot) {
        self.entries.clear();
        self.snapshot = snapshot;
    }
}

/// An entry write handed to storage, completing at `due` or later (and after earlier ones).
struct Write {
    due: u64,
    id: AppendId,
    entries: Vec<Entry>,
}

/// A node's core (while it runs), its disk, and the writes on their way to that disk.
pub struct SimNode {
    id: NodeId,
    core: Option<Node>,
    disk: Disk,
    writes: VecDeque<Write>,
    /// Writes dropped by a restore, whose completion is still to be reported.
    late_reports: Vec<AppendId>,
}

impl SimNode {
    /// A node that has never run: down, with an empty disk. Start it with [`SimNode::start`].
    pub fn new(id: NodeId) -> SimNode {
        SimNode {
            id,
            core: None,
            disk: Disk::default(),
            writes: VecDeque::new(),
            late_reports: Vec::new(),
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn disk(&self) -> &Disk {
        &self.disk
    }

    pub fn is_up(&self) -> bool {
        self.core.is_some()
    }

    /// The running core, `None` while the node is down.
    pub fn core(&self) -> Option<&Node> {
        self.core.as_ref()
    }

    /// The running core, for proposals and reads (which the driver follows with a `step`).
    pub fn core_mut(&mut self) -> Option<&mut Node> {
        self.core.as_mut()
    }

    /// Starts (or restarts) the core from what the disk holds. `applied` is what the driver's
    /// state machine already holds: the snapshot's index for one rebuilt from the snapshot,
    /// more for a durable one.
    pub fn start(
        &mut self,
        members: &[NodeId],
        applied: Index,
        options: Options,
        rng: Box<dyn RngCore + Send>,
    ) {
        assert!(self.core.is_none(), "n{} is already running", self.id);
        let restored = Restored {
            hard_state: self.disk.hard_state,
            snapshot: self.disk.snapshot.clone(),
            entries: self.disk.entries.clone(),
            applied,
        };
        self.core = Some(Node::new(self.id, members, restored, options, rng));
    }

    /// Stops the node: its core and every unfinished write are lost. Returns how many
    /// entries those writes held.
    pub fn crash(&mut self) -> usize {
        self.core = None;
        self.late_reports.clear();
        self.writes.drain(..).map(|w| w.entries.len()).sum()
    }

    /// Feeds the core one input (`f`) and returns the outputs it produced, in order. The
    /// driver acts on each, calling the storage methods below for those that touch the disk.
    pub fn step(&mut self, f: impl FnOnce(Node) -> Node) -> Vec<Output> {
        let core = self.core.take().expect("the node is up");
        let mut core = f(core);
        let outputs = core.take_outputs();
        self.core = Some(core);
        outputs
    }

    /// `Output::HardState`: durable at once.
    pub fn persist_hard_state(&mut self, hard_state: HardState) {
        self.disk.hard_state = hard_state;
    }

    /// `Output::Append`: queued, to complete at `due` or later, never before an earlier write.
    pub fn queue_write(&mut self, due: u64, id: AppendId, entries: Vec<Entry>) {
        let due = due.max(self.writes.back().map_or(0, |w| w.due));
        self.writes.push_back(Write { due, id, entries });
    }

    /// `Output::Restore`: durable at once, ordered after every queued write.
    pub fn install(&mut self, snapshot: Snapshot) {
        self.late_reports
            .extend(self.writes.drain(..).map(|write| write.id));
        self.disk.install(snapshot);
    }

    /// Completes the oldest queued write if it is due at `now`, and returns its id for the
    /// driver to report with [`Node::persisted`].
    pub fn complete_write(&mut self, now: u64) -> Option<AppendId> {
        if self.writes.front()?.due > now {
            return None;
        }
        let write = self.writes.pop_front().expect("front exists");
        self.disk.write(write.entries);
        Some(write.id)
    }

    /// Completions of writes that a restore dropped, for the driver to report.
    pub fn take_late_reports(&mut self) -> Vec<AppendId> {
        std::mem::take(&mut self.late_reports)
    }

    /// Whether storage still has work whose completion the core has not heard of.
    pub fn has_pending_writes(&self) -> bool {
        !self.writes.is_empty() || !self.late_reports.is_empty()
    }

    /// The driver snapshotted its state machine at `index` (`data`): the core and the disk
    /// drop the entries it covers. Returns the snapshot's term.
    pub fn compact(&mut self, index: Index, data: Vec<u8>) -> Result<Term, Error> {
        let core = self.core.as_mut().expect("the node is up");
        let term = core.log().term(index);
        core.compact(index, data.clone())?;
        let term = term.expect("a compacted index was in the log");
        self.disk.compact(Snapshot { index, term, data });
        Ok(term)
    }

    /// Whether this node's log holds entry (`index`, `term`), and where it ends, in memory
    /// and on disk: what the commit-safety check needs.
    pub(crate) fn log_view(&self, index: Index, term: Term) -> LogView {
        let memory = self.core.as_ref().map(|c| {
            let log = c.log();
            let holds = index <= log.snapshot().index || log.term(index) == Some(term);
            (holds, (log.last_term(), log.last_index()))
        });
        let d = &self.disk;
        let holds = index <= d.snapshot.index || d.term(index) == Some(term);
        LogView {
            id: self.id,
            memory,
            disk: (holds, d.last()),
        }
    }
}
