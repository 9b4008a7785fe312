//! Which targets an agent forwards to (`ALLOW_TARGETS`), decided on the agent itself: a
//! stolen admin token on Control can then publish only what the agent's owner allowed, not
//! the cloud metadata service, the agent host's loopback-only services or anything else the
//! agent can reach.
//!
//! A list is entries separated by commas or spaces, each `HOST[:PORTS]`: HOST is an address,
//! a network (`192.168.1.0/24`, `[2001:db8::/32]`), a host name, or `*` for any; PORTS is a
//! port or a range (`8000-8099`), any port without it. With no list every target is allowed
//! but those refused by default: link-local addresses (cloud metadata lives there), the
//! metadata addresses of clouds that put it elsewhere, and the agent's own status port.
//! Those stay refused unless an entry names an address or network inside them.

use crate::access::Cidr;
use crate::ProtoError;
use std::net::{IpAddr, SocketAddr};

/// Where a target must be for an entry to take it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    Any,
    Network(Cidr),
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    host: Host,
    ports: (u16, u16),
}

/// An agent's target rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetRules {
    /// `None`: no `ALLOW_TARGETS`, everything but the default refusals.
    entries: Option<Vec<Entry>>,
    /// The agent's own status listener, refused unless listed.
    status: Option<SocketAddr>,
    /// The list as given, for Control and the pages.
    text: String,
}

/// Networks refused unless an entry names one inside them.
const REFUSED_NETWORKS: [&str; 4] = [
    // IPv4 link-local, with AWS/GCP/Azure/OpenStack metadata at 169.254.169.254.
    "169.254.0.0/16",
    "fe80::/10",
    // Alibaba Cloud's metadata service.
    "100.100.100.200/32",
    // AWS's IPv6 metadata service.
    "fd00:ec2::254/128",
];

/// [`REFUSED_NETWORKS`], parsed once: they are checked on every forwarded connection.
fn refused_networks() -> &'static [Cidr] {
    static PARSED: std::sync::OnceLock<Vec<Cidr>> = std::sync::OnceLock::new();
    PARSED.get_or_init(|| {
        REFUSED_NETWORKS
            .iter()
            .filter_map(|net| net.parse().ok())
            .collect()
    })
}

