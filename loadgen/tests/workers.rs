//! Several generators, one result (`loadgen bench --workers N`, `loadgen worker`,
//! `loadgen merge`), end to end against real local replicas:
//! - two workers and one, at the same offered rate and duration, intend the same calls;
//! - the merged run's counts are the sum of the workers' exactly, and its history check
//!   passes;
//! - `loadgen merge` of the workers' folders gives the same counts again;
//! - a worker killed mid-run fails the run with exit 1, naming it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bench(results: &Path, workers: u32) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    cmd.current_dir(repo())
        .args([
            "bench",
            "--scenario",
            "scenarios/chat.yaml",
            "--no-progress",
        ])
        .args(["--replicas", "3", "--no-report"])
        .args(["--workers", &workers.to_string()])
        .arg("--results")
        .arg(results);
    for set in [
        "load.rate=200",
        "load.users=16",
        "load.duration=5s",
        "load.warmup=1s",
        "slo={}",
    ] {
        cmd.args(["--set", set]);
    }
    cmd
}

use common::summary;

fn only_run(results: &Path) -> PathBuf {
    common::run_folder(results).expect("a run folder")
}

fn count(s: &serde_json::Value, op: &str, field: &str) -> u64 {
    s["ops"][op][field].as_u64().unwrap_or(0)
}

#[test]
fn two_workers_make_one_generators_calls_and_merge_exactly() {
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    let out = bench(one.path(), 1).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bench(two.path(), 2).output().unwrap();
    let printed = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{printed}");
    let (single, merged_dir) = (summary(&only_run(one.path())), only_run(two.path()));
    let merged = summary(&merged_dir);

    // The same schedule: the intended sends are the same, call for call.
    let intended = |s: &serde_json::Value| s["generator"]["intended"].as_u64().unwrap();
    assert_eq!(intended(&single), intended(&merged));
    assert!(intended(&merged) > 500, "{}", merged["generator"]);

    // The merged counts are the workers' summed, exactly.
    let workers: Vec<PathBuf> = (0..2)
        .map(|i| merged_dir.join("workers").join(format!("worker-{i}")))
        .collect();
    let parts: Vec<serde_json::Value> = workers.iter().map(|w| summary(w)).collect();
    for op in ["send_message", "get_messages", "get_chat_users"] {
        for field in ["count", "errors"] {
            let sum: u64 = parts.iter().map(|p| count(p, op, field)).sum();
            assert_eq!(count(&merged, op, field), sum, "{op} {field}");
        }
        // Both workers made calls of every kind.
        assert!(parts.iter().all(|p| count(p, op, "count") > 0), "{op}");
    }
    // Interval by interval too: the merged time series' calls are the workers' summed.
    let calls = |dir: &Path| -> u64 {
        let text = std::fs::read_to_string(dir.join("timeseries.csv")).unwrap();
        let mut rows = text.lines();
        let header: Vec<&str> = rows.next().unwrap().split(',').collect();
        let (c, e) = (
            header.iter().position(|h| *h == "count").unwrap(),
            header.iter().position(|h| *h == "errors").unwrap(),
        );
        rows.map(|r| {
            let f: Vec<&str> = r.split(',').collect();
            f[c].parse::<u64>().unwrap() + f[e].parse::<u64>().unwrap()
        })
        .sum()
    };
    assert_eq!(
        calls(&merged_dir),
        workers.iter().map(|w| calls(w)).sum::<u64>()
    );
    // Each worker's own check is left to the merge, which passed.
    assert_eq!(parts[0]["check"]["verdict"], "skipped");
    assert_eq!(merged["check"]["verdict"], "pass", "{}", merged["check"]);
    assert_eq!(merged["check"]["unread_chats"], 0, "{}", merged["check"]);

    // `loadgen merge` of the same folders: the same counts, and the check passes again.
    let again = two.path().join("merged-again");
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .current_dir(repo())
        .arg("merge")
        .args(&workers)
        .arg("--out")
        .arg(&again)
        .args(["--clock-skew-ms", "5", "--no-report"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = summary(&again);
    for op in ["send_message", "get_messages"] {
        assert_eq!(count(&m, op, "count"), count(&merged, op, "count"), "{op}");
    }
    assert_eq!(m["check"]["verdict"], "pass");
}

#[test]
fn merging_folders_that_are_not_one_runs_workers_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["merge"])
        .arg(dir.path())
        .arg("--out")
        .arg(dir.path().join("m"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("worker.json"), "{stderr}");
}

#[test]
fn a_worker_that_dies_fails_the_run_and_is_named() {
    let results = tempfile::tempdir().unwrap();
    let mut cmd = bench(results.path(), 2);
    cmd.args(["--set", "load.duration=20s"]);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill worker 1 once it runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    let killed = loop {
        let found = std::fs::read_dir("/proc").unwrap().find_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.contains(" worker ")
                && cmdline.contains("--index 1 ")
                && cmdline.contains(&results.path().display().to_string()))
            .then_some(pid)
        });
        if let Some(pid) = found {
            std::thread::sleep(Duration::from_secs(3));
            Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .unwrap();
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(killed, "worker 1 never ran\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("worker 1 failed"), "{stderr}");
}

#[test]
fn with_two_workers_the_coordinator_injects_the_faults() {
    let results = tempfile::tempdir().unwrap();
    let out = bench(results.path(), 2)
        .args([
            "--set",
            "faults=[{at: 2s, action: kill, target: leader}, {at: 4s, action: restart, target: killed}]",
        ])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{printed}");
    let s = summary(&only_run(results.path()));
    assert_eq!(s["check"]["verdict"], "pass", "{}", s["check"]);
    let faults = s["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 2, "{faults:?}");
    // Timed on the workers' shared zero: a new leader acknowledged writes within the
    // election's time, not seconds off.
    let window = faults[0]["unavailable_ms"].as_f64().expect("a window");
    assert!(window < 3_000.0, "{faults:?}");
}
