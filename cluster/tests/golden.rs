//! Golden-script tests for the Raft core: each file in `tests/scripts/raft/` is a small story
//! (an election tie, an isolated leader, a conflicting follower...) written as commands, with
//! the core's outputs as the expected text. A change in behaviour shows up as a readable diff.
//! Regenerate after an intended change with
//! `UPDATE_GOLDENFILES=1 cargo test --release -p telegraft --test golden`, then read the diff.
//!
//! Each script is its own test, named after the file (`raft::election` for `election.txt`),
//! so a failure names its story and one story can be run alone. `test_each_path!` lists the
//! folder when this file compiles, and cargo does not watch folders: after adding a script,
//! touch this file (or change it) so that the new test exists.
//!
//! The script's lines are parsed into [`Command`] before anything runs, so a typo or a
//! missing argument fails with the line and what is wrong, not halfway through a story.
//! Nodes are [`SimNode`]s, the simulator's own core-plus-disk: a script persists, crashes and
//! restores exactly as a simulated seed does.
//!
//! There is no clock and no random network here: messages wait in each node's inbox until a
//! command delivers (or drops) them, and writes wait until a command persists them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::error::Error;
use std::fmt::Write as _;
use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use telegraft::raft::{Envelope, Index, Node, NodeId, Options, Output, ReadId};
use telegraft::sim::SimNode;
use test_each_file::test_each_path;

// Paths are relative to the workspace root, where cargo runs the compiler.
test_each_path! { in "cluster/tests/scripts/raft" as raft => run_script }

