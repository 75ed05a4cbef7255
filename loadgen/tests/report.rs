//! Reports from a fixture of results folders: the aggregation (polars) gives the expected
//! table, every page has every section and no external URL, and headless Chromium renders the
//! index without a script error and not blank.
//!
//! The fixture is written with the load generator's own results writer, from synthetic
//! latencies: chat-default at 1 replica, twice at 3 replicas (to aggregate), and read-heavy
//! at 3 replicas.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use loadgen::history::{self, Event, Outcome};
use loadgen::load::Recorder;
use loadgen::report::{self, data};
use loadgen::results::{
    self, CheckSummary, ClusterEnd, Generator, LeaderChange, Machine, RateStep, RunDir, Summary,
    Versions,
};
use loadgen::sample::{MetricRow, ResourceRow, Samples};
use loadgen::{Op, Scenario};

/// Writes one run folder; latencies are `base_ms` times a per-op factor, spread over 3 s.
fn fixture_run(root: &Path, id: &str, scenario: &str, replicas: u32, base_ms: u64, per_s: u64) {
    let yaml = format!(
        "name: {scenario}\ndataset: {{users: 10, chats: 2, members_per_chat: 2}}\n\
         load: {{model: open, rate: {}, users: 4, duration: 3s}}\n\
         mix: {{send_message: 1, get_messages: 1}}\n\
         slo: {{send_message: {{p99: 20ms}}}}\n",
        2 * per_s
    );
    let s = Scenario::parse("fixture.yaml", &yaml, &[]).unwrap();
    let mut rec = Recorder::new();
    let mut rows = Vec::new();
    for second in 1..=3u64 {
        for k in 0..per_s {
            let ms = base_ms + k % 7;
            rec.ok(
                Op::SendMessage,
                Duration::from_millis(2 * ms),
                Duration::from_millis(2 * ms - 1),
            );
            rec.ok(
                Op::GetMessages,
                Duration::from_millis(ms),
                Duration::from_millis(ms),
            );
        }
        rec.error(Op::SendMessage, "Unavailable", Duration::from_millis(1));
        rows.extend(rec.close_interval(second));
    }
    let ops = results::op_results(&rec, 3.0);
    let generator = Generator {
        calls: 6 * per_s,
        cpu_s: 0.1,
        cpu_us_per_call: 10.0,
        intended: Some(6 * per_s),
        sent: Some(6 * per_s),
        late: Some(0),
        lateness_ms: None,
        warning: None,
        reroutes: 0,
    };
    let slo = results::evaluate_slos(&s, &ops, &generator, &[]);
    let samples = samples(replicas, per_s);
    let ops_send_mean = ops["send_message"].service_time_ms.mean;
    let summary = Summary {
        run_id: id.into(),
        system: "telegraft".into(),
        scenario: scenario.into(),
        scenario_file: "fixture.yaml".into(),
        description: "fixture".into(),
        replicas,
        model: "open".into(),
        offered_rate: Some(2.0 * per_s as f64),
        offered_schedule: vec![RateStep {
            start_s: 0.0,
            end_s: 3.0,
            rate: 2.0 * per_s as f64,
        }],
        users: 4,
        seed: 1,
        warmup_s: 0.0,
        duration_s: 3.0,
        started_at: format!("2026-11-27T10:0{}:00Z", id.len() % 10),
        git_rev: Some("abc123".into()),
        machine: Machine {
            cores: 2,
            memory_mb: 1024,
            cpu_model: "test".into(),
            kernel: "6".into(),
            disk: "ext4 on /dev/test".into(),
        },
        ops,
        slo,
        generator,
        cluster: ClusterEnd {
            kind: "local".into(),
            endpoints: vec!["127.0.0.1:1".into()],
            leader_at_start: Some("127.0.0.1:1".into()),
            nodes_at_end: vec![],
            leader_changes: vec![
                LeaderChange {
                    at_s: -1.0,
                    node: 1,
                    term: 2,
                },
                LeaderChange {
                    at_s: 1.5,
                    node: 2,
                    term: 3,
                },
            ],
            security: Default::default(),
        },
        versions: Versions {
            loadgen: "0.1.0".into(),
        },
        faults: vec![],
        // One run's check found a lost message; the others have none to show.
        check: CheckSummary::of(&history::check(&if id.contains("100100Z") {
            vec![
                Event::Send {
                    client: 1,
                    invoke_us: 1,
                    complete_us: 2,
                    outcome: Outcome::Ok,
                    chat: 4,
                    user: 1,
                    key: "k1-1".into(),
                    sent_us: 1,
                    message_id: Some(9),
                },
                Event::Final {
                    replica: "127.0.0.1:1".into(),
                    chat: 4,
                    messages: vec![],
                    reference: true,
                    not_found: None,
                },
            ]
        } else {
            vec![]
        })),
        interrupted: false,
        resources: results::Resources::of(&samples),
        time_split: results::time_split::of(
            "send_message",
            "SendMessage",
            ops_send_mean,
            &samples.metrics,
        ),
    };
    let measured_start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let dir = RunDir::open(&root.join(id));
    dir.write_measurements(&summary, &s, &rec, &rows, measured_start)
        .unwrap();
    dir.write_samples(&samples).unwrap();
}

