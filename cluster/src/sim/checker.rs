//! Raft's invariants, checked by the simulator after every step.
//!
//! The checker sees what an omniscient observer sees: every node's status and log, every
//! durable hard state, every applied entry, every acknowledged write and every served read.
//! It keeps the global facts needed to judge them (which node led which term, the entries
//! applied at each index, the term in which each index was first committed) and reports each
//! violation as a sentence naming the invariant.

use std::collections::{BTreeMap, HashMap};

use crate::raft::{Entry, HardState, Index, Node, NodeId, Role, Snapshot, Term};

/// One node's log as the commit-safety check sees it: (holds the entry, (last term, last
/// index)), in memory (None when the node is down) and on disk.
pub struct LogView {
    pub id: NodeId,
    pub memory: Option<(bool, (Term, Index))>,
    pub disk: (bool, (Term, Index)),
}

#[derive(Default)]
pub struct Checker {
    /// The leader of each term that has had one.
    leaders: HashMap<Term, NodeId>,
    /// What one (index, term) pair names, wherever it appears.
    entries: HashMap<(Index, Term), Option<Vec<u8>>>,
    /// Entries applied anywhere, by index (position 0 is index 1).
    applied: Vec<Entry>,
    /// The term of the leader that first committed each index, and the entry's term.
    committed: BTreeMap<Index, (Term, Term)>,
    /// The highest index of an acknowledged write.
    acked_max: Index,
    pub violations: Vec<String>,
}

impl Checker {
    fn fail(&mut self, msg: String) {
        if self.violations.len() < 20 {
            self.violations.push(msg);
        }
    }

    /// The highest committed index, with the term it was first committed in and its own term.
    pub fn last_committed(&self) -> Option<(Index, Term, Term)> {
        self.committed
            .iter()
            .next_back()
            .map(|(&i, &(commit_term, entry_term))| (i, commit_term, entry_term))
    }

    /// The highest term that has had a leader so far.
    pub fn newest_leader_term(&self) -> Term {
        self.leaders.keys().copied().max().unwrap_or(0)
    }

    pub fn acked_max(&self) -> Index {
        self.acked_max
    }

    /// Election safety, leader completeness and commit bookkeeping, after a node stepped.
    /// `before` is the node's (role, term, commit) before the step within this incarnation.
    /// Returns the indices this step committed for the first time, with the leader's term.
    pub fn after_step(
        &mut self,
        node: &Node,
        before: Option<(Role, Term, Index, Index)>,
    ) -> Option<(Index, Index, Term)> {
        let st = node.status();
        if st.role == Role::Leader {
            match self.leaders.get(&st.term) {
                Some(&other) if other != st.id => self.fail(format!(
                    "election safety: n{} and n{other} are both leaders of term {}",
                    st.id, st.term
                )),
                Some(_) => {}
                None => {
                    self.leaders.insert(st.term, st.id);
                }
            }
        }
        if let Some((role, term, commit, applied)) = before {
            if st.commit_index < commit {
                self.fail(format!(
                    "commit index of n{} went back from {commit} to {}",
                    st.id, st.commit_index
                ));
            }
            if st.applied_index < applied {
                self.fail(format!(
                    "applied index of n{} went back from {applied} to {}",
                    st.id, st.applied_index
                ));
            }
            let became_leader =
                st.role == Role::Leader && (role != Role::Leader || term != st.term);
            if became_leader {
                self.check_new_leader(node);
            }
            if st.role == Role::Leader && st.commit_index > commit {
                let mut first_new = None;
                for index in commit + 1..=st.commit_index {
                    if self.committed.contains_key(&index) {
                        continue;
                    }
                    let entry_term = node
                        .log()
                        .term(index)
                        .expect("newly committed entry in log");
                    self.committed.insert(index, (st.term, entry_term));
                    first_new.get_or_insert(index);
                }
                return first_new.map(|from| (from, st.commit_index, st.term));
            }
        }
        None
    }

    /// Leader completeness: a new leader of term T holds every entry committed in a term
    /// before T.
    fn check_new_leader(&mut self, node: &Node) {
        let st = node.status();
        let log = node.log();
        let mut missing = None;
        for (&index, &(commit_term, entry_term)) in &self.committed {
            if commit_term >= st.term || index <= log.snapshot().index {
                continue;
            }
            if log.term(index) != Some(entry_term) {
                missing = Some((index, entry_term, commit_term));
                break;
            }
        }
        if let Some((index, entry_term, commit_term)) = missing {
            self.fail(format!(
                "leader completeness: n{} leads term {} without entry {index}@{entry_term}, \
                 committed in term {commit_term}",
                st.id, st.term
            ));
        }
    }

    /// Also leader completeness: indices first committed now, in term `commit_term`, must be
    /// in the log of every current leader of a later term (a stale leader may commit late).
    pub fn check_holds(&mut self, node: &Node, from: Index, to: Index, commit_term: Term) {
        let st = node.status();
        if st.role != Role::Leader || st.term <= commit_term {
            return;
        }
        for index in from.max(node.log().snapshot().index + 1)..=to {
            let Some(&(_, entry_term)) = self.committed.get(&index) else {
                continue;
            };
            if node.log().term(index) != Some(entry_term) {
                self.fail(format!(
                    "leader completeness: n{} leads term {} without entry {index}@{entry_term}, \
                     committed in term {commit_term}",
                    st.id, st.term
                ));
                return;
            }
        }
    }

