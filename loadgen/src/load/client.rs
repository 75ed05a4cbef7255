//! Talking to the cluster: gRPC connections, what a failed call counts as, and how a user
//! follows the cluster when a replica fails ([`Route`]). Status polls and leader discovery
//! are the cluster crate's ([`telegraft::admin`]), one rule for every caller; the generator's
//! one status poller publishes what it saw as a [`Topology`].
//!
//! Every load-generating user owns one HTTP/2 connection (a tonic [`Channel`]) to one replica
//! at a time, so the load is spread like real clients' would be and no connection is a shared
//! bottleneck. A call either succeeds or fails with a [`Failure`]: the gRPC status code the
//! cluster answered, or `Timeout` when the generator gave up waiting (`load.timeout`). Errors
//! are counted by that name in results; none is dropped.
//!
//! **Client behaviour.** A call is made once: the generator does not retry a failed call, so
//! every failure the cluster causes is counted. What a user does *next* is what a
//! well-behaved client would do:
//! - connections are made lazily, on a user's first call to a replica, and remade after a
//!   replica comes back, so a replica that is down at the start dooms nobody;
//! - after a failure that says the replica could not serve (`Unavailable`, `Unknown`,
//!   `Cancelled`, `DeadlineExceeded`, `Internal`, or a `Timeout`), the user backs off (25 ms,
//!   doubling with each failure in a row up to 1 s, reset by a success) and then sends to
//!   another replica: with `routing: any`, the next one the status poller saw answering;
//!   with `routing: leader`, the leader the poller sees now (the replica that calls itself
//!   leader in the highest term; followers' `leader_id` is the hint it follows), looked up
//!   again after every such failure until one is found;
//! - `ResourceExhausted` backs off without moving; the chat state machine's refusals
//!   (`NotFound`, `FailedPrecondition`, ...) change nothing.
//!
//! Sends held back by a back-off still count their latency from the intended send time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use telegraft::proto::chat::chat_client::ChatClient;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use crate::scenario::{Routing, System};
use crate::system::ChatConn;

/// The first back-off after a failure, and the longest.
const BACKOFF_FIRST: Duration = Duration::from_millis(25);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

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

    /// The replica could not serve the call: a client should try another.
    pub fn try_elsewhere(&self) -> bool {
        use tonic::Code;
        matches!(
            self,
            Failure::Timeout
                | Failure::Status(
                    Code::Unavailable
                        | Code::Unknown
                        | Code::Cancelled
                        | Code::DeadlineExceeded
                        | Code::Internal
                )
        )
    }

    /// A client should wait a little before its next call.
    pub fn backs_off(&self) -> bool {
        self.try_elsewhere() || *self == Failure::Status(tonic::Code::ResourceExhausted)
    }
}

/// What the generator's status poller saw last: who leads, and which replicas answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    /// The leader's address, when one calls itself leader.
    pub leader: Option<String>,
    /// The replicas that answered their latest status poll.
    pub up: Vec<String>,
}

/// Where one user sends its calls, and how it moves after failures (see the module docs).
#[derive(Clone)]
pub(crate) struct Route {
    system: System,
    endpoints: Arc<Vec<String>>,
    routing: Routing,
    topology: watch::Receiver<Topology>,
    /// The replica in use, by index into `endpoints`.
    at: usize,
    /// A lazily connected channel per replica, made on first use.
    clients: Vec<Option<ChatConn>>,
    /// The next back-off, and when the current one ends.
    backoff: Duration,
    held_until: Option<Instant>,
    /// `routing: leader`: look the leader up before the next call.
    rediscover: bool,
}

impl Route {
    /// A user's route: with `routing: leader`, to `leader` when known; otherwise to replica
    /// `home` (modulo their number).
    pub fn new(
        system: System,
        endpoints: Arc<Vec<String>>,
        routing: Routing,
        leader: Option<&str>,
        home: usize,
        topology: watch::Receiver<Topology>,
    ) -> Route {
        let n = endpoints.len().max(1);
        let at = match (routing, leader) {
            (Routing::Leader, Some(l)) => endpoints.iter().position(|e| e == l).unwrap_or(0),
            _ => home % n,
        };
        Route {
            system,
            clients: vec![None; endpoints.len()],
            endpoints,
            routing,
            topology,
            at,
            backoff: BACKOFF_FIRST,
            held_until: None,
            rediscover: routing == Routing::Leader && leader.is_none(),
        }
    }

    /// When the current back-off ends, if the user is backing off.
    pub fn held_until(&self) -> Option<Instant> {
        self.held_until
    }

    /// The replica the next call goes to.
    #[cfg(test)]
    pub fn addr(&self) -> &str {
        &self.endpoints[self.at]
    }

