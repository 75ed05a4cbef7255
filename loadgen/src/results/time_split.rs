//! "Where the time goes": a successful `send_message`'s mean latency, as the client saw it,
//! split into the parts the replicas measured over the measured window.
//!
//! **Why means.** Percentiles do not add up; means do. The client's mean service time is the
//! sum of the mean time of each part of the call's path, so a table of means can say which
//! part to work on, which a table of p99s cannot.
//!
//! **From what.** Each second [`crate::sample`] turns every replica's histograms into a rate
//! and a mean over that second (`metrics.csv`); a rate times a mean is that second's sum. The
//! leader of each second is the replica whose `telegraft_raft_role` gauge said 2. Then, over
//! the seconds of the measured window (`t_s >= 1`):
//! - **at the leader** (`m_L`): the leader's mean gRPC handling time of successful
//!   SendMessage calls (`telegraft_grpc_server_handling_seconds`), which counts every call
//!   once: the ones sent to it and the ones followers forwarded to it;
//! - **forwarding**: what followers' SendMessage handling took beyond the leader's mean,
//!   spread over every call: `(S_F - N_F * m_L) / N_L` (the follower's work, the extra
//!   hop, the wait for a slot on the leader), never below 0;
//! - **proposal to commit**: the leader's mean `telegraft_raft_commit_seconds` (from
//!   handing the proposal to the Raft core to its commit: the leader's fdatasync and a
//!   quorum's acknowledgements), over every proposal, not only messages;
//! - **commit to apply**: the leader's mean `telegraft_raft_apply_seconds` (waiting for the
//!   applier and the SQLite transaction);
//! - **rest in the leader**: `m_L` minus the two above: the service's own work, the queues
//!   into and out of the core actor, the reply;
//! - **outside the replicas**: the client's mean minus `m_L` and forwarding: the client
//!   library, the network and the HTTP/2 layers outside the server's handler.
//!
//! The parts are estimates from bucketed histograms sampled once a second, so they add up to
//! the client's mean only roughly; "outside the replicas" takes up the difference.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::sample::MetricRow;

/// `time_split` in `summary.json`, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TimeSplit {
    /// The operation split (`send_message`).
    pub op: String,
    /// Its mean service time as the client measured it (successful calls, from the actual
    /// send).
    pub client_ms: f64,
    /// Followers' extra time on the calls they forwarded, spread over every call.
    pub forwarding_ms: f64,
    /// The leader: proposal handed to the Raft core to its commit.
    pub proposal_to_commit_ms: f64,
    /// The leader: commit to applied in the state machine.
    pub commit_to_apply_ms: f64,
    /// The rest: `rest_in_leader_ms + outside_replicas_ms`.
    pub rest_ms: f64,
    /// The leader's handling time outside the two above (service, queues, reply).
    pub rest_in_leader_ms: f64,
    /// The client, the network and gRPC outside the replicas' handlers.
    pub outside_replicas_ms: f64,
    /// Of the calls the leader handled, the share followers had forwarded to it, in %.
    pub forwarded_pct: f64,
}

const HANDLING: &str = "telegraft_grpc_server_handling_seconds";
const COMMIT: &str = "telegraft_raft_commit_seconds";
const APPLY: &str = "telegraft_raft_apply_seconds";
const ROLE: &str = "telegraft_raft_role";
const LEADER: f64 = 2.0;

/// A series name of `metrics.csv` split into its name and labels:
/// `f_mean{k=v,k2=v2}` -> (`f_mean`, {k: v, k2: v2}).
fn split(series: &str) -> (&str, BTreeMap<&str, &str>) {
    match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => {
            let labels = rest
                .trim_end_matches('}')
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .collect();
            (name, labels)
        }
    }
}

/// Count and sum (seconds) of one histogram's observations.
#[derive(Clone, Copy, Default)]
struct Acc {
    n: f64,
    sum: f64,
}

impl Acc {
    fn add(&mut self, rate: f64, mean: f64) {
        self.n += rate;
        self.sum += rate * mean;
    }
    fn mean(&self) -> Option<f64> {
        (self.n > 0.0).then(|| self.sum / self.n)
    }
}

/// `(node, t_s)` -> (rate, mean) of one histogram.
type PerSecond = BTreeMap<(String, i64), (f64, f64)>;

