//! `SendMessage`: a member of a chat sends a message whose content starts with a key unique
//! to this write, which the history checker recognises the message by.

use crate::system::ChatConn;
use prost_types::Timestamp;
use rand::Rng;
use telegraft::proto::chat::{SendMessageRequest, SendMessageResponse};
use telegraft::proto::time;

use super::{Caller, OpEnv, Operation};
use crate::history::{self, CallTimes, Event};
use crate::load::client::Failure;

pub(crate) struct SendMessage;

pub(crate) struct Note {
    chat: u64,
    user: u64,
    key: String,
    sent_time: Timestamp,
}

impl Operation for SendMessage {
    type Request = SendMessageRequest;
    type Reply = SendMessageResponse;
    type Note = Note;

    fn prepare(env: &OpEnv, caller: &mut Caller) -> Option<(SendMessageRequest, Note)> {
        let (chat_id, user_id) = env.population.random_member(&mut caller.rng, env.picks)?;
        let len = env.sizes.draw(&mut caller.rng);
        let write_id = caller.next_write_id();
        // The key first, then seeded filler up to the drawn length.
        let key = history::message_key(caller.client_id, caller.sequence);
        let fill = len.saturating_sub(key.len() + 1);
        let from = caller.rng.random_range(0..=env.filler.len() - fill);
        let sent_time = time::now();
        let request = SendMessageRequest {
            user_id,
            chat_id,
            content: format!("{key} {}", &env.filler[from..from + fill]),
            sent_time: Some(sent_time),
            write_id,
        };
        let note = Note {
            chat: chat_id,
            user: user_id,
            key,
            sent_time,
        };
        Some((request, note))
    }

    fn execute(
        client: &mut ChatConn,
        request: SendMessageRequest,
    ) -> impl Future<Output = Result<tonic::Response<SendMessageResponse>, tonic::Status>> + Send
    {
        client.send_message(request)
    }

    fn event(
        at: CallTimes,
        note: Note,
        result: &Result<SendMessageResponse, Failure>,
    ) -> Option<Event> {
        Some(history::send_event(
            at,
            note.chat,
            note.user,
            note.key,
            &note.sent_time,
            result,
        ))
    }
}
