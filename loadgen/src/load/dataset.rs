//! Creating a scenario's dataset before the load: `dataset.users` users and `dataset.chats`
//! chats with `members_per_chat` members each, members chosen with the scenario's seed.
//!
//! With authentication on (the run has [`sessions`]), every user gets a password, every
//! user is logged in once created, and the chats are created and joined with their users'
//! tokens.

use std::time::Duration;

use crate::system::ChatConn;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

use telegraft::proto::chat::{
    CreateChatRequest, CreateUserRequest, JoinChatRequest, LoginRequest, WriteId,
};

use super::client::{Failure, with_timeout};
use super::population::{ChatInfo, Population};
use super::sessions;
use crate::scenario::Dataset;

/// Setup calls in flight at once.
const PARALLEL: u64 = 16;

/// Creates the scenario's dataset through `client` (the leader, or any replica) with
/// [`PARALLEL`] calls in flight, and returns the model of it. `tag` makes names unique per
/// run; `client_base` is the first of the exactly-once client ids the setup may use
/// (`client_base .. client_base + 2 * PARALLEL`).
pub async fn create_dataset(
    client: &ChatConn,
    dataset: &Dataset,
    rng: &mut ChaCha8Rng,
    tag: &str,
    client_base: u64,
    timeout: Duration,
) -> anyhow::Result<Population> {
    let setup = Setup {
        client: client.clone(),
        tag: tag.to_string(),
        timeout,
    };
    let users = setup.create_users(dataset.users, client_base).await?;
    if let Some(s) = sessions::current() {
        setup.log_in(&users, &s).await?;
    }
    let plans = plan_chats(&users, dataset, rng);
    let chats = setup.create_chats(plans, client_base + PARALLEL).await?;
    Ok(Population::new(users, chats))
}

/// What every setup worker shares.
#[derive(Clone)]
struct Setup {
    client: ChatConn,
    tag: String,
    timeout: Duration,
}

/// A chat to create: its number in the dataset and its members, the first its creator.
type ChatPlan = (u32, Vec<u64>);

/// A seeded creator and seeded members for each chat.
fn plan_chats(users: &[u64], dataset: &Dataset, rng: &mut ChaCha8Rng) -> Vec<ChatPlan> {
    (0..dataset.chats)
        .map(|c| {
            let mut members = users.to_vec();
            members.shuffle(rng);
            members.truncate(dataset.members_per_chat as usize);
            (c, members)
        })
        .collect()
}

impl Setup {
    /// Users `user-<i>-<tag>`, by [`PARALLEL`] workers, each with its own client id
    /// (`client_base + w`) and sequence. Returns their ids in dataset order.
    async fn create_users(&self, n: u32, client_base: u64) -> anyhow::Result<Vec<u64>> {
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..PARALLEL {
            let setup = self.clone();
            tasks.spawn(async move {
                let mut made = Vec::new();
                let write_id = |k: usize| WriteId {
                    client_id: client_base + w,
                    sequence: k as u64 + 1,
                };
                for (k, i) in (w..u64::from(n)).step_by(PARALLEL as usize).enumerate() {
                    let username = user_name(i, &setup.tag);
                    let password = match sessions::current() {
                        Some(_) => sessions::password_for(&username),
                        None => String::new(),
                    };
                    let req = CreateUserRequest {
                        username,
                        write_id: Some(write_id(k)),
                        password,
                    };
                    let r = retry(setup.timeout, || {
                        let (mut c, req) = (setup.client.clone(), req.clone());
                        async move { c.create_user(req).await }
                    })
                    .await
                    .map_err(|f| anyhow::anyhow!("CreateUser: {}", f.name()))?;
                    made.push((i, r.user_id));
                }
                anyhow::Ok(made)
            });
        }
        let mut users = Vec::new();
        while let Some(r) = tasks.join_next().await {
            users.extend(r??);
        }
        users.sort();
        Ok(users.into_iter().map(|(_, id)| id).collect())
    }

