//! The one status poller of a run: every `Admin.Status` call `loadgen` makes goes through
//! here, so however many replicas there are, each gets at most [`StatusPoller::EVERY`]'s
//! worth (5 calls a second).
//!
//! One task per replica asks it for its status, publishes the answer (or that it did not
//! answer), and waits until 200 ms after the call began before the next; a call to a paused
//! replica that hangs only delays that replica's next poll. Everything that wants to know
//! about the cluster reads the latest [`Snapshot`]: the wait for the first leader, the
//! leader watch, fault targets, the users that follow the cluster after a failure (through
//! the [`Topology`] it publishes), the wait after the load, and the cluster's state at the
//! end. Who leads is always [`telegraft::admin::newest_leader`]'s answer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use telegraft::admin::{self, NodeView};
use tokio::sync::watch;

use crate::load::Topology;
use crate::scenario::System;

/// Every replica's latest answer.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub replicas: BTreeMap<String, Polled>,
}

/// One replica's latest poll.
#[derive(Clone, Debug, Default)]
pub struct Polled {
    /// Its answer; `None` when the latest call failed.
    pub view: Option<NodeView>,
    /// Polls of it finished so far.
    pub polls: u64,
}

impl Snapshot {
    /// The views of the replicas that answered their latest poll.
    pub fn answering(&self) -> Vec<NodeView> {
        self.replicas
            .values()
            .filter_map(|p| p.view.clone())
            .collect()
    }

    /// The replica that calls itself leader in the highest term.
    pub fn leader(&self) -> Option<NodeView> {
        admin::newest_leader(&self.answering()).cloned()
    }

    /// The leader a majority of `of` replicas agrees on, among those in `among` (all when
    /// `None`): a majority answers, and every replica that answers names it, in its term.
    pub fn agreed_leader(&self, among: Option<&[String]>, of: usize) -> Option<NodeView> {
        let views: Vec<NodeView> = self
            .answering()
            .into_iter()
            .filter(|v| among.is_none_or(|a| a.contains(&v.addr)))
            .collect();
        let leader = admin::newest_leader(&views)?;
        let agreed = views
            .iter()
            .all(|v| v.leader_id == leader.node_id && v.term == leader.term);
        (agreed && views.len() * 2 > of).then(|| leader.clone())
    }

    fn topology(&self) -> Topology {
        Topology {
            leader: self.leader().map(|v| v.addr),
            up: self.answering().into_iter().map(|v| v.addr).collect(),
        }
    }

