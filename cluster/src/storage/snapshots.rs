//! Snapshot files: where a replica keeps the bytes of its snapshots, and how a snapshot
//! streamed from the leader lands on disk.
//!
//! A snapshot of the chat state is a whole SQLite database (hundreds of megabytes for a busy
//! cluster), so it is never held in memory. The Raft core only ever sees its metadata
//! ([`Snapshot`]: index and term, with an empty `data`); the bytes live in one file per
//! snapshot, named after the position it covers:
//!
//! ```text
//! DIR/snapshots/snap-<term>-<index>.db     a complete snapshot, durable, never changed
//! DIR/snapshots/*.tmp                      one being written (by VACUUM INTO or a stream)
//! ```
//!
//! - A file appears under its final name only once whole and durable: it is written under a
//!   `.tmp` name, fsync'd, renamed, and the directory fsync'd. So whoever finds a
//!   `snap-*.db` file may trust it (the leader streams it; recovery restores from it).
//! - The file of the current snapshot (the one `raft/snapshot` names) is never removed. Older
//!   ones are removed once a newer snapshot is durable ([`SnapshotDir::remove_older`]); a
//!   reader that has one open (a peer sender streaming it) keeps reading it, since an
//!   unlinked file lives on while it is open. Files *newer* than the current snapshot are a
//!   received snapshot waiting for the core to install it, and are left alone until startup,
//!   which removes everything but the current snapshot's file ([`SnapshotDir::open`]).
//! - A stream from the leader is written by [`Incoming`]: within a size cap, with a crc32
//!   over the whole file that must match the sender's, fsync'd and renamed only when whole.
//!   An `Incoming` dropped before it finishes removes its temporary file, so a truncated,
//!   corrupt, oversized or timed-out stream changes nothing.
//!
//! Everything here is blocking file I/O: async callers run it on a blocking thread.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::StorageError;
use super::log::sync_dir;
use crate::raft::{Index, Term};

/// The `snapshots/` directory of a data directory. Cheap to clone: every actor that reads or
/// writes snapshot files holds one.
#[derive(Clone, Debug)]
pub struct SnapshotDir {
    dir: PathBuf,
}

/// Numbers temporary files, so that a stream abandoned while a write was in flight can never
/// remove the file of the stream after it.
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

impl SnapshotDir {
    /// Opens (creating) `DIR/snapshots` and removes every file in it except the snapshot of
    /// (`keep_term`, `keep_index`): temporary files of writes a crash interrupted, older
    /// snapshots, and received ones never installed.
    pub fn open(
        data_dir: &Path,
        keep_term: Term,
        keep_index: Index,
    ) -> Result<SnapshotDir, StorageError> {
        let dir = data_dir.join("snapshots");
        fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
        let snapshots = SnapshotDir { dir };
        let keep = snapshots.path(keep_term, keep_index);
        let mut removed = false;
        for entry in
            fs::read_dir(&snapshots.dir).map_err(|e| StorageError::io(&snapshots.dir, e))?
        {
            let path = entry
                .map_err(|e| StorageError::io(&snapshots.dir, e))?
                .path();
            if path != keep {
                fs::remove_file(&path).map_err(|e| StorageError::io(&path, e))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&snapshots.dir)?;
        }
        Ok(snapshots)
    }

    /// The file of the snapshot covering everything up to `index` (whose entry has `term`).
    pub fn path(&self, term: Term, index: Index) -> PathBuf {
        self.dir.join(format!("snap-{term}-{index}.db"))
    }

