//! The applier actor: a dedicated thread that owns the SQLite chat store.
//!
//! It receives committed batches in log order and applies each in one transaction, then
//! answers the clients waiting on those entries. Queries arrive on the same queue, so a
//! linearizable read queued after the batch that reaches its read index sees that batch.
//! When the log since the last snapshot is long enough ([`SnapshotPolicy`]: entries or
//! bytes), it asks its snapshot thread ([`Snapshotter`]) for one: a copy of the database made
//! from another connection into a file of the snapshot directory (`VACUUM INTO`, page by
//! page: the snapshot is never in memory), reported as [`Completion::SnapshotTaken`] once the
//! file is durable, after which the core actor compacts the log behind it. Applies and reads
//! go on meanwhile. A snapshot from the leader is restored from its file on this thread
//! (copied by the kernel, then swapped in), after any copy under way has finished.
//!
//! It records commit-to-apply time (one sample per entry), snapshots taken and restored
//! (count, size, duration) and its own queue depth (`observe.rs`); with tracing on, an
//! `apply` span per traced client write (write id, log index) under the service's span.
//!
//! Failures are split by what they can damage:
//! - a failed write (apply, snapshot, restore) is fatal: the applied state could no longer be
//!   trusted to match the log (exit 70, `fatal.rs`);
//! - a failed read (an SQLite error, a full temporary store) changed nothing, so it fails
//!   that request alone, with [`RequestError::Internal`], and the applier goes on.
//!
//! Must not: know who listens to its reports, or touch the Raft storage.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use super::error::RequestError;
use super::fatal;
use super::mailbox::{ApplierMsg, Completion, ProposeReply, Query, QueryOutput};
use super::observe::Metrics;
use crate::chat::{ChatStore, SnapshotSource};
use crate::raft::{Entry, Index};
use crate::storage::SnapshotDir;

/// The handle of a running applier: where to send work, and the thread to join.
pub struct Applier {
    tx: mpsc::SyncSender<ApplierMsg>,
    thread: JoinHandle<()>,
}

/// When the applier asks for a snapshot: once the log since the last one holds `entries`
/// entries or `bytes` bytes of commands, whichever comes first (0 turns a trigger off; both 0:
/// never). The byte trigger keeps the in-memory log and the disk bounded when messages are
/// large; the entry trigger when they are small.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotPolicy {
    pub entries: u64,
    pub bytes: u64,
}

impl SnapshotPolicy {
    fn due(&self, entries_since: u64, bytes_since: u64) -> bool {
        (self.entries > 0 && entries_since >= self.entries)
            || (self.bytes > 0 && bytes_since >= self.bytes)
    }
}

