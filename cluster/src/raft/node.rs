//! The Raft node: roles as types, driven by [`Node::tick`], [`Node::step`] and friends.
//!
//! `RawNode<R>` holds what every role shares (term, vote, log, outputs); the role type `R`
//! holds what only that role may have: a follower's leader and election timer, a candidate's
//! votes, a leader's per-follower progress and pending reads. `Node` is the enum over the
//! three, and every transition consumes one `RawNode` and builds another, so leader state
//! cannot outlive leadership.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::{Rng, RngCore};

use super::log::Log;
use super::message::*;
use super::progress::{Progress, ProgressState};

/// Tunables. Time is counted in ticks; the core actor ticks every 10 ms, so the defaults
/// give a 50 ms heartbeat and a 150-300 ms randomized election timeout (paper 9.3).
#[derive(Clone, Debug)]
pub struct Options {
    /// Ticks between leader heartbeats. Must be well below `election_ticks_min`.
    pub heartbeat_ticks: u64,
    /// Election timeouts are drawn uniformly from `election_ticks_min..election_ticks_max`.
    pub election_ticks_min: u64,
    pub election_ticks_max: u64,
    /// Run a pre-vote round before a real election (thesis 9.6), so a node that was cut off
    /// cannot depose a healthy leader by coming back with a higher term.
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a quorum for `election_ticks_max`
    /// (thesis 6.2), so clients of a partitioned leader are told to go elsewhere.
    pub check_quorum: bool,
    /// Pipelined appends in flight per follower before the leader waits for acknowledgements.
    pub max_inflight: usize,
    /// At most this many entries, and roughly this many bytes, in one append.
    pub max_append_entries: usize,
    pub max_append_bytes: usize,
    /// Pipelined appends in flight without any durable progress for this long mean they
    /// were lost: the leader falls back to probing. Long enough for a slow fsync.
    pub stall_ticks: u64,
    /// A snapshot sent without an answer for this long is sent again.
    pub snapshot_retry_ticks: u64,
    /// Followers serve linearizable reads themselves (thesis 6.4.1): they ask the leader for
    /// a read index, one request for every read that arrived meanwhile, and serve once they
    /// have applied through it. Off, a follower refuses reads with `NotLeader` and its
    /// driver forwards them to the leader.
    pub follower_reads: bool,
    /// A follower's read-index request unanswered for this long is given up: its reads are
    /// aborted (`Output::ReadAborted` naming the leader), and the driver sends them on.
    pub read_request_ticks: u64,
    /// Deliberate bugs, for proving that the simulator catches them. All off in production.
    pub planted_bugs: PlantedBugs,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            heartbeat_ticks: 5,
            election_ticks_min: 15,
            election_ticks_max: 30,
            pre_vote: true,
            check_quorum: true,
            max_inflight: 64,
            max_append_entries: 512,
            max_append_bytes: 1 << 20,
            stall_ticks: 30,
            snapshot_retry_ticks: 300,
            follower_reads: true,
            read_request_ticks: 15,
            planted_bugs: PlantedBugs::default(),
        }
    }
}

/// Known-wrong behaviours that can be switched on to test the testers. Each one breaks a
/// rule the module docs of [`crate::raft`] state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// Commit an entry of an earlier term by counting its replicas (paper figure 8).
    pub commit_old_term: bool,
    /// Grant a vote even when this term's vote already went to someone else.
    pub double_vote: bool,
    /// Serve reads at once, without confirming leadership with a quorum.
    pub read_without_quorum: bool,
    /// Acknowledge appended entries to the leader before they are durable.
    pub ack_unpersisted: bool,
    /// Count any append response as confirming the current read round, even one sent
    /// before the round started (ReadIndex without the round check).
    pub read_any_response: bool,
    /// A follower serves a read as soon as the leader's read index arrives, at whatever it
    /// has applied, instead of waiting until it has applied through the read index.
    pub follower_read_unapplied: bool,
}

/// What a node restarts from: everything its storage holds.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    pub hard_state: HardState,
    pub snapshot: Snapshot,
    /// Durable entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
    /// The index the state machine has already applied (at least the snapshot's).
    pub applied: Index,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("not the leader (leader is {})", leader.map_or("unknown".to_string(), |l| format!("node {l}")))]
    NotLeader { leader: Option<NodeId> },
    #[error("cannot compact the log to index {index}: {reason}")]
    Compaction { index: Index, reason: &'static str },
}

/// A Raft node in one of its three roles.
pub enum Node {
    Follower(RawNode<Follower>),
    Candidate(RawNode<Candidate>),
    Leader(RawNode<Leader>),
}

/// The state all roles share.
pub struct RawNode<R> {
    id: NodeId,
    /// Every other member.
    peers: Vec<NodeId>,
    term: Term,
    vote: Option<NodeId>,
    log: Log,
    opts: Options,
    rng: Box<dyn RngCore + Send>,
    out: Vec<Output>,
    /// The latest read-index request this node sent, and where this incarnation's
    /// numbering started (drawn from the RNG before the first request; 0 until then):
    /// answers outside `first_read_request + 1 ..= read_request` were never asked for.
    read_request: ReadRequest,
    first_read_request: ReadRequest,
    role: R,
}

pub struct Follower {
    leader: Option<NodeId>,
    /// The highest index known to match the current leader's log.
    leader_match: Index,
    /// The highest durable index reported to the leader.
    acked: Index,
    /// The leader's latest read round, echoed in acknowledgements sent on persistence.
    leader_read_seq: ReadSeq,
    /// Ticks since we heard from the leader or granted a vote.
    elapsed: u64,
    timeout: u64,
    /// Linearizable reads served here, with a read index from the leader.
    reads: FollowerReads,
}

