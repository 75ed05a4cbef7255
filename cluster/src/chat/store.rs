//! The chat state on SQLite: schema, apply, queries, digest, snapshot and restore.
//!
//! One transaction per applied batch, with the last applied log index stored in the same
//! transaction, so a restart resumes exactly where the state is.
//!
//! A message's `committed_at` is computed here, at apply time, from the proposing leader's
//! clock carried in the entry: `max(proposed_at, previous committed_at + 1 µs)`. It is a
//! function of the log alone, so every replica computes the same value, and it strictly
//! increases in commit order even when a new leader's clock is behind the old one's (it
//! then advances by 1 µs per message until the clock catches up). The database runs in WAL
//! mode with `synchronous=NORMAL`: a process crash loses nothing; a power loss may lose the
//! last transactions, which the node then re-applies from its durable log (the log is only
//! compacted behind a durable snapshot).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::command::{ApplyResult, ChatError, ChatId, Command, Outcome, UserId, Write};
use super::digest::{Row, StateDigest};
use super::query::{
    MAX_PAGE_BYTES, MESSAGE_OVERHEAD_BYTES, MessagePage, MessagesQuery, Query, QueryOutput,
    StoredMessage, page_limit,
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

pub struct ChatStore {
    path: PathBuf,
    conn: Connection,
    /// The `meta` table's values, as of the last committed transaction: read at open, kept
    /// up to date by [`ChatStore::apply`], so that status needs no query.
    applied_index: Index,
    applied_term: u64,
    tally: Tally,
}

/// What applying keeps a running account of, stored in `meta` with the rows it describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tally {
    digest: StateDigest,
    /// The `committed_at` of the last message applied (0 before the first).
    last_committed_at_us: i64,
}

/// The schema this build writes (SQLite's `user_version`). Version 1 is the schema before
/// versions were recorded (`user_version` 0 with tables present); [`migrate_v1`] upgrades it.
const SCHEMA_VERSION: i64 = 3;

/// Version 3 adds the password hashes of users created with one (authentication).
const CREDENTIALS_TABLE: &str =
    "CREATE TABLE credentials (user_id INTEGER PRIMARY KEY, password_hash TEXT NOT NULL);";

/// Integers are SQLite's signed 64-bit integers. Ids, client ids and sequences are `u64`s
/// stored as their bit pattern (`as i64`, read back `as u64`): equality holds over the whole
/// range, and ordering is always compared after reading back as `u64`, never in SQL.
const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE users (user_id INTEGER PRIMARY KEY, username TEXT NOT NULL UNIQUE);
CREATE TABLE chats (chat_id INTEGER PRIMARY KEY, name TEXT NOT NULL, created_by INTEGER NOT NULL);
CREATE TABLE members (chat_id INTEGER NOT NULL, user_id INTEGER NOT NULL, PRIMARY KEY (chat_id, user_id)) WITHOUT ROWID;
CREATE INDEX members_by_user ON members (user_id, chat_id);
CREATE TABLE messages (message_id INTEGER PRIMARY KEY, chat_id INTEGER NOT NULL, user_id INTEGER NOT NULL, content TEXT NOT NULL, sent_time INTEGER, committed_at INTEGER NOT NULL);
CREATE INDEX messages_by_chat_commit ON messages (chat_id, committed_at);
CREATE TABLE sessions (client_id INTEGER PRIMARY KEY, sequence INTEGER NOT NULL, command_hash INTEGER, outcome BLOB NOT NULL);
INSERT INTO meta (key, value) VALUES ('applied_index', 0), ('applied_term', 0);
INSERT INTO meta (key, value) VALUES ('digest_sum', 0), ('digest_rows', 0);
INSERT INTO meta (key, value) VALUES ('last_committed_at', 0);
";

/// The ids of one page of a user's messages (`get_messages`, first step).
const PAGE_IDS_SQL: &str =
    "SELECT m.message_id FROM members mb JOIN messages m ON m.chat_id = mb.chat_id
     WHERE mb.user_id = ?1 AND m.committed_at > ?2
     ORDER BY m.committed_at LIMIT ?3";
