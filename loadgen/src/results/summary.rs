//! `summary.json`: one run in one document, as typed structs. The JSON Schema of the file is
//! generated from these types ([`schema`], `loadgen schema`, checked in as
//! `loadgen/summary.schema.json` and compared in tests), so the contract cannot drift from
//! the code silently.
//!
//! Latencies are in milliseconds with microsecond resolution. `latency_ms` is measured from
//! the intended send time (open model) over every call, failed and timed-out ones included
//! (a timeout at the time the generator gave up); `service_time_ms` from the actual send,
//! over successful calls only.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use telegraft::admin::NodeView;

use super::provenance::{self, Machine};
use super::time_split::{self, TimeSplit};
use crate::control::{FaultRecord, LeaderSeen};
use crate::history::{Anomaly, Counts, LaggingReplica, Report, Verdict};
use crate::load::{OpSummary, Percentiles, Recorder, RunOutput, Schedule};
use crate::sample::{LOADGEN, ResourceRow, Samples};
use crate::scenario::{Model, Op, Scenario};

fn telegraft() -> String {
    "telegraft".to_string()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    pub run_id: String,
    /// The system under test: `telegraft` or `etcd` (runs from before the field existed
    /// read as `telegraft`).
    #[serde(default = "telegraft")]
    pub system: String,
    pub scenario: String,
    pub scenario_file: String,
    pub description: String,
    pub replicas: u32,
    /// `open` or `closed`.
    pub model: String,
    /// Mean offered ops/s over the measured window (open model); `None` for closed.
    pub offered_rate: Option<f64>,
    /// The open model's offered rate over the measured window; empty for closed.
    #[serde(default)]
    pub offered_schedule: Vec<RateStep>,
    pub users: u32,
    pub seed: u64,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// UTC, to the second (`2026-11-27T12:45:01Z`).
    pub started_at: String,
    /// The commit the generator ran from, `-dirty` when the tree had changes.
    pub git_rev: Option<String>,
    pub machine: Machine,
    /// Per operation, by name (`send_message`).
    pub ops: BTreeMap<String, OpResult>,
    pub slo: Vec<SloResult>,
    pub generator: Generator,
    pub cluster: ClusterEnd,
    #[serde(default)]
    pub versions: Versions,
    /// The history checker's verdict (`pass`, `fail`, `incomplete` or `skipped`).
    pub check: CheckSummary,
    /// The faults injected, with their unavailability windows.
    #[serde(default)]
    pub faults: Vec<FaultRecord>,
    /// The run was stopped early by SIGINT or SIGTERM: its figures cover only part of the
    /// plan, and its verdicts do not count (`loadgen` exits 130).
    #[serde(default)]
    pub interrupted: bool,
    /// The replica processes' and the generator's resources over the measured window (from
    /// `resources.csv`).
    #[serde(default)]
    pub resources: Resources,
    /// Where a successful `send_message`'s mean time went, from the replicas' metrics over
    /// the measured window ([`super::time_split`]); `null` without them (`metrics: off`,
    /// `--target`, no successful send).
    #[serde(default)]
    pub time_split: Option<TimeSplit>,
}

/// `resources` in `summary.json`: per process (`node-1`, ..., `loadgen`), over the seconds of
/// the measured window it was sampled in; and the generator's share of the machine.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Resources {
    /// The generator's mean CPU over the measured window as a share of every core of the
    /// machine, in % (100: all cores busy with the generator alone).
    pub loadgen_share_of_machine_pct: Option<f64>,
    #[serde(flatten)]
    pub processes: BTreeMap<String, ProcessResources>,
}

/// One process's resources over the measured window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProcessResources {
    /// CPU in % of one core (200: two whole cores), mean and highest of its seconds.
    pub cpu_pct_mean: f64,
    pub cpu_pct_max: f64,
    pub rss_bytes_max: u64,
}

