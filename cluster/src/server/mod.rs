//! One replica process: the actors around the Raft core and the gRPC server.
//!
//! ```text
//!  gRPC Chat/Admin ──Propose/Read/Status──▶ ┌────────────┐ ──StorageRequest──▶ storage writer (thread)
//!  gRPC Raft ───────────Peer(msg)─────────▶ │ core actor │ ◀─Done(Persisted)── (group commit, fdatasync)
//!  10 ms ticker ───────────Tick───────────▶ │ (Raft core)│ ──ApplierMsg──▶ applier (thread, SQLite)
//!                                           └────────────┘ ◀─Done(SnapshotTaken)──
//!                                             │ Envelope
//!                                             ▼
//!                                peer sender per peer (bounded queue, batched RPCs)
//! ```
//!
//! | module | owns |
//! |---|---|
//! | `mailbox` | the messages between actors; no actor imports another |
//! | `core_actor` | the Raft core (held by value), pending proposals and reads (core thread) |
//! | `storage_writer` | the Raft storage (thread; group commit) |
//! | `applier` | the SQLite chat store (thread) |
//! | `peer` | one gRPC channel per peer (task on the core thread; bounded queue) |
//! | `snapshot_stream` | a snapshot file streamed to a peer, and received into a file |
//! | `service` | the gRPC services (Chat, Raft, Admin) |
//! | `auth` | chat tokens at the edge: who a call comes from (`security/` has the rules) |
//! | `error` | `ServerError`, `RequestError` and the one mapping to gRPC codes |
//! | `fatal` | the one way a running replica stops itself (exit code 70) |
//! | `fault`, `config` | the partition hook; the startup configuration |
//! | `throttle` | rate-limited warnings for what remote senders control |
//! | `observe` | metric handles, the `/metrics` listener, the gRPC timing layer |
//!
//! [`run`] goes through four phases: recover the durable state, start the actors, serve
//! until the shutdown signal, then stop and join everything it started (mini-redis style:
//! one stop notice, every task and thread joined, nothing left running when it returns).
//! See `cluster/ARCHITECTURE.md` for the messages and the reasoning.
//!
//! Two rules keep a replica that is in trouble from lingering:
//! - **A dead actor ends the process** (`fatal.rs`): the core actor and the peer senders
//!   are supervised tasks (on a thread of their own, away from the client handlers:
//!   `spawn_core_thread`), the storage writer and the applier threads a panic hook knows by
//!   name. Any of them dying stops the process with exit code 70 at once, so no replica keeps
//!   its port open without its core; a supervisor restarts it from durable state.
//! - **Memory is bounded under overload** (`mailbox.rs` lists every queue and its bound):
//!   at most `--max-inflight` client requests are inside a replica at once, and the one
//!   past that is answered RESOURCE_EXHAUSTED without being queued.

mod applier;
mod auth;
mod config;
mod core_actor;
mod error;
mod fatal;
mod fault;
mod mailbox;
mod observe;
mod peer;
mod service;
mod snapshot_stream;
mod storage_writer;
mod throttle;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use rand::SeedableRng;
use tokio::sync::watch;
use tokio::task::JoinSet;

use self::applier::{Applier, SnapshotPolicy};
use self::core_actor::CoreActor;
use self::fault::FaultHook;
use self::mailbox::{APPLIER_SLACK, Completions, CoreInput, CoreSender, PEER_INPUTS, PanicTarget};
use self::observe::{Exporter, GrpcMetricsLayer, Metrics};
use crate::chat::ChatStore;
use crate::proto;
use crate::raft::{Node, NodeId, Restored};
use crate::storage::{self, RaftStorage, SnapshotDir, StorageError};

pub use self::config::{NodeConfig, id_from_hostname};
pub use self::error::ServerError;
pub use self::mailbox::Completion;
pub use self::storage_writer::{StorageWriter, WriterStats};

