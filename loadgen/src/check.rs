//! The history checker: did the chats keep every acknowledged message, once, in one order?
//!
//! Each chat is an append-only list. `SendMessage` appends a message; the generator puts a
//! unique key (`k<client>-<sequence>`) at the start of every message's content, so a message
//! can be recognised wherever it shows up. `GetMessages` reads part of the lists of the
//! reader's chats: the messages whose (client-chosen) send time is after the read's `after`
//! time, in the cluster's order. After the load, every chat's whole list is read from every
//! replica (a `Final` event each).
//!
//! From a history of such events the checker reports:
//! - **lost**: an acknowledged message missing from its chat's final list;
//! - **phantom**: a message in a read or a final list that no client sent, or whose send
//!   definitely failed;
//! - **duplicate**: a message twice in one list;
//! - **reordered**: a read whose messages of one chat are not in the final list's order;
//! - **stale**: a linearizable read missing a message of one of the reader's chats that was
//!   acknowledged before the read began and falls inside the read's window;
//! - **non-monotonic**: a reader missing a message that an earlier read of the same reader
//!   (completed before this one began) returned, and that falls inside this read's window;
//! - **divergent**: replicas whose final lists of a chat differ;
//! - **stale_local**: what would be stale, in a `local` read. Local reads may be stale by
//!   design, so these are listed and counted but do not fail the verdict.
//!
//! Sends with an indeterminate outcome (a timeout, a lost connection) may appear or not, but
//! at most once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It succeeded (and its result is recorded).
    Ok,
    /// The cluster definitely did not do it.
    Fail,
    /// It may or may not have happened (no answer, or the cluster could not tell).
    Unknown,
}

/// A message as a read returned it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub chat: u64,
    pub id: u64,
    /// The key at the start of the content, or the whole content when it has none.
    pub key: String,
    pub sent_us: i64,
}

/// One entry of `history.jsonl`. Times are microseconds since the run began.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Send {
        client: u64,
        invoke_us: u64,
        complete_us: u64,
        outcome: Outcome,
        chat: u64,
        user: u64,
        key: String,
        /// The send time written into the message (microseconds since the Unix epoch).
        sent_us: i64,
        message_id: Option<u64>,
    },
    Read {
        client: u64,
        invoke_us: u64,
        complete_us: u64,
        outcome: Outcome,
        user: u64,
        /// The read asked for messages sent after this time (µs since the Unix epoch).
        after_us: i64,
        linearizable: bool,
        /// The chats the reader was a member of when the read began (joins acknowledged).
        chats: Vec<u64>,
        messages: Vec<Seen>,
    },
    /// A chat's whole list, read from one replica after the load.
    Final {
        replica: String,
        chat: u64,
        messages: Vec<Seen>,
    },
    /// A replica's state digest after the load, once the replicas applied the same entries.
    Digest {
        replica: String,
        applied_index: u64,
        digest: String,
    },
}

/// The kind of an anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Lost,
    Phantom,
    Duplicate,
    Reordered,
    Stale,
    NonMonotonic,
    Divergent,
    /// Stale, but by a `local` read, which the consistency asked for allows: listed, and
    /// not a failure.
    StaleLocal,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    pub kind: Kind,
    pub chat: u64,
    /// The message concerned, by key.
    pub key: String,
    pub detail: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub sends_ok: u64,
    pub sends_failed: u64,
    pub sends_unknown: u64,
    pub reads: u64,
    pub final_messages: u64,
    pub anomalies: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `pass` or `fail`.
    pub verdict: String,
    pub counts: Counts,
    /// Every anomaly found (in order of kind, then chat).
    pub anomalies: Vec<Anomaly>,
}

/// The key a generator puts at the start of message content: `k<client>-<sequence>`.
pub fn message_key(client: u64, sequence: u64) -> String {
    format!("k{client}-{sequence}")
}

/// The key of a message's content: its first word.
pub fn key_of(content: &str) -> String {
    content.split(' ').next().unwrap_or_default().to_string()
}

struct Sent {
    outcome: Outcome,
    chat: u64,
    sent_us: i64,
    complete_us: u64,
}

