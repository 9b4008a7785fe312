//! Who may open a tunnel, as gateways receive it, and the two signed tokens that carry a
//! login to them:
//!
//! - an **assertion**: Control's statement "user U may open host H", signed with Control's
//!   Ed25519 key, valid for under a minute and used once; the browser carries it from
//!   Control's login to the gateway;
//! - a **session cookie**: the gateway's own record of a login (through an assertion or the
//!   tunnel's password), authenticated with HMAC-SHA256 under a key every gateway shares, so
//!   a login made through one gateway works on all of them.
//!
//! Both are `base64url(JSON payload) "." base64url(signature)`. Gateways hold only Control's
//! public key: they can check assertions but never make one.

use crate::ProtoError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::{hmac, signature};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Longest an assertion may live; Control issues them for less.
pub const ASSERTION_MAX_SECONDS: u64 = 60;
/// Longest accepted token, so a stranger's cookie cannot make us parse megabytes.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Session length when a tunnel names none.
pub const DEFAULT_SESSION_HOURS: u64 = 24;

/// The rules of one tunnel. Absent (or all empty) means public.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessPolicy {
    /// Control users who may log in, already resolved by Control from the tunnel's user
    /// names and roles (disabled users left out). `None`: no Control-user login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<AllowedUser>>,
    /// The tunnel password or PIN as an argon2id PHC string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// SHA-256 (hex) of each live service token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_tokens: Vec<String>,
    /// When not empty, only clients in these networks get anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_ips: Vec<Cidr>,
    /// Clients in these networks are refused before anything else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_ips: Vec<Cidr>,
    /// Paths that skip authentication: exact (`/health`) or a prefix ending in `*`
    /// (`/webhooks/*`). IP rules still apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bypass: Vec<String>,
    /// How long a login lasts.
    #[serde(default = "default_session_hours")]
    pub session_hours: u64,
}

fn default_session_hours() -> u64 {
    DEFAULT_SESSION_HOURS
}

impl AccessPolicy {
    /// Whether anyone must prove who they are (IP rules alone do not make a login).
    pub fn needs_login(&self) -> bool {
        self.users.is_some() || self.password_hash.is_some() || !self.service_tokens.is_empty()
    }

    /// Whether the policy restricts anything at all.
    pub fn is_public(&self) -> bool {
        !self.needs_login() && self.allow_ips.is_empty() && self.deny_ips.is_empty()
    }

    /// Whether `path` skips authentication.
    pub fn bypasses(&self, path: &str) -> bool {
        self.bypass.iter().any(|rule| match rule.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == rule,
        })
    }

    /// Whether `ip` gets past the IP rules: not denied, and allowed when an allow list exists.
    pub fn admits(&self, ip: IpAddr) -> bool {
        !self.deny_ips.iter().any(|net| net.contains(ip))
            && (self.allow_ips.is_empty() || self.allow_ips.iter().any(|net| net.contains(ip)))
    }

    /// A short fingerprint of the password hash: cookies from password logins carry it, so
    /// changing the password ends them.
    pub fn password_epoch(&self) -> String {
        self.password_hash
            .as_deref()
            .map(|hash| {
                let digest = ring::digest::digest(&ring::digest::SHA256, hash.as_bytes());
                URL_SAFE_NO_PAD.encode(&digest.as_ref()[..9])
            })
            .unwrap_or_default()
    }
}

/// A Control user a tunnel admits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedUser {
    /// The user's id in Control.
    pub id: String,
    /// The name the origin sees in `X-Kakuremichi-User`.
    pub name: String,
    /// Unix seconds: tunnel sessions begun before this are over (the user's password was
    /// reset, their role changed, they were disabled, or they logged out everywhere).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sessions_since: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// An IPv4 or IPv6 network, `203.0.113.0/24` or `2001:db8::/32`; a bare address is a /32 or
/// /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network's address as written.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// Whether the network is `ip` alone (a /32 or /128).
    pub fn is_single(&self, ip: IpAddr) -> bool {
        self.network == ip && self.prefix == if ip.is_ipv4() { 32 } else { 128 }
    }

    /// Whether `ip` is inside the network. An IPv4 client seen as an IPv4-mapped IPv6
    /// address counts as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = ProtoError;
    fn from_str(raw: &str) -> Result<Self, ProtoError> {
        let invalid = || ProtoError::invalid("cidr", format!("{raw:?} is not an address/prefix"));
        let (address, prefix) = match raw.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (raw, None),
        };
        let network: IpAddr = address.trim().parse().map_err(|_| invalid())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.trim().parse::<u8>().map_err(|_| invalid())?,
            None => max,
        };
        if prefix > max {
            return Err(ProtoError::invalid(
                "cidr",
                format!("{raw:?}: the prefix is at most {max}"),
            ));
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What gateways need to check logins, pushed in their snapshots.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessKeys {
    /// Control's Ed25519 public key for assertions, base64url.
    pub assertion_public_key: String,
    /// The shared HMAC-SHA256 key for session cookies, base64url.
    pub cookie_key: String,
    /// Where browsers log in as Control users: Control's `/access` page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_url: Option<String>,
}

impl fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKeys")
            .field("assertion_public_key", &self.assertion_public_key)
            .field("cookie_key", &"…")
            .field("login_url", &self.login_url)
            .finish()
    }
}

