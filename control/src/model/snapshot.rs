//! Each node's config snapshot: what an agent or gateway should run, given the store.

use super::{Issuer, NodeRecord, State, TunnelKind, TunnelRecord};
use kakuremichi_proto::ids::{Hostname, NodeKind};
use kakuremichi_proto::messages::{
    AcmeChallenge, CertificateBundle, ConfigSnapshot, HttpRoute, PassthroughRoute, PeerConfig,
    PortRoute, Service, Upstream,
};
use std::net::Ipv4Addr;
use std::time::Duration;

/// What a snapshot needs beyond the store.
#[derive(Clone, Debug)]
pub struct SnapshotSettings {
    /// Both ends of a node session heartbeat this often.
    pub heartbeat: Duration,
    /// Control's page where browsers log in to tunnels open to Control users.
    pub access_login_url: Option<String>,
}

/// The configuration `node` should run, given everything in the store.
pub fn snapshot(state: &State, node: &NodeRecord, settings: &SnapshotSettings) -> ConfigSnapshot {
    let (nodes, tunnels) = (&state.nodes, &state.tunnels);
    // Agents peer with every gateway and gateways with every agent; never agent to agent.
    let peer_kind = match node.kind {
        NodeKind::Agent => NodeKind::Gateway,
        NodeKind::Gateway => NodeKind::Agent,
    };
    let peers = nodes
        .iter()
        .filter(|n| n.kind == peer_kind && !n.disabled && !node.disabled)
        .filter_map(|n| {
            Some(PeerConfig {
                node_id: n.id.clone(),
                public_key: n.public_key?,
                overlay_ip: n.overlay_ip,
                endpoint: n.wireguard_endpoint.clone(),
                instance: n.instance,
                https_port: n.https_port,
            })
        })
        .collect();
    let enabled: Vec<&TunnelRecord> = tunnels
        .iter()
        .filter(|t| t.spec.enabled && !node.disabled)
        .collect();
    let (mut routes, mut port_routes, mut passthrough_routes, mut services) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    match node.kind {
        NodeKind::Gateway => {
            for t in enabled
                .into_iter()
                .filter(|t| t.spec.gateways.selects(node))
            {
                // Every enabled agent of the tunnel, the primary first while it is enabled.
                let agent_ips: Vec<Ipv4Addr> = t
                    .spec
                    .agents()
                    .filter_map(|(id, _)| nodes.iter().find(|n| n.id == id && !n.disabled))
                    .map(|n| n.overlay_ip)
                    .collect();
                let Some((&agent_ip, replica_ips)) = agent_ips.split_first() else {
                    continue;
                };
                let upstream = |service_port| Upstream {
                    tunnel_id: t.id.clone(),
                    agent_ip,
                    service_port,
                    replica_ips: replica_ips.to_vec(),
                    proxy_protocol: t.spec.proxy_protocol,
                };
                match (
                    t.spec.kind,
                    &t.spec.hostname,
                    t.spec.kind.transport(),
                    t.spec.ports,
                ) {
                    (TunnelKind::Http, Some(hostname), _, _) => routes.push(HttpRoute {
                        tunnel_id: t.id.clone(),
                        hostname: hostname.clone(),
                        agent_ip,
                        service_port: t.service_port,
                        replica_ips: replica_ips.to_vec(),
                        https: t.spec.issuer != Issuer::None,
                        access: t.spec.access.policy(&state.users),
                        origin: t.spec.origin_options(),
                        path_prefix: t.spec.path_prefix.clone(),
                    }),
                    (TunnelKind::Tls, Some(hostname), _, _) => {
                        passthrough_routes.push(PassthroughRoute {
                            hostname: hostname.clone(),
                            upstream: upstream(t.service_port),
                        })
                    }
                    (_, _, Some(transport), Some(ports)) => {
                        port_routes.extend(ports.iter().zip(t.forwards()).map(
                            |(port, (service_port, _))| PortRoute {
                                transport,
                                port,
                                upstream: upstream(service_port),
                            },
                        ))
                    }
                    // `tunnels::check` let no other shape into the store.
                    _ => log::error!("tunnel {} has neither hostname nor ports", t.id),
                }
            }
        }
        NodeKind::Agent => {
            for t in enabled {
                let Some(own_target) = t.spec.target_on(&node.id) else {
                    continue;
                };
                let transport = t.spec.kind.transport().unwrap_or_default();
                services.extend(t.forwards_to(own_target).map(|(port, target)| Service {
                    tunnel_id: t.id.clone(),
                    port,
                    target,
                    transport,
                    connect_timeout_ms: t.spec.origin.connect_timeout_secs.map(|s| s * 1000),
                }));
            }
        }
    }
    let (certificates, challenges, fallback_certificate) = match node.kind {
        NodeKind::Gateway => (
            gateway_certificates(state),
            challenges_for(state, node),
            state.fallback_certificate.clone(),
        ),
        NodeKind::Agent => (Vec::new(), Vec::new(), None),
    };
    ConfigSnapshot {
        version: state.revision,
        node_id: node.id.clone(),
        overlay_ip: node.overlay_ip,
        overlay_prefix: state.overlay.prefix,
        peers,
        routes,
        services,
        port_routes,
        passthrough_routes,
        certificates,
        challenges,
        fallback_certificate,
        control_route: match node.kind {
            NodeKind::Gateway => state.control_route.as_ref().map(|(route, _)| route.clone()),
            NodeKind::Agent => None,
        },
        access_keys: match node.kind {
            NodeKind::Gateway => state
                .keyring
                .for_gateways(settings.access_login_url.clone())
                .inspect_err(|e| log::error!("access keys: {e}"))
                .ok(),
            NodeKind::Agent => None,
        },
        heartbeat_interval_ms: settings.heartbeat.as_millis() as u64,
        draining: node.kind == NodeKind::Gateway && node.draining,
    }
}

