//! Starting a node: everything a gateway and an agent do alike before their roles diverge.

use crate::apply::Latest;
use crate::link::{ControlUrl, LinkSettings};
use crate::state_dir::StateDir;
use crate::Error;
use kakuremichi_netstack::Stack;
use kakuremichi_proto::ids::NodeKind;
use kakuremichi_proto::messages::ConfigSnapshot;
use std::net::SocketAddr;
use std::path::Path;

/// What starting a node needs.
pub struct NodeSettings<'a> {
    /// Agent or gateway.
    pub kind: NodeKind,
    /// `CONTROL_URL`.
    pub control_url: &'a str,
    /// `API_KEY`.
    pub api_key: String,
    /// Where the key and cached config live.
    pub state_dir: &'a Path,
    /// The WireGuard UDP socket's address.
    pub wireguard_bind: SocketAddr,
    /// Gateways: the `host:port` agents send datagrams to.
    pub wireguard_endpoint: Option<String>,
    /// Extra roots to trust for an `https://` Control (`CONTROL_CA`).
    pub control_ca: Option<&'a Path>,
}

/// A started node, not yet talking to Control.
pub struct Node {
    /// The userspace network, bound and driven.
    pub stack: Stack,
    /// Snapshots to apply; holds the cached one, if any, from the start.
    pub snapshots: Latest<ConfigSnapshot>,
    /// What [`crate::link::run`] needs.
    pub link: LinkSettings,
}

/// Check the settings, load or make the key, bind WireGuard and queue the cached config.
pub async fn start(settings: NodeSettings<'_>) -> Result<Node, Error> {
    let control = ControlUrl::parse(settings.control_url, settings.kind)?;
    if settings.api_key.is_empty() {
        return Err(Error::Config("API_KEY is empty".into()));
    }
    let state_dir = StateDir::open(settings.state_dir)?;
    let private_key = state_dir.private_key()?;
    let stack = Stack::bind(settings.wireguard_bind, private_key)
        .await
        .map_err(|source| Error::Io {
            context: format!("binding the WireGuard socket {}", settings.wireguard_bind),
            source,
        })?;
    let snapshots = Latest::default();
    if let Some(cached) = state_dir.cached_config() {
        log::info!(
            "serving cached config version {} until Control answers",
            cached.version
        );
        snapshots.put(cached);
    }
    let hello = crate::hello(&private_key, settings.wireguard_endpoint);
    let tls = Some(crate::link::tls_connector(settings.control_ca)?);
    let link = LinkSettings {
        control,
        api_key: settings.api_key,
        hello,
        state_dir,
        tls,
    };
    Ok(Node {
        stack,
        snapshots,
        link,
    })
}
