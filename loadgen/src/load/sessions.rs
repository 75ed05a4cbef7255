//! Chat sessions of a run with `security: {auth: true}`: the users' passwords and tokens,
//! and the one place that puts a token on a call.
//!
//! With authentication on, every chat call but `CreateUser` and `Login` must carry the token
//! of the user it acts as (`authorization: Bearer <token>`). The generator acts as many
//! users, like the many real clients it stands for, each logged in once: the dataset
//! creation logs every user in, `login` calls log users in again (and log in the users the
//! load created), and every call then carries the token of the user its request names.
//!
//! Why a process-wide store rather than a token threaded through every call site: the
//! dataset loader, the operations and the final-state reader all talk through
//! [`crate::system::ChatConn`], and each request already names the user it acts as. So the
//! connection attaches the token ([`authorize`]) from the run's sessions, and no call site
//! changes with authentication. A process runs one scenario at a time; a run installs its
//! sessions at its start ([`install`]) and removes them at its end, so a run without
//! authentication sends no token.
//!
//! Passwords are derived from the username ([`password_for`]): the generator must be able to
//! log any dataset user in again, and a load test's passwords protect nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use telegraft::proto::chat::*;
use tonic::metadata::AsciiMetadataValue;

/// The run's sessions: a token per logged-in user, and what `login` calls need.
#[derive(Default)]
pub struct Sessions {
    /// `Bearer <token>`, per user id.
    tokens: RwLock<HashMap<u64, AsciiMetadataValue>>,
    /// Usernames, per user id (to log a user in again).
    names: RwLock<HashMap<u64, String>>,
    /// One member per chat, whose token reads the chat's users.
    members: RwLock<HashMap<u64, u64>>,
    /// Users the load created and no `login` has logged in yet (they join the population
    /// when one does).
    pending: Mutex<VecDeque<(u64, String)>>,
}

static CURRENT: RwLock<Option<Arc<Sessions>>> = RwLock::new(None);

/// Makes `sessions` the run's (or none), returning the previous ones.
pub fn install(sessions: Option<Arc<Sessions>>) -> Option<Arc<Sessions>> {
    std::mem::replace(
        &mut *CURRENT.write().unwrap_or_else(|e| e.into_inner()),
        sessions,
    )
}

/// Starts a run's sessions: fresh ones when authentication is on, none otherwise.
pub fn start(auth: bool) {
    install(auth.then(|| Arc::new(Sessions::default())));
}

/// The run's sessions, when authentication is on.
pub fn current() -> Option<Arc<Sessions>> {
    CURRENT.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The password of a user the generator creates.
pub fn password_for(username: &str) -> String {
    format!("{username}-secret")
}

impl Sessions {
    /// Keeps a user's token from `Login`.
    pub fn logged_in(&self, user_id: u64, username: &str, token: &str) {
        if let Ok(v) = format!("Bearer {token}").parse() {
            self.tokens.write().unwrap().insert(user_id, v);
        }
        self.names
            .write()
            .unwrap()
            .insert(user_id, username.to_string());
    }

    /// Records that `user_id` is a member of `chat_id` (one member per chat is kept).
    pub fn member(&self, chat_id: u64, user_id: u64) {
        self.members
            .write()
            .unwrap()
            .entry(chat_id)
            .or_insert(user_id);
    }

    /// A user the load created, to be logged in by a `login` call.
    pub fn created(&self, user_id: u64, username: String) {
        self.pending.lock().unwrap().push_back((user_id, username));
    }

    /// The next created user waiting for its first login.
    pub fn take_pending(&self) -> Option<(u64, String)> {
        self.pending.lock().unwrap().pop_front()
    }

    /// The username of a logged-in user.
    pub fn name_of(&self, user_id: u64) -> Option<String> {
        self.names.read().unwrap().get(&user_id).cloned()
    }

    fn header(&self, user_id: u64) -> Option<AsciiMetadataValue> {
        self.tokens.read().unwrap().get(&user_id).cloned()
    }

    fn member_of(&self, chat_id: u64) -> Option<u64> {
        self.members.read().unwrap().get(&chat_id).copied()
    }
}

/// The user a chat request acts as (whose token it needs).
pub trait Acting {
    fn acting(&self, sessions: &Sessions) -> Option<u64>;
}

macro_rules! acting_as_user_id {
    ($($t:ty),*) => {$(
        impl Acting for $t {
            fn acting(&self, _: &Sessions) -> Option<u64> {
                Some(self.user_id)
            }
        }
    )*};
}
acting_as_user_id!(
    CreateChatRequest,
    JoinChatRequest,
    SendMessageRequest,
    GetMessagesRequest
);

impl Acting for CreateUserRequest {
    fn acting(&self, _: &Sessions) -> Option<u64> {
        None
    }
}

impl Acting for LoginRequest {
    fn acting(&self, _: &Sessions) -> Option<u64> {
        None
    }
}

impl Acting for GetChatUsersRequest {
    /// A member of the chat: only members may list its users.
    fn acting(&self, sessions: &Sessions) -> Option<u64> {
        sessions.member_of(self.chat_id)
    }
}

/// The gRPC request for `msg`, with the token of the user it acts as when the run has
/// sessions.
pub fn authorize<T: Acting>(msg: T) -> tonic::Request<T> {
    let header = current().and_then(|s| msg.acting(&s).and_then(|u| s.header(u)));
    let mut req = tonic::Request::new(msg);
    if let Some(h) = header {
        req.metadata_mut().insert("authorization", h);
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_carries_the_token_of_the_user_it_names() {
        let s = Arc::new(Sessions::default());
        s.logged_in(7, "ann", "tok-ann");
        s.member(3, 7);
        let before = install(Some(s.clone()));
        let send = authorize(SendMessageRequest {
            user_id: 7,
            ..Default::default()
        });
        assert_eq!(
            send.metadata().get("authorization").unwrap(),
            "Bearer tok-ann"
        );
        let users = authorize(GetChatUsersRequest {
            chat_id: 3,
            consistency: 0,
        });
        assert_eq!(
            users.metadata().get("authorization").unwrap(),
            "Bearer tok-ann"
        );
        // Another user, or no sessions: no token.
        let other = authorize(SendMessageRequest {
            user_id: 8,
            ..Default::default()
        });
        assert!(other.metadata().get("authorization").is_none());
        install(before);
    }
}
