//! The open model's arrival schedule: when each request is *meant* to be sent.
//!
//! Latency in the open model is measured from a request's intended send time, not from when
//! the generator got round to sending it (as wrk2 does). Otherwise a stalled server also
//! stalls the generator, and the requests that should have been sent during the stall are
//! never measured (coordinated omission). This module only computes the intended times. The
//! runner sends at or after them and reports how late it was.
//!
//! The warm-up runs at the first rate; then come `load.rate` for `load.duration`, or each of
//! `load.steps` in turn. Within that rate, `load.arrivals` spaces the requests:
//!
//! - `uniform` (the default): evenly. The total rate is spread evenly over `users`: user
//!   `u` of `U` sends every `U / rate` seconds, offset by `u / rate`, so together they
//!   arrive every `1 / rate` seconds.
//! - `poisson`: as a Poisson process, the arrivals of many independent clients. The
//!   intended times are the running sum of exponential gaps of mean `1 / rate` (the rate in
//!   force at the time: the exponential is memoryless, so at a step's end the next gap is
//!   drawn afresh at the new rate, which is exact for a piecewise-constant rate). The gaps
//!   are drawn once, before the run, from a rng seeded with the scenario's `seed`, and the
//!   arrivals are dealt to the users in turn (user `u` gets arrivals `u`, `u + U`, ...).
//!   Dealt in turn rather than each user drawing its own process (which, merged, would be
//!   Poisson too): a user's own gaps are then sums of `U` exponentials, seldom shorter than
//!   a call, so the bursts reach the server instead of queueing behind a busy user of the
//!   generator. See [`super::shape`] for why bursts matter.
//!
//! Either way the schedule is the latency reference: a call's latency counts from its
//! intended time.

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};

use crate::scenario::{Arrivals, Model, Scenario};

/// Seeds the Poisson gaps apart from the other seeded streams (dataset, calls, think time).
const ARRIVALS_SEED: u64 = 0xA441_7A15_0F0F_5EED;

/// A piecewise-constant rate: `(end, ops/s)` segments, from time zero (warm-up included),
/// and, for Poisson arrivals, every intended time.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    segments: Vec<(Duration, f64)>,
    /// Poisson arrivals: every intended time of the run, in order (`None`: evenly spaced).
    poisson: Option<Arc<[Duration]>>,
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
        let mut schedule = Schedule {
            segments,
            poisson: None,
        };
        if s.load.arrivals == Arrivals::Poisson {
            let mut rng = ChaCha8Rng::seed_from_u64(s.seed ^ ARRIVALS_SEED);
            schedule.poisson = Some(schedule.poisson_times(&mut rng).into());
        }
        Some(schedule)
    }

    /// Poisson arrival times over the whole schedule: exponential gaps at the rate in force,
    /// drawn afresh at each segment's end (exact, as the exponential is memoryless).
    fn poisson_times(&self, rng: &mut ChaCha8Rng) -> Vec<Duration> {
        let mut times = Vec::new();
        let mut t = 0.0f64;
        let mut start = 0.0f64;
        for &(end, rate) in &self.segments {
            let end = end.as_secs_f64();
            t = t.max(start);
            if let Ok(gap) = Exp::new(rate) {
                loop {
                    let next = t + gap.sample(rng);
                    if next >= end {
                        break;
                    }
                    times.push(Duration::from_secs_f64(next));
                    t = next;
                }
            }
            start = end;
        }
        times
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
            .map(|u| self.intended_of(u, users, from, to))
            .sum()
    }

    /// The sends user `u` of `users` is intended to make in `[from, to)`.
    pub fn intended_of(&self, u: usize, users: usize, from: Duration, to: Duration) -> u64 {
        self.user_times(u, users)
            .take_while(|t| *t < to)
            .filter(|t| *t >= from)
            .count() as u64
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
            next_index: u,
        }
    }

    /// Every intended time of every user, in order (for tests and checks).
    pub fn all_times(&self, users: usize) -> Vec<Duration> {
        let mut all: Vec<Duration> = (0..users).flat_map(|u| self.user_times(u, users)).collect();
        all.sort();
        all
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
    /// Poisson arrivals: this user's next one in the schedule's list.
    next_index: usize,
}

impl Iterator for UserTimes {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if let Some(times) = &self.schedule.poisson {
            // Dealt in turn: arrivals u, u + U, u + 2U, ...
            let t = times.get(self.next_index).copied();
            self.next_index += self.users as usize;
            return t;
        }
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

    /// Gaps between consecutive arrivals of all users together, the first from zero.
    fn gaps(times: &[Duration]) -> Vec<f64> {
        let mut last = 0.0;
        times
            .iter()
            .map(|t| {
                let gap = t.as_secs_f64() - last;
                last = t.as_secs_f64();
                gap
            })
            .collect()
    }

