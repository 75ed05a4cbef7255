//! The gRPC services one replica port serves: `Chat` (clients), `Raft` (peers), `Admin`.
//!
//! Every replica accepts every chat RPC. A write or linearizable read on a follower is
//! forwarded to the leader (once: a forwarded request carries a header and is never forwarded
//! again); while no leader is known the request waits a bounded time for one, then fails with
//! UNAVAILABLE. A forwarded call follows the cluster: when the core actor reports another
//! leader, or the call finds the leader unreachable, it is routed again (reads, and writes
//! with a write id, which the state machine applies once), so a frozen or dead leader costs
//! the client an election, not a timeout. Every failure is a [`RequestError`], turned into a gRPC status by the one
//! mapping in `error.rs` (the `?` in each handler).
//!
//! Admission: every chat call first takes one of `--max-inflight` slots and holds it until it
//! is answered (a forwarded call holds it while the leader works). With none free it is
//! answered RESOURCE_EXHAUSTED at once, so an overloaded replica queues nothing more.
//!
//! Observing: proposals refused here (overloaded, invalid) and requests forwarded are
//! counted (`observe.rs`); the per-call latency is the gRPC layer's. With tracing on, each
//! write runs in a `chat_write` span (rpc, write id, and the log index once proposed),
//! which the core actor, the storage writer and the applier hang their spans under; each
//! read in a `chat_read` span.
//!
//! The Raft service takes whatever a peer sends without trusting it: bytes that do not decode,
//! and messages the core refuses, are dropped with a rate-limited warning, and the rest of
//! the batch goes on. A snapshot stream is written to a file as it arrives, with a size cap, a
//! checksum and a deadline, one at a time (`snapshot_stream.rs`).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::auth::{AUTHORIZATION, ChatAuth, acting_as};
use super::error::RequestError;
use super::fault::FaultHook;
use super::mailbox::{ApplierMsg, CoreInput, CoreSender, Query, QueryOutput, WriteTrace};
use super::observe::Metrics;
use super::peer::Transport;
use super::snapshot_stream;
use super::throttle::Throttle;
use crate::chat::{ChatError, Command, MessagesQuery, Outcome, SessionSeq, Write};
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
use crate::security::tls::PeerIdentity;
use crate::security::{Caller, password};
use crate::storage::SnapshotDir;

/// A chat client to another replica.
type Client = ChatClient<Channel>;

/// Marks a request a follower forwarded to the leader.
const FORWARDED: &str = "x-telegraft-forwarded";
/// On a forwarded `CreateUser`: the password's hash, made by the follower (the password
/// itself is not passed on). Honoured only on a forwarded request, only as a well-formed
/// Argon2 hash with at most the default cost, and, with TLS, only from a node certificate.
const PASSWORD_HASH: &str = "x-telegraft-password-hash";
/// How long a request waits for a leader to be known before UNAVAILABLE.
const LEADER_WAIT: Duration = Duration::from_secs(3);
/// How long a write or read waits for its outcome before giving up (indeterminate).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct ChatService {
    core_tx: CoreSender,
    applier_tx: mpsc::SyncSender<ApplierMsg>,
    peer_addrs: Arc<BTreeMap<NodeId, String>>,
    clients: Arc<Mutex<HashMap<NodeId, ChatClient<Channel>>>>,
    faults: Arc<FaultHook>,
    /// One permit per request in progress here (`--max-inflight`).
    inflight: Arc<Semaphore>,
    /// One permit per core: Argon2 runs at once ([`ChatService::argon2`]).
    hashing: Arc<Semaphore>,
    /// The leader the core actor knows of: a forwarded request is abandoned when it changes.
    leader: watch::Receiver<Option<NodeId>>,
    metrics: Metrics,
    auth: Arc<ChatAuth>,
    /// How forwarded calls reach the leader (TLS with this node's certificate, if on).
    transport: Transport,
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

