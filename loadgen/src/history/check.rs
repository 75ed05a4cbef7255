//! The history checker: did the chats keep every acknowledged message, once, in one order?
//!
//! From a history ([`Event`]s) the checker reports:
//! - **lost**: an acknowledged message missing from its chat's final list;
//! - **phantom**: a message in a read or a final list that no client sent, or whose send
//!   definitely failed;
//! - **duplicate**: a message twice in one list, or returned again by a later poll of the
//!   same poller (client and user) although its cursor had passed it;
//! - **reordered**: a read whose messages of one chat are not in the final list's order, or
//!   a read or final list whose messages are not in `committed_at` order;
//! - **stale**: a linearizable read missing a message of one of the reader's chats that was
//!   acknowledged before the read began and falls inside the read's window;
//! - **before_cursor**: a poll returning a message committed at or before its cursor;
//! - **non-monotonic**: a reader missing a message that an earlier read of the same reader
//!   (completed before this one began) returned, and that falls inside this read's window;
//! - **divergent**: replicas whose final lists of a chat differ from the reference (the
//!   leader's linearizable read), or replicas at the same applied index whose state digests
//!   differ. A replica that had not applied the leader's commit index when the wait after the
//!   load ended is *lagging*, not divergent: its lists must only be a prefix of the
//!   reference's;
//! - **stale_local**: what would be stale, in a `local` read. Local reads may be stale by
//!   design, so these are listed and counted but do not fail the verdict.
//!
//! **Windows.** A poll with cursor `C` (`cursor_us`) must return, each exactly once, every
//! message of its reader's chats whose `committed_at` is after `C` and that was acknowledged
//! before the poll was invoked (so committed before it), and nothing committed at or before
//! `C`. A poll whose page the cluster cut short (`truncated`) is held to the part of its
//! window up to its last message's `committed_at`: a page is the first messages after the
//! cursor in commit order. Each message's `committed_at` comes from the lists that returned
//! it, the leader's final list first (`SendMessageResponse` carries only the message id).
//! Lists that disagree on it are divergent. An acknowledged message no list returned is lost
//! (or its chat unread), so it has no window to be missed from.
//!
//! Sends with an indeterminate outcome (a timeout, a lost connection) may appear or not, but
//! at most once. A NOT_FOUND answer for a chat's member (a user that acknowledged writes
//! created) is a definite answer: its list is empty, and every message acknowledged in the
//! chat is lost.
//!
//! The verdict is `fail` when an anomaly other than `stale_local` is found; otherwise
//! `incomplete` when a chat could not be read (no reference list for a chat with
//! acknowledged messages, or a failed read of a live replica), so that nothing unchecked is
//! reported as passed; otherwise `pass`. `skipped` is for runs whose scenario says
//! `check: off` ([`Report::skipped`]).
//!
//! The check runs in phases, each a method of [`Checker`]: count the sends, compare the final
//! lists (which fixes each chat's order), compare the digests, find the lost messages, then
//! go through the reads in completion order.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{Event, Outcome, Seen};

/// The kind of an anomaly.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Lost,
    Phantom,
    Duplicate,
    Reordered,
    Stale,
    /// A poll returned a message committed at or before its cursor.
    BeforeCursor,
    NonMonotonic,
    Divergent,
    /// Stale, but by a `local` read, which the consistency asked for allows: listed, and
    /// not a failure.
    StaleLocal,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Lost,
        Kind::Phantom,
        Kind::Duplicate,
        Kind::Reordered,
        Kind::Stale,
        Kind::BeforeCursor,
        Kind::NonMonotonic,
        Kind::Divergent,
        Kind::StaleLocal,
    ];

    /// The kind as `summary.json` and `check.json` name it (`non_monotonic`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Lost => "lost",
            Kind::Phantom => "phantom",
            Kind::Duplicate => "duplicate",
            Kind::Reordered => "reordered",
            Kind::Stale => "stale",
            Kind::BeforeCursor => "before_cursor",
            Kind::NonMonotonic => "non_monotonic",
            Kind::Divergent => "divergent",
            Kind::StaleLocal => "stale_local",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Anomaly {
    pub kind: Kind,
    pub chat: u64,
    /// The message concerned, by key.
    pub key: String,
    pub detail: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Counts {
    pub sends_ok: u64,
    pub sends_failed: u64,
    pub sends_unknown: u64,
    pub reads: u64,
    pub final_messages: u64,
    /// Anomalies by kind (`lost`, `stale_local`, ...).
    pub anomalies: BTreeMap<String, u64>,
}

/// The history check's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Everything was read and nothing was wrong.
    Pass,
    /// An anomaly was found.
    Fail,
    /// Nothing was found, but not everything could be read.
    Incomplete,
    /// Not run: the scenario says `check: off`.
    Skipped,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Incomplete => "incomplete",
            Verdict::Skipped => "skipped",
        }
    }
}

/// A live replica behind the leader's commit index at the end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LaggingReplica {
    pub replica: String,
    pub applied_index: u64,
    /// The leader's commit index after the load.
    pub target_index: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub verdict: Verdict,
    /// Why the check is incomplete or skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub counts: Counts,
    /// Live replicas that had not caught up when the wait after the load ended.
    #[serde(default)]
    pub lagging: Vec<LaggingReplica>,
    /// Chats that could not be read whole (from the leader or from a live replica).
    #[serde(default)]
    pub unread_chats: u64,
    /// Replicas that did not answer after the load, so were not read.
    #[serde(default)]
    pub unreachable: Vec<String>,
    /// Every anomaly found (in order of kind, then chat).
    pub anomalies: Vec<Anomaly>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }

    /// The report of a check that was not run.
    pub fn skipped(reason: &str) -> Report {
        Report::not_checked(Verdict::Skipped, reason)
    }

    /// The report of a check that could not run at all.
    pub fn incomplete(reason: &str) -> Report {
        Report::not_checked(Verdict::Incomplete, reason)
    }

    fn not_checked(verdict: Verdict, reason: &str) -> Report {
        Report {
            verdict,
            reason: Some(reason.to_string()),
            counts: Counts::default(),
            lagging: Vec::new(),
            unread_chats: 0,
            unreachable: Vec::new(),
            anomalies: Vec::new(),
        }
    }
}

