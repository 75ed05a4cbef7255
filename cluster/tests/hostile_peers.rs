//! Hostile peers against the Raft core: whatever a peer sends, no node panics, and once the
//! hostile input stops the cluster still elects a leader and commits.
//!
//! A small cluster of [`SimNode`]s (the simulator's core plus disk) runs honest traffic:
//! ticks, deliveries, storage completions, proposals, reads, campaigns, restarts and
//! compactions. Interleaved with it, proptest feeds the nodes
//! - arbitrary envelopes (any `from`, `to`, term and message fields, with small values
//!   favoured so that some get past the first checks, and the extremes around
//!   [`MAX_TERM`](telegraft::raft::MAX_TERM), [`MAX_INDEX`] and `u64::MAX`), and
//! - honest messages in flight with one field changed, which is how a message gets past
//!   every static check and reaches the deep paths (a forged `matched`, a shifted hint, an
//!   entry with another term).
//!
//! The setup puts the target in each role first: a leader with followers, a cluster with no
//! leader yet, and a candidate next to a leader.
//!
//! After the hostile phase the network is honest and loss-free: within a bounded number of
//! rounds some leader must commit a fresh proposal of its own term. A single forged message
//! may cost a node its place (a term at [`MAX_TERM`](telegraft::raft::MAX_TERM) leaves it unable to campaign again),
//! but never the cluster's progress, and never a panic.

use std::collections::VecDeque;

use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use telegraft::raft::{
    AppendOutcome, Entry, Envelope, Index, MAX_INDEX, Message, Node, NodeId, Options, Output, Role,
    Snapshot, Term,
};
use telegraft::sim::SimNode;

const NODES: u64 = 3;

fn options() -> Options {
    Options {
        heartbeat_ticks: 2,
        election_ticks_min: 8,
        election_ticks_max: 16,
        stall_ticks: 8,
        snapshot_retry_ticks: 40,
        max_inflight: 4,
        max_append_entries: 3,
        ..Options::default()
    }
}

/// The honest half: nodes, the network between them, and what each applied.
struct Cluster {
    members: Vec<NodeId>,
    nodes: Vec<SimNode>,
    /// Messages in flight, in sending order; delivery picks any of them.
    net: VecDeque<Envelope>,
    /// Per node: the commands it applied since it last started or restored.
    applied: Vec<Vec<Vec<u8>>>,
    seed: u64,
    proposals: u64,
}

impl Cluster {
    fn new(seed: u64) -> Cluster {
        let members: Vec<NodeId> = (1..=NODES).collect();
        let mut c = Cluster {
            nodes: members.iter().map(|&id| SimNode::new(id)).collect(),
            members,
            net: VecDeque::new(),
            applied: vec![Vec::new(); NODES as usize],
            seed,
            proposals: 0,
        };
        for i in 0..c.nodes.len() {
            c.start(i);
        }
        c
    }

    fn start(&mut self, i: usize) {
        let applied = self.nodes[i].disk().snapshot.index;
        self.seed += 1;
        let rng = ChaCha8Rng::seed_from_u64(self.seed);
        self.nodes[i].start(&self.members, applied, options(), Box::new(rng));
        self.applied[i].clear();
    }

    /// Feeds node `i` one input and acts on its outputs as the driver contract says.
    fn step(&mut self, i: usize, f: impl FnOnce(Node) -> Node) {
        for output in self.nodes[i].step(f) {
            match output {
                Output::HardState(hs) => self.nodes[i].persist_hard_state(hs),
                Output::Append { id, entries } => self.nodes[i].queue_write(0, id, entries),
                Output::Restore(snapshot) => {
                    self.applied[i].clear();
                    self.nodes[i].install(snapshot);
                }
                Output::Send(env) => self.net.push_back(env),
                Output::Apply(entries) => {
                    self.applied[i].extend(entries.into_iter().filter_map(|e| e.command))
                }
                Output::ReadReady { .. } | Output::ReadAborted { .. } => {}
            }
        }
    }

