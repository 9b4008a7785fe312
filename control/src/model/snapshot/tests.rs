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
            request_log: Default::default(),
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
        derived: Default::default(),
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
    state.derived = Default::default();
    let route = &snapshot(&state, &gateway, &settings()).routes[0];
    assert_eq!(route.replica_ips, vec![a3.overlay_ip]);
    // Service ports are free on every agent of the tunnel.
    let other = tunnel("t2", "a3", 0, true);
    state.tunnels.push(other);
    state.derived = Default::default();
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
        net.allocate(&[Ipv4Addr::new(10, 77, 0, 1)].into()),
        Some(Ipv4Addr::new(10, 77, 0, 2))
    );
    let tiny: OverlayNet = "10.0.0.0/30".parse().unwrap();
    assert_eq!(
        tiny.allocate(&[Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)].into()),
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

/// Every change a node's config can see, made one at a time to a small fleet: each node
/// whose snapshot changed is among those `concerned` names (so the hub nudges it), and an
/// edit to one agent's tunnel names none of the other agents.
#[test]
fn the_nodes_a_change_concerns_include_every_node_whose_config_changed() {
    use crate::model::{concerned, CertRecord, CertState};
    let net: OverlayNet = "10.77.0.0/16".parse().unwrap();
    let nodes = vec![
        node("g1", NodeKind::Gateway, 1, Some(1)),
        node("g2", NodeKind::Gateway, 2, Some(2)),
        node("a1", NodeKind::Agent, 3, Some(3)),
        node("a2", NodeKind::Agent, 4, Some(4)),
        node("a3", NodeKind::Agent, 5, Some(5)),
    ];
    let mut replicated = tunnel("t2", "a2", 20001, true);
    replicated.spec.replicas = vec![Replica {
        agent_id: "a3".into(),
        target: "10.0.0.3:80".parse().unwrap(),
    }];
    let tunnels = vec![tunnel("t1", "a1", 20000, true), replicated];
    let base = state(net, nodes, tunnels);
    type Change = fn(&mut State);
    let changes: Vec<(&str, Change)> = vec![
        ("agent's new key", |s| {
            s.nodes[2].public_key = Some(PublicKey([9; 32]))
        }),
        ("agent disabled", |s| s.nodes[3].disabled = true),
        ("agent removed", |s| {
            s.nodes.remove(4);
        }),
        ("gateway's new endpoint", |s| {
            s.nodes[0].wireguard_endpoint = Some("other:51820".into())
        }),
        ("gateway draining", |s| s.nodes[1].draining = true),
        ("gateway labelled", |s| {
            s.nodes[1].labels.insert("region".into(), "tokyo".into());
        }),
        ("tunnel's target", |s| {
            s.tunnels[0].spec.target = "127.0.0.1:9".parse().unwrap()
        }),
        ("tunnel off", |s| s.tunnels[1].spec.enabled = false),
        ("tunnel's users", |s| {
            s.tunnels[0].spec.access.users = vec!["alice".into()]
        }),
        ("tunnel's hostname", |s| {
            s.tunnels[0].spec.hostname = Some("moved.example.com".parse().unwrap())
        }),
        ("tunnel's issuer", |s| {
            s.tunnels[0].spec.issuer = Issuer::Internal
        }),
        ("tunnel's path", |s| {
            s.tunnels[0].spec.path_prefix = Some("/app".into())
        }),
        ("tunnel on one gateway", |s| {
            s.tunnels[0].spec.gateways = GatewayChoice::Ids(vec!["g1".into()])
        }),
        ("replica removed", |s| s.tunnels[1].spec.replicas.clear()),
        ("tunnel deleted", |s| {
            s.tunnels.remove(0);
        }),
        ("tunnel added", |s| {
            s.tunnels.push(tunnel("t3", "a3", 20002, true))
        }),
        ("certificate issued", |s| {
            s.certificates.push(CertRecord {
                hostname: "t1.example.com".parse().unwrap(),
                issuer: Issuer::Acme,
                chain_pem: Some("chain".into()),
                key_pem: Some("key".into()),
                serial: None,
                not_before: 0,
                not_after: u64::MAX,
                state: CertState::Valid,
                last_error: None,
                failures: 0,
                next_attempt: 0,
            })
        }),
        ("login keys rotated", |s| {
            s.keyring = Keyring::generate().unwrap()
        }),
    ];
    for (what, change) in changes {
        let mut after = base.clone();
        after.derived = Default::default();
        change(&mut after);
        let concerned = concerned(&base, &after);
        for node in &base.nodes {
            let Some(now) = after.node(&node.id) else {
                continue;
            };
            let was = snapshot(&base, node, &settings());
            if was != snapshot(&after, now, &settings()) {
                assert!(
                    concerned.includes(&node.id, node.kind),
                    "{what}: {} changed but is not concerned ({concerned:?})",
                    node.id
                );
            }
        }
        if what == "tunnel's target" {
            let others = [
                ("a2", NodeKind::Agent),
                ("a3", NodeKind::Agent),
                ("g1", NodeKind::Gateway),
            ];
            let others = others.map(|(id, kind)| concerned.includes(id, kind));
            assert_eq!(others, [false; 3], "{what}: {concerned:?}");
        }
    }
}

#[test]
fn a_state_keeps_the_peer_list_of_the_one_before_while_no_peer_changed() {
    let overlay: OverlayNet = "10.77.0.0/16".parse().unwrap();
    let nodes = vec![
        node("gw_1", NodeKind::Gateway, 1, Some(1)),
        node("agt_1", NodeKind::Agent, 2, Some(2)),
        node("agt_2", NodeKind::Agent, 3, Some(3)),
    ];
    let gateway = nodes[0].clone();
    let first = state(overlay, nodes.clone(), vec![]);
    let first_peers = first.peers_for(&gateway).clone();
    // A tunnel more changes no peer: the same list, not a copy.
    let mut second = state(overlay, nodes.clone(), vec![tunnel("t1", "agt_1", 1, true)]);
    second.follows(&first);
    assert!(Arc::ptr_eq(second.peers_for(&gateway), &first_peers));
    // An agent that reconnected (a new instance) changes its entry alone.
    let mut moved = nodes.clone();
    moved[2].instance = 7;
    let mut third = state(overlay, moved.clone(), vec![]);
    third.follows(&second);
    let third_peers = third.peers_for(&gateway).clone();
    assert!(!Arc::ptr_eq(&third_peers, &first_peers));
    assert!(
        Arc::ptr_eq(&third_peers[0].key, &first_peers[0].key),
        "agt_1 kept"
    );
    assert_eq!(third_peers[1].value.instance, 7);
    assert_ne!(third_peers[1].digest, first_peers[1].digest);
    // What a state without one before works out is the same.
    let fresh = state(overlay, moved, vec![]);
    let fresh_peers = fresh.peers_for(&gateway);
    let digests = |list: &crate::model::PeerList| list.iter().map(|e| e.digest).collect::<Vec<_>>();
    assert_eq!(digests(fresh_peers), digests(&third_peers));
}