impl Resources {
    /// From the rows of the measured window (`t_s >= 1`).
    pub fn of(samples: &Samples) -> Resources {
        let mut by: BTreeMap<String, Vec<&ResourceRow>> = BTreeMap::new();
        for r in samples.resources.iter().filter(|r| r.t_s >= 1) {
            by.entry(r.process.clone()).or_default().push(r);
        }
        let processes: BTreeMap<String, ProcessResources> = by
            .into_iter()
            .map(|(p, rows)| {
                let n = rows.len() as f64;
                let res = ProcessResources {
                    cpu_pct_mean: round_to(rows.iter().map(|r| r.cpu_pct).sum::<f64>() / n, 1),
                    cpu_pct_max: rows.iter().map(|r| r.cpu_pct).fold(0.0, f64::max),
                    rss_bytes_max: rows.iter().map(|r| r.rss_bytes).max().unwrap_or(0),
                };
                (p, res)
            })
            .collect();
        let share = processes
            .get(LOADGEN)
            .map(|l| round_to(l.cpu_pct_mean / samples.cpus.max(1) as f64, 1));
        Resources {
            loadgen_share_of_machine_pct: share,
            processes,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OpResult {
    /// Successful calls in the measured window.
    pub count: u64,
    pub errors: u64,
    /// Errors by gRPC code name, or `Timeout`.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Successful calls per second of the measured window.
    pub throughput: f64,
    /// Every call (failed and timed-out ones included), from the intended send time
    /// (coordinated-omission corrected).
    pub latency_ms: Percentiles,
    /// Successful calls only, from the actual send.
    pub service_time_ms: Percentiles,
}

/// One constant-rate stretch of the open model's schedule, in seconds from the start of the
/// measured window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RateStep {
    pub start_s: f64,
    pub end_s: f64,
    pub rate: f64,
}

/// One objective of the scenario and how the run did against it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SloResult {
    /// The operation (`send_message`), or `run` for an objective on the whole run.
    pub op: String,
    /// `p50`, `p90`, `p99`, `p999`, `p9999`, `max` (latency, of every call), `error_rate`,
    /// `min_throughput`, `schedule` or `unavailable_ms`.
    pub objective: String,
    /// The limit: at most this (latency, `error_rate`, `unavailable_ms`), at least this
    /// (`min_throughput`), or `kept` (`schedule`).
    pub limit: SloValue,
    /// What the run measured; `None` when there was nothing to measure (no successful call
    /// for a latency, no call at all for an error rate, a fault after which no write was
    /// ever acknowledged).
    pub actual: Option<SloValue>,
    /// `ms`, `%`, `ops/s`, or empty for `schedule`.
    pub unit: String,
    pub verdict: SloVerdict,
    /// Latency objectives also give the limit and the measure as before, in milliseconds.
    #[serde(flatten)]
    pub latency: Option<LatencyLimit>,
}

/// A limit or a measure: a number in the objective's unit, or a word (`kept`, `missed`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SloValue {
    Number(f64),
    Text(String),
}

/// `pass` or `fail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SloVerdict {
    Pass,
    Fail,
}

/// A latency objective's limit and measure in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LatencyLimit {
    pub limit_ms: f64,
    /// `None` when the operation had no successful call.
    pub actual_ms: Option<f64>,
}

impl SloResult {
    pub fn passed(&self) -> bool {
        self.verdict == SloVerdict::Pass
    }

    /// How the objective reads: `send_message p99 <= 50ms`, `send_message error_rate <=
    /// 0.1%`, `send_message min_throughput >= 100 ops/s`, `run schedule: kept`, `run
    /// unavailable_ms <= 1500ms`. The JUnit test cases are named so.
    pub fn name(&self) -> String {
        let (op, o) = (&self.op, &self.objective);
        match (&self.limit, o.as_str()) {
            (SloValue::Text(t), _) => format!("{op} {o}: {t}"),
            (SloValue::Number(n), "min_throughput") => format!("{op} {o} >= {} ops/s", num(*n)),
            (SloValue::Number(n), _) if self.unit == "ms" => format!("{op} {o} <= {}", ms(*n)),
            (SloValue::Number(n), _) => format!("{op} {o} <= {}{}", num(*n), self.unit),
        }
    }

    /// What was measured, as people read it: `12.3ms`, `0.05%`, `120 ops/s`, `missed`.
    pub fn measured(&self) -> String {
        match &self.actual {
            None if self.latency.is_some() => "no successful call".into(),
            None if self.objective == "error_rate" => "no call".into(),
            None => "never recovered".into(),
            Some(SloValue::Text(t)) => t.clone(),
            Some(SloValue::Number(n)) if self.unit == "ms" => ms(*n),
            Some(SloValue::Number(n)) if self.unit == "ops/s" => format!("{} ops/s", num(*n)),
            Some(SloValue::Number(n)) => format!("{}{}", num(*n), self.unit),
        }
    }
}

/// A number without trailing zeros, rounded to 3 decimals: `50`, `0.1`, `12.346`.
fn num(v: f64) -> String {
    let r = round_to(v, 3);
    if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r}")
    }
}