fn run_script(path: &Path) {
    goldenscript::run(&mut Runner::default(), path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A script's commands. Node ids are plain numbers; where ids are optional, none means every
/// node that is up.
#[derive(goldenscript::Command)]
enum Command {
    /// `cluster [nodes=N] [seed=S]`: a fresh cluster of N nodes (3 by default), all followers
    /// at term 0. The seed picks the election timeouts.
    Cluster {
        #[arg(key)]
        nodes: Option<u64>,
        #[arg(key)]
        seed: Option<u64>,
    },
    /// `campaign ID`: the node's election timer fires.
    Campaign(NodeId),
    /// `tick [ID...] [n=K]`: K ticks (1 by default).
    Tick {
        #[arg(optional)]
        ids: Vec<NodeId>,
        #[arg(key)]
        n: Option<u64>,
    },
    /// `heartbeat ID`: ticks the node until a leader's heartbeat is due.
    Heartbeat(NodeId),
    /// `deliver [ID...] [from=ID]`: delivers the messages queued for these nodes (one round:
    /// not the answers), or only those from one sender.
    Deliver {
        #[arg(optional)]
        ids: Vec<NodeId>,
        #[arg(key)]
        from: Option<NodeId>,
    },
    /// `drop [ID...] [from=ID]`: loses the messages queued for these nodes (or only those
    /// from one sender), as a lossy network would.
    #[command(name = "drop")]
    DropMessages {
        #[arg(optional)]
        ids: Vec<NodeId>,
        #[arg(key)]
        from: Option<NodeId>,
    },
    /// `persist [ID...]`: completes the nodes' pending storage writes.
    Persist(#[arg(optional)] Vec<NodeId>),
    /// `stabilize`: persists and delivers until nothing is pending.
    Stabilize,
    /// `propose ID COMMAND`: a client proposal at the node.
    Propose { id: NodeId, command: String },
    /// `read ID READ_ID`: a linearizable read at the node.
    Read { id: NodeId, read: ReadId },
    /// `compact ID INDEX`: the node snapshots its state machine at INDEX.
    Compact { id: NodeId, index: Index },
    /// `partition ID...`: cuts these nodes off from the rest, both ways (messages queued
    /// across the cut are lost too).
    Partition(Vec<NodeId>),
    /// `heal`: removes the partition.
    Heal,
    /// `crash ID`: the node stops; unfinished writes and messages queued for it are lost.
    Crash(NodeId),
    /// `restart ID`: a crashed node starts again from its disk.
    Restart(NodeId),
    /// `status [ID...]`: role, term, leader and log cursors (every node by default).
    Status(#[arg(optional)] Vec<NodeId>),
    /// `log ID`: the node's log and what its state machine applied.
    Log(NodeId),
    /// `disk ID`: what the node's disk holds, as a restart would find it.
    Disk(NodeId),
}

/// Small timeouts keep the scripts short: a heartbeat every 3 ticks, elections after 10-20.
fn options() -> Options {
    Options {
        election_ticks_min: 10,
        election_ticks_max: 20,
        heartbeat_ticks: 3,
        read_request_ticks: 6,
        ..Options::default()
    }
}

/// A node as a script drives it.
struct ScriptNode {
    sim: SimNode,
    /// Messages sent to this node and not yet delivered or dropped.
    inbox: VecDeque<Envelope>,
    /// The state machine: what the node applied since it (re)started, in order.
    applied: Vec<String>,
}

#[derive(Default)]
struct Runner {
    members: Vec<NodeId>,
    nodes: BTreeMap<NodeId, ScriptNode>,
    /// The nodes cut off from the rest by `partition`.
    cut: BTreeSet<NodeId>,
    seed: u64,
}

impl goldenscript::Runner for Runner {
    type Command = Command;

    fn run(
        &mut self,
        command: &Command,
        _: &goldenscript::Context,
    ) -> Result<String, Box<dyn Error>> {
        let mut out = String::new();
        match command {
            Command::Cluster { nodes, seed } => {
                self.cluster(nodes.unwrap_or(3), seed.unwrap_or(0));
                self.status(&self.members, &mut out)?;
            }
            Command::Campaign(id) => self.step(*id, &mut out, Node::campaign)?,
            Command::Tick { ids, n } => {
                for id in self.or_up(ids) {
                    for _ in 0..n.unwrap_or(1) {
                        self.step(id, &mut out, Node::tick)?;
                    }
                }
            }
            Command::Heartbeat(id) => {
                for _ in 0..options().heartbeat_ticks {
                    self.step(*id, &mut out, Node::tick)?;
                }
            }
            Command::Deliver { ids, from } => {
                for id in self.or_up(ids) {
                    self.deliver(id, *from, &mut out)?;
                }
            }
            Command::DropMessages { ids, from } => {
                for id in self.or_up(ids) {
                    for env in self.take_inbox(id, *from)? {
                        writeln!(out, "dropped {env}")?;
                    }
                }
            }
            Command::Persist(ids) => {
                for id in self.or_up(ids) {
                    self.persist(id, &mut out)?;
                }
            }
            Command::Stabilize => self.stabilize(&mut out)?,
            Command::Propose { id, command } => {
                let command = command.clone().into_bytes();
                match self.core(*id)?.propose(command) {
                    Ok((index, term)) => writeln!(out, "n{id}: proposed at {index}@{term}")?,
                    Err(e) => writeln!(out, "n{id}: {e}")?,
                }
                self.step(*id, &mut out, |core| core)?;
            }
            Command::Read { id, read } => {
                if let Err(e) = self.core(*id)?.read(*read) {
                    writeln!(out, "n{id}: {e}")?;
                }
                self.step(*id, &mut out, |core| core)?;
            }
            Command::Compact { id, index } => {
                let data = format!("state of n{id} at {index}").into_bytes();
                self.up(*id)?;
                match self.node(*id)?.sim.compact(*index, data) {
                    Ok(term) => writeln!(out, "n{id}: compacted to {index}@{term}")?,
                    Err(e) => writeln!(out, "n{id}: {e}")?,
                }
            }
            Command::Partition(ids) => {
                self.cut = ids.iter().copied().collect();
                let cut = &self.cut;
                for (id, node) in self.nodes.iter_mut() {
                    node.inbox
                        .retain(|env| cut.contains(&env.from) == cut.contains(id));
                }
                writeln!(out, "cut off {:?}", self.cut)?;
            }
            Command::Heal => {
                self.cut.clear();
                writeln!(out, "healed")?;
            }
            Command::Crash(id) => {
                self.up(*id)?;
                let node = self.node(*id)?;
                let lost = node.sim.crash();
                node.inbox.clear();
                writeln!(out, "n{id} crashed, {lost} unpersisted entries lost")?;
            }
            Command::Restart(id) => {
                if self.node(*id)?.sim.is_up() {
                    return Err(format!("n{id} is up: crash it first").into());
                }
                self.start(*id);
                self.status(&[*id], &mut out)?;
            }
            Command::Status(ids) => {
                let ids = if ids.is_empty() { &self.members } else { ids };
                self.status(ids, &mut out)?;
            }
            Command::Log(id) => self.log(*id, &mut out)?,
            Command::Disk(id) => {
                let disk = self.node(*id)?.sim.disk();
                let hs = disk.hard_state;
                let s = &disk.snapshot;
                let entries: Vec<String> = disk.entries.iter().map(|e| e.to_string()).collect();
                writeln!(
                    out,
                    "n{id} disk: term={} vote={} snapshot {}@{} [{}]",
                    hs.term,
                    hs.vote.map_or("-".to_string(), |v| v.to_string()),
                    s.index,
                    s.term,
                    entries.join(", ")
                )?;
            }
        }
        Ok(out)
    }
}

impl Runner {
    fn cluster(&mut self, nodes: u64, seed: u64) {
        self.seed = seed;
        self.members = (1..=nodes).collect();
        self.cut.clear();
        self.nodes = self
            .members
            .iter()
            .map(|&id| {
                let node = ScriptNode {
                    sim: SimNode::new(id),
                    inbox: VecDeque::new(),
                    applied: vec![],
                };
                (id, node)
            })
            .collect();
        for id in self.members.clone() {
            self.start(id);
        }
    }

    /// Starts a node from its disk. The state machine is rebuilt from the snapshot, and every
    /// start of a node draws the same election timeouts.
    fn start(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("node exists");
        let snapshot = node.sim.disk().snapshot.index;
        let rng = ChaCha8Rng::seed_from_u64(self.seed * 100 + id);
        node.sim
            .start(&self.members, snapshot, options(), Box::new(rng));
        node.applied = vec![format!("(snapshot at {snapshot})")];
    }

    fn node(&mut self, id: NodeId) -> Result<&mut ScriptNode, Box<dyn Error>> {
        self.nodes
            .get_mut(&id)
            .ok_or_else(|| format!("no node {id}").into())
    }

    /// Fails unless node `id` exists and is up.
    fn up(&mut self, id: NodeId) -> Result<(), Box<dyn Error>> {
        if self.node(id)?.sim.is_up() {
            Ok(())
        } else {
            Err(format!("n{id} is down").into())
        }
    }

    fn core(&mut self, id: NodeId) -> Result<&mut Node, Box<dyn Error>> {
        self.up(id)?;
        Ok(self.node(id)?.sim.core_mut().expect("up"))
    }

    /// The given ids, or every node that is up when none are given.
    fn or_up(&self, ids: &[NodeId]) -> Vec<NodeId> {
        if !ids.is_empty() {
            return ids.to_vec();
        }
        self.nodes
            .iter()
            .filter(|(_, n)| n.sim.is_up())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Feeds node `id` one input and acts on the outputs, printing each.
    fn step(
        &mut self,
        id: NodeId,
        out: &mut String,
        f: impl FnOnce(Node) -> Node,
    ) -> Result<(), Box<dyn Error>> {
        self.up(id)?;
        for output in self.node(id)?.sim.step(f) {
            writeln!(out, "n{id}: {output}")?;
            self.act(id, output);
        }
        Ok(())
    }

    fn act(&mut self, id: NodeId, output: Output) {
        let node = self.nodes.get_mut(&id).expect("node exists");
        match output {
            Output::HardState(hs) => node.sim.persist_hard_state(hs),
            // No clock here: every write is due at once and completes on `persist`.
            Output::Append { id, entries } => node.sim.queue_write(0, id, entries),
            Output::Restore(snapshot) => {
                node.applied = vec![format!("(restored snapshot at {})", snapshot.index)];
                node.sim.install(snapshot);
            }
            Output::Apply(entries) => node.applied.extend(entries.iter().map(|e| e.to_string())),
            Output::Send(env) => {
                if self.cut.contains(&env.from) != self.cut.contains(&env.to) {
                    return;
                }
                if let Some(to) = self.nodes.get_mut(&env.to)
                    && to.sim.is_up()
                {
                    to.inbox.push_back(env);
                }
            }
            Output::ReadReady { .. } | Output::ReadAborted { .. } => {}
        }
    }

    /// Completes node `id`'s storage writes in order, reporting each to the core (first those
    /// that a restore dropped).
    fn persist(&mut self, id: NodeId, out: &mut String) -> Result<(), Box<dyn Error>> {
        self.up(id)?;
        for write in self.node(id)?.sim.take_late_reports() {
            self.step(id, out, |mut core| {
                core.persisted(write);
                core
            })?;
        }
        while let Some(write) = self.node(id)?.sim.complete_write(0) {
            self.step(id, out, |mut core| {
                core.persisted(write);
                core
            })?;
        }
        Ok(())
    }

    /// Takes node `id`'s queued messages (only those from `from`, if given).
    fn take_inbox(
        &mut self,
        id: NodeId,
        from: Option<NodeId>,
    ) -> Result<VecDeque<Envelope>, Box<dyn Error>> {
        let node = self.node(id)?;
        let (taken, rest) = node
            .inbox
            .drain(..)
            .partition(|env| from.is_none_or(|f| env.from == f));
        node.inbox = rest;
        Ok(taken)
    }

    fn deliver(
        &mut self,
        id: NodeId,
        from: Option<NodeId>,
        out: &mut String,
    ) -> Result<(), Box<dyn Error>> {
        self.up(id)?;
        for env in self.take_inbox(id, from)? {
            self.step(id, out, |core| core.step(env))?;
        }
        Ok(())
    }

    /// Rounds of "persist everything, then deliver everything" until nothing is pending.
    fn stabilize(&mut self, out: &mut String) -> Result<(), Box<dyn Error>> {
        for _ in 0..100 {
            let busy = self
                .nodes
                .values()
                .any(|n| n.sim.is_up() && (!n.inbox.is_empty() || n.sim.has_pending_writes()));
            if !busy {
                return Ok(());
            }
            for id in self.or_up(&[]) {
                self.persist(id, out)?;
            }
            for id in self.or_up(&[]) {
                self.deliver(id, None, out)?;
            }
        }
        Err("stabilize: still busy after 100 rounds".into())
    }

    fn status(&self, ids: &[NodeId], out: &mut String) -> Result<(), Box<dyn Error>> {
        for id in ids {
            let node = self.nodes.get(id).ok_or_else(|| format!("no node {id}"))?;
            let Some(core) = node.sim.core() else {
                writeln!(out, "n{id}: down")?;
                continue;
            };
            let s = core.status();
            writeln!(
                out,
                "n{id}: {} term={} leader={} last={} commit={} applied={} persisted={}",
                s.role,
                s.term,
                s.leader.map_or("-".to_string(), |l| l.to_string()),
                s.last_index,
                s.commit_index,
                s.applied_index,
                s.persisted_index,
            )?;
        }
        Ok(())
    }

    fn log(&mut self, id: NodeId, out: &mut String) -> Result<(), Box<dyn Error>> {
        let log = self.core(id)?.log();
        let entries: Vec<String> = (log.snapshot().index + 1..=log.last_index())
            .map(|i| log.get(i).expect("in log").to_string())
            .collect();
        let (index, term) = (log.snapshot().index, log.snapshot().term);
        writeln!(
            out,
            "n{id} log: snapshot {index}@{term} [{}]",
            entries.join(", ")
        )?;
        let applied = &self.nodes[&id].applied;
        writeln!(out, "n{id} applied: [{}]", applied.join(", "))?;
        Ok(())
    }
}