/// Control's statement that a user may open a host, for a moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assertion {
    /// The tunnel hostname it is good for.
    pub host: String,
    /// The user.
    pub user: AllowedUser,
    /// Unix seconds after which it is refused.
    pub expires: u64,
    /// Random; a gateway accepts each nonce once.
    pub nonce: String,
    /// The login's state: a random value the gateway gave, as a cookie, to the browser that
    /// began the login. The gateway redeems the assertion only from that browser, so a
    /// leaked login link is of no use elsewhere, on any gateway.
    #[serde(default)]
    pub state: String,
}

/// Who a session cookie says logged in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Subject {
    /// A Control user, through an assertion.
    User(AllowedUser),
    /// Someone who knew the tunnel password; `epoch` is the password's fingerprint then.
    Password {
        /// [`AccessPolicy::password_epoch`] when the cookie was made.
        epoch: String,
    },
}

/// A gateway's record of a login, kept by the browser for one hostname.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCookie {
    /// The hostname it was made for; any other refuses it.
    pub host: String,
    /// Who logged in.
    pub subject: Subject,
    /// Unix seconds after which it is refused.
    pub expires: u64,
    /// Unix seconds when it was made: a shorter `session_hours`, and the end of a user's
    /// sessions, apply to cookies made before.
    #[serde(default)]
    pub issued: u64,
}

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not two base64url parts, too long, or not the expected JSON.
    #[error("malformed")]
    Malformed,
    /// The signature or MAC does not match.
    #[error("bad signature")]
    BadSignature,
    /// Past its expiry.
    #[error("expired")]
    Expired,
    /// Made for another hostname.
    #[error("made for another host")]
    WrongHost,
}

fn encode_signed(payload: &impl Serialize, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let json = serde_json::to_vec(payload).unwrap_or_default();
    let body = URL_SAFE_NO_PAD.encode(&json);
    let tag = sign(body.as_bytes());
    format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// Split and decode a token after `verify` accepted its signature over the first part.
fn decode_signed<T: DeserializeOwned>(
    token: &str,
    verify: impl FnOnce(&[u8], &[u8]) -> bool,
) -> Result<T, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    let (body, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| TokenError::Malformed)?;
    if !verify(body.as_bytes(), &tag) {
        return Err(TokenError::BadSignature);
    }
    let json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
}

/// Sign an assertion with Control's Ed25519 key pair.
pub fn sign_assertion(key: &signature::Ed25519KeyPair, assertion: &Assertion) -> String {
    encode_signed(assertion, |body| key.sign(body).as_ref().to_vec())
}

/// Check an assertion's signature, host and expiry (not its nonce: that is the caller's
/// memory).
pub fn verify_assertion(
    public_key: &[u8],
    token: &str,
    host: &str,
    now: u64,
) -> Result<Assertion, TokenError> {
    let key = signature::UnparsedPublicKey::new(&signature::ED25519, public_key);
    let assertion: Assertion = decode_signed(token, |body, tag| key.verify(body, tag).is_ok())?;
    if assertion.host != host {
        return Err(TokenError::WrongHost);
    }
    if now >= assertion.expires || assertion.expires > now + ASSERTION_MAX_SECONDS {
        return Err(TokenError::Expired);
    }
    Ok(assertion)
}

/// Make a session cookie's value.
pub fn seal_cookie(key: &[u8], cookie: &SessionCookie) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    encode_signed(cookie, |body| hmac::sign(&key, body).as_ref().to_vec())
}

/// Check a session cookie's MAC (in constant time), host and expiry.
pub fn open_cookie(
    key: &[u8],
    value: &str,
    host: &str,
    now: u64,
) -> Result<SessionCookie, TokenError> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let cookie: SessionCookie =
        decode_signed(value, |body, tag| hmac::verify(&key, body, tag).is_ok())?;
    if cookie.host != host {
        return Err(TokenError::WrongHost);
    }
    if now >= cookie.expires {
        return Err(TokenError::Expired);
    }
    Ok(cookie)
}

/// `path` when it is a path on the same host (`/…`, not `//host` or `/\\host`, no control
/// characters, at most 2 KiB), else `/`: where a login may send the browser back to.
pub fn local_path(path: Option<&str>) -> String {
    match path {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && path.len() <= 2048
                && !path.chars().any(char::is_control) =>
        {
            path.to_string()
        }
        _ => "/".to_string(),
    }
}

