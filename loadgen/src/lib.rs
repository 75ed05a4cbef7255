//! Telegraft's load generator. Today: [`scenario`], the YAML workload files, their checks and
//! overrides. Running scenarios against a cluster comes with issue 4.

pub mod scenario;
