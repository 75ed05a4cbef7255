//! `loadgen compare` on fixture results folders (`tests/fixtures/compare/`, checked in; no
//! live run): two runs that differ within their noise pass (exit 0), a planted 30% p99
//! regression fails (exit 6), a bad `--tolerance` or a folder that is not a run is bad input
//! (exit 2), and differing scenarios, replica counts and machines are warned about.
//!
//! The fixtures are made by [`regenerate_fixtures`] (ignored; run it with `cargo test
//! --release -p loadgen --test compare -- --ignored regenerate_fixtures` after changing it)
//! with the load generator's own results writer, from seeded synthetic latencies that move
//! second to second as real runs do:
//! - `base`: 20 s at 3 replicas; `send_message` at ~800 calls/s, log-normal latency (median
//!   4 ms, sigma 0.35), `get_messages` at ~400 calls/s (median 2 ms, sigma 0.3); each second
//!   a little faster or slower than the last (a drift of ~4%), the call count of each second
//!   drawn around the rate; 0.05% of calls fail;
//! - `within-noise`: another seed, 0.08% of calls failing, and `send_message`'s slowest 0.2%
//!   of calls 30% slower: its p999 rises ~30%, beyond the 20% tolerance but within what
//!   the per-second p999 moves anyway (noise);
//! - `p99-regression`: the base's seed (the same calls, the same seconds), with
//!   `send_message`'s slowest 3.6% of calls (z > 1.8) 30% slower: p99 +30% (and p999,
//!   max), while p50 and p90 stay put.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use loadgen::compare::{self, Comparison, Metric, RowVerdict, Tolerance, Verdict};
use loadgen::history;
use loadgen::load::Recorder;
use loadgen::results::{
    self, CheckSummary, ClusterEnd, Generator, Machine, RateStep, RunDir, Summary, Versions,
};
use loadgen::{Op, Scenario};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SECONDS: u64 = 20;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compare")
}

