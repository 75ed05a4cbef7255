//! The gRPC services one replica port serves: `Chat` (clients), `Raft` (peers), `Admin`.
//!
//! Every replica accepts every chat RPC. A write or linearizable read on a follower is
//! forwarded to the leader (once: a forwarded request carries a header and is never forwarded
//! again); while no leader is known the request waits a bounded time for one, then fails with
//! UNAVAILABLE. The mapping from errors to gRPC status codes lives in [`chat_status`] and
//! [`node_status`], and nowhere else.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use prost_types::Timestamp;
use tokio::sync::{mpsc as tmpsc, oneshot};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::FaultHook;
use super::applier::{ApplierMsg, Query, QueryOutput};
use super::node::{NodeError, NodeInput};
use crate::chat::{ChatError, Command, Outcome, Write};
use crate::proto::admin::{
    RoleKind, SetPartitionRequest, SetPartitionResponse, StatusRequest, StatusResponse,
    admin_server::Admin,
};
use crate::proto::chat::chat_client::ChatClient;
use crate::proto::chat::chat_server::Chat;
use crate::proto::chat::*;
use crate::proto::raft::{MessageBatch, SendResponse, SnapshotChunk, raft_server::Raft};
use crate::raft::{Envelope, Message as RaftMessage, NodeId, Role};

/// Marks a request a follower forwarded to the leader.
const FORWARDED: &str = "x-telegraft-forwarded";
/// How long a request waits for a leader to be known before UNAVAILABLE.
const LEADER_WAIT: Duration = Duration::from_secs(3);
/// How long a write or read waits for its outcome before giving up (indeterminate).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The single mapping from chat state-machine rejections to gRPC codes.
pub fn chat_status(e: ChatError) -> Status {
    match e {
        ChatError::InvalidArgument(m) => Status::invalid_argument(m),
        ChatError::NotFound(m) => Status::not_found(m),
        ChatError::AlreadyExists(m) => Status::already_exists(m),
        ChatError::FailedPrecondition(m) => Status::failed_precondition(m),
    }
}

/// The single mapping from node-level failures to gRPC codes. All are retryable.
pub fn node_status(e: NodeError) -> Status {
    match e {
        NodeError::NotLeader { .. } => Status::unavailable("no leader is available"),
        NodeError::NotCommitted => Status::unavailable(e.to_string()),
        NodeError::Stopped => Status::unavailable(e.to_string()),
        NodeError::OutcomeUnknown => Status::deadline_exceeded(e.to_string()),
    }
}

#[derive(Clone)]
pub struct ChatService {
    node_tx: tmpsc::UnboundedSender<NodeInput>,
    applier_tx: Arc<Mutex<mpsc::Sender<ApplierMsg>>>,
    peer_addrs: Arc<BTreeMap<NodeId, String>>,
    clients: Arc<Mutex<HashMap<NodeId, ChatClient<Channel>>>>,
    faults: Arc<FaultHook>,
}

enum Route<T> {
    Done(T),
    Forward(NodeId),
}

fn micros(ts: Option<Timestamp>) -> i64 {
    ts.map_or(0, |t| {
        t.seconds
            .saturating_mul(1_000_000)
            .saturating_add(i64::from(t.nanos / 1000))
    })
}

fn timestamp(us: i64) -> Timestamp {
    Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: (us.rem_euclid(1_000_000) * 1000) as i32,
    }
}

fn write_id(w: Option<WriteId>) -> Option<(u64, u64)> {
    w.filter(|w| w.client_id != 0)
        .map(|w| (w.client_id, w.sequence))
}

impl ChatService {
    pub fn new(
        node_tx: tmpsc::UnboundedSender<NodeInput>,
        applier_tx: mpsc::Sender<ApplierMsg>,
        peer_addrs: BTreeMap<NodeId, String>,
        faults: Arc<FaultHook>,
    ) -> ChatService {
        ChatService {
            node_tx,
            applier_tx: Arc::new(Mutex::new(applier_tx)),
            peer_addrs: Arc::new(peer_addrs),
            clients: Arc::new(Mutex::new(HashMap::new())),
            faults,
        }
    }