/// Milliseconds, or microseconds below one: `50ms`, `0.5ms`... `1us`.
fn ms(v: f64) -> String {
    if v >= 1.0 || v == 0.0 {
        format!("{}ms", num(v))
    } else {
        format!("{}us", num(v * 1000.0))
    }
}

/// How well the open model's schedule was kept, and what the generator cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Generator {
    /// Calls made, warm-up included.
    pub calls: u64,
    pub cpu_s: f64,
    /// Generator CPU time per call, in microseconds.
    pub cpu_us_per_call: f64,
    /// Open model: sends intended in the measured window, and how many went out.
    pub intended: Option<u64>,
    pub sent: Option<u64>,
    /// Sends more than 10 ms late, and the lateness distribution.
    pub late: Option<u64>,
    pub lateness_ms: Option<Percentiles>,
    /// Set when the generator did not keep the schedule.
    pub warning: Option<String>,
    /// Failures after which a user moved to another replica (`routing: any`) or looked for
    /// the leader again (`routing: leader`).
    #[serde(default)]
    pub reroutes: u64,
}

/// One replica as seen at the end of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeEnd {
    pub node_id: u64,
    pub addr: String,
    /// `leader`, `follower` or `candidate`.
    pub role: String,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub state_digest: String,
}

/// A leader seen during the run, from `at_s` seconds after the measured window began
/// (negative: during warm-up or setup).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LeaderChange {
    pub at_s: f64,
    pub node: u64,
    pub term: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Versions {
    pub loadgen: String,
}

/// The cluster a run drove, as it ended (`cluster` in `summary.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterEnd {
    /// `local` (started by loadgen) or `external` (`--target`).
    pub kind: String,
    pub endpoints: Vec<String>,
    pub leader_at_start: Option<String>,
    pub nodes_at_end: Vec<NodeEnd>,
    /// Every leader seen while the load ran, in order (the first is the leader at the start).
    #[serde(default)]
    pub leader_changes: Vec<LeaderChange>,
    /// What the cluster secured: `tls` (every connection TLS, peers mutually
    /// authenticated) and `auth` (calls carried user tokens). Both false: the bare cluster.
    #[serde(default)]
    pub security: SecurityUsed,
}

/// `cluster.security` in `summary.json`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecurityUsed {
    pub tls: bool,
    pub auth: bool,
}

/// What summary.json keeps of the checker's report: the verdict, what could not be read,
/// the counts, and the first anomalies (all of them are in `check.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CheckSummary {
    /// `pass`, `fail` (an anomaly), `incomplete` (something could not be read, or the check
    /// could not run) or `skipped` (`check: off`).
    pub verdict: Verdict,
    /// Why it is incomplete or skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub counts: Counts,
    /// Live replicas that had not applied the leader's commit index when the wait after the
    /// load ended (their lists need only be a prefix of the leader's).
    pub lagging: Vec<LaggingReplica>,
    /// Chats that could not be read whole.
    pub unread_chats: u64,
    /// Replicas that did not answer after the load, so were not read.
    #[serde(default)]
    pub unreachable: Vec<String>,
    pub anomalies: Vec<Anomaly>,
    pub anomalies_total: usize,
}

impl CheckSummary {
    pub const KEPT: usize = 50;

    pub fn of(r: &Report) -> CheckSummary {
        CheckSummary {
            verdict: r.verdict,
            reason: r.reason.clone(),
            counts: r.counts.clone(),
            lagging: r.lagging.clone(),
            unread_chats: r.unread_chats,
            unreachable: r.unreachable.clone(),
            anomalies: r.anomalies.iter().take(Self::KEPT).cloned().collect(),
            anomalies_total: r.anomalies.len(),
        }
    }

    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }
}

impl Summary {
    /// The name a report's line and aggregate carry: the scenario, with the system after it
    /// when that is not Telegraft (`chat [etcd]`), so that each system gets its own lines.
    pub fn line(&self) -> String {
        if self.system == "telegraft" {
            self.scenario.clone()
        } else {
            format!("{} [{}]", self.scenario, self.system)
        }
    }

    pub fn slo_pass(&self) -> bool {
        self.slo.iter().all(SloResult::passed)
    }