fn run(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// A standard normal draw (Box-Muller).
fn gauss(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random::<f64>();
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// One operation of a fixture run: its rate, latency distribution, and a tail made slower
/// (calls with z above the first number take the second times longer).
struct OpPlan {
    op: Op,
    rate: f64,
    median_ms: f64,
    sigma: f64,
    tail: Option<(f64, f64)>,
}

/// Writes one fixture run folder `root/id`.
fn write_run(root: &Path, id: &str, minute: u32, seed: u64, error_p: f64, ops: &[OpPlan]) {
    let rate: f64 = ops.iter().map(|o| o.rate).sum();
    let yaml = format!(
        "name: compare-fixture\nreplicas: 3\nseed: 1\n\
         dataset: {{users: 100, chats: 10, members_per_chat: 5}}\n\
         load: {{model: open, rate: {rate}, users: 50, duration: {SECONDS}s}}\n\
         mix: {{send_message: 2, get_messages: 1}}\n\
         slo: {{send_message: {{p99: 50ms, error_rate: 0.1%}}, get_messages: {{p99: 20ms}}}}\n"
    );
    let s = Scenario::parse("compare-fixture.yaml", &yaml, &[]).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rec = Recorder::new();
    let mut rows = Vec::new();
    let mut calls = 0;
    for second in 1..=SECONDS {
        for o in ops {
            let n = (o.rate + o.rate.sqrt() * gauss(&mut rng)).round().max(0.0) as u64;
            let drift = (0.04 * gauss(&mut rng)).exp();
            for _ in 0..n {
                let z = gauss(&mut rng);
                let mut ms = o.median_ms * drift * (o.sigma * z).exp();
                if let Some((above, factor)) = o.tail
                    && z > above
                {
                    ms *= factor;
                }
                let d = Duration::from_secs_f64(ms / 1000.0);
                if rng.random::<f64>() < error_p {
                    rec.error(o.op, "Unavailable", d);
                } else {
                    rec.ok(o.op, d, d.mul_f64(0.9));
                }
            }
            calls += n;
        }
        rows.extend(rec.close_interval(second));
    }
    let duration = SECONDS as f64;
    let ops = results::op_results(&rec, duration);
    let generator = Generator {
        calls,
        cpu_s: 1.0,
        cpu_us_per_call: 30.0,
        intended: Some(calls),
        sent: Some(calls),
        late: Some(0),
        lateness_ms: None,
        warning: None,
        reroutes: 0,
    };
    let slo = results::evaluate_slos(&s, &ops, &generator, &[]);
    let summary = Summary {
        run_id: id.into(),
        system: "telegraft".into(),
        scenario: s.name.clone(),
        scenario_file: "compare-fixture.yaml".into(),
        description: "compare fixture (synthetic)".into(),
        replicas: 3,
        model: "open".into(),
        offered_rate: Some(rate),
        offered_schedule: vec![RateStep {
            start_s: 0.0,
            end_s: duration,
            rate,
        }],
        users: 50,
        seed: 1,
        warmup_s: 0.0,
        duration_s: duration,
        started_at: format!("2026-12-01T01:{minute:02}:00Z"),
        git_rev: Some(format!("fixture{seed}")),
        machine: Machine {
            cores: 2,
            memory_mb: 4096,
            cpu_model: "fixture CPU".into(),
            kernel: "6.8.0".into(),
            disk: "ext4 on /dev/fixture".into(),
        },
        ops,
        slo,
        generator,
        cluster: ClusterEnd {
            kind: "local".into(),
            endpoints: vec!["127.0.0.1:7001".into()],
            leader_at_start: Some("127.0.0.1:7001".into()),
            nodes_at_end: vec![],
            leader_changes: vec![],
            security: Default::default(),
        },
        versions: Versions {
            loadgen: "0.1.0".into(),
        },
        check: CheckSummary::of(&history::check(&[])),
        faults: vec![],
        interrupted: false,
        resources: Default::default(),
        time_split: None,
    };
    let measured_start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    RunDir::open(&root.join(id))
        .write_measurements(&summary, &s, &rec, &rows, measured_start)
        .unwrap();
}

fn plans(send_tail: Option<(f64, f64)>) -> [OpPlan; 2] {
    [
        OpPlan {
            op: Op::SendMessage,
            rate: 800.0,
            median_ms: 4.0,
            sigma: 0.35,
            tail: send_tail,
        },
        OpPlan {
            op: Op::GetMessages,
            rate: 400.0,
            median_ms: 2.0,
            sigma: 0.3,
            tail: None,
        },
    ]
}

/// Writes the three fixture runs (see the module's docs). Ignored: the fixtures are checked
/// in, and the tests read them as they are.
#[test]
#[ignore]
fn regenerate_fixtures() {
    let root = fixtures();
    for id in ["base", "within-noise", "p99-regression"] {
        let _ = std::fs::remove_dir_all(root.join(id));
    }
    write_run(&root, "base", 0, 1, 0.0005, &plans(None));
    write_run(
        &root,
        "within-noise",
        10,
        2,
        0.0008,
        &plans(Some((2.9, 1.3))),
    );
    // The base's seed: the same calls, the tail alone 30% slower.
    write_run(
        &root,
        "p99-regression",
        20,
        1,
        0.0005,
        &plans(Some((1.8, 1.3))),
    );
}

fn row(c: &Comparison, op: &str, m: Metric) -> compare::Row {
    c.ops
        .iter()
        .find(|o| o.op == op)
        .and_then(|o| o.rows.iter().find(|r| r.metric == m))
        .cloned()
        .unwrap_or_else(|| panic!("no {op} {m} row"))
}

// The library: these pass before `loadgen compare` is wired into the binary.

#[test]
fn runs_within_their_noise_pass() {
    let c = compare::compare(&run("base"), &run("within-noise"), &Tolerance::default()).unwrap();
    assert_eq!(c.verdict, Verdict::Pass, "{}", compare::table(&c));
    assert_eq!(c.exit_code, 0);
    assert!(c.regressions.is_empty());
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // The noise rule is what lets it pass: p999 moved beyond its 20% tolerance, by less than
    // the seconds of either run move.
    let p999 = row(&c, "send_message", Metric::P999);
    assert!(
        p999.worse && p999.beyond_tolerance && !p999.beyond_noise,
        "{p999:?}"
    );
    assert_eq!(p999.verdict, RowVerdict::Noise);
    // Everything else is within its tolerance; max is shown, not judged.
    let p99 = row(&c, "send_message", Metric::P99);
    assert_eq!(p99.verdict, RowVerdict::Ok, "{p99:?}");
    assert_eq!(
        row(&c, "send_message", Metric::Max).verdict,
        RowVerdict::NotJudged
    );
    assert_eq!(c.ops.len(), 2);
    for op in &c.ops {
        assert_eq!(op.rows.len(), Metric::ALL.len());
        for r in &op.rows {
            assert!(r.base_spread.is_some() && r.new_spread.is_some(), "{r:?}");
        }
    }
}

#[test]
fn a_planted_30_percent_p99_regression_fails() {
    let c = compare::compare(&run("base"), &run("p99-regression"), &Tolerance::default()).unwrap();
    assert_eq!(c.verdict, Verdict::Regression);
    assert_eq!(c.exit_code, 6);
    let p99 = row(&c, "send_message", Metric::P99);
    assert_eq!(p99.verdict, RowVerdict::Regression, "{p99:?}");
    let pct = p99.delta_pct.unwrap();
    assert!((29.0..31.0).contains(&pct), "p99 {pct}%");
    assert!(p99.delta > p99.noise.unwrap(), "{p99:?}");
    assert!(
        c.regressions
            .iter()
            .any(|r| r.starts_with("send_message p99:")),
        "{:?}",
        c.regressions
    );
    // Only the tail moved.
    for m in [Metric::P50, Metric::P90, Metric::Throughput] {
        assert_ne!(row(&c, "send_message", m).verdict, RowVerdict::Regression);
    }
    for r in &c.ops.iter().find(|o| o.op == "get_messages").unwrap().rows {
        assert_ne!(r.verdict, RowVerdict::Regression, "{r:?}");
    }
    // A run compared with itself has no delta at all.
    let same = compare::compare(&run("base"), &run("base"), &Tolerance::default()).unwrap();
    assert!(
        same.ops
            .iter()
            .flat_map(|o| &o.rows)
            .all(|r| r.delta == 0.0)
    );
    assert_eq!(same.exit_code, 0);
    // A looser p99 tolerance lets the same runs pass.
    let loose = Tolerance::parse("p99=40%,p999=40%").unwrap();
    let c = compare::compare(&run("base"), &run("p99-regression"), &loose).unwrap();
    assert_eq!(c.exit_code, 0, "{:?}", c.regressions);
}

#[test]
fn compare_json_round_trips_and_the_page_overlays_both_runs() {
    let out = tempfile::tempdir().unwrap();
    let code = compare::run_cli(
        &run("base"),
        &run("p99-regression"),
        "p99=10%,throughput=5%",
        Some(out.path()),
    )
    .unwrap();
    assert_eq!(code, 6);
    let json = std::fs::read_to_string(out.path().join("compare.json")).unwrap();
    let back: Comparison = serde_json::from_str(&json).unwrap();
    assert_eq!(back.verdict, Verdict::Regression);
    assert_eq!(back.base.run_id, "base");
    assert_eq!(back.new.scenario_crc32, back.base.scenario_crc32);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let p99 = &v["ops"][1]["rows"][3];
    assert_eq!(v["ops"][1]["op"], "send_message");
    assert_eq!(p99["metric"], "p99");
    assert_eq!(p99["verdict"], "regression");
    assert_eq!(v["tolerance"]["max"], serde_json::Value::Null);
    assert_eq!(v["exit_code"], 6);
    let html = std::fs::read_to_string(out.path().join("compare.html")).unwrap();
    for text in [
        "send_message: latency by percentile",
        "get_messages: successful calls per second",
        "p99 and p50 per second",
        "REGRESSION",
        "base",
        "p99-regression",
        "<svg",
    ] {
        assert!(html.contains(text), "compare.html lacks {text}");
    }
    assert!(!html.contains("http"), "no URL in an offline page");
    // Links to the runs' folders are relative to the page.
    assert!(!html.contains(&format!("href=\"{}", fixtures().display())));
}

/// A copy of a fixture run in `dir`, to be edited.
fn copy_run(name: &str, dir: &Path) -> PathBuf {
    let to = dir.join(name);
    std::fs::create_dir_all(&to).unwrap();
    for f in std::fs::read_dir(run(name)).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
    }
    to
}

/// `within-noise`, with another scenario, replica count and machine.
fn elsewhere(dir: &Path) -> PathBuf {
    let to = copy_run("within-noise", dir);
    let path = to.join("summary.json");
    let mut s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    s["replicas"] = 5.into();
    s["machine"]["cores"] = 8.into();
    s["machine"]["cpu_model"] = "another CPU".into();
    std::fs::write(&path, serde_json::to_string_pretty(&s).unwrap()).unwrap();
    let yaml = to.join("scenario.yaml");
    let text = std::fs::read_to_string(&yaml)
        .unwrap()
        .replace("replicas: 3", "replicas: 5");
    std::fs::write(&yaml, text).unwrap();
    to
}

#[test]
fn differing_scenarios_replicas_and_machines_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let new = elsewhere(dir.path());
    let c = compare::compare(&run("base"), &new, &Tolerance::default()).unwrap();
    let w = c.warnings.join("\n");
    assert!(
        w.contains("the scenarios differ: scenario.yaml crc32"),
        "{w}"
    );
    assert!(
        w.contains("the replica counts differ: 3 in base, 5 in within-noise"),
        "{w}"
    );
    assert!(
        w.contains("the machines differ (base vs within-noise): cores 2 vs 8, cpu_model 'fixture CPU' vs 'another CPU'"),
        "{w}"
    );
    assert_eq!(c.warnings.len(), 3, "{w}");
    assert_ne!(c.base.scenario_crc32, c.new.scenario_crc32);
    // Warnings do not change the verdict.
    assert_eq!(c.exit_code, 0);
}