/// A follower's linearizable reads (thesis 6.4.1). One read-index request is in flight at
/// a time; reads arriving meanwhile share the next one, as the leader's rounds are shared.
#[derive(Default)]
struct FollowerReads {
    /// The request in flight and the ticks it has waited.
    in_flight: Option<(ReadRequest, u64)>,
    /// Reads that arrived before the in-flight request was sent: its answer covers them.
    asked: Vec<ReadId>,
    /// Reads that arrived after: they wait for the next request.
    unasked: Vec<ReadId>,
    /// Reads with their read index, waiting for the state machine to reach it.
    ready: VecDeque<(ReadId, Index)>,
}

pub struct Candidate {
    /// In the pre-vote phase the term is not yet incremented.
    pre_vote: bool,
    votes: BTreeSet<NodeId>,
    elapsed: u64,
    timeout: u64,
}

pub struct Leader {
    progress: BTreeMap<NodeId, Progress>,
    /// The index of this term's no-op: reads must wait until it is applied.
    term_start: Index,
    heartbeat_elapsed: u64,
    check_quorum_elapsed: u64,
    /// The latest read round started. A round is confirmed when a quorum echoed it.
    read_seq: ReadSeq,
    /// Reads arrived while a round was in flight: start another when it confirms.
    next_round_needed: bool,
    /// Reads waiting for their round to be confirmed: (whose, read index, round).
    waiting_reads: VecDeque<(ReadFrom, Index, ReadSeq)>,
    /// Confirmed reads waiting for the state machine to reach their index.
    ready_reads: VecDeque<(ReadId, Index)>,
}

/// Whose read a leader confirms: its own driver's, or a follower's read-index request.
#[derive(Clone, Copy, Debug)]
enum ReadFrom {
    Local(ReadId),
    Peer(NodeId, ReadRequest),
}

/// Dispatches to the `RawNode` inside whatever role the node is in.
macro_rules! each_role {
    ($node:expr, $n:ident => $body:expr) => {
        match $node {
            Node::Follower($n) => $body,
            Node::Candidate($n) => $body,
            Node::Leader($n) => $body,
        }
    };
}

impl Node {
    /// Starts (or restarts) a node as a follower with no known leader. `members` lists every
    /// node of the cluster, this one included.
    pub fn new(
        id: NodeId,
        members: &[NodeId],
        restored: Restored,
        opts: Options,
        rng: Box<dyn RngCore + Send>,
    ) -> Node {
        assert!(
            id != 0 && members.contains(&id),
            "node {id} must be a member"
        );
        assert!(opts.heartbeat_ticks > 0 && opts.election_ticks_min > opts.heartbeat_ticks);
        assert!(opts.election_ticks_max > opts.election_ticks_min && opts.max_inflight > 0);
        let mut peers: Vec<NodeId> = members.iter().copied().filter(|&m| m != id).collect();
        peers.sort_unstable();
        peers.dedup();
        let log = Log::restore(restored.snapshot, restored.entries, restored.applied);
        let mut raw = RawNode {
            id,
            peers,
            term: restored.hard_state.term,
            vote: restored.hard_state.vote,
            log,
            opts,
            rng,
            out: Vec::new(),
            read_request: 0,
            first_read_request: 0,
            role: (),
        };
        let timeout = raw.random_timeout();
        Node::Follower(raw.into_role(Follower::new(None, timeout)))
    }

    pub fn id(&self) -> NodeId {
        each_role!(self, n => n.id)
    }

    pub fn term(&self) -> Term {
        each_role!(self, n => n.term)
    }

    pub fn status(&self) -> Status {
        let (role, leader) = match self {
            Node::Follower(n) => (Role::Follower, n.role.leader),
            Node::Candidate(_) => (Role::Candidate, None),
            Node::Leader(n) => (Role::Leader, Some(n.id)),
        };
        each_role!(self, n => Status {
            id: n.id,
            role,
            term: n.term,
            vote: n.vote,
            leader,
            commit_index: n.log.commit(),
            applied_index: n.log.applied(),
            persisted_index: n.log.persisted(),
            last_index: n.log.last_index(),
            snapshot_index: n.log.snapshot().index,
        })
    }

    /// The log, for inspection by tests and the simulator.
    pub fn log(&self) -> &Log {
        each_role!(self, n => &n.log)
    }

    /// Advances time by one tick.
    pub fn tick(self) -> Node {
        match self {
            Node::Follower(n) => n.tick(),
            Node::Candidate(n) => n.tick(),
            Node::Leader(n) => n.tick(),
        }
    }

    /// Starts an election now, as if the election timer had fired.
    pub fn campaign(self) -> Node {
        match self {
            Node::Follower(n) => n.leave().campaign(true),
            Node::Candidate(n) => n.into_role(()).campaign(true),
            leader @ Node::Leader(_) => leader,
        }
    }

    /// Whether a correct peer could have sent `env` to this node, now. A message that fails
    /// is refused whole by [`Node::step`]: nothing in it is acted on, not even its term.
    ///
    /// On top of [`Envelope::check`] (every field in range and consistent):
    /// - it is addressed to this node, from another member;
    /// - its term is at most [`MAX_TERM_JUMP`] ahead of ours, and a snapshot at most
    ///   [`MAX_SNAPSHOT_JUMP`] past our last index;
    /// - to a leader, an `AppendResponse` of its own term echoes a read round the leader
    ///   started, and acknowledges or rejects only positions the leader sent that follower
    ///   this term (a follower's `matched` comes from the leader's own appends);
    /// - a `ReadIndexResponse` answers a read-index request this node sent.
    ///
    /// Refusing what no correct peer sends is what keeps the core's invariants, and so its
    /// `expect`s, out of a remote sender's reach. A peer that sends well-formed lies
    /// (Byzantine) is outside Raft's fault model: the Raft port must be reachable by members
    /// only.
    pub fn validate(&self, env: &Envelope) -> Result<(), InvalidMessage> {
        let kind = env.message.kind();
        let fail = |reason| Err(InvalidMessage { kind, reason });
        let (id, peers) = each_role!(self, n => (n.id, &n.peers));
        if env.to != id {
            return fail("addressed to another node");
        }
        if !peers.contains(&env.from) {
            return fail("from a node that is not a peer");
        }
        env.check()?;
        if env.term > self.term().saturating_add(MAX_TERM_JUMP) {
            return fail("term too far ahead");
        }
        if let Message::InstallSnapshot { snapshot, .. } = &env.message
            && snapshot.index > self.log().last_index().saturating_add(MAX_SNAPSHOT_JUMP)
        {
            return fail("snapshot too far ahead");
        }
        if let (Node::Leader(n), Message::AppendResponse { read_seq, outcome }) =
            (self, &env.message)
            && env.term == n.term
        {
            let Some(pr) = n.role.progress.get(&env.from) else {
                return fail("from a node that is not a peer");
            };
            if *read_seq > n.role.read_seq {
                return fail("echoes a read round not started");
            }
            let position = match outcome {
                AppendOutcome::Accepted { matched, .. } => *matched,
                AppendOutcome::Rejected { prev_index, .. } => *prev_index,
            };
            if position > pr.sent {
                return fail("answers for entries never sent");
            }
        }
        if let Message::ReadIndexResponse { request, .. } = env.message {
            let (first, last) = each_role!(self, n => (n.first_read_request, n.read_request));
            if request <= first || request > last {
                return fail("answers a read request never sent");
            }
        }
        Ok(())
    }

