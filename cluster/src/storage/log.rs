//! The durable Raft log: segment files of checksummed records.
//!
//! A segment is named after the index of its first entry (`00000000000000000042.log`) and
//! holds records `[len: u32 LE][crc32: u32 LE][payload: len bytes]`, the payload being one
//! postcard-encoded [`Entry`]. Appends go to the last segment; a new one starts past
//! `segment_bytes`. Nothing here syncs on its own: the storage writer calls
//! [`LogStore::sync`] once per group of appends (group commit).
//!
//! Recovery rules, applied by [`LogStore::open`]:
//! - a bad record (short, checksum mismatch, undecodable, or out of sequence) in the *last*
//!   segment is a torn write from a crash: the file is truncated there and a warning logged;
//! - a bad record in any earlier segment is corruption of acknowledged data: opening fails
//!   with an error naming the file and offset, and the node refuses to start.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::raft::{Entry, Index};

use super::error::StorageError;

const HEADER: usize = 8;
const MAX_RECORD: u32 = 256 << 20;

struct Segment {
    first_index: Index,
    path: PathBuf,
}

pub struct LogStore {
    dir: PathBuf,
    segments: Vec<Segment>,
    /// The last segment, open for appending.
    file: File,
    /// Byte offset of each entry in its segment: `positions[i]` is entry `first + i`; its
    /// segment is the last one whose `first_index` is at or below it.
    ///
    /// Four bytes per entry, and the allocation shrinks when a compaction drops a segment:
    /// a 64 MiB segment of small chat entries holds about 300,000 of them, and the index was
    /// once 16 bytes per entry whose capacity was never given back, which made a busy
    /// follower's memory grow by megabytes between snapshots (cluster/README.md, "Under
    /// overload").
    positions: Vec<u32>,
    /// Index of the first entry in `positions` (entries before it were compacted).
    first: Index,
    file_len: u64,
    segment_bytes: u64,
}

fn segment_name(first_index: Index) -> String {
    format!("{first_index:020}.log")
}

