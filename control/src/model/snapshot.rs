//! Each node's config snapshot: what an agent or gateway should run, given the store.

use super::{Issuer, NodeRecord, State, TunnelKind, TunnelRecord};
use kakuremichi_proto::ids::{Hostname, NodeKind};
use kakuremichi_proto::messages::{
    AcmeChallenge, CertificateBundle, CertificateRef, ConfigSnapshot, DigestedCertificate,
    HttpRoute, PassthroughRoute, PortRoute, Service, Upstream,
};
use std::collections::HashSet;
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
    ConfigSnapshot {
        peers: state.peers_for(node).to_vec(),
        ..snapshot_without_peers(state, node, settings)
    }
}

/// [`snapshot`] with its peers left out ([`State::peers_for`] `node`): they are the same for
/// every node of a kind, so a session compares them by [`State::peers_digest`] and adds them
/// only to a config it sends.
pub fn snapshot_without_peers(
    state: &State,
    node: &NodeRecord,
    settings: &SnapshotSettings,
) -> ConfigSnapshot {
    let enabled = |t: &&TunnelRecord| t.spec.enabled && !node.disabled;
    let (mut routes, mut port_routes, mut passthrough_routes, mut services) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    match node.kind {
        NodeKind::Gateway => {
            let selected = state.tunnels.iter().filter(enabled);
            for t in selected.filter(|t| t.spec.gateways.selects(node)) {
                // Every enabled agent of the tunnel, the primary first while it is enabled.
                let agent_ips: Vec<Ipv4Addr> = t
                    .spec
                    .agents()
                    .filter_map(|(id, _)| state.node(id).filter(|n| !n.disabled))
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
            for t in state.tunnels_of_agent(&node.id).filter(enabled) {
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
    let (certificate_refs, challenges, fallback_certificate) = match node.kind {
        NodeKind::Gateway => (
            state
                .served_certificates()
                .iter()
                .map(|c| CertificateRef {
                    hostname: c.bundle.hostname.clone(),
                    digest: c.digest.clone(),
                })
                .collect(),
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
        peers: Vec::new(),
        routes,
        services,
        port_routes,
        passthrough_routes,
        certificates: Vec::new(),
        certificate_refs,
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
    let mut seen = HashSet::new();
    // Tunnels that split a hostname by path share its one certificate.
    for (hostname, issuer) in tunnels.chain(control) {
        if issuer != Issuer::None && seen.insert(hostname.clone()) {
            wanted.push((hostname, issuer));
        }
    }
    wanted
}

/// [`https_hostnames`] no certificate is stored for yet (an ACME or internal one not
/// issued, a manual one not uploaded): the dashboard and the certificates page list them.
pub fn hostnames_without_certificate(state: &State) -> Vec<(Hostname, Issuer)> {
    let stored: HashSet<&Hostname> = state.certificates.iter().map(|c| &c.hostname).collect();
    https_hostnames(state)
        .into_iter()
        .filter(|(hostname, _)| !stored.contains(hostname))
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
impl State {
    /// The certificates every gateway serves, with the digests configs refer to them by
    /// (the session sends each gateway the bundles it does not have yet). Worked out once per
    /// state: hashing them for each gateway's snapshot cost more than the rest of it.
    pub fn served_certificates(&self) -> &[DigestedCertificate] {
        self.derived.served.get_or_init(|| {
            gateway_certificates(self)
                .into_iter()
                .map(|bundle| DigestedCertificate {
                    digest: digest(&bundle),
                    bundle,
                })
                .collect()
        })
    }
}

/// What configs refer to `bundle` by: a hash of what it holds, so a renewed or re-keyed
/// certificate gets a new one (the hostname is in the certificate).
fn digest(bundle: &CertificateBundle) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [&bundle.chain_pem, &bundle.key_pem] {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part.as_bytes());
    }
    context.update(&[u8::from(bundle.publicly_trusted)]);
    let hash = context.finish();
    hash.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn gateway_certificates(state: &State) -> Vec<CertificateBundle> {
    let wanted: HashSet<Hostname> = https_hostnames(state).into_iter().map(|(h, _)| h).collect();
    state
        .certificates
        .iter()
        .filter(|c| wanted.contains(&c.hostname))
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
mod tests;
