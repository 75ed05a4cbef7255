//! Chat passwords: Argon2id (the `argon2` crate's defaults, OWASP's recommended minimum:
//! 19 MiB, 2 passes, 1 lane), stored as the PHC string, which carries its salt and
//! parameters, so the parameters can change without invalidating stored hashes.
//!
//! A password is hashed by the replica that receives `CreateUser`, before the write is
//! proposed: the log, the snapshots and the database hold only the hash. Hashing and
//! checking cost tens of milliseconds of CPU by design, so both run on the blocking pool,
//! never on the threads that serve other calls.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use ring::rand::SecureRandom;

/// Longest password accepted, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Checks a password's size.
pub fn check(password: &str) -> Result<(), String> {
    if password.is_empty() {
        return Err("password must not be empty".into());
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "password is {} bytes; at most {MAX_PASSWORD_BYTES} allowed",
            password.len()
        ));
    }
    Ok(())
}

/// The PHC string of `password` with a fresh salt.
pub fn hash(password: &str) -> Result<String, String> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no random source for a salt".to_string())?;
    let salt = SaltString::encode_b64(&bytes).map_err(|e| format!("salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing the password: {e}"))
}

/// Whether a stored PHC string is a well-formed Argon2 hash (what a forwarded `CreateUser`
/// may carry instead of the password).
pub fn is_hash(phc: &str) -> bool {
    let Ok(h) = PasswordHash::new(phc) else {
        return false;
    };
    let Ok(params) = argon2::Params::try_from(&h) else {
        return false;
    };
    // No more than the cost hashes are made with: a hash with a huge cost would make every
    // login of that user a denial of service. Fixed numbers, not the crate's defaults: this
    // runs when a log entry is applied, and must answer the same on every replica and every
    // version.
    h.algorithm.as_str() == "argon2id"
        && params.m_cost() <= MAX_M_COST_KIB
        && params.t_cost() <= MAX_T_COST
        && params.p_cost() <= MAX_P_COST
}

/// The most memory (KiB), passes and lanes a stored hash may ask for: argon2 0.5's defaults,
/// which `hash` uses.
const MAX_M_COST_KIB: u32 = 19 * 1024;
const MAX_T_COST: u32 = 2;
const MAX_P_COST: u32 = 1;

/// A hash of a random password, checked against when a login names an unknown user, so
/// that such a login costs what a wrong password does.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let mut random = [0u8; 16];
        let _ = ring::rand::SystemRandom::new().fill(&mut random);
        let password: String = random.iter().map(|b| format!("{b:02x}")).collect();
        hash(&password).unwrap_or_default()
    })
}

/// Whether `password` matches the stored PHC string.
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_holds_no_password_and_checks_it() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert!(is_hash(&h));
        assert!(verify("correct horse", &h));
        assert!(!verify("correct horsE", &h));
        assert!(!verify("correct horse", "not a hash"));
        // A fresh salt each time.
        assert_ne!(h, hash("correct horse").unwrap());
    }

    #[test]
    fn sizes_are_checked() {
        assert!(check("").is_err());
        assert!(check(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
        assert!(check("x").is_ok());
        assert!(!is_hash("$pbkdf2$abc"));
        // Costlier than the default: refused.
        let h = hash("x").unwrap().replace("m=19456", "m=4194304");
        assert!(!is_hash(&h), "{h}");
        // The limits are the cost `hash` uses.
        let d = argon2::Params::default();
        assert_eq!(
            (d.m_cost(), d.t_cost(), d.p_cost()),
            (MAX_M_COST_KIB, MAX_T_COST, MAX_P_COST)
        );
    }
}
