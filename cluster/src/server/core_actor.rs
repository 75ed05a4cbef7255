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
//! Observing: the core knows nothing of metrics or tracing. After each round this actor
//! reads `core.status()` into the Raft gauges and its queues' depths into theirs; it
//! time-stamps each proposal as the core accepts it (commit latency is measured when the
//! entry comes out in an `Apply` output, apply latency by the applier from that moment) and
//! each read as it hands it over (`observe.rs`). With tracing on, an accepted write gets a
//! `node_propose` span (write id, log index) under the service's span, open until commit;
//! its storage and apply spans hang under it and the service's span.
//!
//! The core is held by value, as a local of [`CoreActor::run`]: role transitions consume it
//! and return the next one (`core = core.step(msg)`), so there is never a moment without one.
//!
//! Must not: block (disk and SQLite work belongs to the storage writer and the applier), or
//! spawn anything (the server's `run` owns every task and thread).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc as tmpsc, oneshot, watch};

use super::error::RequestError;
use super::fatal;
use super::mailbox::{
    ApplierMsg, Completions, CoreInput, PanicTarget, ProposeReply, Query, ReadReply, Reported,
    StorageRequest, Traces, WriteTrace,
};
use super::observe::Metrics;
use super::throttle::Throttle;
use crate::raft::{
    Envelope, Error as RaftError, Index, Message, Node, NodeId, Output, ReadId, Snapshot, Status,
    Term,
};

/// Most inputs handled before the outputs are drained: bounds the latency a burst adds.
const MAX_BATCH: usize = 4096;
/// A tick this late, a round that takes this long, or a wait this long for room in the
/// storage writer's or the applier's queue is logged (each at most once a second): under
/// overload these are what would keep heartbeats from the followers.
const SLOW: Duration = Duration::from_millis(50);
/// How long the core actor sleeps before trying a full applier queue again.
const APPLIER_RETRY: Duration = Duration::from_millis(1);

/// A proposal waiting for its entry to commit.
struct Proposal {
    term: Term,
    reply: ProposeReply,
    /// When the core accepted it.
    at: Instant,
    /// With tracing on: the service's trace, and this actor's `node_propose` span.
    trace: Option<(WriteTrace, WriteTrace)>,
}

/// Everything the core actor keeps besides the core itself.
pub struct CoreActor {
    inbox: tmpsc::Receiver<CoreInput>,
    completions: Arc<Completions>,
    storage_tx: tmpsc::Sender<StorageRequest>,
    applier_tx: mpsc::SyncSender<ApplierMsg>,
    peers: HashMap<NodeId, tmpsc::Sender<Envelope>>,
    tick: Duration,
    /// Proposals waiting for their entry to commit, by index.
    proposals: BTreeMap<Index, Proposal>,
    /// How many of them are traced (none unless tracing is on).
    traced: usize,
    /// Linearizable reads waiting for the core to confirm them, and when they were asked.
    reads: HashMap<ReadId, (Query, ReadReply, Instant)>,
    next_read: ReadId,
    /// Warnings about refused peer messages and dropped sends, at most one per second each.
    warnings: Throttle,
    /// The leader this replica knows of, published after every round for the chat service,
    /// which abandons a request it forwarded to a leader that is no longer one.
    leader: watch::Sender<Option<NodeId>>,
    metrics: Metrics,
    /// The last leader known (an election in between forgets none), for leader changes.
    last_leader: Option<NodeId>,
    /// The role and term of the last round, to log each change of either.
    last_role: Option<(crate::raft::Role, u64)>,
}

impl CoreActor {
    pub fn new(
        inbox: tmpsc::Receiver<CoreInput>,
        completions: Arc<Completions>,
        storage_tx: tmpsc::Sender<StorageRequest>,
        applier_tx: mpsc::SyncSender<ApplierMsg>,
        tick: Duration,
        leader: watch::Sender<Option<NodeId>>,
    ) -> CoreActor {
        CoreActor {
            inbox,
            completions,
            storage_tx,
            applier_tx,
            peers: HashMap::new(),
            tick,
            proposals: BTreeMap::new(),
            traced: 0,
            reads: HashMap::new(),
            next_read: 1,
            warnings: Throttle::default(),
            leader,
            metrics: Metrics::noop([]),
            last_leader: None,
            last_role: None,
        }
    }

    /// Records what this actor observes into `metrics` (see the module docs).
    pub fn observed(mut self, metrics: Metrics) -> CoreActor {
        self.metrics = metrics;
        self
    }

