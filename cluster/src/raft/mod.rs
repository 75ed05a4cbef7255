//! A synchronous, deterministic Raft core: no I/O, no clock, no threads.
//!
//! The core is a state machine. Its driver (the node actor in production, the simulator and
//! golden scripts in tests) feeds it inputs and acts on its outputs:
//!
//! | input                          | method                     |
//! |--------------------------------|----------------------------|
//! | a peer message                 | [`Node::step`]             |
//! | a client proposal              | [`Node::propose`]          |
//! | a linearizable read request    | [`Node::read`]             |
//! | a clock tick                   | [`Node::tick`]             |
//! | "storage persisted up to i"    | [`Node::persisted`]        |
//! | "snapshot taken at index i"    | [`Node::compact`]          |
//!
//! After one or more inputs the driver calls [`Node::take_outputs`] and acts on each
//! [`Output`] in order: messages to send, term/vote and entries to persist, a snapshot to
//! install, committed entries to apply, reads that are now safe to serve. Time is ticks and
//! randomness (election timeouts) comes from the RNG the driver injects, so the same inputs
//! always give the same outputs: every behaviour can be replayed in a test.
//!
//! # Ordering rules (the driver's contract)
//!
//! - `Output::HardState` and `Output::Restore` are synchronous: they must be durable before
//!   the driver acts on any later output. This is what makes "persist term and vote before
//!   granting a vote" hold: the `VoteResponse` comes after the `HardState` in the outputs.
//! - `Output::Append` is asynchronous: the driver may send the outputs that follow it at once
//!   and report completion later with [`Node::persisted`]. Writes complete in the order issued.
//!   The core never emits a message that depends on an unfinished write:
//!   - a follower acknowledges entries as `durable` only once they are persisted, so
//!     `AppendResponse` may be sent immediately (the leader counts only `durable`);
//!   - the leader sends entries to followers before its own write completes (thesis 10.2.1:
//!     disk and network in parallel) but counts itself in the quorum only once persisted.
//! - `Output::Apply` batches are in log order, and only contain entries that are committed
//!   *and* durable locally. `Output::ReadReady { index }` comes after the `Apply` covering
//!   `index`: a driver that applies in order and then serves the read is linearizable.
//!
//! # What the core guarantees (checked by the simulator in [`crate::sim`])
//!
//! - Election safety: at most one leader per term (one durable vote per term per node).
//! - Log matching: an (index, term) pair names one entry, and logs that share it share the
//!   whole prefix before it (consistency check on every append, paper 5.3).
//! - Leader completeness: an entry committed in term T is in the log of every leader of a
//!   later term (up-to-date check on votes; commit only by counting current-term entries,
//!   paper 5.4.2; a no-op is appended on election so earlier entries commit promptly).
//! - State machine safety: no two nodes apply different entries at one index.
//! - Linearizable reads (ReadIndex, thesis 6.4): a read is served once (a) a quorum has
//!   confirmed this node's leadership *after* the read arrived and (b) the state machine
//!   has applied at least up to the commit index at arrival (and this term's no-op).
//!
//! # Performance shape
//!
//! - Batching: proposals since the last `take_outputs` become one `Output::Append` (one
//!   storage write) and at most one `Append` message per follower window.
//! - Pipelining: per-follower progress with up to `max_inflight` appends in flight
//!   ([`progress`]), so replication is not one round trip per batch.
//! - Reads: one confirmation round in flight at a time; reads arriving meanwhile share the
//!   next round, so read throughput does not cost a round trip per read.
//! - Fast backtracking: rejections carry the conflicting term and its first index.
//!
//! # Extensions beyond the paper
//!
//! Pre-vote and check-quorum (thesis 9.6, 6.2): a node that lost contact cannot disrupt a
//! healthy leader when it returns, and a leader that lost its quorum steps down.

pub mod log;
pub mod message;
pub mod node;
pub mod progress;

pub use message::*;
pub use node::{Error, Node, Options, PlantedBugs, Restored};
