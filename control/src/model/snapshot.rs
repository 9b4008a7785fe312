//! Each node's config snapshot: what an agent or gateway should run, given the store.

use super::{Issuer, NodeRecord, State, TunnelKind, TunnelRecord};
use kakuremichi_proto::ids::{Hostname, NodeKind};
use kakuremichi_proto::messages::{
    AcmeChallenge, CertificateBundle, CertificateRef, ConfigSnapshot, DigestedCertificate,
    HttpRoute, PassthroughRoute, PortRoute, Service, Upstream,
};
use kakuremichi_proto::patch::Keyed;
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

/// What a snapshot needs beyond the store.
#[derive(Clone, Debug)]
pub struct SnapshotSettings {
    /// Both ends of a node session heartbeat this often.
    pub heartbeat: Duration,
    /// Control's page where browsers log in to tunnels open to Control users.
    pub access_login_url: Option<String>,
}

/// One entry of a config's keyed lists ([`kakuremichi_proto::patch`]) with what a session
/// compares and sends it by, worked out once per state for every node it goes to.
#[derive(Clone, Debug)]
pub struct Entry<T> {
    pub value: T,
    /// Shared with every session's record of what its node holds: at 10,000 agents that
    /// record holds two million keys.
    pub key: std::sync::Arc<str>,
    /// The first 8 bytes of the SHA-256 of its JSON: every session keeps one per entry its
    /// node holds (two million at 10,000 agents and 100 gateways).
    pub digest: u64,
    /// The length of its JSON.
    pub bytes: usize,
}

impl<T: Keyed + serde::Serialize> Entry<T> {
    pub fn new(value: T) -> Entry<T> {
        // Config types serialize to JSON without fail: no maps with non-string keys.
        let json = serde_json::to_vec(&value).unwrap_or_default();
        let sha = ring::digest::digest(&ring::digest::SHA256, &json);
        let mut digest = [0; 8];
        digest.copy_from_slice(&sha.as_ref()[..8]);
        let digest = u64::from_le_bytes(digest);
        Entry {
            key: value.key().into(),
            value,
            digest,
            bytes: json.len(),
        }
    }
}

/// What a gateway routes to one tunnel, the same for every gateway that serves it.
#[derive(Clone, Debug, Default)]
pub struct TunnelRoutes {
    pub routes: Vec<Entry<HttpRoute>>,
    pub port_routes: Vec<Entry<PortRoute>>,
    pub passthrough_routes: Vec<Entry<PassthroughRoute>>,
}

/// `values` as entries, each the entry of `before` with the same key where its value is the
/// same (no JSON or digest worked out again), and `before` itself if every one is.
pub(super) fn kept_or_new<T>(
    before: &Arc<[Entry<T>]>,
    values: impl Iterator<Item = T>,
) -> Arc<[Entry<T>]>
where
    T: Keyed + serde::Serialize + PartialEq + Clone,
{
    let by_key: HashMap<&str, &Entry<T>> = before.iter().map(|e| (&*e.key, e)).collect();
    let entries: Vec<Entry<T>> = values
        .map(|value| match by_key.get(value.key().as_str()) {
            Some(kept) if kept.value == value => (*kept).clone(),
            _ => Entry::new(value),
        })
        .collect();
    let same = entries.len() == before.len()
        && entries
            .iter()
            .zip(before.iter())
            .all(|(now, was)| Arc::ptr_eq(&now.key, &was.key));
    match same {
        true => before.clone(),
        false => entries.into(),
    }
}

/// A node's config as a session sends it: the keyed lists as entries shared with every
/// other node's, and the rest.
pub struct NodeConfig<'a> {
    pub peers: &'a super::state::PeerList,
    pub routes: Vec<&'a TunnelRoutes>,
    pub certificate_refs: &'a [Entry<CertificateRef>],
    /// The config's other fields, its keyed lists empty.
    pub rest: ConfigSnapshot,
}

impl NodeConfig<'_> {
    /// The whole config.
    pub fn into_snapshot(self) -> ConfigSnapshot {
        let routes = self.routes.iter();
        ConfigSnapshot {
            peers: values(self.peers.iter()),
            routes: values(routes.clone().flat_map(|r| &r.routes)),
            port_routes: values(routes.clone().flat_map(|r| &r.port_routes)),
            passthrough_routes: values(routes.flat_map(|r| &r.passthrough_routes)),
            certificate_refs: values(self.certificate_refs),
            ..self.rest
        }
    }
}