    /// Handles a message from a peer. Term rules are applied here, once, for every role.
    /// A message [`Node::validate`] refuses is dropped.
    pub fn step(self, env: Envelope) -> Node {
        if self.validate(&env).is_err() {
            return self;
        }
        let term = self.term();
        let mut node = self;
        if env.term > term {
            match env.message {
                // A pre-vote carries the term the sender would campaign in; a granted
                // pre-vote response echoes it. Neither means a newer term exists.
                Message::PreVote { .. } | Message::PreVoteResponse { granted: true } => {}
                _ => {
                    let leader = matches!(
                        env.message,
                        Message::Append { .. } | Message::InstallSnapshot { .. }
                    )
                    .then_some(env.from);
                    node = node.into_follower(env.term, leader);
                }
            }
        } else if env.term < term {
            // A stale sender. Answer requests with our term so that it catches up (a stale
            // leader steps down); drop stale responses.
            each_role!(&mut node, n => n.reply_stale(&env));
            return node;
        }
        match node {
            Node::Follower(n) => n.step(env),
            Node::Candidate(n) => n.step(env),
            Node::Leader(n) => n.step(env),
        }
    }

    /// Proposes a command. Returns the index the entry will have if it commits; whether it
    /// does is known when an entry is applied at that index with this proposal's term.
    pub fn propose(&mut self, command: Vec<u8>) -> Result<(Index, Term), Error> {
        match self {
            Node::Leader(n) => {
                let index = n.log.push(n.term, Some(command));
                Ok((index, n.term))
            }
            _ => Err(Error::NotLeader {
                leader: self.status().leader,
            }),
        }
    }

    /// Registers a linearizable read (ReadIndex, thesis 6.4). An `Output::ReadReady` says
    /// when it may be served, or `Output::ReadAborted` that it cannot be served here.
    ///
    /// A leader confirms its leadership with a quorum; a follower that knows its leader
    /// asks it for a read index (unless `Options::follower_reads` is off). Without a known
    /// leader, or as a candidate, the read is refused with `NotLeader`.
    pub fn read(&mut self, id: ReadId) -> Result<(), Error> {
        match self {
            Node::Leader(n) => {
                n.read(ReadFrom::Local(id));
                Ok(())
            }
            Node::Follower(n) if n.opts.follower_reads && n.role.leader.is_some() => {
                n.read(id);
                Ok(())
            }
            _ => Err(Error::NotLeader {
                leader: self.status().leader,
            }),
        }
    }

    /// Storage reports every write up to `id` (from `Output::Append`) complete and durable.
    pub fn persisted(&mut self, id: AppendId) {
        match self {
            Node::Follower(n) => {
                if n.log.persisted_to(id) {
                    n.ack_durable();
                }
            }
            Node::Candidate(n) => {
                n.log.persisted_to(id);
            }
            Node::Leader(n) => {
                if n.log.persisted_to(id) {
                    n.maybe_commit();
                }
            }
        }
    }

    /// The driver took a snapshot of the state machine at `index` (at most the applied index):
    /// entries up to it are dropped, and followers that need them get the snapshot instead.
    pub fn compact(&mut self, index: Index, data: Vec<u8>) -> Result<(), Error> {
        each_role!(self, n => {
            if index <= n.log.snapshot().index {
                return Err(Error::Compaction { index, reason: "already compacted" });
            }
            if index > n.log.applied() {
                return Err(Error::Compaction { index, reason: "not applied yet" });
            }
            n.log.compact(index, data);
            Ok(())
        })
    }

    /// Drains the outputs produced since the last call, in the order the driver must act on
    /// them. Proposals and appends received since the last call are batched here: one
    /// storage write and at most one append per follower window.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        each_role!(self, n => {
            if let Some((id, entries)) = n.log.take_unissued() {
                n.out.push(Output::Append { id, entries });
            }
        });
        if let Node::Leader(n) = self {
            n.send_appends();
        }
        each_role!(self, n => {
            let entries = n.log.take_unapplied(usize::MAX);
            if !entries.is_empty() {
                n.out.push(Output::Apply(entries));
            }
        });
        match self {
            Node::Leader(n) => n.release_ready_reads(),
            Node::Follower(n) => n.release_ready_reads(),
            Node::Candidate(_) => {}
        }
        each_role!(self, n => std::mem::take(&mut n.out))
    }

    fn into_follower(self, term: Term, leader: Option<NodeId>) -> Node {
        match self {
            Node::Follower(n) => Node::Follower(n.leave().become_follower(term, leader)),
            Node::Candidate(n) => Node::Follower(n.into_role(()).become_follower(term, leader)),
            Node::Leader(n) => Node::Follower(n.step_down().become_follower(term, leader)),
        }
    }
}