/// One message by id (`get_messages`, second step).
const MESSAGE_SQL: &str = "SELECT chat_id, user_id, content, sent_time, committed_at
     FROM messages WHERE message_id = ?1";

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
        // Every statement the apply and read paths run stays prepared (see `exec`).
        conn.set_prepared_statement_cache_capacity(32);
        // The query planner's stability guarantee: a plan never depends on the values bound
        // to it. Without it, a statement with a bound `LIMIT` (the messages page) or a
        // parameter compared to an indexed column is marked to be prepared again whenever
        // that parameter is bound, so every poll parsed and planned its query anew (3.6%
        // of a busy replica's CPU in a profile, under `sqlite3Reprepare`).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
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
                let create = format!(
                    "BEGIN; {SCHEMA} {CREDENTIALS_TABLE} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                );
                conn.execute_batch(&create).map_err(sq)?;
            }
            (0, true) => migrate_v1(&mut conn).map_err(sq)?,
            (2, _) => migrate_v2(&conn).map_err(sq)?,
            (SCHEMA_VERSION, _) => {}
            (version, _) => {
                return Err(StoreError::NewerSchema {
                    path: path.to_path_buf(),
                    version,
                });
            }
        }
        let meta = |key: &str| {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
                r.get::<_, i64>(0)
            })
        };
        let applied_index = meta("applied_index").map_err(sq)? as Index;
        let applied_term = meta("applied_term").map_err(sq)? as u64;
        let tally = Tally {
            digest: StateDigest::from_meta(
                meta("digest_sum").map_err(sq)?,
                meta("digest_rows").map_err(sq)?,
            ),
            last_committed_at_us: meta("last_committed_at").map_err(sq)?,
        };
        Ok(ChatStore {
            path: path.to_path_buf(),
            conn,
            applied_index,
            applied_term,
            tally,
        })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    pub fn applied_index(&self) -> Result<Index, StoreError> {
        Ok(self.applied_index)
    }

    /// The term of the last applied entry.
    pub fn applied_term(&self) -> Result<u64, StoreError> {
        Ok(self.applied_term)
    }

    /// The digest of the whole chat state (users, chats, members, messages, sessions): equal
    /// on every replica that applied the same entries. Kept up to date by [`Self::apply`], so
    /// this reads no table (see `digest.rs`).
    pub fn digest(&self) -> StateDigest {
        self.tally.digest
    }

    /// The same digest computed from scratch by scanning every table: what [`Self::digest`]
    /// must always equal (the tests check it; migrations use the same scan).
    #[cfg(test)]
    pub fn recompute_digest(&self) -> Result<StateDigest, StoreError> {
        scan_digest(&self.conn).map_err(|e| self.err(e))
    }

    /// Applies committed entries in one transaction. Returns each entry's outcome (no-ops
    /// give none). Entries at or below the applied index are skipped (already applied).
    pub fn apply(&mut self, entries: &[Entry]) -> Result<Vec<(Index, ApplyResult)>, StoreError> {
        let applied = self.applied_index;
        let mut tally = self.tally;
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
            let result = apply_write(&tx, entry.index, &write, &mut tally).map_err(sq)?;
            results.push((entry.index, result));
        }
        if let Some((index, term)) = last {
            let update = "UPDATE meta SET value = ?2 WHERE key = ?1";
            exec(&tx, update, params!["applied_index", index as i64]).map_err(sq)?;
            exec(&tx, update, params!["applied_term", term as i64]).map_err(sq)?;
            if tally.digest != self.tally.digest {
                let (sum, rows) = tally.digest.to_meta();
                exec(&tx, update, params!["digest_sum", sum]).map_err(sq)?;
                exec(&tx, update, params!["digest_rows", rows]).map_err(sq)?;
            }
            if tally.last_committed_at_us != self.tally.last_committed_at_us {
                let at = tally.last_committed_at_us;
                exec(&tx, update, params!["last_committed_at", at]).map_err(sq)?;
            }
        }
        tx.commit().map_err(sq)?;
        if let Some((index, term)) = last {
            self.applied_index = index;
            self.applied_term = term;
            self.tally = tally;
        }
        Ok(results)
    }

    /// Answers a query; the outer error is the store failing to read, the inner one a
    /// rejection (an unknown user or chat).
    pub fn query(&self, query: Query) -> Result<Result<QueryOutput, ChatError>, StoreError> {
        Ok(match query {
            Query::Messages(q) => self.get_messages(&q)?.map(QueryOutput::Messages),
            Query::ChatUsers { chat_id } => {
                self.get_chat_users(chat_id)?.map(QueryOutput::ChatUsers)
            }
            Query::Credentials { username } => {
                Ok(QueryOutput::Credentials(self.credentials(&username)?))
            }
            Query::Digest => Ok(QueryOutput::Digest {
                applied_index: self.applied_index,
                digest: self.digest().to_string(),
            }),
        })
    }

    /// One page of the messages in the user's chats committed after `q.after_us`, in commit
    /// order (see `query.rs` for the bounds).
    ///
    /// Two steps keep memory bounded whatever the chats hold: the ids of the page come from
    /// the `(chat_id, committed_at)` index alone (SQLite keeps the best `limit + 1` of them,
    /// no content), then the messages are read one by one until the byte budget is spent.
    pub fn get_messages(
        &self,
        q: &MessagesQuery,
    ) -> Result<Result<MessagePage, ChatError>, StoreError> {
        let user_id = q.user_id;
        if !self.user_exists(user_id)? {
            return Ok(Err(ChatError::NotFound(format!(
                "user {user_id} does not exist"
            ))));
        }
        let limit = page_limit(q.limit) as usize;
        let mut ids = self
            .conn
            .prepare_cached(PAGE_IDS_SQL)
            .map_err(|e| self.err(e))?;
        let ids = ids
            .query_map(params![user_id as i64, q.after_us, limit as i64 + 1], |r| {
                r.get::<_, i64>(0)
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))?;
        let mut page = MessagePage {
            messages: Vec::with_capacity(ids.len().min(limit)),
            has_more: ids.len() > limit,
        };
        let mut get = self
            .conn
            .prepare_cached(MESSAGE_SQL)
            .map_err(|e| self.err(e))?;
        let mut bytes = 0;
        for id in ids.into_iter().take(limit) {
            let message = get
                .query_row([id], |r| {
                    Ok(StoredMessage {
                        message_id: id as u64,
                        chat_id: r.get::<_, i64>(0)? as u64,
                        user_id: r.get::<_, i64>(1)? as u64,
                        content: r.get(2)?,
                        sent_time_us: r.get(3)?,
                        committed_at_us: r.get(4)?,
                    })
                })
                .map_err(|e| self.err(e))?;
            bytes += message.content.len() + MESSAGE_OVERHEAD_BYTES;
            if bytes > MAX_PAGE_BYTES && !page.messages.is_empty() {
                page.has_more = true;
                break;
            }
            page.messages.push(message);
        }
        Ok(Ok(page))
    }

    pub fn get_chat_users(
        &self,
        chat_id: ChatId,
    ) -> Result<Result<Vec<(UserId, String)>, ChatError>, StoreError> {
        let exists: Option<i64> = self
            .conn
            .prepare_cached("SELECT chat_id FROM chats WHERE chat_id = ?1")
            .and_then(|mut stmt| stmt.query_row([chat_id as i64], |r| r.get(0)))
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

    /// The id and password hash of the user named `username`, if it has a password.
    pub fn credentials(&self, username: &str) -> Result<Option<(UserId, String)>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT u.user_id, c.password_hash FROM users u
                 JOIN credentials c ON c.user_id = u.user_id WHERE u.username = ?1",
            )
            .and_then(|mut stmt| {
                stmt.query_row([username], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
                })
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    fn user_exists(&self, user_id: UserId) -> Result<bool, StoreError> {
        let found: Option<i64> = self
            .conn
            .prepare_cached("SELECT user_id FROM users WHERE user_id = ?1")
            .and_then(|mut stmt| stmt.query_row([user_id as i64], |r| r.get(0)))
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(found.is_some())
    }

    /// Writes a consistent copy of the whole database to `path` (which must not exist) with
    /// `VACUUM INTO`: SQLite copies it page by page, so memory stays at its page cache
    /// whatever the database's size. The caller makes the file durable
    /// ([`crate::storage::SnapshotDir::create`]).
    pub fn snapshot_to(&self, path: &Path) -> Result<(), StoreError> {
        self.conn
            .execute("VACUUM INTO ?1", [path.to_string_lossy().as_ref()])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The database file this store runs on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the whole state with the snapshot file at `path`, which is left as it is
    /// (it stays the node's snapshot). The file is copied by the kernel (`fs::copy`), not
    /// read into memory; the copy is fsync'd, then the connection closed, the copy renamed
    /// over the database, the directory fsync'd, and the database reopened. A crash part
    /// way leaves the old database or the new one, and startup restores again if it finds
    /// the old one behind the snapshot (`storage::reconcile`).
    pub fn restore_from(&mut self, path: &Path) -> Result<(), StoreError> {
        let tmp = self.path.with_extension("restore.tmp");
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StoreError::Io { path: p, source }
        };
        std::fs::copy(path, &tmp).map_err(io(path))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io(&tmp))?;
        let db = self.path.clone();
        // Close the current connection before replacing its files.
        let placeholder = Connection::open_in_memory().map_err(|e| self.err(e))?;
        drop(std::mem::replace(&mut self.conn, placeholder));
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
        std::fs::rename(&tmp, &db).map_err(io(&db))?;
        if let Some(dir) = db.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        *self = ChatStore::open(&db)?;
        Ok(())
    }
}

