//! What Control stores, and the pure rules over it: overlay address and service port
//! allocation, and each node's config snapshot.

use kakuremichi_proto::ids::{Hostname, NodeKind, PublicKey, Target};
use kakuremichi_proto::messages::{ConfigSnapshot, HttpRoute, PeerConfig, Service};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// First service port handed to tunnels on an agent's overlay address.
pub const FIRST_SERVICE_PORT: u16 = 20000;

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
    /// The node process's instance, from its last hello.
    #[serde(default)]
    pub instance: u64,
    pub created_at: u64,
}

/// A published service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TunnelRecord {
    pub id: String,
    pub hostname: Hostname,
    pub agent_id: String,
    pub target: Target,
    pub service_port: u16,
    pub enabled: bool,
    pub created_at: u64,
}

/// An admin API token (hash only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub created_at: u64,
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
    pub fn allocate(&self, used: &[Ipv4Addr]) -> Option<Ipv4Addr> {
        let base = u32::from(self.network);
        let hosts = (1u32 << (32 - self.prefix)) - 2;
        (1..=hosts)
            .map(|i| Ipv4Addr::from(base + i))
            .find(|ip| !used.contains(ip))
    }
}

/// The lowest service port not used by `agent_id`'s tunnels.
pub fn allocate_service_port(tunnels: &[TunnelRecord], agent_id: &str) -> Option<u16> {
    let used: Vec<u16> = tunnels
        .iter()
        .filter(|t| t.agent_id == agent_id)
        .map(|t| t.service_port)
        .collect();
    (FIRST_SERVICE_PORT..=u16::MAX).find(|p| !used.contains(p))
}

/// The configuration `node` should run, given everything in the store at `version`.
pub fn snapshot(
    version: u64,
    net: OverlayNet,
    node: &NodeRecord,
    nodes: &[NodeRecord],
    tunnels: &[TunnelRecord],
) -> ConfigSnapshot {
    // Agents peer with every gateway and gateways with every agent; never agent to agent.
    let peer_kind = match node.kind {
        NodeKind::Agent => NodeKind::Gateway,
        NodeKind::Gateway => NodeKind::Agent,
    };
    let peers = nodes
        .iter()
        .filter(|n| n.kind == peer_kind)
        .filter_map(|n| {
            Some(PeerConfig {
                node_id: n.id.clone(),
                public_key: n.public_key?,
                overlay_ip: n.overlay_ip,
                endpoint: n.wireguard_endpoint.clone(),
                instance: n.instance,
            })
        })
        .collect();
    let enabled = tunnels.iter().filter(|t| t.enabled);
    let (routes, services) = match node.kind {
        NodeKind::Gateway => (
            enabled
                .filter_map(|t| {
                    let agent = nodes.iter().find(|n| n.id == t.agent_id)?;
                    Some(HttpRoute {
                        tunnel_id: t.id.clone(),
                        hostname: t.hostname.clone(),
                        agent_ip: agent.overlay_ip,
                        service_port: t.service_port,
                    })
                })
                .collect(),
            Vec::new(),
        ),
        NodeKind::Agent => (
            Vec::new(),
            enabled
                .filter(|t| t.agent_id == node.id)
                .map(|t| Service {
                    tunnel_id: t.id.clone(),
                    port: t.service_port,
                    target: t.target.clone(),
                })
                .collect(),
        ),
    };
    ConfigSnapshot {
        version,
        node_id: node.id.clone(),
        overlay_ip: node.overlay_ip,
        overlay_prefix: net.prefix,
        peers,
        routes,
        services,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, kind: NodeKind, last: u8, key: Option<u8>) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            kind,
            name: id.into(),
            overlay_ip: Ipv4Addr::new(10, 77, 0, last),
            api_key_hash: String::new(),
            public_key: key.map(|k| PublicKey([k; 32])),
            version: None,
            wireguard_endpoint: (kind == NodeKind::Gateway).then(|| "gw:51820".into()),
            instance: 0,
            created_at: 0,
        }
    }

    fn tunnel(id: &str, agent: &str, port: u16, enabled: bool) -> TunnelRecord {
        TunnelRecord {
            id: id.into(),
            hostname: format!("{id}.example.com").parse().unwrap(),
            agent_id: agent.into(),
            target: "127.0.0.1:8080".parse().unwrap(),
            service_port: port,
            enabled,
            created_at: 0,
        }
    }

    #[test]
    fn overlay_allocation_skips_used_and_network_address() {
        let net: OverlayNet = "10.77.3.9/16".parse().unwrap();
        assert_eq!(net.network, Ipv4Addr::new(10, 77, 0, 0));
        assert_eq!(
            net.allocate(&[Ipv4Addr::new(10, 77, 0, 1)]),
            Some(Ipv4Addr::new(10, 77, 0, 2))
        );
        let tiny: OverlayNet = "10.0.0.0/30".parse().unwrap();
        assert_eq!(
            tiny.allocate(&[Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]),
            None
        );
        assert!("10.0.0.0/31".parse::<OverlayNet>().is_err());
    }

    #[test]
    fn snapshots_give_each_role_only_its_part() {
        let net: OverlayNet = "10.77.0.0/16".parse().unwrap();
        let nodes = vec![
            node("gw1", NodeKind::Gateway, 1, Some(1)),
            node("a1", NodeKind::Agent, 2, Some(2)),
            node("a2", NodeKind::Agent, 3, Some(3)),
            node("a3", NodeKind::Agent, 4, None),
        ];
        let tunnels = vec![
            tunnel("t1", "a1", 20000, true),
            tunnel("t2", "a2", 20000, true),
            tunnel("t3", "a1", 20001, false),
        ];
        let a1 = snapshot(5, net, &nodes[1], &nodes, &tunnels);
        assert_eq!(
            a1.peers
                .iter()
                .map(|p| p.node_id.as_str())
                .collect::<Vec<_>>(),
            ["gw1"]
        );
        assert_eq!(a1.services.len(), 1);
        assert_eq!(a1.services[0].tunnel_id, "t1");
        assert!(a1.routes.is_empty());
        let gw = snapshot(5, net, &nodes[0], &nodes, &tunnels);
        // a3 has not said hello (no key): not a peer yet.
        assert_eq!(
            gw.peers
                .iter()
                .map(|p| p.node_id.as_str())
                .collect::<Vec<_>>()
                .len(),
            2
        );
        assert_eq!(
            gw.routes
                .iter()
                .map(|r| r.tunnel_id.as_str())
                .collect::<Vec<_>>(),
            ["t1", "t2"]
        );
        assert_eq!(allocate_service_port(&tunnels, "a1"), Some(20002));
    }
}
