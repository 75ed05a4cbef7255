//! `CreateChat`: a random user (by activity) creates a chat, which joins the population once acknowledged.

use crate::system::ChatConn;
use telegraft::proto::chat::{CreateChatRequest, CreateChatResponse};

use super::{Caller, OpEnv, Operation};
use crate::load::client::Failure;

pub(crate) struct CreateChat;

impl Operation for CreateChat {
    type Request = CreateChatRequest;
    type Reply = CreateChatResponse;
    /// The creator, the chat's first member.
    type Note = u64;

    fn prepare(env: &OpEnv, caller: &mut Caller) -> Option<(CreateChatRequest, u64)> {
        let user_id = env.population.random_user(&mut caller.rng, env.picks)?;
        caller.created += 1;
        let request = CreateChatRequest {
            user_id,
            chat_name: format!("chat-{}-{}-{}", caller.client_id, caller.created, env.tag),
            write_id: caller.next_write_id(),
        };
        Some((request, user_id))
    }

    fn execute(
        client: &mut ChatConn,
        request: CreateChatRequest,
    ) -> impl Future<Output = Result<tonic::Response<CreateChatResponse>, tonic::Status>> + Send
    {
        client.create_chat(request)
    }

    fn apply(
        env: &OpEnv,
        _caller: &mut Caller,
        creator: &u64,
        result: &Result<CreateChatResponse, Failure>,
    ) {
        if let Ok(r) = result {
            env.population.add_chat(r.chat_id, *creator);
            if let Some(s) = crate::load::sessions::current() {
                s.member(r.chat_id, *creator);
            }
        }
    }
}
