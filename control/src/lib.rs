//! # kakuremichi-control
//!
//! The control plane. It holds users' intent (nodes, tunnels, tokens) in an LMDB store,
//! answers the REST API, and pushes each node a full config snapshot over its WebSocket
//! whenever anything changes. It is never on the data path: gateways and agents keep serving
//! from their cached snapshots while Control is down.
//!
//! - [`model`]: records and the pure rules over them (address allocation, snapshots).
//! - [`fleet`]: gateway labels and which gateways serve a tunnel.
//! - [`tunnels`]: tunnel kinds (http, tls, tcp, udp), ports and the rules between tunnels.
//! - [`store`]: the heed store; one write transaction per change.
//! - [`api`]: `/api/v1` JSON.
//! - [`hub`] and [`session`]: live node WebSockets, presence and pushes.
//! - [`certs`]: certificates: ACME orders, the internal CA, renewal.
//! - [`auth`]: API keys and tokens, users, passwords, browser sessions, login throttling.
//! - [`pages`] and [`web`]: the browser pages and their handlers.
//! - [`traffic`]: what gateways report each tunnel moved, kept as minute and hour series.
//! - [`logs`]: the gateways' request logs, asked for the Logs page and the API.
//! - [`cli`]: `kakuremichi-control tunnel …`, the tunnel API from a shell.
//! - [`server`]: the HTTP listener and routing.
#![deny(unsafe_code)]

pub mod access;
pub mod alerts;
pub mod api;
pub mod auth;
pub mod certs;
pub mod cli;
pub mod error;
pub mod fleet;
pub mod hub;
pub mod install;
pub mod join;
pub mod logs;
pub mod model;
pub mod openapi;
pub mod pages;
pub mod releases;
pub mod routes;
pub mod server;
pub mod session;
pub mod spec;
pub mod store;
pub mod traffic;
pub mod tunnels;
pub mod web;

pub use error::Error;

use std::sync::Arc;

/// Control's shared state.
pub struct Control {
    /// The durable store.
    pub store: Arc<store::Store>,
    /// What connecting nodes say of themselves, on its way to the store.
    pub hellos: session::Hellos,
    /// Live node sessions.
    pub hub: Arc<hub::Hub>,
    /// The URL nodes use to reach Control, for install snippets.
    pub public_url: String,
    /// The issuer of tunnels created without one.
    pub default_issuer: model::Issuer,
    /// Where ACME certificates are ordered, if anywhere.
    pub acme: Option<certs::acme::AcmeSettings>,
    /// While no user exists: the code the setup page asks for, printed in the log.
    pub setup_code: std::sync::Mutex<Option<String>>,
    /// Failed logins, by account and by address.
    pub throttle: std::sync::Mutex<kakuremichi_proto::throttle::Throttle>,
    /// How long browser sessions live.
    pub session_limits: auth::sessions::SessionLimits,
    /// Agent binaries served for one-line installs.
    pub releases: Vec<releases::Release>,
    /// Proxies besides the gateways whose `X-Real-IP` names the client (`--trusted-proxies`).
    pub trusted_proxies: Vec<kakuremichi_proto::access::Cidr>,
    /// What gateways report each tunnel moved, minute by minute.
    pub traffic: traffic::TrafficStore,
    /// The gateways' request logs, asked through their sessions.
    pub logs: Arc<logs::LogBroker>,
    /// Alert rules at work: what fires, and notices on their way to channels.
    pub alerts: alerts::Alerts,
}

impl Control {
    /// Whether the first administrator is still to be created on the setup page.
    pub fn setup_open(&self) -> bool {
        let mut code = self.setup_code.lock().unwrap_or_else(|p| p.into_inner());
        // `user add --admin` from a shell may have made one since Control started.
        if code.is_some() && self.store.user_count().is_ok_and(|n| n > 0) {
            *code = None;
        }
        code.is_some()
    }

    /// Whether `code` is the setup code (never, once setup is done).
    pub fn setup_code_matches(&self, code: &str) -> bool {
        self.setup_open()
            && self
                .setup_code
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_deref()
                .is_some_and(|expected| auth::sessions::same_secret(code.trim(), expected))
    }

