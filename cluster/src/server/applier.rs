//! The applier actor: a dedicated thread that owns the SQLite chat store.
//!
//! It receives committed batches in log order and applies each in one transaction, then
//! answers the clients waiting on those entries. Queries arrive on the same queue, so a
//! linearizable read queued after the batch that reaches its read index sees that batch.
//! Every `snapshot_every` applied entries it snapshots the database and hands the bytes to
//! the node actor, which compacts the log behind it.

use std::sync::mpsc;

use tokio::sync::{mpsc as tmpsc, oneshot};

use super::node::{NodeInput, ProposeReply, ReadReply};
use super::storage_writer::fatal;
use crate::chat::store::StoredMessage;
use crate::chat::{ChatError, ChatStore};
use crate::raft::{Entry, Index};

pub enum Query {
    Messages { user_id: u64, after_us: i64 },
    ChatUsers { chat_id: u64 },
    Digest,
}

pub enum QueryOutput {
    Messages(Vec<StoredMessage>),
    ChatUsers(Vec<(u64, String)>),
    Digest {
        applied_index: Index,
        digest: String,
    },
}

pub type QueryResult = Result<QueryOutput, ChatError>;

pub enum ApplierMsg {
    Apply {
        entries: Vec<Entry>,
        replies: Vec<(Index, ProposeReply)>,
    },
    Query {
        query: Query,
        reply: ReadReply,
    },
    Restore {
        data: Vec<u8>,
        done: oneshot::Sender<()>,
    },
}

pub fn spawn(
    mut store: ChatStore,
    snapshot_every: u64,
    mut last_snapshot: Index,
    node_tx: tmpsc::UnboundedSender<NodeInput>,
) -> mpsc::Sender<ApplierMsg> {
    let (tx, rx) = mpsc::channel::<ApplierMsg>();
    std::thread::Builder::new()
        .name("applier".into())
        .spawn(move || {
            while let Ok(msg) = rx.recv() {
                match msg {
                    ApplierMsg::Apply { entries, replies } => {
                        let results = store.apply(&entries).unwrap_or_else(|e| fatal(&e));
                        let mut replies = replies.into_iter().peekable();
                        for (index, result) in results {
                            while replies.peek().is_some_and(|(i, _)| *i < index) {
                                replies.next();
                            }
                            if replies.peek().is_some_and(|(i, _)| *i == index) {
                                let (_, reply) = replies.next().expect("peeked");
                                let _ = reply.send(Ok(result));
                            }
                        }
                        let applied = entries.last().map_or(0, |e| e.index);
                        if snapshot_every > 0 && applied >= last_snapshot + snapshot_every {
                            let data = store.snapshot().unwrap_or_else(|e| fatal(&e));
                            last_snapshot = applied;
                            let _ = node_tx.send(NodeInput::SnapshotTaken {
                                index: applied,
                                data,
                            });
                        }
                    }
                    ApplierMsg::Query { query, reply } => {
                        let out = match query {
                            Query::Messages { user_id, after_us } => store
                                .get_messages(user_id, after_us)
                                .map(|r| r.map(QueryOutput::Messages)),
                            Query::ChatUsers { chat_id } => store
                                .get_chat_users(chat_id)
                                .map(|r| r.map(QueryOutput::ChatUsers)),
                            Query::Digest => store.applied_index().and_then(|applied_index| {
                                store.digest().map(|digest| {
                                    Ok(QueryOutput::Digest {
                                        applied_index,
                                        digest,
                                    })
                                })
                            }),
                        };
                        let _ = reply.send(Ok(out.unwrap_or_else(|e| fatal(&e))));
                    }
                    ApplierMsg::Restore { data, done } => {
                        store.restore(&data).unwrap_or_else(|e| fatal(&e));
                        last_snapshot = store.applied_index().unwrap_or_else(|e| fatal(&e));
                        let _ = done.send(());
                    }
                }
            }
        })
        .expect("spawn applier");
    tx
}
