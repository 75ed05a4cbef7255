//! Driving the load with Goose: users, pacing, recording, progress.
//!
//! Each chat operation in the scenario's `mix` is one Goose transaction with the mix weight as
//! its Goose weight, so Goose's own metrics and report list the operations by name. Goose runs
//! the transactions of each user in one fixed cycle (its round-robin scheduler), which keeps
//! the mix exact and the run repeatable; the scenario's seed picks each call's arguments.
//! Every user would start at the top of the same cycle, so a short run would see only the
//! cycle's first operations (a mix of 60/30/5/3/1/1 has a cycle of 100 calls): user `u` of `U`
//! therefore starts `u/U` of the way into the cycle, passing over the transactions before that
//! point once without calling. Goose's per-transaction table would count those passes, so it
//! is off; its per-request table (one row per operation) is the one to read.
//! Every Goose user owns one gRPC connection and one exactly-once client id.
//!
//! **Open model.** Each user has its share of the arrival schedule ([`crate::schedule`]): a
//! transaction first waits for the user's next intended send time, then calls. If the user is
//! still busy with an earlier call when a send time passes, the next call goes out late, and
//! its latency still counts from the intended time (coordinated-omission correction, as wrk2
//! does). How late sends went out is measured too, and so is how many intended sends never went
//! out before the run ended, so a run where the generator could not keep the schedule says so.
//!
//! **Closed model.** Users call, wait for the answer, then think (Goose's own wait time).
//! Corrected latency and service time are then the same thing.
//!
//! Goose only runs users: it has no notion of intended times, and its request timings are
//! coarse buckets. Every call is recorded twice: in Goose (`record_custom_request_duration`,
//! with the service time) so its report stays meaningful, and in the project's own
//! [`Recorder`] at microsecond resolution, which the results use. All users start together:
//! each connects in its on-start transaction and waits at a barrier, and the schedule's zero
//! is the moment the last one arrives.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use goose::prelude::*;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use telegraft::proto::chat::chat_client::ChatClient;
use telegraft::proto::chat::{
    Consistency as PbConsistency, CreateChatRequest, CreateUserRequest, GetChatUsersRequest,
    GetMessagesRequest, JoinChatRequest, SendMessageRequest, WriteId,
};
use tokio::sync::{Barrier, watch};
use tonic::transport::Channel;

use crate::check::{self, Event, Outcome, Seen};
use crate::client::{self, Failure, with_timeout};
use crate::record::{Interval, Percentiles, Recorder};
use crate::scenario::{Consistency, Model, Op, Routing, Scenario};
use crate::schedule::{Schedule, UserTimes};
use crate::world::{JoinOutcome, World};

/// A send this much later than its intended time counts as late.
pub const LATE: Duration = Duration::from_millis(10);

/// Operations in the order Goose runs them within a user's cycle: reads before writes, so a
/// closed `{get_messages, send_message}` user reads, then writes, as the seed's Gatling test did.
const ORDER: [Op; 6] = [
    Op::GetMessages,
    Op::GetChatUsers,
    Op::SendMessage,
    Op::JoinChat,
    Op::CreateChat,
    Op::CreateUser,
];

/// What a run needs besides the scenario.
pub struct RunPlan {
    pub scenario: Scenario,
    /// Replica addresses; with `routing: any`, user `u` connects to `endpoints[u % len]`.
    pub endpoints: Vec<String>,
    /// The leader's address, for `routing: leader`.
    pub leader: Option<String>,
    pub world: Arc<World>,
    /// Makes created names unique in this run.
    pub tag: String,
    /// The first exactly-once client id the users may use (user `u` gets `client_base + u`).
    pub client_base: u64,
    /// Goose report files to write (`.html`, `.json`, `.md`).
    pub goose_reports: Vec<String>,
    /// Draw a live progress line on stderr (when it is a terminal).
    pub progress: bool,
    /// Set when every user has started: the run's zero, from which the schedule, the
    /// history's times and the scenario's fault times count.
    pub start: Arc<OnceLock<Instant>>,
}

/// How well the generator kept the open model's schedule, over the measured window.
#[derive(Clone, Debug, PartialEq)]
pub struct Pacing {
    /// Sends the schedule intended in the measured window.
    pub intended: u64,
    /// Of those, how many went out before the run ended.
    pub sent: u64,
    /// How late they went out.
    pub lateness_ms: Percentiles,
    /// How many went out more than [`LATE`] after their intended time.
    pub late: u64,
}

