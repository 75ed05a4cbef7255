//! Cluster control: everything a run does to the cluster rather than through it.
//!
//! - [`lifecycle`]: start a fresh local cluster (or take a running one), stop it, and the
//!   interrupt (SIGINT, SIGTERM) that stops a run early;
//! - [`poller`]: the one status poller (at most 5 `Admin.Status` calls a second per replica),
//!   which everything below reads;
//! - [`leader`]: wait for a leader, find the one a fault should hit, watch it change;
//! - [`faults`]: kill, restart, pause and partition replicas on the scenario's schedule, and
//!   each fault's unavailability from the history;
//! - [`final_state`]: after the load, each replica's state digest and every chat read whole;
//! - [`security`]: a run's certificates, the replicas' security flags, the sessions.
//!
//! Who leads is always the cluster crate's answer ([`telegraft::admin`]); this module never
//! writes a file (the replicas' logs are handed to [`crate::results`]).

mod docker;
mod faults;
mod final_state;
mod leader;
mod lifecycle;
mod poller;
mod security;

pub use docker::{DockerSpec, IMAGE};
pub use faults::FaultRecord;
pub(crate) use faults::{inject, measure_unavailability};
pub(crate) use final_state::read_final;
pub(crate) use leader::{LeaderSeen, LeaderWatch, wait_for_all, wait_for_leader};
pub(crate) use lifecycle::{Interrupt, Replicas, find_etcd, find_telegraft};
pub(crate) use poller::StatusPoller;
pub(crate) use security::{RunSecurity, end_sessions};
