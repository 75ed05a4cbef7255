//! Scenario parsing: every shipped scenario is valid, each kind of bad input gets its exact
//! error (file:line:column: field: message), and `--set` overrides work and are checked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use loadgen::scenario::{
    Arrivals, Model, Op, Popularity, Scenario, SizeDist, SizeShape, ThinkDist,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn shipped_scenarios_are_valid() {
    let dir = root().join("scenarios");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let s = Scenario::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            names.push(s.name.clone());
            // The effective scenario round-trips through YAML unchanged.
            let again = Scenario::parse("again", &s.to_yaml(), &[]).unwrap();
            assert_eq!(again, s, "{}", path.display());
        }
    }
    names.sort();
    assert_eq!(
        names,
        [
            "batching",
            "chat-default",
            "chat-secure",
            "closed",
            "failover",
            "partition",
            "read-heavy",
            "realistic",
            "write-burst"
        ]
    );
    // The batching experiment's settings reach the replicas as `telegraft node` flags.
    let batching = dir.join("batching.yaml");
    let on = Scenario::load(&batching, &[]).unwrap();
    assert!(on.cluster.node_args().is_empty(), "{:?}", on.cluster);
    let off = Scenario::load(
        &batching,
        &[
            "cluster.batching=off".into(),
            "cluster.election_timeout=300ms".into(),
            "cluster.snapshot_every=0".into(),
            "cluster.snapshot_bytes=1048576".into(),
            "cluster.follower_reads=off".into(),
        ],
    )
    .unwrap();
    assert_eq!(
        off.cluster.node_args(),
        [
            "--batching",
            "off",
            "--snapshot-every",
            "0",
            "--snapshot-bytes",
            "1048576",
            "--follower-reads",
            "off",
            "--heartbeat",
            "50ms",
            "--election-timeout",
            "300ms"
        ]
    );
    let chat = Scenario::load(&dir.join("chat.yaml"), &[]).unwrap();
    assert_eq!(chat.load.model, Model::Open);
    assert!(
        chat.mix[&Op::GetMessages] > chat.mix[&Op::SendMessage],
        "reads outnumber writes"
    );
    let burst = Scenario::load(&dir.join("write-burst.yaml"), &[]).unwrap();
    assert_eq!(burst.duration(), Duration::from_secs(40));
    // Scenarios without the chat-shaped fields keep today's load.
    assert_eq!(chat.load.arrivals, Arrivals::Uniform);
    assert_eq!(chat.dataset.chat_popularity, Popularity::Uniform);
    assert_eq!(chat.dataset.user_activity, Popularity::Uniform);
    assert_eq!(
        chat.message_size.shape(),
        Some(SizeShape::Uniform { min: 16, max: 256 })
    );
    let closed = Scenario::load(&dir.join("closed.yaml"), &[]).unwrap();
    assert_eq!(closed.load.think_time.dist, ThinkDist::Fixed);
    assert_eq!(closed.load.think_time.mean.0, Duration::from_millis(100));
    // realistic.yaml uses them all, with chat.yaml's rate, mix and objectives.
    let real = Scenario::load(&dir.join("realistic.yaml"), &[]).unwrap();
    assert_eq!(real.load.arrivals, Arrivals::Poisson);
    assert_eq!(real.dataset.chat_popularity, Popularity::Zipf(1.1));
    assert_eq!(real.dataset.user_activity, Popularity::Zipf(0.9));
    assert_eq!(
        real.message_size.shape(),
        Some(SizeShape::Lognormal {
            median: 60,
            p99: 1000
        })
    );
    assert_eq!(
        (real.load.rate, &real.mix, &real.slo),
        (chat.load.rate, &chat.mix, &chat.slo)
    );
}

/// Every form of the chat-shaped fields parses, and the effective scenario writes them back
/// so that reading it again gives the same scenario.
#[test]
fn chat_shaped_fields_parse_and_round_trip() {
    let base = "name: x\nmix: {send_message: 1}\n";
    for (dataset, load, size) in [
        (
            "{users: 10, chats: 4, members_per_chat: 3, chat_popularity: {zipf: 1.1}, user_activity: uniform}",
            "{model: open, rate: 10, arrivals: poisson, users: 2, duration: 1s}",
            "{dist: lognormal, median: 60, p99: 1000}",
        ),
        (
            "{users: 10, chats: 4, members_per_chat: 3, user_activity: {zipf: 2}}",
            "{model: closed, users: 2, think_time: {dist: exponential, mean: 50ms}, duration: 1s}",
            "{dist: fixed, bytes: 100}",
        ),
        (
            "{users: 10, chats: 4, members_per_chat: 3}",
            "{model: closed, users: 2, think_time: {dist: uniform, mean: 1s}, duration: 1s}",
            "{dist: uniform, min: 1, max: 10}",
        ),
        (
            "{users: 10, chats: 4, members_per_chat: 3}",
            "{model: closed, users: 2, think_time: {dist: fixed, mean: 20ms}, duration: 1s}",
            "{min: 5, max: 5}",
        ),
    ] {
        let text = format!("{base}dataset: {dataset}\nload: {load}\nmessage_size: {size}\n");
        let s = Scenario::parse("x.yaml", &text, &[]).unwrap_or_else(|e| panic!("{e}"));
        let yaml = s.to_yaml();
        let again = Scenario::parse("again", &yaml, &[]).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(again, s, "{yaml}");
    }
    // A fixed think time is written back as the plain duration it always was.
    let s = Scenario::load(&root().join("scenarios/closed.yaml"), &[]).unwrap();
    assert!(s.to_yaml().contains("think_time: 100ms"), "{}", s.to_yaml());
    let s = Scenario::load(&root().join("scenarios/realistic.yaml"), &[]).unwrap();
    let yaml = s.to_yaml();
    for line in [
        "arrivals: poisson",
        "zipf: 1.1",
        "zipf: 0.9",
        "dist: lognormal",
        "p99: 1000",
    ] {
        assert!(yaml.contains(line), "{line} in\n{yaml}");
    }
}

