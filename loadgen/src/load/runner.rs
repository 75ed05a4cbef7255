//! Driving the load with Goose: users, pacing, and recording each call.
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
//! Every Goose user owns one gRPC connection at a time ([`Route`]: which replica, and how it
//! moves after failures) and one exactly-once client id. What a call does is the operation's
//! ([`super::ops`]); what it measured, the [`Meter`]'s; the progress line is drawn apart from
//! this loop ([`super::progress`]).
//!
//! **Open model.** Each user has its share of the arrival schedule ([`crate::schedule`]): a
//! transaction first waits for the user's next intended send time (through the [`Pacer`],
//! which sends within microseconds of it), then calls. If the user is
//! still busy with an earlier call when a send time passes, the next call goes out late, and
//! its latency still counts from the intended time (coordinated-omission correction, as wrk2
//! does). How late sends went out is measured too, and so is how many intended sends never went
//! out before the run ended, so a run where the generator could not keep the schedule says so.
//!
//! **Closed model.** Users call, wait for the answer, then think. Corrected latency and
//! service time are then the same thing. A fixed think time is Goose's own wait time; a
//! drawn one (`{dist: uniform | exponential, mean}`) is slept at the end of each
//! transaction, drawn from a rng of the user's own seeded from the scenario's seed (Goose's
//! random wait time would be neither seeded nor exponential).
//!
//! Goose only runs users: it has no notion of intended times, and its request timings are
//! coarse buckets. Every call is recorded twice: in Goose (`record_custom_request_duration`,
//! with the service time) so its report stays meaningful, and in the project's own
//! [`super::record::Recorder`] at microsecond resolution, which the results use. All users start together:
//! each sets up in its on-start transaction and waits at a barrier, and the schedule's zero
//! is the moment the last one arrives.
//!
//! **Stopping early.** When `cancel` is set (SIGINT or SIGTERM), the next transaction of any
//! user pulls Goose's killswitch, and the attack ends as if its plan were over.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use goose::prelude::*;
use tokio::sync::{Barrier, watch};

use super::client::{Failure, Route, Topology};
use super::meter::{Meter, Pacing};
use super::ops::{self, Caller, OpEnv};
use super::pacer::Pacer;
use super::population::Population;
use super::progress::{Progress, Tick};
use super::record::{Interval, Recorder};
use super::schedule::{Schedule, UserTimes};
use super::shape::Think;
use super::timeseries;
use crate::history::Event;
use crate::scenario::{Model, Op, Routing, Scenario, ThinkDist};

/// What a run needs besides the scenario.
pub struct RunPlan {
    pub scenario: Scenario,
    /// Replica addresses; with `routing: any`, user `u` connects to `endpoints[u % len]`.
    pub endpoints: Vec<String>,
    /// The leader's address, for `routing: leader`.
    pub leader: Option<String>,
    pub population: Arc<Population>,
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
    /// Who leads and which replicas answer, as the status poller last saw (users follow it
    /// after failures).
    pub topology: watch::Receiver<Topology>,
    /// Set to stop the load early (an interrupt, or a capacity probe cut short).
    pub cancel: Arc<AtomicBool>,
    /// Where pollers' cursors start (messages committed after it are new): the system's
    /// own clock ([`crate::system::ChatConn::start_cursor`]), read once the dataset exists.
    pub start_cursor: prost_types::Timestamp,
    /// Where each second's [`Tick`] also goes, for a watcher that may stop the load early
    /// (`loadgen capacity` cuts a lost probe short).
    pub ticks: Option<tokio::sync::mpsc::UnboundedSender<Tick>>,
    /// A worker's share of the scenario's users (`loadgen worker`): this process runs
    /// users `first .. first + count` of `load.users`, each exactly as a single generator
    /// would (its schedule, seed, client id and place in the cycle), so that the workers'
    /// calls together are one generator's. `None`: every user.
    pub share: Option<Share>,
}

/// Users `first .. first + count` of `total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    pub first: usize,
    pub count: usize,
    pub total: usize,
}

