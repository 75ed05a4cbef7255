//! `loadgen bench`: one whole run, from a scenario file to a results folder, in phases:
//!
//! 1. read the scenario (with `--replicas` and `--set` applied), name the run and create its
//!    folder ([`RunDir`]: `<UTC time>-<scenario>-r<replicas>`, so names sort by time);
//! 2. start a fresh local cluster on free loopback ports, its data inside the run's folder,
//!    or take the one given with `--target` ([`crate::control`]);
//! 3. drive it: wait for a leader every replica agrees on, create the dataset, run warm-up
//!    and the measured load ([`crate::load`]) while faults fire and the leader is watched,
//!    then read the final state and check the history ([`crate::history`]), unless the
//!    scenario says `check: off`; through warm-up and the measured window, sample the
//!    replicas' metrics and every process's resources each second ([`crate::sample`]);
//! 4. read every replica's status, stop the cluster, keep the replicas' logs and drop their
//!    data;
//! 5. sum the run up and write the results folder ([`crate::results`]).
//!
//! One status poller serves the whole run (at most 5 `Admin.Status` calls a second per
//! replica). The cluster is stopped whatever happens in step 3. SIGINT and SIGTERM stop
//! step 3 where it is (the load ends early, the final reads are skipped), and steps 4 and 5
//! still run: the results folder is written, marked `interrupted`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::control::{
    self, DockerSpec, FaultRecord, Interrupt, LeaderSeen, LeaderWatch, Replicas, StatusPoller,
};
use crate::exit::UsageError;
use crate::history::{self, Report};
use crate::load::{self, Population, RunOutput, RunPlan, Tick};
use crate::results::{ClusterEnd, RunDir, RunFacts, Summary};
use crate::sample::{Sampler, Samples};
use crate::scenario::{Action, Deploy, Routing, Scenario, Switch, System};
use crate::workers::WorkerArgs;

/// How long a fresh cluster may take to elect its first leader.
const FIRST_LEADER: Duration = Duration::from_secs(20);

/// How long replicas get to stop before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct BenchArgs {
    pub scenario: PathBuf,
    pub replicas: Option<u32>,
    pub overrides: Vec<String>,
    /// Drive these replicas instead of starting a cluster.
    pub target: Option<Vec<String>>,
    /// With `target`: their metrics endpoints, scraped each second (the Nth is `node-N`).
    pub target_metrics: Vec<String>,
    pub results_dir: PathBuf,
    /// The `telegraft` binary; by default the one next to this program.
    pub telegraft: Option<PathBuf>,
    /// The `etcd` binary, for `system: etcd` ([`control::find_etcd`]).
    pub etcd: Option<PathBuf>,
    pub keep_data: bool,
    pub progress: bool,
    /// Run as one worker of several (`loadgen worker`), against `target`.
    pub worker: Option<WorkerArgs>,
    /// Drive the load from this many worker processes (`--workers N`), merged into one run.
    pub workers: u32,
    /// With `target`: reach it over TLS, trusting `DIR/ca.pem` and presenting the admin
    /// (else the client) certificate of `DIR` (`telegraft certs`).
    pub tls_dir: Option<PathBuf>,
}

/// Who makes the calls of a run.
#[derive(Clone, Copy)]
pub(crate) enum Mode<'a> {
    /// This process, alone.
    Single,
    /// This process, as one worker of several ([`crate::workers`]).
    Worker(&'a WorkerArgs),
    /// N worker processes this one starts, then merges.
    Coordinator(u32),
}

pub struct BenchOutcome {
    pub dir: PathBuf,
    pub summary: Summary,
}

/// How long a fresh look at every replica may take at the end.
const LAST_LOOK: Duration = Duration::from_secs(5);

