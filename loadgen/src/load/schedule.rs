//! The open model's arrival schedule: when each request is *meant* to be sent.
//!
//! Latency in the open model is measured from a request's intended send time, not from when
//! the generator got round to sending it (as wrk2 does). Otherwise a stalled server also
//! stalls the generator, and the requests that should have been sent during the stall are
//! never measured (coordinated omission). This module only computes the intended times. The
//! runner sends at or after them and reports how late it was.
//!
//! The total rate is spread evenly over `users`. User `u` of `U` sends every `U / rate`
//! seconds, offset by `u / rate`, so together they arrive every `1 / rate` seconds. The
//! warm-up runs at the first rate; then come `load.rate` for `load.duration`, or each of
//! `load.steps` in turn.

use std::time::Duration;

use crate::scenario::{Model, Scenario};

/// A piecewise-constant rate: `(end, ops/s)` segments, from time zero (warm-up included).
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    segments: Vec<(Duration, f64)>,
}

impl Schedule {
    /// The schedule of an open-model scenario; `None` for the closed model.
    pub fn from_scenario(s: &Scenario) -> Option<Schedule> {
        if s.load.model != Model::Open {
            return None;
        }
        let mut segments = Vec::new();
        let mut end = Duration::ZERO;
        let rates: Vec<(Duration, f64)> = match &s.load.rate {
            Some(r) => vec![(s.duration(), r.0)],
            None => s
                .load
                .steps
                .iter()
                .map(|st| (st.duration.0, st.rate.0))
                .collect(),
        };
        let first = rates.first()?.1;
        if !s.load.warmup.0.is_zero() {
            end += s.load.warmup.0;
            segments.push((end, first));
        }
        for (len, rate) in rates {
            end += len;
            segments.push((end, rate));
        }
        Some(Schedule { segments })
    }

    /// The rate segments of the measured window, as `(start, end, ops/s)` from its start
    /// (the warm-up, which runs at the first rate, is left out).
    pub fn measured_segments(&self, warmup: Duration) -> Vec<(Duration, Duration, f64)> {
        let mut out = Vec::new();
        let mut start = Duration::ZERO;
        for &(end, rate) in &self.segments {
            if end > warmup {
                out.push((start.max(warmup) - warmup, end - warmup, rate));
            }
            start = end;
        }
        out
    }

    /// The end of the schedule (warm-up plus measured window).
    pub fn end(&self) -> Duration {
        self.segments.last().map_or(Duration::ZERO, |s| s.0)
    }

    /// How many requests all `users` together are meant to send in `[from, to)`.
    pub fn intended_between(&self, users: usize, from: Duration, to: Duration) -> u64 {
        (0..users)
            .map(|u| {
                self.user_times(u, users)
                    .take_while(|t| *t < to)
                    .filter(|t| *t >= from)
                    .count() as u64
            })
            .sum()
    }

    /// The offered rate at `t` (ops/s in total), or 0 past the end.
    pub fn rate_at(&self, t: Duration) -> f64 {
        self.segments
            .iter()
            .find(|(end, _)| t < *end)
            .map_or(0.0, |s| s.1)
    }

    /// Intended send times of user `u` of `users`, as offsets from the start.
    pub fn user_times(&self, u: usize, users: usize) -> UserTimes {
        assert!(users > 0 && u < users);
        UserTimes {
            schedule: self.clone(),
            u: u as f64,
            users: users as f64,
            next: None,
        }
    }
}

/// The iterator behind [`Schedule::user_times`]: it owns its copy of the (small) schedule so
/// each load-generating user can keep it in its own state.
#[derive(Clone, Debug)]
pub struct UserTimes {
    schedule: Schedule,
    u: f64,
    users: f64,
    next: Option<f64>,
}

impl Iterator for UserTimes {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let end = self.schedule.end().as_secs_f64();
        let t = match self.next {
            // The first send: this user's slot within the first interval.
            None => {
                let rate = self.schedule.rate_at(Duration::ZERO);
                if rate <= 0.0 {
                    return None;
                }
                self.u / rate
            }
            Some(t) => t,
        };
        if t >= end {
            return None;
        }
        // The interval to the next send follows the rate in force now (steps change it).
        let rate = self.schedule.rate_at(Duration::from_secs_f64(t));
        self.next = Some(t + self.users / rate);
        Some(Duration::from_secs_f64(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(load: &str) -> Scenario {
        let text = format!(
            "name: t\ndataset: {{users: 10, chats: 2, members_per_chat: 2}}\nmix: {{send_message: 1}}\nload:\n{load}"
        );
        Scenario::parse("t.yaml", &text, &[]).unwrap()
    }

    #[test]
    fn users_together_arrive_at_the_total_rate() {
        let s = Schedule::from_scenario(&scenario(
            "  model: open\n  rate: 100\n  users: 4\n  duration: 2s\n",
        ))
        .unwrap();
        let mut all: Vec<Duration> = (0..4)
            .flat_map(|u| s.user_times(u, 4).collect::<Vec<_>>())
            .collect();
        all.sort();
        assert_eq!(all.len(), 200, "100/s for 2 s");
        assert_eq!(
            s.intended_between(4, Duration::from_secs(1), Duration::from_secs(2)),
            100
        );
        // Evenly spaced: every gap is 10 ms.
        for w in all.windows(2) {
            let gap = w[1] - w[0];
            assert!((gap.as_secs_f64() - 0.01).abs() < 1e-6, "gap {gap:?}");
        }
    }

    #[test]
    fn warmup_runs_at_the_first_rate_and_steps_raise_it() {
        let s = Schedule::from_scenario(&scenario(
            "  model: open\n  users: 1\n  warmup: 1s\n  steps:\n    - {rate: 10, for: 1s}\n    - {rate: 40, for: 1s}\n",
        ))
        .unwrap();
        assert_eq!(s.end(), Duration::from_secs(3));
        let times: Vec<Duration> = s.user_times(0, 1).collect();
        let in_window = |a: f64, b: f64| {
            times
                .iter()
                .filter(|t| t.as_secs_f64() >= a && t.as_secs_f64() < b)
                .count()
        };
        assert_eq!(in_window(0.0, 1.0), 10, "warm-up at the first step's rate");
        assert_eq!(in_window(1.0, 2.0), 10);
        assert_eq!(in_window(2.0, 3.0), 40);
        assert_eq!(s.rate_at(Duration::from_millis(2500)), 40.0);
        let secs = |d: Duration| d.as_secs_f64();
        let measured: Vec<(f64, f64, f64)> = s
            .measured_segments(Duration::from_secs(1))
            .into_iter()
            .map(|(a, b, r)| (secs(a), secs(b), r))
            .collect();
        assert_eq!(measured, vec![(0.0, 1.0, 10.0), (1.0, 2.0, 40.0)]);
        assert_eq!(s.rate_at(Duration::from_secs(3)), 0.0);
    }

    #[test]
    fn closed_model_has_no_schedule() {
        let s = scenario("  model: closed\n  users: 3\n  think_time: 10ms\n  duration: 1s\n");
        assert!(Schedule::from_scenario(&s).is_none());
    }
}
