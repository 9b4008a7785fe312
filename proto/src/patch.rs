//! Configs as patches: Control sends a node the changes from the config it holds, not the
//! whole config again. A gateway's config names every agent and every tunnel it routes
//! (about 4 MB at 10,000 agents and 5,000 tunnels); one agent connecting, or one tunnel
//! edited, changes one entry of it.
//!
//! The large lists are keyed ([`Keyed`]): a [`ListPatch`] names entries that are new or
//! changed and keys that are gone. Everything else in a config is small and rides whole in
//! [`ConfigPatch::rest`] when any of it changed. A session's first config is a patch from
//! nothing (`base` 0). A patch may take several messages, each well under
//! [`crate::messages::MAX_MESSAGE_BYTES`]; the node applies the config once the last
//! arrives ([`Assembly`]).

use crate::messages::{
    CertificateRef, ConfigSnapshot, HttpRoute, PassthroughRoute, PeerConfig, PortRoute,
};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// A list entry with a key unique within its list.
pub trait Keyed {
    /// What a [`ListPatch`] names the entry by.
    fn key(&self) -> String;
}

impl Keyed for PeerConfig {
    fn key(&self) -> String {
        self.node_id.clone()
    }
}

impl Keyed for HttpRoute {
    fn key(&self) -> String {
        self.tunnel_id.clone()
    }
}

impl Keyed for PortRoute {
    fn key(&self) -> String {
        format!("{:?}/{}", self.transport, self.port)
    }
}

impl Keyed for PassthroughRoute {
    fn key(&self) -> String {
        self.hostname.to_string()
    }
}

impl Keyed for CertificateRef {
    fn key(&self) -> String {
        self.hostname.to_string()
    }
}

/// Changes to one keyed list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListPatch<T> {
    /// Entries that are new, or replace the entry of the same key.
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub upsert: Vec<T>,
    /// Keys of entries that are gone.
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl<T> Default for ListPatch<T> {
    fn default() -> Self {
        ListPatch {
            upsert: Vec::new(),
            remove: Vec::new(),
        }
    }
}

impl<T: Keyed> ListPatch<T> {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.remove.is_empty()
    }

    fn extend(&mut self, more: ListPatch<T>) {
        self.upsert.extend(more.upsert);
        self.remove.extend(more.remove);
    }

    /// Apply to `list`: removed keys go, upserts replace their key's entry in place or are
    /// added at the end in the patch's order.
    pub fn apply(self, list: &mut Vec<T>) {
        if !self.remove.is_empty() {
            let gone: HashSet<String> = self.remove.into_iter().collect();
            list.retain(|entry| !gone.contains(&entry.key()));
        }
        if self.upsert.is_empty() {
            return;
        }
        let mut position: HashMap<String, usize> =
            list.iter().enumerate().map(|(i, e)| (e.key(), i)).collect();
        for entry in self.upsert {
            match position.get(&entry.key()) {
                Some(&i) => list[i] = entry,
                None => {
                    position.insert(entry.key(), list.len());
                    list.push(entry);
                }
            }
        }
    }
}

/// The keyed lists of a config; a [`ConfigSnapshot`]'s own fields of the same names.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ListPatches {
    /// WireGuard peers, by node id.
    #[serde(default, skip_serializing_if = "ListPatch::is_empty")]
    pub peers: ListPatch<PeerConfig>,
    /// HTTP routes, by tunnel id.
    #[serde(default, skip_serializing_if = "ListPatch::is_empty")]
    pub routes: ListPatch<HttpRoute>,
    /// Public ports, by transport and port.
    #[serde(default, skip_serializing_if = "ListPatch::is_empty")]
    pub port_routes: ListPatch<PortRoute>,
    /// TLS passthrough routes, by hostname.
    #[serde(default, skip_serializing_if = "ListPatch::is_empty")]
    pub passthrough_routes: ListPatch<PassthroughRoute>,
    /// Certificate references, by hostname.
    #[serde(default, skip_serializing_if = "ListPatch::is_empty")]
    pub certificate_refs: ListPatch<CertificateRef>,
}

