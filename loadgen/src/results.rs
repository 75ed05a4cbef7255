//! The results folder of one run, `results/<run-id>/`, and the summary printed at the end.
//!
//! The folder is the contract the reports (and anyone else's tools) read:
//! - `scenario.yaml`: the effective scenario, after `--set` overrides;
//! - `summary.json`: the [`Summary`] below (run metadata, per-operation counts and latency
//!   percentiles, SLO verdicts, how well the generator kept its schedule);
//! - `<op>.hdr.hlog`: per-second HDR histograms of corrected latency, as a standard
//!   HdrHistogram interval log (microseconds; other HdrHistogram tools read it);
//! - `timeseries.csv`: one row per second per operation;
//! - `goose-report.html`, `goose-report.json`: Goose's own report (service times, coarse);
//! - `nodes/node-N.log`: each replica's log, when `loadgen` started the cluster.
//!
//! Latencies are in milliseconds with microsecond resolution. `latency_ms` is measured from
//! the intended send time (open model) and `service_time_ms` from the actual send.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::record::{Interval, OpSummary, Percentiles, Recorder};
use crate::scenario::{Op, Scenario};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
}

impl From<Percentiles> for Latency {
    fn from(p: Percentiles) -> Latency {
        let r = |v: f64| (v * 1000.0).round() / 1000.0;
        Latency {
            p50: r(p.p50),
            p90: r(p.p90),
            p99: r(p.p99),
            p999: r(p.p999),
            p9999: r(p.p9999),
            max: r(p.max),
        }
    }
}

impl Latency {
    fn get(&self, metric: &str) -> f64 {
        match metric {
            "p50" => self.p50,
            "p90" => self.p90,
            "p99" => self.p99,
            "p999" => self.p999,
            "p9999" => self.p9999,
            _ => self.max,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpResult {
    /// Successful calls in the measured window.
    pub count: u64,
    pub errors: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    /// Successful calls per second of the measured window.
    pub throughput: f64,
    /// From the intended send time (coordinated-omission corrected).
    pub latency_ms: Latency,
    /// From the actual send.
    pub service_time_ms: Latency,
}

/// One constant-rate stretch of the open model's schedule, in seconds from the start of the
/// measured window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateStep {
    pub start_s: f64,
    pub end_s: f64,
    pub rate: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SloResult {
    pub op: String,
    pub metric: String,
    pub limit_ms: f64,
    /// `None` when the operation had no successful call to measure.
    pub actual_ms: Option<f64>,
    pub pass: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_mb: u64,
    pub cpu_model: String,
    pub kernel: String,
    /// The file system the results (and the replicas' data) were written to:
    /// `ext4 on /dev/vda1`.
    #[serde(default)]
    pub disk: String,
}

/// The file system holding `path`: the longest mount point that contains it.
fn disk_of(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && path.starts_with(f[1])).then(|| (f[1].len(), f[2], f[0]))
        })
        .max_by_key(|m| m.0)
        .map(|(_, fs, dev)| format!("{fs} on {dev}"))
        .unwrap_or_default()
}

impl Machine {
    pub fn detect(results_dir: &Path) -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let memory_kb = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_mb: memory_kb / 1024,
            cpu_model: read("/proc/cpuinfo")
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
                .unwrap_or_default(),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            disk: disk_of(results_dir),
        }
    }
}

/// How well the open model's schedule was kept, and what the generator cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    pub lateness_ms: Option<Latency>,
    /// Set when the generator did not keep the schedule.
    pub warning: Option<String>,
    pub connect_failures: u64,
}

/// One replica as seen at the end of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeEnd {
    pub node_id: u64,
    pub addr: String,
    pub role: String,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub state_digest: String,
}

