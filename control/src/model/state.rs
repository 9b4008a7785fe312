//! Everything in the store at one revision.

use super::snapshot::{Entry, TunnelRoutes};
use super::{CertRecord, Issuer, NodeRecord, OverlayNet, TunnelRecord};
use crate::access::Keyring;
use crate::auth::UserRecord;
use crate::error::Error;
use kakuremichi_proto::ids::NodeKind;
use kakuremichi_proto::messages::{
    AcmeChallenge, CertificateBundle, CertificateRef, ControlRoute, DigestedCertificate, PeerConfig,
};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// The WireGuard peers of a node, shared by every node of its kind and carried from one
/// state to the next while none of them changed: a session that sent a list compares it
/// with the next by pointer, not entry by entry (a gateway's are 10,000 agents).
pub type PeerList = Arc<[Entry<PeerConfig>]>;

/// Everything in the store at one revision.
#[derive(Clone, Debug)]
pub struct State {
    pub revision: u64,
    pub overlay: OverlayNet,
    pub nodes: Vec<NodeRecord>,
    pub tunnels: Vec<TunnelRecord>,
    pub certificates: Vec<CertRecord>,
    pub challenges: Vec<AcmeChallenge>,
    /// The certificate gateways show clients that send no SNI.
    pub fallback_certificate: Option<CertificateBundle>,
    /// Control's own hostname on gateways, with the issuer of its certificate.
    pub control_route: Option<(ControlRoute, Issuer)>,
    /// Every account: tunnels' access rules name users and roles.
    pub users: Vec<UserRecord>,
    /// The keys that sign tunnel logins.
    pub keyring: Keyring,
    /// Lookups worked out on first use and shared by every session that builds from this
    /// state.
    pub derived: Derived,
}

/// What every node's snapshot looks up, worked out once per state: at 10,000 nodes a linear
/// search per tunnel for each of 100 gateways cost more than the rest of the snapshot. A
/// state is not changed once decoded; a test that changes one starts these again.
#[derive(Clone, Debug, Default)]
pub struct Derived {
    /// [`State::served_certificates`].
    pub(super) served: OnceLock<Vec<DigestedCertificate>>,
    /// Each node's position in [`State::nodes`].
    nodes_by_id: OnceLock<HashMap<String, usize>>,
    /// The positions in [`State::tunnels`] of the tunnels each agent serves (as primary or
    /// replica).
    tunnels_by_agent: OnceLock<HashMap<String, Vec<usize>>>,
    /// The peers of an enabled agent (the enabled gateways) and of an enabled gateway.
    peers_of_agents: OnceLock<PeerList>,
    peers_of_gateways: OnceLock<PeerList>,
    /// The same lists of the state before, if it had worked them out: entries whose value
    /// did not change are kept, and a list with none changed is kept whole.
    before: (Option<PeerList>, Option<PeerList>),
    /// What gateways route to each tunnel, by position in [`State::tunnels`].
    gateway_routes: OnceLock<Vec<TunnelRoutes>>,
    /// References to [`State::served_certificates`].
    certificate_refs: OnceLock<Vec<Entry<CertificateRef>>>,
}

impl State {
    /// Tunnel `id`, or an error that names it.
    pub fn tunnel(&self, id: &str) -> Result<&TunnelRecord, Error> {
        self.tunnels
            .iter()
            .find(|t| t.id == id)
            .ok_or_else(|| Error::not_found("tunnel", id))
    }

    /// Node `id`, if it is enrolled.
    pub fn node(&self, id: &str) -> Option<&NodeRecord> {
        let index = self.derived.nodes_by_id.get_or_init(|| {
            let positions = self.nodes.iter().enumerate();
            positions.map(|(i, n)| (n.id.clone(), i)).collect()
        });
        index.get(id).map(|&i| &self.nodes[i])
    }

    /// The tunnels `agent_id` serves, as primary or replica, in store order.
    pub fn tunnels_of_agent(&self, agent_id: &str) -> impl Iterator<Item = &TunnelRecord> {
        let index = self.derived.tunnels_by_agent.get_or_init(|| {
            let mut index: HashMap<String, Vec<usize>> = HashMap::new();
            for (i, tunnel) in self.tunnels.iter().enumerate() {
                for (agent, _) in tunnel.spec.agents() {
                    let positions = index.entry(agent.to_string()).or_default();
                    // An agent named twice (primary and replica) serves the tunnel once.
                    if positions.last() != Some(&i) {
                        positions.push(i);
                    }
                }
            }
            index
        });
        let positions = index.get(agent_id).map(Vec::as_slice).unwrap_or_default();
        positions.iter().map(|&i| &self.tunnels[i])
    }

    /// The WireGuard peers of `node`: none while it is disabled.
    pub fn peers_for(&self, node: &NodeRecord) -> &PeerList {
        static NONE: OnceLock<PeerList> = OnceLock::new();
        match node.disabled {
            true => NONE.get_or_init(|| Arc::from(Vec::new())),
            false => self.peers_of(node.kind),
        }
    }

    /// Carry over what `before` (the state of an earlier revision) worked out and this one
    /// can reuse; see [`PeerList`].
    pub fn follows(&mut self, before: &State) {
        let derived = &before.derived;
        self.derived.before = (
            derived.peers_of_agents.get().cloned(),
            derived.peers_of_gateways.get().cloned(),
        );
    }

    /// What gateways route to each tunnel, in the order of [`State::tunnels`].
    pub fn gateway_routes(&self) -> &[TunnelRoutes] {
        self.derived.gateway_routes.get_or_init(|| {
            let tunnels = self.tunnels.iter();
            tunnels
                .map(|t| super::snapshot::tunnel_routes(self, t))
                .collect()
        })
    }

    /// What gateways' configs refer to the certificates they serve by.
    pub fn certificate_refs(&self) -> &[Entry<CertificateRef>] {
        self.derived.certificate_refs.get_or_init(|| {
            let served = self.served_certificates().iter();
            served
                .map(|c| {
                    Entry::new(CertificateRef {
                        hostname: c.bundle.hostname.clone(),
                        digest: c.digest.clone(),
                    })
                })
                .collect()
        })
    }

    /// The WireGuard peers of an enabled node of `kind`: every enabled node of the other
    /// kind with a key (agents never peer with agents, nor gateways with gateways).
    fn peers_of(&self, kind: NodeKind) -> &PeerList {
        let (cell, peer_kind, before) = match kind {
            NodeKind::Agent => (
                &self.derived.peers_of_agents,
                NodeKind::Gateway,
                &self.derived.before.0,
            ),
            NodeKind::Gateway => (
                &self.derived.peers_of_gateways,
                NodeKind::Agent,
                &self.derived.before.1,
            ),
        };
        cell.get_or_init(|| {
            let values = self
                .nodes
                .iter()
                .filter(|n| n.kind == peer_kind && !n.disabled)
                .filter_map(|n| {
                    Some(PeerConfig {
                        node_id: n.id.clone(),
                        public_key: n.public_key?,
                        overlay_ip: n.overlay_ip,
                        endpoint: n.wireguard_endpoint.clone(),
                        instance: n.instance,
                        https_port: n.https_port,
                    })
                });
            match before {
                Some(before) => super::snapshot::kept_or_new(before, values),
                None => values.map(Entry::new).collect(),
            }
        })
    }
}
