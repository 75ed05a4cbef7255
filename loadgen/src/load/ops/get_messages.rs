//! `GetMessages`: a poll for one dataset user's new messages, as a chat client polls. Each
//! generator user polls for its own share of the dataset's users: in turn, or, with
//! `dataset.user_activity: {zipf: S}`, in proportion to each user's activity (an active
//! user's client polls often, a quiet one's seldom and then catches up on more).
//!
//! **The cursor.** The cluster stamps every message with `committed_at`, strictly increasing
//! in commit order, and a poll returns the messages of the user's chats committed after its
//! `messages_after`, in commit order. A poller keeps, per user it polls for, the largest
//! `committed_at` it has seen, and polls with it: so it gets every message exactly once,
//! whatever the clocks of the clients that sent them. Before it has seen any, the cursor is
//! the generator's clock when the run began (a client that starts now wants what comes next,
//! not the chats' whole past). A poll that fails leaves the cursor where it was.
//!
//! **Pages.** A poll asks for the largest page the cluster gives ([`POLL_LIMIT`]). When the
//! cluster cuts the page short (`has_more`), the poller's next poll is for the same user
//! again, from the page's last message: it catches up page by page at its scheduled pace
//! before it moves on to its next user. Each call stays one RPC, so the latency recorded for
//! `get_messages` is always one page's. (The final reads after the load page at once: see
//! `control::final_state`.)

use crate::system::ChatConn;
use prost_types::Timestamp;
use rand::Rng;
use telegraft::proto::chat::{
    Consistency as PbConsistency, GetMessagesRequest, GetMessagesResponse,
};

use super::{Caller, OpEnv, Operation};
use crate::history::{self, CallTimes, Event};
use crate::load::client::Failure;

pub(crate) struct GetMessages;

/// The most messages a page may hold (the cluster clamps larger limits to this).
pub(crate) const POLL_LIMIT: u32 = 10_000;

pub(crate) struct Note {
    /// Which of the caller's polls this is.
    poll: usize,
    user: u64,
    /// The cursor the poll was made with.
    cursor: Timestamp,
    linearizable: bool,
    /// The chats the user was a member of when the poll began.
    chats: Vec<u64>,
}

impl Operation for GetMessages {
    type Request = GetMessagesRequest;
    type Reply = GetMessagesResponse;
    type Note = Note;

    fn prepare(env: &OpEnv, caller: &mut Caller) -> Option<(GetMessagesRequest, Note)> {
        let poll = match &caller.poll_weights {
            // In turn.
            None => {
                let poll = caller.next_poll % caller.polls.len();
                caller.next_poll += 1;
                poll
            }
            // By activity, except to go on with a page cut short.
            Some(weights) => match caller.resume.take() {
                Some(poll) => poll,
                None => caller.rng.sample(weights),
            },
        };
        let (user_id, cursor) = caller.polls[poll];
        let request = GetMessagesRequest {
            user_id,
            messages_after: Some(cursor),
            consistency: env.consistency as i32,
            limit: POLL_LIMIT,
        };
        let note = Note {
            poll,
            user: user_id,
            cursor,
            linearizable: env.consistency == PbConsistency::Linearizable,
            chats: env.population.chats_of(user_id),
        };
        Some((request, note))
    }

    fn execute(
        client: &mut ChatConn,
        request: GetMessagesRequest,
    ) -> impl Future<Output = Result<tonic::Response<GetMessagesResponse>, tonic::Status>> + Send
    {
        client.get_messages(request)
    }

    fn apply(
        _env: &OpEnv,
        caller: &mut Caller,
        note: &Note,
        result: &Result<GetMessagesResponse, Failure>,
    ) {
        let Ok(page) = result else {
            return;
        };
        let cursor = &mut caller.polls[note.poll].1;
        *cursor = next_cursor(*cursor, page);
        if page.has_more {
            // Go on with this user's next page before the next user.
            caller.next_poll = note.poll;
            caller.resume = Some(note.poll);
        }
    }

    fn event(
        at: CallTimes,
        note: Note,
        result: &Result<GetMessagesResponse, Failure>,
    ) -> Option<Event> {
        Some(history::read_event(
            at,
            note.user,
            &note.cursor,
            note.linearizable,
            note.chats,
            result,
        ))
    }
}

/// The cursor after a page: the largest `committed_at` seen (the page's last, since a page is
/// in commit order; the largest, so that a misbehaving cluster cannot move it back).
fn next_cursor(cursor: Timestamp, page: &GetMessagesResponse) -> Timestamp {
    let key = |t: &Timestamp| (t.seconds, t.nanos);
    page.messages
        .iter()
        .filter_map(|m| m.committed_at)
        .fold(cursor, |c, t| if key(&t) > key(&c) { t } else { c })
}

#[cfg(test)]
mod tests {
    use super::*;
    use telegraft::proto::chat::Message;
    use telegraft::proto::time;

    fn at(us: i64) -> Message {
        Message {
            committed_at: Some(time::from_micros(us)),
            ..Message::default()
        }
    }

    #[test]
    fn the_cursor_is_the_largest_committed_at_seen() {
        let start = time::from_micros(1_000);
        let page = |messages| GetMessagesResponse {
            messages,
            has_more: false,
        };
        // Nothing new: the cursor stays.
        assert_eq!(next_cursor(start, &page(vec![])), start);
        // The page's last message.
        let c = next_cursor(start, &page(vec![at(1_500), at(2_000)]));
        assert_eq!(c, time::from_micros(2_000));
        // Never back, and a message without committed_at does not move it.
        let back = next_cursor(c, &page(vec![at(1_200), Message::default()]));
        assert_eq!(back, c);
    }
}