impl LogStore {
    /// Opens (or creates) the log in `dir` and returns it with every entry it holds, in order.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(LogStore, Vec<Entry>), StorageError> {
        fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let mut names: Vec<(Index, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
            let path = entry.map_err(|e| StorageError::io(dir, e))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(stem) = name.strip_suffix(".log")
                && let Ok(first) = stem.parse::<Index>()
            {
                names.push((first, path));
            }
        }
        names.sort();
        if names.is_empty() {
            let path = dir.join(segment_name(1));
            File::create(&path).map_err(|e| StorageError::io(&path, e))?;
            sync_dir(dir)?;
            names.push((1, path));
        }
        let mut entries: Vec<Entry> = Vec::new();
        let mut positions = Vec::new();
        let count = names.len();
        let mut file_len = 0;
        for (seg_no, (first_index, path)) in names.iter().enumerate() {
            let last_segment = seg_no + 1 == count;
            let (seg_entries, offsets, good_len, bad) = read_segment(path, *first_index)?;
            if let Some(first) = seg_entries.first()
                && let Some(prev) = entries.last()
                && first.index != prev.index + 1
            {
                return Err(StorageError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    reason: format!("starts at entry {} after entry {}", first.index, prev.index),
                });
            }
            if let Some(reason) = bad {
                if !last_segment {
                    return Err(StorageError::Corrupt {
                        path: path.clone(),
                        offset: good_len,
                        reason,
                    });
                }
                tracing::warn!(
                    path = %path.display(),
                    offset = good_len,
                    %reason,
                    "torn write at the log tail: truncating"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| StorageError::io(path, e))?;
                f.set_len(good_len).map_err(|e| StorageError::io(path, e))?;
                f.sync_all().map_err(|e| StorageError::io(path, e))?;
            }
            for o in offsets {
                positions.push(u32::try_from(o).map_err(|_| StorageError::Corrupt {
                    path: path.clone(),
                    offset: o,
                    reason: "a record starts beyond 4 GiB into its segment".into(),
                })?);
            }
            entries.extend(seg_entries);
            file_len = good_len;
        }
        let segments: Vec<Segment> = names
            .into_iter()
            .map(|(first_index, path)| Segment { first_index, path })
            .collect();
        let last = &segments[segments.len() - 1].path;
        let file = open_at_end(last, false)?;
        let first = entries.first().map_or(segments[0].first_index, |e| e.index);
        let store = LogStore {
            dir: dir.to_path_buf(),
            segments,
            file,
            positions,
            first,
            file_len,
            // Every record starts below `segment_bytes`, so offsets fit the index's u32.
            segment_bytes: segment_bytes.min(u64::from(u32::MAX)),
        };
        Ok((store, entries))
    }

    /// The number of the segment holding `index` (one of the log's entries).
    fn segment_of(&self, index: Index) -> usize {
        self.segments
            .partition_point(|s| s.first_index <= index)
            .saturating_sub(1)
    }

    pub fn last_index(&self) -> Index {
        self.first + self.positions.len() as Index - 1
    }

    /// Writes entries, first discarding any stored entry at or after the first one's index.
    /// Not durable until [`LogStore::sync`]. Returns the bytes written (records with their
    /// framing), for the storage writer's counters.
    pub fn append(&mut self, entries: &[Entry]) -> Result<u64, StorageError> {
        let Some(head) = entries.first() else {
            return Ok(0);
        };
        if self.positions.is_empty() {
            // Empty log (fresh, or everything compacted): the next entry may start anywhere.
            self.first = head.index;
            self.restart_segments(head.index)?;
        } else if head.index <= self.last_index() {
            self.truncate_from(head.index)?;
        } else if head.index != self.last_index() + 1 {
            return Err(StorageError::Corrupt {
                path: self.dir.clone(),
                offset: 0,
                reason: format!(
                    "append of entry {} after entry {}",
                    head.index,
                    self.last_index()
                ),
            });
        }
        let mut buf = Vec::new();
        let mut written = 0;
        for e in entries {
            if self.file_len + buf.len() as u64 >= self.segment_bytes {
                self.write_buf(&mut buf)?;
                self.roll(e.index)?;
            }
            let payload = postcard::to_allocvec(e).expect("entries encode");
            let start = self.file_len + buf.len() as u64;
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            buf.extend_from_slice(&payload);
            written += 8 + payload.len() as u64;
            if self.positions.is_empty() {
                self.first = e.index;
            }
            self.positions
                .push(u32::try_from(start).expect("records start below segment_bytes"));
            if buf.len() >= 1 << 20 {
                self.write_buf(&mut buf)?;
            }
        }
        self.write_buf(&mut buf)?;
        Ok(written)
    }

    fn write_buf(&mut self, buf: &mut Vec<u8>) -> Result<(), StorageError> {
        if buf.is_empty() {
            return Ok(());
        }
        let path = &self.segments[self.segments.len() - 1].path;
        self.file
            .write_all(buf)
            .map_err(|e| StorageError::io(path, e))?;
        self.file_len += buf.len() as u64;
        buf.clear();
        Ok(())
    }

    /// Starts a new segment. The full one is synced first, so only the last segment can
    /// ever hold a torn record after a crash (the rule `open` relies on).
    fn roll(&mut self, first_index: Index) -> Result<(), StorageError> {
        let old_path = &self.segments[self.segments.len() - 1].path;
        self.file
            .sync_data()
            .map_err(|e| StorageError::io(old_path, e))?;
        let path = self.dir.join(segment_name(first_index));
        self.file = open_at_end(&path, true)?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment { first_index, path });
        self.file_len = 0;
        Ok(())
    }

    /// Replaces every segment with one empty segment starting at `first_index`.
    fn restart_segments(&mut self, first_index: Index) -> Result<(), StorageError> {
        let old: Vec<PathBuf> = self.segments.drain(..).map(|s| s.path).collect();
        let path = self.dir.join(segment_name(first_index));
        let file = open_at_end(&path, true)?;
        for p in old.iter().filter(|p| **p != path) {
            fs::remove_file(p).map_err(|e| StorageError::io(p, e))?;
        }
        sync_dir(&self.dir)?;
        self.file = file;
        self.segments.push(Segment { first_index, path });
        self.positions.clear();
        self.file_len = 0;
        Ok(())
    }

    fn truncate_from(&mut self, index: Index) -> Result<(), StorageError> {
        if index <= self.first {
            return self.restart_segments(index);
        }
        let offset = u64::from(self.positions[(index - self.first) as usize]);
        let seg_no = self.segment_of(index);
        // Drop whole segments after the one holding `index`.
        let removed = self.segments.len() > seg_no + 1;
        for seg in self.segments.drain(seg_no + 1..) {
            fs::remove_file(&seg.path).map_err(|e| StorageError::io(&seg.path, e))?;
        }
        if removed {
            // Deleted segments must not come back after a power loss.
            sync_dir(&self.dir)?;
        }
        let path = self.segments[seg_no].path.clone();
        let file = open_at_end(&path, false)?;
        file.set_len(offset)
            .map_err(|e| StorageError::io(&path, e))?;
        let mut file = file;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| StorageError::io(&path, e))?;
        self.file = file;
        self.file_len = offset;
        self.positions.truncate((index - self.first) as usize);
        Ok(())
    }

    /// Makes everything written so far durable: one fdatasync, since full segments were
    /// synced when they were closed.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        let path = &self.segments[self.segments.len() - 1].path;
        self.file.sync_data().map_err(|e| StorageError::io(path, e))
    }

    /// Drops every entry: the log continues at `next_index` (after installing a snapshot).
    pub fn reset(&mut self, next_index: Index) -> Result<(), StorageError> {
        self.restart_segments(next_index)?;
        self.first = next_index;
        Ok(())
    }

    /// Deletes segments holding only entries up to `index` (covered by a durable snapshot).
    pub fn compact(&mut self, index: Index) -> Result<(), StorageError> {
        let mut removed = false;
        while self.segments.len() > 1 && self.segments[1].first_index <= index + 1 {
            removed = true;
            let seg = self.segments.remove(0);
            fs::remove_file(&seg.path).map_err(|e| StorageError::io(&seg.path, e))?;
            // The entries of the dropped segment: those before the next one's first.
            let next_first = self.segments[0].first_index;
            let dropped =
                (next_first.saturating_sub(self.first) as usize).min(self.positions.len());
            self.positions.drain(..dropped);
            self.first += dropped as Index;
        }
        if removed {
            sync_dir(&self.dir)?;
            // Give the dropped segment's part of the index back.
            self.positions
                .shrink_to(self.positions.len() + self.positions.len() / 4);
        }
        if self.positions.is_empty() || index >= self.last_index() {
            // Everything is covered: start afresh after the snapshot.
            self.restart_segments(index + 1)?;
            self.first = index + 1;
        }
        Ok(())
    }
}

