//! Injecting the scenario's faults into a local cluster while the load runs.
//!
//! The launcher owns the replica processes, so faults are real signals to real processes:
//! `kill` is SIGKILL (the data directory stays), `restart` starts the killed replica again on
//! the same data, `pause` is SIGSTOP and, `for` later, SIGCONT. A `partition` goes through
//! each replica's fault hook (Admin.SetPartition, enabled by `--enable-fault-injection`, which
//! the launcher passes only when the scenario has partitions): the cut-off side drops every
//! Raft message from the rest and the rest from it, until `for` later every replica heals.
//! Targets are resolved when a fault fires: `leader` is the leader among the running
//! replicas ([`super::leader::running_leader`]), `follower` the lowest-numbered other running
//! replica, `killed` the replica the latest kill hit.
//!
//! Faults finish, whatever else happens to the replicas:
//! - a partition is applied to every replica that answers, at once; the ones it could not
//!   reach (killed or paused) are recorded (`unreached`) and get their blocked set as soon as
//!   they answer again: after their pause ends, or when they are restarted, since a restarted
//!   replica has forgotten its blocked set;
//! - the heal is retried on every running replica until each acknowledges it (or the run
//!   is interrupted, or [`HEAL_LIMIT`] has passed), and the record says whether it did
//!   (`healed`). Combined faults therefore work: kill a follower, cut the minority off, heal,
//!   restart.
//!
//! With `--deploy docker` ([`super::docker`]) the same faults go through the engine: `docker
//! kill`, `docker start`, `docker pause`, and a partition is a network cut
//! ([`Injector::network_cut`]).
//!
//! Each fault is recorded with its time; after the run, its unavailability window is measured
//! from the history: from the fault to the first acknowledgement of a write sent after it
//! (a write sent before the fault may still be acknowledged just after it, which says
//! nothing about the cluster after the fault).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use telegraft::admin;
use tokio::sync::watch;

use super::leader;
use super::lifecycle::Cluster;
use super::poller::StatusPoller;
use crate::history::{Event, Outcome};
use crate::scenario::{Action, Fault, Target};

/// How often unreached replicas are tried again, and heals retried.
const RETRY_EVERY: Duration = Duration::from_millis(200);

/// How long a heal is retried before giving up on a replica.
const HEAL_LIMIT: Duration = Duration::from_secs(30);

/// A fault as it happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FaultRecord {
    /// Seconds from the start of the measured window (negative during warm-up).
    pub at_s: f64,
    pub action: Action,
    /// The target as the scenario named it (`leader`, `node 2`, ...).
    pub target: String,
    /// The replica it hit (for a partition, the first of the cut-off side); `None` when it
    /// could not be carried out (see `error`).
    pub node: Option<u64>,
    /// From the fault to the first acknowledgement of a write sent after it; `None` if none
    /// was.
    pub unavailable_ms: Option<f64>,
    /// Why the fault could not be carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A partition: the replicas it could not reach when it fired (killed or paused); each
    /// got its blocked set once it answered again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreached: Vec<u64>,
    /// A partition: whether every running replica acknowledged the heal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healed: Option<bool>,
    /// Microseconds from the run's start (the history's time base).
    #[serde(skip)]
    pub at_us: u64,
}

impl FaultRecord {
    fn new(f: &Fault, at_s: f64, fired: Duration) -> FaultRecord {
        FaultRecord {
            at_s: (at_s * 1000.0).round() / 1000.0,
            action: f.action,
            target: f.target.to_string(),
            node: None,
            unavailable_ms: None,
            error: None,
            unreached: Vec::new(),
            healed: None,
            at_us: fired.as_micros() as u64,
        }
    }
}

/// Carries out `faults` against `cluster`, each at its time from the run's `start`, and
/// returns what happened. Pauses and partitions are lifted before this returns; `cancel`
/// (an interrupt) skips the faults still to come and lifts them at once.
pub async fn inject(
    cluster: Arc<Mutex<Cluster>>,
    poller: Arc<StatusPoller>,
    faults: Vec<Fault>,
    start: Arc<OnceLock<Instant>>,
    warmup: Duration,
    mut cancel: watch::Receiver<bool>,
) -> Vec<FaultRecord> {
    while start.get().is_none() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            _ = cancel.changed() => return Vec::new(),
        }
    }
    let mut injector = Injector {
        cluster,
        poller,
        start: *start.get().unwrap(),
        warmup,
        killed: None,
        partition: Arc::new(Mutex::new(None)),
        epochs: 0,
        lifts: Vec::new(),
        cancel: cancel.clone(),
    };
    let mut faults = faults;
    faults.sort_by_key(|f| f.at.0);
    let mut records = Vec::new();
    for f in faults {
        tokio::select! {
            _ = tokio::time::sleep_until((injector.start + f.at.0).into()) => {}
            _ = cancel.changed() => break,
        }
        records.push(match f.action {
            Action::Partition => injector.partition(&f, records.len()).await,
            Action::Kill | Action::Restart | Action::Pause => injector.signal(&f).await,
        });
    }
    for lift in injector.lifts {
        if let Ok(Some((i, healed))) = lift.await {
            records[i].healed = Some(healed);
        }
    }
    records
}

