//! After the load: what the replicas hold, for the history checker, in phases:
//!
//! 1. find the leader (waiting up to [`LEADER_WAIT`] for one) and its commit index;
//! 2. wait (up to [`SETTLE`]) until every live replica (one that answers the status poller)
//!    has applied that index; a replica still behind is recorded as lagging (`Lagging`),
//!    one that does not answer as down (`Down`);
//! 3. record each live replica's state digest;
//! 4. read every chat whole from the leader, linearizably: the reference (`Final` with
//!    `reference`), retried a few times;
//! 5. read every chat whole from every live replica's own state (LOCAL).
//!
//! A read that fails is recorded (`Unread`), never left out silently; with no replica
//! answering, or no leader, one `Unread` says so. A NOT_FOUND answer for the chat's member (a
//! user whose creation, or join, was acknowledged) is a definite answer and is recorded as
//! an empty list. Each chat is read through one of its members (`GetMessages` by user,
//! filtered to the chat) by [`read_chat`], the one place a final read is made.

use std::time::Duration;

use telegraft::admin::NodeView;
use telegraft::proto::chat::{Consistency as PbConsistency, GetMessagesRequest};

use super::poller::StatusPoller;
use crate::history::{self, Event, Seen};
use crate::load::{Failure, Population};
use crate::scenario::System;
use crate::system::ChatConn;

/// How long to wait for a leader after the load.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// How long the live replicas get to apply the leader's commit index.
const SETTLE: Duration = Duration::from_secs(15);

/// How long one whole-chat read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages per page of a final read (the most the cluster gives).
const FINAL_PAGE: u32 = 10_000;

/// How many times the reference read of a chat is tried.
const REFERENCE_TRIES: usize = 3;

/// The digests, the whole chats, and whatever could not be read, as history events.
pub async fn read_final(
    poller: &StatusPoller,
    population: &Population,
    system: System,
) -> Vec<Event> {
    let mut events = Vec::new();
    let Some(leader) = find_leader(poller).await else {
        let snap = poller.snapshot();
        let reason = if snap.answering().is_empty() {
            "no replica answered Admin.Status after the load".to_string()
        } else {
            format!("no leader after the load ({})", snap.describe())
        };
        events.push(Event::Unread {
            replica: None,
            chat: None,
            reason,
        });
        return events;
    };
    let live = settle(poller, leader.commit_index, &mut events).await;
    events.extend(live.iter().map(|v| Event::Digest {
        replica: v.addr.clone(),
        applied_index: v.applied_index,
        digest: v.state_digest.clone(),
    }));
    let chats = population.chats_with_a_member();
    events.extend(read_reference(poller, &leader.addr, &chats, system).await);
    for v in &live {
        events.extend(read_all(&v.addr, PbConsistency::Local, &chats, false, system).await);
    }
    events
}

/// The leader after the load, once one calls itself leader (after a fresh poll of every
/// replica), waiting up to [`LEADER_WAIT`] for an election when some replica answers.
async fn find_leader(poller: &StatusPoller) -> Option<NodeView> {
    let snap = poller.fresh(LEADER_WAIT).await;
    if let Some(l) = snap.leader() {
        return Some(l);
    }
    // Nobody answers at all (a target that is not a Telegraft cluster, or every replica
    // down): there is no one to wait for.
    if snap.answering().is_empty() {
        return None;
    }
    let mut rx = poller.subscribe();
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    loop {
        if let Some(l) = rx.borrow_and_update().leader() {
            return Some(l);
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => return None,
        }
    }
}