impl Applier {
    /// Starts the applier thread and its snapshot thread. `last_snapshot` is the index of
    /// the newest snapshot (the next is due by `policy` after it), and `snapshots` where
    /// snapshot files go. Its queue holds at most `queue` messages; whoever sends counts the
    /// message into `metrics.queue_applier`, and the applier counts it out. `report` is
    /// called on the snapshot thread.
    pub fn spawn(
        mut store: ChatStore,
        snapshots: SnapshotDir,
        policy: SnapshotPolicy,
        last_snapshot: Index,
        queue: usize,
        report: impl Fn(Completion) + Send + 'static,
        metrics: Metrics,
    ) -> Applier {
        let (tx, rx) = mpsc::sync_channel::<ApplierMsg>(queue);
        let thread = std::thread::Builder::new()
            .name(fatal::APPLIER_THREAD.into())
            .spawn(move || {
                let maker = Snapshotter::spawn(
                    store.path().to_path_buf(),
                    snapshots.clone(),
                    last_snapshot,
                    report,
                    metrics.clone(),
                );
                // Command bytes applied since the last snapshot was asked for.
                let mut bytes_since = 0u64;
                while let Ok(msg) = rx.recv() {
                    metrics.queue_applier.decrement(1.0);
                    match msg {
                        ApplierMsg::Apply {
                            entries,
                            replies,
                            committed,
                            traces,
                        } => {
                            let spans: Vec<_> = traces
                                .iter()
                                .map(|(index, t)| {
                                    tracing::debug_span!(parent: &t.span, "apply",
                                        client_id = t.client_id, sequence = t.sequence,
                                        index = *index)
                                })
                                .collect();
                            apply(&mut store, &entries, replies);
                            metrics
                                .apply_seconds
                                .record_many(committed.elapsed().as_secs_f64(), entries.len());
                            drop(spans);
                            bytes_since += entries
                                .iter()
                                .map(|e| e.command.as_ref().map_or(0, |c| c.len() as u64))
                                .sum::<u64>();
                            let applied = entries.last().map_or(0, |e| e.index);
                            let since = applied.saturating_sub(maker.last());
                            if policy.due(since, bytes_since) && maker.request() {
                                bytes_since = 0;
                            }
                        }
                        ApplierMsg::Query { query, reply } => {
                            let _ = reply.send(read(&store, query));
                        }
                        ApplierMsg::Restore { snapshot, done } => {
                            // Not while a copy of the database being replaced is made.
                            let _idle = maker.pause();
                            let start = Instant::now();
                            let path = snapshots.path(snapshot.term, snapshot.index);
                            store.restore_from(&path).unwrap_or_else(|e| fatal::stop(e));
                            snapshot_taken(
                                &metrics,
                                &snapshots,
                                snapshot.term,
                                snapshot.index,
                                start,
                            );
                            maker
                                .restored(store.applied_index().unwrap_or_else(|e| fatal::stop(e)));
                            bytes_since = 0;
                            let _ = done.send(());
                        }
                        ApplierMsg::Stop => break,
                    }
                }
                maker.stop();
            })
            .expect("spawn applier");
        Applier { tx, thread }
    }

    /// Another sender for the applier's queue (the core actor's, and the services' for
    /// local reads).
    pub fn sender(&self) -> mpsc::SyncSender<ApplierMsg> {
        self.tx.clone()
    }

    /// Lets the applier finish what is queued, then waits for its thread (which waits for
    /// a snapshot in progress). Queries sent after this are answered with
    /// [`RequestError::Stopped`] (their reply is dropped).
    pub fn stop(self) -> std::thread::Result<()> {
        let _ = self.tx.send(ApplierMsg::Stop);
        self.thread.join()
    }
}

/// Makes snapshots on a thread of its own ([`fatal::SNAPSHOT_THREAD`]), from a connection
/// of its own ([`SnapshotSource`]), so that applies and reads never wait for one.
/// Issue 15 measured what it cost on the applier thread: every 10,000 entries `VACUUM INTO`
/// stalled applies and reads for its whole length, a quarter of the chat workload's p99 and
/// half of its maximum.
///
/// At most one snapshot is in progress; a request while one is under way is refused, and
/// the applier asks again after its next batch. The copy reads one WAL snapshot of the
/// database, so it covers a consistent prefix of the log; which one is read back from the
/// copy, and that position is reported ([`Completion::SnapshotTaken`]) once the file is
/// durable. The core actor then compacts the log behind it.
struct Snapshotter {
    tx: Option<mpsc::SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<SnapshotShared>,
}

struct SnapshotShared {
    /// The copying connection, held while a copy is made; a restore takes it to wait for
    /// a copy to finish and to close the connection before the file is replaced.
    making: Mutex<SnapshotSource>,
    /// A request is queued or a copy is under way.
    busy: AtomicBool,
    /// The index of the newest snapshot, taken or restored.
    last: AtomicU64,
}

