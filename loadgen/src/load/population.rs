//! The generator's model of the chat data: which users and chats exist and who is a member.
//!
//! Before measuring, [`super::dataset`] creates the scenario's users and chats and returns
//! this model of them. The load then draws each operation's arguments from it, so every
//! generated request is one the cluster should accept: a message is sent by a member of its
//! chat, a join names a user who is not yet a member (reserved here first, so two users never
//! race to make the same join), polls ask for a user's messages since that user last polled.
//! Users and chats created during the load are added as their creation succeeds.
//!
//! Which chat and which user a call picks follows the scenario's `dataset.chat_popularity`
//! and `dataset.user_activity` ([`Picks`]): uniform (every chat, every user alike), or a
//! Zipf law over their rank, the first chat and the first user being the busiest (see
//! [`super::shape`] for why). Uniform picks make the same draws as before these fields
//! existed.
//!
//! (Not to be confused with the Raft simulator's `World`: this is the load generator's
//! picture of the chat data, not a simulated cluster.)

use std::collections::HashMap;
use std::sync::RwLock;

use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;

use super::shape::{activity_weight, zipf_index};
use crate::scenario::{Dataset, Popularity};

/// How calls pick chats and users: the scenario's `dataset.chat_popularity` and
/// `dataset.user_activity`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Picks {
    pub chats: Popularity,
    pub users: Popularity,
}

impl Picks {
    pub fn of(dataset: &Dataset) -> Picks {
        Picks {
            chats: dataset.chat_popularity,
            users: dataset.user_activity,
        }
    }
}

/// An index in `0..n` by `p`, `None` when `n` is 0. Uniform draws as `slice.choose` does.
fn pick<T>(p: Popularity, items: &[T], rng: &mut ChaCha8Rng) -> Option<usize> {
    match p {
        _ if items.is_empty() => None,
        // The draw `items.choose(rng)` makes.
        Popularity::Uniform => Some(rng.random_range(..items.len())),
        Popularity::Zipf(s) => Some(zipf_index(s, items.len(), rng)),
    }
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
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
    /// Each user's rank: its place in `users` (for weighing members by activity).
    ranks: RwLock<HashMap<u64, usize>>,
    chats: RwLock<Vec<ChatInfo>>,
}

impl Population {
    pub fn new(users: Vec<u64>, chats: Vec<ChatInfo>) -> Population {
        let ranks = users.iter().enumerate().map(|(i, u)| (*u, i)).collect();
        Population {
            users: RwLock::new(users),
            ranks: RwLock::new(ranks),
            chats: RwLock::new(chats),
        }
    }

    pub fn user_count(&self) -> usize {
        self.users.read().unwrap().len()
    }

    pub fn chat_count(&self) -> usize {
        self.chats.read().unwrap().len()
    }

    /// Every user and chat known now, for a file other workers load
    /// ([`crate::workers`]), as `(users, chats)`.
    pub fn parts(&self) -> (Vec<u64>, Vec<ChatInfo>) {
        (
            self.users.read().unwrap().clone(),
            self.chats.read().unwrap().clone(),
        )
    }

    /// The same users with the chats from the `from`th on only (a worker reads back at the
    /// end the chats it alone knows of: the ones it created).
    pub fn chats_from(&self, from: usize) -> Population {
        let (users, chats) = self.parts();
        Population::new(users, chats.into_iter().skip(from).collect())
    }

    /// The first `n` users (the dataset's), for assigning users to pollers.
    pub fn user_at(&self, i: usize) -> Option<u64> {
        self.users.read().unwrap().get(i).copied()
    }

    /// A user, by activity.
    pub fn random_user(&self, rng: &mut ChaCha8Rng, picks: Picks) -> Option<u64> {
        let users = self.users.read().unwrap();
        pick(picks.users, &users, rng).map(|i| users[i])
    }

    /// A user's rank (its place among the users, the first the most active).
    pub fn rank(&self, user_id: u64) -> usize {
        let ranks = self.ranks.read().unwrap();
        ranks.get(&user_id).copied().unwrap_or(ranks.len())
    }

    pub fn add_user(&self, user_id: u64) {
        let mut users = self.users.write().unwrap();
        self.ranks.write().unwrap().insert(user_id, users.len());
        users.push(user_id);
    }

    pub fn add_chat(&self, chat_id: u64, creator: u64) {
        self.chats.write().unwrap().push(ChatInfo {
            chat_id,
            members: vec![creator],
            joining: Vec::new(),
        });
    }

