//! Chat authentication at the gRPC edge (`--require-auth`): who a call comes from, and the
//! tokens `Login` hands out. The rules themselves (what a caller may do) are in
//! `security/mod.rs` ([`Caller`]); the token format in `security/token.rs`.
//!
//! A replica checks a token itself, with one HMAC: no round trip to the leader and no state,
//! so any replica serves any call, and a forwarded call is checked again by the leader (the
//! follower passes the `authorization` metadata on).

use std::time::Duration;

use tonic::Request;

use super::error::RequestError;
use crate::chat::ChatError;
use crate::security::Caller;
use crate::security::token::{Keyring, now_unix};

/// The metadata key a token travels in.
pub const AUTHORIZATION: &str = "authorization";

/// A replica's chat authentication settings.
#[derive(Clone, Debug)]
pub struct ChatAuth {
    /// The cluster's token keys; `None`: `Login` is unavailable.
    keyring: Option<Keyring>,
    /// Every call but CreateUser and Login needs a token.
    required: bool,
    /// How long a token from `Login` is good for.
    ttl: Duration,
    /// The cluster tokens are bound to.
    cluster: String,
}

impl ChatAuth {
    pub fn new(keyring: Option<Keyring>, required: bool, ttl: Duration, cluster: &str) -> ChatAuth {
        ChatAuth {
            keyring,
            required,
            ttl,
            cluster: cluster.to_string(),
        }
    }

    pub fn required(&self) -> bool {
        self.required
    }

    /// Who made a call: [`Caller::Anyone`] with authentication off, otherwise the user of a
    /// valid bearer token, or UNAUTHENTICATED.
    pub fn caller<T>(&self, req: &Request<T>) -> Result<Caller, RequestError> {
        if !self.required {
            return Ok(Caller::Anyone);
        }
        let Some(keyring) = &self.keyring else {
            return Err(RequestError::Unauthenticated(
                "this replica has no token key".into(),
            ));
        };
        let header = req
            .metadata()
            .get(AUTHORIZATION)
            .ok_or_else(|| {
                RequestError::Unauthenticated(
                    "missing 'authorization: Bearer <token>' metadata: log in first".into(),
                )
            })?
            .to_str()
            .map_err(|_| RequestError::Unauthenticated("malformed authorization".into()))?;
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or_else(|| {
                RequestError::Unauthenticated("authorization must be 'Bearer <token>'".into())
            })?;
        keyring
            .verify(&self.cluster, token, now_unix())
            .map(|claims| Caller::User(claims.user_id))
            .map_err(|e| RequestError::Unauthenticated(e.to_string()))
    }

    /// A token for `user_id` and when it expires (Unix seconds).
    pub fn mint(&self, user_id: u64) -> Result<(String, u64), RequestError> {
        let keyring = self.keyring.as_ref().ok_or_else(|| {
            RequestError::Rejected(ChatError::FailedPrecondition(
                "login is not available: this replica has no token key (start it with \
                 --auth-key, or --tls-dir holding auth.key)"
                    .into(),
            ))
        })?;
        let expires_at = now_unix().saturating_add(self.ttl.as_secs().max(1));
        Ok((keyring.mint(&self.cluster, user_id, expires_at), expires_at))
    }

    /// Whether this replica can log users in.
    pub fn can_login(&self) -> bool {
        self.keyring.is_some()
    }
}

/// The acting user of a request that names `named`, or PERMISSION_DENIED.
pub fn acting_as(caller: Caller, named: u64) -> Result<u64, RequestError> {
    caller.acting_as(named).map_err(|other| {
        RequestError::PermissionDenied(format!("this token's user may not act as user {other}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn auth() -> ChatAuth {
        ChatAuth::new(
            Some(Keyring::parse(KEY).unwrap()),
            true,
            Duration::from_secs(60),
            "c",
        )
    }

    fn with(header: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(h) = header {
            r.metadata_mut().insert(AUTHORIZATION, h.parse().unwrap());
        }
        r
    }

    #[test]
    fn callers_are_who_their_token_says() {
        let a = auth();
        let (token, exp) = a.mint(9).unwrap();
        assert!(exp > now_unix());
        assert_eq!(
            a.caller(&with(Some(&format!("Bearer {token}")))),
            Ok(Caller::User(9))
        );
        assert_eq!(
            a.caller(&with(Some(&format!("bearer {token}")))),
            Ok(Caller::User(9))
        );
        for bad in [
            None,
            Some(token.as_str()),
            Some("Basic abc"),
            Some("Bearer x"),
        ] {
            assert!(
                matches!(a.caller(&with(bad)), Err(RequestError::Unauthenticated(_))),
                "{bad:?}"
            );
        }
        // Authentication off: anyone, tokens ignored.
        let open = ChatAuth::new(None, false, Duration::from_secs(1), "c");
        assert_eq!(open.caller(&with(None)), Ok(Caller::Anyone));
        assert!(open.mint(1).is_err());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let a = auth();
        let keyring = Keyring::parse(KEY).unwrap();
        let expired = keyring.mint("c", 9, now_unix() - 1);
        let e = a
            .caller(&with(Some(&format!("Bearer {expired}"))))
            .unwrap_err();
        assert_eq!(e, RequestError::Unauthenticated("token expired".into()));
    }
}
