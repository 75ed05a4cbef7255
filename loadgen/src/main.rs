//! `loadgen`: Telegraft's load generator.
//!
//! - `loadgen bench --scenario FILE [--replicas N] [--set PATH=VALUE]... [--target A,B,C]
//!   [--junit FILE]` runs a scenario against a fresh local cluster (or a running one) and
//!   writes `results/<run-id>/`, then HTML reports (`reports/<run-id>.html`,
//!   `reports/index.html`) and, with `--junit`, the verdicts as JUnit XML.
//! - `loadgen capacity --scenario FILE [--replicas N...]` searches for the highest rate each
//!   replica count sustains and writes `results/<run-id>/capacity.json` and a capacity page.
//! - `loadgen compare BASE NEW [--tolerance p99=10%,throughput=5%]` compares two runs,
//!   beyond their noise; exits 6 on a regression.
//! - `loadgen check RESULTS_DIR` re-checks a run's history and writes its `check.json`.
//! - `loadgen report [RESULTS...]` writes the reports from results folders.
//! - `loadgen validate FILE...` checks scenario files without running them.
//! - `loadgen worker --index I --of N --start T --target ... --out DIR` runs one worker's
//!   share of a scenario; `loadgen merge W... --out R` merges workers' folders into one run;
//!   `loadgen bench --workers N` does both ([`loadgen::workers`]).
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
    /// Find the highest offered rate each replica count sustains: probes (short open-model
    /// runs of the scenario, each a whole run with its objectives, schedule and history
    /// check) on an exponential ramp, then a bisection; writes results/<run>/capacity.json
    /// and a capacity page. Exits 0 when every search ended, 1 when one failed, 130 when
    /// interrupted.
    #[command(after_help = exit::TABLE)]
    Capacity(Capacity),
    /// Compare two runs (results folders) operation by operation: throughput, latency
    /// percentiles and error rate, each delta judged against its tolerance and against the
    /// runs' own per-second noise; prints the table and writes compare.json and
    /// compare.html. Exits 6 on a regression beyond both, 0 otherwise.
    #[command(after_help = exit::TABLE)]
    Compare {
        /// The baseline run's folder.
        base: PathBuf,
        /// The new run's folder.
        new: PathBuf,
        /// Per metric (throughput, p50, p90, p99, p999, max, error_rate): `N%`, `N` or `off`;
        /// the rest keep their defaults (throughput 5%, p50/p90/p99 10%, p999 20%,
        /// error_rate 0.1 point, max off).
        #[arg(long, default_value = "p99=10%,throughput=5%")]
        tolerance: String,
        /// Where compare.json and compare.html go (default:
        /// reports/compare-<base>-vs-<new>/).
        #[arg(long)]
        out: Option<PathBuf>,
    },
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
    /// Run one worker's share of a scenario against a running cluster: users `--index` of
    /// `--of` (contiguous blocks), on the schedule that starts at `--start` for every worker;
    /// writes a results folder with `worker.json` for `loadgen merge`. Worker 0 creates the
    /// dataset and publishes it at `--population`; the others wait for it there.
    #[command(after_help = exit::TABLE)]
    Worker(Worker),
    /// Merge workers' results folders into one run: histograms added interval by interval,
    /// counts summed, histories joined and checked once; then the report. Exits as `bench`.
    #[command(after_help = exit::TABLE)]
    Merge {
        /// The workers' folders (every worker 0 .. N-1 of one run).
        #[arg(required = true)]
        workers: Vec<PathBuf>,
        /// The merged run's folder (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// How far apart the workers' clocks may be: the history checker trusts "A was
        /// acknowledged before B began" only beyond it (0 when the workers shared a machine).
        #[arg(long, default_value_t = 0)]
        clock_skew_ms: u64,
        /// Where the HTML reports go.
        #[arg(long, default_value = "reports")]
        reports: PathBuf,
        /// Do not write reports.
        #[arg(long)]
        no_report: bool,
    },
    /// Print the JSON Schema of summary.json (checked in as loadgen/summary.schema.json).
    Schema,
}

#[derive(clap::Args)]
struct Worker {
    /// The scenario file (YAML): the whole run's, which every worker is given.
    #[arg(long, default_value = "scenarios/chat.yaml")]
    scenario: PathBuf,
    /// Override a field: `--set load.duration=10s` (repeatable; the same for every worker).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    overrides: Vec<String>,
    /// The cluster's replica addresses.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "HOST:PORT,...",
        required = true
    )]
    target: Vec<String>,
    /// Reach the target over TLS with this certificate directory (`telegraft certs`).
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<PathBuf>,
    /// This worker's index, 0 .. --of - 1.
    #[arg(long)]
    index: u32,
    /// How many workers share the run.
    #[arg(long)]
    of: u32,
    /// The shared start of the schedule: Unix milliseconds or an RFC 3339 time.
    #[arg(long, value_parser = loadgen::workers::parse_start)]
    start: std::time::SystemTime,
    /// This worker's results folder (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// The dataset file worker 0 writes and the others read (default: population.json beside
    /// --out; put it on a volume every worker sees).
    #[arg(long)]
    population: Option<PathBuf>,
    /// No live progress line.
    #[arg(long)]
    no_progress: bool,
}

