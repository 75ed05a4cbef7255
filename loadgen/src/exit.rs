//! `loadgen`'s exit statuses: one table for every command, so a CI can rely on them.
//!
//! When several apply to a run, the first of 4, 5, 3 wins (an anomaly says more than an
//! incomplete check, which says more than a missed objective); an interrupted run exits 130
//! whatever its verdicts.

use crate::history::Verdict;
use crate::results::Summary;

/// Every objective met and the history check passed (or was skipped by `check: off`).
pub const OK: u8 = 0;
/// The run could not be made: the cluster never became ready, a worker died, an I/O error.
pub const FAILED: u8 = 1;
/// Invalid input: a scenario file or a flag.
pub const USAGE: u8 = 2;
/// An objective was missed.
pub const SLO_MISSED: u8 = 3;
/// The history check found an anomaly.
pub const CHECK_FAILED: u8 = 4;
/// The history check was incomplete or could not run.
pub const CHECK_INCOMPLETE: u8 = 5;
/// `loadgen compare` found a regression: a metric worse than both its tolerance and the noise.
pub const REGRESSION: u8 = 6;
/// Interrupted by SIGINT or SIGTERM.
pub const INTERRUPTED: u8 = 130;

/// The table as `loadgen --help` prints it.
pub const TABLE: &str = "\
Exit status (every command):
  0    every objective met and the history check passed (or skipped by `check: off`)
  1    the run could not be made: the cluster never became ready, a worker died, an I/O error
  2    invalid input: a scenario file or a flag
  3    an objective missed
  4    the history check found an anomaly
  5    the history check was incomplete or could not run
  6    `compare` found a regression (worse than both its tolerance and the noise)
  130  interrupted (SIGINT, SIGTERM)
When several apply, the first of 4, 5, 3 wins.";

/// Bad input that is not a scenario file's (those are [`crate::ScenarioError`]s): exits 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit status of a history check's verdict.
pub fn of_check(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Pass | Verdict::Skipped => OK,
        Verdict::Fail => CHECK_FAILED,
        Verdict::Incomplete => CHECK_INCOMPLETE,
    }
}

/// The exit status of a finished run.
pub fn of_run(s: &Summary) -> u8 {
    if s.interrupted {
        return INTERRUPTED;
    }
    match of_check(s.check.verdict) {
        OK if !s.slo_pass() => SLO_MISSED,
        code => code,
    }
}

/// The exit status of an error: 2 for bad input, 1 for anything else.
pub fn of_error(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<crate::ScenarioError>().is_some()
        || e.downcast_ref::<UsageError>().is_some()
    {
        USAGE
    } else {
        FAILED
    }
}