impl Share {
    /// Worker `index`'s share (of `of`) of `total` users: contiguous blocks, the first
    /// `total % of` workers one user larger.
    pub fn of(index: usize, of: usize, total: usize) -> Share {
        let (base, extra) = (total / of, total % of);
        let first = index * base + index.min(extra);
        Share {
            first,
            count: base + usize::from(index < extra),
            total,
        }
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
    /// Failures after which a user moved to another replica (or looked for the leader).
    pub reroutes: u64,
    /// Every send and poll, in completion order (times from the run's start).
    pub history: Vec<Event>,
    /// The run's start (the schedule's zero), by the wall clock.
    pub started: SystemTime,
}

impl RunOutput {
    /// A run that made no call (it was interrupted before the load).
    pub fn empty() -> RunOutput {
        RunOutput {
            recorder: Recorder::new(),
            timeseries: Vec::new(),
            measured_start: SystemTime::now(),
            pacing: None,
            calls: 0,
            cpu: Duration::ZERO,
            reroutes: 0,
            history: Vec::new(),
            started: SystemTime::now(),
        }
    }
}

/// Runs the scenario's load (warm-up, then the measured window) and returns what it measured.
pub async fn run(plan: RunPlan) -> anyhow::Result<RunOutput> {
    let mix = Mix::of(&plan.scenario);
    let ctx = Arc::new(Ctx::new(&plan, mix.cycle)?);
    let attack = attack(&plan, &ctx, &mix)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let ticker = tokio::spawn(timeseries::sample(
        ctx.meter.clone(),
        plan.start.clone(),
        ctx.warmup,
        ctx.end,
        stop_rx,
        Progress::new(plan.progress, ctx.end.as_secs_f64().ceil() as u64),
        plan.ticks.clone(),
    ));
    let cpu_before = cpu_time();
    let result = attack.execute().await;
    let cpu = cpu_time().saturating_sub(cpu_before);
    let _ = stop_tx.send(true);
    let (timeseries, measured_start) = ticker.await?;
    result.map_err(|e| anyhow::anyhow!("goose: {e}"))?;
    Ok(ctx.output(timeseries, measured_start, cpu))
}

/// The scenario's mix as Goose weights: each operation with a weight, in [`ops::ORDER`],
/// weights divided by their greatest common divisor.
struct Mix {
    weights: Vec<(Op, usize)>,
    /// The length of one user's cycle of transactions (the sum of the reduced weights).
    cycle: usize,
}

impl Mix {
    fn of(s: &Scenario) -> Mix {
        let weights: Vec<(Op, u32)> = ops::ORDER
            .iter()
            .filter_map(|op| s.mix.get(op).filter(|w| **w > 0).map(|w| (*op, *w)))
            .collect();
        let gcd = weights.iter().fold(0, |g, (_, w)| num_gcd(g, *w));
        let weights: Vec<(Op, usize)> = weights
            .into_iter()
            .map(|(op, w)| (op, (w / gcd) as usize))
            .collect();
        let cycle = weights.iter().map(|(_, w)| w).sum();
        Mix { weights, cycle }
    }
}

fn num_gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { num_gcd(b, a % b) }
}

/// State shared by every user of a run.
struct Ctx {
    /// Intended send times (open model); `None` for the closed model.
    schedule: Option<Schedule>,
    /// Sends the schedule intends in the measured window.
    intended: Option<u64>,
    routing: Routing,
    endpoints: Arc<Vec<String>>,
    leader: Option<String>,
    topology: watch::Receiver<Topology>,
    /// Sends on time (open model).
    pacer: Option<Pacer>,
    /// A drawn think time (closed model, `dist` other than fixed), slept after each call.
    think: Option<Think>,
    cancel: Arc<AtomicBool>,
    seed: u64,
    client_base: u64,
    /// The users this process runs ...
    users: usize,
    /// ... from this one of the scenario's `total_users` ([`Share`]).
    first_user: usize,
    total_users: usize,
    /// The length of one user's cycle of transactions.
    cycle: usize,
    warmup: Duration,
    end: Duration,
    env: OpEnv,
    meter: Arc<Meter>,
    barrier: Barrier,
    start: Arc<OnceLock<Instant>>,
    reroutes: AtomicU64,
    done_users: AtomicUsize,
}

