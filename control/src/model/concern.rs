//! Which nodes a change can give a new config. The hub nudges only those: an edit to one
//! tunnel wakes its agents and the gateways, not 10,000 sessions that would each build their
//! config to find nothing new (at that scale a nudge for everyone cost a second of CPU).
//!
//! What each kind's config is made of (see [`super::node_config`]): an agent's, its own record,
//! its tunnels and the gateways (its peers); a gateway's, its own record, every agent (its
//! peers, and the addresses its routes lead to), every tunnel, and the tables only gateways
//! use. A change to any of these concerns the node; nothing else does.

use super::{NodeRecord, State, TunnelRecord};
use kakuremichi_proto::ids::NodeKind;
use std::collections::{HashMap, HashSet};

/// The nodes whose config may differ between two states.
#[derive(Debug, Default, PartialEq)]
pub struct Concerned {
    /// Every gateway.
    pub gateways: bool,
    /// Every agent.
    pub agents: bool,
    /// These nodes, besides.
    pub nodes: HashSet<String>,
}

impl Concerned {
    /// Every node: what is known of the change is not enough to say less.
    pub fn everyone() -> Concerned {
        Concerned {
            gateways: true,
            agents: true,
            nodes: HashSet::new(),
        }
    }

    /// Whether node `id`, a `kind`, may need a new config.
    pub fn includes(&self, id: &str, kind: NodeKind) -> bool {
        let every = match kind {
            NodeKind::Gateway => self.gateways,
            NodeKind::Agent => self.agents,
        };
        every || self.nodes.contains(id)
    }

    /// A node whose record came, went or changed: it, and every node that peers with it.
    fn node(&mut self, node: &NodeRecord) {
        self.nodes.insert(node.id.clone());
        match node.kind {
            NodeKind::Gateway => self.agents = true,
            NodeKind::Agent => self.gateways = true,
        }
    }

    /// A tunnel that came, went or changed: its agents, and every gateway if they see the
    /// change.
    fn tunnel(&mut self, tunnel: &TunnelRecord, gateways: bool) {
        self.gateways |= gateways;
        let agents = tunnel.spec.agents().map(|(id, _)| id.to_string());
        self.nodes.extend(agents);
    }
}

/// The nodes a change from `before` to `after` concerns.
pub fn concerned(before: &State, after: &State) -> Concerned {
    if before.overlay != after.overlay {
        return Concerned::everyone();
    }
    let mut concerned = Concerned::default();
    for node in &after.nodes {
        if before.node(&node.id) != Some(node) {
            concerned.node(node);
        }
    }
    for node in before.nodes.iter().filter(|n| after.node(&n.id).is_none()) {
        concerned.node(node);
    }
    let (was, now) = (tunnels_by_id(before), tunnels_by_id(after));
    for (&id, &(at, tunnel)) in &now {
        match was.get(id) {
            Some(&(_, old)) if old == tunnel => {}
            Some(&(old_at, old)) => {
                let alike = same_to_gateways((before, old_at, old), (after, at, tunnel));
                concerned.tunnel(old, !alike);
                concerned.tunnel(tunnel, !alike);
            }
            None => concerned.tunnel(tunnel, true),
        }
    }
    for (id, &(_, tunnel)) in &was {
        if !now.contains_key(id) {
            concerned.tunnel(tunnel, true);
        }
    }
    let for_gateways = before.certificates != after.certificates
        || before.challenges != after.challenges
        || before.fallback_certificate != after.fallback_certificate
        || before.control_route != after.control_route
        || before.users != after.users
        || before.keyring != after.keyring;
    concerned.gateways |= for_gateways;
    concerned
}

/// Each tunnel by id, with its position in the state's list.
fn tunnels_by_id(state: &State) -> HashMap<&str, (usize, &TunnelRecord)> {
    let tunnels = state.tunnels.iter().enumerate();
    tunnels.map(|(at, t)| (t.id.as_str(), (at, t))).collect()
}

/// Whether gateways see one tunnel alike in two states, given as (state, position, tunnel):
/// the same routes, and the same say in which gateways serve it, its certificate and its
/// challenges. A new target or origin setting concerns only the tunnel's agents.
fn same_to_gateways(
    before: (&State, usize, &TunnelRecord),
    after: (&State, usize, &TunnelRecord),
) -> bool {
    let (a, b) = (&before.2.spec, &after.2.spec);
    let picks_alike = a.enabled == b.enabled
        && a.kind == b.kind
        && a.hostname == b.hostname
        && a.issuer == b.issuer
        && a.gateways == b.gateways;
    let routes = |(state, at, _): (&State, usize, &TunnelRecord)| {
        let routes = &state.gateway_routes()[at];
        let http = routes.routes.iter().map(|e| e.digest);
        let ports = routes.port_routes.iter().map(|e| e.digest);
        let passthrough = routes.passthrough_routes.iter().map(|e| e.digest);
        http.chain(ports).chain(passthrough).collect::<Vec<_>>()
    };
    picks_alike && routes(before) == routes(after)
}