    fn client(&self, leader: NodeId) -> Result<ChatClient<Channel>, Status> {
        let mut clients = self.clients.lock().expect("lock");
        if let Some(c) = clients.get(&leader) {
            return Ok(c.clone());
        }
        let addr = self
            .peer_addrs
            .get(&leader)
            .ok_or_else(|| Status::internal(format!("unknown node {leader}")))?;
        let channel = Channel::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::internal(e.to_string()))?
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        let client = ChatClient::new(channel).max_decoding_message_size(64 << 20);
        clients.insert(leader, client.clone());
        Ok(client)
    }

    /// Runs `op` against the local node until it answers or names a leader to forward to;
    /// waits (bounded) while no leader is known.
    async fn route<T, F, Fut>(&self, forwarded: bool, op: F) -> Result<Route<T>, Status>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Result<T, NodeError>, Status>>,
    {
        let start = Instant::now();
        loop {
            match op().await? {
                Ok(v) => return Ok(Route::Done(v)),
                Err(NodeError::NotLeader { leader: Some(l) }) if !forwarded => {
                    if self.faults.is_blocked(l) {
                        return Err(Status::unavailable("partitioned from the leader"));
                    }
                    return Ok(Route::Forward(l));
                }
                Err(NodeError::NotLeader { .. }) if start.elapsed() < LEADER_WAIT => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(node_status(e)),
            }
        }
    }

    async fn propose(
        &self,
        write: &Write,
    ) -> Result<Result<Result<Outcome, ChatError>, NodeError>, Status> {
        let (reply, rx) = oneshot::channel();
        self.node_tx
            .send(NodeInput::Propose {
                write: write.encode(),
                reply,
            })
            .map_err(|_| Status::unavailable("node stopped"))?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(Status::unavailable("node stopped")),
            Err(_) => Err(Status::deadline_exceeded(
                "the write's outcome is unknown (timed out)",
            )),
        }
    }

    async fn read(
        &self,
        query: impl Fn() -> Query,
        local: bool,
    ) -> Result<Result<QueryOutput, ChatError>, NodeError> {
        let (reply, rx) = oneshot::channel();
        if local {
            let sent = self
                .applier_tx
                .lock()
                .expect("lock")
                .send(ApplierMsg::Query {
                    query: query(),
                    reply,
                });
            if sent.is_err() {
                return Err(NodeError::Stopped);
            }
        } else if self
            .node_tx
            .send(NodeInput::Read {
                query: query(),
                reply,
            })
            .is_err()
        {
            return Err(NodeError::Stopped);
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(NodeError::Stopped),
            Err(_) => Err(NodeError::OutcomeUnknown),
        }
    }

    /// Proposes a write locally, or says where to forward it.
    async fn write(
        &self,
        forwarded: bool,
        id: Option<WriteId>,
        command: Command,
    ) -> Result<Route<Outcome>, Status> {
        let write = Write {
            write_id: write_id(id),
            command,
        };
        write.command.validate().map_err(chat_status)?;
        match self.route(forwarded, || self.propose(&write)).await? {
            Route::Done(r) => Ok(Route::Done(r.map_err(chat_status)?)),
            Route::Forward(l) => Ok(Route::Forward(l)),
        }
    }

    async fn query(
        &self,
        forwarded: bool,
        local: bool,
        query: impl Fn() -> Query,
    ) -> Result<Route<QueryOutput>, Status> {
        let routed = self
            .route(forwarded, || async { Ok(self.read(&query, local).await) })
            .await?;
        match routed {
            Route::Done(r) => Ok(Route::Done(r.map_err(chat_status)?)),
            Route::Forward(l) => Ok(Route::Forward(l)),
        }
    }
}

fn forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED)
}

fn mark<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert(FORWARDED, "1".parse().expect("ascii"));
    req.set_timeout(REQUEST_TIMEOUT);
    req
}

