//! Two-factor login: time-based codes (RFC 6238: SHA-1, 6 digits, 30 s, through `totp-lite`)
//! and single-use recovery codes. Plain functions with the time passed in.

/// Seconds per code.
const STEP: u64 = 30;
const DIGITS: u32 = 6;
/// Recovery codes given at enrolment.
pub const RECOVERY_CODES: usize = 8;

/// A new secret, in base32 as authenticator apps take it.
pub fn new_secret() -> Result<String, String> {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a secret: {e}"))?;
    Ok(base32(&bytes))
}

/// The `otpauth://` URI an authenticator app reads from the QR code.
pub fn uri(secret: &str, account: &str, issuer: &str) -> String {
    let label: String =
        form_urlencoded::byte_serialize(format!("{issuer}:{account}").as_bytes()).collect();
    let issuer: String = form_urlencoded::byte_serialize(issuer.as_bytes()).collect();
    format!("otpauth://totp/{label}?secret={secret}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP}")
}

/// The QR code of `text` as an SVG document.
pub fn qr_svg(text: &str) -> Result<String, String> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|e| format!("QR code: {e}"))?;
    Ok(code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .build())
}

/// The time step whose code for `secret` is `code`, if it is the one at `now` or one step
/// either side (clock drift). A step's code logs in once: the caller keeps the last step used
/// ([`crate::store::Store::spend_second_factor`]).
pub fn verify(secret: &str, code: &str, now: u64) -> Option<u64> {
    let code = code.trim().replace(' ', "");
    let key = unbase32(secret)?;
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    [now.saturating_sub(STEP), now, now + STEP]
        .into_iter()
        .find(|&at| crate::auth::sessions::same_secret(&code_at(&key, at), &code))
        .map(|at| at / STEP)
}

fn code_at(key: &[u8], at: u64) -> String {
    totp_lite::totp_custom::<totp_lite::Sha1>(STEP, DIGITS, key, at)
}

/// New recovery codes, as shown once to the user: 80 random bits each, so that their
/// stored hashes cannot be searched through.
pub fn new_recovery_codes() -> Result<Vec<String>, String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 10];
            getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
            let text = base32(&bytes).to_ascii_lowercase();
            Ok(format!(
                "{}-{}-{}-{}",
                &text[..4],
                &text[4..8],
                &text[8..12],
                &text[12..]
            ))
        })
        .collect()
}

/// The stored form of a user's recovery code, salted with the user's id (case and dashes do
/// not matter when typed).
pub fn recovery_hash(user_id: &str, code: &str) -> String {
    crate::auth::hash_secret(&format!("{user_id}\n{}", typed(code)))
}

/// The unsalted form codes made before the salt were stored in; they keep working.
pub fn legacy_recovery_hash(code: &str) -> String {
    crate::auth::hash_secret(&typed(code))
}

fn typed(code: &str) -> String {
    code.trim()
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

const BASE32: base32::Alphabet = base32::Alphabet::Rfc4648 { padding: false };

/// RFC 4648 base32 without padding.
fn base32(bytes: &[u8]) -> String {
    base32::encode(BASE32, bytes)
}

/// Base32 as people may type it: any case, with or without padding.
fn unbase32(text: &str) -> Option<Vec<u8>> {
    let normal: String = text
        .chars()
        .filter(|&c| c != '=')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    base32::decode(BASE32, &normal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_vectors_and_drift() {
        // RFC 6238 appendix B, SHA-1 key "12345678901234567890", 8 digits there; 6 here are
        // the last six.
        let key = base32(b"12345678901234567890");
        assert_eq!(key, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(verify(&key, "287082", 59), Some(1));
        assert_eq!(verify(&key, "081804", 1111111109), Some(37037036));
        // One step of drift; the step is the code's, not the clock's.
        assert_eq!(verify(&key, "081804", 1111111109 + 30), Some(37037036));
        assert_eq!(verify(&key, "081804", 1111111109 + 90), None);
        assert_eq!(
            verify(&key, "28708", 59).or(verify(&key, "abcdef", 59)),
            None
        );
        assert_eq!(unbase32(&key).unwrap(), b"12345678901234567890");
        assert_eq!(
            unbase32(&(key.to_lowercase() + "====")).unwrap(),
            b"12345678901234567890"
        );
        assert_eq!(unbase32("GEZD1"), None, "1 is not base32");
    }

    #[test]
    fn recovery_codes_are_distinct_and_forgiving() {
        let codes = new_recovery_codes().unwrap();
        assert_eq!(codes.len(), RECOVERY_CODES);
        assert_eq!(codes[0].len(), 19, "{}", codes[0]);
        assert_eq!(
            recovery_hash("usr_a", &codes[0]),
            recovery_hash("usr_a", &codes[0].to_uppercase().replace('-', ""))
        );
        assert_ne!(
            recovery_hash("usr_a", &codes[0]),
            recovery_hash("usr_a", &codes[1])
        );
        assert_ne!(
            recovery_hash("usr_a", &codes[0]),
            recovery_hash("usr_b", &codes[0])
        );
        assert!(qr_svg(&uri("ABC", "alice", "kakuremichi"))
            .unwrap()
            .starts_with("<?xml"));
    }
}
