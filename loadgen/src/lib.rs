//! Telegraft's load generator.
//!
//! - [`scenario`]: the YAML workload files, their checks and `--set` overrides;
//! - [`schedule`]: the open model's intended send times;
//! - [`world`]: the dataset and the model of users, chats and members calls are drawn from;
//! - [`client`]: gRPC connections, leader discovery, what a failed call counts as;
//! - [`runner`]: the Goose load (pacing, recording, progress);
//! - [`record`]: per-operation HDR latency recording (corrected and service time);
//! - [`results`]: the results folder contract and the end-of-run table;
//! - [`report`]: HTML pages per run and across runs (polars, plotters, minijinja);
//! - [`check`]: the history checker (lost, phantom, duplicate, reordered, stale, non-monotonic);
//! - [`bench`]: one whole run, from scenario file to results folder.

pub mod bench;
pub mod check;
pub mod client;
pub mod faults;
pub mod record;
pub mod report;
pub mod results;
pub mod runner;
pub mod scenario;
pub mod schedule;
pub mod world;
