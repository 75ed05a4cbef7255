//! The core actor: the one task that owns the Raft core ([`crate::raft::Node`]).
//!
//! Everything that can change Raft state arrives through one bounded inbox ([`CoreInput`]):
//! peer messages, client proposals and reads (each with a oneshot for the answer), status
//! requests; plus a 10 ms tick, and the storage writer's and applier's reports through their
//! [`Completions`] slots. The actor handles whatever is queued (up to a bound), then drains
//! the core's outputs once, so a burst of proposals becomes one storage write and one append
//! per follower.
//!
//! A peer message the core refuses ([`Node::validate`]: misaddressed, out of range, or
//! naming what no correct peer could) is dropped with a rate-limited warning.
//!
//! Acting on outputs follows the core's contract ([`crate::raft`]): hard state and snapshot
//! installs are awaited before anything later is acted on; appends go to the storage writer
//! without waiting for the write (but waiting for room in its bounded queue); messages go to
//! per-peer senders without waiting (a full queue drops the message, which Raft tolerates);
//! committed entries go to the applier together with the reply channels of the proposals
//! they complete (waiting for room in its queue); a ready read is queued to the applier
//! after the entries it must see.
//!
//! The core is held by value, as a local of [`CoreActor::run`]: role transitions consume it
//! and return the next one (`core = core.step(msg)`), so there is never a moment without one.
//!
//! Must not: block (disk and SQLite work belongs to the storage writer and the applier), or
//! spawn anything (the server's `run` owns every task and thread).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use tokio::sync::{mpsc as tmpsc, oneshot, watch};

use super::error::RequestError;
use super::fatal;
use super::mailbox::{
    ApplierMsg, Completions, CoreInput, PanicTarget, ProposeReply, Query, ReadReply, Reported,
    StorageRequest,
};
use super::throttle::Throttle;
use crate::raft::{
    Envelope, Error as RaftError, Index, Node, NodeId, Output, ReadId, Snapshot, Term,
};

/// Most inputs handled before the outputs are drained: bounds the latency a burst adds.
const MAX_BATCH: usize = 4096;
/// How long the core actor sleeps before trying a full applier queue again.
const APPLIER_RETRY: Duration = Duration::from_millis(1);

/// Everything the core actor keeps besides the core itself.
pub struct CoreActor {
    inbox: tmpsc::Receiver<CoreInput>,
    completions: Arc<Completions>,
    storage_tx: tmpsc::Sender<StorageRequest>,
    applier_tx: mpsc::SyncSender<ApplierMsg>,
    peers: HashMap<NodeId, tmpsc::Sender<Envelope>>,
    tick: Duration,
    /// Proposals waiting for their entry to be applied: index -> (term, reply).
    proposals: BTreeMap<Index, (Term, ProposeReply)>,
    /// Linearizable reads waiting for the core to confirm them.
    reads: HashMap<ReadId, (Query, ReadReply)>,
    next_read: ReadId,
    /// Warnings about refused peer messages and dropped sends, at most one per second each.
    warnings: Throttle,
    /// The leader this replica knows of, published after every round for the chat service,
    /// which abandons a request it forwarded to a leader that is no longer one.
    leader: watch::Sender<Option<NodeId>>,
}

impl CoreActor {
    pub fn new(
        inbox: tmpsc::Receiver<CoreInput>,
        completions: Arc<Completions>,
        storage_tx: tmpsc::Sender<StorageRequest>,
        applier_tx: mpsc::SyncSender<ApplierMsg>,
        peers: HashMap<NodeId, tmpsc::Sender<Envelope>>,
        tick: Duration,
        leader: watch::Sender<Option<NodeId>>,
    ) -> CoreActor {
        CoreActor {
            inbox,
            completions,
            storage_tx,
            applier_tx,
            peers,
            tick,
            proposals: BTreeMap::new(),
            reads: HashMap::new(),
            next_read: 1,
            warnings: Throttle::default(),
            leader,
        }
    }