/// Runs one benchmark and writes its results folder.
pub async fn bench(args: BenchArgs) -> anyhow::Result<BenchOutcome> {
    let interrupt = Interrupt::install();
    let scenario = read_scenario(&args)?;
    let started = SystemTime::now();
    let replicas = match &args.target {
        Some(t) => t.len() as u32,
        None => scenario.replicas,
    };
    let run = match &args.worker {
        Some(w) => RunDir::create_at(&w.out)?,
        None => RunDir::create(&args.results_dir, started, &scenario.name, replicas)?,
    };
    eprintln!("loadgen: run {} -> {}", run.run_id(), run.path().display());
    // On containers with a CPU limit for the generator, even one worker runs in a
    // container of its own, so that the limit holds.
    let contained = scenario.deploy == Deploy::Docker && scenario.resources.loadgen_cpus.is_some();
    let mode = match (&args.worker, args.workers) {
        (Some(w), _) => Mode::Worker(w),
        (None, n) if n > 1 || contained => Mode::Coordinator(n),
        _ => Mode::Single,
    };

    let cluster = start_cluster(&args, &scenario, &run, replicas)?;
    let summary = run_on(
        RunOn {
            run_id: run.run_id(),
            scenario: &scenario,
            scenario_file: &args.scenario,
            cluster: &cluster,
            run: &run,
            results_root: &args.results_dir,
            progress: args.progress,
            started,
            interrupt: &interrupt,
            mode,
        },
        None,
    )
    .await;
    control::end_sessions();
    if let Some(stopped) = cluster.stop(STOP_GRACE, args.keep_data).await? {
        run.keep_node_logs(&stopped.logs)?;
        if !args.keep_data {
            stopped.remove_data()?;
        }
    }
    Ok(BenchOutcome {
        dir: run.path().to_path_buf(),
        summary: summary?,
    })
}

/// One run against a cluster that is up: what [`bench`] does between starting the cluster
/// and stopping it, for `loadgen capacity` too, whose probes share one cluster.
pub(crate) struct RunOn<'a> {
    /// The run's id in its summary (the folder's name for `bench`).
    pub run_id: String,
    pub scenario: &'a Scenario,
    pub scenario_file: &'a std::path::Path,
    pub cluster: &'a Replicas,
    /// The run's folder, created.
    pub run: &'a RunDir,
    pub results_root: &'a std::path::Path,
    pub progress: bool,
    pub started: SystemTime,
    pub interrupt: &'a Interrupt,
    pub mode: Mode<'a>,
}

/// Someone watching a run's seconds, who may stop its load early: the load stops at once
/// when `cancel` is set, and the run goes on to its final reads and check, not marked
/// interrupted.
pub(crate) struct LoadWatch {
    pub ticks: tokio::sync::mpsc::UnboundedSender<Tick>,
    pub cancel: Arc<AtomicBool>,
}

/// Drives the run (leader, dataset, load, final reads, check), looks at every replica, and
/// writes the results folder; returns its summary.
pub(crate) async fn run_on(r: RunOn<'_>, watch: Option<LoadWatch>) -> anyhow::Result<Summary> {
    let poller = Arc::new(StatusPoller::start(
        r.cluster.endpoints(),
        r.scenario.system,
    ));
    let driven = drive(
        r.scenario,
        r.cluster,
        &poller,
        r.run,
        r.progress,
        r.started,
        r.interrupt,
        watch,
        r.mode,
    )
    .await;
    let nodes_at_end = poller.fresh(LAST_LOOK).await.answering();
    poller.stop();
    let driven = driven?;
    let (kind, endpoints) = (r.cluster.kind(), r.cluster.endpoints().to_vec());
    let summary = Summary::of(RunFacts {
        run_id: &r.run_id,
        scenario: r.scenario,
        scenario_file: r.scenario_file,
        replicas: endpoints.len() as u32,
        started: r.started,
        results_root: r.results_root,
        load: &driven.load,
        cluster: ClusterEnd::new(
            kind,
            &endpoints,
            driven.leader,
            nodes_at_end,
            driven.leaders,
            driven.load.measured_start,
            effective_security(r.scenario),
        ),
        check: &driven.check,
        faults: driven.faults,
        interrupted: driven.interrupted,
        samples: &driven.samples,
    });
    let run = r.run;
    if let Mode::Worker(w) = r.mode {
        let share = w.share(r.scenario.load.users);
        crate::workers::WorkerFile::of(w, r.scenario, &driven.load, share).write(run.path())?;
    }
    run.write_samples(&driven.samples)?;
    run.write_history(&driven.load.history)?;
    run.write_check(&driven.check)?;
    let load = &driven.load;
    run.write_measurements(
        &summary,
        r.scenario,
        &load.recorder,
        &load.timeseries,
        load.measured_start,
    )?;
    Ok(summary)
}

