//! `loadgen`: Telegraft's load generator.
//!
//! - `loadgen bench --scenario FILE [--replicas N] [--set PATH=VALUE]... [--target A,B,C]`
//!   runs a scenario against a fresh local cluster (or a running one) and writes
//!   `results/<run-id>/`. Exit status: 0 when every SLO is met, 3 when one is missed, 1 on
//!   any other failure.
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
                    if s.slo_pass() {
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