/// One Goose user's own state (Goose session data).
#[derive(Clone)]
struct UserState {
    route: Route,
    caller: Caller,
    times: Option<UserTimes>,
    /// Draws this user's think times (seeded per user).
    think_rng: rand_chacha::ChaCha8Rng,
    /// Transactions to pass over before the first call (this user's place in the cycle).
    skip: usize,
    /// This user has made every call of its share of the run.
    done: bool,
}

impl Ctx {
    fn new(plan: &RunPlan, cycle: usize) -> anyhow::Result<Ctx> {
        let s = &plan.scenario;
        let total = s.load.users as usize;
        let share = plan.share.unwrap_or(Share {
            first: 0,
            count: total,
            total,
        });
        anyhow::ensure!(
            share.count > 0 && share.first + share.count <= total,
            "a worker's share of users {}..{} is not within the scenario's {total} users",
            share.first,
            share.first + share.count
        );
        let users = share.count;
        let schedule = Schedule::from_scenario(s);
        let warmup = s.load.warmup.0;
        let end = warmup + s.duration();
        Ok(Ctx {
            intended: schedule.as_ref().map(|sch| {
                (share.first..share.first + share.count)
                    .map(|u| sch.intended_of(u, total, warmup, end))
                    .sum()
            }),
            meter: Arc::new(Meter::new(
                plan.start.clone(),
                warmup,
                end,
                schedule.is_some(),
            )?),
            pacer: schedule.as_ref().map(|_| Pacer::start()).transpose()?,
            think: (s.load.model == Model::Closed && s.load.think_time.dist != ThinkDist::Fixed)
                .then(|| Think::new(s.load.think_time)),
            schedule,
            routing: s.routing,
            endpoints: Arc::new(plan.endpoints.clone()),
            leader: plan.leader.clone(),
            topology: plan.topology.clone(),
            cancel: plan.cancel.clone(),
            seed: s.seed,
            client_base: plan.client_base,
            users,
            first_user: share.first,
            total_users: total,
            cycle,
            warmup,
            end,
            env: OpEnv::new(
                s,
                plan.population.clone(),
                plan.tag.clone(),
                plan.start.clone(),
                plan.start_cursor,
            ),
            barrier: Barrier::new(users),
            start: plan.start.clone(),
            reroutes: AtomicU64::new(0),
            done_users: AtomicUsize::new(0),
        })
    }

    fn start(&self) -> Instant {
        *self.start.get().expect("the run has started")
    }

    /// What the run measured, once Goose is done.
    fn output(
        &self,
        timeseries: Vec<Interval>,
        measured_start: SystemTime,
        cpu: Duration,
    ) -> RunOutput {
        let started = self
            .start
            .get()
            .map_or(SystemTime::now(), |s| SystemTime::now() - s.elapsed());
        RunOutput {
            recorder: self.meter.take_recorder(),
            timeseries,
            measured_start,
            pacing: self.intended.map(|i| self.meter.pacing(i)),
            calls: self.meter.totals().calls,
            cpu,
            reroutes: self.reroutes.load(Ordering::Relaxed),
            history: std::mem::take(&mut *self.env.history.lock().unwrap()),
            started,
        }
    }
}