    /// A fresh temporary path in this directory.
    fn temp(&self, what: &str) -> PathBuf {
        let n = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!("{what}-{}-{n}.tmp", std::process::id()))
    }

    /// Makes the snapshot file of (`term`, `index`): `write` fills a temporary path (the file
    /// does not exist yet), which is then fsync'd and renamed into place, and the directory
    /// fsync'd. Returns the final path. The temporary file is removed if `write` fails.
    pub fn create<E: From<StorageError>>(
        &self,
        term: Term,
        index: Index,
        write: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<PathBuf, E> {
        self.create_found(|tmp| write(tmp).map(|()| (term, index)))
            .map(|(_, _, path)| path)
    }

    /// Like [`Self::create`], for a writer that learns the snapshot's position only once it
    /// has written it (a copy made while entries go on being applied): `write` fills the
    /// temporary path and returns the `(term, index)` the copy covers.
    pub fn create_found<E: From<StorageError>>(
        &self,
        write: impl FnOnce(&Path) -> Result<(Term, Index), E>,
    ) -> Result<(Term, Index, PathBuf), E> {
        let tmp = self.temp("make");
        let (term, index) = match write(&tmp) {
            Ok(at) => at,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let path = self.path(term, index);
        self.publish(&tmp, &path)?;
        Ok((term, index, path))
    }

    /// fsync `tmp`, rename it to `path`, fsync the directory.
    fn publish(&self, tmp: &Path, path: &Path) -> Result<(), StorageError> {
        File::open(tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| StorageError::io(tmp, e))?;
        fs::rename(tmp, path).map_err(|e| StorageError::io(path, e))?;
        sync_dir(&self.dir)
    }

    /// Removes the snapshot files older than `index` (call it once the snapshot at `index`
    /// is durable). Newer files, and temporary ones, are left to their writers.
    pub fn remove_older(&self, index: Index) -> Result<(), StorageError> {
        for entry in fs::read_dir(&self.dir).map_err(|e| StorageError::io(&self.dir, e))? {
            let path = entry.map_err(|e| StorageError::io(&self.dir, e))?.path();
            let older = parse_name(&path).is_some_and(|(_, i)| i < index);
            if older {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StorageError::io(&path, e)),
                }
            }
        }
        Ok(())
    }

    /// Starts receiving a snapshot stream of `total` bytes into a temporary file.
    pub fn incoming(&self, total: u64) -> Result<Incoming, StorageError> {
        let tmp = self.temp("incoming");
        let file = File::create(&tmp).map_err(|e| StorageError::io(&tmp, e))?;
        Ok(Incoming {
            dir: self.clone(),
            tmp,
            file: Some(file),
            crc: crc32fast::Hasher::new(),
            total,
            written: 0,
        })
    }
}

/// `snap-<term>-<index>.db` -> (term, index).
fn parse_name(path: &Path) -> Option<(Term, Index)> {
    let name = path.file_name()?.to_str()?;
    let rest = name.strip_prefix("snap-")?.strip_suffix(".db")?;
    let (term, index) = rest.split_once('-')?;
    Some((term.parse().ok()?, index.parse().ok()?))
}

