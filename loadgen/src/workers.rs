//! Several generators, one result: `loadgen worker`, `loadgen merge` and
//! `loadgen bench --workers N`.
//!
//! Goose 0.19 has no distributed mode, so the split is ours, and it is made so that N workers
//! together make exactly the calls one generator would:
//! - **Users, not rates, are split.** Worker `I` of `N` runs a contiguous block of the
//!   scenario's `load.users` ([`Share`]); each of its users keeps the schedule, seed, client
//!   id and place in the cycle it has in a single generator. The offered rate is then split
//!   by construction, and the intended calls of N workers add up to one generator's, call
//!   for call.
//! - **One shared start.** Every worker is given the same start `T` (`--start`, Unix
//!   milliseconds or RFC 3339) and begins its schedule then, so their seconds line up. Each
//!   records its own wall-clock start in `worker.json`; the merge places every worker's
//!   history on the shared start's time base, and the history checker widens every real-time
//!   comparison between calls by a stated clock-skew bound (`--clock-skew-ms`, 0 on one
//!   machine).
//! - **One dataset.** Worker 0 creates the dataset and publishes it in a population file
//!   (`--population`, on a shared volume); the others wait for it. `bench --workers` creates
//!   it itself first. Chats and joins a worker makes during the load are known to that worker
//!   only, so each worker reads back, after everyone's schedule has ended (T + warm-up +
//!   duration + timeout + 3 s), the chats it created; worker 0 also reads the dataset's.
//! - **Faults** are the coordinator's (`bench --workers`): the workers run the scenario
//!   without them, and the merged history is on the same zero as the injected faults.
//! - **Merging** ([`merge`]) adds the workers' histograms, whole and second by second
//!   (`Histogram::add`; percentiles are never averaged), sums their counts, joins their
//!   histories, checks the whole history once and writes one results folder with the same
//!   contract as a single run's. A worker's own folder holds the same files, with its
//!   check skipped (its history alone is not a whole history), plus `worker.json`.
//!
//! What the merge cannot make whole: the pacing figures (how late sends went out) are the
//! worst worker's percentiles, not the merged distribution's, and are marked as such.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::history::{self, Event};
use crate::load::{ChatInfo, Pacing, Percentiles, Population, Recorder, RecorderDump, RunOutput};
use crate::results::{ClusterEnd, RunDir, RunFacts, Summary, files};
use crate::sample::Samples;
use crate::scenario::Scenario;

pub use crate::load::Share;

/// The file a worker writes beside the run contract.
pub const WORKER_FILE: &str = "worker.json";

/// The margin after everyone's last call may have ended before the final reads: a worker
/// begins its schedule when all its users have started, a little after the shared start.
/// Clocks of several hosts must agree within it, less that delay (NTP keeps them within
/// milliseconds).
const FINAL_READS_AFTER: Duration = Duration::from_secs(3);

/// One worker's place in a distributed run (`loadgen worker`).
#[derive(Clone, Debug)]
pub struct WorkerArgs {
    pub index: u32,
    pub of: u32,
    /// The shared start of the schedule.
    pub start: SystemTime,
    /// This worker's results folder (created; must not exist).
    pub out: PathBuf,
    /// Where worker 0 publishes the dataset and the others read it.
    pub population: PathBuf,
}

impl WorkerArgs {
    /// Checks the numbers; returns a usage error's text.
    pub fn validate(&self, users: u32) -> Result<(), String> {
        if self.of == 0 || self.index >= self.of {
            return Err(format!(
                "--index {} --of {}: the index must be below the worker count",
                self.index, self.of
            ));
        }
        if self.of > users {
            return Err(format!(
                "{} workers for {users} load.users: every worker needs at least one user",
                self.of
            ));
        }
        Ok(())
    }

    /// This worker's users.
    pub fn share(&self, users: u32) -> Share {
        Share::of(self.index as usize, self.of as usize, users as usize)
    }

    /// When every worker's schedule is over and its last call answered or given up: the
    /// final reads start then.
    pub fn everyone_done(&self, s: &Scenario) -> SystemTime {
        self.start + s.load.warmup.0 + s.duration() + s.load.timeout.0 + FINAL_READS_AFTER
    }
}