fn values<'a, T: Clone + 'a>(entries: impl IntoIterator<Item = &'a Entry<T>>) -> Vec<T> {
    entries.into_iter().map(|e| e.value.clone()).collect()
}

/// The configuration `node` should run, given everything in the store.
pub fn snapshot(state: &State, node: &NodeRecord, settings: &SnapshotSettings) -> ConfigSnapshot {
    node_config(state, node, settings).into_snapshot()
}

/// The configuration `node` should run, in the parts a session compares and sends.
pub fn node_config<'a>(
    state: &'a State,
    node: &NodeRecord,
    settings: &SnapshotSettings,
) -> NodeConfig<'a> {
    let enabled = |t: &&TunnelRecord| t.spec.enabled && !node.disabled;
    let mut routes = Vec::new();
    let mut services = Vec::new();
    match node.kind {
        NodeKind::Gateway => {
            let all = state.tunnels.iter().zip(state.gateway_routes());
            routes.extend(
                all.filter(|(t, _)| enabled(t) && t.spec.gateways.selects(node))
                    .map(|(_, routes)| routes),
            );
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
                    health: t.spec.origin.health_check(),
                    replicated: !t.spec.replicas.is_empty(),
                }));
            }
        }
    }
    let gateway = node.kind == NodeKind::Gateway;
    let rest = ConfigSnapshot {
        version: state.revision,
        node_id: node.id.clone(),
        overlay_ip: node.overlay_ip,
        overlay_prefix: state.overlay.prefix,
        services,
        challenges: match gateway {
            true => challenges_for(state, node),
            false => Vec::new(),
        },
        fallback_certificate: state.fallback_certificate.clone().filter(|_| gateway),
        control_route: state
            .control_route
            .as_ref()
            .filter(|_| gateway)
            .map(|(route, _)| route.clone()),
        access_keys: match gateway {
            true => state
                .keyring
                .for_gateways(settings.access_login_url.clone())
                .inspect_err(|e| log::error!("access keys: {e}"))
                .ok(),
            false => None,
        },
        heartbeat_interval_ms: settings.heartbeat.as_millis() as u64,
        draining: gateway && node.draining,
        ..ConfigSnapshot::default()
    };
    NodeConfig {
        peers: state.peers_for(node),
        routes,
        certificate_refs: match gateway {
            true => state.certificate_refs(),
            false => &[],
        },
        rest,
    }
}

/// What every gateway that serves `t` routes to it: nothing while the tunnel is off or none
/// of its agents is enabled.
pub(super) fn tunnel_routes(state: &State, t: &TunnelRecord) -> TunnelRoutes {
    let mut routes = TunnelRoutes::default();
    if !t.spec.enabled {
        return routes;
    }
    // Every enabled agent of the tunnel, the primary first while it is enabled.
    let agent_ips: Vec<Ipv4Addr> = t
        .spec
        .agents()
        .filter_map(|(id, _)| state.node(id).filter(|n| !n.disabled))
        .map(|n| n.overlay_ip)
        .collect();
    let Some((&agent_ip, replica_ips)) = agent_ips.split_first() else {
        return routes;
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
        (TunnelKind::Http, Some(hostname), _, _) => routes.routes.push(Entry::new(HttpRoute {
            tunnel_id: t.id.clone(),
            hostname: hostname.clone(),
            agent_ip,
            service_port: t.service_port,
            replica_ips: replica_ips.to_vec(),
            https: t.spec.issuer != Issuer::None,
            access: t.spec.access.policy(&state.users),
            origin: t.spec.origin_options(),
            path_prefix: t.spec.path_prefix.clone(),
            log: t.spec.request_log.clone(),
        })),
        (TunnelKind::Tls, Some(hostname), _, _) => {
            routes.passthrough_routes.push(Entry::new(PassthroughRoute {
                hostname: hostname.clone(),
                upstream: upstream(t.service_port),
            }))
        }
        (_, _, Some(transport), Some(ports)) => {
            routes
                .port_routes
                .extend(
                    ports
                        .iter()
                        .zip(t.forwards())
                        .map(|(port, (service_port, _))| {
                            Entry::new(PortRoute {
                                transport,
                                port,
                                upstream: upstream(service_port),
                            })
                        }),
                )
        }
        // `tunnels::check` let no other shape into the store.
        _ => log::error!("tunnel {} has neither hostname nor ports", t.id),
    }
    routes
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
