//! Enrolling, changing, rekeying and deleting agents and gateways, and what a node says
//! of itself when it connects.

use super::{all, get, put, Store, OVERLAY, REVISION};
use crate::auth::{self};
use crate::error::Error;
use crate::model::{NodeRecord, OverlayNet, TunnelRecord};
use heed::RwTxn;
use kakuremichi_proto::ids::{NodeKind, PublicKey};
use kakuremichi_proto::messages::Hello;

/// The part of a [`NodeRecord`] that enrolling another node reads.
#[derive(serde::Deserialize)]
struct OverlayAddress {
    overlay_ip: std::net::Ipv4Addr,
}

impl Store {
    /// Enrol a node. Returns its record and its API key, which is not stored.
    pub fn create_node(&self, kind: NodeKind, name: String) -> Result<(NodeRecord, String), Error> {
        let api_key = auth::new_secret("kmk");
        let record = self.write(|s, wtxn| {
            // Only the addresses: enrolling the 10,000th node decoded 9,999 whole records.
            let nodes: Vec<OverlayAddress> = all(&s.nodes, wtxn)?;
            let overlay: OverlayNet = get(&s.meta, wtxn, OVERLAY)?
                .ok_or_else(|| Error::Store("overlay network missing".into()))?;
            let used = nodes.iter().map(|n| n.overlay_ip).collect();
            let overlay_ip = overlay
                .allocate(&used)
                .ok_or_else(|| Error::conflict("overlay", "the overlay network is full"))?;
            let id = auth::new_id(match kind {
                NodeKind::Agent => "agt",
                NodeKind::Gateway => "gw",
            });
            let record = NodeRecord::enrolled(
                &id,
                kind,
                &name,
                overlay_ip,
                auth::hash_secret(&api_key),
                auth::unix_now(),
            );
            put(&s.nodes, wtxn, &record.id, &record)?;
            put(&s.api_keys, wtxn, &record.api_key_hash, &record.id)?;
            Ok(record)
        })?;
        Ok((record, api_key))
    }

    /// Rename, disable or enable a node through `change`; its kind, key and address stay.
    pub fn update_node(
        &self,
        id: &str,
        change: impl FnOnce(&mut NodeRecord),
    ) -> Result<NodeRecord, Error> {
        self.write(|s, wtxn| {
            let mut node: NodeRecord =
                get(&s.nodes, wtxn, id)?.ok_or_else(|| Error::not_found("node", id))?;
            change(&mut node);
            put(&s.nodes, wtxn, id, &node)?;
            Ok(node)
        })
    }

    /// Give a node a new API key and forget the old one: the node's live session ends and
    /// the old key is refused from now on. Returns the record and the new key (shown once).
    pub fn rotate_node_key(&self, id: &str) -> Result<(NodeRecord, String), Error> {
        let api_key = auth::new_secret("kmk");
        let node = self.write(|s, wtxn| {
            let mut node: NodeRecord =
                get(&s.nodes, wtxn, id)?.ok_or_else(|| Error::not_found("node", id))?;
            s.api_keys.delete(wtxn, &node.api_key_hash)?;
            node.api_key_hash = auth::hash_secret(&api_key);
            put(&s.api_keys, wtxn, &node.api_key_hash, &node.id)?;
            put(&s.nodes, wtxn, id, &node)?;
            Ok(node)
        })?;
        Ok((node, api_key))
    }

    /// Remove a node and its key. An agent that still carries tunnels is refused, naming them:
    /// deleting it would silently take them down.
    pub fn delete_node(&self, id: &str) -> Result<NodeRecord, Error> {
        self.write(|s, wtxn| {
            let node: NodeRecord =
                get(&s.nodes, wtxn, id)?.ok_or_else(|| Error::not_found("node", id))?;
            let carried: Vec<String> = all::<TunnelRecord>(&s.tunnels, wtxn)?
                .into_iter()
                .filter(|t| t.spec.target_on(id).is_some())
                .map(|t| t.label())
                .collect();
            if !carried.is_empty() {
                return Err(Error::conflict(
                    "agent",
                    format!(
                        "it still carries {}: move or delete them first",
                        carried.join(", ")
                    ),
                ));
            }
            s.api_keys.delete(wtxn, &node.api_key_hash)?;
            s.nodes.delete(wtxn, id)?;
            Ok(node)
        })
    }

    /// The node an API key belongs to.
    pub fn node_by_api_key(&self, api_key: &str) -> Result<Option<NodeRecord>, Error> {
        let rtxn = self.env.read_txn()?;
        let Some(id) = get::<String>(&self.api_keys, &rtxn, &auth::hash_secret(api_key))? else {
            return Ok(None);
        };
        get(&self.nodes, &rtxn, &id)
    }

