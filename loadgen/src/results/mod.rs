//! The results folder of one run, `results/<run-id>/`: every file of the contract is written
//! here, and nowhere else. The folder is what the reports (and anyone else's tools) read:
//! - `scenario.yaml`: the effective scenario, after `--set` overrides;
//! - `summary.json`: the [`Summary`] (run metadata, per-operation counts and latency
//!   percentiles, SLO verdicts, how well the generator kept its schedule, the cluster at the
//!   end, the faults, the check's verdict); its JSON Schema is [`schema`];
//! - `<op>.hdr.hlog`: per-second HDR histograms of corrected latency, as a standard
//!   HdrHistogram interval log (microseconds; other HdrHistogram tools read it);
//! - `timeseries.csv`: one row per second per operation;
//! - `history.jsonl`, `history.elle.jsonl`: every call the checker follows, and the same
//!   history in Elle's list-append form;
//! - `check.json`: the history checker's whole report;
//! - `resources.csv`: each second of warm-up and the measured window, each replica
//!   process's and the generator's CPU %, RSS and disk bytes read and written;
//! - `metrics.csv`: each second, each replica's metrics (gauges, counter rates, histogram
//!   rates, means and p50/p99), in long format ([`crate::sample`] names them); the
//!   summary's `time_split` is made from them ([`time_split`]);
//! - `goose-report.html`, `goose-report.json`: Goose's own report (Goose writes them, to the
//!   paths given here);
//! - `nodes/node-N.log`: each replica's log, when `loadgen` started the cluster;
//! - `data/`: the replicas' data while the run lasts (removed unless `--keep-data`).
//!
//! A `loadgen capacity` run's folder holds `capacity.json` ([`capacity`]) and a run folder
//! per probe under `probes/`.
//!
//! `results/README.md` documents the contract for readers; keep the two in step.

pub mod capacity;
mod provenance;
mod summary;
pub mod time_split;

pub use crate::control::FaultRecord;
pub use provenance::{Machine, utc_seconds};
pub use summary::{
    CheckSummary, ClusterEnd, Generator, LatencyLimit, LeaderChange, NodeEnd, OpResult,
    ProcessResources, RateStep, Resources, RunFacts, SecurityUsed, SloResult, SloValue, SloVerdict,
    Summary, Versions, evaluate_slos, op_results, schema,
};

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;
use serde::Serialize;

use crate::history::{self, Event, Report};
use crate::load::{Interval, Recorder};
use crate::sample::Samples;
use crate::scenario::Scenario;

/// The file names of the contract.
pub mod files {
    pub const SUMMARY: &str = "summary.json";
    pub const SCENARIO: &str = "scenario.yaml";
    pub const TIMESERIES: &str = "timeseries.csv";
    pub const HISTORY: &str = "history.jsonl";
    pub const ELLE: &str = "history.elle.jsonl";
    pub const CHECK: &str = "check.json";
    pub const RESOURCES: &str = "resources.csv";
    pub const METRICS: &str = "metrics.csv";
    pub const GOOSE_HTML: &str = "goose-report.html";
    pub const GOOSE_JSON: &str = "goose-report.json";
    /// The replicas' logs (a folder).
    pub const NODES: &str = "nodes";
    /// The replicas' data while the run lasts (a folder).
    pub const DATA: &str = "data";

    /// One operation's interval log: `send_message.hdr.hlog`.
    pub fn hlog(op: &str) -> String {
        format!("{op}.hdr.hlog")
    }
}