    /// Sums up a run from what its parts handed over.
    pub fn of(run: RunFacts) -> Summary {
        let s = run.scenario;
        let duration_s = s.duration().as_secs_f64();
        let ops = op_results(&run.load.recorder, duration_s);
        let generator = Generator::of(run.load);
        let slo = evaluate_slos(s, &ops, &generator, &run.faults);
        let time_split = ops
            .get("send_message")
            .filter(|o| o.count > 0)
            .and_then(|o| {
                time_split::of(
                    "send_message",
                    "SendMessage",
                    o.service_time_ms.mean,
                    &run.samples.metrics,
                )
            });
        Summary {
            run_id: run.run_id.to_string(),
            system: s.system.name().to_string(),
            scenario: s.name.clone(),
            scenario_file: run.scenario_file.display().to_string(),
            description: s.description.clone(),
            replicas: run.replicas,
            model: match s.load.model {
                Model::Open => "open",
                Model::Closed => "closed",
            }
            .into(),
            offered_rate: run
                .load
                .pacing
                .as_ref()
                .map(|p| round_to(p.intended as f64 / duration_s, 1)),
            offered_schedule: offered_schedule(s),
            users: s.load.users,
            seed: s.seed,
            warmup_s: s.load.warmup.0.as_secs_f64(),
            duration_s,
            started_at: provenance::utc_seconds(run.started),
            git_rev: provenance::git_rev(),
            machine: Machine::detect(run.results_root),
            ops,
            slo,
            generator,
            cluster: run.cluster,
            versions: Versions {
                loadgen: env!("CARGO_PKG_VERSION").into(),
            },
            check: CheckSummary::of(run.check),
            faults: run.faults,
            interrupted: run.interrupted,
            resources: Resources::of(run.samples),
            time_split,
        }
    }
}

/// What a run hands over to be summed up in `summary.json`.
pub struct RunFacts<'a> {
    pub run_id: &'a str,
    pub scenario: &'a Scenario,
    /// The scenario file as given on the command line.
    pub scenario_file: &'a Path,
    pub replicas: u32,
    /// When the run began (before the cluster started).
    pub started: SystemTime,
    /// The folder of run folders: its file system is the machine's `disk`.
    pub results_root: &'a Path,
    pub load: &'a RunOutput,
    pub cluster: ClusterEnd,
    pub check: &'a Report,
    pub faults: Vec<FaultRecord>,
    /// Stopped early by a signal.
    pub interrupted: bool,
    /// Each second's resources and metrics.
    pub samples: &'a Samples,
}

impl ClusterEnd {
    /// The cluster at the end: every replica that answered, and every leader seen, timed
    /// from the start of the measured window `measured_start`.
    pub fn new(
        kind: &str,
        endpoints: &[String],
        leader_at_start: Option<String>,
        nodes_at_end: Vec<NodeView>,
        leaders: Vec<LeaderSeen>,
        measured_start: SystemTime,
        security: crate::scenario::Security,
    ) -> ClusterEnd {
        ClusterEnd {
            security: SecurityUsed {
                tls: security.tls,
                auth: security.auth,
            },
            kind: kind.into(),
            endpoints: endpoints.to_vec(),
            leader_at_start,
            nodes_at_end: nodes_at_end
                .into_iter()
                .map(|v| NodeEnd {
                    node_id: v.node_id,
                    role: v.role_name().to_string(),
                    addr: v.addr,
                    term: v.term,
                    commit_index: v.commit_index,
                    applied_index: v.applied_index,
                    state_digest: v.state_digest,
                })
                .collect(),
            leader_changes: leaders
                .into_iter()
                .map(|l| LeaderChange {
                    at_s: seconds_between(measured_start, l.at),
                    node: l.node,
                    term: l.term,
                })
                .collect(),
        }
    }
}

impl Generator {
    fn of(out: &RunOutput) -> Generator {
        let pacing = out.pacing.as_ref();
        Generator {
            calls: out.calls,
            cpu_s: out.cpu.as_secs_f64(),
            cpu_us_per_call: round_to(out.cpu.as_secs_f64() * 1e6 / out.calls.max(1) as f64, 1),
            intended: pacing.map(|p| p.intended),
            sent: pacing.map(|p| p.sent),
            late: pacing.map(|p| p.late),
            lateness_ms: pacing.map(|p| p.lateness_ms),
            warning: pacing.and_then(|p| p.warning()),
            reroutes: out.reroutes,
        }
    }
}