/// Waits until every replica that answers has applied `target`, or until [`SETTLE`] has
/// passed. Returns the live replicas' latest views; records the lagging and the down ones.
async fn settle(poller: &StatusPoller, target: u64, events: &mut Vec<Event>) -> Vec<NodeView> {
    let mut rx = poller.subscribe();
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let caught_up = rx
            .borrow_and_update()
            .answering()
            .iter()
            .all(|v| v.applied_index >= target);
        if caught_up {
            break;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
    let snap = poller.fresh(Duration::from_secs(5)).await;
    for (addr, polled) in &snap.replicas {
        match &polled.view {
            None => events.push(Event::Down {
                replica: addr.clone(),
            }),
            Some(v) if v.applied_index < target => events.push(Event::Lagging {
                replica: addr.clone(),
                applied_index: v.applied_index,
                target_index: target,
            }),
            Some(_) => {}
        }
    }
    snap.answering()
}

/// Every chat read linearizably from the leader: the reference lists. A chat whose read
/// fails is tried again (asking the poller for the leader anew) before it is recorded as
/// unread.
async fn read_reference(
    poller: &StatusPoller,
    leader: &str,
    chats: &[(u64, u64)],
    system: System,
) -> Vec<Event> {
    let mut events = read_all(leader, PbConsistency::Linearizable, chats, true, system).await;
    for _ in 1..REFERENCE_TRIES {
        let failed: Vec<(u64, u64)> = chats
            .iter()
            .filter(|(chat, _)| {
                events
                    .iter()
                    .any(|e| matches!(e, Event::Unread { chat: Some(c), .. } if c == chat))
            })
            .copied()
            .collect();
        if failed.is_empty() {
            break;
        }
        tokio::time::sleep(StatusPoller::EVERY).await;
        let at = poller
            .snapshot()
            .leader()
            .map_or(leader.to_string(), |v| v.addr);
        let again = read_all(&at, PbConsistency::Linearizable, &failed, true, system).await;
        events.retain(|e| {
            !matches!(e, Event::Unread { chat: Some(c), .. } if failed.iter().any(|(f, _)| f == c))
        });
        events.extend(again);
    }
    events
}

/// Every chat of `chats` (chat, member) read whole from `addr`: a `Final` event each, or an
/// `Unread` one when the read fails.
async fn read_all(
    addr: &str,
    consistency: PbConsistency,
    chats: &[(u64, u64)],
    reference: bool,
    system: System,
) -> Vec<Event> {
    let replica = match consistency {
        PbConsistency::Linearizable => format!("{addr} (linearizable)"),
        _ => addr.to_string(),
    };
    let unread = |chat, reason: String| Event::Unread {
        replica: Some(replica.clone()),
        chat: Some(chat),
        reason,
    };
    let mut c = match ChatConn::connect(system, addr).await {
        Ok(c) => c,
        Err(e) => {
            return chats
                .iter()
                .map(|(chat, _)| unread(*chat, format!("{e:#}")))
                .collect();
        }
    };
    let mut events = Vec::new();
    for &(chat, member) in chats {
        events.push(match read_chat(&mut c, member, chat, consistency).await {
            Ok(messages) => Event::Final {
                replica: replica.clone(),
                chat,
                messages,
                reference,
                not_found: None,
            },
            Err(ReadError::NotFound(answer)) => Event::Final {
                replica: replica.clone(),
                chat,
                messages: Vec::new(),
                reference,
                not_found: Some(answer),
            },
            Err(ReadError::Failed(why)) => unread(chat, why),
        });
    }
    events
}

/// Why a final read gave no list.
enum ReadError {
    /// NOT_FOUND for the member: a definite answer (the message says what was not found).
    NotFound(String),
    /// Anything else: the chat was not read.
    Failed(String),
}

/// One chat read whole from one replica, through one of its members: the one place final
/// reads are made. The cluster answers in pages (`GetMessagesResponse.has_more`); each next
/// page starts after the last message's `committed_at`, which strictly increases in commit
/// order, so every message comes once. All pages together get [`READ_TIMEOUT`].
async fn read_chat(
    client: &mut ChatConn,
    member: u64,
    chat: u64,
    consistency: PbConsistency,
) -> Result<Vec<Seen>, ReadError> {
    let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
    let mut after = None;
    let mut seen = Vec::new();
    loop {
        let req = GetMessagesRequest {
            user_id: member,
            messages_after: after,
            consistency: consistency as i32,
            limit: FINAL_PAGE,
        };
        let page = match tokio::time::timeout_at(deadline, client.get_messages(req)).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) if status.code() == tonic::Code::NotFound => {
                return Err(ReadError::NotFound(status.message().to_string()));
            }
            Ok(Err(status)) => {
                return Err(ReadError::Failed(format!(
                    "{}: {}",
                    Failure::from_status(&status).name(),
                    status.message()
                )));
            }
            Err(_) => return Err(ReadError::Failed(Failure::Timeout.name())),
        };
        seen.extend(
            history::seen(&page.messages)
                .into_iter()
                .filter(|m| m.chat == chat),
        );
        if !page.has_more {
            return Ok(seen);
        }
        match page.messages.last().and_then(|m| m.committed_at) {
            Some(t) => after = Some(t),
            None => {
                return Err(ReadError::Failed(
                    "a page was cut short with no committed_at to go on from".into(),
                ));
            }
        }
    }
}
