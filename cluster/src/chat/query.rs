//! What can be read from the chat state ([`Query`], answered by
//! [`super::ChatStore::query`]), and the bounds on one answer.
//!
//! Messages are read in pages, in commit order. A page holds at most `limit` messages
//! ([`page_limit`]: 0 asks for [`DEFAULT_PAGE_MESSAGES`], more than [`MAX_PAGE_MESSAGES`] is
//! clamped) and at most about [`MAX_PAGE_BYTES`] of content (always at least one message,
//! however large). `has_more` says a page was cut; the client asks again with
//! `messages_after` set to the last `committed_at` it got. Because `committed_at` strictly
//! increases in commit order, that cursor gets every message exactly once.

use super::command::{ChatId, MessageId, UserId};
use crate::raft::Index;

/// Messages in a page when the request says 0.
pub const DEFAULT_PAGE_MESSAGES: u32 = 1_000;
/// The most messages in a page, whatever the request says.
pub const MAX_PAGE_MESSAGES: u32 = 10_000;
/// Content bytes after which a page is cut (a message counts its content and
/// [`MESSAGE_OVERHEAD_BYTES`]), so that a page of 10,000 messages of 64 KiB is never built.
pub const MAX_PAGE_BYTES: usize = 4 << 20;
/// What a message costs in a page beyond its content: ids, timestamps, framing.
pub const MESSAGE_OVERHEAD_BYTES: usize = 64;

/// The number of messages a page may hold for a request's `limit`.
pub fn page_limit(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_PAGE_MESSAGES,
        n => n.min(MAX_PAGE_MESSAGES),
    }
}

/// A read of the chat state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    Messages(MessagesQuery),
    ChatUsers {
        chat_id: ChatId,
    },
    /// The applied index and the state digest (kept up to date: reads no table).
    Digest,
    /// A user's id and password hash, by name (`Login`).
    Credentials {
        username: String,
    },
}

/// One page of the messages of every chat a user is a member of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessagesQuery {
    pub user_id: UserId,
    /// Only messages committed strictly after this (microseconds since the Unix epoch;
    /// `i64::MIN` for all).
    pub after_us: i64,
    /// As the client asked; [`page_limit`] applies.
    pub limit: u32,
}

#[derive(Debug, PartialEq, Eq)]
pub enum QueryOutput {
    Messages(MessagePage),
    ChatUsers(Vec<(UserId, String)>),
    /// The user and its password hash: `None` for an unknown user, or one without a
    /// password.
    Credentials(Option<(UserId, String)>),
    Digest {
        applied_index: Index,
        digest: String,
    },
}

/// Messages in commit order, and whether more follow the last one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MessagePage {
    pub messages: Vec<StoredMessage>,
    pub has_more: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    pub message_id: MessageId,
    pub chat_id: ChatId,
    pub user_id: UserId,
    pub content: String,
    /// As the client sent it, if it did.
    pub sent_time_us: Option<i64>,
    /// When the message was committed, by the leaders' clocks: fixed by the log, the same on
    /// every replica, strictly increasing in commit order.
    pub committed_at_us: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_the_default_and_large_limits_are_clamped() {
        assert_eq!(page_limit(0), 1_000);
        assert_eq!(page_limit(1), 1);
        assert_eq!(page_limit(10_000), 10_000);
        assert_eq!(page_limit(10_001), 10_000);
        assert_eq!(page_limit(u32::MAX), 10_000);
    }
}