/// A leader seen during the run, from `at_s` seconds after the measured window began
/// (negative: during warm-up or setup).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaderChange {
    pub at_s: f64,
    pub node: u64,
    pub term: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Versions {
    pub loadgen: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// `local` (started by loadgen) or `external` (`--target`).
    pub kind: String,
    pub endpoints: Vec<String>,
    pub leader_at_start: Option<String>,
    pub nodes_at_end: Vec<NodeEnd>,
    /// Every leader seen while the load ran, in order (the first is the leader at the start).
    #[serde(default)]
    pub leader_changes: Vec<LeaderChange>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub run_id: String,
    pub scenario: String,
    pub scenario_file: String,
    pub description: String,
    pub replicas: u32,
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
    pub started_at: String,
    pub git_rev: Option<String>,
    pub machine: Machine,
    pub ops: BTreeMap<String, OpResult>,
    pub slo: Vec<SloResult>,
    pub generator: Generator,
    pub cluster: Cluster,
    #[serde(default)]
    pub versions: Versions,
    /// The history checker's verdict; `None` when the target could not be checked.
    #[serde(default)]
    pub check: Option<CheckSummary>,
    /// The faults injected, with their unavailability windows.
    #[serde(default)]
    pub faults: Vec<crate::faults::FaultRecord>,
}

/// What summary.json keeps of the checker's report: the verdict, the counts, and the first
/// anomalies (all of them are in the report the checker writes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckSummary {
    pub verdict: String,
    pub counts: crate::check::Counts,
    pub anomalies: Vec<crate::check::Anomaly>,
    pub anomalies_total: usize,
}

impl CheckSummary {
    pub const KEPT: usize = 50;

    pub fn of(r: &crate::check::Report) -> CheckSummary {
        CheckSummary {
            verdict: r.verdict.clone(),
            counts: r.counts.clone(),
            anomalies: r.anomalies.iter().take(Self::KEPT).cloned().collect(),
            anomalies_total: r.anomalies.len(),
        }
    }
}

impl Summary {
    pub fn slo_pass(&self) -> bool {
        self.slo.iter().all(|s| s.pass)
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
                    throughput: (s.count as f64 / duration_s * 10.0).round() / 10.0,
                    latency_ms: s.latency_ms.into(),
                    service_time_ms: s.service_time_ms.into(),
                },
            )
        })
        .collect()
}

/// Checks the scenario's objectives against the corrected latencies.
pub fn evaluate_slos(scenario: &Scenario, ops: &BTreeMap<String, OpResult>) -> Vec<SloResult> {
    let mut out = Vec::new();
    for (op, slo) in &scenario.slo {
        let limits = [
            ("p50", slo.p50),
            ("p90", slo.p90),
            ("p99", slo.p99),
            ("p999", slo.p999),
            ("p9999", slo.p9999),
            ("max", slo.max),
        ];
        for (metric, limit) in limits {
            let Some(limit) = limit else { continue };
            let limit_ms = limit.0.as_secs_f64() * 1000.0;
            let actual_ms = ops
                .get(op.name())
                .filter(|r| r.count > 0)
                .map(|r| r.latency_ms.get(metric));
            out.push(SloResult {
                op: op.name().to_string(),
                metric: metric.to_string(),
                limit_ms,
                actual_ms,
                pass: actual_ms.is_some_and(|a| a <= limit_ms),
            });
        }
    }
    out
}

/// Writes `summary.json`, `scenario.yaml`, `timeseries.csv` and the `.hdr.hlog` files.
pub fn write(
    dir: &Path,
    summary: &Summary,
    scenario: &Scenario,
    recorder: &Recorder,
    timeseries: &[Interval],
    measured_start_unix_s: f64,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let put = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes)
            .with_context(|| format!("writing {}", dir.join(name).display()))
    };
    put("scenario.yaml", scenario.to_yaml().as_bytes())?;
    put(
        "summary.json",
        (serde_json::to_string_pretty(summary)? + "\n").as_bytes(),
    )?;
    put("timeseries.csv", timeseries_csv(timeseries).as_bytes())?;
    for op in recorder.ops() {
        let mut buf = Vec::new();
        recorder.write_hlog(op, &mut buf, measured_start_unix_s)?;
        put(&format!("{}.hdr.hlog", op.name()), &buf)?;
    }
    Ok(())
}

