//! `raft-sim`: runs the deterministic Raft simulator over many seeds, or replays one.
//!
//! `raft-sim --seeds 2000` runs seeds 0..2000 on every core and ends with the line
//! `sim: 2000 seeds, V violations` (exit status 1 when V > 0). A failing seed is printed with
//! the end of its trace and the command that replays it: `raft-sim --seed S --trace`.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Result;
use clap::{Parser, ValueEnum};
use telegraft::raft::PlantedBugs;
use telegraft::sim::{SeedReport, SimConfig, run_seed};

#[derive(Parser)]
#[command(about = "Deterministic simulation of the Telegraft Raft core")]
struct Args {
    /// Run this many seeds, starting at --first.
    #[arg(long, default_value_t = 2000)]
    seeds: u64,
    /// The first seed of the sweep.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Run exactly this seed (ignores --seeds).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the whole trace of the run (with --seed).
    #[arg(long)]
    trace: bool,
    /// Fix the cluster size instead of drawing it from the seed.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=7))]
    nodes: Option<u64>,
    /// Simulated milliseconds of faults before everything heals.
    #[arg(long, default_value_t = 3000)]
    chaos_ms: u64,
    /// Plant a known bug in the core, to watch the simulator catch it.
    #[arg(long, value_enum)]
    plant: Vec<Bug>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Stop at the first failing seed.
    #[arg(long)]
    fail_fast: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Bug {
    CommitOldTerm,
    DoubleVote,
    ReadWithoutQuorum,
    AckUnpersisted,
    ReadAnyResponse,
    FollowerReadUnapplied,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut cfg = SimConfig {
        nodes: args.nodes.map(|n| n as usize),
        chaos_ms: args.chaos_ms,
        ..SimConfig::default()
    };
    let mut bugs = PlantedBugs::default();
    for bug in &args.plant {
        match bug {
            Bug::CommitOldTerm => bugs.commit_old_term = true,
            Bug::DoubleVote => bugs.double_vote = true,
            Bug::ReadWithoutQuorum => bugs.read_without_quorum = true,
            Bug::AckUnpersisted => bugs.ack_unpersisted = true,
            Bug::ReadAnyResponse => bugs.read_any_response = true,
            Bug::FollowerReadUnapplied => bugs.follower_read_unapplied = true,
        }
    }
    cfg.options.planted_bugs = bugs;

    if let Some(seed) = args.seed {
        cfg.trace = true;
        let report = run_seed(seed, &cfg);
        if args.trace {
            for line in &report.trace {
                println!("{line}");
            }
        }
        print_stats(&report);
        let v = report.violations.len();
        for violation in &report.violations {
            println!("VIOLATION: {violation}");
        }
        println!("sim: 1 seeds, {} violations", u64::from(v > 0));
        if v > 0 {
            std::process::exit(1);
        }
        return Ok(());
    }

    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let next = AtomicU64::new(args.first);
    let end = args.first + args.seeds;
    let failed: Mutex<Vec<SeedReport>> = Mutex::new(Vec::new());
    let done = AtomicU64::new(0);
    let simulated = AtomicU64::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        return;
                    }
                    let report = run_seed(seed, &cfg);
                    done.fetch_add(1, Ordering::Relaxed);
                    simulated.fetch_add(report.stats.simulated_ms, Ordering::Relaxed);
                    if !report.violations.is_empty() {
                        if args.fail_fast {
                            stop.store(true, Ordering::Relaxed);
                        }
                        failed.lock().expect("lock").push(report);
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut failed = failed.into_inner().expect("lock");
    failed.sort_by_key(|r| r.seed);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for report in &failed {
        // Re-run with tracing on to show how it happened (the run is deterministic).
        let traced = run_seed(
            report.seed,
            &SimConfig {
                trace: true,
                ..cfg.clone()
            },
        );
        writeln!(out, "seed {} ({} nodes) FAILED:", report.seed, report.nodes)?;
        for violation in &report.violations {
            writeln!(out, "  VIOLATION: {violation}")?;
        }
        writeln!(out, "  last events:")?;
        let tail = traced.trace.len().saturating_sub(40);
        for line in &traced.trace[tail..] {
            writeln!(out, "    {line}")?;
        }
        writeln!(out, "  replay: just sim seed={}", report.seed)?;
    }
    let n = done.load(Ordering::Relaxed);
    eprintln!(
        "sim: {:.0} seeds/s on {threads} threads, {:.1} simulated s per wall s",
        n as f64 / elapsed,
        simulated.load(Ordering::Relaxed) as f64 / 1000.0 / elapsed
    );
    writeln!(out, "sim: {n} seeds, {} violations", failed.len())?;
    if !failed.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

fn print_stats(r: &SeedReport) {
    let s = &r.stats;
    println!(
        "seed {}: {} nodes, {} ms simulated, {} messages, {} writes acked, {} reads served ({} by followers), \
         {} leaders elected, {} crashes, {} partitions, {} snapshots installed, converged {}",
        r.seed,
        r.nodes,
        s.simulated_ms,
        s.messages,
        s.writes_acked,
        s.reads_served,
        s.follower_reads,
        s.leaders_elected,
        s.crashes,
        s.partitions,
        s.snapshots_installed,
        s.converged_after_ms
            .map_or("never".to_string(), |ms| format!("{ms} ms after healing"))
    );
}
