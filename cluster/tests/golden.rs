//! Golden-script tests for the Raft core: each file in `tests/scripts/raft/` is a small story
//! (an election tie, an isolated leader, a conflicting follower...) written as commands, with
//! the core's outputs as the expected text. A change in behaviour shows up as a readable diff.
//! Regenerate after an intended change with `UPDATE_GOLDENFILES=1 cargo test --test golden`,
//! then read the diff.
//!
//! Commands (node ids are plain numbers; `all` or no ids means every node):
//! - `cluster nodes=N [seed=S]`: a fresh cluster of N nodes, all followers at term 0.
//! - `campaign ID`: the node's election timer fires.
//! - `tick ID... [n=K]`: K ticks (default 1). `heartbeat ID`: ticks until a heartbeat is due.
//! - `deliver [ID...] [from=ID]`: delivers the messages queued for these nodes (one round),
//!   or only those from one sender.
//! - `persist [ID...]`: completes the nodes' pending storage writes.
//! - `stabilize`: delivers and persists until nothing is pending.
//! - `propose ID CMD`, `read ID READ_ID`, `compact ID INDEX`.
//! - `partition ID...`: cuts these nodes off from the rest (both directions). `heal`.
//! - `crash ID` (pending writes and queued messages to it are lost), `restart ID`.
//! - `status [ID...]`, `log ID`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::error::Error;
use std::fmt::Write as _;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use telegraft::raft::{
    Entry, Envelope, HardState, Index, Node, NodeId, Options, Output, Restored, Snapshot,
};

#[derive(Default)]
struct Disk {
    hard_state: HardState,
    snapshot: Snapshot,
    entries: Vec<Entry>,
}

struct SimNode {
    core: Option<Node>,
    disk: Disk,
    writes: VecDeque<(u64, Vec<Entry>)>,
    inbox: VecDeque<Envelope>,
    applied: Vec<String>,
}

#[derive(Default)]
struct Runner {
    ids: Vec<NodeId>,
    nodes: BTreeMap<NodeId, SimNode>,
    cut: BTreeSet<NodeId>,
    seed: u64,
}

fn positional(cmd: &goldenscript::Command) -> Vec<&str> {
    cmd.args
        .iter()
        .filter_map(|a| match a {
            goldenscript::Argument::Positional(v) => Some(v.as_str()),
            _ => None,
        })
        .collect()
}

fn key(cmd: &goldenscript::Command, key: &str) -> Option<String> {
    cmd.args.iter().find_map(|a| match a {
        goldenscript::Argument::KeyValue(k, v) if k == key => Some(v.clone()),
        _ => None,
    })
}

fn ids_arg(cmd: &goldenscript::Command, all: &[NodeId]) -> Result<Vec<NodeId>, Box<dyn Error>> {
    let mut ids = Vec::new();
    for value in positional(cmd) {
        if value == "all" {
            return Ok(all.to_vec());
        }
        ids.push(value.parse()?);
    }
    Ok(if ids.is_empty() { all.to_vec() } else { ids })
}

fn key_arg<T: std::str::FromStr>(
    cmd: &goldenscript::Command,
    name: &str,
    default: T,
) -> Result<T, Box<dyn Error>>
where
    T::Err: Error + 'static,
{
    match key(cmd, name) {
        Some(v) => Ok(v.parse()?),
        None => Ok(default),
    }
}

fn pos(cmd: &goldenscript::Command, i: usize) -> Result<String, Box<dyn Error>> {
    positional(cmd)
        .get(i)
        .map(|v| v.to_string())
        .ok_or_else(|| format!("{}: missing argument {}", cmd.name, i + 1).into())
}

impl Runner {
    fn options() -> Options {
        Options {
            election_ticks_min: 10,
            election_ticks_max: 20,
            heartbeat_ticks: 3,
            ..Options::default()
        }
    }

    fn start(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("node exists");
        let restored = Restored {
            hard_state: node.disk.hard_state,
            snapshot: node.disk.snapshot.clone(),
            entries: node.disk.entries.clone(),
            applied: node.disk.snapshot.index,
        };
        let rng = ChaCha8Rng::seed_from_u64(self.seed * 100 + id);
        node.core = Some(Node::new(
            id,
            &self.ids,
            restored,
            Self::options(),
            Box::new(rng),
        ));
        node.applied = vec![format!("(snapshot at {})", node.disk.snapshot.index)];
    }

    fn core(&mut self, id: NodeId) -> Result<&mut SimNode, Box<dyn Error>> {
        match self.nodes.get_mut(&id) {
            Some(n) if n.core.is_some() => Ok(n),
            Some(_) => Err(format!("n{id} is down").into()),
            None => Err(format!("no node {id}").into()),
        }
    }

