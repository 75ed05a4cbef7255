//! One simulation run: replicas (each a [`SimNode`] with a state machine and a clock), a
//! faulty network, clients, and the fault schedule.
//!
//! Time advances in 1 ms steps. In each step, in this order: faults may be injected (chaos
//! phase only), messages due now are delivered, storage writes due now complete, nodes whose
//! clock fires tick, idle clients issue operations, and nodes compact their logs. Every node
//! step is followed by draining the node's outputs and checking invariants.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::checker::{Checker, LogView};
use super::host::SimNode;
use crate::raft::{
    Entry, Envelope, Error, HardState, Index, Message, Node, NodeId, Options, Output, Role, Term,
};

/// What to simulate. Per-seed parameters (cluster size, fault rates) are drawn from the seed
/// unless fixed here.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Fix the cluster size (1-7); `None` draws it from the seed.
    pub nodes: Option<usize>,
    /// Length of the chaos phase, in simulated milliseconds.
    pub chaos_ms: u64,
    /// After the chaos phase, the cluster must be quiet and converged within this bound.
    pub heal_ms: u64,
    /// The core's options (planted bugs included).
    pub options: Options,
    /// Record a readable trace of every event.
    pub trace: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: None,
            chaos_ms: 3000,
            heal_ms: 10_000,
            options: Options::default(),
            trace: false,
        }
    }
}

/// The outcome of one seed.
#[derive(Debug, Default)]
pub struct SeedReport {
    pub seed: u64,
    pub nodes: usize,
    pub violations: Vec<String>,
    pub trace: Vec<String>,
    pub stats: Stats,
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub simulated_ms: u64,
    pub messages: u64,
    pub writes_acked: u64,
    pub reads_served: u64,
    /// Of `reads_served`, those a follower served with a read index from its leader.
    pub follower_reads: u64,
    pub leaders_elected: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub snapshots_installed: u64,
    pub converged_after_ms: Option<u64>,
}

/// Fault and environment parameters drawn per seed.
#[derive(Debug)]
struct Params {
    loss: f64,
    duplicate: f64,
    max_delay: u64,
    long_delay: f64,
    crash_per_ms: f64,
    partition_per_ms: f64,
    compact_every: u64,
    clients: usize,
    disk_delay: u64,
    /// The state machine is durable (like the replica's SQLite): a restart resumes from what
    /// it applied, not from the snapshot.
    durable_state_machine: bool,
    /// Messages already in flight when a partition starts are still delivered.
    in_flight_survives_cuts: bool,
}