/// Checks a history.
pub fn check(history: &[Event]) -> Report {
    let mut out = Vec::new();
    let mut counts = Counts::default();
    let mut sent: HashMap<&str, Sent> = HashMap::new();
    for e in history {
        if let Event::Send {
            outcome,
            chat,
            key,
            sent_us,
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
                key,
                Sent {
                    outcome: *outcome,
                    chat: *chat,
                    sent_us: *sent_us,
                    complete_us: *complete_us,
                },
            );
        }
    }

    // Final lists: one per chat per replica; they must agree.
    let mut finals: BTreeMap<u64, Vec<(&str, &[Seen])>> = BTreeMap::new();
    for e in history {
        if let Event::Final {
            replica,
            chat,
            messages,
        } = e
        {
            finals.entry(*chat).or_default().push((replica, messages));
        }
    }
    let mut order: BTreeMap<u64, HashMap<&str, usize>> = BTreeMap::new();
    for (chat, lists) in &finals {
        let (first_replica, reference) = lists[0];
        counts.final_messages += reference.len() as u64;
        for (replica, list) in &lists[1..] {
            let keys = |l: &[Seen]| l.iter().map(|m| m.key.clone()).collect::<Vec<_>>();
            if keys(list) != keys(reference) {
                out.push(Anomaly {
                    kind: Kind::Divergent,
                    chat: *chat,
                    key: String::new(),
                    detail: format!(
                        "{replica} has {} messages, {first_replica} has {}",
                        list.len(),
                        reference.len()
                    ),
                });
            }
        }
        check_list(
            &sent,
            *chat,
            reference,
            &format!("final list ({first_replica})"),
            &mut out,
        );
        order.insert(
            *chat,
            reference
                .iter()
                .enumerate()
                .map(|(i, m)| (m.key.as_str(), i))
                .collect(),
        );
    }

    // The replicas' whole states must be equal too.
    let digests: Vec<(&str, u64, &str)> = history
        .iter()
        .filter_map(|e| match e {
            Event::Digest {
                replica,
                applied_index,
                digest,
            } => Some((replica.as_str(), *applied_index, digest.as_str())),
            _ => None,
        })
        .collect();
    if let Some(first) = digests.first() {
        for d in &digests[1..] {
            if (d.1, d.2) != (first.1, first.2) {
                out.push(Anomaly {
                    kind: Kind::Divergent,
                    chat: 0,
                    key: String::new(),
                    detail: format!(
                        "state digest of {} at index {} is {}, of {} at index {} is {}",
                        d.0, d.1, d.2, first.0, first.1, first.2
                    ),
                });
            }
        }
    }

    // Lost: acknowledged, but not in the final list of its chat.
    let mut lost: Vec<(&str, &Sent)> = sent
        .iter()
        .filter(|(_, s)| s.outcome == Outcome::Ok)
        .filter(|(k, s)| order.get(&s.chat).is_some_and(|o| !o.contains_key(*k)))
        .map(|(k, s)| (*k, s))
        .collect();
    lost.sort_by_key(|(k, _)| *k);
    for (key, s) in lost {
        out.push(Anomaly {
            kind: Kind::Lost,
            chat: s.chat,
            key: key.to_string(),
            detail: format!(
                "acknowledged at {} µs, missing from the final list",
                s.complete_us
            ),
        });
    }

    // Reads, in completion order per reader.
    let mut reads: Vec<&Event> = history
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
    // Per reader (client, user): (completion time, messages) of its reads so far.
    type Earlier<'a> = Vec<(u64, &'a [Seen])>;
    let mut last_seen: HashMap<(u64, u64), Earlier> = HashMap::new();
    for e in &reads {
        let Event::Read {
            client,
            invoke_us,
            complete_us,
            user,
            after_us,
            linearizable,
            chats,
            messages,
            ..
        } = e
        else {
            continue;
        };
        counts.reads += 1;
        let what = format!("read by client {client} (user {user}) at {invoke_us} µs");
        let mut by_chat: BTreeMap<u64, Vec<Seen>> = BTreeMap::new();
        for m in messages.iter() {
            by_chat.entry(m.chat).or_default().push(m.clone());
        }
        for (chat, list) in &by_chat {
            check_list(&sent, *chat, list, &what, &mut out);
            // Reordered: the read's order must follow the final order.
            if let Some(o) = order.get(chat) {
                let positions: Vec<usize> = list
                    .iter()
                    .filter_map(|m| o.get(m.key.as_str()).copied())
                    .collect();
                if let Some(w) = positions.windows(2).find(|w| w[0] > w[1]) {
                    out.push(Anomaly {
                        kind: Kind::Reordered,
                        chat: *chat,
                        key: list
                            .iter()
                            .find(|m| o.get(m.key.as_str()) == Some(&w[1]))
                            .map(|m| m.key.clone())
                            .unwrap_or_default(),
                        detail: format!("{what} has final positions {} before {}", w[0], w[1]),
                    });
                }
            }
        }
        let returned: HashSet<&str> = messages.iter().map(|m| m.key.as_str()).collect();
        let in_window = |chat: u64, sent_us: i64| chats.contains(&chat) && sent_us > *after_us;
        // Stale: acknowledged before this read began, in its window, but not returned. A
        // local read may be stale by design: those are listed as `stale_local`.
        {
            let mut missing: Vec<(&str, &Sent)> = sent
                .iter()
                .filter(|(k, s)| {
                    s.outcome == Outcome::Ok
                        && s.complete_us < *invoke_us
                        && in_window(s.chat, s.sent_us)
                        && !returned.contains(*k)
                })
                .map(|(k, s)| (*k, s))
                .collect();
            missing.sort_by_key(|(k, _)| *k);
            for (key, s) in missing {
                out.push(Anomaly {
                    kind: if *linearizable {
                        Kind::Stale
                    } else {
                        Kind::StaleLocal
                    },
                    chat: s.chat,
                    key: key.to_string(),
                    detail: format!("{what} misses it, acknowledged at {} µs", s.complete_us),
                });
            }
        }
        // Non-monotonic: an earlier read of this reader (finished before this one began)
        // returned a message in this read's window that this read lacks.
        let history_of = last_seen.entry((*client, *user)).or_default();
        let mut reported = BTreeSet::new();
        for (done, earlier) in history_of.iter() {
            if *done >= *invoke_us {
                continue;
            }
            for m in earlier.iter() {
                if in_window(m.chat, m.sent_us)
                    && !returned.contains(m.key.as_str())
                    && reported.insert(m.key.clone())
                {
                    out.push(Anomaly {
                        kind: Kind::NonMonotonic,
                        chat: m.chat,
                        key: m.key.clone(),
                        detail: format!(
                            "{what} no longer shows it; a read finished at {done} µs did"
                        ),
                    });
                }
            }
        }
        history_of.push((*complete_us, messages));
    }

    out.sort_by(|a, b| (a.kind, a.chat, &a.key).cmp(&(b.kind, b.chat, &b.key)));
    for a in &out {
        let name = serde_json::to_value(a.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        *counts.anomalies.entry(name).or_insert(0) += 1;
    }
    let failed = out.iter().any(|a| a.kind != Kind::StaleLocal);
    Report {
        verdict: if failed { "fail" } else { "pass" }.into(),
        counts,
        anomalies: out,
    }
}

