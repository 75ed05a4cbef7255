//! `loadgen bench`: one whole run, from a scenario file to a results folder.
//!
//! 1. Read the scenario (with `--replicas` and `--set` applied) and name the run
//!    (`<UTC time>-<scenario>-r<replicas>`, so names sort by time).
//! 2. Start a fresh local cluster of `telegraft` replicas on free loopback ports, with data
//!    directories inside the run's folder (or use `--target`, an already running cluster).
//! 3. Wait for a leader every replica agrees on, create the dataset, run warm-up and the
//!    measured load ([`crate::runner`]).
//! 4. Read every replica's status (including its state digest), stop the cluster, keep the
//!    replicas' logs and drop their data, and write the results folder ([`crate::results`]).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use telegraft::admin;
use telegraft::launcher::LocalCluster;

use crate::check::{self, Event};
use crate::client;
use crate::faults;
use crate::results::{
    self, CheckSummary, Cluster, Generator, LeaderChange, Machine, NodeEnd, RateStep, Summary,
    Versions,
};
use crate::runner::{self, RunPlan};
use crate::scenario::{Model, Routing, Scenario};
use crate::schedule::Schedule;
use crate::world;
use telegraft::proto::chat::{Consistency as PbConsistency, GetMessagesRequest};

pub struct BenchArgs {
    pub scenario: PathBuf,
    pub replicas: Option<u32>,
    pub overrides: Vec<String>,
    /// Drive these replicas instead of starting a cluster.
    pub target: Option<Vec<String>>,
    pub results_dir: PathBuf,
    /// The `telegraft` binary; by default the one next to this program.
    pub telegraft: Option<PathBuf>,
    pub keep_data: bool,
    pub progress: bool,
}

pub struct BenchOutcome {
    pub dir: PathBuf,
    pub summary: Summary,
}

/// The `telegraft` binary: `--telegraft`, or the one built next to `loadgen`.
pub fn find_telegraft(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("--telegraft {}: no such file", p.display());
    }
    let exe = std::env::current_exe().context("locating loadgen")?;
    let mut dirs: Vec<PathBuf> = exe.parent().map(Path::to_path_buf).into_iter().collect();
    // Test binaries live one level down, in `deps/`.
    if let Some(up) = exe.parent().and_then(Path::parent) {
        dirs.push(up.to_path_buf());
    }
    dirs.into_iter()
        .map(|d| d.join("telegraft"))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "cannot find the telegraft binary next to {}: build it with \
                 `cargo build --release --bin telegraft` or pass --telegraft PATH",
                exe.display()
            )
        })
}

/// A base port with `n` free consecutive loopback ports after it.
fn free_ports(n: u16) -> anyhow::Result<u16> {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    for attempt in 0..200u32 {
        let base = 20_000 + ((seed / 7 + attempt * 7_919) % 30_000) as u16;
        let free = (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return Ok(base);
        }
    }
    bail!("no {n} free consecutive loopback ports found")
}

fn run_id(started: SystemTime, name: &str, replicas: u32) -> String {
    let ts: String = humantime::format_rfc3339_seconds(started)
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{ts}-{name}-r{replicas}")
}

/// `to - from` in seconds, negative when `to` is earlier.
fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    let r = |d: Duration| (d.as_secs_f64() * 1000.0).round() / 1000.0;
    match to.duration_since(from) {
        Ok(d) => r(d),
        Err(e) => -r(e.duration()),
    }
}