    /// Hands a message to its addressee, or to node `fallback` if it names no member (the
    /// network of a real replica delivers whatever arrives at its port).
    fn deliver_to(&mut self, env: Envelope, fallback: usize) {
        let i = match self.members.iter().position(|&m| m == env.to) {
            Some(i) => i,
            None => fallback,
        };
        self.step(i, |core| core.step(env));
    }

    fn deliver(&mut self, pick: usize) {
        if self.net.is_empty() {
            return;
        }
        let env = self.net.remove(pick % self.net.len()).expect("in range");
        self.deliver_to(env, pick % self.nodes.len());
    }

    fn deliver_all(&mut self) {
        for env in std::mem::take(&mut self.net) {
            self.deliver_to(env, 0);
        }
    }

    fn persist(&mut self, i: usize) {
        for id in self.nodes[i].take_late_reports() {
            self.step(i, |mut core| {
                core.persisted(id);
                core
            });
        }
        while let Some(id) = self.nodes[i].complete_write(0) {
            self.step(i, |mut core| {
                core.persisted(id);
                core
            });
        }
    }

    fn tick(&mut self, i: usize) {
        self.step(i, Node::tick);
    }

    fn propose(&mut self, i: usize) -> Option<(Index, Term)> {
        self.proposals += 1;
        let command = format!("w{}", self.proposals).into_bytes();
        let core = self.nodes[i].core_mut().expect("up");
        let proposed = core.propose(command).ok();
        self.step(i, |core| core);
        proposed
    }

    fn read(&mut self, i: usize) {
        let id = self.proposals;
        let _ = self.nodes[i].core_mut().expect("up").read(id);
        self.step(i, |core| core);
    }

    fn restart(&mut self, i: usize) {
        self.nodes[i].crash();
        self.net.retain(|env| env.to != self.members[i]);
        self.start(i);
    }

    fn compact(&mut self, i: usize) {
        let core = self.nodes[i].core().expect("up");
        let (applied, snap) = (core.log().applied(), core.log().snapshot().index);
        if applied > snap {
            let _ = self.nodes[i].compact(applied, format!("n{i}@{applied}").into_bytes());
        }
    }

    fn role(&self, i: usize) -> Role {
        self.nodes[i].core().expect("up").status().role
    }

    /// One honest round: every write completes, every message arrives, every node ticks.
    fn round(&mut self) {
        for i in 0..self.nodes.len() {
            self.persist(i);
        }
        self.deliver_all();
        for i in 0..self.nodes.len() {
            self.tick(i);
        }
    }

    /// Rounds until something holds, at most `max`.
    fn rounds_until(&mut self, max: usize, done: impl Fn(&Cluster) -> bool) -> bool {
        for _ in 0..max {
            if done(self) {
                return true;
            }
            self.round();
        }
        done(self)
    }

    /// Puts the cluster in one of three shapes before the attack.
    fn setup(&mut self, shape: u8) {
        match shape % 3 {
            // Node 1 leads, and has committed its term.
            0 => {
                self.step(0, Node::campaign);
                let led = self.rounds_until(200, |c| {
                    let core = c.nodes[0].core().expect("up");
                    let s = core.status();
                    s.role == Role::Leader && core.log().term(s.commit_index) == Some(s.term)
                });
                assert!(led, "setup: node 1 did not win and commit");
            }
            // Nobody has campaigned yet: three followers at term 0.
            1 => {}
            // Node 1 leads; node 2 campaigns and its requests are lost: a candidate.
            _ => {
                self.setup(0);
                self.step(1, Node::campaign);
                self.net.retain(|env| env.from != 2);
            }
        }
    }