    /// Runs `f` on node `id`'s core and prints the outputs it produced.
    fn step(
        &mut self,
        id: NodeId,
        out: &mut String,
        f: impl FnOnce(Node) -> Node,
    ) -> Result<(), Box<dyn Error>> {
        let node = self.core(id)?;
        let mut core = f(node.core.take().expect("up"));
        let outputs = core.take_outputs();
        node.core = Some(core);
        for o in outputs {
            writeln!(out, "n{id}: {o}")?;
            self.act(id, o);
        }
        Ok(())
    }

    fn act(&mut self, id: NodeId, o: Output) {
        let cut = self.cut.clone();
        let node = self.nodes.get_mut(&id).expect("node exists");
        match o {
            Output::HardState(hs) => node.disk.hard_state = hs,
            Output::Append { id, entries } => node.writes.push_back((id, entries)),
            Output::Restore(s) => {
                node.applied = vec![format!("(restored snapshot at {})", s.index)];
                node.writes.clear();
                node.disk.entries.clear();
                node.disk.snapshot = s;
            }
            Output::Apply(entries) => node.applied.extend(entries.iter().map(|e| e.to_string())),
            Output::Send(env) => {
                if cut.contains(&env.from) != cut.contains(&env.to) {
                    return;
                }
                if let Some(to) = self.nodes.get_mut(&env.to)
                    && to.core.is_some()
                {
                    to.inbox.push_back(env);
                }
            }
            Output::ReadReady { .. } | Output::ReadAborted { .. } => {}
        }
    }

    fn persist(&mut self, id: NodeId, out: &mut String) -> Result<(), Box<dyn Error>> {
        while let Some((write, entries)) = self.core(id)?.writes.pop_front() {
            let disk = &mut self.nodes.get_mut(&id).expect("exists").disk;
            let keep = (entries[0].index - disk.snapshot.index - 1) as usize;
            disk.entries.truncate(keep);
            disk.entries.extend(entries.iter().cloned());
            self.step(id, out, |mut core| {
                core.persisted(write);
                core
            })?;
        }
        Ok(())
    }

    /// Delivers node `id`'s queued messages (only those from `from`, if given).
    fn deliver(
        &mut self,
        id: NodeId,
        from: Option<NodeId>,
        out: &mut String,
    ) -> Result<(), Box<dyn Error>> {
        let node = self.core(id)?;
        let (inbox, rest): (VecDeque<_>, VecDeque<_>) = node
            .inbox
            .drain(..)
            .partition(|env| from.is_none_or(|f| env.from == f));
        node.inbox = rest;
        for env in inbox {
            self.step(id, out, |core| core.step(env))?;
        }
        Ok(())
    }

    fn pending(&self) -> bool {
        self.nodes
            .values()
            .any(|n| n.core.is_some() && (!n.inbox.is_empty() || !n.writes.is_empty()))
    }

    fn up(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.core.is_some())
            .map(|(id, _)| *id)
            .collect()
    }
}

impl goldenscript::Runner for Runner {
    type Command = goldenscript::Command;