/// Checks a history.
pub fn check(history: &[Event]) -> Report {
    check_with_skew(history, std::time::Duration::ZERO)
}

/// [`check`] for a history whose calls were timed by clocks that may disagree by up to
/// `skew` (several generators on several hosts, merged): a send counts as acknowledged
/// before a read began only when it was by more than `skew`, so that a read is never called
/// stale for missing a message the other clock merely says came first. Calls of one client
/// share a clock, so the per-reader checks (duplicates, monotonic reads) are unchanged.
pub fn check_with_skew(history: &[Event], skew: std::time::Duration) -> Report {
    let mut c = Checker::new(history);
    c.skew_us = skew.as_micros() as u64;
    c.compare_finals();
    c.compare_digests();
    c.find_lost();
    c.find_unread();
    c.check_reads();
    c.verdict()
}

/// A send as the checker remembers it.
struct Sent {
    outcome: Outcome,
    chat: u64,
    complete_us: u64,
}

/// The state of one check: the sends by key, each chat's final order, what was found.
struct Checker<'a> {
    history: &'a [Event],
    sent: HashMap<&'a str, Sent>,
    /// Per chat: each message's position in the reference final list.
    order: BTreeMap<u64, HashMap<&'a str, usize>>,
    /// Each message's `committed_at` (µs since the Unix epoch), as the first list that
    /// returned it said (the reference final lists are read first), and that list.
    committed: HashMap<&'a str, (i64, String)>,
    /// Chats whose reference read answered NOT_FOUND, with the answer.
    not_found: BTreeMap<u64, &'a str>,
    lagging: Vec<LaggingReplica>,
    unreachable: Vec<String>,
    /// Chats some final read could not read.
    unread: BTreeSet<u64>,
    /// Why no final read could be made at all, if none could.
    unread_all: Option<String>,
    counts: Counts,
    found: Vec<Anomaly>,
    /// The clock-skew bound between clients' clocks, in µs ([`check_with_skew`]).
    skew_us: u64,
}

