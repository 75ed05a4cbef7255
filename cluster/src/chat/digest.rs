//! The state digest: a hash of the whole chat state, kept up to date as entries are applied,
//! so that `Admin.Status` answers without reading the database.
//!
//! It is a multiset hash: the sum (mod 2^64) of a 64-bit hash of every row, with the number
//! of rows. A sum does not depend on order, so:
//! - applying an entry adds the hash of each row it inserts and subtracts that of each row it
//!   replaces (a client's session row), and the result equals a full scan of the tables
//!   ([`super::ChatStore::recompute_digest`], kept for tests and for migrations);
//! - replicas that applied the same entries have the same rows, hence the same digest, in
//!   whatever batches they applied them;
//! - the digest is stored in the `meta` table in the same transaction as the rows, so a
//!   snapshot (a copy of the database) carries it, and a restart or an install reads it back.
//!
//! A 64-bit sum detects divergence between replicas (an accident, not an adversary); it is
//! not a cryptographic commitment to the state.

use std::fmt;

use serde::Serialize;

use super::hash::{ROW_KEY, siphash24};

/// One row of the chat state, as the digest hashes it (postcard encoding; the variant is the
/// table). Ids are the state machine's `u64`s, whatever SQLite stores.
#[derive(Serialize)]
pub(crate) enum Row<'a> {
    User {
        user_id: u64,
        username: &'a str,
    },
    Chat {
        chat_id: u64,
        name: &'a str,
        created_by: u64,
    },
    Member {
        chat_id: u64,
        user_id: u64,
    },
    Message {
        message_id: u64,
        chat_id: u64,
        user_id: u64,
        content: &'a str,
        sent_time_us: Option<i64>,
        committed_at_us: i64,
    },
    Session {
        client_id: u64,
        sequence: u64,
        command_hash: Option<u64>,
        outcome: &'a [u8],
    },
    /// A user's password hash (Argon2id PHC string), kept apart from `users`.
    Credential {
        user_id: u64,
        password_hash: &'a str,
    },
}

impl Row<'_> {
    fn hash(&self) -> u64 {
        siphash24(ROW_KEY, &postcard::to_allocvec(self).expect("rows encode"))
    }
}

/// The digest of a set of rows. Shown as `{sum:016x}-{rows}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateDigest {
    sum: u64,
    rows: u64,
}

impl StateDigest {
    pub(crate) fn add(&mut self, row: &Row) {
        self.sum = self.sum.wrapping_add(row.hash());
        self.rows = self.rows.wrapping_add(1);
    }

    pub(crate) fn remove(&mut self, row: &Row) {
        self.sum = self.sum.wrapping_sub(row.hash());
        self.rows = self.rows.wrapping_sub(1);
    }

    /// As stored in two `meta` integers (bit patterns).
    pub(crate) fn to_meta(self) -> (i64, i64) {
        (self.sum as i64, self.rows as i64)
    }

    pub(crate) fn from_meta(sum: i64, rows: i64) -> StateDigest {
        StateDigest {
            sum: sum as u64,
            rows: rows as u64,
        }
    }
}

impl fmt::Display for StateDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{}", self.sum, self.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_in_any_order_and_removing_agree() {
        let rows = [
            Row::User {
                user_id: 1,
                username: "ann",
            },
            Row::Member {
                chat_id: 2,
                user_id: 1,
            },
            Row::Session {
                client_id: 7,
                sequence: 1,
                command_hash: Some(3),
                outcome: &[0, 1],
            },
        ];
        let (mut a, mut b) = (StateDigest::default(), StateDigest::default());
        for r in &rows {
            a.add(r);
        }
        for r in rows.iter().rev() {
            b.add(r);
        }
        assert_eq!(a, b);
        assert_eq!(a.to_string().split('-').nth(1), Some("3"));
        b.remove(&rows[1]);
        assert_ne!(a, b);
        b.add(&rows[1]);
        assert_eq!(a, b);
        let (sum, n) = a.to_meta();
        assert_eq!(StateDigest::from_meta(sum, n), a);
        // The table is part of the row: a user and a chat with the same fields differ.
        let (mut u, mut c) = (StateDigest::default(), StateDigest::default());
        u.add(&Row::Member {
            chat_id: 1,
            user_id: 2,
        });
        c.add(&Row::Member {
            chat_id: 2,
            user_id: 1,
        });
        assert_ne!(u, c);
    }
}