    /// The channel for the next call (connected lazily).
    pub async fn client(&mut self) -> Result<ChatConn, Failure> {
        if self.rediscover {
            let leader = self.topology.borrow().leader.clone();
            if let Some(i) = leader.and_then(|l| self.endpoints.iter().position(|e| *e == l)) {
                self.at = i;
                self.rediscover = false;
            }
        }
        let at = self.at;
        if self.clients[at].is_none() {
            let c = ChatConn::lazy(self.system, &self.endpoints[at])
                .await
                .map_err(|_| Failure::Status(tonic::Code::InvalidArgument))?;
            self.clients[at] = Some(c);
        }
        Ok(self.clients[at].clone().expect("made above"))
    }

    /// Takes a call's outcome into account at `now`; `true` when the user moved (or will
    /// look for the leader again).
    pub fn after(&mut self, failure: Option<&Failure>, now: Instant) -> bool {
        let Some(f) = failure else {
            self.backoff = BACKOFF_FIRST;
            self.held_until = None;
            return false;
        };
        if !f.backs_off() {
            return false;
        }
        self.held_until = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        if !f.try_elsewhere() {
            return false;
        }
        match self.routing {
            Routing::Leader => self.rediscover = true,
            Routing::Any => self.at = self.next_up(),
        }
        true
    }

    /// The next replica after the one in use that answered the poller last time (or simply
    /// the next one, when the poller knows nothing better).
    fn next_up(&self) -> usize {
        let n = self.endpoints.len();
        let up = self.topology.borrow();
        (1..n)
            .map(|k| (self.at + k) % n)
            .find(|i| up.up.contains(&self.endpoints[*i]))
            .unwrap_or((self.at + 1) % n)
    }
}

/// Over TLS when the run's cluster speaks it (`telegraft::admin::use_tls_for`).
fn endpoint(addr: &str) -> anyhow::Result<Endpoint> {
    Ok(telegraft::admin::endpoint_for(addr)?
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

/// A chat channel to one replica that connects on its first call, and connects again on the
/// call after a lost connection.
pub fn connect_lazy(addr: &str) -> anyhow::Result<ChatClient<Channel>> {
    let channel = endpoint(addr)?.connect_lazy();
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

    fn route(routing: Routing, up: &[&str]) -> (Route, watch::Sender<Topology>) {
        let endpoints = Arc::new(vec!["a:1".to_string(), "b:1".into(), "c:1".into()]);
        let (tx, rx) = watch::channel(Topology {
            leader: None,
            up: up.iter().map(|s| s.to_string()).collect(),
        });
        (
            Route::new(System::Telegraft, endpoints, routing, None, 0, rx),
            tx,
        )
    }

    #[test]
    fn a_user_moves_to_a_replica_that_answers_after_a_backoff() {
        let (mut r, _tx) = route(Routing::Any, &["a:1", "c:1"]);
        let now = Instant::now();
        assert_eq!(r.addr(), "a:1");
        // A refusal by the state machine changes nothing.
        assert!(!r.after(Some(&Failure::Status(tonic::Code::NotFound)), now));
        assert_eq!((r.addr(), r.held_until()), ("a:1", None));
        // The replica is down: skip b (it did not answer the poller), back off 25 ms.
        assert!(r.after(Some(&Failure::Status(tonic::Code::Unavailable)), now));
        assert_eq!(r.addr(), "c:1");
        assert_eq!(r.held_until(), Some(now + BACKOFF_FIRST));
        // Failures in a row double the back-off; a success resets it.
        assert!(r.after(Some(&Failure::Timeout), now));
        assert_eq!(r.held_until(), Some(now + 2 * BACKOFF_FIRST));
        assert!(!r.after(None, now));
        assert_eq!(r.held_until(), None);
        assert!(r.after(Some(&Failure::Timeout), now));
        assert_eq!(r.held_until(), Some(now + BACKOFF_FIRST));
        // Overload: back off, stay.
        let at = r.addr().to_string();
        assert!(!r.after(Some(&Failure::Status(tonic::Code::ResourceExhausted)), now));
        assert_eq!(r.addr(), at);
    }

    #[tokio::test]
    async fn a_leader_routed_user_finds_the_new_leader_after_a_failure() {
        let (mut r, tx) = route(Routing::Leader, &[]);
        // No leader known yet: start anywhere, look again before each call.
        r.client().await.unwrap();
        tx.send_replace(Topology {
            leader: Some("b:1".into()),
            up: vec![],
        });
        r.client().await.unwrap();
        assert_eq!(r.addr(), "b:1");
        // b fails: the user looks the leader up again before its next call.
        tx.send_replace(Topology {
            leader: Some("c:1".into()),
            up: vec![],
        });
        r.client().await.unwrap();
        assert_eq!(r.addr(), "b:1", "no failure, no lookup");
        assert!(r.after(
            Some(&Failure::Status(tonic::Code::Unavailable)),
            Instant::now()
        ));
        r.client().await.unwrap();
        assert_eq!(r.addr(), "c:1");
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
