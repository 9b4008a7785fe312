//! The tunnel rules, checked on plain records.

use super::*;
use crate::access::TunnelAccess;
use crate::model::{Issuer, OriginSettings, TunnelSpec};
use kakuremichi_proto::ports::{parse_ranges, PortPolicy};
use std::net::Ipv4Addr;

fn port_tunnel(id: &str, kind: TunnelKind, ports: &str, service_port: u16) -> TunnelRecord {
    TunnelRecord {
        id: id.into(),
        spec: TunnelSpec {
            kind,
            hostname: None,
            ports: Some(ports.parse().unwrap()),
            agent_id: "agt_1".into(),
            target: "127.0.0.1:5432".parse().unwrap(),
            replicas: Vec::new(),
            enabled: true,
            issuer: Issuer::None,
            access: TunnelAccess::default(),
            proxy_protocol: None,
            origin: OriginSettings::default(),
            path_prefix: None,
            request_log: Default::default(),
            gateways: crate::model::GatewayChoice::All,
        },
        service_port,
        created_at: 0,
    }
}

fn gateway(policy: Option<PortPolicy>) -> NodeRecord {
    let overlay_ip = Ipv4Addr::new(10, 77, 0, 1);
    NodeRecord {
        port_policy: policy,
        ..NodeRecord::enrolled(
            "gw_1",
            NodeKind::Gateway,
            "tokyo",
            overlay_ip,
            String::new(),
            0,
        )
    }
}

#[test]
fn service_port_blocks_fill_gaps_and_never_overlap() {
    let tunnels = vec![
        port_tunnel("a", TunnelKind::Tcp, "1000-1002", 20000),
        port_tunnel("b", TunnelKind::Tcp, "2000", 20005),
    ];
    assert_eq!(
        allocate_service_ports(&tunnels, &["agt_1"], 2, None, FIRST_SERVICE_PORT),
        Some(20003)
    );
    assert_eq!(
        allocate_service_ports(&tunnels, &["agt_1"], 3, None, FIRST_SERVICE_PORT),
        Some(20006)
    );
    assert_eq!(
        allocate_service_ports(&tunnels, &["agt_1"], 5, Some("b"), FIRST_SERVICE_PORT),
        Some(20003)
    );
    assert_eq!(
        allocate_service_ports(&tunnels, &["agt_2"], 3, None, FIRST_SERVICE_PORT),
        Some(20000)
    );
    let full = vec![port_tunnel("c", TunnelKind::Tcp, "1-1000", 65000)];
    assert_eq!(
        allocate_service_ports(&full, &["agt_1"], 600, None, FIRST_SERVICE_PORT),
        Some(20000)
    );
    assert_eq!(
        allocate_service_ports(
            &[port_tunnel("d", TunnelKind::Tcp, "1-1000", 20000)],
            &["agt_1"],
            1000,
            None,
            FIRST_SERVICE_PORT
        ),
        Some(21000)
    );
    // After the cursor first, around to the lowest free block only at the top.
    assert_eq!(
        allocate_service_ports(&tunnels, &["agt_1"], 1, None, 20004),
        Some(20004)
    );
    assert_eq!(
        allocate_service_ports(&tunnels, &["agt_1"], 1, None, 20005),
        Some(20006)
    );
    assert_eq!(
        allocate_service_ports(&tunnels, &["agt_1"], 2, None, 65535),
        Some(20003)
    );
    let near_the_top = vec![port_tunnel("e", TunnelKind::Tcp, "1-1000", 64600)];
    assert_eq!(
        allocate_service_ports(&near_the_top, &["agt_1"], 1000, None, FIRST_SERVICE_PORT),
        Some(20000)
    );
    let crowded: Vec<TunnelRecord> = (0..45)
        .map(|i| {
            port_tunnel(
                &format!("t{i}"),
                TunnelKind::Tcp,
                "1-1000",
                20000 + i * 1000,
            )
        })
        .collect();
    assert_eq!(
        allocate_service_ports(&crowded, &["agt_1"], 536, None, FIRST_SERVICE_PORT),
        Some(65000)
    );
    assert_eq!(
        allocate_service_ports(&crowded, &["agt_1"], 537, None, FIRST_SERVICE_PORT),
        None,
        "no room left"
    );
}

#[test]
fn target_ranges_must_match_the_public_range() {
    let ports = Some("15000-15002".parse().unwrap());
    assert_eq!(
        parse_target("db:5000-5002", ports).unwrap().to_string(),
        "db:5000"
    );
    assert_eq!(
        parse_target("db:5000", ports).unwrap().to_string(),
        "db:5000"
    );
    let err = parse_target("db:5000-5001", ports).unwrap_err().to_string();
    assert!(
        err.contains("5000-5001 has 2 ports but the public range has 3"),
        "{err}"
    );
    assert!(parse_target("[::1]:5000-5002", ports).is_ok());
    assert!(parse_target("db:x-y", ports).is_err());
}