/// What the sampler would have written: each replica and the generator, each second from
/// the warm-up's (0) to the window's last; node 1 leads and commits, node 2 forwards.
fn samples(replicas: u32, per_s: u64) -> Samples {
    let mut s = Samples {
        cpus: 2,
        ..Samples::default()
    };
    for t in 0..=3i64 {
        let procs = (1..=replicas)
            .map(|n| format!("node-{n}"))
            .chain(["loadgen".to_string()]);
        for (i, process) in procs.enumerate() {
            s.resources.push(ResourceRow {
                t_s: t,
                process,
                pid: 100 + i as u32,
                cpu_pct: 10.0 * (i + 1) as f64 + t as f64,
                rss_bytes: 20_000_000 + 1_000_000 * t as u64,
                read_bytes: 0,
                written_bytes: 4096 * per_s,
            });
        }
        for n in 1..=replicas {
            let node = format!("node-{n}");
            let mut m = |metric: &str, value: f64| {
                s.metrics.push(MetricRow {
                    t_s: t,
                    node: node.clone(),
                    metric: metric.into(),
                    value,
                })
            };
            m("telegraft_raft_commit_index", (100 * t) as f64);
            m("telegraft_storage_fsync_seconds_p50", 0.0004);
            m(
                "telegraft_storage_fsync_seconds_p99",
                0.002 + 0.001 * t as f64,
            );
            m("telegraft_storage_fsync_entries_mean", 1.5);
            m("telegraft_queue_depth{queue=core}", t as f64);
            m("telegraft_queue_depth{queue=storage}", 2.0 * t as f64);
            let forwards = if n == 2 { per_s as f64 / 2.0 } else { 0.0 };
            m("telegraft_requests_forwarded_total_rate", forwards);
            let send = |stat: &str| {
                format!(
                    "telegraft_grpc_server_handling_seconds_{stat}{{service=telegraft.chat.v1.Chat,method=SendMessage,code=OK}}"
                )
            };
            m("telegraft_raft_role", if n == 1 { 2.0 } else { 0.0 });
            if n == 1 {
                m("telegraft_raft_commit_seconds_rate", per_s as f64);
                m("telegraft_raft_commit_seconds_mean", 0.0015);
                m("telegraft_raft_commit_seconds_p50", 0.001);
                m("telegraft_raft_commit_seconds_p99", 0.004);
                m("telegraft_raft_apply_seconds_rate", per_s as f64);
                m("telegraft_raft_apply_seconds_mean", 0.0005);
                m("telegraft_raft_read_index_seconds_rate", per_s as f64 / 4.0);
                m("telegraft_raft_reads_per_round_mean", 4.0);
                m(&send("rate"), per_s as f64);
                m(&send("mean"), 0.003);
            } else if n == 2 {
                m(&send("rate"), per_s as f64 / 2.0);
                m(&send("mean"), 0.004);
            }
            // Node 2 takes a snapshot in the window's second second.
            if t == 2 && n == 2 {
                m("telegraft_snapshots_total_rate", 1.0);
            }
        }
    }
    s
}