/// Hostnames that should have a certificate, with its issuer: enabled HTTPS tunnels, and
/// Control's own hostname.
pub fn https_hostnames(state: &State) -> Vec<(Hostname, Issuer)> {
    let tunnels = state
        .tunnels
        .iter()
        .filter(|t| {
            t.spec.enabled && t.spec.kind == TunnelKind::Http && t.spec.issuer != Issuer::None
        })
        .filter_map(|t| Some((t.spec.hostname.clone()?, t.spec.issuer)));
    let control = state
        .control_route
        .iter()
        .map(|(route, issuer)| (route.hostname.clone(), *issuer));
    let mut wanted: Vec<(Hostname, Issuer)> = Vec::new();
    // Tunnels that split a hostname by path share its one certificate.
    for (hostname, issuer) in tunnels.chain(control) {
        if issuer != Issuer::None && !wanted.iter().any(|(h, _)| *h == hostname) {
            wanted.push((hostname, issuer));
        }
    }
    wanted
}

/// [`https_hostnames`] no certificate is stored for yet (an ACME or internal one not
/// issued, a manual one not uploaded): the dashboard and the certificates page list them.
pub fn hostnames_without_certificate(state: &State) -> Vec<(Hostname, Issuer)> {
    https_hostnames(state)
        .into_iter()
        .filter(|(hostname, _)| !state.certificates.iter().any(|c| c.hostname == *hostname))
        .collect()
}

/// The ACME challenge answers `gateway` gives: those for hostnames it serves (a tunnel that
/// chose other gateways keeps its challenges off this one) and Control's own.
fn challenges_for(state: &State, gateway: &NodeRecord) -> Vec<AcmeChallenge> {
    let serves = |hostname: &Hostname| {
        let control = state
            .control_route
            .as_ref()
            .is_some_and(|(route, _)| route.hostname == *hostname);
        control
            || state.tunnels.iter().any(|t| {
                t.spec.enabled
                    && t.spec.hostname.as_ref() == Some(hostname)
                    && t.spec.gateways.selects(gateway)
            })
    };
    state
        .challenges
        .iter()
        .filter(|challenge| match challenge {
            AcmeChallenge::Http01 { hostname, .. } => hostname.as_ref().is_none_or(serves),
            AcmeChallenge::TlsAlpn01 { hostname, .. } => serves(hostname),
        })
        .cloned()
        .collect()
}

