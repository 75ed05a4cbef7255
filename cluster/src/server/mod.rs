//! One replica process: the actors around the Raft core and the gRPC server.
//!
//! ```text
//!  gRPC Chat/Admin ──Propose/Read/Status──▶ ┌────────────┐ ──Append──▶ storage writer (thread)
//!  gRPC Raft ───────────Peer(msg)─────────▶ │ node actor │ ◀─Persisted── (group commit, fsync)
//!  10 ms ticker ───────────Tick───────────▶ │ (Raft core)│ ──Apply/Query──▶ applier (thread, SQLite)
//!                                           └────────────┘ ◀─SnapshotTaken──
//!                                             │ Send(msg)
//!                                             ▼
//!                                peer sender per peer (bounded queue, batched RPCs)
//! ```
//! See `cluster/ARCHITECTURE.md` for the messages and the reasoning.

pub mod applier;
pub mod node;
pub mod peer;
pub mod service;
pub mod storage_writer;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use tokio::sync::{mpsc as tmpsc, watch};

use crate::chat::ChatStore;
use crate::proto;
use crate::raft::{Node, NodeId, Options, Restored};
use crate::storage::RaftStorage;

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
}

/// The fault hook of a node's transport: the peers whose Raft messages it drops.
///
/// A partition is made by telling every node on each side to block the other side, so the
/// cut holds in both directions although each node only drops what it receives.
#[derive(Debug, Default)]
pub struct FaultHook {
    enabled: bool,
    blocked: std::sync::RwLock<std::collections::BTreeSet<NodeId>>,
}

impl FaultHook {
    pub fn new(enabled: bool) -> FaultHook {
        FaultHook {
            enabled,
            blocked: Default::default(),
        }
    }

    pub fn is_blocked(&self, id: NodeId) -> bool {
        self.blocked.read().expect("lock").contains(&id)
    }

    /// Replaces the blocked set; refused when fault injection is off.
    pub fn set(&self, blocked: impl IntoIterator<Item = NodeId>) -> Result<(), tonic::Status> {
        if !self.enabled {
            return Err(tonic::Status::permission_denied(
                "fault injection is disabled: start the node with --enable-fault-injection",
            ));
        }
        *self.blocked.write().expect("lock") = blocked.into_iter().collect();
        Ok(())
    }
}

impl NodeConfig {
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
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Store(#[from] crate::chat::store::StoreError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("bad configuration: {0}")]
    Config(String),
}

/// Runs a replica until `shutdown` turns true.
pub async fn run(
    config: NodeConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    if !config.peers.contains_key(&config.id) {
        return Err(ServerError::Config(format!(
            "--peers must include this node ({})",
            config.id
        )));
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| crate::storage::StorageError::io(&config.data_dir, e))?;
    let (storage, loaded) = RaftStorage::open(&config.data_dir, config.segment_bytes)?;
    let mut store = ChatStore::open(&config.data_dir.join("chat.sqlite"))?;
    let mut applied = store.applied_index()?;
    if loaded.snapshot.index > applied {
        tracing::info!(
            index = loaded.snapshot.index,
            "state machine behind the snapshot: restoring it"
        );
        store.restore(&loaded.snapshot.data)?;
        applied = store.applied_index()?;
    }
    let (mut storage, mut loaded) = (storage, loaded);
    let last = loaded.snapshot.index + loaded.entries.len() as u64;
    if applied > last {
        // The log lost entries the state machine already applied (a torn or truncated tail
        // of committed entries). Applied entries are committed, so the state machine is a
        // valid snapshot of them: adopt it, and let the leader send what follows.
        let term = store.applied_term()?;
        tracing::warn!(
            applied,
            last,
            term,
            "state machine ahead of the log: using it as a snapshot"
        );
        let snapshot = crate::raft::Snapshot {
            index: applied,
            term,
            data: store.snapshot()?,
        };
        storage.install_snapshot(&snapshot)?;
        loaded.snapshot = snapshot;
        loaded.entries.clear();
    }
    tracing::info!(
        id = config.id,
        term = loaded.hard_state.term,
        snapshot = loaded.snapshot.index,
        last,
        applied,
        "node starting"
    );
    let snapshot_index = loaded.snapshot.index;
    let restored = Restored {
        hard_state: loaded.hard_state,
        snapshot: loaded.snapshot,
        entries: loaded.entries,
        applied,
    };
    let members: Vec<NodeId> = config.peers.keys().copied().collect();
    let rng = rand_chacha::ChaCha8Rng::from_os_rng();
    let core = Node::new(
        config.id,
        &members,
        restored,
        config.options.clone(),
        Box::new(rng),
    );

    let (node_tx, node_rx) = tmpsc::unbounded_channel();
    let storage_tx = storage_writer::spawn(storage, node_tx.clone());
    let applier_tx = applier::spawn(
        store,
        config.snapshot_every,
        snapshot_index.max(applied),
        node_tx.clone(),
    );
    let mut peer_txs = HashMap::new();
    for (&id, addr) in config.peers.iter().filter(|(id, _)| **id != config.id) {
        peer_txs.insert(id, peer::spawn(id, addr.clone(), shutdown.clone()));
    }
    let actor = node::NodeActor::new(
        core,
        node_rx,
        storage_tx,
        applier_tx.clone(),
        peer_txs,
        config.tick,
    );
    let node_task = tokio::spawn(actor.run(shutdown.clone()));

    let faults = Arc::new(FaultHook::new(config.fault_injection));
    let chat = service::ChatService::new(
        node_tx.clone(),
        applier_tx.clone(),
        config.peers.clone(),
        faults.clone(),
    );
    let raft = service::RaftService {
        node_tx: node_tx.clone(),
        faults: faults.clone(),
    };
    let admin = service::AdminService {
        node_tx,
        applier_tx: Arc::new(Mutex::new(applier_tx)),
        faults,
    };
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let max = 256 << 20;
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(proto::chat::chat_server::ChatServer::new(chat))
        .add_service(
            proto::raft::raft_server::RaftServer::new(raft)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(proto::admin::admin_server::AdminServer::new(admin))
        .add_service(reflection)
        .serve_with_shutdown(config.listen, async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await?;
    let _ = node_task.await;
    Ok(())
}