/// SHA-256 of `bytes`, lower-case hex: how service tokens reach gateways
/// ([`AccessPolicy::service_tokens`]) and how Control stores its other secrets.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Decode a base64url key from [`AccessKeys`].
pub fn decode_key(text: &str) -> Result<Vec<u8>, ProtoError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| ProtoError::invalid("access key", e.to_string()))
}

/// Encode key bytes for [`AccessKeys`].
pub fn encode_key(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn key_pair() -> signature::Ed25519KeyPair {
        let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn alice() -> AllowedUser {
        AllowedUser {
            id: "usr_1".into(),
            name: "alice".into(),
            ..Default::default()
        }
    }

    #[test]
    fn assertions_are_checked_for_signature_host_and_expiry() {
        use signature::KeyPair;
        let (control, stranger) = (key_pair(), key_pair());
        let public = control.public_key().as_ref().to_vec();
        let assertion = Assertion {
            host: "app.example.com".into(),
            user: alice(),
            expires: 1030,
            nonce: "n1".into(),
            state: String::new(),
        };
        let token = sign_assertion(&control, &assertion);
        let verify = |token: &str, host, now| verify_assertion(&public, token, host, now);
        assert_eq!(
            verify(&token, "app.example.com", 1000),
            Ok(assertion.clone())
        );
        assert_eq!(
            verify(&token, "db.example.com", 1000),
            Err(TokenError::WrongHost)
        );
        assert_eq!(
            verify(&token, "app.example.com", 1030),
            Err(TokenError::Expired)
        );
        // One that claims to live longer than any assertion may is refused too.
        let long = sign_assertion(
            &control,
            &Assertion {
                expires: 5000,
                ..assertion.clone()
            },
        );
        assert_eq!(
            verify(&long, "app.example.com", 1000),
            Err(TokenError::Expired)
        );
        let forged = sign_assertion(&stranger, &assertion);
        assert_eq!(
            verify(&forged, "app.example.com", 1000),
            Err(TokenError::BadSignature)
        );
        // A payload swapped under a valid signature.
        let (_, tag) = token.split_once('.').unwrap();
        let other = Assertion {
            user: AllowedUser {
                id: "usr_2".into(),
                name: "eve".into(),
                ..Default::default()
            },
            ..assertion
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).unwrap());
        assert_eq!(
            verify(&format!("{body}.{tag}"), "app.example.com", 1000),
            Err(TokenError::BadSignature)
        );
        for garbage in ["", ".", "a.b", "no-dot", &"x".repeat(MAX_TOKEN_BYTES + 1)] {
            assert!(
                verify(garbage, "app.example.com", 1000).is_err(),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn cookies_are_checked_for_mac_host_and_expiry() {
        let key = [7u8; 32];
        let cookie = SessionCookie {
            host: "app.example.com".into(),
            subject: Subject::Password { epoch: "e".into() },
            expires: 2000,
            issued: 0,
        };
        let value = seal_cookie(&key, &cookie);
        assert_eq!(
            open_cookie(&key, &value, "app.example.com", 1999),
            Ok(cookie)
        );
        assert_eq!(
            open_cookie(&key, &value, "app.example.com", 2000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            open_cookie(&key, &value, "b.example.com", 1000),
            Err(TokenError::WrongHost)
        );
        assert_eq!(
            open_cookie(&[8u8; 32], &value, "app.example.com", 1000),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn return_paths_stay_on_the_host() {
        assert_eq!(local_path(Some("/a/b?c=d")), "/a/b?c=d");
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "",
            "a",
            "/\n",
        ] {
            assert_eq!(local_path(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn ip_rules_and_bypass_paths() {
        let policy = AccessPolicy {
            allow_ips: vec![
                "203.0.113.0/24".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
            deny_ips: vec!["203.0.113.66".parse().unwrap()],
            bypass: vec!["/health".into(), "/webhooks/*".into()],
            ..Default::default()
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(policy.admits(ip("203.0.113.7")));
        assert!(
            policy.admits(ip("::ffff:203.0.113.7")),
            "IPv4-mapped counts as IPv4"
        );
        assert!(policy.admits(ip("2001:db8:1::9")));
        assert!(!policy.admits(ip("203.0.113.66")), "deny wins");
        assert!(!policy.admits(ip("198.51.100.1")));
        assert!(AccessPolicy::default().admits(ip("198.51.100.1")));
        assert!(policy.bypasses("/health") && !policy.bypasses("/health/x"));
        assert!(policy.bypasses("/webhooks/github") && !policy.bypasses("/webhook"));
        for bad in ["10.0.0.0/33", "::/129", "nope", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().unwrap().to_string(),
            "10.1.2.3/8"
        );
    }
}