/// Certificates of the hostnames gateways serve over HTTPS.
fn gateway_certificates(state: &State) -> Vec<CertificateBundle> {
    let wanted = https_hostnames(state);
    state
        .certificates
        .iter()
        .filter(|c| wanted.iter().any(|(hostname, _)| *hostname == c.hostname))
        .filter_map(|c| {
            Some(CertificateBundle {
                hostname: c.hostname.clone(),
                chain_pem: c.chain_pem.clone()?,
                key_pem: c.key_pem.clone()?,
                publicly_trusted: matches!(c.issuer, Issuer::Acme | Issuer::Manual),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Keyring, TunnelAccess};
    use crate::model::{
        GatewayChoice, OriginSettings, OverlayNet, Replica, TunnelSpec, FIRST_SERVICE_PORT,
    };
    use kakuremichi_proto::ids::PublicKey;
    use kakuremichi_proto::messages::HEARTBEAT_INTERVAL;

    fn node(id: &str, kind: NodeKind, last: u8, key: Option<u8>) -> NodeRecord {
        NodeRecord {
            public_key: key.map(|k| PublicKey([k; 32])),
            wireguard_endpoint: (kind == NodeKind::Gateway).then(|| "gw:51820".into()),
            ..NodeRecord::enrolled(
                id,
                kind,
                id,
                Ipv4Addr::new(10, 77, 0, last),
                String::new(),
                0,
            )
        }
    }

    fn tunnel(id: &str, agent: &str, port: u16, enabled: bool) -> TunnelRecord {
        TunnelRecord {
            id: id.into(),
            spec: TunnelSpec {
                kind: TunnelKind::Http,
                hostname: Some(format!("{id}.example.com").parse().unwrap()),
                ports: None,
                agent_id: agent.into(),
                target: "127.0.0.1:8080".parse().unwrap(),
                replicas: Vec::new(),
                enabled,
                issuer: Issuer::Acme,
                access: TunnelAccess::default(),
                proxy_protocol: None,
                origin: OriginSettings::default(),
                path_prefix: None,
                gateways: GatewayChoice::All,
            },
            service_port: port,
            created_at: 0,
        }
    }

    /// A store's state with these nodes and tunnels and nothing else.
    fn state(overlay: OverlayNet, nodes: Vec<NodeRecord>, tunnels: Vec<TunnelRecord>) -> State {
        State {
            revision: 5,
            overlay,
            nodes,
            tunnels,
            certificates: vec![],
            challenges: vec![],
            fallback_certificate: None,
            control_route: None,
            users: vec![],
            keyring: Keyring::generate().unwrap(),
        }
    }

    fn settings() -> SnapshotSettings {
        SnapshotSettings {
            heartbeat: HEARTBEAT_INTERVAL,
            access_login_url: None,
        }
    }

    #[test]
    fn replicas_each_serve_their_own_target_and_gateways_know_every_enabled_one() {
        let net: OverlayNet = "10.77.0.0/16".parse().unwrap();
        let gateway = node("gw", NodeKind::Gateway, 1, Some(1));
        let (a1, mut a2, a3) = (
            node("a1", NodeKind::Agent, 2, Some(2)),
            node("a2", NodeKind::Agent, 3, Some(3)),
            node("a3", NodeKind::Agent, 4, Some(4)),
        );
        let mut twin = tunnel("t1", "a1", 20000, true);
        twin.spec.replicas = vec![
            Replica {
                agent_id: "a2".into(),
                target: "10.0.0.2:80".parse().unwrap(),
            },
            Replica {
                agent_id: "a3".into(),
                target: "10.0.0.3:80".parse().unwrap(),
            },
        ];
        let nodes = vec![gateway.clone(), a1.clone(), a2.clone(), a3.clone()];
        let mut state = state(net, nodes, vec![twin]);
        let route = &snapshot(&state, &gateway, &settings()).routes[0];
        assert_eq!(route.agent_ip, a1.overlay_ip);
        assert_eq!(route.replica_ips, vec![a2.overlay_ip, a3.overlay_ip]);
        for (agent, target) in [(&a1, "127.0.0.1:8080"), (&a2, "10.0.0.2:80")] {
            let services = snapshot(&state, agent, &settings()).services;
            assert_eq!(services.len(), 1);
            assert_eq!(
                (services[0].port, services[0].target.to_string()),
                (20000, target.into())
            );
        }
        // A disabled replica leaves the route; the others keep it.
        a2.disabled = true;
        state.nodes[2] = a2;
        let route = &snapshot(&state, &gateway, &settings()).routes[0];
        assert_eq!(route.replica_ips, vec![a3.overlay_ip]);
        // Service ports are free on every agent of the tunnel.
        let other = tunnel("t2", "a3", 0, true);
        state.tunnels.push(other);
        assert_eq!(
            crate::tunnels::allocate_service_ports(
                &state.tunnels,
                &["a3"],
                1,
                Some("t2"),
                FIRST_SERVICE_PORT
            ),
            Some(20001)
        );
    }

    #[test]
    fn a_tunnel_on_chosen_gateways_keeps_its_routes_and_challenges_off_the_others() {
        let net: OverlayNet = "10.77.0.0/16".parse().unwrap();
        let (mut tokyo, osaka) = (
            node("gw_t", NodeKind::Gateway, 1, Some(1)),
            node("gw_o", NodeKind::Gateway, 2, Some(2)),
        );
        tokyo.labels.insert("region".into(), "tokyo".into());
        let agent = node("a1", NodeKind::Agent, 3, Some(3));
        let mut chosen = tunnel("t1", "a1", 20000, true);
        chosen.spec.gateways = GatewayChoice::Labels(vec![("region".into(), "tokyo".into())]);
        let everywhere = tunnel("t2", "a1", 20001, true);
        let mut state = state(
            net,
            vec![tokyo.clone(), osaka.clone(), agent],
            vec![chosen, everywhere],
        );
        let challenge = |host: &str| AcmeChallenge::Http01 {
            hostname: Some(host.parse().unwrap()),
            token: host.into(),
            key_authorization: "k".into(),
        };
        state.challenges = vec![challenge("t1.example.com"), challenge("t2.example.com")];
        let tokens = |gateway: &NodeRecord| -> Vec<String> {
            let snapshot = snapshot(&state, gateway, &settings());
            let routes = snapshot.routes.iter().map(|r| r.tunnel_id.clone());
            let challenges = snapshot.challenges.iter().map(|c| match c {
                AcmeChallenge::Http01 { token, .. } => token.clone(),
                AcmeChallenge::TlsAlpn01 { hostname, .. } => hostname.to_string(),
            });
            routes.chain(challenges).collect()
        };
        assert_eq!(
            tokens(&tokyo),
            ["t1", "t2", "t1.example.com", "t2.example.com"]
        );
        assert_eq!(tokens(&osaka), ["t2", "t2.example.com"]);
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
        let state = state(net, nodes.clone(), tunnels);
        let a1 = snapshot(&state, &nodes[1], &settings());
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
        let gw = snapshot(&state, &nodes[0], &settings());
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
        assert_eq!(
            crate::tunnels::allocate_service_ports(
                &state.tunnels,
                &["a1"],
                1,
                None,
                FIRST_SERVICE_PORT
            ),
            Some(20002)
        );
    }

    fn ids<T>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<String> {
        items.iter().map(|item| id(item).to_string()).collect()
    }

    #[test]
    fn disabled_nodes_serve_nothing_and_nobody_peers_with_them() {
        let mut nodes = vec![
            node("gw1", NodeKind::Gateway, 1, Some(1)),
            node("gw2", NodeKind::Gateway, 2, Some(2)),
            node("a1", NodeKind::Agent, 3, Some(3)),
            node("a2", NodeKind::Agent, 4, Some(4)),
        ];
        nodes[1].disabled = true;
        nodes[3].disabled = true;
        let tunnels = vec![
            tunnel("t1", "a1", 20000, true),
            tunnel("t2", "a2", 20000, true),
        ];
        let state = state("10.77.0.0/16".parse().unwrap(), nodes.clone(), tunnels);
        let peer_ids = |i: usize| {
            let config = snapshot(&state, &nodes[i], &settings());
            ids(&config.peers, |p| &p.node_id)
        };
        // The enabled gateway routes only the enabled agent's tunnel, and peers only with it.
        let gw1 = snapshot(&state, &nodes[0], &settings());
        assert_eq!(ids(&gw1.routes, |r| &r.tunnel_id), ["t1"]);
        assert_eq!(peer_ids(0), ["a1"]);
        // The disabled gateway routes nothing and peers with nobody; no agent peers with it.
        let gw2 = snapshot(&state, &nodes[1], &settings());
        assert!(gw2.routes.is_empty() && gw2.peers.is_empty());
        assert_eq!(peer_ids(2), ["gw1"]);
        // The disabled agent offers no services and peers with nobody.
        let a2 = snapshot(&state, &nodes[3], &settings());
        assert!(a2.services.is_empty() && a2.peers.is_empty());
    }
}