/// One run's folder.
#[derive(Clone, Debug)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates a new run folder under `root`, named `<UTC start>-<scenario>-r<replicas>` (so
    /// names sort by time), with `-2`, `-3`, ... when that name is taken.
    pub fn create(
        root: &Path,
        started: SystemTime,
        scenario: &str,
        replicas: u32,
    ) -> anyhow::Result<RunDir> {
        RunDir::unique(root, &run_id(started, scenario, replicas))
    }

    /// A new `loadgen capacity` run's folder under `root`: `<UTC start>-<scenario>-capacity`.
    pub fn create_capacity(
        root: &Path,
        started: SystemTime,
        scenario: &str,
    ) -> anyhow::Result<RunDir> {
        let id = run_id(started, scenario, 0);
        let id = format!("{}-capacity", id.strip_suffix("-r0").unwrap_or(&id));
        RunDir::unique(root, &id)
    }

    /// A new run folder at exactly `path` (a capacity probe's); an error when it exists.
    pub fn create_at(path: &Path) -> anyhow::Result<RunDir> {
        if path.exists() {
            anyhow::bail!("{} exists already", path.display());
        }
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(RunDir {
            path: path.to_path_buf(),
        })
    }

    /// `root/id`, or `root/id-2`, `-3`, ... when that is taken; created.
    fn unique(root: &Path, id: &str) -> anyhow::Result<RunDir> {
        let mut path = root.join(id);
        let mut n = 1;
        while path.exists() {
            n += 1;
            path = root.join(format!("{id}-{n}"));
        }
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(RunDir { path })
    }

    /// An existing run folder.
    pub fn open(path: &Path) -> RunDir {
        RunDir {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder's name, which is the run's id.
    pub fn run_id(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    }

    /// Where a local cluster keeps its replicas' data during the run.
    pub fn data_dir(&self) -> PathBuf {
        self.path.join(files::DATA)
    }

    /// Where Goose writes its reports.
    pub fn goose_reports(&self) -> Vec<String> {
        [files::GOOSE_HTML, files::GOOSE_JSON]
            .iter()
            .map(|f| self.path.join(f).display().to_string())
            .collect()
    }

    fn put(&self, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let path = self.path.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    }

    /// `summary.json`, `scenario.yaml`, `timeseries.csv` and the `.hdr.hlog` files (whose
    /// times count from `measured_start`).
    pub fn write_measurements(
        &self,
        summary: &Summary,
        scenario: &Scenario,
        recorder: &Recorder,
        timeseries: &[Interval],
        measured_start: SystemTime,
    ) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.path)
            .with_context(|| format!("creating {}", self.path.display()))?;
        self.put(files::SCENARIO, scenario.to_yaml().as_bytes())?;
        self.put(files::SUMMARY, pretty(summary)?.as_bytes())?;
        self.put(files::TIMESERIES, timeseries_csv(timeseries)?.as_bytes())?;
        for op in recorder.ops() {
            let mut buf = Vec::new();
            recorder.write_hlog(op, &mut buf, measured_start)?;
            self.put(&files::hlog(op.name()), &buf)?;
        }
        Ok(())
    }

    /// `history.jsonl` (one event per line) and `history.elle.jsonl`.
    pub fn write_history(&self, history: &[Event]) -> anyhow::Result<()> {
        let mut lines = String::new();
        for e in history {
            lines.push_str(&serde_json::to_string(e)?);
            lines.push('\n');
        }
        self.put(files::HISTORY, lines.as_bytes())?;
        let mut elle = String::new();
        for op in history::to_elle(history) {
            elle.push_str(&op.to_string());
            elle.push('\n');
        }
        self.put(files::ELLE, elle.as_bytes())
    }

    /// The events of `history.jsonl`.
    pub fn read_history(&self) -> anyhow::Result<Vec<Event>> {
        let path = self.path.join(files::HISTORY);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, line)| {
                serde_json::from_str(line).map_err(|e| {
                    let at = format!("{}:{}", path.display(), i + 1);
                    if history::is_old_format(line) {
                        // Bad input, not a failed run: exit 2.
                        anyhow::Error::new(crate::exit::UsageError(format!(
                            "{at}: {}",
                            history::OLD_FORMAT
                        )))
                    } else {
                        anyhow::Error::new(e).context(format!("{at}: not a history event"))
                    }
                })
            })
            .collect()
    }

    /// `resources.csv` and `metrics.csv` (headers only when nothing was sampled).
    pub fn write_samples(&self, samples: &Samples) -> anyhow::Result<()> {
        self.put(
            files::RESOURCES,
            csv_of(
                &samples.resources,
                &[
                    "t_s",
                    "process",
                    "pid",
                    "cpu_pct",
                    "rss_bytes",
                    "read_bytes",
                    "written_bytes",
                ],
            )?
            .as_bytes(),
        )?;
        self.put(
            files::METRICS,
            csv_of(&samples.metrics, &["t_s", "node", "metric", "value"])?.as_bytes(),
        )
    }

    /// `check.json`: the checker's whole report.
    pub fn write_check(&self, report: &Report) -> anyhow::Result<()> {
        self.put(files::CHECK, pretty(report)?.as_bytes())
    }

    /// Copies each replica's log to `nodes/node-N.log` (a replica that never wrote one is
    /// skipped).
    pub fn keep_node_logs(&self, logs: &[(u64, PathBuf)]) -> anyhow::Result<()> {
        let nodes = self.path.join(files::NODES);
        std::fs::create_dir_all(&nodes)?;
        for (id, log) in logs {
            if log.exists() {
                std::fs::copy(log, nodes.join(format!("node-{id}.log")))
                    .with_context(|| format!("keeping {}", log.display()))?;
            }
        }
        Ok(())
    }
}