/// Runs a replica until `shutdown` completes, then stops every task and thread it started
/// and waits for them.
pub async fn run(
    config: NodeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    if !config.peers.contains_key(&config.id) {
        return Err(ServerError::Config(format!(
            "--peers must include this node ({})",
            config.id
        )));
    }
    crate::security::check_listen(config.listen, config.tls.is_some(), config.insecure)
        .map_err(|e| ServerError::Config(e.to_string()))?;
    crate::security::check_cluster_id(&config.cluster_id)
        .map_err(|e| ServerError::Config(e.to_string()))?;
    if let Some(tls) = &config.tls
        && tls.cluster_id != config.cluster_id
    {
        return Err(ServerError::Config(format!(
            "the node certificate is of cluster '{}', not '{}'",
            tls.cluster_id, config.cluster_id
        )));
    }
    if config.require_auth && config.keyring.is_none() {
        return Err(ServerError::Config(
            "--require-auth needs a token key: --auth-key FILE, or --tls-dir holding auth.key \
             (`telegraft certs` writes one)"
                .into(),
        ));
    }
    let exporter = match config.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::MetricsListen { addr, source })?;
            tracing::info!(%addr, "serving metrics at /metrics");
            Some((listener, Arc::new(Exporter::new())))
        }
        None => None,
    };
    let recovered = recover(&config)?;
    fatal::stop_on_actor_thread_panic();
    let (stop_tx, stop_rx) = watch::channel(false);
    let replica = Replica::start(&config, recovered, exporter, stop_rx);
    // The signal stops the gRPC server and the actors at once, as one notice.
    let served = serve(&config, &replica, async {
        shutdown.await;
        let _ = stop_tx.send(true);
    })
    .await;
    let _ = stop_tx.send(true);
    replica.join().await;
    served
}

/// What startup recovered from the data directory.
struct Recovered {
    storage: RaftStorage,
    store: ChatStore,
    restored: Restored,
}

/// Phase 1: opens the Raft storage and the chat store and reconciles them.
fn recover(config: &NodeConfig) -> Result<Recovered, ServerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| StorageError::io(&config.data_dir, e))?;
    let (mut storage, loaded) = RaftStorage::open(&config.data_dir, config.segment_bytes)?;
    let mut store = ChatStore::open(&config.data_dir.join("chat.sqlite"))?;
    let restored: Restored =
        storage::reconcile::<_, ServerError>(&mut storage, loaded, &mut store)?;
    tracing::info!(
        id = config.id,
        term = restored.hard_state.term,
        snapshot = restored.snapshot.index,
        last = restored.snapshot.index + restored.entries.len() as u64,
        applied = restored.applied,
        "node starting"
    );
    Ok(Recovered {
        storage,
        store,
        restored,
    })
}

/// Every actor of a running replica, and what it takes to stop them.
struct Replica {
    core_tx: CoreSender,
    /// The metrics listener and the fault-injection listener.
    tasks: JoinSet<()>,
    /// The core actor and the peer senders, each supervised, on their own thread
    /// ([`spawn_core_thread`]).
    core_thread: std::thread::JoinHandle<()>,
    writer: StorageWriter,
    applier: Applier,
    faults: Arc<FaultHook>,
    /// Where snapshot files live (`storage::SnapshotDir`).
    snapshots: SnapshotDir,
    /// The leader the core actor knows of (see [`CoreActor`]).
    leader: watch::Receiver<Option<NodeId>>,
    /// Where every metric handle lives (no-op handles without `--metrics-listen`).
    metrics: Metrics,
    exporter: Option<Arc<Exporter>>,
}

impl Replica {
    /// Phase 2: starts the storage writer, the applier, a sender per peer, the core actor and
    /// the metrics listener, if there is one. They run until `stop` turns true.
    fn start(
        config: &NodeConfig,
        recovered: Recovered,
        exporter: Option<(tokio::net::TcpListener, Arc<Exporter>)>,
        stop: watch::Receiver<bool>,
    ) -> Replica {
        let Recovered {
            storage,
            store,
            restored,
        } = recovered;
        let peer_ids = config.other_peers().map(|(id, _)| id);
        let metrics = match &exporter {
            Some((_, e)) => Metrics::register(e.recorder(), peer_ids),
            None => Metrics::noop(peer_ids),
        };
        let snapshots = storage.snapshots().clone();
        let (core_tx, inbox) = mailbox::core_inbox(config.max_inflight + PEER_INPUTS);
        let completions = Arc::new(Completions::default());
        let report = |completions: Arc<Completions>| move |done| completions.report(done);
        let writer = StorageWriter::spawn_observed(
            storage,
            report(completions.clone()),
            metrics.clone(),
            config.batching,
        );
        let last_snapshot = restored.snapshot.index.max(restored.applied);
        let applier = Applier::spawn(
            store,
            snapshots.clone(),
            SnapshotPolicy {
                entries: config.snapshot_every,
                bytes: config.snapshot_bytes,
            },
            last_snapshot,
            2 * config.max_inflight + APPLIER_SLACK,
            report(completions.clone()),
            metrics.clone(),
        );
        let mut tasks = JoinSet::new();
        let exporter = exporter.map(|(listener, exporter)| {
            tasks.spawn(observe::serve(listener, exporter.clone(), stop.clone()));
            exporter
        });
        let members: Vec<NodeId> = config.peers.keys().copied().collect();
        let rng = rand_chacha::ChaCha8Rng::from_os_rng();
        let core = Node::new(
            config.id,
            &members,
            restored,
            config.options.clone(),
            Box::new(rng),
        );
        let (leader_tx, leader) = watch::channel(None);
        let actor = CoreActor::new(
            inbox,
            completions,
            writer.sender(),
            applier.sender(),
            config.tick,
            leader_tx,
        )
        .observed(metrics.clone());
        let peers: Vec<(NodeId, String)> = config
            .other_peers()
            .map(|(id, addr)| (id, addr.to_string()))
            .collect();
        let core_thread = spawn_core_thread(
            actor,
            core,
            peers,
            config.transport(),
            snapshots.clone(),
            stop.clone(),
        );
        if config.fault_injection {
            tasks.spawn(inject_panics_on_signals(core_tx.clone(), stop));
        }
        Replica {
            core_tx,
            tasks,
            core_thread,
            writer,
            applier,
            faults: Arc::new(FaultHook::new(config.fault_injection)),
            snapshots,
            leader,
            metrics,
            exporter,
        }
    }

