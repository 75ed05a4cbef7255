//! The rate search itself, apart from running probes, so it can be tested on its own: an
//! exponential ramp (double after each pass, halve after each failure) until one rate
//! passes and another fails, then a bisection between the highest pass and the lowest
//! failure until they are within the precision of each other.
//!
//! Rates are whole operations per second. The search assumes that a rate above a failure
//! would fail too; a noisy machine can break that (a pass above a failure), in which case
//! the answer stays below the lowest failure: it never reports a rate that failed.

/// Why a search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The highest pass and the lowest failure are within the precision.
    Converged,
    /// The ramp reached its ceiling without a failure.
    MaxRate,
    /// Even the lowest rate failed.
    MinRate,
}

impl Ended {
    pub fn name(self) -> &'static str {
        match self {
            Ended::Converged => "converged",
            Ended::MaxRate => "max_rate",
            Ended::MinRate => "min_rate",
        }
    }
}

/// Where a search is.
#[derive(Clone, Debug)]
pub struct Search {
    start: u64,
    min: u64,
    max: u64,
    precision: f64,
    /// Every rate that passed, and the lowest that failed.
    passes: Vec<u64>,
    fail: Option<u64>,
}

/// What to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    Probe(u64),
    Done(Ended),
}

impl Search {
    /// A search starting at `start` ops/s, within `[min, max]`, to `precision` (0.05 for 5%).
    pub fn new(start: u64, min: u64, max: u64, precision: f64) -> Search {
        let min = min.max(1);
        let max = max.max(min);
        Search {
            start: start.clamp(min, max),
            min,
            max,
            precision,
            passes: Vec::new(),
            fail: None,
        }
    }

    /// The highest pass below the lowest failure: a pass at or above a failure (noise) never
    /// counts.
    fn pass(&self) -> Option<u64> {
        self.passes
            .iter()
            .copied()
            .filter(|&p| self.fail.is_none_or(|f| p < f))
            .max()
    }

    /// Takes a probe's outcome into account.
    pub fn record(&mut self, rate: u64, passed: bool) {
        if passed {
            self.passes.push(rate);
        } else {
            self.fail = Some(self.fail.map_or(rate, |f| f.min(rate)));
        }
    }

    /// The highest rate that passed below every failure so far (0 when none did).
    pub fn best(&self) -> u64 {
        self.pass().unwrap_or(0)
    }

    /// The next rate to probe, or why the search is over.
    pub fn next(&self) -> Next {
        match (self.pass(), self.fail) {
            (None, None) => Next::Probe(self.start),
            (Some(p), None) => {
                if p >= self.max {
                    Next::Done(Ended::MaxRate)
                } else {
                    Next::Probe(p.saturating_mul(2).min(self.max))
                }
            }
            (None, Some(f)) => {
                if f <= self.min {
                    Next::Done(Ended::MinRate)
                } else {
                    Next::Probe((f / 2).max(self.min))
                }
            }
            (Some(p), Some(f)) => {
                let gap = f.saturating_sub(p) as f64;
                let mid = p + (f - p) / 2;
                if gap <= self.precision * p as f64 || mid == p {
                    Next::Done(Ended::Converged)
                } else {
                    Next::Probe(mid)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs a search against a system that passes every rate up to `capacity`.
    fn run(mut s: Search, capacity: u64) -> (u64, Ended, Vec<u64>) {
        let mut probes = Vec::new();
        loop {
            match s.next() {
                Next::Probe(r) => {
                    assert!(!probes.contains(&r), "probed {r} twice: {probes:?}");
                    probes.push(r);
                    s.record(r, r <= capacity);
                    assert!(probes.len() < 100, "no end: {probes:?}");
                }
                Next::Done(e) => return (s.best(), e, probes),
            }
        }
    }

    #[test]
    fn ramps_up_then_bisects() {
        let (best, ended, probes) = run(Search::new(500, 1, 1_000_000, 0.05), 3_300);
        assert_eq!(ended, Ended::Converged);
        assert_eq!(&probes[..4], &[500, 1000, 2000, 4000]);
        assert!(best <= 3_300 && best as f64 >= 3_300.0 / 1.05, "{best}");
    }

    #[test]
    fn ramps_down_when_the_start_fails() {
        let (best, ended, probes) = run(Search::new(8_000, 1, 1_000_000, 0.05), 700);
        assert_eq!(ended, Ended::Converged);
        assert_eq!(&probes[..5], &[8000, 4000, 2000, 1000, 500]);
        assert!(best <= 700 && best as f64 >= 700.0 / 1.05, "{best}");
    }

    #[test]
    fn stops_at_the_ceiling_and_the_floor() {
        let (best, ended, _) = run(Search::new(100, 1, 1_000, 0.05), 5_000);
        assert_eq!((best, ended), (1_000, Ended::MaxRate));
        let (best, ended, _) = run(Search::new(100, 10, 1_000, 0.05), 5);
        assert_eq!((best, ended), (0, Ended::MinRate));
    }

    #[test]
    fn a_pass_above_a_failure_never_raises_the_answer() {
        let mut s = Search::new(100, 1, 10_000, 0.05);
        s.record(1_000, false);
        s.record(2_000, true);
        assert_eq!(s.best(), 0);
        s.record(500, true);
        s.record(800, true);
        s.record(600, false);
        assert_eq!(s.best(), 500);
    }

    proptest! {
        /// Against any monotonic system, the answer passed, is within the precision of the
        /// true capacity, and the search ends.
        #[test]
        fn finds_any_capacity_within_precision(
            capacity in 1u64..200_000,
            start in 1u64..50_000,
            precision in 0.01f64..0.3,
        ) {
            let (best, ended, probes) = run(Search::new(start, 1, 1_000_000, precision), capacity);
            prop_assert_eq!(ended, Ended::Converged);
            prop_assert!(best <= capacity);
            // Integer rates: within the precision, or within one op/s of it.
            prop_assert!(
                (capacity - best) as f64 <= precision * best as f64 + 1.0,
                "capacity {} best {} probes {:?}", capacity, best, probes
            );
        }
    }
}
