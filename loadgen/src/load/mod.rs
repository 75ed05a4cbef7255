//! The load itself: from a scenario to calls against the cluster, measured.
//!
//! - [`schedule`]: the open model's intended send times, evenly spaced or Poisson;
//! - [`shape`]: load shaped like chat: the seeded distributions of arrivals, chat
//!   popularity, user activity, message sizes and think time;
//! - [`population`]: the users, chats and members calls draw their arguments from, and
//!   [`dataset`], which creates them before the load;
//! - [`ops`]: the chat operations, one implementation each of one small interface;
//! - [`client`]: gRPC connections and what a failed call counts as;
//! - [`runner`]: the Goose attack (users, pacing) that makes the calls, and [`pacer`], which
//!   sends each call within microseconds of its intended time;
//! - [`meter`] and [`record`]: what the calls measured (per-operation HDR histograms,
//!   corrected and service time, lateness), and [`timeseries`], the per-second clock that
//!   closes intervals;
//! - [`progress`]: the live progress line, apart from the work loop;
//! - [`sessions`]: with authentication on, the users' tokens, put on every call.
//!
//! What a run writes is not decided here: [`crate::results`] owns every file.

mod client;
mod dataset;
mod meter;
mod ops;
mod pacer;
mod population;
mod progress;
mod record;
mod runner;
mod schedule;
pub mod sessions;
mod shape;
mod timeseries;

pub use client::Topology;
pub(crate) use client::{Failure, connect, connect_lazy};
pub(crate) use dataset::create_dataset;
pub use meter::{LATE, Pacing};
pub use population::{ChatInfo, JoinOutcome, Picks, Population};
pub use progress::{Phase, Tick};
pub use record::{Interval, OpSummary, Percentiles, Recorder, RecorderDump};
pub use runner::{RunOutput, RunPlan, Share, run};
pub use schedule::Schedule;
