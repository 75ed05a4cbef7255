//! Scenario parsing: every shipped scenario is valid, each kind of bad input gets its exact
//! error (file:line:column: field: message), and `--set` overrides work and are checked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use loadgen::scenario::{Model, Op, Scenario};

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
            "chat-default",
            "closed",
            "failover",
            "partition",
            "read-heavy",
            "write-burst"
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
