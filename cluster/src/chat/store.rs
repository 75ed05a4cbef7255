//! The chat state on SQLite: schema, apply, queries, digest, snapshot and restore.
//!
//! One transaction per applied batch, with the last applied log index stored in the same
//! transaction, so a restart resumes exactly where the state is. The database runs in WAL
//! mode with `synchronous=NORMAL`: a process crash loses nothing; a power loss may lose the
//! last transactions, which the node then re-applies from its durable log (the log is only
//! compacted behind a durable snapshot).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::command::{
    ApplyResult, ChatError, ChatId, Command, MessageId, Outcome, SessionSeq, UserId, Write,
};
use crate::raft::{Entry, Index};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("SQLite error on {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("log entry {index} does not decode as a chat write: {reason}")]
    BadEntry { index: Index, reason: String },
    #[error(
        "{path} has schema version {version}; this build reads versions up to {SCHEMA_VERSION}"
    )]
    NewerSchema { path: PathBuf, version: i64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    pub message_id: MessageId,
    pub chat_id: ChatId,
    pub user_id: UserId,
    pub content: String,
    pub sent_time_us: i64,
}

pub struct ChatStore {
    path: PathBuf,
    conn: Connection,
}

/// The schema this build writes (SQLite's `user_version`). Version 1 is the schema before
/// versions were recorded (`user_version` 0 with tables present); [`migrate_v1`] upgrades it.
const SCHEMA_VERSION: i64 = 2;

/// Integers are SQLite's signed 64-bit integers. Ids, client ids and sequences are `u64`s
/// stored as their bit pattern (`as i64`, read back `as u64`): equality holds over the whole
/// range, and ordering is always compared after reading back as `u64`, never in SQL.
const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE users (user_id INTEGER PRIMARY KEY, username TEXT NOT NULL UNIQUE);
CREATE TABLE chats (chat_id INTEGER PRIMARY KEY, name TEXT NOT NULL, created_by INTEGER NOT NULL);
CREATE TABLE members (chat_id INTEGER NOT NULL, user_id INTEGER NOT NULL, PRIMARY KEY (chat_id, user_id)) WITHOUT ROWID;
CREATE INDEX members_by_user ON members (user_id, chat_id);
CREATE TABLE messages (message_id INTEGER PRIMARY KEY, chat_id INTEGER NOT NULL, user_id INTEGER NOT NULL, content TEXT NOT NULL, sent_time INTEGER NOT NULL);
CREATE INDEX messages_by_chat_time ON messages (chat_id, sent_time);
CREATE TABLE sessions (client_id INTEGER PRIMARY KEY, sequence INTEGER NOT NULL, command_hash INTEGER, outcome BLOB NOT NULL);
INSERT INTO meta (key, value) VALUES ('applied_index', 0);
INSERT INTO meta (key, value) VALUES ('applied_term', 0);
";