    /// After the attack: honest, loss-free rounds until a leader commits a proposal of its
    /// own term made after the attack. Proposals are repeated while leaders change.
    fn still_commits(&mut self, max_rounds: usize) -> Result<(), String> {
        let mut pending: Option<(usize, Index, Term)> = None;
        for round in 0..max_rounds {
            if let Some((i, index, term)) = pending
                && let Some(core) = self.nodes[i].core()
            {
                let s = core.status();
                if s.role == Role::Leader
                    && s.term == term
                    && s.commit_index >= index
                    && core.log().term(index).is_none_or(|t| t == term)
                {
                    return Ok(());
                }
            }
            if round % 40 == 0 || pending.is_none() {
                let leader = (0..self.nodes.len()).find(|&i| self.role(i) == Role::Leader);
                if let Some(i) = leader
                    && let Some((index, term)) = self.propose(i)
                {
                    pending = Some((i, index, term));
                }
            }
            self.round();
        }
        let statuses: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("{:?}", n.core().map(|c| c.status())))
            .collect();
        Err(format!(
            "no commit within {max_rounds} honest rounds: {}",
            statuses.join("; ")
        ))
    }
}

/// Values that make good trouble: small ones (which pass range checks and hit real
/// positions), the limits, and anything at all.
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 0u64..8,
        2 => 8u64..40,
        1 => Just(MAX_INDEX),
        1 => Just(MAX_INDEX + 1),
        1 => Just(u64::MAX),
        1 => Just(1 << 40),
        1 => any::<u64>(),
    ]
}

fn node_id() -> impl Strategy<Value = NodeId> {
    prop_oneof![8 => 1u64..=NODES, 1 => Just(0u64), 1 => any::<u64>()]
}

fn entries() -> impl Strategy<Value = Vec<Entry>> {
    let entry =
        (number(), number(), proptest::option::of(any::<u8>())).prop_map(|(i, t, c)| Entry {
            index: i,
            term: t,
            command: c.map(|c| vec![c]),
        });
    proptest::collection::vec(entry, 0..4)
}

/// Entries that follow `prev_index` properly, so that appends get past the static checks.
fn contiguous(prev_index: Index, prev_term: Term, terms: Vec<u64>) -> Vec<Entry> {
    let mut t = prev_term.max(1);
    terms
        .into_iter()
        .enumerate()
        .map(|(k, step)| {
            t += step % 2;
            Entry {
                index: prev_index.saturating_add(1 + k as u64),
                term: t,
                command: Some(vec![b'x']),
            }
        })
        .collect()
}

