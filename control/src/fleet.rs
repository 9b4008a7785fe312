//! How each node of the fleet is doing: healthy, degraded (and why) or down, from its
//! session and its peers'. Which gateways serve a tunnel is [`crate::model::GatewayChoice`].

use crate::model::NodeRecord;
use kakuremichi_proto::ids::NodeKind;
use serde::Serialize;

/// How a node is doing, as the pages and `GET /api/v1/{agents,gateways}` show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Connected, up to date, peered with every peer that is online, nothing refused.
    Healthy,
    /// Serving, with something wrong (the reason says what).
    Degraded,
    /// Not serving: offline or disabled.
    Down,
}

impl Health {
    /// The API's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Down => "down",
        }
    }
}

/// How many peers a reason names before it counts the rest.
const NAMED_PEERS: usize = 5;

/// `node`'s health and why, from its session (`presence`), the store's `revision`, and its
/// `peers`: every node of the other kind it should have a WireGuard session with, with whether
/// that peer is online.
pub fn health(
    node: &NodeRecord,
    presence: &crate::hub::Presence,
    revision: u64,
    peers: &Peers,
) -> (Health, String) {
    if node.disabled {
        return (Health::Down, "disabled".into());
    }
    if !presence.online {
        let why = match node.public_key {
            None => "never connected",
            Some(_) => "offline",
        };
        return (Health::Down, why.into());
    }
    let Some(status) = &presence.status else {
        return (Health::Healthy, "connected; first report on its way".into());
    };
    if !status.problems.is_empty() {
        return (Health::Degraded, status.problems.join("; "));
    }
    if node.draining {
        return (Health::Degraded, "draining".into());
    }
    if presence.applied.is_some_and(|applied| applied < revision) {
        return (
            Health::Degraded,
            format!("applying config revision {revision}"),
        );
    }
    let missing = peers.missing_from(&presence.live_peers);
    if !missing.is_empty() {
        // A gateway can miss thousands of agents at once: the first few name the rest.
        let named = match missing.len() {
            n if n > NAMED_PEERS => format!(
                "{} and {} more",
                missing[..NAMED_PEERS].join(", "),
                n - NAMED_PEERS
            ),
            _ => missing.join(", "),
        };
        return (
            Health::Degraded,
            format!("no WireGuard session with {named}"),
        );
    }
    (Health::Healthy, "serving".into())
}

/// The nodes of one kind that a node of the other kind should be peered with: those online
/// and enabled.
pub struct Peers<'a> {
    wanted: Vec<&'a NodeRecord>,
}

impl<'a> Peers<'a> {
    /// From every node of the peer kind and whether it is online.
    pub fn new(nodes: Vec<(&'a NodeRecord, bool)>) -> Self {
        let wanted = nodes
            .into_iter()
            .filter(|(peer, online)| *online && !peer.disabled)
            .map(|(peer, _)| peer)
            .collect();
        Peers { wanted }
    }

    /// The names of the peers that should be in `live` and are not.
    fn missing_from(&self, live: &crate::hub::LivePeers) -> Vec<&'a str> {
        self.wanted
            .iter()
            .filter(|peer| peer.public_key.is_some_and(|key| !live.contains(&key)))
            .map(|peer| peer.name.as_str())
            .collect()
    }
}

/// A set of WireGuard public keys, hashed by their first eight bytes mixed with a secret of
/// this process: the keys are already uniform, and std's SipHash over all 32 bytes made the
/// lookups above most of a gateways list's time (100 gateways × 10,000 agents).
pub type KeySet<K> = std::collections::HashSet<K, KeyHashing>;

/// See [`KeySet`].
#[derive(Clone, Debug)]
pub struct KeyHashing(u64);

impl Default for KeyHashing {
    fn default() -> Self {
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        // RandomState's keys are private; one of its hashes is as secret.
        KeyHashing(*SEED.get_or_init(|| {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(0u64)
        }))
    }
}

impl std::hash::BuildHasher for KeyHashing {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(self.0)
    }
}

/// See [`KeySet`].
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        // A key hashes as one 32-byte write (after its length, below).
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        // A multiply by an odd constant spreads the secret-mixed word's bits upward, where
        // the table takes its buckets and tags from.
        self.0 = (self.0 ^ u64::from_le_bytes(word)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_usize(&mut self, _length: usize) {}
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

/// The fleet at one moment: which nodes are online, asked of the hub once. A list of
/// 10,000 agents used to ask it for every peer of every node, a lock each.
pub struct Fleet<'a> {
    hub: &'a crate::hub::Hub,
    state: &'a crate::model::State,
    online: std::collections::HashSet<String>,
    /// Each kind's nodes, as the other kind's peers.
    agents: Peers<'a>,
    gateways: Peers<'a>,
}