impl ListPatches {
    /// Add the changes of another message of the same patch: Control names each key once
    /// in a patch, so applying the two together is applying one after the other.
    fn extend(&mut self, more: ListPatches) {
        self.peers.extend(more.peers);
        self.routes.extend(more.routes);
        self.port_routes.extend(more.port_routes);
        self.passthrough_routes.extend(more.passthrough_routes);
        self.certificate_refs.extend(more.certificate_refs);
    }

    fn apply(self, config: &mut ConfigSnapshot) {
        self.peers.apply(&mut config.peers);
        self.routes.apply(&mut config.routes);
        self.port_routes.apply(&mut config.port_routes);
        self.passthrough_routes
            .apply(&mut config.passthrough_routes);
        self.certificate_refs.apply(&mut config.certificate_refs);
    }
}

/// Part or all of the change from the config at `base` to the config at `version`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigPatch {
    /// The version of the config this makes.
    pub version: u64,
    /// The version of the config it applies to: 0 for none (a session's first).
    pub base: u64,
    /// Changes to the keyed lists.
    #[serde(flatten)]
    pub lists: ListPatches,
    /// The config's other fields, when any of them changed since `base` (always in a
    /// session's first patch); its keyed lists are empty here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest: Option<Box<ConfigSnapshot>>,
    /// More messages of this patch follow.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
}

impl ConfigSnapshot {
    /// Move the keyed lists out: what [`ConfigPatch::rest`] carries.
    pub fn without_lists(mut self) -> ConfigSnapshot {
        self.peers = Vec::new();
        self.routes = Vec::new();
        self.port_routes = Vec::new();
        self.passthrough_routes = Vec::new();
        self.certificate_refs = Vec::new();
        self
    }
}

/// A node's side: the config it holds (as Control sent it, certificates by reference) and
/// the one a patch in several messages is building.
#[derive(Default)]
pub struct Assembly {
    held: Option<ConfigSnapshot>,
    building: Option<Building>,
}

/// A patch whose messages are still coming: the config it starts from and the list changes
/// so far, applied once the last is in. Control cuts a gateway's first config into a
/// thousand small messages, and applying each to a list of 10,000 peers on its own would
/// index that list a thousand times.
struct Building {
    config: ConfigSnapshot,
    lists: ListPatches,
}

impl Assembly {
    /// Take one message of a patch; the whole config once its last message is in.
    pub fn receive(&mut self, patch: ConfigPatch) -> Result<Option<ConfigSnapshot>, String> {
        let mut building = match self.building.take() {
            Some(building) if building.config.version == patch.version => building,
            Some(building) => {
                return Err(format!(
                    "a patch to version {} began before version {} was complete",
                    patch.version, building.config.version
                ))
            }
            None => Building {
                config: self.start(&patch)?,
                lists: ListPatches::default(),
            },
        };
        building.lists.extend(patch.lists);
        if let Some(rest) = patch.rest {
            let lists = std::mem::take(&mut building.config);
            building.config = ConfigSnapshot {
                peers: lists.peers,
                routes: lists.routes,
                port_routes: lists.port_routes,
                passthrough_routes: lists.passthrough_routes,
                certificate_refs: lists.certificate_refs,
                ..*rest
            };
        }
        building.config.version = patch.version;
        if patch.more {
            self.building = Some(building);
            return Ok(None);
        }
        let Building { mut config, lists } = building;
        lists.apply(&mut config);
        self.held = Some(config.clone());
        Ok(Some(config))
    }