/// The scenario file with `--replicas` and `--set` applied; faults need a cluster of ours.
fn read_scenario(args: &BenchArgs) -> anyhow::Result<Scenario> {
    let mut overrides = args.overrides.clone();
    if let Some(r) = args.replicas {
        overrides.push(format!("replicas={r}"));
    }
    let scenario = Scenario::load(&args.scenario, &overrides)?;
    if let Some(t) = &args.target
        && !args.target_metrics.is_empty()
        && args.target_metrics.len() != t.len()
    {
        return Err(UsageError(format!(
            "--target-metrics gives {} addresses for {} --target replicas: give one per replica, \
             in the same order",
            args.target_metrics.len(),
            t.len()
        ))
        .into());
    }
    if let Some(w) = &args.worker {
        w.validate(scenario.load.users).map_err(UsageError)?;
    }
    if args.target.is_some() && scenario.deploy == Deploy::Docker && args.worker.is_none() {
        return Err(UsageError(
            "deploy: docker starts its own containers: drop --target or deploy: docker".into(),
        )
        .into());
    }
    if args.workers > 1 {
        WorkerArgs {
            index: 0,
            of: args.workers,
            start: SystemTime::now(),
            out: PathBuf::new(),
            population: PathBuf::new(),
        }
        .validate(scenario.load.users)
        .map_err(UsageError)?;
    }
    if !scenario.security.is_default() {
        let not_yet = if args.target.is_some() && scenario.security.tls && args.tls_dir.is_none() {
            Some("--target without --tls-dir (the cluster's CA is not given to loadgen)")
        } else if args.workers > 1
            || args.worker.is_some()
            || scenario.resources.loadgen_cpus.is_some()
        {
            Some("--workers or a contained generator (each worker would need every user's session)")
        } else {
            None
        };
        if let Some(what) = not_yet {
            return Err(UsageError(format!(
                "security: {{tls, auth}} runs on a cluster loadgen starts, with one \
                 generator; not with {what}"
            ))
            .into());
        }
    }
    if args.target.is_some() && !scenario.faults.is_empty() {
        return Err(UsageError(
            "faults need a cluster loadgen starts itself: drop --target or the scenario's faults"
                .into(),
        )
        .into());
    }
    Ok(scenario)
}

/// What the run's cluster secured: the scenario's switches, and TLS on containers of
/// Telegraft, which always serve it (`control/docker.rs`).
fn effective_security(scenario: &Scenario) -> crate::scenario::Security {
    let mut s = scenario.security;
    if scenario.deploy == Deploy::Docker && scenario.system == System::Telegraft {
        s.tls = true;
    }
    s
}

/// The cluster: started here (with fault injection on when the scenario partitions), or
/// given.
fn start_cluster(
    args: &BenchArgs,
    scenario: &Scenario,
    run: &RunDir,
    replicas: u32,
) -> anyhow::Result<Replicas> {
    if let Some(t) = &args.target {
        crate::load::sessions::start(scenario.security.auth);
        if let Some(dir) = &args.tls_dir {
            let tls = telegraft::security::tls::operator_config(dir).context("--tls-dir")?;
            telegraft::admin::use_tls_for(t, &tls);
        }
        return Ok(Replicas::given(t.clone(), args.target_metrics.clone())
            .with_tls_dir(args.tls_dir.clone()));
    }
    if scenario.deploy == Deploy::Docker {
        // Containers always serve TLS (the compose file's --tls-dir /certs, with certificates
        // the launcher makes); authentication is the scenario's.
        let node_args = match scenario.system {
            System::Telegraft => {
                let mut a = scenario.cluster.node_args();
                a.extend(control::RunSecurity::for_containers(scenario.security));
                a
            }
            System::Etcd => scenario.cluster.etcd_args(),
        };
        return Replicas::start_docker(DockerSpec {
            system: scenario.system,
            replicas,
            data_dir: &run.data_dir(),
            node_args: &node_args,
            metrics: scenario.metrics.is_on() && scenario.system == System::Telegraft,
            resources: scenario.resources,
        });
    }
    if scenario.system == System::Etcd {
        let exe = control::find_etcd(args.etcd.as_deref())?;
        let args = scenario.cluster.etcd_args();
        return Replicas::start_etcd(&exe, replicas, &run.data_dir(), &args);
    }
    let exe = control::find_telegraft(args.telegraft.as_deref())?;
    let partitions = scenario
        .faults
        .iter()
        .any(|f| f.action == Action::Partition);
    let security = control::RunSecurity::prepare(scenario.security, run.path(), replicas, &[])?;
    let mut node_args = scenario.cluster.node_args();
    node_args.extend(security.node_args.iter().cloned());
    let cluster = Replicas::start(
        &exe,
        replicas,
        &run.data_dir(),
        partitions,
        scenario.metrics.is_on(),
        &node_args,
    )?;
    security.reach(cluster.endpoints())?;
    Ok(cluster)
}