/// The simulator's stand-in for a replica process: the node and its disk, plus what the
/// process around the core holds (the state machine, the clients' pending requests, a clock).
struct SimReplica {
    node: SimNode,
    /// The state machine: appended values, and the index applied.
    values: Vec<u64>,
    applied: Index,
    /// Writes proposed here: index -> (client, term).
    proposals: BTreeMap<Index, (usize, Term)>,
    /// Reads registered here: read id -> (client, highest leader term known when it arrived).
    reads: HashMap<u64, (usize, Term)>,
    /// The node ticks when `(now + tick_phase)` is a multiple of `tick_every`: clocks differ.
    tick_every: u64,
    tick_phase: u64,
    restart_at: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum OpKind {
    Write(u64),
    Read,
}

struct Client {
    op: Option<Op>,
    next_at: u64,
    leader_guess: Option<NodeId>,
}

struct Op {
    kind: OpKind,
    /// When the current attempt gives up (indeterminate) and retries.
    deadline: u64,
    /// `acked_max` when the op began, for reads.
    required: Index,
    read_id: u64,
    /// Whether an attempt is registered at a node.
    in_flight: bool,
}

/// The state of one seed's run.
struct Simulation {
    cfg: SimConfig,
    params: Params,
    rng: ChaCha8Rng,
    now: u64,
    nodes: Vec<SimReplica>,
    members: Vec<NodeId>,
    network: BTreeMap<(u64, u64), Envelope>,
    net_seq: u64,
    blocked: BTreeSet<(NodeId, NodeId)>,
    partition_until: Option<u64>,
    clients: Vec<Client>,
    next_value: u64,
    next_read: u64,
    checker: Checker,
    stats: Stats,
    trace: Vec<String>,
    healing: bool,
}

/// Encodes a state machine (the list of appended values) as snapshot data.
fn encode(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn decode(data: &[u8]) -> Vec<u64> {
    data.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

/// A write's value: commands are decimal strings, so traces stay readable.
fn value_of(command: &[u8]) -> u64 {
    std::str::from_utf8(command)
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("a decimal value")
}

fn state_of(entries: &[Entry]) -> Vec<u8> {
    let values: Vec<u64> = entries
        .iter()
        .filter_map(|e| e.command.as_deref().map(value_of))
        .collect();
    encode(&values)
}

/// Runs one seed to completion and reports what the checker found.
pub fn run_seed(seed: u64, cfg: &SimConfig) -> SeedReport {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = cfg
        .nodes
        .unwrap_or_else(|| [1, 2, 3, 3, 3, 4, 5, 5, 5, 6, 7, 7][rng.random_range(0..12)]);
    let params = Params {
        loss: [0.0, 0.01, 0.05, 0.15][rng.random_range(0..4)],
        duplicate: [0.0, 0.01, 0.05][rng.random_range(0..3)],
        max_delay: rng.random_range(1..30),
        long_delay: [0.0, 0.005, 0.02, 0.1][rng.random_range(0..4)],
        in_flight_survives_cuts: rng.random_bool(0.5),
        crash_per_ms: [0.0, 0.0005, 0.002, 0.005, 0.02][rng.random_range(0..5)],
        partition_per_ms: [0.0, 0.0005, 0.002, 0.005][rng.random_range(0..4)],
        compact_every: [5, 20, 100][rng.random_range(0..3)],
        clients: rng.random_range(1..8),
        disk_delay: [1, 5, 20, 100][rng.random_range(0..4)],
        durable_state_machine: rng.random_bool(0.5),
    };
    // Small append and pipeline limits force entries apart and windows shut, which is
    // where replication bugs hide.
    let mut cfg = cfg.clone();
    cfg.options.max_append_entries = [1, 3, 512][rng.random_range(0..3)];
    cfg.options.max_inflight = [1, 4, 64][rng.random_range(0..3)];
    let cfg = &cfg;
    let members: Vec<NodeId> = (1..=n as NodeId).collect();
    let mut sim = Simulation {
        cfg: cfg.clone(),
        params,
        rng,
        now: 0,
        nodes: Vec::new(),
        members: members.clone(),
        network: BTreeMap::new(),
        net_seq: 0,
        blocked: BTreeSet::new(),
        partition_until: None,
        clients: Vec::new(),
        next_value: 1,
        next_read: 1,
        checker: Checker::default(),
        stats: Stats::default(),
        trace: Vec::new(),
        healing: false,
    };
    for &id in &members {
        let tick_every = sim.rng.random_range(9..12);
        let tick_phase = sim.rng.random_range(0..tick_every);
        sim.nodes.push(SimReplica {
            node: SimNode::new(id),
            values: vec![],
            applied: 0,
            proposals: BTreeMap::new(),
            reads: HashMap::new(),
            tick_every,
            tick_phase,
            restart_at: None,
        });
        sim.start_node(id as usize - 1);
    }
    for _ in 0..sim.params.clients {
        sim.clients.push(Client {
            op: None,
            next_at: 0,
            leader_guess: None,
        });
    }
    let params = format!(
        "{:?}, max_append_entries {}, max_inflight {}",
        sim.params, cfg.options.max_append_entries, cfg.options.max_inflight
    );
    sim.log(|| format!("cluster of {n} nodes, {params}"));
    sim.run();
    SeedReport {
        seed,
        nodes: n,
        violations: std::mem::take(&mut sim.checker.violations),
        trace: sim.trace,
        stats: sim.stats,
    }
}

impl Simulation {
    fn log(&mut self, line: impl FnOnce() -> String) {
        if self.cfg.trace {
            let line = format!("{:>6}ms {}", self.now, line());
            self.trace.push(line);
        }
    }

    fn run(&mut self) {
        let end = self.cfg.chaos_ms + self.cfg.heal_ms;
        while self.now < end {
            if self.now == self.cfg.chaos_ms {
                self.heal();
            }
            if !self.healing {
                self.inject_faults();
            }
            self.restart_due();
            self.deliver();
            self.complete_writes();
            self.tick();
            self.run_clients();
            self.compact();
            if self.now.is_multiple_of(50) {
                self.check_logs_match();
                // Commit safety holds for as long as the cluster runs, not only at commit
                // time: crashes and truncations must never make a committed entry losable.
                if let Some((index, commit_term, entry_term)) = self.checker.last_committed() {
                    let views: Vec<LogView> = self
                        .nodes
                        .iter()
                        .map(|n| n.node.log_view(index, entry_term))
                        .collect();
                    self.checker.check_commit_safe(index, commit_term, &views);
                }
            }
            self.check_durable();
            if self.network.len() > 100_000 {
                let n = self.network.len();
                self.checker
                    .violations
                    .push(format!("message storm: {n} messages in flight"));
            }
            if !self.checker.violations.is_empty() {
                break;
            }
            if self.healing && self.converged() {
                self.stats.converged_after_ms = Some(self.now - self.cfg.chaos_ms);
                break;
            }
            self.now += 1;
        }
        self.stats.simulated_ms = self.now;
        if self.checker.violations.is_empty() && self.stats.converged_after_ms.is_none() {
            let status: Vec<String> = self
                .nodes
                .iter()
                .map(|n| match n.node.core() {
                    Some(c) => format!("{:?}", c.status()),
                    None => format!("n{} down", n.node.id()),
                })
                .collect();
            let busy = self.clients.iter().filter(|c| c.op.is_some()).count();
            self.checker.violations.push(format!(
                "liveness: no quiet, converged cluster {} ms after faults healed ({busy} \
                 client operations still pending); nodes: {}",
                self.cfg.heal_ms,
                status.join("; ")
            ));
        }
    }

    /// Ends the chaos phase: heal partitions, restart crashed nodes, stop losing messages.
    fn heal(&mut self) {
        self.healing = true;
        self.blocked.clear();
        self.partition_until = None;
        self.params.loss = 0.0;
        self.params.duplicate = 0.0;
        self.params.long_delay = 0.0;
        self.log(|| "heal: partitions removed, crashed nodes restart, no more loss".into());
        for i in 0..self.nodes.len() {
            if !self.nodes[i].node.is_up() {
                self.start_node(i);
            }
        }
    }

    /// Quiet and converged: one leader that has committed in its term, every node up and
    /// applied to the leader's commit index, and no client operation outstanding.
    fn converged(&self) -> bool {
        if self.clients.iter().any(|c| c.op.is_some()) {
            return false;
        }
        let statuses: Vec<_> = match self
            .nodes
            .iter()
            .map(|n| n.node.core().map(|c| c.status()))
            .collect::<Option<Vec<_>>>()
        {
            Some(s) => s,
            None => return false,
        };
        let leaders: Vec<_> = statuses.iter().filter(|s| s.role == Role::Leader).collect();
        let [leader] = leaders[..] else { return false };
        let Some(core) = self.nodes[leader.id as usize - 1].node.core() else {
            return false;
        };
        if core.log().term(leader.commit_index) != Some(leader.term) {
            return false;
        }
        statuses
            .iter()
            .all(|s| s.applied_index == leader.commit_index && s.term == leader.term)
    }

    fn start_node(&mut self, i: usize) {
        let durable_sm = self.params.durable_state_machine;
        let replica = &mut self.nodes[i];
        let snapshot = &replica.node.disk().snapshot;
        if !durable_sm || replica.applied < snapshot.index {
            replica.values = decode(&snapshot.data);
            replica.applied = snapshot.index;
        }
        replica.restart_at = None;
        let rng = ChaCha8Rng::seed_from_u64(self.rng.random());
        let options = self.cfg.options.clone();
        replica
            .node
            .start(&self.members, replica.applied, options, Box::new(rng));
        let (id, disk) = (replica.node.id(), replica.node.disk());
        let (term, last) = (disk.hard_state.term, disk.last().1);
        self.log(|| format!("n{id} starts (term {term}, log to {last})"));
    }

    fn crash(&mut self, i: usize) {
        // Frequent crashes come with short outages (a crash storm); rare ones may last long.
        let max_downtime = if self.params.crash_per_ms > 0.01 {
            200
        } else {
            1500
        };
        let downtime = self.rng.random_range(20..max_downtime);
        let replica = &mut self.nodes[i];
        replica.node.crash();
        replica.proposals.clear();
        replica.reads.clear();
        if !self.params.durable_state_machine {
            replica.values.clear();
        }
        replica.restart_at = Some(self.now + downtime);
        self.stats.crashes += 1;
        let id = replica.node.id();
        self.log(|| format!("n{id} crashes (unfinished writes lost), restarts in {downtime}ms"));
    }

    fn inject_faults(&mut self) {
        let n = self.nodes.len();
        if self.rng.random_bool(self.params.crash_per_ms) {
            let i = self.rng.random_range(0..n);
            if self.nodes[i].node.is_up() {
                self.crash(i);
            }
        }
        if let Some(until) = self.partition_until
            && self.now >= until
        {
            self.blocked.clear();
            self.partition_until = None;
            self.log(|| "partition healed".into());
        }
        if self.partition_until.is_none()
            && n > 1
            && self.rng.random_bool(self.params.partition_per_ms)
        {
            let duration = self.rng.random_range(50..1500);
            self.partition_until = Some(self.now + duration);
            self.stats.partitions += 1;
            let mut ids = self.members.clone();
            // Shuffle, then cut between the first k and the rest.
            for j in (1..ids.len()).rev() {
                let k = self.rng.random_range(0..=j);
                ids.swap(j, k);
            }
            let k = self.rng.random_range(1..n);
            let (a, b) = ids.split_at(k);
            let one_way = self.rng.random_bool(0.3);
            for &x in a {
                for &y in b {
                    self.blocked.insert((x, y));
                    if !one_way {
                        self.blocked.insert((y, x));
                    }
                }
            }
            let (a, b) = (a.to_vec(), b.to_vec());
            let kind = if one_way { "one-way" } else { "symmetric" };
            self.log(|| format!("{kind} partition {a:?} | {b:?} for {duration}ms"));
        }
    }

    fn restart_due(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].restart_at.is_some_and(|t| t <= self.now) {
                self.start_node(i);
            }
        }
    }

    fn deliver(&mut self) {
        while let Some(entry) = self.network.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let env = entry.remove();
            let i = env.to as usize - 1;
            // A partition drops what is sent while it lasts (checked at send time), and also
            // what is still in flight when it starts, unless the seed lets old packets through:
            // delayed messages from before a cut are where stale confirmations come from.
            if self.blocked.contains(&(env.from, env.to)) && !self.params.in_flight_survives_cuts {
                self.log(|| format!("drop (partition) {env}"));
                continue;
            }
            if !self.nodes[i].node.is_up() {
                continue;
            }
            self.log(|| format!("recv {env}"));
            self.with_core(i, |core| core.step(env));
        }
    }

