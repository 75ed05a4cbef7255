//! Talking to the cluster: gRPC connections, leader discovery, and what a failed call counts as.
//!
//! Every load-generating user owns one HTTP/2 connection (a tonic [`Channel`]) to one replica,
//! so the load is spread like real clients' would be and no connection is a shared bottleneck.
//! A call either succeeds or fails with a [`Failure`]: the gRPC status code the cluster
//! answered, or `Timeout` when the generator gave up waiting (`load.timeout`). Errors are
//! counted by that name in results; none is dropped.

use std::time::{Duration, Instant};

use telegraft::proto::admin::StatusRequest;
use telegraft::proto::admin::admin_client::AdminClient;
use telegraft::proto::chat::chat_client::ChatClient;
use tonic::transport::{Channel, Endpoint};

/// Why a call did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The cluster (or the transport) answered with this status code.
    Status(tonic::Code),
    /// No answer within `load.timeout`: the call may or may not have taken effect.
    Timeout,
}

impl Failure {
    /// The name errors are counted under: the gRPC code's name (`Unavailable`,
    /// `DeadlineExceeded`, ...) or `Timeout`.
    pub fn name(&self) -> String {
        match self {
            Failure::Status(code) => format!("{code:?}"),
            Failure::Timeout => "Timeout".into(),
        }
    }

    /// A numeric code for Goose's status-code table: the gRPC code, or 1000 for a timeout.
    pub fn number(&self) -> u16 {
        match self {
            Failure::Status(code) => *code as u16,
            Failure::Timeout => 1000,
        }
    }

    pub fn from_status(status: &tonic::Status) -> Failure {
        Failure::Status(status.code())
    }
}

fn endpoint(addr: &str) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true))
}

/// Opens a chat connection to one replica (`127.0.0.1:7001`).
pub async fn connect(addr: &str) -> anyhow::Result<ChatClient<Channel>> {
    let channel = endpoint(addr)?
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("connecting to {addr}: {e}"))?;
    Ok(ChatClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}

/// One replica's view, from its Admin.Status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub addr: String,
    pub node_id: u64,
    pub role: String,
    pub term: u64,
    pub leader_id: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub state_digest: String,
    pub pid: u32,
}

/// Asks one replica for its status.
pub async fn status(addr: &str) -> anyhow::Result<NodeView> {
    let channel = endpoint(addr)?
        .timeout(Duration::from_secs(2))
        .connect()
        .await?;
    let s = AdminClient::new(channel)
        .status(StatusRequest {})
        .await?
        .into_inner();
    Ok(NodeView {
        addr: addr.to_string(),
        node_id: s.node_id,
        role: s.role,
        term: s.term,
        leader_id: s.leader_id,
        commit_index: s.commit_index,
        applied_index: s.applied_index,
        state_digest: s.state_digest,
        pid: s.pid,
    })
}

/// Tells a replica to drop Raft messages from `blocked` (fault injection; an empty list
/// heals). The replica must have been started with `--enable-fault-injection`.
pub async fn set_partition(addr: &str, blocked: Vec<u64>) -> anyhow::Result<()> {
    let channel = endpoint(addr)?
        .timeout(Duration::from_secs(2))
        .connect()
        .await?;
    AdminClient::new(channel)
        .set_partition(telegraft::proto::admin::SetPartitionRequest { blocked })
        .await?;
    Ok(())
}

/// The status of each of `addrs` that answers.
pub async fn statuses(addrs: &[String]) -> Vec<NodeView> {
    let mut views = Vec::new();
    for addr in addrs {
        views.extend(status(addr).await.ok());
    }
    views
}

/// The replica that calls itself leader in the highest term (a deposed leader that has not
/// noticed yet is in an older term).
pub fn newest_leader(views: &[NodeView]) -> Option<&NodeView> {
    views
        .iter()
        .filter(|v| v.role == "leader")
        .max_by_key(|v| v.term)
}

/// Waits until one replica is leader and every replica that answers agrees on it; returns
/// the leader's address. Fails after `timeout`, saying what each replica last reported.
pub async fn wait_for_leader(addrs: &[String], timeout: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut views = Vec::new();
        let mut last = Vec::new();
        for addr in addrs {
            match status(addr).await {
                Ok(v) => {
                    last.push(format!("{addr}: {} term {}", v.role, v.term));
                    views.push(v);
                }
                Err(e) => last.push(format!("{addr}: {e}")),
            }
        }
        if let Some(leader) = views.iter().find(|v| v.role == "leader") {
            let agreed = views
                .iter()
                .all(|v| v.leader_id == leader.node_id && v.term == leader.term);
            if agreed && views.len() * 2 > addrs.len() {
                return Ok(leader.addr.clone());
            }
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "no leader after {}: {}",
                humantime::format_duration(timeout),
                last.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a call with the generator's timeout; a late answer is a [`Failure::Timeout`].
pub async fn with_timeout<T>(
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(Failure::from_status(&status)),
        Err(_) => Err(Failure::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_named_by_grpc_code() {
        assert_eq!(
            Failure::Status(tonic::Code::Unavailable).name(),
            "Unavailable"
        );
        assert_eq!(Failure::Status(tonic::Code::Unavailable).number(), 14);
        assert_eq!(
            Failure::Status(tonic::Code::DeadlineExceeded).name(),
            "DeadlineExceeded"
        );
        assert_eq!(Failure::Timeout.name(), "Timeout");
    }

    #[tokio::test]
    async fn a_call_that_outlives_the_timeout_is_a_timeout() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, tonic::Status>(tonic::Response::new(()))
        };
        let r = with_timeout(Duration::from_millis(10), slow).await;
        assert_eq!(r, Err(Failure::Timeout));
        let refused = async { Err::<tonic::Response<()>, _>(tonic::Status::not_found("x")) };
        let r = with_timeout(Duration::from_secs(1), refused).await;
        assert_eq!(r, Err(Failure::Status(tonic::Code::NotFound)));
    }
}
