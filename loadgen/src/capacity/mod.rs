//! `loadgen capacity`: the highest offered rate a cluster sustains, found by probing.
//!
//! A saturation table made by hand, one `--set load.rate=R` at a time, answers "how much can
//! this cluster take?" slowly and with as many rates as the person had patience for. This
//! module asks the same question with a search ([`search`]): an exponential ramp, then a
//! bisection, to a set precision (5% by default).
//!
//! **A probe is a whole run.** Each rate is tried with a short open-model run of the
//! scenario (its mix, dataset, objectives and history check) at that rate, written as an
//! ordinary results folder under the capacity run's folder (`probes/r<replicas>-<rate>/`),
//! with its own report page. It passes when the schedule was kept (the generator sent on
//! time: `slo.run.schedule: kept` is added when the scenario lacks it), every objective was
//! met, and the history check passed (or the scenario says `check: off`). So the answer is
//! not the rate at which the cluster stops answering, but the rate at which it still
//! answers well and correctly, by the scenario's own standard.
//!
//! **A lost probe stops early.** Far above capacity a probe would spend its whole length
//! piling up a backlog, and the next probe would start against a cluster still digesting
//! it. The probe's seconds are watched as they close ([`crate::load::Tick`]): when, for 3
//! seconds in a row, the sends' lateness p99 is over 1 s or more than 10% of calls fail
//! (or, at 5 ops/s or more, no call completes at all), the load stops and the probe is
//! `lost`.
//!
//! **One cluster per replica count.** Starting a fresh cluster per probe would add its
//! start-up to every probe and hide what a long-running cluster does (log growth,
//! snapshots); probes instead share one cluster per replica count, each with a dataset of
//! its own, and wait `--settle` between them (then for a leader every replica agrees on, as
//! every run does) so the last probe's backlog drains first.
//!
//! `capacity.json` ([`crate::results::capacity`]) is rewritten after every probe, and the
//! reports get a capacity page per search and a chart of maximum sustainable rate against
//! replica count on the index.

mod search;

pub use search::{Ended, Next, Search};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::bench::{LoadWatch, RunOn, run_on};
use crate::control::{self, Interrupt, Replicas};
use crate::exit::{self, UsageError};
use crate::load::{Phase, Tick};
use crate::results::capacity::{
    Capacity, PROBES, Probe, ReplicaCapacity, SearchSettings, probe_dir,
};
use crate::results::{RunDir, Summary, utc_seconds};
use crate::scenario::{Scenario, System};

/// How long replicas get to stop before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A probe is lost after this many bad seconds in a row...
pub const LOST_AFTER: u32 = 3;
/// ...a bad second being one whose send lateness p99 is over this...
pub const LOST_LATENESS_MS: f64 = 1_000.0;
/// ...or more than this share of whose calls failed.
pub const LOST_ERROR_SHARE: f64 = 0.10;

pub struct CapacityArgs {
    pub scenario: PathBuf,
    /// Replica counts to search, in order; empty: the scenario's.
    pub replicas: Vec<u32>,
    pub overrides: Vec<String>,
    pub results_dir: PathBuf,
    pub telegraft: Option<PathBuf>,
    pub etcd: Option<PathBuf>,
    /// Probe these running replicas instead of starting a cluster per replica count.
    pub target: Option<Vec<String>>,
    /// Each probe's measured window and warm-up.
    pub probe: Duration,
    pub probe_warmup: Duration,
    /// The pause between probes.
    pub settle: Duration,
    /// 0.05 for 5%.
    pub precision: f64,
    /// The first rate (default: the scenario's `load.rate`, else 100 ops/s).
    pub start_rate: Option<u64>,
    pub min_rate: u64,
    pub max_rate: u64,
    pub progress: bool,
}

pub struct CapacityOutcome {
    pub dir: PathBuf,
    pub capacity: Capacity,
}