#[test]
fn chat_shaped_fields_can_be_overridden() {
    let path = root().join("scenarios/chat.yaml");
    let s = Scenario::load(
        &path,
        &[
            "load.arrivals=poisson".into(),
            "dataset.chat_popularity.zipf=1.1".into(),
            "dataset.user_activity={zipf: 0.8}".into(),
            "message_size={dist: lognormal, median: 60, p99: 1000}".into(),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.load.arrivals, Arrivals::Poisson);
    assert_eq!(s.dataset.chat_popularity, Popularity::Zipf(1.1));
    assert_eq!(s.dataset.user_activity, Popularity::Zipf(0.8));
    assert_eq!(s.message_size.dist, Some(SizeDist::Lognormal));

    let closed = root().join("scenarios/closed.yaml");
    let s = Scenario::load(&closed, &["load.think_time.dist=exponential".into()]).unwrap_err();
    assert_eq!(
        s.to_string(),
        "--set:0:0: load.think_time.dist: load.think_time is not a mapping"
    );
    let s = Scenario::load(
        &closed,
        &["load.think_time={dist: exponential, mean: 250ms}".into()],
    )
    .unwrap();
    assert_eq!(s.load.think_time.dist, ThinkDist::Exponential);
    assert_eq!(s.load.think_time.mean.0, Duration::from_millis(250));

    // Bad values in an override name the override.
    let err = Scenario::load(&path, &["dataset.chat_popularity.zipf=-1".into()]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--set:0:0: dataset.chat_popularity.zipf: expected a positive number"
    );
    let err = Scenario::load(&path, &["load.arrivals=bursty".into()]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--set:0:0: load.arrivals: unknown variant `bursty`, expected `uniform` or `poisson`"
    );
    // A check across fields points at the file's field.
    let err = Scenario::load(&path, &["message_size.dist=lognormal".into()]).unwrap_err();
    assert!(
        err.to_string().contains(
            "message_size.min: does not apply to dist: lognormal, which takes median and p99"
        ),
        "{err}"
    );
}

/// Each file in tests/scenario_errors starts with `# expect: <the exact error>`.
#[test]
fn bad_scenarios_get_located_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenario_errors");
    let mut checked = 0;
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        let expected = text
            .lines()
            .next()
            .unwrap()
            .strip_prefix("# expect: ")
            .expect("expectation line");
        let name = path.file_name().unwrap().to_str().unwrap();
        let err = Scenario::parse(name, &text, &[]).expect_err(name);
        assert_eq!(err.to_string(), expected, "{name}");
        checked += 1;
    }
    assert!(checked >= 10);
}

#[test]
fn overrides_set_any_field_and_are_checked() {
    let path = root().join("scenarios/chat.yaml");
    let s = Scenario::load(
        &path,
        &[
            "load.duration=10s".into(),
            "replicas=5".into(),
            "reads.consistency=local".into(),
        ],
    )
    .unwrap();
    assert_eq!(s.load.duration.unwrap().0, Duration::from_secs(10));
    assert_eq!(s.replicas, 5);
    assert_eq!(s.reads.consistency, loadgen::scenario::Consistency::Local);

    let err = Scenario::load(&path, &["load.rate=abc".into()]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--set:0:0: load.rate: expected a positive number"
    );
    let err = Scenario::load(&path, &["load.warmup=1h".into()]).unwrap_err();
    assert!(
        err.to_string()
            .contains("load.warmup: warm-up (1h) is longer"),
        "{err}"
    );
    let err = Scenario::load(&path, &["load".into()]).unwrap_err();
    assert_eq!(err.to_string(), "--set:0:0: load: expected PATH=VALUE");
    let err = Scenario::load(&path, &["name.first=x".into()]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--set:0:0: name.first: name is not a mapping"
    );
}

#[test]
fn every_command_prints_the_exit_status_table_in_its_help() {
    for args in [
        &["--help"][..],
        &["bench", "--help"],
        &["check", "--help"],
        &["report", "--help"],
        &["validate", "--help"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        for code in ["0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "6 ", "130 "] {
            assert!(
                help.lines().any(|l| l.trim_start().starts_with(code)),
                "`loadgen {}` lacks exit status {code}:\n{help}",
                args.join(" ")
            );
        }
        assert!(help.contains("the first of 4, 5, 3 wins"), "{help}");
    }
}
