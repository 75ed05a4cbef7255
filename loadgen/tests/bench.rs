//! End to end: `loadgen bench` as a user runs it, against 3 real `telegraft` replicas it
//! starts itself, writing a results folder that must meet the contract (`results/README.md`,
//! the typed `Summary` and its JSON Schema).
//!
//! The scenario sets an objective no cluster can meet (p50 under 1 µs), so the run must also
//! exit with status 3 and record the verdict. Another test drives a given server
//! (`--target`) with the closed model; more inject faults, or break the cluster under the
//! generator, and check that each verdict tells the truth: data wiped under `--target`
//! is lost (exit 4), a lost majority fails its error-rate objective and the check cannot
//! complete, a final read that fails makes the check incomplete (exit 5), a generator that
//! falls behind misses `schedule: kept` (exit 3, with a JUnit file of every objective),
//! combined faults heal, SIGTERM leaves no replica behind (exit 130), and neither does a
//! SIGKILL of `loadgen` itself.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use loadgen::results::{self, Summary};

/// The `telegraft` binary of this build, built first when this package's tests run alone.
fn telegraft() -> PathBuf {
    let loadgen = PathBuf::from(env!("CARGO_BIN_EXE_loadgen"));
    let exe = loadgen.with_file_name("telegraft");
    if !exe.is_file() {
        let profile = loadgen.parent().unwrap().file_name().unwrap().to_owned();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "telegraft", "--bin", "telegraft"]);
        if profile == "release" {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "building telegraft");
    }
    exe
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `loadgen bench --scenario FILE` from the workspace root, writing to a fresh results
/// folder, without the progress line.
struct Bench {
    cmd: Command,
    results: tempfile::TempDir,
}

/// A finished `loadgen bench`: its exit status, what it printed, its one run folder and
/// that folder's `summary.json`.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    dir: PathBuf,
    summary: serde_json::Value,
    _results: tempfile::TempDir,
}

impl Bench {
    fn new(scenario: &str) -> Bench {
        let results = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadgen"));
        cmd.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .args(["bench", "--scenario", scenario, "--no-progress"])
            .arg("--results")
            .arg(results.path());
        Bench { cmd, results }
    }

    /// `--set path=value` for each.
    fn set(mut self, overrides: &[&str]) -> Bench {
        for o in overrides {
            self.cmd.args(["--set", o]);
        }
        self
    }

    fn args(mut self, args: &[&str]) -> Bench {
        self.cmd.args(args);
        self
    }

    /// Against a local cluster of this build's `telegraft`.
    fn local(mut self) -> Bench {
        self.cmd.arg("--telegraft").arg(telegraft());
        self
    }

    /// Without reports.
    fn no_report(self) -> Bench {
        self.args(&["--no-report"])
    }

    fn run(mut self) -> Ran {
        let out = self.cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        self.finish(out.status.code(), stdout, stderr)
    }

    /// Runs it when it must stop before any run folder is made (a usage error): its exit
    /// code and stderr.
    fn run_expecting_no_results(mut self) -> (Option<i32>, String) {
        let out = self.cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let folders = std::fs::read_dir(self.results.path()).unwrap().count();
        assert_eq!(folders, 0, "no run folder\n{stderr}");
        (out.status.code(), stderr)
    }

    /// Starts it in the background; its stderr lines come through the channel.
    fn spawn(mut self) -> Running {
        let mut child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
            bench: Some(self),
        }
    }

    fn finish(self, code: Option<i32>, stdout: String, stderr: String) -> Ran {
        let runs: Vec<PathBuf> = std::fs::read_dir(self.results.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(
            runs.len(),
            1,
            "one run folder: {runs:?}\n{stdout}\n{stderr}"
        );
        let dir = runs[0].clone();
        let summary = typed_summary(&dir.join(results::files::SUMMARY));
        Ran {
            code,
            stdout,
            stderr,
            dir,
            summary,
            _results: self.results,
        }
    }
}

/// A `loadgen bench` running in the background.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    bench: Option<Bench>,
}

impl Running {
    /// Waits for a stderr line containing `text`.
    fn wait_for(&mut self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                let found = line.contains(text);
                self.seen.push(line);
                if found {
                    return;
                }
            }
        }
        panic!(
            "no line with {text:?} in {limit:?}:\n{}",
            self.seen.join("\n")
        );
    }

    /// Waits for it to exit (within `limit`).
    fn finish(mut self, limit: Duration) -> Ran {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "loadgen did not exit in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut stdout = String::new();
        std::io::Read::read_to_string(self.child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        self.seen.extend(self.lines.try_iter());
        let stderr = self.seen.join("\n");
        self.bench
            .take()
            .unwrap()
            .finish(status.code(), stdout, stderr)
    }
}

impl Ran {
    /// What it printed, for assertion messages.
    fn printed(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }
}

/// A run's `summary.json`, checked against the contract: it reads into the typed
/// [`Summary`] and writes back the same JSON (so it has no key or type the type does not),
/// and it has every key the JSON Schema requires.
fn typed_summary(path: &Path) -> serde_json::Value {
    let json = read_json(path);
    let typed: Summary = serde_path_to_error::deserialize(&json)
        .unwrap_or_else(|e| panic!("{}: not a Summary: {e}", path.display()));
    assert_eq!(
        serde_json::to_value(&typed).unwrap(),
        json,
        "{} has keys or values the typed Summary does not",
        path.display()
    );
    let schema: serde_json::Value = serde_json::from_str(&results::schema()).unwrap();
    for key in schema["required"].as_array().unwrap() {
        let key = key.as_str().unwrap();
        assert!(json.get(key).is_some(), "summary.json lacks {key}");
    }
    json
}