#[test]
fn bad_input_is_a_usage_error() {
    let exit_of = |r: anyhow::Result<u8>| match r {
        Ok(code) => code,
        Err(e) => loadgen::exit::of_error(&e),
    };
    let out = tempfile::tempdir().unwrap();
    let cli = |base: &Path, tol: &str| {
        exit_of(compare::run_cli(base, &run("base"), tol, Some(out.path())))
    };
    assert_eq!(cli(&run("base"), "p98=1%"), 2);
    assert_eq!(cli(&run("base"), "p99=ten"), 2);
    assert_eq!(cli(&fixtures(), ""), 2, "the fixtures' folder is not a run");
    assert_eq!(cli(&out.path().join("missing"), ""), 2);
    let err = compare::compare(&fixtures(), &run("base"), &Tolerance::default()).unwrap_err();
    assert!(
        format!("{err:#}").contains("not a run's results folder"),
        "{err:#}"
    );
    // A run folder as --out: refused, nothing written into it.
    let dir = tempfile::tempdir().unwrap();
    let copy = copy_run("base", dir.path());
    assert_eq!(
        exit_of(compare::run_cli(
            &run("base"),
            &run("within-noise"),
            "",
            Some(&copy)
        )),
        2
    );
    assert!(!copy.join("compare.json").exists());
}