/// What [`drive`] found out.
struct Driven {
    load: RunOutput,
    /// The leader's address at the start, when asked.
    leader: Option<String>,
    /// Every leader seen while the load ran.
    leaders: Vec<LeaderSeen>,
    /// The history check (possibly `skipped` or `incomplete`).
    check: Report,
    faults: Vec<FaultRecord>,
    /// A signal stopped the run early.
    interrupted: bool,
    /// The replicas' metrics and every process's resources, each second of the load.
    samples: Samples,
}

impl Driven {
    /// A run interrupted before its load began.
    fn interrupted(leader: Option<String>) -> Driven {
        Driven {
            load: RunOutput::empty(),
            leader,
            leaders: Vec::new(),
            check: Report::incomplete("interrupted before the load"),
            faults: Vec::new(),
            interrupted: true,
            samples: Samples::default(),
        }
    }
}

/// Leader, dataset, load, final state. Separate so the cluster is stopped whatever happens
/// here.
#[allow(clippy::too_many_arguments)]
async fn drive(
    scenario: &Scenario,
    cluster: &Replicas,
    poller: &Arc<StatusPoller>,
    run: &RunDir,
    progress: bool,
    started: SystemTime,
    interrupt: &Interrupt,
    watch: Option<LoadWatch>,
    mode: Mode<'_>,
) -> anyhow::Result<Driven> {
    let endpoints = cluster.endpoints();
    // Workers share one client id base, from their shared start: user `u` is client
    // `users + u` in whichever worker runs it.
    let ids = match mode {
        Mode::Worker(w) => RunIds::of(w.start),
        _ => RunIds::of(started),
    };
    let setup = async {
        // A cluster we started must elect a leader first; a given one is asked only when
        // the scenario routes to the leader.
        let leader = if cluster.local().is_some() || scenario.routing == Routing::Leader {
            let l = control::wait_for_leader(poller, FIRST_LEADER).await?;
            if cluster.local().is_some() {
                control::wait_for_all(poller, FIRST_LEADER).await?;
            }
            eprintln!("loadgen: leader is {l}");
            Some(l)
        } else {
            None
        };
        let setup_at = leader.as_deref().unwrap_or(&endpoints[0]);
        let population = match mode {
            // Worker 0 creates the dataset unless it is there already (`--workers` puts it
            // there); the others wait for it.
            Mode::Worker(w) if w.index == 0 && !w.population.exists() => {
                let p = create_population(scenario, setup_at, &ids).await?;
                crate::workers::write_population(&w.population, &p)?;
                p
            }
            Mode::Worker(w) => crate::workers::read_population(&w.population, w.start).await?,
            _ => create_population(scenario, setup_at, &ids).await?,
        };
        // Pollers start from the system's "now": a revision for etcd, a time for Telegraft.
        let start_cursor = crate::system::ChatConn::connect(scenario.system, setup_at)
            .await?
            .start_cursor()
            .await
            .map_err(|s| anyhow::anyhow!("reading the start cursor: {}", s.message()))?;
        anyhow::Ok((leader, population, start_cursor))
    };
    let (leader, population, start_cursor) = tokio::select! {
        r = setup => r?,
        _ = interrupt.fired() => return Ok(Driven::interrupted(None)),
    };
    let population = Arc::new(population);
    // The chats the load starts with; a worker's later ones are its own.
    let dataset_chats = population.chat_count();
    // A watcher stops the load with a flag of its own, which an interrupt also sets, so that
    // a run it cuts short is not taken for an interrupted one.
    let (cancel, ticks, relay) = match watch {
        None => (interrupt.flag(), None, None),
        Some(w) => {
            let (flag, mut stop) = (w.cancel.clone(), interrupt.receiver());
            let relay = tokio::spawn(async move {
                while !*stop.borrow_and_update() {
                    if stop.changed().await.is_err() {
                        return;
                    }
                }
                flag.store(true, Ordering::Relaxed);
            });
            (w.cancel, Some(w.ticks), Some(relay))
        }
    };
    let plan = RunPlan {
        scenario: scenario.clone(),
        endpoints: endpoints.to_vec(),
        leader: leader.clone(),
        population: population.clone(),
        tag: ids.tag.clone(),
        client_base: ids.users,
        goose_reports: run.goose_reports(),
        progress,
        start: Arc::new(OnceLock::new()),
        topology: poller.topology(),
        cancel,
        ticks,
        start_cursor,
        share: match mode {
            Mode::Worker(w) => Some(w.share(scenario.load.users)),
            _ => None,
        },
    };
    let injector = cluster.local().map(|c| {
        tokio::spawn(control::inject(
            c,
            poller.clone(),
            scenario.faults.clone(),
            plan.start.clone(),
            scenario.load.warmup.0,
            interrupt.receiver(),
        ))
    });
    let sampler = Sampler::start(
        cluster.sample_targets(),
        plan.start.clone(),
        scenario.load.warmup.0,
        scenario.duration(),
    )?;
    let watch = LeaderWatch::start(poller);
    let load = match mode {
        Mode::Single => load::run(plan).await,
        Mode::Worker(w) => match crate::workers::wait_for_start(w.start).await {
            Ok(()) => load::run(plan).await,
            Err(e) => Err(e),
        },
        Mode::Coordinator(n) => {
            coordinate(
                n,
                scenario,
                cluster,
                &population,
                run,
                &plan.start,
                interrupt,
            )
            .await
        }
    };
    if let Some(relay) = relay {
        relay.abort();
    }
    let samples = sampler.finish().await;
    let leaders = watch.finish().await;
    let mut load = load?;
    let mut faults = match injector {
        Some(task) => task.await.unwrap_or_default(),
        None => Vec::new(),
    };
    control::measure_unavailability(&mut faults, &load.history);
    let check = if scenario.check == Switch::Off {
        Report::skipped("the scenario says check: off")
    } else if let Mode::Worker(w) = mode {
        // After every worker's last call: then this worker reads back the chats only it
        // knows of (worker 0, the dataset's too), for the merged check.
        if let Ok(wait) = w.everyone_done(scenario).duration_since(SystemTime::now()) {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = interrupt.fired() => {}
            }
        }
        if !interrupt.is_set() {
            let mine = if w.index == 0 {
                population.chats_from(0)
            } else {
                population.chats_from(dataset_chats)
            };
            let finals = control::read_final(poller, &mine, scenario.system).await;
            load.history.extend(finals);
        }
        Report::skipped(
            "a worker's history is checked whole, merged with the others' (loadgen merge)",
        )
    } else if let Mode::Coordinator(_) = mode {
        // The workers read the final state; their merged history is whole.
        if interrupt.is_set() {
            Report::incomplete("interrupted during the load")
        } else {
            history::check(&load.history)
        }
    } else if interrupt.is_set() {
        Report::incomplete("interrupted during the load")
    } else {
        // The whole of every chat, from every live replica, for the history checker.
        tokio::select! {
            finals = control::read_final(poller, &population, scenario.system) => {
                load.history.extend(finals);
                history::check(&load.history)
            }
            _ = interrupt.fired() => Report::incomplete("interrupted during the final reads"),
        }
    };
    Ok(Driven {
        load,
        leader,
        leaders,
        check,
        faults,
        interrupted: interrupt.is_set(),
        samples,
    })
}

