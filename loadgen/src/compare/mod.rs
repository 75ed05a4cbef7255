//! `loadgen compare BASE NEW [--tolerance p99=10%,throughput=5%] [--out DIR]`: two results
//! folders side by side, and whether NEW regressed, so a CI can gate on it (exit 6).
//!
//! # What is compared
//!
//! Per operation found in both runs, the [`Metric`]s of `summary.json`: `throughput`
//! (successful ops/s), the corrected latency's `p50`, `p90`, `p99`, `p999` and `max` (every
//! call, from the intended send time), and the `error_rate` (failed calls in % of all calls).
//! Each row gives both values, the delta (`new - base`, in the metric's unit, and in % of the
//! base's value), the noise, the tolerance and a verdict. An operation in only one run is
//! named in a warning and not judged.
//!
//! # Noise, and what a regression is
//!
//! A whole-run figure moves from one run to the next even when nothing changed; how much is
//! estimated from each run's own seconds. Per run, the **spread** of a metric is the 10th to
//! 90th percentile of its per-second values over the measured window ([`noise`] says where
//! each metric's per-second values come from: `timeseries.csv`, or the per-second histograms
//! of `<op>.hdr.hlog` for p90 and p999). The **noise** of a row is the larger of the two runs'
//! spreads: a change smaller than what either run shows second to second is not evidence.
//!
//! A row is a **regression** when its change is in the worse direction (lower throughput;
//! higher latency or error rate) and larger than both:
//! - its tolerance ([`Tolerance`]): in % of the base's value for throughput and latencies
//!   (`p99=10%`), in percentage points for the error rate (`error_rate=0.1%`: 0.05% may become
//!   0.15%; a zero base error rate is the usual case, where a relative change would be
//!   infinite); and
//! - the noise (strictly larger, in the metric's unit).
//!
//! The same change in the better direction is an **improvement**. A change beyond its
//! tolerance but within the noise is reported as `noise`; anything else is `ok`. A metric with
//! tolerance `off` is shown and never judged (the default for `max`: one call makes it).
//! A base value of 0 (no successful call: throughput 0) makes any change beyond a relative
//! tolerance; its `delta_pct` is `null`.
//!
//! The rule is deliberately conservative: a per-second spread is wider than the uncertainty
//! of a whole-run figure, so a small regression in a noisy run passes. Longer runs do not
//! narrow it; more calls per second do (each second's percentiles are then better
//! estimated).
//!
//! # What it warns about
//!
//! On stderr and in `compare.json`'s `warnings`, without changing the verdict: different
//! scenarios (the crc32 of each run's effective `scenario.yaml`, as the run pages show it),
//! different replica counts, different machines (`summary.json`'s `machine`: cores, memory,
//! CPU model, kernel, disk), an interrupted run, an operation in only one run, noise known
//! from fewer than 5 seconds, and p90/p999 without an interval log (judged on the tolerance
//! alone).
//!
//! # Output
//!
//! The table on stdout (markdown, [`table`]), then `compare.json` ([`Comparison`], serde) and
//! `compare.html` (the table and, per operation, both runs' latency-by-percentile curves from
//! the merged interval logs and their per-second throughput and latency overlaid) in `--out`,
//! by default `reports/compare-<base-run-id>-vs-<new-run-id>/` (under the working directory,
//! like `loadgen report`'s `reports/`; never a run folder). Exit status 6
//! ([`crate::exit::REGRESSION`]) when any row is a regression, 0 otherwise; 2 when a folder
//! is not a run or `--tolerance` does not parse.

mod charts;
pub mod noise;
mod page;
mod table;
mod tolerance;

pub use page::page;
pub use table::table;
pub use tolerance::{Metric, Tolerance, ToleranceError};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::exit::{self, UsageError};
use crate::report::data::Run;
use crate::results::{Machine, OpResult, Summary, files};
use noise::Series;

/// Below this many seconds in the window, the noise estimate earns a warning.
const FEW_SECONDS: usize = 5;

/// The file names `compare` writes in its output folder.
pub const JSON: &str = "compare.json";
pub const HTML: &str = "compare.html";

/// One run, as `compare.json` names it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub run_id: String,
    /// The results folder, as given.
    pub dir: String,
    pub scenario: String,
    /// crc32 of the effective `scenario.yaml`, in hex.
    pub scenario_crc32: String,
    pub replicas: u32,
    pub started_at: String,
    pub git_rev: Option<String>,
    pub duration_s: f64,
    pub machine: Machine,
    pub interrupted: bool,
}