#[test]
fn path_prefixes_split_a_hostname_with_one_certificate() {
    assert_eq!(parse_path_prefix("/api/").unwrap().as_deref(), Some("/api"));
    assert_eq!(parse_path_prefix("/").unwrap(), None);
    for bad in ["api", "/a?b", "/a/../b", "/a b"] {
        assert!(parse_path_prefix(bad).is_err(), "{bad}");
    }
    let http = |id: &str, prefix: Option<&str>, issuer: Issuer| {
        let mut tunnel = port_tunnel(id, TunnelKind::Http, "1", 20000);
        tunnel.spec = TunnelSpec {
            hostname: Some("shop.example.com".parse().unwrap()),
            ports: None,
            path_prefix: prefix.map(String::from),
            issuer,
            ..tunnel.spec
        };
        tunnel
    };
    let root = http("a", None, Issuer::Acme);
    check(
        &http("b", Some("/api"), Issuer::Acme),
        std::slice::from_ref(&root),
        &[],
    )
    .unwrap();
    let same = check(
        &http("b", None, Issuer::Acme),
        std::slice::from_ref(&root),
        &[],
    );
    assert!(same.unwrap_err().to_string().contains("already published"));
    let issuer = check(
        &http("b", Some("/api"), Issuer::Internal),
        std::slice::from_ref(&root),
        &[],
    );
    assert!(issuer.unwrap_err().to_string().contains("use issuer acme"));
    let mut passthrough = http("c", None, Issuer::None);
    passthrough.spec.kind = TunnelKind::Tls;
    assert!(check(&passthrough, &[http("d", Some("/x"), Issuer::Acme)], &[]).is_err());
}

#[test]
fn ranges_map_one_to_one() {
    let tunnel = port_tunnel("a", TunnelKind::Tcp, "15000-15002", 20010);
    let forwards: Vec<(u16, String)> = tunnel.forwards().map(|(p, t)| (p, t.to_string())).collect();
    assert_eq!(
        forwards,
        [
            (20010, "127.0.0.1:5432".to_string()),
            (20011, "127.0.0.1:5433".to_string()),
            (20012, "127.0.0.1:5434".to_string())
        ]
    );
    assert_eq!(tunnel.label(), "tcp 15000-15002");
}

#[test]
fn clashes_and_gateway_policies_are_refused_with_the_reason() {
    let others = vec![port_tunnel("a", TunnelKind::Tcp, "15000-15010", 20000)];
    let clash = port_tunnel("b", TunnelKind::Tcp, "15010-15011", 20011);
    let err = check(&clash, &others, &[]).unwrap_err().to_string();
    assert!(
        err.contains("already taken by tunnel tcp 15000-15010"),
        "{err}"
    );
    // The same number over UDP is another port.
    check(
        &port_tunnel("b", TunnelKind::Udp, "15010", 20011),
        &others,
        &[],
    )
    .unwrap();
    let policy = PortPolicy {
        tcp_allowed: parse_ranges("10000-20000").unwrap(),
        tcp_reserved: vec![(443, "HTTPS listener".into())],
        ..PortPolicy::default()
    };
    let nodes = vec![gateway(Some(policy))];
    let err = check(&port_tunnel("c", TunnelKind::Tcp, "443", 1), &[], &nodes)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gateway tokyo: tcp port 443 is the gateway's own HTTPS listener"),
        "{err}"
    );
    let err = check(&port_tunnel("c", TunnelKind::Udp, "53", 1), &[], &nodes)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("outside the gateway's --udp-ports (none)"),
        "{err}"
    );
    // A gateway that has not said its policy yet refuses what it cannot open itself.
    check(
        &port_tunnel("c", TunnelKind::Udp, "53", 1),
        &[],
        &[gateway(None)],
    )
    .unwrap();
    let too_many = check(&port_tunnel("g", TunnelKind::Tcp, "1000-2000", 1), &[], &[]);
    assert!(too_many
        .unwrap_err()
        .to_string()
        .contains("more than 1000 ports"));
    let mut past_end = port_tunnel("d", TunnelKind::Tcp, "15000-15010", 1);
    past_end.spec.target = "127.0.0.1:65530".parse().unwrap();
    assert!(check(&past_end, &[], &[]).is_err());
    let mut hostname_kind = port_tunnel("e", TunnelKind::Tls, "15000", 1);
    hostname_kind.spec.hostname = Some("db.example.com".parse().unwrap());
    assert!(check(&hostname_kind, &[], &[]).is_err());
    let mut v1_on_udp = port_tunnel("f", TunnelKind::Udp, "15000", 1);
    v1_on_udp.spec.proxy_protocol = Some(kakuremichi_proto::proxy_protocol::ProxyProtocol::V1);
    assert!(check(&v1_on_udp, &[], &[]).is_err());
}
