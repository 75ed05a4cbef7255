//! Talking to the cluster: gRPC connections and what a failed call counts as. Status polls and
//! leader discovery are the cluster crate's ([`telegraft::admin`]), one rule for every caller.
//!
//! Every load-generating user owns one HTTP/2 connection (a tonic [`Channel`]) to one replica,
//! so the load is spread like real clients' would be and no connection is a shared bottleneck.
//! A call either succeeds or fails with a [`Failure`]: the gRPC status code the cluster
//! answered, or `Timeout` when the generator gave up waiting (`load.timeout`). Errors are
//! counted by that name in results; none is dropped.

use std::time::Duration;

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
