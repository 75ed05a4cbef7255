//! A run's noise: how much each figure moves from one second to the next.
//!
//! Per operation and metric, the per-second values of the measured window (`second` 1 to
//! `duration_s`; the straggler's partial second after it is left out), and their spread:
//! the 10th to the 90th percentile of those values (linear interpolation between the
//! sorted values, as numpy's default). Where each metric's per-second values come from:
//!
//! | metric | per-second value | from |
//! |---|---|---|
//! | `throughput` | successful calls in that second (a second without a row counts 0) | `timeseries.csv` `count` |
//! | `p50`, `p99`, `max` | that second's percentile of every call's corrected latency | `timeseries.csv` `p50_ms`, `p99_ms`, `max_ms` |
//! | `p90`, `p999` | the same, from that second's histogram | `<op>.hdr.hlog` |
//! | `error_rate` | `100 * errors / (count + errors)` of that second | `timeseries.csv` |
//!
//! Latency and error-rate values count only the seconds that saw a call.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

use super::tolerance::Metric;
use crate::report::data::{self, Run};
use crate::results::files;

/// One second of one operation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Second {
    pub second: u64,
    pub count: f64,
    pub errors: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// An operation's per-second figures over the measured window.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// `timeseries.csv`'s rows of the operation in the window, by second.
    pub seconds: Vec<Second>,
    /// Per second (same numbering), p90 and p999 in ms from the interval log; `None` when the
    /// run has no readable `<op>.hdr.hlog`.
    pub hlog: Option<BTreeMap<u64, (f64, f64)>>,
    /// Whole seconds in the measured window.
    pub window: u64,
}

impl Series {
    /// Reads one operation's rows of a loaded run, and its interval log.
    pub fn of(run: &Run, op: &str) -> anyhow::Result<Series> {
        let window = run.summary.duration_s.round().max(0.0) as u64;
        let df = data::op_series(&run.timeseries, op)?;
        let col = |name: &str| data::f64s(&df, name);
        let (second, count, errors) = (col("second")?, col("count")?, col("errors")?);
        let (p50, p99, max) = (col("p50_ms")?, col("p99_ms")?, col("max_ms")?);
        let seconds = (0..second.len())
            .filter(|&i| second[i] >= 1.0 && second[i] <= window as f64)
            .map(|i| Second {
                second: second[i] as u64,
                count: count[i],
                errors: errors[i],
                p50_ms: p50[i],
                p99_ms: p99[i],
                max_ms: max[i],
            })
            .collect();
        let hlog = per_second_tail(&run.dir.join(files::hlog(op)), window)?;
        Ok(Series {
            seconds,
            hlog,
            window,
        })
    }

    /// The per-second values of a metric (see the module's table); `None` when they cannot
    /// be known (p90 and p999 without an interval log).
    pub fn values(&self, m: Metric) -> Option<Vec<f64>> {
        let called = || self.seconds.iter().filter(|s| s.count + s.errors > 0.0);
        Some(match m {
            Metric::Throughput => {
                let mut by: BTreeMap<u64, f64> = (1..=self.window).map(|s| (s, 0.0)).collect();
                for s in &self.seconds {
                    by.insert(s.second, s.count);
                }
                by.into_values().collect()
            }
            Metric::P50 => called().map(|s| s.p50_ms).collect(),
            Metric::P99 => called().map(|s| s.p99_ms).collect(),
            Metric::Max => called().map(|s| s.max_ms).collect(),
            Metric::P90 => self.hlog.as_ref()?.values().map(|v| v.0).collect(),
            Metric::P999 => self.hlog.as_ref()?.values().map(|v| v.1).collect(),
            Metric::ErrorRate => called()
                .map(|s| 100.0 * s.errors / (s.count + s.errors))
                .collect(),
        })
    }

    /// The spread of a metric's per-second values: 90th minus 10th percentile; `None` when
    /// they cannot be known or there is none.
    pub fn spread(&self, m: Metric) -> Option<f64> {
        let v = self.values(m)?;
        spread(&v)
    }
}

/// The 10th-to-90th percentile spread of `values` (linear interpolation); `None` when empty.
pub fn spread(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(quantile(&v, 0.9) - quantile(&v, 0.1))
}

/// The `q` quantile of sorted values, interpolating linearly between ranks.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Per second of the window (an interval starting at `s - 1` s is second `s`), the p90 and
/// p999 of that second's histogram, in ms. `None` when the file is absent.
fn per_second_tail(path: &Path, window: u64) -> anyhow::Result<Option<BTreeMap<u64, (f64, f64)>>> {
    let Some(intervals) = interval_histograms(path)? else {
        return Ok(None);
    };
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(Some(
        intervals
            .into_iter()
            .filter(|(s, h)| (1..=window).contains(s) && !h.is_empty())
            .map(|(s, h)| (s, (ms(&h, 0.9), ms(&h, 0.999))))
            .collect(),
    ))
}

/// One second of an interval log: its number and its histogram.
pub type SecondHistogram = (u64, Histogram<u64>);

/// The histograms of an interval log, each with its second (an interval starting at
/// `s - 1` s from the log's base time is second `s`). `None` when the file is absent.
pub fn interval_histograms(path: &Path) -> anyhow::Result<Option<Vec<SecondHistogram>>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut out = Vec::new();
    let mut decoder = Deserializer::new();
    for entry in IntervalLogIterator::new(&bytes) {
        let entry = entry.map_err(|e| anyhow::anyhow!("{}: {e:?}", path.display()))?;
        if let LogEntry::Interval(interval) = entry {
            use base64::Engine;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(interval.encoded_histogram().trim())
                .with_context(|| format!("{}: bad base64", path.display()))?;
            let h: Histogram<u64> = decoder
                .deserialize(&mut raw.as_slice())
                .map_err(|e| anyhow::anyhow!("{}: {e:?}", path.display()))?;
            out.push((interval.start_timestamp().as_secs() + 1, h));
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spread_is_the_10th_to_90th_percentile() {
        assert_eq!(spread(&[]), None);
        assert_eq!(spread(&[5.0]), Some(0.0));
        // 0..=10: the 10th percentile is 1, the 90th 9.
        let v: Vec<f64> = (0..=10).rev().map(f64::from).collect();
        assert_eq!(spread(&v), Some(8.0));
        // One outlier second does not make the spread.
        let mut v = vec![10.0; 20];
        v[3] = 1000.0;
        assert_eq!(spread(&v), Some(0.0));
        // Interpolated: [1, 2] has p10 1.1 and p90 1.9.
        assert!((spread(&[2.0, 1.0]).unwrap() - 0.8).abs() < 1e-9);
    }

    #[test]
    fn throughput_counts_silent_seconds_as_zero_and_latency_skips_them() {
        let s = Series {
            seconds: vec![
                Second {
                    second: 1,
                    count: 10.0,
                    errors: 0.0,
                    p50_ms: 1.0,
                    p99_ms: 2.0,
                    max_ms: 3.0,
                },
                Second {
                    second: 3,
                    count: 9.0,
                    errors: 1.0,
                    p50_ms: 1.5,
                    p99_ms: 2.5,
                    max_ms: 3.5,
                },
            ],
            hlog: None,
            window: 3,
        };
        assert_eq!(s.values(Metric::Throughput), Some(vec![10.0, 0.0, 9.0]));
        assert_eq!(s.values(Metric::P99), Some(vec![2.0, 2.5]));
        assert_eq!(s.values(Metric::ErrorRate), Some(vec![0.0, 10.0]));
        assert_eq!(s.values(Metric::P999), None);
        assert_eq!(s.spread(Metric::P90), None);
    }
}