/// `--workers N`: publishes the dataset, starts N `loadgen worker` processes on a shared
/// start two seconds ahead (which is also this run's zero, for the faults, the sampler and
/// the leader watch), waits for them all and merges their folders. A worker that fails
/// fails the run (exit 1), named.
async fn coordinate(
    n: u32,
    scenario: &Scenario,
    cluster: &Replicas,
    population: &Population,
    run: &RunDir,
    start: &Arc<OnceLock<std::time::Instant>>,
    interrupt: &Interrupt,
) -> anyhow::Result<RunOutput> {
    let workers_dir = run.path().join("workers");
    let population_file = workers_dir.join("population.json");
    crate::workers::write_population(&population_file, population)?;
    let scenario_file = workers_dir.join("scenario.yaml");
    // The faults are this process's to inject; the workers only make calls.
    let mut theirs = scenario.clone();
    theirs.faults.clear();
    std::fs::write(&scenario_file, theirs.to_yaml())?;
    // Containers take longer to start than processes.
    let lead = Duration::from_secs(if cluster.docker_network().is_some() {
        6
    } else {
        2
    });
    let at = SystemTime::now() + lead;
    let _ = start.set(std::time::Instant::now() + lead);
    let endpoints = cluster.endpoints();
    let spawned = match cluster.docker_network() {
        Some((network, project)) => {
            eprintln!(
                "loadgen: {n} worker containers{}, starting together in {} s",
                scenario
                    .resources
                    .loadgen_cpus
                    .map(|c| format!(" of {c} CPUs each"))
                    .unwrap_or_default(),
                lead.as_secs()
            );
            crate::workers::spawn_docker(
                n,
                &scenario_file,
                endpoints,
                at,
                &workers_dir,
                &population_file,
                (&network, &project),
                scenario.resources.loadgen_cpus,
                cluster.docker_certs().as_deref(),
            )?
        }
        None => {
            eprintln!(
                "loadgen: {n} workers, starting together in {} s",
                lead.as_secs()
            );
            crate::workers::spawn_local(
                n,
                &scenario_file,
                cluster.tls_dir(),
                endpoints,
                at,
                &workers_dir,
                &population_file,
            )?
        }
    };
    let dirs = tokio::select! {
        d = crate::workers::wait_all(spawned, &workers_dir) => d?,
        // Dropping the children kills them.
        _ = interrupt.fired() => anyhow::bail!("interrupted while the workers ran"),
    };
    Ok(crate::workers::merge_load(&dirs)?.load)
}