impl<'a> Checker<'a> {
    /// Starts a check by counting and remembering every send.
    fn new(history: &'a [Event]) -> Checker<'a> {
        let mut counts = Counts::default();
        let mut sent = HashMap::new();
        let (mut lagging, mut unreachable) = (Vec::new(), Vec::new());
        let (mut unread, mut unread_all) = (BTreeSet::new(), None);
        for e in history {
            match e {
                Event::Lagging {
                    replica,
                    applied_index,
                    target_index,
                } => lagging.push(LaggingReplica {
                    replica: replica.clone(),
                    applied_index: *applied_index,
                    target_index: *target_index,
                }),
                Event::Down { replica } => unreachable.push(replica.clone()),
                Event::Unread {
                    chat: Some(chat), ..
                } => {
                    unread.insert(*chat);
                }
                Event::Unread {
                    chat: None, reason, ..
                } => unread_all = Some(reason.clone()),
                _ => {}
            }
            if let Event::Send {
                outcome,
                chat,
                key,
                complete_us,
                ..
            } = e
            {
                match outcome {
                    Outcome::Ok => counts.sends_ok += 1,
                    Outcome::Fail => counts.sends_failed += 1,
                    Outcome::Unknown => counts.sends_unknown += 1,
                }
                sent.insert(
                    key.as_str(),
                    Sent {
                        outcome: *outcome,
                        chat: *chat,
                        complete_us: *complete_us,
                    },
                );
            }
        }
        Checker {
            skew_us: 0,
            history,
            sent,
            order: BTreeMap::new(),
            committed: HashMap::new(),
            not_found: BTreeMap::new(),
            lagging,
            unreachable,
            unread,
            unread_all,
            counts,
            found: Vec::new(),
        }
    }

    fn report(&mut self, kind: Kind, chat: u64, key: &str, detail: String) {
        self.found.push(Anomaly {
            kind,
            chat,
            key: key.to_string(),
            detail,
        });
    }

    /// Final lists: one per chat per replica. The reference (the leader's linearizable
    /// read, or the first list when none is marked) fixes the order every read is held to;
    /// every other replica's list must equal it, or, for a lagging replica, be a prefix of it.
    fn compare_finals(&mut self) {
        let mut finals: BTreeMap<u64, Vec<FinalList<'a>>> = BTreeMap::new();
        for e in self.history {
            if let Event::Final {
                replica,
                chat,
                messages,
                reference,
                not_found,
            } = e
            {
                finals.entry(*chat).or_default().push(FinalList {
                    replica,
                    messages,
                    reference: *reference,
                    not_found: not_found.as_deref(),
                });
            }
        }
        let lagging: HashMap<String, LaggingReplica> = self
            .lagging
            .iter()
            .map(|l| (l.replica.clone(), l.clone()))
            .collect();
        let keys = |l: &[Seen]| l.iter().map(|m| m.key.clone()).collect::<Vec<_>>();
        let mut problems = Vec::new();
        let mut unordered = Vec::new();
        for (chat, lists) in &finals {
            let at = lists.iter().position(|l| l.reference).unwrap_or(0);
            let reference = &lists[at];
            self.counts.final_messages += reference.messages.len() as u64;
            if let Some(why) = reference.not_found {
                self.not_found.insert(*chat, why);
            }
            let want = keys(reference.messages);
            for (i, list) in lists.iter().enumerate() {
                if i == at {
                    continue;
                }
                let have = keys(list.messages);
                let detail = match lagging.get(list.replica) {
                    Some(l) if !want.starts_with(&have) => Some(format!(
                        "{} (lagging: applied {} of {}) has {} messages that are not a prefix \
                         of the {} of {}",
                        list.replica,
                        l.applied_index,
                        l.target_index,
                        have.len(),
                        want.len(),
                        reference.replica
                    )),
                    Some(_) => None,
                    None if have != want => Some(format!(
                        "{} has {} messages, {} has {}",
                        list.replica,
                        have.len(),
                        reference.replica,
                        want.len()
                    )),
                    None => None,
                };
                if let Some(detail) = detail {
                    problems.push((*chat, detail));
                }
            }
            let what = format!("final list ({})", reference.replica);
            self.check_list(*chat, reference.messages, &what);
            self.note_committed(reference.messages, &what);
            // The chat's order is commit order. (Every other list must equal this one.)
            if let Some((chat, key, detail)) = commit_order_break(reference.messages, &what) {
                unordered.push((chat, key, detail));
            }
            let positions = reference
                .messages
                .iter()
                .enumerate()
                .map(|(i, m)| (m.key.as_str(), i))
                .collect();
            self.order.insert(*chat, positions);
        }
        for (chat, detail) in problems {
            self.report(Kind::Divergent, chat, "", detail);
        }
        for (chat, key, detail) in unordered {
            self.report(Kind::Reordered, chat, &key, detail);
        }
        // Every replica must give a message the same committed_at as the reference.
        for lists in finals.values() {
            for list in lists.iter().filter(|l| !l.reference) {
                self.note_committed(list.messages, &format!("final list ({})", list.replica));
            }
        }
    }

    /// Remembers the `committed_at` of each message of `list` (`what`), and reports a list
    /// that gives a message another `committed_at` than an earlier list as divergent: it is
    /// fixed once committed, the same on every replica.
    fn note_committed(&mut self, list: &'a [Seen], what: &str) {
        let mut problems = Vec::new();
        for m in list.iter().filter(|m| m.committed_us != 0) {
            match self.committed.get(m.key.as_str()) {
                None => {
                    self.committed
                        .insert(m.key.as_str(), (m.committed_us, what.to_string()));
                }
                Some((t, first)) if *t != m.committed_us => problems.push((
                    m.chat,
                    m.key.as_str(),
                    format!(
                        "committed_at {} µs in the {what}, {t} µs in the {first}",
                        m.committed_us
                    ),
                )),
                Some(_) => {}
            }
        }
        for (chat, key, detail) in problems {
            self.report(Kind::Divergent, chat, key, detail);
        }
    }

    /// The replicas' whole states must be equal too, where they applied the same entries
    /// (a lagging replica's digest describes an earlier state).
    fn compare_digests(&mut self) {
        let mut by_index: BTreeMap<u64, Vec<(&str, &str)>> = BTreeMap::new();
        for e in self.history {
            if let Event::Digest {
                replica,
                applied_index,
                digest,
            } = e
            {
                by_index
                    .entry(*applied_index)
                    .or_default()
                    .push((replica, digest));
            }
        }
        let mut problems = Vec::new();
        for (index, digests) in by_index {
            let first = digests[0];
            for d in &digests[1..] {
                if d.1 != first.1 {
                    problems.push(format!(
                        "state digest of {} at index {index} is {}, of {} is {}",
                        d.0, d.1, first.0, first.1
                    ));
                }
            }
        }
        for detail in problems {
            self.report(Kind::Divergent, 0, "", detail);
        }
    }

    /// Lost: acknowledged, but not in the final list of its chat.
    fn find_lost(&mut self) {
        let mut lost: Vec<(&str, u64, u64)> = self
            .sent
            .iter()
            .filter(|(_, s)| s.outcome == Outcome::Ok)
            .filter(|(k, s)| self.order.get(&s.chat).is_some_and(|o| !o.contains_key(*k)))
            .map(|(k, s)| (*k, s.chat, s.complete_us))
            .collect();
        lost.sort_by_key(|(k, _, _)| *k);
        for (key, chat, complete_us) in lost {
            let why = match self.not_found.get(&chat) {
                Some(answer) => format!(" (the leader answered NOT_FOUND: {answer})"),
                None => String::new(),
            };
            let detail =
                format!("acknowledged at {complete_us} µs, missing from the final list{why}");
            self.report(Kind::Lost, chat, key, detail);
        }
    }

    /// Unread: a chat with acknowledged messages and no reference list is as unchecked as one
    /// whose read failed.
    fn find_unread(&mut self) {
        let unchecked: Vec<u64> = self
            .sent
            .values()
            .filter(|s| s.outcome == Outcome::Ok && !self.order.contains_key(&s.chat))
            .map(|s| s.chat)
            .collect();
        self.unread.extend(unchecked);
    }

    /// Every successful read, in completion order: its lists, its order, its staleness and
    /// whether its reader saw less than before.
    fn check_reads(&mut self) {
        let mut reads: Vec<&'a Event> = self
            .history
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::Read {
                        outcome: Outcome::Ok,
                        ..
                    }
                )
            })
            .collect();
        reads.sort_by_key(|e| match e {
            Event::Read { complete_us, .. } => *complete_us,
            _ => 0,
        });
        let mut earlier: HashMap<Reader, Vec<Earlier<'a>>> = HashMap::new();
        // Per reader: each message it was returned, with when that read finished.
        let mut returned: HashMap<Reader, HashMap<&'a str, u64>> = HashMap::new();
        for e in reads {
            let Event::Read {
                client,
                invoke_us,
                complete_us,
                user,
                cursor_us,
                linearizable,
                chats,
                messages,
                truncated,
                ..
            } = e
            else {
                continue;
            };
            self.counts.reads += 1;
            let read = ReadView {
                what: format!(
                    "read by client {client} (user {user}) at {invoke_us} µs with cursor \
                     {cursor_us} µs"
                ),
                invoke_us: *invoke_us,
                cursor_us: *cursor_us,
                // A page cut short covers its window up to its last message.
                upto_us: truncated.then(|| {
                    messages
                        .iter()
                        .map(|m| m.committed_us)
                        .max()
                        .unwrap_or(*cursor_us)
                }),
                linearizable: *linearizable,
                chats,
                returned: messages.iter().map(|m| m.key.as_str()).collect(),
            };
            self.check_read_lists(&read, messages);
            let before_cursor = self.find_before_cursor(&read, messages);
            let seen = returned.entry((*client, *user)).or_default();
            self.find_returned_again(&read, *complete_us, messages, &before_cursor, seen);
            let before = earlier.entry((*client, *user)).or_default();
            self.find_stale(&read);
            self.find_non_monotonic(&read, before);
            before.push((*complete_us, messages));
        }
    }

    /// Before the cursor: a poll returns only messages committed after its cursor.
    fn find_before_cursor(&mut self, read: &ReadView, messages: &[Seen]) -> HashSet<String> {
        let mut found = HashSet::new();
        for m in messages.iter().filter(|m| m.committed_us <= read.cursor_us) {
            let detail = if m.committed_us == 0 {
                format!("{} returned it without a committed_at", read.what)
            } else {
                format!(
                    "{} returned it, committed at {} µs",
                    read.what, m.committed_us
                )
            };
            self.report(Kind::BeforeCursor, m.chat, &m.key, detail);
            found.insert(m.key.clone());
        }
        found
    }

    /// Exactly once: a poller's cursor moves past what it was returned, so a later poll of
    /// the same poller returning a message again is a duplicate (unless it was already
    /// reported as before the cursor).
    fn find_returned_again(
        &mut self,
        read: &ReadView,
        complete_us: u64,
        messages: &'a [Seen],
        before_cursor: &HashSet<String>,
        seen: &mut HashMap<&'a str, u64>,
    ) {
        for m in messages {
            match seen.get(m.key.as_str()) {
                Some(done) if *done < read.invoke_us && !before_cursor.contains(&m.key) => {
                    let detail = format!(
                        "{} returned it again; a read finished at {done} µs returned it",
                        read.what
                    );
                    self.report(Kind::Duplicate, m.chat, &m.key, detail);
                }
                Some(_) => {}
                None => {
                    seen.insert(m.key.as_str(), complete_us);
                }
            }
        }
    }

    /// Phantoms and duplicates in each chat's part of a read, its order against the final
    /// order, its `committed_at` values against the final lists', and its commit order.
    fn check_read_lists(&mut self, read: &ReadView, messages: &'a [Seen]) {
        let mut by_chat: BTreeMap<u64, Vec<Seen>> = BTreeMap::new();
        for m in messages {
            by_chat.entry(m.chat).or_default().push(m.clone());
        }
        let mut reordered_any = false;
        for (chat, list) in &by_chat {
            self.check_list(*chat, list, &read.what);
            let reordered = self.order.get(chat).and_then(|o| {
                let positions: Vec<usize> = list
                    .iter()
                    .filter_map(|m| o.get(m.key.as_str()).copied())
                    .collect();
                let w = positions.windows(2).find(|w| w[0] > w[1])?;
                let key = list
                    .iter()
                    .find(|m| o.get(m.key.as_str()) == Some(&w[1]))
                    .map(|m| m.key.clone())
                    .unwrap_or_default();
                let detail = format!("{} has final positions {} before {}", read.what, w[0], w[1]);
                Some((key, detail))
            });
            if let Some((key, detail)) = reordered {
                reordered_any = true;
                self.report(Kind::Reordered, *chat, &key, detail);
            }
        }
        self.note_committed(messages, &read.what);
        // A poll is in commit order across its chats. (A read out of a chat's final order is
        // out of commit order too: that is said once.)
        if !reordered_any
            && let Some((chat, key, detail)) = commit_order_break(messages, &read.what)
        {
            self.report(Kind::Reordered, chat, &key, detail);
        }
    }

    /// Stale: acknowledged before this read began, in its window, but not returned. A local
    /// read may be stale by design: those are listed as `stale_local`.
    fn find_stale(&mut self, read: &ReadView) {
        let mut missing: Vec<(&str, u64, u64)> = self
            .sent
            .iter()
            .filter(|(k, s)| {
                s.outcome == Outcome::Ok
                    && s.complete_us.saturating_add(self.skew_us) < read.invoke_us
                    && self
                        .committed
                        .get(*k)
                        .is_some_and(|(t, _)| read.in_window(s.chat, *t))
                    && !read.returned.contains(*k)
            })
            .map(|(k, s)| (*k, s.chat, s.complete_us))
            .collect();
        missing.sort_by_key(|(k, _, _)| *k);
        let kind = if read.linearizable {
            Kind::Stale
        } else {
            Kind::StaleLocal
        };
        for (key, chat, complete_us) in missing {
            let committed = self.committed.get(key).map_or(0, |(t, _)| *t);
            let detail = format!(
                "{} misses it, acknowledged at {complete_us} µs, committed at {committed} µs",
                read.what
            );
            self.report(kind, chat, key, detail);
        }
    }

    /// Non-monotonic: an earlier read of this reader (finished before this one began)
    /// returned a message in this read's window that this read lacks.
    fn find_non_monotonic(&mut self, read: &ReadView, before: &[Earlier]) {
        let mut reported = BTreeSet::new();
        for (done, earlier) in before {
            if *done >= read.invoke_us {
                continue;
            }
            for m in earlier.iter() {
                if read.in_window(m.chat, m.committed_us)
                    && !read.returned.contains(m.key.as_str())
                    && reported.insert(m.key.clone())
                {
                    let detail = format!(
                        "{} no longer shows it; a read finished at {done} µs did",
                        read.what
                    );
                    self.report(Kind::NonMonotonic, m.chat, &m.key, detail);
                }
            }
        }
    }

    /// Phantoms and duplicates within one list.
    fn check_list(&mut self, chat: u64, list: &[Seen], what: &str) {
        let mut seen = HashSet::new();
        for m in list {
            if !seen.insert(m.key.as_str()) {
                self.report(
                    Kind::Duplicate,
                    chat,
                    &m.key,
                    format!("twice in the {what}"),
                );
            }
            let phantom = match self.sent.get(m.key.as_str()) {
                None => Some(format!("in the {what}, but no client sent it")),
                Some(s) if s.outcome == Outcome::Fail => {
                    Some(format!("in the {what}, but its send definitely failed"))
                }
                Some(s) if s.chat != chat => Some(format!(
                    "in the {what} of chat {chat}, but it was sent to chat {}",
                    s.chat
                )),
                _ => None,
            };
            if let Some(detail) = phantom {
                self.report(Kind::Phantom, chat, &m.key, detail);
            }
        }
    }

    /// Sorts what was found, counts it by kind, and gives the verdict: any anomaly but
    /// `stale_local` fails; else anything unread makes it incomplete.
    fn verdict(mut self) -> Report {
        self.found
            .sort_by(|a, b| (a.kind, a.chat, &a.key).cmp(&(b.kind, b.chat, &b.key)));
        for a in &self.found {
            *self
                .counts
                .anomalies
                .entry(a.kind.name().to_string())
                .or_insert(0) += 1;
        }
        let failed = self.found.iter().any(|a| a.kind != Kind::StaleLocal);
        let unread = self.unread.len() as u64;
        let (verdict, reason) = if failed {
            (Verdict::Fail, None)
        } else if let Some(why) = self.unread_all {
            (Verdict::Incomplete, Some(why))
        } else if unread > 0 {
            let why = format!("{unread} chats could not be read whole");
            (Verdict::Incomplete, Some(why))
        } else {
            (Verdict::Pass, None)
        };
        Report {
            verdict,
            reason,
            counts: self.counts,
            lagging: self.lagging,
            unread_chats: unread,
            unreachable: self.unreachable,
            anomalies: self.found,
        }
    }
}

