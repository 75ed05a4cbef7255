//! The in-memory view of the Raft log and the cursors that move along it.
//!
//! The log is a snapshot (everything up to `snapshot.index`, compacted away) followed by
//! entries. Four cursors move along it and must keep this order:
//!
//! ```text
//!   snapshot.index <= applied <= min(commit, persisted),   persisted <= issued <= last_index
//! ```
//!
//! - `issued`: entries up to here have been handed to storage (an `Output::Append`).
//! - `persisted`: storage has reported entries up to here durable. Writes are numbered and
//!   complete in order; an index counts as durable only once no write still queued will
//!   overwrite it (a truncated entry may be re-added by a later write while an older write of
//!   a different entry at that index is still queued: an (index, term) check is not enough).
//! - `commit`: known committed (only grows while the process lives).
//! - `applied`: handed to the state machine (an `Output::Apply`). A node applies only what is
//!   both committed and durable locally, so a restart never finds its state machine ahead of
//!   its own log.
//!
//! This type does no I/O and knows nothing of roles; it refuses (panics on) operations that
//! would break the order above, since those are bugs in the core, not runtime conditions.

use std::collections::VecDeque;

use super::message::{AppendId, Entry, Index, Snapshot, Term};

#[derive(Clone, Debug)]
pub struct Log {
    snapshot: Snapshot,
    entries: Vec<Entry>,
    issued: Index,
    persisted: Index,
    commit: Index,
    applied: Index,
    /// Appends handed to storage and not yet reported complete: (id, first index).
    pending_appends: VecDeque<(AppendId, Index)>,
    next_append: AppendId,
}

