//! Rate-limited warnings, for what a remote sender controls: at most one line per reason per
//! interval, carrying how many were suppressed since the last one. A peer that floods a
//! replica with bad messages must not also flood its log (or its disk).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One warning per reason per `every`; the rest are counted and reported with the next.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    /// Per reason: when it was last logged, and how many were suppressed since.
    seen: HashMap<&'static str, (Instant, u64)>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(Duration::from_secs(1))
    }
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            seen: HashMap::new(),
        }
    }

    /// Logs `detail()` as a warning under `reason`, unless one was logged under that reason
    /// less than `every` ago (then only counts it). Returns whether it logged.
    pub fn warn(&mut self, reason: &'static str, detail: impl FnOnce() -> String) -> bool {
        let now = Instant::now();
        match self.seen.get_mut(reason) {
            Some((last, suppressed)) if now.duration_since(*last) < self.every => {
                *suppressed += 1;
                false
            }
            Some((last, suppressed)) => {
                let n = std::mem::take(suppressed);
                *last = now;
                tracing::warn!(suppressed = n, "{reason}: {}", detail());
                true
            }
            None => {
                self.seen.insert(reason, (now, 0));
                tracing::warn!(suppressed = 0, "{reason}: {}", detail());
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_reason_per_interval() {
        let mut t = Throttle::new(Duration::from_millis(50));
        assert!(t.warn("a", || "first".into()));
        assert!(!t.warn("a", || unreachable!("suppressed: not formatted")));
        assert!(t.warn("b", || "another reason".into()));
        std::thread::sleep(Duration::from_millis(60));
        assert!(t.warn("a", || "after the interval".into()));
        assert_eq!(
            t.seen["a"].1, 0,
            "the suppressed count was reported and reset"
        );
    }
}