    /// Logs every user in ([`PARALLEL`] at once) and keeps their tokens. Users are in
    /// dataset order, so user `i` is `user-<i>-<tag>`.
    async fn log_in(&self, users: &[u64], s: &Arc<sessions::Sessions>) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..PARALLEL as usize {
            let (setup, s) = (self.clone(), s.clone());
            let mine: Vec<(usize, u64)> = users
                .iter()
                .copied()
                .enumerate()
                .skip(w)
                .step_by(PARALLEL as usize)
                .collect();
            tasks.spawn(async move {
                for (i, id) in mine {
                    let username = user_name(i as u64, &setup.tag);
                    let req = LoginRequest {
                        password: sessions::password_for(&username),
                        username: username.clone(),
                    };
                    let r = retry(setup.timeout, || {
                        let (mut c, req) = (setup.client.clone(), req.clone());
                        async move { c.login(req).await }
                    })
                    .await
                    .map_err(|f| anyhow::anyhow!("Login: {}", f.name()))?;
                    anyhow::ensure!(
                        r.user_id == id,
                        "Login of {username} gave user {}",
                        r.user_id
                    );
                    s.logged_in(id, &username, &r.token);
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        Ok(())
    }

    /// Each planned chat, created by its first member and joined by the rest, by
    /// [`PARALLEL`] workers (client id `client_base + w`). Returns them in plan order.
    async fn create_chats(
        &self,
        plans: Vec<ChatPlan>,
        client_base: u64,
    ) -> anyhow::Result<Vec<ChatInfo>> {
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..PARALLEL {
            let setup = self.clone();
            let mine: Vec<ChatPlan> = plans
                .iter()
                .filter(|(c, _)| u64::from(*c) % PARALLEL == w)
                .cloned()
                .collect();
            tasks.spawn(async move {
                let mut made = Vec::new();
                let mut sequence = 0;
                for (c, members) in mine {
                    let chat_id = setup
                        .create_chat(c, &members, client_base + w, &mut sequence)
                        .await?;
                    made.push((
                        c,
                        ChatInfo {
                            chat_id,
                            members,
                            joining: Vec::new(),
                        },
                    ));
                }
                anyhow::Ok(made)
            });
        }
        let mut chats = Vec::new();
        while let Some(r) = tasks.join_next().await {
            chats.extend(r??);
        }
        chats.sort_by_key(|(c, _)| *c);
        Ok(chats.into_iter().map(|(_, info)| info).collect())
    }

    /// Chat `chat-<c>-<tag>`: created by `members[0]`, then joined by the others, each write
    /// with the next `sequence` of `client_id`.
    async fn create_chat(
        &self,
        c: u32,
        members: &[u64],
        client_id: u64,
        sequence: &mut u64,
    ) -> anyhow::Result<u64> {
        let mut next = || {
            *sequence += 1;
            Some(WriteId {
                client_id,
                sequence: *sequence,
            })
        };
        let req = CreateChatRequest {
            user_id: members[0],
            chat_name: format!("chat-{c}-{}", self.tag),
            write_id: next(),
        };
        let chat_id = retry(self.timeout, || {
            let (mut c, req) = (self.client.clone(), req.clone());
            async move { c.create_chat(req).await }
        })
        .await
        .map_err(|f| anyhow::anyhow!("CreateChat: {}", f.name()))?
        .chat_id;
        if let Some(s) = sessions::current() {
            s.member(chat_id, members[0]);
        }
        for &user_id in &members[1..] {
            let req = JoinChatRequest {
                user_id,
                chat_id,
                write_id: next(),
            };
            retry(self.timeout, || {
                let (mut c, req) = (self.client.clone(), req);
                async move { c.join_chat(req).await }
            })
            .await
            .map_err(|f| anyhow::anyhow!("JoinChat: {}", f.name()))?;
        }
        Ok(chat_id)
    }
}

/// Dataset user `i`'s name.
fn user_name(i: u64, tag: &str) -> String {
    format!("user-{i}-{tag}")
}

/// Retries a setup write a few times on errors that may be transient (no leader yet, a
/// timeout). The write carries its exactly-once id, so a retry never applies it twice.
async fn retry<T, F, Fut>(timeout: Duration, mut call: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        match with_timeout(timeout, call()).await {
            Ok(v) => return Ok(v),
            Err(Failure::Timeout | Failure::Status(tonic::Code::Unavailable)) if attempt < 5 => {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(f) => return Err(f),
        }
    }
}
