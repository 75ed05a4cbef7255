//! The storage-writer actor: a dedicated thread that owns the Raft storage and does group
//! commit.
//!
//! Its queue is bounded ([`STORAGE_QUEUE`] requests): when the disk falls behind, the core
//! actor waits for room, which is what stops a slow disk from queueing entries without end.
//!
//! It blocks for one request, then takes every request already queued, performs them in
//! order, and issues a single fdatasync for all the appends among them. Only then does it
//! report [`Completion::Persisted`]` { up_to }`, naming the last append of the batch (which
//! covers every earlier one). Hard-state and snapshot-install requests are answered on their
//! own oneshot once durable (each is its own fsync'd file), as the core's contract requires.
//! Any I/O error is fatal: the process stops with the error rather than run on with state it
//! cannot trust.
//!
//! It counts what group commit achieves ([`WriterStats`]: fdatasyncs, entries and bytes)
//! and hands the counts back when it is joined; in a replica it also records each
//! fdatasync's latency, entries and bytes as metrics (`observe.rs`). With tracing on, each
//! traced client write in a batch gets a `storage_append` span (write id, log index) from
//! the start of the batch to its fdatasync.
//!
//! Must not: know who listens to its reports (it calls the `report` function it was given),
//! or touch the state machine.

use std::thread::JoinHandle;

use tokio::sync::mpsc;

use super::fatal;
use super::mailbox::{Completion, STORAGE_QUEUE, StorageRequest};
use super::observe::Metrics;
use crate::raft::{AppendId, Entry};
use crate::storage::{RaftStorage, StorageError};

/// What the writer did over its life: how much each fdatasync carried.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterStats {
    /// fdatasyncs of appended entries (hard-state and snapshot files are not counted).
    pub syncs: u64,
    /// Entries appended.
    pub entries: u64,
    /// Bytes appended to the log, record framing included.
    pub bytes: u64,
}

impl WriterStats {
    /// Entries made durable per fdatasync: what group commit buys.
    pub fn entries_per_sync(&self) -> f64 {
        self.entries as f64 / self.syncs.max(1) as f64
    }

    /// Bytes made durable per fdatasync.
    pub fn bytes_per_sync(&self) -> f64 {
        self.bytes as f64 / self.syncs.max(1) as f64
    }
}

/// The handle of a running storage writer: where to send requests, and the thread to join.
pub struct StorageWriter {
    tx: mpsc::Sender<StorageRequest>,
    thread: JoinHandle<WriterStats>,
}

impl StorageWriter {
    /// Starts the writer thread on `storage`. `report` is called on that thread after each
    /// fdatasync of appends; it must not block.
    pub fn spawn(
        storage: RaftStorage,
        report: impl Fn(Completion) + Send + 'static,
    ) -> StorageWriter {
        StorageWriter::spawn_observed(storage, report, Metrics::noop([]), true)
    }

    /// [`StorageWriter::spawn`], recording each fdatasync into `metrics`.
    /// With `batching` off, each request is taken alone and each appended entry gets its own
    /// fdatasync (the baseline of the batching experiment, `--batching off`).
    pub(super) fn spawn_observed(
        mut storage: RaftStorage,
        report: impl Fn(Completion) + Send + 'static,
        metrics: Metrics,
        batching: bool,
    ) -> StorageWriter {
        let (tx, mut rx) = mpsc::channel::<StorageRequest>(STORAGE_QUEUE);
        let thread = std::thread::Builder::new()
            .name(fatal::STORAGE_WRITER_THREAD.into())
            .spawn(move || {
                let mut stats = WriterStats::default();
                while let Some(first) = rx.blocking_recv() {
                    let mut batch = vec![first];
                    while batching && let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    let run = if batching {
                        run_batch(&mut storage, batch, &mut stats, &metrics)
                    } else {
                        run_unbatched(&mut storage, batch, &mut stats, &metrics)
                    };
                    match run {
                        Ok(Some(up_to)) => report(Completion::Persisted { up_to }),
                        Ok(None) => {}
                        Err(e) => fatal::stop(e),
                    }
                }
                stats
            })
            .expect("spawn storage writer");
        StorageWriter { tx, thread }
    }

    /// Another sender for the writer's queue (the core actor's).
    pub(super) fn sender(&self) -> mpsc::Sender<StorageRequest> {
        self.tx.clone()
    }

    /// Queues entries to append as append `id`; completion is reported after the fdatasync.
    /// Ids must grow: the writer reports only the last of a batch. Waits while the queue is
    /// full, so it is for threads, not async tasks (the benchmarks use it).
    pub fn append(&self, id: AppendId, entries: Vec<Entry>) {
        if self
            .tx
            .blocking_send(StorageRequest::Append(id, entries, Vec::new()))
            .is_err()
        {
            fatal::writer_stopped("appends were still being queued");
        }
    }

    /// Waits until every sender is gone and every queued request is done, and returns the
    /// writer's counts. A panic on the writer thread is returned as the error.
    pub fn join(self) -> std::thread::Result<WriterStats> {
        drop(self.tx);
        self.thread.join()
    }
}

