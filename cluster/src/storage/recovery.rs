//! Startup reconciliation: bringing the Raft storage and the state machine into agreement
//! before the core starts.
//!
//! The two are made durable separately (the log by the storage writer, the state machine by
//! its own transactions), so a crash can leave either one ahead of the other. Two cases need
//! work, and both are repairs, never guesses:
//! - **State machine behind the snapshot.** An install from the leader replaces the Raft
//!   storage first and the state machine second; a crash in between leaves the state machine
//!   older than the snapshot. It is restored from the snapshot's file (durable before the
//!   install began, so it is there).
//! - **State machine ahead of the log.** A torn or truncated tail of entries the state machine
//!   already applied. Applied entries are committed, so the state machine is a valid
//!   snapshot of them: it is adopted as the snapshot, and the leader sends what follows.
//!
//! This module must not decide anything about roles or terms beyond what it reads from disk;
//! what it returns is the core's [`Restored`] starting point.

use std::path::Path;

use super::error::StorageError;
use super::raft_storage::{Loaded, RaftStorage};
use crate::raft::{Index, Restored, Snapshot, Term};

/// What reconciliation needs from the durable state machine. Snapshots are files (see
/// `snapshots.rs`): the state machine writes and reads them itself, by streaming, so neither
/// side ever holds a whole snapshot in memory.
pub trait StateMachine {
    type Error;
    /// The index of the last entry applied (0 for an empty state machine).
    fn applied_index(&self) -> Result<Index, Self::Error>;
    /// The term of that entry.
    fn applied_term(&self) -> Result<Term, Self::Error>;
    /// Writes the whole state as a new file at `path` (which does not exist yet). The caller
    /// makes it durable.
    fn snapshot_to(&self, path: &Path) -> Result<(), Self::Error>;
    /// Replaces the whole state with the snapshot file at `path`, leaving the file as it is.
    fn restore_from(&mut self, path: &Path) -> Result<(), Self::Error>;
}