/// `--start`: Unix milliseconds, or an RFC 3339 time.
pub fn parse_start(s: &str) -> Result<SystemTime, String> {
    if let Ok(ms) = s.trim().parse::<u64>() {
        return Ok(UNIX_EPOCH + Duration::from_millis(ms));
    }
    humantime::parse_rfc3339_weak(s.trim())
        .map_err(|e| format!("--start {s}: expected Unix milliseconds or an RFC 3339 time ({e})"))
}

fn unix_us(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn from_unix_us(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us.max(0) as u64)
}

/// The dataset as workers share it.
#[derive(Serialize, Deserialize)]
struct PopulationFile {
    users: Vec<u64>,
    chats: Vec<ChatInfo>,
}

/// Publishes the dataset for the other workers (written whole, then renamed into place).
pub fn write_population(path: &Path, p: &Population) -> anyhow::Result<()> {
    let (users, chats) = p.parts();
    let tmp = path.with_extension("tmp");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&tmp, serde_json::to_vec(&PopulationFile { users, chats })?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Waits (until `deadline`) for worker 0's population file, and reads it.
pub async fn read_population(path: &Path, deadline: SystemTime) -> anyhow::Result<Population> {
    loop {
        match std::fs::read(path) {
            Ok(bytes) => {
                let f: PopulationFile = serde_json::from_slice(&bytes)
                    .with_context(|| format!("reading {}", path.display()))?;
                return Ok(Population::new(f.users, f.chats));
            }
            Err(_) if SystemTime::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => bail!(
                "no dataset from worker 0 at {} by the shared start: {e}",
                path.display()
            ),
        }
    }
}

/// Sleeps until the shared start; fails when it passed more than a second ago (this worker
/// would start its schedule late, out of step with the others).
pub async fn wait_for_start(start: SystemTime) -> anyhow::Result<()> {
    match start.duration_since(SystemTime::now()) {
        Ok(wait) => tokio::time::sleep(wait).await,
        Err(e) if e.duration() > Duration::from_secs(1) => bail!(
            "the shared start passed {:.1} s ago, before this worker was ready: give a later \
             --start",
            e.duration().as_secs_f64()
        ),
        Err(_) => {}
    }
    Ok(())
}

/// Pacing as a worker keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PacingDump {
    intended: u64,
    sent: u64,
    late: u64,
    lateness_ms: Percentiles,
}

/// `worker.json`: what `loadgen merge` needs beyond the run contract.
#[derive(Serialize, Deserialize)]
pub struct WorkerFile {
    pub index: u32,
    pub of: u32,
    /// The shared start, and this worker's own schedule zero, by its clock (µs since the
    /// Unix epoch).
    pub start_unix_us: i64,
    pub started_unix_us: i64,
    pub measured_start_unix_us: i64,
    /// Its users: `first_user .. first_user + users` of the scenario's.
    pub first_user: usize,
    pub users: usize,
    /// The effective scenario (the whole run's, not split).
    pub scenario: String,
    pub calls: u64,
    pub cpu_ms: f64,
    pub reroutes: u64,
    pacing: Option<PacingDump>,
    pub recorder: RecorderDump,
}

