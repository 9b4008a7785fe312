//! # kakuremichi-gateway
//!
//! The public entry. It terminates client connections, picks the tunnel by `Host`, and
//! forwards over userspace WireGuard to the agent that owns the tunnel. Its configuration
//! comes from Control and is cached, so it keeps serving while Control is down.
//!
//! - [`routes`]: hostname → tunnel (plain data).
//! - [`access`]: who may open a tunnel, decided locally (plain data), and what the checks
//!   remember (keys, used assertions, throttling).
//! - [`guard`]: the check on each request and the `/.kakuremichi/` login paths.
//! - [`proxy`]: the hyper service that forwards, with forwarding headers and upgrades.
//! - [`pool`]: keep-alive connections to agents over the netstack, a limit and a queue per
//!   agent service.
//! - [`line`]: requests waiting for a connection slot, served in arrival order.
//! - [`body`]: the client's request body on its way upstream (idle timeout, whose fault).
//! - [`tls`]: certificates by SNI and ACME challenge answers.
//! - [`drain`]: going out of service gently: refusing new work, cutting the rest at a
//!   deadline.
//! - [`front`]: PROXY headers from a trusted load balancer in front of the gateway.
//! - [`listeners`]: the plain HTTP and HTTPS listeners.
//! - [`ports`]: public TCP and UDP ports of `tcp` and `udp` tunnels.
//! - [`passthrough`]: `tls` tunnels, chosen by SNI on the HTTPS port and not decrypted.
//! - [`replicas`]: which of a tunnel's agents are alive (probes) and take the next
//!   connection.
//! - [`origin`]: TLS towards HTTPS origins.
//! - [`pages`]: the 404 / 502 / 503 pages.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics` on the loopback admin listener.
#![forbid(unsafe_code)]

pub mod access;
pub mod access_log;
pub mod admin;
pub mod body;
pub mod drain;
pub mod front;
pub mod guard;
pub mod line;
pub mod listeners;
pub mod origin;
pub mod pages;
pub mod passthrough;
pub mod pool;
pub mod ports;
pub mod proxy;
pub mod replicas;
pub mod request_log;
pub mod routes;
pub mod tls;
pub mod traffic;

use async_io::Async;
use futures_lite::future;
use kakuremichi_netstack::Stack;
use kakuremichi_nodelink::apply::{apply_network, peer_specs};
use kakuremichi_nodelink::link::{self, LinkState};
use kakuremichi_nodelink::node::{ControlSettings, NodeSettings};
use kakuremichi_nodelink::state_dir::StateDir;
use kakuremichi_proto::ids::{NodeKind, PublicKey};
use kakuremichi_proto::messages::{ConfigSnapshot, NodeStatus};
use routes::RouteTable;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The state directory or control link setup failed.
    #[error(transparent)]
    Node(#[from] kakuremichi_nodelink::Error),
    /// The TLS configuration could not be built.
    #[error("TLS: {0}")]
    Tls(String),
    /// A listener could not be opened.
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A file the settings name could not be opened.
    #[error("{0}")]
    Config(String),
}

/// What the gateway is told at start.
pub struct Settings {
    /// Control, the API key and the state directory.
    pub control: ControlSettings,
    /// Plain HTTP listener.
    pub http_listen: SocketAddr,
    /// HTTPS listener.
    pub https_listen: SocketAddr,
    /// The HTTPS port clients see, for redirects (usually 443).
    pub https_public_port: u16,
    /// The HTTP port clients see.
    pub http_public_port: u16,
    /// WireGuard UDP socket.
    pub wireguard_listen: SocketAddr,
    /// `host:port` agents use to reach the WireGuard socket.
    pub wireguard_endpoint: String,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub admin_listen: SocketAddr,
    /// Requests in flight per agent service, and how long others wait.
    pub upstream_limits: pool::Limits,
    /// Longest silence allowed inside a request body.
    pub body_idle_timeout: Duration,
    /// Which public ports tunnels may take and how UDP flows behave.
    pub ports: ports::PortSettings,
    /// Load balancers whose connections start with a PROXY header.
    pub fronts: front::TrustedFronts,
    /// How long a draining gateway lets requests, WebSockets and tcp-tunnel connections in
    /// flight finish before it cuts them.
    pub drain_timeout: Duration,
    /// How agents of tunnels with replicas are probed.
    pub replica_probes: replicas::ProbeSettings,
    /// Where agents whose network drops UDP carry WireGuard over TCP (the WireGuard
    /// endpoint's port, over TCP); `None`: nowhere.
    pub wireguard_tcp_listen: Option<SocketAddr>,
    /// Count each tunnel's traffic for Control and `/metrics`, and log its requests (off
    /// only to measure what that costs).
    pub count_traffic: bool,
    /// Requests kept per tunnel for Control's Logs page.
    pub request_log_entries: usize,
    /// Where each request is also written as a JSON line, and how that file rotates.
    pub access_log: Option<(std::path::PathBuf, access_log::Rotation)>,
}

