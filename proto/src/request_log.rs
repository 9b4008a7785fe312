//! The request log: each gateway keeps the latest requests of every tunnel in memory, and
//! Control asks the gateways for those a person filters for ([`LogQuery`], answered with
//! [`crate::messages::NodeMessage::Logs`]). Nothing of a request beyond what
//! [`LogEntry`] holds is kept: the path without its query, no header, no body.

use serde::{Deserialize, Serialize};

/// The most entries one answer carries.
pub const MAX_ENTRIES: usize = 500;
/// The longest path kept; a longer one is cut and ends in `…`.
pub const MAX_PATH_CHARS: usize = 512;
/// What a gateway says it can do in its hello: it answers [`LogQuery`]s.
pub const FEATURE: &str = "request_log";

/// One request as the gateway answered it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Unix milliseconds when the request arrived.
    pub time_ms: u64,
    /// The tunnel it was for.
    pub tunnel_id: String,
    /// The client's address (the one a trusted front named, if any).
    pub client: String,
    /// The Control user the gateway admitted, if the tunnel asked for a login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `GET`, `POST`, …
    pub method: String,
    /// The hostname asked for.
    pub host: String,
    /// The normalised path, without the query string.
    pub path: String,
    /// The answer's status.
    pub status: u16,
    /// Bytes of the request body.
    pub bytes_in: u64,
    /// Bytes of the answer's body.
    pub bytes_out: u64,
    /// Microseconds from arrival to the answer's head.
    pub micros: u64,
    /// The overlay address of the agent that answered, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The query string, when the tunnel asks for it ([`LogDetails`]), secrets redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The request headers the tunnel names, when it does ([`LogDetails`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

/// Headers no log keeps, whatever a tunnel asks: they carry credentials.
pub const NEVER_LOGGED: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-kakuremichi-token",
];

/// Query parameters whose values every log replaces, beside those a tunnel names.
pub const ALWAYS_REDACTED: [&str; 12] = [
    "access_token",
    "api_key",
    "apikey",
    "auth",
    "code",
    "key",
    "password",
    "secret",
    "session",
    "sig",
    "signature",
    "token",
];

/// What a tunnel's log keeps beyond the path, when the tunnel asks: nothing by default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogDetails {
    /// Keep the query string, the values of [`ALWAYS_REDACTED`] and `redact` replaced.
    #[serde(default)]
    pub query: bool,
    /// Keep these request headers (lower case; never those of [`NEVER_LOGGED`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// More query parameters whose values are replaced (lower case).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redact: Vec<String>,
}

impl LogDetails {
    /// Nothing beyond the path.
    pub fn is_off(&self) -> bool {
        !self.query && self.headers.is_empty()
    }

    /// Why these details cannot be kept, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if let Some(secret) = self
            .headers
            .iter()
            .find(|h| NEVER_LOGGED.contains(&h.as_str()))
        {
            return Err(format!("{secret} carries credentials and is never logged"));
        }
        let token = |v: &String| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        };
        if self.headers.len() > 16 || !self.headers.iter().all(token) {
            return Err("headers: at most 16 lower-case header names".into());
        }
        if self.redact.len() > 32 || !self.redact.iter().all(token) {
            return Err("redact: at most 32 lower-case parameter names".into());
        }
        Ok(())
    }

    /// `query` as the log keeps it: each parameter of a secret's name has its value
    /// replaced by `REDACTED` (names compared in any case), at most [`MAX_PATH_CHARS`].
    pub fn redacted(&self, query: &str) -> String {
        let secret = |name: &str| {
            let name = name.to_ascii_lowercase();
            ALWAYS_REDACTED.contains(&name.as_str()) || self.redact.contains(&name)
        };
        let parts: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if secret(&decoded(name)) => format!("{name}=REDACTED"),
                None if secret(&decoded(pair)) => format!("{pair}=REDACTED"),
                _ => pair.to_string(),
            })
            .collect();
        kept_path(&parts.join("&"))
    }
}

