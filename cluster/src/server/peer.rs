//! A sender actor per peer: a bounded queue of Raft messages, sent in batches over one gRPC
//! channel. Raft tolerates loss, so a failed RPC drops its batch (after a short back-off
//! while the peer is unreachable) instead of retrying: the core's heartbeats and probes
//! re-send what matters.
//!
//! Peers may be named by host name (a compose service, a StatefulSet pod). A failed call
//! replaces the channel with a fresh one, which resolves the name again on connecting, and
//! HTTP/2 pings drop a connection whose peer vanished without a reset (a container killed
//! or cut off the network), so a peer that comes back at another address is found.
//!
//! Every task is tracked: the sender task lives in the core thread's `JoinSet` (beside the
//! core actor, on that thread's runtime, so its channel's connection runs there too), and
//! the RPCs it has in flight live in the sender's own `JoinSet`, which it cancels and joins
//! when it stops (an unsent Raft message is a lost message, which Raft tolerates). The
//! sender task is supervised ([`fatal::supervise`]): if it panics or ends before the stop
//! notice, the process stops, since a replica that can no longer reach a peer would never
//! say so.
//!
//! Bounds: the queue holds at most [`QUEUE`] messages (then the core actor drops, and Raft
//! re-sends); at most [`IN_FLIGHT`] batches and one snapshot stream are in flight (a snapshot
//! the core asks for while one is streaming is dropped: the core asks again); every RPC
//! has a timeout ([`RPC_TIMEOUT`], [`SNAPSHOT_TIMEOUT`]), so a black-holed peer cannot hold
//! the sender forever.
//!
//! Each batch RPC runs in a `peer_send` span (peer, messages) at trace level, since
//! heartbeats make many; at debug, the core actor names each write it hands to a peer
//! sender with an event under the write's own span.
//!
//! A snapshot is streamed from its file, never loaded ([`snapshot_stream`]): a snapshot
//! costs the sender a few MiB whatever its size.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

use super::fatal;
use super::snapshot_stream::{self, SNAPSHOT_CHUNK};
use crate::proto::raft::{MessageBatch, raft_client::RaftClient};
use crate::raft::{Envelope, Message, NodeId};
use crate::storage::SnapshotDir;

/// Queue length per peer before the core actor starts dropping messages to it.
pub const QUEUE: usize = 8192;
/// How long one batch RPC may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one snapshot stream may take, from the first chunk to the answer.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);
/// Most messages in one RPC.
const MAX_BATCH: usize = 1024;
/// Batches in flight at once per peer.
const IN_FLIGHT: usize = 4;
/// HTTP/2 ping interval, and how long a ping may go unanswered before the connection is
/// dropped.
const KEEPALIVE: Duration = Duration::from_secs(2);
/// The shortest time between two fresh channels to one peer.
const RECONNECT_EVERY: Duration = Duration::from_millis(500);

