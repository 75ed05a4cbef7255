//! What one replica is told at startup.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::raft::{NodeId, Options};

/// Everything needed to run one replica.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    pub listen: SocketAddr,
    /// Every member's address, this node included.
    pub peers: BTreeMap<NodeId, String>,
    pub data_dir: PathBuf,
    /// Real time per Raft tick (the core's timeouts are in ticks).
    pub tick: Duration,
    /// Take a snapshot and compact the log every this many applied entries (0: never).
    pub snapshot_every: u64,
    /// Log segment size in bytes.
    pub segment_bytes: u64,
    pub options: Options,
    /// Accept Admin.SetPartition (off unless asked for: it lets anyone who reaches the port
    /// cut this node off).
    pub fault_injection: bool,
    /// Client proposals and reads inside this replica at once (including those it forwards
    /// to the leader); one more is answered RESOURCE_EXHAUSTED without being queued.
    pub max_inflight: usize,
    /// Where to serve Prometheus metrics at `/metrics` (`--metrics-listen`); `None`: no
    /// listener, and every metric records into a no-op handle.
    pub metrics_listen: Option<SocketAddr>,
}

impl NodeConfig {
    /// A configuration with the defaults: 10 ms ticks, a snapshot every 10,000 entries,
    /// 64 MiB log segments, no fault injection, 4,096 client requests in flight, no metrics.
    pub fn new(
        id: NodeId,
        listen: SocketAddr,
        peers: BTreeMap<NodeId, String>,
        data_dir: PathBuf,
    ) -> NodeConfig {
        NodeConfig {
            id,
            listen,
            peers,
            data_dir,
            tick: Duration::from_millis(10),
            snapshot_every: 10_000,
            segment_bytes: 64 << 20,
            options: Options::default(),
            fault_injection: false,
            max_inflight: 4096,
            metrics_listen: None,
        }
    }

    /// The members other than this node.
    pub(super) fn other_peers(&self) -> impl Iterator<Item = (NodeId, &str)> {
        self.peers
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, addr)| (*id, addr.as_str()))
    }
}