/// WireGuard-over-TCP (and over-TLS) carriers open at once.
const MAX_TCP_CARRIERS: usize = 1024;

/// Request counters.
#[derive(Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub not_found: AtomicU64,
    /// The agent or origin failed.
    pub bad_gateway: AtomicU64,
    /// Malformed requests (no or several `Host`s, …).
    pub bad_requests: AtomicU64,
    /// Clients whose body was malformed, cut short or too slow.
    pub client_errors: AtomicU64,
    /// Requests answered 503 because their agent's connections stayed busy.
    pub overloaded: AtomicU64,
    /// Requests answered 503 because the gateway is draining.
    pub drained: AtomicU64,
}

/// A running gateway's shared state.
pub struct Gateway {
    stack: Stack,
    /// WireGuard carried over TCP or TLS for agents whose network drops UDP.
    carriers: kakuremichi_nodelink::tcp_carrier::Carriers,
    /// Which replica agents answer their probes.
    replicas: Arc<replicas::ReplicaHealth>,
    /// Dials agents for port and passthrough tunnels, replicas in health order.
    dialer: replicas::AgentDialer,
    routes: RwLock<Arc<RouteTable>>,
    pool: pool::Pool,
    config_version: AtomicU64,
    link: LinkState,
    metrics: Metrics,
    certificates: Arc<tls::Certificates>,
    gate: access::Gate,
    https_port: u16,
    body_idle_timeout: Duration,
    state_dir: StateDir,
    port_listeners: Mutex<ports::PortListeners>,
    pub port_metrics: Arc<ports::PortMetrics>,
    passthrough: passthrough::PassthroughTable,
    fronts: front::TrustedFronts,
    /// Control asked this gateway to drain: new requests get a 503, those in flight finish
    /// until the deadline.
    drain: Arc<drain::Drain>,
    /// What the last snapshot asked for that could not be done (a port taken, a certificate
    /// that does not load), reported to Control as the gateway's health.
    problems: Mutex<Vec<String>>,
    /// What each tunnel moved, by minute, for Control.
    traffic: traffic::Traffic,
    /// Agents' endpoints as last seen, by base64 public key; survives restarts.
    known_endpoints: Mutex<HashMap<String, SocketAddr>>,
}

/// How often learned agent endpoints are compared with the saved ones.
const ENDPOINT_SAVE_INTERVAL: Duration = Duration::from_secs(2);