/// What a row's change amounts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowVerdict {
    /// Worse than both the tolerance and the noise.
    Regression,
    /// Better by more than both.
    Improvement,
    /// Beyond the tolerance, within the noise.
    Noise,
    /// Within the tolerance.
    Ok,
    /// Tolerance `off`: shown, not judged.
    NotJudged,
}

/// One metric of one operation in both runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub metric: Metric,
    /// `ops/s`, `ms` or `%`.
    pub unit: String,
    pub base: f64,
    pub new: f64,
    /// `new - base`, in `unit` (percentage points for the error rate).
    pub delta: f64,
    /// `delta` in % of `base`; `null` when `base` is 0.
    pub delta_pct: Option<f64>,
    /// Each run's spread (10th to 90th percentile of the per-second values), in `unit`;
    /// `null` when it cannot be known.
    pub base_spread: Option<f64>,
    pub new_spread: Option<f64>,
    /// The larger of the two spreads.
    pub noise: Option<f64>,
    /// % of `base` (percentage points for the error rate); `null`: not judged.
    pub tolerance: Option<f64>,
    /// The change is in the worse direction.
    pub worse: bool,
    pub beyond_tolerance: bool,
    pub beyond_noise: bool,
    pub verdict: RowVerdict,
}

/// One operation's rows, in [`Metric::ALL`]'s order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpComparison {
    pub op: String,
    pub rows: Vec<Row>,
}

/// `pass` or `regression`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Regression,
}

/// Two runs compared: what `compare.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Comparison {
    pub base: RunInfo,
    pub new: RunInfo,
    pub tolerance: Tolerance,
    /// Operations found in both runs, by name.
    pub ops: Vec<OpComparison>,
    pub only_in_base: Vec<String>,
    pub only_in_new: Vec<String>,
    pub warnings: Vec<String>,
    /// Each regression in a line: `send_message p99: 4.1 -> 5.3 ms (+30.2%; tolerance 10%,
    /// noise 0.412 ms)`.
    pub regressions: Vec<String>,
    pub verdict: Verdict,
    /// 6 on a regression, 0 otherwise.
    pub exit_code: u8,
    /// What the page draws, per operation (not in `compare.json`).
    #[serde(skip)]
    pub(crate) charts: BTreeMap<String, OpCharts>,
}

/// One operation's curves in both runs, for the page.
#[derive(Clone, Debug, Default)]
pub(crate) struct OpCharts {
    /// (percentile in %, latency in ms), from the merged interval log.
    pub distribution: [Vec<(f64, f64)>; 2],
    /// Per second: (second, successful calls), (second, p50 ms), (second, p99 ms).
    pub throughput: [Vec<(f64, f64)>; 2],
    pub p50: [Vec<(f64, f64)>; 2],
    pub p99: [Vec<(f64, f64)>; 2],
}

impl Comparison {
    pub fn regressed(&self) -> bool {
        self.verdict == Verdict::Regression
    }

    /// `compare.json`: pretty, with a final newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a comparison serializes") + "\n"
    }

    /// The default output folder: `reports/compare-<base-run-id>-vs-<new-run-id>`.
    pub fn default_out(&self) -> PathBuf {
        Path::new("reports").join(format!(
            "compare-{}-vs-{}",
            safe(&self.base.run_id),
            safe(&self.new.run_id)
        ))
    }
}

