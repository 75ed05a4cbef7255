#![allow(dead_code)]
//! A fake chat server for the load generator's tests: a real tonic server on loopback that
//! answers every call after a fixed delay, with made-up ids.

use std::time::Duration;

use telegraft::proto::chat::chat_server::{Chat, ChatServer};
use telegraft::proto::chat::*;
use telegraft::proto::time;
use tonic::{Request, Response, Status};

/// Answers every call after `delay`; `GetMessages` after `read_delay`. With `slots`, at
/// most that many calls are served at once (the others wait their turn), which makes a
/// server of known capacity: `slots / delay` calls a second.
struct SlowChat {
    delay: Duration,
    read_delay: Duration,
    slots: Option<std::sync::Arc<tokio::sync::Semaphore>>,
}

impl SlowChat {
    /// Waits for a slot (when limited), then for `d`.
    async fn serve(&self, d: Duration) {
        let _slot = match &self.slots {
            Some(s) => Some(s.clone().acquire_owned().await.expect("never closed")),
            None => None,
        };
        tokio::time::sleep(d).await;
    }
}

#[tonic::async_trait]
impl Chat for SlowChat {
    async fn create_user(
        &self,
        _: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserResponse>, Status> {
        self.serve(self.delay).await;
        Ok(Response::new(CreateUserResponse { user_id: 1 }))
    }
    async fn create_chat(
        &self,
        _: Request<CreateChatRequest>,
    ) -> Result<Response<CreateChatResponse>, Status> {
        self.serve(self.delay).await;
        Ok(Response::new(CreateChatResponse { chat_id: 1 }))
    }
    async fn join_chat(
        &self,
        _: Request<JoinChatRequest>,
    ) -> Result<Response<JoinChatResponse>, Status> {
        self.serve(self.delay).await;
        Ok(Response::new(JoinChatResponse {}))
    }
    async fn send_message(
        &self,
        _: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        self.serve(self.delay).await;
        Ok(Response::new(SendMessageResponse { message_id: 1 }))
    }
    async fn get_messages(
        &self,
        _: Request<GetMessagesRequest>,
    ) -> Result<Response<GetMessagesResponse>, Status> {
        self.serve(self.read_delay).await;
        Ok(Response::new(GetMessagesResponse {
            messages: vec![],
            has_more: false,
        }))
    }
    async fn get_chat_users(
        &self,
        _: Request<GetChatUsersRequest>,
    ) -> Result<Response<GetChatUsersResponse>, Status> {
        self.serve(self.delay).await;
        Ok(Response::new(GetChatUsersResponse { users: vec![] }))
    }

    async fn login(&self, _: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        Err(Status::unimplemented("the slow server has no logins"))
    }
}

/// Starts a fake server on a free loopback port; returns its address.
pub async fn serve(delay: Duration, read_delay: Duration) -> String {
    serve_chat(SlowChat {
        delay,
        read_delay,
        slots: None,
    })
    .await
}

/// Starts a fake server of known capacity: every call takes `service`, and at most `slots`
/// are served at once (so at most `slots / service` calls a second); returns its address.
pub async fn serve_limited(service: Duration, slots: usize) -> String {
    serve_chat(SlowChat {
        delay: service,
        read_delay: service,
        slots: Some(std::sync::Arc::new(tokio::sync::Semaphore::new(slots))),
    })
    .await
}

async fn serve_chat(chat: SlowChat) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ChatServer::new(chat))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

/// An in-memory chat "cluster" of one replica that also answers `Admin.Status` as a leader,
/// so `loadgen` checks its history like a real cluster's. With `fail_final_reads`, every
/// whole-chat read (a poll from the beginning of time) for a member of chat 1 fails with
/// INTERNAL: the final read of at least one chat fails.
#[derive(Default)]
struct MemChat {
    state: std::sync::Mutex<Mem>,
    fail_final_reads: bool,
}

#[derive(Default)]
struct Mem {
    users: Vec<String>,
    /// Chat id (from 1) to its members.
    chats: Vec<std::collections::BTreeSet<u64>>,
    messages: Vec<Message>,
    writes: u64,
    /// The latest message's `committed_at` (µs since the Unix epoch).
    last_commit_us: i64,
}

impl Mem {
    fn user(&self, id: u64) -> Result<(), Status> {
        if id == 0 || id as usize > self.users.len() {
            return Err(Status::not_found(format!("user {id}")));
        }
        Ok(())
    }
    fn chat(&mut self, id: u64) -> Result<&mut std::collections::BTreeSet<u64>, Status> {
        match (id as usize)
            .checked_sub(1)
            .and_then(|i| self.chats.get_mut(i))
        {
            Some(c) => Ok(c),
            None => Err(Status::not_found(format!("chat {id}"))),
        }
    }
}

