//! `GetMessages`: a poll for one dataset user's messages since that user's previous poll.
//! Each generator user polls for its own share of the dataset's users in turn.
//!
//! A poll asks for the largest page the cluster gives ([`POLL_LIMIT`]). The cursor is still
//! the generator's clock at the previous poll, not the last message's `committed_at`; a
//! page cut short (`has_more`) is recorded as truncated, and the checker does not hold such
//! a read to having seen everything in its window.

use prost_types::Timestamp;
use telegraft::proto::chat::chat_client::ChatClient;
use telegraft::proto::chat::{
    Consistency as PbConsistency, GetMessagesRequest, GetMessagesResponse,
};
use telegraft::proto::time;
use tonic::transport::Channel;

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
    after: Timestamp,
    /// When the poll was made: the next poll for this user starts here.
    now: Timestamp,
    linearizable: bool,
    /// The chats the user was a member of when the poll began.
    chats: Vec<u64>,
}

impl Operation for GetMessages {
    type Request = GetMessagesRequest;
    type Reply = GetMessagesResponse;
    type Note = Note;

    fn prepare(env: &OpEnv, caller: &mut Caller) -> Option<(GetMessagesRequest, Note)> {
        let poll = caller.next_poll % caller.polls.len();
        caller.next_poll += 1;
        let (user_id, after) = caller.polls[poll];
        let now = time::now();
        let request = GetMessagesRequest {
            user_id,
            messages_after: Some(after),
            consistency: env.consistency as i32,
            limit: POLL_LIMIT,
        };
        let note = Note {
            poll,
            user: user_id,
            after,
            now,
            linearizable: env.consistency == PbConsistency::Linearizable,
            chats: env.population.chats_of(user_id),
        };
        Some((request, note))
    }

    fn execute(
        client: &mut ChatClient<Channel>,
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
        if result.is_ok() {
            caller.polls[note.poll].1 = note.now;
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
            &note.after,
            note.linearizable,
            note.chats,
            result,
        ))
    }
}
