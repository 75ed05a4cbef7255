//! Telegraft's load generator.
//!
//! # Layout
//!
//! - [`scenario`]: the YAML workload files, their validation and `--set` overrides;
//! - [`load`]: the load itself: the open model's schedule, the population calls draw
//!   their arguments from, the operations (one small trait, one implementation each), the
//!   Goose runner, latency recording and the progress line;
//! - `control`: cluster control: starting and stopping a local cluster, the leader watch,
//!   faults, the final reads after the load;
//! - [`history`]: the history of a run's calls, its checker and its Elle export;
//! - [`results`]: every file of a run's results folder, `summary.json`'s typed contract and
//!   its JSON Schema;
//! - [`sample`]: once a second while the load runs, every replica's metrics and every
//!   process's CPU, memory and disk use;
//! - [`report`]: HTML pages per run and across runs (polars, plotters, minijinja), and the
//!   end-of-run text;
//! - `bench`: one whole run, from scenario file to results folder ([`bench()`]);
//! - [`compare`]: two runs side by side, each delta judged against a tolerance and the
//!   runs' per-second noise;
//! - [`capacity`]: the highest rate a cluster sustains, searched with probes that are whole
//!   runs;
//! - [`exit`]: the exit statuses every command shares.
//!
//! Modules are private unless another program (the `loadgen` binary, the tests) needs them;
//! inside each folder, files are private and its `mod.rs` chooses what to re-export.

mod bench;
pub mod capacity;
pub mod compare;
mod control;
pub mod exit;
pub mod history;
pub mod load;
pub mod report;
pub mod results;
pub mod sample;
pub mod scenario;
pub mod system;
pub mod workers;

pub use bench::{BenchArgs, BenchOutcome, bench};
pub use scenario::{Op, Scenario, ScenarioError};