impl Log {
    /// A log restored from storage: everything given is durable, and `applied` (what the
    /// state machine already holds) is committed by definition.
    pub fn restore(snapshot: Snapshot, entries: Vec<Entry>, applied: Index) -> Log {
        for (expect, e) in (snapshot.index + 1..).zip(&entries) {
            assert_eq!(
                e.index, expect,
                "restored entries must be contiguous after the snapshot"
            );
        }
        let last = snapshot.index + entries.len() as Index;
        assert!(
            applied >= snapshot.index && applied <= last,
            "applied {applied} outside the log"
        );
        Log {
            issued: last,
            persisted: last,
            commit: applied,
            applied,
            snapshot,
            entries,
            pending_appends: VecDeque::new(),
            next_append: 1,
        }
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn last_index(&self) -> Index {
        self.snapshot.index + self.entries.len() as Index
    }

    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.snapshot.term, |e| e.term)
    }

    pub fn commit(&self) -> Index {
        self.commit
    }

    pub fn applied(&self) -> Index {
        self.applied
    }

    pub fn persisted(&self) -> Index {
        self.persisted
    }

    /// The term of the entry at `index`, if the log still knows it (the snapshot's own index
    /// counts; compacted entries before it do not).
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        self.get(index).map(|e| e.term)
    }

    pub fn get(&self, index: Index) -> Option<&Entry> {
        if index <= self.snapshot.index {
            return None;
        }
        self.entries.get((index - self.snapshot.index - 1) as usize)
    }

    /// Whether a candidate whose log ends at (`last_index`, `last_term`) is at least as
    /// up to date as this log (paper 5.4.1).
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// Entries from `from` on, at most `max_entries` and roughly `max_bytes` (always at least
    /// one entry when any exists). `from` must be after the snapshot.
    pub fn slice(&self, from: Index, max_entries: usize, max_bytes: usize) -> Vec<Entry> {
        assert!(from > self.snapshot.index, "entry {from} is compacted");
        let start = (from - self.snapshot.index - 1) as usize;
        let mut bytes = 0;
        let mut out = Vec::new();
        for e in self.entries.iter().skip(start).take(max_entries) {
            bytes += e.command.as_ref().map_or(0, |c| c.len()) + 16;
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        out
    }

    /// The last index holding `term`, searching down from `from` (for the leader's side of
    /// fast backtracking).
    pub fn last_index_of_term(&self, term: Term, from: Index) -> Option<Index> {
        let mut i = from.min(self.last_index());
        while i > self.snapshot.index {
            match self.term(i) {
                Some(t) if t == term => return Some(i),
                Some(t) if t < term => return None,
                _ => i -= 1,
            }
        }
        None
    }

    /// The first index holding the term found at `index` (for the follower's hint).
    pub fn first_index_of_term_at(&self, index: Index) -> Index {
        let term = self.term(index).expect("index must be in the log");
        let mut i = index;
        while i > self.snapshot.index + 1 && self.term(i - 1) == Some(term) {
            i -= 1;
        }
        i
    }

    /// Appends one entry at the end (leader side).
    pub fn push(&mut self, term: Term, command: Option<Vec<u8>>) -> Index {
        let index = self.last_index() + 1;
        self.entries.push(Entry {
            index,
            term,
            command,
        });
        index
    }

    /// Appends entries received from a leader whose log matches ours just before the first
    /// of them. Entries we already hold are skipped; at the first conflict our suffix is
    /// truncated. Committed entries never conflict (that would be a safety violation).
    pub fn merge(&mut self, entries: Vec<Entry>) {
        let mut iter = entries.into_iter().peekable();
        while let Some(e) = iter.peek() {
            match self.term(e.index) {
                Some(t) if t == e.term => {
                    iter.next();
                }
                Some(_) => {
                    assert!(
                        e.index > self.commit,
                        "conflict at committed index {}",
                        e.index
                    );
                    self.truncate_from(e.index);
                    break;
                }
                None => break,
            }
        }
        for e in iter {
            assert!(
                e.index > self.snapshot.index && e.index == self.last_index() + 1,
                "entries must extend the log contiguously"
            );
            self.entries.push(e);
        }
    }

    fn truncate_from(&mut self, index: Index) {
        assert!(index > self.commit && index > self.snapshot.index);
        self.entries
            .truncate((index - self.snapshot.index - 1) as usize);
        self.issued = self.issued.min(index - 1);
        self.persisted = self.persisted.min(index - 1);
    }

    /// Entries not yet handed to storage, as a numbered write; marks them handed.
    pub fn take_unissued(&mut self) -> Option<(AppendId, Vec<Entry>)> {
        if self.issued >= self.last_index() {
            return None;
        }
        let out = self.slice(self.issued + 1, usize::MAX, usize::MAX);
        self.issued = self.last_index();
        let id = self.next_append;
        self.next_append += 1;
        self.pending_appends.push_back((id, out[0].index));
        Some((id, out))
    }

    /// Storage reports every write up to `id` complete. What is durable is what completed
    /// writes put there and no queued write will overwrite. Returns whether `persisted` grew.
    pub fn persisted_to(&mut self, id: AppendId) -> bool {
        while self.pending_appends.front().is_some_and(|(w, _)| *w <= id) {
            self.pending_appends.pop_front();
        }
        let durable = match self.pending_appends.iter().map(|(_, first)| *first).min() {
            Some(first) => (first - 1).min(self.issued),
            None => self.issued,
        };
        if durable > self.persisted {
            self.persisted = durable;
            true
        } else {
            false
        }
    }

    /// Advances the commit index. Never moves backwards.
    pub fn commit_to(&mut self, index: Index) -> bool {
        if index <= self.commit {
            return false;
        }
        assert!(
            index <= self.last_index(),
            "commit {index} beyond last index"
        );
        self.commit = index;
        true
    }

    /// Committed, durable entries not yet applied; marks them applied.
    pub fn take_unapplied(&mut self, max_entries: usize) -> Vec<Entry> {
        let upto = self.commit.min(self.persisted);
        if upto <= self.applied {
            return Vec::new();
        }
        let out = self.slice(
            self.applied + 1,
            max_entries.min((upto - self.applied) as usize),
            usize::MAX,
        );
        self.applied += out.len() as Index;
        out
    }

    /// Drops entries up to `index` (already applied) in favour of a snapshot of them.
    pub fn compact(&mut self, index: Index, data: Vec<u8>) {
        assert!(index > self.snapshot.index && index <= self.applied);
        let term = self.term(index).expect("compaction index in the log");
        let drop = (index - self.snapshot.index) as usize;
        self.entries.drain(..drop);
        self.snapshot = Snapshot { index, term, data };
    }

    /// Replaces the whole log with a snapshot received from the leader (durable once the
    /// driver has handled the `Restore` output).
    pub fn install(&mut self, snapshot: Snapshot) {
        let index = snapshot.index;
        self.entries.clear();
        self.snapshot = snapshot;
        self.issued = index;
        self.persisted = index;
        self.commit = index;
        self.applied = index;
        // The driver orders the install after every earlier write (or cancels them).
        self.pending_appends.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn e(index: Index, term: Term) -> Entry {
        Entry {
            index,
            term,
            command: Some(format!("{index}/{term}").into_bytes()),
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(Term),
        Merge(Index, Vec<Term>),
        Persist,
        Commit(Index),
        Apply,
        Compact(Index),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u64..4).prop_map(Op::Push),
            (0u64..12, proptest::collection::vec(1u64..4, 0..4)).prop_map(|(i, t)| Op::Merge(i, t)),
            Just(Op::Persist),
            (0u64..12).prop_map(Op::Commit),
            Just(Op::Apply),
            (0u64..12).prop_map(Op::Compact),
        ]
    }

    proptest! {
        /// The log against a plain Vec model: same entries, same cursors, whatever the
        /// sequence of operations that the core would legally perform.
        #[test]
        fn log_matches_vec_model(ops in proptest::collection::vec(op(), 1..60)) {
            let mut log = Log::restore(Snapshot::default(), vec![], 0);
            let mut model: Vec<Entry> = vec![];
            let (mut persisted, mut commit, mut applied, mut snap) = (0u64, 0u64, 0u64, 0u64);
            let mut issued = 0u64;
            for op in ops {
                match op {
                    Op::Push(t) => {
                        let t = t.max(model.last().map_or(0, |e| e.term));
                        let i = log.push(t, Some(format!("{}/{t}", model.len() + 1).into_bytes()));
                        model.push(e(model.len() as u64 + 1, t));
                        prop_assert_eq!(i, model.len() as u64);
                    }
                    Op::Merge(prev, terms) => {
                        // Only merges a leader could send: after a prefix we hold, at or above
                        // the commit index, with non-decreasing terms.
                        let prev = prev.min(model.len() as u64).max(commit).max(snap);
                        let base = if prev == 0 { 0 } else { model[prev as usize - 1].term };
                        let mut t = base;
                        let entries: Vec<Entry> = terms.iter().enumerate().map(|(k, dt)| {
                            t = t.max(*dt);
                            e(prev + 1 + k as u64, t)
                        }).collect();
                        // Model: skip matching entries, truncate at the first conflict.
                        for x in &entries {
                            let pos = x.index as usize - 1;
                            if pos < model.len() && model[pos].term != x.term {
                                model.truncate(pos);
                                issued = issued.min(pos as u64);
                                persisted = persisted.min(pos as u64);
                            }
                            if pos >= model.len() {
                                model.push(x.clone());
                            }
                        }
                        log.merge(entries);
                    }
                    Op::Persist => {
                        // Every issued write completes.
                        if let Some((id, entries)) = log.take_unissued() {
                            issued = entries.last().unwrap().index;
                            log.persisted_to(id);
                            persisted = issued;
                        }
                    }
                    Op::Commit(i) => {
                        let i = i.min(model.len() as u64);
                        if log.commit_to(i) { commit = i; }
                        prop_assert!(log.commit() == commit);
                    }
                    Op::Apply => {
                        let got = log.take_unapplied(usize::MAX);
                        let upto = commit.min(persisted);
                        if upto > applied {
                            prop_assert_eq!(&got[..], &model[applied as usize..upto as usize]);
                            applied = upto;
                        } else {
                            prop_assert!(got.is_empty());
                        }
                    }
                    Op::Compact(i) => {
                        if i > snap && i <= applied {
                            log.compact(i, vec![]);
                            snap = i;
                        }
                    }
                }
                prop_assert_eq!(log.last_index(), model.len() as u64);
                prop_assert_eq!(log.last_term(), model.last().map_or(0, |x| x.term));
                prop_assert_eq!(log.persisted(), persisted);
                for x in model.iter().skip(snap as usize) {
                    prop_assert_eq!(log.get(x.index), Some(x));
                }
                prop_assert_eq!(log.applied(), applied);
                prop_assert!(log.snapshot().index <= log.applied());
            }
        }
    }

    #[test]
    fn merge_truncates_conflicting_suffix() {
        let mut log = Log::restore(Snapshot::default(), vec![e(1, 1), e(2, 1), e(3, 2)], 1);
        log.merge(vec![e(2, 1), e(3, 3), e(4, 3)]);
        assert_eq!(log.last_index(), 4);
        assert_eq!(log.term(3), Some(3));
        assert_eq!(log.persisted(), 2, "truncation lowers persisted");
        assert_eq!(log.take_unissued().unwrap().1, vec![e(3, 3), e(4, 3)]);
    }

    #[test]
    fn a_queued_overwrite_keeps_an_index_from_counting_as_durable() {
        // W1 writes 1@2, 2@2; W2 replaces 2 with 2@3; W3 puts 2@2 back and adds 3@4. When W1
        // completes, index 2 is not durable: W2 is still queued and will overwrite it.
        let mut log = Log::restore(Snapshot::default(), vec![], 0);
        log.merge(vec![e(1, 2), e(2, 2)]);
        let (w1, _) = log.take_unissued().unwrap();
        log.merge(vec![e(2, 3)]);
        let (w2, _) = log.take_unissued().unwrap();
        log.merge(vec![e(2, 2), e(3, 4)]);
        let (w3, _) = log.take_unissued().unwrap();
        assert!(log.persisted_to(w1));
        assert_eq!(
            log.persisted(),
            1,
            "only index 1 is safe while W2 and W3 are queued"
        );
        assert!(!log.persisted_to(w2));
        assert_eq!(log.persisted(), 1, "W3 rewrites index 2");
        assert!(log.persisted_to(w3));
        assert_eq!(log.persisted(), 3);
    }

    #[test]
    fn term_hints() {
        let log = Log::restore(
            Snapshot::default(),
            vec![e(1, 1), e(2, 2), e(3, 2), e(4, 2), e(5, 4)],
            0,
        );
        assert_eq!(log.first_index_of_term_at(4), 2);
        assert_eq!(log.last_index_of_term(2, 5), Some(4));
        assert_eq!(log.last_index_of_term(3, 5), None);
        assert!(log.is_up_to_date(5, 4));
        assert!(!log.is_up_to_date(9, 3));
    }
}