/// Reconciles what [`RaftStorage::open`] loaded with the state machine, repairing whichever
/// is behind, and returns the core's starting point. Errors are the caller's type, which
/// says whether the disk or the state machine failed.
pub fn reconcile<S, E>(
    storage: &mut RaftStorage,
    mut loaded: Loaded,
    state: &mut S,
) -> Result<Restored, E>
where
    S: StateMachine,
    E: From<StorageError> + From<S::Error>,
{
    let mut applied = state.applied_index()?;
    if loaded.snapshot.index > applied {
        tracing::info!(
            index = loaded.snapshot.index,
            "state machine behind the snapshot: restoring it"
        );
        let path = storage
            .snapshots()
            .path(loaded.snapshot.term, loaded.snapshot.index);
        state.restore_from(&path)?;
        applied = state.applied_index()?;
    }
    let last = loaded.snapshot.index + loaded.entries.len() as Index;
    if applied > last {
        let term = state.applied_term()?;
        tracing::warn!(
            applied,
            last,
            term,
            "state machine ahead of the log: using it as a snapshot"
        );
        storage.snapshots().clone().create::<E>(
            term,
            applied,
            |tmp| Ok(state.snapshot_to(tmp)?),
        )?;
        let snapshot = Snapshot {
            index: applied,
            term,
            data: Vec::new(),
        };
        storage.install_snapshot(&snapshot)?;
        loaded.snapshot = snapshot;
        loaded.entries.clear();
    }
    Ok(Restored {
        hard_state: loaded.hard_state,
        snapshot: loaded.snapshot,
        entries: loaded.entries,
        applied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::Entry;

    /// A state machine that is only its applied position; its snapshot file says
    /// "index:term".
    struct Fake {
        applied: Index,
        term: Term,
    }

    impl StateMachine for Fake {
        type Error = StorageError;
        fn applied_index(&self) -> Result<Index, StorageError> {
            Ok(self.applied)
        }
        fn applied_term(&self) -> Result<Term, StorageError> {
            Ok(self.term)
        }
        fn snapshot_to(&self, path: &Path) -> Result<(), StorageError> {
            let data = format!("{}:{}", self.applied, self.term);
            std::fs::write(path, data).map_err(|e| StorageError::io(path, e))
        }
        fn restore_from(&mut self, path: &Path) -> Result<(), StorageError> {
            let s = std::fs::read_to_string(path).map_err(|e| StorageError::io(path, e))?;
            let (i, t) = s.split_once(':').unwrap();
            (self.applied, self.term) = (i.parse().unwrap(), t.parse().unwrap());
            Ok(())
        }
    }

    fn entries(from: Index, to: Index) -> Vec<Entry> {
        (from..=to)
            .map(|index| Entry {
                index,
                term: 2,
                command: None,
            })
            .collect()
    }

    /// Writes an optional installed snapshot and entries, reopens the directory as a restart
    /// would, and reconciles it with a state machine at `applied`.
    fn restart(
        dir: &std::path::Path,
        snapshot: Option<&Snapshot>,
        log: Vec<Entry>,
        applied: Index,
    ) -> (Restored, Fake) {
        let (mut storage, _) = RaftStorage::open(dir, 1 << 20).unwrap();
        if let Some(snapshot) = snapshot {
            // As a received snapshot is: its file first, then the install.
            let data = format!("{}:{}", snapshot.index, snapshot.term);
            storage
                .snapshots()
                .create::<StorageError>(snapshot.term, snapshot.index, |tmp| {
                    std::fs::write(tmp, data).map_err(|e| StorageError::io(tmp, e))
                })
                .unwrap();
            storage.install_snapshot(snapshot).unwrap();
        }
        storage.log.append(&log).unwrap();
        storage.log.sync().unwrap();
        drop(storage);
        let (mut storage, loaded) = RaftStorage::open(dir, 1 << 20).unwrap();
        let mut state = Fake { applied, term: 2 };
        let restored = reconcile::<_, StorageError>(&mut storage, loaded, &mut state).unwrap();
        (restored, state)
    }

    #[test]
    fn a_state_machine_behind_the_snapshot_is_restored_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = Snapshot {
            index: 5,
            term: 2,
            data: vec![],
        };
        let (restored, state) = restart(dir.path(), Some(&snapshot), entries(6, 8), 0);
        assert_eq!(state.applied, 5);
        assert_eq!(restored.applied, 5);
        assert_eq!(restored.snapshot, snapshot);
        assert_eq!(restored.entries, entries(6, 8));
    }

    #[test]
    fn a_state_machine_ahead_of_the_log_becomes_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let (restored, _) = restart(dir.path(), None, entries(1, 3), 7);
        assert_eq!(restored.applied, 7);
        assert_eq!((restored.snapshot.index, restored.snapshot.term), (7, 2));
        assert!(restored.entries.is_empty());
        // The adoption is durable, its file included: a restart starts from it.
        let (_, loaded) = RaftStorage::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(loaded.snapshot.index, 7);
        let file = dir.path().join("snapshots/snap-2-7.db");
        assert_eq!(std::fs::read_to_string(file).unwrap(), "7:2");
        assert!(loaded.entries.is_empty());
    }

    #[test]
    fn agreeing_state_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (restored, _) = restart(dir.path(), None, entries(1, 4), 2);
        assert_eq!(restored.applied, 2);
        assert_eq!(restored.snapshot.index, 0);
        assert_eq!(restored.entries, entries(1, 4));
    }

    /// The real thing: a follower crashes after installing a snapshot from the leader in its
    /// Raft storage but before SQLite was replaced (or half way through the swap, its WAL
    /// already gone). Restarting restores SQLite from the snapshot's file, which ends equal
    /// to the leader's state, and the file stays the node's snapshot.
    #[test]
    fn a_crash_between_the_install_and_the_sqlite_swap_is_repaired_from_the_file() {
        use crate::chat::{ChatStore, Command, StoreError as ChatStoreError, Write};

        #[derive(Debug)]
        #[allow(dead_code)] // read through Debug, when a test fails
        enum E {
            Disk(StorageError),
            Chat(ChatStoreError),
        }
        impl From<StorageError> for E {
            fn from(e: StorageError) -> E {
                E::Disk(e)
            }
        }
        impl From<ChatStoreError> for E {
            fn from(e: ChatStoreError) -> E {
                E::Chat(e)
            }
        }

        let create = |index: Index| Entry {
            index,
            term: 4,
            command: Some(
                Write {
                    session: None,
                    command: Command::CreateUser {
                        username: format!("user{index}"),
                    },
                    proposed_at_us: 0,
                }
                .encode(),
            ),
        };
        let leader_dir = tempfile::tempdir().unwrap();
        let mut leader = ChatStore::open(&leader_dir.path().join("chat.sqlite")).unwrap();
        leader
            .apply(&(1..=50).map(create).collect::<Vec<_>>())
            .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let mut follower = ChatStore::open(&dir.path().join("chat.sqlite")).unwrap();
        follower.apply(&[create(1)]).unwrap();
        drop(follower);
        let (mut storage, _) = RaftStorage::open(dir.path(), 1 << 20).unwrap();
        storage.log.append(&[create(1), create(2)]).unwrap();
        storage.log.sync().unwrap();
        // The stream landed as a durable file, then the Raft storage installed it...
        storage
            .snapshots()
            .clone()
            .create::<E>(4, 50, |tmp| Ok(leader.snapshot_to(tmp)?))
            .unwrap();
        let snapshot = Snapshot {
            index: 50,
            term: 4,
            data: vec![],
        };
        storage.install_snapshot(&snapshot).unwrap();
        drop(storage);
        // ...and the process died as SQLite was being swapped: its WAL is gone, a
        // half-copied replacement is left.
        let _ = std::fs::remove_file(dir.path().join("chat.sqlite-wal"));
        std::fs::write(dir.path().join("chat.restore.tmp"), b"half a copy").unwrap();

        let (mut storage, loaded) = RaftStorage::open(dir.path(), 1 << 20).unwrap();
        let mut follower = ChatStore::open(&dir.path().join("chat.sqlite")).unwrap();
        assert!(follower.applied_index().unwrap() < 50);
        let restored = reconcile::<_, E>(&mut storage, loaded, &mut follower).unwrap();
        assert_eq!(restored.applied, 50);
        assert_eq!((restored.snapshot.index, restored.snapshot.term), (50, 4));
        assert!(restored.entries.is_empty());
        assert_eq!(follower.digest(), leader.digest());
        assert_eq!(follower.digest(), follower.recompute_digest().unwrap());
        assert!(dir.path().join("snapshots/snap-4-50.db").exists());
    }
}