/// The open model's rate steps over the measured window; empty for the closed model.
fn offered_schedule(s: &Scenario) -> Vec<RateStep> {
    Schedule::from_scenario(s)
        .map(|sch| {
            sch.measured_segments(s.load.warmup.0)
                .into_iter()
                .map(|(a, b, rate)| RateStep {
                    start_s: a.as_secs_f64(),
                    end_s: b.as_secs_f64(),
                    rate,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `v` rounded to `decimals` places.
fn round_to(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

/// `to - from` in seconds (to the millisecond), negative when `to` is earlier.
fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    let r = |d: Duration| round_to(d.as_secs_f64(), 3);
    match to.duration_since(from) {
        Ok(d) => r(d),
        Err(e) => -r(e.duration()),
    }
}

/// Per-operation results over a measured window of `duration_s`.
pub fn op_results(recorder: &Recorder, duration_s: f64) -> BTreeMap<String, OpResult> {
    recorder
        .ops()
        .filter_map(|op| Some((op, recorder.summary(op)?)))
        .map(|(op, s): (Op, OpSummary)| {
            (
                op.name().to_string(),
                OpResult {
                    count: s.count,
                    errors: s.errors,
                    errors_by_code: s.errors_by_code,
                    throughput: round_to(s.count as f64 / duration_s, 1),
                    latency_ms: s.latency_ms,
                    service_time_ms: s.service_time_ms,
                },
            )
        })
        .collect()
}

/// Judges the scenario's objectives: per operation, latency percentiles (of every call, on
/// the corrected latency; failing when no call succeeded), the error rate and the least
/// throughput; for the run, whether the schedule was kept and the most unavailability any
/// one fault cost.
pub fn evaluate_slos(
    scenario: &Scenario,
    ops: &BTreeMap<String, OpResult>,
    generator: &Generator,
    faults: &[FaultRecord],
) -> Vec<SloResult> {
    let mut out = Vec::new();
    let judge = |op: &str, objective: &str, limit: f64, actual: Option<f64>, unit: &str| {
        let pass = actual.is_some_and(|a| {
            if objective == "min_throughput" {
                a >= limit
            } else {
                a <= limit
            }
        });
        SloResult {
            op: op.to_string(),
            objective: objective.to_string(),
            limit: SloValue::Number(limit),
            actual: actual.map(SloValue::Number),
            unit: unit.to_string(),
            verdict: if pass {
                SloVerdict::Pass
            } else {
                SloVerdict::Fail
            },
            latency: None,
        }
    };
    for (op, slo) in &scenario.slo.ops {
        let name = op.name();
        let r = ops.get(name);
        for (metric, limit) in slo.latencies() {
            let limit_ms = limit.as_secs_f64() * 1000.0;
            let actual_ms = r
                .filter(|r| r.count > 0)
                .and_then(|r| r.latency_ms.get(metric));
            let mut v = judge(name, metric, limit_ms, actual_ms, "ms");
            v.latency = Some(LatencyLimit {
                limit_ms,
                actual_ms,
            });
            out.push(v);
        }
        if let Some(limit) = slo.error_rate {
            let rate = r
                .filter(|r| r.count + r.errors > 0)
                .map(|r| round_to(100.0 * r.errors as f64 / (r.count + r.errors) as f64, 4));
            out.push(judge(name, "error_rate", limit.0, rate, "%"));
        }
        if let Some(limit) = slo.min_throughput {
            let actual = r.map_or(0.0, |r| r.throughput);
            out.push(judge(
                name,
                "min_throughput",
                limit.0,
                Some(actual),
                "ops/s",
            ));
        }
    }
    let run = &scenario.slo.run;
    if run.schedule.is_some() {
        let kept = generator.intended.is_some() && generator.warning.is_none();
        let word = if kept { "kept" } else { "missed" };
        out.push(SloResult {
            op: "run".into(),
            objective: "schedule".into(),
            limit: SloValue::Text("kept".into()),
            actual: Some(SloValue::Text(word.into())),
            unit: String::new(),
            verdict: if kept {
                SloVerdict::Pass
            } else {
                SloVerdict::Fail
            },
            latency: None,
        });
    }
    if let Some(limit) = run.unavailable_ms {
        // Every fault carried out must have been followed by an acknowledged write.
        let carried_out: Vec<Option<f64>> = faults
            .iter()
            .filter(|f| f.node.is_some())
            .map(|f| f.unavailable_ms)
            .collect();
        let worst = carried_out
            .iter()
            .try_fold(0.0f64, |worst, u| u.map(|u| worst.max(u)));
        out.push(judge("run", "unavailable_ms", limit.0, worst, "ms"));
    }
    out
}

/// The JSON Schema of `summary.json`, generated from [`Summary`], as the checked-in
/// `loadgen/summary.schema.json` holds it (pretty, with a final newline).
pub fn schema() -> String {
    let schema = schemars::schema_for!(Summary);
    serde_json::to_string_pretty(&schema).expect("a schema serializes") + "\n"
}