    /// Phase 4: waits for every actor, in the order their inputs close. The tasks first, then
    /// the core thread: the core actor stops at the notice and drops its senders, the peer
    /// senders at the notice or when their queues close. Then the applier (after what is
    /// queued) and the storage writer (its only other sender was the core actor).
    async fn join(mut self) {
        while let Some(r) = self.tasks.join_next().await {
            if let Err(e) = r {
                tracing::error!("an actor task failed: {e}");
            }
        }
        let (core, applier, writer) = (self.core_thread, self.applier, self.writer);
        let threads = tokio::task::spawn_blocking(move || {
            if core.join().is_err() {
                tracing::error!("core thread panicked");
            }
            (applier.stop(), writer.join())
        })
        .await;
        match threads {
            Ok((applier, writer)) => {
                if applier.is_err() {
                    tracing::error!("applier thread panicked");
                }
                match writer {
                    Ok(stats) => tracing::info!(
                        syncs = stats.syncs,
                        entries = stats.entries,
                        bytes = stats.bytes,
                        entries_per_sync = stats.entries_per_sync(),
                        bytes_per_sync = stats.bytes_per_sync(),
                        "storage writer stopped"
                    ),
                    Err(_) => tracing::error!("storage writer thread panicked"),
                }
            }
            Err(e) => tracing::error!("joining the applier and storage writer: {e}"),
        }
    }
}

/// The core thread's name.
const CORE_THREAD: &str = "raft-core";

/// Starts the core actor and a sender per peer on a thread of their own, with its own
/// single-threaded runtime; they run until the stop notice, and the thread ends once all of
/// them have ended (joined in [`Replica::join`]).
///
/// Why a thread: on the gRPC server's runtime, the core actor's tick and every heartbeat on
/// its way out (core actor, peer sender, RPC task, HTTP/2 connection task) wait their turn
/// behind every runnable client handler. Under a 4x overload the leader has thousands of
/// them, and its heartbeats reached followers late enough that a follower timed out and
/// took over (`cluster/README.md`, "Under overload"). On this thread, which the operating
/// system schedules beside the runtime's workers, nothing of the clients' queues but the
/// core inbox is in the way. The peer senders' gRPC channels are created here, so their
/// connections run on this runtime too.
///
/// The tasks are supervised as before ([`fatal::supervise`]): a panic or an early end stops
/// the process. So does failing to build the runtime.
fn spawn_core_thread(
    actor: CoreActor,
    core: Node,
    peers: Vec<(NodeId, String)>,
    transport: peer::Transport,
    snapshots: SnapshotDir,
    stop: watch::Receiver<bool>,
) -> std::thread::JoinHandle<()> {
    let spawned = std::thread::Builder::new()
        .name(CORE_THREAD.into())
        .spawn(move || {
            raise_core_priority();
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => not_started("cannot build the core thread's runtime", e),
            };
            runtime.block_on(async move {
                let mut tasks = JoinSet::new();
                let peer_txs: HashMap<NodeId, _> = peers
                    .into_iter()
                    .map(|(id, addr)| {
                        let tx = peer::spawn(
                            id,
                            addr,
                            transport.clone(),
                            snapshots.clone(),
                            stop.clone(),
                            &mut tasks,
                        );
                        (id, tx)
                    })
                    .collect();
                tasks.spawn(fatal::supervise(
                    "core actor",
                    stop.clone(),
                    actor.run(core, peer_txs, stop.clone()),
                ));
                while let Some(r) = tasks.join_next().await {
                    if let Err(e) = r {
                        tracing::error!("an actor task failed: {e}");
                    }
                }
            });
            // Dropping the runtime ends what the gRPC channels left (their connections).
            drop(runtime);
            tracing::info!("core thread stopped");
        });
    match spawned {
        Ok(handle) => handle,
        Err(e) => not_started("cannot start the core thread", e),
    }
}