impl Pacing {
    /// A sentence when the generator did not keep the schedule, `None` when it did.
    pub fn warning(&self) -> Option<String> {
        let unsent = self.intended.saturating_sub(self.sent);
        let late_share = self.late as f64 / self.sent.max(1) as f64;
        if unsent * 200 <= self.intended && late_share <= 0.01 {
            return None;
        }
        Some(format!(
            "the generator did not keep the schedule: {late} of {sent} sends ({pct:.1}%) went out \
             more than {late_ms} ms late (p99 {p99:.1} ms, max {max:.1} ms) and {unsent} of \
             {intended} intended sends never went out. Latencies still count from the intended \
             times; if the cluster is not saturated, raise load.users.",
            late = self.late,
            sent = self.sent,
            pct = late_share * 100.0,
            late_ms = LATE.as_millis(),
            p99 = self.lateness_ms.p99,
            max = self.lateness_ms.max,
            intended = self.intended,
        ))
    }
}

/// What a run measured.
pub struct RunOutput {
    pub recorder: Recorder,
    pub timeseries: Vec<Interval>,
    /// When the measured window began (after warm-up), by the wall clock.
    pub measured_start: SystemTime,
    /// The open model's pacing; `None` for the closed model.
    pub pacing: Option<Pacing>,
    /// Every call made, warm-up included.
    pub calls: u64,
    /// CPU time the generator process used while the load ran (user + system).
    pub cpu: Duration,
    /// Users that could not connect (their calls count as `Unavailable`).
    pub connect_failures: u64,
    /// Every send and poll, in completion order (times from the run's start).
    pub history: Vec<Event>,
    /// The run's start (the schedule's zero), by the wall clock.
    pub started: SystemTime,
}

/// State shared by every user of a run.
struct Ctx {
    scenario: Scenario,
    schedule: Option<Schedule>,
    world: Arc<World>,
    endpoints: Vec<String>,
    leader: Option<String>,
    tag: String,
    client_base: u64,
    users: usize,
    /// The length of one user's cycle of transactions (the sum of the reduced weights).
    cycle: usize,
    warmup: Duration,
    end: Duration,
    timeout: Duration,
    consistency: i32,
    content: String,
    barrier: Barrier,
    start: Arc<OnceLock<Instant>>,
    recorder: Mutex<Recorder>,
    lateness: Mutex<Histogram<u64>>,
    late: AtomicU64,
    sent_in_window: AtomicU64,
    calls: AtomicU64,
    errors: AtomicU64,
    connect_failures: AtomicU64,
    done_users: AtomicUsize,
    /// Every send and poll, for the history checker.
    history: Mutex<Vec<Event>>,
}

/// One Goose user's own state (Goose session data).
#[derive(Clone)]
struct UserState {
    client: Option<ChatClient<Channel>>,
    rng: ChaCha8Rng,
    client_id: u64,
    sequence: u64,
    times: Option<UserTimes>,
    /// The dataset users this generator user polls for, with the time of their last poll.
    polls: Vec<(u64, prost_types::Timestamp)>,
    next_poll: usize,
    created: u64,
    /// Transactions to pass over before the first call (this user's place in the cycle).
    skip: usize,
    /// This user has made every call of its share of the run.
    done: bool,
}

/// How a call ended, for the history: a definite refusal by the chat state machine, or
/// success; anything else (no answer, no leader, a transport error) may or may not have
/// taken effect.
pub fn outcome<T>(r: &Result<T, Failure>) -> Outcome {
    use tonic::Code;
    match r {
        Ok(_) => Outcome::Ok,
        Err(Failure::Status(
            Code::InvalidArgument | Code::NotFound | Code::AlreadyExists | Code::FailedPrecondition,
        )) => Outcome::Fail,
        Err(_) => Outcome::Unknown,
    }
}

