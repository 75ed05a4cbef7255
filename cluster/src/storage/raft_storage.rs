//! The Raft part of a data directory: the log, the hard state and the latest snapshot's
//! metadata, the atomic replacement of the last two (see the module docs of `storage`), and
//! the snapshot files ([`SnapshotDir`]) that metadata names.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::error::StorageError;
use super::log::{self, LogStore};
use super::snapshots::SnapshotDir;
use crate::raft::{Entry, HardState, Snapshot};

/// Everything a node restarts from.
pub struct Loaded {
    pub hard_state: HardState,
    pub snapshot: Snapshot,
    /// Log entries after the snapshot.
    pub entries: Vec<Entry>,
}

/// The Raft part of a data directory.
pub struct RaftStorage {
    dir: PathBuf,
    pub(crate) log: LogStore,
    snapshots: SnapshotDir,
}

impl RaftStorage {
    pub fn open(
        data_dir: &Path,
        segment_bytes: u64,
    ) -> Result<(RaftStorage, Loaded), StorageError> {
        let dir = data_dir.join("raft");
        fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
        let hard_state = read_checked(&dir.join("hardstate"))?
            .map(|b| postcard::from_bytes(&b))
            .transpose()
            .map_err(|e| corrupt(&dir.join("hardstate"), e))?
            .unwrap_or_default();
        let (mut log, mut entries) = LogStore::open(&dir.join("log"), segment_bytes)?;
        // An install from the leader interrupted by a crash: `snapshot.installing` is the
        // commit point. If it is whole, finish the install; if torn, it never happened.
        let installing = dir.join("snapshot.installing");
        match read_checked(&installing) {
            Ok(Some(bytes)) => {
                let snapshot: Snapshot =
                    postcard::from_bytes(&bytes).map_err(|e| corrupt(&installing, e))?;
                tracing::warn!(
                    index = snapshot.index,
                    "finishing a snapshot install interrupted by a crash"
                );
                log.reset(snapshot.index + 1)?;
                entries.clear();
                fs::rename(&installing, dir.join("snapshot"))
                    .map_err(|e| StorageError::io(&installing, e))?;
                log::sync_dir(&dir)?;
            }
            Ok(None) => {}
            Err(_) => {
                tracing::warn!("discarding a torn snapshot install");
                fs::remove_file(&installing).map_err(|e| StorageError::io(&installing, e))?;
                log::sync_dir(&dir)?;
            }
        }
        let mut snapshot: Snapshot = read_checked(&dir.join("snapshot"))?
            .map(|b| postcard::from_bytes(&b))
            .transpose()
            .map_err(|e| corrupt(&dir.join("snapshot"), e))?
            .unwrap_or_default();
        let snapshots = SnapshotDir::open(data_dir, snapshot.term, snapshot.index)?;
        if !snapshot.data.is_empty() {
            // A data directory from before snapshots were files: the bytes move to the
            // snapshot's file (once), and the metadata keeps only the position.
            tracing::info!(
                index = snapshot.index,
                "moving the snapshot's data to its file"
            );
            let data = std::mem::take(&mut snapshot.data);
            snapshots.create::<StorageError>(snapshot.term, snapshot.index, |tmp| {
                fs::write(tmp, &data).map_err(|e| StorageError::io(tmp, e))
            })?;
            write_checked(
                &dir,
                "snapshot",
                &postcard::to_allocvec(&snapshot).expect("encodes"),
            )?;
        }
        entries.retain(|e| e.index > snapshot.index);
        if entries.is_empty() && snapshot.index > 0 && log.last_index() != snapshot.index {
            // Everything the log holds is covered by the snapshot: continue right after it.
            log.reset(snapshot.index + 1)?;
        }
        if let Some(first) = entries.first()
            && first.index != snapshot.index + 1
        {
            return Err(StorageError::Corrupt {
                path: dir.join("log"),
                offset: 0,
                reason: format!(
                    "log starts at {} but the snapshot ends at {}",
                    first.index, snapshot.index
                ),
            });
        }
        Ok((
            RaftStorage {
                dir,
                log,
                snapshots,
            },
            Loaded {
                hard_state,
                snapshot,
                entries,
            },
        ))
    }

    pub fn save_hard_state(&self, hs: &HardState) -> Result<(), StorageError> {
        write_checked(
            &self.dir,
            "hardstate",
            &postcard::to_allocvec(hs).expect("encodes"),
        )
    }

    /// Where the snapshot files live.
    pub fn snapshots(&self) -> &SnapshotDir {
        &self.snapshots
    }

    /// Installs a snapshot received from the leader: the snapshot and the replacement of the
    /// whole log happen atomically across a crash. The durable `snapshot.installing` file is
    /// the commit point; `open` finishes an install it finds. The snapshot's file must
    /// already be durable ([`SnapshotDir`]); older files are removed once this one is
    /// installed.
    pub fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        write_checked(
            &self.dir,
            "snapshot.installing",
            &postcard::to_allocvec(snapshot).expect("encodes"),
        )?;
        self.log.reset(snapshot.index + 1)?;
        let from = self.dir.join("snapshot.installing");
        fs::rename(&from, self.dir.join("snapshot")).map_err(|e| StorageError::io(&from, e))?;
        log::sync_dir(&self.dir)?;
        self.snapshots.remove_older(snapshot.index)
    }

    /// Makes a snapshot's metadata durable (its file already is), then drops the log entries
    /// and the older snapshot files it covers.
    pub fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        write_checked(
            &self.dir,
            "snapshot",
            &postcard::to_allocvec(snapshot).expect("encodes"),
        )?;
        self.log.compact(snapshot.index)?;
        self.snapshots.remove_older(snapshot.index)
    }
}