/// A partition in force: each replica's blocked set, and the replicas still to be told.
struct Active {
    epoch: u64,
    blocked: BTreeMap<u64, Vec<u64>>,
    pending: BTreeSet<u64>,
}

/// The state of one run's fault injection.
struct Injector {
    cluster: Arc<Mutex<Cluster>>,
    poller: Arc<StatusPoller>,
    /// The run's zero, and the warm-up (fault times are reported from the measured window).
    start: Instant,
    warmup: Duration,
    /// The replica the latest kill hit.
    killed: Option<u64>,
    /// The partition in force, if any.
    partition: Arc<Mutex<Option<Active>>>,
    epochs: u64,
    /// Tasks that lift a pause or a partition after its `for`; a partition's returns its
    /// record's index and whether it healed.
    lifts: Vec<tokio::task::JoinHandle<Option<(usize, bool)>>>,
    cancel: watch::Receiver<bool>,
}

impl Injector {
    /// The replica a kill, restart or pause hits, resolved now.
    async fn resolve(&self, target: Target) -> Option<u64> {
        match target {
            Target::Leader => leader::running_leader(&self.cluster, &self.poller).await,
            Target::Follower => {
                let lead = leader::running_leader(&self.cluster, &self.poller).await;
                let running = self.cluster.lock().unwrap().running();
                running.into_iter().find(|id| Some(*id) != lead)
            }
            Target::Node(n) => Some(n),
            Target::Killed => self.killed,
            Target::Minority | Target::Majority => None,
        }
    }

