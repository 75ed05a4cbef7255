//! The gRPC services one replica port serves: `Chat` (clients), `Raft` (peers), `Admin`.
//!
//! Every replica accepts every chat RPC. A write or linearizable read on a follower is
//! forwarded to the leader (once: a forwarded request carries a header and is never forwarded
//! again); while no leader is known the request waits a bounded time for one, then fails with
//! UNAVAILABLE. Every failure is a [`RequestError`], turned into a gRPC status by the one
//! mapping in `error.rs` (the `?` in each handler).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc as tmpsc, oneshot};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::error::RequestError;
use super::fault::FaultHook;
use super::mailbox::{ApplierMsg, CoreInput, Query, QueryOutput};
use crate::chat::{Command, MessagesQuery, Outcome, SessionSeq, Write};
use crate::proto::admin::{
    RoleKind, SetPartitionRequest, SetPartitionResponse, StatusRequest, StatusResponse,
    admin_server::Admin,
};
use crate::proto::chat::chat_client::ChatClient;
use crate::proto::chat::chat_server::{Chat, ChatServer};
use crate::proto::chat::*;
use crate::proto::raft::{MessageBatch, SendResponse, SnapshotChunk, raft_server::Raft};
use crate::proto::{MAX_CHAT_REQUEST_BYTES, MAX_CHAT_RESPONSE_BYTES, time};
use crate::raft::{Envelope, Message as RaftMessage, NodeId};

/// Marks a request a follower forwarded to the leader.
const FORWARDED: &str = "x-telegraft-forwarded";
/// How long a request waits for a leader to be known before UNAVAILABLE.
const LEADER_WAIT: Duration = Duration::from_secs(3);
/// How long a write or read waits for its outcome before giving up (indeterminate).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct ChatService {
    core_tx: tmpsc::UnboundedSender<CoreInput>,
    applier_tx: mpsc::Sender<ApplierMsg>,
    peer_addrs: Arc<BTreeMap<NodeId, String>>,
    clients: Arc<Mutex<HashMap<NodeId, ChatClient<Channel>>>>,
    faults: Arc<FaultHook>,
}

enum Route<T> {
    Done(T),
    Forward(NodeId),
}

/// The client's exactly-once id as the state machine keeps it (client id 0: none).
fn session_seq(w: Option<WriteId>) -> Option<SessionSeq> {
    w.filter(|w| w.client_id != 0).map(|w| SessionSeq {
        client_id: w.client_id,
        sequence: w.sequence,
    })
}

/// Waits (bounded) for an actor's answer. No answer at all means the actor is gone.
async fn answer<T>(rx: oneshot::Receiver<Result<T, RequestError>>) -> Result<T, RequestError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(RequestError::Stopped),
        Err(_) => Err(RequestError::TimedOut),
    }
}

impl ChatService {
    pub fn new(
        core_tx: tmpsc::UnboundedSender<CoreInput>,
        applier_tx: mpsc::Sender<ApplierMsg>,
        peer_addrs: BTreeMap<NodeId, String>,
        faults: Arc<FaultHook>,
    ) -> ChatService {
        ChatService {
            core_tx,
            applier_tx,
            peer_addrs: Arc::new(peer_addrs),
            clients: Arc::new(Mutex::new(HashMap::new())),
            faults,
        }
    }

    fn client(&self, leader: NodeId) -> Result<ChatClient<Channel>, RequestError> {
        let mut clients = self.clients.lock().expect("lock");
        if let Some(c) = clients.get(&leader) {
            return Ok(c.clone());
        }
        let addr = self
            .peer_addrs
            .get(&leader)
            .ok_or_else(|| RequestError::Internal(format!("unknown node {leader}")))?;
        let channel = Channel::from_shared(format!("http://{addr}"))
            .map_err(|e| RequestError::Internal(e.to_string()))?
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        let client = ChatClient::new(channel)
            .max_decoding_message_size(MAX_CHAT_RESPONSE_BYTES)
            .max_encoding_message_size(MAX_CHAT_REQUEST_BYTES);
        clients.insert(leader, client.clone());
        Ok(client)
    }