fn fixture() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    fixture_run(
        r,
        "20261127T100000Z-chat-default-r1",
        "chat-default",
        1,
        2,
        100,
    );
    fixture_run(
        r,
        "20261127T100100Z-chat-default-r3",
        "chat-default",
        3,
        4,
        100,
    );
    fixture_run(
        r,
        "20261127T100200Z-chat-default-r3",
        "chat-default",
        3,
        6,
        200,
    );
    fixture_run(r, "20261127T100300Z-read-heavy-r3", "read-heavy", 3, 1, 50);
    // A run that failed before writing its summary is not a run.
    std::fs::create_dir_all(r.join("20261127T100400Z-broken-r3")).unwrap();
    root
}

fn load(root: &Path) -> Vec<data::Run> {
    data::find_runs(&[root.to_path_buf()])
        .iter()
        .map(|d| data::Run::load(d).unwrap())
        .collect()
}

#[test]
fn aggregation_groups_runs_by_scenario_replicas_and_operation() {
    let root = fixture();
    let runs = load(root.path());
    assert_eq!(runs.len(), 4, "the broken folder is skipped");
    let frame = data::runs_frame(&runs).unwrap();
    assert_eq!(frame.height(), 8, "4 runs x 2 operations");
    let agg = data::aggregate(&frame).unwrap();
    let rows: Vec<(String, f64, String, f64, f64, f64)> = {
        let sc = data::strs(&agg, "scenario").unwrap();
        let rep = data::f64s(&agg, "replicas").unwrap();
        let op = data::strs(&agg, "op").unwrap();
        let n = data::f64s(&agg, "runs").unwrap();
        let mean = data::f64s(&agg, "throughput_mean").unwrap();
        let max = data::f64s(&agg, "throughput_max").unwrap();
        (0..agg.height())
            .map(|i| (sc[i].clone(), rep[i], op[i].clone(), n[i], mean[i], max[i]))
            .collect()
    };
    let expect = |sc: &str, rep: f64, op: &str, runs: f64, mean: f64, max: f64| {
        (sc.to_string(), rep, op.to_string(), runs, mean, max)
    };
    assert_eq!(
        rows,
        vec![
            expect("chat-default", 1.0, "get_messages", 1.0, 100.0, 100.0),
            expect("chat-default", 3.0, "get_messages", 2.0, 150.0, 200.0),
            expect("chat-default", 1.0, "send_message", 1.0, 100.0, 100.0),
            expect("chat-default", 3.0, "send_message", 2.0, 150.0, 200.0),
            expect("read-heavy", 3.0, "get_messages", 1.0, 50.0, 50.0),
            expect("read-heavy", 3.0, "send_message", 1.0, 50.0, 50.0),
        ]
    );
    // Errors add up over runs; the median p99 is between the two runs' p99s.
    let errors = data::f64s(&agg, "errors").unwrap();
    assert_eq!(errors[3], 6.0, "3 errors in each of two runs");
    let p99 = data::f64s(&agg, "p99_ms_median").unwrap();
    assert!(p99[3] > 8.0 && p99[3] < 24.0, "{}", p99[3]);
    // Writes and reads per (scenario, replicas), for the scaling panel.
    let w = data::throughput_by_kind(&agg, true).unwrap();
    assert_eq!(
        data::f64s(&w, "throughput").unwrap(),
        vec![100.0, 150.0, 50.0]
    );
    // The full distribution comes from the interval logs: 300 calls per op, p50 < max.
    let d = &runs[0].distributions["send_message"];
    assert!(d.first().unwrap().0 == 0.0 && d.len() > 20, "{d:?}");
    assert!(
        d.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "{d:?}"
    );
}