/// Queues work for the applier without waiting: a full queue is an overloaded replica.
/// The message is counted into the applier's queue gauge, which the applier counts down.
fn to_applier(
    tx: &mpsc::SyncSender<ApplierMsg>,
    metrics: &Metrics,
    msg: ApplierMsg,
) -> Result<(), RequestError> {
    metrics.queue_applier.increment(1.0);
    tx.try_send(msg).map_err(|e| {
        metrics.queue_applier.decrement(1.0);
        match e {
            mpsc::TrySendError::Full(_) => RequestError::Overloaded,
            mpsc::TrySendError::Disconnected(_) => RequestError::Stopped,
        }
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

/// Who a chat service may talk to and who may talk to it: the peers it forwards to and how
/// (cluster id, TLS), and the chat authentication it applies.
pub struct ChatEdge {
    pub peer_addrs: BTreeMap<NodeId, String>,
    pub transport: Transport,
    pub auth: Arc<ChatAuth>,
}

impl ChatService {
    pub fn new(
        core_tx: CoreSender,
        applier_tx: mpsc::SyncSender<ApplierMsg>,
        edge: ChatEdge,
        faults: Arc<FaultHook>,
        max_inflight: usize,
        leader: watch::Receiver<Option<NodeId>>,
        metrics: Metrics,
    ) -> ChatService {
        ChatService {
            auth: edge.auth,
            transport: edge.transport,
            core_tx,
            applier_tx,
            peer_addrs: Arc::new(edge.peer_addrs),
            clients: Arc::new(Mutex::new(HashMap::new())),
            faults,
            inflight: Arc::new(Semaphore::new(max_inflight)),
            hashing: Arc::new(Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            )),
            leader,
            metrics,
        }
    }

    /// The hash to store for a new user: the one a follower made, on a request it forwarded
    /// (checked), or this replica's hash of `password` (on the blocking pool: Argon2 costs
    /// tens of milliseconds by design); `None` without a password.
    async fn password_hash(
        &self,
        origin: &Origin,
        from_node: bool,
        password: &str,
    ) -> Result<Option<String>, RequestError> {
        if let Some(h) = &origin.password_hash {
            let trusted = from_node || self.transport.tls.is_none();
            if !trusted || !password::is_hash(h) {
                return Err(RequestError::PermissionDenied(
                    "a forwarded password hash is accepted only from a peer, within the \
                     default Argon2 cost"
                        .into(),
                ));
            }
            return Ok(Some(h.clone()));
        }
        if password.is_empty() {
            return Ok(None);
        }
        password::check(password).map_err(ChatError::InvalidArgument)?;
        let password = password.to_string();
        self.argon2(move || password::hash(&password))
            .await?
            .map_err(|e| RequestError::Internal(format!("hashing the password: {e}")))?
            .map(Some)
            .map_err(RequestError::Internal)
    }

    /// Runs an Argon2 hash or check on the blocking pool, at most one per core at once: each
    /// takes 19 MiB and tens of milliseconds of a core, so without a bound a burst of logins
    /// (up to `--max-inflight`) would take the blocking pool's 512 threads and gigabytes of
    /// memory. A call waits its turn, holding only its admission slot.
    async fn argon2<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<Result<T, String>, RequestError> {
        let _turn = self
            .hashing
            .acquire()
            .await
            .map_err(|_| RequestError::Stopped)?;
        Ok(tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| format!("password hashing: {e}")))
    }

    /// The id and password hash of `username`: from this replica's own state when it has
    /// the user (a user's hash never changes once created, so a local read cannot be
    /// stale), otherwise by a linearizable read (a user created an instant ago), which may
    /// name a leader to forward the whole call to.
    async fn credentials(
        &self,
        fwd: bool,
        username: &str,
    ) -> Result<Route<Option<(u64, String)>>, RequestError> {
        let q = || Query::Credentials {
            username: username.to_string(),
        };
        let unexpected = || RequestError::Internal("wrong query result".into());
        match self.read(q, true).await? {
            QueryOutput::Credentials(Some(c)) => return Ok(Route::Done(Some(c))),
            QueryOutput::Credentials(None) => {}
            _ => return Err(unexpected()),
        }
        match self.query("Login", fwd, false, q).await? {
            Route::Done(QueryOutput::Credentials(c)) => Ok(Route::Done(c)),
            Route::Done(_) => Err(unexpected()),
            Route::Forward(l) => Ok(Route::Forward(l)),
        }
    }

    /// Admission: a slot for one request, held until it is answered, or RESOURCE_EXHAUSTED.
    fn admit(&self) -> Result<OwnedSemaphorePermit, RequestError> {
        self.inflight
            .clone()
            .try_acquire_owned()
            .map_err(|_| RequestError::Overloaded)
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
        let channel = self
            .transport
            .endpoint(addr)
            .map_err(|e| RequestError::Internal(e.to_string()))?
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        let client = ChatClient::new(channel)
            .max_decoding_message_size(MAX_CHAT_RESPONSE_BYTES)
            .max_encoding_message_size(MAX_CHAT_REQUEST_BYTES);
        clients.insert(leader, client.clone());
        Ok(client)
    }

    /// Drops the cached channel to `leader` after a call found it unreachable, so that the
    /// next forward connects afresh and resolves the leader's name again: in a container
    /// network a restarted replica may come back at another address under the same name.
    fn forget_client(&self, leader: NodeId) {
        self.clients.lock().expect("lock").remove(&leader);
    }

    /// Runs `op` against the local node until it answers or names a leader to forward to;
    /// waits (bounded) while no reachable leader is known.
    async fn route<T, F, Fut>(&self, forwarded: bool, op: F) -> Result<Route<T>, RequestError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, RequestError>>,
    {
        let start = Instant::now();
        loop {
            match op().await {
                Ok(v) => return Ok(Route::Done(v)),
                Err(RequestError::NotLeader { leader: Some(l) })
                    if !forwarded && !self.faults.is_blocked(l) =>
                {
                    return Ok(Route::Forward(l));
                }
                // No leader known, or only one that fault injection cut this replica off
                // from: wait (bounded) for one it can reach, as behind a real partition,
                // where the majority soon elects one. Failing at once would send the client
                // elsewhere, perhaps to the cut-off leader itself.
                Err(RequestError::NotLeader { .. }) if start.elapsed() < LEADER_WAIT => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(RequestError::NotLeader { leader: Some(l) }) if self.faults.is_blocked(l) => {
                    return Err(RequestError::PartitionedFromLeader);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn propose(
        &self,
        write: &Write,
        trace: &Option<WriteTrace>,
    ) -> Result<Outcome, RequestError> {
        // Stamped with this replica's clock as it proposes: only a leader accepts a proposal
        // (a follower forwards the request, and the leader there stamps its own), so the
        // entry carries the leader's time, from which every replica derives the same
        // `committed_at` (`chat/store.rs`).
        let write = &Write {
            proposed_at_us: time::unix_micros(std::time::SystemTime::now()),
            ..write.clone()
        };
        let (reply, rx) = oneshot::channel();
        let sent = self.core_tx.send(CoreInput::Propose {
            write: write.encode(),
            reply,
            trace: trace.clone(),
        });
        if let Err(RequestError::Overloaded) = sent {
            self.metrics.proposals_overloaded.increment(1);
        }
        sent?;
        answer(rx).await
    }

    /// A linearizable read through the core actor, or a local one straight from the applier.
    async fn read(
        &self,
        query: impl Fn() -> Query,
        local: bool,
    ) -> Result<QueryOutput, RequestError> {
        let (reply, rx) = oneshot::channel();
        if local {
            let query = query();
            to_applier(
                &self.applier_tx,
                &self.metrics,
                ApplierMsg::Query { query, reply },
            )?;
        } else {
            let query = query();
            self.core_tx.send(CoreInput::Read { query, reply })?;
        }
        answer(rx).await
    }

    /// Sends a request on to leader `l` and waits for its answer, unless this replica learns
    /// first that `l` is no longer the leader (a new one was elected, or an election began):
    /// then the call is abandoned and `None` says "route it again". Without this, a request
    /// forwarded to a leader that was paused or cut off would wait out its whole timeout
    /// after the cluster had already moved on.
    ///
    /// When the call fails UNAVAILABLE (the leader is unreachable or has just lost its
    /// leadership) or with a transport error (the connection broke under the call: a leader
    /// killed an instant before, whose connection this follower had not yet seen close),
    /// and the request is safe to send again (`resend`), the follower waits,
    /// bounded, for the election that follows and routes it again, rather than passing a
    /// failure to the client that the cluster could absorb.
    async fn forward<R, Fut>(
        &self,
        l: NodeId,
        resend: bool,
        call: impl FnOnce(ChatClient<Channel>) -> Fut,
    ) -> Result<Option<Response<R>>, Status>
    where
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let client = self.client(l)?;
        self.metrics.forwarded.increment(1);
        tracing::debug!(leader = l, "forwarding to the leader");
        let mut leader = self.leader.clone();
        let moved_on = async move {
            if leader.wait_for(|now| *now != Some(l)).await.is_err() {
                // The core actor is gone, and the process with it: keep waiting.
                std::future::pending::<()>().await;
            }
        };
        tokio::pin!(moved_on);
        tokio::select! {
            answer = call(client) => match answer {
                Err(status) if leader_unreachable(&status) && resend => {
                    self.forget_client(l);
                    match tokio::time::timeout(LEADER_WAIT, moved_on).await {
                        Ok(()) => Ok(None),
                        Err(_) => Err(status),
                    }
                }
                answer => {
                    if answer.as_ref().is_err_and(leader_unreachable) {
                        self.forget_client(l);
                    }
                    answer.map(Some)
                }
            },
            () = &mut moved_on => Ok(None),
        }
    }

    /// Proposes a write locally, or says where to forward it.
    async fn write(
        &self,
        rpc: &'static str,
        forwarded: bool,
        id: Option<WriteId>,
        command: Command,
    ) -> Result<Route<Outcome>, RequestError> {
        let write = Write {
            session: session_seq(id),
            command,
            proposed_at_us: 0, // stamped when proposed
        };
        if let Err(e) = write.command.validate() {
            self.metrics.proposals_invalid.increment(1);
            return Err(e.into());
        }
        let (client_id, sequence) = id.map_or((0, 0), |w| (w.client_id, w.sequence));
        let span = tracing::debug_span!(
            "chat_write",
            rpc,
            client_id,
            sequence,
            forwarded,
            index = tracing::field::Empty
        );
        let trace = (!span.is_disabled()).then(|| WriteTrace {
            span: span.clone(),
            client_id,
            sequence,
        });
        self.route(forwarded, || self.propose(&write, &trace))
            .instrument(span)
            .await
    }

    async fn query(
        &self,
        rpc: &'static str,
        forwarded: bool,
        local: bool,
        query: impl Fn() -> Query,
    ) -> Result<Route<QueryOutput>, RequestError> {
        let span = tracing::debug_span!("chat_read", rpc, forwarded, local);
        self.route(forwarded, || self.read(&query, local))
            .instrument(span)
            .await
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

/// How often one request may be routed again after the leader it was forwarded to lost
/// leadership. A read or a write with a write id may be sent again safely (the state machine
/// applies a write id once); a write without one may already be in the old leader's log, so
/// it is answered "outcome unknown" at once instead.
struct Reroutes {
    left: u32,
    safe: bool,
}

impl Reroutes {
    const MAX: u32 = 4;

    fn read() -> Reroutes {
        Reroutes {
            left: Reroutes::MAX,
            safe: true,
        }
    }

    fn write(id: Option<WriteId>) -> Reroutes {
        Reroutes {
            left: Reroutes::MAX,
            safe: session_seq(id).is_some(),
        }
    }

    /// One more try, or the error to answer with.
    fn again(&mut self) -> Result<(), RequestError> {
        if !self.safe {
            return Err(RequestError::OutcomeUnknown);
        }
        if self.left == 0 {
            return Err(RequestError::NotLeader { leader: None });
        }
        self.left -= 1;
        Ok(())
    }
}

/// Whether a forwarded call failed because the leader could not be reached: UNAVAILABLE,
/// or an error of this node's own connection to it (tonic reports those as UNKNOWN,
/// "transport error", with the transport error as the source).
fn leader_unreachable(status: &Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable => true,
        tonic::Code::Unknown => {
            std::error::Error::source(status).is_some_and(|e| e.is::<tonic::transport::Error>())
        }
        _ => false,
    }
}

/// Where a request came from: a client, or a follower forwarding a client's request (which
/// is never forwarded again), and the client's token, passed on with it (the leader checks
/// it again).
struct Origin {
    forwarded: bool,
    authorization: Option<tonic::metadata::AsciiMetadataValue>,
    /// A forwarded `CreateUser`'s password hash ([`PASSWORD_HASH`]).
    password_hash: Option<String>,
}

impl Origin {
    fn of<T>(req: &Request<T>) -> Origin {
        let m = req.metadata();
        let forwarded = m.contains_key(FORWARDED);
        Origin {
            forwarded,
            authorization: m.get(AUTHORIZATION).cloned(),
            password_hash: m
                .get(PASSWORD_HASH)
                .filter(|_| forwarded)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        }
    }

    /// The request to forward to the leader.
    fn mark<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut()
            .insert(FORWARDED, "1".parse().expect("ascii"));
        if let Some(a) = &self.authorization {
            req.metadata_mut().insert(AUTHORIZATION, a.clone());
        }
        if let Some(h) = self.password_hash.as_deref().and_then(|h| h.parse().ok()) {
            req.metadata_mut().insert(PASSWORD_HASH, h);
        }
        req.set_timeout(REQUEST_TIMEOUT);
        req
    }
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
        let _slot = self.admit()?;
        let mut origin = Origin::of(&req);
        let fwd = origin.forwarded;
        // Whether the caller holds a node certificate: read only for a forwarded hash.
        let from_node = origin.password_hash.is_some()
            && matches!(
                PeerIdentity::of_request(&req),
                Some(Ok(PeerIdentity {
                    role: crate::security::tls::Role::Node(_),
                    ..
                }))
            );
        let mut r = req.into_inner();
        let hash = self.password_hash(&origin, from_node, &r.password).await?;
        if hash.is_none() && self.auth.required() {
            return Err(Status::invalid_argument(
                "password is required: this cluster requires authentication",
            ));
        }
        let command = match &hash {
            Some(h) => Command::CreateUserWithPassword {
                username: r.username.clone(),
                password_hash: h.clone(),
            },
            None => Command::CreateUser {
                username: r.username.clone(),
            },
        };
        // The leader gets the hash, never the password.
        r.password.clear();
        origin.password_hash = hash;
        let origin = &origin;
        let mut reroutes = Reroutes::write(r.write_id);
        loop {
            match self
                .write("CreateUser", fwd, r.write_id, command.clone())
                .await?
            {
                Route::Done(o) => {
                    return Ok(Response::new(CreateUserResponse {
                        user_id: created(o),
                    }));
                }
                Route::Forward(l) => {
                    let r = r.clone();
                    let call = |mut c: Client| async move { c.create_user(origin.mark(r)).await };
                    if let Some(answer) = self.forward(l, reroutes.safe, call).await? {
                        return Ok(answer);
                    }
                }
            }
            reroutes.again()?;
        }
    }

    async fn create_chat(
        &self,
        req: Request<CreateChatRequest>,
    ) -> Result<Response<CreateChatResponse>, Status> {
        let caller = self.auth.caller(&req)?;
        let _slot = self.admit()?;
        let origin = &Origin::of(&req);
        let fwd = origin.forwarded;
        let mut r = req.into_inner();
        r.user_id = acting_as(caller, r.user_id)?;
        let command = Command::CreateChat {
            user_id: r.user_id,
            name: r.chat_name.clone(),
        };
        let mut reroutes = Reroutes::write(r.write_id);
        loop {
            match self
                .write("CreateChat", fwd, r.write_id, command.clone())
                .await?
            {
                Route::Done(o) => {
                    return Ok(Response::new(CreateChatResponse {
                        chat_id: created(o),
                    }));
                }
                Route::Forward(l) => {
                    let r = r.clone();
                    let call = |mut c: Client| async move { c.create_chat(origin.mark(r)).await };
                    if let Some(answer) = self.forward(l, reroutes.safe, call).await? {
                        return Ok(answer);
                    }
                }
            }
            reroutes.again()?;
        }
    }

    async fn join_chat(
        &self,
        req: Request<JoinChatRequest>,
    ) -> Result<Response<JoinChatResponse>, Status> {
        let caller = self.auth.caller(&req)?;
        let _slot = self.admit()?;
        let origin = &Origin::of(&req);
        let fwd = origin.forwarded;
        let mut r = req.into_inner();
        r.user_id = acting_as(caller, r.user_id)?;
        let command = Command::JoinChat {
            user_id: r.user_id,
            chat_id: r.chat_id,
        };
        let mut reroutes = Reroutes::write(r.write_id);
        loop {
            match self
                .write("JoinChat", fwd, r.write_id, command.clone())
                .await?
            {
                Route::Done(_) => return Ok(Response::new(JoinChatResponse {})),
                Route::Forward(l) => {
                    let call = |mut c: Client| async move { c.join_chat(origin.mark(r)).await };
                    if let Some(answer) = self.forward(l, reroutes.safe, call).await? {
                        return Ok(answer);
                    }
                }
            }
            reroutes.again()?;
        }
    }

    async fn send_message(
        &self,
        req: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let caller = self.auth.caller(&req)?;
        let _slot = self.admit()?;
        let origin = &Origin::of(&req);
        let fwd = origin.forwarded;
        let mut r = req.into_inner();
        r.user_id = acting_as(caller, r.user_id)?;
        let command = Command::SendMessage {
            user_id: r.user_id,
            chat_id: r.chat_id,
            content: r.content.clone(),
            sent_time_us: r.sent_time.as_ref().map(time::micros),
        };
        let mut reroutes = Reroutes::write(r.write_id);
        loop {
            match self
                .write("SendMessage", fwd, r.write_id, command.clone())
                .await?
            {
                Route::Done(o) => {
                    return Ok(Response::new(SendMessageResponse {
                        message_id: created(o),
                    }));
                }
                Route::Forward(l) => {
                    let r = r.clone();
                    let call = |mut c: Client| async move { c.send_message(origin.mark(r)).await };
                    if let Some(answer) = self.forward(l, reroutes.safe, call).await? {
                        return Ok(answer);
                    }
                }
            }
            reroutes.again()?;
        }
    }

    async fn get_messages(
        &self,
        req: Request<GetMessagesRequest>,
    ) -> Result<Response<GetMessagesResponse>, Status> {
        let caller = self.auth.caller(&req)?;
        let _slot = self.admit()?;
        let origin = &Origin::of(&req);
        let fwd = origin.forwarded;
        let mut r = req.into_inner();
        r.user_id = acting_as(caller, r.user_id)?;
        let q = MessagesQuery {
            user_id: r.user_id,
            after_us: r.messages_after.as_ref().map_or(i64::MIN, time::micros),
            limit: r.limit,
        };
        let q = || Query::Messages(q.clone());
        let mut reroutes = Reroutes::read();
        let page = loop {
            match self
                .query("GetMessages", fwd, is_local(r.consistency), q)
                .await?
            {
                Route::Done(QueryOutput::Messages(page)) => break page,
                Route::Done(_) => {
                    return Err(RequestError::Internal("wrong query result".into()).into());
                }
                Route::Forward(l) => {
                    let call = |mut c: Client| async move { c.get_messages(origin.mark(r)).await };
                    if let Some(answer) = self.forward(l, reroutes.safe, call).await? {
                        return Ok(answer);
                    }
                }
            }
            reroutes.again()?;
        };
        Ok(Response::new(GetMessagesResponse {
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
        }))
    }

    async fn get_chat_users(
        &self,
        req: Request<GetChatUsersRequest>,
    ) -> Result<Response<GetChatUsersResponse>, Status> {
        let caller = self.auth.caller(&req)?;
        let _slot = self.admit()?;
        let origin = &Origin::of(&req);
        let fwd = origin.forwarded;
        let r = req.into_inner();
        let chat_id = r.chat_id;
        let q = || Query::ChatUsers { chat_id };
        let mut reroutes = Reroutes::read();
        let users = loop {
            match self
                .query("GetChatUsers", fwd, is_local(r.consistency), q)
                .await?
            {
                Route::Done(QueryOutput::ChatUsers(us)) => {
                    if let Caller::User(me) = caller
                        && !us.iter().any(|(id, _)| *id == me)
                    {
                        return Err(RequestError::PermissionDenied(format!(
                            "only members of chat {chat_id} may list its users"
                        ))
                        .into());
                    }
                    break us;
                }
                Route::Done(_) => {
                    return Err(RequestError::Internal("wrong query result".into()).into());
                }
                Route::Forward(l) => {
                    let call =
                        |mut c: Client| async move { c.get_chat_users(origin.mark(r)).await };
                    if let Some(answer) = self.forward(l, reroutes.safe, call).await? {
                        return Ok(answer);
                    }
                }
            }
            reroutes.again()?;
        };
        Ok(Response::new(GetChatUsersResponse {
            users: users
                .into_iter()
                .map(|(user_id, username)| User { user_id, username })
                .collect(),
        }))
    }

    async fn login(&self, req: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        let _slot = self.admit()?;
        if !self.auth.can_login() {
            return Err(self.auth.mint(0).unwrap_err().into());
        }
        let origin = &Origin::of(&req);
        let r = req.into_inner();
        let mut reroutes = Reroutes::read();
        let found = loop {
            match self.credentials(origin.forwarded, &r.username).await? {
                Route::Done(c) => break c,
                Route::Forward(l) => {
                    let r = r.clone();
                    let call = |mut c: Client| async move { c.login(origin.mark(r)).await };
                    if let Some(answer) = self.forward(l, reroutes.safe, call).await? {
                        return Ok(answer);
                    }
                }
            }
            reroutes.again()?;
        };
        // An unknown user costs the same check as a wrong password, so that the time taken
        // does not say which usernames exist.
        let (user_id, hash) = found.unwrap_or_else(|| (0, password::decoy_hash().to_string()));
        let password = r.password;
        let ok = self
            .argon2(move || password::verify(&password, &hash))
            .await?
            .map_err(|e| RequestError::Internal(format!("checking the password: {e}")))?;
        if !ok || user_id == 0 {
            return Err(RequestError::Unauthenticated("wrong username or password".into()).into());
        }
        let (token, expires_at) = self.auth.mint(user_id)?;
        Ok(Response::new(LoginResponse {
            user_id,
            token,
            expires_at: Some(prost_types::Timestamp {
                seconds: expires_at as i64,
                nanos: 0,
            }),
        }))
    }
}

/// Largest snapshot file one `SendSnapshot` stream may carry; a larger one is refused (on
/// its announced size, before anything is written, and on every chunk).
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;
/// How long one `SendSnapshot` stream may take to arrive whole.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Peer transport: decodes a batch of Raft messages into the core actor's inbox. Nothing a
/// peer sends is trusted: the core validates every message ([`crate::raft::Node::validate`]);
/// here, bytes that do not decode, snapshots outside `SendSnapshot` and messages that find
/// the core's inbox full are dropped, each kind with a warning at most once a second.
pub struct RaftService {
    core_tx: CoreSender,
    faults: Arc<FaultHook>,
    /// This node's cluster: every batch and snapshot stream must carry it.
    cluster_id: Arc<str>,
    /// With TLS, a caller must also hold a node certificate of this cluster, and may send
    /// only messages from the node it names.
    tls: bool,
    warnings: Mutex<Throttle>,
    /// One snapshot stream is received at a time (each writes up to [`MAX_SNAPSHOT_BYTES`]
    /// to a temporary file, a few chunks in memory at once: `snapshot_stream.rs`).
    receiving: Semaphore,
    /// Where received snapshot files go.
    snapshots: SnapshotDir,
}

impl RaftService {
    pub fn new(
        core_tx: CoreSender,
        faults: Arc<FaultHook>,
        snapshots: SnapshotDir,
        transport: &Transport,
    ) -> RaftService {
        RaftService {
            core_tx,
            faults,
            cluster_id: transport.cluster_id.clone(),
            tls: transport.tls.is_some(),
            warnings: Mutex::new(Throttle::default()),
            receiving: Semaphore::new(1),
            snapshots,
        }
    }

    fn warn(&self, reason: &'static str, detail: impl FnOnce() -> String) {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .warn(reason, detail);
    }

    /// Whether a caller may speak as a peer: its batch names this cluster and, with TLS, it
    /// holds a node certificate of this cluster (whose node id is returned).
    fn admit_peer<T>(
        &self,
        req: &Request<T>,
        cluster: &str,
    ) -> Result<Option<NodeId>, RequestError> {
        let refuse = |m: String| {
            self.warn("peer refused", || m.clone());
            RequestError::PermissionDenied(m)
        };
        // A peer built before cluster ids sends none: it is of the default cluster.
        let cluster = if cluster.is_empty() {
            crate::security::DEFAULT_CLUSTER_ID
        } else {
            cluster
        };
        if cluster != &*self.cluster_id {
            return Err(refuse(format!(
                "a peer of cluster '{cluster}' is not a member of cluster '{}'",
                self.cluster_id
            )));
        }
        if !self.tls {
            return Ok(None);
        }
        PeerIdentity::require_node(req, &self.cluster_id)
            .map(Some)
            .map_err(refuse)
    }

    /// Hands one decoded message to the core. Only a stopped core fails the call.
    fn deliver(&self, env: Envelope) -> Result<(), RequestError> {
        match self.core_tx.send(CoreInput::Peer(env)) {
            Err(RequestError::Overloaded) => {
                self.warn("core inbox full", || {
                    "a peer message was dropped (Raft re-sends what matters)".into()
                });
                Ok(())
            }
            other => other,
        }
    }
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn send(&self, req: Request<MessageBatch>) -> Result<Response<SendResponse>, Status> {
        let node = self.admit_peer(&req, &req.get_ref().cluster_id)?;
        for bytes in req.into_inner().messages {
            let env: Envelope = match postcard::from_bytes(&bytes) {
                Ok(env) => env,
                Err(e) => {
                    self.warn("undecodable peer message", || {
                        format!("dropped {} bytes: {e}", bytes.len())
                    });
                    continue;
                }
            };
            // A node certificate speaks for its own node only.
            if let Some(node) = node
                && env.from != node
            {
                let m = format!(
                    "node {node}'s certificate sent a message from node {}",
                    env.from
                );
                self.warn("peer refused", || m.clone());
                return Err(Status::permission_denied(m));
            }
            // Snapshots travel on their own stream, where their size is capped.
            if matches!(env.message, RaftMessage::InstallSnapshot { .. }) {
                self.warn("snapshot outside SendSnapshot", || {
                    format!("dropped an InstallSnapshot from {} in a batch", env.from)
                });
                continue;
            }
            // A partition (fault injection): the message is lost on the way.
            if self.faults.is_blocked(env.from) {
                continue;
            }
            self.deliver(env)?;
        }
        Ok(Response::new(SendResponse {}))
    }

    async fn send_snapshot(
        &self,
        req: Request<tonic::Streaming<SnapshotChunk>>,
    ) -> Result<Response<SendResponse>, Status> {
        // The cluster id arrives with the first chunk; the certificate is checked now.
        let node = self.admit_peer(&req, &self.cluster_id)?;
        let Ok(_one_at_a_time) = self.receiving.try_acquire() else {
            return Err(Status::resource_exhausted(
                "a snapshot is already being received",
            ));
        };
        // The stream lands in a snapshot file, never in memory; the core gets the message
        // once the file is whole and durable.
        let received = snapshot_stream::receive(
            &self.snapshots,
            MAX_SNAPSHOT_BYTES,
            SNAPSHOT_TIMEOUT,
            req.into_inner(),
            |cluster, from| {
                let cluster = if cluster.is_empty() {
                    crate::security::DEFAULT_CLUSTER_ID
                } else {
                    cluster
                };
                if cluster != &*self.cluster_id {
                    return Err(RequestError::PermissionDenied(format!(
                        "a peer of cluster '{cluster}' is not a member of cluster '{}'",
                        self.cluster_id
                    )));
                }
                if node.is_some_and(|n| n != from) {
                    return Err(RequestError::PermissionDenied(format!(
                        "a node certificate sent a snapshot from node {from}"
                    )));
                }
                if self.faults.is_blocked(from) {
                    return Err(RequestError::PartitionedPeer);
                }
                Ok(())
            },
        )
        .await;
        let env = match received {
            Ok(env) => env,
            Err(RequestError::TimedOut) => {
                self.warn("snapshot stream timed out", || {
                    format!("no complete snapshot within {SNAPSHOT_TIMEOUT:?}")
                });
                return Err(Status::deadline_exceeded("snapshot stream timed out"));
            }
            Err(e) => {
                if let RequestError::BadPeerMessage(m) | RequestError::Internal(m) = &e {
                    let m = m.clone();
                    self.warn("bad snapshot stream", || m);
                }
                return Err(e.into());
            }
        };
        self.deliver(env)?;
        Ok(Response::new(SendResponse {}))
    }
}

pub struct AdminService {
    /// With TLS: fault injection needs the admin certificate of this cluster.
    pub tls_cluster: Option<Arc<str>>,
    pub core_tx: CoreSender,
    pub applier_tx: mpsc::SyncSender<ApplierMsg>,
    pub faults: Arc<FaultHook>,
    pub metrics: Metrics,
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn set_partition(
        &self,
        req: Request<SetPartitionRequest>,
    ) -> Result<Response<SetPartitionResponse>, Status> {
        if let Some(cluster) = &self.tls_cluster {
            PeerIdentity::require_admin(&req, cluster).map_err(RequestError::PermissionDenied)?;
        }
        self.faults.set(req.into_inner().blocked)?;
        Ok(Response::new(SetPartitionResponse {}))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let (reply, rx) = oneshot::channel();
        self.core_tx.send(CoreInput::Status { reply })?;
        let s = rx.await.map_err(|_| RequestError::Stopped)?;
        let (reply, rx) = oneshot::channel();
        let query = Query::Digest;
        let msg = ApplierMsg::Query { query, reply };
        to_applier(&self.applier_tx, &self.metrics, msg)?;
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