/// Runs the search at every replica count and writes the capacity run's folder.
pub async fn capacity(args: CapacityArgs) -> anyhow::Result<CapacityOutcome> {
    let interrupt = Interrupt::install();
    let base = Scenario::load(&args.scenario, &args.overrides)?;
    check_args(&args, &base)?;
    let counts = match &args.target {
        Some(t) => vec![t.len() as u32],
        None if args.replicas.is_empty() => vec![base.replicas],
        None => args.replicas.clone(),
    };
    let start_rate = args
        .start_rate
        .or(base.load.rate.map(|r| r.0.round().max(1.0) as u64))
        .unwrap_or(100);
    let exe = match &args.target {
        Some(_) => PathBuf::new(),
        None if base.system == System::Etcd => control::find_etcd(args.etcd.as_deref())?,
        None => control::find_telegraft(args.telegraft.as_deref())?,
    };
    let started = SystemTime::now();
    let run = RunDir::create_capacity(&args.results_dir, started, &base.name)?;
    eprintln!(
        "loadgen: capacity {} -> {}",
        run.run_id(),
        run.path().display()
    );
    let mut cap = Capacity {
        scenario: base.name.clone(),
        system: base.system.name().to_string(),
        scenario_file: args.scenario.display().to_string(),
        started_at: utc_seconds(started),
        search: SearchSettings {
            start_rate: start_rate as f64,
            max_rate: args.max_rate as f64,
            precision: args.precision,
            probe_warmup_s: args.probe_warmup.as_secs_f64(),
            probe_s: args.probe.as_secs_f64(),
            settle_s: args.settle.as_secs_f64(),
        },
        replicas: Vec::new(),
        interrupted: false,
    };
    for n in counts {
        if interrupt.is_set() {
            break;
        }
        cap.replicas.push(ReplicaCapacity {
            replicas: n,
            max_sustainable_rate: 0.0,
            ended: "running".into(),
            error: None,
            probes: Vec::new(),
        });
        cap.write(run.path())?;
        let searched = search_at(&args, &exe, &run, n, start_rate, &interrupt, &mut cap).await;
        let entry = cap.replicas.last_mut().expect("pushed");
        if let Err(e) = searched {
            eprintln!("loadgen: capacity at {n} replicas: {e:#}");
            entry.ended = "error".into();
            entry.error = Some(format!("{e:#}"));
        }
        cap.interrupted = interrupt.is_set();
        cap.write(run.path())?;
    }
    cap.interrupted = interrupt.is_set();
    cap.write(run.path())?;
    Ok(CapacityOutcome {
        dir: run.path().to_path_buf(),
        capacity: cap,
    })
}

/// The exit status of a capacity search: 130 when interrupted, 1 when a replica count's
/// search failed with an error, 0 otherwise (a capacity of 0 is a finding, not a failure).
pub fn exit_status(c: &Capacity) -> u8 {
    if c.interrupted {
        exit::INTERRUPTED
    } else if c.replicas.iter().any(|r| r.error.is_some()) {
        exit::FAILED
    } else {
        exit::OK
    }
}

fn check_args(args: &CapacityArgs, base: &Scenario) -> anyhow::Result<()> {
    let usage = |m: String| Err(UsageError(m).into());
    if !base.faults.is_empty() {
        return usage(format!(
            "{}: capacity probes run without faults: the scenario has {} (use a scenario \
             without `faults`, or `--set faults=[]`)",
            args.scenario.display(),
            base.faults.len()
        ));
    }
    if !(args.precision > 0.0 && args.precision < 1.0) {
        return usage(format!(
            "--precision must be between 0% and 100%, not {}%",
            args.precision * 100.0
        ));
    }
    if args.probe < Duration::from_secs(LOST_AFTER as u64 + 1) {
        return usage(format!(
            "--probe must be at least {}s: a probe is cut short after {LOST_AFTER} bad seconds",
            LOST_AFTER + 1
        ));
    }
    if args.min_rate == 0 || args.max_rate < args.min_rate {
        return usage("--min-rate must be at least 1 and at most --max-rate".into());
    }
    if let Some(t) = &args.target
        && !args.replicas.is_empty()
        && args.replicas != [t.len() as u32]
    {
        return usage(format!(
            "--target names {} replicas: drop --replicas, or give --replicas {}",
            t.len(),
            t.len()
        ));
    }
    if let Some(&bad) = args.replicas.iter().find(|&&n| n == 0) {
        return usage(format!(
            "--replicas {bad}: a cluster has at least 1 replica"
        ));
    }
    Ok(())
}