/// Runs of another system (`system: etcd`) are their own lines and aggregates, named after
/// the scenario with the system (`chat-default [etcd]`); the table of runs has a system
/// column, and a run page names its system in its title.
#[test]
fn runs_of_another_system_get_their_own_lines_and_column() {
    let root = fixture();
    let id = "20261127T100500Z-chat-default-r3";
    fixture_run(root.path(), id, "chat-default", 3, 5, 80);
    let file = root.path().join(id).join("summary.json");
    let mut summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    summary["system"] = "etcd".into();
    std::fs::write(&file, serde_json::to_string(&summary).unwrap()).unwrap();

    let runs = load(root.path());
    let agg = data::aggregate(&data::runs_frame(&runs).unwrap()).unwrap();
    let lines = data::strs(&agg, "scenario").unwrap();
    assert!(
        lines.contains(&"chat-default [etcd]".to_string()),
        "{lines:?}"
    );
    assert!(lines.contains(&"chat-default".to_string()), "{lines:?}");
    let etcd_rows = lines.iter().filter(|l| l.ends_with("[etcd]")).count();
    assert_eq!(etcd_rows, 2, "one row per operation of the one etcd run");

    let (out, w) = write(root.path());
    let index = std::fs::read_to_string(&w.index).unwrap();
    assert!(
        index.contains("<th class=\"l sort\">system</th>"),
        "no system column"
    );
    assert!(index.contains("<td class=\"l\">etcd</td>"));
    assert!(index.contains("<td class=\"l\">telegraft</td>"));
    assert!(
        index.contains("chat-default [etcd]"),
        "no etcd line in the charts"
    );
    let page = std::fs::read_to_string(out.path().join(format!("{id}.html"))).unwrap();
    assert!(page.contains("chat-default on etcd · 3 replicas"));
}

fn write(root: &Path) -> (tempfile::TempDir, report::Written) {
    let out = tempfile::tempdir().unwrap();
    let w = report::write_reports(&[root.to_path_buf()], out.path()).unwrap();
    (out, w)
}

#[test]
fn pages_have_every_section_and_no_external_url() {
    let root = fixture();
    let (out, w) = write(root.path());
    assert_eq!(w.pages.len(), 4);
    // Templates escape `/` as `&#x2f;`; browsers read both the same.
    let page = std::fs::read_to_string(out.path().join("20261127T100100Z-chat-default-r3.html"))
        .unwrap()
        .replace("&#x2f;", "/");
    for section in [
        "id=\"header\"",
        "id=\"verdict\"",
        "id=\"operations\"",
        "id=\"distribution\"",
        "id=\"timeseries\"",
        "id=\"replicas\"",
        "id=\"files\"",
        "<details>",
        "name: chat-default",
        "YAML crc32",
        "abc123",
        "ext4 on /dev/test",
        "send_message p99",
        "Unavailable 3",
        "Latency by percentile",
        "Throughput per second",
        "Errors per second",
        "CPU by process (% of one core)",
        "Memory by process (RSS)",
        "fdatasync latency per second",
        "Entries per fdatasync",
        "Commit latency per second",
        "ReadIndex rounds per second",
        "Linearizable reads per ReadIndex round",
        "Forwarded share",
        "Deepest actor queue",
        "snapshot n2",
        "Where the time goes: send_message",
        "proposal to commit",
        "outside the replicas",
        "node-3 p99",
        "loadgen",
        "leader 2 (term 3)",
        "offered ops/s",
        "99%",
        "missed",
        "History check",
        "lost",
        "k1-1",
        "<svg",
    ] {
        assert!(page.contains(section), "the run page lacks {section}");
    }
    assert!(!page.contains("no data"), "every chart has lines");
    // Raw files are linked relative to the page and exist.
    for link in [
        "summary.json",
        "timeseries.csv",
        "resources.csv",
        "metrics.csv",
        "send_message.hdr.hlog",
    ] {
        let href = format!("20261127T100100Z-chat-default-r3/{link}");
        let at = page
            .find(&href)
            .unwrap_or_else(|| panic!("no link to {href}"));
        let start = page[..at].rfind("href=\"").unwrap() + 6;
        let rel = &page[start..at + href.len()];
        assert!(out.path().join(rel).is_file(), "{rel}");
    }
    let index = std::fs::read_to_string(&w.index).unwrap();
    for section in [
        "id=\"scaling\"",
        "id=\"distributions\"",
        "id=\"runs\"",
        "Write throughput by replica count",
        "Read throughput by replica count",
        "send_message p99 by replica count",
        "CPU seconds per 1,000 operations by replica count",
        "1 replicas",
        "3 replicas",
        "chat-default: send_message latency by percentile",
        "20261127T100300Z-read-heavy-r3.html",
        "summary.parquet",
    ] {
        assert!(index.contains(section), "the index lacks {section}");
    }
    assert!(!index.contains("no data"), "every index chart has lines");
    for f in std::fs::read_dir(out.path()).unwrap() {
        let path = f.unwrap().path();
        if path.extension().is_some_and(|e| e == "html") {
            let html = std::fs::read_to_string(&path).unwrap();
            for scheme in ["http://", "https://", "//cdn", "src=\"//"] {
                assert!(!html.contains(scheme), "{} has {scheme}", path.display());
            }
        }
    }
    let csv = std::fs::read_to_string(out.path().join("summary.csv")).unwrap();
    assert!(
        csv.starts_with("scenario,replicas,op,runs,throughput_mean"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 7, "a header and 6 groups:\n{csv}");
    let parquet = std::fs::read(out.path().join("summary.parquet")).unwrap();
    assert!(parquet.starts_with(b"PAR1") && parquet.ends_with(b"PAR1"));
}

/// Debian's Chromium, or `$CHROMIUM`.
fn chromium() -> PathBuf {
    if let Ok(p) = std::env::var("CHROMIUM") {
        return p.into();
    }
    for p in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if Path::new(p).is_file() {
            return p.into();
        }
    }
    panic!(
        "headless Chromium is needed to check the report renders: `apt-get install -y chromium` \
         (.ci/run installs it), or set CHROMIUM=/path/to/chrome"
    );
}