/// A query parameter's name with `+` and `%XX` decoded, so `%74oken` is `token`.
fn decoded(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Which entries a person wants: each field that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogQuery {
    /// Chosen by Control to match the answer to the question.
    pub id: u64,
    /// Only this tunnel's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_id: Option<String>,
    /// 1 to 5: the status class (`5` is 5xx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_class: Option<u16>,
    /// The client address, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Only this Control user's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Only entries at or after this Unix millisecond.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// At most this many, newest first (capped at [`MAX_ENTRIES`]).
    pub limit: usize,
}

impl LogQuery {
    /// Whether `entry` is one the query asks for.
    pub fn matches(&self, entry: &LogEntry) -> bool {
        self.tunnel_id
            .as_ref()
            .is_none_or(|t| *t == entry.tunnel_id)
            && self.status_class.is_none_or(|c| entry.status / 100 == c)
            && self.client.as_ref().is_none_or(|c| *c == entry.client)
            && self
                .user
                .as_ref()
                .is_none_or(|u| entry.user.as_ref() == Some(u))
            && self.since_ms.is_none_or(|t| entry.time_ms >= t)
    }

    /// The number of entries to answer with.
    pub fn limit(&self) -> usize {
        self.limit.clamp(1, MAX_ENTRIES)
    }
}

/// `path` as a log keeps it: at most [`MAX_PATH_CHARS`] characters.
pub fn kept_path(path: &str) -> String {
    match path.char_indices().nth(MAX_PATH_CHARS) {
        Some((at, _)) => format!("{}…", &path[..at]),
        None => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: u16, user: Option<&str>) -> LogEntry {
        LogEntry {
            time_ms: 1_000,
            tunnel_id: "tun_a".into(),
            client: "203.0.113.5".into(),
            user: user.map(str::to_string),
            method: "GET".into(),
            host: "app.example.com".into(),
            path: "/".into(),
            status,
            bytes_in: 0,
            bytes_out: 10,
            micros: 1_500,
            agent: None,
            query: None,
            headers: Vec::new(),
        }
    }

    #[test]
    fn every_set_field_of_a_query_must_match() {
        let all = LogQuery::default();
        assert!(all.matches(&entry(200, None)));
        let errors = LogQuery {
            status_class: Some(5),
            ..LogQuery::default()
        };
        assert!(errors.matches(&entry(502, None)) && !errors.matches(&entry(200, None)));
        let alice = LogQuery {
            user: Some("alice".into()),
            tunnel_id: Some("tun_a".into()),
            since_ms: Some(1_000),
            ..LogQuery::default()
        };
        assert!(alice.matches(&entry(200, Some("alice"))));
        assert!(!alice.matches(&entry(200, None)));
        assert!(!LogQuery {
            since_ms: Some(1_001),
            ..alice
        }
        .matches(&entry(200, Some("alice"))));
        assert_eq!(
            LogQuery {
                limit: 0,
                ..LogQuery::default()
            }
            .limit(),
            1
        );
        assert_eq!(
            LogQuery {
                limit: 10_000,
                ..LogQuery::default()
            }
            .limit(),
            MAX_ENTRIES
        );
    }

    #[test]
    fn secrets_in_a_query_are_redacted_in_every_spelling() {
        let details = LogDetails {
            query: true,
            redact: vec!["otp".into()],
            ..LogDetails::default()
        };
        assert_eq!(
            details.redacted("page=2&token=abc&TOKEN=def&%74oken=ghi&otp=123&q=x%20y&password"),
            "page=2&token=REDACTED&TOKEN=REDACTED&%74oken=REDACTED&otp=REDACTED&q=x%20y&password=REDACTED"
        );
        assert!(details.check().is_ok());
        let cookie = LogDetails {
            headers: vec!["cookie".into()],
            ..LogDetails::default()
        };
        assert!(cookie.check().unwrap_err().contains("never logged"));
        let upper = LogDetails {
            headers: vec!["User-Agent".into()],
            ..LogDetails::default()
        };
        assert!(upper.check().is_err());
        assert!(LogDetails::default().is_off());
    }

    #[test]
    fn long_paths_are_cut() {
        let long = "/ä".repeat(400);
        let kept = kept_path(&long);
        assert_eq!(kept.chars().count(), MAX_PATH_CHARS + 1);
        assert!(kept.ends_with('…'));
        assert_eq!(kept_path("/short"), "/short");
    }
}