/// Copies of the chat database made from a connection of its own (the applier's snapshot
/// thread), so that the thread applying entries goes on meanwhile: in WAL mode the copy
/// reads one committed state of the database while the applier commits after it.
///
/// The connection is opened once and kept, with a small page cache (`CACHE_KIB`): opening
/// one per copy allocated a fresh cache and schema each time, which showed as a sawtooth of
/// several MB in a follower's RSS under load. [`Self::forget`] drops it when the database
/// file is replaced (a restore), and the next copy opens the new file.
pub struct SnapshotSource {
    db: PathBuf,
    conn: Option<Connection>,
}

impl SnapshotSource {
    /// The page cache of the copying connection, in KiB: `VACUUM INTO` streams pages, so a
    /// large cache buys nothing.
    const CACHE_KIB: i64 = 512;

    pub fn new(db: &Path) -> SnapshotSource {
        SnapshotSource {
            db: db.to_path_buf(),
            conn: None,
        }
    }

    /// Writes a consistent copy of the database to `out` (which must not exist). The copy is
    /// whatever was committed when it began, so its position is read back from the copy
    /// itself: returns its `(applied_index, applied_term)`.
    pub fn copy_to(&mut self, out: &Path) -> Result<(Index, u64), StoreError> {
        let sq = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Sqlite { path, source }
        };
        let read_only =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if self.conn.is_none() {
            let conn = Connection::open_with_flags(&self.db, read_only).map_err(sq(&self.db))?;
            conn.pragma_update(None, "cache_size", -Self::CACHE_KIB)
                .map_err(sq(&self.db))?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_ref().expect("opened above");
        conn.execute("VACUUM INTO ?1", [out.to_string_lossy().as_ref()])
            .map_err(sq(&self.db))?;
        let copy = Connection::open_with_flags(out, read_only).map_err(sq(out))?;
        let meta = |key: &str| {
            copy.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
                r.get::<_, i64>(0)
            })
        };
        let index = meta("applied_index").map_err(sq(out))? as Index;
        let term = meta("applied_term").map_err(sq(out))? as u64;
        Ok((index, term))
    }

    /// Closes the connection: the database file is about to be replaced.
    pub fn forget(&mut self) {
        self.conn = None;
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

    fn snapshot_to(&self, path: &Path) -> Result<(), StoreError> {
        ChatStore::snapshot_to(self, path)
    }

    fn restore_from(&mut self, path: &Path) -> Result<(), StoreError> {
        ChatStore::restore_from(self, path)
    }
}

/// Upgrades a version-1 database (the same on every replica, so they still agree):
/// - `sessions` gains `command_hash`. Old rows keep a NULL hash, and a retry of such a
///   client's last write is trusted to be the same command (as version 1 did) until the
///   client's next write stores a hash.
/// - `messages` gains `committed_at`, and `sent_time` becomes optional (version 1 stored 0
///   for a message sent without one). Old messages get `committed_at` the way replaying
///   their entries would give it (`From<legacy::Write>`): in id order, `max(sent_time,
///   previous + 1)`.
/// - `meta` gains the running digest and the last `committed_at`.
fn migrate_v1(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    // Straight to the current version: version 3's table is empty after an upgrade.
    tx.execute_batch(CREDENTIALS_TABLE)?;
    tx.execute_batch(
        "ALTER TABLE sessions ADD COLUMN command_hash INTEGER;
         CREATE TABLE messages_v2 (message_id INTEGER PRIMARY KEY, chat_id INTEGER NOT NULL, user_id INTEGER NOT NULL, content TEXT NOT NULL, sent_time INTEGER, committed_at INTEGER NOT NULL);
         INSERT INTO messages_v2 SELECT message_id, chat_id, user_id, content, NULLIF(sent_time, 0), 0 FROM messages;
         DROP TABLE messages;
         ALTER TABLE messages_v2 RENAME TO messages;
         CREATE INDEX messages_by_chat_commit ON messages (chat_id, committed_at);",
    )?;
    let mut last = 0i64;
    {
        let mut select = tx.prepare(
            "SELECT message_id, coalesce(sent_time, 0) FROM messages ORDER BY message_id",
        )?;
        let mut update =
            tx.prepare("UPDATE messages SET committed_at = ?2 WHERE message_id = ?1")?;
        let mut rows = select.query([])?;
        while let Some(row) = rows.next()? {
            let (id, sent): (i64, i64) = (row.get(0)?, row.get(1)?);
            last = sent.max(last.saturating_add(1));
            update.execute(params![id, last])?;
        }
    }
    let (sum, rows) = scan_digest(&tx)?.to_meta();
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('digest_sum', ?1), ('digest_rows', ?2), ('last_committed_at', ?3)",
        params![sum, rows, last],
    )?;
    tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))?;
    tx.commit()
}

