//! Who leads: waiting for the first leader, the leader a fault should hit, and the leader
//! watch that follows changes through the run. Every answer comes from the run's one
//! [`StatusPoller`] (and so from [`telegraft::admin`], the cluster crate's one rule for "who
//! leads": the replica that calls itself leader in the highest term); this module only
//! decides when to look.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::lifecycle::Cluster;
use super::poller::{Snapshot, StatusPoller};

/// How long a fault waits for a leader to hit.
const FAULT_LEADER_WAIT: Duration = Duration::from_secs(5);

/// Waits until a majority of `endpoints` agrees on a leader; returns its address.
pub async fn wait_for_leader(poller: &StatusPoller, timeout: Duration) -> anyhow::Result<String> {
    let n = poller.replicas();
    wait_agreed(poller.subscribe(), None, n, timeout)
        .await
        .map(|v| v.addr)
        .map_err(|last| {
            anyhow::anyhow!(
                "no leader after {:.1} s: {}",
                timeout.as_secs_f64(),
                last.describe()
            )
        })
}

/// Waits until every replica answers its status poll: a cluster the generator started must be
/// whole before the load, or a replica that failed to start (its port taken, say) would
/// silently turn the run into one with a replica down.
pub async fn wait_for_all(poller: &StatusPoller, timeout: Duration) -> anyhow::Result<()> {
    let n = poller.replicas();
    let mut rx = poller.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if rx.borrow_and_update().answering().len() == n {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => anyhow::bail!(
                "not every replica started within {:.1} s (see its log under nodes/): {}",
                timeout.as_secs_f64(),
                rx.borrow().describe()
            ),
        }
    }
}

/// Waits until a majority of `of` replicas among `among` agrees on a leader; on timeout,
/// returns the last snapshot.
async fn wait_agreed(
    mut rx: watch::Receiver<Snapshot>,
    among: Option<&[String]>,
    of: usize,
    timeout: Duration,
) -> Result<telegraft::admin::NodeView, Snapshot> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(l) = rx.borrow_and_update().agreed_leader(among, of) {
            return Ok(l);
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => return Err(rx.borrow().clone()),
        }
    }
}

/// The leader among the replicas of `cluster` that run now: the newest leader if one calls
/// itself leader already, else (an election is under way) the one the running replicas come
/// to agree on within [`FAULT_LEADER_WAIT`].
pub async fn running_leader(cluster: &Mutex<Cluster>, poller: &StatusPoller) -> Option<u64> {
    let running = cluster.lock().unwrap().running_addrs();
    let snap = poller.snapshot();
    let views: Vec<_> = snap
        .answering()
        .into_iter()
        .filter(|v| running.contains(&v.addr))
        .collect();
    if let Some(v) = telegraft::admin::newest_leader(&views) {
        return Some(v.node_id);
    }
    wait_agreed(
        poller.subscribe(),
        Some(running.as_slice()),
        running.len(),
        FAULT_LEADER_WAIT,
    )
    .await
    .ok()
    .map(|v| v.node_id)
}

/// A leader seen during the run: from when (wall clock), which node, in which term.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LeaderSeen {
    pub at: SystemTime,
    pub node: u64,
    pub term: u64,
}

/// Follows the poller's answers through the run and keeps one entry per change of leader
/// (only replicas that serve Admin.Status answer; a fake target simply yields no changes). A
/// deposed leader that still calls itself leader in an older term, seen while the new one
/// missed a poll, is not a change.
pub struct LeaderWatch {
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<LeaderSeen>>,
}

impl LeaderWatch {
    pub fn start(poller: &StatusPoller) -> LeaderWatch {
        let (stop, stopped) = watch::channel(false);
        LeaderWatch {
            stop,
            task: tokio::spawn(watch_leader(poller.subscribe(), stopped)),
        }
    }

    /// Stops watching; returns every leader seen, in order.
    pub async fn finish(self) -> Vec<LeaderSeen> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

async fn watch_leader(
    mut snapshots: watch::Receiver<Snapshot>,
    mut stop: watch::Receiver<bool>,
) -> Vec<LeaderSeen> {
    let mut seen: Vec<LeaderSeen> = Vec::new();
    loop {
        let leader = snapshots.borrow_and_update().leader();
        if let Some(v) = leader
            && seen
                .last()
                .is_none_or(|l| (l.node, l.term) != (v.node_id, v.term) && v.term >= l.term)
        {
            seen.push(LeaderSeen {
                at: SystemTime::now(),
                node: v.node_id,
                term: v.term,
            });
        }
        tokio::select! {
            r = snapshots.changed() => if r.is_err() { return seen },
            _ = stop.changed() => return seen,
        }
    }
}