/// The split of `op_method`'s (`SendMessage`) time from the measured window's metrics, with
/// `client_mean_ms` the client's mean service time of it; `None` when the replicas' metrics
/// show no leader handling a successful call of it (metrics off, `--target`, nothing sent).
pub fn of(op: &str, method: &str, client_mean_ms: f64, metrics: &[MetricRow]) -> Option<TimeSplit> {
    let mut leaders: BTreeMap<i64, &str> = BTreeMap::new();
    let (mut handling, mut commit, mut apply) =
        (PerSecond::new(), PerSecond::new(), PerSecond::new());
    for m in metrics.iter().filter(|m| m.t_s >= 1) {
        let (name, labels) = split(&m.metric);
        if name == ROLE {
            if m.value == LEADER {
                leaders.insert(m.t_s, &m.node);
            }
            continue;
        }
        let (family, stat) = match name.rsplit_once('_') {
            Some((f, s @ ("rate" | "mean"))) => (f, s),
            _ => continue,
        };
        let table = match family {
            HANDLING
                if labels.get("method") == Some(&method) && labels.get("code") == Some(&"OK") =>
            {
                &mut handling
            }
            COMMIT => &mut commit,
            APPLY => &mut apply,
            _ => continue,
        };
        let cell = table.entry((m.node.clone(), m.t_s)).or_insert((0.0, 0.0));
        if stat == "rate" {
            cell.0 = m.value;
        } else {
            cell.1 = m.value;
        }
    }
    let (mut at_leader, mut at_followers) = (Acc::default(), Acc::default());
    for ((node, t), (rate, mean)) in &handling {
        match leaders.get(t) {
            Some(l) if *l == node => at_leader.add(*rate, *mean),
            Some(_) => at_followers.add(*rate, *mean),
            None => {} // no leader known that second: it cannot be attributed
        }
    }
    let leader_only = |table: &PerSecond| {
        let mut acc = Acc::default();
        for ((node, t), (rate, mean)) in table {
            if leaders.get(t).is_some_and(|l| *l == node) {
                acc.add(*rate, *mean);
            }
        }
        acc.mean().unwrap_or(0.0)
    };
    let m_l = at_leader.mean()?;
    let forwarding = ((at_followers.sum - at_followers.n * m_l) / at_leader.n).max(0.0);
    let (to_commit, to_apply) = (leader_only(&commit), leader_only(&apply));
    let ms = |s: f64| (s * 1e6).round() / 1e3;
    let rest_in_leader = m_l - to_commit - to_apply;
    let outside = client_mean_ms / 1e3 - m_l - forwarding;
    Some(TimeSplit {
        op: op.into(),
        client_ms: client_mean_ms,
        forwarding_ms: ms(forwarding),
        proposal_to_commit_ms: ms(to_commit),
        commit_to_apply_ms: ms(to_apply),
        rest_ms: ms(rest_in_leader + outside),
        rest_in_leader_ms: ms(rest_in_leader),
        outside_replicas_ms: ms(outside),
        forwarded_pct: ((at_followers.n / at_leader.n * 100.0).min(100.0) * 10.0).round() / 10.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(t_s: i64, node: &str, metric: &str, value: f64) -> MetricRow {
        MetricRow {
            t_s,
            node: node.into(),
            metric: metric.into(),
            value,
        }
    }

    fn send(stat: &str) -> String {
        format!("{HANDLING}_{stat}{{service=telegraft.chat.v1.Chat,method=SendMessage,code=OK}}")
    }

    /// Two seconds, leader node-1 then node-2 (a leader change): each second the leader
    /// handles 100 calls at 4 ms (half of them forwarded by the follower, which took 6 ms
    /// for each), commits in 2 ms and applies in 1 ms; the client saw 7 ms.
    fn two_seconds() -> Vec<MetricRow> {
        let mut rows = Vec::new();
        for (t, leader, follower) in [(1, "node-1", "node-2"), (2, "node-2", "node-1")] {
            rows.push(row(t, leader, ROLE, 2.0));
            rows.push(row(t, follower, ROLE, 0.0));
            rows.push(row(t, leader, &send("rate"), 100.0));
            rows.push(row(t, leader, &send("mean"), 0.004));
            rows.push(row(t, follower, &send("rate"), 50.0));
            rows.push(row(t, follower, &send("mean"), 0.006));
            rows.push(row(t, leader, &format!("{COMMIT}_rate"), 110.0));
            rows.push(row(t, leader, &format!("{COMMIT}_mean"), 0.002));
            rows.push(row(t, leader, &format!("{APPLY}_rate"), 110.0));
            rows.push(row(t, leader, &format!("{APPLY}_mean"), 0.001));
            // A follower's own applies and a failed call's time are not the leader's work.
            rows.push(row(t, follower, &format!("{APPLY}_rate"), 110.0));
            rows.push(row(t, follower, &format!("{APPLY}_mean"), 0.5));
            rows.push(row(
                t,
                leader,
                &format!(
                    "{HANDLING}_mean{{service=telegraft.chat.v1.Chat,method=SendMessage,code=UNAVAILABLE}}"
                ),
                9.0,
            ));
        }
        rows
    }

    #[test]
    fn the_client_mean_splits_into_the_replicas_parts() {
        let s = of("send_message", "SendMessage", 7.0, &two_seconds()).unwrap();
        // Forwarding: (100 x 6 ms - 100 x 4 ms) / 200 calls = 1 ms.
        assert_eq!(s.forwarding_ms, 1.0);
        assert_eq!(s.proposal_to_commit_ms, 2.0);
        assert_eq!(s.commit_to_apply_ms, 1.0);
        assert_eq!(s.rest_in_leader_ms, 1.0);
        // 7 - 4 at the leader - 1 forwarding.
        assert_eq!(s.outside_replicas_ms, 2.0);
        assert_eq!(s.rest_ms, 3.0);
        assert_eq!(s.forwarded_pct, 50.0);
        let parts = s.forwarding_ms + s.proposal_to_commit_ms + s.commit_to_apply_ms + s.rest_ms;
        assert!((parts - s.client_ms).abs() < 1e-9);
    }

    #[test]
    fn warm_up_seconds_and_seconds_without_a_known_leader_do_not_count() {
        let mut rows = two_seconds();
        // A warm-up second (t_s 0) and a second with no leader, both absurdly slow.
        for t in [0, 3] {
            rows.push(row(t, "node-1", &send("rate"), 1000.0));
            rows.push(row(t, "node-1", &send("mean"), 5.0));
        }
        rows.push(row(0, "node-1", ROLE, 2.0));
        let s = of("send_message", "SendMessage", 7.0, &rows).unwrap();
        assert_eq!(s.forwarding_ms, 1.0);
        assert_eq!(s.outside_replicas_ms, 2.0);
    }

    #[test]
    fn no_leader_metrics_give_no_split() {
        assert_eq!(of("send_message", "SendMessage", 7.0, &[]), None);
        let followers_only: Vec<MetricRow> = two_seconds()
            .into_iter()
            .filter(|r| r.metric != ROLE)
            .collect();
        assert_eq!(
            of("send_message", "SendMessage", 7.0, &followers_only),
            None
        );
    }
}