fn created(o: Outcome) -> u64 {
    match o {
        Outcome::Created(id) => id,
        Outcome::Done => 0,
    }
}

fn is_local(c: i32) -> bool {
    c == Consistency::Local as i32
}

#[tonic::async_trait]
impl Chat for ChatService {
    async fn create_user(
        &self,
        req: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserResponse>, Status> {
        let fwd = forwarded(&req);
        let r = req.into_inner();
        let command = Command::CreateUser {
            username: r.username.clone(),
        };
        match self.write(fwd, r.write_id, command).await? {
            Route::Done(o) => Ok(Response::new(CreateUserResponse {
                user_id: created(o),
            })),
            Route::Forward(l) => self.client(l)?.create_user(mark(r)).await,
        }
    }

    async fn create_chat(
        &self,
        req: Request<CreateChatRequest>,
    ) -> Result<Response<CreateChatResponse>, Status> {
        let fwd = forwarded(&req);
        let r = req.into_inner();
        let command = Command::CreateChat {
            user_id: r.user_id,
            name: r.chat_name.clone(),
        };
        match self.write(fwd, r.write_id, command).await? {
            Route::Done(o) => Ok(Response::new(CreateChatResponse {
                chat_id: created(o),
            })),
            Route::Forward(l) => self.client(l)?.create_chat(mark(r)).await,
        }
    }

    async fn join_chat(
        &self,
        req: Request<JoinChatRequest>,
    ) -> Result<Response<JoinChatResponse>, Status> {
        let fwd = forwarded(&req);
        let r = req.into_inner();
        let command = Command::JoinChat {
            user_id: r.user_id,
            chat_id: r.chat_id,
        };
        match self.write(fwd, r.write_id, command).await? {
            Route::Done(_) => Ok(Response::new(JoinChatResponse {})),
            Route::Forward(l) => self.client(l)?.join_chat(mark(r)).await,
        }
    }

    async fn send_message(
        &self,
        req: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let fwd = forwarded(&req);
        let r = req.into_inner();
        let command = Command::SendMessage {
            user_id: r.user_id,
            chat_id: r.chat_id,
            content: r.content.clone(),
            sent_time_us: micros(r.sent_time),
        };
        match self.write(fwd, r.write_id, command).await? {
            Route::Done(o) => Ok(Response::new(SendMessageResponse {
                message_id: created(o),
            })),
            Route::Forward(l) => self.client(l)?.send_message(mark(r)).await,
        }
    }

    async fn get_messages(
        &self,
        req: Request<GetMessagesRequest>,
    ) -> Result<Response<GetMessagesResponse>, Status> {
        let fwd = forwarded(&req);
        let r = req.into_inner();
        let (user_id, after_us) = (r.user_id, micros(r.messages_after));
        let q = || Query::Messages { user_id, after_us };
        match self.query(fwd, is_local(r.consistency), q).await? {
            Route::Done(QueryOutput::Messages(ms)) => Ok(Response::new(GetMessagesResponse {
                messages: ms
                    .into_iter()
                    .map(|m| Message {
                        message_id: m.message_id,
                        chat_id: m.chat_id,
                        user_id: m.user_id,
                        content: m.content,
                        sent_time: Some(timestamp(m.sent_time_us)),
                    })
                    .collect(),
            })),
            Route::Done(_) => Err(Status::internal("wrong query result")),
            Route::Forward(l) => self.client(l)?.get_messages(mark(r)).await,
        }
    }

    async fn get_chat_users(
        &self,
        req: Request<GetChatUsersRequest>,
    ) -> Result<Response<GetChatUsersResponse>, Status> {
        let fwd = forwarded(&req);
        let r = req.into_inner();
        let chat_id = r.chat_id;
        match self
            .query(fwd, is_local(r.consistency), || Query::ChatUsers {
                chat_id,
            })
            .await?
        {
            Route::Done(QueryOutput::ChatUsers(us)) => Ok(Response::new(GetChatUsersResponse {
                users: us
                    .into_iter()
                    .map(|(user_id, username)| User { user_id, username })
                    .collect(),
            })),
            Route::Done(_) => Err(Status::internal("wrong query result")),
            Route::Forward(l) => self.client(l)?.get_chat_users(mark(r)).await,
        }
    }
}

/// Peer transport: decodes a batch of Raft messages into the node's inbox.
pub struct RaftService {
    pub node_tx: tmpsc::UnboundedSender<NodeInput>,
    pub faults: Arc<FaultHook>,
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn send(&self, req: Request<MessageBatch>) -> Result<Response<SendResponse>, Status> {
        for bytes in req.into_inner().messages {
            let env: Envelope = postcard::from_bytes(&bytes)
                .map_err(|e| Status::invalid_argument(format!("bad message: {e}")))?;
            // A partition (fault injection): the message is lost on the way.
            if self.faults.is_blocked(env.from) {
                continue;
            }
            self.node_tx
                .send(NodeInput::Peer(env))
                .map_err(|_| Status::unavailable("node stopped"))?;
        }
        Ok(Response::new(SendResponse {}))
    }

