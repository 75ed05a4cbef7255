//! The system under test, behind one chat interface.
//!
//! The chat operations ([`crate::load::ops`]), the dataset loader and the final-state reader
//! talk to a [`ChatConn`]: the six chat calls with the chat API's own request and reply types
//! and gRPC status codes. A Telegraft connection is the generated gRPC client; an etcd one
//! maps each call onto etcd's key-value API ([`etcd`]). The status poller and the fault
//! injector ask [`status`] who leads, in the same [`NodeView`] whatever the system. Adding a
//! third system is one more module here and one more arm in each match.

pub mod etcd;

use std::collections::BTreeMap;
use std::time::Duration;

use telegraft::admin::{self, NodeView};
use telegraft::proto::admin::RoleKind;
use telegraft::proto::chat::chat_client::ChatClient;
use telegraft::proto::chat::*;
use tonic::transport::Channel;
use tonic::{Response, Status};

use crate::scenario::System;

/// A chat connection to one replica (or member) of the system under test.
#[derive(Clone)]
pub enum ChatConn {
    Telegraft(ChatClient<Channel>),
    /// Boxed: etcd's client is over twice the size of a tonic one.
    Etcd(Box<etcd::EtcdChat>),
}

/// One chat call, on either system, with the gRPC client's signature.
macro_rules! rpc {
    ($name:ident, $request:ty, $reply:ty) => {
        pub async fn $name(&mut self, r: $request) -> Result<Response<$reply>, Status> {
            match self {
                // With authentication on, the token of the user the request names.
                ChatConn::Telegraft(c) => c.$name(crate::load::sessions::authorize(r)).await,
                ChatConn::Etcd(e) => e.$name(r).await.map(Response::new),
            }
        }
    };
}

impl ChatConn {
    rpc!(create_user, CreateUserRequest, CreateUserResponse);
    rpc!(create_chat, CreateChatRequest, CreateChatResponse);
    rpc!(join_chat, JoinChatRequest, JoinChatResponse);
    rpc!(send_message, SendMessageRequest, SendMessageResponse);
    rpc!(get_messages, GetMessagesRequest, GetMessagesResponse);
    rpc!(get_chat_users, GetChatUsersRequest, GetChatUsersResponse);
    rpc!(login, LoginRequest, LoginResponse);

    /// A connection to `addr` that connects on its first call (and again after a lost
    /// connection), so a replica that is down at the start dooms no user.
    pub async fn lazy(system: System, addr: &str) -> anyhow::Result<ChatConn> {
        Ok(match system {
            System::Telegraft => ChatConn::Telegraft(crate::load::connect_lazy(addr)?),
            System::Etcd => ChatConn::Etcd(Box::new(
                etcd::EtcdChat::connect(&[addr.to_string()]).await?,
            )),
        })
    }

    /// A connection to `addr`, connected now (an error says the replica cannot be reached).
    pub async fn connect(system: System, addr: &str) -> anyhow::Result<ChatConn> {
        Ok(match system {
            System::Telegraft => ChatConn::Telegraft(crate::load::connect(addr).await?),
            System::Etcd => {
                let mut e = etcd::EtcdChat::connect(&[addr.to_string()]).await?;
                e.current_revision()
                    .await
                    .map_err(|s| anyhow::anyhow!("connecting to {addr}: {}", s.message()))?;
                ChatConn::Etcd(Box::new(e))
            }
        })
    }

    /// Where a poll that wants only messages committed from now on starts: Telegraft's
    /// cursors are the leader's clock, so the generator's clock will do; etcd's are
    /// revisions, so the store's current one.
    pub async fn start_cursor(&mut self) -> Result<prost_types::Timestamp, Status> {
        match self {
            ChatConn::Telegraft(_) => Ok(telegraft::proto::time::now()),
            ChatConn::Etcd(e) => Ok(etcd::revision_time(e.current_revision().await?)),
        }
    }
}

/// One replica's (or member's) status, as the admin API gives Telegraft's.
pub async fn status(system: System, addr: &str) -> anyhow::Result<NodeView> {
    match system {
        System::Telegraft => Ok(admin::status(addr).await?),
        System::Etcd => etcd_status(addr).await,
    }
}

/// An etcd member's status as a [`NodeView`]. Members are named `n{i}` by the launcher, and
/// `i` is the node id; a member named otherwise (a `--target` cluster) is numbered by its
/// place in the member list. etcd gives no state digest: the final-state check compares the
/// members' lists instead.
async fn etcd_status(addr: &str) -> anyhow::Result<NodeView> {
    use etcd_client::{Client, ConnectOptions};
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(2));
    let mut client = Client::connect([format!("http://{addr}")], Some(options)).await?;
    let status = client.status().await?;
    let me = status.header().map_or(0, |h| h.member_id());
    let leader = status.leader();
    // Member ids are random per cluster and never reused, so their numbers are kept for
    // the process: a poll asks MemberList only when it meets a member it does not know.
    static NUMBERS: std::sync::Mutex<BTreeMap<u64, u64>> = std::sync::Mutex::new(BTreeMap::new());
    let known = |id: u64| id == 0 || NUMBERS.lock().unwrap().contains_key(&id);
    if !known(me) || !known(leader) {
        let members = client.member_list().await?;
        let mut numbers = NUMBERS.lock().unwrap();
        for (i, m) in members.members().iter().enumerate() {
            let n = m
                .name()
                .strip_prefix('n')
                .and_then(|n| n.parse().ok())
                .unwrap_or(i as u64 + 1);
            numbers.insert(m.id(), n);
        }
    }
    let number = |id: u64| NUMBERS.lock().unwrap().get(&id).copied().unwrap_or(0);
    let role = if leader != 0 && leader == me {
        RoleKind::Leader
    } else {
        RoleKind::Follower
    };
    Ok(NodeView {
        addr: addr.to_string(),
        node_id: number(me),
        role,
        term: status.raft_term(),
        leader_id: if leader == 0 { 0 } else { number(leader) },
        commit_index: status.raft_index(),
        applied_index: status.raft_applied_index(),
        last_log_index: status.raft_index(),
        state_digest: String::new(),
        pid: 0,
    })
}