impl<R> RawNode<R> {
    fn into_role<S>(self, role: S) -> RawNode<S> {
        RawNode {
            id: self.id,
            peers: self.peers,
            term: self.term,
            vote: self.vote,
            log: self.log,
            opts: self.opts,
            rng: self.rng,
            out: self.out,
            read_request: self.read_request,
            first_read_request: self.first_read_request,
            role,
        }
    }

    fn quorum(&self) -> usize {
        let size = self.peers.len() + 1;
        size / 2 + 1
    }

    fn random_timeout(&mut self) -> u64 {
        let (min, max) = (self.opts.election_ticks_min, self.opts.election_ticks_max);
        self.rng.random_range(min..max)
    }

    fn send(&mut self, to: NodeId, message: Message) {
        let term = self.term;
        self.send_with_term(to, term, message);
    }

    fn send_with_term(&mut self, to: NodeId, term: Term, message: Message) {
        self.out.push(Output::Send(Envelope {
            from: self.id,
            to,
            term,
            message,
        }));
    }

    fn set_hard_state(&mut self, term: Term, vote: Option<NodeId>) {
        if (term, vote) != (self.term, self.vote) {
            self.term = term;
            self.vote = vote;
            // A term change followed at once by a vote is one write, not two.
            if let Some(Output::HardState(_)) = self.out.last() {
                self.out.pop();
            }
            self.out.push(Output::HardState(HardState { term, vote }));
        }
    }

    fn reply_stale(&mut self, env: &Envelope) {
        let reply = match env.message {
            Message::Append { .. } | Message::InstallSnapshot { .. } => Message::AppendResponse {
                read_seq: 0,
                outcome: AppendOutcome::Rejected {
                    prev_index: 0,
                    hint_index: 0,
                    hint_term: None,
                },
            },
            Message::PreVote { .. } => Message::PreVoteResponse { granted: false },
            Message::Vote { .. } => Message::VoteResponse { granted: false },
            _ => return,
        };
        self.send(env.from, reply);
    }

    /// Pre-vote (thesis 9.6): grant if the sender's log is up to date and we have no live
    /// leader. Changes nothing here.
    fn handle_pre_vote(&mut self, env: &Envelope, leader_alive: bool) {
        let Message::PreVote {
            last_index,
            last_term,
        } = env.message
        else {
            unreachable!()
        };
        let granted =
            env.term > self.term && !leader_alive && self.log.is_up_to_date(last_index, last_term);
        let term = if granted { env.term } else { self.term };
        self.send_with_term(env.from, term, Message::PreVoteResponse { granted });
    }

    /// Vote (paper 5.2, 5.4.1): at most one vote per term, only for an up-to-date log. The
    /// vote is persisted (the `HardState` output) before the response is emitted.
    fn handle_vote(&mut self, env: &Envelope) -> bool {
        let Message::Vote {
            last_index,
            last_term,
        } = env.message
        else {
            unreachable!()
        };
        let free = self.vote.is_none() || self.vote == Some(env.from);
        let granted = (free || self.opts.planted_bugs.double_vote)
            && self.log.is_up_to_date(last_index, last_term);
        if granted {
            self.set_hard_state(self.term, Some(env.from));
        }
        self.send(env.from, Message::VoteResponse { granted });
        granted
    }
}

impl RawNode<()> {
    fn become_follower(mut self, term: Term, leader: Option<NodeId>) -> RawNode<Follower> {
        if term > self.term {
            self.set_hard_state(term, None);
        }
        let timeout = self.random_timeout();
        self.into_role(Follower::new(leader, timeout))
    }

    /// Starts a (pre-)election. A single-node cluster wins at once.
    fn campaign(mut self, pre_vote: bool) -> Node {
        let pre_vote = pre_vote && self.opts.pre_vote;
        let timeout = self.random_timeout();
        let term = if pre_vote {
            self.term + 1
        } else {
            self.set_hard_state(self.term + 1, Some(self.id));
            self.term
        };
        let votes = BTreeSet::from([self.id]);
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.peers.clone() {
            let message = if pre_vote {
                Message::PreVote {
                    last_index,
                    last_term,
                }
            } else {
                Message::Vote {
                    last_index,
                    last_term,
                }
            };
            self.send_with_term(peer, term, message);
        }
        let node = self.into_role(Candidate {
            pre_vote,
            votes,
            elapsed: 0,
            timeout,
        });
        node.maybe_win()
    }
}

impl Follower {
    fn new(leader: Option<NodeId>, timeout: u64) -> Follower {
        Follower {
            leader,
            leader_match: 0,
            acked: 0,
            leader_read_seq: 0,
            elapsed: 0,
            timeout,
            reads: FollowerReads::default(),
        }
    }
}

impl RawNode<Follower> {
    fn tick(mut self) -> Node {
        self.role.elapsed += 1;
        if self.role.elapsed >= self.role.timeout {
            return self.leave().campaign(true);
        }
        if let Some((_, waited)) = &mut self.role.reads.in_flight {
            *waited += 1;
            if *waited >= self.opts.read_request_ticks {
                // Lost, or the leader cannot confirm its leadership: give these reads back
                // to the driver (it sends them on to the leader), and ask again for the rest.
                self.role.reads.in_flight = None;
                let leader = self.role.leader;
                for id in std::mem::take(&mut self.role.reads.asked) {
                    self.out.push(Output::ReadAborted { id, leader });
                }
                self.request_read_index();
            }
        }
        Node::Follower(self)
    }

    /// A follower read (thesis 6.4.1). Only called with a known leader.
    fn read(&mut self, id: ReadId) {
        self.role.reads.unasked.push(id);
        if self.role.reads.in_flight.is_none() {
            self.request_read_index();
        }
    }

