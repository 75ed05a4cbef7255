//! End to end on containers (`loadgen bench --deploy docker`): the image is built from this
//! build's binaries (`scripts/image.sh`, no base image pulled), a 3-replica cluster is started
//! with Docker Compose from `deploy/compose.yaml` on a private network, and faults go through
//! the engine. One test kills the leader's container under load and starts it again; another
//! cuts the leader off the network (`docker network disconnect`) and heals the cut. Both
//! history checks must pass.
//!
//! Where no Docker Engine is reachable (or no Compose is installed), the tests print why and
//! skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

mod common;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Why the engine cannot be used here, if it cannot.
fn unavailable() -> Option<String> {
    let docker = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    match docker {
        Err(e) => return Some(format!("no docker command ({e})")),
        Ok(o) if !o.status.success() => {
            return Some(format!(
                "no Docker Engine is reachable: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Ok(_) => {}
    }
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let standalone = Command::new("docker-compose")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    (!plugin && !standalone).then(|| "Docker Compose is not installed".to_string())
}

/// Builds `telegraft-etcd:latest` once per test binary from this machine's etcd, or says
/// why it cannot.
fn etcd_image() -> Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = Command::new("bash")
                .args(["scripts/image.sh", "etcd"])
                .current_dir(repo())
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
            }
        })
        .clone()
}

/// Builds `telegraft:latest` once per test binary, from the binaries this test runs.
fn image() -> Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            // The binaries under test: loadgen, and telegraft beside it (built with the
            // tests' own profile, as tests/bench.rs finds it).
            let loadgen = PathBuf::from(env!("CARGO_BIN_EXE_loadgen"));
            let bin_dir = loadgen.parent().expect("bin dir").to_path_buf();
            if !bin_dir.join("telegraft").is_file() {
                return Err(format!("no telegraft beside {}", loadgen.display()));
            }
            let out = Command::new("bash")
                .arg("scripts/image.sh")
                .arg("telegraft")
                .current_dir(repo())
                .env("TELEGRAFT_BIN_DIR", &bin_dir)
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "scripts/image.sh failed:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        })
        .clone()
}

/// Runs chat.yaml on 3 containers with `faults`; returns the summary and what was printed.
fn bench_on_docker(faults: &str) -> Option<(serde_json::Value, String, Option<i32>)> {
    bench_on_docker_with(&[faults])
}

fn bench_on_docker_with(extra: &[&str]) -> Option<(serde_json::Value, String, Option<i32>)> {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return None;
    }
    image().unwrap();
    let results = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    cmd.current_dir(repo())
        .args([
            "bench",
            "--scenario",
            "scenarios/chat.yaml",
            "--no-progress",
        ])
        .args(["--replicas", "3", "--deploy", "docker", "--no-report"])
        .arg("--results")
        .arg(results.path());
    for set in [
        "load.rate=150",
        "load.users=32",
        "load.duration=10s",
        "load.warmup=1s",
        "slo={}",
        "resources.replica_cpus=0.5",
    ] {
        cmd.args(["--set", set]);
    }
    for e in extra {
        match e.strip_prefix("--") {
            Some(flag) => {
                let (k, v) = flag.split_once('=').unwrap();
                cmd.arg(format!("--{k}")).arg(v);
            }
            None => {
                cmd.args(["--set", e]);
            }
        }
    }
    let (s, printed, code) = common::run_bench(&mut cmd, results.path());
    // The replicas' logs are kept from their containers' output.
    let run = common::run_folder(results.path()).unwrap();
    let logs = run.join("nodes").read_dir().map(|d| d.count()).unwrap_or(0);
    assert_eq!(logs, 3, "{printed}");
    Some((s, printed, code))
}

/// What both runs must show: on containers, messages sent and read, the history check passed.
fn assert_ran_and_checked(s: &serde_json::Value, printed: &str, code: Option<i32>) {
    assert_eq!(code, Some(0), "{printed}\n{}", s["check"]);
    assert_eq!(s["cluster"]["kind"], "docker", "{}", s["cluster"]);
    // Containers of Telegraft always serve TLS (etcd's are plaintext).
    let tls = s["system"] == "telegraft";
    assert_eq!(s["cluster"]["security"]["tls"], tls, "{}", s["cluster"]);
    let check = &s["check"];
    assert_eq!(check["verdict"], "pass", "{check}");
    assert_eq!(check["unread_chats"], 0, "{check}");
    for op in ["send_message", "get_messages"] {
        assert!(
            s["ops"][op]["count"].as_u64().unwrap() > 300,
            "{op}: {}",
            s["ops"]
        );
    }
}

