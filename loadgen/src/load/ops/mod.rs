//! The chat operations, one file each, behind one small interface: [`Operation`].
//!
//! Like toydb's workload trait (prepare / generate / execute / verify), an operation says, in
//! order, how one call goes:
//! 1. [`Operation::prepare`]: draw the arguments from the [`Population`] and the caller's own
//!    state, and build the request (`None` when there is nothing to act on);
//! 2. [`Operation::execute`]: send it (the generator's timeout is applied around it);
//! 3. [`Operation::apply`]: update the population and the caller with what the call did;
//! 4. [`Operation::event`]: the history event of the call, for the operations the history
//!    checker follows (the event's shape is the history's: [`crate::history`]).
//!
//! [`perform`] runs those steps for every operation alike, so adding an operation means one
//! new file here, its line in [`ORDER`] and in [`call`], and its name in
//! [`crate::scenario::Op`] (the YAML schema). Operations send through a
//! [`crate::system::ChatConn`], so the same operations run against Telegraft or etcd
//! (`system:`); another system is one more arm there, not another set of operations.

mod create_chat;
mod create_user;
mod get_chat_users;
mod get_messages;
mod join_chat;
mod login;
mod send_message;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::system::ChatConn;
use prost_types::Timestamp;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use telegraft::proto::chat::{Consistency as PbConsistency, WriteId};

use super::client::{Failure, with_timeout};
use super::population::{Picks, Population};
use super::shape::Sizes;
use crate::history::{CallTimes, Event};
use crate::scenario::{Consistency, Op, Popularity, Scenario};

/// Operations in the order Goose runs them within a user's cycle: reads before writes, so a
/// closed `{get_messages, send_message}` user reads, then writes, as the seed's Gatling test did.
pub(crate) const ORDER: [Op; 7] = [
    Op::GetMessages,
    Op::GetChatUsers,
    Op::SendMessage,
    Op::JoinChat,
    Op::CreateChat,
    Op::CreateUser,
    Op::Login,
];

/// Makes one call of `op`.
pub(crate) async fn call(
    op: Op,
    env: &OpEnv,
    caller: &mut Caller,
    client: Option<&ChatConn>,
) -> Result<(), Failure> {
    match op {
        Op::SendMessage => perform::<send_message::SendMessage>(env, caller, client).await,
        Op::GetMessages => perform::<get_messages::GetMessages>(env, caller, client).await,
        Op::GetChatUsers => perform::<get_chat_users::GetChatUsers>(env, caller, client).await,
        Op::JoinChat => perform::<join_chat::JoinChat>(env, caller, client).await,
        Op::CreateChat => perform::<create_chat::CreateChat>(env, caller, client).await,
        Op::CreateUser => perform::<create_user::CreateUser>(env, caller, client).await,
        Op::Login => perform::<login::Login>(env, caller, client).await,
    }
}

/// One chat operation: where its arguments come from, how it is sent, what it changes in
/// the population, and what it leaves in the history.
pub(crate) trait Operation {
    /// The gRPC request.
    type Request: Send;
    /// The cluster's answer.
    type Reply: Send;
    /// What [`Operation::apply`] and [`Operation::event`] need to know about a call once it
    /// is over.
    type Note: Send + Sync;

    /// Draws a call's arguments and builds its request; `None` when the population has
    /// nothing to act on.
    fn prepare(env: &OpEnv, caller: &mut Caller) -> Option<(Self::Request, Self::Note)>;

    /// Sends the request.
    fn execute(
        client: &mut ChatConn,
        request: Self::Request,
    ) -> impl Future<Output = Result<tonic::Response<Self::Reply>, tonic::Status>> + Send;

    /// Updates the population and the caller with what the call did.
    fn apply(
        _env: &OpEnv,
        _caller: &mut Caller,
        _note: &Self::Note,
        _result: &Result<Self::Reply, Failure>,
    ) {
    }

    /// The call as a history event, for the operations the history checker follows.
    fn event(
        _at: CallTimes,
        _note: Self::Note,
        _result: &Result<Self::Reply, Failure>,
    ) -> Option<Event> {
        None
    }
}

/// Runs one call of `O` through its steps.
async fn perform<O: Operation>(
    env: &OpEnv,
    caller: &mut Caller,
    client: Option<&ChatConn>,
) -> Result<(), Failure> {
    // A user that could not connect: its calls count as unavailable.
    let Some(mut client) = client.cloned() else {
        return Err(Failure::Status(tonic::Code::Unavailable));
    };
    // With nothing to act on (an empty model), a call would only test error paths.
    let (request, note) =
        O::prepare(env, caller).ok_or(Failure::Status(tonic::Code::FailedPrecondition))?;
    let invoke_us = env.since_start();
    let result = with_timeout(env.timeout, O::execute(&mut client, request)).await;
    let at = CallTimes {
        client: caller.client_id,
        invoke_us,
        complete_us: env.since_start(),
    };
    O::apply(env, caller, &note, &result);
    if let Some(event) = O::event(at, note, &result) {
        env.history.lock().unwrap().push(event);
    }
    result.map(drop)
}

