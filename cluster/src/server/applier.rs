//! The applier actor: a dedicated thread that owns the SQLite chat store.
//!
//! It receives committed batches in log order and applies each in one transaction, then
//! answers the clients waiting on those entries. Queries arrive on the same queue, so a
//! linearizable read queued after the batch that reaches its read index sees that batch.
//! Every `snapshot_every` applied entries it snapshots the database and reports
//! [`Completion::SnapshotTaken`], after which the core actor compacts the log behind it.
//!
//! A SQLite error is fatal (the applied state could no longer be trusted to match the log).
//! Must not: know who listens to its reports, or touch the Raft storage.

use std::sync::mpsc;
use std::thread::JoinHandle;

use super::error::RequestError;
use super::fatal;
use super::mailbox::{ApplierMsg, Completion, ProposeReply, Query, QueryOutput};
use crate::chat::{ChatError, ChatStore, StoreError};
use crate::raft::{Entry, Index};

/// The handle of a running applier: where to send work, and the thread to join.
pub struct Applier {
    tx: mpsc::Sender<ApplierMsg>,
    thread: JoinHandle<()>,
}

impl Applier {
    /// Starts the applier thread. `last_snapshot` is the index of the newest snapshot (the
    /// next is taken `snapshot_every` entries after it; 0 never snapshots). `report` is
    /// called on the applier's thread.
    pub fn spawn(
        mut store: ChatStore,
        snapshot_every: u64,
        mut last_snapshot: Index,
        report: impl Fn(Completion) + Send + 'static,
    ) -> Applier {
        let (tx, rx) = mpsc::channel::<ApplierMsg>();
        let thread = std::thread::Builder::new()
            .name("applier".into())
            .spawn(move || {
                while let Ok(msg) = rx.recv() {
                    match msg {
                        ApplierMsg::Apply { entries, replies } => {
                            apply(&mut store, &entries, replies);
                            let applied = entries.last().map_or(0, |e| e.index);
                            if snapshot_every > 0 && applied >= last_snapshot + snapshot_every {
                                let data = store.snapshot().unwrap_or_else(|e| fatal::stop(e));
                                last_snapshot = applied;
                                report(Completion::SnapshotTaken {
                                    index: applied,
                                    data,
                                });
                            }
                        }
                        ApplierMsg::Query { query, reply } => {
                            let out = query_store(&store, query).unwrap_or_else(|e| fatal::stop(e));
                            let _ = reply.send(out.map_err(RequestError::Rejected));
                        }
                        ApplierMsg::Restore { data, done } => {
                            store.restore(&data).unwrap_or_else(|e| fatal::stop(e));
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
    pub fn sender(&self) -> mpsc::Sender<ApplierMsg> {
        self.tx.clone()
    }

    /// Lets the applier finish what is queued, then waits for its thread. Queries sent after
    /// this are answered with [`RequestError::Stopped`] (their reply is dropped).
    pub fn stop(self) -> std::thread::Result<()> {
        let _ = self.tx.send(ApplierMsg::Stop);
        self.thread.join()
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

/// Runs a query. The outer error is the store failing (fatal); the inner one a rejection.
fn query_store(
    store: &ChatStore,
    query: Query,
) -> Result<Result<QueryOutput, ChatError>, StoreError> {
    Ok(match query {
        Query::Messages { user_id, after_us } => store
            .get_messages(user_id, after_us)?
            .map(QueryOutput::Messages),
        Query::ChatUsers { chat_id } => store.get_chat_users(chat_id)?.map(QueryOutput::ChatUsers),
        // Kept up to date as entries apply: no table is read.
        Query::Digest => Ok(QueryOutput::Digest {
            applied_index: store.applied_index()?,
            digest: store.digest().to_string(),
        }),
    })
}