/// Performs one batch in order, with one fdatasync for its appends. Returns the last append
/// id of the batch, now durable.
fn run_batch(
    storage: &mut RaftStorage,
    batch: Vec<StorageRequest>,
    stats: &mut WriterStats,
    metrics: &Metrics,
) -> Result<Option<AppendId>, StorageError> {
    let mut last = None;
    let before = *stats;
    // Open from the batch's start to its fdatasync; empty unless tracing is on.
    let mut spans = Vec::new();
    for req in batch {
        match req {
            StorageRequest::Append(id, entries, traces) => {
                for (index, t) in traces {
                    spans.push(tracing::debug_span!(parent: &t.span, "storage_append",
                        client_id = t.client_id, sequence = t.sequence, index, append = id));
                }
                stats.bytes += storage.log.append(&entries)?;
                stats.entries += entries.len() as u64;
                last = Some(id);
            }
            StorageRequest::HardState(hs, done) => {
                storage.save_hard_state(&hs)?;
                let _ = done.send(());
            }
            StorageRequest::Compact(snapshot) => storage.save_snapshot(&snapshot)?,
            StorageRequest::Install(snapshot, done) => {
                // Earlier appends in this batch were written before the install replaced them;
                // their completion is still reported (the core ignores what it superseded).
                storage.install_snapshot(&snapshot)?;
                let _ = done.send(snapshot);
            }
            StorageRequest::InjectPanic => panic!("fault injection: the storage writer panics"),
        }
    }
    if last.is_some() {
        sync(
            storage,
            stats,
            metrics,
            stats.entries - before.entries,
            stats.bytes - before.bytes,
        )?;
    }
    drop(spans);
    Ok(last)
}

/// One fdatasync of the log, counted, and recorded with the entries and bytes it made
/// durable.
fn sync(
    storage: &mut RaftStorage,
    stats: &mut WriterStats,
    metrics: &Metrics,
    entries: u64,
    bytes: u64,
) -> Result<(), StorageError> {
    let start = std::time::Instant::now();
    storage.log.sync()?;
    metrics.fsync_seconds.record(start.elapsed().as_secs_f64());
    metrics.fsync_entries.record(entries as f64);
    metrics.fsync_bytes.record(bytes as f64);
    stats.syncs += 1;
    Ok(())
}

/// One request without group commit: each appended entry is written and fdatasync'd on its
/// own. Everything else is as in [`run_batch`].
fn run_unbatched(
    storage: &mut RaftStorage,
    batch: Vec<StorageRequest>,
    stats: &mut WriterStats,
    metrics: &Metrics,
) -> Result<Option<AppendId>, StorageError> {
    let mut last = None;
    let mut rest = Vec::new();
    for req in batch {
        match req {
            StorageRequest::Append(id, entries, _traces) => {
                for entry in entries {
                    let bytes = storage.log.append(std::slice::from_ref(&entry))?;
                    stats.bytes += bytes;
                    stats.entries += 1;
                    sync(storage, stats, metrics, 1, bytes)?;
                }
                last = Some(id);
            }
            other => rest.push(other),
        }
    }
    if !rest.is_empty() {
        run_batch(storage, rest, stats, metrics)?;
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_each_batch_once_and_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = RaftStorage::open(dir.path(), 1 << 20).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = StorageWriter::spawn(storage, move |c| tx.send(c).unwrap());
        let entry = |index| Entry {
            index,
            term: 1,
            command: Some(vec![7; 10]),
        };
        writer.append(1, vec![entry(1), entry(2)]);
        assert_eq!(rx.recv().unwrap(), Completion::Persisted { up_to: 1 });
        writer.append(2, vec![entry(3)]);
        assert_eq!(rx.recv().unwrap(), Completion::Persisted { up_to: 2 });
        let stats = writer.join().unwrap();
        assert_eq!((stats.syncs, stats.entries), (2, 3));
        assert!(stats.bytes > 3 * 10, "records and their framing: {stats:?}");
        let (_, loaded) = RaftStorage::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(loaded.entries.len(), 3);
    }

    #[test]
    fn without_batching_every_entry_gets_its_own_fdatasync() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = RaftStorage::open(dir.path(), 1 << 20).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = StorageWriter::spawn_observed(
            storage,
            move |c| tx.send(c).unwrap(),
            Metrics::noop([]),
            false,
        );
        let entry = |index| Entry {
            index,
            term: 1,
            command: Some(vec![7; 10]),
        };
        writer.append(1, vec![entry(1), entry(2), entry(3)]);
        writer.append(2, vec![entry(4)]);
        // Each append is reported on its own, never merged with the next.
        assert_eq!(rx.recv().unwrap(), Completion::Persisted { up_to: 1 });
        assert_eq!(rx.recv().unwrap(), Completion::Persisted { up_to: 2 });
        let stats = writer.join().unwrap();
        assert_eq!((stats.syncs, stats.entries), (4, 4));
        let (_, loaded) = RaftStorage::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(loaded.entries.len(), 4);
    }
}