impl TargetRules {
    /// Parse `ALLOW_TARGETS` (empty: no list); `status` is the agent's status listener.
    pub fn parse(text: &str, status: Option<SocketAddr>) -> Result<TargetRules, ProtoError> {
        let items: Vec<&str> = text
            .split([',', ' ', '\n', '\t'])
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .collect();
        let entries = match items.is_empty() {
            true => None,
            false => Some(
                items
                    .iter()
                    .map(|item| entry(item))
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(TargetRules {
            entries,
            status,
            text: items.join(","),
        })
    }

    /// The list as given (normalised to commas), empty without one.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the agent may forward to `address`, reached through a target named `host`.
    pub fn admits(&self, host: &str, address: SocketAddr) -> bool {
        let ip = address.ip();
        let port = address.port();
        let named_inside = |refused: &Cidr| {
            self.entries.iter().flatten().any(|e| match &e.host {
                Host::Network(net) => refused.contains(net.network()) && in_ports(e, port),
                _ => false,
            })
        };
        let refused_by_default = refused_networks()
            .iter()
            .any(|net| net.contains(ip) && !named_inside(net));
        if refused_by_default {
            return false;
        }
        if let Some(status) = self.status {
            let own = status.port() == port
                && (status.ip() == ip || status.ip().is_unspecified() || ip.is_loopback());
            if own && !self.names_exactly(ip, port) {
                return false;
            }
        }
        let Some(entries) = &self.entries else {
            return true;
        };
        entries.iter().any(|e| {
            in_ports(e, port)
                && match &e.host {
                    Host::Any => true,
                    Host::Network(net) => net.contains(ip),
                    Host::Name(name) => name.eq_ignore_ascii_case(host),
                }
        })
    }

    /// Whether an entry names exactly `ip` (a /32 or /128) and `port`.
    fn names_exactly(&self, ip: IpAddr, port: u16) -> bool {
        self.entries.iter().flatten().any(|e| match &e.host {
            Host::Network(net) => net.is_single(ip) && in_ports(e, port),
            _ => false,
        })
    }

    /// Whether a target `host:port` can be allowed at all, judged before it is resolved (how
    /// Control checks a tunnel against the list its agent reported): an address is judged as
    /// [`TargetRules::admits`] does, a name is taken when an entry names it or takes any host.
    pub fn may_allow(&self, host: &str, port: u16) -> bool {
        match host.parse::<IpAddr>() {
            Ok(ip) => self.admits(host, SocketAddr::new(ip, port)),
            Err(_) => match &self.entries {
                None => true,
                Some(entries) => entries.iter().any(|e| {
                    in_ports(e, port)
                        && match &e.host {
                            Host::Any => true,
                            Host::Name(name) => name.eq_ignore_ascii_case(host),
                            // The name may resolve inside it: the agent decides at connect.
                            Host::Network(_) => true,
                        }
                }),
            },
        }
    }
}

fn in_ports(entry: &Entry, port: u16) -> bool {
    (entry.ports.0..=entry.ports.1).contains(&port)
}

fn entry(item: &str) -> Result<Entry, ProtoError> {
    let invalid = |why: &str| ProtoError::invalid("allow_targets", format!("{item:?}: {why}"));
    // `[v6 or v6/prefix]:ports`, `v4/prefix:ports`, `name:ports`, or any of them bare.
    let (host, ports) = if let Some(rest) = item.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| invalid("no closing ]"))?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| invalid("expected :PORTS"))?,
                ),
            ),
        }
    } else if item.matches(':').count() > 1 {
        (item, None)
    } else {
        match item.split_once(':') {
            Some((host, ports)) => (host, Some(ports)),
            None => (item, None),
        }
    };
    let ports = match ports {
        None => (1, u16::MAX),
        Some(text) => {
            let (low, high) = text.split_once('-').unwrap_or((text, text));
            let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0);
            match (port(low), port(high)) {
                (Some(low), Some(high)) if low <= high => (low, high),
                _ => return Err(invalid("ports are a port or a range like 8000-8099")),
            }
        }
    };
    let host = if host == "*" {
        Host::Any
    } else if let Ok(net) = host.parse::<Cidr>() {
        Host::Network(net)
    } else if !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        Host::Name(host.to_ascii_lowercase())
    } else {
        return Err(invalid("not an address, network, host name or *"));
    };
    Ok(Entry { host, ports })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn without_a_list_only_the_default_refusals_apply() {
        assert_eq!(
            refused_networks().len(),
            REFUSED_NETWORKS.len(),
            "each one parses"
        );
        let rules = TargetRules::parse("", Some(at("127.0.0.1:9091"))).unwrap();
        assert!(rules.admits("app", at("10.0.0.5:8080")));
        assert!(rules.admits("localhost", at("127.0.0.1:8080")));
        for refused in [
            "169.254.169.254:80",
            "169.254.1.1:22",
            "100.100.100.200:80",
            "[fd00:ec2::254]:80",
            "[fe80::1]:80",
            "127.0.0.1:9091",
            "127.0.0.2:9091",
        ] {
            assert!(!rules.admits("x", at(refused)), "{refused}");
        }
        assert!(rules.may_allow("app", 3000));
        assert!(!rules.may_allow("169.254.169.254", 80));
    }

    #[test]
    fn a_list_allows_what_it_names_and_nothing_else() {
        let rules = TargetRules::parse(
            "192.168.1.0/24:80, 127.0.0.1:8000-8099 db.lan:5432 [2001:db8::/32]",
            Some(at("127.0.0.1:9091")),
        )
        .unwrap();
        assert_eq!(
            rules.text(),
            "192.168.1.0/24:80,127.0.0.1:8000-8099,db.lan:5432,[2001:db8::/32]"
        );
        assert!(rules.admits("192.168.1.7", at("192.168.1.7:80")));
        assert!(!rules.admits("192.168.1.7", at("192.168.1.7:22")));
        assert!(rules.admits("localhost", at("127.0.0.1:8080")));
        assert!(!rules.admits("localhost", at("127.0.0.1:9091")));
        assert!(rules.admits("db.lan", at("10.9.9.9:5432")));
        assert!(!rules.admits("other.lan", at("10.9.9.9:5432")));
        assert!(rules.admits("v6", at("[2001:db8::5]:443")));
        assert!(!rules.admits("v6", at("[2001:db9::5]:443")));
        // A name it allows cannot lead to the metadata service.
        let any = TargetRules::parse("*", None).unwrap();
        assert!(!any.admits("evil.example", at("169.254.169.254:80")));
        assert!(rules.may_allow("db.lan", 5432));
        // A name may resolve into a listed network: only the agent can tell, when it connects.
        assert!(rules.may_allow("db.lan", 22));
        let names = TargetRules::parse("db.lan:5432", None).unwrap();
        assert!(!names.may_allow("db.lan", 22) && !names.may_allow("web.lan", 5432));
        assert!(!rules.may_allow("10.0.0.1", 80));
    }

    #[test]
    fn default_refusals_give_way_only_to_entries_that_name_them() {
        let rules = TargetRules::parse(
            "169.254.10.0/24:8080, 127.0.0.1:9091",
            Some(at("127.0.0.1:9091")),
        )
        .unwrap();
        assert!(rules.admits("x", at("169.254.10.1:8080")));
        assert!(!rules.admits("x", at("169.254.169.254:80")));
        assert!(rules.admits("x", at("127.0.0.1:9091")));
    }

    #[test]
    fn malformed_lists_are_refused_with_the_entry() {
        for bad in [
            "10.0.0.0/33",
            "host:0",
            "host:9-1",
            "host:x",
            "a b/c",
            "[::1",
        ] {
            let error = TargetRules::parse(bad, None).unwrap_err().to_string();
            assert!(error.contains("allow_targets"), "{bad}: {error}");
        }
    }
}