    fn run(
        &mut self,
        cmd: &Self::Command,
        _: &goldenscript::Context,
    ) -> Result<String, Box<dyn Error>> {
        let mut out = String::new();
        let all = self.up();
        match cmd.name.as_str() {
            "cluster" => {
                let n: u64 = key_arg(cmd, "nodes", 3)?;
                self.seed = key_arg(cmd, "seed", 0)?;
                self.ids = (1..=n).collect();
                self.nodes.clear();
                self.cut.clear();
                for id in self.ids.clone() {
                    let node = SimNode {
                        core: None,
                        disk: Disk::default(),
                        writes: VecDeque::new(),
                        inbox: VecDeque::new(),
                        applied: vec![],
                    };
                    self.nodes.insert(id, node);
                    self.start(id);
                }
                self.status(&self.ids.clone(), &mut out)?;
            }
            "campaign" => {
                let id = pos(cmd, 0)?.parse()?;
                self.step(id, &mut out, |core| core.campaign())?;
            }
            "tick" => {
                let n: u64 = key_arg(cmd, "n", 1)?;
                for id in ids_arg(cmd, &all)? {
                    for _ in 0..n {
                        self.step(id, &mut out, |core| core.tick())?;
                    }
                }
            }
            "heartbeat" => {
                let id = pos(cmd, 0)?.parse()?;
                for _ in 0..Self::options().heartbeat_ticks {
                    self.step(id, &mut out, |core| core.tick())?;
                }
            }
            "deliver" => {
                let from = key(cmd, "from").map(|v| v.parse()).transpose()?;
                for id in ids_arg(cmd, &all)? {
                    self.deliver(id, from, &mut out)?;
                }
            }
            "persist" => {
                for id in ids_arg(cmd, &all)? {
                    self.persist(id, &mut out)?;
                }
            }
            "stabilize" => {
                let mut rounds = 0;
                while self.pending() {
                    rounds += 1;
                    if rounds > 100 {
                        return Err("stabilize: still busy after 100 rounds".into());
                    }
                    for id in self.up() {
                        self.persist(id, &mut out)?;
                    }
                    for id in self.up() {
                        self.deliver(id, None, &mut out)?;
                    }
                }
            }
            "propose" => {
                let id: NodeId = pos(cmd, 0)?.parse()?;
                let command = pos(cmd, 1)?;
                let node = self.core(id)?;
                match node
                    .core
                    .as_mut()
                    .expect("up")
                    .propose(command.into_bytes())
                {
                    Ok((index, term)) => writeln!(out, "n{id}: proposed at {index}@{term}")?,
                    Err(e) => writeln!(out, "n{id}: {e}")?,
                }
                self.step(id, &mut out, |core| core)?;
            }
            "read" => {
                let id: NodeId = pos(cmd, 0)?.parse()?;
                let read: u64 = pos(cmd, 1)?.parse()?;
                let node = self.core(id)?;
                if let Err(e) = node.core.as_mut().expect("up").read(read) {
                    writeln!(out, "n{id}: {e}")?;
                }
                self.step(id, &mut out, |core| core)?;
            }
            "compact" => {
                let id: NodeId = pos(cmd, 0)?.parse()?;
                let index: Index = pos(cmd, 1)?.parse()?;
                let node = self.core(id)?;
                let data = format!("state of n{id} at {index}").into_bytes();
                let core = node.core.as_mut().expect("up");
                let term = core.log().term(index);
                match core.compact(index, data.clone()) {
                    Ok(()) => {
                        let term = term.expect("compacted entry was in the log");
                        let disk = &mut node.disk;
                        let drop = (index - disk.snapshot.index) as usize;
                        disk.entries.drain(..drop.min(disk.entries.len()));
                        disk.snapshot = Snapshot { index, term, data };
                        writeln!(out, "n{id}: compacted to {index}@{term}")?;
                    }
                    Err(e) => writeln!(out, "n{id}: {e}")?,
                }
            }
            "partition" => {
                self.cut = ids_arg(cmd, &all)?.into_iter().collect();
                // Messages already queued across the cut are lost.
                let cut = self.cut.clone();
                for (id, node) in self.nodes.iter_mut() {
                    node.inbox
                        .retain(|env| cut.contains(&env.from) == cut.contains(id));
                }
                writeln!(out, "cut off {:?}", self.cut)?;
            }
            "heal" => {
                self.cut.clear();
                writeln!(out, "healed")?;
            }
            "crash" => {
                let id: NodeId = pos(cmd, 0)?.parse()?;
                let node = self.core(id)?;
                node.core = None;
                node.inbox.clear();
                let lost = node.writes.drain(..).map(|w| w.1.len()).sum::<usize>();
                writeln!(out, "n{id} crashed, {lost} unpersisted entries lost")?;
            }
            "restart" => {
                let id: NodeId = pos(cmd, 0)?.parse()?;
                self.start(id);
                self.status(&[id], &mut out)?;
            }
            "status" => {
                let ids = ids_arg(cmd, &self.ids.clone())?;
                self.status(&ids, &mut out)?;
            }
            "log" => {
                let id: NodeId = pos(cmd, 0)?.parse()?;
                let node = self.core(id)?;
                let core = node.core.as_ref().expect("up");
                let log = core.log();
                let entries: Vec<String> = (log.snapshot().index + 1..=log.last_index())
                    .map(|i| log.get(i).expect("in log").to_string())
                    .collect();
                writeln!(
                    out,
                    "n{id} log: snapshot {}@{} [{}]",
                    log.snapshot().index,
                    log.snapshot().term,
                    entries.join(", ")
                )?;
                writeln!(out, "n{id} applied: [{}]", node.applied.join(", "))?;
            }
            name => return Err(format!("unknown command {name}").into()),
        }
        Ok(out)
    }
}

impl Runner {
    fn status(&self, ids: &[NodeId], out: &mut String) -> Result<(), Box<dyn Error>> {
        for id in ids {
            let node = &self.nodes[id];
            match &node.core {
                None => writeln!(out, "n{id}: down")?,
                Some(core) => {
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
            }
        }
        Ok(())
    }
}

#[test]
fn raft_scripts() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/raft");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("scripts dir")
        .map(|e| e.expect("entry").path())
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 5,
        "expected the golden scripts in {}",
        dir.display()
    );
    for path in paths {
        goldenscript::run(&mut Runner::default(), &path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