/// A run id made safe as part of a folder name.
fn safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Reads two results folders and compares NEW against BASE. A folder that is not a run (no
/// readable `summary.json`, `timeseries.csv`) is a [`UsageError`].
pub fn compare(base: &Path, new: &Path, tol: &Tolerance) -> anyhow::Result<Comparison> {
    let (b, n) = (load(base)?, load(new)?);
    let mut warnings = Vec::new();
    let (bs, ns) = (&b.summary, &n.summary);
    if b.yaml_hash != n.yaml_hash {
        warnings.push(format!(
            "the scenarios differ: scenario.yaml crc32 {} ({}) in {}, {} ({}) in {}: the runs \
             did not offer the same load",
            b.yaml_hash, bs.scenario, bs.run_id, n.yaml_hash, ns.scenario, ns.run_id
        ));
    }
    if bs.replicas != ns.replicas {
        warnings.push(format!(
            "the replica counts differ: {} in {}, {} in {}",
            bs.replicas, bs.run_id, ns.replicas, ns.run_id
        ));
    }
    let machine = machine_differences(&bs.machine, &ns.machine);
    if !machine.is_empty() {
        warnings.push(format!(
            "the machines differ ({} vs {}): {}",
            bs.run_id,
            ns.run_id,
            machine.join(", ")
        ));
    }
    for s in [bs, ns] {
        if s.interrupted {
            warnings.push(format!(
                "{} was interrupted: its figures cover part of its plan",
                s.run_id
            ));
        }
    }
    let only = |a: &Summary, b: &Summary| -> Vec<String> {
        a.ops
            .keys()
            .filter(|op| !b.ops.contains_key(*op))
            .cloned()
            .collect()
    };
    let (only_in_base, only_in_new) = (only(bs, ns), only(ns, bs));
    for (ops, run) in [(&only_in_base, bs), (&only_in_new, ns)] {
        if !ops.is_empty() {
            warnings.push(format!(
                "only {} ran {}: not compared",
                run.run_id,
                ops.join(", ")
            ));
        }
    }

    let mut ops = Vec::new();
    let mut charts = BTreeMap::new();
    let mut regressions = Vec::new();
    let mut few = false;
    for (op, br) in &bs.ops {
        let Some(nr) = ns.ops.get(op) else { continue };
        let read = |r: &Run| {
            Series::of(r, op).map_err(|e| usage(e.context(format!("{}: {op}", r.dir.display()))))
        };
        let (bser, nser) = (read(&b)?, read(&n)?);
        few |= bser.seconds.len() < FEW_SECONDS || nser.seconds.len() < FEW_SECONDS;
        for (ser, run) in [(&bser, bs), (&nser, ns)] {
            if ser.hlog.is_none() {
                warnings.push(format!(
                    "{} has no {}: {op}'s p90 and p999 are judged on their tolerance alone",
                    run.run_id,
                    files::hlog(op)
                ));
            }
        }
        let rows: Vec<Row> = Metric::ALL
            .iter()
            .map(|&m| {
                judge(
                    m,
                    value(br, m),
                    value(nr, m),
                    bser.spread(m),
                    nser.spread(m),
                    tol.get(m),
                )
            })
            .collect();
        for r in rows.iter().filter(|r| r.verdict == RowVerdict::Regression) {
            regressions.push(format!("{op} {}", table::describe(r)));
        }
        charts.insert(
            op.clone(),
            OpCharts {
                distribution: [&b, &n]
                    .map(|r| r.distributions.get(op).cloned().unwrap_or_default()),
                throughput: [&bser, &nser].map(|s| points(s, |x| x.count)),
                p50: [&bser, &nser].map(|s| points(s, |x| x.p50_ms)),
                p99: [&bser, &nser].map(|s| points(s, |x| x.p99_ms)),
            },
        );
        ops.push(OpComparison {
            op: op.clone(),
            rows,
        });
    }
    if few {
        warnings.push(format!(
            "fewer than {FEW_SECONDS} measured seconds in a run: its noise is poorly known"
        ));
    }
    let verdict = if regressions.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Regression
    };
    Ok(Comparison {
        base: info(&b, base),
        new: info(&n, new),
        tolerance: tol.clone(),
        ops,
        only_in_base,
        only_in_new,
        warnings,
        regressions,
        verdict,
        exit_code: match verdict {
            Verdict::Pass => exit::OK,
            Verdict::Regression => exit::REGRESSION,
        },
        charts,
    })
}

/// `loadgen compare`: compares, prints the warnings (stderr) and the table (stdout), writes
/// `compare.json` and `compare.html` in `out` (default [`Comparison::default_out`]), and
/// returns the exit status: 6 on a regression, 0 otherwise. Bad input (a folder that is not
/// a run, a `--tolerance` that does not parse, an `--out` that is a run folder) is a
/// [`UsageError`] (exit 2).
pub fn run_cli(base: &Path, new: &Path, tolerance: &str, out: Option<&Path>) -> anyhow::Result<u8> {
    let tol = Tolerance::parse(tolerance).map_err(|e| UsageError(e.to_string()))?;
    let c = compare(base, new, &tol)?;
    let out = out.map_or_else(|| c.default_out(), Path::to_path_buf);
    if out.join(files::SUMMARY).exists() {
        return Err(UsageError(format!(
            "--out {}: a run folder; compare writes its files elsewhere",
            out.display()
        ))
        .into());
    }
    for w in &c.warnings {
        eprintln!("warning: {w}");
    }
    print!("{}", table::text(&c));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let json = out.join(JSON);
    std::fs::write(&json, c.to_json()).with_context(|| format!("writing {}", json.display()))?;
    let html = out.join(HTML);
    std::fs::write(&html, page(&c, &out)).with_context(|| format!("writing {}", html.display()))?;
    println!("compare.json: {}", json.display());
    println!("compare.html: {}", html.display());
    if c.regressed() {
        println!(
            "{} regression(s) beyond tolerance and noise: exit status {}",
            c.regressions.len(),
            c.exit_code
        );
    } else {
        println!("no regression beyond tolerance and noise");
    }
    Ok(c.exit_code)
}