/// Reads a segment: its entries, their offsets, the length of the good prefix, and why the
/// rest is bad (if it is).
#[allow(clippy::type_complexity)]
fn read_segment(
    path: &Path,
    first_index: Index,
) -> Result<(Vec<Entry>, Vec<u64>, u64, Option<String>), StorageError> {
    let file = File::open(path).map_err(|e| StorageError::io(path, e))?;
    let len = file
        .metadata()
        .map_err(|e| StorageError::io(path, e))?
        .len();
    let mut reader = BufReader::new(file);
    reader
        .seek(SeekFrom::Start(0))
        .map_err(|e| StorageError::io(path, e))?;
    let mut entries: Vec<Entry> = Vec::new();
    let mut offsets = Vec::new();
    let mut offset = 0u64;
    let mut header = [0u8; HEADER];
    while offset < len {
        if len - offset < HEADER as u64 {
            return Ok((entries, offsets, offset, Some("short record header".into())));
        }
        reader
            .read_exact(&mut header)
            .map_err(|e| StorageError::io(path, e))?;
        let size = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if size > MAX_RECORD || len - offset - (HEADER as u64) < size as u64 {
            return Ok((
                entries,
                offsets,
                offset,
                Some(format!("record of {size} bytes runs past the end")),
            ));
        }
        let mut payload = vec![0u8; size as usize];
        reader
            .read_exact(&mut payload)
            .map_err(|e| StorageError::io(path, e))?;
        if crc32fast::hash(&payload) != crc {
            return Ok((entries, offsets, offset, Some("checksum mismatch".into())));
        }
        let entry: Entry = match postcard::from_bytes(&payload) {
            Ok(e) => e,
            Err(e) => {
                return Ok((
                    entries,
                    offsets,
                    offset,
                    Some(format!("undecodable entry: {e}")),
                ));
            }
        };
        let expected = entries.last().map_or(first_index, |p| p.index + 1);
        if entry.index != expected {
            return Ok((
                entries,
                offsets,
                offset,
                Some(format!(
                    "entry {} where {expected} was expected",
                    entry.index
                )),
            ));
        }
        offsets.push(offset);
        entries.push(entry);
        offset += (HEADER + size as usize) as u64;
    }
    Ok((entries, offsets, offset, None))
}