/// How much the core thread's nice value is lowered (a higher scheduling weight: about 9x a
/// normal thread's share of a contended core at -10).
const CORE_NICE: i32 = -10;

/// Gives the core thread a higher scheduling priority where the process may (root or
/// `CAP_SYS_NICE`); elsewhere it keeps the normal one, and says so once.
///
/// Why: on a machine whose cores are saturated (the replicas, the load generator and its
/// clients share them), the kernel's fair scheduler gives each runnable thread its turn in
/// proportion to its weight. The core thread needs little CPU but needs it on time: a tick
/// or a heartbeat that waits behind a client handler's time slice is late, and a few late
/// heartbeats in a row make a follower start an election. A lower nice value gets it the
/// CPU first when it wakes, without taking any from the others while it sleeps. On Linux a
/// nice value belongs to one thread, so only this thread is raised.
fn raise_core_priority() {
    // SAFETY: two system calls with no pointers: the calling thread's id, and setting that
    // thread's nice value.
    let outcome = unsafe {
        let tid = nix::libc::gettid();
        nix::libc::setpriority(nix::libc::PRIO_PROCESS, tid as nix::libc::id_t, CORE_NICE)
    };
    if outcome == 0 {
        tracing::info!("the core thread runs at nice {CORE_NICE}");
    } else {
        tracing::info!(
            "the core thread runs at the normal priority: raising it needs root or \
             CAP_SYS_NICE ({})",
            std::io::Error::last_os_error()
        );
    }
}

/// The core thread could not start: the replica cannot run, so it stops as when an actor dies.
fn not_started(what: &str, e: std::io::Error) -> ! {
    tracing::error!("{what}: {e}");
    fatal::stop(fatal::Fatal::ActorStopped {
        actor: "core actor",
        during: "its thread was starting",
    })
}

/// Fault injection for the real-process tests of "a dead actor ends the process": with
/// `--enable-fault-injection`, SIGUSR1 makes the core actor panic and SIGUSR2 the storage
/// writer. (Without the flag the signals keep their default action, which also ends the
/// process.)
async fn inject_panics_on_signals(core_tx: CoreSender, mut stop: watch::Receiver<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut usr1), Ok(mut usr2)) = (
        signal(SignalKind::user_defined1()),
        signal(SignalKind::user_defined2()),
    ) else {
        tracing::warn!("fault injection: cannot listen for SIGUSR1/SIGUSR2");
        return;
    };
    loop {
        let target = tokio::select! {
            _ = stop.changed() => return,
            _ = usr1.recv() => PanicTarget::Core,
            _ = usr2.recv() => PanicTarget::StorageWriter,
        };
        tracing::warn!("fault injection: making the {target:?} actor panic");
        if let Err(e) = core_tx.send(CoreInput::InjectPanic(target)) {
            tracing::warn!("fault injection: {e}");
        }
    }
}

/// Phase 3: serves Chat, Raft and Admin (and reflection) until `signal` completes, then
/// lets in-flight calls finish.
async fn serve(
    config: &NodeConfig,
    replica: &Replica,
    signal: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let chat = service::ChatService::new(
        replica.core_tx.clone(),
        replica.applier.sender(),
        service::ChatEdge {
            peer_addrs: config.peers.clone(),
            transport: config.transport(),
            auth: Arc::new(auth::ChatAuth::new(
                config.keyring.clone(),
                config.require_auth,
                config.token_ttl,
                &config.cluster_id,
            )),
        },
        replica.faults.clone(),
        config.max_inflight,
        replica.leader.clone(),
        replica.metrics.clone(),
    );
    let raft = service::RaftService::new(
        replica.core_tx.clone(),
        replica.faults.clone(),
        replica.snapshots.clone(),
        &config.transport(),
    );
    let admin = service::AdminService {
        tls_cluster: config.tls.as_ref().map(|t| t.cluster_id.as_str().into()),
        core_tx: replica.core_tx.clone(),
        applier_tx: replica.applier.sender(),
        faults: replica.faults.clone(),
        metrics: replica.metrics.clone(),
    };
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let max = 256 << 20;
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        builder = builder.tls_config(tls.server.clone())?;
    }
    builder
        .tcp_nodelay(true)
        .max_concurrent_streams(mailbox::MAX_STREAMS_PER_CONNECTION)
        .layer(GrpcMetricsLayer::new(replica.exporter.clone()))
        .add_service(chat.into_server())
        .add_service(
            proto::raft::raft_server::RaftServer::new(raft)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(proto::admin::admin_server::AdminServer::new(admin))
        .add_service(reflection)
        .serve_with_shutdown(config.listen, signal)
        .await?;
    Ok(())
}