    /// The config a patch's first message starts from.
    fn start(&self, patch: &ConfigPatch) -> Result<ConfigSnapshot, String> {
        match (&self.held, patch.base) {
            (_, 0) if patch.rest.is_some() => Ok(ConfigSnapshot::default()),
            (Some(held), base) if held.version == base => Ok(held.clone()),
            (held, base) => Err(format!(
                "a patch from version {base} to {}, but this node holds {}",
                patch.version,
                held.as_ref()
                    .map_or("none".into(), |h| h.version.to_string())
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::PublicKey;
    use std::net::Ipv4Addr;

    fn peer(id: &str, instance: u64) -> PeerConfig {
        PeerConfig {
            node_id: id.into(),
            public_key: PublicKey([instance as u8; 32]),
            overlay_ip: Ipv4Addr::new(10, 77, 0, 2),
            endpoint: None,
            instance,
            https_port: None,
        }
    }

    fn first(version: u64, peers: Vec<PeerConfig>, more: bool) -> ConfigPatch {
        ConfigPatch {
            version,
            base: 0,
            lists: ListPatches {
                peers: ListPatch {
                    upsert: peers,
                    remove: vec![],
                },
                ..Default::default()
            },
            rest: Some(Box::new(ConfigSnapshot {
                node_id: "gw_1".into(),
                heartbeat_interval_ms: 500,
                ..Default::default()
            })),
            more,
        }
    }

    #[test]
    fn upserts_replace_in_place_and_append_and_removes_go() {
        let mut list = vec![peer("a", 1), peer("b", 1), peer("c", 1)];
        ListPatch {
            upsert: vec![peer("d", 1), peer("b", 2)],
            remove: vec!["a".into(), "nobody".into()],
        }
        .apply(&mut list);
        let seen: Vec<(String, u64)> = list.iter().map(|p| (p.key(), p.instance)).collect();
        assert_eq!(seen, [("b".into(), 2), ("c".into(), 1), ("d".into(), 1)]);
    }

    #[test]
    fn a_config_in_several_messages_applies_once_all_are_in() {
        let mut assembly = Assembly::default();
        let mut opening = first(7, vec![peer("a", 1)], true);
        opening.rest = None;
        // Only a first message with the rest may start from nothing.
        assert!(assembly.receive(opening.clone()).is_err());
        let mut opening = first(7, vec![peer("a", 1)], true);
        opening.rest.as_mut().unwrap().draining = true;
        assert_eq!(assembly.receive(opening), Ok(None));
        let closing = ConfigPatch {
            lists: ListPatches {
                peers: ListPatch {
                    upsert: vec![peer("b", 1)],
                    remove: vec![],
                },
                ..Default::default()
            },
            ..first(7, vec![], false)
        };
        let config = assembly.receive(closing).unwrap().expect("complete");
        assert_eq!(config.version, 7);
        assert_eq!(config.peers.len(), 2);
        assert!(!config.draining, "the last rest sent is the one that holds");
        assert_eq!(config.heartbeat_interval_ms, 500);

        // The next patch applies to version 7 and keeps what it does not name.
        let next = ConfigPatch {
            version: 9,
            base: 7,
            lists: ListPatches {
                peers: ListPatch {
                    upsert: vec![],
                    remove: vec!["a".into()],
                },
                ..Default::default()
            },
            rest: None,
            more: false,
        };
        let config = assembly.receive(next.clone()).unwrap().expect("complete");
        assert_eq!(config.version, 9);
        assert_eq!(config.node_id, "gw_1");
        assert_eq!(config.peers, [peer("b", 1)]);
        // Applied twice, or to a version the node does not hold, it is refused.
        assert!(assembly.receive(next).is_err());
    }

    #[test]
    fn a_patch_interleaved_with_another_is_refused() {
        let mut assembly = Assembly::default();
        assert_eq!(assembly.receive(first(3, vec![], true)), Ok(None));
        assert!(assembly.receive(first(4, vec![], false)).is_err());
    }

    #[test]
    fn patches_round_trip_as_json_and_leave_empty_lists_out() {
        let patch = first(2, vec![peer("a", 1)], false);
        let text = serde_json::to_string(&patch).unwrap();
        assert!(!text.contains(r#""routes":{"#), "{text}");
        assert_eq!(serde_json::from_str::<ConfigPatch>(&text).unwrap(), patch);
    }
}
