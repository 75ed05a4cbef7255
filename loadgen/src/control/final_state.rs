//! After the load: what the replicas hold. Waits until they have applied the same entries,
//! then records each replica's state digest and reads every chat whole, once linearizably and
//! then from each replica's own state (LOCAL), for the history checker.

use std::time::{Duration, Instant};

use telegraft::admin;
use telegraft::proto::chat::{Consistency as PbConsistency, GetMessagesRequest};

use crate::history::{self, Event};
use crate::load::{self, Population};

/// How long the replicas get to apply the same entries.
const SETTLE: Duration = Duration::from_secs(15);

/// How long one whole-chat read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The digests and the whole chats as history events. `None` when the target does not
/// answer Admin.Status (not a telegraft cluster): there is nothing to check against.
pub async fn read_final(endpoints: &[String], population: &Population) -> Option<Vec<Event>> {
    if !settle(endpoints).await {
        return None;
    }
    let mut events: Vec<Event> = admin::statuses(endpoints)
        .await
        .into_iter()
        .map(|v| Event::Digest {
            replica: v.addr,
            applied_index: v.applied_index,
            digest: v.state_digest,
        })
        .collect();
    // Each chat linearizably (through the leader), then from every replica's own state.
    let reads = std::iter::once((endpoints[0].as_str(), PbConsistency::Linearizable))
        .chain(endpoints.iter().map(|a| (a.as_str(), PbConsistency::Local)));
    for (addr, consistency) in reads {
        events.extend(read_chats(addr, consistency, population).await);
    }
    Some(events)
}

/// Waits until every replica answers with the same applied index, all of it committed, or
/// until [`SETTLE`] has passed. `false` when no replica answers at all.
async fn settle(endpoints: &[String]) -> bool {
    let deadline = Instant::now() + SETTLE;
    loop {
        let views = admin::statuses(endpoints).await;
        if views.is_empty() {
            return false;
        }
        let settled = views.len() == endpoints.len()
            && views
                .iter()
                .all(|v| v.applied_index == views[0].applied_index)
            && views.iter().all(|v| v.commit_index == v.applied_index);
        if settled || Instant::now() > deadline {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every chat of the population read whole from `addr`, one `Final` event each (a chat whose
/// read fails is left out; a replica that cannot be reached gives none).
async fn read_chats(addr: &str, consistency: PbConsistency, population: &Population) -> Vec<Event> {
    let Ok(mut c) = load::connect(addr).await else {
        return Vec::new();
    };
    let replica = match consistency {
        PbConsistency::Linearizable => format!("{addr} (linearizable)"),
        _ => addr.to_string(),
    };
    let mut events = Vec::new();
    for (chat, member) in population.chats_with_a_member() {
        let req = GetMessagesRequest {
            user_id: member,
            messages_after: Some(prost_types::Timestamp::default()),
            consistency: consistency as i32,
            // The largest page the server gives; paging through whole chats comes next.
            limit: 10_000,
        };
        if let Ok(r) = load::with_timeout(READ_TIMEOUT, c.get_messages(req)).await {
            events.push(Event::Final {
                replica: replica.clone(),
                chat,
                messages: history::seen(&r.messages)
                    .into_iter()
                    .filter(|m| m.chat == chat)
                    .collect(),
            });
        }
    }
    events
}
