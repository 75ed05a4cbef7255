//! `JoinChat`: a user joins a chat it is not a member of. The pair is reserved in the
//! population first, so no two generator users make the same join, and the user may send in
//! the chat only once the join is acknowledged.

use crate::system::ChatConn;
use telegraft::proto::chat::{JoinChatRequest, JoinChatResponse};

use super::{Caller, OpEnv, Operation};
use crate::load::client::Failure;
use crate::load::population::JoinOutcome;

pub(crate) struct JoinChat;

pub(crate) struct Note {
    user: u64,
    chat: u64,
}

impl Operation for JoinChat {
    type Request = JoinChatRequest;
    type Reply = JoinChatResponse;
    type Note = Note;

    fn prepare(env: &OpEnv, caller: &mut Caller) -> Option<(JoinChatRequest, Note)> {
        let (user_id, chat_id) = env.population.reserve_join(&mut caller.rng, env.picks)?;
        let request = JoinChatRequest {
            user_id,
            chat_id,
            write_id: caller.next_write_id(),
        };
        Some((
            request,
            Note {
                user: user_id,
                chat: chat_id,
            },
        ))
    }

    fn execute(
        client: &mut ChatConn,
        request: JoinChatRequest,
    ) -> impl Future<Output = Result<tonic::Response<JoinChatResponse>, tonic::Status>> + Send {
        client.join_chat(request)
    }

    fn apply(
        env: &OpEnv,
        _caller: &mut Caller,
        note: &Note,
        result: &Result<JoinChatResponse, Failure>,
    ) {
        let outcome = match result {
            Ok(_) => JoinOutcome::Joined,
            // No answer, or the cluster could not tell: it may have happened.
            Err(Failure::Timeout | Failure::Status(tonic::Code::DeadlineExceeded)) => {
                JoinOutcome::Unknown
            }
            Err(Failure::Status(_)) => JoinOutcome::Refused,
        };
        env.population.finish_join(note.user, note.chat, outcome);
    }
}
