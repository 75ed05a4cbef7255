//! Telegraft's load generator. Today: [`scenario`], the YAML workload files, their checks and
//! overrides; [`schedule`], the open model's intended send times; [`record`], per-operation
//! HDR latency recording. Running scenarios against a cluster comes with issue 4.

pub mod record;
pub mod scenario;
pub mod schedule;
