//! # kakuremichi-agent
//!
//! Runs beside the apps it publishes. Outbound only: a WebSocket to Control and WireGuard
//! datagrams to every gateway (with keepalives so NAT mappings stay open). It listens only
//! inside its userspace stack, on one service port per tunnel, and forwards each connection
//! to the tunnel's target.
//!
//! - [`forward`]: service ports and forwarding.
//! - [`fallback`]: WireGuard over TCP to gateways that UDP does not reach.
//! - [`udp`]: datagrams of `udp` services, one socket per client flow.
//! - [`status`]: the loopback status listener and the `healthcheck` probe.
#![forbid(unsafe_code)]

pub mod fallback;
pub mod forward;
pub mod health;
pub mod status;
pub mod udp;

use async_io::Async;
use fallback::Carried;
use futures_lite::future;
use kakuremichi_netstack::Stack;
use kakuremichi_nodelink::apply::{apply_network, peer_specs};
use kakuremichi_nodelink::link::{self, LinkState};
use kakuremichi_nodelink::node::{ControlSettings, NodeSettings};
use kakuremichi_proto::ids::NodeKind;
use kakuremichi_proto::messages::NodeStatus;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Keepalive towards gateways, in seconds: well inside common NAT UDP timeouts.
const PERSISTENT_KEEPALIVE: u16 = 25;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The state directory or control link setup failed.
    #[error(transparent)]
    Node(#[from] kakuremichi_nodelink::Error),
    /// A listener could not be opened.
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the agent is told at start.
pub struct Settings {
    /// Control, the API key and the state directory.
    pub control: ControlSettings,
    /// Loopback status listener.
    pub status_listen: SocketAddr,
    /// Local UDP address for WireGuard (port 0: any).
    pub wireguard_bind: SocketAddr,
    /// When to carry WireGuard over TCP to a gateway UDP does not reach; `None`: never.
    pub tcp_fallback: Option<fallback::Timing>,
    /// The targets this agent forwards to (`ALLOW_TARGETS`).
    pub allow_targets: kakuremichi_proto::targets::TargetRules,
}

/// A running agent's shared state.
pub struct Agent {
    stack: Stack,
    allowed: Arc<forward::Allowed>,
    config_version: AtomicU64,
    service_count: AtomicUsize,
    link: LinkState,
    /// Carriers for gateways UDP does not reach (none with `--no-tcp-fallback`).
    fallback: Option<fallback::Fallback>,
}

/// Run the agent until the process ends.
pub async fn run(settings: Settings) -> Result<(), Error> {
    let node = kakuremichi_nodelink::node::start(NodeSettings {
        kind: NodeKind::Agent,
        control: &settings.control,
        wireguard_bind: settings.wireguard_bind,
        wireguard_endpoint: None,
        ports: None,
        https_port: None,
        http_port: None,
        allow_targets: Some(settings.allow_targets.text().to_string()),
        features: &[],
    })
    .await?;
    let status_listener =
        Async::<TcpListener>::bind(settings.status_listen).map_err(|source| Error::Listen {
            addr: settings.status_listen,
            source,
        })?;
    let (stack, snapshots, state_dir) = (node.stack, node.snapshots, node.link.state_dir.clone());
    let allowed = forward::Allowed::new(settings.allow_targets.clone());
    let agent = Arc::new(Agent {
        stack: stack.clone(),
        allowed: allowed.clone(),
        config_version: AtomicU64::new(0),
        service_count: AtomicUsize::new(0),
        link: LinkState::default(),
        fallback: (settings.tcp_fallback)
            .map(|timing| fallback::Fallback::new(stack.clone(), timing)),
    });
    let reporting = agent.clone();
    let origins = Arc::new(forward::Origins::new(move || {
        reporting.link.report_status()
    }));
    let status_agent = agent.clone();
    let serve_status = kakuremichi_rt::http::serve(status_listener, move |request, _| {
        let agent = status_agent.clone();
        async move { status::handle(&agent, request.uri().path()) }
    });
    let fallback = &agent.fallback;
    let watch_paths = async {
        match &fallback {
            Some(fallback) => fallback.run().await,
            None => future::pending().await,
        }
    };
    let apply_loop = async {
        let mut services = forward::Services::new(stack.clone(), allowed, origins.clone());
        loop {
            let snapshot = snapshots.take().await;
            let mut peers = peer_specs(&snapshot, Some(PERSISTENT_KEEPALIVE)).await;
            if let Some(fallback) = fallback {
                let https_ports = snapshot
                    .peers
                    .iter()
                    .filter_map(|p| Some((p.public_key.0, p.https_port?)))
                    .collect();
                peers = fallback.set_peers(peers, https_ports);
            }
            apply_network(&stack, &snapshot, &peers);
            services.reconcile(&snapshot.services);
            agent.service_count.store(services.len(), Ordering::Relaxed);
            agent
                .config_version
                .store(snapshot.version, Ordering::Relaxed);
            agent.link.report_applied(snapshot.version);
            log::info!(
                "applied config version {} ({} services, {} gateways)",
                snapshot.version,
                snapshot.services.len(),
                peers.len()
            );
            state_dir.keep_config(&snapshot);
        }
    };
    let answer_probes = kakuremichi_nodelink::node::answer_health_probes(&stack)?;
    let control_link = link::run(
        node.link,
        &agent.link,
        |snapshot| snapshots.put(snapshot),
        || {
            NodeStatus {
            // Not a failure, but worth seeing: the network in front of this agent drops UDP.
            problems: (fallback.as_ref().map(|f| f.paths()).unwrap_or_default().into_iter())
                .filter_map(|(gateway, carried)| match carried {
                    Carried::Udp => None,
                    Carried::Connecting => Some(format!("gateway {gateway}: UDP gets no answer; opening a TCP carrier")),
                    Carried::Tcp => Some(format!("gateway {gateway} reached over TCP: UDP gets no answer")),
                    Carried::Tls => Some(format!("gateway {gateway} reached over TLS on its HTTPS port: UDP and TCP to its WireGuard port get no answer")),
                })
                .collect(),
            failing_origins: origins.failing(),
            ..link::netstack_status(agent.config_version.load(Ordering::Relaxed), &agent.stack)
        }
        },
        // An agent keeps no request log and never says it does.
        |_| Vec::new(),
    );
    log::info!(
        "agent started (status on http://{})",
        settings.status_listen
    );
    future::or(
        future::or(
            future::or(future::or(serve_status, answer_probes), watch_paths),
            kakuremichi_rt::memory::release_periodically(),
        ),
        future::or(apply_loop, control_link),
    )
    .await;
    Ok(())
}