/// Names and exactly-once client ids unique to this run.
struct RunIds {
    /// Makes created users' and chats' names unique.
    tag: String,
    /// The dataset's setup uses client ids `setup..setup + 32`.
    setup: u64,
    /// The load's users use `users..`.
    users: u64,
}

impl RunIds {
    fn of(started: SystemTime) -> RunIds {
        let nanos = started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let base = (nanos & 0xFFFF_FFFF) << 20;
        RunIds {
            tag: format!("{:x}", nanos & 0xFF_FFFF),
            setup: base,
            users: base + 1000,
        }
    }
}

/// Creates the scenario's dataset through the replica at `addr`.
async fn create_population(
    scenario: &Scenario,
    addr: &str,
    ids: &RunIds,
) -> anyhow::Result<Population> {
    let setup = crate::system::ChatConn::connect(scenario.system, addr).await?;
    let d = &scenario.dataset;
    eprintln!(
        "loadgen: creating {} users and {} chats of {} members",
        d.users, d.chats, d.members_per_chat
    );
    let mut rng = ChaCha8Rng::seed_from_u64(scenario.seed);
    load::create_dataset(
        &setup,
        d,
        &mut rng,
        &ids.tag,
        ids.setup,
        scenario.load.timeout.0,
    )
    .await
    .context("creating the dataset")
}
