//! The chat operations mapped onto etcd's key-value API (through the `etcd-client` crate),
//! so that the same scenario, pacing, latency correction and history check measure etcd's
//! Raft on the chat workload. The mapping and where it differs from Telegraft's semantics
//! are documented in `scenarios/etcd.md`.
//!
//! Each call answers with the chat API's own reply types and gRPC status codes, so the
//! operations, the population and the history checker do not know which system they talk
//! to. Keys (numbers zero-padded to 20 digits, so a prefix names exactly one id):
//!
//! | key | value | written by |
//! |---|---|---|
//! | `tg/user/name/{username}` | empty; its create revision is the user id | `CreateUser` |
//! | `tg/user/id/{user}` | the username | `CreateUser`, once the id is known |
//! | `tg/chat/next` | the latest chat name; each put's revision is a chat id | `CreateChat` |
//! | `tg/chat/id/{chat}` | the chat name | `CreateChat`, once the id is known |
//! | `tg/member/{chat}/{user}` | empty | `CreateChat` (the creator), `JoinChat` |
//! | `tg/joined/{user}/{chat}` | empty | the same, for a user's chats |
//! | `tg/msg/{chat}/{tag}` | the message (chat.proto `Message`, ids unset) | `SendMessage` |
//!
//! A message's `tag` is its write id (`{client_id}-{sequence}`) or, without one, a tag unique
//! to this process. Its id is the revision that created it, and `committed_at` carries that
//! revision as microseconds (so a revision is a cursor, strictly increasing in commit order,
//! the same on every member): the history check orders messages by revision.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, KvClient, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use prost::Message as _;
use prost_types::Timestamp;
use telegraft::proto::chat::{
    Consistency, CreateChatRequest, CreateChatResponse, CreateUserRequest, CreateUserResponse,
    GetChatUsersRequest, GetChatUsersResponse, GetMessagesRequest, GetMessagesResponse,
    JoinChatRequest, JoinChatResponse, Message, SendMessageRequest, SendMessageResponse, User,
};
use tonic::Status;

/// A page holds at most this many messages (0 asks for the default), and stops after about
/// this many bytes of content, as Telegraft's pages do.
const MAX_PAGE: usize = 10_000;
const DEFAULT_PAGE: usize = 1_000;
const PAGE_BYTES: usize = 4 << 20;

/// One connection to one etcd member (or several: the client balances across them).
#[derive(Clone)]
pub struct EtcdChat {
    kv: KvClient,
}

/// Tags for messages sent without a write id: unique within this process, and across
/// processes by the process id and start time.
static ANONYMOUS: AtomicU64 = AtomicU64::new(0);

fn anonymous_tag() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("a{}-{nanos}", std::process::id())
    });
    format!("{prefix}-{}", ANONYMOUS.fetch_add(1, Ordering::Relaxed))
}

fn user_name_key(name: &str) -> String {
    format!("tg/user/name/{name}")
}
fn user_key(user: u64) -> String {
    format!("tg/user/id/{user:020}")
}
const CHAT_NEXT: &str = "tg/chat/next";
fn chat_key(chat: u64) -> String {
    format!("tg/chat/id/{chat:020}")
}
fn member_prefix(chat: u64) -> String {
    format!("tg/member/{chat:020}/")
}
fn member_key(chat: u64, user: u64) -> String {
    format!("tg/member/{chat:020}/{user:020}")
}
fn joined_prefix(user: u64) -> String {
    format!("tg/joined/{user:020}/")
}
fn joined_key(user: u64, chat: u64) -> String {
    format!("tg/joined/{user:020}/{chat:020}")
}
fn message_prefix(chat: u64) -> String {
    format!("tg/msg/{chat:020}/")
}

/// The id at the end of a key (`.../{id:020}`).
fn trailing_id(key: &[u8]) -> Option<u64> {
    let key = std::str::from_utf8(key).ok()?;
    key.rsplit('/').next()?.parse().ok()
}

/// A revision as a `committed_at`: the revision in microseconds.
pub fn revision_time(revision: i64) -> Timestamp {
    let r = revision.max(0);
    Timestamp {
        seconds: r / 1_000_000,
        nanos: ((r % 1_000_000) * 1_000) as i32,
    }
}

/// The revision a `committed_at` cursor names (see [`revision_time`]).
pub fn time_revision(t: &Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(t.nanos) / 1_000)
}

