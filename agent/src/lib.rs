//! # kakuremichi-agent
//!
//! Runs beside the apps it publishes. Outbound only: a WebSocket to Control and WireGuard
//! datagrams to every gateway (with keepalives so NAT mappings stay open). It listens only
//! inside its userspace stack, on one service port per tunnel, and forwards each connection
//! to the tunnel's target.
//!
//! - [`forward`]: service ports and forwarding.
//! - [`status`]: the loopback status listener and the `healthcheck` probe.
#![forbid(unsafe_code)]

pub mod forward;
pub mod status;

use async_io::Async;
use futures_lite::future;
use kakuremichi_netstack::Stack;
use kakuremichi_nodelink::apply::{peer_specs, Latest};
use kakuremichi_nodelink::link::{self, ControlUrl, LinkSettings, LinkState};
use kakuremichi_nodelink::state_dir::StateDir;
use kakuremichi_proto::ids::NodeKind;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Keepalive towards gateways, in seconds: well inside common NAT UDP timeouts.
const PERSISTENT_KEEPALIVE: u16 = 25;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Settings are missing or wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// The state directory or control link setup failed.
    #[error(transparent)]
    Node(#[from] kakuremichi_nodelink::Error),
    /// A socket could not be opened.
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the agent is told at start.
pub struct Settings {
    pub control_url: String,
    pub api_key: String,
    pub state_dir: PathBuf,
    /// Loopback status listener.
    pub status_listen: SocketAddr,
    /// Local UDP address for WireGuard (port 0: any).
    pub wireguard_bind: SocketAddr,
}

/// A running agent's shared state.
pub struct Agent {
    stack: Stack,
    config_version: AtomicU64,
    service_count: AtomicUsize,
    link: LinkState,
}

/// Run the agent until the process ends.
pub async fn run(settings: Settings) -> Result<(), Error> {
    let control = ControlUrl::parse(&settings.control_url, NodeKind::Agent)?;
    if settings.api_key.is_empty() {
        return Err(Error::Config("API_KEY is empty".into()));
    }
    let state_dir = StateDir::open(&settings.state_dir)?;
    let private_key = state_dir.private_key()?;
    let stack = Stack::bind(settings.wireguard_bind, private_key)
        .await
        .map_err(|source| Error::Bind {
            addr: settings.wireguard_bind,
            source,
        })?;
    let status_listener =
        Async::<TcpListener>::bind(settings.status_listen).map_err(|source| Error::Bind {
            addr: settings.status_listen,
            source,
        })?;
    let agent = Arc::new(Agent {
        stack: stack.clone(),
        config_version: AtomicU64::new(0),
        service_count: AtomicUsize::new(0),
        link: LinkState::default(),
    });
    let snapshots = Latest::default();
    if let Some(cached) = state_dir.cached_config() {
        log::info!(
            "serving cached config version {} until Control answers",
            cached.version
        );
        snapshots.put(cached);
    }
    let hello = kakuremichi_nodelink::hello(&private_key, None);
    let link_settings = LinkSettings {
        control,
        api_key: settings.api_key,
        hello,
        state_dir,
    };
    let status_agent = agent.clone();
    let serve_status = kakuremichi_rt::http::serve(status_listener, move |request, _| {
        let agent = status_agent.clone();
        async move { status::handle(&agent, request.uri().path()) }
    });
    let apply_loop = async {
        let mut services = forward::Services::new(stack.clone());
        loop {
            let snapshot = snapshots.take().await;
            let peers = peer_specs(&snapshot, Some(PERSISTENT_KEEPALIVE)).await;
            if stack.address() != Some(snapshot.overlay_ip) {
                stack.set_address(snapshot.overlay_ip, snapshot.overlay_prefix);
            }
            stack.set_peers(&peers);
            services.reconcile(&snapshot.services);
            agent.service_count.store(services.len(), Ordering::Relaxed);
            agent
                .config_version
                .store(snapshot.version, Ordering::Relaxed);
            log::info!(
                "applied config version {} ({} services, {} gateways)",
                snapshot.version,
                snapshot.services.len(),
                peers.len()
            );
        }
    };
    let control_link = link::run(
        link_settings,
        &agent.link,
        |snapshot| snapshots.put(snapshot),
        || link::netstack_status(agent.config_version.load(Ordering::Relaxed), &agent.stack),
    );
    log::info!(
        "agent started (status on http://{})",
        settings.status_listen
    );
    future::or(serve_status, future::or(apply_loop, control_link)).await;
    Ok(())
}