fn message() -> impl Strategy<Value = Message> {
    let outcome = prop_oneof![
        (number(), number())
            .prop_map(|(matched, durable)| AppendOutcome::Accepted { matched, durable }),
        (number(), number(), proptest::option::of(number())).prop_map(|(p, h, t)| {
            AppendOutcome::Rejected {
                prev_index: p,
                hint_index: h,
                hint_term: t,
            }
        }),
    ];
    prop_oneof![
        (number(), number()).prop_map(|(last_index, last_term)| Message::PreVote {
            last_index,
            last_term
        }),
        any::<bool>().prop_map(|granted| Message::PreVoteResponse { granted }),
        (number(), number()).prop_map(|(last_index, last_term)| Message::Vote {
            last_index,
            last_term
        }),
        any::<bool>().prop_map(|granted| Message::VoteResponse { granted }),
        (number(), number(), entries(), number(), number()).prop_map(
            |(prev_index, prev_term, entries, commit, read_seq)| Message::Append {
                prev_index,
                prev_term,
                entries,
                commit,
                read_seq,
            }
        ),
        (
            0u64..12,
            0u64..4,
            proptest::collection::vec(any::<u64>(), 0..4),
            number(),
            number()
        )
            .prop_map(|(prev_index, prev_term, terms, commit, read_seq)| {
                let prev_term = if prev_index == 0 { 0 } else { prev_term.max(1) };
                Message::Append {
                    prev_index,
                    prev_term,
                    entries: contiguous(prev_index, prev_term, terms),
                    commit,
                    read_seq,
                }
            }),
        (number(), outcome)
            .prop_map(|(read_seq, outcome)| Message::AppendResponse { read_seq, outcome }),
        (number(), number(), number()).prop_map(|(index, term, read_seq)| {
            Message::InstallSnapshot {
                snapshot: Snapshot {
                    index,
                    term,
                    data: b"forged".to_vec(),
                },
                read_seq,
            }
        }),
        number().prop_map(|request| Message::ReadIndex { request }),
        (number(), number())
            .prop_map(|(request, index)| Message::ReadIndexResponse { request, index }),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (node_id(), node_id(), number(), message()).prop_map(|(from, to, term, message)| Envelope {
        from,
        to,
        term,
        message,
    })
}

/// Changes one field of an honest message: `field` picks which, `value` is the new value
/// (or, for small values, an offset from the old one).
fn mutate(env: &mut Envelope, field: u8, value: u64) {
    let set = |old: u64| {
        if value < 8 {
            // Near the old value, up or down.
            if value.is_multiple_of(2) {
                old.saturating_add(value / 2 + 1)
            } else {
                old.saturating_sub(value / 2 + 1)
            }
        } else {
            value
        }
    };
    match field % 4 {
        0 => env.term = set(env.term),
        1 => env.from = set(env.from),
        2 => env.to = set(env.to),
        _ => match &mut env.message {
            Message::PreVote {
                last_index,
                last_term,
            }
            | Message::Vote {
                last_index,
                last_term,
            } => {
                if value.is_multiple_of(2) {
                    *last_index = set(*last_index);
                } else {
                    *last_term = set(*last_term);
                }
            }
            Message::PreVoteResponse { granted } | Message::VoteResponse { granted } => {
                *granted = !*granted;
            }
            Message::Append {
                prev_index,
                prev_term,
                entries,
                commit,
                read_seq,
            } => match (value / 8) % 6 {
                0 => *prev_index = set(*prev_index),
                1 => *prev_term = set(*prev_term),
                2 => *commit = set(*commit),
                3 => *read_seq = set(*read_seq),
                4 => {
                    if let Some(e) = entries.last_mut() {
                        e.term = set(e.term);
                    }
                }
                _ => {
                    if !entries.is_empty() {
                        entries.remove(0);
                    }
                }
            },
            Message::AppendResponse { read_seq, outcome } => match outcome {
                AppendOutcome::Accepted { matched, durable } => match (value / 8) % 3 {
                    0 => *matched = set(*matched),
                    1 => *durable = set(*durable),
                    _ => *read_seq = set(*read_seq),
                },
                AppendOutcome::Rejected {
                    prev_index,
                    hint_index,
                    hint_term,
                } => match (value / 8) % 3 {
                    0 => *prev_index = set(*prev_index),
                    1 => *hint_index = set(*hint_index),
                    _ => *hint_term = Some(set(hint_term.unwrap_or(0))),
                },
            },
            Message::InstallSnapshot { snapshot, read_seq } => match (value / 8) % 3 {
                0 => snapshot.index = set(snapshot.index),
                1 => snapshot.term = set(snapshot.term),
                _ => *read_seq = set(*read_seq),
            },
            Message::ReadIndex { request } => *request = set(*request),
            Message::ReadIndexResponse { request, index } => {
                if value.is_multiple_of(2) {
                    *request = set(*request);
                } else {
                    *index = set(*index);
                }
            }
        },
    }
}

#[derive(Clone, Debug)]
enum Action {
    Tick(usize),
    Round,
    Deliver(usize),
    Drop(usize),
    Persist(usize),
    Propose(usize),
    Read(usize),
    Campaign(usize),
    Restart(usize),
    Compact(usize),
    /// An arbitrary envelope, delivered to its addressee (or to node `.0` when it names no
    /// member).
    Forge(usize, Envelope),
    /// A message in flight with one field changed, then delivered.
    Mutate(usize, u8, u64),
}

fn action() -> impl Strategy<Value = Action> {
    let node = 0..NODES as usize;
    prop_oneof![
        4 => node.clone().prop_map(Action::Tick),
        2 => Just(Action::Round),
        6 => any::<usize>().prop_map(Action::Deliver),
        1 => any::<usize>().prop_map(Action::Drop),
        3 => node.clone().prop_map(Action::Persist),
        2 => node.clone().prop_map(Action::Propose),
        1 => node.clone().prop_map(Action::Read),
        1 => node.clone().prop_map(Action::Campaign),
        1 => node.clone().prop_map(Action::Restart),
        1 => node.clone().prop_map(Action::Compact),
        6 => (node.clone(), envelope()).prop_map(|(i, env)| Action::Forge(i, env)),
        6 => (any::<usize>(), any::<u8>(), number()).prop_map(|(k, f, v)| Action::Mutate(k, f, v)),
    ]
}

fn run(shape: u8, seed: u64, actions: Vec<Action>) -> Result<(), TestCaseError> {
    let mut c = Cluster::new(seed);
    c.setup(shape);
    for action in actions {
        match action {
            Action::Tick(i) => c.tick(i),
            Action::Round => c.round(),
            Action::Deliver(k) => c.deliver(k),
            Action::Drop(k) => {
                if !c.net.is_empty() {
                    let k = k % c.net.len();
                    c.net.remove(k);
                }
            }
            Action::Persist(i) => c.persist(i),
            Action::Propose(i) => {
                c.propose(i);
            }
            Action::Read(i) => c.read(i),
            Action::Campaign(i) => c.step(i, Node::campaign),
            Action::Restart(i) => c.restart(i),
            Action::Compact(i) => c.compact(i),
            Action::Forge(i, env) => c.deliver_to(env, i),
            Action::Mutate(k, field, value) => {
                if !c.net.is_empty() {
                    let k = k % c.net.len();
                    let mut env = c.net.remove(k).expect("in range");
                    mutate(&mut env, field, value);
                    c.deliver_to(env, k % c.nodes.len());
                }
            }
        }
    }
    c.still_commits(600).map_err(TestCaseError::fail)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1024,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Arbitrary and mutated peer messages amid honest traffic: no panic, and the cluster
    /// still commits afterwards.
    #[test]
    fn hostile_messages_never_panic_and_the_cluster_still_commits(
        shape in 0u8..3,
        seed in any::<u64>(),
        actions in proptest::collection::vec(action(), 1..120),
    ) {
        run(shape, seed, actions)?;
    }
}

/// The example: `AppendResponse{matched: 1 << 40}` from a follower used to panic the
/// leader at its next append. Now it is refused, and the leader goes on committing.
#[test]
fn a_forged_matched_index_is_refused_and_the_leader_goes_on() {
    let mut c = Cluster::new(7);
    c.setup(0);
    let term = c.nodes[0].core().unwrap().term();
    let forged = Envelope {
        from: 2,
        to: 1,
        term,
        message: Message::AppendResponse {
            read_seq: 0,
            outcome: AppendOutcome::Accepted {
                matched: 1 << 40,
                durable: 1 << 40,
            },
        },
    };
    let err = c.nodes[0].core().unwrap().validate(&forged).unwrap_err();
    assert_eq!(err.reason, "answers for entries never sent", "{err}");
    c.deliver_to(forged, 0);
    c.propose(0);
    c.still_commits(100).unwrap();
}

/// The other example: seven zero bytes decode as an envelope to node 0 from node 0,
/// which used to trip an `assert_eq!` in `Node::step`.
#[test]
fn the_seven_zero_bytes_are_refused() {
    let env: Envelope = postcard::from_bytes(&[0u8; 7]).expect("decodes");
    let mut c = Cluster::new(1);
    c.setup(0);
    for i in 0..c.nodes.len() {
        let err = c.nodes[i].core().unwrap().validate(&env).unwrap_err();
        assert_eq!(err.reason, "addressed to another node");
        c.step(i, |core| core.step(env.clone()));
    }
    c.still_commits(100).unwrap();
}

/// A follower that rejects an append at or below the index it acknowledged (it lost
/// entries, or the acknowledgement was not true) no longer stalls the leader: the leader
/// forgets the acknowledgement and probes lower.
#[test]
fn a_leader_recovers_from_an_untrue_acknowledgement() {
    let mut c = Cluster::new(3);
    c.setup(0);
    // Followers stop hearing anything, while the leader appends entries it keeps to itself.
    let mut sent = [0; NODES as usize + 1];
    for _ in 0..5 {
        c.propose(0);
        c.persist(0);
        for env in c.net.drain(..) {
            if let Message::Append {
                prev_index,
                entries,
                ..
            } = &env.message
            {
                let last = prev_index + entries.len() as u64;
                sent[env.to as usize] = sent[env.to as usize].max(last);
            }
        }
    }
    let leader = c.nodes[0].core().unwrap();
    let (term, last) = (leader.term(), leader.log().last_index());
    // Both followers "acknowledge" all they were sent, which they do not hold. Nothing in
    // the message shows it: the leader did send those entries.
    for from in [2, 3] {
        let matched = sent[from as usize];
        assert!(matched > 1, "the leader sent entries to n{from}: {sent:?}");
        let lie = Envelope {
            from,
            to: 1,
            term,
            message: Message::AppendResponse {
                read_seq: 0,
                outcome: AppendOutcome::Accepted {
                    matched,
                    durable: matched,
                },
            },
        };
        assert!(c.nodes[0].core().unwrap().validate(&lie).is_ok());
        c.deliver_to(lie, 0);
    }
    c.still_commits(300).unwrap();
    // And the followers caught up for real.
    let ok = c.rounds_until(300, |c| {
        (1..3).all(|i| c.nodes[i].core().unwrap().log().applied() >= last)
    });
    assert!(ok, "followers never caught up");
}

/// A wedge the property test found: a forged snapshot gives the future leader a committed
/// entry that no follower holds (index 2 at term 2, where theirs is at term 1). The leader
/// then sent that snapshot to each follower, which, having committed index 2 itself, called
/// it nothing new and acknowledged it; the next append (`prev` 2 at term 2) was rejected,
/// the leader fell back to the snapshot, and round it went for good. A follower that finds
/// a snapshot contradicting its own committed entry now takes the leader's snapshot, so
/// the cluster converges and commits again.
#[test]
fn a_forged_snapshot_does_not_wedge_replication() {
    let actions = vec![
        Action::Round,
        Action::Read(0),
        Action::Drop(0),
        Action::Deliver(652120673745453813),
        Action::Forge(
            0,
            Envelope {
                from: 3,
                to: 1,
                term: 8,
                message: Message::InstallSnapshot {
                    snapshot: Snapshot {
                        index: 2,
                        term: 2,
                        data: b"forged".to_vec(),
                    },
                    read_seq: 0,
                },
            },
        ),
        Action::Mutate(0, 0, 0),
        Action::Deliver(3729274021982831425),
        Action::Forge(
            0,
            Envelope {
                from: 2,
                to: 1,
                term: 9,
                message: Message::Append {
                    prev_index: 1,
                    prev_term: 1,
                    entries: vec![
                        Entry {
                            index: 2,
                            term: 1,
                            command: Some(b"x".to_vec()),
                        },
                        Entry {
                            index: 3,
                            term: 1,
                            command: Some(b"x".to_vec()),
                        },
                    ],
                    commit: 0,
                    read_seq: 0,
                },
            },
        ),
        Action::Tick(0),
        Action::Tick(0),
        Action::Tick(0),
        Action::Tick(0),
        Action::Compact(0),
    ];
    run(0, 5288194944117089298, actions).unwrap();
}
