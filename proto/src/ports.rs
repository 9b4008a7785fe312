//! Public ports: the ranges `tcp` and `udp` tunnels take on gateways, and the rules each
//! gateway announces about which ports tunnels may have there.

use crate::ProtoError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Most ports one tunnel may map: each is a listener on every gateway.
pub const MAX_TUNNEL_PORTS: u16 = 1000;

/// The transport a port tunnel carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Byte streams.
    #[default]
    Tcp,
    /// Datagrams.
    Udp,
}

impl Transport {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// Consecutive ports `first..=last` (one port: `first == last`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// `first..=last`; refuses port 0 and an inverted range.
    pub fn new(first: u16, last: u16) -> Result<Self, ProtoError> {
        if first == 0 {
            return Err(ProtoError::invalid("ports", "port 0 is not a port"));
        }
        if last < first {
            return Err(ProtoError::invalid(
                "ports",
                format!("{first}-{last} ends before it starts"),
            ));
        }
        Ok(PortRange { first, last })
    }

    /// One port.
    pub fn single(port: u16) -> Result<Self, ProtoError> {
        Self::new(port, port)
    }

    /// The first port.
    pub fn first(self) -> u16 {
        self.first
    }

    /// The last port.
    pub fn last(self) -> u16 {
        self.last
    }

    /// How many ports.
    pub fn len(self) -> u16 {
        self.last - self.first + 1
    }

    /// Never true: a range holds at least one port. (For clippy's `len_without_is_empty`.)
    pub fn is_empty(self) -> bool {
        false
    }

    /// Every port, in order.
    pub fn iter(self) -> impl Iterator<Item = u16> {
        self.first..=self.last
    }

    /// Whether `port` is in the range.
    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// Whether the ranges share a port.
    pub fn overlaps(self, other: PortRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    /// Whether every port of `inner` is in this range.
    pub fn covers(self, inner: PortRange) -> bool {
        self.first <= inner.first && inner.last <= self.last
    }
}

impl FromStr for PortRange {
    type Err = ProtoError;
    fn from_str(raw: &str) -> Result<Self, ProtoError> {
        let port = |text: &str| {
            text.trim()
                .parse::<u16>()
                .map_err(|_| ProtoError::invalid("ports", format!("{text:?} is not a port")))
        };
        match raw.split_once('-') {
            Some((first, last)) => Self::new(port(first)?, port(last)?),
            None => Self::single(port(raw)?),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.first == self.last {
            true => write!(f, "{}", self.first),
            false => write!(f, "{}-{}", self.first, self.last),
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Which ports a gateway lets tunnels take, announced in its hello so Control can refuse a
/// tunnel it could not serve before anyone waits for a listener that never opens.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortPolicy {
    /// TCP ports tunnels may take (`--tcp-ports`); empty: none.
    pub tcp_allowed: Vec<PortRange>,
    /// UDP ports tunnels may take (`--udp-ports`); empty: none.
    pub udp_allowed: Vec<PortRange>,
    /// The gateway's own TCP listeners (HTTP, HTTPS, admin), with what each is.
    pub tcp_reserved: Vec<(u16, String)>,
    /// The gateway's own UDP sockets (WireGuard), with what each is.
    pub udp_reserved: Vec<(u16, String)>,
}

impl PortPolicy {
    /// Why `ports` cannot be a `transport` tunnel's on this gateway, if they cannot.
    pub fn refuses(&self, transport: Transport, ports: PortRange) -> Option<String> {
        let (allowed, reserved, flag) = match transport {
            Transport::Tcp => (&self.tcp_allowed, &self.tcp_reserved, "--tcp-ports"),
            Transport::Udp => (&self.udp_allowed, &self.udp_reserved, "--udp-ports"),
        };
        if let Some((port, what)) = reserved.iter().find(|(port, _)| ports.contains(*port)) {
            return Some(format!(
                "{} port {port} is the gateway's own {what}",
                transport.as_str()
            ));
        }
        if !allowed.iter().any(|range| range.covers(ports)) {
            let allowed: Vec<String> = allowed.iter().map(PortRange::to_string).collect();
            return Some(format!(
                "{} {ports} is outside the gateway's {flag} ({})",
                transport.as_str(),
                match allowed.is_empty() {
                    true => "none".to_string(),
                    false => allowed.join(", "),
                }
            ));
        }
        None
    }
}

/// Parse a comma-separated list of ranges, as `--tcp-ports 10000-20000,5432` takes.
pub fn parse_ranges(raw: &str) -> Result<Vec<PortRange>, ProtoError> {
    raw.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(str::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_print_and_refuse_nonsense() {
        let range: PortRange = "20000-20010".parse().unwrap();
        assert_eq!(
            (range.first(), range.last(), range.len()),
            (20000, 20010, 11)
        );
        assert_eq!(range.to_string(), "20000-20010");
        assert_eq!("5432".parse::<PortRange>().unwrap().to_string(), "5432");
        for bad in ["0", "70000", "10-5", "a-b", ""] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&range).unwrap();
        assert_eq!(json, "\"20000-20010\"");
        assert_eq!(serde_json::from_str::<PortRange>(&json).unwrap(), range);
        assert!(serde_json::from_str::<PortRange>("\"9-1\"").is_err());
    }

    #[test]
    fn overlap_and_cover() {
        let r = |s: &str| s.parse::<PortRange>().unwrap();
        assert!(r("10-20").overlaps(r("20-30")));
        assert!(!r("10-20").overlaps(r("21-30")));
        assert!(r("10-20").covers(r("12-13")));
        assert!(!r("10-20").covers(r("19-21")));
    }

    #[test]
    fn a_policy_names_why_it_refuses() {
        let policy = PortPolicy {
            tcp_allowed: parse_ranges("10000-20000,5432").unwrap(),
            udp_allowed: parse_ranges("1-65535").unwrap(),
            tcp_reserved: vec![(443, "HTTPS listener".into())],
            udp_reserved: vec![(51820, "WireGuard socket".into())],
        };
        let r = |s: &str| s.parse::<PortRange>().unwrap();
        assert_eq!(policy.refuses(Transport::Tcp, r("5432")), None);
        assert_eq!(policy.refuses(Transport::Tcp, r("15000-15010")), None);
        let outside = policy.refuses(Transport::Tcp, r("19999-20001")).unwrap();
        assert!(
            outside.contains("--tcp-ports (10000-20000, 5432)"),
            "{outside}"
        );
        let own = policy.refuses(Transport::Udp, r("51810-51830")).unwrap();
        assert!(
            own.contains("51820 is the gateway's own WireGuard socket"),
            "{own}"
        );
        assert!(PortPolicy::default()
            .refuses(Transport::Tcp, r("80"))
            .unwrap()
            .contains("(none)"));
        assert!(parse_ranges("5-1").is_err() && parse_ranges("0").is_err());
    }
}