/// The search at one replica count, against a cluster started for it; its entry is the last
/// of `cap.replicas`, updated (and the file rewritten) after every probe.
#[allow(clippy::too_many_arguments)]
async fn search_at(
    args: &CapacityArgs,
    exe: &Path,
    run: &RunDir,
    n: u32,
    start_rate: u64,
    interrupt: &Interrupt,
    cap: &mut Capacity,
) -> anyhow::Result<()> {
    let base = Scenario::load(&args.scenario, &probe_overrides(args, n, start_rate))?;
    if base.deploy != crate::scenario::Deploy::Local {
        return Err(crate::exit::UsageError(
            "loadgen capacity starts local processes: deploy: docker is for loadgen bench".into(),
        )
        .into());
    }
    if args.target.is_some() && !base.security.is_default() {
        return Err(crate::exit::UsageError(
            "loadgen capacity with security: {tls, auth} starts its own clusters: drop --target"
                .into(),
        )
        .into());
    }
    let cluster_dir = RunDir::open(&run.path().join(format!("cluster-r{n}")));
    let cluster = match &args.target {
        Some(t) => Replicas::given(t.clone(), Vec::new()),
        None if base.system == System::Etcd => {
            eprintln!("loadgen: capacity: starting {n} etcd members");
            Replicas::start_etcd(exe, n, &cluster_dir.data_dir(), &base.cluster.etcd_args())?
        }
        None => {
            eprintln!("loadgen: capacity: starting {n} replicas");
            let security =
                crate::control::RunSecurity::prepare(base.security, cluster_dir.path(), n, &[])?;
            let mut node_args = base.cluster.node_args();
            node_args.extend(security.node_args.iter().cloned());
            let cluster = Replicas::start(
                exe,
                n,
                &cluster_dir.data_dir(),
                false,
                base.metrics.is_on(),
                &node_args,
            )?;
            security.reach(cluster.endpoints())?;
            cluster
        }
    };
    let mut search = Search::new(start_rate, args.min_rate, args.max_rate, args.precision);
    let mut first = true;
    let searched: anyhow::Result<Ended> = async {
        loop {
            let rate = match search.next() {
                Next::Probe(r) => r,
                Next::Done(e) => return Ok(e),
            };
            if !first {
                tokio::time::sleep(args.settle).await;
            }
            first = false;
            if interrupt.is_set() {
                anyhow::bail!("interrupted");
            }
            let probe = probe(args, &cluster, run, n, rate, interrupt).await?;
            eprintln!("loadgen: capacity: {}", describe(n, &probe));
            if interrupt.is_set() {
                anyhow::bail!("interrupted");
            }
            search.record(rate, probe.verdict == "pass");
            let entry = cap.replicas.last_mut().expect("pushed");
            entry.probes.push(probe);
            entry.max_sustainable_rate = search.best() as f64;
            cap.write(run.path())?;
        }
    }
    .await;
    if let Some(stopped) = cluster.stop(STOP_GRACE, false).await? {
        cluster_dir.keep_node_logs(&stopped.logs)?;
        stopped.remove_data()?;
    }
    let entry = cap.replicas.last_mut().expect("pushed");
    entry.max_sustainable_rate = search.best() as f64;
    match searched {
        Ok(ended) => {
            entry.ended = ended.name().into();
            eprintln!(
                "loadgen: capacity at {n} replicas: {} ops/s ({})",
                search.best(),
                ended.name()
            );
            Ok(())
        }
        Err(_) if interrupt.is_set() => {
            entry.ended = "interrupted".into();
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The scenario as a probe runs it: open model at `rate` (a closed model's think time has
/// no meaning there and is dropped), the probe's length, the schedule an objective.
fn probe_overrides(args: &CapacityArgs, n: u32, rate: u64) -> Vec<String> {
    let mut o = args.overrides.clone();
    o.extend([
        format!("replicas={n}"),
        "load.model=open".into(),
        "load.steps=[]".into(),
        "load.think_time=0s".into(),
        format!("load.rate={rate}"),
        format!("load.warmup={}ms", args.probe_warmup.as_millis()),
        format!("load.duration={}ms", args.probe.as_millis()),
        "slo.run.schedule=kept".into(),
    ]);
    o
}

/// One probe: a whole run at `rate`, watched second by second.
async fn probe(
    args: &CapacityArgs,
    cluster: &Replicas,
    run: &RunDir,
    n: u32,
    rate: u64,
    interrupt: &Interrupt,
) -> anyhow::Result<Probe> {
    let scenario = Scenario::load(&args.scenario, &probe_overrides(args, n, rate))?;
    let rel = PathBuf::from(PROBES).join(probe_dir(n, rate));
    let dir = RunDir::create_at(&run.path().join(&rel))?;
    let (ticks, rx) = mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_probe(rx, cancel.clone(), rate));
    eprintln!("loadgen: capacity: probing {rate} ops/s at {n} replicas");
    let summary = run_on(
        RunOn {
            run_id: crate::results::capacity::probe_run_id(&run.run_id(), n, rate),
            scenario: &scenario,
            scenario_file: &args.scenario,
            cluster,
            run: &dir,
            results_root: &args.results_dir,
            progress: args.progress,
            started: SystemTime::now(),
            interrupt,
            mode: crate::bench::Mode::Single,
        },
        Some(LoadWatch { ticks, cancel }),
    )
    .await;
    let lost = watcher.await.unwrap_or(None);
    Ok(judge(&summary?, rate, lost, &rel))
}

/// Follows a probe's seconds; stops its load and says why when it is lost.
async fn watch_probe(
    mut ticks: mpsc::UnboundedReceiver<Tick>,
    cancel: Arc<AtomicBool>,
    rate: u64,
) -> Option<String> {
    let mut rule = LostRule::new(rate);
    while let Some(t) = ticks.recv().await {
        if let Some(why) = rule.second(&t) {
            cancel.store(true, Ordering::Relaxed);
            // Drain what is left so the sender never blocks (it cannot: unbounded).
            return Some(why);
        }
    }
    None
}

/// The rule that cuts a probe short: [`LOST_AFTER`] bad seconds in a row.
pub struct LostRule {
    rate: u64,
    run: u32,
}

impl LostRule {
    pub fn new(rate: u64) -> LostRule {
        LostRule { rate, run: 0 }
    }

    /// Takes one second; returns why the probe is lost once it is.
    pub fn second(&mut self, t: &Tick) -> Option<String> {
        if t.phase == Phase::Finishing || t.elapsed == 0 {
            return None;
        }
        let why = if let Some(l) = t.lateness_p99_ms.filter(|&l| l > LOST_LATENESS_MS) {
            Some(format!("send lateness p99 {l:.0} ms"))
        } else if t.calls > 0 && t.errors as f64 > LOST_ERROR_SHARE * t.calls as f64 {
            Some(format!(
                "{:.0}% of calls failed",
                100.0 * t.errors as f64 / t.calls as f64
            ))
        } else if t.calls == 0 && self.rate >= 5 && t.elapsed > 1 {
            Some("no call completed".into())
        } else {
            None
        };
        match why {
            None => {
                self.run = 0;
                None
            }
            Some(why) => {
                self.run += 1;
                (self.run >= LOST_AFTER).then(|| {
                    format!(
                        "lost: {LOST_AFTER} bad seconds in a row (the last at {} s: {why})",
                        t.elapsed
                    )
                })
            }
        }
    }
}

/// A probe's verdict from its run's summary.
fn judge(s: &Summary, rate: u64, lost: Option<String>, rel: &Path) -> Probe {
    let mut reasons = Vec::new();
    if let Some(why) = &lost {
        reasons.push(why.clone());
    }
    if let Some(w) = &s.generator.warning {
        reasons.push(w.clone());
    }
    for o in s.slo.iter().filter(|o| !o.passed()) {
        let line = format!("missed {} ({})", o.name(), o.measured());
        if !reasons.contains(&line) {
            reasons.push(line);
        }
    }
    let check = exit::of_check(s.check.verdict);
    if check != exit::OK {
        reasons.push(format!(
            "history check {}{}",
            serde_json::to_value(s.check.verdict)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            s.check
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ));
    }
    let passed = lost.is_none()
        && !s.interrupted
        && exit::of_run(s) == exit::OK
        && s.generator.warning.is_none();
    let verdict = if lost.is_some() {
        "lost"
    } else if passed {
        "pass"
    } else {
        "fail"
    };
    let achieved = if s.duration_s > 0.0 {
        s.ops
            .values()
            .map(|o| (o.count + o.errors) as f64)
            .sum::<f64>()
            / s.duration_s
    } else {
        0.0
    };
    Probe {
        rate: rate as f64,
        achieved: (achieved * 10.0).round() / 10.0,
        verdict: verdict.into(),
        reasons,
        p99_ms: s
            .ops
            .iter()
            .filter(|(_, o)| o.count + o.errors > 0)
            .map(|(op, o)| (op.clone(), o.latency_ms.p99))
            .collect::<BTreeMap<_, _>>(),
        lateness_p99_ms: s.generator.lateness_ms.as_ref().map(|p| p.p99),
        results: rel.display().to_string(),
    }
}

/// `r3 2000 ops/s: pass (achieved 1998 ops/s, lateness p99 0.4 ms, send_message p99 12.1 ms)`.
fn describe(n: u32, p: &Probe) -> String {
    let mut s = format!(
        "r{n} {} ops/s: {} (achieved {:.0} ops/s",
        p.rate, p.verdict, p.achieved
    );
    if let Some(l) = p.lateness_p99_ms {
        s.push_str(&format!(", lateness p99 {l:.1} ms"));
    }
    for (op, v) in &p.p99_ms {
        if op == "send_message" || op == "get_messages" {
            s.push_str(&format!(", {op} p99 {v:.1} ms"));
        }
    }
    s.push(')');
    if let Some(r) = p.reasons.first() {
        s.push_str(&format!(": {r}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(elapsed: u64, calls: u64, errors: u64, lateness: Option<f64>) -> Tick {
        Tick {
            phase: Phase::Measuring,
            elapsed,
            ops_per_s: calls as f64,
            calls,
            errors,
            late: 0,
            p99_ms: None,
            lateness_p99_ms: lateness,
        }
    }

    #[test]
    fn three_late_seconds_in_a_row_lose_a_probe() {
        let mut r = LostRule::new(1000);
        assert!(r.second(&tick(1, 1000, 0, Some(1500.0))).is_none());
        assert!(r.second(&tick(2, 1000, 0, Some(1500.0))).is_none());
        let why = r.second(&tick(3, 1000, 0, Some(2500.0))).expect("lost");
        assert!(why.contains("lateness p99 2500 ms"), "{why}");
    }

    #[test]
    fn a_good_second_resets_the_count() {
        let mut r = LostRule::new(1000);
        r.second(&tick(1, 1000, 200, None));
        r.second(&tick(2, 1000, 200, None));
        assert!(
            r.second(&tick(3, 1000, 100, Some(5.0))).is_none(),
            "10% is not over 10%"
        );
        r.second(&tick(4, 1000, 101, None));
        r.second(&tick(5, 0, 0, None));
        let why = r.second(&tick(6, 1000, 500, None)).expect("lost");
        assert!(why.contains("50% of calls failed"), "{why}");
    }

    #[test]
    fn finishing_seconds_and_slow_rates_do_not_count() {
        let mut r = LostRule::new(2);
        for s in 1..10 {
            assert!(r.second(&tick(s, 0, 0, None)).is_none());
        }
        let mut r = LostRule::new(1000);
        for s in 1..10 {
            let mut t = tick(s, 0, 0, Some(9_000.0));
            t.phase = Phase::Finishing;
            assert!(r.second(&t).is_none());
        }
    }
}