fn unix_us(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn ts_us(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1_000_000 + i64::from(t.nanos) / 1000
}

/// What a read returned, as the checker sees it.
pub fn seen(messages: &[telegraft::proto::chat::Message]) -> Vec<Seen> {
    messages
        .iter()
        .map(|m| Seen {
            chat: m.chat_id,
            id: m.message_id,
            key: check::key_of(&m.content),
            sent_us: m.sent_time.as_ref().map_or(0, ts_us),
        })
        .collect()
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

impl Ctx {
    fn write_id(st: &mut UserState) -> Option<WriteId> {
        st.sequence += 1;
        Some(WriteId {
            client_id: st.client_id,
            sequence: st.sequence,
        })
    }

    /// Makes one call of `op` with arguments drawn from the world model.
    async fn call(&self, st: &mut UserState, op: Op) -> Result<(), Failure> {
        let Some(mut client) = st.client.clone() else {
            return Err(Failure::Status(tonic::Code::Unavailable));
        };
        let t = self.timeout;
        // With nothing to act on (an empty model), a call would only test error paths.
        let empty = || Failure::Status(tonic::Code::FailedPrecondition);
        match op {
            Op::SendMessage => {
                let (chat_id, user_id) = self.world.random_member(&mut st.rng).ok_or_else(empty)?;
                let size = &self.scenario.message_size;
                let len = st.rng.random_range(size.min..=size.max) as usize;
                let write_id = Self::write_id(st);
                // The content starts with a key unique to this write, which the history
                // checker recognises the message by; the rest is seeded filler.
                let key = check::message_key(st.client_id, st.sequence);
                let fill = len.saturating_sub(key.len() + 1);
                let from = st.rng.random_range(0..=self.content.len() - fill);
                let sent_time = SystemTime::now();
                let req = SendMessageRequest {
                    user_id,
                    chat_id,
                    content: format!("{key} {}", &self.content[from..from + fill]),
                    sent_time: Some(timestamp(sent_time)),
                    write_id,
                };
                let invoke = self.since_start();
                let r = with_timeout(t, client.send_message(req)).await;
                self.history.lock().unwrap().push(Event::Send {
                    client: st.client_id,
                    invoke_us: invoke,
                    complete_us: self.since_start(),
                    outcome: outcome(&r),
                    chat: chat_id,
                    user: user_id,
                    key,
                    sent_us: unix_us(sent_time),
                    message_id: r.as_ref().ok().map(|m| m.message_id),
                });
                r.map(drop)
            }
            Op::GetMessages => {
                let i = st.next_poll % st.polls.len();
                st.next_poll += 1;
                let (user_id, after) = st.polls[i];
                let now = timestamp(SystemTime::now());
                let req = GetMessagesRequest {
                    user_id,
                    messages_after: Some(after),
                    consistency: self.consistency,
                };
                let chats = self.world.chats_of(user_id);
                let invoke = self.since_start();
                let r = with_timeout(t, client.get_messages(req)).await;
                self.history.lock().unwrap().push(Event::Read {
                    client: st.client_id,
                    invoke_us: invoke,
                    complete_us: self.since_start(),
                    outcome: outcome(&r),
                    user: user_id,
                    after_us: ts_us(&after),
                    linearizable: self.consistency == PbConsistency::Linearizable as i32,
                    chats,
                    messages: r.as_ref().map(|m| seen(&m.messages)).unwrap_or_default(),
                });
                r?;
                st.polls[i].1 = now;
                Ok(())
            }
            Op::GetChatUsers => {
                let chat_id = self.world.random_chat(&mut st.rng).ok_or_else(empty)?;
                let req = GetChatUsersRequest {
                    chat_id,
                    consistency: self.consistency,
                };
                with_timeout(t, client.get_chat_users(req)).await.map(drop)
            }
            Op::JoinChat => {
                let (user_id, chat_id) = self.world.reserve_join(&mut st.rng).ok_or_else(empty)?;
                let req = JoinChatRequest {
                    user_id,
                    chat_id,
                    write_id: Self::write_id(st),
                };
                let r = with_timeout(t, client.join_chat(req)).await.map(drop);
                let outcome = match &r {
                    Ok(()) => JoinOutcome::Joined,
                    // No answer, or the cluster could not tell: it may have happened.
                    Err(Failure::Timeout | Failure::Status(tonic::Code::DeadlineExceeded)) => {
                        JoinOutcome::Unknown
                    }
                    Err(Failure::Status(_)) => JoinOutcome::Refused,
                };
                self.world.finish_join(user_id, chat_id, outcome);
                r
            }
            Op::CreateChat => {
                let user_id = self.world.random_user(&mut st.rng).ok_or_else(empty)?;
                st.created += 1;
                let req = CreateChatRequest {
                    user_id,
                    chat_name: format!("chat-{}-{}-{}", st.client_id, st.created, self.tag),
                    write_id: Self::write_id(st),
                };
                let r = with_timeout(t, client.create_chat(req)).await?;
                self.world.add_chat(r.chat_id, user_id);
                Ok(())
            }
            Op::CreateUser => {
                st.created += 1;
                let req = CreateUserRequest {
                    username: format!("user-{}-{}-{}", st.client_id, st.created, self.tag),
                    write_id: Self::write_id(st),
                };
                let r = with_timeout(t, client.create_user(req)).await?;
                self.world.add_user(r.user_id);
                Ok(())
            }
        }
    }

    /// Records one call that completed. Calls intended (open) or started (closed) during the
    /// warm-up, or after the measured window, only count as calls.
    fn record(
        &self,
        op: Op,
        intended: Instant,
        sent: Instant,
        done: Instant,
        ok: Option<&Failure>,
    ) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if ok.is_some() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let start = self.start();
        let at = intended.saturating_duration_since(start);
        if at < self.warmup || at >= self.end {
            return;
        }
        if self.schedule.is_some() {
            let late = sent.saturating_duration_since(intended);
            self.sent_in_window.fetch_add(1, Ordering::Relaxed);
            if late > LATE {
                self.late.fetch_add(1, Ordering::Relaxed);
            }
            self.lateness
                .lock()
                .unwrap()
                .saturating_record((late.as_micros() as u64).max(1));
        }
        let mut r = self.recorder.lock().unwrap();
        match ok {
            None => r.ok(op, done - intended, done - sent),
            Some(f) => r.error(op, &f.name()),
        }
    }

    fn start(&self) -> Instant {
        *self.start.get().expect("the run has started")
    }

    /// Microseconds since the run's start (for the history).
    fn since_start(&self) -> u64 {
        self.start
            .get()
            .map_or(0, |s| s.elapsed().as_micros() as u64)
    }
}

async fn on_start(ctx: Arc<Ctx>, user: &mut GooseUser) -> TransactionResult {
    let u = user.weighted_users_index % ctx.users;
    let addr = match (ctx.scenario.routing, &ctx.leader) {
        (Routing::Leader, Some(leader)) => leader.clone(),
        _ => ctx.endpoints[u % ctx.endpoints.len()].clone(),
    };
    let client = match client::connect(&addr).await {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("loadgen: user {u}: {e}");
            ctx.connect_failures.fetch_add(1, Ordering::Relaxed);
            None
        }
    };
    // Poll for the dataset users u, u + U, u + 2U, ... (or one user when users are few).
    let now = timestamp(SystemTime::now());
    let dataset = ctx.world.user_count();
    let mut polls: Vec<_> = (u..dataset)
        .step_by(ctx.users)
        .filter_map(|i| ctx.world.user_at(i).map(|id| (id, now)))
        .collect();
    if polls.is_empty()
        && let Some(id) = ctx.world.user_at(u % dataset.max(1))
    {
        polls.push((id, now));
    }
    user.set_session_data(UserState {
        client,
        rng: ChaCha8Rng::seed_from_u64(
            ctx.scenario.seed ^ (u as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        ),
        client_id: ctx.client_base + u as u64,
        sequence: 0,
        times: ctx.schedule.as_ref().map(|s| s.user_times(u, ctx.users)),
        polls,
        next_poll: 0,
        created: 0,
        skip: u * ctx.cycle / ctx.users,
        done: false,
    });
    // Everyone starts together; the last to arrive sets the schedule's zero.
    if ctx.barrier.wait().await.is_leader() {
        let _ = ctx.start.set(Instant::now() + Duration::from_millis(5));
    }
    while ctx.start.get().is_none() {
        tokio::task::yield_now().await;
    }
    Ok(())
}

async fn transaction(ctx: Arc<Ctx>, user: &mut GooseUser, op: Op) -> TransactionResult {
    let start = ctx.start();
    let Some(st) = user.get_session_data_mut::<UserState>() else {
        return Err(Box::new(TransactionError::Custom(
            "user was not set up".into(),
        )));
    };
    if st.skip > 0 {
        st.skip -= 1;
        return Ok(());
    }
    let intended = match &mut st.times {
        Some(times) => times.next().map(|off| start + off),
        None => Some(Instant::now()).filter(|now| *now < start + ctx.end),
    };
    let Some(intended) = intended else {
        // This user's part of the run is over. When every user's is, stop Goose now rather
        // than at the end of its plan (which leaves time for late sends).
        if !st.done {
            st.done = true;
            if ctx.done_users.fetch_add(1, Ordering::Relaxed) + 1 == ctx.users {
                goose::trigger_killswitch("every user finished its schedule");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        return Ok(());
    };
    // A timer, even one already due, waits for the next tick of tokio's 1 ms wheel: only
    // sleep when the send time is still ahead.
    if intended > Instant::now() {
        tokio::time::sleep_until(intended.into()).await;
    }
    let sent = Instant::now();
    // Closed model: the call starts now; its latency is its service time.
    let intended = if st.times.is_some() { intended } else { sent };
    let result = ctx.call(st, op).await;
    let done = Instant::now();
    ctx.record(op, intended, sent, done, result.as_ref().err());
    let failure = result.err();
    user.record_custom_request_duration(
        "gRPC",
        op.name(),
        done - sent,
        failure.is_none(),
        Some(failure.as_ref().map_or(0, Failure::number)),
        failure.as_ref().map(Failure::name).as_deref(),
    )
    .await?;
    match failure {
        None => Ok(()),
        Some(f) => Err(Box::new(TransactionError::Custom(f.name()))),
    }
}

/// CPU time (user + system) this process has used so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct we pass; RUSAGE_SELF is always valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs the scenario's load (warm-up, then the measured window) and returns what it measured.
pub async fn run(plan: RunPlan) -> anyhow::Result<RunOutput> {
    let s = &plan.scenario;
    let users = s.load.users as usize;
    let schedule = Schedule::from_scenario(s);
    let warmup = s.load.warmup.0;
    let end = warmup + s.duration();
    let intended = schedule
        .as_ref()
        .map(|sch| sch.intended_between(users, warmup, end));
    // Message content is cut from one seeded buffer of letters (cheap per call).
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    let content: String = (0..s.message_size.max.max(1) as usize * 2)
        .map(|_| rng.random_range(b'a'..=b'z') as char)
        .collect();
    let weights: Vec<(Op, u32)> = ORDER
        .iter()
        .filter_map(|op| s.mix.get(op).filter(|w| **w > 0).map(|w| (*op, *w)))
        .collect();
    let gcd = weights.iter().fold(0, |g, (_, w)| num_gcd(g, *w));
    let cycle = weights.iter().map(|(_, w)| (w / gcd) as usize).sum();
    let ctx = Arc::new(Ctx {
        scenario: s.clone(),
        schedule,
        world: plan.world.clone(),
        endpoints: plan.endpoints.clone(),
        leader: plan.leader.clone(),
        tag: plan.tag.clone(),
        client_base: plan.client_base,
        users,
        cycle,
        warmup,
        end,
        timeout: s.load.timeout.0,
        consistency: match s.reads.consistency {
            Consistency::Linearizable => PbConsistency::Linearizable as i32,
            Consistency::Local => PbConsistency::Local as i32,
        },
        content,
        barrier: Barrier::new(users),
        start: plan.start.clone(),
        recorder: Mutex::new(Recorder::new()),
        lateness: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3)?),
        late: AtomicU64::new(0),
        sent_in_window: AtomicU64::new(0),
        calls: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        connect_failures: AtomicU64::new(0),
        done_users: AtomicUsize::new(0),
        history: Mutex::new(Vec::new()),
    });

    let mut scenario = goose::goose::Scenario::new("chat");
    let c = ctx.clone();
    scenario = scenario.register_transaction(
        Transaction::new(Arc::new(move |user| Box::pin(on_start(c.clone(), user))))
            .set_name("setup")
            .set_on_start(),
    );
    for (op, w) in weights {
        let c = ctx.clone();
        scenario = scenario.register_transaction(
            Transaction::new(Arc::new(move |user| {
                Box::pin(transaction(c.clone(), user, op))
            }))
            .set_name(op.name())
            .set_weight((w / gcd) as usize)?,
        );
    }
    if s.load.model == Model::Closed && !s.load.think_time.0.is_zero() {
        scenario = scenario.set_wait_time(s.load.think_time.0, s.load.think_time.0)?;
    }

    let mut config = goose::config::GooseConfiguration::default();
    // Goose needs a base URL for its (unused) HTTP client; gRPC calls go to the replicas.
    config.host = Some(format!("http://{}", plan.endpoints[0]));
    config.quiet = 1;
    config.no_print_metrics = true;
    config.no_error_summary = true;
    config.no_telnet = true;
    config.no_transaction_metrics = true;
    config.report_file = plan.goose_reports.clone();
    // Whole seconds: Goose's plan holds the users for warm-up + window + a grace period for
    // starting and for late sends, then stops them (each finishes its current call). Runs
    // normally end sooner: when every user has finished its share.
    let hold = end.as_secs() + u64::from(end.subsec_nanos() > 0) + 3;
    let attack = GooseAttack::initialize_with_config(config)?
        .register_scenario(scenario)
        .set_scheduler(GooseScheduler::RoundRobin)
        .set_default(
            GooseDefault::TestPlan,
            format!("{users},0s;{users},{hold}s;0,0s").as_str(),
        )?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let ticker = tokio::spawn(tick(ctx.clone(), stop_rx, plan.progress));
    let cpu_before = cpu_time();
    let result = attack.execute().await;
    let cpu = cpu_time().saturating_sub(cpu_before);
    let _ = stop_tx.send(true);
    let (timeseries, measured_start) = ticker.await?;
    result.map_err(|e| anyhow::anyhow!("goose: {e}"))?;

    let pacing = intended.map(|intended| {
        let h = ctx.lateness.lock().unwrap();
        Pacing {
            intended,
            sent: ctx.sent_in_window.load(Ordering::Relaxed),
            lateness_ms: Percentiles::of(&h),
            late: ctx.late.load(Ordering::Relaxed),
        }
    });
    let recorder = std::mem::take(&mut *ctx.recorder.lock().unwrap());
    let history = std::mem::take(&mut *ctx.history.lock().unwrap());
    let started = ctx
        .start
        .get()
        .map_or(SystemTime::now(), |s| SystemTime::now() - s.elapsed());
    Ok(RunOutput {
        history,
        started,
        recorder,
        timeseries,
        measured_start,
        pacing,
        calls: ctx.calls.load(Ordering::Relaxed),
        cpu,
        connect_failures: ctx.connect_failures.load(Ordering::Relaxed),
    })
}

fn num_gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { num_gcd(b, a % b) }
}