/// Why a received snapshot stream was refused: the sender's fault, not the disk's.
#[derive(Debug, thiserror::Error)]
pub enum IncomingError {
    #[error("more data than the {total} bytes announced")]
    TooLong { total: u64 },
    #[error("{written} bytes received of the {total} announced")]
    Truncated { written: u64, total: u64 },
    #[error("checksum mismatch: crc32 {actual:08x}, the sender says {expected:08x}")]
    Checksum { expected: u32, actual: u32 },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A snapshot being received: a temporary file, the running crc32 of what was written, and
/// the size the sender announced. Dropped unfinished, it removes its file.
pub struct Incoming {
    dir: SnapshotDir,
    tmp: PathBuf,
    file: Option<File>,
    crc: crc32fast::Hasher,
    total: u64,
    written: u64,
}

impl Incoming {
    /// Appends the next piece of the stream. More than the announced size is refused.
    pub fn write(&mut self, data: &[u8]) -> Result<(), IncomingError> {
        if self.written + data.len() as u64 > self.total {
            return Err(IncomingError::TooLong { total: self.total });
        }
        let file = self.file.as_mut().expect("open until finished");
        file.write_all(data)
            .map_err(|e| StorageError::io(&self.tmp, e))?;
        self.crc.update(data);
        self.written += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks that the whole announced size arrived with the sender's crc32, then makes the
    /// file durable as the snapshot of (`term`, `index`). Returns its path.
    pub fn finish(
        mut self,
        crc32: u32,
        term: Term,
        index: Index,
    ) -> Result<PathBuf, IncomingError> {
        if self.written != self.total {
            return Err(IncomingError::Truncated {
                written: self.written,
                total: self.total,
            });
        }
        let actual = self.crc.clone().finalize();
        if actual != crc32 {
            return Err(IncomingError::Checksum {
                expected: crc32,
                actual,
            });
        }
        let file = self.file.take().expect("open until finished");
        file.sync_all()
            .map_err(|e| StorageError::io(&self.tmp, e))?;
        drop(file);
        let path = self.dir.path(term, index);
        self.dir.publish(&self.tmp, &path)?;
        // Published: nothing left for Drop to remove.
        self.tmp = PathBuf::new();
        Ok(path)
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Reads a snapshot file piece by piece: the sender's side of a stream.
pub struct Outgoing {
    file: File,
    crc: crc32fast::Hasher,
    /// The file's size when it was opened (snapshot files never change).
    pub total: u64,
}

impl Outgoing {
    /// Opens the snapshot of (`term`, `index`).
    pub fn open(dir: &SnapshotDir, term: Term, index: Index) -> Result<Outgoing, StorageError> {
        let path = dir.path(term, index);
        let file = File::open(&path).map_err(|e| StorageError::io(&path, e))?;
        let total = file
            .metadata()
            .map_err(|e| StorageError::io(&path, e))?
            .len();
        Ok(Outgoing {
            file,
            crc: crc32fast::Hasher::new(),
            total,
        })
    }

    /// The next piece, at most `max` bytes; empty at the end of the file.
    pub fn next_chunk(&mut self, max: usize) -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let mut buf = Vec::with_capacity(max);
        (&mut self.file).take(max as u64).read_to_end(&mut buf)?;
        self.crc.update(&buf);
        Ok(buf)
    }

    /// The crc32 of everything read so far (of the whole file, once read to the end).
    pub fn crc32(&self) -> u32 {
        self.crc.clone().finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> SnapshotDir {
        SnapshotDir::open(dir, 0, 0).unwrap()
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Streams `data` out of one directory and into another, in chunks of `chunk` bytes.
    fn copy(from: &SnapshotDir, to: &SnapshotDir, chunk: usize) -> PathBuf {
        let mut out = Outgoing::open(from, 2, 7).unwrap();
        let mut inc = to.incoming(out.total).unwrap();
        loop {
            let piece = out.next_chunk(chunk).unwrap();
            if piece.is_empty() {
                break;
            }
            inc.write(&piece).unwrap();
        }
        inc.finish(out.crc32(), 2, 7).unwrap()
    }

    #[test]
    fn a_snapshot_is_made_streamed_and_received_whole() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (sa, sb) = (open(a.path()), open(b.path()));
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let made = sa
            .create::<StorageError>(2, 7, |tmp| {
                fs::write(tmp, &data).map_err(|e| StorageError::io(tmp, e))
            })
            .unwrap();
        assert_eq!(files(a.path()), vec!["snap-2-7.db"]);
        assert_eq!(fs::read(made).unwrap(), data);
        let got = copy(&sa, &sb, 4096);
        assert_eq!(fs::read(got).unwrap(), data);
        assert_eq!(files(b.path()), vec!["snap-2-7.db"]);
    }

    #[test]
    fn a_truncated_long_or_corrupt_stream_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let data = vec![5u8; 10_000];
        let crc = crc32fast::hash(&data);
        // Truncated.
        let mut inc = s.incoming(10_000).unwrap();
        inc.write(&data[..9_000]).unwrap();
        assert!(matches!(
            inc.finish(crc, 1, 1),
            Err(IncomingError::Truncated { .. })
        ));
        // Longer than announced.
        let mut inc = s.incoming(10_000).unwrap();
        inc.write(&data).unwrap();
        assert!(matches!(
            inc.write(&[1]),
            Err(IncomingError::TooLong { .. })
        ));
        drop(inc);
        // A flipped byte.
        let mut inc = s.incoming(10_000).unwrap();
        let mut bad = data.clone();
        bad[1234] ^= 1;
        inc.write(&bad).unwrap();
        assert!(matches!(
            inc.finish(crc, 1, 1),
            Err(IncomingError::Checksum { .. })
        ));
        // Abandoned half way (a timeout drops it).
        let mut inc = s.incoming(10_000).unwrap();
        inc.write(&data[..10]).unwrap();
        drop(inc);
        assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
    }

    #[test]
    fn older_files_go_once_a_newer_one_is_durable_and_startup_keeps_only_the_current() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        for (term, index) in [(1, 5), (2, 9), (3, 20)] {
            s.create::<StorageError>(term, index, |tmp| {
                fs::write(tmp, b"x").map_err(|e| StorageError::io(tmp, e))
            })
            .unwrap();
        }
        fs::write(dir.path().join("snapshots/incoming-1-1.tmp"), b"half").unwrap();
        s.remove_older(9).unwrap();
        assert_eq!(
            files(dir.path()),
            vec!["incoming-1-1.tmp", "snap-2-9.db", "snap-3-20.db"]
        );
        SnapshotDir::open(dir.path(), 2, 9).unwrap();
        assert_eq!(files(dir.path()), vec!["snap-2-9.db"]);
    }
}