/// The history in Elle's list-append form, one JSON object per line (invocations and
/// completions, as elle-cli reads with `--model list-append`): each chat is a key, each
/// message an append of a number unique to it. Sends are exported whole. Polls read only a
/// window of each chat, which Elle would take for a whole list, so the reads exported are the
/// final whole-chat reads (one process per replica, after every send).
pub fn to_elle(history: &[Event]) -> Vec<serde_json::Value> {
    use serde_json::json;
    let mut number: HashMap<&str, u64> = HashMap::new();
    let mut process: HashMap<String, u64> = HashMap::new();
    let mut ops: Vec<(u64, serde_json::Value)> = Vec::new();
    let mut last = 0;
    for e in history {
        if let Event::Send {
            client,
            invoke_us,
            complete_us,
            outcome,
            chat,
            key,
            ..
        } = e
        {
            let n = number.len() as u64 + 1;
            let v = *number.entry(key).or_insert(n);
            let next = process.len() as u64;
            let p = *process.entry(format!("client {client}")).or_insert(next);
            let value = json!([["append", chat, v]]);
            ops.push((*invoke_us, json!({"type": "invoke", "f": "txn", "value": value, "process": p, "time": invoke_us * 1000})));
            let kind = match outcome {
                Outcome::Ok => "ok",
                Outcome::Fail => "fail",
                Outcome::Unknown => "info",
            };
            ops.push((*complete_us, json!({"type": kind, "f": "txn", "value": value, "process": p, "time": complete_us * 1000})));
            last = last.max(*complete_us);
        }
    }
    let mut t = last + 1;
    for e in history {
        if let Event::Final {
            replica,
            chat,
            messages,
        } = e
        {
            let next = process.len() as u64;
            let p = *process.entry(format!("final {replica}")).or_insert(next);
            let values: Vec<Option<u64>> = messages
                .iter()
                .map(|m| number.get(m.key.as_str()).copied())
                .collect();
            let read = json!([["r", chat, values]]);
            ops.push((t, json!({"type": "invoke", "f": "txn", "value": [["r", chat, null]], "process": p, "time": t * 1000})));
            ops.push((t + 1, json!({"type": "ok", "f": "txn", "value": read, "process": p, "time": (t + 1) * 1000})));
            t += 2;
        }
    }
    ops.sort_by_key(|(at, _)| *at);
    ops.into_iter()
        .enumerate()
        .map(|(i, (_, mut op))| {
            op["index"] = json!(i);
            op
        })
        .collect()
}