/// Closes one interval per second of the measured window (the time series) and draws the
/// progress line. Returns the rows and the wall-clock start of the measured window.
async fn tick(
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
    progress: bool,
) -> (Vec<Interval>, SystemTime) {
    let total = ctx.end.as_secs_f64().ceil() as u64;
    let bar = if progress {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>9} [{bar:25}] {pos:>3}/{len}s  {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let plain = progress && bar.is_hidden();
    bar.set_prefix("starting");
    // Wait for the users to start.
    while ctx.start.get().is_none() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = stop.changed() => return (Vec::new(), SystemTime::now()),
        }
    }
    let start = ctx.start();
    let measured = start + ctx.warmup;
    let wall_measured = SystemTime::now() + measured.saturating_duration_since(Instant::now());
    let mut rows = Vec::new();
    let mut second = 0u64;
    let (mut last_calls, mut last_errors, mut last_tick) = (0, 0, start);
    let mut stopping = false;
    loop {
        // Warm-up ticks every second from the start; measured ticks on measured-window seconds.
        let next = if Instant::now() < measured {
            let elapsed = Instant::now().saturating_duration_since(start).as_secs() + 1;
            (start + Duration::from_secs(elapsed)).min(measured)
        } else {
            measured + Duration::from_secs(second + 1)
        };
        let measuring = next > measured;
        if !stopping {
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                _ = stop.changed() => stopping = true,
            }
        }
        let now = Instant::now();
        let calls = ctx.calls.load(Ordering::Relaxed);
        let errors = ctx.errors.load(Ordering::Relaxed);
        let span = now
            .saturating_duration_since(last_tick)
            .as_secs_f64()
            .max(1e-3);
        let mut msg = format!(
            "{:.0} ops/s, {} errors",
            (calls - last_calls) as f64 / span,
            errors - last_errors
        );
        let late = ctx.late.load(Ordering::Relaxed);
        if late > 0 {
            msg.push_str(&format!(", {late} sends late"));
        }
        (last_calls, last_errors, last_tick) = (calls, errors, now);
        if measuring || (stopping && now > measured) {
            second += 1;
            let closed = ctx.recorder.lock().unwrap().close_interval(second);
            if let Some(p99) = closed.iter().map(|r| r.p99_ms).reduce(f64::max) {
                msg.push_str(&format!(", p99 {p99:.1} ms"));
            }
            rows.extend(closed);
            bar.set_prefix(if now >= start + ctx.end {
                "finishing"
            } else {
                "measuring"
            });
        } else {
            bar.set_prefix("warm-up");
        }
        let elapsed = now.saturating_duration_since(start).as_secs().min(total);
        bar.set_position(elapsed);
        bar.set_message(msg.clone());
        if plain && elapsed.is_multiple_of(10) && elapsed > 0 {
            eprintln!("loadgen: {elapsed:>4}/{total}s {msg}");
        }
        if stopping {
            break;
        }
    }
    bar.finish_and_clear();
    (rows, wall_measured)
}
