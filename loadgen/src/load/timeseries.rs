//! The per-second clock of a run: closes one interval of the [`Meter`] per second of the
//! measured window (the rows of `timeseries.csv`) and tells the progress line, and a
//! watcher when there is one, how each second went.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};

use super::meter::{Meter, Totals};
use super::progress::{Phase, Progress, Tick};
use super::record::Interval;

/// Ticks from the run's start until `stop`; returns the rows and the wall-clock start of the
/// measured window. Warm-up seconds tick from the start; measured ones on the window's own
/// seconds, so row `n` covers `[n - 1, n)` seconds of the window.
pub(crate) async fn sample(
    meter: Arc<Meter>,
    start: Arc<OnceLock<Instant>>,
    warmup: Duration,
    end: Duration,
    mut stop: watch::Receiver<bool>,
    progress: Progress,
    ticks: Option<mpsc::UnboundedSender<Tick>>,
) -> (Vec<Interval>, SystemTime) {
    // Wait for the users to start.
    while start.get().is_none() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = stop.changed() => return (Vec::new(), SystemTime::now()),
        }
    }
    let start = *start.get().expect("set");
    let measured = start + warmup;
    let wall_measured = SystemTime::now() + measured.saturating_duration_since(Instant::now());
    let total = end.as_secs_f64().ceil() as u64;
    let mut rows = Vec::new();
    let mut second = 0u64;
    let (mut last, mut last_tick) = (Totals::default(), start);
    let mut stopping = false;
    loop {
        let next = if Instant::now() < measured {
            let elapsed = Instant::now().saturating_duration_since(start).as_secs() + 1;
            (start + Duration::from_secs(elapsed)).min(measured)
        } else {
            measured + Duration::from_secs(second + 1)
        };
        let measuring = next > measured;
        if !stopping {
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                _ = stop.changed() => stopping = true,
            }
        }
        let now = Instant::now();
        let totals = meter.totals();
        let span = now
            .saturating_duration_since(last_tick)
            .as_secs_f64()
            .max(1e-3);
        let mut tick = Tick {
            phase: Phase::Warmup,
            elapsed: now.saturating_duration_since(start).as_secs().min(total),
            ops_per_s: (totals.calls - last.calls) as f64 / span,
            calls: totals.calls - last.calls,
            errors: totals.errors - last.errors,
            late: totals.late,
            p99_ms: None,
            lateness_p99_ms: meter.take_second_lateness(),
        };
        (last, last_tick) = (totals, now);
        if measuring || (stopping && now > measured) {
            second += 1;
            let closed = meter.close_interval(second);
            tick.p99_ms = closed.iter().map(|r| r.p99_ms).reduce(f64::max);
            rows.extend(closed);
            tick.phase = if now >= start + end {
                Phase::Finishing
            } else {
                Phase::Measuring
            };
        }
        progress.show(&tick);
        if let Some(ticks) = &ticks {
            let _ = ticks.send(tick.clone());
        }
        if stopping {
            break;
        }
    }
    progress.finish();
    (rows, wall_measured)
}
