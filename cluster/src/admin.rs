//! Asking replicas what they are doing: the one place that polls `Admin.Status` and decides
//! who leads.
//!
//! The load generator's leader watch and fault targets, `telegraft-bench` and the
//! real-process tests all need "which replica leads now?". Answering it in one place keeps one
//! rule for it: the leader is the replica that calls itself leader in the *highest* term (a
//! deposed leader that has not heard of the new term yet still calls itself leader, in an
//! older term), and a cluster is ready when a majority answers and agrees on that leader.
//! Roles are compared as the typed [`RoleKind`], never as strings.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant};

use tonic::transport::{ClientTlsConfig, Endpoint};

use crate::proto::admin::admin_client::AdminClient;
use crate::proto::admin::{RoleKind, SetPartitionRequest, StatusRequest};

/// How long one Status or SetPartition call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// One replica's view of the cluster, from its `Admin.Status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// The address it was asked at (`127.0.0.1:7001`).
    pub addr: String,
    pub node_id: u64,
    pub role: RoleKind,
    pub term: u64,
    /// 0 when it knows no leader.
    pub leader_id: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub state_digest: String,
    pub pid: u32,
}

impl NodeView {
    pub fn is_leader(&self) -> bool {
        self.role == RoleKind::Leader
    }

    /// The role as people read it: `leader`, `follower`, `candidate` (or `unknown`).
    pub fn role_name(&self) -> &'static str {
        match self.role {
            RoleKind::Leader => "leader",
            RoleKind::Follower => "follower",
            RoleKind::Candidate => "candidate",
            RoleKind::Unspecified => "unknown",
        }
    }
}

/// The replicas this process reaches over TLS, and with which client configuration (trust
/// and identity): every call here, and the load generator's chat clients, look an address up
/// in it, so that callers pass addresses as before whatever the cluster's security.
/// Addresses not registered are plaintext.
fn tls_registry() -> &'static RwLock<HashMap<String, ClientTlsConfig>> {
    static REGISTRY: OnceLock<RwLock<HashMap<String, ClientTlsConfig>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Reach `addrs` over TLS with `tls` from now on (a cluster started with `--tls-dir`).
pub fn use_tls_for<'a>(addrs: impl IntoIterator<Item = &'a String>, tls: &ClientTlsConfig) {
    crate::security::tls::install_crypto_provider();
    let mut r = tls_registry().write().unwrap_or_else(|e| e.into_inner());
    for a in addrs {
        r.insert(a.clone(), tls.clone());
    }
}

/// The TLS configuration registered for `addr`, if it speaks TLS.
pub fn tls_for(addr: &str) -> Option<ClientTlsConfig> {
    tls_registry()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(addr)
        .cloned()
}

/// An endpoint for `addr` (`host:port`): TLS if registered ([`use_tls_for`]), else
/// plaintext.
pub fn endpoint_for(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    let tls = tls_for(addr);
    let scheme = crate::security::tls::scheme(tls.is_some());
    let e = Endpoint::from_shared(format!("{scheme}://{addr}"))?;
    match tls {
        Some(tls) => e.tls_config(tls),
        None => Ok(e),
    }
}

fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(endpoint_for(addr)?
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true))
}

/// Why a replica did not answer.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("{addr}: {status}")]
    Call { addr: String, status: tonic::Status },
}

async fn client(addr: &str) -> Result<AdminClient<tonic::transport::Channel>, AdminError> {
    let connect = |source| AdminError::Connect {
        addr: addr.to_string(),
        source,
    };
    let channel = endpoint(addr)
        .map_err(connect)?
        .connect()
        .await
        .map_err(connect)?;
    Ok(AdminClient::new(channel))
}

/// Asks one replica for its status.
pub async fn status(addr: &str) -> Result<NodeView, AdminError> {
    let s = client(addr)
        .await?
        .status(StatusRequest {})
        .await
        .map_err(|status| AdminError::Call {
            addr: addr.to_string(),
            status,
        })?
        .into_inner();
    Ok(NodeView {
        addr: addr.to_string(),
        node_id: s.node_id,
        role: s.role_kind(),
        term: s.term,
        leader_id: s.leader_id,
        commit_index: s.commit_index,
        applied_index: s.applied_index,
        last_log_index: s.last_log_index,
        state_digest: s.state_digest,
        pid: s.pid,
    })
}

/// The status of each of `addrs` that answers, asked concurrently.
pub async fn statuses(addrs: &[String]) -> Vec<NodeView> {
    let calls = addrs.iter().map(|a| status(a));
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .filter_map(Result::ok)
        .collect()
}

/// The replica that calls itself leader in the highest term.
pub fn newest_leader(views: &[NodeView]) -> Option<&NodeView> {
    views
        .iter()
        .filter(|v| v.is_leader())
        .max_by_key(|v| v.term)
}

/// Waits until a majority of `addrs` answers and every replica that answers agrees on one
/// leader in one term; returns the leader's view. Fails after `timeout`, saying what each
/// replica last reported.
pub async fn wait_for_leader(addrs: &[String], timeout: Duration) -> Result<NodeView, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut views = Vec::new();
        let mut last = Vec::new();
        for addr in addrs {
            match status(addr).await {
                Ok(v) => {
                    last.push(format!("{addr}: {} term {}", v.role_name(), v.term));
                    views.push(v);
                }
                Err(e) => last.push(e.to_string()),
            }
        }
        if let Some(leader) = newest_leader(&views) {
            let agreed = views
                .iter()
                .all(|v| v.leader_id == leader.node_id && v.term == leader.term);
            if agreed && views.len() * 2 > addrs.len() {
                return Ok(leader.clone());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no leader after {:.1} s: {}",
                timeout.as_secs_f64(),
                last.join("; ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Tells a replica to drop Raft messages from `blocked` (fault injection; an empty list
/// heals). The replica must run with `--enable-fault-injection` and, with TLS, be called with
/// the admin certificate.
pub async fn set_partition(addr: &str, blocked: Vec<u64>) -> Result<(), AdminError> {
    client(addr)
        .await?
        .set_partition(SetPartitionRequest { blocked })
        .await
        .map_err(|status| AdminError::Call {
            addr: addr.to_string(),
            status,
        })?;
    Ok(())
}
