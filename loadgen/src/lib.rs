//! Telegraft's load generator. Today: [`scenario`], the YAML workload files, their checks and
//! overrides; [`schedule`], the open model's intended send times. Running scenarios against a
//! cluster comes with issue 4.

pub mod scenario;
pub mod schedule;