    /// Runs `op` against the local node until it answers or names a leader to forward to;
    /// waits (bounded) while no leader is known.
    async fn route<T, F, Fut>(&self, forwarded: bool, op: F) -> Result<Route<T>, RequestError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, RequestError>>,
    {
        let start = Instant::now();
        loop {
            match op().await {
                Ok(v) => return Ok(Route::Done(v)),
                Err(RequestError::NotLeader { leader: Some(l) }) if !forwarded => {
                    if self.faults.is_blocked(l) {
                        return Err(RequestError::PartitionedFromLeader);
                    }
                    return Ok(Route::Forward(l));
                }
                Err(RequestError::NotLeader { .. }) if start.elapsed() < LEADER_WAIT => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn propose(&self, write: &Write) -> Result<Outcome, RequestError> {
        // Stamped with this replica's clock as it proposes: only a leader accepts a proposal
        // (a follower forwards the request, and the leader there stamps its own), so the
        // entry carries the leader's time, from which every replica derives the same
        // `committed_at` (`chat/store.rs`).
        let write = &Write {
            proposed_at_us: time::unix_micros(std::time::SystemTime::now()),
            ..write.clone()
        };
        let (reply, rx) = oneshot::channel();
        self.core_tx
            .send(CoreInput::Propose {
                write: write.encode(),
                reply,
            })
            .map_err(|_| RequestError::Stopped)?;
        answer(rx).await
    }

    /// A linearizable read through the core actor, or a local one straight from the applier.
    async fn read(
        &self,
        query: impl Fn() -> Query,
        local: bool,
    ) -> Result<QueryOutput, RequestError> {
        let (reply, rx) = oneshot::channel();
        let sent = if local {
            self.applier_tx
                .send(ApplierMsg::Query {
                    query: query(),
                    reply,
                })
                .is_ok()
        } else {
            self.core_tx
                .send(CoreInput::Read {
                    query: query(),
                    reply,
                })
                .is_ok()
        };
        if !sent {
            return Err(RequestError::Stopped);
        }
        answer(rx).await
    }

    /// Proposes a write locally, or says where to forward it.
    async fn write(
        &self,
        forwarded: bool,
        id: Option<WriteId>,
        command: Command,
    ) -> Result<Route<Outcome>, RequestError> {
        let write = Write {
            session: session_seq(id),
            command,
            proposed_at_us: 0, // stamped when proposed
        };
        write.command.validate()?;
        self.route(forwarded, || self.propose(&write)).await
    }

    async fn query(
        &self,
        forwarded: bool,
        local: bool,
        query: impl Fn() -> Query,
    ) -> Result<Route<QueryOutput>, RequestError> {
        self.route(forwarded, || self.read(&query, local)).await
    }
}

impl ChatService {
    /// The gRPC server for this service, with explicit bounds on what it decodes and
    /// encodes ([`MAX_CHAT_REQUEST_BYTES`], [`MAX_CHAT_RESPONSE_BYTES`]): a larger request is
    /// refused (OUT_OF_RANGE) before it is read whole.
    pub fn into_server(self) -> ChatServer<ChatService> {
        ChatServer::new(self)
            .max_decoding_message_size(MAX_CHAT_REQUEST_BYTES)
            .max_encoding_message_size(MAX_CHAT_RESPONSE_BYTES)
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
            sent_time_us: r.sent_time.as_ref().map(time::micros),
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
        let q = MessagesQuery {
            user_id: r.user_id,
            after_us: r.messages_after.as_ref().map_or(i64::MIN, time::micros),
            limit: r.limit,
        };
        let q = || Query::Messages(q.clone());
        match self.query(fwd, is_local(r.consistency), q).await? {
            Route::Done(QueryOutput::Messages(page)) => Ok(Response::new(GetMessagesResponse {
                messages: page
                    .messages
                    .into_iter()
                    .map(|m| Message {
                        message_id: m.message_id,
                        chat_id: m.chat_id,
                        user_id: m.user_id,
                        content: m.content,
                        sent_time: m.sent_time_us.map(time::from_micros),
                        committed_at: Some(time::from_micros(m.committed_at_us)),
                    })
                    .collect(),
                has_more: page.has_more,
            })),
            Route::Done(_) => Err(RequestError::Internal("wrong query result".into()).into()),
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
            Route::Done(_) => Err(RequestError::Internal("wrong query result".into()).into()),
            Route::Forward(l) => self.client(l)?.get_chat_users(mark(r)).await,
        }
    }
}

/// Peer transport: decodes a batch of Raft messages into the core actor's inbox.
pub struct RaftService {
    pub core_tx: tmpsc::UnboundedSender<CoreInput>,
    pub faults: Arc<FaultHook>,
}

fn bad_message(what: &str, e: postcard::Error) -> RequestError {
    RequestError::BadPeerMessage(format!("bad {what}: {e}"))
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn send(&self, req: Request<MessageBatch>) -> Result<Response<SendResponse>, Status> {
        for bytes in req.into_inner().messages {
            let env: Envelope =
                postcard::from_bytes(&bytes).map_err(|e| bad_message("message", e))?;
            // A partition (fault injection): the message is lost on the way.
            if self.faults.is_blocked(env.from) {
                continue;
            }
            self.core_tx
                .send(CoreInput::Peer(env))
                .map_err(|_| RequestError::Stopped)?;
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
                    .map_err(|e| bad_message("snapshot header", e))?;
                if self.faults.is_blocked(e.from) {
                    return Err(RequestError::PartitionedPeer.into());
                }
                env = Some(e);
            }
            data.extend_from_slice(&chunk.data);
            chunks += 1;
        }
        let mut env =
            env.ok_or_else(|| RequestError::BadPeerMessage("empty snapshot stream".into()))?;
        let RaftMessage::InstallSnapshot { snapshot, .. } = &mut env.message else {
            return Err(
                RequestError::BadPeerMessage("not an InstallSnapshot message".into()).into(),
            );
        };
        tracing::info!(bytes = data.len(), chunks, "snapshot received");
        snapshot.data = data;
        self.core_tx
            .send(CoreInput::Peer(env))
            .map_err(|_| RequestError::Stopped)?;
        Ok(Response::new(SendResponse {}))
    }
}

pub struct AdminService {
    pub core_tx: tmpsc::UnboundedSender<CoreInput>,
    pub applier_tx: mpsc::Sender<ApplierMsg>,
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
        self.core_tx
            .send(CoreInput::Status { reply })
            .map_err(|_| RequestError::Stopped)?;
        let s = rx.await.map_err(|_| RequestError::Stopped)?;
        let (reply, rx) = oneshot::channel();
        self.applier_tx
            .send(ApplierMsg::Query {
                query: Query::Digest,
                reply,
            })
            .map_err(|_| RequestError::Stopped)?;
        let Ok(Ok(QueryOutput::Digest {
            applied_index,
            digest,
        })) = rx.await
        else {
            return Err(RequestError::Stopped.into());
        };
        Ok(Response::new(StatusResponse {
            node_id: s.id,
            role: s.role.to_string(),
            role_kind: RoleKind::from(s.role).into(),
            term: s.term,
            leader_id: s.leader.unwrap_or(0),
            commit_index: s.commit_index,
            applied_index,
            last_log_index: s.last_index,
            pid: std::process::id(),
            state_digest: digest,
        }))
    }
}
