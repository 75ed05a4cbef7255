//! A synchronous, deterministic Raft core: no I/O, no clock, no threads.
//!
//! The core is a state machine. Its driver (the core actor in production, the simulator and
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
//!   The hard state may travel through the storage writer's queue, as long as the driver
//!   waits for it before going on.
//! - `Output::Append { id, entries }` is asynchronous: the driver may act on later outputs at
//!   once. Appends are numbered ([`AppendId`]) and must complete in `id` order (one queue),
//!   and completion is reported with [`Node::persisted`]`(id)`, which covers every earlier
//!   append too. A write that fails must
//!   stop the process: the core cannot be told "not durable". An index counts as durable
//!   only when no queued write will still overwrite it, so a truncated-then-re-added entry is
//!   never claimed early. The core never emits a message that depends on an unfinished write:
//!   - a follower acknowledges entries as `durable` only once they are persisted, so
//!     `AppendResponse` may be sent immediately (the leader counts only `durable`);
//!   - the leader sends entries to followers before its own write completes (thesis 10.2.1:
//!     disk and network in parallel) but counts itself in the quorum only once persisted.
//! - `Output::Restore` must be ordered after every earlier `Append` (the same queue, or those
//!   writes cancelled), must replace the snapshot and the whole log atomically across a
//!   crash, and must come after any `Apply` work already queued. Reports for writes issued
//!   before it are harmless.
//! - `Output::Apply` batches are in log order, and only contain entries that are committed
//!   *and* durable locally. `Output::ReadReady { index }` comes after the `Apply` covering
//!   `index`: a driver that applies in order and serves the read after those batches (for
//!   example by queueing it behind them on the apply thread) is linearizable.
//! - [`Restored::applied`] tells the core what a durable state machine already holds; the
//!   log given with it must contain those entries (or a snapshot covering them).
//! - A proposal's outcome is known when an entry is applied at its index: with its term it
//!   committed, with another term it did not. A snapshot that jumps over the index, a crash,
//!   or a leadership change leaves it unknown; the driver must not report those as failures.
//! - `Output::ReadAborted` may not know the new leader (`leader: None`).

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
//! - Follower reads (thesis 6.4.1): a follower serves a read once (a) the leader of its
//!   term answered a `ReadIndex` request sent *after* the read arrived, with a read index
//!   fixed and confirmed as above, and (b) the follower has applied through that index. A
//!   follower that leaves its term, or sees another leader, aborts the reads it holds. The
//!   argument is in ARCHITECTURE.md ("Follower reads").
//!
//! # Performance shape
//!
//! - Batching: proposals since the last `take_outputs` become one `Output::Append` (one
//!   storage write) and at most one `Append` message per follower window.
//! - Pipelining: per-follower progress with up to `max_inflight` appends in flight
//!   (`progress.rs`), so replication is not one round trip per batch.
//! - Reads: one confirmation round in flight at a time; reads arriving meanwhile share the
//!   next round, so read throughput does not cost a round trip per read. A follower has one
//!   `ReadIndex` request in flight at a time, shared the same way, and serves its reads from
//!   its own state machine: the leader handles one small message per batch of a follower's
//!   reads instead of each read.
//! - Fast backtracking: rejections carry the conflicting term and its first index.
//!
//! # Extensions beyond the paper
//!
//! Pre-vote and check-quorum (thesis 9.6, 6.2): a node that lost contact cannot disrupt a
//! healthy leader when it returns, and a leader that lost its quorum steps down.

mod log;
mod message;
mod node;
mod progress;

pub use log::Log;
pub use message::*;
pub use node::{Candidate, Error, Follower, Leader, Node, Options, PlantedBugs, RawNode, Restored};
