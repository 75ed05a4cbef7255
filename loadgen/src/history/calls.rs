//! From a finished call to a history event: how its outcome counts, and what a read
//! returned, as the checker sees it. The operations ([`crate::load`]) call these, so the
//! history's shape is decided here and nowhere else.

use prost_types::Timestamp;
use telegraft::proto::chat::{GetMessagesResponse, Message, SendMessageResponse};
use telegraft::proto::time;

use super::{Event, Outcome, Seen, key_of};
use crate::load::Failure;

impl Outcome {
    /// How a call ended, for the history: a definite refusal by the chat state machine, or
    /// success; anything else (no answer, no leader, a transport error) may or may not have
    /// taken effect.
    pub(crate) fn of<T>(r: &Result<T, Failure>) -> Outcome {
        use tonic::Code;
        match r {
            Ok(_) => Outcome::Ok,
            Err(Failure::Status(
                Code::InvalidArgument
                | Code::NotFound
                | Code::AlreadyExists
                | Code::FailedPrecondition,
            )) => Outcome::Fail,
            Err(_) => Outcome::Unknown,
        }
    }
}

/// Who made a call and when it ran, in microseconds since the run's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CallTimes {
    /// The exactly-once client id of the generator user that made it.
    pub client: u64,
    pub invoke_us: u64,
    pub complete_us: u64,
}

/// A `SendMessage` call: the message `key` sent by `user` to `chat`, with `sent_time` written
/// into it.
pub(crate) fn send_event(
    at: CallTimes,
    chat: u64,
    user: u64,
    key: String,
    sent_time: &Timestamp,
    result: &Result<SendMessageResponse, Failure>,
) -> Event {
    Event::Send {
        client: at.client,
        invoke_us: at.invoke_us,
        complete_us: at.complete_us,
        outcome: Outcome::of(result),
        chat,
        user,
        key,
        sent_us: time::micros(sent_time),
        message_id: result.as_ref().ok().map(|m| m.message_id),
    }
}

/// A `GetMessages` poll by `user` with the cursor `cursor` (messages committed after it),
/// while a member of `chats`.
pub(crate) fn read_event(
    at: CallTimes,
    user: u64,
    cursor: &Timestamp,
    linearizable: bool,
    chats: Vec<u64>,
    result: &Result<GetMessagesResponse, Failure>,
) -> Event {
    Event::Read {
        client: at.client,
        invoke_us: at.invoke_us,
        complete_us: at.complete_us,
        outcome: Outcome::of(result),
        user,
        cursor_us: time::micros(cursor),
        linearizable,
        chats,
        messages: result
            .as_ref()
            .map(|r| seen(&r.messages))
            .unwrap_or_default(),
        truncated: result.as_ref().is_ok_and(|r| r.has_more),
    }
}

/// What a read returned, as the checker sees it.
pub(crate) fn seen(messages: &[Message]) -> Vec<Seen> {
    messages
        .iter()
        .map(|m| Seen {
            chat: m.chat_id,
            id: m.message_id,
            key: key_of(&m.content),
            sent_us: m.sent_time.as_ref().map_or(0, time::micros),
            committed_us: m.committed_at.as_ref().map_or(0, time::micros),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_fail_and_everything_else_that_is_not_ok_is_unknown() {
        let refused: Result<(), _> = Err(Failure::Status(tonic::Code::FailedPrecondition));
        assert_eq!(Outcome::of(&refused), Outcome::Fail);
        let no_leader: Result<(), _> = Err(Failure::Status(tonic::Code::Unavailable));
        assert_eq!(Outcome::of(&no_leader), Outcome::Unknown);
        assert_eq!(
            Outcome::of(&Err::<(), _>(Failure::Timeout)),
            Outcome::Unknown
        );
        assert_eq!(Outcome::of(&Ok::<_, Failure>(())), Outcome::Ok);
    }
}
