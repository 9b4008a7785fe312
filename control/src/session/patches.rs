//! What a session sends its node: the changes from the config the node holds
//! ([`kakuremichi_proto::patch`]), worked out from digests of what it was sent, in messages
//! of about [`MESSAGE_BYTES`] at most.

use super::MESSAGE_BYTES;
use crate::model::{Entry, NodeConfig, PeerList};
use kakuremichi_proto::messages::{encode, ConfigSnapshot};
use kakuremichi_proto::patch::{ConfigPatch, ListPatch, ListPatches};
use std::collections::HashMap;
use std::sync::Arc;

/// Digests of the entries of one keyed list, by key.
type Digests = HashMap<std::sync::Arc<str>, u64>;

/// The config a node holds, as digests: what the next patch is worked out against.
#[derive(Default)]
pub struct Held {
    /// The version of the config the node holds, and the digest of its fields outside the
    /// keyed lists.
    config: Option<(u64, [u8; 32])>,
    peers: Digests,
    /// The peer list `peers` was worked out from: a state whose peers did not change carries
    /// the same list ([`crate::model::PeerList`]), and the next patch then skips them.
    peer_list: Option<PeerList>,
    routes: Digests,
    port_routes: Digests,
    passthrough_routes: Digests,
    certificate_refs: Digests,
}

impl Held {
    /// The version of the config the node holds.
    pub fn version(&self) -> Option<u64> {
        self.config.map(|(version, _)| version)
    }

    /// The messages that take the node from what it holds to `config` at `version`, none if
    /// that changes nothing; from then on the node is taken to hold `config`.
    pub fn patch(&mut self, config: NodeConfig<'_>, version: u64) -> Vec<ConfigPatch> {
        let mut rest = config.rest;
        rest.version = 0;
        let rest_digest = ring::digest::digest(&ring::digest::SHA256, encode(&rest).as_bytes());
        let rest_digest: [u8; 32] = rest_digest.as_ref().try_into().unwrap_or_default();
        let base = self.version().unwrap_or(0);
        let mut out = Messages::new(version, base);
        let routes = config.routes.iter();
        if !self
            .peer_list
            .as_ref()
            .is_some_and(|sent| Arc::ptr_eq(sent, config.peers))
        {
            diff(
                config.peers.iter(),
                &mut self.peers,
                |l| &mut l.peers,
                &mut out,
            );
            self.peer_list = Some(config.peers.clone());
        }
        let http = routes.clone().flat_map(|r| &r.routes);
        diff(http, &mut self.routes, |l| &mut l.routes, &mut out);
        let ports = routes.clone().flat_map(|r| &r.port_routes);
        diff(
            ports,
            &mut self.port_routes,
            |l| &mut l.port_routes,
            &mut out,
        );
        let passthrough = routes.flat_map(|r| &r.passthrough_routes);
        let held = &mut self.passthrough_routes;
        diff(passthrough, held, |l| &mut l.passthrough_routes, &mut out);
        let held = &mut self.certificate_refs;
        diff(
            config.certificate_refs,
            held,
            |l| &mut l.certificate_refs,
            &mut out,
        );
        let rest_changed = self.config.is_none_or(|(_, held)| held != rest_digest);
        if !rest_changed && out.changes == 0 {
            return Vec::new();
        }
        self.config = Some((version, rest_digest));
        rest.version = version;
        out.finish(rest_changed.then_some(rest))
    }
}

/// Add to `out` what changed from `held` to `now`, and make `held` `now`'s.
fn diff<'a, T: Clone + 'a>(
    now: impl IntoIterator<Item = &'a Entry<T>> + Clone,
    held: &mut Digests,
    list: fn(&mut ListPatches) -> &mut ListPatch<T>,
    out: &mut Messages,
) {
    // Mostly nothing changed (a gateway woken by a tunnel edit still holds 10,000 peers):
    // lookups alone then, without building the map again.
    let mut count = 0;
    let same = now.clone().into_iter().all(|entry| {
        count += 1;
        held.get(&entry.key) == Some(&entry.digest)
    });
    if same && count == held.len() {
        return;
    }
    let mut next = Digests::with_capacity(held.len());
    for entry in now {
        let (key, changed) = match held.remove_entry(&entry.key) {
            Some((key, digest)) => (key, digest != entry.digest),
            None => (entry.key.clone(), true),
        };
        if changed {
            out.upsert(list, entry);
        }
        next.insert(key, entry.digest);
    }
    for (gone, _) in held.drain() {
        out.remove(list, gone.to_string());
    }
    *held = next;
}

