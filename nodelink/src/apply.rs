//! Turning snapshots into running state: the newest snapshot wins, and peers become netstack
//! peer specs (gateway endpoints resolved through DNS each time a snapshot is applied).

use kakuremichi_netstack::{PeerSpec, Stack};
use kakuremichi_proto::messages::ConfigSnapshot;
use std::sync::{Mutex, PoisonError};

/// Holds the newest value put in; a taker gets only the latest, however many arrived.
pub struct Latest<T> {
    slot: Mutex<Option<T>>,
    nudge: (async_channel::Sender<()>, async_channel::Receiver<()>),
}

impl<T> Default for Latest<T> {
    fn default() -> Self {
        Latest {
            slot: Mutex::new(None),
            nudge: async_channel::bounded(1),
        }
    }
}

impl<T> Latest<T> {
    /// Replace the held value.
    pub fn put(&self, value: T) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(value);
        // A full channel already holds a nudge for this slot.
        let _ = self.nudge.0.try_send(());
    }

    /// Wait for a value and take it.
    pub async fn take(&self) -> T {
        loop {
            if let Some(value) = self
                .slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            {
                return value;
            }
            // Both ends live in `self`, so the channel cannot be closed.
            let _ = self.nudge.1.recv().await;
        }
    }
}

/// The snapshot's peers as netstack peer specs. Endpoints that do not resolve are left
/// empty (the peer is kept, so its session survives a DNS hiccup) and logged.
pub async fn peer_specs(
    snapshot: &ConfigSnapshot,
    persistent_keepalive: Option<u16>,
) -> Vec<PeerSpec> {
    let mut specs = Vec::with_capacity(snapshot.peers.len());
    for peer in &snapshot.peers {
        let endpoint = match &peer.endpoint {
            Some(endpoint) => match smol::net::resolve(endpoint.as_str()).await {
                Ok(addrs) => addrs.into_iter().find(|a| a.is_ipv4()).or_else(|| {
                    log::warn!(
                        "peer {}: endpoint {endpoint} has no IPv4 address",
                        peer.node_id
                    );
                    None
                }),
                Err(e) => {
                    log::warn!("peer {}: cannot resolve {endpoint}: {e}", peer.node_id);
                    None
                }
            },
            None => None,
        };
        specs.push(PeerSpec {
            public_key: peer.public_key.0,
            overlay_ip: peer.overlay_ip,
            endpoint,
            persistent_keepalive,
            incarnation: peer.instance,
        });
    }
    specs
}

/// Give the stack the snapshot's overlay address and these peers.
pub fn apply_network(stack: &Stack, snapshot: &ConfigSnapshot, peers: &[PeerSpec]) {
    if stack.address() != Some(snapshot.overlay_ip) {
        stack.set_address(snapshot.overlay_ip, snapshot.overlay_prefix);
    }
    stack.set_peers(peers);
}
