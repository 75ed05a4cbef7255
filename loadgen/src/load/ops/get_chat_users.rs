//! `GetChatUsers`: the members of a random chat (by popularity).

use crate::system::ChatConn;
use telegraft::proto::chat::{GetChatUsersRequest, GetChatUsersResponse};

use super::{Caller, OpEnv, Operation};

pub(crate) struct GetChatUsers;

impl Operation for GetChatUsers {
    type Request = GetChatUsersRequest;
    type Reply = GetChatUsersResponse;
    type Note = ();

    fn prepare(env: &OpEnv, caller: &mut Caller) -> Option<(GetChatUsersRequest, ())> {
        let chat_id = env.population.random_chat(&mut caller.rng, env.picks)?;
        let request = GetChatUsersRequest {
            chat_id,
            consistency: env.consistency as i32,
        };
        Some((request, ()))
    }

    fn execute(
        client: &mut ChatConn,
        request: GetChatUsersRequest,
    ) -> impl Future<Output = Result<tonic::Response<GetChatUsersResponse>, tonic::Status>> + Send
    {
        client.get_chat_users(request)
    }
}