/// A patch being cut into messages.
struct Messages {
    version: u64,
    base: u64,
    done: Vec<ConfigPatch>,
    lists: ListPatches,
    bytes: usize,
    changes: usize,
}

impl Messages {
    fn new(version: u64, base: u64) -> Messages {
        Messages {
            version,
            base,
            done: Vec::new(),
            lists: ListPatches::default(),
            bytes: 0,
            changes: 0,
        }
    }

    fn upsert<T: Clone>(&mut self, list: fn(&mut ListPatches) -> &mut ListPatch<T>, e: &Entry<T>) {
        self.make_room(e.bytes);
        list(&mut self.lists).upsert.push(e.value.clone());
    }

    fn remove<T>(&mut self, list: fn(&mut ListPatches) -> &mut ListPatch<T>, key: String) {
        self.make_room(key.len() + 3);
        list(&mut self.lists).remove.push(key);
    }

    fn make_room(&mut self, bytes: usize) {
        if self.bytes > 0 && self.bytes + bytes > MESSAGE_BYTES {
            let lists = std::mem::take(&mut self.lists);
            self.done.push(self.message(lists, true));
            self.bytes = 0;
        }
        self.bytes += bytes;
        self.changes += 1;
    }

    fn message(&self, lists: ListPatches, more: bool) -> ConfigPatch {
        ConfigPatch {
            version: self.version,
            base: self.base,
            lists,
            rest: None,
            more,
        }
    }

    /// The messages, `rest` in the first: a session's first patch starts from it.
    fn finish(mut self, rest: Option<ConfigSnapshot>) -> Vec<ConfigPatch> {
        let lists = std::mem::take(&mut self.lists);
        self.done.push(self.message(lists, false));
        self.done[0].rest = rest.map(Box::new);
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TunnelRoutes;
    use kakuremichi_proto::ids::PublicKey;
    use kakuremichi_proto::messages::PeerConfig;
    use kakuremichi_proto::patch::Assembly;
    use std::net::Ipv4Addr;

    fn peer(i: u32, instance: u64) -> Entry<PeerConfig> {
        Entry::new(PeerConfig {
            node_id: format!("agt_{i}"),
            public_key: PublicKey([7; 32]),
            overlay_ip: Ipv4Addr::from(0x0a4d_0000 + i),
            endpoint: Some("192.0.2.1:51820".into()),
            instance,
            https_port: None,
        })
    }

    fn config(peers: &PeerList, draining: bool) -> NodeConfig<'_> {
        NodeConfig {
            peers,
            routes: Vec::<&TunnelRoutes>::new(),
            certificate_refs: &[],
            rest: ConfigSnapshot {
                node_id: "gw_1".into(),
                draining,
                ..Default::default()
            },
        }
    }

    /// The node's side: apply each message as a node does.
    fn apply(node: &mut Assembly, patches: Vec<ConfigPatch>) -> Option<ConfigSnapshot> {
        let mut last = None;
        for patch in patches {
            let text = encode(&patch);
            assert!(text.len() < 2 * MESSAGE_BYTES, "{} bytes", text.len());
            last = node.receive(serde_json::from_str(&text).unwrap()).unwrap();
        }
        last
    }

    #[test]
    fn a_node_is_sent_what_changed_and_ends_up_with_the_whole_config() {
        let (mut held, mut node) = (Held::default(), Assembly::default());
        let mut peers: Vec<_> = (0..10_000).map(|i| peer(i, 1)).collect();
        let list: PeerList = peers.clone().into();
        let first = held.patch(config(&list, false), 5);
        assert!(first.len() > 1, "10,000 peers take several messages");
        assert_eq!(apply(&mut node, first).unwrap().peers.len(), 10_000);

        let same: PeerList = peers.clone().into();
        assert!(
            held.patch(config(&same, false), 6).is_empty(),
            "nothing changed, entry by entry"
        );
        assert!(
            held.patch(config(&same, false), 6).is_empty(),
            "nothing changed: the same list"
        );
        peers[17] = peer(17, 2);
        peers.remove(3);
        peers.push(peer(10_000, 1));
        let second = held.patch(config(&peers.clone().into(), true), 7);
        assert_eq!(second.len(), 1);
        let text = encode(&second[0]);
        assert!(
            text.len() < 2_000,
            "a small change is a small message: {text}"
        );
        let got = apply(&mut node, second).unwrap();
        assert_eq!(got.version, 7);
        assert!(got.draining);
        let mut want: Vec<_> = peers.into_iter().map(|p| p.value).collect();
        let mut got = got.peers;
        want.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        got.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        assert_eq!(got, want);
        assert_eq!(held.version(), Some(7));
    }
}
