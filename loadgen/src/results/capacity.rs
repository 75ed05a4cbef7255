//! `capacity.json`: what a `loadgen capacity` run found, per replica count: the highest
//! offered rate it sustained and every probe that led there. Each probe's own results folder
//! (a whole run's, with its `summary.json`) lies under the capacity run's folder, at
//! `probes/r<replicas>-<rate>/`; `results` in a probe names it relative to the capacity
//! folder. The file is rewritten after every probe, so an interrupted search keeps what it
//! found.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The file's name in a capacity run's folder.
pub const CAPACITY: &str = "capacity.json";
/// The folder of a capacity run's probes.
pub const PROBES: &str = "probes";

/// A probe's folder name: `r<replicas>-<rate>`.
pub fn probe_dir(replicas: u32, rate: u64) -> String {
    format!("r{replicas}-{rate}")
}

/// A probe's run id (its `summary.json` `run_id`, and its report page's name):
/// `<capacity-run>--r<replicas>-<rate>`.
pub fn probe_run_id(capacity_run: &str, replicas: u32, rate: u64) -> String {
    format!("{capacity_run}--{}", probe_dir(replicas, rate))
}

/// The whole file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    /// The scenario's name.
    pub scenario: String,
    /// The system searched: `telegraft` or `etcd` (searches from before the field existed
    /// read as `telegraft`).
    #[serde(default = "telegraft")]
    pub system: String,
    /// The scenario file as given.
    pub scenario_file: String,
    /// When the search began (RFC 3339, UTC).
    pub started_at: String,
    /// The search's settings.
    pub search: SearchSettings,
    /// One entry per replica count, in the order searched.
    pub replicas: Vec<ReplicaCapacity>,
    /// Set when SIGINT or SIGTERM stopped the search.
    #[serde(default)]
    pub interrupted: bool,
}

/// How the search ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchSettings {
    /// The first rate probed (ops/s).
    pub start_rate: f64,
    /// The ramp stops here (ops/s).
    pub max_rate: f64,
    /// The bisection stops when the gap between the highest pass and the lowest failure is
    /// at most this fraction of the highest pass.
    pub precision: f64,
    /// Each probe's warm-up and measured window (s).
    pub probe_warmup_s: f64,
    pub probe_s: f64,
    /// The pause between probes (s).
    pub settle_s: f64,
}

/// What the search found at one replica count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicaCapacity {
    pub replicas: u32,
    /// The highest offered rate (ops/s) whose probe passed; 0 when none did.
    pub max_sustainable_rate: f64,
    /// Why the search ended: `converged` (within the precision), `max_rate` (the ramp
    /// reached `max_rate` without a failure: the capacity is at least that), `min_rate`
    /// (even the lowest rate failed), `interrupted` or `error`.
    pub ended: String,
    /// Set when the search at this count could not go on (the cluster would not start or
    /// lost its replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Every probe, in the order run.
    pub probes: Vec<Probe>,
}

/// One probe: a whole run at one offered rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// The offered rate (ops/s).
    pub rate: f64,
    /// Calls that completed per second of the measured window, every operation together
    /// (failed ones included).
    pub achieved: f64,
    /// `pass` (the schedule kept, every objective met, the history check passed or off),
    /// `fail` (a probe that ran whole but missed one of those) or `lost` (cut short: for 3
    /// seconds in a row, the send lateness p99 was over 1 s or more than 10% of calls
    /// failed).
    pub verdict: String,
    /// Why it did not pass: the objectives missed, the schedule, the check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Each operation's corrected-latency p99 over the measured window (ms).
    pub p99_ms: BTreeMap<String, f64>,
    /// The p99 of how late the sends went out (ms).
    pub lateness_p99_ms: Option<f64>,
    /// The probe's results folder, relative to the capacity run's folder.
    pub results: String,
}

fn telegraft() -> String {
    "telegraft".to_string()
}

impl Capacity {
    /// The name its line carries: the scenario, with the system after it when that is not
    /// Telegraft (as [`crate::results::Summary::line`]).
    pub fn line(&self) -> String {
        if self.system == "telegraft" {
            self.scenario.clone()
        } else {
            format!("{} [{}]", self.scenario, self.system)
        }
    }

    /// Writes `capacity.json` into `dir` (whole, then renamed into place).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(CAPACITY);
        let tmp = dir.join(format!("{CAPACITY}.tmp"));
        let text = serde_json::to_string_pretty(self)? + "\n";
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    /// Reads a capacity run's `capacity.json`.
    pub fn read(dir: &Path) -> anyhow::Result<Capacity> {
        let path = dir.join(CAPACITY);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}