    /// Asks the leader for a read index for every read not yet asked for.
    fn request_read_index(&mut self) {
        let Some(leader) = self.role.leader else {
            return;
        };
        if self.role.reads.unasked.is_empty() {
            return;
        }
        if self.first_read_request == 0 {
            // Any start far from the end of the range will do: distinct incarnations must
            // not reuse request numbers (see `ReadRequest`). Drawn lazily, so a node that
            // never reads here takes nothing from the RNG its elections use.
            self.first_read_request = self.rng.random_range(1..1 << 62);
            self.read_request = self.first_read_request;
        }
        self.read_request += 1;
        let request = self.read_request;
        self.role.reads.in_flight = Some((request, 0));
        let unasked = std::mem::take(&mut self.role.reads.unasked);
        self.role.reads.asked.extend(unasked);
        self.send(leader, Message::ReadIndex { request });
    }

    /// The leader's answer: the reads it covers may be served once applied through `index`.
    fn read_index_received(&mut self, from: NodeId, request: ReadRequest, index: Index) {
        let answers = self.role.leader == Some(from)
            && self.role.reads.in_flight.is_some_and(|(r, _)| r == request);
        if !answers {
            return;
        }
        self.role.reads.in_flight = None;
        for id in std::mem::take(&mut self.role.reads.asked) {
            self.role.reads.ready.push_back((id, index));
        }
        self.request_read_index();
    }

    fn release_ready_reads(&mut self) {
        let applied = self.log.applied();
        while let Some(&(id, index)) = self.role.reads.ready.front() {
            if self.opts.planted_bugs.follower_read_unapplied {
                self.role.reads.ready.pop_front();
                let index = index.min(applied);
                self.out.push(Output::ReadReady { id, index });
                continue;
            }
            if index > applied {
                break;
            }
            self.role.reads.ready.pop_front();
            self.out.push(Output::ReadReady { id, index });
        }
    }

    /// Every read not yet served here is aborted, naming `leader` as the place to retry.
    fn abort_reads(&mut self, leader: Option<NodeId>) {
        let reads = std::mem::take(&mut self.role.reads);
        let ids = reads.asked.into_iter().chain(reads.unasked);
        for id in ids.chain(reads.ready.into_iter().map(|r| r.0)) {
            self.out.push(Output::ReadAborted { id, leader });
        }
    }

    /// Leaving the follower role (a new term, or an election): reads pending here can no
    /// longer be answered by this term's leader.
    fn leave(mut self) -> RawNode<()> {
        self.abort_reads(None);
        self.into_role(())
    }

    fn leader_alive(&self) -> bool {
        self.role.leader.is_some() && self.role.elapsed < self.opts.election_ticks_min
    }

    fn step(mut self, env: Envelope) -> Node {
        match &env.message {
            Message::PreVote { .. } => {
                let alive = self.leader_alive();
                self.handle_pre_vote(&env, alive);
            }
            Message::Vote { .. } => {
                if self.handle_vote(&env) {
                    self.role.elapsed = 0;
                }
            }
            Message::Append { .. } | Message::InstallSnapshot { .. } => {
                if self.role.leader != Some(env.from) {
                    // First message from this term's leader. (Reads pending here were asked
                    // of another node, which no honest cluster has as leader in this term.)
                    self.abort_reads(Some(env.from));
                    self.role.leader = Some(env.from);
                    self.role.leader_match = 0;
                    self.role.acked = 0;
                }
                self.role.elapsed = 0;
                match env.message {
                    Message::Append {
                        prev_index,
                        prev_term,
                        entries,
                        commit,
                        read_seq,
                    } => self.append(prev_index, prev_term, entries, commit, read_seq),
                    Message::InstallSnapshot { snapshot, read_seq } => {
                        self.install_snapshot(snapshot, read_seq)
                    }
                    _ => unreachable!(),
                }
            }
            Message::ReadIndexResponse { request, index } => {
                self.read_index_received(env.from, *request, *index);
            }
            // Responses are for candidates and leaders; a follower has nothing pending. A
            // read-index request sent to us, not the leader, goes unanswered: the sender
            // gives it up after `read_request_ticks`.
            Message::PreVoteResponse { .. }
            | Message::VoteResponse { .. }
            | Message::AppendResponse { .. }
            | Message::ReadIndex { .. } => {}
        }
        Node::Follower(self)
    }

