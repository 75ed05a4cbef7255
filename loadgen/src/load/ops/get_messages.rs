//! `GetMessages`: a poll for one dataset user's messages since that user's previous poll.
//! Each generator user polls for its own share of the dataset's users in turn.

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
            limit: 0,
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
