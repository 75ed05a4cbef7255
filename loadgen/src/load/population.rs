//! The generator's model of the chat data: which users and chats exist and who is a member.
//!
//! Before measuring, [`super::dataset`] creates the scenario's users and chats and returns
//! this model of them. The load then draws each operation's arguments from it, so every
//! generated request is one the cluster should accept: a message is sent by a member of its
//! chat, a join names a user who is not yet a member (reserved here first, so two users never
//! race to make the same join), polls ask for a user's messages since that user last polled.
//! Users and chats created during the load are added as their creation succeeds.
//!
//! (Not to be confused with the Raft simulator's `World`: this is the load generator's
//! picture of the chat data, not a simulated cluster.)

use std::sync::RwLock;

use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Debug, Default)]
pub struct ChatInfo {
    pub chat_id: u64,
    /// Members whose join (or creation of the chat) succeeded: they may send.
    pub members: Vec<u64>,
    /// Joins reserved and not yet confirmed: no other join may pick them, and they may not
    /// send yet (the cluster would refuse a message from a non-member).
    pub joining: Vec<u64>,
}

/// Users and chats known to exist (or, for a join in flight, reserved). Shared by every
/// generator user of a run.
#[derive(Default)]
pub struct Population {
    users: RwLock<Vec<u64>>,
    chats: RwLock<Vec<ChatInfo>>,
}

impl Population {
    pub fn new(users: Vec<u64>, chats: Vec<ChatInfo>) -> Population {
        Population {
            users: RwLock::new(users),
            chats: RwLock::new(chats),
        }
    }

    pub fn user_count(&self) -> usize {
        self.users.read().unwrap().len()
    }

    pub fn chat_count(&self) -> usize {
        self.chats.read().unwrap().len()
    }

    /// The first `n` users (the dataset's), for assigning users to pollers.
    pub fn user_at(&self, i: usize) -> Option<u64> {
        self.users.read().unwrap().get(i).copied()
    }

    pub fn random_user(&self, rng: &mut ChaCha8Rng) -> Option<u64> {
        self.users.read().unwrap().choose(rng).copied()
    }

    pub fn add_user(&self, user_id: u64) {
        self.users.write().unwrap().push(user_id);
    }

    pub fn add_chat(&self, chat_id: u64, creator: u64) {
        self.chats.write().unwrap().push(ChatInfo {
            chat_id,
            members: vec![creator],
            joining: Vec::new(),
        });
    }

    /// A chat and one of its members, for sending a message.
    pub fn random_member(&self, rng: &mut ChaCha8Rng) -> Option<(u64, u64)> {
        let chats = self.chats.read().unwrap();
        let chat = chats.choose(rng)?;
        let user = chat.members.choose(rng)?;
        Some((chat.chat_id, *user))
    }

    /// The chats `user_id` is a confirmed member of.
    pub fn chats_of(&self, user_id: u64) -> Vec<u64> {
        self.chats
            .read()
            .unwrap()
            .iter()
            .filter(|c| c.members.contains(&user_id))
            .map(|c| c.chat_id)
            .collect()
    }

    /// Every chat with one confirmed member (for reading whole chats after the load).
    pub fn chats_with_a_member(&self) -> Vec<(u64, u64)> {
        self.chats
            .read()
            .unwrap()
            .iter()
            .filter_map(|c| c.members.first().map(|m| (c.chat_id, *m)))
            .collect()
    }

    pub fn random_chat(&self, rng: &mut ChaCha8Rng) -> Option<u64> {
        self.chats.read().unwrap().choose(rng).map(|c| c.chat_id)
    }

    /// Picks a (user, chat) pair where the user is not yet a member and reserves it, so no
    /// other generator user makes the same join. `None` when a few tries find no such pair.
    pub fn reserve_join(&self, rng: &mut ChaCha8Rng) -> Option<(u64, u64)> {
        let users = self.users.read().unwrap();
        let mut chats = self.chats.write().unwrap();
        if chats.is_empty() || users.is_empty() {
            return None;
        }
        for _ in 0..16 {
            let c = rng.random_range(0..chats.len());
            let u = *users.choose(rng)?;
            if !chats[c].members.contains(&u) && !chats[c].joining.contains(&u) {
                chats[c].joining.push(u);
                return Some((u, chats[c].chat_id));
            }
        }
        None
    }

    /// Ends a reservation: the join succeeded (the user becomes a member), definitely
    /// failed (the pair is free again), or its outcome is unknown (the pair stays reserved,
    /// so the user neither sends nor joins again).
    pub fn finish_join(&self, user_id: u64, chat_id: u64, outcome: JoinOutcome) {
        let mut chats = self.chats.write().unwrap();
        if let Some(c) = chats.iter_mut().find(|c| c.chat_id == chat_id) {
            match outcome {
                JoinOutcome::Joined => {
                    c.joining.retain(|m| *m != user_id);
                    c.members.push(user_id);
                }
                JoinOutcome::Refused => c.joining.retain(|m| *m != user_id),
                JoinOutcome::Unknown => {}
            }
        }
    }
}

/// How a reserved join ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinOutcome {
    Joined,
    Refused,
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn joins_are_reserved_once_and_senders_are_confirmed_members() {
        let people = Population::new(
            vec![1, 2],
            vec![ChatInfo {
                chat_id: 10,
                members: vec![1],
                ..Default::default()
            }],
        );
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(people.reserve_join(&mut rng), Some((2, 10)));
        assert_eq!(people.reserve_join(&mut rng), None, "2's join is reserved");
        // Until the join succeeds, user 2 does not send in chat 10.
        for _ in 0..50 {
            assert_eq!(people.random_member(&mut rng), Some((10, 1)));
        }
        people.finish_join(2, 10, JoinOutcome::Refused);
        assert_eq!(people.reserve_join(&mut rng), Some((2, 10)), "free again");
        people.finish_join(2, 10, JoinOutcome::Unknown);
        assert_eq!(
            people.reserve_join(&mut rng),
            None,
            "unknown stays reserved"
        );
        people.finish_join(2, 10, JoinOutcome::Joined);
        assert_eq!(
            people.reserve_join(&mut rng),
            None,
            "everyone is a member now"
        );
        let senders: std::collections::BTreeSet<_> = (0..50)
            .filter_map(|_| people.random_member(&mut rng))
            .collect();
        assert_eq!(senders.len(), 2, "{senders:?}");
    }

    #[test]
    fn a_sender_is_always_a_member_of_the_chat() {
        let people = Population::new(
            vec![1, 2, 3],
            vec![
                ChatInfo {
                    chat_id: 10,
                    members: vec![1],
                    ..Default::default()
                },
                ChatInfo {
                    chat_id: 11,
                    members: vec![2, 3],
                    ..Default::default()
                },
            ],
        );
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..100 {
            let (chat, user) = people.random_member(&mut rng).unwrap();
            assert!(matches!((chat, user), (10, 1) | (11, 2) | (11, 3)));
        }
    }
}
