//! `loadgen`: Telegraft's load generator.
//!
//! - `loadgen bench --scenario FILE [--replicas N] [--set PATH=VALUE]... [--target A,B,C]
//!   [--junit FILE]` runs a scenario against a fresh local cluster (or a running one) and
//!   writes `results/<run-id>/`, then HTML reports (`reports/<run-id>.html`,
//!   `reports/index.html`) and, with `--junit`, the verdicts as JUnit XML.
//! - `loadgen check RESULTS_DIR` re-checks a run's history and writes its `check.json`.
//! - `loadgen report [RESULTS...]` writes the reports from results folders.
//! - `loadgen validate FILE...` checks scenario files without running them.
//! - `loadgen schema` prints the JSON Schema of `summary.json`.
//!
//! Every command exits with a status from one table ([`loadgen::exit`], printed by
//! `loadgen --help`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use loadgen::report::{self, junit, terminal};
use loadgen::results::{self, RunDir};
use loadgen::{BenchArgs, Scenario, exit, history};

#[derive(Parser)]
#[command(
    about = "Load generator for a Telegraft chat cluster",
    after_help = exit::TABLE
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a scenario: start a local cluster (or use --target), create the dataset, run the
    /// load, write results/<run-id>/. Exits 3 when an objective is missed, 4 when the history
    /// check finds an anomaly, 5 when it is incomplete, 130 when interrupted.
    #[command(after_help = exit::TABLE)]
    Bench(Bench),
    /// Check a run's history (results/<run-id>/history.jsonl) for lost, phantom, duplicate,
    /// reordered, stale and non-monotonic messages; writes check.json. Exits 4 on an anomaly,
    /// 5 when the history could not be checked whole.
    #[command(after_help = exit::TABLE)]
    Check {
        /// The run folder.
        run: PathBuf,
    },
    /// Write HTML reports: a page per run and reports/index.html across runs.
    #[command(after_help = exit::TABLE)]
    Report {
        /// Run folders, or folders of them (default: results).
        results: Vec<PathBuf>,
        /// Where the pages go.
        #[arg(long, default_value = "reports")]
        out: PathBuf,
    },
    /// Check scenario files without running them; prints the effective scenario with --print.
    #[command(after_help = exit::TABLE)]
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
    /// Print the JSON Schema of summary.json (checked in as loadgen/summary.schema.json).
    Schema,
}

#[derive(clap::Args)]
struct Bench {
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
    /// With --target: the replicas' Prometheus endpoints (`telegraft node --metrics-listen`),
    /// scraped each second into metrics.csv; the Nth names node-N in the results.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "HOST:PORT,...",
        requires = "target"
    )]
    target_metrics: Option<Vec<String>>,
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
    /// Also write the verdicts as JUnit XML: one test case per objective and one for the
    /// history check.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
}

fn main() -> ExitCode {
    let result = match Cli::parse().cmd {
        Cmd::Bench(b) => bench(b),
        Cmd::Check { run } => check(&run),
        Cmd::Report { results, out } => report(results, &out),
        Cmd::Validate {
            files,
            overrides,
            print,
        } => Ok(validate(&files, &overrides, print)),
        Cmd::Schema => {
            print!("{}", results::schema());
            Ok(ExitCode::SUCCESS)
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("loadgen: {e:#}");
        ExitCode::from(exit::of_error(&e))
    })
}

/// Runs the benchmark, prints its summary, writes the reports and the JUnit file; the exit
/// status says whether the history check passed and every objective was met.
fn bench(b: Bench) -> anyhow::Result<ExitCode> {
    let args = BenchArgs {
        scenario: b.scenario,
        replicas: b.replicas,
        overrides: b.overrides,
        target: b.target,
        target_metrics: b.target_metrics.unwrap_or_default(),
        results_dir: b.results.clone(),
        telegraft: b.telegraft,
        keep_data: b.keep_data,
        progress: !b.no_progress,
    };
    let out = tokio::runtime::Runtime::new()?.block_on(loadgen::bench(args))?;
    let s = &out.summary;
    print!("{}", terminal::bench_summary(s, &out.dir));
    if let Some(path) = &b.junit {
        let xml = junit::junit(s)?;
        std::fs::write(path, xml)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        println!("junit:   {}", path.display());
    }
    if !b.no_report {
        match report::write_reports(&[b.results], &b.reports) {
            Ok(w) => {
                let page = b.reports.join(format!("{}.html", s.run_id));
                println!("report:  {}", page.display());
                println!("index:   {}", w.index.display());
            }
            Err(e) => eprintln!("loadgen: writing reports: {e:#}"),
        }
    }
    let code = exit::of_run(s);
    match code {
        exit::INTERRUPTED => println!("interrupted: exit status {code}"),
        exit::CHECK_FAILED => println!("the history check failed: exit status {code}"),
        exit::CHECK_INCOMPLETE => println!("the history check was incomplete: exit status {code}"),
        exit::SLO_MISSED => println!("an objective was missed: exit status {code}"),
        _ => {}
    }
    Ok(ExitCode::from(code))
}

/// Re-checks a run's history and rewrites its `check.json`.
fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let run = RunDir::open(path);
    let report = history::check(&run.read_history()?);
    run.write_check(&report)?;
    println!(
        "{}: history check {}",
        path.display(),
        terminal::check_summary_line(&results::CheckSummary::of(&report))
    );
    print!("{}", terminal::anomaly_lines(&report.anomalies, 10));
    Ok(ExitCode::from(exit::of_check(report.verdict)))
}

fn report(results: Vec<PathBuf>, out: &Path) -> anyhow::Result<ExitCode> {
    let results = if results.is_empty() {
        vec![PathBuf::from("results")]
    } else {
        results
    };
    let w = report::write_reports(&results, out)?;
    for (dir, why) in &w.skipped {
        eprintln!("loadgen: skipped {}: {why}", dir.display());
    }
    println!("{} run pages; index: {}", w.pages.len(), w.index.display());
    Ok(ExitCode::SUCCESS)
}

fn validate(files: &[PathBuf], overrides: &[String], print: bool) -> ExitCode {
    let mut failed = false;
    for file in files {
        match Scenario::load(file, overrides) {
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
        ExitCode::from(exit::USAGE)
    } else {
        ExitCode::SUCCESS
    }
}