    /// Record what a node said in its hello. Returns whether anything changed (and so the
    /// revision moved and peers need new snapshots).
    pub fn record_hello(&self, id: &str, hello: &Hello) -> Result<bool, Error> {
        let rtxn = self.env.read_txn()?;
        let node: NodeRecord =
            get(&self.nodes, &rtxn, id)?.ok_or_else(|| Error::not_found("node", id))?;
        let (public_key, version) = (hello.public_key, hello.version.as_str());
        let endpoint = if node.kind == NodeKind::Gateway {
            hello.wireguard_endpoint.clone()
        } else {
            None
        };
        let (port_policy, https_port, http_port, allow_targets) = match node.kind {
            NodeKind::Gateway => (hello.ports.clone(), hello.https_port, hello.http_port, None),
            NodeKind::Agent => (None, None, None, hello.allow_targets.clone()),
        };
        let unchanged = node.public_key == Some(public_key)
            && node.version.as_deref() == Some(version)
            && node.wireguard_endpoint == endpoint
            && node.instance == hello.instance
            && node.port_policy == port_policy
            && node.https_port == https_port
            && node.http_port == http_port
            && node.allow_targets == allow_targets;
        if unchanged {
            return Ok(false);
        }
        drop(rtxn);
        let (revision, mut keys) = self.write(|s, wtxn| {
            let (revision, mut keys) = s.node_keys_in(wtxn)?;
            if keys.get(&public_key).is_some_and(|owner| owner != id) {
                return Err(Error::conflict(
                    "public_key",
                    "another node already uses this WireGuard key",
                ));
            }
            keys.retain(|_, owner| owner != id);
            keys.insert(public_key, id.to_string());
            let mut node: NodeRecord =
                get(&s.nodes, wtxn, id)?.ok_or_else(|| Error::not_found("node", id))?;
            node.public_key = Some(public_key);
            node.version = Some(version.to_string());
            node.wireguard_endpoint = endpoint;
            node.instance = hello.instance;
            node.port_policy = port_policy;
            node.https_port = https_port;
            node.http_port = http_port;
            node.allow_targets = allow_targets;
            put(&s.nodes, wtxn, id, &node)?;
            Ok((revision, keys))
        })?;
        self.node_keys_at
            .keep(revision + 1, std::mem::take(&mut keys));
        Ok(true)
    }

    /// Which node holds each WireGuard key, and the revision that is at.
    fn node_keys_in(&self, wtxn: &RwTxn) -> Result<(u64, NodeKeys), Error> {
        let revision: u64 = get(&self.meta, wtxn, REVISION)?.unwrap_or(0);
        let keys = self.node_keys_at.take_at(revision, || {
            let nodes = all::<NodeKey>(&self.nodes, wtxn)?.into_iter();
            let keyed = nodes.filter_map(|n| Some((n.public_key?, n.id)));
            Ok(keyed.collect())
        })?;
        Ok((revision, keys))
    }
}

/// Node id by WireGuard key.
pub(super) type NodeKeys = std::collections::HashMap<PublicKey, String>;

/// The part of a node's record a hello's key is checked against: a fleet's hellos each read
/// every node, and the rest of the record would be decoded for nothing.
#[derive(serde::Deserialize)]
struct NodeKey {
    id: String,
    public_key: Option<PublicKey>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(key: u8, instance: u64) -> Hello {
        Hello {
            public_key: PublicKey([key; 32]),
            version: "test".into(),
            wireguard_endpoint: None,
            instance,
            ports: None,
            https_port: None,
            http_port: None,
            allow_targets: None,
        }
    }

    #[test]
    fn a_hello_with_another_nodes_key_is_refused_however_the_keys_were_last_read() {
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).unwrap();
        let dir = std::env::temp_dir().join(format!("kk-keys-{}", u64::from_le_bytes(nonce)));
        let store = Store::open(&dir, "10.77.0.0/16".parse().unwrap()).unwrap();
        let node = |kind| store.create_node(kind, "n".into()).unwrap().0.id;
        let (a, b) = (node(NodeKind::Agent), node(NodeKind::Gateway));
        assert!(store.record_hello(&a, &hello(1, 1)).unwrap());
        // Straight after a hello (the keys kept), and after another commit (read again).
        let refused = |store: &Store| store.record_hello(&b, &hello(1, 2)).unwrap_err();
        assert!(
            refused(&store).to_string().contains("already uses"),
            "{}",
            refused(&store)
        );
        node(NodeKind::Agent);
        assert!(refused(&store).to_string().contains("already uses"));
        // A node that moves to a new key frees its old one.
        assert!(store.record_hello(&a, &hello(2, 3)).unwrap());
        assert!(store.record_hello(&b, &hello(1, 4)).unwrap());
        assert!(store.record_hello(&a, &hello(1, 5)).is_err());
        assert!(
            !store.record_hello(&b, &hello(1, 4)).unwrap(),
            "nothing changed"
        );
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
