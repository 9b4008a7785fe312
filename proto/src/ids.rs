//! Validated identifiers. Each parses from a string once, at the edge, and serializes back to
//! the same string.

use crate::ProtoError;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

macro_rules! string_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                raw.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A DNS hostname a tunnel is published under: lower-case, 1–253 characters, labels of
/// `a-z 0-9 -` that neither start nor end with `-`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hostname(String);

impl Hostname {
    /// The hostname as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Hostname {
    type Err = ProtoError;
    fn from_str(raw: &str) -> Result<Self, ProtoError> {
        let name = raw.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || name.len() > 253 {
            return Err(ProtoError::invalid(
                "hostname",
                "must be 1 to 253 characters",
            ));
        }
        for label in name.split('.') {
            let valid_chars = label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if label.is_empty() || label.len() > 63 || !valid_chars {
                return Err(ProtoError::invalid(
                    "hostname",
                    format!("label {label:?} must be 1 to 63 of a-z, 0-9, '-'"),
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(ProtoError::invalid(
                    "hostname",
                    format!("label {label:?} starts or ends with '-'"),
                ));
            }
        }
        Ok(Hostname(name))
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
string_serde!(Hostname);

/// Where an agent forwards a tunnel's connections: `host:port`, host being an IP address
/// (IPv6 in brackets) or a DNS name such as a compose service (`app:3000`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    host: String,
    port: u16,
}

impl Target {
    /// The host part, without brackets for IPv6.
    pub fn host(&self) -> &str {
        &self.host
    }
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The same host on another port (a port range's next target).
    pub fn with_port(&self, port: u16) -> Target {
        Target {
            host: self.host.clone(),
            port,
        }
    }
}

impl FromStr for Target {
    type Err = ProtoError;
    fn from_str(raw: &str) -> Result<Self, ProtoError> {
        let (host, port) = raw
            .rsplit_once(':')
            .ok_or_else(|| ProtoError::invalid("target", "expected host:port"))?;
        let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
            ProtoError::invalid("target", format!("port {port:?} is not 1-65535"))
        })?;
        let host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            v6.parse::<std::net::Ipv6Addr>()
                .map_err(|_| {
                    ProtoError::invalid("target", format!("{v6:?} is not an IPv6 address"))
                })?
                .to_string()
        } else if host.parse::<std::net::Ipv4Addr>().is_ok() {
            host.to_string()
        } else {
            Hostname::from_str(host)
                .map_err(|_| {
                    ProtoError::invalid("target", format!("{host:?} is not a host name or IP"))
                })?
                .0
        };
        Ok(Target { host, port })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}
string_serde!(Target);

/// A WireGuard (Curve25519) public key, base64 on the wire as in `wg` configs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl FromStr for PublicKey {
    type Err = ProtoError;
    fn from_str(raw: &str) -> Result<Self, ProtoError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw.trim())
            .map_err(|_| ProtoError::invalid("public_key", "not base64"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ProtoError::invalid("public_key", "must be 32 bytes"))?;
        Ok(PublicKey(key))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}
string_serde!(PublicKey);

/// Whether a node is an agent or a gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// Origin side: forwards tunnel traffic to targets.
    Agent,
    /// Public side: terminates HTTP(S) and routes by hostname.
    Gateway,
}

impl NodeKind {
    /// `agent` or `gateway`, as used in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Agent => "agent",
            NodeKind::Gateway => "gateway",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert_eq!(
            "App.localhost.".parse::<Hostname>().unwrap().as_str(),
            "app.localhost"
        );
        for bad in [
            "",
            "-a.com",
            "a-.com",
            "a..com",
            "a b.com",
            "a_b.com",
            &"x".repeat(64),
        ] {
            assert!(bad.parse::<Hostname>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn targets() {
        let t: Target = "127.0.0.1:8080".parse().unwrap();
        assert_eq!((t.host(), t.port()), ("127.0.0.1", 8080));
        assert_eq!(
            "[::1]:80".parse::<Target>().unwrap().to_string(),
            "[::1]:80"
        );
        assert_eq!("app:3000".parse::<Target>().unwrap().host(), "app");
        for bad in ["app", "app:0", "app:70000", ":80", "[zz]:80", "a b:80"] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn public_keys_round_trip() {
        let text = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";
        assert_eq!(text.parse::<PublicKey>().unwrap().to_string(), text);
        assert!("AAAA".parse::<PublicKey>().is_err());
    }
}