    /// Commit safety, checked for every election that could still happen: when an entry is
    /// first committed, no node lacking it may be able to win a vote. `logs` describes each
    /// node's log as it would campaign with it (in memory, and as left on disk by a crash):
    /// whether it holds the entry, and its (last term, last index). A voter's weakest log is
    /// its durable one. This catches an unsafe commit (paper figure 8) the moment it happens,
    /// without waiting for the unlucky election that would expose it.
    pub fn check_commit_safe(&mut self, index: Index, commit_term: Term, logs: &[LogView]) {
        let quorum = logs.len() / 2 + 1;
        for x in logs {
            for (holds, last) in [x.memory, Some(x.disk)].into_iter().flatten() {
                if holds {
                    continue;
                }
                let voters = logs
                    .iter()
                    .filter(|y| y.id == x.id || last >= y.disk.1)
                    .count();
                if voters >= quorum {
                    self.fail(format!(
                        "commit safety: entry {index} committed in term {commit_term} could be \
                         lost: n{} (log ends at {}@{}) lacks it and could win a vote from {voters} \
                         of {} nodes",
                        x.id,
                        last.1,
                        last.0,
                        logs.len()
                    ));
                    return;
                }
            }
        }
    }

    /// Hard state moves forward: a node never votes twice in one term.
    pub fn hard_state(&mut self, id: NodeId, old: HardState, new: HardState) {
        if new.term < old.term {
            self.fail(format!(
                "n{id} persisted term {} after term {}",
                new.term, old.term
            ));
        } else if new.term == old.term && old.vote.is_some() && new.vote != old.vote {
            self.fail(format!(
                "n{id} voted twice in term {}: for n{} and for {:?}",
                new.term,
                old.vote.unwrap(),
                new.vote
            ));
        }
    }

    /// Log matching, part one: an (index, term) pair names the same entry everywhere.
    pub fn entries_written(&mut self, id: NodeId, entries: &[Entry]) {
        for e in entries {
            match self.entries.get(&(e.index, e.term)) {
                Some(cmd) if *cmd != e.command => self.fail(format!(
                    "log matching: n{id} holds {} but another node holds a different entry \
                     at {}@{}",
                    e, e.index, e.term
                )),
                Some(_) => {}
                None => {
                    self.entries.insert((e.index, e.term), e.command.clone());
                }
            }
        }
    }

    /// Log matching, part two: two logs that agree at an index agree on everything before.
    pub fn logs_match(&mut self, a: &Node, b: &Node) {
        let (la, lb) = (a.log(), b.log());
        let lo = la.snapshot().index.max(lb.snapshot().index) + 1;
        let hi = la.last_index().min(lb.last_index());
        let mut agree_at = None;
        let mut i = hi;
        while i >= lo {
            if la.term(i) == lb.term(i) {
                agree_at = Some(i);
                break;
            }
            i -= 1;
        }
        let Some(top) = agree_at else { return };
        for i in lo..=top {
            if la.get(i) != lb.get(i) {
                let (ida, idb) = (a.id(), b.id());
                self.fail(format!(
                    "log matching: n{ida} and n{idb} agree at {top} but differ at {i} \
                     ({:?} vs {:?})",
                    la.get(i).map(|e| e.to_string()),
                    lb.get(i).map(|e| e.to_string())
                ));
                return;
            }
        }
    }

    /// State machine safety: every node applies the same entry at each index, in order.
    pub fn applied(&mut self, id: NodeId, expected_index: Index, e: &Entry) {
        if e.index != expected_index {
            self.fail(format!(
                "n{id} applied {} when it expected index {expected_index}",
                e
            ));
            return;
        }
        match self.applied.get(e.index as usize - 1) {
            Some(prev) if prev != e => self.fail(format!(
                "state machine safety: n{id} applied {e} at {} where another node applied {prev}",
                e.index
            )),
            Some(_) => {}
            None if self.applied.len() as Index + 1 == e.index => self.applied.push(e.clone()),
            None => self.fail(format!(
                "n{id} applied {e} but index {} was never applied anywhere",
                self.applied.len() + 1
            )),
        }
    }

    /// A snapshot must be the state the applied entries produce at its index.
    pub fn snapshot(
        &mut self,
        id: NodeId,
        snap: &Snapshot,
        state_of: impl Fn(&[Entry]) -> Vec<u8>,
    ) {
        let Some(prefix) = self.applied.get(..snap.index as usize) else {
            self.fail(format!(
                "n{id} installed snapshot at {} beyond anything applied",
                snap.index
            ));
            return;
        };
        if snap.index > 0 && prefix.last().map(|e| e.term) != Some(snap.term) {
            self.fail(format!(
                "n{id} installed snapshot {}@{} of another history",
                snap.index, snap.term
            ));
        } else if state_of(prefix) != snap.data {
            self.fail(format!(
                "state machine safety: n{id} installed a snapshot at {} whose state differs",
                snap.index
            ));
        }
    }

    /// A write was acknowledged to its client: the entry at `index` holds it.
    pub fn write_acked(&mut self, index: Index) {
        self.acked_max = self.acked_max.max(index);
    }

    /// Linearizable read: the state served must include every write acknowledged before the
    /// read began (`required` is `acked_max` at that moment).
    pub fn read_served(&mut self, id: NodeId, read: u64, served_at: Index, required: Index) {
        if served_at < required {
            self.fail(format!(
                "stale read: n{id} served read {read} at applied index {served_at}, but a write \
                 at index {required} was acknowledged before the read began"
            ));
        }
    }
}
