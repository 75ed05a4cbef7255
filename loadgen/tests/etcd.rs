//! End to end against etcd (`system: etcd`, `scenarios/etcd.md`): `loadgen bench` starts
//! three real etcd members (Debian's `etcd-server`), runs a short chat scenario with the same
//! pacing and history check as against Telegraft, kills the leader and restarts it, and the
//! results folder says `system: etcd`. `just test` installs etcd first (`scripts/setup.sh`);
//! where it cannot be installed, the tests say so and skip.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

/// The etcd server, or `None` (with a message) where there is none.
fn etcd() -> Option<PathBuf> {
    let found = std::env::var_os("ETCD").map(PathBuf::from).or_else(|| {
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|d| d.join("etcd"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!(
            "SKIPPED: no etcd server on this machine (install Debian's etcd-server, or run \
             `just test`, which installs it)"
        );
    }
    found
}

fn loadgen() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    cmd.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    cmd
}

#[test]
fn a_chat_scenario_runs_against_three_etcd_members_and_survives_a_leader_kill() {
    let Some(etcd) = etcd() else { return };
    let results = tempfile::tempdir().unwrap();
    let mut cmd = loadgen();
    cmd.args([
        "bench",
        "--scenario",
        "scenarios/chat.yaml",
        "--no-progress",
    ])
    .args(["--replicas", "3", "--no-report"])
    .arg("--results")
    .arg(results.path())
    .arg("--etcd")
    .arg(&etcd);
    for set in [
        "system=etcd",
        "load.rate=150",
        "load.users=32",
        "load.duration=8s",
        "load.warmup=1s",
        "slo={}",
        "faults=[{at: 3s, action: kill, target: leader}, {at: 6s, action: restart, target: killed}]",
    ] {
        cmd.args(["--set", set]);
    }
    let (s, printed, code) = common::run_bench(&mut cmd, results.path());
    let run = common::run_folder(results.path()).unwrap();
    assert_eq!(code, Some(0), "{printed}\n{}", s["check"]);
    assert_eq!(s["system"], "etcd");
    let check = &s["check"];
    assert_eq!(check["verdict"], "pass", "{check}");
    assert_eq!(check["unread_chats"], 0, "{check}");
    // Messages were sent, acknowledged and read back through etcd.
    assert!(
        s["ops"]["send_message"]["count"].as_u64().unwrap() > 100,
        "{}",
        s["ops"]
    );
    assert!(
        s["ops"]["get_messages"]["count"].as_u64().unwrap() > 100,
        "{}",
        s["ops"]
    );
    // The leader was found with etcd's Status call, killed and restarted.
    let faults = s["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 2, "{faults:?}");
    assert_eq!(faults[0]["action"], "kill");
    assert_eq!(faults[0]["node"], faults[1]["node"], "{faults:?}");
    assert!(faults[0]["unavailable_ms"].as_f64().is_some(), "{faults:?}");
    // The members' logs are kept, as Telegraft replicas' are.
    assert!(run.join("nodes").read_dir().unwrap().count() >= 3);
}

#[test]
fn etcd_takes_the_cluster_timings_and_nothing_else() {
    let validate = |sets: &[&str]| {
        let mut cmd = loadgen();
        cmd.args(["validate", "scenarios/chat.yaml", "--set", "system=etcd"]);
        for s in sets {
            cmd.args(["--set", s]);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        (out.status.code(), stderr)
    };
    let (code, stderr) = validate(&["cluster.heartbeat=30ms", "cluster.election_timeout=150ms"]);
    assert_eq!(code, Some(0), "{stderr}");
    // A replica setting etcd has no flag for.
    let (code, stderr) = validate(&["cluster.batching=off"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("cluster") && stderr.contains("only"),
        "{stderr}"
    );
    // etcd refuses an election timeout under 5 heartbeats: so does validation.
    let (code, stderr) = validate(&["cluster.heartbeat=50ms", "cluster.election_timeout=150ms"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cluster.election_timeout"), "{stderr}");
    assert!(stderr.contains("5 heartbeats"), "{stderr}");
}

#[test]
fn a_partition_of_local_etcd_members_is_refused_at_validation() {
    let out = loadgen()
        .args(["validate", "scenarios/failover.yaml"])
        .args(["--set", "system=etcd"])
        .args([
            "--set",
            "faults=[{at: 2s, action: partition, target: leader, for: 1s}]",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("faults.0"), "{stderr}");
    assert!(stderr.contains("fault hook"), "{stderr}");
}