    async fn send_snapshot(
        &self,
        req: Request<tonic::Streaming<SnapshotChunk>>,
    ) -> Result<Response<SendResponse>, Status> {
        let mut stream = req.into_inner();
        let mut env: Option<Envelope> = None;
        let mut data = Vec::new();
        let mut chunks = 0;
        while let Some(chunk) = stream.message().await? {
            if env.is_none() {
                let e: Envelope = postcard::from_bytes(&chunk.message)
                    .map_err(|e| Status::invalid_argument(format!("bad snapshot header: {e}")))?;
                if self.faults.is_blocked(e.from) {
                    return Err(Status::unavailable("partitioned"));
                }
                env = Some(e);
            }
            data.extend_from_slice(&chunk.data);
            chunks += 1;
        }
        let mut env = env.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let RaftMessage::InstallSnapshot { snapshot, .. } = &mut env.message else {
            return Err(Status::invalid_argument("not an InstallSnapshot message"));
        };
        tracing::info!(bytes = data.len(), chunks, "snapshot received");
        snapshot.data = data;
        self.node_tx
            .send(NodeInput::Peer(env))
            .map_err(|_| Status::unavailable("node stopped"))?;
        Ok(Response::new(SendResponse {}))
    }
}

pub struct AdminService {
    pub node_tx: tmpsc::UnboundedSender<NodeInput>,
    pub applier_tx: Arc<Mutex<mpsc::Sender<ApplierMsg>>>,
    pub faults: Arc<FaultHook>,
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn set_partition(
        &self,
        req: Request<SetPartitionRequest>,
    ) -> Result<Response<SetPartitionResponse>, Status> {
        self.faults.set(req.into_inner().blocked)?;
        Ok(Response::new(SetPartitionResponse {}))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let (reply, rx) = oneshot::channel();
        self.node_tx
            .send(NodeInput::Status { reply })
            .map_err(|_| Status::unavailable("node stopped"))?;
        let s = rx.await.map_err(|_| Status::unavailable("node stopped"))?;
        let (dreply, drx) = oneshot::channel();
        let sent = self
            .applier_tx
            .lock()
            .expect("lock")
            .send(ApplierMsg::Query {
                query: Query::Digest,
                reply: dreply,
            });
        if sent.is_err() {
            return Err(Status::unavailable("node stopped"));
        }
        let (applied, digest) = match drx.await {
            Ok(Ok(Ok(QueryOutput::Digest {
                applied_index,
                digest,
            }))) => (applied_index, digest),
            _ => return Err(Status::unavailable("node stopped")),
        };
        Ok(Response::new(StatusResponse {
            node_id: s.id,
            role: s.role.to_string(),
            role_kind: RoleKind::from(s.role).into(),
            term: s.term,
            leader_id: s.leader.unwrap_or(0),
            commit_index: s.commit_index,
            applied_index: applied,
            last_log_index: s.last_index,
            pid: std::process::id(),
            state_digest: digest,
        }))
    }
}