fn usage(e: anyhow::Error) -> anyhow::Error {
    UsageError(format!("{e:#}")).into()
}

/// A results folder, read; any failure is bad input.
fn load(dir: &Path) -> anyhow::Result<Run> {
    if !dir.join(files::SUMMARY).is_file() {
        return Err(UsageError(format!(
            "{}: not a run's results folder (no {})",
            dir.display(),
            files::SUMMARY
        ))
        .into());
    }
    Run::load(dir)
        .map_err(|e| usage(e.context(format!("{}: not a readable run folder", dir.display()))))
}

fn info(r: &Run, dir: &Path) -> RunInfo {
    let s = &r.summary;
    RunInfo {
        run_id: s.run_id.clone(),
        dir: dir.display().to_string(),
        scenario: s.scenario.clone(),
        scenario_crc32: r.yaml_hash.clone(),
        replicas: s.replicas,
        started_at: s.started_at.clone(),
        git_rev: s.git_rev.clone(),
        duration_s: s.duration_s,
        machine: s.machine.clone(),
        interrupted: s.interrupted,
    }
}

/// `field a vs b` for each field of the machine that differs.
fn machine_differences(a: &Machine, b: &Machine) -> Vec<String> {
    let mut out = Vec::new();
    let mut diff = |name: &str, x: String, y: String| {
        if x != y {
            out.push(format!("{name} {x} vs {y}"));
        }
    };
    diff("cores", a.cores.to_string(), b.cores.to_string());
    diff(
        "memory_mb",
        a.memory_mb.to_string(),
        b.memory_mb.to_string(),
    );
    diff(
        "cpu_model",
        format!("'{}'", a.cpu_model),
        format!("'{}'", b.cpu_model),
    );
    diff("kernel", a.kernel.clone(), b.kernel.clone());
    diff("disk", format!("'{}'", a.disk), format!("'{}'", b.disk));
    out
}

fn points(s: &Series, f: impl Fn(&noise::Second) -> f64) -> Vec<(f64, f64)> {
    s.seconds.iter().map(|x| (x.second as f64, f(x))).collect()
}

/// A metric's whole-run value in `summary.json`.
fn value(r: &OpResult, m: Metric) -> f64 {
    let l = &r.latency_ms;
    match m {
        Metric::Throughput => r.throughput,
        Metric::P50 => l.p50,
        Metric::P90 => l.p90,
        Metric::P99 => l.p99,
        Metric::P999 => l.p999,
        Metric::Max => l.max,
        Metric::ErrorRate => {
            let calls = r.count + r.errors;
            if calls == 0 {
                0.0
            } else {
                100.0 * r.errors as f64 / calls as f64
            }
        }
    }
}