    /// A chat (by popularity) and one of its members (by activity), for sending a message.
    pub fn random_member(&self, rng: &mut ChaCha8Rng, picks: Picks) -> Option<(u64, u64)> {
        let chats = self.chats.read().unwrap();
        let chat = &chats[pick(picks.chats, &chats, rng)?];
        let user = match picks.users {
            Popularity::Uniform => chat.members.choose(rng)?,
            Popularity::Zipf(s) => {
                let ranks = self.ranks.read().unwrap();
                let rank = |m: &u64| ranks.get(m).copied().unwrap_or(ranks.len());
                chat.members
                    .choose_weighted(rng, |m| activity_weight(s, rank(m)))
                    .ok()?
            }
        };
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

    /// A chat, by popularity.
    pub fn random_chat(&self, rng: &mut ChaCha8Rng, picks: Picks) -> Option<u64> {
        let chats = self.chats.read().unwrap();
        pick(picks.chats, &chats, rng).map(|i| chats[i].chat_id)
    }

    /// Picks a (user, chat) pair where the user is not yet a member and reserves it, so no
    /// other generator user makes the same join. `None` when a few tries find no such pair.
    /// The chat is drawn by popularity, the user by activity.
    pub fn reserve_join(&self, rng: &mut ChaCha8Rng, picks: Picks) -> Option<(u64, u64)> {
        let users = self.users.read().unwrap();
        let mut chats = self.chats.write().unwrap();
        if chats.is_empty() || users.is_empty() {
            return None;
        }
        for _ in 0..16 {
            let c = match picks.chats {
                Popularity::Uniform => rng.random_range(0..chats.len()),
                Popularity::Zipf(s) => zipf_index(s, chats.len(), rng),
            };
            let u = users[pick(picks.users, &users, rng)?];
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
        assert_eq!(
            people.reserve_join(&mut rng, Picks::default()),
            Some((2, 10))
        );
        assert_eq!(
            people.reserve_join(&mut rng, Picks::default()),
            None,
            "2's join is reserved"
        );
        // Until the join succeeds, user 2 does not send in chat 10.
        for _ in 0..50 {
            assert_eq!(
                people.random_member(&mut rng, Picks::default()),
                Some((10, 1))
            );
        }
        people.finish_join(2, 10, JoinOutcome::Refused);
        assert_eq!(
            people.reserve_join(&mut rng, Picks::default()),
            Some((2, 10)),
            "free again"
        );
        people.finish_join(2, 10, JoinOutcome::Unknown);
        assert_eq!(
            people.reserve_join(&mut rng, Picks::default()),
            None,
            "unknown stays reserved"
        );
        people.finish_join(2, 10, JoinOutcome::Joined);
        assert_eq!(
            people.reserve_join(&mut rng, Picks::default()),
            None,
            "everyone is a member now"
        );
        let senders: std::collections::BTreeSet<_> = (0..50)
            .filter_map(|_| people.random_member(&mut rng, Picks::default()))
            .collect();
        assert_eq!(senders.len(), 2, "{senders:?}");
    }

    /// Uniform picks make the very draws `choose` made before popularity existed, so a
    /// scenario without the new fields runs call for call as before.
    #[test]
    fn uniform_picks_draw_as_choose_did() {
        let items: Vec<u64> = (100..137).collect();
        let mut a = ChaCha8Rng::seed_from_u64(4);
        let mut b = ChaCha8Rng::seed_from_u64(4);
        for _ in 0..1_000 {
            let i = pick(Popularity::Uniform, &items, &mut a).unwrap();
            assert_eq!(items[i], *items.choose(&mut b).unwrap());
        }
        assert_eq!(pick(Popularity::Zipf(1.0), &[] as &[u64], &mut a), None);
    }

    fn zipf_population(users: u64, chats: u64) -> Population {
        Population::new(
            (1..=users).collect(),
            (0..chats)
                .map(|c| ChatInfo {
                    chat_id: 1000 + c,
                    members: (1..=users).collect(),
                    ..Default::default()
                })
                .collect(),
        )
    }

    /// The share of `draws` that fell on each of `n` ranks, against `1/k^s` normalised.
    fn assert_zipf(counts: &[u64], s: f64, tolerance: f64) {
        let draws: u64 = counts.iter().sum();
        let total: f64 = (1..=counts.len()).map(|k| (k as f64).powf(-s)).sum();
        for (k, &c) in counts.iter().enumerate().take(5) {
            let expected = ((k + 1) as f64).powf(-s) / total;
            let seen = c as f64 / draws as f64;
            assert!(
                (seen - expected).abs() < tolerance,
                "rank {}: {seen:.4} of picks, expected {expected:.4}",
                k + 1
            );
        }
    }

    #[test]
    fn popular_chats_and_active_users_are_picked_by_zipf() {
        let people = zipf_population(50, 10);
        let picks = Picks {
            chats: Popularity::Zipf(1.1),
            users: Popularity::Zipf(0.9),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let (mut chats, mut senders, mut creators) = (vec![0; 10], vec![0; 50], vec![0; 50]);
        for _ in 0..100_000 {
            chats[(people.random_chat(&mut rng, picks).unwrap() - 1000) as usize] += 1;
            let (_, sender) = people.random_member(&mut rng, picks).unwrap();
            senders[(sender - 1) as usize] += 1;
            creators[(people.random_user(&mut rng, picks).unwrap() - 1) as usize] += 1;
        }
        assert_zipf(&chats, 1.1, 0.006);
        // Every user is a member of every chat here, so senders follow activity exactly.
        assert_zipf(&senders, 0.9, 0.006);
        assert_zipf(&creators, 0.9, 0.006);
        // A user added during the run ranks after the dataset's.
        people.add_user(77);
        assert_eq!(people.rank(77), 50);
        assert_eq!(people.rank(1), 0);
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
            let (chat, user) = people.random_member(&mut rng, Picks::default()).unwrap();
            assert!(matches!((chat, user), (10, 1) | (11, 2) | (11, 3)));
        }
    }
}