    /// Drives `core`, sending to the peers' senders `peers`, until the stop notice.
    /// Proposals still waiting are then answered "outcome unknown"; dropping the actor
    /// closes its senders to the writer, the applier and the peers.
    pub async fn run(
        mut self,
        mut core: Node,
        peers: HashMap<NodeId, tmpsc::Sender<Envelope>>,
        mut stop: watch::Receiver<bool>,
    ) {
        self.peers = peers;
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let completions = self.completions.clone();
        let mut last_tick = Instant::now();
        loop {
            let mut handled = 0;
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = completions.reported() => {}
                _ = ticker.tick() => {
                    let late = last_tick.elapsed();
                    last_tick = Instant::now();
                    if late >= SLOW {
                        self.warnings.warn("late tick", || {
                            format!("the Raft tick came {} ms after the one before", late.as_millis())
                        });
                    }
                    core = core.tick()
                }
                msg = self.inbox.recv() => {
                    let Some(msg) = msg else { break };
                    core = self.handle(core, msg);
                    handled += 1;
                    for _ in 0..MAX_BATCH {
                        match self.inbox.try_recv() {
                            Ok(msg) => core = self.handle(core, msg),
                            Err(_) => break,
                        }
                        handled += 1;
                    }
                }
            }
            let round = Instant::now();
            let reported = completions.take();
            self.completed(&mut core, reported).await;
            let outputs = core.take_outputs();
            let n = outputs.len();
            self.act(outputs).await;
            let took = round.elapsed();
            if took >= SLOW {
                self.warnings.warn("slow round", || {
                    format!(
                        "acting on {n} outputs ({handled} inputs) took {} ms",
                        took.as_millis()
                    )
                });
            }
            let status = core.status();
            let leader = status.leader;
            self.leader.send_if_modified(|known| {
                let changed = *known != leader;
                *known = leader;
                changed
            });
            self.observe(&status);
        }
        for (_, p) in std::mem::take(&mut self.proposals) {
            let _ = p.reply.send(Err(RequestError::OutcomeUnknown));
        }
    }

    /// Sets the Raft gauges from `status` and the queue gauges from the queues now.
    fn observe(&mut self, status: &Status) {
        let m = &self.metrics;
        if status.leader.is_some() && status.leader != self.last_leader {
            m.leader_changes.increment(1);
            self.last_leader = status.leader;
        }
        if self.last_role != Some((status.role, status.term)) {
            // Elections and step-downs, with the backlog of the moment: under overload a
            // leader that loses its term is the first thing to look for.
            tracing::info!(
                role = ?status.role,
                term = status.term,
                leader = ?status.leader,
                inbox = self.inbox.len(),
                storage_queue = self.storage_tx.max_capacity() - self.storage_tx.capacity(),
                "raft role"
            );
            self.last_role = Some((status.role, status.term));
        }
        m.term.set(status.term as f64);
        m.set_role(status.role);
        m.commit_index.set(status.commit_index as f64);
        m.applied_index.set(status.applied_index as f64);
        m.last_log_index.set(status.last_index as f64);
        m.queue_core.set(self.inbox.len() as f64);
        let storage = self.storage_tx.max_capacity() - self.storage_tx.capacity();
        m.queue_storage.set(storage as f64);
        for (id, tx) in &self.peers {
            if let Some(g) = m.queue_peers.get(id) {
                g.set((tx.max_capacity() - tx.capacity()) as f64);
            }
        }
    }

    /// The traces of the proposals at `first..=last` (empty unless tracing is on).
    fn traces(&self, first: Index, last: Index) -> Traces {
        if self.traced == 0 || first > last {
            return Vec::new();
        }
        self.proposals
            .range(first..=last)
            .filter_map(|(i, p)| Some((*i, p.trace.as_ref()?.1.clone())))
            .collect()
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
            CoreInput::Propose {
                write,
                reply,
                trace,
            } => match core.propose(write) {
                Ok((index, term)) => {
                    self.metrics.proposals_accepted.increment(1);
                    let trace = trace.map(|t| {
                        t.span.record("index", index);
                        let node = tracing::debug_span!(parent: &t.span, "node_propose",
                            client_id = t.client_id, sequence = t.sequence, index, term);
                        let node = WriteTrace {
                            span: node,
                            ..t.clone()
                        };
                        (t, node)
                    });
                    self.traced += usize::from(trace.is_some());
                    let at = Instant::now();
                    let p = Proposal {
                        term,
                        reply,
                        at,
                        trace,
                    };
                    self.proposals.insert(index, p);
                }
                Err(RaftError::NotLeader { leader }) => {
                    self.metrics.proposals_not_leader.increment(1);
                    let _ = reply.send(Err(RequestError::NotLeader { leader }));
                }
                Err(e) => unreachable!("propose: {e}"),
            },
            CoreInput::Read { query, reply } => {
                let id = self.next_read;
                self.next_read += 1;
                match core.read(id) {
                    Ok(()) => {
                        self.reads.insert(id, (query, reply, Instant::now()));
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
        let mut reads_ready = 0;
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
                    let (first, last) = match (entries.first(), entries.last()) {
                        (Some(f), Some(l)) => (f.index, l.index),
                        _ => (1, 0),
                    };
                    let traces = self.traces(first, last);
                    self.storage(StorageRequest::Append(id, entries, traces))
                        .await
                }
                Output::Restore(snapshot) => self.restore(snapshot).await,
                Output::Send(env) => {
                    if let Message::Append { entries, .. } = &env.message
                        && let (Some(first), Some(last)) = (entries.first(), entries.last())
                    {
                        self.metrics
                            .append_batch_entries
                            .record(entries.len() as f64);
                        for (index, t) in self.traces(first.index, last.index) {
                            tracing::debug!(parent: &t.span, peer = env.to, index,
                                "entry sent to the peer sender");
                        }
                    }
                    if let Some(peer) = self.peers.get(&env.to)
                        && peer.try_send(env).is_err()
                    {
                        self.warnings.warn("peer queue full", || {
                            "a message to a peer was dropped (Raft re-sends what matters)".into()
                        });
                    }
                }
                Output::Apply(entries) => {
                    let committed = Instant::now();
                    let mut replies = Vec::new();
                    let mut traces = Vec::new();
                    for e in &entries {
                        if let Some(p) = self.proposals.remove(&e.index) {
                            if let Some((request, _node)) = p.trace {
                                self.traced -= 1;
                                traces.push((e.index, request));
                            }
                            if p.term == e.term {
                                let waited = committed.saturating_duration_since(p.at);
                                self.metrics.commit_seconds.record(waited.as_secs_f64());
                                replies.push((e.index, p.reply));
                            } else {
                                let _ = p.reply.send(Err(RequestError::NotCommitted));
                            }
                        }
                    }
                    let msg = ApplierMsg::Apply {
                        entries,
                        replies,
                        committed,
                        traces,
                    };
                    self.applier(msg).await;
                }
                Output::ReadReady { id, .. } => {
                    if let Some((query, reply, at)) = self.reads.remove(&id) {
                        reads_ready += 1;
                        let waited = at.elapsed().as_secs_f64();
                        self.metrics.read_index_seconds.record(waited);
                        self.applier(ApplierMsg::Query { query, reply }).await;
                    }
                }
                Output::ReadAborted { id, leader } => {
                    if let Some((_, reply, _)) = self.reads.remove(&id) {
                        let _ = reply.send(Err(RequestError::NotLeader { leader }));
                    }
                }
            }
        }
        // The reads one drain confirms were confirmed by the same round of heartbeats.
        if reads_ready > 0 {
            self.metrics.reads_per_round.record(reads_ready as f64);
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
            if let Some(p) = self.proposals.remove(&i) {
                self.traced -= usize::from(p.trace.is_some());
                let _ = p.reply.send(Err(RequestError::OutcomeUnknown));
            }
        }
    }

    /// Queues a request for the storage writer, waiting for room in its queue.
    async fn storage(&mut self, req: StorageRequest) {
        let req = match self.storage_tx.try_send(req) {
            Ok(()) => return,
            Err(tmpsc::error::TrySendError::Full(req)) => req,
            Err(tmpsc::error::TrySendError::Closed(_)) => {
                fatal::writer_stopped("the core actor was queueing a write")
            }
        };
        let waiting = Instant::now();
        let sent = self.storage_tx.send(req).await;
        let waited = waiting.elapsed();
        if waited >= SLOW {
            self.warnings.warn("storage queue full", || {
                format!("the core actor waited {} ms for room", waited.as_millis())
            });
        }
        if sent.is_err() {
            fatal::writer_stopped("the core actor was queueing a write");
        }
    }

    /// Queues work for the applier, waiting for room in its queue. The applier's queue is a
    /// std channel (its thread blocks on it), so the wait is a short sleep between tries
    /// rather than a blocked executor thread; it only happens under overload.
    async fn applier(&mut self, mut msg: ApplierMsg) {
        let waiting = Instant::now();
        loop {
            // Counted in before it can be counted out by the applier.
            self.metrics.queue_applier.increment(1.0);
            match self.applier_tx.try_send(msg) {
                Ok(()) => {
                    let waited = waiting.elapsed();
                    if waited >= SLOW {
                        self.warnings.warn("applier queue full", || {
                            format!("the core actor waited {} ms for room", waited.as_millis())
                        });
                    }
                    return;
                }
                Err(mpsc::TrySendError::Full(m)) => {
                    self.metrics.queue_applier.decrement(1.0);
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
