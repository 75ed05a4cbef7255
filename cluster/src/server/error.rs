//! The server's two error types, and the one mapping from a request's failure to a gRPC
//! status.
//!
//! - [`ServerError`]: the replica could not start or serve (bad configuration, a disk or
//!   database that fails at startup, a port it cannot bind). Returned by [`super::run`].
//! - [`RequestError`]: one client or peer request failed. Actors reply with it, services
//!   return it, and `From<RequestError> for tonic::Status` below is the only place that
//!   picks a status code.
//!
//! Failures of the node's own disk or database at run time are neither: they stop the
//! process (see `fatal.rs`).

use tonic::Status;

use crate::chat::{ChatError, StoreError};
use crate::raft::NodeId;
use crate::storage::StorageError;

/// Why a replica could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("bad configuration: {0}")]
    Config(String),
    #[error("metrics listener on {addr}: {source}")]
    MetricsListen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Why one request failed. Deterministic rejections ([`RequestError::Rejected`]) are the
/// same on every replica; the rest say something about this replica or the cluster now,
/// and a retry may succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The state machine rejected the command (bad input, unknown id, ...).
    #[error(transparent)]
    Rejected(#[from] ChatError),
    #[error("not the leader")]
    NotLeader { leader: Option<NodeId> },
    #[error("leadership changed before the write committed; it was not applied")]
    NotCommitted,
    #[error("the node is shutting down")]
    Stopped,
    /// The write may or may not have been applied (a snapshot overtook it, or the node
    /// stopped). Retry with the same write id to be safe.
    #[error("the write's outcome is unknown")]
    OutcomeUnknown,
    /// No answer within the request timeout: the outcome is unknown too.
    #[error("the outcome is unknown (timed out)")]
    TimedOut,
    /// Fault injection cut this replica off from the leader it would forward to.
    #[error("partitioned from the leader")]
    PartitionedFromLeader,
    /// Fault injection: a snapshot from a peer this replica is cut off from.
    #[error("partitioned")]
    PartitionedPeer,
    #[error("fault injection is disabled: start the node with --enable-fault-injection")]
    FaultInjectionDisabled,
    /// The replica has `--max-inflight` requests in progress (or a full queue): this one was
    /// not queued. Retry later, or elsewhere.
    #[error("overloaded: too many requests in progress on this replica")]
    Overloaded,
    /// A peer sent bytes that are not a Raft message.
    #[error("{0}")]
    BadPeerMessage(String),
    /// A bug or a misconfiguration of this replica (an unknown node, a bad address).
    #[error("{0}")]
    Internal(String),
    /// No valid credentials: a missing, malformed, forged or expired token, a wrong
    /// password.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials that do not allow this: acting as another user, reading a chat the
    /// caller is not a member of, a Raft message without a node certificate of this cluster.
    #[error("{0}")]
    PermissionDenied(String),
}

/// The single mapping from request failures to gRPC codes.
impl From<RequestError> for Status {
    fn from(e: RequestError) -> Status {
        match e {
            RequestError::Rejected(ChatError::InvalidArgument(m)) => Status::invalid_argument(m),
            RequestError::Rejected(ChatError::NotFound(m)) => Status::not_found(m),
            RequestError::Rejected(ChatError::AlreadyExists(m)) => Status::already_exists(m),
            RequestError::Rejected(ChatError::FailedPrecondition(m)) => {
                Status::failed_precondition(m)
            }
            RequestError::NotLeader { .. } => Status::unavailable("no leader is available"),
            RequestError::NotCommitted
            | RequestError::Stopped
            | RequestError::PartitionedFromLeader
            | RequestError::PartitionedPeer => Status::unavailable(e.to_string()),
            RequestError::OutcomeUnknown | RequestError::TimedOut => {
                Status::deadline_exceeded(e.to_string())
            }
            RequestError::FaultInjectionDisabled => Status::permission_denied(e.to_string()),
            RequestError::Overloaded => Status::resource_exhausted(e.to_string()),
            RequestError::BadPeerMessage(m) => Status::invalid_argument(m),
            RequestError::Internal(m) => Status::internal(m),
            RequestError::Unauthenticated(m) => Status::unauthenticated(m),
            RequestError::PermissionDenied(m) => Status::permission_denied(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn codes_clients_rely_on() {
        let code = |e: RequestError| Status::from(e).code();
        let rejected = |e: ChatError| code(RequestError::Rejected(e));
        assert_eq!(
            rejected(ChatError::InvalidArgument("x".into())),
            Code::InvalidArgument
        );
        assert_eq!(rejected(ChatError::NotFound("x".into())), Code::NotFound);
        assert_eq!(
            rejected(ChatError::AlreadyExists("x".into())),
            Code::AlreadyExists
        );
        assert_eq!(
            rejected(ChatError::FailedPrecondition("x".into())),
            Code::FailedPrecondition
        );
        // Retryable: the write was not applied, or nobody could take it.
        for e in [
            RequestError::NotLeader { leader: None },
            RequestError::NotCommitted,
            RequestError::Stopped,
            RequestError::PartitionedFromLeader,
        ] {
            assert_eq!(code(e), Code::Unavailable);
        }
        // Indeterminate: retry with the same write id.
        assert_eq!(code(RequestError::OutcomeUnknown), Code::DeadlineExceeded);
        assert_eq!(code(RequestError::TimedOut), Code::DeadlineExceeded);
        assert_eq!(
            code(RequestError::FaultInjectionDisabled),
            Code::PermissionDenied
        );
        assert_eq!(
            code(RequestError::Unauthenticated("x".into())),
            Code::Unauthenticated
        );
        assert_eq!(
            code(RequestError::PermissionDenied("x".into())),
            Code::PermissionDenied
        );
        // Overload: refused at once, nothing was queued.
        assert_eq!(code(RequestError::Overloaded), Code::ResourceExhausted);
    }
}
