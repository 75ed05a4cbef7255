//! The peer transport spoken raw, as a hostile or foreign peer would (it is not part of the
//! public API, so its messages are declared here by their field numbers). Shared by the
//! test files that play peers; each uses part of it.
#![allow(dead_code)]

use tonic::Status;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// The cluster id of a cluster started without one.
pub const DEFAULT_CLUSTER: &str = "telegraft";

#[derive(Clone, PartialEq, prost::Message)]
pub struct MessageBatch {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub messages: Vec<Vec<u8>>,
    #[prost(string, tag = "2")]
    pub cluster_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotChunk {
    #[prost(bytes = "vec", tag = "1")]
    pub message: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
    #[prost(string, tag = "6")]
    pub cluster_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SendResponse {}

async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// `Raft.Send` with these raw message payloads, to a plaintext replica of the default
/// cluster.
pub async fn send(addr: &str, messages: Vec<Vec<u8>>) -> Result<(), Status> {
    send_on(channel(addr).await, DEFAULT_CLUSTER, messages).await
}

/// `Raft.Send` over `channel` (plaintext or TLS, with whatever certificate it presents),
/// naming `cluster_id`.
pub async fn send_on(
    channel: Channel,
    cluster_id: &str,
    messages: Vec<Vec<u8>>,
) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<MessageBatch, SendResponse>::default();
    let path = PathAndQuery::from_static("/telegraft.raft.v1.Raft/Send");
    let req = tonic::Request::new(MessageBatch {
        messages,
        cluster_id: cluster_id.into(),
    });
    grpc.unary(req, path, codec).await.map(|_| ())
}

/// `Raft.SendSnapshot` with these raw chunks.
pub async fn send_snapshot(addr: &str, chunks: Vec<SnapshotChunk>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel(addr).await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<SnapshotChunk, SendResponse>::default();
    let path = PathAndQuery::from_static("/telegraft.raft.v1.Raft/SendSnapshot");
    let req = tonic::Request::new(tokio_stream::iter(chunks));
    grpc.client_streaming(req, path, codec).await.map(|_| ())
}