/// One replica's final list of a chat.
struct FinalList<'a> {
    replica: &'a str,
    messages: &'a [Seen],
    reference: bool,
    not_found: Option<&'a str>,
}

/// A reader: (client, user).
type Reader = (u64, u64);

/// An earlier read of a reader: its completion time and the messages it returned.
type Earlier<'a> = (u64, &'a [Seen]);

/// One read, as the staleness and monotonicity checks look at it.
struct ReadView<'a> {
    /// How anomalies name it: `read by client C (user U) at T µs with cursor C µs`.
    what: String,
    invoke_us: u64,
    /// Its cursor: it covers messages committed after it.
    cursor_us: i64,
    /// For a page cut short: the last `committed_at` it covers.
    upto_us: Option<i64>,
    linearizable: bool,
    /// The chats the reader was a member of.
    chats: &'a [u64],
    /// The keys it returned.
    returned: HashSet<&'a str>,
}

impl ReadView<'_> {
    /// Whether a message of `chat` committed at `committed_us` is one this read should
    /// return: in one of its chats, after its cursor (and, for a page cut short, not after
    /// its last message).
    fn in_window(&self, chat: u64, committed_us: i64) -> bool {
        self.chats.contains(&chat)
            && committed_us > self.cursor_us
            && self.upto_us.is_none_or(|u| committed_us <= u)
    }
}