/// An etcd client error as the chat API's status: etcd's own gRPC status when it answered,
/// UNAVAILABLE when it could not be reached.
fn status(e: etcd_client::Error) -> Status {
    match e {
        etcd_client::Error::GRpcStatus(s) => s,
        etcd_client::Error::TransportError(e) => Status::unavailable(e.to_string()),
        etcd_client::Error::IoError(e) => Status::unavailable(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

fn revision(r: &TxnResponse) -> Result<i64, Status> {
    r.header()
        .map(|h| h.revision())
        .ok_or_else(|| Status::internal("etcd answered without a header"))
}

/// The key-values of the `i`th operation of a transaction that answered with gets.
fn got(r: &TxnResponse, i: usize) -> Vec<KeyValue> {
    match r.op_responses().into_iter().nth(i) {
        Some(TxnOpResponse::Get(g)) => g.kvs().to_vec(),
        _ => Vec::new(),
    }
}

impl EtcdChat {
    /// A client for the members at `endpoints` (`host:port`). Connecting is lazy: a member
    /// that is down fails calls, not this.
    pub async fn connect(endpoints: &[String]) -> anyhow::Result<EtcdChat> {
        let urls: Vec<String> = endpoints.iter().map(|e| format!("http://{e}")).collect();
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(urls, Some(options)).await?;
        Ok(EtcdChat {
            kv: client.kv_client(),
        })
    }

    fn read_options(consistency: i32) -> GetOptions {
        let options = GetOptions::new();
        if consistency == Consistency::Local as i32 {
            options.with_serializable()
        } else {
            options
        }
    }

    /// The ids at the end of the keys under `prefix` (a user's chats, a chat's members).
    /// None is an answer only if their owner (`owner.0`, named `owner.1`) exists: otherwise
    /// NOT_FOUND.
    async fn ids_under(
        &mut self,
        prefix: String,
        owner: (String, String),
        consistency: i32,
    ) -> Result<Vec<u64>, Status> {
        let keys = Self::read_options(consistency)
            .with_prefix()
            .with_keys_only();
        let r = self.kv.get(prefix, Some(keys)).await.map_err(status)?;
        let ids: Vec<u64> = r
            .kvs()
            .iter()
            .filter_map(|kv| trailing_id(kv.key()))
            .collect();
        if ids.is_empty() {
            let options = Self::read_options(consistency).with_count_only();
            let found = self.kv.get(owner.0, Some(options)).await.map_err(status)?;
            if found.count() == 0 {
                return Err(Status::not_found(format!("{} does not exist", owner.1)));
            }
        }
        Ok(ids)
    }

    /// `CreateUser`: the name is claimed once (`create_revision == 0`), its revision is the
    /// id, and the id's record follows in a second write before the call answers.
    pub async fn create_user(
        &mut self,
        r: CreateUserRequest,
    ) -> Result<CreateUserResponse, Status> {
        if r.username.is_empty() || r.username.len() > 64 {
            return Err(Status::invalid_argument("a username has 1 to 64 bytes"));
        }
        let name = user_name_key(&r.username);
        let txn = Txn::new()
            .when([Compare::create_revision(name.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(name, Vec::new(), None)]);
        let t = self.kv.txn(txn).await.map_err(status)?;
        if !t.succeeded() {
            return Err(Status::already_exists(format!(
                "username '{}' is taken",
                r.username
            )));
        }
        let id = revision(&t)? as u64;
        self.kv
            .put(user_key(id), r.username.into_bytes(), None)
            .await
            .map_err(status)?;
        Ok(CreateUserResponse { user_id: id })
    }

    /// `CreateChat`: a put of `tg/chat/next` (if the user exists) names the chat by its
    /// revision; the chat's record and the creator's membership follow in one transaction.
    pub async fn create_chat(
        &mut self,
        r: CreateChatRequest,
    ) -> Result<CreateChatResponse, Status> {
        if r.chat_name.is_empty() || r.chat_name.len() > 64 {
            return Err(Status::invalid_argument("a chat name has 1 to 64 bytes"));
        }
        let user = user_key(r.user_id);
        let txn = Txn::new()
            .when([Compare::version(user, CompareOp::Greater, 0)])
            .and_then([TxnOp::put(CHAT_NEXT, r.chat_name.clone(), None)]);
        let t = self.kv.txn(txn).await.map_err(status)?;
        if !t.succeeded() {
            return Err(Status::not_found(format!(
                "user {} does not exist",
                r.user_id
            )));
        }
        let chat = revision(&t)? as u64;
        let txn = Txn::new().and_then([
            TxnOp::put(chat_key(chat), r.chat_name, None),
            TxnOp::put(member_key(chat, r.user_id), Vec::new(), None),
            TxnOp::put(joined_key(r.user_id, chat), Vec::new(), None),
        ]);
        self.kv.txn(txn).await.map_err(status)?;
        Ok(CreateChatResponse { chat_id: chat })
    }

    /// `JoinChat`: both memberships in one transaction guarded by the user's and the
    /// chat's existence. Joining twice changes nothing a reader sees.
    pub async fn join_chat(&mut self, r: JoinChatRequest) -> Result<JoinChatResponse, Status> {
        let (user, chat) = (user_key(r.user_id), chat_key(r.chat_id));
        let txn = Txn::new()
            .when([
                Compare::version(user.clone(), CompareOp::Greater, 0),
                Compare::version(chat, CompareOp::Greater, 0),
            ])
            .and_then([
                TxnOp::put(member_key(r.chat_id, r.user_id), Vec::new(), None),
                TxnOp::put(joined_key(r.user_id, r.chat_id), Vec::new(), None),
            ])
            .or_else([TxnOp::get(user, None)]);
        let t = self.kv.txn(txn).await.map_err(status)?;
        if t.succeeded() {
            return Ok(JoinChatResponse {});
        }
        if got(&t, 0).is_empty() {
            return Err(Status::not_found(format!(
                "user {} does not exist",
                r.user_id
            )));
        }
        Err(Status::not_found(format!(
            "chat {} does not exist",
            r.chat_id
        )))
    }

    /// `SendMessage`: one transaction that checks the membership and that the message's key
    /// is new (`create_revision == 0`), and puts the message; its revision is the message id.
    /// A retry of the same write id finds the key and answers its original revision, so a
    /// message is never stored twice or given a second id.
    pub async fn send_message(
        &mut self,
        r: SendMessageRequest,
    ) -> Result<SendMessageResponse, Status> {
        if r.content.len() > 64 * 1024 {
            return Err(Status::invalid_argument("content is over 64 KiB"));
        }
        let tag = r
            .write_id
            .map_or_else(anonymous_tag, |w| format!("{}-{}", w.client_id, w.sequence));
        let key = format!("{}{tag}", message_prefix(r.chat_id));
        let member = member_key(r.chat_id, r.user_id);
        let value = Message {
            message_id: 0,
            chat_id: r.chat_id,
            user_id: r.user_id,
            content: r.content,
            sent_time: r.sent_time,
            committed_at: None,
        }
        .encode_to_vec();
        let txn = Txn::new()
            .when([
                Compare::version(member, CompareOp::Greater, 0),
                Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            ])
            .and_then([TxnOp::put(key.clone(), value, None)])
            .or_else([
                TxnOp::get(key, None),
                TxnOp::get(user_key(r.user_id), None),
                TxnOp::get(chat_key(r.chat_id), None),
            ]);
        let t = self.kv.txn(txn).await.map_err(status)?;
        if t.succeeded() {
            return Ok(SendMessageResponse {
                message_id: revision(&t)? as u64,
            });
        }
        if let Some(kv) = got(&t, 0).first() {
            // A retry of a write that is already stored: its original id.
            return Ok(SendMessageResponse {
                message_id: kv.create_revision() as u64,
            });
        }
        if got(&t, 1).is_empty() {
            return Err(Status::not_found(format!(
                "user {} does not exist",
                r.user_id
            )));
        }
        if got(&t, 2).is_empty() {
            return Err(Status::not_found(format!(
                "chat {} does not exist",
                r.chat_id
            )));
        }
        Err(Status::failed_precondition(format!(
            "user {} is not a member of chat {}",
            r.user_id, r.chat_id
        )))
    }

    /// `GetMessages`: the user's chats (one range), then one read-only transaction with a
    /// range per chat from the cursor's revision on, merged in revision order and paged.
    /// Linearizable unless the request asks for `LOCAL` (serializable ranges).
    pub async fn get_messages(
        &mut self,
        r: GetMessagesRequest,
    ) -> Result<GetMessagesResponse, Status> {
        let limit = match r.limit as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let owner = (user_key(r.user_id), format!("user {}", r.user_id));
        let chats = self
            .ids_under(joined_prefix(r.user_id), owner, r.consistency)
            .await?;
        if chats.is_empty() {
            return Ok(GetMessagesResponse::default());
        }
        let after = r.messages_after.as_ref().map_or(0, time_revision);
        let ranges: Vec<TxnOp> = chats
            .iter()
            .map(|&chat| {
                let options = Self::read_options(r.consistency)
                    .with_prefix()
                    .with_min_mod_revision(after.saturating_add(1))
                    .with_sort(SortTarget::Mod, SortOrder::Ascend)
                    .with_limit(limit as i64 + 1);
                TxnOp::get(message_prefix(chat), Some(options))
            })
            .collect();
        let t = self
            .kv
            .txn(Txn::new().and_then(ranges))
            .await
            .map_err(status)?;
        let mut found: Vec<KeyValue> = (0..chats.len()).flat_map(|i| got(&t, i)).collect();
        found.sort_unstable_by_key(|kv| kv.mod_revision());
        let mut messages = Vec::with_capacity(found.len().min(limit));
        let mut bytes = 0;
        let mut has_more = false;
        for kv in &found {
            if messages.len() == limit || (bytes >= PAGE_BYTES && !messages.is_empty()) {
                has_more = true;
                break;
            }
            let mut m = Message::decode(kv.value())
                .map_err(|e| Status::data_loss(format!("a stored message: {e}")))?;
            m.message_id = kv.create_revision() as u64;
            m.committed_at = Some(revision_time(kv.mod_revision()));
            bytes += m.content.len();
            messages.push(m);
        }
        Ok(GetMessagesResponse { messages, has_more })
    }

    /// `GetChatUsers`: the chat's members (one range), then their names (one read-only
    /// transaction).
    /// Chat logins are Telegraft's (a scenario with `login` is refused for etcd).
    pub async fn login(
        &mut self,
        _: telegraft::proto::chat::LoginRequest,
    ) -> Result<telegraft::proto::chat::LoginResponse, Status> {
        Err(Status::unimplemented("etcd has no chat logins"))
    }

    pub async fn get_chat_users(
        &mut self,
        r: GetChatUsersRequest,
    ) -> Result<GetChatUsersResponse, Status> {
        let owner = (chat_key(r.chat_id), format!("chat {}", r.chat_id));
        let ids = self
            .ids_under(member_prefix(r.chat_id), owner, r.consistency)
            .await?;
        if ids.is_empty() {
            return Ok(GetChatUsersResponse::default());
        }
        let gets: Vec<TxnOp> = ids
            .iter()
            .map(|&u| TxnOp::get(user_key(u), Some(Self::read_options(r.consistency))))
            .collect();
        let t = self
            .kv
            .txn(Txn::new().and_then(gets))
            .await
            .map_err(status)?;
        let users = ids
            .iter()
            .enumerate()
            .map(|(i, &user_id)| User {
                user_id,
                username: got(&t, i)
                    .first()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                    .unwrap_or_default(),
            })
            .collect();
        Ok(GetChatUsersResponse { users })
    }

    /// The store's current revision: where a poll that wants only new messages starts.
    pub async fn current_revision(&mut self) -> Result<i64, Status> {
        let r = self
            .kv
            .get(CHAT_NEXT, Some(GetOptions::new().with_count_only()))
            .await
            .map_err(status)?;
        r.header()
            .map(|h| h.revision())
            .ok_or_else(|| Status::internal("etcd answered without a header"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_round_trip_through_committed_at() {
        for r in [0, 1, 999_999, 1_000_000, 123_456_789_012] {
            assert_eq!(time_revision(&revision_time(r)), r);
        }
        // Later revisions are later times: cursors order as revisions do.
        let (a, b) = (revision_time(999_999), revision_time(1_000_000));
        assert!((a.seconds, a.nanos) < (b.seconds, b.nanos));
    }

    #[test]
    fn ids_are_read_back_from_keys() {
        assert_eq!(trailing_id(joined_key(7, 42).as_bytes()), Some(42));
        assert_eq!(trailing_id(member_key(42, 7).as_bytes()), Some(7));
        // A prefix names exactly one id.
        assert!(!member_key(12, 1).starts_with(&member_prefix(1)));
    }

    #[test]
    fn anonymous_tags_are_unique() {
        assert_ne!(anonymous_tag(), anonymous_tag());
    }
}