/// What every call of a run shares.
pub(crate) struct OpEnv {
    pub population: Arc<Population>,
    /// How long a call may take before it counts as a `Timeout`.
    pub timeout: Duration,
    /// The consistency reads ask for.
    pub consistency: PbConsistency,
    /// How chats and users are picked (`dataset.chat_popularity`, `dataset.user_activity`).
    pub picks: Picks,
    /// Content lengths of sent messages (`message_size`).
    pub sizes: Sizes,
    /// Seeded letters message content is cut from (cheap per call).
    pub filler: String,
    /// Makes created names unique in this run.
    pub tag: String,
    /// Every send and poll, for the history checker.
    pub history: Mutex<Vec<Event>>,
    /// The run's zero, which history times count from.
    pub start: Arc<OnceLock<Instant>>,
    /// The system under test.
    pub system: crate::scenario::System,
    /// Where each poller's cursors start: messages committed after it are new.
    pub start_cursor: Timestamp,
}

impl OpEnv {
    pub fn new(
        scenario: &Scenario,
        population: Arc<Population>,
        tag: String,
        start: Arc<OnceLock<Instant>>,
        start_cursor: Timestamp,
    ) -> OpEnv {
        let mut rng = ChaCha8Rng::seed_from_u64(scenario.seed);
        let filler = (0..scenario.message_size.largest().max(1) as usize * 2)
            .map(|_| rng.random_range(b'a'..=b'z') as char)
            .collect();
        OpEnv {
            population,
            timeout: scenario.load.timeout.0,
            consistency: match scenario.reads.consistency {
                Consistency::Linearizable => PbConsistency::Linearizable,
                Consistency::Local => PbConsistency::Local,
            },
            picks: Picks::of(&scenario.dataset),
            sizes: Sizes::new(
                scenario
                    .message_size
                    .shape()
                    .expect("a validated scenario's message_size has its dist's fields"),
            ),
            filler,
            tag,
            history: Mutex::new(Vec::new()),
            start,
            system: scenario.system,
            start_cursor,
        }
    }

    /// Microseconds since the run's start (for the history).
    fn since_start(&self) -> u64 {
        self.start
            .get()
            .map_or(0, |s| s.elapsed().as_micros() as u64)
    }
}

/// One generator user's own part of its calls.
#[derive(Clone)]
pub(crate) struct Caller {
    /// Its exactly-once client id, and the sequence of its latest write.
    pub client_id: u64,
    pub sequence: u64,
    /// Picks its calls' arguments (seeded per user).
    pub rng: ChaCha8Rng,
    /// The dataset users it polls for, each with its cursor: the largest `committed_at` seen
    /// for that user (at first, the system's clock once the dataset was made,
    /// [`OpEnv::start_cursor`]).
    pub polls: Vec<(u64, Timestamp)>,
    pub next_poll: usize,
    /// A poll whose page was cut short: the next poll goes on with it.
    pub resume: Option<usize>,
    /// With `user_activity: {zipf: S}`, each poll's weight by its user's activity.
    pub poll_weights: Option<rand::distr::weighted::WeightedIndex<f64>>,
    /// Users and chats it created so far (for unique names).
    pub created: u64,
}

impl Caller {
    /// User `u` of `users`: polls for the dataset users u, u + U, u + 2U, ... (or one user
    /// when users are few).
    pub fn new(env: &OpEnv, u: usize, users: usize, seed: u64, client_id: u64) -> Caller {
        let now = env.start_cursor;
        let population = &env.population;
        let dataset = population.user_count();
        let mut polls: Vec<_> = (u..dataset)
            .step_by(users)
            .filter_map(|i| population.user_at(i).map(|id| (id, now)))
            .collect();
        if polls.is_empty()
            && let Some(id) = population.user_at(u % dataset.max(1))
        {
            polls.push((id, now));
        }
        let poll_weights = match env.picks.users {
            Popularity::Uniform => None,
            Popularity::Zipf(s) => rand::distr::weighted::WeightedIndex::new(
                polls
                    .iter()
                    .map(|(id, _)| super::shape::activity_weight(s, population.rank(*id))),
            )
            .ok(),
        };
        Caller {
            client_id,
            sequence: 0,
            rng: ChaCha8Rng::seed_from_u64(
                seed ^ (u as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ),
            polls,
            next_poll: 0,
            resume: None,
            poll_weights,
            created: 0,
        }
    }

    /// The exactly-once id of this caller's next write.
    fn next_write_id(&mut self) -> Option<WriteId> {
        self.sequence += 1;
        Some(WriteId {
            client_id: self.client_id,
            sequence: self.sequence,
        })
    }
}
