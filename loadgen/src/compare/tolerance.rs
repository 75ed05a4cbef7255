//! The metrics `compare` judges, and `--tolerance`: how much worse each may get before it can
//! count as a regression.
//!
//! Tolerances of throughput and latencies are **relative** (`p99=10%`: the new p99 may be up
//! to 10% above the base's). The error rate's is **absolute, in percentage points**
//! (`error_rate=0.1%`: from 0.05% up to 0.15%), because the usual base error rate is 0, where
//! any relative change is infinite: a run that goes from no error to 0.01% errors has
//! not regressed by "infinity per cent".

use std::fmt;

use serde::{Deserialize, Serialize};

/// One figure of an operation that `compare` sets side by side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Successful calls per second over the measured window (`summary.json` `throughput`).
    Throughput,
    /// Latency percentiles of every call, from the intended send time (`latency_ms`).
    P50,
    P90,
    P99,
    P999,
    Max,
    /// Failed calls in % of all calls.
    ErrorRate,
}

impl Metric {
    /// Every metric, in the order the table shows them.
    pub const ALL: [Metric; 7] = [
        Metric::Throughput,
        Metric::P50,
        Metric::P90,
        Metric::P99,
        Metric::P999,
        Metric::Max,
        Metric::ErrorRate,
    ];

    /// Its name, as `--tolerance` and `compare.json` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Throughput => "throughput",
            Metric::P50 => "p50",
            Metric::P90 => "p90",
            Metric::P99 => "p99",
            Metric::P999 => "p999",
            Metric::Max => "max",
            Metric::ErrorRate => "error_rate",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Metric::Throughput => "ops/s",
            Metric::ErrorRate => "%",
            _ => "ms",
        }
    }

    /// Throughput is better higher; latencies and the error rate are better lower.
    pub fn higher_is_better(self) -> bool {
        self == Metric::Throughput
    }

    /// Whether its tolerance is in percentage points of the value (the error rate) rather
    /// than in % of the base's value.
    pub fn absolute_tolerance(self) -> bool {
        self == Metric::ErrorRate
    }

    /// The latency percentile as a quantile (`p999` is 0.999); `None` for the others.
    pub fn quantile(self) -> Option<f64> {
        match self {
            Metric::P50 => Some(0.5),
            Metric::P90 => Some(0.9),
            Metric::P99 => Some(0.99),
            Metric::P999 => Some(0.999),
            _ => None,
        }
    }

    fn by_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Per metric, how much worse the new run may be before the change can be a regression;
/// `None`: the metric is shown, never judged (`max=off`).
///
/// Defaults (what a metric left out of `--tolerance` gets): throughput 5%, p50 10%, p90 10%,
/// p99 10%, p999 20%, error_rate 0.1 percentage points, max off (one call makes the max, so
/// a single stall in either run would decide the verdict; give `max=50%` to judge it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tolerance {
    pub throughput: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
    /// In percentage points.
    pub error_rate: Option<f64>,
}

impl Default for Tolerance {
    fn default() -> Tolerance {
        Tolerance {
            throughput: Some(5.0),
            p50: Some(10.0),
            p90: Some(10.0),
            p99: Some(10.0),
            p999: Some(20.0),
            max: None,
            error_rate: Some(0.1),
        }
    }
}

/// A `--tolerance` that does not parse.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ToleranceError {
    #[error(
        "--tolerance: '{0}' is not METRIC=VALUE (for example p99=10%; METRIC is one of \
         throughput, p50, p90, p99, p999, max, error_rate)"
    )]
    NotAPair(String),
    #[error(
        "--tolerance: unknown metric '{0}' (one of throughput, p50, p90, p99, p999, max, \
         error_rate)"
    )]
    UnknownMetric(String),
    #[error(
        "--tolerance: {metric}={value}: not a percentage (a number >= 0, with or without %, \
         or off)"
    )]
    BadValue { metric: String, value: String },
    #[error("--tolerance: {0} is given twice")]
    Duplicate(String),
}