impl Gateway {
    /// The current route table.
    pub fn routes(&self) -> Arc<RouteTable> {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn apply(&self, snapshot: ConfigSnapshot) {
        // Agents find the gateway through their own handshakes; endpoints learned before a
        // restart let the gateway start handshakes too. No keepalive: agents send theirs.
        // An endpoint the stack learned now beats one saved earlier.
        let mut peers = peer_specs(&snapshot, None).await;
        let live: HashMap<[u8; 32], SocketAddr> = self
            .stack
            .peer_stats()
            .into_iter()
            .filter_map(|p| Some((p.public_key, p.endpoint?)))
            .collect();
        {
            let known = self
                .known_endpoints
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for (spec, config) in peers.iter_mut().zip(&snapshot.peers) {
                spec.endpoint = spec
                    .endpoint
                    .or_else(|| live.get(&spec.public_key).copied())
                    .or_else(|| known.get(&config.public_key.to_string()).copied());
            }
        }
        apply_network(&self.stack, &snapshot, &peers);
        let mut problems = self.certificates.update(
            &snapshot.certificates,
            &snapshot.challenges,
            snapshot.fallback_certificate.as_ref(),
        );
        self.gate.update(snapshot.access_keys.as_ref());
        self.passthrough.update(&snapshot.passthrough_routes);
        self.drain.set(snapshot.draining);
        let open_ports = {
            let mut listeners = self
                .port_listeners
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            problems.extend(listeners.reconcile(&snapshot.port_routes));
            listeners.open_ports()
        };
        let table = Arc::new(RouteTable::new(
            &snapshot.routes,
            snapshot.control_route.as_ref(),
        ));
        problems.extend(table.problems.iter().cloned());
        let port_upstreams = snapshot
            .port_routes
            .iter()
            .map(|r| &r.upstream)
            .chain(snapshot.passthrough_routes.iter().map(|r| &r.upstream))
            .filter(|u| !u.replica_ips.is_empty());
        let port_agents = port_upstreams
            .flat_map(|u| std::iter::once(u.agent_ip).chain(u.replica_ips.iter().copied()));
        self.replicas.watch(
            table
                .replica_agents()
                .chain(port_agents)
                .collect::<Vec<_>>(),
        );
        *self.problems.lock().unwrap_or_else(|p| p.into_inner()) = problems;
        self.pool
            .forget_unrouted(|upstream| table.routes_to(upstream));
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = table;
        self.config_version
            .store(snapshot.version, Ordering::Relaxed);
        self.link.report_applied(snapshot.version);
        log::info!(
            "applied config version {} ({} routes, {} passthrough, {} ports, {} peers)",
            snapshot.version,
            snapshot.routes.len(),
            snapshot.passthrough_routes.len(),
            open_ports,
            peers.len()
        );
    }

    /// Save agents' endpoints whenever they change, and close idle upstream connections.
    async fn keep_endpoints(&self) {
        loop {
            async_io::Timer::after(ENDPOINT_SAVE_INTERVAL).await;
            self.pool.sweep();
            let current: HashMap<String, SocketAddr> = self
                .stack
                .peer_stats()
                .into_iter()
                .filter_map(|p| Some((PublicKey(p.public_key).to_string(), p.endpoint?)))
                .collect();
            let mut known = self
                .known_endpoints
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if current
                .iter()
                .any(|(key, addr)| known.get(key) != Some(addr))
            {
                known.extend(current);
                if let Err(e) = self.state_dir.save_peer_endpoints(&known) {
                    log::warn!("could not save peer endpoints: {e}");
                }
            }
        }
    }
}

fn listen(addr: SocketAddr) -> Result<Async<TcpListener>, Error> {
    Async::<TcpListener>::bind(addr).map_err(|source| Error::Listen { addr, source })
}

/// Run the gateway until the process ends.
pub async fn run(settings: Settings) -> Result<(), Error> {
    let node = kakuremichi_nodelink::node::start(NodeSettings {
        kind: NodeKind::Gateway,
        control: &settings.control,
        wireguard_bind: settings.wireguard_listen,
        wireguard_endpoint: Some(settings.wireguard_endpoint.clone()),
        ports: Some(settings.ports.policy.clone()),
        https_port: Some(settings.https_public_port),
        http_port: Some(settings.http_public_port),
        allow_targets: None,
        features: &[kakuremichi_proto::request_log::FEATURE],
    })
    .await?;
    let http = listen(settings.http_listen)?;
    // Without it only agents whose network drops UDP lose out: serve the rest regardless.
    let carrier_listener = match settings.wireguard_tcp_listen {
        Some(addr) => smol::net::TcpListener::bind(addr)
            .await
            .inspect_err(|e| log::error!("wireguard over tcp: cannot listen on {addr}: {e}"))
            .ok(),
        None => None,
    };
    let carriers = kakuremichi_nodelink::tcp_carrier::Carriers::new(
        kakuremichi_nodelink::tcp_carrier::local_wireguard_addr(node.stack.local_addr()),
        MAX_TCP_CARRIERS,
    );
    let serve_carriers = {
        let carriers = carriers.clone();
        async move {
            match carrier_listener {
                Some(listener) => carriers.serve(listener).await,
                None => future::pending().await,
            }
        }
    };
    let https = listen(settings.https_listen)?;
    let certificates = Arc::new(tls::Certificates::default());
    let tls_config = tls::server_config(certificates.clone()).map_err(Error::Tls)?;
    let admin = listen(settings.admin_listen)?;
    let (stack, snapshots, state_dir) = (node.stack, node.snapshots, node.link.state_dir.clone());
    let port_metrics = Arc::new(ports::PortMetrics::default());
    let access_log = match &settings.access_log {
        Some((path, rotation)) => Some(
            access_log::AccessLog::open(path, *rotation)
                .map_err(|e| Error::Config(format!("--access-log {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let requests = request_log::RequestLog::new(settings.request_log_entries, access_log);
    let traffic = traffic::Traffic::new(settings.count_traffic, requests);
    let drain = Arc::new(drain::Drain::new(settings.drain_timeout));
    let replica_health = Arc::new(replicas::ReplicaHealth::default());
    let dialer = replicas::AgentDialer {
        stack: stack.clone(),
        health: replica_health.clone(),
    };
    let gateway = Arc::new(Gateway {
        carriers,
        replicas: replica_health,
        dialer: dialer.clone(),
        port_listeners: Mutex::new(ports::PortListeners::new(
            dialer,
            settings.ports.clone(),
            settings.fronts.clone(),
            drain.clone(),
            (port_metrics.clone(), traffic.clone()),
        )),
        fronts: settings.fronts.clone(),
        drain: drain.clone(),
        problems: Mutex::new(Vec::new()),
        traffic,
        port_metrics,
        passthrough: passthrough::PassthroughTable::default(),
        pool: pool::Pool::new(stack.clone(), settings.upstream_limits),
        stack,
        routes: RwLock::default(),
        config_version: AtomicU64::new(0),
        link: LinkState::default(),
        metrics: Metrics::default(),
        certificates,
        gate: access::Gate::default(),
        https_port: settings.https_public_port,
        body_idle_timeout: settings.body_idle_timeout,
        known_endpoints: Mutex::new(state_dir.peer_endpoints()),
        state_dir: state_dir.clone(),
    });
    log::info!(
        "gateway: http on {}, https on {}, wireguard on {} (endpoint {}), admin on {}",
        settings.http_listen,
        settings.https_listen,
        settings.wireguard_listen,
        settings.wireguard_endpoint,
        settings.admin_listen
    );
    let serve_http = listeners::serve_http(gateway.clone(), http);
    let serve_https = listeners::serve_https(gateway.clone(), https, tls_config);
    let admin_gateway = gateway.clone();
    let serve_admin = kakuremichi_rt::http::serve(admin, move |request, _| {
        let gateway = admin_gateway.clone();
        async move { admin::handle(&gateway, request.uri().path()) }
    });
    let apply_loop = async {
        loop {
            let snapshot = snapshots.take().await;
            gateway.apply(snapshot.clone()).await;
            gateway.state_dir.keep_config(&snapshot);
        }
    };
    let control_link = link::run(
        node.link,
        &gateway.link,
        |snapshot| snapshots.put(snapshot),
        || NodeStatus {
            problems: gateway
                .problems
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            traffic: gateway
                .traffic
                .with(|table| table.report(traffic::this_minute(), gateway.link.sessions())),
            ..link::netstack_status(
                gateway.config_version.load(Ordering::Relaxed),
                &gateway.stack,
            )
        },
        |query| gateway.traffic.log.query(query),
    );
    let answer_probes = kakuremichi_nodelink::node::answer_health_probes(&gateway.stack)?;
    let probe_gateway = gateway.clone();
    let probe_replicas = gateway.dialer.probe(settings.replica_probes, move |agent| {
        // Idle connections to a vanished agent would hang the requests that pick them.
        probe_gateway
            .pool
            .forget_unrouted(|upstream| upstream.agent() != Some(agent));
    });
    let background = future::or(
        future::or(
            future::or(apply_loop, gateway.keep_endpoints()),
            future::or(probe_replicas, future::or(serve_carriers, answer_probes)),
        ),
        kakuremichi_rt::memory::release_periodically(),
    );
    future::or(
        future::or(future::or(serve_http, serve_https), serve_admin),
        future::or(background, control_link),
    )
    .await;
    Ok(())
}
