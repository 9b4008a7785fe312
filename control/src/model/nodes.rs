//! An enrolled agent or gateway, the overlay network its address comes from, and the rule
//! for the names people give nodes and tokens.

use kakuremichi_proto::ids::{NodeKind, PublicKey};
use kakuremichi_proto::ports::PortPolicy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A gateway's labels, key → value.
pub type Labels = BTreeMap<String, String>;

/// An enrolled agent or gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    pub kind: NodeKind,
    pub name: String,
    pub overlay_ip: Ipv4Addr,
    /// SHA-256 of the API key, hex. The key itself is shown once, at creation.
    pub api_key_hash: String,
    /// Learned from the node's hello.
    pub public_key: Option<PublicKey>,
    pub version: Option<String>,
    /// Gateways: where agents send WireGuard datagrams.
    pub wireguard_endpoint: Option<String>,
    /// Gateways: the public HTTPS port, for agents' WireGuard over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_port: Option<u16>,
    /// Gateways: the public HTTP port, where logins may return to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_port: Option<u16>,
    /// Agents: the `ALLOW_TARGETS` they reported (empty: any target but those refused by
    /// default); `None` until an agent that reports one says hello.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_targets: Option<String>,
    /// The node process's instance, from its last hello.
    #[serde(default)]
    pub instance: u64,
    /// A disabled node keeps its session (so enabling it again takes effect at once) but is
    /// given nothing to serve, and no other node peers with it.
    #[serde(default)]
    pub disabled: bool,
    /// Gateways: which ports tunnels may take there, from its last hello.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_policy: Option<PortPolicy>,
    /// Gateways: labels tunnels choose gateways by (`region=tokyo`).
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// Gateways: finishing what is in flight and refusing new requests (503), so a load
    /// balancer or DNS moves clients to the others before it is stopped.
    #[serde(default)]
    pub draining: bool,
    pub created_at: u64,
}

#[cfg(test)]
impl NodeRecord {
    /// A gateway with `labels`, for tests.
    pub(crate) fn test_gateway(id: &str, labels: &[(&str, &str)]) -> NodeRecord {
        let overlay_ip = Ipv4Addr::new(10, 77, 0, 1);
        NodeRecord {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..NodeRecord::enrolled(id, NodeKind::Gateway, id, overlay_ip, String::new(), 0)
        }
    }
}

impl NodeRecord {
    /// A node just enrolled: enabled, unlabelled, not yet heard from.
    pub fn enrolled(
        id: &str,
        kind: NodeKind,
        name: &str,
        overlay_ip: Ipv4Addr,
        api_key_hash: String,
        created_at: u64,
    ) -> Self {
        NodeRecord {
            id: id.to_string(),
            kind,
            name: name.to_string(),
            overlay_ip,
            api_key_hash,
            public_key: None,
            version: None,
            wireguard_endpoint: None,
            https_port: None,
            http_port: None,
            allow_targets: None,
            instance: 0,
            disabled: false,
            port_policy: None,
            labels: Labels::new(),
            draining: false,
            created_at,
        }
    }
}

impl NodeRecord {
    /// What the node said of itself in `hello`, for its kind: gateways their endpoint and
    /// ports, agents the targets they allow.
    pub fn take_hello(&mut self, hello: &kakuremichi_proto::messages::Hello) {
        let gateway = self.kind == NodeKind::Gateway;
        self.public_key = Some(hello.public_key);
        self.version = Some(hello.version.clone());
        self.instance = hello.instance;
        self.wireguard_endpoint = hello.wireguard_endpoint.clone().filter(|_| gateway);
        self.port_policy = hello.ports.clone().filter(|_| gateway);
        self.https_port = hello.https_port.filter(|_| gateway);
        self.http_port = hello.http_port.filter(|_| gateway);
        self.allow_targets = hello.allow_targets.clone().filter(|_| !gateway);
    }
}

/// The overlay network, e.g. `10.77.0.0/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayNet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl std::str::FromStr for OverlayNet {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        let (ip, prefix) = raw.split_once('/').ok_or("expected a.b.c.d/len")?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or("prefix must be 8 to 30")?;
        let mask = u32::MAX << (32 - prefix);
        Ok(OverlayNet {
            network: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }
}

impl OverlayNet {
    /// The lowest host address not in `used`.
    pub fn allocate(&self, used: &std::collections::HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let base = u32::from(self.network);
        let hosts = (1u32 << (32 - self.prefix)) - 2;
        (1..=hosts)
            .map(|i| Ipv4Addr::from(base + i))
            .find(|ip| !used.contains(ip))
    }
}

/// Why a name people give (a node's, a token's) is refused: 1 to 64 printable characters.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err("must be 1 to 64 printable characters");
    }
    Ok(())
}
