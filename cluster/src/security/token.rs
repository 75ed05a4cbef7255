//! Chat session tokens: signed, expiring, checked on any replica without a round trip.
//!
//! A token is `tg1.<key id>.<payload>.<tag>`: the payload is `<user id>.<expires at>` (Unix
//! seconds) in URL-safe base64, and the tag is HMAC-SHA256 over the cluster id and everything
//! before it (so a token of one cluster is refused by another that shares the key: user ids
//! are log indexes, the same numbers in every cluster), with the cluster's key (`auth.key`, from `telegraft certs` or `--auth-key`). The key id (the
//! first 8 hex digits of the key's SHA-256) says which key of the [`Keyring`] signed it, so
//! that keys can be rotated (see `security/mod.rs`). A token carries no secret: it is a
//! bearer credential, good until it expires, sent only over TLS off loopback.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::{digest, hmac, rand::SecureRandom};

use super::SecurityError;

const PREFIX: &str = "tg1";
/// Shortest key accepted: 256 bits.
const MIN_KEY_BYTES: usize = 32;

/// Why a token is not accepted (all are UNAUTHENTICATED to the client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token signed with an unknown key")]
    UnknownKey,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token expired")]
    Expired,
}

/// What a valid token says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claims {
    pub user_id: u64,
    /// Unix seconds.
    pub expires_at: u64,
}

/// The signing keys: the first signs, every one verifies.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<(String, hmac::Key)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        write!(f, "Keyring({ids:?})")
    }
}

/// A fresh key file: one random 256-bit key, in hex.
pub fn new_key_file() -> String {
    let mut key = [0u8; MIN_KEY_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .expect("the system's random source");
    format!(
        "# Telegraft chat token keys (hex, one per line): the first signs, all verify.\n{}\n",
        hex(&key)
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Keyring {
    /// Reads a key file: one hex key per line (at least 32 bytes each), `#` comments.
    pub fn load(path: &Path) -> Result<Keyring, SecurityError> {
        let text = std::fs::read_to_string(path).map_err(|e| SecurityError::io(path, e))?;
        Keyring::parse(&text)
            .map_err(|e| SecurityError::Invalid(format!("{}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Keyring, String> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bytes = unhex(line).ok_or_else(|| format!("line {}: not hex", n + 1))?;
            if bytes.len() < MIN_KEY_BYTES {
                return Err(format!(
                    "line {}: a key needs at least {MIN_KEY_BYTES} bytes, this has {}",
                    n + 1,
                    bytes.len()
                ));
            }
            let id = hex(&digest::digest(&digest::SHA256, &bytes).as_ref()[..4]);
            keys.push((id, hmac::Key::new(hmac::HMAC_SHA256, &bytes)));
        }
        if keys.is_empty() {
            return Err("no key".into());
        }
        Ok(Keyring { keys })
    }

    /// A token of cluster `cluster` for `user_id` that expires at `expires_at` (Unix
    /// seconds).
    pub fn mint(&self, cluster: &str, user_id: u64, expires_at: u64) -> String {
        let (id, key) = &self.keys[0];
        let payload = B64.encode(format!("{user_id}.{expires_at}"));
        let signed = format!("{PREFIX}.{id}.{payload}");
        let tag = hmac::sign(key, tagged(cluster, &signed).as_bytes());
        format!("{signed}.{}", B64.encode(tag.as_ref()))
    }

    /// Checks a token's cluster, signature and expiry against `now` (Unix seconds).
    pub fn verify(&self, cluster: &str, token: &str, now: u64) -> Result<Claims, TokenError> {
        let (signed, tag) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let mut parts = signed.split('.');
        let (Some(PREFIX), Some(id), Some(payload), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let tag = B64.decode(tag).map_err(|_| TokenError::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, key)| key)
            .ok_or(TokenError::UnknownKey)?;
        // Constant-time comparison of the tags.
        hmac::verify(key, tagged(cluster, signed).as_bytes(), &tag)
            .map_err(|_| TokenError::BadSignature)?;
        let payload = B64.decode(payload).map_err(|_| TokenError::Malformed)?;
        let payload = String::from_utf8(payload).map_err(|_| TokenError::Malformed)?;
        let (user, exp) = payload.split_once('.').ok_or(TokenError::Malformed)?;
        let claims = Claims {
            user_id: user.parse().map_err(|_| TokenError::Malformed)?,
            expires_at: exp.parse().map_err(|_| TokenError::Malformed)?,
        };
        if claims.expires_at <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// What the tag covers: the cluster id, then the token before its tag.
fn tagged(cluster: &str, signed: &str) -> String {
    format!("{cluster}\n{signed}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(text: &str) -> Keyring {
        Keyring::parse(text).unwrap()
    }

    const A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn a_token_is_good_until_it_expires() {
        let k = ring(A);
        let t = k.mint("c", 42, 1_000);
        assert_eq!(
            k.verify("c", &t, 999),
            Ok(Claims {
                user_id: 42,
                expires_at: 1_000
            })
        );
        assert_eq!(k.verify("c", &t, 1_000), Err(TokenError::Expired));
    }

    #[test]
    fn a_token_of_another_cluster_is_refused() {
        let k = ring(A);
        let t = k.mint("c", 42, 1_000);
        assert_eq!(k.verify("other", &t, 0), Err(TokenError::BadSignature));
    }

    #[test]
    fn forged_tokens_are_refused() {
        let k = ring(A);
        let t = k.mint("c", 42, 1_000);
        // Another user's id in the payload, the same tag.
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!(
            "{}.{}.{}.{}",
            parts[0],
            parts[1],
            B64.encode("43.1000"),
            parts[3]
        );
        assert_eq!(k.verify("c", &forged, 0), Err(TokenError::BadSignature));
        // Signed by another key: unknown to this ring.
        assert_eq!(
            k.verify("c", &ring(B).mint("c", 42, 1_000), 0),
            Err(TokenError::UnknownKey)
        );
        for junk in ["", "tg1", "tg1.a.b", "x.y.z.w", "tg1.a.b.c.d"] {
            assert!(k.verify("c", junk, 0).is_err(), "{junk}");
        }
    }

    #[test]
    fn rotation_the_first_key_signs_every_key_verifies() {
        let old = ring(A);
        let both = ring(&format!("# rotating\n{B}\n{A}\n"));
        let by_old = old.mint("c", 1, 100);
        let by_new = both.mint("c", 1, 100);
        assert!(both.verify("c", &by_old, 0).is_ok());
        assert!(both.verify("c", &by_new, 0).is_ok());
        assert_eq!(old.verify("c", &by_new, 0), Err(TokenError::UnknownKey));
    }

    #[test]
    fn key_files_are_checked() {
        assert!(Keyring::parse("").is_err());
        assert!(Keyring::parse("abcd").unwrap_err().contains("at least 32"));
        assert!(Keyring::parse("zz").unwrap_err().contains("not hex"));
        assert!(Keyring::parse(&new_key_file()).is_ok());
    }
}
