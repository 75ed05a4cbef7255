//! A sender actor per peer: a bounded queue of Raft messages, sent in batches over one gRPC
//! channel. Raft tolerates loss, so a failed RPC drops its batch (after a short back-off
//! while the peer is unreachable) instead of retrying: the core's heartbeats and probes
//! re-send what matters.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tonic::transport::Endpoint;

use crate::proto::raft::{MessageBatch, raft_client::RaftClient};
use crate::raft::{Envelope, NodeId};

/// Queue length per peer before the node actor starts dropping messages to it.
const QUEUE: usize = 8192;
/// Most messages in one RPC.
const MAX_BATCH: usize = 1024;

pub fn spawn(
    id: NodeId,
    addr: String,
    mut shutdown: watch::Receiver<bool>,
) -> mpsc::Sender<Envelope> {
    let (tx, mut rx) = mpsc::channel::<Envelope>(QUEUE);
    tokio::spawn(async move {
        let endpoint = match Endpoint::from_shared(format!("http://{addr}")) {
            Ok(e) => e
                .connect_timeout(Duration::from_millis(500))
                .tcp_nodelay(true),
            Err(e) => {
                tracing::error!(peer = id, %addr, "bad peer address: {e}");
                return;
            }
        };
        let mut client = RaftClient::new(endpoint.connect_lazy())
            .max_encoding_message_size(256 << 20)
            .max_decoding_message_size(256 << 20);
        loop {
            let first = tokio::select! {
                _ = shutdown.changed() => return,
                m = rx.recv() => match m { Some(m) => m, None => return },
            };
            let mut messages = vec![postcard::to_allocvec(&first).expect("messages encode")];
            while messages.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => messages.push(postcard::to_allocvec(&m).expect("messages encode")),
                    Err(_) => break,
                }
            }
            if let Err(status) = client.send(MessageBatch { messages }).await {
                tracing::debug!(peer = id, "send failed: {}", status.message());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    tx
}