/// Phantoms and duplicates within one list.
fn check_list(
    sent: &HashMap<&str, Sent>,
    chat: u64,
    list: &[Seen],
    what: &str,
    out: &mut Vec<Anomaly>,
) {
    let mut seen = HashSet::new();
    for m in list {
        if !seen.insert(m.key.as_str()) {
            out.push(Anomaly {
                kind: Kind::Duplicate,
                chat,
                key: m.key.clone(),
                detail: format!("twice in the {what}"),
            });
        }
        match sent.get(m.key.as_str()) {
            None => out.push(Anomaly {
                kind: Kind::Phantom,
                chat,
                key: m.key.clone(),
                detail: format!("in the {what}, but no client sent it"),
            }),
            Some(s) if s.outcome == Outcome::Fail => out.push(Anomaly {
                kind: Kind::Phantom,
                chat,
                key: m.key.clone(),
                detail: format!("in the {what}, but its send definitely failed"),
            }),
            Some(s) if s.chat != chat => out.push(Anomaly {
                kind: Kind::Phantom,
                chat,
                key: m.key.clone(),
                detail: format!(
                    "in the {what} of chat {chat}, but it was sent to chat {}",
                    s.chat
                ),
            }),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn seen(chat: u64, keys: &[(&str, i64)]) -> Vec<Seen> {
        keys.iter()
            .enumerate()
            .map(|(i, (k, t))| Seen {
                chat,
                id: i as u64 + 1,
                key: k.to_string(),
                sent_us: *t,
            })
            .collect()
    }

    fn read(client: u64, at: u64, after_us: i64, messages: Vec<Seen>) -> Event {
        Event::Read {
            client,
            invoke_us: at,
            complete_us: at + 5,
            outcome: Outcome::Ok,
            user: 7,
            after_us,
            linearizable: true,
            chats: vec![1],
            messages,
        }
    }

    fn fin(replica: &str, messages: Vec<Seen>) -> Event {
        Event::Final {
            replica: replica.into(),
            chat: 1,
            messages,
        }
    }

    /// A clean history: two acknowledged sends, an unknown one that happened, reads that
    /// see a growing prefix, and agreeing replicas.
    fn clean() -> Vec<Event> {
        vec![
            send("a", 1, 100, 110, Outcome::Ok),
            send("b", 1, 200, 210, Outcome::Ok),
            send("c", 1, 300, 310, Outcome::Unknown),
            send("d", 1, 400, 410, Outcome::Fail),
            read(9, 150, 0, seen(1, &[("a", 100)])),
            read(9, 250, 0, seen(1, &[("a", 100), ("b", 200)])),
            read(9, 350, 150, seen(1, &[("b", 200), ("c", 300)])),
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
        assert_eq!(r.verdict, "pass", "{:?}", r.anomalies);
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
        assert_eq!(check(&h).verdict, "pass");
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
            9,
            500,
            0,
            seen(1, &[("b", 200), ("a", 100), ("c", 300)]),
        ));
        assert_eq!(kinds(&h), vec![Kind::Reordered]);
    }

    #[test]
    fn a_linearizable_read_missing_an_acknowledged_message_is_stale() {
        let mut h = clean();
        // b was acknowledged at 210; a read beginning at 260 sees only a.
        h.push(read(8, 260, 0, seen(1, &[("a", 100)])));
        let r = check(&h);
        assert_eq!(kinds(&h), vec![Kind::Stale], "{:?}", r.anomalies);
        assert_eq!(r.anomalies[0].key, "b");
        // Outside the read's window (sent before `after`), or a local read: not stale.
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
        assert_eq!(check(&h).verdict, "pass");
    }

    #[test]
    fn a_reader_seeing_less_than_before_is_non_monotonic() {
        let mut h = clean();
        // A local read (so not stale) by the same reader after it saw a, b and c.
        let mut later = read(9, 600, 0, seen(1, &[("a", 100), ("c", 300)]));
        if let Event::Read { linearizable, .. } = &mut later {
            *linearizable = false;
        }
        h.push(later);
        let r = check(&h);
        // (It is also a stale local read: b was acknowledged before it began.)
        assert_eq!(
            kinds(&h),
            vec![Kind::NonMonotonic, Kind::StaleLocal],
            "{:?}",
            r.anomalies
        );
        assert_eq!(r.anomalies[0].key, "b");
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
        h.push(digest("r3", "abd"));
        assert_eq!(kinds(&h), vec![Kind::Divergent]);
    }

    #[test]
    fn histories_round_trip_through_json_lines() {
        for e in clean() {
            let line = serde_json::to_string(&e).unwrap();
            assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), e);
        }
        assert_eq!(key_of(&format!("{} hello", message_key(3, 9))), "k3-9");
    }
}