/// Upgrades a version-2 database: an empty `credentials` table (no user had a password
/// before), so the digest is unchanged.
fn migrate_v2(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(&format!(
        "BEGIN; {CREDENTIALS_TABLE} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
    ))
}

/// The state digest from a scan of every table (see `digest.rs`).
fn scan_digest(conn: &Connection) -> rusqlite::Result<StateDigest> {
    fn each(
        conn: &Connection,
        sql: &str,
        mut add: impl FnMut(&rusqlite::Row) -> rusqlite::Result<()>,
    ) -> rusqlite::Result<()> {
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            add(row)?;
        }
        Ok(())
    }
    let mut digest = StateDigest::default();
    let id = |r: &rusqlite::Row, i| r.get::<_, i64>(i).map(|v| v as u64);
    each(conn, "SELECT user_id, username FROM users", |r| {
        let username: String = r.get(1)?;
        digest.add(&Row::User {
            user_id: id(r, 0)?,
            username: &username,
        });
        Ok(())
    })?;
    each(conn, "SELECT chat_id, name, created_by FROM chats", |r| {
        let name: String = r.get(1)?;
        digest.add(&Row::Chat {
            chat_id: id(r, 0)?,
            name: &name,
            created_by: id(r, 2)?,
        });
        Ok(())
    })?;
    each(conn, "SELECT chat_id, user_id FROM members", |r| {
        digest.add(&Row::Member {
            chat_id: id(r, 0)?,
            user_id: id(r, 1)?,
        });
        Ok(())
    })?;
    each(
        conn,
        "SELECT message_id, chat_id, user_id, content, sent_time, committed_at FROM messages",
        |r| {
            let content: String = r.get(3)?;
            digest.add(&Row::Message {
                message_id: id(r, 0)?,
                chat_id: id(r, 1)?,
                user_id: id(r, 2)?,
                content: &content,
                sent_time_us: r.get(4)?,
                committed_at_us: r.get(5)?,
            });
            Ok(())
        },
    )?;
    each(
        conn,
        "SELECT client_id, sequence, command_hash, outcome FROM sessions",
        |r| {
            let outcome: Vec<u8> = r.get(3)?;
            digest.add(&Row::Session {
                client_id: id(r, 0)?,
                sequence: id(r, 1)?,
                command_hash: r.get::<_, Option<i64>>(2)?.map(|h| h as u64),
                outcome: &outcome,
            });
            Ok(())
        },
    )?;
    each(
        conn,
        "SELECT user_id, password_hash FROM credentials",
        |r| {
            let password_hash: String = r.get(1)?;
            digest.add(&Row::Credential {
                user_id: id(r, 0)?,
                password_hash: &password_hash,
            });
            Ok(())
        },
    )?;
    Ok(digest)
}

/// Applies one write: first the exactly-once check of its write id, then the command.
fn apply_write(
    tx: &rusqlite::Transaction,
    index: Index,
    write: &Write,
    tally: &mut Tally,
) -> rusqlite::Result<ApplyResult> {
    let session = write
        .session
        .map(|s| (s.client_id, s.sequence, write.command.fingerprint()));
    let mut prev: Option<(u64, Option<u64>, Vec<u8>)> = None;
    if let Some((client, seq, hash)) = session {
        prev = tx
            .prepare_cached(
                "SELECT sequence, command_hash, outcome FROM sessions WHERE client_id = ?1",
            )?
            .query_row([client as i64], |r| {
                let hash: Option<i64> = r.get(1)?;
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    hash.map(|h| h as u64),
                    r.get(2)?,
                ))
            })
            .optional()?;
        if let Some((last_seq, last_hash, outcome)) = &prev {
            let (last_seq, last_hash) = (*last_seq, *last_hash);
            if seq == last_seq {
                if last_hash.is_some_and(|h| h != hash) {
                    // Answering with the first command's outcome would hand this command
                    // another command's result (a chat id as a message id).
                    return Ok(Err(ChatError::FailedPrecondition(format!(
                        "write id reused for a different command: client {client} already \
                         used sequence {seq} for another write"
                    ))));
                }
                // A retry of the last write: answer as the first time, change nothing.
                return decode_outcome(outcome);
            }
            if seq < last_seq {
                return Ok(Err(ChatError::FailedPrecondition(format!(
                    "write sequence {seq} of client {client} is older than its latest ({last_seq})"
                ))));
            }
        }
    }
    let result = apply_command(tx, index, write, tally)?;
    let digest = &mut tally.digest;
    if let Some((client, seq, hash)) = session {
        if let Some((last_seq, last_hash, outcome)) = &prev {
            digest.remove(&Row::Session {
                client_id: client,
                sequence: *last_seq,
                command_hash: *last_hash,
                outcome,
            });
        }
        let outcome = postcard::to_allocvec(&result).expect("outcomes encode");
        digest.add(&Row::Session {
            client_id: client,
            sequence: seq,
            command_hash: Some(hash),
            outcome: &outcome,
        });
        exec(
            tx,
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
        .prepare_cached(sql)?
        .query_row(params, |r| r.get::<_, i64>(0))
        .optional()?
        .is_some())
}

