//! `CreateUser`: a new user, who joins the population once acknowledged.

use crate::system::ChatConn;
use telegraft::proto::chat::{CreateUserRequest, CreateUserResponse};

use super::{Caller, OpEnv, Operation};
use crate::load::client::Failure;

pub(crate) struct CreateUser;

impl Operation for CreateUser {
    type Request = CreateUserRequest;
    type Reply = CreateUserResponse;
    type Note = ();

    fn prepare(env: &OpEnv, caller: &mut Caller) -> Option<(CreateUserRequest, ())> {
        caller.created += 1;
        let request = CreateUserRequest {
            username: format!("user-{}-{}-{}", caller.client_id, caller.created, env.tag),
            write_id: caller.next_write_id(),
            password: String::new(),
        };
        Some((request, ()))
    }

    fn execute(
        client: &mut ChatConn,
        request: CreateUserRequest,
    ) -> impl Future<Output = Result<tonic::Response<CreateUserResponse>, tonic::Status>> + Send
    {
        client.create_user(request)
    }

    fn apply(
        env: &OpEnv,
        _caller: &mut Caller,
        _note: &(),
        result: &Result<CreateUserResponse, Failure>,
    ) {
        if let Ok(r) = result {
            env.population.add_user(r.user_id);
        }
    }
}
