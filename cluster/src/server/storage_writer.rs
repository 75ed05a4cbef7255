//! The storage-writer actor: a dedicated thread that owns the Raft storage and does group
//! commit.
//!
//! It blocks for one request, then takes every request already queued, performs them in
//! order, and issues a single fdatasync for all the appends among them. Only then does it
//! tell the node actor "persisted up to (index, term)". Hard-state and snapshot writes are
//! synchronous for the caller (a oneshot reply after their own fsync), as the core's
//! contract requires. Any I/O error is fatal: the process stops with the error rather than
//! run on with state it cannot trust.

use std::sync::mpsc;

use tokio::sync::{mpsc as tmpsc, oneshot};

use super::node::NodeInput;
use crate::raft::{Entry, HardState, Snapshot, WriteId};
use crate::storage::RaftStorage;

pub enum StorageRequest {
    Append(WriteId, Vec<Entry>),
    HardState(HardState, oneshot::Sender<()>),
    /// A snapshot this node took: save it and drop the entries it covers.
    Compact(Snapshot),
    /// A snapshot from the leader: save it and replace the whole log.
    Install(Snapshot, oneshot::Sender<()>),
}

/// Counters the writer keeps, for benchmarks and status.
#[derive(Default, Clone, Copy, Debug)]
pub struct WriterStats {
    pub syncs: u64,
    pub entries: u64,
}

pub fn spawn(
    mut storage: RaftStorage,
    node_tx: tmpsc::UnboundedSender<NodeInput>,
) -> mpsc::Sender<StorageRequest> {
    let (tx, rx) = mpsc::channel::<StorageRequest>();
    std::thread::Builder::new()
        .name("storage-writer".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                if let Err(e) = run_batch(&mut storage, batch, &node_tx) {
                    fatal(&e);
                }
            }
        })
        .expect("spawn storage writer");
    tx
}

fn run_batch(
    storage: &mut RaftStorage,
    batch: Vec<StorageRequest>,
    node_tx: &tmpsc::UnboundedSender<NodeInput>,
) -> Result<(), crate::storage::StorageError> {
    let mut last: Option<WriteId> = None;
    for req in batch {
        match req {
            StorageRequest::Append(id, entries) => {
                storage.log.append(&entries)?;
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
                let _ = done.send(());
            }
        }
    }
    if let Some(write) = last {
        storage.log.sync()?;
        let _ = node_tx.send(NodeInput::Persisted { write });
    }
    Ok(())
}

/// A disk that fails stops the node loudly: continuing could acknowledge what is not durable.
pub fn fatal(e: &dyn std::fmt::Display) -> ! {
    tracing::error!("FATAL storage failure, stopping: {e}");
    eprintln!("telegraft: FATAL storage failure, stopping: {e}");
    std::process::exit(70);
}