impl Tolerance {
    /// Parses `p99=10%,throughput=5%`: comma-separated `METRIC=VALUE`, where VALUE is a
    /// number >= 0 with an optional `%` (`10%` and `10` are the same), or `off` (show the
    /// metric, never judge it). Metrics not given keep their defaults ([`Tolerance`]); an
    /// empty string gives the defaults.
    pub fn parse(text: &str) -> Result<Tolerance, ToleranceError> {
        let mut t = Tolerance::default();
        let mut seen = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, value) = item
                .split_once('=')
                .map(|(n, v)| (n.trim(), v.trim()))
                .ok_or_else(|| ToleranceError::NotAPair(item.to_string()))?;
            let metric = Metric::by_name(&name.to_ascii_lowercase())
                .ok_or_else(|| ToleranceError::UnknownMetric(name.to_string()))?;
            if seen.contains(&metric) {
                return Err(ToleranceError::Duplicate(metric.name().to_string()));
            }
            seen.push(metric);
            let bad = || ToleranceError::BadValue {
                metric: metric.name().to_string(),
                value: value.to_string(),
            };
            let limit = if value.eq_ignore_ascii_case("off") {
                None
            } else {
                let number = value.strip_suffix('%').unwrap_or(value).trim();
                let v: f64 = number.parse().map_err(|_| bad())?;
                if !v.is_finite() || v < 0.0 {
                    return Err(bad());
                }
                Some(v)
            };
            *t.slot(metric) = limit;
        }
        Ok(t)
    }

    /// A metric's tolerance: % of the base's value, or percentage points for the error
    /// rate; `None` when the metric is not judged.
    pub fn get(&self, m: Metric) -> Option<f64> {
        match m {
            Metric::Throughput => self.throughput,
            Metric::P50 => self.p50,
            Metric::P90 => self.p90,
            Metric::P99 => self.p99,
            Metric::P999 => self.p999,
            Metric::Max => self.max,
            Metric::ErrorRate => self.error_rate,
        }
    }

    fn slot(&mut self, m: Metric) -> &mut Option<f64> {
        match m {
            Metric::Throughput => &mut self.throughput,
            Metric::P50 => &mut self.p50,
            Metric::P90 => &mut self.p90,
            Metric::P99 => &mut self.p99,
            Metric::P999 => &mut self.p999,
            Metric::Max => &mut self.max,
            Metric::ErrorRate => &mut self.error_rate,
        }
    }

    /// As `--tolerance` would take it: `throughput=5%,p50=10%,...,max=off,error_rate=0.1%`.
    pub fn describe(&self) -> String {
        Metric::ALL
            .iter()
            .map(|&m| match self.get(m) {
                Some(v) => format!("{m}={v}%"),
                None => format!("{m}=off"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_metrics_keep_their_defaults() {
        let t = Tolerance::parse("p99=10%,throughput=5%").unwrap();
        assert_eq!(t, Tolerance::default());
        let t = Tolerance::parse(" p99 = 25 , max=50%, p999=off,error_rate=0.5%").unwrap();
        assert_eq!(t.p99, Some(25.0));
        assert_eq!(t.max, Some(50.0));
        assert_eq!(t.p999, None);
        assert_eq!(t.error_rate, Some(0.5));
        assert_eq!(t.p50, Some(10.0));
        assert_eq!(Tolerance::parse("").unwrap(), Tolerance::default());
        assert_eq!(
            Tolerance::default().describe(),
            "throughput=5%,p50=10%,p90=10%,p99=10%,p999=20%,max=off,error_rate=0.1%"
        );
        assert_eq!(
            Tolerance::parse(&Tolerance::default().describe()).unwrap(),
            Tolerance::default()
        );
    }

    #[test]
    fn bad_tolerances_say_what_is_wrong() {
        let err = |s: &str| Tolerance::parse(s).unwrap_err();
        assert_eq!(err("p99"), ToleranceError::NotAPair("p99".into()));
        assert_eq!(err("p98=1%"), ToleranceError::UnknownMetric("p98".into()));
        assert!(matches!(err("p99=ten%"), ToleranceError::BadValue { .. }));
        assert!(matches!(err("p99=-1%"), ToleranceError::BadValue { .. }));
        assert!(matches!(err("p99=NaN"), ToleranceError::BadValue { .. }));
        assert!(matches!(err("p99=%"), ToleranceError::BadValue { .. }));
        assert_eq!(
            err("p99=1%,p99=2%"),
            ToleranceError::Duplicate("p99".into())
        );
        assert!(err("latency=5%").to_string().contains("one of throughput"));
    }
}