#[test]
/// With authenticated users too: every call carries its user's token, logins run beside the
/// chat calls, and a replica restarted from its volume checks tokens as before (the key is
/// the cluster's, not the replica's).
fn killing_the_leaders_container_under_load_loses_nothing() {
    let Some((s, printed, code)) = bench_on_docker_with(&[
        "faults=[{at: 3s, action: kill, target: leader}, {at: 6s, action: restart, target: killed}]",
        "security.auth=true",
        "mix.login=1",
        "dataset={users: 60, chats: 10, members_per_chat: 6}",
    ]) else {
        return;
    };
    assert_ran_and_checked(&s, &printed, code);
    assert_eq!(s["cluster"]["security"]["auth"], true, "{}", s["cluster"]);
    assert!(
        s["ops"]["login"]["count"].as_u64().unwrap() > 0,
        "{}",
        s["ops"]
    );
    for (op, r) in s["ops"].as_object().unwrap() {
        let codes = r["errors_by_code"].as_object().unwrap();
        assert!(!codes.contains_key("Unauthenticated"), "{op}: {codes:?}");
        assert!(!codes.contains_key("PermissionDenied"), "{op}: {codes:?}");
    }
    let faults = assert_leader_replaced(&s, "kill", 2);
    assert_eq!(faults[0]["node"], faults[1]["node"], "{faults:?}");
}

/// The scenario's first fault (`action`, of `count`) hit the leader without an error, writes
/// were acknowledged again after it (a window was measured), and another leader took over.
fn assert_leader_replaced<'a>(
    s: &'a serde_json::Value,
    action: &str,
    count: usize,
) -> &'a Vec<serde_json::Value> {
    let faults = s["faults"].as_array().unwrap();
    assert_eq!(faults.len(), count, "{faults:?}");
    assert_eq!(faults[0]["action"], action);
    assert!(faults[0]["error"].is_null(), "{faults:?}");
    assert!(faults[0]["unavailable_ms"].as_f64().is_some(), "{faults:?}");
    assert!(
        s["cluster"]["leader_changes"].as_array().unwrap().len() >= 2,
        "{}",
        s["cluster"]
    );
    faults
}

#[test]
fn cutting_the_leader_off_the_network_under_load_loses_nothing() {
    let Some((s, printed, code)) =
        bench_on_docker("faults=[{at: 3s, action: partition, target: leader, for: 3s}]")
    else {
        return;
    };
    assert_ran_and_checked(&s, &printed, code);
    // The majority elected another leader while the old one was cut off.
    let faults = assert_leader_replaced(&s, "partition", 1);
    assert_eq!(faults[0]["healed"], true, "{faults:?}");
    assert!(printed.contains("network cut"), "{printed}");
}