impl WorkerFile {
    pub fn of(w: &WorkerArgs, scenario: &Scenario, load: &RunOutput, share: Share) -> WorkerFile {
        WorkerFile {
            index: w.index,
            of: w.of,
            start_unix_us: unix_us(w.start),
            started_unix_us: unix_us(load.started),
            measured_start_unix_us: unix_us(load.measured_start),
            first_user: share.first,
            users: share.count,
            scenario: scenario.to_yaml(),
            calls: load.calls,
            cpu_ms: load.cpu.as_secs_f64() * 1000.0,
            reroutes: load.reroutes,
            pacing: load.pacing.as_ref().map(|p| PacingDump {
                intended: p.intended,
                sent: p.sent,
                late: p.late,
                lateness_ms: p.lateness_ms,
            }),
            recorder: load.recorder.dump(),
        }
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(WORKER_FILE);
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    pub fn read(dir: &Path) -> anyhow::Result<WorkerFile> {
        let path = dir.join(WORKER_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: no {WORKER_FILE}; is it a `loadgen worker` results folder?",
                dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
    }
}

/// The workers' load, merged into one [`RunOutput`], with the scenario they ran.
pub struct MergedLoad {
    pub load: RunOutput,
    pub scenario: Scenario,
    /// The first worker's summary (its cluster, for `loadgen merge`).
    pub first: Summary,
}

/// Merges the workers' folders' load: histograms added (whole and second by second), counts
/// summed, histories joined on one time base. Fails when a folder is missing or unreadable,
/// when the folders are not the workers `0 .. N` of one run, or when two share a client id.
pub fn merge_load(dirs: &[PathBuf]) -> anyhow::Result<MergedLoad> {
    if dirs.is_empty() {
        bail!("nothing to merge: give the workers' folders");
    }
    let mut workers = Vec::new();
    for d in dirs {
        let w = WorkerFile::read(d)?;
        let history = RunDir::open(d).read_history()?;
        workers.push((d.clone(), w, history));
    }
    workers.sort_by_key(|(_, w, _)| w.index);
    let of = workers[0].1.of;
    let indices: Vec<u32> = workers.iter().map(|(_, w, _)| w.index).collect();
    if indices != (0..of).collect::<Vec<_>>() {
        bail!("the folders are workers {indices:?}, not every worker 0..{of} of one run");
    }
    if let Some((d, w, _)) = workers
        .iter()
        .find(|(_, w, _)| w.of != of || w.start_unix_us != workers[0].1.start_unix_us)
    {
        bail!(
            "{} is worker {} of {} with start {} µs, not of the same run as worker 0 ({} of \
             {of}, start {} µs)",
            d.display(),
            w.index,
            w.of,
            w.start_unix_us,
            0,
            workers[0].1.start_unix_us
        );
    }
    let scenario = Scenario::parse(
        &format!("{}/{}", workers[0].0.display(), WORKER_FILE),
        &workers[0].1.scenario,
        &[],
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let first: Summary = {
        let path = workers[0].0.join(files::SUMMARY);
        serde_json::from_str(
            &std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("reading {}", path.display()))?
    };
    // The histories' time base is the shared start, which is also the coordinator's zero
    // for the faults it injects: each worker's times move by how late after it it began.
    let zero = workers[0].1.start_unix_us;
    let mut recorder = Recorder::new();
    let mut history: Vec<Event> = Vec::new();
    let mut clients: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
    let (mut calls, mut cpu_ms, mut reroutes) = (0, 0.0, 0);
    let mut pacing: Option<Pacing> = None;
    for (d, w, h) in &workers {
        recorder
            .add_dump(&w.recorder)
            .map_err(|e| anyhow::anyhow!("{}: {e}", d.display()))?;
        calls += w.calls;
        cpu_ms += w.cpu_ms;
        reroutes += w.reroutes;
        if let Some(p) = &w.pacing {
            let m = pacing.get_or_insert(Pacing {
                intended: 0,
                sent: 0,
                lateness_ms: Percentiles::default(),
                late: 0,
            });
            m.intended += p.intended;
            m.sent += p.sent;
            m.late += p.late;
            let (a, b) = (&mut m.lateness_ms, &p.lateness_ms);
            a.p50 = a.p50.max(b.p50);
            a.p90 = a.p90.max(b.p90);
            a.p99 = a.p99.max(b.p99);
            a.p999 = a.p999.max(b.p999);
            a.max = a.max.max(b.max);
        }
        let shift = (w.started_unix_us - zero).max(0) as u64;
        for e in h {
            let mut e = e.clone();
            match &mut e {
                Event::Send {
                    client,
                    invoke_us,
                    complete_us,
                    ..
                }
                | Event::Read {
                    client,
                    invoke_us,
                    complete_us,
                    ..
                } => {
                    if let Some(other) = clients.insert(*client, w.index)
                        && other != w.index
                    {
                        bail!(
                            "workers {other} and {} both used client id {client}: their calls \
                             cannot be told apart",
                            w.index
                        );
                    }
                    *invoke_us += shift;
                    *complete_us += shift;
                }
                _ => {}
            }
            history.push(e);
        }
    }
    let measured_start = workers
        .iter()
        .map(|(_, w, _)| w.measured_start_unix_us)
        .min()
        .unwrap_or_default();
    let load = RunOutput {
        timeseries: recorder.timeseries(),
        recorder,
        measured_start: from_unix_us(measured_start),
        pacing,
        calls,
        cpu: Duration::from_secs_f64(cpu_ms / 1000.0),
        reroutes,
        history,
        started: from_unix_us(zero),
    };
    Ok(MergedLoad {
        load,
        scenario,
        first,
    })
}

/// `loadgen merge`: the workers' folders merged into `out`, checked once (real-time order
/// trusted only beyond `skew`), with the first worker's view of the cluster. Returns the
/// merged run's summary.
pub fn merge(dirs: &[PathBuf], out: &Path, skew: Duration) -> anyhow::Result<Summary> {
    let m = merge_load(dirs)?;
    let check = history::check_with_skew(&m.load.history, skew);
    let run = RunDir::create_at(out)?;
    let run_id = run.run_id();
    let cluster = ClusterEnd {
        ..m.first.cluster.clone()
    };
    let samples = Samples::default();
    let summary = Summary::of(RunFacts {
        run_id: &run_id,
        scenario: &m.scenario,
        scenario_file: Path::new(&m.first.scenario_file),
        replicas: m.first.replicas,
        started: m.load.started,
        results_root: out.parent().unwrap_or(Path::new(".")),
        load: &m.load,
        cluster,
        check: &check,
        faults: Vec::new(),
        interrupted: false,
        samples: &samples,
    });
    write_run(&run, &summary, &m.scenario, &m.load, &check, &samples)?;
    Ok(summary)
}

/// Writes a merged run's folder, as a single run's is written.
pub fn write_run(
    run: &RunDir,
    summary: &Summary,
    scenario: &Scenario,
    load: &RunOutput,
    check: &history::Report,
    samples: &Samples,
) -> anyhow::Result<()> {
    run.write_samples(samples)?;
    run.write_history(&load.history)?;
    run.write_check(check)?;
    run.write_measurements(
        summary,
        scenario,
        &load.recorder,
        &load.timeseries,
        load.measured_start,
    )
}

/// A worker process of `bench --workers N`, started by the coordinator.
pub struct Spawned {
    pub index: u32,
    pub dir: PathBuf,
    pub child: tokio::process::Child,
}

/// Starts worker processes (this same program, `loadgen worker`) on this machine.
#[allow(clippy::too_many_arguments)]
pub fn spawn_local(
    n: u32,
    scenario_file: &Path,
    tls_dir: Option<&Path>,
    endpoints: &[String],
    start: SystemTime,
    workers_dir: &Path,
    population: &Path,
) -> anyhow::Result<Vec<Spawned>> {
    let exe = std::env::current_exe().context("locating loadgen")?;
    std::fs::create_dir_all(workers_dir)
        .with_context(|| format!("creating {}", workers_dir.display()))?;
    let start_ms = start
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        .to_string();
    let mut spawned = Vec::new();
    for i in 0..n {
        let dir = workers_dir.join(format!("worker-{i}"));
        let log = std::fs::File::create(workers_dir.join(format!("worker-{i}.log")))?;
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg("worker")
            .arg("--scenario")
            .arg(scenario_file)
            .args(["--index", &i.to_string(), "--of", &n.to_string()])
            .args(["--start", &start_ms])
            .arg("--target")
            .arg(endpoints.join(","))
            .arg("--population")
            .arg(population)
            .arg("--out")
            .arg(&dir);
        if let Some(t) = tls_dir {
            cmd.arg("--tls-dir").arg(t);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting worker {i} ({})", exe.display()))?;
        spawned.push(Spawned {
            index: i,
            dir,
            child,
        });
    }
    Ok(spawned)
}

/// Starts worker containers (`loadgen worker` in `telegraft:latest`) on the replicas'
/// network, each limited to `cpus` when given, as this user, with the run's workers folder
/// mounted at the same path.
#[allow(clippy::too_many_arguments)]
pub fn spawn_docker(
    n: u32,
    scenario_file: &Path,
    endpoints: &[String],
    start: SystemTime,
    workers_dir: &Path,
    population: &Path,
    (network, project): (&str, &str),
    cpus: Option<f64>,
    certs: Option<&Path>,
) -> anyhow::Result<Vec<Spawned>> {
    use std::os::unix::fs::MetadataExt;
    std::fs::create_dir_all(workers_dir)
        .with_context(|| format!("creating {}", workers_dir.display()))?;
    let workers_dir = workers_dir
        .canonicalize()
        .with_context(|| format!("resolving {}", workers_dir.display()))?;
    let meta = std::fs::metadata(&workers_dir)?;
    let start_ms = start
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        .to_string();
    let abs = |p: &Path| -> anyhow::Result<String> {
        let name = p.file_name().context("a file name")?;
        Ok(workers_dir.join(name).display().to_string())
    };
    let mut spawned = Vec::new();
    for i in 0..n {
        let dir = workers_dir.join(format!("worker-{i}"));
        let log = std::fs::File::create(workers_dir.join(format!("worker-{i}.log")))?;
        let mut cmd = tokio::process::Command::new("docker");
        cmd.args(["run", "--rm", "--no-healthcheck"])
            .args(["--name", &format!("{project}-loadgen-{i}")])
            .args(["--network", network])
            .args(["--user", &format!("{}:{}", meta.uid(), meta.gid())])
            .arg("-v")
            .arg(format!("{0}:{0}", workers_dir.display()))
            .args(["--entrypoint", "/usr/local/bin/loadgen"]);
        // The replicas serve TLS: the run's certificates, read-only.
        if let Some(certs) = certs {
            cmd.arg("-v").arg(format!("{}:/certs:ro", certs.display()));
        }
        if let Some(c) = cpus {
            cmd.args(["--cpus", &c.to_string()]);
        }
        cmd.arg(crate::control::IMAGE)
            .arg("worker")
            .args(["--scenario", &abs(scenario_file)?])
            .args(["--index", &i.to_string(), "--of", &n.to_string()])
            .args(["--start", &start_ms])
            .args(["--target", &endpoints.join(",")])
            .args(["--population", &abs(population)?])
            .args(certs.map(|_| ["--tls-dir", "/certs"]).into_iter().flatten())
            .arg("--out")
            .arg(&dir)
            .arg("--no-progress")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting worker {i}'s container"))?;
        spawned.push(Spawned {
            index: i,
            dir,
            child,
        });
    }
    Ok(spawned)
}

/// Waits for every worker. A worker that did not finish its run (killed, or an error: any
/// exit other than 0 or a verdict's 3, 4 or 5) fails the whole run, naming the worker and its
/// log.
pub async fn wait_all(spawned: Vec<Spawned>, workers_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    let mut failed = Vec::new();
    for mut s in spawned {
        let status = s.child.wait().await?;
        let finished = matches!(status.code(), Some(0 | 3 | 4 | 5));
        if finished && s.dir.join(WORKER_FILE).is_file() {
            dirs.push(s.dir);
        } else {
            let log = workers_dir.join(format!("worker-{}.log", s.index));
            let tail: String = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n  ");
            failed.push(format!(
                "worker {} failed ({status}); its log: {}\n  {tail}",
                s.index,
                log.display()
            ));
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_user_once() {
        for total in [1usize, 2, 7, 32, 33] {
            for of in 1..=total.min(5) {
                let shares: Vec<Share> = (0..of).map(|i| Share::of(i, of, total)).collect();
                let mut next = 0;
                for s in &shares {
                    assert_eq!(s.first, next, "{total} {of} {shares:?}");
                    assert!(s.count >= total / of && s.count <= total / of + 1);
                    next += s.count;
                }
                assert_eq!(next, total);
            }
        }
    }

    #[test]
    fn start_times_parse() {
        assert_eq!(
            parse_start("1800000000000").unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_800_000_000)
        );
        assert_eq!(
            parse_start("2027-01-15T08:00:00Z").unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_800_000_000)
        );
        assert!(parse_start("soon").is_err());
    }
}