    /// The log consistency check and merge (paper 5.3).
    fn append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        mut entries: Vec<Entry>,
        leader_commit: Index,
        read_seq: ReadSeq,
    ) {
        self.role.leader_read_seq = self.role.leader_read_seq.max(read_seq);
        let matched_upto = prev_index + entries.len() as Index;
        let (mut prev_index, mut prev_term) = (prev_index, prev_term);
        let commit = self.log.commit();
        if prev_index < commit {
            // Our committed prefix matches every leader's log: skip what it covers.
            entries.retain(|e| e.index > commit);
            prev_index = commit;
            prev_term = self.log.term(commit).expect("commit index is in the log");
            if entries.first().is_some_and(|e| e.term < prev_term) {
                // What follows our committed entry in the sender's log has an older term
                // than that entry: the sender's log contradicts what we committed, which no
                // honest leader's can (a forged message, here or at the sender). Merging it
                // would give us a log whose terms go down, which no append could ever
                // match again; ignore it.
                return;
            }
        }
        if self.log.term(prev_index) != Some(prev_term) {
            let (hint_index, hint_term) = if prev_index > self.log.last_index() {
                (self.log.last_index() + 1, None)
            } else {
                let first = self.log.first_index_of_term_at(prev_index).max(commit + 1);
                (first, self.log.term(prev_index))
            };
            let outcome = AppendOutcome::Rejected {
                prev_index,
                hint_index,
                hint_term,
            };
            if let Some(leader) = self.role.leader {
                self.send(leader, Message::AppendResponse { read_seq, outcome });
            }
            return;
        }
        self.log.merge(entries);
        self.role.leader_match = self.role.leader_match.max(matched_upto);
        // Everything up to `leader_match` matches this term's leader's log, not only what
        // this message covered: a heartbeat (which names only what the leader knows we hold
        // durably) still moves our commit index up to what we hold. Followers learn of a
        // commit one message sooner, which is what a follower read waits for.
        let known = self.role.leader_match.min(self.log.last_index());
        self.log.commit_to(leader_commit.min(known));
        self.respond_accepted(read_seq);
    }

    fn install_snapshot(&mut self, snapshot: Snapshot, read_seq: ReadSeq) {
        self.role.leader_read_seq = self.role.leader_read_seq.max(read_seq);
        let index = snapshot.index;
        let ours = self.log.term(index);
        if index <= self.log.commit() && ours.is_none_or(|t| t == snapshot.term) {
            // Nothing new: our committed prefix already covers it (or is compacted past it).
        } else if index > self.log.commit() && ours == Some(snapshot.term) {
            // We hold the entry the snapshot ends at, so everything before it matches.
            self.log.commit_to(index);
        } else {
            // Either the snapshot is ahead of us, or it contradicts an entry we committed.
            // The second cannot happen between honest peers (committed entries match every
            // later leader's log); it means a forged message got in, here or at the leader.
            // Taking the leader's snapshot is the only way the two logs can meet again:
            // keeping ours would have the leader resend the snapshot and probe forever.
            //
            // One copy for the log (a leader-to-be sends it on); the driver gets the original.
            self.log.install(snapshot.clone());
            self.out.push(Output::Restore(snapshot));
        }
        self.role.leader_match = self.role.leader_match.max(index);
        self.respond_accepted(read_seq);
    }

    /// Acknowledges only what is both matching and durable (unless the bug is planted).
    fn respond_accepted(&mut self, read_seq: ReadSeq) {
        let matched = self.role.leader_match;
        let durable = if self.opts.planted_bugs.ack_unpersisted {
            matched
        } else {
            matched.min(self.log.persisted())
        };
        let Some(leader) = self.role.leader else {
            return;
        };
        self.role.acked = self.role.acked.max(durable);
        let outcome = AppendOutcome::Accepted { matched, durable };
        self.send(leader, Message::AppendResponse { read_seq, outcome });
    }

    /// Storage caught up: tell the leader what became durable.
    fn ack_durable(&mut self) {
        if self.role.leader.is_some()
            && self.role.leader_match.min(self.log.persisted()) > self.role.acked
        {
            let read_seq = self.role.leader_read_seq;
            self.respond_accepted(read_seq);
        }
    }
}

impl RawNode<Candidate> {
    fn tick(mut self) -> Node {
        self.role.elapsed += 1;
        if self.role.elapsed >= self.role.timeout {
            return self.into_role(()).campaign(true);
        }
        Node::Candidate(self)
    }

    fn step(mut self, env: Envelope) -> Node {
        match &env.message {
            Message::PreVote { .. } => self.handle_pre_vote(&env, false),
            Message::Vote { .. } => {
                self.handle_vote(&env);
            }
            Message::PreVoteResponse { granted } => {
                if self.role.pre_vote && *granted && env.term == self.term + 1 {
                    self.role.votes.insert(env.from);
                    return self.maybe_win();
                }
            }
            Message::VoteResponse { granted } => {
                if !self.role.pre_vote && *granted {
                    self.role.votes.insert(env.from);
                    return self.maybe_win();
                }
            }
            Message::Append { .. } | Message::InstallSnapshot { .. } => {
                // Someone won this term.
                let leader = Some(env.from);
                let term = self.term;
                let follower = self.into_role(()).become_follower(term, leader);
                return follower.step(env);
            }
            Message::AppendResponse { .. }
            | Message::ReadIndex { .. }
            | Message::ReadIndexResponse { .. } => {}
        }
        Node::Candidate(self)
    }

    fn maybe_win(self) -> Node {
        if self.role.votes.len() < self.quorum() {
            return Node::Candidate(self);
        }
        if self.role.pre_vote {
            self.into_role(()).campaign(false)
        } else {
            Node::Leader(self.into_role(()).become_leader())
        }
    }
}

impl RawNode<()> {
    /// Appends the term's no-op (paper 5.4.2: a leader commits entries of earlier terms only
    /// by committing one of its own) and starts probing every follower.
    fn become_leader(mut self) -> RawNode<Leader> {
        let next = self.log.last_index() + 1;
        let progress = self
            .peers
            .iter()
            .map(|&p| (p, Progress::new(next)))
            .collect();
        let term_start = self.log.push(self.term, None);
        let mut leader = self.into_role(Leader {
            progress,
            term_start,
            heartbeat_elapsed: 0,
            check_quorum_elapsed: 0,
            read_seq: 0,
            next_round_needed: false,
            waiting_reads: VecDeque::new(),
            ready_reads: VecDeque::new(),
        });
        leader.maybe_commit();
        leader
    }
}

impl RawNode<Leader> {
    fn tick(mut self) -> Node {
        self.role.heartbeat_elapsed += 1;
        if self.role.heartbeat_elapsed >= self.opts.heartbeat_ticks {
            self.role.heartbeat_elapsed = 0;
            self.retry_lost();
            self.heartbeat();
        }
        self.role.check_quorum_elapsed += 1;
        if self.opts.check_quorum && self.role.check_quorum_elapsed >= self.opts.election_ticks_max
        {
            self.role.check_quorum_elapsed = 0;
            let active = 1 + self.role.progress.values().filter(|p| p.active).count();
            for p in self.role.progress.values_mut() {
                p.active = false;
            }
            if active < self.quorum() {
                let term = self.term;
                return Node::Follower(self.step_down().become_follower(term, None));
            }
        }
        Node::Leader(self)
    }

    fn step(mut self, env: Envelope) -> Node {
        match env.message {
            Message::PreVote { .. } => self.handle_pre_vote(&env, true),
            Message::Vote { .. } => {
                self.handle_vote(&env);
            }
            Message::AppendResponse { read_seq, outcome } => {
                self.handle_append_response(env.from, read_seq, outcome)
            }
            Message::ReadIndex { request } => self.read(ReadFrom::Peer(env.from, request)),
            // One leader per term: nobody else sends appends in our term.
            Message::Append { .. } | Message::InstallSnapshot { .. } => {}
            Message::PreVoteResponse { .. }
            | Message::VoteResponse { .. }
            | Message::ReadIndexResponse { .. } => {}
        }
        Node::Leader(self)
    }

