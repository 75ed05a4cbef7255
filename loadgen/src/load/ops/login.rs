//! `Login` (authentication on): a user the load created logs in for the first time, and then
//! joins the population; with none waiting, a random user logs in again, as a client whose
//! session ended would. Its token replaces the user's previous one.
//!
//! A login costs the replica an Argon2id check (tens of milliseconds of CPU by design), so
//! its weight says how much of that a workload carries.

use crate::system::ChatConn;
use telegraft::proto::chat::{LoginRequest, LoginResponse};

use super::{Caller, OpEnv, Operation};
use crate::load::client::Failure;
use crate::load::sessions;

pub(crate) struct Login;

pub(crate) struct Note {
    user_id: u64,
    username: String,
    /// A user the load created: it joins the population once logged in.
    first: bool,
}

impl Operation for Login {
    type Request = LoginRequest;
    type Reply = LoginResponse;
    type Note = Note;

    fn prepare(env: &OpEnv, caller: &mut Caller) -> Option<(LoginRequest, Note)> {
        let s = sessions::current()?;
        let (user_id, username, first) = match s.take_pending() {
            Some((id, name)) => (id, name, true),
            None => {
                let id = env.population.random_user(&mut caller.rng, env.picks)?;
                (id, s.name_of(id)?, false)
            }
        };
        let request = LoginRequest {
            username: username.clone(),
            password: sessions::password_for(&username),
        };
        Some((
            request,
            Note {
                user_id,
                username,
                first,
            },
        ))
    }

    fn execute(
        client: &mut ChatConn,
        request: LoginRequest,
    ) -> impl Future<Output = Result<tonic::Response<LoginResponse>, tonic::Status>> + Send {
        client.login(request)
    }

    fn apply(
        env: &OpEnv,
        _caller: &mut Caller,
        note: &Note,
        result: &Result<LoginResponse, Failure>,
    ) {
        let Some(s) = sessions::current() else { return };
        match result {
            Ok(r) => {
                s.logged_in(r.user_id, &note.username, &r.token);
                if note.first {
                    env.population.add_user(note.user_id);
                }
            }
            // A first login that failed: another login call tries that user again.
            Err(_) if note.first => s.created(note.user_id, note.username.clone()),
            Err(_) => {}
        }
    }
}