impl ChatStore {
    pub fn open(path: &Path) -> Result<ChatStore, StoreError> {
        let sq = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(sq)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sq)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sq)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sq)?;
        let has_tables: bool = conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
                [],
                |r| r.get(0),
            )
            .map_err(sq)?;
        match (version, has_tables) {
            (0, false) => {
                let create =
                    format!("BEGIN; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;");
                conn.execute_batch(&create).map_err(sq)?;
            }
            (0, true) => migrate_v1(&mut conn).map_err(sq)?,
            (SCHEMA_VERSION, _) => {}
            (version, _) => {
                return Err(StoreError::NewerSchema {
                    path: path.to_path_buf(),
                    version,
                });
            }
        }
        Ok(ChatStore {
            path: path.to_path_buf(),
            conn,
        })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    pub fn applied_index(&self) -> Result<Index, StoreError> {
        self.conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'applied_index'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|v| v as Index)
            .map_err(|e| self.err(e))
    }

    /// The term of the last applied entry.
    pub fn applied_term(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'applied_term'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|v| v as u64)
            .map_err(|e| self.err(e))
    }

    /// Applies committed entries in one transaction. Returns each entry's outcome (no-ops
    /// give none). Entries at or below the applied index are skipped (already applied).
    pub fn apply(&mut self, entries: &[Entry]) -> Result<Vec<(Index, ApplyResult)>, StoreError> {
        let applied = self.applied_index()?;
        let path = self.path.clone();
        let sq = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sq)?;
        let mut results = Vec::new();
        let mut last = None;
        for entry in entries.iter().filter(|e| e.index > applied) {
            last = Some((entry.index, entry.term));
            let Some(bytes) = &entry.command else {
                continue;
            };
            let write = Write::decode(bytes).map_err(|e| StoreError::BadEntry {
                index: entry.index,
                reason: e.to_string(),
            })?;
            let result = apply_write(&tx, entry.index, &write).map_err(sq)?;
            results.push((entry.index, result));
        }
        if let Some((index, term)) = last {
            let update = "UPDATE meta SET value = ?2 WHERE key = ?1";
            tx.execute(update, params!["applied_index", index as i64])
                .map_err(sq)?;
            tx.execute(update, params!["applied_term", term as i64])
                .map_err(sq)?;
        }
        tx.commit().map_err(sq)?;
        Ok(results)
    }

    pub fn get_messages(
        &self,
        user_id: UserId,
        after_us: i64,
    ) -> Result<Result<Vec<StoredMessage>, ChatError>, StoreError> {
        if !self.user_exists(user_id)? {
            return Ok(Err(ChatError::NotFound(format!(
                "user {user_id} does not exist"
            ))));
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT m.message_id, m.chat_id, m.user_id, m.content, m.sent_time
                 FROM members mb JOIN messages m ON m.chat_id = mb.chat_id
                 WHERE mb.user_id = ?1 AND m.sent_time > ?2
                 ORDER BY m.message_id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![user_id as i64, after_us], |r| {
                Ok(StoredMessage {
                    message_id: r.get::<_, i64>(0)? as u64,
                    chat_id: r.get::<_, i64>(1)? as u64,
                    user_id: r.get::<_, i64>(2)? as u64,
                    content: r.get(3)?,
                    sent_time_us: r.get(4)?,
                })
            })
            .map_err(|e| self.err(e))?;
        let messages = rows
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(Ok(messages))
    }

    pub fn get_chat_users(
        &self,
        chat_id: ChatId,
    ) -> Result<Result<Vec<(UserId, String)>, ChatError>, StoreError> {
        let exists: Option<i64> = self
            .conn
            .query_row(
                "SELECT chat_id FROM chats WHERE chat_id = ?1",
                [chat_id as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if exists.is_none() {
            return Ok(Err(ChatError::NotFound(format!(
                "chat {chat_id} does not exist"
            ))));
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT u.user_id, u.username FROM members mb JOIN users u ON u.user_id = mb.user_id
                 WHERE mb.chat_id = ?1 ORDER BY u.user_id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([chat_id as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.err(e))?;
        Ok(Ok(rows
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?))
    }

    fn user_exists(&self, user_id: UserId) -> Result<bool, StoreError> {
        let found: Option<i64> = self
            .conn
            .query_row(
                "SELECT user_id FROM users WHERE user_id = ?1",
                [user_id as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(found.is_some())
    }

    /// A digest of the whole chat state (users, chats, members, messages, sessions) and the
    /// applied index: equal on every replica that applied the same log prefix.
    pub fn digest(&self) -> Result<String, StoreError> {
        let mut hasher = crc32fast::Hasher::new();
        let mut total = 0u64;
        for (table, order) in [
            ("users", "user_id"),
            ("chats", "chat_id"),
            ("members", "chat_id, user_id"),
            ("messages", "message_id"),
            ("sessions", "client_id"),
        ] {
            let mut stmt = self
                .conn
                .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))
                .map_err(|e| self.err(e))?;
            let columns = stmt.column_count();
            let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
            while let Some(row) = rows.next().map_err(|e| self.err(e))? {
                total += 1;
                for c in 0..columns {
                    let v: rusqlite::types::Value = row.get(c).map_err(|e| self.err(e))?;
                    hasher.update(format!("{v:?}|").as_bytes());
                }
                hasher.update(b"\n");
            }
        }
        Ok(format!("{:08x}-{total}", hasher.finalize()))
    }

    /// The whole database as bytes (a consistent copy via `VACUUM INTO`).
    pub fn snapshot(&self) -> Result<Vec<u8>, StoreError> {
        let tmp = self.path.with_extension("snapshot.tmp");
        let _ = std::fs::remove_file(&tmp);
        self.conn
            .execute("VACUUM INTO ?1", [tmp.to_string_lossy().as_ref()])
            .map_err(|e| self.err(e))?;
        let bytes = std::fs::read(&tmp).map_err(|e| StoreError::Io {
            path: tmp.clone(),
            source: e,
        })?;
        let _ = std::fs::remove_file(&tmp);
        Ok(bytes)
    }

    /// Replaces the whole state with a snapshot's bytes.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let tmp = self.path.with_extension("restore.tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        };
        write().map_err(|e| StoreError::Io {
            path: tmp.clone(),
            source: e,
        })?;
        let path = self.path.clone();
        // Close the current connection before replacing its files.
        let placeholder = Connection::open_in_memory().map_err(|e| self.err(e))?;
        drop(std::mem::replace(&mut self.conn, placeholder));
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        std::fs::rename(&tmp, &path).map_err(|e| StoreError::Io {
            path: path.clone(),
            source: e,
        })?;
        if let Some(dir) = path.parent() {
            let sync = std::fs::File::open(dir).and_then(|d| d.sync_all());
            sync.map_err(|e| StoreError::Io {
                path: dir.to_path_buf(),
                source: e,
            })?;
        }
        *self = ChatStore::open(&path)?;
        Ok(())
    }
}

/// What startup reconciliation sees of the chat store.
impl crate::storage::StateMachine for ChatStore {
    type Error = StoreError;

    fn applied_index(&self) -> Result<Index, StoreError> {
        ChatStore::applied_index(self)
    }

    fn applied_term(&self) -> Result<u64, StoreError> {
        ChatStore::applied_term(self)
    }

    fn snapshot(&self) -> Result<Vec<u8>, StoreError> {
        ChatStore::snapshot(self)
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), StoreError> {
        ChatStore::restore(self, data)
    }
}

/// The schema of version 1 had no command hash in `sessions`: its rows keep a NULL hash, and
/// a retry of such a client's last write is trusted to be the same command (as version 1
/// did) until the client's next write stores a hash.
fn migrate_v1(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute_batch(&format!(
        "ALTER TABLE sessions ADD COLUMN command_hash INTEGER;
         PRAGMA user_version = {SCHEMA_VERSION};"
    ))?;
    tx.commit()
}

/// Applies one write: first the exactly-once check of its write id, then the command.
fn apply_write(
    tx: &rusqlite::Transaction,
    index: Index,
    write: &Write,
) -> rusqlite::Result<ApplyResult> {
    let session = write
        .session
        .map(|s| (s.client_id, s.sequence, write.command.fingerprint()));
    if let Some((client, seq, hash)) = session {
        let prev: Option<(i64, Option<i64>, Vec<u8>)> = tx
            .query_row(
                "SELECT sequence, command_hash, outcome FROM sessions WHERE client_id = ?1",
                [client as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        if let Some((last_seq, last_hash, outcome)) = prev {
            let last_seq = last_seq as u64;
            if seq == last_seq {
                if last_hash.is_some_and(|h| h as u64 != hash) {
                    // Answering with the first command's outcome would hand this command
                    // another command's result (a chat id as a message id).
                    return Ok(Err(ChatError::FailedPrecondition(format!(
                        "write id reused for a different command: client {client} already \
                         used sequence {seq} for another write"
                    ))));
                }
                // A retry of the last write: answer as the first time, change nothing.
                return decode_outcome(&outcome);
            }
            if seq < last_seq {
                return Ok(Err(ChatError::FailedPrecondition(format!(
                    "write sequence {seq} of client {client} is older than its latest ({last_seq})"
                ))));
            }
        }
    }
    let result = apply_command(tx, index, &write.command)?;
    if let Some((client, seq, hash)) = session {
        let outcome = postcard::to_allocvec(&result).expect("outcomes encode");
        tx.execute(
            "INSERT INTO sessions (client_id, sequence, command_hash, outcome) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (client_id) DO UPDATE SET sequence = excluded.sequence,
                 command_hash = excluded.command_hash, outcome = excluded.outcome",
            params![client as i64, seq as i64, hash as i64, outcome],
        )?;
    }
    Ok(result)
}

/// A stored outcome; one that does not decode is a corrupt database (a failed apply).
fn decode_outcome(bytes: &[u8]) -> rusqlite::Result<ApplyResult> {
    postcard::from_bytes(bytes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Blob, Box::new(e))
    })
}

/// Whether `sql` (a query selecting one integer column) finds a row.
fn exists(
    tx: &rusqlite::Transaction,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<bool> {
    Ok(tx
        .query_row(sql, params, |r| r.get::<_, i64>(0))
        .optional()?
        .is_some())
}

fn apply_command(
    tx: &rusqlite::Transaction,
    index: Index,
    command: &Command,
) -> rusqlite::Result<ApplyResult> {
    if let Err(e) = command.validate() {
        return Ok(Err(e));
    }
    let user_exists = |id: UserId| {
        exists(
            tx,
            "SELECT user_id FROM users WHERE user_id = ?1",
            [id as i64],
        )
    };
    let chat_exists = |id: ChatId| {
        exists(
            tx,
            "SELECT chat_id FROM chats WHERE chat_id = ?1",
            [id as i64],
        )
    };
    let no_user = |id: UserId| {
        Ok(Err(ChatError::NotFound(format!(
            "user {id} does not exist"
        ))))
    };
    let no_chat = |id: ChatId| {
        Ok(Err(ChatError::NotFound(format!(
            "chat {id} does not exist"
        ))))
    };
    match command {
        Command::CreateUser { username } => {
            if exists(
                tx,
                "SELECT user_id FROM users WHERE username = ?1",
                [username],
            )? {
                return Ok(Err(ChatError::AlreadyExists(format!(
                    "username '{username}' is taken"
                ))));
            }
            tx.execute(
                "INSERT INTO users (user_id, username) VALUES (?1, ?2)",
                params![index as i64, username],
            )?;
            Ok(Ok(Outcome::Created(index)))
        }
        Command::CreateChat { user_id, name } => {
            if !user_exists(*user_id)? {
                return no_user(*user_id);
            }
            tx.execute(
                "INSERT INTO chats (chat_id, name, created_by) VALUES (?1, ?2, ?3)",
                params![index as i64, name, *user_id as i64],
            )?;
            tx.execute(
                "INSERT INTO members (chat_id, user_id) VALUES (?1, ?2)",
                params![index as i64, *user_id as i64],
            )?;
            Ok(Ok(Outcome::Created(index)))
        }
        Command::JoinChat { user_id, chat_id } => {
            if !user_exists(*user_id)? {
                return no_user(*user_id);
            }
            if !chat_exists(*chat_id)? {
                return no_chat(*chat_id);
            }
            tx.execute(
                "INSERT OR IGNORE INTO members (chat_id, user_id) VALUES (?1, ?2)",
                params![*chat_id as i64, *user_id as i64],
            )?;
            Ok(Ok(Outcome::Done))
        }
        Command::SendMessage {
            user_id,
            chat_id,
            content,
            sent_time_us,
        } => {
            if !user_exists(*user_id)? {
                return no_user(*user_id);
            }
            if !chat_exists(*chat_id)? {
                return no_chat(*chat_id);
            }
            let member = "SELECT user_id FROM members WHERE chat_id = ?1 AND user_id = ?2";
            if !exists(tx, member, params![*chat_id as i64, *user_id as i64])? {
                return Ok(Err(ChatError::FailedPrecondition(format!(
                    "user {user_id} is not a member of chat {chat_id}"
                ))));
            }
            tx.execute(
                "INSERT INTO messages (message_id, chat_id, user_id, content, sent_time) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![index as i64, *chat_id as i64, *user_id as i64, content, sent_time_us],
            )?;
            Ok(Ok(Outcome::Created(index)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: Index, command: Command, session: Option<(u64, u64)>) -> Entry {
        let session = session.map(|(client_id, sequence)| SessionSeq {
            client_id,
            sequence,
        });
        Entry {
            index,
            term: 1,
            command: Some(Write { session, command }.encode()),
        }
    }

    fn store() -> (tempfile::TempDir, ChatStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = ChatStore::open(&dir.path().join("chat.sqlite")).unwrap();
        (dir, s)
    }

    #[test]
    fn ids_come_from_the_log_and_rejections_change_nothing() {
        let (_d, mut s) = store();
        let r = s
            .apply(&[
                entry(
                    1,
                    Command::CreateUser {
                        username: "ann".into(),
                    },
                    None,
                ),
                entry(
                    2,
                    Command::CreateUser {
                        username: "ann".into(),
                    },
                    None,
                ),
                entry(
                    3,
                    Command::CreateChat {
                        user_id: 1,
                        name: "general".into(),
                    },
                    None,
                ),
                entry(
                    4,
                    Command::SendMessage {
                        user_id: 9,
                        chat_id: 3,
                        content: "x".into(),
                        sent_time_us: 5,
                    },
                    None,
                ),
                entry(
                    5,
                    Command::CreateUser {
                        username: "bob".into(),
                    },
                    None,
                ),
                entry(
                    6,
                    Command::SendMessage {
                        user_id: 5,
                        chat_id: 3,
                        content: "hi".into(),
                        sent_time_us: 5,
                    },
                    None,
                ),
                entry(
                    7,
                    Command::JoinChat {
                        user_id: 5,
                        chat_id: 3,
                    },
                    None,
                ),
                entry(
                    8,
                    Command::SendMessage {
                        user_id: 5,
                        chat_id: 3,
                        content: "hi".into(),
                        sent_time_us: 6,
                    },
                    None,
                ),
            ])
            .unwrap();
        assert_eq!(r[0].1, Ok(Outcome::Created(1)));
        assert!(matches!(r[1].1, Err(ChatError::AlreadyExists(_))));
        assert_eq!(r[2].1, Ok(Outcome::Created(3)));
        assert!(matches!(r[3].1, Err(ChatError::NotFound(_))));
        assert!(matches!(r[5].1, Err(ChatError::FailedPrecondition(_))));
        assert_eq!(r[7].1, Ok(Outcome::Created(8)));
        assert_eq!(s.applied_index().unwrap(), 8);
        let msgs = s.get_messages(5, 0).unwrap().unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].message_id, 8);
        assert_eq!(
            s.get_messages(1, 6).unwrap().unwrap().len(),
            0,
            "strictly after"
        );
        assert_eq!(
            s.get_chat_users(3).unwrap().unwrap(),
            vec![(1, "ann".into()), (5, "bob".into())]
        );
        assert!(matches!(
            s.get_messages(42, 0).unwrap(),
            Err(ChatError::NotFound(_))
        ));
    }

    #[test]
    fn retried_writes_apply_once() {
        let (_d, mut s) = store();
        let w = Some((77, 1));
        let r = s
            .apply(&[
                entry(
                    1,
                    Command::CreateUser {
                        username: "ann".into(),
                    },
                    w,
                ),
                entry(
                    2,
                    Command::CreateUser {
                        username: "ann".into(),
                    },
                    w,
                ),
            ])
            .unwrap();
        assert_eq!(r[0].1, Ok(Outcome::Created(1)));
        assert_eq!(
            r[1].1,
            Ok(Outcome::Created(1)),
            "the retry gets the first answer"
        );
        let digest = s.digest().unwrap();
        assert!(
            digest.ends_with("-2"),
            "one user and one session row: {digest}"
        );
    }

    #[test]
    fn reapplying_is_skipped_and_snapshots_restore() {
        let (_d, mut s) = store();
        let e1 = entry(
            1,
            Command::CreateUser {
                username: "ann".into(),
            },
            None,
        );
        s.apply(std::slice::from_ref(&e1)).unwrap();
        assert!(s.apply(&[e1]).unwrap().is_empty(), "already applied");
        let snap = s.snapshot().unwrap();
        let digest = s.digest().unwrap();
        let (_d2, mut other) = store();
        other.restore(&snap).unwrap();
        assert_eq!(other.digest().unwrap(), digest);
        assert_eq!(other.applied_index().unwrap(), 1);
    }

    fn user(name: &str) -> Command {
        Command::CreateUser {
            username: name.into(),
        }
    }

    #[test]
    fn a_write_id_reused_for_another_command_is_refused_not_answered() {
        let (_d, mut s) = store();
        let w = Some((5, 1));
        let r = s
            .apply(&[
                entry(1, user("ann"), None),
                entry(
                    2,
                    Command::CreateChat {
                        user_id: 1,
                        name: "general".into(),
                    },
                    w,
                ),
                // The same write id on a different command: today's clients' bug.
                entry(
                    3,
                    Command::SendMessage {
                        user_id: 1,
                        chat_id: 2,
                        content: "hi".into(),
                        sent_time_us: 7,
                    },
                    w,
                ),
                // A true retry still gets the first answer.
                entry(
                    4,
                    Command::CreateChat {
                        user_id: 1,
                        name: "general".into(),
                    },
                    w,
                ),
            ])
            .unwrap();
        assert_eq!(r[1].1, Ok(Outcome::Created(2)));
        let Err(ChatError::FailedPrecondition(m)) = &r[2].1 else {
            panic!("the chat id came back as a message id: {:?}", r[2].1)
        };
        assert!(m.contains("write id reused for a different command"), "{m}");
        assert_eq!(r[3].1, Ok(Outcome::Created(2)));
        assert!(s.get_messages(1, 0).unwrap().unwrap().is_empty());
    }

    #[test]
    fn sequences_and_client_ids_use_the_whole_u64_range() {
        let (_d, mut s) = store();
        let c = u64::MAX;
        let half = i64::MAX as u64 + 1;
        let r = s
            .apply(&[
                entry(1, user("a"), Some((c, 1))),
                entry(2, user("b"), Some((c, half))),
                entry(3, user("c"), Some((c, u64::MAX))),
                entry(4, user("c"), Some((c, u64::MAX))),
                entry(5, user("d"), Some((c, half + 1))),
                entry(6, user("e"), Some((half, u64::MAX))),
            ])
            .unwrap();
        assert_eq!(r[0].1, Ok(Outcome::Created(1)));
        assert_eq!(r[1].1, Ok(Outcome::Created(2)), "2^63 is newer than 1");
        assert_eq!(
            r[2].1,
            Ok(Outcome::Created(3)),
            "u64::MAX is newer than 2^63"
        );
        assert_eq!(r[3].1, Ok(Outcome::Created(3)), "a retry at u64::MAX");
        assert!(
            matches!(&r[4].1, Err(ChatError::FailedPrecondition(m)) if m.contains("older")),
            "{:?}",
            r[4].1
        );
        assert_eq!(r[5].1, Ok(Outcome::Created(6)), "another client");
    }

    /// A database written before schema versions: the sessions table gains its hash column,
    /// and an old session row's retry is still answered.
    #[test]
    fn a_version_1_database_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.sqlite");
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                 CREATE TABLE users (user_id INTEGER PRIMARY KEY, username TEXT NOT NULL UNIQUE);
                 CREATE TABLE chats (chat_id INTEGER PRIMARY KEY, name TEXT NOT NULL, created_by INTEGER NOT NULL);
                 CREATE TABLE members (chat_id INTEGER NOT NULL, user_id INTEGER NOT NULL, PRIMARY KEY (chat_id, user_id)) WITHOUT ROWID;
                 CREATE INDEX members_by_user ON members (user_id, chat_id);
                 CREATE TABLE messages (message_id INTEGER PRIMARY KEY, chat_id INTEGER NOT NULL, user_id INTEGER NOT NULL, content TEXT NOT NULL, sent_time INTEGER NOT NULL);
                 CREATE INDEX messages_by_chat_time ON messages (chat_id, sent_time);
                 CREATE TABLE sessions (client_id INTEGER PRIMARY KEY, sequence INTEGER NOT NULL, outcome BLOB NOT NULL);
                 INSERT INTO meta VALUES ('applied_index', 1), ('applied_term', 1);
                 INSERT INTO users VALUES (1, 'ann');",
            )
            .unwrap();
            let outcome = postcard::to_allocvec(&ApplyResult::Ok(Outcome::Created(1))).unwrap();
            old.execute("INSERT INTO sessions VALUES (9, 1, ?1)", params![outcome])
                .unwrap();
        }
        let mut s = ChatStore::open(&path).unwrap();
        assert_eq!(s.applied_index().unwrap(), 1);
        let r = s
            .apply(&[
                entry(2, user("ann"), Some((9, 1))),
                entry(3, user("bob"), Some((9, 2))),
                entry(4, user("ann"), Some((9, 2))),
            ])
            .unwrap();
        assert_eq!(r[0].1, Ok(Outcome::Created(1)), "an old row's retry");
        assert_eq!(r[1].1, Ok(Outcome::Created(3)));
        assert!(matches!(&r[2].1, Err(ChatError::FailedPrecondition(_))));
        drop(s);
        // Opening again finds the current version: nothing to migrate.
        assert_eq!(ChatStore::open(&path).unwrap().applied_index().unwrap(), 4);
    }
}