    /// A kill (SIGKILL), restart, or pause (SIGSTOP, and SIGCONT `for` later).
    async fn signal(&mut self, f: &Fault) -> FaultRecord {
        let node = self.resolve(f.target).await;
        let mut died = None;
        let result = match node {
            None => Err(format!("no replica is {}", f.target)),
            Some(id) => {
                let mut c = self.cluster.lock().unwrap();
                match f.action {
                    Action::Kill => c.kill(id).map(|_| {
                        self.killed = Some(id);
                        died = c.killed_at(id);
                    }),
                    Action::Restart => c.restart(id),
                    Action::Pause => c.pause(id, true),
                    Action::Partition => Err(std::io::Error::other("not a signal")),
                }
                .map_err(|e| e.to_string())
            }
        };
        // When the fault is in force: a signal to a local process acts at once, but `docker
        // kill` and `docker pause` take tens of milliseconds, during which the replica still
        // answers; timing from before them would shorten the unavailability measured. A
        // container's kill is timed from its death as the engine recorded it.
        let now = self.start.elapsed();
        let fired = died
            .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
            .filter(|ago| *ago < Duration::from_secs(5))
            .map_or(now, |ago| now.saturating_sub(ago));
        if let (Ok(()), Some(id)) = (&result, node) {
            // A restarted replica has forgotten its blocked set; a resumed one may never
            // have heard it.
            if let Some(p) = self.partition.lock().unwrap().as_mut()
                && matches!(f.action, Action::Restart | Action::Pause)
            {
                p.pending.insert(id);
            }
        }
        if let (Ok(()), Action::Pause, Some(id), Some(d)) = (&result, f.action, node, f.duration) {
            let cluster = self.cluster.clone();
            let mut cancel = self.cancel.clone();
            self.lifts.push(tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(d.0) => {}
                    _ = cancel.changed() => {}
                }
                let _ = cluster.lock().unwrap().pause(id, false);
                None
            }));
        }
        let at_s = self.at_s(fired);
        match &result {
            Ok(()) => eprintln!(
                "loadgen: {at_s:.1} s: {:?} node {}",
                f.action,
                node.unwrap_or(0)
            ),
            Err(e) => eprintln!("loadgen: {at_s:.1} s: {:?} {}: {e}", f.action, f.target),
        }
        let mut record = FaultRecord::new(f, at_s, fired);
        record.node = node.filter(|_| result.is_ok());
        record.error = result.err();
        record
    }

    /// A partition: applied to every replica that answers now, to the others as soon as
    /// they answer; healed on every running replica `for` later.
    async fn partition(&mut self, f: &Fault, index: usize) -> FaultRecord {
        if self.cluster.lock().unwrap().docker().is_some() {
            return self.network_cut(f, index).await;
        }
        let result = self.cut(f.target).await;
        let fired = match &result {
            Ok((_, _, in_force)) => in_force.saturating_duration_since(self.start),
            Err(_) => self.start.elapsed(),
        };
        let at_s = self.at_s(fired);
        let mut record = FaultRecord::new(f, at_s, fired);
        match result {
            Ok((side, unreached, _)) => {
                eprintln!(
                    "loadgen: {at_s:.1} s: partition {side:?} from the rest{}",
                    if unreached.is_empty() {
                        String::new()
                    } else {
                        format!(" (not reached yet: {unreached:?})")
                    }
                );
                record.node = side.first().copied();
                record.unreached = unreached;
                let epoch = self.epochs;
                self.lifts.push(tokio::spawn(enforce(
                    self.cluster.clone(),
                    self.partition.clone(),
                    epoch,
                    self.cancel.clone(),
                )));
                if let Some(d) = f.duration {
                    self.lifts.push(tokio::spawn(heal_after(
                        self.cluster.clone(),
                        self.partition.clone(),
                        epoch,
                        d.0,
                        index,
                        self.cancel.clone(),
                    )));
                }
            }
            Err(e) => {
                eprintln!("loadgen: {at_s:.1} s: partition {}: {e}", f.target);
                record.error = Some(e);
            }
        }
        record
    }

    /// Cuts one side off from the rest: `leader`, `follower` or `node N` alone; `minority`,
    /// the leader with followers up to a minority; `majority`, the leader with followers up
    /// to a majority (so the followers outside it are the ones cut off). Tells every running
    /// replica at once; returns the side, the replicas not reached, and when the cut was in
    /// force.
    async fn cut(&mut self, target: Target) -> Result<(Vec<u64>, Vec<u64>, Instant), String> {
        let (all, running, addrs) = {
            let c = self.cluster.lock().unwrap();
            (
                c.addrs().keys().copied().collect::<Vec<u64>>(),
                c.running(),
                c.addrs().clone(),
            )
        };
        let lead = leader::running_leader(&self.cluster, &self.poller).await;
        let side = side(&all, lead, target)?;
        let blocked = blocked_sets(&all, &side);
        let calls = running.iter().map(|id| {
            let (addr, set) = (addrs[id].clone(), blocked[id].clone());
            async move {
                let ok = admin::set_partition(&addr, set).await.is_ok();
                (*id, ok, Instant::now())
            }
        });
        let answers = futures_util::future::join_all(calls).await;
        let told: BTreeSet<u64> = answers
            .iter()
            .filter(|(_, ok, _)| *ok)
            .map(|(id, _, _)| *id)
            .collect();
        if told.is_empty() {
            return Err("no replica could be told".into());
        }
        // In force once the last replica that answered has its set (one that did not answer
        // may have held the calls up).
        let in_force = answers
            .iter()
            .filter(|(_, ok, _)| *ok)
            .map(|(_, _, at)| *at)
            .max()
            .unwrap_or_else(Instant::now);
        let pending: BTreeSet<u64> = all
            .iter()
            .filter(|id| !told.contains(id))
            .copied()
            .collect();
        self.epochs += 1;
        *self.partition.lock().unwrap() = Some(Active {
            epoch: self.epochs,
            blocked,
            pending: pending.clone(),
        });
        Ok((side, pending.into_iter().collect(), in_force))
    }

    /// A partition of containers: a real network cut. The smaller group (the side, or the
    /// rest when the side is the larger) is disconnected from the network, each of its
    /// members alone (a cut-off group of two cannot talk within itself either, which changes
    /// nothing for Raft: a minority elects no leader); `for` later every one is connected
    /// again at its own address. A killed or paused container can be disconnected, and stays
    /// so when restarted, so nothing needs enforcing meanwhile.
    async fn network_cut(&mut self, f: &Fault, index: usize) -> FaultRecord {
        let all: Vec<u64> = self
            .cluster
            .lock()
            .unwrap()
            .addrs()
            .keys()
            .copied()
            .collect();
        let lead = leader::running_leader(&self.cluster, &self.poller).await;
        let result = side(&all, lead, f.target).and_then(|side| {
            let rest: Vec<u64> = all
                .iter()
                .filter(|id| !side.contains(id))
                .copied()
                .collect();
            let cut = if side.len() <= rest.len() {
                side.clone()
            } else {
                rest
            };
            let mut c = self.cluster.lock().unwrap();
            let docker = c.docker().ok_or("not containers")?;
            if let Err(e) = docker.disconnect(&cut) {
                docker.reconnect();
                return Err(e.to_string());
            }
            Ok((side, cut))
        });
        let fired = self.start.elapsed();
        let at_s = self.at_s(fired);
        let mut record = FaultRecord::new(f, at_s, fired);
        match result {
            Ok((side, cut)) => {
                eprintln!(
                    "loadgen: {at_s:.1} s: partition {side:?} from the rest (network cut: \
                     {cut:?} disconnected)"
                );
                record.node = side.first().copied();
                if let Some(d) = f.duration {
                    let (cluster, mut cancel) = (self.cluster.clone(), self.cancel.clone());
                    self.lifts.push(tokio::spawn(async move {
                        tokio::select! {
                            _ = tokio::time::sleep(d.0) => {}
                            _ = cancel.changed() => {}
                        }
                        let deadline = Instant::now() + HEAL_LIMIT;
                        loop {
                            let left = match cluster.lock().unwrap().docker() {
                                Some(c) => c.reconnect(),
                                None => Vec::new(),
                            };
                            if left.is_empty() {
                                return Some((index, true));
                            }
                            if Instant::now() > deadline {
                                eprintln!("loadgen: could not reconnect nodes {left:?}");
                                return Some((index, false));
                            }
                            tokio::time::sleep(RETRY_EVERY).await;
                        }
                    }));
                }
            }
            Err(e) => {
                eprintln!("loadgen: {at_s:.1} s: partition {}: {e}", f.target);
                record.error = Some(e);
            }
        }
        record
    }

    /// Seconds from the start of the measured window to `fired` (from the run's start).
    fn at_s(&self, fired: Duration) -> f64 {
        fired.as_secs_f64() - self.warmup.as_secs_f64()
    }
}

