//! Who may talk to a replica, and as whom (issue 18; `cluster/README.md`, "Security").
//!
//! Two independent switches, so that each one's cost can be measured alone:
//! - **TLS** (`--tls-dir`): every connection is TLS 1.3/1.2 (rustls through tonic). Peers
//!   authenticate each other with certificates of one cluster CA ([`certs`]): the Raft
//!   service takes only callers holding a node certificate of this cluster, naming the node
//!   the messages come from; Admin's fault injection takes only the admin certificate.
//!   A certificate says what it is for in a URI subject alternative name,
//!   `urn:telegraft:<cluster>:node:<id>` (or `:client`, `:admin`), read back by
//!   [`tls::PeerIdentity`].
//! - **Authentication** (`--require-auth`): chat users have passwords ([`password`],
//!   Argon2id), `Login` returns a signed, expiring token ([`token`], HMAC-SHA256 with a key
//!   from the cluster's configuration), and every other chat call needs one and may act only
//!   as its user ([`Caller`]).
//!
//! Why a shared HMAC key rather than sessions replicated through the log: a token is then
//! checked on any replica with one HMAC and no I/O, a login costs no log entry (so logins do
//! not compete with chat writes for the leader's disk), and a failover changes nothing: every
//! replica holds the same key. The price: a token cannot be revoked before it expires other
//! than by rotating the key. Rotation is a key file with several keys: the first signs, all
//! verify, so a new key is added everywhere (second line), then moved first, then the old
//! one removed once its tokens have expired (`--token-ttl`).
//!
//! Without either switch a replica on loopback keeps the open API, for benchmarking the bare
//! cluster; a replica asked to listen elsewhere without TLS refuses to start unless told
//! `--insecure` ([`check_listen`]).

pub mod certs;
pub mod password;
pub mod tls;
pub mod token;

use std::net::SocketAddr;

/// The cluster id a node uses when it has no certificate to read one from.
pub const DEFAULT_CLUSTER_ID: &str = "telegraft";

/// Why a security setting or credential could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
}

impl SecurityError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> SecurityError {
        SecurityError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A cluster id: 1 to 63 of `a-z`, `0-9` and `-`, as a DNS label (it goes into URIs and
/// file names).
pub fn check_cluster_id(id: &str) -> Result<(), SecurityError> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SecurityError::Invalid(format!(
            "cluster id '{id}' must be 1 to 63 characters of a-z, 0-9 and '-'"
        )))
    }
}

/// The safe default: plaintext only on loopback. A node asked to listen on any other
/// address without TLS refuses, unless `insecure` says the operator means it.
pub fn check_listen(listen: SocketAddr, tls: bool, insecure: bool) -> Result<(), SecurityError> {
    if tls || insecure || listen.ip().is_loopback() {
        return Ok(());
    }
    Err(SecurityError::Invalid(format!(
        "refusing to listen on {listen} without TLS: anyone who reaches it could act as a \
         peer or any user. Give --tls-dir (certificates from `telegraft certs`), or \
         --insecure to serve plaintext anyway"
    )))
}

/// Who made a chat call, once authentication is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Authentication is off: anyone may act as any user (the open benchmarking API).
    Anyone,
    /// A valid token for this user.
    User(u64),
}

impl Caller {
    /// The user a request acts as: the id it names, checked against the token, or the
    /// token's user when the request names none (0). `Err` names the user it may not act as.
    pub fn acting_as(self, named: u64) -> Result<u64, u64> {
        match self {
            Caller::Anyone => Ok(named),
            Caller::User(me) if named == 0 || named == me => Ok(me),
            Caller::User(_) => Err(named),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_only_on_loopback_unless_insecure() {
        let lo: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let lo6: SocketAddr = "[::1]:7001".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:7001".parse().unwrap();
        let lan: SocketAddr = "10.1.2.3:7001".parse().unwrap();
        assert!(check_listen(lo, false, false).is_ok());
        assert!(check_listen(lo6, false, false).is_ok());
        for a in [any, lan] {
            let e = check_listen(a, false, false).unwrap_err().to_string();
            assert!(e.contains("--tls-dir") && e.contains("--insecure"), "{e}");
            assert!(check_listen(a, true, false).is_ok());
            assert!(check_listen(a, false, true).is_ok());
        }
    }

    #[test]
    fn a_caller_acts_only_as_its_user() {
        assert_eq!(Caller::Anyone.acting_as(7), Ok(7));
        assert_eq!(Caller::User(3).acting_as(3), Ok(3));
        assert_eq!(Caller::User(3).acting_as(0), Ok(3));
        assert_eq!(Caller::User(3).acting_as(4), Err(4));
    }

    #[test]
    fn cluster_ids_are_dns_labels() {
        assert!(check_cluster_id("prod-1").is_ok());
        for bad in ["", "Prod", "a b", "a:b", &"x".repeat(64)] {
            assert!(check_cluster_id(bad).is_err(), "{bad}");
        }
    }
}