/// Opens a segment for writing at its end (or empties it first).
fn open_at_end(path: &Path, truncate: bool) -> Result<File, StorageError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(path)
        .map_err(|e| StorageError::io(path, e))?;
    file.seek(SeekFrom::End(0))
        .map_err(|e| StorageError::io(path, e))?;
    Ok(file)
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(index: Index, term: u64) -> Entry {
        Entry {
            index,
            term,
            command: Some(format!("entry {index}").into_bytes()),
        }
    }

    fn reopen(dir: &Path) -> Vec<Entry> {
        LogStore::open(dir, 256).expect("open").1
    }

    #[test]
    fn appends_truncates_and_rolls_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, entries) = LogStore::open(dir.path(), 256).unwrap();
        assert!(entries.is_empty());
        let batch: Vec<Entry> = (1..=40).map(|i| e(i, 1)).collect();
        log.append(&batch).unwrap();
        log.sync().unwrap();
        assert!(log.segments.len() > 2, "small segments roll");
        log.append(&[e(30, 2), e(31, 2)]).unwrap();
        log.sync().unwrap();
        let got = reopen(dir.path());
        assert_eq!(got.len(), 31);
        assert_eq!(got[28], e(29, 1));
        assert_eq!(got[29], e(30, 2));
    }

    #[test]
    fn torn_tail_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = LogStore::open(dir.path(), 1 << 20).unwrap();
        log.append(&(1..=5).map(|i| e(i, 1)).collect::<Vec<_>>())
            .unwrap();
        log.sync().unwrap();
        let path = log.segments[0].path.clone();
        drop(log);
        // Cut the last record in half, as a crash mid-write would.
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        assert_eq!(reopen(dir.path()).len(), 4);
        // The truncation is durable and appends continue after it.
        let (mut log, entries) = LogStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(entries.len(), 4);
        log.append(&[e(5, 2)]).unwrap();
        log.sync().unwrap();
        assert_eq!(reopen(dir.path())[4], e(5, 2));
    }

    #[test]
    fn corrupt_tail_record_is_detected_by_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = LogStore::open(dir.path(), 1 << 20).unwrap();
        log.append(&(1..=5).map(|i| e(i, 1)).collect::<Vec<_>>())
            .unwrap();
        log.sync().unwrap();
        let offset = log.positions[4];
        let path = log.segments[0].path.clone();
        drop(log);
        let mut bytes = fs::read(&path).unwrap();
        let flip = offset as usize + HEADER + 2;
        bytes[flip] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        assert_eq!(reopen(dir.path()).len(), 4);
    }

    #[test]
    fn corruption_before_the_tail_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = LogStore::open(dir.path(), 128).unwrap();
        log.append(&(1..=20).map(|i| e(i, 1)).collect::<Vec<_>>())
            .unwrap();
        log.sync().unwrap();
        let first = log.segments[0].path.clone();
        drop(log);
        let mut bytes = fs::read(&first).unwrap();
        bytes[HEADER + 1] ^= 0xff;
        fs::write(&first, bytes).unwrap();
        match LogStore::open(dir.path(), 128) {
            Err(StorageError::Corrupt { path, .. }) => assert_eq!(path, first),
            other => panic!(
                "expected corruption error, got {:?}",
                other.map(|(_, e)| e.len())
            ),
        }
    }

    #[test]
    fn compaction_drops_whole_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = LogStore::open(dir.path(), 200).unwrap();
        log.append(&(1..=30).map(|i| e(i, 1)).collect::<Vec<_>>())
            .unwrap();
        log.sync().unwrap();
        let before = log.segments.len();
        log.compact(20).unwrap();
        assert!(log.segments.len() < before);
        let got = reopen(dir.path());
        assert_eq!(got.last(), Some(&e(30, 1)));
        assert!(got.first().unwrap().index <= 21);
        // Compacting past the end leaves an empty log that continues after the snapshot.
        let (mut log, _) = LogStore::open(dir.path(), 200).unwrap();
        log.compact(30).unwrap();
        log.append(&[e(31, 2)]).unwrap();
        log.sync().unwrap();
        assert_eq!(reopen(dir.path()), vec![e(31, 2)]);
    }

    /// Compactions and truncations across many segments keep the index right (every later
    /// truncation lands on the right segment and offset), and a compaction gives the
    /// dropped segments' part of the index back.
    #[test]
    fn the_index_follows_compactions_and_truncations_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = LogStore::open(dir.path(), 128).unwrap();
        let mut model: Vec<Entry> = (1..=400).map(|i| e(i, 1)).collect();
        log.append(&model).unwrap();
        let capacity = log.positions.capacity();
        log.compact(300).unwrap();
        assert!(log.segments.len() > 5, "{} segments", log.segments.len());
        assert!(
            log.positions.capacity() < capacity / 2,
            "{} of {capacity}",
            log.positions.capacity()
        );
        // Overwrite from the middle of a later segment, then from a segment's first entry.
        model.truncate(349);
        model.extend((350..=380).map(|i| e(i, 2)));
        log.append(&model[349..]).unwrap();
        let first_of_a_segment = log.segments[log.segments.len() - 2].first_index;
        model.truncate(first_of_a_segment as usize - 1);
        model.extend((first_of_a_segment..=first_of_a_segment + 5).map(|i| e(i, 3)));
        log.append(&model[first_of_a_segment as usize - 1..])
            .unwrap();
        log.sync().unwrap();
        assert_eq!(log.last_index(), first_of_a_segment + 5);
        let got = reopen(dir.path());
        let first = got[0].index as usize;
        assert!(
            first <= 301,
            "entries up to the compaction point may go: {first}"
        );
        assert_eq!(got, model[first - 1..]);
    }
}
