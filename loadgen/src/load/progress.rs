//! The live progress line: display only, apart from the work loop (as oha keeps its monitor
//! apart from its workers). [`super::timeseries`] hands it one [`Tick`] a second.
//!
//! On a terminal it is an indicatif bar (`measuring [====>    ]  12/30s  1500 ops/s, 0
//! errors, p99 3.1 ms`); without one it prints a plain line every 10 s; with `--no-progress`
//! nothing.

use indicatif::{ProgressBar, ProgressStyle};

/// Where the run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Warmup,
    Measuring,
    /// Past the measured window, waiting for the last calls.
    Finishing,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Warmup => "warm-up",
            Phase::Measuring => "measuring",
            Phase::Finishing => "finishing",
        }
    }
}

/// What one second of the run looked like.
#[derive(Clone, Debug)]
pub struct Tick {
    pub phase: Phase,
    /// Whole seconds since the start.
    pub elapsed: u64,
    /// Calls per second since the last tick.
    pub ops_per_s: f64,
    /// Calls that completed since the last tick, failed ones included.
    pub calls: u64,
    /// Errors since the last tick.
    pub errors: u64,
    /// Sends late so far.
    pub late: u64,
    /// The worst per-operation p99 of the second just closed (measured window only).
    pub p99_ms: Option<f64>,
    /// The p99 of how late the open model's sends that completed since the last tick went
    /// out (warm-up included); `None` for the closed model or a second with none.
    pub lateness_p99_ms: Option<f64>,
}

impl Tick {
    fn message(&self) -> String {
        let mut msg = format!("{:.0} ops/s, {} errors", self.ops_per_s, self.errors);
        if self.late > 0 {
            msg.push_str(&format!(", {} sends late", self.late));
        }
        if let Some(p99) = self.p99_ms {
            msg.push_str(&format!(", p99 {p99:.1} ms"));
        }
        msg
    }
}

pub(crate) struct Progress {
    bar: ProgressBar,
    /// Asked for, but stderr is not a terminal: plain lines instead.
    plain: bool,
    /// The run's length in whole seconds.
    total: u64,
}

impl Progress {
    pub fn new(enabled: bool, total: u64) -> Progress {
        let bar = if enabled {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{prefix:>9} [{bar:25}] {pos:>3}/{len}s  {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        let plain = enabled && bar.is_hidden();
        bar.set_prefix(Phase::Starting.label());
        Progress { bar, plain, total }
    }

    pub fn show(&self, tick: &Tick) {
        let msg = tick.message();
        self.bar.set_prefix(tick.phase.label());
        self.bar.set_position(tick.elapsed);
        self.bar.set_message(msg.clone());
        if self.plain && tick.elapsed.is_multiple_of(10) && tick.elapsed > 0 {
            eprintln!("loadgen: {:>4}/{}s {msg}", tick.elapsed, self.total);
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
