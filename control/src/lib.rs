//! # kakuremichi-control
//!
//! The control plane. It holds users' intent (nodes, tunnels, tokens) in an LMDB store,
//! answers the REST API, and pushes each node a full config snapshot over its WebSocket
//! whenever anything changes. It is never on the data path: gateways and agents keep serving
//! from their cached snapshots while Control is down.
//!
//! - [`model`]: records and the pure rules over them (address allocation, snapshots).
//! - [`store`]: the heed store; one write transaction per change.
//! - [`api`]: `/api/v1` JSON.
//! - [`hub`] and [`session`]: live node WebSockets, presence and pushes.
//! - [`certs`]: certificates: ACME orders, the internal CA, renewal.
//! - [`server`]: the HTTP listener and routing.
#![deny(unsafe_code)]

pub mod api;
pub mod auth;
pub mod certs;
pub mod error;
pub mod hub;
pub mod model;
pub mod server;
pub mod session;
pub mod store;

pub use error::Error;

use std::sync::Arc;

/// Control's shared state.
pub struct Control {
    /// The durable store.
    pub store: store::Store,
    /// Live node sessions.
    pub hub: Arc<hub::Hub>,
    /// The URL nodes use to reach Control, for install snippets.
    pub public_url: String,
    /// The issuer of tunnels created without one.
    pub default_issuer: model::Issuer,
    /// Where ACME certificates are ordered, if anywhere.
    pub acme: Option<certs::acme::AcmeSettings>,
}

impl Control {
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
}

/// Open the store and serve until the process ends.
pub async fn run(settings: Settings) -> Result<(), Error> {
    let store = store::Store::open(&settings.data_dir, settings.overlay)?;
    let listener = async_io::Async::<std::net::TcpListener>::bind(settings.listen)
        .map_err(|e| Error::io(format!("listening on {}", settings.listen), e))?;
    let local = listener
        .get_ref()
        .local_addr()
        .map_err(|e| Error::io("local address", e))?;
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
    let control = Arc::new(Control {
        store,
        hub: Arc::new(hub::Hub::new(settings.heartbeat)),
        public_url,
        default_issuer,
        acme: settings.acme,
    });
    futures_lite::future::or(
        futures_lite::future::or(
            server::serve(control.clone(), listener),
            kakuremichi_rt::memory::release_periodically(),
        ),
        certs::run(control),
    )
    .await;
    Ok(())
}
