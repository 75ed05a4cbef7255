//! The node actor: the one task that owns the Raft core.
//!
//! Everything that can change Raft state arrives through one inbox ([`NodeInput`]): peer
//! messages, client proposals and reads (each with a oneshot for the answer), storage
//! completions, snapshots taken by the applier, status requests; plus a 10 ms tick. The
//! actor handles whatever is queued (up to a bound), then drains the core's outputs once, so
//! a burst of proposals becomes one storage write and one append per follower.
//!
//! Acting on outputs follows the core's contract ([`crate::raft`]): hard state and snapshot
//! installs are awaited before anything later is acted on; appends go to the storage writer
//! without waiting; messages go to per-peer senders without waiting (a full queue drops the
//! message, which Raft tolerates); committed entries go to the applier together with the
//! reply channels of the proposals they complete; a ready read is queued to the applier after
//! the entries it must see.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::{mpsc as tmpsc, oneshot, watch};

use super::applier::{ApplierMsg, Query, QueryResult};
use super::storage_writer::{StorageRequest, fatal};
use crate::chat::ApplyResult;
use crate::raft::{
    Envelope, Error as RaftError, Index, Node, NodeId, Output, ReadId, Snapshot, Status, Term,
    WriteId,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("not the leader")]
    NotLeader { leader: Option<NodeId> },
    #[error("leadership changed before the write committed; it was not applied")]
    NotCommitted,
    #[error("the node is shutting down")]
    Stopped,
    /// The write may or may not have been applied (a snapshot overtook it, the node stopped,
    /// or no answer came in time). Retry with the same write id to be safe.
    #[error("the write's outcome is unknown")]
    OutcomeUnknown,
}

pub type ProposeReply = oneshot::Sender<Result<ApplyResult, NodeError>>;
pub type ReadReply = oneshot::Sender<Result<QueryResult, NodeError>>;

