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
//! Each fault is recorded with its time; after the run, its unavailability window is measured
//! from the history: from the fault to the first acknowledgement of a write sent after it
//! (a write sent before the fault may still be acknowledged just after it, which says
//! nothing about the cluster after the fault).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use telegraft::admin;
use telegraft::launcher::LocalCluster;

use super::leader;
use crate::history::{Event, Outcome};
use crate::scenario::{Action, Fault, Target};

/// A fault as it happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FaultRecord {
    /// Seconds from the start of the measured window (negative during warm-up).
    pub at_s: f64,
    pub action: Action,
    /// The target as the scenario named it (`leader`, `node 2`, ...).
    pub target: String,
    /// The replica it hit; `None` when it could not be carried out (see `error`).
    pub node: Option<u64>,
    /// From the fault to the first acknowledgement of a write sent after it; `None` if none
    /// was.
    pub unavailable_ms: Option<f64>,
    /// Why the fault could not be carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Microseconds from the run's start (the history's time base).
    #[serde(skip)]
    pub at_us: u64,
}

/// Carries out `faults` against `cluster`, each at its time from the run's `start`, and
/// returns what happened. Pauses and partitions are lifted before this returns.
pub async fn inject(
    cluster: Arc<Mutex<LocalCluster>>,
    faults: Vec<Fault>,
    start: Arc<OnceLock<Instant>>,
    warmup: Duration,
) -> Vec<FaultRecord> {
    while start.get().is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut injector = Injector {
        cluster,
        start: *start.get().unwrap(),
        warmup,
        killed: None,
        lifts: Vec::new(),
    };
    let mut faults = faults;
    faults.sort_by_key(|f| f.at.0);
    let mut records = Vec::new();
    for f in faults {
        tokio::time::sleep_until((injector.start + f.at.0).into()).await;
        records.push(match f.action {
            Action::Partition => injector.partition(&f).await,
            Action::Kill | Action::Restart | Action::Pause => injector.signal(&f).await,
        });
    }
    for lift in injector.lifts {
        let _ = lift.await;
    }
    records
}

/// The state of one run's fault injection.
struct Injector {
    cluster: Arc<Mutex<LocalCluster>>,
    /// The run's zero, and the warm-up (fault times are reported from the measured window).
    start: Instant,
    warmup: Duration,
    /// The replica the latest kill hit.
    killed: Option<u64>,
    /// Tasks that lift a pause or a partition after its `for`.
    lifts: Vec<tokio::task::JoinHandle<()>>,
}

impl Injector {
    /// The replica a kill, restart or pause hits, resolved now.
    async fn resolve(&self, target: Target) -> Option<u64> {
        match target {
            Target::Leader => leader::running_leader(&self.cluster).await,
            Target::Follower => {
                let lead = leader::running_leader(&self.cluster).await;
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
        let fired = self.start.elapsed();
        let result = match node {
            None => Err(format!("no replica is {}", f.target)),
            Some(id) => {
                let mut c = self.cluster.lock().unwrap();
                match f.action {
                    Action::Kill => c.kill(id).map(|_| self.killed = Some(id)),
                    Action::Restart => c.restart(id),
                    Action::Pause => c.pause(id, true),
                    Action::Partition => Err(std::io::Error::other("not a signal")),
                }
                .map_err(|e| e.to_string())
            }
        };
        if let (Ok(()), Action::Pause, Some(id), Some(d)) = (&result, f.action, node, f.duration) {
            let cluster = self.cluster.clone();
            self.lifts.push(tokio::spawn(async move {
                tokio::time::sleep(d.0).await;
                let _ = cluster.lock().unwrap().pause(id, false);
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
        FaultRecord {
            at_s: (at_s * 1000.0).round() / 1000.0,
            action: f.action,
            target: f.target.to_string(),
            node: node.filter(|_| result.is_ok()),
            unavailable_ms: None,
            error: result.err(),
            at_us: fired.as_micros() as u64,
        }
    }

    /// A partition, healed on every replica `for` later.
    async fn partition(&mut self, f: &Fault) -> FaultRecord {
        let result = partition(&self.cluster, f.target).await;
        // The cut is in place once every replica has its blocked set.
        let fired = self.start.elapsed();
        let at_s = self.at_s(fired);
        match &result {
            Ok(side) => eprintln!("loadgen: {at_s:.1} s: partition {side:?} from the rest"),
            Err(e) => eprintln!("loadgen: {at_s:.1} s: partition {}: {e}", f.target),
        }
        if let (Ok(_), Some(d)) = (&result, f.duration) {
            let cluster = self.cluster.clone();
            self.lifts.push(tokio::spawn(async move {
                tokio::time::sleep(d.0).await;
                let addrs: Vec<String> = cluster.lock().unwrap().addrs.values().cloned().collect();
                for a in addrs {
                    let _ = admin::set_partition(&a, vec![]).await;
                }
            }));
        }
        FaultRecord {
            at_s: (at_s * 1000.0).round() / 1000.0,
            action: f.action,
            target: f.target.to_string(),
            node: result.as_ref().ok().and_then(|side| side.first().copied()),
            unavailable_ms: None,
            error: result.err(),
            at_us: fired.as_micros() as u64,
        }
    }

    /// Seconds from the start of the measured window to `fired` (from the run's start).
    fn at_s(&self, fired: Duration) -> f64 {
        fired.as_secs_f64() - self.warmup.as_secs_f64()
    }
}

/// Cuts one side off from the rest: `leader`, `follower` or `node N` alone; `minority`, the
/// leader with followers up to a minority; `majority`, the leader with followers up to a
/// majority (so the followers outside it are the ones cut off). Returns the side.
async fn partition(cluster: &Mutex<LocalCluster>, target: Target) -> Result<Vec<u64>, String> {
    let all: Vec<u64> = cluster.lock().unwrap().addrs.keys().copied().collect();
    let n = all.len();
    let lead = leader::running_leader(cluster).await;
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
    let addrs = cluster.lock().unwrap().addrs.clone();
    for (id, addr) in &addrs {
        let blocked: Vec<u64> = if side.contains(id) {
            all.iter().filter(|o| !side.contains(o)).copied().collect()
        } else {
            side.clone()
        };
        admin::set_partition(addr, blocked)
            .await
            .map_err(|e| format!("node {id}: {e:#}"))?;
    }
    Ok(side)
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
            at_us: 1_000_000,
        }];
        measure_unavailability(&mut records, &history);
        assert_eq!(records[0].unavailable_ms, Some(1100.0));
    }
}
