//! Browser sessions: a random token in an `HttpOnly` cookie, stored only as its hash, with an
//! idle and an absolute expiry. Each session carries its own CSRF token for forms. The rules
//! are plain functions of the record and the time; the store keeps the records.

use serde::{Deserialize, Serialize};

/// The session cookie's name.
pub const COOKIE: &str = "km_session";
/// How often `last_seen` is written back at most: reading a page must not mean a write.
pub const TOUCH_EVERY_SECS: u64 = 60;

/// How long sessions live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// Ended after this long without a request.
    pub idle_secs: u64,
    /// Ended this long after login, however busy.
    pub absolute_secs: u64,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            idle_secs: 12 * 60 * 60,
            absolute_secs: 7 * 24 * 60 * 60,
        }
    }
}

/// A logged-in browser.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Public id, for listing and revoking (never the token).
    pub id: String,
    pub user_id: String,
    pub created_at: u64,
    pub last_seen: u64,
    /// Hidden in every form of this session; a form without it is refused.
    pub csrf: String,
    /// Where the login came from, for the user's list of sessions.
    pub address: String,
    pub user_agent: String,
    /// The password was right, the second factor is still to come: not logged in yet.
    #[serde(default)]
    pub awaiting_code: bool,
    /// A TOTP secret being enrolled, until a code for it confirms it.
    #[serde(default)]
    pub totp_enrolment: Option<String>,
}

impl SessionRecord {
    /// Whether the session still counts at `now`.
    pub fn is_live(&self, now: u64, limits: SessionLimits) -> bool {
        now < self.last_seen.saturating_add(limits.idle_secs)
            && now < self.created_at.saturating_add(limits.absolute_secs)
    }

    /// Whether `last_seen` should be written back at `now`.
    pub fn wants_touch(&self, now: u64) -> bool {
        now >= self.last_seen.saturating_add(TOUCH_EVERY_SECS)
    }
}

/// The session token in a `Cookie` header, if any.
pub fn token_from_cookies(header: Option<&hyper::header::HeaderValue>) -> Option<&str> {
    header?
        .to_str()
        .ok()?
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// The `Set-Cookie` value that hands `token` to the browser (`Secure` when Control is
/// reached over HTTPS).
pub fn set_cookie(token: &str, secure: bool, limits: SessionLimits) -> String {
    format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}{}",
        limits.absolute_secs,
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Constant-time comparison, for CSRF tokens and setup codes.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(created_at: u64, last_seen: u64) -> SessionRecord {
        SessionRecord {
            id: "ses_1".into(),
            user_id: "usr_1".into(),
            created_at,
            last_seen,
            csrf: "c".into(),
            address: String::new(),
            user_agent: String::new(),
            awaiting_code: false,
            totp_enrolment: None,
        }
    }

    #[test]
    fn sessions_end_when_idle_or_too_old_over_many_periods() {
        let limits = SessionLimits {
            idle_secs: 10,
            absolute_secs: 100,
        };
        let mut session = record(0, 0);
        // A busy browser, a request every 5 s: alive until the absolute limit, however busy.
        for now in (0..100).step_by(5) {
            assert!(session.is_live(now, limits), "at {now}");
            session.last_seen = now;
        }
        assert!(!session.is_live(100, limits));
        // An idle one ends at the idle limit.
        let idle = record(0, 40);
        assert!(idle.is_live(49, limits));
        assert!(!idle.is_live(50, limits));
        assert!(!record(0, 0).wants_touch(TOUCH_EVERY_SECS - 1));
        assert!(record(0, 0).wants_touch(TOUCH_EVERY_SECS));
    }

    #[test]
    fn cookies_parse_and_secrets_compare() {
        let header = hyper::header::HeaderValue::from_static("a=1; km_session=tok; b=2");
        assert_eq!(token_from_cookies(Some(&header)), Some("tok"));
        let empty = hyper::header::HeaderValue::from_static("km_session=");
        assert_eq!(token_from_cookies(Some(&empty)), None);
        assert!(set_cookie("t", true, SessionLimits::default())
            .contains("HttpOnly; SameSite=Lax; Path=/"));
        assert!(set_cookie("t", true, SessionLimits::default()).ends_with("; Secure"));
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
    }
}