// The binary: `loadgen compare` as a CI runs it.

fn loadgen(args: &[&Path], extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("compare")
        .args(args)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn the_command_exits_0_within_noise_and_6_on_the_planted_regression() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path();
    let pass = loadgen(
        &[&run("base"), &run("within-noise")],
        &["--out", o.to_str().unwrap()],
    );
    let stdout = String::from_utf8_lossy(&pass.stdout);
    assert_eq!(
        pass.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&pass.stderr)
    );
    assert!(stdout.contains("| send_message | p999"), "{stdout}");
    assert!(stdout.contains("within noise"), "{stdout}");
    assert!(stdout.contains("no regression"), "{stdout}");
    assert!(o.join("compare.json").is_file() && o.join("compare.html").is_file());

    let fail = loadgen(
        &[&run("base"), &run("p99-regression")],
        &[
            "--tolerance",
            "p99=10%,throughput=5%",
            "--out",
            o.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&fail.stdout);
    assert_eq!(fail.status.code(), Some(6), "{stdout}");
    assert!(stdout.contains("REGRESSION"), "{stdout}");
    assert!(stdout.contains("regression: send_message p99:"), "{stdout}");
    let c: Comparison =
        serde_json::from_str(&std::fs::read_to_string(o.join("compare.json")).unwrap()).unwrap();
    assert!(c.regressed());
}

#[test]
fn the_command_warns_on_stderr_and_refuses_bad_input_with_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let new = elsewhere(dir.path());
    let o = loadgen(&[&run("base"), &new], &["--out", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    for w in [
        "warning: the scenarios differ",
        "warning: the replica counts differ",
        "warning: the machines differ",
    ] {
        assert!(stderr.contains(w), "{stderr}");
    }

    let bad = loadgen(
        &[&run("base"), &run("within-noise")],
        &["--tolerance", "p98=5%"],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown metric 'p98'"));
    let bad = loadgen(
        &[&fixtures(), &run("base")],
        &["--out", out.to_str().unwrap()],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a run's results folder"));
}