/// Starts the sender for peer `id` at `addr` as a task of `tasks`; returns its queue. It
/// stops at the stop notice or when the queue's senders are gone.
pub fn spawn(
    id: NodeId,
    addr: String,
    transport: Transport,
    snapshots: SnapshotDir,
    stop: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> mpsc::Sender<Envelope> {
    let (tx, rx) = mpsc::channel::<Envelope>(QUEUE);
    let stopping = stop.clone();
    tasks.spawn(fatal::supervise("peer sender", stopping, async move {
        let endpoint = match transport.endpoint(&addr) {
            Ok(e) => e
                .connect_timeout(Duration::from_millis(500))
                .tcp_nodelay(true)
                // A peer whose address vanished (a container killed, or cut off the
                // network) never resets the connection: pings find it dead in seconds.
                .http2_keep_alive_interval(KEEPALIVE)
                .keep_alive_timeout(KEEPALIVE)
                .keep_alive_while_idle(true),
            Err(e) => {
                tracing::error!(peer = id, %addr, "bad peer address: {e}");
                return;
            }
        };
        let mut in_flight = JoinSet::new();
        let cluster = transport.cluster_id.clone();
        send_loop(id, endpoint, cluster, snapshots, rx, stop, &mut in_flight).await;
        in_flight.shutdown().await;
    }));
    tx
}

/// How this replica reaches its peers: the cluster id every message carries, and TLS
/// (presenting this node's certificate) when the cluster runs with it.
#[derive(Clone, Debug)]
pub struct Transport {
    pub cluster_id: Arc<str>,
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

impl Transport {
    /// An endpoint for a peer at `addr` (`host:port`), over TLS when configured.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, tonic::transport::Error> {
        let scheme = crate::security::tls::scheme(self.tls.is_some());
        let e = Endpoint::from_shared(format!("{scheme}://{addr}"))?;
        match &self.tls {
            Some(tls) => e.tls_config(tls.clone()),
            None => Ok(e),
        }
    }
}

/// A client on a fresh channel to `endpoint`: its first call connects, resolving the
/// peer's name then.
fn client(endpoint: &Endpoint) -> RaftClient<Channel> {
    RaftClient::new(endpoint.connect_lazy())
        .max_encoding_message_size(256 << 20)
        .max_decoding_message_size(256 << 20)
}

/// Sends what arrives on `rx` until the stop notice or until `rx` closes.
///
/// After a failed call the channel is replaced by a fresh one (at most once per
/// [`RECONNECT_EVERY`]): a peer is named by host name in a container network or a
/// StatefulSet, and a restarted peer may come back at another address under the same name,
/// which only a new connection resolves.
async fn send_loop(
    id: NodeId,
    endpoint: Endpoint,
    cluster_id: Arc<str>,
    snapshots: SnapshotDir,
    mut rx: mpsc::Receiver<Envelope>,
    mut stop: watch::Receiver<bool>,
    in_flight: &mut JoinSet<()>,
) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let streaming = Arc::new(Semaphore::new(1));
    let failed = Arc::new(AtomicBool::new(false));
    let mut client = client(&endpoint);
    let mut connected = Instant::now();
    loop {
        let first = tokio::select! {
            _ = stop.changed() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        if connected.elapsed() >= RECONNECT_EVERY && failed.swap(false, Ordering::Relaxed) {
            tracing::debug!(peer = id, "reconnecting (the name is resolved again)");
            client = self::client(&endpoint);
            connected = Instant::now();
        }
        let mut pending = Some(first);
        while let Some(first) = pending.take() {
            if matches!(first.message, Message::InstallSnapshot { .. }) {
                // On its own task, so that heartbeats go on while it streams.
                match streaming.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let (c, dir) = (client.clone(), snapshots.clone());
                        let cluster = cluster_id.clone();
                        in_flight.spawn(async move {
                            send_snapshot(c, &dir, id, &cluster, first).await;
                            drop(permit);
                        });
                    }
                    Err(_) => tracing::debug!(peer = id, "a snapshot is already streaming"),
                }
                continue;
            }
            let mut messages = vec![postcard::to_allocvec(&first).expect("messages encode")];
            while messages.len() < MAX_BATCH {
                match rx.try_recv() {
                    // A snapshot goes on its own stream, after this batch.
                    Ok(m) if matches!(m.message, Message::InstallSnapshot { .. }) => {
                        pending = Some(m);
                        break;
                    }
                    Ok(m) => messages.push(postcard::to_allocvec(&m).expect("messages encode")),
                    Err(_) => break,
                }
            }
            // Up to IN_FLIGHT batches share the HTTP/2 connection, so an acknowledgement
            // never queues behind the previous RPC's round trip. Raft tolerates the
            // reordering this allows. A black-holed connection must not stall this peer
            // for long: each RPC times out.
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore open");
            let mut req = tonic::Request::new(MessageBatch {
                messages,
                cluster_id: cluster_id.to_string(),
            });
            req.set_timeout(RPC_TIMEOUT);
            let mut c = client.clone();
            // Forget the RPCs already finished, so the set holds only what is in flight.
            while in_flight.try_join_next().is_some() {}
            let n = req.get_ref().messages.len();
            let span = tracing::trace_span!("peer_send", peer = id, messages = n);
            let failed = failed.clone();
            in_flight.spawn(tracing::Instrument::instrument(
                async move {
                    if let Err(status) = c.send(req).await {
                        tracing::debug!(peer = id, "send failed: {}", status.message());
                        failed.store(true, Ordering::Relaxed);
                        // Back off while the peer is unreachable, holding the permit.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    drop(permit);
                },
                span,
            ));
        }
    }
}

/// Streams an InstallSnapshot message and its snapshot's file ([`snapshot_stream`]),
/// within [`SNAPSHOT_TIMEOUT`].
async fn send_snapshot(
    mut client: RaftClient<Channel>,
    snapshots: &SnapshotDir,
    id: NodeId,
    cluster_id: &str,
    env: Envelope,
) {
    let index = match &env.message {
        Message::InstallSnapshot { snapshot, .. } => snapshot.index,
        _ => return,
    };
    let (chunks, bytes) =
        match snapshot_stream::outgoing(snapshots, &env, SNAPSHOT_CHUNK, cluster_id) {
            Ok(c) => c,
            Err(e) => {
                // Normally a snapshot replaced by a newer one while this message waited in
                // the queue (its file is then gone): the core sends the newer one on its retry.
                tracing::info!(peer = id, index, "snapshot not sent (superseded?): {e}");
                return;
            }
        };
    let mut req = tonic::Request::new(chunks);
    req.set_timeout(SNAPSHOT_TIMEOUT);
    let sent = tokio::time::timeout(SNAPSHOT_TIMEOUT, client.send_snapshot(req)).await;
    match sent {
        Ok(Ok(_)) => tracing::info!(peer = id, index, bytes, "snapshot sent"),
        Ok(Err(status)) => {
            tracing::warn!(peer = id, "snapshot send failed: {}", status.message());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(_) => tracing::warn!(peer = id, "snapshot send timed out"),
    }
}