/// `<UTC start>-<scenario>-r<replicas>`, with anything but letters, digits, `-` and `_` in the
/// scenario's name made a `-`.
fn run_id(started: SystemTime, name: &str, replicas: u32) -> String {
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
    format!("{}-{name}-r{replicas}", provenance::utc_compact(started))
}

/// Pretty JSON with a final newline.
fn pretty(value: &impl Serialize) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// One row of `timeseries.csv`.
#[derive(Serialize)]
struct TimeseriesRow<'a> {
    second: u64,
    op: &'a str,
    count: u64,
    errors: u64,
    #[serde(serialize_with = "milliseconds")]
    p50_ms: f64,
    #[serde(serialize_with = "milliseconds")]
    p99_ms: f64,
    #[serde(serialize_with = "milliseconds")]
    max_ms: f64,
}

/// Milliseconds always with three decimals (`3.000`, microsecond resolution), as the
/// contract has always written them; the csv crate alone would write `3.0`.
fn milliseconds<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:.3}"))
}

/// A header (`header`, when there is no row to write it), then one row per item.
fn csv_of<T: Serialize>(rows: &[T], header: &[&str]) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)?;
    }
    if rows.is_empty() {
        w.write_record(header)?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

/// `timeseries.csv`: a header, then one row per interval.
pub fn timeseries_csv(rows: &[Interval]) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(TimeseriesRow {
            second: r.second,
            op: r.op.name(),
            count: r.count,
            errors: r.errors,
            p50_ms: r.p50_ms,
            p99_ms: r.p99_ms,
            max_ms: r.max_ms,
        })?;
    }
    if rows.is_empty() {
        // The csv writer writes the header with the first row: an empty run still gets it.
        w.write_record([
            "second", "op", "count", "errors", "p50_ms", "p99_ms", "max_ms",
        ])?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Op;
    use std::time::{Duration, UNIX_EPOCH};

    fn scenario() -> Scenario {
        Scenario::parse(
            "t.yaml",
            "name: t\ndataset: {users: 2, chats: 1, members_per_chat: 1}\n\
             load: {model: open, rate: 10, users: 1, duration: 2s}\n\
             mix: {send_message: 1, get_messages: 1}\n\
             slo: {send_message: {p99: 5ms, max: 101ms, error_rate: 5%, min_throughput: 40},\
                   get_messages: {p50: 1ms, error_rate: 0.1%, min_throughput: 1},\
                   run: {schedule: kept, unavailable_ms: 1500}}\n",
            &[],
        )
        .unwrap()
    }

    fn generator(warning: Option<&str>) -> Generator {
        Generator {
            calls: 0,
            cpu_s: 0.0,
            cpu_us_per_call: 0.0,
            intended: Some(20),
            sent: Some(20),
            late: Some(0),
            lateness_ms: None,
            warning: warning.map(String::from),
            reroutes: 0,
        }
    }

    fn fault(unavailable_ms: Option<f64>) -> FaultRecord {
        FaultRecord {
            at_s: 1.0,
            action: crate::scenario::Action::Kill,
            target: "leader".into(),
            node: Some(1),
            unavailable_ms,
            error: None,
            unreached: vec![],
            healed: None,
            at_us: 0,
        }
    }

    #[test]
    fn slos_pass_and_fail_on_corrected_latency_errors_throughput_schedule_and_faults() {
        let mut r = Recorder::new();
        for ms in 1..=100u64 {
            // Service time is always 1 ms; corrected latency grows to 100 ms.
            r.ok(
                Op::SendMessage,
                Duration::from_millis(ms),
                Duration::from_millis(1),
            );
        }
        // 4 failures of 104 calls: 3.8462%.
        for _ in 0..4 {
            r.error(Op::SendMessage, "Unavailable", Duration::from_micros(50));
        }
        r.error(Op::GetMessages, "Timeout", Duration::from_secs(5));
        let ops = op_results(&r, 2.0);
        assert_eq!(ops["send_message"].count, 100);
        assert_eq!(ops["send_message"].throughput, 50.0);
        let slo = evaluate_slos(&scenario(), &ops, &generator(None), &[fault(Some(900.0))]);
        let verdict = |op: &str, m: &str| {
            let s = slo.iter().find(|s| s.op == op && s.objective == m).unwrap();
            (s.passed(), s.actual.clone())
        };
        let n = |v: f64| Some(SloValue::Number(v));
        assert!(!verdict("send_message", "p99").0, "p99 is 99 ms > 5 ms");
        // HDR reports the top of the 3-significant-digit bucket: 100 ms reads as 100.06.
        assert!(verdict("send_message", "max").0);
        assert_eq!(verdict("send_message", "error_rate"), (true, n(3.8462)));
        assert_eq!(verdict("send_message", "min_throughput"), (true, n(50.0)));
        // No successful get_messages call: its latency cannot be met, its one call failed.
        assert_eq!(verdict("get_messages", "p50"), (false, None));
        assert_eq!(verdict("get_messages", "error_rate"), (false, n(100.0)));
        assert_eq!(verdict("get_messages", "min_throughput"), (false, n(0.0)));
        assert_eq!(
            verdict("run", "schedule"),
            (true, Some(SloValue::Text("kept".into())))
        );
        assert_eq!(verdict("run", "unavailable_ms"), (true, n(900.0)));
        // How they read (the JUnit test cases' names).
        let names: Vec<String> = slo.iter().map(SloResult::name).collect();
        assert_eq!(
            names,
            [
                "send_message p99 <= 5ms",
                "send_message max <= 101ms",
                "send_message error_rate <= 5%",
                "send_message min_throughput >= 40 ops/s",
                "get_messages p50 <= 1ms",
                "get_messages error_rate <= 0.1%",
                "get_messages min_throughput >= 1 ops/s",
                "run schedule: kept",
                "run unavailable_ms <= 1500ms",
            ]
        );
        // Latency entries keep their milliseconds; the others do not have them.
        let json = serde_json::to_value(&slo).unwrap();
        assert_eq!(json[0]["limit_ms"], 5.0);
        assert!(json[2].get("limit_ms").is_none());
        let back: Vec<SloResult> = serde_json::from_value(json).unwrap();
        assert_eq!(back, slo);

        // A schedule not kept, a fault never recovered from.
        let slo = evaluate_slos(
            &scenario(),
            &ops,
            &generator(Some("behind")),
            &[fault(Some(10.0)), fault(None)],
        );
        let run: Vec<(bool, String)> = slo
            .iter()
            .filter(|s| s.op == "run")
            .map(|s| (s.passed(), s.measured()))
            .collect();
        assert_eq!(
            run,
            [
                (false, "missed".to_string()),
                (false, "never recovered".to_string())
            ]
        );
    }

    #[test]
    fn timeseries_has_a_header_and_a_row_per_interval() {
        let mut r = Recorder::new();
        r.ok(
            Op::SendMessage,
            Duration::from_millis(3),
            Duration::from_millis(2),
        );
        r.error(Op::SendMessage, "Unavailable", Duration::from_millis(3));
        let rows = r.close_interval(1);
        assert_eq!(
            timeseries_csv(&rows).unwrap(),
            "second,op,count,errors,p50_ms,p99_ms,max_ms\n1,send_message,1,1,3.001,3.001,3.001\n"
        );
        r.ok(
            Op::SendMessage,
            Duration::from_millis(2),
            Duration::from_millis(2),
        );
        assert!(
            timeseries_csv(&r.close_interval(2))
                .unwrap()
                .ends_with("\n2,send_message,1,0,2.000,2.000,2.000\n"),
            "three decimals, always"
        );
        assert_eq!(
            timeseries_csv(&[]).unwrap(),
            "second,op,count,errors,p50_ms,p99_ms,max_ms\n"
        );
    }

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

    #[test]
    fn the_history_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path(), UNIX_EPOCH, "t", 1).unwrap();
        let again = RunDir::create(dir.path(), UNIX_EPOCH, "t", 1).unwrap();
        assert_eq!(again.run_id(), format!("{}-2", run.run_id()));
        let history = vec![
            Event::Final {
                replica: "r1".into(),
                chat: 1,
                messages: vec![],
                reference: true,
                not_found: Some("user 3".into()),
            },
            Event::Unread {
                replica: None,
                chat: None,
                reason: "no leader".into(),
            },
            Event::Lagging {
                replica: "r2".into(),
                applied_index: 3,
                target_index: 9,
            },
            Event::Down {
                replica: "r3".into(),
            },
        ];
        run.write_history(&history).unwrap();
        assert_eq!(run.read_history().unwrap(), history);
        assert!(run.path().join(files::ELLE).is_file());
    }

    /// The checked-in `loadgen/summary.schema.json` is the schema of [`Summary`]: when the
    /// types change, regenerate it with `loadgen schema > loadgen/summary.schema.json`.
    #[test]
    fn the_checked_in_schema_is_the_summary_types_schema() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("summary.schema.json");
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == schema(),
            "{} is stale: run `loadgen schema > loadgen/summary.schema.json`",
            path.display()
        );
    }
}