    /// What each replica last said, for error messages.
    pub fn describe(&self) -> String {
        self.replicas
            .iter()
            .map(|(addr, p)| match &p.view {
                Some(v) => format!("{addr}: {} term {}", v.role_name(), v.term),
                None => format!("{addr}: no answer"),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Polls every replica until stopped (or dropped).
pub struct StatusPoller {
    snapshot: watch::Receiver<Snapshot>,
    topology: watch::Receiver<Topology>,
    stop: watch::Sender<bool>,
    replicas: usize,
}

impl StatusPoller {
    /// The least time between two Status calls to one replica.
    pub const EVERY: Duration = Duration::from_millis(200);

    /// Starts polling every one of `endpoints`, replicas of `system`.
    pub fn start(endpoints: &[String], system: System) -> StatusPoller {
        let (snap_tx, snapshot) = watch::channel(Snapshot::default());
        let (topo_tx, topology) = watch::channel(Topology::default());
        let (stop, stopped) = watch::channel(false);
        let snap_tx = std::sync::Arc::new(snap_tx);
        let topo_tx = std::sync::Arc::new(topo_tx);
        for addr in endpoints {
            tokio::spawn(poll(
                addr.clone(),
                snap_tx.clone(),
                topo_tx.clone(),
                stopped.clone(),
                system,
            ));
        }
        StatusPoller {
            snapshot,
            topology,
            stop,
            replicas: endpoints.len(),
        }
    }

    /// How many replicas it polls.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The latest answers.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.borrow().clone()
    }

    /// Follows every new answer.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.snapshot.clone()
    }

    /// Who leads and who answers, for the load's users.
    pub fn topology(&self) -> watch::Receiver<Topology> {
        self.topology.clone()
    }

    /// Waits until every replica has been polled again since this call (or `limit` has
    /// passed), and returns what they said.
    pub async fn fresh(&self, limit: Duration) -> Snapshot {
        let mut rx = self.snapshot.clone();
        let before: BTreeMap<String, u64> = rx
            .borrow_and_update()
            .replicas
            .iter()
            .map(|(a, p)| (a.clone(), p.polls))
            .collect();
        let n = self.replicas;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            {
                let s = rx.borrow_and_update();
                let renewed = s
                    .replicas
                    .iter()
                    .filter(|(a, p)| before.get(*a).is_none_or(|b| p.polls > *b))
                    .count();
                if renewed >= n {
                    return s.clone();
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.snapshot(),
            }
        }
    }

    /// Stops polling.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for StatusPoller {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls one replica until stopped.
async fn poll(
    addr: String,
    snapshot: std::sync::Arc<watch::Sender<Snapshot>>,
    topology: std::sync::Arc<watch::Sender<Topology>>,
    mut stop: watch::Receiver<bool>,
    system: System,
) {
    loop {
        let began = Instant::now();
        let view = tokio::select! {
            r = crate::system::status(system, &addr) => r.ok(),
            _ = stop.changed() => return,
        };
        snapshot.send_modify(|s| {
            let p = s.replicas.entry(addr.clone()).or_default();
            p.view = view;
            p.polls += 1;
        });
        let now = snapshot.borrow().topology();
        topology.send_if_modified(|t| {
            let changed = *t != now;
            *t = now;
            changed
        });
        tokio::select! {
            _ = tokio::time::sleep_until((began + StatusPoller::EVERY).into()) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the Status calls each replica of a fake admin server gets.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_replica_gets_at_most_five_status_calls_a_second() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        use telegraft::proto::admin::admin_server::{Admin, AdminServer};
        use telegraft::proto::admin::*;

        struct Counting(Arc<AtomicU64>);
        #[tonic::async_trait]
        impl Admin for Counting {
            async fn status(
                &self,
                _: tonic::Request<StatusRequest>,
            ) -> Result<tonic::Response<StatusResponse>, tonic::Status> {
                self.0.fetch_add(1, Ordering::Relaxed);
                Ok(tonic::Response::new(StatusResponse {
                    node_id: 1,
                    role_kind: RoleKind::Leader as i32,
                    term: 1,
                    leader_id: 1,
                    ..Default::default()
                }))
            }
            async fn set_partition(
                &self,
                _: tonic::Request<SetPartitionRequest>,
            ) -> Result<tonic::Response<SetPartitionResponse>, tonic::Status> {
                Err(tonic::Status::unimplemented("no"))
            }
        }
        let mut addrs = Vec::new();
        let mut counts = Vec::new();
        for _ in 0..3 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap().to_string());
            let count = Arc::new(AtomicU64::new(0));
            counts.push(count.clone());
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(AdminServer::new(Counting(count)))
                    .serve_with_incoming(incoming),
            );
        }
        let poller = StatusPoller::start(&addrs, System::Telegraft);
        // However many callers want to know who leads, they read the same snapshot.
        for _ in 0..5 {
            let _ = poller.snapshot().leader();
            let _ = poller.fresh(Duration::from_secs(1)).await;
        }
        let began = Instant::now();
        let at_start: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let secs = began.elapsed().as_secs_f64();
        for (c, s) in counts.iter().zip(at_start) {
            let per_s = (c.load(Ordering::Relaxed) - s) as f64 / secs;
            assert!(per_s <= 5.5, "{per_s} Status calls a second");
        }
        assert!(poller.snapshot().leader().is_some());
        poller.stop();
    }
}