fn git_rev() -> Option<String> {
    let out = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let rev = out(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty =
        out(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{rev}-dirty") } else { rev })
}

/// Runs one benchmark and writes its results folder.
pub async fn bench(args: BenchArgs) -> anyhow::Result<BenchOutcome> {
    let mut overrides = args.overrides.clone();
    if let Some(r) = args.replicas {
        overrides.push(format!("replicas={r}"));
    }
    let scenario = Scenario::load(&args.scenario, &overrides)?;
    let started = SystemTime::now();
    let replicas = match &args.target {
        Some(t) => t.len() as u32,
        None => scenario.replicas,
    };
    let id = run_id(started, &scenario.name, replicas);
    let mut dir = args.results_dir.join(&id);
    let mut n = 1;
    while dir.exists() {
        n += 1;
        dir = args.results_dir.join(format!("{id}-{n}"));
    }
    let run_id = dir.file_name().unwrap().to_string_lossy().to_string();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!("loadgen: run {run_id} -> {}", dir.display());

    if args.target.is_some() && !scenario.faults.is_empty() {
        bail!(
            "faults need a cluster loadgen starts itself: drop --target or the scenario's faults"
        );
    }
    // The cluster: started here, or given.
    let mut local = None;
    let endpoints = match &args.target {
        Some(t) => t.clone(),
        None => {
            let exe = find_telegraft(args.telegraft.as_deref())?;
            let base = free_ports(replicas as u16)?;
            // Partitions go through an admin RPC each replica refuses unless asked to allow it.
            let extra: Vec<String> = scenario
                .faults
                .iter()
                .any(|f| f.action == crate::scenario::Action::Partition)
                .then(|| "--enable-fault-injection".to_string())
                .into_iter()
                .collect();
            let c = LocalCluster::start(&exe, u64::from(replicas), base, &dir.join("data"), &extra)
                .with_context(|| format!("starting {replicas} replicas of {}", exe.display()))?;
            let endpoints = c.addrs.values().cloned().collect();
            local = Some(Arc::new(Mutex::new(c)));
            endpoints
        }
    };
    let outcome = drive(
        &scenario,
        &endpoints,
        local.clone(),
        &args,
        &run_id,
        started,
    )
    .await;
    let nodes_at_end = final_status(&endpoints).await;
    if let Some(c) = local {
        let keep = args.keep_data;
        let logs = dir.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = c.lock().unwrap();
            c.stop(Duration::from_secs(10));
            keep_logs(&c, &logs, keep)
        })
        .await??;
    }
    let (out, leader, leaders, checked, faults) = outcome?;

    let duration_s = scenario.duration().as_secs_f64();
    let ops = results::op_results(&out.recorder, duration_s);
    let slo = results::evaluate_slos(&scenario, &ops);
    let summary = Summary {
        run_id: run_id.clone(),
        scenario: scenario.name.clone(),
        scenario_file: args.scenario.display().to_string(),
        description: scenario.description.clone(),
        replicas,
        model: match scenario.load.model {
            Model::Open => "open",
            Model::Closed => "closed",
        }
        .into(),
        offered_rate: out
            .pacing
            .as_ref()
            .map(|p| (p.intended as f64 / duration_s * 10.0).round() / 10.0),
        offered_schedule: Schedule::from_scenario(&scenario)
            .map(|sch| {
                sch.measured_segments(scenario.load.warmup.0)
                    .into_iter()
                    .map(|(a, b, rate)| RateStep {
                        start_s: a.as_secs_f64(),
                        end_s: b.as_secs_f64(),
                        rate,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        users: scenario.load.users,
        seed: scenario.seed,
        warmup_s: scenario.load.warmup.0.as_secs_f64(),
        duration_s,
        started_at: humantime::format_rfc3339_seconds(started).to_string(),
        git_rev: git_rev(),
        machine: Machine::detect(&args.results_dir),
        ops,
        slo,
        generator: Generator {
            calls: out.calls,
            cpu_s: out.cpu.as_secs_f64(),
            cpu_us_per_call: (out.cpu.as_secs_f64() * 1e6 / out.calls.max(1) as f64 * 10.0).round()
                / 10.0,
            intended: out.pacing.as_ref().map(|p| p.intended),
            sent: out.pacing.as_ref().map(|p| p.sent),
            late: out.pacing.as_ref().map(|p| p.late),
            lateness_ms: out.pacing.as_ref().map(|p| p.lateness_ms.into()),
            warning: out.pacing.as_ref().and_then(|p| p.warning()),
            connect_failures: out.connect_failures,
        },
        cluster: Cluster {
            kind: if args.target.is_some() {
                "external"
            } else {
                "local"
            }
            .into(),
            endpoints: endpoints.clone(),
            leader_at_start: leader,
            nodes_at_end,
            leader_changes: leaders
                .into_iter()
                .map(|(t, node, term)| LeaderChange {
                    at_s: seconds_between(out.measured_start, t),
                    node,
                    term,
                })
                .collect(),
        },
        versions: Versions {
            loadgen: env!("CARGO_PKG_VERSION").into(),
        },
        check: checked.as_ref().map(CheckSummary::of),
        faults,
    };
    let measured_unix = out
        .measured_start
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let mut history = String::new();
    for e in &out.history {
        history.push_str(&serde_json::to_string(e)?);
        history.push('\n');
    }
    std::fs::write(dir.join("history.jsonl"), history)?;
    let mut elle = String::new();
    for op in check::to_elle(&out.history) {
        elle.push_str(&op.to_string());
        elle.push('\n');
    }
    std::fs::write(dir.join("history.elle.jsonl"), elle)?;
    if let Some(report) = &checked {
        std::fs::write(
            dir.join("check.json"),
            serde_json::to_string_pretty(report)? + "\n",
        )?;
    }
    results::write(
        &dir,
        &summary,
        &scenario,
        &out.recorder,
        &out.timeseries,
        measured_unix,
    )?;
    Ok(BenchOutcome { dir, summary })
}

/// What [`drive`] returns: the load's output, the leader at the start, every leader seen
/// (wall time, node, term), the history check (when the target could be checked), and the
/// faults injected.
type Driven = (
    runner::RunOutput,
    Option<String>,
    Vec<(SystemTime, u64, u64)>,
    Option<check::Report>,
    Vec<faults::FaultRecord>,
);

/// Leader, dataset, load. Separate so the cluster is stopped whatever happens here.
async fn drive(
    scenario: &Scenario,
    endpoints: &[String],
    cluster: Option<Arc<Mutex<LocalCluster>>>,
    args: &BenchArgs,
    run_id: &str,
    started: SystemTime,
) -> anyhow::Result<Driven> {
    // A cluster we started must elect a leader first; a given one is asked only when the
    // scenario routes to the leader.
    let leader = if cluster.is_some() || scenario.routing == Routing::Leader {
        let l = admin::wait_for_leader(endpoints, Duration::from_secs(20))
            .await
            .map_err(anyhow::Error::msg)?
            .addr;
        eprintln!("loadgen: leader is {l}");
        Some(l)
    } else {
        None
    };
    let nanos = started
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    // Exactly-once client ids unique to this run: setup uses base..base+32, users base+1000...
    let client_base = (nanos & 0xFFFF_FFFF) << 20;
    let tag = format!("{:x}", nanos & 0xFF_FFFF);
    let setup = client::connect(leader.as_deref().unwrap_or(&endpoints[0])).await?;
    let d = &scenario.dataset;
    eprintln!(
        "loadgen: creating {} users and {} chats of {} members",
        d.users, d.chats, d.members_per_chat
    );
    let mut rng = ChaCha8Rng::seed_from_u64(scenario.seed);
    let world = world::create_dataset(
        &setup,
        d,
        &mut rng,
        &tag,
        client_base,
        scenario.load.timeout.0,
    )
    .await
    .context("creating the dataset")?;
    let dir = args.results_dir.join(run_id);
    let plan = RunPlan {
        scenario: scenario.clone(),
        endpoints: endpoints.to_vec(),
        leader: leader.clone(),
        world: Arc::new(world),
        tag,
        client_base: client_base + 1000,
        goose_reports: vec![
            dir.join("goose-report.html").display().to_string(),
            dir.join("goose-report.json").display().to_string(),
        ],
        progress: args.progress,
        start: Arc::new(OnceLock::new()),
    };
    let injector = cluster.map(|c| {
        tokio::spawn(faults::inject(
            c,
            scenario.faults.clone(),
            plan.start.clone(),
            scenario.load.warmup.0,
        ))
    });
    // Watch the leader through the run, for the report's markers (only replicas that serve
    // Admin.Status answer; a fake target simply yields no changes).
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(watch_leader(endpoints.to_vec(), stopped));
    let world = plan.world.clone();
    let out = runner::run(plan).await;
    let _ = stop.send(true);
    let leaders = watcher.await.unwrap_or_default();
    let mut out = out?;
    let mut fault_records = match injector {
        Some(task) => task.await.unwrap_or_default(),
        None => Vec::new(),
    };
    faults::measure_unavailability(&mut fault_records, &out.history);
    // The whole of every chat, from every replica, for the history checker.
    let finals = read_final(endpoints, &world).await;
    let checked = match finals {
        Some(finals) => {
            out.history.extend(finals);
            Some(check::check(&out.history))
        }
        None => None,
    };
    Ok((out, leader, leaders, checked, fault_records))
}

/// Waits until the replicas have applied the same entries, then records each replica's state
/// digest and reads every chat whole: once linearizably, then from each replica's own state
/// (LOCAL). `None` when the target does not
/// answer Admin.Status (not a telegraft cluster): there is nothing to check against.
async fn read_final(endpoints: &[String], world: &world::World) -> Option<Vec<Event>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let views = admin::statuses(endpoints).await;
        if views.is_empty() {
            return None;
        }
        let settled = views.len() == endpoints.len()
            && views
                .iter()
                .all(|v| v.applied_index == views[0].applied_index)
            && views.iter().all(|v| v.commit_index == v.applied_index);
        if settled || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut events: Vec<Event> = admin::statuses(endpoints)
        .await
        .into_iter()
        .map(|v| Event::Digest {
            replica: v.addr,
            applied_index: v.applied_index,
            digest: v.state_digest,
        })
        .collect();
    // Each chat linearizably (through the leader), then from every replica's own state.
    let reads = std::iter::once((endpoints[0].clone(), PbConsistency::Linearizable))
        .chain(endpoints.iter().map(|a| (a.clone(), PbConsistency::Local)));
    for (addr, consistency) in reads {
        let Ok(mut c) = client::connect(&addr).await else {
            continue;
        };
        let replica = match consistency {
            PbConsistency::Linearizable => format!("{addr} (linearizable)"),
            _ => addr.clone(),
        };
        for (chat, member) in world.chats_with_a_member() {
            let req = GetMessagesRequest {
                user_id: member,
                messages_after: Some(prost_types::Timestamp::default()),
                consistency: consistency as i32,
            };
            if let Ok(r) = client::with_timeout(Duration::from_secs(10), c.get_messages(req)).await
            {
                events.push(Event::Final {
                    replica: replica.clone(),
                    chat,
                    messages: runner::seen(&r.messages)
                        .into_iter()
                        .filter(|m| m.chat == chat)
                        .collect(),
                });
            }
        }
    }
    Some(events)
}

/// Who leads, and since when: one entry per change seen by polling every replica's status.
async fn watch_leader(
    endpoints: Vec<String>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<(SystemTime, u64, u64)> {
    let mut seen: Vec<(SystemTime, u64, u64)> = Vec::new();
    loop {
        let views = admin::statuses(&endpoints).await;
        if let Some(v) = admin::newest_leader(&views)
            && seen
                .last()
                .is_none_or(|&(_, id, term)| (id, term) != (v.node_id, v.term))
        {
            seen.push((SystemTime::now(), v.node_id, v.term));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => return seen,
        }
    }
}

async fn final_status(endpoints: &[String]) -> Vec<NodeEnd> {
    admin::statuses(endpoints)
        .await
        .into_iter()
        .map(|v| NodeEnd {
            node_id: v.node_id,
            addr: v.addr,
            role: v.role_name().to_string(),
            term: v.term,
            commit_index: v.commit_index,
            applied_index: v.applied_index,
            state_digest: v.state_digest,
        })
        .collect()
}

/// Moves each replica's log to `nodes/node-N.log` and removes its data unless asked to keep it.
fn keep_logs(cluster: &LocalCluster, dir: &Path, keep_data: bool) -> anyhow::Result<()> {
    let nodes = dir.join("nodes");
    std::fs::create_dir_all(&nodes)?;
    for id in cluster.addrs.keys() {
        let log = cluster.node_dir(*id).join("node.log");
        if log.exists() {
            std::fs::copy(&log, nodes.join(format!("node-{id}.log")))
                .with_context(|| format!("keeping {}", log.display()))?;
        }
    }
    if !keep_data {
        std::fs::remove_dir_all(&cluster.data_dir)
            .with_context(|| format!("removing {}", cluster.data_dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_sort_by_time_and_name_the_run() {
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            run_id(t, "chat default", 5),
            "20270115T080000Z-chat-default-r5"
        );
        let later = run_id(t + Duration::from_secs(1), "a", 1);
        assert!(run_id(t, "z", 9) < later);
    }
}