    fn handle_append_response(&mut self, from: NodeId, read_seq: ReadSeq, outcome: AppendOutcome) {
        let Some(pr) = self.role.progress.get_mut(&from) else {
            return;
        };
        pr.active = true;
        pr.read_seq = if self.opts.planted_bugs.read_any_response {
            self.role.read_seq
        } else {
            pr.read_seq.max(read_seq)
        };
        match outcome {
            AppendOutcome::Accepted { matched, durable } => {
                let grew = pr.update_matched(durable);
                let resume = match pr.state {
                    ProgressState::Probe { .. } => true,
                    ProgressState::Snapshot { index, .. } => matched >= index,
                    ProgressState::Replicate => false,
                };
                if resume {
                    pr.become_replicate(matched + 1);
                }
                if matched >= pr.next {
                    pr.next = matched + 1;
                }
                // Entries the follower holds but has not yet persisted count as in flight: if
                // it crashes before persisting them, stall detection sends them again.
                if matched > durable && pr.inflight.back().is_none_or(|&last| last < matched) {
                    pr.inflight.push_back(matched);
                }
                if grew {
                    self.maybe_commit();
                }
            }
            AppendOutcome::Rejected {
                prev_index,
                hint_index,
                hint_term,
            } => {
                let current = match pr.state {
                    ProgressState::Replicate => prev_index > pr.matched,
                    ProgressState::Probe { .. } => prev_index + 1 == pr.next,
                    ProgressState::Snapshot { .. } => false,
                };
                if current {
                    // Skip the follower's whole conflicting term when we can.
                    let next = match hint_term {
                        Some(t) => self
                            .log
                            .last_index_of_term(t, prev_index)
                            .map_or(hint_index, |i| i + 1),
                        None => hint_index,
                    };
                    let Some(pr) = self.role.progress.get_mut(&from) else {
                        return;
                    };
                    let next = next.min(prev_index);
                    if prev_index <= pr.matched {
                        // The follower lacks an entry it acknowledged as durable (a lost disk,
                        // an old duplicate rejection, or an untrue acknowledgement). Forget the
                        // acknowledgement, or probing could never go below it.
                        pr.matched = next.saturating_sub(1);
                    }
                    let before = (pr.next, pr.state.clone());
                    pr.probe_from(next);
                    if (pr.next, &pr.state) == (before.0, &ProgressState::Probe { paused: false })
                        && before.1 != ProgressState::Replicate
                    {
                        // No new information (a duplicate rejection, or a follower that lost
                        // entries it had acknowledged): wait for the heartbeat to probe again
                        // rather than answer every rejection with another probe.
                        pr.state = ProgressState::Probe { paused: true };
                    }
                }
            }
        }
        self.advance_reads();
    }

    /// Commits the highest index a quorum holds durably, if it is from this term
    /// (paper 5.4.2). The leader counts itself only for what it has persisted.
    fn maybe_commit(&mut self) {
        let index = self.quorum_value(self.log.persisted(), |p| p.matched);
        if index > self.log.commit()
            && (self.log.term(index) == Some(self.term) || self.opts.planted_bugs.commit_old_term)
        {
            self.log.commit_to(index);
        }
    }

    /// Sends whatever each follower's window allows.
    fn send_appends(&mut self) {
        for peer in self.peers.clone() {
            while self.send_append(peer) {}
        }
    }

    /// Sends one append (or snapshot) to `peer` if its progress allows. Returns whether
    /// another could follow at once (pipelining).
    ///
    /// `next` stays within `snapshot.index + 1 ..= last_index + 1`: it only ever comes from
    /// our own log or from a follower's answer that [`Node::validate`] bounded by what we
    /// sent, so the term of `next - 1` is known. Should that ever fail, the follower is
    /// probed from its acknowledged prefix again rather than the leader panicking.
    fn send_append(&mut self, peer: NodeId) -> bool {
        let max_inflight = self.opts.max_inflight;
        let snapshot = self.log.snapshot();
        let Some(pr) = self.role.progress.get_mut(&peer) else {
            return false;
        };
        if pr.is_paused(max_inflight) {
            return false;
        }
        if pr.next <= snapshot.index {
            let snapshot = snapshot.clone();
            pr.state = ProgressState::Snapshot {
                index: snapshot.index,
                ticks: 0,
            };
            pr.inflight.clear();
            pr.sent = pr.sent.max(snapshot.index);
            let read_seq = self.role.read_seq;
            self.send(peer, Message::InstallSnapshot { snapshot, read_seq });
            return false;
        }
        let prev_index = pr.next - 1;
        let Some(prev_term) = self.log.term(prev_index) else {
            debug_assert!(false, "next {} is past the log", pr.next);
            let next = pr.matched.min(self.log.last_index()) + 1;
            pr.matched = next - 1;
            pr.probe_from(next);
            return false;
        };
        let entries = if pr.next <= self.log.last_index() {
            self.log.slice(
                pr.next,
                self.opts.max_append_entries,
                self.opts.max_append_bytes,
            )
        } else {
            Vec::new()
        };
        let more = match pr.state {
            ProgressState::Probe { .. } => {
                pr.state = ProgressState::Probe { paused: true };
                false
            }
            ProgressState::Replicate => {
                let Some(last) = entries.last() else {
                    return false;
                };
                pr.next = last.index + 1;
                pr.inflight.push_back(last.index);
                true
            }
            // Paused: returned above.
            ProgressState::Snapshot { .. } => return false,
        };
        pr.sent = pr.sent.max(prev_index + entries.len() as Index);
        let (commit, read_seq) = (self.log.commit(), self.role.read_seq);
        self.send(
            peer,
            Message::Append {
                prev_index,
                prev_term,
                entries,
                commit,
                read_seq,
            },
        );
        more
    }