    fn complete_writes(&mut self) {
        for i in 0..self.nodes.len() {
            // A crash discards late reports along with the core, so the node is up here.
            for id in self.nodes[i].node.take_late_reports() {
                self.with_core(i, |mut core| {
                    core.persisted(id);
                    core
                });
            }
            while let Some(id) = self.nodes[i].node.complete_write(self.now) {
                self.with_core(i, |mut core| {
                    core.persisted(id);
                    core
                });
            }
        }
    }

    fn tick(&mut self) {
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            if n.node.is_up() && (self.now + n.tick_phase).is_multiple_of(n.tick_every) {
                self.with_core(i, |core| core.tick());
            }
        }
    }

    fn compact(&mut self) {
        for replica in &mut self.nodes {
            let Some(core) = replica.node.core() else {
                continue;
            };
            let snap = core.log().snapshot().index;
            if replica.applied >= snap + self.params.compact_every {
                let data = encode(&replica.values);
                replica
                    .node
                    .compact(replica.applied, data)
                    .expect("valid compaction");
            }
        }
    }

    /// What the core calls durable must be on disk: the last 100 persisted entries match.
    fn check_durable(&mut self) {
        for replica in &self.nodes {
            let Some(core) = replica.node.core() else {
                continue;
            };
            let log = core.log();
            let d = replica.node.disk();
            let persisted = log.persisted();
            let from = (persisted.saturating_sub(100))
                .max(d.snapshot.index)
                .max(log.snapshot().index)
                + 1;
            for index in from..=persisted {
                let on_disk = d.term(index);
                if on_disk != log.term(index) {
                    self.checker.violations.push(format!(
                        "n{} reports entry {index} durable (term {:?}) but the disk holds {:?}",
                        replica.node.id(),
                        log.term(index),
                        on_disk
                    ));
                    return;
                }
            }
        }
    }

    fn check_logs_match(&mut self) {
        let cores: Vec<&Node> = self.nodes.iter().filter_map(|n| n.node.core()).collect();
        for a in 0..cores.len() {
            for b in a + 1..cores.len() {
                self.checker.logs_match(cores[a], cores[b]);
            }
        }
    }

    /// Runs one step of node `i`'s core, then drains its outputs and checks invariants.
    fn with_core(&mut self, i: usize, f: impl FnOnce(Node) -> Node) {
        let st = self.nodes[i].node.core().expect("node is up").status();
        let before = Some((st.role, st.term, st.commit_index, st.applied_index));
        let outputs = self.nodes[i].node.step(f);
        let after = self.nodes[i].node.core().expect("node is up").status();
        if after.role == Role::Leader && (st.role != Role::Leader || st.term != after.term) {
            self.stats.leaders_elected += 1;
            self.log(|| format!("n{} becomes leader of term {}", after.id, after.term));
        }
        let core = self.nodes[i].node.core().expect("node is up");
        let new_commits = self.checker.after_step(core, before);
        if let Some((from, to, term)) = new_commits {
            for j in 0..self.nodes.len() {
                if let Some(other) = self.nodes[j].node.core() {
                    self.checker.check_holds(other, from, to, term);
                }
            }
            let entry_term = self.nodes[i]
                .node
                .core()
                .and_then(|c| c.log().term(to))
                .expect("committed entry");
            let views: Vec<LogView> = self
                .nodes
                .iter()
                .map(|n| n.node.log_view(to, entry_term))
                .collect();
            self.checker.check_commit_safe(to, term, &views);
        }
        for out in outputs {
            self.output(i, out);
        }
    }

    fn output(&mut self, i: usize, out: Output) {
        let id = self.nodes[i].node.id();
        if self.cfg.trace && !matches!(out, Output::Send(_)) {
            self.log(|| format!("n{id} {out}"));
        }
        match out {
            Output::HardState(hs) => {
                let old = self.nodes[i].node.disk().hard_state;
                self.checker.hard_state(id, old, hs);
                self.nodes[i].node.persist_hard_state(hs);
            }
            Output::Append { id: write, entries } => {
                self.checker.entries_written(id, &entries);
                let due = self.now + self.rng.random_range(0..=self.params.disk_delay);
                self.nodes[i].node.queue_write(due, write, entries);
            }
            Output::Restore(snapshot) => {
                self.stats.snapshots_installed += 1;
                self.checker.snapshot(id, &snapshot, state_of);
                let replica = &mut self.nodes[i];
                replica.values = decode(&snapshot.data);
                replica.applied = snapshot.index;
                let stale: Vec<Index> = replica
                    .proposals
                    .range(..=snapshot.index)
                    .map(|(k, _)| *k)
                    .collect();
                replica.node.install(snapshot);
                let clients: Vec<usize> = stale
                    .iter()
                    .filter_map(|index| replica.proposals.remove(index))
                    .map(|p| p.0)
                    .collect();
                for client in clients {
                    self.retry(client, "proposal overtaken by a snapshot");
                }
            }
            Output::Send(env) => {
                self.stats.messages += 1;
                if self.blocked.contains(&(env.from, env.to)) {
                    self.log(|| format!("drop (partition) {env}"));
                    return;
                }
                if let Message::VoteResponse { granted: true } = env.message {
                    let want = HardState {
                        term: env.term,
                        vote: Some(env.to),
                    };
                    let disk = self.nodes[i].node.disk().hard_state;
                    if disk != want {
                        self.checker.violations.push(format!(
                            "n{id} granted a vote to n{} in term {} without persisting it (disk \
                             holds {disk:?})",
                            env.to, env.term
                        ));
                    }
                }
                if self.rng.random_bool(self.params.loss) {
                    self.log(|| format!("lose {env}"));
                    return;
                }
                let copies = if self.rng.random_bool(self.params.duplicate) {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let delay = if self.rng.random_bool(self.params.long_delay) {
                        self.rng.random_range(50..500)
                    } else {
                        self.rng.random_range(0..=self.params.max_delay)
                    };
                    self.net_seq += 1;
                    self.network
                        .insert((self.now + delay.max(1), self.net_seq), env.clone());
                }
            }
            Output::Apply(entries) => {
                for e in entries {
                    let expected = self.nodes[i].applied + 1;
                    self.checker.applied(id, expected, &e);
                    let replica = &mut self.nodes[i];
                    replica.applied = e.index;
                    if let Some(c) = &e.command {
                        replica.values.push(value_of(c));
                    }
                    if let Some((client, term)) = replica.proposals.remove(&e.index) {
                        if term == e.term {
                            self.checker.write_acked(e.index);
                            self.stats.writes_acked += 1;
                            self.finish(client);
                        } else {
                            self.retry(client, "entry replaced by another leader's");
                        }
                    }
                }
            }
            Output::ReadReady { id: read, index } => {
                let replica = &self.nodes[i];
                if replica.applied < index {
                    let msg = format!(
                        "n{id} was told to serve read {read} at {index} before applying it ({})",
                        replica.applied
                    );
                    self.checker.violations.push(msg);
                }
                let served_at = replica.applied;
                if let Some((client, newest_term)) = self.nodes[i].reads.remove(&read) {
                    let required = self.clients[client].op.as_ref().map_or(0, |o| o.required);
                    self.checker.read_served(id, read, served_at, required);
                    // A quorum that elected a newer leader cannot confirm an older one's read.
                    let term = self.nodes[i].node.core().map_or(0, |c| c.term());
                    if term < newest_term {
                        self.checker.violations.push(format!(
                            "deposed leader: n{id} (term {term}) served read {read}, which arrived \
                             after a leader of term {newest_term} was elected"
                        ));
                    }
                    self.stats.reads_served += 1;
                    if !matches!(self.nodes[i].node.core(), Some(Node::Leader(_))) {
                        self.stats.follower_reads += 1;
                    }
                    self.finish(client);
                }
            }
            Output::ReadAborted { id: read, leader } => {
                if let Some((client, _)) = self.nodes[i].reads.remove(&read) {
                    self.clients[client].leader_guess = leader;
                    self.retry(client, "read aborted");
                }
            }
        }
    }

    fn finish(&mut self, client: usize) {
        let c = &mut self.clients[client];
        c.op = None;
        c.next_at = self.now + self.rng.random_range(0..30);
    }

    /// The current attempt failed or is indeterminate: try again shortly, same operation.
    fn retry(&mut self, client: usize, why: &str) {
        if let Some(op) = self.clients[client].op.as_mut() {
            op.in_flight = false;
            let why = why.to_string();
            self.log(|| format!("client {client}: {why}, will retry"));
            self.clients[client].next_at = self.now + self.rng.random_range(1..20);
        }
    }

    fn run_clients(&mut self) {
        for c in 0..self.clients.len() {
            let timed_out = self.clients[c]
                .op
                .as_ref()
                .is_some_and(|op| op.in_flight && self.now >= op.deadline);
            if timed_out {
                // Indeterminate: the write may still commit. Retrying appends the value again,
                // which the list model tolerates (acknowledgement is what is checked).
                for replica in &mut self.nodes {
                    replica.proposals.retain(|_, (client, _)| *client != c);
                    replica.reads.retain(|_, (client, _)| *client != c);
                }
                self.retry(c, "timed out");
            }
            if self.clients[c].next_at > self.now {
                continue;
            }
            if self.clients[c].op.is_none() {
                if self.healing {
                    continue;
                }
                let kind = if self.rng.random_bool(0.5) {
                    self.next_value += 1;
                    OpKind::Write(self.next_value)
                } else {
                    OpKind::Read
                };
                let required = self.checker.acked_max();
                self.clients[c].op = Some(Op {
                    kind,
                    deadline: 0,
                    required,
                    read_id: 0,
                    in_flight: false,
                });
            }
            if self.clients[c].op.as_ref().is_some_and(|op| !op.in_flight) {
                self.attempt(c);
            }
        }
    }

    fn attempt(&mut self, c: usize) {
        let n = self.nodes.len();
        let target = match self.clients[c].leader_guess {
            Some(l) if self.rng.random_bool(0.7) => l,
            _ => self.rng.random_range(1..=n as NodeId),
        };
        let i = target as usize - 1;
        let Some(core) = self.nodes[i].node.core_mut() else {
            self.clients[c].leader_guess = None;
            self.clients[c].next_at = self.now + self.rng.random_range(1..20);
            return;
        };
        let kind = self.clients[c].op.as_ref().expect("op").kind;
        let result = match kind {
            OpKind::Write(value) => {
                core.propose(value.to_string().into_bytes())
                    .map(|(index, term)| {
                        self.nodes[i].proposals.insert(index, (c, term));
                        0
                    })
            }
            OpKind::Read => {
                self.next_read += 1;
                let read = self.next_read;
                let newest_term = self.checker.newest_leader_term();
                core.read(read).map(|()| {
                    self.nodes[i].reads.insert(read, (c, newest_term));
                    read
                })
            }
        };
        match result {
            Ok(read_id) => {
                self.log(|| format!("client {c} sends {kind:?} to n{target}"));
                // Clients wait longer on a slow disk, as real ones would be configured to.
                let deadline = self.now + 300 + 10 * self.params.disk_delay;
                let op = self.clients[c].op.as_mut().expect("op");
                op.in_flight = true;
                op.deadline = deadline;
                op.read_id = read_id;
                self.clients[c].leader_guess = Some(target);
                // The proposal or read may already be ready (single node): drain now.
                self.with_core(i, |core| core);
            }
            Err(Error::NotLeader { leader }) => {
                self.clients[c].leader_guess = leader;
                self.clients[c].next_at = self.now + self.rng.random_range(1..10);
            }
            Err(e) => unreachable!("unexpected error {e}"),
        }
    }
}