/// Runs a statement from the connection's cache of prepared statements: the apply path
/// runs the same dozen statements for every entry, and parsing them each time was a visible
/// share of a replica's CPU (issue 15's profile: `sqlite3RunParser`).
fn exec(
    tx: &rusqlite::Transaction,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    tx.prepare_cached(sql)?.execute(params)
}

/// Creates a user, with a password hash when the command carries one.
fn create_user(
    tx: &rusqlite::Transaction,
    index: Index,
    username: &str,
    password_hash: Option<&str>,
    digest: &mut StateDigest,
) -> rusqlite::Result<ApplyResult> {
    if exists(
        tx,
        "SELECT user_id FROM users WHERE username = ?1",
        [username],
    )? {
        return Ok(Err(ChatError::AlreadyExists(format!(
            "username '{username}' is taken"
        ))));
    }
    exec(
        tx,
        "INSERT INTO users (user_id, username) VALUES (?1, ?2)",
        params![index as i64, username],
    )?;
    digest.add(&Row::User {
        user_id: index,
        username,
    });
    if let Some(password_hash) = password_hash {
        exec(
            tx,
            "INSERT INTO credentials (user_id, password_hash) VALUES (?1, ?2)",
            params![index as i64, password_hash],
        )?;
        digest.add(&Row::Credential {
            user_id: index,
            password_hash,
        });
    }
    Ok(Ok(Outcome::Created(index)))
}