/// The Goose attack: a setup transaction, one transaction per operation of the mix, and a
/// plan that holds every user for the run.
fn attack(plan: &RunPlan, ctx: &Arc<Ctx>, mix: &Mix) -> anyhow::Result<Box<GooseAttack>> {
    let s = &plan.scenario;
    let mut scenario = goose::goose::Scenario::new("chat");
    let c = ctx.clone();
    scenario = scenario.register_transaction(
        Transaction::new(Arc::new(move |user| Box::pin(on_start(c.clone(), user))))
            .set_name("setup")
            .set_on_start(),
    );
    for &(op, w) in &mix.weights {
        let c = ctx.clone();
        scenario = scenario.register_transaction(
            Transaction::new(Arc::new(move |user| {
                Box::pin(transaction(c.clone(), user, op))
            }))
            .set_name(op.name())
            .set_weight(w)?,
        );
    }
    let think = s.load.think_time;
    if s.load.model == Model::Closed && think.dist == ThinkDist::Fixed && !think.mean.0.is_zero() {
        scenario = scenario.set_wait_time(think.mean.0, think.mean.0)?;
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
    let end = ctx.end;
    let hold = end.as_secs() + u64::from(end.subsec_nanos() > 0) + 3;
    let users = ctx.users;
    Ok(GooseAttack::initialize_with_config(config)?
        .register_scenario(scenario)
        .set_scheduler(GooseScheduler::RoundRobin)
        .set_default(
            GooseDefault::TestPlan,
            format!("{users},0s;{users},{hold}s;0,0s").as_str(),
        )?)
}

/// A user's setup: its route (connections are made on its first call), its caller state,
/// its place in the schedule and the cycle; then every user waits for the others.
async fn on_start(ctx: Arc<Ctx>, user: &mut GooseUser) -> TransactionResult {
    let u = ctx.first_user + user.weighted_users_index % ctx.users;
    let total = ctx.total_users;
    let route = Route::new(
        ctx.env.system,
        ctx.endpoints.clone(),
        ctx.routing,
        ctx.leader.as_deref(),
        u,
        ctx.topology.clone(),
    );
    user.set_session_data(UserState {
        route,
        caller: Caller::new(&ctx.env, u, total, ctx.seed, ctx.client_base + u as u64),
        times: ctx.schedule.as_ref().map(|s| s.user_times(u, total)),
        think_rng: {
            use rand::SeedableRng;
            // Apart from the user's call rng (whose draws stay as they were).
            rand_chacha::ChaCha8Rng::seed_from_u64(
                ctx.seed
                    ^ 0x7417_4B00_0000_0000
                    ^ (u as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9),
            )
        },
        skip: u * ctx.cycle / total,
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

/// One transaction of `op`: wait for the intended send time (open model) and any back-off,
/// call, record.
async fn transaction(ctx: Arc<Ctx>, user: &mut GooseUser, op: Op) -> TransactionResult {
    if ctx.cancel.load(Ordering::Relaxed) {
        goose::trigger_killswitch("interrupted");
        tokio::time::sleep(Duration::from_millis(20)).await;
        return Ok(());
    }
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
    // A back-off after a failure holds the send back further.
    let held = st.route.held_until().filter(|h| *h > intended);
    let due = held.unwrap_or(intended);
    match &ctx.pacer {
        Some(pacer) => pacer.wait_until(due).await,
        None if due > Instant::now() => tokio::time::sleep_until(due.into()).await,
        None => {}
    }
    let sent = Instant::now();
    // Closed model: the call starts now; its latency is its service time.
    let intended = if st.times.is_some() { intended } else { sent };
    let client = st.route.client().await;
    let result = ops::call(op, &ctx.env, &mut st.caller, client.as_ref().ok()).await;
    let done = Instant::now();
    if st.route.after(result.as_ref().err(), done) {
        ctx.reroutes.fetch_add(1, Ordering::Relaxed);
    }
    ctx.meter
        .record(op, intended, held, sent, done, result.as_ref().err());
    let think = ctx.think.map(|t| t.draw(&mut st.think_rng));
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
    if let Some(pause) = think {
        // Not past the run's end: a long exponential pause would only hold Goose's stop.
        let until = (Instant::now() + pause).min(start + ctx.end);
        tokio::time::sleep_until(until.into()).await;
    }
    match failure {
        None => Ok(()),
        Some(f) => Err(Box::new(TransactionError::Custom(f.name()))),
    }
}

/// CPU time (user + system) this process has used so far; zero if the kernel will not say.
fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    use nix::sys::time::{TimeVal, TimeValLike};
    let us = |t: TimeVal| Duration::from_micros(t.num_microseconds().max(0) as u64);
    getrusage(UsageWho::RUSAGE_SELF)
        .map_or(Duration::ZERO, |u| us(u.user_time()) + us(u.system_time()))
}
