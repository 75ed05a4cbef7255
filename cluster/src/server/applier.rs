//! The applier actor: a dedicated thread that owns the SQLite chat store.
//!
//! It receives committed batches in log order and applies each in one transaction, then
//! answers the clients waiting on those entries. Queries arrive on the same queue, so a
//! linearizable read queued after the batch that reaches its read index sees that batch.
//! Every `snapshot_every` applied entries it snapshots the database into a file of the
//! snapshot directory (`VACUUM INTO`, page by page: the snapshot is never in memory) and
//! reports [`Completion::SnapshotTaken`] once the file is durable, after which the core
//! actor compacts the log behind it. A snapshot from the leader is restored from its file
//! the same way (copied by the kernel, then swapped in).
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

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use super::error::RequestError;
use super::fatal;
use super::mailbox::{ApplierMsg, Completion, ProposeReply, Query, QueryOutput};
use super::observe::Metrics;
use crate::chat::ChatStore;
use crate::raft::{Entry, Index};
use crate::storage::SnapshotDir;

/// The handle of a running applier: where to send work, and the thread to join.
pub struct Applier {
    tx: mpsc::SyncSender<ApplierMsg>,
    thread: JoinHandle<()>,
}

impl Applier {
    /// Starts the applier thread. `last_snapshot` is the index of the newest snapshot (the
    /// next is taken `snapshot_every` entries after it; 0 never snapshots), and `snapshots`
    /// where snapshot files go. Its queue holds at most `queue` messages; whoever sends
    /// counts the message into `metrics.queue_applier`, and the applier counts it out.
    /// `report` is called on the applier's thread.
    pub fn spawn(
        mut store: ChatStore,
        snapshots: SnapshotDir,
        snapshot_every: u64,
        mut last_snapshot: Index,
        queue: usize,
        report: impl Fn(Completion) + Send + 'static,
        metrics: Metrics,
    ) -> Applier {
        let (tx, rx) = mpsc::sync_channel::<ApplierMsg>(queue);
        let thread = std::thread::Builder::new()
            .name(fatal::APPLIER_THREAD.into())
            .spawn(move || {
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
                            let applied = entries.last().map_or(0, |e| e.index);
                            if snapshot_every > 0 && applied >= last_snapshot + snapshot_every {
                                let start = Instant::now();
                                let term = store.applied_term().unwrap_or_else(|e| fatal::stop(e));
                                snapshots
                                    .create::<fatal::Fatal>(term, applied, |tmp| {
                                        Ok(store.snapshot_to(tmp)?)
                                    })
                                    .unwrap_or_else(|e| fatal::stop(e));
                                snapshot_taken(&metrics, &snapshots, term, applied, start);
                                last_snapshot = applied;
                                report(Completion::SnapshotTaken { index: applied });
                            }
                        }
                        ApplierMsg::Query { query, reply } => {
                            let _ = reply.send(read(&store, query));
                        }
                        ApplierMsg::Restore { snapshot, done } => {
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
                            last_snapshot =
                                store.applied_index().unwrap_or_else(|e| fatal::stop(e));
                            let _ = done.send(());
                        }
                        ApplierMsg::Stop => break,
                    }
                }
            })
            .expect("spawn applier");
        Applier { tx, thread }
    }

    /// Another sender for the applier's queue (the core actor's, and the services' for
    /// local reads).
    pub fn sender(&self) -> mpsc::SyncSender<ApplierMsg> {
        self.tx.clone()
    }

    /// Lets the applier finish what is queued, then waits for its thread. Queries sent after
    /// this are answered with [`RequestError::Stopped`] (their reply is dropped).
    pub fn stop(self) -> std::thread::Result<()> {
        let _ = self.tx.send(ApplierMsg::Stop);
        self.thread.join()
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
}