    /// The first administrator exists: the setup page and its code are gone.
    pub fn close_setup(&self) {
        *self.setup_code.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The login throttle (a plain counter table: a panic elsewhere leaves it usable).
    pub fn throttle(&self) -> std::sync::MutexGuard<'_, kakuremichi_proto::throttle::Throttle> {
        self.throttle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client a request is from: `peer`, or when `peer` is a connected gateway or a
    /// trusted proxy, the address it names in `X-Real-IP` (gateways set it themselves and
    /// drop clients' copies). Logins are throttled by this address, so a stranger behind the
    /// gateway's Control route slows only the stranger.
    pub fn client_address(
        &self,
        headers: &hyper::HeaderMap,
        peer: std::net::IpAddr,
    ) -> std::net::IpAddr {
        let trusted = self.trusted_proxies.iter().any(|net| net.contains(peer))
            || self.hub.is_gateway_address(peer);
        let named = || {
            headers
                .get("x-real-ip")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
        };
        match trusted {
            true => named().unwrap_or(peer),
            false => peer,
        }
    }

    /// Where the internal CA's revocation list is published.
    pub fn crl_url(&self) -> String {
        format!("{}/ca.crl", self.public_url.trim_end_matches('/'))
    }
}

/// Settings for [`run`].
pub struct Settings {
    pub data_dir: std::path::PathBuf,
    pub listen: std::net::SocketAddr,
    pub overlay: model::OverlayNet,
    pub public_url: Option<String>,
    /// ACME directory and account settings; without them `acme` tunnels cannot get
    /// certificates.
    pub acme: Option<certs::acme::AcmeSettings>,
    /// Control's public hostname: gateways route it to `control_upstream` over HTTPS.
    pub control_hostname: Option<kakuremichi_proto::ids::Hostname>,
    /// Where gateways reach Control directly (default: the listen address, or 127.0.0.1 and
    /// its port when listening on all addresses).
    pub control_upstream: Option<String>,
    /// Issuer for tunnels created without one (default: `acme` when ACME is configured,
    /// otherwise `internal`).
    pub default_issuer: Option<model::Issuer>,
    /// How often Control and nodes exchange heartbeats (nodes learn it from their snapshot).
    pub heartbeat: std::time::Duration,
    /// How long browser sessions live.
    pub session_limits: auth::sessions::SessionLimits,
    /// Agent binaries for one-line installs (`--release-dir`).
    pub release_dir: Option<std::path::PathBuf>,
    /// Proxies besides the gateways whose `X-Real-IP` Control believes.
    pub trusted_proxies: Vec<kakuremichi_proto::access::Cidr>,
    /// Where to keep a gateway's and an agent's API keys for a one-shot deployment, and
    /// which of the two kinds to enrol there.
    pub join_dir: Option<(std::path::PathBuf, Vec<kakuremichi_proto::ids::NodeKind>)>,
    /// How long traffic history is kept, and how often minutes become hours.
    pub traffic_retention: traffic::Retention,
    /// How often alert rules are looked at and due notices sent.
    pub alert_interval: std::time::Duration,
}

/// Open the store and serve until the process ends.
pub async fn run(settings: Settings) -> Result<(), Error> {
    let listener = async_io::Async::<std::net::TcpListener>::bind(settings.listen)
        .map_err(|e| Error::io(format!("listening on {}", settings.listen), e))?;
    let local = listener
        .get_ref()
        .local_addr()
        .map_err(|e| Error::io("local address", e))?;
    let control = open(settings, local)?;
    let follow = control
        .hub
        .follow_revision(&control.store, std::time::Duration::from_secs(1));
    let work = futures_lite::future::or(
        futures_lite::future::or(
            server::serve(control.clone(), listener),
            kakuremichi_rt::memory::release_periodically(),
        ),
        futures_lite::future::or(
            futures_lite::future::or(certs::run(control.clone()), follow),
            alerts::run(control.clone()),
        ),
    );
    futures_lite::future::or(work, kakuremichi_rt::stop::stopped()).await;
    // Nodes are told, so they reconnect at once to the next Control; a second at most.
    control.hub.stop_all();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while control.hub.session_count() > 0 && std::time::Instant::now() < deadline {
        async_io::Timer::after(std::time::Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Control over the store in `settings.data_dir`, answering at `local`, not serving yet
/// ([`server::answer`] answers a request without a socket).
pub fn open(settings: Settings, local: std::net::SocketAddr) -> Result<Arc<Control>, Error> {
    let store = Arc::new(store::Store::open(&settings.data_dir, settings.overlay)?);
    let traffic = traffic::TrafficStore::open(
        &settings.data_dir.join("traffic"),
        settings.traffic_retention,
    )?;
    let public_url = settings
        .public_url
        .unwrap_or_else(|| format!("http://{local}"));
    log::info!(
        "control listening on http://{local} (data in {})",
        settings.data_dir.display()
    );
    let default_issuer = settings
        .default_issuer
        .unwrap_or(if settings.acme.is_some() {
            model::Issuer::Acme
        } else {
            model::Issuer::Internal
        });
    let control_route = settings.control_hostname.map(|hostname| {
        let upstream =
            settings
                .control_upstream
                .unwrap_or_else(|| match local.ip().is_unspecified() {
                    true => format!("127.0.0.1:{}", local.port()),
                    false => local.to_string(),
                });
        (
            kakuremichi_proto::messages::ControlRoute { hostname, upstream },
            default_issuer,
        )
    });
    if store
        .meta::<(kakuremichi_proto::messages::ControlRoute, model::Issuer)>(store::CONTROL_ROUTE)?
        != control_route
    {
        store.put_meta(store::CONTROL_ROUTE, &control_route)?;
    }
    let releases = match &settings.release_dir {
        Some(dir) => releases::scan(dir)?,
        None => Vec::new(),
    };
    if let Some((dir, kinds)) = &settings.join_dir {
        join::prepare(&store, dir, kinds)?;
    }
    let setup_code = match store.user_count()? {
        0 => {
            let code = auth::new_secret("setup");
            log::warn!(
                "first run: no user yet. Open {public_url}/setup and enter setup code {code} \
                 (or run: kakuremichi-control user add --admin NAME)"
            );
            if let Some((dir, _)) = &settings.join_dir {
                join::write_setup(dir, &public_url, &code)?;
            }
            Some(code)
        }
        _ => None,
    };
    let control = Arc::new(Control {
        hellos: session::Hellos::new(store.clone()),
        store,
        hub: Arc::new(hub::Hub::new(settings.heartbeat)),
        public_url,
        default_issuer,
        acme: settings.acme,
        setup_code: std::sync::Mutex::new(setup_code),
        throttle: Default::default(),
        session_limits: settings.session_limits,
        releases,
        trusted_proxies: settings.trusted_proxies,
        traffic,
        logs: Arc::default(),
        alerts: alerts::Alerts::new(settings.alert_interval),
    });
    Ok(control)
}