/// Hands the memory a copy freed back to the system. The copy runs on its own thread, so
/// glibc serves it from an arena of its own, whose freed pages it otherwise keeps: a
/// follower's RSS rose by several MB at every snapshot under load.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Snapshotter {
    fn spawn(
        db: std::path::PathBuf,
        snapshots: SnapshotDir,
        last: Index,
        report: impl Fn(Completion) + Send + 'static,
        metrics: Metrics,
    ) -> Snapshotter {
        let shared = Arc::new(SnapshotShared {
            making: Mutex::new(SnapshotSource::new(&db)),
            busy: AtomicBool::new(false),
            last: AtomicU64::new(last),
        });
        let (tx, rx) = mpsc::sync_channel::<()>(1);
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name(fatal::SNAPSHOT_THREAD.into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    let made = {
                        let mut source = state.making.lock().unwrap_or_else(|e| e.into_inner());
                        let start = Instant::now();
                        let (term, index, _) = snapshots
                            .create_found::<fatal::Fatal>(|tmp| {
                                let (index, term) = source.copy_to(tmp)?;
                                Ok((term, index))
                            })
                            .unwrap_or_else(|e| fatal::stop(e));
                        release_freed_memory();
                        snapshot_taken(&metrics, &snapshots, term, index, start);
                        // A restore that came first leaves a copy older than what it put in
                        // place: nothing to report (the file goes at the next compaction or
                        // restart).
                        let newer = state.last.fetch_max(index, Ordering::AcqRel) < index;
                        newer.then_some(index)
                    };
                    state.busy.store(false, Ordering::Release);
                    if let Some(index) = made {
                        report(Completion::SnapshotTaken { index });
                    }
                }
            })
            .expect("spawn snapshot thread");
        Snapshotter {
            tx: Some(tx),
            thread: Some(thread),
            shared,
        }
    }

    /// The index of the newest snapshot.
    fn last(&self) -> Index {
        self.shared.last.load(Ordering::Acquire)
    }

    /// Asks for a snapshot; false if one is already asked for or under way.
    fn request(&self) -> bool {
        if self.shared.busy.swap(true, Ordering::AcqRel) {
            return false;
        }
        let sent = self.tx.as_ref().is_some_and(|tx| tx.try_send(()).is_ok());
        if !sent {
            self.shared.busy.store(false, Ordering::Release);
        }
        sent
    }

    /// Waits for a copy under way to finish, closes the copying connection (the database
    /// file is about to be replaced), and keeps the next copy from starting while held.
    fn pause(&self) -> std::sync::MutexGuard<'_, SnapshotSource> {
        let mut source = self.shared.making.lock().unwrap_or_else(|e| e.into_inner());
        source.forget();
        source
    }

    /// A snapshot from the leader replaced the state at `index`.
    fn restored(&self, index: Index) {
        self.shared.last.store(index, Ordering::Release);
    }

    /// Finishes a copy under way, then ends the thread.
    fn stop(mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("snapshot thread panicked");
        }
    }
}

/// Records a snapshot taken or restored since `start`: its count, duration and file size.
fn snapshot_taken(
    metrics: &Metrics,
    snapshots: &SnapshotDir,
    term: crate::raft::Term,
    index: Index,
    start: Instant,
) {
    metrics
        .snapshot_seconds
        .record(start.elapsed().as_secs_f64());
    metrics.snapshots.increment(1);
    if let Ok(meta) = std::fs::metadata(snapshots.path(term, index)) {
        metrics.snapshot_bytes.set(meta.len() as f64);
    }
}

/// Applies one committed batch and answers the proposals it completes.
fn apply(store: &mut ChatStore, entries: &[Entry], replies: Vec<(Index, ProposeReply)>) {
    let results = store.apply(entries).unwrap_or_else(|e| fatal::stop(e));
    let mut replies = replies.into_iter().peekable();
    for (index, result) in results {
        while replies.peek().is_some_and(|(i, _)| *i < index) {
            replies.next();
        }
        if replies.peek().is_some_and(|(i, _)| *i == index) {
            let (_, reply) = replies.next().expect("peeked");
            let _ = reply.send(result.map_err(RequestError::Rejected));
        }
    }
}