/// The side a partition cuts off (see [`Injector::cut`]).
fn side(all: &[u64], lead: Option<u64>, target: Target) -> Result<Vec<u64>, String> {
    let n = all.len();
    let side: Vec<u64> = match target {
        Target::Node(id) => vec![id],
        Target::Leader => vec![lead.ok_or("no leader")?],
        Target::Follower => vec![
            *all.iter()
                .find(|id| Some(**id) != lead)
                .ok_or("no follower")?,
        ],
        Target::Minority | Target::Majority => {
            let size = if target == Target::Minority {
                (n - 1) / 2
            } else {
                n / 2 + 1
            };
            let mut side: Vec<u64> = lead.into_iter().collect();
            side.extend(
                all.iter()
                    .filter(|id| Some(**id) != lead)
                    .take(size.saturating_sub(side.len())),
            );
            side
        }
        Target::Killed => return Err("a partition cannot target killed".into()),
    };
    if side.is_empty() || side.len() >= n {
        return Err(format!("{target} gives no partition of {n} replicas"));
    }
    Ok(side)
}

/// What each replica must drop: the side drops the rest, the rest drops the side.
fn blocked_sets(all: &[u64], side: &[u64]) -> BTreeMap<u64, Vec<u64>> {
    all.iter()
        .map(|id| {
            let blocked = if side.contains(id) {
                all.iter().filter(|o| !side.contains(o)).copied().collect()
            } else {
                side.to_vec()
            };
            (*id, blocked)
        })
        .collect()
}

/// While partition `epoch` is in force, tells each replica that has not acknowledged its
/// blocked set (unreached, resumed or restarted) as soon as it runs and answers.
async fn enforce(
    cluster: Arc<Mutex<Cluster>>,
    partition: Arc<Mutex<Option<Active>>>,
    epoch: u64,
    mut cancel: watch::Receiver<bool>,
) -> Option<(usize, bool)> {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RETRY_EVERY) => {}
            _ = cancel.changed() => return None,
        }
        let todo: Vec<(u64, String, Vec<u64>)> = {
            let p = partition.lock().unwrap();
            // A partition over (or replaced by another): nothing left to enforce.
            let p = p.as_ref().filter(|p| p.epoch == epoch)?;
            let c = cluster.lock().unwrap();
            let running = c.running();
            p.pending
                .iter()
                .filter(|id| running.contains(id))
                .map(|id| (*id, c.addrs()[id].clone(), p.blocked[id].clone()))
                .collect()
        };
        for (id, addr, blocked) in todo {
            if admin::set_partition(&addr, blocked).await.is_ok()
                && let Some(p) = partition.lock().unwrap().as_mut()
                && p.epoch == epoch
            {
                p.pending.remove(&id);
            }
        }
    }
}

