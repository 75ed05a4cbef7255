//! What the load measures while it runs, shared by every generator user: calls and errors,
//! per-operation latencies ([`Recorder`]), and how late the open model's sends went out.
//!
//! Calls intended (open model) or started (closed model) during the warm-up, or after the
//! measured window, only count as calls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::client::Failure;
use super::record::{Interval, Percentiles, Recorder};
use crate::scenario::Op;

/// A send this much later than its intended time counts as late.
pub const LATE: Duration = Duration::from_millis(10);

/// How well the generator kept the open model's schedule, over the measured window.
#[derive(Clone, Debug, PartialEq)]
pub struct Pacing {
    /// Sends the schedule intended in the measured window.
    pub intended: u64,
    /// Of those, how many went out before the run ended.
    pub sent: u64,
    /// How late they went out.
    pub lateness_ms: Percentiles,
    /// How many went out more than [`LATE`] after their intended time.
    pub late: u64,
}

impl Pacing {
    /// A sentence when the generator did not keep the schedule, `None` when it did.
    pub fn warning(&self) -> Option<String> {
        let unsent = self.intended.saturating_sub(self.sent);
        let late_share = self.late as f64 / self.sent.max(1) as f64;
        if unsent * 200 <= self.intended && late_share <= 0.01 {
            return None;
        }
        Some(format!(
            "the generator did not keep the schedule: {late} of {sent} sends ({pct:.1}%) went out \
             more than {late_ms} ms late (p99 {p99:.1} ms, max {max:.1} ms) and {unsent} of \
             {intended} intended sends never went out. Latencies still count from the intended \
             times; if the cluster is not saturated, raise load.users.",
            late = self.late,
            sent = self.sent,
            pct = late_share * 100.0,
            late_ms = LATE.as_millis(),
            p99 = self.lateness_ms.p99,
            max = self.lateness_ms.max,
            intended = self.intended,
        ))
    }
}

/// The running totals the progress line shows.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Totals {
    /// Calls made, warm-up included.
    pub calls: u64,
    pub errors: u64,
    /// Sends in the measured window that went out late.
    pub late: u64,
}

pub(crate) struct Meter {
    /// The run's zero (set when every user has started).
    start: Arc<OnceLock<Instant>>,
    /// The measured window, from the start.
    warmup: Duration,
    end: Duration,
    /// Whether sends have intended times (the open model), so lateness means something.
    paced: bool,
    recorder: Mutex<Recorder>,
    lateness: Mutex<Histogram<u64>>,
    /// Lateness since the last [`Meter::take_second_lateness`], warm-up included.
    second_lateness: Mutex<Histogram<u64>>,
    late: AtomicU64,
    sent_in_window: AtomicU64,
    calls: AtomicU64,
    errors: AtomicU64,
}

impl Meter {
    pub fn new(
        start: Arc<OnceLock<Instant>>,
        warmup: Duration,
        end: Duration,
        paced: bool,
    ) -> anyhow::Result<Meter> {
        Ok(Meter {
            start,
            warmup,
            end,
            paced,
            recorder: Mutex::new(Recorder::new()),
            lateness: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3)?),
            second_lateness: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 2)?),
            late: AtomicU64::new(0),
            sent_in_window: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    /// Records one call that completed: intended (open) or started (closed) at `intended`,
    /// sent at `sent`, done at `done`, failed with `failure` if it did. `held` is when the
    /// user's back-off after an earlier failure ended, if it held this send back: how late the
    /// generator was counts from the later of the two, since holding back is the client's
    /// policy and not the generator falling behind (the latency still counts from the
    /// intended time).
    pub fn record(
        &self,
        op: Op,
        intended: Instant,
        held: Option<Instant>,
        sent: Instant,
        done: Instant,
        failure: Option<&Failure>,
    ) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if failure.is_some() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let start = *self.start.get().expect("the run has started");
        let at = intended.saturating_duration_since(start);
        let due = held.map_or(intended, |h| h.max(intended));
        let late = sent.saturating_duration_since(due);
        if self.paced {
            self.second_lateness
                .lock()
                .unwrap()
                .saturating_record((late.as_micros() as u64).max(1));
        }
        if at < self.warmup || at >= self.end {
            return;
        }
        if self.paced {
            self.sent_in_window.fetch_add(1, Ordering::Relaxed);
            if late > LATE {
                self.late.fetch_add(1, Ordering::Relaxed);
            }
            self.lateness
                .lock()
                .unwrap()
                .saturating_record((late.as_micros() as u64).max(1));
        }
        let mut r = self.recorder.lock().unwrap();
        match failure {
            None => r.ok(
                op,
                done.saturating_duration_since(intended),
                done.saturating_duration_since(sent),
            ),
            Some(f) => r.error(op, &f.name(), done.saturating_duration_since(intended)),
        }
    }

    pub fn totals(&self) -> Totals {
        Totals {
            calls: self.calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            late: self.late.load(Ordering::Relaxed),
        }
    }

    /// The p99 of the lateness recorded since the last call (ms), leaving it empty; `None`
    /// when nothing was recorded.
    pub fn take_second_lateness(&self) -> Option<f64> {
        let mut h = self.second_lateness.lock().unwrap();
        let p99 = (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1000.0);
        h.reset();
        p99
    }

    /// Closes the interval ending at `second` of the measured window (see
    /// [`Recorder::close_interval`]).
    pub fn close_interval(&self, second: u64) -> Vec<Interval> {
        self.recorder.lock().unwrap().close_interval(second)
    }

    /// How the schedule was kept, given how many sends it intended in the window.
    pub fn pacing(&self, intended: u64) -> Pacing {
        Pacing {
            intended,
            sent: self.sent_in_window.load(Ordering::Relaxed),
            lateness_ms: Percentiles::of(&self.lateness.lock().unwrap()),
            late: self.late.load(Ordering::Relaxed),
        }
    }

    /// The latencies recorded, leaving an empty recorder behind.
    pub fn take_recorder(&self) -> Recorder {
        std::mem::take(&mut *self.recorder.lock().unwrap())
    }
}