/// Applies one write's command, accounting for the rows it inserts in `tally`.
fn apply_command(
    tx: &rusqlite::Transaction,
    index: Index,
    write: &Write,
    tally: &mut Tally,
) -> rusqlite::Result<ApplyResult> {
    let command = &write.command;
    let digest = &mut tally.digest;
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
        Command::CreateUser { username } => create_user(tx, index, username, None, digest),
        Command::CreateUserWithPassword {
            username,
            password_hash,
        } => create_user(tx, index, username, Some(password_hash), digest),
        Command::CreateChat { user_id, name } => {
            if !user_exists(*user_id)? {
                return no_user(*user_id);
            }
            exec(
                tx,
                "INSERT INTO chats (chat_id, name, created_by) VALUES (?1, ?2, ?3)",
                params![index as i64, name, *user_id as i64],
            )?;
            exec(
                tx,
                "INSERT INTO members (chat_id, user_id) VALUES (?1, ?2)",
                params![index as i64, *user_id as i64],
            )?;
            digest.add(&Row::Chat {
                chat_id: index,
                name,
                created_by: *user_id,
            });
            digest.add(&Row::Member {
                chat_id: index,
                user_id: *user_id,
            });
            Ok(Ok(Outcome::Created(index)))
        }
        Command::JoinChat { user_id, chat_id } => {
            if !user_exists(*user_id)? {
                return no_user(*user_id);
            }
            if !chat_exists(*chat_id)? {
                return no_chat(*chat_id);
            }
            let inserted = exec(
                tx,
                "INSERT OR IGNORE INTO members (chat_id, user_id) VALUES (?1, ?2)",
                params![*chat_id as i64, *user_id as i64],
            )?;
            if inserted > 0 {
                digest.add(&Row::Member {
                    chat_id: *chat_id,
                    user_id: *user_id,
                });
            }
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
            let committed_at = write
                .proposed_at_us
                .max(tally.last_committed_at_us.saturating_add(1));
            exec(
                tx,
                "INSERT INTO messages (message_id, chat_id, user_id, content, sent_time, committed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    index as i64,
                    *chat_id as i64,
                    *user_id as i64,
                    content,
                    sent_time_us,
                    committed_at
                ],
            )?;
            tally.last_committed_at_us = committed_at;
            digest.add(&Row::Message {
                message_id: index,
                chat_id: *chat_id,
                user_id: *user_id,
                content,
                sent_time_us: *sent_time_us,
                committed_at_us: committed_at,
            });
            Ok(Ok(Outcome::Created(index)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::SessionSeq;

    fn entry(index: Index, command: Command, session: Option<(u64, u64)>) -> Entry {
        entry_at(index, command, session, 0)
    }

    /// An entry proposed by a leader whose clock read `proposed_at_us`.
    fn entry_at(
        index: Index,
        command: Command,
        session: Option<(u64, u64)>,
        proposed_at_us: i64,
    ) -> Entry {
        let session = session.map(|(client_id, sequence)| SessionSeq {
            client_id,
            sequence,
        });
        let write = Write {
            session,
            command,
            proposed_at_us,
        };
        Entry {
            index,
            term: 1,
            command: Some(write.encode()),
        }
    }

    /// One page of `user`'s messages after `after_us`, at most `limit` (0: the default).
    fn page(s: &ChatStore, user_id: UserId, after_us: i64, limit: u32) -> MessagePage {
        let q = MessagesQuery {
            user_id,
            after_us,
            limit,
        };
        s.get_messages(&q).unwrap().unwrap()
    }

    fn send(user_id: UserId, chat_id: ChatId, content: &str, sent: Option<i64>) -> Command {
        Command::SendMessage {
            user_id,
            chat_id,
            content: content.into(),
            sent_time_us: sent,
        }
    }

    fn store() -> (tempfile::TempDir, ChatStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = ChatStore::open(&dir.path().join("chat.sqlite")).unwrap();
        (dir, s)
    }

    /// Polls and applies run prepared statements that stay prepared: with the planner's
    /// stability guarantee on, binding a new `LIMIT` or cursor does not make SQLite parse
    /// and plan the statement again (it did on every poll before).
    #[test]
    fn statements_are_prepared_once() {
        use rusqlite::StatementStatus::RePrepare;
        let (_d, mut s) = store();
        let name = |n: &str| Command::CreateUser { username: n.into() };
        s.apply(&[entry(1, name("ann"), None)]).unwrap();
        s.apply(&[entry(
            2,
            Command::CreateChat {
                user_id: 1,
                name: "c".into(),
            },
            None,
        )])
        .unwrap();
        for i in 0..20u64 {
            s.apply(&[entry_at(
                3 + i,
                send(1, 2, "hi", None),
                Some((7, i + 1)),
                10 + i as i64,
            )])
            .unwrap();
            page(&s, 1, i as i64, (i % 3) as u32 * 5);
        }
        for sql in [PAGE_IDS_SQL, MESSAGE_SQL] {
            let stmt = s.conn.prepare_cached(sql).unwrap();
            assert_eq!(stmt.get_status(RePrepare), 0, "re-prepared: {sql}");
        }
    }

    /// A version-2 database (before passwords) gains an empty credentials table, and its
    /// digest does not change.
    #[test]
    fn a_version_2_database_gains_credentials() {
        let (d, mut s) = store();
        s.apply(&[entry(
            1,
            Command::CreateUser {
                username: "ann".into(),
            },
            None,
        )])
        .unwrap();
        let digest = s.digest();
        let path = d.path().join("chat.sqlite");
        drop(s);
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch("DROP TABLE credentials; PRAGMA user_version = 2;")
                .unwrap();
        }
        let s = ChatStore::open(&path).unwrap();
        assert_eq!(s.digest(), digest);
        assert_eq!(s.recompute_digest().unwrap(), digest);
        assert_eq!(s.credentials("ann").unwrap(), None);
    }

    /// A user created with a password: its hash is kept (and counted in the digest), found
    /// by name, and a second user of that name is refused as before.
    #[test]
    fn a_password_hash_is_kept_with_its_user() {
        let (_d, mut s) = store();
        let hash = crate::security::password::hash("pw").unwrap();
        let with = |name: &str| Command::CreateUserWithPassword {
            username: name.into(),
            password_hash: hash.clone(),
        };
        let r = s
            .apply(&[
                entry(1, with("ann"), None),
                entry(
                    2,
                    Command::CreateUser {
                        username: "bob".into(),
                    },
                    None,
                ),
                entry(3, with("ann"), None),
            ])
            .unwrap();
        assert_eq!(r[0].1, Ok(Outcome::Created(1)));
        assert!(matches!(r[2].1, Err(ChatError::AlreadyExists(_))));
        assert_eq!(s.credentials("ann").unwrap(), Some((1, hash.clone())));
        // Bob has no password: he cannot log in.
        assert_eq!(s.credentials("bob").unwrap(), None);
        assert_eq!(s.credentials("carl").unwrap(), None);
        assert_eq!(s.digest(), s.recompute_digest().unwrap());
        // Not a hash: refused before it is stored.
        let r = s
            .apply(&[entry(
                4,
                Command::CreateUserWithPassword {
                    username: "carl".into(),
                    password_hash: "pw".into(),
                },
                None,
            )])
            .unwrap();
        assert!(matches!(r[0].1, Err(ChatError::InvalidArgument(_))));
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
                        sent_time_us: Some(5),
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
                        sent_time_us: Some(5),
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
                        sent_time_us: Some(6),
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
        let msgs = page(&s, 5, 0, 0).messages;
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].message_id, 8);
        let at = msgs[0].committed_at_us;
        assert!(page(&s, 1, at, 0).messages.is_empty(), "strictly after");
        assert_eq!(
            s.get_chat_users(3).unwrap().unwrap(),
            vec![(1, "ann".into()), (5, "bob".into())]
        );
        let q = MessagesQuery {
            user_id: 42,
            after_us: 0,
            limit: 0,
        };
        assert!(matches!(
            s.get_messages(&q).unwrap(),
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
        let digest = s.digest().to_string();
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
        let digest = s.digest();
        let (_d2, mut other) = store();
        restore_via_file(&mut other, &s);
        assert_eq!(other.digest(), digest);
        assert_eq!(other.applied_index().unwrap(), 1);
    }

    /// `to` becomes a copy of `from` through a snapshot file, as a follower's does.
    fn restore_via_file(to: &mut ChatStore, from: &ChatStore) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("snap.db");
        from.snapshot_to(&file).unwrap();
        let size = std::fs::metadata(&file).unwrap().len();
        to.restore_from(&file).unwrap();
        // The snapshot file stays as it was: it is still the node's snapshot.
        assert_eq!(std::fs::metadata(&file).unwrap().len(), size);
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
                        sent_time_us: Some(7),
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
        assert!(page(&s, 1, 0, 0).messages.is_empty());
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
                 INSERT INTO meta VALUES ('applied_index', 5), ('applied_term', 1);
                 INSERT INTO users VALUES (1, 'ann');
                 INSERT INTO chats VALUES (2, 'general', 1);
                 INSERT INTO members VALUES (2, 1);
                 INSERT INTO messages VALUES (3, 2, 1, 'a', 500), (4, 2, 1, 'b', 0), (5, 2, 1, 'c', 100);",
            )
            .unwrap();
            let outcome = postcard::to_allocvec(&ApplyResult::Ok(Outcome::Created(1))).unwrap();
            old.execute("INSERT INTO sessions VALUES (9, 1, ?1)", params![outcome])
                .unwrap();
        }
        let mut s = ChatStore::open(&path).unwrap();
        assert_eq!(s.applied_index().unwrap(), 5);
        assert_eq!(s.digest(), s.recompute_digest().unwrap());
        // Old messages: committed in id order, as replaying their entries would; a missing
        // sent_time (stored as 0) is missing.
        let old: Vec<_> = page(&s, 1, i64::MIN, 0)
            .messages
            .into_iter()
            .map(|m| (m.message_id, m.sent_time_us, m.committed_at_us))
            .collect();
        assert_eq!(
            old,
            vec![(3, Some(500), 500), (4, None, 501), (5, Some(100), 502)]
        );
        let r = s
            .apply(&[
                entry(6, user("ann"), Some((9, 1))),
                entry(7, user("bob"), Some((9, 2))),
                entry(8, user("ann"), Some((9, 2))),
                entry(9, send(1, 2, "d", None), None),
            ])
            .unwrap();
        assert_eq!(r[0].1, Ok(Outcome::Created(1)), "an old row's retry");
        assert_eq!(r[1].1, Ok(Outcome::Created(7)));
        assert!(matches!(&r[2].1, Err(ChatError::FailedPrecondition(_))));
        assert_eq!(page(&s, 1, 502, 0).messages[0].committed_at_us, 503);
        assert_eq!(s.digest(), s.recompute_digest().unwrap());
        drop(s);
        // Opening again finds the current version: nothing to migrate.
        assert_eq!(ChatStore::open(&path).unwrap().applied_index().unwrap(), 9);
    }

    /// `n` random writes at indexes 1..=n: every command, valid or not, without a write id or
    /// with one that is new, an exact retry, reused for another command, or stale.
    fn random_entries(seed: u64, n: u64) -> Vec<Entry> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (mut users, mut chats) = (vec![1u64], vec![1u64]);
        let mut clients: [(u64, Option<Command>); 4] = Default::default();
        let mut entries = Vec::new();
        for index in 1..=n {
            let pick = |rng: &mut rand_chacha::ChaCha8Rng, ids: &[u64]| {
                if rng.random_bool(0.9) {
                    ids[rng.random_range(0..ids.len())]
                } else {
                    rng.random_range(1..=index)
                }
            };
            let mut command = match rng.random_range(0..6) {
                0 => {
                    users.push(index);
                    user(&format!("u{}", rng.random_range(0..n)))
                }
                1 => {
                    chats.push(index);
                    Command::CreateChat {
                        user_id: pick(&mut rng, &users),
                        name: format!("c{index}"),
                    }
                }
                2 => Command::JoinChat {
                    user_id: pick(&mut rng, &users),
                    chat_id: pick(&mut rng, &chats),
                },
                _ => Command::SendMessage {
                    user_id: pick(&mut rng, &users),
                    chat_id: pick(&mut rng, &chats),
                    content: format!("m{index}"),
                    sent_time_us: Some(index as i64),
                },
            };
            let c = rng.random_range(0..5);
            let session = if c == 4 {
                None
            } else {
                let (seq, last) = &mut clients[c];
                match rng.random_range(0..6) {
                    0 if last.is_some() => command = last.clone().expect("checked"),
                    1 => {}
                    2 => *seq = seq.saturating_sub(1),
                    _ => {
                        *seq += 1;
                        *last = Some(command.clone());
                    }
                }
                Some((c as u64 + 1, *seq))
            };
            entries.push(entry(index, command, session));
        }
        entries
    }

    #[test]
    fn the_running_digest_equals_a_full_recomputation() {
        use rand::{Rng, SeedableRng};
        let entries = random_entries(7, 800);
        let (dir, mut a) = store();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut at = 0;
        while at < 600 {
            let n = rng.random_range(1..40).min(600 - at);
            a.apply(&entries[at..at + n]).unwrap();
            at += n;
            assert_eq!(
                a.digest(),
                a.recompute_digest().unwrap(),
                "at applied index {}",
                a.applied_index().unwrap()
            );
        }
        let count = |s: &ChatStore, table: &str| -> i64 {
            s.conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap()
        };
        for table in ["users", "chats", "members", "messages", "sessions"] {
            assert!(count(&a, table) >= 4, "too few {table} to mean anything");
        }

        // Another replica applying the same entries one at a time.
        let (_d2, mut b) = store();
        for e in &entries[..600] {
            b.apply(std::slice::from_ref(e)).unwrap();
        }
        assert_eq!(b.digest(), a.digest());

        // A snapshot carries the digest, and so does a restart.
        let (_d3, mut c) = store();
        restore_via_file(&mut c, &a);
        assert_eq!(c.digest(), a.digest());
        drop(a);
        let mut a = ChatStore::open(&dir.path().join("chat.sqlite")).unwrap();
        assert_eq!(a.digest(), c.digest());
        a.apply(&entries[600..]).unwrap();
        c.apply(&entries[600..]).unwrap();
        assert_eq!(a.digest(), c.digest());
        assert_eq!(c.digest(), c.recompute_digest().unwrap());
        assert_ne!(a.digest(), b.digest(), "the digest follows the state");
    }

    /// `committed_at` comes from the proposing leader's clock, bumped to stay strictly
    /// increasing: a new leader whose clock is behind cannot reorder messages, and neither can
    /// a client's `sent_time` (missing, in the future, in the past).
    #[test]
    fn committed_at_is_fixed_by_the_log_and_strictly_increasing() {
        let entries = [
            entry(1, user("ann"), None),
            entry(
                2,
                Command::CreateChat {
                    user_id: 1,
                    name: "general".into(),
                },
                None,
            ),
            entry_at(3, send(1, 2, "a", Some(i64::MAX / 2)), None, 1_000),
            // A new leader whose clock is behind.
            entry_at(4, send(1, 2, "b", None), None, 900),
            entry_at(5, send(1, 2, "c", Some(-5)), None, 900),
            entry_at(6, send(1, 2, "d", None), None, 5_000),
            // A rejected message takes no committed_at.
            entry_at(7, send(9, 2, "x", None), None, 6_000),
            entry_at(8, send(1, 2, "e", None), None, 5_000),
        ];
        let (_d, mut a) = store();
        a.apply(&entries).unwrap();
        let got: Vec<_> = page(&a, 1, i64::MIN, 0)
            .messages
            .into_iter()
            .map(|m| (m.content, m.sent_time_us, m.committed_at_us))
            .collect();
        let want = vec![
            ("a".to_string(), Some(i64::MAX / 2), 1_000),
            ("b".to_string(), None, 1_001),
            ("c".to_string(), Some(-5), 1_002),
            ("d".to_string(), None, 5_000),
            ("e".to_string(), None, 5_001),
        ];
        assert_eq!(got, want);
        // Every replica gets the same times, whatever its batches, and so does a restart.
        let (_d2, mut b) = store();
        for e in &entries {
            b.apply(std::slice::from_ref(e)).unwrap();
        }
        assert_eq!(page(&b, 1, i64::MIN, 0), page(&a, 1, i64::MIN, 0));
        assert_eq!(a.digest(), b.digest());
        let (_d3, mut c) = store();
        restore_via_file(&mut c, &a);
        c.apply(&[entry_at(9, send(1, 2, "f", None), None, 10)])
            .unwrap();
        assert_eq!(page(&c, 1, 5_001, 0).messages[0].committed_at_us, 5_002);
        // A message from the far future is not returned again to a poller past it, and one
        // dated in the past is not missed.
        assert_eq!(page(&a, 1, 1_000, 0).messages.len(), 4);
    }

    /// A poller that asks again with the last `committed_at` it saw, in small pages, while
    /// messages commit in between (leaders' clocks going back and forth), gets every message
    /// of its chats exactly once, in commit order.
    #[test]
    fn polling_with_the_last_committed_at_gets_every_message_once() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (_d, mut s) = store();
        s.apply(&[
            entry(1, user("ann"), None),
            entry(2, user("bob"), None),
            entry(
                3,
                Command::CreateChat {
                    user_id: 1,
                    name: "one".into(),
                },
                None,
            ),
            entry(
                4,
                Command::CreateChat {
                    user_id: 2,
                    name: "two".into(),
                },
                None,
            ),
            entry(
                5,
                Command::JoinChat {
                    user_id: 1,
                    chat_id: 4,
                },
                None,
            ),
            // A chat ann is not in.
            entry(
                6,
                Command::CreateChat {
                    user_id: 2,
                    name: "three".into(),
                },
                None,
            ),
        ])
        .unwrap();
        let (mut index, mut clock) = (6, 1_000_000i64);
        let (mut sent, mut seen) = (Vec::new(), Vec::new());
        let mut cursor = i64::MIN;
        for _ in 0..60 {
            let batch: Vec<Entry> = (0..rng.random_range(0..12))
                .map(|_| {
                    index += 1;
                    clock += rng.random_range(-3_000..3_000);
                    let chat = [3, 4, 6][rng.random_range(0..3)];
                    let from = if chat == 3 { 1 } else { 2 };
                    if chat != 6 {
                        sent.push(index);
                    }
                    entry_at(index, send(from, chat, "m", None), None, clock)
                })
                .collect();
            s.apply(&batch).unwrap();
            loop {
                let p = page(&s, 1, cursor, rng.random_range(1..5));
                if let Some(last) = p.messages.last() {
                    cursor = last.committed_at_us;
                }
                seen.extend(p.messages.iter().map(|m| m.message_id));
                if !p.has_more {
                    break;
                }
            }
        }
        assert!(sent.len() > 100, "{}", sent.len());
        assert_eq!(seen, sent);
    }

    /// A page holds at most `limit` messages (0: 1,000; at most 10,000) and about 4 MiB of
    /// content, and says whether more follow.
    #[test]
    fn pages_are_bounded_by_count_and_by_bytes() {
        let (_d, mut s) = store();
        let mut entries = vec![
            entry(1, user("ann"), None),
            entry(
                2,
                Command::CreateChat {
                    user_id: 1,
                    name: "general".into(),
                },
                None,
            ),
        ];
        entries.extend((3..=10_003).map(|i| entry(i, send(1, 2, "m", None), None)));
        s.apply(&entries).unwrap();
        let first = page(&s, 1, i64::MIN, 0);
        assert_eq!((first.messages.len(), first.has_more), (1_000, true));
        let all = page(&s, 1, i64::MIN, u32::MAX);
        assert_eq!((all.messages.len(), all.has_more), (10_000, true));
        let last = all.messages.last().unwrap().committed_at_us;
        let rest = page(&s, 1, last, 10_000);
        assert_eq!((rest.messages.len(), rest.has_more), (1, false));
        assert_eq!(page(&s, 1, i64::MIN, 10_001).messages.len(), 10_000);

        // 100 messages of 64 KiB: a page stops near 4 MiB, and the next one goes on from it.
        let big = "x".repeat(64 * 1024);
        let (_d2, mut s) = store();
        let mut entries = entries[..2].to_vec();
        entries.extend((3..103).map(|i| entry(i, send(1, 2, &big, None), None)));
        s.apply(&entries).unwrap();
        let mut cursor = i64::MIN;
        let mut pages = Vec::new();
        loop {
            let p = page(&s, 1, cursor, 0);
            let bytes: usize = p.messages.iter().map(|m| m.content.len()).sum();
            assert!(bytes <= MAX_PAGE_BYTES, "{bytes}");
            pages.push(p.messages.len());
            cursor = p.messages.last().unwrap().committed_at_us;
            if !p.has_more {
                break;
            }
        }
        assert_eq!(pages.iter().sum::<usize>(), 100);
        assert!(pages.len() >= 2, "{pages:?}");
        // One message larger than the budget still comes, alone.
        assert_eq!(page(&s, 1, i64::MIN, 1).messages.len(), 1);
    }
}