fn corrupt(path: &Path, e: postcard::Error) -> StorageError {
    StorageError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason: e.to_string(),
    }
}

/// Reads a file written by [`write_checked`], verifying its trailing crc32.
fn read_checked(path: &Path) -> Result<Option<Vec<u8>>, StorageError> {
    let mut bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(path, e)),
    };
    if bytes.len() < 4 {
        return Err(StorageError::Corrupt {
            path: path.into(),
            offset: 0,
            reason: "too short".into(),
        });
    }
    let crc = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().expect("4 bytes"));
    bytes.truncate(bytes.len() - 4);
    if crc32fast::hash(&bytes) != crc {
        return Err(StorageError::Corrupt {
            path: path.into(),
            offset: 0,
            reason: "checksum mismatch".into(),
        });
    }
    Ok(Some(bytes))
}

fn write_checked(dir: &Path, name: &str, data: &[u8]) -> Result<(), StorageError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut bytes = data.to_vec();
    bytes.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    let write = || -> io::Result<()> {
        use std::io::Write;
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    };
    write().map_err(|e| StorageError::io(&path, e))?;
    log::sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_state_and_snapshot_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, loaded) = RaftStorage::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(loaded.hard_state, HardState::default());
        s.save_hard_state(&HardState {
            term: 3,
            vote: Some(2),
        })
        .unwrap();
        let entries: Vec<Entry> = (1..=5)
            .map(|i| Entry {
                index: i,
                term: 3,
                command: None,
            })
            .collect();
        s.log.append(&entries).unwrap();
        s.log.sync().unwrap();
        s.save_snapshot(&Snapshot {
            index: 3,
            term: 3,
            data: b"state".to_vec(),
        })
        .unwrap();
        drop(s);
        let (_, loaded) = RaftStorage::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            loaded.hard_state,
            HardState {
                term: 3,
                vote: Some(2)
            }
        );
        // Data in the metadata (the format before snapshot files) moves to the file.
        assert!(loaded.snapshot.data.is_empty());
        assert_eq!(
            fs::read(dir.path().join("snapshots/snap-3-3.db")).unwrap(),
            b"state"
        );
        assert_eq!(
            loaded.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![4, 5]
        );
    }

    fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
        (from..=to)
            .map(|i| Entry {
                index: i,
                term,
                command: None,
            })
            .collect()
    }

    #[test]
    fn an_install_interrupted_after_its_commit_point_is_finished_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = RaftStorage::open(dir.path(), 1 << 20).unwrap();
        s.log.append(&entries(1, 60, 2)).unwrap();
        s.log.sync().unwrap();
        // Crash right after the commit point: the old (divergent) log is still there.
        let snap = Snapshot {
            index: 100,
            term: 3,
            data: b"leader state".to_vec(),
        };
        let raft = dir.path().join("raft");
        write_checked(
            &raft,
            "snapshot.installing",
            &postcard::to_allocvec(&snap).unwrap(),
        )
        .unwrap();
        drop(s);
        let (mut s, loaded) = RaftStorage::open(dir.path(), 1 << 20).unwrap();
        assert_eq!((loaded.snapshot.index, loaded.snapshot.term), (100, 3));
        assert!(loaded.entries.is_empty());
        s.log.append(&entries(101, 101, 3)).unwrap();
        s.log.sync().unwrap();
        drop(s);
        let (_, loaded) = RaftStorage::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(loaded.entries, entries(101, 101, 3));
    }

    #[test]
    fn a_torn_install_never_happened() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = RaftStorage::open(dir.path(), 1 << 20).unwrap();
        s.log.append(&entries(1, 5, 2)).unwrap();
        s.log.sync().unwrap();
        drop(s);
        fs::write(dir.path().join("raft/snapshot.installing"), b"torn").unwrap();
        let (_, loaded) = RaftStorage::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(loaded.snapshot.index, 0);
        assert_eq!(loaded.entries, entries(1, 5, 2));
        assert!(!dir.path().join("raft/snapshot.installing").exists());
    }

    #[test]
    fn a_log_that_ends_before_the_snapshot_continues_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = RaftStorage::open(dir.path(), 1 << 20).unwrap();
        s.log.append(&entries(1, 60, 2)).unwrap();
        s.log.sync().unwrap();
        let snap = Snapshot {
            index: 100,
            term: 3,
            data: vec![],
        };
        let raft = dir.path().join("raft");
        write_checked(&raft, "snapshot", &postcard::to_allocvec(&snap).unwrap()).unwrap();
        drop(s);
        let (mut s, loaded) = RaftStorage::open(dir.path(), 1 << 20).unwrap();
        assert!(loaded.entries.is_empty());
        s.log.append(&entries(101, 102, 3)).unwrap();
        s.log.sync().unwrap();
    }

    #[test]
    fn corrupt_hard_state_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = RaftStorage::open(dir.path(), 1 << 20).unwrap();
        s.save_hard_state(&HardState {
            term: 3,
            vote: Some(2),
        })
        .unwrap();
        let path = dir.path().join("raft/hardstate");
        let mut b = fs::read(&path).unwrap();
        b[0] ^= 1;
        fs::write(&path, b).unwrap();
        assert!(matches!(
            RaftStorage::open(dir.path(), 1 << 20),
            Err(StorageError::Corrupt { .. })
        ));
    }
}
