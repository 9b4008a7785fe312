//! Passwords: argon2id with the crate's defaults (OWASP's minimum: 19 MiB, 2 passes), in the
//! PHC string form so parameters can be raised later without breaking stored hashes.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Shortest password accepted.
pub const MIN_CHARS: usize = 10;
/// Longest password accepted: long passphrases are welcome, megabytes are not.
pub const MAX_BYTES: usize = 1024;

/// Why a password is refused.
pub fn check_policy(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_CHARS {
        return Err(format!("use at least {MIN_CHARS} characters"));
    }
    if password.len() > MAX_BYTES {
        return Err(format!("use at most {MAX_BYTES} bytes"));
    }
    Ok(())
}

/// The stored form of `password`.
pub fn hash(password: &str) -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a salt: {e}"))?;
    let salt = SaltString::encode_b64(&bytes).map_err(|e| format!("encoding a salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing a password: {e}"))
}

/// Whether `password` matches `stored`; a corrupt stored hash matches nothing.
pub fn verify(password: &str, stored: &str) -> bool {
    if password.len() > MAX_BYTES {
        return false;
    }
    PasswordHash::new(stored).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A new random password (43 characters), for accounts made or reset by someone else: shown
/// once, to be changed by its owner.
pub fn generate() -> String {
    crate::auth::new_secret("pw").replacen("pw_", "", 1)
}

/// A hash of nothing anyone knows, verified against when a login names no such user, so the
/// answer takes as long as for a real one (no user enumeration by timing).
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash(&crate::auth::new_secret("decoy")).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_policy_holds() {
        let stored = hash("correct horse battery").unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", &stored));
        assert!(!verify("correct horse batterY", &stored));
        assert!(!verify("anything", "not a hash"));
        assert!(check_policy("short").is_err());
        assert!(check_policy(&"x".repeat(128)).is_ok());
        assert!(check_policy(&"x".repeat(MAX_BYTES + 1)).is_err());
    }
}