    /// The Kolmogorov-Smirnov statistic of `gaps` against an exponential of `rate`.
    fn ks_exponential(gaps: &[f64], rate: f64) -> f64 {
        let mut sorted = gaps.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len() as f64;
        sorted
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let cdf = 1.0 - (-rate * x).exp();
                (cdf - i as f64 / n)
                    .abs()
                    .max((cdf - (i + 1) as f64 / n).abs())
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn poisson_gaps_match_the_rate_and_the_exponential_shape() {
        let s = Schedule::from_scenario(&scenario(
            "  model: open\n  rate: 1000\n  arrivals: poisson\n  users: 7\n  duration: 100s\n",
        ))
        .unwrap();
        let all = s.all_times(7);
        let gaps = gaps(&all);
        let n = gaps.len() as f64;
        // About 100,000 arrivals (a Poisson count: sd 316).
        assert!((n - 100_000.0).abs() < 1_600.0, "{n} arrivals");
        // Mean gap 1 / rate.
        let mean = gaps.iter().sum::<f64>() / n;
        assert!((mean / 1e-3 - 1.0).abs() < 0.02, "mean gap {mean}");
        // Exponential: standard deviation equal to the mean, e^-1 of gaps above the mean,
        // e^-3 above three times it, and the whole distribution within the KS bound
        // (1.95 / sqrt(n): the 0.1% critical value).
        let sd = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!((sd / mean - 1.0).abs() < 0.03, "sd {sd} mean {mean}");
        let above = |x: f64| gaps.iter().filter(|g| **g > x).count() as f64 / n;
        assert!(
            (above(1e-3) - (-1f64).exp()).abs() < 0.01,
            "{}",
            above(1e-3)
        );
        assert!(
            (above(3e-3) - (-3f64).exp()).abs() < 0.005,
            "{}",
            above(3e-3)
        );
        let d = ks_exponential(&gaps, 1000.0);
        assert!(d < 1.95 / n.sqrt(), "KS statistic {d}");

        // The same test tells evenly spaced arrivals apart.
        let even = Schedule::from_scenario(&scenario(
            "  model: open\n  rate: 1000\n  users: 7\n  duration: 10s\n",
        ))
        .unwrap();
        let d = ks_exponential(&super::tests::gaps(&even.all_times(7)), 1000.0);
        assert!(d > 0.5, "KS statistic of even gaps {d}");
    }

    #[test]
    fn poisson_arrivals_are_seeded_dealt_in_turn_and_follow_steps() {
        let load = "  model: open\n  arrivals: poisson\n  users: 3\n  warmup: 2s\n  steps:\n    - {rate: 500, for: 4s}\n    - {rate: 2000, for: 4s}\n";
        let s = Schedule::from_scenario(&scenario(load)).unwrap();
        assert_eq!(s.end(), Duration::from_secs(10));
        // Each user's times rise, and together they are every arrival once.
        let all = s.all_times(3);
        for u in 0..3 {
            let mine: Vec<Duration> = s.user_times(u, 3).collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(
                mine,
                all.iter().skip(u).step_by(3).copied().collect::<Vec<_>>()
            );
        }
        // The counts follow the rate of each stretch (Poisson counts: within 5 sd).
        let count = |a: u64, b: u64| {
            s.intended_between(3, Duration::from_secs(a), Duration::from_secs(b)) as f64
        };
        for (a, b, rate) in [(0, 2, 500.0), (2, 6, 500.0), (6, 10, 2000.0)] {
            let expected = rate * (b - a) as f64;
            let seen = count(a, b);
            assert!(
                (seen - expected).abs() < 5.0 * expected.sqrt(),
                "{seen} arrivals in [{a}s, {b}s), expected {expected}"
            );
        }
        assert!(all.last().unwrap() < &Duration::from_secs(10));
        // Reproducible from the seed; another seed draws other times.
        let again = Schedule::from_scenario(&scenario(load)).unwrap();
        assert_eq!(again.all_times(3), all);
        let text = format!(
            "name: t\nseed: 9\ndataset: {{users: 10, chats: 2, members_per_chat: 2}}\nmix: {{send_message: 1}}\nload:\n{load}"
        );
        let other = Schedule::from_scenario(&Scenario::parse("t.yaml", &text, &[]).unwrap());
        assert_ne!(other.unwrap().all_times(3), all);
    }

    #[test]
    fn closed_model_has_no_schedule() {
        let s = scenario("  model: closed\n  users: 3\n  think_time: 10ms\n  duration: 1s\n");
        assert!(Schedule::from_scenario(&s).is_none());
    }
}