#[tonic::async_trait]
impl Chat for MemChat {
    async fn create_user(
        &self,
        r: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserResponse>, Status> {
        let mut m = self.state.lock().unwrap();
        m.users.push(r.into_inner().username);
        m.writes += 1;
        Ok(Response::new(CreateUserResponse {
            user_id: m.users.len() as u64,
        }))
    }
    async fn create_chat(
        &self,
        r: Request<CreateChatRequest>,
    ) -> Result<Response<CreateChatResponse>, Status> {
        let r = r.into_inner();
        let mut m = self.state.lock().unwrap();
        m.user(r.user_id)?;
        m.chats.push([r.user_id].into_iter().collect());
        m.writes += 1;
        Ok(Response::new(CreateChatResponse {
            chat_id: m.chats.len() as u64,
        }))
    }
    async fn join_chat(
        &self,
        r: Request<JoinChatRequest>,
    ) -> Result<Response<JoinChatResponse>, Status> {
        let r = r.into_inner();
        let mut m = self.state.lock().unwrap();
        m.user(r.user_id)?;
        m.chat(r.chat_id)?.insert(r.user_id);
        m.writes += 1;
        Ok(Response::new(JoinChatResponse {}))
    }
    async fn send_message(
        &self,
        r: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let r = r.into_inner();
        let mut m = self.state.lock().unwrap();
        if !m.chat(r.chat_id)?.contains(&r.user_id) {
            return Err(Status::failed_precondition("not a member"));
        }
        let id = m.messages.len() as u64 + 1;
        // Like the cluster's: its own clock, strictly increasing in commit order.
        let committed = time::micros(&time::now()).max(m.last_commit_us + 1);
        m.last_commit_us = committed;
        m.messages.push(Message {
            message_id: id,
            chat_id: r.chat_id,
            user_id: r.user_id,
            content: r.content,
            sent_time: r.sent_time,
            committed_at: Some(time::from_micros(committed)),
        });
        m.writes += 1;
        Ok(Response::new(SendMessageResponse { message_id: id }))
    }
    async fn get_messages(
        &self,
        r: Request<GetMessagesRequest>,
    ) -> Result<Response<GetMessagesResponse>, Status> {
        let r = r.into_inner();
        let mut m = self.state.lock().unwrap();
        m.user(r.user_id)?;
        let after = r.messages_after.unwrap_or_default();
        let whole = after.seconds == 0 && after.nanos == 0;
        if self.fail_final_reads && whole && m.chat(1)?.contains(&r.user_id) {
            return Err(Status::internal("planted: this read fails"));
        }
        let key = |t: &Option<prost_types::Timestamp>| {
            t.as_ref().map_or((0, 0), |t| (t.seconds, t.nanos))
        };
        let mine: Vec<u64> = (1..=m.chats.len() as u64)
            .filter(|c| m.chats[*c as usize - 1].contains(&r.user_id))
            .collect();
        let messages = m
            .messages
            .iter()
            .filter(|msg| mine.contains(&msg.chat_id))
            .filter(|msg| key(&msg.committed_at) > (after.seconds, after.nanos))
            .cloned()
            .collect();
        Ok(Response::new(GetMessagesResponse {
            messages,
            has_more: false,
        }))
    }
    async fn get_chat_users(
        &self,
        r: Request<GetChatUsersRequest>,
    ) -> Result<Response<GetChatUsersResponse>, Status> {
        let r = r.into_inner();
        let mut m = self.state.lock().unwrap();
        let users = m
            .chat(r.chat_id)?
            .iter()
            .map(|u| User {
                user_id: *u,
                username: String::new(),
            })
            .collect();
        Ok(Response::new(GetChatUsersResponse { users }))
    }

    async fn login(&self, _: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        Err(Status::unimplemented("the in-memory model has no logins"))
    }
}

/// The admin side of a [`MemChat`].
struct MemAdmin(std::sync::Arc<MemChat>);

#[tonic::async_trait]
impl telegraft::proto::admin::admin_server::Admin for MemAdmin {
    async fn status(
        &self,
        _: Request<telegraft::proto::admin::StatusRequest>,
    ) -> Result<Response<telegraft::proto::admin::StatusResponse>, Status> {
        use telegraft::proto::admin::{RoleKind, StatusResponse};
        let writes = self.0.state.lock().unwrap().writes;
        Ok(Response::new(StatusResponse {
            node_id: 1,
            role: "leader".into(),
            role_kind: RoleKind::Leader as i32,
            term: 1,
            leader_id: 1,
            commit_index: writes,
            applied_index: writes,
            last_log_index: writes,
            state_digest: format!("w{writes}"),
            ..Default::default()
        }))
    }
    async fn set_partition(
        &self,
        _: Request<telegraft::proto::admin::SetPartitionRequest>,
    ) -> Result<Response<telegraft::proto::admin::SetPartitionResponse>, Status> {
        Err(Status::unimplemented("no partitions here"))
    }
}

/// Starts an in-memory chat replica (with `Admin.Status`) on a free loopback port; returns
/// its address.
pub async fn serve_memory(fail_final_reads: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let chat = std::sync::Arc::new(MemChat {
        fail_final_reads,
        ..Default::default()
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ChatServer::from_arc(chat.clone()))
            .add_service(telegraft::proto::admin::admin_server::AdminServer::new(
                MemAdmin(chat),
            ))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

/// The run folder under `results` (the one holding a `summary.json`), if there is one.
pub fn run_folder(results: &std::path::Path) -> Option<std::path::PathBuf> {
    std::fs::read_dir(results)
        .ok()?
        .map(|e| e.unwrap().path())
        .find(|p| p.join("summary.json").is_file())
}

/// A run folder's `summary.json`.
pub fn summary(run: &std::path::Path) -> serde_json::Value {
    let path = run.join("summary.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// Runs a `loadgen bench` command writing under `results`: its summary, everything it
/// printed (for failure messages), and its exit status.
pub fn run_bench(
    cmd: &mut std::process::Command,
    results: &std::path::Path,
) -> (serde_json::Value, String, Option<i32>) {
    let out = cmd.output().unwrap();
    let printed = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let run = run_folder(results).unwrap_or_else(|| panic!("no run folder\n{printed}"));
    (summary(&run), printed, out.status.code())
}