#[derive(clap::Args)]
struct Bench {
    /// The scenario file (YAML).
    #[arg(long, default_value = "scenarios/chat.yaml")]
    scenario: PathBuf,
    /// Replica count (overrides the scenario's `replicas`).
    #[arg(long)]
    replicas: Option<u32>,
    /// Where to start the replicas: `local` processes, or `docker` containers from the
    /// `telegraft:latest` image (`just image`) on a private network, where faults go through
    /// the engine (overrides the scenario's `deploy`).
    #[arg(long, value_parser = ["local", "docker"])]
    deploy: Option<String>,
    /// Override a field: `--set load.duration=10s` (repeatable).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    overrides: Vec<String>,
    /// Drive an already running cluster: comma-separated replica addresses.
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT,...")]
    target: Option<Vec<String>>,
    /// Drive the load from N worker processes (`loadgen worker`) on one shared start, then
    /// merge their folders into this run (`loadgen merge`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    workers: u32,
    /// With --target: the replicas' Prometheus endpoints (`telegraft node --metrics-listen`),
    /// scraped each second into metrics.csv; the Nth names node-N in the results.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "HOST:PORT,...",
        requires = "target"
    )]
    target_metrics: Option<Vec<String>>,
    /// With --target: reach it over TLS, trusting DIR/ca.pem and presenting DIR/admin.pem
    /// (or DIR/client.pem): a cluster started with `telegraft node --tls-dir`.
    #[arg(long, value_name = "DIR", requires = "target")]
    tls_dir: Option<PathBuf>,
    /// Where run folders go.
    #[arg(long, default_value = "results")]
    results: PathBuf,
    /// The telegraft binary (default: the one next to loadgen).
    #[arg(long)]
    telegraft: Option<PathBuf>,
    /// The etcd server binary, for `system: etcd` (default: $ETCD, else `etcd` on the PATH).
    #[arg(long, value_name = "PATH")]
    etcd: Option<PathBuf>,
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

#[derive(clap::Args)]
struct Capacity {
    /// The scenario file (YAML); its faults must be empty.
    #[arg(long, default_value = "scenarios/chat.yaml")]
    scenario: PathBuf,
    /// Replica counts to search, one cluster each: `--replicas 1 3 5` (default: the
    /// scenario's).
    #[arg(long, num_args = 1.., value_delimiter = ',')]
    replicas: Vec<u32>,
    /// Override a field: `--set load.users=256` (repeatable).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    overrides: Vec<String>,
    /// Each probe's measured window.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    probe: std::time::Duration,
    /// Each probe's warm-up.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    probe_warmup: std::time::Duration,
    /// The pause between probes, for the last one's backlog to drain.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    settle: std::time::Duration,
    /// Stop when the highest pass and the lowest failure are this close: `5%` or `0.05`.
    #[arg(long, default_value = "5%", value_parser = parse_share)]
    precision: f64,
    /// The first rate probed, ops/s (default: the scenario's load.rate, else 100).
    #[arg(long)]
    start_rate: Option<u64>,
    /// The lowest rate the ramp goes down to, ops/s.
    #[arg(long, default_value_t = 1)]
    min_rate: u64,
    /// The highest rate the ramp goes up to, ops/s.
    #[arg(long, default_value_t = 200_000)]
    max_rate: u64,
    /// Probe an already running cluster instead of starting one per replica count:
    /// comma-separated replica addresses.
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT,...")]
    target: Option<Vec<String>>,
    /// Where the capacity run's folder goes.
    #[arg(long, default_value = "results")]
    results: PathBuf,
    /// The telegraft binary (default: the one next to loadgen).
    #[arg(long)]
    telegraft: Option<PathBuf>,
    /// The etcd server binary, for `system: etcd` (default: $ETCD, else `etcd` on the PATH).
    #[arg(long, value_name = "PATH")]
    etcd: Option<PathBuf>,
    /// No live progress line.
    #[arg(long)]
    no_progress: bool,
    /// Where the HTML reports go.
    #[arg(long, default_value = "reports")]
    reports: PathBuf,
    /// Do not write reports.
    #[arg(long)]
    no_report: bool,
}

/// `5%` or `0.05`.
fn parse_share(s: &str) -> Result<f64, String> {
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => s.trim().parse::<f64>(),
    }
    .map_err(|_| format!("expected a share such as 5% or 0.05, not `{s}`"))?;
    if v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err(format!("expected a share between 0% and 100%, not `{s}`"))
    }
}

