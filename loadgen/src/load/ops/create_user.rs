//! `CreateUser`: a new user, who joins the population once acknowledged. With
//! authentication on, the user has a password and joins once a `login` call has logged it
//! in (every call then needs its token).

use crate::system::ChatConn;
use telegraft::proto::chat::{CreateUserRequest, CreateUserResponse};

use super::{Caller, OpEnv, Operation};
use crate::load::client::Failure;
use crate::load::sessions;

pub(crate) struct CreateUser;

impl Operation for CreateUser {
    type Request = CreateUserRequest;
    type Reply = CreateUserResponse;
    /// The username.
    type Note = String;

    fn prepare(env: &OpEnv, caller: &mut Caller) -> Option<(CreateUserRequest, String)> {
        caller.created += 1;
        let username = format!("user-{}-{}-{}", caller.client_id, caller.created, env.tag);
        let password = match sessions::current() {
            Some(_) => sessions::password_for(&username),
            None => String::new(),
        };
        let request = CreateUserRequest {
            username: username.clone(),
            write_id: caller.next_write_id(),
            password,
        };
        Some((request, username))
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
        username: &String,
        result: &Result<CreateUserResponse, Failure>,
    ) {
        if let Ok(r) = result {
            match sessions::current() {
                Some(s) => s.created(r.user_id, username.clone()),
                None => env.population.add_user(r.user_id),
            }
        }
    }
}
