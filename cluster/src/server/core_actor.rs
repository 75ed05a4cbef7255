//! The core actor: the one task that owns the Raft core ([`crate::raft::Node`]).
//!
//! Everything that can change Raft state arrives through one inbox ([`CoreInput`]): peer
//! messages, client proposals and reads (each with a oneshot for the answer), completions
//! from the storage writer and the applier, status requests; plus a 10 ms tick. The actor
//! handles whatever is queued (up to a bound), then drains the core's outputs once, so a
//! burst of proposals becomes one storage write and one append per follower.
//!
//! Acting on outputs follows the core's contract ([`crate::raft`]): hard state and snapshot
//! installs are awaited before anything later is acted on; appends go to the storage writer
//! without waiting; messages go to per-peer senders without waiting (a full queue drops the
//! message, which Raft tolerates); committed entries go to the applier together with the
//! reply channels of the proposals they complete; a ready read is queued to the applier after
//! the entries it must see.
//!
//! The core is held by value, as a local of [`CoreActor::run`]: role transitions consume it
//! and return the next one (`core = core.step(msg)`), so there is never a moment without one.
//!
//! Must not: block (disk and SQLite work belongs to the storage writer and the applier), or
//! spawn anything (the server's `run` owns every task and thread).

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::{mpsc as tmpsc, oneshot, watch};

use super::error::RequestError;
use super::fatal;
use super::mailbox::{
    ApplierMsg, Completion, CoreInput, ProposeReply, Query, ReadReply, StorageRequest,
};
use crate::raft::{
    Envelope, Error as RaftError, Index, Node, NodeId, Output, ReadId, Snapshot, Term,
};

/// Most inputs handled before the outputs are drained: bounds the latency a burst adds.
const MAX_BATCH: usize = 4096;

/// Everything the core actor keeps besides the core itself.
pub struct CoreActor {
    inbox: tmpsc::UnboundedReceiver<CoreInput>,
    storage_tx: mpsc::Sender<StorageRequest>,
    applier_tx: mpsc::Sender<ApplierMsg>,
    peers: HashMap<NodeId, tmpsc::Sender<Envelope>>,
    tick: Duration,
    /// Proposals waiting for their entry to be applied: index -> (term, reply).
    proposals: BTreeMap<Index, (Term, ProposeReply)>,
    /// Linearizable reads waiting for the core to confirm them.
    reads: HashMap<ReadId, (Query, ReadReply)>,
    next_read: ReadId,
}

impl CoreActor {
    pub fn new(
        inbox: tmpsc::UnboundedReceiver<CoreInput>,
        storage_tx: mpsc::Sender<StorageRequest>,
        applier_tx: mpsc::Sender<ApplierMsg>,
        peers: HashMap<NodeId, tmpsc::Sender<Envelope>>,
        tick: Duration,
    ) -> CoreActor {
        CoreActor {
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

    /// Drives `core` until the stop notice. Proposals still waiting are then answered
    /// "outcome unknown"; dropping the actor closes its senders to the writer, the applier
    /// and the peers.
    pub async fn run(mut self, mut core: Node, mut stop: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = ticker.tick() => core = core.tick(),
                msg = self.inbox.recv() => {
                    let Some(msg) = msg else { break };
                    core = self.handle(core, msg);
                    for _ in 0..MAX_BATCH {
                        match self.inbox.try_recv() {
                            Ok(msg) => core = self.handle(core, msg),
                            Err(_) => break,
                        }
                    }
                }
            }
            let outputs = core.take_outputs();
            self.act(outputs).await;
        }
        for (_, (_, reply)) in std::mem::take(&mut self.proposals) {
            let _ = reply.send(Err(RequestError::OutcomeUnknown));
        }
    }

    /// Feeds one input to the core; returns the core (in its next role, if it changed).
    fn handle(&mut self, mut core: Node, msg: CoreInput) -> Node {
        match msg {
            CoreInput::Peer(env) => return core.step(env),
            CoreInput::Propose { write, reply } => match core.propose(write) {
                Ok((index, term)) => {
                    self.proposals.insert(index, (term, reply));
                }
                Err(RaftError::NotLeader { leader }) => {
                    let _ = reply.send(Err(RequestError::NotLeader { leader }));
                }
                Err(e) => unreachable!("propose: {e}"),
            },
            CoreInput::Read { query, reply } => {
                let id = self.next_read;
                self.next_read += 1;
                match core.read(id) {
                    Ok(()) => {
                        self.reads.insert(id, (query, reply));
                    }
                    Err(RaftError::NotLeader { leader }) => {
                        let _ = reply.send(Err(RequestError::NotLeader { leader }));
                    }
                    Err(e) => unreachable!("read: {e}"),
                }
            }
            CoreInput::Done(Completion::Persisted { up_to }) => core.persisted(up_to),
            CoreInput::Done(Completion::SnapshotTaken { index, data }) => {
                if core.compact(index, data.clone()).is_ok() {
                    let term = core.log().snapshot().term;
                    let snapshot = Snapshot { index, term, data };
                    if self
                        .storage_tx
                        .send(StorageRequest::Compact(snapshot))
                        .is_err()
                    {
                        fatal::writer_stopped("a snapshot was being saved");
                    }
                }
            }
            CoreInput::Status { reply } => {
                let _ = reply.send(core.status());
            }
        }
        core
    }

    async fn act(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::HardState(hs) => {
                    let (done, wait) = oneshot::channel();
                    self.storage(StorageRequest::HardState(hs, done));
                    if wait.await.is_err() {
                        fatal::writer_stopped("the hard state was being saved");
                    }
                }
                Output::Append { id, entries } => self.storage(StorageRequest::Append(id, entries)),
                Output::Restore(snapshot) => self.restore(snapshot).await,
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
                                let _ = reply.send(Err(RequestError::NotCommitted));
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
                        let _ = reply.send(Err(RequestError::NotLeader { leader }));
                    }
                }
            }
        }
    }

    /// Installs a snapshot from the leader.
    ///
    /// Raft storage first (snapshot and log replaced atomically), then the state machine: a
    /// crash in between leaves the snapshot ahead of SQLite, which startup repairs by
    /// restoring SQLite from it (`storage::reconcile`). The other order could leave SQLite
    /// ahead of a log it does not match.
    async fn restore(&mut self, snapshot: Snapshot) {
        tracing::info!(
            index = snapshot.index,
            bytes = snapshot.data.len(),
            "installing a snapshot from the leader"
        );
        let index = snapshot.index;
        let data = snapshot.data.clone();
        let (done, wait) = oneshot::channel();
        self.storage(StorageRequest::Install(snapshot, done));
        if wait.await.is_err() {
            fatal::writer_stopped("a snapshot from the leader was being installed");
        }
        let (done, wait) = oneshot::channel();
        self.applier(ApplierMsg::Restore { data, done });
        if wait.await.is_err() {
            fatal::applier_stopped("the state machine was being restored from a snapshot");
        }
        // Proposals the snapshot jumped over: their outcome is unknown here.
        let stale: Vec<Index> = self.proposals.range(..=index).map(|(i, _)| *i).collect();
        for i in stale {
            if let Some((_, reply)) = self.proposals.remove(&i) {
                let _ = reply.send(Err(RequestError::OutcomeUnknown));
            }
        }
    }

    fn storage(&self, req: StorageRequest) {
        if self.storage_tx.send(req).is_err() {
            fatal::writer_stopped("the core actor was queueing a write");
        }
    }

    fn applier(&self, msg: ApplierMsg) {
        if self.applier_tx.send(msg).is_err() {
            fatal::applier_stopped("the core actor was queueing work for it");
        }
    }
}