fn headless(page: &Path, extra: &[&str]) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--hide-scrollbars", "--window-size=1400,2200"])
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap()
}

#[test]
fn headless_chromium_renders_the_index() {
    let root = fixture();
    let (out, w) = write(root.path());
    // The DOM after load: the sorting script ran to its end (it marks the body), and the
    // charts and every run are there.
    let dom = headless(&w.index, &["--dump-dom"]);
    let text = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    assert!(
        text.contains("data-ready=\"yes\""),
        "the page's script did not finish:\n{text}"
    );
    assert!(text.matches("<svg").count() >= 6, "charts missing");
    assert_eq!(text.matches(".html\">2026").count(), 4, "a row per run");

    let png = out.path().join("index.png");
    let shot = headless(&w.index, &[&format!("--screenshot={}", png.display())]);
    assert!(
        shot.status.success() && png.is_file(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let stderr = String::from_utf8_lossy(&shot.stderr);
    assert!(!stderr.contains("Uncaught"), "script error: {stderr}");
    // Not blank: a good share of the pixels are not the background, in many colours.
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(px).collect();
    let inked = pixels.iter().filter(|p| p[..3] != [255, 255, 255]).count();
    let colours: std::collections::BTreeSet<[u8; 3]> =
        pixels.iter().map(|p| [p[0], p[1], p[2]]).collect();
    assert!(
        inked * 50 > pixels.len() && colours.len() > 20,
        "{inked} of {} pixels inked, {} colours",
        pixels.len(),
        colours.len()
    );
}

#[test]
fn headless_chromium_renders_a_run_page_with_its_replicas_section() {
    let root = fixture();
    let (out, _) = write(root.path());
    let page = out.path().join("20261127T100100Z-chat-default-r3.html");
    let dom = headless(&page, &["--dump-dom"]);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let text = String::from_utf8_lossy(&dom.stdout);
    let replicas = text
        .split("id=\"replicas\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no Replicas section:\n{text}"));
    let section = replicas.split("id=\"files\"").next().unwrap();
    assert_eq!(section.matches("<svg").count(), 9, "the Replicas charts");
    for title in [
        "CPU by process",
        "Commit latency per second",
        "node-1 p99",
        "ReadIndex rounds",
        "Where the time goes",
    ] {
        assert!(section.contains(title), "{title}");
    }
}