/// The first message of `list` (`what`) whose `committed_at` is not after the one before
/// it (messages without one are skipped).
fn commit_order_break(list: &[Seen], what: &str) -> Option<(u64, String, String)> {
    let stamped: Vec<&Seen> = list.iter().filter(|m| m.committed_us != 0).collect();
    // The same message twice is a duplicate, reported as such.
    let w = stamped.windows(2).find(|w| {
        w[1].committed_us < w[0].committed_us
            || (w[1].committed_us == w[0].committed_us && w[1].key != w[0].key)
    })?;
    let detail = format!(
        "{what} is not in committed_at order: {} at {} µs after {} at {} µs",
        w[1].key, w[1].committed_us, w[0].key, w[0].committed_us
    );
    Some((w[1].chat, w[1].key.clone(), detail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{key_of, message_key, to_elle};

    fn send(key: &str, chat: u64, sent_us: i64, done: u64, outcome: Outcome) -> Event {
        Event::Send {
            client: 1,
            invoke_us: done.saturating_sub(10),
            complete_us: done,
            outcome,
            chat,
            user: 1,
            key: key.into(),
            sent_us,
            message_id: None,
        }
    }

    /// Messages of `chat` as a list returned them: `(key, t)` was sent and committed at `t`.
    fn seen(chat: u64, keys: &[(&str, i64)]) -> Vec<Seen> {
        keys.iter()
            .enumerate()
            .map(|(i, (k, t))| Seen {
                chat,
                id: i as u64 + 1,
                key: k.to_string(),
                sent_us: *t,
                committed_us: *t,
            })
            .collect()
    }

    /// A poll by `client` for user 7 (a member of chat 1) invoked `at`, with `cursor_us`.
    fn read(client: u64, at: u64, cursor_us: i64, messages: Vec<Seen>) -> Event {
        Event::Read {
            client,
            invoke_us: at,
            complete_us: at + 5,
            outcome: Outcome::Ok,
            user: 7,
            cursor_us,
            linearizable: true,
            chats: vec![1],
            messages,
            truncated: false,
        }
    }

    fn fin(replica: &str, messages: Vec<Seen>) -> Event {
        Event::Final {
            replica: replica.into(),
            chat: 1,
            messages,
            reference: false,
            not_found: None,
        }
    }

    /// A clean history: two acknowledged sends, an unknown one that happened, a poller whose
    /// cursor follows what it saw, and agreeing replicas.
    fn clean() -> Vec<Event> {
        vec![
            send("a", 1, 100, 110, Outcome::Ok),
            send("b", 1, 200, 210, Outcome::Ok),
            send("c", 1, 300, 310, Outcome::Unknown),
            send("d", 1, 400, 410, Outcome::Fail),
            read(9, 150, 0, seen(1, &[("a", 100)])),
            read(9, 250, 100, seen(1, &[("b", 200)])),
            read(9, 350, 200, seen(1, &[("c", 300)])),
            fin("r1", seen(1, &[("a", 100), ("b", 200), ("c", 300)])),
            fin("r2", seen(1, &[("a", 100), ("b", 200), ("c", 300)])),
        ]
    }

    fn kinds(history: &[Event]) -> Vec<Kind> {
        check(history).anomalies.iter().map(|a| a.kind).collect()
    }

    #[test]
    fn a_clean_history_passes() {
        let r = check(&clean());
        assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.anomalies);
        assert_eq!(
            (
                r.counts.sends_ok,
                r.counts.sends_unknown,
                r.counts.sends_failed
            ),
            (2, 1, 1)
        );
        assert_eq!((r.counts.reads, r.counts.final_messages), (3, 3));
        // The unknown send may also not have happened.
        let mut h = clean();
        h.retain(|e| !matches!(e, Event::Final { .. }));
        h.push(fin("r1", seen(1, &[("a", 100), ("b", 200)])));
        h.retain(
            |e| !matches!(e, Event::Read { messages, .. } if messages.iter().any(|m| m.key == "c")),
        );
        assert_eq!(check(&h).verdict, Verdict::Pass);
    }

    #[test]
    fn an_acknowledged_message_missing_at_the_end_is_lost() {
        let mut h = clean();
        h.retain(|e| !matches!(e, Event::Final { .. }));
        h.push(fin("r1", seen(1, &[("a", 100), ("c", 300)])));
        h.retain(|e| {
            !matches!(
                e,
                Event::Read {
                    invoke_us: 250 | 350,
                    ..
                }
            )
        });
        assert_eq!(kinds(&h), vec![Kind::Lost]);
        assert_eq!(check(&h).anomalies[0].key, "b");
    }

    #[test]
    fn unsent_and_failed_messages_are_phantoms() {
        let mut h = clean();
        h.push(read(
            8,
            500,
            0,
            seen(1, &[("a", 100), ("b", 200), ("zz", 450)]),
        ));
        assert_eq!(kinds(&h), vec![Kind::Phantom]);
        let mut h = clean();
        h.push(read(
            8,
            500,
            0,
            seen(1, &[("a", 100), ("b", 200), ("d", 400)]),
        ));
        let r = check(&h);
        assert_eq!(kinds(&h), vec![Kind::Phantom]);
        assert!(r.anomalies[0].detail.contains("definitely failed"));
    }

    #[test]
    fn a_message_twice_is_a_duplicate_even_when_its_send_was_indeterminate() {
        let mut h = clean();
        h.retain(|e| !matches!(e, Event::Final { .. }));
        let twice = seen(1, &[("a", 100), ("b", 200), ("c", 300), ("c", 300)]);
        h.push(fin("r1", twice.clone()));
        h.push(fin("r2", twice));
        assert_eq!(kinds(&h), vec![Kind::Duplicate]);
    }

    #[test]
    fn reads_out_of_the_final_order_are_reordered() {
        let mut h = clean();
        h.push(read(
            8,
            500,
            0,
            seen(1, &[("b", 200), ("a", 100), ("c", 300)]),
        ));
        assert_eq!(kinds(&h), vec![Kind::Reordered]);
    }

    #[test]
    fn a_clock_skew_bound_excuses_a_read_that_began_within_it() {
        // b was acknowledged at 210 (one worker's clock); a read at 260 (another's) misses
        // it. With clocks 100 µs apart at most, 210 may really be after 260: not stale.
        let mut h = clean();
        h.push(read(8, 260, 0, seen(1, &[("a", 100)])));
        let skewed = check_with_skew(&h, std::time::Duration::from_micros(100));
        assert!(skewed.anomalies.is_empty(), "{:?}", skewed.anomalies);
        // Beyond the bound it is still stale.
        let tight = check_with_skew(&h, std::time::Duration::from_micros(40));
        assert_eq!(tight.anomalies.len(), 1, "{:?}", tight.anomalies);
        assert_eq!(tight.anomalies[0].kind, Kind::Stale);
    }

    #[test]
    fn a_linearizable_read_missing_an_acknowledged_message_is_stale() {
        let mut h = clean();
        // b was acknowledged at 210; a read beginning at 260 sees only a.
        h.push(read(8, 260, 0, seen(1, &[("a", 100)])));
        let r = check(&h);
        assert_eq!(kinds(&h), vec![Kind::Stale], "{:?}", r.anomalies);
        assert_eq!(r.anomalies[0].key, "b");
        // A page the cluster cut short only holds the first messages of the window.
        let mut h = clean();
        let mut cut = read(8, 260, 0, seen(1, &[("a", 100)]));
        if let Event::Read { truncated, .. } = &mut cut {
            *truncated = true;
        }
        h.push(cut);
        assert_eq!(kinds(&h), vec![]);
        // Outside the read's window (committed at or before its cursor): not stale.
        let mut h = clean();
        h.push(read(8, 260, 250, seen(1, &[])));
        assert_eq!(kinds(&h), vec![]);
        // A local read missing it is listed as stale_local, and the verdict still passes.
        let mut h = clean();
        let mut local = read(8, 260, 0, seen(1, &[("a", 100)]));
        if let Event::Read { linearizable, .. } = &mut local {
            *linearizable = false;
        }
        h.push(local);
        assert_eq!(kinds(&h), vec![Kind::StaleLocal]);
        assert_eq!(check(&h).verdict, Verdict::Pass);
    }

    #[test]
    fn a_reader_seeing_less_than_before_is_non_monotonic() {
        let mut h = clean();
        h.push(read(8, 400, 0, seen(1, &[("a", 100), ("b", 200)])));
        // A local read by the same reader, whose cursor did not move, no longer sees them.
        let mut later = read(8, 600, 0, seen(1, &[]));
        if let Event::Read { linearizable, .. } = &mut later {
            *linearizable = false;
        }
        h.push(later);
        let r = check(&h);
        // (It is also a stale local read: both were acknowledged before it began.)
        assert_eq!(
            kinds(&h),
            vec![
                Kind::NonMonotonic,
                Kind::NonMonotonic,
                Kind::StaleLocal,
                Kind::StaleLocal
            ],
            "{:?}",
            r.anomalies
        );
        assert_eq!(r.anomalies[0].key, "a");
    }

    /// A message sent with a client clock far behind: sent at 10 µs, committed at 500 µs.
    fn late_clock() -> Vec<Event> {
        let mut h = clean();
        h.retain(|e| !matches!(e, Event::Final { .. }));
        h.push(send("e", 1, 10, 510, Outcome::Ok));
        let mut list = seen(1, &[("a", 100), ("b", 200), ("c", 300)]);
        list.push(Seen {
            chat: 1,
            id: 4,
            key: "e".into(),
            sent_us: 10,
            committed_us: 500,
        });
        h.push(fin("r1", list.clone()));
        h.push(fin("r2", list));
        h
    }

    #[test]
    fn a_poll_missing_a_message_committed_after_its_cursor_is_stale() {
        // The poller's next poll, after c (committed at 300), misses e: committed at 500,
        // acknowledged at 510, before the poll began. Its send time (10 µs, before the
        // cursor) does not matter: windows follow committed_at.
        let mut h = late_clock();
        h.push(read(9, 600, 300, seen(1, &[])));
        let r = check(&h);
        assert_eq!(kinds(&h), vec![Kind::Stale], "{:?}", r.anomalies);
        assert_eq!(r.anomalies[0].key, "e");
        assert!(
            r.anomalies[0].detail.contains("committed at 500 µs")
                && r.anomalies[0].detail.contains("with cursor 300 µs"),
            "{:?}",
            r.anomalies
        );
        // Returned, it passes.
        let mut h = late_clock();
        let mut e = seen(1, &[("e", 500)]);
        e[0].sent_us = 10;
        h.push(read(9, 600, 300, e));
        assert_eq!(
            check(&h).verdict,
            Verdict::Pass,
            "{:?}",
            check(&h).anomalies
        );
        // A poll invoked before e was acknowledged need not return it.
        let mut h = late_clock();
        h.push(read(9, 505, 300, seen(1, &[])));
        assert_eq!(kinds(&h), vec![]);
    }

    #[test]
    fn a_page_cut_short_is_held_to_its_window_up_to_its_last_message() {
        // A cut page that returned a, then c, skipping b in between: stale.
        let mut h = clean();
        let mut cut = read(8, 400, 0, seen(1, &[("a", 100), ("c", 300)]));
        if let Event::Read { truncated, .. } = &mut cut {
            *truncated = true;
        }
        h.push(cut);
        let r = check(&h);
        assert_eq!(kinds(&h), vec![Kind::Stale], "{:?}", r.anomalies);
        assert_eq!(r.anomalies[0].key, "b");
    }

    #[test]
    fn a_message_returned_twice_to_one_poller_is_a_duplicate() {
        // The poller's cursor did not move past b, and the poll returned it again.
        let mut h = clean();
        h.push(read(8, 260, 150, seen(1, &[("b", 200)])));
        h.push(read(8, 400, 150, seen(1, &[("b", 200), ("c", 300)])));
        let r = check(&h);
        assert_eq!(kinds(&h), vec![Kind::Duplicate], "{:?}", r.anomalies);
        assert_eq!(r.anomalies[0].key, "b");
        assert!(r.anomalies[0].detail.contains("returned it again"));
        // Twice in one poll, too.
        let mut h = clean();
        h.push(read(8, 260, 150, seen(1, &[("b", 200), ("b", 200)])));
        assert_eq!(kinds(&h), vec![Kind::Duplicate]);
        // Another poller seeing it is no duplicate.
        let mut h = clean();
        h.push(read(8, 260, 150, seen(1, &[("b", 200)])));
        h.push(read(6, 400, 150, seen(1, &[("b", 200), ("c", 300)])));
        assert_eq!(kinds(&h), vec![]);
    }

    #[test]
    fn a_message_at_or_before_the_cursor_is_reported() {
        // At the cursor.
        let mut h = clean();
        h.push(read(8, 260, 200, seen(1, &[("b", 200)])));
        let r = check(&h);
        assert_eq!(kinds(&h), vec![Kind::BeforeCursor], "{:?}", r.anomalies);
        assert_eq!(r.anomalies[0].key, "b");
        assert_eq!(r.verdict, Verdict::Fail);
        // Before it (and returned again to the poller that had it: said once).
        let mut h = clean();
        h.push(read(9, 400, 300, seen(1, &[("b", 200)])));
        assert_eq!(kinds(&h), vec![Kind::BeforeCursor]);
        // Without a committed_at at all.
        let mut h = clean();
        let mut m = seen(1, &[("b", 200)]);
        m[0].committed_us = 0;
        h.push(read(8, 260, 150, m));
        let r = check(&h);
        assert_eq!(kinds(&h), vec![Kind::BeforeCursor]);
        assert!(r.anomalies[0].detail.contains("without a committed_at"));
    }

    #[test]
    fn lists_out_of_commit_order_or_with_another_committed_at_are_caught() {
        // A poll over two chats, out of commit order: reordered, though each chat's part is
        // in its final order.
        let mut h = clean();
        h.push(send("x", 2, 150, 160, Outcome::Ok));
        h.push(Event::Final {
            replica: "r1".into(),
            chat: 2,
            messages: seen(2, &[("x", 150)]),
            reference: false,
            not_found: None,
        });
        let mut both = seen(1, &[("b", 200)]);
        both.extend(seen(2, &[("x", 150)]));
        let mut poll = read(8, 260, 120, both);
        if let Event::Read { chats, .. } = &mut poll {
            *chats = vec![1, 2];
        }
        h.push(poll);
        let r = check(&h);
        assert_eq!(kinds(&h), vec![Kind::Reordered], "{:?}", r.anomalies);
        assert!(r.anomalies[0].detail.contains("committed_at order"));
        // A replica giving a message another committed_at than the reference: divergent.
        let mut h = clean();
        h.retain(|e| !matches!(e, Event::Final { replica, .. } if replica == "r2"));
        let mut other = seen(1, &[("a", 100), ("b", 200), ("c", 300)]);
        other[1].committed_us = 250;
        h.push(fin("r2", other));
        let r = check(&h);
        assert_eq!(kinds(&h), vec![Kind::Divergent], "{:?}", r.anomalies);
        assert!(r.anomalies[0].detail.contains("committed_at 250"));
    }

    #[test]
    fn replicas_that_disagree_are_divergent() {
        let mut h = clean();
        h.retain(|e| !matches!(e, Event::Final { replica, .. } if replica == "r2"));
        h.push(fin("r2", seen(1, &[("a", 100), ("c", 300), ("b", 200)])));
        assert_eq!(kinds(&h), vec![Kind::Divergent]);
    }

    #[test]
    fn the_elle_export_pairs_every_invocation_with_its_completion() {
        let ops = to_elle(&clean());
        // 4 sends and 2 final reads, each an invocation and a completion.
        assert_eq!(ops.len(), 12);
        let kinds: Vec<&str> = ops.iter().map(|o| o["type"].as_str().unwrap()).collect();
        assert_eq!(kinds.iter().filter(|k| **k == "invoke").count(), 6);
        assert_eq!(
            kinds.iter().filter(|k| **k == "info").count(),
            1,
            "the unknown send"
        );
        assert_eq!(kinds.iter().filter(|k| **k == "fail").count(), 1);
        let last = &ops[11];
        assert_eq!(last["value"], serde_json::json!([["r", 1, [1, 2, 3]]]));
        assert!(
            ops.windows(2)
                .all(|w| w[0]["time"].as_u64() <= w[1]["time"].as_u64())
        );
    }

    #[test]
    fn replicas_with_different_state_digests_are_divergent() {
        let digest = |replica: &str, d: &str| Event::Digest {
            replica: replica.into(),
            applied_index: 40,
            digest: d.into(),
        };
        let mut h = clean();
        h.push(digest("r1", "abc"));
        h.push(digest("r2", "abc"));
        assert_eq!(kinds(&h), vec![]);
        // At another index, a digest describes another state: not compared.
        h.push(Event::Digest {
            replica: "r4".into(),
            applied_index: 39,
            digest: "abz".into(),
        });
        assert_eq!(kinds(&h), vec![]);
        h.push(digest("r3", "abd"));
        assert_eq!(kinds(&h), vec![Kind::Divergent]);
    }

    #[test]
    fn a_lagging_replica_holding_a_prefix_is_not_divergent() {
        let lagging = |applied| Event::Lagging {
            replica: "r2".into(),
            applied_index: applied,
            target_index: 40,
        };
        let mut h = clean();
        h.retain(|e| !matches!(e, Event::Final { replica, .. } if replica == "r2"));
        h.push(fin("r2", seen(1, &[("a", 100), ("b", 200)])));
        // Caught up, it would be divergent.
        assert_eq!(kinds(&h), vec![Kind::Divergent]);
        h.push(lagging(30));
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.anomalies);
        assert_eq!(r.lagging.len(), 1);
        // Even lagging, a list that is not a prefix is divergent.
        h.retain(|e| !matches!(e, Event::Final { replica, .. } if replica == "r2"));
        h.push(fin("r2", seen(1, &[("b", 200)])));
        assert_eq!(kinds(&h), vec![Kind::Divergent]);
    }

    #[test]
    fn the_leaders_read_is_the_reference_whatever_the_order() {
        let mut h = clean();
        h.retain(|e| !matches!(e, Event::Final { .. }));
        h.push(fin("r2", seen(1, &[("a", 100), ("c", 300), ("b", 200)])));
        let mut leader = fin("r1", seen(1, &[("a", 100), ("b", 200), ("c", 300)]));
        if let Event::Final { reference, .. } = &mut leader {
            *reference = true;
        }
        h.push(leader);
        let r = check(&h);
        assert_eq!(kinds(&h), vec![Kind::Divergent]);
        assert!(
            r.anomalies[0].detail.starts_with("r2 has"),
            "{:?}",
            r.anomalies
        );
    }

    #[test]
    fn not_found_for_a_member_is_definite_and_everything_acknowledged_is_lost() {
        let mut h = clean();
        h.retain(|e| !matches!(e, Event::Final { .. } | Event::Read { .. }));
        h.push(Event::Final {
            replica: "r1 (linearizable)".into(),
            chat: 1,
            messages: vec![],
            reference: true,
            not_found: Some("user 7 not found".into()),
        });
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(kinds(&h), vec![Kind::Lost, Kind::Lost]);
        assert!(
            r.anomalies[0].detail.contains("NOT_FOUND"),
            "{:?}",
            r.anomalies
        );
    }

    #[test]
    fn a_chat_that_could_not_be_read_makes_the_check_incomplete() {
        let mut h = clean();
        h.push(Event::Unread {
            replica: Some("r3".into()),
            chat: Some(1),
            reason: "Internal".into(),
        });
        let r = check(&h);
        assert_eq!((r.verdict, r.unread_chats), (Verdict::Incomplete, 1));
        // An anomaly still fails it.
        h.push(read(8, 260, 0, seen(1, &[("a", 100)])));
        assert_eq!(check(&h).verdict, Verdict::Fail);
        // No final list at all for a chat with acknowledged messages: incomplete, not pass.
        let mut h = clean();
        h.retain(|e| !matches!(e, Event::Final { .. }));
        h.retain(|e| !matches!(e, Event::Read { .. }));
        let r = check(&h);
        assert_eq!((r.verdict, r.unread_chats), (Verdict::Incomplete, 1));
        // Nothing could be read at all: incomplete, with the reason.
        let r = check(&[Event::Unread {
            replica: None,
            chat: None,
            reason: "no replica answered".into(),
        }]);
        assert_eq!(r.verdict, Verdict::Incomplete);
        assert_eq!(r.reason.as_deref(), Some("no replica answered"));
    }

    #[test]
    fn kinds_are_counted_under_their_serialized_names() {
        for k in Kind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.name());
        }
    }

    #[test]
    fn histories_round_trip_through_json_lines() {
        for e in clean() {
            let line = serde_json::to_string(&e).unwrap();
            assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), e);
        }
        assert_eq!(key_of(&format!("{} hello", message_key(3, 9))), "k3-9");
    }

    #[test]
    fn an_older_history_is_recognised() {
        // A poll and a final list as loadgen wrote them before committed_at cursors.
        let old_read = r#"{"type":"read","client":1,"invoke_us":5,"complete_us":9,"outcome":"ok","user":7,"after_us":1,"linearizable":true,"chats":[1],"messages":[{"chat":1,"id":1,"key":"k1-1","sent_us":3}]}"#;
        let old_final = r#"{"type":"final","replica":"r1","chat":1,"messages":[{"chat":1,"id":1,"key":"k1-1","sent_us":3}]}"#;
        for line in [old_read, old_final] {
            assert!(serde_json::from_str::<Event>(line).is_err(), "{line}");
            assert!(crate::history::is_old_format(line), "{line}");
        }
        for e in clean() {
            let line = serde_json::to_string(&e).unwrap();
            assert!(!crate::history::is_old_format(&line), "{line}");
        }
    }
}