#[test]
fn a_short_bench_against_three_replicas_writes_the_results_contract() {
    let reports = tempfile::tempdir().unwrap();
    let ran = Bench::new("scenarios/chat.yaml")
        .args(&["--replicas", "3"])
        .set(&[
            "load.duration=3s",
            "load.warmup=1s",
            "load.rate=150",
            "load.users=10",
            "slo={send_message: {p50: 1us}, get_messages: {p99: 10s}}",
        ])
        .args(&["--reports", reports.path().to_str().unwrap()])
        .local()
        .run();
    let stdout = &ran.stdout;
    assert_eq!(ran.code, Some(3), "a missed SLO exits 3\n{}", ran.printed());
    assert!(
        stdout.contains("SLO send_message p50 <= 1us: MISSED"),
        "{stdout}"
    );
    assert!(
        stdout.contains("SLO get_messages p99 <= 10000ms: pass"),
        "{stdout}"
    );

    // One run folder, named <time>-<scenario>-r<replicas>.
    let dir = &ran.dir;
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    assert!(name.ends_with("-chat-default-r3"), "{name}");
    assert!(
        stdout.contains(&format!("results: {}", dir.display())),
        "{stdout}"
    );

    // summary.json: the keys the contract names.
    let s = &ran.summary;
    for key in [
        "run_id",
        "scenario",
        "replicas",
        "model",
        "offered_rate",
        "duration_s",
        "started_at",
        "git_rev",
        "machine",
        "ops",
        "slo",
    ] {
        assert!(s.get(key).is_some(), "summary.json lacks {key}: {s}");
    }
    assert_eq!(s["run_id"], name.as_str());
    assert_eq!(s["replicas"], 3);
    assert_eq!(s["model"], "open");
    assert_eq!(s["offered_rate"], 150.0);
    assert_eq!(
        s["offered_schedule"],
        serde_json::json!([{"start_s": 0.0, "end_s": 3.0, "rate": 150.0}])
    );
    assert_eq!(s["duration_s"], 3.0);
    assert!(s["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(s["machine"]["memory_mb"].as_u64().unwrap() > 0);
    let ops = s["ops"].as_object().unwrap();
    for op in ["send_message", "get_messages"] {
        let o = &ops[op];
        assert!(o["count"].as_u64().unwrap() > 0, "{op}: {o}");
        assert!(o["throughput"].as_f64().unwrap() > 0.0, "{op}: {o}");
        assert!(o["errors_by_code"].is_object());
        for lat in ["latency_ms", "service_time_ms"] {
            let l = &o[lat];
            let v = |k: &str| l[k].as_f64().unwrap();
            assert!(
                0.0 < v("p50")
                    && v("p50") <= v("p90")
                    && v("p90") <= v("p99")
                    && v("p99") <= v("p999")
                    && v("p999") <= v("p9999")
                    && v("p9999") <= v("max"),
                "{op} {lat}: {l}"
            );
        }
        // Corrected latency is never below the service time.
        assert!(o["latency_ms"]["p50"].as_f64() >= o["service_time_ms"]["p50"].as_f64());
    }
    let slo = s["slo"].as_array().unwrap();
    assert_eq!(slo.len(), 2, "{slo:?}");
    let missed = slo.iter().find(|v| v["op"] == "send_message").unwrap();
    assert_eq!(missed["objective"], "p50");
    assert_eq!(missed["verdict"], "fail");
    assert_eq!(missed["unit"], "ms");
    assert!(missed["actual"].as_f64().unwrap() > missed["limit"].as_f64().unwrap());
    assert!(missed["actual_ms"].as_f64().unwrap() > missed["limit_ms"].as_f64().unwrap());
    // Every replica answered at the end, with one leader and the same state.
    let nodes = s["cluster"]["nodes_at_end"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes.iter().filter(|n| n["role"] == "leader").count(), 1);

    // The effective scenario, with the overrides applied.
    let yaml = std::fs::read_to_string(dir.join("scenario.yaml")).unwrap();
    assert!(
        yaml.contains("replicas: 3") && yaml.contains("rate: 150.0"),
        "{yaml}"
    );

    // Interval logs other HdrHistogram tools can read: one interval per second or so.
    let hlog = std::fs::read(dir.join("send_message.hdr.hlog")).unwrap();
    let (mut intervals, mut total) = (0, 0);
    for entry in IntervalLogIterator::new(&hlog) {
        if let LogEntry::Interval(h) = entry.unwrap() {
            intervals += 1;
            // The log stores each histogram as base64 text.
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(h.encoded_histogram())
                .unwrap();
            total += hdrhistogram::serialization::Deserializer::new()
                .deserialize::<u64, _>(&mut bytes.as_slice())
                .unwrap()
                .len();
        }
    }
    assert!(intervals >= 3, "{intervals} intervals");
    // The corrected histograms hold every call, failed ones included.
    let calls = |op: &str| ops[op]["count"].as_u64().unwrap() + ops[op]["errors"].as_u64().unwrap();
    assert_eq!(total, calls("send_message"));

    // timeseries.csv: a header, then rows per second per operation that add up.
    let csv = std::fs::read_to_string(dir.join("timeseries.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("second,op,count,errors,p50_ms,p99_ms,max_ms")
    );
    let sent: u64 = lines
        .filter(|l| l.split(',').nth(1) == Some("send_message"))
        .map(|l| l.split(',').nth(2).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(sent, ops["send_message"]["count"].as_u64().unwrap());

    // resources.csv: each second of warm-up (t_s 0) and of the window (1..=3), a row for
    // each replica process and for the generator.
    let resources = std::fs::read_to_string(dir.join("resources.csv")).unwrap();
    assert_eq!(
        resources.lines().next(),
        Some("t_s,process,pid,cpu_pct,rss_bytes,read_bytes,written_bytes")
    );
    let mut seen = std::collections::BTreeSet::new();
    for r in csv::Reader::from_reader(resources.as_bytes()).records() {
        let r = r.unwrap();
        let (t, process) = (r[0].parse::<i64>().unwrap(), r[1].to_string());
        assert!(r[2].parse::<u32>().unwrap() > 0, "{r:?}");
        assert!(r[3].parse::<f64>().unwrap() >= 0.0, "{r:?}");
        assert!(r[4].parse::<u64>().unwrap() > 0, "{r:?}");
        r[5].parse::<u64>().unwrap();
        r[6].parse::<u64>().unwrap();
        seen.insert((process, t));
    }
    for p in ["node-1", "node-2", "node-3", "loadgen"] {
        for t in 0..=3 {
            assert!(seen.contains(&(p.to_string(), t)), "{p} at {t}: {seen:?}");
        }
        let r = &s["resources"][p];
        let mean = r["cpu_pct_mean"].as_f64().unwrap();
        assert!(
            0.0 <= mean && mean <= r["cpu_pct_max"].as_f64().unwrap(),
            "{r}"
        );
        assert!(r["rss_bytes_max"].as_u64().unwrap() > 0, "{r}");
    }
    let share = s["resources"]["loadgen_share_of_machine_pct"]
        .as_f64()
        .unwrap();
    assert!((0.0..=100.0).contains(&share), "{share}");

    // metrics.csv: each replica's metrics each second, long format, with fsync quantiles
    // from bucket deltas, counter rates and gauges for every node.
    let metrics = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().next(), Some("t_s,node,metric,value"));
    let mut series: std::collections::BTreeMap<(String, String), Vec<f64>> = Default::default();
    for r in csv::Reader::from_reader(metrics.as_bytes()).records() {
        let r = r.unwrap();
        let value: f64 = r[3].parse().unwrap();
        assert!(value.is_finite(), "{r:?}");
        series
            .entry((r[1].to_string(), r[2].to_string()))
            .or_default()
            .push(value);
    }
    for n in 1..=3 {
        let node = format!("node-{n}");
        let get = |m: &str| {
            series
                .get(&(node.clone(), m.to_string()))
                .unwrap_or_else(|| panic!("no {m} for {node}"))
        };
        let commit = get("telegraft_raft_commit_index");
        assert!(
            commit.len() >= 4 && commit.last() > Some(&0.0),
            "{commit:?}"
        );
        assert!(
            get("telegraft_storage_fsync_seconds_p99")
                .iter()
                .all(|v| *v > 0.0)
        );
        assert!(
            get("telegraft_storage_fsync_entries_p50")
                .iter()
                .all(|v| *v >= 1.0)
        );
        assert!(
            get("telegraft_storage_fsync_seconds_rate")
                .iter()
                .any(|v| *v > 0.0)
        );
        get("process_cpu_seconds_total_rate");
    }

    // Goose's own report, the replicas' logs, and no leftover data.
    assert!(dir.join("goose-report.html").is_file());
    let goose = read_json(&dir.join("goose-report.json"));
    assert!(goose.to_string().contains("send_message"));
    for n in 1..=3 {
        let log = dir.join(format!("nodes/node-{n}.log"));
        assert!(
            std::fs::metadata(&log).unwrap().len() > 0,
            "{}",
            log.display()
        );
    }
    assert!(!dir.join("data").exists(), "replica data is removed");

    // The run's report page and the index, with the page's path printed.
    let page = reports.path().join(format!("{name}.html"));
    assert!(
        stdout.contains(&format!("report:  {}", page.display())),
        "{stdout}"
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(
        ran.summary["system"], "telegraft",
        "the system under test is recorded"
    );
    assert!(html.contains("chat-default on telegraft · 3 replicas") && html.contains("<svg"));
    // Its Replicas section, drawn from the run's resources.csv and metrics.csv.
    let replicas = html
        .split("id=\"replicas\"")
        .nth(1)
        .expect("a Replicas section");
    assert!(
        replicas.contains("CPU by process") && replicas.contains("node-3 p99"),
        "{replicas}"
    );
    assert!(
        replicas.contains("ReadIndex rounds per second")
            && replicas.contains("Where the time goes: send_message")
            && replicas.contains("proposal to commit"),
        "{replicas}"
    );
    // Where a send's mean time went: parts from the replicas' histograms that add up to the
    // client's mean service time.
    let split = &s["time_split"];
    assert_eq!(split["op"], "send_message", "{split}");
    let ms = |k: &str| split[k].as_f64().unwrap_or_else(|| panic!("{k}: {split}"));
    let client = ms("client_ms");
    assert_eq!(
        client,
        ops["send_message"]["service_time_ms"]["mean"]
            .as_f64()
            .unwrap()
    );
    assert!(client > 0.0 && ms("proposal_to_commit_ms") > 0.0, "{split}");
    assert!(
        ms("commit_to_apply_ms") >= 0.0 && ms("forwarding_ms") >= 0.0,
        "{split}"
    );
    let parts = ms("forwarding_ms") + ms("proposal_to_commit_ms") + ms("commit_to_apply_ms");
    assert!((parts + ms("rest_ms") - client).abs() < 0.01, "{split}");
    assert!(
        (ms("rest_in_leader_ms") + ms("outside_replicas_ms") - ms("rest_ms")).abs() < 0.01,
        "{split}"
    );
    // Requests go to every replica, so followers forward about two thirds of them.
    assert!(ms("forwarded_pct") > 0.0, "{split}");
    assert!(reports.path().join("index.html").is_file());
    // The history: every send and poll, then every chat read whole from every replica; the
    // checker found the data intact.
    let history = std::fs::read_to_string(dir.join("history.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |t: &str| events.iter().filter(|e| e["type"] == t).count();
    assert!(of("send") > 0 && of("read") > 0, "{} events", events.len());
    let finals = of("final");
    assert!(
        finals >= 4 * 20 && finals % 4 == 0,
        "every chat (20 and those created during the load), linearizably and from each of 3 \
         replicas: {finals}"
    );
    assert_eq!(of("digest"), 3, "each replica's state digest");
    let check = &s["check"];
    assert_eq!(check["verdict"], "pass", "{check}");
    assert!(
        check["counts"]["final_messages"].as_u64().unwrap() > 0,
        "{check}"
    );
    assert!(stdout.contains("history check: PASS"), "{stdout}");
    let elle = std::fs::read_to_string(dir.join("history.elle.jsonl")).unwrap();
    assert_eq!(
        elle.lines().count(),
        2 * (of("send") + finals),
        "invoke + completion each"
    );
    // Leader changes were watched: at least the leader at the start.
    assert!(
        !s["cluster"]["leader_changes"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        s["machine"]["disk"]
            .as_str()
            .is_some_and(|d| d.contains(" on ")),
        "{s}"
    );
}

/// Polls follow the cluster's `committed_at`: every poll's cursor is the largest
/// `committed_at` its poller had been returned for that user (the generator's clock at the
/// start before any), it returns only messages after it, in commit order, and a poller is
/// never returned a message twice. The checker holds every poll to that window and passes.
#[test]
fn polls_follow_the_committed_at_cursor_and_see_each_message_once() {
    let ran = Bench::new("scenarios/chat.yaml")
        .args(&["--replicas", "3"])
        .set(&[
            "load.duration=4s",
            "load.warmup=1s",
            "load.rate=300",
            "load.users=8",
            "slo={}",
            // This test does not need the replicas' metrics: it also checks that they can
            // be turned off (the baseline for measuring their cost).
            "metrics=off",
        ])
        .no_report()
        .local()
        .run();
    assert_eq!(ran.code, Some(0), "{}", ran.printed());
    let metrics = std::fs::read_to_string(ran.dir.join("metrics.csv")).unwrap();
    assert_eq!(
        metrics, "t_s,node,metric,value\n",
        "metrics: off scrapes nothing"
    );
    assert!(ran.summary["time_split"].is_null(), "{}", ran.summary);
    for n in 1..=3 {
        assert!(
            ran.summary["resources"][format!("node-{n}")]["rss_bytes_max"]
                .as_u64()
                .unwrap()
                > 0,
            "the processes are still sampled"
        );
    }
    let history = std::fs::read_to_string(ran.dir.join("history.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Each poller's polls of each user, in the order it made them.
    let mut pollers: std::collections::BTreeMap<(u64, u64), Vec<&serde_json::Value>> =
        Default::default();
    for e in events.iter().filter(|e| e["type"] == "read") {
        let key = (e["client"].as_u64().unwrap(), e["user"].as_u64().unwrap());
        pollers.entry(key).or_default().push(e);
    }
    let (mut polls, mut returned) = (0, 0);
    for (poller, reads) in &mut pollers {
        reads.sort_by_key(|e| e["invoke_us"].as_u64().unwrap());
        let mut cursor = reads[0]["cursor_us"].as_i64().unwrap();
        let mut seen = std::collections::HashSet::new();
        for r in reads.iter() {
            polls += 1;
            assert_eq!(
                r["cursor_us"].as_i64().unwrap(),
                cursor,
                "poller {poller:?}: the cursor is the largest committed_at seen: {r}"
            );
            if r["outcome"] != "ok" {
                continue;
            }
            let mut last = cursor;
            for m in r["messages"].as_array().unwrap() {
                returned += 1;
                let at = m["committed_us"].as_i64().unwrap();
                assert!(
                    at > last,
                    "poller {poller:?}: in commit order, after the cursor: {r}"
                );
                last = at;
                let key = m["key"].as_str().unwrap().to_string();
                assert!(seen.insert(key), "poller {poller:?} was returned {m} twice");
            }
            cursor = last;
        }
    }
    assert!(
        polls > 100 && returned > 0,
        "{polls} polls returned {returned} messages"
    );
    // Every message of the final lists has its committed_at.
    for e in events.iter().filter(|e| e["type"] == "final") {
        for m in e["messages"].as_array().unwrap() {
            assert!(m["committed_us"].as_i64().unwrap() > 0, "{e}");
        }
    }
    let check = &ran.summary["check"];
    assert_eq!(check["verdict"], "pass", "{check}");
    assert_eq!(
        check["counts"]["anomalies"],
        serde_json::json!({}),
        "{check}"
    );
    // And `loadgen check` agrees.
    let again = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("check")
        .arg(&ran.dir)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0), "{again:?}");
}

#[test]
fn a_history_of_an_older_loadgen_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("history.jsonl"),
        concat!(
            r#"{"type":"send","client":1,"invoke_us":1,"complete_us":2,"outcome":"ok","chat":1,"user":1,"key":"k1-1","sent_us":3,"message_id":1}"#,
            "\n",
            r#"{"type":"read","client":1,"invoke_us":5,"complete_us":9,"outcome":"ok","user":1,"after_us":1,"linearizable":true,"chats":[1],"messages":[{"chat":1,"id":1,"key":"k1-1","sent_us":3}]}"#,
            "\n",
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("check")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("history.jsonl:2: written by an older loadgen")
            && stderr.contains("committed_at"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_bench_drives_a_given_target() {
    let addr = common::serve(
        std::time::Duration::from_millis(5),
        std::time::Duration::from_millis(5),
    )
    .await;
    let bench = Bench::new("scenarios/closed.yaml")
        .args(&["--target", &addr])
        .set(&[
            "load.duration=2s",
            "load.warmup=0s",
            "load.users=4",
            "load.think_time=20ms",
            "dataset={users: 8, chats: 2, members_per_chat: 2}",
            // A fake, not a Telegraft cluster: nothing to check.
            "check=off",
        ])
        .no_report();
    // The fake server runs on this test's runtime: run loadgen beside it.
    let ran = tokio::task::spawn_blocking(move || bench.run())
        .await
        .unwrap();
    assert_eq!(
        ran.code,
        Some(0),
        "no SLO and the check skipped, so exit 0\n{}",
        ran.printed()
    );
    assert_eq!(ran.summary["check"]["verdict"], "skipped");
    let run = &ran.dir;
    assert!(run.to_string_lossy().ends_with("-closed-r1"), "{run:?}");
    let s = &ran.summary;
    assert_eq!(s["model"], "closed");
    assert!(s["offered_rate"].is_null());
    assert_eq!(s["cluster"]["kind"], "external");
    assert_eq!(s["cluster"]["endpoints"][0], addr.as_str());
    assert!(
        s["generator"]["intended"].is_null(),
        "no schedule in the closed model"
    );
    for op in ["get_messages", "send_message"] {
        let o = &s["ops"][op];
        assert!(o["count"].as_u64().unwrap() > 10, "{op}: {o}");
        assert_eq!(o["errors"], 0, "{op}: {o}");
        // Closed model: latency is the service time.
        let (l, t) = (&o["latency_ms"]["p50"], &o["service_time_ms"]["p50"]);
        assert!(
            (l.as_f64().unwrap() - t.as_f64().unwrap()).abs() < 1.0,
            "{o}"
        );
    }
    // Users alternate read then write: the two counts differ by at most one per user.
    let (r, w) = (
        s["ops"]["get_messages"]["count"].as_u64().unwrap(),
        s["ops"]["send_message"]["count"].as_u64().unwrap(),
    );
    assert!(r.abs_diff(w) <= 4, "{r} reads, {w} writes");
    assert!(!run.join("nodes").exists(), "no replicas of ours, no logs");
}

#[test]
fn killing_the_leader_under_load_loses_nothing_acknowledged() {
    let ran = Bench::new("scenarios/failover.yaml")
        .set(&[
            "load.duration=7s",
            "load.warmup=1s",
            "faults=[{at: 2s, action: kill, target: leader}, {at: 5s, action: restart, target: killed}]",
        ])
        .no_report()
        .local()
        .run();
    assert_eq!(
        ran.code,
        Some(0),
        "no SLO and a clean history: exit 0\n{}",
        ran.printed()
    );
    let s = &ran.summary;
    assert_eq!(s["check"]["verdict"], "pass", "{}", s["check"]);
    assert_eq!(s["check"]["unread_chats"], 0, "{}", s["check"]);
    let faults = s["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 2, "{faults:?}");
    let (kill, restart) = (&faults[0], &faults[1]);
    assert_eq!(
        (kill["action"].as_str(), restart["action"].as_str()),
        (Some("kill"), Some("restart"))
    );
    assert_eq!(
        kill["node"], restart["node"],
        "the killed replica is the one restarted"
    );
    assert!(kill["unavailable_ms"].as_f64().unwrap() > 0.0, "{kill}");
    // A new leader took over after the kill.
    let leaders = s["cluster"]["leader_changes"].as_array().unwrap();
    assert!(leaders.len() >= 2, "{leaders:?}");
    assert_ne!(leaders[0]["node"], leaders[1]["node"]);
    // The restarted replica caught up: every replica answers at the end with one digest.
    let nodes = s["cluster"]["nodes_at_end"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
}

/// `scenarios/secure.yaml`: TLS and authenticated users, with the leader killed and
/// restarted under the load. Every user logs in before the load, `login` calls run beside
/// the chat calls, no call is refused for its credentials, and the history check passes.
#[test]
fn a_secure_bench_with_a_failover_passes_its_check() {
    let ran = Bench::new("scenarios/secure.yaml")
        .set(&[
            "load.duration=6s",
            "load.warmup=1s",
            "load.rate=200",
            "dataset={users: 40, chats: 8, members_per_chat: 5}",
            "slo={}",
            "faults=[{at: 2s, action: kill, target: leader}, {at: 4s, action: restart, target: killed}]",
        ])
        .no_report()
        .local()
        .run();
    assert_eq!(ran.code, Some(0), "{}", ran.printed());
    let s = &ran.summary;
    assert_eq!(s["check"]["verdict"], "pass", "{}", s["check"]);
    assert_eq!(
        s["cluster"]["security"],
        serde_json::json!({"tls": true, "auth": true})
    );
    assert!(ran.stdout.contains("TLS + auth tokens"), "{}", ran.stdout);
    let ops = s["ops"].as_object().unwrap();
    assert!(
        ops["login"]["count"].as_u64().unwrap() > 0,
        "{:?}",
        ops["login"]
    );
    for (op, r) in ops {
        let codes = r["errors_by_code"].as_object().unwrap();
        for refused in ["Unauthenticated", "PermissionDenied"] {
            assert!(!codes.contains_key(refused), "{op}: {codes:?}");
        }
    }
    assert!(ran.dir.join("login.hdr.hlog").is_file());
    // The run's own CA and certificates, beside its results.
    assert!(ran.dir.join("certs/ca.pem").is_file());
}

#[test]
fn local_reads_under_a_partition_are_flagged_stale() {
    let ran = Bench::new("scenarios/partition.yaml")
        .set(&[
            "load.duration=8s",
            "load.warmup=1s",
            "reads.consistency=local",
            "faults=[{at: 3s, action: partition, target: leader, for: 3s}]",
        ])
        .no_report()
        .local()
        .run();
    assert_eq!(
        ran.code,
        Some(0),
        "stale local reads do not fail the run\n{}",
        ran.printed()
    );
    let (s, stdout) = (&ran.summary, &ran.stdout);
    let check = &s["check"];
    // The cut-off leader kept serving its old state to the clients connected to it.
    assert!(
        check["counts"]["anomalies"]["stale_local"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{check}"
    );
    // Nothing else: no acknowledged message lost, no divergence once healed.
    assert_eq!(check["verdict"], "pass", "{check}");
    assert_eq!(
        check["counts"]["anomalies"].as_object().unwrap().len(),
        1,
        "{check}"
    );
    let fault = &s["faults"][0];
    assert_eq!(fault["action"], "partition");
    assert!(fault["node"].as_u64().is_some(), "{fault}");
    assert!(stdout.contains("stale_local"), "{stdout}");
}

/// The objectives of one summary, by `op objective`.
fn objective<'a>(s: &'a serde_json::Value, op: &str, objective: &str) -> &'a serde_json::Value {
    s["slo"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["op"] == op && v["objective"] == objective)
        .unwrap_or_else(|| panic!("no {op} {objective} in {}", s["slo"]))
}

/// Free loopback addresses for a cluster the test starts itself.
fn free_addrs(n: u64) -> std::collections::BTreeMap<u64, String> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.local_addr().unwrap().to_string()))
        .collect()
}

#[test]
fn data_wiped_under_the_generator_is_lost_and_exits_4() {
    let data = tempfile::tempdir().unwrap();
    let mut cluster = telegraft::launcher::LocalCluster::start_on_with_metrics(
        &telegraft(),
        free_addrs(3),
        data.path(),
        &[],
    )
    .unwrap();
    let addrs: Vec<String> = cluster.addrs.values().cloned().collect();
    // A given cluster's metrics are scraped too, when loadgen is told where they are.
    let metrics: Vec<String> = cluster
        .addrs
        .keys()
        .map(|id| cluster.metrics_addr(*id).unwrap().to_string())
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(telegraft::admin::wait_for_leader(
        &addrs,
        Duration::from_secs(20),
    ))
    .unwrap();
    let mut running = Bench::new("scenarios/chat.yaml")
        .args(&["--target", &addrs.join(",")])
        .args(&["--target-metrics", &metrics.join(",")])
        .set(&[
            "load.duration=6s",
            "load.warmup=1s",
            "load.rate=150",
            "load.users=10",
            "load.timeout=2s",
            "mix={send_message: 1, get_messages: 1}",
            "slo={}",
        ])
        .no_report()
        .spawn();
    running.wait_for("loadgen: creating", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    // Every replica dies, loses its data, and comes back empty.
    let ids: Vec<u64> = cluster.addrs.keys().copied().collect();
    for id in &ids {
        cluster.kill(*id).unwrap();
    }
    for id in &ids {
        std::fs::remove_dir_all(cluster.node_dir(*id)).unwrap();
        cluster.restart(*id).unwrap();
    }
    let ran = running.finish(Duration::from_secs(120));
    cluster.stop(Duration::from_secs(5));
    assert_eq!(
        ran.code,
        Some(4),
        "every acknowledged message is lost\n{}",
        ran.printed()
    );
    let check = &ran.summary["check"];
    assert_eq!(check["verdict"], "fail", "{check}");
    let lost = check["counts"]["anomalies"]["lost"].as_u64().unwrap_or(0);
    let acknowledged = check["counts"]["sends_ok"].as_u64().unwrap();
    assert!(acknowledged > 0 && lost == acknowledged, "{check}");
    assert_given_metrics_scraped(&ran.dir);
    assert!(ran.stdout.contains("history check: FAIL"), "{}", ran.stdout);
}

/// The given replicas' metrics, scraped through `--target-metrics` (in replica order, named
/// node-N), before and after they were restarted; no process rows for a given cluster.
fn assert_given_metrics_scraped(dir: &Path) {
    let metrics = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    for n in 1..=3 {
        let commits = metrics
            .lines()
            .filter(|l| l.contains(&format!(",node-{n},telegraft_raft_commit_index,")))
            .count();
        assert!(commits >= 4, "node-{n}: {commits} rows of its commit index");
    }
    let resources = std::fs::read_to_string(dir.join("resources.csv")).unwrap();
    assert!(
        resources.lines().skip(1).all(|l| l.contains(",loadgen,")),
        "{resources}"
    );
}

#[test]
fn target_metrics_must_name_one_endpoint_per_replica() {
    let ran = Bench::new("scenarios/chat.yaml")
        .args(&["--target", "127.0.0.1:1,127.0.0.1:2"])
        .args(&["--target-metrics", "127.0.0.1:3"])
        .no_report()
        .run_expecting_no_results();
    assert_eq!(ran.0, Some(2), "{}", ran.1);
    assert!(
        ran.1
            .contains("--target-metrics gives 1 addresses for 2 --target replicas"),
        "{}",
        ran.1
    );
}

#[test]
fn losing_the_majority_mid_run_fails_with_the_errors_in_the_verdict() {
    let ran = Bench::new("scenarios/failover.yaml")
        .set(&[
            "load.duration=5s",
            "load.warmup=1s",
            "faults=[{at: 2s, action: kill, target: follower}, {at: 2s, action: kill, target: follower}]",
            "slo={send_message: {error_rate: 1%}}",
        ])
        .no_report()
        .local()
        .run();
    assert!(
        matches!(ran.code, Some(4) | Some(5)),
        "the check cannot pass without a majority\n{}",
        ran.printed()
    );
    let s = &ran.summary;
    let errors = s["ops"]["send_message"]["errors"].as_u64().unwrap();
    assert!(errors > 0, "{}", s["ops"]);
    let rate = objective(s, "send_message", "error_rate");
    assert_eq!(rate["verdict"], "fail", "{rate}");
    assert_eq!(rate["unit"], "%");
    assert!(rate["actual"].as_f64().unwrap() > 1.0, "{rate}");
    assert_ne!(s["check"]["verdict"], "pass", "{}", s["check"]);
    assert!(
        ran.stdout
            .contains("SLO send_message error_rate <= 1%: MISSED"),
        "{}",
        ran.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_read_that_fails_makes_the_check_incomplete_and_exits_5() {
    let addr = common::serve_memory(true).await;
    let bench = Bench::new("scenarios/chat.yaml")
        .args(&["--target", &addr])
        .set(&[
            "load.duration=2s",
            "load.warmup=0s",
            "load.rate=100",
            "load.users=4",
            "dataset={users: 20, chats: 4, members_per_chat: 5}",
            "mix={send_message: 1, get_messages: 1}",
            "slo={}",
        ])
        .no_report();
    let ran = tokio::task::spawn_blocking(move || bench.run())
        .await
        .unwrap();
    assert_eq!(ran.code, Some(5), "{}", ran.printed());
    let check = &ran.summary["check"];
    assert_eq!(check["verdict"], "incomplete", "{check}");
    let unread = check["unread_chats"].as_u64().unwrap();
    assert!((1..4).contains(&unread), "{check}");
    assert!(
        ran.stdout.contains("history check: INCOMPLETE"),
        "{}",
        ran.stdout
    );
    // Every other chat was read and checked.
    assert!(
        check["counts"]["final_messages"].as_u64().unwrap() > 0,
        "{check}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generator_that_falls_behind_misses_schedule_kept_and_junit_lists_every_objective() {
    let addr = common::serve(Duration::from_millis(20), Duration::from_millis(20)).await;
    let junit = tempfile::NamedTempFile::new().unwrap();
    let bench = Bench::new("scenarios/chat.yaml")
        .args(&["--target", &addr, "--junit", junit.path().to_str().unwrap()])
        .set(&[
            "load.duration=2s",
            "load.warmup=0s",
            // One user can make 50 calls a second against 20 ms; it is offered 100.
            "load.rate=100",
            "load.users=1",
            "dataset={users: 4, chats: 1, members_per_chat: 2}",
            "mix={send_message: 1}",
            "check=off",
            "slo={send_message: {p99: 10s, error_rate: 0.1%, min_throughput: 1}, run: {schedule: kept, unavailable_ms: 1500}}",
        ])
        .no_report();
    let ran = tokio::task::spawn_blocking(move || bench.run())
        .await
        .unwrap();
    assert_eq!(ran.code, Some(3), "{}", ran.printed());
    let s = &ran.summary;
    let schedule = objective(s, "run", "schedule");
    assert_eq!(schedule["verdict"], "fail", "{schedule}");
    assert_eq!(schedule["actual"], "missed");
    assert_eq!(schedule["limit"], "kept");
    for (op, o) in [
        ("send_message", "p99"),
        ("send_message", "error_rate"),
        ("send_message", "min_throughput"),
        ("run", "unavailable_ms"),
    ] {
        assert_eq!(
            objective(s, op, o)["verdict"],
            "pass",
            "{op} {o}: {}",
            s["slo"]
        );
    }
    assert!(
        ran.stdout.contains("SLO run schedule: kept: MISSED"),
        "{}",
        ran.stdout
    );

    // JUnit: one suite, one case per objective plus the history check, and it parses.
    let xml = std::fs::read_to_string(junit.path()).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    assert_eq!(report.test_suites.len(), 1);
    let suite = &report.test_suites[0];
    assert_eq!(suite.name.as_str(), "loadgen");
    let names: Vec<&str> = suite.test_cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "send_message p99 <= 10000ms",
            "send_message error_rate <= 0.1%",
            "send_message min_throughput >= 1 ops/s",
            "run schedule: kept",
            "run unavailable_ms <= 1500ms",
            "history check",
        ]
    );
    assert_eq!(suite.failures, 1, "{xml}");
    assert!(
        matches!(
            &suite.test_cases[3].status,
            quick_junit::TestCaseStatus::NonSuccess { message: Some(m), .. } if m.as_str() == "measured missed"
        ),
        "{xml}"
    );
    assert!(
        matches!(
            suite.test_cases[5].status,
            quick_junit::TestCaseStatus::Skipped { .. }
        ),
        "check: off skips the history check\n{xml}"
    );
}

#[test]
fn combined_faults_heal() {
    let ran = Bench::new("scenarios/partition.yaml")
        .set(&[
            "load.duration=8s",
            "load.warmup=1s",
            "faults=[{at: 2s, action: kill, target: follower}, {at: 3s, action: partition, target: minority, for: 2s}, {at: 6s, action: restart, target: killed}]",
            // Cutting the leader off from the one live follower stops writes for the whole
            // 2 s, more than the scenario's objective allows.
            "slo={}",
        ])
        .no_report()
        .local()
        .run();
    assert_eq!(ran.code, Some(0), "{}", ran.printed());
    let s = &ran.summary;
    let faults = s["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 3, "{faults:?}");
    let (kill, cut, restart) = (&faults[0], &faults[1], &faults[2]);
    assert!(cut.get("error").is_none(), "{cut}");
    // The killed follower could not be told; the partition went ahead without it.
    assert_eq!(cut["unreached"], serde_json::json!([kill["node"]]), "{cut}");
    assert_eq!(cut["healed"], true, "{cut}");
    assert!(cut["unavailable_ms"].as_f64().unwrap() > 0.0, "{cut}");
    assert_eq!(restart["node"], kill["node"]);
    // Healed and restarted: every replica answers at the end, none behind.
    let check = &s["check"];
    assert_eq!(check["verdict"], "pass", "{check}");
    assert_eq!(check["lagging"], serde_json::json!([]), "{check}");
    assert_eq!(s["cluster"]["nodes_at_end"].as_array().unwrap().len(), 3);
}

#[test]
fn sigterm_stops_every_replica_and_writes_an_interrupted_results_folder() {
    let mut running = Bench::new("scenarios/failover.yaml")
        .set(&["load.duration=60s", "load.warmup=1s", "faults=[]"])
        .no_report()
        .local()
        .spawn();
    running.wait_for("loadgen: creating", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    let me = running.child.id() as i32;
    let replicas = children_of(me);
    assert_eq!(replicas.len(), 3, "the replicas are loadgen's children");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(me),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let ran = running.finish(Duration::from_secs(60));
    assert_eq!(ran.code, Some(130), "{}", ran.printed());
    for pid in replicas {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "replica {pid} is still running"
        );
    }
    let s = &ran.summary;
    assert_eq!(s["interrupted"], true);
    assert_eq!(s["check"]["verdict"], "incomplete");
    assert!(
        s["ops"]["send_message"]["count"].as_u64().unwrap() > 0,
        "{}",
        s["ops"]
    );
    assert!(ran.dir.join("nodes/node-1.log").is_file());
}

#[test]
fn sigkill_of_loadgen_mid_run_leaves_no_replica_behind() {
    let mut running = Bench::new("scenarios/failover.yaml")
        .set(&["load.duration=60s", "load.warmup=1s", "faults=[]"])
        .no_report()
        .local()
        .spawn();
    let results = running.bench.as_ref().unwrap().results.path().to_path_buf();
    running.wait_for("loadgen: creating", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    // The replicas: every process but loadgen whose command line names this test's results
    // folder (their data directories are in it).
    let me = running.child.id() as i32;
    let replicas: Vec<i32> = processes_naming(&results)
        .into_iter()
        .filter(|p| *p != me)
        .collect();
    assert_eq!(
        replicas.len(),
        3,
        "three replicas under {}",
        results.display()
    );
    let children = children_of(me);
    assert!(
        replicas.iter().all(|p| children.contains(p)),
        "the replicas are loadgen's children"
    );
    // Nothing can catch SIGKILL: only the parent-death signal stops the replicas.
    running.child.kill().unwrap();
    running.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_naming(&results);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas {left:?} still running 10 s after loadgen was killed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The live processes whose command line contains `path` (a zombie's command line is empty).
fn processes_naming(path: &Path) -> Vec<i32> {
    let needle = path.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

/// The processes whose parent is `pid`.
fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                // pid (comm) state ppid ...: comm may hold spaces, so split after the ')'.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}