impl<'a> Fleet<'a> {
    /// The nodes of `state` as the hub sees them now.
    pub fn now(hub: &'a crate::hub::Hub, state: &'a crate::model::State) -> Fleet<'a> {
        let online = hub.online_nodes();
        let of_kind = |kind| {
            let nodes = state.nodes.iter().filter(|n| n.kind == kind);
            Peers::new(nodes.map(|n| (n, online.contains(&n.id))).collect())
        };
        Fleet {
            hub,
            state,
            agents: of_kind(NodeKind::Agent),
            gateways: of_kind(NodeKind::Gateway),
            online,
        }
    }

    /// The hub asked.
    pub fn hub(&self) -> &'a crate::hub::Hub {
        self.hub
    }

    /// Whether node `id` is online.
    pub fn is_online(&self, id: &str) -> bool {
        self.online.contains(id)
    }

    /// [`health`] of `node`.
    pub fn health(&self, node: &NodeRecord) -> (Health, String) {
        let peers = match node.kind {
            NodeKind::Agent => &self.gateways,
            NodeKind::Gateway => &self.agents,
        };
        let presence = self.hub.presence(&node.id);
        health(node, &presence, self.state.revision, peers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kakuremichi_proto::ids::NodeKind;

    #[test]
    fn health_names_the_first_thing_wrong() {
        use crate::hub::Presence;
        use kakuremichi_proto::ids::PublicKey;
        use kakuremichi_proto::messages::NodeStatus;
        let mut gw = NodeRecord::test_gateway("gw_t", &[]);
        gw.public_key = Some(PublicKey([1; 32]));
        let mut agent = NodeRecord::test_gateway("agt_1", &[]);
        agent.kind = NodeKind::Agent;
        agent.name = "home".into();
        agent.public_key = Some(PublicKey([2; 32]));
        let offline = Presence::default();
        let live = |keys: &[PublicKey]| std::sync::Arc::new(keys.iter().copied().collect());
        assert_eq!(
            health(&gw, &offline, 5, &Peers::new(vec![])).0,
            Health::Down
        );
        let online = Presence {
            online: true,
            last_seen: None,
            status: Some(std::sync::Arc::new(NodeStatus::default())),
            live_peers: live(&[PublicKey([2; 32])]),
            applied: Some(5),
        };
        assert_eq!(
            health(&gw, &online, 5, &Peers::new(vec![(&agent, true)])),
            (Health::Healthy, "serving".into())
        );
        let behind = health(&gw, &online, 6, &Peers::new(vec![(&agent, true)]));
        assert_eq!(
            behind,
            (Health::Degraded, "applying config revision 6".into())
        );
        let lonely = Presence {
            live_peers: live(&[]),
            ..online.clone()
        };
        let (state, why) = health(&gw, &lonely, 5, &Peers::new(vec![(&agent, true)]));
        assert_eq!(
            (state, why.as_str()),
            (Health::Degraded, "no WireGuard session with home")
        );
        // Thousands missed at once are counted, not all named.
        let many: Vec<NodeRecord> = (0..7)
            .map(|i| NodeRecord {
                name: format!("a{i}"),
                public_key: Some(PublicKey([10 + i; 32])),
                ..agent.clone()
            })
            .collect();
        let peers: Vec<(&NodeRecord, bool)> = many.iter().map(|a| (a, true)).collect();
        assert_eq!(
            health(&gw, &lonely, 5, &Peers::new(peers)).1,
            "no WireGuard session with a0, a1, a2, a3, a4 and 2 more"
        );
        // A key reported for an agent now offline does not stand in for one online.
        let gone = NodeRecord {
            name: "gone".into(),
            public_key: Some(PublicKey([3; 32])),
            ..agent.clone()
        };
        let stale = Presence {
            live_peers: live(&[PublicKey([3; 32])]),
            ..online.clone()
        };
        assert_eq!(
            health(
                &gw,
                &stale,
                5,
                &Peers::new(vec![(&agent, true), (&gone, false)])
            )
            .1,
            "no WireGuard session with home"
        );
        // An offline agent is not missed.
        assert_eq!(
            health(&gw, &lonely, 5, &Peers::new(vec![(&agent, false)])).0,
            Health::Healthy
        );
        let refused = NodeStatus {
            problems: vec!["cannot open tcp port 80".into()],
            ..NodeStatus::default()
        };
        let troubled = Presence {
            status: Some(std::sync::Arc::new(refused)),
            ..online.clone()
        };
        assert_eq!(
            health(&gw, &troubled, 5, &Peers::new(vec![])).1,
            "cannot open tcp port 80"
        );
        gw.draining = true;
        assert_eq!(
            health(&gw, &online, 5, &Peers::new(vec![])),
            (Health::Degraded, "draining".into())
        );
        gw.disabled = true;
        assert_eq!(health(&gw, &online, 5, &Peers::new(vec![])).0, Health::Down);
    }
}
