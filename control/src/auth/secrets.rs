//! Secrets and ids: API keys and admin tokens are 256-bit random strings, stored only as
//! SHA-256 hashes (they are not passwords: their entropy makes a slow hash pointless).

use base64::Engine;

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS random source failing means the machine cannot make keys at all.
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    bytes
}

/// A new secret such as `kmk_…` (node API key) or `kmt_…` (admin token).
pub fn new_secret(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
    )
}

/// A new record id such as `tun_3f9a…`.
pub fn new_id(prefix: &str) -> String {
    let bytes: [u8; 8] = random_bytes();
    format!(
        "{prefix}_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// The stored form of a secret.
pub fn hash_secret(secret: &str) -> String {
    kakuremichi_proto::access::sha256_hex(secret.as_bytes())
}

/// The bearer token of an `Authorization` header value.
pub fn bearer(header: Option<&hyper::header::HeaderValue>) -> Option<&str> {
    let value = header?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

pub use kakuremichi_rt::unix_now;