/// One row: the change, against the tolerance and the noise (the module's rule).
pub fn judge(
    metric: Metric,
    base: f64,
    new: f64,
    base_spread: Option<f64>,
    new_spread: Option<f64>,
    tolerance: Option<f64>,
) -> Row {
    let delta = new - base;
    let delta_pct = (base > 0.0).then(|| 100.0 * delta / base);
    let worse = if metric.higher_is_better() {
        delta < 0.0
    } else {
        delta > 0.0
    };
    let noise = match (base_spread, new_spread) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let beyond_noise = delta.abs() > noise.unwrap_or(0.0);
    let beyond_tolerance = tolerance.is_some_and(|t| {
        if metric.absolute_tolerance() {
            delta.abs() > t
        } else {
            delta_pct.map_or(delta != 0.0, |p| p.abs() > t)
        }
    });
    let verdict = match tolerance {
        None => RowVerdict::NotJudged,
        Some(_) if beyond_tolerance && beyond_noise && worse => RowVerdict::Regression,
        Some(_) if beyond_tolerance && beyond_noise && delta != 0.0 => RowVerdict::Improvement,
        Some(_) if beyond_tolerance => RowVerdict::Noise,
        Some(_) => RowVerdict::Ok,
    };
    Row {
        metric,
        unit: metric.unit().to_string(),
        base,
        new,
        delta,
        delta_pct,
        base_spread,
        new_spread,
        noise,
        tolerance,
        worse,
        beyond_tolerance,
        beyond_noise,
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regression_is_worse_than_both_the_tolerance_and_the_noise() {
        let p99 = |new: f64, noise: f64| {
            judge(
                Metric::P99,
                10.0,
                new,
                Some(noise),
                Some(noise / 2.0),
                Some(10.0),
            )
            .verdict
        };
        // +30%, noise 1 ms: a regression.
        assert_eq!(p99(13.0, 1.0), RowVerdict::Regression);
        // +30%, but seconds move by 4 ms: noise.
        assert_eq!(p99(13.0, 4.0), RowVerdict::Noise);
        // +5%: within the tolerance whatever the noise.
        assert_eq!(p99(10.5, 0.0), RowVerdict::Ok);
        // -30%: an improvement.
        assert_eq!(p99(7.0, 1.0), RowVerdict::Improvement);
        // The noise is the larger spread, either run's.
        let r = judge(Metric::P99, 10.0, 13.0, Some(0.5), Some(3.5), Some(10.0));
        assert_eq!((r.noise, r.verdict), (Some(3.5), RowVerdict::Noise));
        // Throughput is worse lower.
        let t = judge(
            Metric::Throughput,
            100.0,
            80.0,
            Some(5.0),
            Some(5.0),
            Some(5.0),
        );
        assert_eq!((t.worse, t.verdict), (true, RowVerdict::Regression));
        let t = judge(
            Metric::Throughput,
            100.0,
            120.0,
            Some(5.0),
            Some(5.0),
            Some(5.0),
        );
        assert_eq!((t.worse, t.verdict), (false, RowVerdict::Improvement));
        // Not judged, but the change is still measured.
        let m = judge(Metric::Max, 10.0, 100.0, Some(1.0), Some(1.0), None);
        assert_eq!((m.verdict, m.beyond_noise), (RowVerdict::NotJudged, true));
        assert_eq!(m.delta_pct, Some(900.0));
    }

    #[test]
    fn error_rates_are_judged_in_percentage_points_from_a_zero_base() {
        // 0% -> 0.05%: within 0.1 points.
        let e = judge(
            Metric::ErrorRate,
            0.0,
            0.05,
            Some(0.0),
            Some(0.0),
            Some(0.1),
        );
        assert_eq!((e.delta_pct, e.verdict), (None, RowVerdict::Ok));
        // 0% -> 0.5%, with quiet seconds: a regression, not "infinitely" worse.
        let e = judge(Metric::ErrorRate, 0.0, 0.5, Some(0.0), Some(0.2), Some(0.1));
        assert_eq!(e.verdict, RowVerdict::Regression);
        // The same when errors come in bursts: seconds at 0% and 2% make the noise.
        let e = judge(Metric::ErrorRate, 0.0, 0.5, Some(0.0), Some(2.0), Some(0.1));
        assert_eq!(e.verdict, RowVerdict::Noise);
        // No successful call in the base: any throughput is an improvement beyond tolerance.
        let t = judge(
            Metric::Throughput,
            0.0,
            10.0,
            Some(0.0),
            Some(1.0),
            Some(5.0),
        );
        assert_eq!((t.delta_pct, t.verdict), (None, RowVerdict::Improvement));
        // An unknown spread (no interval log) leaves the tolerance alone to judge.
        let p = judge(Metric::P999, 10.0, 13.0, None, None, Some(20.0));
        assert_eq!((p.noise, p.verdict), (None, RowVerdict::Regression));
    }

    #[test]
    fn machines_differ_field_by_field() {
        let m = Machine {
            cores: 2,
            memory_mb: 1024,
            cpu_model: "x".into(),
            kernel: "6".into(),
            disk: "ext4 on /dev/a".into(),
        };
        assert!(machine_differences(&m, &m).is_empty());
        let other = Machine {
            cores: 4,
            kernel: "7".into(),
            ..m.clone()
        };
        assert_eq!(
            machine_differences(&m, &other),
            ["cores 2 vs 4", "kernel 6 vs 7"]
        );
    }
}