    /// Drives `core` until the stop notice. Proposals still waiting are then answered
    /// "outcome unknown"; dropping the actor closes its senders to the writer, the applier
    /// and the peers.
    pub async fn run(mut self, mut core: Node, mut stop: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let completions = self.completions.clone();
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = completions.reported() => {}
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
            let reported = completions.take();
            self.completed(&mut core, reported).await;
            let outputs = core.take_outputs();
            self.act(outputs).await;
            let leader = core.status().leader;
            self.leader.send_if_modified(|known| {
                let changed = *known != leader;
                *known = leader;
                changed
            });
        }
        for (_, (_, reply)) in std::mem::take(&mut self.proposals) {
            let _ = reply.send(Err(RequestError::OutcomeUnknown));
        }
    }

    /// Feeds one input to the core; returns the core (in its next role, if it changed).
    fn handle(&mut self, mut core: Node, msg: CoreInput) -> Node {
        match msg {
            CoreInput::Peer(env) => {
                if let Err(e) = core.validate(&env) {
                    self.warnings.warn(e.reason, || {
                        format!(
                            "peer message dropped: {e} (from {}, to {}, term {})",
                            env.from, env.to, env.term
                        )
                    });
                    return core;
                }
                return core.step(env);
            }
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
            CoreInput::Status { reply } => {
                let _ = reply.send(core.status());
            }
            CoreInput::InjectPanic(PanicTarget::Core) => {
                panic!("fault injection: the core actor panics")
            }
            CoreInput::InjectPanic(PanicTarget::StorageWriter) => {
                if self
                    .storage_tx
                    .try_send(StorageRequest::InjectPanic)
                    .is_err()
                {
                    tracing::warn!("fault injection: the storage writer's queue is full");
                }
            }
        }
        core
    }

    /// Hands the core what the storage writer and the applier reported.
    async fn completed(&mut self, core: &mut Node, reported: Reported) {
        if let Some(up_to) = reported.persisted {
            core.persisted(up_to);
        }
        // The snapshot's bytes are in its file; the core keeps only its position.
        if let Some(index) = reported.snapshot
            && core.compact(index, Vec::new()).is_ok()
        {
            let snapshot = core.log().snapshot().clone();
            self.storage(StorageRequest::Compact(snapshot)).await;
        }
    }

    async fn act(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::HardState(hs) => {
                    let (done, wait) = oneshot::channel();
                    self.storage(StorageRequest::HardState(hs, done)).await;
                    if wait.await.is_err() {
                        fatal::writer_stopped("the hard state was being saved");
                    }
                }
                Output::Append { id, entries } => {
                    self.storage(StorageRequest::Append(id, entries)).await
                }
                Output::Restore(snapshot) => self.restore(snapshot).await,
                Output::Send(env) => {
                    if let Some(peer) = self.peers.get(&env.to)
                        && peer.try_send(env).is_err()
                    {
                        self.warnings.warn("peer queue full", || {
                            "a message to a peer was dropped (Raft re-sends what matters)".into()
                        });
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
                    self.applier(ApplierMsg::Apply { entries, replies }).await;
                }
                Output::ReadReady { id, .. } => {
                    if let Some((query, reply)) = self.reads.remove(&id) {
                        self.applier(ApplierMsg::Query { query, reply }).await;
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

    /// Installs a snapshot from the leader. Its file is already durable: the Raft service
    /// wrote it as the stream arrived, and only then handed the core the metadata.
    ///
    /// Raft storage first (snapshot and log replaced atomically), then the state machine: a
    /// crash in between leaves the snapshot ahead of SQLite, which startup repairs by
    /// restoring SQLite from its file (`storage::reconcile`). The other order could leave
    /// SQLite ahead of a log it does not match.
    async fn restore(&mut self, snapshot: Snapshot) {
        tracing::info!(
            index = snapshot.index,
            term = snapshot.term,
            "installing a snapshot from the leader"
        );
        let index = snapshot.index;
        let (done, wait) = oneshot::channel();
        self.storage(StorageRequest::Install(snapshot, done)).await;
        let Ok(snapshot) = wait.await else {
            fatal::writer_stopped("a snapshot from the leader was being installed")
        };
        let (done, wait) = oneshot::channel();
        self.applier(ApplierMsg::Restore { snapshot, done }).await;
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

    /// Queues a request for the storage writer, waiting for room in its queue.
    async fn storage(&self, req: StorageRequest) {
        if self.storage_tx.send(req).await.is_err() {
            fatal::writer_stopped("the core actor was queueing a write");
        }
    }

    /// Queues work for the applier, waiting for room in its queue. The applier's queue is a
    /// std channel (its thread blocks on it), so the wait is a short sleep between tries
    /// rather than a blocked executor thread; it only happens under overload.
    async fn applier(&self, mut msg: ApplierMsg) {
        loop {
            match self.applier_tx.try_send(msg) {
                Ok(()) => return,
                Err(mpsc::TrySendError::Full(m)) => {
                    msg = m;
                    tokio::time::sleep(APPLIER_RETRY).await;
                }
                Err(mpsc::TrySendError::Disconnected(_)) => {
                    fatal::applier_stopped("the core actor was queueing work for it")
                }
            }
        }
    }
}