/// After `d`, heals partition `epoch` on every running replica, retrying each until it
/// acknowledges (or the run is interrupted, or [`HEAL_LIMIT`] passes). Returns the fault's
/// record index and whether every running replica healed.
async fn heal_after(
    cluster: Arc<Mutex<Cluster>>,
    partition: Arc<Mutex<Option<Active>>>,
    epoch: u64,
    d: Duration,
    index: usize,
    mut cancel: watch::Receiver<bool>,
) -> Option<(usize, bool)> {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = cancel.changed() => {}
    }
    {
        let mut p = partition.lock().unwrap();
        if p.as_ref().is_none_or(|p| p.epoch != epoch) {
            return Some((index, true));
        }
        *p = None;
    }
    let deadline = Instant::now() + HEAL_LIMIT;
    let mut left: BTreeSet<u64> = cluster.lock().unwrap().addrs().keys().copied().collect();
    loop {
        // A replica that is not running holds no blocked set (a restart starts without one).
        let todo: Vec<(u64, String)> = {
            let c = cluster.lock().unwrap();
            let running = c.running();
            left.retain(|id| running.contains(id));
            left.iter().map(|id| (*id, c.addrs()[id].clone())).collect()
        };
        for (id, addr) in todo {
            if admin::set_partition(&addr, vec![]).await.is_ok() {
                left.remove(&id);
            }
        }
        if left.is_empty() {
            return Some((index, true));
        }
        if Instant::now() > deadline || *cancel.borrow() {
            eprintln!("loadgen: could not heal nodes {left:?}");
            return Some((index, false));
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// Fills in each fault's unavailability window from the history: the time from the fault to
/// the first acknowledgement of a write (`send_message`) sent after it.
pub fn measure_unavailability(records: &mut [FaultRecord], history: &[Event]) {
    for r in records.iter_mut().filter(|r| r.node.is_some()) {
        r.unavailable_ms = history
            .iter()
            .filter_map(|e| match e {
                Event::Send {
                    outcome: Outcome::Ok,
                    invoke_us,
                    complete_us,
                    ..
                } if *invoke_us >= r.at_us => Some(*complete_us),
                _ => None,
            })
            .min()
            .map(|done| ((done - r.at_us) as f64 / 1000.0 * 10.0).round() / 10.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailability_runs_to_the_first_write_acknowledged_after_the_fault() {
        let send = |done: u64, outcome| Event::Send {
            client: 1,
            invoke_us: done - 100,
            complete_us: done,
            outcome,
            chat: 1,
            user: 1,
            key: format!("k{done}"),
            sent_us: 0,
            message_id: None,
        };
        let history = vec![
            send(900_000, Outcome::Ok),
            // Sent before the fault, acknowledged after it: does not count.
            send(1_000_050, Outcome::Ok),
            send(1_500_000, Outcome::Unknown),
            send(2_300_000, Outcome::Ok),
            send(2_100_000, Outcome::Ok),
        ];
        let mut records = vec![FaultRecord {
            at_s: 1.0,
            action: Action::Kill,
            target: "leader".into(),
            node: Some(1),
            unavailable_ms: None,
            error: None,
            unreached: vec![],
            healed: None,
            at_us: 1_000_000,
        }];
        measure_unavailability(&mut records, &history);
        assert_eq!(records[0].unavailable_ms, Some(1100.0));
    }

    #[test]
    fn partitions_block_both_ways_and_pick_their_side() {
        let all = [1, 2, 3, 4, 5];
        assert_eq!(side(&all, Some(3), Target::Minority).unwrap(), vec![3, 1]);
        assert_eq!(
            side(&all, Some(3), Target::Majority).unwrap(),
            vec![3, 1, 2]
        );
        assert_eq!(side(&all, Some(3), Target::Leader).unwrap(), vec![3]);
        assert!(side(&all, None, Target::Leader).is_err());
        let b = blocked_sets(&all, &[3, 1]);
        assert_eq!(b[&3], vec![2, 4, 5]);
        assert_eq!(b[&1], vec![2, 4, 5]);
        assert_eq!(b[&4], vec![3, 1]);
    }
}