pub enum NodeInput {
    Peer(Envelope),
    Propose {
        write: Vec<u8>,
        reply: ProposeReply,
    },
    Read {
        query: Query,
        reply: ReadReply,
    },
    /// The storage writer finished every write up to this id.
    Persisted {
        write: WriteId,
    },
    SnapshotTaken {
        index: Index,
        data: Vec<u8>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
}

pub struct NodeActor {
    /// Always `Some` between inputs; taken while a role transition consumes it.
    core: Option<Node>,
    pub inbox: tmpsc::UnboundedReceiver<NodeInput>,
    pub storage_tx: mpsc::Sender<StorageRequest>,
    pub applier_tx: mpsc::Sender<ApplierMsg>,
    pub peers: HashMap<NodeId, tmpsc::Sender<Envelope>>,
    pub tick: Duration,
    proposals: BTreeMap<Index, (Term, ProposeReply)>,
    reads: HashMap<ReadId, (Query, ReadReply)>,
    next_read: ReadId,
}

/// Most inputs handled before the outputs are drained: bounds the latency a burst adds.
const MAX_BATCH: usize = 4096;

impl NodeActor {
    pub fn new(
        core: Node,
        inbox: tmpsc::UnboundedReceiver<NodeInput>,
        storage_tx: mpsc::Sender<StorageRequest>,
        applier_tx: mpsc::Sender<ApplierMsg>,
        peers: HashMap<NodeId, tmpsc::Sender<Envelope>>,
        tick: Duration,
    ) -> NodeActor {
        NodeActor {
            core: Some(core),
            inbox,
            storage_tx,
            applier_tx,
            peers,
            tick,
            proposals: BTreeMap::new(),
            reads: HashMap::new(),
            next_read: 1,
        }
    }

    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                _ = ticker.tick() => {
                    let core = self.core.take().expect("core present");
                    self.core = Some(core.tick());
                }
                msg = self.inbox.recv() => {
                    let Some(msg) = msg else { break };
                    self.handle(msg);
                    for _ in 0..MAX_BATCH {
                        match self.inbox.try_recv() {
                            Ok(msg) => self.handle(msg),
                            Err(_) => break,
                        }
                    }
                }
            }
            let outputs = self.core.as_mut().expect("core present").take_outputs();
            self.act(outputs).await;
        }
        for (_, (_, reply)) in std::mem::take(&mut self.proposals) {
            let _ = reply.send(Err(NodeError::OutcomeUnknown));
        }
    }

    fn handle(&mut self, msg: NodeInput) {
        let mut core = self.core.take().expect("core present");
        match msg {
            NodeInput::Peer(env) => core = core.step(env),
            NodeInput::Propose { write, reply } => match core.propose(write) {
                Ok((index, term)) => {
                    self.proposals.insert(index, (term, reply));
                }
                Err(RaftError::NotLeader { leader }) => {
                    let _ = reply.send(Err(NodeError::NotLeader { leader }));
                }
                Err(e) => unreachable!("propose: {e}"),
            },
            NodeInput::Read { query, reply } => {
                let id = self.next_read;
                self.next_read += 1;
                match core.read(id) {
                    Ok(()) => {
                        self.reads.insert(id, (query, reply));
                    }
                    Err(RaftError::NotLeader { leader }) => {
                        let _ = reply.send(Err(NodeError::NotLeader { leader }));
                    }
                    Err(e) => unreachable!("read: {e}"),
                }
            }
            NodeInput::Persisted { write } => core.persisted(write),
            NodeInput::SnapshotTaken { index, data } => {
                if core.compact(index, data.clone()).is_ok() {
                    let term = core.log().snapshot().term;
                    let snapshot = Snapshot { index, term, data };
                    if self
                        .storage_tx
                        .send(StorageRequest::Compact(snapshot))
                        .is_err()
                    {
                        fatal(&"storage writer stopped");
                    }
                }
            }
            NodeInput::Status { reply } => {
                let _ = reply.send(core.status());
            }
        }
        self.core = Some(core);
    }

    async fn act(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::HardState(hs) => {
                    let (done, wait) = oneshot::channel();
                    self.storage(StorageRequest::HardState(hs, done));
                    if wait.await.is_err() {
                        fatal(&"storage writer stopped before saving the hard state");
                    }
                }
                Output::Append { id, entries } => self.storage(StorageRequest::Append(id, entries)),
                Output::Restore(snapshot) => {
                    tracing::info!(
                        index = snapshot.index,
                        bytes = snapshot.data.len(),
                        "installing a snapshot from the leader"
                    );
                    // Raft storage first (snapshot and log replaced atomically), then the
                    // state machine: a crash in between leaves the snapshot ahead of SQLite,
                    // which startup repairs by restoring SQLite from it. The other order
                    // could leave SQLite ahead of a log it does not match.
                    let index = snapshot.index;
                    let data = snapshot.data.clone();
                    let (done, wait) = oneshot::channel();
                    self.storage(StorageRequest::Install(snapshot, done));
                    if wait.await.is_err() {
                        fatal(&"storage writer stopped during a snapshot install");
                    }
                    let (done, wait) = oneshot::channel();
                    self.applier(ApplierMsg::Restore { data, done });
                    if wait.await.is_err() {
                        fatal(&"applier stopped during a snapshot restore");
                    }
                    // Proposals the snapshot jumped over: their outcome is unknown here.
                    let stale: Vec<Index> =
                        self.proposals.range(..=index).map(|(i, _)| *i).collect();
                    for i in stale {
                        if let Some((_, reply)) = self.proposals.remove(&i) {
                            let _ = reply.send(Err(NodeError::OutcomeUnknown));
                        }
                    }
                }
                Output::Send(env) => {
                    if let Some(peer) = self.peers.get(&env.to)
                        && peer.try_send(env).is_err()
                    {
                        tracing::debug!("peer queue full: message dropped");
                    }
                }
                Output::Apply(entries) => {
                    let mut replies = Vec::new();
                    for e in &entries {
                        if let Some((term, reply)) = self.proposals.remove(&e.index) {
                            if term == e.term {
                                replies.push((e.index, reply));
                            } else {
                                let _ = reply.send(Err(NodeError::NotCommitted));
                            }
                        }
                    }
                    self.applier(ApplierMsg::Apply { entries, replies });
                }
                Output::ReadReady { id, .. } => {
                    if let Some((query, reply)) = self.reads.remove(&id) {
                        self.applier(ApplierMsg::Query { query, reply });
                    }
                }
                Output::ReadAborted { id, leader } => {
                    if let Some((_, reply)) = self.reads.remove(&id) {
                        let _ = reply.send(Err(NodeError::NotLeader { leader }));
                    }
                }
            }
        }
    }

    fn storage(&self, req: StorageRequest) {
        if self.storage_tx.send(req).is_err() {
            fatal(&"storage writer stopped");
        }
    }

    fn applier(&self, msg: ApplierMsg) {
        if self.applier_tx.send(msg).is_err() {
            fatal(&"applier stopped");
        }
    }
}
