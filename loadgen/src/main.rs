//! `loadgen`: Telegraft's load generator.
//!
//! - `loadgen bench --scenario FILE [--replicas N] [--set PATH=VALUE]... [--target A,B,C]`
//!   runs a scenario against a fresh local cluster (or a running one) and writes
//!   `results/<run-id>/`. Exit status: 0 when every SLO is met and the history check passes,
//!   3 when an SLO is missed, 4 when the history check finds an anomaly, 1 on any other
//!   failure.
//!   It then writes HTML reports (`reports/<run-id>.html`, `reports/index.html`).
//! - `loadgen report [RESULTS...]` writes the reports from results folders.
//! - `loadgen validate FILE...` checks scenario files without running them.

use loadgen::bench::{self, BenchArgs};
use loadgen::{report, results, scenario};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status of a run that missed an SLO.
const SLO_MISSED: u8 = 3;
/// Exit status of a run whose history check found an anomaly (this wins over a missed SLO).
const CHECK_FAILED: u8 = 4;

#[derive(Parser)]
#[command(about = "Load generator for a Telegraft chat cluster")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a scenario: start a local cluster (or use --target), create the dataset, run the
    /// load, write results/<run-id>/. Exits 3 when an SLO is missed.
    Bench {
        /// The scenario file (YAML).
        #[arg(long, default_value = "scenarios/chat.yaml")]
        scenario: PathBuf,
        /// Replica count (overrides the scenario's `replicas`).
        #[arg(long)]
        replicas: Option<u32>,
        /// Override a field: `--set load.duration=10s` (repeatable).
        #[arg(long = "set", value_name = "PATH=VALUE")]
        overrides: Vec<String>,
        /// Drive an already running cluster: comma-separated replica addresses.
        #[arg(long, value_delimiter = ',', value_name = "HOST:PORT,...")]
        target: Option<Vec<String>>,
        /// Where run folders go.
        #[arg(long, default_value = "results")]
        results: PathBuf,
        /// The telegraft binary (default: the one next to loadgen).
        #[arg(long)]
        telegraft: Option<PathBuf>,
        /// Keep the replicas' data directories in the run folder.
        #[arg(long)]
        keep_data: bool,
        /// No live progress line.
        #[arg(long)]
        no_progress: bool,
        /// Where the HTML reports go (the run's page, and the index over every run in
        /// --results).
        #[arg(long, default_value = "reports")]
        reports: PathBuf,
        /// Do not write reports.
        #[arg(long)]
        no_report: bool,
    },
    /// Check a run's history (results/<run-id>/history.jsonl) for lost, phantom, duplicate,
    /// reordered, stale and non-monotonic messages; writes check.json. Exits 4 on an anomaly.
    Check {
        /// The run folder.
        run: PathBuf,
    },
    /// Write HTML reports: a page per run and reports/index.html across runs.
    Report {
        /// Run folders, or folders of them (default: results).
        results: Vec<PathBuf>,
        /// Where the pages go.
        #[arg(long, default_value = "reports")]
        out: PathBuf,
    },
    /// Check scenario files without running them; prints the effective scenario with --print.
    Validate {
        /// Scenario files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Override a field: `--set load.duration=10s` (repeatable).
        #[arg(long = "set", value_name = "PATH=VALUE")]
        overrides: Vec<String>,
        /// Print the effective scenario (after overrides) as YAML.
        #[arg(long)]
        print: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Bench {
            scenario,
            replicas,
            overrides,
            target,
            results: results_dir,
            telegraft,
            keep_data,
            no_progress,
            reports,
            no_report,
        } => {
            let results_root = results_dir.clone();
            let args = BenchArgs {
                scenario,
                replicas,
                overrides,
                target,
                results_dir,
                telegraft,
                keep_data,
                progress: !no_progress,
            };
            let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
            match runtime.block_on(bench::bench(args)) {
                Ok(out) => {
                    let s = &out.summary;
                    println!(
                        "\n{} · {} replicas · {} model{} · {} s measured",
                        s.scenario,
                        s.replicas,
                        s.model,
                        s.offered_rate
                            .map_or(String::new(), |r| format!(" at {r} ops/s offered")),
                        s.duration_s
                    );
                    print!("{}", results::table(s));
                    if let Some(w) = &s.generator.warning {
                        println!("warning: {w}");
                    }
                    match &s.check {
                        Some(c) => {
                            let counts = &c.counts;
                            println!(
                                "history check: {} ({} sends acknowledged, {} indeterminate, {} reads, {} messages in the final state{})",
                                c.verdict.to_uppercase(),
                                counts.sends_ok,
                                counts.sends_unknown,
                                counts.reads,
                                counts.final_messages,
                                anomaly_counts(&counts.anomalies)
                            );
                            for a in c.anomalies.iter().take(5) {
                                println!(
                                    "  {:?} in chat {}: {} {}",
                                    a.kind, a.chat, a.key, a.detail
                                );
                            }
                        }
                        None => println!(
                            "history check: not run (the target does not answer Admin.Status)"
                        ),
                    }
                    println!(
                        "generator: {} calls, {:.1} µs CPU per call",
                        s.generator.calls, s.generator.cpu_us_per_call
                    );
                    println!("results: {}", out.dir.display());
                    if !no_report {
                        match report::write_reports(&[results_root], &reports) {
                            Ok(w) => {
                                let page = reports.join(format!("{}.html", s.run_id));
                                println!("report:  {}", page.display());
                                println!("index:   {}", w.index.display());
                            }
                            Err(e) => eprintln!("loadgen: writing reports: {e:#}"),
                        }
                    }
                    if s.check.as_ref().is_some_and(|c| c.verdict != "pass") {
                        println!("the history check failed: exit status {CHECK_FAILED}");
                        ExitCode::from(CHECK_FAILED)
                    } else if s.slo_pass() {
                        ExitCode::SUCCESS
                    } else {
                        println!("an SLO was missed: exit status {SLO_MISSED}");
                        ExitCode::from(SLO_MISSED)
                    }
                }
                Err(e) => {
                    eprintln!("loadgen: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Check { run } => match check_run(&run) {
            Ok(r) => {
                println!(
                    "{}: history check {} ({} sends acknowledged, {} indeterminate, {} reads, {} messages in the final state{})",
                    run.display(),
                    r.verdict.to_uppercase(),
                    r.counts.sends_ok,
                    r.counts.sends_unknown,
                    r.counts.reads,
                    r.counts.final_messages,
                    anomaly_counts(&r.counts.anomalies)
                );
                for a in r.anomalies.iter().take(10) {
                    println!("  {:?} in chat {}: {} {}", a.kind, a.chat, a.key, a.detail);
                }
                if r.verdict == "pass" {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(CHECK_FAILED)
                }
            }
            Err(e) => {
                eprintln!("loadgen: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::Report { results, out } => {
            let results = if results.is_empty() {
                vec![PathBuf::from("results")]
            } else {
                results
            };
            match report::write_reports(&results, &out) {
                Ok(w) => {
                    for (dir, why) in &w.skipped {
                        eprintln!("loadgen: skipped {}: {why}", dir.display());
                    }
                    println!("{} run pages; index: {}", w.pages.len(), w.index.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("loadgen: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Validate {
            files,
            overrides,
            print,
        } => {
            let mut failed = false;
            for file in &files {
                match scenario::Scenario::load(file, &overrides) {
                    Ok(s) => {
                        println!(
                            "{}: ok ({}, {} replicas)",
                            file.display(),
                            s.name,
                            s.replicas
                        );
                        if print {
                            print!("{}", s.to_yaml());
                        }
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        failed = true;
                    }
                }
            }
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

/// Reads a run's history, checks it, and writes the full report to `check.json`.
fn check_run(run: &std::path::Path) -> anyhow::Result<loadgen::check::Report> {
    use anyhow::Context;
    let path = run.join("history.jsonl");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut history = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        history.push(
            serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not a history event", path.display(), i + 1))?,
        );
    }
    let report = loadgen::check::check(&history);
    std::fs::write(
        run.join("check.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    Ok(report)
}

/// `; anomalies: lost 2, stale_local 40 (allowed by local reads)`, or nothing.
fn anomaly_counts(counts: &std::collections::BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(k, n)| {
            if k == "stale_local" {
                format!("{k} {n} (allowed by local reads)")
            } else {
                format!("{k} {n}")
            }
        })
        .collect();
    format!("; anomalies: {}", parts.join(", "))
}