    /// On each heartbeat tick: re-send what looks lost. A paused probe is re-sent; pipelined
    /// appends with no durable progress for `stall_ticks` fall back to probing; a snapshot
    /// unanswered for `snapshot_retry_ticks`, or superseded by a newer one, is sent again.
    fn retry_lost(&mut self) {
        let snapshot_index = self.log.snapshot().index;
        let (hb, stall, retry) = (
            self.opts.heartbeat_ticks,
            self.opts.stall_ticks,
            self.opts.snapshot_retry_ticks,
        );
        for pr in self.role.progress.values_mut() {
            match &mut pr.state {
                ProgressState::Probe { paused } => *paused = false,
                ProgressState::Replicate => {
                    if !pr.inflight.is_empty() && pr.matched == pr.matched_at_last_heartbeat {
                        pr.stalled_ticks += hb;
                    } else {
                        pr.stalled_ticks = 0;
                    }
                    pr.matched_at_last_heartbeat = pr.matched;
                    if pr.stalled_ticks >= stall {
                        pr.stalled_ticks = 0;
                        let next = pr.matched + 1;
                        pr.probe_from(next);
                    }
                }
                ProgressState::Snapshot { index, ticks } => {
                    *ticks += hb;
                    if *ticks >= retry || *index < snapshot_index {
                        let next = pr.matched + 1;
                        pr.probe_from(next);
                    }
                }
            }
        }
    }

    /// Heartbeats assert leadership and carry the commit index and the current read round.
    /// They check the log only at what the follower is known to hold, so they never disturb
    /// replication in flight; paused probes and snapshots are re-sent by `send_appends`.
    fn heartbeat(&mut self) {
        let snapshot_index = self.log.snapshot().index;
        let (commit, read_seq) = (self.log.commit(), self.role.read_seq);
        for peer in self.peers.clone() {
            let Some(pr) = self.role.progress.get_mut(&peer) else {
                continue;
            };
            // `matched` is at most our last index (validated), and the snapshot's own index
            // always has a known term.
            let (prev_index, prev_term) = match self.log.term(pr.matched) {
                Some(t) => (pr.matched, t),
                None => (snapshot_index, self.log.snapshot().term),
            };
            pr.sent = pr.sent.max(prev_index);
            let entries = Vec::new();
            self.send(
                peer,
                Message::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                    read_seq,
                },
            );
        }
    }

    /// A read of our own driver's, or a follower's read-index request (thesis 6.4.1: the
    /// same confirmation serves both; a follower's is answered with the read index as soon
    /// as it is confirmed, and the follower waits for its own state machine).
    fn read(&mut self, from: ReadFrom) {
        // Everything committed before this read arrived is at or below this index: either
        // our commit index, or our no-op, which follows everything earlier leaders committed.
        let index = self.log.commit().max(self.role.term_start);
        if self.quorum() == 1 || self.opts.planted_bugs.read_without_quorum {
            self.confirmed(from, index);
            return;
        }
        // Batching: one confirmation round in flight at a time; reads that arrive meanwhile
        // share the next round.
        if self.confirmed_read_seq() < self.role.read_seq {
            self.role.next_round_needed = true;
            self.role
                .waiting_reads
                .push_back((from, index, self.role.read_seq + 1));
        } else {
            self.role.read_seq += 1;
            self.role
                .waiting_reads
                .push_back((from, index, self.role.read_seq));
            self.heartbeat();
        }
    }

    /// A read whose round a quorum confirmed: ours waits for our state machine, a
    /// follower's gets its read index at once.
    fn confirmed(&mut self, from: ReadFrom, index: Index) {
        match from {
            ReadFrom::Local(id) => self.role.ready_reads.push_back((id, index)),
            ReadFrom::Peer(peer, request) => {
                self.send(peer, Message::ReadIndexResponse { request, index })
            }
        }
    }

    /// The highest read round a quorum (counting ourselves) has echoed in this term.
    fn confirmed_read_seq(&self) -> ReadSeq {
        self.quorum_value(self.role.read_seq, |p| p.read_seq)
    }

    /// The highest value that a quorum has reached: ours plus each follower's, the
    /// quorum-th largest.
    fn quorum_value(&self, own: u64, of: impl Fn(&Progress) -> u64) -> u64 {
        let mut values: Vec<u64> = self.role.progress.values().map(of).collect();
        values.push(own);
        values.sort_unstable_by(|a, b| b.cmp(a));
        values[self.quorum() - 1]
    }

    fn advance_reads(&mut self) {
        if self.role.waiting_reads.is_empty() {
            return;
        }
        let confirmed = self.confirmed_read_seq();
        while let Some(&(from, index, seq)) = self.role.waiting_reads.front() {
            if seq > confirmed {
                break;
            }
            self.role.waiting_reads.pop_front();
            self.confirmed(from, index);
        }
        if self.role.next_round_needed && confirmed >= self.role.read_seq {
            self.role.next_round_needed = false;
            self.role.read_seq += 1;
            self.heartbeat();
        }
    }

    fn release_ready_reads(&mut self) {
        let applied = self.log.applied();
        while let Some(&(id, index)) = self.role.ready_reads.front() {
            if index > applied {
                break;
            }
            self.role.ready_reads.pop_front();
            self.out.push(Output::ReadReady { id, index });
        }
    }

    /// Leaving leadership: pending reads can no longer be confirmed here. A follower's
    /// request goes unanswered; the follower gives it up when it learns of the new term, or
    /// after `read_request_ticks`.
    fn step_down(mut self) -> RawNode<()> {
        let waiting = std::mem::take(&mut self.role.waiting_reads);
        let ready = std::mem::take(&mut self.role.ready_reads);
        let local = waiting.into_iter().filter_map(|r| match r.0 {
            ReadFrom::Local(id) => Some(id),
            ReadFrom::Peer(..) => None,
        });
        for id in local.chain(ready.into_iter().map(|r| r.0)) {
            self.out.push(Output::ReadAborted { id, leader: None });
        }
        self.into_role(())
    }
}