#[test]
fn cpu_limits_need_containers() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .current_dir(repo())
        .args(["validate", "scenarios/chat.yaml"])
        .args(["--set", "resources.replica_cpus=1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("resources.replica_cpus"), "{stderr}");
    assert!(stderr.contains("deploy: docker"), "{stderr}");
}

#[test]
fn two_worker_containers_with_a_cpu_limit_make_one_checked_run() {
    let Some((s, printed, code)) =
        bench_on_docker_with(&["--workers=2", "resources.loadgen_cpus=0.5"])
    else {
        return;
    };
    assert_ran_and_checked(&s, &printed, code);
    assert!(
        printed.contains("2 worker containers of 0.5 CPUs each"),
        "{printed}"
    );
    // The intended calls are one generator's: 150 ops/s for 10 s.
    assert_eq!(s["generator"]["intended"], 1500, "{}", s["generator"]);
}

#[test]
fn etcd_members_on_containers_take_a_network_cut_of_their_leader() {
    if unavailable().is_none() && etcd_image().is_err() {
        eprintln!("SKIPPED: no etcd image: {}", etcd_image().unwrap_err());
        return;
    }
    let Some((s, printed, code)) = bench_on_docker_with(&[
        "system=etcd",
        "resources.replica_cpus=1",
        "faults=[{at: 3s, action: partition, target: leader, for: 3s}]",
    ]) else {
        return;
    };
    // A call to the cut-off leader may time out (etcd's own timeouts): the check must pass.
    assert_eq!(s["system"], "etcd");
    assert_eq!(s["cluster"]["kind"], "docker", "{}", s["cluster"]);
    // Containers of Telegraft always serve TLS (etcd's are plaintext).
    let tls = s["system"] == "telegraft";
    assert_eq!(s["cluster"]["security"]["tls"], tls, "{}", s["cluster"]);
    assert_eq!(s["check"]["verdict"], "pass", "{}\n{printed}", s["check"]);
    assert!(matches!(code, Some(0 | 3)), "{printed}");
    let faults = s["faults"].as_array().unwrap();
    assert_eq!(faults[0]["healed"], true, "{faults:?}");
    assert!(printed.contains("network cut"), "{printed}");
}

/// `scripts/compose.sh up 3` (what `just up replicas=3` runs), as its own project on its own
/// subnet: the replicas elect a leader, and a follower moved to another address on the
/// network (disconnected, connected again elsewhere) is found again by name and catches up.
#[test]
fn a_compose_cluster_finds_a_peer_again_at_a_new_address() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    image().unwrap();
    let project = format!("tgtest{}", std::process::id());
    let subnet = format!("172.29.{}", std::process::id() % 250);
    let certs = tempfile::tempdir().unwrap();
    let certs_dir = certs.path().join("certs");
    let compose = |args: &[&str]| {
        Command::new("bash")
            .arg("scripts/compose.sh")
            .args(args)
            .current_dir(repo())
            .env("TG_PROJECT", &project)
            .env("TG_SUBNET", &subnet)
            .env("TG_CERTS", &certs_dir)
            .output()
            .unwrap()
    };
    struct Down<'a>(&'a dyn Fn(&[&str]) -> std::process::Output);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            (self.0)(&["down"]);
        }
    }
    let _down = Down(&compose);
    let up = compose(&["up", "3"]);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(up.status.success(), "{printed}");
    assert!(printed.contains("3 replicas up"), "{printed}");
    let exec = |args: &[&str]| -> String {
        let out = Command::new("docker")
            .args(["exec", &format!("{project}-0"), "telegraft"])
            .args(args)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let moved = format!("{project}-2");
    let network = format!("{project}_chat");
    let docker = |args: &[&str]| {
        let out = Command::new("docker").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    docker(&["network", "disconnect", &network, &moved]);
    docker(&[
        "network",
        "connect",
        "--ip",
        &format!("{subnet}.60"),
        &network,
        &moved,
    ]);
    // The replicas serve TLS with the certificates `up` made (plaintext is refused).
    assert!(certs_dir.join("ca.pem").is_file());
    let plain = Command::new("docker")
        .args(["exec", &format!("{project}-0"), "telegraft"])
        .args(["status", "--endpoints", "telegraft-0:7001"])
        .output()
        .unwrap();
    assert!(
        !plain.status.success(),
        "a plaintext status call is refused"
    );
    let created = exec(&[
        "chat",
        "--tls-dir",
        "/certs",
        "--endpoint",
        "telegraft-0:7001",
        "create-user",
        "moved",
    ]);
    assert!(created.contains("user_id"), "{created}");
    // Node 3, at its new address, gets the entry: its peers resolved its name again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = exec(&[
            "status",
            "--json",
            "--tls-dir",
            "/certs",
            "--endpoints",
            "telegraft-0:7001,telegraft-2:7001",
        ]);
        let nodes: Vec<serde_json::Value> = serde_json::from_str(&status).unwrap_or_default();
        let commit = |i: usize| nodes.get(i).and_then(|n| n["commit_index"].as_u64());
        if nodes.len() == 2 && commit(1).is_some() && commit(1) == commit(0) && commit(0) > Some(1)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node 3 never caught up: {status}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