fn main() -> ExitCode {
    let result = match Cli::parse().cmd {
        Cmd::Bench(b) => bench(b),
        Cmd::Capacity(c) => capacity(c),
        Cmd::Compare {
            base,
            new,
            tolerance,
            out,
        } => loadgen::compare::run_cli(&base, &new, &tolerance, out.as_deref()).map(ExitCode::from),
        Cmd::Check { run } => check(&run),
        Cmd::Report { results, out } => report(results, &out),
        Cmd::Validate {
            files,
            overrides,
            print,
        } => Ok(validate(&files, &overrides, print)),
        Cmd::Worker(w) => worker(w),
        Cmd::Merge {
            workers,
            out,
            clock_skew_ms,
            reports,
            no_report,
        } => merge(&workers, &out, clock_skew_ms, &reports, no_report),
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
    let mut overrides = b.overrides;
    if let Some(d) = &b.deploy {
        overrides.push(format!("deploy={d}"));
    }
    let args = BenchArgs {
        scenario: b.scenario,
        replicas: b.replicas,
        overrides,
        target: b.target,
        target_metrics: b.target_metrics.unwrap_or_default(),
        results_dir: b.results.clone(),
        telegraft: b.telegraft,
        etcd: b.etcd,
        keep_data: b.keep_data,
        progress: !b.no_progress,
        worker: None,
        workers: b.workers,
        tls_dir: b.tls_dir,
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

/// Runs the capacity search, prints what it found, writes the reports.
fn capacity(c: Capacity) -> anyhow::Result<ExitCode> {
    let args = loadgen::capacity::CapacityArgs {
        scenario: c.scenario,
        replicas: c.replicas,
        overrides: c.overrides,
        results_dir: c.results.clone(),
        telegraft: c.telegraft,
        etcd: c.etcd,
        target: c.target,
        probe: c.probe,
        probe_warmup: c.probe_warmup,
        settle: c.settle,
        precision: c.precision,
        start_rate: c.start_rate,
        min_rate: c.min_rate,
        max_rate: c.max_rate,
        progress: !c.no_progress,
    };
    let out = tokio::runtime::Runtime::new()?.block_on(loadgen::capacity::capacity(args))?;
    print!("{}", terminal::capacity_table(&out.capacity, &out.dir));
    if !c.no_report {
        match report::write_reports(&[c.results], &c.reports) {
            Ok(w) => {
                if let Some(page) = w.capacity_pages.iter().find(|p| {
                    p.file_stem()
                        .is_some_and(|s| out.dir.file_name() == Some(s))
                }) {
                    println!("report:  {}", page.display());
                }
                println!("index:   {}", w.index.display());
            }
            Err(e) => eprintln!("loadgen: writing reports: {e:#}"),
        }
    }
    let code = loadgen::capacity::exit_status(&out.capacity);
    if code == exit::INTERRUPTED {
        println!("interrupted: exit status {code}");
    }
    Ok(ExitCode::from(code))
}

/// One worker's share of a run (see `loadgen::workers`).
fn worker(w: Worker) -> anyhow::Result<ExitCode> {
    let population = w.population.clone().unwrap_or_else(|| {
        w.out
            .parent()
            .unwrap_or(Path::new("."))
            .join("population.json")
    });
    let args = BenchArgs {
        scenario: w.scenario,
        replicas: None,
        overrides: w.overrides,
        target: Some(w.target),
        target_metrics: Vec::new(),
        results_dir: w.out.parent().unwrap_or(Path::new(".")).to_path_buf(),
        telegraft: None,
        etcd: None,
        keep_data: false,
        progress: !w.no_progress,
        worker: Some(loadgen::workers::WorkerArgs {
            index: w.index,
            of: w.of,
            start: w.start,
            out: w.out,
            population,
        }),
        workers: 1,
        tls_dir: w.tls_dir,
    };
    let out = tokio::runtime::Runtime::new()?.block_on(loadgen::bench(args))?;
    print!("{}", terminal::bench_summary(&out.summary, &out.dir));
    Ok(ExitCode::from(exit::of_run(&out.summary)))
}

/// Merges workers' folders into one run, then writes the reports.
fn merge(
    workers: &[PathBuf],
    out: &Path,
    clock_skew_ms: u64,
    reports: &Path,
    no_report: bool,
) -> anyhow::Result<ExitCode> {
    let s = loadgen::workers::merge(
        workers,
        out,
        std::time::Duration::from_millis(clock_skew_ms),
    )?;
    print!("{}", terminal::bench_summary(&s, out));
    if !no_report {
        let root = out.parent().unwrap_or(Path::new(".")).to_path_buf();
        match report::write_reports(&[root], reports) {
            Ok(w) => println!("index:   {}", w.index.display()),
            Err(e) => eprintln!("loadgen: writing reports: {e:#}"),
        }
    }
    Ok(ExitCode::from(exit::of_run(&s)))
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