pub fn timeseries_csv(rows: &[Interval]) -> String {
    let mut out = String::from("second,op,count,errors,p50_ms,p99_ms,max_ms\n");
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{:.3},{:.3},{:.3}",
            r.second,
            r.op.name(),
            r.count,
            r.errors,
            r.p50_ms,
            r.p99_ms,
            r.max_ms
        );
    }
    out
}

/// The end-of-run table: one row per operation, then the SLO verdicts.
pub fn table(summary: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<15} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11}",
        "operation",
        "ok",
        "errors",
        "ops/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "svc p99 ms"
    );
    for (op, r) in &summary.ops {
        let l = &r.latency_ms;
        let _ = writeln!(
            out,
            "{:<15} {:>8} {:>7} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>11.2}",
            op,
            r.count,
            r.errors,
            r.throughput,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            r.service_time_ms.p99
        );
        if !r.errors_by_code.is_empty() {
            let codes: Vec<String> = r
                .errors_by_code
                .iter()
                .map(|(c, n)| format!("{c} {n}"))
                .collect();
            let _ = writeln!(out, "{:<15} errors: {}", "", codes.join(", "));
        }
    }
    for s in &summary.slo {
        let actual = s
            .actual_ms
            .map_or("no successful calls".to_string(), |a| format!("{a:.2} ms"));
        let _ = writeln!(
            out,
            "SLO {} {} <= {} ms: {} ({})",
            s.op,
            s.metric,
            s.limit_ms,
            if s.pass { "pass" } else { "MISSED" },
            actual
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn scenario() -> Scenario {
        Scenario::parse(
            "t.yaml",
            "name: t\ndataset: {users: 2, chats: 1, members_per_chat: 1}\n\
             load: {model: open, rate: 10, users: 1, duration: 2s}\n\
             mix: {send_message: 1, get_messages: 1}\n\
             slo: {send_message: {p99: 5ms, max: 101ms}, get_messages: {p50: 1ms}}\n",
            &[],
        )
        .unwrap()
    }

    #[test]
    fn slos_pass_and_fail_on_corrected_latency() {
        let mut r = Recorder::new();
        for ms in 1..=100u64 {
            // Service time is always 1 ms; corrected latency grows to 100 ms.
            r.ok(
                Op::SendMessage,
                Duration::from_millis(ms),
                Duration::from_millis(1),
            );
        }
        let ops = op_results(&r, 2.0);
        assert_eq!(ops["send_message"].count, 100);
        assert_eq!(ops["send_message"].throughput, 50.0);
        let slo = evaluate_slos(&scenario(), &ops);
        let verdict = |op: &str, m: &str| {
            slo.iter()
                .find(|s| s.op == op && s.metric == m)
                .map(|s| (s.pass, s.actual_ms))
                .unwrap()
        };
        assert!(!verdict("send_message", "p99").0, "p99 is 99 ms > 5 ms");
        // HDR reports the top of the 3-significant-digit bucket: 100 ms reads as 100.06.
        assert!(verdict("send_message", "max").0);
        // No successful get_messages call: the objective cannot be met.
        assert_eq!(verdict("get_messages", "p50"), (false, None));
    }

    #[test]
    fn timeseries_has_a_header_and_a_row_per_interval() {
        let mut r = Recorder::new();
        r.ok(
            Op::SendMessage,
            Duration::from_millis(3),
            Duration::from_millis(2),
        );
        r.error(Op::SendMessage, "Unavailable");
        let rows = r.close_interval(1);
        let csv = timeseries_csv(&rows);
        assert_eq!(
            csv,
            "second,op,count,errors,p50_ms,p99_ms,max_ms\n1,send_message,1,1,3.001,3.001,3.001\n"
        );
    }
}