/// Runs a query: its rows, a rejection, or INTERNAL if the store failed to read.
fn read(store: &ChatStore, query: Query) -> Result<QueryOutput, RequestError> {
    match store.query(query) {
        Ok(out) => out.map_err(RequestError::Rejected),
        Err(e) => {
            tracing::warn!("a read failed (answered INTERNAL): {e}");
            Err(RequestError::Internal(format!("the read failed: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{ChatError, Command, MessagesQuery, Outcome, Write};

    fn create_user(index: Index, username: &str) -> Entry {
        let write = Write {
            session: None,
            command: Command::CreateUser {
                username: username.into(),
            },
            proposed_at_us: 0,
        };
        Entry {
            index,
            term: 1,
            command: Some(write.encode()),
        }
    }

    /// A read that fails inside SQLite (here, a table dropped behind the store's back, as a
    /// corrupted query would) answers INTERNAL, where it used to stop the process; the store
    /// keeps serving reads and applying writes.
    #[test]
    fn a_failed_read_answers_internal_and_the_store_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.sqlite");
        let mut store = ChatStore::open(&path).unwrap();
        store.apply(&[create_user(1, "ann")]).unwrap();

        let other = rusqlite::Connection::open(&path).unwrap();
        other.execute_batch("DROP TABLE messages").unwrap();
        let messages = || {
            Query::Messages(MessagesQuery {
                user_id: 1,
                after_us: 0,
                limit: 0,
            })
        };
        match read(&store, messages()) {
            Err(RequestError::Internal(m)) => assert!(m.contains("no such table"), "{m}"),
            other => panic!("expected INTERNAL, got {:?}", other.map(|_| ())),
        }
        // Reads that work still work, and so do writes.
        assert!(matches!(
            read(&store, Query::ChatUsers { chat_id: 9 }),
            Err(RequestError::Rejected(ChatError::NotFound(_)))
        ));
        let applied = store.apply(&[create_user(2, "bob")]).unwrap();
        assert_eq!(applied, vec![(2, Ok(Outcome::Created(2)))]);
        assert!(matches!(
            read(&store, Query::Digest),
            Ok(QueryOutput::Digest {
                applied_index: 2,
                ..
            })
        ));
    }

    /// Snapshots are made on the snapshot thread once the policy says so, and the position
    /// reported is the one the copy holds: its file restores to exactly that state, whole
    /// (its digest matches a full scan). A stop waits for a copy under way, so every report
    /// names a file that exists.
    #[test]
    fn snapshots_are_made_apart_and_report_the_position_they_hold() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChatStore::open(&dir.path().join("chat.sqlite")).unwrap();
        let snapshots = SnapshotDir::open(dir.path(), 0, 0).unwrap();
        let (done_tx, done_rx) = mpsc::channel();
        let applier = Applier::spawn(
            store,
            snapshots.clone(),
            SnapshotPolicy {
                entries: 4,
                bytes: 0,
            },
            0,
            64,
            move |c| {
                let _ = done_tx.send(c);
            },
            Metrics::noop([]),
        );
        let tx = applier.sender();
        for i in 1..=40u64 {
            tx.send(ApplierMsg::Apply {
                entries: vec![create_user(i, &format!("u{i}"))],
                replies: Vec::new(),
                committed: Instant::now(),
                traces: Vec::new(),
            })
            .unwrap();
        }
        applier.stop().unwrap();
        let taken: Vec<Index> = done_rx
            .try_iter()
            .map(|c| match c {
                Completion::SnapshotTaken { index } => index,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert!(
            !taken.is_empty(),
            "no snapshot in 40 entries with one due every 4"
        );
        assert!(taken.windows(2).all(|w| w[0] < w[1]), "{taken:?}");
        for &index in &taken {
            assert!((4..=40).contains(&index), "{taken:?}");
        }
        // The newest file restores to the state at the index it was reported at.
        let last = *taken.last().unwrap();
        let file = snapshots.path(1, last);
        assert!(file.exists(), "{} missing", file.display());
        let mut copy = ChatStore::open(&dir.path().join("copy.sqlite")).unwrap();
        copy.restore_from(&file).unwrap();
        assert_eq!(copy.applied_index().unwrap(), last);
        assert_eq!(copy.recompute_digest().unwrap(), copy.digest());
    }
}
