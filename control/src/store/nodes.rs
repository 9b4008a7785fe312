//! Enrolling, changing, rekeying and deleting agents and gateways, and what a node says
//! of itself when it connects.

use super::{all, get, put, Store, OVERLAY};
use crate::auth::{self};
use crate::error::Error;
use crate::model::{NodeRecord, OverlayNet, TunnelRecord};
use kakuremichi_proto::ids::{NodeKind, PublicKey};
use kakuremichi_proto::messages::Hello;
use std::collections::HashMap;

impl Store {
    /// Enrol a node. Returns its record and its API key, which is not stored.
    pub fn create_node(&self, kind: NodeKind, name: String) -> Result<(NodeRecord, String), Error> {
        let api_key = auth::new_secret("kmk");
        let record = self.write(|s, wtxn| {
            // The records decoded before are copied, not decoded: enrolling the 10,000th
            // node decoded 9,999 records.
            let nodes = s.decoded_nodes.all(&s.nodes, wtxn)?;
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

    /// Whether recording `hello` would change nothing: the node reconnected as it was.
    pub fn hello_changes_nothing(&self, id: &str, hello: &Hello) -> Result<bool, Error> {
        let rtxn = self.env.read_txn()?;
        let node: NodeRecord =
            get(&self.nodes, &rtxn, id)?.ok_or_else(|| Error::not_found("node", id))?;
        let mut said = node.clone();
        said.take_hello(hello);
        Ok(said == node)
    }

    /// Record what nodes said in their hellos, in one write transaction: each is accepted or
    /// refused on its own (a WireGuard key another node holds, a node deleted meanwhile),
    /// in order. Errs, writing nothing, only when the store fails.
    pub fn record_hellos(
        &self,
        hellos: &[(&str, &Hello)],
    ) -> Result<Vec<Result<(), Error>>, Error> {
        self.write(|s, wtxn| {
            let nodes = s.decoded_nodes.all(&s.nodes, wtxn)?;
            let keyed = nodes
                .into_iter()
                .filter_map(|n| Some((n.public_key?, n.id)));
            let mut keys: HashMap<PublicKey, String> = keyed.collect();
            let mut answers = Vec::with_capacity(hellos.len());
            for &(id, hello) in hellos {
                let key = hello.public_key;
                if keys.get(&key).is_some_and(|owner| owner != id) {
                    let why = "another node already uses this WireGuard key";
                    answers.push(Err(Error::conflict("public_key", why)));
                    continue;
                }
                let Some(mut node) = get::<NodeRecord>(&s.nodes, wtxn, id)? else {
                    answers.push(Err(Error::not_found("node", id)));
                    continue;
                };
                keys.retain(|_, owner| owner != id);
                keys.insert(key, id.to_string());
                node.take_hello(hello);
                put(&s.nodes, wtxn, id, &node)?;
                answers.push(Ok(()));
            }
            Ok(answers)
        })
    }
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
            features: Vec::new(),
        }
    }

    /// Record one hello as the writer does, after the same check: whether it changed
    /// anything.
    fn record(store: &Store, id: &str, hello: &Hello) -> Result<bool, Error> {
        if store.hello_changes_nothing(id, hello)? {
            return Ok(false);
        }
        let mut answers = store.record_hellos(&[(id, hello)])?;
        answers.pop().expect("one answer").map(|()| true)
    }

    fn open_store() -> (Store, std::path::PathBuf) {
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).unwrap();
        let dir = std::env::temp_dir().join(format!("kk-keys-{}", u64::from_le_bytes(nonce)));
        (
            Store::open(&dir, "10.77.0.0/16".parse().unwrap()).unwrap(),
            dir,
        )
    }

    #[test]
    fn a_hello_with_another_nodes_key_is_refused_however_the_keys_were_last_read() {
        let (store, dir) = open_store();
        let node = |kind| store.create_node(kind, "n".into()).unwrap().0.id;
        let (a, b) = (node(NodeKind::Agent), node(NodeKind::Gateway));
        assert!(record(&store, &a, &hello(1, 1)).unwrap());
        // Straight after a hello (the keys kept), and after another commit (read again).
        let refused = |store: &Store| record(store, &b, &hello(1, 2)).unwrap_err();
        assert!(
            refused(&store).to_string().contains("already uses"),
            "{}",
            refused(&store)
        );
        node(NodeKind::Agent);
        assert!(refused(&store).to_string().contains("already uses"));
        // A node that moves to a new key frees its old one.
        assert!(record(&store, &a, &hello(2, 3)).unwrap());
        assert!(record(&store, &b, &hello(1, 4)).unwrap());
        assert!(record(&store, &a, &hello(1, 5)).is_err());
        assert!(
            !record(&store, &b, &hello(1, 4)).unwrap(),
            "nothing changed"
        );
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_batch_of_hellos_is_one_revision_and_each_hello_is_answered_on_its_own() {
        let (store, dir) = open_store();
        let node = |kind| store.create_node(kind, "n".into()).unwrap().0.id;
        let (a, b, c) = (
            node(NodeKind::Agent),
            node(NodeKind::Agent),
            node(NodeKind::Gateway),
        );
        let before = store.revision().unwrap();
        let (first, clash, gone, last) = (hello(1, 1), hello(1, 2), hello(3, 3), hello(4, 4));
        let answers = store
            .record_hellos(&[(&a, &first), (&b, &clash), ("agt_gone", &gone), (&c, &last)])
            .unwrap();
        assert_eq!(
            store.revision().unwrap(),
            before + 1,
            "one commit for the batch"
        );
        assert!(answers[0].is_ok() && answers[3].is_ok(), "{answers:?}");
        assert!(
            matches!(answers[1], Err(Error::Conflict { .. })),
            "{answers:?}"
        );
        assert!(
            matches!(answers[2], Err(Error::NotFound { .. })),
            "{answers:?}"
        );
        let state = store.state().unwrap();
        let key = |id: &str| state.node(id).and_then(|n| n.public_key);
        assert_eq!(key(&a), Some(first.public_key));
        assert_eq!(key(&b), None, "the refused hello wrote nothing");
        assert_eq!(key(&c), Some(last.public_key));
        assert_eq!(
            state.node(&c).unwrap().wireguard_endpoint,
            last.wireguard_endpoint
        );
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_state_decoded_again_after_a_commit_has_what_it_changed() {
        let (store, dir) = open_store();
        let ids: Vec<String> = (0..3)
            .map(|_| store.create_node(NodeKind::Agent, "n".into()).unwrap().0.id)
            .collect();
        let names = |store: &Store| -> Vec<(String, String)> {
            let state = store.state().unwrap();
            state
                .nodes
                .iter()
                .map(|n| (n.id.clone(), n.name.clone()))
                .collect()
        };
        assert_eq!(names(&store).len(), 3);
        store
            .update_node(&ids[1], |n| n.name = "renamed".into())
            .unwrap();
        store.delete_node(&ids[2]).unwrap();
        let now = names(&store);
        assert_eq!(now.len(), 2, "{now:?}");
        assert!(now.contains(&(ids[1].clone(), "renamed".into())), "{now:?}");
        assert!(now.contains(&(ids[0].clone(), "n".into())), "{now:?}");
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
