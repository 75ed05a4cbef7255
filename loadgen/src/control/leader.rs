//! Who leads: waiting for the first leader, the leader a fault should hit, and the leader
//! watch that follows changes through the run. Every answer comes from
//! [`telegraft::admin`], the cluster crate's one rule for "who leads" (the replica that calls
//! itself leader in the highest term); this module only decides when to ask.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use telegraft::admin;
use telegraft::launcher::LocalCluster;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a fault waits for a leader to hit.
const FAULT_LEADER_WAIT: Duration = Duration::from_secs(5);

/// How often the watch asks.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// Waits until a majority of `endpoints` agrees on a leader; returns its address.
pub async fn wait_for_leader(endpoints: &[String], timeout: Duration) -> anyhow::Result<String> {
    let leader = admin::wait_for_leader(endpoints, timeout)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(leader.addr)
}

/// The leader among the replicas of `cluster` that run now: the newest leader if one calls
/// itself leader already, else (an election is under way) the one the replicas come to
/// agree on within [`FAULT_LEADER_WAIT`].
pub async fn running_leader(cluster: &Mutex<LocalCluster>) -> Option<u64> {
    let addrs: Vec<String> = {
        let c = cluster.lock().unwrap();
        c.running().iter().map(|id| c.addrs[id].clone()).collect()
    };
    if let Some(v) = admin::newest_leader(&admin::statuses(&addrs).await) {
        return Some(v.node_id);
    }
    admin::wait_for_leader(&addrs, FAULT_LEADER_WAIT)
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

/// Polls every replica's status through the run and keeps one entry per change of leader
/// (only replicas that serve Admin.Status answer; a fake target simply yields no changes).
pub struct LeaderWatch {
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<LeaderSeen>>,
}

impl LeaderWatch {
    pub fn start(endpoints: Vec<String>) -> LeaderWatch {
        let (stop, stopped) = watch::channel(false);
        LeaderWatch {
            stop,
            task: tokio::spawn(watch_leader(endpoints, stopped)),
        }
    }

    /// Stops watching; returns every leader seen, in order.
    pub async fn finish(self) -> Vec<LeaderSeen> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

async fn watch_leader(endpoints: Vec<String>, mut stop: watch::Receiver<bool>) -> Vec<LeaderSeen> {
    let mut seen: Vec<LeaderSeen> = Vec::new();
    loop {
        let views = admin::statuses(&endpoints).await;
        if let Some(v) = admin::newest_leader(&views)
            && seen
                .last()
                .is_none_or(|l| (l.node, l.term) != (v.node_id, v.term))
        {
            seen.push(LeaderSeen {
                at: SystemTime::now(),
                node: v.node_id,
                term: v.term,
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(WATCH_EVERY) => {}
            _ = stop.changed() => return seen,
        }
    }
}
