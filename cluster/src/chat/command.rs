//! What goes through the log: a [`Write`] (a [`Command`] with its optional exactly-once
//! [`SessionSeq`]), what applying one returns ([`Outcome`], [`ChatError`]), and the checks
//! that need no state.

use serde::{Deserialize, Serialize};

use super::hash::{COMMAND_KEY, siphash24};

/// Longest username or chat name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Largest message content, in bytes (documented in the API: 64 KiB).
pub const MAX_CONTENT_BYTES: usize = 64 * 1024;

pub type UserId = u64;
pub type ChatId = u64;
pub type MessageId = u64;

/// A write, as stored in a log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    /// The client's place in its session, for exactly-once application; `None` for
    /// at-least-once.
    pub session: Option<SessionSeq>,
    pub command: Command,
}

/// A write's exactly-once key: the client's id and its sequence number within its session
/// (Raft thesis 6.3). The client sends it as `WriteId` in `chat.proto`; the store keeps the
/// latest per client in its `sessions` table. Not the Raft core's `AppendId`, which numbers
/// storage writes inside one process.
///
/// Encoded in log entries exactly as the `(u64, u64)` pair it replaced (postcard writes a
/// struct as its fields in order), so existing logs still decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSeq {
    pub client_id: u64,
    pub sequence: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    CreateUser {
        username: String,
    },
    CreateChat {
        user_id: UserId,
        name: String,
    },
    JoinChat {
        user_id: UserId,
        chat_id: ChatId,
    },
    SendMessage {
        user_id: UserId,
        chat_id: ChatId,
        content: String,
        sent_time_us: i64,
    },
}

/// What a successful write returns: the id it created, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Created(u64),
    Done,
}

/// A deterministic rejection: the same on every replica, returned to the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ChatError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
}

pub type ApplyResult = Result<Outcome, ChatError>;

fn check_name(what: &str, name: &str) -> Result<(), ChatError> {
    if name.trim().is_empty() {
        return Err(ChatError::InvalidArgument(format!(
            "{what} must not be empty"
        )));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(ChatError::InvalidArgument(format!(
            "{what} is {} bytes; at most {MAX_NAME_BYTES} allowed",
            name.len()
        )));
    }
    // The message names the character by its code point, never echoes it.
    if let Some((at, c)) = super::text::first_hidden(name) {
        return Err(ChatError::InvalidArgument(format!(
            "{what} contains a control or invisible character (U+{:04X}) at byte {at}",
            c as u32
        )));
    }
    Ok(())
}

fn check_id(what: &str, id: u64) -> Result<(), ChatError> {
    if id == 0 || id > i64::MAX as u64 {
        return Err(ChatError::InvalidArgument(format!(
            "{what} must be a positive id"
        )));
    }
    Ok(())
}

impl Command {
    /// Checks that need no state. Run before proposing and again when applying.
    pub fn validate(&self) -> Result<(), ChatError> {
        match self {
            Command::CreateUser { username } => check_name("username", username),
            Command::CreateChat { user_id, name } => {
                check_id("user_id", *user_id)?;
                check_name("chat_name", name)
            }
            Command::JoinChat { user_id, chat_id } => {
                check_id("user_id", *user_id)?;
                check_id("chat_id", *chat_id)
            }
            Command::SendMessage {
                user_id,
                chat_id,
                content,
                ..
            } => {
                check_id("user_id", *user_id)?;
                check_id("chat_id", *chat_id)?;
                if content.len() > MAX_CONTENT_BYTES {
                    return Err(ChatError::InvalidArgument(format!(
                        "content is {} bytes; at most {MAX_CONTENT_BYTES} allowed",
                        content.len()
                    )));
                }
                Ok(())
            }
        }
    }
}

impl Command {
    /// A 64-bit hash of the command (SipHash-2-4 of its encoding), stored with a client's
    /// latest sequence so that a retry is recognised as the same command and a reused write
    /// id is not.
    pub fn fingerprint(&self) -> u64 {
        let bytes = postcard::to_allocvec(self).expect("commands encode");
        siphash24(COMMAND_KEY, &bytes)
    }
}

impl Write {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("writes encode")
    }

    pub fn decode(bytes: &[u8]) -> Result<Write, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_control_and_invisible_characters() {
        let user = |u: &str| Command::CreateUser { username: u.into() }.validate();
        let chat = |n: &str| {
            Command::CreateChat {
                user_id: 1,
                name: n.into(),
            }
            .validate()
        };
        for bad in [
            "ann\n",
            "\tann",
            "a\x1b[2Jb",
            "a\u{7f}",
            "an\u{200b}n",
            "\u{202e}nna",
            "a\u{2060}b",
            "\u{feff}ann",
            "a\u{2028}b",
            "\u{200b}",
            "a\u{e0041}",
        ] {
            for r in [user(bad), chat(bad)] {
                let Err(ChatError::InvalidArgument(m)) = r else {
                    panic!("{bad:?} accepted: {r:?}")
                };
                assert!(!m.chars().any(super::super::is_hidden), "{m:?}");
            }
        }
        for good in ["ann", "Zoë", "日本語", "a b", "😀 party"] {
            assert_eq!(user(good), Ok(()));
            assert_eq!(chat(good), Ok(()));
        }
    }

    #[test]
    fn a_session_seq_encodes_as_the_pair_it_replaced() {
        let w = Write {
            session: Some(SessionSeq {
                client_id: 7,
                sequence: 300,
            }),
            command: Command::CreateUser {
                username: "ann".into(),
            },
        };
        let pair: (Option<(u64, u64)>, Command) = (Some((7, 300)), w.command.clone());
        assert_eq!(w.encode(), postcard::to_allocvec(&pair).unwrap());
        assert_eq!(Write::decode(&w.encode()).unwrap(), w);
    }
}
