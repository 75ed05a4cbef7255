//! What goes through the log: a [`Write`] (a [`Command`] with its optional exactly-once
//! [`SessionSeq`] and the leader's clock), what applying one returns ([`Outcome`],
//! [`ChatError`]), and the checks that need no state.
//!
//! A log entry holds a write's encoding, which changed once: the first byte of today's is
//! [`WRITE_FORMAT`] (2); an entry written before (no format byte: its first byte is the
//! `Option` tag of the session, 0 or 1) still decodes, as [`legacy`] describes.

use serde::{Deserialize, Serialize};

use super::hash::{COMMAND_KEY, siphash24};

/// Longest username or chat name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Largest message content, in bytes (documented in the API: 64 KiB).
pub const MAX_CONTENT_BYTES: usize = 64 * 1024;

pub type UserId = u64;
pub type ChatId = u64;
pub type MessageId = u64;

/// The first byte of an encoded [`Write`] (see the module docs).
pub const WRITE_FORMAT: u8 = 2;

/// A write, as stored in a log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    /// The client's place in its session, for exactly-once application; `None` for
    /// at-least-once.
    pub session: Option<SessionSeq>,
    pub command: Command,
    /// The wall clock of the leader that proposed the write, in microseconds since the Unix
    /// epoch. A message's `committed_at` is derived from it at apply time (`store.rs`), so it
    /// is fixed by the log and the same on every replica. Not part of the command: a retry
    /// proposed later is still the same command.
    pub proposed_at_us: i64,
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
        /// As the client sent it, if it did: shown back, never used to order or select.
        sent_time_us: Option<i64>,
    },
    /// A user with a password (authentication): only its Argon2id hash (a PHC string) is
    /// in the log. Last of the variants, so that entries written before it still decode.
    CreateUserWithPassword {
        username: String,
        password_hash: String,
    },
}

/// Longest password hash a command may carry (an Argon2 PHC string is about 100 bytes).
pub const MAX_PASSWORD_HASH_BYTES: usize = 512;

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
            Command::CreateUserWithPassword {
                username,
                password_hash,
            } => {
                check_name("username", username)?;
                if password_hash.len() > MAX_PASSWORD_HASH_BYTES
                    || !crate::security::password::is_hash(password_hash)
                {
                    return Err(ChatError::InvalidArgument(
                        "password_hash is not an Argon2 PHC string".into(),
                    ));
                }
                Ok(())
            }
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
    ///
    /// A user's password hash is left out: each attempt to create the user hashes the
    /// password with a fresh salt, so a retry carries another hash for the same command (and
    /// gets the first attempt's outcome; the first hash stands).
    pub fn fingerprint(&self) -> u64 {
        let bytes = match self {
            Command::CreateUserWithPassword { username, .. } => {
                postcard::to_allocvec(&Command::CreateUserWithPassword {
                    username: username.clone(),
                    password_hash: String::new(),
                })
            }
            command => postcard::to_allocvec(command),
        }
        .expect("commands encode");
        siphash24(COMMAND_KEY, &bytes)
    }
}

impl Write {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![WRITE_FORMAT];
        postcard::to_io(self, &mut bytes).expect("writes encode");
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Write, postcard::Error> {
        match bytes.split_first() {
            Some((&WRITE_FORMAT, rest)) => postcard::from_bytes(rest),
            _ => postcard::from_bytes::<legacy::Write>(bytes).map(Write::from),
        }
    }
}

/// The encoding of a write before [`WRITE_FORMAT`]: no format byte, no proposal time, and a
/// message's `sent_time` stored as 0 when the client sent none.
pub mod legacy {
    use serde::{Deserialize, Serialize};

    use super::{ChatId, SessionSeq, UserId};

    #[derive(Serialize, Deserialize)]
    pub struct Write {
        pub session: Option<SessionSeq>,
        pub command: Command,
    }

    #[derive(Serialize, Deserialize)]
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
}

/// An old entry: its proposal time is its message's `sent_time` (what ordered messages
/// then), or 0, so that replaying an old log still gives every replica the same
/// `committed_at`.
impl From<legacy::Write> for Write {
    fn from(old: legacy::Write) -> Write {
        let mut proposed_at_us = 0;
        let command = match old.command {
            legacy::Command::CreateUser { username } => Command::CreateUser { username },
            legacy::Command::CreateChat { user_id, name } => Command::CreateChat { user_id, name },
            legacy::Command::JoinChat { user_id, chat_id } => {
                Command::JoinChat { user_id, chat_id }
            }
            legacy::Command::SendMessage {
                user_id,
                chat_id,
                content,
                sent_time_us,
            } => {
                proposed_at_us = sent_time_us;
                Command::SendMessage {
                    user_id,
                    chat_id,
                    content,
                    sent_time_us: (sent_time_us != 0).then_some(sent_time_us),
                }
            }
        };
        Write {
            session: old.session,
            command,
            proposed_at_us,
        }
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
    fn a_write_round_trips_behind_its_format_byte() {
        let w = Write {
            session: Some(SessionSeq {
                client_id: u64::MAX,
                sequence: 300,
            }),
            command: Command::SendMessage {
                user_id: 1,
                chat_id: 2,
                content: "hi".into(),
                sent_time_us: None,
            },
            proposed_at_us: 1_700_000_000_000_000,
        };
        let bytes = w.encode();
        assert_eq!(bytes[0], WRITE_FORMAT);
        assert_eq!(Write::decode(&bytes).unwrap(), w);
    }

    /// Entries written before the format byte (a `(session, command)` pair, the session
    /// encoded as the `(u64, u64)` pair it once was) still decode.
    #[test]
    fn an_entry_written_before_the_format_byte_still_decodes() {
        let old = |session: Option<(u64, u64)>, command: legacy::Command| {
            postcard::to_allocvec(&(session, command)).unwrap()
        };
        let user = old(
            Some((7, 300)),
            legacy::Command::CreateUser {
                username: "ann".into(),
            },
        );
        assert_eq!(
            Write::decode(&user).unwrap(),
            Write {
                session: Some(SessionSeq {
                    client_id: 7,
                    sequence: 300
                }),
                command: Command::CreateUser {
                    username: "ann".into()
                },
                proposed_at_us: 0,
            }
        );
        for (sent, want) in [(0, None), (5_000_000, Some(5_000_000))] {
            let message = old(
                None,
                legacy::Command::SendMessage {
                    user_id: 1,
                    chat_id: 2,
                    content: "hi".into(),
                    sent_time_us: sent,
                },
            );
            let w = Write::decode(&message).unwrap();
            assert_eq!(w.proposed_at_us, sent);
            assert!(
                matches!(w.command, Command::SendMessage { sent_time_us, .. } if sent_time_us == want)
            );
        }
    }
}
